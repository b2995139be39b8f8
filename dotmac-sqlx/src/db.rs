//! Connecting, migrating and the backend switch.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Result, SqlError, redact};

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("dotmac-sqlx needs at least one backend feature: `sqlite` or `postgres`");

/// Runs `$body` with `$pool` bound to the backend's pool and `$d` naming the backend's dialect
/// module (see `crate::dialect`). The body is type-checked once per backend, so the same text
/// works with `Transaction<Sqlite>` and `Transaction<Postgres>`.
macro_rules! dispatch {
    ($db:expr, $pool:ident, $d:ident => $body:expr) => {
        match $db.backend_pool() {
            #[cfg(feature = "sqlite")]
            $crate::db::Backend::Sqlite($pool) => {
                #[allow(unused_imports)]
                use $crate::backend::sqlite as $d;
                $body
            }
            #[cfg(feature = "postgres")]
            $crate::db::Backend::Postgres($pool) => {
                #[allow(unused_imports)]
                use $crate::backend::postgres as $d;
                $body
            }
        }
    };
}
pub(crate) use dispatch;

/// Expands the items once per enabled backend, as modules `sqlite` and `postgres` that see the
/// backend's dialect (`Tx`, `dec`, `get_dec`, `IS_POSTGRES`, …) and the other stores' modules
/// for that backend (`numbers`, `docs`, …; [`crate::backend`]) by glob import: helpers that
/// work inside an open transaction are written once this way (`shared`), with the parts whose
/// SQL or bound types differ written per backend (`sqlite`, `postgres`).
macro_rules! for_each_dialect {
    (shared { $($shared:item)* } sqlite { $($lite:item)* } postgres { $($pg:item)* }) => {
        #[cfg(feature = "sqlite")]
        pub(crate) mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::dialect::sqlite::*;
            #[allow(unused_imports)]
            use $crate::backend::sqlite::stores::*;
            $($shared)*
            $($lite)*
        }
        #[cfg(feature = "postgres")]
        pub(crate) mod postgres {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::dialect::postgres::*;
            #[allow(unused_imports)]
            use $crate::backend::postgres::stores::*;
            $($shared)*
            $($pg)*
        }
    };
    ($($item:item)*) => {
        $crate::db::for_each_dialect!(shared { $($item)* } sqlite {} postgres {});
    };
}
pub(crate) use for_each_dialect;

#[cfg(feature = "postgres")]
pub(crate) static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/postgres");
#[cfg(feature = "sqlite")]
pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/sqlite");

/// Which database a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// SQLite: a file or memory, in-process.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

#[derive(Debug)]
pub(crate) enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// How to connect: a URL and a few knobs. Built with [`DatabaseOptions::new`] and the setters.
///
/// ```
/// use dotmac_sqlx::DatabaseOptions;
/// let options = DatabaseOptions::new("postgres://app@127.0.0.1/isp")
///     .max_connections(8)
///     .schema("dotmac");
/// assert_eq!(options.url(), "postgres://app@127.0.0.1/isp");
/// ```
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    url: String,
    max_connections: Option<u32>,
    schema: Option<String>,
    acquire_timeout: Duration,
    sqlite_mmap_size: u64,
}

