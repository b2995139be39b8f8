//! `dotmac-tenancy`'s storage traits: tenants (the registry's `tenants` table), settings
//! layers, users and roles, quota counts and platform measurements.
//!
//! Every write runs in one tenant transaction that first reads the tenant's row — on
//! PostgreSQL `FOR SHARE`, so that a concurrent status change (archiving) waits for the write
//! to commit; on SQLite under the write lock `BEGIN IMMEDIATE` took — and applies the tenancy
//! domain's own checks to it ([`Tenant::ensure`], [`Tenant::admit`]). Counted quotas lock the
//! tenant's counter row (`INSERT … ON CONFLICT DO UPDATE … RETURNING`, which holds the row
//! until commit on PostgreSQL) before counting, so concurrent admissions queue on it; the
//! hourly rate quota is one conditional upsert of the hour's window row.

use chrono::{DateTime, Utc};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{CustomerId, TenantId};
use dotmac_tenancy::{
    AccessStore, CustomerSettings, Limit, Operation, PlatformMetric, PlatformUsage, Quota,
    QuotaReport, QuotaStore, QuotaUse, RateUse, Role, SettingsLayer, SettingsStore, TenancyError,
    Tenant, TenantStatus, TenantStore, TenantUser, UsageRecord, UserId, UserStatus, rate_window,
};
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::docs::{Bind, Written, from_json, json};
use crate::error::{Context, SqlError};
use crate::store::SqlStore;

type Result<T> = std::result::Result<T, TenancyError>;

/// Storage failures as tenancy errors: the domain's own refusals pass through, every other
/// failure is [`TenancyError::Storage`] with its kind and cause.
pub(crate) fn storage(error: SqlError) -> TenancyError {
    match error {
        SqlError::Tenancy(tenancy) => tenancy,
        SqlError::Core(core) => TenancyError::Core(core),
        other => TenancyError::Storage(other.into()),
    }
}

fn id(tenant: TenantId) -> Bind {
    Bind::Uuid(tenant.as_uuid())
}

/// A count as the database keeps it (`bigint`).
fn signed(what: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| TenancyError::TooLarge { what, value })
}

/// A count read back (never negative: the columns' checks).
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The members of one admission, each once.
fn distinct(members: &[Uuid]) -> Vec<Uuid> {
    let mut seen = std::collections::BTreeSet::new();
    members
        .iter()
        .copied()
        .filter(|m| seen.insert(*m))
        .collect()
}

fn mismatch(user: &TenantUser, tenant: TenantId) -> TenancyError {
    storage(SqlError::TenantMismatch {
        what: "user",
        id: user.id().to_string(),
        expected: tenant,
        found: user.tenant(),
    })
}

