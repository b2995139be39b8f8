//! One append-only commission ledger per partner, across all its customers: accruals from
//! payments, clawbacks from refunds, holds, approvals, adjustments and payouts, each an entry
//! that is never edited. Balances and what is payable are derived from the entries.

use chrono::{Days, NaiveDate};
use dotmac_core::{Currency, CustomerId, Money, PaymentId, Period, RoundingMode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{PartnersError, overflow};
use crate::ids::{HoldId, PartnerId, PayoutId, PayoutRunId, SourceId};
use crate::plan::{Approval, CommissionPlan};

/// What part of a plan an accrual is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum Component {
    /// The share of the payment (recorded for every payment, at rate 0 outside the term).
    RevenueShare,
    /// The flat reward for the customer's activation (its first payment to the partner).
    Activation,
    /// The flat reward for a billing cycle the customer paid in.
    PerCycle {
        /// The cycle, counted in months from the referral (0 is the first month).
        cycle: u32,
    },
}

/// Whose commission an accrual is: the partner's own, a sub-agent's part of its own, or a
/// master agent's override on a sub-agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum Share {
    /// The partner's own customer, no master agent.
    Direct,
    /// The partner's own customer; `gross` was split with its master agent, whose part is
    /// in the master's ledger.
    SubAgent {
        /// The master agent.
        master: PartnerId,
    },
    /// A master agent's override on its sub-agent's customer.
    MasterOverride {
        /// The sub-agent.
        sub_agent: PartnerId,
    },
}

impl Share {
    /// Whether the customer is the ledger owner's own (not a sub-agent's).
    pub fn is_own(self) -> bool {
        !matches!(self, Share::MasterOverride { .. })
    }
}

/// Commission earned from a customer's payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accrual {
    /// The customer who paid.
    pub customer: CustomerId,
    /// The payment.
    pub payment: PaymentId,
    /// What part of the plan.
    pub component: Component,
    /// The amount the customer paid.
    pub base: Money,
    /// The rate that priced a revenue share (the blended rate, to four decimals, when a
    /// marginal tier table priced parts of the payment at different rates); none for a flat
    /// reward.
    pub rate_percent: Option<Decimal>,
    /// The level of the partner's tier schedule that priced it.
    pub tier: Option<String>,
    /// The commission before the plan's cap.
    pub uncapped: Money,
    /// The commission after the cap, before a master agent's override was split off.
    pub gross: Money,
    /// This ledger's part of `gross`.
    pub commission: Money,
    /// Whose it is.
    pub share: Share,
}

/// Commission taken back because a customer got money back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clawback {
    /// The customer refunded.
    pub customer: CustomerId,
    /// The refund.
    pub refund: PaymentId,
    /// The payment it refunds.
    pub payment: PaymentId,
    /// The ledger sequence number of the accrual it takes back from.
    pub against: u64,
    /// The part of the payment refunded (zero for a flat reward taken back).
    pub base: Money,
    /// The commission taken back.
    pub commission: Money,
}

/// What one ledger entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// Commission earned.
    Accrued(Accrual),
    /// Commission taken back.
    ClawedBack(Clawback),
    /// An operator held back `amount` of the balance from payouts.
    Held {
        /// The hold.
        hold: HoldId,
        /// The amount held.
        amount: Money,
        /// Why.
        reason: String,
    },
    /// A hold was released.
    Released {
        /// The hold.
        hold: HoldId,
    },
    /// An operator approved every movement dated up to `through` (plans with
    /// [`Approval::Manual`]).
    Approved {
        /// The last day approved.
        through: NaiveDate,
    },
    /// An operator's correction (a bonus, a true-up, a penalty): positive adds to the balance.
    Adjusted {
        /// The amount.
        amount: Money,
        /// Why.
        reason: String,
    },
    /// The partner was paid (a payout run's instruction, or a payment made elsewhere). A fact:
    /// recorded even beyond what was payable; paid-out money is never taken back, a later
    /// clawback is netted against future earnings.
    PaidOut {
        /// The payout.
        payout: PayoutId,
        /// The run that instructed it, if one did.
        run: Option<PayoutRunId>,
        /// The amount paid.
        amount: Money,
    },
}

