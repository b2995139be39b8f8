//! Usage reaching invoices: rating closed periods with an allowance, late usage as an
//! adjustment on the next invoice, idempotent re-runs; MRR from real subscriptions.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use dotmac_billing::analytics::{mrr_at, recurring_items, recurring_items_on};
use dotmac_billing::usage_billing::allowance::{AllowancePeriod, AllowancePolicy, Rollover, TopUp};
use dotmac_billing::usage_billing::{UsageBillingEvent, UsageBillingService, UsageBillingSettings};
use dotmac_billing::{
    BillingError, BillingFailure, BillingService, BillingSettings, CancelTiming, Charge,
    CurrencyPrice, CustomerAccount, Discount, DiscountAmount, DiscountDuration, DiscountId,
    Invoice, LineKind, MemoryStore, NewSubscription, Plan, PriceModel, Product, ProrationBehavior,
    Subscription, cancel,
};
use dotmac_core::{
    BillingInterval, CoreError, Currency, CustomerId, FixedClock, Money, PlanId, ProductId,
    SubscriptionId, TenantId,
};
use dotmac_usage::{
    Aggregation, InMemoryUsageStore, Meter, MeterId, UsageEvent, UsageEventId, UsageStore,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn d(m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, day).unwrap()
}

fn at(m: u32, day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, day, hour, 0, 0).unwrap()
}

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

const TENANT: TenantId = TenantId::from_u128(1);
const CUSTOMER: CustomerId = CustomerId::from_u128(2);
const SUB: SubscriptionId = SubscriptionId::from_u128(3);
const DATA: MeterId = MeterId::from_u128(4);

fn meters() -> Vec<Meter> {
    vec![Meter {
        id: DATA,
        code: "data_gb".into(),
        aggregation: Aggregation::Sum,
    }]
}

/// 30.00 a month in advance, 100 GB included, 0.50 per GB above.
fn fibre_plan() -> Plan {
    Plan::builder(
        PlanId::from_u128(10),
        ProductId::from_u128(11),
        "Fibre 100 GB",
    )
    .interval(BillingInterval::MONTHLY)
    .charge(Charge::recurring_flat([usd(dec!(30))]))
    .charge(Charge::usage(
        DATA,
        vec![CurrencyPrice {
            currency: Currency::USD,
            model: PriceModel::PerUnit {
                unit_amount: dec!(0.50),
            },
        }],
    ))
    .build(d(1, 1))
    .unwrap()
}

fn allowance(gb: Decimal) -> AllowancePolicy {
    AllowancePolicy::new(DATA, gb, Currency::USD, None, &[80, 100]).unwrap()
}

fn event(id: u128, gb: Decimal, when: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        id: UsageEventId::from_u128(id),
        customer: CUSTOMER,
        subscription: Some(SUB),
        meter: DATA,
        quantity: gb,
        timestamp: when,
        properties: BTreeMap::new(),
    }
}

async fn setup(plan: &Plan) -> BillingService<MemoryStore, FixedClock> {
    let billing = BillingService::new(
        MemoryStore::new(),
        FixedClock::new(at(3, 1, 0)),
        BillingSettings::default(),
    );
    billing
        .add_product(
            TENANT,
            Product {
                id: plan.product,
                name: "Fibre".into(),
            },
        )
        .await
        .unwrap();
    billing.save_plan(TENANT, plan.clone()).await.unwrap();
    billing
        .save_account(TENANT, CustomerAccount::new(CUSTOMER, Currency::USD))
        .await
        .unwrap();
    billing
        .subscribe(
            TENANT,
            NewSubscription::new(CUSTOMER, plan.id, Currency::USD, d(3, 1)).id(SUB),
        )
        .await
        .unwrap();
    billing
}

async fn invoices(billing: &BillingService<MemoryStore, FixedClock>) -> Vec<Invoice> {
    billing.store().invoices_of(TENANT, CUSTOMER).await.unwrap()
}

fn lines(invoice: &Invoice) -> Vec<(LineKind, Decimal, Decimal, Decimal)> {
    invoice
        .lines
        .iter()
        .map(|l| (l.kind, l.quantity, l.unit_price.amount(), l.amount.amount()))
        .collect()
}

use dotmac_billing::{CatalogStore, InvoiceStore};
use dotmac_core::outbox::OutboxStore;

