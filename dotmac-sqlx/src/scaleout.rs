//! Scale-out bill runs of the billing domain: workers (tasks, threads or processes sharing
//! one database) claim chunks of a run ([`Database::claim_chunk`](crate::Database::claim_chunk), `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), bill each subscription with dotmac-billing's [`bill_chunk`] (the same code as
//! [`BillingService::run_chunk`](dotmac_billing::BillingService::run_chunk)), and write all of
//! a chunk's documents, subscription states, consumed pending charges, invoice numbers and
//! outbox events in the one transaction that marks the chunk done.
//!
//! That transaction starts with the fence (the chunk must still be pending under this very
//! claim), so a worker that lost its lease writes nothing, and a worker killed before its
//! commit leaves nothing: its chunk is claimed again when the lease runs out. Subscriptions
//! keep their optimistic revision checks inside the chunk (a subscription changed since it was
//! read is skipped and counted as a conflict, the next run bills it), and documents keep their
//! idempotency keys, so a chunk or a whole run done twice issues nothing new.
//!
//! A customer whose billing fails with a domain error (an amount that overflows, a missing
//! plan, …) never blocks its chunk: [`bill_chunk`] leaves that customer out, the rest of the
//! chunk is written, and the failure goes to the outbox as a `billing.bill_run_item_failed`
//! event in the chunk's transaction, so the run completes. The customer's subscriptions are
//! unchanged, so the next run (a new [`SqlStore::plan_billing_run`]) bills them once the data
//! is fixed. Database errors still fail the chunk (it is claimed again after the lease).

use std::collections::HashMap;

use chrono::NaiveDate;
use dotmac_billing::internal::{
    BilledChunk, bill_chunk, chunk_commits, chunk_customers, record_chunk_at,
};
use dotmac_billing::{
    BillRunSummary, BillingFailure, BillingSettings, CustomerAccount, PendingCharge, Plan,
    Subscription,
};
use dotmac_core::{Clock, PlanId, SubscriptionId, TenantId};
use tracing::Instrument;
use uuid::Uuid;

use crate::billrun::{BillRunId, ChunkClaim};
use crate::db::{LeaseSettings, dispatch};
use crate::error::{Context, Result, SqlError};
use crate::store::SqlStore;

/// What one worker did over a run (the sum of the chunks it completed).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerReport {
    /// Chunks this worker completed.
    pub chunks: u32,
    /// Subscriptions in those chunks.
    pub subscriptions: usize,
    /// Invoices issued.
    pub invoices: usize,
    /// Documents skipped because they had been issued before (a re-run).
    pub duplicates: usize,
    /// Subscriptions skipped because they changed after they were read (billed next run).
    pub conflicts: usize,
    /// Customers skipped because billing one of their subscriptions failed with a domain
    /// error (each also a `billing.bill_run_item_failed` outbox event); a later run bills
    /// them once their data is fixed.
    pub failures: Vec<BillingFailure>,
    /// Chunk writes that gave up waiting for a lock ([`SqlError::LockTimeout`]: another
    /// transaction, such as a frozen worker's, held the tenant's invoice counter) and were
    /// tried again.
    pub lock_timeouts: u32,
}

/// The fixed inputs of one worker's share of a bill run.
#[derive(Debug, Clone, Copy)]
pub struct BillWorker<'a> {
    /// The tenant.
    pub tenant: TenantId,
    /// The run (planned with [`SqlStore::plan_billing_run`]).
    pub run: BillRunId,
    /// Bill everything due on or before this date.
    pub as_of: NaiveDate,
    /// The tenant's plans.
    pub plans: &'a HashMap<PlanId, Plan>,
    /// The tenant's billing settings (rounding, taxes, payment terms).
    pub settings: &'a BillingSettings,
    /// This worker's name (unique among live workers: it fences the chunk writes).
    pub worker: &'a str,
    /// How long a claimed chunk stays this worker's (a chunk not completed by then is claimed
    /// by another worker), and the lock and idle timeouts of its transactions, so that a
    /// frozen worker never stalls the others for more than a lease. A `chrono::Duration`
    /// converts with the default timeouts: `lease: Duration::minutes(5).into()`.
    pub lease: LeaseSettings,
}

