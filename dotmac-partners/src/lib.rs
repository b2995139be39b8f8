//! # dotmac-partners
//!
//! Partners as a programme, for an ISP's referral partners, resellers and master agents, as
//! pure functions over values (no I/O, no clock):
//!
//! - [`PartnerAccount`]: a partner's kind, plan, master agent (for a sub-agent) and lifecycle
//!   (applied → active → suspended → terminated, each move checked and dated).
//! - [`CustomerAttribution`]: which partner a customer belongs to — touches, first or last
//!   touch within a window ([`AttributionRule`]), one partner at a time, transfers dated.
//! - [`CommissionPlan`]: the terms as data — a share of collected revenue (flat, by product
//!   or plan, or at the partner's level of a [`TierSchedule`] measured by lifetime or trailing
//!   revenue or active customers, marginal or retroactive over the [`CommissionTiers`]
//!   tables), flat rewards per activation and per billing cycle, for N months or for life,
//!   a hold period, approval, a minimum payout and a cap per period.
//! - [`PartnerLedger`]: one append-only ledger per partner across all its customers —
//!   accruals priced by [`price_payment`] from collected payments, clawbacks from refunds (a
//!   full refund takes back exactly what the payment earned), holds, approvals, adjustments
//!   and payouts as facts; the balance nets across customers and may go negative; what is
//!   payable respects the hold, approval, holds and the minimum payout.
//! - [`split_commission`] / [`share_out`]: a master agent's override and its sub-agent's part,
//!   each an entry in its own ledger, summing exactly to the whole.
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
//   ids         — (nothing: PartnerId, CommissionPlanId, SourceId, …)
//   partner     — error, ids, tiers
//   error       — ids, partner (PartnerStatus, a leaf enum there)
//   tiers       — error
//   attribution — error, ids
//   plan        — error, ids, tiers
//   ledger      — error, ids, plan
//   commission  — error, ids, ledger, partner, plan, tiers
//   payout      — ids, partner
//   statement   — attribution, error, ids, ledger, plan
//   store       — attribution, error, ids, ledger, partner, payout, plan
//   memory      — attribution, error, ids, ledger, partner, payout, plan, store
//   service     — attribution, commission, error, ids, ledger, partner, payout, plan, statement,
//                 store, tiers
//   testkit     — the crate root (a suite over the public API)
//   lib         — re-exports only

mod attribution;
mod commission;
mod error;
mod ids;
mod ledger;
mod memory;
mod partner;
mod payout;
mod plan;
mod service;
mod statement;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod tiers;

pub use attribution::{
    Attribution, AttributionModel, AttributionRule, AttributionSource, CustomerAttribution, Touch,
};
pub use commission::{
    CollectedPayment, Earning, RefundedPayment, Standing, price_payment, share_out,
};
pub use error::PartnersError;
pub use ids::{CommissionPlanId, HoldId, PartnerId, PayoutId, PayoutRunId, SourceId};
pub use ledger::{
    Accrual, Clawback, Component, EntryKind, LedgerEntry, LedgerSummary, PartnerLedger, Share,
    split_commission,
};
pub use memory::InMemoryPartnerStore;
pub use partner::{MasterOverride, PartnerAccount, PartnerKind, PartnerStatus, StatusChange};
pub use payout::{PartnerEvent, PayoutInstruction, PayoutRun, PayoutSkip};
pub use plan::{
    Approval, CapPeriod, CommissionCap, CommissionDuration, CommissionPlan, CommissionPlanBuilder,
    RateOverride, RevenueKey, RevenueShare, RevenueTag,
};
pub use service::{LedgerFact, PartnersService, PartnersSettings};
pub use statement::{
    LineKind, PartnerActivity, Statement, StatementLine, TierChange, activity, statement,
    tier_changes,
};
pub use store::{LedgerWrite, PartnerStore, WriteOutcome};
pub use tiers::{CommissionTier, CommissionTiers, TierBasis, TierMode, TierSchedule};
