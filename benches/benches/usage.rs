//! dotmac-billing usage, RADIUS and dunning throughput.
//!
//! Targets (issue 4): ingest + aggregate ≥ 10 million usage events/s on one core; RADIUS
//! normalisation ≥ 2 million records/s; dunning evaluation of 1 million open invoices < 1 s.
#![allow(missing_docs)]
// Fixture construction only: a failing unwrap is a broken benchmark.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration as StdDuration;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dotmac_collections::{
    DunningInvoice, DunningPolicy, DunningState, RestoreOnPayment, Settlement, evaluate,
};
use dotmac_core::{BillingInterval, Currency, CustomerId, InvoiceId, Money};
use dotmac_usage::radius::{AcctStatusType, Direction, RadiusNormaliser, RadiusRecord};
use dotmac_usage::{
    Aggregation, Meter, MeterId, UsageAggregator, UsageCalendar, UsageEvent, UsageEventId,
};
use rust_decimal::Decimal;

const EVENTS: usize = 1_000_000;
const CUSTOMERS: u128 = 10_000;
/// Records or invoices handled between two hand-offs of the output.
const CHUNK: usize = 10_000;

fn usage(c: &mut Criterion) {
    let meters = vec![
        Meter {
            id: MeterId::from_u128(1),
            code: "download_bytes".into(),
            aggregation: Aggregation::Sum,
        },
        Meter {
            id: MeterId::from_u128(2),
            code: "sessions".into(),
            aggregation: Aggregation::Max,
        },
    ];
    let calendar = UsageCalendar {
        interval: BillingInterval::MONTHLY,
        anchor: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        zone: dotmac_core::reexports::chrono_tz::UTC,
    };
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let events: Vec<UsageEvent> = (0..EVENTS as u128)
        .map(|i| UsageEvent {
            // Spread ids like UUIDs would be: the idempotency set sees realistic hashing.
            id: UsageEventId::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)),
            customer: CustomerId::from_u128(i % CUSTOMERS),
            subscription: None,
            meter: MeterId::from_u128(1 + (i % 2)),
            quantity: Decimal::new((i % 5000) as i64 + 1, 0),
            timestamp: start + Duration::seconds((i % 2_000_000) as i64),
            properties: Default::default(),
        })
        .collect();
    let received = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
    let fresh = || {
        let mut agg = UsageAggregator::new(calendar, meters.clone());
        for c in 0..CUSTOMERS {
            agg.register_customer(CustomerId::from_u128(c));
        }
        agg.reserve(EVENTS);
        agg
    };
    let mut group = c.benchmark_group("usage");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("ingest_aggregate_1m", |b| {
        b.iter_batched(
            fresh,
            |mut agg| {
                let report = agg.ingest_batch(black_box(&events), received);
                black_box(report.counted);
                agg
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn radius(c: &mut Criterion) {
    const SESSIONS: usize = 100_000;
    const PER_SESSION: usize = 10;
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let mut records = Vec::with_capacity(SESSIONS * PER_SESSION);
    for step in 0..PER_SESSION {
        for s in 0..SESSIONS {
            let total = (step as u64 + 1) * 700_000_000 + s as u64;
            let status = match step {
                0 => AcctStatusType::Start,
                n if n + 1 == PER_SESSION => AcctStatusType::Stop,
                _ => AcctStatusType::InterimUpdate,
            };
            records.push(RadiusRecord {
                status,
                session_id: format!("{s:08x}-nas-{:04}", s % 97),
                acct_session_id: None,
                nas: None,
                user_name: format!("user{s}"),
                timestamp: at + Duration::minutes(step as i64 * 5),
                input_octets: Some((total / 3) as u32),
                input_gigawords: Some(((total / 3) >> 32) as u32),
                output_octets: Some(total as u32),
                output_gigawords: Some((total >> 32) as u32),
                session_time: None,
            });
        }
    }
    let resolver = |name: &str| {
        let n: u128 = name.get(4..).and_then(|n| n.parse().ok())?;
        Some((CustomerId::from_u128(n), None))
    };
    let mut group = c.benchmark_group("radius");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("normalise_1m", |b| {
        b.iter_batched(
            || {
                (
                    RadiusNormaliser::new(
                        Direction::InputIsUpload,
                        MeterId::from_u128(1),
                        MeterId::from_u128(2),
                    ),
                    Vec::with_capacity(2 * CHUNK),
                )
            },
            |(mut normaliser, mut out)| {
                // In chunks, as a collector hands batches on to the usage ingest.
                let mut produced = 0;
                for chunk in records.chunks(CHUNK) {
                    for record in chunk {
                        let _ = normaliser.normalise(black_box(record), &resolver, &mut out);
                    }
                    produced += out.len();
                    out.clear();
                }
                black_box(produced);
                (normaliser, out)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn dunning(c: &mut Criterion) {
    const INVOICES: usize = 1_000_000;
    let policy = DunningPolicy::builder(Currency::USD)
        .step(-3, "reminder")
        .step(1, "overdue_notice")
        .late_fee(
            3,
            "late_fee",
            Money::new(Decimal::new(500, 2), Currency::USD),
        )
        .step(5, "suspend")
        .step(75, "write_off")
        .grace_days(2)
        .min_balance(Money::new(Decimal::ONE, Currency::USD))
        .no_suspension_on(chrono::Weekday::Sat)
        .no_suspension_on(chrono::Weekday::Sun)
        .restore_on_payment(RestoreOnPayment::Restore {
            reconnection_fee: Some(Money::new(Decimal::TEN, Currency::USD)),
        })
        .build()
        .unwrap();
    let base = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let invoices: Vec<(DunningInvoice, Vec<Settlement>)> = (0..INVOICES)
        .map(|i| {
            let due = base + chrono::Days::new((i % 28) as u64);
            let invoice = DunningInvoice {
                id: InvoiceId::from_u128(i as u128),
                customer: CustomerId::from_u128((i / 2) as u128),
                total: Money::from_minor(5000, Currency::USD),
                due,
            };
            // A third paid in part, a sixth paid in full a few days late.
            let settlements = match i % 6 {
                0 | 3 => vec![Settlement {
                    on: due + chrono::Days::new(2),
                    amount: Decimal::new(2000, 2),
                }],
                1 => vec![Settlement {
                    on: due + chrono::Days::new(4),
                    amount: Decimal::new(5000, 2),
                }],
                _ => Vec::new(),
            };
            (invoice, settlements)
        })
        .collect();
    let today = NaiveDate::from_ymd_opt(2026, 4, 10).unwrap();
    let mut group = c.benchmark_group("dunning");
    group.sample_size(10);
    group.throughput(Throughput::Elements(INVOICES as u64));
    group.bench_function("evaluate_1m_open_invoices", |b| {
        b.iter_batched(
            || {
                (
                    vec![DunningState::default(); INVOICES],
                    Vec::with_capacity(8 * CHUNK),
                )
            },
            |(mut states, mut out)| {
                // In chunks, as a service writes each chunk's actions out before the next.
                let mut fired = 0;
                for (chunk, states) in invoices.chunks(CHUNK).zip(states.chunks_mut(CHUNK)) {
                    for ((invoice, settlements), state) in chunk.iter().zip(states.iter_mut()) {
                        let _ = evaluate(&policy, invoice, settlements, state, today, &mut out);
                    }
                    fired += out.len();
                    out.clear();
                }
                black_box(fired);
                (states, out)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(StdDuration::from_secs(3))
        .warm_up_time(StdDuration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = usage, radius, dunning
}
criterion_main!(benches);
