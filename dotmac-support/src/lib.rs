//! # dotmac-support
//!
//! (crate docs below)

mod calendar;
mod error;
mod sla;
mod ticket;

pub use calendar::{BusinessCalendar, CalendarBuilder, CalendarSpec, DayHours, TimeOfDay, WorkingInterval, ical_holidays};
pub use error::{Result, SupportError};
pub use sla::{
    ClockState, ClockStatus, PolicyCondition, SlaMetric, SlaPolicy, SlaPolicyBuilder, SlaPolicyId, SlaPolicySet,
    SlaRecord, SlaStats, SlaTarget, SlaTargets, SlaTimeline, TimeBasis,
};
pub use ticket::{
    Actor, AgentId, Category, Change, Channel, Comment, CommentId, CustomerTier, HistoryEntry, NewTicket, Priority,
    QueueId, Status, Ticket, TicketId, Visibility,
};
