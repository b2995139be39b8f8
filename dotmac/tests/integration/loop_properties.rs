//! The order-to-cash loop under random sequences of steps (issue 11, item 3), each run on
//! memory, SQLite and PostgreSQL (a schema of its own per case, dropped after):
//!
//! 1. the three stores end in the same state, step after step (the normalised snapshot of
//!    [`Loop::snapshot`]: invoices, ledgers, credit, subscriptions, pending charges, outbox
//!    counts, MRR) and give the same answer to every step;
//! 2. per invoice, from the ledger's entries alone, `open = total − allocated − credited −
//!    written_off − voided ≥ 0`, and billing's invoice shows the same figures and status once
//!    the reactions ran ([`Loop::check_books`]);
//! 3. Σ ledger = Σ open − customer credit, credit ≥ 0;
//! 4. replaying a step with its idempotency key (the payment id and key, the refund's key, the
//!    credit note's key; a void, write-off, bill run, dunning day or restore called again)
//!    changes nothing, and neither does delivering handled outbox events again: all of them
//!    in order (a relay that replays everything), or any one of them alone, late;
//!
//! and a step the domain refuses (voiding a paid invoice, refunding more than was paid,
//! crediting more than a line or than the invoice billed, paying a void invoice by name, a
//! payment id reused with another amount) returns the exact typed error and changes nothing.
//!
//! After each step the dispatcher drains the outbox, or (a crash) does not run until a later
//! step, or a relay claims the events, runs the reactions and dies before marking them, so
//! the next relay runs them again once the lease is over.
//!
//! Each case runs under one of the tenant's suspension-billing policies. `PROPTEST_CASES` sets
//! the number of cases (default 24).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use chrono::{Datelike, Duration, NaiveDate};
use dotmac::billing::{
    BillingError, BillingSettings, BillingStore, CreditNoteLine, CreditNoteRequest, CreditRequest,
    CreditSettlement, InvoiceStatus, LineKind, PendingCharge, SuspensionBilling,
};
use dotmac::collections::{
    AllocationTarget, CollectionsError, CollectionsSettings, CustomerLedger, DunningStore,
    IdempotencyKey, LedgerEntryKind, PaymentRequest, PaymentStore, RefundRequest,
};
use dotmac::outbox::OutboxStore;
use dotmac::{Clock as _, Money, PaymentId, PendingChargeId};
use proptest::prelude::*;
use proptest::sample::Index;
use rust_decimal::Decimal;

use crate::harness::{
    Loop, PgSchema, USD, assert_same, at, customer, day, on_memory, on_sql, settings, usd,
};

const CUSTOMERS: u128 = 3;

/// How much a payment, refund or credit note is for, against what it could be.
#[derive(Debug, Clone, Copy)]
enum Amount {
    /// All of it.
    Exact,
    /// This percentage of it (at least a cent).
    Part(u8),
    /// It and this many cents more.
    Over(u16),
}

#[derive(Debug, Clone)]
enum Action {
    /// The next period's bill run (credit applied, pending fees billed).
    BillRun,
    /// A one-off charge invoiced at once.
    ManualInvoice {
        who: u8,
        cents: u16,
    },
    /// A payment of what the customer owes (oldest first), or of what the named invoice
    /// owes (`to`, an index into the customer's invoices).
    Pay {
        who: u8,
        amount: Amount,
        to: Option<Index>,
    },
    /// A payment id used before for another amount.
    PayAgain {
        who: u8,
        payment: Index,
    },
    /// A refund of one of the customer's payments; `Over` asks for more than is left.
    Refund {
        who: u8,
        payment: Index,
        amount: Amount,
    },
    /// A credit note: `Exact` in full, `Part` of the first line, `Over` beyond it.
    CreditNote {
        who: u8,
        invoice: Index,
        amount: Amount,
        settlement: CreditSettlement,
    },
    Void {
        who: u8,
        invoice: Index,
    },
    WriteOff {
        who: u8,
        invoice: Index,
    },
    /// Days pass, then the daily collections run.
    DunningDay {
        days: u8,
    },
    /// The customer settles everything it owes, each invoice by name (written-off parts
    /// too), which restores a suspended service.
    Restore {
        who: u8,
    },
}

/// What happens to the outbox after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The dispatcher drains it.
    Now,
    /// The dispatcher does not run until a later step.
    Later,
    /// A relay claims the events, runs the reactions and dies before marking them.
    Crash,
}

