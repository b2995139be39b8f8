//! The store behaviour suite: one set of checks, run against every store implementation (the
//! in-memory store here, SQLite and PostgreSQL in `dotmac-sqlx`), so that stores cannot drift
//! apart.
//!
//! ```
//! # async fn demo() -> Result<(), String> {
//! use dotmac_billing::testkit::{core_outbox, run_store_suite};
//! run_store_suite(dotmac_billing::MemoryStore::new, core_outbox).await
//! # }
//! ```
//!
//! The second argument reads a store's outbox back ([`core_outbox`] for any
//! [`OutboxStore`](dotmac_core::outbox::OutboxStore)): the suite checks that every change
//! writes its events in the same step, and that a refused change writes none.
//!
//! Every check uses fresh tenant ids, so the suite may share one database with other tests.

// A test suite: fixed, small figures, where plain operators are the clearest.
#![allow(clippy::arithmetic_side_effects)]

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac_core::Clock as _;
use dotmac_core::outbox::{BoxFuture, OutboxEvent, OutboxStore};
use dotmac_core::{
    Currency, CustomerId, DomainEvent, EventId, FixedClock, Money, PlanId, ProductId,
    SubscriptionId, TenantId,
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

/// An event as a store's outbox holds it: what the suite compares.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The event's id.
    pub id: EventId,
    /// Its stable name.
    pub event_type: String,
    /// Its payload, as stored.
    pub payload: serde_json::Value,
}

/// Reads a tenant's outbox events from a store, in outbox order, for the suite.
pub trait ReadOutbox<S>: Sync {
    /// The tenant's events.
    fn read<'a>(
        &'a self,
        store: &'a S,
        tenant: TenantId,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, String>>;
}

impl<S, F> ReadOutbox<S> for F
where
    F: for<'a> Fn(&'a S, TenantId) -> BoxFuture<'a, Result<Vec<StoredEvent>, String>> + Sync,
{
    fn read<'a>(
        &'a self,
        store: &'a S,
        tenant: TenantId,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, String>> {
        self(store, tenant)
    }
}

/// The [`ReadOutbox`] of any [`OutboxStore`] (the in-memory store's, a SQL store's).
pub fn core_outbox<S: OutboxStore>(
    store: &S,
    tenant: TenantId,
) -> BoxFuture<'_, Result<Vec<StoredEvent>, String>> {
    Box::pin(async move {
        Ok(store
            .outbox_messages(tenant)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|m| StoredEvent {
                id: m.id,
                event_type: m.event_type,
                payload: m.payload,
            })
            .collect())
    })
}

/// Runs every check against stores made by `make` (one fresh store per check), reading their
/// outboxes with `outbox`.
///
/// # Errors
///
/// A message naming the first check that failed.
pub async fn run_store_suite<S, F, R>(make: F, outbox: R) -> Result<(), String>
where
    S: BillingStore,
    F: Fn() -> S,
    R: ReadOutbox<S>,
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
    numbers_follow_the_tenant_format(make())
        .await
        .map_err(|e| format!("numbers_follow_the_tenant_format: {e}"))?;
    pending_charges_are_idempotent_and_consumed(make())
        .await
        .map_err(|e| format!("pending_charges_are_idempotent_and_consumed: {e}"))?;
    bill_run_is_idempotent_and_matches_preview(make())
        .await
        .map_err(|e| format!("bill_run_is_idempotent_and_matches_preview: {e}"))?;
    credit_notes_never_over_credit(make())
        .await
        .map_err(|e| format!("credit_notes_never_over_credit: {e}"))?;
    credit_notes_follow_their_own_number_format(make())
        .await
        .map_err(|e| format!("credit_notes_follow_their_own_number_format: {e}"))?;
    commit_batch_skips_conflicts_and_applies_the_rest(make())
        .await
        .map_err(|e| format!("commit_batch_skips_conflicts_and_applies_the_rest: {e}"))?;
    a_pending_charge_is_invoiced_once(make())
        .await
        .map_err(|e| format!("a_pending_charge_is_invoiced_once: {e}"))?;
    an_ended_subscription_leaves_no_charge_unbilled(make())
        .await
        .map_err(|e| format!("an_ended_subscription_leaves_no_charge_unbilled: {e}"))?;
    billed_usage_is_read_by_subscription_and_period(make())
        .await
        .map_err(|e| format!("billed_usage_is_read_by_subscription_and_period: {e}"))?;
    one_customers_bad_data_never_blocks_the_bill_run(make())
        .await
        .map_err(|e| format!("one_customers_bad_data_never_blocks_the_bill_run: {e}"))?;
    bad_input_is_refused_and_changes_nothing(make())
        .await
        .map_err(|e| format!("bad_input_is_refused_and_changes_nothing: {e}"))?;
    keyed_charges_and_credit_notes_are_written_once(make())
        .await
        .map_err(|e| format!("keyed_charges_and_credit_notes_are_written_once: {e}"))?;
    commits_write_their_events_atomically(make(), &outbox)
        .await
        .map_err(|e| format!("commits_write_their_events_atomically: {e}"))?;
    batched_charges_write_only_the_new_ones_and_their_events(make(), &outbox)
        .await
        .map_err(|e| format!("batched_charges_write_only_the_new_ones_and_their_events: {e}"))?;
    a_large_batch_of_charges_is_added_once_each(make())
        .await
        .map_err(|e| format!("a_large_batch_of_charges_is_added_once_each: {e}"))?;
    every_service_change_writes_its_events(make(), &outbox)
        .await
        .map_err(|e| format!("every_service_change_writes_its_events: {e}"))?;
    invoice_statuses_and_settlements_round_trip(make(), &outbox)
        .await
        .map_err(|e| format!("invoice_statuses_and_settlements_round_trip: {e}"))?;
    for policy in [
        crate::SuspensionBilling::KeepBilling,
        crate::SuspensionBilling::CreditSuspendedDays,
        crate::SuspensionBilling::PauseBilling,
    ] {
        suspensions_round_trip_and_bill_runs_follow_the_policy(make(), &outbox, policy)
            .await
            .map_err(|e| {
                format!("suspensions_round_trip_and_bill_runs_follow_the_policy ({policy:?}): {e}")
            })?;
    }
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

