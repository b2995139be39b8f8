//! No arithmetic panic on caller amounts: every price model, invoice building (lines,
//! discounts, taxes), allowances and analytics driven with amounts and
//! quantities up to `Decimal::MAX` return `Ok` or `Err`, never panic (issue 9).
//!
//! Every call goes through `no_panic`, which turns a panic into a test failure naming the
//! call and its input (proptest then shrinks it).

// Test helpers may unwrap: a failing unwrap is a failing test.

use chrono::{Days, NaiveDate};
use dotmac_billing::analytics::{RecurringItem, mrr_at, mrr_movements};
use dotmac_billing::usage_billing::allowance::{AllowancePeriod, AllowancePolicy, Rollover, TopUp};
use dotmac_billing::{
    BlockTier, Discount, DiscountAmount, DiscountDuration, DiscountId, DocumentBuilder,
    DocumentKey, DocumentSettings, DraftLine, LineKind, PercentTier, PercentTiers, PriceModel,
    TaxExemption, TaxRate, TaxRateId, Tier, Tiers, inclusive_tax_total,
};
use dotmac_core::{
    BillingInterval, Currency, CustomerId, Money, PlanId, RoundingMode, SubscriptionId, TenantId,
};
use dotmac_testing::{any_decimal, cases, no_panic, positive_decimal};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

fn day(n: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .checked_add_days(Days::new(n))
        .unwrap()
}

fn tier_list() -> impl Strategy<Value = Vec<(Decimal, Decimal, Decimal)>> {
    prop::collection::vec((positive_decimal(), any_decimal(), any_decimal()), 1..4)
}

/// Tiers with ascending bounds built from `raw` (the last one unbounded); `None` when the
/// bounds do not ascend, which the constructors refuse anyway.
fn tiers_from(raw: &[(Decimal, Decimal, Decimal)]) -> Vec<Tier> {
    let mut bounds: Vec<Decimal> = raw.iter().map(|t| t.0).collect();
    bounds.sort();
    raw.iter()
        .zip(&bounds)
        .enumerate()
        .map(|(i, ((_, unit, flat), bound))| Tier {
            up_to: (i + 1 < raw.len()).then_some(*bound),
            unit_amount: *unit,
            flat_amount: *flat,
        })
        .collect()
}

