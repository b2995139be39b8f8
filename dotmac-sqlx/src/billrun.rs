//! The chunk-claim machinery of scale-out bill runs: a run's subscriptions split into chunks
//! ([`SqlStore::plan_billing_run`](crate::SqlStore::plan_billing_run)) that workers claim under
//! a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), and the fence that the one transaction
//! writing a chunk's documents starts with ([`crate::scaleout`] bills and writes the chunk).
//!
//! A worker that dies mid-chunk has written nothing (its transaction never committed); when
//! its lease runs out another worker claims the chunk again. A worker that comes back after
//! losing its lease gets [`SqlError::LeaseLost`] and writes nothing either, so each
//! subscription is billed exactly once per run whatever the number of workers.

use chrono::{DateTime, NaiveDate, Utc};
use dotmac_core::{SubscriptionId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Database, LeaseSettings, dispatch, for_each_dialect};
use crate::error::{Context, Result, SqlError, is_unique_violation};
use crate::input;

dotmac_core::define_id! {
    /// A bill run: one pass over a tenant's due subscriptions.
    BillRunId
}

/// A chunk of a bill run claimed by a worker. Bill it with
/// [`SqlStore::bill_claimed_chunk`](crate::SqlStore::bill_claimed_chunk) before the lease runs
/// out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkClaim {
    /// The tenant.
    pub tenant: TenantId,
    /// The run.
    pub run: BillRunId,
    /// The chunk's position in the run.
    pub chunk_no: i32,
    /// The subscriptions to bill.
    pub subscriptions: Vec<SubscriptionId>,
    /// The worker that holds the lease.
    pub worker: String,
    /// Which claim of this chunk this is (1 for the first; more after a worker died).
    pub attempt: i32,
    /// When the lease ends.
    pub lease_expires_at: DateTime<Utc>,
    /// The lease it was claimed under, whose timeouts the chunk's write transaction runs with.
    pub lease: LeaseSettings,
}

/// How far a run has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillRunProgress {
    /// Chunks in the run.
    pub chunks: u32,
    /// Chunks whose invoices are written.
    pub done: u32,
}

impl BillRunProgress {
    /// True when every chunk is done.
    pub fn is_complete(&self) -> bool {
        self.done == self.chunks
    }
}

/// The chunk's subscriptions, as stored.
#[derive(Serialize, Deserialize)]
struct ChunkItems(Vec<Uuid>);

for_each_dialect! {
        /// The fence of a chunk's write: marks the chunk done if it is still pending under
        /// this very claim. The UPDATE takes the row lock, so a concurrent re-claim waits for
        /// this transaction or fails it.
        ///
        /// [`SqlError::LeaseLost`] otherwise.
        pub(crate) async fn fence(tx: &mut Tx, claim: &ChunkClaim, now: DateTime<Utc>) -> Result<()> {
            let fenced = sqlx::query(
                "UPDATE bill_run_chunks SET status = 'done', completed_at = $5 \
                 WHERE tenant_id = $1 AND run_id = $2 AND chunk_no = $3 AND status = 'pending' \
                   AND claimed_by = $4 AND attempts = $6",
            )
            .bind(claim.tenant.as_uuid())
            .bind(claim.run.as_uuid())
            .bind(claim.chunk_no)
            .bind(&claim.worker)
            .bind(now)
            .bind(claim.attempt)
            .execute(&mut **tx)
            .await
            .during("fence bill run chunk")?
            .rows_affected();
            if fenced != 1 {
                return Err(SqlError::LeaseLost {
                    run: claim.run.to_string(),
                    chunk_no: claim.chunk_no,
                });
            }
            Ok(())
        }
}

