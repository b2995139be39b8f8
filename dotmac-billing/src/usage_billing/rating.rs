//! Rating usage into invoice charges: pure functions from a closed period's aggregates to
//! [`PendingCharge`]s.
//!
//! A plan version's [`ChargeKind::Usage`] charges name a meter by its id. For each of them,
//! [`rate_period_usage`] takes the meter's aggregate over one closed billing period, subtracts
//! the allowance where one is configured ([`MeterAllowance`]: included quantity, rolled-over
//! units and top-ups), and prices the rest with the charge's [`PriceModel`] in the
//! subscription's currency, exact and unrounded (the invoice rounds the line). The charge's id
//! is derived from (subscription, plan, version, charge, period), so rating a period twice
//! yields the same [`PendingCharge`] and the store's idempotent add makes the second a no-op.
//!
//! Usage that changes after a period was billed (late events) is never put on the issued
//! invoice: [`RatedUsage::adjustment_charge`] turns the difference between the new rating and
//! what was billed into a [`LineKind::UsageAdjustment`] charge for the next invoice, and
//! [`adjustment_charge`] does the same for the [`UsageAdjustment`]s of an in-memory
//! [`UsageAggregator`](dotmac_usage::UsageAggregator).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use dotmac_core::{Currency, Money, Period, SubscriptionId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::billrun::PlanLookup;
use crate::catalog::{ChargeKind, Plan};
use crate::error::BillingError;
use crate::invoice::{LineKind, PendingCharge, PriceRef};
use crate::pricing::PriceModel;
use crate::subscription::{Segment, Subscription};
use crate::usage_billing::allowance::{AllowancePeriod, AllowancePolicy};
use dotmac_core::{IdDigest, MeterId, PendingChargeId};
use dotmac_usage::{Meter, UsageAdjustment};

/// Prices a usage quantity with a plan's pricing model (exact, unrounded): the rating step for
/// usage charges, and the `price` argument of
/// [`UsageAggregator::late_adjustments`](dotmac_usage::UsageAggregator::late_adjustments).
///
/// # Errors
///
/// The model's errors (a negative quantity, overflow).
pub fn rate(
    model: &PriceModel,
    quantity: Decimal,
    currency: Currency,
) -> Result<Money, BillingError> {
    Ok(Money::new(model.amount(quantity)?, currency))
}

/// A late-usage adjustment as a one-off charge for the customer's next invoice, without
/// plan details (see [`adjustment_charge`] for the line a subscription's plan gives it). Its id
/// is derived from the customer, meter, period and quantities, so adding it twice is a no-op.
pub fn late_usage_charge(
    adjustment: &UsageAdjustment,
    subscription: Option<SubscriptionId>,
    created_on: NaiveDate,
) -> PendingCharge {
    let id = IdDigest::new("usage-adjustment")
        .uuid(adjustment.customer.as_uuid())
        .uuid(adjustment.meter.as_uuid())
        .str(&adjustment.period_start.to_string())
        .str(&adjustment.billed_quantity.to_string())
        .str(&adjustment.actual_quantity.to_string());
    PendingCharge {
        id: PendingChargeId::derived(id),
        customer: adjustment.customer,
        subscription,
        kind: LineKind::UsageAdjustment,
        text: None,
        period: None,
        quantity: Decimal::ONE,
        unit_price: adjustment.amount,
        price: None,
        created_on,
    }
}

/// One meter's allowance for one period: the plan's policy and the customer's period (with
/// its top-ups and what rolled in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterAllowance {
    /// The policy (its meter is the meter the allowance applies to).
    pub policy: AllowancePolicy,
    /// The customer's allowance for the period.
    pub period: AllowancePeriod,
}

impl MeterAllowance {
    /// The policy's included quantity, nothing rolled in, no top-ups.
    pub fn included(
        policy: AllowancePolicy,
        customer: dotmac_core::CustomerId,
        period_start: NaiveDate,
    ) -> Self {
        let period = AllowancePeriod::open(&policy, customer, period_start, Decimal::ZERO);
        MeterAllowance { policy, period }
    }
}

/// The usage of one subscription over one closed billing period.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeriodUsage {
    /// The period's index from the subscription's anchor (as in
    /// [`BillingInterval::period`](dotmac_core::BillingInterval::period)).
    pub index: i64,
    /// Each meter's aggregate over the period; a meter without an entry used nothing.
    pub quantities: BTreeMap<MeterId, Decimal>,
    /// Allowances, at most one per meter; meters without one bill every unit.
    pub allowances: Vec<MeterAllowance>,
}

