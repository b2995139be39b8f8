//! ISP data allowances: an included quantity per period, top-up packs that raise it (optionally
//! rolling over to the next period), overage rating and threshold notifications.
//!
//! Usage consumes the allowance in this order: the plan's included quantity, then what rolled
//! over from the previous period, then top-ups in the order they were bought. What is left of
//! top-ups bought with rollover carries into the next period once (rolled-over quantity does
//! not roll again). A policy may also roll over unused included units
//! ([`IncludedRollover::Unused`], optionally capped): then what is left of the included and
//! rolled-in units carries into the next period as well.

use chrono::NaiveDate;
use dotmac_core::{Currency, CustomerId, EventPayload, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::pricing::PriceModel;
use dotmac_core::MeterId;

/// An allowance policy for one meter of a plan. Build with [`AllowancePolicy::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowancePolicy {
    meter: MeterId,
    included: Decimal,
    currency: Currency,
    /// `None`: no charge (speed is throttled instead, by provisioning).
    overage: Option<PriceModel>,
    /// Percentages of the allowance, ascending, deduplicated, at most 64.
    thresholds: Vec<u32>,
    /// Whether unused included units carry into the next period.
    #[serde(default)]
    included_rollover: IncludedRollover,
}

/// Whether the unused part of a period's included quantity carries into the next period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum IncludedRollover {
    /// Unused included units expire (only top-ups bought with rollover carry over).
    #[default]
    Expire,
    /// What is left of the included and the rolled-in units, max(included + rolled in − used,
    /// 0), carries into the next period, at most `cap` units when a cap is given.
    Unused {
        /// The most units that may carry over; `None` for no limit.
        cap: Option<Decimal>,
    },
}

impl AllowancePolicy {
    /// A policy: `included` units of `meter` per period, the units above it priced by
    /// `overage` (any pricing model: per unit, graduated tiers, packages…; `None` for no
    /// charge) in `currency`, notifications at `thresholds` percent of the allowance (e.g.
    /// `[80, 100]`).
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidConfiguration`] for a negative included quantity, more than 64
    /// thresholds or a zero threshold; the price model's own validation error.
    pub fn new(
        meter: MeterId,
        included: Decimal,
        currency: Currency,
        overage: Option<PriceModel>,
        thresholds: &[u32],
    ) -> Result<Self, BillingError> {
        let invalid = |reason| BillingError::InvalidConfiguration {
            what: "allowance policy",
            reason,
        };
        if included.is_sign_negative() && !included.is_zero() {
            return Err(invalid("the included quantity must not be negative"));
        }
        if let Some(model) = &overage {
            model.validate()?;
        }
        let mut thresholds = thresholds.to_vec();
        thresholds.sort_unstable();
        thresholds.dedup();
        if thresholds.len() > 64 {
            return Err(invalid("at most 64 thresholds"));
        }
        if thresholds.first() == Some(&0) {
            return Err(invalid("thresholds are percentages above zero"));
        }
        Ok(AllowancePolicy {
            meter,
            included,
            currency,
            overage,
            thresholds,
            included_rollover: IncludedRollover::Expire,
        })
    }

    /// The same policy with unused included units rolling over as `rollover` says.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidConfiguration`] for a negative cap.
    pub fn with_included_rollover(
        mut self,
        rollover: IncludedRollover,
    ) -> Result<Self, BillingError> {
        if let IncludedRollover::Unused { cap: Some(cap) } = rollover
            && cap.is_sign_negative()
            && !cap.is_zero()
        {
            return Err(BillingError::InvalidConfiguration {
                what: "allowance policy",
                reason: "the rollover cap must not be negative",
            });
        }
        self.included_rollover = rollover;
        Ok(self)
    }

    /// Whether unused included units roll over.
    pub fn included_rollover(&self) -> IncludedRollover {
        self.included_rollover
    }

    /// The meter the allowance applies to.
    pub fn meter(&self) -> MeterId {
        self.meter
    }

    /// The quantity included per period.
    pub fn included(&self) -> Decimal {
        self.included
    }

    /// The overage charge (exact, unrounded) for `overage` units above the allowance.
    ///
    /// # Errors
    ///
    /// The price model's errors (overflow).
    pub fn price_overage(&self, overage: Decimal) -> Result<Money, BillingError> {
        let units = overage.max(Decimal::ZERO);
        let amount = match &self.overage {
            None => Decimal::ZERO,
            Some(model) => model.amount(units)?,
        };
        Ok(Money::new(amount, self.currency))
    }
}

/// A top-up pack bought during a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUp {
    /// Units it adds to this period's allowance.
    pub quantity: Decimal,
    /// Whether what is left of it at the end of the period carries into the next one.
    pub rollover: Rollover,
}

