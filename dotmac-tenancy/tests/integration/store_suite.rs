//! The behaviour suite every tenancy store runs, on the in-memory store.

use dotmac_tenancy::InMemoryTenancyStore;
use dotmac_tenancy::testkit::{memory_outbox, run_tenancy_store_suite};

#[tokio::test]
async fn the_memory_store_passes_the_tenancy_store_suite() {
    let result = run_tenancy_store_suite(InMemoryTenancyStore::new, memory_outbox).await;
    assert_eq!(result, Ok(()));
}
