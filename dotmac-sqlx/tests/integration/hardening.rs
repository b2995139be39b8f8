//! Issue 9 on SQLite and (with DATABASE_URL) PostgreSQL: every write checks the tenant of what
//! it writes, ids are per tenant (a duplicate within a tenant is an error, never a silent
//! drop), and storage failures are typed errors that keep their cause.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::common;

use std::error::Error as _;

use chrono::{Duration, NaiveDate};
use common::{at, backends, new_tenant};
use dotmac_billing::{
    BillingError, BillingSettings, CatalogStore, Charge, CustomerAccount, DocumentNumber, Invoice,
    InvoiceStore, NewSubscription, Plan, Product, SubscriptionStore,
};
use dotmac_core::{
    Currency, CustomerId, EventId, FixedClock, Money, PlanId, ProductId, StorageErrorKind, TenantId,
};
use dotmac_sqlx::{BillRunId, BillWorker, InputProblem, OutboxEvent, SqlError, SqlStore};
use dotmac_support::store::AgentStore;
use dotmac_support::{Agent, AgentId, SupportError};
use rust_decimal_macros::dec;

fn event(tenant: TenantId, id: EventId, account: &str) -> OutboxEvent {
    OutboxEvent {
        id,
        tenant,
        event_type: "collections.suspended".into(),
        occurred_at: at(2, 6),
        payload: serde_json::json!({ "account": account }),
    }
}

/// Customer `C`'s invoice of pending charges on 1 March: the same document (so the same
/// invoice id, which derives from the document key) in every tenant.
fn invoice(total: rust_decimal::Decimal, text: &str) -> Invoice {
    let mut invoice = common::charges_invoice(
        CustomerId::from_u128(3),
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        total,
        &[(dec!(1), total, total)],
    );
    invoice.lines[0].text = Some(text.into());
    invoice
}

/// One subscription (its catalogue and account too), for a run to have a chunk.
async fn one_subscription(store: &SqlStore, tenant: TenantId) {
    let product = catalogue(store, tenant).await;
    let plan = plan_named(product, "Fibre 100");
    store
        .put_plan(tenant, plan.clone(), Vec::new())
        .await
        .unwrap();
    let customer = CustomerId::from_u128(3);
    store
        .put_account(tenant, CustomerAccount::new(customer, Currency::USD))
        .await
        .unwrap();
    let sub = NewSubscription::new(
        customer,
        plan.id,
        Currency::USD,
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
    )
    .create(&plan, Currency::USD)
    .unwrap();
    store
        .insert_subscription(tenant, sub, Vec::new())
        .await
        .unwrap();
}

/// A run over the tenant's subscriptions, as of 1 March.
async fn plan_run(store: &SqlStore, tenant: TenantId, run: BillRunId) -> dotmac_sqlx::Result<u32> {
    store
        .plan_billing_run(tenant, run, at(1, 0).date_naive(), 10, at(1, 0))
        .await
}

