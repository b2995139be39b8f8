//! Statements and analytics: what a partner earned, lost and was paid in a period, line by line
//! with the source payment and rate of each movement, reconciling to the ledger; and the
//! programme's figures per partner and period (revenue attributed, customers referred and
//! active, commission earned, paid and held, tier changes over time).

use std::collections::BTreeSet;

use chrono::NaiveDate;
use dotmac_core::{Currency, CustomerId, Money, PaymentId, Period};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::attribution::{AttributionSource, CustomerAttribution};
use crate::error::PartnersError;
use crate::ids::{HoldId, PartnerId, PayoutId};
use crate::ledger::{Component, EntryKind, PartnerLedger, Share};
use crate::plan::CommissionPlan;

/// What a statement line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum LineKind {
    /// Commission earned.
    Accrual {
        /// The part of the plan.
        component: Component,
        /// Whose.
        share: Share,
    },
    /// Commission taken back by a refund.
    Clawback,
    /// An operator's adjustment.
    Adjustment,
    /// A payout.
    Payout {
        /// The payout.
        payout: PayoutId,
    },
    /// A hold put on the balance (no balance effect).
    Hold {
        /// The hold.
        hold: HoldId,
    },
    /// A hold released (no balance effect).
    Release {
        /// The hold.
        hold: HoldId,
    },
    /// An approval (no balance effect).
    Approval {
        /// The last day approved.
        through: NaiveDate,
    },
}

/// One movement of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// The ledger entry.
    pub seq: u64,
    /// Its day.
    pub on: NaiveDate,
    /// What it is.
    pub kind: LineKind,
    /// The customer, for accruals and clawbacks.
    pub customer: Option<CustomerId>,
    /// The source payment, for accruals and clawbacks.
    pub payment: Option<PaymentId>,
    /// The refund, for clawbacks.
    pub refund: Option<PaymentId>,
    /// The payment's amount (for a clawback, the part refunded).
    pub base: Option<Money>,
    /// The rate that priced the commission (for a clawback, the rate of the accrual it takes
    /// back from).
    pub rate_percent: Option<Decimal>,
    /// The tier that priced it.
    pub tier: Option<String>,
    /// The effect on the balance (negative for clawbacks and payouts; zero for holds,
    /// releases and approvals).
    pub amount: Money,
    /// An operator's reason, for adjustments and holds.
    pub note: Option<String>,
}

/// A partner's statement for a period: the opening balance, every movement dated in the
/// period, the totals and the closing balance, and what was payable and held at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Statement {
    /// The partner.
    pub partner: PartnerId,
    /// The period (its days, `[start, end)`).
    pub period: Period,
    /// The ledger's currency.
    pub currency: Currency,
    /// The balance before the period.
    pub opening_balance: Money,
    /// Commission earned in the period.
    pub earned: Money,
    /// Commission taken back in the period.
    pub clawed_back: Money,
    /// Adjustments in the period, net.
    pub adjusted: Money,
    /// Paid out in the period.
    pub paid_out: Money,
    /// The balance at the period's end.
    pub closing_balance: Money,
    /// What was payable on the period's last day.
    pub payable: Money,
    /// What active holds kept back on the period's last day.
    pub held: Money,
    /// The movements, by day then as recorded.
    pub lines: Vec<StatementLine>,
}

impl Statement {
    /// Whether the statement adds up: opening + earned − clawed back + adjusted − paid out =
    /// closing, and the lines sum to closing − opening.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] on overflow.
    pub fn reconciles(&self) -> Result<bool, PartnersError> {
        let totals = self
            .opening_balance
            .checked_add(self.earned)?
            .checked_sub(self.clawed_back)?
            .checked_add(self.adjusted)?
            .checked_sub(self.paid_out)?;
        let lines = Money::sum(self.currency, self.lines.iter().map(|l| l.amount))?;
        Ok(totals == self.closing_balance
            && self.opening_balance.checked_add(lines)? == self.closing_balance)
    }
}

/// The day before `period` ends (its last day).
fn last_day(period: &Period) -> NaiveDate {
    period.last_day()
}

