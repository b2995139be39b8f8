//! # dotmac-billing
//!
//! (crate docs: written by the billing work)

mod error;

pub mod dunning;
pub mod usage;

pub use error::BillingError;
