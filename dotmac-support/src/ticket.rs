//! Tickets: statuses as a state machine, priorities, comments, tags, merges, parent incidents,
//! and the append-only history that SLA clocks are rebuilt from.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use dotmac_core::{CustomerId, TenantId, define_id};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SupportError};

define_id! {
    /// A support ticket.
    TicketId
}
define_id! {
    /// A support agent.
    AgentId
}
define_id! {
    /// A queue (team) that tickets are routed to.
    QueueId
}
define_id! {
    /// A comment on a ticket.
    CommentId
}

/// A ticket's status.
///
/// ```text
/// new ──► open ◄──► pending ◄──► on_hold        (any of new/open/pending/on_hold/reopened
///  │       │                                      may also go to resolved or closed)
///  └───────┴──► resolved ──► closed ──► reopened ──► open | pending | on_hold | resolved | closed
///                  └──────────────────► reopened
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Just created, nobody has looked at it.
    New,
    /// Being worked on.
    Open,
    /// Waiting on the customer.
    Pending,
    /// Waiting on something else (a field visit, a third party).
    OnHold,
    /// Solved; the customer may still reopen it.
    Resolved,
    /// Finished.
    Closed,
    /// Reopened after being resolved or closed.
    Reopened,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Status::New,
        Status::Open,
        Status::Pending,
        Status::OnHold,
        Status::Resolved,
        Status::Closed,
        Status::Reopened,
    ];

    /// The stable snake_case name (`"on_hold"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Pending => "pending",
            Status::OnHold => "on_hold",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
            Status::Reopened => "reopened",
        }
    }

    /// Whether the state machine allows moving from `self` to `to`.
    pub fn can_move_to(self, to: Status) -> bool {
        use Status::*;
        match self {
            New | Open | Pending | OnHold | Reopened => {
                matches!(to, Open | Pending | OnHold | Resolved | Closed) && to != self
            }
            Resolved => matches!(to, Closed | Reopened),
            Closed => to == Reopened,
        }
    }

    /// Resolved or closed: the work is done.
    pub fn is_done(self) -> bool {
        matches!(self, Status::Resolved | Status::Closed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = SupportError;
    fn from_str(s: &str) -> Result<Self> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| SupportError::UnknownStatus(s.to_owned()))
    }
}

/// A ticket's priority, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Low.
    Low,
    /// Normal (the default).
    Normal,
    /// High.
    High,
    /// Urgent.
    Urgent,
    /// Critical (outages).
    Critical,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 5] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
        Priority::Critical,
    ];

    /// One step up; `None` at critical.
    pub fn raised(self) -> Option<Priority> {
        match self {
            Priority::Low => Some(Priority::Normal),
            Priority::Normal => Some(Priority::High),
            Priority::High => Some(Priority::Urgent),
            Priority::Urgent => Some(Priority::Critical),
            Priority::Critical => None,
        }
    }

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
            Priority::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = SupportError;
    fn from_str(s: &str) -> Result<Self> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| SupportError::UnknownPriority(s.to_owned()))
    }
}

/// What a ticket is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Category {
    /// Connectivity, speed, equipment.
    Technical,
    /// Invoices, payments, disputes.
    Billing,
    /// New connections and field installs.
    Installation,
    /// A network outage.
    Outage,
    /// Account and contract changes.
    Account,
    /// Sales enquiries.
    Sales,
    /// Anything else.
    Other,
}

/// How the ticket arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Channel {
    /// E-mail.
    Email,
    /// Phone call.
    Phone,
    /// Customer portal.
    Portal,
    /// Live chat.
    Chat,
    /// Social media.
    Social,
    /// Network monitoring or another system.
    Api,
}

/// The customer's service tier, for SLA policies and routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CustomerTier {
    /// Home subscribers.
    Residential,
    /// Small business.
    Business,
    /// Enterprise contracts with their own SLA.
    Enterprise,
}

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Actor {
    /// An agent.
    Agent(AgentId),
    /// The customer.
    Customer,
    /// DotMac itself (routing, escalation, a parent incident closing its children).
    System,
}

