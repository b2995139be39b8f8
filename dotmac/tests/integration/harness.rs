//! The order-to-cash harness the loop suites share (`order_to_cash`, `loop_properties`): one
//! [`Loop`] of billing, collections and the outbox dispatcher over one store family (memory,
//! SQLite, PostgreSQL), the tenant's catalogue and policy, a normalised snapshot the three
//! stores must agree on, the books' invariants, and a PostgreSQL schema per run.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use dotmac::billing::analytics::{mrr_at, recurring_items};
use dotmac::billing::{
    BillingService, BillingSettings, BillingStore, Charge, InvoiceStatus, MemoryStore,
    NewSubscription, Plan, Product, SubscriptionStatus,
};
use dotmac::collections::{
    BalanceState, CollectionsService, CollectionsSettings, DunningPolicy, DunningStore,
    InMemoryDunningStore, InMemoryPaymentStore, LedgerEntryKind, PaymentStore, Reconciliation,
    RestoreOnPayment,
};
use dotmac::outbox::{
    Dispatcher, DispatcherSettings, EventHandler, MemoryOutbox, OutboxMessage, OutboxStore,
};
use dotmac::sql::SqlStore;
use dotmac::{
    Clock as _, Currency, CustomerAccount, CustomerId, ManualClock, Money, PlanId, ProductId,
    SubscriptionId, TenantId,
};

pub(crate) type Clock = Arc<ManualClock>;

pub(crate) const USD: Currency = Currency::USD;

pub(crate) fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

pub(crate) fn usd(cents: i64) -> Money {
    Money::from_minor(cents, USD)
}

pub(crate) fn at(on: NaiveDate, hour: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&on.and_hms_opt(hour, 0, 0).unwrap())
}

/// The loop's customers, numbered from 0.
pub(crate) fn customer(n: u128) -> CustomerId {
    CustomerId::from_u128(0xC0 + n)
}

/// Customer `n`'s one subscription.
pub(crate) fn subscription(n: u128) -> SubscriptionId {
    SubscriptionId::from_u128(0x50 + n)
}

/// $30 a month.
pub(crate) fn plan() -> Plan {
    Plan::builder(PlanId::from_u128(7), ProductId::from_u128(1), "Fibre 100")
        .charge(Charge::recurring_flat([usd(3000)]))
        .build(day(1, 1))
        .unwrap()
}

/// Ten days to pay; a notice a day late, a $5 late fee at five days, suspension at seven,
/// restored on payment with a $25 reconnection fee.
pub(crate) fn settings() -> (BillingSettings, CollectionsSettings) {
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

/// `DATABASE_URL`: the loop suites run on PostgreSQL too, so a run without it fails rather
/// than passing on two stores of three.
pub(crate) fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: the order-to-cash suites run on PostgreSQL too \
             (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/test)"
        )
    })
}

/// A PostgreSQL schema of its own (the dispatcher claims across tenants, so no other test
/// may write to it), dropped by [`PgSchema::drop`].
pub(crate) struct PgSchema {
    url: String,
    name: String,
}

