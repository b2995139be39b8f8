//! Revenue analytics: MRR and ARR by tenant and plan, monthly MRR movements that reconcile
//! exactly, churn rate and ARPU. (Receivables ageing is `dotmac-collections`'.)
//!
//! MRR normalises each recurring price to a month with the interval's conventional
//! [`BillingInterval::periods_per_year`] (365 days, 52 weeks, 12 months) divided by 12. That
//! division is not exact for weekly or daily prices, so each item's MRR is rounded once, half
//! up, to [`MRR_SCALE`] decimal places (the one rounding point here); every total and movement
//! is then an exact sum, and movements reconcile to the last decimal. Round for display with
//! [`Money::round`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use dotmac_core::{BillingInterval, Currency, CustomerId, Money, PlanId, RoundingMode, TenantId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::billrun::PlanLookup;
use crate::discount::{DiscountAmount, DiscountDuration};
use crate::error::BillingError;
use crate::subscription::{Segment, SegmentState, Subscription};

/// Decimal places each item's MRR is kept to (far below any currency's minor unit).
pub const MRR_SCALE: u32 = 10;

fn overflow(operation: &'static str) -> BillingError {
    BillingError::Core(dotmac_core::CoreError::Overflow { operation })
}

/// A recurring charge as analytics sees it: one per subscription (or subscription item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringItem {
    /// The tenant.
    pub tenant: TenantId,
    /// The customer.
    pub customer: CustomerId,
    /// The plan.
    pub plan: PlanId,
    /// The recurring price per billing period (after recurring discounts, before tax).
    pub amount: Money,
    /// The billing interval.
    pub interval: BillingInterval,
    /// The first day it is billed.
    pub active_from: NaiveDate,
    /// The first day it is no longer billed (`None`: still active).
    pub active_until: Option<NaiveDate>,
}

impl RecurringItem {
    /// True when it is billed on `date`.
    pub fn active_on(&self, date: NaiveDate) -> bool {
        self.active_from <= date && self.active_until.is_none_or(|until| date < until)
    }

    /// Its monthly recurring revenue.
    ///
    /// # Errors
    ///
    /// [`BillingError::Core`] with an overflow when the amount normalised to a year does not
    /// fit in a `Decimal`.
    pub fn mrr(&self) -> Result<Decimal, BillingError> {
        let monthly = self
            .amount
            .amount()
            .checked_mul(self.interval.periods_per_year())
            .and_then(|yearly| yearly.checked_div(Decimal::from(12)))
            .ok_or_else(|| overflow("MRR"))?;
        Ok(RoundingMode::HalfUp.round_decimal(monthly, MRR_SCALE))
    }
}

/// MRR at a date, with its breakdowns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MrrReport {
    /// The date.
    pub on: NaiveDate,
    /// Total MRR.
    pub total: Money,
    /// MRR per tenant.
    pub by_tenant: BTreeMap<TenantId, Money>,
    /// MRR per tenant and plan.
    pub by_plan: BTreeMap<(TenantId, PlanId), Money>,
    /// Customers with MRR above zero.
    pub paying_customers: usize,
}

impl MrrReport {
    /// Annual recurring revenue: MRR × 12.
    ///
    /// # Errors
    ///
    /// [`BillingError::Core`] with an overflow when MRR × 12 does not fit in a `Decimal`.
    pub fn arr(&self) -> Result<Money, BillingError> {
        Ok(self.total.checked_mul(Decimal::from(12))?)
    }

    /// Average revenue per paying customer (MRR / paying customers); `None` without any.
    pub fn arpu(&self) -> Option<Money> {
        let customers = Decimal::from(self.paying_customers);
        // Dividing by a count of at least 1 cannot overflow; zero customers give `None`.
        self.total
            .amount()
            .checked_div(customers)
            .map(|average| Money::new(average, self.total.currency()))
    }
}

fn same_currency(item: &RecurringItem, currency: Currency) -> Result<(), BillingError> {
    if item.amount.currency() == currency {
        Ok(())
    } else {
        Err(BillingError::WrongCurrency {
            what: "recurring item",
            expected: currency.code(),
            got: item.amount.currency().code(),
        })
    }
}

