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
    one_customers_bad_data_never_blocks_the_bill_run(make())
        .await
        .map_err(|e| format!("one_customers_bad_data_never_blocks_the_bill_run: {e}"))?;
    bad_input_is_refused_and_changes_nothing(make())
        .await
        .map_err(|e| format!("bad_input_is_refused_and_changes_nothing: {e}"))?;
    keyed_charges_and_credit_notes_are_written_once(make())
        .await
        .map_err(|e| format!("keyed_charges_and_credit_notes_are_written_once: {e}"))?;
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
    let refused = store.put_plan(tenant, plan.clone(), Vec::new()).await;
    ensure!(
        refused == Err(BillingError::UnknownProduct(product.id)),
        "a plan of an unknown product was accepted: {refused:?}"
    );
    store
        .put_product(tenant, product.clone())
        .await
        .map_err(err)?;
    store
        .put_plan(tenant, plan.clone(), Vec::new())
        .await
        .map_err(err)?;
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
    store
        .put_plan(tenant, plan.clone(), Vec::new())
        .await
        .map_err(err)?;
    let stored = store.plan(tenant, plan.id).await.map_err(err)?;
    ensure!(
        stored.map(|p| p.versions().len()) == Some(2),
        "the new version was not stored"
    );
    // Rewriting a stored version is refused and leaves the plan as it was.
    let rewritten = monthly_plan(plan.id, product.id, 1)?;
    ensure!(
        store.put_plan(tenant, rewritten, Vec::new()).await.is_err(),
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
        store
            .insert_subscription(tenant, sub, Vec::new())
            .await
            .map_err(err)?;
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
            store.insert_subscription(tenant, dup, Vec::new()).await,
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
        .insert_subscription(tenant, sub.clone(), Vec::new())
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
            .add_pending_charge(tenant, fee.clone(), Vec::new())
            .await
            .map_err(err)?,
        "first add refused"
    );
    ensure!(
        !store
            .add_pending_charge(tenant, fee.clone(), Vec::new())
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
        !store
            .add_pending_charge(tenant, fee, Vec::new())
            .await
            .map_err(err)?,
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
        .set_invoice_status(tenant, invoice.id, InvoiceStatus::Void)
        .await;
    ensure!(
        matches!(illegal, Err(BillingError::IllegalInvoiceTransition { .. })),
        "paid → void was allowed"
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
            .insert_subscription(tenant, sub.clone(), Vec::new())
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
        .add_pending_charge(tenant, fee.clone(), Vec::new())
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
            .insert_subscription(tenant, sub.clone(), Vec::new())
            .await
            .map_err(err)?;
        subs.push(sub);
    }
    let fee = charge(customer, 92, 300, day(2026, 1, 5)?);
    store
        .add_pending_charge(tenant, fee.clone(), Vec::new())
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

/// The issue-9 reproduction: a pending charge of 3 × `Decimal::MAX` / 2.
fn overflowing_charge(customer: CustomerId, id: u128, on: NaiveDate) -> PendingCharge {
    PendingCharge {
        quantity: Decimal::from(3),
        unit_price: Money::new(Decimal::MAX / Decimal::TWO, Currency::USD),
        ..charge(customer, id, 0, on)
    }
}

/// One customer whose pending charge overflows, among healthy ones, in a run of small chunks
/// (the bad customer's two subscriptions fall into two chunks).
async fn one_customers_bad_data_never_blocks_the_bill_run<S: BillingStore>(
    store: S,
) -> Result<(), String> {
    let settings = BillingSettings::default().with_chunk_size(2);
    let service = BillingService::new(store, clock(), settings);
    let tenant = TenantId::new();
    let product = Product {
        id: ProductId::new(),
        name: "Broadband".into(),
    };
    let plan = monthly_plan(PlanId::new(), product.id, 3000)?;
    service.add_product(tenant, product).await.map_err(err)?;
    service.save_plan(tenant, plan.clone()).await.map_err(err)?;
    let healthy: Vec<CustomerId> = (1..=3u128)
        .map(|n| CustomerId::from_u128(3100 + n))
        .collect();
    let bad = CustomerId::from_u128(3199);
    // Subscriptions 3001 (healthy), 3002 and 3003 (bad), 3004 and 3005 (healthy).
    let owners = [healthy[0], bad, bad, healthy[1], healthy[2]];
    for customer in healthy.iter().chain([&bad]) {
        service
            .save_account(tenant, CustomerAccount::new(*customer, Currency::USD))
            .await
            .map_err(err)?;
    }
    for (n, customer) in (1u128..).zip(owners) {
        service
            .subscribe(
                tenant,
                NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 4, 1)?)
                    .id(SubscriptionId::from_u128(3000 + n)),
            )
            .await
            .map_err(err)?;
    }
    let bad_sub = SubscriptionId::from_u128(3002);
    let huge = overflowing_charge(bad, 3300, day(2026, 3, 20)?);
    service
        .store()
        .add_pending_charge(tenant, huge.clone(), Vec::new())
        .await
        .map_err(err)?;
    let fee = charge(healthy[1], 3301, 250, day(2026, 3, 20)?);
    service
        .add_pending_charge(tenant, fee.clone())
        .await
        .map_err(err)?;
    let bad_before = service
        .store()
        .subscriptions_of(tenant, bad)
        .await
        .map_err(err)?;
    let as_of = day(2026, 4, 1)?;
    let expected = BillingError::Core(dotmac_core::CoreError::Overflow {
        operation: "multiply",
    });

    // The healthy customers are billed; the bad one is skipped and reported, twice over.
    for attempt in 1..=2 {
        let run = service.run_bill(tenant, as_of).await.map_err(err)?;
        let want = if attempt == 1 { 3 } else { 0 };
        ensure!(
            run.invoices == want,
            "run {attempt}: {} invoices, expected {want}; failures {:?}",
            run.invoices,
            run.failures
        );
        ensure!(
            run.failures
                == vec![crate::BillingFailure {
                    customer: bad,
                    subscription: Some(bad_sub),
                    error: expected.clone(),
                }],
            "run {attempt}: failures {:?}",
            run.failures
        );
        let failed_events: Vec<_> = run
            .events
            .iter()
            .filter_map(|e| match &e.payload {
                crate::BillingEvent::BillRunItemFailed {
                    customer,
                    subscription,
                    error_kind,
                    ..
                } => Some((*customer, *subscription, error_kind.as_str())),
                _ => None,
            })
            .collect();
        ensure!(
            failed_events == vec![(bad, Some(bad_sub), "core.overflow")],
            "run {attempt}: failure events {failed_events:?}"
        );
        for customer in &healthy {
            let n = store_invoices(&service, tenant, *customer).await?.len();
            ensure!(n == 1, "run {attempt}: healthy {customer} has {n} invoices");
        }
        // Nothing of the bad customer was written.
        ensure!(
            store_invoices(&service, tenant, bad).await?.is_empty(),
            "run {attempt}: the failing customer was invoiced"
        );
        let bad_now = service
            .store()
            .subscriptions_of(tenant, bad)
            .await
            .map_err(err)?;
        ensure!(
            bad_now == bad_before,
            "run {attempt}: the failing customer's subscriptions changed"
        );
        let pending = service
            .store()
            .pending_charges(tenant, bad)
            .await
            .map_err(err)?;
        ensure!(
            pending == vec![huge.clone()],
            "run {attempt}: the failing customer's charges changed: {pending:?}"
        );
    }
    let fee_lines = store_invoices(&service, tenant, healthy[1])
        .await?
        .iter()
        .flat_map(|i| &i.lines)
        .filter(|l| l.kind == LineKind::LateFee)
        .count();
    ensure!(
        fee_lines == 1,
        "the healthy customer's fee is on {fee_lines} lines"
    );

    // Fix the data: take the bad charge off (the store API has no delete; a commit that
    // consumes it without a document does that) and add the corrected one.
    service
        .store()
        .commit(
            tenant,
            BillingCommit {
                consumed_pending: vec![huge.id],
                ..BillingCommit::default()
            },
        )
        .await
        .map_err(err)?;
    let corrected = charge(bad, 3302, 1500, day(2026, 3, 20)?);
    service
        .add_pending_charge(tenant, corrected)
        .await
        .map_err(err)?;
    let run = service.run_bill(tenant, as_of).await.map_err(err)?;
    ensure!(
        run.invoices == 2 && run.failures.is_empty(),
        "the rerun after the fix issued {} invoices, failures {:?}",
        run.invoices,
        run.failures
    );
    let bad_invoices = store_invoices(&service, tenant, bad).await?;
    let corrected_lines = bad_invoices
        .iter()
        .flat_map(|i| &i.lines)
        .filter(|l| l.kind == LineKind::LateFee)
        .count();
    ensure!(
        bad_invoices.len() == 2 && corrected_lines == 1,
        "the fixed customer has {} invoices with {corrected_lines} fee lines",
        bad_invoices.len()
    );
    for customer in &healthy {
        let n = store_invoices(&service, tenant, *customer).await?.len();
        ensure!(n == 1, "healthy {customer} was billed twice ({n} invoices)");
    }
    let again = service.run_bill(tenant, as_of).await.map_err(err)?;
    ensure!(
        again.invoices == 0 && again.failures.is_empty() && again.events.is_empty(),
        "a run after everything was billed did something: {again:?}"
    );
    Ok(())
}

