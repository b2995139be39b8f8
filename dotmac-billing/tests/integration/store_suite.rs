//! The store behaviour suite on the in-memory store.

#[tokio::test]
async fn memory_store_passes_the_store_suite() {
    let result = dotmac_billing::testkit::run_store_suite(
        dotmac_billing::MemoryStore::new,
        dotmac_billing::testkit::core_outbox,
    )
    .await;
    assert_eq!(result, Ok(()));
}

/// A subscription stored with the last revision there is: committing it would overflow the
/// revision, so the commit is refused and writes nothing (it used to panic on `+= 1`).
#[tokio::test]
async fn a_revision_without_successor_is_refused_not_a_panic() {
    use chrono::NaiveDate;
    use dotmac_billing::{
        BillingCommit, BillingError, Charge, InvoiceStore, MemoryStore, NewSubscription, Plan,
        SubscriptionStore,
    };
    use dotmac_core::{CoreError, Currency, CustomerId, Money, PlanId, ProductId, TenantId};

    let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let plan = Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "Fibre")
        .charge(Charge::recurring_flat([Money::from_minor(
            1000,
            Currency::USD,
        )]))
        .build(start)
        .unwrap();
    let customer = CustomerId::from_u128(1);
    let mut sub = NewSubscription::new(customer, plan.id, Currency::USD, start)
        .create(&plan, Currency::USD)
        .unwrap();
    dotmac_billing::internal::set_subscription_revision(&mut sub, u64::MAX);
    let (store, tenant) = (MemoryStore::new(), TenantId::from_u128(1));
    store
        .insert_subscription(tenant, sub.clone(), Vec::new())
        .await
        .unwrap();
    let out = dotmac_billing::bill_due(
        &sub,
        &plan,
        &[],
        NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let refused = store
        .commit(
            tenant,
            BillingCommit {
                subscription: Some(out.subscription.clone()),
                invoices: out.invoices.clone(),
                ..BillingCommit::default()
            },
        )
        .await;
    assert_eq!(
        refused,
        Err(BillingError::Core(CoreError::Overflow {
            operation: "subscription revision"
        }))
    );
    assert_eq!(store.invoices_of(tenant, customer).await.unwrap(), vec![]);
    assert_eq!(
        store
            .subscription(tenant, sub.id)
            .await
            .unwrap()
            .map(|s| s.revision()),
        Some(u64::MAX)
    );
}
