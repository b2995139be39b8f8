//! dotmac-support's store behaviour suite on SQLite (memory and file) and PostgreSQL.

use crate::common;

use dotmac_sqlx::SqlStore;

#[tokio::test]
async fn support_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        eprintln!("support store suite on {name}");
        dotmac_support::testkit::run_store_suite(&SqlStore::new(db)).await;
    }
}