impl PgSchema {
    /// A fresh name under `prefix` on [`database_url`].
    pub(crate) fn new(prefix: &str) -> Self {
        PgSchema {
            url: database_url(),
            name: format!("{prefix}_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// The database's options for this schema.
    pub(crate) fn options(&self) -> dotmac::sql::DatabaseOptions {
        dotmac::sql::DatabaseOptions::new(&self.url)
            .schema(self.name.clone())
            .max_connections(4)
    }

    /// Drops the schema and everything in it.
    pub(crate) async fn drop(self) {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        )))
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
}

/// One loop over one store family.
pub(crate) struct Loop<B, P, D, O> {
    pub(crate) tenant: TenantId,
    pub(crate) clock: Clock,
    pub(crate) billing: BillingService<B, Clock>,
    pub(crate) collections: CollectionsService<P, D, Clock>,
    pub(crate) outbox: O,
    pub(crate) plan: Plan,
    /// The SQL database, to close when done.
    pub(crate) db: Option<dotmac::sql::Database>,
}

pub(crate) type MemoryLoop =
    Loop<MemoryStore, InMemoryPaymentStore, InMemoryDunningStore, Arc<MemoryOutbox>>;
pub(crate) type SqlLoop = Loop<SqlStore, SqlStore, SqlStore, SqlStore>;

/// The loop on the in-memory stores, sharing one outbox.
pub(crate) fn on_memory(settings: (BillingSettings, CollectionsSettings)) -> MemoryLoop {
    let outbox = Arc::new(MemoryOutbox::new());
    let clock = clock();
    let (billing, collections) = settings;
    let store = MemoryStore::new().with_outbox(outbox.clone());
    Loop {
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
        db: None,
    }
}

/// The loop on one SQL store (`sqlite::memory:`, or PostgreSQL in `schema`).
pub(crate) async fn on_sql(
    url: &str,
    schema: Option<&PgSchema>,
    settings: (BillingSettings, CollectionsSettings),
) -> SqlLoop {
    let mut options = dotmac::sql::DatabaseOptions::new(url);
    if let Some(schema) = schema {
        options = options.schema(schema.name.clone()).max_connections(4);
    }
    let db = dotmac::sql::Database::connect_with(options).await.unwrap();
    let store = SqlStore::new(db.clone());
    let clock = clock();
    let tenant = TenantId::new();
    db.create_tenant(tenant, "Loop Fibre", clock.now())
        .await
        .unwrap();
    let (billing, collections) = settings;
    Loop {
        tenant,
        clock: clock.clone(),
        billing: BillingService::new(store.clone(), clock.clone(), billing),
        collections: CollectionsService::new(store.clone(), store.clone(), clock, collections),
        outbox: store,
        plan: plan(),
        db: Some(db),
    }
}

impl<B, P, D, O> Loop<B, P, D, O>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    O: OutboxStore + Clone,
{
    pub(crate) fn handlers(&self) -> Vec<Arc<dyn EventHandler>> {
        dotmac::reactions::order_to_cash(self.billing.clone(), self.collections.clone())
    }

    pub(crate) fn dispatcher(&self, worker: &str) -> Dispatcher<O, Clock> {
        self.handlers().into_iter().fold(
            Dispatcher::new(
                self.outbox.clone(),
                self.clock.clone(),
                DispatcherSettings::new(worker),
            ),
            Dispatcher::handler,
        )
    }

    /// Runs every reaction that can run now; none may fail.
    pub(crate) async fn dispatch(&self) {
        let summary = self.dispatcher("relay").drain().await.unwrap();
        if summary.parked > 0 || summary.retried > 0 {
            let failed: Vec<String> = self
                .outbox
                .outbox_messages(self.tenant)
                .await
                .unwrap()
                .into_iter()
                .filter(|m| m.last_error.is_some())
                .map(|m| format!("{} {:?}: {}", m.event_type, m.last_error, m.payload))
                .collect();
            panic!("no reaction may fail: {summary:?} {failed:#?}");
        }
    }

    /// Hands `messages` to every handler that wants them, as a relay does, without marking
    /// them (a redelivery, or a relay that dies before marking).
    pub(crate) async fn deliver(&self, messages: &[OutboxMessage]) {
        let handlers = self.handlers();
        for message in messages {
            for handler in handlers.iter().filter(|h| h.handles(&message.event_type)) {
                handler
                    .handle(message)
                    .await
                    .unwrap_or_else(|e| panic!("{} on {message:?}: {e}", handler.name()));
            }
        }
    }

    /// The product, the plan, and `customers` accounts, each with a subscription from
    /// March 1st.
    pub(crate) async fn open_accounts(&self, customers: u128) {
        let t = self.tenant;
        let product = Product {
            id: ProductId::from_u128(1),
            name: "Fibre".into(),
        };
        self.billing.add_product(t, product).await.unwrap();
        self.billing.save_plan(t, self.plan.clone()).await.unwrap();
        for n in 0..customers {
            self.billing
                .save_account(t, CustomerAccount::new(customer(n), USD))
                .await
                .unwrap();
            self.billing
                .subscribe(
                    t,
                    NewSubscription::new(customer(n), self.plan.id, USD, day(3, 1))
                        .id(subscription(n)),
                )
                .await
                .unwrap();
        }
    }

