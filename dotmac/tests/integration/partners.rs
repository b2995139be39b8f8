//! Collections' payments and refunds reach the partners' ledgers through the outbox
//! dispatcher (`dotmac::reactions::PartnersFollowCollections`), on memory, SQLite and
//! PostgreSQL: a payment accrues (its plan's rate, split with the master agent), a redelivered
//! event accrues nothing, a refund claws back exactly what the payment earned, a customer no
//! partner holds earns nobody anything. The three stores must end in the same state.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac::billing::{
    BillingService, BillingSettings, BillingStore, Charge, MemoryStore, NewSubscription, Plan,
    Product,
};
use dotmac::collections::{
    CollectionsService, CollectionsSettings, DunningPolicy, DunningStore, InMemoryDunningStore,
    InMemoryPaymentStore, PaymentRequest, PaymentStore, RefundRequest,
};
use dotmac::outbox::{Dispatcher, DispatcherSettings, EventHandler, MemoryOutbox, OutboxStore};
use dotmac::partners::{
    CommissionPlan, CommissionPlanId, EntryKind, InMemoryPartnerStore, MasterOverride,
    PartnerAccount, PartnerId, PartnerKind, PartnerStatus, PartnerStore, PartnersService,
    PartnersSettings, RevenueKey,
};
use dotmac::reactions::PartnersFollowCollections;
use dotmac::{
    Currency, CustomerAccount, CustomerId, ManualClock, Money, PaymentId, PlanId, ProductId,
    TenantId,
};
use rust_decimal::Decimal;

type Clock = Arc<ManualClock>;
use dotmac::Clock as _;

const USD: Currency = Currency::USD;
const MASTER: PartnerId = PartnerId::from_u128(0x3A);
const SUB: PartnerId = PartnerId::from_u128(0x5B);
const REFERRED: CustomerId = CustomerId::from_u128(0xC1);
const WALK_IN: CustomerId = CustomerId::from_u128(0xC2);
const FIBRE_300: PlanId = PlanId::from_u128(0x300);

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

fn usd(cents: i64) -> Money {
    Money::from_minor(cents, USD)
}

fn at(on: NaiveDate, hour: u32) -> chrono::DateTime<Utc> {
    Utc.from_utc_datetime(&on.and_hms_opt(hour, 0, 0).unwrap())
}

fn clock() -> Clock {
    Arc::new(ManualClock::new(at(day(3, 1), 9)))
}

fn collections_settings() -> CollectionsSettings {
    CollectionsSettings::new(DunningPolicy::builder(USD).build().unwrap())
}

/// 10 % of collected revenue, 20 % on Fibre 300, 5.00 per activation.
fn commission_plan() -> CommissionPlan {
    CommissionPlan::builder(CommissionPlanId::from_u128(1), "Agents 2026", USD)
        .revenue_share(Decimal::from(10))
        .rate_for(RevenueKey::Plan(FIBRE_300), Decimal::from(20))
        .activation_reward(usd(500))
        .build()
        .unwrap()
}

struct Env<B, P, D, S, O> {
    tenant: TenantId,
    clock: Clock,
    billing: BillingService<B, Clock>,
    collections: CollectionsService<P, D, Clock>,
    partners: PartnersService<S, Clock>,
    handler: Arc<dyn EventHandler>,
    outbox: O,
}

impl<B, P, D, S, O> Env<B, P, D, S, O>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    S: PartnerStore + 'static,
    O: OutboxStore + Clone,
{
    async fn dispatch(&self) {
        let dispatcher = Dispatcher::new(
            self.outbox.clone(),
            self.clock.clone(),
            DispatcherSettings::new("relay"),
        )
        .handler(self.handler.clone());
        let summary = dispatcher.drain().await.unwrap();
        assert_eq!(summary.parked, 0, "no reaction may fail: {summary:?}");
    }

    async fn entries(&self, partner: PartnerId) -> Vec<String> {
        self.partners
            .ledger(self.tenant, partner)
            .await
            .unwrap()
            .entries()
            .iter()
            .map(|e| match &e.kind {
                EntryKind::Accrued(a) => format!(
                    "{} accrued {:?} {} on {} at {:?}",
                    e.on, a.component, a.commission, a.base, a.rate_percent
                ),
                EntryKind::ClawedBack(c) => {
                    format!("{} clawed back {} of {}", e.on, c.commission, c.base)
                }
                other => format!("{} {other:?}", e.on),
            })
            .collect()
    }

    async fn balance(&self, partner: PartnerId) -> Money {
        self.partners
            .summary(self.tenant, partner, day(12, 31))
            .await
            .unwrap()
            .balance
    }
}

