//! The behaviour suite every customers store must pass (feature `testkit`).
//!
//! A storage crate calls [`run_store_suite`] with a fresh store; it panics with a message
//! naming the failed expectation.

#![allow(clippy::panic)]
#![allow(clippy::arithmetic_side_effects)]

use std::net::Ipv4Addr;

use chrono::{DateTime, TimeZone, Utc};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{CustomerId, DomainEvent, EventId, SubscriptionId, TenantId};

use crate::customer::{Customer, CustomerKind, CustomerStatus, NewCustomer, OnboardingPlan};
use crate::error::CustomersError;
use crate::event::CustomerEvent;
use crate::network::{NetworkService, NewService, SuspendReason, TechnicalProfile};
use crate::pool::IpPool;
use crate::store::CustomersStore;
use crate::vocab::{PoolId, Rate, ServiceId};

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

fn check<T>(what: &str, result: Result<T, CustomersError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("store suite: {what} failed: {e}"),
    }
}

fn expect(what: &str, condition: bool) {
    if !condition {
        panic!("store suite: {what}");
    }
}

fn person(n: u128) -> Customer {
    let new = NewCustomer::lead(CustomerKind::Person {
        first_name: "Test".into(),
        last_name: format!("Person {n}"),
    })
    .external_ref("crm", &format!("C-{n}"))
    .signed();
    check(
        "build a customer",
        Customer::new(CustomerId::new(), new, &OnboardingPlan::default(), at(1)),
    )
}

fn event(tenant: TenantId, customer: CustomerId) -> OutboxEvent {
    OutboxEvent::new(DomainEvent::at(
        EventId::new(),
        tenant,
        at(1),
        CustomerEvent::CustomerCreated {
            customer,
            status: CustomerStatus::Onboarding,
        },
    ))
}

fn service(customer: CustomerId, username: &str, address: Option<Ipv4Addr>) -> NetworkService {
    check(
        "build a service",
        NetworkService::new(
            ServiceId::new(),
            NewService {
                customer,
                subscription: SubscriptionId::new(),
                username: username.into(),
                password: "pw".into(),
                profile: TechnicalProfile::new(Rate::mbps(50, 10)),
            },
            address,
        ),
    )
}

/// Runs every behaviour check against `store`, which must be empty.
///
/// # Panics
///
/// On the first expectation the store does not meet, naming it.
pub async fn run_store_suite<S: CustomersStore>(store: &S) {
    customers(store).await;
    services(store).await;
    pools(store).await;
}

async fn customers<S: CustomersStore>(store: &S) {
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let mut c = person(1);
    check(
        "insert a customer",
        store
            .insert_customer(tenant, &c, &[event(tenant, c.id())])
            .await,
    );
    let again = store.insert_customer(tenant, &c, &[]).await;
    expect(
        "a second insert of the same id is AlreadyExists",
        matches!(
            again,
            Err(CustomersError::AlreadyExists {
                what: "customer",
                ..
            })
        ),
    );
    let read = check("read the customer", store.customer(tenant, c.id()).await);
    expect("the customer reads back whole", read.as_ref() == Some(&c));
    expect(
        "another tenant does not see it",
        check(
            "read in another tenant",
            store.customer(other, c.id()).await,
        )
        .is_none(),
    );
    let stale = c.clone();
    check(
        "activate",
        c.transition(
            CustomerStatus::Active,
            "installed",
            &OnboardingPlan::default(),
            at(3),
        ),
    );
    check(
        "save the change",
        store.save_customer(tenant, &c, 1, &[]).await,
    );
    let mut lost = stale;
    check(
        "a stale copy changes",
        lost.transition(
            CustomerStatus::Churned,
            "x",
            &OnboardingPlan::default(),
            at(3),
        ),
    );
    let refused = store.save_customer(tenant, &lost, 1, &[]).await;
    expect(
        "saving over a stale version is ConcurrentUpdate",
        matches!(
            refused,
            Err(CustomersError::ConcurrentUpdate {
                what: "customer",
                ..
            })
        ),
    );
    let read = check(
        "read after the refused save",
        store.customer(tenant, c.id()).await,
    );
    expect(
        "the refused save changed nothing",
        read.as_ref() == Some(&c),
    );
    let missing = person(2);
    expect(
        "saving an unknown customer is NotFound",
        matches!(
            store.save_customer(tenant, &missing, 1, &[]).await,
            Err(CustomersError::NotFound {
                what: "customer",
                ..
            })
        ),
    );
    let d = person(3);
    check(
        "insert another",
        store.insert_customer(tenant, &d, &[]).await,
    );
    let active = check(
        "customers in a status",
        store
            .customers_in_status(tenant, CustomerStatus::Active)
            .await,
    );
    expect(
        "one active customer",
        active.len() == 1 && active[0].id() == c.id(),
    );
    let onboarding = check(
        "customers onboarding",
        store
            .customers_in_status(tenant, CustomerStatus::Onboarding)
            .await,
    );
    expect(
        "one onboarding customer",
        onboarding.len() == 1 && onboarding[0].id() == d.id(),
    );
    expect(
        "another tenant has none",
        check(
            "in another tenant",
            store
                .customers_in_status(other, CustomerStatus::Active)
                .await,
        )
        .is_empty(),
    );
}