/// What a refused call must leave as it was: the tenant's plans and, for each customer, their
/// subscriptions, pending charges and invoices.
#[derive(Debug, PartialEq)]
struct Snapshot {
    plans: Vec<Plan>,
    subscriptions: Vec<crate::Subscription>,
    pending: Vec<PendingCharge>,
    invoices: Vec<crate::Invoice>,
}

async fn snapshot<S: BillingStore>(
    store: &S,
    tenant: TenantId,
    customers: &[CustomerId],
) -> Result<Snapshot, String> {
    let mut plans = store.plans(tenant).await.map_err(err)?;
    plans.sort_by_key(|p| p.id);
    let mut snap = Snapshot {
        plans,
        subscriptions: Vec::new(),
        pending: Vec::new(),
        invoices: Vec::new(),
    };
    for customer in customers {
        let mut subs = store
            .subscriptions_of(tenant, *customer)
            .await
            .map_err(err)?;
        subs.sort_by_key(|s| s.id);
        snap.subscriptions.extend(subs);
        snap.pending.extend(
            store
                .pending_charges(tenant, *customer)
                .await
                .map_err(err)?,
        );
        snap.invoices
            .extend(store.invoices_of(tenant, *customer).await.map_err(err)?);
    }
    Ok(snap)
}

/// Asserts that `result` is exactly `expected` and that the store holds what `before` holds.
async fn refused<S: BillingStore, T: std::fmt::Debug>(
    what: &str,
    result: Result<T, BillingError>,
    expected: BillingError,
    store: &S,
    tenant: TenantId,
    customers: &[CustomerId],
    before: &Snapshot,
) -> Result<(), String> {
    match result {
        Err(e) if e == expected => {}
        other => return Err(format!("{what}: expected Err({expected:?}), got {other:?}")),
    }
    let after = snapshot(store, tenant, customers).await?;
    ensure!(
        &after == before,
        "{what}: a refused call changed the store: {after:?}"
    );
    Ok(())
}

