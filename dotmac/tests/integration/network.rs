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

/// A signed customer (a person), ready for services.
fn signed(first_name: &str, last_name: &str) -> NewCustomer {
    NewCustomer::lead(CustomerKind::Person {
        first_name: first_name.into(),
        last_name: last_name.into(),
    })
    .signed()
}

/// A tenant's customers over an in-memory store and outbox, the clock at `now`, and an
/// in-memory provisioner: what the memory tests wire their dispatchers over.
struct MemoryNetwork {
    tenant: TenantId,
    clock: Arc<ManualClock>,
    outbox: Arc<MemoryOutbox>,
    customers: CustomerService<InMemoryCustomerStore, Arc<ManualClock>>,
    network: Arc<MemoryProvisioner>,
}

fn memory_network(now: chrono::DateTime<Utc>) -> MemoryNetwork {
    let clock = Arc::new(ManualClock::new(now));
    let outbox = Arc::new(MemoryOutbox::new());
    let customers = CustomerService::new(
        InMemoryCustomerStore::with_outbox(outbox.clone()),
        clock.clone(),
        CustomersSettings::default(),
    );
    MemoryNetwork {
        tenant: TenantId::new(),
        clock,
        outbox,
        customers,
        network: Arc::new(MemoryProvisioner::new()),
    }
}

#[tokio::test]
async fn billing_suspensions_and_restores_reach_the_provisioner_once() {
    let MemoryNetwork {
        tenant,
        clock,
        outbox,
        customers,
        network,
    } = memory_network(Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap());
    let dispatcher = Dispatcher::new(outbox.clone(), clock.clone(), DispatcherSettings::new("t"))
        .handler(Arc::new(NetworkFollowsBilling::new(customers.clone())))
        .handler(Arc::new(ProvisioningHandler::new(network.clone())));

    let customer = CustomerId::new();
    let subscription = SubscriptionId::new();
    customers
        .create_customer(tenant, customer, signed("A", "B"))
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

/// Splynx's block and charge: a blocked customer buys "10 GB for 15 $"; the top-up lifts the
/// block at once and the facade's `BillingFollowsFairUsage` puts the price on the
/// subscription's next invoice, once however often the event is delivered.
#[tokio::test]
async fn a_paid_top_up_lifts_the_block_and_is_charged_once() {
    use dotmac::billing::{
        BillingService, BillingSettings, Charge, InvoiceStore, LineKind, MemoryStore,
        NewSubscription, Plan, Product,
    };
    use dotmac::customers::TopUpId;
    use dotmac::customers::fup::{Direction, FupAction, FupPeriod, FupPolicy, FupRule, TopUp};
    use dotmac::reactions::BillingFollowsFairUsage;
    use dotmac::{Clock as _, Currency, CustomerAccount, Money, PlanId, ProductId};

    let MemoryNetwork {
        tenant,
        clock,
        outbox,
        customers,
        network,
    } = memory_network(Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap());
    let billing = BillingService::new(
        MemoryStore::new().with_outbox(outbox.clone()),
        clock.clone(),
        BillingSettings::default(),
    );
    let dispatcher = Dispatcher::new(outbox.clone(), clock.clone(), DispatcherSettings::new("t"))
        .handler(Arc::new(BillingFollowsFairUsage::new(billing.clone())))
        .handler(Arc::new(ProvisioningHandler::new(network.clone())));

    let customer = CustomerId::new();
    let usd = |cents| Money::from_minor(cents, Currency::USD);
    billing
        .add_product(
            tenant,
            Product {
                id: ProductId::from_u128(1),
                name: "Capped".into(),
            },
        )
        .await
        .unwrap();
    let plan = Plan::builder(PlanId::from_u128(2), ProductId::from_u128(1), "Capped 10")
        .charge(Charge::recurring_flat([usd(2000)]))
        .build(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap())
        .unwrap();
    billing.save_plan(tenant, plan.clone()).await.unwrap();
    billing
        .save_account(tenant, CustomerAccount::new(customer, Currency::USD))
        .await
        .unwrap();
    let subscription = SubscriptionId::new();
    billing
        .subscribe(
            tenant,
            NewSubscription::new(
                customer,
                plan.id,
                Currency::USD,
                NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            )
            .id(subscription),
        )
        .await
        .unwrap();

    customers
        .create_customer(tenant, customer, signed("C", "D"))
        .await
        .unwrap();
    let gb = 1u64 << 30;
    let cap = FupPolicy::new(chrono_tz::UTC).rule(FupRule {
        name: "cap-10gb".into(),
        period: FupPeriod::Month,
        direction: Direction::Total,
        threshold_bytes: 10 * gb,
        action: FupAction::Block,
    });
    let service = customers
        .create_service(
            tenant,
            NewService {
                customer,
                subscription,
                username: "cd".into(),
                password: "pw".into(),
                profile: TechnicalProfile::new(Rate::mbps(10, 2)).fair_usage(cap),
            },
        )
        .await
        .unwrap()
        .id();
    customers.activate_service(tenant, service).await.unwrap();
    customers
        .record_usage(tenant, service, clock.now(), 10 * gb, 0)
        .await
        .unwrap();
    dispatcher.drain().await.unwrap();
    assert_eq!(
        network.state(tenant, "cd").unwrap().access,
        Access::Suspended
    );

    let top_up = TopUp {
        id: TopUpId::new(),
        bytes: 10 * gb,
        price: Some(usd(1500)),
    };
    customers
        .top_up(tenant, service, top_up.clone())
        .await
        .unwrap();
    dispatcher.drain().await.unwrap();
    assert_eq!(network.state(tenant, "cd").unwrap().access, Access::Allowed);
    let pending = billing
        .store()
        .pending_charges(tenant, customer)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        (
            pending[0].kind,
            pending[0].unit_price,
            pending[0].subscription
        ),
        (LineKind::OneOff, usd(1500), Some(subscription))
    );
    assert_eq!(pending[0].text.as_deref(), Some("Data top-up: 10240 MB"));

    // The same top-up event delivered again: still one charge.
    let again: Vec<_> = outbox
        .outbox_messages(tenant)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.event_type == "customers.fair_usage_top_up")
        .collect();
    assert_eq!(again.len(), 1);
    let replay: dotmac::customers::CustomerEvent = again[0].decode().unwrap();
    outbox
        .append_outbox(
            tenant,
            &[OutboxEvent::new(DomainEvent::new(tenant, &*clock, replay))],
        )
        .await
        .unwrap();
    dispatcher.drain().await.unwrap();
    assert_eq!(
        billing
            .store()
            .pending_charges(tenant, customer)
            .await
            .unwrap()
            .len(),
        1
    );
    let counts = outbox.outbox_counts(tenant).await.unwrap();
    assert_eq!((counts.pending, counts.parked), (0, 0));
}

