//! What differs between the backends: transaction start, tenant scoping and money encoding.
//!
//! Store code is written once and expanded for each backend ([`crate::db::dispatch!`],
//! [`crate::db::for_each_dialect!`]), which bring one of these modules into scope; both
//! modules therefore offer the same items with the same names. The dialect is the bottom
//! layer: the stores import it, it imports no store ([`crate::backend`] puts the two together).

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    use std::str::FromStr;

    use dotmac_core::TenantId;
    use rust_decimal::Decimal;
    use sqlx::sqlite::SqliteRow;
    use sqlx::{Row, Sqlite, SqlitePool, Transaction};

    use crate::db::LeaseSettings;
    use crate::error::{Context, Result, SqlError};

    pub(crate) type Tx = Transaction<'static, Sqlite>;
    pub(crate) type DbRow = SqliteRow;
    pub(crate) const IS_POSTGRES: bool = false;
    pub(crate) type Db = Sqlite;

    /// `BEGIN IMMEDIATE` takes the write lock up front: a deferred transaction that reads and
    /// then writes fails with SQLITE_BUSY (not waited on) when another writer got in between.
    pub(crate) async fn begin_write(pool: &SqlitePool) -> Result<Tx> {
        pool.begin_with("BEGIN IMMEDIATE")
            .await
            .during("begin transaction")
    }

    /// SQLite has no row-level security: isolation rests on every query's `tenant_id = ?`.
    pub(crate) async fn begin_tenant(pool: &SqlitePool, _tenant: TenantId) -> Result<Tx> {
        begin_write(pool).await
    }

    /// A bill-run transaction: SQLite has no lock or idle timeouts per transaction (one
    /// writer at a time, and the connection's busy timeout), so it is a tenant transaction.
    pub(crate) async fn begin_bill_run(
        pool: &SqlitePool,
        tenant: TenantId,
        _lease: &LeaseSettings,
    ) -> Result<Tx> {
        begin_tenant(pool, tenant).await
    }

    /// A bill run's read: a plain read transaction, as [`begin_bill_run`] has no timeouts here.
    pub(crate) async fn begin_bill_run_read(
        pool: &SqlitePool,
        tenant: TenantId,
        _lease: &LeaseSettings,
    ) -> Result<Tx> {
        begin_read(pool, tenant).await
    }

    /// Reads need no lock; the snapshot of a deferred transaction is enough.
    pub(crate) async fn begin_read(pool: &SqlitePool, _tenant: TenantId) -> Result<Tx> {
        pool.begin().await.during("begin transaction")
    }

    /// Cross-tenant outbox relay.
    pub(crate) async fn begin_relay(pool: &SqlitePool) -> Result<Tx> {
        begin_write(pool).await
    }

    /// The platform operator's read of every tenant's registry row.
    pub(crate) async fn begin_platform_read(pool: &SqlitePool) -> Result<Tx> {
        pool.begin().await.during("begin transaction")
    }

    /// Money as an exact decimal string: SQLite's NUMERIC affinity would turn it into a double.
    pub(crate) fn dec(value: Decimal) -> String {
        value.to_string()
    }

    pub(crate) fn get_dec(row: &SqliteRow, column: &'static str) -> Result<Decimal> {
        let text: String = row.try_get(column).during("decode decimal")?;
        Decimal::from_str(&text).map_err(|e| SqlError::Corrupt {
            what: column,
            detail: format!("{text:?} is not a decimal: {e}"),
        })
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use dotmac_core::TenantId;
    use rust_decimal::Decimal;
    use sqlx::postgres::PgRow;
    use sqlx::{PgPool, Postgres, Row, Transaction};

    use crate::db::LeaseSettings;
    use crate::error::{Context, Result};

    pub(crate) type Tx = Transaction<'static, Postgres>;
    pub(crate) type DbRow = PgRow;
    pub(crate) const IS_POSTGRES: bool = true;
    pub(crate) type Db = Postgres;

    pub(crate) async fn begin_write(pool: &PgPool) -> Result<Tx> {
        pool.begin().await.during("begin transaction")
    }

    /// A transaction that can see and write only `tenant`'s rows.
    ///
    /// Both settings are transaction-local (`set_config(.., true)` is `SET LOCAL`): at COMMIT or
    /// ROLLBACK the connection returns to the pool as the owner with no tenant, so a pooled
    /// connection can never carry a tenant into someone else's transaction. The role switch is
    /// what makes the policies bite: the owner and superusers bypass row-level security.
    pub(crate) async fn begin_tenant(pool: &PgPool, tenant: TenantId) -> Result<Tx> {
        let mut tx = begin_write(pool).await?;
        sqlx::query(
            "SELECT set_config('role', 'dotmac_app', true), \
                    set_config('dotmac.tenant_id', $1, true)",
        )
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .during("scope transaction to tenant")?;
        Ok(tx)
    }

    pub(crate) async fn begin_read(pool: &PgPool, tenant: TenantId) -> Result<Tx> {
        begin_tenant(pool, tenant).await
    }

    /// A tenant transaction of a bill run, which also waits at most the lease's lock timeout
    /// for a lock and is ended by the server after its idle-in-transaction timeout (see
    /// [`LeaseSettings`]): a worker frozen mid-transaction loses its session, and with it the
    /// locks (the tenant's invoice counter) the other workers wait for.
    ///
    /// Sent with the `BEGIN` itself, in one message, and transaction-local like
    /// [`begin_tenant`]'s settings: the connection returns to the pool with the server's
    /// defaults. (A `BEGIN` followed by a separate statement left a window: a worker frozen
    /// between the two sat idle in a transaction without the timeout, for ever.) The values
    /// are a tenant id and two durations of digits, formatted here, never caller text.
    pub(crate) async fn begin_bill_run(
        pool: &PgPool,
        tenant: TenantId,
        lease: &LeaseSettings,
    ) -> Result<Tx> {
        let begin = format!(
            "BEGIN; SELECT set_config('role', 'dotmac_app', true), \
                    set_config('dotmac.tenant_id', '{tenant}', true), \
                    set_config('lock_timeout', '{}', true), \
                    set_config('idle_in_transaction_session_timeout', '{}', true)",
            LeaseSettings::setting(lease.lock_timeout()),
            LeaseSettings::setting(lease.idle_in_transaction_timeout()),
        );
        pool.begin_with(sqlx::AssertSqlSafe(begin))
            .await
            .during("begin bill-run transaction")
    }

    /// A bill run's read, with the same timeouts as its writes.
    pub(crate) async fn begin_bill_run_read(
        pool: &PgPool,
        tenant: TenantId,
        lease: &LeaseSettings,
    ) -> Result<Tx> {
        begin_bill_run(pool, tenant, lease).await
    }

    /// The outbox relay's role may read and mark every tenant's outbox rows and nothing else.
    pub(crate) async fn begin_relay(pool: &PgPool) -> Result<Tx> {
        let mut tx = begin_write(pool).await?;
        sqlx::query("SELECT set_config('role', 'dotmac_relay', true)")
            .execute(&mut *tx)
            .await
            .during("switch to relay role")?;
        Ok(tx)
    }

    /// The platform operator's read of every tenant's registry row: the `dotmac_platform`
    /// role (migration 0016) may read every row of `tenants` and no other table.
    pub(crate) async fn begin_platform_read(pool: &PgPool) -> Result<Tx> {
        let mut tx = begin_write(pool).await?;
        sqlx::query("SELECT set_config('role', 'dotmac_platform', true)")
            .execute(&mut *tx)
            .await
            .during("switch to platform role")?;
        Ok(tx)
    }

    // Not every store binds money through the shared code; the sqlite twin is always used.
    #[allow(dead_code)]
    pub(crate) fn dec(value: Decimal) -> Decimal {
        value
    }

    pub(crate) fn get_dec(row: &PgRow, column: &'static str) -> Result<Decimal> {
        row.try_get(column).during("decode decimal")
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    // A failing unwrap is a failing test.
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::time::Duration;

    use dotmac_core::TenantId;

    use crate::db::LeaseSettings;
    use crate::rls_tests::{pool, postgres};

    async fn show(tx: &mut sqlx::PgConnection, setting: &str) -> String {
        sqlx::query_scalar("SELECT current_setting($1)")
            .bind(setting)
            .fetch_one(tx)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn bill_run_transactions_carry_the_lease_timeouts_and_only_they() {
        // One connection (as in the RLS tests), so the check after the commit sees its session.
        let Some(db) = postgres().await else { return };
        let pool = pool(&db);
        let lease = LeaseSettings::new(chrono::Duration::minutes(1))
            .with_lock_timeout(Duration::from_millis(1500))
            .with_idle_in_transaction_timeout(Duration::from_secs(20));
        let tenant = TenantId::new();
        let mut conn = pool.acquire().await.unwrap();
        let defaults = (
            show(&mut conn, "lock_timeout").await,
            show(&mut conn, "idle_in_transaction_session_timeout").await,
        );
        drop(conn);
        let mut tx = super::postgres::begin_bill_run(pool, tenant, &lease)
            .await
            .unwrap();
        assert_eq!(show(&mut tx, "lock_timeout").await, "1500ms");
        assert_eq!(
            show(&mut tx, "idle_in_transaction_session_timeout").await,
            "20s"
        );
        assert_eq!(show(&mut tx, "dotmac.tenant_id").await, tenant.to_string());
        assert_eq!(show(&mut tx, "role").await, "dotmac_app");
        tx.commit().await.unwrap();

        // Transaction-local: the pooled connection is back to the server's defaults, in a
        // bill run's read and in any other tenant transaction.
        let mut conn = pool.acquire().await.unwrap();
        let after = (
            show(&mut conn, "lock_timeout").await,
            show(&mut conn, "idle_in_transaction_session_timeout").await,
        );
        assert_eq!(after, defaults);
        drop(conn);
        let mut read = super::postgres::begin_bill_run_read(pool, tenant, &lease)
            .await
            .unwrap();
        assert_eq!(show(&mut read, "lock_timeout").await, "1500ms");
        read.commit().await.unwrap();
        let mut other = super::postgres::begin_tenant(pool, tenant).await.unwrap();
        assert_eq!(show(&mut other, "lock_timeout").await, defaults.0);
        other.commit().await.unwrap();
    }
}
