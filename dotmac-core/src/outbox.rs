//! The transactional outbox and its dispatcher: how one domain reacts to another.
//!
//! Every service writes the events of a change in the same store transaction as the change
//! (a store's commit takes the [`OutboxEvent`]s with the new state). A [`Dispatcher`] then
//! claims stored events under a lease and hands each to the [`EventHandler`]s that want it:
//!
//! - **at least once**: an event is marked handled only after every handler succeeded; a
//!   dispatcher that dies leaves its lease to run out, and the event is claimed again;
//! - **in order per aggregate**: an event is only claimed when no earlier event of its
//!   [`Aggregate`] (a customer, say) is still waiting, so a payment's reactions never overtake
//!   the invoice it pays;
//! - **retried with backoff**: a failed event waits `base × 2^(attempts − 1)` (capped) before
//!   it is claimed again, and holds its aggregate back meanwhile;
//! - **parked when poisoned**: after [`RetryPolicy::max_attempts`] attempts, or at once for a
//!   [`HandlerErrorKind::Permanent`] error, the event is set aside with its error
//!   ([`OutboxStatus::Parked`]); the aggregate's later events go on, and an operator can
//!   [`OutboxStore::requeue`] it after fixing the cause.
//!
//! Handlers must be idempotent by event id: a handler that ran before a crash runs again. The
//! usual way is to derive the id of what the handler writes from the event's id (or from the
//! fact the event carries) with [`IdDigest`](crate::IdDigest), so the second write is a no-op.
//!
//! ```
//! # futures_lite_block_on(async {
//! use std::sync::Arc;
//! use dotmac_core::outbox::{
//!     Aggregate, BoxFuture, Dispatcher, DispatcherSettings, EventHandler, HandlerError,
//!     MemoryOutbox, OutboxEvent, OutboxMessage, OutboxPayload, OutboxStore,
//! };
//! use dotmac_core::{CustomerId, DomainEvent, EventPayload, FixedClock, TenantId};
//!
//! #[derive(Debug, serde::Serialize, serde::Deserialize)]
//! struct Suspended { customer: CustomerId }
//! impl EventPayload for Suspended {
//!     fn event_type(&self) -> &'static str { "example.suspended" }
//! }
//! impl OutboxPayload for Suspended {
//!     fn aggregate(&self) -> Aggregate { Aggregate::customer(self.customer) }
//! }
//!
//! struct Network;
//! impl EventHandler for Network {
//!     fn name(&self) -> &str { "network" }
//!     fn handles(&self, event_type: &str) -> bool { event_type == "example.suspended" }
//!     fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
//!         Box::pin(async move {
//!             let event: Suspended = message.decode().map_err(HandlerError::permanent)?;
//!             assert_eq!(event.customer, CustomerId::from_u128(7));
//!             Ok(())
//!         })
//!     }
//! }
//!
//! let clock = FixedClock::new(chrono::DateTime::UNIX_EPOCH);
//! let tenant = TenantId::new();
//! let outbox = Arc::new(MemoryOutbox::new());
//! let event = DomainEvent::new(tenant, &clock, Suspended { customer: CustomerId::from_u128(7) });
//! outbox.append_outbox(tenant, &[OutboxEvent::new(event)]).await?;
//!
//! let dispatcher = Dispatcher::new(outbox.clone(), clock, DispatcherSettings::new("relay-1"))
//!     .handler(Arc::new(Network));
//! let summary = dispatcher.drain().await?;
//! assert_eq!(summary.handled, 1);
//! assert_eq!(outbox.outbox_counts(tenant).await?.handled, 1);
//! # Ok::<(), dotmac_core::StorageError>(()) }).unwrap();
//! # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     use std::task::{Context, Poll, Waker};
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = Context::from_waker(Waker::noop());
//! #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::FastMap;
use crate::clock::Clock;
use crate::error::{StorageError, StorageErrorKind};
use crate::event::{DomainEvent, EventPayload};
use crate::id::{CustomerId, EventId, TenantId};

/// A boxed future, as [`EventHandler::handle`] returns (handlers are kept as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an event is about: the unit within which events are handled in order.
///
/// ```
/// use dotmac_core::{CustomerId, outbox::Aggregate};
/// let a = Aggregate::customer(CustomerId::from_u128(1));
/// assert_eq!(a.to_string(), "customer:00000000-0000-0000-0000-000000000001");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Aggregate {
    kind: Cow<'static, str>,
    id: Uuid,
}

impl Aggregate {
    /// An aggregate of a kind (a stable, lowercase name such as `"customer"`) and an id.
    pub fn new(kind: &'static str, id: Uuid) -> Self {
        Aggregate {
            kind: Cow::Borrowed(kind),
            id,
        }
    }

    /// An aggregate read back from storage.
    pub fn from_parts(kind: String, id: Uuid) -> Self {
        Aggregate {
            kind: Cow::Owned(kind),
            id,
        }
    }

    /// A customer: the aggregate of every money event (their ledger, invoices, suspension).
    pub fn customer(customer: CustomerId) -> Self {
        Aggregate::new("customer", customer.as_uuid())
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The id.
    pub fn id(&self) -> Uuid {
        self.id
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// A payload that can be kept in an outbox: named ([`EventPayload`]), serialisable, and
/// about one [`Aggregate`].
pub trait OutboxPayload: EventPayload + Serialize + fmt::Debug + Send + Sync + 'static {
    /// The aggregate whose events are handled in order.
    fn aggregate(&self) -> Aggregate;
}

/// The object-safe face of an [`OutboxPayload`].
trait ErasedPayload: fmt::Debug + Send + Sync {
    fn event_type(&self) -> &'static str;
    fn aggregate(&self) -> Aggregate;
    fn to_json(&self) -> Result<serde_json::Value, serde_json::Error>;
    fn as_any(&self) -> &dyn Any;
}

impl<P: OutboxPayload> ErasedPayload for P {
    fn event_type(&self) -> &'static str {
        EventPayload::event_type(self)
    }
    fn aggregate(&self) -> Aggregate {
        OutboxPayload::aggregate(self)
    }
    fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An event to write to the outbox with the change that produced it.
///
/// The payload is kept typed: an in-memory store keeps it as it is, a SQL store serialises it
/// ([`OutboxEvent::payload_json`]) in the change's transaction.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    id: EventId,
    tenant: TenantId,
    occurred_at: DateTime<Utc>,
    payload: Arc<dyn ErasedPayload>,
}

impl OutboxEvent {
    /// Wraps a domain event.
    pub fn new<P: OutboxPayload>(event: DomainEvent<P>) -> Self {
        OutboxEvent {
            id: event.id,
            tenant: event.tenant,
            occurred_at: event.occurred_at,
            payload: Arc::new(event.payload),
        }
    }

    /// The event's id: unique within its tenant, the handlers' idempotency key.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// When it happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.occurred_at
    }

