//! The per-backend view that [`crate::db::dispatch!`] brings into scope under one name (`d`):
//! the backend's dialect helpers ([`crate::dialect`]) and every store's module for that
//! backend, so store code is written once (`d::begin_tenant`, `d::billing::apply_batch`, …).
//!
//! It sits above both: the stores import the dialect helpers (and, in their per-backend code,
//! each other through `sqlite::stores` / `postgres::stores`); the dialect imports no store.

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    pub(crate) use crate::dialect::sqlite::*;
    pub(crate) use stores::*;

    /// Every store's SQLite module, by store name.
    pub(crate) mod stores {
        #[cfg(feature = "billing")]
        pub(crate) use crate::billing::sqlite as billing;
        #[cfg(feature = "billing")]
        pub(crate) use crate::billrun::sqlite as billrun;
        #[cfg(feature = "collections")]
        pub(crate) use crate::collections::sqlite as collections;
        #[cfg(feature = "customers")]
        pub(crate) use crate::customers::sqlite as customers;
        pub(crate) use crate::docs::sqlite as docs;
        #[cfg(feature = "billing")]
        pub(crate) use crate::keyed::sqlite as keyed;
        pub(crate) use crate::numbers::sqlite as numbers;
        pub(crate) use crate::outbox::sqlite as outbox;
        #[cfg(feature = "partners")]
        pub(crate) use crate::partners::sqlite as partners;
        #[cfg(all(feature = "postgres", feature = "usage", feature = "customers"))]
        pub(crate) use crate::radacct::sqlite as radacct;
        pub(crate) use crate::tenancy::sqlite as tenancy;
        pub(crate) use crate::tenants::sqlite as tenants;
        #[cfg(feature = "usage")]
        pub(crate) use crate::usage::sqlite as usage;
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    pub(crate) use crate::dialect::postgres::*;
    pub(crate) use stores::*;

    /// Every store's PostgreSQL module, by store name.
    pub(crate) mod stores {
        #[cfg(feature = "billing")]
        pub(crate) use crate::billing::postgres as billing;
        #[cfg(feature = "billing")]
        pub(crate) use crate::billrun::postgres as billrun;
        #[cfg(feature = "collections")]
        pub(crate) use crate::collections::postgres as collections;
        #[cfg(feature = "customers")]
        pub(crate) use crate::customers::postgres as customers;
        pub(crate) use crate::docs::postgres as docs;
        #[cfg(feature = "billing")]
        pub(crate) use crate::keyed::postgres as keyed;
        pub(crate) use crate::numbers::postgres as numbers;
        pub(crate) use crate::outbox::postgres as outbox;
        #[cfg(feature = "partners")]
        pub(crate) use crate::partners::postgres as partners;
        #[cfg(all(feature = "postgres", feature = "usage", feature = "customers"))]
        pub(crate) use crate::radacct::postgres as radacct;
        pub(crate) use crate::tenancy::postgres as tenancy;
        pub(crate) use crate::tenants::postgres as tenants;
        #[cfg(feature = "usage")]
        pub(crate) use crate::usage::postgres as usage;
    }
}