/// The tenant's invoice number format: a yearly format numbers each year of issue dates from 1
/// in its own gapless sequence (through a single commit and through a batch), the number is
/// written with the prefix, year and padding, and invoices in the default format keep the
/// default sequence.
async fn numbers_follow_the_tenant_format<S: BillingStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let plan = monthly_plan(PlanId::new(), ProductId::new(), 1000)?;
    let yearly = crate::InvoiceNumberFormat::new("F/", 4, crate::NumberReset::Yearly)
        .map_err(|e| e.to_string())?;
    let settings = crate::DocumentSettings {
        number_format: yearly.clone(),
        ..Default::default()
    };
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(stored_subscription(&store, tenant, &plan, day(2026, 11, 1)?).await?);
    }
    // Nov 2026, Dec 2026, Jan 2027, Feb 2027 for the first, in one commit.
    let first = crate::bill_due(&subs[0], &plan, &[], day(2027, 2, 1)?, &settings).map_err(err)?;
    ensure!(
        first
            .invoices
            .iter()
            .all(|i| i.number_format.as_ref() == Some(&yearly)),
        "the invoices do not carry the tenant's format"
    );
    let result = store
        .commit(tenant, BillingCommit::from(first))
        .await
        .map_err(err)?;
    let numbers: Vec<u64> = result.issued.iter().map(|i| i.number.0).collect();
    ensure!(
        numbers == [1, 2, 1, 2],
        "a yearly format did not start again in January: {numbers:?}"
    );
    let texts: Vec<Option<String>> = {
        let mut texts = Vec::new();
        for issued in &result.issued {
            let stored = store.invoice(tenant, issued.id).await.map_err(err)?;
            texts.push(stored.and_then(|i| i.number_text()));
        }
        texts
    };
    ensure!(
        texts
            == ["F/2026-0001", "F/2026-0002", "F/2027-0001", "F/2027-0002"]
                .map(|t| Some(t.to_owned())),
        "numbers are not written with the format: {texts:?}"
    );
    // The other two in one batch: each year's sequence goes on where it was, in commit order.
    let batch = subs[1..]
        .iter()
        .map(|sub| {
            crate::bill_due(sub, &plan, &[], day(2027, 1, 1)?, &settings)
                .map(BillingCommit::from)
                .map_err(err)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let results = store.commit_batch(tenant, batch).await.map_err(err)?;
    let mut numbers = Vec::new();
    for result in results {
        let result = result.map_err(err)?;
        for issued in result.issued {
            numbers.push((issued.issue_date.format("%Y").to_string(), issued.number.0));
        }
    }
    let expected: Vec<(String, u64)> = [
        ("2026", 3),
        ("2026", 4),
        ("2027", 3),
        ("2026", 5),
        ("2026", 6),
        ("2027", 4),
    ]
    .map(|(y, n)| (y.to_owned(), n))
    .to_vec();
    ensure!(
        numbers == expected,
        "batch numbers are not per year and gapless: {numbers:?}"
    );
    // A default-format invoice of the same tenant keeps the default sequence.
    let plain = first_invoice_billed(&store, tenant, &plan, &Default::default()).await?;
    ensure!(
        (plain.number_format.is_none(), plain.number_text()) == (true, Some("000001".to_owned())),
        "a default-format invoice did not take the default sequence: {plain:?}"
    );
    // A format that differs from the default only in its padding continues the default
    // sequence: its numbers read like the default's, so a new sequence would repeat them.
    let wide = crate::DocumentSettings {
        number_format: crate::InvoiceNumberFormat::new("", 8, crate::NumberReset::Never)
            .map_err(|e| e.to_string())?,
        ..Default::default()
    };
    let widened = first_invoice_billed(&store, tenant, &plan, &wide).await?;
    ensure!(
        widened.number_text() == Some("00000002".to_owned()),
        "a padding-only format did not continue the default sequence: {widened:?}"
    );
    Ok(())
}

/// A new customer's subscription to `plan` from `start`, stored.
async fn stored_subscription<S: BillingStore>(
    store: &S,
    tenant: TenantId,
    plan: &Plan,
    start: NaiveDate,
) -> Result<crate::Subscription, String> {
    let sub = NewSubscription::new(CustomerId::new(), plan.id, Currency::USD, start)
        .create(plan, Currency::USD)
        .map_err(err)?;
    store
        .insert_subscription(tenant, sub.clone(), Vec::new())
        .await
        .map_err(err)?;
    Ok(sub)
}

/// The first invoice of a new subscription from 1 January 2027, billed that day with
/// `settings` and committed, as stored.
async fn first_invoice_billed<S: BillingStore>(
    store: &S,
    tenant: TenantId,
    plan: &Plan,
    settings: &crate::DocumentSettings,
) -> Result<crate::Invoice, String> {
    let on = day(2027, 1, 1)?;
    let sub = stored_subscription(store, tenant, plan, on).await?;
    let billed = crate::bill_due(&sub, plan, &[], on, settings).map_err(err)?;
    let result = store
        .commit(tenant, BillingCommit::from(billed))
        .await
        .map_err(err)?;
    let issued = result.issued.first().ok_or("nothing issued")?;
    store
        .invoice(tenant, issued.id)
        .await
        .map_err(err)?
        .ok_or_else(|| "the issued invoice is not stored".to_owned())
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
    setup_with(store, BillingSettings::default()).await
}

/// [`setup`] with `settings`.
async fn setup_with<S: BillingStore>(
    store: S,
    settings: BillingSettings,
) -> Result<(BillingService<S, FixedClock>, TenantId, CustomerId, Plan), String> {
    let service = BillingService::new(store, clock(), settings);
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

/// A credit of `minor` USD cents on an invoice's first line.
fn first_line_credit(minor: i64) -> CreditRequest {
    CreditRequest::Lines(vec![CreditNoteLine {
        line: 0,
        amount: Money::from_minor(minor, Currency::USD),
    }])
}

/// Subscribes `customer` to `plan` from 1 April 2026 and bills that day: the first invoice.
async fn first_april_invoice<S: BillingStore>(
    service: &BillingService<S, FixedClock>,
    tenant: TenantId,
    customer: CustomerId,
    plan: &Plan,
) -> Result<crate::Invoice, String> {
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
    store_invoices(service, tenant, customer)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| "no invoice issued".to_owned())
}

async fn credit_notes_never_over_credit<S: BillingStore>(store: S) -> Result<(), String> {
    let (service, tenant, customer, plan) = setup(store).await?;
    let invoice = &first_april_invoice(&service, tenant, customer, &plan).await?;
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
        .credit(tenant, invoice.id, first_line_credit(1000), None)
        .await
        .map_err(err)?;
    ensure!(note.total == part, "partial credit total {:?}", note.total);
    let too_much = service
        .credit(tenant, invoice.id, first_line_credit(2001), None)
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

/// The tenant's credit-note number format: notes carry it, are numbered in a sequence of their
/// own (not the invoices', whatever their format) and read back written with it; a note in the
/// default format takes the default credit-note sequence.
async fn credit_notes_follow_their_own_number_format<S: BillingStore>(
    store: S,
) -> Result<(), String> {
    let invoices = crate::InvoiceNumberFormat::new("INV-", 4, crate::NumberReset::Yearly)
        .map_err(|e| e.to_string())?;
    let notes = crate::InvoiceNumberFormat::new("CN-", 4, crate::NumberReset::Yearly)
        .map_err(|e| e.to_string())?;
    let (service, tenant, customer, plan) = setup_with(
        store,
        BillingSettings::default()
            .with_number_format(invoices.clone())
            .with_credit_note_number_format(notes.clone()),
    )
    .await?;
    let invoice = first_april_invoice(&service, tenant, customer, &plan).await?;
    ensure!(
        invoice.number_text().as_deref() == Some("INV-2026-0001"),
        "the invoice is {:?}",
        invoice.number_text()
    );
    let part = first_line_credit;
    let mut texts = Vec::new();
    for minor in [500, 700] {
        let (note, events) = service
            .credit(tenant, invoice.id, part(minor), None)
            .await
            .map_err(err)?;
        // The returned event carries the number the store gave the note.
        ensure!(
            matches!(
                events.as_slice(),
                [DomainEvent { payload: crate::BillingEvent::CreditNoteIssued { number, .. }, .. }]
                    if *number == note.number && number.is_some()
            ),
            "the event does not carry the note's number: {events:?}"
        );
        ensure!(
            note.number_format.as_ref() == Some(&notes),
            "the note does not carry the tenant's format: {:?}",
            note.number_format
        );
        texts.push(note.number_text());
    }
    // The default format: the default credit-note sequence, apart from the formatted one.
    let earlier = service
        .store()
        .credit_notes_of(tenant, invoice.id)
        .await
        .map_err(err)?;
    let unformatted = crate::credit_note(
        dotmac_core::CreditNoteId::new(),
        &invoice,
        &earlier,
        &part(300),
        day(2026, 4, 1)?,
        None,
    )
    .map_err(err)?;
    let default_note = service
        .store()
        .insert_credit_note(tenant, unformatted, Vec::new())
        .await
        .map_err(err)?;
    texts.push(default_note.number_text());
    ensure!(
        texts == ["CN-2026-0001", "CN-2026-0002", "000001"].map(|t| Some(t.to_owned())),
        "credit notes are not numbered in their own sequences: {texts:?}"
    );
    let stored: Vec<Option<String>> = service
        .store()
        .credit_notes_of(tenant, invoice.id)
        .await
        .map_err(err)?
        .iter()
        .map(crate::CreditNote::number_text)
        .collect();
    ensure!(
        stored == texts,
        "stored notes read back as {stored:?}, not {texts:?}"
    );
    // Notes took no invoice number: the next invoice of the format is the second.
    service
        .run_bill(tenant, day(2026, 5, 1)?)
        .await
        .map_err(err)?;
    let second = store_invoices(&service, tenant, customer)
        .await?
        .into_iter()
        .map(|i| i.number_text())
        .collect::<Vec<_>>();
    ensure!(
        second == ["INV-2026-0001", "INV-2026-0002"].map(|t| Some(t.to_owned())),
        "invoices after the notes are {second:?}"
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

/// A subscription cancelled at its period end: usage rated in arrears on the day it ends goes
/// on a closing invoice from the run that ends it, and a fee added once it has ended is
/// invoiced at once (no bill run would take it), once however often it is added.
/// What [`InvoiceStore::billed_usage`](crate::InvoiceStore::billed_usage) answers, however
/// the store finds it: the usage lines and usage charges of the subscriptions asked for, of
/// periods from `since` on, invoiced or still pending, and nothing else (another
/// subscription's, an earlier period's, a fee's); the same as reading every invoice and
/// pending charge of the customers.
async fn billed_usage_is_read_by_subscription_and_period<S: BillingStore>(
    store: S,
) -> Result<(), String> {
    use crate::PriceRef;
    use crate::store::BilledUsage;
    use dotmac_core::Period;
    let (service, tenant, customer, plan) = setup(store).await?;
    let other = CustomerId::new();
    service
        .save_account(tenant, CustomerAccount::new(other, Currency::USD))
        .await
        .map_err(err)?;
    let mut subs = Vec::new();
    for who in [customer, customer, other] {
        let (sub, _) = service
            .subscribe(
                tenant,
                NewSubscription::new(who, plan.id, Currency::USD, day(2026, 3, 1)?),
            )
            .await
            .map_err(err)?;
        subs.push(sub.id);
    }
    let [home, shop, others] = [subs[0], subs[1], subs[2]];
    service
        .run_bill(tenant, day(2026, 3, 1)?)
        .await
        .map_err(err)?;
    let price = PriceRef {
        plan: plan.id,
        version: 1,
        charge: 7,
    };
    let period = |m: u32| -> Result<Period, String> {
        Period::new(day(2026, m, 1)?, day(2026, m + 1, 1)?).map_err(|e| e.to_string())
    };
    let usage = |who, sub, id, kind, cents, month: u32| -> Result<PendingCharge, String> {
        Ok(PendingCharge {
            subscription: Some(sub),
            kind,
            text: Some("usage".into()),
            period: Some(period(month)?),
            price: Some(price),
            ..charge(who, id, cents, day(2026, 4, 1)?)
        })
    };
    let charges = [
        usage(customer, home, 81, LineKind::Usage, 450, 3)?,
        usage(customer, home, 82, LineKind::UsageAdjustment, -50, 3)?,
        // An earlier period than asked: left out.
        usage(customer, home, 83, LineKind::Usage, 700, 2)?,
        usage(customer, shop, 84, LineKind::Usage, 120, 3)?,
        // A fee on the subscription, and another customer's usage: left out.
        PendingCharge {
            subscription: Some(home),
            period: Some(period(3)?),
            ..charge(customer, 85, 500, day(2026, 4, 1)?)
        },
        usage(other, others, 86, LineKind::Usage, 990, 3)?,
    ];
    for c in charges {
        service.add_pending_charge(tenant, c).await.map_err(err)?;
    }
    // The April run invoices them all; April's usage stays pending.
    service
        .run_bill(tenant, day(2026, 4, 1)?)
        .await
        .map_err(err)?;
    service
        .add_pending_charge(tenant, usage(customer, home, 87, LineKind::Usage, 30, 4)?)
        .await
        .map_err(err)?;
    let store = service.store();
    let invoiced = store
        .invoices_of(tenant, customer)
        .await
        .map_err(err)?
        .iter()
        .flat_map(BilledUsage::of_invoice)
        .count();
    ensure!(invoiced == 4, "{invoiced} usage lines invoiced, not 4");
    let key = |b: &BilledUsage| {
        (
            b.subscription,
            b.period.start(),
            format!("{:?}", b.kind),
            b.unit_price.amount(),
            b.quantity,
        )
    };
    let asked = [(customer, home), (customer, shop)];
    let mut got = store
        .billed_usage(tenant, &asked, day(2026, 3, 1)?)
        .await
        .map_err(err)?;
    got.sort_by_key(key);
    // The same, read the long way: every invoice and pending charge of the customer.
    let mut want: Vec<BilledUsage> = store
        .invoices_of_customers(tenant, &[customer])
        .await
        .map_err(err)?
        .iter()
        .flat_map(BilledUsage::of_invoice)
        .chain(
            store
                .pending_charges_for(tenant, &[customer])
                .await
                .map_err(err)?
                .iter()
                .filter_map(BilledUsage::of_charge),
        )
        .filter(|b| b.period.start() >= day(2026, 3, 1).unwrap_or_default())
        .collect();
    want.sort_by_key(key);
    ensure!(
        got == want,
        "billed usage {got:?}, reading everything {want:?}"
    );
    // And exactly these: March's usage and adjustment of home, April's pending usage of
    // home, March's usage of shop.
    let mut listed: Vec<_> = got
        .iter()
        .map(|b| (b.subscription, b.period, b.kind, b.unit_price))
        .collect();
    let mut expected = vec![
        (
            home,
            period(3)?,
            LineKind::Usage,
            Money::from_minor(450, Currency::USD),
        ),
        (
            home,
            period(3)?,
            LineKind::UsageAdjustment,
            Money::from_minor(-50, Currency::USD),
        ),
        (
            home,
            period(4)?,
            LineKind::Usage,
            Money::from_minor(30, Currency::USD),
        ),
        (
            shop,
            period(3)?,
            LineKind::Usage,
            Money::from_minor(120, Currency::USD),
        ),
    ];
    let order = |x: &(SubscriptionId, Period, LineKind, Money)| {
        (x.0, x.1.start(), format!("{:?}", x.2), x.3.amount())
    };
    listed.sort_by_key(order);
    expected.sort_by_key(order);
    ensure!(
        listed == expected,
        "billed usage {listed:?}, expected {expected:?}"
    );
    ensure!(
        store
            .billed_usage(tenant, &[], day(2026, 3, 1)?)
            .await
            .map_err(err)?
            .is_empty(),
        "usage billed for no subscription"
    );
    Ok(())
}

async fn an_ended_subscription_leaves_no_charge_unbilled<S: BillingStore>(
    store: S,
) -> Result<(), String> {
    let (service, tenant, customer, plan) = setup(store).await?;
    let (sub, _) = service
        .subscribe(
            tenant,
            NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 3, 1)?),
        )
        .await
        .map_err(err)?;
    service
        .run_bill(tenant, day(2026, 3, 1)?)
        .await
        .map_err(err)?;
    service
        .cancel_subscription(
            tenant,
            sub.id,
            day(2026, 3, 10)?,
            CancelTiming::EndOfPeriod,
            ProrationBehavior::None,
        )
        .await
        .map_err(err)?;
    let usage = PendingCharge {
        subscription: Some(sub.id),
        kind: LineKind::Usage,
        text: Some("download_gb: 120 over".into()),
        ..charge(customer, 71, 450, day(2026, 4, 1)?)
    };
    ensure!(
        service
            .add_pending_charge(tenant, usage.clone())
            .await
            .map_err(err)?,
        "the usage charge was not added"
    );
    let run = service
        .run_bill(tenant, day(2026, 4, 1)?)
        .await
        .map_err(err)?;
    ensure!(run.invoices == 1, "the closing run issued {}", run.invoices);
    let ended = service
        .store()
        .subscription(tenant, sub.id)
        .await
        .map_err(err)?
        .ok_or("subscription gone")?;
    ensure!(
        ended.status == crate::SubscriptionStatus::Ended,
        "the subscription is {:?}",
        ended.status
    );
    let invoices = store_invoices(&service, tenant, customer).await?;
    let closing = invoices
        .iter()
        .find(|i| {
            i.key
                == DocumentKey::Closing {
                    subscription: sub.id,
                }
        })
        .ok_or("no closing invoice")?;
    ensure!(
        closing.total == Money::from_minor(450, Currency::USD)
            && closing.issue_date == day(2026, 4, 1)?,
        "closing invoice {} on {}",
        closing.total,
        closing.issue_date
    );
    // A late fee once nothing bills: invoiced on its own at once; added again, nothing new.
    let fee = charge(customer, 72, 500, day(2026, 4, 1)?);
    for _ in 0..2 {
        service
            .add_pending_charge(tenant, fee.clone())
            .await
            .map_err(err)?;
    }
    let invoices = store_invoices(&service, tenant, customer).await?;
    let totals: Vec<i64> = invoices
        .iter()
        .map(|i| i.total.to_minor().unwrap_or(i64::MIN))
        .collect();
    ensure!(
        totals == [3000, 450, 500],
        "invoices after the fee: {totals:?}"
    );
    let left = service
        .store()
        .pending_charges(tenant, customer)
        .await
        .map_err(err)?;
    ensure!(left.is_empty(), "still pending: {left:?}");
    // A customer with no subscription yet keeps a charge for the first invoice.
    let newcomer = CustomerId::new();
    service
        .save_account(tenant, CustomerAccount::new(newcomer, Currency::USD))
        .await
        .map_err(err)?;
    let installation = charge(newcomer, 73, 9900, day(2026, 4, 1)?);
    service
        .add_pending_charge(tenant, installation.clone())
        .await
        .map_err(err)?;
    let kept = service
        .store()
        .pending_charges(tenant, newcomer)
        .await
        .map_err(err)?;
    ensure!(kept == [installation], "the newcomer's charge: {kept:?}");
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
    let lines = first_line_credit;
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

// --- the outbox, invoice settlements and suspensions (issue 11) ---

/// The tenant's outbox events.
async fn events_of<S, R: ReadOutbox<S>>(
    outbox: &R,
    store: &S,
    tenant: TenantId,
) -> Result<Vec<StoredEvent>, String> {
    outbox.read(store, tenant).await
}

/// The names of `events`, in order.
fn names(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// The names of events a call returned.
fn event_names(events: &[DomainEvent<crate::BillingEvent>]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| dotmac_core::EventPayload::event_type(&e.payload))
        .collect()
}

/// Checks that the outbox holds exactly `returned` (the events a service call returned) after
/// `before`: same ids, names and payloads, in order.
fn wrote_exactly(
    what: &str,
    before: &[StoredEvent],
    after: &[StoredEvent],
    returned: &[DomainEvent<crate::BillingEvent>],
) -> Result<(), String> {
    let new = after.get(before.len()..).unwrap_or_default();
    ensure!(
        after.get(..before.len()) == Some(before),
        "{what}: the outbox lost or changed earlier events"
    );
    let expected: Vec<StoredEvent> = returned
        .iter()
        .map(|e| {
            Ok(StoredEvent {
                id: e.id,
                event_type: dotmac_core::EventPayload::event_type(&e.payload).to_owned(),
                payload: serde_json::to_value(&e.payload).map_err(|e| e.to_string())?,
            })
        })
        .collect::<Result<_, String>>()?;
    ensure!(
        new == expected.as_slice(),
        "{what}: the outbox holds {:?}, the call returned {:?}",
        names(new),
        names(&expected)
    );
    Ok(())
}

/// `add_pending_charges` of more charges than one SQL statement writes (2,500): a charge
/// stored before, in the middle, and a charge repeated two statements later are skipped, and
/// every other one is added, in the batch's order.
async fn a_large_batch_of_charges_is_added_once_each<S: BillingStore>(
    store: S,
) -> Result<(), String> {
    let tenant = TenantId::new();
    let customer = CustomerId::new();
    let on = day(2026, 1, 10)?;
    let stored = charge(customer, 1_500, 100, on);
    store
        .add_pending_charge(tenant, stored.clone(), Vec::new())
        .await
        .map_err(err)?;
    let mut batch: Vec<(PendingCharge, Vec<OutboxEvent>)> = (0..2_500u128)
        .map(|n| (charge(customer, n, 100, on), Vec::new()))
        .collect();
    // The 2,401st is the 11th again, two statements of 1,000 later.
    batch[2_400] = (charge(customer, 10, 100, on), Vec::new());
    let added = store
        .add_pending_charges(tenant, batch)
        .await
        .map_err(err)?;
    let skipped: Vec<usize> = added
        .iter()
        .enumerate()
        .filter(|(_, added)| !**added)
        .map(|(n, _)| n)
        .collect();
    ensure!(
        added.len() == 2_500 && skipped == [1_500, 2_400],
        "skipped {skipped:?} of {}",
        added.len()
    );
    let pending = store.pending_charges(tenant, customer).await.map_err(err)?;
    ensure!(
        pending.len() == 2_499 && pending[0].id == stored.id,
        "{} pending, the first {:?}",
        pending.len(),
        pending.first().map(|c| c.id)
    );
    Ok(())
}

/// `add_pending_charges`: a charge already pending, one already invoiced and one repeated in
/// the batch are not added again and their events are not written; the new ones are, with
/// theirs.
async fn batched_charges_write_only_the_new_ones_and_their_events<
    S: BillingStore,
    R: ReadOutbox<S>,
>(
    store: S,
    outbox: &R,
) -> Result<(), String> {
    let tenant = TenantId::new();
    let customer = CustomerId::new();
    let on = day(2026, 1, 10)?;
    let (pending, invoiced) = (charge(customer, 11, 100, on), charge(customer, 12, 200, on));
    for fee in [&pending, &invoiced] {
        store
            .add_pending_charge(tenant, fee.clone(), Vec::new())
            .await
            .map_err(err)?;
    }
    store
        .commit(
            tenant,
            BillingCommit {
                consumed_pending: vec![invoiced.id],
                ..BillingCommit::default()
            },
        )
        .await
        .map_err(err)?;
    let event = |n: u128| {
        let payload = crate::BillingEvent::BillRunItemFailed {
            customer,
            subscription: None,
            error_kind: format!("test.{n}"),
            error: String::new(),
        };
        let id = EventId::from_u128(n);
        (
            id,
            OutboxEvent::new(DomainEvent::at(id, tenant, clock().now(), payload)),
        )
    };
    let fresh = [charge(customer, 13, 300, on), charge(customer, 14, 400, on)];
    let batch = vec![
        (fresh[0].clone(), vec![event(1).1]),
        (pending.clone(), vec![event(2).1]),
        (invoiced.clone(), vec![event(3).1]),
        (fresh[1].clone(), vec![event(4).1]),
        // The same charge twice in one batch: added once, its second events not written.
        (fresh[0].clone(), vec![event(5).1]),
    ];
    let added = store
        .add_pending_charges(tenant, batch)
        .await
        .map_err(err)?;
    ensure!(
        added == [true, false, false, true, false],
        "added {added:?}"
    );
    let ids: Vec<EventId> = events_of(outbox, &store, tenant)
        .await?
        .iter()
        .map(|e| e.id)
        .collect();
    ensure!(ids == [event(1).0, event(4).0], "the outbox holds {ids:?}");
    let left: Vec<PendingChargeId> = store
        .pending_charges(tenant, customer)
        .await
        .map_err(err)?
        .iter()
        .map(|c| c.id)
        .collect();
    ensure!(
        left == [pending.id, fresh[0].id, fresh[1].id],
        "pending after the batch: {left:?}"
    );
    ensure!(
        store
            .add_pending_charges(tenant, Vec::new())
            .await
            .map_err(err)?
            .is_empty(),
        "an empty batch added something"
    );
    Ok(())
}

async fn commits_write_their_events_atomically<S: BillingStore, R: ReadOutbox<S>>(
    store: S,
    outbox: &R,
) -> Result<(), String> {
    use dotmac_core::outbox::OutboxEvent;
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
        crate::bill_due(&sub, &plan, &[], day(2026, 2, 1)?, &Default::default()).map_err(err)?;
    let at = dotmac_core::Clock::now(&clock());
    let marker = |n: u128| {
        OutboxEvent::new(DomainEvent::at(
            EventId::from_u128(n),
            tenant,
            at,
            crate::BillingEvent::SubscriptionStatusChanged {
                subscription: sub.id,
                customer,
                from: crate::SubscriptionStatus::Active,
                to: crate::SubscriptionStatus::PastDue,
            },
        ))
    };
    // A stale commit is refused and writes no event, not even its own.
    let mut stale = out.subscription.clone();
    stale.revision += 3;
    let refused = store
        .commit(
            tenant,
            BillingCommit {
                subscription: Some(stale),
                invoices: out.invoices.clone(),
                events: vec![marker(1)],
                issued_at: Some(at),
                ..BillingCommit::default()
            },
        )
        .await;
    ensure!(
        matches!(refused, Err(BillingError::ConcurrentUpdate { .. })),
        "a stale commit was accepted: {refused:?}"
    );
    ensure!(
        events_of(outbox, &store, tenant).await?.is_empty(),
        "a refused commit wrote events"
    );
    // An accepted one writes its events and one `invoice_issued` per document, numbered.
    let done = store
        .commit(
            tenant,
            BillingCommit {
                subscription: Some(out.subscription.clone()),
                invoices: out.invoices.clone(),
                events: vec![marker(2)],
                issued_at: Some(at),
                ..BillingCommit::default()
            },
        )
        .await
        .map_err(err)?;
    let events = events_of(outbox, &store, tenant).await?;
    ensure!(
        names(&events)
            == [
                "billing.subscription_status_changed",
                "billing.invoice_issued",
                "billing.invoice_issued"
            ],
        "the commit wrote {:?}",
        names(&events)
    );
    for (issued, event) in done.issued.iter().zip(events.iter().skip(1)) {
        let expected = crate::internal::invoice_issued_event(tenant, at, issued);
        ensure!(
            event.id == expected.id
                && event.payload
                    == serde_json::to_value(&expected.payload).map_err(|e| e.to_string())?,
            "invoice_issued of {} is {:?}",
            issued.id,
            event.payload
        );
        ensure!(
            event.payload.get("number") == Some(&serde_json::json!(issued.number.0))
                && event.payload.get("issued")
                    == Some(&serde_json::json!(issued.issue_date.to_string())),
            "invoice_issued carries no number or issue date: {:?}",
            event.payload
        );
    }
    // The same documents again are duplicates: no event.
    store
        .commit(
            tenant,
            BillingCommit {
                invoices: out.invoices.clone(),
                issued_at: Some(at),
                ..BillingCommit::default()
            },
        )
        .await
        .map_err(err)?;
    ensure!(
        events_of(outbox, &store, tenant).await?.len() == 3,
        "duplicate documents wrote events"
    );
    // In a batch, a refused commit writes none of its events, the others all of theirs.
    let current = store
        .subscription(tenant, sub.id)
        .await
        .map_err(err)?
        .ok_or("the subscription is gone")?;
    let results = store
        .commit_batch(
            tenant,
            vec![
                BillingCommit {
                    subscription: Some(out.subscription.clone()),
                    events: vec![marker(3)],
                    ..BillingCommit::default()
                },
                BillingCommit {
                    subscription: Some(current),
                    events: vec![marker(4)],
                    ..BillingCommit::default()
                },
            ],
        )
        .await
        .map_err(err)?;
    ensure!(
        matches!(
            results.first(),
            Some(Err(BillingError::ConcurrentUpdate { .. }))
        ) && matches!(results.get(1), Some(Ok(_))),
        "the batch gave {results:?}"
    );
    let events = events_of(outbox, &store, tenant).await?;
    let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    ensure!(
        ids.len() == 4
            && ids.contains(&EventId::from_u128(4))
            && !ids.contains(&EventId::from_u128(3)),
        "the batch wrote {ids:?}"
    );
    // Another tenant's outbox is its own.
    ensure!(
        events_of(outbox, &store, TenantId::new()).await?.is_empty(),
        "events leaked to another tenant"
    );
    Ok(())
}

async fn every_service_change_writes_its_events<S: BillingStore, R: ReadOutbox<S>>(
    store: S,
    outbox: &R,
) -> Result<(), String> {
    let service = BillingService::new(store, clock(), BillingSettings::default());
    let tenant = TenantId::new();
    let product = Product {
        id: ProductId::new(),
        name: "Broadband".into(),
    };
    let plan = monthly_plan(PlanId::new(), product.id, 3000)?;
    service.add_product(tenant, product).await.map_err(err)?;
    let store = service.store();
    let mut seen = events_of(outbox, store, tenant).await?;
    macro_rules! step {
        ($what:expr, $events:expr) => {{
            let after = events_of(outbox, store, tenant).await?;
            wrote_exactly($what, &seen, &after, &$events)?;
            seen = after;
        }};
    }
    let events = service.save_plan(tenant, plan.clone()).await.map_err(err)?;
    step!("save_plan", events);
    let customer = CustomerId::new();
    service
        .save_account(tenant, CustomerAccount::new(customer, Currency::USD))
        .await
        .map_err(err)?;
    let (sub, events) = service
        .subscribe(
            tenant,
            NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 3, 1)?),
        )
        .await
        .map_err(err)?;
    step!("subscribe", events);
    let run = service
        .run_bill(tenant, day(2026, 4, 1)?)
        .await
        .map_err(err)?;
    ensure!(run.invoices == 2, "the bill run issued {}", run.invoices);
    step!("run_bill", run.events);
    let invoice = store_invoices(&service, tenant, customer)
        .await?
        .into_iter()
        .next()
        .ok_or("no invoice")?;
    // A refused credit note writes no event.
    let over = service
        .credit(
            tenant,
            invoice.id,
            CreditRequest::Lines(vec![CreditNoteLine {
                line: 0,
                amount: Money::from_minor(999_999, Currency::USD),
            }]),
            None,
        )
        .await;
    ensure!(
        matches!(over, Err(BillingError::CreditExceedsLine { .. })),
        "an over-credit was accepted: {over:?}"
    );
    step!("a refused credit note", Vec::new());
    let (note, events) = service
        .issue_credit_note(
            tenant,
            crate::CreditNoteRequest::new(
                invoice.id,
                CreditRequest::Lines(vec![CreditNoteLine {
                    line: 0,
                    amount: Money::from_minor(500, Currency::USD),
                }]),
            )
            .settlement(crate::CreditSettlement::Refund)
            .idempotency_key(key("note-1")?),
        )
        .await
        .map_err(err)?;
    step!("issue_credit_note", events);
    let payload = &seen.last().ok_or("no event")?.payload;
    ensure!(
        payload.get("customer") == Some(&serde_json::json!(customer))
            && payload.get("amount").is_some()
            && payload.get("settlement") == Some(&serde_json::json!("refund"))
            && payload.get("issued") == Some(&serde_json::json!(note.issue_date.to_string()))
            && payload.get("number").is_some()
            && payload.get("number")
                == serde_json::to_value(note.number.ok_or("the note has no number")?)
                    .ok()
                    .as_ref(),
        "credit_note_issued is {payload:?}"
    );
    // The same key again replays: no event.
    let (_, events) = service
        .issue_credit_note(
            tenant,
            crate::CreditNoteRequest::new(
                invoice.id,
                CreditRequest::Lines(vec![CreditNoteLine {
                    line: 0,
                    amount: Money::from_minor(500, Currency::USD),
                }]),
            )
            .settlement(crate::CreditSettlement::Refund)
            .idempotency_key(key("note-1")?),
        )
        .await
        .map_err(err)?;
    ensure!(events.is_empty(), "a replayed credit note raised events");
    step!("a replayed credit note", events);
    let (_, events) = service
        .change_subscription(
            tenant,
            sub.id,
            crate::SubscriptionChange::Quantity {
                quantity: Decimal::TWO,
            },
            day(2026, 4, 1)?,
            crate::ChangeTiming::Immediate,
            ProrationBehavior::InvoiceNow,
        )
        .await
        .map_err(err)?;
    step!("change_subscription", events);
    let events = service
        .set_subscription_status(tenant, sub.id, crate::SubscriptionStatus::PastDue)
        .await
        .map_err(err)?;
    step!("set_subscription_status", events);
    let (_, events) = service
        .set_invoice_status(tenant, invoice.id, InvoiceStatus::Paid)
        .await
        .map_err(err)?;
    step!("set_invoice_status", events);
    ensure!(
        seen.iter()
            .all(|e| e.payload.get("customer").is_some() || e.event_type == "billing.plan_saved"),
        "an event names no customer"
    );
    Ok(())
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

/// The ledger's report, as of its position `seq`, of an invoice of `total` with `settled` and
/// `credited`.
fn balance(
    seq: u64,
    total: i64,
    settled: i64,
    credited: i64,
    state: InvoiceStatus,
) -> crate::BalanceUpdate {
    crate::BalanceUpdate {
        settled: usd(settled),
        credited: usd(credited),
        written_off: usd(0),
        open: usd(total - settled - credited),
        state,
        ledger_sequence: seq,
    }
}

async fn invoice_statuses_and_settlements_round_trip<S: BillingStore, R: ReadOutbox<S>>(
    store: S,
    outbox: &R,
) -> Result<(), String> {
    let (service, tenant, customer, plan) = setup(store).await?;
    for start in [day(2026, 3, 1)?, day(2026, 3, 1)?] {
        service
            .subscribe(
                tenant,
                NewSubscription::new(customer, plan.id, Currency::USD, start),
            )
            .await
            .map_err(err)?;
    }
    service
        .run_bill(tenant, day(2026, 3, 1)?)
        .await
        .map_err(err)?;
    let invoices = store_invoices(&service, tenant, customer).await?;
    let (Some(first), Some(second)) = (invoices.first(), invoices.get(1)) else {
        return Err(format!("expected 2 invoices, got {}", invoices.len()));
    };
    ensure!(
        first.total == usd(3000) && second.total == usd(3000),
        "totals are {:?} and {:?}",
        first.total,
        second.total
    );
    let store = service.store();
    let stored = |id| async move {
        store
            .invoice(tenant, id)
            .await
            .map_err(err)?
            .ok_or_else(|| format!("invoice {id} is gone"))
    };
    let mut seen = events_of(outbox, store, tenant).await?;
    // Partly paid, then the customer's credit shown as a line.
    let (part, events) = service
        .apply_balance(
            tenant,
            first.id,
            balance(1, 3000, 1000, 0, InvoiceStatus::PartiallyPaid),
        )
        .await
        .map_err(err)?;
    let after = events_of(outbox, store, tenant).await?;
    wrote_exactly("apply_balance", &seen, &after, &events)?;
    seen = after;
    ensure!(
        event_names(&events) == ["billing.invoice_status_changed"]
            && part.status == InvoiceStatus::PartiallyPaid
            && part.amount_paid() == usd(1000)
            && part.amount_due().map_err(err)? == usd(2000),
        "apply_balance gave {part:?} and {:?}",
        event_names(&events)
    );
    ensure!(
        stored(first.id).await? == part,
        "the partly paid invoice did not round-trip"
    );
    let (again, events) = service
        .apply_balance(
            tenant,
            first.id,
            balance(1, 3000, 1000, 0, InvoiceStatus::PartiallyPaid),
        )
        .await
        .map_err(err)?;
    ensure!(
        events.is_empty() && again == part,
        "a replayed balance changed something"
    );
    let line = crate::AdjustmentId::from_u128(77);
    let (credited, events) = service
        .apply_credit(tenant, first.id, usd(400), day(2026, 3, 2)?, line)
        .await
        .map_err(err)?;
    ensure!(
        events.is_empty()
            && credited.credit_applied() == usd(400)
            && credited.adjustments().len() == 1
            && credited.total == first.total
            && credited.lines == first.lines,
        "apply_credit gave {credited:?}"
    );
    let (replayed, _) = service
        .apply_credit(tenant, first.id, usd(400), day(2026, 3, 2)?, line)
        .await
        .map_err(err)?;
    ensure!(
        replayed == credited && stored(first.id).await? == credited,
        "the applied credit did not round-trip once: {replayed:?}"
    );
    let listed = store_invoices(&service, tenant, customer).await?;
    ensure!(
        listed.contains(&credited),
        "invoices_of does not show the settlement"
    );
    // Bad input: refused with its error, nothing changed, no event.
    let mut wrong = balance(1, 3000, 1000, 0, InvoiceStatus::PartiallyPaid);
    wrong.open = usd(1);
    let refused = service.apply_balance(tenant, first.id, wrong).await;
    ensure!(
        refused
            == Err(BillingError::InvalidBalance {
                invoice: first.id,
                reason: "open is not the total less what is settled, credited and written off",
            }),
        "a wrong balance gave {refused:?}"
    );
    let refused = service
        .void_invoice(tenant, first.id, day(2026, 3, 3)?)
        .await;
    ensure!(
        refused
            == Err(BillingError::IllegalInvoiceTransition {
                from: InvoiceStatus::PartiallyPaid,
                to: InvoiceStatus::Void,
            }),
        "a partly paid invoice was voided: {refused:?}"
    );
    let refused = service
        .apply_credit(
            tenant,
            first.id,
            Money::from_minor(100, Currency::EUR),
            day(2026, 3, 2)?,
            crate::AdjustmentId::from_u128(78),
        )
        .await;
    ensure!(
        refused
            == Err(BillingError::WrongCurrency {
                what: "credit applied",
                expected: "USD",
                got: "EUR",
            }),
        "credit in another currency gave {refused:?}"
    );
    ensure!(
        stored(first.id).await? == credited,
        "a refused call changed the invoice"
    );
    let after = events_of(outbox, store, tenant).await?;
    ensure!(after == seen, "a refused call wrote events");
    // Paid; a refund reopens it.
    let (paid, events) = service
        .apply_balance(
            tenant,
            first.id,
            balance(2, 3000, 2500, 500, InvoiceStatus::Paid),
        )
        .await
        .map_err(err)?;
    ensure!(
        paid.status == InvoiceStatus::Paid
            && paid.amount_credited() == usd(500)
            && paid.amount_due().map_err(err)? == usd(0)
            && events.len() == 1,
        "paid gave {paid:?}"
    );
    let (reopened, _) = service
        .apply_balance(
            tenant,
            first.id,
            balance(3, 3000, 0, 500, InvoiceStatus::Open),
        )
        .await
        .map_err(err)?;
    ensure!(
        reopened.status == InvoiceStatus::Open && stored(first.id).await? == reopened,
        "the refund did not reopen it: {reopened:?}"
    );
    // An invoice with nothing settled is voided once; another is written off once.
    let (void, events) = service
        .void_invoice(tenant, second.id, day(2026, 3, 3)?)
        .await
        .map_err(err)?;
    ensure!(
        void.status == InvoiceStatus::Void && events.len() == 1,
        "void gave {void:?}"
    );
    let payload = &events.first().ok_or("no event")?.payload;
    ensure!(
        matches!(payload, crate::BillingEvent::InvoiceStatusChanged { customer: c, from: InvoiceStatus::Open, to: InvoiceStatus::Void, on, .. } if *c == customer && *on == day(2026, 3, 3)?),
        "void raised {payload:?}"
    );
    let (_, events) = service
        .void_invoice(tenant, second.id, day(2026, 3, 4)?)
        .await
        .map_err(err)?;
    ensure!(events.is_empty(), "a second void raised events");
    let (written, events) = service
        .write_off_invoice(tenant, first.id, day(2026, 3, 5)?)
        .await
        .map_err(err)?;
    ensure!(
        written.status == InvoiceStatus::Uncollectible && events.len() == 1,
        "write-off gave {written:?}"
    );
    let (late, _) = service
        .apply_balance(
            tenant,
            first.id,
            balance(4, 3000, 2500, 500, InvoiceStatus::Paid),
        )
        .await
        .map_err(err)?;
    ensure!(
        late.status == InvoiceStatus::Paid
            && stored(second.id).await?.status == InvoiceStatus::Void,
        "statuses did not round-trip"
    );
    Ok(())
}

async fn suspensions_round_trip_and_bill_runs_follow_the_policy<
    S: BillingStore,
    R: ReadOutbox<S>,
>(
    store: S,
    outbox: &R,
    policy: crate::SuspensionBilling,
) -> Result<(), String> {
    use crate::{SubscriptionStatus, SuspensionBilling};
    let service = BillingService::new(
        store,
        clock(),
        BillingSettings::default().with_suspension_billing(policy),
    );
    let tenant = TenantId::new();
    let product = Product {
        id: ProductId::new(),
        name: "Broadband".into(),
    };
    // 31.00 a month, billed on the 1st: a day of March or May is 1.00.
    let plan = monthly_plan(PlanId::new(), product.id, 3100)?;
    service.add_product(tenant, product).await.map_err(err)?;
    service.save_plan(tenant, plan.clone()).await.map_err(err)?;
    let customer = CustomerId::new();
    service
        .save_account(tenant, CustomerAccount::new(customer, Currency::USD))
        .await
        .map_err(err)?;
    let (sub, _) = service
        .subscribe(
            tenant,
            NewSubscription::new(customer, plan.id, Currency::USD, day(2026, 3, 1)?),
        )
        .await
        .map_err(err)?;
    service
        .run_bill(tenant, day(2026, 3, 1)?)
        .await
        .map_err(err)?;
    let store = service.store();
    let totals = |invoices: Vec<crate::Invoice>| -> Vec<i64> {
        invoices
            .iter()
            .map(|i| i.total.to_minor().unwrap_or(i64::MIN))
            .collect()
    };
    let billed_so_far = || async { store_invoices(&service, tenant, customer).await.map(totals) };
    ensure!(
        billed_so_far().await? == [3100],
        "March was not billed once"
    );
    // Suspended on March 20: the state round-trips and the event is in the outbox.
    let seen = events_of(outbox, store, tenant).await?;
    let (suspended, events) = service
        .suspend_customer(tenant, customer, day(2026, 3, 20)?)
        .await
        .map_err(err)?;
    let after = events_of(outbox, store, tenant).await?;
    wrote_exactly("suspend_customer", &seen, &after, &events)?;
    ensure!(
        names(after.get(seen.len()..).unwrap_or_default()) == ["billing.subscription_suspended"],
        "suspension raised {:?}",
        names(&after)
    );
    let stored = store
        .subscription(tenant, sub.id)
        .await
        .map_err(err)?
        .ok_or("the subscription is gone")?;
    ensure!(
        suspended == [stored.clone()]
            && stored.status() == SubscriptionStatus::Suspended
            && stored.suspended_since() == Some(day(2026, 3, 20)?),
        "the suspension did not round-trip: {stored:?}"
    );
    // Suspending again changes nothing.
    let (again, events) = service
        .suspend_customer(tenant, customer, day(2026, 3, 21)?)
        .await
        .map_err(err)?;
    ensure!(
        again.is_empty() && events.is_empty(),
        "a second suspension did something"
    );
    ensure!(
        events_of(outbox, store, tenant).await? == after,
        "a second suspension wrote events"
    );
    // Across the period boundary.
    service
        .run_bill(tenant, day(2026, 4, 1)?)
        .await
        .map_err(err)?;
    let april = match policy {
        SuspensionBilling::KeepBilling | SuspensionBilling::CreditSuspendedDays => vec![3100, 3100],
        // No recurring charge; March 20–31 (12 days) credited.
        SuspensionBilling::PauseBilling => vec![3100, -1200],
    };
    ensure!(
        billed_so_far().await? == april,
        "April billed {:?}, expected {april:?}",
        billed_so_far().await?
    );
    // Bad input: a restore dated before the suspension, refused, nothing changed.
    let before = snapshot(store, tenant, &[customer]).await?;
    let seen = events_of(outbox, store, tenant).await?;
    refused(
        "a restore before the suspension",
        service
            .restore_customer(tenant, customer, day(2026, 3, 19)?)
            .await,
        BillingError::RestoreBeforeSuspension {
            subscription: sub.id,
            since: day(2026, 3, 20)?,
            on: day(2026, 3, 19)?,
        },
        store,
        tenant,
        &[customer],
        &before,
    )
    .await?;
    ensure!(
        events_of(outbox, store, tenant).await? == seen,
        "a refused restore wrote events"
    );
    // Restored on April 10.
    let (restored, events) = service
        .restore_customer(tenant, customer, day(2026, 4, 10)?)
        .await
        .map_err(err)?;
    let after = events_of(outbox, store, tenant).await?;
    wrote_exactly("restore_customer", &seen, &after, &events)?;
    let stored = store
        .subscription(tenant, sub.id)
        .await
        .map_err(err)?
        .ok_or("the subscription is gone")?;
    ensure!(
        restored == [stored.clone()]
            && stored.status() == SubscriptionStatus::Active
            && stored.suspended_since().is_none(),
        "the restore did not round-trip: {stored:?}"
    );
    let (again, events) = service
        .restore_customer(tenant, customer, day(2026, 4, 11)?)
        .await
        .map_err(err)?;
    ensure!(
        again.is_empty() && events.is_empty(),
        "a second restore did something"
    );
    let pending: i64 = store
        .pending_charges(tenant, customer)
        .await
        .map_err(err)?
        .iter()
        .try_fold(0i64, |sum, c| {
            let minor = c
                .unit_price
                .checked_mul(c.quantity)
                .ok()?
                .round(dotmac_core::RoundingMode::HalfUp)
                .to_minor()
                .ok()?;
            sum.checked_add(minor)
        })
        .ok_or("pending charges do not add up")?;
    let (credit, restored_invoice) = match policy {
        SuspensionBilling::KeepBilling => (0, None),
        // March 20–31 (12 of 31 days) and April 1–9 (9 of 30 days of 31.00).
        SuspensionBilling::CreditSuspendedDays => (-2130, None),
        // The rest of April (21 of 30 days of 31.00), invoiced on the restore day.
        SuspensionBilling::PauseBilling => (0, Some(2170)),
    };
    ensure!(
        pending == credit,
        "{pending} pending after the restore, expected {credit}"
    );
    let expected_names: Vec<&str> = match restored_invoice {
        Some(_) => vec!["billing.subscription_restored", "billing.invoice_issued"],
        None => vec!["billing.subscription_restored"],
    };
    ensure!(
        names(after.get(seen.len()..).unwrap_or_default()) == expected_names,
        "the restore raised {:?}",
        names(&after)
    );
    let mut expected = april.clone();
    expected.extend(restored_invoice);
    ensure!(
        billed_so_far().await? == expected,
        "after the restore: {:?}, expected {expected:?}",
        billed_so_far().await?
    );
    // May: billed as usual, with the credit.
    service
        .run_bill(tenant, day(2026, 5, 1)?)
        .await
        .map_err(err)?;
    expected.push(3100 + credit);
    ensure!(
        billed_so_far().await? == expected,
        "May: {:?}, expected {expected:?}",
        billed_so_far().await?
    );
    Ok(())
}