/// Whether an unused top-up carries into the next period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollover {
    /// Unused units expire at the end of the period.
    Expire,
    /// Unused units carry into the next period (once).
    NextPeriod,
}

/// A threshold reached: emitted once per threshold and period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ThresholdReached {
    /// The customer.
    pub customer: CustomerId,
    /// The meter.
    pub meter: MeterId,
    /// The period's start.
    pub period_start: NaiveDate,
    /// The threshold, in percent of the allowance.
    pub percent: u32,
    /// Usage so far.
    pub used: Decimal,
    /// The allowance at that moment (included + rolled over + top-ups).
    pub allowance: Decimal,
}

impl EventPayload for ThresholdReached {
    fn event_type(&self) -> &'static str {
        "usage.allowance_threshold_reached"
    }
}

/// One customer's allowance for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowancePeriod {
    /// The customer.
    pub customer: CustomerId,
    /// The period's start.
    pub period_start: NaiveDate,
    included: Decimal,
    carried_in: Decimal,
    top_ups: Vec<TopUp>,
    notified: u64,
    #[serde(default)]
    included_rollover: IncludedRollover,
}

impl AllowancePeriod {
    /// Opens a period with the policy's included quantity and `carried_in` units rolled over
    /// (from [`AllowancePeriod::rollover_out`] of the previous period).
    pub fn open(
        policy: &AllowancePolicy,
        customer: CustomerId,
        period_start: NaiveDate,
        carried_in: Decimal,
    ) -> Self {
        AllowancePeriod {
            customer,
            period_start,
            included: policy.included,
            carried_in: carried_in.max(Decimal::ZERO),
            top_ups: Vec::new(),
            notified: 0,
            included_rollover: policy.included_rollover,
        }
    }

    /// Adds a top-up pack.
    ///
    /// # Errors
    ///
    /// [`BillingError::NonPositiveAmount`] for a quantity of zero or less.
    pub fn add_top_up(&mut self, top_up: TopUp) -> Result<(), BillingError> {
        if top_up.quantity <= Decimal::ZERO {
            return Err(BillingError::NonPositiveAmount {
                what: "top-up quantity",
                amount: top_up.quantity,
            });
        }
        self.top_ups.push(top_up);
        Ok(())
    }

    /// The allowance: included + rolled over + top-ups.
    ///
    /// # Errors
    ///
    /// [`BillingError::Core`] with an overflow when the sum does not fit in a `Decimal`.
    pub fn allowance(&self) -> Result<Decimal, BillingError> {
        Ok(dotmac_core::checked_sum(
            [self.included, self.carried_in]
                .into_iter()
                .chain(self.top_ups.iter().map(|t| t.quantity)),
            "allowance",
        )?)
    }

    /// Units used above the allowance.
    ///
    /// # Errors
    ///
    /// As [`AllowancePeriod::allowance`], and an overflow when `used` minus the allowance
    /// does not fit.
    pub fn overage(&self, used: Decimal) -> Result<Decimal, BillingError> {
        let over = used
            .checked_sub(self.allowance()?)
            .ok_or_else(|| overflow("allowance overage"))?;
        Ok(over.max(Decimal::ZERO))
    }

    /// The overage charge for `used` units in this period.
    ///
    /// # Errors
    ///
    /// As [`AllowancePeriod::overage`], and the price model's errors (overflow).
    pub fn overage_charge(
        &self,
        policy: &AllowancePolicy,
        used: Decimal,
    ) -> Result<Money, BillingError> {
        policy.price_overage(self.overage(used)?)
    }

    /// Units that carry into the next period when `used` units were used in this one: unused
    /// top-ups bought with rollover, plus unused included and rolled-in units when the policy
    /// rolls them over ([`IncludedRollover`]).
    ///
    /// # Errors
    ///
    /// [`BillingError::Core`] with an overflow when a figure does not fit in a `Decimal`.
    pub fn rollover_out(&self, used: Decimal) -> Result<Decimal, BillingError> {
        let overflow = || overflow("allowance rollover");
        let base = self
            .included
            .checked_add(self.carried_in)
            .ok_or_else(overflow)?;
        let mut left = used
            .checked_sub(base)
            .ok_or_else(overflow)?
            .max(Decimal::ZERO);
        let mut carried = match self.included_rollover {
            IncludedRollover::Expire => Decimal::ZERO,
            IncludedRollover::Unused { cap } => {
                let unused = base
                    .checked_sub(used)
                    .ok_or_else(overflow)?
                    .max(Decimal::ZERO);
                cap.map_or(unused, |cap| unused.min(cap))
            }
        };
        for top_up in &self.top_ups {
            let consumed = left.min(top_up.quantity);
            left = left.checked_sub(consumed).ok_or_else(overflow)?;
            if top_up.rollover == Rollover::NextPeriod {
                carried = top_up
                    .quantity
                    .checked_sub(consumed)
                    .and_then(|unused| carried.checked_add(unused))
                    .ok_or_else(overflow)?;
            }
        }
        Ok(carried)
    }

