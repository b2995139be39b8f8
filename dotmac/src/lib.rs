//! # DotMac
//!
//! The business side of an internet service provider as one SDK: a catalogue of plans and
//! prices, subscriptions with proration, invoices and credit notes exact to the cent, usage
//! metering and RADIUS accounting, payments, dunning and receivables, support tickets on SLA
//! clocks, and partner programmes with commission ledgers, stored on embedded SQLite or on
//! PostgreSQL.
//!
//! This crate is the facade most applications depend on. It re-exports the domain crates
//! ([`billing`], [`usage`], [`collections`], [`support`], [`partners`], [`tenancy`]), the storage crate
//! ([`sql`]) and the shared vocabulary ([`Money`], [`Currency`], the typed ids, [`Clock`]), and
//! adds [`Dotmac`]: every service wired over one database and one clock, so that no generic
//! parameter has to be named to get from a database URL to a first invoice.
//!
//! # Zero to a first invoice
//!
//! Six calls: connect, create the tenant, publish a plan, subscribe a customer, run the bill
//! run, read the invoice.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use dotmac::billing::{Charge, NewSubscription, Plan, Product};
//! use dotmac::{Currency, CustomerAccount, CustomerId, Dotmac, Money, PlanId, ProductId};
//!
//! let day = |m, d| chrono::NaiveDate::from_ymd_opt(2026, m, d).unwrap();
//! let fibre = Product { id: ProductId::new(), name: "Fibre".into() };
//! let plan = Plan::builder(PlanId::new(), fibre.id, "Fibre 100")
//!     .charge(Charge::recurring_flat([Money::parse("30.00", Currency::USD)?]))
//!     .build(day(1, 1))?;
//! let customer = CustomerId::new();
//!
//! let dotmac = Dotmac::connect("sqlite::memory:").await?; // 1
//! let tenant = dotmac.create_tenant("Acme Fibre").await?; // 2
//! dotmac.publish_plan(tenant, fibre, plan.clone()).await?; // 3
//! let account = CustomerAccount::new(customer, Currency::USD);
//! let request = NewSubscription::new(customer, plan.id, Currency::USD, day(3, 1));
//! dotmac.subscribe(tenant, account, request).await?; // 4
//! dotmac.billing().run_bill(tenant, day(3, 1)).await?; // 5
//! let invoices = dotmac.invoices_of(tenant, customer).await?; // 6
//!
//! assert_eq!(invoices[0].total, Money::parse("30.00", Currency::USD)?);
//! assert_eq!(invoices[0].number.as_ref().map(|n| n.to_string()), Some("000001".into()));
//! # Ok::<(), dotmac::Error>(()) }).unwrap();
//! ```
//!
//! # Overview
//!
//! - **Pure domain, async storage.** Every rule is a synchronous function over values
//!   ([`billing::bill_due`], [`collections::evaluate`], [`billing::PriceModel::amount`]): no
//!   I/O, no clock read. Services ([`Billing`], [`UsageBilling`], [`Collections`],
//!   [`Support`], [`Partners`]) read a tenant-scoped store, run the domain, commit the result atomically and
//!   return [`DomainEvent`]s. [`Dotmac`] holds one of each over one [`sql::SqlStore`].
//! - **Time is an input.** Services read a [`Clock`] ([`SystemClock`] unless the builder is
//!   given another); business dates are local dates in the tenant's zone
//!   ([`billing::BillingSettings::with_zone`]).
//! - **Exact money.** [`Money`] is a `Decimal` with an ISO [`Currency`], rounded at one
//!   documented place (when a line is put on a document) with checked arithmetic.
//! - **Tenants everywhere.** Every storage call takes a [`TenantId`]; on PostgreSQL every
//!   transaction also runs under row-level security for that tenant. [`Dotmac::tenancy`] is
//!   the tenants' own lifecycle, plan, quotas, settings, users and roles; the services can
//!   read their settings from a tenant's ([`Dotmac::configured_for`]).
//! - **Typed errors that keep their cause.** Each crate has its own `#[non_exhaustive]` error;
//!   [`Error`] gathers them for applications that want one `?`.
//! - **Observable.** Every service operation and store transaction opens a `tracing` span and
//!   counts through the `metrics` facade; both cost nothing until the application installs a
//!   subscriber or a recorder. The names are listed in the repository's
//!   `docs/observability.md`.
//!
//! # Features
//!
//! - `sqlite` (default): the embedded backend, bundled libsqlite3, no server.
//! - `postgres`: PostgreSQL (NUMERIC money, row-level security, `FOR UPDATE SKIP LOCKED`
//!   scale-out bill runs). Enable it beside or instead of `sqlite`; [`Dotmac::connect`] picks
//!   the backend from the URL.
//!
//! # Non-features
//!
//! - **No payment gateway, no e-mail, no PDF.** DotMac decides what is owed, when to remind
//!   and when to suspend, and says so in events; sending money, mail and documents is the
//!   application's (it consumes the events).
//! - **No HTTP server.** DotMac is a library embedded in the operator's own services.
//! - **No network element drivers.** Suspension and restoration are events
//!   (`collections.suspend_service`, `collections.restore_service`) for a provisioning
//!   adapter to carry out.
//! - **No floating point money, ever,** and no implicit currency conversion.
//!
//! # Cookbook
//!
//! ### A bill run at a fixed time, in the tenant's zone
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use chrono::TimeZone;
//! use dotmac::billing::BillingSettings;
//! use dotmac::{Dotmac, FixedClock};
//!
//! let clock = FixedClock::new(chrono::Utc.with_ymd_and_hms(2026, 4, 1, 2, 0, 0).unwrap());
//! let dotmac = Dotmac::builder("sqlite::memory:")
//!     .clock(clock)
//!     .billing(BillingSettings::default().with_zone(chrono_tz::Europe::Lisbon))
//!     .connect()
//!     .await?;
//! let tenant = dotmac.create_tenant("Acme Fibre").await?;
//! let run = dotmac.billing().run_bill(tenant, dotmac.today()).await?;
//! assert_eq!(run.invoices, 0); // nothing subscribed yet
//! # Ok::<(), dotmac::Error>(()) }).unwrap();
//! ```
//!
//! ### Usage: meters, idempotent ingestion, rating into the next invoice
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use chrono::TimeZone;
//! use dotmac::billing::usage_billing::UsageBillingSettings;
//! use dotmac::usage::{Aggregation, Meter, UsageEvent, UsageStore};
//! use dotmac::{CustomerId, Dotmac, MeterId, UsageEventId};
//!
//! let gigabytes = Meter { id: MeterId::new(), code: "gb".into(), aggregation: Aggregation::Sum };
//! let dotmac = Dotmac::builder("sqlite::memory:")
//!     .usage(UsageBillingSettings::new(chrono_tz::UTC, vec![gigabytes.clone()]))
//!     .connect()
//!     .await?;
//! let tenant = dotmac.create_tenant("Acme Fibre").await?;
//! let event = UsageEvent {
//!     id: UsageEventId::new(),
//!     customer: CustomerId::new(),
//!     subscription: None,
//!     meter: gigabytes.id,
//!     quantity: 12.into(),
//!     timestamp: chrono::Utc.with_ymd_and_hms(2026, 3, 5, 12, 0, 0).unwrap(),
//!     properties: Default::default(),
//! };
//! let stored = dotmac.store().append_events(tenant, &[event.clone(), event]).await?;
//! assert_eq!(stored, [true, false]); // a replayed event is stored once
//! // Rate every closed period and bill it: `dotmac.usage().bill(tenant, as_of)`.
//! # Ok::<(), dotmac::Error>(()) }).unwrap();
//! ```
//!
//! ### Payments and collections
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use dotmac::collections::{CollectionsSettings, DunningPolicy, PaymentRequest};
//! use dotmac::{Currency, CustomerId, Dotmac, Money, PaymentId};
//!
//! let policy = DunningPolicy::builder(Currency::USD)
//!     .step(1, "overdue_notice")
//!     .step(10, "suspend")
//!     .build()?;
//! let dotmac = Dotmac::builder("sqlite::memory:")
//!     .collections(CollectionsSettings::new(policy))
//!     .connect()
//!     .await?;
//! let tenant = dotmac.create_tenant("Acme Fibre").await?;
//! let customer = CustomerId::new();
//! let paid = Money::parse("25.00", Currency::USD)?;
//! let (outcome, _events) = dotmac
//!     .collections()
//!     .receive_payment(tenant, PaymentRequest::new(customer, PaymentId::new(), paid))
//!     .await?;
//! assert_eq!(outcome.credit, paid); // with no invoice open, the payment stays as credit
//! # Ok::<(), dotmac::Error>(()) }).unwrap();
//! ```
//!
//! ### A tenant on a plan: lifecycle, quotas and settings
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use dotmac::tenancy::{Actor, NewTenant, PaymentTerms, PlanCode, SettingSource, SettingsLayer, TenantStatus};
//! use dotmac::{CustomerId, Dotmac, TenantId};
//!
//! let dotmac = Dotmac::connect("sqlite::memory:").await?;
//! let ops = Actor::platform("onboarding");
//! let tenant = TenantId::new();
//! let tenancy = dotmac.tenancy();
//! tenancy.request_tenant(tenant, NewTenant::new("Acme Fibre").plan(PlanCode::STARTER), ops.clone()).await?;
//! tenancy.transition(tenant, TenantStatus::Provisioning, ops.clone(), None).await?;
//! tenancy.transition(tenant, TenantStatus::Active, ops.clone(), None).await?;
//! let terms = SettingsLayer::new().with_payment_terms(PaymentTerms::net(30)?);
//! tenancy.update_settings(tenant, &terms, ops).await?;
//!
//! // Customers are counted where they are created (`Dotmac::create_customer` admits each
//! // one with its record; an application with its own customer records admits them here):
//! // the starter plan admits 100.
//! let used = tenancy.admit_customers(tenant, &[CustomerId::new()]).await?;
//! assert_eq!((used.used, used.limit.to_string()), (1, "100".to_string()));
//!
//! // The services, with the tenant's settings.
//! let acme = dotmac.configured_for(tenant).await?;
//! assert_eq!(acme.billing().settings().payment_terms_days, 30);
//! let resolved = tenancy.settings_of(tenant).await?;
//! assert_eq!(resolved.payment_terms().source, SettingSource::Tenant);
//! assert_eq!(resolved.rounding_mode().source, SettingSource::Platform);
//! # Ok::<(), dotmac::Error>(()) }).unwrap();
//! ```
//!
//! Authentication is the application's: its identity provider says who calls, and
//! [`tenancy::TenancyService::authorize_subject`] says whether that user may (see the
//! [`tenancy`] crate).
//!
//! ### Support tickets on SLA clocks
//!
//! [`Dotmac::support`] is a [`support::SupportService`] over the same store: configure the
//! tenant's business calendar and SLA policies with `configure`, then `create_ticket`,
//! `change_status` and `sla_clocks` (see the [`support`] crate's example).
//!
//! ### Partners: commission on what referred customers pay
//!
//! [`Dotmac::partners`] keeps partner accounts, attribution and one commission ledger per
//! partner; the dispatcher carries each payment and refund of a referred customer into it
//! ([`reactions::PartnersFollowCollections`]), once per event.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use chrono::TimeZone;
//! use dotmac::collections::PaymentRequest;
//! use dotmac::partners::{CommissionPlan, CommissionPlanId, PartnerAccount, PartnerId, PartnerKind, PartnerStatus};
//! use dotmac::{Currency, CustomerId, Dotmac, FixedClock, Money, PaymentId, Period};
//!
//! let day = |m, d| chrono::NaiveDate::from_ymd_opt(2026, m, d).unwrap();
//! let usd = |s: &str| Money::parse(s, Currency::USD);
//! let clock = FixedClock::new(chrono::Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap());
//! let dotmac = Dotmac::builder("sqlite::memory:").clock(clock).connect().await?;
//! let tenant = dotmac.create_tenant("Acme Fibre").await?;
//! let partners = dotmac.partners();
//! let plan = CommissionPlan::builder(CommissionPlanId::new(), "Referrals", Currency::USD)
//!     .revenue_share(10.into())
//!     .build()?;
//! partners.save_plan(tenant, &plan).await?;
//! let shop = PartnerId::new();
//! let account = PartnerAccount::apply(shop, "Corner Shop", PartnerKind::Referral, plan.id(), day(3, 1))?;
//! partners.apply(tenant, account).await?;
//! partners.change_status(tenant, shop, PartnerStatus::Active, day(3, 1)).await?;
//! let customer = CustomerId::new();
//! partners.assign(tenant, customer, shop, day(3, 1)).await?;
//!
//! let payment = PaymentRequest::new(customer, PaymentId::new(), usd("30.00")?);
//! dotmac.collections().receive_payment(tenant, payment).await?;
//! dotmac.dispatch().await?; // the payment reaches the shop's ledger
//! let march = Period::new(day(3, 1), day(4, 1))?;
//! let statement = partners.statement(tenant, shop, march).await?;
//! assert_eq!(statement.earned, usd("3.00")?);
//! assert!(statement.reconciles()?);
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! ### The network: services on plans, provisioning, suspension
//!
//! [`Dotmac::customers`] keeps customers and their network services; each internet plan's
//! technical profile (speed, fair usage) is a setting, and [`Dotmac::with_provisioner`] names
//! where the provisioning commands go (`sql::freeradius::FreeRadiusProvisioner` writes
//! FreeRADIUS's own tables; here the in-memory one). The dispatcher carries each change:
//! a new service, a plan change, billing's suspension for non-payment and its restore.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use dotmac::billing::{Charge, NewSubscription, Plan, Product};
//! use dotmac::customers::{
//!     Access, CustomerKind, CustomersSettings, MemoryProvisioner, NewCustomer, PlanService, Rate,
//!     TechnicalProfile,
//! };
//! use dotmac::{Currency, CustomerAccount, CustomerId, Dotmac, Money, PlanId, ProductId};
//!
//! let fibre = PlanId::new();
//! let network = Arc::new(MemoryProvisioner::new());
//! let dotmac = Dotmac::builder("sqlite::memory:")
//!     .customers(CustomersSettings::default().with_plan_profile(fibre, TechnicalProfile::new(Rate::mbps(300, 50))))
//!     .connect()
//!     .await?
//!     .with_provisioner(network.clone());
//! let tenant = dotmac.create_tenant("Acme Fibre").await?;
//! let product = Product { id: ProductId::new(), name: "Fibre".into() };
//! let start = dotmac.today();
//! let plan = Plan::builder(fibre, product.id, "Fibre 300")
//!     .charge(Charge::recurring_flat([Money::from_minor(4999, Currency::USD)]))
//!     .build(start)?;
//! dotmac.publish_plan(tenant, product, plan).await?;
//!
//! let customer = CustomerId::new();
//! let person = CustomerKind::Person { first_name: "Ada".into(), last_name: "L.".into() };
//! dotmac.create_customer(tenant, customer, NewCustomer::lead(person).signed()).await?;
//! let (sub, _) = dotmac
//!     .subscribe(tenant, CustomerAccount::new(customer, Currency::USD), NewSubscription::new(customer, fibre, Currency::USD, start))
//!     .await?;
//! let service = dotmac
//!     .customers()
//!     .create_service_on_plan(tenant, PlanService::new(customer, sub.id, fibre, "ada", "s3cret"))
//!     .await?;
//! dotmac.customers().activate_service(tenant, service.id()).await?;
//! dotmac.dispatch().await?; // the activation reaches the network
//! let state = network.state(tenant, "ada").expect("provisioned");
//! assert_eq!((state.access, state.rate), (Access::Allowed, Rate::mbps(300, 50)));
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! ### Scale-out bill runs on PostgreSQL
//!
//! With the `postgres` feature, connect to `postgres://…`; several processes can then run
//! [`sql::BillWorker`]s over one run: chunks are claimed under a lease
//! (`FOR UPDATE SKIP LOCKED`) and each is written in one transaction, so a worker that dies
//! loses nothing and nothing is billed twice (see [`sql::BillWorker`]).

