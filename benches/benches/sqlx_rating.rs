//! Usage rating on SQL (`UsageBillingService::rate_due` over dotmac-sqlx's `SqlStore`), compared
//! with a bare `SELECT customer_id, meter_id, SUM(quantity) … GROUP BY customer_id, meter_id`
//! over the same events in the same run, on SQLite (file) and, when DATABASE_URL is set,
//! PostgreSQL.
//!
//! DOTMAC_BENCH_SUBSCRIPTIONS subscriptions (default 100000), one per customer, on a monthly
//! plan whose only charge is a per-unit usage charge on a `sum` meter, started on March 1st;
//! DOTMAC_BENCH_EVENTS_PER (default 10) usage events per subscription in March, ingested in
//! time order (customers interleaved, as a RADIUS feed delivers them) through
//! `UsageStore::append_events`, each naming its subscription. Rating on April 1st rates March:
//! one usage charge per subscription.
//!
//! After one untimed bare `GROUP BY` (and, on PostgreSQL, a `VACUUM ANALYZE` of the seeded
//! tables and a `CHECKPOINT`, so that no measure pays for setting the new rows' hint bits or
//! shares the machine with the checkpoint of the seeding; the same after each untimed reset
//! of the pending charges, and an `ANALYZE` of them after each rate (adds)), per repetition
//! (DOTMAC_BENCH_REPS, default 3), interleaved so that each sees the same tables and the same
//! machine load:
//!
//! * `bare GROUP BY`: the grouped sum of the tenant's March events, every row fetched;
//! * `rate (adds)`: `rate_due` with no charge pending yet (the tenant's pending charges are
//!   deleted before, untimed): reads, aggregates, rates and adds 100,000 charges;
//! * `re-rate (adds nothing)`: `rate_due` again: the same reads and rating, every charge
//!   already pending, nothing written.
//!
//! Also timed, as reads alone: the keyed read (`period_aggregates` over every subscription's
//! key, a chunk at a time: what rating takes for keys that share no window) and the window
//! pass (`window_totals` over March, then every key combined from it: what rating takes when a
//! chunk's subscriptions share their period, as here). With DOTMAC_BENCH_READ_ONLY=1 only the
//! bare `GROUP BY` and these two reads are timed.
//!
//! With DOTMAC_BENCH_PER_KEY=1 the service reads usage through a wrapper that keeps only
//! `events_between` (the trait's default `period_aggregates`: one read per subscription ×
//! meter × period, as rating did before issue 11), for the before/after comparison.
//!
//! With DOTMAC_BENCH_MMAP_AB=1 every SQLite measure runs a second time per repetition, the
//! store and the bare `GROUP BY` reading the file through a 1 GiB memory map
//! (`DatabaseOptions::sqlite_mmap_size`; reported as `sqlite-m`).
//!
//! `cargo bench -p dotmac-benches --bench sqlx_rating` (DOTMAC_BENCH_BACKENDS=sqlite,postgres).
//! Seeding (subscriptions bulk-imported, events appended 10,000 at a time) is not timed. On
//! PostgreSQL the tables are analyzed after seeding, as after any bulk load.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    missing_docs
)]

#[path = "sqlx_common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::{env_usize, median, peak_rss_mib};
use dotmac_billing::usage_billing::{UsageBillingService, UsageBillingSettings};
use dotmac_billing::{
    BillingService, BillingSettings, CatalogStore, Charge, CurrencyPrice, CustomerAccount,
    NewSubscription, Plan, PriceModel, Product, Subscription,
};
use dotmac_core::{
    BillingInterval, Currency, CustomerId, FixedClock, PlanId, ProductId, SubscriptionId, TenantId,
};
use dotmac_sqlx::{Database, DatabaseOptions, SqlStore};
use dotmac_usage::{
    Aggregation, Meter, MeterId, PeriodKey, UsageCalendar, UsageEvent, UsageEventId, UsageStore,
};
use rust_decimal::Decimal;

const SCHEMA: &str = "dotmac_bench_rating";
const METER: MeterId = MeterId::from_u128(7);
/// The memory map of `DOTMAC_BENCH_MMAP_AB`'s second store and bare `GROUP BY`: 1 GiB.
const MAP: u64 = 1 << 30;

fn d(m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, day).unwrap()
}

fn march() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
    )
}