for_each_dialect! {
    shared {
        /// The tenant of a `tenants` row (`name, created_at, version, body`). A row of the
        /// registry from before the tenancy store (no body) is an active, unmetered tenant.
        pub(crate) fn tenant_of_row(tenant: TenantId, row: &DbRow) -> std::result::Result<Tenant, SqlError> {
            let version: i64 = row.try_get("version").during("read tenant")?;
            let body: Option<Json<serde_json::Value>> = row.try_get("body").during("read tenant")?;
            let record = match body {
                Some(body) => from_json::<Tenant>("tenant", body.0)?,
                None => {
                    let name: String = row.try_get("name").during("read tenant")?;
                    let created_at: DateTime<Utc> =
                        row.try_get("created_at").during("read tenant")?;
                    Tenant::registered(tenant, &name, created_at).map_err(|e| SqlError::Corrupt {
                        what: "tenant",
                        detail: e.to_string(),
                    })?
                }
            };
            if record.id() != tenant {
                return Err(SqlError::Corrupt {
                    what: "tenant",
                    detail: format!("the row of {tenant} holds tenant {}", record.id()),
                });
            }
            Ok(record.at_version(unsigned(version)))
        }

        /// A page of every tenant, in id order, after `after` (see
        /// [`TenantStore::list_tenants`]).
        pub(crate) async fn list_tenants(
            tx: &mut Tx,
            after: Option<TenantId>,
            limit: i64,
        ) -> std::result::Result<Vec<Tenant>, SqlError> {
            let rows = match after {
                None => sqlx::query(
                    "SELECT tenant_id, name, created_at, version, body FROM tenants \
                     ORDER BY tenant_id LIMIT $1",
                )
                .bind(limit),
                Some(after) => sqlx::query(
                    "SELECT tenant_id, name, created_at, version, body FROM tenants \
                     WHERE tenant_id > $2 ORDER BY tenant_id LIMIT $1",
                )
                .bind(limit)
                .bind(after.as_uuid()),
            }
            .fetch_all(&mut **tx)
            .await
            .during("list tenants")?;
            rows.iter()
                .map(|row| {
                    let id: Uuid = row.try_get("tenant_id").during("list tenants")?;
                    tenant_of_row(TenantId::from_uuid(id), row)
                })
                .collect()
        }

        /// The tenant, as read now.
        pub(crate) async fn read_tenant(tx: &mut Tx, tenant: TenantId) -> std::result::Result<Option<Tenant>, SqlError> {
            let row = sqlx::query(
                "SELECT name, created_at, version, body FROM tenants WHERE tenant_id = $1",
            )
            .bind(tenant.as_uuid())
            .fetch_optional(&mut **tx)
            .await
            .during("read tenant")?;
            row.map(|row| tenant_of_row(tenant, &row)).transpose()
        }

        /// The tenant a write is for, held against a concurrent status change until the
        /// transaction ends.
        pub(crate) async fn tenant_for_write(tx: &mut Tx, tenant: TenantId) -> Result<Tenant> {
            let row = sqlx::query(TENANT_FOR_WRITE)
                .bind(tenant.as_uuid())
                .fetch_optional(&mut **tx)
                .await
                .during("read tenant for write")
                .map_err(storage)?;
            match row {
                Some(row) => tenant_of_row(tenant, &row).map_err(storage),
                None => Err(TenancyError::UnknownTenant(tenant)),
            }
        }

        /// Inserts a new tenant at version 1.
        pub(crate) async fn insert_tenant(tx: &mut Tx, tenant: &Tenant) -> std::result::Result<Written, SqlError> {
            docs::execute(
                tx,
                "INSERT INTO tenants (tenant_id, name, created_at, status, version, body) \
                 VALUES ($1, $2, $3, $4, 1, $5)",
                &[
                    id(tenant.id()),
                    Bind::Text(tenant.name().to_owned()),
                    Bind::Time(tenant.created_at()),
                    Bind::Text(tenant.status().as_str().to_owned()),
                    json("tenant", tenant)?,
                ],
            )
            .await
        }

        /// Locks the tenant's counter of `quota` (creating it at zero) and returns its count.
        pub(crate) async fn lock_counter(tx: &mut Tx, tenant: TenantId, quota: Quota) -> Result<u64> {
            let used: i64 = sqlx::query_scalar(
                "INSERT INTO tenancy_quota_counters (tenant_id, quota, used) VALUES ($1, $2, 0) \
                 ON CONFLICT (tenant_id, quota) DO UPDATE SET used = tenancy_quota_counters.used \
                 RETURNING used",
            )
            .bind(tenant.as_uuid())
            .bind(quota.as_str())
            .fetch_one(&mut **tx)
            .await
            .during("lock quota counter")
            .map_err(storage)?;
            Ok(unsigned(used))
        }

        pub(crate) async fn set_counter(tx: &mut Tx, tenant: TenantId, quota: Quota, used: u64) -> Result<()> {
            sqlx::query(
                "UPDATE tenancy_quota_counters SET used = $3 WHERE tenant_id = $1 AND quota = $2",
            )
            .bind(tenant.as_uuid())
            .bind(quota.as_str())
            .bind(signed("quota use", used)?)
            .execute(&mut **tx)
            .await
            .during("count quota")
            .map_err(storage)?;
            Ok(())
        }

        /// Counts `members` against `quota` of `record` from `at`, all or none (the caller
        /// rolls back on an error): the counter is locked first, then the members new to the
        /// count are written, then the domain's check decides.
        pub(crate) async fn admit(
            tx: &mut Tx,
            record: &Tenant,
            quota: Quota,
            members: &[Uuid],
            at: DateTime<Utc>,
        ) -> Result<QuotaUse> {
            let tenant = record.id();
            let used = lock_counter(tx, tenant, quota).await?;
            let fresh = insert_members(tx, tenant, quota, &distinct(members), at).await?;
            record.admit(quota, used, fresh)?;
            let now = used.saturating_add(fresh);
            set_counter(tx, tenant, quota, now).await?;
            Ok(QuotaUse::new(quota, record.limit(quota), now))
        }

        /// Stops counting `members` from `at`.
        pub(crate) async fn release(
            tx: &mut Tx,
            record: &Tenant,
            quota: Quota,
            members: &[Uuid],
            at: DateTime<Utc>,
        ) -> Result<QuotaUse> {
            let tenant = record.id();
            let used = lock_counter(tx, tenant, quota).await?;
            let released = release_members(tx, tenant, quota, &distinct(members), at).await?;
            let now = used.saturating_sub(released);
            set_counter(tx, tenant, quota, now).await?;
            Ok(QuotaUse::new(quota, record.limit(quota), now))
        }

        /// The count of `quota`, read without locking.
        pub(crate) async fn counted(tx: &mut Tx, tenant: TenantId, quota: Quota) -> Result<u64> {
            let used: Option<i64> = sqlx::query_scalar(
                "SELECT used FROM tenancy_quota_counters WHERE tenant_id = $1 AND quota = $2",
            )
            .bind(tenant.as_uuid())
            .bind(quota.as_str())
            .fetch_optional(&mut **tx)
            .await
            .during("read quota counter")
            .map_err(storage)?;
            Ok(used.map_or(0, unsigned))
        }

        /// The calls counted in the window starting at `window`.
        pub(crate) async fn window_use(tx: &mut Tx, tenant: TenantId, window: DateTime<Utc>) -> Result<u64> {
            let used: Option<i64> = sqlx::query_scalar(
                "SELECT used FROM tenancy_rate_windows \
                 WHERE tenant_id = $1 AND quota = $2 AND window_start = $3",
            )
            .bind(tenant.as_uuid())
            .bind(Quota::ApiCallsPerHour.as_str())
            .bind(window)
            .fetch_optional(&mut **tx)
            .await
            .during("read rate window")
            .map_err(storage)?;
            Ok(used.map_or(0, unsigned))
        }

        /// Counts `calls` in `at`'s window if they fit under the limit: one statement, so that
        /// processes sharing the database never both take the last calls of an hour.
        pub(crate) async fn admit_calls(
            tx: &mut Tx,
            record: &Tenant,
            calls: u64,
            at: DateTime<Utc>,
        ) -> Result<RateUse> {
            record.ensure(Operation::ServeApi)?;
            let tenant = record.id();
            let (window, _) = rate_window(at);
            let limit = record.limit(Quota::ApiCallsPerHour);
            let bound = match limit {
                Limit::Unlimited => i64::MAX,
                Limit::AtMost(limit) => i64::try_from(limit).unwrap_or(i64::MAX),
            };
            // `used <= bound - calls`, not `used + calls <= bound`: neither side can overflow.
            let used: Option<i64> = sqlx::query_scalar(
                "INSERT INTO tenancy_rate_windows (tenant_id, quota, window_start, used) \
                 SELECT $1, $2, $3, $4 WHERE $4 <= $5 \
                 ON CONFLICT (tenant_id, quota, window_start) DO UPDATE \
                 SET used = tenancy_rate_windows.used + excluded.used \
                 WHERE tenancy_rate_windows.used <= $5 - excluded.used \
                 RETURNING used",
            )
            .bind(tenant.as_uuid())
            .bind(Quota::ApiCallsPerHour.as_str())
            .bind(window)
            .bind(signed("API calls", calls)?)
            .bind(bound)
            .fetch_optional(&mut **tx)
            .await
            .during("count API calls")
            .map_err(storage)?;
            match used {
                Some(used) => Ok(RateUse::new(limit, unsigned(used), at)),
                None => {
                    let used = window_use(tx, tenant, window).await?;
                    record.admit(Quota::ApiCallsPerHour, used, calls)?;
                    // Unreachable while the statement and `Tenant::admit` agree (the window
                    // was read after the refusal, in this transaction); should they ever
                    // disagree, refuse as a conflict rather than count.
                    Err(storage(SqlError::Conflict {
                        entity: "rate window",
                        id: window.to_rfc3339(),
                        expected: signed("quota use", used)?,
                        actual: None,
                    }))
                }
            }
        }

        /// Every user of the tenant, as read now.
        pub(crate) async fn users(tx: &mut Tx, tenant: TenantId) -> Result<Vec<TenantUser>> {
            let bodies: Vec<Json<serde_json::Value>> = sqlx::query_scalar(
                "SELECT body FROM tenancy_users WHERE tenant_id = $1 ORDER BY user_id",
            )
            .bind(tenant.as_uuid())
            .fetch_all(&mut **tx)
            .await
            .during("read users")
            .map_err(storage)?;
            bodies
                .into_iter()
                .map(|b| from_json::<TenantUser>("user", b.0).map_err(storage))
                .collect()
        }

        /// The user's stored record, held until the transaction ends.
        pub(crate) async fn user_for_write(tx: &mut Tx, tenant: TenantId, user: UserId) -> Result<Option<TenantUser>> {
            let body: Option<Json<serde_json::Value>> = sqlx::query_scalar(USER_FOR_WRITE)
                .bind(tenant.as_uuid())
                .bind(user.as_uuid())
                .fetch_optional(&mut **tx)
                .await
                .during("read user for write")
                .map_err(storage)?;
            body.map(|b| from_json::<TenantUser>("user", b.0).map_err(storage))
                .transpose()
        }

        /// Whether another user of the tenant has `user`'s subject.
        pub(crate) async fn subject_taken(tx: &mut Tx, tenant: TenantId, user: &TenantUser) -> Result<bool> {
            let other: Option<Uuid> = sqlx::query_scalar(
                "SELECT user_id FROM tenancy_users WHERE tenant_id = $1 AND subject = $2",
            )
            .bind(tenant.as_uuid())
            .bind(user.subject())
            .fetch_optional(&mut **tx)
            .await
            .during("read user subject")
            .map_err(storage)?;
            Ok(other.is_some_and(|id| id != user.id().as_uuid()))
        }

        pub(crate) async fn write_user(tx: &mut Tx, tenant: TenantId, user: &TenantUser, insert: bool) -> Result<()> {
            let binds = [
                id(tenant),
                Bind::Uuid(user.id().as_uuid()),
                Bind::Text(user.subject().to_owned()),
                json("user", user).map_err(storage)?,
            ];
            let sql = if insert {
                "INSERT INTO tenancy_users (tenant_id, user_id, subject, body) VALUES ($1, $2, $3, $4)"
            } else {
                "UPDATE tenancy_users SET subject = $3, body = $4 WHERE tenant_id = $1 AND user_id = $2"
            };
            match docs::execute(tx, sql, &binds).await.map_err(storage)? {
                Written::UniqueViolation => Err(TenancyError::AlreadyExists {
                    what: "user subject",
                    id: user.subject().to_owned(),
                }),
                Written::Rows(_) => Ok(()),
            }
        }

        /// A sum or count of the tenancy tables over `[from, to)` (`$2`, `$3`) of one key (`$4`).
        pub(crate) async fn figure(
            tx: &mut Tx,
            sql: &'static str,
            tenant: TenantId,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
            key: &str,
        ) -> Result<u64> {
            let value: i64 = sqlx::query_scalar(sql)
                .bind(tenant.as_uuid())
                .bind(from)
                .bind(to)
                .bind(key)
                .fetch_one(&mut **tx)
                .await
                .during("read platform usage")
                .map_err(storage)?;
            Ok(unsigned(value))
        }

        /// The customers counted at `at`.
        pub(crate) async fn customers_at(tx: &mut Tx, tenant: TenantId, at: DateTime<Utc>) -> Result<u64> {
            let value: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM tenancy_quota_members WHERE tenant_id = $1 AND quota = $2 \
                 AND since < $3 AND (until IS NULL OR until >= $3)",
            )
            .bind(tenant.as_uuid())
            .bind(Quota::Customers.as_str())
            .bind(at)
            .fetch_one(&mut **tx)
            .await
            .during("read platform usage")
            .map_err(storage)?;
            Ok(unsigned(value))
        }
    }
    sqlite {
        /// SQLite has no row locks: the write lock of `BEGIN IMMEDIATE` holds the tenant.
        const TENANT_FOR_WRITE: &str =
            "SELECT name, created_at, version, body FROM tenants WHERE tenant_id = $1";
        const USER_FOR_WRITE: &str =
            "SELECT body FROM tenancy_users WHERE tenant_id = $1 AND user_id = $2";

        /// Writes the members new to the count (or counted again after a release); returns
        /// how many.
        pub(crate) async fn insert_members(
            tx: &mut Tx,
            tenant: TenantId,
            quota: Quota,
            members: &[Uuid],
            at: DateTime<Utc>,
        ) -> Result<u64> {
            let mut fresh = 0_u64;
            for member in members {
                let done = sqlx::query(
                    "INSERT INTO tenancy_quota_members (tenant_id, quota, member_id, since, until) \
                     VALUES ($1, $2, $3, $4, NULL) \
                     ON CONFLICT (tenant_id, quota, member_id) DO UPDATE \
                     SET since = excluded.since, until = NULL \
                     WHERE tenancy_quota_members.until IS NOT NULL",
                )
                .bind(tenant.as_uuid())
                .bind(quota.as_str())
                .bind(*member)
                .bind(at)
                .execute(&mut **tx)
                .await
                .during("count quota member")
                .map_err(storage)?;
                fresh = fresh.saturating_add(done.rows_affected());
            }
            Ok(fresh)
        }

        pub(crate) async fn release_members(
            tx: &mut Tx,
            tenant: TenantId,
            quota: Quota,
            members: &[Uuid],
            at: DateTime<Utc>,
        ) -> Result<u64> {
            let mut released = 0_u64;
            for member in members {
                let done = sqlx::query(
                    "UPDATE tenancy_quota_members SET until = $4 \
                     WHERE tenant_id = $1 AND quota = $2 AND member_id = $3 AND until IS NULL",
                )
                .bind(tenant.as_uuid())
                .bind(quota.as_str())
                .bind(*member)
                .bind(at)
                .execute(&mut **tx)
                .await
                .during("release quota member")
                .map_err(storage)?;
                released = released.saturating_add(done.rows_affected());
            }
            Ok(released)
        }
    }
    postgres {
        /// `FOR SHARE`: a status change (an `UPDATE` of the row) waits for this write.
        const TENANT_FOR_WRITE: &str =
            "SELECT name, created_at, version, body FROM tenants WHERE tenant_id = $1 FOR SHARE";
        const USER_FOR_WRITE: &str =
            "SELECT body FROM tenancy_users WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE";

        /// Writes the members new to the count (or counted again after a release) in one
        /// statement; returns how many.
        pub(crate) async fn insert_members(
            tx: &mut Tx,
            tenant: TenantId,
            quota: Quota,
            members: &[Uuid],
            at: DateTime<Utc>,
        ) -> Result<u64> {
            if members.is_empty() {
                return Ok(0);
            }
            let done = sqlx::query(
                "INSERT INTO tenancy_quota_members (tenant_id, quota, member_id, since, until) \
                 SELECT $1, $2, m, $4, NULL FROM UNNEST($3::uuid[]) AS m \
                 ON CONFLICT (tenant_id, quota, member_id) DO UPDATE \
                 SET since = excluded.since, until = NULL \
                 WHERE tenancy_quota_members.until IS NOT NULL",
            )
            .bind(tenant.as_uuid())
            .bind(quota.as_str())
            .bind(members)
            .bind(at)
            .execute(&mut **tx)
            .await
            .during("count quota members")
            .map_err(storage)?;
            Ok(done.rows_affected())
        }

        pub(crate) async fn release_members(
            tx: &mut Tx,
            tenant: TenantId,
            quota: Quota,
            members: &[Uuid],
            at: DateTime<Utc>,
        ) -> Result<u64> {
            let done = sqlx::query(
                "UPDATE tenancy_quota_members SET until = $4 \
                 WHERE tenant_id = $1 AND quota = $2 AND member_id = ANY($3) AND until IS NULL",
            )
            .bind(tenant.as_uuid())
            .bind(quota.as_str())
            .bind(members)
            .bind(at)
            .execute(&mut **tx)
            .await
            .during("release quota members")
            .map_err(storage)?;
            Ok(done.rows_affected())
        }
    }
}

