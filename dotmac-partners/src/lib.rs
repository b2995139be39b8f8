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
//! - [`PartnersService`] over a [`PartnerStore`] ([`InMemoryPartnerStore`] here, SQLite and
//!   PostgreSQL in `dotmac-sqlx`): every fact (a payment, a refund, an operator's hold or
//!   payout) is one atomic write, idempotent by its [`SourceId`] (an outbox event's id: a
//!   replay writes nothing); [`Statement`]s per period that reconcile to the ledger;
//!   [`PartnerActivity`] and [`tier_changes`] for analytics; payout runs that record
//!   [`PayoutInstruction`]s and publish `partners.payout_instructed` (money is never moved).
//!
//! Every commission amount is rounded half-up to the minor unit when it is recorded, through
//! `dotmac_core::Money::round`. The crate takes payments and refunds as values; the `dotmac`
//! facade's `PartnersFollowCollections` reaction feeds it collections' payment events.
//!
//! ## Example: a programme end to end
//!
//! A master agent and its sub-agent (a quarter of the sub-agent's commission goes up), a
//! customer attributed by first touch, a payment, a refund of it, and the statement.
//!
//! ```
//! # futures_block_on(async {
//! use chrono::NaiveDate;
//! use dotmac_core::{Currency, CustomerId, FixedClock, Money, PaymentId, Period, TenantId};
//! use dotmac_partners::*;
//! use rust_decimal::Decimal;
//!
//! let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
//! let usd = |s: &str| Money::parse(s, Currency::USD);
//! let service = PartnersService::new(
//!     InMemoryPartnerStore::new(),
//!     FixedClock::new(chrono::DateTime::UNIX_EPOCH),
//!     PartnersSettings::default(),
//! );
//! let tenant = TenantId::new();
//! let plan = CommissionPlan::builder(CommissionPlanId::from_u128(1), "Agents", Currency::USD)
//!     .tiered(TierSchedule::example_programme()) // bronze 5 % … platinum 12 %
//!     .hold_days(30)
//!     .build()?;
//! service.save_plan(tenant, &plan).await?;
//! let (master, shop) = (PartnerId::from_u128(1), PartnerId::from_u128(2));
//! let open = |id, kind| PartnerAccount::apply(id, "Partner", kind, plan.id(), day(1, 1));
//! service.apply(tenant, open(master, PartnerKind::MasterAgent)?).await?;
//! service.change_status(tenant, master, PartnerStatus::Active, day(1, 1)).await?;
//! let sub_agent = open(shop, PartnerKind::Referral)?.under(MasterOverride::new(master, Decimal::from(25))?)?;
//! service.apply(tenant, sub_agent).await?;
//! service.change_status(tenant, shop, PartnerStatus::Active, day(1, 1)).await?;
//!
//! let customer = CustomerId::from_u128(7);
//! service.record_touch(tenant, customer, shop, day(1, 20)).await?;
//! service.attribute(tenant, customer, AttributionRule::first_touch(30), day(2, 1)).await?;
//!
//! // 5 % (bronze) of 200.00 = 10.00: 7.50 to the shop, 2.50 to its master.
//! let payment = CollectedPayment {
//!     customer, payment: PaymentId::from_u128(1), amount: usd("200.00")?, on: day(2, 3),
//!     tag: RevenueTag::default(),
//! };
//! service.record_payment(tenant, SourceId::from_u128(1), payment).await?;
//! assert_eq!(service.summary(tenant, shop, day(2, 28)).await?.balance, usd("7.50")?);
//! assert_eq!(service.summary(tenant, master, day(2, 28)).await?.balance, usd("2.50")?);
//!
//! // Half of it refunded: half of what it earned comes back, in both ledgers.
//! let refund = RefundedPayment {
//!     customer, refund: PaymentId::from_u128(2), payment: Some(payment.payment),
//!     amount: usd("100.00")?, on: day(2, 10),
//! };
//! service.record_refund(tenant, SourceId::from_u128(2), refund).await?;
//! let february = Period::new(day(2, 1), day(3, 1))?;
//! let statement = service.statement(tenant, shop, february).await?;
//! assert_eq!((statement.earned, statement.clawed_back), (usd("7.50")?, usd("3.75")?));
//! assert!(statement.reconciles()?);
//! assert_eq!(statement.payable, usd("0.00")?); // still in its 30-day hold
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! # fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     use std::task::{Context, Poll, Waker};
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = Context::from_waker(Waker::noop());
//! #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```
//!
//! ## Example: tier tables
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
//! - `testkit`: the partner store behaviour suite (`testkit::run_store_suite`), for storage
//!   crates' tests.

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
//   test_support — (test builds only) commission, ids, ledger, plan: shared unit-test fixtures
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
#[cfg(test)]
mod test_support;
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
