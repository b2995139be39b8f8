//! Dunning: properties of the evaluation and the collections service end to end.

use chrono::{Days, NaiveDate, TimeZone, Utc, Weekday};
use dotmac_billing::LineKind;
use dotmac_collections::{
    AllocationTarget, CollectionsError, CollectionsFailure, InMemoryPaymentStore, LedgerEntry,
    LedgerEntryKind, PaymentStore,
};
use dotmac_collections::{
    CollectionAction, CollectionEvent, CollectionsRunSummary, CollectionsService, DunningInvoice,
    DunningPolicy, DunningState, DunningStore, InMemoryDunningStore, InvoiceToEnter,
    RestoreOnPayment, Settlement, evaluate,
};
use dotmac_core::{Currency, CustomerId, InvoiceId, ManualClock, Money, PaymentId, TenantId};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn policy() -> DunningPolicy {
    DunningPolicy::builder(Currency::USD)
        .step(-3, "reminder")
        .step(1, "overdue_notice")
        .late_fee(
            3,
            "late_fee",
            Money::new(Decimal::new(500, 2), Currency::USD),
        )
        .step(5, "suspend")
        .step(75, "write_off")
        .grace_days(2)
        .min_balance(Money::new(Decimal::new(100, 2), Currency::USD))
        .no_suspension_on(Weekday::Sat)
        .no_suspension_on(Weekday::Sun)
        .restore_on_payment(RestoreOnPayment::Restore {
            reconnection_fee: Some(Money::new(Decimal::TEN, Currency::USD)),
        })
        .build()
        .unwrap()
}

fn due() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 13).unwrap()
}

proptest! {
    /// No step fires for an invoice settled before that step's day, whatever the payments and
    /// however often the evaluation runs; a second run on the same day fires nothing.
    #[test]
    fn settled_invoices_never_escalate(
        payments in prop::collection::vec((0u64..120, 1i64..6_000), 0..5),
        run_days in prop::collection::btree_set(0u64..120, 1..30),
    ) {
        let policy = policy();
        let start = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let invoice = DunningInvoice {
            id: InvoiceId::from_u128(1),
            customer: CustomerId::from_u128(1),
            total: Money::from_minor(5000, Currency::USD),
            due: due(),
        };
        let settlements: Vec<Settlement> = payments
            .iter()
            .map(|(day, minor)| Settlement { on: start + Days::new(*day), amount: Decimal::new(*minor, 2) })
            .collect();
        let mut state = DunningState::default();
        let mut fired = Vec::new();
        for day in &run_days {
            let today = start + Days::new(*day);
            let known: Vec<_> = settlements.iter().copied().filter(|s| s.on <= today).collect();
            evaluate(&policy, &invoice, &known, &mut state, today, &mut fired).unwrap();
            prop_assert_eq!(evaluate(&policy, &invoice, &known, &mut state, today, &mut fired), Ok(0));
        }
        for action in &fired {
            let paid: Decimal = settlements.iter().filter(|s| s.on <= action.on).map(|s| s.amount).sum();
            let open = invoice.total.amount() - paid;
            if action.action == CollectionAction::Restore {
                prop_assert!(open <= Decimal::ZERO);
            } else {
                prop_assert!(open > policy.min_balance().amount(), "{action:?} fired with {open} open");
                prop_assert!(!(action.action == CollectionAction::Suspend && policy.suspension_blocked_on(action.on)));
            }
        }
        // Each step at most once.
        let mut steps: Vec<_> = fired.iter().filter(|a| a.action != CollectionAction::Restore).map(|a| a.step).collect();
        let count = steps.len();
        steps.sort_unstable();
        steps.dedup();
        prop_assert_eq!(steps.len(), count);
    }
}

