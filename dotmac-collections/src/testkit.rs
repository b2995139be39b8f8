//! The payment and dunning store behaviour suites: one set of checks each, run against every
//! [`PaymentStore`](crate::PaymentStore) and [`DunningStore`](crate::DunningStore)
//! implementation (the in-memory stores here, SQLite and PostgreSQL in `dotmac-sqlx`), so that
//! stores cannot drift apart.
//!
//! ```
//! # async fn demo() -> Result<(), String> {
//! use dotmac_collections::{testkit, InMemoryDunningStore, InMemoryPaymentStore};
//! testkit::run_payment_store_suite(InMemoryPaymentStore::new).await?;
//! testkit::run_dunning_store_suite(InMemoryDunningStore::new).await
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

// A test suite: fixed, small figures, where plain operators are the clearest.
#![allow(clippy::arithmetic_side_effects)]

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac_billing::testkit::join2;
use dotmac_core::{Currency, CustomerId, FixedClock, Money, TenantId};

use crate::CollectionsError;

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
pub async fn run_payment_store_suite<P, F>(make: F) -> Result<(), String>
where
    P: crate::PaymentStore,
    F: Fn() -> P,
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
    Ok(())
}

/// Runs the dunning-store checks against stores made by `make` (one per check; every check
/// uses fresh tenants).
///
/// # Errors
///
/// A message naming the first check that failed.
pub async fn run_dunning_store_suite<D, F>(make: F) -> Result<(), String>
where
    D: crate::DunningStore,
    F: Fn() -> D,
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
        .record_invoice(
            tenant,
            customer,
            dotmac_core::InvoiceId::from_u128(1),
            Money::from_minor(10_000, Currency::USD),
            day(2026, 3, 1)?,
            day(2026, 3, 15)?,
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
        .record_invoice(
            tenant,
            customer,
            dotmac_core::InvoiceId::from_u128(2),
            usd(500),
            day(2026, 3, 10)?,
            day(2026, 3, 9)?,
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
        !entries.is_empty() && events.len() == entries.len(),
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
    ];
    let mut all = Vec::new();
    for (n, kind) in kinds.into_iter().enumerate() {
        all.push(entry(n as u64, customer, kind)?);
    }
    // A later position appended before earlier ones (a gap filled afterwards): reads are in
    // position order, not in the order of the calls.
    let (early, late) = all.split_at(2);
    store
        .append_entries(tenant, customer, late)
        .await
        .map_err(err)?;
    store
        .append_entries(tenant, customer, early)
        .await
        .map_err(err)?;
    store
        .append_entries(tenant, customer, &[])
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
            | K::Refunded { amount, .. } => amount.amount().to_string(),
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
        invoice_entry(5, customer, 100)?,
        invoice_entry(6, customer, 200)?,
    ];
    store
        .append_entries(tenant, customer, &next)
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
        .append_entries(a, customer, &in_a)
        .await
        .map_err(err)?;
    store
        .append_entries(b, customer, &in_b)
        .await
        .map_err(err)?;
    store
        .append_entries(a, neighbour, &next_door)
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
        .append_entries_keyed(a, customer, &more_a, &record_a)
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
        .append_entries_keyed(b, customer, &more_b, &record_b)
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
        .append_entries(tenant, customer, &ledger)
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
    let refused = store.append_entries(tenant, customer, &stale).await;
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
    let refused = store.append_entries(tenant, customer, &late_clash).await;
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
    let refused = store.append_entries(tenant, customer, &twice).await;
    ensure!(
        refused == Err(taken(3)),
        "a position twice in one call: {refused:?}"
    );
    unchanged("a position twice in one call").await?;

    // A keyed stale append: refused the same way, and the key is not recorded, so that the
    // caller's retry (after re-reading the ledger) can still use it.
    let record = keyed_record("stale-key", customer, &stale)?;
    let refused = store
        .append_entries_keyed(tenant, customer, &stale, &record)
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
        .append_entries_keyed(tenant, customer, &fresh, &record)
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
        .append_entries_keyed(tenant, customer, &fresh, &record)
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
        .save_state(tenant, dotmac_core::InvoiceId::new(), every)
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
            .save_state(tenant, *invoice, state)
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
        .save_state(tenant, neighbour, first)
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
            .save_state(tenant, invoice, state)
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
    store.save_state(a, invoice, first).await.map_err(err)?;
    store.save_state(b, invoice, every).await.map_err(err)?;
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
    store.save_state(a, invoice, restored).await.map_err(err)?;
    let (in_a, in_b) = (read(a).await.map_err(err)?, read(b).await.map_err(err)?);
    ensure!(
        in_a == restored && in_b == every,
        "after overwriting in tenant a: {in_a:?}, {in_b:?}"
    );
    Ok(())
}