impl DatabaseOptions {
    /// Options for a URL: `sqlite::memory:`, `sqlite:<path>` / `sqlite://<path>` (created if
    /// missing), or `postgres://user@host:port/db`.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseOptions {
            url: url.into(),
            max_connections: None,
            schema: None,
            acquire_timeout: Duration::from_secs(30),
            sqlite_mmap_size: 0,
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The pool size (default: 10 on PostgreSQL, 4 for a SQLite file; always 1 for
    /// `sqlite::memory:`, whose database lives and dies with its one connection).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// PostgreSQL only: keep DotMac's tables in this schema (created if missing), so that one
    /// database can hold several independent DotMac installations (or test runs). A plain
    /// lower-case identifier: letters, digits and `_`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// How long to wait for a pooled connection before failing (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// SQLite files only: how many bytes of the database file each connection reads through
    /// a memory map (SQLite's `PRAGMA mmap_size`; default `0`, SQLite's own: every page is
    /// read with `pread` into the connection's page cache).
    ///
    /// When it helps: in WAL mode a connection drops its whole page cache whenever another
    /// connection has committed since its last transaction, so a pool whose connections take
    /// turns writing and reading copies most pages back from the operating system; through
    /// the map a page is read in place. Measured on usage rating (docs/benchmarks.md), a map
    /// of 1 GiB made the grouped usage reads a third faster at 10 events a subscription and
    /// changed nothing measurable at 100. The cost, SQLite's own caveat and why it is off by
    /// default: an I/O error on a mapped page (a failing disk, the file truncated by another
    /// process) arrives as a `SIGBUS` signal that ends the process, instead of an error. The
    /// map is address space, not memory: its pages are the operating system's file cache.
    pub fn sqlite_mmap_size(mut self, bytes: u64) -> Self {
        self.sqlite_mmap_size = bytes;
        self
    }
}

/// A bill-run chunk's lease and the limits its transactions run under on PostgreSQL, so that
/// a worker frozen inside its write transaction (stopped, swapped out, its VM paused) holds
/// the other workers up for less than one lease.
///
/// - The **lease**: how long a claimed chunk stays the worker's; a chunk not written by then
///   is claimed by another worker, and the late worker gets
///   [`SqlError::LeaseLost`].
/// - The **lock timeout** (default: a quarter of the lease): how long a statement of a
///   bill-run transaction waits for a row another transaction holds (the tenant's invoice
///   counter, which a worker holds from its number reservation to its commit) before failing
///   with [`SqlError::LockTimeout`]. Nothing is written; [`SqlStore::run_bill_worker`]
///   retries the chunk while its lease lasts.
/// - The **idle-in-transaction timeout** (default: half the lease): how long a bill-run
///   transaction may wait for its client between statements before PostgreSQL ends the
///   session, which rolls the transaction back and frees its locks. Shorter than the lease,
///   so a frozen worker's locks are gone by the time its chunk can be claimed again; when it
///   wakes up its connection is gone and it commits nothing.
///
/// Both timeouts are set transaction-locally (`set_config(…, true)`, PostgreSQL's
/// `SET LOCAL`) by the statement that already scopes the transaction to its tenant: no extra
/// round trip, and a pooled connection never keeps them. SQLite ignores them: it has one
/// writer at a time and its connections' busy timeout (30 s).
///
/// ```
/// use std::time::Duration;
/// use dotmac_sqlx::LeaseSettings;
///
/// let lease = LeaseSettings::new(chrono::Duration::minutes(4));
/// assert_eq!(lease.lock_timeout(), Duration::from_secs(60));
/// assert_eq!(lease.idle_in_transaction_timeout(), Duration::from_secs(120));
/// let tight = lease.with_lock_timeout(Duration::from_secs(5));
/// assert_eq!(tight.lock_timeout(), Duration::from_secs(5));
/// ```
///
/// [`SqlError::LeaseLost`]: crate::SqlError::LeaseLost
/// [`SqlError::LockTimeout`]: crate::SqlError::LockTimeout
/// [`SqlStore::run_bill_worker`]: crate::SqlStore::run_bill_worker
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    lease: chrono::Duration,
    lock_timeout: Duration,
    idle_in_transaction_timeout: Duration,
}

impl LeaseSettings {
    /// A lease of `lease` with the default timeouts: a quarter of the lease to wait for a
    /// lock, half of it idle in a transaction (each at least 1 ms).
    pub fn new(lease: chrono::Duration) -> Self {
        let millis = u64::try_from(lease.num_milliseconds()).unwrap_or(0);
        let part = |divisor: u64| Duration::from_millis((millis / divisor).max(1));
        LeaseSettings {
            lease,
            lock_timeout: part(4),
            idle_in_transaction_timeout: part(2),
        }
    }

