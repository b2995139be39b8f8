//! A partner's append-only commission ledger for one referred customer.

use chrono::{Days, Months, NaiveDate};
use dotmac_core::{Currency, CustomerId, Money, PaymentId, RoundingMode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::PartnersError;
use crate::ids::PartnerId;
use crate::tiers::{check_rate, percent_of};

/// How long a referred customer's payments earn commission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommissionDuration {
    /// Payments dated before the customer's start + this many months.
    Months(u32),
    /// As long as the customer pays.
    Lifetime,
}

/// The terms on which a partner earns from a referred customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionPlan {
    rate_percent: Decimal,
    duration: CommissionDuration,
    hold_days: u32,
    min_payout: Money,
}

impl CommissionPlan {
    /// `rate_percent` of each eligible payment, payable `hold_days` after it, in payouts of at
    /// least `min_payout` (whose currency is the ledger's).
    ///
    /// # Errors
    ///
    /// [`PartnersError::InvalidRate`] for a rate outside 0–100 %, [`PartnersError::NotPositive`]
    /// for a negative minimum payout.
    pub fn new(
        rate_percent: Decimal,
        duration: CommissionDuration,
        hold_days: u32,
        min_payout: Money,
    ) -> Result<Self, PartnersError> {
        check_rate(rate_percent)?;
        if min_payout.is_negative() {
            return Err(PartnersError::NotPositive {
                what: "minimum payout",
                amount: min_payout.amount(),
            });
        }
        Ok(CommissionPlan {
            rate_percent,
            duration,
            hold_days,
            min_payout,
        })
    }

    /// The rate in percent.
    pub fn rate_percent(&self) -> Decimal {
        self.rate_percent
    }

    /// How long payments earn.
    pub fn duration(&self) -> CommissionDuration {
        self.duration
    }

    /// Days an entry must age before it is payable.
    pub fn hold_days(&self) -> u32 {
        self.hold_days
    }

    /// The smallest payout.
    pub fn min_payout(&self) -> Money {
        self.min_payout
    }
}

/// What one ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    /// The customer paid; the partner earned `commission` (zero outside the plan's duration).
    Earned {
        /// The customer's payment.
        payment: PaymentId,
        /// The amount the customer paid.
        base: Money,
        /// The rate in force for this payment (0 outside the plan's duration).
        rate_percent: Decimal,
        /// The commission earned, rounded half-up to the minor unit.
        commission: Money,
    },
    /// The customer got money back; the commission it had earned is taken back.
    ClawedBack {
        /// The refund.
        refund: PaymentId,
        /// The ledger sequence number of the `Earned` entry refunded.
        against: u64,
        /// The part of that payment refunded.
        base: Money,
        /// The commission taken back.
        commission: Money,
    },
    /// The partner was paid.
    PaidOut {
        /// The amount paid to the partner.
        amount: Money,
    },
}

/// One immutable ledger line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the ledger, from 0.
    pub seq: u64,
    /// The day it happened.
    pub on: NaiveDate,
    /// What happened.
    pub kind: EntryKind,
}

/// Totals of a ledger at a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSummary {
    /// Commission earned.
    pub earned: Money,
    /// Commission taken back by refunds.
    pub clawed_back: Money,
    /// Paid to the partner.
    pub paid_out: Money,
    /// earned − clawed back − paid out; negative when clawbacks follow a payout (netted against
    /// future earnings, never taken back).
    pub balance: Money,
    /// What may be paid now: the smaller of the balance and what has cleared the hold period,
    /// or zero below the plan's minimum payout.
    pub payable: Money,
}

