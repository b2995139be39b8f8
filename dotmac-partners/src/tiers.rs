//! Tiered commission rates on one amount.

use dotmac_core::Money;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::PartnersError;

/// How a tier table prices an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMode {
    /// Each part of the amount at its own tier's rate (like income-tax brackets).
    Marginal,
    /// The highest tier reached prices the whole amount.
    Retroactive,
}

/// One tier: from `from` (inclusive) up to the next tier's `from`, at `rate_percent`.
///
/// The bounds are amounts in the currency of the amount the table prices (a table is written
/// for one currency; [`CommissionTiers::commission`] keeps that currency on its result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionTier {
    /// Inclusive lower bound.
    pub from: Decimal,
    /// Rate in percent (5 means 5 %).
    pub rate_percent: Decimal,
}

/// A validated tier table.
///
/// ```
/// use dotmac_core::{Currency, Money};
/// use dotmac_partners::{CommissionTier, CommissionTiers, TierMode};
///
/// let tier = |from: i64, rate: i64| CommissionTier { from: from.into(), rate_percent: rate.into() };
/// let table = CommissionTiers::new(TierMode::Marginal, vec![tier(0, 3), tier(300_000, 5), tier(500_000, 7)])?;
/// // 3 % of 300k + 5 % of 200k + 7 % of 100k
/// let sales = Money::new(600_000.into(), Currency::USD);
/// assert_eq!(table.commission(sales)?, Money::new(26_000.into(), Currency::USD));
/// # Ok::<(), dotmac_partners::PartnersError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTiers")]
pub struct CommissionTiers {
    mode: TierMode,
    tiers: Vec<CommissionTier>,
}

#[derive(Deserialize)]
struct RawTiers {
    mode: TierMode,
    tiers: Vec<CommissionTier>,
}

impl TryFrom<RawTiers> for CommissionTiers {
    type Error = PartnersError;
    fn try_from(raw: RawTiers) -> Result<Self, Self::Error> {
        CommissionTiers::new(raw.mode, raw.tiers)
    }
}

impl CommissionTiers {
    /// A table of tiers in ascending `from` order.
    ///
    /// # Errors
    ///
    /// [`PartnersError::InvalidTiers`] for an empty table, a negative bound or bounds that do not
    /// strictly ascend; [`PartnersError::InvalidRate`] for a rate outside 0–100 %.
    pub fn new(mode: TierMode, tiers: Vec<CommissionTier>) -> Result<Self, PartnersError> {
        if tiers.is_empty() {
            return Err(PartnersError::InvalidTiers { reason: "no tiers" });
        }
        let mut previous: Option<Decimal> = None;
        for tier in &tiers {
            check_rate(tier.rate_percent)?;
            if tier.from < Decimal::ZERO {
                return Err(PartnersError::InvalidTiers {
                    reason: "a tier starts below zero",
                });
            }
            if previous.is_some_and(|p| tier.from <= p) {
                return Err(PartnersError::InvalidTiers {
                    reason: "tier bounds must strictly ascend",
                });
            }
            previous = Some(tier.from);
        }
        Ok(CommissionTiers { mode, tiers })
    }

    /// The mode.
    pub fn mode(&self) -> TierMode {
        self.mode
    }

    /// The tiers, ascending.
    pub fn tiers(&self) -> &[CommissionTier] {
        &self.tiers
    }

    /// The exact (unrounded) commission on `amount`, in `amount`'s currency (round it with
    /// [`Money::round`] when it is recorded). Amounts below the first tier earn nothing.
    ///
    /// # Errors
    ///
    /// [`PartnersError::NegativeBase`] for a negative amount; [`PartnersError::Core`] on
    /// overflow.
    pub fn commission(&self, amount: Money) -> Result<Money, PartnersError> {
        if amount.is_negative() {
            return Err(PartnersError::NegativeBase(amount));
        }
        self.commission_on(amount.amount())
            .map(|commission| Money::new(commission, amount.currency()))
    }