#[derive(Debug, Clone)]
struct Step {
    action: Action,
    delivery: Delivery,
}

#[derive(Debug, Clone)]
struct Case {
    /// What the tenant bills while a customer is suspended.
    suspension: SuspensionBilling,
    steps: Vec<Step>,
    /// Handled events delivered again, each alone, after the run.
    late: Vec<Index>,
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        3 => Just(Amount::Exact),
        3 => (1u8..100).prop_map(Amount::Part),
        2 => (1u16..4000).prop_map(Amount::Over),
    ]
}

fn who() -> impl Strategy<Value = u8> {
    0..u8::try_from(CUSTOMERS).unwrap()
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::BillRun),
        1 => (who(), 100u16..6000).prop_map(|(who, cents)| Action::ManualInvoice { who, cents }),
        6 => (who(), amount(), proptest::option::weighted(0.3, any::<Index>()))
            .prop_map(|(who, amount, to)| Action::Pay { who, amount, to }),
        1 => (who(), any::<Index>()).prop_map(|(who, payment)| Action::PayAgain { who, payment }),
        2 => (who(), any::<Index>(), amount())
            .prop_map(|(who, payment, amount)| Action::Refund { who, payment, amount }),
        2 => (who(), any::<Index>(), amount(), prop_oneof![
                Just(CreditSettlement::Credit),
                Just(CreditSettlement::Refund)
            ])
            .prop_map(|(who, invoice, amount, settlement)| Action::CreditNote {
                who,
                invoice,
                amount,
                settlement
            }),
        2 => (who(), any::<Index>()).prop_map(|(who, invoice)| Action::Void { who, invoice }),
        2 => (who(), any::<Index>()).prop_map(|(who, invoice)| Action::WriteOff { who, invoice }),
        4 => prop_oneof![Just(1u8), Just(3), Just(6), Just(8), Just(12)]
            .prop_map(|days| Action::DunningDay { days }),
        1 => who().prop_map(|who| Action::Restore { who }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        action(),
        prop_oneof![
            6 => Just(Delivery::Now),
            2 => Just(Delivery::Later),
            2 => Just(Delivery::Crash),
        ],
    )
        .prop_map(|(action, delivery)| Step { action, delivery })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(SuspensionBilling::KeepBilling),
            Just(SuspensionBilling::CreditSuspendedDays),
            Just(SuspensionBilling::PauseBilling),
        ],
        proptest::collection::vec(step(), 4..11),
        proptest::collection::vec(any::<Index>(), 0..3),
    )
        .prop_map(|(suspension, steps, late)| Case {
            suspension,
            steps,
            late,
        })
}

/// The loop's settings under the case's suspension-billing policy.
fn case_settings(case: &Case) -> (BillingSettings, CollectionsSettings) {
    let (billing, collections) = settings();
    (
        billing.with_suspension_billing(case.suspension),
        collections,
    )
}

/// What the domain answered.
#[derive(Debug, Clone, PartialEq)]
enum Refusal {
    Billing(BillingError),
    Collections(CollectionsError),
}

/// A refusal expected from the state before a step, and what the step answered.
type Expected = (Refusal, Result<(), Refusal>);

/// `pct` % of `of`, in cents, at least one cent.
fn part(of: Money, pct: u8) -> Money {
    let cents = (of.amount() * Decimal::from(pct) / Decimal::from(100)).round_dp(2);
    Money::new(cents.max(Decimal::new(1, 2)), USD)
}

fn sized(of: Money, amount: Amount, when_nothing: Money) -> Money {
    match amount {
        Amount::Exact if of.is_positive() => of,
        Amount::Exact => when_nothing,
        Amount::Part(pct) => part(of, pct),
        Amount::Over(cents) => of.checked_add(usd(i64::from(cents))).unwrap(),
    }
}

/// The run of one case on one store: its clock, next bill date and what each step answered.
struct Run {
    next_bill: NaiveDate,
    trace: Vec<String>,
    /// Snapshots after each step (the first: the March bill run), for the comparison
    /// between stores; the last is the next step's state before it.
    snapshots: Vec<Vec<String>>,
    /// The snapshot a step's replay left (the step's state before its delivery).
    replayed: Option<Vec<String>>,
}