    /// The customer's invoices in number order.
    pub(crate) async fn invoices(&self, who: CustomerId) -> Vec<dotmac::Invoice> {
        let mut invoices = self
            .billing
            .store()
            .invoices_of(self.tenant, who)
            .await
            .unwrap();
        invoices.sort_by_key(|i| i.number.as_ref().map(ToString::to_string));
        invoices
    }

    pub(crate) async fn statuses(&self, who: CustomerId) -> Vec<InvoiceStatus> {
        self.invoices(who).await.iter().map(|i| i.status).collect()
    }

    pub(crate) async fn ledger(&self, who: CustomerId) -> dotmac::collections::CustomerLedger {
        self.collections
            .customer_ledger(self.tenant, who)
            .await
            .unwrap()
            .unwrap_or_else(|| dotmac::collections::CustomerLedger::new(who, USD))
    }

    pub(crate) async fn sub_status(&self, n: u128) -> SubscriptionStatus {
        self.billing
            .store()
            .subscription(self.tenant, subscription(n))
            .await
            .unwrap()
            .unwrap()
            .status()
    }

    /// Everything the loop leaves behind for `customers`, with ids that differ between stores
    /// (tenant-derived, random) replaced by document numbers (a credit note by its place in
    /// the customer's ledger): per customer its invoices (status, total, what settled them,
    /// lines, adjustments) and their dunning states, its ledger entries and balances, its
    /// credit, its subscription and pending charges; then the tenant's outbox counts and MRR
    /// today. One read per customer and kind (and per invoice for dunning).
    pub(crate) async fn snapshot(&self, customers: u128) -> Vec<String> {
        let t = self.tenant;
        let mut lines = Vec::new();
        let mut subscriptions = Vec::new();
        for n in 0..customers {
            let who = customer(n);
            let invoices = self.invoices(who).await;
            let mut names: HashMap<uuid::Uuid, String> = invoices
                .iter()
                .map(|i| (i.id.as_uuid(), number(&i.number)))
                .collect();
            let name = |names: &HashMap<uuid::Uuid, String>, id: uuid::Uuid| {
                names.get(&id).cloned().unwrap_or_else(|| id.to_string())
            };
            for invoice in &invoices {
                let charges: Vec<String> = invoice
                    .lines
                    .iter()
                    .map(|l| format!("{:?} {}", l.kind, l.amount))
                    .collect();
                lines.push(format!(
                    "{n} invoice {} {} due {} {:?} total {} paid {} credited {} written off {} \
                     credit applied {} ({} lines) due {} {charges:?}",
                    number(&invoice.number),
                    invoice.issue_date,
                    invoice.due_date,
                    invoice.status,
                    invoice.total,
                    invoice.amount_paid(),
                    invoice.amount_credited(),
                    invoice.amount_written_off(),
                    invoice.credit_applied(),
                    invoice.adjustments().len(),
                    invoice.amount_due().unwrap(),
                ));
                let state = self
                    .collections
                    .dunning_store()
                    .state(t, invoice.id)
                    .await
                    .unwrap();
                lines.push(format!("{n}   dunning {state:?}"));
            }
            let ledger = self.ledger(who).await;
            for entry in ledger.entries() {
                let kind = match &entry.kind {
                    LedgerEntryKind::InvoiceIssued { invoice, total, .. } => {
                        format!("invoice {} {total}", name(&names, invoice.as_uuid()))
                    }
                    LedgerEntryKind::PaymentReceived { payment, amount } => {
                        format!("payment {payment} {amount}")
                    }
                    LedgerEntryKind::Allocated {
                        payment,
                        invoice,
                        amount,
                    } => format!(
                        "allocated {payment} to {} {amount}",
                        name(&names, invoice.as_uuid())
                    ),
                    LedgerEntryKind::Refunded { payment, amount } => {
                        format!("refunded {payment} {amount}")
                    }
                    LedgerEntryKind::CreditNoted {
                        invoice,
                        credit_note,
                        amount,
                        settlement,
                    } => {
                        let next = format!("note {}", names.len());
                        let note = names.entry(credit_note.as_uuid()).or_insert(next).clone();
                        format!(
                            "{note} on {} {amount} {settlement:?}",
                            name(&names, invoice.as_uuid())
                        )
                    }
                    LedgerEntryKind::Voided { invoice, amount } => {
                        format!("voided {} {amount}", name(&names, invoice.as_uuid()))
                    }
                    LedgerEntryKind::WrittenOff { invoice, amount } => {
                        format!("written off {} {amount}", name(&names, invoice.as_uuid()))
                    }
                    other => format!("{other:?}"),
                };
                lines.push(format!("{n} ledger {} {} {kind}", entry.sequence, entry.on));
            }
            for balance in ledger.invoices() {
                lines.push(format!(
                    "{n} balance {} open {} {:?}",
                    name(&names, balance.invoice.as_uuid()),
                    balance.open(),
                    balance.state()
                ));
            }
            lines.push(format!("{n} credit {}", ledger.credit()));
            let subs = self.billing.store().subscriptions_of(t, who).await.unwrap();
            for sub in &subs {
                lines.push(format!(
                    "{n} subscription {:?} since {:?}",
                    sub.status(),
                    sub.suspended_since()
                ));
            }
            subscriptions.extend(subs);
            let mut pending: Vec<String> = self
                .billing
                .store()
                .pending_charges(t, who)
                .await
                .unwrap()
                .iter()
                .map(|c| {
                    format!(
                        "{n} pending {} {:?} {} x {}",
                        c.created_on, c.kind, c.quantity, c.unit_price
                    )
                })
                .collect();
            pending.sort();
            lines.extend(pending);
        }
        let counts = self.outbox.outbox_counts(t).await.unwrap();
        lines.push(format!("outbox {counts:?}"));
        lines.push(format!("mrr {}", self.mrr_of(&subscriptions)));
        lines
    }