/// A partner's commission ledger for one referred customer. Entries are appended in date order
/// and never edited; totals are derived from them.
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_core::{Currency, CustomerId, Money, PaymentId};
/// use dotmac_partners::{CommissionDuration, CommissionPlan, PartnerId, ReferralLedger};
/// use rust_decimal::Decimal;
///
/// let usd = |s: &str| Money::parse(s, Currency::USD);
/// let plan = CommissionPlan::new(Decimal::from(40), CommissionDuration::Lifetime, 0, usd("5")?)?;
/// let day = |d| NaiveDate::from_ymd_opt(2026, 1, d).unwrap();
/// let mut ledger = ReferralLedger::new(PartnerId::new(), CustomerId::new(), day(1), plan);
/// ledger.record_payment(PaymentId::new(), day(5), usd("50.00")?)?;
/// ledger.record_payment(PaymentId::new(), day(6), usd("250.00")?)?;
/// ledger.record_refund(PaymentId::new(), day(20), usd("250.00")?)?;
/// let summary = ledger.summary(day(31))?;
/// assert_eq!(summary.balance, usd("20.00")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralLedger {
    partner: PartnerId,
    customer: CustomerId,
    customer_start: NaiveDate,
    plan: CommissionPlan,
    entries: Vec<LedgerEntry>,
}

impl ReferralLedger {
    /// An empty ledger for `partner`'s referral of `customer`, who started on `customer_start`.
    pub fn new(
        partner: PartnerId,
        customer: CustomerId,
        customer_start: NaiveDate,
        plan: CommissionPlan,
    ) -> Self {
        ReferralLedger {
            partner,
            customer,
            customer_start,
            plan,
            entries: Vec::new(),
        }
    }

    /// The partner.
    pub fn partner(&self) -> PartnerId {
        self.partner
    }

