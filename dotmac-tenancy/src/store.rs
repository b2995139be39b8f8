//! Where tenants, their settings, users and quota counts are kept. Every method takes the
//! [`TenantId`] it works for; every write is atomic and writes its outbox events in the same
//! step (an event refused by the outbox writes nothing).
//!
//! What every implementation promises (the behaviour suite, `testkit`, holds the in-memory,
//! SQLite and PostgreSQL stores to it):
//!
//! - **Status checks in the write.** Every write reads the tenant's status in its own atomic
//!   step and applies [`Tenant::ensure`]/[`Tenant::admit`] (the one rule): an archived
//!   tenant's rows are never written ([`TenancyError::TenantArchived`]), whatever a caller read
//!   before.
//! - **Quota counts are atomic.** A count is checked and incremented in one step under a lock
//!   on the tenant's counter (PostgreSQL: the counter row, `FOR UPDATE`; SQLite: the write
//!   lock): of two concurrent admissions at limit − 1, exactly one succeeds, and the other
//!   gets [`TenancyError::QuotaExceeded`] with nothing counted. Admissions are idempotent per
//!   member (a customer already counted is not counted again) and all-or-nothing per call.
//! - **Rate quota.** See [`crate::usage`]: a fixed window of one clock hour, one conditional
//!   increment.

use std::future::Future;

use chrono::{DateTime, Utc};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{CustomerId, TenantId};

use crate::access::{Role, TenantUser};
use crate::error::TenancyError;
use crate::settings::{CustomerSettings, SettingsLayer};
use crate::tenant::Tenant;
use crate::usage::{PlatformUsage, QuotaReport, QuotaUse, RateUse, UsageRecord};
use crate::vocab::UserId;

type Result<T> = std::result::Result<T, TenancyError>;

