//! `pricing/`: a price model applied to one quantity.
//!
//! The case's `price` object is the serialized form of `dotmac_billing::PriceModel`, so it is
//! deserialized straight into it (with its validation); the quantity goes through
//! `PriceModel::amount`, and the exact, unrounded result is compared.

use crate::{decimal, same_amount};
use dotmac_billing::PriceModel;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    price: PriceModel,
    quantity: String,
    expected: String,
}

pub fn run(case: Case) -> Result<(), String> {
    let quantity = decimal(&case.quantity)?;
    let expected = decimal(&case.expected)?;
    let amount = case.price.amount(quantity).map_err(|e| e.to_string())?;
    same_amount("amount", expected, amount)
}
