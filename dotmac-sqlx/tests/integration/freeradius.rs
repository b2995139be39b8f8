//! The FreeRADIUS adapter against a real FreeRADIUS (Debian's packages, started by
//! `dotmac-radius-harness` over a PostgreSQL database of its own): the money loop's
//! suspensions and restores, plan changes and fair usage reach what the server answers.
//! These tests need `DATABASE_URL` and fail, never skip, when FreeRADIUS cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::sync::Arc;

use chrono::Duration;
use dotmac_core::outbox::{Dispatcher, DispatcherSettings, RetryPolicy};
use dotmac_core::{CustomerId, ManualClock, SubscriptionId, TenantId};
use dotmac_customers::{
    CustomerKind, CustomerService, CustomersSettings, IpPool, NewCustomer, NewService, PoolId,
    ProvisioningHandler, Rate, ServiceId, TechnicalProfile,
};
use dotmac_radius_harness::{
    FreeRadius, FreeRadiusSettings as ServerSettings, PgTarget, prepare_database,
};
use dotmac_sqlx::SqlStore;
use dotmac_sqlx::freeradius::{
    CoaSettings, FreeRadiusProvisioner, FreeRadiusSettings, RateVendor, SuspendedMode,
};

struct Rig {
    server: FreeRadius,
    tenant: TenantId,
    clock: Arc<ManualClock>,
    customers: CustomerService<SqlStore, Arc<ManualClock>>,
    dispatcher: Dispatcher<SqlStore, Arc<ManualClock>>,
}

async fn radius_db() -> PgTarget {
    let url = std::env::var("DATABASE_URL")
        .expect("the FreeRADIUS tests need DATABASE_URL (a PostgreSQL server); they never skip");
    let admin = PgTarget::from_url(&url).unwrap();
    prepare_database(&url, &format!("{}_radius", admin.dbname))
        .await
        .unwrap()
}

async fn rig(settings: FreeRadiusSettings) -> Rig {
    rig_with(|_| settings).await
}

/// A rig whose adapter settings may name the started server (its CoA port).
async fn rig_with(settings: impl FnOnce(&FreeRadius) -> FreeRadiusSettings) -> Rig {
    let target = radius_db().await;
    let server =
        FreeRadius::start(&ServerSettings::new(target.clone())).unwrap_or_else(|e| panic!("{e}"));
    let settings = settings(&server);
    let db = common::postgres().await.expect("DATABASE_URL is set");
    let tenant = common::new_tenant(&db).await;
    let clock = Arc::new(ManualClock::new(common::at(2, 9)));
    let store = SqlStore::new(db);
    let customers =
        CustomerService::new(store.clone(), clock.clone(), CustomersSettings::default());
    let rig_clock = clock.clone();
    let adapter = FreeRadiusProvisioner::connect(&target.url(), tenant, settings)
        .await
        .unwrap();
    let dispatcher = Dispatcher::new(
        store,
        clock,
        DispatcherSettings::new("radius-test").with_retry(RetryPolicy::new(
            Duration::seconds(1),
            Duration::seconds(5),
            3,
        )),
    )
    .handler(Arc::new(ProvisioningHandler::new(adapter)));
    Rig {
        server,
        tenant,
        clock: rig_clock,
        customers,
        dispatcher,
    }
}

