//! Subscriptions: an explicit lifecycle, a timeline of plan segments, and billing progress.
//!
//! A subscription's prices over time are a list of [`Segment`]s: from a date on, this plan
//! version at this quantity (or paused). Changes never edit the past: they end the current
//! segment at the change date and start a new one, so every day of a period is priced by
//! exactly one segment, at the price version it was sold at. Billing progress is one number,
//! [`Subscription::next_period`]: the first period (counted from the billing anchor) that has
//! not been billed yet.

use chrono::NaiveDate;
use dotmac_core::{Currency, CustomerId, PlanId, SubscriptionId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::catalog::Plan;
use crate::discount::AppliedDiscount;
use crate::error::BillingError;
use crate::proration::ProrationMode;

/// How far after its start a subscription may be changed or cancelled, in years (see
/// [`Subscription::change_horizon`]).
pub const CHANGE_HORIZON_YEARS: u32 = 100;

/// Where a subscription is in its life.
///
/// ```text
/// trialing ──> active <──> past_due
///    │           │  ↑         │
///    │           ↓  │         │
///    │         paused ────────┤
///    ↓           ↓            ↓
///  cancelled <───┴────────────┘ ──> ended
///
/// active, past_due ──> suspended ──> active (restored), cancelled
/// ```
///
/// `suspended` is collections' suspension for non-payment, entered and left only through
/// [`BillingService::suspend_customer`](crate::BillingService::suspend_customer) and
/// [`BillingService::restore_customer`](crate::BillingService::restore_customer) (active or
/// past-due subscriptions; the tenant's
/// [`SuspensionBilling`](crate::SuspensionBilling) policy says what is billed meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// In its free trial.
    Trialing,
    /// In service and billing.
    Active,
    /// In service, with an overdue invoice (set by collections).
    PastDue,
    /// Service paused; paused days are not billed.
    Paused,
    /// Service suspended for non-payment since [`Subscription::suspended_since`]; what is
    /// billed meanwhile is the tenant's [`SuspensionBilling`](crate::SuspensionBilling)
    /// policy. Never counts in MRR.
    Suspended,
    /// Cancelled: no service from its end date; the final document may still be due.
    Cancelled,
    /// Over: nothing more will be billed.
    Ended,
}

impl SubscriptionStatus {
    /// True when `self → to` is a legal move.
    pub fn can_become(self, to: SubscriptionStatus) -> bool {
        use SubscriptionStatus::*;
        matches!(
            (self, to),
            (Trialing, Active)
                | (Trialing, Cancelled)
                | (Active, PastDue)
                | (Active, Paused)
                | (Active, Cancelled)
                | (PastDue, Active)
                | (PastDue, Paused)
                | (PastDue, Cancelled)
                | (Paused, Active)
                | (Paused, Cancelled)
                | (Active, Suspended)
                | (PastDue, Suspended)
                | (Suspended, Active)
                | (Suspended, Cancelled)
                | (Cancelled, Ended)
        )
    }

    /// `self → to`, or a typed error.
    ///
    /// # Errors
    ///
    /// [`BillingError::IllegalTransition`] when the move is not allowed.
    pub fn transition(self, to: SubscriptionStatus) -> Result<SubscriptionStatus, BillingError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(BillingError::IllegalTransition { from: self, to })
        }
    }

    /// True for cancelled and ended subscriptions.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Cancelled | SubscriptionStatus::Ended
        )
    }
}

/// How the partial first period of a subscription that starts between bill days is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FirstPeriod {
    /// Bill the partial period on its own (on the start date in advance, at its end in arrears).
    #[default]
    Prorate,
    /// In advance: bill nothing at start, then the partial period together with the first full
    /// period on the first bill day (Freeside's `prorate_defer_bill`). In arrears it is the same
    /// as `prorate`.
    Defer,
}

/// Whether a segment bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    /// Billed at its plan's prices.
    #[default]
    Billable,
    /// Paused: bills nothing.
    Paused,
}

/// From `from` on (until the next segment or the subscription's end), this plan version at this
/// quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// First day of the segment.
    pub from: NaiveDate,
    /// The plan.
    pub plan: PlanId,
    /// The plan's price version.
    pub version: u32,
    /// Seats (or lines, or addresses) for per-seat charges.
    pub quantity: Decimal,
    /// Billable or paused.
    pub state: SegmentState,
}

