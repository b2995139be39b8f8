//! The store behaviour suite on the in-memory store.

#[tokio::test]
async fn memory_store_passes_the_store_suite() {
    let result = dotmac_billing::testkit::run_store_suite(dotmac_billing::MemoryStore::new).await;
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn memory_payment_store_passes_the_payment_suite() {
    let result = dotmac_billing::testkit::run_payment_store_suite(
        dotmac_billing::payments::InMemoryPaymentStore::new,
    )
    .await;
    assert_eq!(result, Ok(()));
}
