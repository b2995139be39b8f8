//! Row-level security on PostgreSQL: a transaction scoped to tenant A cannot see or touch
//! tenant B's rows even with SQL that forgets its `WHERE tenant_id`. Runs when DATABASE_URL is
//! set, and fails (does not skip) if that server cannot be used.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac_billing::{BillingCommit, DocumentKey, Invoice, InvoiceStatus, InvoiceStore};
use dotmac_core::{Currency, CustomerId, EventId, Money, TenantId};
use sqlx::Row;

use crate::dialect::postgres as d;
use crate::{Database, DatabaseOptions, OutboxEvent, SqlStore};

pub(crate) async fn postgres() -> Option<Database> {
    let url = std::env::var("DATABASE_URL").ok()?;
    // A schema per migration set, so that a changed migration never meets an old schema.
    let fingerprint = crate::db::POSTGRES_MIGRATIONS.iter().fold(0_u64, |acc, m| {
        m.checksum
            .iter()
            .fold(acc, |acc, b| acc.rotate_left(5) ^ u64::from(*b))
    });
    let options = DatabaseOptions::new(url)
        .schema(format!("dotmac_test_rls_unit_{fingerprint:016x}"))
        .max_connections(1);
    Some(
        Database::connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unusable: {e}")),
    )
}

pub(crate) fn pool(db: &Database) -> &sqlx::PgPool {
    match db.backend_pool() {
        crate::db::Backend::Postgres(pool) => pool,
        #[allow(unreachable_patterns)]
        _ => panic!("not a PostgreSQL database"),
    }
}

/// A tenant with `invoices` real invoices (`billing_invoices`, written through the billing
/// domain's store as a bill run writes them: numbered, `open`) and one outbox event.
async fn tenant_with_data(db: &Database, invoices: usize) -> TenantId {
    let tenant = TenantId::new();
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    db.create_tenant(tenant, "isp", now).await.unwrap();
    let on = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let usd = |amount| Money::new(amount, Currency::USD);
    let records: Vec<Invoice> = (0..invoices)
        .map(|_| {
            let customer = CustomerId::new();
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
                lines: Vec::new(),
                taxes: Vec::new(),
                subtotal: usd(rust_decimal::Decimal::ONE),
                discount_total: usd(rust_decimal::Decimal::ZERO),
                tax_total: usd(rust_decimal::Decimal::ZERO),
                total: usd(rust_decimal::Decimal::ONE),
                settlement: None,
                number_format: None,
            }
        })
        .collect();
    let events = vec![OutboxEvent {
        id: EventId::new(),
        tenant,
        event_type: "test.happened".into(),
        occurred_at: now,
        payload: serde_json::json!({}),
    }];
    db.append_events(tenant, &events).await.unwrap();
    if !records.is_empty() {
        let store = SqlStore::new(db.clone());
        let result = store
            .commit(
                tenant,
                BillingCommit {
                    invoices: records,
                    ..BillingCommit::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(result.issued.len(), invoices);
    }
    tenant
}

async fn count(tx: &mut d::Tx, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&mut **tx).await.unwrap()
}

