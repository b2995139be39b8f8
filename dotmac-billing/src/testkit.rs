//! The store behaviour suite: one set of checks, run against every store implementation (the
//! in-memory store here, SQLite and PostgreSQL in `dotmac-sqlx`), so that stores cannot drift
//! apart.
//!
//! ```
//! # async fn demo() -> Result<(), String> {
//! dotmac_billing::testkit::run_store_suite(dotmac_billing::MemoryStore::new).await
//! # }
//! ```
//!
//! Every check uses fresh tenant ids, so the suite may share one database with other tests.

// A test suite: fixed, small figures, where plain operators are the clearest.
#![allow(clippy::arithmetic_side_effects)]

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac_core::{
    Currency, CustomerId, FixedClock, Money, PlanId, ProductId, SubscriptionId, TenantId,
};
use rust_decimal::Decimal;

use crate::{
    BillingCommit, BillingError, BillingService, BillingSettings, BillingStore, CancelTiming,
    Charge, CreditNoteLine, CreditRequest, CustomerAccount, DocumentKey, DocumentNumber,
    FirstPeriod, InvoiceStatus, LineKind, NewSubscription, PendingCharge, PendingChargeId, Plan,
    Product, ProrationBehavior,
};

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn day(y: i32, m: u32, d: u32) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| format!("bad date {y}-{m}-{d}"))
}

fn err(e: BillingError) -> String {
    e.to_string()
}

/// A monthly in-advance plan of `amount` USD with id `id`.
fn monthly_plan(id: PlanId, product: ProductId, amount: i64) -> Result<Plan, String> {
    Plan::builder(id, product, "Fibre")
        .charge(Charge::recurring_flat([Money::from_minor(
            amount,
            Currency::USD,
        )]))
        .build(day(2026, 1, 1)?)
        .map_err(err)
}

/// Runs every check against stores made by `make` (one fresh store per check).
///
/// # Errors
///
/// A message naming the first check that failed.
pub async fn run_store_suite<S, F>(make: F) -> Result<(), String>
where
    S: BillingStore,
    F: Fn() -> S,
{
    catalog_round_trip(make())
        .await
        .map_err(|e| format!("catalog_round_trip: {e}"))?;
    subscriptions_page_in_id_order(make())
        .await
        .map_err(|e| format!("subscriptions_page_in_id_order: {e}"))?;
    commit_is_atomic_and_numbers_are_gapless(make())
        .await
        .map_err(|e| format!("commit_is_atomic_and_numbers_are_gapless: {e}"))?;
    pending_charges_are_idempotent_and_consumed(make())
        .await
        .map_err(|e| format!("pending_charges_are_idempotent_and_consumed: {e}"))?;
    bill_run_is_idempotent_and_matches_preview(make())
        .await
        .map_err(|e| format!("bill_run_is_idempotent_and_matches_preview: {e}"))?;
    credit_notes_never_over_credit(make())
        .await
        .map_err(|e| format!("credit_notes_never_over_credit: {e}"))?;
    commit_batch_skips_conflicts_and_applies_the_rest(make())
        .await
        .map_err(|e| format!("commit_batch_skips_conflicts_and_applies_the_rest: {e}"))?;
    a_pending_charge_is_invoiced_once(make())
        .await
        .map_err(|e| format!("a_pending_charge_is_invoiced_once: {e}"))?;
    Ok(())
}

async fn catalog_round_trip<S: BillingStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let other = TenantId::new();
    let product = Product {
        id: ProductId::new(),
        name: "Broadband".into(),
    };
    let mut plan = monthly_plan(PlanId::new(), product.id, 1000)?;
    let refused = store.put_plan(tenant, plan.clone()).await;
    ensure!(
        refused == Err(BillingError::UnknownProduct(product.id)),
        "a plan of an unknown product was accepted: {refused:?}"
    );
    store
        .put_product(tenant, product.clone())
        .await
        .map_err(err)?;
    store.put_plan(tenant, plan.clone()).await.map_err(err)?;
    let back = store.plan(tenant, plan.id).await.map_err(err)?;
    ensure!(
        back.as_ref() == Some(&plan),
        "plan did not round-trip: {back:?}"
    );
    ensure!(
        store.plan(other, plan.id).await.map_err(err)?.is_none(),
        "a plan leaked to another tenant"
    );
    plan.add_version(
        day(2026, 6, 1)?,
        vec![Charge::recurring_flat([Money::from_minor(
            1200,
            Currency::USD,
        )])],
        vec![],
    )
    .map_err(err)?;
    store.put_plan(tenant, plan.clone()).await.map_err(err)?;
    let stored = store.plan(tenant, plan.id).await.map_err(err)?;
    ensure!(
        stored.map(|p| p.versions().len()) == Some(2),
        "the new version was not stored"
    );
    // Rewriting a stored version is refused and leaves the plan as it was.
    let rewritten = monthly_plan(plan.id, product.id, 1)?;
    ensure!(
        store.put_plan(tenant, rewritten).await.is_err(),
        "a stored price version was rewritten"
    );
    ensure!(
        store.plan(tenant, plan.id).await.map_err(err)?.as_ref() == Some(&plan),
        "a refused rewrite changed the plan"
    );
    Ok(())
}

