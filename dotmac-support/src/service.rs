//! `SupportService`: store + pure domain + clock, returning domain events.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dotmac_core::{Clock, DomainEvent, EventPayload, TenantId};
use serde::{Deserialize, Serialize};

use crate::csat::{CsatResponse, CsatResponseId, CsatScore, CsatSummary};
use crate::error::{Result, SupportError};
use crate::escalation::{EscalationAction, EscalationRuleId, MarkKind, due_escalations};
use crate::routing::{Agent, Presence, Queue, QueueAssigner, Roster, pick_agent};
use crate::sla::{ClockState, ClockStatus, SlaMetric, SlaPolicyId, SlaRecord, SlaStats};
use crate::store::{SupportConfig, SupportStore};
use crate::ticket::{Actor, Change, NewComment, NewTicket, Priority, Ticket, Visibility};
use crate::vocab::{AgentId, CommentId, QueueId, Status, TicketId};

/// What happened in the support desk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum SupportEvent {
    /// A ticket was created and routed.
    TicketCreated {
        /// The ticket.
        ticket: TicketId,
        /// The queue it was routed to.
        queue: QueueId,
        /// Its priority.
        priority: Priority,
        /// The SLA policy that applies.
        policy: Option<SlaPolicyId>,
        /// First-response due time.
        first_response_due: Option<DateTime<Utc>>,
        /// Resolution due time.
        resolution_due: Option<DateTime<Utc>>,
    },
    /// A ticket was assigned to an agent.
    TicketAssigned {
        /// The ticket.
        ticket: TicketId,
        /// The agent.
        agent: AgentId,
    },
    /// Nobody could take the ticket: it waits in its queue.
    TicketWaiting {
        /// The ticket.
        ticket: TicketId,
        /// The queue.
        queue: QueueId,
    },
    /// A status change.
    StatusChanged {
        /// The ticket.
        ticket: TicketId,
        /// Before.
        from: Status,
        /// After.
        to: Status,
        /// Who.
        actor: Actor,
    },
    /// A comment.
    CommentAdded {
        /// The ticket.
        ticket: TicketId,
        /// The comment.
        comment: CommentId,
        /// Visibility.
        visibility: Visibility,
        /// Author.
        actor: Actor,
    },
    /// A priority change.
    PriorityChanged {
        /// The ticket.
        ticket: TicketId,
        /// Before.
        from: Priority,
        /// After.
        to: Priority,
    },
    /// A ticket was merged into another.
    TicketMerged {
        /// The merged (now closed) ticket.
        source: TicketId,
        /// The surviving ticket.
        target: TicketId,
    },
    /// A ticket was linked to a parent incident.
    TicketLinked {
        /// The child.
        child: TicketId,
        /// The parent.
        parent: TicketId,
    },
    /// An SLA clock entered its warning window.
    SlaWarning {
        /// The ticket.
        ticket: TicketId,
        /// Which clock.
        metric: SlaMetric,
        /// When it is due.
        due_at: Option<DateTime<Utc>>,
    },
    /// An SLA clock passed its due time.
    SlaBreached {
        /// The ticket.
        ticket: TicketId,
        /// Which clock.
        metric: SlaMetric,
        /// When it was due.
        due_at: Option<DateTime<Utc>>,
    },
    /// An SLA clock stopped; its outcome was stored.
    SlaClockStopped {
        /// The outcome.
        record: SlaRecord,
    },
    /// An escalation rule fired.
    Escalated {
        /// The ticket.
        ticket: TicketId,
        /// The rule.
        rule: EscalationRuleId,
        /// What it did.
        action: EscalationAction,
    },
    /// A CSAT response was recorded.
    CsatRecorded {
        /// The ticket.
        ticket: TicketId,
        /// The score.
        score: CsatScore,
    },
    /// An agent's presence changed.
    PresenceChanged {
        /// The agent.
        agent: AgentId,
        /// Now.
        presence: Presence,
    },
}

impl EventPayload for SupportEvent {
    fn event_type(&self) -> &'static str {
        match self {
            SupportEvent::TicketCreated { .. } => "support.ticket_created",
            SupportEvent::TicketAssigned { .. } => "support.ticket_assigned",
            SupportEvent::TicketWaiting { .. } => "support.ticket_waiting",
            SupportEvent::StatusChanged { .. } => "support.status_changed",
            SupportEvent::CommentAdded { .. } => "support.comment_added",
            SupportEvent::PriorityChanged { .. } => "support.priority_changed",
            SupportEvent::TicketMerged { .. } => "support.ticket_merged",
            SupportEvent::TicketLinked { .. } => "support.ticket_linked",
            SupportEvent::SlaWarning { .. } => "support.sla_warning",
            SupportEvent::SlaBreached { .. } => "support.sla_breached",
            SupportEvent::SlaClockStopped { .. } => "support.sla_clock_stopped",
            SupportEvent::Escalated { .. } => "support.escalated",
            SupportEvent::CsatRecorded { .. } => "support.csat_recorded",
            SupportEvent::PresenceChanged { .. } => "support.presence_changed",
        }
    }
}

/// A correction of the status a past history entry recorded
/// ([`SupportService::amend_status`], [`Ticket::amend_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusAmendment {
    /// The index of the `Created` or `StatusChanged` entry in [`Ticket::history`].
    pub entry: usize,
    /// The status it should have recorded.
    pub to: Status,
    /// Who corrects it.
    pub actor: Actor,
}

