//! The facade's integration tests: the wiring of [`dotmac::Dotmac`] end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod order_to_cash;
mod tenancy;
mod wiring;
