//! Commission plans as data: what a partner earns on its customers' payments (a share of
//! collected revenue, flat by product or plan or tiered), flat rewards per activation and per
//! billing cycle, for how long, with a hold period, an approval step, a minimum payout and a
//! cap per period.

use chrono::{Datelike, Months, NaiveDate};
use dotmac_core::{Currency, Money, Period, PlanId, ProductId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::PartnersError;
use crate::ids::CommissionPlanId;
use crate::tiers::{TierSchedule, check_rate};

/// How long a referred customer's payments earn recurring commission (the revenue share and
/// the per-cycle reward), counted from the day the customer was first attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommissionDuration {
    /// Payments dated before the referral date + this many months.
    Months(u32),
    /// As long as the customer pays.
    Lifetime,
}

impl CommissionDuration {
    /// Whether a payment on `on` from a customer referred on `referred_on` is inside the term.
    pub fn covers(self, referred_on: NaiveDate, on: NaiveDate) -> bool {
        if on < referred_on {
            return false;
        }
        match self {
            CommissionDuration::Lifetime => true,
            CommissionDuration::Months(n) => referred_on
                .checked_add_months(Months::new(n))
                .is_none_or(|end| on < end),
        }
    }
}

/// What a payment's revenue is for, when the caller knows: the rate of a plan or product
/// override applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RevenueTag {
    /// The product the customer pays for.
    pub product: Option<ProductId>,
    /// The plan the customer pays for.
    pub plan: Option<PlanId>,
}

/// What a rate override applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevenueKey {
    /// Every plan of a product.
    Product(ProductId),
    /// One plan (wins over its product's override).
    Plan(PlanId),
}

/// A rate for revenue from one product or plan, instead of the plan's revenue share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateOverride {
    /// The product or plan.
    pub key: RevenueKey,
    /// The rate in percent.
    pub rate_percent: Decimal,
}

/// The share of collected revenue a partner earns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevenueShare {
    /// One rate on every payment.
    Flat {
        /// The rate in percent.
        rate_percent: Decimal,
    },
    /// The rate of the partner's level ([`TierSchedule`]).
    Tiered(TierSchedule),
}

/// The calendar period a cap applies to (local dates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapPeriod {
    /// A calendar month.
    Month,
    /// A calendar quarter.
    Quarter,
    /// A calendar year.
    Year,
}

impl CapPeriod {
    /// The period of this kind that holds `on`.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] at the end of the calendar.
    pub fn containing(self, on: NaiveDate) -> Result<Period, PartnersError> {
        let (start, months) = match self {
            CapPeriod::Month => (on.with_day(1), 1),
            CapPeriod::Quarter => {
                let first = match on.month() {
                    1..=3 => 1,
                    4..=6 => 4,
                    7..=9 => 7,
                    _ => 10,
                };
                (NaiveDate::from_ymd_opt(on.year(), first, 1), 3)
            }
            CapPeriod::Year => (NaiveDate::from_ymd_opt(on.year(), 1, 1), 12),
        };
        let start = start.ok_or(dotmac_core::CoreError::DateOutOfRange("cap period"))?;
        let end = start
            .checked_add_months(Months::new(months))
            .ok_or(dotmac_core::CoreError::DateOutOfRange("cap period"))?;
        Ok(Period::new(start, end)?)
    }
}

/// The most a partner earns in one period: accruals past it are cut to what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionCap {
    /// The period.
    pub period: CapPeriod,
    /// The most earned in one period (before a master agent's override is split off).
    pub amount: Money,
}

/// Whether commission needs an operator's approval before it is payable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// Payable once the hold period is over.
    #[default]
    Automatic,
    /// Payable once the hold period is over and an approval covers its date.
    Manual,
}