#[tokio::test]
async fn tenants_may_use_the_same_invoice_run_and_event_ids() {
    for (name, db) in backends().await {
        let store = SqlStore::new(db.clone());
        let a = new_tenant(&db).await;
        let b = new_tenant(&db).await;
        let (run, event_id) = (BillRunId::new(), EventId::new());
        let invoice_id = invoice(dec!(1), "A").id;
        for (tenant, account, total) in [(a, "A", dec!(1)), (b, "B", dec!(2))] {
            let issued = common::issue(&store, tenant, vec![invoice(total, account)])
                .await
                .unwrap_or_else(|e| panic!("{name}: tenant {account}: {e}"));
            assert_eq!(issued.issued.len(), 1, "{name}");
            assert_eq!(issued.issued[0].id, invoice_id, "{name}");
            db.append_events(tenant, &[event(tenant, event_id, account)])
                .await
                .unwrap_or_else(|e| panic!("{name}: tenant {account}: {e}"));
            one_subscription(&store, tenant).await;
            plan_run(&store, tenant, run)
                .await
                .unwrap_or_else(|e| panic!("{name}: tenant {account}: {e}"));
        }
        for (tenant, account, total) in [(a, "A", dec!(1)), (b, "B", dec!(2))] {
            let stored = store.invoice(tenant, invoice_id).await.unwrap().unwrap();
            assert_eq!(stored.lines[0].text.as_deref(), Some(account), "{name}");
            assert_eq!(stored.total, Money::new(total, Currency::USD), "{name}");
            assert_eq!(stored.number, Some(DocumentNumber(1)), "{name}");
            let events = db.outbox_events(tenant).await.unwrap();
            assert_eq!(events.len(), 1, "{name}");
            assert_eq!(events[0].event, event(tenant, event_id, account), "{name}");
            assert_eq!(db.bill_run_progress(tenant, run).await.unwrap().chunks, 1);
        }
        // The two runs' chunks are apart too: billing B's does not touch A's.
        let claim_b = db
            .claim_chunk(b, run, "w", at(1, 1), Duration::minutes(5))
            .await
            .unwrap()
            .unwrap();
        let plans = store.plans(b).await.unwrap();
        let plans = plans.into_iter().map(|p| (p.id, p)).collect();
        let settings = BillingSettings::default();
        let job = BillWorker {
            tenant: b,
            run,
            as_of: at(1, 0).date_naive(),
            plans: &plans,
            settings: &settings,
            worker: "w",
            lease: Duration::minutes(5).into(),
        };
        let billed = store
            .bill_claimed_chunk(&claim_b, &job, &FixedClock::new(at(1, 2)))
            .await
            .unwrap();
        assert_eq!(billed.subscriptions, 1, "{name}");
        assert_eq!(
            db.bill_run_progress(b, run).await.unwrap().done,
            1,
            "{name}"
        );
        assert_eq!(
            db.bill_run_progress(a, run).await.unwrap().done,
            0,
            "{name}"
        );
        let claim_a = db
            .claim_chunk(a, run, "w", at(1, 1), Duration::minutes(5))
            .await
            .unwrap();
        assert_eq!(claim_a.map(|c| c.attempt), Some(1), "{name}");
    }
}

#[tokio::test]
async fn append_events_stores_an_event_whose_id_another_tenant_used() {
    for (name, db) in backends().await {
        let a = new_tenant(&db).await;
        let b = new_tenant(&db).await;
        let id = EventId::new();
        db.append_events(b, &[event(b, id, "B")]).await.unwrap();
        db.append_events(a, &[event(a, id, "A")]).await.unwrap();
        let stored: Vec<OutboxEvent> = db
            .outbox_events(a)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.event)
            .collect();
        assert_eq!(stored, vec![event(a, id, "A")], "{name}");
    }
}

#[tokio::test]
async fn a_duplicate_id_within_a_tenant_is_an_error_never_a_silent_drop() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let id = EventId::new();
        let first = event(tenant, id, "A");
        db.append_events(tenant, std::slice::from_ref(&first))
            .await
            .unwrap();
        // The same event again is a replay: stored once, also when reported later.
        db.append_events(tenant, std::slice::from_ref(&first))
            .await
            .unwrap();
        let reported_later = OutboxEvent {
            occurred_at: at(3, 0),
            ..first.clone()
        };
        db.append_events(tenant, &[reported_later]).await.unwrap();
        // Another event under the same id is refused, and nothing of the call is written.
        let other_new = event(tenant, EventId::new(), "C");
        let refused = db
            .append_events(tenant, &[other_new, event(tenant, id, "B")])
            .await;
        match refused {
            Err(SqlError::Duplicate { what, key }) => {
                assert_eq!(
                    what,
                    "outbox event (the id names a different event of this tenant)"
                );
                assert_eq!(key, id.to_string(), "{name}");
            }
            other => panic!("{name}: expected a duplicate, got {other:?}"),
        }
        // Within one call too.
        let twice = db
            .append_events(tenant, &[event(tenant, id, "A"), event(tenant, id, "D")])
            .await;
        assert!(
            matches!(twice, Err(SqlError::Duplicate { .. })),
            "{name}: {twice:?}"
        );
        let stored: Vec<OutboxEvent> = db
            .outbox_events(tenant)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.event)
            .collect();
        assert_eq!(stored, vec![first], "{name}");

        // An invoice id or a run id twice in one tenant: a duplicate, and nothing more stored.
        let store = SqlStore::new(db.clone());
        let original = invoice(dec!(1), "x");
        common::issue(&store, tenant, vec![original.clone()])
            .await
            .unwrap();
        // Another document (another key) under the same invoice id.
        let mut again = common::charges_invoice(
            CustomerId::from_u128(4),
            NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            dec!(2),
            &[],
        );
        again.id = original.id;
        let refused = common::issue(&store, tenant, vec![again]).await;
        match refused {
            Err(BillingError::AlreadyExists { what, id }) => {
                assert_eq!((what, id), ("invoice", original.id.to_string()), "{name}");
            }
            other => panic!("{name}: expected a duplicate invoice, got {other:?}"),
        }
        assert_eq!(
            store
                .invoices_of(tenant, CustomerId::from_u128(3))
                .await
                .unwrap()
                .len(),
            1,
            "{name}"
        );
        assert!(
            store
                .invoices_of(tenant, CustomerId::from_u128(4))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        assert_eq!(
            db.last_number(tenant, "billing.invoice").await.unwrap(),
            1,
            "{name}"
        );
        let run = BillRunId::new();
        plan_run(&store, tenant, run).await.unwrap();
        let replanned = plan_run(&store, tenant, run).await;
        match replanned {
            Err(SqlError::Duplicate { what, key }) => {
                assert_eq!((what, key), ("bill run", run.to_string()), "{name}");
            }
            other => panic!("{name}: expected a duplicate run, got {other:?}"),
        }
    }
}