    /// MRR today over the customers' subscriptions.
    pub(crate) async fn mrr(&self, customers: u128) -> Money {
        let mut subs = Vec::new();
        for n in 0..customers {
            subs.extend(
                self.billing
                    .store()
                    .subscriptions_of(self.tenant, customer(n))
                    .await
                    .unwrap(),
            );
        }
        self.mrr_of(&subs)
    }

    fn mrr_of(&self, subscriptions: &[dotmac::billing::Subscription]) -> Money {
        let items =
            recurring_items(self.tenant, subscriptions, std::slice::from_ref(&self.plan)).unwrap();
        mrr_at(&items, self.clock.now().date_naive(), USD)
            .unwrap()
            .total
    }

    /// The books of each of `customers`, checked from their entries alone
    /// ([`Reconciliation`]) against the ledger's balances and billing's invoices:
    ///
    /// - per invoice, `open = total − allocated − credited − written_off − voided` and
    ///   `open ≥ 0` always (the ledger refuses an entry that would take it below zero; a
    ///   refund reverses allocations, so it reopens, never overdraws); the ledger's balance
    ///   has the same figure;
    /// - billing's invoice follows the ledger once the reactions ran: a void invoice is void
    ///   on both sides; any other has billing's `paid`, `credited` and `written_off` equal
    ///   to the ledger's `settled`, `credited` and `written_off` (so billing's
    ///   `total − paid − credited − written_off` is the ledger's `open`) and the status of
    ///   the ledger's state;
    /// - Σ entries = Σ open − customer credit, and the credit is never below zero;
    /// - the customer's subscription is suspended exactly when dunning holds one of its
    ///   invoices suspended.
    pub(crate) async fn check_books(&self, customers: u128) {
        for n in 0..customers {
            let who = customer(n);
            assert_eq!(
                self.sub_status(n).await == SubscriptionStatus::Suspended,
                self.collections
                    .holds_suspended(self.tenant, who)
                    .await
                    .unwrap(),
                "customer {n}: the subscription follows dunning's suspension"
            );
            let ledger = self.ledger(who).await;
            let books = Reconciliation::of(USD, ledger.entries()).unwrap();
            assert_eq!(
                books.net,
                books
                    .open_total()
                    .unwrap()
                    .checked_sub(books.credit)
                    .unwrap(),
                "customer {n}: Σ ledger = Σ open − credit"
            );
            assert_eq!(books.credit, ledger.credit(), "customer {n}'s credit");
            assert!(!books.credit.is_negative(), "customer {n}'s credit");
            assert!(books.balances().unwrap(), "customer {n}");
            let invoices = self.invoices(who).await;
            assert_eq!(
                books.open.len(),
                invoices.len(),
                "customer {n}: every issued invoice is in the ledger"
            );
            for (id, open) in &books.open {
                assert!(
                    !open.is_negative(),
                    "customer {n}: invoice {id} owes {open}"
                );
                let balance = ledger.invoice(*id).unwrap();
                assert_eq!(balance.open(), *open, "customer {n}: invoice {id}");
                let invoice = invoices.iter().find(|i| i.id == *id).unwrap();
                if balance.state() == BalanceState::Void {
                    assert_eq!(invoice.status, InvoiceStatus::Void, "invoice {id}");
                    continue;
                }
                let follows = (
                    invoice.amount_paid(),
                    invoice.amount_credited(),
                    invoice.amount_written_off(),
                    format!("{:?}", invoice.status),
                );
                let ledger_side = (
                    balance.settled(),
                    balance.credited,
                    balance.written_off,
                    format!("{:?}", balance.state()),
                );
                assert_eq!(follows, ledger_side, "customer {n}: invoice {id} follows");
                let billing_open = invoice
                    .amount_due()
                    .unwrap()
                    .checked_sub(invoice.amount_written_off())
                    .unwrap();
                assert_eq!(billing_open, *open, "customer {n}: invoice {id}");
            }
        }
    }

