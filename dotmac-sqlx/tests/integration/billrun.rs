//! The chunk claims of scale-out bill runs on the real billing path (`SqlStore::plan_billing_run`,
//! `Database::claim_chunk`, `SqlStore::bill_claimed_chunk`): a dead worker's chunk is claimed
//! again and its late result refused, and a chunk whose write fails midway writes nothing and
//! stays claimable. SQLite and (with DATABASE_URL) PostgreSQL. Many workers, killed workers and
//! re-runs are in `scaleout.rs`.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::common;
use crate::common::fibre::{customer, day, plan, seed};

use std::collections::{BTreeMap, HashMap};

use chrono::Duration;
use common::{at, backends, new_tenant};
use dotmac_billing::{
    BillRunSummary, BillingError, BillingSettings, InvoiceStore, SubscriptionStore,
};
use dotmac_core::{FixedClock, SubscriptionId, TenantId};
use dotmac_sqlx::{BillRunId, BillWorker, ChunkClaim, SqlError, SqlStore};
use rust_decimal::Decimal;

const LEASE: i64 = 5;
/// Jan (prorated), Feb and Mar.
const PER_SUBSCRIPTION: usize = 3;

/// Bills `claim` as `worker` at `minutes` past 1 March.
async fn bill(
    store: &SqlStore,
    claim: &ChunkClaim,
    minutes: i64,
) -> Result<BillRunSummary, SqlError> {
    let plans = HashMap::from([(plan().id, plan())]);
    let settings = BillingSettings::default();
    let job = BillWorker {
        tenant: claim.tenant,
        run: claim.run,
        as_of: day(3, 1),
        plans: &plans,
        settings: &settings,
        worker: &claim.worker,
        lease: claim.lease,
    };
    let clock = FixedClock::new(at(1, 0) + Duration::minutes(minutes));
    store.bill_claimed_chunk(claim, &job, &clock).await
}

/// Invoices per subscription, and every number, sorted.
async fn issued(
    store: &SqlStore,
    tenant: TenantId,
    count: u128,
) -> (BTreeMap<SubscriptionId, usize>, Vec<u64>) {
    let mut per_subscription = BTreeMap::new();
    let mut numbers = Vec::new();
    for i in 0..count {
        for invoice in store.invoices_of(tenant, customer(i)).await.unwrap() {
            numbers.push(invoice.number.unwrap().0);
            *per_subscription
                .entry(invoice.subscription.unwrap())
                .or_insert(0) += 1;
        }
    }
    numbers.sort_unstable();
    (per_subscription, numbers)
}

