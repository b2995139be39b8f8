//! The payment and dunning store behaviour suites: one set of checks each, run against every
//! [`PaymentStore`](crate::PaymentStore) and [`DunningStore`](crate::DunningStore)
//! implementation (the in-memory stores here, SQLite and PostgreSQL in `dotmac-sqlx`), so that
//! stores cannot drift apart.
//!
//! Each suite also reads what the store wrote to the outbox, through a reader given with the
//! store maker ([`outbox_events`] for a store that is an
//! [`OutboxStore`](dotmac_core::outbox::OutboxStore)).
//!
//! ```
//! # async fn demo() -> Result<(), String> {
//! use dotmac_collections::{testkit, InMemoryDunningStore, InMemoryPaymentStore};
//! testkit::run_payment_store_suite(InMemoryPaymentStore::new, testkit::outbox_events).await?;
//! testkit::run_dunning_store_suite(InMemoryDunningStore::new, |store, tenant| {
//!     testkit::outbox_events(store.outbox(), tenant)
//! })
//! .await
//! # }
//! ```
//!
//! Every check uses fresh tenant ids, so the suite may share one database with other tests.
//!
//! What the payment suite holds every store to, beyond the service's idempotency:
//!
//! * [`entries`](crate::PaymentStore::entries) returns a customer's entries in `sequence`
//!   order, whatever order the calls that appended them came in.
//! * A position is written once: an append with an entry whose `sequence` is already taken
//!   (the caller's ledger is stale: another writer appended first), or taken earlier in the
//!   same call, is refused with [`CollectionsError::AlreadyExists`] (`what` =
//!   `"ledger entry"`, `id` = `"{customer}#{sequence}"` of the first such entry) and writes
//!   nothing of the call: no entry and, for a keyed append, no key.
//! * A keyed append whose key is recorded is answered with the stored record and writes
//!   nothing, even when its entries are stale.
//! * Ledgers are per tenant and customer; keys are per tenant.
//! * The outbox events given with an append are written with its entries, in the same atomic
//!   write: a refused append (a taken position, a replayed key, an event the outbox refuses)
//!   writes no event and no entry. Every service step that changes a ledger writes exactly
//!   the events it returns; replaying a fact writes nothing.
//! * A dunning state is saved with its events in one write, the same way.

// A test suite: fixed, small figures, where plain operators are the clearest.
#![allow(clippy::arithmetic_side_effects)]

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac_billing::testkit::join2;
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{
    Currency, CustomerId, DomainEvent, EventId, FixedClock, InvoiceId, Money, TenantId,
};

use crate::{CollectionEvent, CollectionsError};

pub use dotmac_core::outbox::testkit::{OutboxRead, outbox_events};

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

fn err(e: CollectionsError) -> String {
    e.to_string()
}

fn clock() -> FixedClock {
    FixedClock::new(
        Utc.with_ymd_and_hms(2026, 4, 1, 6, 0, 0)
            .single()
            .unwrap_or_default(),
    )
}

fn key(text: &str) -> Result<crate::IdempotencyKey, String> {
    crate::IdempotencyKey::new(text).map_err(|e| e.to_string())
}

/// Runs the payment-store checks (idempotent payments and refunds, ledger validation) against
/// stores made by `make` (one per check; every check uses a fresh tenant).
///
/// # Errors
///
/// A message naming the first check that failed.
pub async fn run_payment_store_suite<P, F, R>(make: F, outbox: R) -> Result<(), String>
where
    P: crate::PaymentStore,
    F: Fn() -> P,
    R: for<'a> Fn(&'a P, TenantId) -> OutboxRead<'a>,
{
    retried_payments_and_refunds_are_written_once(make())
        .await
        .map_err(|e| format!("retried_payments_and_refunds_are_written_once: {e}"))?;
    concurrent_keyed_payments_write_once(make())
        .await
        .map_err(|e| format!("concurrent_keyed_payments_write_once: {e}"))?;
    entries_round_trip_in_sequence_order(make())
        .await
        .map_err(|e| format!("entries_round_trip_in_sequence_order: {e}"))?;
    ledgers_and_keys_are_isolated(make())
        .await
        .map_err(|e| format!("ledgers_and_keys_are_isolated: {e}"))?;
    a_stale_append_is_refused_and_writes_nothing(make())
        .await
        .map_err(|e| format!("a_stale_append_is_refused_and_writes_nothing: {e}"))?;
    entries_and_their_events_are_one_write(make(), &outbox)
        .await
        .map_err(|e| format!("entries_and_their_events_are_one_write: {e}"))?;
    every_service_step_writes_the_events_it_returns(make(), &outbox)
        .await
        .map_err(|e| format!("every_service_step_writes_the_events_it_returns: {e}"))?;
    Ok(())
}

/// Runs the dunning-store checks against stores made by `make` (one per check; every check
/// uses fresh tenants).
///
/// # Errors
///
/// A message naming the first check that failed.
pub async fn run_dunning_store_suite<D, F, R>(make: F, outbox: R) -> Result<(), String>
where
    D: crate::DunningStore,
    F: Fn() -> D,
    R: for<'a> Fn(&'a D, TenantId) -> OutboxRead<'a>,
{
    an_unknown_invoice_has_the_default_state(make())
        .await
        .map_err(|e| format!("an_unknown_invoice_has_the_default_state: {e}"))?;
    saved_states_read_back(make())
        .await
        .map_err(|e| format!("saved_states_read_back: {e}"))?;
    a_save_overwrites_the_state(make())
        .await
        .map_err(|e| format!("a_save_overwrites_the_state: {e}"))?;
    dunning_states_are_isolated_by_tenant(make())
        .await
        .map_err(|e| format!("dunning_states_are_isolated_by_tenant: {e}"))?;
    a_state_and_its_events_are_one_write(make(), &outbox)
        .await
        .map_err(|e| format!("a_state_and_its_events_are_one_write: {e}"))?;
    Ok(())
}

type Collections<P> = crate::CollectionsService<P, crate::InMemoryDunningStore, FixedClock>;

