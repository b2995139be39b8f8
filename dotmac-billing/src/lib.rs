//! # dotmac-billing
//!
//! (crate docs: written by the billing work)

mod error;

pub use error::BillingError;
