//! Usage, payment-ledger and dunning stores on SQLite and (with DATABASE_URL) PostgreSQL.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::common;

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use common::{at, backends};
use dotmac_collections::{AllocationTarget, CustomerLedger, PaymentStore};
use dotmac_collections::{DunningState, DunningStore};
use dotmac_core::{Currency, CustomerId, InvoiceId, Money, PaymentId, TenantId};
use dotmac_sqlx::SqlStore;
use dotmac_usage::{MeterId, UsageEvent, UsageEventId, UsageStore};
use rust_decimal_macros::dec;

fn usage(n: u128, customer: CustomerId, meter: MeterId, minutes: i64) -> UsageEvent {
    UsageEvent {
        id: UsageEventId::from_u128(n),
        customer,
        subscription: None,
        meter,
        quantity: dec!(1.000000001) * rust_decimal::Decimal::from(n as u64),
        timestamp: at(1, 0) + Duration::minutes(minutes),
        properties: BTreeMap::from([("nas".to_owned(), format!("nas-{n}"))]),
    }
}

#[tokio::test]
async fn usage_ingestion_is_idempotent_exact_and_tenant_scoped() {
    for (name, db) in backends().await {
        let store = SqlStore::new(db);
        let (tenant, other) = (TenantId::new(), TenantId::new());
        let (customer, meter) = (CustomerId::new(), MeterId::new());
        let events: Vec<UsageEvent> = (1..=5)
            .map(|n| usage(n, customer, meter, 60 - n as i64))
            .collect();
        let mut batch = events.clone();
        batch.push(events[0].clone()); // repeated within the batch
        let new = UsageStore::append_events(&store, tenant, &batch)
            .await
            .unwrap();
        assert_eq!(new, vec![true, true, true, true, true, false], "{name}");
        // Replayed later: nothing new.
        assert_eq!(
            UsageStore::append_events(&store, tenant, &events[..2])
                .await
                .unwrap(),
            vec![false, false]
        );
        // Known and new ids mixed (and the new one repeated): only the new one is stored.
        let fresh = usage(6, customer, meter, 70);
        assert_eq!(
            UsageStore::append_events(&store, tenant, &[events[2].clone(), fresh.clone(), fresh])
                .await
                .unwrap(),
            vec![false, true, false],
            "{name}"
        );
        // The same ids are new for another tenant.
        assert_eq!(
            UsageStore::append_events(&store, other, &events[..1])
                .await
                .unwrap(),
            vec![true]
        );

        let found = store
            .events_between(
                tenant,
                customer,
                meter,
                at(1, 0),
                at(1, 0) + Duration::minutes(58),
            )
            .await
            .unwrap();
        // [from, to): minutes 55..=57 (events 5, 4, 3), in timestamp order, exact quantities.
        let mut expected: Vec<UsageEvent> = events[2..].to_vec();
        expected.sort_by_key(|e| e.timestamp);
        assert_eq!(found, expected, "{name}");
        assert_eq!(found[0].quantity.to_string(), "5.000000005", "{name}");
        let elsewhere = store
            .events_between(tenant, customer, MeterId::new(), at(1, 0), at(2, 0))
            .await
            .unwrap();
        assert!(elsewhere.is_empty(), "{name}");
        assert_eq!(
            UsageStore::append_events(&store, tenant, &[])
                .await
                .unwrap(),
            Vec::<bool>::new()
        );
    }
}

#[tokio::test]
async fn a_payment_ledger_round_trips_and_refuses_a_stale_append_whole() {
    for (name, db) in backends().await {
        let store = SqlStore::new(db);
        let tenant = TenantId::new();
        let customer = CustomerId::new();
        let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
        let mut ledger = CustomerLedger::new(customer, Currency::USD);
        let invoice = InvoiceId::new();
        let issued = ledger
            .record_invoice(
                invoice,
                Money::new(dec!(49.99), Currency::USD),
                day(1),
                day(15),
            )
            .unwrap();
        PaymentStore::append_entries(&store, tenant, customer, &issued, &[])
            .await
            .unwrap();
        let paid = ledger
            .record_payment(
                PaymentId::new(),
                Money::new(dec!(20.01), Currency::USD),
                day(3),
                AllocationTarget::OldestFirst,
            )
            .unwrap();
        PaymentStore::append_entries(&store, tenant, customer, &paid.entries, &[])
            .await
            .unwrap();

        let stored = store.entries(tenant, customer).await.unwrap();
        assert_eq!(stored, ledger.entries().to_vec(), "{name}");
        let rebuilt = CustomerLedger::from_entries(customer, Currency::USD, stored).unwrap();
        assert_eq!(rebuilt.entries(), ledger.entries(), "{name}");

        // A writer holding a stale ledger appends at taken positions: refused, nothing kept.
        let mut stale =
            CustomerLedger::from_entries(customer, Currency::USD, issued.clone()).unwrap();
        let late = stale
            .record_payment(
                PaymentId::new(),
                Money::new(dec!(5), Currency::USD),
                day(4),
                AllocationTarget::OldestFirst,
            )
            .unwrap();
        let refused =
            PaymentStore::append_entries(&store, tenant, customer, &late.entries, &[]).await;
        assert!(
            matches!(
                refused,
                Err(dotmac_collections::CollectionsError::AlreadyExists {
                    what: "ledger entry",
                    ..
                })
            ),
            "{name}: {refused:?}"
        );
        assert_eq!(
            store.entries(tenant, customer).await.unwrap(),
            ledger.entries().to_vec(),
            "{name}"
        );
        assert!(
            store
                .entries(TenantId::new(), customer)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn dunning_state_defaults_and_is_replaced() {
    for (name, db) in backends().await {
        let store = SqlStore::new(db);
        let tenant = TenantId::new();
        let invoice = InvoiceId::new();
        assert_eq!(
            store.state(tenant, invoice).await.unwrap(),
            DunningState::default(),
            "{name}"
        );
        let fired: DunningState = serde_json::from_str(r#"{"fired": 5}"#).unwrap();
        store.save_state(tenant, invoice, fired, &[]).await.unwrap();
        assert_eq!(store.state(tenant, invoice).await.unwrap(), fired, "{name}");
        let more: DunningState = serde_json::from_str(r#"{"fired": 7}"#).unwrap();
        store.save_state(tenant, invoice, more, &[]).await.unwrap();
        assert_eq!(store.state(tenant, invoice).await.unwrap(), more, "{name}");
        assert_eq!(
            store.state(TenantId::new(), invoice).await.unwrap(),
            DunningState::default()
        );
    }
}
