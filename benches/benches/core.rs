//! dotmac-core: period arithmetic and money operations.
//!
//! Targets (issue 2): period k from an anchor under 50 ns; allocation into 12 parts under 1 µs.
#![allow(missing_docs)]

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{Criterion, criterion_group, criterion_main};
use dotmac_core::{BillingInterval, Currency, IntervalUnit, Money, RoundingMode};
use rust_decimal::Decimal;

fn periods(c: &mut Criterion) {
    let anchor = NaiveDate::from_ymd_opt(2021, 1, 31).unwrap_or_default();
    let monthly = BillingInterval::MONTHLY;
    let mut group = c.benchmark_group("period");
    group.bench_function("month_start_k", |b| {
        b.iter(|| monthly.period_start(black_box(anchor), black_box(37)))
    });
    group.bench_function("month_period_k", |b| {
        b.iter(|| monthly.period(black_box(anchor), black_box(37)))
    });
    let thirty_days = BillingInterval::new(IntervalUnit::Day, 30).unwrap_or(monthly);
    group.bench_function("day30_period_k", |b| {
        b.iter(|| thirty_days.period(black_box(anchor), black_box(-12)))
    });
    let date = NaiveDate::from_ymd_opt(2024, 7, 15).unwrap_or_default();
    group.bench_function("month_period_containing", |b| {
        b.iter(|| monthly.period_containing(black_box(anchor), black_box(date)))
    });
    group.finish();
}

fn money(c: &mut Criterion) {
    let a = Money::new(Decimal::new(2999, 2), Currency::USD);
    let b2 = Money::new(Decimal::new(1501, 2), Currency::USD);
    let mut group = c.benchmark_group("money");
    group.bench_function("add", |b| {
        b.iter(|| black_box(a).checked_add(black_box(b2)))
    });
    let prorated = a.mul_ratio(17, 31).unwrap_or(a);
    group.bench_function("round_half_up", |b| {
        b.iter(|| black_box(prorated).round(RoundingMode::HalfUp))
    });
    group.bench_function("round_half_even", |b| {
        b.iter(|| black_box(prorated).round(RoundingMode::HalfEven))
    });
    group.bench_function("mul_ratio_and_round", |b| {
        b.iter(|| {
            black_box(a)
                .mul_ratio(black_box(17), black_box(31))
                .map(|m| m.round(RoundingMode::HalfUp))
        })
    });
    let total = Money::new(Decimal::new(119_999, 2), Currency::USD);
    group.bench_function("split_12", |b| {
        b.iter(|| black_box(total).split(black_box(12)))
    });
    let ratios: Vec<Decimal> = (1..=12).map(Decimal::from).collect();
    group.bench_function("allocate_12_ratios", |b| {
        b.iter(|| black_box(total).allocate(black_box(&ratios)))
    });
    group.finish();
}

criterion_group!(benches, periods, money);
criterion_main!(benches);