async fn subscriptions_page_in_id_order<S: BillingStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let plan = monthly_plan(PlanId::new(), ProductId::new(), 1000)?;
    let customer = CustomerId::new();
    let mut ids = Vec::new();
    for n in (1..=5u128).rev() {
        let sub = NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 1, 1)?)
            .id(SubscriptionId::from_u128(n))
            .create(&plan, Currency::USD)
            .map_err(err)?;
        ids.push(sub.id);
        store.insert_subscription(tenant, sub).await.map_err(err)?;
    }
    ids.sort();
    let first = store
        .subscriptions_page(tenant, None, 2)
        .await
        .map_err(err)?;
    let second = store
        .subscriptions_page(tenant, first.last().map(|s| s.id), 10)
        .await
        .map_err(err)?;
    let seen: Vec<_> = first.iter().chain(&second).map(|s| s.id).collect();
    ensure!(
        seen == ids,
        "pages {seen:?} are not the ids in order {ids:?}"
    );
    let dup = NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 1, 1)?)
        .id(SubscriptionId::from_u128(1))
        .create(&plan, Currency::USD)
        .map_err(err)?;
    ensure!(
        matches!(
            store.insert_subscription(tenant, dup).await,
            Err(BillingError::AlreadyExists { .. })
        ),
        "a duplicate subscription id was accepted"
    );
    ensure!(
        store
            .subscriptions_of(tenant, customer)
            .await
            .map_err(err)?
            .len()
            == 5,
        "subscriptions_of lost subscriptions"
    );
    Ok(())
}

async fn commit_is_atomic_and_numbers_are_gapless<S: BillingStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let plan = monthly_plan(PlanId::new(), ProductId::new(), 1000)?;
    let customer = CustomerId::new();
    let sub = NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 1, 1)?)
        .create(&plan, Currency::USD)
        .map_err(err)?;
    store
        .insert_subscription(tenant, sub.clone())
        .await
        .map_err(err)?;
    let out =
        crate::bill_due(&sub, &plan, &[], day(2026, 3, 1)?, &Default::default()).map_err(err)?;
    ensure!(
        out.invoices.len() == 3,
        "expected 3 invoices, got {}",
        out.invoices.len()
    );
    // A stale revision is refused and writes nothing.
    let mut stale = out.subscription.clone();
    stale.revision += 7;
    let refused = store
        .commit(
            tenant,
            BillingCommit {
                subscription: Some(stale),
                invoices: out.invoices.clone(),
                ..BillingCommit::default()
            },
        )
        .await;
    ensure!(
        matches!(refused, Err(BillingError::ConcurrentUpdate { .. })),
        "a stale revision was accepted: {refused:?}"
    );
    ensure!(
        store
            .invoices_of(tenant, customer)
            .await
            .map_err(err)?
            .is_empty(),
        "a refused commit wrote invoices"
    );
    let result = store
        .commit(
            tenant,
            BillingCommit {
                subscription: Some(out.subscription.clone()),
                invoices: out.invoices.clone(),
                ..BillingCommit::default()
            },
        )
        .await
        .map_err(err)?;
    let numbers: Vec<_> = result.issued.iter().map(|i| i.number).collect();
    ensure!(
        numbers == [DocumentNumber(1), DocumentNumber(2), DocumentNumber(3)],
        "numbers are not 1, 2, 3: {numbers:?}"
    );
    for issued in &result.issued {
        let stored = store.invoice(tenant, issued.id).await.map_err(err)?;
        ensure!(
            stored.as_ref().map(|i| (i.status, i.number))
                == Some((InvoiceStatus::Open, Some(issued.number))),
            "issued invoice {} is not stored open with its number: {stored:?}",
            issued.id
        );
    }
    let stored = store.subscription(tenant, sub.id).await.map_err(err)?;
    ensure!(
        stored.as_ref().map(|s| s.revision) == Some(sub.revision + 1),
        "the revision was not bumped"
    );
    // The same documents again are duplicates, not new numbers.
    let again = store
        .commit(
            tenant,
            BillingCommit {
                invoices: out.invoices.clone(),
                ..BillingCommit::default()
            },
        )
        .await
        .map_err(err)?;
    ensure!(
        again.issued.is_empty() && again.duplicates == 3,
        "re-committed documents were issued again: {again:?}"
    );
    // Another tenant numbers from 1 on its own.
    let other = TenantId::new();
    let elsewhere = store
        .commit(
            other,
            BillingCommit {
                invoices: out.invoices.iter().take(1).cloned().collect(),
                ..BillingCommit::default()
            },
        )
        .await
        .map_err(err)?;
    ensure!(
        elsewhere.issued.first().map(|i| i.number) == Some(DocumentNumber(1)),
        "numbering is not per tenant"
    );
    Ok(())
}

