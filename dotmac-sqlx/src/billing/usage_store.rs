//! [`UsageStore`]: rated usage events (the storage itself is `crate::usage`).

use super::*;

impl UsageStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.append_usage", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), events = events.len()))]
    async fn append(&self, tenant: TenantId, events: &[UsageEvent]) -> Result<Vec<bool>> {
        self.db.append_usage(tenant, events).await.map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.usage_events_between", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageEvent>> {
        self.db
            .usage_between(tenant, customer, meter, from, to)
            .await
            .map_err(storage)
    }
}
