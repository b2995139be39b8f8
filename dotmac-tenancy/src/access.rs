//! Tenant users, roles and the one permission check, [`authorize`]: pure, deny by default.
//!
//! **Authentication is not here.** DotMac never sees a password, a token or a session: the
//! embedder's identity provider says who is calling, and the embedder looks the user up by the
//! provider's subject ([`TenantUser::subject`], unique per tenant). This module only answers
//! "may this user of this tenant do that?".

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use dotmac_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::error::TenancyError;
use crate::vocab::{Access, Permission, RoleName, TenantStatus, UserId, label};

/// Whether a user may sign in and act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UserStatus {
    /// May act (as their roles allow); counts against the admin-user quota.
    #[default]
    Active,
    /// May do nothing; does not count against the quota.
    Disabled,
}

/// A user to add to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NewUser {
    /// The identity provider's subject for the user (its stable id, an e-mail address).
    pub subject: String,
    /// The name people read.
    pub name: String,
    /// The roles granted.
    pub roles: BTreeSet<RoleName>,
}

impl NewUser {
    /// A user known to the identity provider as `subject`, without roles (so allowed nothing).
    pub fn new(subject: impl Into<String>, name: impl Into<String>) -> Self {
        NewUser {
            subject: subject.into(),
            name: name.into(),
            roles: BTreeSet::new(),
        }
    }

    /// Granting `role`.
    #[must_use]
    pub fn role(mut self, role: RoleName) -> Self {
        self.roles.insert(role);
        self
    }
}

/// One of a tenant's own users (the ISP's staff), with the roles granted to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantUser {
    id: UserId,
    tenant: TenantId,
    subject: String,
    name: String,
    roles: BTreeSet<RoleName>,
    status: UserStatus,
    created_at: DateTime<Utc>,
}