    /// How long a bill-run statement waits for a lock before failing with
    /// [`SqlError::LockTimeout`](crate::SqlError::LockTimeout). At least 1 ms and shorter
    /// than the lease (checked when a chunk is claimed).
    #[must_use]
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How long a bill-run transaction may sit idle between statements before PostgreSQL
    /// ends its session. At least 1 ms and shorter than the lease (checked when a chunk is
    /// claimed).
    #[must_use]
    pub fn with_idle_in_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.idle_in_transaction_timeout = timeout;
        self
    }

    /// The lease.
    pub fn lease(&self) -> chrono::Duration {
        self.lease
    }

    /// The lock timeout.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The idle-in-transaction timeout.
    pub fn idle_in_transaction_timeout(&self) -> Duration {
        self.idle_in_transaction_timeout
    }

    /// Refuses a lease that is not positive and timeouts that PostgreSQL would read as "off"
    /// (0) or that do not end before the lease does.
    pub(crate) fn check(&self) -> Result<()> {
        let lease = self
            .lease
            .to_std()
            .ok()
            .filter(|lease| !lease.is_zero())
            .ok_or_else(|| SqlError::InvalidOption {
                option: "lease",
                reason: format!("{} is not a positive duration", self.lease),
            })?;
        for (option, timeout) in [
            ("lock_timeout", self.lock_timeout),
            (
                "idle_in_transaction_timeout",
                self.idle_in_transaction_timeout,
            ),
        ] {
            if timeout < Duration::from_millis(1) || timeout >= lease {
                return Err(SqlError::InvalidOption {
                    option,
                    reason: format!(
                        "{timeout:?} must be at least 1 ms and shorter than the lease ({lease:?}), \
                         so that a frozen worker's locks are freed before its chunk is claimed again"
                    ),
                });
            }
        }
        Ok(())
    }

    /// `timeout` as a PostgreSQL setting value in milliseconds (capped at the largest value
    /// PostgreSQL accepts, about 24 days).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn setting(timeout: Duration) -> String {
        let millis = timeout.as_millis().min(i32::MAX.unsigned_abs().into());
        format!("{millis}ms")
    }
}

/// A lease of that length with the default timeouts ([`LeaseSettings::new`]).
impl From<chrono::Duration> for LeaseSettings {
    fn from(lease: chrono::Duration) -> Self {
        LeaseSettings::new(lease)
    }
}

/// A connection pool to DotMac's tables, migrated on connect.
///
/// Cheap to clone (the pool is shared). Every tenant operation runs in a transaction scoped to
/// that tenant: on PostgreSQL under row-level security (see the crate docs).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use dotmac_sqlx::{BackendKind, Database};
/// let db = Database::connect("sqlite::memory:").await?;
/// assert_eq!(db.kind(), BackendKind::Sqlite);
/// # Ok::<(), dotmac_sqlx::SqlError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Database {
    inner: Arc<Backend>,
}