    fn commission_on(&self, amount: Decimal) -> Result<Decimal, PartnersError> {
        match self.mode {
            TierMode::Retroactive => {
                let reached = self.tiers.iter().rev().find(|t| t.from <= amount);
                reached.map_or(Ok(Decimal::ZERO), |t| percent_of(amount, t.rate_percent))
            }
            TierMode::Marginal => {
                let mut total = Decimal::ZERO;
                let mut tiers = self.tiers.iter().peekable();
                while let Some(tier) = tiers.next() {
                    if amount <= tier.from {
                        break;
                    }
                    let upper = tiers.peek().map_or(amount, |next| next.from.min(amount));
                    let band = upper.checked_sub(tier.from).ok_or(overflow())?;
                    let part = percent_of(band, tier.rate_percent)?;
                    total = total.checked_add(part).ok_or(overflow())?;
                }
                Ok(total)
            }
        }
    }
}

pub(crate) fn check_rate(rate: Decimal) -> Result<(), PartnersError> {
    if rate < Decimal::ZERO || rate > Decimal::ONE_HUNDRED {
        Err(PartnersError::InvalidRate(rate))
    } else {
        Ok(())
    }
}

pub(crate) fn percent_of(amount: Decimal, rate_percent: Decimal) -> Result<Decimal, PartnersError> {
    amount
        .checked_mul(rate_percent)
        .and_then(|p| p.checked_div(Decimal::ONE_HUNDRED))
        .ok_or_else(overflow)
}

fn overflow() -> PartnersError {
    PartnersError::Core(dotmac_core::CoreError::Overflow {
        operation: "commission",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_core::Currency;
    use rust_decimal_macros::dec;

    fn usd(amount: Decimal) -> Money {
        Money::new(amount, Currency::USD)
    }

    fn tier(from: Decimal, rate: Decimal) -> CommissionTier {
        CommissionTier {
            from,
            rate_percent: rate,
        }
    }

    #[test]
    fn retroactive_switches_at_the_bound() {
        let t = CommissionTiers::new(
            TierMode::Retroactive,
            vec![tier(dec!(0), dec!(5)), tier(dec!(1000000), dec!(7))],
        )
        .unwrap();
        assert_eq!(
            t.commission(usd(dec!(999999))).unwrap(),
            usd(dec!(49999.95))
        );
        assert_eq!(t.commission(usd(dec!(1000000))).unwrap(), usd(dec!(70000)));
    }

    #[test]
    fn below_first_tier_earns_nothing() {
        let t = CommissionTiers::new(TierMode::Marginal, vec![tier(dec!(100), dec!(10))]).unwrap();
        assert_eq!(t.commission(usd(dec!(50))).unwrap(), usd(dec!(0)));
        assert_eq!(t.commission(usd(dec!(150))).unwrap(), usd(dec!(5)));
    }

    #[test]
    fn bad_tables_and_amounts_are_refused() {
        assert_eq!(
            CommissionTiers::new(TierMode::Marginal, vec![]),
            Err(PartnersError::InvalidTiers { reason: "no tiers" })
        );
        assert_eq!(
            CommissionTiers::new(
                TierMode::Marginal,
                vec![tier(dec!(10), dec!(1)), tier(dec!(10), dec!(2))]
            ),
            Err(PartnersError::InvalidTiers {
                reason: "tier bounds must strictly ascend"
            })
        );
        assert_eq!(
            CommissionTiers::new(TierMode::Marginal, vec![tier(dec!(0), dec!(101))]),
            Err(PartnersError::InvalidRate(dec!(101)))
        );
        let t = CommissionTiers::new(TierMode::Marginal, vec![tier(dec!(0), dec!(1))]).unwrap();
        assert_eq!(
            t.commission(usd(dec!(-1))),
            Err(PartnersError::NegativeBase(usd(dec!(-1))))
        );
    }
}