async fn subscriber(
    rig: &Rig,
    user: &str,
    profile: TechnicalProfile,
) -> (SubscriptionId, ServiceId) {
    let customer = CustomerId::new();
    rig.customers
        .create_customer(
            rig.tenant,
            customer,
            NewCustomer::lead(CustomerKind::Person {
                first_name: "Ada".into(),
                last_name: "Obi".into(),
            })
            .signed(),
        )
        .await
        .unwrap();
    let subscription = SubscriptionId::new();
    let service = rig
        .customers
        .create_service(
            rig.tenant,
            NewService {
                customer,
                subscription,
                username: user.into(),
                password: "pa55".into(),
                profile,
            },
        )
        .await
        .unwrap();
    rig.customers
        .activate_service(rig.tenant, service.id())
        .await
        .unwrap();
    (subscription, service.id())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

#[tokio::test]
async fn freeradius_answers_as_the_service_states_say() {
    suspension_restore_and_plan_change_reach_freeradius().await;
    a_walled_garden_accepts_suspended_subscribers_into_its_pool().await;
    fair_usage_slows_blocks_and_restores_at_freeradius().await;
    a_live_session_gets_a_coa_on_a_plan_change_and_a_disconnect_on_suspension().await;
}

/// Splynx's 10 GB a day then 2 Mbps, with a 20 GB monthly cap: FreeRADIUS answers the reduced
/// rate, rejects the blocked subscriber, and gives the plan's rate back after the day's reset
/// (the sweep) and access back after a top-up.
async fn fair_usage_slows_blocks_and_restores_at_freeradius() {
    use dotmac_core::Clock as _;
    use dotmac_customers::TopUpId;
    use dotmac_customers::fup::{Direction, FupAction, FupPeriod, FupPolicy, FupRule, TopUp};

    let rig = rig(FreeRadiusSettings::default()).await;
    let gb = 1u64 << 30;
    let rule = |name: &str, period, gb_limit: u64, action| FupRule {
        name: name.into(),
        period,
        direction: Direction::Total,
        threshold_bytes: gb_limit * gb,
        action,
    };
    let policy = FupPolicy::new(chrono_tz::UTC)
        .rule(rule(
            "daily-10gb",
            FupPeriod::Day,
            10,
            FupAction::FixedRate(Rate::mbps(2, 2)),
        ))
        .rule(rule("cap-20gb", FupPeriod::Month, 20, FupAction::Block));
    let user = unique("heavy");
    let (_, service) = subscriber(
        &rig,
        &user,
        TechnicalProfile::new(Rate::mbps(5, 5)).fair_usage(policy),
    )
    .await;
    rig.dispatcher.drain().await.unwrap();
    let rate = |rig: &Rig| {
        let answer = rig.server.authenticate(&user, "pa55").unwrap();
        assert!(answer.accepted(), "{answer:?}\n{}", rig.server.log());
        answer.attribute("Mikrotik-Rate-Limit").map(str::to_owned)
    };
    assert_eq!(rate(&rig).as_deref(), Some("5M/5M"));

    let now = rig.clock.now();
    rig.customers
        .record_usage(rig.tenant, service, now, 10 * gb, gb)
        .await
        .unwrap();
    rig.dispatcher.drain().await.unwrap();
    assert_eq!(rate(&rig).as_deref(), Some("2M/2M"), "throttled");

    // The next day's sweep restores the plan's rate.
    rig.clock.advance(Duration::days(1));
    let swept = rig
        .customers
        .sweep_fair_usage(rig.tenant, 100)
        .await
        .unwrap();
    assert_eq!(swept.len(), 1);
    rig.dispatcher.drain().await.unwrap();
    assert_eq!(rate(&rig).as_deref(), Some("5M/5M"), "reset");

    // 10 GB more: 21 GB this month, blocked.
    let now = rig.clock.now();
    rig.customers
        .record_usage(rig.tenant, service, now, 10 * gb, 0)
        .await
        .unwrap();
    rig.dispatcher.drain().await.unwrap();
    assert_eq!(
        rig.server.authenticate(&user, "pa55").unwrap().code,
        "Access-Reject",
        "blocked"
    );

    // A top-up lifts the block; today's 10 GB still hold the daily slowdown.
    rig.customers
        .top_up(
            rig.tenant,
            service,
            TopUp {
                id: TopUpId::new(),
                bytes: 5 * gb,
                price: None,
            },
        )
        .await
        .unwrap();
    rig.dispatcher.drain().await.unwrap();
    assert_eq!(rate(&rig).as_deref(), Some("2M/2M"), "topped up");
}

async fn suspension_restore_and_plan_change_reach_freeradius() {
    let rig =
        rig(FreeRadiusSettings::default().vendors(&[RateVendor::Mikrotik, RateVendor::Cisco]))
            .await;
    let pool = IpPool::from_cidr(PoolId::new(), "residential", "100.64.8.0/24").unwrap();
    rig.customers.save_pool(rig.tenant, &pool).await.unwrap();
    let user = unique("ada");
    let (subscription, service) = subscriber(
        &rig,
        &user,
        TechnicalProfile::new(Rate::mbps(50, 10)).from_pool(pool.id()),
    )
    .await;

    // Before the dispatcher ran, FreeRADIUS does not know the subscriber.
    assert_eq!(
        rig.server.authenticate(&user, "pa55").unwrap().code,
        "Access-Reject"
    );
    rig.dispatcher.drain().await.unwrap();
    let accept = rig.server.authenticate(&user, "pa55").unwrap();
    assert!(accept.accepted(), "{accept:?}\n{}", rig.server.log());
    assert_eq!(accept.attribute("Mikrotik-Rate-Limit"), Some("10M/50M"));
    assert_eq!(accept.attribute("Framed-IP-Address"), Some("100.64.8.1"));
    let cisco: Vec<_> = accept
        .attributes
        .iter()
        .filter(|(n, _)| n == "Cisco-AVPair")
        .collect();
    assert_eq!(cisco.len(), 2, "{accept:?}");
    assert!(
        cisco[1].1.contains("rate-limit output 50000000"),
        "{cisco:?}"
    );
    assert_eq!(
        rig.server.authenticate(&user, "wrong").unwrap().code,
        "Access-Reject"
    );

    // The money loop: billing suspended the subscription.
    rig.customers
        .subscription_suspended(rig.tenant, subscription)
        .await
        .unwrap();
    rig.dispatcher.drain().await.unwrap();
    assert_eq!(
        rig.server.authenticate(&user, "pa55").unwrap().code,
        "Access-Reject"
    );
    // A replayed suspension changes nothing.
    rig.customers
        .subscription_suspended(rig.tenant, subscription)
        .await
        .unwrap();
    assert_eq!(rig.dispatcher.drain().await.unwrap().claimed, 0);

    rig.customers
        .subscription_restored(rig.tenant, subscription)
        .await
        .unwrap();
    rig.dispatcher.drain().await.unwrap();
    let back = rig.server.authenticate(&user, "pa55").unwrap();
    assert!(back.accepted(), "{back:?}");
    assert_eq!(back.attribute("Mikrotik-Rate-Limit"), Some("10M/50M"));

    let faster = TechnicalProfile::new(Rate::mbps(100, 20)).from_pool(pool.id());
    rig.customers
        .change_profile(rig.tenant, service, faster)
        .await
        .unwrap();
    rig.dispatcher.drain().await.unwrap();
    let (accepted, text) = rig.server.radtest(&user, "pa55").unwrap();
    assert!(accepted, "{text}");
    assert!(
        text.contains("Mikrotik-Rate-Limit = \"20M/100M\""),
        "{text}"
    );

    rig.customers
        .terminate_service(rig.tenant, service, "moved")
        .await
        .unwrap();
    rig.dispatcher.drain().await.unwrap();
    assert_eq!(
        rig.server.authenticate(&user, "pa55").unwrap().code,
        "Access-Reject"
    );
}

/// Run after the other in one test: dispatchers claim from every tenant of the binary's
/// schema, and an adapter serves one tenant (another tenant's command is parked).
async fn a_walled_garden_accepts_suspended_subscribers_into_its_pool() {
    let rig = rig(FreeRadiusSettings::default()
        .group_name("dotmac-walled")
        .suspended(SuspendedMode::WalledGarden {
            pool: "walled".into(),
            rate: Rate::new(512, 512),
        }))
    .await;
    let user = unique("bob");
    let (subscription, _) = subscriber(&rig, &user, TechnicalProfile::new(Rate::mbps(20, 5))).await;
    rig.dispatcher.drain().await.unwrap();
    assert_eq!(
        rig.server
            .authenticate(&user, "pa55")
            .unwrap()
            .attribute("Mikrotik-Rate-Limit"),
        Some("5M/20M")
    );
    rig.customers
        .subscription_suspended(rig.tenant, subscription)
        .await
        .unwrap();
    rig.dispatcher.drain().await.unwrap();
    let walled = rig.server.authenticate(&user, "pa55").unwrap();
    assert!(walled.accepted(), "{walled:?}\n{}", rig.server.log());
    assert_eq!(walled.attribute("Framed-Pool"), Some("walled"));
    assert_eq!(walled.attribute("Mikrotik-Rate-Limit"), Some("512k/512k"));
}

/// The requests FreeRADIUS's CoA listener logged (`radiusd -X`): each `Received …-Request`
/// line with the attribute lines that follow it.
fn received(log: &str, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        if line.contains(&format!("Received {kind}")) {
            let mut packet = line.to_owned();
            // `(N)   Name = value` lines, up to the first section the server runs.
            while let Some(next) = lines.peek() {
                if !next.starts_with('(') || next.contains('#') || !next.contains(" = ") {
                    break;
                }
                packet.push('\n');
                packet.push_str(next);
                lines.next();
            }
            out.push(packet);
        }
    }
    out
}

