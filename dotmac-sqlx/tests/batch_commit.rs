//! `commit_batch` on SQL (set-based statements) against the in-memory store's outcome, on a
//! batch with every edge at once: a stale and an unknown subscription, a key stored before and
//! a key repeated within the batch, a pending charge added by one commit and consumed by a
//! later one, and (second batch) one subscription named twice.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use chrono::NaiveDate;
use common::backends;
use dotmac_billing::{
    BillingCommit, BillingStore, Charge, CommitResult, LineKind, MemoryStore, NewSubscription,
    PendingCharge, PendingChargeId, Plan, Subscription, SubscriptionStatus, bill_due,
};
use dotmac_core::{
    Currency, CustomerId, InvoiceId, Money, PlanId, ProductId, SubscriptionId, TenantId,
};
use dotmac_sqlx::SqlStore;
use rust_decimal::Decimal;

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

fn plan() -> Plan {
    Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "Fibre")
        .charge(Charge::recurring_flat([Money::from_minor(
            1000,
            Currency::USD,
        )]))
        .build(day(1, 1))
        .unwrap()
}

fn charge(customer: CustomerId, id: u128) -> PendingCharge {
    PendingCharge {
        id: PendingChargeId::from_u128(id),
        customer,
        subscription: None,
        kind: LineKind::LateFee,
        text: Some(format!("fee {id}")),
        period: None,
        quantity: Decimal::ONE,
        unit_price: Money::from_minor(250, Currency::USD),
        price: None,
        created_on: day(1, 5),
    }
}

struct Scenario {
    customers: Vec<CustomerId>,
    subs: Vec<Subscription>,
    /// Applied one by one before the batches.
    before: Vec<BillingCommit>,
    batches: Vec<Vec<BillingCommit>>,
}

fn scenario() -> Scenario {
    let plan = plan();
    let customers: Vec<CustomerId> = (1..=5).map(|n| CustomerId::from_u128(100 + n)).collect();
    let subs: Vec<Subscription> = customers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            NewSubscription::new(*c, plan.id, Currency::USD, day(1, 1))
                .id(SubscriptionId::from_u128(i as u128 + 1))
                .create(&plan, Currency::USD)
                .unwrap()
        })
        .collect();
    let fee = charge(customers[0], 1);
    let due = |i: usize, pending: &[PendingCharge]| {
        bill_due(&subs[i], &plan, pending, day(2, 1), &Default::default()).unwrap()
    };
    let out0 = due(0, std::slice::from_ref(&fee));
    let out1 = due(1, &[]);
    let out2 = due(2, &[]);
    let out3 = due(3, &[]);
    let out4 = due(4, &[]);
    let mut moved = subs[1].clone();
    moved.status = SubscriptionStatus::Paused;
    let before = vec![
        // The fee the first commit consumes.
        BillingCommit {
            new_pending: vec![fee.clone()],
            ..BillingCommit::default()
        },
        // Someone else changed subscription 1 since it was read.
        BillingCommit {
            subscription: Some(moved),
            ..BillingCommit::default()
        },
        // Subscription 3's documents were issued before (a re-run).
        BillingCommit {
            invoices: out3.invoices.clone(),
            ..BillingCommit::default()
        },
    ];
    let added = charge(customers[0], 2);
    let mut repeated = out0.invoices.clone();
    for invoice in &mut repeated {
        invoice.id = InvoiceId::new();
    }
    let unknown = {
        let mut s = subs[4].clone();
        s.id = SubscriptionId::from_u128(99);
        s
    };
    let first = vec![
        BillingCommit {
            subscription: Some(out0.subscription.clone()),
            invoices: out0.invoices.clone(),
            consumed_pending: out0.consumed.clone(),
            new_pending: vec![added.clone()],
        },
        // Stale: refused, writes nothing (not even its pending charge).
        BillingCommit {
            subscription: Some(out1.subscription.clone()),
            invoices: out1.invoices.clone(),
            consumed_pending: Vec::new(),
            new_pending: vec![charge(customers[1], 3)],
        },
        // The same keys as the first commit's documents: duplicates.
        BillingCommit {
            invoices: repeated,
            ..BillingCommit::default()
        },
        // Documents stored before: duplicates; the subscription still moves on.
        BillingCommit {
            subscription: Some(out3.subscription.clone()),
            invoices: out3.invoices.clone(),
            ..BillingCommit::default()
        },
        // Unknown subscription.
        BillingCommit {
            subscription: Some(unknown),
            invoices: out4.invoices.clone(),
            ..BillingCommit::default()
        },
        // Consumes the charge the first commit added; adds one of its own (twice).
        BillingCommit {
            consumed_pending: vec![added.id],
            new_pending: vec![charge(customers[2], 4), charge(customers[2], 4)],
            ..BillingCommit::default()
        },
        BillingCommit {
            subscription: Some(out2.subscription.clone()),
            invoices: out2.invoices.clone(),
            ..BillingCommit::default()
        },
    ];
    // Subscription 4 twice: the second commit's revision is stale after the first.
    let second = vec![
        BillingCommit {
            subscription: Some(out4.subscription.clone()),
            invoices: out4.invoices.clone(),
            ..BillingCommit::default()
        },
        BillingCommit {
            subscription: Some(out4.subscription.clone()),
            invoices: out4.invoices.clone(),
            ..BillingCommit::default()
        },
    ];
    Scenario {
        customers,
        subs,
        before,
        batches: vec![first, second],
    }
}

/// Everything observable after the scenario: the batches' results and the stored state.
async fn run<S: BillingStore>(store: &S, s: &Scenario) -> Vec<String> {
    // A fresh tenant: the PostgreSQL database outlives test runs.
    let tenant = TenantId::new();
    for sub in &s.subs {
        store
            .insert_subscription(tenant, sub.clone())
            .await
            .unwrap();
    }
    for commit in &s.before {
        store.commit(tenant, commit.clone()).await.unwrap();
    }
    let mut seen = Vec::new();
    for batch in &s.batches {
        let results = store.commit_batch(tenant, batch.clone()).await.unwrap();
        assert_eq!(results.len(), batch.len());
        let results: Vec<Result<&CommitResult, String>> = results
            .iter()
            .map(|r| r.as_ref().map_err(|e| format!("{e:?}")))
            .collect();
        seen.push(format!("{results:?}"));
    }
    for c in &s.customers {
        seen.push(format!(
            "{:?}",
            store.invoices_of(tenant, *c).await.unwrap()
        ));
        seen.push(format!(
            "{:?}",
            store.pending_charges(tenant, *c).await.unwrap()
        ));
    }
    for sub in &s.subs {
        seen.push(format!(
            "{:?}",
            store.subscription(tenant, sub.id).await.unwrap()
        ));
    }
    seen
}

#[tokio::test]
async fn set_based_commit_batch_matches_the_memory_store() {
    let s = scenario();
    let expected = run(&MemoryStore::default(), &s).await;
    // The scenario does hit every edge (checked on the reference).
    assert!(expected[0].contains("ConcurrentUpdate"), "{}", expected[0]);
    assert!(
        expected[0].contains("UnknownSubscription"),
        "{}",
        expected[0]
    );
    assert!(expected[0].contains("duplicates: 2"), "{}", expected[0]);
    assert!(expected[1].contains("ConcurrentUpdate"), "{}", expected[1]);
    for (name, db) in backends().await {
        let store = SqlStore::new(db);
        let got = run(&store, &s).await;
        for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "{name}: observation {i}");
        }
        assert_eq!(got.len(), expected.len(), "{name}");
    }
}
