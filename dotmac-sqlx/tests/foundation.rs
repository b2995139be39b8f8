//! Behaviour of the storage foundation, run on SQLite (memory and file) and, when
//! `DATABASE_URL` is set, PostgreSQL.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use chrono::NaiveDate;
use common::{at, backends, new_tenant};
use dotmac_core::{
    Currency, CustomerId, DomainEvent, EventId, EventPayload, InvoiceId, Money, TenantId,
};
use dotmac_sqlx::{
    Database, IdempotencyClaim, InvoiceLineRecord, InvoiceRecord, OutboxEvent, SqlError,
};
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

fn invoice(total: Decimal, lines: &[(Decimal, Decimal, Decimal)]) -> InvoiceRecord {
    InvoiceRecord {
        id: InvoiceId::new(),
        customer: CustomerId::new(),
        subscription: None,
        issued_on: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        total: Money::new(total, Currency::USD),
        status: "open".into(),
        lines: lines
            .iter()
            .map(|&(quantity, unit_price, amount)| InvoiceLineRecord {
                description: "Fibre 300".into(),
                quantity,
                unit_price,
                amount,
            })
            .collect(),
        body: serde_json::json!({ "note": "domain body" }),
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
        let tenant = new_tenant(&db).await;
        let records: Vec<InvoiceRecord> = amounts
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
        db.insert_invoices(tenant, "INV", &records, &[])
            .await
            .unwrap();
        let stored = db.invoices(tenant).await.unwrap();
        assert_eq!(stored.len(), records.len(), "{name}");
        for (stored, record) in stored.iter().zip(&records) {
            assert_eq!(&stored.record, record, "{name}");
            // Scale too: 100.10 stays 100.10, not 100.1.
            assert_eq!(
                stored.record.total.amount().to_string(),
                record.total.amount().to_string(),
                "{name}"
            );
        }
        assert_eq!(
            stored.iter().map(|s| s.number).collect::<Vec<_>>(),
            (1..=amounts.len() as i64).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_stale_invoice_update_is_a_typed_conflict_and_changes_nothing() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let record = invoice(dec!(10), &[]);
        db.insert_invoices(tenant, "INV", std::slice::from_ref(&record), &[])
            .await
            .unwrap();
        let paid = serde_json::json!({ "paid": true });
        let v2 = db
            .update_invoice(tenant, record.id, 1, "paid", &paid)
            .await
            .unwrap();
        assert_eq!(v2, 2, "{name}");
        let stale = db
            .update_invoice(tenant, record.id, 1, "void", &serde_json::json!({}))
            .await;
        match stale {
            Err(SqlError::Conflict {
                entity: "invoice",
                expected: 1,
                actual: Some(2),
                ..
            }) => {}
            other => panic!("{name}: {other:?}"),
        }
        let stored = db.invoice(tenant, record.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.record.status.as_str(), stored.version),
            ("paid", 2),
            "{name}"
        );
        assert_eq!(stored.record.body, paid, "{name}");
        // Another tenant cannot update it: to them it does not exist.
        let other = new_tenant(&db).await;
        let foreign = db.update_invoice(other, record.id, 2, "void", &paid).await;
        assert!(
            matches!(foreign, Err(SqlError::Conflict { actual: None, .. })),
            "{name}"
        );
        assert_eq!(db.invoice(other, record.id).await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn a_failed_invoice_write_leaves_nothing_behind() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let first = invoice(dec!(1), &[(dec!(1), dec!(1), dec!(1))]);
        let mut duplicate = invoice(dec!(2), &[(dec!(1), dec!(2), dec!(2))]);
        duplicate.id = first.id;
        let events = vec![event(tenant, "X")];
        let result = db
            .insert_invoices(tenant, "INV", &[first, duplicate], &events)
            .await;
        assert!(
            matches!(result, Err(SqlError::Duplicate { .. })),
            "{name}: {result:?}"
        );
        assert!(db.invoices(tenant).await.unwrap().is_empty(), "{name}");
        assert!(db.outbox_events(tenant).await.unwrap().is_empty(), "{name}");
        assert_eq!(
            db.last_number(tenant, "INV").await.unwrap(),
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
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Any decimal a Money can hold comes back digit for digit, scale included.
    #[test]
    fn any_amount_round_trips_exactly(mantissa in proptest::num::i64::ANY, scale in 0_u32..=12) {
        let amount = Decimal::new(mantissa, scale);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            for (name, db) in backends().await {
                let tenant = TenantId::new();
                let record = invoice(amount, &[(amount, amount, amount)]);
                db.insert_invoices(tenant, "INV", std::slice::from_ref(&record), &[]).await.unwrap();
                let stored = db.invoice(tenant, record.id).await.unwrap().unwrap();
                assert_eq!(stored.record.total.amount().to_string(), amount.to_string(), "{name}");
                assert_eq!(stored.record.lines[0].unit_price.to_string(), amount.to_string(), "{name}");
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
