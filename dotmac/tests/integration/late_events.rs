//! Events delivered again late (a relay that died before marking its batch hands it over
//! again, after newer events of the customer were handled) change nothing, on memory, SQLite
//! and PostgreSQL: each test names the reaction that once moved the state back or parked the
//! event.

use dotmac::billing::{BillingStore, LineKind, SubscriptionStatus};
use dotmac::collections::{AllocationTarget, DunningStore, PaymentRequest, PaymentStore};
use dotmac::outbox::{OutboxMessage, OutboxStore};
use dotmac::{Money, PaymentId};

use crate::harness::{Loop, assert_same, at, customer, day, on_every_store, usd};

const CUSTOMERS: u128 = 1;

impl<B, P, D, O> Loop<B, P, D, O>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    /// The handled events of `event_type`, oldest first.
    async fn handled(&self, event_type: &str) -> Vec<OutboxMessage> {
        self.outbox
            .outbox_messages(self.tenant)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.event_type == event_type)
            .collect()
    }

    /// Delivers `messages` again (each handler must accept them), then checks that nothing
    /// moved: the snapshot, and no event written.
    async fn late(&self, messages: &[OutboxMessage]) {
        assert!(!messages.is_empty());
        let before = self.snapshot(CUSTOMERS).await;
        self.deliver(messages).await;
        self.dispatch().await;
        assert_same(
            &self.snapshot(CUSTOMERS).await,
            &before,
            "a late event changes nothing",
        );
    }

    async fn pay(&self, n: u128, amount: Money, target: AllocationTarget) {
        let request = PaymentRequest::new(customer(0), PaymentId::from_u128(0xAA00 + n), amount)
            .target(target);
        self.collections
            .receive_payment(self.tenant, request)
            .await
            .unwrap();
        self.dispatch().await;
    }

    async fn dunning_day(&self, m: u32, d: u32) {
        self.clock.set(at(day(m, d), 6));
        self.collections
            .evaluate(self.tenant, customer(0))
            .await
            .unwrap();
        self.dispatch().await;
    }

    async fn bill(&self, m: u32) {
        self.clock.set(at(day(m, 1), 2));
        self.billing.run_bill(self.tenant, day(m, 1)).await.unwrap();
    }
}

/// The balance reported when the invoice was entered (open), delivered again after its
/// write-off was reported: the invoice once moved uncollectible → open, which billing refuses,
/// and the event was parked.
async fn a_stale_balance_after_a_write_off<B, P, D, O>(env: &Loop<B, P, D, O>) -> Vec<String>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    env.open_accounts(CUSTOMERS).await;
    env.bill(3).await;
    env.dispatch().await;
    let invoice = env.invoices(customer(0)).await[0].id;
    env.pay(1, usd(1000), AllocationTarget::OldestFirst).await;
    env.billing
        .write_off_invoice(env.tenant, invoice, day(3, 20))
        .await
        .unwrap();
    env.dispatch().await;
    env.check_books(CUSTOMERS).await;
    let reports = env.handled("collections.invoice_balance_changed").await;
    assert_eq!(reports.len(), 3, "entered, partly paid, written off");
    env.late(&reports[..1]).await;
    env.late(&reports[..2]).await;
    env.check_books(CUSTOMERS).await;
    env.snapshot(CUSTOMERS).await
}

#[tokio::test]
async fn a_balance_report_delivered_after_a_newer_one_changes_nothing() {
    on_every_store!(a_stale_balance_after_a_write_off);
}

/// Suspended in March, restored by a payment: the suspension delivered again once suspended
/// the customer a second time (and provisioning cut the line again).
async fn a_stale_suspension_after_the_restore<B, P, D, O>(env: &Loop<B, P, D, O>) -> Vec<String>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    env.open_accounts(CUSTOMERS).await;
    env.bill(3).await;
    env.dispatch().await;
    env.dunning_day(3, 18).await;
    assert_eq!(env.sub_status(0).await, SubscriptionStatus::Suspended);
    env.clock.set(at(day(3, 19), 12));
    env.pay(1, usd(3500), AllocationTarget::OldestFirst).await;
    assert_eq!(env.sub_status(0).await, SubscriptionStatus::Active);
    env.check_books(CUSTOMERS).await;
    env.late(&env.handled("collections.suspend_service").await)
        .await;
    // Everything the customer's dunning wrote, again, in order.
    let mut all = env.handled("collections.suspend_service").await;
    all.extend(env.handled("collections.restore_service").await);
    all.sort_by_key(|m| m.seq);
    env.late(&all).await;
    assert_eq!(env.sub_status(0).await, SubscriptionStatus::Active);
    env.snapshot(CUSTOMERS).await
}

