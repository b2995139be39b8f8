//! Issue 9 on SQLite and (with DATABASE_URL) PostgreSQL: every write checks the tenant of what
//! it writes, ids are per tenant (a duplicate within a tenant is an error, never a silent
//! drop), and storage failures are typed errors that keep their cause.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::error::Error as _;

use chrono::{Duration, NaiveDate};
use common::{at, backends, new_tenant};
use dotmac_billing::{BillingError, CatalogStore, Charge, Plan, Product};
use dotmac_core::{
    Currency, CustomerId, EventId, InvoiceId, Money, PlanId, ProductId, StorageErrorKind,
    SubscriptionId, TenantId,
};
use dotmac_sqlx::{
    BillRunId, Database, InputProblem, InvoiceLineRecord, InvoiceRecord, OutboxEvent, SqlError,
    SqlStore,
};
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

fn invoice(
    id: InvoiceId,
    subscription: Option<SubscriptionId>,
    description: &str,
) -> InvoiceRecord {
    InvoiceRecord {
        id,
        customer: CustomerId::new(),
        subscription,
        issued_on: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        total: Money::new(dec!(10), Currency::USD),
        status: "open".into(),
        lines: vec![InvoiceLineRecord {
            description: description.into(),
            quantity: dec!(1),
            unit_price: dec!(10),
            amount: dec!(10),
        }],
        body: serde_json::json!({ "note": description }),
    }
}

/// Nothing of either tenant is stored: no invoice, no number, no outbox event.
async fn assert_nothing_stored(name: &str, db: &Database, tenants: &[TenantId]) {
    for &tenant in tenants {
        assert!(
            db.invoices(tenant).await.unwrap().is_empty(),
            "{name}: invoices"
        );
        assert_eq!(
            db.last_number(tenant, "INV").await.unwrap(),
            0,
            "{name}: numbers"
        );
        assert!(
            db.outbox_events(tenant).await.unwrap().is_empty(),
            "{name}: outbox"
        );
    }
}

/// A run of one chunk over one subscription, as of 1 March.
async fn plan_run(
    db: &Database,
    tenant: TenantId,
    run: BillRunId,
    subscription: SubscriptionId,
) -> dotmac_sqlx::Result<u32> {
    db.plan_bill_run(
        tenant,
        run,
        at(1, 0).date_naive(),
        &[subscription],
        10,
        at(1, 0),
    )
    .await
}

