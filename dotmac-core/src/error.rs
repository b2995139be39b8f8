//! The crate's one error type.

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// Everything that can go wrong in `dotmac-core`.
///
/// Every variant says what was wrong with the input and, where it helps, what to do instead.
/// Nothing in this crate panics on caller input: it returns one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: cannot combine {left} with {right}; convert one side first")]
    CurrencyMismatch {
        /// The currency of the left-hand operand.
        left: &'static str,
        /// The currency of the right-hand operand.
        right: &'static str,
    },
    /// A currency code that is not in the ISO 4217 table.
    #[error("unknown currency code {0:?}: expected an ISO 4217 alphabetic code such as \"USD\"")]
    UnknownCurrency(String),
    /// An arithmetic result does not fit in a `Decimal` (or in `i64` minor units).
    #[error("arithmetic overflow in {operation}")]
    Overflow {
        /// The operation that overflowed.
        operation: &'static str,
    },
    /// Division by zero.
    #[error("division by zero in {operation}")]
    DivisionByZero {
        /// The operation that divided.
        operation: &'static str,
    },
    /// An allocation was asked for with unusable ratios or part count.
    #[error("invalid allocation: {reason}")]
    InvalidAllocation {
        /// Why the ratios or the count were refused.
        reason: &'static str,
    },
    /// An amount has more decimal places than its currency's minor unit where whole minor
    /// units are required (for example before an allocation).
    #[error("{amount} {currency} is not a whole number of minor units; round it first")]
    NotMinorUnits {
        /// The amount.
        amount: Decimal,
        /// Its currency code.
        currency: &'static str,
    },
    /// A billing interval with a count of zero.
    #[error("billing interval count must be at least 1, got {0}")]
    InvalidIntervalCount(u32),
    /// A period whose end is not after its start.
    #[error("invalid period: end {end} must be after start {start}")]
    InvalidPeriod {
        /// The start given.
        start: NaiveDate,
        /// The end given.
        end: NaiveDate,
    },
    /// Date arithmetic left the range that `chrono` can represent.
    #[error("date out of range: {0}")]
    DateOutOfRange(&'static str),
    /// A value could not be parsed.
    #[error("cannot parse {what} from {input:?}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The text that was refused.
        input: String,
    },
    /// An idempotency key that is empty, too long or not printable ASCII.
    #[error("invalid idempotency key: {reason}")]
    InvalidIdempotencyKey {
        /// Why it was refused.
        reason: &'static str,
    },
    /// An idempotency key already used for a different request (a key names exactly one
    /// request; a retry must repeat it exactly).
    #[error(
        "idempotency key {key:?} was already used for a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// An invoice number format that cannot be used (a prefix with spaces or too long, a
    /// padding outside 1–12).
    #[error("invalid invoice number format: {reason}")]
    InvalidNumberFormat {
        /// Why it is refused.
        reason: String,
    },
}

impl CoreError {
    /// A stable, machine-readable name of the error's kind (`core.overflow`, …): what failure
    /// events carry beside the message, so that consumers can branch on it without parsing
    /// text. Every domain crate's `kind()` uses these names for its `Core` variant.
    pub fn kind(&self) -> &'static str {
        match self {
            CoreError::CurrencyMismatch { .. } => "core.currency_mismatch",
            CoreError::UnknownCurrency(_) => "core.unknown_currency",
            CoreError::Overflow { .. } => "core.overflow",
            CoreError::DivisionByZero { .. } => "core.division_by_zero",
            CoreError::InvalidAllocation { .. } => "core.invalid_allocation",
            CoreError::NotMinorUnits { .. } => "core.not_minor_units",
            CoreError::InvalidIntervalCount(_) => "core.invalid_interval_count",
            CoreError::InvalidPeriod { .. } => "core.invalid_period",
            CoreError::DateOutOfRange(_) => "core.date_out_of_range",
            CoreError::Parse { .. } => "core.parse",
            CoreError::InvalidIdempotencyKey { .. } => "core.invalid_idempotency_key",
            CoreError::IdempotencyKeyReused { .. } => "core.idempotency_key_reused",
            CoreError::InvalidNumberFormat { .. } => "core.invalid_number_format",
        }
    }
}

