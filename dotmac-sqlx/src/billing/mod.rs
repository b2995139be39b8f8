//! `dotmac-billing`'s storage traits: catalogue, accounts, subscriptions, invoices, pending
//! charges and credit notes (usage events are [`crate::usage`]'s, payment ledgers and dunning
//! states [`crate::collections`]').
//!
//! One file per concern: this module holds the error mapping and the binds shared by
//! everything below; [`rows`] the stored JSON documents as this crate's own types (the
//! schema); [`commit`] the batch commit algorithm (written once for both backends);
//! `sqlite` and `postgres` the per-backend statements it runs; and one file per storage
//! trait implementation (`catalog`, `subscriptions`, `invoices`).

mod catalog;
mod commit;
mod invoices;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod rows;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
mod subscriptions;

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
        body("invoice", &rows::InvoiceRow::from(invoice))?,
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
    #[tracing::instrument(name = "dotmac.store.read_customers", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), customers = customers.len()))]
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
