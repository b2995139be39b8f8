//! Property tests for the core invariants.
// Test helpers outside #[test] functions: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Datelike, NaiveDate};
use dotmac_core::{BillingInterval, CoreError, Currency, IntervalUnit, Money, RoundingMode};
use proptest::prelude::*;
use rust_decimal::Decimal;

const CURRENCIES: [Currency; 4] = [Currency::USD, Currency::JPY, Currency::KWD, Currency::EUR];

fn currency() -> impl Strategy<Value = Currency> {
    proptest::sample::select(CURRENCIES.to_vec())
}

/// Two different currencies, by construction (a filter rejects too often in long runs).
fn two_currencies() -> impl Strategy<Value = (Currency, Currency)> {
    let n = CURRENCIES.len();
    (0..n, 1..n).prop_map(move |(i, step)| (CURRENCIES[i], CURRENCIES[(i + step) % n]))
}

/// An amount that is a whole number of minor units of `currency`.
fn minor_amount(currency: Currency) -> impl Strategy<Value = Money> {
    (-10_000_000_000i64..10_000_000_000i64).prop_map(move |m| Money::from_minor(m, currency))
}

fn any_amount() -> impl Strategy<Value = Decimal> {
    (any::<i64>(), 0u32..=12).prop_map(|(m, scale)| Decimal::new(m, scale))
}

fn rounding_mode() -> impl Strategy<Value = RoundingMode> {
    prop_oneof![
        Just(RoundingMode::HalfUp),
        Just(RoundingMode::HalfEven),
        Just(RoundingMode::Up),
        Just(RoundingMode::Down),
    ]
}

fn minor(m: &Money) -> i64 {
    m.to_minor().unwrap()
}

proptest! {
    #![proptest_config(dotmac_testing::config(512))]

    #[test]
    fn allocation_sums_to_the_whole(
        (currency, whole) in currency().prop_flat_map(|c| (Just(c), minor_amount(c))),
        ratios in prop::collection::vec(0u32..1_000, 1..24),
    ) {
        prop_assume!(ratios.iter().any(|r| *r > 0));
        let ratios: Vec<Decimal> = ratios.into_iter().map(Decimal::from).collect();
        let parts = whole.allocate(&ratios).unwrap();
        prop_assert_eq!(parts.len(), ratios.len());
        prop_assert_eq!(Money::sum(currency, parts.iter().copied()).unwrap(), whole);
        // Every part is within one minor unit of its exact share.
        let total: Decimal = ratios.iter().sum();
        for (part, ratio) in parts.iter().zip(&ratios) {
            let exact = whole.amount() * ratio / total;
            let unit = Decimal::new(1, currency.minor_units());
            prop_assert!((part.amount() - exact).abs() < unit, "{part:?} vs exact {exact}");
        }
    }

    #[test]
    fn equal_shares_differ_by_at_most_one_minor_unit(
        (currency, whole) in currency().prop_flat_map(|c| (Just(c), minor_amount(c))),
        n in 1usize..64,
    ) {
        let parts = whole.split(n).unwrap();
        prop_assert_eq!(Money::sum(currency, parts.iter().copied()).unwrap(), whole);
        let units: Vec<i64> = parts.iter().map(minor).collect();
        let (lo, hi) = (units.iter().min().unwrap(), units.iter().max().unwrap());
        prop_assert!(hi - lo <= 1);
        // Equal ratios through `allocate` give the same parts as `split`.
        let by_ratio = whole.allocate(&vec![Decimal::ONE; n]).unwrap();
        prop_assert_eq!(by_ratio, parts);
    }

    #[test]
    fn rounding_is_idempotent_and_lands_on_minor_units(
        amount in any_amount(),
        currency in currency(),
        mode in rounding_mode(),
    ) {
        let once = Money::new(amount, currency).round(mode);
        prop_assert!(once.is_minor_unit_exact());
        prop_assert_eq!(once.round(mode), once);
        // Rounding moves an amount by less than one minor unit.
        let unit = Decimal::new(1, currency.minor_units());
        prop_assert!((once.amount() - amount).abs() < unit);
    }

    #[test]
    fn currency_mismatch_is_always_an_error(
        a in any_amount(),
        b in any_amount(),
        (left, right) in two_currencies(),
    ) {
        let (x, y) = (Money::new(a, left), Money::new(b, right));
        let mismatch = CoreError::CurrencyMismatch { left: left.code(), right: right.code() };
        prop_assert_eq!(x.checked_add(y), Err(mismatch.clone()));
        prop_assert_eq!(x.checked_sub(y), Err(mismatch.clone()));
        prop_assert_eq!(x.compare(&y), Err(mismatch.clone()));
        prop_assert_eq!(x.min(y), Err(mismatch.clone()));
        prop_assert_eq!(x.max(y), Err(mismatch));
        prop_assert!(Money::sum(left, [x, y]).is_err());
    }

    #[test]
    fn arithmetic_never_panics(a in any_amount(), b in any_amount(), n in any::<i64>(), d in any::<i64>()) {
        let x = Money::new(a, Currency::USD);
        let y = Money::new(b, Currency::USD);
        let _ = x.checked_add(y);
        let _ = x.checked_sub(y);
        let _ = x.checked_mul(b);
        let _ = x.mul_ratio(n, d);
        let _ = x.to_minor();
        let _ = x.split(3);
        let _ = x.allocate(&[b, a]);
    }
}

