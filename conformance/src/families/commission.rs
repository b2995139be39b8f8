//! `commission/`: tiered commission on one amount, and a partner's ledger for one customer.

use crate::{date, decimal, same_amount};
use dotmac_core::{Currency, CustomerId, Money, PaymentId};
use dotmac_partners::{
    CommissionDuration, CommissionPlan, CommissionTier, CommissionTiers, PartnerId, ReferralLedger,
    TierMode,
};
use serde::Deserialize;

/// The two shapes the family README defines; each refuses unknown fields.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Case {
    Tiered(TieredCase),
    Ledger(LedgerCase),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TieredCase {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    plan: TieredPlan,
    amount: String,
    expected: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TieredPlan {
    tier_mode: String,
    tiers: Vec<Tier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tier {
    from: String,
    rate_percent: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerCase {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    plan: LedgerPlan,
    customer_start: String,
    events: Vec<Event>,
    as_of: String,
    expected: Expected,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerPlan {
    rate_percent: String,
    duration_months: Option<u32>,
    hold_days: u32,
    min_payout: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    on: String,
    #[serde(rename = "type")]
    kind: String,
    amount: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    earned: Option<String>,
    clawed_back: Option<String>,
    balance: Option<String>,
    payable: Option<String>,
}

pub fn run(case: Case) -> Result<(), String> {
    match case {
        Case::Tiered(case) => run_tiered(case),
        Case::Ledger(case) => run_ledger(case),
    }
}

fn run_tiered(case: TieredCase) -> Result<(), String> {
    let mode = match case.plan.tier_mode.as_str() {
        "marginal" => TierMode::Marginal,
        "retroactive" => TierMode::Retroactive,
        other => return Err(format!("unknown tier_mode {other:?}")),
    };
    let tiers = case
        .plan
        .tiers
        .iter()
        .map(|t| {
            Ok(CommissionTier {
                from: decimal(&t.from)?,
                rate_percent: decimal(&t.rate_percent)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let table = CommissionTiers::new(mode, tiers).map_err(|e| e.to_string())?;
    // The format carries no currency; the table keeps the amount's, so any one will do.
    let got = table
        .commission(Money::new(decimal(&case.amount)?, Currency::USD))
        .map_err(|e| e.to_string())?;
    same_amount("commission", decimal(&case.expected)?, got.amount())
}

fn run_ledger(case: LedgerCase) -> Result<(), String> {
    // The format carries no currency; a two-decimal one matches its amounts.
    let currency = Currency::USD;
    let money = |s: &str| decimal(s).map(|d| Money::new(d, currency));
    let duration = case
        .plan
        .duration_months
        .map_or(CommissionDuration::Lifetime, CommissionDuration::Months);
    let plan = CommissionPlan::new(
        decimal(&case.plan.rate_percent)?,
        duration,
        case.plan.hold_days,
        money(&case.plan.min_payout)?,
    )
    .map_err(|e| e.to_string())?;
    let mut ledger = ReferralLedger::new(
        PartnerId::new(),
        CustomerId::new(),
        date(&case.customer_start)?,
        plan,
    );
    for event in &case.events {
        let on = date(&event.on)?;
        let amount = money(&event.amount)?;
        let recorded = match event.kind.as_str() {
            "payment" => ledger
                .record_payment(PaymentId::new(), on, amount)
                .map(|_| ()),
            "refund" => ledger
                .record_refund(PaymentId::new(), on, amount)
                .map(|_| ()),
            "payout" => ledger.record_payout(on, amount).map(|_| ()),
            other => return Err(format!("unknown event type {other:?}")),
        };
        recorded.map_err(|e| format!("event on {}: {e}", event.on))?;
    }
    let summary = ledger
        .summary(date(&case.as_of)?)
        .map_err(|e| e.to_string())?;
    let checks = [
        ("earned", &case.expected.earned, summary.earned),
        (
            "clawed_back",
            &case.expected.clawed_back,
            summary.clawed_back,
        ),
        ("balance", &case.expected.balance, summary.balance),
        ("payable", &case.expected.payable, summary.payable),
    ];
    for (what, want, got) in checks {
        if let Some(want) = want {
            same_amount(what, decimal(want)?, got.amount())?;
        }
    }
    Ok(())
}