impl StatusAmendment {
    /// Entry `entry` should have recorded `to`; `actor` says so.
    pub fn new(entry: usize, to: impl Into<Status>, actor: Actor) -> Self {
        StatusAmendment {
            entry,
            to: to.into(),
            actor,
        }
    }
}

/// Events returned by a service call.
pub type SupportEvents = Vec<DomainEvent<SupportEvent>>;

/// The support desk: every call loads what it needs from the store, applies the pure domain
/// with the clock's instant, saves, and returns what happened.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use dotmac_core::{ManualClock, TenantId};
/// use dotmac_support::*;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
/// let service = SupportService::new(InMemorySupportStore::new(), clock);
/// let tenant = TenantId::new();
/// let queue = Queue { id: QueueId::new(), name: "L1".into(), members: vec![], strategy: AssignmentStrategy::RoundRobin };
/// service.put_queue(tenant, &queue).await?;
/// service.configure(tenant, SupportConfig::new(
///     BusinessCalendar::builder("UTC").weekdays("08:00", "18:00").build()?,
///     SlaPolicySet { policies: vec![SlaPolicy::isp_default(SlaPolicyId::new())] },
///     Router::new(queue.id),
/// )).await?;
/// let (ticket, events) = service.create_ticket(tenant, NewTicket::new("No sync").priority(Priority::High)).await?;
/// // High: 4 business hours to respond; nobody is online, so it waits in L1.
/// assert_eq!(events.len(), 2);
/// let clocks = service.sla_clocks(tenant, ticket.id()).await?;
/// assert_eq!(clocks[0].due_at, Some(Utc.with_ymd_and_hms(2026, 3, 2, 13, 0, 0).unwrap()));
/// # Ok::<(), SupportError>(()) }).unwrap();
/// ```
///
/// The service is a cheap handle: cloning it clones an [`Arc`], never the store or the clock
/// (neither needs to be `Clone`), so one service can be shared by every task of a server.
#[derive(Debug)]
pub struct SupportService<S, C> {
    inner: Arc<Inner<S, C>>,
}

#[derive(Debug)]
struct Inner<S, C> {
    store: S,
    clock: C,
}

// Not derived: a derive would demand `S: Clone, C: Clone`, and only the `Arc` is cloned.
impl<S, C> Clone for SupportService<S, C> {
    fn clone(&self) -> Self {
        SupportService {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: SupportStore, C: Clock> SupportService<S, C> {
    /// A service over a store and a clock.
    pub fn new(store: S, clock: C) -> Self {
        SupportService {
            inner: Arc::new(Inner { store, clock }),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }

    /// Every event the service returns is made here, so every one is counted here too.
    fn event(&self, tenant: TenantId, payload: SupportEvent) -> DomainEvent<SupportEvent> {
        count(&payload);
        DomainEvent::new(tenant, &self.inner.clock, payload)
    }

    async fn config(&self, tenant: TenantId) -> Result<SupportConfig> {
        self.inner
            .store
            .get_config(tenant)
            .await?
            .ok_or(SupportError::NotConfigured)
    }

    async fn ticket(&self, tenant: TenantId, id: TicketId) -> Result<Ticket> {
        self.inner
            .store
            .get_ticket(tenant, id)
            .await?
            .ok_or_else(|| SupportError::NotFound {
                kind: "ticket",
                id: id.to_string(),
            })
    }

    async fn queue(&self, tenant: TenantId, id: QueueId) -> Result<Queue> {
        self.inner
            .store
            .get_queue(tenant, id)
            .await?
            .ok_or_else(|| SupportError::NotFound {
                kind: "queue",
                id: id.to_string(),
            })
    }

    /// Saves the tenant's configuration after checking that every queue it names exists.
    ///
    /// # Errors
    ///
    /// [`SupportError::Config`] naming a missing queue; storage errors.
    #[tracing::instrument(name = "dotmac.support.configure", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn configure(&self, tenant: TenantId, config: SupportConfig) -> Result<()> {
        let mut named: Vec<QueueId> = vec![config.router.fallback()];
        named.extend(config.router.rules().iter().map(|r| r.queue));
        named.extend(config.escalations.iter().filter_map(|r| match r.action {
            EscalationAction::Reassign { queue } => Some(queue),
            _ => None,
        }));
        for queue in named {
            if self.inner.store.get_queue(tenant, queue).await?.is_none() {
                return Err(SupportError::Config(format!(
                    "queue {queue} is named but does not exist; put_queue it first"
                )));
            }
        }
        for policy in &config.policies.policies {
            for name in policy.pause_statuses() {
                if config.statuses.resolve(name.as_str()).is_err() {
                    return Err(SupportError::Config(format!(
                        "SLA policy {:?} pauses in status {:?}, which is neither built in \
                         nor defined in the configuration's statuses",
                        policy.name(),
                        name.as_str()
                    )));
                }
            }
        }
        self.inner.store.put_config(tenant, &config).await
    }

    /// Adds or replaces a queue.
    ///
    /// # Errors
    ///
    /// Storage errors.
    #[tracing::instrument(name = "dotmac.support.put_queue", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn put_queue(&self, tenant: TenantId, queue: &Queue) -> Result<()> {
        self.inner.store.put_queue(tenant, queue).await
    }

    /// Adds or replaces an agent; an online agent immediately takes waiting tickets.
    ///
    /// # Errors
    ///
    /// Storage errors.
    #[tracing::instrument(name = "dotmac.support.put_agent", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn put_agent(&self, tenant: TenantId, agent: &Agent) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            self.inner.store.put_agent(tenant, agent).await?;
            if agent.presence == Presence::Online {
                return self.drain_queues_of(tenant, agent.id).await;
            }
            Ok(Vec::new())
        }
        .await;
        traced(result)
    }

