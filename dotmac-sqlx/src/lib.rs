//! # dotmac-sqlx
//!
//! SQL storage for [DotMac](https://github.com/dotmac-sdk/dotmac): SQLite as the embedded
//! default (a file or `sqlite::memory:`, no server), PostgreSQL when one machine is not enough.
//! One [`Database`] type connects by URL, applies the embedded migrations (one set per
//! backend) and offers the storage the domain crates need.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use chrono::Utc;
//! use dotmac_core::TenantId;
//! use dotmac_sqlx::Database;
//!
//! let db = Database::connect("sqlite::memory:").await?;
//! let tenant = TenantId::new();
//! db.create_tenant(tenant, "Acme Fibre", Utc::now()).await?;
//! assert_eq!(db.reserve_numbers(tenant, "INV", 3).await?, 1); // 1, 2, 3
//! assert_eq!(db.reserve_numbers(tenant, "INV", 1).await?, 4);
//! # Ok::<(), dotmac_sqlx::SqlError>(())
//! # }).unwrap();
//! ```
//!
//! ## Guarantees
//!
//! - **Tenant isolation.** Every table is keyed by `tenant_id` and every call takes a
//!   [`TenantId`](dotmac_core::TenantId). On PostgreSQL each tenant transaction also runs under
//!   row-level security: the migrations create the non-login role `dotmac_app`, FORCE row-level
//!   security on every table with policies on the transaction-local setting
//!   `dotmac.tenant_id`, and each transaction does `set_config('role', 'dotmac_app', true)` and
//!   `set_config('dotmac.tenant_id', …, true)` — never a session `SET`, so a pooled connection
//!   cannot carry a tenant over. A query that forgets its `WHERE tenant_id` still sees one
//!   tenant. The connecting user must own the tables (it runs the migrations) and be allowed to
//!   `SET ROLE dotmac_app` (the migrations grant it).
//!   Writes also check, before any SQL runs, that what they write is the call's tenant's
//!   ([`SqlError::TenantMismatch`], the same on both backends), and every primary and unique
//!   key leads with `tenant_id`: ids are per tenant, and every table can be distributed by it.
//! - **Typed failures.** Values PostgreSQL cannot store (a NUL character) and oversize keys
//!   (1 KiB), text (1 MiB) and documents (64 MiB of JSON) are refused before they reach the
//!   database with [`SqlError::InvalidInput`], on SQLite too. [`SqlError::kind`] sorts every
//!   error into a [`StorageErrorKind`](dotmac_core::StorageErrorKind) (retry an unavailable
//!   store; change invalid input); the domain stores report a
//!   [`StorageError`](dotmac_core::StorageError) that keeps this error as its source.
//! - **Exact money.** `NUMERIC` on PostgreSQL, decimal `TEXT` on SQLite; never a float.
//! - **Transactions.** A change, its gapless document numbers ([`Database::reserve_numbers`])
//!   and its domain events (the [outbox](Database::claim_outbox)) commit together.
//!   Aggregates carry a version; a stale write is [`SqlError::Conflict`].
//! - **Scale-out bill runs.** [`SqlStore::plan_billing_run`] splits a run into chunks that
//!   [`BillWorker`]s ([`SqlStore::run_bill_worker`]) [claim](Database::claim_chunk) under a
//!   lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and write in one transaction each: the
//!   chunk's invoices (`billing_invoices`, the store the billing domain writes through
//!   [`SqlStore`]), subscription states, consumed pending charges, numbers and outbox events. A
//!   dead worker's chunk is claimed again and nothing is billed twice. A frozen one stalls
//!   nobody for more than a lease: the invoice numbers are reserved last, and on PostgreSQL
//!   the [`LeaseSettings`] timeouts end a lock wait ([`SqlError::LockTimeout`], retried) and a
//!   transaction left idle.
//!
//! - **Tenants and quotas.** The `tenants` table is `dotmac-tenancy`'s store: [`SqlStore`]
//!   implements its traits (lifecycle with optimistic versions, settings, users and roles,
//!   quota counts, platform usage), and [`Database::create_tenant`] registers an active,
//!   unmetered tenant in it. Every tenancy write reads the tenant in its own transaction
//!   (`FOR SHARE` on PostgreSQL, so archiving waits for it) and refuses what its status does
//!   not permit; counted quotas lock the tenant's counter row before counting, so of two
//!   concurrent admissions at limit − 1 exactly one succeeds; the hourly API-call quota is one
//!   conditional upsert of the hour's window row, shared by every process on the database.
//!
//! ## SQLite files
//!
//! A SQLite file is opened in WAL mode (readers never wait for the writer) with
//! `synchronous = NORMAL`: a committed transaction survives a crash of the process, and a
//! power loss may lose the last ones committed before it, never the file's consistency. Each
//! connection keeps a 64 MiB page cache, statement journals in memory, checkpoints every
//! 16,384 WAL pages, and reads pages with `pread`, not through a memory map unless
//! [`DatabaseOptions::sqlite_mmap_size`] asks for one (its gain and its caveat are there). The
//! pool has four connections unless [`DatabaseOptions::max_connections`] says
//! otherwise; `sqlite::memory:` is one connection with SQLite's defaults.
//!
//! ## PostgreSQL statistics
//!
//! The reads that take a chunk of ids at a time (a bill run's subscriptions, a rating run's
//! billed usage) are planned from the tables' statistics, as every PostgreSQL query is. While
//! a table's statistics say it holds no rows over pages it still has, such a statement reads
//! the tenant's whole table for every chunk (every index leads with `tenant_id`, and an empty
//! tenant looks free to scan); a run that fills the table grows slower with each chunk. That
//! is the state `DELETE` of most of a table followed by a `VACUUM` that cannot give back the
//! emptied pages leaves: a rating run then took 7.0 s instead of 4.6 s (docs/benchmarks.md).
//! DotMac's stores never delete pending charges, invoices or outbox events; to empty such a
//! table yourself, `TRUNCATE` it (its statistics then follow its real size), and `ANALYZE` a
//! table after a bulk load, as autovacuum would on its own schedule.
//!
//! ## Features
//!
//! - `sqlite` (default): the embedded backend, bundling libsqlite3.
//! - `postgres`: the PostgreSQL backend (no TLS: connect over a trusted network or a socket).
//! - `usage`, `billing`, `collections`, `support`, `partners`, `customers` (all default): each domain's
//!   stores on [`SqlStore`]; `billing` brings `usage` (rating reads usage), `collections`
//!   brings `billing`. The migrations create every table whatever is enabled.
//!
//! sqlx's types do not appear in the API: errors carry the driver's error as an opaque source.

