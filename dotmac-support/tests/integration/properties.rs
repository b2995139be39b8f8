//! Invariants of working-time arithmetic, SLA pauses and round-robin assignment.
// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc, Weekday};
use dotmac_support::*;
use proptest::prelude::*;

use dotmac_testing::cases;

const ZONES: [&str; 7] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Santiago",
    "Pacific/Chatham",
];
const DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn hhmm(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Up to two disjoint intervals a day (from sorted, distinct cut points), up to 25 holidays.
fn calendars() -> impl Strategy<Value = BusinessCalendar> {
    let day = prop::collection::btree_set(0u16..=1440, 0..=4);
    (
        0..ZONES.len(),
        prop::collection::vec(day, 7),
        prop::collection::vec(0u32..3650, 0..25),
    )
        .prop_filter_map("calendar with working time", |(zone, days, holidays)| {
            let mut builder = BusinessCalendar::builder(ZONES[zone]);
            for (weekday, cuts) in DAYS.iter().zip(days) {
                let cuts: Vec<u16> = cuts.into_iter().collect();
                for pair in cuts.chunks_exact(2) {
                    builder = builder.hours(*weekday, &hhmm(pair[0]), &hhmm(pair[1]));
                }
            }
            let base = NaiveDate::from_ymd_opt(2020, 1, 1)?;
            builder = builder.holidays(
                holidays
                    .into_iter()
                    .map(|d| base + Duration::days(i64::from(d))),
            );
            builder.build().ok()
        })
}

/// The result of a calendar walk, or `None` when the walk would leave the calendar's 100-year
/// horizon (a calendar open one minute a week cannot give 30,000 minutes): the one refusal
/// these properties allow.
fn within_horizon<T>(result: Result<T, SupportError>) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(SupportError::SpanTooLong { .. }) => Ok(None),
        Err(other) => Err(TestCaseError::fail(other.to_string())),
    }
}

fn instants() -> impl Strategy<Value = DateTime<Utc>> {
    // 2020-01-01 .. 2030-01-01, to the second.
    (0i64..315_532_800)
        .prop_map(|s| Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(s))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn adding_then_counting_gives_back_the_minutes(cal in calendars(), from in instants(), minutes in 0u32..30_000) {
        let Some(due) = within_horizon(cal.add_working_minutes(from, minutes))? else { return Ok(()) };
        prop_assert!(due >= from);
        prop_assert_eq!(cal.working_minutes_between(from, due).unwrap(), u64::from(minutes));
    }

    #[test]
    fn counting_then_adding_lands_no_later(cal in calendars(), from in instants(), span in 0i64..5_000_000) {
        let to = from + Duration::seconds(span);
        let minutes = cal.working_minutes_between(from, to).unwrap();
        // Zero minutes from a closed instant is the next opening, which may be after `to`.
        prop_assume!(minutes > 0);
        let Some(back) = within_horizon(cal.add_working_minutes(from, u32::try_from(minutes).unwrap()))? else { return Ok(()) };
        prop_assert!(back <= to, "{back} after {to}");
        // Nothing working is left out: one more whole minute ends after `to` minus the partial
        // minute that the count truncated.
        let Some(next) = within_horizon(cal.add_working_minutes(from, u32::try_from(minutes + 1).unwrap()))? else { return Ok(()) };
        prop_assert!(next > to - Duration::seconds(60));
    }

    #[test]
    fn a_due_time_never_falls_in_closed_hours_or_on_a_holiday(cal in calendars(), from in instants(), minutes in 1u32..30_000) {
        let Some(due) = within_horizon(cal.add_working_minutes(from, minutes))? else { return Ok(()) };
        let last_second = due - Duration::seconds(1);
        prop_assert!(cal.is_working_at(last_second).unwrap(), "second before {due} is not working time");
        let local_day = last_second.with_timezone(&cal.zone()).date_naive();
        prop_assert!(!cal.is_holiday(local_day));
    }

    #[test]
    fn pausing_never_makes_a_due_time_earlier(
        cal in calendars(),
        created in instants(),
        target in 1i64..5_000,
        pause_start in 0i64..500_000,
        pause_len in 1i64..500_000,
        basis in prop::sample::select(vec![TimeBasis::Business, TimeBasis::Calendar]),
    ) {
        let policy = SlaPolicy::builder(SlaPolicyId::from_u128(1), "p")
            .all_priorities(SlaTargets {
                first_response: Some(SlaTarget::new(target, basis).unwrap()),
                next_response: None,
                resolution: None,
            })
            .pause_in(Status::PENDING)
            .build()
            .unwrap();
        let plain = SlaTimeline::new(created);
        let mut paused = plain.clone();
        let start = created + Duration::seconds(pause_start);
        paused.statuses.push((start, Status::PENDING));
        paused.statuses.push((start + Duration::seconds(pause_len), Status::OPEN));
        let due = |t: &SlaTimeline| policy.evaluate(&cal, t, Priority::Normal, created).unwrap()[0].due_at;
        let (without, with) = (due(&plain).unwrap(), due(&paused).unwrap());
        prop_assert!(with >= without, "pause moved {without} to {with}");
    }

    #[test]
    fn round_robin_gives_each_available_agent_one_of_any_k_consecutive(
        presence in prop::collection::vec(any::<bool>(), 1..30),
        start in 0usize..50,
        rounds in 1usize..4,
    ) {
        let mut roster = Roster::new();
        let ids: Vec<AgentId> = (0..presence.len()).map(|i| AgentId::from_u128(i as u128 + 1)).collect();
        for (id, online) in ids.iter().zip(&presence) {
            let p = if *online { Presence::Online } else { Presence::Offline };
            roster.upsert(Agent::new(*id, "a", 1_000).unwrap().with_presence(p), 0);
        }
        let queue = Queue { id: QueueId::new(), name: "q".into(), members: ids.clone(), strategy: AssignmentStrategy::RoundRobin };
        let mut cursor = QueueCursor { next: start };
        let k = presence.iter().filter(|p| **p).count();
        let picks: Vec<Option<AgentId>> = (0..k * rounds + k / 2).map(|_| {
            let pick = pick_agent(&queue, &mut cursor, &roster, 0);
            if let Some(id) = pick { roster.add_load(id); }
            pick
        }).collect();
        if k == 0 {
            prop_assert!(picks.iter().all(Option::is_none));
        }
        for window in picks.windows(k.max(1)) {
            if k == 0 { break; }
            let mut seen: Vec<AgentId> = window.iter().map(|p| p.unwrap()).collect();
            prop_assert!(seen.iter().all(|id| presence[ids.iter().position(|x| x == id).unwrap()]));
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), k);
        }
    }
}

