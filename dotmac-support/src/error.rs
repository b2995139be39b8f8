//! The crate's one error type.

use chrono::{DateTime, Utc};
use dotmac_core::CoreError;

use crate::vocab::{AgentId, IcalLimit, Status, StatusCategory, TicketId};

/// Everything that can go wrong in `dotmac-support`.
///
/// Every operation that returns one of these has changed nothing: validation happens before any
/// mutation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SupportError {
    /// An error from the core vocabulary.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A time-zone name that is not in the IANA database.
    #[error("unknown time zone {0:?}: use an IANA name such as \"Europe/Berlin\"")]
    UnknownTimeZone(String),
    /// A time of day that is not `HH:MM` between 00:00 and 24:00.
    #[error("invalid time of day {0:?}: expected HH:MM between 00:00 and 24:00")]
    InvalidTimeOfDay(String),
    /// A working interval whose end is not after its start.
    #[error(
        "working interval {start}-{end} on {weekday} is empty or inverted: the end must be after the start"
    )]
    InvertedInterval {
        /// The weekday (`Mon` … `Sun`).
        weekday: String,
        /// The start given.
        start: String,
        /// The end given.
        end: String,
    },
    /// Two working intervals of one weekday overlap.
    #[error("working intervals on {weekday} overlap ({first} and {second}); merge them into one")]
    OverlappingIntervals {
        /// The weekday (`Mon` … `Sun`).
        weekday: String,
        /// The earlier interval, `HH:MM-HH:MM`.
        first: String,
        /// The interval that overlaps it.
        second: String,
    },
    /// A calendar without a single working minute: no due time could ever be reached.
    #[error("the business calendar has no working hours on any weekday")]
    NoWorkingTime,
    /// Working-time arithmetic left the range of representable instants.
    #[error("working-time arithmetic left the representable range of dates")]
    OutOfRange,
    /// Working-time arithmetic over a span longer than
    /// [`MAX_WORKING_TIME_SPAN_DAYS`](crate::MAX_WORKING_TIME_SPAN_DAYS): no SLA clock
    /// runs that long, and walking it would cost time in proportion to the span.
    #[error("working-time arithmetic over more than {max_days} days is refused")]
    SpanTooLong {
        /// The limit, in days.
        max_days: i64,
    },
    /// An iCalendar holiday feed that cannot be used.
    #[error("cannot import iCalendar holidays: {0}")]
    Ical(String),
    /// An iCalendar feed past one of its import limits ([`IcalLimits`](crate::IcalLimits)).
    /// Nothing was imported.
    #[error("iCalendar feed refused: {limit} is limited to {max}, the feed reaches {found}")]
    IcalLimitExceeded {
        /// The limit.
        limit: IcalLimit,
        /// Its configured value.
        max: u64,
        /// What the feed reaches where it was refused: its size, or the depth, event length or
        /// number of dates at the first element past the limit.
        found: u64,
    },
    /// An SLA target of zero or negative minutes.
    #[error("SLA target must be a positive number of minutes, got {0}")]
    InvalidTarget(i64),
    /// A warning lead time that is not shorter than the target it warns about.
    #[error(
        "SLA warning of {warn} minutes must be shorter than the smallest target ({target} minutes)"
    )]
    InvalidWarning {
        /// The warning lead time.
        warn: u32,
        /// The smallest target of the policy.
        target: u32,
    },
    /// A status name that is neither built in (new, open, pending, on_hold, resolved, closed,
    /// reopened) nor defined in the desk's [`StatusCatalog`](crate::StatusCatalog).
    #[error(
        "unknown ticket status {0:?}: expected new, open, pending, on_hold, resolved, closed, reopened or a status the desk defines"
    )]
    UnknownStatus(String),
    /// A status name that cannot be used.
    #[error("invalid status name {name:?}: {reason}")]
    InvalidStatusName {
        /// The name given (its first 64 characters).
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A status defined with a category other than the one its name already has (built in,
    /// or defined before).
    #[error("status {name:?} is already in category {existing}, not {requested}")]
    StatusConflict {
        /// The name.
        name: String,
        /// Its category.
        existing: StatusCategory,
        /// The category asked for.
        requested: StatusCategory,
    },
    /// A priority name that is not one of the ticket priorities.
    #[error("unknown ticket priority {0:?}: expected low, normal, high, urgent or critical")]
    UnknownPriority(String),
    /// A status change the state machine does not allow.
    #[error("ticket {ticket}: cannot move from {from} to {to}")]
    IllegalTransition {
        /// The ticket.
        ticket: TicketId,
        /// Its current status.
        from: Status,
        /// The status asked for.
        to: Status,
    },
    /// A change to a ticket that has been merged into another one.
    #[error("ticket {ticket} was merged into {into}; change that ticket instead")]
    Merged {
        /// The merged ticket.
        ticket: TicketId,
        /// The ticket it was merged into.
        into: TicketId,
    },
    /// A ticket merged or linked to itself, or a link that would make a cycle.
    #[error("ticket {0} cannot be merged into or linked to itself or its own child")]
    SelfReference(TicketId),
    /// A change dated before the ticket's last recorded change: history only grows forward.
    #[error("ticket {ticket}: change at {at} is earlier than the last recorded change at {last}")]
    OutOfOrder {
        /// The ticket.
        ticket: TicketId,
        /// The instant given.
        at: DateTime<Utc>,
        /// The last recorded instant.
        last: DateTime<Utc>,
    },
    /// A CSAT score outside 1..=5.
    #[error("CSAT score must be between 1 and 5, got {0}")]
    InvalidScore(i64),
    /// A queue or agent capacity of zero.
    #[error("{0} must be at least 1")]
    ZeroCapacity(&'static str),
    /// Something looked up by id does not exist for this tenant.
    #[error("{kind} {id} not found for this tenant")]
    NotFound {
        /// What was looked up (`ticket`, `agent`, `queue`, …).
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// Something inserted twice under the same id.
    #[error("{kind} {id} already exists for this tenant")]
    AlreadyExists {
        /// What was inserted.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A manual assignment to an agent who is not online or is at capacity.
    #[error(
        "agent {agent} is not available (offline, away or at capacity); the ticket stays in its queue"
    )]
    AgentUnavailable {
        /// The agent.
        agent: AgentId,
    },
    /// The tenant has no support configuration yet.
    #[error("no support configuration for this tenant; call SupportService::configure first")]
    NotConfigured,
    /// The configuration refers to something that is not in it.
    #[error("configuration error: {0}")]
    Config(String),
    /// A store failed: its [kind](dotmac_core::StorageErrorKind) says what to do (retry an
    /// unavailable store, change invalid input), and the backend's error is kept as the source.
    #[error("{0}")]
    Storage(#[from] dotmac_core::StorageError),
}

/// `Result` with [`SupportError`].
pub type Result<T, E = SupportError> = std::result::Result<T, E>;