// The shared plumbing (binds, dialect helpers, lease settings) serves every domain's stores; a
// build with only some domains leaves parts of it unused, which is expected, not dead code.
#![cfg_attr(
    not(all(
        feature = "billing",
        feature = "usage",
        feature = "collections",
        feature = "support",
        feature = "partners",
        feature = "customers"
    )),
    allow(dead_code, unused_imports)
)]

mod backend;
#[cfg(feature = "billing")]
mod billing;
#[cfg(feature = "billing")]
mod billrun;
#[cfg(all(feature = "postgres", feature = "customers"))]
mod coa;
#[cfg(feature = "collections")]
mod collections;
#[cfg(feature = "customers")]
mod customers;
mod db;
mod dialect;
mod docs;
mod error;
#[cfg(all(feature = "postgres", feature = "customers"))]
pub mod freeradius;
mod input;
#[cfg(feature = "billing")]
mod keyed;
#[cfg(all(test, feature = "billing"))]
mod migration_tests;
mod numbers;
mod outbox;
#[cfg(feature = "partners")]
mod partners;
#[cfg(all(feature = "postgres", feature = "usage", feature = "customers"))]
pub mod radacct;
#[cfg(all(test, feature = "postgres", feature = "billing"))]
mod rls_tests;
#[cfg(feature = "billing")]
mod scaleout;
#[cfg(test)]
mod schema_tests;
mod store;
#[cfg(feature = "support")]
mod support;
mod tenancy;
mod tenants;
#[cfg(feature = "usage")]
mod usage;

#[cfg(feature = "billing")]
pub use billrun::{BillRunId, BillRunProgress, ChunkClaim};
pub use db::{BackendKind, Database, DatabaseOptions, LeaseSettings};
pub use error::{BoxedSource, InputProblem, Result, SqlError};
pub use outbox::{OutboxEvent, OutboxMessage};
#[cfg(feature = "billing")]
#[doc(hidden)]
pub use scaleout::testing;
#[cfg(feature = "billing")]
pub use scaleout::{BillWorker, WorkerReport};
pub use store::SqlStore;
pub use tenants::IdempotencyClaim;