fn charge(customer: CustomerId, id: u128, cents: i64, on: NaiveDate) -> PendingCharge {
    PendingCharge {
        id: PendingChargeId::from_u128(id),
        customer,
        subscription: None,
        kind: LineKind::LateFee,
        text: Some("Late fee".into()),
        period: None,
        quantity: Decimal::ONE,
        unit_price: Money::from_minor(cents, Currency::USD),
        price: None,
        created_on: on,
    }
}

async fn pending_charges_are_idempotent_and_consumed<S: BillingStore>(
    store: S,
) -> Result<(), String> {
    let tenant = TenantId::new();
    let customer = CustomerId::new();
    let fee = charge(customer, 1, 500, day(2026, 1, 10)?);
    ensure!(
        store
            .add_pending_charge(tenant, fee.clone())
            .await
            .map_err(err)?,
        "first add refused"
    );
    ensure!(
        !store
            .add_pending_charge(tenant, fee.clone())
            .await
            .map_err(err)?,
        "second add of the same id was accepted"
    );
    ensure!(
        store
            .pending_charges(tenant, customer)
            .await
            .map_err(err)?
            .len()
            == 1,
        "a duplicate charge is pending"
    );
    store
        .commit(
            tenant,
            BillingCommit {
                consumed_pending: vec![fee.id],
                ..BillingCommit::default()
            },
        )
        .await
        .map_err(err)?;
    ensure!(
        store
            .pending_charges(tenant, customer)
            .await
            .map_err(err)?
            .is_empty(),
        "a consumed charge is still pending"
    );
    ensure!(
        !store.add_pending_charge(tenant, fee).await.map_err(err)?,
        "an invoiced charge could be added again"
    );
    Ok(())
}

fn clock() -> FixedClock {
    FixedClock::new(
        Utc.with_ymd_and_hms(2026, 4, 1, 6, 0, 0)
            .single()
            .unwrap_or_default(),
    )
}

async fn setup<S: BillingStore>(
    store: S,
) -> Result<(BillingService<S, FixedClock>, TenantId, CustomerId, Plan), String> {
    let service = BillingService::new(store, clock(), BillingSettings::default());
    let tenant = TenantId::new();
    let product = Product {
        id: ProductId::new(),
        name: "Broadband".into(),
    };
    let plan = monthly_plan(PlanId::new(), product.id, 3000)?;
    service.add_product(tenant, product).await.map_err(err)?;
    service.save_plan(tenant, plan.clone()).await.map_err(err)?;
    let customer = CustomerId::new();
    service
        .save_account(tenant, CustomerAccount::new(customer, Currency::USD))
        .await
        .map_err(err)?;
    Ok((service, tenant, customer, plan))
}

