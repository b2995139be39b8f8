//! Tickets: statuses as a state machine, priorities, comments, tags, merges, parent incidents,
//! and the append-only history that SLA clocks are rebuilt from.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use dotmac_core::{CustomerId, TenantId};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SupportError};
use crate::vocab::{
    AgentId, CommentId, QueueId, Status, StatusCategory, StatusName, StatusRepr, TicketId,
    truncated,
};

// The fallible halves of the status types in `vocab`: they return `SupportError`, which names
// those types, so they live here rather than there (that would be an import cycle).

impl FromStr for StatusCategory {
    type Err = SupportError;
    fn from_str(s: &str) -> Result<Self> {
        StatusCategory::ALL
            .into_iter()
            .find(|category| category.as_str() == s)
            .ok_or_else(|| SupportError::UnknownStatus(truncated(s)))
    }
}

impl StatusName {
    /// A checked name.
    ///
    /// # Errors
    ///
    /// [`SupportError::InvalidStatusName`] when empty, longer than [`StatusName::MAX_BYTES`]
    /// or containing a control character (a line break in a status breaks every export).
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > Self::MAX_BYTES {
            Some("it is longer than 200 bytes")
        } else if name.chars().any(char::is_control) {
            Some("it contains a control character")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(SupportError::InvalidStatusName {
                name: truncated(&name),
                reason,
            }),
            None => Ok(StatusName(Cow::Owned(name))),
        }
    }
}

impl TryFrom<String> for StatusName {
    type Error = SupportError;
    fn try_from(name: String) -> Result<Self> {
        StatusName::new(name)
    }
}

impl TryFrom<&str> for StatusName {
    type Error = SupportError;
    fn try_from(name: &str) -> Result<Self> {
        StatusName::new(name)
    }
}

impl TryFrom<StatusRepr> for Status {
    type Error = SupportError;
    fn try_from(repr: StatusRepr) -> Result<Self> {
        match repr {
            StatusRepr::Builtin(name) => name.parse(),
            StatusRepr::Custom { name, category } => Status::custom(name, category),
        }
    }
}

impl Status {
    /// A desk-defined status `name` in `category` (a built-in name in its own category gives
    /// the built-in status). Tickets of a [`SupportService`](crate::SupportService) may only
    /// take custom statuses their tenant's [`StatusCatalog`] defines.
    ///
    /// # Errors
    ///
    /// [`SupportError::InvalidStatusName`]; [`SupportError::StatusConflict`] for a built-in
    /// name in another category.
    pub fn custom(name: impl Into<String>, category: StatusCategory) -> Result<Status> {
        let name = StatusName::new(name)?;
        if let Some(builtin) = Status::BUILTIN.iter().find(|b| b.name == name) {
            if builtin.category != category {
                return Err(SupportError::StatusConflict {
                    name: name.into(),
                    existing: builtin.category,
                    requested: category,
                });
            }
            return Ok(builtin.clone());
        }
        Ok(Status { name, category })
    }
}

impl FromStr for Status {
    type Err = SupportError;
    /// A built-in status by name; custom ones are resolved by a [`StatusCatalog`].
    fn from_str(s: &str) -> Result<Self> {
        s.parse::<StatusCategory>().map(Status::from)
    }
}

/// A desk's statuses: the seven built-in ones and those it defines, each in a category.
///
/// ```
/// use dotmac_support::{Status, StatusCatalog, StatusCategory, SupportError};
///
/// let catalog = StatusCatalog::new()
///     .define("pending reminder", StatusCategory::Pending)?
///     .define("waiting on customer", StatusCategory::OnHold)?;
/// let reminder = catalog.resolve("pending reminder")?;
/// assert_eq!(reminder.category(), StatusCategory::Pending);
/// assert_eq!(catalog.resolve("open")?, Status::OPEN);
/// assert_eq!(catalog.resolve("frozen"), Err(SupportError::UnknownStatus("frozen".into())));
/// # Ok::<(), SupportError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<Status>", into = "Vec<Status>")]
pub struct StatusCatalog {
    /// The custom statuses, by name.
    custom: BTreeMap<StatusName, StatusCategory>,
}