/// One usage charge of a plan rated for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RatedUsage {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// Its customer.
    pub customer: dotmac_core::CustomerId,
    /// The plan, price version and charge position it was priced with.
    pub price: PriceRef,
    /// The meter's code (the line text shows it).
    pub meter_code: String,
    /// The meter, as the charge names it.
    pub meter: MeterId,
    /// The billing period.
    pub period: Period,
    /// The period's index from the anchor.
    pub period_index: i64,
    /// The aggregate over the period.
    pub used: Decimal,
    /// The allowance (included + rolled in + top-ups); zero without one.
    pub allowance: Decimal,
    /// Units billed: what was used beyond the allowance.
    pub billable: Decimal,
    /// The exact, unrounded amount for the billable units.
    pub amount: Money,
}

/// The id of the usage charge of `subscription` for charge `price` and period `period_index`:
/// the same inputs always give the same id, so rating a period twice adds nothing.
pub fn usage_charge_id(
    subscription: SubscriptionId,
    price: PriceRef,
    period_index: i64,
) -> PendingChargeId {
    PendingChargeId::derived(
        IdDigest::new("usage-charge")
            .uuid(subscription.as_uuid())
            .uuid(price.plan.as_uuid())
            .bytes(&price.version.to_be_bytes())
            .bytes(&price.charge.to_be_bytes())
            .bytes(&period_index.to_be_bytes()),
    )
}

/// Quantity and unit price for a line whose exact amount is `amount`: the billable units at
/// `amount / units` when that division is exact (per-unit models), else one unit at the whole
/// amount, so that quantity × unit price is always exactly the rated amount.
fn line_shape(billable: Decimal, amount: Money) -> (Decimal, Money) {
    if billable.is_zero() {
        return (Decimal::ZERO, Money::zero(amount.currency()));
    }
    let unit = amount
        .amount()
        .checked_div(billable)
        .filter(|unit| unit.checked_mul(billable) == Some(amount.amount()));
    match unit {
        Some(unit) => (billable, Money::new(unit.normalize(), amount.currency())),
        None => (Decimal::ONE, amount),
    }
}

impl RatedUsage {
    /// The line's text: the meter, the quantity used and, with an allowance, what was included.
    pub fn description(&self) -> String {
        if self.allowance.is_zero() {
            format!("{}: {} used", self.meter_code, self.used.normalize())
        } else {
            format!(
                "{}: {} used, {} included, {} billed",
                self.meter_code,
                self.used.normalize(),
                self.allowance.normalize(),
                self.billable.normalize()
            )
        }
    }

    /// The rated usage as a [`LineKind::Usage`] charge for the subscription's next invoice,
    /// created on the day after the period (so it goes on the first invoice dated on or after
    /// the period's end). Its id is [`usage_charge_id`].
    pub fn pending_charge(&self) -> PendingCharge {
        let (quantity, unit_price) = line_shape(self.billable, self.amount);
        PendingCharge {
            id: usage_charge_id(self.subscription, self.price, self.period_index),
            customer: self.customer,
            subscription: Some(self.subscription),
            kind: LineKind::Usage,
            text: Some(self.description()),
            period: Some(self.period),
            quantity,
            unit_price,
            price: Some(self.price),
            created_on: self.period.end(),
        }
    }

    /// A [`LineKind::UsageAdjustment`] charge for the next invoice when this rating differs
    /// from `billed` (the exact sum already charged for this usage charge and period, on
    /// issued invoices and pending charges); `None` when they are equal. The invoice already
    /// issued is never edited. Its id is derived from the charge, the period and the new
    /// quantity and amount, so computing it again adds nothing.
    ///
    /// # Errors
    ///
    /// [`BillingError::Core`] when `billed` is in another currency.
    pub fn adjustment_charge(
        &self,
        billed: Money,
        created_on: NaiveDate,
    ) -> Result<Option<PendingCharge>, BillingError> {
        let difference = self.amount.checked_sub(billed)?;
        if difference.is_zero() {
            return Ok(None);
        }
        let id = PendingChargeId::derived(
            IdDigest::new("usage-charge-adjustment")
                .uuid(self.subscription.as_uuid())
                .uuid(self.price.plan.as_uuid())
                .bytes(&self.price.version.to_be_bytes())
                .bytes(&self.price.charge.to_be_bytes())
                .bytes(&self.period_index.to_be_bytes())
                .str(&self.used.normalize().to_string())
                .str(&difference.amount().normalize().to_string()),
        );
        Ok(Some(PendingCharge {
            id,
            customer: self.customer,
            subscription: Some(self.subscription),
            kind: LineKind::UsageAdjustment,
            text: Some(format!(
                "{} (late usage, {} to {})",
                self.description(),
                self.period.start(),
                self.period.last_day()
            )),
            period: Some(self.period),
            quantity: Decimal::ONE,
            unit_price: difference,
            price: Some(self.price),
            created_on,
        }))
    }
}

