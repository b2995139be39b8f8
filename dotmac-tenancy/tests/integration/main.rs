//! The one integration-test binary of dotmac-tenancy (the crate is linked once): the store
//! suite on the in-memory store and the property tests.

mod properties;
mod store_suite;