async fn run<B, P, D, S, O>(env: Env<B, P, D, S, O>) -> Vec<String>
where
    B: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    S: PartnerStore + 'static,
    O: OutboxStore + Clone,
{
    let t = env.tenant;
    // The catalogue and the referred customer's subscription: its revenue is Fibre 300's.
    let product = Product {
        id: ProductId::from_u128(3),
        name: "Fibre".into(),
    };
    env.billing
        .store()
        .put_product(t, product.clone())
        .await
        .unwrap();
    let fibre = Plan::builder(FIBRE_300, product.id, "Fibre 300")
        .charge(Charge::recurring_flat([usd(5000)]))
        .build(day(1, 1))
        .unwrap();
    env.billing.save_plan(t, fibre).await.unwrap();
    env.billing
        .save_account(t, CustomerAccount::new(REFERRED, USD))
        .await
        .unwrap();
    env.billing
        .subscribe(t, NewSubscription::new(REFERRED, FIBRE_300, USD, day(3, 1)))
        .await
        .unwrap();

    // A master agent, its sub-agent (a quarter of each commission goes up), the referral.
    let plan = commission_plan();
    env.partners.save_plan(t, &plan).await.unwrap();
    let open =
        |id, name, kind| PartnerAccount::apply(id, name, kind, plan.id(), day(2, 1)).unwrap();
    env.partners
        .apply(t, open(MASTER, "Metro Agents", PartnerKind::MasterAgent))
        .await
        .unwrap();
    env.partners
        .change_status(t, MASTER, PartnerStatus::Active, day(2, 1))
        .await
        .unwrap();
    let sub = open(SUB, "Corner Shop", PartnerKind::Referral)
        .under(MasterOverride::new(MASTER, Decimal::from(25)).unwrap())
        .unwrap();
    env.partners.apply(t, sub).await.unwrap();
    env.partners
        .change_status(t, SUB, PartnerStatus::Active, day(2, 1))
        .await
        .unwrap();
    env.partners
        .record_touch(t, REFERRED, SUB, day(2, 20))
        .await
        .unwrap();
    env.partners
        .attribute(
            t,
            REFERRED,
            dotmac::partners::AttributionRule::first_touch(30),
            day(3, 1),
        )
        .await
        .unwrap();

    // The referred customer pays 100.00 (20 % on Fibre 300 = 20.00, plus the 5.00 reward),
    // a walk-in customer 50.00.
    env.clock.set(at(day(3, 2), 12));
    let paid = PaymentId::from_u128(0xAA01);
    env.collections
        .receive_payment(t, PaymentRequest::new(REFERRED, paid, usd(10_000)))
        .await
        .unwrap();
    env.collections
        .receive_payment(
            t,
            PaymentRequest::new(WALK_IN, PaymentId::from_u128(0xAA02), usd(5000)),
        )
        .await
        .unwrap();
    env.dispatch().await;
    assert_eq!(env.balance(SUB).await, usd(1875), "three quarters of 25.00");
    assert_eq!(env.balance(MASTER).await, usd(625), "a quarter of 25.00");

    // The payment's event delivered again (at least once): nothing more accrues.
    let messages = env.outbox.outbox_messages(t).await.unwrap();
    let payment_event = messages
        .iter()
        .find(|m| {
            m.event_type == "payments.payment_received"
                && m.payload["customer"] == REFERRED.to_string()
        })
        .expect("the referred customer's payment event");
    env.handler.handle(payment_event).await.unwrap();
    env.dispatch().await;
    assert_eq!(
        env.balance(SUB).await,
        usd(1875),
        "a replay accrues nothing"
    );
    assert_eq!(env.balance(MASTER).await, usd(625));

    // All of it refunded: exactly what the payment earned comes back, in both ledgers.
    env.clock.set(at(day(3, 10), 12));
    env.collections
        .refund_payment(t, RefundRequest::new(REFERRED, paid, usd(10_000)))
        .await
        .unwrap();
    env.dispatch().await;
    assert_eq!(env.balance(SUB).await, usd(0));
    assert_eq!(env.balance(MASTER).await, usd(0));
    // The refund's event again: nothing more is clawed back.
    let messages = env.outbox.outbox_messages(t).await.unwrap();
    let refund_event = messages
        .iter()
        .find(|m| m.event_type == "payments.payment_refunded")
        .expect("the refund event");
    env.handler.handle(refund_event).await.unwrap();
    assert_eq!(
        env.balance(SUB).await,
        usd(0),
        "a replayed refund claws back nothing"
    );

    let mut lines = Vec::new();
    for partner in [SUB, MASTER] {
        lines.push(format!("{partner}"));
        lines.extend(env.entries(partner).await);
    }
    lines
}

