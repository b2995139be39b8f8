//! No arithmetic panic on caller amounts: the payments ledger, dunning and receivables
//! ageing driven with amounts up to `Decimal::MAX` return `Ok` or `Err`, never panic.
//!
//! Every call goes through `no_panic`, which turns a panic into a test failure naming the call
//! and its input (proptest then shrinks it).

use chrono::{Days, NaiveDate};
use dotmac_collections::{
    AllocationTarget, CreditSettlement, CustomerLedger, DunningInvoice, DunningPolicy,
    DunningState, RestoreOnPayment, evaluate, receivables_ageing,
};
use dotmac_core::{CreditNoteId, Currency, CustomerId, InvoiceId, Money, PaymentId};
use dotmac_testing::{cases, no_panic, positive_decimal};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

fn day(n: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .checked_add_days(Days::new(n))
        .unwrap()
}

#[derive(Debug, Clone)]
enum LedgerOp {
    Invoice(Decimal),
    CreditInvoice(Decimal),
    Pay(Decimal, Option<usize>),
    Refund(usize, Decimal),
    CreditNote(usize, Decimal, bool),
    Void(usize),
    WriteOff(usize),
}

fn ledger_op() -> impl Strategy<Value = LedgerOp> {
    prop_oneof![
        positive_decimal().prop_map(LedgerOp::Invoice),
        (positive_decimal(), prop::option::of(0usize..6)).prop_map(|(a, t)| LedgerOp::Pay(a, t)),
        (0usize..6, positive_decimal()).prop_map(|(p, a)| LedgerOp::Refund(p, a)),
        positive_decimal().prop_map(LedgerOp::CreditInvoice),
        (0usize..6, positive_decimal(), any::<bool>())
            .prop_map(|(i, a, r)| LedgerOp::CreditNote(i, a, r)),
        (0usize..6).prop_map(LedgerOp::Void),
        (0usize..6).prop_map(LedgerOp::WriteOff),
    ]
}

fn dunning_policy() -> DunningPolicy {
    DunningPolicy::builder(Currency::USD)
        .step(1, "overdue_notice")
        .late_fee(3, "late_fee", Money::new(Decimal::MAX, Currency::USD))
        .step(5, "suspend")
        .min_balance(Money::new(Decimal::ONE, Currency::USD))
        .restore_on_payment(RestoreOnPayment::Restore {
            reconnection_fee: Some(Money::new(Decimal::MAX, Currency::USD)),
        })
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// The ledger: every operation and every derived figure, after each step; a refused
    /// operation leaves the ledger as it was, and the entries always rebuild the same ledger.
    #[test]
    fn the_ledger_never_panics_on_huge_amounts(ops in prop::collection::vec(ledger_op(), 1..16)) {
        let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
        let (mut invoices, mut payments) = (0u128, 0u128);
        let policy = dunning_policy();
        for (n, op) in ops.iter().enumerate() {
            let on = day(n as u64);
            let before = ledger.clone();
            let result = match *op {
                LedgerOp::Invoice(total) => {
                    invoices += 1;
                    let id = InvoiceId::from_u128(invoices);
                    no_panic("record_invoice", op, || {
                        ledger.record_invoice(id, usd(total), on, day(n as u64 + 14)).map(|_| ())
                    })?
                }
                LedgerOp::Pay(amount, target) => {
                    payments += 1;
                    let target = match target {
                        Some(i) if (i as u128) < invoices => {
                            AllocationTarget::Invoice(InvoiceId::from_u128(i as u128 + 1))
                        }
                        _ => AllocationTarget::OldestFirst,
                    };
                    no_panic("record_payment", op, || {
                        ledger
                            .record_payment(PaymentId::from_u128(payments), usd(amount), on, target)
                            .map(|_| ())
                    })?
                }
                LedgerOp::Refund(payment, amount) => no_panic("refund", op, || {
                    ledger
                        .refund(PaymentId::from_u128(payment as u128 + 1), usd(amount), on)
                        .map(|_| ())
                })?,
                LedgerOp::CreditInvoice(amount) => {
                    invoices += 1;
                    let id = InvoiceId::from_u128(invoices);
                    no_panic("record_invoice (negative)", op, || {
                        ledger.record_invoice(id, usd(-amount), on, day(n as u64 + 14)).map(|_| ())
                    })?
                }
                LedgerOp::CreditNote(invoice, amount, refund) => {
                    let settlement = if refund { CreditSettlement::Refund } else { CreditSettlement::Credit };
                    no_panic("credit_note", op, || {
                        ledger
                            .credit_note(
                                CreditNoteId::from_u128(n as u128),
                                InvoiceId::from_u128(invoice as u128 + 1),
                                usd(amount),
                                on,
                                settlement,
                            )
                            .map(|_| ())
                    })?
                }
                LedgerOp::Void(invoice) => no_panic("void", op, || {
                    ledger.void(InvoiceId::from_u128(invoice as u128 + 1), on).map(|_| ())
                })?,
                LedgerOp::WriteOff(invoice) => no_panic("write_off", op, || {
                    ledger.write_off(InvoiceId::from_u128(invoice as u128 + 1), on).map(|_| ())
                })?,
            };
            if result.is_err() {
                prop_assert_eq!(&ledger, &before, "a refused {:?} changed the ledger", op);
            }
            // Only that these figures come out: at 28 significant digits a `Decimal` difference
            // rounds (MAX − 10⁻²⁸ is MAX), so their bounds are checked by `payments_properties`
            // on amounts of ordinary size, not here.
            no_panic("credit", op, || ledger.credit())?;
            no_panic("reconcile", op, || ledger.reconcile().and_then(|r| r.balances()))?.ok();
            for balance in ledger.invoices() {
                no_panic("open", op, || balance.open())?;
                no_panic("state", op, || balance.state())?;
                let settlements = no_panic("settlements", op, || ledger.settlements(balance.invoice))?;
                let invoice = DunningInvoice {
                    id: balance.invoice,
                    customer: ledger.customer(),
                    total: balance.total,
                    due: balance.due,
                };
                let mut state = DunningState::default();
                let mut out = Vec::new();
                // The ledger's currency is the policy's: evaluation never refuses it.
                let evaluated = no_panic("dunning::evaluate", op, || {
                    evaluate(&policy, &invoice, &settlements, &mut state, day(n as u64 + 90), &mut out)
                })?;
                prop_assert!(evaluated.is_ok(), "{evaluated:?}");
            }
            let ageing = no_panic("receivables_ageing", op, || {
                receivables_ageing(std::slice::from_ref(&ledger), day(n as u64 + 40), Currency::USD)
            })?;
            if let Ok(ageing) = ageing {
                no_panic("Ageing::total", op, || ageing.total())?.ok();
            }
            let rebuilt = no_panic("from_entries", op, || {
                CustomerLedger::from_entries(ledger.customer(), Currency::USD, ledger.entries().to_vec())
            })?;
            prop_assert_eq!(rebuilt.as_ref(), Ok(&ledger));
        }
    }
}