/// The segment that prices a period's usage: the one in force on the period's last day of
/// service (usage is billed in arrears, at the price in force when the period closes).
pub(crate) fn pricing_segment(sub: &Subscription, period: Period) -> Option<&Segment> {
    let last = period.last_day().min(
        sub.ends_on
            .map_or(period.last_day(), |e| e.pred_opt().unwrap_or(e)),
    );
    sub.segment_on(last.max(sub.start))
}

fn find_plan(
    plans: &(impl PlanLookup + ?Sized),
    id: dotmac_core::PlanId,
) -> Result<&Plan, BillingError> {
    plans.plan(id).ok_or(BillingError::UnknownPlan(id))
}

/// Finds the meter a usage charge names: rating needs its definition (its code for the line
/// text), and a charge whose meter is not defined is a catalogue error, not zero usage.
fn meter_for(
    meters: &[Meter],
    plan: dotmac_core::PlanId,
    meter: MeterId,
) -> Result<&Meter, BillingError> {
    meters
        .iter()
        .find(|m| m.id == meter)
        .ok_or(BillingError::UnknownMeter { plan, meter })
}

/// Prices `used` units of a meter for a subscription's period with `model`, after the
/// allowance if there is one: returns (allowance, billable units, exact amount).
fn price_used(
    model: &PriceModel,
    currency: dotmac_core::Currency,
    allowance: Option<&MeterAllowance>,
    used: Decimal,
) -> Result<(Decimal, Decimal, Money), BillingError> {
    let used = used.max(Decimal::ZERO);
    let (allowance, billable) = match allowance {
        Some(a) => (a.period.allowance()?, a.period.overage(used)?),
        None => (Decimal::ZERO, used),
    };
    Ok((
        allowance,
        billable,
        Money::new(model.amount(billable)?, currency),
    ))
}

/// Rates every usage charge of the subscription's plan version for one closed period.
///
/// The plan version is the one in force on the period's last day of service. Each usage
/// charge's meter (looked up by id in `meters`) is read from `usage.quantities` (zero when
/// absent); with a [`MeterAllowance`] for that meter only the units above the allowance are
/// billed; the billable units are priced with the charge's model in the subscription's
/// currency. A charge is returned for every usage charge, even at zero, so the invoice shows
/// what was used and included. Plans without usage charges give an empty list.
///
/// # Errors
///
/// [`BillingError::UnknownPlan`] / [`BillingError::UnknownPlanVersion`] when the catalogue
/// does not match the subscription, [`BillingError::UnknownMeter`] for a usage charge whose
/// meter is not in `meters`, [`BillingError::CurrencyNotOffered`] when the charge has no price
/// in the subscription's currency, pricing errors, and [`BillingError::Core`] for a period
/// index out of range.
pub fn rate_period_usage(
    subscription: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    meters: &[Meter],
    usage: &PeriodUsage,
) -> Result<Vec<RatedUsage>, BillingError> {
    let Some(shape) = subscription.latest_segment() else {
        return Ok(Vec::new());
    };
    let interval = find_plan(plans, shape.plan)?.interval;
    let period = interval.period(subscription.anchor, usage.index)?;
    let Some(segment) = pricing_segment(subscription, period) else {
        return Ok(Vec::new());
    };
    let plan = find_plan(plans, segment.plan)?;
    let version = plan.version(segment.version)?;
    let mut rated = Vec::new();
    for (position, charge) in version.charges.iter().enumerate() {
        let ChargeKind::Usage { meter } = &charge.kind else {
            continue;
        };
        let meter = meter_for(meters, plan.id, *meter)?;
        let model =
            charge
                .price_in(subscription.currency)
                .ok_or(BillingError::CurrencyNotOffered {
                    plan: plan.id,
                    currency: subscription.currency.code(),
                })?;
        let used = usage.quantities.get(&meter.id).copied().unwrap_or_default();
        let allowance = usage
            .allowances
            .iter()
            .find(|a| a.policy.meter() == meter.id);
        let (allowance, billable, amount) =
            price_used(model, subscription.currency, allowance, used)?;
        rated.push(RatedUsage {
            subscription: subscription.id,
            customer: subscription.customer,
            price: PriceRef {
                plan: plan.id,
                version: version.version,
                charge: u32::try_from(position).unwrap_or(u32::MAX),
            },
            meter_code: meter.code.clone(),
            meter: meter.id,
            period,
            period_index: usage.index,
            used,
            allowance,
            billable,
            amount,
        });
    }
    Ok(rated)
}

