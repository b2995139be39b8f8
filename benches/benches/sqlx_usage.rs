//! Usage ingestion through dotmac-sqlx's `UsageStore` (idempotent, batched: UNNEST on
//! PostgreSQL, multi-row INSERT on SQLite), compared on PostgreSQL with a bare COPY of the same
//! rows into the same table in the same run.
//!
//! `cargo bench -p dotmac-benches --bench sqlx_usage` (DOTMAC_BENCH_EVENTS, default 1000000;
//! DOTMAC_BENCH_REPS, default 3; DOTMAC_BENCH_BACKENDS=sqlite,postgres; batches of 10,000
//! events, one transaction each).
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

use chrono::{TimeZone, Utc};
use common::*;
use dotmac_core::{CustomerId, TenantId};
use dotmac_sqlx::{Database, DatabaseOptions, SqlStore};
use dotmac_usage::{MeterId, UsageEvent, UsageEventId, UsageStore};
use rust_decimal::Decimal;

const BATCH: usize = 10_000;
const SCHEMA: &str = "dotmac_bench_usage";

fn events(n: usize) -> Vec<UsageEvent> {
    let customers: Vec<CustomerId> = (0..10_000).map(|_| CustomerId::new()).collect();
    let meter = MeterId::new();
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| UsageEvent {
            id: UsageEventId::new(),
            customer: customers[i % customers.len()],
            subscription: None,
            meter,
            quantity: Decimal::new((i % 5000) as i64 * 1_048_576, 0),
            timestamp: start + chrono::Duration::seconds(i as i64),
            properties: BTreeMap::new(),
        })
        .collect()
}

async fn ingest(store: &SqlStore, events: &[UsageEvent]) -> Duration {
    let tenant = TenantId::new();
    let start = Instant::now();
    for batch in events.chunks(BATCH) {
        let new = store.append_events(tenant, batch).await.unwrap();
        assert!(new.iter().all(|n| *n));
    }
    start.elapsed()
}

async fn bare_copy(url: &str, events: &[UsageEvent]) -> Duration {
    use sqlx::{Connection, Executor};
    let tenant = TenantId::new();
    let mut text = String::with_capacity(events.len() * 180);
    for e in events {
        text.push_str(&format!(
            "{tenant}\t{}\t{}\t\\N\t{}\t{}\t{}\t{{}}\n",
            e.id,
            e.customer,
            e.meter,
            e.quantity,
            e.timestamp.to_rfc3339()
        ));
    }
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {SCHEMA}")))
        .await
        .unwrap();
    let start = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY usage_events (tenant_id, event_id, customer_id, subscription_id, meter_id, \
             quantity, occurred_at, properties) FROM STDIN",
        )
        .await
        .unwrap();
    copy.send(text.as_bytes()).await.unwrap();
    copy.finish().await.unwrap();
    start.elapsed()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let n = env_usize("DOTMAC_BENCH_EVENTS", 1_000_000);
    let reps = env_usize("DOTMAC_BENCH_REPS", 3);
    let backends =
        std::env::var("DOTMAC_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let events = events(n);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if backends.contains("sqlite") {
            let path = std::env::temp_dir().join(format!("dotmac-bench-usage-{}.db", std::process::id()));
            let db = Database::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            let store = SqlStore::new(db.clone());
            let mut samples = Vec::new();
            for _ in 0..reps {
                samples.push(ingest(&store, &events).await);
            }
            let m = median(samples);
            println!("sqlite   usage ingestion {n} events: median {:.2} s = {:.0} events/s", m.as_secs_f64(), rate(n, m));
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
            let db = Database::connect_with(DatabaseOptions::new(&url).schema(SCHEMA)).await.unwrap();
            let store = SqlStore::new(db);
            let mut copies = Vec::new();
            let mut samples = Vec::new();
            // Interleaved, so that both see the same table size and the same machine load.
            for _ in 0..reps {
                copies.push(bare_copy(&url, &events).await);
                samples.push(ingest(&store, &events).await);
            }
            let (copy, m) = (median(copies), median(samples));
            println!("postgres bare COPY      {n} rows:   median {:.2} s = {:.0} rows/s", copy.as_secs_f64(), rate(n, copy));
            println!(
                "postgres usage ingestion {n} events: median {:.2} s = {:.0} events/s = {:.0} % of bare COPY",
                m.as_secs_f64(),
                rate(n, m),
                100.0 * rate(n, m) / rate(n, copy)
            );
        }
    });
    println!("peak RSS {:.0} MiB", peak_rss_mib());
}
