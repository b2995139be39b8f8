//! The facade's integration tests: the wiring of [`dotmac::Dotmac`] end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod late_events;
mod loop_properties;
mod network;
mod order_to_cash;
mod partners;
mod tenancy;
mod wiring;
