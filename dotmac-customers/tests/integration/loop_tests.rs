//! The service over the memory store, the outbox dispatcher and a memory provisioner.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use dotmac_core::outbox::{
    Dispatcher, DispatcherSettings, HandlerErrorKind, MemoryOutbox, OutboxStatus, OutboxStore,
    RetryPolicy,
};
use dotmac_core::{Clock, CustomerId, ManualClock, SubscriptionId, TenantId};
use dotmac_customers::fup::{Direction, FupAction, FupPeriod, FupPolicy, FupRule, FupVerdict};
use dotmac_customers::{
    Access, CustomerKind, CustomerService, CustomerStatus, CustomersError, CustomersSettings,
    InMemoryCustomerStore, IpPool, MemoryProvisioner, NewCustomer, NewService, OnboardingStepKind,
    PoolId, ProvisioningHandler, Rate, ServiceStatus, TechnicalProfile,
};

type Service = CustomerService<InMemoryCustomerStore, Arc<ManualClock>>;

struct World {
    tenant: TenantId,
    clock: Arc<ManualClock>,
    outbox: Arc<MemoryOutbox>,
    customers: Service,
    network: Arc<MemoryProvisioner>,
    dispatcher: Dispatcher<Arc<MemoryOutbox>, Arc<ManualClock>>,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap(),
    ));
    let outbox = Arc::new(MemoryOutbox::new());
    let store = InMemoryCustomerStore::with_outbox(outbox.clone());
    let customers = CustomerService::new(store, clock.clone(), CustomersSettings::default());
    let network = Arc::new(MemoryProvisioner::new());
    let settings = DispatcherSettings::new("test").with_retry(RetryPolicy::new(
        Duration::seconds(10),
        Duration::seconds(60),
        3,
    ));
    let dispatcher = Dispatcher::new(outbox.clone(), clock.clone(), settings)
        .handler(Arc::new(ProvisioningHandler::new(network.clone())));
    World {
        tenant: TenantId::new(),
        clock,
        outbox,
        customers,
        network,
        dispatcher,
    }
}

fn new_customer() -> NewCustomer {
    NewCustomer::lead(CustomerKind::Person {
        first_name: "Ada".into(),
        last_name: "Obi".into(),
    })
    .signed()
}

async fn subscriber(
    w: &World,
    username: &str,
    profile: TechnicalProfile,
) -> (CustomerId, SubscriptionId, dotmac_customers::ServiceId) {
    let customer = CustomerId::new();
    w.customers
        .create_customer(w.tenant, customer, new_customer())
        .await
        .unwrap();
    let subscription = SubscriptionId::new();
    let service = w
        .customers
        .create_service(
            w.tenant,
            NewService {
                customer,
                subscription,
                username: username.into(),
                password: "secret".into(),
                profile,
            },
        )
        .await
        .unwrap();
    (customer, subscription, service.id())
}

