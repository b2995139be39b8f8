//! PostgreSQL's statements of the billing stores: one `UNNEST` or `= ANY($n)` statement per
//! set, whatever its size.

#![allow(unused_imports)]

use super::*;
use crate::backend::postgres::stores::*;
use crate::dialect::postgres::*;

pub(crate) use super::commit::postgres::{apply_batch, apply_commit, apply_each};

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
    query
        .push(" WHERE tenant_id = ")
        .push_bind(tenant.as_uuid());
    query
        .push(" AND ")
        .push(column)
        .push(" = ANY(")
        .push_bind(ids)
        .push(") ");
    query.push(tail);
    let rows = query
        .build()
        .fetch_all(&mut **tx)
        .await
        .during("read records")?;
    rows.iter()
        .map(|row| {
            row.try_get::<sqlx::types::Json<T>, _>("body")
                .map(|b| b.0)
                .during("read record body")
        })
        .collect()
}

/// The charges (pending or invoiced) of `subscriptions` whose period starts on or after day
/// `since` (`period_day`, migration 0017), in one query.
pub(crate) async fn charges_of_subscriptions(
    tx: &mut Tx,
    tenant: TenantId,
    subscriptions: &[Uuid],
    since: i64,
) -> crate::error::Result<Vec<PendingCharge>> {
    // Pinned to the subscription index for this transaction (the read's own): while a rating
    // run adds its charges, the statistics can still say the table is empty (a new tenant,
    // or right after a VACUUM), which favours a scan of the whole, growing table for every
    // chunk (a re-rate of 100,000 subscriptions took 36 s instead of 4 s in such a state).
    sqlx::raw_sql("SET LOCAL enable_seqscan = off")
        .execute(&mut **tx)
        .await
        .during("pin the billed-usage read's plan")?;
    let rows = sqlx::query(
        "SELECT body FROM billing_pending_charges \
         WHERE tenant_id = $1 AND subscription_id = ANY($2) AND period_day >= $3 \
         ORDER BY seq",
    )
    .bind(tenant.as_uuid())
    .bind(subscriptions)
    .bind(since)
    .fetch_all(&mut **tx)
    .await
    .during("read billed usage")?;
    rows.iter()
        .map(|row| {
            row.try_get::<sqlx::types::Json<PendingCharge>, _>("body")
                .map(|b| b.0)
                .during("read billed usage")
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
        .map(|s| i64::try_from(s.revision()).unwrap_or(i64::MAX))
        .collect();
    let customers: Vec<Uuid> = subs.iter().map(|s| s.customer.as_uuid()).collect();
    // Sent as text and cast to `json` (the column's type): the server only validates
    // it. A `Json` bind would be declared `jsonb` and parsed into the binary form.
    let bodies: Vec<String> = subs
        .iter()
        .map(|s| serde_json::to_string(&rows::SubscriptionRow::from(*s)))
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
    let totals: Vec<rust_decimal::Decimal> = rows.iter().map(|(_, i)| i.total.amount()).collect();
    let bodies: Vec<sqlx::types::Json<Box<serde_json::value::RawValue>>> = rows
        .iter()
        .map(|(_, i)| {
            input::document("invoice", &rows::InvoiceRow::from(*i)).map(sqlx::types::Json)
        })
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

/// Adds pending charges in one statement (an id already stored, or repeated, is skipped);
/// returns the ids inserted.
pub(crate) async fn insert_pending(
    tx: &mut Tx,
    tenant: TenantId,
    charges: &[&PendingCharge],
) -> crate::error::Result<std::collections::HashSet<Uuid>> {
    let ids: Vec<Uuid> = charges.iter().map(|c| c.id.as_uuid()).collect();
    let customers: Vec<Uuid> = charges.iter().map(|c| c.customer.as_uuid()).collect();
    // Sent as text and cast to `json` (the column's type, migration 0018): the server only
    // validates it. A `Json` bind would be declared `jsonb` and parsed into the binary form.
    let bodies: Vec<String> = documents("pending charge", charges)?
        .into_iter()
        .map(|raw| Box::<str>::from(raw).into_string())
        .collect();
    let subscriptions: Vec<Option<Uuid>> = charges
        .iter()
        .map(|c| c.subscription.map(|s| s.as_uuid()))
        .collect();
    let days: Vec<Option<i64>> = charges
        .iter()
        .map(|c| crate::keyed::period_day(c))
        .collect();
    let rows = sqlx::query(
        "INSERT INTO billing_pending_charges (tenant_id, charge_id, customer_id, \
           consumed, body, subscription_id, period_day) \
         SELECT $1, u.id, u.customer, false, u.body::json, u.subscription, u.day \
         FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::bigint[]) \
           WITH ORDINALITY AS u(id, customer, body, subscription, day, ord) \
         ORDER BY u.ord \
         ON CONFLICT (tenant_id, charge_id) DO NOTHING RETURNING charge_id",
    )
    .bind(tenant.as_uuid())
    .bind(ids)
    .bind(customers)
    .bind(bodies)
    .bind(subscriptions)
    .bind(days)
    .fetch_all(&mut **tx)
    .await
    .during("write pending charges")?;
    rows.iter()
        .map(|row| {
            row.try_get::<Uuid, _>("charge_id")
                .during("write pending charges")
        })
        .collect()
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
