//! Behaviour of the storage foundation, run on SQLite (memory and file) and, when
//! `DATABASE_URL` is set, PostgreSQL.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::common;

use std::collections::BTreeSet;

use chrono::NaiveDate;
use common::{at, backends, new_tenant};
use dotmac_billing::{BillingError, DocumentNumber, Invoice, InvoiceStatus, InvoiceStore};
use dotmac_core::{CustomerId, DomainEvent, EventId, EventPayload, TenantId};
use dotmac_sqlx::{Database, IdempotencyClaim, OutboxEvent, SqlError, SqlStore};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

#[derive(Debug, serde::Serialize)]
struct Suspended {
    account: String,
}

impl EventPayload for Suspended {
    fn event_type(&self) -> &'static str {
        "collections.suspended"
    }
}

fn event(tenant: TenantId, account: &str) -> OutboxEvent {
    let domain = DomainEvent::at(
        EventId::new(),
        tenant,
        at(2, 6),
        Suspended {
            account: account.into(),
        },
    );
    OutboxEvent::from_domain(&domain).unwrap()
}

/// A new customer's invoice of pending charges on 1 March (the billing domain's type).
fn invoice(total: Decimal, lines: &[(Decimal, Decimal, Decimal)]) -> Invoice {
    common::charges_invoice(
        CustomerId::new(),
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        total,
        lines,
    )
}

/// `invoice` as the store keeps it once issued: open, numbered `number`.
fn issued_as(invoice: &Invoice, number: u64) -> Invoice {
    Invoice {
        number: Some(DocumentNumber(number)),
        status: InvoiceStatus::Open,
        ..invoice.clone()
    }
}

#[tokio::test]
async fn connecting_twice_to_one_file_reapplies_nothing() {
    let path = std::env::temp_dir().join(format!("dotmac-reopen-{}.db", uuid::Uuid::now_v7()));
    let url = format!("sqlite://{}", path.display());
    let tenant = TenantId::new();
    {
        let db = Database::connect(&url).await.unwrap();
        db.create_tenant(tenant, "Acme", at(1, 0)).await.unwrap();
        db.close().await;
    }
    let db = Database::connect(&url).await.unwrap();
    assert_eq!(
        db.tenant_name(tenant).await.unwrap().as_deref(),
        Some("Acme")
    );
}

#[tokio::test]
async fn unsupported_urls_and_options_are_refused() {
    assert!(matches!(
        Database::connect("mysql://localhost/x").await,
        Err(SqlError::UnsupportedUrl { .. })
    ));
    let schema_on_sqlite = dotmac_sqlx::DatabaseOptions::new("sqlite::memory:").schema("x");
    assert!(matches!(
        Database::connect_with(schema_on_sqlite).await,
        Err(SqlError::InvalidOption {
            option: "schema",
            ..
        })
    ));
    let bad_schema = dotmac_sqlx::DatabaseOptions::new("postgres://u@127.0.0.1:1/x").schema("A;B");
    assert!(matches!(
        Database::connect_with(bad_schema).await,
        Err(SqlError::InvalidOption {
            option: "schema",
            ..
        })
    ));
}