    /// The stable event name.
    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }

    /// The aggregate it is about.
    pub fn aggregate(&self) -> Aggregate {
        self.payload.aggregate()
    }

    /// The payload, if it is a `P`.
    pub fn payload<P: OutboxPayload>(&self) -> Option<&P> {
        self.payload.as_any().downcast_ref::<P>()
    }

    /// The payload as JSON, as stored.
    ///
    /// # Errors
    ///
    /// [`StorageErrorKind::InvalidInput`] when the payload cannot be serialised (a map with
    /// non-string keys, say).
    pub fn payload_json(&self) -> Result<serde_json::Value, StorageError> {
        self.payload.to_json().map_err(|source| {
            StorageError::from_source(StorageErrorKind::InvalidInput, source)
                .context("serialise outbox event payload")
        })
    }

    /// The payload as JSON, with serde's own error (for stores that report it as theirs).
    ///
    /// # Errors
    ///
    /// When the payload cannot be serialised.
    pub fn payload_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.payload.to_json()
    }

    /// The message a store hands out for this event at position `seq`.
    ///
    /// # Errors
    ///
    /// As [`OutboxEvent::payload_json`].
    pub fn to_message(&self, seq: u64) -> Result<OutboxMessage, StorageError> {
        Ok(OutboxMessage {
            seq,
            id: self.id,
            tenant: self.tenant,
            event_type: self.event_type().to_owned(),
            aggregate: self.aggregate(),
            occurred_at: self.occurred_at,
            payload: self.payload_json()?,
            attempts: 0,
            status: OutboxStatus::Pending,
            last_error: None,
        })
    }
}

/// Where an event is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutboxStatus {
    /// Waiting to be handled (possibly leased, possibly waiting for a retry).
    Pending,
    /// Every handler succeeded.
    Handled,
    /// Set aside after its handlers failed for good; see [`OutboxMessage::last_error`].
    Parked,
}

impl OutboxStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Handled => "handled",
            OutboxStatus::Parked => "parked",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<OutboxStatus> {
        match name {
            "pending" => Some(OutboxStatus::Pending),
            "handled" => Some(OutboxStatus::Handled),
            "parked" => Some(OutboxStatus::Parked),
            _ => None,
        }
    }
}

/// A stored outbox event, as a store hands it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutboxMessage {
    /// Position in the outbox (across tenants): the delivery order.
    pub seq: u64,
    /// The event's id.
    pub id: EventId,
    /// The tenant.
    pub tenant: TenantId,
    /// The stable event name.
    pub event_type: String,
    /// What it is about.
    pub aggregate: Aggregate,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The payload, as stored.
    pub payload: serde_json::Value,
    /// How many times it has been claimed, this time included.
    pub attempts: u32,
    /// Where it is in its delivery.
    pub status: OutboxStatus,
    /// The error of its last failed attempt.
    pub last_error: Option<String>,
}

impl OutboxMessage {
    /// A message read back from storage.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        seq: u64,
        id: EventId,
        tenant: TenantId,
        event_type: String,
        aggregate: Aggregate,
        occurred_at: DateTime<Utc>,
        payload: serde_json::Value,
        attempts: u32,
        status: OutboxStatus,
        last_error: Option<String>,
    ) -> Self {
        OutboxMessage {
            seq,
            id,
            tenant,
            event_type,
            aggregate,
            occurred_at,
            payload,
            attempts,
            status,
            last_error,
        }
    }

    /// The payload as a `P`.
    ///
    /// # Errors
    ///
    /// [`StorageErrorKind::Corrupt`] when the stored payload is not a `P`.
    pub fn decode<P: DeserializeOwned>(&self) -> Result<P, StorageError> {
        P::deserialize(&self.payload).map_err(|source| {
            StorageError::from_source(StorageErrorKind::Corrupt, source).context(format!(
                "decode outbox event {} ({})",
                self.id, self.event_type
            ))
        })
    }
}

/// How many of a tenant's events are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutboxCounts {
    /// Waiting to be handled.
    pub pending: u64,
    /// Handled.
    pub handled: u64,
    /// Parked.
    pub parked: u64,
}

impl OutboxCounts {
    /// Every event.
    pub fn total(&self) -> u64 {
        self.pending
            .saturating_add(self.handled)
            .saturating_add(self.parked)
    }
}