impl StatusCatalog {
    /// The built-in statuses only.
    pub fn new() -> Self {
        StatusCatalog::default()
    }

    /// Adds the status `name` in `category` (defining an existing status again in the same
    /// category changes nothing).
    ///
    /// # Errors
    ///
    /// [`SupportError::InvalidStatusName`]; [`SupportError::StatusConflict`] when the name
    /// is built in or already defined with another category.
    pub fn define(mut self, name: impl Into<String>, category: StatusCategory) -> Result<Self> {
        let status = Status::custom(name, category)?;
        self.insert(status)?;
        Ok(self)
    }

    fn insert(&mut self, status: Status) -> Result<()> {
        if status.is_builtin() {
            return Ok(());
        }
        match self.custom.get(&status.name) {
            Some(existing) if *existing != status.category => Err(SupportError::StatusConflict {
                name: status.name.into(),
                existing: *existing,
                requested: status.category,
            }),
            _ => {
                self.custom.insert(status.name, status.category);
                Ok(())
            }
        }
    }

    /// The status called `name`: built in or defined here.
    ///
    /// # Errors
    ///
    /// [`SupportError::UnknownStatus`].
    pub fn resolve(&self, name: &str) -> Result<Status> {
        if let Ok(builtin) = name.parse::<Status>() {
            return Ok(builtin);
        }
        self.custom
            .get_key_value(name)
            .map(|(name, category)| Status {
                name: name.clone(),
                category: *category,
            })
            .ok_or_else(|| SupportError::UnknownStatus(truncated(name)))
    }

    /// Whether `status` is built in or defined here with its category.
    pub fn contains(&self, status: &Status) -> bool {
        status.is_builtin() || self.custom.get(&status.name) == Some(&status.category)
    }

    /// The custom statuses, by name.
    pub fn custom(&self) -> impl Iterator<Item = Status> + '_ {
        self.custom.iter().map(|(name, category)| Status {
            name: name.clone(),
            category: *category,
        })
    }
}

impl TryFrom<Vec<Status>> for StatusCatalog {
    type Error = SupportError;
    fn try_from(statuses: Vec<Status>) -> Result<Self> {
        let mut catalog = StatusCatalog::new();
        for status in statuses {
            catalog.insert(status)?;
        }
        Ok(catalog)
    }
}

