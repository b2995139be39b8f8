//! `commission/`: tiered commission on one amount (by the table, and as a tiered plan through
//! the ledger), and a partner's ledger for one customer (through `PartnersService` on the
//! in-memory partner store).

use crate::{date, decimal, same_amount};
use std::future::Future;

use chrono::NaiveDate;
use dotmac_core::{Currency, CustomerId, FixedClock, Money, PaymentId, TenantId};
use dotmac_partners::{
    CollectedPayment, CommissionDuration, CommissionPlan, CommissionPlanId, CommissionTier,
    CommissionTiers, InMemoryPartnerStore, LedgerFact, PartnerAccount, PartnerId, PartnerKind,
    PartnerStatus, PartnersError, PartnersService, PartnersSettings, PayoutId, RefundedPayment,
    RevenueTag, SourceId, TierBasis, TierMode, TierSchedule,
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
    let amount = Money::new(decimal(&case.amount)?, Currency::USD);
    let expected = decimal(&case.expected)?;
    let got = table.commission(amount).map_err(|e| e.to_string())?;
    same_amount("commission", expected, got.amount())?;
    // And through the ledger: the table as a plan's revenue share by lifetime revenue, one
    // payment of the amount by the partner's first customer, what it earned read back.
    let names = (0..table.tiers().len())
        .map(|n| format!("tier {n}"))
        .collect();
    let schedule =
        TierSchedule::new(TierBasis::LifetimeRevenue, table, names).map_err(|e| e.to_string())?;
    let plan = CommissionPlan::builder(CommissionPlanId::new(), "conformance", Currency::USD)
        .tiered(schedule)
        .build()
        .map_err(|e| e.to_string())?;
    let on = NaiveDate::from_ymd_opt(2026, 1, 1).ok_or("bad date")?;
    let enrolled = enrol(&plan, on)?;
    let payment = CollectedPayment {
        customer: enrolled.customer,
        payment: PaymentId::new(),
        amount,
        on,
        tag: RevenueTag::default(),
    };
    ready(
        enrolled
            .service
            .record_payment(enrolled.tenant, SourceId::new(), payment),
    )?
    .map_err(|e| e.to_string())?;
    let summary = ready(
        enrolled
            .service
            .summary(enrolled.tenant, enrolled.partner, on),
    )?
    .map_err(|e| e.to_string())?;
    same_amount(
        "commission through the ledger",
        expected,
        summary.earned.amount(),
    )
}

/// One partner on `plan`, active from `start`, with one customer attributed that day, on the
/// in-memory partner store.
struct Enrolled {
    service: PartnersService<InMemoryPartnerStore, FixedClock>,
    tenant: TenantId,
    partner: PartnerId,
    customer: CustomerId,
}

fn enrol(plan: &CommissionPlan, start: NaiveDate) -> Result<Enrolled, String> {
    let err = |e: PartnersError| e.to_string();
    let service = PartnersService::new(
        InMemoryPartnerStore::new(),
        FixedClock::new(chrono::DateTime::UNIX_EPOCH),
        PartnersSettings::default(),
    );
    let tenant = TenantId::new();
    let (partner, customer) = (PartnerId::new(), CustomerId::new());
    ready(service.save_plan(tenant, plan))?.map_err(err)?;
    let account = PartnerAccount::apply(
        partner,
        "conformance",
        PartnerKind::Referral,
        plan.id(),
        start,
    )
    .map_err(err)?;
    ready(service.apply(tenant, account))?.map_err(err)?;
    ready(service.change_status(tenant, partner, PartnerStatus::Active, start))?.map_err(err)?;
    ready(service.assign(tenant, customer, partner, start))?.map_err(err)?;
    Ok(Enrolled {
        service,
        tenant,
        partner,
        customer,
    })
}

/// Polls a future of the in-memory partner store, which is ready at once.
fn ready<F: Future>(future: F) -> Result<F::Output, String> {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err("the in-memory partner store waited".into()),
    }
}

/// The case through the partners service on the in-memory store: one partner, active from
/// `customer_start`, the customer attributed to it that day, each event recorded as the
/// outbox would deliver it (refunds name no payment: the most recent first).
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
    let start = date(&case.customer_start)?;
    let Enrolled {
        service,
        tenant,
        partner,
        customer,
    } = enrol(&plan, start)?;
    for event in &case.events {
        let on = date(&event.on)?;
        let amount = money(&event.amount)?;
        let source = SourceId::new();
        let recorded = match event.kind.as_str() {
            "payment" => {
                let payment = CollectedPayment {
                    customer,
                    payment: PaymentId::new(),
                    amount,
                    on,
                    tag: RevenueTag::default(),
                };
                ready(service.record_payment(tenant, source, payment))?.map(drop)
            }
            "refund" => {
                let refund = RefundedPayment {
                    customer,
                    refund: PaymentId::new(),
                    payment: None,
                    amount,
                    on,
                };
                ready(service.record_refund(tenant, source, refund))?.map(drop)
            }
            "payout" => {
                let fact = LedgerFact::Payout {
                    payout: PayoutId::new(),
                    amount,
                };
                ready(service.record_fact(tenant, source, partner, on, fact))?.map(drop)
            }
            other => return Err(format!("unknown event type {other:?}")),
        };
        recorded.map_err(|e| format!("event on {}: {e}", event.on))?;
    }
    let summary = ready(service.summary(tenant, partner, date(&case.as_of)?))?.map_err(err)?;
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
