//! The property-test setup every DotMac test binary shares, in one place: how many cases a
//! property runs ([`cases`], `PROPTEST_CASES` for long runs), the guard that turns a panic into
//! a failing, shrinkable case ([`no_panic`]), and decimals of every size ([`any_decimal`]).
//! A dev-dependency of the domain crates; not published.

// Test support: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rust_decimal::Decimal;

/// `default` cases, or `PROPTEST_CASES` when set (for long runs: `PROPTEST_CASES=100000`).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A proptest configuration of [`cases`]`(default)` cases.
pub fn config(default: u32) -> ProptestConfig {
    ProptestConfig::with_cases(cases(default))
}

/// Runs `call`; a panic fails the case with `what` and the input (proptest then shrinks it).
///
/// # Errors
///
/// A [`TestCaseError`] naming the call, the panic's message and the input.
pub fn no_panic<T>(
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
pub fn any_decimal() -> impl Strategy<Value = Decimal> {
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

/// Positive decimals of every size (the absolute value of [`any_decimal`], zero made one).
pub fn positive_decimal() -> impl Strategy<Value = Decimal> {
    any_decimal().prop_map(|d| if d.is_zero() { Decimal::ONE } else { d.abs() })
}
