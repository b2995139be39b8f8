//! `dotmac-billing`'s storage traits: catalogue, accounts, subscriptions, invoices, pending
//! charges and credit notes.

use std::collections::{HashMap, HashSet};

use dotmac_billing::{
    BillingCommit, BillingError, CatalogStore, CommitResult, CreditNote, CustomerAccount,
    DocumentKey, DocumentNumber, IdempotencyKey, IdempotencyRecord, Invoice, InvoiceStatus,
    InvoiceStore, IssuedInvoice, KeyedRequest, KeyedWrite, PendingCharge, Plan, Product,
    Subscription, SubscriptionStore,
};
use dotmac_core::{CustomerId, InvoiceId, PlanId, SubscriptionId, TenantId};

use sqlx::Row;
use uuid::Uuid;

use crate::db::{dispatch, for_each_dialect};
use crate::docs::{Bind, Written, from_json, json};
use crate::error::{Context, SqlError};
use crate::input;
use crate::store::SqlStore;

type Result<T> = std::result::Result<T, BillingError>;

/// The number series of invoices and credit notes in `invoice_counters`.
const INVOICE_SERIES: &str = "billing.invoice";
pub(crate) const CREDIT_NOTE_SERIES: &str = "billing.credit_note";

/// Storage failures as billing errors: a duplicate key keeps its domain meaning, domain errors
/// pass through, and every other failure is [`BillingError::Storage`] with its kind and cause.
pub(crate) fn storage(error: SqlError) -> BillingError {
    match error {
        SqlError::Duplicate { what, key } => BillingError::AlreadyExists { what, id: key },
        SqlError::Core(core) => BillingError::Core(core),
        SqlError::Billing(billing) => billing,
        other => BillingError::Storage(other.into()),
    }
}

/// Each record's JSON text, checked for what the database cannot store.
fn documents<T: serde::Serialize>(
    what: &'static str,
    records: &[&T],
) -> crate::error::Result<Vec<Box<serde_json::value::RawValue>>> {
    records.iter().map(|r| input::document(what, *r)).collect()
}

pub(crate) fn id(tenant: TenantId) -> Bind {
    Bind::Uuid(tenant.as_uuid())
}

pub(crate) fn body<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Bind> {
    json(what, value).map_err(storage)
}

fn key_text(key: &DocumentKey) -> Result<String> {
    serde_json::to_string(key).map_err(|source| {
        storage(SqlError::Json {
            what: "document key",
            source,
        })
    })
}

fn status_text(status: InvoiceStatus) -> Result<String> {
    match serde_json::to_value(status).map_err(|source| {
        storage(SqlError::Json {
            what: "invoice status",
            source,
        })
    })? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

pub(crate) fn number(n: i64) -> DocumentNumber {
    DocumentNumber(n.unsigned_abs())
}

fn invoice_binds(tenant: TenantId, invoice: &Invoice) -> Result<Vec<Bind>> {
    Ok(vec![
        id(tenant),
        Bind::Uuid(invoice.id.as_uuid()),
        Bind::Text(key_text(&invoice.key)?),
        Bind::Uuid(invoice.customer.as_uuid()),
        Bind::OptI64(
            invoice
                .number
                .map(|n| i64::try_from(n.0).unwrap_or(i64::MAX)),
        ),
        Bind::Text(status_text(invoice.status)?),
        Bind::Date(invoice.issue_date),
        Bind::Text(invoice.currency.code().to_owned()),
        Bind::Dec(invoice.total.amount()),
        body("invoice", invoice)?,
    ])
}

const INSERT_INVOICE: &str = "INSERT INTO billing_invoices (tenant_id, invoice_id, doc_key, \
     customer_id, number, status, issue_date, currency, total, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// What one commit of a batch did inside the batch's transaction.
pub(crate) enum Applied {
    /// Written.
    Done(CommitResult),
    /// Refused before writing anything (stale or unknown subscription, charge taken).
    Refused(BillingError),
}

/// Why a commit whose subscription expects stored revision `expected` is refused, given the
/// stored revisions `found` (absent: unknown subscription); `None` when it may apply.
fn revision_refusal(
    sub: &Subscription,
    expected: u64,
    found: &HashMap<Uuid, i64>,
) -> Option<BillingError> {
    match found.get(&sub.id.as_uuid()) {
        None => Some(BillingError::UnknownSubscription(sub.id)),
        Some(found) if found.unsigned_abs() == expected && *found >= 0 => None,
        Some(found) => Some(BillingError::ConcurrentUpdate {
            subscription: sub.id,
            expected,
            found: found.unsigned_abs(),
        }),
    }
}

impl SqlStore {
    /// The records of `customers` in one table (`select` … `WHERE customer_id` in the list … `tail`),
    /// read in one tenant transaction: the batch reads of a bill-run chunk.
    async fn customer_bodies<T: serde::de::DeserializeOwned + Send + Unpin>(
        &self,
        tenant: TenantId,
        select: &'static str,
        customers: &[CustomerId],
        tail: &'static str,
    ) -> Result<Vec<T>> {
        let ids: Vec<Uuid> = customers.iter().map(|c| c.as_uuid()).collect();
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await.map_err(storage)?;
            let bodies = d::billing::bodies_in(&mut tx, select, tenant, "customer_id", &ids, tail)
                .await
                .map_err(storage)?;
            tx.commit().await.during("end read").map_err(storage)?;
            Ok(bodies)
        })
    }
}

