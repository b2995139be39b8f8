//! Shared by the sqlx benchmarks (included with `#[path]`, not a bench of its own).
#![allow(dead_code)]

use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac_core::{Currency, CustomerId, EventId, InvoiceId, Money, RoundingMode, SubscriptionId};
use dotmac_sqlx::{ChunkClaim, InvoiceLineRecord, InvoiceRecord, OutboxEvent};
use rust_decimal::Decimal;

pub(crate) fn issued_on() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 1).unwrap_or_default()
}

/// A 3-line ISP invoice (plan, data overage, 20 % VAT) computed with dotmac-core money, rounded
/// half-up per line: a stand-in for the billing engine, as cheap as the real per-line work.
pub(crate) fn invoice_for(sub: SubscriptionId) -> InvoiceRecord {
    let seed = (sub.as_uuid().as_u128() % 1000) as i64;
    let plan = [
        Decimal::new(2999, 2),
        Decimal::new(4999, 2),
        Decimal::new(7999, 2),
    ][(seed % 3) as usize];
    let over_gb = Decimal::new(seed % 40, 0);
    let overage =
        Money::new(over_gb * Decimal::new(50, 2), Currency::EUR).round(RoundingMode::HalfUp);
    let net = Money::new(plan, Currency::EUR)
        .checked_add(overage)
        .unwrap_or(overage);
    let tax = net
        .checked_mul(Decimal::new(20, 2))
        .unwrap_or(net)
        .round(RoundingMode::HalfUp);
    let total = net.checked_add(tax).unwrap_or(net);
    InvoiceRecord {
        id: InvoiceId::new(),
        customer: CustomerId::from_uuid(sub.as_uuid()),
        subscription: Some(sub),
        issued_on: issued_on(),
        total,
        status: "open".into(),
        lines: vec![
            InvoiceLineRecord {
                description: "Fibre plan".into(),
                quantity: Decimal::ONE,
                unit_price: plan,
                amount: plan,
            },
            InvoiceLineRecord {
                description: "Data overage (GB)".into(),
                quantity: over_gb,
                unit_price: Decimal::new(50, 2),
                amount: overage.amount(),
            },
            InvoiceLineRecord {
                description: "VAT 20%".into(),
                quantity: Decimal::ONE,
                unit_price: tax.amount(),
                amount: tax.amount(),
            },
        ],
        body: serde_json::json!({ "plan": plan.to_string() }),
    }
}

pub(crate) fn bill_chunk(claim: &ChunkClaim) -> (Vec<InvoiceRecord>, Vec<OutboxEvent>) {
    let invoices: Vec<InvoiceRecord> = claim
        .subscriptions
        .iter()
        .map(|s| invoice_for(*s))
        .collect();
    let at = Utc
        .with_ymd_and_hms(2026, 3, 1, 6, 0, 0)
        .single()
        .unwrap_or_default();
    let events = invoices
        .iter()
        .map(|i| OutboxEvent {
            id: EventId::new(),
            tenant: claim.tenant,
            event_type: "billing.invoice_issued".into(),
            occurred_at: at,
            payload: serde_json::json!({ "invoice": i.id.to_string(), "total": i.total.amount().to_string() }),
        })
        .collect();
    (invoices, events)
}

pub(crate) fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Peak resident set size of this process so far, in MiB (Linux `VmHWM`).
pub(crate) fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
