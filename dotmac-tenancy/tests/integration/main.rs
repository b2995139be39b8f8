//! The one integration-test binary of dotmac-tenancy (the crate is linked once).
