//! Billing writes inside an open transaction, shared by the plain store methods and their
//! keyed (idempotent) twins: a keyed write claims its idempotency key first, in the same
//! transaction as the write, so that the write and its key commit or roll back together and a
//! concurrent retry with the key waits for the first and then replays it (exactly one write).
//!
//! Keys live in the foundation's `idempotency_keys` table under one scope, [`SCOPE`], with the
//! [`IdempotencyRecord`] (request and result) as JSON in its `reference` column: no table of
//! its own, and [`Database::claim_idempotency_key`](crate::Database::claim_idempotency_key)
//! is the same claim.

use dotmac_billing::{
    BillingError, CreditNote, CreditRequest, IdempotentResult, Invoice, KeyedRequest, KeyedWrite,
    PendingCharge, credit_note,
};
use dotmac_core::TenantId;

use crate::billing::{body, id, number, storage};
use crate::db::{dispatch, for_each_dialect};
use crate::docs::{Bind, Written, from_json};
use crate::error::{Context, SqlError};
use crate::store::SqlStore;
use crate::tenants::IdempotencyClaim;

type Result<T> = std::result::Result<T, BillingError>;

/// The `idempotency_keys` scope of every money-moving key, billing's and collections': one key
/// space per tenant, so a key used for a payment cannot be used again for a refund or a credit
/// note (Stripe's semantics). (The name predates the split of collections out of billing and
/// is kept: stored keys carry it.)
pub(crate) const SCOPE: &str = "dotmac-billing";

/// Adds a pending charge; an id already stored is skipped (no row written).
pub(crate) const INSERT_PENDING_CHARGE: &str = "INSERT INTO billing_pending_charges \
     (tenant_id, charge_id, customer_id, consumed, body, subscription_id, period_day) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, charge_id) DO NOTHING";

pub(crate) fn pending_charge_binds(tenant: TenantId, charge: &PendingCharge) -> Result<Vec<Bind>> {
    Ok(vec![
        id(tenant),
        Bind::Uuid(charge.id.as_uuid()),
        Bind::Uuid(charge.customer.as_uuid()),
        Bind::Bool(false),
        body("pending charge", charge)?,
        Bind::OptUuid(charge.subscription.map(|s| s.as_uuid())),
        Bind::OptI64(period_day(charge)),
    ])
}

/// The first day of `charge`'s period as `billing_pending_charges.period_day` keeps it
/// (chrono's `num_days_from_ce`; migration 0017), for rating's read by subscription and period.
pub(crate) fn period_day(charge: &PendingCharge) -> Option<i64> {
    use chrono::Datelike;
    charge
        .period
        .map(|p| i64::from(p.start().num_days_from_ce()))
}

/// A record as the JSON text kept in `idempotency_keys.reference`: any domain's record
/// (billing's credit notes and charges, collections' payments and refunds share the table and
/// the key space).
pub(crate) fn record_text<Rec: serde::Serialize>(record: &Rec) -> crate::error::Result<String> {
    let text = serde_json::to_string(record).map_err(|source| SqlError::Json {
        what: "idempotency record",
        source,
    })?;
    // Checked like every other document, so a NUL in a request is the same error on both
    // backends before the key is claimed.
    crate::input::document_text("idempotency record", &text)?;
    Ok(text)
}

/// The record kept for a key. A record of another domain (a payment's key used again for a
/// credit note) is a well-formed record whose request is not this domain's: the key was
/// used for a different request, [`CoreError::IdempotencyKeyReused`](dotmac_core::CoreError).
/// Text that is no record at all is [`SqlError::Json`].
pub(crate) fn record_of<Rec: serde::de::DeserializeOwned>(text: &str) -> crate::error::Result<Rec> {
    serde_json::from_str(text).map_err(|source| {
        match serde_json::from_str::<
            dotmac_core::IdempotencyRecord<serde_json::Value, serde_json::Value>,
        >(text)
        {
            Ok(other) => SqlError::Core(dotmac_core::CoreError::IdempotencyKeyReused {
                key: other.key.as_str().to_owned(),
            }),
            Err(_) => SqlError::Json {
                what: "idempotency record",
                source,
            },
        }
    })
}

