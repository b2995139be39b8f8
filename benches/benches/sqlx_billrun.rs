//! Bill runs persisted through dotmac-sqlx's chunk queue: SQLite (file) and, when DATABASE_URL
//! is set, PostgreSQL with 1, 2 and 4 workers, each compared with a bare COPY of the same rows
//! into the same tables in the same run.
//!
//! `cargo bench -p dotmac-benches --bench sqlx_billrun` (DOTMAC_BENCH_SUBSCRIPTIONS, default
//! 100000; DOTMAC_BENCH_REPS, default 3; DOTMAC_BENCH_BACKENDS=sqlite,postgres). Prints the
//! median of the repetitions and the peak RSS. With DOTMAC_BENCH_MEMORY set: one PostgreSQL run
//! with 2 workers and no COPY, to read the peak RSS of a streamed run. Not a criterion bench: one repetition takes
//! seconds and writes hundreds of thousands of rows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    missing_docs
)]

#[path = "sqlx_common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::*;
use dotmac_core::{SubscriptionId, TenantId};
use dotmac_sqlx::{BillRunId, Database, DatabaseOptions};

const CHUNK: usize = 1000;
const SCHEMA: &str = "dotmac_bench_billrun";

async fn bill_run(db: &Database, subs: &[SubscriptionId], workers: usize) -> Duration {
    let tenant = TenantId::new();
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 6, 0, 0).unwrap();
    db.create_tenant(tenant, "bench", now).await.unwrap();
    let start = Instant::now();
    let run = BillRunId::new();
    db.plan_bill_run(tenant, run, issued_on(), subs, CHUNK, now)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("worker-{w}");
            while let Some(claim) = db
                .claim_chunk(tenant, run, &name, now, chrono::Duration::minutes(10))
                .await
                .unwrap()
            {
                let (invoices, events) = bill_chunk(&claim);
                db.complete_chunk(&claim, "INV", &invoices, &events, now)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    assert!(
        db.bill_run_progress(tenant, run)
            .await
            .unwrap()
            .is_complete()
    );
    elapsed
}

/// The same invoices and lines as COPY text, written by a superuser (COPY FROM is refused
/// under row-level security; the bench user owns the tables and bypasses it).
async fn bare_copy(url: &str, subs: &[SubscriptionId]) -> Duration {
    use sqlx::{Connection, Executor};
    let tenant = TenantId::new();
    let mut invoices = String::with_capacity(subs.len() * 200);
    let mut lines = String::with_capacity(subs.len() * 300);
    for (n, sub) in subs.iter().enumerate() {
        let inv = invoice_for(*sub);
        invoices.push_str(&format!(
            "{tenant}\t{}\tBARE\t{}\t\\N\t{}\t{}\tEUR\t2026-03-01\t{}\topen\t1\t{}\n",
            inv.id,
            n + 1,
            inv.customer,
            sub,
            inv.total.amount(),
            inv.body
        ));
        for (i, l) in inv.lines.iter().enumerate() {
            lines.push_str(&format!(
                "{tenant}\t{}\t{i}\t{}\t{}\t{}\t{}\n",
                inv.id, l.description, l.quantity, l.unit_price, l.amount
            ));
        }
    }
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {SCHEMA}")))
        .await
        .unwrap();
    let start = Instant::now();
    conn.execute("BEGIN").await.unwrap();
    let mut copy = conn
        .copy_in_raw(
            "COPY invoices (tenant_id, invoice_id, series, number, run_id, customer_id, \
             subscription_id, currency, issued_on, total, status, version, body) FROM STDIN",
        )
        .await
        .unwrap();
    copy.send(invoices.as_bytes()).await.unwrap();
    copy.finish().await.unwrap();
    let mut copy = conn
        .copy_in_raw(
            "COPY invoice_lines (tenant_id, invoice_id, line_no, description, quantity, \
             unit_price, amount) FROM STDIN",
        )
        .await
        .unwrap();
    copy.send(lines.as_bytes()).await.unwrap();
    copy.finish().await.unwrap();
    conn.execute("COMMIT").await.unwrap();
    start.elapsed()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let n = env_usize("DOTMAC_BENCH_SUBSCRIPTIONS", 100_000);
    let reps = env_usize("DOTMAC_BENCH_REPS", 3);
    let backends =
        std::env::var("DOTMAC_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let subs: Vec<SubscriptionId> = (0..n).map(|_| SubscriptionId::new()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("DOTMAC_BENCH_MEMORY").is_ok() {
        // Peak memory of one streamed run: no bare COPY (its text buffers would dominate).
        runtime.block_on(async {
            let url = std::env::var("DATABASE_URL").unwrap();
            let db = Database::connect_with(DatabaseOptions::new(&url).schema(SCHEMA).max_connections(8))
                .await
                .unwrap();
            let took = bill_run(&db, &subs, 2).await;
            println!(
                "postgres bill run {n} subscriptions, 2 workers, chunks of {CHUNK}: {:.1} s = {:.0} invoices/s",
                took.as_secs_f64(),
                rate(n, took)
            );
        });
        println!("peak RSS {:.0} MiB", peak_rss_mib());
        return;
    }
    runtime.block_on(async {
        if backends.contains("sqlite") {
            let path = std::env::temp_dir().join(format!("dotmac-bench-{}.db", std::process::id()));
            let db = Database::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            for workers in [1, 2] {
                let samples: Vec<Duration> = {
                    let mut v = Vec::new();
                    for _ in 0..reps {
                        v.push(bill_run(&db, &subs, workers).await);
                    }
                    v
                };
                let m = median(samples);
                println!(
                    "sqlite  bill run  {n} subscriptions  {workers} worker(s): median {:.2} s = {:.0} invoices/s (3 lines each)",
                    m.as_secs_f64(),
                    rate(n, m)
                );
            }
            db.close().await;
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
            let db = Database::connect_with(DatabaseOptions::new(&url).schema(SCHEMA).max_connections(8))
                .await
                .unwrap();
            let mut copies = Vec::new();
            for _ in 0..reps {
                copies.push(bare_copy(&url, &subs).await);
            }
            let copy = median(copies);
            println!(
                "postgres bare COPY {n} invoices + {} lines: median {:.2} s = {:.0} invoices/s",
                3 * n,
                copy.as_secs_f64(),
                rate(n, copy)
            );
            for workers in [1, 2, 4] {
                let mut samples = Vec::new();
                for _ in 0..reps {
                    samples.push(bill_run(&db, &subs, workers).await);
                }
                let m = median(samples);
                println!(
                    "postgres bill run {n} subscriptions  {workers} worker(s): median {:.2} s = {:.0} invoices/s (3 lines each) = {:.0} % of bare COPY",
                    m.as_secs_f64(),
                    rate(n, m),
                    100.0 * rate(n, m) / rate(n, copy)
                );
            }
        }
    });
    println!("peak RSS {:.0} MiB", peak_rss_mib());
}
