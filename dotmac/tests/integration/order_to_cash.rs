//! The whole order-to-cash loop, written once and run on memory, SQLite and PostgreSQL: bill,
//! enter in the ledger, pay (exactly, partly, over), credit, void, write off, refund, dun (a
//! late fee, a suspension), bill again (credit applied, the fee billed), restore — every
//! cross-domain reaction through the outbox dispatcher, including a crash between a payment
//! and its reactions. The three stores must end in the same state.

use chrono::Duration;
use dotmac::billing::{
    BillingStore, CreditNoteRequest, CreditRequest, CreditSettlement, InvoiceStatus, LineKind,
    PendingCharge, SubscriptionStatus,
};
use dotmac::collections::{DunningStore, PaymentRequest, PaymentStore, RefundRequest};
use dotmac::outbox::OutboxStore;
use dotmac::{Clock as _, CustomerId, Money, PaymentId, PendingChargeId};

use crate::harness::{
    Loop, PgSchema, at, customer, database_url, day, on_memory, on_sql, settings, usd,
};

/// Customers A (pays exactly), B (pays part, then a credit note), C (overpays), D (never pays
/// until suspended).
const CUSTOMERS: u128 = 4;

async fn pay<B, P, D, O>(env: &Loop<B, P, D, O>, who: CustomerId, n: u128, amount: Money)
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    env.collections
        .receive_payment(
            env.tenant,
            PaymentRequest::new(who, PaymentId::from_u128(0xAA00 + n), amount),
        )
        .await
        .unwrap();
}