async fn catalogue(store: &SqlStore, tenant: TenantId) -> ProductId {
    let product = Product {
        id: ProductId::new(),
        name: "Broadband".into(),
    };
    store.put_product(tenant, product.clone()).await.unwrap();
    product.id
}

fn plan_named(product: ProductId, name: &str) -> Plan {
    Plan::builder(PlanId::new(), product, name)
        .charge(Charge::recurring_flat([Money::from_minor(
            1000,
            Currency::USD,
        )]))
        .build(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap())
        .unwrap()
}

#[tokio::test]
async fn a_nul_character_is_invalid_input_on_every_backend_and_nothing_is_stored() {
    for (name, db) in backends().await {
        let store = SqlStore::new(db.clone());
        let tenant = new_tenant(&db).await;
        let product = catalogue(&store, tenant).await;
        let plan = plan_named(product, "Fibre\0 300");
        let refused = store.put_plan(tenant, plan.clone(), Vec::new()).await;
        let Err(BillingError::Storage(error)) = &refused else {
            panic!("{name}: expected a storage error, got {refused:?}");
        };
        assert_eq!(error.kind(), StorageErrorKind::InvalidInput, "{name}");
        assert_eq!(
            error.to_string(),
            "storage invalid input: plan cannot be stored: it contains a NUL character; remove it",
            "{name}"
        );
        let cause = error.source().and_then(|s| s.downcast_ref::<SqlError>());
        assert!(
            matches!(
                cause,
                Some(SqlError::InvalidInput {
                    what: "plan",
                    problem: InputProblem::NulByte
                })
            ),
            "{name}: {cause:?}"
        );
        assert_eq!(store.plan(tenant, plan.id).await.unwrap(), None, "{name}");
        assert!(store.plans(tenant).await.unwrap().is_empty(), "{name}");

        // The same refusal for support records, tenant names and keys.
        let agent = Agent::new(AgentId::new(), "Ann\0", 3).unwrap();
        let refused = store.put_agent(tenant, &agent).await;
        let Err(SupportError::Storage(error)) = &refused else {
            panic!("{name}: expected a storage error, got {refused:?}");
        };
        assert_eq!(error.kind(), StorageErrorKind::InvalidInput, "{name}");
        assert_eq!(
            store.get_agent(tenant, agent.id).await.unwrap(),
            None,
            "{name}"
        );
        let unnamed = TenantId::new();
        let refused = db.create_tenant(unnamed, "Acme\0", at(1, 0)).await;
        assert!(
            matches!(
                refused,
                Err(SqlError::InvalidInput {
                    what: "tenant name",
                    problem: InputProblem::NulByte
                })
            ),
            "{name}: {refused:?}"
        );
        assert_eq!(db.tenant_name(unnamed).await.unwrap(), None, "{name}");
        let series = db.reserve_numbers(tenant, "INV\0", 1).await;
        assert!(
            matches!(
                series,
                Err(SqlError::InvalidInput {
                    what: "number series",
                    ..
                })
            ),
            "{name}: {series:?}"
        );
        let mut nul_line = invoice(dec!(1), "a\0b");
        nul_line.key = dotmac_billing::DocumentKey::Charges {
            customer: CustomerId::from_u128(5),
            on: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        };
        let refused = common::issue(&store, tenant, vec![nul_line]).await;
        let Err(BillingError::Storage(error)) = &refused else {
            panic!("{name}: expected a storage error, got {refused:?}");
        };
        assert_eq!(error.kind(), StorageErrorKind::InvalidInput, "{name}");
        let cause = error.source().and_then(|s| s.downcast_ref::<SqlError>());
        assert!(
            matches!(
                cause,
                Some(SqlError::InvalidInput {
                    what: "invoice",
                    problem: InputProblem::NulByte
                })
            ),
            "{name}: {cause:?}"
        );
        assert!(
            store
                .invoices_of(tenant, CustomerId::from_u128(5))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        assert_eq!(
            db.last_number(tenant, "billing.invoice").await.unwrap(),
            0,
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_oversize_key_is_invalid_input_on_every_backend() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        // An index entry this long is over PostgreSQL's B-tree bound (program limit 54000).
        let long = "k".repeat(4000);
        let refused = db
            .claim_idempotency_key(tenant, "payment", &long, "ref", at(1, 0))
            .await;
        match refused {
            Err(SqlError::InvalidInput {
                what: "idempotency key",
                problem: InputProblem::TooLong { bytes, max },
            }) => assert_eq!((bytes, max), (4000, 1024), "{name}"),
            other => panic!("{name}: expected invalid input, got {other:?}"),
        }
        let refused = db.reserve_numbers(tenant, &long, 1).await;
        assert_eq!(
            refused.unwrap_err().kind(),
            StorageErrorKind::InvalidInput,
            "{name}"
        );
        assert_eq!(
            db.last_number(tenant, &long[..1024]).await.unwrap(),
            0,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_conflict_is_a_storage_conflict_whose_source_reaches_the_driver() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        // The tenant registry refuses the same id twice; its driver error is kept.
        let again = db
            .create_tenant(tenant, "Again", at(1, 0))
            .await
            .unwrap_err();
        assert_eq!(again.kind(), StorageErrorKind::Conflict, "{name}");
        // A bill run id taken twice: the storage error says Conflict and keeps the cause.
        let store = SqlStore::new(db.clone());
        let run = BillRunId::new();
        assert!(plan_run(&store, tenant, run).await.is_ok(), "{name}");
        let storage: dotmac_core::StorageError =
            plan_run(&store, tenant, run).await.unwrap_err().into();
        assert_eq!(storage.kind(), StorageErrorKind::Conflict, "{name}");
        assert!(!storage.is_retryable(), "{name}");
        let sql = storage.source().and_then(|s| s.downcast_ref::<SqlError>());
        assert!(
            matches!(
                sql,
                Some(SqlError::Duplicate {
                    what: "bill run",
                    ..
                })
            ),
            "{name}: {sql:?}"
        );

        // A failure that only the driver sees keeps the driver's error: a closed pool is
        // what a lost server looks like, retryable.
        db.close().await;
        let closed = db.tenant_name(tenant).await.unwrap_err();
        assert_eq!(
            closed.kind(),
            StorageErrorKind::Unavailable,
            "{name}: {closed}"
        );
        let storage = dotmac_core::StorageError::from(closed);
        assert!(storage.is_retryable(), "{name}");
        let mut chain: Vec<String> = Vec::new();
        let mut cause = storage.source();
        let mut reached_driver = false;
        while let Some(error) = cause {
            chain.push(error.to_string());
            reached_driver |= error.downcast_ref::<sqlx::Error>().is_some();
            cause = error.source();
        }
        assert!(
            reached_driver,
            "{name}: the chain {chain:?} stops before sqlx's error"
        );
    }
}
