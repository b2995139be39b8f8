//! The crate's one error type.

use dotmac_core::CoreError;

/// Everything that can go wrong in `dotmac-billing`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// An error from the core vocabulary (money, periods, ids).
    #[error(transparent)]
    Core(#[from] CoreError),
}
