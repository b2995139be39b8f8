//! The usage store behaviour suite: one set of checks, run against every
//! [`UsageStore`](crate::UsageStore) implementation (the in-memory store here, SQLite and
//! PostgreSQL in `dotmac-sqlx`), so that stores cannot drift apart.
//!
//! ```
//! # async fn demo() -> Result<(), String> {
//! dotmac_usage::testkit::run_usage_store_suite(dotmac_usage::InMemoryUsageStore::new).await
//! # }
//! ```
//!
//! Every check uses fresh tenant ids, so the suite may share one database with other tests.
//!
//! What the trait promises and the suite holds every store to:
//!
//! * [`append_events`](crate::UsageStore::append_events) answers one bool per input event, in
//!   input order: `true` the first time the tenant sees the id, `false` for a replay (from an
//!   earlier call or earlier in the same batch). A replay never overwrites: the first body wins.
//! * [`events_between`](crate::UsageStore::events_between) returns exactly one customer's events
//!   of one meter with `from <= timestamp < to`, in timestamp order. The order of events with
//!   the same timestamp is not promised, so the suite compares those as sets.
//! * Timestamps are compared to the microsecond: PostgreSQL's `timestamptz` keeps no more.
//! * [`period_aggregates`](crate::UsageStore::period_aggregates) gives, for every key and
//!   every aggregation, exactly what [`aggregate_events`](crate::aggregate_events) gives over
//!   the key's events read one key at a time, and (for keys of every subscription) what
//!   ingestion's [`UsageAggregator`](crate::UsageAggregator) gives over the events as they were
//!   sent: replays counted once with their first body, late events counted, every key's error
//!   its own.

// A test suite: fixed, small figures, where plain operators are the clearest.
#![allow(clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use dotmac_core::{BillingInterval, CustomerId, MeterId, SubscriptionId, TenantId, UsageEventId};
use rust_decimal::Decimal;

use crate::store::aggregates_per_key;
use crate::{
    Aggregation, Meter, PeriodKey, UsageAggregator, UsageCalendar, UsageError, UsageEvent,
    UsageStore,
};

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn err(e: UsageError) -> String {
    e.to_string()
}

/// Runs every check against stores made by `make` (one fresh store per check; every check uses
/// fresh tenants).
///
/// # Errors
///
/// A message naming the first check that failed.
pub async fn run_usage_store_suite<S, F>(make: F) -> Result<(), String>
where
    S: UsageStore,
    F: Fn() -> S,
{
    replays_are_stored_once_and_reported_in_input_order(make())
        .await
        .map_err(|e| format!("replays_are_stored_once_and_reported_in_input_order: {e}"))?;
    a_replay_never_overwrites_the_first_event(make())
        .await
        .map_err(|e| format!("a_replay_never_overwrites_the_first_event: {e}"))?;
    tenants_are_isolated(make())
        .await
        .map_err(|e| format!("tenants_are_isolated: {e}"))?;
    events_between_is_half_open_and_filters_customer_and_meter(make())
        .await
        .map_err(|e| format!("events_between_is_half_open_and_filters_customer_and_meter: {e}"))?;
    events_come_back_in_timestamp_order(make())
        .await
        .map_err(|e| format!("events_come_back_in_timestamp_order: {e}"))?;
    events_round_trip_exactly(make())
        .await
        .map_err(|e| format!("events_round_trip_exactly: {e}"))?;
    an_empty_batch_is_a_no_op(make())
        .await
        .map_err(|e| format!("an_empty_batch_is_a_no_op: {e}"))?;
    a_large_batch_round_trips(make())
        .await
        .map_err(|e| format!("a_large_batch_round_trips: {e}"))?;
    concurrent_replays_store_each_event_once(make())
        .await
        .map_err(|e| format!("concurrent_replays_store_each_event_once: {e}"))?;
    period_aggregates_equal_the_aggregator_for_every_aggregation(make())
        .await
        .map_err(|e| {
            format!("period_aggregates_equal_the_aggregator_for_every_aggregation: {e}")
        })?;
    period_aggregates_of_random_usage_equal_the_aggregator(make())
        .await
        .map_err(|e| format!("period_aggregates_of_random_usage_equal_the_aggregator: {e}"))?;
    period_aggregates_fail_each_key_alone(make())
        .await
        .map_err(|e| format!("period_aggregates_fail_each_key_alone: {e}"))?;
    Ok(())
}

/// 2026-03-01 00:00 UTC plus `micros` microseconds.
fn at(micros: i64) -> Result<DateTime<Utc>, String> {
    let start = Utc
        .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
        .single()
        .ok_or("bad start instant")?;
    start
        .checked_add_signed(Duration::microseconds(micros))
        .ok_or_else(|| format!("bad instant +{micros}µs"))
}

const SECOND: i64 = 1_000_000;

fn event(
    id: u128,
    customer: CustomerId,
    meter: MeterId,
    quantity: Decimal,
    timestamp: DateTime<Utc>,
) -> UsageEvent {
    UsageEvent {
        id: UsageEventId::from_u128(id),
        customer,
        subscription: None,
        meter,
        quantity,
        timestamp,
        properties: BTreeMap::new(),
    }
}

fn dec(text: &str) -> Result<Decimal, String> {
    Decimal::from_str(text).map_err(|e| format!("bad decimal {text}: {e}"))
}

/// Events in (timestamp, id) order: the trait promises timestamp order only, so ties are put
/// in one order before two lists are compared.
fn canonical(mut events: Vec<UsageEvent>) -> Vec<UsageEvent> {
    events.sort_by_key(|e| (e.timestamp, e.id));
    events
}