    /// The referred customer.
    pub fn customer(&self) -> CustomerId {
        self.customer
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    fn currency(&self) -> Currency {
        self.plan.min_payout.currency()
    }

    fn check_append(
        &self,
        on: NaiveDate,
        amount: Money,
        what: &'static str,
    ) -> Result<(), PartnersError> {
        if let Some(latest) = self.entries.last().map(|e| e.on).filter(|l| on < *l) {
            return Err(PartnersError::OutOfOrder { on, latest });
        }
        Money::zero(self.currency()).compare(&amount)?;
        if !amount.is_positive() {
            return Err(PartnersError::NotPositive {
                what,
                amount: amount.amount(),
            });
        }
        Ok(())
    }

    fn push(&mut self, on: NaiveDate, kind: EntryKind) -> LedgerEntry {
        let entry = LedgerEntry {
            seq: self.entries.len() as u64,
            on,
            kind,
        };
        self.entries.push(entry);
        entry
    }

    /// The rate in force for a payment on `on`: the plan's rate inside its duration, else 0.
    fn rate_on(&self, on: NaiveDate) -> Decimal {
        let eligible = match self.plan.duration {
            CommissionDuration::Lifetime => true,
            CommissionDuration::Months(n) => self
                .customer_start
                .checked_add_months(Months::new(n))
                .is_none_or(|end| on < end),
        };
        if eligible && on >= self.customer_start {
            self.plan.rate_percent
        } else {
            Decimal::ZERO
        }
    }

    /// Records a customer payment and the commission it earns.
    ///
    /// # Errors
    ///
    /// [`PartnersError::OutOfOrder`] for a date before the latest entry,
    /// [`PartnersError::NotPositive`] for a zero or negative amount, a currency mismatch as
    /// [`PartnersError::Core`]. Nothing is recorded on error.
    pub fn record_payment(
        &mut self,
        payment: PaymentId,
        on: NaiveDate,
        amount: Money,
    ) -> Result<LedgerEntry, PartnersError> {
        self.check_append(on, amount, "payment")?;
        let rate_percent = self.rate_on(on);
        let commission = commission_on(amount, rate_percent)?;
        Ok(self.push(
            on,
            EntryKind::Earned {
                payment,
                base: amount,
                rate_percent,
                commission,
            },
        ))
    }

    /// Records a refund to the customer, clawing back the commission the refunded money earned:
    /// the most recent payments are refunded first, each at its own rate. May take the balance
    /// below zero (money already paid out is netted against future earnings).
    ///
    /// A refund larger than what is still refundable here (for instance one that also returns
    /// money paid before the referral, which this ledger never saw) claws back what the
    /// ledger's payments earned and no more: the returned entries cover the refundable part
    /// (their `base`s sum to it), and nothing is recorded when nothing is refundable.
    ///
    /// # Errors
    ///
    /// The errors of [`ReferralLedger::record_payment`]. Nothing is recorded on error.
    pub fn record_refund(
        &mut self,
        refund: PaymentId,
        on: NaiveDate,
        amount: Money,
    ) -> Result<Vec<LedgerEntry>, PartnersError> {
        self.check_append(on, amount, "refund")?;
        let currency = self.currency();
        // Work out every clawback first, so a failure part-way records nothing.
        let mut refunded = vec![Money::zero(currency); self.entries.len()];
        let mut clawed = vec![Money::zero(currency); self.entries.len()];
        for entry in &self.entries {
            if let EntryKind::ClawedBack {
                against,
                base,
                commission,
                ..
            } = entry.kind
                && let Ok(i) = usize::try_from(against)
                && let (Some(r), Some(c)) = (refunded.get_mut(i), clawed.get_mut(i))
            {
                *r = r.checked_add(base)?;
                *c = c.checked_add(commission)?;
            }
        }
        let mut left = amount;
        let mut planned = Vec::new();
        for (i, entry) in self.entries.iter().enumerate().rev() {
            if !left.is_positive() {
                break;
            }
            let EntryKind::Earned {
                base,
                commission,
                rate_percent,
                ..
            } = entry.kind
            else {
                continue;
            };
            let (Some(already_refunded), Some(already_clawed)) = (refunded.get(i), clawed.get(i))
            else {
                continue;
            };
            let remaining = base.checked_sub(*already_refunded)?;
            if !remaining.is_positive() {
                continue;
            }
            let part = left.min(remaining)?;
            // A refund that empties a payment takes back exactly what is left of its commission,
            // so rounding can never claw back more (or less) than was earned.
            let take = if part == remaining {
                commission.checked_sub(*already_clawed)?
            } else {
                commission_on(part, rate_percent)?.min(commission.checked_sub(*already_clawed)?)?
            };
            planned.push((entry.seq, part, take));
            left = left.checked_sub(part)?;
        }
        // What is `left` now was never paid through this ledger: it earned nothing here, so
        // there is nothing more to take back.
        Ok(planned
            .into_iter()
            .map(|(against, base, commission)| {
                self.push(
                    on,
                    EntryKind::ClawedBack {
                        refund,
                        against,
                        base,
                        commission,
                    },
                )
            })
            .collect())
    }

    /// Records a payout to the partner. A payout is a fact: it is recorded even when it exceeds
    /// what [`ReferralLedger::summary`] calls payable (the balance then goes negative).
    ///
    /// # Errors
    ///
    /// [`PartnersError::OutOfOrder`], [`PartnersError::NotPositive`], or a currency mismatch.
    pub fn record_payout(
        &mut self,
        on: NaiveDate,
        amount: Money,
    ) -> Result<LedgerEntry, PartnersError> {
        self.check_append(on, amount, "payout")?;
        Ok(self.push(on, EntryKind::PaidOut { amount }))
    }

    /// The totals of the entries dated on or before `as_of`.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] on overflow.
    pub fn summary(&self, as_of: NaiveDate) -> Result<LedgerSummary, PartnersError> {
        let zero = Money::zero(self.currency());
        let cleared_by = as_of.checked_sub_days(Days::new(u64::from(self.plan.hold_days)));
        let (mut earned, mut clawed_back, mut paid_out, mut cleared) = (zero, zero, zero, zero);
        for entry in self.entries.iter().take_while(|e| e.on <= as_of) {
            let is_cleared = cleared_by.is_some_and(|c| entry.on <= c);
            match entry.kind {
                EntryKind::Earned { commission, .. } => {
                    earned = earned.checked_add(commission)?;
                    if is_cleared {
                        cleared = cleared.checked_add(commission)?;
                    }
                }
                EntryKind::ClawedBack { commission, .. } => {
                    clawed_back = clawed_back.checked_add(commission)?;
                    if is_cleared {
                        cleared = cleared.checked_sub(commission)?;
                    }
                }
                EntryKind::PaidOut { amount } => paid_out = paid_out.checked_add(amount)?,
            }
        }
        let balance = earned.checked_sub(clawed_back)?.checked_sub(paid_out)?;
        let available = balance.min(cleared.checked_sub(paid_out)?)?;
        let payable =
            if available.compare(&self.plan.min_payout)?.is_lt() || !available.is_positive() {
                zero
            } else {
                available
            };
        Ok(LedgerSummary {
            earned,
            clawed_back,
            paid_out,
            balance,
            payable,
        })
    }
}

fn commission_on(base: Money, rate_percent: Decimal) -> Result<Money, PartnersError> {
    let exact = percent_of(base.amount(), rate_percent)?;
    // Each commission amount is rounded half-up to the minor unit, once, here.
    Ok(Money::new(exact, base.currency()).round(RoundingMode::HalfUp))
}

/// Splits a commission between a master agent and its sub-agents by weight; the parts sum
/// exactly to the amount (largest remainder).
///
/// # Errors
///
/// The allocation errors of [`Money::allocate`] (no shares, negative or all-zero weights, an
/// amount that is not whole minor units).
pub fn split_commission(
    amount: Money,
    shares: &[(PartnerId, Decimal)],
) -> Result<Vec<(PartnerId, Money)>, PartnersError> {
    let weights: Vec<Decimal> = shares.iter().map(|(_, w)| *w).collect();
    let parts = amount.allocate(&weights)?;
    Ok(shares.iter().map(|(p, _)| *p).zip(parts).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn usd(s: &str) -> Money {
        Money::parse(s, Currency::USD).unwrap()
    }
    fn day(m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }
    fn ledger(duration: CommissionDuration, hold: u32) -> ReferralLedger {
        let plan = CommissionPlan::new(dec!(40), duration, hold, usd("5")).unwrap();
        ReferralLedger::new(PartnerId::new(), CustomerId::new(), day(1, 1), plan)
    }

    #[test]
    fn payments_after_the_duration_earn_nothing_and_refunds_take_nothing_back() {
        let mut l = ledger(CommissionDuration::Months(1), 0);
        l.record_payment(PaymentId::new(), day(1, 15), usd("100"))
            .unwrap();
        l.record_payment(PaymentId::new(), day(2, 1), usd("100"))
            .unwrap();
        // The most recent payment (not eligible) is refunded first: nothing is clawed back.
        let entries = l
            .record_refund(PaymentId::new(), day(2, 2), usd("100"))
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert!(
            matches!(entries[0].kind, EntryKind::ClawedBack { commission, .. } if commission.is_zero())
        );
        let s = l.summary(day(3, 1)).unwrap();
        assert_eq!(
            (s.earned, s.clawed_back, s.balance),
            (usd("40"), usd("0"), usd("40"))
        );
    }

    #[test]
    fn hold_period_and_minimum_payout() {
        let mut l = ledger(CommissionDuration::Lifetime, 30);
        l.record_payment(PaymentId::new(), day(1, 5), usd("100"))
            .unwrap();
        l.record_payment(PaymentId::new(), day(1, 25), usd("10"))
            .unwrap();
        let s = l.summary(day(2, 10)).unwrap();
        assert_eq!((s.balance, s.payable), (usd("44"), usd("40")));
        l.record_payout(day(2, 10), usd("40")).unwrap();
        let s = l.summary(day(2, 20)).unwrap();
        // 4.00 is cleared and in the balance, but below the 5.00 minimum.
        assert_eq!((s.balance, s.payable), (usd("4"), usd("0")));
    }

    #[test]
    fn clawback_after_payout_goes_negative() {
        let mut l = ledger(CommissionDuration::Lifetime, 0);
        l.record_payment(PaymentId::new(), day(1, 5), usd("100"))
            .unwrap();
        l.record_payout(day(1, 6), usd("40")).unwrap();
        l.record_refund(PaymentId::new(), day(1, 7), usd("100"))
            .unwrap();
        let s = l.summary(day(1, 8)).unwrap();
        assert_eq!((s.balance, s.payable), (usd("-40"), usd("0")));
    }

    #[test]
    fn partial_refunds_never_claw_back_more_than_earned() {
        let mut l = ledger(CommissionDuration::Lifetime, 0);
        l.record_payment(PaymentId::new(), day(1, 5), usd("0.05"))
            .unwrap(); // earns 0.02
        for d in 6..11 {
            l.record_refund(PaymentId::new(), day(1, d), usd("0.01"))
                .unwrap();
        }
        let s = l.summary(day(1, 31)).unwrap();
        assert_eq!(
            (s.earned, s.clawed_back, s.balance),
            (usd("0.02"), usd("0.02"), usd("0"))
        );
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let mut l = ledger(CommissionDuration::Lifetime, 0);
        l.record_payment(PaymentId::new(), day(1, 5), usd("100"))
            .unwrap();
        let before = l.clone();
        assert_eq!(
            l.record_payment(PaymentId::new(), day(1, 4), usd("1")),
            Err(PartnersError::OutOfOrder {
                on: day(1, 4),
                latest: day(1, 5)
            })
        );
        assert_eq!(
            l.record_payment(PaymentId::new(), day(1, 6), usd("0")),
            Err(PartnersError::NotPositive {
                what: "payment",
                amount: dec!(0)
            })
        );
        assert!(matches!(
            l.record_payment(
                PaymentId::new(),
                day(1, 6),
                Money::parse("1", Currency::EUR).unwrap()
            ),
            Err(PartnersError::Core(
                dotmac_core::CoreError::CurrencyMismatch { .. }
            ))
        ));
        assert_eq!(l, before);
    }

    #[test]
    fn a_refund_larger_than_refundable_claws_back_only_what_the_ledger_earned() {
        // The customer paid 100 before the referral (never seen here) and 100 after it (earning
        // 40), then got all 200 back: the 40 is taken back, no more, and it is not an error.
        let mut l = ledger(CommissionDuration::Lifetime, 0);
        let paid = l
            .record_payment(PaymentId::new(), day(1, 5), usd("100"))
            .unwrap();
        let refund = PaymentId::new();
        let entries = l.record_refund(refund, day(2, 10), usd("200")).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![EntryKind::ClawedBack {
                refund,
                against: paid.seq,
                base: usd("100"),
                commission: usd("40"),
            }]
        );
        let s = l.summary(day(3, 1)).unwrap();
        assert_eq!(
            (s.earned, s.clawed_back, s.balance, s.payable),
            (usd("40"), usd("40"), usd("0"), usd("0"))
        );
        // Nothing is left to refund: a further refund records nothing and is not an error.
        let len = l.entries().len();
        assert_eq!(
            l.record_refund(PaymentId::new(), day(3, 2), usd("50")),
            Ok(vec![])
        );
        assert_eq!(l.entries().len(), len);
    }

    #[test]
    fn splits_sum_to_the_whole() {
        let (master, sub) = (PartnerId::new(), PartnerId::new());
        let parts = split_commission(usd("10.01"), &[(master, dec!(30)), (sub, dec!(70))]).unwrap();
        assert_eq!(parts, vec![(master, usd("3.00")), (sub, usd("7.01"))]);
    }
}
