//! The crate's one error type.

use dotmac_core::{CoreError, StorageError};

/// Everything that can go wrong in `dotmac-customers`.
///
/// Every operation that returns one of these has changed nothing: validation happens before
/// any mutation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CustomersError {
    /// An error from the core vocabulary.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A store call failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A record that does not exist in this tenant.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A record that exists already.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// The kind of record.
        what: &'static str,
        /// Its id or key.
        id: String,
    },
    /// A move the lifecycle does not allow.
    #[error("a {what} cannot go from {from} to {to}")]
    InvalidTransition {
        /// `customer` or `service`.
        what: &'static str,
        /// The current state.
        from: &'static str,
        /// The state asked for.
        to: &'static str,
    },
    /// Someone else saved the record since it was read: read it again and retry.
    #[error("{what} {id} was changed concurrently (expected version {expected}); read it again")]
    ConcurrentUpdate {
        /// The kind of record.
        what: &'static str,
        /// Its id.
        id: String,
        /// The version the caller read.
        expected: u64,
    },
    /// Every address of a pool is taken.
    #[error("address pool {pool} has no free address")]
    PoolExhausted {
        /// The pool.
        pool: String,
    },
    /// A static address already assigned to another service.
    #[error("address {address} is already assigned to service {holder}")]
    AddressTaken {
        /// The address.
        address: std::net::Ipv4Addr,
        /// The service holding it.
        holder: String,
    },
    /// Input that cannot be used (a malformed MAC address, an empty name, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl CustomersError {
    /// Whether the same call may succeed later (a store that was unavailable, a concurrent
    /// update).
    pub fn is_retryable(&self) -> bool {
        match self {
            CustomersError::Storage(e) => e.is_retryable(),
            CustomersError::ConcurrentUpdate { .. } => true,
            _ => false,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = CustomersError> = std::result::Result<T, E>;
