//! The crate's one error type.

use std::error::Error as StdError;

use dotmac_core::{CoreError, StorageError, StorageErrorKind, TenantId};

/// A boxed driver error: kept opaque so that sqlx's types stay out of DotMac's public API.
pub type BoxedSource = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in `dotmac-sqlx`.
///
/// Concurrency outcomes that a caller is expected to handle ([`SqlError::Conflict`],
/// [`SqlError::LeaseLost`], [`SqlError::Duplicate`]) are typed variants; everything the database
/// or the driver reports otherwise is [`SqlError::Database`] with the operation that failed.
/// [`SqlError::kind`] sorts every error into a backend-neutral [`StorageErrorKind`] (what to
/// do about it), and `From<SqlError> for StorageError` is what the domain stores report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The URL names no backend this build supports.
    #[error(
        "unsupported database URL {url:?}: expected sqlite:<path>, sqlite::memory: or postgres://…"
    )]
    UnsupportedUrl {
        /// The URL, with any password removed.
        url: String,
    },
    /// The URL names a backend whose cargo feature is off.
    #[error("the {backend} backend is not compiled in: enable dotmac-sqlx's `{backend}` feature")]
    BackendNotEnabled {
        /// `"sqlite"` or `"postgres"`.
        backend: &'static str,
    },
    /// An option of [`crate::DatabaseOptions`] is unusable.
    #[error("invalid database option {option}: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// Could not connect.
    #[error("cannot connect to {url}: {source}; is the server running and the URL right?")]
    Connect {
        /// The URL, with any password removed.
        url: String,
        /// The driver's error.
        #[source]
        source: BoxedSource,
    },
    /// The embedded migrations failed.
    #[error("migrations failed: {source}")]
    Migrate {
        /// The migrator's error.
        #[source]
        source: BoxedSource,
    },
    /// Optimistic concurrency: the row was changed by someone else since it was read.
    #[error(
        "conflict on {entity} {id}: expected version {expected}, found {}; reload and retry",
        .actual.map_or_else(|| "no row".to_owned(), |v| v.to_string())
    )]
    Conflict {
        /// The kind of record.
        entity: &'static str,
        /// Its id.
        id: String,
        /// The version the caller read.
        expected: i64,
        /// The version stored now, or `None` if the row is gone.
        actual: Option<i64>,
    },
    /// A unique key (id, idempotency key, number) is already taken.
    #[error("duplicate {what}: {key} already exists")]
    Duplicate {
        /// What was duplicated.
        what: &'static str,
        /// The key.
        key: String,
    },
    /// The record does not exist for this tenant.
    #[error("{entity} {id} not found for this tenant")]
    NotFound {
        /// The kind of record.
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// A worker's lease on a bill-run chunk expired and another worker took (or finished) it:
    /// the work must be dropped, not written.
    #[error(
        "lease lost on chunk {chunk_no} of bill run {run}: another worker owns it now; drop this result"
    )]
    LeaseLost {
        /// The bill run.
        run: String,
        /// The chunk.
        chunk_no: i32,
    },
    /// A record names another tenant than the call's (an outbox event of tenant B written in a
    /// call for tenant A): refused before any SQL runs, so nothing is written, on every backend.
    #[error("{what} {id} belongs to tenant {found}, not to {expected}, the tenant of this call")]
    TenantMismatch {
        /// The kind of record.
        what: &'static str,
        /// Its id.
        id: String,
        /// The tenant of the call.
        expected: TenantId,
        /// The tenant the record names.
        found: TenantId,
    },
    /// A value that the database cannot store (PostgreSQL cannot hold a NUL byte in text or
    /// JSON) or that exceeds dotmac-sqlx's size bounds: refused before any SQL runs, with the
    /// same error on SQLite and PostgreSQL, so nothing is written.
    #[error("{what} cannot be stored: {problem}")]
    InvalidInput {
        /// The value refused.
        what: &'static str,
        /// What is wrong with it.
        problem: InputProblem,
    },
    /// A statement waited longer than its transaction's lock timeout
    /// ([`LeaseSettings`](crate::LeaseSettings)) for a row that another transaction holds,
    /// such as a frozen bill-run worker holding the tenant's invoice counter. The transaction
    /// was rolled back and wrote nothing: retry it.
    #[error(
        "lock wait timed out during {operation}: another transaction holds the row; nothing was written, retry"
    )]
    LockTimeout {
        /// What dotmac-sqlx was doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxedSource,
    },
    /// A stored value cannot be decoded (a corrupt or hand-edited row).
    #[error("corrupt stored {what}: {detail}")]
    Corrupt {
        /// The column or value.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A domain value was refused by `dotmac-core` (for example an unknown currency).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The billing domain refused the work (a scale-out bill run's chunk whose catalogue does
    /// not match a subscription, an invalid price): fix the data, the chunk stays claimable.
    #[error("billing refused the chunk: {0}")]
    #[cfg(feature = "billing")]
    Billing(#[from] dotmac_billing::BillingError),
    /// The tenancy domain refused a value (a blank tenant name given to
    /// [`Database::create_tenant`](crate::Database::create_tenant)).
    #[error(transparent)]
    Tenancy(#[from] dotmac_tenancy::TenancyError),
    /// JSON (de)serialisation of a stored body or event payload failed.
    #[error("JSON encoding of {what} failed: {source}")]
    Json {
        /// What was encoded or decoded.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// Any other database error.
    #[error("database error during {operation}: {source}")]
    Database {
        /// What dotmac-sqlx was doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxedSource,
    },
}

/// Why a value was refused by [`SqlError::InvalidInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputProblem {
    /// It contains a NUL character (`'\0'`), which PostgreSQL's `text`, `json` and `jsonb`
    /// cannot hold.
    NulByte,
    /// It is longer than the bound for such values.
    TooLong {
        /// Its length in bytes (UTF-8; for a document, of its JSON text).
        bytes: usize,
        /// The bound.
        max: usize,
    },
}

impl std::fmt::Display for InputProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputProblem::NulByte => f.write_str("it contains a NUL character; remove it"),
            InputProblem::TooLong { bytes, max } => {
                write!(
                    f,
                    "it is {bytes} bytes long, more than the {max} bytes allowed"
                )
            }
        }
    }
}

