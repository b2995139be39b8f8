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
/// A tenant requested on `plan`, provisioned and active, by the platform's onboarding.
async fn active_tenant(dotmac: &Dotmac, name: &str, plan: PlanCode) -> TenantId {
    let tenancy = dotmac.tenancy();
    let ops = Actor::platform("onboarding");
    let tenant = TenantId::new();
    tenancy
        .request_tenant(tenant, NewTenant::new(name).plan(plan), ops.clone())
        .await
        .unwrap();
    for to in [TenantStatus::Provisioning, TenantStatus::Active] {
        tenancy
            .transition(tenant, to, ops.clone(), None)
            .await
            .unwrap();
    }
    tenant
}

/// Publishes a monthly EUR plan of the "Fibra" product, valid from January 1st.
async fn publish_monthly(dotmac: &Dotmac, tenant: TenantId, name: &str, price: &str) -> Plan {
    let product = Product {
        id: ProductId::new(),
        name: "Fibra".into(),
    };
    let plan = Plan::builder(PlanId::new(), product.id, name)
        .charge(Charge::recurring_flat([
            Money::parse(price, Currency::EUR).unwrap()
        ]))
        .build(day(1, 1))
        .unwrap();
    dotmac
        .publish_plan(tenant, product, plan.clone())
        .await
        .unwrap();
    plan
}

