//! Storage traits. Every method is tenant-scoped: a row of one tenant is never visible to
//! another. Implementations: [`InMemorySupportStore`](crate::InMemorySupportStore) here, SQLite
//! and PostgreSQL in `dotmac-sqlx`; all of them pass the same behaviour suite
//! (`testkit::run_store_suite`, feature `testkit`).
//!
//! The traits use native `async fn` (returned futures are `Send`); they are not object-safe, so
//! services are generic over the store.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use dotmac_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::calendar::BusinessCalendar;
use crate::csat::CsatResponse;
use crate::error::Result;
use crate::escalation::{EscalationRule, SlaMarks};
use crate::routing::{Agent, Queue, QueueCursor, Router};
use crate::sla::{SlaPolicyId, SlaPolicySet, SlaRecord};
use crate::ticket::{StatusCatalog, Ticket};
use crate::vocab::{AgentId, QueueId, TicketId};

/// A tenant's support configuration, stored as one document.
///
/// `#[non_exhaustive]`: build it with [`SupportConfig::new`] and the `with_…` methods, so a
/// later release can add settings without breaking callers.
///
/// Business dates of the tenant (report periods, holidays) are local dates in
/// [`calendar`](Self::calendar)'s time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SupportConfig {
    /// The calendar of every policy without its own.
    pub calendar: BusinessCalendar,
    /// Calendars of particular policies (a 24/7 NOC policy, a per-region office).
    #[serde(default)]
    pub policy_calendars: BTreeMap<SlaPolicyId, BusinessCalendar>,
    /// SLA policies in order of precedence.
    pub policies: SlaPolicySet,
    /// Routing rules.
    pub router: Router,
    /// Escalation rules.
    #[serde(default)]
    pub escalations: Vec<EscalationRule>,
    /// The desk's own statuses beside the built-in ones (absent in configurations stored
    /// before custom statuses: built-in only).
    #[serde(default)]
    pub statuses: StatusCatalog,
}

impl SupportConfig {
    /// A configuration with `calendar` for every policy, `policies` in order of precedence and
    /// `router`; no per-policy calendars, no escalations, built-in statuses only.
    pub fn new(calendar: BusinessCalendar, policies: SlaPolicySet, router: Router) -> Self {
        SupportConfig {
            calendar,
            policy_calendars: BTreeMap::new(),
            policies,
            router,
            escalations: Vec::new(),
            statuses: StatusCatalog::new(),
        }
    }

    /// With `calendar` for the policy `policy` instead of the default calendar.
    #[must_use]
    pub fn with_policy_calendar(mut self, policy: SlaPolicyId, calendar: BusinessCalendar) -> Self {
        self.policy_calendars.insert(policy, calendar);
        self
    }

    /// With these escalation rules.
    #[must_use]
    pub fn with_escalations(mut self, escalations: Vec<EscalationRule>) -> Self {
        self.escalations = escalations;
        self
    }

    /// With the desk's own statuses.
    #[must_use]
    pub fn with_statuses(mut self, statuses: StatusCatalog) -> Self {
        self.statuses = statuses;
        self
    }

    /// The calendar a policy counts on.
    pub fn calendar_for(&self, policy: SlaPolicyId) -> &BusinessCalendar {
        self.policy_calendars.get(&policy).unwrap_or(&self.calendar)
    }
}

/// Tickets.
pub trait TicketStore: Send + Sync {
    /// Inserts a new ticket.
    ///
    /// # Errors
    ///
    /// [`SupportError::AlreadyExists`](crate::SupportError::AlreadyExists) for a known id.
    fn insert_ticket(
        &self,
        tenant: TenantId,
        ticket: &Ticket,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Replaces a stored ticket.
    ///
    /// # Errors
    ///
    /// [`SupportError::NotFound`](crate::SupportError::NotFound) for an unknown id.
    fn update_ticket(
        &self,
        tenant: TenantId,
        ticket: &Ticket,
    ) -> impl Future<Output = Result<()>> + Send;

    /// A ticket by id.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn get_ticket(
        &self,
        tenant: TenantId,
        id: TicketId,
    ) -> impl Future<Output = Result<Option<Ticket>>> + Send;