/// The terms a partner earns on. Built with [`CommissionPlan::builder`]; stored whole and
/// shared by every partner on it.
///
/// ```
/// use dotmac_core::{Currency, Money};
/// use dotmac_partners::{CapPeriod, CommissionDuration, CommissionPlan, CommissionPlanId, TierSchedule};
///
/// let usd = |s: &str| Money::parse(s, Currency::USD);
/// let plan = CommissionPlan::builder(CommissionPlanId::from_u128(1), "Resellers 2026", Currency::USD)
///     .tiered(TierSchedule::example_programme())
///     .activation_reward(usd("25.00")?)
///     .duration(CommissionDuration::Months(24))
///     .hold_days(30)
///     .min_payout(usd("50.00")?)
///     .cap(CapPeriod::Month, usd("5000.00")?)
///     .build()?;
/// assert_eq!(plan.hold_days(), 30);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PlanParts", into = "PlanParts")]
pub struct CommissionPlan {
    parts: PlanParts,
}

/// The plan's fields, as stored and as the builder collects them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PlanParts {
    id: CommissionPlanId,
    name: String,
    currency: Currency,
    revenue_share: Option<RevenueShare>,
    #[serde(default)]
    overrides: Vec<RateOverride>,
    activation: Option<Money>,
    per_cycle: Option<Money>,
    duration: CommissionDuration,
    hold_days: u32,
    min_payout: Money,
    cap: Option<CommissionCap>,
    #[serde(default)]
    approval: Approval,
}

impl TryFrom<PlanParts> for CommissionPlan {
    type Error = PartnersError;
    fn try_from(parts: PlanParts) -> Result<Self, Self::Error> {
        CommissionPlanBuilder { parts }.build()
    }
}

impl From<CommissionPlan> for PlanParts {
    fn from(plan: CommissionPlan) -> Self {
        plan.parts
    }
}

/// Collects a [`CommissionPlan`]; every setter is optional, `build` checks the whole.
#[derive(Debug, Clone)]
#[must_use]
pub struct CommissionPlanBuilder {
    parts: PlanParts,
}

impl CommissionPlan {
    /// A plan in `currency`: by default no revenue share, no rewards, for life, no hold, no
    /// minimum payout, no cap, approved automatically.
    pub fn builder(
        id: CommissionPlanId,
        name: impl Into<String>,
        currency: Currency,
    ) -> CommissionPlanBuilder {
        CommissionPlanBuilder {
            parts: PlanParts {
                id,
                name: name.into(),
                currency,
                revenue_share: None,
                overrides: Vec::new(),
                activation: None,
                per_cycle: None,
                duration: CommissionDuration::Lifetime,
                hold_days: 0,
                min_payout: Money::zero(currency),
                cap: None,
                approval: Approval::Automatic,
            },
        }
    }

    /// The id.
    pub fn id(&self) -> CommissionPlanId {
        self.parts.id
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.parts.name
    }

    /// The currency of every amount of the plan (and of the ledgers of partners on it).
    pub fn currency(&self) -> Currency {
        self.parts.currency
    }

    /// The share of collected revenue.
    pub fn revenue_share(&self) -> Option<&RevenueShare> {
        self.parts.revenue_share.as_ref()
    }

    /// The rate overrides by product or plan.
    pub fn overrides(&self) -> &[RateOverride] {
        &self.parts.overrides
    }

    /// The flat reward for an activation (paid with the customer's first payment).
    pub fn activation(&self) -> Option<Money> {
        self.parts.activation
    }

    /// The flat reward per billing cycle the customer pays in.
    pub fn per_cycle(&self) -> Option<Money> {
        self.parts.per_cycle
    }

    /// How long recurring commission runs.
    pub fn duration(&self) -> CommissionDuration {
        self.parts.duration
    }

    /// Days a movement must age before it is payable.
    pub fn hold_days(&self) -> u32 {
        self.parts.hold_days
    }

    /// The smallest payout.
    pub fn min_payout(&self) -> Money {
        self.parts.min_payout
    }

    /// The cap per period.
    pub fn cap(&self) -> Option<CommissionCap> {
        self.parts.cap
    }

    /// Whether commission needs approval.
    pub fn approval(&self) -> Approval {
        self.parts.approval
    }

    /// The override rate for revenue tagged `tag` (a plan's override wins over its
    /// product's), if any.
    pub fn override_rate(&self, tag: RevenueTag) -> Option<Decimal> {
        let find = |key: RevenueKey| {
            self.parts
                .overrides
                .iter()
                .find(|o| o.key == key)
                .map(|o| o.rate_percent)
        };
        tag.plan
            .and_then(|plan| find(RevenueKey::Plan(plan)))
            .or_else(|| {
                tag.product
                    .and_then(|product| find(RevenueKey::Product(product)))
            })
    }
}

