//! Storage of usage events: tenant-scoped and idempotent by event id.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use dotmac_core::{CustomerId, FastSet, MeterId, TenantId, UsageEventId};

use crate::error::UsageError;
use crate::event::UsageEvent;

/// Where usage events are kept. Every call is scoped to a tenant.
pub trait UsageStore: Send + Sync {
    /// Stores the events whose ids are new for the tenant and returns, per event, whether it
    /// was new (a replayed event is stored once).
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> impl Future<Output = Result<Vec<bool>, UsageError>> + Send;

    /// The events of one customer and meter with `from <= timestamp < to`, in timestamp order.
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<UsageEvent>, UsageError>> + Send;
}

/// A shared or borrowed store is a store: services can own an `Arc` of one store, or borrow it.
impl<T: UsageStore + ?Sized> UsageStore for &T {
    fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> impl Future<Output = Result<Vec<bool>, UsageError>> + Send {
        (**self).append_events(tenant, events)
    }

    fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<UsageEvent>, UsageError>> + Send {
        (**self).events_between(tenant, customer, meter, from, to)
    }
}

impl<T: UsageStore + ?Sized> UsageStore for std::sync::Arc<T> {
    fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> impl Future<Output = Result<Vec<bool>, UsageError>> + Send {
        (**self).append_events(tenant, events)
    }

    fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<UsageEvent>, UsageError>> + Send {
        (**self).events_between(tenant, customer, meter, from, to)
    }
}

#[derive(Debug, Default)]
struct TenantUsage {
    ids: FastSet<UsageEventId>,
    events: Vec<UsageEvent>,
}

/// A [`UsageStore`] in memory, for tests and examples.
#[derive(Debug, Default)]
pub struct InMemoryUsageStore {
    tenants: Mutex<HashMap<TenantId, TenantUsage>>,
}

impl InMemoryUsageStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl UsageStore for InMemoryUsageStore {
    async fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> Result<Vec<bool>, UsageError> {
        // A panic while holding the lock cannot leave a half-written event: keep going.
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let usage = tenants.entry(tenant).or_default();
        Ok(events
            .iter()
            .map(|event| {
                let new = usage.ids.insert(event.id);
                if new {
                    usage.events.push(event.clone());
                }
                new
            })
            .collect())
    }

    async fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageEvent>, UsageError> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<UsageEvent> = tenants
            .get(&tenant)
            .map(|usage| {
                usage
                    .events
                    .iter()
                    .filter(|e| {
                        e.customer == customer
                            && e.meter == meter
                            && e.timestamp >= from
                            && e.timestamp < to
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by_key(|e| (e.timestamp, e.id));
        Ok(found)
    }
}
