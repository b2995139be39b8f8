//! The store behaviour suites on the in-memory stores.

#[tokio::test]
async fn memory_payment_store_passes_the_payment_suite() {
    let result = dotmac_collections::testkit::run_payment_store_suite(
        dotmac_collections::InMemoryPaymentStore::new,
        dotmac_collections::testkit::outbox_events,
    )
    .await;
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn memory_dunning_store_passes_the_dunning_suite() {
    let result = dotmac_collections::testkit::run_dunning_store_suite(
        dotmac_collections::InMemoryDunningStore::new,
        |store, tenant| dotmac_collections::testkit::outbox_events(store.outbox(), tenant),
    )
    .await;
    assert_eq!(result, Ok(()));
}
