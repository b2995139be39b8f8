//! `commission/`: tiered commission on one amount, and a partner's ledger for one customer.

use crate::{date, decimal, same_amount};
use dotmac_core::{Currency, CustomerId, Money, PaymentId};
use dotmac_partners::{
    CollectedPayment, CommissionDuration, CommissionPlan, CommissionPlanId, CommissionTier,
    CommissionTiers, EntryKind, PartnerId, PartnerLedger, PartnersError, PayoutId, RevenueTag,
    SourceId, Standing, TierMode, price_payment, share_out,
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
    let err = |e: PartnersError| e.to_string();
    let duration = case
        .plan
        .duration_months
        .map_or(CommissionDuration::Lifetime, CommissionDuration::Months);
    let plan = CommissionPlan::builder(CommissionPlanId::new(), "conformance", currency)
        .revenue_share(decimal(&case.plan.rate_percent)?)
        .duration(duration)
        .hold_days(case.plan.hold_days)
        .min_payout(money(&case.plan.min_payout)?)
        .build()
        .map_err(err)?;
    let (partner, customer) = (PartnerId::new(), CustomerId::new());
    let referred_on = date(&case.customer_start)?;
    let standing = Standing {
        referred_on,
        active_customers: 1,
        customer_rank: 1,
    };
    let mut ledger = PartnerLedger::new(partner, currency);
    for event in &case.events {
        let on = date(&event.on)?;
        let amount = money(&event.amount)?;
        let source = SourceId::new();
        let recorded = match event.kind.as_str() {
            "payment" => {
                record_payment(&plan, &mut ledger, &standing, customer, on, amount, source)
            }
            "refund" => record_refund(&mut ledger, customer, on, amount, source),
            "payout" => {
                let kind = EntryKind::PaidOut {
                    payout: PayoutId::new(),
                    run: None,
                    amount,
                };
                ledger.append(on, source, kind).map(drop)
            }
            other => return Err(format!("unknown event type {other:?}")),
        };
        recorded.map_err(|e| format!("event on {}: {e}", event.on))?;
    }
    let summary = ledger.summary(date(&case.as_of)?, &plan).map_err(err)?;
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

fn record_payment(
    plan: &CommissionPlan,
    ledger: &mut PartnerLedger,
    standing: &Standing,
    customer: CustomerId,
    on: chrono::NaiveDate,
    amount: Money,
    source: SourceId,
) -> Result<(), PartnersError> {
    let payment = CollectedPayment {
        customer,
        payment: PaymentId::new(),
        amount,
        on,
        tag: RevenueTag::default(),
    };
    let earnings = price_payment(plan, ledger, standing, &payment)?;
    let (own, _) = share_out(&earnings, customer, payment.payment, ledger.partner(), None)?;
    for accrual in own {
        ledger.append(on, source, EntryKind::Accrued(accrual))?;
    }
    Ok(())
}

fn record_refund(
    ledger: &mut PartnerLedger,
    customer: CustomerId,
    on: chrono::NaiveDate,
    amount: Money,
    source: SourceId,
) -> Result<(), PartnersError> {
    let refund = PaymentId::new();
    for (payment, part) in ledger.refund_parts(customer, amount, None)? {
        for clawback in ledger.clawbacks_for(payment, part, refund)? {
            ledger.append(on, source, EntryKind::ClawedBack(clawback))?;
        }
    }
    Ok(())
}
