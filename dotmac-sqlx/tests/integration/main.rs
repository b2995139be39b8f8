//! dotmac-sqlx's integration tests, one binary (jiff's layout): each module is a suite over
//! SQLite (memory and file) and, with `DATABASE_URL`, PostgreSQL, in a schema of its own
//! ([`common::postgres`] names it after the module's file), so that suites reading global
//! state (the outbox relay, bill-run chunks) never see each other's rows.
//!
//! `lease_timeouts` is the one other binary: it starts itself again as a frozen worker
//! process, which the standard harness cannot do.

#[path = "../common/mod.rs"]
mod common;

mod batch_commit;
mod billing_stores;
mod billrun;
mod customers;
mod foundation;
mod freeradius;
mod hardening;
mod partners_suite;
mod radacct;
mod scaleout;
mod store_spans;
mod store_suites;
mod support_suite;