/// `Result` with [`SqlError`].
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

impl SqlError {
    /// What kind of storage failure this is: whether a retry can help (`Unavailable`), the
    /// input must change (`InvalidInput`, `TenantMismatch`), or a key is taken (`Conflict`).
    /// Driver errors are sorted by their SQLSTATE (PostgreSQL) or result code (SQLite).
    pub fn kind(&self) -> StorageErrorKind {
        match self {
            SqlError::UnsupportedUrl { .. }
            | SqlError::BackendNotEnabled { .. }
            | SqlError::InvalidOption { .. }
            | SqlError::InvalidInput { .. }
            | SqlError::Core(_) => StorageErrorKind::InvalidInput,
            #[cfg(feature = "billing")]
            SqlError::Billing(dotmac_billing::BillingError::Storage(storage)) => storage.kind(),
            #[cfg(feature = "billing")]
            SqlError::Billing(_) => StorageErrorKind::InvalidInput,
            SqlError::Tenancy(dotmac_tenancy::TenancyError::Storage(storage)) => storage.kind(),
            SqlError::Tenancy(_) => StorageErrorKind::InvalidInput,
            SqlError::Connect { .. } | SqlError::LockTimeout { .. } => {
                StorageErrorKind::Unavailable
            }
            SqlError::Migrate { .. } => StorageErrorKind::Other,
            SqlError::Conflict { .. } | SqlError::Duplicate { .. } | SqlError::LeaseLost { .. } => {
                StorageErrorKind::Conflict
            }
            SqlError::NotFound { .. } => StorageErrorKind::NotFound,
            SqlError::TenantMismatch { .. } => StorageErrorKind::TenantMismatch,
            SqlError::Corrupt { .. } => StorageErrorKind::Corrupt,
            SqlError::Json { .. } => StorageErrorKind::Other,
            SqlError::Database { source, .. } => source
                .downcast_ref::<sqlx::Error>()
                .map_or(StorageErrorKind::Other, classify),
        }
    }
}

/// The domain crates' view of a storage failure: its kind, this error's message, and this
/// error (with the driver's error behind it) as the source.
impl From<SqlError> for StorageError {
    fn from(error: SqlError) -> Self {
        StorageError::from_source(error.kind(), error)
    }
}

/// The one mapping of driver errors onto storage kinds.
pub(crate) fn classify(error: &sqlx::Error) -> StorageErrorKind {
    use sqlx::error::ErrorKind;
    match error {
        sqlx::Error::RowNotFound => StorageErrorKind::NotFound,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => StorageErrorKind::Unavailable,
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => StorageErrorKind::InvalidInput,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StorageErrorKind::Corrupt,
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation | ErrorKind::ExclusionViolation => {
                StorageErrorKind::Conflict
            }
            ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation => StorageErrorKind::Constraint,
            _ => classify_code(db.as_ref()),
        },
        _ => StorageErrorKind::Other,
    }
}

/// Database errors that sqlx does not sort itself, by the backend's own code.
fn classify_code(db: &dyn sqlx::error::DatabaseError) -> StorageErrorKind {
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return classify_sqlstate(pg.code(), pg.message());
    }
    #[cfg(feature = "sqlite")]
    if let Some(lite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        let code = sqlx::error::DatabaseError::code(lite)
            .and_then(|c| c.parse::<i32>().ok())
            .unwrap_or(0);
        return classify_sqlite(code);
    }
    let _ = db;
    StorageErrorKind::Other
}

