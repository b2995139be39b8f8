//! Usage ingestion: idempotency, order independence and bad input in batches.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use dotmac_core::{BillingInterval, CustomerId, TenantId};
use dotmac_usage::{
    Aggregation, InMemoryUsageStore, Meter, MeterId, UsageAggregator, UsageCalendar, UsageError,
    UsageEvent, UsageEventId, UsageStore,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn meters() -> Vec<Meter> {
    let kinds = [
        Aggregation::Count,
        Aggregation::Sum,
        Aggregation::Max,
        Aggregation::UniqueCount {
            property: "ip".into(),
        },
        Aggregation::Latest,
        Aggregation::WeightedSum,
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, aggregation)| Meter {
            id: MeterId::from_u128(i as u128 + 1),
            code: format!("m{i}"),
            aggregation,
        })
        .collect()
}

fn calendar() -> UsageCalendar {
    UsageCalendar {
        interval: BillingInterval::MONTHLY,
        anchor: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        zone: chrono_tz::Europe::Berlin,
    }
}

fn customers() -> [CustomerId; 2] {
    [CustomerId::from_u128(1), CustomerId::from_u128(2)]
}

fn aggregator() -> UsageAggregator {
    let mut agg = UsageAggregator::new(calendar(), meters());
    for c in customers() {
        agg.register_customer(c);
    }
    agg
}

fn received() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn event(id: u128, customer: usize, meter: u128, quantity: i64, minute: i64, ip: u8) -> UsageEvent {
    let mut properties = BTreeMap::new();
    properties.insert("ip".to_owned(), format!("10.0.0.{ip}"));
    UsageEvent {
        id: UsageEventId::from_u128(id),
        customer: customers()[customer % 2],
        subscription: None,
        meter: MeterId::from_u128(meter),
        quantity: Decimal::new(quantity, 2),
        timestamp: Utc.with_ymd_and_hms(2026, 2, 25, 0, 0, 0).unwrap() + Duration::minutes(minute),
        properties,
    }
}

fn snapshot(agg: &UsageAggregator) -> Vec<Decimal> {
    let mut out = Vec::new();
    for c in customers() {
        for m in 1..=6u128 {
            for month in [2, 3, 4] {
                let start = NaiveDate::from_ymd_opt(2026, month, 1).unwrap();
                out.push(agg.aggregate(c, MeterId::from_u128(m), start).unwrap());
            }
        }
    }
    out
}

fn events_strategy() -> impl Strategy<Value = Vec<UsageEvent>> {
    prop::collection::vec(
        (
            0usize..2,
            1u128..=6,
            0i64..100_000,
            0i64..60 * 24 * 40,
            0u8..5,
        ),
        1..60,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (c, m, q, minute, ip))| {
                let mut e = event(i as u128 + 1, c, m, q, minute, ip);
                // Mix whole quantities (the integer fast path) with decimal ones.
                if minute % 2 == 0 {
                    e.quantity = Decimal::from(q);
                }
                e
            })
            .collect()
    })
}

proptest! {
    /// Replaying the same stream in any order, with any events repeated, gives the same
    /// aggregates.
    #[test]
    fn aggregates_do_not_depend_on_order_or_replays(
        events in events_strategy(),
        seed in any::<u64>(),
        repeats in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut forward = aggregator();
        let report = forward.ingest_batch(&events, received());
        prop_assert!(report.rejected.is_empty());
        prop_assert_eq!(report.counted, events.len());

        let mut shuffled = events.clone();
        for index in &repeats {
            shuffled.push(index.get(&events).clone());
        }
        // Deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut replayed = aggregator();
        let report = replayed.ingest_batch(&shuffled, received());
        prop_assert_eq!(report.duplicates, repeats.len());
        prop_assert_eq!(snapshot(&forward), snapshot(&replayed));
    }
}

#[test]
fn bad_events_are_reported_and_the_rest_counted() {
    let mut agg = aggregator();
    let good = event(1, 0, 2, 500, 10, 1);
    let mut unknown_meter = event(2, 0, 99, 500, 10, 1);
    unknown_meter.meter = MeterId::from_u128(99);
    let mut unknown_customer = event(3, 0, 2, 500, 10, 1);
    unknown_customer.customer = CustomerId::from_u128(77);
    let negative = event(4, 0, 2, -1, 10, 1);
    let mut future = event(5, 0, 2, 1, 0, 1);
    future.timestamp = received() + Duration::hours(1);
    let report = agg.ingest_batch(
        &[
            unknown_meter.clone(),
            good,
            unknown_customer.clone(),
            negative,
            future.clone(),
        ],
        received(),
    );
    assert_eq!(report.counted, 1);
    assert_eq!(
        report
            .rejected
            .iter()
            .map(|r| (r.index, r.event, r.error.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                0,
                unknown_meter.id,
                UsageError::UnknownMeter {
                    event: unknown_meter.id,
                    meter: MeterId::from_u128(99)
                }
            ),
            (
                2,
                unknown_customer.id,
                UsageError::UnknownCustomer {
                    event: unknown_customer.id,
                    customer: CustomerId::from_u128(77)
                }
            ),
            (
                3,
                UsageEventId::from_u128(4),
                UsageError::NegativeQuantity {
                    event: UsageEventId::from_u128(4),
                    quantity: Decimal::new(-1, 2)
                }
            ),
            (
                4,
                future.id,
                UsageError::TimestampInFuture {
                    event: future.id,
                    timestamp: future.timestamp,
                    latest: received() + Duration::minutes(5)
                }
            ),
        ]
    );
    // Only the good event counted; a refused id stays free for a corrected resend.
    assert_eq!(agg.events_counted(), 1);
    let feb = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
    assert_eq!(
        agg.aggregate(customers()[0], MeterId::from_u128(2), feb)
            .unwrap(),
        Decimal::new(500, 2)
    );
    let mut corrected = unknown_customer;
    corrected.customer = customers()[1];
    assert!(agg.ingest(&corrected, received()).is_ok());
}

#[test]
fn periods_follow_the_tenant_time_zone() {
    let mut agg = aggregator();
    // 23:30 UTC on 31 March is already 1 April in Berlin (UTC+2 in summer time).
    let mut late_evening = event(1, 0, 2, 100, 0, 1);
    late_evening.timestamp = Utc.with_ymd_and_hms(2026, 3, 31, 23, 30, 0).unwrap();
    agg.ingest(&late_evening, received()).unwrap();
    let april = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
    let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    assert_eq!(
        agg.aggregate(customers()[0], MeterId::from_u128(2), april)
            .unwrap(),
        Decimal::ONE
    );
    assert_eq!(
        agg.aggregate(customers()[0], MeterId::from_u128(2), march)
            .unwrap(),
        Decimal::ZERO
    );
}

#[tokio::test]
async fn the_store_keeps_each_event_once_per_tenant() {
    let store = InMemoryUsageStore::new();
    let (a, b) = (TenantId::from_u128(1), TenantId::from_u128(2));
    let e = event(1, 0, 2, 100, 0, 1);
    assert_eq!(
        store
            .append_events(a, &[e.clone(), e.clone()])
            .await
            .unwrap(),
        vec![true, false]
    );
    assert_eq!(
        store
            .append_events(b, std::slice::from_ref(&e))
            .await
            .unwrap(),
        vec![true]
    );
    let from = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let found = store
        .events_between(a, e.customer, e.meter, from, to)
        .await
        .unwrap();
    assert_eq!(found, vec![e.clone()]);
    let other = store
        .events_between(a, CustomerId::from_u128(2), e.meter, from, to)
        .await
        .unwrap();
    assert!(other.is_empty());
}