/// Who can see a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Visible to the customer: an agent's public comment is a response for the SLA.
    Public,
    /// Agents only: never stops an SLA clock.
    Internal,
}

/// A comment on a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Its id.
    pub id: CommentId,
    /// Who wrote it.
    pub author: Actor,
    /// Who can see it.
    pub visibility: Visibility,
    /// The text.
    pub body: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum Change {
    /// The ticket was created.
    Created {
        /// Initial status.
        status: Status,
        /// Initial priority.
        priority: Priority,
    },
    /// A comment was added.
    Commented {
        /// The comment.
        comment: CommentId,
        /// Its visibility.
        visibility: Visibility,
    },
    /// The status changed.
    StatusChanged {
        /// Before.
        from: Status,
        /// After.
        to: Status,
    },
    /// A past status change was corrected: the entry at `entry` now counts as `to`. The
    /// original entry stays; SLA clocks are rebuilt with the correction.
    StatusAmended {
        /// Index of the corrected `StatusChanged` or `Created` entry in the history.
        entry: usize,
        /// The status it now records.
        to: Status,
    },
    /// The priority changed.
    PriorityChanged {
        /// Before.
        from: Priority,
        /// After.
        to: Priority,
    },
    /// The assignee changed.
    Assigned {
        /// Before.
        from: Option<AgentId>,
        /// After (`None`: unassigned, back to the queue).
        to: Option<AgentId>,
    },
    /// The queue changed.
    Queued {
        /// Before.
        from: Option<QueueId>,
        /// After.
        to: QueueId,
    },
    /// A tag was added.
    Tagged {
        /// The tag.
        tag: String,
    },
    /// A tag was removed.
    Untagged {
        /// The tag.
        tag: String,
    },
    /// This ticket was merged into another and closed.
    MergedInto {
        /// The surviving ticket.
        target: TicketId,
    },
    /// Another ticket was merged into this one.
    Absorbed {
        /// The merged ticket.
        source: TicketId,
    },
    /// This ticket was linked to a parent incident.
    LinkedToParent {
        /// The parent.
        parent: TicketId,
    },
}

/// An entry of a ticket's history: who changed what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// What.
    pub change: Change,
}

/// What a new ticket is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
pub struct NewTicket {
    /// One-line summary.
    pub subject: String,
    /// The customer's description (the first customer message).
    pub description: String,
    /// The customer, if known.
    pub customer: Option<CustomerId>,
    /// Category.
    pub category: Category,
    /// Channel.
    pub channel: Channel,
    /// Priority.
    pub priority: Priority,
    /// The customer's tier.
    pub tier: CustomerTier,
    /// Initial tags.
    pub tags: BTreeSet<String>,
}