    /// Tickets linked to a parent incident, oldest first.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn children_of(
        &self,
        tenant: TenantId,
        parent: TicketId,
    ) -> impl Future<Output = Result<Vec<Ticket>>> + Send;

    /// Unassigned tickets of a queue that are not resolved or closed, oldest first: the
    /// queue's waiting line.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn waiting_in_queue(
        &self,
        tenant: TenantId,
        queue: QueueId,
    ) -> impl Future<Output = Result<Vec<Ticket>>> + Send;

    /// Tickets assigned to an agent that are not resolved or closed.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn assigned_to(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> impl Future<Output = Result<Vec<Ticket>>> + Send;

    /// Tickets that are not closed (their clocks may still fire), oldest first.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn unclosed_tickets(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<Ticket>>> + Send;
}

/// Agents, queues and rotation cursors.
pub trait AgentStore: Send + Sync {
    /// Inserts or replaces an agent.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn put_agent(&self, tenant: TenantId, agent: &Agent)
    -> impl Future<Output = Result<()>> + Send;

    /// An agent by id.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn get_agent(
        &self,
        tenant: TenantId,
        id: AgentId,
    ) -> impl Future<Output = Result<Option<Agent>>> + Send;

    /// Every agent of the tenant.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn list_agents(&self, tenant: TenantId) -> impl Future<Output = Result<Vec<Agent>>> + Send;

    /// Inserts or replaces a queue.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn put_queue(&self, tenant: TenantId, queue: &Queue)
    -> impl Future<Output = Result<()>> + Send;

    /// A queue by id.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn get_queue(
        &self,
        tenant: TenantId,
        id: QueueId,
    ) -> impl Future<Output = Result<Option<Queue>>> + Send;

    /// Every queue of the tenant.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn list_queues(&self, tenant: TenantId) -> impl Future<Output = Result<Vec<Queue>>> + Send;

    /// A queue's rotation position (the default for a queue never used).
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn get_cursor(
        &self,
        tenant: TenantId,
        queue: QueueId,
    ) -> impl Future<Output = Result<QueueCursor>> + Send;

    /// Saves a queue's rotation position.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn put_cursor(
        &self,
        tenant: TenantId,
        queue: QueueId,
        cursor: QueueCursor,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The tenant's configuration document.
pub trait ConfigStore: Send + Sync {
    /// Saves it.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn put_config(
        &self,
        tenant: TenantId,
        config: &SupportConfig,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Loads it.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn get_config(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Option<SupportConfig>>> + Send;
}

/// What fired per ticket, and the outcomes of stopped clocks.
pub trait SlaStore: Send + Sync {
    /// The marks of a ticket (empty for a ticket without any).
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn get_marks(
        &self,
        tenant: TenantId,
        ticket: TicketId,
    ) -> impl Future<Output = Result<SlaMarks>> + Send;

    /// Replaces the marks of a ticket.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn put_marks(
        &self,
        tenant: TenantId,
        ticket: TicketId,
        marks: &SlaMarks,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Appends an outcome.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn add_record(
        &self,
        tenant: TenantId,
        record: &SlaRecord,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Outcomes whose clock stopped in `[from, to)`, in stop order.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn records(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<SlaRecord>>> + Send;
}

/// CSAT responses.
pub trait CsatStore: Send + Sync {
    /// Adds a response; one per ticket.
    ///
    /// # Errors
    ///
    /// [`SupportError::AlreadyExists`](crate::SupportError::AlreadyExists) when the ticket
    /// already has one.
    fn add_csat(
        &self,
        tenant: TenantId,
        response: &CsatResponse,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Responses dated in `[from, to)`, oldest first.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn csat_responses(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<CsatResponse>>> + Send;
}

/// Everything the support service needs.
pub trait SupportStore: TicketStore + AgentStore + ConfigStore + SlaStore + CsatStore {}

impl<T: TicketStore + AgentStore + ConfigStore + SlaStore + CsatStore> SupportStore for T {}
