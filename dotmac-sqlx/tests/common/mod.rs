//! Test databases: SQLite always (memory and a temp file); PostgreSQL when `DATABASE_URL` is
//! set, in which case an unreachable server fails the test instead of skipping it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::hash::{Hash, Hasher};

use chrono::{DateTime, TimeZone, Utc};
use dotmac_core::TenantId;
use dotmac_sqlx::{Database, DatabaseOptions};

pub fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
}

pub async fn sqlite_memory() -> Database {
    Database::connect("sqlite::memory:").await.unwrap()
}

pub async fn sqlite_file() -> Database {
    let path = std::env::temp_dir().join(format!("dotmac-sqlx-{}.db", uuid::Uuid::now_v7()));
    Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

/// One schema per test module (the calling file) and migration set, so that suites running in
/// parallel do not see each other's global state (the outbox relay reads every tenant) and a
/// changed migration never meets a schema migrated by the old one.
#[track_caller]
pub fn postgres() -> impl std::future::Future<Output = Option<Database>> {
    let module = std::path::Path::new(std::panic::Location::caller().file())
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    async move {
        let url = std::env::var("DATABASE_URL").ok()?;
        let schema = format!(
            "dotmac_test_{}_{module}_{:08x}",
            binary_name(),
            migrations_fingerprint()
        );
        let db =
            Database::connect_with(DatabaseOptions::new(&url).schema(schema).max_connections(8))
                .await
                .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unusable: {e}"));
        Some(db)
    }
}

/// A digest of the PostgreSQL migrations, so that a changed migration gets a fresh schema.
pub fn migrations_fingerprint() -> u32 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        std::fs::read_to_string(file).unwrap().hash(&mut hasher);
    }
    hasher.finish() as u32
}

fn binary_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default()
        .split('-')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Every backend this build and environment offer, named for assertion messages (PostgreSQL
/// in the caller's schema, see [`postgres`]).
#[track_caller]
pub fn backends() -> impl std::future::Future<Output = Vec<(&'static str, Database)>> {
    let postgres = postgres();
    async move {
        let mut all = vec![
            ("sqlite-memory", sqlite_memory().await),
            ("sqlite-file", sqlite_file().await),
        ];
        if let Some(pg) = postgres.await {
            all.push(("postgres", pg));
        }
        all
    }
}

pub async fn new_tenant(db: &Database) -> TenantId {
    let tenant = TenantId::new();
    db.create_tenant(tenant, "Test ISP", at(1, 0))
        .await
        .unwrap();
    tenant
}

/// A customer's invoice of pending charges on `on` (the billing domain's own type, as the
/// store writes it): `total` in USD with one line per `(quantity, unit price, amount)`.
/// Committed, it gets status `open` and the tenant's next number.
pub fn charges_invoice(
    customer: dotmac_core::CustomerId,
    on: chrono::NaiveDate,
    total: rust_decimal::Decimal,
    lines: &[(
        rust_decimal::Decimal,
        rust_decimal::Decimal,
        rust_decimal::Decimal,
    )],
) -> dotmac_billing::Invoice {
    use dotmac_billing::{DocumentKey, Invoice, InvoiceLine, InvoiceStatus, LineKind};
    use dotmac_core::{Currency, Money};
    let usd = |amount| Money::new(amount, Currency::USD);
    let key = DocumentKey::Charges { customer, on };
    Invoice {
        id: key.invoice_id(),
        key,
        number: None,
        customer,
        subscription: None,
        currency: Currency::USD,
        status: InvoiceStatus::Draft,
        issue_date: on,
        due_date: on,
        lines: lines
            .iter()
            .map(|&(quantity, unit_price, amount)| InvoiceLine {
                kind: LineKind::LateFee,
                text: Some("Late fee".into()),
                period: None,
                quantity,
                unit_price: usd(unit_price),
                amount: usd(amount),
                discount: usd(rust_decimal::Decimal::ZERO),
                tax: usd(rust_decimal::Decimal::ZERO),
                tax_exclusive: usd(rust_decimal::Decimal::ZERO),
                price: None,
            })
            .collect(),
        taxes: Vec::new(),
        subtotal: usd(total),
        discount_total: usd(rust_decimal::Decimal::ZERO),
        tax_total: usd(rust_decimal::Decimal::ZERO),
        total: usd(total),
        settlement: None,
        number_format: None,
    }
}

/// Commits `invoices` through the billing domain's store (one commit, no subscription).
pub async fn issue(
    store: &dotmac_sqlx::SqlStore,
    tenant: TenantId,
    invoices: Vec<dotmac_billing::Invoice>,
) -> Result<dotmac_billing::CommitResult, dotmac_billing::BillingError> {
    use dotmac_billing::InvoiceStore;
    store
        .commit(
            tenant,
            dotmac_billing::BillingCommit {
                invoices,
                ..dotmac_billing::BillingCommit::default()
            },
        )
        .await
}

/// The bill-run suites' fixture: a monthly "Fibre 100" plan at $29.99 and subscriptions
/// started on different January days, anchored on the 1st with a prorated first period.
pub mod fibre {
    use chrono::NaiveDate;
    use dotmac_billing::{
        CatalogStore, Charge, CustomerAccount, FirstPeriod, NewSubscription, Plan, Product,
        SubscriptionStore,
    };
    use dotmac_core::{Currency, CustomerId, Money, PlanId, ProductId, SubscriptionId, TenantId};
    use dotmac_sqlx::SqlStore;

    /// A day of 2026.
    pub fn day(m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }

    /// The plan every subscription is on.
    pub fn plan() -> Plan {
        Plan::builder(PlanId::from_u128(7), ProductId::from_u128(7), "Fibre 100")
            .charge(Charge::recurring_flat([Money::from_minor(
                2999,
                Currency::USD,
            )]))
            .build(day(1, 1))
            .unwrap()
    }

    /// The customer of subscription `i` (one each).
    pub fn customer(i: u128) -> CustomerId {
        CustomerId::from_u128(10_000 + i)
    }

    /// The plan, and `count` subscriptions, one per customer, started on different January
    /// days (subscription `i` has id `i + 1`).
    pub async fn seed(store: &SqlStore, tenant: TenantId, count: u128) {
        let plan = plan();
        store
            .put_product(
                tenant,
                Product {
                    id: plan.product,
                    name: "Broadband".into(),
                },
            )
            .await
            .unwrap();
        store
            .put_plan(tenant, plan.clone(), Vec::new())
            .await
            .unwrap();
        for i in 0..count {
            store
                .put_account(tenant, CustomerAccount::new(customer(i), Currency::USD))
                .await
                .unwrap();
            let start = day(1, 1 + u32::try_from(i % 20).unwrap());
            let sub = NewSubscription::new(customer(i), plan.id, Currency::USD, start)
                .id(SubscriptionId::from_u128(i + 1))
                .anchor(day(1, 1))
                .first_period(FirstPeriod::Prorate)
                .create(&plan, Currency::USD)
                .unwrap();
            store
                .insert_subscription(tenant, sub, Vec::new())
                .await
                .unwrap();
        }
    }
}