impl EntryKind {
    /// How the entry moves the balance (zero for holds, releases and approvals).
    pub fn balance_effect(&self, currency: Currency) -> Money {
        match self {
            EntryKind::Accrued(a) => a.commission,
            EntryKind::ClawedBack(c) => c.commission.negate(),
            EntryKind::Adjusted { amount, .. } => *amount,
            EntryKind::PaidOut { amount, .. } => amount.negate(),
            EntryKind::Held { .. } | EntryKind::Released { .. } | EntryKind::Approved { .. } => {
                Money::zero(currency)
            }
        }
    }

    fn amounts(&self) -> Vec<Money> {
        match self {
            EntryKind::Accrued(a) => vec![a.base, a.uncapped, a.gross, a.commission],
            EntryKind::ClawedBack(c) => vec![c.base, c.commission],
            EntryKind::Held { amount, .. }
            | EntryKind::Adjusted { amount, .. }
            | EntryKind::PaidOut { amount, .. } => vec![*amount],
            EntryKind::Released { .. } | EntryKind::Approved { .. } => Vec::new(),
        }
    }
}

/// One immutable ledger line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the partner's ledger, from 0.
    pub seq: u64,
    /// The day it took effect (entries are appended in the order they are recorded, which
    /// need not be date order: two customers' payments may arrive out of order).
    pub on: NaiveDate,
    /// The fact it was recorded from.
    pub source: SourceId,
    /// What happened.
    pub kind: EntryKind,
}

/// Totals of a ledger at a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LedgerSummary {
    /// Commission earned.
    pub earned: Money,
    /// Commission taken back by refunds.
    pub clawed_back: Money,
    /// Operators' adjustments, net.
    pub adjusted: Money,
    /// Paid to the partner.
    pub paid_out: Money,
    /// earned − clawed back + adjusted − paid out; negative when clawbacks follow a payout
    /// (netted against future earnings, never taken back).
    pub balance: Money,
    /// What active holds keep back.
    pub held: Money,
    /// What may be paid now: the smaller of the balance and what has cleared the hold period
    /// (and approval) less what was paid, less the holds; zero below the plan's minimum
    /// payout.
    pub payable: Money,
}

/// The one rounding point of commission: every commission amount is rounded half-up to the
/// currency's minor unit when it is recorded.
pub(crate) fn round_commission(exact: Money) -> Money {
    exact.round(RoundingMode::HalfUp)
}

/// A partner's ledger across all its customers.
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_core::{Currency, Money};
/// use dotmac_partners::{CommissionPlan, CommissionPlanId, EntryKind, PartnerId, PartnerLedger, PayoutId, SourceId};
///
/// let usd = |s: &str| Money::parse(s, Currency::USD);
/// let day = |d| NaiveDate::from_ymd_opt(2026, 5, d).unwrap();
/// let plan = CommissionPlan::builder(CommissionPlanId::from_u128(1), "Referrals", Currency::USD)
///     .revenue_share(10.into())
///     .min_payout(usd("5.00")?)
///     .build()?;
/// let mut ledger = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
/// ledger.append(day(2), SourceId::from_u128(1), EntryKind::Adjusted { amount: usd("4.00")?, reason: "welcome bonus".into() })?;
/// assert_eq!(ledger.summary(day(3), &plan)?.payable, usd("0.00")?); // below the 5.00 minimum
/// ledger.append(day(4), SourceId::from_u128(2), EntryKind::PaidOut { payout: PayoutId::from_u128(1), run: None, amount: usd("10.00")? })?;
/// assert_eq!(ledger.summary(day(5), &plan)?.balance, usd("-6.00")?); // a payout is a fact
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnerLedger {
    partner: PartnerId,
    currency: Currency,
    entries: Vec<LedgerEntry>,
}

impl PartnerLedger {
    /// An empty ledger in `currency` (its plan's).
    pub fn new(partner: PartnerId, currency: Currency) -> Self {
        PartnerLedger {
            partner,
            currency,
            entries: Vec::new(),
        }
    }

