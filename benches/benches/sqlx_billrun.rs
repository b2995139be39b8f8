//! Bill runs of the billing domain persisted through dotmac-sqlx's chunk queue
//! (`SqlStore::run_bill_worker`): SQLite (file, 1 worker) and, when DATABASE_URL is set,
//! PostgreSQL with 1, 2 and 4 workers, compared with a bare COPY of the same invoice rows into
//! the same table in the same run (interleaved with the runs).
//!
//! Each worker claims chunks of 1,000 subscriptions, computes every subscription's invoice with
//! `dotmac_billing::bill_due` (one recurring line, 7.5 % VAT) and writes the chunk's invoices
//! (with their lines, in the invoice body), gapless numbers, subscription states and outbox
//! events in one fenced transaction.
//!
//! `cargo bench -p dotmac-benches --bench sqlx_billrun` (DOTMAC_BENCH_SUBSCRIPTIONS, default
//! 100000; DOTMAC_BENCH_REPS, default 3; DOTMAC_BENCH_BACKENDS=sqlite,postgres;
//! DOTMAC_BENCH_WORKERS, the PostgreSQL worker counts, default 1,2,4; on PostgreSQL the
//! seeded tables are analyzed before each run unless DOTMAC_BENCH_NO_ANALYZE is set). Prints the
//! median of the repetitions and the peak RSS. Not a criterion bench: one repetition takes
//! seconds and writes hundreds of thousands of rows. Seeding (subscriptions and accounts,
//! bulk-imported) is not timed.
//!
//! With `DOTMAC_BENCH_MEMORY=1` (and DATABASE_URL): the peak memory of one streamed run
//! instead, on PostgreSQL with 2 workers and no COPY, over DOTMAC_BENCH_SUBSCRIPTIONS (default
//! 1000000 in this mode) subscriptions seeded 10,000 at a time, so that the process never holds
//! them all. The peak RSS (`VmHWM`) is reset after seeding (`/proc/self/clear_refs`), so the
//! figure printed for the run is the run's own: planning the chunks and billing them. Takes
//! about 10 minutes and 2–3 GB of disk (schema `dotmac_bench_billrun_1m`, dropped at the end).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    missing_docs
)]

#[path = "sqlx_common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use common::{env_usize, median, peak_rss_mib};
use dotmac_billing::{
    BillingSettings, CatalogStore, Charge, CustomerAccount, DocumentNumber, DocumentSettings,
    InvoiceStatus, NewSubscription, Plan, Product, Subscription, TaxRate, TaxRateId, bill_due,
};
use dotmac_core::{
    Currency, CustomerId, FixedClock, Money, PlanId, ProductId, SubscriptionId, TenantId,
};
use dotmac_sqlx::{BillRunId, BillWorker, Database, DatabaseOptions, SqlStore};
use rust_decimal::Decimal;

const CHUNK: usize = 1000;
const SCHEMA: &str = "dotmac_bench_billrun";

fn d(m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, day).unwrap()
}

fn as_of() -> NaiveDate {
    d(4, 1)
}

fn plan() -> Plan {
    Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "Fibre 100")
        .charge(Charge::recurring_flat([Money::from_minor(
            2999,
            Currency::USD,
        )]))
        .build(d(1, 1))
        .unwrap()
}

fn settings() -> BillingSettings {
    BillingSettings::default()
        .with_taxes(vec![TaxRate::exclusive(
            TaxRateId::from_u128(1),
            "VAT",
            Decimal::new(75, 1),
        )])
        .with_chunk_size(CHUNK)
}

/// One subscription per customer, started on April 1st: the run bills April.
fn subscriptions(plan: &Plan, n: usize) -> (Vec<CustomerAccount>, Vec<Subscription>) {
    subscriptions_from(plan, 0, n)
}

/// Subscriptions `from .. from + n` of [`subscriptions`].
fn subscriptions_from(
    plan: &Plan,
    from: usize,
    n: usize,
) -> (Vec<CustomerAccount>, Vec<Subscription>) {
    (from..from + n)
        .map(|i| {
            let customer = CustomerId::from_u128(i as u128 + 1);
            let sub = NewSubscription::new(customer, plan.id, Currency::USD, d(4, 1))
                .id(SubscriptionId::from_u128(i as u128 + 1))
                .create(plan, Currency::USD)
                .unwrap();
            (CustomerAccount::new(customer, Currency::USD), sub)
        })
        .unzip()
}

async fn seed(
    store: &SqlStore,
    plan: &Plan,
    accounts: &[CustomerAccount],
    subs: &[Subscription],
) -> TenantId {
    let tenant = catalogue(store, plan).await;
    store
        .import_subscriptions(tenant, accounts, subs)
        .await
        .unwrap();
    tenant
}