#[tokio::test]
async fn service_suspends_then_restores_on_payment_with_a_reconnection_fee() {
    let tenant = TenantId::from_u128(1);
    let customer = CustomerId::from_u128(2);
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
    let service = CollectionsService::new(
        InMemoryPaymentStore::new(),
        InMemoryDunningStore::new(),
        &clock,
        dotmac_collections::CollectionsSettings::new(policy()).with_zone(chrono_tz::Africa::Lagos),
    );
    let usd = |m| Money::from_minor(m, Currency::USD);
    service
        .enter_invoice(
            tenant,
            InvoiceToEnter {
                invoice: InvoiceId::from_u128(1),
                customer,
                total: usd(5000),
                issued: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
                due: due(),
            },
        )
        .await
        .unwrap();
    // Due Friday 13 March; suspension day 13 + 5 + 2 grace = Friday 20 March.
    clock.set(Utc.with_ymd_and_hms(2026, 3, 20, 6, 0, 0).unwrap());
    let events = service.evaluate(tenant, customer).await.unwrap();
    let actions: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            CollectionEvent::Action(a) => Some((a.on.to_string(), a.name.to_string(), a.action)),
            _ => None,
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            (
                "2026-03-10".to_owned(),
                "reminder".to_owned(),
                CollectionAction::Notify
            ),
            (
                "2026-03-16".to_owned(),
                "overdue_notice".to_owned(),
                CollectionAction::Notify
            ),
            (
                "2026-03-18".to_owned(),
                "late_fee".to_owned(),
                CollectionAction::LateFee
            ),
            (
                "2026-03-20".to_owned(),
                "suspend".to_owned(),
                CollectionAction::Suspend
            ),
        ]
    );
    assert_eq!(
        events.last().unwrap().event_type(),
        "collections.suspend_service"
    );
    assert!(service.evaluate(tenant, customer).await.unwrap().is_empty());

    // A payment in the wrong currency is refused and changes nothing.
    clock.set(Utc.with_ymd_and_hms(2026, 3, 23, 9, 0, 0).unwrap());
    let err = service
        .record_payment(
            tenant,
            customer,
            PaymentId::from_u128(1),
            Money::from_minor(5000, Currency::EUR),
            AllocationTarget::OldestFirst,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CollectionsError::WrongCurrency {
            what: "payment",
            expected: "USD",
            got: "EUR"
        }
    );
    assert!(service.evaluate(tenant, customer).await.unwrap().is_empty());

    let events = service
        .record_payment(
            tenant,
            customer,
            PaymentId::from_u128(1),
            usd(5000),
            AllocationTarget::OldestFirst,
        )
        .await
        .unwrap();
    let restore = events
        .iter()
        .find_map(|e| match &e.payload {
            CollectionEvent::Action(a) if a.action == CollectionAction::Restore => Some(*a),
            _ => None,
        })
        .unwrap();
    assert_eq!(restore.on, NaiveDate::from_ymd_opt(2026, 3, 23).unwrap());
    let fee = restore.pending_charge().unwrap();
    assert_eq!(fee.kind, LineKind::ReconnectionFee);
    assert_eq!(fee.unit_price, usd(1000));
    // Settled: the write-off day passes without action.
    clock.set(Utc.with_ymd_and_hms(2026, 6, 30, 9, 0, 0).unwrap());
    assert!(service.evaluate(tenant, customer).await.unwrap().is_empty());
}

/// A payment store whose entries a test can replace, as an operator fixing bad data would.
#[derive(Default)]
struct FixablePayments {
    ledgers: std::sync::Mutex<std::collections::HashMap<CustomerId, Vec<LedgerEntry>>>,
}

impl FixablePayments {
    fn replace(&self, customer: CustomerId, entries: Vec<LedgerEntry>) {
        self.ledgers.lock().unwrap().insert(customer, entries);
    }
}

impl PaymentStore for FixablePayments {
    async fn append_entries(
        &self,
        _tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        _events: &[dotmac_core::outbox::OutboxEvent],
    ) -> Result<(), CollectionsError> {
        self.ledgers
            .lock()
            .unwrap()
            .entry(customer)
            .or_default()
            .extend_from_slice(entries);
        Ok(())
    }

    async fn entries(
        &self,
        _tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        Ok(self
            .ledgers
            .lock()
            .unwrap()
            .get(&customer)
            .cloned()
            .unwrap_or_default())
    }
}