#[tokio::test]
async fn tenants_are_created_once() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let again = db.create_tenant(tenant, "Other", at(1, 0)).await;
        assert!(
            matches!(again, Err(SqlError::Duplicate { what: "tenant", .. })),
            "{name}"
        );
        assert_eq!(
            db.tenant_name(tenant).await.unwrap().as_deref(),
            Some("Test ISP"),
            "{name}"
        );
        assert_eq!(
            db.tenant_name(TenantId::new()).await.unwrap(),
            None,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_number_reservations_are_gapless_and_unique() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let other = new_tenant(&db).await;
        let mut tasks = Vec::new();
        for task in 0..8_u32 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut firsts = Vec::new();
                for _ in 0..5 {
                    let count = task % 3 + 1;
                    let first = db.reserve_numbers(tenant, "INV", count).await.unwrap();
                    firsts.extend((first..).take(count as usize));
                }
                firsts
            }));
        }
        let mut numbers = Vec::new();
        for task in tasks {
            numbers.extend(task.await.unwrap());
        }
        numbers.sort_unstable();
        let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
        assert_eq!(numbers, expected, "{name}");
        assert_eq!(
            db.last_number(tenant, "INV").await.unwrap(),
            numbers.len() as i64,
            "{name}"
        );
        // Series and tenants count separately.
        assert_eq!(
            db.reserve_numbers(tenant, "CN", 1).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            db.reserve_numbers(other, "INV", 1).await.unwrap(),
            1,
            "{name}"
        );
        assert!(matches!(
            db.reserve_numbers(tenant, "INV", 0).await,
            Err(SqlError::InvalidOption {
                option: "count",
                ..
            })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_is_claimed_exactly_once() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let mut tasks = Vec::new();
        for n in 0..6 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.claim_idempotency_key(tenant, "payment", "pay-42", &format!("ref-{n}"), at(2, 0))
                    .await
                    .unwrap()
            }));
        }
        let mut claimed = 0;
        let mut replays = BTreeSet::new();
        for task in tasks {
            match task.await.unwrap() {
                IdempotencyClaim::Claimed => claimed += 1,
                IdempotencyClaim::Replayed(reference) => {
                    replays.insert(reference);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(claimed, 1, "{name}");
        assert_eq!(
            replays.len(),
            1,
            "{name}: every replay sees the winner's reference"
        );
        // The same key in another scope or tenant is independent.
        let other = new_tenant(&db).await;
        assert_eq!(
            db.claim_idempotency_key(other, "payment", "pay-42", "x", at(2, 0))
                .await
                .unwrap(),
            IdempotencyClaim::Claimed,
            "{name}"
        );
        assert_eq!(
            db.claim_idempotency_key(tenant, "refund", "pay-42", "x", at(2, 0))
                .await
                .unwrap(),
            IdempotencyClaim::Claimed,
            "{name}"
        );
    }
}

#[tokio::test]
async fn outbox_events_are_stored_once_claimed_and_delivered() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let events: Vec<OutboxEvent> = (0..5).map(|n| event(tenant, &format!("A-{n}"))).collect();
        db.append_events(tenant, &events).await.unwrap();
        // A retried write of the same events stores nothing new.
        db.append_events(tenant, &events[..2]).await.unwrap();
        let stored = db.outbox_events(tenant).await.unwrap();
        assert_eq!(stored.len(), 5, "{name}");
        assert_eq!(
            stored.iter().map(|m| m.event.clone()).collect::<Vec<_>>(),
            events,
            "{name}: round trip in order"
        );
        assert_eq!(
            stored[0].event.payload,
            serde_json::json!({ "account": "A-0" })
        );

        // Only this tenant's events, so that parallel tests in one schema do not interfere.
        let ours = |messages: Vec<dotmac_sqlx::OutboxMessage>| -> Vec<i64> {
            messages
                .into_iter()
                .filter(|m| m.event.tenant == tenant)
                .map(|m| m.seq)
                .collect()
        };
        let lease = chrono::Duration::minutes(5);
        let first = ours(
            db.claim_outbox("relay-1", 10_000, at(3, 0), lease)
                .await
                .unwrap(),
        );
        assert_eq!(first.len(), 5, "{name}");
        let second = ours(
            db.claim_outbox("relay-2", 10_000, at(3, 0), lease)
                .await
                .unwrap(),
        );
        assert!(
            second.is_empty(),
            "{name}: leased events are not claimed twice"
        );

        // A relay that does not hold the claim marks nothing.
        assert_eq!(
            db.mark_delivered("relay-2", &first, at(3, 0))
                .await
                .unwrap(),
            0,
            "{name}"
        );
        assert_eq!(
            db.mark_delivered("relay-1", &first[..3], at(3, 0))
                .await
                .unwrap(),
            3
        );

        // relay-1 dies; after the lease the two undelivered events go to relay-2.
        let retried = db
            .claim_outbox("relay-2", 10_000, at(3, 1), lease)
            .await
            .unwrap();
        let retried: Vec<_> = retried
            .into_iter()
            .filter(|m| m.event.tenant == tenant)
            .collect();
        assert_eq!(
            retried.iter().map(|m| m.seq).collect::<Vec<_>>(),
            first[3..].to_vec()
        );
        assert!(retried.iter().all(|m| m.attempts == 2), "{name}");
        // The late relay-1 can no longer mark them; relay-2 can.
        assert_eq!(
            db.mark_delivered("relay-1", &first[3..], at(3, 1))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            db.mark_delivered("relay-2", &first[3..], at(3, 1))
                .await
                .unwrap(),
            2
        );
        let later = ours(
            db.claim_outbox("relay-3", 10_000, at(4, 0), lease)
                .await
                .unwrap(),
        );
        assert!(
            later.is_empty(),
            "{name}: delivered events are never claimed again"
        );
    }
}