#[tokio::test]
async fn usage_above_the_allowance_is_billed_and_late_usage_adjusts_the_next_invoice() {
    let plan = fibre_plan();
    let billing = setup(&plan).await;
    let usage_store = InMemoryUsageStore::new();
    let settings = UsageBillingSettings::new(chrono_tz::UTC, meters())
        .allowance(plan.id, allowance(dec!(100)));
    let usage = UsageBillingService::new(billing.clone(), &usage_store, settings);

    // March 1st: the March subscription invoice; no usage period has closed yet.
    let (rated, run) = usage.bill(TENANT, d(3, 1)).await.unwrap();
    assert!(rated.added.is_empty());
    assert_eq!(run.invoices, 1);

    // March usage: 60 + 50 + 20 GB, with the 50 GB record replayed.
    let march = [
        event(1, dec!(60), at(3, 5, 10)),
        event(2, dec!(50), at(3, 12, 10)),
        event(2, dec!(50), at(3, 12, 10)),
        event(3, dec!(20), at(3, 31, 23)),
    ];
    let stored = usage_store.append_events(TENANT, &march).await.unwrap();
    assert_eq!(stored, [true, true, false, true]);

    // April 1st: March closes; 130 GB used, 100 included, 30 × 0.50 = 15.00 on the April
    // invoice next to April's subscription line.
    let (rated, run) = usage.bill(TENANT, d(4, 1)).await.unwrap();
    assert_eq!(rated.added.len(), 1);
    assert!(rated.events.is_empty());
    assert_eq!(run.invoices, 1);
    // The pending charge is the record: rating writes no outbox event of its own (the
    // invoice's `invoice.issued` carries the charge on).
    let written: Vec<_> = billing
        .store()
        .outbox()
        .outbox_messages(TENANT)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.event_type.starts_with("usage."))
        .collect();
    assert!(written.is_empty(), "{written:?}");
    let april = invoices(&billing)
        .await
        .into_iter()
        .find(|i| i.issue_date == d(4, 1))
        .unwrap();
    assert_eq!(
        lines(&april),
        [
            (LineKind::Recurring, dec!(1), dec!(30), dec!(30.00)),
            (LineKind::Usage, dec!(30), dec!(0.5), dec!(15.00)),
        ]
    );
    assert_eq!(april.total.amount(), dec!(45.00));
    let usage_line = &april.lines[1];
    assert_eq!(
        usage_line.description(),
        "data_gb: 130 used, 100 included, 30 billed"
    );
    assert_eq!(
        usage_line.period.map(|p| (p.start(), p.end())),
        Some((d(3, 1), d(4, 1)))
    );
    let price = usage_line.price.unwrap();
    assert_eq!((price.plan, price.version, price.charge), (plan.id, 1, 1));

    // Re-running the same day adds and issues nothing.
    let (rated, run) = usage.bill(TENANT, d(4, 1)).await.unwrap();
    assert!(rated.added.is_empty());
    assert_eq!(run.invoices, 0);

    // April 5th: a late March record (10 GB) and its replay arrive; April usage too.
    let late = [
        event(4, dec!(10), at(3, 31, 22)),
        event(4, dec!(10), at(3, 31, 22)),
        event(5, dec!(40), at(4, 20, 8)),
    ];
    assert_eq!(
        usage_store.append_events(TENANT, &late).await.unwrap(),
        [true, false, true]
    );
    let (rated, run) = usage.bill(TENANT, d(4, 5)).await.unwrap();
    // 140 GB now: 40 × 0.50 = 20.00, 15.00 billed: a 5.00 adjustment waits for May.
    assert_eq!(rated.added.len(), 1);
    assert_eq!(rated.added[0].kind, LineKind::UsageAdjustment);
    assert_eq!(rated.added[0].unit_price.amount(), dec!(5.00));
    assert_eq!(run.invoices, 0);
    let (rated, _) = usage.bill(TENANT, d(4, 5)).await.unwrap();
    assert!(rated.added.is_empty(), "the adjustment is added once");
    // The issued April invoice is untouched.
    let april_again = billing
        .store()
        .invoice(TENANT, april.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(april_again, april);

    // May 1st: May's line, April's usage (40 GB, inside the allowance) and March's adjustment.
    let (rated, run) = usage.bill(TENANT, d(5, 1)).await.unwrap();
    assert_eq!(rated.added.len(), 1);
    assert_eq!(run.invoices, 1);
    let may = invoices(&billing)
        .await
        .into_iter()
        .find(|i| i.issue_date == d(5, 1))
        .unwrap();
    assert_eq!(
        lines(&may),
        [
            (LineKind::Recurring, dec!(1), dec!(30), dec!(30.00)),
            (LineKind::UsageAdjustment, dec!(1), dec!(5), dec!(5.00)),
            (LineKind::Usage, dec!(0), dec!(0), dec!(0.00)),
        ]
    );
    assert_eq!(may.total.amount(), dec!(35.00));
    assert_eq!(
        may.lines[1].period.map(|p| p.start()),
        Some(d(3, 1)),
        "the adjustment names the March period"
    );

    // Re-running (and running later in May) creates nothing new.
    let (rated, run) = usage.bill(TENANT, d(5, 1)).await.unwrap();
    assert!(rated.added.is_empty());
    assert_eq!(run.invoices, 0);
    let (rated, run) = usage.bill(TENANT, d(5, 20)).await.unwrap();
    assert!(rated.added.is_empty());
    assert_eq!(run.invoices, 0);
    assert_eq!(invoices(&billing).await.len(), 3);
    assert!(
        billing
            .store()
            .pending_charges(TENANT, CUSTOMER)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn top_ups_raise_the_allowance() {
    let plan = fibre_plan();
    let billing = setup(&plan).await;
    let usage_store = InMemoryUsageStore::new();
    let settings = UsageBillingSettings::new(chrono_tz::UTC, meters())
        .allowance(plan.id, allowance(dec!(100)));
    // The customer bought a 20 GB pack in March.
    let top_ups = |_: TenantId, sub: &Subscription, policy: &AllowancePolicy, start: NaiveDate| {
        let mut period = AllowancePeriod::open(policy, sub.customer, start, Decimal::ZERO);
        if start == d(3, 1) {
            period
                .add_top_up(TopUp {
                    quantity: dec!(20),
                    rollover: Rollover::Expire,
                })
                .unwrap();
        }
        period
    };
    let usage =
        UsageBillingService::with_allowances(billing.clone(), &usage_store, settings, top_ups);
    usage_store
        .append_events(TENANT, &[event(1, dec!(130), at(3, 9, 0))])
        .await
        .unwrap();
    let (rated, _) = usage.bill(TENANT, d(4, 1)).await.unwrap();
    assert_eq!(rated.rated.len(), 1);
    assert_eq!(rated.rated[0].allowance, dec!(120));
    assert_eq!(rated.rated[0].billable, dec!(10));
    assert_eq!(rated.rated[0].amount, usd(dec!(5)));
    let april = invoices(&billing)
        .await
        .into_iter()
        .find(|i| i.issue_date == d(4, 1))
        .unwrap();
    assert_eq!(april.total.amount(), dec!(35.00));
}

const OTHER: CustomerId = CustomerId::from_u128(20);
const OTHER_SUB: SubscriptionId = SubscriptionId::from_u128(21);

/// A second customer, subscribed to `plan` from March 1st, with the March invoices of both
/// customers issued.
async fn add_other_customer(billing: &BillingService<MemoryStore, FixedClock>, plan: &Plan) {
    if billing
        .store()
        .plan(TENANT, plan.id)
        .await
        .unwrap()
        .is_none()
    {
        billing.save_plan(TENANT, plan.clone()).await.unwrap();
    }
    billing
        .save_account(TENANT, CustomerAccount::new(OTHER, Currency::USD))
        .await
        .unwrap();
    billing
        .subscribe(
            TENANT,
            NewSubscription::new(OTHER, plan.id, Currency::USD, d(3, 1)).id(OTHER_SUB),
        )
        .await
        .unwrap();
    assert_eq!(billing.run_bill(TENANT, d(3, 1)).await.unwrap().invoices, 2);
}

fn rating_failures(
    summary: &dotmac_billing::usage_billing::UsageRunSummary,
) -> Vec<(CustomerId, SubscriptionId, String)> {
    summary
        .events
        .iter()
        .filter_map(|e| match &e.payload {
            UsageBillingEvent::RatingFailed {
                customer,
                subscription,
                error_kind,
                ..
            } => Some((*customer, *subscription, error_kind.clone())),
            _ => None,
        })
        .collect()
}

/// After a rating run on April 1st (`attempt` 0, then 1 for a re-run) with `failure` for the
/// other customer: the healthy customer rated and invoiced once, the other reported with
/// `kind` and given nothing (no charge, and no April invoice without its usage).
async fn assert_only_the_other_was_skipped(
    billing: &BillingService<MemoryStore, FixedClock>,
    (rated, run): &(
        dotmac_billing::usage_billing::UsageRunSummary,
        dotmac_billing::BillRunSummary,
    ),
    attempt: usize,
    failure: BillingFailure,
    kind: &str,
) {
    assert_eq!(rated.failures, vec![failure]);
    assert_eq!(
        rating_failures(rated),
        vec![(OTHER, OTHER_SUB, kind.to_owned())]
    );
    assert_eq!(rated.added.len(), 1 - attempt);
    assert_eq!(run.invoices, 1 - attempt);
    assert!(run.failures.is_empty());
    assert_eq!(invoices(billing).await.len(), 2);
    let store = billing.store();
    assert!(
        store
            .pending_charges(TENANT, OTHER)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.invoices_of(TENANT, OTHER).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_usage_charge_without_a_meter_skips_only_its_subscription_until_the_meter_exists() {
    let plan = fibre_plan();
    let billing = setup(&plan).await;
    const VOICE: MeterId = MeterId::from_u128(5);
    // The other customer's plan charges voice minutes, a meter the settings lack at first.
    let voice_plan = Plan::builder(PlanId::from_u128(12), plan.product, "Voice")
        .interval(BillingInterval::MONTHLY)
        .charge(Charge::recurring_flat([usd(dec!(10))]))
        .charge(Charge::usage(
            VOICE,
            vec![CurrencyPrice {
                currency: Currency::USD,
                model: PriceModel::PerUnit {
                    unit_amount: dec!(0.10),
                },
            }],
        ))
        .build(d(1, 1))
        .unwrap();
    add_other_customer(&billing, &voice_plan).await;
    let usage_store = InMemoryUsageStore::new();
    let voice_event = UsageEvent {
        customer: OTHER,
        subscription: Some(OTHER_SUB),
        meter: VOICE,
        ..event(2, dec!(100), at(3, 10, 9))
    };
    usage_store
        .append_events(TENANT, &[event(1, dec!(130), at(3, 5, 10)), voice_event])
        .await
        .unwrap();
    let usage = UsageBillingService::new(
        billing.clone(),
        &usage_store,
        UsageBillingSettings::new(chrono_tz::UTC, meters()),
    );
    for attempt in 0..2 {
        let outcome = usage.bill(TENANT, d(4, 1)).await.unwrap();
        let failure = BillingFailure {
            customer: OTHER,
            subscription: Some(OTHER_SUB),
            error: BillingError::UnknownMeter {
                plan: voice_plan.id,
                meter: VOICE,
            },
        };
        assert_only_the_other_was_skipped(&billing, &outcome, attempt, failure, "unknown_meter")
            .await;
    }
    // The meter is defined: the next run rates and bills the skipped subscription.
    let mut fixed = meters();
    fixed.push(Meter {
        id: VOICE,
        code: "voice_min".into(),
        aggregation: Aggregation::Sum,
    });
    let usage = UsageBillingService::new(
        billing.clone(),
        &usage_store,
        UsageBillingSettings::new(chrono_tz::UTC, fixed),
    );
    let (rated, run) = usage.bill(TENANT, d(4, 1)).await.unwrap();
    assert!(rated.failures.is_empty());
    assert_eq!(rated.added.len(), 1);
    assert_eq!(run.invoices, 1);
    let other = billing.store().invoices_of(TENANT, OTHER).await.unwrap();
    assert_eq!(other.len(), 2);
    let april = other.iter().find(|i| i.issue_date == d(4, 1)).unwrap();
    assert_eq!(
        lines(april),
        [
            (LineKind::Recurring, dec!(1), dec!(10), dec!(10.00)),
            (LineKind::Usage, dec!(100), dec!(0.1), dec!(10.00)),
        ]
    );
    // Nobody twice.
    assert_eq!(invoices(&billing).await.len(), 2);
    let (rated, run) = usage.bill(TENANT, d(4, 1)).await.unwrap();
    assert!(rated.added.is_empty() && rated.failures.is_empty());
    assert_eq!(run.invoices, 0);
}

#[tokio::test]
async fn one_subscriptions_overflowing_usage_never_blocks_the_others() {
    let plan = fibre_plan();
    let billing = setup(&plan).await;
    add_other_customer(&billing, &plan).await;
    let usage_store = InMemoryUsageStore::new();
    // The issue-9 reproduction in usage: 3 × Decimal::MAX / 2 GB in March.
    let huge: Vec<UsageEvent> = (0..3)
        .map(|n| UsageEvent {
            customer: OTHER,
            subscription: Some(OTHER_SUB),
            ..event(100 + n, Decimal::MAX / Decimal::TWO, at(3, 10, 9))
        })
        .collect();
    usage_store.append_events(TENANT, &huge).await.unwrap();
    usage_store
        .append_events(TENANT, &[event(1, dec!(130), at(3, 5, 10))])
        .await
        .unwrap();
    let settings = UsageBillingSettings::new(chrono_tz::UTC, meters())
        .allowance(plan.id, allowance(dec!(100)));
    let usage = UsageBillingService::new(billing.clone(), &usage_store, settings);
    for attempt in 0..2 {
        let outcome = usage.bill(TENANT, d(4, 1)).await.unwrap();
        let failure = BillingFailure {
            customer: OTHER,
            subscription: Some(OTHER_SUB),
            error: BillingError::Usage(dotmac_usage::UsageError::Core(CoreError::Overflow {
                operation: "usage sum",
            })),
        };
        assert_only_the_other_was_skipped(&billing, &outcome, attempt, failure, "core.overflow")
            .await;
    }
}

#[test]
fn mrr_of_subscriptions_matches_a_hand_computation() {
    let tenant = TenantId::from_u128(1);
    let monthly = fibre_plan(); // 30.00 a month (its usage charge is not recurring revenue)
    let seats = Plan::builder(
        PlanId::from_u128(20),
        ProductId::from_u128(11),
        "Static IPs",
    )
    .charge(Charge::per_seat(vec![CurrencyPrice {
        currency: Currency::USD,
        model: PriceModel::PerUnit {
            unit_amount: dec!(4),
        },
    }]))
    .build(d(1, 1))
    .unwrap();
    let yearly = Plan::builder(
        PlanId::from_u128(30),
        ProductId::from_u128(11),
        "Business yearly",
    )
    .interval(BillingInterval::YEARLY)
    .charge(Charge::recurring_flat([usd(dec!(1200))]))
    .build(d(1, 1))
    .unwrap();
    let trial = Plan::builder(PlanId::from_u128(40), ProductId::from_u128(11), "Trial")
        .trial_days(30)
        .charge(Charge::recurring_flat([usd(dec!(50))]))
        .build(d(1, 1))
        .unwrap();
    let plans = vec![
        monthly.clone(),
        seats.clone(),
        yearly.clone(),
        trial.clone(),
    ];
    let new = |customer: u128, plan: &Plan, start: NaiveDate| {
        NewSubscription::new(
            CustomerId::from_u128(customer),
            plan.id,
            Currency::USD,
            start,
        )
    };
    let half_off = Discount {
        id: DiscountId::from_u128(1),
        amount: DiscountAmount::Percentage(dec!(50)),
        duration: DiscountDuration::Forever,
    };
    let welcome = Discount {
        id: DiscountId::from_u128(2),
        amount: DiscountAmount::Fixed(usd(dec!(10))),
        duration: DiscountDuration::Once,
    };
    let subs = vec![
        // 30.00 a month.
        new(1, &monthly, d(1, 10))
            .create(&monthly, Currency::USD)
            .unwrap(),
        // 3 IPs × 4.00 = 12.00, for the same customer.
        new(1, &seats, d(2, 1))
            .quantity(dec!(3))
            .create(&seats, Currency::USD)
            .unwrap(),
        // 1200 a year = 100.00 a month, half off forever: 50.00.
        new(2, &yearly, d(1, 1))
            .discount(half_off)
            .create(&yearly, Currency::USD)
            .unwrap(),
        // 30.00 with a once-only welcome discount: still 30.00 of recurring revenue.
        new(3, &monthly, d(2, 15))
            .discount(welcome)
            .create(&monthly, Currency::USD)
            .unwrap(),
        // In its trial until March 31st: nothing yet.
        new(4, &trial, d(3, 1))
            .create(&trial, Currency::USD)
            .unwrap(),
        // Starts after the date: nothing yet.
        new(5, &monthly, d(3, 20))
            .create(&monthly, Currency::USD)
            .unwrap(),
    ];
    // Cancelled on March 1st: gone by March 15th.
    let cancelled = new(6, &monthly, d(1, 1))
        .create(&monthly, Currency::USD)
        .unwrap();
    let cancelled = cancel(
        &cancelled,
        &plans,
        d(3, 1),
        CancelTiming::Immediate,
        ProrationBehavior::None,
        &Default::default(),
    )
    .unwrap()
    .subscription;
    let mut all = subs;
    all.push(cancelled);

    let on = d(3, 15);
    let items = recurring_items_on(tenant, &all, &plans, on).unwrap();
    let report = mrr_at(&items, on, Currency::USD).unwrap();
    // 30 + 12 + 50 + 30 = 122.00; ARR 1464.00; three paying customers.
    assert_eq!(report.total, usd(dec!(122)));
    assert_eq!(report.arr().unwrap(), usd(dec!(1464)));
    assert_eq!(report.paying_customers, 3);
    assert_eq!(report.by_tenant[&tenant], usd(dec!(122)));
    assert_eq!(report.by_plan[&(tenant, monthly.id)], usd(dec!(60)));
    assert_eq!(report.by_plan[&(tenant, seats.id)], usd(dec!(12)));
    assert_eq!(report.by_plan[&(tenant, yearly.id)], usd(dec!(50)));
    assert!(!report.by_plan.contains_key(&(tenant, trial.id)));

    // The whole timeline answers any date: in April the trial (50) and customer 5 (30) pay.
    let timeline = recurring_items(tenant, &all, &plans).unwrap();
    let april = mrr_at(&timeline, d(4, 15), Currency::USD).unwrap();
    assert_eq!(april.total, usd(dec!(202)));
    // Before the cancellation, customer 6 paid too; the seats had not started.
    let february = mrr_at(&timeline, d(1, 20), Currency::USD).unwrap();
    assert_eq!(february.total, usd(dec!(110))); // 30 + 50 + 30
}

#[tokio::test]
async fn in_arrears_usage_goes_on_the_periods_own_invoice() {
    let plan = Plan::builder(PlanId::from_u128(10), ProductId::from_u128(11), "Postpaid")
        .timing(dotmac_billing::BillingTiming::InArrears)
        .charge(Charge::recurring_flat([usd(dec!(30))]))
        .charge(Charge::usage(
            DATA,
            vec![CurrencyPrice {
                currency: Currency::USD,
                model: PriceModel::PerUnit {
                    unit_amount: dec!(0.25),
                },
            }],
        ))
        .build(d(1, 1))
        .unwrap();
    let billing = setup(&plan).await;
    let usage_store = InMemoryUsageStore::new();
    let usage = UsageBillingService::new(
        billing.clone(),
        &usage_store,
        UsageBillingSettings::new(chrono_tz::UTC, meters()),
    );
    usage_store
        .append_events(TENANT, &[event(1, dec!(8), at(3, 9, 0))])
        .await
        .unwrap();
    let (_, run) = usage.bill(TENANT, d(4, 1)).await.unwrap();
    assert_eq!(run.invoices, 1);
    let march = invoices(&billing).await;
    assert_eq!(
        lines(&march[0]),
        [
            (LineKind::Recurring, dec!(1), dec!(30), dec!(30.00)),
            (LineKind::Usage, dec!(8), dec!(0.25), dec!(2.00)),
        ]
    );
    assert_eq!(
        march[0].lines[1].period.map(|p| p.start()),
        march[0].lines[0].period.map(|p| p.start())
    );
}

mod properties {
    use super::*;
    use dotmac_billing::{Tier, Tiers};
    use proptest::prelude::*;

    fn model(graduated: bool) -> PriceModel {
        if graduated {
            PriceModel::Graduated {
                tiers: Tiers::new(vec![
                    Tier {
                        up_to: Some(dec!(50)),
                        unit_amount: dec!(0.37),
                        flat_amount: dec!(0),
                    },
                    Tier {
                        up_to: None,
                        unit_amount: dec!(0.113),
                        flat_amount: dec!(1),
                    },
                ])
                .unwrap(),
            }
        } else {
            PriceModel::PerUnit {
                unit_amount: dec!(0.333),
            }
        }
    }

    /// (gigabytes in tenths, day of month, late?, replayed?)
    type Usage = Vec<(u32, u32, bool, bool)>;

    fn events(base: u128, month: u32, usage: &Usage, late: bool) -> Vec<UsageEvent> {
        let mut out = Vec::new();
        for (i, (tenths, day, is_late, replay)) in usage.iter().enumerate() {
            if *is_late != late {
                continue;
            }
            let e = event(
                base + i as u128,
                Decimal::new(i64::from(*tenths), 1),
                at(month, *day, 12),
            );
            if *replay {
                out.push(e.clone());
            }
            out.push(e);
        }
        out
    }

    fn total(usage: &Usage) -> Decimal {
        usage
            .iter()
            .map(|(tenths, ..)| Decimal::new(i64::from(*tenths), 1))
            .sum()
    }

    async fn scenario(graduated: bool, included: u32, march: Usage, april: Usage) {
        let price = model(graduated);
        let plan = Plan::builder(PlanId::from_u128(10), ProductId::from_u128(11), "p")
            .charge(Charge::recurring_flat([usd(dec!(30))]))
            .charge(Charge::usage(
                DATA,
                vec![CurrencyPrice {
                    currency: Currency::USD,
                    model: price.clone(),
                }],
            ))
            .build(d(1, 1))
            .unwrap();
        let billing = setup(&plan).await;
        let store = InMemoryUsageStore::new();
        let included = Decimal::from(included);
        let settings = UsageBillingSettings::new(chrono_tz::UTC, meters())
            .allowance(plan.id, allowance(included));
        let usage = UsageBillingService::new(billing.clone(), &store, settings);
        let mut issued: Vec<Invoice> = Vec::new();
        let step = |day: NaiveDate, appended: Vec<UsageEvent>| {
            let (billing, usage, store) = (&billing, &usage, &store);
            async move {
                store.append_events(TENANT, &appended).await.unwrap();
                usage.bill(TENANT, day).await.unwrap();
                invoices(billing).await
            }
        };
        issued.extend(step(d(3, 1), Vec::new()).await);
        issued.extend(step(d(4, 1), events(100, 3, &march, false)).await);
        let mut late = events(100, 3, &march, true);
        late.extend(events(200, 4, &april, false));
        issued.extend(step(d(4, 10), late).await);
        issued.extend(step(d(5, 1), Vec::new()).await);
        issued.extend(step(d(5, 10), events(200, 4, &april, true)).await);
        let before_last = step(d(6, 1), Vec::new()).await;
        let after = step(d(6, 1), Vec::new()).await;
        assert_eq!(before_last, after, "re-running changes nothing");
        // Issued invoices never change.
        for invoice in &issued {
            assert!(after.contains(invoice));
        }
        for (month, usage) in [(3, &march), (4, &april)] {
            let billable = (total(usage) - included).max(Decimal::ZERO);
            let expected = price.amount(billable).unwrap();
            let lines: Vec<_> = after
                .iter()
                .flat_map(|i| &i.lines)
                .filter(|l| l.period.is_some_and(|p| p.start() == d(month, 1)))
                .filter(|l| matches!(l.kind, LineKind::Usage | LineKind::UsageAdjustment))
                .collect();
            let exact: Decimal = lines
                .iter()
                .map(|l| l.unit_price.amount() * l.quantity)
                .sum();
            assert_eq!(
                exact, expected,
                "usage and adjustments add up to the rating"
            );
            let rounded: Decimal = lines.iter().map(|l| l.amount.amount()).sum();
            let tolerance = Decimal::new(5, 3) * Decimal::from(lines.len());
            assert!((rounded - expected).abs() <= tolerance);
            assert_eq!(
                lines.iter().filter(|l| l.kind == LineKind::Usage).count(),
                1
            );
        }
        assert!(
            billing
                .store()
                .pending_charges(TENANT, CUSTOMER)
                .await
                .unwrap()
                .is_empty()
        );
    }

    fn usage() -> impl Strategy<Value = Usage> {
        prop::collection::vec((0u32..800, 1u32..=30, any::<bool>(), any::<bool>()), 0..8)
    }

    proptest! {
        #![proptest_config(dotmac_testing::config(48))]
        #[test]
        fn late_usage_is_billed_exactly_once_and_never_edits_an_issued_invoice(
            graduated in any::<bool>(),
            included in 0u32..150,
            march in usage(),
            april in usage(),
        ) {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(scenario(graduated, included, march, april));
        }
    }
}