async fn run_loop<B, P, D, O>(env: &Loop<B, P, D, O>) -> Vec<String>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    let t = env.tenant;
    let (a, b, c, d) = (customer(0), customer(1), customer(2), customer(3));
    env.open_accounts(CUSTOMERS).await;

    // The March bill run: four $30 invoices, each entered in its customer's ledger.
    env.clock.set(at(day(3, 1), 2));
    assert_eq!(
        env.billing.run_bill(t, day(3, 1)).await.unwrap().invoices,
        4
    );
    env.dispatch().await;
    for n in 0..CUSTOMERS {
        let ledger = env
            .collections
            .customer_ledger(t, customer(n))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            ledger.invoices().len(),
            1,
            "customer {n}'s invoice is in the ledger"
        );
    }

    // A pays exactly, B a third, C $50.
    env.clock.set(at(day(3, 5), 12));
    pay(env, a, 1, usd(3000)).await;
    pay(env, b, 2, usd(1000)).await;
    pay(env, c, 3, usd(5000)).await;
    env.dispatch().await;
    assert_eq!(env.statuses(a).await, [InvoiceStatus::Paid]);
    assert_eq!(env.statuses(b).await, [InvoiceStatus::PartiallyPaid]);
    assert_eq!(env.statuses(c).await, [InvoiceStatus::Paid]);
    assert_eq!(env.invoices(b).await[0].amount_paid(), usd(1000));
    let c_ledger = env
        .collections
        .customer_ledger(t, c)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c_ledger.credit(), usd(2000), "C's overpayment is credit");

    // B's invoice is credited in full: $20 was owed, the paid $10 comes back as credit.
    let b_invoice = env.invoices(b).await[0].id;
    let mut note = CreditNoteRequest::new(b_invoice, CreditRequest::Full);
    note.settlement = CreditSettlement::Credit;
    env.billing.issue_credit_note(t, note).await.unwrap();
    env.dispatch().await;
    let b_ledger = env
        .collections
        .customer_ledger(t, b)
        .await
        .unwrap()
        .unwrap();
    assert!(b_ledger.invoice(b_invoice).unwrap().open().is_zero());
    assert_eq!(b_ledger.credit(), usd(1000));

    // A gets a one-off $12 charge invoiced now, then voided: it is no longer owed.
    let charge = PendingCharge {
        id: PendingChargeId::from_u128(0x1200),
        customer: a,
        subscription: None,
        kind: LineKind::OneOff,
        text: Some("Router".into()),
        period: None,
        quantity: 1.into(),
        unit_price: usd(1200),
        price: None,
        created_on: day(3, 5),
    };
    env.billing.add_pending_charge(t, charge).await.unwrap();
    let (router, _) = env.billing.invoice_pending_now(t, a).await.unwrap();
    let router = router.unwrap();
    env.dispatch().await;
    env.billing
        .void_invoice(t, router.id, day(3, 6))
        .await
        .unwrap();
    env.dispatch().await;
    let a_ledger = env
        .collections
        .customer_ledger(t, a)
        .await
        .unwrap()
        .unwrap();
    assert!(
        a_ledger.invoice(router.id).unwrap().open().is_zero(),
        "a void is not owed"
    );

    // D never pays: on March 20 dunning fires the late fee and the suspension.
    env.clock.set(at(day(3, 20), 6));
    let fired = env.collections.evaluate(t, d).await.unwrap();
    assert!(!fired.is_empty());
    // A crash between the dunning step and its reactions: a relay claims the events, runs
    // the reactions, and dies before marking them. The next relay, once the lease ran out,
    // runs them again: the fee is pending once, the subscription suspended once.
    let crashed = env.dispatcher("crashed");
    let claimed = env
        .outbox
        .claim("crashed", env.clock.now(), Duration::seconds(60), 500)
        .await
        .unwrap();
    assert!(!claimed.is_empty());
    let handlers = env.handlers();
    for message in &claimed {
        for handler in handlers.iter().filter(|h| h.handles(&message.event_type)) {
            handler.handle(message).await.unwrap();
        }
    }
    drop(crashed);
    assert_eq!(
        env.dispatcher("relay").drain().await.unwrap().claimed,
        0,
        "leased"
    );
    env.clock.set(at(day(3, 20), 7));
    env.dispatch().await;
    assert_eq!(env.sub_status(3).await, SubscriptionStatus::Suspended);
    let pending = env.billing.store().pending_charges(t, d).await.unwrap();
    assert_eq!(
        pending.len(),
        1,
        "the late fee is pending once: {pending:?}"
    );
    assert_eq!(pending[0].kind, LineKind::LateFee);
    // Evaluating again fires nothing new.
    env.clock.set(at(day(3, 21), 6));
    env.collections.evaluate(t, d).await.unwrap();
    env.dispatch().await;
    assert_eq!(
        env.billing
            .store()
            .pending_charges(t, d)
            .await
            .unwrap()
            .len(),
        1
    );

    // A suspended subscription does not count in MRR.
    assert_eq!(env.mrr(CUSTOMERS).await, usd(9000), "three of four count");

    // The April bill run: C's and B's credit is applied to their invoices, D's late fee is
    // billed (suspended, but the policy keeps billing).
    env.clock.set(at(day(4, 1), 2));
    assert_eq!(
        env.billing.run_bill(t, day(4, 1)).await.unwrap().invoices,
        4
    );
    env.dispatch().await;
    let c_april = env.invoices(c).await.into_iter().last().unwrap();
    assert_eq!(c_april.credit_applied(), usd(2000));
    assert_eq!(c_april.amount_due().unwrap(), usd(1000));
    assert_eq!(c_april.status, InvoiceStatus::PartiallyPaid);
    let d_april = env.invoices(d).await.into_iter().last().unwrap();
    assert!(
        d_april.lines.iter().any(|l| l.kind == LineKind::LateFee),
        "the fee is billed"
    );
    assert!(
        env.billing
            .store()
            .pending_charges(t, d)
            .await
            .unwrap()
            .is_empty()
    );

    // D pays everything: restored, with a reconnection fee for the next invoice.
    env.clock.set(at(day(4, 2), 12));
    let owed = env
        .collections
        .customer_ledger(t, d)
        .await
        .unwrap()
        .unwrap()
        .invoices()
        .iter()
        .map(|i| i.open())
        .fold(usd(0), |s, m| s.checked_add(m).unwrap());
    pay(env, d, 4, owed).await;
    env.dispatch().await;
    assert_eq!(env.sub_status(3).await, SubscriptionStatus::Active);
    assert!(
        env.statuses(d)
            .await
            .iter()
            .all(|s| *s == InvoiceStatus::Paid)
    );
    let pending = env.billing.store().pending_charges(t, d).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, LineKind::ReconnectionFee);

    // C is refunded $15: the April invoice opens again by $15.
    env.collections
        .refund_payment(
            t,
            RefundRequest::new(c, PaymentId::from_u128(0xAA03), usd(1500)),
        )
        .await
        .unwrap();
    env.dispatch().await;
    let c_april = env.invoices(c).await.into_iter().last().unwrap();
    assert_eq!(c_april.status, InvoiceStatus::PartiallyPaid);

    // A's April invoice is written off: uncollectible, and not chased.
    let a_april = env.invoices(a).await.into_iter().last().unwrap();
    env.billing
        .write_off_invoice(t, a_april.id, day(4, 3))
        .await
        .unwrap();
    env.dispatch().await;
    let a_ledger = env
        .collections
        .customer_ledger(t, a)
        .await
        .unwrap()
        .unwrap();
    assert!(a_ledger.invoice(a_april.id).unwrap().open().is_zero());
    assert_eq!(
        env.invoices(a).await.last().unwrap().status,
        InvoiceStatus::Uncollectible
    );

    // Every event was handled; nothing waits, nothing is parked; the books balance.
    let counts = env.outbox.outbox_counts(t).await.unwrap();
    assert_eq!((counts.pending, counts.parked), (0, 0), "{counts:?}");
    assert!(counts.handled > 20);
    env.check_books(CUSTOMERS).await;
    // Delivering the last events again (a relay that died before marking them) changes
    // nothing. (Delivery is in order per customer, so a redelivery is always of the newest
    // events of an aggregate, never of an older one after a newer.)
    let before = env.snapshot(CUSTOMERS).await;
    let messages = env.outbox.outbox_messages(t).await.unwrap();
    env.deliver(&messages[messages.len().saturating_sub(12)..])
        .await;
    env.dispatch().await;
    assert_eq!(
        env.snapshot(CUSTOMERS).await,
        before,
        "replayed reactions change nothing"
    );
    before
}

#[tokio::test]
async fn the_order_to_cash_loop_ends_the_same_on_memory_sqlite_and_postgres() {
    let url = database_url();
    let memory = run_loop(&on_memory(settings())).await;
    let sqlite = on_sql("sqlite::memory:", None, settings()).await;
    assert_eq!(run_loop(&sqlite).await, memory, "SQLite and memory agree");
    let schema = PgSchema::new("dotmac_test_loop");
    let postgres = on_sql(&url, Some(&schema), settings()).await;
    let postgres_end = run_loop(&postgres).await;
    postgres.close().await;
    schema.drop().await;
    assert_eq!(postgres_end, memory, "PostgreSQL and memory agree");
}
