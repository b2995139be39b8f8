//! Scale-out bill runs: a run's subscriptions split into chunks that workers claim under a
//! lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), and a chunk's invoices, lines, numbers and
//! outbox events written in the one transaction that marks the chunk done.
//!
//! A worker that dies mid-chunk has written nothing (its transaction never committed); when
//! its lease runs out another worker claims the chunk again. A worker that comes back after
//! losing its lease gets [`SqlError::LeaseLost`] and writes nothing either, so each
//! subscription is billed exactly once per run whatever the number of workers.

use chrono::{DateTime, NaiveDate, Utc};
use dotmac_core::{Currency, CustomerId, InvoiceId, Money, SubscriptionId, TenantId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::error::{Context, Result, SqlError, is_unique_violation};
use crate::outbox::OutboxEvent;

dotmac_core::define_id! {
    /// A bill run: one pass over a tenant's due subscriptions.
    BillRunId
}

/// A chunk of a bill run claimed by a worker. Bill its subscriptions, then hand the result to
/// [`Database::complete_chunk`] before the lease runs out.
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

/// One invoice line as stored: exact amounts in the invoice's currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceLineRecord {
    /// What is charged.
    pub description: String,
    /// How many units.
    pub quantity: Decimal,
    /// The price of one unit.
    pub unit_price: Decimal,
    /// The line's amount (already rounded by the domain at its one rounding point).
    pub amount: Decimal,
}

/// An invoice to store: the columns that storage indexes and constrains, plus the domain's own
/// serialised invoice in `body`, so that the storage layer never re-derives billing logic.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceRecord {
    /// The invoice id.
    pub id: InvoiceId,
    /// The customer billed.
    pub customer: CustomerId,
    /// The subscription billed (one invoice per subscription per run).
    pub subscription: Option<SubscriptionId>,
    /// The issue date.
    pub issued_on: NaiveDate,
    /// The total, exact.
    pub total: Money,
    /// A status name (`"open"`, `"paid"`, …) owned by the domain.
    pub status: String,
    /// The lines.
    pub lines: Vec<InvoiceLineRecord>,
    /// The domain's invoice as JSON.
    pub body: serde_json::Value,
}

/// A stored invoice: the record plus what storage assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInvoice {
    /// The invoice.
    pub record: InvoiceRecord,
    /// The number series.
    pub series: String,
    /// The gapless number within the tenant's series (from 1).
    pub number: i64,
    /// The optimistic-concurrency version (1 when written).
    pub version: i64,
    /// The run that wrote it, if any.
    pub run: Option<BillRunId>,
}

/// The chunk's subscriptions, as stored.
#[derive(Serialize, Deserialize)]
struct ChunkItems(Vec<Uuid>);

