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

/// The fair-usage behaviour suite: [`CustomerService`](crate::CustomerService) over `store`
/// (whose events `outbox` reads), Splynx's example policy for a 5 Mbps plan in
/// `Europe/Berlin` (10 GB a day then 2 Mbps, 100 GB a month then 1 Mbps, blocked at 110 GB),
/// driven through a slowdown, the daily reset by the sweep, a block, refused top-ups, a paid
/// top-up that lifts the block, and the monthly reset. Every verdict change must be one
/// provisioning command and one `customers.fair_usage` notice; the counters and the review
/// instant must survive the store. `store` may be shared with other tests: the suite uses a
/// tenant of its own.
///
/// # Panics
///
/// On the first expectation the store does not meet, naming it.
pub async fn run_fair_usage_suite<S, O>(store: S, outbox: &O)
where
    S: CustomersStore,
    O: dotmac_core::outbox::OutboxStore,
{
    use crate::fup::{Direction, FupAction, FupPeriod, FupPolicy, FupRule, FupVerdict, TopUp};
    use crate::provisioning::{Access, ProvisioningCommand};
    use crate::service::{CustomerService, CustomersSettings};
    use crate::vocab::TopUpId;
    use dotmac_core::{Clock, Currency, ManualClock, Money};
    use std::sync::Arc;

    const GB: u64 = 1 << 30;
    let tenant = TenantId::new();
    // Monday 2 November 2026, 09:00 in Berlin.
    let clock = Arc::new(ManualClock::new(at(2)));
    let customers = CustomerService::new(store, clock.clone(), CustomersSettings::default());
    let policy = FupPolicy::new(chrono_tz::Europe::Berlin)
        .rule(FupRule {
            name: "daily-10gb".into(),
            period: FupPeriod::Day,
            direction: Direction::Total,
            threshold_bytes: 10 * GB,
            action: FupAction::FixedRate(Rate::mbps(2, 2)),
        })
        .rule(FupRule {
            name: "monthly-100gb".into(),
            period: FupPeriod::Month,
            direction: Direction::Total,
            threshold_bytes: 100 * GB,
            action: FupAction::FixedRate(Rate::mbps(1, 1)),
        })
        .rule(FupRule {
            name: "monthly-110gb".into(),
            period: FupPeriod::Month,
            direction: Direction::Total,
            threshold_bytes: 110 * GB,
            action: FupAction::Block,
        })
        // Never reached here; a percentage rule is stored with the service like any other.
        .rule(FupRule {
            name: "weekly-1tb".into(),
            period: FupPeriod::Week,
            direction: Direction::Total,
            threshold_bytes: 1024 * GB,
            action: FupAction::SpeedPercent(50),
        });
    let customer = CustomerId::new();
    check(
        "create the customer",
        customers
            .create_customer(
                tenant,
                customer,
                NewCustomer::lead(CustomerKind::Person {
                    first_name: "Heavy".into(),
                    last_name: "User".into(),
                })
                .signed(),
            )
            .await,
    );
    let service = check(
        "create the service",
        customers
            .create_service(
                tenant,
                NewService {
                    customer,
                    subscription: SubscriptionId::new(),
                    username: format!("fup-{}", &tenant.to_string()[24..]),
                    password: "pw".into(),
                    profile: TechnicalProfile::new(Rate::mbps(5, 5)).fair_usage(policy),
                },
            )
            .await,
    )
    .id();
    check(
        "activate",
        customers.activate_service(tenant, service).await.map(drop),
    );

    // What the outbox holds for the tenant: the provisioning commands and the notices.
    let messages = || async {
        check(
            "read the outbox",
            outbox
                .outbox_messages(tenant)
                .await
                .map_err(CustomersError::Storage),
        )
    };
    let commands = || async {
        messages()
            .await
            .into_iter()
            .filter(|m| m.event_type.starts_with("provisioning."))
            .map(|m| {
                check(
                    "decode a command",
                    m.decode::<ProvisioningCommand>().map_err(Into::into),
                )
            })
            .collect::<Vec<_>>()
    };
    let notices = || async {
        messages()
            .await
            .into_iter()
            .filter(|m| m.event_type == "customers.fair_usage")
            .map(|m| {
                check(
                    "decode a notice",
                    m.decode::<CustomerEvent>().map_err(Into::into),
                )
            })
            .collect::<Vec<_>>()
    };
    let last_command = || async { commands().await.pop() };
    let action_of = |e: &CustomerEvent| match e {
        CustomerEvent::FairUsage { action, rule, .. } => Some((rule.clone(), *action)),
        _ => None,
    };

    // 11 GB today: past the daily 10 GB, 2 Mbps.
    let out = check(
        "record 11 GB",
        customers
            .record_usage(tenant, service, clock.now(), 10 * GB, GB)
            .await,
    );
    expect(
        "11 GB in a day slows to 2 Mbps",
        out.changed
            && out.verdict
                == FupVerdict::Throttled {
                    rule: "daily-10gb".into(),
                    rate: Rate::mbps(2, 2),
                },
    );
    let cmd = last_command().await;
    expect(
        "the slowdown is a change_profile command at 2 Mbps",
        cmd.as_ref().is_some_and(|c| {
            c.action == crate::network::ProvisioningAction::ChangeProfile
                && c.rate == Rate::mbps(2, 2)
                && c.access == Access::Allowed
        }),
    );
    expect(
        "one notice, naming the daily rule",
        notices()
            .await
            .iter()
            .filter_map(action_of)
            .collect::<Vec<_>>()
            == vec![(
                "daily-10gb".to_owned(),
                FupAction::FixedRate(Rate::mbps(2, 2)),
            )],
    );
    let read = check("read the service", customers.service(tenant, service).await);
    expect(
        "the counters are stored with the service",
        read.fup_counters().day.download == 10 * GB && read.fup_counters().month.upload == GB,
    );
    // Berlin's next midnight is 23:00 UTC.
    let midnight = Utc
        .with_ymd_and_hms(2026, 11, 2, 23, 0, 0)
        .single()
        .unwrap_or_default();
    expect(
        "the review is due at the local day's end",
        read.fair_usage_review_at() == Some(midnight),
    );
    expect(
        "nothing is due before it",
        check(
            "due before midnight",
            customers
                .store()
                .services_due_for_fair_usage(tenant, clock.now(), 10)
                .await,
        )
        .is_empty(),
    );
    expect(
        "a sweep before midnight changes nothing",
        check("early sweep", customers.sweep_fair_usage(tenant, 10).await).is_empty(),
    );

    // The day ends: the sweep gives the plan's rate back.
    clock.set(midnight);
    let due = check(
        "due at midnight",
        customers
            .store()
            .services_due_for_fair_usage(tenant, midnight, 10)
            .await,
    );
    expect(
        "the service is due at midnight",
        due.iter().map(NetworkService::id).collect::<Vec<_>>() == vec![service],
    );
    expect(
        "no more than the limit",
        check(
            "due, limit 0",
            customers
                .store()
                .services_due_for_fair_usage(tenant, midnight, 0)
                .await,
        )
        .is_empty(),
    );
    expect(
        "another tenant has nothing due",
        check(
            "due in another tenant",
            customers
                .store()
                .services_due_for_fair_usage(TenantId::new(), midnight, 10)
                .await,
        )
        .is_empty(),
    );
    let swept = check(
        "sweep at midnight",
        customers.sweep_fair_usage(tenant, 10).await,
    );
    expect(
        "the sweep restores the plan's rate at the day's reset",
        swept.len() == 1 && swept[0].changed && swept[0].verdict == FupVerdict::Normal,
    );
    expect(
        "the reset is a command at 5 Mbps",
        last_command()
            .await
            .is_some_and(|c| c.rate == Rate::mbps(5, 5) && c.access == Access::Allowed),
    );
    expect(
        "and a restore notice",
        notices().await.iter().filter_map(action_of).next_back()
            == Some(("daily-10gb".to_owned(), FupAction::Restore)),
    );
    let read = check(
        "read after the sweep",
        customers.service(tenant, service).await,
    );
    expect(
        "a service the policy leaves alone is not reviewed",
        read.fair_usage_review_at().is_none(),
    );
    let written = messages().await.len();
    expect(
        "a second sweep finds nothing",
        check("second sweep", customers.sweep_fair_usage(tenant, 10).await).is_empty(),
    );
    expect("and writes nothing", messages().await.len() == written);

    // 100 GB more on the 3rd: 111 GB this month, blocked.
    clock.set(at(3));
    let out = check(
        "record 100 GB",
        customers
            .record_usage(tenant, service, clock.now(), 100 * GB, 0)
            .await,
    );
    expect(
        "111 GB in the month blocks",
        out.verdict
            == FupVerdict::Blocked {
                rule: "monthly-110gb".into(),
            },
    );
    expect(
        "the block is a suspend command",
        last_command().await.is_some_and(|c| {
            c.action == crate::network::ProvisioningAction::Suspend && c.access == Access::Suspended
        }),
    );
    expect(
        "and a block notice",
        notices().await.iter().filter_map(action_of).next_back()
            == Some(("monthly-110gb".to_owned(), FupAction::Block)),
    );

    // Refused top-ups change nothing.
    let before = check("read before", customers.service(tenant, service).await);
    let written = messages().await.len();
    let empty = customers
        .top_up(
            tenant,
            service,
            TopUp {
                id: TopUpId::new(),
                bytes: 0,
                price: None,
            },
        )
        .await;
    expect(
        "a top-up of no bytes is refused",
        empty
            == Err(CustomersError::InvalidInput(
                "a top-up adds at least one byte".into(),
            )),
    );
    let negative = customers
        .top_up(
            tenant,
            service,
            TopUp {
                id: TopUpId::new(),
                bytes: GB,
                price: Some(check(
                    "a price",
                    Money::parse("-1", Currency::USD).map_err(Into::into),
                )),
            },
        )
        .await;
    expect(
        "a negative price is refused",
        negative
            == Err(CustomersError::InvalidInput(
                "a top-up's price is never negative".into(),
            )),
    );
    expect(
        "the refused top-ups changed nothing",
        check(
            "read after refusals",
            customers.service(tenant, service).await,
        ) == before
            && messages().await.len() == written,
    );

    // Splynx's "10 GB for 15 $": the block lifts, the monthly slowdown holds.
    let price = check(
        "a price",
        Money::parse("15", Currency::USD).map_err(Into::into),
    );
    let top_up = TopUp {
        id: TopUpId::new(),
        bytes: 10 * GB,
        price: Some(price),
    };
    let out = check(
        "top up 10 GB",
        customers.top_up(tenant, service, top_up.clone()).await,
    );
    expect(
        "the top-up lifts the block; the slowdowns hold together (1 Mbps)",
        out.changed
            && out.verdict
                == FupVerdict::Throttled {
                    rule: "monthly-100gb".into(),
                    rate: Rate::mbps(1, 1),
                },
    );
    expect(
        "the lifted block is a restore command at 1 Mbps",
        last_command().await.is_some_and(|c| {
            c.action == crate::network::ProvisioningAction::Restore
                && c.access == Access::Allowed
                && c.rate == Rate::mbps(1, 1)
        }),
    );
    let charges: Vec<CustomerEvent> = messages()
        .await
        .into_iter()
        .filter(|m| m.event_type == "customers.fair_usage_top_up")
        .map(|m| {
            check(
                "decode the top-up",
                m.decode::<CustomerEvent>().map_err(Into::into),
            )
        })
        .collect();
    expect(
        "one top-up event carries the price for billing",
        matches!(
            charges.as_slice(),
            [CustomerEvent::FairUsageTopUp { top_up: t, price: Some(p), bytes, .. }]
                if *t == top_up.id && *p == price && *bytes == 10 * GB
        ),
    );
    let written = messages().await.len();
    let again = check(
        "the same top-up again",
        customers.top_up(tenant, service, top_up).await,
    );
    expect(
        "a top-up applied again changes nothing",
        !again.changed && messages().await.len() == written,
    );

    // The month ends (Berlin midnight of 1 December): the plan's rate is back.
    let month_end = Utc
        .with_ymd_and_hms(2026, 11, 30, 23, 0, 0)
        .single()
        .unwrap_or_default();
    clock.set(month_end);
    let swept = check(
        "sweep at the month's end",
        customers.sweep_fair_usage(tenant, 10).await,
    );
    expect(
        "the month's reset restores the plan's rate",
        swept.len() == 1 && swept[0].verdict == FupVerdict::Normal,
    );
    expect(
        "with a command at 5 Mbps",
        last_command()
            .await
            .is_some_and(|c| c.rate == Rate::mbps(5, 5) && c.access == Access::Allowed),
    );
    let read = check(
        "read at the month's end",
        customers.service(tenant, service).await,
    );
    expect(
        "the ended month's counters and top-up are emptied",
        read.fup_counters() == &crate::fup::FupCounters::default()
            && read.fair_usage_review_at().is_none(),
    );
    let changes = notices().await.len();
    expect("five verdict changes, five notices", changes == 5);

    // An accounting feed's samples count once each, by position: a redelivered sample (the
    // same position) or an older one counts nothing and writes nothing.
    let december = clock.now();
    let sample = crate::service::AccountedSample::new(december, 6 * GB, 0);
    let first = check(
        "an accounted sample",
        customers
            .record_accounted_usage(tenant, service, 41, sample)
            .await,
    );
    let written = messages().await.len();
    let read = check(
        "read after the sample",
        customers.service(tenant, service).await,
    );
    expect(
        "the sample is counted, its position kept",
        first.counted
            && read.fup_counters().day.download == 6 * GB
            && read.accounted_through() == 41,
    );
    for position in [41, 40] {
        let replay = check(
            "the sample again",
            customers
                .record_accounted_usage(tenant, service, position, sample)
                .await,
        );
        let read = check(
            "read after the replay",
            customers.service(tenant, service).await,
        );
        expect(
            "a sample at or before the last position counts nothing",
            !replay.counted
                && !replay.changed
                && read.fup_counters().day.download == 6 * GB
                && read.accounted_through() == 41
                && messages().await.len() == written,
        );
    }
    let next = check(
        "the next sample",
        customers
            .record_accounted_usage(tenant, service, 42, sample)
            .await,
    );
    expect(
        "the next position counts: 12 GB today is past the daily 10 GB",
        next.counted
            && next.changed
            && next.verdict
                == FupVerdict::Throttled {
                    rule: "daily-10gb".into(),
                    rate: Rate::mbps(2, 2),
                },
    );
}
