//! The ISP loop to the network: billing and collections on PostgreSQL driving a real
//! FreeRADIUS, and FreeRADIUS's accounting coming back as billed usage. The core of
//! `examples/isp_network.rs`, a library function so a test can run it (`tests/isp_network.rs`).
//!
//! One tenant, two fibre plans with a rate, a data allowance with overage and a fair-usage
//! rule, three subscribers, October 2026:
//!
//! 1. The October bill run; the services are activated and the provisioning commands reach
//!    FreeRADIUS through the outbox (`ProvisioningHandler` over `FreeRadiusProvisioner`):
//!    each subscriber is accepted at its plan's rate.
//! 2. `radclient` sends the subscribers' accounting (Start, Interim-Updates, one past 2³² bytes
//!    with Gigawords, Stop); `RadacctIngester` reads FreeRADIUS's `radacct` into the usage
//!    store and publishes each session's growth (`usage.session_accounted`) in the same
//!    transaction; the facade's `FairUsageFollowsAccounting` counts it into the fair-usage
//!    counters: the heavy user's rate drops once the threshold is passed, and FreeRADIUS
//!    answers with the lower rate.
//! 3. Collections: one subscriber never pays and is suspended (FreeRADIUS rejects him), one
//!    pays after her suspension and is restored (accepted again).
//! 4. November 1st: October's usage is rated and billed (the heavy user's overage line), and
//!    the fair-usage month resets (the plan's rate is back).
//!
//! A change for a subscriber who is online also reaches the NAS (RFC 5176, the harness's CoA
//! listener playing it): a CoA-Request with the new rate, a Disconnect-Request on suspension.
//!
//! Everything printed is read back: FreeRADIUS's answers from `radclient`, the usage from the
//! usage store, the invoices from the database, the NAS's requests from its log.

use std::error::Error;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use dotmac::billing::usage_billing::UsageBillingSettings;
use dotmac::billing::usage_billing::allowance::AllowancePolicy;
use dotmac::billing::{
    BillingSettings, Charge, CurrencyPrice, InvoiceStore, LineKind, NewSubscription, Plan,
    PriceModel, Product, SubscriptionStore,
};
use dotmac::collections::{
    CollectionAction, CollectionEvent, CollectionsSettings, CustomerLedger, DunningPolicy,
    PaymentStore, RestoreOnPayment,
};
use dotmac::customers::fup::{Direction as FupDirection, FupAction, FupPeriod, FupPolicy, FupRule};
use dotmac::customers::{
    CustomerKind, CustomersSettings, NewCustomer, PlanService, Rate, ServiceId, TechnicalProfile,
};
use dotmac::sql::DatabaseOptions;
use dotmac::sql::freeradius::{CoaSettings, FreeRadiusProvisioner, FreeRadiusSettings};
use dotmac::sql::radacct::{IngestReport, RadacctIngester, RadacctSettings};
use dotmac::usage::radius::{Direction, RadiusSettings};
use dotmac::usage::{Aggregation, Meter, UsageStore};
use dotmac::{
    BillingInterval, Currency, CustomerAccount, CustomerId, Dotmac, ManualClock, MeterId, Money,
    PaymentId, PlanId, ProductId, SharedClock, SubscriptionId, TenantId,
};
use dotmac_radius_harness::{
    FreeRadius, FreeRadiusSettings as ServerSettings, PgTarget, prepare_database, quote,
};
use rust_decimal::Decimal;

/// Any error of the run.
pub type AnyError = Box<dyn Error + Send + Sync>;

/// The download meter (bytes) and the upload meter.
const DOWN: MeterId = MeterId::from_u128(0xd0);
const UP: MeterId = MeterId::from_u128(0x0d);
/// Every plan includes 10 GB a month; above it, 2.00 per GB (0.000000002 per byte).
const INCLUDED_BYTES: u64 = 10_000_000_000;
/// The fair-usage rule: 8 GB downloaded in a calendar month, then 75/12.5 Mbit/s.
const FUP_BYTES: u64 = 8_000_000_000;

