//! Billing's suspension and restore events reach the network: through the outbox, the
//! facade's `NetworkFollowsBilling` suspends the subscription's services and the provisioning
//! handler carries the command to the provisioner; a redelivered event changes nothing.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac::billing::BillingEvent;
use dotmac::customers::{
    Access, CustomerKind, CustomerService, CustomersSettings, InMemoryCustomerStore,
    MemoryProvisioner, NewCustomer, NewService, ProvisioningHandler, Rate, TechnicalProfile,
};
use dotmac::outbox::{Dispatcher, DispatcherSettings, MemoryOutbox, OutboxEvent, OutboxStore};
use dotmac::reactions::NetworkFollowsBilling;
use dotmac::{CustomerId, DomainEvent, ManualClock, SubscriptionId, TenantId};

#[tokio::test]
async fn billing_suspensions_and_restores_reach_the_provisioner_once() {
    let tenant = TenantId::new();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap(),
    ));
    let outbox = Arc::new(MemoryOutbox::new());
    let customers = CustomerService::new(
        InMemoryCustomerStore::with_outbox(outbox.clone()),
        clock.clone(),
        CustomersSettings::default(),
    );
    let network = Arc::new(MemoryProvisioner::new());
    let dispatcher = Dispatcher::new(outbox.clone(), clock.clone(), DispatcherSettings::new("t"))
        .handler(Arc::new(NetworkFollowsBilling::new(customers.clone())))
        .handler(Arc::new(ProvisioningHandler::new(network.clone())));

    let customer = CustomerId::new();
    let subscription = SubscriptionId::new();
    customers
        .create_customer(
            tenant,
            customer,
            NewCustomer::lead(CustomerKind::Person {
                first_name: "A".into(),
                last_name: "B".into(),
            })
            .signed(),
        )
        .await
        .unwrap();
    let service = customers
        .create_service(
            tenant,
            NewService {
                customer,
                subscription,
                username: "ab".into(),
                password: "pw".into(),
                profile: TechnicalProfile::new(Rate::mbps(30, 6)),
            },
        )
        .await
        .unwrap();
    customers
        .activate_service(tenant, service.id())
        .await
        .unwrap();
    dispatcher.drain().await.unwrap();
    assert_eq!(network.state(tenant, "ab").unwrap().access, Access::Allowed);

    let on = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let suspended = OutboxEvent::new(DomainEvent::new(
        tenant,
        &*clock,
        BillingEvent::SubscriptionSuspended {
            subscription,
            customer,
            on,
        },
    ));
    outbox.append_outbox(tenant, &[suspended]).await.unwrap();
    dispatcher.drain().await.unwrap();
    assert_eq!(
        network.state(tenant, "ab").unwrap().access,
        Access::Suspended
    );
    let applied = network.applied();
    // The same fact delivered again (a new event id, as a re-run would write): nothing new.
    let again = OutboxEvent::new(DomainEvent::new(
        tenant,
        &*clock,
        BillingEvent::SubscriptionSuspended {
            subscription,
            customer,
            on,
        },
    ));
    outbox.append_outbox(tenant, &[again]).await.unwrap();
    dispatcher.drain().await.unwrap();
    assert_eq!(network.applied(), applied);

    let restored = OutboxEvent::new(DomainEvent::new(
        tenant,
        &*clock,
        BillingEvent::SubscriptionRestored {
            subscription,
            customer,
            on,
        },
    ));
    outbox.append_outbox(tenant, &[restored]).await.unwrap();
    dispatcher.drain().await.unwrap();
    assert_eq!(network.state(tenant, "ab").unwrap().access, Access::Allowed);
    let counts = outbox.outbox_counts(tenant).await.unwrap();
    assert_eq!((counts.pending, counts.parked), (0, 0));
}