async fn on_memory() -> Vec<String> {
    let outbox = Arc::new(MemoryOutbox::new());
    let clock = clock();
    let tenant = TenantId::new();
    let billing = BillingService::new(
        MemoryStore::new().with_outbox(outbox.clone()),
        clock.clone(),
        BillingSettings::default(),
    );
    let partners = PartnersService::new(
        InMemoryPartnerStore::with_outbox(outbox.clone()),
        clock.clone(),
        PartnersSettings::default(),
    );
    let handler: Arc<dyn EventHandler> = Arc::new(PartnersFollowCollections::new(
        partners.clone(),
        billing.clone(),
    ));
    run(Env {
        tenant,
        clock: clock.clone(),
        billing,
        collections: CollectionsService::new(
            InMemoryPaymentStore::new().with_outbox(outbox.clone()),
            InMemoryDunningStore::new().with_outbox(outbox.clone()),
            clock,
            collections_settings(),
        ),
        partners,
        handler,
        outbox,
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
    db.create_tenant(tenant, "Partner Fibre", clock.now())
        .await
        .unwrap();
    let partners = PartnersService::new(store.clone(), clock.clone(), PartnersSettings::default());
    let billing = BillingService::new(store.clone(), clock.clone(), BillingSettings::default());
    let handler: Arc<dyn EventHandler> = Arc::new(PartnersFollowCollections::new(
        partners.clone(),
        billing.clone(),
    ));
    run(Env {
        tenant,
        clock: clock.clone(),
        billing,
        collections: CollectionsService::new(
            store.clone(),
            store.clone(),
            clock,
            collections_settings(),
        ),
        partners,
        handler,
        outbox: store,
    })
    .await
}

#[tokio::test]
async fn payments_accrue_replays_accrue_nothing_and_refunds_claw_back_on_every_store() {
    let memory = on_memory().await;
    assert!(
        memory
            .iter()
            .any(|l| l.contains("RevenueShare $15.00 on $100.00 at Some(20)")),
        "the sub-agent's three quarters of 20 % on Fibre 300: {memory:#?}"
    );
    let sqlite = on_sql("sqlite::memory:", None).await;
    assert_eq!(sqlite, memory, "SQLite and memory agree");
    // PostgreSQL always: a run without DATABASE_URL fails rather than passing on two stores
    // of three. The dispatcher claims across tenants: a schema no other test writes to.
    let url = crate::harness::database_url();
    let schema = format!("dotmac_test_partners_{}", uuid::Uuid::now_v7().simple());
    let postgres = on_sql(&url, Some(schema)).await;
    assert_eq!(postgres, memory, "PostgreSQL and memory agree");
}
