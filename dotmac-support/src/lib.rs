//! # dotmac-support
//!
//! The support desk of [DotMac](https://github.com/dotmac-sdk/dotmac): tickets whose every change
//! is kept in an append-only history, business calendars with IANA time zones and holidays,
//! SLA clocks rebuilt from that history (so they pause while waiting on the customer and
//! recompute exactly when a past status or the calendar changes), routing rules and
//! assignment strategies that never hand work to an offline agent, escalation rules, and CSAT.
//!
//! - [`Ticket`]: statuses (the desk's own names in a [`StatusCatalog`], each in a
//!   [`StatusCategory`] of the state machine) with typed errors, priorities, categories,
//!   channels, comments, tags, merges and parent incidents.
//! - [`BusinessCalendar`]: working intervals per weekday, holidays ([`ical_holidays`] imports
//!   iCalendar feeds within [`IcalLimits`]), `add_working_minutes` / `working_minutes_between`,
//!   DST-correct.
//! - [`SlaPolicy`]: targets per priority in business or calendar minutes, chosen by ordered
//!   conditions ([`SlaPolicySet`]); [`SlaPolicy::isp_default`] is the common ISP table.
//! - [`Router`] and [`pick_agent`]: round robin, least-loaded with a cap, skills-based with
//!   relaxation.
//! - [`EscalationRule`]: notify, reassign or raise priority, once per ticket per clock.
//! - [`CsatSummary`]: CSAT per agent, queue and period.
//! - [`store`] traits with [`InMemorySupportStore`]; [`SupportService`] orchestrates store,
//!   domain and a [`dotmac_core::Clock`] and returns [`dotmac_core::DomainEvent`]s.
//!
//! Nothing here does I/O or reads the system time.
//!
//! ## Example
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use dotmac_support::{BusinessCalendar, Priority, SlaPolicy, SlaPolicyId, SlaTimeline, Status};
//!
//! let calendar = BusinessCalendar::builder("America/New_York").weekdays("08:00", "17:00").build()?;
//! let policy = SlaPolicy::isp_default(SlaPolicyId::new());
//! // A high-priority ticket at Friday 15:00 New York (19:00 UTC) waits on the customer for an hour.
//! let created = Utc.with_ymd_and_hms(2026, 3, 6, 20, 0, 0).unwrap();
//! let mut timeline = SlaTimeline::new(created);
//! timeline.statuses.push((Utc.with_ymd_and_hms(2026, 3, 6, 20, 30, 0).unwrap(), Status::PENDING));
//! timeline.statuses.push((Utc.with_ymd_and_hms(2026, 3, 6, 21, 30, 0).unwrap(), Status::OPEN));
//! let clocks = policy.evaluate(&calendar, &timeline, Priority::High, created)?;
//! // 4 business hours: 30 min, then 30 min after the pause, then 3 h on Monday from 08:00
//! // (daylight saving starts on Sunday 8 March: Monday 08:00 is 12:00 UTC).
//! assert_eq!(clocks[0].due_at, Some(Utc.with_ymd_and_hms(2026, 3, 9, 15, 0, 0).unwrap()));
//! # Ok::<(), dotmac_support::SupportError>(())
//! ```
//!
//! ## Features
//!
//! - `testkit`: `testkit::run_store_suite`, the behaviour suite every store must pass.

// Module map. The graph of `use crate::…` between modules is acyclic (doc links excepted);
// each line names what the module imports, leaves first. Keep it so: a type two modules need
// goes down into the lower one (small shared types into `vocab`), never a back edge.
//
//   vocab      — (nothing: ids, StatusCategory, StatusName, Status, IcalLimit)
//   error      — vocab
//   calendar   — error
//   ical       — error, vocab
//   ticket     — error, vocab
//   csat       — error, vocab
//   sla        — calendar, error, ticket, vocab (also `Ticket::sla_timeline`)
//   escalation — sla, vocab
//   routing    — error, ticket, vocab
//   store      — calendar, csat, error, escalation, routing, sla, ticket, vocab
//   memory     — csat, error, escalation, routing, sla, store, ticket, vocab
//   service    — csat, error, escalation, routing, sla, store, ticket, vocab
//   testkit    — calendar, csat, error, escalation, routing, sla, store, ticket, vocab
//   lib        — re-exports only

// Unchecked arithmetic is refused in library code: `+` on a `Decimal` panics on overflow and on
// an integer wraps in release. Use checked operations (`Money::checked_add`, `checked_sum`, …) or
// an `allow` that says why the operation cannot overflow. Tests may use plain operators.
// `Iterator::sum`/`product` panic on overflow too: `clippy.toml` disallows them here.
#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]
#![cfg_attr(not(test), warn(clippy::disallowed_methods))]

mod calendar;
mod csat;
mod error;
mod escalation;
mod ical;
mod memory;
mod routing;
mod service;
mod sla;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod ticket;
mod vocab;

pub use calendar::{
    BusinessCalendar, CalendarBuilder, CalendarSpec, DayHours, MAX_WORKING_TIME_SPAN_DAYS,
    TimeOfDay, WorkingInterval,
};
pub use csat::{CsatResponse, CsatResponseId, CsatScore, CsatSummary};
pub use error::{Result, SupportError};
pub use escalation::{
    EscalationAction, EscalationRule, EscalationRuleId, EscalationTrigger, MarkKind, SlaMark,
    SlaMarks, due_escalations,
};
pub use ical::{IcalLimits, ical_holidays, ical_holidays_with};
pub use memory::InMemorySupportStore;
pub use routing::{
    Agent, AgentLoad, AssignmentStrategy, Presence, Queue, QueueAssigner, QueueCursor, Roster,
    Router, RoutingRule, RuleCondition, pick_agent,
};
pub use service::{StatusAmendment, SupportEvent, SupportEvents, SupportService};
pub use sla::{
    ClockState, ClockStatus, PolicyCondition, SlaMetric, SlaPolicy, SlaPolicyBuilder, SlaPolicyId,
    SlaPolicySet, SlaRecord, SlaStats, SlaTarget, SlaTargets, SlaTimeline, TimeBasis,
};
pub use store::SupportConfig;
pub use ticket::{
    Actor, Category, Change, Channel, Comment, CustomerTier, HistoryEntry, NewComment, NewTicket,
    Priority, StatusCatalog, Ticket, Visibility,
};
pub use vocab::{
    AgentId, CommentId, IcalLimit, QueueId, Status, StatusCategory, StatusName, TicketId,
};
