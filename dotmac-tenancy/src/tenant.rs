//! A tenant (an ISP operator running on the platform), its lifecycle and the checks every
//! write for it goes through: [`Tenant::transition`] for status changes, [`Tenant::ensure`]
//! for what its status permits, [`Tenant::admit`] for its quotas.

use chrono::{DateTime, Utc};
use dotmac_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::error::TenancyError;
use crate::plan::{Limit, TenantPlan};
use crate::settings::SettingsLayer;
use crate::vocab::{Actor, Feature, Operation, PlanCode, Quota, TenantStatus, label};

/// The longest tenant name, in bytes.
const MAX_NAME: usize = 1_024;

/// One step of a tenant's history: who moved it from where to where, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatusChange {
    /// The status before; `None` for the first entry (the tenant's creation).
    pub from: Option<TenantStatus>,
    /// The status after.
    pub to: TenantStatus,
    /// Who did it.
    pub actor: Actor,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, if they said.
    pub reason: Option<String>,
}

/// What is asked for when a tenant is requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NewTenant {
    /// The operator's name.
    pub name: String,
    /// The plan code from the catalogue; `None` for an unmetered tenant.
    pub plan: Option<PlanCode>,
}

impl NewTenant {
    /// A tenant named `name`, without a plan.
    pub fn new(name: impl Into<String>) -> Self {
        NewTenant {
            name: name.into(),
            plan: None,
        }
    }

    /// On the catalogue's plan `code`.
    #[must_use]
    pub fn plan(mut self, code: PlanCode) -> Self {
        self.plan = Some(code);
        self
    }
}

/// A tenant: an ISP operator whose customers, invoices and tickets live on the platform.
///
/// Its status moves only through [`Tenant::transition`] (see [`TenantStatus`]), each step
/// recorded in [`Tenant::history`]. Its plan is a copy of the catalogue's as assigned; a
/// tenant without a plan is *unmetered* (no quota, every feature): the tenants the registry
/// (`dotmac-sqlx`'s `Database::create_tenant`) creates, and embedders that do not meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    id: TenantId,
    name: String,
    status: TenantStatus,
    plan: Option<TenantPlan>,
    history: Vec<StatusChange>,
    created_at: DateTime<Utc>,
    /// The stored version this value was read at (kept by the store, not serialised).
    #[serde(skip)]
    version: u64,
}

fn check_actor(actor: &Actor) -> Result<(), TenancyError> {
    match actor {
        Actor::Platform(name) => Ok(label("platform actor", name, 256)?),
        _ => Ok(()),
    }
}

fn check_reason(reason: Option<&str>) -> Result<(), TenancyError> {
    match reason {
        Some(text) => Ok(label("reason", text, 1_024)?),
        None => Ok(()),
    }
}