/// `ledger`'s statement for `period` under `plan`.
///
/// # Errors
///
/// [`PartnersError::Core`] on overflow or a plan in another currency.
pub fn statement(
    ledger: &PartnerLedger,
    plan: &CommissionPlan,
    period: Period,
) -> Result<Statement, PartnersError> {
    let currency = ledger.currency();
    let zero = Money::zero(currency);
    let before = period.start().pred_opt();
    let opening_balance = match before {
        Some(day) => ledger.balance(day)?,
        None => zero,
    };
    let mut entries: Vec<_> = ledger
        .entries()
        .iter()
        .filter(|e| period.contains(e.on))
        .collect();
    entries.sort_by_key(|e| (e.on, e.seq));
    let (mut earned, mut clawed_back, mut adjusted, mut paid_out) = (zero, zero, zero, zero);
    let mut lines = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut line = StatementLine {
            seq: entry.seq,
            on: entry.on,
            kind: LineKind::Adjustment,
            customer: None,
            payment: None,
            refund: None,
            base: None,
            rate_percent: None,
            tier: None,
            amount: entry.kind.balance_effect(currency),
            note: None,
        };
        match &entry.kind {
            EntryKind::Accrued(a) => {
                earned = earned.checked_add(a.commission)?;
                line.kind = LineKind::Accrual {
                    component: a.component,
                    share: a.share,
                };
                line.customer = Some(a.customer);
                line.payment = Some(a.payment);
                line.base = Some(a.base);
                line.rate_percent = a.rate_percent;
                line.tier = a.tier.clone();
            }
            EntryKind::ClawedBack(c) => {
                clawed_back = clawed_back.checked_add(c.commission)?;
                let against = ledger.accrual(c.against);
                line.kind = LineKind::Clawback;
                line.customer = Some(c.customer);
                line.payment = Some(c.payment);
                line.refund = Some(c.refund);
                line.base = Some(c.base);
                line.rate_percent = against.and_then(|a| a.rate_percent);
                line.tier = against.and_then(|a| a.tier.clone());
            }
            EntryKind::Adjusted { amount, reason } => {
                adjusted = adjusted.checked_add(*amount)?;
                line.note = Some(reason.clone());
            }
            EntryKind::PaidOut { payout, amount, .. } => {
                paid_out = paid_out.checked_add(*amount)?;
                line.kind = LineKind::Payout { payout: *payout };
            }
            EntryKind::Held { hold, reason, .. } => {
                line.kind = LineKind::Hold { hold: *hold };
                line.note = Some(reason.clone());
            }
            EntryKind::Released { hold } => line.kind = LineKind::Release { hold: *hold },
            EntryKind::Approved { through } => {
                line.kind = LineKind::Approval { through: *through };
            }
        }
        lines.push(line);
    }
    let end = ledger.summary(last_day(&period), plan)?;
    Ok(Statement {
        partner: ledger.partner(),
        period,
        currency,
        opening_balance,
        earned,
        clawed_back,
        adjusted,
        paid_out,
        closing_balance: end.balance,
        payable: end.payable,
        held: end.held,
        lines,
    })
}

/// A partner's figures for a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PartnerActivity {
    /// The partner.
    pub partner: PartnerId,
    /// The period.
    pub period: Period,
    /// What its own customers paid in the period.
    pub collected: Money,
    /// What was refunded to them in the period.
    pub refunded: Money,
    /// Revenue attributed: collected − refunded.
    pub revenue: Money,
    /// Customers attributed to it in the period (first or last touch, or directly).
    pub customers_referred: u64,
    /// Customers transferred to it in the period.
    pub customers_transferred_in: u64,
    /// Customers attributed to it on the period's last day.
    pub customers_active: u64,
    /// Its own customers who paid in the period.
    pub paying_customers: u64,
    /// Commission earned in the period.
    pub earned: Money,
    /// Commission taken back in the period.
    pub clawed_back: Money,
    /// Paid out in the period.
    pub paid_out: Money,
    /// Owed but not payable on the period's last day (in its hold period, awaiting approval,
    /// held, or below the minimum payout).
    pub held: Money,
    /// The balance on the period's last day.
    pub balance: Money,
    /// The partner's level on the period's last day (the tier that priced its latest payment).
    pub tier: Option<String>,
}