#[tokio::test]
async fn one_customers_bad_ledger_never_stops_the_collections_run() {
    let tenant = TenantId::from_u128(1);
    let customers: Vec<CustomerId> = (1..=3u128).map(CustomerId::from_u128).collect();
    let bad = customers[1];
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
    let service = CollectionsService::new(
        FixablePayments::default(),
        InMemoryDunningStore::new(),
        &clock,
        dotmac_collections::CollectionsSettings::new(policy()).with_zone(chrono_tz::Africa::Lagos),
    );
    for (n, customer) in (1u128..).zip(&customers) {
        service
            .enter_invoice(
                tenant,
                InvoiceToEnter {
                    invoice: InvoiceId::from_u128(n),
                    customer: *customer,
                    total: Money::from_minor(5000, Currency::USD),
                    issued: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
                    due: due(),
                },
            )
            .await
            .unwrap();
    }
    // Bad data (an import, say): a payment in EUR in a USD ledger.
    let good_entries = service.payment_store().entries(tenant, bad).await.unwrap();
    let stray = LedgerEntry {
        sequence: 1,
        customer: bad,
        on: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
        kind: LedgerEntryKind::PaymentReceived {
            payment: PaymentId::from_u128(9),
            amount: Money::from_minor(5000, Currency::EUR),
        },
    };
    service
        .payment_store()
        .append_entries(tenant, bad, std::slice::from_ref(&stray), &[])
        .await
        .unwrap();
    clock.set(Utc.with_ymd_and_hms(2026, 3, 20, 6, 0, 0).unwrap());
    let suspended = |summary: &CollectionsRunSummary| -> Vec<CustomerId> {
        summary
            .events
            .iter()
            .filter_map(|e| match &e.payload {
                CollectionEvent::Action(a) if a.action == CollectionAction::Suspend => {
                    Some(a.customer)
                }
                _ => None,
            })
            .collect()
    };
    for attempt in 0..2 {
        let run = service
            .evaluate_customers(tenant, &customers)
            .await
            .unwrap();
        assert_eq!(run.customers, 3);
        let failures: Vec<(CustomerId, &CollectionsError)> = run
            .failures
            .iter()
            .map(|f: &CollectionsFailure| (f.customer, &f.error))
            .collect();
        assert_eq!(
            failures,
            vec![(
                bad,
                &CollectionsError::WrongCurrency {
                    what: "ledger entry",
                    expected: "USD",
                    got: "EUR",
                }
            )]
        );
        let failed: Vec<_> = run
            .events
            .iter()
            .filter_map(|e| match &e.payload {
                CollectionEvent::EvaluationFailed {
                    customer,
                    error_kind,
                    ..
                } => Some((*customer, error_kind.as_str(), e.event_type())),
                _ => None,
            })
            .collect();
        assert_eq!(
            failed,
            vec![(bad, "wrong_currency", "collections.evaluation_failed")]
        );
        // The others are evaluated (once: the second run fires nothing for them).
        let want = if attempt == 0 {
            vec![customers[0], customers[2]]
        } else {
            Vec::new()
        };
        assert_eq!(suspended(&run), want);
        assert_eq!(run.events.len(), 1 + 4 * want.len());
    }
    // The entries are fixed: the next run evaluates the customer from scratch (nothing was
    // saved for it while it failed) and the others fire nothing twice.
    service.payment_store().replace(bad, good_entries);
    let run = service
        .evaluate_customers(tenant, &customers)
        .await
        .unwrap();
    assert!(run.failures.is_empty());
    assert_eq!(suspended(&run), vec![bad]);
    assert_eq!(run.events.len(), 4);
}

#[tokio::test]
async fn a_customer_invoiced_in_another_currency_than_the_policys_fails_alone_and_nothing_is_saved()
{
    let tenant = TenantId::from_u128(1);
    let (usd_customer, eur_customer) = (CustomerId::from_u128(2), CustomerId::from_u128(3));
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
    let store = std::sync::Arc::new(InMemoryDunningStore::new());
    let service = CollectionsService::new(
        InMemoryPaymentStore::new(),
        SharedDunning(store.clone()),
        &clock,
        dotmac_collections::CollectionsSettings::new(policy()).with_zone(chrono_tz::Africa::Lagos),
    );
    for (n, customer, currency) in [
        (1, usd_customer, Currency::USD),
        (2, eur_customer, Currency::EUR),
    ] {
        service
            .enter_invoice(
                tenant,
                InvoiceToEnter {
                    invoice: InvoiceId::from_u128(n),
                    customer,
                    total: Money::from_minor(5000, currency),
                    issued: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
                    due: due(),
                },
            )
            .await
            .unwrap();
    }
    clock.set(Utc.with_ymd_and_hms(2026, 3, 20, 6, 0, 0).unwrap());
    let wrong = CollectionsError::WrongCurrency {
        what: "invoice under dunning",
        expected: "USD",
        got: "EUR",
    };
    // One customer: the error, and no state saved.
    assert_eq!(
        service.evaluate(tenant, eur_customer).await.unwrap_err(),
        wrong
    );
    assert_eq!(
        store.state(tenant, InvoiceId::from_u128(2)).await.unwrap(),
        DunningState::default()
    );
    // The daily run: the EUR customer is a failure, the USD one is evaluated.
    let run = service
        .evaluate_customers(tenant, &[usd_customer, eur_customer])
        .await
        .unwrap();
    let failures: Vec<_> = run
        .failures
        .iter()
        .map(|f| (f.customer, f.error.clone()))
        .collect();
    assert_eq!(failures, vec![(eur_customer, wrong)]);
    assert!(run.events.iter().any(|e| matches!(
        &e.payload,
        CollectionEvent::Action(a) if a.customer == usd_customer && a.action == CollectionAction::Suspend
    )));
    assert_eq!(
        store.state(tenant, InvoiceId::from_u128(2)).await.unwrap(),
        DunningState::default()
    );
    // The store does record states: the USD invoice's was saved.
    assert_ne!(
        store.state(tenant, InvoiceId::from_u128(1)).await.unwrap(),
        DunningState::default()
    );
}