async fn configured_tenant(dotmac: &Dotmac) -> (TenantId, DunningPolicy) {
    let tenancy = dotmac.tenancy();
    let ops = Actor::platform("onboarding");
    let tenant = active_tenant(dotmac, "Lisboa Fibra", PlanCode::PROFESSIONAL).await;
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
    assert_eq!(
        configured.partners().settings().zone,
        chrono_tz::Europe::Lisbon
    );
    // 23:30 UTC on March 31st is April 1st in Lisbon (UTC+1 since March 29th).
    assert_eq!(dotmac.today(), day(3, 31));
    assert_eq!(configured.today(), day(4, 1));

    // A bill run of the configured services: due 30 days after issue.
    let plan = publish_monthly(&configured, tenant, "Fibra 500", "35.00").await;
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

/// A tenant on a yearly invoice number format, billed across a new year, its invoices and
/// usage events counted in its platform usage without the embedder recording anything, and
/// listed with that usage in the platform operator's report; on SQLite and on PostgreSQL.
async fn numbers_and_platform_usage_follow_the_tenant(dotmac: Dotmac) {
    use dotmac::tenancy::{InvoiceNumberFormat, NumberReset};
    use dotmac::usage::{Aggregation, Meter, UsageEvent, UsageStore};
    use dotmac::{MeterId, Period, UsageEventId};

    let tenancy = dotmac.tenancy();
    let ops = Actor::platform("onboarding");
    let tenant = TenantId::new();
    tenancy
        .request_tenant(
            tenant,
            NewTenant::new("Porto Fibra").plan(PlanCode::STARTER),
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
    let format = InvoiceNumberFormat::new("PF-", 5, NumberReset::Yearly).unwrap();
    let notes = InvoiceNumberFormat::new("NC-", 4, NumberReset::Never).unwrap();
    let layer = SettingsLayer::new()
        .with_currency(Currency::EUR)
        .with_invoice_number_format(format.clone())
        .with_credit_note_number_format(notes.clone());
    tenancy.update_settings(tenant, &layer, ops).await.unwrap();
    let resolved = tenancy.settings_of(tenant).await.unwrap();
    assert_eq!(
        resolved.invoice_number_format().source,
        SettingSource::Tenant
    );

    let configured = dotmac.configured_for(tenant).await.unwrap();
    assert_eq!(configured.billing().settings().number_format, format);
    assert_eq!(
        configured.billing().settings().credit_note_number_format,
        notes
    );
    let plan = publish_monthly(&configured, tenant, "Fibra 300", "25.00").await;
    let customers = [CustomerId::new(), CustomerId::new()];
    for customer in customers {
        configured
            .subscribe(
                tenant,
                CustomerAccount::new(customer, Currency::EUR),
                NewSubscription::new(customer, plan.id, Currency::EUR, day(11, 1)),
            )
            .await
            .unwrap();
    }
    let jan = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
    configured.billing().run_bill(tenant, jan).await.unwrap();
    let mut texts: Vec<String> = Vec::new();
    for customer in customers {
        for invoice in configured.invoices_of(tenant, customer).await.unwrap() {
            texts.push(invoice.number_text().unwrap());
        }
    }
    texts.sort();
    assert_eq!(
        texts,
        [
            "PF-2026-00001",
            "PF-2026-00002",
            "PF-2026-00003",
            "PF-2026-00004",
            "PF-2027-00001",
            "PF-2027-00002"
        ]
    );
    // A credit note takes the tenant's credit-note format, in a sequence of its own.
    let first = configured
        .invoices_of(tenant, customers[0])
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let (note, _) = configured
        .billing()
        .credit(
            tenant,
            first.id,
            dotmac::billing::CreditRequest::Lines(vec![dotmac::billing::CreditNoteLine {
                line: 0,
                amount: dotmac::Money::from_minor(500, Currency::EUR),
            }]),
            Some("Outage".into()),
        )
        .await
        .unwrap();
    assert_eq!(note.number_text().as_deref(), Some("NC-0001"));

    // Usage events: counted as they are stored, a replay not again.
    let meter = Meter {
        id: MeterId::new(),
        code: "gb".into(),
        aggregation: Aggregation::Sum,
    };
    let events: Vec<UsageEvent> = (0..5)
        .map(|n| UsageEvent {
            id: UsageEventId::new(),
            customer: customers[0],
            subscription: None,
            meter: meter.id,
            quantity: 1.into(),
            timestamp: Utc.with_ymd_and_hms(2026, 12, 3, 10 + n, 5, 0).unwrap(),
            properties: Default::default(),
        })
        .collect();
    configured
        .store()
        .append_events(tenant, &events)
        .await
        .unwrap();
    let stored = configured
        .store()
        .append_events(tenant, &events[..2])
        .await
        .unwrap();
    assert_eq!(stored, [false, false]);

    // Invoices issued reach the platform usage through the dispatcher, once each, at the
    // instant they were issued (the bill run on January 1st); usage events count in the hour
    // of their own instants (December).
    configured.dispatch().await.unwrap();
    let redelivered = configured.dispatch().await.unwrap();
    assert_eq!(redelivered.claimed, 0);
    let year = Period::new(day(1, 1), jan).unwrap();
    let usage = tenancy
        .platform_usage(tenant, year, chrono_tz::UTC)
        .await
        .unwrap();
    assert_eq!(
        (usage.invoices_issued, usage.events_ingested),
        (0, 5),
        "{usage:?}"
    );
    let next = Period::new(jan, NaiveDate::from_ymd_opt(2027, 2, 1).unwrap()).unwrap();
    let january = tenancy
        .platform_usage(tenant, next, chrono_tz::UTC)
        .await
        .unwrap();
    assert_eq!(
        (january.invoices_issued, january.events_ingested),
        (6, 0),
        "{january:?}"
    );
    // A redelivered invoice event counts nothing: record it again by hand under its id.
    let outbox = configured.store().outbox_messages(tenant).await.unwrap();
    let issued: Vec<_> = outbox
        .iter()
        .filter(|m| m.event_type == "billing.invoice_issued")
        .collect();
    assert_eq!(issued.len(), 6);
    use dotmac::outbox::{EventHandler as _, OutboxStore as _};
    let handler = dotmac::reactions::TenancyMeasuresUse::new(tenancy.clone());
    handler.handle(issued[0]).await.unwrap();
    let again = tenancy
        .platform_usage(tenant, next, chrono_tz::UTC)
        .await
        .unwrap();
    assert_eq!(again, january);

    // The platform operator's report lists the tenant with the same figures.
    let usage = january;
    let report = tenancy
        .platform_report(next, chrono_tz::UTC, 2)
        .await
        .unwrap();
    let (listed, figures) = report
        .iter()
        .find(|(t, _)| t.id() == tenant)
        .expect("the tenant is listed");
    assert_eq!(listed.name(), "Porto Fibra");
    assert_eq!(figures, &usage);
}

#[tokio::test]
async fn numbers_and_platform_usage_follow_the_tenant_on_sqlite() {
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2027, 1, 1, 8, 0, 0).unwrap());
    let dotmac = Dotmac::builder("sqlite::memory:")
        .clock(clock)
        .connect()
        .await
        .unwrap();
    numbers_and_platform_usage_follow_the_tenant(dotmac).await;
}