impl<B, P, D, O> Loop<B, P, D, O>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    fn advance(&self, by: Duration) {
        self.clock.set(self.clock.now() + by);
    }

    fn today(&self) -> NaiveDate {
        self.clock.now().date_naive()
    }

    /// The customer's payments (received, not credit sources), oldest first, with what is
    /// left to refund of each.
    fn payments(ledger: &CustomerLedger) -> Vec<(PaymentId, Money, Money)> {
        let mut payments: Vec<(PaymentId, Money, Money)> = Vec::new();
        for entry in ledger.entries() {
            match &entry.kind {
                LedgerEntryKind::PaymentReceived { payment, amount } => {
                    payments.push((*payment, *amount, *amount));
                }
                LedgerEntryKind::Refunded { payment, amount } => {
                    if let Some(p) = payments.iter_mut().find(|p| p.0 == *payment) {
                        p.2 = p.2.checked_sub(*amount).unwrap();
                    }
                }
                _ => {}
            }
        }
        payments
    }

    /// Runs one step, checks its refusal (the exact error, nothing changed) or its replay,
    /// and lets the outbox go as `delivery` says. Returns what it answered.
    async fn step(&self, run: &mut Run, n: usize, step: &Step) -> String {
        let before = match run.snapshots.last() {
            Some(last) => last.clone(),
            None => self.snapshot(CUSTOMERS).await,
        };
        // Each step a few minutes after the last; a relay that died holds its lease 60 s.
        self.advance(Duration::minutes(10));
        run.replayed = None;
        let (answer, refused) = self.act(run, n, step).await;
        let mut now = run.replayed.take();
        if let Some((expected, got)) = refused {
            assert_eq!(got, Err(expected), "step {n}: {step:?}");
            let after = self.snapshot(CUSTOMERS).await;
            assert_same(
                &after,
                &before,
                &format!("step {n}: a refused step changes nothing"),
            );
            now = Some(after);
        }
        self.deliver_as(step.delivery).await;
        let end = match (step.delivery, now) {
            (Delivery::Later, Some(now)) => now,
            _ => self.snapshot(CUSTOMERS).await,
        };
        run.snapshots.push(end);
        answer
    }

    /// Runs a step's action (and its replay); a refused one returns the error expected from
    /// the state before it and the answer got.
    async fn act(&self, run: &mut Run, n: usize, step: &Step) -> (String, Option<Expected>) {
        let t = self.tenant;
        let key = |what: &str| IdempotencyKey::new(format!("step-{n}-{what}")).unwrap();
        let payment_id = PaymentId::from_u128(0xAA00 + n as u128);
        match &step.action {
            Action::BillRun => {
                let on = if self.today() < run.next_bill {
                    self.clock.set(at(run.next_bill, 2));
                    run.next_bill
                } else {
                    self.today()
                };
                run.next_bill = first_of_next_month(on);
                let summary = self.billing.run_bill(t, on).await.unwrap();
                assert!(summary.failures.is_empty(), "{summary:?}");
                self.replayed(&mut run.replayed, || async {
                    let replay = self.billing.run_bill(t, on).await.unwrap();
                    assert_eq!(replay.invoices, 0, "a bill run again issues nothing");
                })
                .await;
                (
                    format!("bill run {on}: {} invoices", summary.invoices),
                    None,
                )
            }
            Action::ManualInvoice { who, cents } => {
                let who = customer(u128::from(*who));
                let charge = PendingCharge {
                    id: PendingChargeId::from_u128(0x1200 + n as u128),
                    customer: who,
                    subscription: None,
                    kind: LineKind::OneOff,
                    text: Some("Router".into()),
                    period: None,
                    quantity: 1.into(),
                    unit_price: usd(i64::from(*cents)),
                    price: None,
                    created_on: self.today(),
                };
                assert!(
                    self.billing
                        .add_pending_charge(t, charge.clone())
                        .await
                        .unwrap()
                );
                let (invoice, _) = self.billing.invoice_pending_now(t, who).await.unwrap();
                self.replayed(&mut run.replayed, || async {
                    assert!(
                        !self
                            .billing
                            .add_pending_charge(t, charge.clone())
                            .await
                            .unwrap()
                    );
                    let (again, events) = self.billing.invoice_pending_now(t, who).await.unwrap();
                    assert!(again.is_none() && events.is_empty());
                })
                .await;
                (
                    format!("manual invoice: {:?}", invoice.map(|i| i.total)),
                    None,
                )
            }
            Action::Pay { who, amount, to } => {
                let who = customer(u128::from(*who));
                let ledger = self.ledger(who).await;
                let (target, owed, refusal) = match to {
                    None => {
                        let owed =
                            Money::sum(USD, ledger.invoices().iter().map(|b| b.open())).unwrap();
                        (AllocationTarget::OldestFirst, owed, None)
                    }
                    Some(index) if !ledger.invoices().is_empty() => {
                        let balance = ledger.invoices()[index.index(ledger.invoices().len())];
                        let owed = balance.open().checked_add(balance.written_off).unwrap();
                        let refusal = if balance.voided.is_some() {
                            Some(CollectionsError::InvoiceVoided(balance.invoice))
                        } else if !owed.is_positive() {
                            Some(CollectionsError::InvoiceSettled(balance.invoice))
                        } else {
                            None
                        };
                        (AllocationTarget::Invoice(balance.invoice), owed, refusal)
                    }
                    Some(_) => return ("pay: no invoice".into(), None),
                };
                let amount = sized(owed, *amount, usd(1000));
                let request = PaymentRequest::new(who, payment_id, amount)
                    .target(target)
                    .idempotency_key(key("pay"));
                let got = self.collections.receive_payment(t, request.clone()).await;
                match refusal {
                    Some(expected) => (
                        format!("pay {amount}: refused"),
                        Some((
                            Refusal::Collections(expected),
                            got.map(drop).map_err(Refusal::Collections),
                        )),
                    ),
                    None => {
                        let (outcome, _) = got.unwrap();
                        self.replayed(&mut run.replayed, || async {
                            let (again, events) = self
                                .collections
                                .receive_payment(t, request.clone())
                                .await
                                .unwrap();
                            assert_eq!(again, outcome, "the key's replay");
                            assert!(events.is_empty());
                            // The same payment id and amount without the key: a retry too.
                            let mut bare = request.clone();
                            bare.idempotency_key = None;
                            let (again, events) =
                                self.collections.receive_payment(t, bare).await.unwrap();
                            assert_eq!(again, outcome, "the payment id's replay");
                            assert!(events.is_empty());
                        })
                        .await;
                        (
                            format!(
                                "pay {amount}: {} allocations, credit {}",
                                outcome.allocations.len(),
                                outcome.credit
                            ),
                            None,
                        )
                    }
                }
            }
            Action::PayAgain { who, payment } => {
                let who = customer(u128::from(*who));
                let payments = Self::payments(&self.ledger(who).await);
                if payments.is_empty() {
                    return ("pay again: no payment".into(), None);
                }
                let (id, amount, _) = payments[payment.index(payments.len())];
                let other = amount.checked_add(usd(1)).unwrap();
                let got = self
                    .collections
                    .receive_payment(t, PaymentRequest::new(who, id, other))
                    .await;
                (
                    "pay again: refused".into(),
                    Some((
                        Refusal::Collections(CollectionsError::DuplicatePayment(id)),
                        got.map(drop).map_err(Refusal::Collections),
                    )),
                )
            }
            Action::Refund {
                who,
                payment,
                amount,
            } => {
                let who = customer(u128::from(*who));
                let payments = Self::payments(&self.ledger(who).await);
                if payments.is_empty() {
                    return ("refund: no payment".into(), None);
                }
                let (id, _, refundable) = payments[payment.index(payments.len())];
                let amount = match amount {
                    Amount::Over(_) => refundable.checked_add(usd(1)).unwrap(),
                    other => sized(refundable, *other, usd(1)),
                };
                let request = RefundRequest::new(who, id, amount).idempotency_key(key("refund"));
                let got = self.collections.refund_payment(t, request.clone()).await;
                if amount.amount() > refundable.amount() {
                    (
                        format!("refund {amount}: refused"),
                        Some((
                            Refusal::Collections(CollectionsError::RefundExceedsPayment {
                                payment: id,
                                requested: amount.amount(),
                                refundable: refundable.amount(),
                            }),
                            got.map(drop).map_err(Refusal::Collections),
                        )),
                    )
                } else {
                    let (entries, _) = got.unwrap();
                    self.replayed(&mut run.replayed, || async {
                        let (again, events) = self
                            .collections
                            .refund_payment(t, request.clone())
                            .await
                            .unwrap();
                        assert_eq!(again, entries, "the key's replay");
                        assert!(events.is_empty());
                    })
                    .await;
                    (format!("refund {amount}: {} entries", entries.len()), None)
                }
            }
            Action::CreditNote {
                who,
                invoice,
                amount,
                settlement,
            } => {
                let who = customer(u128::from(*who));
                let invoices = self.invoices(who).await;
                if invoices.is_empty() {
                    return ("credit note: no invoice".into(), None);
                }
                let invoice = &invoices[invoice.index(invoices.len())];
                let earlier = self
                    .billing
                    .store()
                    .credit_notes_of(t, invoice.id)
                    .await
                    .unwrap();
                let left = |line: usize| {
                    let mut left = invoice.lines[line].total().unwrap();
                    for note in &earlier {
                        for credited in note.lines.iter().filter(|l| l.line == line) {
                            left = left.checked_sub(credited.amount).unwrap();
                        }
                    }
                    left
                };
                // Credit lines (suspended days) may offset the charges: the invoice's total
                // bounds its notes as its lines do.
                let invoice_left = earlier.iter().fold(invoice.total, |left, note| {
                    left.checked_sub(note.total).unwrap()
                });
                let creditable =
                    !matches!(invoice.status, InvoiceStatus::Draft | InvoiceStatus::Void);
                let (credit, refusal) = match amount {
                    Amount::Exact => {
                        let nothing = !invoice_left.is_positive()
                            || (0..invoice.lines.len()).all(|l| !left(l).is_positive());
                        (
                            CreditRequest::Full,
                            nothing.then_some(BillingError::NothingToCredit(invoice.id)),
                        )
                    }
                    other => {
                        let left = left(0);
                        let asked = match other {
                            Amount::Over(_) => left.checked_add(usd(1)).unwrap(),
                            _ => sized(left, *other, usd(1)),
                        };
                        (
                            CreditRequest::Lines(vec![CreditNoteLine {
                                line: 0,
                                amount: asked,
                            }]),
                            if asked.amount() > left.amount() {
                                Some(BillingError::CreditExceedsLine {
                                    line: 0,
                                    requested: asked.amount(),
                                    creditable: left.amount(),
                                })
                            } else if asked.amount() > invoice_left.amount() {
                                Some(BillingError::CreditExceedsInvoice {
                                    invoice: invoice.id,
                                    requested: asked.amount(),
                                    creditable: invoice_left.amount().max(Decimal::ZERO),
                                })
                            } else {
                                None
                            },
                        )
                    }
                };
                let refusal = if creditable {
                    refusal
                } else {
                    Some(BillingError::NotCreditable {
                        invoice: invoice.id,
                        status: invoice.status,
                    })
                };
                let mut request = CreditNoteRequest::new(invoice.id, credit)
                    .settlement(*settlement)
                    .idempotency_key(key("credit-note"));
                request.reason = Some("goodwill".into());
                let got = self.billing.issue_credit_note(t, request.clone()).await;
                match refusal {
                    Some(expected) => (
                        "credit note: refused".into(),
                        Some((
                            Refusal::Billing(expected),
                            got.map(drop).map_err(Refusal::Billing),
                        )),
                    ),
                    None => {
                        let (note, _) = got.unwrap();
                        self.replayed(&mut run.replayed, || async {
                            let (again, events) = self
                                .billing
                                .issue_credit_note(t, request.clone())
                                .await
                                .unwrap();
                            assert_eq!(again, note, "the key's replay");
                            assert!(events.is_empty());
                        })
                        .await;
                        (format!("credit note {}", note.total), None)
                    }
                }
            }
            Action::Void { who, invoice } | Action::WriteOff { who, invoice } => {
                let void = matches!(step.action, Action::Void { .. });
                let to = if void {
                    InvoiceStatus::Void
                } else {
                    InvoiceStatus::Uncollectible
                };
                let invoices = self.invoices(customer(u128::from(*who))).await;
                if invoices.is_empty() {
                    return (format!("{to:?}: no invoice"), None);
                }
                let invoice = &invoices[invoice.index(invoices.len())];
                let refusal = if invoice.status == to {
                    None
                } else if !invoice.status.can_become(to) {
                    Some(BillingError::IllegalInvoiceTransition {
                        from: invoice.status,
                        to,
                    })
                } else if void && !invoice.amount_paid().is_zero() {
                    Some(BillingError::VoidOfSettledInvoice {
                        invoice: invoice.id,
                        settled: invoice.amount_paid().amount(),
                    })
                } else if void && invoice.total.is_negative() {
                    // A credit owed to the customer settles itself.
                    Some(BillingError::VoidOfSettledInvoice {
                        invoice: invoice.id,
                        settled: invoice.total.amount(),
                    })
                } else {
                    None
                };
                let today = self.today();
                let call = || async {
                    if void {
                        self.billing.void_invoice(t, invoice.id, today).await
                    } else {
                        self.billing.write_off_invoice(t, invoice.id, today).await
                    }
                };
                let got = call().await;
                match refusal {
                    Some(expected) => (
                        format!("{to:?} {:?}: refused", invoice.status),
                        Some((
                            Refusal::Billing(expected),
                            got.map(drop).map_err(Refusal::Billing),
                        )),
                    ),
                    None => {
                        let (after, _) = got.unwrap();
                        assert_eq!(after.status, to);
                        self.replayed(&mut run.replayed, || async {
                            let (_, events) = call().await.unwrap();
                            assert!(events.is_empty(), "{to:?} again writes nothing");
                        })
                        .await;
                        (format!("{to:?} from {:?}", invoice.status), None)
                    }
                }
            }
            Action::DunningDay { days } => {
                let on = self.today() + Duration::days(i64::from(*days));
                self.clock.set(at(on, 6));
                let everyone: Vec<_> = (0..CUSTOMERS).map(customer).collect();
                let summary = self
                    .collections
                    .evaluate_customers(t, &everyone)
                    .await
                    .unwrap();
                assert!(summary.failures.is_empty(), "{:?}", summary.failures);
                self.replayed(&mut run.replayed, || async {
                    let again = self
                        .collections
                        .evaluate_customers(t, &everyone)
                        .await
                        .unwrap();
                    assert!(again.events.is_empty(), "{:?}", again.events);
                })
                .await;
                let fired: Vec<&str> = summary
                    .events
                    .iter()
                    .map(|e| dotmac::EventPayload::event_type(&e.payload))
                    .collect();
                (format!("dunning {on}: {fired:?}"), None)
            }
            Action::Restore { who } => {
                let who = customer(u128::from(*who));
                let mut paid = Vec::new();
                for (i, balance) in self.ledger(who).await.invoices().iter().enumerate() {
                    let owed = balance.open().checked_add(balance.written_off).unwrap();
                    if balance.voided.is_some() || !owed.is_positive() {
                        continue;
                    }
                    let payment = PaymentId::from_u128(0xBB_0000 + (n as u128) * 64 + i as u128);
                    let request = PaymentRequest::new(who, payment, owed)
                        .target(AllocationTarget::Invoice(balance.invoice));
                    self.collections
                        .receive_payment(t, request.clone())
                        .await
                        .unwrap();
                    self.replayed(&mut run.replayed, || async {
                        let (_, events) =
                            self.collections.receive_payment(t, request).await.unwrap();
                        assert!(events.is_empty());
                    })
                    .await;
                    paid.push(owed.to_string());
                }
                (format!("settle everything: {paid:?}"), None)
            }
        }
    }

    /// Fails with the events written since the outbox held `known` when there are any.
    async fn no_new_events(&self, known: usize, what: &str) {
        let now = self.outbox.outbox_messages(self.tenant).await.unwrap();
        let written: Vec<String> = now
            .iter()
            .skip(known)
            .map(|m| format!("{} {}", m.event_type, m.payload))
            .collect();
        assert!(written.is_empty(), "{what} wrote {written:#?}");
    }

    /// Runs `replay` (a step again with its idempotency key) and checks it changed nothing;
    /// keeps the snapshot in `last`.
    async fn replayed<F, Fut>(&self, last: &mut Option<Vec<String>>, replay: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let before = self.snapshot(CUSTOMERS).await;
        replay().await;
        let after = self.snapshot(CUSTOMERS).await;
        assert_same(&after, &before, "a replayed step changes nothing");
        *last = Some(after);
    }

    async fn deliver_as(&self, delivery: Delivery) {
        match delivery {
            Delivery::Now => {
                self.dispatch().await;
                self.check_books(CUSTOMERS).await;
            }
            Delivery::Later => {}
            Delivery::Crash => {
                let claimed = self
                    .outbox
                    .claim("crashed", self.clock.now(), Duration::seconds(60), 500)
                    .await
                    .unwrap();
                self.deliver(&claimed).await;
            }
        }
    }

    /// The whole case: the March bill run, the steps, a last drain, then the handled events
    /// delivered again (all in order, then some alone) and nothing may move.
    async fn run_case(&self, case: &Case) -> Run {
        self.open_accounts(CUSTOMERS).await;
        self.clock.set(at(day(3, 1), 2));
        let mut run = Run {
            next_bill: day(3, 1),
            trace: Vec::new(),
            snapshots: Vec::new(),
            replayed: None,
        };
        self.step(
            &mut run,
            0,
            &Step {
                action: Action::BillRun,
                delivery: Delivery::Now,
            },
        )
        .await;
        for (n, step) in case.steps.iter().enumerate() {
            let answer = self.step(&mut run, n + 1, step).await;
            run.trace.push(format!("{step:?} → {answer}"));
        }
        // A crashed relay's lease runs out; the next relay finishes everything.
        self.advance(Duration::minutes(10));
        self.dispatch().await;
        let counts = self.outbox.outbox_counts(self.tenant).await.unwrap();
        assert_eq!((counts.pending, counts.parked), (0, 0), "{counts:?}");
        self.check_books(CUSTOMERS).await;
        let end = self.snapshot(CUSTOMERS).await;

        // Every handled event again, in order: a relay that replays the whole outbox.
        let messages = self.outbox.outbox_messages(self.tenant).await.unwrap();
        self.deliver(&messages).await;
        self.dispatch().await;
        self.no_new_events(messages.len(), "replaying every event")
            .await;
        assert_same(
            &self.snapshot(CUSTOMERS).await,
            &end,
            "replaying every event changes nothing",
        );
        // Some of them again, each alone and late: after newer events of its customer.
        for index in &case.late {
            let message = &messages[index.index(messages.len())];
            self.deliver(std::slice::from_ref(message)).await;
            self.dispatch().await;
            self.no_new_events(messages.len(), &format!("a late {message:?}"))
                .await;
            assert_same(
                &self.snapshot(CUSTOMERS).await,
                &end,
                &format!("a late {} changes nothing", message.event_type),
            );
        }
        run.snapshots.push(end);
        run
    }
}