fn mrr_by_customer(
    items: &[RecurringItem],
    on: NaiveDate,
    currency: Currency,
) -> Result<BTreeMap<(TenantId, CustomerId), Decimal>, BillingError> {
    let mut by_customer = BTreeMap::new();
    for item in items {
        same_currency(item, currency)?;
        if item.active_on(on) {
            let mrr = item.mrr()?;
            let sum = by_customer
                .entry((item.tenant, item.customer))
                .or_insert(Decimal::ZERO);
            *sum = sum.checked_add(mrr).ok_or_else(|| overflow("MRR"))?;
        }
    }
    Ok(by_customer)
}

/// MRR on `on` of every item in `currency`.
///
/// # Errors
///
/// [`BillingError::WrongCurrency`] for an item in another currency (report each currency
/// separately).
pub fn mrr_at(
    items: &[RecurringItem],
    on: NaiveDate,
    currency: Currency,
) -> Result<MrrReport, BillingError> {
    let mut total = Decimal::ZERO;
    let mut by_tenant: BTreeMap<TenantId, Decimal> = BTreeMap::new();
    let mut by_plan: BTreeMap<(TenantId, PlanId), Decimal> = BTreeMap::new();
    for item in items {
        same_currency(item, currency)?;
        if item.active_on(on) {
            let mrr = item.mrr()?;
            let add = |sum: &mut Decimal| {
                *sum = sum.checked_add(mrr).ok_or_else(|| overflow("MRR"))?;
                Ok::<(), BillingError>(())
            };
            add(&mut total)?;
            add(by_tenant.entry(item.tenant).or_default())?;
            add(by_plan.entry((item.tenant, item.plan)).or_default())?;
        }
    }
    let paying_customers = mrr_by_customer(items, on, currency)?
        .values()
        .filter(|m| m.is_sign_positive() && !m.is_zero())
        .count();
    let money = |d: Decimal| Money::new(d, currency);
    Ok(MrrReport {
        on,
        total: money(total),
        by_tenant: by_tenant.into_iter().map(|(k, v)| (k, money(v))).collect(),
        by_plan: by_plan.into_iter().map(|(k, v)| (k, money(v))).collect(),
        paying_customers,
    })
}

/// How MRR moved between two dates, per customer, classified.
///
/// `end − start = new + reactivation + expansion − contraction − churn`, exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MrrMovements {
    /// MRR at the start.
    pub start: Money,
    /// MRR at the end.
    pub end: Money,
    /// From customers that never had MRR before the start.
    pub new: Money,
    /// From customers that had MRR before but none at the start.
    pub reactivation: Money,
    /// Growth of customers paying at both dates.
    pub expansion: Money,
    /// Shrinkage of customers paying at both dates (a positive amount).
    pub contraction: Money,
    /// MRR of customers paying at the start and not at the end (a positive amount).
    pub churn: Money,
    /// Customers paying at the start.
    pub customers_at_start: usize,
    /// Of those, customers not paying at the end.
    pub churned_customers: usize,
}

impl MrrMovements {
    /// Logo churn rate: churned customers / customers at the start; `None` without any.
    pub fn churn_rate(&self) -> Option<Decimal> {
        // A count divided by a count of at least 1 cannot overflow; zero gives `None`.
        Decimal::from(self.churned_customers).checked_div(Decimal::from(self.customers_at_start))
    }

    /// True when the movements add up to the MRR difference (false when either side does not
    /// fit in a `Decimal`).
    pub fn reconciles(&self) -> bool {
        let difference = self.end.checked_sub(self.start);
        let moved = self
            .new
            .checked_add(self.reactivation)
            .and_then(|m| m.checked_add(self.expansion))
            .and_then(|m| m.checked_sub(self.contraction))
            .and_then(|m| m.checked_sub(self.churn));
        matches!((difference, moved), (Ok(d), Ok(m)) if d == m)
    }
}