impl TenantUser {
    /// The user `id` of `tenant`, active, from `new`.
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidName`] for a blank, overlong (1 KiB) or control-character subject
    /// or name.
    pub fn new(
        id: UserId,
        tenant: TenantId,
        new: NewUser,
        at: DateTime<Utc>,
    ) -> Result<TenantUser, TenancyError> {
        label("user subject", &new.subject, 1_024)?;
        label("user name", &new.name, 1_024)?;
        Ok(TenantUser {
            id,
            tenant,
            subject: new.subject,
            name: new.name,
            roles: new.roles,
            status: UserStatus::Active,
            created_at: at,
        })
    }

    /// The id.
    pub fn id(&self) -> UserId {
        self.id
    }

    /// The tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The identity provider's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The roles granted.
    pub fn roles(&self) -> &BTreeSet<RoleName> {
        &self.roles
    }

    /// The status.
    pub fn status(&self) -> UserStatus {
        self.status
    }

    /// When the user was added.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// Grants `role`; returns whether it was new.
    pub fn grant(&mut self, role: RoleName) -> bool {
        self.roles.insert(role)
    }

    /// Takes `role` back; returns whether it was granted.
    pub fn revoke(&mut self, role: &RoleName) -> bool {
        self.roles.remove(role)
    }

    /// Sets the status (disabling frees a seat of the admin-user quota, enabling takes one).
    pub fn set_status(&mut self, status: UserStatus) {
        self.status = status;
    }

    /// Whether the user is active and holds the owner role.
    pub fn is_active_owner(&self) -> bool {
        self.status == UserStatus::Active && self.roles.contains(&RoleName::OWNER)
    }
}

/// **The one last-owner rule**, which every store applies inside its write of a user:
/// replacing `stored` with `updated` may not leave a tenant that had an active owner without
/// one. A change that takes the owner role from, or disables, the last active owner (no other
/// user of `others` is an active owner) is [`TenancyError::LastOwner`]; grant the role to
/// someone else first. A tenant that never had an owner is not held to it.
///
/// # Errors
///
/// [`TenancyError::LastOwner`] naming the user.
pub fn ensure_owner_remains<'a>(
    stored: &TenantUser,
    updated: &TenantUser,
    others: impl IntoIterator<Item = &'a TenantUser>,
) -> Result<(), TenancyError> {
    if !stored.is_active_owner() || updated.is_active_owner() {
        return Ok(());
    }
    if others
        .into_iter()
        .any(|o| o.id != stored.id && o.is_active_owner())
    {
        return Ok(());
    }
    Err(TenancyError::LastOwner {
        tenant: stored.tenant,
        user: stored.id,
    })
}

/// The permissions of a built-in role, or `None` for another name.
pub fn built_in_permissions(role: &RoleName) -> Option<BTreeSet<Permission>> {
    use Permission::*;
    let all = || Permission::ALL.iter().copied();
    let set: BTreeSet<Permission> = match role.as_str() {
        "owner" => all().collect(),
        "admin" => all().filter(|p| *p != TenantManage).collect(),
        "billing" => [
            TenantRead,
            SettingsRead,
            CustomersRead,
            CustomersManage,
            BillingRead,
            BillingManage,
            PaymentsRead,
            PaymentsManage,
            CollectionsManage,
            UsageRead,
            ReportsRead,
        ]
        .into_iter()
        .collect(),
        "support_agent" => [
            TenantRead,
            CustomersRead,
            BillingRead,
            UsageRead,
            SupportRead,
            SupportManage,
        ]
        .into_iter()
        .collect(),
        "read_only" => all().filter(|p| p.access() == Access::Read).collect(),
        _ => return None,
    };
    Some(set)
}

/// A role: a name and the permissions it grants. Built in ([`Role::built_in`]) or the tenant's
/// own ([`Role::custom`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    name: RoleName,
    permissions: BTreeSet<Permission>,
    description: String,
}

impl Role {
    /// The built-in role `name` (owner, admin, billing, support agent, read-only).
    pub fn built_in(name: &RoleName) -> Option<Role> {
        built_in_permissions(name).map(|permissions| Role {
            name: name.clone(),
            permissions,
            description: format!("built-in role {name}"),
        })
    }

    /// A custom role granting `permissions`.
    ///
    /// # Errors
    ///
    /// [`TenancyError::BuiltInRole`] for a built-in role's name; [`TenancyError::InvalidName`]
    /// for an overlong (1 KiB) or control-character description.
    pub fn custom(
        name: RoleName,
        permissions: impl IntoIterator<Item = Permission>,
        description: &str,
    ) -> Result<Role, TenancyError> {
        if name.is_built_in() {
            return Err(TenancyError::BuiltInRole(name));
        }
        if !description.is_empty() {
            label("role description", description, 1_024)?;
        }
        Ok(Role {
            name,
            permissions: permissions.into_iter().collect(),
            description: description.to_owned(),
        })
    }

    /// The name.
    pub fn name(&self) -> &RoleName {
        &self.name
    }

    /// The permissions it grants.
    pub fn permissions(&self) -> &BTreeSet<Permission> {
        &self.permissions
    }

    /// What it is for.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether it grants `permission`.
    pub fn grants(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }
}

/// Why [`authorize`] said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Denial {
    /// No such user (an identity the tenant does not know).
    UnknownUser,
    /// The user is another tenant's.
    OtherTenant,
    /// The user is disabled.
    UserDisabled,
    /// The tenant is archived: only reads are allowed.
    TenantArchived,
    /// None of the user's roles grants it (the default).
    NotGranted,
}

impl Denial {
    /// Why, in words.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::UnknownUser => "the tenant has no such user",
            Denial::OtherTenant => "the user belongs to another tenant",
            Denial::UserDisabled => "the user is disabled",
            Denial::TenantArchived => "the tenant is archived and read-only",
            Denial::NotGranted => "no role of the user grants it",
        }
    }
}

/// What [`authorize`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Allowed, by this role (the first, by name, of the user's roles that grants it).
    Allowed {
        /// The role.
        role: RoleName,
    },
    /// Denied.
    Denied(Denial),
}

impl Decision {
    /// True when allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// The decision as a check.
    ///
    /// # Errors
    ///
    /// [`TenancyError::Forbidden`] naming the user, the permission and the reason.
    pub fn require(&self, user: UserId, permission: Permission) -> Result<(), TenancyError> {
        match self {
            Decision::Allowed { .. } => Ok(()),
            Decision::Denied(denial) => Err(TenancyError::Forbidden {
                user,
                permission,
                reason: denial.reason(),
            }),
        }
    }
}

/// What [`authorize`] decides by: the tenant, its status and its custom roles (the built-in
/// roles are always there and cannot be redefined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    tenant: TenantId,
    status: TenantStatus,
    custom: BTreeMap<RoleName, Role>,
}

impl AccessPolicy {
    /// The policy of `tenant` in `status` with its custom `roles` (a role named as a built-in
    /// one is ignored: built-in roles cannot be redefined).
    pub fn new(
        tenant: TenantId,
        status: TenantStatus,
        roles: impl IntoIterator<Item = Role>,
    ) -> Self {
        AccessPolicy {
            tenant,
            status,
            custom: roles
                .into_iter()
                .filter(|r| !r.name().is_built_in())
                .map(|r| (r.name().clone(), r))
                .collect(),
        }
    }

    /// The role `name`: built in, or one of the tenant's.
    pub fn role(&self, name: &RoleName) -> Option<Role> {
        Role::built_in(name).or_else(|| self.custom.get(name).cloned())
    }

    /// Whether role `name` grants `permission` (an unknown role grants nothing).
    fn grants(&self, name: &RoleName, permission: Permission) -> bool {
        match built_in_permissions(name) {
            Some(set) => set.contains(&permission),
            None => self.custom.get(name).is_some_and(|r| r.grants(permission)),
        }
    }

    /// Every permission `user`'s roles grant (before the status and tenant checks).
    pub fn permissions_of(&self, user: &TenantUser) -> BTreeSet<Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(|p| user.roles().iter().any(|r| self.grants(r, *p)))
            .collect()
    }

    /// [`authorize`] under this policy.
    pub fn authorize(&self, user: &TenantUser, permission: Permission) -> Decision {
        authorize(self, user, permission)
    }
}

/// May `user` do `permission` under `policy`? Pure, and deny by default: allowed only when
/// the user is the policy's tenant's, is active, the tenant is not archived (or the
/// permission only reads), and one of the user's roles grants the permission. Unknown role
/// names grant nothing.
///
/// ```
/// use chrono::DateTime;
/// use dotmac_core::TenantId;
/// use dotmac_tenancy::{
///     AccessPolicy, Decision, Denial, NewUser, Permission, Role, RoleName, TenantStatus,
///     TenantUser, UserId, authorize,
/// };
///
/// let tenant = TenantId::new();
/// let noc = Role::custom(RoleName::new("noc")?, [Permission::UsageRead, Permission::UsageManage], "")?;
/// let policy = AccessPolicy::new(tenant, TenantStatus::Active, [noc]);
/// let user = TenantUser::new(
///     UserId::new(), tenant,
///     NewUser::new("ana@acme.example", "Ana").role(RoleName::new("noc")?),
///     DateTime::UNIX_EPOCH,
/// )?;
/// assert!(authorize(&policy, &user, Permission::UsageManage).is_allowed());
/// assert_eq!(authorize(&policy, &user, Permission::BillingManage), Decision::Denied(Denial::NotGranted));
/// # Ok::<(), dotmac_tenancy::TenancyError>(())
/// ```
pub fn authorize(policy: &AccessPolicy, user: &TenantUser, permission: Permission) -> Decision {
    if user.tenant() != policy.tenant {
        return Decision::Denied(Denial::OtherTenant);
    }
    if user.status() != UserStatus::Active {
        return Decision::Denied(Denial::UserDisabled);
    }
    if policy.status == TenantStatus::Archived && permission.access() == Access::Write {
        return Decision::Denied(Denial::TenantArchived);
    }
    user.roles()
        .iter()
        .find(|role| policy.grants(role, permission))
        .map_or(Decision::Denied(Denial::NotGranted), |role| {
            Decision::Allowed { role: role.clone() }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(tenant: TenantId, roles: &[RoleName]) -> TenantUser {
        let mut new = NewUser::new("s", "n");
        for r in roles {
            new = new.role(r.clone());
        }
        TenantUser::new(UserId::from_u128(1), tenant, new, DateTime::UNIX_EPOCH).unwrap()
    }

    #[test]
    fn built_in_roles_grant_their_table() {
        let tenant = TenantId::from_u128(1);
        let policy = AccessPolicy::new(tenant, TenantStatus::Active, []);
        let can = |role: RoleName, p| policy.authorize(&user(tenant, &[role]), p).is_allowed();
        assert!(can(RoleName::OWNER, Permission::TenantManage));
        assert!(!can(RoleName::ADMIN, Permission::TenantManage));
        assert!(can(RoleName::ADMIN, Permission::UsersManage));
        assert!(can(RoleName::BILLING, Permission::PaymentsManage));
        assert!(!can(RoleName::BILLING, Permission::SupportManage));
        assert!(can(RoleName::SUPPORT_AGENT, Permission::SupportManage));
        assert!(!can(RoleName::SUPPORT_AGENT, Permission::BillingManage));
        assert!(can(RoleName::READ_ONLY, Permission::ReportsRead));
        assert!(!can(RoleName::READ_ONLY, Permission::CustomersManage));
    }

    #[test]
    fn everything_is_denied_by_default() {
        let tenant = TenantId::from_u128(1);
        let policy = AccessPolicy::new(tenant, TenantStatus::Active, []);
        let nobody = user(tenant, &[]);
        let ghost = user(tenant, &[RoleName::new("ghost").unwrap()]);
        for p in Permission::ALL {
            assert_eq!(
                policy.authorize(&nobody, *p),
                Decision::Denied(Denial::NotGranted)
            );
            assert_eq!(
                policy.authorize(&ghost, *p),
                Decision::Denied(Denial::NotGranted)
            );
        }
        let mut owner = user(tenant, &[RoleName::OWNER]);
        owner.set_status(UserStatus::Disabled);
        assert_eq!(
            policy.authorize(&owner, Permission::TenantRead),
            Decision::Denied(Denial::UserDisabled)
        );
        let stranger = user(TenantId::from_u128(2), &[RoleName::OWNER]);
        assert_eq!(
            policy.authorize(&stranger, Permission::TenantRead),
            Decision::Denied(Denial::OtherTenant)
        );
        let err = policy
            .authorize(&stranger, Permission::TenantRead)
            .require(stranger.id(), Permission::TenantRead)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "user {} may not tenant.read: the user belongs to another tenant",
                stranger.id()
            )
        );
    }

    #[test]
    fn an_archived_tenant_grants_reads_only() {
        let tenant = TenantId::from_u128(1);
        let policy = AccessPolicy::new(tenant, TenantStatus::Archived, []);
        let owner = user(tenant, &[RoleName::OWNER]);
        assert!(
            policy
                .authorize(&owner, Permission::BillingRead)
                .is_allowed()
        );
        assert_eq!(
            policy.authorize(&owner, Permission::BillingManage),
            Decision::Denied(Denial::TenantArchived)
        );
    }

    #[test]
    fn custom_roles_cannot_take_a_built_in_name_or_redefine_one() {
        assert_eq!(
            Role::custom(RoleName::OWNER, [], "").unwrap_err(),
            TenancyError::BuiltInRole(RoleName::OWNER)
        );
        let tenant = TenantId::from_u128(1);
        // Smuggled past `Role::custom` (say, from a hand-edited store): ignored.
        let fake: Role = serde_json::from_value(serde_json::json!({
            "name": "read_only", "permissions": ["tenant.manage"], "description": ""
        }))
        .unwrap();
        let policy = AccessPolicy::new(tenant, TenantStatus::Active, [fake]);
        let reader = user(tenant, &[RoleName::READ_ONLY]);
        assert!(
            !policy
                .authorize(&reader, Permission::TenantManage)
                .is_allowed()
        );
    }
}
