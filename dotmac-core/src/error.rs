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
}

/// `Result` with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