impl SqlStore {
    /// Plans a bill run over every subscription of the tenant, in chunks of about
    /// `chunk_size`, for [`SqlStore::run_bill_worker`]s to claim. Returns the number of
    /// chunks.
    ///
    /// A customer's subscriptions always share a chunk (a chunk grows past `chunk_size` to the
    /// end of its last customer): pending charges belong to the customer, and one worker
    /// puts each on exactly one of that customer's invoices. Two workers billing the same
    /// customer at once would both try to (the store refuses the second,
    /// [`BillingError::PendingChargeTaken`](dotmac_billing::BillingError::PendingChargeTaken),
    /// and its subscription would wait for the next run).
    ///
    /// # Errors
    ///
    /// [`SqlError::InvalidOption`] for a chunk size of 0 (or too many chunks),
    /// [`SqlError::Duplicate`] if the run exists, [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.plan_billing_run", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    pub async fn plan_billing_run(
        &self,
        tenant: TenantId,
        run: BillRunId,
        as_of: NaiveDate,
        chunk_size: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u32> {
        if chunk_size == 0 {
            return Err(crate::SqlError::InvalidOption {
                option: "chunk_size",
                reason: "chunks need at least one subscription".into(),
            });
        }
        let rows: Vec<(Uuid, Uuid)> = dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let rows = sqlx::query_as(
                "SELECT customer_id, subscription_id FROM billing_subscriptions \
                 WHERE tenant_id = $1 ORDER BY customer_id, subscription_id",
            )
            .bind(tenant.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .during("list subscriptions")?;
            tx.commit().await.during("end read")?;
            rows
        });
        let chunks = customer_chunks(&rows, chunk_size);
        self.db
            .plan_bill_run_chunks(tenant, run, as_of, &chunks, now)
            .await
    }

    /// Loads customer accounts and subscriptions in bulk, in one transaction (multi-row
    /// inserts): for a migration from another billing system, or to set up a large test.
    /// Accounts are inserted or replaced; a subscription id that exists fails the whole call
    /// and nothing is written.
    ///
    /// On PostgreSQL, run `ANALYZE billing_subscriptions, billing_accounts` once a large
    /// import is done (not after every call): until the statistics know the new rows, the
    /// planner estimates a freshly imported tenant at a row or two, and a bill run's chunk
    /// reads take 70–110 ms instead of 2 ms until autovacuum catches up.
    ///
    /// # Errors
    ///
    /// [`SqlError::Duplicate`](crate::SqlError::Duplicate) for a subscription that exists,
    /// [`SqlError::InvalidInput`](crate::SqlError::InvalidInput) for a record holding a NUL
    /// character (checked before any SQL runs), [`SqlError::Json`](crate::SqlError::Json),
    /// [`SqlError::Database`](crate::SqlError::Database).
    #[tracing::instrument(name = "dotmac.store.import_subscriptions", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), accounts = accounts.len(), subscriptions = subscriptions.len()))]
    pub async fn import_subscriptions(
        &self,
        tenant: TenantId,
        accounts: &[CustomerAccount],
        subscriptions: &[Subscription],
    ) -> Result<()> {
        // Serialised once and checked for what the database cannot store, before any SQL.
        let accounts = accounts
            .iter()
            .map(|a| Ok((a.customer.as_uuid(), crate::input::document("account", a)?)))
            .collect::<Result<Vec<_>>>()?;
        let subs = subscriptions
            .iter()
            .map(|s| {
                Ok((
                    s.id.as_uuid(),
                    s.customer.as_uuid(),
                    i64::try_from(s.revision()).unwrap_or(i64::MAX),
                    crate::input::document(
                        "subscription",
                        &crate::billing::rows::SubscriptionRow::from(s),
                    )?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            // 5 parameters a row: 1,000 rows a statement stays under every bind limit.
            for chunk in accounts.chunks(1000) {
                let mut query = sqlx::QueryBuilder::<d::Db>::new(
                    "INSERT INTO billing_accounts (tenant_id, customer_id, body) ",
                );
                query.push_values(chunk, |mut row, (customer, body)| {
                    row.push_bind(tenant.as_uuid())
                        .push_bind(*customer)
                        .push_bind(sqlx::types::Json(body.clone()));
                });
                query.push(" ON CONFLICT (tenant_id, customer_id) DO UPDATE SET body = excluded.body");
                query.build().execute(&mut *tx).await.during("import accounts")?;
            }
            for chunk in subs.chunks(1000) {
                let mut query = sqlx::QueryBuilder::<d::Db>::new(
                    "INSERT INTO billing_subscriptions (tenant_id, subscription_id, customer_id, \
                     revision, body) ",
                );
                query.push_values(chunk, |mut row, (id, customer, revision, body)| {
                    row.push_bind(tenant.as_uuid())
                        .push_bind(*id)
                        .push_bind(*customer)
                        .push_bind(*revision)
                        .push_bind(sqlx::types::Json(body.clone()));
                });
                match query.build().execute(&mut *tx).await {
                    Err(e) if crate::error::is_unique_violation(&e) => {
                        return Err(crate::SqlError::Duplicate {
                            what: "subscription",
                            key: e.to_string(),
                        });
                    }
                    other => other.during("import subscriptions")?,
                };
            }
            tx.commit().await.during("commit import")?;
        });
        Ok(())
    }

    /// Claims chunks of `job.run` one after another and bills each with
    /// [`SqlStore::bill_claimed_chunk`], until no chunk is claimable (the run is done, or the
    /// rest is leased to live workers). Run as many workers as wanted, in tasks, threads or
    /// processes: the result is the same as one worker's.
    ///
    /// While a chunk's write transaction runs, the worker already claims and reads its next
    /// chunk, so that one worker keeps the database busy. That is safe because chunks never
    /// share a customer ([`SqlStore::plan_billing_run`]): nothing the write changes is read
    /// for the next chunk. If the write fails, the next chunk stays claimed until its lease
    /// ends and then goes to another worker, as after a crash.
    ///
    /// A write whose wait for a lock outlasts the lease's lock timeout
    /// ([`SqlError::LockTimeout`]: a frozen worker holds the tenant's invoice counter) wrote
    /// nothing and is tried again, reading the chunk afresh, while the lease lasts; the
    /// frozen worker's session ends after its idle-in-transaction timeout
    /// ([`LeaseSettings`]), so the run goes on within one lease.
    ///
    /// # Errors
    ///
    /// The first error of a chunk ([`SqlError::LeaseLost`] when this worker was too slow and
    /// its chunk went to another worker, [`SqlError::LockTimeout`] when the lease ran out
    /// while it waited; nothing of that chunk was written).
    pub async fn run_bill_worker(
        &self,
        job: &BillWorker<'_>,
        clock: &dyn Clock,
    ) -> Result<WorkerReport> {
        // A span of its own (not `#[instrument]`): the counts are recorded on this handle once
        // known, whatever the subscriber's idea of the current span.
        let span = tracing::debug_span!(
            "dotmac.store.run_bill_worker",
            tenant = %job.tenant,
            backend = self.db.backend_name(),
            chunks = tracing::field::Empty,
            invoices = tracing::field::Empty,
        );
        let report = self
            .work_chunks(job, clock)
            .instrument(span.clone())
            .await?;
        span.record("chunks", report.chunks);
        span.record("invoices", report.invoices);
        Ok(report)
    }

    /// The loop of [`SqlStore::run_bill_worker`].
    async fn work_chunks(&self, job: &BillWorker<'_>, clock: &dyn Clock) -> Result<WorkerReport> {
        let mut report = WorkerReport::default();
        let mut next = self.claim_and_load(job, clock).await?;
        while let Some((claim, chunk)) = next {
            let (billed, following) = futures_util::future::join(
                self.bill_until_written(&claim, chunk, job, clock),
                self.claim_and_load(job, clock),
            )
            .await;
            let (summary, lock_timeouts) = billed;
            report.lock_timeouts = report.lock_timeouts.saturating_add(lock_timeouts);
            let summary = summary?;
            next = following?;
            report.chunks += 1;
            report.subscriptions += summary.subscriptions;
            report.invoices += summary.invoices;
            report.duplicates += summary.duplicates;
            report.conflicts += summary.conflicts;
            report.failures.extend(summary.failures);
        }
        Ok(report)
    }

    /// Bills a chunk already read and writes it; after a [`SqlError::LockTimeout`] (another
    /// transaction, such as a frozen worker's, held the tenant's invoice counter; nothing was
    /// written) reads and bills it again while the lease lasts. A frozen worker's session
    /// ends after its idle-in-transaction timeout, shorter than the lease, and the counter
    /// with it. Also returns how many writes timed out.
    ///
    /// "While the lease lasts" by the clock, and at most as many times as lock timeouts fit
    /// in the lease: each attempt waited that long, so a clock that stands still (a test's)
    /// cannot keep the worker retrying for ever.
    async fn bill_until_written(
        &self,
        claim: &ChunkClaim,
        chunk: LoadedChunk,
        job: &BillWorker<'_>,
        clock: &dyn Clock,
    ) -> (Result<BillRunSummary>, u32) {
        let lease = &claim.lease;
        let lease_ms = lease.lease().to_std().unwrap_or_default().as_millis();
        let wait_ms = lease.lock_timeout().as_millis().max(1);
        let attempts = u32::try_from(lease_ms.div_ceil(wait_ms)).unwrap_or(u32::MAX);
        let mut written = self.bill_loaded_chunk(claim, chunk, job, clock).await;
        let mut lock_timeouts: u32 = 0;
        while matches!(written, Err(SqlError::LockTimeout { .. })) {
            lock_timeouts = lock_timeouts.saturating_add(1);
            if lock_timeouts >= attempts || clock.now() >= claim.lease_expires_at {
                break;
            }
            written = self.bill_claimed_chunk(claim, job, clock).await;
        }
        (written, lock_timeouts)
    }

    /// Claims the next claimable chunk of `job.run` and reads it; `None` when there is none.
    async fn claim_and_load(
        &self,
        job: &BillWorker<'_>,
        clock: &dyn Clock,
    ) -> Result<Option<(ChunkClaim, LoadedChunk)>> {
        let Some(claim) = self
            .db
            .claim_chunk(job.tenant, job.run, job.worker, clock.now(), job.lease)
            .await?
        else {
            return Ok(None);
        };
        let chunk = self.load_chunk(&claim).await?;
        Ok(Some((claim, chunk)))
    }

    /// Bills one claimed chunk: reads its subscriptions, their customers' accounts and
    /// pending charges, computes every subscription's documents with [`bill_chunk`], and writes
    /// them (numbered gaplessly), the new subscription states, the consumed charges and the
    /// outbox events in one transaction that also marks the chunk done. A customer whose
    /// billing fails with a domain error is left out and reported
    /// ([`BillRunSummary::failures`], and a `billing.bill_run_item_failed` outbox event); the
    /// chunk still completes.
    ///
    /// # Errors
    ///
    /// [`SqlError::LeaseLost`] if the chunk is no longer this claim's (nothing is written),
    /// [`SqlError::Billing`] for a per-commit error of `record_chunk` (nothing is written; the
    /// chunk is claimable again after the lease; a customer's domain error while billing is not
    /// one: it is left out and reported), [`SqlError::LockTimeout`] if the tenant's invoice
    /// counter stayed locked longer than the claim's lock timeout (nothing is written; call again
    /// while the lease lasts), [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.bill_claimed_chunk", level = "debug", skip_all, fields(tenant = %claim.tenant, backend = self.db.backend_name(), chunk = claim.chunk_no, subscriptions = claim.subscriptions.len()))]
    pub async fn bill_claimed_chunk(
        &self,
        claim: &ChunkClaim,
        job: &BillWorker<'_>,
        clock: &dyn Clock,
    ) -> Result<BillRunSummary> {
        let chunk = self.load_chunk(claim).await?;
        self.bill_loaded_chunk(claim, chunk, job, clock).await
    }

    /// The billing and the write of [`SqlStore::bill_claimed_chunk`], for a chunk already read.
    async fn bill_loaded_chunk(
        &self,
        claim: &ChunkClaim,
        chunk: LoadedChunk,
        job: &BillWorker<'_>,
        clock: &dyn Clock,
    ) -> Result<BillRunSummary> {
        // As in `run_bill_worker`: a handle to record the counts on after the commit.
        let span = tracing::debug_span!(
            "dotmac.store.write_chunk",
            tenant = %claim.tenant,
            backend = self.db.backend_name(),
            chunk = claim.chunk_no,
            invoices = tracing::field::Empty,
            events = tracing::field::Empty,
        );
        let summary = self
            .write_loaded_chunk(claim, chunk, job, clock)
            .instrument(span.clone())
            .await?;
        span.record("invoices", summary.invoices);
        span.record("events", summary.events.len());
        Ok(summary)
    }

    /// The work of [`SqlStore::bill_loaded_chunk`].
    async fn write_loaded_chunk(
        &self,
        claim: &ChunkClaim,
        (page, accounts, pending): LoadedChunk,
        job: &BillWorker<'_>,
        clock: &dyn Clock,
    ) -> Result<BillRunSummary> {
        let tenant = claim.tenant;
        let BilledChunk {
            mut items,
            failures,
        } = bill_chunk(
            &page,
            job.plans,
            &accounts,
            &pending,
            job.as_of,
            job.settings,
        );
        let mut summary = BillRunSummary {
            subscriptions: page.len(),
            cursor: page.last().map(|s| s.id),
            ..BillRunSummary::default()
        };
        drop(page);
        // The commits move to the store instead of being copied, each with its outbox events
        // (as the service's bill run writes them); `record_chunk_at` reads only the rest of
        // each item.
        let now = clock.now();
        let commits = chunk_commits(tenant, now, &mut items);
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_bill_run(pool, tenant, &claim.lease).await?;
            d::billrun::fence(&mut tx, claim, now).await?;
            // Reserves the invoice numbers after every other write of the batch: from there
            // to the commit the tenant's counter row is locked, and only the invoices and
            // their outbox events (which carry the numbers) are written in between.
            let results = d::billing::apply_batch(&mut tx, tenant, commits).await?;
            record_chunk_at(tenant, now, &items, results, &mut summary)?;
            // The commits wrote their own events; the failures' are written here.
            let written = summary.events.len();
            summary.record_failures(tenant, clock, failures);
            let failed: Vec<dotmac_core::outbox::OutboxEvent> = summary
                .events
                .get(written..)
                .unwrap_or_default()
                .iter()
                .cloned()
                .map(dotmac_core::outbox::OutboxEvent::new)
                .collect();
            d::outbox::insert_core(&mut tx, tenant, &failed).await?;
            testing::before_chunk_commit();
            tx.commit().await.during("commit bill run chunk")?;
        });
        Ok(summary)
    }

    /// A chunk's subscriptions (in id order) and their customers' accounts and pending
    /// charges, read in one snapshot.
    #[tracing::instrument(name = "dotmac.store.load_chunk", level = "debug", skip_all, fields(tenant = %claim.tenant, backend = self.db.backend_name(), chunk = claim.chunk_no, subscriptions = claim.subscriptions.len()))]
    async fn load_chunk(&self, claim: &ChunkClaim) -> Result<LoadedChunk> {
        let tenant = claim.tenant;
        let ids: Vec<Uuid> = claim.subscriptions.iter().map(|s| s.as_uuid()).collect();
        let (subs, accounts, pending) = dispatch!(self.db, pool, d => {
            // With the lease's timeouts too: a frozen worker's open snapshot is ended as well.
            let mut tx = d::begin_bill_run_read(pool, tenant, &claim.lease).await?;
            let subs: Vec<crate::billing::rows::SubscriptionRow> = d::billing::bodies_in(
                &mut tx,
                "SELECT body FROM billing_subscriptions",
                tenant,
                "subscription_id",
                &ids,
                "ORDER BY subscription_id",
            )
            .await?;
            let subs: Vec<Subscription> = subs.into_iter().map(Subscription::from).collect();
            let customers: Vec<Uuid> =
                chunk_customers(&subs).into_iter().map(|c| c.as_uuid()).collect();
            let accounts: Vec<CustomerAccount> = d::billing::bodies_in(
                &mut tx,
                "SELECT body FROM billing_accounts",
                tenant,
                "customer_id",
                &customers,
                "",
            )
            .await?;
            let pending: Vec<PendingCharge> = d::billing::bodies_in(
                &mut tx,
                "SELECT body FROM billing_pending_charges",
                tenant,
                "customer_id",
                &customers,
                "AND NOT consumed ORDER BY seq",
            )
            .await?;
            tx.commit().await.during("end read")?;
            (subs, accounts, pending)
        });
        Ok((subs, accounts, pending))
    }
}