fn price_models(
    a: Decimal,
    b: Decimal,
    c: Decimal,
    raw: &[(Decimal, Decimal, Decimal)],
) -> Vec<Result<PriceModel, dotmac_billing::BillingError>> {
    let tiers = tiers_from(raw);
    let percent_tiers: Vec<PercentTier> = tiers
        .iter()
        .map(|t| PercentTier {
            up_to: t.up_to,
            rate_percent: t.unit_amount,
            flat_amount: t.flat_amount,
        })
        .collect();
    let blocks: Vec<BlockTier> = raw
        .iter()
        .enumerate()
        .map(|(i, (size, amount, max))| BlockTier {
            block_size: *size,
            max_blocks: (i + 1 < raw.len()).then_some(max.abs()),
            block_amount: *amount,
        })
        .collect();
    vec![
        Ok(PriceModel::PerUnit { unit_amount: a }),
        Ok(PriceModel::Package {
            package_size: b,
            package_amount: a,
            free_units: c,
        }),
        Ok(PriceModel::Percentage { rate_percent: a }),
        Tiers::new(tiers.clone()).map(|tiers| PriceModel::Graduated { tiers }),
        Tiers::new(tiers).map(|tiers| PriceModel::Volume { tiers }),
        PercentTiers::new(percent_tiers).map(|tiers| PriceModel::GraduatedPercentage { tiers }),
        Ok(PriceModel::BlockGraduated {
            tiers: blocks.clone(),
        }),
        Ok(PriceModel::BlockVolume { tiers: blocks }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Every price model, with unit amounts, sizes, bounds and quantities up to `Decimal::MAX`.
    #[test]
    fn pricing_never_panics_on_huge_amounts(
        a in any_decimal(),
        b in any_decimal(),
        c in any_decimal(),
        raw in tier_list(),
        quantities in prop::collection::vec(any_decimal(), 1..4),
    ) {
        let input = (a, b, c, &raw, &quantities);
        for model in no_panic("price model", &input, || price_models(a, b, c, &raw))? {
            let Ok(model) = model else { continue };
            no_panic("PriceModel::validate", &input, || model.validate())?.ok();
            for q in &quantities {
                no_panic("PriceModel::amount", &(&model, q), || model.amount(*q))?.ok();
            }
        }
    }

    /// Invoice building: lines, prorated lines, discounts and taxes with huge figures.
    #[test]
    fn invoice_building_never_panics_on_huge_amounts(
        lines in prop::collection::vec((any_decimal(), any_decimal(), any::<bool>()), 1..5),
        fraction in (any::<i64>(), any::<i64>()),
        percent_off in any_decimal(),
        fixed_off in any_decimal(),
        tax_percents in prop::collection::vec((any_decimal(), 0u8..3), 0..4),
        mode in prop::sample::select(vec![
            RoundingMode::HalfUp, RoundingMode::HalfEven, RoundingMode::Up, RoundingMode::Down,
        ]),
    ) {
        let input = (&lines, fraction, percent_off, fixed_off, &tax_percents);
        let taxes = tax_percents
            .iter()
            .enumerate()
            .map(|(i, (p, mode))| {
                let id = TaxRateId::from_u128(i as u128 + 1);
                match mode {
                    0 => TaxRate::exclusive(id, "exclusive", *p),
                    1 => TaxRate::inclusive(id, "inclusive", *p),
                    _ => TaxRate::compound(id, "compound", *p),
                }
            })
            .collect();
        let settings = DocumentSettings {
            rounding: mode,
            taxes,
            exemption: TaxExemption::None,
            payment_terms_days: 14,
            number_format: Default::default(),
        };
        let key = DocumentKey::Period { subscription: SubscriptionId::from_u128(1), index: 0 };
        let new_builder = || {
            let mut builder = DocumentBuilder::new(
                key, CustomerId::from_u128(1), None, Currency::USD, day(0), &settings,
            ).unwrap();
            builder.add_discount(&Discount {
                id: DiscountId::from_u128(1),
                amount: DiscountAmount::Percentage(percent_off),
                duration: DiscountDuration::Forever,
            });
            builder.add_discount(&Discount {
                id: DiscountId::from_u128(2),
                amount: DiscountAmount::Fixed(usd(fixed_off)),
                duration: DiscountDuration::Forever,
            });
            builder
        };
        let mut builder = new_builder();
        // The same document built from the accepted lines only: a refused line must leave no
        // trace (no tax summary, no discount taken).
        let mut accepted_only = new_builder();
        for (i, (quantity, price, prorated)) in lines.iter().enumerate() {
            let line = DraftLine {
                kind: if i % 2 == 0 { LineKind::Recurring } else { LineKind::OneOff },
                text: None,
                period: None,
                quantity: *quantity,
                unit_price: usd(*price),
                price: None,
                discountable: true,
            };
            let count = builder.line_count();
            let pushed = if *prorated {
                no_panic("push_prorated", &input, || builder.push_prorated(line.clone(), fraction.0, fraction.1))?
            } else {
                no_panic("push", &input, || builder.push(line.clone()))?
            };
            if pushed.is_err() {
                prop_assert_eq!(builder.line_count(), count);
            } else if *prorated {
                accepted_only.push_prorated(line, fraction.0, fraction.1).unwrap();
            } else {
                accepted_only.push(line).unwrap();
            }
        }
        let invoice = builder.finish();
        prop_assert_eq!(&invoice, &accepted_only.finish());
        no_panic("exclusive_tax_total", &input, || invoice.exclusive_tax_total())?.ok();
        no_panic("inclusive_tax_total", &input, || inclusive_tax_total(&invoice))?.ok();
        for line in &invoice.lines {
            no_panic("InvoiceLine::total", &input, || line.total())?.ok();
        }
    }

    /// Allowances and recurring-revenue analytics with huge quantities and prices.
    #[test]
    fn allowances_and_analytics_never_panic_on_huge_amounts(
        included in positive_decimal(),
        carried in any_decimal(),
        top_ups in prop::collection::vec(positive_decimal(), 0..3),
        used in any_decimal(),
        prices in prop::collection::vec(any_decimal(), 1..4),
    ) {
        let input = (included, carried, &top_ups, used, &prices);
        let policy = AllowancePolicy::new(
            dotmac_core::MeterId::from_u128(1),
            included,
            Currency::USD,
            Some(PriceModel::PerUnit { unit_amount: Decimal::MAX }),
            &[50, 80, 100],
        )
        .unwrap();
        let mut period = AllowancePeriod::open(&policy, CustomerId::from_u128(1), day(0), carried);
        for quantity in &top_ups {
            no_panic("add_top_up", &input, || {
                period.add_top_up(TopUp { quantity: *quantity, rollover: Rollover::NextPeriod })
            })?.ok();
        }
        no_panic("allowance", &input, || period.allowance())?.ok();
        no_panic("overage", &input, || period.overage(used))?.ok();
        no_panic("overage_charge", &input, || period.overage_charge(&policy, used))?.ok();
        no_panic("rollover_out", &input, || period.rollover_out(used))?.ok();
        no_panic("check_thresholds", &input, || period.check_thresholds(&policy, used))?.ok();

        let items: Vec<RecurringItem> = prices
            .iter()
            .enumerate()
            .map(|(i, price)| RecurringItem {
                tenant: TenantId::from_u128(1),
                customer: CustomerId::from_u128(i as u128 % 2),
                plan: PlanId::from_u128(1),
                amount: usd(*price),
                interval: if i % 2 == 0 { BillingInterval::MONTHLY } else { BillingInterval::new(dotmac_core::IntervalUnit::Day, 1).unwrap() },
                active_from: day(0),
                active_until: (i % 3 == 2).then(|| day(20)),
            })
            .collect();
        for item in &items {
            no_panic("mrr", &input, || item.mrr())?.ok();
        }
        if let Ok(report) = no_panic("mrr_at", &input, || mrr_at(&items, day(10), Currency::USD))? {
            no_panic("arr", &input, || report.arr())?.ok();
            no_panic("arpu", &input, || report.arpu())?;
        }
        if let Ok(m) = no_panic("mrr_movements", &input, || mrr_movements(&items, day(10), day(30), Currency::USD))? {
            no_panic("reconciles", &input, || m.reconciles())?;
            no_panic("churn_rate", &input, || m.churn_rate())?;
        }
    }
}
