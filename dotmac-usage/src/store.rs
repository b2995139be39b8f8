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
    #[tracing::instrument(name = "dotmac.store.append_usage", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, events = events.len()))]
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

    #[tracing::instrument(name = "dotmac.store.usage_events_between", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
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

/// A counting `metrics` recorder and a minimal `tracing` subscriber for this crate's
/// observability tests (as in `dotmac-support`), without an exporter or `tracing-subscriber`
/// as dev-dependencies.
#[cfg(test)]
pub(crate) mod observe {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    /// Counts increments per `name{label=value,…}`.
    #[derive(Default)]
    pub(crate) struct Counting(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

    impl Counting {
        /// Every counter that moved, as `name{labels}=value`.
        pub(crate) fn moved(&self) -> Vec<String> {
            let counters = self.0.lock().unwrap();
            counters
                .iter()
                .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        }
    }

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut counters = self.0.lock().unwrap();
            Counter::from_arc(Arc::clone(counters.entry(name).or_default()))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// Span names and their fields, with the enter stack so that `Span::current()` works.
    #[derive(Default)]
    pub(crate) struct Spans {
        spans: Mutex<Vec<(&'static tracing::Metadata<'static>, String)>>,
        stack: Mutex<Vec<u64>>,
    }

    impl Spans {
        /// `Level(…) field=value …` of the first span named `name`.
        pub(crate) fn line(&self, name: &str) -> Option<String> {
            let spans = self.spans.lock().unwrap();
            spans
                .iter()
                .find(|(m, _)| m.name() == name)
                .map(|(m, fields)| format!("{:?}{fields}", m.level()))
        }

        /// Every span, as `name Level(…) field=value …`.
        pub(crate) fn all(&self) -> Vec<String> {
            let spans = self.spans.lock().unwrap();
            spans
                .iter()
                .map(|(m, fields)| format!("{} {:?}{fields}", m.name(), m.level()))
                .collect()
        }
    }

    struct Fields<'a>(&'a mut String);

    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={:?}", field.name(), value));
        }
    }

    impl tracing::Subscriber for Spans {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let mut fields = String::new();
            span.record(&mut Fields(&mut fields));
            let mut spans = self.spans.lock().unwrap();
            spans.push((span.metadata(), fields));
            tracing::span::Id::from_u64(spans.len() as u64)
        }
        fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
            let mut spans = self.spans.lock().unwrap();
            let slot = &mut spans[span.into_u64() as usize - 1];
            values.record(&mut Fields(&mut slot.1));
        }
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, span: &tracing::span::Id) {
            self.stack.lock().unwrap().push(span.into_u64());
        }
        fn exit(&self, _: &tracing::span::Id) {
            self.stack.lock().unwrap().pop();
        }
        fn current_span(&self) -> tracing_core::span::Current {
            let stack = self.stack.lock().unwrap();
            match stack.last() {
                Some(&id) => {
                    let metadata = self.spans.lock().unwrap()[id as usize - 1].0;
                    tracing_core::span::Current::new(tracing::span::Id::from_u64(id), metadata)
                }
                None => tracing_core::span::Current::none(),
            }
        }
    }

    /// Runs `f` on a current-thread runtime with `spans` as this thread's subscriber.
    pub(crate) fn with_spans<F: std::future::Future>(spans: &Arc<Spans>, f: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dispatch = tracing::Dispatch::from(Arc::clone(spans));
        tracing::dispatcher::with_default(&dispatch, || {
            // Other tests of this binary may have cached a callsite's interest as "never"
            // while no subscriber was set: recompute it now that this one is.
            tracing::callsite::rebuild_interest_cache();
            runtime.block_on(f)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use chrono::TimeZone;
    use rust_decimal::Decimal;

    use super::observe::{Spans, with_spans};
    use super::*;

    #[test]
    fn the_memory_store_opens_debug_store_spans_without_event_properties() {
        let spans = Arc::new(Spans::default());
        let tenant = TenantId::new();
        let (customer, meter) = (CustomerId::from_u128(1), MeterId::from_u128(1));
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
        let event = |id| UsageEvent {
            id: UsageEventId::from_u128(id),
            customer,
            subscription: None,
            meter,
            quantity: Decimal::ONE,
            timestamp: at,
            properties: BTreeMap::from([("user".into(), "jane@example.com".into())]),
        };
        let found = with_spans(&spans, async {
            let store = InMemoryUsageStore::new();
            let new = store
                .append_events(tenant, &[event(1), event(2), event(1)])
                .await
                .unwrap();
            assert_eq!(new, [true, true, false]);
            store
                .events_between(tenant, customer, meter, at, at + chrono::Duration::hours(1))
                .await
                .unwrap()
        });
        assert_eq!(found.len(), 2);
        assert_eq!(
            spans.line("dotmac.store.append_usage").unwrap(),
            format!("Level(Debug) backend=\"memory\" tenant={tenant} events=3")
        );
        assert_eq!(
            spans.line("dotmac.store.usage_events_between").unwrap(),
            format!("Level(Debug) backend=\"memory\" tenant={tenant}")
        );
        assert!(spans.all().iter().all(|s| !s.contains("jane")));
    }
}
