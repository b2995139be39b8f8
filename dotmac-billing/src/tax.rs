//! Taxes: exclusive and inclusive rates, several per line, compound rates, exemptions.

use dotmac_core::{Money, RoundingMode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;

dotmac_core::define_id! {
    /// A tax rate in a tenant's configuration.
    TaxRateId
}

/// Whether a rate is added on top of the price or already contained in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaxMode {
    /// Added on top of the line's net amount (US sales tax, B2B VAT).
    #[default]
    Exclusive,
    /// Contained in the line's amount (consumer VAT prices).
    Inclusive,
}

/// How a rate's base is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaxBase {
    /// The line's net amount after discounts.
    #[default]
    Net,
    /// The net amount plus every tax listed before this one on the line (Quebec QST on GST,
    /// taxes on taxes in telecoms).
    Compound,
}

/// One tax rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRate {
    /// The rate's id.
    pub id: TaxRateId,
    /// Its name on invoices ("VAT 20 %").
    pub name: String,
    /// 20 means 20 %.
    pub percent: Decimal,
    /// Exclusive or inclusive.
    pub mode: TaxMode,
    /// Net or compound base (compound applies to exclusive rates only).
    pub base: TaxBase,
}

impl TaxRate {
    /// An exclusive rate on the net amount.
    pub fn exclusive(id: TaxRateId, name: impl Into<String>, percent: Decimal) -> Self {
        TaxRate {
            id,
            name: name.into(),
            percent,
            mode: TaxMode::Exclusive,
            base: TaxBase::Net,
        }
    }

    /// An inclusive rate.
    pub fn inclusive(id: TaxRateId, name: impl Into<String>, percent: Decimal) -> Self {
        TaxRate {
            mode: TaxMode::Inclusive,
            ..TaxRate::exclusive(id, name, percent)
        }
    }

    /// An exclusive rate on the net amount plus the taxes before it.
    pub fn compound(id: TaxRateId, name: impl Into<String>, percent: Decimal) -> Self {
        TaxRate {
            base: TaxBase::Compound,
            ..TaxRate::exclusive(id, name, percent)
        }
    }

    /// Checks that the rate is usable.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidTaxRate`] for a negative rate or a compound inclusive rate.
    pub fn validate(&self) -> Result<(), BillingError> {
        if self.percent < Decimal::ZERO {
            return Err(BillingError::InvalidTaxRate {
                rate: self.id,
                reason: "the percentage must not be negative",
            });
        }
        if self.mode == TaxMode::Inclusive && self.base == TaxBase::Compound {
            return Err(BillingError::InvalidTaxRate {
                rate: self.id,
                reason: "inclusive rates cannot be compound",
            });
        }
        Ok(())
    }
}

/// Which rates a customer does not pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "exempt", content = "rates")]
pub enum TaxExemption {
    /// Pays every rate.
    #[default]
    None,
    /// Pays no tax (a charity, a reseller with a certificate).
    All,
    /// Does not pay these rates.
    Rates(Vec<TaxRateId>),
}

impl TaxExemption {
    fn exempts(&self, rate: TaxRateId) -> bool {
        match self {
            TaxExemption::None => false,
            TaxExemption::All => true,
            TaxExemption::Rates(ids) => ids.contains(&rate),
        }
    }
}

/// One rate's total on a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxSummary {
    /// The rate.
    pub rate: TaxRateId,
    /// Its percentage when applied.
    pub percent: Decimal,
    /// Exclusive or inclusive.
    pub mode: TaxMode,
    /// The sum of the bases it was applied to.
    pub taxable: Money,
    /// The sum of the rounded per-line amounts.
    pub amount: Money,
}

/// How a document's taxes are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxRounding {
    /// Each tax of each line is rounded; the document's tax is their sum.
    #[default]
    PerLine,
    /// The document's unrounded taxes are summed and rounded once.
    PerInvoice,
}

/// The taxes of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineTax {
    /// Every tax on the line, rounded per rate.
    pub(crate) total: Money,
    /// The part of `total` added on top of the line (exclusive rates).
    pub(crate) exclusive: Money,
}

/// Computes the taxes of a line whose amount after discount is `amount`, rounding each rate's
/// amount once, and adds them to `summaries`.
///
/// Inclusive rates are extracted first: the net base is `amount / (1 + Σ inclusive rates)`.
/// Exclusive rates apply to that base; compound ones to the base plus the taxes before them.
pub(crate) fn apply_taxes(
    amount: Money,
    rates: &[TaxRate],
    exemption: &TaxExemption,
    rounding: RoundingMode,
    summaries: &mut Vec<TaxSummary>,
) -> Result<LineTax, BillingError> {
    line_taxes(amount, rates, exemption, Some(rounding), summaries)
}