async fn collections<P: crate::PaymentStore>(
    payments: P,
) -> Result<(Collections<P>, TenantId, CustomerId), String> {
    let policy = crate::DunningPolicy::builder(Currency::USD)
        .build()
        .map_err(err)?;
    let service = crate::CollectionsService::new(
        payments,
        crate::InMemoryDunningStore::new(),
        clock(),
        crate::CollectionsSettings::new(policy).with_zone(chrono_tz::UTC),
    );
    let tenant = TenantId::new();
    let customer = CustomerId::new();
    service
        .enter_invoice(
            tenant,
            crate::InvoiceToEnter {
                invoice: dotmac_core::InvoiceId::from_u128(1),
                customer,
                total: Money::from_minor(10_000, Currency::USD),
                issued: day(2026, 3, 1)?,
                due: day(2026, 3, 15)?,
            },
        )
        .await
        .map_err(err)?;
    Ok((service, tenant, customer))
}

async fn ledger_of<P: crate::PaymentStore>(
    service: &Collections<P>,
    tenant: TenantId,
    customer: CustomerId,
) -> Result<Vec<crate::LedgerEntry>, String> {
    service
        .payment_store()
        .entries(tenant, customer)
        .await
        .map_err(err)
}

async fn retried_payments_and_refunds_are_written_once<P: crate::PaymentStore>(
    payments: P,
) -> Result<(), String> {
    use crate::{PaymentRequest, RefundRequest};
    let (service, tenant, customer) = collections(payments).await?;
    let usd = |minor| Money::from_minor(minor, Currency::USD);
    let ledger_is = |what: &'static str, before: Vec<crate::LedgerEntry>| {
        let service = &service;
        async move {
            let after = ledger_of(service, tenant, customer).await?;
            ensure!(after == before, "{what}: the ledger changed: {after:?}");
            Ok::<(), String>(())
        }
    };

    // A due date before the issue date is refused and records nothing.
    let before = ledger_of(&service, tenant, customer).await?;
    let due = service
        .enter_invoice(
            tenant,
            crate::InvoiceToEnter {
                invoice: dotmac_core::InvoiceId::from_u128(2),
                customer,
                total: usd(500),
                issued: day(2026, 3, 10)?,
                due: day(2026, 3, 9)?,
            },
        )
        .await;
    ensure!(
        due == Err(CollectionsError::DueBeforeIssue {
            invoice: dotmac_core::InvoiceId::from_u128(2),
            issued: day(2026, 3, 10)?,
            due: day(2026, 3, 9)?,
        }),
        "a due date before the issue date: {due:?}"
    );
    ledger_is("due before issue", before).await?;

    // The same payment id twice: the first outcome, nothing written, no event.
    let payment = dotmac_core::PaymentId::from_u128(7);
    let (first, events) = service
        .receive_payment(tenant, PaymentRequest::new(customer, payment, usd(6000)))
        .await
        .map_err(err)?;
    ensure!(!events.is_empty(), "the first payment raised no event");
    let once = ledger_of(&service, tenant, customer).await?;
    let (again, events) = service
        .receive_payment(tenant, PaymentRequest::new(customer, payment, usd(6000)))
        .await
        .map_err(err)?;
    ensure!(
        again == first,
        "a retried payment id: {again:?} vs {first:?}"
    );
    ensure!(events.is_empty(), "a retried payment id raised {events:?}");
    ledger_is("retried payment id", once.clone()).await?;
    let other = service
        .receive_payment(tenant, PaymentRequest::new(customer, payment, usd(6100)))
        .await;
    ensure!(
        other == Err(CollectionsError::DuplicatePayment(payment)),
        "a payment id with another amount: {other:?}"
    );
    ledger_is("payment id with another amount", once.clone()).await?;

    // A keyed payment: the retry gets the first outcome; the key with another body is refused.
    let keyed = PaymentRequest::new(customer, dotmac_core::PaymentId::from_u128(8), usd(1000))
        .idempotency_key(key("pay-8")?);
    let (first, events) = service
        .receive_payment(tenant, keyed.clone())
        .await
        .map_err(err)?;
    ensure!(!events.is_empty(), "the keyed payment raised no event");
    let once = ledger_of(&service, tenant, customer).await?;
    let (again, events) = service
        .receive_payment(tenant, keyed.clone())
        .await
        .map_err(err)?;
    ensure!(
        again == first && events.is_empty(),
        "a keyed retry: {again:?}, {events:?}"
    );
    ledger_is("keyed payment retry", once.clone()).await?;
    let reused = service
        .receive_payment(
            tenant,
            PaymentRequest::new(customer, dotmac_core::PaymentId::from_u128(9), usd(1000))
                .idempotency_key(key("pay-8")?),
        )
        .await;
    ensure!(
        reused
            == Err(CollectionsError::Core(
                dotmac_core::CoreError::IdempotencyKeyReused {
                    key: "pay-8".into()
                }
            )),
        "a payment with a reused key: {reused:?}"
    );
    ledger_is("payment with a reused key", once.clone()).await?;

    // A keyed refund, the same way; a payment's key cannot name a refund.
    let refund = RefundRequest::new(customer, payment, usd(250)).idempotency_key(key("refund-1")?);
    let (entries, events) = service
        .refund_payment(tenant, refund.clone())
        .await
        .map_err(err)?;
    ensure!(
        !entries.is_empty() && events.len() > entries.len(),
        "the refund: {entries:?}, {events:?}"
    );
    let once = ledger_of(&service, tenant, customer).await?;
    let (again, events) = service
        .refund_payment(tenant, refund.clone())
        .await
        .map_err(err)?;
    ensure!(
        again == entries && events.is_empty(),
        "a refund retry: {again:?}, {events:?}"
    );
    ledger_is("refund retry", once.clone()).await?;
    for (body, used) in [
        (RefundRequest::new(customer, payment, usd(300)), "refund-1"),
        (RefundRequest::new(customer, payment, usd(250)), "pay-8"),
    ] {
        let reused = service
            .refund_payment(tenant, body.idempotency_key(key(used)?))
            .await;
        ensure!(
            reused
                == Err(CollectionsError::Core(
                    dotmac_core::CoreError::IdempotencyKeyReused { key: used.into() }
                )),
            "a refund with the reused key {used}: {reused:?}"
        );
        ledger_is("refund with a reused key", once.clone()).await?;
    }
    Ok(())
}

