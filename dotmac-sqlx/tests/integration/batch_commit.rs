//! `commit_batch` on SQL (set-based statements) against the in-memory store's outcome, on a
//! batch with every edge at once: a stale and an unknown subscription, a key stored before and
//! a key repeated within the batch, a pending charge added by one commit and consumed by a
//! later one, and (second batch) one subscription named twice.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::common;

use chrono::NaiveDate;
use common::backends;
use dotmac_billing::{
    BillingCommit, BillingStore, Charge, CommitResult, InvoiceStore, LineKind, MemoryStore,
    NewSubscription, PendingCharge, PendingChargeId, Plan, Subscription, SubscriptionStatus,
    SubscriptionStore, bill_due,
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
    let moved = paused(&subs[1]);
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
            ..BillingCommit::default()
        },
        // Stale: refused, writes nothing (not even its pending charge).
        BillingCommit {
            subscription: Some(out1.subscription.clone()),
            invoices: out1.invoices.clone(),
            consumed_pending: Vec::new(),
            new_pending: vec![charge(customers[1], 3)],
            ..BillingCommit::default()
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

/// Pending charges raced for within a batch and across batches: a charge consumed earlier in
/// the batch, before the batch, never added, or added and consumed by the same commit is
/// refused (`PendingChargeTaken`); a stale commit's charge stays for a later commit (the
/// revision check comes first); a charge added by an earlier commit may be consumed; and
/// (second batch) the same through the commit-by-commit path.
fn charge_scenario() -> Scenario {
    let plan = plan();
    let customers: Vec<CustomerId> = (1..=4).map(|n| CustomerId::from_u128(200 + n)).collect();
    // Subscriptions 11..14, one per customer, and 15, the first customer's second.
    let owners = [0, 1, 2, 3, 0];
    let subs: Vec<Subscription> = owners
        .iter()
        .enumerate()
        .map(|(i, c)| {
            NewSubscription::new(customers[*c], plan.id, Currency::USD, day(1, 1))
                .id(SubscriptionId::from_u128(i as u128 + 11))
                .create(&plan, Currency::USD)
                .unwrap()
        })
        .collect();
    let a = charge(customers[0], 21);
    let b = charge(customers[1], 22);
    let c = charge(customers[2], 23);
    let g = charge(customers[2], 27);
    let due = |i: usize, pending: &[PendingCharge]| {
        bill_due(&subs[i], &plan, pending, day(2, 1), &Default::default()).unwrap()
    };
    let moved = paused(&subs[2]);
    let before = vec![
        BillingCommit {
            new_pending: vec![a.clone(), b.clone(), c.clone(), g.clone()],
            ..BillingCommit::default()
        },
        // C is invoiced before the batch.
        BillingCommit {
            consumed_pending: vec![c.id],
            ..BillingCommit::default()
        },
        // Someone else changed subscription 13 since it was read.
        BillingCommit {
            subscription: Some(moved.clone()),
            ..BillingCommit::default()
        },
    ];
    let e = charge(customers[3], 25);
    let f = charge(customers[3], 26);
    let unknown_sub = {
        let mut s = subs[3].clone();
        s.id = SubscriptionId::from_u128(98);
        s
    };
    let first = vec![
        // Takes A.
        BillingCommit::from(due(0, std::slice::from_ref(&a))),
        // The customer's other subscription, billed from the same read: A is taken.
        BillingCommit::from(due(4, std::slice::from_ref(&a))),
        // Stale and consuming B: the revision is reported, and B stays pending.
        BillingCommit::from(due(2, std::slice::from_ref(&b))),
        // So B can still be taken.
        BillingCommit::from(due(1, std::slice::from_ref(&b))),
        // C was invoiced before the batch.
        BillingCommit {
            consumed_pending: vec![c.id],
            ..BillingCommit::default()
        },
        // Never added.
        BillingCommit {
            consumed_pending: vec![PendingChargeId::from_u128(24)],
            ..BillingCommit::default()
        },
        // Added and consumed by the same commit: not pending when it is checked.
        BillingCommit {
            consumed_pending: vec![e.id],
            new_pending: vec![e.clone()],
            ..BillingCommit::default()
        },
        // Adds F …
        BillingCommit {
            new_pending: vec![f.clone()],
            ..BillingCommit::default()
        },
        // … which a later commit consumes (named twice in its list).
        BillingCommit {
            consumed_pending: vec![f.id, f.id],
            ..BillingCommit::from(due(3, &[]))
        },
        // Unknown subscription, consuming G: unknown is reported, G stays pending.
        BillingCommit {
            subscription: Some(unknown_sub),
            consumed_pending: vec![g.id],
            ..BillingCommit::default()
        },
    ];
    // Subscription 13 twice (commit by commit): current, then stale; G once only.
    let mut current = moved;
    let next = current.revision() + 1;
    dotmac_billing::internal::set_subscription_revision(&mut current, next);
    let out = bill_due(
        &current,
        &plan,
        std::slice::from_ref(&g),
        day(2, 1),
        &Default::default(),
    )
    .unwrap();
    let second = vec![
        BillingCommit::from(out.clone()),
        BillingCommit::from(out),
        BillingCommit {
            consumed_pending: vec![g.id],
            ..BillingCommit::default()
        },
        BillingCommit {
            consumed_pending: vec![a.id],
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
            .insert_subscription(tenant, sub.clone(), Vec::new())
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

#[tokio::test]
async fn pending_charges_are_taken_once_as_in_the_memory_store() {
    let s = charge_scenario();
    let expected = run(&MemoryStore::default(), &s).await;
    // The reference refuses what it should (checked on the reference).
    let taken = |n: u128| {
        format!(
            "PendingChargeTaken {{ charge: {:?} }}",
            PendingChargeId::from_u128(n)
        )
    };
    for n in [21, 23, 24, 25] {
        assert!(expected[0].contains(&taken(n)), "{n}: {}", expected[0]);
    }
    assert!(!expected[0].contains(&taken(22)), "{}", expected[0]);
    assert!(!expected[0].contains(&taken(26)), "{}", expected[0]);
    assert!(expected[0].contains("ConcurrentUpdate"), "{}", expected[0]);
    assert!(
        expected[0].contains("UnknownSubscription"),
        "{}",
        expected[0]
    );
    assert!(expected[1].contains("ConcurrentUpdate"), "{}", expected[1]);
    for n in [21, 27] {
        assert!(expected[1].contains(&taken(n)), "{n}: {}", expected[1]);
    }
    for (name, db) in backends().await {
        let store = SqlStore::new(db);
        let got = run(&store, &s).await;
        for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "{name}: observation {i}");
        }
        assert_eq!(got.len(), expected.len(), "{name}");
    }
}

/// Workers racing for one pending charge (a customer's subscriptions billed at once, through
/// `commit_batch` and `commit`): exactly one invoice carries it, every other commit is refused
/// whole with `PendingChargeTaken`, and the rest of each batch still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commits_invoice_a_charge_once() {
    let plan = plan();
    for (name, db) in backends().await {
        let store = SqlStore::new(db);
        for round in 0..8u128 {
            let tenant = TenantId::new();
            let customer = CustomerId::from_u128(300);
            let new_sub = |n: u128, customer: CustomerId| {
                NewSubscription::new(customer, plan.id, Currency::USD, day(1, 1))
                    .id(SubscriptionId::from_u128(n))
                    .create(&plan, Currency::USD)
                    .unwrap()
            };
            let fee = charge(customer, 31 + round);
            store
                .add_pending_charge(tenant, fee.clone(), Vec::new())
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for i in 0..6u128 {
                let racer = new_sub(310 + i, customer);
                let bystander = new_sub(320 + i, CustomerId::from_u128(400 + i));
                store
                    .insert_subscription(tenant, racer.clone(), Vec::new())
                    .await
                    .unwrap();
                store
                    .insert_subscription(tenant, bystander.clone(), Vec::new())
                    .await
                    .unwrap();
                let commit = |sub: &Subscription, pending: &[PendingCharge]| {
                    let out =
                        bill_due(sub, &plan, pending, day(2, 1), &Default::default()).unwrap();
                    BillingCommit::from(out)
                };
                let racing = commit(&racer, std::slice::from_ref(&fee));
                assert_eq!(racing.consumed_pending, vec![fee.id]);
                let other = commit(&bystander, &[]);
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    if i % 3 == 2 {
                        let alone = store.commit(tenant, racing).await;
                        let other = store.commit(tenant, other).await;
                        (alone, other)
                    } else {
                        let mut results = store
                            .commit_batch(tenant, vec![other, racing])
                            .await
                            .unwrap();
                        let racing = results.pop().unwrap();
                        (racing, results.pop().unwrap())
                    }
                }));
            }
            let mut won = 0;
            let mut issued = 0;
            for task in tasks {
                let (racing, other) = task.await.unwrap();
                match racing {
                    Ok(done) => {
                        won += 1;
                        issued = done.issued.len();
                    }
                    Err(e) => assert_eq!(
                        e,
                        dotmac_billing::BillingError::PendingChargeTaken { charge: fee.id },
                        "{name}"
                    ),
                }
                assert!(other.is_ok(), "{name}: {other:?}");
            }
            assert_eq!(won, 1, "{name}: round {round}");
            let invoices = store.invoices_of(tenant, customer).await.unwrap();
            let fee_lines = invoices
                .iter()
                .flat_map(|i| &i.lines)
                .filter(|l| l.kind == LineKind::LateFee)
                .count();
            assert!(issued > 0, "{name}");
            assert_eq!(
                (invoices.len(), fee_lines),
                (issued, 1),
                "{name}: round {round}"
            );
            assert!(
                store
                    .pending_charges(tenant, customer)
                    .await
                    .unwrap()
                    .is_empty(),
                "{name}"
            );
            for i in 0..6u128 {
                let invoices = store
                    .invoices_of(tenant, CustomerId::from_u128(400 + i))
                    .await
                    .unwrap();
                assert_eq!(invoices.len(), issued, "{name}: bystander {i}");
            }
        }
    }
}

/// `sub` as someone else left it: paused (the store sees a different body at the same revision).
fn paused(sub: &Subscription) -> Subscription {
    let mut parts = dotmac_billing::internal::subscription_into_parts(sub.clone());
    parts.status = SubscriptionStatus::Paused;
    dotmac_billing::internal::subscription_from_parts(parts)
}