/// [`apply_taxes`], rounding each rate's amount with `rounding`, or keeping every amount
/// exact (compound rates then apply to the exact taxes before them) with `None`.
pub(crate) fn line_taxes(
    amount: Money,
    rates: &[TaxRate],
    exemption: &TaxExemption,
    rounding: Option<RoundingMode>,
    summaries: &mut Vec<TaxSummary>,
) -> Result<LineTax, BillingError> {
    let currency = amount.currency();
    let mut total = Money::zero(currency);
    let mut exclusive = Money::zero(currency);
    if rates.is_empty() || matches!(exemption, TaxExemption::All) {
        return Ok(LineTax { total, exclusive });
    }
    let hundred = Decimal::ONE_HUNDRED;
    let inclusive_overflow = || {
        BillingError::Core(dotmac_core::CoreError::Overflow {
            operation: "inclusive tax",
        })
    };
    let inclusive_sum = dotmac_core::checked_sum(
        rates
            .iter()
            .filter(|r| r.mode == TaxMode::Inclusive && !exemption.exempts(r.id))
            .map(|r| r.percent),
        "inclusive tax",
    )?;
    let base = if inclusive_sum.is_zero() {
        amount
    } else {
        let divisor = inclusive_sum
            .checked_div(hundred)
            .and_then(|share| Decimal::ONE.checked_add(share))
            .ok_or_else(inclusive_overflow)?;
        Money::new(
            amount
                .amount()
                .checked_div(divisor)
                .ok_or_else(inclusive_overflow)?,
            currency,
        )
    };
    for rate in rates {
        if exemption.exempts(rate.id) {
            continue;
        }
        let taxable = match (rate.mode, rate.base) {
            (TaxMode::Exclusive, TaxBase::Compound) => base.checked_add(total)?,
            _ => base,
        };
        let exact = Money::new(
            crate::pricing::percent_of(taxable.amount(), rate.percent)?,
            currency,
        );
        let tax = rounding.map_or(exact, |mode| exact.round(mode));
        total = total.checked_add(tax)?;
        if rate.mode == TaxMode::Exclusive {
            exclusive = exclusive.checked_add(tax)?;
        }
        match summaries.iter_mut().find(|s| s.rate == rate.id) {
            Some(s) => {
                s.taxable = s.taxable.checked_add(taxable)?;
                s.amount = s.amount.checked_add(tax)?;
            }
            None => summaries.push(TaxSummary {
                rate: rate.id,
                percent: rate.percent,
                mode: rate.mode,
                taxable,
                amount: tax,
            }),
        }
    }
    Ok(LineTax { total, exclusive })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_core::Currency;
    use rust_decimal_macros::dec;

    fn usd(s: &str) -> Money {
        Money::parse(s, Currency::USD).unwrap()
    }

    #[test]
    fn gst_then_compound_qst() {
        let gst = TaxRate::exclusive(TaxRateId::from_u128(1), "GST", dec!(5));
        let qst = TaxRate::compound(TaxRateId::from_u128(2), "QST", dec!(9.5));
        let mut summaries = Vec::new();
        let line = apply_taxes(
            usd("100"),
            &[gst, qst],
            &TaxExemption::None,
            RoundingMode::HalfUp,
            &mut summaries,
        )
        .unwrap();
        // GST 5.00; QST 9.5 % of 105.00 = 9.975 → 9.98
        assert_eq!(line.total, usd("14.98"));
        assert_eq!(line.exclusive, usd("14.98"));
        assert_eq!(summaries.len(), 2);
    }

    #[test]
    fn inclusive_vat_is_extracted_and_exemptions_apply() {
        let vat = TaxRate::inclusive(TaxRateId::from_u128(3), "VAT", dec!(20));
        let mut summaries = Vec::new();
        let line = apply_taxes(
            usd("12"),
            std::slice::from_ref(&vat),
            &TaxExemption::None,
            RoundingMode::HalfUp,
            &mut summaries,
        )
        .unwrap();
        assert_eq!(line.total, usd("2"));
        assert_eq!(line.exclusive, usd("0"));
        let exempt = apply_taxes(
            usd("12"),
            std::slice::from_ref(&vat),
            &TaxExemption::Rates(vec![vat.id]),
            RoundingMode::HalfUp,
            &mut summaries,
        )
        .unwrap();
        assert!(exempt.total.is_zero());
        assert!(
            TaxRate::inclusive(TaxRateId::from_u128(4), "x", dec!(-1))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn inclusive_rates_that_overflow_are_an_error_not_a_panic() {
        let rates = [
            TaxRate::inclusive(TaxRateId::from_u128(1), "a", Decimal::MAX),
            TaxRate::inclusive(TaxRateId::from_u128(2), "b", Decimal::MAX),
        ];
        let mut summaries = Vec::new();
        assert_eq!(
            apply_taxes(
                usd("10"),
                &rates,
                &TaxExemption::None,
                RoundingMode::HalfUp,
                &mut summaries,
            ),
            Err(BillingError::Core(dotmac_core::CoreError::Overflow {
                operation: "inclusive tax"
            }))
        );
        assert!(summaries.is_empty());
    }
}