/// Reads the whole of 2026 for `customer` and `meter`.
async fn read_all<S: UsageStore>(
    store: &S,
    tenant: TenantId,
    customer: CustomerId,
    meter: MeterId,
) -> Result<Vec<UsageEvent>, String> {
    let from = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .ok_or("bad instant")?;
    let to = Utc
        .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
        .single()
        .ok_or("bad instant")?;
    store
        .events_between(tenant, customer, meter, from, to)
        .await
        .map_err(err)
}

/// Asserts that `got` holds exactly `want` (as sets of events) and is in timestamp order.
fn same_events(what: &str, got: &[UsageEvent], want: &[UsageEvent]) -> Result<(), String> {
    ensure!(
        got.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "{what}: not in timestamp order: {:?}",
        got.iter().map(|e| e.timestamp).collect::<Vec<_>>()
    );
    let got = canonical(got.to_vec());
    let want = canonical(want.to_vec());
    ensure!(
        got == want,
        "{what}: read {} events, expected {}: {got:?} vs {want:?}",
        got.len(),
        want.len()
    );
    Ok(())
}

async fn replays_are_stored_once_and_reported_in_input_order<S: UsageStore>(
    store: S,
) -> Result<(), String> {
    let tenant = TenantId::new();
    let (customer, meter) = (CustomerId::new(), MeterId::new());
    let one = |id, secs| -> Result<UsageEvent, String> {
        Ok(event(id, customer, meter, Decimal::ONE, at(secs * SECOND)?))
    };
    let (e1, e2, e3, e4) = (one(1, 1)?, one(2, 2)?, one(3, 3)?, one(4, 4)?);

    // An id repeated inside one batch is new the first time only, wherever it repeats.
    let first = store
        .append_events(tenant, &[e1.clone(), e2.clone(), e1.clone(), e2.clone()])
        .await
        .map_err(err)?;
    ensure!(
        first == [true, true, false, false],
        "a batch with repeats answered {first:?}"
    );
    same_events(
        "after the first batch",
        &read_all(&store, tenant, customer, meter).await?,
        &[e1.clone(), e2.clone()],
    )?;

    // The same batch again: every event known.
    let again = store
        .append_events(tenant, &[e1.clone(), e2.clone()])
        .await
        .map_err(err)?;
    ensure!(
        again == [false, false],
        "a replayed batch answered {again:?}"
    );

    // Known and new ids mixed, the new ones in the middle and at the end, one new one twice:
    // the answers follow the input order.
    let mixed = store
        .append_events(
            tenant,
            &[e2.clone(), e3.clone(), e1.clone(), e4.clone(), e3.clone()],
        )
        .await
        .map_err(err)?;
    ensure!(
        mixed == [false, true, false, true, false],
        "a mixed batch answered {mixed:?}"
    );
    same_events(
        "after the replays",
        &read_all(&store, tenant, customer, meter).await?,
        &[e1, e2, e3, e4],
    )?;
    Ok(())
}

async fn a_replay_never_overwrites_the_first_event<S: UsageStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let (customer, meter) = (CustomerId::new(), MeterId::new());
    let original = event(1, customer, meter, dec("5")?, at(10 * SECOND)?);
    ensure!(
        store
            .append_events(tenant, std::slice::from_ref(&original))
            .await
            .map_err(err)?
            == [true],
        "the first event was not new"
    );
    // A sender that reuses an id with another body (a bug on its side) is answered "known" and
    // the first body stays: the id is the idempotency key, not a version.
    let mut rewritten = original.clone();
    rewritten.quantity = dec("500")?;
    rewritten.timestamp = at(20 * SECOND)?;
    rewritten.properties.insert("region".into(), "north".into());
    let answer = store
        .append_events(tenant, &[rewritten])
        .await
        .map_err(err)?;
    ensure!(
        answer == [false],
        "a reused id with another body answered {answer:?}"
    );
    same_events(
        "after the rewrite attempt",
        &read_all(&store, tenant, customer, meter).await?,
        &[original],
    )?;
    Ok(())
}

async fn tenants_are_isolated<S: UsageStore>(store: S) -> Result<(), String> {
    let (a, b, c) = (TenantId::new(), TenantId::new(), TenantId::new());
    let (customer, meter) = (CustomerId::new(), MeterId::new());
    let in_a = event(1, customer, meter, dec("1")?, at(SECOND)?);
    // The same event id (and customer and meter) in another tenant is another event.
    let mut in_b = in_a.clone();
    in_b.quantity = dec("2")?;
    in_b.timestamp = at(2 * SECOND)?;
    let answer_a = store
        .append_events(a, std::slice::from_ref(&in_a))
        .await
        .map_err(err)?;
    let answer_b = store
        .append_events(b, std::slice::from_ref(&in_b))
        .await
        .map_err(err)?;
    ensure!(
        answer_a == [true] && answer_b == [true],
        "the same id in two tenants: {answer_a:?} and {answer_b:?} (both must be new)"
    );
    same_events(
        "tenant a",
        &read_all(&store, a, customer, meter).await?,
        std::slice::from_ref(&in_a),
    )?;
    same_events(
        "tenant b",
        &read_all(&store, b, customer, meter).await?,
        &[in_b.clone()],
    )?;
    same_events(
        "a tenant that wrote nothing",
        &read_all(&store, c, customer, meter).await?,
        &[],
    )?;
    // A replay in one tenant is still a replay there only.
    let once = std::slice::from_ref(&in_a);
    let replay = store.append_events(a, once).await.map_err(err)?;
    let fresh = store.append_events(c, once).await.map_err(err)?;
    ensure!(
        replay == [false] && fresh == [true],
        "replay in a: {replay:?}, first write in c: {fresh:?}"
    );
    same_events(
        "tenant b after writes elsewhere",
        &read_all(&store, b, customer, meter).await?,
        &[in_b],
    )?;
    Ok(())
}

