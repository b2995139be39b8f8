//! The whole order-to-cash loop, written once and run on memory, SQLite and PostgreSQL: bill,
//! enter in the ledger, pay (exactly, partly, over), credit, void, write off, refund, dun (a
//! late fee, a suspension), bill again (credit applied, the fee billed), restore — every
//! cross-domain reaction through the outbox dispatcher, including a crash between a payment
//! and its reactions. The three stores must end in the same state.

use std::sync::Arc;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use dotmac::billing::analytics::{mrr_at, recurring_items};
use dotmac::billing::{
    BillingService, BillingSettings, BillingStore, Charge, CreditNoteRequest, CreditRequest,
    CreditSettlement, InvoiceStatus, LineKind, MemoryStore, NewSubscription, PendingCharge, Plan,
    Product, SubscriptionStatus,
};
use dotmac::collections::{
    CollectionsService, CollectionsSettings, DunningPolicy, DunningStore, InMemoryDunningStore,
    InMemoryPaymentStore, PaymentRequest, PaymentStore, Reconciliation, RefundRequest,
    RestoreOnPayment,
};
use dotmac::outbox::{Dispatcher, DispatcherSettings, EventHandler, MemoryOutbox, OutboxStore};
use dotmac::{
    Currency, CustomerAccount, CustomerId, ManualClock, Money, PaymentId, PendingChargeId, PlanId,
    ProductId, SubscriptionId, TenantId,
};

type Clock = Arc<ManualClock>;
use dotmac::Clock as _;

const USD: Currency = Currency::USD;

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

fn usd(cents: i64) -> Money {
    Money::from_minor(cents, USD)
}

fn at(on: NaiveDate, hour: u32) -> chrono::DateTime<Utc> {
    Utc.from_utc_datetime(&on.and_hms_opt(hour, 0, 0).unwrap())
}

/// Customers A (pays exactly), B (pays part, then a credit note), C (overpays), D (never pays
/// until suspended).
fn customer(n: u128) -> CustomerId {
    CustomerId::from_u128(0xC0 + n)
}

/// One loop over one store family.
struct Loop<B, P, D, O> {
    tenant: TenantId,
    clock: Clock,
    billing: BillingService<B, Clock>,
    collections: CollectionsService<P, D, Clock>,
    outbox: O,
    plan: Plan,
}

impl<B, P, D, O> Loop<B, P, D, O>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    fn handlers(&self) -> Vec<Arc<dyn EventHandler>> {
        dotmac::reactions::order_to_cash(self.billing.clone(), self.collections.clone())
    }

    fn dispatcher(&self, worker: &str) -> Dispatcher<O, Clock> {
        self.handlers().into_iter().fold(
            Dispatcher::new(
                self.outbox.clone(),
                self.clock.clone(),
                DispatcherSettings::new(worker),
            ),
            Dispatcher::handler,
        )
    }

    async fn dispatch(&self) {
        let summary = self.dispatcher("relay").drain().await.unwrap();
        assert_eq!(summary.parked, 0, "no reaction may fail: {summary:?}");
    }

    async fn pay(&self, who: CustomerId, n: u128, amount: Money) {
        self.collections
            .receive_payment(
                self.tenant,
                PaymentRequest::new(who, PaymentId::from_u128(0xAA00 + n), amount),
            )
            .await
            .unwrap();
    }

    async fn invoices(&self, who: CustomerId) -> Vec<dotmac::Invoice> {
        self.billing
            .store()
            .invoices_of(self.tenant, who)
            .await
            .unwrap()
    }

    async fn statuses(&self, who: CustomerId) -> Vec<InvoiceStatus> {
        self.invoices(who).await.iter().map(|i| i.status).collect()
    }

    async fn sub_status(&self, n: u128) -> SubscriptionStatus {
        self.billing
            .store()
            .subscription(self.tenant, SubscriptionId::from_u128(0x50 + n))
            .await
            .unwrap()
            .unwrap()
            .status()
    }

    /// Everything the loop leaves behind, in a form the three stores must agree on.
    async fn snapshot(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for n in 0..4 {
            let who = customer(n);
            for invoice in self.invoices(who).await {
                let kinds: Vec<String> = invoice
                    .lines
                    .iter()
                    .map(|l| format!("{:?}", l.kind))
                    .collect();
                lines.push(format!(
                    "{n} {} {:?} total {} paid {} credit {} due {} lines {kinds:?}",
                    invoice.issue_date,
                    invoice.status,
                    invoice.total,
                    invoice.amount_paid(),
                    invoice.credit_applied(),
                    invoice.amount_due().unwrap(),
                ));
            }
            let ledger = self
                .collections
                .customer_ledger(self.tenant, who)
                .await
                .unwrap()
                .unwrap();
            lines.push(format!("{n} credit {}", ledger.credit()));
            lines.push(format!("{n} subscription {:?}", self.sub_status(n).await));
        }
        lines
    }

    /// Σ ledger = Σ open − credit, and no invoice owes less than nothing, for every customer.
    async fn check_ledgers(&self) {
        for n in 0..4 {
            let who = customer(n);
            let entries = self
                .collections
                .payment_store()
                .entries(self.tenant, who)
                .await
                .unwrap();
            let books = Reconciliation::of(USD, &entries).unwrap();
            let open = Money::sum(USD, books.open.iter().map(|(_, m)| *m)).unwrap();
            assert_eq!(
                books.net,
                open.checked_sub(books.credit).unwrap(),
                "customer {n}"
            );
            assert!(
                books.open.iter().all(|(_, m)| !m.is_negative()),
                "customer {n}"
            );
        }
    }
}