for_each_dialect! {
    /// Numbers and stores a credit note, re-checked against the notes already stored.
    pub(crate) async fn insert_credit_note(
        tx: &mut Tx,
        tenant: TenantId,
        mut note: CreditNote,
    ) -> Result<CreditNote> {
        // Locking the invoice row serialises notes against one invoice, so that two notes
        // built concurrently cannot over-credit it.
        let sql = if IS_POSTGRES {
            "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE"
        } else {
            "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2"
        };
        let invoice = docs::bodies(tx, sql, &[id(tenant), Bind::Uuid(note.invoice.as_uuid())])
            .await
            .map_err(storage)?;
        let Some(invoice) = invoice.into_iter().next() else {
            return Err(BillingError::InvoiceNotFound(note.invoice));
        };
        let invoice: crate::billing::rows::InvoiceRow =
            from_json("invoice", invoice).map_err(storage)?;
        let invoice = Invoice::from(invoice);
        let earlier = docs::bodies(
            tx,
            "SELECT body FROM billing_credit_notes WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY seq",
            &[id(tenant), Bind::Uuid(note.invoice.as_uuid())],
        )
        .await
        .map_err(storage)?
        .into_iter()
        .map(|b| from_json::<CreditNote>("credit note", b))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(storage)?;
        if earlier.iter().any(|n| n.id == note.id) {
            return Err(BillingError::AlreadyExists {
                what: "credit note",
                id: note.id.to_string(),
            });
        }
        credit_note(
            note.id,
            &invoice,
            &earlier,
            &CreditRequest::Lines(note.lines.clone()),
            note.issue_date,
            note.reason.clone(),
        )?;
        let n = numbers::reserve(tx, tenant, &note.number_series(), 1).await.map_err(storage)?;
        note.number = Some(number(n));
        let written = docs::execute(
            tx,
            "INSERT INTO billing_credit_notes (tenant_id, note_id, invoice_id, number, total, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                id(tenant),
                Bind::Uuid(note.id.as_uuid()),
                Bind::Uuid(note.invoice.as_uuid()),
                Bind::I64(n),
                Bind::Dec(note.total.amount()),
                body("credit note", &note)?,
            ],
        )
        .await
        .map_err(storage)?;
        if written == Written::UniqueViolation {
            return Err(BillingError::AlreadyExists {
                what: "credit note",
                id: note.id.to_string(),
            });
        }
        Ok(note)
    }

    /// Claims `record`'s key: `None` when it was new (the caller writes, then commits), the
    /// stored record when it was already there (the caller rolls back and replays).
    pub(crate) async fn claim<R, O>(
        tx: &mut Tx,
        tenant: TenantId,
        record: &dotmac_core::IdempotencyRecord<R, O>,
    ) -> crate::error::Result<Option<dotmac_core::IdempotencyRecord<R, O>>>
    where
        R: serde::Serialize + serde::de::DeserializeOwned,
        O: serde::Serialize + serde::de::DeserializeOwned,
    {
        let claim = tenants::claim_idempotency_key(
            tx,
            tenant,
            SCOPE,
            record.key.as_str(),
            &record_text(record)?,
            record.recorded_at,
        )
        .await?;
        match claim {
            IdempotencyClaim::Claimed => Ok(None),
            IdempotencyClaim::Replayed(text) => record_of(&text).map(Some),
        }
    }

    /// Replaces the record of a key claimed in this transaction (its result is known only
    /// after the write).
    pub(crate) async fn set_record<R: serde::Serialize, O: serde::Serialize>(
        tx: &mut Tx,
        tenant: TenantId,
        record: &dotmac_core::IdempotencyRecord<R, O>,
    ) -> crate::error::Result<()> {
        docs::execute(
            tx,
            "UPDATE idempotency_keys SET reference = $4 \
             WHERE tenant_id = $1 AND scope = $2 AND key = $3",
            &[
                id(tenant),
                Bind::Text(SCOPE.to_owned()),
                Bind::Text(record.key.as_str().to_owned()),
                Bind::Text(record_text(record)?),
            ],
        )
        .await?;
        Ok(())
    }
}

impl SqlStore {
    /// The record kept for an idempotency key, as billing's or collections' record type (one
    /// lookup for both domains: they share the key space).
    pub(crate) async fn keyed_record<Rec: serde::de::DeserializeOwned>(
        &self,
        tenant: TenantId,
        key: &dotmac_core::IdempotencyKey,
    ) -> crate::error::Result<Option<Rec>> {
        let text = dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let text = d::tenants::idempotency_reference(&mut tx, tenant, SCOPE, key.as_str()).await?;
            tx.commit().await.during("end read")?;
            text
        });
        text.as_deref().map(record_of).transpose()
    }

    /// Adds a pending charge and records `keyed` with whether it was added, in one
    /// transaction.
    pub(crate) async fn add_pending_keyed(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
        keyed: &KeyedRequest,
        events: &[dotmac_core::outbox::OutboxEvent],
    ) -> Result<KeyedWrite<bool>> {
        let binds = pending_charge_binds(tenant, &charge)?;
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let claimed = keyed.record(IdempotentResult::PendingCharge { added: false });
            if let Some(earlier) = d::keyed::claim(&mut tx, tenant, &claimed).await.map_err(storage)? {
                tx.rollback().await.during("roll back").map_err(storage)?;
                return Ok(KeyedWrite::Replayed(Box::new(earlier)));
            }
            let written = d::docs::execute(&mut tx, INSERT_PENDING_CHARGE, &binds)
                .await
                .map_err(storage)?;
            let added = written == Written::Rows(1);
            if added {
                let record = keyed.record(IdempotentResult::PendingCharge { added });
                d::keyed::set_record(&mut tx, tenant, &record).await.map_err(storage)?;
                d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
            }
            tx.commit().await.during("commit pending charge").map_err(storage)?;
            Ok(KeyedWrite::Written(added))
        })
    }

    /// Numbers and stores a credit note and records `keyed` with the note, in one
    /// transaction.
    pub(crate) async fn insert_note_keyed(
        &self,
        tenant: TenantId,
        note: CreditNote,
        keyed: &KeyedRequest,
        events: &[dotmac_core::outbox::OutboxEvent],
    ) -> Result<KeyedWrite<CreditNote>> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let claimed = keyed.record(IdempotentResult::CreditNote {
                credit_note: note.clone(),
            });
            if let Some(earlier) = d::keyed::claim(&mut tx, tenant, &claimed).await.map_err(storage)? {
                tx.rollback().await.during("roll back").map_err(storage)?;
                return Ok(KeyedWrite::Replayed(Box::new(earlier)));
            }
            let note = d::keyed::insert_credit_note(&mut tx, tenant, note).await?;
            let record = keyed.record(IdempotentResult::CreditNote {
                credit_note: note.clone(),
            });
            d::keyed::set_record(&mut tx, tenant, &record).await.map_err(storage)?;
            let events = dotmac_billing::internal::numbered_credit_note_events(&note, events.to_vec());
            d::outbox::insert_core(&mut tx, tenant, &events).await.map_err(storage)?;
            tx.commit().await.during("commit credit note").map_err(storage)?;
            Ok(KeyedWrite::Written(note))
        })
    }
}
