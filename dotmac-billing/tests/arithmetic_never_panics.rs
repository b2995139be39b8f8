//! No arithmetic panic on caller amounts: the ledger, every price model, invoice building
//! (lines, discounts, taxes), allowances, dunning and analytics driven with amounts and
//! quantities up to `Decimal::MAX` return `Ok` or `Err`, never panic (issue 9).
//!
//! Every call goes through [`no_panic`], which turns a panic into a test failure naming the
//! call and its input (proptest then shrinks it).

// Test helpers may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{Days, NaiveDate};
use dotmac_billing::analytics::{RecurringItem, mrr_at, mrr_movements, receivables_ageing};
use dotmac_billing::dunning::{
    DunningInvoice, DunningPolicy, DunningState, RestoreOnPayment, evaluate,
};
use dotmac_billing::payments::{AllocationTarget, CustomerLedger};
use dotmac_billing::usage::allowance::{AllowancePeriod, AllowancePolicy, Rollover, TopUp};
use dotmac_billing::{
    BlockTier, Discount, DiscountAmount, DiscountDuration, DiscountId, DocumentBuilder,
    DocumentKey, DocumentSettings, DraftLine, LineKind, PercentTier, PercentTiers, PriceModel,
    TaxExemption, TaxRate, TaxRateId, Tier, Tiers, inclusive_tax_total,
};
use dotmac_core::{
    BillingInterval, Currency, CustomerId, InvoiceId, Money, PaymentId, PlanId, RoundingMode,
    SubscriptionId, TenantId,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rust_decimal::Decimal;

/// `default` cases, or `PROPTEST_CASES` when set (for long runs: `PROPTEST_CASES=100000`).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `call`; a panic fails the test with `what` and the input.
fn no_panic<T>(
    what: &str,
    input: &dyn std::fmt::Debug,
    call: impl FnOnce() -> T,
) -> Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(call)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        TestCaseError::fail(format!("{what} panicked ({message}) on {input:?}"))
    })
}

/// Decimals of every size: the extremes, and random mantissas at random scales up to 96 bits.
fn any_decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        Just(Decimal::MAX),
        Just(Decimal::MIN),
        Just(Decimal::MAX - Decimal::ONE),
        Just(Decimal::ZERO),
        Just(Decimal::ONE),
        Just(Decimal::new(1, 28)),
        (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            0u32..=28
        )
            .prop_map(|(lo, mid, hi, negative, scale)| Decimal::from_parts(
                lo, mid, hi, negative, scale
            )),
    ]
}

/// Amounts above zero up to `Decimal::MAX` (what the ledger accepts), most of them huge.
fn positive_decimal() -> impl Strategy<Value = Decimal> {
    any_decimal().prop_map(|d| if d.is_zero() { Decimal::ONE } else { d.abs() })
}

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

fn day(n: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .checked_add_days(Days::new(n))
        .unwrap()
}

#[derive(Debug, Clone)]
enum LedgerOp {
    Invoice(Decimal),
    Pay(Decimal, Option<usize>),
    Refund(usize, Decimal),
}

fn ledger_op() -> impl Strategy<Value = LedgerOp> {
    prop_oneof![
        positive_decimal().prop_map(LedgerOp::Invoice),
        (positive_decimal(), prop::option::of(0usize..6)).prop_map(|(a, t)| LedgerOp::Pay(a, t)),
        (0usize..6, positive_decimal()).prop_map(|(p, a)| LedgerOp::Refund(p, a)),
    ]
}

fn dunning_policy() -> DunningPolicy {
    DunningPolicy::builder()
        .step(1, "overdue_notice")
        .late_fee(3, "late_fee", Decimal::MAX)
        .step(5, "suspend")
        .min_balance(Decimal::ONE)
        .restore_on_payment(RestoreOnPayment::Restore {
            reconnection_fee: Some(Decimal::MAX),
        })
        .build()
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

    /// The ledger: every operation and every derived figure, after each step; a refused
    /// operation leaves the ledger as it was, and the entries always rebuild the same ledger.
    #[test]
    fn the_ledger_never_panics_on_huge_amounts(ops in prop::collection::vec(ledger_op(), 1..16)) {
        let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
        let (mut invoices, mut payments) = (0u128, 0u128);
        let policy = dunning_policy();
        for (n, op) in ops.iter().enumerate() {
            let on = day(n as u64);
            let before = ledger.clone();
            let result = match *op {
                LedgerOp::Invoice(total) => {
                    invoices += 1;
                    let id = InvoiceId::from_u128(invoices);
                    no_panic("record_invoice", op, || {
                        ledger.record_invoice(id, usd(total), on, day(n as u64 + 14)).map(|_| ())
                    })?
                }
                LedgerOp::Pay(amount, target) => {
                    payments += 1;
                    let target = match target {
                        Some(i) if (i as u128) < invoices => {
                            AllocationTarget::Invoice(InvoiceId::from_u128(i as u128 + 1))
                        }
                        _ => AllocationTarget::OldestFirst,
                    };
                    no_panic("record_payment", op, || {
                        ledger
                            .record_payment(PaymentId::from_u128(payments), usd(amount), on, target)
                            .map(|_| ())
                    })?
                }
                LedgerOp::Refund(payment, amount) => no_panic("refund", op, || {
                    ledger
                        .refund(PaymentId::from_u128(payment as u128 + 1), usd(amount), on)
                        .map(|_| ())
                })?,
            };
            if result.is_err() {
                prop_assert_eq!(&ledger, &before, "a refused {:?} changed the ledger", op);
            }
            // Only that these figures come out: at 28 significant digits a `Decimal` difference
            // rounds (MAX − 10⁻²⁸ is MAX), so their bounds are checked by `payments_properties`
            // on amounts of ordinary size, not here.
            no_panic("credit", op, || ledger.credit())?;
            for balance in ledger.invoices() {
                no_panic("open", op, || balance.open())?;
                let settlements = no_panic("settlements", op, || ledger.settlements(balance.invoice))?;
                let invoice = DunningInvoice {
                    id: balance.invoice,
                    customer: ledger.customer(),
                    total: balance.total,
                    due: balance.due,
                };
                let mut state = DunningState::default();
                let mut out = Vec::new();
                no_panic("dunning::evaluate", op, || {
                    evaluate(&policy, &invoice, &settlements, &mut state, day(n as u64 + 90), &mut out)
                })?;
            }
            let ageing = no_panic("receivables_ageing", op, || {
                receivables_ageing(std::slice::from_ref(&ledger), day(n as u64 + 40), Currency::USD)
            })?;
            if let Ok(ageing) = ageing {
                no_panic("Ageing::total", op, || ageing.total())?.ok();
            }
            let rebuilt = no_panic("from_entries", op, || {
                CustomerLedger::from_entries(ledger.customer(), Currency::USD, ledger.entries().to_vec())
            })?;
            prop_assert_eq!(rebuilt.as_ref(), Ok(&ledger));
        }
    }

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
            dotmac_billing::usage::MeterId::from_u128(1),
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