async fn concurrent_keyed_payments_write_once<P: crate::PaymentStore>(
    payments: P,
) -> Result<(), String> {
    use crate::PaymentRequest;
    let (service, tenant, customer) = collections(payments).await?;
    let before = ledger_of(&service, tenant, customer).await?;
    let request = PaymentRequest::new(
        customer,
        dotmac_core::PaymentId::from_u128(11),
        Money::from_minor(2500, Currency::USD),
    )
    .idempotency_key(key("pay-11")?);
    let (a, b) = join2(
        service.receive_payment(tenant, request.clone()),
        service.receive_payment(tenant, request.clone()),
    )
    .await;
    let (a, a_events) = a.map_err(err)?;
    let (b, b_events) = b.map_err(err)?;
    ensure!(
        a == b,
        "concurrent retries got two outcomes: {a:?} vs {b:?}"
    );
    ensure!(
        a_events.is_empty() != b_events.is_empty(),
        "concurrent retries raised events {} and {} times",
        a_events.len(),
        b_events.len()
    );
    let after = ledger_of(&service, tenant, customer).await?;
    ensure!(
        after.len() == before.len() + a.entries.len(),
        "concurrent retries appended {} entries for one payment of {}",
        after.len() - before.len(),
        a.entries.len()
    );
    Ok(())
}

/// A ledger entry at `sequence` (the store keeps entries as given: it checks positions, not
/// ledger arithmetic).
fn entry(
    sequence: u64,
    customer: CustomerId,
    kind: crate::LedgerEntryKind,
) -> Result<crate::LedgerEntry, String> {
    Ok(crate::LedgerEntry {
        sequence,
        customer,
        on: day(2026, 3, 1)? + chrono::Days::new(sequence),
        kind,
    })
}

/// An invoice of `minor` cents at `sequence`.
fn invoice_entry(
    sequence: u64,
    customer: CustomerId,
    minor: i64,
) -> Result<crate::LedgerEntry, String> {
    entry(
        sequence,
        customer,
        crate::LedgerEntryKind::InvoiceIssued {
            invoice: dotmac_core::InvoiceId::from_u128(u128::from(sequence) + 1),
            total: Money::from_minor(minor, Currency::USD),
            issued: day(2026, 3, 1)?,
            due: day(2026, 3, 15)?,
        },
    )
}

async fn entries_of<P: crate::PaymentStore>(
    store: &P,
    tenant: TenantId,
    customer: CustomerId,
) -> Result<Vec<crate::LedgerEntry>, String> {
    store.entries(tenant, customer).await.map_err(err)
}

fn keyed_record(
    text: &str,
    customer: CustomerId,
    entries: &[crate::LedgerEntry],
) -> Result<crate::IdempotencyRecord, String> {
    Ok(crate::IdempotencyRecord {
        key: key(text)?,
        request: crate::IdempotentRequest::Refund {
            customer,
            payment: dotmac_core::PaymentId::from_u128(1),
            amount: Money::from_minor(100, Currency::USD),
        },
        result: crate::IdempotentResult::Refund {
            entries: entries.to_vec(),
        },
        recorded_at: Utc
            .with_ymd_and_hms(2026, 4, 1, 6, 0, 0)
            .single()
            .ok_or("bad instant")?,
    })
}

async fn entries_round_trip_in_sequence_order<P: crate::PaymentStore>(
    store: P,
) -> Result<(), String> {
    use crate::LedgerEntryKind as K;
    use rust_decimal::Decimal;
    let tenant = TenantId::new();
    let customer = CustomerId::new();
    ensure!(
        entries_of(&store, tenant, customer).await?.is_empty(),
        "a customer without entries has {:?}",
        entries_of(&store, tenant, customer).await?
    );
    let payment = dotmac_core::PaymentId::from_u128(9);
    let invoice = dotmac_core::InvoiceId::from_u128(3);
    // Every kind, amounts at the edges of `Decimal` (scale and magnitude), a currency with no
    // minor unit and one with three, and a negative allocation (a reversal).
    let big = Decimal::MAX;
    let tiny = Decimal::new(1, 28);
    let kinds = [
        K::InvoiceIssued {
            invoice,
            total: Money::new(big, Currency::USD),
            issued: day(2026, 2, 28)?,
            due: day(2028, 2, 29)?,
        },
        K::PaymentReceived {
            payment,
            amount: Money::new(tiny, Currency::USD),
        },
        K::Allocated {
            payment,
            invoice,
            amount: Money::new(Decimal::new(-150, 2), Currency::USD),
        },
        K::Refunded {
            payment,
            amount: Money::new(Decimal::new(1_000, 3), Currency::KWD),
        },
        K::PaymentReceived {
            payment: dotmac_core::PaymentId::from_u128(10),
            amount: Money::new(Decimal::from(5000), Currency::JPY),
        },
        K::CreditNoted {
            invoice,
            credit_note: dotmac_core::CreditNoteId::from_u128(4),
            amount: Money::new(Decimal::new(12_345, 4), Currency::EUR),
            settlement: crate::CreditSettlement::Refund,
        },
        K::WrittenOff {
            invoice,
            amount: Money::new(-tiny, Currency::USD),
        },
        K::Voided {
            invoice,
            amount: Money::new(Decimal::new(0, 2), Currency::USD),
        },
    ];
    let kinds_len = kinds.len() as u64;
    let mut all = Vec::new();
    for (n, kind) in kinds.into_iter().enumerate() {
        all.push(entry(n as u64, customer, kind)?);
    }
    // A later position appended before earlier ones (a gap filled afterwards): reads are in
    // position order, not in the order of the calls.
    let (early, late) = all.split_at(2);
    store
        .append_entries(tenant, customer, late, &[])
        .await
        .map_err(err)?;
    store
        .append_entries(tenant, customer, early, &[])
        .await
        .map_err(err)?;
    store
        .append_entries(tenant, customer, &[], &[])
        .await
        .map_err(err)?;
    let back = entries_of(&store, tenant, customer).await?;
    ensure!(back == all, "read {back:?}, wrote {all:?}");
    // `Decimal`'s `==` ignores the scale; a stored 1.000 KWD must still read back as 1.000.
    for (got, want) in back.iter().zip(&all) {
        let amount = |e: &crate::LedgerEntry| match &e.kind {
            K::InvoiceIssued { total, .. } => total.amount().to_string(),
            K::PaymentReceived { amount, .. }
            | K::Allocated { amount, .. }
            | K::Refunded { amount, .. }
            | K::CreditNoted { amount, .. }
            | K::Voided { amount, .. }
            | K::WrittenOff { amount, .. } => amount.amount().to_string(),
        };
        ensure!(
            amount(got) == amount(want),
            "amount {} read back as {}",
            amount(want),
            amount(got)
        );
    }
    // More appended at the end.
    let next = vec![
        invoice_entry(kinds_len, customer, 100)?,
        invoice_entry(kinds_len + 1, customer, 200)?,
    ];
    store
        .append_entries(tenant, customer, &next, &[])
        .await
        .map_err(err)?;
    all.extend(next);
    let back = entries_of(&store, tenant, customer).await?;
    ensure!(back == all, "after a second append: read {back:?}");
    Ok(())
}