async fn services<S: CustomersStore>(store: &S) {
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let customer = CustomerId::new();
    let address = Ipv4Addr::new(192, 0, 2, 10);
    let mut a = service(customer, "alice", Some(address));
    check(
        "insert a service",
        store.insert_service(tenant, &a, None, &[]).await,
    );
    expect(
        "the service reads back whole",
        check("read", store.service(tenant, a.id()).await).as_ref() == Some(&a),
    );
    expect(
        "by user name",
        check(
            "by user name",
            store.service_by_username(tenant, "alice").await,
        )
        .is_some_and(|s| s.id() == a.id()),
    );
    expect(
        "not in another tenant",
        check(
            "other tenant",
            store.service_by_username(other, "alice").await,
        )
        .is_none(),
    );
    let same_name = service(customer, "alice", None);
    expect(
        "a user name in use is AlreadyExists",
        matches!(
            store.insert_service(tenant, &same_name, None, &[]).await,
            Err(CustomersError::AlreadyExists {
                what: "user name",
                ..
            })
        ),
    );
    let same_address = service(customer, "bob", Some(address));
    let taken = store.insert_service(tenant, &same_address, None, &[]).await;
    expect(
        "an address in use is AddressTaken, naming the holder",
        taken
            == Err(CustomersError::AddressTaken {
                address,
                holder: a.id().to_string(),
            }),
    );
    expect(
        "the refused insert wrote nothing",
        check("read bob", store.service_by_username(tenant, "bob").await).is_none(),
    );
    let elsewhere = service(customer, "alice", Some(address));
    check(
        "the same name and address in another tenant",
        store.insert_service(other, &elsewhere, None, &[]).await,
    );
    check("activate", a.activate(at(2)).map(drop));
    check(
        "suspend",
        a.suspend(SuspendReason::NonPayment, at(3)).map(drop),
    );
    check("save", store.save_service(tenant, &a, 1, &[]).await);
    let by_sub = check(
        "by subscription",
        store
            .services_of_subscription(tenant, a.subscription())
            .await,
    );
    expect("one service of the subscription", by_sub == vec![a.clone()]);
    let b = service(customer, "bob", None);
    check(
        "insert bob",
        store.insert_service(tenant, &b, None, &[]).await,
    );
    let of_customer = check(
        "by customer",
        store.services_of_customer(tenant, customer).await,
    );
    expect(
        "both services of the customer, oldest first",
        of_customer
            .iter()
            .map(NetworkService::id)
            .collect::<Vec<_>>()
            == vec![a.id(), b.id()],
    );
    let stale = a.clone();
    let read = a.version();
    a.terminate("cancelled", at(4));
    check("terminate", store.save_service(tenant, &a, read, &[]).await);
    let mut lost = stale;
    check(
        "stale restore",
        lost.restore(SuspendReason::NonPayment, at(4)).map(drop),
    );
    expect(
        "a stale save is ConcurrentUpdate",
        matches!(
            store.save_service(tenant, &lost, read, &[]).await,
            Err(CustomersError::ConcurrentUpdate {
                what: "service",
                ..
            })
        ),
    );
    let reuse = service(customer, "carol", Some(address));
    check(
        "a terminated service's address is free again",
        store.insert_service(tenant, &reuse, None, &[]).await,
    );
}

async fn pools<S: CustomersStore>(store: &S) {
    let tenant = TenantId::new();
    let pool = check(
        "a pool",
        IpPool::from_cidr(PoolId::new(), "residential", "100.64.0.0/29"),
    );
    check("save the pool", store.save_pool(tenant, &pool).await);
    expect(
        "the pool reads back",
        check("read pool", store.pool(tenant, pool.id()).await).as_ref() == Some(&pool),
    );
    expect(
        "not in another tenant",
        check("other", store.pool(TenantId::new(), pool.id()).await).is_none(),
    );
    let customer = CustomerId::new();
    let first = service(customer, "p1", Some(pool.first()));
    check(
        "insert with a pool address",
        store
            .insert_service(tenant, &first, Some(pool.id()), &[])
            .await,
    );
    let statik = service(customer, "p2", Some(Ipv4Addr::new(100, 64, 0, 3)));
    check(
        "a static address",
        store.insert_service(tenant, &statik, None, &[]).await,
    );
    let outside = service(customer, "p3", Some(Ipv4Addr::new(100, 64, 1, 1)));
    check(
        "an address outside",
        store.insert_service(tenant, &outside, None, &[]).await,
    );
    let held = check(
        "assigned",
        store
            .assigned_addresses(tenant, pool.first(), pool.last())
            .await,
    );
    expect(
        "the range's assigned addresses, static ones included, and no other",
        held.into_iter().collect::<Vec<_>>() == vec![pool.first(), Ipv4Addr::new(100, 64, 0, 3)],
    );
    let elsewhere = check(
        "assigned in another tenant",
        store
            .assigned_addresses(TenantId::new(), pool.first(), pool.last())
            .await,
    );
    expect("another tenant holds none", elsewhere.is_empty());
}