/// A customer's subscription to a plan.
///
/// Its lifecycle fields (status, end date, segments, billing progress, revision) are private:
/// they change only through the lifecycle ([`crate::bill_due`], [`crate::change`],
/// [`crate::cancel`], the [`BillingService`](crate::BillingService)) and the store, and are read
/// with the getters of the same names. The other fields are the customer's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The subscription's id.
    pub id: SubscriptionId,
    /// Who pays.
    pub customer: CustomerId,
    /// Currency of every document (must be the customer's).
    pub currency: Currency,
    /// Lifecycle state.
    pub(crate) status: SubscriptionStatus,
    /// First day of service.
    pub start: NaiveDate,
    /// Billing anchor: periods are computed from it (anniversary: the start; bill day: e.g. the
    /// 1st of a month).
    pub anchor: NaiveDate,
    /// Partial first period policy.
    pub first_period: FirstPeriod,
    /// How partial periods are priced.
    pub proration: ProrationMode,
    /// First day after the trial (`None`: no trial).
    pub trial_end: Option<NaiveDate>,
    /// First day without service, once cancelled (immediately or at a period end).
    pub(crate) ends_on: Option<NaiveDate>,
    /// The price timeline, ordered by `from`; the first starts at `start`.
    pub(crate) segments: Vec<Segment>,
    /// Discounts on recurring lines.
    pub discounts: Vec<AppliedDiscount>,
    /// First period index (from the anchor) not billed yet.
    pub(crate) next_period: i64,
    /// True once the setup fee has been billed.
    pub(crate) setup_billed: bool,
    /// Changes made so far (numbers the change documents).
    pub(crate) change_seq: u32,
    /// Optimistic-concurrency revision, bumped by the store on every write.
    pub(crate) revision: u64,
    /// The first day of the current suspension, while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) suspended_since: Option<NaiveDate>,
}

/// Every field of a [`Subscription`], public: what a store needs to rebuild one from its row
/// (see [`crate::internal`]). Not for applications, and not covered by semver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "the fields are Subscription's, documented there"
)]
pub struct SubscriptionParts {
    pub id: SubscriptionId,
    pub customer: CustomerId,
    pub currency: Currency,
    pub status: SubscriptionStatus,
    pub start: NaiveDate,
    pub anchor: NaiveDate,
    pub first_period: FirstPeriod,
    pub proration: ProrationMode,
    pub trial_end: Option<NaiveDate>,
    pub ends_on: Option<NaiveDate>,
    pub segments: Vec<Segment>,
    pub discounts: Vec<AppliedDiscount>,
    pub next_period: i64,
    pub setup_billed: bool,
    pub change_seq: u32,
    pub revision: u64,
    pub suspended_since: Option<NaiveDate>,
}

/// A subscription from its parts, as stored: no check (the parts were a subscription).
pub fn subscription_from_parts(parts: SubscriptionParts) -> Subscription {
    let SubscriptionParts {
        id,
        customer,
        currency,
        status,
        start,
        anchor,
        first_period,
        proration,
        trial_end,
        ends_on,
        segments,
        discounts,
        next_period,
        setup_billed,
        change_seq,
        revision,
        suspended_since,
    } = parts;
    Subscription {
        id,
        customer,
        currency,
        status,
        start,
        anchor,
        first_period,
        proration,
        trial_end,
        ends_on,
        segments,
        discounts,
        next_period,
        setup_billed,
        change_seq,
        revision,
        suspended_since,
    }
}

/// A subscription's parts, to store it.
pub fn subscription_into_parts(subscription: Subscription) -> SubscriptionParts {
    let Subscription {
        id,
        customer,
        currency,
        status,
        start,
        anchor,
        first_period,
        proration,
        trial_end,
        ends_on,
        segments,
        discounts,
        next_period,
        setup_billed,
        change_seq,
        revision,
        suspended_since,
    } = subscription;
    SubscriptionParts {
        id,
        customer,
        currency,
        status,
        start,
        anchor,
        first_period,
        proration,
        trial_end,
        ends_on,
        segments,
        discounts,
        next_period,
        setup_billed,
        change_seq,
        revision,
        suspended_since,
    }
}

/// Sets a subscription's revision: for stores, which bump it on every write.
pub fn set_subscription_revision(subscription: &mut Subscription, revision: u64) {
    subscription.revision = revision;
}

impl Subscription {
    /// Where the subscription is in its life.
    pub fn status(&self) -> SubscriptionStatus {
        self.status
    }