async fn ledgers_and_keys_are_isolated<P: crate::PaymentStore>(store: P) -> Result<(), String> {
    use crate::idempotency::KeyedWrite;
    let (a, b, c) = (TenantId::new(), TenantId::new(), TenantId::new());
    let customer = CustomerId::new();
    let neighbour = CustomerId::new();
    // The same customer id and positions in two tenants, and a neighbour in the first.
    let in_a = vec![
        invoice_entry(0, customer, 100)?,
        invoice_entry(1, customer, 200)?,
    ];
    let in_b = vec![invoice_entry(0, customer, 300)?];
    let next_door = vec![invoice_entry(0, neighbour, 400)?];
    store
        .append_entries(a, customer, &in_a, &[])
        .await
        .map_err(err)?;
    store
        .append_entries(b, customer, &in_b, &[])
        .await
        .map_err(err)?;
    store
        .append_entries(a, neighbour, &next_door, &[])
        .await
        .map_err(err)?;
    for (what, tenant, who, want) in [
        ("tenant a", a, customer, &in_a),
        ("tenant b", b, customer, &in_b),
        ("the neighbour", a, neighbour, &next_door),
        ("tenant c", c, customer, &Vec::new()),
        ("the neighbour in tenant b", b, neighbour, &Vec::new()),
    ] {
        let got = entries_of(&store, tenant, who).await?;
        ensure!(&got == want, "{what}: read {got:?}, expected {want:?}");
    }

    // A key recorded in one tenant is unknown to another, which may record it for itself.
    let more_a = vec![invoice_entry(2, customer, 500)?];
    let record_a = keyed_record("shared-key", customer, &more_a)?;
    let written = store
        .append_entries_keyed(a, customer, &more_a, &[], &record_a)
        .await
        .map_err(err)?;
    ensure!(
        written == KeyedWrite::Written(()),
        "a fresh key in tenant a: {written:?}"
    );
    let in_b_record = store
        .payment_idempotency_record(b, &record_a.key)
        .await
        .map_err(err)?;
    ensure!(
        in_b_record.is_none(),
        "tenant a's key is visible in tenant b: {in_b_record:?}"
    );
    let more_b = vec![invoice_entry(1, customer, 600)?];
    let record_b = keyed_record("shared-key", customer, &more_b)?;
    let written = store
        .append_entries_keyed(b, customer, &more_b, &[], &record_b)
        .await
        .map_err(err)?;
    ensure!(
        written == KeyedWrite::Written(()),
        "tenant a's key in tenant b: {written:?}"
    );
    for (tenant, want) in [(a, &record_a), (b, &record_b)] {
        let got = store
            .payment_idempotency_record(tenant, &want.key)
            .await
            .map_err(err)?;
        ensure!(
            got.as_ref() == Some(want),
            "the key read back as {got:?}, expected {want:?}"
        );
    }
    let mut want_a = in_a;
    want_a.extend(more_a);
    let mut want_b = in_b;
    want_b.extend(more_b);
    for (what, tenant, want) in [("tenant a", a, &want_a), ("tenant b", b, &want_b)] {
        let got = entries_of(&store, tenant, customer).await?;
        ensure!(&got == want, "{what} after keyed appends: read {got:?}");
    }
    Ok(())
}