impl CommissionPlanBuilder {
    /// A flat share of every payment.
    pub fn revenue_share(mut self, rate_percent: Decimal) -> Self {
        self.parts.revenue_share = Some(RevenueShare::Flat { rate_percent });
        self
    }

    /// A share at the rate of the partner's level.
    pub fn tiered(mut self, schedule: TierSchedule) -> Self {
        self.parts.revenue_share = Some(RevenueShare::Tiered(schedule));
        self
    }

    /// Revenue from `key` earns `rate_percent` instead.
    pub fn rate_for(mut self, key: RevenueKey, rate_percent: Decimal) -> Self {
        self.parts
            .overrides
            .push(RateOverride { key, rate_percent });
        self
    }

    /// A flat reward when a customer activates (its first payment to the partner).
    pub fn activation_reward(mut self, amount: Money) -> Self {
        self.parts.activation = Some(amount);
        self
    }

    /// A flat reward per billing cycle (a month from the referral date) the customer pays in.
    pub fn per_cycle(mut self, amount: Money) -> Self {
        self.parts.per_cycle = Some(amount);
        self
    }

    /// How long recurring commission runs.
    pub fn duration(mut self, duration: CommissionDuration) -> Self {
        self.parts.duration = duration;
        self
    }

    /// Days before a movement is payable.
    pub fn hold_days(mut self, days: u32) -> Self {
        self.parts.hold_days = days;
        self
    }

    /// The smallest payout.
    pub fn min_payout(mut self, amount: Money) -> Self {
        self.parts.min_payout = amount;
        self
    }

    /// At most `amount` earned per `period`.
    pub fn cap(mut self, period: CapPeriod, amount: Money) -> Self {
        self.parts.cap = Some(CommissionCap { period, amount });
        self
    }

    /// Whether commission needs approval.
    pub fn approval(mut self, approval: Approval) -> Self {
        self.parts.approval = approval;
        self
    }

