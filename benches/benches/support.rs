//! dotmac-support: SLA due times and routing + assignment.
//!
//! Targets (issue 6): due-time computation with a two-interval calendar and 20 holidays a year
//! >= 2 million/s; routing + assignment with 1,000 agents >= 1 million decisions/s.
#![allow(missing_docs)]

use std::hint::black_box;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dotmac_core::TenantId;
use dotmac_support::{
    Agent, AgentId, AssignmentStrategy, BusinessCalendar, Category, Channel, CustomerTier,
    NewTicket, Presence, Priority, Queue, QueueAssigner, QueueCursor, QueueId, Roster, Router,
    RoutingRule, RuleCondition, SlaPolicy, SlaPolicyId, SlaTimeline, Ticket, TicketId, pick_agent,
};

const BATCH: usize = 1024;

/// Mon-Fri 09:00-12:00 and 13:00-17:00 in Berlin, 20 holidays a year over 2026-2028.
fn calendar() -> Option<BusinessCalendar> {
    let mut holidays = Vec::new();
    for year in 2026..=2028 {
        for k in 0..20u32 {
            // Spread through the year, as public holidays are.
            holidays.push(NaiveDate::from_yo_opt(year, 3 + k * 18)?);
        }
    }
    BusinessCalendar::builder("Europe/Berlin")
        .weekdays("09:00", "12:00")
        .weekdays("13:00", "17:00")
        .holidays(holidays)
        .build()
        .ok()
}

/// Ticket creation instants spread over 2026 (every 8 h 33 min 7 s: all hours, all weekdays).
fn starts() -> Vec<DateTime<Utc>> {
    let base = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    (0..BATCH)
        .map(|i| base + Duration::seconds(i as i64 * 30_787))
        .collect()
}

fn due_times(c: &mut Criterion) {
    let Some(calendar) = calendar() else { return };
    let starts = starts();
    let mut group = c.benchmark_group("sla_due");
    group.throughput(Throughput::Elements(BATCH as u64));
    for minutes in [60u32, 240, 1440, 4320] {
        group.bench_function(format!("add_{minutes}_business_minutes"), |b| {
            b.iter(|| {
                for start in &starts {
                    let _ = black_box(calendar.add_working_minutes(black_box(*start), minutes));
                }
            })
        });
    }
    // Whole policy evaluation: three clocks (first response, next response, resolution) of a
    // high-priority ticket with a pause, on the default ISP policy.
    let policy = SlaPolicy::isp_default(SlaPolicyId::from_u128(1));
    let timelines: Vec<SlaTimeline> = starts
        .iter()
        .map(|s| {
            let mut t = SlaTimeline::new(*s);
            t.statuses
                .push((*s + Duration::minutes(20), dotmac_support::Status::PENDING));
            t.statuses
                .push((*s + Duration::minutes(200), dotmac_support::Status::OPEN));
            t
        })
        .collect();
    group.bench_function("evaluate_policy_3_clocks_high", |b| {
        b.iter(|| {
            for t in &timelines {
                let _ = black_box(policy.evaluate(
                    &calendar,
                    black_box(t),
                    Priority::High,
                    t.created_at,
                ));
            }
        })
    });
    group.finish();
}

fn router(queues: &[QueueId]) -> Router {
    let q = |i: usize| queues.get(i).copied().unwrap_or_else(QueueId::new);
    Router::new(q(0))
        .rule(RoutingRule {
            name: "outages".into(),
            conditions: vec![RuleCondition::Category(vec![Category::Outage])],
            queue: q(1),
        })
        .rule(RoutingRule {
            name: "enterprise".into(),
            conditions: vec![RuleCondition::Tier(vec![CustomerTier::Enterprise])],
            queue: q(2),
        })
        .rule(RoutingRule {
            name: "billing words".into(),
            conditions: vec![RuleCondition::Keywords(vec![
                "invoice".into(),
                "refund".into(),
                "charge".into(),
            ])],
            queue: q(3),
        })
        .rule(RoutingRule {
            name: "urgent phone".into(),
            conditions: vec![
                RuleCondition::MinPriority(Priority::Urgent),
                RuleCondition::Channel(vec![Channel::Phone]),
            ],
            queue: q(1),
        })
}

