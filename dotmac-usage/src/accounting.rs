//! What an accounting feed publishes besides the usage it stores: one
//! [`AccountingEvent::SessionAccounted`] per session that grew, written to the outbox in the
//! transaction that stores the session's usage (dotmac-sqlx's `radacct` reader does). Other
//! domains follow it: the facade's `FairUsageFollowsAccounting` counts the growth into the
//! service's fair-usage counters, once per event (by its outbox position).

use chrono::{DateTime, Utc};
use dotmac_core::outbox::{Aggregate, OutboxPayload};
use dotmac_core::{CustomerId, EventPayload, SubscriptionId};
use serde::{Deserialize, Serialize};

/// An accounting fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum AccountingEvent {
    /// A session's counters grew: `download` and `upload` bytes more, measured up to `at`.
    SessionAccounted {
        /// The customer whose service the session is.
        customer: CustomerId,
        /// The subscription, when the service names one.
        subscription: Option<SubscriptionId>,
        /// The user name the NAS reported (the service's).
        username: String,
        /// The session (RADIUS `Acct-Unique-Session-Id`).
        session: String,
        /// Up to when the bytes were measured.
        at: DateTime<Utc>,
        /// Bytes towards the subscriber since the session was last accounted.
        download: u64,
        /// Bytes from the subscriber since then.
        upload: u64,
    },
}

impl EventPayload for AccountingEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountingEvent::SessionAccounted { .. } => "usage.session_accounted",
        }
    }
}

impl OutboxPayload for AccountingEvent {
    /// A customer's sessions are followed in the order they were accounted.
    fn aggregate(&self) -> Aggregate {
        match self {
            AccountingEvent::SessionAccounted { customer, .. } => Aggregate::customer(*customer),
        }
    }
}
