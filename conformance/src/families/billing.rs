//! `billing/`: a subscription's timeline and the documents it produces.
//!
//! The case is replayed through the pure domain API: plans are built with `Plan::builder`, the
//! subscription with `NewSubscription`, every event goes through `change` / `cancel`, and
//! `bill_due` is run up to each event's eve and finally up to `until`. The documents of each
//! issue date are summed (an invoice and a credit note of one day are one entry) and the days
//! whose sum is not zero are compared, in date order, with `expected`.

use std::collections::{BTreeMap, HashMap};

use crate::{date, decimal, same_amount};
use chrono::NaiveDate;
use dotmac_billing::{
    BillingTiming, CancelTiming, ChangeTiming, Charge, DocumentSettings, FirstPeriod, Invoice,
    PendingCharge, Plan, ProrationBehavior, ProrationMode, Subscription, SubscriptionChange,
    bill_due, cancel, change,
};
use dotmac_core::{
    BillingInterval, Currency, CustomerId, Money, PlanId, ProductId, RoundingMode, SubscriptionId,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    currency: String,
    #[serde(default = "half_up")]
    rounding: String,
    #[serde(default = "actual_days")]
    proration: String,
    #[serde(default = "invoice_now")]
    proration_behavior: String,
    plans: BTreeMap<String, CasePlan>,
    subscription: CaseSubscription,
    #[serde(default)]
    events: Vec<CaseEvent>,
    until: String,
    expected: Vec<Expected>,
}