impl Database {
    /// The tenant as the tenancy store keeps it (a registry tenant reads as active and
    /// unmetered), or `None`.
    ///
    /// # Errors
    ///
    /// [`SqlError::Corrupt`] for a row that does not decode, [`SqlError::Database`].
    pub(crate) async fn list_tenant_records(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> crate::Result<Vec<Tenant>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        dispatch!(self, pool, d => {
            let mut tx = d::begin_platform_read(pool).await?;
            let page = d::tenancy::list_tenants(&mut tx, after, limit).await?;
            tx.commit().await.during("end read")?;
            Ok(page)
        })
    }

    /// The tenant (a tenant registered before the tenancy store reads as active and
    /// unmetered), or `None`.
    ///
    /// # Errors
    ///
    /// [`SqlError::Corrupt`] for a row that does not decode, [`SqlError::Database`].
    pub(crate) async fn read_tenant_record(
        &self,
        tenant: TenantId,
    ) -> crate::Result<Option<Tenant>> {
        dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let record = d::tenancy::read_tenant(&mut tx, tenant).await?;
            tx.commit().await.during("end read")?;
            Ok(record)
        })
    }
}

impl SqlStore {
    /// Runs `write` in a tenant transaction after reading the tenant for the write (see the
    /// module docs), then writes `events` and commits; on an error nothing is written.
    async fn tenant_write<T>(
        &self,
        tenant: TenantId,
        events: &[OutboxEvent],
        write: WriteKind<'_>,
    ) -> Result<T>
    where
        T: FromWrite,
    {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let record = d::tenancy::tenant_for_write(&mut tx, tenant).await?;
            let out = match write {
                WriteKind::TenantSettings(settings) => {
                    record.ensure(Operation::Configure)?;
                    d::docs::execute(
                        &mut tx,
                        "INSERT INTO tenancy_settings (tenant_id, body) VALUES ($1, $2) \
                         ON CONFLICT (tenant_id) DO UPDATE SET body = excluded.body",
                        &[id(tenant), json("tenant settings", settings).map_err(storage)?],
                    )
                    .await
                    .map_err(storage)?;
                    Outcome::Done
                }
                WriteKind::CustomerSettings(customer, settings) => {
                    record.ensure(Operation::Configure)?;
                    d::docs::execute(
                        &mut tx,
                        "INSERT INTO tenancy_customer_settings (tenant_id, customer_id, body) \
                         VALUES ($1, $2, $3) \
                         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET body = excluded.body",
                        &[
                            id(tenant),
                            Bind::Uuid(customer.as_uuid()),
                            json("customer settings", settings).map_err(storage)?,
                        ],
                    )
                    .await
                    .map_err(storage)?;
                    Outcome::Done
                }
                WriteKind::Role(role) => {
                    record.ensure(Operation::Configure)?;
                    d::docs::execute(
                        &mut tx,
                        "INSERT INTO tenancy_roles (tenant_id, role_name, body) VALUES ($1, $2, $3) \
                         ON CONFLICT (tenant_id, role_name) DO UPDATE SET body = excluded.body",
                        &[
                            id(tenant),
                            Bind::Text(role.name().as_str().to_owned()),
                            json("role", role).map_err(storage)?,
                        ],
                    )
                    .await
                    .map_err(storage)?;
                    Outcome::Done
                }
                WriteKind::NewUser(user) => {
                    record.ensure(Operation::Configure)?;
                    if d::tenancy::user_for_write(&mut tx, tenant, user.id()).await?.is_some() {
                        return Err(TenancyError::AlreadyExists {
                            what: "user",
                            id: user.id().to_string(),
                        });
                    }
                    if d::tenancy::subject_taken(&mut tx, tenant, user).await? {
                        return Err(TenancyError::AlreadyExists {
                            what: "user subject",
                            id: user.subject().to_owned(),
                        });
                    }
                    d::tenancy::write_user(&mut tx, tenant, user, true).await?;
                    let used = if user.status() == UserStatus::Active {
                        let member = [user.id().as_uuid()];
                        d::tenancy::admit(&mut tx, &record, Quota::AdminUsers, &member, user.created_at()).await?
                    } else {
                        QuotaUse::new(
                            Quota::AdminUsers,
                            record.limit(Quota::AdminUsers),
                            d::tenancy::counted(&mut tx, tenant, Quota::AdminUsers).await?,
                        )
                    };
                    Outcome::Quota(used)
                }
                WriteKind::User(user, at) => {
                    record.ensure(Operation::Configure)?;
                    if !user.is_active_owner() {
                        // Every change that may demote an owner queues on the admin-user
                        // counter first, so that two demotions of the last two owners see
                        // each other (the last-owner rule below).
                        d::tenancy::lock_counter(&mut tx, tenant, Quota::AdminUsers).await?;
                    }
                    let stored = d::tenancy::user_for_write(&mut tx, tenant, user.id())
                        .await?
                        .ok_or(TenancyError::UnknownUser(user.id()))?;
                    if stored.is_active_owner() && !user.is_active_owner() {
                        let others = d::tenancy::users(&mut tx, tenant).await?;
                        dotmac_tenancy::ensure_owner_remains(&stored, user, &others)?;
                    }
                    if d::tenancy::subject_taken(&mut tx, tenant, user).await? {
                        return Err(TenancyError::AlreadyExists {
                            what: "user subject",
                            id: user.subject().to_owned(),
                        });
                    }
                    d::tenancy::write_user(&mut tx, tenant, user, false).await?;
                    let member = [user.id().as_uuid()];
                    let used = match (stored.status(), user.status()) {
                        (UserStatus::Disabled, UserStatus::Active) => {
                            d::tenancy::admit(&mut tx, &record, Quota::AdminUsers, &member, at).await?
                        }
                        (UserStatus::Active, UserStatus::Disabled) => {
                            d::tenancy::release(&mut tx, &record, Quota::AdminUsers, &member, at).await?
                        }
                        _ => QuotaUse::new(
                            Quota::AdminUsers,
                            record.limit(Quota::AdminUsers),
                            d::tenancy::counted(&mut tx, tenant, Quota::AdminUsers).await?,
                        ),
                    };
                    Outcome::Quota(used)
                }
                WriteKind::AdmitCustomers(members, at) => Outcome::Quota(
                    d::tenancy::admit(&mut tx, &record, Quota::Customers, &members, at).await?,
                ),
                WriteKind::ReleaseCustomers(members, at) => {
                    record.ensure(Operation::Configure)?;
                    Outcome::Quota(
                        d::tenancy::release(&mut tx, &record, Quota::Customers, &members, at).await?,
                    )
                }
                WriteKind::ApiCalls(calls, at) => {
                    Outcome::Rate(d::tenancy::admit_calls(&mut tx, &record, calls, at).await?)
                }
            };
            d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
            tx.commit().await.during("commit tenancy write").map_err(storage)?;
            T::from_write(out)
        })
    }
}