impl Database {
    /// Plans a bill run whose chunks are given: each inner list is one chunk's subscriptions.
    pub(crate) async fn plan_bill_run_chunks(
        &self,
        tenant: TenantId,
        run: BillRunId,
        as_of: NaiveDate,
        chunks: &[Vec<SubscriptionId>],
        now: DateTime<Utc>,
    ) -> Result<u32> {
        let chunks: Vec<ChunkItems> = chunks
            .iter()
            .map(|c| ChunkItems(c.iter().map(|s| s.as_uuid()).collect()))
            .collect();
        let chunk_count = i32::try_from(chunks.len()).map_err(|_| SqlError::InvalidOption {
            option: "chunk_size",
            reason: "too many chunks; use a larger chunk size".into(),
        })?;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            let created = sqlx::query(
                "INSERT INTO bill_runs (tenant_id, run_id, as_of, chunk_count, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(tenant.as_uuid())
            .bind(run.as_uuid())
            .bind(as_of)
            .bind(chunk_count)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match created {
                Err(e) if is_unique_violation(&e) => Err(SqlError::Duplicate {
                    what: "bill run",
                    key: run.to_string(),
                }),
                other => other.map(|_| ()).during("create bill run"),
            }?;
            for (chunk_no, items) in (0_i32..).zip(&chunks) {
                sqlx::query(
                    "INSERT INTO bill_run_chunks (tenant_id, run_id, chunk_no, items, status) \
                     VALUES ($1, $2, $3, $4, 'pending')",
                )
                .bind(tenant.as_uuid())
                .bind(run.as_uuid())
                .bind(chunk_no)
                .bind(Json(items))
                .execute(&mut *tx)
                .await
                .during("create bill run chunk")?;
            }
            tx.commit().await.during("commit bill run")?;
            Ok(chunk_count.unsigned_abs())
        })
    }

    /// Claims the lowest pending chunk of a run whose lease is free (never claimed, or its
    /// worker's lease ended by `now`), for `lease` (a `chrono::Duration` gets the default
    /// timeouts of [`LeaseSettings`]). `None` when no chunk is claimable: the run is done, or
    /// the remaining chunks are leased to live workers.
    ///
    /// # Errors
    ///
    /// [`SqlError::InvalidInput`] for a NUL character or an oversize worker name,
    /// [`SqlError::InvalidOption`] for a lease that is not positive (or ends after the year
    /// 262,000) or timeouts [`LeaseSettings`] refuses, [`SqlError::Corrupt`] for an unreadable
    /// chunk, [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.claim_chunk", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name()))]
    pub async fn claim_chunk(
        &self,
        tenant: TenantId,
        run: BillRunId,
        worker: &str,
        now: DateTime<Utc>,
        lease: impl Into<LeaseSettings>,
    ) -> Result<Option<ChunkClaim>> {
        input::text("worker name", worker)?;
        let lease = lease.into();
        lease.check()?;
        let expires =
            now.checked_add_signed(lease.lease())
                .ok_or_else(|| SqlError::InvalidOption {
                    option: "lease",
                    reason: format!("{} from {now} is past the end of time", lease.lease()),
                })?;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_bill_run(pool, tenant, &lease).await?;
            let sql = if d::IS_POSTGRES {
                "UPDATE bill_run_chunks SET claimed_by = $3, lease_expires_at = $4, \
                   attempts = attempts + 1 \
                 WHERE tenant_id = $1 \
                   AND (run_id, chunk_no) = (SELECT run_id, chunk_no FROM bill_run_chunks \
                   WHERE tenant_id = $1 AND run_id = $2 AND status = 'pending' \
                     AND (lease_expires_at IS NULL OR lease_expires_at <= $5) \
                   ORDER BY chunk_no LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING chunk_no, items, attempts"
            } else {
                "UPDATE bill_run_chunks SET claimed_by = $3, lease_expires_at = $4, \
                   attempts = attempts + 1 \
                 WHERE tenant_id = $1 \
                   AND (run_id, chunk_no) = (SELECT run_id, chunk_no FROM bill_run_chunks \
                   WHERE tenant_id = $1 AND run_id = $2 AND status = 'pending' \
                     AND (lease_expires_at IS NULL OR lease_expires_at <= $5) \
                   ORDER BY chunk_no LIMIT 1) \
                 RETURNING chunk_no, items, attempts"
            };
            let row = sqlx::query(sql)
                .bind(tenant.as_uuid())
                .bind(run.as_uuid())
                .bind(worker)
                .bind(expires)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .during("claim bill run chunk")?;
            tx.commit().await.during("commit chunk claim")?;
            let Some(row) = row else { return Ok(None) };
            let items: Json<ChunkItems> = row.try_get("items").during("read chunk")?;
            Ok(Some(ChunkClaim {
                tenant,
                run,
                chunk_no: row.try_get("chunk_no").during("read chunk")?,
                subscriptions: items.0.0.into_iter().map(SubscriptionId::from_uuid).collect(),
                worker: worker.to_owned(),
                attempt: row.try_get("attempts").during("read chunk")?,
                lease_expires_at: expires,
                lease,
            }))
        })
    }

    /// How many chunks of a run are done.
    ///
    /// # Errors
    ///
    /// [`SqlError::NotFound`] for an unknown run, [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.bill_run_progress", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name()))]
    pub async fn bill_run_progress(
        &self,
        tenant: TenantId,
        run: BillRunId,
    ) -> Result<BillRunProgress> {
        dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let chunks: Option<i32> = sqlx::query_scalar(
                "SELECT chunk_count FROM bill_runs WHERE tenant_id = $1 AND run_id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(run.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .during("read bill run")?;
            let done: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM bill_run_chunks \
                 WHERE tenant_id = $1 AND run_id = $2 AND status = 'done'",
            )
            .bind(tenant.as_uuid())
            .bind(run.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .during("read bill run")?;
            tx.commit().await.during("end read")?;
            let chunks = chunks.ok_or_else(|| SqlError::NotFound {
                entity: "bill run",
                id: run.to_string(),
            })?;
            Ok(BillRunProgress {
                chunks: chunks.unsigned_abs(),
                done: u32::try_from(done).unwrap_or(u32::MAX),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_complete_only_when_all_done() {
        assert!(BillRunProgress { chunks: 2, done: 2 }.is_complete());
        assert!(!BillRunProgress { chunks: 2, done: 1 }.is_complete());
        assert!(BillRunProgress { chunks: 0, done: 0 }.is_complete());
    }
}
