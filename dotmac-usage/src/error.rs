//! The crate's one error type.

use chrono::{DateTime, Utc};
use dotmac_core::{CoreError, CustomerId, MeterId, StorageError, UsageEventId};
use rust_decimal::Decimal;

/// Everything that can go wrong in `dotmac-usage`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// An error from the core vocabulary (money, periods, ids).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A usage event names a meter that is not defined for the tenant.
    #[error(
        "usage event {event}: unknown meter {meter}; define the meter before sending events to it"
    )]
    UnknownMeter {
        /// The event refused.
        event: UsageEventId,
        /// The meter it named.
        meter: MeterId,
    },
    /// A usage event names a customer the ingestor does not know.
    #[error("usage event {event}: unknown customer {customer}; register the customer first")]
    UnknownCustomer {
        /// The event refused.
        event: UsageEventId,
        /// The customer it named.
        customer: CustomerId,
    },
    /// A usage event with a negative quantity (usage only ever adds; corrections are credits).
    #[error("usage event {event}: quantity {quantity} is negative; send a credit instead")]
    NegativeQuantity {
        /// The event refused.
        event: UsageEventId,
        /// The quantity given.
        quantity: Decimal,
    },
    /// A usage event stamped further in the future than the ingestor tolerates (clock skew).
    #[error(
        "usage event {event}: timestamp {timestamp} is after the latest accepted {latest}; check the sender's clock"
    )]
    TimestampInFuture {
        /// The event refused.
        event: UsageEventId,
        /// Its timestamp.
        timestamp: DateTime<Utc>,
        /// The latest timestamp accepted at ingestion.
        latest: DateTime<Utc>,
    },
    /// A RADIUS accounting record that cannot be turned into usage.
    #[error("malformed RADIUS accounting record: {reason}")]
    MalformedRadiusRecord {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A RADIUS session whose User-Name the account resolver does not know.
    #[error("RADIUS session {session:?}: no customer for User-Name {user_name:?}")]
    UnknownRadiusUser {
        /// The Acct-Unique-Session-Id.
        session: String,
        /// The User-Name.
        user_name: String,
    },
    /// A RADIUS record whose User-Name is not the one its session started with: refused, so
    /// that one subscriber's traffic is never billed to another.
    #[error(
        "RADIUS session {session:?} belongs to User-Name {session_user:?}; a record for {user_name:?} was refused"
    )]
    RadiusSessionUserMismatch {
        /// The session's key (Acct-Unique-Session-Id).
        session: String,
        /// The User-Name the session started with.
        session_user: String,
        /// The User-Name on the refused record.
        user_name: String,
    },
    /// A meter or usage-calendar definition that cannot work.
    #[error("invalid {what}: {reason}")]
    InvalidConfiguration {
        /// What was being configured.
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A store failed and the call changed nothing: its [kind](dotmac_core::StorageErrorKind)
    /// says what to do, and the backend's error is kept as the source.
    #[error("{0}")]
    Storage(#[from] StorageError),
}

impl UsageError {
    /// A stable, machine-readable name of the error's kind (`unknown_meter`,
    /// `core.overflow`, …), for failure events and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            UsageError::Core(core) => core.kind(),
            UsageError::UnknownMeter { .. } => "unknown_meter",
            UsageError::UnknownCustomer { .. } => "unknown_customer",
            UsageError::NegativeQuantity { .. } => "negative_quantity",
            UsageError::TimestampInFuture { .. } => "timestamp_in_future",
            UsageError::MalformedRadiusRecord { .. } => "malformed_radius_record",
            UsageError::UnknownRadiusUser { .. } => "unknown_radius_user",
            UsageError::RadiusSessionUserMismatch { .. } => "radius_session_user_mismatch",
            UsageError::InvalidConfiguration { .. } => "invalid_configuration",
            UsageError::Storage(_) => "storage",
        }
    }
}
