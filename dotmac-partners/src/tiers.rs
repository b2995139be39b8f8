//! Tiered commission rates on one amount.

use dotmac_core::Money;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{PartnersError, overflow};

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

    /// The position of the highest tier `measure` reaches (`from <= measure`), if any.
    pub fn tier_reached(&self, measure: Decimal) -> Option<usize> {
        self.tiers.iter().rposition(|t| t.from <= measure)
    }

    /// The exact commission the part of a running total between `before` and `after` earns:
    /// `commission(after) − commission(before)`, with both as plain amounts. In marginal mode
    /// that is each part of the increase at its band's rate; in retroactive mode it also
    /// re-prices `before` when the increase crosses into a higher tier.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Core`] on overflow.
    pub fn increment(&self, before: Decimal, after: Decimal) -> Result<Decimal, PartnersError> {
        let high = self.commission_on(after.max(Decimal::ZERO))?;
        let low = self.commission_on(before.max(Decimal::ZERO))?;
        high.checked_sub(low).ok_or_else(|| overflow("commission"))
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
                    let band = upper
                        .checked_sub(tier.from)
                        .ok_or_else(|| overflow("commission"))?;
                    let part = percent_of(band, tier.rate_percent)?;
                    total = total
                        .checked_add(part)
                        .ok_or_else(|| overflow("commission"))?;
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
        .ok_or_else(|| overflow("commission"))
}

/// What a tier schedule measures a partner by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum TierBasis {
    /// Everything the partner's customers paid, net of refunds, since the partner started.
    LifetimeRevenue,
    /// What the partner's customers paid, net of refunds, in the `months` up to the payment.
    TrailingRevenue {
        /// The length of the trailing window.
        months: u32,
    },
    /// How many customers are attributed to the partner on the payment's day. In marginal
    /// mode each customer earns at the tier of its own rank (the 11th customer referred at the
    /// tier from 10); in retroactive mode every customer at the tier the count reaches.
    ActiveCustomers,
}

/// A partner programme's levels: a tier table (the rates, marginal or retroactive), what the
/// partner is measured by, and a name per tier (bronze, silver, …).
///
/// ```
/// use dotmac_partners::{TierBasis, TierMode, TierSchedule};
/// use rust_decimal::Decimal;
///
/// let programme = TierSchedule::example_programme();
/// assert_eq!(programme.basis(), TierBasis::LifetimeRevenue);
/// assert_eq!(programme.tiers().mode(), TierMode::Retroactive);
/// let (name, rate) = programme.level(Decimal::from(160_000)).unwrap();
/// assert_eq!((name, rate), ("gold", Decimal::from(10)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSchedule")]
pub struct TierSchedule {
    basis: TierBasis,
    tiers: CommissionTiers,
    names: Vec<String>,
}

#[derive(Deserialize)]
struct RawSchedule {
    basis: TierBasis,
    tiers: CommissionTiers,
    names: Vec<String>,
}

impl TryFrom<RawSchedule> for TierSchedule {
    type Error = PartnersError;
    fn try_from(raw: RawSchedule) -> Result<Self, Self::Error> {
        TierSchedule::new(raw.basis, raw.tiers, raw.names)
    }
}

impl TierSchedule {
    /// A schedule with one name per tier, in the table's order.
    ///
    /// # Errors
    ///
    /// [`PartnersError::InvalidTiers`] when the names do not match the tiers one for one or
    /// one is empty, or the trailing window is zero months.
    pub fn new(
        basis: TierBasis,
        tiers: CommissionTiers,
        names: Vec<String>,
    ) -> Result<Self, PartnersError> {
        if names.len() != tiers.tiers().len() {
            return Err(PartnersError::InvalidTiers {
                reason: "one name per tier",
            });
        }
        if names.iter().any(|n| n.trim().is_empty()) {
            return Err(PartnersError::InvalidTiers {
                reason: "a tier name is empty",
            });
        }
        if basis == (TierBasis::TrailingRevenue { months: 0 }) {
            return Err(PartnersError::InvalidTiers {
                reason: "a trailing window of zero months",
            });
        }
        Ok(TierSchedule {
            basis,
            tiers,
            names,
        })
    }

