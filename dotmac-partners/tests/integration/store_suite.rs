//! The partner store behaviour suite on the in-memory store (dotmac-sqlx runs it on SQLite and
//! PostgreSQL).

use dotmac_partners::{InMemoryPartnerStore, testkit};

#[tokio::test]
async fn the_memory_store_passes_the_partner_store_suite() {
    let result = testkit::run_store_suite(InMemoryPartnerStore::new, |store, tenant| {
        testkit::outbox_events(store.outbox().as_ref(), tenant)
    })
    .await;
    assert_eq!(result, Ok(()));
}