#[doc(hidden)]
pub mod testing {
    //! A test-only pause point: tests freeze a worker (in a child process) at the worst
    //! moment, inside its write transaction with the tenant's invoice counter locked.

    use std::sync::OnceLock;

    static BEFORE_CHUNK_COMMIT: OnceLock<fn()> = OnceLock::new();

    /// Runs `hook` in every chunk write of this process, after the last statement and
    /// before the commit. Only the first call takes effect. Not for production use.
    pub fn set_before_chunk_commit_hook(hook: fn()) {
        let _ = BEFORE_CHUNK_COMMIT.set(hook);
    }

    pub(crate) fn before_chunk_commit() {
        if let Some(hook) = BEFORE_CHUNK_COMMIT.get() {
            hook();
        }
    }
}

/// A chunk as read: its subscriptions (in id order) and their customers' accounts and pending
/// charges.
type LoadedChunk = (Vec<Subscription>, Vec<CustomerAccount>, Vec<PendingCharge>);

/// Splits `(customer, subscription)` rows, sorted by customer, into chunks of at least
/// `chunk_size` subscriptions (the last may be smaller) that never split a customer.
fn customer_chunks(rows: &[(Uuid, Uuid)], chunk_size: usize) -> Vec<Vec<SubscriptionId>> {
    let mut chunks = Vec::new();
    let mut current: Vec<SubscriptionId> = Vec::with_capacity(chunk_size);
    let mut last_customer = None;
    for &(customer, subscription) in rows {
        if current.len() >= chunk_size && last_customer != Some(customer) {
            chunks.push(std::mem::replace(
                &mut current,
                Vec::with_capacity(chunk_size),
            ));
        }
        current.push(SubscriptionId::from_uuid(subscription));
        last_customer = Some(customer);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn chunks_never_split_a_customer() {
        let id = |n: u128| Uuid::from_u128(n);
        // Customers 1 (3 subscriptions), 2 (1), 3 (2), 4 (1).
        let rows = [
            (id(1), id(11)),
            (id(1), id(12)),
            (id(1), id(13)),
            (id(2), id(21)),
            (id(3), id(31)),
            (id(3), id(32)),
            (id(4), id(41)),
        ];
        let chunks = customer_chunks(&rows, 2);
        let as_numbers: Vec<Vec<u128>> = chunks
            .iter()
            .map(|c| c.iter().map(|s| s.as_uuid().as_u128()).collect())
            .collect();
        assert_eq!(
            as_numbers,
            vec![vec![11, 12, 13], vec![21, 31, 32], vec![41]]
        );
        assert_eq!(customer_chunks(&rows, 100).len(), 1);
        assert!(customer_chunks(&[], 3).is_empty());
    }
}
