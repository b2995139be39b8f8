//! Runnable examples of DotMac. Each file under `examples/` is one program:
//!
//! - `isp_quickstart`: one month of an ISP's billing end to end on embedded SQLite (or
//!   PostgreSQL with `--database-url`): catalogue, customers, usage, bill runs, payments,
//!   collections, analytics.
//! - `core_tour`: money, rounding, allocation and billing periods from `dotmac-core`.
//! - `isp_network`: the loop to the network on PostgreSQL with a real FreeRADIUS: subscribers
//!   accepted at their plan's rate, suspended and restored by collections, slowed by fair
//!   usage, and their RADIUS accounting billed as usage ([`network`], its core, is what its
//!   test runs).
//!
//! Run one with `cargo run --release --example <name>`.

pub mod network;