/// `ledger`'s partner's figures for `period`, with `customers` the attribution records of
/// every customer it ever held.
///
/// # Errors
///
/// [`PartnersError::Core`] on overflow or a plan in another currency.
pub fn activity(
    ledger: &PartnerLedger,
    plan: &CommissionPlan,
    customers: &[CustomerAttribution],
    period: Period,
) -> Result<PartnerActivity, PartnersError> {
    let partner = ledger.partner();
    let currency = ledger.currency();
    let zero = Money::zero(currency);
    let last = last_day(&period);
    let (mut collected, mut refunded, mut earned, mut clawed_back, mut paid_out) =
        (zero, zero, zero, zero, zero);
    let mut paying = BTreeSet::new();
    for entry in ledger.entries().iter().filter(|e| period.contains(e.on)) {
        match &entry.kind {
            EntryKind::Accrued(a) => {
                earned = earned.checked_add(a.commission)?;
                if a.share.is_own() && a.component == Component::RevenueShare {
                    collected = collected.checked_add(a.base)?;
                    paying.insert(a.customer);
                }
            }
            EntryKind::ClawedBack(c) => {
                clawed_back = clawed_back.checked_add(c.commission)?;
                if ledger.accrual(c.against).is_some_and(|a| a.share.is_own()) {
                    refunded = refunded.checked_add(c.base)?;
                }
            }
            EntryKind::PaidOut { amount, .. } => paid_out = paid_out.checked_add(*amount)?,
            _ => {}
        }
    }
    let (mut referred, mut transferred, mut active) = (0u64, 0u64, 0u64);
    for record in customers {
        for a in record
            .attributions()
            .iter()
            .filter(|a| a.partner == partner)
        {
            if period.contains(a.from) {
                match a.source {
                    AttributionSource::Transfer { .. } => {
                        transferred = transferred.saturating_add(1);
                    }
                    _ => referred = referred.saturating_add(1),
                }
            }
            if a.covers(last) {
                active = active.saturating_add(1);
            }
        }
    }
    let end = ledger.summary(last, plan)?;
    let tier = tier_changes(ledger)
        .into_iter()
        .take_while(|c| c.on <= last)
        .last()
        .map(|c| c.to);
    Ok(PartnerActivity {
        partner,
        period,
        collected,
        refunded,
        revenue: collected.checked_sub(refunded)?,
        customers_referred: referred,
        customers_transferred_in: transferred,
        customers_active: active,
        paying_customers: paying.len() as u64,
        earned,
        clawed_back,
        paid_out,
        held: end.balance.checked_sub(end.payable)?.max(zero)?,
        balance: end.balance,
        tier,
    })
}

/// A move of a partner's level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierChange {
    /// The day of the first payment priced at the new level.
    pub on: NaiveDate,
    /// The level before (none for the first).
    pub from: Option<String>,
    /// The new level.
    pub to: String,
}

