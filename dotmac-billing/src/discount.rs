//! Discounts on recurring charges: a percentage or a fixed amount, once, for N periods or
//! forever, never taking a line below zero.

use dotmac_core::{Money, RoundingMode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;

dotmac_core::define_id! {
    /// A discount (coupon) in a tenant's configuration.
    DiscountId
}

/// How much a discount takes off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum DiscountAmount {
    /// A percentage of each eligible line (10 means 10 %).
    Percentage(Decimal),
    /// A fixed amount per document, spread over the eligible lines in order.
    Fixed(Money),
}

/// How many regular periods a discount applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "periods")]
pub enum DiscountDuration {
    /// The first regular document only.
    Once,
    /// The first N regular documents.
    Periods(u32),
    /// Every regular document.
    Forever,
}

/// A discount as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    /// The discount's id.
    pub id: DiscountId,
    /// What it takes off.
    pub amount: DiscountAmount,
    /// For how long.
    pub duration: DiscountDuration,
}

impl Discount {
    /// Checks that the discount is usable.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidDiscount`] for a percentage outside 0..=100 or a negative amount.
    pub fn validate(&self) -> Result<(), BillingError> {
        let bad = |reason| {
            Err(BillingError::InvalidDiscount {
                discount: self.id,
                reason,
            })
        };
        match self.amount {
            DiscountAmount::Percentage(p) if p < Decimal::ZERO || p > Decimal::ONE_HUNDRED => {
                bad("a percentage discount must be between 0 and 100")
            }
            DiscountAmount::Fixed(m) if m.is_negative() => {
                bad("a fixed discount must not be negative")
            }
            _ => Ok(()),
        }
    }
}

/// A discount attached to a subscription, with how often it has been used and which billed
/// periods it discounted.
///
/// The covered periods matter after the discount has run out: a proration in a period
/// (a credit for unused days, or a charge after a change) is discounted by the discounts
/// that covered that period's regular document, whatever their state is now, so a credit
/// never gives back more than was billed for those days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedDiscount {
    /// The discount.
    pub discount: Discount,
    /// Regular documents it has been applied to so far.
    pub periods_applied: u32,
    /// The first and last period index (counted from the billing anchor, both included) of the
    /// regular documents it was applied to; `None` before its first use.
    #[serde(default)]
    pub covered: Option<(i64, i64)>,
}

impl AppliedDiscount {
    /// A discount not used yet.
    pub fn new(discount: Discount) -> Self {
        AppliedDiscount {
            discount,
            periods_applied: 0,
            covered: None,
        }
    }

    /// True while the discount still applies to the next regular document.
    pub fn is_active(&self) -> bool {
        match self.discount.duration {
            DiscountDuration::Once => self.periods_applied < 1,
            DiscountDuration::Periods(n) => self.periods_applied < n,
            DiscountDuration::Forever => true,
        }
    }

    /// True when the regular document of period `index` (from the billing anchor) was
    /// discounted by it.
    pub fn covers(&self, index: i64) -> bool {
        self.covered
            .is_some_and(|(first, last)| first <= index && index <= last)
    }

    /// True when proration lines of period `index` take this discount: it covered that
    /// period, or (a subscription stored before coverage was recorded) it has been used and
    /// is still active, as it was then.
    pub(crate) fn applies_to_prorations_of(&self, index: i64) -> bool {
        match self.covered {
            Some(_) => self.covers(index),
            None => self.periods_applied > 0 && self.is_active(),
        }
    }

    /// Counts one more regular document, billing periods `first..=last`. A discount applies
    /// to consecutive regular documents, so its covered periods stay one range.
    pub(crate) fn record(&mut self, first: i64, last: i64) {
        self.periods_applied = self.periods_applied.saturating_add(1);
        self.covered = Some(match self.covered {
            Some((from, to)) => (from.min(first), to.max(last)),
            None => (first, last),
        });
    }
}

/// Which share of a period a line bills, and in which direction: a fixed discount is a
/// per-period amount, prorated by the same fraction as the line it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    /// The service period part the line covers (`None`: a whole period not given).
    pub(crate) part: Option<dotmac_core::Period>,
    /// `(numerator, denominator)` of the whole period's price the line bills.
    pub(crate) fraction: (i64, i64),
}

/// Running state of one discount across the lines of one document.
#[derive(Clone)]
pub(crate) struct DiscountCursor {
    amount: DiscountAmount,
    /// What is left of a fixed discount, per period part and direction (charge or credit):
    /// each part gets its own prorated pool, spread over its lines in order.
    pools: Vec<(Option<dotmac_core::Period>, bool, Money)>,
}

impl DiscountCursor {
    pub(crate) fn new(discount: &Discount) -> Self {
        DiscountCursor {
            amount: discount.amount,
            pools: Vec::new(),
        }
    }