    /// Closes the SQL pool, if any.
    pub(crate) async fn close(&self) {
        if let Some(db) = &self.db {
            db.close().await;
        }
    }
}

fn number(n: &Option<dotmac::billing::DocumentNumber>) -> String {
    n.as_ref()
        .map_or_else(|| "draft".into(), ToString::to_string)
}

/// Fails with the lines only one side has when two snapshots differ.
#[track_caller]
pub(crate) fn assert_same(got: &[String], want: &[String], what: &str) {
    if got != want {
        let only_got: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
        let only_want: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
        panic!("{what}:\nnow: {only_got:#?}\nwas: {only_want:#?}");
    }
}

/// Runs `$scenario` (an async fn over a `&Loop` returning its snapshot) on memory, SQLite and
/// PostgreSQL (a schema of its own, dropped after), and fails unless all three end alike.
macro_rules! on_every_store {
    ($scenario:path) => {{
        let url = $crate::harness::database_url();
        let memory = $scenario(&$crate::harness::on_memory($crate::harness::settings())).await;
        let sqlite =
            $crate::harness::on_sql("sqlite::memory:", None, $crate::harness::settings()).await;
        let sqlite_end = $scenario(&sqlite).await;
        sqlite.close().await;
        $crate::harness::assert_same(&sqlite_end, &memory, "SQLite (now) and memory (was)");
        let schema = $crate::harness::PgSchema::new("dotmac_test_late");
        let postgres =
            $crate::harness::on_sql(&url, Some(&schema), $crate::harness::settings()).await;
        let postgres_end = $scenario(&postgres).await;
        postgres.close().await;
        schema.drop().await;
        $crate::harness::assert_same(&postgres_end, &memory, "PostgreSQL (now) and memory (was)");
    }};
}
pub(crate) use on_every_store;