/// The partner's levels over time: each day its own customers' payments were first priced at
/// another tier than before, in date order.
pub fn tier_changes(ledger: &PartnerLedger) -> Vec<TierChange> {
    let mut priced: Vec<(NaiveDate, u64, &str)> = ledger
        .accruals()
        .filter(|(_, a)| a.share.is_own() && a.component == Component::RevenueShare)
        .filter_map(|(e, a)| a.tier.as_deref().map(|t| (e.on, e.seq, t)))
        .collect();
    priced.sort_unstable();
    let mut changes: Vec<TierChange> = Vec::new();
    for (on, _, tier) in priced {
        let current = changes.last().map(|c| c.to.as_str());
        if current != Some(tier) {
            changes.push(TierChange {
                on,
                from: current.map(str::to_owned),
                to: tier.to_owned(),
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commission::Standing;
    use crate::ids::{CommissionPlanId, SourceId};
    use crate::test_support::{CUSTOMER, day, payment, record, usd};
    use crate::tiers::{CommissionTier, CommissionTiers, TierBasis, TierMode, TierSchedule};

    fn plan() -> CommissionPlan {
        let tier = |from: i64, rate: i64| CommissionTier {
            from: from.into(),
            rate_percent: rate.into(),
        };
        let schedule = TierSchedule::new(
            TierBasis::LifetimeRevenue,
            CommissionTiers::new(TierMode::Retroactive, vec![tier(0, 5), tier(100, 10)]).unwrap(),
            vec!["bronze".into(), "silver".into()],
        )
        .unwrap();
        CommissionPlan::builder(CommissionPlanId::from_u128(1), "p", Currency::USD)
            .tiered(schedule)
            .build()
            .unwrap()
    }

    fn pay(l: &mut PartnerLedger, plan: &CommissionPlan, n: u128, amount: &str, on: NaiveDate) {
        let standing = Standing {
            referred_on: day(1, 1),
            active_customers: 1,
            customer_rank: 1,
        };
        record(plan, l, &standing, payment(n, amount, on));
    }

    fn ledger() -> PartnerLedger {
        let plan = plan();
        let mut l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        pay(&mut l, &plan, 1, "60", day(1, 10)); // 3.00 bronze
        pay(&mut l, &plan, 2, "60", day(2, 10)); // 6.00 silver (120 reached)
        let refund = PaymentId::from_u128(9);
        for c in l
            .clawbacks_for(PaymentId::from_u128(2), usd("30"), refund)
            .unwrap()
        {
            l.append(day(2, 15), SourceId::from_u128(9), EntryKind::ClawedBack(c))
                .unwrap();
        }
        l.append(
            day(2, 20),
            SourceId::from_u128(10),
            EntryKind::PaidOut {
                payout: PayoutId::from_u128(1),
                run: None,
                amount: usd("4"),
            },
        )
        .unwrap();
        l
    }

    #[test]
    fn a_statement_lists_each_movement_with_its_payment_and_rate_and_reconciles() {
        let l = ledger();
        let february = Period::new(day(2, 1), day(3, 1)).unwrap();
        let s = statement(&l, &plan(), february).unwrap();
        assert_eq!(s.opening_balance, usd("3"));
        assert_eq!(
            (s.earned, s.clawed_back, s.paid_out),
            (usd("6"), usd("3"), usd("4"))
        );
        assert_eq!(s.closing_balance, usd("2"));
        assert!(s.reconciles().unwrap());
        assert_eq!(s.closing_balance, l.balance(day(2, 28)).unwrap());
        let clawback = &s.lines[1];
        assert_eq!(clawback.kind, LineKind::Clawback);
        assert_eq!(clawback.payment, Some(PaymentId::from_u128(2)));
        assert_eq!(clawback.rate_percent, Some(Decimal::from(10)));
        assert_eq!(
            (clawback.base, clawback.amount),
            (Some(usd("30")), usd("-3"))
        );
        assert_eq!(s.lines[0].tier.as_deref(), Some("silver"));
    }

    #[test]
    fn activity_counts_revenue_customers_and_commission_per_period() {
        let l = ledger();
        let mut record = CustomerAttribution::new(CUSTOMER);
        record.assign(l.partner(), day(1, 5)).unwrap();
        let february = Period::new(day(2, 1), day(3, 1)).unwrap();
        let a = activity(&l, &plan(), &[record.clone()], february).unwrap();
        assert_eq!(
            (a.collected, a.refunded, a.revenue),
            (usd("60"), usd("30"), usd("30"))
        );
        assert_eq!(
            (a.customers_referred, a.customers_active, a.paying_customers),
            (0, 1, 1)
        );
        assert_eq!(
            (a.earned, a.clawed_back, a.paid_out),
            (usd("6"), usd("3"), usd("4"))
        );
        assert_eq!((a.balance, a.held), (usd("2"), usd("0")));
        assert_eq!(a.tier.as_deref(), Some("silver"));
        let january = Period::new(day(1, 1), day(2, 1)).unwrap();
        let j = activity(&l, &plan(), &[record], january).unwrap();
        assert_eq!(
            (j.customers_referred, j.tier.as_deref()),
            (1, Some("bronze"))
        );
        assert_eq!(
            tier_changes(&l),
            vec![
                TierChange {
                    on: day(1, 10),
                    from: None,
                    to: "bronze".into()
                },
                TierChange {
                    on: day(2, 10),
                    from: Some("bronze".into()),
                    to: "silver".into()
                },
            ]
        );
    }
}