/// A new tenant with the plan's product and the plan.
async fn catalogue(store: &SqlStore, plan: &Plan) -> TenantId {
    let tenant = TenantId::new();
    let now = Utc.with_ymd_and_hms(2026, 4, 1, 2, 0, 0).unwrap();
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
    tenant
}

/// Plans the run and lets `workers` tasks bill it; times everything from the plan on.
async fn bill_run(store: &SqlStore, tenant: TenantId, plan: &Plan, workers: usize) -> Duration {
    let now = Utc.with_ymd_and_hms(2026, 4, 1, 2, 0, 0).unwrap();
    let plans = Arc::new(HashMap::from([(plan.id, plan.clone())]));
    let start = Instant::now();
    let run = BillRunId::new();
    store
        .plan_billing_run(tenant, run, as_of(), CHUNK, now)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (store, plans) = (store.clone(), plans.clone());
        tasks.push(tokio::spawn(async move {
            let settings = settings();
            let name = format!("worker-{w}");
            let job = BillWorker {
                tenant,
                run,
                as_of: as_of(),
                plans: &plans,
                settings: &settings,
                worker: &name,
                lease: chrono::Duration::minutes(10).into(),
            };
            store
                .run_bill_worker(&job, &FixedClock::new(now))
                .await
                .unwrap()
        }));
    }
    let mut invoices = 0;
    for t in tasks {
        invoices += t.await.unwrap().invoices;
    }
    let elapsed = start.elapsed();
    assert!(
        store
            .database()
            .bill_run_progress(tenant, run)
            .await
            .unwrap()
            .is_complete()
    );
    assert_eq!(invoices, store_len(store, tenant).await);
    elapsed
}

async fn store_len(store: &SqlStore, tenant: TenantId) -> usize {
    usize::try_from(
        store
            .database()
            .last_number(tenant, "billing.invoice")
            .await
            .unwrap(),
    )
    .unwrap()
}

/// COPY text of the invoices the run issues (computed with the same `bill_due`, numbered,
/// open), for `billing_invoices`.
fn copy_rows(tenant: TenantId, plan: &Plan, subs: &[Subscription]) -> String {
    let doc = DocumentSettings {
        taxes: settings().taxes,
        ..DocumentSettings::default()
    };
    let mut text = String::with_capacity(subs.len() * 1200);
    let mut number = 0;
    for sub in subs {
        for mut inv in bill_due(sub, plan, &[], as_of(), &doc).unwrap().invoices {
            number += 1;
            inv.number = Some(DocumentNumber(number));
            inv.status = InvoiceStatus::Open;
            let key = serde_json::to_string(&inv.key).unwrap();
            let body = serde_json::to_string(&inv).unwrap();
            text.push_str(&format!(
                "{tenant}\t{}\t{}\t{}\t{number}\topen\t{}\tUSD\t{}\t{}\n",
                inv.id,
                key.replace('\\', "\\\\"),
                inv.customer,
                inv.issue_date,
                inv.total.amount(),
                body.replace('\\', "\\\\"),
            ));
        }
    }
    text
}

/// The same invoice rows with `COPY … FROM STDIN`, by the table owner (COPY FROM is refused
/// under row-level security).
async fn bare_copy(url: &str, rows: &str) -> Duration {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {SCHEMA}")))
        .await
        .unwrap();
    let start = Instant::now();
    conn.execute("BEGIN").await.unwrap();
    let mut copy = conn
        .copy_in_raw(
            "COPY billing_invoices (tenant_id, invoice_id, doc_key, customer_id, number, status, \
             issue_date, currency, total, body) FROM STDIN",
        )
        .await
        .unwrap();
    copy.send(rows.as_bytes()).await.unwrap();
    copy.finish().await.unwrap();
    conn.execute("COMMIT").await.unwrap();
    start.elapsed()
}

