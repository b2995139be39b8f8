//! Customers' stores under concurrency: services created at once from one pool never share an
//! address, on every backend.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeSet;

use dotmac_core::{CustomerId, FixedClock, SubscriptionId};
use dotmac_customers::{
    CustomerKind, CustomerService, CustomersSettings, IpPool, NewCustomer, NewService, PoolId,
    Rate, TechnicalProfile,
};
use dotmac_sqlx::SqlStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_services_take_distinct_addresses_on_every_backend() {
    for (name, db) in common::backends().await {
        if name == "sqlite-memory" {
            // One connection per pool for an in-memory database: no concurrency to test.
            continue;
        }
        let tenant = common::new_tenant(&db).await;
        let clock = FixedClock::new(common::at(2, 9));
        let service = CustomerService::new(
            SqlStore::new(db.clone()),
            clock,
            CustomersSettings::default(),
        );
        let pool = IpPool::from_cidr(PoolId::new(), "p", "10.20.0.0/27").unwrap();
        service.save_pool(tenant, &pool).await.unwrap();
        let customer = CustomerId::new();
        service
            .create_customer(
                tenant,
                customer,
                NewCustomer::lead(CustomerKind::Business {
                    legal_name: "Acme".into(),
                    tax_id: None,
                })
                .signed(),
            )
            .await
            .unwrap();
        let pool_id = pool.id();
        let mut tasks = Vec::new();
        for i in 0..24 {
            let service = service.clone();
            tasks.push(tokio::spawn(async move {
                service
                    .create_service(
                        tenant,
                        NewService {
                            customer,
                            subscription: SubscriptionId::new(),
                            username: format!("c{i}"),
                            password: "pw".into(),
                            profile: TechnicalProfile::new(Rate::mbps(10, 2)).from_pool(pool_id),
                        },
                    )
                    .await
            }));
        }
        let mut addresses = BTreeSet::new();
        for task in tasks {
            let created = task
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            addresses.insert(created.address().unwrap());
        }
        assert_eq!(
            addresses.len(),
            24,
            "{name}: every service has an address of its own"
        );
        let held = dotmac_customers::ServiceStore::assigned_addresses(
            service.store(),
            tenant,
            pool.first(),
            pool.last(),
        )
        .await
        .unwrap();
        assert_eq!(held, addresses, "{name}");
    }
}
