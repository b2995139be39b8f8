//! Every primary and unique key of the migrated schema leads with `tenant_id`, on both
//! backends: ids are per tenant (a tenant never learns of another's ids from a duplicate
//! error), and every table can be distributed by `tenant_id` (Citus-style sharding needs the
//! distribution column in every primary and unique key).

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::Database;

/// Keys that do not name a tenant's record, and why.
const NOT_TENANT_KEYS: &[(&str, &str)] = &[(
    "_sqlx_migrations",
    "the migrator's own bookkeeping, one row per migration",
)];

/// SQLite tables whose primary key is `seq INTEGER PRIMARY KEY AUTOINCREMENT`: the rowid, the
/// row's address in the file rather than an index, and a SQLite file is never sharded.
/// PostgreSQL keys the same tables by `(tenant_id, seq)`.
const SQLITE_ROWID_TABLES: &[&str] = &[
    "outbox",
    "support_sla_records",
    "billing_invoices",
    "billing_pending_charges",
    "billing_credit_notes",
];

/// `(table, key, first column)` rows whose first column is not `tenant_id`.
fn offenders(keys: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    keys.into_iter()
        .filter(|(table, _, first)| {
            first != "tenant_id" && !NOT_TENANT_KEYS.iter().any(|(t, _)| t == table)
        })
        .collect()
}

#[tokio::test]
async fn every_sqlite_primary_and_unique_key_leads_with_tenant_id() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    let crate::db::Backend::Sqlite(pool) = db.backend_pool() else {
        panic!("not SQLite");
    };
    // Unique indexes: those of UNIQUE and PRIMARY KEY constraints (origin 'u', 'pk') and
    // CREATE UNIQUE INDEX (origin 'c').
    let mut keys: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT m.name, il.name, ii.name FROM sqlite_master m, pragma_index_list(m.name) il, \
           pragma_index_info(il.name) ii \
         WHERE m.type = 'table' AND il.\"unique\" = 1 AND ii.seqno = 0 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(keys.len() >= 20, "the query found too few keys: {keys:?}");
    // Primary keys that are the rowid (INTEGER PRIMARY KEY) have no index: read the columns.
    let rowid_keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, ti.name FROM sqlite_master m, pragma_table_info(m.name) ti \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND ti.pk = 1 \
           AND NOT EXISTS (SELECT 1 FROM pragma_index_list(m.name) il WHERE il.origin = 'pk') \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let rowid_tables: Vec<&str> = rowid_keys.iter().map(|(t, _)| t.as_str()).collect();
    let mut expected = SQLITE_ROWID_TABLES.to_vec();
    expected.sort_unstable();
    assert_eq!(rowid_tables, expected, "rowid keys: {rowid_keys:?}");
    assert!(rowid_keys.iter().all(|(_, column)| column == "seq"));
    keys.retain(|(table, _, _)| table != "sqlite_sequence");
    // The stand-in invoice store is gone (migration 0006): invoices live in billing_invoices.
    let stand_in: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE name IN ('invoices', 'invoice_lines')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(stand_in, Vec::<String>::new());
    assert_eq!(offenders(keys), Vec::new());
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn every_postgres_primary_and_unique_key_leads_with_tenant_id() {
    let Some(db) = crate::rls_tests::postgres().await else {
        return;
    };
    let pool = crate::rls_tests::pool(&db);
    // Every unique index (primary keys, UNIQUE constraints, CREATE UNIQUE INDEX) of the
    // schema the migrations ran in, with its first column.
    let keys: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, a.attname::text \
         FROM pg_index x \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0] \
         WHERE n.nspname = current_schema() AND (x.indisunique OR x.indisprimary) \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(keys.len() >= 25, "the query found too few keys: {keys:?}");
    let tables: std::collections::BTreeSet<&str> =
        keys.iter().map(|(t, _, _)| t.as_str()).collect();
    for table in ["bill_runs", "outbox", "billing_invoices", "support_tickets"] {
        assert!(tables.contains(table), "{table} has no key: {keys:?}");
    }
    // The stand-in invoice store is gone (migration 0006): invoices live in billing_invoices.
    let stand_in: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name IN ('invoices', 'invoice_lines')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(stand_in, Vec::<String>::new());
    assert_eq!(offenders(keys), Vec::new());
}

/// No PostgreSQL index repeats another of its table (the same columns in the same order, the
/// same predicate; a unique index answers every query a plain one of its columns does): every
/// write pays for each index, and a repeat answers no query the other does not (migration 0019 dropped the outbox's).
#[cfg(feature = "postgres")]
#[tokio::test]
async fn no_postgres_index_repeats_another() {
    let Some(db) = crate::rls_tests::postgres().await else {
        return;
    };
    let pool = crate::rls_tests::pool(&db);
    let repeats: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, a.relname::text, b.relname::text \
         FROM pg_index x \
         JOIN pg_index y ON y.indrelid = x.indrelid AND y.indexrelid > x.indexrelid \
           AND y.indkey::text = x.indkey::text \
           AND pg_get_expr(y.indpred, y.indrelid) IS NOT DISTINCT FROM \
               pg_get_expr(x.indpred, x.indrelid) \
           AND pg_get_expr(y.indexprs, y.indrelid) IS NOT DISTINCT FROM \
               pg_get_expr(x.indexprs, x.indrelid) \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_class a ON a.oid = x.indexrelid \
         JOIN pg_class b ON b.oid = y.indexrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(repeats, Vec::new());
    let outbox: Vec<String> = sqlx::query_scalar(
        "SELECT i.relname::text FROM pg_index x \
         JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() AND t.relname = 'outbox' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        outbox,
        [
            "outbox_event_key",
            "outbox_pending",
            "outbox_pending_aggregate",
            "outbox_pkey"
        ]
    );
}

/// The relay's statements that find outbox events by `seq` alone are answered by an index
/// once `outbox_seq` is gone (migration 0019): each also asks for `status = 'pending'`,
/// which `outbox_pending` covers.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn the_postgres_relay_finds_events_by_seq_through_the_pending_index() {
    let Some(db) = crate::rls_tests::postgres().await else {
        return;
    };
    let mut tx = crate::rls_tests::pool(&db).begin().await.unwrap();
    // The planner's choice on a table of any size: sequential scans priced out.
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN UPDATE outbox SET status = 'handled' \
         WHERE seq = ANY('{1,2}'::bigint[]) AND claimed_by = 'relay' AND status = 'pending'",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("outbox_pending"), "{plan}");
    tx.rollback().await.unwrap();
}