for_each_dialect! {
    shared {
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

        pub(crate) fn decode_invoice(row: &DbRow, lines: Vec<InvoiceLineRecord>) -> Result<StoredInvoice> {
            let currency: String = row.try_get("currency").during("read invoice")?;
            let currency = Currency::from_code(&currency)?;
            let body: Json<serde_json::Value> = row.try_get("body").during("read invoice")?;
            let run: Option<Uuid> = row.try_get("run_id").during("read invoice")?;
            let subscription: Option<Uuid> =
                row.try_get("subscription_id").during("read invoice")?;
            Ok(StoredInvoice {
                record: InvoiceRecord {
                    id: InvoiceId::from_uuid(row.try_get("invoice_id").during("read invoice")?),
                    customer: CustomerId::from_uuid(
                        row.try_get("customer_id").during("read invoice")?,
                    ),
                    subscription: subscription.map(SubscriptionId::from_uuid),
                    issued_on: row.try_get("issued_on").during("read invoice")?,
                    total: Money::new(get_dec(row, "total")?, currency),
                    status: row.try_get("status").during("read invoice")?,
                    lines,
                    body: body.0,
                },
                series: row.try_get("series").during("read invoice")?,
                number: row.try_get("number").during("read invoice")?,
                version: row.try_get("version").during("read invoice")?,
                run: run.map(BillRunId::from_uuid),
            })
        }

        pub(crate) fn decode_line(row: &DbRow) -> Result<InvoiceLineRecord> {
            Ok(InvoiceLineRecord {
                description: row.try_get("description").during("read invoice line")?,
                quantity: get_dec(row, "quantity")?,
                unit_price: get_dec(row, "unit_price")?,
                amount: get_dec(row, "amount")?,
            })
        }

        /// Reads invoices with their lines (one query for the invoices, one for all lines).
        pub(crate) async fn load_invoices(
            tx: &mut Tx,
            tenant: TenantId,
            invoice_rows: Vec<DbRow>,
        ) -> Result<Vec<StoredInvoice>> {
            let mut lines_by_invoice: std::collections::HashMap<Uuid, Vec<InvoiceLineRecord>> =
                std::collections::HashMap::new();
            if !invoice_rows.is_empty() {
                let line_rows = sqlx::query(
                    "SELECT l.invoice_id, l.description, l.quantity, l.unit_price, l.amount \
                     FROM invoice_lines l WHERE l.tenant_id = $1 ORDER BY l.invoice_id, l.line_no",
                )
                .bind(tenant.as_uuid())
                .fetch_all(&mut **tx)
                .await
                .during("read invoice lines")?;
                for row in &line_rows {
                    let id: Uuid = row.try_get("invoice_id").during("read invoice line")?;
                    lines_by_invoice.entry(id).or_default().push(decode_line(row)?);
                }
            }
            invoice_rows
                .iter()
                .map(|row| {
                    let id: Uuid = row.try_get("invoice_id").during("read invoice")?;
                    decode_invoice(row, lines_by_invoice.remove(&id).unwrap_or_default())
                })
                .collect()
        }
    }
    sqlite {
        pub(crate) async fn insert_invoices(
            tx: &mut Tx,
            tenant: TenantId,
            run: Option<BillRunId>,
            series: &str,
            first_number: i64,
            invoices: &[InvoiceRecord],
        ) -> std::result::Result<(), sqlx::Error> {
            // 13 parameters a row.
            let mut number = first_number;
            for chunk in invoices.chunks(2000) {
                let mut builder = sqlx::QueryBuilder::new(
                    "INSERT INTO invoices (tenant_id, invoice_id, series, number, run_id, \
                     customer_id, subscription_id, currency, issued_on, total, status, version, body) ",
                );
                builder.push_values(chunk, |mut row, inv| {
                    row.push_bind(tenant.as_uuid())
                        .push_bind(inv.id.as_uuid())
                        .push_bind(series.to_owned())
                        .push_bind(number)
                        .push_bind(run.map(|r| r.as_uuid()))
                        .push_bind(inv.customer.as_uuid())
                        .push_bind(inv.subscription.map(|s| s.as_uuid()))
                        .push_bind(inv.total.currency().code())
                        .push_bind(inv.issued_on)
                        .push_bind(dec(inv.total.amount()))
                        .push_bind(inv.status.clone())
                        .push_bind(1_i64)
                        .push_bind(Json(inv.body.clone()));
                    number += 1;
                });
                builder.build().execute(&mut **tx).await?;
            }
            let lines: Vec<(Uuid, i32, &InvoiceLineRecord)> = invoices
                .iter()
                .flat_map(|inv| {
                    inv.lines.iter().zip(0..).map(move |(l, n)| (inv.id.as_uuid(), n, l))
                })
                .collect();
            for chunk in lines.chunks(4000) {
                let mut builder = sqlx::QueryBuilder::new(
                    "INSERT INTO invoice_lines (tenant_id, invoice_id, line_no, description, \
                     quantity, unit_price, amount) ",
                );
                builder.push_values(chunk, |mut row, (id, n, l)| {
                    row.push_bind(tenant.as_uuid())
                        .push_bind(*id)
                        .push_bind(*n)
                        .push_bind(l.description.clone())
                        .push_bind(dec(l.quantity))
                        .push_bind(dec(l.unit_price))
                        .push_bind(dec(l.amount));
                });
                builder.build().execute(&mut **tx).await?;
            }
            Ok(())
        }
    }
    postgres {
        /// Invoices and lines with one UNNEST insert each, whatever the chunk size.
        pub(crate) async fn insert_invoices(
            tx: &mut Tx,
            tenant: TenantId,
            run: Option<BillRunId>,
            series: &str,
            first_number: i64,
            invoices: &[InvoiceRecord],
        ) -> std::result::Result<(), sqlx::Error> {
            let count = invoices.len();
            let mut ids = Vec::with_capacity(count);
            let mut numbers = Vec::with_capacity(count);
            let mut customers = Vec::with_capacity(count);
            let mut subscriptions: Vec<Option<Uuid>> = Vec::with_capacity(count);
            let mut currencies = Vec::with_capacity(count);
            let mut issued = Vec::with_capacity(count);
            let mut totals = Vec::with_capacity(count);
            let mut statuses = Vec::with_capacity(count);
            let mut bodies = Vec::with_capacity(count);
            let mut line_invoice = Vec::new();
            let mut line_no: Vec<i32> = Vec::new();
            let mut line_description = Vec::new();
            let mut line_quantity = Vec::new();
            let mut line_unit_price = Vec::new();
            let mut line_amount = Vec::new();
            for (inv, number) in invoices.iter().zip(first_number..) {
                ids.push(inv.id.as_uuid());
                numbers.push(number);
                customers.push(inv.customer.as_uuid());
                subscriptions.push(inv.subscription.map(|s| s.as_uuid()));
                currencies.push(inv.total.currency().code());
                issued.push(inv.issued_on);
                totals.push(inv.total.amount());
                statuses.push(inv.status.as_str());
                bodies.push(Json(&inv.body));
                for (line, n) in inv.lines.iter().zip(0..) {
                    line_invoice.push(inv.id.as_uuid());
                    line_no.push(n);
                    line_description.push(line.description.as_str());
                    line_quantity.push(line.quantity);
                    line_unit_price.push(line.unit_price);
                    line_amount.push(line.amount);
                }
            }
            sqlx::query(
                "INSERT INTO invoices (tenant_id, invoice_id, series, number, run_id, customer_id, \
                   subscription_id, currency, issued_on, total, status, version, body) \
                 SELECT $1, t.id, $2, t.number, $3, t.customer, t.subscription, t.currency, \
                   t.issued, t.total, t.status, 1, t.body \
                 FROM UNNEST($4::uuid[], $5::int8[], $6::uuid[], $7::uuid[], $8::text[], \
                   $9::date[], $10::numeric[], $11::text[], $12::jsonb[]) \
                   AS t(id, number, customer, subscription, currency, issued, total, status, body)",
            )
            .bind(tenant.as_uuid())
            .bind(series)
            .bind(run.map(|r| r.as_uuid()))
            .bind(ids)
            .bind(numbers)
            .bind(customers)
            .bind(subscriptions)
            .bind(currencies)
            .bind(issued)
            .bind(totals)
            .bind(statuses)
            .bind(bodies)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO invoice_lines (tenant_id, invoice_id, line_no, description, quantity, \
                   unit_price, amount) \
                 SELECT $1, * FROM UNNEST($2::uuid[], $3::int4[], $4::text[], $5::numeric[], \
                   $6::numeric[], $7::numeric[])",
            )
            .bind(tenant.as_uuid())
            .bind(line_invoice)
            .bind(line_no)
            .bind(line_description)
            .bind(line_quantity)
            .bind(line_unit_price)
            .bind(line_amount)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    }
}

