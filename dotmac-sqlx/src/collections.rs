//! `dotmac-collections`' storage traits: payment ledgers (with their idempotency keys) and
//! dunning states.

use dotmac_collections::{
    CollectionsError, DunningState, DunningStore, IdempotencyKey, IdempotencyRecord, LedgerEntry,
    PaymentStore, idempotency::KeyedWrite,
};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{CustomerId, InvoiceId, TenantId};

use crate::billing::id;
use crate::db::{dispatch, for_each_dialect};
use crate::docs::{Bind, Written, json};
use crate::error::{Context, SqlError};
use crate::store::SqlStore;

type Result<T> = std::result::Result<T, CollectionsError>;

/// Storage failures as collections errors: a duplicate key keeps its domain meaning, domain
/// errors pass through, and every other failure is [`CollectionsError::Storage`] with its kind
/// and cause.
pub(crate) fn storage(error: SqlError) -> CollectionsError {
    match error {
        SqlError::Duplicate { what, key } => CollectionsError::AlreadyExists { what, id: key },
        SqlError::Core(core) => CollectionsError::Core(core),
        SqlError::Billing(billing) => CollectionsError::Billing(billing),
        other => CollectionsError::Storage(other.into()),
    }
}

fn body<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Bind> {
    json(what, value).map_err(storage)
}

for_each_dialect! {
    /// Appends ledger entries; a position already taken (a concurrent writer appended first)
    /// fails the whole call.
    pub(crate) async fn append_ledger(
        tx: &mut Tx,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
    ) -> Result<()> {
        for entry in entries {
            let written = docs::execute(
                tx,
                "INSERT INTO payment_ledger (tenant_id, customer_id, sequence, entry_date, body) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    id(tenant),
                    Bind::Uuid(customer.as_uuid()),
                    Bind::I64(i64::try_from(entry.sequence).unwrap_or(i64::MAX)),
                    Bind::Date(entry.on),
                    body("ledger entry", entry)?,
                ],
            )
            .await
            .map_err(storage)?;
            if written == Written::UniqueViolation {
                // Another writer appended at this position first: the caller's ledger is
                // stale. Nothing of this call is kept.
                return Err(CollectionsError::AlreadyExists {
                    what: "ledger entry",
                    id: format!("{customer}#{}", entry.sequence),
                });
            }
        }
        Ok(())
    }

    /// Saves a dunning state (replacing the invoice's).
    pub(crate) async fn save_dunning_state(
        tx: &mut Tx,
        tenant: TenantId,
        invoice: InvoiceId,
        state: &DunningState,
    ) -> Result<()> {
        docs::execute(
            tx,
            "INSERT INTO dunning_states (tenant_id, invoice_id, body) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET body = excluded.body",
            &[
                id(tenant),
                Bind::Uuid(invoice.as_uuid()),
                body("dunning state", state)?,
            ],
        )
        .await
        .map_err(storage)
        .map(|_| ())
    }
}

impl SqlStore {
    /// [`append_ledger`](sqlite::append_ledger), the events and `record`, in one transaction.
    pub(crate) async fn append_ledger_keyed(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        events: &[OutboxEvent],
        record: &IdempotencyRecord,
    ) -> Result<KeyedWrite<()>> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            if let Some(earlier) = d::keyed::claim(&mut tx, tenant, record)
                .await
                .map_err(storage)? {
                tx.rollback().await.during("roll back").map_err(storage)?;
                return Ok(KeyedWrite::Replayed(Box::new(earlier)));
            }
            d::collections::append_ledger(&mut tx, tenant, customer, entries).await?;
            d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
            tx.commit().await.during("commit ledger").map_err(storage)?;
            Ok(KeyedWrite::Written(()))
        })
    }
}

impl PaymentStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.append_ledger", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), entries = entries.len()))]
    async fn append_entries(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        events: &[OutboxEvent],
    ) -> Result<()> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            d::collections::append_ledger(&mut tx, tenant, customer, entries).await?;
            d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
            tx.commit().await.during("commit ledger").map_err(storage)
        })
    }

    #[tracing::instrument(name = "dotmac.store.payment_idempotency_record", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn payment_idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>> {
        self.keyed_record(tenant, key).await.map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.append_ledger_keyed", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), entries = entries.len()))]
    async fn append_entries_keyed(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        events: &[OutboxEvent],
        record: &IdempotencyRecord,
    ) -> Result<KeyedWrite<()>> {
        self.append_ledger_keyed(tenant, customer, entries, events, record)
            .await
    }

    #[tracing::instrument(name = "dotmac.store.ledger_entries", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn entries(&self, tenant: TenantId, customer: CustomerId) -> Result<Vec<LedgerEntry>> {
        self.db
            .read_all(
                tenant,
                "ledger entry",
                "SELECT body FROM payment_ledger WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY sequence",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }
}

impl DunningStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.dunning_state", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn state(&self, tenant: TenantId, invoice: InvoiceId) -> Result<DunningState> {
        let state: Option<DunningState> = self
            .db
            .read_one(
                tenant,
                "dunning state",
                "SELECT body FROM dunning_states WHERE tenant_id = $1 AND invoice_id = $2",
                &[id(tenant), Bind::Uuid(invoice.as_uuid())],
            )
            .await
            .map_err(storage)?;
        Ok(state.unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.save_dunning_state", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn save_state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        state: DunningState,
        events: &[OutboxEvent],
    ) -> Result<()> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            d::collections::save_dunning_state(&mut tx, tenant, invoice, &state).await?;
            d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
            tx.commit().await.during("commit dunning state").map_err(storage)
        })
    }
}
