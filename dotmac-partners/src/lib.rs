//! # dotmac-partners
//!
//! Commission arithmetic for an ISP's resellers and referral partners, as pure functions over
//! values (no I/O, no clock):
//!
//! - [`CommissionTiers`]: tiered rates on an amount, [`TierMode::Marginal`] (each part at its
//!   tier's rate) or [`TierMode::Retroactive`] (the highest tier reached prices everything).
//! - [`ReferralLedger`]: a partner's append-only ledger for one referred customer. Commission is
//!   earned on payments collected (not invoices issued) for a number of months or for life,
//!   clawed back on refunds (most recent payment first, at that payment's rate, possibly taking
//!   the balance negative), held for a number of days before it is payable, and paid out above
//!   a minimum. Every movement is an entry; totals are derived, never edited.
//! - [`split_commission`]: a master agent's and sub-agents' shares that sum exactly.
//!
//! Every commission amount is rounded half-up to the minor unit when it is recorded, through
//! `dotmac_core::Money::round`.
//!
//! ## Example
//!
//! ```
//! use dotmac_core::{Currency, Money};
//! use dotmac_partners::{CommissionTier, CommissionTiers, TierMode};
//! use rust_decimal::Decimal;
//!
//! let tiers = CommissionTiers::new(TierMode::Retroactive, vec![
//!     CommissionTier { from: Decimal::ZERO, rate_percent: Decimal::from(5) },
//!     CommissionTier { from: Decimal::from(1_000_000), rate_percent: Decimal::from(7) },
//! ])?;
//! let usd = |amount: i64| Money::new(Decimal::from(amount), Currency::USD);
//! assert_eq!(tiers.commission(usd(1_000_000))?, usd(70_000));
//! # Ok::<(), dotmac_partners::PartnersError>(())
//! ```
//!
//! ## Features
//!
//! None.

// Unchecked arithmetic is refused in library code: `+` on a `Decimal` panics on overflow and on
// an integer wraps in release. Use checked operations (`Money::checked_add`, `checked_sum`, …) or
// an `allow` that says why the operation cannot overflow. Tests may use plain operators.
// `Iterator::sum`/`product` panic on overflow too: `clippy.toml` disallows them here.
#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]
#![cfg_attr(not(test), warn(clippy::disallowed_methods))]

// Module map: the graph of `use crate::…` between modules is acyclic; each line names what the
// module imports. A type two modules need goes down into the lower one, never a back edge.
//
//   ids    — (nothing: PartnerId)
//   error  — (nothing)
//   tiers  — error
//   ledger — error, ids, tiers
//   lib    — re-exports only

mod error;
mod ids;
mod ledger;
mod tiers;

pub use error::PartnersError;
pub use ids::PartnerId;
pub use ledger::{
    CommissionDuration, CommissionPlan, EntryKind, LedgerEntry, LedgerSummary, ReferralLedger,
    split_commission,
};
pub use tiers::{CommissionTier, CommissionTiers, TierMode};