use std::sync::Arc;

use chrono::NaiveDate;

pub mod reactions;
pub mod settings;

pub use dotmac_billing as billing;
pub use dotmac_collections as collections;
pub use dotmac_customers as customers;
pub use dotmac_partners as partners;
pub use dotmac_sqlx as sql;
pub use dotmac_support as support;
pub use dotmac_tenancy as tenancy;
pub use dotmac_usage as usage;

pub use dotmac_billing::{CustomerAccount, Invoice};
pub use dotmac_core::outbox;
pub use dotmac_core::{
    BillingInterval, Clock, CoreError, CreditNoteId, Currency, CustomerId, DomainEvent, EventId,
    EventPayload, FixedClock, IdDigest, IdempotencyKey, InvoiceId, ManualClock, MeterId, Money,
    PaymentId, PendingChargeId, Period, PlanId, ProductId, RoundingMode, SubscriptionId,
    SystemClock, TenantId, UsageEventId,
};

use dotmac_billing::usage_billing::{UsageBillingService, UsageBillingSettings};
use dotmac_billing::{
    BillingError, BillingService, BillingSettings, CatalogStore, Events, InvoiceStore,
    NewSubscription, Plan, Product, Subscription,
};
use dotmac_collections::{
    CollectionsError, CollectionsService, CollectionsSettings, DunningPolicy,
};
use dotmac_customers::{CustomerService, CustomersError, CustomersSettings, ProvisioningHandler};
use dotmac_partners::{PartnersError, PartnersService, PartnersSettings};
use dotmac_sqlx::{Database, DatabaseOptions, SqlError, SqlStore};
use dotmac_support::{SupportError, SupportService};
use dotmac_tenancy::{TenancyError, TenancyService, TenancySettings};
use dotmac_usage::UsageError;