    /// Changes an agent's presence. Coming online assigns the waiting tickets of the agent's
    /// queues; going offline leaves assigned tickets where they are (reassign them explicitly).
    ///
    /// # Errors
    ///
    /// [`SupportError::NotFound`] for an unknown agent; storage errors.
    #[tracing::instrument(name = "dotmac.support.set_presence", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn set_presence(
        &self,
        tenant: TenantId,
        agent: AgentId,
        presence: Presence,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let mut stored = self
                .inner
                .store
                .get_agent(tenant, agent)
                .await?
                .ok_or_else(|| SupportError::NotFound {
                    kind: "agent",
                    id: agent.to_string(),
                })?;
            stored.presence = presence;
            self.inner.store.put_agent(tenant, &stored).await?;
            let mut events =
                vec![self.event(tenant, SupportEvent::PresenceChanged { agent, presence })];
            if presence == Presence::Online {
                events.extend(self.drain_queues_of(tenant, agent).await?);
            }
            Ok(events)
        }
        .await;
        traced(result)
    }

    /// Agents with their SLA-active loads: assigned tickets that are not done and not paused
    /// by their policy.
    async fn roster(&self, tenant: TenantId, config: &SupportConfig) -> Result<Roster> {
        let mut roster = Roster::new();
        for agent in self.inner.store.list_agents(tenant).await? {
            let tickets = self.inner.store.assigned_to(tenant, agent.id).await?;
            let active = tickets.iter().filter(|t| is_sla_active(config, t)).count();
            roster.upsert(agent, u32::try_from(active).unwrap_or(u32::MAX));
        }
        Ok(roster)
    }

    /// Tries to assign a ticket from its queue; saves the cursor when it moves.
    async fn try_assign(
        &self,
        tenant: TenantId,
        queue: &Queue,
        roster: &mut Roster,
        ticket: &mut Ticket,
        now: DateTime<Utc>,
    ) -> Result<Option<AgentId>> {
        let mut cursor = self.inner.store.get_cursor(tenant, queue.id).await?;
        let Some(agent) = pick_agent(queue, &mut cursor, roster, waited_minutes(ticket, now))
        else {
            return Ok(None);
        };
        ticket.assign(Some(agent), Actor::System, now)?;
        roster.add_load(agent);
        self.inner
            .store
            .put_cursor(tenant, queue.id, cursor)
            .await?;
        Ok(Some(agent))
    }

    async fn drain_queues_of(&self, tenant: TenantId, agent: AgentId) -> Result<SupportEvents> {
        let mut events = Vec::new();
        for queue in self.inner.store.list_queues(tenant).await? {
            if queue.members.contains(&agent) {
                events.extend(self.drain_queue(tenant, queue.id).await?);
            }
        }
        Ok(events)
    }

    /// Assigns the waiting tickets of a queue, oldest first, as far as agents are available.
    ///
    /// # Errors
    ///
    /// [`SupportError::NotConfigured`], [`SupportError::NotFound`] for the queue; storage errors.
    #[tracing::instrument(name = "dotmac.support.drain_queue", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn drain_queue(&self, tenant: TenantId, queue: QueueId) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let config = self.config(tenant).await?;
            let queue = self.queue(tenant, queue).await?;
            let roster = self.roster(tenant, &config).await?;
            let now = self.inner.clock.now();
            let cursor = self.inner.store.get_cursor(tenant, queue.id).await?;
            // One assigner for the whole line: O(log members) per decision.
            let mut assigner = QueueAssigner::new(&queue, &roster, cursor);
            let mut events = Vec::new();
            for mut ticket in self.inner.store.waiting_in_queue(tenant, queue.id).await? {
                let Some(agent) = assigner.pick(waited_minutes(&ticket, now)) else {
                    continue;
                };
                ticket.assign(Some(agent), Actor::System, now)?;
                self.inner.store.update_ticket(tenant, &ticket).await?;
                events.push(self.event(
                    tenant,
                    SupportEvent::TicketAssigned {
                        ticket: ticket.id(),
                        agent,
                    },
                ));
            }
            if assigner.cursor() != cursor {
                self.inner
                    .store
                    .put_cursor(tenant, queue.id, assigner.cursor())
                    .await?;
            }
            Ok(events)
        }
        .await;
        traced(result)
    }

    /// Creates a ticket: routes it, tries to assign it, and reports its SLA due times.
    ///
    /// # Errors
    ///
    /// [`SupportError::NotConfigured`]; [`SupportError::NotFound`] when the routed queue
    /// vanished; storage errors.
    #[tracing::instrument(name = "dotmac.support.create_ticket", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn create_ticket(
        &self,
        tenant: TenantId,
        new: NewTicket,
    ) -> Result<(Ticket, SupportEvents)> {
        let config = self.config(tenant).await?;
        let now = self.inner.clock.now();
        let mut ticket = Ticket::open(TicketId::new(), tenant, new, now);
        let queue = self.queue(tenant, config.router.route(&ticket)).await?;
        ticket.set_queue(queue.id, Actor::System, now)?;
        let mut roster = self.roster(tenant, &config).await?;
        let assigned = self
            .try_assign(tenant, &queue, &mut roster, &mut ticket, now)
            .await?;
        self.inner.store.insert_ticket(tenant, &ticket).await?;

        let policy = config.policies.select(&ticket);
        let clocks = match policy {
            Some(p) => p.evaluate(
                config.calendar_for(p.id()),
                &ticket.sla_timeline(),
                ticket.priority(),
                now,
            )?,
            None => Vec::new(),
        };
        let due = |m: SlaMetric| clocks.iter().find(|c| c.metric == m).and_then(|c| c.due_at);
        let mut events = vec![self.event(
            tenant,
            SupportEvent::TicketCreated {
                ticket: ticket.id(),
                queue: queue.id,
                priority: ticket.priority(),
                policy: policy.map(|p| p.id()),
                first_response_due: due(SlaMetric::FirstResponse),
                resolution_due: due(SlaMetric::Resolution),
            },
        )];
        events.push(self.event(
            tenant,
            match assigned {
                Some(agent) => SupportEvent::TicketAssigned {
                    ticket: ticket.id(),
                    agent,
                },
                None => SupportEvent::TicketWaiting {
                    ticket: ticket.id(),
                    queue: queue.id,
                },
            },
        ));
        tracing::Span::current().record("events", events.len());
        Ok((ticket, events))
    }

    /// Adds a comment. A public agent comment stops the response clocks; their outcome is
    /// recorded at once.
    ///
    /// # Errors
    ///
    /// [`SupportError::NotFound`], the ticket's own errors; storage errors.
    #[tracing::instrument(name = "dotmac.support.comment", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn comment(
        &self,
        tenant: TenantId,
        id: TicketId,
        new: NewComment,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let mut ticket = self.ticket(tenant, id).await?;
            let now = self.inner.clock.now();
            let comment = CommentId::new();
            let (author, visibility) = (new.author, new.visibility);
            ticket.comment(comment, new, now)?;
            self.inner.store.update_ticket(tenant, &ticket).await?;
            let mut events = vec![self.event(
                tenant,
                SupportEvent::CommentAdded {
                    ticket: id,
                    comment,
                    visibility,
                    actor: author,
                },
            )];
            events.extend(self.process(tenant, id).await?);
            Ok(events)
        }
        .await;
        traced(result)
    }

    /// Changes a ticket's status: a built-in one, or one the tenant's
    /// [`SupportConfig::statuses`] defines. Resolving or closing a parent incident does the
    /// same to its children; a change that frees an agent's capacity lets the queue assign
    /// waiting tickets.
    ///
    /// # Errors
    ///
    /// [`SupportError::UnknownStatus`] for a custom status the tenant does not define (with
    /// that category), [`SupportError::IllegalTransition`], [`SupportError::Merged`],
    /// [`SupportError::NotFound`]; storage errors. Nothing is changed on error.
    #[tracing::instrument(name = "dotmac.support.change_status", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn change_status(
        &self,
        tenant: TenantId,
        id: TicketId,
        to: Status,
        actor: Actor,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            if !to.is_builtin() && !self.config(tenant).await?.statuses.contains(&to) {
                return Err(SupportError::UnknownStatus(to.name().to_string()));
            }
            let mut ticket = self.ticket(tenant, id).await?;
            let now = self.inner.clock.now();
            let from = ticket.status().clone();
            ticket.change_status(to.clone(), actor, now)?;
            self.inner.store.update_ticket(tenant, &ticket).await?;
            let mut events = vec![self.event(
                tenant,
                SupportEvent::StatusChanged {
                    ticket: id,
                    from,
                    to: to.clone(),
                    actor,
                },
            )];
            if to.is_done() {
                for mut child in self.inner.store.children_of(tenant, id).await? {
                    let child_from = child.status().clone();
                    if child.merged_into().is_none() && child_from.can_move_to(&to) {
                        child.change_status(to.clone(), Actor::System, now)?;
                        self.inner.store.update_ticket(tenant, &child).await?;
                        events.push(self.event(
                            tenant,
                            SupportEvent::StatusChanged {
                                ticket: child.id(),
                                from: child_from,
                                to: to.clone(),
                                actor: Actor::System,
                            },
                        ));
                        events.extend(self.process(tenant, child.id()).await?);
                    }
                }
            }
            events.extend(self.process(tenant, id).await?);
            if let Some(queue) = ticket.queue() {
                events.extend(self.drain_queue(tenant, queue).await?);
            }
            Ok(events)
        }
        .await;
        traced(result)
    }

    /// Changes a ticket's status given by name (from an API or a form): a built-in name or
    /// one the tenant's [`SupportConfig::statuses`] defines, resolved to its [`Status`].
    ///
    /// # Errors
    ///
    /// [`SupportError::UnknownStatus`] (nothing changed), then as [`Self::change_status`].
    #[tracing::instrument(name = "dotmac.support.change_status_named", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn change_status_named(
        &self,
        tenant: TenantId,
        id: TicketId,
        to: &str,
        actor: Actor,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let catalog = self
                .inner
                .store
                .get_config(tenant)
                .await?
                .map(|config| config.statuses)
                .unwrap_or_default();
            let to = catalog.resolve(to)?;
            self.change_status(tenant, id, to, actor).await
        }
        .await;
        traced(result)
    }

    /// Corrects the status recorded by a past history entry (see [`Ticket::amend_status`]); the
    /// clocks are rebuilt with the correction at once.
    ///
    /// # Errors
    ///
    /// [`SupportError::NotFound`] (ticket or entry), [`SupportError::Merged`]; storage errors.
    #[tracing::instrument(name = "dotmac.support.amend_status", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn amend_status(
        &self,
        tenant: TenantId,
        id: TicketId,
        amendment: StatusAmendment,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let StatusAmendment { entry, to, actor } = amendment;
            if !to.is_builtin() && !self.config(tenant).await?.statuses.contains(&to) {
                return Err(SupportError::UnknownStatus(to.name().to_string()));
            }
            let mut ticket = self.ticket(tenant, id).await?;
            ticket.amend_status(entry, to, actor, self.inner.clock.now())?;
            self.inner.store.update_ticket(tenant, &ticket).await?;
            self.process(tenant, id).await
        }
        .await;
        traced(result)
    }

    /// Assigns a ticket to an agent by hand.
    ///
    /// # Errors
    ///
    /// [`SupportError::AgentUnavailable`] for an agent who is not online or is at capacity (the
    /// ticket is unchanged), [`SupportError::NotFound`]; storage errors.
    #[tracing::instrument(name = "dotmac.support.assign", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn assign(
        &self,
        tenant: TenantId,
        id: TicketId,
        agent: AgentId,
        actor: Actor,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let config = self.config(tenant).await?;
            let mut ticket = self.ticket(tenant, id).await?;
            let roster = self.roster(tenant, &config).await?;
            let entry = roster.get(agent).ok_or_else(|| SupportError::NotFound {
                kind: "agent",
                id: agent.to_string(),
            })?;
            if entry.agent.presence != Presence::Online || entry.active >= entry.agent.capacity() {
                return Err(SupportError::AgentUnavailable { agent });
            }
            ticket.assign(Some(agent), actor, self.inner.clock.now())?;
            self.inner.store.update_ticket(tenant, &ticket).await?;
            Ok(vec![self.event(
                tenant,
                SupportEvent::TicketAssigned { ticket: id, agent },
            )])
        }
        .await;
        traced(result)
    }

    /// Changes the priority (clocks are recomputed with the new priority's targets).
    ///
    /// # Errors
    ///
    /// [`SupportError::NotFound`], [`SupportError::Merged`]; storage errors.
    #[tracing::instrument(name = "dotmac.support.set_priority", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn set_priority(
        &self,
        tenant: TenantId,
        id: TicketId,
        to: Priority,
        actor: Actor,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let mut ticket = self.ticket(tenant, id).await?;
            let from = ticket.priority();
            ticket.set_priority(to, actor, self.inner.clock.now())?;
            if from == to {
                return Ok(Vec::new());
            }
            self.inner.store.update_ticket(tenant, &ticket).await?;
            let mut events = vec![self.event(
                tenant,
                SupportEvent::PriorityChanged {
                    ticket: id,
                    from,
                    to,
                },
            )];
            events.extend(self.process(tenant, id).await?);
            Ok(events)
        }
        .await;
        traced(result)
    }

    /// Adds a tag.
    ///
    /// # Errors
    ///
    /// [`SupportError::NotFound`], [`SupportError::Merged`]; storage errors.
    #[tracing::instrument(name = "dotmac.support.tag", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn tag(&self, tenant: TenantId, id: TicketId, tag: &str, actor: Actor) -> Result<()> {
        let mut ticket = self.ticket(tenant, id).await?;
        ticket.tag(tag, actor, self.inner.clock.now())?;
        self.inner.store.update_ticket(tenant, &ticket).await
    }

    /// Merges `source` into `target`.
    ///
    /// # Errors
    ///
    /// [`SupportError::SelfReference`], [`SupportError::Merged`], [`SupportError::NotFound`];
    /// storage errors.
    #[tracing::instrument(name = "dotmac.support.merge", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn merge(
        &self,
        tenant: TenantId,
        source: TicketId,
        target: TicketId,
        actor: Actor,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let mut from = self.ticket(tenant, source).await?;
            let mut into = self.ticket(tenant, target).await?;
            from.merge_into(&mut into, actor, self.inner.clock.now())?;
            self.inner.store.update_ticket(tenant, &into).await?;
            self.inner.store.update_ticket(tenant, &from).await?;
            Ok(vec![self.event(
                tenant,
                SupportEvent::TicketMerged { source, target },
            )])
        }
        .await;
        traced(result)
    }

    /// Links a ticket to a parent incident.
    ///
    /// # Errors
    ///
    /// [`SupportError::SelfReference`], [`SupportError::Merged`], [`SupportError::NotFound`];
    /// storage errors.
    #[tracing::instrument(name = "dotmac.support.link_to_parent", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn link_to_parent(
        &self,
        tenant: TenantId,
        child: TicketId,
        parent: TicketId,
        actor: Actor,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let mut ticket = self.ticket(tenant, child).await?;
            let parent_ticket = self.ticket(tenant, parent).await?;
            ticket.link_to_parent(&parent_ticket, actor, self.inner.clock.now())?;
            self.inner.store.update_ticket(tenant, &ticket).await?;
            Ok(vec![self.event(
                tenant,
                SupportEvent::TicketLinked { child, parent },
            )])
        }
        .await;
        traced(result)
    }

    /// A ticket's clocks now.
    ///
    /// # Errors
    ///
    /// [`SupportError::NotConfigured`], [`SupportError::NotFound`]; storage errors.
    #[tracing::instrument(name = "dotmac.support.sla_clocks", level = "debug", skip_all, fields(tenant = %tenant, clocks = tracing::field::Empty))]
    pub async fn sla_clocks(&self, tenant: TenantId, id: TicketId) -> Result<Vec<ClockState>> {
        let config = self.config(tenant).await?;
        let ticket = self.ticket(tenant, id).await?;
        let clocks = match config.policies.select(&ticket) {
            Some(p) => p.evaluate(
                config.calendar_for(p.id()),
                &ticket.sla_timeline(),
                ticket.priority(),
                self.inner.clock.now(),
            )?,
            None => Vec::new(),
        };
        tracing::Span::current().record("clocks", clocks.len());
        Ok(clocks)
    }

    /// Checks every unclosed ticket's clocks: warnings, breaches, stopped clocks and
    /// escalations, each once per clock; then lets every queue assign waiting tickets (skills
    /// relax with waiting time). Run it every minute or so.
    ///
    /// # Errors
    ///
    /// [`SupportError::NotConfigured`]; storage errors.
    #[tracing::instrument(name = "dotmac.support.sweep", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty, tickets = tracing::field::Empty))]
    pub async fn sweep(&self, tenant: TenantId) -> Result<SupportEvents> {
        // Wall time for the histogram only: never business time, which is the clock's.
        let started = std::time::Instant::now();
        let result: Result<SupportEvents> = async {
            let mut events = Vec::new();
            let tickets = self.inner.store.unclosed_tickets(tenant).await?;
            tracing::Span::current().record("tickets", tickets.len());
            for ticket in tickets {
                if ticket.merged_into().is_none() {
                    events.extend(self.process(tenant, ticket.id()).await?);
                }
            }
            for queue in self.inner.store.list_queues(tenant).await? {
                events.extend(self.drain_queue(tenant, queue.id).await?);
            }
            Ok(events)
        }
        .await;
        metrics::histogram!("dotmac_support_sweep_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        traced(result)
    }

    /// Evaluates one ticket's clocks and fires what has not fired yet.
    async fn process(&self, tenant: TenantId, id: TicketId) -> Result<SupportEvents> {
        let config = self.config(tenant).await?;
        let mut ticket = self.ticket(tenant, id).await?;
        let Some(policy) = config.policies.select(&ticket) else {
            return Ok(Vec::new());
        };
        let now = self.inner.clock.now();
        let clocks = policy.evaluate(
            config.calendar_for(policy.id()),
            &ticket.sla_timeline(),
            ticket.priority(),
            now,
        )?;
        let mut marks = self.inner.store.get_marks(tenant, id).await?;
        let before = marks.clone();
        let mut events = Vec::new();
        for clock in &clocks {
            match clock.status {
                ClockStatus::Warning if marks.mark(MarkKind::Warned, clock) => {
                    events.push(self.event(
                        tenant,
                        SupportEvent::SlaWarning {
                            ticket: id,
                            metric: clock.metric,
                            due_at: clock.due_at,
                        },
                    ))
                }
                ClockStatus::Breached if marks.mark(MarkKind::Breached, clock) => {
                    events.push(self.event(
                        tenant,
                        SupportEvent::SlaBreached {
                            ticket: id,
                            metric: clock.metric,
                            due_at: clock.due_at,
                        },
                    ))
                }
                ClockStatus::Met | ClockStatus::Missed if marks.mark(MarkKind::Recorded, clock) => {
                    let record = SlaRecord {
                        ticket: id,
                        policy: policy.id(),
                        priority: ticket.priority(),
                        metric: clock.metric,
                        started_at: clock.started_at,
                        stopped_at: clock.stopped_at.unwrap_or(now),
                        target_minutes: clock.target.minutes(),
                        elapsed_minutes: clock.elapsed_minutes,
                        margin_minutes: clock.margin_minutes(),
                        met: clock.status == ClockStatus::Met,
                    };
                    self.inner.store.add_record(tenant, &record).await?;
                    events.push(self.event(tenant, SupportEvent::SlaClockStopped { record }));
                }
                _ => {}
            }
        }
        let fired: Vec<_> = due_escalations(&config.escalations, &clocks, &mut marks)
            .into_iter()
            .cloned()
            .collect();
        let mut changed = false;
        for rule in fired {
            match &rule.action {
                EscalationAction::Notify { .. } => {}
                EscalationAction::Reassign { queue } => {
                    ticket.set_queue(*queue, Actor::System, now)?;
                    ticket.assign(None, Actor::System, now)?;
                    changed = true;
                }
                EscalationAction::RaisePriority => {
                    if let Some(raised) = ticket.priority().raised() {
                        let from = ticket.priority();
                        ticket.set_priority(raised, Actor::System, now)?;
                        events.push(self.event(
                            tenant,
                            SupportEvent::PriorityChanged {
                                ticket: id,
                                from,
                                to: raised,
                            },
                        ));
                        changed = true;
                    }
                }
            }
            events.push(self.event(
                tenant,
                SupportEvent::Escalated {
                    ticket: id,
                    rule: rule.id,
                    action: rule.action.clone(),
                },
            ));
        }
        if changed {
            self.inner.store.update_ticket(tenant, &ticket).await?;
        }
        if marks != before {
            self.inner.store.put_marks(tenant, id, &marks).await?;
        }
        Ok(events)
    }

    /// Records the customer's rating of a ticket (one per ticket).
    ///
    /// # Errors
    ///
    /// [`SupportError::InvalidScore`] (nothing stored), [`SupportError::NotFound`],
    /// [`SupportError::AlreadyExists`]; storage errors.
    #[tracing::instrument(name = "dotmac.support.record_csat", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn record_csat(
        &self,
        tenant: TenantId,
        id: TicketId,
        score: i64,
        comment: Option<String>,
    ) -> Result<SupportEvents> {
        let result: Result<SupportEvents> = async {
            let score = CsatScore::new(score)?;
            let ticket = self.ticket(tenant, id).await?;
            let response = CsatResponse {
                id: CsatResponseId::new(),
                ticket: id,
                agent: ticket.assignee(),
                queue: ticket.queue(),
                score,
                comment,
                at: self.inner.clock.now(),
            };
            self.inner.store.add_csat(tenant, &response).await?;
            Ok(vec![self.event(
                tenant,
                SupportEvent::CsatRecorded { ticket: id, score },
            )])
        }
        .await;
        traced(result)
    }

    /// CSAT over `[from, to)`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    #[tracing::instrument(name = "dotmac.support.csat_summary", level = "debug", skip_all, fields(tenant = %tenant))]
    pub async fn csat_summary(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<CsatSummary> {
        let responses = self.inner.store.csat_responses(tenant, from, to).await?;
        Ok(CsatSummary::of(&responses, from, to))
    }

    /// SLA statistics of one clock over `[from, to)`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    #[tracing::instrument(name = "dotmac.support.sla_stats", level = "debug", skip_all, fields(tenant = %tenant))]
    pub async fn sla_stats(
        &self,
        tenant: TenantId,
        metric: SlaMetric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<SlaStats> {
        let records = self.inner.store.records(tenant, from, to).await?;
        Ok(SlaStats::from_records(
            records.iter().filter(|r| r.metric == metric),
        ))
    }
}

/// The counter an event moves (names and labels in docs/observability.md). Labels are closed
/// sets of short names only: never a tenant, ticket, agent or queue id.
fn count(payload: &SupportEvent) {
    use metrics::counter;
    match payload {
        SupportEvent::TicketCreated { priority, .. } => {
            counter!("dotmac_support_tickets_opened_total", "priority" => priority.as_str())
                .increment(1);
        }
        SupportEvent::TicketAssigned { .. } => {
            counter!("dotmac_support_tickets_assigned_total").increment(1);
        }
        SupportEvent::TicketWaiting { .. } => {
            counter!("dotmac_support_tickets_waiting_total").increment(1);
        }
        SupportEvent::StatusChanged { to, .. } => {
            counter!("dotmac_support_status_changes_total", "category" => to.category().as_str())
                .increment(1);
        }
        SupportEvent::CommentAdded { visibility, .. } => {
            let visibility = match visibility {
                Visibility::Public => "public",
                Visibility::Internal => "internal",
            };
            counter!("dotmac_support_comments_total", "visibility" => visibility).increment(1);
        }
        SupportEvent::PriorityChanged { to, .. } => {
            counter!("dotmac_support_priority_changes_total", "priority" => to.as_str())
                .increment(1);
        }
        SupportEvent::TicketMerged { .. } => {
            counter!("dotmac_support_tickets_merged_total").increment(1);
        }
        SupportEvent::TicketLinked { .. } => {
            counter!("dotmac_support_tickets_linked_total").increment(1);
        }
        SupportEvent::SlaWarning { metric, .. } => {
            counter!("dotmac_support_sla_warnings_total", "metric" => metric.as_str()).increment(1);
        }
        SupportEvent::SlaBreached { metric, .. } => {
            counter!("dotmac_support_sla_breaches_total", "metric" => metric.as_str()).increment(1);
        }
        SupportEvent::SlaClockStopped { record } => {
            let outcome = if record.met { "met" } else { "missed" };
            counter!(
                "dotmac_support_sla_clocks_stopped_total",
                "metric" => record.metric.as_str(),
                "outcome" => outcome,
            )
            .increment(1);
        }
        SupportEvent::Escalated { action, .. } => {
            let action = match action {
                EscalationAction::Notify { .. } => "notify",
                EscalationAction::Reassign { .. } => "reassign",
                EscalationAction::RaisePriority => "raise_priority",
            };
            counter!("dotmac_support_escalations_total", "action" => action).increment(1);
        }
        SupportEvent::CsatRecorded { score, .. } => {
            let score = match score.value() {
                1 => "1",
                2 => "2",
                3 => "3",
                4 => "4",
                _ => "5",
            };
            counter!("dotmac_support_csat_responses_total", "score" => score).increment(1);
        }
        SupportEvent::PresenceChanged { presence, .. } => {
            let presence = match presence {
                Presence::Online => "online",
                Presence::Away => "away",
                Presence::Offline => "offline",
            };
            counter!("dotmac_support_presence_changes_total", "presence" => presence).increment(1);
        }
    }
}

/// Records on the current span (every operation returning events declares the field
/// `events`) how many events the operation returned.
fn traced(result: Result<SupportEvents>) -> Result<SupportEvents> {
    if let Ok(events) = &result {
        tracing::Span::current().record("events", events.len());
    }
    result
}

/// Minutes since the ticket entered its current queue (skills relax with this).
fn waited_minutes(ticket: &Ticket, now: DateTime<Utc>) -> u32 {
    let queued_at = ticket
        .history()
        .iter()
        .rev()
        .find(|e| matches!(e.change, Change::Queued { .. }))
        .map_or(ticket.created_at(), |e| e.at);
    // `signed_duration_since` cannot overflow between two valid instants.
    u32::try_from(now.signed_duration_since(queued_at).num_minutes().max(0)).unwrap_or(u32::MAX)
}

/// Counts toward an agent's load: not resolved or closed, and not in a status the ticket's
/// policy pauses in (a ticket waiting on the customer takes no capacity).
fn is_sla_active(config: &SupportConfig, ticket: &Ticket) -> bool {
    if ticket.status().is_done() {
        return false;
    }
    !config
        .policies
        .select(ticket)
        .is_some_and(|p| p.pauses_in(ticket.status()))
}

#[cfg(test)]
mod tests {

    use chrono::TimeZone;
    use dotmac_core::ManualClock;
    use dotmac_core::span_recorder::record_spans;

    use super::*;
    use crate::calendar::BusinessCalendar;
    use crate::memory::InMemorySupportStore;
    use crate::routing::{AssignmentStrategy, Router};
    use crate::sla::{SlaPolicy, SlaPolicySet};

    use dotmac_core::metrics_recorder::Counting;

    #[test]
    fn opening_a_ticket_moves_the_opened_and_waiting_counters() {
        let recorder = Counting::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // The local recorder is per thread: the current-thread runtime polls on this one.
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
                let service = SupportService::new(InMemorySupportStore::new(), clock);
                let tenant = TenantId::new();
                let queue = Queue {
                    id: QueueId::new(),
                    name: "L1".into(),
                    members: vec![],
                    strategy: AssignmentStrategy::RoundRobin,
                };
                service.put_queue(tenant, &queue).await.unwrap();
                let calendar = BusinessCalendar::builder("UTC")
                    .weekdays("08:00", "18:00")
                    .build()
                    .unwrap();
                let policies = SlaPolicySet {
                    policies: vec![SlaPolicy::isp_default(SlaPolicyId::new())],
                };
                let config = SupportConfig::new(calendar, policies, Router::new(queue.id));
                service.configure(tenant, config).await.unwrap();
                let new = NewTicket::new("No sync").priority(Priority::High);
                service.create_ticket(tenant, new).await.unwrap();
            });
        });
        assert_eq!(
            recorder.get("dotmac_support_tickets_opened_total{priority=high}"),
            1
        );
        assert_eq!(recorder.get("dotmac_support_tickets_waiting_total{}"), 1);
        assert_eq!(recorder.get("dotmac_support_tickets_assigned_total{}"), 0);
    }

    #[test]
    fn operations_and_store_calls_open_spans_without_personal_data() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (spans, ()) = record_spans(|| {
            runtime.block_on(async {
                let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
                let service = SupportService::new(InMemorySupportStore::new(), clock);
                let tenant = TenantId::new();
                let queue = Queue {
                    id: QueueId::new(),
                    name: "L1".into(),
                    members: vec![],
                    strategy: AssignmentStrategy::RoundRobin,
                };
                service.put_queue(tenant, &queue).await.unwrap();
                let calendar = BusinessCalendar::builder("UTC")
                    .weekdays("08:00", "18:00")
                    .build()
                    .unwrap();
                let policies = SlaPolicySet {
                    policies: vec![SlaPolicy::isp_default(SlaPolicyId::new())],
                };
                let config = SupportConfig::new(calendar, policies, Router::new(queue.id));
                service.configure(tenant, config).await.unwrap();
                let new = NewTicket::new("Jane Doe: no sync at 12 Elm St").priority(Priority::High);
                service.create_ticket(tenant, new).await.unwrap();
            });
        });
        let line = |name: &str| spans.line(name);
        let created = line("dotmac.support.create_ticket").unwrap();
        assert!(created.starts_with("Level(Info) tenant="), "{created}");
        assert!(created.ends_with(" events=2"), "{created}");
        let insert = line("dotmac.store.insert_ticket").unwrap();
        assert!(
            insert.starts_with("Level(Debug) backend=\"memory\" tenant="),
            "{insert}"
        );
        assert!(spans.all().iter().all(|span| !span.contains("Jane")));
    }
}
