//! The integration tests of dotmac-usage: one test binary (jiff's layout), one module per
//! area, so that the crate is linked once.

// Tests may unwrap and use plain arithmetic: a failure is a failing test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)]

mod properties;
mod store_suite;