/// What [`SqlStore::tenant_write`] does inside its transaction.
enum WriteKind<'a> {
    TenantSettings(&'a SettingsLayer),
    CustomerSettings(CustomerId, &'a CustomerSettings),
    Role(&'a Role),
    NewUser(&'a TenantUser),
    User(&'a TenantUser, DateTime<Utc>),
    AdmitCustomers(Vec<Uuid>, DateTime<Utc>),
    ReleaseCustomers(Vec<Uuid>, DateTime<Utc>),
    ApiCalls(u64, DateTime<Utc>),
}

/// What a write returned.
enum Outcome {
    Done,
    Quota(QuotaUse),
    Rate(RateUse),
}

/// The result type of a kind of write.
trait FromWrite: Sized {
    fn from_write(outcome: Outcome) -> Result<Self>;
}

fn mismatched_outcome() -> TenancyError {
    storage(SqlError::Corrupt {
        what: "tenancy write",
        detail: "a write returned another kind of result".into(),
    })
}

impl FromWrite for () {
    fn from_write(outcome: Outcome) -> Result<Self> {
        match outcome {
            Outcome::Done => Ok(()),
            _ => Err(mismatched_outcome()),
        }
    }
}

impl FromWrite for QuotaUse {
    fn from_write(outcome: Outcome) -> Result<Self> {
        match outcome {
            Outcome::Quota(used) => Ok(used),
            _ => Err(mismatched_outcome()),
        }
    }
}

impl FromWrite for RateUse {
    fn from_write(outcome: Outcome) -> Result<Self> {
        match outcome {
            Outcome::Rate(used) => Ok(used),
            _ => Err(mismatched_outcome()),
        }
    }
}

impl TenantStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.insert_tenant", level = "debug", skip_all, fields(tenant = %tenant.id(), backend = self.db.backend_name()))]
    async fn insert_tenant(&self, tenant: &Tenant, events: &[OutboxEvent]) -> Result<()> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant.id()).await.map_err(storage)?;
            if d::tenancy::insert_tenant(&mut tx, tenant).await.map_err(storage)?
                == Written::UniqueViolation
            {
                return Err(TenancyError::AlreadyExists {
                    what: "tenant",
                    id: tenant.id().to_string(),
                });
            }
            d::outbox::insert_core(&mut tx, tenant.id(), events).await.map_err(storage)?;
            tx.commit().await.during("commit tenant").map_err(storage)
        })
    }

    #[tracing::instrument(name = "dotmac.store.tenant", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn tenant(&self, tenant: TenantId) -> Result<Option<Tenant>> {
        self.db.read_tenant_record(tenant).await.map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.list_tenants", level = "debug", skip_all, fields(backend = self.db.backend_name(), limit = limit))]
    async fn list_tenants(&self, after: Option<TenantId>, limit: usize) -> Result<Vec<Tenant>> {
        self.db
            .list_tenant_records(after, limit)
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.save_tenant", level = "debug", skip_all, fields(tenant = %tenant.id(), backend = self.db.backend_name()))]
    async fn save_tenant(&self, tenant: &Tenant, events: &[OutboxEvent]) -> Result<u64> {
        let expected = signed("tenant version", tenant.version())?;
        let next = expected.saturating_add(1);
        let binds = [
            id(tenant.id()),
            Bind::Text(tenant.name().to_owned()),
            Bind::Text(tenant.status().as_str().to_owned()),
            json("tenant", tenant).map_err(storage)?,
            Bind::I64(expected),
            Bind::I64(next),
        ];
        crate::input::text("tenant name", tenant.name()).map_err(storage)?;
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant.id()).await.map_err(storage)?;
            let written = d::docs::execute(
                &mut tx,
                "UPDATE tenants SET name = $2, status = $3, body = $4, version = $6 \
                 WHERE tenant_id = $1 AND version = $5 AND status <> 'archived'",
                &binds,
            )
            .await
            .map_err(storage)?;
            if written != Written::Rows(1) {
                let stored = d::tenancy::read_tenant(&mut tx, tenant.id()).await.map_err(storage)?;
                return Err(match stored {
                    None => TenancyError::UnknownTenant(tenant.id()),
                    Some(s) if s.status() == TenantStatus::Archived => {
                        TenancyError::TenantArchived { tenant: tenant.id() }
                    }
                    Some(_) => TenancyError::Conflict {
                        what: "tenant",
                        id: tenant.id().to_string(),
                        expected: tenant.version(),
                    },
                });
            }
            d::outbox::insert_core(&mut tx, tenant.id(), events).await.map_err(storage)?;
            tx.commit().await.during("commit tenant").map_err(storage)?;
            Ok(unsigned(next))
        })
    }
}

