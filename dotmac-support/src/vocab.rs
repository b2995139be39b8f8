//! The small shared vocabulary: ids, statuses and the names of limits. Every other module and
//! the error type name these, so they live in a leaf that imports nothing from the crate; this
//! keeps the module graph acyclic (see the module map in `lib.rs`).
//!
//! The fallible constructors (`StatusName::new`, `Status::custom`, the `FromStr` and
//! `TryFrom` impls) return [`SupportError`](crate::SupportError) and so are implemented in
//! `ticket.rs`, which imports both this module and `error`.

use std::borrow::Cow;
use std::fmt;

use dotmac_core::define_id;
use serde::{Deserialize, Serialize};

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

/// The built-in statuses, and the categories every desk-defined status belongs to: the state
/// machine's rules are written over these.
///
/// ```text
/// new ──► open ◄──► pending ◄──► on_hold        (any of new/open/pending/on_hold/reopened
///  │       │                                      may also go to resolved or closed)
///  └───────┴──► resolved ──► closed ──► reopened ──► open | pending | on_hold | resolved | closed
///                  └──────────────────► reopened
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusCategory {
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

impl StatusCategory {
    /// Every category, in lifecycle order.
    pub const ALL: [StatusCategory; 7] = [
        StatusCategory::New,
        StatusCategory::Open,
        StatusCategory::Pending,
        StatusCategory::OnHold,
        StatusCategory::Resolved,
        StatusCategory::Closed,
        StatusCategory::Reopened,
    ];

    /// The stable snake_case name (`"on_hold"`), which is also the built-in status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCategory::New => "new",
            StatusCategory::Open => "open",
            StatusCategory::Pending => "pending",
            StatusCategory::OnHold => "on_hold",
            StatusCategory::Resolved => "resolved",
            StatusCategory::Closed => "closed",
            StatusCategory::Reopened => "reopened",
        }
    }

    /// Whether the state machine allows moving from a status of category `self` to one of
    /// category `to` (see [`Status::can_move_to`] for moves inside one category).
    pub fn can_move_to(self, to: StatusCategory) -> bool {
        use StatusCategory::*;
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
        matches!(self, StatusCategory::Resolved | StatusCategory::Closed)
    }
}

impl fmt::Display for StatusCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a status as a desk shows it (`"pending reminder"`, `"waiting on customer"`):
/// not empty, at most [`StatusName::MAX_BYTES`] bytes, no control characters. SLA policies
/// pause by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StatusName(pub(crate) Cow<'static, str>);

