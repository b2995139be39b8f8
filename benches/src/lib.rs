//! Criterion benchmarks for DotMac; see `benches/` and `docs/benchmarks.md`.
//!
//! Run them with `cargo bench -p dotmac-benches`.
