//! The domain event envelope that services return.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::id::{EventId, TenantId};

/// A payload that can travel in a [`DomainEvent`].
///
/// `event_type` is a stable, dotted name (`"billing.invoice_issued"`) that an outbox or a
/// message broker routes on; it must not change once published.
pub trait EventPayload {
    /// The stable name of this kind of event.
    fn event_type(&self) -> &'static str;
}

/// Something that happened in a tenant's domain, as returned by a service call.
///
/// Services never publish: they return events, and the embedding application decides whether
/// to write them to an outbox in the same transaction, push them to a queue or drop them.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use dotmac_core::{DomainEvent, EventPayload, FixedClock, TenantId};
///
/// #[derive(Debug, serde::Serialize)]
/// struct Suspended { account: String }
/// impl EventPayload for Suspended {
///     fn event_type(&self) -> &'static str { "collections.suspended" }
/// }
///
/// let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 20, 6, 0, 0).unwrap());
/// let event = DomainEvent::new(TenantId::new(), &clock, Suspended { account: "A-1".into() });
/// assert_eq!(event.event_type(), "collections.suspended");
/// assert_eq!(event.occurred_at, Utc.with_ymd_and_hms(2026, 3, 20, 6, 0, 0).unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent<P> {
    /// Unique per event: the idempotency key for whoever consumes it.
    pub id: EventId,
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// When it happened, by the service's clock.
    pub occurred_at: DateTime<Utc>,
    /// What happened.
    pub payload: P,
}

impl<P> DomainEvent<P> {
    /// Wraps a payload with a fresh id, the tenant and the clock's instant.
    pub fn new(tenant: TenantId, clock: &dyn Clock, payload: P) -> Self {
        DomainEvent {
            id: EventId::new(),
            tenant,
            occurred_at: clock.now(),
            payload,
        }
    }

    /// Wraps a payload at a given instant with a given id (replays, tests, imports).
    pub fn at(id: EventId, tenant: TenantId, occurred_at: DateTime<Utc>, payload: P) -> Self {
        DomainEvent {
            id,
            tenant,
            occurred_at,
            payload,
        }
    }

    /// The same envelope around a transformed payload (for example into an application-wide
    /// enum of events).
    pub fn map<Q>(self, f: impl FnOnce(P) -> Q) -> DomainEvent<Q> {
        DomainEvent {
            id: self.id,
            tenant: self.tenant,
            occurred_at: self.occurred_at,
            payload: f(self.payload),
        }
    }
}

impl<P: EventPayload> DomainEvent<P> {
    /// The payload's stable event name.
    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }
}
