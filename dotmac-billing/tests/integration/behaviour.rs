//! Behaviour of the bill run and subscription changes through the public API.
#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use dotmac_billing::{
    BillingError, BillingTiming, CancelTiming, ChangeTiming, Charge, CurrencyPrice, Discount,
    DiscountAmount, DiscountDuration, DiscountId, DocumentKey, DocumentSettings, FirstPeriod,
    Invoice, LineKind, NewSubscription, PendingCharge, Plan, PriceModel, ProrationBehavior,
    ProrationMode, Subscription, SubscriptionChange, SubscriptionStatus, TaxExemption, TaxRate,
    TaxRateId, bill_due, cancel, change,
};
use dotmac_core::{
    BillingInterval, Currency, CustomerId, Money, PendingChargeId, PlanId, ProductId,
    SubscriptionId,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

fn usd(s: &str) -> Money {
    Money::parse(s, Currency::USD).unwrap()
}

fn flat(id: u128, amount: &str) -> Plan {
    Plan::builder(PlanId::from_u128(id), ProductId::from_u128(1), "plan")
        .charge(Charge::recurring_flat([usd(amount)]))
        .build(d(2020, 1, 1))
        .unwrap()
}

fn settings() -> DocumentSettings {
    DocumentSettings::default()
}

fn totals(invoices: &[Invoice]) -> Vec<(NaiveDate, Decimal)> {
    invoices
        .iter()
        .map(|i| (i.issue_date, i.total.amount()))
        .collect()
}

fn sub(plan: &Plan, start: NaiveDate) -> NewSubscription {
    NewSubscription::new(CustomerId::from_u128(5), plan.id, Currency::USD, start)
}

#[test]
fn defer_bills_the_partial_period_with_the_first_full_one() {
    let plan = flat(1, "30.00");
    let s = sub(&plan, d(2026, 3, 15))
        .anchor(d(2026, 4, 1))
        .first_period(FirstPeriod::Defer)
        .create(&plan, Currency::USD)
        .unwrap();
    let early = bill_due(&s, &plan, &[], d(2026, 3, 31), &settings()).unwrap();
    assert!(early.invoices.is_empty());
    let out = bill_due(&s, &plan, &[], d(2026, 4, 1), &settings()).unwrap();
    // 30 × 17/31 = 16.45 and 30.00, on one document dated Apr 1.
    assert_eq!(totals(&out.invoices), [(d(2026, 4, 1), dec!(46.45))]);
    assert_eq!(out.invoices[0].lines.len(), 2);
    let again = bill_due(&out.subscription, &plan, &[], d(2026, 4, 30), &settings()).unwrap();
    assert!(again.invoices.is_empty(), "re-running is a no-op");
}

#[test]
fn setup_fee_goes_on_the_first_document_only() {
    let plan = Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "p")
        .charge(Charge::recurring_flat([usd("30")]))
        .setup_fee(usd("50"))
        .build(d(2020, 1, 1))
        .unwrap();
    let s = sub(&plan, d(2026, 4, 1))
        .create(&plan, Currency::USD)
        .unwrap();
    let out = bill_due(&s, &plan, &[], d(2026, 5, 1), &settings()).unwrap();
    assert_eq!(
        totals(&out.invoices),
        [(d(2026, 4, 1), dec!(80)), (d(2026, 5, 1), dec!(30))]
    );
    assert_eq!(out.invoices[0].lines[1].kind, LineKind::SetupFee);
}

#[test]
fn in_arrears_bills_the_used_part_at_the_period_end() {
    let plan = Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "p")
        .timing(BillingTiming::InArrears)
        .charge(Charge::recurring_flat([usd("30")]))
        .build(d(2020, 1, 1))
        .unwrap();
    let s = sub(&plan, d(2026, 3, 15))
        .anchor(d(2026, 4, 1))
        .create(&plan, Currency::USD)
        .unwrap();
    let out = bill_due(&s, &plan, &[], d(2026, 5, 1), &settings()).unwrap();
    assert_eq!(
        totals(&out.invoices),
        [(d(2026, 4, 1), dec!(16.45)), (d(2026, 5, 1), dec!(30))]
    );
}