#[tokio::test]
async fn appending_another_tenants_event_is_refused_and_writes_nothing() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let other = new_tenant(&db).await;
        let events = vec![event(tenant, "A"), event(other, "B")];
        let refused = db.append_events(tenant, &events).await;
        match refused {
            Err(SqlError::TenantMismatch {
                what: "outbox event",
                id,
                expected,
                found,
            }) => {
                assert_eq!(id, events[1].id.to_string(), "{name}");
                assert_eq!((expected, found), (tenant, other), "{name}");
            }
            other => panic!("{name}: expected a tenant mismatch, got {other:?}"),
        }
        assert!(db.outbox_events(tenant).await.unwrap().is_empty(), "{name}");
        assert!(db.outbox_events(other).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn money_round_trips_exactly() {
    let amounts = [
        dec!(0),
        dec!(0.01),
        dec!(-0.01),
        dec!(29.99),
        dec!(1234567890123456.78),
        dec!(0.000000000001),
        dec!(-98765.4321),
        dec!(100.10),
    ];
    for (name, db) in backends().await {
        let store = SqlStore::new(db.clone());
        let tenant = new_tenant(&db).await;
        let records: Vec<Invoice> = amounts
            .iter()
            .map(|&a| {
                invoice(
                    a,
                    &[
                        (dec!(1.5), a, a * dec!(1.5)),
                        (dec!(3), dec!(0.333), dec!(0.999)),
                    ],
                )
            })
            .collect();
        let result = common::issue(&store, tenant, records.clone())
            .await
            .unwrap();
        assert_eq!(result.issued.len(), records.len(), "{name}");
        for (record, number) in records.iter().zip(1..) {
            let stored = store.invoice(tenant, record.id).await.unwrap().unwrap();
            assert_eq!(stored, issued_as(record, number), "{name}");
            // Scale too: 100.10 stays 100.10, not 100.1.
            assert_eq!(
                stored.total.amount().to_string(),
                record.total.amount().to_string(),
                "{name}"
            );
            assert_eq!(
                stored.lines[0].unit_price.amount().to_string(),
                record.lines[0].unit_price.amount().to_string(),
                "{name}"
            );
        }
    }
}

#[tokio::test]
async fn a_failed_invoice_write_leaves_nothing_behind() {
    for (name, db) in backends().await {
        let store = SqlStore::new(db.clone());
        let tenant = new_tenant(&db).await;
        let first = invoice(dec!(1), &[(dec!(1), dec!(1), dec!(1))]);
        // Another document under the same invoice id: the second insert row collides.
        let mut duplicate = invoice(dec!(2), &[(dec!(1), dec!(2), dec!(2))]);
        duplicate.id = first.id;
        let result = common::issue(&store, tenant, vec![first.clone(), duplicate.clone()]).await;
        match result {
            Err(BillingError::AlreadyExists { what, id }) => {
                assert_eq!((what, id), ("invoice", first.id.to_string()), "{name}");
            }
            other => panic!("{name}: expected a duplicate invoice, got {other:?}"),
        }
        assert_eq!(
            store.invoice(tenant, first.id).await.unwrap(),
            None,
            "{name}"
        );
        for customer in [first.customer, duplicate.customer] {
            assert!(
                store
                    .invoices_of(tenant, customer)
                    .await
                    .unwrap()
                    .is_empty(),
                "{name}"
            );
        }
        assert!(db.outbox_events(tenant).await.unwrap().is_empty(), "{name}");
        assert_eq!(
            db.last_number(tenant, "billing.invoice").await.unwrap(),
            0,
            "{name}: number given back"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_skip() {
    let options = dotmac_sqlx::DatabaseOptions::new("postgres://postgres@127.0.0.1:1/test")
        .acquire_timeout(std::time::Duration::from_secs(2));
    let refused = Database::connect_with(options).await;
    match refused {
        Err(SqlError::Connect { url, .. }) => {
            assert_eq!(url, "postgres://postgres@127.0.0.1:1/test")
        }
        other => panic!("{other:?}"),
    }
}

proptest::proptest! {
    #![proptest_config(dotmac_testing::config(24))]
    /// Any decimal a Money can hold comes back digit for digit, scale included.
    #[test]
    fn any_amount_round_trips_exactly(mantissa in proptest::num::i64::ANY, scale in 0_u32..=12) {
        let amount = Decimal::new(mantissa, scale);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            for (name, db) in backends().await {
                let store = SqlStore::new(db.clone());
                let tenant = TenantId::new();
                let record = invoice(amount, &[(amount, amount, amount)]);
                common::issue(&store, tenant, vec![record.clone()]).await.unwrap();
                let stored = store.invoice(tenant, record.id).await.unwrap().unwrap();
                assert_eq!(stored.total.amount().to_string(), amount.to_string(), "{name}");
                assert_eq!(stored.lines[0].unit_price.amount().to_string(), amount.to_string(), "{name}");
            }
        });
    }
}

/// A lease that ends past the last representable instant is refused, not a panic in `now +
/// lease`, and claims nothing.
#[tokio::test]
async fn a_lease_beyond_the_end_of_time_is_an_error_not_a_panic() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        db.append_events(tenant, &[event(tenant, "A-0")])
            .await
            .unwrap();
        let refused = db
            .claim_outbox("relay-1", 10, at(3, 0), chrono::Duration::MAX)
            .await;
        assert!(
            matches!(
                refused,
                Err(SqlError::Core(dotmac_core::CoreError::DateOutOfRange(
                    "lease expiry"
                )))
            ),
            "{name}: {refused:?}"
        );
        let claimed = db
            .claim_outbox("relay-2", 10_000, at(3, 0), chrono::Duration::minutes(5))
            .await
            .unwrap();
        assert!(
            claimed.iter().any(|m| m.event.tenant == tenant),
            "{name}: the refused claim took the event"
        );
    }
}