/// Maps a failed invoice insert: a unique violation means a number or a run/subscription pair
/// was taken, which the caller reports as a duplicate.
fn insert_error(error: sqlx::Error) -> SqlError {
    if is_unique_violation(&error) {
        SqlError::Duplicate {
            what: "invoice (id, or subscription already billed in this run)",
            key: error.to_string(),
        }
    } else {
        SqlError::Database {
            operation: "write invoices",
            source: Box::new(error),
        }
    }
}

impl Database {
    /// Splits a run over `subscriptions` into chunks of `chunk_size` for workers to claim.
    /// Returns the number of chunks.
    ///
    /// # Errors
    ///
    /// [`SqlError::InvalidOption`] for a chunk size of 0, [`SqlError::Duplicate`] if the run
    /// exists, [`SqlError::Database`].
    pub async fn plan_bill_run(
        &self,
        tenant: TenantId,
        run: BillRunId,
        as_of: NaiveDate,
        subscriptions: &[SubscriptionId],
        chunk_size: usize,
        now: DateTime<Utc>,
    ) -> Result<u32> {
        if chunk_size == 0 {
            return Err(SqlError::InvalidOption {
                option: "chunk_size",
                reason: "chunks need at least one subscription".into(),
            });
        }
        let chunks: Vec<Vec<SubscriptionId>> = subscriptions
            .chunks(chunk_size)
            .map(<[_]>::to_vec)
            .collect();
        self.plan_bill_run_chunks(tenant, run, as_of, &chunks, now)
            .await
    }

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
    /// worker's lease ended by `now`), for `lease`. `None` when no chunk is claimable: the run
    /// is done, or the remaining chunks are leased to live workers.
    ///
    /// # Errors
    ///
    /// [`SqlError::Corrupt`] for an unreadable chunk, [`SqlError::Database`];
    /// [`SqlError::Core`] with `DateOutOfRange` when `now + lease` is past the last instant.
    pub async fn claim_chunk(
        &self,
        tenant: TenantId,
        run: BillRunId,
        worker: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<ChunkClaim>> {
        let expires = now
            .checked_add_signed(lease)
            .ok_or(dotmac_core::CoreError::DateOutOfRange("lease expiry"))?;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            let sql = if d::IS_POSTGRES {
                "UPDATE bill_run_chunks SET claimed_by = $3, lease_expires_at = $4, \
                   attempts = attempts + 1 \
                 WHERE (run_id, chunk_no) = (SELECT run_id, chunk_no FROM bill_run_chunks \
                   WHERE tenant_id = $1 AND run_id = $2 AND status = 'pending' \
                     AND (lease_expires_at IS NULL OR lease_expires_at <= $5) \
                   ORDER BY chunk_no LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING chunk_no, items, attempts"
            } else {
                "UPDATE bill_run_chunks SET claimed_by = $3, lease_expires_at = $4, \
                   attempts = attempts + 1 \
                 WHERE (run_id, chunk_no) = (SELECT run_id, chunk_no FROM bill_run_chunks \
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
            }))
        })
    }

    /// Writes a chunk's invoices (numbered gaplessly in `series`, in the given order), their
    /// lines and the outbox events, and marks the chunk done, all in one transaction. Returns
    /// the first invoice number given (numbers are consecutive), `None` for a chunk that
    /// produced no invoice.
    ///
    /// # Errors
    ///
    /// [`SqlError::LeaseLost`] if the chunk is no longer this claim's (nothing is written),
    /// [`SqlError::Duplicate`] if an invoice id is taken or a subscription was already billed
    /// in this run, [`SqlError::Database`].
    pub async fn complete_chunk(
        &self,
        claim: &ChunkClaim,
        series: &str,
        invoices: &[InvoiceRecord],
        events: &[OutboxEvent],
        now: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let count = u32::try_from(invoices.len()).map_err(|_| SqlError::InvalidOption {
            option: "invoices",
            reason: "too many invoices for one chunk".into(),
        })?;
        let tenant = claim.tenant;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            d::billrun::fence(&mut tx, claim, now).await?;
            if count == 0 {
                tx.commit().await.during("commit bill run chunk")?;
                return Ok(None);
            }
            let first = d::numbers::reserve(&mut tx, tenant, series, count).await?;
            d::billrun::insert_invoices(&mut tx, tenant, Some(claim.run), series, first, invoices)
                .await
                .map_err(insert_error)?;
            d::outbox::insert(&mut tx, events).await?;
            tx.commit().await.during("commit bill run chunk")?;
            Ok(Some(first))
        })
    }

    /// How many chunks of a run are done.
    ///
    /// # Errors
    ///
    /// [`SqlError::NotFound`] for an unknown run, [`SqlError::Database`].
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

    /// Writes invoices outside a bill run (one-off invoices), numbered gaplessly in `series`
    /// in the given order, with their outbox events, in one transaction. Returns the first
    /// number.
    ///
    /// # Errors
    ///
    /// [`SqlError::Duplicate`] for a taken invoice id, [`SqlError::Database`].
    pub async fn insert_invoices(
        &self,
        tenant: TenantId,
        series: &str,
        invoices: &[InvoiceRecord],
        events: &[OutboxEvent],
    ) -> Result<i64> {
        let count = u32::try_from(invoices.len()).map_err(|_| SqlError::InvalidOption {
            option: "invoices",
            reason: "too many invoices for one call".into(),
        })?;
        if count == 0 {
            return Err(SqlError::InvalidOption {
                option: "invoices",
                reason: "nothing to insert".into(),
            });
        }
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            let first = d::numbers::reserve(&mut tx, tenant, series, count).await?;
            d::billrun::insert_invoices(&mut tx, tenant, None, series, first, invoices)
                .await
                .map_err(insert_error)?;
            d::outbox::insert(&mut tx, events).await?;
            tx.commit().await.during("commit invoices")?;
            Ok(first)
        })
    }

    /// One invoice with its lines.
    ///
    /// # Errors
    ///
    /// [`SqlError::Database`], [`SqlError::Corrupt`].
    pub async fn invoice(&self, tenant: TenantId, id: InvoiceId) -> Result<Option<StoredInvoice>> {
        dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let row = sqlx::query(
                "SELECT invoice_id, series, number, run_id, customer_id, subscription_id, \
                   currency, issued_on, total, status, version, body \
                 FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .during("read invoice")?;
            let Some(row) = row else {
                tx.commit().await.during("end read")?;
                return Ok(None);
            };
            let lines = sqlx::query(
                "SELECT description, quantity, unit_price, amount FROM invoice_lines \
                 WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY line_no",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .during("read invoice lines")?;
            tx.commit().await.during("end read")?;
            let lines = lines.iter().map(d::billrun::decode_line).collect::<Result<Vec<_>>>()?;
            d::billrun::decode_invoice(&row, lines).map(Some)
        })
    }

    /// Every invoice of a tenant with its lines, by number. Meant for tests, audits and small
    /// tenants: it loads them all.
    ///
    /// # Errors
    ///
    /// [`SqlError::Database`], [`SqlError::Corrupt`].
    pub async fn invoices(&self, tenant: TenantId) -> Result<Vec<StoredInvoice>> {
        dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let rows = sqlx::query(
                "SELECT invoice_id, series, number, run_id, customer_id, subscription_id, \
                   currency, issued_on, total, status, version, body \
                 FROM invoices WHERE tenant_id = $1 ORDER BY series, number",
            )
            .bind(tenant.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .during("read invoices")?;
            let invoices = d::billrun::load_invoices(&mut tx, tenant, rows).await?;
            tx.commit().await.during("end read")?;
            Ok(invoices)
        })
    }

    /// Changes an invoice's status and body if it is still at `expected_version` (optimistic
    /// concurrency); returns the new version.
    ///
    /// # Errors
    ///
    /// [`SqlError::Conflict`] if someone else changed it first (or it does not exist:
    /// `actual` is then `None`), [`SqlError::Database`].
    pub async fn update_invoice(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        expected_version: i64,
        status: &str,
        body: &serde_json::Value,
    ) -> Result<i64> {
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            let updated: Option<i64> = sqlx::query_scalar(
                "UPDATE invoices SET status = $4, body = $5, version = version + 1 \
                 WHERE tenant_id = $1 AND invoice_id = $2 AND version = $3 RETURNING version",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(expected_version)
            .bind(status)
            .bind(Json(body))
            .fetch_optional(&mut *tx)
            .await
            .during("update invoice")?;
            if let Some(version) = updated {
                tx.commit().await.during("commit invoice")?;
                return Ok(version);
            }
            let actual: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .during("read invoice version")?;
            tx.rollback().await.during("roll back invoice")?;
            Err(SqlError::Conflict {
                entity: "invoice",
                id: id.to_string(),
                expected: expected_version,
                actual,
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
