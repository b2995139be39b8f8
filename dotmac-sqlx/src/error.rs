//! The crate's one error type.

use std::error::Error as StdError;

use dotmac_core::CoreError;

/// A boxed driver error: kept opaque so that sqlx's types stay out of DotMac's public API.
pub type BoxedSource = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in `dotmac-sqlx`.
///
/// Concurrency outcomes that a caller is expected to handle ([`SqlError::Conflict`],
/// [`SqlError::LeaseLost`], [`SqlError::Duplicate`]) are typed variants; everything the database
/// or the driver reports otherwise is [`SqlError::Database`] with the operation that failed.
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
    Billing(#[from] dotmac_billing::BillingError),
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

/// `Result` with [`SqlError`].
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

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
