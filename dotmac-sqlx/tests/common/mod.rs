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

/// One schema per test binary and migration set, so binaries running in parallel do not see
/// each other's global state (the outbox relay reads every tenant) and a changed migration
/// never meets a schema migrated by the old one.
pub async fn postgres() -> Option<Database> {
    let url = std::env::var("DATABASE_URL").ok()?;
    let schema = format!(
        "dotmac_test_{}_{:08x}",
        binary_name(),
        migrations_fingerprint()
    );
    let db = Database::connect_with(DatabaseOptions::new(&url).schema(schema).max_connections(8))
        .await
        .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unusable: {e}"));
    Some(db)
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

/// Every backend this build and environment offer, named for assertion messages.
pub async fn backends() -> Vec<(&'static str, Database)> {
    let mut all = vec![
        ("sqlite-memory", sqlite_memory().await),
        ("sqlite-file", sqlite_file().await),
    ];
    if let Some(pg) = postgres().await {
        all.push(("postgres", pg));
    }
    all
}

pub async fn new_tenant(db: &Database) -> TenantId {
    let tenant = TenantId::new();
    db.create_tenant(tenant, "Test ISP", at(1, 0))
        .await
        .unwrap();
    tenant
}
