//! Scale-out bill runs of the real billing domain (`SqlStore::run_bill_worker`): several
//! workers give the result of one, a killed worker leaves nothing half-written and its chunk
//! is redone, a re-run issues nothing. SQLite always, PostgreSQL with DATABASE_URL.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::common;
use crate::common::fibre::{day, plan};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use common::{at, backends, new_tenant};
use dotmac_billing::{
    BillingCommit, BillingError, BillingFailure, BillingSettings, CatalogStore, CustomerAccount,
    FirstPeriod, Invoice, InvoiceStore, LineKind, NewSubscription, PendingCharge, PendingChargeId,
    Plan, Product, SubscriptionStore, TaxRate, TaxRateId,
};
use dotmac_core::outbox::{Aggregate, OutboxStore};
use dotmac_core::{
    CoreError, Currency, CustomerId, FixedClock, Money, PlanId, SubscriptionId, TenantId,
};
use dotmac_sqlx::{BillRunId, BillWorker, Database, SqlError, SqlStore, WorkerReport};
use rust_decimal::Decimal;

const LEASE_MINUTES: i64 = 5;

fn as_of() -> NaiveDate {
    day(3, 1)
}

fn settings() -> BillingSettings {
    BillingSettings::default().with_taxes(vec![TaxRate::exclusive(
        TaxRateId::from_u128(1),
        "VAT",
        Decimal::new(75, 1),
    )])
}

fn customer(i: u128) -> CustomerId {
    CustomerId::from_u128(10_000 + i / 2)
}

/// `count` subscriptions (two per customer, started on different January days, prorated
/// first period) and a late fee for every fifth customer.
async fn seed(store: &SqlStore, tenant: TenantId, count: u128) {
    let plan = plan();
    store
        .put_product(
            tenant,
            Product {
                id: plan.product,
                name: "Broadband".into(),
            },
        )
        .await
        .unwrap();
    store
        .put_plan(tenant, plan.clone(), Vec::new())
        .await
        .unwrap();
    for i in 0..count {
        if i % 2 == 0 {
            store
                .put_account(tenant, CustomerAccount::new(customer(i), Currency::USD))
                .await
                .unwrap();
        }
        if i % 10 == 0 {
            let fee = PendingCharge {
                id: PendingChargeId::from_u128(50_000 + i),
                customer: customer(i),
                subscription: None,
                kind: LineKind::LateFee,
                text: Some("Late fee".into()),
                period: None,
                quantity: Decimal::ONE,
                unit_price: Money::from_minor(500, Currency::USD),
                price: None,
                created_on: day(1, 20),
            };
            assert!(
                store
                    .add_pending_charge(tenant, fee, Vec::new())
                    .await
                    .unwrap()
            );
        }
        let start = day(1, 1 + u32::try_from(i % 20).unwrap());
        let sub = NewSubscription::new(customer(i), plan.id, Currency::USD, start)
            .id(SubscriptionId::from_u128(i + 1))
            .anchor(day(1, 1))
            .first_period(FirstPeriod::Prorate)
            .create(&plan, Currency::USD)
            .unwrap();
        store
            .insert_subscription(tenant, sub, Vec::new())
            .await
            .unwrap();
    }
}

fn plans() -> Arc<HashMap<PlanId, Plan>> {
    let plan = plan();
    Arc::new(HashMap::from([(plan.id, plan)]))
}

fn clock(minutes: i64) -> FixedClock {
    FixedClock::new(at(2, 0) + Duration::minutes(minutes))
}

async fn run_workers(
    store: &SqlStore,
    tenant: TenantId,
    run: BillRunId,
    workers: usize,
    minutes: i64,
) -> WorkerReport {
    let plans = plans();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (store, plans) = (store.clone(), plans.clone());
        tasks.push(tokio::spawn(async move {
            let settings = settings();
            let name = format!("worker-{w}");
            let job = BillWorker {
                tenant,
                run,
                as_of: as_of(),
                plans: &plans,
                settings: &settings,
                worker: &name,
                lease: Duration::minutes(LEASE_MINUTES).into(),
            };
            store.run_bill_worker(&job, &clock(minutes)).await.unwrap()
        }));
    }
    let mut total = WorkerReport::default();
    for task in tasks {
        let r = task.await.unwrap();
        total.chunks += r.chunks;
        total.subscriptions += r.subscriptions;
        total.invoices += r.invoices;
        total.duplicates += r.duplicates;
        total.conflicts += r.conflicts;
        total.failures.extend(r.failures);
    }
    total
}

