//! The payment store behaviour suite: one set of checks, run against every
//! [`PaymentStore`](crate::PaymentStore) implementation (the in-memory store here, SQLite and
//! PostgreSQL in `dotmac-sqlx`), so that stores cannot drift apart.
//!
//! ```
//! # async fn demo() -> Result<(), String> {
//! dotmac_collections::testkit::run_payment_store_suite(dotmac_collections::InMemoryPaymentStore::new).await
//! # }
//! ```
//!
//! Every check uses fresh tenant ids, so the suite may share one database with other tests.

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
    Ok(())
}

type Collections<P> = crate::CollectionsService<P, crate::InMemoryDunningStore, FixedClock>;

async fn collections<P: crate::PaymentStore>(
    payments: P,
) -> Result<(Collections<P>, TenantId, CustomerId), String> {
    let policy = crate::DunningPolicy::builder().build().map_err(err)?;
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