async fn a_stale_append_is_refused_and_writes_nothing<P: crate::PaymentStore>(
    store: P,
) -> Result<(), String> {
    use crate::idempotency::KeyedWrite;
    let tenant = TenantId::new();
    let customer = CustomerId::new();
    let ledger = vec![
        invoice_entry(0, customer, 100)?,
        invoice_entry(1, customer, 200)?,
        invoice_entry(2, customer, 300)?,
    ];
    store
        .append_entries(tenant, customer, &ledger, &[])
        .await
        .map_err(err)?;
    let taken = |sequence: u64| CollectionsError::AlreadyExists {
        what: "ledger entry",
        id: format!("{customer}#{sequence}"),
    };
    let unchanged = |what: &'static str| {
        let store = &store;
        let ledger = &ledger;
        async move {
            let got = entries_of(store, tenant, customer).await?;
            ensure!(&got == ledger, "{what}: the ledger changed: {got:?}");
            Ok::<(), String>(())
        }
    };

    // A writer that read the ledger before the last entry: its first entry's position is
    // taken; its second (free) one is not written either.
    let stale = vec![
        invoice_entry(2, customer, 999)?,
        invoice_entry(3, customer, 999)?,
    ];
    let refused = store.append_entries(tenant, customer, &stale, &[]).await;
    ensure!(
        refused == Err(taken(2)),
        "a stale append: {refused:?}, expected {:?}",
        taken(2)
    );
    unchanged("a stale append").await?;
    // A free position first, then a taken one: the free one is not kept.
    let late_clash = vec![
        invoice_entry(3, customer, 999)?,
        invoice_entry(0, customer, 999)?,
    ];
    let refused = store
        .append_entries(tenant, customer, &late_clash, &[])
        .await;
    ensure!(
        refused == Err(taken(0)),
        "a free then a taken position: {refused:?}"
    );
    unchanged("a free then a taken position").await?;
    // One position twice in one call.
    let twice = vec![
        invoice_entry(3, customer, 999)?,
        invoice_entry(3, customer, 998)?,
    ];
    let refused = store.append_entries(tenant, customer, &twice, &[]).await;
    ensure!(
        refused == Err(taken(3)),
        "a position twice in one call: {refused:?}"
    );
    unchanged("a position twice in one call").await?;

    // A keyed stale append: refused the same way, and the key is not recorded, so that the
    // caller's retry (after re-reading the ledger) can still use it.
    let record = keyed_record("stale-key", customer, &stale)?;
    let refused = store
        .append_entries_keyed(tenant, customer, &stale, &[], &record)
        .await;
    ensure!(
        refused == Err(taken(2)),
        "a keyed stale append: {refused:?}"
    );
    unchanged("a keyed stale append").await?;
    let kept = store
        .payment_idempotency_record(tenant, &record.key)
        .await
        .map_err(err)?;
    ensure!(
        kept.is_none(),
        "a refused keyed append recorded its key: {kept:?}"
    );

    // The retry at the right position succeeds with the same key.
    let fresh = vec![invoice_entry(3, customer, 999)?];
    let record = keyed_record("stale-key", customer, &fresh)?;
    let written = store
        .append_entries_keyed(tenant, customer, &fresh, &[], &record)
        .await
        .map_err(err)?;
    ensure!(
        written == KeyedWrite::Written(()),
        "the retry at a free position: {written:?}"
    );
    let mut after = ledger.clone();
    after.extend(fresh.iter().cloned());
    let got = entries_of(&store, tenant, customer).await?;
    ensure!(got == after, "after the retry: read {got:?}");

    // A retry of a recorded key is answered with the record even though its entries are now
    // stale, and writes nothing.
    let replayed = store
        .append_entries_keyed(tenant, customer, &fresh, &[], &record)
        .await
        .map_err(err)?;
    ensure!(
        replayed == KeyedWrite::Replayed(Box::new(record.clone())),
        "a recorded key: {replayed:?}"
    );
    let got = entries_of(&store, tenant, customer).await?;
    ensure!(got == after, "a replayed key changed the ledger: {got:?}");
    Ok(())
}

/// Three distinct states from a policy of 32 steps (31 reminders, then a suspension, restored
/// on payment): after the first reminder; after every step; and suspended then restored, which
/// sets the highest bit of the state (the restore of step 31), so a store that keeps the state
/// in a signed 64-bit column or a float is caught.
fn dunning_states() -> Result<[crate::DunningState; 3], String> {
    use crate::{DunningInvoice, DunningPolicy, DunningState, RestoreOnPayment, Settlement};
    let mut builder =
        DunningPolicy::builder(Currency::USD).restore_on_payment(RestoreOnPayment::Restore {
            reconnection_fee: None,
        });
    for n in 1..=31 {
        builder = builder.step(n, "reminder");
    }
    let policy = builder.step(32, "suspend").build().map_err(err)?;
    let invoice = DunningInvoice {
        id: dotmac_core::InvoiceId::from_u128(1),
        customer: CustomerId::from_u128(1),
        total: Money::from_minor(10_000, Currency::USD),
        due: day(2026, 3, 1)?,
    };
    let mut out = Vec::new();
    let mut first = DunningState::default();
    crate::evaluate(
        &policy,
        &invoice,
        &[],
        &mut first,
        day(2026, 3, 2)?,
        &mut out,
    )
    .map_err(err)?;
    let mut every = DunningState::default();
    crate::evaluate(
        &policy,
        &invoice,
        &[],
        &mut every,
        day(2026, 4, 10)?,
        &mut out,
    )
    .map_err(err)?;
    let mut restored = every;
    let paid = [Settlement {
        on: day(2026, 4, 11)?,
        amount: rust_decimal::Decimal::from(100),
    }];
    crate::evaluate(
        &policy,
        &invoice,
        &paid,
        &mut restored,
        day(2026, 4, 12)?,
        &mut out,
    )
    .map_err(err)?;
    ensure!(
        first.step_fired(0) && !first.step_fired(1),
        "the first state is not one reminder: {first:?}"
    );
    ensure!(
        every.step_fired(31) && every.is_suspended(&policy),
        "the second state is not suspended: {every:?}"
    );
    ensure!(
        restored.step_fired(31) && !restored.is_suspended(&policy),
        "the third state is not restored: {restored:?}"
    );
    ensure!(
        first != every && every != restored && first != restored,
        "the states are not distinct"
    );
    Ok([first, every, restored])
}

async fn an_unknown_invoice_has_the_default_state<D: crate::DunningStore>(
    store: D,
) -> Result<(), String> {
    let tenant = TenantId::new();
    let unknown = dotmac_core::InvoiceId::new();
    let state = store.state(tenant, unknown).await.map_err(err)?;
    ensure!(
        state == crate::DunningState::default(),
        "an unknown invoice in a new tenant: {state:?}"
    );
    // Still the default once the tenant has other invoices' states.
    let [_, every, _] = dunning_states()?;
    store
        .save_state(tenant, dotmac_core::InvoiceId::new(), every, &[])
        .await
        .map_err(err)?;
    let state = store.state(tenant, unknown).await.map_err(err)?;
    ensure!(
        state == crate::DunningState::default(),
        "an unknown invoice next to a saved one: {state:?}"
    );
    Ok(())
}

async fn saved_states_read_back<D: crate::DunningStore>(store: D) -> Result<(), String> {
    let tenant = TenantId::new();
    let states = dunning_states()?;
    let invoices: Vec<_> = states
        .iter()
        .map(|_| dotmac_core::InvoiceId::new())
        .collect();
    for (invoice, state) in invoices.iter().zip(states) {
        store
            .save_state(tenant, *invoice, state, &[])
            .await
            .map_err(err)?;
    }
    for (invoice, state) in invoices.iter().zip(states) {
        let got = store.state(tenant, *invoice).await.map_err(err)?;
        ensure!(
            got == state,
            "invoice {invoice}: read {got:?}, saved {state:?}"
        );
    }
    Ok(())
}