fn assert_tenant_mismatch<T: std::fmt::Debug>(
    name: &str,
    result: dotmac_sqlx::Result<T>,
    event: &OutboxEvent,
    expected: TenantId,
) {
    match result {
        Err(SqlError::TenantMismatch {
            what: "outbox event",
            id,
            expected: e,
            found,
        }) => {
            assert_eq!(id, event.id.to_string(), "{name}");
            assert_eq!((e, found), (expected, event.tenant), "{name}");
        }
        other => panic!("{name}: expected a tenant mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn insert_invoices_refuses_another_tenants_event_and_stores_nothing() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let other = new_tenant(&db).await;
        let foreign = event(other, EventId::new(), "B");
        let refused = db
            .insert_invoices(
                tenant,
                "INV",
                &[invoice(InvoiceId::new(), None, "Fibre")],
                &[event(tenant, EventId::new(), "A"), foreign.clone()],
            )
            .await;
        assert_tenant_mismatch(name, refused, &foreign, tenant);
        assert_nothing_stored(name, &db, &[tenant, other]).await;
    }
}

#[tokio::test]
async fn complete_chunk_refuses_another_tenants_event_and_stores_nothing() {
    for (name, db) in backends().await {
        let tenant = new_tenant(&db).await;
        let other = new_tenant(&db).await;
        let run = BillRunId::new();
        let subscription = SubscriptionId::new();
        plan_run(&db, tenant, run, subscription).await.unwrap();
        let claim = db
            .claim_chunk(tenant, run, "w1", at(1, 1), Duration::minutes(5))
            .await
            .unwrap()
            .unwrap();
        let foreign = event(other, EventId::new(), "B");
        let refused = db
            .complete_chunk(
                &claim,
                "INV",
                &[invoice(InvoiceId::new(), Some(subscription), "Fibre")],
                std::slice::from_ref(&foreign),
                at(1, 2),
            )
            .await;
        assert_tenant_mismatch(name, refused, &foreign, tenant);
        assert_nothing_stored(name, &db, &[tenant, other]).await;
        let progress = db.bill_run_progress(tenant, run).await.unwrap();
        assert_eq!(progress.done, 0, "{name}: the chunk is still pending");
    }
}

#[tokio::test]
async fn tenants_may_use_the_same_invoice_run_and_event_ids() {
    for (name, db) in backends().await {
        let a = new_tenant(&db).await;
        let b = new_tenant(&db).await;
        let (invoice_id, run, event_id) = (InvoiceId::new(), BillRunId::new(), EventId::new());
        let subscription = SubscriptionId::new();
        for (tenant, account) in [(a, "A"), (b, "B")] {
            db.insert_invoices(
                tenant,
                "INV",
                &[invoice(invoice_id, None, account)],
                &[event(tenant, event_id, account)],
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: tenant {account}: {e}"));
            plan_run(&db, tenant, run, subscription)
                .await
                .unwrap_or_else(|e| panic!("{name}: tenant {account}: {e}"));
        }
        for (tenant, account) in [(a, "A"), (b, "B")] {
            let stored = db.invoice(tenant, invoice_id).await.unwrap().unwrap();
            assert_eq!(stored.record.lines[0].description, account, "{name}");
            assert_eq!(stored.number, 1, "{name}");
            let events = db.outbox_events(tenant).await.unwrap();
            assert_eq!(events.len(), 1, "{name}");
            assert_eq!(events[0].event, event(tenant, event_id, account), "{name}");
            assert_eq!(db.bill_run_progress(tenant, run).await.unwrap().chunks, 1);
        }
        // The two runs' chunks are apart too: claiming B's does not touch A's.
        let claim_b = db
            .claim_chunk(b, run, "w", at(1, 1), Duration::minutes(5))
            .await
            .unwrap()
            .unwrap();
        db.complete_chunk(&claim_b, "INV", &[], &[], at(1, 2))
            .await
            .unwrap();
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
        let invoice_id = InvoiceId::new();
        db.insert_invoices(tenant, "INV", &[invoice(invoice_id, None, "x")], &[])
            .await
            .unwrap();
        let again = db
            .insert_invoices(tenant, "INV", &[invoice(invoice_id, None, "y")], &[])
            .await;
        assert!(
            matches!(again, Err(SqlError::Duplicate { .. })),
            "{name}: {again:?}"
        );
        assert_eq!(again.unwrap_err().kind(), StorageErrorKind::Conflict);
        assert_eq!(db.invoices(tenant).await.unwrap().len(), 1, "{name}");
        assert_eq!(db.last_number(tenant, "INV").await.unwrap(), 1, "{name}");
        let run = BillRunId::new();
        plan_run(&db, tenant, run, SubscriptionId::new())
            .await
            .unwrap();
        let replanned = plan_run(&db, tenant, run, SubscriptionId::new()).await;
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
        let refused = store.put_plan(tenant, plan.clone()).await;
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
        let nul_line = db
            .insert_invoices(
                tenant,
                "INV",
                &[invoice(InvoiceId::new(), None, "a\0b")],
                &[],
            )
            .await;
        assert!(
            matches!(
                nul_line,
                Err(SqlError::InvalidInput {
                    what: "invoice line description",
                    problem: InputProblem::NulByte
                })
            ),
            "{name}: {nul_line:?}"
        );
        assert!(db.invoices(tenant).await.unwrap().is_empty(), "{name}");
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
        // An invoice id taken twice: the storage error says Conflict and keeps the cause.
        let invoice_id = InvoiceId::new();
        let first = db
            .insert_invoices(tenant, "INV", &[invoice(invoice_id, None, "x")], &[])
            .await;
        assert!(first.is_ok(), "{name}");
        let storage: dotmac_core::StorageError = db
            .insert_invoices(tenant, "INV", &[invoice(invoice_id, None, "x")], &[])
            .await
            .unwrap_err()
            .into();
        assert_eq!(storage.kind(), StorageErrorKind::Conflict, "{name}");
        assert!(!storage.is_retryable(), "{name}");
        let sql = storage.source().and_then(|s| s.downcast_ref::<SqlError>());
        assert!(
            matches!(sql, Some(SqlError::Duplicate { .. })),
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