for_each_dialect! {
    shared {
    /// Applies one [`BillingCommit`] in the open transaction. A stale or unknown subscription,
    /// then a consumed charge that is no longer pending, is refused before anything is
    /// written; a unique violation (a concurrent writer issued the same document) fails the
    /// whole transaction.
    ///
    /// The charges it consumes are locked first (then its subscription), so a concurrent
    /// commit consuming one of them waits and then sees it consumed.
    pub(crate) async fn apply_commit(
        tx: &mut Tx,
        tenant: TenantId,
        commit: BillingCommit,
    ) -> Result<Applied> {
            if !commit.consumed_pending.is_empty() {
                let mut ids: Vec<Uuid> =
                    commit.consumed_pending.iter().map(|c| c.as_uuid()).collect();
                ids.sort_unstable();
                ids.dedup();
                let stored = lock_pending(tx, tenant, &ids).await.map_err(storage)?;
                // The revision check comes first: a stale commit reports its subscription.
                if let Some(sub) = &commit.subscription {
                    let found = revisions_of(tx, tenant, &[sub.id.as_uuid()], true)
                        .await
                        .map_err(storage)?;
                    if let Some(refused) = revision_refusal(sub, sub.revision, &found) {
                        return Ok(Applied::Refused(refused));
                    }
                }
                if let Some(charge) = commit
                    .consumed_pending
                    .iter()
                    .find(|c| stored.get(&c.as_uuid()) != Some(&false))
                {
                    return Ok(Applied::Refused(BillingError::PendingChargeTaken {
                        charge: *charge,
                    }));
                }
            }
            if let Some(mut sub) = commit.subscription {
                let expected = sub.revision;
                sub.revision += 1;
                let updated = docs::execute(
                    tx,
                    "UPDATE billing_subscriptions SET revision = $4, body = $5, customer_id = $6 \
                     WHERE tenant_id = $1 AND subscription_id = $2 AND revision = $3",
                    &[
                        id(tenant),
                        Bind::Uuid(sub.id.as_uuid()),
                        Bind::I64(i64::try_from(expected).unwrap_or(i64::MAX)),
                        Bind::I64(i64::try_from(sub.revision).unwrap_or(i64::MAX)),
                        body("subscription", &sub)?,
                        Bind::Uuid(sub.customer.as_uuid()),
                    ],
                )
                .await
                .map_err(storage)?;
                if updated != Written::Rows(1) {
                    let found = docs::scalar_i64(
                        tx,
                        "SELECT revision FROM billing_subscriptions \
                         WHERE tenant_id = $1 AND subscription_id = $2",
                        &[id(tenant), Bind::Uuid(sub.id.as_uuid())],
                    )
                    .await
                    .map_err(storage)?;
                    return Ok(Applied::Refused(match found {
                        None => BillingError::UnknownSubscription(sub.id),
                        Some(found) => BillingError::ConcurrentUpdate {
                            subscription: sub.id,
                            expected,
                            found: found.unsigned_abs(),
                        },
                    }));
                }
            }
            let mut result = CommitResult::default();
            for mut invoice in commit.invoices {
                let key = key_text(&invoice.key)?;
                let exists = docs::scalar_i64(
                    tx,
                    "SELECT CAST(1 AS BIGINT) FROM billing_invoices WHERE tenant_id = $1 AND doc_key = $2",
                    &[id(tenant), Bind::Text(key)],
                )
                .await
                .map_err(storage)?;
                if exists.is_some() {
                    result.duplicates += 1;
                    continue;
                }
                let n = numbers::reserve(tx, tenant, INVOICE_SERIES, 1).await.map_err(storage)?;
                let issued_number = number(n);
                invoice.number = Some(issued_number);
                invoice.status = InvoiceStatus::Open;
                let written = docs::execute(tx, INSERT_INVOICE, &invoice_binds(tenant, &invoice)?)
                    .await
                    .map_err(storage)?;
                if written == Written::UniqueViolation {
                    // A concurrent commit issued the same key (or id) first.
                    return Err(BillingError::AlreadyExists {
                        what: "invoice",
                        id: invoice.id.to_string(),
                    });
                }
                result.issued.push(IssuedInvoice {
                    id: invoice.id,
                    number: issued_number,
                    customer: invoice.customer,
                    total: invoice.total,
                    due_date: invoice.due_date,
                });
            }
            for charge in &commit.consumed_pending {
                docs::execute(
                    tx,
                    "UPDATE billing_pending_charges SET consumed = $3 \
                     WHERE tenant_id = $1 AND charge_id = $2",
                    &[id(tenant), Bind::Uuid(charge.as_uuid()), Bind::Bool(true)],
                )
                .await
                .map_err(storage)?;
            }
            for charge in &commit.new_pending {
                docs::execute(
                    tx,
                    "INSERT INTO billing_pending_charges (tenant_id, charge_id, customer_id, consumed, body) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, charge_id) DO NOTHING",
                    &[
                        id(tenant),
                        Bind::Uuid(charge.id.as_uuid()),
                        Bind::Uuid(charge.customer.as_uuid()),
                        Bind::Bool(false),
                        body("pending charge", charge)?,
                    ],
                )
                .await
                .map_err(storage)?;
            }
            Ok(Applied::Done(result))
    }

    /// Applies every commit in the open transaction, one result per commit, with a handful of
    /// set-based statements whatever the batch size: one `UPDATE … RETURNING` for every
    /// subscription's optimistic revision check and new state, one lookup of the documents'
    /// idempotency keys, one insert of the new pending charges, one update of the consumed
    /// ones, then one reservation of the batch's invoice numbers and one insert of the new
    /// invoices (SQLite splits each into statements of 1,000 rows). The reservation comes
    /// last because it locks the tenant's counter row until the commit, and every other
    /// writer of the tenant's invoices (another bill-run worker) waits for that lock. A batch
    /// that consumes pending charges first locks them and the subscriptions with two reads,
    /// decides in Rust, then writes the accepted subscriptions (see [`decide_with_charges`]).
    ///
    /// The outcome is exactly that of applying the commits one by one, as the in-memory store
    /// does: a commit whose subscription is stale or unknown, or (its subscription being
    /// current) that consumes a charge no longer pending, writes nothing and holds the error
    /// in its slot; a document whose key is stored, or issued earlier in the batch, is
    /// counted as a duplicate; numbers follow commit order, gaplessly. A batch that names one
    /// subscription twice (a later commit's revision check depends on an earlier commit of
    /// the same batch) is applied commit by commit.
    ///
    /// Errors are [`SqlError`]s so that a [`SqlError::LockTimeout`] on the counter stays one
    /// (a bill-run worker retries it); refusals of the batch as a whole are
    /// [`SqlError::Billing`].
    pub(crate) async fn apply_batch(
        tx: &mut Tx,
        tenant: TenantId,
        mut commits: Vec<BillingCommit>,
    ) -> std::result::Result<Vec<Result<CommitResult>>, SqlError> {
        let mut seen = HashSet::with_capacity(commits.len());
        if commits
            .iter()
            .filter_map(|c| c.subscription.as_ref())
            .any(|s| !seen.insert(s.id))
        {
            return Ok(apply_each(tx, tenant, commits).await?);
        }
        drop(seen);

        // 1. Revision checks, pending charges and new states.
        let refusals = if commits.iter().any(|c| !c.consumed_pending.is_empty()) {
            decide_with_charges(tx, tenant, &mut commits).await?
        } else {
            decide_by_revision(tx, tenant, &mut commits).await?
        };

        // 2. Idempotency keys of the accepted commits' documents: stored ones, and repeats
        //    within the batch, are duplicates.
        let keys: Vec<Vec<String>> = commits
            .iter()
            .zip(&refusals)
            .map(|(c, refused)| {
                if refused.is_some() {
                    Ok(Vec::new())
                } else {
                    c.invoices.iter().map(|i| key_text(&i.key)).collect()
                }
            })
            .collect::<Result<_>>()?;
        let all_keys: Vec<&str> = keys.iter().flatten().map(String::as_str).collect();
        let stored = if all_keys.is_empty() {
            HashSet::new()
        } else {
            existing_keys(tx, tenant, &all_keys).await?
        };
        drop(all_keys);
        let mut taken: HashSet<&str> = HashSet::new();
        // Per commit: which of its invoices are new (by index), and how many are duplicates.
        let mut fresh: Vec<(Vec<usize>, usize)> = Vec::with_capacity(commits.len());
        let mut count: usize = 0;
        for commit_keys in &keys {
            let mut new = Vec::new();
            let mut duplicates = 0;
            for (i, key) in commit_keys.iter().enumerate() {
                if stored.contains(key.as_str()) || !taken.insert(key.as_str()) {
                    duplicates += 1;
                } else {
                    new.push(i);
                }
            }
            count += new.len();
            fresh.push((new, duplicates));
        }
        drop(taken);

        // 3. The writes that need no number, of the accepted commits: new pending charges,
        //    consumed charges (after the new ones, as the in-memory store removes a batch's
        //    consumed charges at its end).
        let mut new_pending: Vec<&PendingCharge> = Vec::new();
        let mut consumed: Vec<Uuid> = Vec::new();
        for (commit, _) in commits.iter().zip(&refusals).filter(|(_, r)| r.is_none()) {
            new_pending.extend(&commit.new_pending);
            consumed.extend(commit.consumed_pending.iter().map(|c| c.as_uuid()));
        }
        if !new_pending.is_empty() {
            insert_pending(tx, tenant, &new_pending).await?;
        }
        drop(new_pending);
        if !consumed.is_empty() {
            consumed.sort_unstable();
            consumed.dedup();
            // Every one was pending under its lock (step 1): a shortfall means the lock did
            // not hold, and the batch is abandoned rather than a charge invoiced twice.
            let done = consume_pending(tx, tenant, &consumed).await?;
            if usize::try_from(done).ok() != Some(consumed.len()) {
                return Err(BillingError::Storage(dotmac_core::StorageError::new(
                    dotmac_core::StorageErrorKind::Conflict,
                    "a pending charge was consumed by someone else during the batch; retry it",
                ))
                .into());
            }
        }

        // 4. One gapless reservation for the batch, numbers in commit order, taken last (see
        //    above): only the invoice insert follows it in this function.
        let first = if count == 0 {
            0
        } else {
            let count = u32::try_from(count).map_err(|_| BillingError::InvalidConfiguration {
                what: "bill run chunk",
                reason: "too many documents in one batch; use smaller chunks",
            })?;
            numbers::reserve(tx, tenant, INVOICE_SERIES, count).await?
        };
        let mut next = first;
        let mut results: Vec<Result<CommitResult>> = Vec::with_capacity(commits.len());
        for ((commit, refused), (new, duplicates)) in
            commits.iter_mut().zip(refusals).zip(&fresh)
        {
            if let Some(refused) = refused {
                results.push(Err(refused));
                continue;
            }
            let mut result = CommitResult {
                issued: Vec::with_capacity(new.len()),
                duplicates: *duplicates,
            };
            for &i in new {
                if let Some(invoice) = commit.invoices.get_mut(i) {
                    let issued_number = number(next);
                    next += 1;
                    invoice.number = Some(issued_number);
                    invoice.status = InvoiceStatus::Open;
                    result.issued.push(IssuedInvoice {
                        id: invoice.id,
                        number: issued_number,
                        customer: invoice.customer,
                        total: invoice.total,
                        due_date: invoice.due_date,
                    });
                }
            }
            results.push(Ok(result));
        }

        // 5. The invoices.
        let mut rows: Vec<(&str, &Invoice)> = Vec::with_capacity(count);
        for (((commit, result), (new, _)), commit_keys) in
            commits.iter().zip(&results).zip(&fresh).zip(&keys)
        {
            if result.is_err() {
                continue;
            }
            for &i in new {
                if let (Some(invoice), Some(key)) = (commit.invoices.get(i), commit_keys.get(i)) {
                    rows.push((key.as_str(), invoice));
                }
            }
        }
        if !rows.is_empty() {
            let status = status_text(InvoiceStatus::Open)?;
            if insert_invoices(tx, tenant, &status, &rows).await?
                == Written::UniqueViolation
            {
                // A concurrent commit issued one of these keys (or ids) first.
                return Err(BillingError::AlreadyExists {
                    what: "invoice",
                    id: rows.first().map(|(_, i)| i.id.to_string()).unwrap_or_default(),
                }
                .into());
            }
        }
        Ok(results)
    }

    /// Step 1 of [`apply_batch`] when no commit consumes a pending charge: one
    /// `UPDATE … RETURNING` writes every subscription whose stored revision is the one
    /// before (each subscription leaves carrying its bumped revision); the misses are looked
    /// up to tell a stale subscription from an unknown one. Returns each commit's refusal.
    async fn decide_by_revision(
        tx: &mut Tx,
        tenant: TenantId,
        commits: &mut [BillingCommit],
    ) -> Result<Vec<Option<BillingError>>> {
        for sub in commits.iter_mut().filter_map(|c| c.subscription.as_mut()) {
            sub.revision += 1;
        }
        let subs: Vec<&Subscription> =
            commits.iter().filter_map(|c| c.subscription.as_ref()).collect();
        let updated = if subs.is_empty() {
            HashSet::new()
        } else {
            update_subscriptions(tx, tenant, &subs).await.map_err(storage)?
        };
        let missed: Vec<Uuid> = subs
            .iter()
            .map(|s| s.id.as_uuid())
            .filter(|id| !updated.contains(id))
            .collect();
        drop(subs);
        let found = if missed.is_empty() {
            HashMap::new()
        } else {
            revisions_of(tx, tenant, &missed, false).await.map_err(storage)?
        };
        Ok(commits
            .iter()
            .map(|c| {
                let sub = c.subscription.as_ref()?;
                if updated.contains(&sub.id.as_uuid()) {
                    return None;
                }
                // Not written: unknown, or stale (whatever the revision read now).
                Some(match found.get(&sub.id.as_uuid()) {
                    None => BillingError::UnknownSubscription(sub.id),
                    Some(found) => BillingError::ConcurrentUpdate {
                        subscription: sub.id,
                        expected: sub.revision - 1,
                        found: found.unsigned_abs(),
                    },
                })
            })
            .collect())
    }

    /// Step 1 of [`apply_batch`] when commits consume pending charges: locks the consumed
    /// charges (in id order, so two batches cannot deadlock on them) and then the
    /// subscriptions, decides every commit in commit order (revision first, then each charge
    /// must be pending: stored and not consumed, or added by an earlier accepted commit of
    /// the batch, and not consumed earlier in the batch), and writes the accepted commits'
    /// subscriptions in one statement. Returns each commit's refusal.
    ///
    /// A concurrent transaction consuming one of the charges waits on the lock and then sees
    /// it consumed, so a charge is invoiced once however many workers race for it.
    async fn decide_with_charges(
        tx: &mut Tx,
        tenant: TenantId,
        commits: &mut [BillingCommit],
    ) -> Result<Vec<Option<BillingError>>> {
        let mut charges: Vec<Uuid> = commits
            .iter()
            .flat_map(|c| c.consumed_pending.iter().map(|p| p.as_uuid()))
            .collect();
        charges.sort_unstable();
        charges.dedup();
        let stored = lock_pending(tx, tenant, &charges).await.map_err(storage)?;
        drop(charges);
        let mut subs: Vec<Uuid> = commits
            .iter()
            .filter_map(|c| c.subscription.as_ref().map(|s| s.id.as_uuid()))
            .collect();
        subs.sort_unstable();
        let found = if subs.is_empty() {
            HashMap::new()
        } else {
            revisions_of(tx, tenant, &subs, true).await.map_err(storage)?
        };
        drop(subs);
        let mut consumed: HashSet<Uuid> = HashSet::new();
        let mut added: HashSet<Uuid> = HashSet::new();
        let mut refusals = Vec::with_capacity(commits.len());
        for commit in commits.iter() {
            if let Some(refused) = commit
                .subscription
                .as_ref()
                .and_then(|sub| revision_refusal(sub, sub.revision, &found))
            {
                refusals.push(Some(refused));
                continue;
            }
            let taken = commit.consumed_pending.iter().find(|c| {
                let c = c.as_uuid();
                consumed.contains(&c)
                    || match stored.get(&c) {
                        Some(was_consumed) => *was_consumed,
                        None => !added.contains(&c),
                    }
            });
            if let Some(charge) = taken {
                refusals.push(Some(BillingError::PendingChargeTaken { charge: *charge }));
                continue;
            }
            consumed.extend(commit.consumed_pending.iter().map(|c| c.as_uuid()));
            added.extend(commit.new_pending.iter().map(|c| c.id.as_uuid()));
            refusals.push(None);
        }
        let mut accepted: Vec<&Subscription> = Vec::new();
        for (commit, refused) in commits.iter_mut().zip(&refusals) {
            if let (None, Some(sub)) = (refused, commit.subscription.as_mut()) {
                sub.revision += 1;
                accepted.push(sub);
            }
        }
        if !accepted.is_empty() {
            let updated = update_subscriptions(tx, tenant, &accepted)
                .await
                .map_err(storage)?;
            // The rows are locked since their revisions were read: every one is written.
            if let Some(sub) = accepted.iter().find(|s| !updated.contains(&s.id.as_uuid())) {
                return Err(BillingError::ConcurrentUpdate {
                    subscription: sub.id,
                    expected: sub.revision - 1,
                    found: sub.revision - 1,
                });
            }
        }
        Ok(refusals)
    }

    /// Applies the commits one by one (a batch that names a subscription twice).
    pub(crate) async fn apply_each(
        tx: &mut Tx,
        tenant: TenantId,
        commits: Vec<BillingCommit>,
    ) -> Result<Vec<Result<CommitResult>>> {
        let mut results = Vec::with_capacity(commits.len());
        for commit in commits {
            results.push(match apply_commit(tx, tenant, commit).await? {
                Applied::Done(result) => Ok(result),
                Applied::Refused(e) => Err(e),
            });
        }
        Ok(results)
    }
    }
    sqlite {
        /// Rows per multi-row statement: at most 10 parameters a row stays far under SQLite's
        /// 32,766 bound parameters.
        const ROWS: usize = 1000;

        /// Pushes `(?, ?, …)`, binding each of `values`: the `IN` list of the keyed
        /// statements below (SQLite has no array parameter).
        fn push_in_list<'t, T>(
            query: &mut sqlx::QueryBuilder<Db>,
            values: impl IntoIterator<Item = T>,
        ) where
            T: sqlx::Encode<'t, Db> + sqlx::Type<Db>,
        {
            query.push("(");
            let mut list = query.separated(", ");
            for value in values {
                list.push_bind(value);
            }
            list.push_unseparated(")");
        }

        /// The records in `select`'s rows of `tenant` whose `column` is one of `ids` (queried
        /// 1,000 ids at a time), followed by `tail` (more conditions, an ORDER BY); decoded
        /// straight from the `body` column.
        pub(crate) async fn bodies_in<T: serde::de::DeserializeOwned + Send + Unpin>(
            tx: &mut Tx,
            select: &'static str,
            tenant: TenantId,
            column: &'static str,
            ids: &[Uuid],
            tail: &'static str,
        ) -> crate::error::Result<Vec<T>> {
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(ROWS) {
                let mut query = sqlx::QueryBuilder::<Db>::new(select);
                query.push(" WHERE tenant_id = ").push_bind(tenant.as_uuid());
                query.push(" AND ").push(column).push(" IN ");
                push_in_list(&mut query, chunk.iter().copied());
                query.push(" ").push(tail);
                let rows = query.build().fetch_all(&mut **tx).await.during("read records")?;
                for row in &rows {
                    let body: sqlx::types::Json<T> =
                        row.try_get("body").during("read record body")?;
                    out.push(body.0);
                }
            }
            Ok(out)
        }

        /// Writes each subscription's new state (already carrying its bumped revision) where
        /// the stored revision is the one before; returns the ids written.
        ///
        /// The `subscription_id IN (…)` list repeats the join key so that SQLite looks the
        /// rows up by primary key: joined with the VALUES alone, it walks all of the tenant's
        /// subscriptions (by the customer index) for every chunk, which makes a bill run
        /// quadratic.
        pub(crate) async fn update_subscriptions(
            tx: &mut Tx,
            tenant: TenantId,
            subs: &[&Subscription],
        ) -> crate::error::Result<HashSet<Uuid>> {
            let mut updated = HashSet::with_capacity(subs.len());
            for chunk in subs.chunks(ROWS) {
                let bodies = documents("subscription", chunk)?;
                let mut query = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE billing_subscriptions SET revision = u.column3, body = u.column4, \
                     customer_id = u.column5 FROM (",
                );
                query.push_values(chunk.iter().zip(bodies), |mut row, (sub, body)| {
                    let revision = i64::try_from(sub.revision).unwrap_or(i64::MAX);
                    row.push_bind(sub.id.as_uuid())
                        .push_bind(revision - 1)
                        .push_bind(revision)
                        .push_bind(sqlx::types::Json(body))
                        .push_bind(sub.customer.as_uuid());
                });
                query
                    .push(") AS u WHERE billing_subscriptions.tenant_id = ")
                    .push_bind(tenant.as_uuid())
                    .push(
                        " AND billing_subscriptions.subscription_id = u.column1 \
                         AND billing_subscriptions.revision = u.column2 \
                         AND billing_subscriptions.subscription_id IN ",
                    );
                push_in_list(&mut query, chunk.iter().map(|sub| sub.id.as_uuid()));
                query.push(" RETURNING subscription_id");
                let rows = query.build().fetch_all(&mut **tx).await.during("update subscriptions")?;
                for row in &rows {
                    updated.insert(row.try_get::<Uuid, _>(0).during("update subscriptions")?);
                }
            }
            Ok(updated)
        }

        /// The stored revisions of `ids` (absent: unknown subscription). `_lock` is moot:
        /// the transaction (`BEGIN IMMEDIATE`) already holds the database's write lock.
        pub(crate) async fn revisions_of(
            tx: &mut Tx,
            tenant: TenantId,
            ids: &[Uuid],
            _lock: bool,
        ) -> crate::error::Result<HashMap<Uuid, i64>> {
            values_by_key(
                tx,
                tenant,
                "SELECT subscription_id, revision FROM billing_subscriptions",
                "subscription_id",
                ids,
                "read revisions",
            )
            .await
        }

        /// `(key, value)` of `tenant`'s rows that `select` (two columns, no WHERE) reads, for
        /// the rows whose `key` is one of `ids`, as a map; in statements of `ROWS` keys.
        async fn values_by_key<V>(
            tx: &mut Tx,
            tenant: TenantId,
            select: &str,
            key: &str,
            ids: &[Uuid],
            during: &'static str,
        ) -> crate::error::Result<HashMap<Uuid, V>>
        where
            V: for<'r> sqlx::Decode<'r, Db> + sqlx::Type<Db>,
        {
            let mut found = HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(ROWS) {
                let mut query =
                    sqlx::QueryBuilder::<Db>::new(format!("{select} WHERE tenant_id = "));
                query
                    .push_bind(tenant.as_uuid())
                    .push(format!(" AND {key} IN "));
                push_in_list(&mut query, chunk.iter().copied());
                let rows = query.build().fetch_all(&mut **tx).await.during(during)?;
                for row in &rows {
                    found.insert(
                        row.try_get::<Uuid, _>(0).during(during)?,
                        row.try_get::<V, _>(1).during(during)?,
                    );
                }
            }
            Ok(found)
        }

        /// Which of `keys` are stored document keys.
        pub(crate) async fn existing_keys(
            tx: &mut Tx,
            tenant: TenantId,
            keys: &[&str],
        ) -> crate::error::Result<HashSet<String>> {
            let mut stored = HashSet::new();
            for chunk in keys.chunks(ROWS) {
                let mut query = sqlx::QueryBuilder::<Db>::new(
                    "SELECT doc_key FROM billing_invoices WHERE tenant_id = ",
                );
                query.push_bind(tenant.as_uuid()).push(" AND doc_key IN ");
                push_in_list(&mut query, chunk.iter().copied());
                let rows = query.build().fetch_all(&mut **tx).await.during("read document keys")?;
                for row in &rows {
                    stored.insert(row.try_get::<String, _>(0).during("read document keys")?);
                }
            }
            Ok(stored)
        }

        /// Inserts numbered invoices (key, invoice) with status `status`.
        pub(crate) async fn insert_invoices(
            tx: &mut Tx,
            tenant: TenantId,
            status: &str,
            rows: &[(&str, &Invoice)],
        ) -> crate::error::Result<Written> {
            for chunk in rows.chunks(ROWS) {
                let bodies = chunk
                    .iter()
                    .map(|(_, invoice)| input::document("invoice", *invoice))
                    .collect::<crate::error::Result<Vec<_>>>()?;
                let mut query = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO billing_invoices (tenant_id, invoice_id, doc_key, customer_id, \
                     number, status, issue_date, currency, total, body) ",
                );
                query.push_values(chunk.iter().zip(bodies), |mut row, ((key, invoice), body)| {
                    row.push_bind(tenant.as_uuid())
                        .push_bind(invoice.id.as_uuid())
                        .push_bind(*key)
                        .push_bind(invoice.customer.as_uuid())
                        .push_bind(invoice.number.map(|n| i64::try_from(n.0).unwrap_or(i64::MAX)))
                        .push_bind(status)
                        .push_bind(invoice.issue_date)
                        .push_bind(invoice.currency.code())
                        .push_bind(dec(invoice.total.amount()))
                        .push_bind(sqlx::types::Json(body));
                });
                match query.build().execute(&mut **tx).await {
                    Err(e) if crate::error::is_unique_violation(&e) => {
                        return Ok(Written::UniqueViolation);
                    }
                    other => other.during("write invoices")?,
                };
            }
            Ok(Written::Rows(u64::try_from(rows.len()).unwrap_or(u64::MAX)))
        }

        /// Adds pending charges (an id already stored is skipped).
        pub(crate) async fn insert_pending(
            tx: &mut Tx,
            tenant: TenantId,
            charges: &[&PendingCharge],
        ) -> crate::error::Result<()> {
            for chunk in charges.chunks(ROWS) {
                let bodies = documents("pending charge", chunk)?;
                let mut query = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO billing_pending_charges (tenant_id, charge_id, customer_id, \
                     consumed, body) ",
                );
                query.push_values(chunk.iter().zip(bodies), |mut row, (charge, body)| {
                    row.push_bind(tenant.as_uuid())
                        .push_bind(charge.id.as_uuid())
                        .push_bind(charge.customer.as_uuid())
                        .push_bind(false)
                        .push_bind(sqlx::types::Json(body));
                });
                query.push(" ON CONFLICT (tenant_id, charge_id) DO NOTHING");
                query.build().execute(&mut **tx).await.during("write pending charges")?;
            }
            Ok(())
        }

        /// Marks pending charges consumed (kept, so that a retried add stays a no-op): only
        /// those not consumed yet; returns how many were.
        pub(crate) async fn consume_pending(
            tx: &mut Tx,
            tenant: TenantId,
            ids: &[Uuid],
        ) -> crate::error::Result<u64> {
            let mut done = 0;
            for chunk in ids.chunks(ROWS) {
                let mut query = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE billing_pending_charges SET consumed = 1 WHERE NOT consumed \
                     AND tenant_id = ",
                );
                query.push_bind(tenant.as_uuid()).push(" AND charge_id IN ");
                push_in_list(&mut query, chunk.iter().copied());
                done += query
                    .build()
                    .execute(&mut **tx)
                    .await
                    .during("consume pending charges")?
                    .rows_affected();
            }
            Ok(done)
        }

        /// Whether each stored charge of `ids` is consumed (absent: never added). Nothing to
        /// lock: the transaction (`BEGIN IMMEDIATE`) already holds the database's write lock.
        pub(crate) async fn lock_pending(
            tx: &mut Tx,
            tenant: TenantId,
            ids: &[Uuid],
        ) -> crate::error::Result<HashMap<Uuid, bool>> {
            values_by_key(
                tx,
                tenant,
                "SELECT charge_id, consumed FROM billing_pending_charges",
                "charge_id",
                ids,
                "read pending charges",
            )
            .await
        }
    }
    postgres {
        /// The records in `select`'s rows of `tenant` whose `column` is one of `ids` (one
        /// `= ANY($2)` query), followed by `tail` (more conditions, an ORDER BY); decoded
        /// straight from the `body` column.
        pub(crate) async fn bodies_in<T: serde::de::DeserializeOwned + Send + Unpin>(
            tx: &mut Tx,
            select: &'static str,
            tenant: TenantId,
            column: &'static str,
            ids: &[Uuid],
            tail: &'static str,
        ) -> crate::error::Result<Vec<T>> {
            let mut query = sqlx::QueryBuilder::<Db>::new(select);
            query.push(" WHERE tenant_id = ").push_bind(tenant.as_uuid());
            query.push(" AND ").push(column).push(" = ANY(").push_bind(ids).push(") ");
            query.push(tail);
            let rows = query.build().fetch_all(&mut **tx).await.during("read records")?;
            rows.iter()
                .map(|row| {
                    row.try_get::<sqlx::types::Json<T>, _>("body")
                        .map(|b| b.0)
                        .during("read record body")
                })
                .collect()
        }

        /// Writes each subscription's new state (already carrying its bumped revision) where
        /// the stored revision is the one before, in one statement; returns the ids written.
        ///
        /// The join is pinned to a nested loop of primary-key lookups (hash and merge joins off
        /// for this statement): right after a bulk import the statistics undercount a tenant's
        /// rows, and the planner then hashes all of the tenant's subscriptions for every
        /// chunk, which makes a bill run quadratic.
        pub(crate) async fn update_subscriptions(
            tx: &mut Tx,
            tenant: TenantId,
            subs: &[&Subscription],
        ) -> crate::error::Result<HashSet<Uuid>> {
            let ids: Vec<Uuid> = subs.iter().map(|s| s.id.as_uuid()).collect();
            let revisions: Vec<i64> = subs
                .iter()
                .map(|s| i64::try_from(s.revision).unwrap_or(i64::MAX))
                .collect();
            let customers: Vec<Uuid> = subs.iter().map(|s| s.customer.as_uuid()).collect();
            // Sent as text and cast to `json` (the column's type): the server only validates
            // it. A `Json` bind would be declared `jsonb` and parsed into the binary form.
            let bodies: Vec<String> = subs
                .iter()
                .map(serde_json::to_string)
                .collect::<std::result::Result<_, _>>()
                .map_err(|source| SqlError::Json {
                    what: "subscription",
                    source,
                })?;
            for body in &bodies {
                input::document_text("subscription", body)?;
            }
            sqlx::raw_sql("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
                .execute(&mut **tx)
                .await
                .during("pin the update's plan")?;
            let updated: Vec<Uuid> = sqlx::query_scalar(
                "UPDATE billing_subscriptions AS s \
                 SET revision = u.revision, body = u.body::json, customer_id = u.customer \
                 FROM UNNEST($2::uuid[], $3::bigint[], $4::uuid[], $5::text[]) \
                   AS u(id, revision, customer, body) \
                 WHERE s.tenant_id = $1 AND s.subscription_id = u.id \
                   AND s.revision = u.revision - 1 \
                 RETURNING s.subscription_id",
            )
            .bind(tenant.as_uuid())
            .bind(ids)
            .bind(revisions)
            .bind(customers)
            .bind(bodies)
            .fetch_all(&mut **tx)
            .await
            .during("update subscriptions")?;
            sqlx::raw_sql("RESET enable_hashjoin; RESET enable_mergejoin")
                .execute(&mut **tx)
                .await
                .during("pin the update's plan")?;
            Ok(updated.into_iter().collect())
        }

        /// The stored revisions of `ids` (absent: unknown subscription); with `lock`, the rows
        /// are locked (in id order) until the transaction ends.
        pub(crate) async fn revisions_of(
            tx: &mut Tx,
            tenant: TenantId,
            ids: &[Uuid],
            lock: bool,
        ) -> crate::error::Result<HashMap<Uuid, i64>> {
            let sql = if lock {
                "SELECT subscription_id, revision FROM billing_subscriptions \
                 WHERE tenant_id = $1 AND subscription_id = ANY($2) \
                 ORDER BY subscription_id FOR UPDATE"
            } else {
                "SELECT subscription_id, revision FROM billing_subscriptions \
                 WHERE tenant_id = $1 AND subscription_id = ANY($2)"
            };
            let rows: Vec<(Uuid, i64)> = sqlx::query_as(sql)
            .bind(tenant.as_uuid())
            .bind(ids)
            .fetch_all(&mut **tx)
            .await
            .during("read revisions")?;
            Ok(rows.into_iter().collect())
        }

        /// Which of `keys` are stored document keys.
        pub(crate) async fn existing_keys(
            tx: &mut Tx,
            tenant: TenantId,
            keys: &[&str],
        ) -> crate::error::Result<HashSet<String>> {
            let stored: Vec<String> = sqlx::query_scalar(
                "SELECT doc_key FROM billing_invoices WHERE tenant_id = $1 AND doc_key = ANY($2)",
            )
            .bind(tenant.as_uuid())
            .bind(keys)
            .fetch_all(&mut **tx)
            .await
            .during("read document keys")?;
            Ok(stored.into_iter().collect())
        }

        /// Inserts numbered invoices (key, invoice) with status `status`, in one statement.
        pub(crate) async fn insert_invoices(
            tx: &mut Tx,
            tenant: TenantId,
            status: &str,
            rows: &[(&str, &Invoice)],
        ) -> crate::error::Result<Written> {
            let ids: Vec<Uuid> = rows.iter().map(|(_, i)| i.id.as_uuid()).collect();
            let keys: Vec<&str> = rows.iter().map(|(k, _)| *k).collect();
            let customers: Vec<Uuid> = rows.iter().map(|(_, i)| i.customer.as_uuid()).collect();
            let numbers: Vec<Option<i64>> = rows
                .iter()
                .map(|(_, i)| i.number.map(|n| i64::try_from(n.0).unwrap_or(i64::MAX)))
                .collect();
            let dates: Vec<chrono::NaiveDate> = rows.iter().map(|(_, i)| i.issue_date).collect();
            let currencies: Vec<&str> = rows.iter().map(|(_, i)| i.currency.code()).collect();
            let totals: Vec<rust_decimal::Decimal> =
                rows.iter().map(|(_, i)| i.total.amount()).collect();
            let bodies: Vec<sqlx::types::Json<Box<serde_json::value::RawValue>>> = rows
                .iter()
                .map(|(_, i)| input::document("invoice", *i).map(sqlx::types::Json))
                .collect::<crate::error::Result<_>>()?;
            let done = sqlx::query(
                "INSERT INTO billing_invoices (tenant_id, invoice_id, doc_key, customer_id, \
                   number, status, issue_date, currency, total, body) \
                 SELECT $1, u.id, u.doc_key, u.customer, u.number, $2, u.issue_date, \
                   u.currency, u.total, u.body \
                 FROM UNNEST($3::uuid[], $4::text[], $5::uuid[], $6::bigint[], $7::date[], \
                   $8::text[], $9::numeric[], $10::jsonb[]) \
                   AS u(id, doc_key, customer, number, issue_date, currency, total, body)",
            )
            .bind(tenant.as_uuid())
            .bind(status)
            .bind(ids)
            .bind(keys)
            .bind(customers)
            .bind(numbers)
            .bind(dates)
            .bind(currencies)
            .bind(totals)
            .bind(bodies)
            .execute(&mut **tx)
            .await;
            match done {
                Ok(done) => Ok(Written::Rows(done.rows_affected())),
                Err(e) if crate::error::is_unique_violation(&e) => Ok(Written::UniqueViolation),
                Err(e) => Err(e).during("write invoices"),
            }
        }

        /// Adds pending charges in one statement (an id already stored is skipped).
        pub(crate) async fn insert_pending(
            tx: &mut Tx,
            tenant: TenantId,
            charges: &[&PendingCharge],
        ) -> crate::error::Result<()> {
            let ids: Vec<Uuid> = charges.iter().map(|c| c.id.as_uuid()).collect();
            let customers: Vec<Uuid> = charges.iter().map(|c| c.customer.as_uuid()).collect();
            let bodies: Vec<sqlx::types::Json<Box<serde_json::value::RawValue>>> =
                documents("pending charge", charges)?
                    .into_iter()
                    .map(sqlx::types::Json)
                    .collect();
            sqlx::query(
                "INSERT INTO billing_pending_charges (tenant_id, charge_id, customer_id, \
                   consumed, body) \
                 SELECT $1, u.id, u.customer, false, u.body \
                 FROM UNNEST($2::uuid[], $3::uuid[], $4::jsonb[]) WITH ORDINALITY \
                   AS u(id, customer, body, ord) \
                 ORDER BY u.ord \
                 ON CONFLICT (tenant_id, charge_id) DO NOTHING",
            )
            .bind(tenant.as_uuid())
            .bind(ids)
            .bind(customers)
            .bind(bodies)
            .execute(&mut **tx)
            .await
            .during("write pending charges")?;
            Ok(())
        }

        /// Marks pending charges consumed in one statement (kept, so that a retried add stays
        /// a no-op): only those not consumed yet; returns how many were.
        pub(crate) async fn consume_pending(
            tx: &mut Tx,
            tenant: TenantId,
            ids: &[Uuid],
        ) -> crate::error::Result<u64> {
            let done = sqlx::query(
                "UPDATE billing_pending_charges SET consumed = true \
                 WHERE tenant_id = $1 AND charge_id = ANY($2) AND NOT consumed",
            )
            .bind(tenant.as_uuid())
            .bind(ids)
            .execute(&mut **tx)
            .await
            .during("consume pending charges")?;
            Ok(done.rows_affected())
        }

        /// Locks the stored charges of `ids` (in id order, so that two transactions cannot
        /// deadlock on them) until the transaction ends, and says whether each is consumed
        /// (absent: never added). A transaction that consumed one of them concurrently is
        /// waited for, and its write is seen.
        pub(crate) async fn lock_pending(
            tx: &mut Tx,
            tenant: TenantId,
            ids: &[Uuid],
        ) -> crate::error::Result<HashMap<Uuid, bool>> {
            let rows: Vec<(Uuid, bool)> = sqlx::query_as(
                "SELECT charge_id, consumed FROM billing_pending_charges \
                 WHERE tenant_id = $1 AND charge_id = ANY($2) \
                 ORDER BY charge_id FOR UPDATE",
            )
            .bind(tenant.as_uuid())
            .bind(ids)
            .fetch_all(&mut **tx)
            .await
            .during("lock pending charges")?;
            Ok(rows.into_iter().collect())
        }
    }
}