/// Every invoice of the tenant by document key, without its number; and the sorted numbers.
async fn issued(
    store: &SqlStore,
    tenant: TenantId,
    count: u128,
) -> (BTreeMap<String, Invoice>, Vec<u64>) {
    let mut by_key = BTreeMap::new();
    let mut numbers = Vec::new();
    for i in (0..count).step_by(2) {
        for mut invoice in store.invoices_of(tenant, customer(i)).await.unwrap() {
            numbers.push(invoice.number.unwrap().0);
            invoice.number = None;
            by_key.insert(format!("{:?}", invoice.key), invoice);
        }
    }
    numbers.sort_unstable();
    (by_key, numbers)
}

async fn outbox_count(db: &Database, tenant: TenantId) -> usize {
    db.outbox_events(tenant).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_issue_what_one_worker_issues_and_a_rerun_issues_nothing() {
    const SUBS: u128 = 90;
    for (name, db) in backends().await {
        let store = SqlStore::new(db.clone());
        let mut outcomes = Vec::new();
        for workers in [1, 4] {
            let tenant = new_tenant(&db).await;
            seed(&store, tenant, SUBS).await;
            let run = BillRunId::new();
            let chunks = store
                .plan_billing_run(tenant, run, as_of(), 8, at(2, 0))
                .await
                .unwrap();
            assert_eq!(chunks, 12, "{name}");
            let report = run_workers(&store, tenant, run, workers, 0).await;
            assert_eq!(report.chunks, 12, "{name}");
            assert_eq!(report.subscriptions, 90, "{name}");
            // January (prorated, or whole for the first-day starts), February, March.
            assert_eq!(report.invoices, 270, "{name}: {report:?}");
            assert_eq!((report.conflicts, report.duplicates), (0, 0), "{name}");
            assert!(
                db.bill_run_progress(tenant, run)
                    .await
                    .unwrap()
                    .is_complete(),
                "{name}"
            );
            assert_eq!(outbox_count(&db, tenant).await, 270, "{name}");
            // Each written as the service's bill run writes it: about the invoice's customer,
            // so that the dispatcher delivers a customer's events in order.
            let messages = store.outbox_messages(tenant).await.unwrap();
            let mut customers = std::collections::BTreeSet::new();
            for message in &messages {
                assert_eq!(message.event_type, "billing.invoice_issued", "{name}");
                let customer = message.payload["customer"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(
                    message.aggregate,
                    Aggregate::customer(CustomerId::from_uuid(customer)),
                    "{name}"
                );
                customers.insert(customer);
            }
            assert!(customers.len() > 1, "{name}");
            let (by_key, numbers) = issued(&store, tenant, SUBS).await;
            assert_eq!(numbers, (1..=270).collect::<Vec<u64>>(), "{name}: gapless");
            // Every late fee went on exactly one invoice and is no longer pending.
            let fees = by_key
                .values()
                .flat_map(|i| &i.lines)
                .filter(|l| l.kind == LineKind::LateFee)
                .count();
            assert_eq!(fees, 9, "{name}");
            for i in (0..SUBS).step_by(10) {
                assert!(
                    store
                        .pending_charges(tenant, customer(i))
                        .await
                        .unwrap()
                        .is_empty(),
                    "{name}"
                );
            }

            // A second run on the same date issues nothing and changes nothing.
            let again = BillRunId::new();
            store
                .plan_billing_run(tenant, again, as_of(), 8, at(2, 1))
                .await
                .unwrap();
            let rerun = run_workers(&store, tenant, again, workers, 1).await;
            assert_eq!((rerun.chunks, rerun.invoices), (12, 0), "{name}: {rerun:?}");
            assert_eq!(issued(&store, tenant, SUBS).await.0, by_key, "{name}");
            assert_eq!(outbox_count(&db, tenant).await, 270, "{name}");
            outcomes.push(by_key);
        }
        assert_eq!(outcomes[0], outcomes[1], "{name}: 4 workers differ from 1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_leaves_nothing_and_its_chunk_is_redone() {
    const SUBS: u128 = 160;
    // Not on `sqlite::memory:`: a task aborted mid-query can make the driver close its
    // connection, and an in-memory database lives only as long as its one connection (the
    // file database covers SQLite).
    for (name, db) in backends()
        .await
        .into_iter()
        .filter(|(name, _)| *name != "sqlite-memory")
    {
        let store = SqlStore::new(db.clone());
        let tenant = new_tenant(&db).await;
        seed(&store, tenant, SUBS).await;
        let run = BillRunId::new();
        store
            .plan_billing_run(tenant, run, as_of(), 40, at(2, 0))
            .await
            .unwrap();
        let lease = Duration::minutes(LEASE_MINUTES);
        let plans = plans();
        let settings = settings();
        // Each chunk's first worker is killed after a growing delay, so that kills land
        // before, during and after its one transaction.
        let mut last_claim = None;
        for (chunk, delay_us) in [0_u64, 400, 2000, 8000].into_iter().enumerate() {
            let claim = db
                .claim_chunk(tenant, run, "doomed", at(2, 0), lease)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(claim.chunk_no, i32::try_from(chunk).unwrap(), "{name}");
            let task = {
                let (store, plans, settings, claim) = (
                    store.clone(),
                    plans.clone(),
                    settings.clone(),
                    claim.clone(),
                );
                tokio::spawn(async move {
                    let job = BillWorker {
                        tenant,
                        run,
                        as_of: as_of(),
                        plans: &plans,
                        settings: &settings,
                        worker: "doomed",
                        lease: lease.into(),
                    };
                    store.bill_claimed_chunk(&claim, &job, &clock(0)).await
                })
            };
            tokio::time::sleep(std::time::Duration::from_micros(delay_us)).await;
            task.abort();
            let _ = task.await;
            // Give the driver a moment to roll back the dropped transaction.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let (by_key, numbers) = issued(&store, tenant, SUBS).await;
            let chunk_subs: Vec<SubscriptionId> = claim.subscriptions.clone();
            let written = by_key
                .values()
                .filter(|i| i.subscription.is_some_and(|s| chunk_subs.contains(&s)))
                .count();
            assert!(
                written == 0 || written == 3 * chunk_subs.len(),
                "{name}: chunk {chunk} half-written ({written} invoices)"
            );
            let done = db.bill_run_progress(tenant, run).await.unwrap().done as usize;
            assert_eq!(
                by_key.len(),
                done * 120,
                "{name}: done chunks and invoices agree"
            );
            assert_eq!(
                numbers,
                (1..=numbers.len() as u64).collect::<Vec<_>>(),
                "{name}"
            );
            last_claim = Some(claim);
        }
        // After the lease a healthy worker redoes whatever was killed.
        let report = run_workers(&store, tenant, run, 1, LEASE_MINUTES + 1).await;
        assert!(
            db.bill_run_progress(tenant, run)
                .await
                .unwrap()
                .is_complete(),
            "{name}"
        );
        let (by_key, numbers) = issued(&store, tenant, SUBS).await;
        assert_eq!(by_key.len(), 480, "{name}: {report:?}");
        assert_eq!(numbers, (1..=480).collect::<Vec<u64>>(), "{name}");
        assert_eq!(outbox_count(&db, tenant).await, 480, "{name}");
        // The killed worker, back late, is refused and writes nothing.
        let late = last_claim.unwrap();
        let job = BillWorker {
            tenant,
            run,
            as_of: as_of(),
            plans: &plans,
            settings: &settings,
            worker: "doomed",
            lease: lease.into(),
        };
        let refused = store.bill_claimed_chunk(&late, &job, &clock(30)).await;
        assert!(
            matches!(refused, Err(SqlError::LeaseLost { .. })),
            "{name}: {refused:?}"
        );
        assert_eq!(issued(&store, tenant, SUBS).await.0.len(), 480, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_whose_billing_fails_never_sticks_the_run_and_is_billed_after_the_fix() {
    const SUBS: u128 = 20;
    for (name, db) in backends().await {
        let store = SqlStore::new(db.clone());
        let tenant = new_tenant(&db).await;
        seed(&store, tenant, SUBS).await;
        // The issue-9 reproduction: a pending charge of 3 × Decimal::MAX / 2 for the customer
        // of subscriptions 5 and 6 (in the first chunk, among healthy customers).
        let bad = customer(4);
        let huge = PendingCharge {
            id: PendingChargeId::from_u128(60_000),
            customer: bad,
            subscription: None,
            kind: LineKind::LateFee,
            text: Some("Late fee".into()),
            period: None,
            quantity: Decimal::from(3),
            unit_price: Money::new(Decimal::MAX / Decimal::TWO, Currency::USD),
            price: None,
            created_on: day(1, 20),
        };
        assert!(
            store
                .add_pending_charge(tenant, huge.clone(), Vec::new())
                .await
                .unwrap()
        );
        let bad_before = store.subscriptions_of(tenant, bad).await.unwrap();
        let expected = vec![BillingFailure {
            customer: bad,
            subscription: Some(SubscriptionId::from_u128(5)),
            error: BillingError::Core(CoreError::Overflow {
                operation: "multiply",
            }),
        }];

        // Twice: the run completes each time, billing the others and reporting the failure.
        let mut outbox = 0;
        for attempt in 0..2 {
            let run = BillRunId::new();
            let chunks = store
                .plan_billing_run(tenant, run, as_of(), 8, at(2, attempt))
                .await
                .unwrap();
            assert_eq!(chunks, 3, "{name}");
            let report = run_workers(&store, tenant, run, 2, i64::from(attempt)).await;
            assert!(
                db.bill_run_progress(tenant, run)
                    .await
                    .unwrap()
                    .is_complete(),
                "{name}: the run stuck at the failing chunk: {report:?}"
            );
            assert_eq!(report.chunks, 3, "{name}");
            let want = if attempt == 0 { 54 } else { 0 };
            assert_eq!(report.invoices, want, "{name}: {report:?}");
            assert_eq!(report.failures, expected, "{name}");
            // Nothing of the failing customer was written; its failure is in the outbox.
            assert!(
                store.invoices_of(tenant, bad).await.unwrap().is_empty(),
                "{name}"
            );
            assert_eq!(
                store.subscriptions_of(tenant, bad).await.unwrap(),
                bad_before,
                "{name}"
            );
            assert_eq!(
                store.pending_charges(tenant, bad).await.unwrap(),
                vec![huge.clone()],
                "{name}"
            );
            let events = db.outbox_events(tenant).await.unwrap();
            outbox += want + 1;
            assert_eq!(events.len(), outbox, "{name}");
            let failed: Vec<_> = events
                .iter()
                .filter(|m| m.event.event_type == "billing.bill_run_item_failed")
                .map(|m| &m.event.payload)
                .collect();
            assert_eq!(failed.len(), attempt as usize + 1, "{name}");
            let last = failed.last().unwrap();
            assert_eq!(last["customer"], bad.to_string(), "{name}: {last}");
            assert_eq!(last["subscription"], "00000000-0000-0000-0000-000000000005");
            assert_eq!(last["error_kind"], "core.overflow", "{name}: {last}");
        }

        // Fix the data (the bad charge taken off) and run again: the skipped customer is
        // billed, nobody twice, numbers still gapless.
        store
            .commit(
                tenant,
                BillingCommit {
                    consumed_pending: vec![huge.id],
                    ..BillingCommit::default()
                },
            )
            .await
            .unwrap();
        let run = BillRunId::new();
        store
            .plan_billing_run(tenant, run, as_of(), 8, at(2, 3))
            .await
            .unwrap();
        let report = run_workers(&store, tenant, run, 2, 3).await;
        assert_eq!(report.invoices, 6, "{name}: {report:?}");
        assert!(report.failures.is_empty(), "{name}: {report:?}");
        assert_eq!(
            store.invoices_of(tenant, bad).await.unwrap().len(),
            6,
            "{name}"
        );
        let (by_key, numbers) = issued(&store, tenant, SUBS).await;
        assert_eq!(by_key.len(), 60, "{name}");
        assert_eq!(numbers, (1..=60).collect::<Vec<u64>>(), "{name}");
    }
}