/// What the run read back, for its test.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct NetworkReport {
    /// Each new subscriber's `Mikrotik-Rate-Limit` in its first Access-Accept.
    pub accepted_rates: Vec<(String, Option<String>)>,
    /// The heavy user's rate limit after the fair-usage threshold.
    pub throttled_rate: Option<String>,
    /// The heavy user's rate limit after the month reset.
    pub reset_rate: Option<String>,
    /// FreeRADIUS's answer to the non-payer after his suspension.
    pub non_payer_after_suspension: String,
    /// FreeRADIUS's answer to the late payer after her suspension, then after her restore.
    pub late_payer: (String, String),
    /// The October usage in the store per user: (download, upload) bytes.
    pub stored_usage: Vec<(String, Decimal, Decimal)>,
    /// The usage lines of the November invoices: (user, quantity, amount).
    pub usage_lines: Vec<(String, Decimal, Decimal)>,
    /// Usage events the reader stored, over all its passes.
    pub events_ingested: usize,
    /// Rows of users this tenant does not know (other tenants' or earlier runs'), refused.
    pub rows_refused: usize,
    /// The CoA-Requests and Disconnect-Requests (RFC 5176) the NAS received for live sessions.
    pub coa_requests: (usize, usize),
}

fn at(month: u32, day: u32, hour: u32) -> Result<DateTime<Utc>, AnyError> {
    Utc.with_ymd_and_hms(2026, month, day, hour, 0, 0)
        .single()
        .ok_or_else(|| "bad instant".into())
}

fn date(month: u32, day: u32) -> Result<NaiveDate, AnyError> {
    NaiveDate::from_ymd_opt(2026, month, day).ok_or_else(|| "bad date".into())
}

/// A subscriber of the run.
struct Subscriber {
    user: String,
    customer: CustomerId,
    subscription: SubscriptionId,
    service: ServiceId,
}

/// The plans: (name, id, download Mbps, upload Mbps, monthly fee).
const PLANS: [(&str, u128, u64, u64, i64); 2] = [
    ("Fibre 100", 0x100, 100, 20, 40),
    ("Fibre 300", 0x300, 300, 50, 60),
];

fn fair_usage() -> FupPolicy {
    FupPolicy::new(chrono_tz::UTC).rule(FupRule {
        name: "monthly 8 GB".into(),
        period: FupPeriod::Month,
        direction: FupDirection::Download,
        threshold_bytes: FUP_BYTES,
        // A quarter of Fibre 300's rate.
        action: FupAction::SpeedPercent(25),
    })
}

/// Everything the steps share.
struct Loop {
    dotmac: Dotmac,
    tenant: TenantId,
    clock: Arc<ManualClock>,
    server: FreeRadius,
    radius_url: String,
    events_ingested: usize,
    rows_refused: usize,
}

impl Loop {
    fn set(&self, month: u32, day: u32, hour: u32) -> Result<(), AnyError> {
        self.clock.set(at(month, day, hour)?);
        Ok(())
    }

    /// The customers service of the facade (over the same database).
    fn customers(&self) -> &dotmac::Customers {
        self.dotmac.customers()
    }

    async fn dispatch(&self) -> Result<(), AnyError> {
        let summary = self.dotmac.dispatch().await?;
        if summary.parked > 0 || summary.retried > 0 {
            return Err(format!("outbox events failed: {summary:?}").into());
        }
        Ok(())
    }

    /// FreeRADIUS's answer to an Access-Request: the packet type and the rate limit.
    fn ask(&self, user: &str) -> Result<(String, Option<String>), AnyError> {
        let reply = self.server.authenticate(user, "pa55")?;
        let rate = reply.attribute("Mikrotik-Rate-Limit").map(str::to_owned);
        Ok((reply.code, rate))
    }

    /// One Accounting-Request from the NAS (download and upload as 64-bit totals, split into
    /// Octets and Gigawords; Acct-Output is what the NAS sent the user).
    fn account(
        &self,
        status: &str,
        user: &str,
        session: &str,
        when: DateTime<Utc>,
        download: u64,
        upload: u64,
    ) -> Result<(), AnyError> {
        let attributes = [
            ("Acct-Status-Type", status.to_owned()),
            ("User-Name", quote(user)),
            ("Acct-Session-Id", quote(session)),
            ("NAS-IP-Address", "127.0.0.1".to_owned()),
            ("NAS-Port", "7".to_owned()),
            ("Event-Timestamp", when.timestamp().to_string()),
            ("Acct-Output-Octets", (download & 0xffff_ffff).to_string()),
            ("Acct-Output-Gigawords", (download >> 32).to_string()),
            ("Acct-Input-Octets", (upload & 0xffff_ffff).to_string()),
            ("Acct-Input-Gigawords", (upload >> 32).to_string()),
        ];
        let reply = self.server.account(&attributes)?;
        if reply.code != "Accounting-Response" {
            return Err(format!("FreeRADIUS answered {} to accounting", reply.code).into());
        }
        Ok(())
    }