/// Turns a [`UsageAdjustment`] from [`UsageAggregator::late_adjustments`](dotmac_usage::UsageAggregator::late_adjustments)
/// into a pending charge on the subscription's next invoice, with the period and the price
/// version of the usage charge it corrects filled in (its id stays the adjustment's own, so
/// adding it twice is a no-op).
///
/// # Errors
///
/// [`BillingError::UnknownPlan`] / [`BillingError::UnknownPlanVersion`] when the catalogue
/// does not match the subscription; [`BillingError::Core`] for dates out of range.
pub fn adjustment_charge(
    adjustment: &UsageAdjustment,
    subscription: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    meters: &[Meter],
    created_on: NaiveDate,
) -> Result<PendingCharge, BillingError> {
    let mut charge = late_usage_charge(adjustment, Some(subscription.id), created_on);
    let Some(shape) = subscription.latest_segment() else {
        return Ok(charge);
    };
    let interval = find_plan(plans, shape.plan)?.interval;
    let (_, period) = interval.period_containing(subscription.anchor, adjustment.period_start)?;
    charge.period = Some(period);
    if let Some(segment) = pricing_segment(subscription, period) {
        let plan = find_plan(plans, segment.plan)?;
        let version = plan.version(segment.version)?;
        let metric = meters
            .iter()
            .find(|m| m.id == adjustment.meter)
            .map(|m| m.code.as_str());
        let position = version.charges.iter().position(
            |c| matches!(&c.kind, ChargeKind::Usage { meter } if *meter == adjustment.meter),
        );
        if let (Some(position), Some(metric)) = (position, metric) {
            charge.price = Some(PriceRef {
                plan: plan.id,
                version: version.version,
                charge: u32::try_from(position).unwrap_or(u32::MAX),
            });
            charge.text = Some(format!(
                "{metric}: late usage for {} to {}, {} used instead of {}",
                period.start(),
                period.last_day(),
                adjustment.actual_quantity.normalize(),
                adjustment.billed_quantity.normalize()
            ));
        }
    }
    Ok(charge)
}

