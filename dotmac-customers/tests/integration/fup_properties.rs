//! Fair-usage properties: nothing in `fup` panics on any policy, counters, plan or instant,
//! and for a fixed instant more usage never gives a faster verdict.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use dotmac_customers::fup::{
    Counter, Direction, FreeWindow, FupAction, FupCounters, FupPeriod, FupPolicy, FupRule,
    FupVerdict,
};
use dotmac_customers::{Rate, TopUpId};
use dotmac_testing::{config, no_panic};
use proptest::prelude::*;

const ZONES: &[chrono_tz::Tz] = &[
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::Santiago,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Pacific::Chatham,
    chrono_tz::Pacific::Kiritimati,
    chrono_tz::Pacific::Niue,
];

fn weekday() -> impl Strategy<Value = Weekday> {
    (0u8..7).prop_map(|d| Weekday::try_from(d).unwrap())
}

fn bytes() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        0u64..(1 << 40),
        any::<u64>(),
    ]
}

fn rate() -> impl Strategy<Value = Rate> {
    let kbps = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        0u64..200_000,
        any::<u64>()
    ];
    (kbps.clone(), kbps).prop_map(|(d, u)| Rate::new(d, u))
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        Just(DateTime::<Utc>::MAX_UTC),
        Just(DateTime::<Utc>::MIN_UTC),
        // Around today, at any second.
        (1_700_000_000i64..1_900_000_000).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()),
        // Anywhere chrono can hold.
        (-8_000_000_000_000i64..8_000_000_000_000)
            .prop_filter_map("representable", |s| Utc.timestamp_opt(s, 0).single()),
    ]
}

fn time() -> impl Strategy<Value = NaiveTime> {
    (0u32..24, 0u32..60).prop_map(|(h, m)| NaiveTime::from_hms_opt(h, m, 0).unwrap())
}

fn action() -> impl Strategy<Value = FupAction> {
    prop_oneof![
        any::<u8>().prop_map(FupAction::SpeedPercent),
        rate().prop_map(FupAction::FixedRate),
        Just(FupAction::Block),
        Just(FupAction::Restore),
    ]
}

fn period() -> impl Strategy<Value = FupPeriod> {
    prop_oneof![
        Just(FupPeriod::Day),
        Just(FupPeriod::Week),
        Just(FupPeriod::Month)
    ]
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![
        Just(Direction::Download),
        Just(Direction::Upload),
        Just(Direction::Total)
    ]
}

fn rules(valid: bool) -> impl Strategy<Value = Vec<FupRule>> {
    let action = if valid {
        prop_oneof![
            (1u8..=100).prop_map(FupAction::SpeedPercent),
            (1u64..1_000_000, 1u64..1_000_000)
                .prop_map(|(d, u)| FupAction::FixedRate(Rate::new(d, u))),
            Just(FupAction::Block),
        ]
        .boxed()
    } else {
        action().boxed()
    };
    proptest::collection::vec((period(), direction(), bytes(), action), 0..6).prop_map(|rules| {
        rules
            .into_iter()
            .enumerate()
            .map(
                |(i, (period, direction, threshold_bytes, action))| FupRule {
                    name: format!("r{i}"),
                    period,
                    direction,
                    threshold_bytes,
                    action,
                },
            )
            .collect()
    })
}

fn policy(valid: bool) -> impl Strategy<Value = FupPolicy> {
    let window = (proptest::collection::vec(weekday(), 0..3), time(), time())
        .prop_map(|(days, from, to)| FreeWindow { days, from, to });
    (
        0..ZONES.len(),
        weekday(),
        proptest::collection::vec(window, 0..3),
        rules(valid),
    )
        .prop_map(|(zone, week_starts, free_windows, rules)| FupPolicy {
            zone: ZONES[zone],
            week_starts,
            free_windows,
            rules,
        })
}

fn counter() -> impl Strategy<Value = Counter> {
    let start = prop_oneof![
        Just(None),
        Just(Some(NaiveDate::MIN)),
        Just(Some(NaiveDate::MAX)),
        (-3000i32..3000, 1u32..=12, 1u32..=31)
            .prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d)),
    ];
    (start, bytes(), bytes()).prop_map(|(period_start, download, upload)| Counter {
        period_start,
        download,
        upload,
    })
}

fn counters() -> impl Strategy<Value = FupCounters> {
    (counter(), counter(), counter(), counter()).prop_map(|(day, week, month, top_up)| {
        FupCounters {
            day,
            week,
            month,
            top_up,
            top_ups: Vec::new(),
        }
    })
}

/// `None` for a block, else the rate the verdict gives.
fn speed(verdict: &FupVerdict, plan: Rate) -> Option<Rate> {
    match verdict {
        FupVerdict::Normal => Some(plan),
        FupVerdict::Throttled { rate, .. } => Some(*rate),
        FupVerdict::Blocked { .. } => None,
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn nothing_in_fair_usage_panics(
        policy in policy(false),
        mut counters in counters(),
        plan in rate(),
        at in instant(),
        later in instant(),
        down in bytes(),
        up in bytes(),
        extra in bytes(),
    ) {
        let input = (policy.clone(), counters.clone(), plan, at, later, down, up, extra);
        no_panic("fair usage", &input, || {
            let _ = policy.validate();
            let _ = policy.is_free(at);
            let _ = policy.record(&mut counters, at, down, up);
            let _ = policy.top_up(&mut counters, at, TopUpId::from_u128(1), extra);
            let _ = policy.evaluate(&counters, plan, later);
            let _ = policy.next_boundary(&counters);
            let _ = policy.expire(&mut counters, later);
            let _ = policy.evaluate(&counters, plan, later);
            let _ = policy.next_boundary(&counters);
            for p in [FupPeriod::Day, FupPeriod::Week, FupPeriod::Month] {
                let _ = policy.reading(&counters, p, Direction::Total, later);
            }
        })?;
    }

    #[test]
    fn more_usage_never_gives_a_faster_verdict(
        policy in policy(true),
        plan in rate(),
        at in instant(),
        samples in proptest::collection::vec((bytes(), bytes()), 1..4),
        more in (bytes(), bytes()),
        top_up in bytes(),
    ) {
        // Counters of the instant's own periods, from samples dated at it; `more` is one
        // sample on top.
        let mut less = FupCounters::default();
        if top_up > 0 {
            policy.top_up(&mut less, at, TopUpId::from_u128(7), top_up).unwrap();
        }
        for (down, up) in &samples {
            policy.record(&mut less, at, *down, *up).unwrap();
        }
        let mut heavier = less.clone();
        policy.record(&mut heavier, at, more.0, more.1).unwrap();
        let light = policy.evaluate(&less, plan, at).unwrap();
        let heavy = policy.evaluate(&heavier, plan, at).unwrap();
        match (speed(&light, plan), speed(&heavy, plan)) {
            (_, None) => {}
            (None, Some(_)) => prop_assert!(false, "more usage unblocked: {light:?} then {heavy:?}"),
            (Some(slow), Some(fast)) => prop_assert!(
                fast.download_kbps() <= slow.download_kbps()
                    && fast.upload_kbps() <= slow.upload_kbps(),
                "more usage was faster: {light:?} then {heavy:?} (plan {plan})"
            ),
        }
        // And a verdict is never faster than the plan.
        if let Some(rate) = speed(&heavy, plan) {
            prop_assert!(rate.download_kbps() <= plan.download_kbps());
            prop_assert!(rate.upload_kbps() <= plan.upload_kbps());
        }
    }
}
