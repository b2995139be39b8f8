//! The usage store behaviour suite on the in-memory store.

#[tokio::test]
async fn memory_usage_store_passes_the_usage_suite() {
    let result =
        dotmac_usage::testkit::run_usage_store_suite(dotmac_usage::InMemoryUsageStore::new).await;
    assert_eq!(result, Ok(()));
}
