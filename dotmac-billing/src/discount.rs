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

/// A discount attached to a subscription, with how often it has been used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedDiscount {
    /// The discount.
    pub discount: Discount,
    /// Regular documents it has been applied to so far.
    pub periods_applied: u32,
}

impl AppliedDiscount {
    /// A discount not used yet.
    pub fn new(discount: Discount) -> Self {
        AppliedDiscount {
            discount,
            periods_applied: 0,
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
}

/// Running state of one discount across the lines of one document.
pub(crate) struct DiscountCursor {
    amount: DiscountAmount,
    /// What is left of a fixed discount on this document.
    left: Option<Money>,
}

impl DiscountCursor {
    pub(crate) fn new(discount: &Discount) -> Self {
        DiscountCursor {
            amount: discount.amount,
            left: match discount.amount {
                DiscountAmount::Fixed(m) => Some(m),
                DiscountAmount::Percentage(_) => None,
            },
        }
    }

    /// The discount on a line whose rounded amount after earlier discounts is `remaining`:
    /// rounded once, between zero and `remaining`. A percentage also applies to a negative
    /// line (a proration credit is reduced by the same percentage as the charge it reverses);
    /// a fixed amount only to positive regular lines (`fixed_allowed`).
    pub(crate) fn take(
        &mut self,
        remaining: Money,
        rounding: RoundingMode,
        fixed_allowed: bool,
    ) -> Result<Money, BillingError> {
        let zero = Money::zero(remaining.currency());
        match self.amount {
            DiscountAmount::Percentage(p) => {
                let off = crate::pricing::percent_of(remaining.amount(), p)?;
                return Ok(Money::new(off, remaining.currency()).round(rounding));
            }
            DiscountAmount::Fixed(_) if !fixed_allowed || !remaining.is_positive() => {
                return Ok(zero);
            }
            DiscountAmount::Fixed(_) => {}
        }
        let wanted = match self.left {
            Some(left) => left.round(rounding),
            None => zero,
        };
        let taken = wanted
            .min(remaining)?
            .max(Money::zero(remaining.currency()))?;
        if let Some(left) = self.left {
            self.left = Some(left.checked_sub(taken)?);
        }
        Ok(taken)
    }
}
