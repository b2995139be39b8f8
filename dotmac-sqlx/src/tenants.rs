//! Tenants and idempotency keys.

use chrono::{DateTime, Utc};
use dotmac_core::TenantId;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::docs::Written;
use crate::error::{Context, Result, SqlError};
use crate::input;

/// What [`Database::claim_idempotency_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyClaim {
    /// The key was new and is now recorded with the caller's reference: do the work.
    Claimed,
    /// The key was used before, with this reference: return the earlier result, do nothing.
    Replayed(String),
}

impl Database {
    /// Registers a tenant: active and unmetered (no plan, so no quota), as
    /// [`dotmac_tenancy::Tenant::registered`] makes it; its status, plan, settings and users
    /// are the tenancy store's ([`SqlStore`](crate::SqlStore) implements
    /// `dotmac_tenancy`'s store traits on the same table). Every other call for the tenant
    /// needs the tenant first.
    ///
    /// # Errors
    ///
    /// [`SqlError::Duplicate`] if the tenant exists, [`SqlError::InvalidInput`] for a NUL
    /// character or an oversize name, [`SqlError::Tenancy`] for a blank name or one with a
    /// control character, [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.create_tenant", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name()))]
    pub async fn create_tenant(
        &self,
        tenant: TenantId,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        input::text("tenant name", name)?;
        let record = dotmac_tenancy::Tenant::registered(tenant, name, now)?;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            if d::tenancy::insert_tenant(&mut tx, &record).await? == Written::UniqueViolation {
                return Err(SqlError::Duplicate {
                    what: "tenant",
                    key: tenant.to_string(),
                });
            }
            tx.commit().await.during("commit tenant")
        })
    }

    /// The tenant's name, or `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.tenant_name", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name()))]
    pub async fn tenant_name(&self, tenant: TenantId) -> Result<Option<String>> {
        dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let name: Option<String> =
                sqlx::query_scalar("SELECT name FROM tenants WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await
                    .during("read tenant")?;
            tx.commit().await.during("end read")?;
            Ok(name)
        })
    }

    /// Records an idempotency key of a tenant (unique per `scope`), or finds the reference that
    /// an earlier request with the same key recorded. Concurrent requests with one key: exactly
    /// one gets [`IdempotencyClaim::Claimed`].
    ///
    /// # Errors
    ///
    /// [`SqlError::InvalidInput`] for a NUL character, a scope or key over 1,024 bytes or a
    /// reference over 1 MiB, [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.claim_idempotency_key", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name()))]
    pub async fn claim_idempotency_key(
        &self,
        tenant: TenantId,
        scope: &str,
        key: &str,
        reference: &str,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyClaim> {
        input::key("idempotency scope", scope)?;
        input::key("idempotency key", key)?;
        input::text("idempotency reference", reference)?;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            let claim = d::tenants::claim_idempotency_key(&mut tx, tenant, scope, key, reference, now)
                .await?;
            tx.commit().await.during("commit idempotency key")?;
            Ok(claim)
        })
    }
}

for_each_dialect! {
    /// [`Database::claim_idempotency_key`] inside an open tenant transaction, so that a write
    /// and its key commit (or roll back) together. On PostgreSQL a concurrent claim of the
    /// same key waits on the key's unique index until this transaction ends, then finds it.
    pub(crate) async fn claim_idempotency_key(
        tx: &mut Tx,
        tenant: TenantId,
        scope: &str,
        key: &str,
        reference: &str,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyClaim> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, scope, key, reference, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, scope, key) DO NOTHING",
        )
        .bind(tenant.as_uuid())
        .bind(scope)
        .bind(key)
        .bind(reference)
        .bind(now)
        .execute(&mut **tx)
        .await
        .during("record idempotency key")?
        .rows_affected();
        if inserted == 1 {
            return Ok(IdempotencyClaim::Claimed);
        }
        let earlier = idempotency_reference(tx, tenant, scope, key).await?;
        // The row was there a moment ago and keys are never deleted.
        earlier.map(IdempotencyClaim::Replayed).ok_or(SqlError::Duplicate {
            what: "idempotency key",
            key: key.to_owned(),
        })
    }

    /// The reference recorded with a key, if any.
    pub(crate) async fn idempotency_reference(
        tx: &mut Tx,
        tenant: TenantId,
        scope: &str,
        key: &str,
    ) -> Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT reference FROM idempotency_keys \
             WHERE tenant_id = $1 AND scope = $2 AND key = $3",
        )
        .bind(tenant.as_uuid())
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await
        .during("read idempotency key")
    }
}