/// Accounting reaches fair usage: a `usage.session_accounted` event (as the radacct reader
/// writes it) counts into the service's counters through the dispatcher, a slowdown goes to
/// the provisioner, and the same event handled again counts nothing.
#[tokio::test]
async fn accounted_sessions_count_into_fair_usage_once() {
    use dotmac::customers::fup::{Direction, FupAction, FupPeriod, FupPolicy, FupRule};
    use dotmac::outbox::EventHandler;
    use dotmac::reactions::FairUsageFollowsAccounting;
    use dotmac::usage::AccountingEvent;

    const GB: u64 = 1 << 30;
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap();
    let MemoryNetwork {
        tenant,
        clock,
        outbox,
        customers,
        network,
    } = memory_network(now);
    let follow = Arc::new(FairUsageFollowsAccounting::new(customers.clone()));
    let dispatcher = Dispatcher::new(outbox.clone(), clock.clone(), DispatcherSettings::new("t"))
        .handler(follow.clone())
        .handler(Arc::new(ProvisioningHandler::new(network.clone())));
    let customer = CustomerId::new();
    customers
        .create_customer(tenant, customer, signed("Heavy", "User"))
        .await
        .unwrap();
    let policy = FupPolicy::new(chrono_tz::UTC).rule(FupRule {
        name: "daily-10gb".into(),
        period: FupPeriod::Day,
        direction: Direction::Total,
        threshold_bytes: 10 * GB,
        action: FupAction::FixedRate(Rate::mbps(2, 2)),
    });
    let service = customers
        .create_service(
            tenant,
            NewService {
                customer,
                subscription: SubscriptionId::new(),
                username: "heavy".into(),
                password: "pw".into(),
                profile: TechnicalProfile::new(Rate::mbps(50, 10)).fair_usage(policy),
            },
        )
        .await
        .unwrap();
    customers
        .activate_service(tenant, service.id())
        .await
        .unwrap();
    let accounted = |username: &str, download: u64| {
        OutboxEvent::new(DomainEvent::new(
            tenant,
            &*clock,
            AccountingEvent::SessionAccounted {
                customer,
                subscription: None,
                username: username.into(),
                session: "s-1".into(),
                at: now,
                download,
                upload: 0,
            },
        ))
    };
    // 6 GB, then 5 GB: past the daily 10 GB on the second. A stranger's session counts nothing.
    outbox
        .append_outbox(
            tenant,
            &[accounted("heavy", 6 * GB), accounted("stranger", GB)],
        )
        .await
        .unwrap();
    dispatcher.drain().await.unwrap();
    assert_eq!(
        network.state(tenant, "heavy").unwrap().rate,
        Rate::mbps(50, 10)
    );
    outbox
        .append_outbox(tenant, &[accounted("heavy", 5 * GB)])
        .await
        .unwrap();
    dispatcher.drain().await.unwrap();
    assert_eq!(
        network.state(tenant, "heavy").unwrap().rate,
        Rate::mbps(2, 2)
    );
    let counted = customers.service(tenant, service.id()).await.unwrap();
    assert_eq!(counted.fup_counters().day.download, 11 * GB);

    // Every accounting message handled again (a redelivery): nothing more is counted.
    for message in outbox.outbox_messages(tenant).await.unwrap() {
        if follow.handles(&message.event_type) {
            follow.handle(&message).await.unwrap();
        }
    }
    let again = customers.service(tenant, service.id()).await.unwrap();
    assert_eq!(again.fup_counters(), counted.fup_counters());
    assert_eq!(again.accounted_through(), counted.accounted_through());
}

