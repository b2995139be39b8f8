//! Payments ledger: allocation invariants under random invoices, payments and refunds.

use chrono::{Days, NaiveDate};
use dotmac_collections::{
    AllocationTarget, CustomerLedger, InMemoryPaymentStore, LedgerEntryKind, PaymentStore,
};
use dotmac_core::{Currency, CustomerId, InvoiceId, Money, PaymentId, TenantId};
use proptest::prelude::*;
use rust_decimal::Decimal;

#[derive(Debug, Clone)]
enum Op {
    Invoice(i64),
    Pay(i64, Option<usize>),
    Refund(usize, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1i64..50_000).prop_map(Op::Invoice),
        (1i64..80_000, prop::option::of(0usize..10)).prop_map(|(a, t)| Op::Pay(a, t)),
        (0usize..10, 1i64..80_000).prop_map(|(p, a)| Op::Refund(p, a)),
    ]
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

proptest! {
    #[test]
    fn allocations_add_up_and_balances_stay_in_bounds(ops in prop::collection::vec(op(), 1..40)) {
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
        let (mut invoices, mut payments) = (0u128, 0u128);
        for (day, op) in ops.into_iter().enumerate() {
            let on = start.checked_add_days(Days::new(day as u64)).unwrap();
            match op {
                Op::Invoice(total) => {
                    invoices += 1;
                    ledger
                        .record_invoice(InvoiceId::from_u128(invoices), usd(total), on, on + Days::new(14))
                        .unwrap();
                }
                Op::Pay(amount, target) => {
                    payments += 1;
                    let target = match target {
                        Some(i) if (i as u128) < invoices => AllocationTarget::Invoice(InvoiceId::from_u128(i as u128 + 1)),
                        _ => AllocationTarget::OldestFirst,
                    };
                    let before = ledger.clone();
                    match ledger.record_payment(PaymentId::from_u128(payments), usd(amount), on, target) {
                        Ok(outcome) => {
                            // Sum of allocations + credit = payment.
                            let allocated = Money::sum(Currency::USD, outcome.allocations.iter().map(|(_, m)| *m)).unwrap();
                            prop_assert_eq!(allocated.checked_add(outcome.credit).unwrap(), usd(amount));
                        }
                        Err(_) => prop_assert_eq!(&ledger, &before),
                    }
                }
                Op::Refund(p, amount) => {
                    let before = ledger.clone();
                    if ledger.refund(PaymentId::from_u128(p as u128 + 1), usd(amount), on).is_err() {
                        prop_assert_eq!(&ledger, &before);
                    }
                }
            }
            // No invoice is ever overpaid or paid below zero.
            for invoice in ledger.invoices() {
                prop_assert!(!invoice.open().is_negative(), "{invoice:?}");
                prop_assert!(!invoice.paid.is_negative(), "{invoice:?}");
            }
            prop_assert!(!ledger.credit().is_negative());
            // Per payment: allocations + refunds never exceed it.
            for p in 1..=payments {
                let id = PaymentId::from_u128(p);
                let mut used = Decimal::ZERO;
                let mut amount = None;
                for entry in ledger.entries() {
                    match &entry.kind {
                        LedgerEntryKind::PaymentReceived { payment, amount: a } if *payment == id => amount = Some(a.amount()),
                        LedgerEntryKind::Allocated { payment, amount: a, .. } if *payment == id => used += a.amount(),
                        LedgerEntryKind::Refunded { payment, amount: a } if *payment == id => used += a.amount(),
                        _ => {}
                    }
                }
                if let Some(amount) = amount {
                    prop_assert!(used <= amount);
                }
            }
            // Balances are derived from the entries alone.
            let rebuilt = CustomerLedger::from_entries(ledger.customer(), Currency::USD, ledger.entries().to_vec()).unwrap();
            prop_assert_eq!(&rebuilt, &ledger);
        }
    }
}

#[tokio::test]
async fn the_store_is_append_only_and_tenant_scoped() {
    let store = InMemoryPaymentStore::new();
    let (a, b) = (TenantId::from_u128(1), TenantId::from_u128(2));
    let customer = CustomerId::from_u128(1);
    let day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let mut ledger = CustomerLedger::new(customer, Currency::USD);
    let entries = ledger
        .record_invoice(InvoiceId::from_u128(1), usd(1000), day, day)
        .unwrap();
    store
        .append_entries(a, customer, &entries, &[])
        .await
        .unwrap();
    let outcome = ledger
        .record_payment(
            PaymentId::from_u128(1),
            usd(400),
            day,
            AllocationTarget::OldestFirst,
        )
        .unwrap();
    store
        .append_entries(a, customer, &outcome.entries, &[])
        .await
        .unwrap();
    let stored = store.entries(a, customer).await.unwrap();
    assert_eq!(stored, ledger.entries());
    assert!(store.entries(b, customer).await.unwrap().is_empty());
    let rebuilt = CustomerLedger::from_entries(customer, Currency::USD, stored).unwrap();
    assert_eq!(
        rebuilt.invoice(InvoiceId::from_u128(1)).unwrap().open(),
        usd(600)
    );
}

