//! The facade reads its services' settings from a tenant of `dotmac-tenancy`: created on a
//! plan through its lifecycle, configured, then billed with its own payment terms, zone and
//! dunning policy.

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac::billing::{Charge, NewSubscription, Plan, Product};
use dotmac::collections::DunningPolicy;
use dotmac::tenancy::{
    Actor, NewTenant, PaymentTerms, PlanCode, Quota, SettingSource, SettingsLayer, TenancyError,
    TenantStatus,
};
use dotmac::{
    Currency, CustomerAccount, CustomerId, Dotmac, Error, FixedClock, Money, PlanId, ProductId,
    RoundingMode, SettingsLayerExt, TenantId, TenantSettingsExt,
};

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

/// A tenant on the professional plan, active, paying in EUR on net 30 in Lisbon with its own
/// dunning policy.
async fn configured_tenant(dotmac: &Dotmac) -> (TenantId, DunningPolicy) {
    let tenancy = dotmac.tenancy();
    let ops = Actor::platform("onboarding");
    let tenant = TenantId::new();
    tenancy
        .request_tenant(
            tenant,
            NewTenant::new("Lisboa Fibra").plan(PlanCode::PROFESSIONAL),
            ops.clone(),
        )
        .await
        .unwrap();
    for to in [TenantStatus::Provisioning, TenantStatus::Active] {
        tenancy
            .transition(tenant, to, ops.clone(), None)
            .await
            .unwrap();
    }
    let policy = DunningPolicy::builder(Currency::EUR)
        .step(3, "overdue_notice")
        .build()
        .unwrap();
    let layer = SettingsLayer::new()
        .with_currency(Currency::EUR)
        .with_time_zone(chrono_tz::Europe::Lisbon)
        .with_payment_terms(PaymentTerms::net(30).unwrap())
        .with_rounding_mode(RoundingMode::HalfEven)
        .with_dunning(&policy)
        .unwrap();
    tenancy.update_settings(tenant, &layer, ops).await.unwrap();
    (tenant, policy)
}

#[tokio::test]
async fn services_read_their_settings_from_the_tenant() {
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 31, 23, 30, 0).unwrap());
    let dotmac = Dotmac::builder("sqlite::memory:")
        .clock(clock)
        .connect()
        .await
        .unwrap();
    let (tenant, policy) = configured_tenant(&dotmac).await;
    let resolved = dotmac.tenancy().settings_of(tenant).await.unwrap();
    assert_eq!(resolved.payment_terms().source, SettingSource::Tenant);
    assert_eq!(resolved.dunning().unwrap().value.as_ref(), Some(&policy));

    let configured = dotmac.configured_for(tenant).await.unwrap();
    let billing = configured.billing().settings();
    assert_eq!(billing.payment_terms_days, 30);
    assert_eq!(billing.zone, chrono_tz::Europe::Lisbon);
    assert_eq!(billing.rounding, RoundingMode::HalfEven);
    assert_eq!(billing.chunk_size, dotmac.billing().settings().chunk_size);
    assert_eq!(configured.collections().settings().policy, policy);
    assert_eq!(
        configured.usage().settings().zone,
        chrono_tz::Europe::Lisbon
    );
    // 23:30 UTC on March 31st is April 1st in Lisbon (UTC+1 since March 29th).
    assert_eq!(dotmac.today(), day(3, 31));
    assert_eq!(configured.today(), day(4, 1));

    // A bill run of the configured services: due 30 days after issue.
    let product = Product {
        id: ProductId::new(),
        name: "Fibra".into(),
    };
    let plan = Plan::builder(PlanId::new(), product.id, "Fibra 500")
        .charge(Charge::recurring_flat([Money::parse(
            "35.00",
            Currency::EUR,
        )
        .unwrap()]))
        .build(day(1, 1))
        .unwrap();
    configured
        .publish_plan(tenant, product, plan.clone())
        .await
        .unwrap();
    let customer = CustomerId::new();
    let used = configured
        .tenancy()
        .admit_customers(tenant, &[customer])
        .await
        .unwrap();
    assert_eq!(used.quota, Quota::Customers);
    assert_eq!(used.used, 1);
    configured
        .subscribe(
            tenant,
            CustomerAccount::new(customer, Currency::EUR),
            NewSubscription::new(customer, plan.id, Currency::EUR, day(3, 1)),
        )
        .await
        .unwrap();
    configured
        .billing()
        .run_bill(tenant, day(3, 1))
        .await
        .unwrap();
    let invoices = configured.invoices_of(tenant, customer).await.unwrap();
    assert_eq!(invoices[0].due_date, day(3, 31));
}

#[tokio::test]
async fn the_builder_reads_a_tenants_settings_at_connect() {
    let path = std::env::temp_dir().join(format!("dotmac-tenancy-{}.db", uuid::Uuid::now_v7()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let first = Dotmac::connect(&url).await.unwrap();
    let (tenant, policy) = configured_tenant(&first).await;
    first.database().close().await;

    let dotmac = Dotmac::builder(&url)
        .tenant_settings(tenant)
        .connect()
        .await
        .unwrap();
    assert_eq!(dotmac.billing().settings().payment_terms_days, 30);
    assert_eq!(dotmac.collections().settings().policy, policy);

    let unknown = TenantId::new();
    let refused = Dotmac::builder("sqlite::memory:")
        .tenant_settings(unknown)
        .connect()
        .await;
    assert!(
        matches!(refused, Err(Error::Tenancy(TenancyError::UnknownTenant(t))) if t == unknown),
        "{refused:?}"
    );
}
