//! [`UsageStore`]: rated usage events (the storage itself is `crate::usage`).

use super::*;

impl UsageStore for SqlStore {
    async fn append(&self, tenant: TenantId, events: &[UsageEvent]) -> Result<Vec<bool>> {
        self.db.append_usage(tenant, events).await.map_err(storage)
    }

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