/// MRR movements from `start` to `end` (for a month: its first day and the next month's).
///
/// # Errors
///
/// [`BillingError::WrongCurrency`] for an item in another currency;
/// [`BillingError::InvalidConfiguration`] when `end` is before `start`.
pub fn mrr_movements(
    items: &[RecurringItem],
    start: NaiveDate,
    end: NaiveDate,
    currency: Currency,
) -> Result<MrrMovements, BillingError> {
    if end < start {
        return Err(BillingError::InvalidConfiguration {
            what: "MRR movement window",
            reason: "the end is before the start",
        });
    }
    let before = mrr_by_customer(items, start, currency)?;
    let after = mrr_by_customer(items, end, currency)?;
    let paid_before_start: BTreeSet<(TenantId, CustomerId)> = items
        .iter()
        .filter(|i| i.active_from < start && i.mrr().is_ok_and(|mrr| mrr > Decimal::ZERO))
        .map(|i| (i.tenant, i.customer))
        .collect();
    let customers: BTreeSet<_> = before.keys().chain(after.keys()).copied().collect();
    let mut m = [Decimal::ZERO; 5]; // new, reactivation, expansion, contraction, churn
    let (mut at_start, mut churned) = (0, 0);
    for customer in customers {
        let was = before.get(&customer).copied().unwrap_or_default();
        let now = after.get(&customer).copied().unwrap_or_default();
        let (was_paying, is_paying) = (was > Decimal::ZERO, now > Decimal::ZERO);
        // Counts of customers held in memory: cannot reach usize::MAX.
        if was_paying {
            at_start = usize::saturating_add(at_start, 1);
        }
        let slot = match (was_paying, is_paying) {
            (false, true) if paid_before_start.contains(&customer) => 1,
            (false, true) => 0,
            (true, false) => {
                churned = usize::saturating_add(churned, 1);
                4
            }
            (true, true) if now > was => 2,
            (true, true) if now < was => 3,
            _ => continue,
        };
        if let Some(bucket) = m.get_mut(slot) {
            *bucket = now
                .checked_sub(was)
                .and_then(|change| bucket.checked_add(change.abs()))
                .ok_or_else(|| overflow("MRR movements"))?;
        }
    }
    let money = |d: Decimal| Money::new(d, currency);
    let total = |map: &BTreeMap<_, Decimal>| {
        Ok::<_, BillingError>(money(dotmac_core::checked_sum(
            map.values().copied(),
            "MRR",
        )?))
    };
    let [new, reactivation, expansion, contraction, churn] = m;
    Ok(MrrMovements {
        start: total(&before)?,
        end: total(&after)?,
        new: money(new),
        reactivation: money(reactivation),
        expansion: money(expansion),
        contraction: money(contraction),
        churn: money(churn),
        customers_at_start: at_start,
        churned_customers: churned,
    })
}

/// The recurring price per period of one billable segment, after the subscription's
/// `forever` discounts (applied in order, as on an invoice: a percentage of what is left, a
/// fixed amount up to what is left). Once-only and limited-period discounts are promotions, not
/// recurring revenue, and are left out.
fn segment_amount(
    sub: &Subscription,
    segment: &Segment,
    plans: &(impl PlanLookup + ?Sized),
) -> Result<Money, BillingError> {
    let plan = plans
        .plan(segment.plan)
        .ok_or(BillingError::UnknownPlan(segment.plan))?;
    let mut amount =
        plan.version(segment.version)?
            .recurring_amount(plan.id, sub.currency, segment.quantity)?;
    for applied in sub
        .discounts
        .iter()
        .filter(|d| d.discount.duration == DiscountDuration::Forever)
    {
        let off = match applied.discount.amount {
            DiscountAmount::Percentage(p) => Money::new(
                crate::pricing::percent_of(amount.amount(), p)?,
                sub.currency,
            ),
            DiscountAmount::Fixed(fixed) => fixed.min(amount)?.max(Money::zero(sub.currency))?,
        };
        amount = amount.checked_sub(off)?;
    }
    Ok(amount)
}