/// PostgreSQL SQLSTATEs (appendix A of its manual).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn classify_sqlstate(code: &str, message: &str) -> StorageErrorKind {
    match code {
        // Bad encoding (a NUL byte in text), \u0000 in jsonb, string too long, number out of
        // range, program limit exceeded (an index row or a jsonb value over its maximum).
        "22021" | "22P05" | "22001" | "22003" | "54000" => StorageErrorKind::InvalidInput,
        // Serialisation failure, deadlock, lock not available, statement or lock timeout
        // (query_canceled), too many connections, out of memory or disk, admin shutdown.
        "40001" | "40P01" | "55P03" | "57014" | "53000" | "53100" | "53200" | "53300" | "57P01"
        | "57P02" | "57P03" => StorageErrorKind::Unavailable,
        "23503" | "23502" | "23514" | "23P01" => StorageErrorKind::Constraint,
        "23505" => StorageErrorKind::Conflict,
        // Row-level security refused a row of another tenant (the second line behind the
        // checks done before any SQL runs).
        "42501" if message.contains("row-level security") => StorageErrorKind::TenantMismatch,
        _ if code.starts_with("08") => StorageErrorKind::Unavailable,
        _ => StorageErrorKind::Other,
    }
}

/// SQLite result codes (the primary code is the low byte of the extended one).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
fn classify_sqlite(extended: i32) -> StorageErrorKind {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const NOMEM: i32 = 7;
    const IOERR: i32 = 10;
    const CORRUPT: i32 = 11;
    const FULL: i32 = 13;
    const CANTOPEN: i32 = 14;
    const TOOBIG: i32 = 18;
    const CONSTRAINT: i32 = 19;
    const MISMATCH: i32 = 20;
    const NOTADB: i32 = 26;
    match extended & 0xff {
        BUSY | LOCKED | NOMEM | IOERR | FULL | CANTOPEN => StorageErrorKind::Unavailable,
        TOOBIG | MISMATCH => StorageErrorKind::InvalidInput,
        CONSTRAINT => StorageErrorKind::Constraint,
        CORRUPT | NOTADB => StorageErrorKind::Corrupt,
        _ => StorageErrorKind::Other,
    }
}

/// Adds the operation name to a driver error.
pub(crate) trait Context<T> {
    fn during(self, operation: &'static str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn during(self, operation: &'static str) -> Result<T> {
        self.map_err(|source| {
            if is_lock_timeout(&source) {
                SqlError::LockTimeout {
                    operation,
                    source: Box::new(source),
                }
            } else {
                SqlError::Database {
                    operation,
                    source: Box::new(source),
                }
            }
        })
    }
}

/// True when PostgreSQL gave up waiting for a lock (`lock_not_available`, SQLSTATE 55P03:
/// `lock_timeout` ran out).
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// True when the error is a unique-constraint violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The URL without its password, for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn database_codes_map_to_storage_kinds() {
        assert_eq!(
            classify_sqlstate("22021", ""),
            StorageErrorKind::InvalidInput
        );
        assert_eq!(
            classify_sqlstate("54000", ""),
            StorageErrorKind::InvalidInput
        );
        assert_eq!(
            classify_sqlstate("22001", ""),
            StorageErrorKind::InvalidInput
        );
        assert_eq!(
            classify_sqlstate("40001", ""),
            StorageErrorKind::Unavailable
        );
        assert_eq!(
            classify_sqlstate("40P01", ""),
            StorageErrorKind::Unavailable
        );
        assert_eq!(
            classify_sqlstate("55P03", ""),
            StorageErrorKind::Unavailable
        );
        assert_eq!(
            classify_sqlstate("08006", ""),
            StorageErrorKind::Unavailable
        );
        assert_eq!(classify_sqlstate("23505", ""), StorageErrorKind::Conflict);
        assert_eq!(classify_sqlstate("23503", ""), StorageErrorKind::Constraint);
        assert_eq!(
            classify_sqlstate("42501", "new row violates row-level security policy"),
            StorageErrorKind::TenantMismatch
        );
        assert_eq!(
            classify_sqlstate("42501", "permission denied"),
            StorageErrorKind::Other
        );
        // SQLITE_BUSY_SNAPSHOT (517) is busy; SQLITE_TOOBIG too big; SQLITE_CONSTRAINT_CHECK.
        assert_eq!(classify_sqlite(517), StorageErrorKind::Unavailable);
        assert_eq!(classify_sqlite(18), StorageErrorKind::InvalidInput);
        assert_eq!(classify_sqlite(275), StorageErrorKind::Constraint);
        assert_eq!(
            classify(&sqlx::Error::PoolTimedOut),
            StorageErrorKind::Unavailable
        );
        assert_eq!(
            classify(&sqlx::Error::RowNotFound),
            StorageErrorKind::NotFound
        );
    }

    #[test]
    fn conflict_message_names_both_versions() {
        let e = SqlError::Conflict {
            entity: "invoice",
            id: "x".into(),
            expected: 3,
            actual: Some(4),
        };
        assert_eq!(
            e.to_string(),
            "conflict on invoice x: expected version 3, found 4; reload and retry"
        );
        let gone = SqlError::Conflict {
            entity: "invoice",
            id: "x".into(),
            expected: 3,
            actual: None,
        };
        assert!(gone.to_string().contains("found no row"));
    }
}