    /// A reader instance (from the persisted mark) reads `radacct`; each session's growth
    /// goes to the fair-usage counters of the service of its user name, through the outbox.
    async fn ingest(&mut self, subscribers: &[Subscriber]) -> Result<IngestReport, AnyError> {
        let reader = RadacctIngester::connect(
            &self.radius_url,
            self.dotmac.store().clone(),
            self.tenant,
            RadacctSettings::new(RadiusSettings::new(Direction::InputIsUpload, DOWN, UP)),
        )
        .await?;
        let report = reader.ingest().await?;
        self.events_ingested += report.events;
        let ours = |name: &str| subscribers.iter().any(|s| s.user == name);
        self.rows_refused += report
            .rejected
            .iter()
            .filter(|r| !ours(&r.username))
            .count();
        if let Some(refused) = report.rejected.iter().find(|r| ours(&r.username)) {
            return Err(format!("the reader refused our own row: {refused:?}").into());
        }
        // The sessions' growth reaches fair usage through the outbox (the reader published it
        // with the usage): what the dispatch changes is read back from each service.
        let mut before = Vec::new();
        for s in subscribers {
            let service = self.customers().service(self.tenant, s.service).await?;
            before.push(service.effective_rate());
        }
        self.dispatch().await?;
        for (s, was) in subscribers.iter().zip(before) {
            let service = self.customers().service(self.tenant, s.service).await?;
            if service.effective_rate() != was {
                println!(
                    "    fair usage: {} is now at {:?} ({:?})",
                    s.user,
                    service.effective_rate(),
                    service.throttle().map(|t| t.rule.as_str())
                );
            }
        }
        Ok(report)
    }

    /// Pays the customer's whole open balance.
    async fn pay(&self, customer: CustomerId) -> Result<Vec<CollectionAction>, AnyError> {
        let collections = self.dotmac.collections();
        let entries = collections
            .payment_store()
            .entries(self.tenant, customer)
            .await?;
        let ledger = CustomerLedger::from_entries(customer, Currency::USD, entries)?;
        let open = Money::sum(
            Currency::USD,
            ledger.invoices().iter().map(|balance| balance.open()),
        )?;
        let events = collections
            .record_payment(
                self.tenant,
                customer,
                PaymentId::new(),
                open,
                dotmac::collections::AllocationTarget::OldestFirst,
            )
            .await?;
        Ok(actions(&events))
    }
}

fn actions(events: &[dotmac::DomainEvent<CollectionEvent>]) -> Vec<CollectionAction> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            CollectionEvent::Action(fired) => Some(fired.action),
            _ => None,
        })
        .collect()
}

