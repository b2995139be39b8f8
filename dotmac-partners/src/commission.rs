//! What a payment earns: the plan's revenue share (flat, by product or plan, or at the
//! partner's tier), its flat rewards, the cap, and the split with a master agent. Pure
//! functions over the plan, the partner's ledger and the facts the ledger does not hold.

use chrono::{Datelike, Months, NaiveDate};
use dotmac_core::{CustomerId, Money, PaymentId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{PartnersError, overflow};
use crate::ids::PartnerId;
use crate::ledger::{Accrual, Component, PartnerLedger, Share, round_commission, split_commission};
use crate::partner::MasterOverride;
use crate::plan::{CommissionPlan, RevenueShare, RevenueTag};
use crate::tiers::{TierBasis, TierMode, TierSchedule, percent_of};

/// A payment a customer made, as the partners domain takes it (collections' payment events
/// carry these facts; no collections type is needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectedPayment {
    /// Who paid.
    pub customer: CustomerId,
    /// The payment.
    pub payment: PaymentId,
    /// How much.
    pub amount: Money,
    /// The day it was collected.
    pub on: NaiveDate,
    /// What it paid for, when known (plan and product overrides apply).
    pub tag: RevenueTag,
}

/// Money a customer got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundedPayment {
    /// Who was refunded.
    pub customer: CustomerId,
    /// The refund.
    pub refund: PaymentId,
    /// The payment refunded, when known; otherwise the customer's most recent payments first.
    pub payment: Option<PaymentId>,
    /// How much.
    pub amount: Money,
    /// The day.
    pub on: NaiveDate,
}

/// What the partner's ledger does not hold about a payment: when the customer was referred
/// (terms count from then), and for a schedule by active customers, the partner's count on
/// the day and the customer's rank among them (1 = referred first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// The day the customer was first attributed.
    pub referred_on: NaiveDate,
    /// The partner's customers on the payment's day.
    pub active_customers: u64,
    /// This customer's rank among them.
    pub customer_rank: u64,
}

/// One part of what a payment earns, before a master agent's split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Earning {
    /// The part of the plan.
    pub component: Component,
    /// The payment's amount.
    pub base: Money,
    /// The rate of a revenue share.
    pub rate_percent: Option<Decimal>,
    /// The tier that priced it.
    pub tier: Option<String>,
    /// Before the cap.
    pub uncapped: Money,
    /// After the cap.
    pub gross: Money,
}

/// The billing cycle (months from the referral) that holds `on`.
fn cycle_of(referred_on: NaiveDate, on: NaiveDate) -> Result<u32, PartnersError> {
    let months = on
        .year()
        .checked_sub(referred_on.year())
        .and_then(|years| years.checked_mul(12))
        .and_then(|m| m.checked_add(i32::try_from(on.month()).ok()?))
        .and_then(|m| m.checked_sub(i32::try_from(referred_on.month()).ok()?))
        .ok_or_else(|| overflow("billing cycle"))?;
    let mut cycle = u32::try_from(months.max(0)).map_err(|_| overflow("billing cycle"))?;
    // A payment before the anchor day of its month belongs to the cycle before.
    while cycle > 0
        && referred_on
            .checked_add_months(Months::new(cycle))
            .is_none_or(|start| start > on)
    {
        cycle = cycle.saturating_sub(1);
    }
    Ok(cycle)
}

