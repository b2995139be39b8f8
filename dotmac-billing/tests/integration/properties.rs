//! Properties of pricing, proration and the bill run over random plans, anchors and changes.
#![allow(clippy::unwrap_used)]

use chrono::{Days, NaiveDate};
use dotmac_billing::{
    CancelTiming, ChangeTiming, Charge, CurrencyPrice, Discount, DiscountAmount, DiscountDuration,
    DiscountId, DocumentBuilder, DocumentKey, DocumentSettings, DraftLine, Invoice, LineKind,
    NewSubscription, PendingCharge, Plan, PriceModel, ProrationBehavior, Subscription,
    SubscriptionChange, TaxRate, TaxRateId, bill_due, cancel, change, invoice_pending_charges,
};
use dotmac_core::{
    BillingInterval, Currency, CustomerId, Money, Period, PlanId, ProductId, RoundingMode,
    SubscriptionId,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

/// A per-seat plan at `cents` per seat per month.
fn seat_plan(id: u128, cents: i64) -> Plan {
    Plan::builder(PlanId::from_u128(id), ProductId::from_u128(1), "p")
        .interval(BillingInterval::MONTHLY)
        .charge(Charge::per_seat(vec![CurrencyPrice {
            currency: Currency::USD,
            model: PriceModel::PerUnit {
                unit_amount: Decimal::new(cents, 2),
            },
        }]))
        .build(d(2000, 1, 1))
        .unwrap()
}

#[derive(Debug, Clone)]
enum Step {
    Plan(usize),
    Seats(u32),
}

fn steps() -> impl Strategy<Value = Vec<(i64, Step)>> {
    prop::collection::vec(
        (
            1i64..31,
            prop_oneof![
                (0usize..3).prop_map(Step::Plan),
                (0u32..20).prop_map(Step::Seats)
            ],
        ),
        0..4,
    )
}

struct Setup {
    plans: Vec<Plan>,
    sub: Subscription,
    period_days: i64,
    start: NaiveDate,
}

fn setup(prices: &[i64], anchor_day: u32, month: u32, seats: u32) -> Setup {
    let plans: Vec<Plan> = prices
        .iter()
        .enumerate()
        .map(|(i, c)| seat_plan(i as u128 + 1, *c))
        .collect();
    // Month-end anchors (29–31) clamp; periods still tile.
    let anchor = d(2024, 1, anchor_day);
    let interval = BillingInterval::MONTHLY;
    let (_, period) = interval
        .period_containing(anchor, d(2025, month, 15))
        .unwrap();
    let sub = NewSubscription::new(
        CustomerId::from_u128(1),
        plans[0].id,
        Currency::USD,
        period.start(),
    )
    .id(SubscriptionId::from_u128(42))
    .anchor(anchor)
    .quantity(Decimal::from(seats))
    .create(&plans[0], Currency::USD)
    .unwrap();
    Setup {
        plans,
        sub,
        period_days: period.days(),
        start: period.start(),
    }
}

/// A random discount: percentage (0–100) or fixed (cents), once, for 1–3 periods or forever.
fn discounts() -> impl Strategy<Value = Discount> {
    let amount = prop_oneof![
        (0u32..=100).prop_map(|p| DiscountAmount::Percentage(Decimal::from(p))),
        (0i64..60_000).prop_map(|c| DiscountAmount::Fixed(Money::from_minor(c, Currency::USD))),
    ];
    let duration = prop_oneof![
        Just(DiscountDuration::Once),
        (1u32..4).prop_map(DiscountDuration::Periods),
        Just(DiscountDuration::Forever),
    ];
    (amount, duration).prop_map(|(amount, duration)| Discount {
        id: DiscountId::from_u128(1),
        amount,
        duration,
    })
}

/// One period's price after `discount`, if the discount covered period number `index` (the
/// subscription's first period is 0, and every period has a regular document).
fn net_price(gross: Decimal, discount: &Discount, index: u32) -> Decimal {
    let covered = match discount.duration {
        DiscountDuration::Once => index < 1,
        DiscountDuration::Periods(n) => index < n,
        DiscountDuration::Forever => true,
    };
    match discount.amount {
        _ if !covered => gross,
        DiscountAmount::Percentage(p) => gross - gross * p / Decimal::ONE_HUNDRED,
        DiscountAmount::Fixed(f) => (gross - f.amount()).max(Decimal::ZERO),
    }
}

/// Net billed (amount − discount) and line count per period, from documents and not yet
/// invoiced pending prorations, attributed by each line's service period.
fn billed_per_period(
    periods: &[Period],
    docs: &[Invoice],
    pending: &[PendingCharge],
) -> Vec<(Decimal, usize)> {
    let mut per = vec![(Decimal::ZERO, 0usize); periods.len()];
    let lines = docs
        .iter()
        .flat_map(|i| i.lines.iter())
        .map(|l| (l.period, l.amount.amount() - l.discount.amount()));
    let waiting = pending.iter().map(|p| {
        let amount = p.unit_price.checked_mul(p.quantity).unwrap();
        (p.period, amount.round(RoundingMode::HalfUp).amount())
    });
    for (period, net) in lines.chain(waiting) {
        let start = period.unwrap().start();
        let j = periods.iter().position(|p| p.contains(start)).unwrap();
        per[j].0 += net;
        per[j].1 += 1;
    }
    per
}

fn line_count(docs: &[Invoice]) -> usize {
    docs.iter().map(|i| i.lines.len()).sum()
}

fn sum(docs: &[Invoice]) -> Decimal {
    docs.iter().map(|i| i.total.amount()).sum()
}

proptest! {
    #![proptest_config(dotmac_testing::config(256))]

    /// Whatever the changes inside a billed period, the documents for it add up to what the
    /// period's prices say, day by day, within one cent per line.
    #[test]
    fn a_period_bills_what_its_prices_say(
        prices in prop::collection::vec(0i64..100_000, 3),
        anchor_day in 1u32..=31,
        month in 1u32..=12,
        seats in 0u32..20,
        changes in steps(),
    ) {
        let Setup { plans, sub, period_days, start } = setup(&prices, anchor_day, month, seats);
        let settings = DocumentSettings::default();
        let first = bill_due(&sub, &plans, &[], start, &settings).unwrap();
        prop_assert_eq!(first.invoices.len(), 1);
        let mut docs = first.invoices;
        let mut s = first.subscription;
        let mut dated: Vec<(i64, Step)> = changes
            .into_iter()
            .map(|(day, step)| (day.min(period_days - 1), step))
            .collect();
        dated.sort_by_key(|(day, _)| *day);
        // Expected: each day at the plan and seats in force that day.
        let mut expected = Decimal::ZERO;
        let (mut price, mut qty, mut from) = (prices[0], seats, 0i64);
        for (day, step) in &dated {
            let on = start.checked_add_days(Days::new(*day as u64)).unwrap();
            let what = match step {
                Step::Plan(i) => SubscriptionChange::Plan { plan: plans[*i].id, version: None },
                Step::Seats(n) => SubscriptionChange::Quantity { quantity: Decimal::from(*n) },
            };
            let out = change(&s, &plans, &what, on, ChangeTiming::Immediate,
                ProrationBehavior::InvoiceNow, &settings).unwrap();
            expected += Decimal::new(price, 2) * Decimal::from(qty) * Decimal::from(day - from)
                / Decimal::from(period_days);
            match step {
                Step::Plan(i) => price = prices[*i],
                Step::Seats(n) => qty = *n,
            }
            from = *day;
            s = out.subscription;
            docs.extend(out.invoice);
        }
        expected += Decimal::new(price, 2) * Decimal::from(qty) * Decimal::from(period_days - from)
            / Decimal::from(period_days);
        let billed = sum(&docs);
        let tolerance = Decimal::new(line_count(&docs).max(1) as i64, 2);
        prop_assert!((billed - expected).abs() <= tolerance,
            "billed {} expected {} (tolerance {})", billed, expected, tolerance);
    }

    /// A cancellation never credits more than was billed for the period, discounts included.
    #[test]
    fn cancellation_credit_never_exceeds_what_was_billed(
        prices in prop::collection::vec(0i64..100_000, 3),
        anchor_day in 1u32..=31,
        month in 1u32..=12,
        seats in 0u32..20,
        changes in steps(),
        cancel_day in 0i64..31,
        percent in 0u32..=100,
    ) {
        let Setup { plans, mut sub, period_days, start } = setup(&prices, anchor_day, month, seats);
        sub.discounts.push(dotmac_billing::AppliedDiscount::new(Discount {
            id: DiscountId::from_u128(1),
            amount: DiscountAmount::Percentage(Decimal::from(percent)),
            duration: DiscountDuration::Forever,
        }));
        let settings = DocumentSettings::default();
        let first = bill_due(&sub, &plans, &[], start, &settings).unwrap();
        let mut docs = first.invoices;
        let mut s = first.subscription;
        let mut dated = changes;
        dated.sort_by_key(|(day, _)| *day);
        let mut last = 0;
        for (day, step) in dated {
            let day = day.min(period_days - 1);
            last = day;
            let on = start.checked_add_days(Days::new(day as u64)).unwrap();
            let what = match step {
                Step::Plan(i) => SubscriptionChange::Plan { plan: plans[i].id, version: None },
                Step::Seats(n) => SubscriptionChange::Quantity { quantity: Decimal::from(n) },
            };
            let out = change(&s, &plans, &what, on, ChangeTiming::Immediate,
                ProrationBehavior::InvoiceNow, &settings).unwrap();
            s = out.subscription;
            docs.extend(out.invoice);
        }
        let on = start
            .checked_add_days(Days::new(cancel_day.clamp(last, period_days - 1) as u64))
            .unwrap();
        let out = cancel(&s, &plans, on, CancelTiming::Immediate, ProrationBehavior::InvoiceNow,
            &settings).unwrap();
        let billed = sum(&docs);
        let credit = out.invoice.map(|i| i.total.amount()).unwrap_or_default();
        prop_assert!(credit <= Decimal::ZERO);
        prop_assert!(-credit <= billed, "credit {} exceeds billed {}", credit, billed);
    }

    /// Over several periods with a random discount (percentage or fixed; once, N periods or
    /// forever), random plan and seat changes (prorated now or on the next invoice) and an
    /// optional immediate cancellation: credits for a period never exceed what was billed for
    /// it, a cancellation never credits more than the period's bill, and each period bills
    /// what its prices and discount say, day by day, within one cent per line.
    #[test]
    fn credits_never_exceed_billed_and_periods_bill_their_prices(
        prices in prop::collection::vec(0i64..100_000, 3),
        anchor_day in 1u32..=31,
        month in 1u32..=12,
        seats in 0u32..20,
        discount in discounts(),
        plan_steps in prop::collection::vec((steps(), any::<bool>()), 1..4),
        cancel_day in prop::option::of(0i64..31),
    ) {
        let Setup { plans, mut sub, start, .. } = setup(&prices, anchor_day, month, seats);
        sub.discounts.push(dotmac_billing::AppliedDiscount::new(discount.clone()));
        let settings = DocumentSettings::default();
        let interval = BillingInterval::MONTHLY;
        let (first, _) = interval.period_containing(sub.anchor, start).unwrap();
        let periods: Vec<Period> = (0..plan_steps.len() as i64)
            .map(|j| interval.period(sub.anchor, first + j).unwrap())
            .collect();
        let (mut docs, mut pending): (Vec<Invoice>, Vec<PendingCharge>) = (Vec::new(), Vec::new());
        let mut expected = vec![Decimal::ZERO; periods.len()];
        let (mut price, mut qty) = (prices[0], seats);
        let mut s = sub;
        let no_over_credit = |docs: &[Invoice], pending: &[PendingCharge]| {
            billed_per_period(&periods, docs, pending).into_iter().all(|(net, lines)| {
                net >= -Decimal::new(lines as i64, 2)
            })
        };
        for (j, (period, (changes, deferred))) in periods.iter().zip(plan_steps).enumerate() {
            let days = period.days();
            let out = bill_due(&s, &plans, &pending, period.start(), &settings).unwrap();
            prop_assert_eq!(out.invoices.len(), 1);
            pending.retain(|p| !out.consumed.contains(&p.id));
            docs.extend(out.invoices);
            s = out.subscription;
            let behavior = if deferred {
                ProrationBehavior::NextInvoice
            } else {
                ProrationBehavior::InvoiceNow
            };
            let mut dated: Vec<(i64, Step)> = changes
                .into_iter()
                .map(|(day, step)| (day.min(days - 1), step))
                .collect();
            dated.sort_by_key(|(day, _)| *day);
            let mut from = 0i64;
            let gross = |price: i64, qty: u32| Decimal::new(price, 2) * Decimal::from(qty);
            for (day, step) in dated {
                let on = period.start().checked_add_days(Days::new(day as u64)).unwrap();
                let what = match step {
                    Step::Plan(i) => SubscriptionChange::Plan { plan: plans[i].id, version: None },
                    Step::Seats(n) => SubscriptionChange::Quantity { quantity: Decimal::from(n) },
                };
                let out = change(&s, &plans, &what, on, ChangeTiming::Immediate, behavior,
                    &settings).unwrap();
                expected[j] += net_price(gross(price, qty), &discount, j as u32)
                    * Decimal::from(day - from) / Decimal::from(days);
                match step {
                    Step::Plan(i) => price = prices[i],
                    Step::Seats(n) => qty = n,
                }
                from = day;
                s = out.subscription;
                docs.extend(out.invoice);
                pending.extend(out.pending);
                prop_assert!(no_over_credit(&docs, &pending), "over-credit after a change");
            }
            let last = j + 1 == periods.len();
            let until = match cancel_day {
                Some(c) if last => {
                    let c = c.clamp(from, days - 1);
                    let on = period.start().checked_add_days(Days::new(c as u64)).unwrap();
                    let before = billed_per_period(&periods, &docs, &pending)[j];
                    let out = cancel(&s, &plans, on, CancelTiming::Immediate, behavior, &settings)
                        .unwrap();
                    let credit = out.invoice.as_ref().map(|i| i.total.amount());
                    let credit = credit.unwrap_or_else(|| {
                        out.pending.iter()
                            .map(|p| (p.unit_price.checked_mul(p.quantity).unwrap())
                                .round(RoundingMode::HalfUp).amount())
                            .sum()
                    });
                    prop_assert!(credit <= Decimal::ZERO);
                    prop_assert!(-credit <= before.0 + Decimal::new(before.1 as i64, 2),
                        "cancellation credit {} exceeds billed {}", credit, before.0);
                    docs.extend(out.invoice);
                    pending.extend(out.pending);
                    prop_assert!(no_over_credit(&docs, &pending), "over-credit on cancel");
                    c
                }
                _ => days,
            };
            expected[j] += net_price(gross(price, qty), &discount, j as u32)
                * Decimal::from(until - from) / Decimal::from(days);
        }
        if !pending.is_empty() {
            let on = periods.last().unwrap().end();
            docs.push(invoice_pending_charges(CustomerId::from_u128(1), Currency::USD, on,
                &pending, &settings).unwrap());
            pending.clear();
        }
        for (j, (billed, lines)) in billed_per_period(&periods, &docs, &pending)
            .into_iter()
            .enumerate()
        {
            let tolerance = Decimal::new(lines.max(1) as i64, 2);
            prop_assert!((billed - expected[j]).abs() <= tolerance,
                "period {}: billed {} expected {} (tolerance {})", j, billed, expected[j],
                tolerance);
        }
    }

    /// Re-running the bill run on its own result issues nothing and changes nothing, and
    /// running it twice from the same state gives the same documents (preview == issued).
    #[test]
    fn rerunning_the_bill_run_is_a_no_op(
        prices in prop::collection::vec(1i64..100_000, 3),
        anchor_day in 1u32..=31,
        month in 1u32..=12,
        seats in 1u32..20,
        months in 0u64..30,
    ) {
        let Setup { plans, sub, start, .. } = setup(&prices, anchor_day, month, seats);
        let settings = DocumentSettings::default();
        let as_of = start.checked_add_days(Days::new(months * 31)).unwrap();
        let once = bill_due(&sub, &plans, &[], as_of, &settings).unwrap();
        let preview = bill_due(&sub, &plans, &[], as_of, &settings).unwrap();
        prop_assert_eq!(&once, &preview);
        let twice = bill_due(&once.subscription, &plans, &[], as_of, &settings).unwrap();
        prop_assert!(twice.invoices.is_empty());
        prop_assert_eq!(&twice.subscription, &once.subscription);
        // One document per period, on consecutive period starts, with distinct keys.
        let mut keys: Vec<DocumentKey> = once.invoices.iter().map(|i| i.key).collect();
        keys.dedup();
        prop_assert_eq!(keys.len(), once.invoices.len());
        for pair in once.invoices.windows(2) {
            let p0 = pair[0].lines[0].period.unwrap();
            let p1 = pair[1].lines[0].period.unwrap();
            prop_assert_eq!(p0.end(), p1.start(), "periods must tile");
        }
    }

    /// Invoice total = Σ rounded line amounts − Σ discounts + Σ exclusive taxes, and the tax
    /// total is the sum of the rounded per-line taxes.
    #[test]
    fn invoice_total_is_the_sum_of_its_rounded_parts(
        lines in prop::collection::vec((-50_000i64..100_000, 1u32..1000, 1i64..10_000), 1..6),
        percent in 0u32..=100,
        fixed in 0i64..20_000,
        use_fixed in any::<bool>(),
        rates in prop::collection::vec((0u32..30, 0u8..3), 0..3),
        half_even in any::<bool>(),
    ) {
        let taxes: Vec<TaxRate> = rates
            .iter()
            .enumerate()
            .map(|(i, (p, kind))| {
                let id = TaxRateId::from_u128(i as u128 + 1);
                let pct = Decimal::new(i64::from(*p) * 25, 1);
                match kind {
                    0 => TaxRate::exclusive(id, "t", pct),
                    1 => TaxRate::inclusive(id, "t", pct),
                    _ => TaxRate::compound(id, "t", pct),
                }
            })
            .collect();
        let settings = DocumentSettings {
            rounding: if half_even { RoundingMode::HalfEven } else { RoundingMode::HalfUp },
            taxes,
            ..DocumentSettings::default()
        };
        let discount = Discount {
            id: DiscountId::from_u128(1),
            amount: if use_fixed {
                DiscountAmount::Fixed(Money::from_minor(fixed, Currency::USD))
            } else {
                DiscountAmount::Percentage(Decimal::from(percent))
            },
            duration: DiscountDuration::Forever,
        };
        let key = DocumentKey::Period { subscription: SubscriptionId::from_u128(1), index: 0 };
        let mut builder = DocumentBuilder::new(key, CustomerId::from_u128(1), None, Currency::USD,
            d(2026, 1, 1), &settings).unwrap().with_discount(&discount);
        for (cents, qty, divisor) in &lines {
            // Unrounded unit prices, as prorations produce.
            let unit = Money::from_minor(*cents, Currency::USD).mul_ratio(1, *divisor).unwrap();
            builder.push(DraftLine {
                kind: if *cents >= 0 { LineKind::Recurring } else { LineKind::ProrationCredit },
                text: None,
                period: None,
                quantity: Decimal::from(*qty),
                unit_price: unit,
                price: None,
                discountable: true,
            }).unwrap();
        }
        let inv = builder.finish();
        let amounts: Decimal = inv.lines.iter().map(|l| l.amount.amount()).sum();
        let discounts: Decimal = inv.lines.iter().map(|l| l.discount.amount()).sum();
        let exclusive: Decimal = inv.lines.iter().map(|l| l.tax_exclusive.amount()).sum();
        let line_tax: Decimal = inv.lines.iter().map(|l| l.tax.amount()).sum();
        let summary_tax: Decimal = inv.taxes.iter().map(|t| t.amount.amount()).sum();
        prop_assert_eq!(inv.total.amount(), amounts - discounts + exclusive);
        prop_assert_eq!(inv.tax_total.amount(), line_tax);
        prop_assert_eq!(line_tax, summary_tax);
        for l in &inv.lines {
            prop_assert!(l.amount.is_minor_unit_exact() && l.discount.is_minor_unit_exact()
                && l.tax.is_minor_unit_exact());
            if l.amount.is_positive() {
                prop_assert!(!l.discount.is_negative() && l.discount.amount() <= l.amount.amount());
            } else {
                prop_assert!(l.discount.amount() >= l.amount.amount() && !l.discount.is_positive());
            }
        }
    }

    /// Graduated pricing equals the tier-by-tier sum, and volume pricing is monotone in the
    /// tier that holds the quantity.
    #[test]
    fn graduated_equals_tier_by_tier(
        bounds in prop::collection::btree_set(1i64..1000, 1..5),
        units in prop::collection::vec(0i64..1000, 5),
        flats in prop::collection::vec(0i64..100, 5),
        q in 0i64..2000,
    ) {
        let bounds: Vec<i64> = bounds.into_iter().collect();
        let mut tiers = Vec::new();
        for (i, b) in bounds.iter().chain(std::iter::once(&i64::MAX)).enumerate() {
            tiers.push(dotmac_billing::Tier {
                up_to: (*b != i64::MAX).then(|| Decimal::from(*b)),
                unit_amount: Decimal::new(units[i], 2),
                flat_amount: Decimal::from(flats[i]),
            });
        }
        let model = PriceModel::Graduated { tiers: dotmac_billing::Tiers::new(tiers.clone()).unwrap() };
        let q = Decimal::from(q);
        let mut expected = Decimal::ZERO;
        let mut lower = Decimal::ZERO;
        for (i, t) in tiers.iter().enumerate() {
            let upper = t.up_to.unwrap_or(Decimal::MAX);
            if q > lower || i == 0 {
                expected += (q.min(upper) - lower).max(Decimal::ZERO) * t.unit_amount + t.flat_amount;
            }
            lower = upper;
            if q <= upper { break; }
        }
        prop_assert_eq!(model.amount(q).unwrap(), expected);
    }
}