    /// The platform's example programme, measured by lifetime revenue and retroactive (the
    /// level reached prices each payment whole): bronze from 0 at 5 %, silver from 50,000 at
    /// 7 %, gold from 150,000 at 10 %, platinum from 500,000 at 12 %.
    pub fn example_programme() -> Self {
        let tier = |from: i64, rate: i64| CommissionTier {
            from: Decimal::from(from),
            rate_percent: Decimal::from(rate),
        };
        TierSchedule {
            basis: TierBasis::LifetimeRevenue,
            tiers: CommissionTiers {
                mode: TierMode::Retroactive,
                tiers: vec![
                    tier(0, 5),
                    tier(50_000, 7),
                    tier(150_000, 10),
                    tier(500_000, 12),
                ],
            },
            names: ["bronze", "silver", "gold", "platinum"]
                .map(String::from)
                .to_vec(),
        }
    }

    /// What partners are measured by.
    pub fn basis(&self) -> TierBasis {
        self.basis
    }

    /// The tier table.
    pub fn tiers(&self) -> &CommissionTiers {
        &self.tiers
    }

    /// The tier names, in the table's order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The name of tier `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.names.get(index).map(String::as_str)
    }

    /// The level (name and rate) `measure` reaches, if it reaches the first tier.
    pub fn level(&self, measure: Decimal) -> Option<(&str, Decimal)> {
        let index = self.tiers.tier_reached(measure)?;
        let name = self.name(index)?;
        let tier = self.tiers.tiers().get(index)?;
        Some((name, tier.rate_percent))
    }
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
    fn increments_sum_to_the_commission_on_the_total() {
        let tiers = vec![tier(dec!(0), dec!(5)), tier(dec!(100), dec!(10))];
        for mode in [TierMode::Marginal, TierMode::Retroactive] {
            let t = CommissionTiers::new(mode, tiers.clone()).unwrap();
            let parts = [dec!(40), dec!(50), dec!(30), dec!(80)];
            let mut total = dec!(0);
            let mut sum = dec!(0);
            for part in parts {
                sum += t.increment(total, total + part).unwrap();
                total += part;
            }
            assert_eq!(usd(sum), t.commission(usd(total)).unwrap(), "{mode:?}");
        }
        // Marginal: 90 → 120 is 10 at 5 % and 20 at 10 %.
        let m = CommissionTiers::new(TierMode::Marginal, tiers).unwrap();
        assert_eq!(m.increment(dec!(90), dec!(120)).unwrap(), dec!(2.5));
        assert_eq!(m.tier_reached(dec!(99.99)), Some(0));
        assert_eq!(m.tier_reached(dec!(100)), Some(1));
    }

    #[test]
    fn the_example_programme_names_its_levels() {
        let p = TierSchedule::example_programme();
        let level = |m: i64| p.level(Decimal::from(m)).map(|(n, r)| (n.to_owned(), r));
        assert_eq!(level(0), Some(("bronze".into(), dec!(5))));
        assert_eq!(level(49_999), Some(("bronze".into(), dec!(5))));
        assert_eq!(level(50_000), Some(("silver".into(), dec!(7))));
        assert_eq!(level(150_000), Some(("gold".into(), dec!(10))));
        assert_eq!(level(500_000), Some(("platinum".into(), dec!(12))));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<TierSchedule>(&json).unwrap(), p);
        assert_eq!(
            TierSchedule::new(
                TierBasis::LifetimeRevenue,
                p.tiers().clone(),
                vec!["x".into()]
            ),
            Err(PartnersError::InvalidTiers {
                reason: "one name per tier"
            })
        );
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