#[tokio::test]
async fn a_suspension_delivered_after_the_restore_changes_nothing() {
    on_every_store!(a_stale_suspension_after_the_restore);
}

/// March and April both unpaid and suspended; paying March fires March's restore, but April
/// still holds the customer suspended: the subscription once came back (with a reconnection
/// fee) while April stayed unpaid, and April's suspension, already fired, never came again.
async fn two_suspended_invoices_and_one_paid<B, P, D, O>(env: &Loop<B, P, D, O>) -> Vec<String>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    env.open_accounts(CUSTOMERS).await;
    env.bill(3).await;
    env.dispatch().await;
    env.dunning_day(3, 18).await;
    env.bill(4).await;
    env.dispatch().await;
    env.dunning_day(4, 18).await;
    let invoices = env.invoices(customer(0)).await;
    assert_eq!(invoices.len(), 2);
    env.clock.set(at(day(4, 19), 12));
    let march = invoices[0].id;
    let owed = env.ledger(customer(0)).await.invoice(march).unwrap().open();
    env.pay(1, owed, AllocationTarget::Invoice(march)).await;
    assert_eq!(
        env.sub_status(0).await,
        SubscriptionStatus::Suspended,
        "April still holds it suspended"
    );
    env.check_books(CUSTOMERS).await;
    let owed = env
        .ledger(customer(0))
        .await
        .invoice(invoices[1].id)
        .unwrap()
        .open();
    env.pay(2, owed, AllocationTarget::OldestFirst).await;
    assert_eq!(env.sub_status(0).await, SubscriptionStatus::Active);
    let fees: Vec<_> = env
        .billing
        .store()
        .pending_charges(env.tenant, customer(0))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.kind == LineKind::ReconnectionFee)
        .collect();
    assert_eq!(fees.len(), 1, "one reconnection, one fee: {fees:?}");
    env.check_books(CUSTOMERS).await;
    env.snapshot(CUSTOMERS).await
}

#[tokio::test]
async fn a_customer_is_restored_when_no_invoice_holds_it_suspended() {
    on_every_store!(two_suspended_invoices_and_one_paid);
}

/// Written off, then voided by billing (uncollectible → void): the write-off delivered again
/// reached the ledger after its void, which refused it (`InvoiceVoided`), and was parked.
async fn a_write_off_after_the_void<B, P, D, O>(env: &Loop<B, P, D, O>) -> Vec<String>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    env.open_accounts(CUSTOMERS).await;
    env.bill(3).await;
    env.dispatch().await;
    let invoice = env.invoices(customer(0)).await[0].id;
    let t = env.tenant;
    env.billing
        .write_off_invoice(t, invoice, day(3, 20))
        .await
        .unwrap();
    env.dispatch().await;
    env.billing
        .void_invoice(t, invoice, day(3, 21))
        .await
        .unwrap();
    env.dispatch().await;
    env.check_books(CUSTOMERS).await;
    env.late(&env.handled("billing.invoice_status_changed").await)
        .await;
    env.snapshot(CUSTOMERS).await
}

#[tokio::test]
async fn a_write_off_delivered_after_the_void_changes_nothing() {
    on_every_store!(a_write_off_after_the_void);
}

/// The customer has $20 of credit; billing voids the April invoice before the dispatcher
/// entered it in the ledger. Entering it applied the credit, the void released it again, and
/// the credit's line for the (now void) invoice was refused (`InvoiceNotPayable`) and parked.
async fn credit_applied_to_an_invoice_voided_first<B, P, D, O>(
    env: &Loop<B, P, D, O>,
) -> Vec<String>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    env.open_accounts(CUSTOMERS).await;
    env.bill(3).await;
    env.dispatch().await;
    env.pay(1, usd(5000), AllocationTarget::OldestFirst).await;
    env.bill(4).await;
    let april = env.invoices(customer(0)).await[1].id;
    env.billing
        .void_invoice(env.tenant, april, day(4, 1))
        .await
        .unwrap();
    env.dispatch().await;
    env.check_books(CUSTOMERS).await;
    assert_eq!(
        env.ledger(customer(0)).await.credit(),
        usd(2000),
        "the credit is back"
    );
    env.late(&env.handled("collections.credit_applied").await)
        .await;
    env.snapshot(CUSTOMERS).await
}

#[tokio::test]
async fn credit_applied_to_an_invoice_billing_voided_first_is_not_shown() {
    on_every_store!(credit_applied_to_an_invoice_voided_first);
}