    /// The thresholds newly reached at `used` units, each only once per period (a top-up that
    /// raises the allowance does not re-arm a threshold already notified).
    ///
    /// # Errors
    ///
    /// As [`AllowancePeriod::allowance`]; nothing is marked as notified on error.
    pub fn check_thresholds(
        &mut self,
        policy: &AllowancePolicy,
        used: Decimal,
    ) -> Result<Vec<ThresholdReached>, BillingError> {
        let allowance = self.allowance()?;
        let mut reached = Vec::new();
        for (index, percent) in policy.thresholds.iter().enumerate().take(64) {
            let bit = 1u64 << index;
            if self.notified & bit != 0 {
                continue;
            }
            if threshold_reached(used, allowance, *percent) {
                self.notified |= bit;
                reached.push(ThresholdReached {
                    customer: self.customer,
                    meter: policy.meter,
                    period_start: self.period_start,
                    percent: *percent,
                    used,
                    allowance,
                });
            }
        }
        Ok(reached)
    }
}

/// used / allowance ≥ percent / 100, without dividing where the products fit (the allowance may
/// be zero).
fn threshold_reached(used: Decimal, allowance: Decimal, percent: u32) -> bool {
    let percent = Decimal::from(percent);
    match (
        used.checked_mul(Decimal::ONE_HUNDRED),
        allowance.checked_mul(percent),
    ) {
        (Some(used), Some(limit)) => used >= limit,
        // |used × 100| is beyond `Decimal::MAX` and the limit is not: the sign decides.
        (None, Some(_)) => used.is_sign_positive(),
        // |allowance × percent| is beyond `Decimal::MAX` and used × 100 is not.
        (Some(_), None) => allowance.is_sign_negative(),
        // Both beyond: compare the quotients (the allowance is not zero here).
        (None, None) => {
            let ratio = used.checked_div(allowance);
            let share = percent.checked_div(Decimal::ONE_HUNDRED);
            match (ratio, share) {
                (Some(ratio), Some(share)) if allowance.is_sign_positive() => ratio >= share,
                (Some(ratio), Some(share)) => ratio <= share,
                _ => false,
            }
        }
    }
}