impl Database {
    /// Connects to `url` with default options and applies the embedded migrations.
    ///
    /// # Errors
    ///
    /// [`SqlError::UnsupportedUrl`] or [`SqlError::BackendNotEnabled`] for a URL this build
    /// cannot serve, [`SqlError::Connect`] if the database cannot be reached,
    /// [`SqlError::Migrate`] if the migrations fail.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(DatabaseOptions::new(url)).await
    }

    /// Connects with `options` and applies the embedded migrations.
    ///
    /// # Errors
    ///
    /// As [`Database::connect`], plus [`SqlError::InvalidOption`] for a bad schema name or a
    /// pool size of zero.
    pub async fn connect_with(options: DatabaseOptions) -> Result<Self> {
        if options.max_connections == Some(0) {
            return Err(SqlError::InvalidOption {
                option: "max_connections",
                reason: "must be at least 1".into(),
            });
        }
        let url = options.url.as_str();
        if url.starts_with("sqlite:") {
            if options.schema.is_some() {
                return Err(SqlError::InvalidOption {
                    option: "schema",
                    reason: "schemas are a PostgreSQL feature; use another SQLite file".into(),
                });
            }
            return connect_sqlite(&options).await;
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return connect_postgres(&options).await;
        }
        Err(SqlError::UnsupportedUrl { url: redact(url) })
    }

    /// The backend in use.
    pub fn kind(&self) -> BackendKind {
        match *self.inner {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => BackendKind::Sqlite,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Closes every pooled connection, waiting for those in use to come back.
    pub async fn close(&self) {
        dispatch!(self, pool, _d => pool.close().await)
    }

    /// The backend's name for the `backend` field of the store spans (docs/observability.md).
    pub(crate) fn backend_name(&self) -> &'static str {
        match self.kind() {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }

    pub(crate) fn backend_pool(&self) -> &Backend {
        &self.inner
    }
}

#[cfg(feature = "sqlite")]
async fn connect_sqlite(options: &DatabaseOptions) -> Result<Database> {
    use std::str::FromStr;

    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };

    let url = options.url.as_str();
    let connect_error = |source: sqlx::Error| SqlError::Connect {
        url: redact(url),
        source: Box::new(source),
    };
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut connect = SqliteConnectOptions::from_str(url)
        .map_err(connect_error)?
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30));
    let pool_options = if in_memory {
        // Each connection to :memory: is a separate database: keep exactly one, forever.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        // SQLite's default page cache is 2 MiB: an index over millions of usage rows then
        // goes to the file on every random insert. 64 MiB per connection keeps it in memory.
        //
        // Bulk writes (a multi-row `INSERT … ON CONFLICT`, a bill-run chunk) touch thousands
        // of pages per transaction. Two defaults made them I/O-bound (measured on usage
        // ingestion, see docs/benchmarks.md): the statement journal that lets such a statement
        // roll back alone went to a temporary *file* (`temp_store = MEMORY` keeps it in
        // memory), and the WAL was checkpointed every 1,000 pages (4 MiB), i.e. after almost
        // every bulk transaction, copying back and fsyncing the same index pages again and
        // again; every 16,384 pages (64 MiB of WAL) copies each hot page once per many
        // transactions.
        connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "MEMORY")
            .pragma("wal_autocheckpoint", "16384");
        if options.sqlite_mmap_size > 0 {
            connect = connect.pragma("mmap_size", options.sqlite_mmap_size.to_string());
        }
        SqlitePoolOptions::new().max_connections(options.max_connections.unwrap_or(4))
    };
    let pool = pool_options
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(connect_error)?;
    SQLITE_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|source| SqlError::Migrate {
            source: Box::new(source),
        })?;
    Ok(Database {
        inner: Arc::new(Backend::Sqlite(pool)),
    })
}

#[cfg(not(feature = "sqlite"))]
async fn connect_sqlite(_options: &DatabaseOptions) -> Result<Database> {
    Err(SqlError::BackendNotEnabled { backend: "sqlite" })
}

/// A schema name that is safe to splice into SQL.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

#[cfg(feature = "postgres")]
async fn connect_postgres(options: &DatabaseOptions) -> Result<Database> {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let url = options.url.as_str();
    let connect_error = |source: sqlx::Error| SqlError::Connect {
        url: redact(url),
        source: Box::new(source),
    };
    let mut connect = PgConnectOptions::from_str(url).map_err(connect_error)?;
    if let Some(schema) = &options.schema {
        if !valid_schema(schema) {
            return Err(SqlError::InvalidOption {
                option: "schema",
                reason: format!("{schema:?} is not a plain lower-case identifier"),
            });
        }
        create_schema(&connect, schema)
            .await
            .map_err(connect_error)?;
        connect = connect.options([("search_path", schema.as_str())]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.unwrap_or(10))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(connect_error)?;
    POSTGRES_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|source| SqlError::Migrate {
            source: Box::new(source),
        })?;
    Ok(Database {
        inner: Arc::new(Backend::Postgres(pool)),
    })
}