impl StatusName {
    /// The longest name accepted, in bytes.
    pub const MAX_BYTES: usize = 200;

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Equality, order and hash are those of the text, so maps keyed by name are searched by `&str`.
impl std::borrow::Borrow<str> for StatusName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<StatusCategory> for StatusName {
    fn from(category: StatusCategory) -> Self {
        StatusName(Cow::Borrowed(category.as_str()))
    }
}

impl From<Status> for StatusName {
    fn from(status: Status) -> Self {
        status.name
    }
}

impl From<&Status> for StatusName {
    fn from(status: &Status) -> Self {
        status.name.clone()
    }
}

impl From<StatusName> for String {
    fn from(name: StatusName) -> String {
        name.0.into_owned()
    }
}

impl fmt::Display for StatusName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// At most 64 characters of a caller's string, for an error message.
pub(crate) fn truncated(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// A ticket's status: a name and the [`StatusCategory`] whose rules it follows.
///
/// The seven built-in statuses ([`Status::NEW`] … [`Status::REOPENED`]) are named after their
/// category. A desk defines its own in a [`StatusCatalog`](crate::StatusCatalog) (`"pending reminder"` in category
/// pending, `"waiting on customer"` in category on_hold, …); the state machine applies by
/// category, and SLA policies pause by name. A built-in name always means its built-in status.
///
/// In JSON a built-in status is its name (`"pending"`), a custom one
/// `{"name": "pending reminder", "category": "pending"}`.
///
/// ```
/// use dotmac_support::{Status, StatusCategory};
///
/// let reminder = Status::custom("pending reminder", StatusCategory::Pending)?;
/// assert!(Status::OPEN.can_move_to(&reminder));
/// assert!(reminder.can_move_to(&Status::PENDING)); // another status of the same category
/// assert!(!Status::CLOSED.can_move_to(&reminder)); // closed only reopens, as for `pending`
/// assert_eq!(Status::custom("pending", StatusCategory::Pending)?, Status::PENDING);
/// # Ok::<(), dotmac_support::SupportError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "StatusRepr", into = "StatusRepr")]
pub struct Status {
    pub(crate) name: StatusName,
    pub(crate) category: StatusCategory,
}

/// The serialized form of a [`Status`].
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum StatusRepr {
    Builtin(String),
    Custom {
        name: String,
        category: StatusCategory,
    },
}

impl From<Status> for StatusRepr {
    fn from(status: Status) -> Self {
        if status.is_builtin() {
            StatusRepr::Builtin(status.name.into())
        } else {
            StatusRepr::Custom {
                name: status.name.into(),
                category: status.category,
            }
        }
    }
}

impl Status {
    const fn builtin(category: StatusCategory, name: &'static str) -> Status {
        Status {
            name: StatusName(Cow::Borrowed(name)),
            category,
        }
    }

    /// `new`.
    pub const NEW: Status = Status::builtin(StatusCategory::New, "new");
    /// `open`.
    pub const OPEN: Status = Status::builtin(StatusCategory::Open, "open");
    /// `pending`.
    pub const PENDING: Status = Status::builtin(StatusCategory::Pending, "pending");
    /// `on_hold`.
    pub const ON_HOLD: Status = Status::builtin(StatusCategory::OnHold, "on_hold");
    /// `resolved`.
    pub const RESOLVED: Status = Status::builtin(StatusCategory::Resolved, "resolved");
    /// `closed`.
    pub const CLOSED: Status = Status::builtin(StatusCategory::Closed, "closed");
    /// `reopened`.
    pub const REOPENED: Status = Status::builtin(StatusCategory::Reopened, "reopened");

    /// The seven built-in statuses, in lifecycle order.
    pub const BUILTIN: [Status; 7] = [
        Status::NEW,
        Status::OPEN,
        Status::PENDING,
        Status::ON_HOLD,
        Status::RESOLVED,
        Status::CLOSED,
        Status::REOPENED,
    ];

    /// Its name.
    pub fn name(&self) -> &StatusName {
        &self.name
    }

    /// Its category.
    pub fn category(&self) -> StatusCategory {
        self.category
    }

    /// Whether it is one of the seven built-in statuses.
    pub fn is_builtin(&self) -> bool {
        self.category.as_str() == self.name.as_str()
    }

    /// Whether the state machine allows moving from `self` to `to`: never to the same status;
    /// between two statuses of one category (`pending` → `pending reminder`) unless that
    /// category is `new`, which nothing enters; otherwise as [`StatusCategory::can_move_to`].
    pub fn can_move_to(&self, to: &Status) -> bool {
        if self.name == to.name {
            return false;
        }
        if self.category == to.category {
            return self.category != StatusCategory::New;
        }
        self.category.can_move_to(to.category)
    }

    /// Resolved or closed (by category): the work is done.
    pub fn is_done(&self) -> bool {
        self.category.is_done()
    }
}

impl From<StatusCategory> for Status {
    /// The built-in status of a category.
    fn from(category: StatusCategory) -> Self {
        Status::builtin(category, category.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name.as_str())
    }
}

/// Which [`IcalLimits`](crate::IcalLimits) limit a feed exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IcalLimit {
    /// [`IcalLimits::max_bytes`](crate::IcalLimits::max_bytes): the feed's size in bytes.
    FeedBytes,
    /// [`IcalLimits::max_depth`](crate::IcalLimits::max_depth): components open inside each other (`VCALENDAR` is 1).
    NestingDepth,
    /// [`IcalLimits::max_event_days`](crate::IcalLimits::max_event_days): the days from one event's `DTSTART` to its `DTEND`.
    EventDays,
    /// [`IcalLimits::max_expanded_days`](crate::IcalLimits::max_expanded_days): the dates all events expand to, recurrences included.
    ExpandedDays,
}

impl IcalLimit {
    /// The stable snake_case name (`"nesting_depth"`).
    pub fn as_str(self) -> &'static str {
        match self {
            IcalLimit::FeedBytes => "feed_bytes",
            IcalLimit::NestingDepth => "nesting_depth",
            IcalLimit::EventDays => "event_days",
            IcalLimit::ExpandedDays => "expanded_days",
        }
    }
}

impl fmt::Display for IcalLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