    /// A ledger rebuilt from stored entries.
    ///
    /// # Errors
    ///
    /// [`PartnersError::InvalidPartner`] when the entries are not numbered 0, 1, 2, …;
    /// [`PartnersError::Core`] for an amount in another currency.
    pub fn from_entries(
        partner: PartnerId,
        currency: Currency,
        entries: Vec<LedgerEntry>,
    ) -> Result<Self, PartnersError> {
        let mut ledger = PartnerLedger::new(partner, currency);
        for entry in entries {
            if entry.seq != ledger.next_seq() {
                return Err(PartnersError::InvalidPartner {
                    partner,
                    reason: "its stored ledger entries are not numbered 0, 1, 2, …",
                });
            }
            ledger.check(&entry.kind)?;
            ledger.entries.push(entry);
        }
        Ok(ledger)
    }

    /// The partner.
    pub fn partner(&self) -> PartnerId {
        self.partner
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The entries, in the order recorded.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// The sequence number the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.entries.len() as u64
    }

    fn check(&self, kind: &EntryKind) -> Result<(), PartnersError> {
        let zero = Money::zero(self.currency);
        for amount in kind.amounts() {
            zero.compare(&amount)?;
        }
        match kind {
            EntryKind::Held { amount, .. } | EntryKind::PaidOut { amount, .. }
                if !amount.is_positive() =>
            {
                Err(PartnersError::NotPositive {
                    what: "held or paid-out amount",
                    amount: amount.amount(),
                })
            }
            EntryKind::Adjusted { amount, .. } if amount.is_zero() => {
                Err(PartnersError::NotPositive {
                    what: "adjustment",
                    amount: amount.amount(),
                })
            }
            EntryKind::Released { hold } if !self.hold_is_active(*hold) => {
                Err(PartnersError::UnknownHold(*hold))
            }
            EntryKind::Held { hold, .. } if self.hold_exists(*hold) => {
                Err(PartnersError::AlreadyExists {
                    what: "hold",
                    id: hold.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Appends an entry dated `on`, recorded from `source`, and returns it.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] for an amount in another currency,
    /// [`PartnersError::NotPositive`] for a hold or payout that is not above zero or a zero
    /// adjustment, [`PartnersError::UnknownHold`] for a release of a hold that is not active,
    /// [`PartnersError::AlreadyExists`] for a hold id used before. Nothing is recorded on
    /// error.
    pub fn append(
        &mut self,
        on: NaiveDate,
        source: SourceId,
        kind: EntryKind,
    ) -> Result<LedgerEntry, PartnersError> {
        self.check(&kind)?;
        let entry = LedgerEntry {
            seq: self.next_seq(),
            on,
            source,
            kind,
        };
        self.entries.push(entry.clone());
        Ok(entry)
    }

    fn hold_exists(&self, hold: HoldId) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(&e.kind, EntryKind::Held { hold: h, .. } if *h == hold))
    }

    fn hold_is_active(&self, hold: HoldId) -> bool {
        self.hold_exists(hold)
            && !self
                .entries
                .iter()
                .any(|e| matches!(&e.kind, EntryKind::Released { hold: h } if *h == hold))
    }

    /// The accruals, with their entries.
    pub fn accruals(&self) -> impl Iterator<Item = (&LedgerEntry, &Accrual)> {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::Accrued(a) => Some((e, a)),
            _ => None,
        })
    }