#[cfg(feature = "postgres")]
async fn create_schema(
    connect: &sqlx::postgres::PgConnectOptions,
    schema: &str,
) -> Result<(), sqlx::Error> {
    use sqlx::{AssertSqlSafe, Connection, Executor};

    let mut conn = sqlx::PgConnection::connect_with(connect).await?;
    // Concurrent first connections race on the catalogue: the loser sees a unique violation
    // although the schema now exists, so serialise on an advisory lock.
    conn.execute("SELECT pg_advisory_lock(727274)").await?;
    let created = conn
        .execute(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .await;
    conn.execute("SELECT pg_advisory_unlock(727274)").await?;
    created?;
    conn.close().await
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(_options: &DatabaseOptions) -> Result<Database> {
    Err(SqlError::BackendNotEnabled {
        backend: "postgres",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_files_read_through_the_memory_map_they_are_given() {
        let path = std::env::temp_dir().join(format!("dotmac-mmap-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        for (options, expected) in [
            (DatabaseOptions::new(&url), 0),
            (
                DatabaseOptions::new(&url).sqlite_mmap_size(1 << 30),
                1 << 30,
            ),
            (DatabaseOptions::new(&url).sqlite_mmap_size(0), 0),
        ] {
            let db = Database::connect_with(options).await.unwrap();
            #[allow(irrefutable_let_patterns)]
            let Backend::Sqlite(pool) = &*db.inner else {
                panic!("a SQLite URL opened another backend");
            };
            let size: i64 = sqlx::query_scalar("PRAGMA mmap_size")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(u64::try_from(size).unwrap(), expected);
            db.close().await;
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[test]
    fn lease_settings_default_to_parts_of_the_lease() {
        let lease = LeaseSettings::new(chrono::Duration::seconds(60));
        assert_eq!(lease.lease(), chrono::Duration::seconds(60));
        assert_eq!(lease.lock_timeout(), Duration::from_secs(15));
        assert_eq!(lease.idle_in_transaction_timeout(), Duration::from_secs(30));
        assert!(lease.check().is_ok());
        assert_eq!(LeaseSettings::from(chrono::Duration::seconds(60)), lease);
        // A tiny lease still gets timeouts PostgreSQL does not read as "off".
        let tiny = LeaseSettings::new(chrono::Duration::milliseconds(3));
        assert_eq!(tiny.lock_timeout(), Duration::from_millis(1));
        assert!(tiny.check().is_ok());
    }

    #[test]
    fn lease_settings_refuse_what_would_not_free_a_frozen_worker() {
        let refused = |lease: LeaseSettings| match lease.check() {
            Err(SqlError::InvalidOption { option, .. }) => option,
            Ok(()) => "accepted",
            Err(_) => "another error",
        };
        let minute = LeaseSettings::new(chrono::Duration::minutes(1));
        assert_eq!(
            refused(LeaseSettings::new(chrono::Duration::zero())),
            "lease"
        );
        assert_eq!(
            refused(LeaseSettings::new(chrono::Duration::seconds(-5))),
            "lease"
        );
        assert_eq!(
            refused(minute.with_lock_timeout(Duration::ZERO)),
            "lock_timeout"
        );
        assert_eq!(
            refused(minute.with_lock_timeout(Duration::from_secs(60))),
            "lock_timeout"
        );
        assert_eq!(
            refused(minute.with_idle_in_transaction_timeout(Duration::from_micros(500))),
            "idle_in_transaction_timeout"
        );
        assert_eq!(
            refused(minute.with_idle_in_transaction_timeout(Duration::from_secs(61))),
            "idle_in_transaction_timeout"
        );
    }

    #[test]
    fn timeouts_become_postgres_milliseconds_within_its_range() {
        assert_eq!(
            LeaseSettings::setting(Duration::from_millis(1500)),
            "1500ms"
        );
        assert_eq!(
            LeaseSettings::setting(Duration::from_secs(100 * 24 * 3600)),
            "2147483647ms"
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema("dotmac"));
        assert!(valid_schema("_t_1"));
        assert!(!valid_schema("Dotmac"));
        assert!(!valid_schema("1abc"));
        assert!(!valid_schema("a;drop table x"));
        assert!(!valid_schema(""));
    }
}