/// RFC 5176 against FreeRADIUS's own CoA listener playing the NAS (the harness's `coa` site
/// answers every request with an ACK and logs it): an online subscriber's plan change sends a
/// CoA-Request naming the session with the new rate, a suspension a Disconnect-Request; a
/// user without an open session gets nothing. (A NAS that does not answer fails the command
/// as retryable; not run here, because a command left pending in this binary's schema would
/// be claimed by the next run's dispatcher, whose adapter serves another tenant.)
async fn a_live_session_gets_a_coa_on_a_plan_change_and_a_disconnect_on_suspension() {
    let rig = rig_with(|server| {
        FreeRadiusSettings::default().coa(CoaSettings::new(server.secret()).port(server.coa_port()))
    })
    .await;
    let user = unique("cy");
    let (subscription, service) =
        subscriber(&rig, &user, TechnicalProfile::new(Rate::mbps(30, 6))).await;
    let summary = rig.dispatcher.drain().await.unwrap();
    assert_eq!((summary.retried, summary.parked), (0, 0), "{summary:?}");
    // Not online yet: the activation sent nothing.
    assert_eq!(received(&rig.server.log(), "CoA-Request").len(), 0);

    // The subscriber comes online: the NAS's Accounting-Start opens a session in radacct.
    let start = rig
        .server
        .account(&[
            ("Acct-Status-Type", "Start".to_owned()),
            ("User-Name", dotmac_radius_harness::quote(&user)),
            ("Acct-Session-Id", "\"coa-7\"".to_owned()),
            ("NAS-IP-Address", "127.0.0.1".to_owned()),
            ("Framed-IP-Address", "100.64.9.7".to_owned()),
        ])
        .unwrap();
    assert_eq!(start.code, "Accounting-Response");

    rig.customers
        .change_profile(
            rig.tenant,
            service,
            TechnicalProfile::new(Rate::mbps(60, 12)),
        )
        .await
        .unwrap();
    let summary = rig.dispatcher.drain().await.unwrap();
    assert_eq!((summary.retried, summary.parked), (0, 0), "{summary:?}");
    let log = rig.server.log();
    let coa = received(&log, "CoA-Request");
    assert_eq!(coa.len(), 1, "{log}");
    for expected in [
        format!("User-Name = \"{user}\""),
        "Acct-Session-Id = \"coa-7\"".to_owned(),
        "NAS-IP-Address = 127.0.0.1".to_owned(),
        "Framed-IP-Address = 100.64.9.7".to_owned(),
        "Mikrotik-Rate-Limit = \"12M/60M\"".to_owned(),
    ] {
        assert!(
            coa[0].contains(&expected),
            "{expected} not in {}\n{log}",
            coa[0]
        );
    }

    // Billing suspends the subscription: the NAS is told to end the session.
    rig.customers
        .subscription_suspended(rig.tenant, subscription)
        .await
        .unwrap();
    let summary = rig.dispatcher.drain().await.unwrap();
    assert_eq!((summary.retried, summary.parked), (0, 0), "{summary:?}");
    let log = rig.server.log();
    let disconnect = received(&log, "Disconnect-Request");
    assert_eq!(disconnect.len(), 1, "{log}");
    assert!(
        disconnect[0].contains("Acct-Session-Id = \"coa-7\""),
        "{}",
        disconnect[0]
    );
    assert!(
        !disconnect[0].contains("Mikrotik-Rate-Limit"),
        "{}",
        disconnect[0]
    );
    assert_eq!(
        rig.server.authenticate(&user, "pa55").unwrap().code,
        "Access-Reject"
    );
}