/// `ANALYZE` of the seeded tables, as after any bulk load: statistics gathered before a
/// tenant's rows were imported estimate that tenant at a row or two, and the chunk reads then
/// walk all of its rows through the tenant prefix of an index (70–110 ms a chunk instead of
/// 2 ms) until autovacuum's own analyze catches up.
async fn analyze(url: &str, schema: &str) {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "ANALYZE {schema}.billing_subscriptions, {schema}.billing_accounts"
    )))
    .await
    .unwrap();
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// `DOTMAC_BENCH_MEMORY`: the peak RSS of one streamed 2-worker run on PostgreSQL.
fn memory_run() {
    let n = env_usize("DOTMAC_BENCH_SUBSCRIPTIONS", 1_000_000);
    let url = std::env::var("DATABASE_URL").expect("DOTMAC_BENCH_MEMORY needs DATABASE_URL");
    let schema = "dotmac_bench_billrun_1m";
    let plan = plan();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let drop_schema = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        conn.execute(sqlx::AssertSqlSafe(drop_schema.clone()))
            .await
            .unwrap();
        let store = SqlStore::new(
            Database::connect_with(DatabaseOptions::new(&url).schema(schema).max_connections(8))
                .await
                .unwrap(),
        );
        let start = Instant::now();
        let tenant = catalogue(&store, &plan).await;
        let slice = 10_000;
        for from in (0..n).step_by(slice) {
            let (accounts, subs) = subscriptions_from(&plan, from, slice.min(n - from));
            store
                .import_subscriptions(tenant, &accounts, &subs)
                .await
                .unwrap();
        }
        analyze(&url, schema).await;
        println!(
            "seeded {n} subscriptions in {:.1} s (peak RSS while seeding {:.0} MiB)",
            start.elapsed().as_secs_f64(),
            peak_rss_mib()
        );
        // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        println!(
            "RSS before the run {:.0} MiB (peak {})",
            rss_mib(),
            if reset { "reset" } else { "NOT reset: includes seeding" }
        );
        let took = bill_run(&store, tenant, &plan, 2).await;
        println!(
            "postgres bill run {n} subscriptions, 2 workers, chunks of {CHUNK}: {:.1} s = {:.0} invoices/s",
            took.as_secs_f64(),
            rate(n, took)
        );
        println!("peak RSS during the run {:.0} MiB", peak_rss_mib());
        store.database().close().await;
        conn.execute(sqlx::AssertSqlSafe(drop_schema)).await.unwrap();
    });
}

/// Resident set size of this process now, in MiB (Linux `VmRSS`).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    if std::env::var_os("DOTMAC_BENCH_MEMORY").is_some() {
        memory_run();
        return;
    }
    let n = env_usize("DOTMAC_BENCH_SUBSCRIPTIONS", 100_000);
    let reps = env_usize("DOTMAC_BENCH_REPS", 3);
    let backends =
        std::env::var("DOTMAC_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let plan = plan();
    let (accounts, subs) = subscriptions(&plan, n);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if backends.contains("sqlite") {
            let path = std::env::temp_dir().join(format!("dotmac-bench-{}.db", std::process::id()));
            let store = SqlStore::new(
                Database::connect(&format!("sqlite://{}", path.display())).await.unwrap(),
            );
            let mut samples = Vec::new();
            for _ in 0..reps {
                let tenant = seed(&store, &plan, &accounts, &subs).await;
                samples.push(bill_run(&store, tenant, &plan, 1).await);
            }
            let m = median(samples);
            println!(
                "sqlite  bill run {n} subscriptions  1 worker: median {:.2} s = {:.0} invoices/s",
                m.as_secs_f64(),
                rate(n, m)
            );
            store.database().close().await;
            let _ = std::fs::remove_file(&path);
        }
        if let (true, Ok(url)) = (backends.contains("postgres"), std::env::var("DATABASE_URL")) {
            {
                use sqlx::{Connection, Executor};
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                conn.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")))
                    .await
                    .unwrap();
            }
            let store = SqlStore::new(
                Database::connect_with(DatabaseOptions::new(&url).schema(SCHEMA).max_connections(8))
                    .await
                    .unwrap(),
            );
            // Interleaved: each repetition times a bare COPY and then the runs with 1, 2 and 4
            // workers, so that the COPY and the runs see the same table sizes (every run adds
            // 100,000 invoices to the same tables) and the same machine load.
            let analyzed = std::env::var_os("DOTMAC_BENCH_NO_ANALYZE").is_none();
            let workers: Vec<usize> = std::env::var("DOTMAC_BENCH_WORKERS")
                .unwrap_or_else(|_| "1,2,4".into())
                .split(',')
                .map(|w| w.trim().parse().unwrap())
                .collect();
            let mut copies = Vec::new();
            let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); workers.len()];
            for _ in 0..reps {
                let rows = copy_rows(TenantId::new(), &plan, &subs);
                copies.push(bare_copy(&url, &rows).await);
                drop(rows);
                for (i, w) in workers.iter().enumerate() {
                    let tenant = seed(&store, &plan, &accounts, &subs).await;
                    if analyzed {
                        analyze(&url, SCHEMA).await;
                    }
                    samples[i].push(bill_run(&store, tenant, &plan, *w).await);
                }
            }
            let copy = median(copies);
            println!(
                "postgres bare COPY {n} invoice rows: median {:.2} s = {:.0} invoices/s",
                copy.as_secs_f64(),
                rate(n, copy)
            );
            for (w, samples) in workers.iter().zip(samples) {
                let m = median(samples);
                println!(
                    "postgres bill run {n} subscriptions  {w} worker(s): median {:.2} s = {:.0} invoices/s = {:.0} % of bare COPY",
                    m.as_secs_f64(),
                    rate(n, m),
                    100.0 * rate(n, m) / rate(n, copy)
                );
            }
        }
    });
    println!("peak RSS {:.0} MiB", peak_rss_mib());
}
