//! [`SqlStore`]: the domain crates' storage traits on a [`Database`].

use crate::Database;

/// Implements the storage traits of `dotmac-billing` (catalogue, subscriptions, invoices),
/// `dotmac-usage`, `dotmac-collections` (payments, dunning), `dotmac-support`,
/// `dotmac-partners`, `dotmac-customers` and `dotmac-tenancy` (tenants, settings, users,
/// quotas) on SQLite or PostgreSQL.
///
/// Cheap to clone; every call runs in its own tenant-scoped transaction (multi-record writes
/// such as a billing commit are one transaction).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use dotmac_sqlx::{Database, SqlStore};
/// use dotmac_support::store::ConfigStore;
///
/// let store = SqlStore::new(Database::connect("sqlite::memory:").await?);
/// let config = store.get_config(dotmac_core::TenantId::new()).await.unwrap();
/// assert_eq!(config, None);
/// # Ok::<(), dotmac_sqlx::SqlError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) db: Database,
}

impl SqlStore {
    /// A store on `db`.
    pub fn new(db: Database) -> Self {
        SqlStore { db }
    }

    /// The database underneath (for the outbox relay, bill-run chunks, tenants).
    pub fn database(&self) -> &Database {
        &self.db
    }
}