    /// The first day without service, once cancelled (immediately or at a period end).
    pub fn ends_on(&self) -> Option<NaiveDate> {
        self.ends_on
    }

    /// The price timeline, ordered by `from`; the first starts at `start`.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first period index (from the anchor) not billed yet.
    pub fn next_period(&self) -> i64 {
        self.next_period
    }

    /// True once the setup fee has been billed.
    pub fn setup_billed(&self) -> bool {
        self.setup_billed
    }

    /// How many changes were made so far (they number the change documents).
    pub fn change_seq(&self) -> u32 {
        self.change_seq
    }

    /// The optimistic-concurrency revision, bumped by the store on every write.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The first day of the current suspension, while [`SubscriptionStatus::Suspended`].
    pub fn suspended_since(&self) -> Option<NaiveDate> {
        self.suspended_since
    }

    /// The segment in force on `date`, if the subscription has started by then.
    pub fn segment_on(&self, date: NaiveDate) -> Option<&Segment> {
        self.segments.iter().rev().find(|s| s.from <= date)
    }

    /// The newest segment (including a change scheduled for a period end).
    pub fn latest_segment(&self) -> Option<&Segment> {
        self.segments.last()
    }

    /// The plan in force on `date`.
    pub fn plan_on(&self, date: NaiveDate) -> Option<PlanId> {
        self.segment_on(date).map(|s| s.plan)
    }

    /// The quantity in force on `date`.
    pub fn quantity_on(&self, date: NaiveDate) -> Option<Decimal> {
        self.segment_on(date).map(|s| s.quantity)
    }

    /// The first day billing starts (after any trial).
    pub fn billing_start(&self) -> NaiveDate {
        self.trial_end.unwrap_or(self.start).max(self.start)
    }

    /// The last date a change or cancellation of this subscription may be dated: its start
    /// plus [`CHANGE_HORIZON_YEARS`] years (clamped to a month's end, like periods).
    ///
    /// Why a horizon at all: a change is prorated day by day against billed periods, so a date
    /// in year 262143 (`NaiveDate::MAX`) makes period arithmetic overflow or a bill run walk
    /// millions of periods. A hundred years from the start is beyond any real contract and
    /// keeps every period computation small; it is relative to the start rather than a fixed
    /// year so that it never needs moving.
    pub fn change_horizon(&self) -> NaiveDate {
        self.start
            .checked_add_months(chrono::Months::new(CHANGE_HORIZON_YEARS * 12))
            .unwrap_or(NaiveDate::MAX)
    }

    /// Checks that `date` is within [`Subscription::change_horizon`].
    ///
    /// # Errors
    ///
    /// [`BillingError::DateBeyondHorizon`].
    pub fn check_within_horizon(&self, date: NaiveDate) -> Result<(), BillingError> {
        let horizon = self.change_horizon();
        if date > horizon {
            return Err(BillingError::DateBeyondHorizon {
                subscription: self.id,
                date,
                horizon,
            });
        }
        Ok(())
    }

    /// True when the subscription is in service on `date`.
    pub fn in_service_on(&self, date: NaiveDate) -> bool {
        date >= self.start && self.ends_on.is_none_or(|end| date < end)
    }
}

/// What a new subscription needs; build it with [`NewSubscription::new`] and its setters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSubscription {
    /// The id to use.
    pub id: SubscriptionId,
    /// Who pays.
    pub customer: CustomerId,
    /// The plan.
    pub plan: PlanId,
    /// The plan version; `None` for the version sold on the start date.
    pub version: Option<u32>,
    /// The currency (must be the customer's and offered by the plan).
    pub currency: Currency,
    /// Seats.
    pub quantity: Decimal,
    /// First day of service.
    pub start: NaiveDate,
    /// Billing anchor; `None` for the start date (anniversary billing).
    pub anchor: Option<NaiveDate>,
    /// Partial first period policy.
    pub first_period: FirstPeriod,
    /// Proration mode.
    pub proration: ProrationMode,
    /// Discounts.
    pub discounts: Vec<AppliedDiscount>,
}

impl NewSubscription {
    /// A subscription of one seat, billed on its anniversary, prorated by actual days.
    pub fn new(customer: CustomerId, plan: PlanId, currency: Currency, start: NaiveDate) -> Self {
        NewSubscription {
            id: SubscriptionId::new(),
            customer,
            plan,
            version: None,
            currency,
            quantity: Decimal::ONE,
            start,
            anchor: None,
            first_period: FirstPeriod::Prorate,
            proration: ProrationMode::ActualDays,
            discounts: Vec::new(),
        }
    }