fn meter() -> Meter {
    Meter {
        id: METER,
        code: "data_bytes".into(),
        aggregation: Aggregation::Sum,
    }
}

/// A monthly plan billing $0.01 per MiB used.
fn plan() -> Plan {
    Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "Metered 100")
        .interval(BillingInterval::MONTHLY)
        .charge(Charge::usage(
            METER,
            vec![CurrencyPrice {
                currency: Currency::USD,
                model: PriceModel::PerUnit {
                    unit_amount: Decimal::new(1, 2) / Decimal::from(1_048_576),
                },
            }],
        ))
        .build(d(1, 1))
        .unwrap()
}

fn subscriptions(plan: &Plan, n: usize) -> (Vec<CustomerAccount>, Vec<Subscription>) {
    (0..n)
        .map(|i| {
            let customer = CustomerId::from_u128(i as u128 + 1);
            let sub = NewSubscription::new(customer, plan.id, Currency::USD, d(3, 1))
                .id(SubscriptionId::from_u128(i as u128 + 1))
                .create(plan, Currency::USD)
                .unwrap();
            (CustomerAccount::new(customer, Currency::USD), sub)
        })
        .unzip()
}

/// `per` events a subscription over March, in time order, customers interleaved; whole bytes.
fn events(n: usize, per: usize) -> Vec<UsageEvent> {
    let (start, end) = march();
    let total = n * per;
    let step = (end - start).num_microseconds().unwrap() / total as i64;
    (0..total)
        .map(|i| {
            let who = i % n;
            UsageEvent {
                id: UsageEventId::from_u128(0x5eed_0000_0000_0000_0000_0000 + i as u128),
                customer: CustomerId::from_u128(who as u128 + 1),
                subscription: Some(SubscriptionId::from_u128(who as u128 + 1)),
                meter: METER,
                quantity: quantity_of(i),
                timestamp: start + chrono::Duration::microseconds(step * i as i64),
                properties: BTreeMap::new(),
            }
        })
        .collect()
}

async fn seed(store: &SqlStore, plan: &Plan, n: usize, per: usize) -> TenantId {
    let tenant = TenantId::new();
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    store
        .database()
        .create_tenant(tenant, "bench", now)
        .await
        .unwrap();
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
    let (accounts, subs) = subscriptions(plan, n);
    store
        .import_subscriptions(tenant, &accounts, &subs)
        .await
        .unwrap();
    let started = Instant::now();
    for batch in events(n, per).chunks(10_000) {
        store.append_events(tenant, batch).await.unwrap();
    }
    println!(
        "  seeded {n} subscriptions and {} events in {:.1} s",
        n * per,
        started.elapsed().as_secs_f64()
    );
    tenant
}

/// The SQL store with only the per-key usage read: `period_aggregates` is the trait's default.
struct PerKey(SqlStore);

impl UsageStore for PerKey {
    async fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> Result<Vec<bool>, dotmac_usage::UsageError> {
        self.0.append_events(tenant, events).await
    }

    async fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageEvent>, dotmac_usage::UsageError> {
        self.0
            .events_between(tenant, customer, meter, from, to)
            .await
    }
}

fn service<U: UsageStore>(
    store: &SqlStore,
    usage: U,
) -> UsageBillingService<SqlStore, U, FixedClock> {
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 4, 1, 1, 0, 0).unwrap());
    let billing = BillingService::new(store.clone(), clock, BillingSettings::default());
    let zone = dotmac_core::reexports::chrono_tz::UTC;
    UsageBillingService::new(
        billing,
        usage,
        UsageBillingSettings::new(zone, vec![meter()]),
    )
}

/// One `rate_due` on April 1st: (time, charges added).
async fn rate<U: UsageStore>(
    usage: &UsageBillingService<SqlStore, U, FixedClock>,
    tenant: TenantId,
    n: usize,
) -> (Duration, usize) {
    let start = Instant::now();
    let summary = usage.rate_due(tenant, d(4, 1)).await.unwrap();
    let took = start.elapsed();
    assert_eq!(summary.subscriptions, n);
    assert!(summary.failures.is_empty());
    assert_eq!(summary.rated.len(), n);
    (took, summary.added.len())
}

