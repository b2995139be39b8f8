//! The crate's one error type.

use chrono::NaiveDate;
use dotmac_core::{CoreError, CustomerId, Money, StorageError};
use rust_decimal::Decimal;

use crate::ids::{CommissionPlanId, HoldId, PartnerId};
use crate::partner::PartnerStatus;

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
    /// A commission plan that cannot work.
    #[error("invalid commission plan: {reason}")]
    InvalidPlan {
        /// Why it was refused.
        reason: &'static str,
    },
    /// A partner account that cannot be opened as given.
    #[error("invalid partner {partner}: {reason}")]
    InvalidPartner {
        /// The partner.
        partner: PartnerId,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A lifecycle move the partner lifecycle forbids (applied → active → suspended →
    /// terminated; suspended → active; applied → terminated).
    #[error("partner {partner} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The partner.
        partner: PartnerId,
        /// Its status.
        from: PartnerStatus,
        /// The status asked for.
        to: PartnerStatus,
    },
    /// A dated change before the latest dated change of the same record (a lifecycle move, a
    /// transfer): histories are append-only in time.
    #[error("change dated {on} is before the latest change ({latest}); histories are append-only")]
    OutOfOrder {
        /// The date given.
        on: NaiveDate,
        /// The latest date already recorded.
        latest: NaiveDate,
    },
    /// A partner the store does not hold.
    #[error("partner {0} is not known")]
    UnknownPartner(PartnerId),
    /// A commission plan the store does not hold.
    #[error("commission plan {0} is not known")]
    UnknownPlan(CommissionPlanId),
    /// A partner that is not active where an active one is needed (attribution, a new
    /// sub-agent's master).
    #[error("partner {partner} is {status}, not active")]
    PartnerNotActive {
        /// The partner.
        partner: PartnerId,
        /// Its status on the date asked about.
        status: PartnerStatus,
    },
    /// A sub-agent's parent that is not a master agent (or a master agent given a parent).
    #[error("partner {0} is not a master agent")]
    NotAMasterAgent(PartnerId),
    /// A customer already attributed to a partner (transfer them instead).
    #[error("customer {customer} is already attributed to partner {partner}; transfer instead")]
    AlreadyAttributed {
        /// The customer.
        customer: CustomerId,
        /// The partner they are attributed to.
        partner: PartnerId,
    },
    /// A customer attributed to no partner, where a current attribution is needed.
    #[error("customer {0} is not attributed to any partner")]
    NotAttributed(CustomerId),
    /// No touch of any partner within the attribution window.
    #[error("customer {customer} has no partner touch in the {window_days} days up to {on}")]
    NoTouchInWindow {
        /// The customer.
        customer: CustomerId,
        /// The attribution date.
        on: NaiveDate,
        /// The window.
        window_days: u32,
    },
    /// A transfer to the partner the customer is already attributed to.
    #[error("customer {customer} is already attributed to partner {partner}")]
    SamePartner {
        /// The customer.
        customer: CustomerId,
        /// The partner.
        partner: PartnerId,
    },
    /// A hold that is not on the partner's ledger, or already released.
    #[error("hold {0} is not active on this ledger")]
    UnknownHold(HoldId),
    /// A record written under an id that is taken.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// What kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A record that changed since it was read (another writer saved it first): read it again
    /// and retry.
    #[error("{what} {id} changed since it was read")]
    Stale {
        /// What kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A storage failure, with its kind and the backend's error as its source.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl PartnersError {
    /// A stable, machine-readable name for the error's kind (`"invalid_transition"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            PartnersError::Core(core) => core.kind(),
            PartnersError::InvalidTiers { .. } => "invalid_tiers",
            PartnersError::InvalidRate(_) => "invalid_rate",
            PartnersError::NotPositive { .. } => "not_positive",
            PartnersError::NegativeBase(_) => "negative_base",
            PartnersError::InvalidPlan { .. } => "invalid_plan",
            PartnersError::InvalidPartner { .. } => "invalid_partner",
            PartnersError::InvalidTransition { .. } => "invalid_transition",
            PartnersError::OutOfOrder { .. } => "out_of_order",
            PartnersError::UnknownPartner(_) => "unknown_partner",
            PartnersError::UnknownPlan(_) => "unknown_plan",
            PartnersError::PartnerNotActive { .. } => "partner_not_active",
            PartnersError::NotAMasterAgent(_) => "not_a_master_agent",
            PartnersError::AlreadyAttributed { .. } => "already_attributed",
            PartnersError::NotAttributed(_) => "not_attributed",
            PartnersError::NoTouchInWindow { .. } => "no_touch_in_window",
            PartnersError::SamePartner { .. } => "same_partner",
            PartnersError::UnknownHold(_) => "unknown_hold",
            PartnersError::AlreadyExists { .. } => "already_exists",
            PartnersError::Stale { .. } => "stale",
            PartnersError::Storage(_) => "storage",
        }
    }

    /// True when the same call may pass if made again: a stale record (re-read and retry) or
    /// a store that was unavailable.
    pub fn is_retryable(&self) -> bool {
        match self {
            PartnersError::Stale { .. } => true,
            PartnersError::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }
}

pub(crate) fn overflow(operation: &'static str) -> PartnersError {
    PartnersError::Core(CoreError::Overflow { operation })
}