fn first_of_next_month(on: NaiveDate) -> NaiveDate {
    let (y, m) = if on.month() == 12 {
        (on.year() + 1, 1)
    } else {
        (on.year(), on.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap()
}

/// The stores answer alike and part at no step.
fn same_run(name: &str, got: &Run, memory: &Run, case: &Case) {
    assert_eq!(got.trace, memory.trace, "{name} answers as memory does");
    for (n, (a, b)) in got.snapshots.iter().zip(&memory.snapshots).enumerate() {
        assert_same(
            a,
            b,
            &format!(
                "{name} (now) and memory (was) part after step {n} (0: the March bill run): {:?}",
                n.checked_sub(1).and_then(|n| case.steps.get(n))
            ),
        );
    }
}

fn run_on_every_store(runtime: &tokio::runtime::Runtime, case: &Case) {
    let schema = PgSchema::new("dotmac_test_loopprop");
    let url = crate::harness::database_url();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            let memory = on_memory(case_settings(case)).run_case(case).await;
            let sqlite = on_sql("sqlite::memory:", None, case_settings(case)).await;
            let sqlite_run = sqlite.run_case(case).await;
            sqlite.close().await;
            same_run("SQLite", &sqlite_run, &memory, case);
            let postgres = on_sql(&url, Some(&schema), case_settings(case)).await;
            let postgres_run = postgres.run_case(case).await;
            postgres.close().await;
            same_run("PostgreSQL", &postgres_run, &memory, case);
        })
    }));
    runtime.block_on(schema.drop());
    if let Err(panic) = outcome {
        resume_unwind(panic);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        max_shrink_iters: 64,
        ..dotmac_testing::config(24)
    })]

    #[test]
    fn random_loops_end_the_same_on_every_store_and_keep_the_books(case in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        run_on_every_store(&runtime, &case);
    }
}