fn half_up() -> String {
    "half_up".into()
}
fn actual_days() -> String {
    "actual_days".into()
}
fn invoice_now() -> String {
    "invoice_now".into()
}
fn one() -> u32 {
    1
}
fn in_advance() -> String {
    "in_advance".into()
}
fn zero() -> String {
    "0".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasePlan {
    amount: String,
    interval: String,
    #[serde(default = "one")]
    interval_count: u32,
    #[serde(default = "in_advance")]
    billing: String,
    #[serde(default)]
    trial_days: u32,
    #[serde(default = "zero")]
    setup_fee: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSubscription {
    plan: String,
    start: String,
    billing_anchor: Option<String>,
    first_period: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseEvent {
    on: String,
    change_plan: Option<String>,
    cancel: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    date: String,
    total: String,
}

struct Replay {
    plans: HashMap<PlanId, Plan>,
    settings: DocumentSettings,
    sub: Subscription,
    pending: Vec<PendingCharge>,
    documents: Vec<Invoice>,
}

impl Replay {
    fn bill(&mut self, as_of: NaiveDate) -> Result<(), String> {
        let out = bill_due(&self.sub, &self.plans, &self.pending, as_of, &self.settings)
            .map_err(|e| e.to_string())?;
        self.sub = out.subscription;
        self.pending.retain(|p| !out.consumed.contains(&p.id));
        self.documents.extend(out.invoices);
        Ok(())
    }
}

pub fn run(case: Case) -> Result<(), String> {
    let currency = Currency::from_code(&case.currency).map_err(|e| e.to_string())?;
    let rounding: RoundingMode = case.rounding.parse().map_err(|e| format!("{e}"))?;
    let proration = match case.proration.as_str() {
        "actual_days" => ProrationMode::ActualDays,
        "fixed_30_days" => ProrationMode::Fixed30Days,
        "none" => ProrationMode::None,
        other => return Err(format!("unknown proration {other:?}")),
    };
    let behavior = match case.proration_behavior.as_str() {
        "invoice_now" => ProrationBehavior::InvoiceNow,
        "next_invoice" => ProrationBehavior::NextInvoice,
        other => return Err(format!("unknown proration_behavior {other:?}")),
    };
    let start = date(&case.subscription.start)?;
    let product = ProductId::from_u128(1);
    let mut ids = HashMap::new();
    let mut plans = HashMap::new();
    for (n, (name, p)) in case.plans.iter().enumerate() {
        let id = PlanId::from_u128(100 + n as u128);
        let amount = Money::new(decimal(&p.amount)?, currency);
        let interval = BillingInterval::new(
            p.interval.parse().map_err(|e| format!("{e}"))?,
            p.interval_count,
        )
        .map_err(|e| e.to_string())?;
        let timing = match p.billing.as_str() {
            "in_advance" => BillingTiming::InAdvance,
            "in_arrears" => BillingTiming::InArrears,
            other => return Err(format!("unknown billing {other:?}")),
        };
        let mut builder = Plan::builder(id, product, name.clone())
            .interval(interval)
            .timing(timing)
            .trial_days(p.trial_days)
            .charge(Charge::recurring_flat([amount]));
        let fee = decimal(&p.setup_fee)?;
        if !fee.is_zero() {
            builder = builder.setup_fee(Money::new(fee, currency));
        }
        let plan = builder.build(start).map_err(|e| e.to_string())?;
        ids.insert(name.clone(), id);
        plans.insert(id, plan);
    }
    let plan_id = |name: &str| {
        ids.get(name)
            .copied()
            .ok_or(format!("unknown plan {name:?}"))
    };
    let first_period = match case.subscription.first_period.as_deref() {
        None | Some("prorate") => FirstPeriod::Prorate,
        Some("defer") => FirstPeriod::Defer,
        Some(other) => return Err(format!("unknown first_period {other:?}")),
    };
    let first_plan = plan_id(&case.subscription.plan)?;
    let plan = plans.get(&first_plan).ok_or("plan vanished")?;
    let mut new =
        dotmac_billing::NewSubscription::new(CustomerId::from_u128(7), first_plan, currency, start)
            .id(SubscriptionId::from_u128(9))
            .first_period(first_period)
            .proration(proration);
    if let Some(anchor) = &case.subscription.billing_anchor {
        new = new.anchor(date(anchor)?);
    }
    let sub = new.create(plan, currency).map_err(|e| e.to_string())?;
    let mut replay = Replay {
        plans,
        settings: DocumentSettings {
            rounding,
            ..DocumentSettings::default()
        },
        sub,
        pending: Vec::new(),
        documents: Vec::new(),
    };
    let mut events = Vec::new();
    for e in &case.events {
        events.push((date(&e.on)?, e));
    }
    events.sort_by_key(|(on, _)| *on);
    for (on, event) in events {
        // Everything due before the event's day is billed first; the event takes effect at the
        // start of its day, before that day's bill run.
        if let Some(eve) = on.pred_opt() {
            replay.bill(eve)?;
        }
        let outcome = match (&event.change_plan, &event.cancel) {
            (Some(target), None) => change(
                &replay.sub,
                &replay.plans,
                &SubscriptionChange::Plan {
                    plan: plan_id(target)?,
                    version: None,
                },
                on,
                ChangeTiming::Immediate,
                behavior,
                &replay.settings,
            ),
            (None, Some(how)) => {
                let timing = match how.as_str() {
                    "immediate" => CancelTiming::Immediate,
                    "end_of_period" => CancelTiming::EndOfPeriod,
                    other => return Err(format!("unknown cancel {other:?}")),
                };
                cancel(
                    &replay.sub,
                    &replay.plans,
                    on,
                    timing,
                    behavior,
                    &replay.settings,
                )
            }
            _ => return Err("an event needs exactly one of change_plan and cancel".into()),
        }
        .map_err(|e| e.to_string())?;
        replay.sub = outcome.subscription;
        replay.pending.extend(outcome.pending);
        replay.documents.extend(outcome.invoice);
    }
    replay.bill(date(&case.until)?)?;
    let until = date(&case.until)?;
    // Documents issued the same day count as one entry, their sum; a day summing to zero is not
    // listed.
    let mut by_day: BTreeMap<NaiveDate, rust_decimal::Decimal> = BTreeMap::new();
    for d in replay.documents.iter().filter(|d| d.issue_date <= until) {
        let sum = by_day.entry(d.issue_date).or_default();
        *sum = sum
            .checked_add(d.total.amount())
            .ok_or("document totals overflow")?;
    }
    let got: Vec<(NaiveDate, rust_decimal::Decimal)> =
        by_day.into_iter().filter(|(_, t)| !t.is_zero()).collect();
    if got.len() != case.expected.len() {
        return Err(format!(
            "expected {} dated total(s), got {}: {:?}",
            case.expected.len(),
            got.len(),
            got
        ));
    }
    for (i, (want, (on, total))) in case.expected.iter().zip(&got).enumerate() {
        let want_date = date(&want.date)?;
        if want_date != *on {
            return Err(format!(
                "entry {i}: expected date {want_date}, got {on} (all: {got:?})"
            ));
        }
        same_amount(&format!("total on {on}"), decimal(&want.total)?, *total)?;
    }
    Ok(())
}