/// The rate, tier and exact commission of a revenue share priced by `schedule`.
fn tiered(
    schedule: &TierSchedule,
    ledger: &PartnerLedger,
    standing: &Standing,
    payment: &CollectedPayment,
) -> Result<(Decimal, Option<String>, Decimal), PartnersError> {
    let amount = payment.amount.amount();
    let tiers = schedule.tiers();
    let level = |measure: Decimal| {
        tiers.tier_reached(measure).and_then(|i| {
            Some((
                tiers.tiers().get(i)?.rate_percent,
                schedule.name(i)?.to_owned(),
            ))
        })
    };
    let revenue = |from: Option<NaiveDate>| -> Result<Decimal, PartnersError> {
        Ok(ledger.own_revenue(from, payment.on)?.amount())
    };
    let measure = match schedule.basis() {
        TierBasis::LifetimeRevenue => Some(revenue(None)?),
        TierBasis::TrailingRevenue { months } => {
            let from = payment
                .on
                .checked_sub_months(Months::new(months))
                .and_then(|d| d.succ_opt());
            Some(revenue(from)?)
        }
        _ => None,
    };
    match (measure, tiers.mode()) {
        (Some(before), TierMode::Marginal) => {
            let after = before
                .checked_add(amount)
                .ok_or_else(|| overflow("tier measure"))?;
            let exact = tiers.increment(before, after)?;
            let blended = exact
                .checked_mul(Decimal::ONE_HUNDRED)
                .and_then(|x| x.checked_div(amount))
                .ok_or_else(|| overflow("blended rate"))?
                .round_dp(4)
                .normalize();
            Ok((blended, level(after).map(|(_, n)| n), exact))
        }
        (Some(before), _) => {
            let after = before
                .checked_add(amount)
                .ok_or_else(|| overflow("tier measure"))?;
            let (rate, name) = level(after).unzip();
            let rate = rate.unwrap_or(Decimal::ZERO);
            Ok((rate, name, percent_of(amount, rate)?))
        }
        (None, mode) => {
            // Active customers: the count, or in marginal mode the customers before this one.
            let measure = match mode {
                TierMode::Marginal => standing.customer_rank.saturating_sub(1),
                _ => standing.active_customers,
            };
            let (rate, name) = level(Decimal::from(measure)).unzip();
            let rate = rate.unwrap_or(Decimal::ZERO);
            Ok((rate, name, percent_of(amount, rate)?))
        }
    }
}

/// What `payment` earns on `plan`, given the partner's `ledger` and `standing`: one revenue
/// share (recorded even at rate 0, outside the term: refunds of it then take nothing back),
/// the activation reward with the customer's first payment here, and one per-cycle reward per
/// billing cycle, each cut to what the plan's cap leaves in the payment's period.
///
/// The tier measure is taken before the payment: a revenue schedule in retroactive mode prices
/// the whole payment at the level the partner reaches with it; in marginal mode each part of
/// the payment at its band's rate. Past payments are never re-priced (their commission is
/// fixed when it accrues, so a refund takes back exactly that).
///
/// # Errors
///
/// [`PartnersError::NotPositive`] for a payment not above zero, [`PartnersError::Core`] for a
/// payment in another currency than the plan's, or an overflow.
pub fn price_payment(
    plan: &CommissionPlan,
    ledger: &PartnerLedger,
    standing: &Standing,
    payment: &CollectedPayment,
) -> Result<Vec<Earning>, PartnersError> {
    let currency = plan.currency();
    let zero = Money::zero(currency);
    zero.compare(&payment.amount)?;
    zero.compare(&Money::zero(ledger.currency()))?;
    if !payment.amount.is_positive() {
        return Err(PartnersError::NotPositive {
            what: "payment",
            amount: payment.amount.amount(),
        });
    }
    let in_term = plan.duration().covers(standing.referred_on, payment.on);
    let (rate, tier, exact) = if !in_term {
        (Decimal::ZERO, None, Decimal::ZERO)
    } else if let Some(rate) = plan.override_rate(payment.tag) {
        (rate, None, percent_of(payment.amount.amount(), rate)?)
    } else {
        match plan.revenue_share() {
            None => (Decimal::ZERO, None, Decimal::ZERO),
            Some(RevenueShare::Flat { rate_percent }) => (
                *rate_percent,
                None,
                percent_of(payment.amount.amount(), *rate_percent)?,
            ),
            Some(RevenueShare::Tiered(schedule)) => tiered(schedule, ledger, standing, payment)?,
        }
    };
    let mut earnings = vec![Earning {
        component: Component::RevenueShare,
        base: payment.amount,
        rate_percent: Some(rate),
        tier,
        uncapped: round_commission(Money::new(exact, currency)),
        gross: zero,
    }];
    if let Some(reward) = plan.activation()
        && !ledger.has_activation(payment.customer)
    {
        earnings.push(Earning {
            component: Component::Activation,
            base: payment.amount,
            rate_percent: None,
            tier: None,
            uncapped: reward,
            gross: zero,
        });
    }
    if let Some(reward) = plan.per_cycle()
        && in_term
    {
        let cycle = cycle_of(standing.referred_on, payment.on)?;
        if !ledger.has_cycle(payment.customer, cycle) {
            earnings.push(Earning {
                component: Component::PerCycle { cycle },
                base: payment.amount,
                rate_percent: None,
                tier: None,
                uncapped: reward,
                gross: zero,
            });
        }
    }
    let mut room = match plan.cap() {
        Some(cap) => {
            let used = ledger.own_gross_in(cap.period.containing(payment.on)?)?;
            Some(cap.amount.checked_sub(used)?.max(zero)?)
        }
        None => None,
    };
    for earning in &mut earnings {
        earning.gross = match room {
            Some(left) => {
                let gross = earning.uncapped.min(left)?;
                room = Some(left.checked_sub(gross)?);
                gross
            }
            None => earning.uncapped,
        };
    }
    Ok(earnings)
}