async fn bill_run_is_idempotent_and_matches_preview<S: BillingStore>(
    store: S,
) -> Result<(), String> {
    let (service, tenant, customer, plan) = setup(store).await?;
    let (sub, _) = service
        .subscribe(
            tenant,
            NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 3, 15)?)
                .anchor(day(2026, 1, 1)?)
                .first_period(FirstPeriod::Prorate),
        )
        .await
        .map_err(err)?;
    service
        .add_pending_charge(tenant, charge(customer, 77, 250, day(2026, 3, 20)?))
        .await
        .map_err(err)?;
    let as_of = day(2026, 4, 1)?;
    let preview = service.preview(tenant, sub.id, as_of).await.map_err(err)?;
    let run = service.run_bill(tenant, as_of).await.map_err(err)?;
    ensure!(
        run.invoices == 2,
        "expected 2 invoices (March part, April), got {}",
        run.invoices
    );
    let issued = store_invoices(&service, tenant, customer).await?;
    ensure!(
        preview.len() == issued.len(),
        "preview and issue differ in count"
    );
    for (p, i) in preview.iter().zip(&issued) {
        ensure!(
            p.id == i.id && p.lines == i.lines && p.total == i.total && p.key == i.key,
            "preview {p:?} differs from issued {i:?}"
        );
    }
    ensure!(
        issued
            .iter()
            .any(|i| i.lines.iter().any(|l| l.kind == LineKind::LateFee)),
        "the pending charge was not invoiced"
    );
    let again = service.run_bill(tenant, as_of).await.map_err(err)?;
    ensure!(
        again.invoices == 0 && again.events.is_empty(),
        "a re-run issued {} invoice(s)",
        again.invoices
    );
    ensure!(
        store_invoices(&service, tenant, customer).await?.len() == issued.len(),
        "a re-run added documents"
    );
    // Bad input changes nothing: a change dated before the start.
    let before = service
        .store()
        .subscription(tenant, sub.id)
        .await
        .map_err(err)?;
    let refused = service
        .cancel_subscription(
            tenant,
            sub.id,
            day(2026, 3, 1)?,
            CancelTiming::Immediate,
            ProrationBehavior::InvoiceNow,
        )
        .await;
    ensure!(
        matches!(refused, Err(BillingError::ChangeBeforeStart { .. })),
        "a change before the start was not refused: {refused:?}"
    );
    ensure!(
        service
            .store()
            .subscription(tenant, sub.id)
            .await
            .map_err(err)?
            == before,
        "a refused change modified the subscription"
    );
    Ok(())
}

async fn store_invoices<S: BillingStore>(
    service: &BillingService<S, FixedClock>,
    tenant: TenantId,
    customer: CustomerId,
) -> Result<Vec<crate::Invoice>, String> {
    service
        .store()
        .invoices_of(tenant, customer)
        .await
        .map_err(err)
}

async fn credit_notes_never_over_credit<S: BillingStore>(store: S) -> Result<(), String> {
    let (service, tenant, customer, plan) = setup(store).await?;
    service
        .subscribe(
            tenant,
            NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 4, 1)?),
        )
        .await
        .map_err(err)?;
    service
        .run_bill(tenant, day(2026, 4, 1)?)
        .await
        .map_err(err)?;
    let invoices = store_invoices(&service, tenant, customer).await?;
    let invoice = invoices.first().ok_or("no invoice issued")?;
    ensure!(
        invoice.key
            == DocumentKey::Period {
                subscription: invoice.subscription.ok_or("no subscription on invoice")?,
                index: 0
            },
        "unexpected key {:?}",
        invoice.key
    );
    let part = Money::from_minor(1000, Currency::USD);
    let (note, _) = service
        .credit(
            tenant,
            invoice.id,
            CreditRequest::Lines(vec![CreditNoteLine {
                line: 0,
                amount: part,
            }]),
            None,
        )
        .await
        .map_err(err)?;
    ensure!(note.total == part, "partial credit total {:?}", note.total);
    let too_much = service
        .credit(
            tenant,
            invoice.id,
            CreditRequest::Lines(vec![CreditNoteLine {
                line: 0,
                amount: Money::from_minor(2001, Currency::USD),
            }]),
            None,
        )
        .await;
    ensure!(
        matches!(too_much, Err(BillingError::CreditExceedsLine { .. })),
        "over-credit was not refused: {too_much:?}"
    );
    let (rest, _) = service
        .credit(tenant, invoice.id, CreditRequest::Full, None)
        .await
        .map_err(err)?;
    ensure!(
        rest.total == Money::from_minor(2000, Currency::USD),
        "full credit of the rest was {:?}",
        rest.total
    );
    ensure!(
        service
            .credit(tenant, invoice.id, CreditRequest::Full, None)
            .await
            == Err(BillingError::NothingToCredit(invoice.id)),
        "a fully credited invoice was credited again"
    );
    let (paid, _) = service
        .set_invoice_status(tenant, invoice.id, InvoiceStatus::Paid)
        .await
        .map_err(err)?;
    ensure!(paid.status == InvoiceStatus::Paid, "not paid");
    let illegal = service
        .set_invoice_status(tenant, invoice.id, InvoiceStatus::Open)
        .await;
    ensure!(
        matches!(illegal, Err(BillingError::IllegalInvoiceTransition { .. })),
        "paid → open was allowed"
    );
    Ok(())
}