async fn bad_input_is_refused_and_changes_nothing<S: BillingStore>(store: S) -> Result<(), String> {
    let (service, tenant, customer, plan) = setup(store).await?;
    let other = CustomerId::new();
    service
        .save_account(tenant, CustomerAccount::new(other, Currency::USD))
        .await
        .map_err(err)?;
    let start = day(2026, 3, 1)?;
    let (sub, _) = service
        .subscribe(
            tenant,
            NewSubscription::new(customer, plan.id, Currency::USD, start),
        )
        .await
        .map_err(err)?;
    let (other_sub, _) = service
        .subscribe(
            tenant,
            NewSubscription::new(other, plan.id, Currency::USD, start),
        )
        .await
        .map_err(err)?;
    let customers = [customer, other];
    let store = service.store();
    let before = snapshot(store, tenant, &customers).await?;
    let usd = |minor| Money::from_minor(minor, Currency::USD);
    let june = day(2026, 6, 1)?;

    // Plans: every bad version is refused and the plan (in memory and stored) stays as it was.
    let price = |currency, minor| crate::CurrencyPrice {
        currency,
        model: crate::PriceModel::flat(Money::from_minor(minor, currency).amount()),
    };
    let cases: Vec<(&str, Vec<Charge>, Vec<Money>, BillingError)> = vec![
        (
            "negative recurring price",
            vec![Charge::recurring_flat([usd(-3000)])],
            vec![],
            BillingError::NegativePrice {
                plan: plan.id,
                charge: 0,
                currency: "USD",
            },
        ),
        (
            "two prices in one currency",
            vec![
                Charge::recurring_flat([usd(1000)]),
                Charge::per_seat(vec![
                    price(Currency::USD, 100),
                    price(Currency::EUR, 100),
                    price(Currency::USD, 200),
                ]),
            ],
            vec![],
            BillingError::DuplicateCurrencyPrice {
                plan: plan.id,
                charge: 1,
                currency: "USD",
            },
        ),
        (
            "no charges",
            vec![],
            vec![],
            BillingError::PlanWithoutCharges {
                plan: plan.id,
                version: 2,
            },
        ),
        (
            "setup fee without a price in its currency",
            vec![Charge::recurring_flat([usd(1000)])],
            vec![Money::from_minor(5000, Currency::EUR)],
            BillingError::SetupFeeCurrencyWithoutPrice {
                plan: plan.id,
                currency: "EUR",
            },
        ),
    ];
    for (what, charges, fees, expected) in cases {
        let mut edited = plan.clone();
        let result = edited.add_version(june, charges, fees);
        ensure!(edited == plan, "{what}: a refused version changed the plan");
        refused(what, result, expected, store, tenant, &customers, &before).await?;
    }

    // Pending charges.
    let mut negative = charge(customer, 901, 500, start);
    negative.quantity = Decimal::NEGATIVE_ONE;
    refused(
        "negative quantity",
        service.add_pending_charge(tenant, negative.clone()).await,
        BillingError::NegativeChargeQuantity {
            charge: negative.id,
            quantity: Decimal::NEGATIVE_ONE,
        },
        store,
        tenant,
        &customers,
        &before,
    )
    .await?;
    let mut silent_credit = charge(customer, 902, -500, start);
    silent_credit.kind = LineKind::OneOff;
    silent_credit.text = None;
    refused(
        "credit without a reason",
        service
            .add_pending_charge(tenant, silent_credit.clone())
            .await,
        BillingError::CreditWithoutReason {
            charge: silent_credit.id,
        },
        store,
        tenant,
        &customers,
        &before,
    )
    .await?;
    let mut foreign = charge(customer, 903, 500, start);
    foreign.subscription = Some(other_sub.id);
    refused(
        "subscription of another customer",
        service.add_pending_charge(tenant, foreign).await,
        BillingError::SubscriptionOfAnotherCustomer {
            subscription: other_sub.id,
            customer,
            owner: other,
        },
        store,
        tenant,
        &customers,
        &before,
    )
    .await?;

    // Dates beyond the horizon.
    let horizon = sub.change_horizon();
    ensure!(
        horizon == day(2126, 3, 1)?,
        "the horizon is not 100 years from the start: {horizon}"
    );
    for date in [NaiveDate::MAX, day(2126, 3, 2)?] {
        let beyond = BillingError::DateBeyondHorizon {
            subscription: sub.id,
            date,
            horizon,
        };
        refused(
            "change beyond the horizon",
            service
                .change_subscription(
                    tenant,
                    sub.id,
                    crate::SubscriptionChange::Quantity {
                        quantity: Decimal::TWO,
                    },
                    date,
                    crate::ChangeTiming::Immediate,
                    ProrationBehavior::InvoiceNow,
                )
                .await,
            beyond.clone(),
            store,
            tenant,
            &customers,
            &before,
        )
        .await?;
        refused(
            "cancel beyond the horizon",
            service
                .cancel_subscription(
                    tenant,
                    sub.id,
                    date,
                    CancelTiming::EndOfPeriod,
                    ProrationBehavior::None,
                )
                .await,
            beyond,
            store,
            tenant,
            &customers,
            &before,
        )
        .await?;
    }

    // A start a century away (the clock says 2026-04-01).
    for start in [NaiveDate::MIN, day(1926, 3, 31)?, day(2126, 4, 2)?] {
        let request = NewSubscription::new(customer, plan.id, Currency::USD, start);
        let id = request.id;
        refused(
            "start beyond the horizon",
            service.subscribe(tenant, request).await,
            BillingError::StartBeyondHorizon {
                subscription: id,
                start,
                earliest: day(1926, 4, 1)?,
                latest: day(2126, 4, 1)?,
            },
            store,
            tenant,
            &customers,
            &before,
        )
        .await?;
    }

    // A credit is a negative unit price with a reason: accepted.
    let mut credit = charge(customer, 904, -500, start);
    credit.kind = LineKind::OneOff;
    credit.text = Some("Goodwill credit for the outage".into());
    ensure!(
        service
            .add_pending_charge(tenant, credit)
            .await
            .map_err(err)?,
        "a credit with a reason was refused"
    );

    // Cancelling at period end twice: the second call changes nothing and raises nothing.
    let (first, events) = service
        .cancel_subscription(
            tenant,
            sub.id,
            day(2026, 3, 10)?,
            CancelTiming::EndOfPeriod,
            ProrationBehavior::None,
        )
        .await
        .map_err(err)?;
    ensure!(!events.is_empty(), "the first cancel raised no event");
    let once = snapshot(store, tenant, &customers).await?;
    let (second, events) = service
        .cancel_subscription(
            tenant,
            sub.id,
            day(2026, 3, 20)?,
            CancelTiming::EndOfPeriod,
            ProrationBehavior::None,
        )
        .await
        .map_err(err)?;
    ensure!(
        events.is_empty(),
        "a repeated cancel raised events: {events:?}"
    );
    let stored = store.subscription(tenant, sub.id).await.map_err(err)?;
    ensure!(
        stored.as_ref() == Some(&first.subscription) && second.subscription == first.subscription,
        "a repeated cancel changed the subscription: {stored:?}"
    );
    ensure!(
        snapshot(store, tenant, &customers).await? == once,
        "a repeated cancel changed the store"
    );
    Ok(())
}

