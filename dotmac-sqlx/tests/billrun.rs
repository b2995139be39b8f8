//! Scale-out bill runs: chunk claiming, crash-resume and all-or-nothing chunk writes, on
//! SQLite and (with DATABASE_URL) PostgreSQL.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use common::{at, backends, new_tenant};
use dotmac_core::{Currency, CustomerId, EventId, InvoiceId, Money, SubscriptionId, TenantId};
use dotmac_sqlx::{
    BillRunId, ChunkClaim, Database, InvoiceLineRecord, InvoiceRecord, OutboxEvent, SqlError,
};
use rust_decimal::Decimal;

const LEASE: i64 = 5;

fn subscriptions(count: u128) -> Vec<SubscriptionId> {
    (1..=count).map(SubscriptionId::from_u128).collect()
}

/// A stand-in for the billing domain: a deterministic invoice per subscription.
fn bill(claim: &ChunkClaim) -> (Vec<InvoiceRecord>, Vec<OutboxEvent>) {
    let mut invoices = Vec::new();
    let mut events = Vec::new();
    for sub in &claim.subscriptions {
        let seed = i64::try_from(sub.as_uuid().as_u128() % 997).unwrap();
        let plan = Decimal::new(2999 + seed * 100, 2);
        let usage = Decimal::new(seed * 7, 3);
        let id = InvoiceId::new();
        invoices.push(InvoiceRecord {
            id,
            customer: CustomerId::from_uuid(sub.as_uuid()),
            subscription: Some(*sub),
            issued_on: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            total: Money::new(plan + usage, Currency::EUR),
            status: "open".into(),
            lines: vec![
                InvoiceLineRecord {
                    description: "plan".into(),
                    quantity: Decimal::ONE,
                    unit_price: plan,
                    amount: plan,
                },
                InvoiceLineRecord {
                    description: "overage".into(),
                    quantity: Decimal::new(seed, 0),
                    unit_price: Decimal::new(7, 3),
                    amount: usage,
                },
            ],
            body: serde_json::json!({ "subscription": sub.to_string() }),
        });
        events.push(OutboxEvent {
            id: EventId::new(),
            tenant: claim.tenant,
            event_type: "billing.invoice_issued".into(),
            occurred_at: at(1, 0),
            payload: serde_json::json!({ "invoice": id.to_string() }),
        });
    }
    (invoices, events)
}