/// The facade wires the network: `Dotmac::customers` over the same database, and with a
/// provisioner named, a new service reaches it through `Dotmac::dispatch` with every other
/// reaction.
#[tokio::test]
async fn the_facade_carries_provisioning_to_its_provisioner() {
    use dotmac::Dotmac;
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap());
    let network = Arc::new(MemoryProvisioner::new());
    let dotmac = Dotmac::builder("sqlite::memory:")
        .clock(clock)
        .connect()
        .await
        .unwrap()
        .with_provisioner(network.clone());
    let tenant = dotmac.create_tenant("Network ISP").await.unwrap();
    let customer = CustomerId::new();
    dotmac
        .customers()
        .create_customer(tenant, customer, signed("A", "B"))
        .await
        .unwrap();
    let service = dotmac
        .customers()
        .create_service(
            tenant,
            NewService {
                customer,
                subscription: SubscriptionId::new(),
                username: "facade-ab".into(),
                password: "pw".into(),
                profile: TechnicalProfile::new(Rate::mbps(30, 6)),
            },
        )
        .await
        .unwrap();
    dotmac
        .customers()
        .activate_service(tenant, service.id())
        .await
        .unwrap();
    dotmac.dispatch().await.unwrap();
    let state = network.state(tenant, "facade-ab").unwrap();
    assert_eq!(
        (state.access, state.rate),
        (Access::Allowed, Rate::mbps(30, 6))
    );
    // Reconfigured for the tenant, the provisioner stays wired.
    let configured = dotmac.configured_for(tenant).await.unwrap();
    configured
        .customers()
        .suspend_service(
            tenant,
            service.id(),
            dotmac::customers::SuspendReason::Operator,
        )
        .await
        .unwrap();
    configured.dispatch().await.unwrap();
    assert_ne!(
        network.state(tenant, "facade-ab").unwrap().access,
        Access::Allowed
    );
}

