//! Runnable examples of DotMac. Each file under `examples/` is one program:
//!
//! - `isp_quickstart`: one month of an ISP's billing end to end on embedded SQLite (or
//!   PostgreSQL with `--database-url`): catalogue, customers, usage, bill runs, payments,
//!   collections, analytics.
//! - `core_tour`: money, rounding, allocation and billing periods from `dotmac-core`.
//!
//! Run one with `cargo run --release --example <name>`.
