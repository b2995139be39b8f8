//! What the test modules share, written once: the proptest case count and the panic catcher
//! of the `arithmetic_never_panics` suites.
//!
//! dotmac-partners has the same file for now: one shared copy would be a test-support module
//! in a crate both depend on (dotmac-core), which is not this crate's to change.

use std::panic::{AssertUnwindSafe, catch_unwind};

use proptest::test_runner::TestCaseError;

/// `default` cases, or `PROPTEST_CASES` when set (for long runs: `PROPTEST_CASES=100000`).
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `call`; a panic fails the test case with `what` and the input.
pub(crate) fn no_panic<T>(
    what: &str,
    input: &dyn std::fmt::Debug,
    call: impl FnOnce() -> T,
) -> Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(call))
        .map_err(|_| TestCaseError::fail(format!("{what} panicked on {input:?}")))
}