async fn a_save_overwrites_the_state<D: crate::DunningStore>(store: D) -> Result<(), String> {
    let tenant = TenantId::new();
    let invoice = dotmac_core::InvoiceId::new();
    let neighbour = dotmac_core::InvoiceId::new();
    let [first, every, restored] = dunning_states()?;
    store
        .save_state(tenant, neighbour, first, &[])
        .await
        .map_err(err)?;
    // Forward, and back to the default (a state is replaced, never merged).
    for state in [
        first,
        restored,
        every,
        crate::DunningState::default(),
        every,
    ] {
        store
            .save_state(tenant, invoice, state, &[])
            .await
            .map_err(err)?;
        let got = store.state(tenant, invoice).await.map_err(err)?;
        ensure!(got == state, "after saving {state:?}: read {got:?}");
    }
    let got = store.state(tenant, neighbour).await.map_err(err)?;
    ensure!(
        got == first,
        "overwriting one invoice changed another: {got:?}"
    );
    Ok(())
}

async fn dunning_states_are_isolated_by_tenant<D: crate::DunningStore>(
    store: D,
) -> Result<(), String> {
    let (a, b, c) = (TenantId::new(), TenantId::new(), TenantId::new());
    let invoice = dotmac_core::InvoiceId::new();
    let [first, every, restored] = dunning_states()?;
    store
        .save_state(a, invoice, first, &[])
        .await
        .map_err(err)?;
    store
        .save_state(b, invoice, every, &[])
        .await
        .map_err(err)?;
    let read = |tenant| store.state(tenant, invoice);
    let (in_a, in_b, in_c) = (
        read(a).await.map_err(err)?,
        read(b).await.map_err(err)?,
        read(c).await.map_err(err)?,
    );
    ensure!(
        in_a == first && in_b == every && in_c == crate::DunningState::default(),
        "one invoice id in three tenants: {in_a:?}, {in_b:?}, {in_c:?}"
    );
    // Overwriting in one tenant leaves the other alone.
    store
        .save_state(a, invoice, restored, &[])
        .await
        .map_err(err)?;
    let (in_a, in_b) = (read(a).await.map_err(err)?, read(b).await.map_err(err)?);
    ensure!(
        in_a == restored && in_b == every,
        "after overwriting in tenant a: {in_a:?}, {in_b:?}"
    );
    Ok(())
}

/// An outbox event of `tenant` with id `n` carrying `payload`.
fn outbox_event(
    tenant: TenantId,
    n: u128,
    payload: CollectionEvent,
) -> Result<OutboxEvent, String> {
    let at = Utc
        .with_ymd_and_hms(2026, 4, 1, 6, 0, 0)
        .single()
        .ok_or("bad instant")?;
    Ok(OutboxEvent::new(DomainEvent::at(
        EventId::from_u128(n),
        tenant,
        at,
        payload,
    )))
}

fn ids(events: &[(EventId, String)]) -> Vec<EventId> {
    events.iter().map(|(id, _)| *id).collect()
}

async fn entries_and_their_events_are_one_write<P, R>(store: P, outbox: &R) -> Result<(), String>
where
    P: crate::PaymentStore,
    R: for<'a> Fn(&'a P, TenantId) -> OutboxRead<'a>,
{
    use crate::idempotency::KeyedWrite;
    let tenant = TenantId::new();
    let customer = CustomerId::new();
    let ledger_event = |n, entry: &crate::LedgerEntry| {
        outbox_event(tenant, n, CollectionEvent::Ledger(entry.clone()))
    };
    let taken = |sequence: u64| CollectionsError::AlreadyExists {
        what: "ledger entry",
        id: format!("{customer}#{sequence}"),
    };

    // Entries and their event.
    let first = vec![invoice_entry(0, customer, 100)?];
    store
        .append_entries(tenant, customer, &first, &[ledger_event(1, &first[0])?])
        .await
        .map_err(err)?;
    let written = outbox(&store, tenant).await?;
    ensure!(
        written
            == vec![(
                EventId::from_u128(1),
                "payments.invoice_recorded".to_owned()
            )],
        "the append's event: {written:?}"
    );
    let unchanged =
        |what: &'static str, ledger: Vec<crate::LedgerEntry>, events: Vec<(EventId, String)>| {
            let store = &store;
            async move {
                let got = entries_of(store, tenant, customer).await?;
                ensure!(got == ledger, "{what}: the ledger changed: {got:?}");
                let now = outbox(store, tenant).await?;
                ensure!(now == events, "{what}: the outbox changed: {now:?}");
                Ok::<(), String>(())
            }
        };

    // A stale append writes no event.
    let stale = vec![invoice_entry(0, customer, 999)?];
    let refused = store
        .append_entries(tenant, customer, &stale, &[ledger_event(2, &stale[0])?])
        .await;
    ensure!(
        refused == Err(taken(0)),
        "a stale append with an event: {refused:?}"
    );
    unchanged(
        "a stale append with an event",
        first.clone(),
        written.clone(),
    )
    .await?;

    // An event the outbox refuses (another tenant's) appends nothing.
    let next = vec![invoice_entry(1, customer, 200)?];
    let foreign = outbox_event(TenantId::new(), 3, CollectionEvent::Ledger(next[0].clone()))?;
    let refused = store
        .append_entries(tenant, customer, &next, &[foreign])
        .await;
    ensure!(
        matches!(refused, Err(CollectionsError::Storage(_))),
        "an append with another tenant's event: {refused:?}"
    );
    unchanged(
        "an append with another tenant's event",
        first.clone(),
        written.clone(),
    )
    .await?;

    // A keyed append writes its events; its replay writes nothing, not even new events.
    let record = keyed_record("events-key", customer, &next)?;
    let keyed = store
        .append_entries_keyed(
            tenant,
            customer,
            &next,
            &[ledger_event(4, &next[0])?],
            &record,
        )
        .await
        .map_err(err)?;
    ensure!(
        keyed == KeyedWrite::Written(()),
        "a keyed append with events: {keyed:?}"
    );
    let mut ledger = first.clone();
    ledger.extend(next.iter().cloned());
    let written = outbox(&store, tenant).await?;
    ensure!(
        ids(&written) == vec![EventId::from_u128(1), EventId::from_u128(4)],
        "after the keyed append: {written:?}"
    );
    let later = vec![invoice_entry(2, customer, 300)?];
    let replayed = store
        .append_entries_keyed(
            tenant,
            customer,
            &later,
            &[ledger_event(5, &later[0])?],
            &record,
        )
        .await
        .map_err(err)?;
    ensure!(
        replayed == KeyedWrite::Replayed(Box::new(record.clone())),
        "a replayed key with events: {replayed:?}"
    );
    unchanged(
        "a replayed key with events",
        ledger.clone(),
        written.clone(),
    )
    .await?;

    // A keyed stale append: no event, no key.
    let other = keyed_record("events-key-2", customer, &stale)?;
    let refused = store
        .append_entries_keyed(
            tenant,
            customer,
            &next,
            &[ledger_event(6, &next[0])?],
            &other,
        )
        .await;
    ensure!(
        refused == Err(taken(1)),
        "a keyed stale append with events: {refused:?}"
    );
    unchanged("a keyed stale append with events", ledger, written).await?;
    let kept = store
        .payment_idempotency_record(tenant, &other.key)
        .await
        .map_err(err)?;
    ensure!(
        kept.is_none(),
        "a refused keyed append recorded its key: {kept:?}"
    );
    Ok(())
}