#[tokio::test]
async fn the_money_loop_drives_the_network_and_a_replayed_event_changes_nothing() {
    let w = world();
    let pool = IpPool::from_cidr(PoolId::new(), "residential", "100.64.0.0/24").unwrap();
    w.customers.save_pool(w.tenant, &pool).await.unwrap();
    let (customer, subscription, service) = subscriber(
        &w,
        "ada",
        TechnicalProfile::new(Rate::mbps(50, 10)).from_pool(pool.id()),
    )
    .await;
    let s = w.customers.service(w.tenant, service).await.unwrap();
    assert_eq!(s.address(), Some(pool.first()));
    assert_eq!(s.status(), ServiceStatus::Pending);
    // Pending: nothing for the network yet.
    w.dispatcher.drain().await.unwrap();
    assert_eq!(w.network.state(w.tenant, "ada"), None);

    w.customers
        .activate_service(w.tenant, service)
        .await
        .unwrap();
    assert_eq!(
        w.customers
            .customer(w.tenant, customer)
            .await
            .unwrap()
            .status(),
        CustomerStatus::Active,
        "a customer onboarding becomes active with its first service"
    );
    w.dispatcher.drain().await.unwrap();
    let held = w.network.state(w.tenant, "ada").unwrap();
    assert_eq!(
        (held.access, held.rate, held.address),
        (Access::Allowed, Rate::mbps(50, 10), Some(pool.first()))
    );

    w.customers
        .subscription_suspended(w.tenant, subscription)
        .await
        .unwrap();
    let events = w.outbox.len();
    w.customers
        .subscription_suspended(w.tenant, subscription)
        .await
        .unwrap();
    assert_eq!(
        w.outbox.len(),
        events,
        "a replayed suspension writes nothing"
    );
    assert_eq!(
        w.customers
            .customer(w.tenant, customer)
            .await
            .unwrap()
            .status(),
        CustomerStatus::Suspended
    );
    w.dispatcher.drain().await.unwrap();
    assert_eq!(
        w.network.state(w.tenant, "ada").unwrap().access,
        Access::Suspended
    );

    w.customers
        .subscription_restored(w.tenant, subscription)
        .await
        .unwrap();
    w.dispatcher.drain().await.unwrap();
    assert_eq!(
        w.network.state(w.tenant, "ada").unwrap().access,
        Access::Allowed
    );
    assert_eq!(
        w.customers
            .customer(w.tenant, customer)
            .await
            .unwrap()
            .status(),
        CustomerStatus::Active
    );

    let faster = TechnicalProfile::new(Rate::mbps(100, 20)).from_pool(pool.id());
    w.customers
        .change_profile(w.tenant, service, faster)
        .await
        .unwrap();
    w.dispatcher.drain().await.unwrap();
    assert_eq!(
        w.network.state(w.tenant, "ada").unwrap().rate,
        Rate::mbps(100, 20)
    );

    w.customers
        .terminate_service(w.tenant, service, "moved")
        .await
        .unwrap();
    w.dispatcher.drain().await.unwrap();
    assert_eq!(
        w.network.state(w.tenant, "ada").unwrap().access,
        Access::Removed
    );
    let counts = w.outbox.outbox_counts(w.tenant).await.unwrap();
    assert_eq!((counts.pending, counts.parked), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_services_never_share_an_address() {
    let w = world();
    let pool = IpPool::from_cidr(PoolId::new(), "small", "10.9.0.0/27").unwrap();
    w.customers.save_pool(w.tenant, &pool).await.unwrap();
    let customer = CustomerId::new();
    w.customers
        .create_customer(w.tenant, customer, new_customer())
        .await
        .unwrap();
    let pool_id = pool.id();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let customers = w.customers.clone();
        let tenant = w.tenant;
        tasks.push(tokio::spawn(async move {
            customers
                .create_service(
                    tenant,
                    NewService {
                        customer,
                        subscription: SubscriptionId::new(),
                        username: format!("u{i}"),
                        password: "pw".into(),
                        profile: TechnicalProfile::new(Rate::mbps(10, 10)).from_pool(pool_id),
                    },
                )
                .await
        }));
    }
    let mut addresses = BTreeSet::new();
    for task in tasks {
        addresses.insert(task.await.unwrap().unwrap().address().unwrap());
    }
    assert_eq!(addresses.len(), 30);
    assert!(addresses.iter().all(|a| pool.contains(*a)));
    // The pool holds 30 hosts: the next one finds none.
    let full = w
        .customers
        .create_service(
            w.tenant,
            NewService {
                customer,
                subscription: SubscriptionId::new(),
                username: "one-too-many".into(),
                password: "pw".into(),
                profile: TechnicalProfile::new(Rate::mbps(10, 10)).from_pool(pool.id()),
            },
        )
        .await;
    assert_eq!(
        full.unwrap_err(),
        CustomersError::PoolExhausted {
            pool: "small".into()
        }
    );
}

#[tokio::test]
async fn a_failing_provisioner_is_retried_and_a_poisoned_command_is_parked_with_its_error() {
    let w = world();
    let (_, _, service) = subscriber(&w, "bob", TechnicalProfile::new(Rate::mbps(20, 5))).await;
    w.customers
        .activate_service(w.tenant, service)
        .await
        .unwrap();
    w.network.fail_next(1, HandlerErrorKind::Retryable);
    let first = w.dispatcher.drain().await.unwrap();
    assert_eq!(first.retried, 1);
    assert_eq!(w.network.state(w.tenant, "bob"), None);
    w.clock.advance(Duration::seconds(11));
    w.dispatcher.drain().await.unwrap();
    assert_eq!(
        w.network.state(w.tenant, "bob").unwrap().access,
        Access::Allowed
    );

    w.network.fail_next(1, HandlerErrorKind::Permanent);
    w.customers
        .suspend_service(w.tenant, service, dotmac_customers::SuspendReason::Operator)
        .await
        .unwrap();
    let summary = w.dispatcher.drain().await.unwrap();
    assert_eq!(summary.parked, 1);
    let parked: Vec<_> = w
        .outbox
        .outbox_messages(w.tenant)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.status == OutboxStatus::Parked)
        .collect();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_type, "provisioning.suspend");
    assert!(
        parked[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("the network is down")
    );
    // Requeued after the fix, it passes; the network holds the suspension.
    assert!(w.outbox.requeue(w.tenant, parked[0].seq).await.unwrap());
    w.dispatcher.drain().await.unwrap();
    assert_eq!(
        w.network.state(w.tenant, "bob").unwrap().access,
        Access::Suspended
    );
}