/// The price of `used` units of `meter` for a subscription's period: the `price` argument of
/// [`UsageAggregator::late_adjustments`](dotmac_usage::UsageAggregator::late_adjustments)
/// that honours the plan version's usage charge and the allowance, so that adjustments match
/// what [`rate_period_usage`] billed.
///
/// # Errors
///
/// As [`rate_period_usage`]; [`BillingError::UnknownMeter`] when the plan version has no
/// usage charge for `meter`.
pub fn price_meter_usage(
    subscription: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    meters: &[Meter],
    period_start: NaiveDate,
    meter: MeterId,
    used: Decimal,
    allowance: Option<&MeterAllowance>,
) -> Result<Money, BillingError> {
    let Some(shape) = subscription.latest_segment() else {
        return Ok(Money::zero(subscription.currency));
    };
    let interval = find_plan(plans, shape.plan)?.interval;
    let (index, _) = interval.period_containing(subscription.anchor, period_start)?;
    let usage = PeriodUsage {
        index,
        quantities: BTreeMap::from([(meter, used)]),
        allowances: allowance.cloned().into_iter().collect(),
    };
    rate_period_usage(subscription, plans, meters, &usage)?
        .into_iter()
        .find(|r| r.meter == meter)
        .map(|r| r.amount)
        .ok_or(BillingError::UnknownMeter {
            plan: shape.plan,
            meter,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Charge, CurrencyPrice};
    use crate::pricing::{Tier, Tiers};
    use crate::subscription::NewSubscription;
    use dotmac_core::{BillingInterval, Currency, CustomerId, PlanId, ProductId};
    use dotmac_usage::Aggregation;
    use rust_decimal_macros::dec;

    fn day(m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }

    fn meters() -> Vec<Meter> {
        vec![Meter {
            id: MeterId::from_u128(9),
            code: "data_gb".into(),
            aggregation: Aggregation::Sum,
        }]
    }

    fn setup(model: PriceModel) -> (Plan, Subscription) {
        let plan = Plan::builder(PlanId::from_u128(1), ProductId::from_u128(2), "Fibre")
            .interval(BillingInterval::MONTHLY)
            .charge(Charge::recurring_flat([Money::new(
                dec!(30),
                Currency::USD,
            )]))
            .charge(Charge::usage(
                MeterId::from_u128(9),
                vec![CurrencyPrice {
                    currency: Currency::USD,
                    model,
                }],
            ))
            .build(day(1, 1))
            .unwrap();
        let sub = NewSubscription::new(CustomerId::from_u128(3), plan.id, Currency::USD, day(1, 1))
            .id(SubscriptionId::from_u128(4))
            .create(&plan, Currency::USD)
            .unwrap();
        (plan, sub)
    }

    fn usage(index: i64, gb: Decimal) -> PeriodUsage {
        PeriodUsage {
            index,
            quantities: BTreeMap::from([(MeterId::from_u128(9), gb)]),
            allowances: Vec::new(),
        }
    }

    #[test]
    fn graduated_usage_is_one_line_at_the_exact_amount() {
        let tiers = Tiers::new(vec![
            Tier {
                up_to: Some(dec!(10)),
                unit_amount: dec!(1),
                flat_amount: dec!(0),
            },
            Tier {
                up_to: None,
                unit_amount: dec!(0.3),
                flat_amount: dec!(0),
            },
        ])
        .unwrap();
        let (plan, sub) = setup(PriceModel::Graduated { tiers });
        let rated = rate_period_usage(&sub, &plan, &meters(), &usage(2, dec!(13))).unwrap();
        assert_eq!(rated.len(), 1);
        // 10 × 1 + 3 × 0.3 = 10.9, not a whole multiple of 13 units: one unit at the amount.
        assert_eq!(rated[0].amount, Money::new(dec!(10.9), Currency::USD));
        assert_eq!(rated[0].price.charge, 1);
        assert_eq!(rated[0].period.start(), day(3, 1));
        let charge = rated[0].pending_charge();
        assert_eq!(charge.quantity * charge.unit_price.amount(), dec!(10.9));
        assert_eq!(charge.created_on, day(4, 1));
        assert_eq!(charge.id, usage_charge_id(sub.id, rated[0].price, 2));
    }

    #[test]
    fn per_unit_usage_keeps_units_and_unit_price() {
        let (plan, sub) = setup(PriceModel::PerUnit {
            unit_amount: dec!(0.25),
        });
        let rated = rate_period_usage(&sub, &plan, &meters(), &usage(0, dec!(12))).unwrap();
        let charge = rated[0].pending_charge();
        assert_eq!(
            (charge.quantity, charge.unit_price.amount()),
            (dec!(12), dec!(0.25))
        );
    }

    #[test]
    fn an_undefined_meter_is_refused() {
        let (plan, sub) = setup(PriceModel::PerUnit {
            unit_amount: dec!(1),
        });
        let err = rate_period_usage(&sub, &plan, &[], &usage(0, dec!(1))).unwrap_err();
        assert_eq!(
            err,
            BillingError::UnknownMeter {
                plan: plan.id,
                meter: MeterId::from_u128(9)
            }
        );
    }

    #[test]
    fn aggregator_adjustments_become_charges_with_period_and_price() {
        let (plan, sub) = setup(PriceModel::PerUnit {
            unit_amount: dec!(0.5),
        });
        let policy =
            AllowancePolicy::new(MeterId::from_u128(9), dec!(100), Currency::USD, None, &[])
                .unwrap();
        let allowance = MeterAllowance::included(policy, sub.customer, day(3, 1));
        let price = |used| {
            price_meter_usage(
                &sub,
                &plan,
                &meters(),
                day(3, 1),
                MeterId::from_u128(9),
                used,
                Some(&allowance),
            )
            .unwrap()
        };
        assert_eq!(price(dec!(90)).amount(), dec!(0));
        assert_eq!(price(dec!(110)).amount(), dec!(5));
        let adjustment = UsageAdjustment {
            customer: sub.customer,
            meter: MeterId::from_u128(9),
            period_start: day(3, 1),
            billed_quantity: dec!(110),
            actual_quantity: dec!(114),
            amount: price(dec!(114)).checked_sub(price(dec!(110))).unwrap(),
        };
        let charge = adjustment_charge(&adjustment, &sub, &plan, &meters(), day(4, 3)).unwrap();
        assert_eq!(charge.kind, LineKind::UsageAdjustment);
        assert_eq!(charge.unit_price.amount(), dec!(2));
        assert_eq!(charge.period.map(|p| p.start()), Some(day(3, 1)));
        assert_eq!(charge.price.map(|p| p.charge), Some(1));
        assert_eq!(
            charge.id,
            late_usage_charge(&adjustment, Some(sub.id), day(4, 3)).id
        );
    }
}