async fn every_service_step_writes_the_events_it_returns<P, R>(
    payments: P,
    outbox: &R,
) -> Result<(), String>
where
    P: crate::PaymentStore,
    R: for<'a> Fn(&'a P, TenantId) -> OutboxRead<'a>,
{
    use crate::{CreditNoteToEnter, CreditSettlement, InvoiceToEnter, PaymentRequest};
    let (service, tenant, customer) = collections(payments).await?;
    let usd = |minor| Money::from_minor(minor, Currency::USD);
    let store = service.payment_store();
    let types = |events: &[(EventId, String)]| -> Vec<String> {
        events.iter().map(|(_, t)| t.clone()).collect()
    };
    let entered = outbox(store, tenant).await?;
    ensure!(
        types(&entered)
            == [
                "payments.invoice_recorded",
                "collections.invoice_balance_changed"
            ],
        "entering an invoice wrote {entered:?}"
    );
    let mut seen = entered;
    // Each step: the outbox grows by exactly the events returned, in order.
    macro_rules! step {
        ($what:expr, $call:expr, $want:expr) => {{
            let events: Vec<DomainEvent<CollectionEvent>> = $call.await.map_err(err)?;
            let now = outbox(store, tenant).await?;
            let (old, new) = now.split_at(seen.len().min(now.len()));
            ensure!(
                old == seen.as_slice(),
                "{}: the outbox's earlier events changed",
                $what
            );
            let returned: Vec<EventId> = events.iter().map(|e| e.id).collect();
            ensure!(
                ids(new) == returned,
                "{}: wrote {new:?}, returned {returned:?}",
                $what
            );
            let want: &[&str] = $want;
            ensure!(types(new) == want, "{}: wrote {:?}", $what, types(new));
            seen = now;
        }};
    }
    let ledger_now = || async {
        let entries = ledger_of(&service, tenant, customer).await?;
        crate::CustomerLedger::from_entries(customer, Currency::USD, entries).map_err(err)
    };
    let first = InvoiceToEnter {
        invoice: InvoiceId::from_u128(1),
        customer,
        total: usd(10_000),
        issued: day(2026, 3, 1)?,
        due: day(2026, 3, 15)?,
    };
    step!(
        "the same invoice again",
        service.enter_invoice(tenant, first),
        &[]
    );
    let other = service
        .enter_invoice(
            tenant,
            InvoiceToEnter {
                total: usd(9_999),
                ..first
            },
        )
        .await;
    ensure!(
        other == Err(CollectionsError::DuplicateInvoice(first.invoice)),
        "the invoice with another total: {other:?}"
    );
    step!(
        "nothing after a refused invoice",
        async { Ok::<_, CollectionsError>(Vec::new()) },
        &[]
    );

    // A keyed payment of part of it, and its retry.
    let pay = PaymentRequest::new(customer, dotmac_core::PaymentId::from_u128(1), usd(4_000))
        .idempotency_key(key("steps-pay-1")?);
    step!(
        "a keyed payment",
        async {
            service
                .receive_payment(tenant, pay.clone())
                .await
                .map(|(_, e)| e)
        },
        &[
            "payments.payment_received",
            "payments.payment_allocated",
            "collections.invoice_balance_changed"
        ]
    );
    step!(
        "the keyed payment's retry",
        async {
            service
                .receive_payment(tenant, pay.clone())
                .await
                .map(|(_, e)| e)
        },
        &[]
    );

    // A credit note beyond what is open: 7,000 on 6,000 open releases 1,000 to credit.
    let note = CreditNoteToEnter {
        credit_note: dotmac_core::CreditNoteId::from_u128(1),
        invoice: first.invoice,
        customer,
        amount: usd(7_000),
        issued: day(2026, 3, 20)?,
        settlement: CreditSettlement::Credit,
    };
    step!(
        "a credit note",
        service.enter_credit_note(tenant, note),
        &[
            "payments.payment_allocated",
            "payments.credit_noted",
            "collections.invoice_balance_changed"
        ]
    );
    step!(
        "the credit note again",
        service.enter_credit_note(tenant, note),
        &[]
    );
    let changed = service
        .enter_credit_note(
            tenant,
            CreditNoteToEnter {
                amount: usd(1),
                ..note
            },
        )
        .await;
    ensure!(
        changed == Err(CollectionsError::DuplicateCreditNote(note.credit_note)),
        "the credit note with another amount: {changed:?}"
    );
    let too_much = service
        .enter_credit_note(
            tenant,
            CreditNoteToEnter {
                credit_note: dotmac_core::CreditNoteId::from_u128(2),
                amount: usd(3_001),
                ..note
            },
        )
        .await;
    ensure!(
        too_much
            == Err(CollectionsError::CreditExceedsInvoice {
                invoice: first.invoice,
                credit_note: dotmac_core::CreditNoteId::from_u128(2),
                requested: usd(3_001).amount(),
                creditable: usd(3_000).amount(),
            }),
        "a credit note beyond the invoice: {too_much:?}"
    );
    step!(
        "nothing after refused credit notes",
        async { Ok::<_, CollectionsError>(Vec::new()) },
        &[]
    );
    let ledger = ledger_now().await?;
    ensure!(
        ledger.credit() == usd(1_000),
        "the released allocation is not credit: {:?}",
        ledger.credit()
    );

    // The credit pays the next invoice.
    let second = InvoiceToEnter {
        invoice: InvoiceId::from_u128(2),
        total: usd(2_500),
        ..first
    };
    step!(
        "an invoice taking the credit",
        service.enter_invoice(tenant, second),
        &[
            "payments.invoice_recorded",
            "payments.payment_allocated",
            "collections.credit_applied",
            "collections.invoice_balance_changed"
        ]
    );
    // A void, and its replay.
    step!(
        "a void",
        service.void_invoice(tenant, customer, second.invoice, day(2026, 3, 21)?),
        &[
            "payments.payment_allocated",
            "payments.voided",
            "collections.invoice_balance_changed"
        ]
    );
    step!(
        "the void again",
        service.void_invoice(tenant, customer, second.invoice, day(2026, 3, 22)?),
        &[]
    );
    // A write-off, and its replay.
    let third = InvoiceToEnter {
        invoice: InvoiceId::from_u128(3),
        total: usd(500),
        ..first
    };
    step!(
        "a third invoice, paid in part by the credit",
        service.enter_invoice(tenant, third),
        &[
            "payments.invoice_recorded",
            "payments.payment_allocated",
            "collections.credit_applied",
            "collections.invoice_balance_changed"
        ]
    );
    let ledger = ledger_now().await?;
    ensure!(
        ledger.credit() == usd(500),
        "the void's release: credit {:?}",
        ledger.credit()
    );
    let fourth = InvoiceToEnter {
        invoice: InvoiceId::from_u128(4),
        total: usd(800),
        ..first
    };
    step!(
        "a fourth invoice",
        service.enter_invoice(tenant, fourth),
        &[
            "payments.invoice_recorded",
            "payments.payment_allocated",
            "collections.credit_applied",
            "collections.invoice_balance_changed"
        ]
    );
    step!(
        "a write-off",
        service.write_off_invoice(tenant, customer, fourth.invoice, day(2026, 4, 30)?),
        &[
            "payments.written_off",
            "collections.invoice_balance_changed"
        ]
    );
    step!(
        "the write-off again",
        service.write_off_invoice(tenant, customer, fourth.invoice, day(2026, 5, 1)?),
        &[]
    );
    let ledger = ledger_now().await?;
    let balance = |invoice| ledger.invoice(invoice).map(|b| (b.state(), b.open()));
    ensure!(
        balance(first.invoice) == Some((crate::BalanceState::Paid, usd(0)))
            && balance(second.invoice) == Some((crate::BalanceState::Void, usd(0)))
            && balance(third.invoice) == Some((crate::BalanceState::Paid, usd(0)))
            && balance(fourth.invoice) == Some((crate::BalanceState::Uncollectible, usd(0))),
        "the balances: {:?}",
        ledger.invoices()
    );
    drop(seen);
    ensure!(
        ledger.reconcile().and_then(|r| r.balances()) == Ok(true),
        "the ledger does not reconcile: {:?}",
        ledger.reconcile()
    );
    Ok(())
}