#[tokio::test]
async fn a_dead_workers_chunk_is_reclaimed_and_its_late_result_refused() {
    const SUBS: u128 = 10;
    for (name, db) in backends().await {
        let store = SqlStore::new(db.clone());
        let tenant = new_tenant(&db).await;
        seed(&store, tenant, SUBS).await;
        let run = BillRunId::new();
        let chunks = store
            .plan_billing_run(tenant, run, day(3, 1), 3, at(1, 0))
            .await
            .unwrap();
        assert_eq!(chunks, 4, "{name}");
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
        let first_three: Vec<SubscriptionId> = (1..=3).map(SubscriptionId::from_u128).collect();
        assert_eq!(dead.subscriptions, first_three, "{name}");

        // worker-2 skips the leased chunk and does the rest.
        let mut done = Vec::new();
        while let Some(claim) = db
            .claim_chunk(tenant, run, "worker-2", soon, lease)
            .await
            .unwrap()
        {
            bill(&store, &claim, 1).await.unwrap();
            done.push(claim.chunk_no);
        }
        assert_eq!(done, vec![1, 2, 3], "{name}");
        let progress = db.bill_run_progress(tenant, run).await.unwrap();
        assert_eq!((progress.chunks, progress.done), (4, 3), "{name}");
        let (per_subscription, _) = issued(&store, tenant, SUBS).await;
        assert_eq!(per_subscription.len(), 7, "{name}");

        // After the lease, chunk 0 is claimed again.
        let retry = db
            .claim_chunk(tenant, run, "worker-2", after_lease, lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((retry.chunk_no, retry.attempt), (0, 2), "{name}");

        // worker-1 wakes up: its result is refused and writes nothing.
        let late = bill(&store, &dead, LEASE + 1).await;
        assert!(
            matches!(late, Err(SqlError::LeaseLost { chunk_no: 0, .. })),
            "{name}: {late:?}"
        );
        assert_eq!(issued(&store, tenant, SUBS).await.0.len(), 7, "{name}");

        let summary = bill(&store, &retry, LEASE + 1).await.unwrap();
        assert_eq!(summary.invoices, 3 * PER_SUBSCRIPTION, "{name}");
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
                .is_none(),
            "{name}"
        );
        // A completed chunk cannot be completed twice either.
        let twice = bill(&store, &retry, LEASE + 2).await;
        assert!(matches!(twice, Err(SqlError::LeaseLost { .. })), "{name}");

        let (per_subscription, numbers) = issued(&store, tenant, SUBS).await;
        assert_eq!(
            per_subscription.keys().copied().collect::<Vec<_>>(),
            (1..=SUBS)
                .map(SubscriptionId::from_u128)
                .collect::<Vec<_>>(),
            "{name}"
        );
        assert!(
            per_subscription.values().all(|n| *n == PER_SUBSCRIPTION),
            "{name}: {per_subscription:?}"
        );
        let total = SUBS as u64 * PER_SUBSCRIPTION as u64;
        assert_eq!(numbers, (1..=total).collect::<Vec<u64>>(), "{name}");
        assert_eq!(
            db.outbox_events(tenant).await.unwrap().len() as u64,
            total,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_chunk_that_fails_midway_writes_nothing_and_stays_claimable() {
    const SUBS: u128 = 4;
    for (name, db) in backends().await {
        let store = SqlStore::new(db.clone());
        // The same run in a healthy tenant shows which invoice ids the chunk issues (an
        // invoice id is derived from its document key, the same in every tenant).
        let healthy = new_tenant(&db).await;
        seed(&store, healthy, SUBS).await;
        let run = BillRunId::new();
        store
            .plan_billing_run(healthy, run, day(3, 1), 4, at(1, 0))
            .await
            .unwrap();
        let claim = db
            .claim_chunk(healthy, run, "w", at(1, 0), Duration::minutes(LEASE))
            .await
            .unwrap()
            .unwrap();
        bill(&store, &claim, 0).await.unwrap();
        let last = store
            .invoices_of(healthy, customer(SUBS - 1))
            .await
            .unwrap()
            .pop()
            .unwrap();
        // The refusal names the first invoice of the failed insert.
        let first = store.invoices_of(healthy, customer(0)).await.unwrap()[0].id;

        // In the tenant under test, another document already holds the id of the chunk's
        // last invoice: the chunk's insert collides after every other write of the chunk.
        let tenant = new_tenant(&db).await;
        seed(&store, tenant, SUBS).await;
        let mut blocker = common::charges_invoice(
            customer(SUBS - 1),
            day(2, 14),
            Decimal::ONE,
            &[(Decimal::ONE, Decimal::ONE, Decimal::ONE)],
        );
        blocker.id = last.id;
        common::issue(&store, tenant, vec![blocker.clone()])
            .await
            .unwrap();
        let subscriptions_before = store.subscriptions_of(tenant, customer(0)).await.unwrap();
        store
            .plan_billing_run(tenant, run, day(3, 1), 4, at(1, 0))
            .await
            .unwrap();
        let lease = Duration::minutes(LEASE);
        let claim = db
            .claim_chunk(tenant, run, "w", at(1, 0), lease)
            .await
            .unwrap()
            .unwrap();
        let failed = bill(&store, &claim, 0).await;
        match &failed {
            Err(SqlError::Billing(BillingError::AlreadyExists { what, id })) => {
                assert_eq!(*what, "invoice", "{name}");
                assert_eq!(*id, first.to_string(), "{name}");
            }
            other => panic!("{name}: expected a duplicate invoice, got {other:?}"),
        }
        // Nothing of the chunk was written: only the blocker is there, its number is the last
        // one given, no event, the subscriptions unchanged, the chunk pending.
        let (per_subscription, numbers) = issued(&store, tenant, SUBS - 1).await;
        assert!(per_subscription.is_empty(), "{name}: {per_subscription:?}");
        assert!(numbers.is_empty(), "{name}");
        assert_eq!(
            store.invoices_of(tenant, customer(SUBS - 1)).await.unwrap(),
            vec![dotmac_billing::Invoice {
                number: Some(dotmac_billing::DocumentNumber(1)),
                status: dotmac_billing::InvoiceStatus::Open,
                ..blocker
            }],
            "{name}"
        );
        assert_eq!(
            db.last_number(tenant, "billing.invoice").await.unwrap(),
            1,
            "{name}"
        );
        assert!(db.outbox_events(tenant).await.unwrap().is_empty(), "{name}");
        assert_eq!(
            store.subscriptions_of(tenant, customer(0)).await.unwrap(),
            subscriptions_before,
            "{name}"
        );
        assert_eq!(
            db.bill_run_progress(tenant, run).await.unwrap().done,
            0,
            "{name}"
        );

        // The chunk is claimable again once the lease ends (a live lease keeps it).
        assert!(
            db.claim_chunk(tenant, run, "w2", at(1, 0), lease)
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
        let retry = db
            .claim_chunk(tenant, run, "w2", at(1, 1), lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((retry.chunk_no, retry.attempt), (0, 2), "{name}");
    }
}