    /// Sets the id (deterministic ids for imports and tests).
    pub fn id(mut self, id: SubscriptionId) -> Self {
        self.id = id;
        self
    }

    /// Sets the quantity.
    pub fn quantity(mut self, quantity: Decimal) -> Self {
        self.quantity = quantity;
        self
    }

    /// Bills on a fixed anchor (for example the 1st of a month) instead of the anniversary.
    pub fn anchor(mut self, anchor: NaiveDate) -> Self {
        self.anchor = Some(anchor);
        self
    }

    /// Sets the first-period policy.
    pub fn first_period(mut self, first_period: FirstPeriod) -> Self {
        self.first_period = first_period;
        self
    }

    /// Sets the proration mode.
    pub fn proration(mut self, proration: ProrationMode) -> Self {
        self.proration = proration;
        self
    }

    /// Pins a plan version.
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Adds a discount.
    pub fn discount(mut self, discount: crate::discount::Discount) -> Self {
        self.discounts.push(AppliedDiscount::new(discount));
        self
    }

    /// Validates the request against the plan and the customer's currency and returns the
    /// subscription (trialing when the plan has trial days).
    ///
    /// # Errors
    ///
    /// [`BillingError::PlanMismatch`] when `plan` is not the plan asked for,
    /// [`BillingError::CurrencyNotUsed`] when the currency is not the customer's,
    /// [`BillingError::CurrencyNotOffered`] when the plan has no price in it,
    /// [`BillingError::InvalidQuantity`] for a negative quantity,
    /// [`BillingError::UnknownPlanVersion`] for a pinned version that does not exist.
    pub fn create(
        self,
        plan: &Plan,
        customer_currency: Currency,
    ) -> Result<Subscription, BillingError> {
        if plan.id != self.plan {
            return Err(BillingError::PlanMismatch {
                expected: self.plan,
                got: plan.id,
            });
        }
        check_quantity(self.quantity)?;
        if self.currency != customer_currency {
            return Err(BillingError::CurrencyNotUsed {
                customer: self.customer,
                currency: self.currency.code(),
                customer_currency: customer_currency.code(),
            });
        }
        let version = match self.version {
            Some(v) => plan.version(v)?,
            None => plan.version_on(self.start),
        };
        if !version.offers(self.currency) {
            return Err(BillingError::CurrencyNotOffered {
                plan: plan.id,
                currency: self.currency.code(),
            });
        }
        for d in &self.discounts {
            d.discount.validate()?;
        }
        let anchor = self.anchor.unwrap_or(self.start);
        let trial_end = (plan.trial_days > 0)
            .then(|| {
                self.start
                    .checked_add_days(chrono::Days::new(u64::from(plan.trial_days)))
            })
            .flatten();
        let (first, _) = plan
            .interval
            .period_containing(anchor, trial_end.unwrap_or(self.start))?;
        Ok(Subscription {
            id: self.id,
            customer: self.customer,
            currency: self.currency,
            status: if trial_end.is_some() {
                SubscriptionStatus::Trialing
            } else {
                SubscriptionStatus::Active
            },
            start: self.start,
            anchor,
            first_period: self.first_period,
            proration: self.proration,
            trial_end,
            ends_on: None,
            segments: vec![Segment {
                from: self.start,
                plan: plan.id,
                version: version.version,
                quantity: self.quantity,
                state: SegmentState::Billable,
            }],
            discounts: self.discounts,
            next_period: first,
            setup_billed: false,
            change_seq: 0,
            revision: 0,
            suspended_since: None,
        })
    }
}

/// Checks a seat quantity.
pub(crate) fn check_quantity(quantity: Decimal) -> Result<(), BillingError> {
    if quantity < Decimal::ZERO {
        return Err(BillingError::InvalidQuantity {
            quantity,
            reason: "quantities must not be negative",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_refuses_illegal_moves() {
        use SubscriptionStatus::*;
        assert_eq!(Active.transition(Paused), Ok(Paused));
        assert_eq!(Paused.transition(Active), Ok(Active));
        assert_eq!(
            Ended.transition(Active),
            Err(BillingError::IllegalTransition {
                from: Ended,
                to: Active
            })
        );
        assert!(Cancelled.transition(Active).is_err());
        assert!(Trialing.transition(PastDue).is_err());
        assert!(Cancelled.is_terminal());
    }
}