fn overflow(operation: &'static str) -> BillingError {
    BillingError::Core(dotmac_core::CoreError::Overflow { operation })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::{Tier, Tiers};
    use rust_decimal_macros::dec;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
    }

    fn policy(overage: Option<PriceModel>) -> AllowancePolicy {
        AllowancePolicy::new(
            MeterId::from_u128(1),
            dec!(100),
            Currency::USD,
            overage,
            &[80, 100],
        )
        .unwrap()
    }

    #[test]
    fn top_ups_raise_the_allowance_and_roll_over_once() {
        let policy = policy(Some(PriceModel::PerUnit {
            unit_amount: dec!(2),
        }));
        let start = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let mut march = AllowancePeriod::open(&policy, CustomerId::from_u128(1), start, dec!(0));
        march
            .add_top_up(TopUp {
                quantity: dec!(20),
                rollover: Rollover::NextPeriod,
            })
            .unwrap();
        march
            .add_top_up(TopUp {
                quantity: dec!(10),
                rollover: Rollover::Expire,
            })
            .unwrap();
        assert_eq!(march.allowance().unwrap(), dec!(130));
        // 105 used: 5 of the rollover top-up consumed, 15 of it carries over; the other expires.
        assert_eq!(march.rollover_out(dec!(105)).unwrap(), dec!(15));
        assert_eq!(march.overage(dec!(135)).unwrap(), dec!(5));
        assert_eq!(
            march.overage_charge(&policy, dec!(135)).unwrap(),
            Money::new(dec!(10), Currency::USD)
        );
        let april_start = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
        let april = AllowancePeriod::open(&policy, CustomerId::from_u128(1), april_start, dec!(15));
        assert_eq!(april.allowance().unwrap(), dec!(115));
        // Carried-in units are used before top-ups and never roll again.
        assert_eq!(april.rollover_out(dec!(0)).unwrap(), dec!(0));
    }

    #[test]
    fn thresholds_fire_once_per_period() {
        let policy = policy(None);
        let start = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let mut period = AllowancePeriod::open(&policy, CustomerId::from_u128(1), start, dec!(0));
        assert!(
            period
                .check_thresholds(&policy, dec!(79.9))
                .unwrap()
                .is_empty()
        );
        let first = period.check_thresholds(&policy, dec!(80)).unwrap();
        assert_eq!(first.iter().map(|t| t.percent).collect::<Vec<_>>(), [80]);
        assert!(
            period
                .check_thresholds(&policy, dec!(85))
                .unwrap()
                .is_empty()
        );
        let second = period.check_thresholds(&policy, dec!(150)).unwrap();
        assert_eq!(second.iter().map(|t| t.percent).collect::<Vec<_>>(), [100]);
        assert!(
            period
                .check_thresholds(&policy, dec!(500))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn tiered_overage_is_graduated() {
        let tiers = Tiers::new(vec![
            Tier {
                up_to: Some(dec!(10)),
                unit_amount: dec!(1),
                flat_amount: dec!(0),
            },
            Tier {
                up_to: None,
                unit_amount: dec!(0.5),
                flat_amount: dec!(0),
            },
        ])
        .unwrap();
        let policy = policy(Some(PriceModel::Graduated { tiers }));
        assert_eq!(policy.price_overage(dec!(14)).unwrap().amount(), dec!(12));
        assert_eq!(policy.price_overage(dec!(-3)).unwrap().amount(), dec!(0));
    }

    #[test]
    fn bad_policies_and_top_ups_are_refused() {
        let err = AllowancePolicy::new(MeterId::from_u128(1), dec!(-1), Currency::USD, None, &[])
            .unwrap_err();
        assert!(matches!(err, BillingError::InvalidConfiguration { .. }));
        let policy = policy(None);
        let start = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let mut period = AllowancePeriod::open(&policy, CustomerId::from_u128(1), start, dec!(0));
        let err = period
            .add_top_up(TopUp {
                quantity: dec!(0),
                rollover: Rollover::Expire,
            })
            .unwrap_err();
        assert_eq!(
            err,
            BillingError::NonPositiveAmount {
                what: "top-up quantity",
                amount: dec!(0)
            }
        );
        assert_eq!(period.allowance().unwrap(), dec!(100));
    }

    #[test]
    fn allowances_beyond_decimal_range_are_errors_not_panics() {
        let overflow =
            |operation| BillingError::Core(dotmac_core::CoreError::Overflow { operation });
        let policy = policy(None);
        let mut period =
            AllowancePeriod::open(&policy, CustomerId::from_u128(1), day(), Decimal::MAX);
        assert_eq!(period.allowance(), Err(overflow("allowance")));
        assert_eq!(period.overage(dec!(1)), Err(overflow("allowance")));
        let before = period.clone();
        assert_eq!(
            period.check_thresholds(&policy, dec!(1)),
            Err(overflow("allowance"))
        );
        assert_eq!(period, before);
        assert_eq!(
            period.rollover_out(Decimal::MIN),
            Err(overflow("allowance rollover"))
        );
        // Used × 100 beyond range: compared by sign, not by a panicking product.
        let mut small = AllowancePeriod::open(&policy, CustomerId::from_u128(1), day(), dec!(0));
        let reached = small.check_thresholds(&policy, Decimal::MAX).unwrap();
        assert_eq!(
            reached.iter().map(|t| t.percent).collect::<Vec<_>>(),
            [80, 100]
        );
    }

    #[test]
    fn unused_included_units_roll_over_up_to_the_cap_and_top_ups_do_not() {
        let capped = policy(None)
            .with_included_rollover(IncludedRollover::Unused {
                cap: Some(dec!(30)),
            })
            .unwrap();
        let start = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let mut period = AllowancePeriod::open(&capped, CustomerId::from_u128(1), start, dec!(25));
        period
            .add_top_up(TopUp {
                quantity: dec!(5),
                rollover: Rollover::Expire,
            })
            .unwrap();
        // 100 included + 25 rolled in − 110 used = 15 unused: all of it carries over.
        assert_eq!(period.rollover_out(dec!(110)), Ok(dec!(15)));
        // 125 − 60 = 65 unused, capped at 30; the unused top-up expires.
        assert_eq!(period.rollover_out(dec!(60)), Ok(dec!(30)));
        assert_eq!(period.rollover_out(dec!(200)), Ok(dec!(0)));
        let unlimited = policy(None)
            .with_included_rollover(IncludedRollover::Unused { cap: None })
            .unwrap();
        let open = AllowancePeriod::open(&unlimited, CustomerId::from_u128(1), start, dec!(0));
        assert_eq!(open.rollover_out(dec!(40)), Ok(dec!(60)));
        assert_eq!(
            policy(None).with_included_rollover(IncludedRollover::Unused {
                cap: Some(dec!(-1))
            }),
            Err(BillingError::InvalidConfiguration {
                what: "allowance policy",
                reason: "the rollover cap must not be negative",
            })
        );
    }
}