impl Tenant {
    /// A tenant asked for by `actor` at `at`, status [`TenantStatus::Requested`], on `plan`.
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidName`] for a blank, overlong (1 KiB) or control-character name
    /// or platform actor.
    pub fn request(
        id: TenantId,
        name: &str,
        plan: Option<TenantPlan>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Tenant, TenancyError> {
        label("tenant name", name, MAX_NAME)?;
        check_actor(&actor)?;
        Ok(Tenant {
            id,
            name: name.to_owned(),
            status: TenantStatus::Requested,
            plan,
            history: vec![StatusChange {
                from: None,
                to: TenantStatus::Requested,
                actor,
                at,
                reason: None,
            }],
            created_at: at,
            version: 0,
        })
    }

    /// A tenant of the registry (`Database::create_tenant`): active from `at`, unmetered,
    /// its history one entry by [`Actor::System`].
    ///
    /// # Errors
    ///
    /// As [`Tenant::request`] for the name.
    pub fn registered(id: TenantId, name: &str, at: DateTime<Utc>) -> Result<Tenant, TenancyError> {
        label("tenant name", name, MAX_NAME)?;
        Ok(Tenant {
            id,
            name: name.to_owned(),
            status: TenantStatus::Active,
            plan: None,
            history: vec![StatusChange {
                from: None,
                to: TenantStatus::Active,
                actor: Actor::System,
                at,
                reason: Some("registered".into()),
            }],
            created_at: at,
            version: 0,
        })
    }

    /// The id.
    pub fn id(&self) -> TenantId {
        self.id
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The status.
    pub fn status(&self) -> TenantStatus {
        self.status
    }

    /// The plan as assigned; `None` when unmetered.
    pub fn plan(&self) -> Option<&TenantPlan> {
        self.plan.as_ref()
    }

    /// The plan's code and settings layer, for [`resolve`](crate::resolve).
    pub fn plan_settings(&self) -> Option<(&PlanCode, &SettingsLayer)> {
        self.plan.as_ref().map(|p| (p.code(), p.settings()))
    }

    /// Every status change, oldest first; the first is the tenant's creation.
    pub fn history(&self) -> &[StatusChange] {
        &self.history
    }

    /// When it was created.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// The stored version it was read at (0 before it is stored).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same tenant, read at `version` (for stores).
    #[must_use]
    pub fn at_version(mut self, version: u64) -> Tenant {
        self.version = version;
        self
    }

    /// Moves the tenant to `to`, recording the step (which it returns).
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidTransition`] naming both statuses when the lifecycle has no such
    /// step (an archived tenant has none); [`TenancyError::InvalidName`] for a bad reason or
    /// platform actor. The tenant is unchanged then.
    pub fn transition(
        &mut self,
        to: TenantStatus,
        actor: Actor,
        at: DateTime<Utc>,
        reason: Option<&str>,
    ) -> Result<StatusChange, TenancyError> {
        if !self.status.can_become(to) {
            return Err(TenancyError::InvalidTransition {
                tenant: self.id,
                from: self.status,
                to,
            });
        }
        check_actor(&actor)?;
        check_reason(reason)?;
        let change = StatusChange {
            from: Some(self.status),
            to,
            actor,
            at,
            reason: reason.map(str::to_owned),
        };
        self.status = to;
        self.history.push(change.clone());
        Ok(change)
    }

    /// Puts the tenant on `plan` (a copy: later catalogue changes do not touch it), returning
    /// the plan it was on. The new plan's limits apply to what is admitted from now on; a
    /// tenant already above them keeps what it has and admits nothing more.
    ///
    /// # Errors
    ///
    /// [`TenancyError::TenantArchived`]; the tenant is unchanged then.
    pub fn assign_plan(&mut self, plan: TenantPlan) -> Result<Option<TenantPlan>, TenancyError> {
        self.ensure(Operation::Configure)?;
        Ok(self.plan.replace(plan))
    }

    /// Renames the tenant.
    ///
    /// # Errors
    ///
    /// [`TenancyError::TenantArchived`], [`TenancyError::InvalidName`].
    pub fn rename(&mut self, name: &str) -> Result<(), TenancyError> {
        self.ensure(Operation::Configure)?;
        label("tenant name", name, MAX_NAME)?;
        name.clone_into(&mut self.name);
        Ok(())
    }

    /// Whether the tenant's status permits `operation` ([`TenantStatus::permits`]).
    ///
    /// # Errors
    ///
    /// [`TenancyError::TenantArchived`] for any write to an archived tenant;
    /// [`TenancyError::TenantNotActive`] for what another status does not permit.
    pub fn ensure(&self, operation: Operation) -> Result<(), TenancyError> {
        if self.status.permits(operation) {
            return Ok(());
        }
        if self.status == TenantStatus::Archived {
            return Err(TenancyError::TenantArchived { tenant: self.id });
        }
        Err(TenancyError::TenantNotActive {
            tenant: self.id,
            status: self.status,
            operation,
        })
    }

    /// The limit of `quota` (unlimited for an unmetered tenant).
    pub fn limit(&self, quota: Quota) -> Limit {
        self.plan
            .as_ref()
            .map_or(Limit::Unlimited, |p| p.quotas().limit(quota))
    }

    /// The check every store makes, in the transaction that counts, before it counts
    /// `requested` more of `quota` on top of `used`: the status must permit it (customers:
    /// [`Operation::AdmitCustomers`], admin users: [`Operation::Configure`], API calls:
    /// [`Operation::ServeApi`]) and the limit must hold.
    ///
    /// # Errors
    ///
    /// As [`Tenant::ensure`]; [`TenancyError::QuotaExceeded`] naming the quota, its limit, the
    /// use and the request.
    pub fn admit(&self, quota: Quota, used: u64, requested: u64) -> Result<(), TenancyError> {
        self.ensure(match quota {
            Quota::Customers => Operation::AdmitCustomers,
            Quota::AdminUsers => Operation::Configure,
            Quota::ApiCallsPerHour => Operation::ServeApi,
        })?;
        match self.limit(quota) {
            limit if limit.allows(used, requested) => Ok(()),
            Limit::AtMost(limit) => Err(TenancyError::QuotaExceeded {
                tenant: self.id,
                quota,
                limit,
                used,
                requested,
            }),
            Limit::Unlimited => Ok(()),
        }
    }

    /// Whether the tenant may use `feature` (an unmetered tenant may use every feature).
    pub fn is_entitled(&self, feature: &Feature) -> bool {
        self.plan.as_ref().is_none_or(|p| p.entitles(feature))
    }

    /// [`Tenant::is_entitled`] as a check.
    ///
    /// # Errors
    ///
    /// [`TenancyError::NotEntitled`] naming the feature and the plan.
    pub fn require_feature(&self, feature: &Feature) -> Result<(), TenancyError> {
        match &self.plan {
            Some(plan) if !plan.entitles(feature) => Err(TenancyError::NotEntitled {
                tenant: self.id,
                feature: feature.clone(),
                plan: plan.code().clone(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanCatalog;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::minutes(minute)
    }

    fn requested() -> Tenant {
        let plan = PlanCatalog::platform_tiers()
            .unwrap()
            .get(&PlanCode::STARTER)
            .cloned();
        Tenant::request(
            TenantId::from_u128(1),
            "Acme Fibre",
            plan,
            Actor::platform("sales"),
            at(0),
        )
        .unwrap()
    }

    #[test]
    fn a_tenant_walks_its_lifecycle_and_keeps_its_history() {
        let mut tenant = requested();
        let ops = Actor::platform("ops");
        for (minute, to) in [
            (1, TenantStatus::Provisioning),
            (2, TenantStatus::Active),
            (3, TenantStatus::Suspended),
            (4, TenantStatus::Active),
            (5, TenantStatus::Suspended),
            (6, TenantStatus::Archived),
        ] {
            tenant
                .transition(to, ops.clone(), at(minute), None)
                .unwrap();
        }
        let steps: Vec<_> = tenant.history().iter().map(|c| (c.from, c.to)).collect();
        use TenantStatus::*;
        assert_eq!(
            steps,
            vec![
                (None, Requested),
                (Some(Requested), Provisioning),
                (Some(Provisioning), Active),
                (Some(Active), Suspended),
                (Some(Suspended), Active),
                (Some(Active), Suspended),
                (Some(Suspended), Archived),
            ]
        );
        assert_eq!(tenant.history()[6].at, at(6));
        assert_eq!(tenant.history()[6].actor, ops);
    }

    #[test]
    fn a_refused_transition_names_both_statuses_and_changes_nothing() {
        let mut tenant = requested();
        let before = tenant.clone();
        let err = tenant
            .transition(TenantStatus::Active, Actor::System, at(1), None)
            .unwrap_err();
        assert_eq!(
            err,
            TenancyError::InvalidTransition {
                tenant: tenant.id(),
                from: TenantStatus::Requested,
                to: TenantStatus::Active
            }
        );
        assert_eq!(tenant, before);
        let err = tenant
            .transition(TenantStatus::Provisioning, Actor::platform(""), at(1), None)
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_name");
        assert_eq!(tenant, before);
    }

    #[test]
    fn quotas_are_checked_with_the_status() {
        let mut tenant = requested();
        let err = tenant.admit(Quota::Customers, 0, 1).unwrap_err();
        assert_eq!(
            err,
            TenancyError::TenantNotActive {
                tenant: tenant.id(),
                status: TenantStatus::Requested,
                operation: Operation::AdmitCustomers
            }
        );
        tenant
            .transition(TenantStatus::Provisioning, Actor::System, at(1), None)
            .unwrap();
        assert!(tenant.admit(Quota::Customers, 99, 1).is_ok());
        assert_eq!(
            tenant.admit(Quota::Customers, 99, 2).unwrap_err(),
            TenancyError::QuotaExceeded {
                tenant: tenant.id(),
                quota: Quota::Customers,
                limit: 100,
                used: 99,
                requested: 2
            }
        );
        assert!(tenant.admit(Quota::ApiCallsPerHour, 0, 1).is_err());
        let unmetered = Tenant::registered(TenantId::from_u128(2), "Legacy ISP", at(0)).unwrap();
        assert!(unmetered.admit(Quota::Customers, u64::MAX - 1, 1).is_ok());
        assert!(unmetered.is_entitled(&Feature::SCALE_OUT_BILL_RUNS));
        assert_eq!(
            tenant.require_feature(&Feature::PARTNERS).unwrap_err(),
            TenancyError::NotEntitled {
                tenant: tenant.id(),
                feature: Feature::PARTNERS,
                plan: PlanCode::STARTER
            }
        );
    }

    #[test]
    fn an_archived_tenant_is_read_only() {
        let mut tenant = Tenant::registered(TenantId::from_u128(3), "Gone ISP", at(0)).unwrap();
        tenant
            .transition(TenantStatus::Suspended, Actor::System, at(1), None)
            .unwrap();
        tenant
            .transition(TenantStatus::Archived, Actor::System, at(2), Some("closed"))
            .unwrap();
        let before = tenant.clone();
        let archived = TenancyError::TenantArchived {
            tenant: tenant.id(),
        };
        assert_eq!(tenant.rename("New name").unwrap_err(), archived);
        let plan = PlanCatalog::platform_tiers()
            .unwrap()
            .get(&PlanCode::ENTERPRISE)
            .cloned()
            .unwrap();
        assert_eq!(tenant.assign_plan(plan).unwrap_err(), archived);
        assert_eq!(tenant.admit(Quota::AdminUsers, 0, 1).unwrap_err(), archived);
        for to in TenantStatus::ALL {
            assert!(matches!(
                tenant.transition(to, Actor::System, at(3), None),
                Err(TenancyError::InvalidTransition { .. })
            ));
        }
        assert!(tenant.ensure(Operation::Record).is_ok());
        assert_eq!(tenant, before);
    }

    #[test]
    fn the_version_is_not_part_of_the_stored_body() {
        let tenant = requested().at_version(7);
        let json = serde_json::to_value(&tenant).unwrap();
        assert!(json.get("version").is_none());
        let back: Tenant = serde_json::from_value(json).unwrap();
        assert_eq!(back.version(), 0);
        assert_eq!(back.at_version(7), tenant);
    }
}