async fn commit_batch_skips_conflicts_and_applies_the_rest<S: BillingStore>(
    store: S,
) -> Result<(), String> {
    let tenant = TenantId::new();
    let plan = monthly_plan(PlanId::new(), ProductId::new(), 1000)?;
    let as_of = day(2026, 2, 1)?;
    let mut subs = Vec::new();
    let mut customers = Vec::new();
    for n in 1..=3u128 {
        let customer = CustomerId::from_u128(1000 + n);
        let sub = NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 1, 1)?)
            .id(SubscriptionId::from_u128(n))
            .create(&plan, Currency::USD)
            .map_err(err)?;
        store
            .insert_subscription(tenant, sub.clone())
            .await
            .map_err(err)?;
        store
            .put_account(tenant, CustomerAccount::new(customer, Currency::USD))
            .await
            .map_err(err)?;
        customers.push(customer);
        subs.push(sub);
    }
    let fee = charge(customers[0], 91, 300, day(2026, 1, 5)?);
    store
        .add_pending_charge(tenant, fee.clone())
        .await
        .map_err(err)?;
    // The batch reads see what the single reads see.
    let mut accounts = store.accounts(tenant, &customers).await.map_err(err)?;
    accounts.sort_by_key(|a| a.customer);
    ensure!(
        accounts.iter().map(|a| a.customer).collect::<Vec<_>>() == customers,
        "accounts() did not return every account: {accounts:?}"
    );
    let pending = store
        .pending_charges_for(tenant, &customers)
        .await
        .map_err(err)?;
    ensure!(
        pending == vec![fee.clone()],
        "pending_charges_for: {pending:?}"
    );

    let mut commits = Vec::new();
    for sub in &subs {
        let out = crate::bill_due(sub, &plan, &pending, as_of, &Default::default()).map_err(err)?;
        commits.push(BillingCommit::from(out));
    }
    // The second subscription was changed by someone else since it was read.
    let mut moved = subs[1].clone();
    moved.status = crate::SubscriptionStatus::Paused;
    store
        .commit(
            tenant,
            BillingCommit {
                subscription: Some(moved),
                ..BillingCommit::default()
            },
        )
        .await
        .map_err(err)?;
    let results = store
        .commit_batch(tenant, commits.clone())
        .await
        .map_err(err)?;
    ensure!(
        results.len() == 3,
        "{} results for 3 commits",
        results.len()
    );
    ensure!(
        matches!(
            results.get(1),
            Some(Err(BillingError::ConcurrentUpdate { .. }))
        ),
        "the stale commit was not refused: {:?}",
        results.get(1)
    );
    let mut numbers = Vec::new();
    for (i, result) in results.iter().enumerate() {
        if i == 1 {
            continue;
        }
        let done = result.as_ref().map_err(|e| format!("commit {i}: {e}"))?;
        ensure!(
            done.issued.len() == 2 && done.duplicates == 0,
            "commit {i} issued {:?}",
            done
        );
        numbers.extend(done.issued.iter().map(|d| d.number));
    }
    ensure!(
        numbers == (1..=4).map(DocumentNumber).collect::<Vec<_>>(),
        "numbers are not 1..4 in batch order: {numbers:?}"
    );
    // The refused commit wrote nothing; the others wrote everything.
    ensure!(
        store
            .invoices_of(tenant, customers[1])
            .await
            .map_err(err)?
            .is_empty(),
        "the refused commit wrote invoices"
    );
    let stored = store.subscription(tenant, subs[1].id).await.map_err(err)?;
    ensure!(
        stored.map(|s| (s.revision, s.status))
            == Some((subs[1].revision + 1, crate::SubscriptionStatus::Paused)),
        "the refused commit changed the subscription"
    );
    for i in [0, 2] {
        let sub = subs.get(i).ok_or("missing subscription")?;
        let stored = store.subscription(tenant, sub.id).await.map_err(err)?;
        ensure!(
            stored.as_ref().map(|s| (s.revision, s.next_period)) == Some((sub.revision + 1, 2)),
            "subscription {i} was not updated: {stored:?}"
        );
        let customer = *customers.get(i).ok_or("missing customer")?;
        ensure!(
            store
                .invoices_of(tenant, customer)
                .await
                .map_err(err)?
                .len()
                == 2,
            "customer {i} lacks invoices"
        );
    }
    ensure!(
        store
            .pending_charges(tenant, customers[0])
            .await
            .map_err(err)?
            .is_empty(),
        "the consumed charge is still pending"
    );
    // The same batch again: every document is a duplicate or its subscription is stale.
    let again = store.commit_batch(tenant, commits).await.map_err(err)?;
    ensure!(
        again
            .iter()
            .all(|r| matches!(r, Err(BillingError::ConcurrentUpdate { .. }))),
        "a replayed batch was applied: {again:?}"
    );
    ensure!(
        store
            .commit_batch(tenant, Vec::new())
            .await
            .map_err(err)?
            .is_empty(),
        "an empty batch returned results"
    );
    Ok(())
}

