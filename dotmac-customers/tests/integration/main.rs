//! dotmac-customers' behaviour tests (one binary).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fup_properties;
mod loop_tests;

#[tokio::test]
async fn the_memory_store_passes_the_store_suite() {
    dotmac_customers::testkit::run_store_suite(&dotmac_customers::InMemoryCustomerStore::new())
        .await;
}

#[tokio::test]
async fn the_memory_store_passes_the_fair_usage_suite() {
    let outbox = std::sync::Arc::new(dotmac_core::outbox::MemoryOutbox::new());
    let store = dotmac_customers::InMemoryCustomerStore::with_outbox(outbox.clone());
    dotmac_customers::testkit::run_fair_usage_suite(store, &outbox).await;
}