/// The dunning store shared with the test, to read what the service saved.
struct SharedDunning(std::sync::Arc<InMemoryDunningStore>);

impl DunningStore for SharedDunning {
    async fn state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<DunningState, CollectionsError> {
        self.0.state(tenant, invoice).await
    }

    async fn save_state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        state: DunningState,
        events: &[dotmac_core::outbox::OutboxEvent],
    ) -> Result<(), CollectionsError> {
        self.0.save_state(tenant, invoice, state, events).await
    }
}

/// The actions among `events`, as (name, action, fee).
fn actions_of(
    events: &[dotmac_core::DomainEvent<CollectionEvent>],
) -> Vec<(String, CollectionAction, Option<Money>)> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            CollectionEvent::Action(a) => Some((a.name.to_string(), a.action, a.fee)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn void_written_off_and_credited_invoices_are_not_chased() {
    use dotmac_collections::{CreditNoteToEnter, CreditSettlement};
    use dotmac_core::CreditNoteId;
    use dotmac_core::outbox::OutboxStore;
    let tenant = TenantId::from_u128(1);
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
    let outbox = std::sync::Arc::new(dotmac_core::outbox::MemoryOutbox::new());
    let service = CollectionsService::new(
        InMemoryPaymentStore::new().with_outbox(outbox.clone()),
        InMemoryDunningStore::new().with_outbox(outbox.clone()),
        &clock,
        dotmac_collections::CollectionsSettings::new(policy()).with_zone(chrono_tz::Africa::Lagos),
    );
    let usd = |m| Money::from_minor(m, Currency::USD);
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    let (suspended, voided, written_off, credited) = (
        CustomerId::from_u128(1),
        CustomerId::from_u128(2),
        CustomerId::from_u128(3),
        CustomerId::from_u128(4),
    );
    for (n, customer) in (1u128..).zip([suspended, voided, written_off, credited]) {
        service
            .enter_invoice(
                tenant,
                InvoiceToEnter {
                    invoice: InvoiceId::from_u128(n),
                    customer,
                    total: usd(5000),
                    issued: day(1),
                    due: due(),
                },
            )
            .await
            .unwrap();
    }
    // Before anything fires: one voided, one written off, one credited but for 0.50 (below
    // the policy's 1.00 minimum).
    clock.set(Utc.with_ymd_and_hms(2026, 3, 5, 9, 0, 0).unwrap());
    service
        .void_invoice(tenant, voided, InvoiceId::from_u128(2), day(5))
        .await
        .unwrap();
    service
        .write_off_invoice(tenant, written_off, InvoiceId::from_u128(3), day(5))
        .await
        .unwrap();
    let note = CreditNoteToEnter {
        credit_note: CreditNoteId::from_u128(1),
        invoice: InvoiceId::from_u128(4),
        customer: credited,
        amount: usd(4950),
        issued: day(5),
        settlement: CreditSettlement::Credit,
    };
    service.enter_credit_note(tenant, note).await.unwrap();
    // The suspension day: only the first customer is chased.
    clock.set(Utc.with_ymd_and_hms(2026, 3, 20, 9, 0, 0).unwrap());
    let run = service
        .evaluate_customers(tenant, &[suspended, voided, written_off, credited])
        .await
        .unwrap();
    let chased: Vec<CustomerId> = run.events.iter().map(|e| e.payload.customer()).collect();
    assert_eq!(chased, vec![suspended; 4]);
    assert_eq!(
        actions_of(&run.events).last().map(|a| a.1),
        Some(CollectionAction::Suspend)
    );
    // Voiding the suspended customer's invoice restores them, without a reconnection fee;
    // nothing fires for it afterwards.
    let events = service
        .void_invoice(tenant, suspended, InvoiceId::from_u128(1), day(20))
        .await
        .unwrap();
    assert_eq!(
        actions_of(&events),
        vec![("restore".to_owned(), CollectionAction::Restore, None)]
    );
    assert!(
        service
            .void_invoice(tenant, suspended, InvoiceId::from_u128(1), day(21))
            .await
            .unwrap()
            .is_empty()
    );
    clock.set(Utc.with_ymd_and_hms(2026, 6, 30, 9, 0, 0).unwrap());
    let run = service
        .evaluate_customers(tenant, &[suspended, voided, written_off, credited])
        .await
        .unwrap();
    assert!(run.events.is_empty(), "{:?}", run.events);
    // Every event the calls returned is in the shared outbox, written by the stores.
    let stored = outbox.outbox_messages(tenant).await.unwrap();
    assert!(
        stored
            .iter()
            .any(|m| m.event_type == "collections.suspend_service")
            && stored
                .iter()
                .any(|m| m.event_type == "collections.restore_service")
            && stored.iter().any(|m| m.event_type == "payments.voided")
            && stored
                .iter()
                .any(|m| m.event_type == "payments.written_off")
            && stored
                .iter()
                .any(|m| m.event_type == "payments.credit_noted"),
        "{:?}",
        stored.iter().map(|m| &m.event_type).collect::<Vec<_>>()
    );
    let customers = [suspended, voided, written_off, credited];
    assert!(stored.iter().all(|m| m.aggregate.kind() == "customer"
        && customers.iter().any(|c| c.as_uuid() == m.aggregate.id())));
}

#[tokio::test]
async fn a_credit_note_that_settles_a_suspended_invoice_restores_service() {
    use dotmac_collections::{CreditNoteToEnter, CreditSettlement};
    use dotmac_core::CreditNoteId;
    let tenant = TenantId::from_u128(1);
    let customer = CustomerId::from_u128(1);
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
    let service = CollectionsService::new(
        InMemoryPaymentStore::new(),
        InMemoryDunningStore::new(),
        &clock,
        dotmac_collections::CollectionsSettings::new(policy()).with_zone(chrono_tz::Africa::Lagos),
    );
    let usd = |m| Money::from_minor(m, Currency::USD);
    let invoice = InvoiceId::from_u128(1);
    service
        .enter_invoice(
            tenant,
            InvoiceToEnter {
                invoice,
                customer,
                total: usd(5000),
                issued: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
                due: due(),
            },
        )
        .await
        .unwrap();
    clock.set(Utc.with_ymd_and_hms(2026, 3, 20, 9, 0, 0).unwrap());
    let fired = service.evaluate(tenant, customer).await.unwrap();
    assert_eq!(actions_of(&fired).len(), 4);
    let note = CreditNoteToEnter {
        credit_note: CreditNoteId::from_u128(1),
        invoice,
        customer,
        amount: usd(5000),
        issued: NaiveDate::from_ymd_opt(2026, 3, 21).unwrap(),
        settlement: CreditSettlement::Credit,
    };
    clock.set(Utc.with_ymd_and_hms(2026, 3, 21, 9, 0, 0).unwrap());
    let events = service.enter_credit_note(tenant, note).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(
        types,
        [
            "payments.credit_noted",
            "collections.invoice_balance_changed",
            "collections.restore_service"
        ]
    );
    let dotmac_collections::CollectionEvent::InvoiceBalanceChanged(changed) = &events[1].payload
    else {
        panic!("{:?}", events[1]);
    };
    assert_eq!(
        (changed.credited, changed.open, changed.state),
        (usd(5000), usd(0), dotmac_collections::BalanceState::Paid)
    );
    // The same note again: nothing.
    assert!(
        service
            .enter_credit_note(tenant, note)
            .await
            .unwrap()
            .is_empty()
    );
}