/// Runs the loop on the PostgreSQL server of `database_url` (DotMac's tables in `schema` of its
/// database, FreeRADIUS's in the database `<database>_radius`), printing what it reads back,
/// and returns it. Use a schema no other process dispatches from: the dispatcher serves every
/// tenant of its schema, and the FreeRADIUS adapter only this run's tenant.
///
/// # Errors
///
/// Any failure: PostgreSQL, FreeRADIUS not installed or not starting, a step that did not do
/// what it should.
pub async fn run(database_url: &str, schema: &str) -> Result<NetworkReport, AnyError> {
    let usd = Currency::USD;
    let zone = chrono_tz::UTC;
    let admin = PgTarget::from_url(database_url)?;
    let radius_db = prepare_database(database_url, &format!("{}_radius", admin.dbname)).await?;
    let server = FreeRadius::start(&ServerSettings::new(radius_db.clone()))?;
    println!(
        "FreeRADIUS on 127.0.0.1:{} (auth) / {} (acct), rlm_sql on PostgreSQL database {}",
        server.auth_port(),
        server.acct_port(),
        radius_db.dbname
    );

    let clock = Arc::new(ManualClock::new(at(9, 30, 9)?));
    let shared: SharedClock = clock.clone();
    let meters = vec![
        Meter {
            id: DOWN,
            code: "download_bytes".into(),
            aggregation: Aggregation::Sum,
        },
        Meter {
            id: UP,
            code: "upload_bytes".into(),
            aggregation: Aggregation::Sum,
        },
    ];
    let per_byte = PriceModel::PerUnit {
        unit_amount: Decimal::new(2, 9),
    };
    let product = Product {
        id: ProductId::from_u128(0x1),
        name: "Fibre broadband".into(),
    };
    let mut plans = Vec::new();
    let mut usage_settings = UsageBillingSettings::new(zone, meters);
    // Each plan's technical profile: its speed and the fair-usage rule.
    let mut customers_settings = CustomersSettings::default();
    for (name, id, down, up, fee) in PLANS {
        customers_settings = customers_settings.with_plan_profile(
            PlanId::from_u128(id),
            TechnicalProfile::new(Rate::mbps(down, up)).fair_usage(fair_usage()),
        );
        let plan = Plan::builder(PlanId::from_u128(id), product.id, name)
            .interval(BillingInterval::MONTHLY)
            .charge(Charge::recurring_flat([Money::new(
                Decimal::from(fee),
                usd,
            )]))
            .charge(Charge::usage(
                DOWN,
                vec![CurrencyPrice {
                    currency: usd,
                    model: per_byte.clone(),
                }],
            ))
            .build(date(1, 1)?)?;
        usage_settings = usage_settings.allowance(
            plan.id,
            AllowancePolicy::new(DOWN, Decimal::from(INCLUDED_BYTES), usd, None, &[80, 100])?,
        );
        plans.push(plan);
    }
    // Suspension a week after the due date, restore on payment.
    let policy = DunningPolicy::builder(usd)
        .step(1, "overdue_notice")
        .step(7, "suspend")
        .restore_on_payment(RestoreOnPayment::Restore {
            reconnection_fee: None,
        })
        .build()?;
    let dotmac = Dotmac::builder(database_url)
        .database(DatabaseOptions::new(database_url).schema(schema))
        .shared_clock(shared.clone())
        .billing(
            BillingSettings::default()
                .with_payment_terms_days(14)
                .with_zone(zone),
        )
        .usage(usage_settings)
        .collections(CollectionsSettings::new(policy).with_zone(zone))
        .customers(customers_settings)
        .connect()
        .await?;
    let tenant = dotmac.create_tenant("Example Fibre").await?;
    for plan in &plans {
        dotmac
            .publish_plan(tenant, product.clone(), plan.clone())
            .await?;
    }

    // The network side: the facade's customers service (same database) and, behind its
    // outbox, the FreeRADIUS adapter: one dispatcher carries the order-to-cash, partner,
    // tenancy and network reactions and the provisioning commands. Live sessions hear of
    // changes too (RFC 5176): the harness's CoA listener plays the NAS every session names
    // (NAS-IP-Address 127.0.0.1).
    let coa = CoaSettings::new(server.secret()).port(server.coa_port());
    let adapter = FreeRadiusProvisioner::connect(
        &radius_db.url(),
        tenant,
        FreeRadiusSettings::default().coa(coa),
    )
    .await?;
    let dotmac = dotmac.with_provisioner(adapter);
    let mut lp = Loop {
        dotmac,
        tenant,
        clock,
        server,
        radius_url: radius_db.url(),
        events_ingested: 0,
        rows_refused: 0,
    };
    let mut report = NetworkReport::default();

    // Three subscribers: Ada on Fibre 300 (a heavy user who pays), Bob on Fibre 100 (never
    // pays), Cy on Fibre 100 (pays after her suspension).
    let run_id = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let mut subscribers = Vec::new();
    for (first, plan) in [("ada", 1usize), ("bob", 0), ("cy", 0)] {
        let (_, plan_id, _, _, _) = PLANS[plan];
        let customer = CustomerId::new();
        let subscription = SubscriptionId::new();
        let user = format!("{first}-{run_id}");
        lp.dotmac
            .billing()
            .save_account(tenant, CustomerAccount::new(customer, usd))
            .await?;
        lp.dotmac
            .billing()
            .subscribe(
                tenant,
                NewSubscription::new(customer, PlanId::from_u128(plan_id), usd, date(10, 1)?)
                    .id(subscription)
                    .anchor(date(10, 1)?),
            )
            .await?;
        lp.customers()
            .create_customer(
                tenant,
                customer,
                NewCustomer::lead(CustomerKind::Person {
                    first_name: first.into(),
                    last_name: "Example".into(),
                })
                .signed(),
            )
            .await?;
        let service = lp
            .customers()
            .create_service_on_plan(
                tenant,
                PlanService::new(
                    customer,
                    subscription,
                    PlanId::from_u128(plan_id),
                    &user,
                    "pa55",
                ),
            )
            .await?;
        subscribers.push(Subscriber {
            user,
            customer,
            subscription,
            service: service.id(),
        });
    }
    let [ada, bob, cy] = &subscribers[..] else {
        return Err("three subscribers".into());
    };

    // October 1st: the bill run, and the services go live.
    lp.set(10, 1, 6)?;
    let october = lp.dotmac.billing().run_bill(tenant, date(10, 1)?).await?;
    for s in &subscribers {
        lp.customers().activate_service(tenant, s.service).await?;
    }
    lp.dispatch().await?;
    println!(
        "Oct 1: {} invoices issued; FreeRADIUS answers",
        october.invoices
    );
    for s in &subscribers {
        let (code, rate) = lp.ask(&s.user)?;
        println!("  {:<12} {code} Mikrotik-Rate-Limit={rate:?}", s.user);
        report.accepted_rates.push((s.user.clone(), rate));
    }

    // October's traffic, read back from radacct as it comes.
    println!("October: accounting from radclient, read from radacct");
    lp.set(10, 5, 9)?;
    lp.account("Start", &ada.user, "ada-1", at(10, 5, 8)?, 0, 0)?;
    lp.account(
        "Interim-Update",
        &ada.user,
        "ada-1",
        at(10, 5, 9)?,
        3_000_000_000,
        40_000_000,
    )?;
    lp.account("Start", &bob.user, "bob-1", at(10, 5, 8)?, 0, 0)?;
    lp.account(
        "Interim-Update",
        &bob.user,
        "bob-1",
        at(10, 5, 9)?,
        700_000_000,
        9_000_000,
    )?;
    lp.account("Start", &cy.user, "cy-1", at(10, 5, 8)?, 0, 0)?;
    lp.account(
        "Stop",
        &cy.user,
        "cy-1",
        at(10, 5, 9)?,
        1_200_000_000,
        20_000_000,
    )?;
    let first = lp.ingest(&subscribers).await?;
    println!(
        "  pass 1: {} rows, {} usage events; ada {:?}, bob {:?}, cy {:?} (down, up)",
        first.rows,
        first.events,
        first.usage_of(&ada.user),
        first.usage_of(&bob.user),
        first.usage_of(&cy.user)
    );
    // Ada pays October on the 6th.
    lp.set(10, 6, 10)?;
    lp.pay(ada.customer).await?;
    lp.dispatch().await?;
    // Ada's counter passes 2^32 (FreeRADIUS adds Gigawords = 1), then her monthly 8 GB.
    lp.set(10, 12, 20)?;
    lp.account(
        "Interim-Update",
        &ada.user,
        "ada-1",
        at(10, 12, 20)?,
        6_000_000_000,
        90_000_000,
    )?;
    let second = lp.ingest(&subscribers).await?;
    println!(
        "  pass 2: {} usage events; ada {:?} (her row now holds 6,000,000,000 bytes down)",
        second.events,
        second.usage_of(&ada.user)
    );
    lp.set(10, 12, 21)?;
    lp.account(
        "Interim-Update",
        &ada.user,
        "ada-1",
        at(10, 12, 21)?,
        9_000_000_000,
        120_000_000,
    )?;
    let third = lp.ingest(&subscribers).await?;
    println!(
        "  pass 3: {} usage events; ada {:?}",
        third.events,
        third.usage_of(&ada.user)
    );
    let (code, rate) = lp.ask(&ada.user)?;
    println!(
        "  {:<12} past 8 GB: {code} Mikrotik-Rate-Limit={rate:?}",
        ada.user
    );
    report.throttled_rate = rate;
    lp.set(10, 14, 23)?;
    lp.account(
        "Stop",
        &ada.user,
        "ada-1",
        at(10, 14, 22)?,
        12_000_000_000,
        150_000_000,
    )?;
    let fourth = lp.ingest(&subscribers).await?;
    let again = lp.ingest(&subscribers).await?;
    println!(
        "  pass 4: {} usage events; ada {:?}; a fresh reader again: {} events",
        fourth.events,
        fourth.usage_of(&ada.user),
        again.events
    );

    // Collections: Bob never pays; Cy pays after her suspension.
    let mut day = date(10, 15)?;
    while day <= date(10, 31)? {
        lp.clock
            .set(Utc.from_utc_datetime(&day.and_hms_opt(6, 0, 0).ok_or("bad time")?));
        for s in [bob, cy] {
            let fired = actions(&lp.dotmac.collections().evaluate(tenant, s.customer).await?);
            if fired.contains(&CollectionAction::Suspend) {
                println!("  {day}: {} suspended for non-payment", s.user);
            }
        }
        lp.dispatch().await?;
        if day == date(10, 22)? {
            let (bob_code, _) = lp.ask(&bob.user)?;
            let (cy_code, _) = lp.ask(&cy.user)?;
            println!(
                "  {day}: FreeRADIUS answers {} {bob_code}, {} {cy_code}",
                bob.user, cy.user
            );
            report.non_payer_after_suspension = bob_code;
            report.late_payer.0 = cy_code;
        }
        if day == date(10, 26)? {
            let fired = lp.pay(cy.customer).await?;
            lp.dispatch().await?;
            let (code, rate) = lp.ask(&cy.user)?;
            println!(
                "  {day}: {} pays ({fired:?}); FreeRADIUS answers {code} Mikrotik-Rate-Limit={rate:?}",
                cy.user
            );
            report.late_payer.1 = code;
        }
        day = day.succ_opt().ok_or("date overflow")?;
    }

    // November 1st: October's usage rated and billed; the fair-usage month resets.
    lp.set(11, 1, 2)?;
    let nov1 = date(11, 1)?;
    let (rated, run) = lp.dotmac.usage().bill(tenant, nov1).await?;
    lp.dispatch().await?;
    println!(
        "Nov 1: {} subscription-periods rated, {} invoices issued",
        rated.rated.len(),
        run.invoices
    );
    for s in &subscribers {
        let mut totals = [Decimal::ZERO; 2];
        for (slot, meter) in totals.iter_mut().zip([DOWN, UP]) {
            for event in lp
                .dotmac
                .store()
                .events_between(tenant, s.customer, meter, at(10, 1, 0)?, at(11, 1, 0)?)
                .await?
            {
                *slot = slot.checked_add(event.quantity).ok_or("usage overflow")?;
            }
        }
        report
            .stored_usage
            .push((s.user.clone(), totals[0], totals[1]));
        let invoices = lp.dotmac.store().invoices_of(tenant, s.customer).await?;
        let november = invoices.iter().find(|i| i.issue_date == nov1);
        println!(
            "  {:<12} October usage {} bytes down, {} up; subscription {:?}",
            s.user,
            totals[0],
            totals[1],
            lp.dotmac
                .billing()
                .store()
                .subscription(tenant, s.subscription)
                .await?
                .map(|sub| sub.status())
        );
        if let Some(invoice) = november {
            for line in &invoice.lines {
                println!(
                    "    Nov invoice {:?}: {} × {} = {}  ({})",
                    line.kind,
                    line.quantity,
                    line.unit_price.amount(),
                    line.amount,
                    line.description()
                );
                if line.kind == LineKind::Usage {
                    report
                        .usage_lines
                        .push((s.user.clone(), line.quantity, line.amount.amount()));
                }
            }
            println!("    total {} ({:?})", invoice.total, invoice.status);
        }
    }
    let reset = lp
        .customers()
        .refresh_fair_usage(tenant, ada.service)
        .await?;
    lp.dispatch().await?;
    let (code, rate) = lp.ask(&ada.user)?;
    println!(
        "  {:<12} new month: {:?}; FreeRADIUS answers {code} Mikrotik-Rate-Limit={rate:?}",
        ada.user, reset.verdict
    );
    report.reset_rate = rate;
    let log = lp.server.log();
    report.coa_requests = (
        log.matches("Received CoA-Request").count(),
        log.matches("Received Disconnect-Request").count(),
    );
    println!(
        "NAS (RFC 5176): {} CoA-Request (the heavy user's slowdown, online), {} Disconnect-Request (the non-payer's suspension, online)",
        report.coa_requests.0, report.coa_requests.1
    );
    report.events_ingested = lp.events_ingested;
    report.rows_refused = lp.rows_refused;
    println!(
        "Reader: {} usage events stored in all; {} radacct rows of users this tenant does not know refused",
        lp.events_ingested, lp.rows_refused
    );
    Ok(report)
}