#[tokio::test]
async fn numbers_and_platform_usage_follow_the_tenant_on_postgres() {
    let schema = crate::harness::PgSchema::new("dotmac_test_platform");
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2027, 1, 1, 8, 0, 0).unwrap());
    let dotmac = Dotmac::builder("unused")
        .database(schema.options())
        .clock(clock)
        .connect()
        .await
        .unwrap();
    numbers_and_platform_usage_follow_the_tenant(dotmac.clone()).await;
    dotmac.database().close().await;
    schema.drop().await;
}

/// The support desk's SLA calendar comes from the tenant's settings when they set one.
#[tokio::test]
async fn the_support_desk_reads_its_calendar_from_the_tenant() {
    use dotmac::support::{
        AssignmentStrategy, BusinessCalendar, NewTicket, Priority, Queue, QueueId, Router,
        SlaPolicy, SlaPolicyId, SlaPolicySet, SupportConfig,
    };
    use dotmac::tenancy::SettingsStore as _;
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
    let dotmac = Dotmac::builder("sqlite::memory:")
        .clock(clock)
        .connect()
        .await
        .unwrap();
    let (tenant, _) = configured_tenant(&dotmac).await;
    // The tenant's desk opens at noon in Lisbon; the configuration passed opens around the clock.
    let noon = BusinessCalendar::builder("Europe/Lisbon")
        .weekdays("12:00", "18:00")
        .build()
        .unwrap();
    let layer = dotmac.tenancy().settings_of(tenant).await.unwrap();
    assert_eq!(layer.business_calendar().unwrap().value, None);
    let mut own = dotmac.store().tenant_settings(tenant).await.unwrap();
    own = own.with_business_calendar(&noon).unwrap();
    dotmac
        .tenancy()
        .update_settings(tenant, &own, Actor::platform("ops"))
        .await
        .unwrap();
    let queue = Queue {
        id: QueueId::new(),
        name: "L1".into(),
        members: vec![],
        strategy: AssignmentStrategy::RoundRobin,
    };
    dotmac.support().put_queue(tenant, &queue).await.unwrap();
    dotmac
        .configure_support(
            tenant,
            SupportConfig::new(
                BusinessCalendar::always_open(),
                SlaPolicySet {
                    policies: vec![SlaPolicy::isp_default(SlaPolicyId::new())],
                },
                Router::new(queue.id),
            ),
        )
        .await
        .unwrap();
    let (ticket, _) = dotmac
        .support()
        .create_ticket(tenant, NewTicket::new("No sync").priority(Priority::High))
        .await
        .unwrap();
    // High: 4 business hours to respond, counted from noon in Lisbon (UTC+0 on March 2nd).
    let clocks = dotmac
        .support()
        .sla_clocks(tenant, ticket.id())
        .await
        .unwrap();
    assert_eq!(
        clocks[0].due_at,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 16, 0, 0).unwrap())
    );
}

/// Customers made through the facade count against the tenant's quota where they are made: the
/// starter plan's 100th is admitted, the 101st is the quota's error and leaves no record, and
/// an invalid customer is released again.
#[tokio::test]
async fn the_facade_counts_customers_against_the_quota_where_they_are_created() {
    use dotmac::customers::{CustomerKind, NewCustomer};
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
    let dotmac = Dotmac::builder("sqlite::memory:")
        .clock(clock)
        .connect()
        .await
        .unwrap();
    let tenant = active_tenant(&dotmac, "Small Fibre", PlanCode::STARTER).await;
    let person = || {
        NewCustomer::lead(CustomerKind::Person {
            first_name: "A".into(),
            last_name: "B".into(),
        })
    };
    // An invalid record is refused and released: it never counts.
    let invalid = NewCustomer::lead(CustomerKind::Person {
        first_name: String::new(),
        last_name: String::new(),
    });
    let refused = dotmac
        .create_customer(tenant, CustomerId::new(), invalid)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Customers(_)), "{refused:?}");
    for _ in 0..100 {
        dotmac
            .create_customer(tenant, CustomerId::new(), person())
            .await
            .unwrap();
    }
    let over = CustomerId::new();
    let error = dotmac
        .create_customer(tenant, over, person())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Tenancy(TenancyError::QuotaExceeded {
                quota: Quota::Customers,
                limit: 100,
                used: 100,
                ..
            })
        ),
        "{error:?}"
    );
    assert!(dotmac.customers().customer(tenant, over).await.is_err());
}