#[tokio::test]
async fn a_query_without_a_tenant_filter_sees_only_its_tenant() {
    let Some(db) = postgres().await else { return };
    let a = tenant_with_data(&db, 2).await;
    let b = tenant_with_data(&db, 3).await;

    let mut tx = d::begin_tenant(pool(&db), a).await.unwrap();
    // The buggy queries: no WHERE tenant_id at all.
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM billing_invoices").await,
        2
    );
    assert_eq!(count(&mut tx, "SELECT COUNT(*) FROM outbox").await, 1);
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM invoice_counters").await,
        1
    );
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM tenants")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(tenants, vec![a.as_uuid()]);
    // Even naming B explicitly finds nothing.
    let b_rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM billing_invoices WHERE tenant_id = $1")
            .bind(b.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(b_rows, 0);
    // A blanket UPDATE touches A's rows only.
    let touched = sqlx::query("UPDATE billing_invoices SET status = 'void'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(touched, 2);
    tx.rollback().await.unwrap();

    // B's invoices are untouched and still B's.
    let mut tx = d::begin_tenant(pool(&db), b).await.unwrap();
    assert_eq!(
        count(
            &mut tx,
            "SELECT COUNT(*) FROM billing_invoices WHERE status = 'open'"
        )
        .await,
        3
    );
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_tenant_transaction_cannot_write_another_tenants_rows() {
    let Some(db) = postgres().await else { return };
    let a = tenant_with_data(&db, 0).await;
    let b = tenant_with_data(&db, 0).await;
    let mut tx = d::begin_tenant(pool(&db), a).await.unwrap();
    let smuggled = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, scope, key, reference, created_at) \
         VALUES ($1, 's', 'k', 'r', now())",
    )
    .bind(b.as_uuid())
    .execute(&mut *tx)
    .await;
    let error = smuggled.unwrap_err();
    assert!(error.to_string().contains("row-level security"), "{error}");
    // The second line reports the same kind as the checks made before any SQL runs.
    assert_eq!(
        crate::error::classify(&error),
        dotmac_core::StorageErrorKind::TenantMismatch
    );
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn nothing_leaks_to_the_next_user_of_a_pooled_connection() {
    let Some(db) = postgres().await else { return };
    let a = tenant_with_data(&db, 1).await;
    let mut tx = d::begin_tenant(pool(&db), a).await.unwrap();
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(role, "dotmac_app");
    tx.commit().await.unwrap();

    // The pool has one connection: this is the same session, back to the owner, no tenant.
    let row = sqlx::query(
        "SELECT current_user::text AS role, \
                COALESCE(current_setting('dotmac.tenant_id', true), '') AS tenant",
    )
    .fetch_one(pool(&db))
    .await
    .unwrap();
    assert_ne!(row.get::<String, _>("role"), "dotmac_app");
    assert_eq!(row.get::<String, _>("tenant"), "");

    // The application role without a tenant sees no rows at all.
    let mut tx = pool(&db).begin().await.unwrap();
    sqlx::query("SELECT set_config('role', 'dotmac_app', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM billing_invoices").await,
        0
    );
    assert_eq!(count(&mut tx, "SELECT COUNT(*) FROM tenants").await, 0);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn the_relay_role_reads_the_outbox_and_nothing_else() {
    let Some(db) = postgres().await else { return };
    tenant_with_data(&db, 1).await;
    let mut tx = d::begin_relay(pool(&db)).await.unwrap();
    assert!(count(&mut tx, "SELECT COUNT(*) FROM outbox").await >= 1);
    let denied = sqlx::query("SELECT COUNT(*) FROM billing_invoices")
        .fetch_one(&mut *tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("permission denied"), "{denied}");
    tx.rollback().await.unwrap();
}

/// The partner tables (migration 0012) are under the same row-level security as the others: a
/// tenant's transaction sees only its own plans, ledgers and sources, even without a filter.
#[cfg(feature = "partners")]
#[tokio::test]
async fn partner_tables_are_row_level_secured() {
    use dotmac_partners::{
        CommissionPlan, CommissionPlanId, LedgerWrite, PartnerStore, SourceId, WriteOutcome,
    };
    let Some(db) = postgres().await else { return };
    let secured: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE 'partner\\_%' \
         ORDER BY 1",
    )
    .fetch_all(pool(&db))
    .await
    .unwrap();
    let names: Vec<&str> = secured.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "partner_accounts",
            "partner_attributions",
            "partner_customers",
            "partner_ledger",
            "partner_payout_runs",
            "partner_plans",
            "partner_sources"
        ]
    );
    assert!(
        secured.iter().all(|(_, on, forced)| *on && *forced),
        "{secured:?}"
    );

    let store = SqlStore::new(db.clone());
    let (a, b) = (
        tenant_with_data(&db, 0).await,
        tenant_with_data(&db, 0).await,
    );
    for tenant in [a, b] {
        let plan = CommissionPlan::builder(CommissionPlanId::new(), "rls", Currency::USD)
            .revenue_share(rust_decimal::Decimal::TEN)
            .build()
            .unwrap();
        store.save_commission_plan(tenant, &plan).await.unwrap();
        let write = LedgerWrite {
            source: SourceId::new(),
            entries: Vec::new(),
            payout_run: None,
        };
        assert_eq!(
            store
                .write_partner_ledgers(tenant, &write, &[])
                .await
                .unwrap(),
            WriteOutcome::Written
        );
    }
    let mut tx = d::begin_tenant(pool(&db), a).await.unwrap();
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM partner_plans").await,
        1
    );
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM partner_sources").await,
        1
    );
    let smuggled =
        sqlx::query("INSERT INTO partner_sources (tenant_id, source_id) VALUES ($1, $2)")
            .bind(b.as_uuid())
            .bind(uuid::Uuid::now_v7())
            .execute(&mut *tx)
            .await
            .unwrap_err();
    assert!(
        smuggled.to_string().contains("row-level security"),
        "{smuggled}"
    );
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn tenancy_tables_show_a_tenant_only_its_own_rows() {
    use dotmac_tenancy::{
        AccessStore, NewUser, QuotaStore, SettingsLayer, SettingsStore, TenantUser, UserId,
    };
    let Some(db) = postgres().await else { return };
    let store = SqlStore::new(db.clone());
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let mut tenants = Vec::new();
    for users in [1, 2] {
        let tenant = tenant_with_data(&db, 0).await;
        for n in 0..users {
            let user = TenantUser::new(
                UserId::new(),
                tenant,
                NewUser::new(format!("user{n}@isp"), "User"),
                now,
            )
            .unwrap();
            store.insert_user(tenant, &user, &[]).await.unwrap();
        }
        store
            .admit_customers(tenant, &[CustomerId::new()], now)
            .await
            .unwrap();
        store.admit_api_calls(tenant, 5, now).await.unwrap();
        store
            .put_tenant_settings(tenant, &SettingsLayer::new(), &[])
            .await
            .unwrap();
        tenants.push(tenant);
    }
    let (a, b) = (tenants[0], tenants[1]);
    let mut tx = d::begin_tenant(pool(&db), a).await.unwrap();
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM tenancy_users").await,
        1
    );
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM tenancy_quota_counters").await,
        2
    );
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM tenancy_quota_members").await,
        2
    );
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM tenancy_rate_windows").await,
        1
    );
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM tenancy_settings").await,
        1
    );
    // Tenant A cannot raise tenant B's counter, even naming it.
    let smuggled = sqlx::query("UPDATE tenancy_quota_counters SET used = 0 WHERE tenant_id = $1")
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(smuggled, 0);
    let inserted = sqlx::query(
        "INSERT INTO tenancy_rate_windows (tenant_id, quota, window_start, used) \
         VALUES ($1, 'api_calls_per_hour', now(), 1)",
    )
    .bind(b.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(
        inserted.to_string().contains("row-level security"),
        "{inserted}"
    );
    tx.rollback().await.unwrap();
}