#[test]
fn cancel_at_period_end_stops_billing_and_ends() {
    let plan = flat(1, "30");
    let s = sub(&plan, d(2026, 4, 1))
        .create(&plan, Currency::USD)
        .unwrap();
    let billed = bill_due(&s, &plan, &[], d(2026, 4, 1), &settings()).unwrap();
    let out = cancel(
        &billed.subscription,
        &plan,
        d(2026, 4, 10),
        CancelTiming::EndOfPeriod,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    assert!(out.invoice.is_none());
    assert_eq!(out.subscription.ends_on(), Some(d(2026, 5, 1)));
    assert_eq!(out.subscription.status(), SubscriptionStatus::Active);
    let later = bill_due(&out.subscription, &plan, &[], d(2026, 7, 1), &settings()).unwrap();
    assert!(later.invoices.is_empty());
    assert_eq!(later.subscription.status(), SubscriptionStatus::Ended);
}

/// A subscription cancelled at its period end with charges still pending (usage rated in
/// arrears on the day it ends, a late fee for the customer): the run that ends it bills them
/// on one closing invoice dated the run's day, so none is left to a bill that never comes.
#[test]
fn the_run_that_ends_a_subscription_bills_what_is_pending_on_a_closing_invoice() {
    let plan = flat(1, "30");
    let s = sub(&plan, d(2026, 4, 1))
        .create(&plan, Currency::USD)
        .unwrap();
    let billed = bill_due(&s, &plan, &[], d(2026, 4, 1), &settings()).unwrap();
    let cancelled = cancel(
        &billed.subscription,
        &plan,
        d(2026, 4, 10),
        CancelTiming::EndOfPeriod,
        ProrationBehavior::None,
        &settings(),
    )
    .unwrap()
    .subscription;
    let charge = |n: u128, subscription, kind, amount: &str, on| PendingCharge {
        id: PendingChargeId::from_u128(n),
        customer: s.customer,
        subscription,
        kind,
        text: None,
        period: None,
        quantity: Decimal::ONE,
        unit_price: usd(amount),
        price: None,
        created_on: on,
    };
    let other = SubscriptionId::from_u128(999);
    let pending = [
        charge(1, Some(s.id), LineKind::Usage, "4.50", d(2026, 5, 1)),
        charge(2, None, LineKind::LateFee, "5.00", d(2026, 4, 20)),
        // Another subscription's, and one dated after the run: not this run's to bill.
        charge(3, Some(other), LineKind::Usage, "1.00", d(2026, 5, 1)),
        charge(4, None, LineKind::LateFee, "5.00", d(2026, 5, 3)),
    ];
    let out = bill_due(&cancelled, &plan, &pending, d(2026, 5, 1), &settings()).unwrap();
    assert_eq!(out.subscription.status(), SubscriptionStatus::Ended);
    assert_eq!(totals(&out.invoices), [(d(2026, 5, 1), dec!(9.50))]);
    assert_eq!(
        out.invoices[0].key,
        DocumentKey::Closing { subscription: s.id }
    );
    assert_eq!(
        out.consumed,
        [PendingChargeId::from_u128(1), PendingChargeId::from_u128(2)]
    );
    // Ended: a later run bills nothing more, whatever is pending.
    let later = bill_due(
        &out.subscription,
        &plan,
        &pending,
        d(2026, 6, 1),
        &settings(),
    )
    .unwrap();
    assert!(later.invoices.is_empty() && later.consumed.is_empty());
    // Nothing pending: the subscription ends without a document.
    let quiet = bill_due(&cancelled, &plan, &[], d(2026, 5, 1), &settings()).unwrap();
    assert!(quiet.invoices.is_empty());
    assert_eq!(quiet.subscription.status(), SubscriptionStatus::Ended);
}

#[test]
fn pause_credits_and_resume_charges_the_rest_of_the_period() {
    let plan = flat(1, "30");
    let s = sub(&plan, d(2026, 4, 1))
        .create(&plan, Currency::USD)
        .unwrap();
    let s = bill_due(&s, &plan, &[], d(2026, 4, 1), &settings())
        .unwrap()
        .subscription;
    let paused = change(
        &s,
        &plan,
        &SubscriptionChange::Pause,
        d(2026, 4, 11),
        ChangeTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    assert_eq!(paused.subscription.status(), SubscriptionStatus::Paused);
    assert_eq!(paused.invoice.as_ref().unwrap().total, usd("-20.00"));
    let resumed = change(
        &paused.subscription,
        &plan,
        &SubscriptionChange::Resume,
        d(2026, 4, 21),
        ChangeTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    assert_eq!(resumed.subscription.status(), SubscriptionStatus::Active);
    assert_eq!(resumed.invoice.as_ref().unwrap().total, usd("10.00"));
    // Resuming an active subscription is an illegal transition, and nothing changes.
    let refused = change(
        &resumed.subscription,
        &plan,
        &SubscriptionChange::Resume,
        d(2026, 4, 22),
        ChangeTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    );
    assert_eq!(
        refused,
        Err(BillingError::IllegalTransition {
            from: SubscriptionStatus::Active,
            to: SubscriptionStatus::Active
        })
    );
}

#[test]
fn quantity_change_prorates_per_seat() {
    let plan = Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "seats")
        .charge(Charge::per_seat(vec![CurrencyPrice {
            currency: Currency::USD,
            model: PriceModel::PerUnit {
                unit_amount: dec!(10),
            },
        }]))
        .build(d(2020, 1, 1))
        .unwrap();
    let s = sub(&plan, d(2026, 4, 1))
        .quantity(dec!(3))
        .create(&plan, Currency::USD)
        .unwrap();
    let s = bill_due(&s, &plan, &[], d(2026, 4, 1), &settings())
        .unwrap()
        .subscription;
    let out = change(
        &s,
        &plan,
        &SubscriptionChange::Quantity { quantity: dec!(5) },
        d(2026, 4, 16),
        ChangeTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    let inv = out.invoice.unwrap();
    let amounts: Vec<_> = inv.lines.iter().map(|l| (l.kind, l.amount)).collect();
    assert_eq!(
        amounts,
        [
            (LineKind::ProrationCredit, usd("-15.00")),
            (LineKind::ProrationCharge, usd("25.00"))
        ]
    );
    assert_eq!(inv.lines[1].quantity, dec!(5));
    let refused = change(
        &s,
        &plan,
        &SubscriptionChange::Quantity { quantity: dec!(-1) },
        d(2026, 4, 16),
        ChangeTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    );
    assert!(matches!(refused, Err(BillingError::InvalidQuantity { .. })));
}

#[test]
fn two_changes_in_one_period_credit_at_the_prices_billed() {
    let (a, b, c) = (flat(1, "10"), flat(2, "20"), flat(3, "30"));
    let plans = vec![a.clone(), b.clone(), c.clone()];
    let s = sub(&a, d(2026, 4, 1)).create(&a, Currency::USD).unwrap();
    let first = bill_due(&s, &plans, &[], d(2026, 4, 1), &settings()).unwrap();
    let to_b = change(
        &first.subscription,
        &plans,
        &SubscriptionChange::Plan {
            plan: b.id,
            version: None,
        },
        d(2026, 4, 11),
        ChangeTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    let to_c = change(
        &to_b.subscription,
        &plans,
        &SubscriptionChange::Plan {
            plan: c.id,
            version: None,
        },
        d(2026, 4, 21),
        ChangeTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    // The second change credits B's 10 days at B's price (6.67), not A's.
    let credit = &to_c.invoice.as_ref().unwrap().lines[0];
    assert_eq!(credit.amount, usd("-6.67"));
    let billed = first.invoices[0].total.amount()
        + to_b.invoice.unwrap().total.amount()
        + to_c.invoice.unwrap().total.amount();
    // Exactly 10 days each of 10, 20 and 30 a month is 20.00; one cent per line at most.
    assert!((billed - dec!(20)).abs() <= dec!(0.05), "billed {billed}");
}

#[test]
fn fixed_30_day_months() {
    let plan = flat(1, "31.00");
    let s = sub(&plan, d(2026, 5, 17))
        .anchor(d(2026, 5, 1))
        .proration(ProrationMode::Fixed30Days)
        .create(&plan, Currency::USD)
        .unwrap();
    let out = bill_due(&s, &plan, &[], d(2026, 5, 17), &settings()).unwrap();
    assert_eq!(totals(&out.invoices), [(d(2026, 5, 17), dec!(15.50))]);
}

fn discount(amount: DiscountAmount, duration: DiscountDuration) -> Discount {
    Discount {
        id: DiscountId::from_u128(1),
        amount,
        duration,
    }
}

#[test]
fn discounts_then_taxes_round_once_per_line() {
    let plan = flat(1, "30");
    let vat = TaxRate::exclusive(TaxRateId::from_u128(1), "VAT", dec!(20));
    let settings = DocumentSettings {
        taxes: vec![vat],
        ..DocumentSettings::default()
    };
    let s = sub(&plan, d(2026, 4, 1))
        .discount(discount(
            DiscountAmount::Percentage(dec!(10)),
            DiscountDuration::Once,
        ))
        .create(&plan, Currency::USD)
        .unwrap();
    let out = bill_due(&s, &plan, &[], d(2026, 5, 1), &settings).unwrap();
    let first = &out.invoices[0];
    assert_eq!(first.discount_total, usd("3.00"));
    assert_eq!(first.tax_total, usd("5.40"));
    assert_eq!(first.total, usd("32.40"));
    // The once-only discount is used up; May is full price plus tax.
    assert_eq!(out.invoices[1].total, usd("36.00"));
    assert!(!out.subscription.discounts[0].is_active());
}

#[test]
fn a_fixed_discount_never_takes_a_line_below_zero() {
    let plan = flat(1, "30");
    let s = sub(&plan, d(2026, 4, 1))
        .discount(discount(
            DiscountAmount::Fixed(usd("50")),
            DiscountDuration::Forever,
        ))
        .create(&plan, Currency::USD)
        .unwrap();
    let out = bill_due(&s, &plan, &[], d(2026, 4, 1), &settings()).unwrap();
    assert_eq!(out.invoices[0].lines[0].discount, usd("30"));
    assert_eq!(out.invoices[0].total, usd("0"));
}

#[test]
fn inclusive_tax_and_exemption() {
    let plan = flat(1, "12");
    let vat = TaxRate::inclusive(TaxRateId::from_u128(1), "VAT", dec!(20));
    let mut settings = DocumentSettings {
        taxes: vec![vat],
        ..DocumentSettings::default()
    };
    let s = sub(&plan, d(2026, 4, 1))
        .create(&plan, Currency::USD)
        .unwrap();
    let out = bill_due(&s, &plan, &[], d(2026, 4, 1), &settings).unwrap();
    assert_eq!(out.invoices[0].tax_total, usd("2.00"));
    assert_eq!(out.invoices[0].total, usd("12.00"));
    settings.exemption = TaxExemption::All;
    let exempt = bill_due(&s, &plan, &[], d(2026, 4, 1), &settings).unwrap();
    assert!(exempt.invoices[0].tax_total.is_zero());
}

#[test]
fn trial_then_active() {
    let plan = Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "p")
        .trial_days(14)
        .charge(Charge::recurring_flat([usd("30")]))
        .build(d(2020, 1, 1))
        .unwrap();
    let s = sub(&plan, d(2026, 4, 1))
        .create(&plan, Currency::USD)
        .unwrap();
    assert_eq!(s.status(), SubscriptionStatus::Trialing);
    let out = bill_due(&s, &plan, &[], d(2026, 4, 15), &settings()).unwrap();
    // Trial [Apr 1, Apr 15); Apr 15..May 1 is 16/30 of 30.
    assert_eq!(totals(&out.invoices), [(d(2026, 4, 15), dec!(16))]);
    assert_eq!(out.subscription.status(), SubscriptionStatus::Active);
}

#[test]
fn price_versions_are_kept_until_migrated() {
    let mut plan = flat(1, "30");
    let s = sub(&plan, d(2026, 4, 1))
        .create(&plan, Currency::USD)
        .unwrap();
    plan.add_version(
        d(2026, 4, 10),
        vec![Charge::recurring_flat([usd("35")])],
        vec![],
    )
    .unwrap();
    let out = bill_due(&s, &plan, &[], d(2026, 5, 1), &settings()).unwrap();
    assert_eq!(
        out.invoices[1].total,
        usd("30"),
        "the old version keeps billing"
    );
    assert_eq!(out.invoices[1].lines[0].price.unwrap().version, 1);
    let migrated = change(
        &out.subscription,
        &plan,
        &SubscriptionChange::Plan {
            plan: plan.id,
            version: Some(2),
        },
        d(2026, 5, 10),
        ChangeTiming::AtPeriodEnd,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    assert!(migrated.invoice.is_none(), "no proration at period end");
    let june = bill_due(
        &migrated.subscription,
        &plan,
        &[],
        d(2026, 6, 1),
        &settings(),
    )
    .unwrap();
    assert_eq!(june.invoices[0].total, usd("35"));
}

#[test]
fn bad_input_is_refused_with_typed_errors() {
    let plan = flat(1, "30");
    let s: Subscription = sub(&plan, d(2026, 4, 1))
        .create(&plan, Currency::USD)
        .unwrap();
    let before = s.clone();
    assert_eq!(
        change(
            &s,
            &plan,
            &SubscriptionChange::Plan {
                plan: PlanId::from_u128(99),
                version: None
            },
            d(2026, 4, 5),
            ChangeTiming::Immediate,
            ProrationBehavior::InvoiceNow,
            &settings(),
        ),
        Err(BillingError::UnknownPlan(PlanId::from_u128(99)))
    );
    assert_eq!(
        cancel(
            &s,
            &plan,
            d(2026, 3, 31),
            CancelTiming::Immediate,
            ProrationBehavior::InvoiceNow,
            &settings()
        ),
        Err(BillingError::ChangeBeforeStart {
            subscription: s.id,
            on: d(2026, 3, 31),
            start: d(2026, 4, 1)
        })
    );
    assert_eq!(
        s, before,
        "refused changes leave the subscription as it was"
    );
    assert_eq!(
        NewSubscription::new(
            CustomerId::from_u128(5),
            plan.id,
            Currency::EUR,
            d(2026, 4, 1)
        )
        .create(&plan, Currency::EUR),
        Err(BillingError::CurrencyNotOffered {
            plan: plan.id,
            currency: "EUR"
        })
    );
    assert_eq!(
        sub(&plan, d(2026, 4, 1)).create(&plan, Currency::EUR),
        Err(BillingError::CurrencyNotUsed {
            customer: CustomerId::from_u128(5),
            currency: "USD",
            customer_currency: "EUR"
        })
    );
    assert!(matches!(
        sub(&plan, d(2026, 4, 1))
            .quantity(dec!(-2))
            .create(&plan, Currency::USD),
        Err(BillingError::InvalidQuantity { .. })
    ));
    let yearly = Plan::builder(PlanId::from_u128(2), ProductId::from_u128(1), "y")
        .interval(BillingInterval::YEARLY)
        .charge(Charge::recurring_flat([usd("300")]))
        .build(d(2020, 1, 1))
        .unwrap();
    assert_eq!(
        change(
            &s,
            &vec![plan.clone(), yearly.clone()],
            &SubscriptionChange::Plan {
                plan: yearly.id,
                version: None
            },
            d(2026, 4, 5),
            ChangeTiming::Immediate,
            ProrationBehavior::InvoiceNow,
            &settings(),
        ),
        Err(BillingError::IntervalMismatch {
            from: plan.id,
            to: yearly.id
        })
    );
}

fn net_of(invoice: &Invoice) -> Vec<(LineKind, Decimal, Decimal)> {
    invoice
        .lines
        .iter()
        .map(|l| (l.kind, l.amount.amount(), l.discount.amount()))
        .collect()
}

#[test]
fn a_fixed_discount_is_prorated_on_a_partial_first_period() {
    let plan = flat(1, "31.00");
    let s = sub(&plan, d(2026, 5, 17))
        .anchor(d(2026, 5, 1))
        .discount(discount(
            DiscountAmount::Fixed(usd("5.00")),
            DiscountDuration::Forever,
        ))
        .create(&plan, Currency::USD)
        .unwrap();
    let out = bill_due(&s, &plan, &[], d(2026, 6, 1), &settings()).unwrap();
    // 31 × 15/31 = 15.00 less 5 × 15/31 = 2.42; then a whole June at 31 − 5.
    assert_eq!(
        net_of(&out.invoices[0]),
        [(LineKind::Recurring, dec!(15.00), dec!(2.42))]
    );
    assert_eq!(
        totals(&out.invoices),
        [(d(2026, 5, 17), dec!(12.58)), (d(2026, 6, 1), dec!(26.00))]
    );
}

#[test]
fn a_fixed_discount_follows_the_days_through_changes_and_a_cancellation() {
    let (a, b) = (flat(1, "31.00"), flat(2, "62.00"));
    let plans = vec![a.clone(), b.clone()];
    let s = sub(&a, d(2026, 5, 1))
        .discount(discount(
            DiscountAmount::Fixed(usd("5.00")),
            DiscountDuration::Forever,
        ))
        .create(&a, Currency::USD)
        .unwrap();
    let may = bill_due(&s, &plans, &[], d(2026, 5, 1), &settings()).unwrap();
    assert_eq!(may.invoices[0].total, usd("26.00"));
    let to_b = SubscriptionChange::Plan {
        plan: b.id,
        version: None,
    };
    let changed = change(
        &may.subscription,
        &plans,
        &to_b,
        d(2026, 5, 11),
        ChangeTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    let doc = changed.invoice.unwrap();
    // 21 of 31 days: A's 21.00 less 5 × 21/31 = 3.39 back, B's 42.00 less 3.39 charged.
    assert_eq!(
        net_of(&doc),
        [
            (LineKind::ProrationCredit, dec!(-21.00), dec!(-3.39)),
            (LineKind::ProrationCharge, dec!(42.00), dec!(3.39)),
        ]
    );
    assert_eq!(doc.total, usd("21.00"));
    let cancelled = cancel(
        &changed.subscription,
        &plans,
        d(2026, 5, 21),
        CancelTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    let credit = cancelled.invoice.unwrap();
    // 11 of 31 days of B: 22.00 less 5 × 11/31 = 1.77, exactly what the change billed for them.
    assert_eq!(
        net_of(&credit),
        [(LineKind::ProrationCredit, dec!(-22.00), dec!(-1.77))]
    );
    assert_eq!(credit.total, usd("-20.23"));
    // May bills 20 days: 10 at 31 − 5 and 10 at 62 − 5, over 31 days: 26.77.
    let billed = may.invoices[0].total.amount() + doc.total.amount() + credit.total.amount();
    assert_eq!(billed, dec!(26.77));
}

#[test]
fn a_credit_after_a_once_discount_ran_out_is_net_of_that_discount() {
    let plan = flat(1, "30.00");
    for (amount, first_total, credit_discount) in [
        (
            DiscountAmount::Percentage(dec!(10)),
            dec!(27.00),
            dec!(-2.00),
        ),
        (DiscountAmount::Fixed(usd("5.00")), dec!(25.00), dec!(-3.33)),
    ] {
        let s = sub(&plan, d(2026, 6, 1))
            .discount(discount(amount, DiscountDuration::Once))
            .create(&plan, Currency::USD)
            .unwrap();
        let june = bill_due(&s, &plan, &[], d(2026, 6, 1), &settings()).unwrap();
        assert_eq!(june.invoices[0].total.amount(), first_total);
        assert!(!june.subscription.discounts[0].is_active());
        let out = cancel(
            &june.subscription,
            &plan,
            d(2026, 6, 11),
            CancelTiming::Immediate,
            ProrationBehavior::InvoiceNow,
            &settings(),
        )
        .unwrap();
        let credit = out.invoice.unwrap();
        // 20 of 30 days, net of the discount June was billed with, though it is used up.
        assert_eq!(
            net_of(&credit),
            [(LineKind::ProrationCredit, dec!(-20.00), credit_discount)]
        );
        assert_eq!(credit.total.amount(), dec!(-20.00) - credit_discount);
        assert!(-credit.total.amount() <= first_total);
    }
}

#[test]
fn a_period_billed_after_a_once_discount_ran_out_is_credited_without_it() {
    let plan = flat(1, "31.00");
    let s = sub(&plan, d(2026, 6, 1))
        .discount(discount(
            DiscountAmount::Percentage(dec!(50)),
            DiscountDuration::Once,
        ))
        .create(&plan, Currency::USD)
        .unwrap();
    let billed = bill_due(&s, &plan, &[], d(2026, 7, 1), &settings()).unwrap();
    assert_eq!(
        totals(&billed.invoices),
        [(d(2026, 6, 1), dec!(15.50)), (d(2026, 7, 1), dec!(31.00))]
    );
    assert_eq!(billed.subscription.discounts[0].covered, Some((0, 0)));
    let out = cancel(
        &billed.subscription,
        &plan,
        d(2026, 7, 11),
        CancelTiming::Immediate,
        ProrationBehavior::InvoiceNow,
        &settings(),
    )
    .unwrap();
    // July was billed in full: 21 of its 31 days come back in full.
    assert_eq!(
        net_of(&out.invoice.unwrap()),
        [(LineKind::ProrationCredit, dec!(-21.00), dec!(0))]
    );
}

#[test]
fn deferred_prorations_carry_their_period_discount() {
    let (a, b) = (flat(1, "30.00"), flat(2, "60.00"));
    let plans = vec![a.clone(), b.clone()];
    let s = sub(&a, d(2026, 6, 1))
        .discount(discount(
            DiscountAmount::Percentage(dec!(10)),
            DiscountDuration::Once,
        ))
        .create(&a, Currency::USD)
        .unwrap();
    let june = bill_due(&s, &plans, &[], d(2026, 6, 1), &settings()).unwrap();
    let changed = change(
        &june.subscription,
        &plans,
        &SubscriptionChange::Plan {
            plan: b.id,
            version: None,
        },
        d(2026, 6, 11),
        ChangeTiming::Immediate,
        ProrationBehavior::NextInvoice,
        &settings(),
    )
    .unwrap();
    assert!(changed.invoice.is_none());
    // Credit −20.00 with its 2.00 discount back, charge 40.00 with its 4.00 discount.
    let pending: Vec<(LineKind, Option<&str>, Decimal)> = changed
        .pending
        .iter()
        .map(|p| (p.kind, p.text.as_deref(), p.unit_price.amount()))
        .collect();
    assert_eq!(
        pending,
        [
            (LineKind::ProrationCredit, None, dec!(-20.00)),
            (LineKind::ProrationCredit, Some("Discount"), dec!(2.00)),
            (LineKind::ProrationCharge, None, dec!(40.00)),
            (LineKind::ProrationCharge, Some("Discount"), dec!(-4.00)),
        ]
    );
    let july = bill_due(
        &changed.subscription,
        &plans,
        &changed.pending,
        d(2026, 7, 1),
        &settings(),
    )
    .unwrap();
    // July's 60.00 (the once-only discount is used up) plus the net 18.00 of June's change.
    assert_eq!(totals(&july.invoices), [(d(2026, 7, 1), dec!(78.00))]);
    assert_eq!(july.invoices[0].discount_total, usd("0"));
}

/// Plan JSON goes through the same checks as the builder: a stored or imported plan cannot
/// bring in what `Plan::builder` refuses.
#[test]
fn plan_json_cannot_bypass_validation() {
    let plan = Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "p")
        .charge(Charge::recurring_flat([usd("30")]))
        .setup_fee(usd("50"))
        .build(d(2020, 1, 1))
        .unwrap();
    let good = serde_json::to_value(&plan).unwrap();
    assert_eq!(serde_json::from_value::<Plan>(good.clone()).unwrap(), plan);
    let refused = |edit: &dyn Fn(&mut serde_json::Value), expected: BillingError| {
        let mut json = good.clone();
        edit(&mut json);
        let error = serde_json::from_value::<Plan>(json).unwrap_err();
        assert_eq!(error.to_string(), expected.to_string());
    };
    let version =
        |json: &mut serde_json::Value| -> serde_json::Value { json["versions"][0].clone() };
    refused(
        &|json| {
            json["versions"][0]["charges"][0]["prices"][0]["model"]["unit_amount"] = "-30.00".into()
        },
        BillingError::NegativePrice {
            plan: plan.id,
            charge: 0,
            currency: "USD",
        },
    );
    refused(
        &|json| {
            let price = version(json)["charges"][0]["prices"][0].clone();
            json["versions"][0]["charges"][0]["prices"]
                .as_array_mut()
                .unwrap()
                .push(price);
        },
        BillingError::DuplicateCurrencyPrice {
            plan: plan.id,
            charge: 0,
            currency: "USD",
        },
    );
    refused(
        &|json| json["versions"][0]["charges"] = serde_json::json!([]),
        BillingError::PlanWithoutCharges {
            plan: plan.id,
            version: 1,
        },
    );
    refused(
        &|json| json["versions"][0]["setup_fees"][0]["currency"] = "EUR".into(),
        BillingError::SetupFeeCurrencyWithoutPrice {
            plan: plan.id,
            currency: "EUR",
        },
    );
}

#[test]
fn plan_builder_refuses_what_cannot_be_billed() {
    let builder = || Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "p");
    assert_eq!(
        builder()
            .charge(Charge::recurring_flat([usd("-30.00")]))
            .build(d(2020, 1, 1)),
        Err(BillingError::NegativePrice {
            plan: PlanId::from_u128(1),
            charge: 0,
            currency: "USD"
        })
    );
    assert_eq!(
        builder().setup_fee(usd("50")).build(d(2020, 1, 1)),
        Err(BillingError::PlanWithoutCharges {
            plan: PlanId::from_u128(1),
            version: 1
        })
    );
    let graduated = PriceModel::Graduated {
        tiers: dotmac_billing::Tiers::new(vec![dotmac_billing::Tier {
            up_to: None,
            unit_amount: dec!(1),
            flat_amount: dec!(-5),
        }])
        .unwrap(),
    };
    assert_eq!(
        builder()
            .charge(Charge::per_seat(vec![CurrencyPrice {
                currency: Currency::USD,
                model: graduated
            }]))
            .build(d(2020, 1, 1)),
        Err(BillingError::NegativePrice {
            plan: PlanId::from_u128(1),
            charge: 0,
            currency: "USD"
        })
    );
}
