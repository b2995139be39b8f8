//! The one integration-test binary of dotmac-partners (jiff's layout: one link instead of one per
//! file). Each module is a former `tests/*.rs` file; the shared proptest setup is `dotmac-testing`.

mod arithmetic_never_panics;
mod properties;
mod store_suite;