/// `Result` with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// What kind of storage failure a [`StorageError`] is: what the caller can do about it.
///
/// Backend-neutral (no driver types), so that every domain crate's error can carry a storage
/// failure; the SQL backends map their drivers' codes onto these kinds in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The record does not exist.
    NotFound,
    /// A unique key is taken, or the record changed since it was read (optimistic
    /// concurrency): reload, then retry or report the duplicate.
    Conflict,
    /// A foreign-key, check or not-null constraint refused the write: the data is inconsistent.
    Constraint,
    /// A value the store cannot hold (a NUL byte in a string, a string or document over the
    /// store's size bound): change the input; retrying the same call fails again.
    InvalidInput,
    /// The record names another tenant than the call's: nothing was written.
    TenantMismatch,
    /// The store is unreachable, overloaded or refused to serialise this transaction against
    /// another (connection, pool or I/O failure, timeout, deadlock, serialisation failure, lock
    /// not available): retry later.
    Unavailable,
    /// A stored value cannot be read back (a corrupt or hand-edited row).
    Corrupt,
    /// Anything else the backend reported.
    Other,
}

impl StorageErrorKind {
    /// True when retrying the same call later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, StorageErrorKind::Unavailable)
    }

    fn describe(self) -> &'static str {
        match self {
            StorageErrorKind::NotFound => "not found",
            StorageErrorKind::Conflict => "conflict",
            StorageErrorKind::Constraint => "constraint violated",
            StorageErrorKind::InvalidInput => "invalid input",
            StorageErrorKind::TenantMismatch => "tenant mismatch",
            StorageErrorKind::Unavailable => "unavailable, retry later",
            StorageErrorKind::Corrupt => "corrupt stored data",
            StorageErrorKind::Other => "failed",
        }
    }
}

impl std::fmt::Display for StorageErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// A shared, type-erased cause: cloneable, so that the domain errors carrying a
/// [`StorageError`] stay `Clone`.
pub type StorageSource = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A failed storage call: its [`kind`](StorageError::kind), a message, and the backend's own
/// error as [`source`](std::error::Error::source), in the spirit of sqlx's `Error`.
///
/// Two storage errors are equal when their kinds and messages are; the sources are not
/// compared (driver errors are not comparable).
#[derive(Debug, Clone)]
pub struct StorageError {
    kind: StorageErrorKind,
    message: String,
    source: Option<StorageSource>,
}

impl StorageError {
    /// A storage error without a cause.
    pub fn new(kind: StorageErrorKind, message: impl Into<String>) -> Self {
        StorageError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A storage error caused by `source`, whose message is the source's.
    pub fn from_source(
        kind: StorageErrorKind,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StorageError {
            kind,
            message: source.to_string(),
            source: Some(std::sync::Arc::new(source)),
        }
    }

    /// The same error, its message prefixed with what was being done (`"read ledger: …"`).
    #[must_use]
    pub fn context(mut self, doing: impl std::fmt::Display) -> Self {
        self.message = format!("{doing}: {}", self.message);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage {}: {}", self.kind, self.message)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for StorageError {}

#[cfg(test)]
mod storage_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("driver said no")]
    struct Driver;

    #[test]
    fn storage_errors_keep_their_source_and_compare_by_kind_and_message() {
        let e = StorageError::from_source(StorageErrorKind::Unavailable, Driver);
        assert_eq!(
            e.to_string(),
            "storage unavailable, retry later: driver said no"
        );
        assert!(e.is_retryable());
        let source = std::error::Error::source(&e).map(|s| s.is::<Driver>());
        assert_eq!(source, Some(true));
        assert_eq!(
            e,
            StorageError::new(StorageErrorKind::Unavailable, "driver said no")
        );
        assert_ne!(
            e,
            StorageError::new(StorageErrorKind::Conflict, "driver said no")
        );
    }
}
