//! What differs between the backends: transaction start, tenant scoping and money encoding.
//!
//! Store code is written once and expanded for each backend by [`crate::db::dispatch!`], which
//! brings one of these modules into scope under a common name; both modules therefore offer the
//! same items with the same names.

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    use std::str::FromStr;

    use dotmac_core::TenantId;
    use rust_decimal::Decimal;
    use sqlx::sqlite::SqliteRow;
    use sqlx::{Row, Sqlite, SqlitePool, Transaction};

    use crate::error::{Context, Result, SqlError};

    pub(crate) type Tx = Transaction<'static, Sqlite>;
    pub(crate) type DbRow = SqliteRow;
    pub(crate) const IS_POSTGRES: bool = false;
    pub(crate) type Db = Sqlite;
    pub(crate) use crate::billing::sqlite as billing;
    pub(crate) use crate::billrun::sqlite as billrun;
    pub(crate) use crate::docs::sqlite as docs;
    pub(crate) use crate::keyed::sqlite as keyed;
    pub(crate) use crate::numbers::sqlite as numbers;
    pub(crate) use crate::outbox::sqlite as outbox;
    pub(crate) use crate::tenants::sqlite as tenants;
    pub(crate) use crate::usage::sqlite as usage;

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

    /// Reads need no lock; the snapshot of a deferred transaction is enough.
    pub(crate) async fn begin_read(pool: &SqlitePool, _tenant: TenantId) -> Result<Tx> {
        pool.begin().await.during("begin transaction")
    }

    /// Cross-tenant outbox relay.
    pub(crate) async fn begin_relay(pool: &SqlitePool) -> Result<Tx> {
        begin_write(pool).await
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

    use crate::error::{Context, Result};

    pub(crate) type Tx = Transaction<'static, Postgres>;
    pub(crate) type DbRow = PgRow;
    pub(crate) const IS_POSTGRES: bool = true;
    pub(crate) type Db = Postgres;
    pub(crate) use crate::billing::postgres as billing;
    pub(crate) use crate::billrun::postgres as billrun;
    pub(crate) use crate::docs::postgres as docs;
    pub(crate) use crate::keyed::postgres as keyed;
    pub(crate) use crate::numbers::postgres as numbers;
    pub(crate) use crate::outbox::postgres as outbox;
    pub(crate) use crate::tenants::postgres as tenants;
    pub(crate) use crate::usage::postgres as usage;

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

    /// The outbox relay's role may read and mark every tenant's outbox rows and nothing else.
    pub(crate) async fn begin_relay(pool: &PgPool) -> Result<Tx> {
        let mut tx = begin_write(pool).await?;
        sqlx::query("SELECT set_config('role', 'dotmac_relay', true)")
            .execute(&mut *tx)
            .await
            .during("switch to relay role")?;
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
