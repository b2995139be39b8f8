//! The crate's one error type.

use chrono::NaiveDate;
use dotmac_core::{CoreError, Money};
use rust_decimal::Decimal;

/// Everything that can go wrong in `dotmac-partners`. A call that returns an error changes
/// nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PartnersError {
    /// An error from the core vocabulary (money, currencies).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A tier table that cannot be applied.
    #[error("invalid commission tiers: {reason}")]
    InvalidTiers {
        /// What is wrong with the table.
        reason: &'static str,
    },
    /// A commission rate outside 0–100 %.
    #[error("commission rate {0}% is outside 0..=100")]
    InvalidRate(Decimal),
    /// An amount that must be positive was zero or negative.
    #[error("{what} must be positive, got {amount}")]
    NotPositive {
        /// Which amount.
        what: &'static str,
        /// The amount given.
        amount: Decimal,
    },
    /// A negative amount given to a tier table.
    #[error("commission base must not be negative, got {0}")]
    NegativeBase(Money),
    /// An entry dated before the ledger's latest entry: the ledger is append-only in time.
    #[error(
        "entry dated {on} is before the ledger's latest entry ({latest}); ledgers are append-only"
    )]
    OutOfOrder {
        /// The date given.
        on: NaiveDate,
        /// The latest date already in the ledger.
        latest: NaiveDate,
    },
}