    /// The plan.
    ///
    /// # Errors
    ///
    /// [`PartnersError::InvalidPlan`] for an empty name, a plan that earns nothing at all, a
    /// term of zero months, two overrides of one key; [`PartnersError::InvalidRate`] for a
    /// rate outside 0–100 %; [`PartnersError::NotPositive`] for a reward or cap that is not
    /// above zero or a negative minimum payout; [`PartnersError::Core`] for an amount in
    /// another currency or not in whole minor units.
    pub fn build(self) -> Result<CommissionPlan, PartnersError> {
        let p = &self.parts;
        if p.name.trim().is_empty() {
            return Err(PartnersError::InvalidPlan {
                reason: "the name is empty",
            });
        }
        if p.revenue_share.is_none() && p.activation.is_none() && p.per_cycle.is_none() {
            return Err(PartnersError::InvalidPlan {
                reason: "it earns nothing: give a revenue share or a reward",
            });
        }
        if p.duration == CommissionDuration::Months(0) {
            return Err(PartnersError::InvalidPlan {
                reason: "a term of zero months",
            });
        }
        if let Some(RevenueShare::Flat { rate_percent }) = &p.revenue_share {
            check_rate(*rate_percent)?;
        }
        for (i, o) in p.overrides.iter().enumerate() {
            check_rate(o.rate_percent)?;
            if p.overrides
                .iter()
                .take(i)
                .any(|earlier| earlier.key == o.key)
            {
                return Err(PartnersError::InvalidPlan {
                    reason: "two rate overrides for one product or plan",
                });
            }
        }
        let amounts = [
            ("activation reward", p.activation, true),
            ("per-cycle reward", p.per_cycle, true),
            ("commission cap", p.cap.map(|c| c.amount), true),
            ("minimum payout", Some(p.min_payout), false),
        ];
        for (what, amount, positive) in amounts {
            let Some(amount) = amount else { continue };
            Money::zero(p.currency).compare(&amount)?;
            if !amount.is_minor_unit_exact() {
                return Err(dotmac_core::CoreError::NotMinorUnits {
                    amount: amount.amount(),
                    currency: p.currency.code(),
                }
                .into());
            }
            if amount.is_negative() || (positive && amount.is_zero()) {
                return Err(PartnersError::NotPositive {
                    what,
                    amount: amount.amount(),
                });
            }
        }
        Ok(CommissionPlan { parts: self.parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }
    fn usd(s: &str) -> Money {
        Money::parse(s, Currency::USD).unwrap()
    }
    fn builder() -> CommissionPlanBuilder {
        CommissionPlan::builder(CommissionPlanId::from_u128(1), "Referrals", Currency::USD)
    }

    #[test]
    fn durations_count_from_the_referral() {
        let referred = day(2026, 1, 31);
        let year = CommissionDuration::Months(12);
        assert!(year.covers(referred, day(2027, 1, 30)));
        assert!(!year.covers(referred, day(2027, 1, 31)));
        assert!(!year.covers(referred, day(2026, 1, 30)));
        assert!(CommissionDuration::Lifetime.covers(referred, day(2090, 1, 1)));
    }

    #[test]
    fn cap_periods_are_calendar_periods() {
        let on = day(2026, 8, 17);
        let period = |p: CapPeriod| {
            let p = p.containing(on).unwrap();
            (p.start(), p.end())
        };
        assert_eq!(period(CapPeriod::Month), (day(2026, 8, 1), day(2026, 9, 1)));
        assert_eq!(
            period(CapPeriod::Quarter),
            (day(2026, 7, 1), day(2026, 10, 1))
        );
        assert_eq!(period(CapPeriod::Year), (day(2026, 1, 1), day(2027, 1, 1)));
    }

    #[test]
    fn plan_overrides_win_over_product_overrides() {
        let (product, plan) = (ProductId::from_u128(5), PlanId::from_u128(6));
        let p = builder()
            .revenue_share(dec!(10))
            .rate_for(RevenueKey::Product(product), dec!(15))
            .rate_for(RevenueKey::Plan(plan), dec!(20))
            .build()
            .unwrap();
        let tag = |product, plan| RevenueTag { product, plan };
        assert_eq!(
            p.override_rate(tag(Some(product), Some(plan))),
            Some(dec!(20))
        );
        assert_eq!(p.override_rate(tag(Some(product), None)), Some(dec!(15)));
        assert_eq!(p.override_rate(tag(None, None)), None);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<CommissionPlan>(&json).unwrap(), p);
    }

    #[test]
    fn bad_plans_are_refused_with_their_reason() {
        assert_eq!(
            builder().build(),
            Err(PartnersError::InvalidPlan {
                reason: "it earns nothing: give a revenue share or a reward"
            })
        );
        assert_eq!(
            builder().revenue_share(dec!(101)).build(),
            Err(PartnersError::InvalidRate(dec!(101)))
        );
        assert_eq!(
            builder()
                .revenue_share(dec!(5))
                .duration(CommissionDuration::Months(0))
                .build(),
            Err(PartnersError::InvalidPlan {
                reason: "a term of zero months"
            })
        );
        assert_eq!(
            builder().activation_reward(usd("0")).build(),
            Err(PartnersError::NotPositive {
                what: "activation reward",
                amount: dec!(0)
            })
        );
        assert!(matches!(
            builder()
                .per_cycle(Money::parse("1", Currency::EUR).unwrap())
                .build(),
            Err(PartnersError::Core(
                dotmac_core::CoreError::CurrencyMismatch { .. }
            ))
        ));
        assert!(matches!(
            builder().activation_reward(usd("1.001")).build(),
            Err(PartnersError::Core(
                dotmac_core::CoreError::NotMinorUnits { .. }
            ))
        ));
        let key = RevenueKey::Plan(PlanId::from_u128(1));
        assert_eq!(
            builder()
                .revenue_share(dec!(5))
                .rate_for(key, dec!(1))
                .rate_for(key, dec!(2))
                .build(),
            Err(PartnersError::InvalidPlan {
                reason: "two rate overrides for one product or plan"
            })
        );
    }
}
