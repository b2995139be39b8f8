//! [`PaymentStore`]: payment ledgers.

use super::*;

impl PaymentStore for SqlStore {
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

    async fn payment_idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>> {
        self.keyed_record(tenant, key).await
    }

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