    /// The clawbacks, with their entries.
    pub fn clawbacks(&self) -> impl Iterator<Item = (&LedgerEntry, &Clawback)> {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::ClawedBack(c) => Some((e, c)),
            _ => None,
        })
    }

    /// Whether a payment already accrued here.
    pub fn has_accrued(&self, payment: PaymentId) -> bool {
        self.accruals().any(|(_, a)| a.payment == payment)
    }

    /// Whether a source was recorded here.
    pub fn has_source(&self, source: SourceId) -> bool {
        self.entries.iter().any(|e| e.source == source)
    }

    /// Whether the customer's activation reward accrued here.
    pub fn has_activation(&self, customer: CustomerId) -> bool {
        self.accruals()
            .any(|(_, a)| a.customer == customer && a.component == Component::Activation)
    }

    /// Whether the customer's reward for billing cycle `cycle` accrued here.
    pub fn has_cycle(&self, customer: CustomerId, cycle: u32) -> bool {
        self.accruals()
            .any(|(_, a)| a.customer == customer && a.component == (Component::PerCycle { cycle }))
    }

    /// What the partner's own customers paid, net of what was refunded, on entries dated in
    /// `[from, to]` (`from` open: since the start): the revenue tier schedules measure.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] on overflow.
    pub fn own_revenue(
        &self,
        from: Option<NaiveDate>,
        to: NaiveDate,
    ) -> Result<Money, PartnersError> {
        let inside = |on: NaiveDate| on <= to && from.is_none_or(|from| on >= from);
        let paid = self.accruals().filter(|(e, a)| {
            inside(e.on) && a.share.is_own() && a.component == Component::RevenueShare
        });
        let refunded = self.clawbacks().filter(|(e, c)| {
            inside(e.on) && self.accrual(c.against).is_some_and(|a| a.share.is_own())
        });
        let paid = Money::sum(self.currency, paid.map(|(_, a)| a.base))?;
        let refunded = Money::sum(self.currency, refunded.map(|(_, c)| c.base))?;
        Ok(paid.checked_sub(refunded)?)
    }

    /// The gross commission the partner's own customers earned on entries dated in `period`
    /// (what a cap counts).
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] on overflow.
    pub fn own_gross_in(&self, period: Period) -> Result<Money, PartnersError> {
        Ok(Money::sum(
            self.currency,
            self.accruals()
                .filter(|(e, a)| period.contains(e.on) && a.share.is_own())
                .map(|(_, a)| a.gross),
        )?)
    }

    /// The accrual at position `seq`.
    pub fn accrual(&self, seq: u64) -> Option<&Accrual> {
        let entry = self.entries.get(usize::try_from(seq).ok()?)?;
        match &entry.kind {
            EntryKind::Accrued(a) => Some(a),
            _ => None,
        }
    }

    fn clawed_against(&self, seq: u64) -> Result<(Money, Money), PartnersError> {
        let zero = Money::zero(self.currency);
        self.clawbacks().filter(|(_, c)| c.against == seq).try_fold(
            (zero, zero),
            |(base, commission), (_, c)| {
                Ok((
                    base.checked_add(c.base)?,
                    commission.checked_add(c.commission)?,
                ))
            },
        )
    }

    /// The revenue-share accrual of `payment` in this ledger, if any.
    fn revenue_share_of(&self, payment: PaymentId) -> Option<(&LedgerEntry, &Accrual)> {
        self.accruals()
            .find(|(_, a)| a.payment == payment && a.component == Component::RevenueShare)
    }

    /// What of `payment` is still refundable here: its amount less what refunds took.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] on overflow.
    pub fn refundable(&self, payment: PaymentId) -> Result<Money, PartnersError> {
        match self.revenue_share_of(payment) {
            Some((entry, accrual)) => {
                let (refunded, _) = self.clawed_against(entry.seq)?;
                Ok(accrual.base.checked_sub(refunded)?)
            }
            None => Ok(Money::zero(self.currency)),
        }
    }

    /// Which payments a refund of `amount` to `customer` returns, and how much of each: the
    /// payment named, or else the customer's most recent payments first (by date, then as
    /// recorded). A refund beyond what is refundable here (money paid before the referral,
    /// which this ledger never saw) covers what is refundable and no more.
    ///
    /// # Errors
    ///
    /// [`PartnersError::NotPositive`] for a refund that is not above zero,
    /// [`PartnersError::Core`] for another currency or an overflow.
    pub fn refund_parts(
        &self,
        customer: CustomerId,
        amount: Money,
        payment: Option<PaymentId>,
    ) -> Result<Vec<(PaymentId, Money)>, PartnersError> {
        Money::zero(self.currency).compare(&amount)?;
        if !amount.is_positive() {
            return Err(PartnersError::NotPositive {
                what: "refund",
                amount: amount.amount(),
            });
        }
        let mut candidates: Vec<(&LedgerEntry, &Accrual)> = self
            .accruals()
            .filter(|(_, a)| {
                a.customer == customer
                    && a.component == Component::RevenueShare
                    && a.share.is_own()
                    && payment.is_none_or(|p| p == a.payment)
            })
            .collect();
        candidates.sort_by_key(|(e, _)| std::cmp::Reverse((e.on, e.seq)));
        let mut left = amount;
        let mut parts = Vec::new();
        for (_, accrual) in candidates {
            if !left.is_positive() {
                break;
            }
            let remaining = self.refundable(accrual.payment)?;
            if !remaining.is_positive() {
                continue;
            }
            let part = left.min(remaining)?;
            parts.push((accrual.payment, part));
            left = left.checked_sub(part)?;
        }
        Ok(parts)
    }

    /// The clawbacks a refund of `part` of `payment` makes in this ledger: the revenue share
    /// in proportion to the part refunded (what is left of it when the refund empties the
    /// payment, so a full refund takes back exactly what was earned and rounding never takes
    /// back more), and the flat rewards the payment earned when it is emptied.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] on overflow or another currency.
    pub fn clawbacks_for(
        &self,
        payment: PaymentId,
        part: Money,
        refund: PaymentId,
    ) -> Result<Vec<Clawback>, PartnersError> {
        let Some((entry, share)) = self.revenue_share_of(payment) else {
            return Ok(Vec::new());
        };
        let (refunded, clawed) = self.clawed_against(entry.seq)?;
        let remaining = share.base.checked_sub(refunded)?;
        if !remaining.is_positive() || !part.is_positive() {
            return Ok(Vec::new());
        }
        let part = part.min(remaining)?;
        let left = share.commission.checked_sub(clawed)?;
        let empties = part == remaining;
        let take = if empties {
            left
        } else {
            let ratio = part
                .amount()
                .checked_div(share.base.amount())
                .ok_or_else(|| overflow("clawback"))?;
            round_commission(share.commission.checked_mul(ratio)?).min(left)?
        };
        let mut out = vec![Clawback {
            customer: share.customer,
            refund,
            payment,
            against: entry.seq,
            base: part,
            commission: take,
        }];
        if empties {
            for (flat_entry, flat) in self
                .accruals()
                .filter(|(_, a)| a.payment == payment && a.component != Component::RevenueShare)
            {
                let (_, already) = self.clawed_against(flat_entry.seq)?;
                let rest = flat.commission.checked_sub(already)?;
                if rest.is_positive() {
                    out.push(Clawback {
                        customer: flat.customer,
                        refund,
                        payment,
                        against: flat_entry.seq,
                        base: Money::zero(self.currency),
                        commission: rest,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The balance after every entry dated on or before `as_of`.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] on overflow.
    pub fn balance(&self, as_of: NaiveDate) -> Result<Money, PartnersError> {
        Ok(Money::sum(
            self.currency,
            self.entries
                .iter()
                .filter(|e| e.on <= as_of)
                .map(|e| e.kind.balance_effect(self.currency)),
        )?)
    }

    /// The totals of the entries dated on or before `as_of`, and what is payable then under
    /// `plan`'s hold period, approval and minimum payout.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] on overflow or a plan in another currency.
    pub fn summary(
        &self,
        as_of: NaiveDate,
        plan: &CommissionPlan,
    ) -> Result<LedgerSummary, PartnersError> {
        let zero = Money::zero(self.currency);
        zero.compare(&plan.min_payout())?;
        let mut cleared_by = as_of.checked_sub_days(Days::new(u64::from(plan.hold_days())));
        if plan.approval() == Approval::Manual {
            let approved = self
                .entries
                .iter()
                .filter(|e| e.on <= as_of)
                .filter_map(|e| match e.kind {
                    EntryKind::Approved { through } => Some(through),
                    _ => None,
                })
                .max();
            cleared_by = match (cleared_by, approved) {
                (Some(hold), Some(approved)) => Some(hold.min(approved)),
                _ => None,
            };
        }
        let (mut earned, mut clawed_back, mut adjusted, mut paid_out) = (zero, zero, zero, zero);
        let (mut cleared, mut held) = (zero, zero);
        for entry in self.entries.iter().filter(|e| e.on <= as_of) {
            let effect = entry.kind.balance_effect(self.currency);
            match &entry.kind {
                EntryKind::Accrued(a) => earned = earned.checked_add(a.commission)?,
                EntryKind::ClawedBack(c) => clawed_back = clawed_back.checked_add(c.commission)?,
                EntryKind::Adjusted { amount, .. } => adjusted = adjusted.checked_add(*amount)?,
                EntryKind::PaidOut { amount, .. } => paid_out = paid_out.checked_add(*amount)?,
                EntryKind::Held { hold, amount, .. } => {
                    let released = self.entries.iter().any(|e| {
                        e.on <= as_of
                            && matches!(&e.kind, EntryKind::Released { hold: h } if h == hold)
                    });
                    if !released {
                        held = held.checked_add(*amount)?;
                    }
                }
                EntryKind::Released { .. } | EntryKind::Approved { .. } => {}
            }
            let earning = !matches!(entry.kind, EntryKind::PaidOut { .. });
            if earning && cleared_by.is_some_and(|c| entry.on <= c) {
                cleared = cleared.checked_add(effect)?;
            }
        }
        let balance = earned
            .checked_sub(clawed_back)?
            .checked_add(adjusted)?
            .checked_sub(paid_out)?;
        let available = balance
            .min(cleared.checked_sub(paid_out)?)?
            .checked_sub(held)?;
        let payable = if !available.is_positive() || available.compare(&plan.min_payout())?.is_lt()
        {
            zero
        } else {
            available
        };
        Ok(LedgerSummary {
            earned,
            clawed_back,
            adjusted,
            paid_out,
            balance,
            held,
            payable,
        })
    }
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
    use crate::ids::CommissionPlanId;
    use rust_decimal_macros::dec;

    use crate::test_support::{CUSTOMER, day, usd};

    fn accrue(l: &mut PartnerLedger, on: NaiveDate, n: u128, base: &str, commission: &str) {
        let c = usd(commission);
        l.append(
            on,
            SourceId::from_u128(n),
            EntryKind::Accrued(Accrual {
                customer: CUSTOMER,
                payment: PaymentId::from_u128(n),
                component: Component::RevenueShare,
                base: usd(base),
                rate_percent: Some(dec!(40)),
                tier: None,
                uncapped: c,
                gross: c,
                commission: c,
                share: Share::Direct,
            }),
        )
        .unwrap();
    }

    fn plan(hold: u32, approval: Approval) -> CommissionPlan {
        CommissionPlan::builder(CommissionPlanId::from_u128(1), "p", Currency::USD)
            .revenue_share(dec!(40))
            .hold_days(hold)
            .min_payout(usd("5"))
            .approval(approval)
            .build()
            .unwrap()
    }

    #[test]
    fn refunds_take_the_most_recent_payment_first_and_stop_at_what_is_refundable() {
        let mut l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        accrue(&mut l, day(1, 5), 1, "100", "40");
        accrue(&mut l, day(2, 5), 2, "50", "20");
        let parts = l.refund_parts(CUSTOMER, usd("80"), None).unwrap();
        assert_eq!(
            parts,
            vec![
                (PaymentId::from_u128(2), usd("50")),
                (PaymentId::from_u128(1), usd("30"))
            ]
        );
        let back = l
            .clawbacks_for(PaymentId::from_u128(1), usd("30"), PaymentId::from_u128(9))
            .unwrap();
        assert_eq!(back[0].commission, usd("12"));
        for c in back {
            l.append(day(2, 20), SourceId::from_u128(9), EntryKind::ClawedBack(c))
                .unwrap();
        }
        assert_eq!(l.refundable(PaymentId::from_u128(1)).unwrap(), usd("70"));
        // 500 finds 70 + 50 still refundable, and the rest never went through this ledger.
        let parts = l.refund_parts(CUSTOMER, usd("500"), None).unwrap();
        assert_eq!(
            parts,
            vec![
                (PaymentId::from_u128(2), usd("50")),
                (PaymentId::from_u128(1), usd("70"))
            ]
        );
        let last = l
            .clawbacks_for(PaymentId::from_u128(1), usd("70"), PaymentId::from_u128(10))
            .unwrap();
        assert_eq!(last[0].commission, usd("28"));
    }

    #[test]
    fn holds_approval_and_the_minimum_decide_what_is_payable() {
        let mut l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        accrue(&mut l, day(1, 5), 1, "100", "40");
        accrue(&mut l, day(1, 25), 2, "10", "4");
        let s = l
            .summary(day(2, 10), &plan(30, Approval::Automatic))
            .unwrap();
        assert_eq!((s.balance, s.payable), (usd("44"), usd("40")));
        // Manual approval: nothing is payable until approved, then only up to the date.
        let manual = plan(0, Approval::Manual);
        assert_eq!(l.summary(day(2, 10), &manual).unwrap().payable, usd("0"));
        l.append(
            day(2, 11),
            SourceId::from_u128(3),
            EntryKind::Approved {
                through: day(1, 10),
            },
        )
        .unwrap();
        assert_eq!(l.summary(day(2, 11), &manual).unwrap().payable, usd("40"));
        let hold = HoldId::from_u128(1);
        l.append(
            day(2, 12),
            SourceId::from_u128(4),
            EntryKind::Held {
                hold,
                amount: usd("36"),
                reason: "review".into(),
            },
        )
        .unwrap();
        // 40 cleared − 36 held = 4: below the minimum.
        let s = l.summary(day(2, 12), &manual).unwrap();
        assert_eq!((s.held, s.payable), (usd("36"), usd("0")));
        let before = l.clone();
        assert_eq!(
            l.append(
                day(2, 13),
                SourceId::from_u128(5),
                EntryKind::Released {
                    hold: HoldId::from_u128(2)
                }
            ),
            Err(PartnersError::UnknownHold(HoldId::from_u128(2)))
        );
        assert_eq!(l, before);
        l.append(
            day(2, 13),
            SourceId::from_u128(5),
            EntryKind::Released { hold },
        )
        .unwrap();
        assert_eq!(l.summary(day(2, 13), &manual).unwrap().payable, usd("40"));
        assert_eq!(
            l.append(
                day(2, 14),
                SourceId::from_u128(6),
                EntryKind::Released { hold }
            ),
            Err(PartnersError::UnknownHold(hold))
        );
    }

    #[test]
    fn bad_entries_are_refused_and_change_nothing() {
        let mut l = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        accrue(&mut l, day(1, 5), 1, "100", "40");
        let before = l.clone();
        let payout = |amount| EntryKind::PaidOut {
            payout: PayoutId::from_u128(1),
            run: None,
            amount,
        };
        assert_eq!(
            l.append(day(1, 6), SourceId::from_u128(2), payout(usd("0"))),
            Err(PartnersError::NotPositive {
                what: "held or paid-out amount",
                amount: dec!(0)
            })
        );
        assert!(matches!(
            l.append(
                day(1, 6),
                SourceId::from_u128(2),
                payout(Money::parse("1", Currency::EUR).unwrap())
            ),
            Err(PartnersError::Core(
                dotmac_core::CoreError::CurrencyMismatch { .. }
            ))
        ));
        assert_eq!(l, before);
        let mut entries = l.entries().to_vec();
        entries[0].seq = 3;
        assert!(matches!(
            PartnerLedger::from_entries(l.partner(), Currency::USD, entries),
            Err(PartnersError::InvalidPartner { .. })
        ));
    }

    #[test]
    fn splits_sum_to_the_whole() {
        let (master, sub) = (PartnerId::new(), PartnerId::new());
        let parts = split_commission(usd("10.01"), &[(master, dec!(30)), (sub, dec!(70))]).unwrap();
        assert_eq!(parts, vec![(master, usd("3.00")), (sub, usd("7.01"))]);
    }
}