async fn run_workers(db: &Database, tenant: TenantId, run: BillRunId, workers: usize) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("worker-{w}");
            while let Some(claim) = db
                .claim_chunk(tenant, run, &name, at(1, 0), Duration::minutes(LEASE))
                .await
                .unwrap()
            {
                let (invoices, events) = bill(&claim);
                db.complete_chunk(&claim, "INV", &invoices, &events, at(1, 0))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// What a run produced, independent of which worker numbered what: per subscription, the
/// total and lines; and the set of numbers.
async fn outcome(
    db: &Database,
    tenant: TenantId,
) -> (
    BTreeMap<SubscriptionId, (Money, Vec<InvoiceLineRecord>)>,
    Vec<i64>,
) {
    let invoices = db.invoices(tenant).await.unwrap();
    let mut numbers: Vec<i64> = invoices.iter().map(|i| i.number).collect();
    numbers.sort_unstable();
    let by_sub = invoices
        .into_iter()
        .map(|i| {
            (
                i.record.subscription.unwrap(),
                (i.record.total, i.record.lines),
            )
        })
        .collect();
    (by_sub, numbers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_produce_what_one_worker_produces() {
    for (name, db) in backends().await {
        let subs = subscriptions(203);
        let mut outcomes = Vec::new();
        for workers in [1, 4] {
            let tenant = new_tenant(&db).await;
            let run = BillRunId::new();
            let chunks = db
                .plan_bill_run(
                    tenant,
                    run,
                    NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
                    &subs,
                    20,
                    at(1, 0),
                )
                .await
                .unwrap();
            assert_eq!(chunks, 11, "{name}");
            run_workers(&db, tenant, run, workers).await;
            let progress = db.bill_run_progress(tenant, run).await.unwrap();
            assert!(progress.is_complete(), "{name}: {progress:?}");
            assert_eq!(db.outbox_events(tenant).await.unwrap().len(), 203, "{name}");
            outcomes.push(outcome(&db, tenant).await);
        }
        let (single, single_numbers) = &outcomes[0];
        let (parallel, parallel_numbers) = &outcomes[1];
        assert_eq!(single.len(), 203, "{name}: every subscription billed once");
        assert_eq!(single, parallel, "{name}");
        let gapless: Vec<i64> = (1..=203).collect();
        assert_eq!(single_numbers, &gapless, "{name}");
        assert_eq!(parallel_numbers, &gapless, "{name}");
    }
}

#[tokio::test]
async fn a_dead_workers_chunk_is_reclaimed_and_its_late_result_refused() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let run = BillRunId::new();
        let subs = subscriptions(10);
        let as_of = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        db.plan_bill_run(tenant, run, as_of, &subs, 3, at(1, 0))
            .await
            .unwrap();
        let lease = Duration::minutes(LEASE);
        let t0 = at(1, 0);
        let (soon, after_lease) = (t0 + Duration::minutes(1), t0 + Duration::minutes(LEASE + 1));

        // worker-1 claims chunk 0 and dies before writing.
        let dead = db
            .claim_chunk(tenant, run, "worker-1", t0, lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((dead.chunk_no, dead.attempt), (0, 1), "{name}");
        assert_eq!(dead.subscriptions, subs[..3].to_vec(), "{name}");

        // worker-2 skips the leased chunk and does the rest.
        let mut done = Vec::new();
        while let Some(claim) = db
            .claim_chunk(tenant, run, "worker-2", soon, lease)
            .await
            .unwrap()
        {
            let (invoices, events) = bill(&claim);
            db.complete_chunk(&claim, "INV", &invoices, &events, soon)
                .await
                .unwrap();
            done.push(claim.chunk_no);
        }
        assert_eq!(done, vec![1, 2, 3], "{name}");
        let progress = db.bill_run_progress(tenant, run).await.unwrap();
        assert_eq!((progress.chunks, progress.done), (4, 3), "{name}");
        assert_eq!(db.invoices(tenant).await.unwrap().len(), 7, "{name}");

        // After the lease, chunk 0 is claimed again.
        let retry = db
            .claim_chunk(tenant, run, "worker-2", after_lease, lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((retry.chunk_no, retry.attempt), (0, 2), "{name}");

        // worker-1 wakes up: its result is refused and writes nothing.
        let (invoices, events) = bill(&dead);
        let late = db
            .complete_chunk(&dead, "INV", &invoices, &events, after_lease)
            .await;
        assert!(
            matches!(late, Err(SqlError::LeaseLost { chunk_no: 0, .. })),
            "{name}: {late:?}"
        );
        assert_eq!(db.invoices(tenant).await.unwrap().len(), 7, "{name}");

        let (invoices, events) = bill(&retry);
        db.complete_chunk(&retry, "INV", &invoices, &events, after_lease)
            .await
            .unwrap();
        assert!(
            db.bill_run_progress(tenant, run)
                .await
                .unwrap()
                .is_complete(),
            "{name}"
        );
        assert!(
            db.claim_chunk(tenant, run, "worker-3", at(2, 0), lease)
                .await
                .unwrap()
                .is_none()
        );
        // A completed chunk cannot be completed twice either.
        let twice = db
            .complete_chunk(&retry, "INV", &invoices, &events, at(1, 3))
            .await;
        assert!(matches!(twice, Err(SqlError::LeaseLost { .. })), "{name}");

        let (by_sub, numbers) = outcome(&db, tenant).await;
        assert_eq!(by_sub.keys().copied().collect::<Vec<_>>(), subs, "{name}");
        assert_eq!(numbers, (1..=10).collect::<Vec<i64>>(), "{name}");
        assert_eq!(db.outbox_events(tenant).await.unwrap().len(), 10, "{name}");
    }
}

#[tokio::test]
async fn a_chunk_that_fails_midway_writes_nothing_and_stays_claimable() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let run = BillRunId::new();
        let subs = subscriptions(4);
        let as_of = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        db.plan_bill_run(tenant, run, as_of, &subs, 4, at(1, 0))
            .await
            .unwrap();
        let lease = Duration::minutes(LEASE);
        let claim = db
            .claim_chunk(tenant, run, "w", at(1, 0), lease)
            .await
            .unwrap()
            .unwrap();
        let (mut invoices, events) = bill(&claim);
        // The fourth insert collides with the first: the failure comes after three rows.
        invoices[3].id = invoices[0].id;
        let failed = db
            .complete_chunk(&claim, "INV", &invoices, &events, at(1, 0))
            .await;
        assert!(
            matches!(failed, Err(SqlError::Duplicate { .. })),
            "{name}: {failed:?}"
        );
        assert!(db.invoices(tenant).await.unwrap().is_empty(), "{name}");
        assert!(db.outbox_events(tenant).await.unwrap().is_empty(), "{name}");
        assert_eq!(db.last_number(tenant, "INV").await.unwrap(), 0, "{name}");
        assert_eq!(
            db.bill_run_progress(tenant, run).await.unwrap().done,
            0,
            "{name}"
        );

        let retry = db
            .claim_chunk(tenant, run, "w2", at(1, 1), lease)
            .await
            .unwrap()
            .unwrap();
        let (invoices, events) = bill(&retry);
        assert_eq!(
            db.complete_chunk(&retry, "INV", &invoices, &events, at(1, 1))
                .await
                .unwrap(),
            Some(1),
            "{name}"
        );
        assert_eq!(db.invoices(tenant).await.unwrap().len(), 4, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_its_write_leaves_all_or_nothing() {
    // Not on `sqlite::memory:`: a task aborted mid-query can make the driver close its
    // connection, and an in-memory database lives only as long as its one connection (seen as
    // "no such table" afterwards; the file database covers SQLite).
    for (name, db) in backends()
        .await
        .into_iter()
        .filter(|(name, _)| *name != "sqlite-memory")
    {
        let tenant = new_tenant(&db).await;
        let run = BillRunId::new();
        let subs = subscriptions(400);
        let as_of = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        db.plan_bill_run(tenant, run, as_of, &subs, 100, at(1, 0))
            .await
            .unwrap();
        let lease = Duration::minutes(LEASE);
        // Kill each chunk's first worker after a growing delay, so that kills land before,
        // during and after the write transaction.
        for (chunk, delay_us) in [0_u64, 300, 1500, 6000].into_iter().enumerate() {
            let claim = db
                .claim_chunk(tenant, run, "doomed", at(1, 0), lease)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(claim.chunk_no, i32::try_from(chunk).unwrap());
            let worker = {
                let db = db.clone();
                tokio::spawn(async move {
                    let (invoices, events) = bill(&claim);
                    db.complete_chunk(&claim, "INV", &invoices, &events, at(1, 0))
                        .await
                })
            };
            tokio::time::sleep(std::time::Duration::from_micros(delay_us)).await;
            worker.abort();
            let _ = worker.await;
            // Give the driver a moment to roll back the dropped transaction.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let invoices = db.invoices(tenant).await.unwrap();
            let written = invoices.iter().filter(|i| {
                i.record
                    .subscription
                    .is_some_and(|s| subs[chunk * 100..(chunk + 1) * 100].contains(&s))
            });
            let written = written.count();
            assert!(
                written == 0 || written == 100,
                "{name}: chunk {chunk} half-written ({written})"
            );
            // The chunk is done exactly when its invoices are there.
            let done_before = invoices.len() / 100 - usize::from(written == 100);
            let progress = db.bill_run_progress(tenant, run).await.unwrap();
            assert_eq!(
                progress.done as usize,
                done_before + usize::from(written == 100),
                "{name}"
            );
        }
        // Whatever was killed is reclaimed after the lease and finished by a healthy worker.
        let mut now = at(1, 1);
        while let Some(claim) = db
            .claim_chunk(tenant, run, "healthy", now, lease)
            .await
            .unwrap()
        {
            let (invoices, events) = bill(&claim);
            db.complete_chunk(&claim, "INV", &invoices, &events, now)
                .await
                .unwrap();
            now += Duration::seconds(1);
        }
        assert!(
            db.bill_run_progress(tenant, run)
                .await
                .unwrap()
                .is_complete(),
            "{name}"
        );
        let (by_sub, numbers) = outcome(&db, tenant).await;
        assert_eq!(by_sub.len(), 400, "{name}");
        assert_eq!(numbers, (1..=400).collect::<Vec<i64>>(), "{name}");
        assert_eq!(db.outbox_events(tenant).await.unwrap().len(), 400, "{name}");
    }
}

/// A lease that ends past the last representable instant is refused, not a panic in `now +
/// lease`, and leaves the chunk claimable.
#[tokio::test]
async fn a_chunk_lease_beyond_the_end_of_time_is_an_error_not_a_panic() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let run = BillRunId::new();
        let as_of = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        db.plan_bill_run(tenant, run, as_of, &subscriptions(2), 3, at(1, 0))
            .await
            .unwrap();
        let refused = db
            .claim_chunk(tenant, run, "worker-1", at(1, 0), Duration::MAX)
            .await;
        assert!(
            matches!(
                refused,
                Err(SqlError::InvalidOption {
                    option: "lease",
                    ..
                })
            ),
            "{name}: {refused:?}"
        );
        let claim = db
            .claim_chunk(tenant, run, "worker-2", at(1, 0), Duration::minutes(LEASE))
            .await
            .unwrap();
        assert!(claim.is_some(), "{name}: the refused claim took the chunk");
    }
}