/// Instants around the usual daylight-saving changes (March/April, September-November) of
/// 2020-2035, to the minute.
fn dst_season_instants() -> impl Strategy<Value = DateTime<Utc>> {
    (
        2020i32..2035,
        prop::sample::select(vec![3u32, 4, 9, 10, 11]),
        1u32..29,
        0u32..24,
        0u32..60,
    )
        .prop_map(|(y, m, d, h, min)| Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap())
}

/// The definition, minute by minute: a minute is working when its local wall time lies in an
/// interval of its local date and that date is not a holiday.
fn reference_minutes(cal: &BusinessCalendar, from: DateTime<Utc>, minutes: i64) -> u64 {
    let mut count = 0;
    for k in 0..minutes {
        let local = (from + Duration::minutes(k)).with_timezone(&cal.zone());
        let date = local.date_naive();
        if cal.is_holiday(date) {
            continue;
        }
        let minute_of_day = u16::try_from(
            local
                .time()
                .signed_duration_since(chrono::NaiveTime::MIN)
                .num_minutes(),
        )
        .unwrap();
        let weekday = chrono::Datelike::weekday(&date);
        if cal
            .intervals(weekday)
            .iter()
            .any(|i| i.start.minutes() <= minute_of_day && minute_of_day < i.end.minutes())
        {
            count += 1;
        }
    }
    count
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn counting_agrees_with_the_minute_by_minute_definition(
        cal in calendars(),
        from in prop_oneof![instants().prop_map(|t| t - Duration::seconds(chrono::Timelike::second(&t).into())), dst_season_instants()],
        minutes in 0i64..20_000,
    ) {
        let to = from + Duration::minutes(minutes);
        prop_assert_eq!(cal.working_minutes_between(from, to).unwrap(), reference_minutes(&cal, from, minutes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn queue_assigner_decides_exactly_like_pick_agent(
        agents in prop::collection::vec((0u8..3, 0u32..5, 1u32..6, any::<bool>()), 1..40),
        strategy in 0u8..4,
        cap in 1u32..5,
        start in 0usize..60,
        waits in prop::collection::vec(0u32..60, 1..80),
    ) {
        let mut roster = Roster::new();
        let ids: Vec<AgentId> = (0..agents.len()).map(|i| AgentId::from_u128(i as u128 + 1)).collect();
        for (id, (presence, load, capacity, fiber)) in ids.iter().zip(&agents) {
            let presence = [Presence::Online, Presence::Away, Presence::Offline][usize::from(*presence)];
            let mut agent = Agent::new(*id, "a", *capacity).unwrap().with_presence(presence);
            if *fiber {
                agent = agent.with_skill("fiber");
            }
            roster.upsert(agent, *load);
        }
        let strategy = match strategy {
            0 => AssignmentStrategy::RoundRobin,
            1 => AssignmentStrategy::LeastLoaded { cap: Some(cap) },
            2 => AssignmentStrategy::LeastLoaded { cap: None },
            _ => AssignmentStrategy::SkillsBased {
                required: std::collections::BTreeSet::from(["fiber".to_owned()]),
                relax_after_minutes: 30,
            },
        };
        let queue = Queue { id: QueueId::new(), name: "q".into(), members: ids, strategy };
        let mut cursor = QueueCursor { next: start };
        let mut assigner = QueueAssigner::new(&queue, &roster, cursor);
        for waited in waits {
            let expected = pick_agent(&queue, &mut cursor, &roster, waited);
            if let Some(id) = expected {
                roster.add_load(id);
            }
            prop_assert_eq!(assigner.pick(waited), expected);
            prop_assert_eq!(assigner.cursor(), cursor);
        }
    }
}
