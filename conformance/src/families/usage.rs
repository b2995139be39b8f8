//! `usage/`: metered aggregation and data allowances for one period.
//!
//! The events become `dotmac_usage::UsageEvent`s aggregated by a `PeriodAggregation`
//! (the README's `weighted_sum`, whose events add to the gauge, is
//! `Aggregation::WeightedSumOfChanges`; `unique_count` counts distinct `unique_id` properties).
//! The allowance is an `AllowancePolicy` (unused included units roll over, capped) and an
//! `AllowancePeriod` with its top-ups, which never roll over; the overage is priced with the
//! case's `PriceModel`.

use std::collections::BTreeMap;

use crate::{decimal, instant, same_amount};
use dotmac_billing::PriceModel;
use dotmac_billing::usage_billing::allowance::{
    AllowancePeriod, AllowancePolicy, IncludedRollover, Rollover, TopUp,
};
use dotmac_billing::usage_billing::rate;
use dotmac_core::{Currency, CustomerId};
use dotmac_usage::{Aggregation, MeterId, PeriodAggregation, UsageEvent, UsageEventId};
use rust_decimal::Decimal;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    aggregation: CaseAggregation,
    period: Window,
    carry_in: Option<String>,
    events: Vec<Event>,
    allowance: Option<Allowance>,
    overage_price: Option<PriceModel>,
    precision: Option<u32>,
    expected: Expected,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum CaseAggregation {
    Count,
    Sum,
    Max,
    Latest,
    UniqueCount,
    WeightedSum,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    at: String,
    value: Option<String>,
    unique_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowance {
    included: String,
    rollover_in: Option<String>,
    #[serde(default)]
    top_ups: Vec<String>,
    rollover_cap: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    quantity: Option<String>,
    billable: Option<String>,
    amount: Option<String>,
    rollover_out: Option<String>,
}

const UNIQUE_ID: &str = "unique_id";

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn check(what: &str, expected: Option<&String>, actual: Decimal) -> Result<(), String> {
    match expected {
        Some(text) => same_amount(what, decimal(text)?, actual),
        None => Ok(()),
    }
}

pub fn run(case: Case) -> Result<(), String> {
    let meter = MeterId::from_u128(1);
    let customer = CustomerId::from_u128(1);
    let aggregation = match case.aggregation {
        CaseAggregation::Count => Aggregation::Count,
        CaseAggregation::Sum => Aggregation::Sum,
        CaseAggregation::Max => Aggregation::Max,
        CaseAggregation::Latest => Aggregation::Latest,
        CaseAggregation::UniqueCount => Aggregation::UniqueCount {
            property: UNIQUE_ID.into(),
        },
        CaseAggregation::WeightedSum => Aggregation::WeightedSumOfChanges,
    };
    let mut events = Vec::with_capacity(case.events.len());
    for (index, e) in case.events.iter().enumerate() {
        let mut properties = BTreeMap::new();
        if let Some(id) = &e.unique_id {
            properties.insert(UNIQUE_ID.to_owned(), id.clone());
        }
        events.push(UsageEvent {
            id: UsageEventId::from_u128(index as u128 + 1),
            customer,
            subscription: None,
            meter,
            quantity: e.value.as_deref().map_or(Ok(Decimal::ZERO), decimal)?,
            timestamp: instant(&e.at)?,
            properties,
        });
    }
    let mut period = PeriodAggregation::new(
        aggregation,
        instant(&case.period.from)?,
        instant(&case.period.to)?,
    )
    .map_err(err)?;
    if let Some(carry_in) = &case.carry_in {
        period = period.with_carry_in(decimal(carry_in)?);
    }
    if let Some(places) = case.precision {
        period = period.with_precision(places).map_err(err)?;
    }
    let quantity = period.quantity(&events).map_err(err)?;
    check("quantity", case.expected.quantity.as_ref(), quantity)?;

    let currency = Currency::USD;
    let (billable, amount, rollover_out) = match &case.allowance {
        None => {
            let amount = match &case.overage_price {
                Some(model) => rate(model, quantity, currency).map_err(err)?.amount(),
                None => Decimal::ZERO,
            };
            (quantity, amount, Decimal::ZERO)
        }
        Some(allowance) => {
            let cap = allowance.rollover_cap.as_deref().map(decimal).transpose()?;
            let policy = AllowancePolicy::new(
                meter,
                decimal(&allowance.included)?,
                currency,
                case.overage_price.clone(),
                &[],
            )
            .and_then(|p| p.with_included_rollover(IncludedRollover::Unused { cap }))
            .map_err(err)?;
            let rollover_in = allowance
                .rollover_in
                .as_deref()
                .map_or(Ok(Decimal::ZERO), decimal)?;
            let start = instant(&case.period.from)?.date_naive();
            let mut open = AllowancePeriod::open(&policy, customer, start, rollover_in);
            for top_up in &allowance.top_ups {
                open.add_top_up(TopUp {
                    quantity: decimal(top_up)?,
                    rollover: Rollover::Expire,
                })
                .map_err(err)?;
            }
            (
                open.overage(quantity).map_err(err)?,
                open.overage_charge(&policy, quantity)
                    .map_err(err)?
                    .amount(),
                open.rollover_out(quantity).map_err(err)?,
            )
        }
    };
    check("billable", case.expected.billable.as_ref(), billable)?;
    check("amount", case.expected.amount.as_ref(), amount)?;
    check(
        "rollover_out",
        case.expected.rollover_out.as_ref(),
        rollover_out,
    )
}
