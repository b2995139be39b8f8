//! Runnable examples of DotMac. Each file under `examples/` is one program:
//!
//! - `core_tour`: money, rounding, allocation and billing periods from `dotmac-core`.
//!
//! Run one with `cargo run --release --example <name>`.
