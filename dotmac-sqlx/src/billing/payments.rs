//! [`PaymentStore`]: payment ledgers.

use super::*;

impl PaymentStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.append_ledger", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn append(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
    ) -> Result<()> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            d::keyed::append_ledger(&mut tx, tenant, customer, entries).await?;
            tx.commit().await.during("commit ledger").map_err(storage)
        })
    }

    #[tracing::instrument(name = "dotmac.store.payment_idempotency_record", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn payment_idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>> {
        self.keyed_record(tenant, key).await
    }

    #[tracing::instrument(name = "dotmac.store.append_ledger_keyed", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn append_keyed(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        record: &IdempotencyRecord,
    ) -> Result<KeyedWrite<()>> {
        self.append_ledger_keyed(tenant, customer, entries, record)
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