fn routing(c: &mut Criterion) {
    let queues: Vec<QueueId> = (0..4).map(|i| QueueId::from_u128(100 + i)).collect();
    let router = router(&queues);
    let agents: Vec<AgentId> = (0..1000).map(|i| AgentId::from_u128(i + 1)).collect();
    // One in ten offline, one in ten at capacity; `busy`: nobody idle, so least-loaded scans
    // every member.
    let make_roster = |busy: bool| {
        let mut roster = Roster::new();
        for (i, id) in agents.iter().enumerate() {
            let presence = if i % 10 == 3 {
                Presence::Offline
            } else {
                Presence::Online
            };
            let load = if i % 10 == 7 {
                5
            } else {
                (i % 4) as u32 + u32::from(busy)
            };
            if let Ok(agent) = Agent::new(*id, "agent", 5) {
                roster.upsert(agent.with_presence(presence), load);
            }
        }
        roster
    };
    let (roster, busy_roster) = (make_roster(false), make_roster(true));
    let tenant = TenantId::from_u128(1);
    let at = Utc
        .with_ymd_and_hms(2026, 3, 2, 9, 0, 0)
        .single()
        .unwrap_or_default();
    let subjects = [
        "No internet since morning",
        "Wrong invoice amount",
        "Slow speeds in the evening",
        "Router keeps rebooting",
    ];
    let tickets: Vec<Ticket> = (0..64)
        .map(|i| {
            let new = NewTicket::new(subjects[i % 4])
                .category(if i % 7 == 0 {
                    Category::Outage
                } else {
                    Category::Technical
                })
                .tier(if i % 5 == 0 {
                    CustomerTier::Business
                } else {
                    CustomerTier::Residential
                })
                .priority(Priority::ALL[i % 5]);
            Ticket::open(TicketId::from_u128(i as u128), tenant, new, at)
        })
        .collect();
    let round_robin = |id| Queue {
        id,
        name: "q".into(),
        members: agents.clone(),
        strategy: AssignmentStrategy::RoundRobin,
    };
    let least_loaded = |id| Queue {
        id,
        name: "q".into(),
        members: agents.clone(),
        strategy: AssignmentStrategy::LeastLoaded { cap: Some(4) },
    };

    let mut group = c.benchmark_group("routing_1000_agents");
    group.throughput(Throughput::Elements(tickets.len() as u64));
    type MakeQueue<'a> = &'a dyn Fn(QueueId) -> Queue;
    let cases: [(&str, MakeQueue<'_>, &Roster); 3] = [
        ("round_robin", &round_robin, &roster),
        ("least_loaded", &least_loaded, &roster),
        ("least_loaded_busy", &least_loaded, &busy_roster),
    ];
    for (name, make, roster) in cases {
        let by_queue: Vec<Queue> = queues.iter().map(|id| make(*id)).collect();
        let mut cursors = vec![QueueCursor::default(); by_queue.len()];
        group.bench_function(format!("route_and_assign_{name}"), |b| {
            b.iter(|| {
                for ticket in &tickets {
                    let queue_id = router.route(black_box(ticket));
                    let slot = queues.iter().position(|q| *q == queue_id).unwrap_or(0);
                    if let (Some(queue), Some(cursor)) = (by_queue.get(slot), cursors.get_mut(slot))
                    {
                        black_box(pick_agent(queue, cursor, roster, 0));
                    }
                }
            })
        });
    }
    // The batch path (`QueueAssigner`, used by `SupportService::drain_queue`): O(log members)
    // per least-loaded decision. Building the assigners (once per batch) is not timed.
    let busy_queues: Vec<Queue> = queues.iter().map(|id| least_loaded(*id)).collect();
    group.bench_function("route_and_assign_least_loaded_busy_assigner", |b| {
        b.iter_batched(
            || {
                busy_queues
                    .iter()
                    .map(|q| QueueAssigner::new(q, &busy_roster, QueueCursor::default()))
                    .collect::<Vec<_>>()
            },
            |mut assigners| {
                for ticket in &tickets {
                    let queue_id = router.route(black_box(ticket));
                    let slot = queues.iter().position(|q| *q == queue_id).unwrap_or(0);
                    if let Some(assigner) = assigners.get_mut(slot) {
                        black_box(assigner.pick(0));
                    }
                }
                assigners
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, due_times, routing);
criterion_main!(benches);