/// Tenants: their record, status, plan and history.
pub trait TenantStore: Send + Sync {
    /// Stores a new tenant (at version 1) with `events`.
    ///
    /// # Errors
    ///
    /// [`TenancyError::AlreadyExists`] (`what` = `"tenant"`) when the id is taken; the
    /// outbox's refusals and storage failures as [`TenancyError::Storage`].
    fn insert_tenant(
        &self,
        tenant: &Tenant,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<()>> + Send;

    /// The tenant, at its stored version, or `None`.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn tenant(&self, tenant: TenantId) -> impl Future<Output = Result<Option<Tenant>>> + Send;

    /// Every tenant, in id order, one page at a time: at most `limit` tenants whose ids come
    /// after `after` (from the first when `None`), each at its stored version. The platform
    /// operator's view, and the one read of this crate that is not scoped to one tenant (on
    /// PostgreSQL it runs as a role that may read every row of `tenants` and nothing else).
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn list_tenants(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Tenant>>> + Send;

    /// Replaces the tenant if it is still at the version it was read at
    /// ([`Tenant::version`]), with `events`; returns the new version.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownTenant`]; [`TenancyError::TenantArchived`] when the stored
    /// tenant is archived (its record is final); [`TenancyError::Conflict`] when it changed
    /// since it was read; storage failures.
    fn save_tenant(
        &self,
        tenant: &Tenant,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<u64>> + Send;
}

/// The tenant's and its customers' settings layers.
pub trait SettingsStore: Send + Sync {
    /// The tenant's own settings (empty when never set).
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn tenant_settings(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<SettingsLayer>> + Send;

    /// Replaces the tenant's own settings, with `events`.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownTenant`], what the tenant's status refuses
    /// ([`Tenant::ensure`] for configuring), storage failures.
    fn put_tenant_settings(
        &self,
        tenant: TenantId,
        settings: &SettingsLayer,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<()>> + Send;

    /// A customer's own settings (empty when never set).
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn customer_settings(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> impl Future<Output = Result<CustomerSettings>> + Send;

    /// Replaces a customer's own settings, with `events`.
    ///
    /// # Errors
    ///
    /// As [`SettingsStore::put_tenant_settings`].
    fn put_customer_settings(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        settings: &CustomerSettings,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Users and custom roles. An active user holds a seat of the admin-user quota.
pub trait AccessStore: Send + Sync {
    /// Stores a new user with `events`; an active user is admitted to the admin-user quota in
    /// the same step. Returns the quota's use after it.
    ///
    /// # Errors
    ///
    /// [`TenancyError::AlreadyExists`] (`what` = `"user"` for the id, `"user subject"` for
    /// the subject); [`TenancyError::QuotaExceeded`]; [`TenancyError::UnknownTenant`]; what the
    /// tenant's status refuses; a user of another tenant as [`TenancyError::Storage`]
    /// (tenant mismatch); storage failures.
    fn insert_user(
        &self,
        tenant: TenantId,
        user: &TenantUser,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<QuotaUse>> + Send;

    /// Replaces a user with `events`. A user enabled again is admitted to the quota, a user
    /// disabled releases their seat (both from `at`), in the same step. Returns the quota's
    /// use after it.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownUser`]; as [`AccessStore::insert_user`] otherwise.
    fn save_user(
        &self,
        tenant: TenantId,
        user: &TenantUser,
        at: DateTime<Utc>,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<QuotaUse>> + Send;

    /// A user, or `None`.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn tenant_user(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<TenantUser>>> + Send;

    /// The user the identity provider knows as `subject`, or `None`.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn user_by_subject(
        &self,
        tenant: TenantId,
        subject: &str,
    ) -> impl Future<Output = Result<Option<TenantUser>>> + Send;

    /// Every user of the tenant, by id.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn tenant_users(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<TenantUser>>> + Send;

    /// Defines (or redefines) a custom role, with `events`.
    ///
    /// # Errors
    ///
    /// [`TenancyError::BuiltInRole`] for a built-in role's name; [`TenancyError::UnknownTenant`];
    /// what the tenant's status refuses; storage failures.
    fn put_role(
        &self,
        tenant: TenantId,
        role: &Role,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<()>> + Send;

    /// The tenant's custom roles, by name.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn tenant_roles(&self, tenant: TenantId) -> impl Future<Output = Result<Vec<Role>>> + Send;
}

/// Quota counts and the platform's measurement of the tenant.
pub trait QuotaStore: Send + Sync {
    /// Counts `customers` against the customer quota at `at`, all or none: customers already
    /// counted are skipped (idempotent), and if the others do not fit nothing is counted.
    /// Returns the quota's use after it.
    ///
    /// # Errors
    ///
    /// [`TenancyError::QuotaExceeded`] (with the use before the call and the number of
    /// customers new to the count); [`TenancyError::UnknownTenant`]; what the tenant's status
    /// refuses; storage failures.
    fn admit_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<QuotaUse>> + Send;

    /// Stops counting `customers` (closed accounts) from `at`; customers not counted are
    /// skipped. Returns the quota's use after it.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownTenant`]; what the tenant's status refuses (configuring);
    /// storage failures.
    fn release_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<QuotaUse>> + Send;

    /// Counts `calls` API calls in the rate window containing `at`, all or none.
    ///
    /// # Errors
    ///
    /// [`TenancyError::QuotaExceeded`] (with the window's use); [`TenancyError::TooLarge`]
    /// beyond `i64::MAX`; [`TenancyError::UnknownTenant`]; what the tenant's status refuses
    /// (serving the API); storage failures.
    fn admit_api_calls(
        &self,
        tenant: TenantId,
        calls: u64,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<RateUse>> + Send;

    /// Every quota's use at `at` (the API calls of `at`'s window).
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownTenant`]; storage failures.
    fn quota_use(
        &self,
        tenant: TenantId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<QuotaReport>> + Send;

    /// Records measurements; a record whose id the tenant already recorded is skipped.
    /// Returns how many were new. Allowed whatever the tenant's status (it measures what
    /// happened).
    ///
    /// # Errors
    ///
    /// [`TenancyError::TooLarge`] for a quantity beyond `i64::MAX`; storage failures.
    fn record_platform_usage(
        &self,
        tenant: TenantId,
        records: &[UsageRecord],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// The tenant's use of the platform in `[from, to)`.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn platform_usage(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<PlatformUsage>> + Send;
}

/// Everything the tenancy service needs.
pub trait TenancyStore: TenantStore + SettingsStore + AccessStore + QuotaStore {}

impl<T: TenantStore + SettingsStore + AccessStore + QuotaStore> TenancyStore for T {}
