//! dotmac-partners' store behaviour suite on SQLite (memory and file) and PostgreSQL (when
//! `DATABASE_URL` is set).

use crate::common;

use dotmac_partners::testkit;
use dotmac_sqlx::SqlStore;

#[tokio::test]
async fn partner_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result = testkit::run_store_suite(
            || SqlStore::new(db.clone()),
            |store, tenant| testkit::outbox_events(store, tenant),
        )
        .await;
        assert_eq!(result, Ok(()), "partner store suite on {name}");
    }
}
