//! `invoice/`: discounts, taxes and rounding on one document.
//!
//! The case goes through `dotmac_billing::document_totals`: its lines as `DocumentLineInput`s
//! (an `amount` is one unit at that price), its discounts as `DocumentDiscount`s, its taxes as
//! exclusive `TaxRate`s (compound ones on the taxes before them), its `tax_rounding` as
//! `TaxRounding`.

use crate::{decimal, same_amount};
use dotmac_billing::{
    DocumentDiscount, DocumentLineInput, DocumentTotalsSettings, TaxRate, TaxRateId, TaxRounding,
    document_totals,
};
use dotmac_core::{Currency, Money, RoundingMode};
use rust_decimal::Decimal;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    currency: String,
    rounding: Option<String>,
    lines: Vec<Line>,
    #[serde(default)]
    discounts: Vec<Discount>,
    #[serde(default)]
    taxes: Vec<Tax>,
    #[serde(default)]
    tax_rounding: CaseTaxRounding,
    expected: Expected,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    amount: Option<String>,
    quantity: Option<String>,
    unit_amount: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
enum Discount {
    Fixed { amount: String },
    Percentage { rate_percent: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tax {
    rate_percent: String,
    #[serde(default)]
    compound: bool,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum CaseTaxRounding {
    #[default]
    PerLine,
    PerInvoice,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    subtotal: Option<String>,
    discount: Option<String>,
    tax: Option<String>,
    total: Option<String>,
}

fn check(what: &str, expected: Option<&String>, actual: Money) -> Result<(), String> {
    match expected {
        Some(text) => same_amount(what, decimal(text)?, actual.amount()),
        None => Ok(()),
    }
}

pub fn run(case: Case) -> Result<(), String> {
    let currency = Currency::from_code(&case.currency).map_err(|e| e.to_string())?;
    let rounding = match case.rounding.as_deref() {
        None | Some("half_up") => RoundingMode::HalfUp,
        Some("half_even") => RoundingMode::HalfEven,
        Some(other) => return Err(format!("unknown rounding {other:?}")),
    };
    let mut lines = Vec::with_capacity(case.lines.len());
    for (index, line) in case.lines.iter().enumerate() {
        let (quantity, unit) = match (&line.amount, &line.quantity, &line.unit_amount) {
            (Some(amount), None, None) => (Decimal::ONE, decimal(amount)?),
            (None, Some(quantity), Some(unit)) => (decimal(quantity)?, decimal(unit)?),
            _ => {
                return Err(format!(
                    "line {index}: give either amount or quantity and unit_amount"
                ));
            }
        };
        lines.push(DocumentLineInput {
            quantity,
            unit_price: Money::new(unit, currency),
        });
    }
    let mut discounts = Vec::with_capacity(case.discounts.len());
    for discount in &case.discounts {
        discounts.push(match discount {
            Discount::Fixed { amount } => DocumentDiscount::Fixed {
                amount: decimal(amount)?,
            },
            Discount::Percentage { rate_percent } => DocumentDiscount::Percentage {
                rate_percent: decimal(rate_percent)?,
            },
        });
    }
    let mut taxes = Vec::with_capacity(case.taxes.len());
    for (index, tax) in case.taxes.iter().enumerate() {
        let id = TaxRateId::from_u128(index as u128 + 1);
        let name = format!("tax {}", index + 1);
        let percent = decimal(&tax.rate_percent)?;
        taxes.push(if tax.compound {
            TaxRate::compound(id, name, percent)
        } else {
            TaxRate::exclusive(id, name, percent)
        });
    }
    let settings = DocumentTotalsSettings {
        rounding,
        discounts,
        taxes,
        tax_rounding: match case.tax_rounding {
            CaseTaxRounding::PerLine => TaxRounding::PerLine,
            CaseTaxRounding::PerInvoice => TaxRounding::PerInvoice,
        },
    };
    let totals = document_totals(currency, &lines, &settings).map_err(|e| e.to_string())?;
    check("subtotal", case.expected.subtotal.as_ref(), totals.subtotal)?;
    check("discount", case.expected.discount.as_ref(), totals.discount)?;
    check("tax", case.expected.tax.as_ref(), totals.tax)?;
    check("total", case.expected.total.as_ref(), totals.total)
}