fn unit() -> impl Strategy<Value = IntervalUnit> {
    prop_oneof![
        Just(IntervalUnit::Day),
        Just(IntervalUnit::Week),
        Just(IntervalUnit::Month),
        Just(IntervalUnit::Year),
    ]
}

/// Periods tile for every anchor day 1–31 and every interval, over twenty years: each period
/// ends where the next starts, none is empty, and month/year periods start on the anchor's day
/// clamped to the month's end.
#[test]
fn consecutive_periods_tile_for_every_anchor_day_over_twenty_years() {
    let intervals = [
        (IntervalUnit::Day, 1),
        (IntervalUnit::Day, 30),
        (IntervalUnit::Week, 1),
        (IntervalUnit::Week, 2),
        (IntervalUnit::Month, 1),
        (IntervalUnit::Month, 2),
        (IntervalUnit::Month, 3),
        (IntervalUnit::Month, 6),
        (IntervalUnit::Year, 1),
        (IntervalUnit::Year, 2),
    ];
    for (unit, count) in intervals {
        let interval = BillingInterval::new(unit, count).unwrap();
        for anchor_month in [1, 2, 3, 12] {
            for day in 1..=31 {
                let Some(anchor) = NaiveDate::from_ymd_opt(2020, anchor_month, day) else {
                    continue;
                };
                check_tiling(interval, anchor, 20);
            }
        }
    }
}

fn check_tiling(interval: BillingInterval, anchor: NaiveDate, years: i32) {
    let horizon = NaiveDate::from_ymd_opt(anchor.year() + years, 1, 1).unwrap();
    let back = NaiveDate::from_ymd_opt(anchor.year() - 2, 1, 1).unwrap();
    let (first, _) = interval.period_containing(anchor, back).unwrap();
    let mut k = first;
    let mut previous = interval.period(anchor, k).unwrap();
    assert!(previous.contains(back));
    while previous.end() < horizon {
        k += 1;
        let period = interval.period(anchor, k).unwrap();
        assert_eq!(
            period.start(),
            previous.end(),
            "gap or overlap at {interval} {anchor} k={k}"
        );
        assert!(period.days() >= 1);
        if matches!(interval.unit(), IntervalUnit::Month | IntervalUnit::Year) {
            let want = anchor.day().min(dotmac_core::days_in_month(
                period.start().year(),
                period.start().month(),
            ));
            assert_eq!(
                period.start().day(),
                want,
                "drift at {interval} {anchor} k={k}"
            );
        }
        previous = period;
    }
}

proptest! {
    #![proptest_config(dotmac_testing::config(512))]

    #[test]
    fn period_containing_agrees_with_period(
        unit in unit(),
        count in 1u32..13,
        anchor_days in 0i64..(365 * 60),
        offset in -5_000i64..5_000,
    ) {
        let interval = BillingInterval::new(unit, count).unwrap();
        let base = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap();
        let anchor = base + chrono::Duration::days(anchor_days);
        let date = anchor + chrono::Duration::days(offset);
        let (k, period) = interval.period_containing(anchor, date).unwrap();
        prop_assert!(period.contains(date));
        prop_assert_eq!(interval.period(anchor, k).unwrap(), period);
        prop_assert_eq!(interval.period_start(anchor, k + 1).unwrap(), period.end());
    }
}