/// Two commits that both put the same pending charge on their invoice (two workers billing a
/// customer's two subscriptions at once, or a bill run racing `invoice_pending_now`): the
/// first wins, the second is refused whole, and a replay or an unknown charge is refused too.
async fn a_pending_charge_is_invoiced_once<S: BillingStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let plan = monthly_plan(PlanId::new(), ProductId::new(), 1000)?;
    let customer = CustomerId::from_u128(2001);
    store
        .put_account(tenant, CustomerAccount::new(customer, Currency::USD))
        .await
        .map_err(err)?;
    let mut subs = Vec::new();
    for n in 1..=2u128 {
        let sub = NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 1, 1)?)
            .id(SubscriptionId::from_u128(2000 + n))
            .create(&plan, Currency::USD)
            .map_err(err)?;
        store
            .insert_subscription(tenant, sub.clone())
            .await
            .map_err(err)?;
        subs.push(sub);
    }
    let fee = charge(customer, 92, 300, day(2026, 1, 5)?);
    store
        .add_pending_charge(tenant, fee.clone())
        .await
        .map_err(err)?;
    let mut commits = Vec::new();
    for sub in &subs {
        let out = crate::bill_due(
            sub,
            &plan,
            std::slice::from_ref(&fee),
            day(2026, 2, 1)?,
            &Default::default(),
        )
        .map_err(err)?;
        ensure!(
            out.consumed == vec![fee.id],
            "bill_due did not take the charge"
        );
        commits.push(BillingCommit::from(out));
    }
    let replay = commits.get(1).cloned().ok_or("missing commit")?;
    let results = store.commit_batch(tenant, commits).await.map_err(err)?;
    ensure!(
        matches!(results.first(), Some(Ok(done)) if done.issued.len() == 2),
        "the first commit was not applied: {:?}",
        results.first()
    );
    ensure!(
        results.get(1) == Some(&Err(BillingError::PendingChargeTaken { charge: fee.id })),
        "the second commit was not refused: {:?}",
        results.get(1)
    );
    let invoices = store.invoices_of(tenant, customer).await.map_err(err)?;
    let fee_lines = invoices
        .iter()
        .flat_map(|i| &i.lines)
        .filter(|l| l.kind == LineKind::LateFee)
        .count();
    ensure!(
        invoices.len() == 2 && fee_lines == 1,
        "{} invoices with {fee_lines} fee lines",
        invoices.len()
    );
    let untouched = store.subscription(tenant, subs[1].id).await.map_err(err)?;
    ensure!(
        untouched.as_ref() == subs.get(1),
        "the refused commit changed its subscription: {untouched:?}"
    );
    // Retried alone (its subscription is unchanged), the commit is still refused.
    ensure!(
        store.commit(tenant, replay).await
            == Err(BillingError::PendingChargeTaken { charge: fee.id }),
        "a retried commit took the charge again"
    );
    let unknown = PendingChargeId::from_u128(999_999);
    ensure!(
        store
            .commit(
                tenant,
                BillingCommit {
                    consumed_pending: vec![unknown],
                    ..BillingCommit::default()
                },
            )
            .await
            == Err(BillingError::PendingChargeTaken { charge: unknown }),
        "an unknown charge was consumed"
    );
    ensure!(
        store
            .invoices_of(tenant, customer)
            .await
            .map_err(err)?
            .len()
            == 2,
        "a refused commit wrote invoices"
    );
    Ok(())
}