impl SettingsStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.tenant_settings", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn tenant_settings(&self, tenant: TenantId) -> Result<SettingsLayer> {
        let layer: Option<SettingsLayer> = self
            .db
            .read_one(
                tenant,
                "tenant settings",
                "SELECT body FROM tenancy_settings WHERE tenant_id = $1",
                &[id(tenant)],
            )
            .await
            .map_err(storage)?;
        Ok(layer.unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.put_tenant_settings", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_tenant_settings(
        &self,
        tenant: TenantId,
        settings: &SettingsLayer,
        events: &[OutboxEvent],
    ) -> Result<()> {
        self.tenant_write(tenant, events, WriteKind::TenantSettings(settings))
            .await
    }

    #[tracing::instrument(name = "dotmac.store.customer_settings", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn customer_settings(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<CustomerSettings> {
        let settings: Option<CustomerSettings> = self
            .db
            .read_one(
                tenant,
                "customer settings",
                "SELECT body FROM tenancy_customer_settings \
                 WHERE tenant_id = $1 AND customer_id = $2",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)?;
        Ok(settings.unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.put_customer_settings", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_customer_settings(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        settings: &CustomerSettings,
        events: &[OutboxEvent],
    ) -> Result<()> {
        self.tenant_write(
            tenant,
            events,
            WriteKind::CustomerSettings(customer, settings),
        )
        .await
    }
}