/// The [`RecurringItem`]s of billing subscriptions: one per billable segment (a plan version
/// at a quantity, from a date), priced with
/// `plan.version(v)?.recurring_amount(plan.id, currency, quantity)` after `forever` discounts,
/// active from the segment's start (or the end of the trial) until the next segment starts or
/// the subscription ends. Paused segments and trial days bring no MRR, and neither does a
/// suspended subscription from the first day of its suspension, under every
/// [`SuspensionBilling`](crate::SuspensionBilling) policy (even one that keeps billing it);
/// usage charges are not recurring revenue. Feed the result to [`mrr_at`] or
/// [`mrr_movements`] for any date.
///
/// # Errors
///
/// [`BillingError::UnknownPlan`] / [`BillingError::UnknownPlanVersion`] when `plans` does not
/// hold a subscription's plan, [`BillingError::CurrencyNotOffered`] and pricing errors.
pub fn recurring_items(
    tenant: TenantId,
    subscriptions: &[Subscription],
    plans: &(impl PlanLookup + ?Sized),
) -> Result<Vec<RecurringItem>, BillingError> {
    let mut items = Vec::new();
    for sub in subscriptions {
        let billing_start = sub.billing_start();
        // A suspended subscription's revenue stops when its suspension starts.
        let suspended = match sub.status {
            crate::SubscriptionStatus::Suspended => sub.suspended_since,
            _ => None,
        };
        let stops = match (sub.ends_on, suspended) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (i, segment) in sub.segments.iter().enumerate() {
            if segment.state == SegmentState::Paused {
                continue;
            }
            let next = sub.segments.get(i.saturating_add(1)).map(|n| n.from);
            let until = match (next, stops) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let from = segment.from.max(billing_start);
            if until.is_some_and(|until| until <= from) {
                continue;
            }
            let plan = plans
                .plan(segment.plan)
                .ok_or(BillingError::UnknownPlan(segment.plan))?;
            items.push(RecurringItem {
                tenant,
                customer: sub.customer,
                plan: segment.plan,
                amount: segment_amount(sub, segment, plans)?,
                interval: plan.interval,
                active_from: from,
                active_until: until,
            });
        }
    }
    Ok(items)
}