/// The accruals `earnings` make: all in the earning partner's ledger, or for a sub-agent, its
/// part there and its master's override in the master's ledger (parts that sum exactly to each
/// earning's gross).
///
/// # Errors
///
/// The allocation errors of [`split_commission`].
pub fn share_out(
    earnings: &[Earning],
    customer: CustomerId,
    payment: PaymentId,
    earner: PartnerId,
    master: Option<MasterOverride>,
) -> Result<(Vec<Accrual>, Vec<Accrual>), PartnersError> {
    let accrual = |e: &Earning, commission: Money, share: Share| Accrual {
        customer,
        payment,
        component: e.component,
        base: e.base,
        rate_percent: e.rate_percent,
        tier: e.tier.clone(),
        uncapped: e.uncapped,
        gross: e.gross,
        commission,
        share,
    };
    let mut own = Vec::with_capacity(earnings.len());
    let mut overrides = Vec::new();
    for earning in earnings {
        match master {
            None => own.push(accrual(earning, earning.gross, Share::Direct)),
            Some(link) => {
                let sub_weight = Decimal::ONE_HUNDRED
                    .checked_sub(link.override_percent())
                    .ok_or_else(|| overflow("split"))?;
                let parts = if earning.gross.is_zero() {
                    vec![(earner, earning.gross), (link.master(), earning.gross)]
                } else {
                    split_commission(
                        earning.gross,
                        &[
                            (earner, sub_weight),
                            (link.master(), link.override_percent()),
                        ],
                    )?
                };
                let part = |i: usize| parts.get(i).map_or(earning.gross, |(_, m)| *m);
                own.push(accrual(
                    earning,
                    part(0),
                    Share::SubAgent {
                        master: link.master(),
                    },
                ));
                overrides.push(accrual(
                    earning,
                    part(1),
                    Share::MasterOverride { sub_agent: earner },
                ));
            }
        }
    }
    Ok((own, overrides))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CommissionPlanId;
    use crate::plan::{CapPeriod, CommissionDuration, RevenueKey};
    use crate::tiers::{CommissionTier, CommissionTiers};
    use dotmac_core::{Currency, PlanId};
    use rust_decimal_macros::dec;

    use crate::test_support::{CUSTOMER, day, payment as pay, usd};

    fn standing() -> Standing {
        Standing {
            referred_on: day(1, 31),
            active_customers: 1,
            customer_rank: 1,
        }
    }

    fn builder() -> crate::plan::CommissionPlanBuilder {
        CommissionPlan::builder(CommissionPlanId::from_u128(1), "p", Currency::USD)
    }

    fn record(
        plan: &CommissionPlan,
        ledger: &mut PartnerLedger,
        payment: CollectedPayment,
    ) -> Vec<Earning> {
        crate::test_support::record(plan, ledger, &standing(), payment)
    }

    #[test]
    fn cycles_count_months_from_the_referral() {
        assert_eq!(cycle_of(day(1, 31), day(2, 27)).unwrap(), 0);
        assert_eq!(cycle_of(day(1, 31), day(2, 28)).unwrap(), 1);
        assert_eq!(cycle_of(day(1, 31), day(3, 30)).unwrap(), 1);
        assert_eq!(cycle_of(day(1, 31), day(3, 31)).unwrap(), 2);
        assert_eq!(cycle_of(day(1, 15), day(1, 20)).unwrap(), 0);
    }

    #[test]
    fn rewards_come_once_per_activation_and_per_cycle_inside_the_term() {
        let plan = builder()
            .revenue_share(dec!(10))
            .activation_reward(usd("25"))
            .per_cycle(usd("2"))
            .duration(CommissionDuration::Months(2))
            .build()
            .unwrap();
        let mut l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        let kinds = |e: &[Earning]| e.iter().map(|e| (e.component, e.gross)).collect::<Vec<_>>();
        let first = record(&plan, &mut l, pay(1, "30", day(2, 1)));
        assert_eq!(
            kinds(&first),
            vec![
                (Component::RevenueShare, usd("3")),
                (Component::Activation, usd("25")),
                (Component::PerCycle { cycle: 0 }, usd("2")),
            ]
        );
        // Same cycle: the share only.
        let second = record(&plan, &mut l, pay(2, "30", day(2, 20)));
        assert_eq!(kinds(&second), vec![(Component::RevenueShare, usd("3"))]);
        // Past the two-month term: the share at rate 0 and no cycle reward.
        let late = record(&plan, &mut l, pay(3, "30", day(3, 31)));
        assert_eq!(kinds(&late), vec![(Component::RevenueShare, usd("0"))]);
        assert_eq!(late[0].rate_percent, Some(dec!(0)));
    }

    #[test]
    fn plan_overrides_and_caps_apply() {
        let premium = PlanId::from_u128(5);
        let plan = builder()
            .revenue_share(dec!(10))
            .rate_for(RevenueKey::Plan(premium), dec!(20))
            .cap(CapPeriod::Month, usd("25"))
            .build()
            .unwrap();
        let mut l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        let mut p = pay(1, "100", day(2, 1));
        p.tag.plan = Some(premium);
        assert_eq!(record(&plan, &mut l, p)[0].gross, usd("20"));
        // 10 % of 100 is 10, but only 5 is left of February's cap.
        let capped = record(&plan, &mut l, pay(2, "100", day(2, 2)));
        assert_eq!((capped[0].uncapped, capped[0].gross), (usd("10"), usd("5")));
        assert_eq!(
            record(&plan, &mut l, pay(3, "100", day(2, 3)))[0].gross,
            usd("0")
        );
        // March is a new period.
        assert_eq!(
            record(&plan, &mut l, pay(4, "100", day(3, 1)))[0].gross,
            usd("10")
        );
    }

    #[test]
    fn tiers_price_by_lifetime_revenue_marginally_or_retroactively() {
        let tier = |from: i64, rate: i64| CommissionTier {
            from: from.into(),
            rate_percent: rate.into(),
        };
        let schedule = |mode| {
            TierSchedule::new(
                TierBasis::LifetimeRevenue,
                CommissionTiers::new(mode, vec![tier(0, 5), tier(100, 10)]).unwrap(),
                vec!["bronze".into(), "silver".into()],
            )
            .unwrap()
        };
        for (mode, expect) in [
            // 80 at 5 % = 4; then 20 at 5 % + 20 at 10 % = 3; then 40 at 10 % = 4.
            (TierMode::Marginal, ["4", "3", "4"]),
            // 80 at 5 %; then 40 reaching silver, all at 10 %; then 40 at 10 %.
            (TierMode::Retroactive, ["4", "4", "4"]),
        ] {
            let plan = builder().tiered(schedule(mode)).build().unwrap();
            let mut l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
            let got: Vec<Money> = [("80", 1), ("40", 2), ("40", 3)]
                .iter()
                .map(|(amount, n)| record(&plan, &mut l, pay(*n, amount, day(2, 1)))[0].gross)
                .collect();
            assert_eq!(got, expect.map(usd).to_vec(), "{mode:?}");
            let tiers: Vec<Option<String>> = l.accruals().map(|(_, a)| a.tier.clone()).collect();
            assert_eq!(
                tiers,
                vec![
                    Some("bronze".into()),
                    Some("silver".into()),
                    Some("silver".into())
                ]
            );
        }
    }

    #[test]
    fn tiers_by_trailing_revenue_follow_the_window_up_and_down() {
        let tier = |from: i64, rate: i64| CommissionTier {
            from: from.into(),
            rate_percent: rate.into(),
        };
        let plan = builder()
            .tiered(
                TierSchedule::new(
                    TierBasis::TrailingRevenue { months: 1 },
                    CommissionTiers::new(TierMode::Retroactive, vec![tier(0, 5), tier(100, 10)])
                        .unwrap(),
                    vec!["bronze".into(), "silver".into()],
                )
                .unwrap(),
            )
            .build()
            .unwrap();
        let mut l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        // 80 on Feb 10 (bronze, 5 %); 40 on Feb 20 takes the trailing month to 120 (silver,
        // 10 %); by Apr 15 the month since Mar 16 holds nothing, so 40 is bronze again.
        let got: Vec<Money> = [
            ("80", 1, day(2, 10)),
            ("40", 2, day(2, 20)),
            ("40", 3, day(4, 15)),
        ]
        .iter()
        .map(|(amount, n, on)| record(&plan, &mut l, pay(*n, amount, *on))[0].gross)
        .collect();
        assert_eq!(got, ["4", "4", "2"].map(usd).to_vec());
        // The window's edge: a payment one month and a day later no longer counts the first.
        let mut edge = PartnerLedger::new(PartnerId::from_u128(2), Currency::USD);
        record(&plan, &mut edge, pay(1, "90", day(3, 10)));
        assert_eq!(
            record(&plan, &mut edge, pay(2, "20", day(4, 10)))[0].gross,
            usd("1"),
            "Apr 10's month starts Mar 11: Mar 10's 90 is outside, 20 is bronze"
        );
        let changes: Vec<(NaiveDate, Option<String>, String)> = crate::statement::tier_changes(&l)
            .into_iter()
            .map(|c| (c.on, c.from, c.to))
            .collect();
        assert_eq!(
            changes,
            vec![
                (day(2, 10), None, "bronze".to_owned()),
                (day(2, 20), Some("bronze".to_owned()), "silver".to_owned()),
                (day(4, 15), Some("silver".to_owned()), "bronze".to_owned()),
            ]
        );
    }

    #[test]
    fn tiers_by_active_customers_use_the_count_or_the_rank() {
        let tier = |from: i64, rate: i64| CommissionTier {
            from: from.into(),
            rate_percent: rate.into(),
        };
        let schedule = |mode| {
            TierSchedule::new(
                TierBasis::ActiveCustomers,
                CommissionTiers::new(mode, vec![tier(0, 5), tier(10, 10)]).unwrap(),
                vec!["starter".into(), "pro".into()],
            )
            .unwrap()
        };
        let l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        let with = |active, rank| Standing {
            referred_on: day(1, 1),
            active_customers: active,
            customer_rank: rank,
        };
        let price = |mode, standing: Standing| {
            let plan = builder().tiered(schedule(mode)).build().unwrap();
            price_payment(&plan, &l, &standing, &pay(1, "100", day(2, 1))).unwrap()[0].gross
        };
        assert_eq!(price(TierMode::Retroactive, with(12, 3)), usd("10"));
        assert_eq!(price(TierMode::Marginal, with(12, 3)), usd("5"));
        assert_eq!(price(TierMode::Marginal, with(12, 11)), usd("10"));
        assert_eq!(price(TierMode::Retroactive, with(9, 3)), usd("5"));
    }

    #[test]
    fn a_master_override_is_split_off_exactly() {
        let earning = Earning {
            component: Component::RevenueShare,
            base: usd("100.03"),
            rate_percent: Some(dec!(10)),
            tier: None,
            uncapped: usd("10.01"),
            gross: usd("10.01"),
        };
        let (sub, master) = (PartnerId::from_u128(1), PartnerId::from_u128(2));
        let link = MasterOverride::new(master, dec!(30)).unwrap();
        let (own, over) = share_out(
            &[earning],
            CUSTOMER,
            PaymentId::from_u128(1),
            sub,
            Some(link),
        )
        .unwrap();
        assert_eq!(own[0].commission, usd("7.01"));
        assert_eq!(over[0].commission, usd("3.00"));
        assert_eq!(own[0].share, Share::SubAgent { master });
        assert_eq!(over[0].share, Share::MasterOverride { sub_agent: sub });
    }

    #[test]
    fn a_payment_in_another_currency_or_not_positive_is_refused() {
        let plan = builder().revenue_share(dec!(10)).build().unwrap();
        let l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        let mut p = pay(1, "10", day(2, 1));
        p.amount = Money::parse("10", Currency::EUR).unwrap();
        assert!(matches!(
            price_payment(&plan, &l, &standing(), &p),
            Err(PartnersError::Core(
                dotmac_core::CoreError::CurrencyMismatch { .. }
            ))
        ));
        assert_eq!(
            price_payment(&plan, &l, &standing(), &pay(1, "0", day(2, 1))),
            Err(PartnersError::NotPositive {
                what: "payment",
                amount: dec!(0)
            })
        );
    }
}
