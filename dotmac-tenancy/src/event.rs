//! What the tenancy service reports: each change to a tenant, written to the outbox with the
//! change ([`dotmac_core::outbox`]), in order per tenant.

use std::collections::BTreeSet;

use dotmac_core::outbox::{Aggregate, OutboxPayload};
use dotmac_core::{CustomerId, EventPayload, TenantId};
use serde::{Deserialize, Serialize};

use crate::access::UserStatus;
use crate::tenant::StatusChange;
use crate::vocab::{Actor, PlanCode, RoleName, TenantStatus, UserId};

/// Whose settings changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "level", content = "customer")]
#[non_exhaustive]
pub enum SettingsScope {
    /// The tenant's own.
    Tenant,
    /// One customer's.
    Customer(CustomerId),
}

/// A change to a tenant. Serialized with its kind in `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum TenancyEvent {
    /// A tenant was asked for (`tenancy.tenant_requested`).
    TenantRequested {
        /// The tenant.
        tenant: TenantId,
        /// Its name.
        name: String,
        /// Its plan, if any.
        plan: Option<PlanCode>,
        /// Who asked.
        actor: Actor,
    },
    /// A tenant's status changed (`tenancy.tenant_provisioning`, `tenancy.tenant_activated`,
    /// `tenancy.tenant_suspended`, `tenancy.tenant_resumed`, `tenancy.tenant_archived`).
    StatusChanged {
        /// The tenant.
        tenant: TenantId,
        /// The step, as recorded in the tenant's history.
        change: StatusChange,
    },
    /// A tenant was put on a plan (`tenancy.plan_assigned`).
    PlanAssigned {
        /// The tenant.
        tenant: TenantId,
        /// The plan before.
        from: Option<PlanCode>,
        /// The plan now.
        to: PlanCode,
        /// Who did it.
        actor: Actor,
    },
    /// Settings changed (`tenancy.settings_changed`).
    SettingsChanged {
        /// The tenant.
        tenant: TenantId,
        /// Whose.
        scope: SettingsScope,
        /// Who changed them.
        actor: Actor,
    },
    /// A user was added (`tenancy.user_added`).
    UserAdded {
        /// The tenant.
        tenant: TenantId,
        /// The user.
        user: UserId,
        /// Their roles.
        roles: BTreeSet<RoleName>,
        /// Who added them.
        actor: Actor,
    },
    /// A user's roles or status changed (`tenancy.user_changed`).
    UserChanged {
        /// The tenant.
        tenant: TenantId,
        /// The user.
        user: UserId,
        /// Their roles now.
        roles: BTreeSet<RoleName>,
        /// Their status now.
        status: UserStatus,
        /// Who changed them.
        actor: Actor,
    },
    /// A custom role was defined or redefined (`tenancy.role_saved`).
    RoleSaved {
        /// The tenant.
        tenant: TenantId,
        /// The role.
        role: RoleName,
        /// Who saved it.
        actor: Actor,
    },
}

impl TenancyEvent {
    /// The tenant the event is about.
    pub fn tenant(&self) -> TenantId {
        match self {
            TenancyEvent::TenantRequested { tenant, .. }
            | TenancyEvent::StatusChanged { tenant, .. }
            | TenancyEvent::PlanAssigned { tenant, .. }
            | TenancyEvent::SettingsChanged { tenant, .. }
            | TenancyEvent::UserAdded { tenant, .. }
            | TenancyEvent::UserChanged { tenant, .. }
            | TenancyEvent::RoleSaved { tenant, .. } => *tenant,
        }
    }
}

impl EventPayload for TenancyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TenancyEvent::TenantRequested { .. } => "tenancy.tenant_requested",
            TenancyEvent::StatusChanged { change, .. } => match (change.from, change.to) {
                (_, TenantStatus::Requested) => "tenancy.tenant_requested",
                (_, TenantStatus::Provisioning) => "tenancy.tenant_provisioning",
                (Some(TenantStatus::Suspended), TenantStatus::Active) => "tenancy.tenant_resumed",
                (_, TenantStatus::Active) => "tenancy.tenant_activated",
                (_, TenantStatus::Suspended) => "tenancy.tenant_suspended",
                (_, TenantStatus::Archived) => "tenancy.tenant_archived",
            },
            TenancyEvent::PlanAssigned { .. } => "tenancy.plan_assigned",
            TenancyEvent::SettingsChanged { .. } => "tenancy.settings_changed",
            TenancyEvent::UserAdded { .. } => "tenancy.user_added",
            TenancyEvent::UserChanged { .. } => "tenancy.user_changed",
            TenancyEvent::RoleSaved { .. } => "tenancy.role_saved",
        }
    }
}

/// Every tenancy event is about its tenant: handled in order per tenant.
impl OutboxPayload for TenancyEvent {
    fn aggregate(&self) -> Aggregate {
        Aggregate::new("tenant", self.tenant().as_uuid())
    }
}