/// Plans carry their technical profile: a service made on a plan gets its rate, and an
/// upgrade in force moves the service (and the provisioner) to the new plan's rate; the same
/// plan followed again changes nothing.
#[tokio::test]
async fn services_take_their_plans_profile_and_follow_an_upgrade() {
    use dotmac::billing::{
        ChangeTiming, Charge, NewSubscription, Plan, Product, ProrationBehavior, SubscriptionChange,
    };
    use dotmac::customers::{PlanService, ServiceStore};
    use dotmac::{Currency, CustomerAccount, Dotmac, Money, PlanId, ProductId};

    let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap());
    let (fibre_100, fibre_300) = (PlanId::new(), PlanId::new());
    let product = Product {
        id: ProductId::new(),
        name: "Fibre".into(),
    };
    let plan = |id, name: &str, cents| {
        Plan::builder(id, product.id, name)
            .charge(Charge::recurring_flat([Money::from_minor(
                cents,
                Currency::USD,
            )]))
            .build(day(1))
            .unwrap()
    };
    let network = Arc::new(MemoryProvisioner::new());
    let dotmac = Dotmac::builder("sqlite::memory:")
        .clock(clock)
        .customers(
            CustomersSettings::default()
                .with_plan_profile(fibre_100, TechnicalProfile::new(Rate::mbps(100, 20)))
                .with_plan_profile(fibre_300, TechnicalProfile::new(Rate::mbps(300, 50))),
        )
        .connect()
        .await
        .unwrap()
        .with_provisioner(network.clone());
    let tenant = dotmac.create_tenant("Plans ISP").await.unwrap();
    for p in [
        plan(fibre_100, "Fibre 100", 4000),
        plan(fibre_300, "Fibre 300", 6000),
    ] {
        dotmac
            .publish_plan(tenant, product.clone(), p)
            .await
            .unwrap();
    }
    let customer = CustomerId::new();
    let (sub, _) = dotmac
        .subscribe(
            tenant,
            CustomerAccount::new(customer, Currency::USD),
            NewSubscription::new(customer, fibre_100, Currency::USD, day(2)),
        )
        .await
        .unwrap();
    let customers = dotmac.customers();
    customers
        .create_customer(tenant, customer, signed("Up", "Grader"))
        .await
        .unwrap();
    // A plan without a profile is refused, and nothing is written.
    let refused = customers
        .create_service_on_plan(
            tenant,
            PlanService::new(customer, sub.id, PlanId::new(), "plans-up", "pw"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, dotmac::customers::CustomersError::InvalidInput(_)),
        "{refused:?}"
    );
    assert!(
        customers
            .store()
            .services_of_subscription(tenant, sub.id)
            .await
            .unwrap()
            .is_empty()
    );
    let service = customers
        .create_service_on_plan(
            tenant,
            PlanService::new(customer, sub.id, fibre_100, "plans-up", "pw"),
        )
        .await
        .unwrap();
    assert_eq!(service.profile().rate, Rate::mbps(100, 20));
    customers
        .activate_service(tenant, service.id())
        .await
        .unwrap();
    dotmac.dispatch().await.unwrap();
    assert_eq!(
        network.state(tenant, "plans-up").unwrap().rate,
        Rate::mbps(100, 20)
    );

    // The upgrade, in force today.
    dotmac
        .billing()
        .change_subscription(
            tenant,
            sub.id,
            SubscriptionChange::Plan {
                plan: fibre_300,
                version: None,
            },
            day(2),
            ChangeTiming::Immediate,
            ProrationBehavior::NextInvoice,
        )
        .await
        .unwrap();
    dotmac.dispatch().await.unwrap();
    assert_eq!(
        network.state(tenant, "plans-up").unwrap().rate,
        Rate::mbps(300, 50)
    );
    let moved = customers.service(tenant, service.id()).await.unwrap();
    assert_eq!(moved.profile().rate, Rate::mbps(300, 50));
    // Following the same plan again changes nothing.
    assert!(
        customers
            .follow_plan(tenant, sub.id, fibre_300)
            .await
            .unwrap()
            .is_empty()
    );
}
