//! The store behaviour suite against the in-memory store (dotmac-sqlx runs it on its stores).

use dotmac_support::InMemorySupportStore;
use dotmac_support::testkit::run_store_suite;

#[tokio::test]
async fn in_memory_store_passes_the_suite() {
    run_store_suite(&InMemorySupportStore::new()).await;
}