fn rate_of(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// A connection beside the store's pool: the bare `GROUP BY`, and the untimed reset of the
/// pending charges between repetitions.
enum Raw {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Raw {
    /// The bare grouped sum of the tenant's March events, every row fetched.
    async fn group_by(&mut self, tenant: TenantId, n: usize) -> Duration {
        let (from, to) = march();
        let start = Instant::now();
        let sql = "SELECT customer_id, meter_id, SUM(quantity) FROM usage_events \
                   WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
                   GROUP BY customer_id, meter_id";
        match self {
            Raw::Sqlite(conn) => {
                let rows = sqlx::query(sql)
                    .bind(tenant.as_uuid())
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
                let took = start.elapsed();
                assert_eq!(rows.len(), n);
                took
            }
            Raw::Postgres(conn) => {
                let rows = sqlx::query(sql)
                    .bind(tenant.as_uuid())
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
                let took = start.elapsed();
                assert_eq!(rows.len(), n);
                took
            }
        }
    }

    /// Runs one statement that takes no parameters.
    async fn execute(&mut self, sql: &'static str) {
        use sqlx::Executor;
        match self {
            Raw::Sqlite(conn) => {
                conn.execute(sql).await.unwrap();
            }
            Raw::Postgres(conn) => {
                conn.execute(sql).await.unwrap();
            }
        }
    }

    /// On SQLite, reads the file through a memory map of `bytes` from now on.
    async fn map(&mut self, bytes: u64) {
        use sqlx::Executor;
        if let Raw::Sqlite(conn) = self {
            conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA mmap_size = {bytes}")))
                .await
                .unwrap();
        }
    }

    /// On PostgreSQL, the statistics of the pending charges brought up to date after rating
    /// added a run's worth, untimed, as autovacuum's analyze would before the next run:
    /// statistics of zero rows over a full table make the planner read the tenant's whole
    /// table for each chunk's billed usage (a re-rate took 36 s instead of 4 s in one run),
    /// and autovacuum's own analyze would otherwise land in the re-rate.
    async fn analyze_pending(&mut self) {
        if matches!(self, Raw::Postgres(_)) {
            self.execute("ANALYZE billing_pending_charges").await;
        }
    }

    /// Removes `tenant`'s pending charges (on PostgreSQL every tenant's: the bench has one).
    async fn clear_pending(&mut self, tenant: TenantId) {
        match self {
            Raw::Sqlite(conn) => {
                sqlx::query("DELETE FROM billing_pending_charges WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                // The write-ahead log copied back now, untimed, as PostgreSQL's checkpoint.
                self.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
            }
            Raw::Postgres(_) => {
                // Emptied as a table that was never rated, not deleted and vacuumed: a VACUUM
                // that cannot truncate the emptied pages (any older snapshot keeps the dead
                // rows) leaves the statistics at zero rows over many pages, which a table that
                // is only ever added to never shows, and the planner then reads the tenant's
                // whole, growing table for each chunk's billed usage (a repetition's rate
                // (adds) took 8 s instead of 3 s at 10 events a subscription: see
                // docs/benchmarks.md). The bench's one tenant owns every row.
                self.execute("TRUNCATE billing_pending_charges").await;
                // The pages written out now, untimed, so that the checkpointer lands on no
                // measure.
                self.execute("CHECKPOINT").await;
            }
        }
    }
}

#[derive(Default)]
struct Samples {
    group_by: Vec<Duration>,
    read: Vec<Duration>,
    window: Vec<Duration>,
    adds: Vec<Duration>,
    rerate: Vec<Duration>,
}

impl Samples {
    fn extend(&mut self, more: Samples) {
        self.group_by.extend(more.group_by);
        self.read.extend(more.read);
        self.window.extend(more.window);
        self.adds.extend(more.adds);
        self.rerate.extend(more.rerate);
    }
}

/// The set-based read alone, as the service issues it: `UsageStore::period_aggregates` over
/// every subscription's March key, a chunk (the billing settings' default, 1,000) at a time;
/// checked against the events as seeded.
async fn read_only<U: UsageStore>(usage: &U, tenant: TenantId, n: usize, per: usize) -> Duration {
    let calendar = UsageCalendar {
        interval: BillingInterval::MONTHLY,
        anchor: d(3, 1),
        zone: dotmac_core::reexports::chrono_tz::UTC,
    };
    let keys: Vec<PeriodKey> = (0..n)
        .map(|i| PeriodKey {
            customer: CustomerId::from_u128(i as u128 + 1),
            subscription: Some(SubscriptionId::from_u128(i as u128 + 1)),
            meter: METER,
            calendar,
            period_start: d(3, 1),
            history_from: d(3, 1),
        })
        .collect();
    let meters = [meter()];
    let start = Instant::now();
    let mut total = Decimal::ZERO;
    for chunk in keys.chunks(BillingSettings::default().chunk_size) {
        for quantity in usage
            .period_aggregates(tenant, &meters, chunk)
            .await
            .unwrap()
        {
            total += quantity.unwrap();
        }
    }
    let took = start.elapsed();
    assert_eq!(total, seeded_total(n, per));
    took
}

/// The quantity of the `i`th event `seed` writes: up to 5,000 MiB.
fn quantity_of(i: usize) -> Decimal {
    Decimal::from((i % 5000) as i64 * 1_048_576)
}

/// The sum of every event's quantity as `seed` writes them.
fn seeded_total(n: usize, per: usize) -> Decimal {
    (0..n * per).map(quantity_of).sum()
}

/// The grouped pass alone, as rating takes it when a chunk's subscriptions share March:
/// `UsageStore::window_totals` over March, then every subscription's quantity combined from it;
/// checked against the events as seeded.
async fn window_only<U: UsageStore>(usage: &U, tenant: TenantId, n: usize, per: usize) -> Duration {
    let (from, to) = march();
    let meter = meter();
    let start = Instant::now();
    let totals = usage
        .window_totals(tenant, &meter, from, to)
        .await
        .unwrap()
        .expect("the SQL stores have a window pass");
    let mut total = Decimal::ZERO;
    for i in 0..n {
        total += totals
            .quantity(
                &meter.aggregation,
                CustomerId::from_u128(i as u128 + 1),
                Some(SubscriptionId::from_u128(i as u128 + 1)),
            )
            .unwrap();
    }
    let took = start.elapsed();
    assert_eq!(total, seeded_total(n, per));
    took
}

/// The repetitions, interleaved: bare GROUP BY, the set-based read alone, rate (adds),
/// re-rate (adds nothing).
async fn measure<U: UsageStore>(
    store: &SqlStore,
    usage_store: U,
    raw: &mut Raw,
    tenant: TenantId,
    (n, per, reps): (usize, usize, usize),
) -> Samples {
    let usage = service(store, &usage_store);
    let mut s = Samples {
        group_by: Vec::new(),
        read: Vec::new(),
        window: Vec::new(),
        adds: Vec::new(),
        rerate: Vec::new(),
    };
    // One untimed pass first, so that no measure pays for a cold cache the others do not.
    raw.group_by(tenant, n).await;
    for _ in 0..reps {
        s.group_by.push(raw.group_by(tenant, n).await);
        s.read.push(read_only(&usage_store, tenant, n, per).await);
        s.window
            .push(window_only(&usage_store, tenant, n, per).await);
        if std::env::var_os("DOTMAC_BENCH_READ_ONLY").is_some() {
            continue;
        }
        raw.clear_pending(tenant).await;
        let (took, added) = rate(&usage, tenant, n).await;
        assert_eq!(added, n);
        s.adds.push(took);
        raw.analyze_pending().await;
        let (took, added) = rate(&usage, tenant, n).await;
        assert_eq!(added, 0);
        s.rerate.push(took);
    }
    s
}

/// Through the set-based read, or (DOTMAC_BENCH_PER_KEY) the per-key one.
async fn measure_store(
    store: &SqlStore,
    raw: &mut Raw,
    tenant: TenantId,
    sizes: (usize, usize, usize),
) -> Samples {
    if std::env::var_os("DOTMAC_BENCH_PER_KEY").is_some() {
        measure(store, PerKey(store.clone()), raw, tenant, sizes).await
    } else {
        measure(store, store.clone(), raw, tenant, sizes).await
    }
}

fn report(backend: &str, n: usize, events: usize, s: Samples) {
    let (g, u, w, a, r) = (
        median(s.group_by),
        median(s.read),
        median(s.window),
        median(s.adds),
        median(s.rerate),
    );
    let read = if std::env::var_os("DOTMAC_BENCH_PER_KEY").is_some() {
        " (per-key usage reads)"
    } else {
        ""
    };
    println!(
        "{backend:8} bare GROUP BY over {events} events ({n} groups): median {:.3} s = {:.0} subscriptions/s",
        g.as_secs_f64(),
        rate_of(n, g)
    );
    for (what, m) in [
        ("period_aggregates alone", u),
        ("window pass alone", w),
        ("rate (adds)", a),
        ("re-rate (adds nothing)", r),
    ] {
        if m.is_zero() {
            continue;
        }
        println!(
            "{backend:8} {what:24} {n} subscriptions{read}: median {:.3} s = {:.0} subscriptions/s = {:.0} % of bare GROUP BY",
            m.as_secs_f64(),
            rate_of(n, m),
            100.0 * g.as_secs_f64() / m.as_secs_f64()
        );
    }
}

fn main() {
    let n = env_usize("DOTMAC_BENCH_SUBSCRIPTIONS", 100_000);
    let per = env_usize("DOTMAC_BENCH_EVENTS_PER", 10);
    let reps = env_usize("DOTMAC_BENCH_REPS", 3);
    let backends =
        std::env::var("DOTMAC_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let plan = plan();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::{Connection, Executor};
        if backends.contains("sqlite") {
            let path =
                std::env::temp_dir().join(format!("dotmac-bench-rating-{}.db", std::process::id()));
            let url = format!("sqlite://{}", path.display());
            let store = SqlStore::new(Database::connect(&url).await.unwrap());
            let tenant = seed(&store, &plan, n, per).await;
            let mut raw = Raw::Sqlite(sqlx::SqliteConnection::connect(&url).await.unwrap());
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
            if std::env::var_os("DOTMAC_BENCH_MMAP_AB").is_some() {
                // The store and the bare GROUP BY through a 1 GiB memory map too
                // (`DatabaseOptions::sqlite_mmap_size`), interleaved by repetition in one run.
                let mapped_store = SqlStore::new(
                    Database::connect_with(DatabaseOptions::new(&url).sqlite_mmap_size(MAP))
                        .await
                        .unwrap(),
                );
                let mut raw_mapped =
                    Raw::Sqlite(sqlx::SqliteConnection::connect(&url).await.unwrap());
                raw_mapped.map(MAP).await;
                let (mut plain, mut mapped) = (Samples::default(), Samples::default());
                for _ in 0..reps {
                    plain.extend(measure_store(&store, &mut raw, tenant, (n, per, 1)).await);
                    mapped.extend(
                        measure_store(&mapped_store, &mut raw_mapped, tenant, (n, per, 1)).await,
                    );
                }
                report("sqlite", n, n * per, plain);
                report("sqlite-m", n, n * per, mapped);
                if let Raw::Sqlite(conn) = raw_mapped {
                    conn.close().await.unwrap();
                }
                mapped_store.database().close().await;
            } else {
                let samples = measure_store(&store, &mut raw, tenant, (n, per, reps)).await;
                report("sqlite", n, n * per, samples);
            }
            if let Raw::Sqlite(conn) = raw {
                conn.close().await.unwrap();
            }
            store.database().close().await;
            let _ = std::fs::remove_file(&path);
        }
        if let (true, Ok(url)) = (backends.contains("postgres"), std::env::var("DATABASE_URL")) {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            conn.execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"
            )))
            .await
            .unwrap();
            let store = SqlStore::new(
                Database::connect_with(DatabaseOptions::new(&url).schema(SCHEMA))
                    .await
                    .unwrap(),
            );
            let tenant = seed(&store, &plan, n, per).await;
            conn.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {SCHEMA}")))
                .await
                .unwrap();
            // VACUUM as well: the first scan of freshly written rows sets their hint bits
            // (writes every page), which would land on whichever measure reads first.
            conn.execute(
                "VACUUM ANALYZE usage_events, billing_subscriptions, billing_pending_charges, \
                 billing_invoices",
            )
            .await
            .unwrap();
            // And the seeding's dirty pages written out, so that no measure shares the
            // machine with the checkpoint that would otherwise write them.
            conn.execute("CHECKPOINT").await.unwrap();
            let mut raw = Raw::Postgres(conn);
            let samples = measure_store(&store, &mut raw, tenant, (n, per, reps)).await;
            report("postgres", n, n * per, samples);
            store.database().close().await;
            if let Raw::Postgres(mut conn) = raw {
                conn.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {SCHEMA} CASCADE")))
                    .await
                    .unwrap();
            }
        }
    });
    println!("peak RSS {:.0} MiB", peak_rss_mib());
}
