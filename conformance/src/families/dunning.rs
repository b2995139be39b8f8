//! `dunning/`: collection steps for one invoice.
//!
//! The runner evaluates the policy every day from the invoice's issue date to `until`, twice a
//! day (the second run must fire nothing), seeing only the payments made by that day; it also
//! runs one catch-up evaluation on `until` from an empty state, which must fire the same
//! actions on the same days.
//!
//! Step names are the operator's: each is a `StepName`, built from its name alone, so `suspend`
//! suspends (and may be restored) while every other name fires on its day with no other effect
//! in this family (`write_off` and `late_fee` have their domain effects, which change nothing
//! that the family observes). Actions compare by name; `restore` is the name of a restore.

use crate::{date, decimal};
use dotmac_collections::{
    DunningInvoice, DunningPolicy, DunningState, RestoreOnPayment, Settlement, StepName, evaluate,
};
use dotmac_core::{Currency, CustomerId, InvoiceId, Money};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    policy: Policy,
    invoice: Invoice,
    payments: Vec<Payment>,
    until: String,
    expected_actions: Vec<Action>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    steps: Vec<Step>,
    min_balance: String,
    restore_on_payment: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    days_after_due: i32,
    action: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invoice {
    issued: String,
    due: String,
    amount: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payment {
    on: String,
    amount: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    on: String,
    action: String,
}

pub fn run(case: Case) -> Result<(), String> {
    // The cases give the invoice and the minimum balance as bare decimals: the policy's amounts
    // are in the invoice's currency.
    let currency = Currency::USD;
    let mut builder = DunningPolicy::builder(currency)
        .min_balance(Money::new(decimal(&case.policy.min_balance)?, currency));
    for step in &case.policy.steps {
        builder = builder.step(step.days_after_due, &step.action);
    }
    if case.policy.restore_on_payment {
        builder = builder.restore_on_payment(RestoreOnPayment::Restore {
            reconnection_fee: None,
        });
    }
    let policy = builder.build().map_err(|e| e.to_string())?;
    let invoice = DunningInvoice {
        id: InvoiceId::from_u128(1),
        customer: CustomerId::from_u128(1),
        total: Money::new(decimal(&case.invoice.amount)?, currency),
        due: date(&case.invoice.due)?,
    };
    let settlements = case
        .payments
        .iter()
        .map(|p| {
            Ok(Settlement {
                on: date(&p.on)?,
                amount: decimal(&p.amount)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let until = date(&case.until)?;
    let mut expected = Vec::new();
    for action in &case.expected_actions {
        let name: StepName = action.action.parse().map_err(|e| format!("{e}"))?;
        expected.push((date(&action.on)?, name));
    }

    // Day by day, seeing only the payments made so far.
    let mut state = DunningState::default();
    let mut fired = Vec::new();
    let mut day = date(&case.invoice.issued)?;
    while day <= until {
        let known: Vec<Settlement> = settlements
            .iter()
            .copied()
            .filter(|s| s.on <= day)
            .collect();
        evaluate(&policy, &invoice, &known, &mut state, day, &mut fired)
            .map_err(|e| e.to_string())?;
        let again = evaluate(&policy, &invoice, &known, &mut state, day, &mut fired)
            .map_err(|e| e.to_string())?;
        if again != 0 {
            return Err(format!("re-evaluating {day} fired {again} action(s) again"));
        }
        day = day.succ_opt().ok_or("date out of range")?;
    }
    let daily: Vec<_> = fired.iter().map(|a| (a.on, a.name)).collect();
    if daily != expected {
        return Err(format!(
            "daily evaluation: expected {expected:?}, got {daily:?}"
        ));
    }

    // One catch-up run on `until` must reach the same history.
    let mut caught_up = Vec::new();
    evaluate(
        &policy,
        &invoice,
        &settlements,
        &mut DunningState::default(),
        until,
        &mut caught_up,
    )
    .map_err(|e| e.to_string())?;
    let caught_up: Vec<_> = caught_up.iter().map(|a| (a.on, a.name)).collect();
    if caught_up != expected {
        return Err(format!(
            "catch-up evaluation: expected {expected:?}, got {caught_up:?}"
        ));
    }
    Ok(())
}