/// Where outbox events are kept, claimed and marked.
///
/// Writing normally happens inside the domain stores' own commits; [`Self::append_outbox`]
/// writes events that belong to no other change. Claiming spans tenants: a dispatcher is an
/// operator's process, like a SQL store's relay role; everything else is tenant-scoped.
pub trait OutboxStore: Send + Sync {
    /// Writes events on their own, atomically. An event id the tenant already used is skipped
    /// when it names the same event (a replay) and refused ([`StorageErrorKind::Conflict`])
    /// when it names another.
    ///
    /// # Errors
    ///
    /// [`StorageErrorKind::TenantMismatch`] for an event of another tenant, the conflict
    /// above, storage failures. Nothing is written then.
    fn append_outbox(
        &self,
        tenant: TenantId,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Claims up to `limit` events for `worker` until `now + lease`, in outbox order. An event
    /// is claimable when it is pending, not leased by anyone (or its lease ran out), not
    /// waiting for a retry (`not_before <= now`), and no earlier pending event of its tenant
    /// and aggregate is leased or waiting. Claiming counts an attempt.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>, StorageError>> + Send;

    /// Marks an event handled, if `worker` still holds its lease. Returns whether it did.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn complete(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Marks many events handled at once, each only if `worker` still holds its lease, as
    /// [`OutboxStore::complete`] does for one; returns how many it marked. The dispatcher
    /// completes a claimed batch with one call, so a SQL store commits once per batch instead
    /// of once per event. The default completes them one at a time.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn complete_all(
        &self,
        handled: &[(TenantId, u64)],
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send {
        async move {
            let mut marked: u64 = 0;
            for (tenant, seq) in handled {
                if self.complete(*tenant, *seq, worker, now).await? {
                    marked = marked.saturating_add(1);
                }
            }
            Ok(marked)
        }
    }

    /// Gives an event back without counting it handled: it is claimable again from
    /// `not_before`, and `error` (if any) is kept as its last error. Only if `worker` still
    /// holds its lease; returns whether it did.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn release(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        not_before: DateTime<Utc>,
        error: Option<&str>,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Parks an event with its error, if `worker` still holds its lease. Returns whether it
    /// did.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn park(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Puts a parked event back to pending with its attempts reset. Returns whether it did
    /// (`false` when the event is not parked).
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn requeue(
        &self,
        tenant: TenantId,
        seq: u64,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// A tenant's events in outbox order, in every state (audits, tests).
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn outbox_messages(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>, StorageError>> + Send;

    /// How many of a tenant's events are in each state.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn outbox_counts(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<OutboxCounts, StorageError>> + Send;
}

impl<T: OutboxStore + ?Sized> OutboxStore for Arc<T> {
    fn append_outbox(
        &self,
        tenant: TenantId,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        (**self).append_outbox(tenant, events)
    }
    fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>, StorageError>> + Send {
        (**self).claim(worker, now, lease, limit)
    }
    fn complete(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send {
        (**self).complete(tenant, seq, worker, now)
    }
    fn complete_all(
        &self,
        handled: &[(TenantId, u64)],
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send {
        (**self).complete_all(handled, worker, now)
    }
    fn release(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        not_before: DateTime<Utc>,
        error: Option<&str>,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send {
        (**self).release(tenant, seq, worker, not_before, error)
    }
    fn park(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send {
        (**self).park(tenant, seq, worker, error, now)
    }
    fn requeue(
        &self,
        tenant: TenantId,
        seq: u64,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send {
        (**self).requeue(tenant, seq)
    }
    fn outbox_messages(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>, StorageError>> + Send {
        (**self).outbox_messages(tenant)
    }
    fn outbox_counts(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<OutboxCounts, StorageError>> + Send {
        (**self).outbox_counts(tenant)
    }
}

/// One event in a [`MemoryOutbox`]: the event and its delivery state, the rarely set parts of
/// which (a lease, a retry time, an error) are boxed, so that an event never claimed costs 80
/// bytes here (a bill run writes one per invoice). Its aggregate is the event's own.
#[derive(Debug)]
struct Slot {
    event: OutboxEvent,
    attempts: u32,
    status: OutboxStatus,
    delivery: Option<Box<Delivery>>,
}

/// A [`Slot`]'s lease, retry time and last error, once any was set.
#[derive(Debug, Default)]
struct Delivery {
    leased_by: Option<String>,
    lease_until: Option<DateTime<Utc>>,
    not_before: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl Slot {
    /// A pending slot for `event`, never claimed.
    fn new(event: OutboxEvent) -> Self {
        Slot {
            event,
            attempts: 0,
            status: OutboxStatus::Pending,
            delivery: None,
        }
    }

    fn delivery(&self) -> Option<&Delivery> {
        self.delivery.as_deref()
    }

    fn delivery_mut(&mut self) -> &mut Delivery {
        self.delivery.get_or_insert_with(Box::default)
    }

    fn leased_by(&self) -> Option<&str> {
        self.delivery().and_then(|d| d.leased_by.as_deref())
    }

    fn lease_until(&self) -> Option<DateTime<Utc>> {
        self.delivery().and_then(|d| d.lease_until)
    }

    fn not_before(&self) -> Option<DateTime<Utc>> {
        self.delivery().and_then(|d| d.not_before)
    }

    fn last_error(&self) -> Option<&str> {
        self.delivery().and_then(|d| d.last_error.as_deref())
    }

    /// Ends the slot's lease, if any.
    fn end_lease(&mut self) {
        if let Some(d) = self.delivery.as_deref_mut() {
            d.leased_by = None;
            d.lease_until = None;
        }
    }
}

#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Slot>,
    /// (tenant, event id) → index in `slots`.
    by_id: FastMap<(TenantId, EventId), usize>,
    /// Every slot before this one is handled or parked: claims start here.
    first_open: usize,
}

/// An [`OutboxStore`] in memory, shared by the in-memory domain stores (each writes its
/// events here under its own lock, so a change and its events are one step).
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    inner: Mutex<Slots>,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `events` as [`OutboxStore::append_outbox`] would, without writing: a domain
    /// store calls it before changing its own state, then [`Self::push`].
    ///
    /// # Errors
    ///
    /// As [`OutboxStore::append_outbox`].
    pub fn check(&self, tenant: TenantId, events: &[OutboxEvent]) -> Result<(), StorageError> {
        let slots = self.lock();
        check_events(&slots, tenant, events)
    }

    /// Writes `events` (checked with [`Self::check`] under the caller's lock; a replayed event
    /// is skipped).
    ///
    /// # Errors
    ///
    /// As [`OutboxStore::append_outbox`] (nothing is written then).
    pub fn push(&self, tenant: TenantId, events: &[OutboxEvent]) -> Result<(), StorageError> {
        self.writer().push(tenant, events.to_vec())
    }

    /// A writer that holds the outbox from its first write until it is dropped: a domain
    /// store makes one under its own lock for a batch of changes, so that the batch takes
    /// this lock once and moves its events in rather than copying them.
    pub fn writer(&self) -> OutboxWriter<'_> {
        OutboxWriter {
            outbox: self,
            slots: None,
        }
    }

    /// How many events are kept, in every tenant and state.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// True when no event was ever written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes to a [`MemoryOutbox`] for a batch of changes ([`MemoryOutbox::writer`]): the
/// outbox's lock is taken at the first write (a batch that writes no event never takes it) and
/// held until the writer is dropped, and events are moved in, not copied. Every write is
/// checked as [`OutboxStore::append_outbox`] checks it.
///
/// Lock order: a store that holds its own lock may make a writer; nothing that holds a
/// writer takes a store's lock, and nothing calls the same [`MemoryOutbox`]'s other methods
/// (`push`, `len`, [`OutboxStore`] calls) while a writer that has written is alive: its lock is
/// not reentrant.
#[derive(Debug)]
pub struct OutboxWriter<'a> {
    outbox: &'a MemoryOutbox,
    slots: Option<std::sync::MutexGuard<'a, Slots>>,
}

impl OutboxWriter<'_> {
    fn slots(&mut self) -> &mut Slots {
        let outbox = self.outbox;
        self.slots.get_or_insert_with(|| outbox.lock())
    }

    /// Writes `events` (a replayed event is skipped), all or none.
    ///
    /// # Errors
    ///
    /// As [`OutboxStore::append_outbox`] (nothing is written then).
    pub fn push(&mut self, tenant: TenantId, events: Vec<OutboxEvent>) -> Result<(), StorageError> {
        if let [_] = events.as_slice() {
            return events
                .into_iter()
                .try_for_each(|event| self.push_one(tenant, event));
        }
        if events.is_empty() {
            return Ok(());
        }
        let slots = self.slots();
        check_events(slots, tenant, &events)?;
        for event in events {
            let index = slots.slots.len();
            match slots.by_id.entry((tenant, event.id)) {
                // A replay (checked above): written once.
                std::collections::hash_map::Entry::Occupied(_) => continue,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(index);
                }
            }
            slots.slots.push(Slot::new(event));
        }
        Ok(())
    }

    /// Writes one event (skipped when it is a replay), with one look into the id index.
    ///
    /// # Errors
    ///
    /// As [`OutboxStore::append_outbox`] (nothing is written then).
    pub fn push_one(&mut self, tenant: TenantId, event: OutboxEvent) -> Result<(), StorageError> {
        check_tenant(tenant, &event)?;
        let slots = self.slots();
        let index = slots.slots.len();
        match slots.by_id.entry((tenant, event.id)) {
            std::collections::hash_map::Entry::Occupied(earlier) => {
                match slots.slots.get(*earlier.get()) {
                    Some(earlier) => check_replay(&earlier.event, &event),
                    // The index names only stored slots.
                    None => Ok(()),
                }
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(index);
                slots.slots.push(Slot::new(event));
                Ok(())
            }
        }
    }

    /// Makes room for about `additional` more events (a domain store calls it before a batch
    /// of writes, one event each), growing at least to double: the id index then grows in
    /// one step instead of rehashing every event at each doubling. Takes the outbox's lock,
    /// as a write does.
    pub fn reserve(&mut self, additional: usize) {
        let slots = self.slots();
        let len = slots.slots.len();
        if slots.by_id.capacity() >= len.saturating_add(additional) {
            return;
        }
        let more = additional.max(len);
        slots.by_id.reserve(more);
        slots.slots.reserve(more);
    }
}

fn check_events(
    slots: &Slots,
    tenant: TenantId,
    events: &[OutboxEvent],
) -> Result<(), StorageError> {
    // A write carries a handful of events (a bill run's commit one or two): a scan of the
    // earlier ones finds a repeated id without building a map.
    const SCAN: usize = 8;
    let mut seen: FastMap<EventId, &OutboxEvent> = FastMap::default();
    for (n, event) in events.iter().enumerate() {
        check_tenant(tenant, event)?;
        let in_write = if events.len() <= SCAN {
            events
                .get(..n)
                .unwrap_or_default()
                .iter()
                .find(|e| e.id == event.id)
        } else {
            seen.insert(event.id, event)
        };
        let earlier = in_write.or_else(|| {
            slots
                .by_id
                .get(&(tenant, event.id))
                .and_then(|&i| slots.slots.get(i))
                .map(|slot| &slot.event)
        });
        if let Some(earlier) = earlier {
            check_replay(earlier, event)?;
        }
    }
    Ok(())
}

/// Refuses an event of another tenant than the write's.
fn check_tenant(tenant: TenantId, event: &OutboxEvent) -> Result<(), StorageError> {
    if event.tenant == tenant {
        return Ok(());
    }
    Err(StorageError::new(
        StorageErrorKind::TenantMismatch,
        format!(
            "outbox event {} is tenant {}'s, not {tenant}'s",
            event.id, event.tenant
        ),
    ))
}

/// Refuses `event` when `earlier`, written under the same id, is a different event.
fn check_replay(earlier: &OutboxEvent, event: &OutboxEvent) -> Result<(), StorageError> {
    if same_event(earlier, event)? {
        return Ok(());
    }
    Err(StorageError::new(
        StorageErrorKind::Conflict,
        format!(
            "outbox event {} names a different event of this tenant",
            event.id
        ),
    ))
}

/// Whether two events with one id are one event (a replay): same type and payload. The
/// instant is not compared: a fact reported again later is still the same fact.
fn same_event(a: &OutboxEvent, b: &OutboxEvent) -> Result<bool, StorageError> {
    if Arc::ptr_eq(&a.payload, &b.payload) {
        return Ok(true);
    }
    Ok(a.event_type() == b.event_type() && a.payload_json()? == b.payload_json()?)
}

fn message_of(slot: &Slot, seq: usize) -> Result<OutboxMessage, StorageError> {
    let mut message = slot
        .event
        .to_message(u64::try_from(seq).unwrap_or(u64::MAX))?;
    message.aggregate = slot.event.aggregate();
    message.attempts = slot.attempts;
    message.status = slot.status;
    message.last_error = slot.last_error().map(str::to_owned);
    Ok(message)
}

fn held_by(slot: &Slot, worker: &str) -> bool {
    slot.status == OutboxStatus::Pending && slot.leased_by() == Some(worker)
}

impl OutboxStore for MemoryOutbox {
    async fn append_outbox(
        &self,
        tenant: TenantId,
        events: &[OutboxEvent],
    ) -> Result<(), StorageError> {
        self.push(tenant, events)
    }

    async fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StorageError> {
        let until = now.checked_add_signed(lease).ok_or_else(|| {
            StorageError::new(
                StorageErrorKind::InvalidInput,
                "lease ends past the last instant",
            )
        })?;
        let mut slots = self.lock();
        let start = slots.first_open;
        let first_open = slots
            .slots
            .iter()
            .skip(start)
            .position(|s| s.status == OutboxStatus::Pending)
            .map_or(slots.slots.len(), |p| p.saturating_add(start));
        slots.first_open = first_open;
        // Aggregates with an earlier pending event that cannot go now.
        let mut blocked: crate::FastSet<(TenantId, Aggregate)> = crate::FastSet::default();
        let mut claimed = Vec::new();
        for seq in first_open..slots.slots.len() {
            if claimed.len() >= limit {
                break;
            }
            let Some(slot) = slots.slots.get_mut(seq) else {
                break;
            };
            if slot.status != OutboxStatus::Pending {
                continue;
            }
            let key = (slot.event.tenant, slot.event.aggregate());
            if blocked.contains(&key) {
                continue;
            }
            let leased = slot.lease_until().is_some_and(|t| t > now);
            let waiting = slot.not_before().is_some_and(|t| t > now);
            if leased || waiting {
                blocked.insert(key);
                continue;
            }
            slot.attempts = slot.attempts.saturating_add(1);
            let delivery = slot.delivery_mut();
            delivery.leased_by = Some(worker.to_owned());
            delivery.lease_until = Some(until);
            claimed.push(message_of(slot, seq)?);
        }
        Ok(claimed)
    }

    async fn complete(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        _now: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let mut slots = self.lock();
        let Some(slot) = slot_of(&mut slots, tenant, seq) else {
            return Ok(false);
        };
        if !held_by(slot, worker) {
            return Ok(false);
        }
        slot.status = OutboxStatus::Handled;
        slot.end_lease();
        Ok(true)
    }

    async fn release(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        not_before: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<bool, StorageError> {
        let mut slots = self.lock();
        let Some(slot) = slot_of(&mut slots, tenant, seq) else {
            return Ok(false);
        };
        if !held_by(slot, worker) {
            return Ok(false);
        }
        slot.end_lease();
        let delivery = slot.delivery_mut();
        delivery.not_before = Some(not_before);
        if let Some(error) = error {
            delivery.last_error = Some(error.to_owned());
        }
        Ok(true)
    }

    async fn park(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        error: &str,
        _now: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let mut slots = self.lock();
        let Some(slot) = slot_of(&mut slots, tenant, seq) else {
            return Ok(false);
        };
        if !held_by(slot, worker) {
            return Ok(false);
        }
        slot.status = OutboxStatus::Parked;
        slot.end_lease();
        slot.delivery_mut().last_error = Some(error.to_owned());
        Ok(true)
    }

    async fn requeue(&self, tenant: TenantId, seq: u64) -> Result<bool, StorageError> {
        let mut slots = self.lock();
        let index = usize::try_from(seq).unwrap_or(usize::MAX);
        let Some(slot) = slot_of(&mut slots, tenant, seq) else {
            return Ok(false);
        };
        if slot.status != OutboxStatus::Parked {
            return Ok(false);
        }
        slot.status = OutboxStatus::Pending;
        slot.attempts = 0;
        if let Some(d) = slot.delivery.as_deref_mut() {
            d.not_before = None;
        }
        slots.first_open = slots.first_open.min(index);
        Ok(true)
    }

    async fn outbox_messages(&self, tenant: TenantId) -> Result<Vec<OutboxMessage>, StorageError> {
        let slots = self.lock();
        slots
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.event.tenant == tenant)
            .map(|(seq, s)| message_of(s, seq))
            .collect()
    }

    async fn outbox_counts(&self, tenant: TenantId) -> Result<OutboxCounts, StorageError> {
        let slots = self.lock();
        let mut counts = OutboxCounts::default();
        for slot in slots.slots.iter().filter(|s| s.event.tenant == tenant) {
            let count = match slot.status {
                OutboxStatus::Pending => &mut counts.pending,
                OutboxStatus::Handled => &mut counts.handled,
                OutboxStatus::Parked => &mut counts.parked,
            };
            *count = count.saturating_add(1);
        }
        Ok(counts)
    }
}

fn slot_of(slots: &mut Slots, tenant: TenantId, seq: u64) -> Option<&mut Slot> {
    let index = usize::try_from(seq).ok()?;
    slots
        .slots
        .get_mut(index)
        .filter(|slot| slot.event.tenant == tenant)
}

/// Whether a failed handler may succeed if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandlerErrorKind {
    /// Try again later (a store was unavailable, a lock was taken).
    Retryable,
    /// Trying again cannot help (the event cannot be decoded, the data it names is refused):
    /// park the event at once.
    Permanent,
}

/// Why a handler failed, with its cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    kind: HandlerErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl HandlerError {
    /// A failure that may pass on a later attempt.
    pub fn retryable(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Retryable,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// A failure no retry can fix.
    pub fn permanent(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Permanent,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// A failure described by a message alone.
    pub fn message(kind: HandlerErrorKind, message: impl Into<String>) -> Self {
        HandlerError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Whether a retry may help.
    pub fn kind(&self) -> HandlerErrorKind {
        self.kind
    }
}

/// Something that reacts to outbox events. Kept as a trait object by the [`Dispatcher`].
///
/// A handler must be idempotent by event id: the dispatcher delivers at least once.
pub trait EventHandler: Send + Sync {
    /// A stable name, for logs and metrics.
    fn name(&self) -> &str;

    /// Whether this handler wants events of `event_type`.
    fn handles(&self, event_type: &str) -> bool;

    /// Handles one event.
    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// How long a failed event waits before its next attempt, and when it is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The wait after the first failure; doubled after each further one.
    pub base: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// Attempts after which a still failing event is parked.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 1 s, doubling up to 10 min, parked after 8 attempts.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::seconds(1),
            max_delay: Duration::minutes(10),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// A policy waiting `base` after the first failure, doubling up to `max_delay`, parking
    /// after `max_attempts` attempts.
    pub fn new(base: Duration, max_delay: Duration, max_attempts: u32) -> Self {
        RetryPolicy {
            base,
            max_delay,
            max_attempts,
        }
    }

    /// The wait after the `attempts`-th failed attempt: `base × 2^(attempts − 1)`, capped.
    ///
    /// ```
    /// use chrono::Duration;
    /// use dotmac_core::outbox::RetryPolicy;
    /// let policy = RetryPolicy::new(Duration::seconds(2), Duration::seconds(60), 10);
    /// assert_eq!(policy.delay(1), Duration::seconds(2));
    /// assert_eq!(policy.delay(3), Duration::seconds(8));
    /// assert_eq!(policy.delay(40), Duration::seconds(60));
    /// ```
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let factor = 1_i32.checked_shl(doublings).unwrap_or(i32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }
}

/// A dispatcher's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatcherSettings {
    /// The name this dispatcher claims under (unique per running dispatcher).
    pub worker: String,
    /// How long a claim holds: longer than the slowest batch takes to handle.
    pub lease: Duration,
    /// Events claimed per round.
    pub batch: usize,
    /// Retries and parking.
    pub retry: RetryPolicy,
}

impl DispatcherSettings {
    /// Settings for a dispatcher named `worker`: 60 s leases, 500 events a round, the default
    /// [`RetryPolicy`].
    pub fn new(worker: impl Into<String>) -> Self {
        DispatcherSettings {
            worker: worker.into(),
            lease: Duration::seconds(60),
            batch: 500,
            retry: RetryPolicy::default(),
        }
    }

    /// With another lease.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// With another batch size (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// With another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// What a dispatcher did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DispatchSummary {
    /// Events claimed.
    pub claimed: u64,
    /// Events every handler succeeded on, now handled.
    pub handled: u64,
    /// Events that failed and wait for a retry.
    pub retried: u64,
    /// Events parked.
    pub parked: u64,
    /// Events given back untried because an earlier event of their aggregate failed.
    pub deferred: u64,
    /// Events whose lease was lost before they could be marked (another dispatcher has them).
    pub lost: u64,
}

impl DispatchSummary {
    fn add(&mut self, other: DispatchSummary) {
        self.claimed = self.claimed.saturating_add(other.claimed);
        self.handled = self.handled.saturating_add(other.handled);
        self.retried = self.retried.saturating_add(other.retried);
        self.parked = self.parked.saturating_add(other.parked);
        self.deferred = self.deferred.saturating_add(other.deferred);
        self.lost = self.lost.saturating_add(other.lost);
    }
}

/// Claims outbox events and hands them to handlers: see the [module docs](self).
pub struct Dispatcher<S, C> {
    store: S,
    clock: C,
    settings: DispatcherSettings,
    handlers: Vec<Arc<dyn EventHandler>>,
}

impl<S, C> fmt::Debug for Dispatcher<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("settings", &self.settings)
            .field(
                "handlers",
                &self
                    .handlers
                    .iter()
                    .map(|h| h.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<S: OutboxStore, C: Clock> Dispatcher<S, C> {
    /// A dispatcher over `store` with no handler yet.
    pub fn new(store: S, clock: C, settings: DispatcherSettings) -> Self {
        Dispatcher {
            store,
            clock,
            settings,
            handlers: Vec::new(),
        }
    }

    /// Adds a handler. Handlers of one event run in the order they were added.
    pub fn handler(mut self, handler: Arc<dyn EventHandler>) -> Self {
        self.handlers.push(handler);
        self
    }

    /// The settings.
    pub fn settings(&self) -> &DispatcherSettings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Claims one batch and handles it. An event no handler wants is marked handled.
    ///
    /// # Errors
    ///
    /// Storage failures of the claim or of a mark; handler failures are not errors (they are
    /// retried or parked, and counted in the summary).
    #[tracing::instrument(name = "dotmac.outbox.dispatch", level = "debug", skip_all, fields(worker = %self.settings.worker, claimed = tracing::field::Empty))]
    pub async fn run_once(&self) -> Result<DispatchSummary, StorageError> {
        let worker = self.settings.worker.as_str();
        let claimed = self
            .store
            .claim(
                worker,
                self.clock.now(),
                self.settings.lease,
                self.settings.batch,
            )
            .await?;
        tracing::Span::current().record("claimed", claimed.len());
        let mut summary = DispatchSummary {
            claimed: u64::try_from(claimed.len()).unwrap_or(u64::MAX),
            ..DispatchSummary::default()
        };
        let mut failed: crate::FastSet<(TenantId, Aggregate)> = crate::FastSet::default();
        let mut handled: Vec<(TenantId, u64)> = Vec::with_capacity(claimed.len());
        for message in &claimed {
            let key = (message.tenant, message.aggregate.clone());
            if failed.contains(&key) {
                // An earlier event of the aggregate failed: this one must wait behind it.
                let released = self
                    .store
                    .release(message.tenant, message.seq, worker, self.clock.now(), None)
                    .await?;
                bump(if released {
                    &mut summary.deferred
                } else {
                    &mut summary.lost
                });
                continue;
            }
            match self.deliver(message).await {
                // Completed with the rest of the batch, in one store call: a crash before
                // then redelivers them, which idempotent handlers absorb.
                Ok(()) => handled.push((message.tenant, message.seq)),
                Err((handler, error)) => {
                    failed.insert(key);
                    let text = format!("{handler}: {error}");
                    let give_up = error.kind() == HandlerErrorKind::Permanent
                        || message.attempts >= self.settings.retry.max_attempts;
                    tracing::warn!(
                        event = %message.id,
                        event_type = %message.event_type,
                        handler = %handler,
                        attempts = message.attempts,
                        parked = give_up,
                        "outbox handler failed"
                    );
                    if give_up {
                        let parked = self
                            .store
                            .park(message.tenant, message.seq, worker, &text, self.clock.now())
                            .await?;
                        bump(if parked {
                            &mut summary.parked
                        } else {
                            &mut summary.lost
                        });
                        metrics::counter!("dotmac_outbox_parked_total").increment(1);
                    } else {
                        let wait = self.settings.retry.delay(message.attempts);
                        let at = self
                            .clock
                            .now()
                            .checked_add_signed(wait)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC);
                        let released = self
                            .store
                            .release(message.tenant, message.seq, worker, at, Some(&text))
                            .await?;
                        bump(if released {
                            &mut summary.retried
                        } else {
                            &mut summary.lost
                        });
                        metrics::counter!("dotmac_outbox_retried_total").increment(1);
                    }
                }
            }
        }
        if !handled.is_empty() {
            let marked = self
                .store
                .complete_all(&handled, worker, self.clock.now())
                .await?;
            let attempted = u64::try_from(handled.len()).unwrap_or(u64::MAX);
            let marked = marked.min(attempted);
            summary.handled = summary.handled.saturating_add(marked);
            // Handled, but another worker holds the lease now (ours expired): it delivers them
            // again.
            summary.lost = summary
                .lost
                .saturating_add(attempted.saturating_sub(marked));
            metrics::counter!("dotmac_outbox_handled_total").increment(marked);
        }
        Ok(summary)
    }

    /// Runs rounds until one claims nothing: every event that can be handled now is handled
    /// (events waiting for a retry stay pending).
    ///
    /// # Errors
    ///
    /// As [`Self::run_once`].
    pub async fn drain(&self) -> Result<DispatchSummary, StorageError> {
        let mut total = DispatchSummary::default();
        loop {
            let round = self.run_once().await?;
            total.add(round);
            // A round that handled nothing new (everything left is waiting or lost) ends it.
            if round.claimed == 0 || round.handled == 0 && round.deferred == round.claimed {
                return Ok(total);
            }
        }
    }

    async fn deliver(&self, message: &OutboxMessage) -> Result<(), (String, HandlerError)> {
        for handler in self
            .handlers
            .iter()
            .filter(|h| h.handles(&message.event_type))
        {
            handler
                .handle(message)
                .await
                .map_err(|e| (handler.name().to_owned(), e))?;
        }
        Ok(())
    }
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Step {
        customer: CustomerId,
        n: u32,
    }
    impl EventPayload for Step {
        fn event_type(&self) -> &'static str {
            "test.step"
        }
    }
    impl OutboxPayload for Step {
        fn aggregate(&self) -> Aggregate {
            Aggregate::customer(self.customer)
        }
    }

    /// Records what it saw; fails the first `fail_first` deliveries of step `fail_n`.
    struct Recorder {
        seen: Mutex<Vec<(CustomerId, u32)>>,
        fail_n: u32,
        fail_first: AtomicU32,
        permanent: bool,
    }
    impl Recorder {
        fn new(fail_n: u32, fail_first: u32, permanent: bool) -> Arc<Self> {
            Arc::new(Recorder {
                seen: Mutex::new(Vec::new()),
                fail_n,
                fail_first: AtomicU32::new(fail_first),
                permanent,
            })
        }
        fn seen(&self) -> Vec<(CustomerId, u32)> {
            self.seen.lock().unwrap().clone()
        }
    }
    impl EventHandler for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn handles(&self, event_type: &str) -> bool {
            event_type == "test.step"
        }
        fn handle<'a>(
            &'a self,
            message: &'a OutboxMessage,
        ) -> BoxFuture<'a, Result<(), HandlerError>> {
            Box::pin(async move {
                let step: Step = message.decode().map_err(HandlerError::permanent)?;
                if step.n == self.fail_n
                    && self
                        .fail_first
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                        .is_ok()
                {
                    let kind = if self.permanent {
                        HandlerErrorKind::Permanent
                    } else {
                        HandlerErrorKind::Retryable
                    };
                    return Err(HandlerError::message(
                        kind,
                        format!("step {} refused", step.n),
                    ));
                }
                self.seen.lock().unwrap().push((step.customer, step.n));
                Ok(())
            })
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn setup() -> (TenantId, Arc<MemoryOutbox>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(DateTime::UNIX_EPOCH));
        (TenantId::from_u128(1), Arc::new(MemoryOutbox::new()), clock)
    }

    fn step(tenant: TenantId, clock: &ManualClock, customer: u128, n: u32) -> OutboxEvent {
        OutboxEvent::new(DomainEvent::new(
            tenant,
            clock,
            Step {
                customer: CustomerId::from_u128(customer),
                n,
            },
        ))
    }

    #[test]
    fn a_failing_event_is_retried_after_its_backoff_and_holds_its_aggregate_back() {
        block_on(async {
            let (tenant, outbox, clock) = setup();
            let events = vec![
                step(tenant, &clock, 1, 1),
                step(tenant, &clock, 2, 2),
                step(tenant, &clock, 1, 3),
            ];
            outbox.append_outbox(tenant, &events).await.unwrap();
            let recorder = Recorder::new(1, 1, false);
            let policy = RetryPolicy::new(Duration::seconds(10), Duration::seconds(60), 5);
            let dispatcher = Dispatcher::new(
                outbox.clone(),
                clock.clone(),
                DispatcherSettings::new("w").with_retry(policy),
            )
            .handler(recorder.clone());

            let first = dispatcher.drain().await.unwrap();
            assert_eq!((first.handled, first.retried, first.deferred), (1, 1, 1));
            // Customer 2 went on; customer 1's step 3 waits behind step 1.
            assert_eq!(recorder.seen(), vec![(CustomerId::from_u128(2), 2)]);
            let messages = outbox.outbox_messages(tenant).await.unwrap();
            assert_eq!(
                messages[0].last_error.as_deref(),
                Some("recorder: step 1 refused")
            );

            clock.advance(Duration::seconds(9));
            assert_eq!(dispatcher.drain().await.unwrap().claimed, 0);
            clock.advance(Duration::seconds(1));
            let second = dispatcher.drain().await.unwrap();
            assert_eq!(second.handled, 2);
            assert_eq!(
                recorder.seen(),
                vec![
                    (CustomerId::from_u128(2), 2),
                    (CustomerId::from_u128(1), 1),
                    (CustomerId::from_u128(1), 3)
                ]
            );
            let counts = outbox.outbox_counts(tenant).await.unwrap();
            assert_eq!((counts.pending, counts.handled, counts.parked), (0, 3, 0));
        });
    }

    #[test]
    fn a_poisoned_event_is_parked_with_its_error_and_can_be_requeued() {
        block_on(async {
            let (tenant, outbox, clock) = setup();
            let events = vec![step(tenant, &clock, 1, 1), step(tenant, &clock, 1, 2)];
            outbox.append_outbox(tenant, &events).await.unwrap();
            let recorder = Recorder::new(1, 1, true);
            let dispatcher =
                Dispatcher::new(outbox.clone(), clock.clone(), DispatcherSettings::new("w"))
                    .handler(recorder.clone());
            let summary = dispatcher.drain().await.unwrap();
            assert_eq!((summary.parked, summary.handled), (1, 1));
            let messages = outbox.outbox_messages(tenant).await.unwrap();
            assert_eq!(messages[0].status, OutboxStatus::Parked);
            assert_eq!(
                messages[0].last_error.as_deref(),
                Some("recorder: step 1 refused")
            );
            assert!(outbox.requeue(tenant, messages[0].seq).await.unwrap());
            assert!(!outbox.requeue(tenant, messages[1].seq).await.unwrap());
            assert_eq!(dispatcher.drain().await.unwrap().handled, 1);
            assert_eq!(outbox.outbox_counts(tenant).await.unwrap().handled, 2);
        });
    }

    #[test]
    fn retries_stop_at_max_attempts_and_the_event_is_parked() {
        block_on(async {
            let (tenant, outbox, clock) = setup();
            outbox
                .append_outbox(tenant, &[step(tenant, &clock, 1, 1)])
                .await
                .unwrap();
            let recorder = Recorder::new(1, 100, false);
            let policy = RetryPolicy::new(Duration::seconds(1), Duration::seconds(1), 3);
            let dispatcher = Dispatcher::new(
                outbox.clone(),
                clock.clone(),
                DispatcherSettings::new("w").with_retry(policy),
            )
            .handler(recorder.clone());
            for _ in 0..3 {
                dispatcher.drain().await.unwrap();
                clock.advance(Duration::seconds(1));
            }
            let messages = outbox.outbox_messages(tenant).await.unwrap();
            assert_eq!(messages[0].status, OutboxStatus::Parked);
            assert_eq!(messages[0].attempts, 3);
            assert!(recorder.seen().is_empty());
        });
    }

    #[test]
    fn a_lease_keeps_other_workers_off_until_it_runs_out() {
        block_on(async {
            let (tenant, outbox, clock) = setup();
            outbox
                .append_outbox(tenant, &[step(tenant, &clock, 1, 1)])
                .await
                .unwrap();
            let now = clock.now();
            let lease = Duration::seconds(30);
            let a = outbox.claim("a", now, lease, 10).await.unwrap();
            assert_eq!(a.len(), 1);
            assert!(outbox.claim("b", now, lease, 10).await.unwrap().is_empty());
            // The lease ran out ("a" died): "b" gets it, and "a" can no longer mark it.
            let later = now + Duration::seconds(31);
            let b = outbox.claim("b", later, lease, 10).await.unwrap();
            assert_eq!(b[0].attempts, 2);
            assert!(!outbox.complete(tenant, a[0].seq, "a", later).await.unwrap());
            assert!(outbox.complete(tenant, b[0].seq, "b", later).await.unwrap());
        });
    }

    #[test]
    fn a_replayed_event_is_stored_once_and_a_different_one_under_its_id_is_refused() {
        block_on(async {
            let (tenant, outbox, clock) = setup();
            let event = step(tenant, &clock, 1, 1);
            outbox
                .append_outbox(tenant, std::slice::from_ref(&event))
                .await
                .unwrap();
            outbox
                .append_outbox(tenant, std::slice::from_ref(&event))
                .await
                .unwrap();
            assert_eq!(outbox.len(), 1);
            let imposter = OutboxEvent::new(DomainEvent::at(
                event.id(),
                tenant,
                clock.now(),
                Step {
                    customer: CustomerId::from_u128(1),
                    n: 2,
                },
            ));
            let err = outbox.append_outbox(tenant, &[imposter]).await.unwrap_err();
            assert_eq!(err.kind(), StorageErrorKind::Conflict);
            let other = TenantId::from_u128(2);
            let err = outbox.append_outbox(other, &[event]).await.unwrap_err();
            assert_eq!(err.kind(), StorageErrorKind::TenantMismatch);
            assert_eq!(outbox.len(), 1);
        });
    }

    #[test]
    fn a_writer_holds_the_outbox_only_once_it_writes_and_refuses_a_bad_write_whole() {
        let (tenant, outbox, clock) = setup();
        {
            let writer = outbox.writer();
            // No event written: the outbox is not held (this would wait forever otherwise).
            assert_eq!(outbox.len(), 0);
            drop(writer);
        }
        let first = step(tenant, &clock, 1, 1);
        let mut writer = outbox.writer();
        writer.push_one(tenant, first.clone()).unwrap();
        // A replay under the same writer is skipped; a batch with a different event under a
        // stored id is refused whole, its new event included.
        writer.push(tenant, vec![first.clone()]).unwrap();
        let imposter = OutboxEvent::new(DomainEvent::at(
            first.id(),
            tenant,
            clock.now(),
            Step {
                customer: CustomerId::from_u128(1),
                n: 7,
            },
        ));
        let fresh = step(tenant, &clock, 2, 2);
        let err = writer
            .push(tenant, vec![fresh.clone(), imposter.clone()])
            .unwrap_err();
        assert_eq!(err.kind(), StorageErrorKind::Conflict);
        let err = writer.push_one(tenant, imposter).unwrap_err();
        assert_eq!(err.kind(), StorageErrorKind::Conflict);
        let other = TenantId::from_u128(2);
        let err = writer.push_one(other, fresh.clone()).unwrap_err();
        assert_eq!(err.kind(), StorageErrorKind::TenantMismatch);
        writer.push(tenant, Vec::new()).unwrap();
        drop(writer);
        let stored = block_on(outbox.outbox_messages(tenant)).unwrap();
        assert_eq!(
            stored.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![first.id()]
        );
        // Two events in one write, both new: both written, in order.
        let third = step(tenant, &clock, 3, 3);
        outbox
            .writer()
            .push(tenant, vec![fresh.clone(), third.clone()])
            .unwrap();
        let stored = block_on(outbox.outbox_messages(tenant)).unwrap();
        assert_eq!(
            stored.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![first.id(), fresh.id(), third.id()]
        );
    }

    #[test]
    fn the_memory_outbox_passes_the_store_suite() {
        block_on(async {
            let outbox = MemoryOutbox::new();
            testkit::run_outbox_store_suite(&outbox).await.unwrap();
            // A second run on the same store sweeps and passes again.
            testkit::run_outbox_store_suite(&outbox).await.unwrap();
        });
    }

    #[test]
    fn typed_payloads_come_back_typed_and_as_json() {
        let (tenant, _, clock) = setup();
        let event = step(tenant, &clock, 3, 9);
        assert_eq!(event.payload::<Step>().map(|s| s.n), Some(9));
        let message = event.to_message(0).unwrap();
        assert_eq!(message.decode::<Step>().unwrap().n, 9);
        assert_eq!(
            message.aggregate.to_string(),
            format!("customer:{}", CustomerId::from_u128(3))
        );
    }
}

/// The behaviour every [`OutboxStore`] must have, written once and run on every store
/// (memory here, SQLite and PostgreSQL in `dotmac-sqlx`).
#[cfg(any(test, feature = "testkit"))]
pub mod testkit {
    // Fixed instants in 2030, seconds and days apart: nowhere near chrono's limits.
    #![allow(clippy::arithmetic_side_effects)]
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Probe {
        customer: CustomerId,
        n: u32,
    }
    impl EventPayload for Probe {
        fn event_type(&self) -> &'static str {
            "testkit.probe"
        }
    }
    impl OutboxPayload for Probe {
        fn aggregate(&self) -> Aggregate {
            Aggregate::customer(self.customer)
        }
    }

    fn probe(tenant: TenantId, at: DateTime<Utc>, customer: CustomerId, n: u32) -> OutboxEvent {
        OutboxEvent::new(DomainEvent::at(
            EventId::new(),
            tenant,
            at,
            Probe { customer, n },
        ))
    }

    fn check(ok: bool, what: &str) -> Result<(), String> {
        if ok { Ok(()) } else { Err(what.to_owned()) }
    }

    /// A tenant's outbox as `(event id, event type)`, in outbox order: what the domain
    /// crates' store suites read back to check that a write wrote its events (and a refused
    /// or replayed one none).
    pub type OutboxRead<'a> =
        Pin<Box<dyn Future<Output = Result<Vec<(EventId, String)>, String>> + Send + 'a>>;

    /// The outbox reader of a store that is an [`OutboxStore`].
    pub fn outbox_events<S: OutboxStore>(store: &S, tenant: TenantId) -> OutboxRead<'_> {
        Box::pin(async move {
            store
                .outbox_messages(tenant)
                .await
                .map(|messages| messages.into_iter().map(|m| (m.id, m.event_type)).collect())
                .map_err(|e| e.to_string())
        })
    }

    fn fail(what: &str) -> impl Fn(StorageError) -> String + '_ {
        move |e| format!("{what}: {e}")
    }

    /// Runs the suite on a store of its own (nothing else may claim from it meanwhile). It
    /// first hands out and marks handled whatever an earlier run left pending.
    ///
    /// # Errors
    ///
    /// The first behaviour that does not hold, described.
    pub async fn run_outbox_store_suite<S: OutboxStore>(store: &S) -> Result<(), String> {
        let t0 = DateTime::<Utc>::from_timestamp(1_900_000_000, 0).unwrap_or(DateTime::UNIX_EPOCH);
        let lease = Duration::seconds(30);
        // Leftovers of an earlier run: claim them far in the future and mark them.
        let far = t0 + Duration::days(3650);
        loop {
            let left = store
                .claim("suite-sweeper", far, lease, 1000)
                .await
                .map_err(fail("sweep"))?;
            if left.is_empty() {
                break;
            }
            for m in left {
                store
                    .complete(m.tenant, m.seq, "suite-sweeper", far)
                    .await
                    .map_err(fail("sweep"))?;
            }
        }

        let tenant = TenantId::new();
        let (a, b) = (CustomerId::new(), CustomerId::new());
        let events = vec![
            probe(tenant, t0, a, 1),
            probe(tenant, t0, b, 1),
            probe(tenant, t0, a, 2),
        ];

        // Writing: replays are stored once; another event under a used id and another
        // tenant's event are refused, writing nothing.
        store
            .append_outbox(tenant, &events)
            .await
            .map_err(fail("append"))?;
        store
            .append_outbox(tenant, &events[..1])
            .await
            .map_err(fail("replay"))?;
        let imposter = OutboxEvent::new(DomainEvent::at(
            events[0].id(),
            tenant,
            t0,
            Probe { customer: a, n: 99 },
        ));
        let refused = store
            .append_outbox(tenant, &[imposter, probe(tenant, t0, b, 7)])
            .await;
        check(
            matches!(&refused, Err(e) if e.kind() == StorageErrorKind::Conflict),
            "an imposter under a used id is a conflict",
        )?;
        let other = TenantId::new();
        let refused = store.append_outbox(other, &[probe(tenant, t0, b, 8)]).await;
        check(
            matches!(&refused, Err(e) if e.kind() == StorageErrorKind::TenantMismatch),
            "another tenant's event is refused",
        )?;
        let stored = store.outbox_messages(tenant).await.map_err(fail("read"))?;
        check(
            stored.len() == 3,
            "three events stored, nothing of the refused writes",
        )?;
        check(
            stored.iter().map(|m| m.id).collect::<Vec<_>>()
                == events.iter().map(|e| e.id()).collect::<Vec<_>>(),
            "stored in order",
        )?;
        check(
            stored
                .iter()
                .all(|m| m.status == OutboxStatus::Pending && m.attempts == 0),
            "stored pending, unclaimed",
        )?;
        check(
            stored[0].aggregate == Aggregate::customer(a)
                && stored[1].aggregate == Aggregate::customer(b),
            "aggregates kept",
        )?;
        check(
            stored[2].decode::<Probe>().map_err(fail("decode"))? == Probe { customer: a, n: 2 },
            "payload round-trips",
        )?;

        // Claiming: all three are free; a second worker gets nothing while the lease holds.
        let claimed = store
            .claim("w1", t0, lease, 10)
            .await
            .map_err(fail("claim"))?;
        let ours: Vec<_> = claimed.iter().filter(|m| m.tenant == tenant).collect();
        check(
            ours.len() == 3 && ours.iter().all(|m| m.attempts == 1),
            "all three claimed, one attempt each",
        )?;
        check(
            store
                .claim("w2", t0, lease, 10)
                .await
                .map_err(fail("claim"))?
                .is_empty(),
            "leased events are not claimed twice",
        )?;

        // b's event is handled; a's first fails and waits 10 s; a's second must wait behind it.
        check(
            store
                .complete(tenant, ours[1].seq, "w1", t0)
                .await
                .map_err(fail("complete"))?,
            "complete",
        )?;
        check(
            !store
                .complete(tenant, ours[1].seq, "w1", t0)
                .await
                .map_err(fail("complete"))?,
            "completing twice marks nothing",
        )?;
        check(
            store
                .release(
                    tenant,
                    ours[0].seq,
                    "w1",
                    t0 + Duration::seconds(10),
                    Some("boom"),
                )
                .await
                .map_err(fail("release"))?,
            "release",
        )?;
        check(
            store
                .release(tenant, ours[2].seq, "w1", t0, None)
                .await
                .map_err(fail("release"))?,
            "release untried",
        )?;
        check(
            store
                .claim("w2", t0 + Duration::seconds(5), lease, 10)
                .await
                .map_err(fail("claim"))?
                .is_empty(),
            "an aggregate waits behind its failed event",
        )?;
        let again = store
            .claim("w2", t0 + Duration::seconds(10), lease, 10)
            .await
            .map_err(fail("claim"))?;
        check(
            again.iter().map(|m| m.seq).collect::<Vec<_>>() == vec![ours[0].seq, ours[2].seq],
            "after the wait both come back, in order",
        )?;
        check(
            again[0].attempts == 2 && again[0].last_error.as_deref() == Some("boom"),
            "attempts and last error kept",
        )?;

        // A lease that ran out passes to another worker; the first can no longer mark it.
        let t1 = t0 + Duration::seconds(41);
        let stolen = store
            .claim("w3", t1, lease, 10)
            .await
            .map_err(fail("claim"))?;
        check(stolen.len() == 2, "expired leases are claimed again")?;
        check(
            !store
                .complete(tenant, again[0].seq, "w2", t1)
                .await
                .map_err(fail("complete"))?,
            "a lost lease marks nothing",
        )?;

        // Parking sets the event aside with its error (its aggregate goes on); requeue revives it.
        check(
            store
                .park(tenant, stolen[0].seq, "w3", "poisoned", t1)
                .await
                .map_err(fail("park"))?,
            "park",
        )?;
        // Completed in a batch: only what the worker still holds is marked (the parked event
        // and one the worker never claimed are not).
        check(
            store
                .complete_all(
                    &[
                        (tenant, stolen[1].seq),
                        (tenant, stolen[0].seq),
                        (tenant, again[0].seq.saturating_add(1_000_000)),
                    ],
                    "w3",
                    t1,
                )
                .await
                .map_err(fail("complete_all"))?
                == 1,
            "a parked event does not hold its aggregate; a batch marks only what it holds",
        )?;
        let counts = store.outbox_counts(tenant).await.map_err(fail("counts"))?;
        check(
            (counts.pending, counts.handled, counts.parked) == (0, 2, 1),
            "counts after parking",
        )?;
        let parked = store.outbox_messages(tenant).await.map_err(fail("read"))?;
        check(
            parked[0].status == OutboxStatus::Parked
                && parked[0].last_error.as_deref() == Some("poisoned"),
            "parked with its error",
        )?;
        check(
            !store
                .requeue(tenant, parked[1].seq)
                .await
                .map_err(fail("requeue"))?,
            "only a parked event is requeued",
        )?;
        check(
            store
                .requeue(tenant, parked[0].seq)
                .await
                .map_err(fail("requeue"))?,
            "requeue",
        )?;
        let revived = store
            .claim("w4", t1, lease, 10)
            .await
            .map_err(fail("claim"))?;
        check(
            revived.len() == 1 && revived[0].attempts == 1,
            "a requeued event starts over",
        )?;
        check(
            store
                .complete(tenant, revived[0].seq, "w4", t1)
                .await
                .map_err(fail("complete"))?,
            "complete revived",
        )?;
        let counts = store.outbox_counts(tenant).await.map_err(fail("counts"))?;
        check(counts.handled == 3 && counts.total() == 3, "all handled")?;
        check(
            store
                .outbox_counts(other)
                .await
                .map_err(fail("counts"))?
                .total()
                == 0,
            "the other tenant has nothing",
        )?;
        Ok(())
    }
}