async fn events_between_is_half_open_and_filters_customer_and_meter<S: UsageStore>(
    store: S,
) -> Result<(), String> {
    let tenant = TenantId::new();
    let (customer, other_customer) = (CustomerId::new(), CustomerId::new());
    let (meter, other_meter) = (MeterId::new(), MeterId::new());
    let from = at(100 * SECOND)?;
    let to = at(200 * SECOND)?;
    let one = Decimal::ONE;
    // Around each bound: one microsecond before, on, one microsecond after.
    let before_from = event(1, customer, meter, one, at(100 * SECOND - 1)?);
    let on_from = event(2, customer, meter, one, from);
    let after_from = event(3, customer, meter, one, at(100 * SECOND + 1)?);
    let middle = event(4, customer, meter, one, at(150 * SECOND + 500_000)?);
    let before_to = event(5, customer, meter, one, at(200 * SECOND - 1)?);
    let on_to = event(6, customer, meter, one, to);
    let after_to = event(7, customer, meter, one, at(200 * SECOND + 1)?);
    // In the window but for another customer, another meter, or both.
    let customer_2 = event(8, other_customer, meter, one, at(150 * SECOND)?);
    let meter_2 = event(9, customer, other_meter, one, at(150 * SECOND)?);
    let both_2 = event(10, other_customer, other_meter, one, at(150 * SECOND)?);
    let all = [
        before_from.clone(),
        on_from.clone(),
        after_from.clone(),
        middle.clone(),
        before_to.clone(),
        on_to.clone(),
        after_to.clone(),
        customer_2.clone(),
        meter_2.clone(),
        both_2.clone(),
    ];
    store.append_events(tenant, &all).await.map_err(err)?;

    let window = store
        .events_between(tenant, customer, meter, from, to)
        .await
        .map_err(err)?;
    same_events(
        "[from, to)",
        &window,
        &[on_from.clone(), after_from, middle, before_to],
    )?;
    for (what, c, m, want) in [
        ("another customer", other_customer, meter, customer_2),
        ("another meter", customer, other_meter, meter_2),
        (
            "another customer and meter",
            other_customer,
            other_meter,
            both_2,
        ),
    ] {
        let got = store
            .events_between(tenant, c, m, from, to)
            .await
            .map_err(err)?;
        same_events(what, &got, &[want])?;
    }
    // A one-microsecond window holds the event at its start only.
    let tight = store
        .events_between(tenant, customer, meter, from, at(100 * SECOND + 1)?)
        .await
        .map_err(err)?;
    same_events("[from, from + 1µs)", &tight, &[on_from])?;
    // An empty or inverted window holds nothing (and is not an error).
    for (what, lo, hi) in [("from == to", from, from), ("from > to", to, from)] {
        let got = store
            .events_between(tenant, customer, meter, lo, hi)
            .await
            .map_err(err)?;
        same_events(what, &got, &[])?;
    }
    // A customer and meter with no events at all.
    let nobody = store
        .events_between(tenant, CustomerId::new(), MeterId::new(), from, to)
        .await
        .map_err(err)?;
    same_events("an unknown customer and meter", &nobody, &[])?;
    Ok(())
}

async fn events_come_back_in_timestamp_order<S: UsageStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let (customer, meter) = (CustomerId::new(), MeterId::new());
    // Written out of order, across calls, with ties, whole and fractional seconds (a store
    // that compares instants as text must still order 1 s before 1.5 s before 10 s).
    let micros = [
        10 * SECOND,
        SECOND + SECOND / 2,
        SECOND,
        SECOND + 1,
        86_400 * SECOND,
        SECOND,
        0,
        9 * SECOND + 999_999,
        SECOND + SECOND / 2,
    ];
    let mut written = Vec::new();
    for (n, m) in micros.iter().enumerate() {
        written.push(event(
            // Ids descending while time ascends: an order by id is caught.
            1000 - n as u128,
            customer,
            meter,
            Decimal::from(n),
            at(*m)?,
        ));
    }
    let (head, tail) = written.split_at(4);
    store.append_events(tenant, tail).await.map_err(err)?;
    store.append_events(tenant, head).await.map_err(err)?;
    same_events(
        "out-of-order writes",
        &read_all(&store, tenant, customer, meter).await?,
        &written,
    )?;
    Ok(())
}

async fn events_round_trip_exactly<S: UsageStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let (customer, meter) = (CustomerId::new(), MeterId::new());
    let quantities = [
        "0",
        "0.000000001",
        "0.0000000000000000000000000001",
        "79228162514264337593543950335",
        "-79228162514264337593543950335",
        "7922816251426433759354395033.5",
        "1.50",
        "1234567890.123456789",
        "-2.5",
    ];
    let mut written = Vec::new();
    for (n, q) in quantities.iter().enumerate() {
        let mut e = event(n as u128 + 1, customer, meter, dec(q)?, at(n as i64 * 7)?);
        if n % 2 == 0 {
            e.subscription = Some(SubscriptionId::new());
        }
        written.push(e);
    }
    // Properties: empty names and values, quotes, backslashes, JSON and SQL metacharacters,
    // non-ASCII text and a long value.
    let mut properties = BTreeMap::new();
    for (k, v) in [
        ("", "empty name"),
        ("empty value", ""),
        ("quote", "it's \"quoted\""),
        ("backslash", "C:\\path\\n"),
        ("json", "{\"a\": [1, 2]}"),
        ("sql", "'); DROP TABLE usage_events; --"),
        ("unicode", "Zürich – 東京 – 🛰️"),
        ("newline", "line one\nline two\ttabbed"),
    ] {
        properties.insert(k.to_owned(), v.to_owned());
    }
    properties.insert("long".into(), "x".repeat(10_000));
    if let Some(first) = written.first_mut() {
        first.properties = properties;
    }
    let answers = store.append_events(tenant, &written).await.map_err(err)?;
    ensure!(
        answers.iter().all(|new| *new) && answers.len() == written.len(),
        "fresh events answered {answers:?}"
    );
    let back = read_all(&store, tenant, customer, meter).await?;
    same_events("the stored events", &back, &written)?;
    // `Decimal`'s `==` ignores the scale; a stored 1.50 must still read back as 1.50.
    for (got, want) in canonical(back).iter().zip(canonical(written)) {
        ensure!(
            got.quantity.to_string() == want.quantity.to_string(),
            "quantity {} read back as {}",
            want.quantity,
            got.quantity
        );
    }
    Ok(())
}