pub use settings::{SettingsLayerExt, TenantSettingsExt};

/// The clock every service of a [`Dotmac`] shares.
pub type SharedClock = Arc<dyn Clock>;

/// The dispatcher of a [`Dotmac`]'s outbox, with every reaction registered.
pub type Dispatcher = outbox::Dispatcher<SqlStore, SharedClock>;

/// The billing service over the database: catalogue, subscriptions, bill runs, credit notes.
pub type Billing = BillingService<SqlStore, SharedClock>;

/// Usage rating over the database: closed periods rated into pending charges, then billed.
pub type UsageBilling = UsageBillingService<SqlStore, SqlStore, SharedClock>;

/// Payments, refunds and dunning over the database.
pub type Collections = CollectionsService<SqlStore, SqlStore, SharedClock>;

/// Support tickets on SLA clocks over the database.
pub type Support = SupportService<SqlStore, SharedClock>;

/// Partners, attribution, commission ledgers and payouts over the database.
pub type Partners = PartnersService<SqlStore, SharedClock>;
/// Tenants, their plans, quotas, settings, users and roles over the database.
pub type Tenancy = TenancyService<SqlStore, SharedClock>;

/// Customers, their network services, address pools and fair usage over the database.
pub type Customers = CustomerService<SqlStore, SharedClock>;

