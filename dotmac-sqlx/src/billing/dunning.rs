//! [`DunningStore`]: dunning states per invoice.

use super::*;

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
    ) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO dunning_states (tenant_id, invoice_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(invoice.as_uuid()),
                    body("dunning state", &state)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }
}