/// Polls two futures together until both are done: concurrent retries in one task, so that a
/// SQL store runs them on two connections at once (no runtime needed here). Shared with the
/// other domain crates' suites.
#[doc(hidden)]
pub async fn join2<A: std::future::Future, B: std::future::Future>(
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

fn key(text: &str) -> Result<crate::IdempotencyKey, String> {
    crate::IdempotencyKey::new(text).map_err(|e| e.to_string())
}

async fn keyed_charges_and_credit_notes_are_written_once<S: BillingStore>(
    store: S,
) -> Result<(), String> {
    let (service, tenant, customer, plan) = setup(store).await?;
    let start = day(2026, 4, 1)?;
    service
        .subscribe(
            tenant,
            NewSubscription::new(customer, plan.id, Currency::USD, start),
        )
        .await
        .map_err(err)?;
    service.run_bill(tenant, start).await.map_err(err)?;
    let customers = [customer];
    let store = service.store();

    // A manual charge: the retry is answered with the first answer, a changed body refused.
    let fee = charge(customer, 501, 700, start);
    let request = crate::ChargeRequest::new(fee.clone()).idempotency_key(key("charge-1")?);
    ensure!(
        service
            .add_charge(tenant, request.clone())
            .await
            .map_err(err)?,
        "a keyed charge was not added"
    );
    let once = snapshot(store, tenant, &customers).await?;
    ensure!(
        service
            .add_charge(tenant, request.clone())
            .await
            .map_err(err)?,
        "a retried charge did not return the first answer"
    );
    ensure!(
        snapshot(store, tenant, &customers).await? == once,
        "a retried charge changed the store"
    );
    let mut dearer = fee.clone();
    dearer.unit_price = Money::from_minor(900, Currency::USD);
    refused(
        "charge with a reused key",
        service
            .add_charge(
                tenant,
                crate::ChargeRequest::new(dearer).idempotency_key(key("charge-1")?),
            )
            .await,
        BillingError::Core(dotmac_core::CoreError::IdempotencyKeyReused {
            key: "charge-1".into(),
        }),
        store,
        tenant,
        &customers,
        &once,
    )
    .await?;

    // A credit note: the retry gets the first note, number included, and no event.
    let invoice = store_invoices(&service, tenant, customer)
        .await?
        .into_iter()
        .next()
        .ok_or("no invoice issued")?;
    let lines = |minor| {
        CreditRequest::Lines(vec![CreditNoteLine {
            line: 0,
            amount: Money::from_minor(minor, Currency::USD),
        }])
    };
    let request = crate::CreditNoteRequest::new(invoice.id, lines(500))
        .reason("Outage")
        .idempotency_key(key("note-1")?);
    let (note, events) = service
        .issue_credit_note(tenant, request.clone())
        .await
        .map_err(err)?;
    ensure!(events.len() == 1, "the first note raised {events:?}");
    let (again, events) = service
        .issue_credit_note(tenant, request.clone())
        .await
        .map_err(err)?;
    ensure!(
        again == note && note.number.is_some(),
        "a retried note is not the first one: {again:?} vs {note:?}"
    );
    ensure!(events.is_empty(), "a retried note raised {events:?}");
    let notes = store
        .credit_notes_of(tenant, invoice.id)
        .await
        .map_err(err)?;
    ensure!(
        notes == vec![note.clone()],
        "notes after a retry: {notes:?}"
    );
    let other_body = crate::CreditNoteRequest::new(invoice.id, lines(600))
        .reason("Outage")
        .idempotency_key(key("note-1")?);
    let reused = service.issue_credit_note(tenant, other_body).await;
    ensure!(
        reused
            == Err(BillingError::Core(
                dotmac_core::CoreError::IdempotencyKeyReused {
                    key: "note-1".into()
                }
            )),
        "a note with a reused key: {reused:?}"
    );
    // One key space: the charge's key cannot name a credit note.
    let crossed = service
        .issue_credit_note(
            tenant,
            crate::CreditNoteRequest::new(invoice.id, lines(500)).idempotency_key(key("charge-1")?),
        )
        .await;
    ensure!(
        crossed
            == Err(BillingError::Core(
                dotmac_core::CoreError::IdempotencyKeyReused {
                    key: "charge-1".into()
                }
            )),
        "a charge's key issued a note: {crossed:?}"
    );
    ensure!(
        store
            .credit_notes_of(tenant, invoice.id)
            .await
            .map_err(err)?
            == notes,
        "a refused note was stored"
    );

    // Concurrent retries with one key: exactly one write.
    let request =
        crate::CreditNoteRequest::new(invoice.id, lines(300)).idempotency_key(key("note-2")?);
    let (first, second) = join2(
        service.issue_credit_note(tenant, request.clone()),
        service.issue_credit_note(tenant, request.clone()),
    )
    .await;
    let (first, first_events) = first.map_err(err)?;
    let (second, second_events) = second.map_err(err)?;
    ensure!(first == second, "concurrent retries got two notes");
    ensure!(
        first_events.len() + second_events.len() == 1,
        "concurrent retries raised {} events",
        first_events.len() + second_events.len()
    );
    let notes = store
        .credit_notes_of(tenant, invoice.id)
        .await
        .map_err(err)?;
    ensure!(
        notes.len() == 2,
        "concurrent retries stored {} notes",
        notes.len()
    );
    let extra = crate::ChargeRequest::new(charge(customer, 502, 100, start))
        .idempotency_key(key("charge-2")?);
    let (a, b) = join2(
        service.add_charge(tenant, extra.clone()),
        service.add_charge(tenant, extra.clone()),
    )
    .await;
    ensure!(
        a.map_err(err)? && b.map_err(err)?,
        "concurrent retries of a charge were not both answered as added"
    );
    let pending = store.pending_charges(tenant, customer).await.map_err(err)?;
    ensure!(
        pending.len() == 2,
        "concurrent retries left {} charges pending",
        pending.len()
    );
    Ok(())
}