impl AccessStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.insert_user", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn insert_user(
        &self,
        tenant: TenantId,
        user: &TenantUser,
        events: &[OutboxEvent],
    ) -> Result<QuotaUse> {
        if user.tenant() != tenant {
            return Err(mismatch(user, tenant));
        }
        crate::input::key("user subject", user.subject()).map_err(storage)?;
        self.tenant_write(tenant, events, WriteKind::NewUser(user))
            .await
    }

    #[tracing::instrument(name = "dotmac.store.save_user", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn save_user(
        &self,
        tenant: TenantId,
        user: &TenantUser,
        at: DateTime<Utc>,
        events: &[OutboxEvent],
    ) -> Result<QuotaUse> {
        if user.tenant() != tenant {
            return Err(mismatch(user, tenant));
        }
        crate::input::key("user subject", user.subject()).map_err(storage)?;
        self.tenant_write(tenant, events, WriteKind::User(user, at))
            .await
    }

    #[tracing::instrument(name = "dotmac.store.tenant_user", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn tenant_user(&self, tenant: TenantId, user: UserId) -> Result<Option<TenantUser>> {
        self.db
            .read_one(
                tenant,
                "user",
                "SELECT body FROM tenancy_users WHERE tenant_id = $1 AND user_id = $2",
                &[id(tenant), Bind::Uuid(user.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.user_by_subject", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn user_by_subject(&self, tenant: TenantId, subject: &str) -> Result<Option<TenantUser>> {
        crate::input::key("user subject", subject).map_err(storage)?;
        self.db
            .read_one(
                tenant,
                "user",
                "SELECT body FROM tenancy_users WHERE tenant_id = $1 AND subject = $2",
                &[id(tenant), Bind::Text(subject.to_owned())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.tenant_users", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn tenant_users(&self, tenant: TenantId) -> Result<Vec<TenantUser>> {
        self.db
            .read_all(
                tenant,
                "user",
                "SELECT body FROM tenancy_users WHERE tenant_id = $1 ORDER BY user_id",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.put_role", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_role(&self, tenant: TenantId, role: &Role, events: &[OutboxEvent]) -> Result<()> {
        if role.name().is_built_in() {
            return Err(TenancyError::BuiltInRole(role.name().clone()));
        }
        self.tenant_write(tenant, events, WriteKind::Role(role))
            .await
    }

    #[tracing::instrument(name = "dotmac.store.tenant_roles", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn tenant_roles(&self, tenant: TenantId) -> Result<Vec<Role>> {
        self.db
            .read_all(
                tenant,
                "role",
                "SELECT body FROM tenancy_roles WHERE tenant_id = $1 ORDER BY role_name",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }
}

impl QuotaStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.admit_customers", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), customers = customers.len()))]
    async fn admit_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
        at: DateTime<Utc>,
    ) -> Result<QuotaUse> {
        let members = customers.iter().map(CustomerId::as_uuid).collect();
        self.tenant_write(tenant, &[], WriteKind::AdmitCustomers(members, at))
            .await
    }

    #[tracing::instrument(name = "dotmac.store.release_customers", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), customers = customers.len()))]
    async fn release_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
        at: DateTime<Utc>,
    ) -> Result<QuotaUse> {
        let members = customers.iter().map(CustomerId::as_uuid).collect();
        self.tenant_write(tenant, &[], WriteKind::ReleaseCustomers(members, at))
            .await
    }

    #[tracing::instrument(name = "dotmac.store.admit_api_calls", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), calls = calls))]
    async fn admit_api_calls(
        &self,
        tenant: TenantId,
        calls: u64,
        at: DateTime<Utc>,
    ) -> Result<RateUse> {
        signed("API calls", calls)?;
        self.tenant_write(tenant, &[], WriteKind::ApiCalls(calls, at))
            .await
    }

    #[tracing::instrument(name = "dotmac.store.quota_use", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn quota_use(&self, tenant: TenantId, at: DateTime<Utc>) -> Result<QuotaReport> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await.map_err(storage)?;
            let record = d::tenancy::read_tenant(&mut tx, tenant)
                .await
                .map_err(storage)?
                .ok_or(TenancyError::UnknownTenant(tenant))?;
            let customers = d::tenancy::counted(&mut tx, tenant, Quota::Customers).await?;
            let users = d::tenancy::counted(&mut tx, tenant, Quota::AdminUsers).await?;
            let calls = d::tenancy::window_use(&mut tx, tenant, rate_window(at).0).await?;
            tx.commit().await.during("end read").map_err(storage)?;
            Ok(QuotaReport::new(
                QuotaUse::new(Quota::Customers, record.limit(Quota::Customers), customers),
                QuotaUse::new(Quota::AdminUsers, record.limit(Quota::AdminUsers), users),
                RateUse::new(record.limit(Quota::ApiCallsPerHour), calls, at),
            ))
        })
    }

    #[tracing::instrument(name = "dotmac.store.record_platform_usage", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), records = records.len()))]
    async fn record_platform_usage(
        &self,
        tenant: TenantId,
        records: &[UsageRecord],
    ) -> Result<u64> {
        let quantities = records
            .iter()
            .map(|r| signed("usage quantity", r.quantity))
            .collect::<Result<Vec<i64>>>()?;
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            d::tenancy::read_tenant(&mut tx, tenant)
                .await
                .map_err(storage)?
                .ok_or(TenancyError::UnknownTenant(tenant))?;
            let mut new = 0_u64;
            for (record, quantity) in records.iter().zip(quantities) {
                let done = sqlx::query(
                    "INSERT INTO tenancy_usage_records (tenant_id, record_id, metric, at, quantity) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, record_id) DO NOTHING",
                )
                .bind(tenant.as_uuid())
                .bind(record.id.as_uuid())
                .bind(record.metric.as_str())
                .bind(record.at)
                .bind(quantity)
                .execute(&mut *tx)
                .await
                .during("record platform usage")
                .map_err(storage)?;
                new = new.saturating_add(done.rows_affected());
            }
            tx.commit().await.during("commit platform usage").map_err(storage)?;
            Ok(new)
        })
    }

    #[tracing::instrument(name = "dotmac.store.platform_usage", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn platform_usage(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<PlatformUsage> {
        let customers = Quota::Customers.as_str();
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await.map_err(storage)?;
            let mut usage = PlatformUsage::empty(from, to);
            usage.customers = d::tenancy::customers_at(&mut tx, tenant, to).await?;
            usage.customers_added = d::tenancy::figure(
                &mut tx,
                "SELECT COUNT(*) FROM tenancy_quota_members WHERE tenant_id = $1 AND quota = $4 \
                 AND since >= $2 AND since < $3",
                tenant, from, to, customers,
            )
            .await?;
            let records = "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) \
                 FROM tenancy_usage_records WHERE tenant_id = $1 AND metric = $4 \
                 AND at >= $2 AND at < $3";
            usage.invoices_issued = d::tenancy::figure(
                &mut tx, records, tenant, from, to, PlatformMetric::InvoicesIssued.as_str(),
            )
            .await?;
            usage.events_ingested = d::tenancy::figure(
                &mut tx, records, tenant, from, to, PlatformMetric::EventsIngested.as_str(),
            )
            .await?;
            usage.api_calls = d::tenancy::figure(
                &mut tx,
                "SELECT CAST(COALESCE(SUM(used), 0) AS BIGINT) FROM tenancy_rate_windows \
                 WHERE tenant_id = $1 AND quota = $4 AND window_start >= $2 AND window_start < $3",
                tenant, from, to, Quota::ApiCallsPerHour.as_str(),
            )
            .await?;
            tx.commit().await.during("end read").map_err(storage)?;
            Ok(usage)
        })
    }
}