#[tokio::test]
async fn overdue_onboarding_steps_are_reported_until_done() {
    let w = world();
    let customer = CustomerId::new();
    w.customers
        .create_customer(w.tenant, customer, new_customer())
        .await
        .unwrap();
    assert!(
        w.customers
            .overdue_onboarding(w.tenant)
            .await
            .unwrap()
            .is_empty()
    );
    w.clock.advance(Duration::days(3));
    let overdue = w.customers.overdue_onboarding(w.tenant).await.unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].step, OnboardingStepKind::SiteSurvey);
    w.customers
        .complete_onboarding_step(w.tenant, customer, OnboardingStepKind::SiteSurvey)
        .await
        .unwrap();
    assert!(
        w.customers
            .overdue_onboarding(w.tenant)
            .await
            .unwrap()
            .is_empty()
    );
    let bad = w
        .customers
        .change_status(w.tenant, customer, CustomerStatus::Lead, "back")
        .await;
    assert_eq!(
        bad.unwrap_err(),
        CustomersError::InvalidTransition {
            what: "customer",
            from: "onboarding",
            to: "lead"
        }
    );
}

#[tokio::test]
async fn a_heavy_user_is_slowed_after_the_threshold_and_gets_the_plan_back_the_next_day() {
    let w = world();
    let gb = 1u64 << 30;
    let policy = FupPolicy::new(chrono_tz::UTC).rule(FupRule {
        name: "daily-10gb".into(),
        period: FupPeriod::Day,
        direction: Direction::Total,
        threshold_bytes: 10 * gb,
        action: FupAction::FixedRate(Rate::mbps(2, 2)),
    });
    let (_, _, service) = subscriber(
        &w,
        "heavy",
        TechnicalProfile::new(Rate::mbps(5, 5)).fair_usage(policy),
    )
    .await;
    w.customers
        .activate_service(w.tenant, service)
        .await
        .unwrap();
    let now = w.clock.now();
    let out = w
        .customers
        .record_usage(w.tenant, service, now, 6 * gb, gb)
        .await
        .unwrap();
    assert_eq!(
        (out.verdict.clone(), out.changed),
        (FupVerdict::Normal, false)
    );
    let out = w
        .customers
        .record_usage(w.tenant, service, now, 3 * gb, 0)
        .await
        .unwrap();
    assert!(out.changed);
    assert_eq!(
        out.verdict,
        FupVerdict::Throttled {
            rule: "daily-10gb".into(),
            rate: Rate::mbps(2, 2)
        }
    );
    w.dispatcher.drain().await.unwrap();
    assert_eq!(
        w.network.state(w.tenant, "heavy").unwrap().rate,
        Rate::mbps(2, 2)
    );
    let notices: Vec<_> = w
        .outbox
        .outbox_messages(w.tenant)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.event_type == "customers.fair_usage")
        .collect();
    assert_eq!(notices.len(), 1);
    w.clock.advance(Duration::days(1));
    let out = w
        .customers
        .refresh_fair_usage(w.tenant, service)
        .await
        .unwrap();
    assert_eq!((out.verdict, out.changed), (FupVerdict::Normal, true));
    w.dispatcher.drain().await.unwrap();
    assert_eq!(
        w.network.state(w.tenant, "heavy").unwrap().rate,
        Rate::mbps(5, 5)
    );
}