async fn a_state_and_its_events_are_one_write<D, R>(store: D, outbox: &R) -> Result<(), String>
where
    D: crate::DunningStore,
    R: for<'a> Fn(&'a D, TenantId) -> OutboxRead<'a>,
{
    let tenant = TenantId::new();
    let invoice = InvoiceId::new();
    let [first, every, _] = dunning_states()?;
    let action = crate::FiredAction {
        invoice,
        customer: CustomerId::new(),
        name: crate::StepName::SUSPEND,
        action: crate::CollectionAction::Suspend,
        step: 3,
        on: day(2026, 3, 20)?,
        open_balance: Money::from_minor(5_000, Currency::USD),
        fee: None,
    };
    let fired = outbox_event(tenant, 1, CollectionEvent::Action(action))?;
    store
        .save_state(tenant, invoice, first, std::slice::from_ref(&fired))
        .await
        .map_err(err)?;
    let written = outbox(&store, tenant).await?;
    ensure!(
        written
            == vec![(
                EventId::from_u128(1),
                "collections.suspend_service".to_owned()
            )],
        "the state's event: {written:?}"
    );
    // Another tenant's event: nothing saved, nothing written.
    let foreign = outbox_event(TenantId::new(), 2, CollectionEvent::Action(action))?;
    let refused = store.save_state(tenant, invoice, every, &[foreign]).await;
    ensure!(
        matches!(refused, Err(CollectionsError::Storage(_))),
        "a save with another tenant's event: {refused:?}"
    );
    let state = store.state(tenant, invoice).await.map_err(err)?;
    ensure!(
        state == first,
        "a refused save changed the state: {state:?}"
    );
    let now = outbox(&store, tenant).await?;
    ensure!(now == written, "a refused save wrote {now:?}");
    // The same event again (a replayed save) is kept once.
    store
        .save_state(tenant, invoice, every, &[fired])
        .await
        .map_err(err)?;
    let now = outbox(&store, tenant).await?;
    ensure!(
        now == written,
        "a replayed event was written twice: {now:?}"
    );
    let state = store.state(tenant, invoice).await.map_err(err)?;
    ensure!(state == every, "the replayed save's state: {state:?}");
    Ok(())
}