#[cfg(test)]
mod tests {
    // A failing unwrap is a failing test.
    #![allow(clippy::unwrap_used, clippy::panic)]

    use chrono::TimeZone;
    use dotmac_core::{CustomerId, FixedClock};
    use dotmac_tenancy::{Actor, Limit, PlanCode, TenancyService, TenancySettings, TenantStatus};

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, 9, 0, 0).unwrap()
    }

    /// A tenant of the registry from before migration 0011 (no status, version or body
    /// written by its insert) and one created by `Database::create_tenant` now read alike: active,
    /// unmetered, one history entry; the tenancy service moves them on like any other.
    #[tokio::test]
    async fn registry_tenants_are_tenancy_tenants() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let crate::db::Backend::Sqlite(pool) = db.backend_pool() else {
            panic!("not SQLite");
        };
        let old = TenantId::new();
        sqlx::query("INSERT INTO tenants (tenant_id, name, created_at) VALUES ($1, $2, $3)")
            .bind(old.as_uuid())
            .bind("Old Fibre")
            .bind(at(1))
            .execute(pool)
            .await
            .unwrap();
        let new = TenantId::new();
        db.create_tenant(new, "New Fibre", at(2)).await.unwrap();
        let store = SqlStore::new(db.clone());
        for (tenant, name, day) in [(old, "Old Fibre", 1), (new, "New Fibre", 2)] {
            let record = store.tenant(tenant).await.unwrap().unwrap();
            assert_eq!(
                record,
                Tenant::registered(tenant, name, at(day))
                    .unwrap()
                    .at_version(1)
            );
            assert_eq!(record.limit(Quota::Customers), Limit::Unlimited);
            assert_eq!(db.tenant_name(tenant).await.unwrap().as_deref(), Some(name));
        }
        let tenancy = TenancyService::new(
            store.clone(),
            FixedClock::new(at(3)),
            TenancySettings::platform_tiers().unwrap(),
        );
        let customers: Vec<CustomerId> = (0..500).map(|_| CustomerId::new()).collect();
        assert_eq!(
            tenancy.admit_customers(old, &customers).await.unwrap().used,
            500
        );
        let (moved, _) = tenancy
            .transition(old, TenantStatus::Suspended, Actor::System, None)
            .await
            .unwrap();
        assert_eq!(moved.version(), 2);
        let (on_plan, events) = tenancy
            .assign_plan(new, &PlanCode::STARTER, Actor::platform("sales"))
            .await
            .unwrap();
        assert_eq!(on_plan.limit(Quota::Customers), Limit::AtMost(100));
        assert_eq!(events[0].event_type(), "tenancy.plan_assigned");
        let status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE tenant_id = $1")
            .bind(old.as_uuid())
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(status, "suspended");
        // A blank name is refused by the registry as by the tenancy domain; nothing is written.
        let blank = TenantId::new();
        let refused = db.create_tenant(blank, "  ", at(1)).await;
        assert!(
            matches!(
                refused,
                Err(SqlError::Tenancy(TenancyError::InvalidName(_)))
            ),
            "{refused:?}"
        );
        assert_eq!(store.tenant(blank).await.unwrap(), None);
    }
}