impl NewTicket {
    /// A normal-priority technical ticket by e-mail from a residential customer; change the
    /// rest with the other methods.
    pub fn new(subject: impl Into<String>) -> Self {
        NewTicket {
            subject: subject.into(),
            description: String::new(),
            customer: None,
            category: Category::Technical,
            channel: Channel::Email,
            priority: Priority::Normal,
            tier: CustomerTier::Residential,
            tags: BTreeSet::new(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// Sets the customer.
    pub fn customer(mut self, customer: CustomerId) -> Self {
        self.customer = Some(customer);
        self
    }

    /// Sets the category.
    pub fn category(mut self, category: Category) -> Self {
        self.category = category;
        self
    }

    /// Sets the channel.
    pub fn channel(mut self, channel: Channel) -> Self {
        self.channel = channel;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the customer tier.
    pub fn tier(mut self, tier: CustomerTier) -> Self {
        self.tier = tier;
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.insert(tag.into());
        self
    }
}

/// A support ticket. Every change goes through a method that checks it first, then appends a
/// [`HistoryEntry`]: a method that returns an error has changed nothing.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use dotmac_core::TenantId;
/// use dotmac_support::{Actor, NewTicket, Status, SupportError, Ticket, TicketId};
///
/// let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
/// let mut ticket = Ticket::open(TicketId::new(), TenantId::new(), NewTicket::new("No internet"), at);
/// ticket.change_status(Status::Pending, Actor::System, at)?;
/// let err = ticket.change_status(Status::Reopened, Actor::System, at).unwrap_err();
/// assert!(matches!(err, SupportError::IllegalTransition { .. }));
/// assert_eq!(ticket.status(), Status::Pending);
/// # Ok::<(), SupportError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    id: TicketId,
    tenant: TenantId,
    subject: String,
    description: String,
    customer: Option<CustomerId>,
    category: Category,
    channel: Channel,
    tier: CustomerTier,
    status: Status,
    priority: Priority,
    tags: BTreeSet<String>,
    assignee: Option<AgentId>,
    queue: Option<QueueId>,
    parent: Option<TicketId>,
    merged_into: Option<TicketId>,
    created_at: DateTime<Utc>,
    comments: Vec<Comment>,
    history: Vec<HistoryEntry>,
}

impl Ticket {
    /// A new ticket in status `new`, created by the customer at `at`.
    pub fn open(id: TicketId, tenant: TenantId, new: NewTicket, at: DateTime<Utc>) -> Self {
        Ticket {
            id,
            tenant,
            subject: new.subject,
            description: new.description,
            customer: new.customer,
            category: new.category,
            channel: new.channel,
            tier: new.tier,
            status: Status::New,
            priority: new.priority,
            tags: new.tags,
            assignee: None,
            queue: None,
            parent: None,
            merged_into: None,
            created_at: at,
            comments: Vec::new(),
            history: vec![HistoryEntry {
                at,
                actor: Actor::Customer,
                change: Change::Created {
                    status: Status::New,
                    priority: new.priority,
                },
            }],
        }
    }

    /// Its id.
    pub fn id(&self) -> TicketId {
        self.id
    }
    /// Its tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
    /// Subject line.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// Description.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// The customer.
    pub fn customer(&self) -> Option<CustomerId> {
        self.customer
    }
    /// Category.
    pub fn category(&self) -> Category {
        self.category
    }
    /// Channel.
    pub fn channel(&self) -> Channel {
        self.channel
    }
    /// Customer tier.
    pub fn tier(&self) -> CustomerTier {
        self.tier
    }
    /// Current status.
    pub fn status(&self) -> Status {
        self.status
    }
    /// Current priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }
    /// Tags.
    pub fn tags(&self) -> &BTreeSet<String> {
        &self.tags
    }
    /// Current assignee.
    pub fn assignee(&self) -> Option<AgentId> {
        self.assignee
    }
    /// Current queue.
    pub fn queue(&self) -> Option<QueueId> {
        self.queue
    }
    /// The parent incident.
    pub fn parent(&self) -> Option<TicketId> {
        self.parent
    }
    /// The ticket this one was merged into.
    pub fn merged_into(&self) -> Option<TicketId> {
        self.merged_into
    }
    /// Creation instant.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Comments, oldest first.
    pub fn comments(&self) -> &[Comment] {
        &self.comments
    }
    /// The full history, oldest first.
    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    fn last_at(&self) -> DateTime<Utc> {
        self.history.last().map_or(self.created_at, |e| e.at)
    }

    /// Checks that a change may be recorded at `at`.
    fn check(&self, at: DateTime<Utc>) -> Result<()> {
        if let Some(into) = self.merged_into {
            return Err(SupportError::Merged {
                ticket: self.id,
                into,
            });
        }
        let last = self.last_at();
        if at < last {
            return Err(SupportError::OutOfOrder {
                ticket: self.id,
                at,
                last,
            });
        }
        Ok(())
    }

    fn record(&mut self, at: DateTime<Utc>, actor: Actor, change: Change) {
        self.history.push(HistoryEntry { at, actor, change });
    }

    /// Adds a comment. A public comment by an agent is a response for the SLA; a public
    /// comment by the customer restarts the next-response clock.
    ///
    /// # Errors
    ///
    /// [`SupportError::Merged`] or [`SupportError::OutOfOrder`].
    pub fn comment(
        &mut self,
        id: CommentId,
        author: Actor,
        visibility: Visibility,
        body: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.check(at)?;
        self.comments.push(Comment {
            id,
            author,
            visibility,
            body: body.into(),
            at,
        });
        self.record(
            at,
            author,
            Change::Commented {
                comment: id,
                visibility,
            },
        );
        Ok(())
    }

    /// Moves to another status.
    ///
    /// # Errors
    ///
    /// [`SupportError::IllegalTransition`] when the state machine forbids it (including a move
    /// to the current status), [`SupportError::Merged`], [`SupportError::OutOfOrder`].
    pub fn change_status(&mut self, to: Status, actor: Actor, at: DateTime<Utc>) -> Result<()> {
        self.check(at)?;
        if !self.status.can_move_to(to) {
            return Err(SupportError::IllegalTransition {
                ticket: self.id,
                from: self.status,
                to,
            });
        }
        let from = self.status;
        self.status = to;
        self.record(at, actor, Change::StatusChanged { from, to });
        Ok(())
    }

    /// Moves to a status given by name (from an API or a form).
    ///
    /// # Errors
    ///
    /// [`SupportError::UnknownStatus`] for a name that is not a status, then as
    /// [`Ticket::change_status`].
    pub fn change_status_named(&mut self, to: &str, actor: Actor, at: DateTime<Utc>) -> Result<()> {
        let to: Status = to.parse()?;
        self.change_status(to, actor, at)
    }

    /// Corrects the status recorded by a past `Created` or `StatusChanged` entry (an agent who
    /// parked a ticket in `pending` by mistake). The history keeps both entries; SLA clocks
    /// rebuilt afterwards use the corrected status.
    ///
    /// # Errors
    ///
    /// [`SupportError::NotFound`] when `entry` is not a status entry; [`SupportError::Merged`]
    /// or [`SupportError::OutOfOrder`].
    pub fn amend_status(
        &mut self,
        entry: usize,
        to: Status,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.check(at)?;
        let is_status_entry = matches!(
            self.history.get(entry).map(|e| &e.change),
            Some(Change::Created { .. } | Change::StatusChanged { .. })
        );
        if !is_status_entry {
            return Err(SupportError::NotFound {
                kind: "status history entry",
                id: entry.to_string(),
            });
        }
        self.record(at, actor, Change::StatusAmended { entry, to });
        Ok(())
    }

    /// Changes the priority (a no-op change is not recorded).
    ///
    /// # Errors
    ///
    /// [`SupportError::Merged`] or [`SupportError::OutOfOrder`].
    pub fn set_priority(&mut self, to: Priority, actor: Actor, at: DateTime<Utc>) -> Result<()> {
        self.check(at)?;
        if to != self.priority {
            let from = self.priority;
            self.priority = to;
            self.record(at, actor, Change::PriorityChanged { from, to });
        }
        Ok(())
    }

    /// Assigns to an agent, or unassigns with `None`.
    ///
    /// # Errors
    ///
    /// [`SupportError::Merged`] or [`SupportError::OutOfOrder`].
    pub fn assign(&mut self, to: Option<AgentId>, actor: Actor, at: DateTime<Utc>) -> Result<()> {
        self.check(at)?;
        if to != self.assignee {
            let from = self.assignee;
            self.assignee = to;
            self.record(at, actor, Change::Assigned { from, to });
        }
        Ok(())
    }

    /// Puts the ticket in a queue.
    ///
    /// # Errors
    ///
    /// [`SupportError::Merged`] or [`SupportError::OutOfOrder`].
    pub fn set_queue(&mut self, to: QueueId, actor: Actor, at: DateTime<Utc>) -> Result<()> {
        self.check(at)?;
        if Some(to) != self.queue {
            let from = self.queue;
            self.queue = Some(to);
            self.record(at, actor, Change::Queued { from, to });
        }
        Ok(())
    }

    /// Adds a tag (already present: nothing recorded).
    ///
    /// # Errors
    ///
    /// [`SupportError::Merged`] or [`SupportError::OutOfOrder`].
    pub fn tag(&mut self, tag: impl Into<String>, actor: Actor, at: DateTime<Utc>) -> Result<()> {
        self.check(at)?;
        let tag = tag.into();
        if self.tags.insert(tag.clone()) {
            self.record(at, actor, Change::Tagged { tag });
        }
        Ok(())
    }

    /// Removes a tag (absent: nothing recorded).
    ///
    /// # Errors
    ///
    /// [`SupportError::Merged`] or [`SupportError::OutOfOrder`].
    pub fn untag(&mut self, tag: &str, actor: Actor, at: DateTime<Utc>) -> Result<()> {
        self.check(at)?;
        if self.tags.remove(tag) {
            self.record(
                at,
                actor,
                Change::Untagged {
                    tag: tag.to_owned(),
                },
            );
        }
        Ok(())
    }

    /// Links this ticket to a parent incident: when the parent is resolved or closed, so are
    /// its children (see `SupportService::change_status`).
    ///
    /// # Errors
    ///
    /// [`SupportError::SelfReference`] for itself, or when the parent is itself a child of this
    /// ticket; [`SupportError::Merged`], [`SupportError::OutOfOrder`].
    pub fn link_to_parent(
        &mut self,
        parent: &Ticket,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.check(at)?;
        if parent.id == self.id || parent.parent == Some(self.id) {
            return Err(SupportError::SelfReference(self.id));
        }
        self.parent = Some(parent.id);
        self.record(at, actor, Change::LinkedToParent { parent: parent.id });
        Ok(())
    }

    /// Merges this ticket into `target`: the target absorbs its tags and comments (copied, with
    /// their original authors and times), this ticket is closed and accepts no more changes.
    ///
    /// # Errors
    ///
    /// [`SupportError::SelfReference`], [`SupportError::Merged`] (either side),
    /// [`SupportError::OutOfOrder`] (either side).
    pub fn merge_into(
        &mut self,
        target: &mut Ticket,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        if target.id == self.id {
            return Err(SupportError::SelfReference(self.id));
        }
        self.check(at)?;
        target.check(at)?;
        if self.status != Status::Closed {
            let from = self.status;
            // Merging closes from any status: the merged ticket's work continues in the target.
            self.status = Status::Closed;
            self.record(
                at,
                actor,
                Change::StatusChanged {
                    from,
                    to: Status::Closed,
                },
            );
        }
        self.record(at, actor, Change::MergedInto { target: target.id });
        self.merged_into = Some(target.id);
        for tag in &self.tags {
            target.tags.insert(tag.clone());
        }
        target.comments.extend(self.comments.iter().cloned());
        target.comments.sort_by_key(|c| c.at);
        target.record(at, actor, Change::Absorbed { source: self.id });
        Ok(())
    }

    /// The facts SLA clocks are computed from, rebuilt from the history (with status
    /// corrections applied).
    pub fn sla_timeline(&self) -> crate::sla::SlaTimeline {
        let mut statuses: Vec<(DateTime<Utc>, Status)> = Vec::new();
        let mut entry_index: Vec<(usize, usize)> = Vec::new();
        let mut customer_messages = vec![self.created_at];
        let mut agent_responses = Vec::new();
        for (index, entry) in self.history.iter().enumerate() {
            match &entry.change {
                Change::Created { status, .. } => {
                    entry_index.push((index, statuses.len()));
                    statuses.push((entry.at, *status));
                }
                Change::StatusChanged { to, .. } => {
                    entry_index.push((index, statuses.len()));
                    statuses.push((entry.at, *to));
                }
                Change::StatusAmended { entry: target, to } => {
                    if let Some(&(_, slot)) = entry_index.iter().find(|(i, _)| i == target)
                        && let Some(status) = statuses.get_mut(slot)
                    {
                        status.1 = *to;
                    }
                }
                Change::Commented {
                    visibility: Visibility::Public,
                    ..
                } => match entry.actor {
                    Actor::Customer => customer_messages.push(entry.at),
                    Actor::Agent(_) => agent_responses.push(entry.at),
                    Actor::System => {}
                },
                _ => {}
            }
        }
        crate::sla::SlaTimeline {
            created_at: self.created_at,
            statuses,
            customer_messages,
            agent_responses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    fn ticket() -> Ticket {
        Ticket::open(
            TicketId::new(),
            TenantId::new(),
            NewTicket::new("Slow line"),
            at(0),
        )
    }

    #[test]
    fn state_machine_table() {
        use Status::*;
        assert!(New.can_move_to(Open));
        assert!(Open.can_move_to(Pending));
        assert!(Pending.can_move_to(Open));
        assert!(Resolved.can_move_to(Reopened));
        assert!(Closed.can_move_to(Reopened));
        assert!(Reopened.can_move_to(Resolved));
        assert!(!Closed.can_move_to(Open));
        assert!(!Resolved.can_move_to(Pending));
        assert!(!Open.can_move_to(Open));
        assert!(!Open.can_move_to(New));
        assert!(!Open.can_move_to(Reopened));
    }

    #[test]
    fn illegal_move_changes_nothing() {
        let mut t = ticket();
        t.change_status(Status::Closed, Actor::System, at(1))
            .unwrap();
        let before = t.clone();
        let err = t
            .change_status(Status::Open, Actor::System, at(2))
            .unwrap_err();
        assert_eq!(
            err,
            SupportError::IllegalTransition {
                ticket: t.id(),
                from: Status::Closed,
                to: Status::Open
            }
        );
        assert_eq!(t, before);
    }

    #[test]
    fn unknown_status_name_changes_nothing() {
        let mut t = ticket();
        let before = t.clone();
        assert_eq!(
            t.change_status_named("waiting", Actor::System, at(1)),
            Err(SupportError::UnknownStatus("waiting".into()))
        );
        assert_eq!(t, before);
        t.change_status_named("on_hold", Actor::System, at(1))
            .unwrap();
        assert_eq!(t.status(), Status::OnHold);
    }

    #[test]
    fn history_only_grows_forward() {
        let mut t = ticket();
        t.tag("fiber", Actor::System, at(5)).unwrap();
        let before = t.clone();
        assert!(matches!(
            t.tag("late", Actor::System, at(4)),
            Err(SupportError::OutOfOrder { .. })
        ));
        assert_eq!(t, before);
    }

    #[test]
    fn merge_moves_comments_and_freezes_source() {
        let mut a = ticket();
        let mut b = ticket();
        a.tag("dup", Actor::System, at(1)).unwrap();
        a.comment(
            CommentId::new(),
            Actor::Customer,
            Visibility::Public,
            "still down",
            at(2),
        )
        .unwrap();
        a.merge_into(&mut b, Actor::System, at(3)).unwrap();
        assert_eq!(a.status(), Status::Closed);
        assert_eq!(a.merged_into(), Some(b.id()));
        assert!(b.tags().contains("dup"));
        assert_eq!(b.comments().len(), 1);
        let before = a.clone();
        assert_eq!(
            a.tag("x", Actor::System, at(4)),
            Err(SupportError::Merged {
                ticket: a.id(),
                into: b.id()
            })
        );
        assert_eq!(a, before);
    }

    #[test]
    fn amended_status_rebuilds_the_timeline() {
        let mut t = ticket();
        t.change_status(Status::Pending, Actor::System, at(10))
            .unwrap();
        t.change_status(Status::Open, Actor::System, at(40))
            .unwrap();
        let pending_entry = 1;
        assert_eq!(t.sla_timeline().statuses[1].1, Status::Pending);
        t.amend_status(pending_entry, Status::Open, Actor::System, at(50))
            .unwrap();
        assert_eq!(t.sla_timeline().statuses[1].1, Status::Open);
        assert!(matches!(
            t.amend_status(99, Status::Open, Actor::System, at(51)),
            Err(SupportError::NotFound { .. })
        ));
    }
}