impl CatalogStore for SqlStore {
    async fn put_product(&self, tenant: TenantId, product: Product) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO billing_products (tenant_id, product_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, product_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(product.id.as_uuid()),
                    body("product", &product)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    async fn put_plan(&self, tenant: TenantId, plan: Plan) -> Result<()> {
        plan.validate()?;
        let plan_body = body("plan", &plan)?;
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let product = d::docs::scalar_i64(
                &mut tx,
                "SELECT CAST(1 AS BIGINT) FROM billing_products WHERE tenant_id = $1 AND product_id = $2",
                &[id(tenant), Bind::Uuid(plan.product.as_uuid())],
            )
            .await
            .map_err(storage)?;
            if product.is_none() {
                return Err(BillingError::UnknownProduct(plan.product));
            }
            let sql = if d::IS_POSTGRES {
                "SELECT body FROM billing_plans WHERE tenant_id = $1 AND plan_id = $2 FOR UPDATE"
            } else {
                "SELECT body FROM billing_plans WHERE tenant_id = $1 AND plan_id = $2"
            };
            let old = d::docs::bodies(&mut tx, sql, &[id(tenant), Bind::Uuid(plan.id.as_uuid())])
                .await
                .map_err(storage)?;
            if let Some(old) = old.into_iter().next() {
                let old: Plan = from_json("plan", old).map_err(storage)?;
                let kept = old.versions().len() <= plan.versions().len()
                    && old.versions().iter().zip(plan.versions()).all(|(a, b)| a == b);
                if !kept || old.interval != plan.interval || old.timing != plan.timing {
                    return Err(BillingError::InvalidPlan {
                        plan: plan.id,
                        reason: "stored price versions and the billing shape are immutable; add a version instead",
                    });
                }
            }
            d::docs::execute(
                &mut tx,
                "INSERT INTO billing_plans (tenant_id, plan_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, plan_id) DO UPDATE SET body = excluded.body",
                &[id(tenant), Bind::Uuid(plan.id.as_uuid()), plan_body],
            )
            .await
            .map_err(storage)?;
            tx.commit().await.during("commit plan").map_err(storage)
        })
    }

    async fn plan(&self, tenant: TenantId, plan: PlanId) -> Result<Option<Plan>> {
        self.db
            .read_one(
                tenant,
                "plan",
                "SELECT body FROM billing_plans WHERE tenant_id = $1 AND plan_id = $2",
                &[id(tenant), Bind::Uuid(plan.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn plans(&self, tenant: TenantId) -> Result<Vec<Plan>> {
        self.db
            .read_all(
                tenant,
                "plan",
                "SELECT body FROM billing_plans WHERE tenant_id = $1 ORDER BY plan_id",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }
}

impl SubscriptionStore for SqlStore {
    async fn put_account(&self, tenant: TenantId, account: CustomerAccount) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO billing_accounts (tenant_id, customer_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, customer_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(account.customer.as_uuid()),
                    body("account", &account)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    async fn account(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Option<CustomerAccount>> {
        self.db
            .read_one(
                tenant,
                "account",
                "SELECT body FROM billing_accounts WHERE tenant_id = $1 AND customer_id = $2",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn accounts(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<Vec<CustomerAccount>> {
        self.customer_bodies(tenant, "SELECT body FROM billing_accounts", customers, "")
            .await
    }

    async fn insert_subscription(
        &self,
        tenant: TenantId,
        subscription: Subscription,
    ) -> Result<()> {
        let written = self
            .db
            .write(
                tenant,
                "INSERT INTO billing_subscriptions (tenant_id, subscription_id, customer_id, \
                 revision, body) VALUES ($1, $2, $3, $4, $5)",
                &[
                    id(tenant),
                    Bind::Uuid(subscription.id.as_uuid()),
                    Bind::Uuid(subscription.customer.as_uuid()),
                    Bind::I64(i64::try_from(subscription.revision).unwrap_or(i64::MAX)),
                    body("subscription", &subscription)?,
                ],
            )
            .await
            .map_err(storage)?;
        match written {
            Written::UniqueViolation => Err(BillingError::AlreadyExists {
                what: "subscription",
                id: subscription.id.to_string(),
            }),
            Written::Rows(_) => Ok(()),
        }
    }

    async fn subscription(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Option<Subscription>> {
        self.db
            .read_one(
                tenant,
                "subscription",
                "SELECT body FROM billing_subscriptions WHERE tenant_id = $1 AND subscription_id = $2",
                &[id(tenant), Bind::Uuid(subscription.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn subscriptions_page(
        &self,
        tenant: TenantId,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let limit = Bind::I64(i64::try_from(limit).unwrap_or(i64::MAX));
        let found = match after {
            Some(after) => {
                self.db
                    .read_all(
                        tenant,
                        "subscription",
                        "SELECT body FROM billing_subscriptions \
                         WHERE tenant_id = $1 AND subscription_id > $2 \
                         ORDER BY subscription_id LIMIT $3",
                        &[id(tenant), Bind::Uuid(after.as_uuid()), limit],
                    )
                    .await
            }
            None => {
                self.db
                    .read_all(
                        tenant,
                        "subscription",
                        "SELECT body FROM billing_subscriptions WHERE tenant_id = $1 \
                         ORDER BY subscription_id LIMIT $2",
                        &[id(tenant), limit],
                    )
                    .await
            }
        };
        found.map_err(storage)
    }

    async fn subscriptions_of(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<Subscription>> {
        self.db
            .read_all(
                tenant,
                "subscription",
                "SELECT body FROM billing_subscriptions WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY subscription_id",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }
}

impl InvoiceStore for SqlStore {
    async fn add_pending_charge(&self, tenant: TenantId, charge: PendingCharge) -> Result<bool> {
        let written = self
            .db
            .write(
                tenant,
                crate::keyed::INSERT_PENDING_CHARGE,
                &crate::keyed::pending_charge_binds(tenant, &charge)?,
            )
            .await
            .map_err(storage)?;
        Ok(written == Written::Rows(1))
    }

    async fn pending_charges(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<PendingCharge>> {
        self.db
            .read_all(
                tenant,
                "pending charge",
                "SELECT body FROM billing_pending_charges \
                 WHERE tenant_id = $1 AND customer_id = $2 AND NOT consumed ORDER BY seq",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn pending_charges_for(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<Vec<PendingCharge>> {
        self.customer_bodies(
            tenant,
            "SELECT body FROM billing_pending_charges",
            customers,
            "AND NOT consumed ORDER BY seq",
        )
        .await
    }

    async fn commit(&self, tenant: TenantId, commit: BillingCommit) -> Result<CommitResult> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            match d::billing::apply_commit(&mut tx, tenant, commit).await? {
                Applied::Done(result) => {
                    tx.commit().await.during("commit billing").map_err(storage)?;
                    Ok(result)
                }
                Applied::Refused(e) => {
                    tx.rollback().await.during("roll back billing").map_err(storage)?;
                    Err(e)
                }
            }
        })
    }

    /// One transaction for the whole batch: a stale subscription's commit is skipped (its
    /// slot holds the error) before it writes anything, the rest commit together.
    async fn commit_batch(
        &self,
        tenant: TenantId,
        commits: Vec<BillingCommit>,
    ) -> Result<Vec<Result<CommitResult>>> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let results = d::billing::apply_batch(&mut tx, tenant, commits)
                .await
                .map_err(storage)?;
            tx.commit().await.during("commit billing batch").map_err(storage)?;
            Ok(results)
        })
    }

    async fn invoice(&self, tenant: TenantId, invoice: InvoiceId) -> Result<Option<Invoice>> {
        self.db
            .read_one(
                tenant,
                "invoice",
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2",
                &[id(tenant), Bind::Uuid(invoice.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn invoices_of(&self, tenant: TenantId, customer: CustomerId) -> Result<Vec<Invoice>> {
        self.db
            .read_all(
                tenant,
                "invoice",
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY issue_date, number NULLS FIRST, seq",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn set_invoice_status(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        to: InvoiceStatus,
    ) -> Result<Invoice> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let sql = if d::IS_POSTGRES {
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE"
            } else {
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2"
            };
            let stored = d::docs::bodies(&mut tx, sql, &[id(tenant), Bind::Uuid(invoice.as_uuid())])
                .await
                .map_err(storage)?;
            let Some(stored) = stored.into_iter().next() else {
                return Err(BillingError::InvoiceNotFound(invoice));
            };
            let mut stored: Invoice = from_json("invoice", stored).map_err(storage)?;
            let was = stored.status;
            stored.transition(to)?;
            if was == InvoiceStatus::Draft && to == InvoiceStatus::Open {
                let n = d::numbers::reserve(&mut tx, tenant, INVOICE_SERIES, 1).await.map_err(storage)?;
                stored.number = Some(number(n));
            }
            let binds = invoice_binds(tenant, &stored)?;
            d::docs::execute(
                &mut tx,
                "UPDATE billing_invoices SET number = $5, status = $6, body = $10 \
                 WHERE tenant_id = $1 AND invoice_id = $2 \
                   AND doc_key = $3 AND customer_id = $4 AND issue_date = $7 AND currency = $8 \
                   AND total = $9",
                &binds,
            )
            .await
            .map_err(storage)?;
            tx.commit().await.during("commit invoice status").map_err(storage)?;
            Ok(stored)
        })
    }

    async fn insert_credit_note(&self, tenant: TenantId, note: CreditNote) -> Result<CreditNote> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let note = d::keyed::insert_credit_note(&mut tx, tenant, note).await?;
            tx.commit().await.during("commit credit note").map_err(storage)?;
            Ok(note)
        })
    }

    async fn idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>> {
        self.keyed_record(tenant, key).await.map_err(storage)
    }

    async fn add_pending_charge_keyed(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
        keyed: &KeyedRequest,
    ) -> Result<KeyedWrite<bool>> {
        self.add_pending_keyed(tenant, charge, keyed).await
    }

    async fn insert_credit_note_keyed(
        &self,
        tenant: TenantId,
        note: CreditNote,
        keyed: &KeyedRequest,
    ) -> Result<KeyedWrite<CreditNote>> {
        self.insert_note_keyed(tenant, note, keyed).await
    }

    async fn credit_notes_of(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Vec<CreditNote>> {
        self.db
            .read_all(
                tenant,
                "credit note",
                "SELECT body FROM billing_credit_notes WHERE tenant_id = $1 AND invoice_id = $2 \
                 ORDER BY seq",
                &[id(tenant), Bind::Uuid(invoice.as_uuid())],
            )
            .await
            .map_err(storage)
    }
}
