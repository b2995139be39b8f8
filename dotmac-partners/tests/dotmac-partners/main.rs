//! The one integration-test binary of dotmac-partners (jiff's layout: one link instead of one per
//! file). Each module is a former `tests/*.rs` file; `common` holds what they share.

mod arithmetic_never_panics;
mod common;
mod properties;
