//! The domain crates' store behaviour suites (billing, usage, payments, dunning) on SQLite
//! (memory and file) and PostgreSQL (when `DATABASE_URL` is set).

mod common;

use dotmac_billing::testkit::core_outbox;
use dotmac_core::TenantId;
use dotmac_sqlx::SqlStore;

/// A tenant's outbox as the collections suites read it.
fn ledger_outbox(
    store: &SqlStore,
    tenant: TenantId,
) -> dotmac_collections::testkit::OutboxRead<'_> {
    Box::pin(async move {
        store
            .database()
            .outbox_events(tenant)
            .await
            .map(|messages| {
                messages
                    .into_iter()
                    .map(|m| (m.event.id, m.event.event_type))
                    .collect()
            })
            .map_err(|e| e.to_string())
    })
}

#[tokio::test]
async fn billing_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result =
            dotmac_billing::testkit::run_store_suite(|| SqlStore::new(db.clone()), core_outbox)
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
        let result = dotmac_collections::testkit::run_payment_store_suite(
            || SqlStore::new(db.clone()),
            ledger_outbox,
        )
        .await;
        assert_eq!(result, Ok(()), "payment store suite on {name}");
    }
}

#[tokio::test]
async fn dunning_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result = dotmac_collections::testkit::run_dunning_store_suite(
            || SqlStore::new(db.clone()),
            ledger_outbox,
        )
        .await;
        assert_eq!(result, Ok(()), "dunning store suite on {name}");
    }
}

/// The outbox suite claims across tenants, so each backend gets a database of its own: a fresh
/// SQLite memory database and a PostgreSQL schema no other test writes to.
#[tokio::test]
async fn outbox_store_suite_passes_on_every_backend() {
    let mut backends = vec![("sqlite memory", common::sqlite_memory().await)];
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let schema = format!(
            "dotmac_test_outbox_suite_{:08x}",
            common::migrations_fingerprint()
        );
        let options = dotmac_sqlx::DatabaseOptions::new(&url).schema(schema);
        let db = dotmac_sqlx::Database::connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unusable: {e}"));
        backends.push(("postgres", db));
    }
    for (name, db) in backends {
        let store = SqlStore::new(db);
        let result = dotmac_core::outbox::testkit::run_outbox_store_suite(&store).await;
        assert_eq!(result, Ok(()), "outbox store suite on {name}");
    }
}

#[tokio::test]
async fn customers_store_suite_passes_on_every_backend() {
    for (_name, db) in common::backends().await {
        dotmac_customers::testkit::run_store_suite(&SqlStore::new(db.clone())).await;
    }
}