async fn run_loop<B, P, D, O>(env: Loop<B, P, D, O>) -> Vec<String>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    let t = env.tenant;
    let (a, b, c, d) = (customer(0), customer(1), customer(2), customer(3));
    env.clock.set(at(day(2, 20), 9));
    let product = Product {
        id: ProductId::from_u128(1),
        name: "Fibre".into(),
    };
    env.billing.add_product(t, product).await.unwrap();
    env.billing.save_plan(t, env.plan.clone()).await.unwrap();
    for n in 0..4 {
        env.billing
            .save_account(t, CustomerAccount::new(customer(n), USD))
            .await
            .unwrap();
        env.billing
            .subscribe(
                t,
                NewSubscription::new(customer(n), env.plan.id, USD, day(3, 1))
                    .id(SubscriptionId::from_u128(0x50 + n)),
            )
            .await
            .unwrap();
    }

    // The March bill run: four $30 invoices, each entered in its customer's ledger.
    env.clock.set(at(day(3, 1), 2));
    assert_eq!(
        env.billing.run_bill(t, day(3, 1)).await.unwrap().invoices,
        4
    );
    env.dispatch().await;
    for n in 0..4 {
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
    env.pay(a, 1, usd(3000)).await;
    env.pay(b, 2, usd(1000)).await;
    env.pay(c, 3, usd(5000)).await;
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
    let subs: Vec<_> = {
        let mut all = Vec::new();
        for n in 0..4 {
            all.extend(
                env.billing
                    .store()
                    .subscriptions_of(t, customer(n))
                    .await
                    .unwrap(),
            );
        }
        all
    };
    let plans = vec![env.plan.clone()];
    let mrr = mrr_at(&recurring_items(t, &subs, &plans).unwrap(), day(3, 21), USD).unwrap();
    assert_eq!(mrr.total, usd(9000), "three of four count");

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
    env.pay(d, 4, owed).await;
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
    env.check_ledgers().await;
    // Delivering the last events again (a relay that died before marking them) changes
    // nothing. (Delivery is in order per customer, so a redelivery is always of the newest
    // events of an aggregate, never of an older one after a newer.)
    let before = env.snapshot().await;
    let handlers = env.handlers();
    let messages = env.outbox.outbox_messages(t).await.unwrap();
    for message in &messages[messages.len().saturating_sub(12)..] {
        for handler in handlers.iter().filter(|h| h.handles(&message.event_type)) {
            handler.handle(message).await.unwrap();
        }
    }
    env.dispatch().await;
    assert_eq!(
        env.snapshot().await,
        before,
        "replayed reactions change nothing"
    );
    before
}

fn plan() -> Plan {
    Plan::builder(PlanId::from_u128(7), ProductId::from_u128(1), "Fibre 100")
        .charge(Charge::recurring_flat([usd(3000)]))
        .build(day(1, 1))
        .unwrap()
}

fn settings() -> (BillingSettings, CollectionsSettings) {
    let policy = DunningPolicy::builder(USD)
        .step(1, "overdue_notice")
        .late_fee(5, "late_fee", usd(500))
        .step(7, "suspend")
        .restore_on_payment(RestoreOnPayment::Restore {
            reconnection_fee: Some(usd(2500)),
        })
        .build()
        .unwrap();
    (
        BillingSettings::default().with_payment_terms_days(10),
        CollectionsSettings::new(policy),
    )
}

fn clock() -> Clock {
    Arc::new(ManualClock::new(at(day(2, 20), 9)))
}

async fn on_memory() -> Vec<String> {
    let outbox = Arc::new(MemoryOutbox::new());
    let clock = clock();
    let (billing, collections) = settings();
    let store = MemoryStore::new().with_outbox(outbox.clone());
    run_loop(Loop {
        tenant: TenantId::from_u128(1),
        clock: clock.clone(),
        billing: BillingService::new(store, clock.clone(), billing),
        collections: CollectionsService::new(
            InMemoryPaymentStore::new().with_outbox(outbox.clone()),
            InMemoryDunningStore::new().with_outbox(outbox.clone()),
            clock,
            collections,
        ),
        outbox,
        plan: plan(),
    })
    .await
}

async fn on_sql(url: &str, schema: Option<String>) -> Vec<String> {
    let mut options = dotmac::sql::DatabaseOptions::new(url);
    if let Some(schema) = schema {
        options = options.schema(schema);
    }
    let db = dotmac::sql::Database::connect_with(options).await.unwrap();
    let store = dotmac::sql::SqlStore::new(db.clone());
    let clock = clock();
    let tenant = TenantId::new();
    db.create_tenant(tenant, "Loop Fibre", clock.now())
        .await
        .unwrap();
    let (billing, collections) = settings();
    run_loop(Loop {
        tenant,
        clock: clock.clone(),
        billing: BillingService::new(store.clone(), clock.clone(), billing),
        collections: CollectionsService::new(store.clone(), store.clone(), clock, collections),
        outbox: store,
        plan: plan(),
    })
    .await
}

#[tokio::test]
async fn the_order_to_cash_loop_ends_the_same_on_memory_sqlite_and_postgres() {
    let memory = on_memory().await;
    let sqlite = on_sql("sqlite::memory:", None).await;
    assert_eq!(sqlite, memory, "SQLite and memory agree");
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            // The dispatcher claims across tenants: a schema no other test writes to.
            let schema = format!("dotmac_test_loop_{}", uuid::Uuid::now_v7().simple());
            let postgres = on_sql(&url, Some(schema)).await;
            assert_eq!(postgres, memory, "PostgreSQL and memory agree");
        }
        Err(_) => eprintln!("DATABASE_URL not set: the loop ran on memory and SQLite only"),
    }
}
