//! SQLite's statements of the billing stores: multi-row `INSERT`s and `IN` lists, 1,000 rows a
//! statement (SQLite has no array parameters).

#![allow(unused_imports)]

use super::*;
use crate::backend::sqlite::stores::*;
use crate::dialect::sqlite::*;

pub(crate) use super::commit::sqlite::{apply_batch, apply_commit, apply_each};

/// Rows per multi-row statement: at most 10 parameters a row stays far under SQLite's
/// 32,766 bound parameters.
const ROWS: usize = 1000;

/// Pushes `(?, ?, …)`, binding each of `values`: the `IN` list of the keyed
/// statements below (SQLite has no array parameter).
fn push_in_list<'t, T>(query: &mut sqlx::QueryBuilder<Db>, values: impl IntoIterator<Item = T>)
where
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
        query
            .push(" WHERE tenant_id = ")
            .push_bind(tenant.as_uuid());
        query.push(" AND ").push(column).push(" IN ");
        push_in_list(&mut query, chunk.iter().copied());
        query.push(" ").push(tail);
        let rows = query
            .build()
            .fetch_all(&mut **tx)
            .await
            .during("read records")?;
        for row in &rows {
            let body: sqlx::types::Json<T> = row.try_get("body").during("read record body")?;
            out.push(body.0);
        }
    }
    Ok(out)
}

/// The charges (pending or invoiced) of `subscriptions` whose period starts on or after day
/// `since` (`period_day`, migration 0017), 1,000 subscriptions a query.
pub(crate) async fn charges_of_subscriptions(
    tx: &mut Tx,
    tenant: TenantId,
    subscriptions: &[Uuid],
    since: i64,
) -> crate::error::Result<Vec<PendingCharge>> {
    let mut out = Vec::new();
    for chunk in subscriptions.chunks(ROWS) {
        let mut query = sqlx::QueryBuilder::<Db>::new(
            "SELECT body FROM billing_pending_charges WHERE tenant_id = ",
        );
        query.push_bind(tenant.as_uuid());
        query.push(" AND subscription_id IN ");
        push_in_list(&mut query, chunk.iter().copied());
        query.push(" AND period_day >= ").push_bind(since);
        query.push(" ORDER BY seq");
        let rows = query
            .build()
            .fetch_all(&mut **tx)
            .await
            .during("read billed usage")?;
        for row in &rows {
            let body: sqlx::types::Json<PendingCharge> =
                row.try_get("body").during("read billed usage")?;
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
        let stored: Vec<rows::SubscriptionRow> = chunk
            .iter()
            .map(|s| rows::SubscriptionRow::from(*s))
            .collect();
        let bodies = documents("subscription", &stored.iter().collect::<Vec<_>>())?;
        let mut query = sqlx::QueryBuilder::<Db>::new(
            "UPDATE billing_subscriptions SET revision = u.column3, body = u.column4, \
             customer_id = u.column5 FROM (",
        );
        query.push_values(chunk.iter().zip(bodies), |mut row, (sub, body)| {
            let revision = i64::try_from(sub.revision()).unwrap_or(i64::MAX);
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
        let rows = query
            .build()
            .fetch_all(&mut **tx)
            .await
            .during("update subscriptions")?;
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
        let mut query = sqlx::QueryBuilder::<Db>::new(format!("{select} WHERE tenant_id = "));
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
        let rows = query
            .build()
            .fetch_all(&mut **tx)
            .await
            .during("read document keys")?;
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
            .map(|(_, invoice)| input::document("invoice", &rows::InvoiceRow::from(*invoice)))
            .collect::<crate::error::Result<Vec<_>>>()?;
        let mut query = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO billing_invoices (tenant_id, invoice_id, doc_key, customer_id, \
             number, status, issue_date, currency, total, body) ",
        );
        query.push_values(
            chunk.iter().zip(bodies),
            |mut row, ((key, invoice), body)| {
                row.push_bind(tenant.as_uuid())
                    .push_bind(invoice.id.as_uuid())
                    .push_bind(*key)
                    .push_bind(invoice.customer.as_uuid())
                    .push_bind(
                        invoice
                            .number
                            .map(|n| i64::try_from(n.0).unwrap_or(i64::MAX)),
                    )
                    .push_bind(status)
                    .push_bind(invoice.issue_date)
                    .push_bind(invoice.currency.code())
                    .push_bind(dec(invoice.total.amount()))
                    .push_bind(sqlx::types::Json(body));
            },
        );
        match query.build().execute(&mut **tx).await {
            Err(e) if crate::error::is_unique_violation(&e) => {
                return Ok(Written::UniqueViolation);
            }
            other => other.during("write invoices")?,
        };
    }
    Ok(Written::Rows(u64::try_from(rows.len()).unwrap_or(u64::MAX)))
}

/// Adds pending charges (an id already stored, or repeated, is skipped); returns the ids
/// inserted.
///
/// Without `RETURNING`: each statement's row count says whether it added every id it could
/// (a rating run's fresh charges, the common case), and only a statement that skipped some (a
/// retried add) reads back what it added: its rows are the table's newest, since SQLite has
/// one writer and `seq` only grows. `RETURNING` hands each id back as a row of its own: in
/// Python's `sqlite3`, 100,000 charges took 2.95 s with it against 2.39 s without
/// (docs/benchmarks.md), and sqlx passes each row between threads.
pub(crate) async fn insert_pending(
    tx: &mut Tx,
    tenant: TenantId,
    charges: &[&PendingCharge],
) -> crate::error::Result<std::collections::HashSet<Uuid>> {
    let mut inserted = std::collections::HashSet::with_capacity(charges.len());
    let mut fresh = std::collections::HashSet::with_capacity(charges.len().min(ROWS));
    for chunk in charges.chunks(ROWS) {
        let bodies = documents("pending charge", chunk)?;
        let mut query = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO billing_pending_charges (tenant_id, charge_id, customer_id, \
             consumed, body, subscription_id, period_day) ",
        );
        query.push_values(chunk.iter().zip(bodies), |mut row, (charge, body)| {
            row.push_bind(tenant.as_uuid())
                .push_bind(charge.id.as_uuid())
                .push_bind(charge.customer.as_uuid())
                .push_bind(false)
                .push_bind(sqlx::types::Json(body))
                .push_bind(charge.subscription.map(|s| s.as_uuid()))
                .push_bind(crate::keyed::period_day(charge));
        });
        query.push(" ON CONFLICT (tenant_id, charge_id) DO NOTHING");
        let added = query
            .build()
            .execute(&mut **tx)
            .await
            .during("write pending charges")?
            .rows_affected();
        // The ids this statement could add: its own, once each, less those an earlier
        // statement of this call added.
        fresh.clear();
        fresh.extend(
            chunk
                .iter()
                .map(|c| c.id.as_uuid())
                .filter(|id| !inserted.contains(id)),
        );
        if u64::try_from(fresh.len()).is_ok_and(|n| n == added) {
            inserted.extend(fresh.drain());
            continue;
        }
        let rows =
            sqlx::query("SELECT charge_id FROM billing_pending_charges ORDER BY seq DESC LIMIT $1")
                .bind(i64::try_from(added).unwrap_or(i64::MAX))
                .fetch_all(&mut **tx)
                .await
                .during("read back pending charges")?;
        for row in &rows {
            inserted.insert(
                row.try_get::<Uuid, _>("charge_id")
                    .during("read back pending charges")?,
            );
        }
    }
    Ok(inserted)
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
