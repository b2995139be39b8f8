//! The crate's one error type.

use dotmac_core::{CoreError, TenantId};

use crate::vocab::{
    Feature, InvalidName, Operation, Permission, PlanCode, Quota, RoleName, SettingKey,
    TenantStatus, UserId,
};

/// Everything that can go wrong in `dotmac-tenancy`.
///
/// An operation that returns one of these has changed nothing: checks happen before any write,
/// and a store's write is one atomic step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenancyError {
    /// An error from the core vocabulary.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A name or label that cannot be used (a plan code, a role name, a locale, …).
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// The tenant is not known to the store.
    #[error("tenant {0} not found")]
    UnknownTenant(TenantId),
    /// The plan is not in the catalogue.
    #[error("tenant plan {0:?} is not in the catalogue")]
    UnknownPlan(PlanCode),
    /// The user is not one of the tenant's.
    #[error("user {0} not found for this tenant")]
    UnknownUser(UserId),
    /// Something inserted twice under one key.
    #[error("{what} {id} already exists for this tenant")]
    AlreadyExists {
        /// What was inserted (`tenant`, `user`, …).
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// A status change the lifecycle does not allow
    /// ([`TenantStatus::can_become`](crate::TenantStatus::can_become)).
    #[error("tenant {tenant} cannot move from {from} to {to}")]
    InvalidTransition {
        /// The tenant.
        tenant: TenantId,
        /// Its status.
        from: TenantStatus,
        /// The status asked for.
        to: TenantStatus,
    },
    /// A write for an archived tenant: its data is read-only (export it, write nothing).
    #[error("tenant {tenant} is archived: its data is read-only")]
    TenantArchived {
        /// The tenant.
        tenant: TenantId,
    },
    /// A write the tenant's status does not permit
    /// ([`TenantStatus::permits`](crate::TenantStatus::permits)), such as a new customer for
    /// a suspended tenant.
    #[error("tenant {tenant} is {status}: it may not {operation}")]
    TenantNotActive {
        /// The tenant.
        tenant: TenantId,
        /// Its status.
        status: TenantStatus,
        /// What was refused.
        operation: Operation,
    },
    /// A quota would be exceeded: nothing was counted.
    #[error(
        "tenant {tenant} is over its {quota} quota: {used} of {limit} used, {requested} more asked for"
    )]
    QuotaExceeded {
        /// The tenant.
        tenant: TenantId,
        /// The quota.
        quota: Quota,
        /// Its limit (an exceeded limit is never unlimited).
        limit: u64,
        /// What is used now (this hour's calls for a rate quota).
        used: u64,
        /// How many more were asked for.
        requested: u64,
    },
    /// The tenant's plan does not include a feature.
    #[error("tenant {tenant} is not entitled to {feature} (plan {plan})")]
    NotEntitled {
        /// The tenant.
        tenant: TenantId,
        /// The feature.
        feature: Feature,
        /// The tenant's plan.
        plan: PlanCode,
    },
    /// A plan that cannot be used.
    #[error("invalid tenant plan {plan}: {reason}")]
    InvalidPlan {
        /// The plan's code.
        plan: String,
        /// Why it is refused.
        reason: String,
    },
    /// A setting's value that cannot be used.
    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: SettingKey,
        /// Why it is refused.
        reason: String,
    },
    /// A change that would leave the tenant without an active owner: the owner role taken
    /// from, or the account disabled of, its last active owner. Nothing was changed.
    #[error(
        "user {user} is the last active owner of tenant {tenant}; make another user owner first"
    )]
    LastOwner {
        /// The tenant.
        tenant: dotmac_core::TenantId,
        /// The last owner.
        user: crate::vocab::UserId,
    },
    /// A custom role that would shadow a built-in one.
    #[error("role {0} is built in; give a custom role another name")]
    BuiltInRole(RoleName),
    /// A user is not allowed to do something
    /// ([`Decision::require`](crate::Decision::require)).
    #[error("user {user} may not {permission}: {reason}")]
    Forbidden {
        /// The user.
        user: UserId,
        /// What they tried.
        permission: Permission,
        /// Why not (`no role grants it`, …).
        reason: &'static str,
    },
    /// The record changed since it was read (optimistic concurrency): reload and retry.
    #[error(
        "{what} {id} changed since it was read (expected version {expected}); reload and retry"
    )]
    Conflict {
        /// What changed (`tenant`).
        what: &'static str,
        /// Its key.
        id: String,
        /// The version the caller read.
        expected: u64,
    },
    /// A quantity too large to count (more than `i64::MAX`).
    #[error("{what} of {value} is too large to count")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// The value given.
        value: u64,
    },
    /// A store failed: its [kind](dotmac_core::StorageErrorKind) says what to do (retry an
    /// unavailable store, change invalid input), and the backend's error is kept as the source.
    #[error("{0}")]
    Storage(#[from] dotmac_core::StorageError),
}

impl TenancyError {
    /// A stable, lower-case name for the error's kind (`"quota_exceeded"`), for logs, metrics
    /// and events.
    pub fn kind(&self) -> &'static str {
        match self {
            TenancyError::Core(core) => core.kind(),
            TenancyError::InvalidName(_) => "invalid_name",
            TenancyError::UnknownTenant(_) => "unknown_tenant",
            TenancyError::UnknownPlan(_) => "unknown_plan",
            TenancyError::UnknownUser(_) => "unknown_user",
            TenancyError::AlreadyExists { .. } => "already_exists",
            TenancyError::InvalidTransition { .. } => "invalid_transition",
            TenancyError::TenantArchived { .. } => "tenant_archived",
            TenancyError::TenantNotActive { .. } => "tenant_not_active",
            TenancyError::QuotaExceeded { .. } => "quota_exceeded",
            TenancyError::NotEntitled { .. } => "not_entitled",
            TenancyError::InvalidPlan { .. } => "invalid_plan",
            TenancyError::InvalidSetting { .. } => "invalid_setting",
            TenancyError::BuiltInRole(_) => "built_in_role",
            TenancyError::LastOwner { .. } => "last_owner",
            TenancyError::Forbidden { .. } => "forbidden",
            TenancyError::Conflict { .. } => "conflict",
            TenancyError::TooLarge { .. } => "too_large",
            TenancyError::Storage(_) => "storage",
        }
    }
}

/// `Result` with [`TenancyError`].
pub type Result<T, E = TenancyError> = std::result::Result<T, E>;
