//! dotmac-customers' behaviour tests (one binary).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod loop_tests;

#[tokio::test]
async fn the_memory_store_passes_the_store_suite() {
    dotmac_customers::testkit::run_store_suite(&dotmac_customers::InMemoryCustomerStore::new())
        .await;
}