impl From<StatusCatalog> for Vec<Status> {
    fn from(catalog: StatusCatalog) -> Self {
        catalog.custom().collect()
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

/// A comment to add to a ticket ([`Ticket::comment`],
/// [`SupportService::comment`](crate::SupportService::comment)).
///
/// ```
/// use dotmac_support::{Actor, NewComment, Visibility};
///
/// let note = NewComment::internal(Actor::System, "line test scheduled");
/// assert_eq!(note.visibility, Visibility::Internal);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[must_use]
pub struct NewComment {
    /// Who writes it.
    pub author: Actor,
    /// Who sees it.
    pub visibility: Visibility,
    /// The text.
    pub body: String,
}

impl NewComment {
    /// A comment of `visibility`.
    pub fn new(author: Actor, visibility: Visibility, body: impl Into<String>) -> Self {
        NewComment {
            author,
            visibility,
            body: body.into(),
        }
    }

    /// A comment the customer sees (an agent's is an SLA response).
    pub fn public(author: Actor, body: impl Into<String>) -> Self {
        NewComment::new(author, Visibility::Public, body)
    }

    /// A note only agents see.
    pub fn internal(author: Actor, body: impl Into<String>) -> Self {
        NewComment::new(author, Visibility::Internal, body)
    }
}

/// What a new ticket is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
#[non_exhaustive]
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
/// ticket.change_status(Status::PENDING, Actor::System, at)?;
/// let err = ticket.change_status(Status::REOPENED, Actor::System, at).unwrap_err();
/// assert!(matches!(err, SupportError::IllegalTransition { .. }));
/// assert_eq!(ticket.status(), &Status::PENDING);
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
            status: Status::NEW,
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
                    status: Status::NEW,
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
    pub fn status(&self) -> &Status {
        &self.status
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
    pub fn comment(&mut self, id: CommentId, comment: NewComment, at: DateTime<Utc>) -> Result<()> {
        self.check(at)?;
        let NewComment {
            author,
            visibility,
            body,
        } = comment;
        self.comments.push(Comment {
            id,
            author,
            visibility,
            body,
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

    /// Moves to another status: a built-in one ([`Status::PENDING`], or a
    /// [`StatusCategory`]) or a desk's own (from [`StatusCatalog::resolve`] for a name an API
    /// or a form gives).
    ///
    /// # Errors
    ///
    /// [`SupportError::IllegalTransition`] when the state machine forbids it (including a move
    /// to the current status), [`SupportError::Merged`], [`SupportError::OutOfOrder`].
    pub fn change_status(
        &mut self,
        to: impl Into<Status>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let to = to.into();
        self.check(at)?;
        if !self.status.can_move_to(&to) {
            return Err(SupportError::IllegalTransition {
                ticket: self.id,
                from: self.status.clone(),
                to,
            });
        }
        let from = std::mem::replace(&mut self.status, to.clone());
        self.record(at, actor, Change::StatusChanged { from, to });
        Ok(())
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
        to: impl Into<Status>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let to = to.into();
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
        if self.status.category() != StatusCategory::Closed {
            // Merging closes from any status: the merged ticket's work continues in the target.
            let from = std::mem::replace(&mut self.status, Status::CLOSED);
            self.record(
                at,
                actor,
                Change::StatusChanged {
                    from,
                    to: Status::CLOSED,
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
        use StatusCategory::*;
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
        t.change_status(Status::CLOSED, Actor::System, at(1))
            .unwrap();
        let before = t.clone();
        let err = t
            .change_status(Status::OPEN, Actor::System, at(2))
            .unwrap_err();
        assert_eq!(
            err,
            SupportError::IllegalTransition {
                ticket: t.id(),
                from: Status::CLOSED,
                to: Status::OPEN
            }
        );
        assert_eq!(t, before);
    }

    fn desk() -> StatusCatalog {
        StatusCatalog::new()
            .define("pending reminder", StatusCategory::Pending)
            .unwrap()
            .define("waiting on customer", StatusCategory::OnHold)
            .unwrap()
            .define("solved by phone", StatusCategory::Resolved)
            .unwrap()
    }

    #[test]
    fn unknown_status_name_changes_nothing() {
        let mut t = ticket();
        let before = t.clone();
        assert_eq!(
            desk().resolve("waiting"),
            Err(SupportError::UnknownStatus("waiting".into()))
        );
        assert_eq!(t, before);
        t.change_status(desk().resolve("on_hold").unwrap(), Actor::System, at(1))
            .unwrap();
        assert_eq!(t.status(), &Status::ON_HOLD);
    }

    #[test]
    fn custom_statuses_follow_their_category() {
        let desk = desk();
        let reminder = desk.resolve("pending reminder").unwrap();
        let waiting = desk.resolve("waiting on customer").unwrap();
        let solved = desk.resolve("solved by phone").unwrap();
        let mut t = ticket();
        t.change_status(reminder.clone(), Actor::System, at(1))
            .unwrap();
        // Within a category: pending reminder → pending is a move, to itself is not.
        assert!(reminder.can_move_to(&Status::PENDING));
        let before = t.clone();
        assert_eq!(
            t.change_status(reminder.clone(), Actor::System, at(2)),
            Err(SupportError::IllegalTransition {
                ticket: t.id(),
                from: reminder.clone(),
                to: reminder.clone(),
            })
        );
        assert_eq!(t, before);
        t.change_status(waiting.clone(), Actor::System, at(2))
            .unwrap();
        t.change_status(solved.clone(), Actor::System, at(3))
            .unwrap();
        assert!(t.status().is_done());
        // Resolved (by category) may only close or reopen: not go back to waiting.
        let before = t.clone();
        assert_eq!(
            t.change_status(waiting.clone(), Actor::System, at(4)),
            Err(SupportError::IllegalTransition {
                ticket: t.id(),
                from: solved,
                to: waiting,
            })
        );
        assert_eq!(t, before);
        t.change_status(StatusCategory::Reopened, Actor::Customer, at(5))
            .unwrap();
        assert_eq!(t.status(), &Status::REOPENED);
        // Nothing enters `new`, not even a status of its category.
        let fresh = Status::custom("triage", StatusCategory::New).unwrap();
        assert!(!Status::NEW.can_move_to(&fresh));
    }

    #[test]
    fn status_names_are_checked() {
        assert_eq!(
            Status::custom("", StatusCategory::Open),
            Err(SupportError::InvalidStatusName {
                name: String::new(),
                reason: "it is empty",
            })
        );
        assert!(matches!(
            Status::custom("a\nb", StatusCategory::Open),
            Err(SupportError::InvalidStatusName {
                reason: "it contains a control character",
                ..
            })
        ));
        let long = "x".repeat(StatusName::MAX_BYTES + 1);
        assert_eq!(
            Status::custom(long, StatusCategory::Open),
            Err(SupportError::InvalidStatusName {
                name: format!("{}…", "x".repeat(64)),
                reason: "it is longer than 200 bytes",
            })
        );
        assert!(Status::custom("x".repeat(StatusName::MAX_BYTES), StatusCategory::Open).is_ok());
        // A built-in name always means the built-in status.
        assert_eq!(
            Status::custom("closed", StatusCategory::Open),
            Err(SupportError::StatusConflict {
                name: "closed".into(),
                existing: StatusCategory::Closed,
                requested: StatusCategory::Open,
            })
        );
        assert_eq!(
            desk().define("pending reminder", StatusCategory::Open),
            Err(SupportError::StatusConflict {
                name: "pending reminder".into(),
                existing: StatusCategory::Pending,
                requested: StatusCategory::Open,
            })
        );
        assert_eq!(
            desk().define("pending reminder", StatusCategory::Pending),
            Ok(desk())
        );
    }

    #[test]
    fn statuses_serialize_by_name_and_old_documents_still_read() {
        let reminder = desk().resolve("pending reminder").unwrap();
        assert_eq!(
            serde_json::to_string(&Status::ON_HOLD).unwrap(),
            r#""on_hold""#
        );
        let json = serde_json::to_string(&reminder).unwrap();
        assert_eq!(json, r#"{"name":"pending reminder","category":"pending"}"#);
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), reminder);
        assert!(serde_json::from_str::<Status>(r#""frozen""#).is_err());
        assert!(serde_json::from_str::<Status>(r#"{"name":"open","category":"closed"}"#).is_err());
        // A ticket with a custom status round-trips; one stored before custom statuses reads.
        let mut t = ticket();
        t.change_status(reminder, Actor::System, at(1)).unwrap();
        let back: Ticket = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        let catalog: StatusCatalog =
            serde_json::from_str(&serde_json::to_string(&desk()).unwrap()).unwrap();
        assert_eq!(catalog, desk());
        assert!(
            serde_json::from_str::<StatusCatalog>(
                r#"[{"name":"x","category":"open"},{"name":"x","category":"closed"}]"#
            )
            .is_err()
        );
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
            NewComment::public(Actor::Customer, "still down"),
            at(2),
        )
        .unwrap();
        a.merge_into(&mut b, Actor::System, at(3)).unwrap();
        assert_eq!(a.status(), &Status::CLOSED);
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
        t.change_status(Status::PENDING, Actor::System, at(10))
            .unwrap();
        t.change_status(Status::OPEN, Actor::System, at(40))
            .unwrap();
        let pending_entry = 1;
        assert_eq!(t.sla_timeline().statuses[1].1, Status::PENDING);
        t.amend_status(pending_entry, Status::OPEN, Actor::System, at(50))
            .unwrap();
        assert_eq!(t.sla_timeline().statuses[1].1, Status::OPEN);
        assert!(matches!(
            t.amend_status(99, Status::OPEN, Actor::System, at(51)),
            Err(SupportError::NotFound { .. })
        ));
    }
}