async fn an_empty_batch_is_a_no_op<S: UsageStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let (customer, meter) = (CustomerId::new(), MeterId::new());
    let empty = store.append_events(tenant, &[]).await.map_err(err)?;
    ensure!(empty.is_empty(), "an empty batch answered {empty:?}");
    let kept = event(1, customer, meter, Decimal::ONE, at(SECOND)?);
    store
        .append_events(tenant, std::slice::from_ref(&kept))
        .await
        .map_err(err)?;
    let empty = store.append_events(tenant, &[]).await.map_err(err)?;
    ensure!(
        empty.is_empty(),
        "an empty batch after a write answered {empty:?}"
    );
    same_events(
        "after empty batches",
        &read_all(&store, tenant, customer, meter).await?,
        &[kept],
    )?;
    Ok(())
}

async fn a_large_batch_round_trips<S: UsageStore>(store: S) -> Result<(), String> {
    const N: usize = 10_000;
    let tenant = TenantId::new();
    let (customer, meter) = (CustomerId::new(), MeterId::new());
    let batch = (0..N)
        .map(|n| {
            let mut e = event(
                n as u128 + 1,
                customer,
                meter,
                Decimal::new(n as i64, 3),
                at(n as i64 * 1000)?,
            );
            e.properties.insert("n".into(), n.to_string());
            Ok(e)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let answers = store.append_events(tenant, &batch).await.map_err(err)?;
    ensure!(
        answers.len() == N && answers.iter().all(|new| *new),
        "{} answers, {} new, for {N} fresh events",
        answers.len(),
        answers.iter().filter(|new| **new).count()
    );
    same_events(
        "the large batch",
        &read_all(&store, tenant, customer, meter).await?,
        &batch,
    )?;
    // The second half again with as many new events after it: known ids are skipped, new ones
    // written, and the answers still follow the input order.
    let next = (N..N + N / 2)
        .map(|n| {
            Ok(event(
                n as u128 + 1,
                customer,
                meter,
                Decimal::ONE,
                at(n as i64 * 1000)?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut second: Vec<UsageEvent> = batch[N / 2..].to_vec();
    second.extend(next.iter().cloned());
    let answers = store.append_events(tenant, &second).await.map_err(err)?;
    let want: Vec<bool> = (0..second.len()).map(|i| i >= N / 2).collect();
    ensure!(
        answers == want,
        "a half-known batch: {} answers, {} new (expected {} new, the last ones)",
        answers.len(),
        answers.iter().filter(|new| **new).count(),
        N / 2
    );
    let mut all = batch;
    all.extend(next);
    same_events(
        "after the half-known batch",
        &read_all(&store, tenant, customer, meter).await?,
        &all,
    )?;
    Ok(())
}

/// Polls two futures together until both are done: two concurrent writers in one task, so
/// that a SQL store runs them on two connections at once (no runtime needed here).
async fn join2<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    use std::task::Poll;
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    std::future::poll_fn(|cx| {
        if out_a.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            out_a = Some(v);
        }
        if out_b.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            out_b = Some(v);
        }
        match (out_a.take(), out_b.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                out_a = x;
                out_b = y;
                Poll::Pending
            }
        }
    })
    .await
}

async fn concurrent_replays_store_each_event_once<S: UsageStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let (customer, meter) = (CustomerId::new(), MeterId::new());
    // Two collectors deliver overlapping batches at the same time (at-least-once delivery).
    let events = (0..200)
        .map(|n| {
            Ok(event(
                n + 1,
                customer,
                meter,
                Decimal::ONE,
                at(n as i64 * SECOND)?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let first = &events[..150];
    let second = &events[50..];
    let (a, b) = join2(
        store.append_events(tenant, first),
        store.append_events(tenant, second),
    )
    .await;
    let (a, b) = (a.map_err(err)?, b.map_err(err)?);
    ensure!(
        a.len() == first.len() && b.len() == second.len(),
        "answers of {} and {} for batches of {} and {}",
        a.len(),
        b.len(),
        first.len(),
        second.len()
    );
    // Each event is new to exactly one of the two writers.
    for (n, e) in events.iter().enumerate() {
        let in_a = n < 150 && a[n];
        let in_b = n >= 50 && b[n - 50];
        ensure!(
            in_a != in_b,
            "event {} was new to {} writers",
            e.id,
            usize::from(in_a) + usize::from(in_b)
        );
    }
    same_events(
        "after concurrent writers",
        &read_all(&store, tenant, customer, meter).await?,
        &events,
    )?;
    Ok(())
}

/// One meter of each aggregation (two `unique_count` ones, the second on a property whose
/// name needs quoting in a JSON path), ids 101…108.
fn every_meter() -> Vec<Meter> {
    let meter = |id: u128, code: &str, aggregation| Meter {
        id: MeterId::from_u128(id),
        code: code.into(),
        aggregation,
    };
    vec![
        meter(101, "sessions", Aggregation::Count),
        meter(102, "bytes", Aggregation::Sum),
        meter(103, "peak", Aggregation::Max),
        meter(104, "plan_level", Aggregation::Latest),
        meter(
            105,
            "addresses",
            Aggregation::UniqueCount {
                property: "ip".into(),
            },
        ),
        meter(
            106,
            "odd_names",
            Aggregation::UniqueCount {
                property: "a.b\"c d'$".into(),
            },
        ),
        meter(107, "capacity", Aggregation::WeightedSum),
        meter(108, "seats", Aggregation::WeightedSumOfChanges),
    ]
}

/// Monthly from January 15th in New York: March's period starts after the DST change, at
/// 04:00 UTC on March 15th.
fn new_york_calendar() -> Result<UsageCalendar, String> {
    Ok(UsageCalendar {
        interval: BillingInterval::MONTHLY,
        anchor: NaiveDate::from_ymd_opt(2026, 1, 15).ok_or("bad anchor")?,
        zone: chrono_tz::America::New_York,
    })
}

fn date(m: u32, d: u32) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(2026, m, d).ok_or_else(|| format!("bad date {m}-{d}"))
}

/// Every customer × meter × period start × subscription filter, reading history from January
/// 15th.
fn keys_for(
    calendar: UsageCalendar,
    customers: &[(CustomerId, Option<SubscriptionId>)],
    meters: &[Meter],
    periods: &[NaiveDate],
) -> Result<Vec<PeriodKey>, String> {
    let mut keys = Vec::new();
    for &(customer, subscription) in customers {
        for meter in meters {
            for &period_start in periods {
                keys.push(PeriodKey {
                    customer,
                    subscription,
                    meter: meter.id,
                    calendar,
                    period_start,
                    history_from: date(1, 15)?,
                });
            }
        }
    }
    Ok(keys)
}

/// What [`check_aggregates`] checked of the store's window pass: whether it has one, and how
/// many keys it told.
#[derive(Default)]
struct WindowChecks {
    passes: bool,
    told: usize,
}

/// Compares the store's set-based aggregates with the per-key path (over the same store) for
/// every key, and with ingestion's aggregator over `sent` (every event as sent, in order) for
/// the keys that count every subscription; and the store's window pass, where it has one,
/// with the per-key path for every key the pass tells.
async fn check_aggregates<S: UsageStore>(
    what: &str,
    store: &S,
    tenant: TenantId,
    meters: &[Meter],
    keys: &[PeriodKey],
    sent: &[UsageEvent],
) -> Result<WindowChecks, String> {
    let got = store
        .period_aggregates(tenant, meters, keys)
        .await
        .map_err(err)?;
    let want = aggregates_per_key(store, tenant, meters, keys)
        .await
        .map_err(err)?;
    ensure!(
        got.len() == keys.len(),
        "{what}: {} aggregates for {} keys",
        got.len(),
        keys.len()
    );
    for ((key, got), want) in keys.iter().zip(&got).zip(&want) {
        ensure!(
            got == want,
            "{what}: {key:?}: set-based {got:?}, per key {want:?}"
        );
    }
    // The window pass (where the store has one): every key it can tell gets exactly the
    // per-key aggregate, and it tells none whose aggregate is an error.
    let windows = crate::store::key_windows(meters, keys);
    let mut passes = std::collections::HashMap::new();
    let mut checks = WindowChecks::default();
    for ((key, window), want) in keys.iter().zip(&windows).zip(&want) {
        let Ok((meter, from, to)) = window else {
            continue;
        };
        let pass = match passes.get(&(meter.id, *from, *to)) {
            Some(pass) => pass,
            None => {
                let totals = store
                    .window_totals(tenant, meter, *from, *to)
                    .await
                    .map_err(err)?;
                passes.entry((meter.id, *from, *to)).or_insert(totals)
            }
        };
        let Some(totals) = pass else {
            continue;
        };
        checks.passes = true;
        if let Some(quantity) = totals.quantity(&meter.aggregation, key.customer, key.subscription)
        {
            checks.told += 1;
            ensure!(
                want.as_ref() == Ok(&quantity),
                "{what}: {key:?}: window pass {quantity}, per key {want:?}"
            );
        }
    }
    let Some(calendar) = keys.first().map(|k| k.calendar) else {
        return Ok(checks);
    };
    let mut ingestion = UsageAggregator::new(calendar, meters.to_vec());
    for key in keys {
        ingestion.register_customer(key.customer);
    }
    let far = Utc
        .with_ymd_and_hms(2100, 1, 1, 0, 0, 0)
        .single()
        .ok_or("bad instant")?;
    let report = ingestion.ingest_batch(sent, far);
    ensure!(
        report.rejected.is_empty(),
        "{what}: ingestion refused {:?}",
        report.rejected
    );
    for (key, got) in keys.iter().zip(&got) {
        if key.subscription.is_some() {
            continue;
        }
        let want = ingestion.aggregate(key.customer, key.meter, key.period_start);
        ensure!(
            *got == want,
            "{what}: {key:?}: set-based {got:?}, ingestion's aggregator {want:?}"
        );
    }
    Ok(checks)
}

/// New York local time on 2026-`m`-`d`, plus `micros`, as an instant.
fn ny(m: u32, d: u32, hour: u32, micros: i64) -> Result<DateTime<Utc>, String> {
    let local = date(m, d)?
        .and_hms_opt(hour, 0, 0)
        .ok_or("bad hour")?
        .and_local_timezone(chrono_tz::America::New_York)
        .earliest()
        .ok_or("no such local time")?
        .with_timezone(&Utc);
    local
        .checked_add_signed(Duration::microseconds(micros))
        .ok_or_else(|| "bad instant".to_string())
}

async fn period_aggregates_equal_the_aggregator_for_every_aggregation<S: UsageStore>(
    store: S,
) -> Result<(), String> {
    let tenant = TenantId::new();
    let meters = every_meter();
    let calendar = new_york_calendar()?;
    let (c1, c2, c3) = (CustomerId::new(), CustomerId::new(), CustomerId::new());
    let (s1, s2) = (SubscriptionId::new(), SubscriptionId::new());
    let m = |n: u128| MeterId::from_u128(n);
    let mut next_id = 0u128;
    let mut ev = |customer, sub, meter: u128, quantity: &str, when, props: &[(&str, &str)]| {
        next_id += 1;
        Ok::<_, String>(UsageEvent {
            id: UsageEventId::from_u128(0xa000 + next_id),
            customer,
            subscription: sub,
            meter: m(meter),
            quantity: dec(quantity)?,
            timestamp: when,
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    };
    // March's period starts at local midnight of March 15th: an event one microsecond before
    // is February's.
    let boundary = ny(3, 15, 0, 0)?;
    let before = ny(3, 15, 0, -1)?;
    let odd = "a.b\"c d'$";
    let mut first = vec![
        ev(c1, Some(s1), 101, "1", ny(2, 20, 9, 0)?, &[])?,
        ev(c1, Some(s2), 101, "1", ny(2, 21, 9, 0)?, &[])?,
        ev(c1, None, 101, "1", before, &[])?,
        ev(c1, Some(s1), 101, "1", boundary, &[])?,
        ev(c1, Some(s1), 102, "1073741824", ny(2, 16, 1, 5)?, &[])?,
        ev(c1, Some(s1), 102, "2.5", ny(2, 17, 1, 0)?, &[])?,
        ev(c1, Some(s2), 102, "0.125", ny(2, 18, 1, 0)?, &[])?,
        ev(c1, None, 102, "999999999999999999", ny(2, 19, 1, 0)?, &[])?,
        ev(c1, Some(s1), 102, "7", boundary, &[])?,
        ev(c2, None, 102, "12", ny(3, 20, 1, 0)?, &[])?,
        ev(c2, None, 102, "30", ny(3, 21, 1, 0)?, &[])?,
        ev(c1, Some(s1), 103, "40", ny(2, 16, 2, 0)?, &[])?,
        ev(c1, Some(s2), 103, "95.5", ny(2, 17, 2, 0)?, &[])?,
        ev(c1, Some(s1), 103, "9", ny(2, 18, 2, 0)?, &[])?,
        ev(c2, None, 103, "0.75", ny(3, 16, 2, 0)?, &[])?,
        ev(c2, None, 103, "0.5", ny(3, 17, 2, 0)?, &[])?,
        // Two events at the same instant: the one with the larger id is the latest.
        ev(c1, Some(s1), 104, "100", ny(2, 20, 3, 123_456)?, &[])?,
        ev(c1, Some(s1), 104, "250", ny(2, 20, 3, 123_456)?, &[])?,
        ev(c1, Some(s2), 104, "75", ny(2, 20, 3, 500_000)?, &[])?,
        ev(c1, Some(s1), 104, "60", ny(2, 20, 3, 0)?, &[])?,
        ev(c2, None, 104, "1.25", ny(3, 16, 3, 0)?, &[])?,
        ev(
            c1,
            Some(s1),
            105,
            "1",
            ny(2, 16, 4, 0)?,
            &[("ip", "10.0.0.1")],
        )?,
        ev(
            c1,
            Some(s1),
            105,
            "1",
            ny(2, 17, 4, 0)?,
            &[("ip", "10.0.0.1")],
        )?,
        ev(
            c1,
            Some(s2),
            105,
            "1",
            ny(2, 18, 4, 0)?,
            &[("ip", "10.0.0.2")],
        )?,
        ev(
            c1,
            None,
            105,
            "1",
            ny(2, 19, 4, 0)?,
            &[("ip", "10.0.0.3"), (odd, "x")],
        )?,
        ev(
            c1,
            Some(s1),
            105,
            "1",
            ny(2, 20, 4, 0)?,
            &[("other", "10.0.0.9")],
        )?,
        ev(
            c1,
            Some(s1),
            105,
            "1",
            ny(2, 21, 4, 0)?,
            &[("ip", "10.0.0.10")],
        )?,
        ev(
            c1,
            Some(s1),
            106,
            "1",
            ny(2, 16, 5, 0)?,
            &[(odd, "α"), ("ip", "1")],
        )?,
        ev(c1, Some(s1), 106, "1", ny(2, 17, 5, 0)?, &[(odd, "β")])?,
        ev(c1, Some(s1), 106, "1", ny(2, 18, 5, 0)?, &[(odd, "α")])?,
        ev(c1, Some(s1), 106, "1", ny(2, 19, 5, 0)?, &[("a.b", "γ")])?,
        // A gauge set in January (history) and changed in February and March.
        ev(c1, Some(s1), 107, "100", ny(1, 20, 0, 0)?, &[])?,
        ev(c1, Some(s1), 107, "300", ny(2, 25, 12, 0)?, &[])?,
        ev(c1, Some(s2), 107, "900", ny(2, 26, 12, 0)?, &[])?,
        ev(c1, Some(s1), 107, "50", ny(3, 30, 0, 0)?, &[])?,
        ev(c2, None, 107, "10", ny(3, 1, 0, 0)?, &[])?,
        ev(c1, Some(s1), 108, "5", ny(1, 16, 0, 0)?, &[])?,
        ev(c1, Some(s1), 108, "-2", ny(2, 20, 0, 0)?, &[])?,
        ev(c1, Some(s2), 108, "3", ny(2, 21, 0, 0)?, &[])?,
        ev(c1, Some(s1), 108, "1.5", ny(3, 20, 0, 0)?, &[])?,
    ];
    store.append_events(tenant, &first).await.map_err(err)?;
    let customers = [
        (c1, Some(s1)),
        (c1, None),
        (c2, Some(s1)),
        (c2, None),
        (c3, None),
    ];
    let periods = [date(2, 15)?, date(3, 15)?, date(4, 15)?];
    let keys = keys_for(calendar, &customers, &meters, &periods)?;
    check_aggregates("first delivery", &store, tenant, &meters, &keys, &first).await?;

    // A few figures worked by hand, so that the two paths cannot agree on a wrong answer.
    let got = store
        .period_aggregates(tenant, &meters, &keys)
        .await
        .map_err(err)?;
    let value = |customer, sub: Option<SubscriptionId>, meter: u128, period: NaiveDate| {
        keys.iter()
            .position(|k| {
                k.customer == customer
                    && k.subscription == sub
                    && k.meter == m(meter)
                    && k.period_start == period
            })
            .and_then(|i| got.get(i).cloned())
    };
    let feb = date(2, 15)?;
    for (meter, sub, want) in [
        (101, Some(s1), "2"),
        (101, None, "3"),
        (102, Some(s1), "1000000001073741825.5"),
        (102, None, "1000000001073741825.625"),
        (103, Some(s1), "40"),
        (103, None, "95.5"),
        (104, Some(s1), "250"),
        (104, None, "75"),
        (105, Some(s1), "3"),
        (105, None, "4"),
        (106, Some(s1), "2"),
        (106, None, "2"),
    ] {
        let got = value(c1, sub, meter, feb);
        ensure!(
            got == Some(Ok(dec(want)?)),
            "meter {meter} for {sub:?} in February: {got:?}, worked by hand {want}"
        );
    }

    // Replays (with other bodies, as a buggy sender's) change nothing; late events for
    // February, delivered after it was first aggregated, count.
    let mut replays: Vec<UsageEvent> = first.iter().step_by(3).cloned().collect();
    for replay in &mut replays {
        replay.quantity = dec("12345")?;
        replay.timestamp = ny(3, 1, 0, 0)?;
    }
    let late = vec![
        ev(c1, Some(s1), 101, "1", ny(2, 28, 0, 0)?, &[])?,
        ev(c1, Some(s1), 102, "3", ny(2, 28, 0, 0)?, &[])?,
        ev(c1, Some(s1), 103, "41", ny(2, 28, 0, 0)?, &[])?,
        ev(c1, Some(s1), 104, "1", ny(2, 28, 0, 0)?, &[])?,
        ev(
            c1,
            Some(s1),
            105,
            "1",
            ny(2, 28, 0, 0)?,
            &[("ip", "10.0.0.77")],
        )?,
        ev(c1, Some(s1), 107, "200", ny(2, 28, 0, 0)?, &[])?,
        ev(c1, Some(s1), 108, "4", ny(2, 28, 0, 0)?, &[])?,
    ];
    let second: Vec<UsageEvent> = replays.iter().chain(&late).cloned().collect();
    let new = store.append_events(tenant, &second).await.map_err(err)?;
    ensure!(
        new.iter().filter(|n| **n).count() == late.len(),
        "replays stored as new: {new:?}"
    );
    first.extend(second);
    check_aggregates("late and replayed", &store, tenant, &meters, &keys, &first).await?;
    let got = store
        .period_aggregates(tenant, &meters, &keys)
        .await
        .map_err(err)?;
    let i = keys
        .iter()
        .position(|k| k.customer == c1 && k.subscription.is_none() && k.meter == m(102))
        .ok_or("no key")?;
    ensure!(
        got.get(i) == Some(&Ok(dec("1000000001073741828.625")?)),
        "February's sum after late usage: {:?}",
        got.get(i)
    );
    // An empty request is an empty answer.
    let none = store
        .period_aggregates(tenant, &meters, &[])
        .await
        .map_err(err)?;
    ensure!(none.is_empty(), "no keys answered {none:?}");
    Ok(())
}

/// A small deterministic generator (xorshift64*): the suite has no randomness dependency and
/// must give the same cases on every store.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn period_aggregates_of_random_usage_equal_the_aggregator<S: UsageStore>(
    store: S,
) -> Result<(), String> {
    let meters = every_meter();
    let calendar = new_york_calendar()?;
    for seed in [1u64, 7, 42, 1234] {
        let tenant = TenantId::new();
        let mut rng = Xorshift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let customers: Vec<CustomerId> = (0..3).map(|_| CustomerId::new()).collect();
        let subs: Vec<SubscriptionId> = (0..2).map(|_| SubscriptionId::new()).collect();
        // From the anchor on: ingestion's aggregator carries gauge levels from every earlier
        // event, the keys from their history date (the anchor).
        let start = ny(1, 15, 1, 0)?;
        let span = ny(4, 20, 0, 0)?
            .signed_duration_since(start)
            .num_microseconds()
            .ok_or("span")?;
        let mut events: Vec<UsageEvent> = Vec::new();
        for n in 0..400u64 {
            let meter = &meters[rng.below(meters.len() as u64) as usize];
            let quantity = match rng.below(6) {
                0 => Decimal::from(rng.below(1_000_000)),
                1 => Decimal::new(rng.below(100_000) as i64, rng.below(4) as u32),
                2 => Decimal::from(rng.below(10_000_000_000_000_000_000)),
                3 => Decimal::ZERO,
                _ => Decimal::from(rng.below(50)),
            };
            let quantity =
                if meter.aggregation == Aggregation::WeightedSumOfChanges && rng.below(3) == 0 {
                    -quantity
                } else {
                    quantity
                };
            // A few instants repeat, so that ties are broken by id.
            let offset = if rng.below(8) == 0 {
                (rng.below(4) as i64) * (span / 4)
            } else {
                rng.below(span as u64) as i64
            };
            let timestamp = start
                .checked_add_signed(Duration::microseconds(offset))
                .ok_or("bad instant")?;
            let mut properties = BTreeMap::new();
            if rng.below(4) != 0 {
                properties.insert("ip".to_string(), format!("10.0.0.{}", rng.below(6)));
            }
            if rng.below(3) == 0 {
                properties.insert("a.b\"c d'$".to_string(), format!("v{}", rng.below(4)));
            }
            // Every tenth event replays an earlier id (with its own body).
            let id = if n % 10 == 9 {
                rng.below(n) as u128 + 1
            } else {
                n as u128 + 1
            };
            let customer = rng.below(3) as usize;
            let subscription = match rng.below(3) {
                // The third customer's events all name one subscription: a store that groups
                // a window by customer can tell its keys; the others' it reads one by one.
                _ if customer == 2 => Some(subs[0]),
                0 => None,
                i => Some(subs[i as usize - 1]),
            };
            events.push(UsageEvent {
                id: UsageEventId::from_u128(id),
                customer: customers[customer],
                subscription,
                meter: meter.id,
                quantity,
                timestamp,
                properties,
            });
        }
        for batch in events.chunks(97) {
            store.append_events(tenant, batch).await.map_err(err)?;
        }
        let mut who = Vec::new();
        for &c in &customers {
            who.push((c, None));
            who.push((c, Some(subs[0])));
        }
        let periods = [date(1, 15)?, date(2, 15)?, date(3, 15)?, date(4, 15)?];
        let keys = keys_for(calendar, &who, &meters, &periods)?;
        let checks = check_aggregates(
            &format!("seed {seed}"),
            &store,
            tenant,
            &meters,
            &keys,
            &events,
        )
        .await?;
        // A store with a window pass tells some of these keys (the third customer's counts and
        // sums of integers), or the check above checked nothing.
        ensure!(
            !checks.passes || checks.told > 0,
            "seed {seed}: the window pass told no key"
        );
    }
    Ok(())
}

async fn period_aggregates_fail_each_key_alone<S: UsageStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let meters = every_meter();
    let calendar = new_york_calendar()?;
    let (bad, good, huge) = (CustomerId::new(), CustomerId::new(), CustomerId::new());
    let one = |id: u128, customer, meter: u128, quantity: Decimal, when| UsageEvent {
        id: UsageEventId::from_u128(id),
        customer,
        subscription: None,
        meter: MeterId::from_u128(meter),
        quantity,
        timestamp: when,
        properties: BTreeMap::new(),
    };
    // Stored negative quantities (no store validates them): the aggregator's error names the
    // first one in time order, for the key that holds it only.
    let big = Decimal::from_i128_with_scale(i128::from(u64::MAX) << 32, 1);
    let mut events = vec![
        one(1, bad, 102, dec("5")?, ny(2, 20, 0, 0)?),
        one(2, bad, 102, dec("-2")?, ny(2, 22, 0, 0)?),
        one(3, bad, 102, dec("-3")?, ny(2, 21, 0, 0)?),
        one(4, bad, 101, dec("-1")?, ny(2, 21, 0, 0)?),
        one(5, good, 102, dec("5")?, ny(2, 20, 0, 0)?),
        one(6, good, 101, dec("5")?, ny(2, 20, 0, 0)?),
    ];
    // A sum beyond a decimal's range: an overflow, not a wrong figure.
    for n in 0..12 {
        events.push(one(100 + n, huge, 102, big, ny(2, 20, 0, 0)?));
    }
    // Whole quantities whose sum is beyond 64 bits (a database's integer sum refuses it): still
    // the exact sum.
    let large = CustomerId::new();
    for n in 0..12 {
        let quantity = dec("999999999999999999")?;
        events.push(one(200 + n, large, 102, quantity, ny(2, 20, 0, 0)?));
    }
    store.append_events(tenant, &events).await.map_err(err)?;
    let key = |customer, meter: u128| PeriodKey {
        customer,
        subscription: None,
        meter: MeterId::from_u128(meter),
        calendar,
        period_start: NaiveDate::from_ymd_opt(2026, 2, 15).unwrap_or_default(),
        history_from: NaiveDate::from_ymd_opt(2026, 1, 15).unwrap_or_default(),
    };
    let keys = [
        key(bad, 102),
        key(good, 102),
        key(bad, 101),
        key(good, 101),
        key(good, 999),
        key(huge, 102),
        key(large, 102),
    ];
    let got = store
        .period_aggregates(tenant, &meters, &keys)
        .await
        .map_err(err)?;
    let want = vec![
        Err(UsageError::NegativeQuantity {
            event: UsageEventId::from_u128(3),
            quantity: dec("-3")?,
        }),
        Ok(dec("5")?),
        Err(UsageError::NegativeQuantity {
            event: UsageEventId::from_u128(4),
            quantity: dec("-1")?,
        }),
        Ok(dec("1")?),
        Err(UsageError::UnknownMeter {
            event: UsageEventId::from_u128(0),
            meter: MeterId::from_u128(999),
        }),
        Err(UsageError::Core(dotmac_core::CoreError::Overflow {
            operation: "usage sum",
        })),
        Ok(dec("11999999999999999988")?),
    ];
    ensure!(got == want, "got {got:?}, expected {want:?}");
    let per_key = aggregates_per_key(&store, tenant, &meters, &keys)
        .await
        .map_err(err)?;
    ensure!(per_key == want, "per key {per_key:?}, expected {want:?}");
    Ok(())
}