    /// The discount on a line whose rounded amount after earlier discounts is `remaining`:
    /// rounded once, between zero and `remaining` (so never taking a line below zero, or a
    /// credit above zero). A percentage applies to every discountable line (a proration
    /// credit is reduced by the same percentage as the charge it reverses). A fixed amount
    /// applies only to lines with a `share` of a period (recurring and proration lines): the
    /// part's pool is `amount × fraction`, spread over that part's lines in order, and a
    /// credit line is reduced the same way as the charge it reverses.
    pub(crate) fn take(
        &mut self,
        remaining: Money,
        rounding: RoundingMode,
        share: Option<Share>,
    ) -> Result<Money, BillingError> {
        let currency = remaining.currency();
        let zero = Money::zero(currency);
        let fixed = match self.amount {
            DiscountAmount::Percentage(p) => {
                let off = crate::pricing::percent_of(remaining.amount(), p)?;
                return Ok(Money::new(off, currency).round(rounding));
            }
            DiscountAmount::Fixed(m) => m,
        };
        let Some(share) = share else {
            return Ok(zero);
        };
        if remaining.is_zero() {
            return Ok(zero);
        }
        let credit = remaining.is_negative();
        let magnitude = remaining.abs();
        let pool = match self
            .pools
            .iter_mut()
            .find(|(part, c, _)| *part == share.part && *c == credit)
        {
            Some((_, _, left)) => left,
            None => {
                let (n, d) = share.fraction;
                let start = match (n, d) {
                    (1, 1) => fixed,
                    _ => fixed.mul_ratio(n, d)?,
                };
                self.pools.push((share.part, credit, start));
                match self.pools.last_mut() {
                    Some((_, _, left)) => left,
                    None => return Ok(zero),
                }
            }
        };
        let taken = pool.round(rounding).min(magnitude)?.max(zero)?;
        *pool = pool.checked_sub(taken)?;
        Ok(if credit { taken.negate() } else { taken })
    }
}

/// A discount on a whole document (a coupon), applied after the discounts before it to what
/// is left of the subtotal; see [`document_totals`](crate::invoice::document_totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum DocumentDiscount {
    /// A fixed amount in the document's currency: takes min(amount, what is left), so a coupon
    /// never makes a document negative.
    Fixed {
        /// The coupon's amount.
        amount: Decimal,
    },
    /// A percentage of what is left, rounded to the minor unit.
    Percentage {
        /// 20 means 20 %.
        rate_percent: Decimal,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_core::Currency;

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::USD)
    }

    fn fixed(duration: DiscountDuration) -> Discount {
        Discount {
            id: DiscountId::from_u128(1),
            amount: DiscountAmount::Fixed(usd(500)),
            duration,
        }
    }

    #[test]
    fn coverage_is_the_range_of_discounted_periods() {
        let mut once = AppliedDiscount::new(fixed(DiscountDuration::Once));
        assert!(!once.covers(0) && !once.applies_to_prorations_of(0));
        once.record(3, 4);
        assert!(!once.is_active());
        assert_eq!(once.covered, Some((3, 4)));
        assert!(once.covers(3) && once.covers(4) && !once.covers(5));
        assert!(once.applies_to_prorations_of(4) && !once.applies_to_prorations_of(5));
        let mut legacy = AppliedDiscount::new(fixed(DiscountDuration::Forever));
        legacy.periods_applied = 2;
        assert!(legacy.applies_to_prorations_of(9));
    }

    #[test]
    fn a_fixed_amount_is_prorated_per_part_and_mirrored_on_credits() {
        let mut cursor = DiscountCursor::new(&fixed(DiscountDuration::Forever));
        let share = |fraction| {
            Some(Share {
                part: None,
                fraction,
            })
        };
        let half_up = RoundingMode::HalfUp;
        // 5.00 × 21/31 = 3.387… on a charge, the same back on its credit.
        assert_eq!(
            cursor.take(usd(4200), half_up, share((21, 31))),
            Ok(usd(339))
        );
        assert_eq!(
            cursor.take(usd(-2100), half_up, share((21, 31))),
            Ok(usd(-339))
        );
        // The part's pool is used up by its first line; no share, no fixed discount.
        assert_eq!(cursor.take(usd(100), half_up, share((21, 31))), Ok(usd(0)));
        assert_eq!(cursor.take(usd(100), half_up, None), Ok(usd(0)));
        // Never below zero: a 1.00 line takes 1.00 of a 5.00 pool.
        let mut whole = DiscountCursor::new(&fixed(DiscountDuration::Forever));
        assert_eq!(whole.take(usd(100), half_up, share((1, 1))), Ok(usd(100)));
        assert_eq!(whole.take(usd(1000), half_up, share((1, 1))), Ok(usd(400)));
    }
}