/// Any DotMac error, for applications that want one `?` across domains. Each variant keeps
/// the domain error (and, through it, the storage error and the driver's) as its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Money, periods, ids, idempotency keys.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Catalogue, subscriptions, invoicing, rating.
    #[error(transparent)]
    Billing(#[from] BillingError),
    /// Metering and RADIUS accounting.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// Payments, dunning, ageing.
    #[error(transparent)]
    Collections(#[from] CollectionsError),
    /// Tickets and SLAs.
    #[error(transparent)]
    Support(#[from] SupportError),
    /// Partners, attribution, commission ledgers and payouts.
    #[error(transparent)]
    Partners(#[from] PartnersError),
    /// Tenants, plans, quotas, settings, users and roles.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// Customers, network services, address pools, provisioning and fair usage.
    #[error(transparent)]
    Customers(#[from] CustomersError),
    /// Connecting, migrating and the database's own calls (tenants, numbers, outbox).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// A storage failure outside any domain (the outbox dispatcher's claims and marks).
    #[error(transparent)]
    Storage(#[from] dotmac_core::StorageError),
}

/// Every DotMac service wired over one database and one clock. Cheap to clone (handles).
///
/// Built by [`Dotmac::connect`] or [`Dotmac::builder`]; see the [crate docs](crate) for a
/// walk from a URL to a first invoice.
#[derive(Clone)]
pub struct Dotmac {
    db: Database,
    store: SqlStore,
    clock: SharedClock,
    billing: Billing,
    usage: UsageBilling,
    collections: Collections,
    support: Support,
    partners: Partners,
    tenancy: Tenancy,
    customers: Customers,
    /// The network's provisioning handler, once [`Dotmac::with_provisioner`] named one.
    provisioning: Option<Arc<dyn outbox::EventHandler>>,
    dispatcher: Arc<Dispatcher>,
    dispatcher_settings: outbox::DispatcherSettings,
}

impl std::fmt::Debug for Dotmac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dotmac")
            .field("backend", &self.db.kind())
            .field("billing", &self.billing)
            .finish_non_exhaustive()
    }
}

/// How to build a [`Dotmac`]: the database, the clock and each domain's settings. Anything not
/// set has its default: [`SystemClock`], [`BillingSettings::default`], no meters, a dunning
/// policy without steps in the builder's [`currency`](DotmacBuilder::currency).
#[derive(Clone)]
#[must_use]
pub struct DotmacBuilder {
    options: DatabaseOptions,
    clock: SharedClock,
    billing: BillingSettings,
    usage: Option<UsageBillingSettings>,
    collections: Option<CollectionsSettings>,
    partners: Option<PartnersSettings>,
    currency: Currency,
    dispatcher: outbox::DispatcherSettings,
    tenancy: Option<TenancySettings>,
    customers: CustomersSettings,
    tenant: Option<TenantId>,
}

impl std::fmt::Debug for DotmacBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DotmacBuilder")
            .field("billing", &self.billing)
            .field("usage", &self.usage)
            .field("collections", &self.collections)
            .finish_non_exhaustive()
    }
}

impl DotmacBuilder {
    /// With other dispatcher settings (its worker name, lease, batch and retries).
    pub fn dispatcher(mut self, settings: outbox::DispatcherSettings) -> Self {
        self.dispatcher = settings;
        self
    }

    /// With the database's options (pool size, lease timeouts, …) instead of the URL alone.
    pub fn database(mut self, options: DatabaseOptions) -> Self {
        self.options = options;
        self
    }

    /// With `clock` instead of the system clock (tests, replays, back-dated runs).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// With a clock already shared with other parts of the application.
    pub fn shared_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// With the tenant's billing settings (rounding, taxes, payment terms, zone).
    pub fn billing(mut self, settings: BillingSettings) -> Self {
        self.billing = settings;
        self
    }

    /// With the usage settings (meters, allowances, zone).
    pub fn usage(mut self, settings: UsageBillingSettings) -> Self {
        self.usage = Some(settings);
        self
    }

    /// With the tenant's collection currency (USD unless set): the currency of the default,
    /// step-less dunning policy used when no [`collections`](DotmacBuilder::collections)
    /// settings are given. Dunning policies are per currency; an invoice in another currency
    /// is refused by [`Collections::evaluate`](collections::CollectionsService::evaluate).
    pub fn currency(mut self, currency: Currency) -> Self {
        self.currency = currency;
        self
    }

    /// With the collections settings (dunning policy, zone).
    pub fn collections(mut self, settings: CollectionsSettings) -> Self {
        self.collections = Some(settings);
        self
    }

    /// With the partners settings (zone); by default the billing zone.
    pub fn partners(mut self, settings: PartnersSettings) -> Self {
        self.partners = Some(settings);
        self
    }

    /// With the customers settings: the onboarding checklist, and the technical profile of
    /// each internet plan (`CustomersSettings::with_plan_profile`), which new services get
    /// and plan changes move them to.
    pub fn customers(mut self, settings: CustomersSettings) -> Self {
        self.customers = settings;
        self
    }

    /// With the platform's side of tenancy: its plan catalogue and default settings (the
    /// platform tiers and [`tenancy::Settings::platform_defaults`] unless set).
    pub fn tenancy(mut self, settings: TenancySettings) -> Self {
        self.tenancy = Some(settings);
        self
    }

    /// Reads the services' settings from `tenant`'s resolved settings once connected, as
    /// [`Dotmac::configured_for`] does: the tenant's rounding, payment terms, time zone and
    /// (when set) taxes, suspension-billing and dunning policies replace the builder's; what
    /// tenancy does not set (the chunk size, meters and allowances) stays the builder's.
    pub fn tenant_settings(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Connects, applies the migrations and wires the services.
    ///
    /// # Errors
    ///
    /// [`Error::Sql`] when the database cannot be reached or migrated;
    /// [`Error::Collections`] if the default (empty) dunning policy cannot be built;
    /// [`Error::Tenancy`] for an unknown [`tenant_settings`](DotmacBuilder::tenant_settings)
    /// tenant or one whose stored settings do not decode.
    pub async fn connect(self) -> Result<Dotmac, Error> {
        let db = Database::connect_with(self.options).await?;
        let store = SqlStore::new(db.clone());
        let usage = self
            .usage
            .unwrap_or_else(|| UsageBillingSettings::new(self.billing.zone, Vec::new()));
        let collections = match self.collections {
            Some(settings) => settings,
            None => CollectionsSettings::new(DunningPolicy::builder(self.currency).build()?)
                .with_zone(self.billing.zone),
        };
        let tenancy = match self.tenancy {
            Some(settings) => settings,
            None => TenancySettings::platform_tiers()?,
        };
        let partners = self
            .partners
            .unwrap_or_else(|| PartnersSettings::default().with_zone(self.billing.zone));
        let dotmac = Dotmac::wire(
            db,
            store,
            self.clock,
            Services {
                billing: self.billing,
                usage,
                collections,
                partners,
                tenancy,
                customers: self.customers,
                provisioning: None,
                dispatcher: self.dispatcher,
            },
        );
        match self.tenant {
            Some(tenant) => dotmac.configured_for(tenant).await,
            None => Ok(dotmac),
        }
    }
}

/// Every service's settings, for [`Dotmac::wire`].
struct Services {
    billing: BillingSettings,
    usage: UsageBillingSettings,
    collections: CollectionsSettings,
    partners: PartnersSettings,
    tenancy: TenancySettings,
    customers: CustomersSettings,
    provisioning: Option<Arc<dyn outbox::EventHandler>>,
    dispatcher: outbox::DispatcherSettings,
}

impl Dotmac {
    /// Connects to `url` (`sqlite::memory:`, `sqlite://path/file.db`, `postgres://…`) with
    /// every default: see [`DotmacBuilder`].
    ///
    /// # Errors
    ///
    /// As [`DotmacBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Dotmac, Error> {
        Dotmac::builder(url).connect().await
    }

    /// A builder for a connection to `url`.
    pub fn builder(url: &str) -> DotmacBuilder {
        DotmacBuilder {
            options: DatabaseOptions::new(url),
            clock: Arc::new(SystemClock),
            billing: BillingSettings::default(),
            usage: None,
            collections: None,
            partners: None,
            currency: Currency::USD,
            dispatcher: outbox::DispatcherSettings::new("dotmac"),
            tenancy: None,
            customers: CustomersSettings::default(),
            tenant: None,
        }
    }

    /// Every service over `store` and `clock`, with the reactions registered.
    fn wire(db: Database, store: SqlStore, clock: SharedClock, services: Services) -> Dotmac {
        let billing = BillingService::new(store.clone(), Arc::clone(&clock), services.billing);
        let usage = UsageBillingService::new(billing.clone(), store.clone(), services.usage);
        let collections = CollectionsService::new(
            store.clone(),
            store.clone(),
            Arc::clone(&clock),
            services.collections,
        );
        let support = SupportService::new(store.clone(), Arc::clone(&clock));
        let tenancy = TenancyService::new(store.clone(), Arc::clone(&clock), services.tenancy);
        let partners = PartnersService::new(store.clone(), Arc::clone(&clock), services.partners);
        let follow_collections: Arc<dyn outbox::EventHandler> = Arc::new(
            reactions::PartnersFollowCollections::new(partners.clone(), billing.clone()),
        );
        let measure_use: Arc<dyn outbox::EventHandler> =
            Arc::new(reactions::TenancyMeasuresUse::new(tenancy.clone()));
        let customers = CustomerService::new(store.clone(), Arc::clone(&clock), services.customers);
        let network: [Arc<dyn outbox::EventHandler>; 4] = [
            Arc::new(reactions::NetworkFollowsBilling::new(customers.clone())),
            Arc::new(reactions::NetworkFollowsPlans::new(
                billing.clone(),
                customers.clone(),
            )),
            Arc::new(reactions::FairUsageFollowsAccounting::new(
                customers.clone(),
            )),
            Arc::new(reactions::BillingFollowsFairUsage::new(billing.clone())),
        ];
        let dispatcher = reactions::order_to_cash(billing.clone(), collections.clone())
            .into_iter()
            .chain([follow_collections, measure_use])
            .chain(network)
            .chain(services.provisioning.clone())
            .fold(
                outbox::Dispatcher::new(
                    store.clone(),
                    Arc::clone(&clock),
                    services.dispatcher.clone(),
                ),
                outbox::Dispatcher::handler,
            );
        Dotmac {
            db,
            store,
            clock,
            billing,
            usage,
            collections,
            support,
            partners,
            tenancy,
            customers,
            provisioning: services.provisioning,
            dispatcher: Arc::new(dispatcher),
            dispatcher_settings: services.dispatcher,
        }
    }

    /// The same database, clock and settings with the network behind the outbox: every
    /// `provisioning.*` command (a new service, a suspension for non-payment, a restore, a
    /// fair-usage slowdown or block) goes to `provisioner` (dotmac-sqlx's
    /// `FreeRadiusProvisioner`, or the embedder's own) through the dispatcher, at least once,
    /// retried, a failing command parked with its error (`ProvisioningHandler`). Without one,
    /// the commands stay in the outbox as facts for another consumer.
    pub fn with_provisioner<P>(&self, provisioner: P) -> Dotmac
    where
        P: dotmac_customers::Provisioner + 'static,
    {
        let services = self.services();
        Dotmac::wire(
            self.db.clone(),
            self.store.clone(),
            Arc::clone(&self.clock),
            Services {
                provisioning: Some(Arc::new(ProvisioningHandler::new(provisioner))),
                ..services
            },
        )
    }

    /// The settings this `Dotmac` was wired with.
    fn services(&self) -> Services {
        Services {
            billing: self.billing.settings().clone(),
            usage: self.usage.settings().clone(),
            collections: self.collections.settings().clone(),
            partners: *self.partners.settings(),
            tenancy: self.tenancy.settings().clone(),
            customers: self.customers.settings().clone(),
            provisioning: self.provisioning.clone(),
            dispatcher: self.dispatcher_settings.clone(),
        }
    }

    /// The same database and clock with every service's settings read from `tenant`'s
    /// resolved settings ([`Tenancy::settings_of`](tenancy::TenancyService::settings_of)):
    /// billing's rounding, payment terms and zone, and its taxes and suspension-billing
    /// policy when the tenant (or its plan, or the platform) sets them, and its invoice number
    /// format; collections' dunning policy (when set) and zone; usage's and partners' zone.
    /// The support desk's SLA calendar is read at [`Dotmac::configure_support`]. What tenancy
    /// does not set (the bill run's chunk size, meters and allowances, the dispatcher) stays
    /// as it was.
    ///
    /// # Errors
    ///
    /// [`Error::Tenancy`]: an unknown tenant, a stored document that does not decode
    /// (`invalid_setting`), the store's failure.
    pub async fn configured_for(&self, tenant: TenantId) -> Result<Dotmac, Error> {
        let resolved = self.tenancy.settings_of(tenant).await?;
        let services = self.services();
        let services = Services {
            billing: resolved.billing_settings(services.billing)?,
            usage: resolved.usage_settings(services.usage),
            collections: resolved.collections_settings(Some(services.collections))?,
            partners: services.partners.with_zone(resolved.time_zone().value),
            ..services
        };
        Ok(Dotmac::wire(
            self.db.clone(),
            self.store.clone(),
            Arc::clone(&self.clock),
            services,
        ))
    }

    /// Tenants: their lifecycle, plans, quotas, settings, users and roles.
    pub fn tenancy(&self) -> &Tenancy {
        &self.tenancy
    }

    /// The database (tenants, document numbers, the outbox, scale-out bill runs).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The store every service writes through; it implements every domain's store traits.
    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Today in the billing zone.
    pub fn today(&self) -> NaiveDate {
        self.clock.today_in(self.billing.settings().zone)
    }

    /// Billing.
    pub fn billing(&self) -> &Billing {
        &self.billing
    }

    /// A billing service with other settings (another tenant's taxes or zone) over the same
    /// store and clock.
    pub fn billing_with(&self, settings: BillingSettings) -> Billing {
        BillingService::new(self.store.clone(), Arc::clone(&self.clock), settings)
    }

    /// Usage rating.
    pub fn usage(&self) -> &UsageBilling {
        &self.usage
    }

    /// Payments and collections.
    pub fn collections(&self) -> &Collections {
        &self.collections
    }

    /// Collections with other settings (another tenant's policy or zone).
    pub fn collections_with(&self, settings: CollectionsSettings) -> Collections {
        CollectionsService::new(
            self.store.clone(),
            self.store.clone(),
            Arc::clone(&self.clock),
            settings,
        )
    }

    /// Support.
    pub fn support(&self) -> &Support {
        &self.support
    }

    /// Saves the tenant's support desk configuration
    /// ([`SupportService::configure`](support::SupportService::configure)) with the tenant's
    /// SLA calendar from its settings, when they set one, as the calendar of every policy
    /// without its own (`config.calendar` is kept when they do not).
    ///
    /// # Errors
    ///
    /// [`Error::Tenancy`] for an unknown tenant or a stored calendar that does not decode;
    /// [`Error::Support`] as `configure`.
    pub async fn configure_support(
        &self,
        tenant: TenantId,
        mut config: support::SupportConfig,
    ) -> Result<(), Error> {
        let resolved = self.tenancy.settings_of(tenant).await?;
        if let Some(calendar) = resolved.business_calendar()?.value {
            config.calendar = calendar;
        }
        Ok(self.support.configure(tenant, config).await?)
    }

    /// Partners, attribution, commission ledgers and payouts: payments and refunds reach the
    /// ledgers through the dispatcher ([`reactions::PartnersFollowCollections`]).
    pub fn partners(&self) -> &Partners {
        &self.partners
    }

    /// Customers, their network services, address pools and fair usage: billing's suspensions
    /// and restores reach the services, accounting counts into fair usage, a priced top-up
    /// becomes a charge, all through the dispatcher ([`reactions`]); the provisioning commands
    /// reach the network once [`Dotmac::with_provisioner`] names where.
    pub fn customers(&self) -> &Customers {
        &self.customers
    }

    /// Creates a customer record ([`CustomerService::create_customer`]) counted against the
    /// tenant's customer quota where it is created: the customer is admitted first (all or
    /// nothing, exactly one winner at the limit however many create at once; an id already
    /// counted is not counted again), and released again if the record is then refused.
    ///
    /// # Errors
    ///
    /// [`Error::Tenancy`] with [`TenancyError::QuotaExceeded`] (naming the quota, its limit
    /// and its use; nothing is written), or what the tenant's status refuses;
    /// [`Error::Customers`] as `create_customer` (the admission is released, except for a
    /// customer that already exists, who stays counted).
    pub async fn create_customer(
        &self,
        tenant: TenantId,
        id: CustomerId,
        new: dotmac_customers::NewCustomer,
    ) -> Result<dotmac_customers::Customer, Error> {
        self.tenancy.admit_customers(tenant, &[id]).await?;
        match self.customers.create_customer(tenant, id, new).await {
            Ok(customer) => Ok(customer),
            Err(error @ CustomersError::AlreadyExists { .. }) => Err(error.into()),
            Err(error) => {
                self.tenancy.release_customers(tenant, &[id]).await?;
                Err(error.into())
            }
        }
    }

    /// The outbox dispatcher, with every order-to-cash reaction ([`reactions`]) registered.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Hands every event that can be handled now to its reactions, until none is left: each
    /// invoice reaches the ledger, each payment the invoices' statuses, each fee the next
    /// invoice, each suspension the subscriptions. Run it after each step (or keep it running
    /// beside the application: at least once, in order per customer, so a crash loses and
    /// repeats nothing).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the outbox cannot be read or marked; failing reactions are
    /// retried or parked, not errors (see [`outbox::DispatchSummary`]).
    pub async fn dispatch(&self) -> Result<outbox::DispatchSummary, Error> {
        Ok(self.dispatcher.drain().await?)
    }

    /// Creates a tenant (an ISP operator) and returns its new id: registered active and
    /// unmetered (no plan, no quota). For a tenant on a plan, with its lifecycle, use
    /// [`Dotmac::tenancy`] (`request_tenant`, then `transition`).
    ///
    /// # Errors
    ///
    /// [`Error::Sql`]: an oversize or NUL-bearing name ([`SqlError::InvalidInput`]), or the
    /// database's failure.
    #[tracing::instrument(name = "dotmac.tenants.create", level = "info", skip_all, fields(tenant = tracing::field::Empty))]
    pub async fn create_tenant(&self, name: &str) -> Result<TenantId, Error> {
        let tenant = TenantId::new();
        tracing::Span::current().record("tenant", tracing::field::display(tenant));
        self.db
            .create_tenant(tenant, name, self.clock.now())
            .await?;
        Ok(tenant)
    }

    /// Publishes `plan` with its product: the product is stored (or updated) first, then the
    /// plan, so a catalogue entry is one call. Returns the plan's `billing.plan_saved` event.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidPlan`] and store errors; [`BillingError::PlanMismatch`]-like
    /// mistakes are caught: a plan whose product is not `product` is
    /// [`BillingError::UnknownProduct`].
    pub async fn publish_plan(
        &self,
        tenant: TenantId,
        product: Product,
        plan: Plan,
    ) -> Result<Events, Error> {
        if plan.product != product.id {
            return Err(BillingError::UnknownProduct(plan.product).into());
        }
        self.store.put_product(tenant, product).await?;
        Ok(self.billing.save_plan(tenant, plan).await?)
    }

    /// Subscribes a customer, opening (or updating) their billing account first. Nothing is
    /// billed until the next bill run.
    ///
    /// # Errors
    ///
    /// As [`BillingService::subscribe`]; [`BillingError::CurrencyNotUsed`] when the request's
    /// currency is not the account's.
    pub async fn subscribe(
        &self,
        tenant: TenantId,
        account: CustomerAccount,
        request: NewSubscription,
    ) -> Result<(Subscription, Events), Error> {
        self.billing.save_account(tenant, account).await?;
        Ok(self.billing.subscribe(tenant, request).await?)
    }

    /// A customer's invoices, oldest first.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn invoices_of(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<Invoice>, Error> {
        Ok(self.store.invoices_of(tenant, customer).await?)
    }
}
