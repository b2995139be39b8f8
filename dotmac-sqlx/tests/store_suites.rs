//! The domain crates' store behaviour suites (billing, usage, payments, dunning) on SQLite
//! (memory and file) and PostgreSQL (when `DATABASE_URL` is set).

mod common;

use dotmac_billing::testkit::StoredEvent;
use dotmac_core::TenantId;
use dotmac_core::outbox::BoxFuture;
use dotmac_sqlx::SqlStore;

/// A tenant's outbox events as the billing suite reads them.
fn sql_outbox(
    store: &SqlStore,
    tenant: TenantId,
) -> BoxFuture<'_, Result<Vec<StoredEvent>, String>> {
    Box::pin(async move {
        let events = store
            .database()
            .outbox_events(tenant)
            .await
            .map_err(|e| e.to_string())?;
        Ok(events
            .into_iter()
            .map(|m| StoredEvent {
                id: m.event.id,
                event_type: m.event.event_type,
                payload: m.event.payload,
            })
            .collect())
    })
}

#[tokio::test]
async fn billing_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result =
            dotmac_billing::testkit::run_store_suite(|| SqlStore::new(db.clone()), sql_outbox)
                .await;
        assert_eq!(result, Ok(()), "billing store suite on {name}");
    }
}

#[tokio::test]
async fn usage_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result =
            dotmac_usage::testkit::run_usage_store_suite(|| SqlStore::new(db.clone())).await;
        assert_eq!(result, Ok(()), "usage store suite on {name}");
    }
}

#[tokio::test]
async fn payment_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result =
            dotmac_collections::testkit::run_payment_store_suite(|| SqlStore::new(db.clone()))
                .await;
        assert_eq!(result, Ok(()), "payment store suite on {name}");
    }
}

#[tokio::test]
async fn dunning_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result =
            dotmac_collections::testkit::run_dunning_store_suite(|| SqlStore::new(db.clone()))
                .await;
        assert_eq!(result, Ok(()), "dunning store suite on {name}");
    }
}
