//! Gapless per-tenant document numbers (invoice numbers).
//!
//! The counter row is incremented inside the transaction that writes the numbered documents:
//! the row lock queues concurrent bill runs of one tenant, and a rollback returns the numbers,
//! so issued numbers have no gaps and no duplicates. Because that lock is held until the
//! commit, writers reserve as late as they can: after every other write of the transaction,
//! just before the inserts that carry the numbers. (Reserving ranges ahead would shorten it
//! further, but a worker that died holding a range would leave a gap.)

use dotmac_core::TenantId;
use sqlx::Row;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::error::{Context, Result, SqlError};
use crate::input;

for_each_dialect! {
    /// Reserves `count` consecutive numbers of `series` in the open transaction and returns the
    /// first (numbers start at 1).
    pub(crate) async fn reserve(
        tx: &mut Tx,
        tenant: TenantId,
        series: &str,
        count: u32,
    ) -> Result<i64> {
        let count = i64::from(count);
        let row = sqlx::query(
            "INSERT INTO invoice_counters (tenant_id, series, last_number) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, series) \
             DO UPDATE SET last_number = invoice_counters.last_number + excluded.last_number \
             RETURNING last_number",
        )
        .bind(tenant.as_uuid())
        .bind(series)
        .bind(count)
        .fetch_one(&mut **tx)
        .await
        .during("reserve invoice numbers")?;
        let last: i64 = row.try_get("last_number").during("reserve invoice numbers")?;
        Ok(last - count + 1)
    }
}

impl Database {
    /// Reserves the next `count` numbers of a tenant's `series` in a transaction of their own
    /// and returns the first. Stores that number documents call the same code inside the
    /// document's transaction instead, which is what keeps numbering gapless.
    ///
    /// # Errors
    ///
    /// [`SqlError::InvalidOption`] for a count of 0, [`SqlError::InvalidInput`] for a NUL
    /// character or a series over 1,024 bytes, [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.reserve_numbers", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name(), count = count))]
    pub async fn reserve_numbers(&self, tenant: TenantId, series: &str, count: u32) -> Result<i64> {
        if count == 0 {
            return Err(SqlError::InvalidOption {
                option: "count",
                reason: "reserve at least one number".into(),
            });
        }
        input::key("number series", series)?;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            let first = d::numbers::reserve(&mut tx, tenant, series, count).await?;
            tx.commit().await.during("commit number reservation")?;
            Ok(first)
        })
    }

    /// The last number issued in a tenant's `series` (0 if none).
    ///
    /// # Errors
    ///
    /// [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.last_number", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name()))]
    pub async fn last_number(&self, tenant: TenantId, series: &str) -> Result<i64> {
        input::key("number series", series)?;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let last: Option<i64> = sqlx::query_scalar(
                "SELECT last_number FROM invoice_counters WHERE tenant_id = $1 AND series = $2",
            )
            .bind(tenant.as_uuid())
            .bind(series)
            .fetch_optional(&mut *tx)
            .await
            .during("read invoice counter")?;
            tx.commit().await.during("end read")?;
            Ok(last.unwrap_or(0))
        })
    }
}