/// The [`RecurringItem`]s of billing subscriptions in force on `on` (see
/// [`recurring_items`]): at most one per subscription, the segment of `on`
/// ([`Subscription::segment_on`]) when it is billable and the subscription is in service and
/// out of its trial.
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_billing::analytics::{mrr_at, recurring_items_on};
/// use dotmac_billing::{Charge, NewSubscription, Plan};
/// use dotmac_core::{BillingInterval, Currency, CustomerId, Money, PlanId, ProductId, TenantId};
/// use rust_decimal::Decimal;
///
/// let jan = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
/// let plan = Plan::builder(PlanId::new(), ProductId::new(), "Fibre 1G yearly")
///     .interval(BillingInterval::YEARLY)
///     .charge(Charge::recurring_flat([Money::parse("600.00", Currency::USD)?]))
///     .build(jan)?;
/// let sub = NewSubscription::new(CustomerId::new(), plan.id, Currency::USD, jan)
///     .create(&plan, Currency::USD)?;
/// let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
/// let items = recurring_items_on(TenantId::new(), &[sub], &plan, march)?;
/// let report = mrr_at(&items, march, Currency::USD)?;
/// assert_eq!(report.total.amount(), Decimal::from(50)); // 600 / 12
/// assert_eq!(report.arr()?.amount(), Decimal::from(600));
/// # Ok::<(), dotmac_billing::BillingError>(())
/// ```
///
/// # Errors
///
/// As [`recurring_items`].
pub fn recurring_items_on(
    tenant: TenantId,
    subscriptions: &[Subscription],
    plans: &(impl PlanLookup + ?Sized),
    on: NaiveDate,
) -> Result<Vec<RecurringItem>, BillingError> {
    let mut items = recurring_items(tenant, subscriptions, plans)?;
    items.retain(|item| item.active_on(on));
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn item(customer: u128, amount: Decimal, from: &str, until: Option<&str>) -> RecurringItem {
        RecurringItem {
            tenant: TenantId::from_u128(1),
            customer: CustomerId::from_u128(customer),
            plan: PlanId::from_u128(1),
            amount: Money::new(amount, Currency::USD),
            interval: BillingInterval::MONTHLY,
            active_from: d(from),
            active_until: until.map(d),
        }
    }

    #[test]
    fn movements_classify_and_reconcile() {
        let mut yearly = item(5, dec!(120), "2026-01-01", None);
        yearly.interval = BillingInterval::YEARLY;
        let items = vec![
            item(1, dec!(30), "2026-01-01", Some("2026-03-10")), // churns in March
            item(2, dec!(40), "2026-01-01", Some("2026-03-15")), // upgrades in March
            item(2, dec!(60), "2026-03-15", None),
            item(3, dec!(50), "2026-03-05", None), // new
            item(4, dec!(20), "2026-01-01", Some("2026-02-01")), // gone before March…
            item(4, dec!(25), "2026-03-20", None), // …and back: reactivation
            yearly,                                // 10 a month, unchanged
        ];
        let m = mrr_movements(&items, d("2026-03-01"), d("2026-04-01"), Currency::USD).unwrap();
        assert_eq!(m.start.amount(), dec!(80));
        assert_eq!(m.end.amount(), dec!(145));
        assert_eq!(m.new.amount(), dec!(50));
        assert_eq!(m.reactivation.amount(), dec!(25));
        assert_eq!(m.expansion.amount(), dec!(20));
        assert_eq!(m.churn.amount(), dec!(30));
        assert!(m.reconciles());
        assert_eq!(m.churn_rate(), Some(dec!(1) / dec!(3)));
        let report = mrr_at(&items, d("2026-04-01"), Currency::USD).unwrap();
        assert_eq!(report.total.amount(), dec!(145));
        assert_eq!(report.arr().unwrap().amount(), dec!(1740));
        assert_eq!(report.arpu().unwrap().amount(), dec!(145) / dec!(4));
    }

    #[test]
    fn no_suspended_subscription_counts_in_mrr_under_any_policy() {
        use crate::{Charge, NewSubscription, Plan, SuspensionBilling, suspend};
        let plan = Plan::builder(
            PlanId::from_u128(1),
            dotmac_core::ProductId::from_u128(1),
            "Fibre",
        )
        .charge(Charge::recurring_flat([Money::from_minor(
            3000,
            Currency::USD,
        )]))
        .build(d("2026-01-01"))
        .unwrap();
        let tenant = TenantId::from_u128(1);
        let sub = |n: u128| {
            NewSubscription::new(
                CustomerId::from_u128(n),
                plan.id,
                Currency::USD,
                d("2026-01-01"),
            )
            .id(dotmac_core::SubscriptionId::from_u128(n))
            .create(&plan, Currency::USD)
            .unwrap()
        };
        for policy in [
            SuspensionBilling::KeepBilling,
            SuspensionBilling::CreditSuspendedDays,
            SuspensionBilling::PauseBilling,
        ] {
            let billed = crate::bill_due(&sub(1), &plan, &[], d("2026-03-01"), &Default::default())
                .unwrap()
                .subscription;
            let suspended = suspend(&billed, &plan, d("2026-03-10"), policy, &Default::default())
                .unwrap()
                .unwrap()
                .subscription;
            let items = recurring_items(tenant, &[suspended, sub(2)], &plan).unwrap();
            let before = mrr_at(&items, d("2026-03-09"), Currency::USD).unwrap();
            let after = mrr_at(&items, d("2026-03-10"), Currency::USD).unwrap();
            assert_eq!(before.total.amount(), dec!(60), "{policy:?}");
            assert_eq!(after.total.amount(), dec!(30), "{policy:?}");
            assert_eq!(after.paying_customers, 1, "{policy:?}");
        }
    }

    #[test]
    fn wrong_currency_is_refused() {
        let mut euro = item(1, dec!(10), "2026-01-01", None);
        euro.amount = Money::new(dec!(10), Currency::EUR);
        assert_eq!(
            mrr_at(&[euro], d("2026-02-01"), Currency::USD),
            Err(BillingError::WrongCurrency {
                what: "recurring item",
                expected: "USD",
                got: "EUR"
            })
        );
    }

    #[test]
    fn revenue_figures_that_overflow_are_errors_not_panics() {
        let overflow =
            |operation| BillingError::Core(dotmac_core::CoreError::Overflow { operation });
        // Daily at Decimal::MAX: × 365 does not fit.
        let mut daily = item(1, Decimal::MAX, "2026-01-01", None);
        daily.interval = BillingInterval::new(dotmac_core::IntervalUnit::Day, 1).unwrap();
        assert_eq!(daily.mrr(), Err(overflow("MRR")));
        // Two monthly items at MAX: their sum does not fit.
        // Monthly at MAX: × 12 before ÷ 12 does not fit either.
        assert_eq!(
            item(1, Decimal::MAX, "2026-01-01", None).mrr(),
            Err(overflow("MRR"))
        );
        // Thirteen monthly items at MAX / 12: each fits, their sum does not.
        let twelfth = Decimal::MAX / Decimal::from(12);
        let items: Vec<_> = (1..=13)
            .map(|c| item(c, twelfth, "2026-01-01", None))
            .collect();
        assert_eq!(
            mrr_at(&items, d("2026-02-01"), Currency::USD),
            Err(overflow("MRR"))
        );
        let report = mrr_at(&items[..12], d("2026-02-01"), Currency::USD).unwrap();
        assert_eq!(report.arr(), Err(overflow("multiply")));
    }
}