/// One step of the order-to-cash loop on one ledger.
#[derive(Debug, Clone)]
enum Step {
    /// An invoice (a negative total: a credit owed to the customer).
    Issue(i64),
    /// A payment, oldest first or to a named invoice.
    Pay(i64, Option<usize>),
    /// A payment of more than everything open.
    Overpay(i64),
    Refund(usize, i64),
    Credit(usize, i64, bool),
    Void(usize),
    WriteOff(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (-20_000i64..50_000).prop_map(Step::Issue),
        3 => (1i64..60_000, prop::option::of(0usize..10)).prop_map(|(a, t)| Step::Pay(a, t)),
        1 => (1i64..20_000).prop_map(Step::Overpay),
        2 => (0usize..10, 1i64..60_000).prop_map(|(p, a)| Step::Refund(p, a)),
        2 => (0usize..10, 1i64..50_000, any::<bool>()).prop_map(|(i, a, r)| Step::Credit(i, a, r)),
        1 => (0usize..10).prop_map(Step::Void),
        1 => (0usize..10).prop_map(Step::WriteOff),
    ]
}

proptest! {
    /// Random sequences of issue / pay / overpay / refund / credit / void / write-off: every
    /// invoice's open balance stays ≥ 0, Σ ledger = Σ open − credit (computed from the
    /// entries alone), a refused step changes nothing, and the entries rebuild the same
    /// balances.
    #[test]
    fn the_ledger_balances_under_every_kind_of_step(steps in prop::collection::vec(step(), 1..40)) {
        use dotmac_collections::{CreditSettlement, Reconciliation};
        use dotmac_core::CreditNoteId;
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
        let (mut invoices, mut payments, mut notes) = (0u128, 0u128, 0u128);
        let invoice = |i: usize, invoices: u128| InvoiceId::from_u128((i as u128 % invoices.max(1)) + 1);
        for (day, step) in steps.into_iter().enumerate() {
            let on = start.checked_add_days(Days::new(day as u64)).unwrap();
            let before = ledger.clone();
            let result = match step {
                Step::Issue(total) => {
                    invoices += 1;
                    ledger.record_invoice(InvoiceId::from_u128(invoices), usd(total), on, on + Days::new(14)).map(drop)
                }
                Step::Pay(amount, target) => {
                    payments += 1;
                    let target = match target {
                        Some(i) if invoices > 0 => AllocationTarget::Invoice(invoice(i, invoices)),
                        _ => AllocationTarget::OldestFirst,
                    };
                    ledger.record_payment(PaymentId::from_u128(payments), usd(amount), on, target).map(drop)
                }
                Step::Overpay(extra) => {
                    payments += 1;
                    let open = Money::sum(Currency::USD, ledger.invoices().iter().map(|b| b.open())).unwrap();
                    ledger
                        .record_payment(PaymentId::from_u128(payments), open.checked_add(usd(extra)).unwrap(), on, AllocationTarget::OldestFirst)
                        .map(|out| assert!(out.credit.is_positive()))
                }
                Step::Refund(p, amount) => {
                    ledger.refund(PaymentId::from_u128(p as u128 % payments.max(1) + 1), usd(amount), on).map(drop)
                }
                Step::Credit(i, amount, refund) => {
                    notes += 1;
                    let settlement = if refund { CreditSettlement::Refund } else { CreditSettlement::Credit };
                    ledger.credit_note(CreditNoteId::from_u128(notes), invoice(i, invoices), usd(amount), on, settlement).map(drop)
                }
                Step::Void(i) => ledger.void(invoice(i, invoices), on).map(drop),
                Step::WriteOff(i) => ledger.write_off(invoice(i, invoices), on).map(drop),
            };
            if result.is_err() {
                prop_assert_eq!(&ledger, &before, "a refused step changed the ledger");
            }
            let sides = Reconciliation::of(Currency::USD, ledger.entries()).unwrap();
            prop_assert!(sides.balances().unwrap(), "{:?}", sides);
            prop_assert_eq!(sides.credit, ledger.credit());
            prop_assert!(!ledger.credit().is_negative());
            for balance in ledger.invoices() {
                prop_assert!(!balance.open().is_negative(), "{:?}", balance);
                prop_assert!(!balance.written_off.is_negative(), "{:?}", balance);
                let open = sides.open.iter().find(|(i, _)| *i == balance.invoice).map(|(_, m)| *m);
                prop_assert_eq!(open, Some(balance.open()));
                if balance.voided.is_some() {
                    prop_assert!(balance.paid.is_zero() && balance.written_off.is_zero(), "{:?}", balance);
                }
            }
            let rebuilt = CustomerLedger::from_entries(ledger.customer(), Currency::USD, ledger.entries().to_vec()).unwrap();
            prop_assert_eq!(&rebuilt, &ledger);
        }
    }
}
