//! The tenancy service: tenants through their lifecycle, plans, settings, users and roles, and
//! quota counts, over a [`TenancyStore`] and a [`Clock`]. Every change is one store write
//! with its outbox events; the events are returned too.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{Clock, CustomerId, DomainEvent, Period, TenantId, local_midnight};

use crate::access::{AccessPolicy, Decision, Denial, NewUser, Role, TenantUser, UserStatus};
use crate::error::TenancyError;
use crate::event::{SettingsScope, TenancyEvent};
use crate::plan::PlanCatalog;
use crate::settings::{CustomerSettings, ResolvedSettings, Settings, SettingsLayer, resolve};
use crate::store::TenancyStore;
use crate::tenant::{NewTenant, Tenant};
use crate::usage::{PlatformUsage, QuotaReport, QuotaUse, RateUse, UsageRecord};
use crate::vocab::{Actor, Feature, Permission, PlanCode, RoleName, TenantStatus, UserId};

type Result<T> = std::result::Result<T, TenancyError>;

/// The events of one call, as written to the outbox.
pub type TenancyEvents = Vec<DomainEvent<TenancyEvent>>;

/// How many times a tenant change is read again and retried when another writer saved the
/// tenant first.
const SAVE_ATTEMPTS: usize = 5;

/// The platform's side of tenancy: its plan catalogue and its default settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenancySettings {
    /// The plans tenants can be put on.
    pub catalog: PlanCatalog,
    /// The platform's defaults: the bottom layer of every tenant's settings.
    pub platform: Settings,
}

impl TenancySettings {
    /// The settings of a platform offering `catalog`, with DotMac's platform defaults
    /// ([`Settings::platform_defaults`]).
    pub fn new(catalog: PlanCatalog) -> Self {
        TenancySettings {
            catalog,
            platform: Settings::platform_defaults(),
        }
    }

    /// The platform's tiers ([`PlanCatalog::platform_tiers`]) and defaults.
    ///
    /// # Errors
    ///
    /// As [`PlanCatalog::platform_tiers`].
    pub fn platform_tiers() -> Result<Self> {
        Ok(TenancySettings::new(PlanCatalog::platform_tiers()?))
    }

    /// With `platform` as the platform's defaults.
    #[must_use]
    pub fn with_platform_defaults(mut self, platform: Settings) -> Self {
        self.platform = platform;
        self
    }
}

/// Tenants, plans, settings, users and quotas over a store and a clock.
///
/// A cheap handle: the store, the clock and the settings sit behind one `Arc`.
///
/// ```
/// # futures_block_on(async {
/// use dotmac_core::{FixedClock, TenantId};
/// use dotmac_tenancy::{
///     Actor, InMemoryTenancyStore, NewTenant, PlanCode, Quota, TenancyError, TenancyService,
///     TenancySettings, TenantStatus,
/// };
///
/// let clock = FixedClock::new(chrono::DateTime::UNIX_EPOCH);
/// let tenancy = TenancyService::new(InMemoryTenancyStore::new(), clock, TenancySettings::platform_tiers()?);
/// let ops = Actor::platform("ops");
/// let tenant = TenantId::new();
/// tenancy.request_tenant(tenant, NewTenant::new("Acme Fibre").plan(PlanCode::STARTER), ops.clone()).await?;
/// tenancy.transition(tenant, TenantStatus::Provisioning, ops.clone(), None).await?;
/// tenancy.transition(tenant, TenantStatus::Active, ops.clone(), None).await?;
///
/// let customers: Vec<_> = (0..100).map(dotmac_core::CustomerId::from_u128).collect();
/// assert_eq!(tenancy.admit_customers(tenant, &customers).await?.used, 100);
/// let one_more = tenancy.admit_customers(tenant, &[dotmac_core::CustomerId::from_u128(100)]).await;
/// assert!(matches!(one_more, Err(TenancyError::QuotaExceeded { quota: Quota::Customers, limit: 100, used: 100, .. })));
/// # Ok::<(), TenancyError>(()) }).unwrap();
/// # fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = Context::from_waker(Waker::noop());
/// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// ```
pub struct TenancyService<S, C> {
    inner: Arc<Inner<S, C>>,
}

struct Inner<S, C> {
    store: S,
    clock: C,
    settings: TenancySettings,
}

impl<S, C> Clone for TenancyService<S, C> {
    fn clone(&self) -> Self {
        TenancyService {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, C> std::fmt::Debug for TenancyService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenancyService")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

fn outbox(events: &TenancyEvents) -> Vec<OutboxEvent> {
    events.iter().cloned().map(OutboxEvent::new).collect()
}

impl<S: TenancyStore, C: Clock> TenancyService<S, C> {
    /// A service over `store`, reading time from `clock`, for the platform of `settings`.
    pub fn new(store: S, clock: C, settings: TenancySettings) -> Self {
        TenancyService {
            inner: Arc::new(Inner {
                store,
                clock,
                settings,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }

    /// The platform's settings.
    pub fn settings(&self) -> &TenancySettings {
        &self.inner.settings
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn event(&self, tenant: TenantId, payload: TenancyEvent) -> DomainEvent<TenancyEvent> {
        DomainEvent::new(tenant, &self.inner.clock, payload)
    }

    fn plan(&self, code: &PlanCode) -> Result<crate::plan::TenantPlan> {
        self.inner
            .settings
            .catalog
            .get(code)
            .cloned()
            .ok_or_else(|| TenancyError::UnknownPlan(code.clone()))
    }

    /// The tenant.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownTenant`]; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.tenant", level = "debug", skip_all, fields(tenant = %tenant))]
    pub async fn tenant(&self, tenant: TenantId) -> Result<Tenant> {
        self.inner
            .store
            .tenant(tenant)
            .await?
            .ok_or(TenancyError::UnknownTenant(tenant))
    }

    /// Every tenant of the platform, in id order, one page at a time (see
    /// [`TenantStore::list_tenants`](crate::TenantStore::list_tenants)): the platform
    /// operator's view. Page on with the last id returned as `after`.
    ///
    /// # Errors
    ///
    /// Storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.list_tenants", level = "debug", skip_all, fields(limit = limit))]
    pub async fn list_tenants(&self, after: Option<TenantId>, limit: usize) -> Result<Vec<Tenant>> {
        self.inner.store.list_tenants(after, limit).await
    }

    /// Every tenant of the platform with its use of the platform in `period` (local dates in
    /// `zone`), in id order: what the platform operator bills its tenants from. Reads the
    /// tenants a page of `page` at a time, then each one's usage.
    ///
    /// # Errors
    ///
    /// As [`TenancyService::platform_usage`].
    #[tracing::instrument(name = "dotmac.tenancy.platform_report", level = "debug", skip_all)]
    pub async fn platform_report(
        &self,
        period: Period,
        zone: Tz,
        page: usize,
    ) -> Result<Vec<(Tenant, PlatformUsage)>> {
        let page = page.max(1);
        let mut report = Vec::new();
        let mut after = None;
        loop {
            let tenants = self.inner.store.list_tenants(after, page).await?;
            let full = tenants.len() == page;
            after = tenants.last().map(Tenant::id);
            for tenant in tenants {
                let usage = self.platform_usage(tenant.id(), period, zone).await?;
                report.push((tenant, usage));
            }
            if !full {
                return Ok(report);
            }
        }
    }

    /// Asks for a tenant `id` ([`TenantStatus::Requested`]), on a plan of the catalogue.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownPlan`]; [`TenancyError::InvalidName`] for the name or actor;
    /// [`TenancyError::AlreadyExists`]; storage failures. Nothing is written then.
    #[tracing::instrument(name = "dotmac.tenancy.request_tenant", level = "info", skip_all, fields(tenant = %id))]
    pub async fn request_tenant(
        &self,
        id: TenantId,
        new: NewTenant,
        actor: Actor,
    ) -> Result<(Tenant, TenancyEvents)> {
        let plan = new.plan.as_ref().map(|code| self.plan(code)).transpose()?;
        let tenant = Tenant::request(id, &new.name, plan, actor.clone(), self.now())?;
        let events = vec![self.event(
            id,
            TenancyEvent::TenantRequested {
                tenant: id,
                name: tenant.name().to_owned(),
                plan: new.plan,
                actor,
            },
        )];
        self.inner
            .store
            .insert_tenant(&tenant, &outbox(&events))
            .await?;
        Ok((tenant.at_version(1), events))
    }

    /// Reads the tenant, applies `change` and saves it (with the events `change` returns),
    /// reading again and retrying when another writer saved it first.
    async fn change_tenant(
        &self,
        tenant: TenantId,
        change: impl Fn(&mut Tenant) -> Result<Vec<TenancyEvent>>,
    ) -> Result<(Tenant, TenancyEvents)> {
        for attempt in 1..=SAVE_ATTEMPTS {
            let mut record = self.tenant(tenant).await?;
            let payloads = change(&mut record)?;
            let events: TenancyEvents = payloads
                .into_iter()
                .map(|p| self.event(tenant, p))
                .collect();
            match self
                .inner
                .store
                .save_tenant(&record, &outbox(&events))
                .await
            {
                Ok(version) => return Ok((record.at_version(version), events)),
                Err(TenancyError::Conflict { .. }) if attempt < SAVE_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
        Err(TenancyError::Conflict {
            what: "tenant",
            id: tenant.to_string(),
            expected: 0,
        })
    }

    /// Moves the tenant to `to` (see [`TenantStatus`]), recording `actor`, the clock's
    /// instant and `reason` in its history, with a `tenancy.tenant_<status>` event.
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidTransition`] naming both statuses; [`TenancyError::UnknownTenant`];
    /// [`TenancyError::InvalidName`] for the reason or actor; storage failures. Nothing is
    /// written then.
    #[tracing::instrument(name = "dotmac.tenancy.transition", level = "info", skip_all, fields(tenant = %tenant, to = %to))]
    pub async fn transition(
        &self,
        tenant: TenantId,
        to: TenantStatus,
        actor: Actor,
        reason: Option<&str>,
    ) -> Result<(Tenant, TenancyEvents)> {
        let at = self.now();
        self.change_tenant(tenant, |record| {
            let change = record.transition(to, actor.clone(), at, reason)?;
            Ok(vec![TenancyEvent::StatusChanged { tenant, change }])
        })
        .await
    }

    /// Puts the tenant on the catalogue's plan `code` (a copy: see
    /// [`Tenant::assign_plan`]), with a `tenancy.plan_assigned` event.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownPlan`]; [`TenancyError::TenantArchived`];
    /// [`TenancyError::UnknownTenant`]; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.assign_plan", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn assign_plan(
        &self,
        tenant: TenantId,
        code: &PlanCode,
        actor: Actor,
    ) -> Result<(Tenant, TenancyEvents)> {
        let plan = self.plan(code)?;
        self.change_tenant(tenant, |record| {
            let before = record.assign_plan(plan.clone())?;
            Ok(vec![TenancyEvent::PlanAssigned {
                tenant,
                from: before.map(|p| p.code().clone()),
                to: code.clone(),
                actor: actor.clone(),
            }])
        })
        .await
    }

    /// Whether the tenant's plan includes `feature`.
    ///
    /// # Errors
    ///
    /// [`TenancyError::NotEntitled`]; [`TenancyError::UnknownTenant`]; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.require_feature", level = "debug", skip_all, fields(tenant = %tenant))]
    pub async fn require_feature(&self, tenant: TenantId, feature: &Feature) -> Result<()> {
        self.tenant(tenant).await?.require_feature(feature)
    }

    /// The tenant's settings, resolved: platform defaults, then its plan's, then its own.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownTenant`]; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.settings_of", level = "debug", skip_all, fields(tenant = %tenant))]
    pub async fn settings_of(&self, tenant: TenantId) -> Result<ResolvedSettings> {
        let record = self.tenant(tenant).await?;
        let own = self.inner.store.tenant_settings(tenant).await?;
        Ok(resolve(
            &self.inner.settings.platform,
            record.plan_settings(),
            &own,
            None,
        ))
    }

    /// A customer's settings, resolved: the tenant's, then the customer's own where a
    /// setting may be per customer.
    ///
    /// # Errors
    ///
    /// As [`TenancyService::settings_of`].
    #[tracing::instrument(name = "dotmac.tenancy.customer_settings_of", level = "debug", skip_all, fields(tenant = %tenant))]
    pub async fn customer_settings_of(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<ResolvedSettings> {
        let record = self.tenant(tenant).await?;
        let own = self.inner.store.tenant_settings(tenant).await?;
        let theirs = self.inner.store.customer_settings(tenant, customer).await?;
        Ok(resolve(
            &self.inner.settings.platform,
            record.plan_settings(),
            &own,
            Some((customer, &theirs)),
        ))
    }

    /// Replaces the tenant's own settings layer, with a `tenancy.settings_changed` event.
    ///
    /// # Errors
    ///
    /// [`TenancyError::TenantArchived`]; [`TenancyError::UnknownTenant`]; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.update_settings", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn update_settings(
        &self,
        tenant: TenantId,
        settings: &SettingsLayer,
        actor: Actor,
    ) -> Result<TenancyEvents> {
        let events = vec![self.event(
            tenant,
            TenancyEvent::SettingsChanged {
                tenant,
                scope: SettingsScope::Tenant,
                actor,
            },
        )];
        self.inner
            .store
            .put_tenant_settings(tenant, settings, &outbox(&events))
            .await?;
        Ok(events)
    }

    /// Replaces a customer's own settings, with a `tenancy.settings_changed` event.
    ///
    /// # Errors
    ///
    /// As [`TenancyService::update_settings`].
    #[tracing::instrument(name = "dotmac.tenancy.update_customer_settings", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn update_customer_settings(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        settings: &CustomerSettings,
        actor: Actor,
    ) -> Result<TenancyEvents> {
        let events = vec![self.event(
            tenant,
            TenancyEvent::SettingsChanged {
                tenant,
                scope: SettingsScope::Customer(customer),
                actor,
            },
        )];
        self.inner
            .store
            .put_customer_settings(tenant, customer, settings, &outbox(&events))
            .await?;
        Ok(events)
    }

    /// Adds a user (active, holding a seat of the admin-user quota), with a
    /// `tenancy.user_added` event. Returns the user and the quota's use.
    ///
    /// # Errors
    ///
    /// [`TenancyError::QuotaExceeded`]; [`TenancyError::AlreadyExists`] for a subject in use;
    /// [`TenancyError::InvalidName`]; what the tenant's status refuses; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.add_user", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn add_user(
        &self,
        tenant: TenantId,
        new: NewUser,
        actor: Actor,
    ) -> Result<(TenantUser, QuotaUse, TenancyEvents)> {
        let user = TenantUser::new(UserId::new(), tenant, new, self.now())?;
        let events = vec![self.event(
            tenant,
            TenancyEvent::UserAdded {
                tenant,
                user: user.id(),
                roles: user.roles().clone(),
                actor,
            },
        )];
        let used = self
            .inner
            .store
            .insert_user(tenant, &user, &outbox(&events))
            .await?;
        Ok((user, used, events))
    }

    async fn change_user(
        &self,
        tenant: TenantId,
        user: UserId,
        actor: Actor,
        change: impl FnOnce(&mut TenantUser),
    ) -> Result<(TenantUser, QuotaUse, TenancyEvents)> {
        let mut record = self
            .inner
            .store
            .tenant_user(tenant, user)
            .await?
            .ok_or(TenancyError::UnknownUser(user))?;
        change(&mut record);
        let events = vec![self.event(
            tenant,
            TenancyEvent::UserChanged {
                tenant,
                user,
                roles: record.roles().clone(),
                status: record.status(),
                actor,
            },
        )];
        let used = self
            .inner
            .store
            .save_user(tenant, &record, self.now(), &outbox(&events))
            .await?;
        Ok((record, used, events))
    }

    /// Replaces a user's roles, with a `tenancy.user_changed` event.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownUser`]; what the tenant's status refuses; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.set_user_roles", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn set_user_roles(
        &self,
        tenant: TenantId,
        user: UserId,
        roles: BTreeSet<RoleName>,
        actor: Actor,
    ) -> Result<(TenantUser, QuotaUse, TenancyEvents)> {
        self.change_user(tenant, user, actor, |record| {
            for role in record.roles().clone() {
                record.revoke(&role);
            }
            for role in roles {
                record.grant(role);
            }
        })
        .await
    }

    /// Enables or disables a user (disabling frees their seat, enabling takes one), with a
    /// `tenancy.user_changed` event.
    ///
    /// # Errors
    ///
    /// [`TenancyError::QuotaExceeded`] enabling a user with every seat taken;
    /// [`TenancyError::UnknownUser`]; what the tenant's status refuses; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.set_user_status", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn set_user_status(
        &self,
        tenant: TenantId,
        user: UserId,
        status: UserStatus,
        actor: Actor,
    ) -> Result<(TenantUser, QuotaUse, TenancyEvents)> {
        self.change_user(tenant, user, actor, |record| record.set_status(status))
            .await
    }

    /// Defines (or redefines) a custom role, with a `tenancy.role_saved` event.
    ///
    /// # Errors
    ///
    /// [`TenancyError::BuiltInRole`]; what the tenant's status refuses; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.save_role", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn save_role(
        &self,
        tenant: TenantId,
        role: &Role,
        actor: Actor,
    ) -> Result<TenancyEvents> {
        let events = vec![self.event(
            tenant,
            TenancyEvent::RoleSaved {
                tenant,
                role: role.name().clone(),
                actor,
            },
        )];
        self.inner
            .store
            .put_role(tenant, role, &outbox(&events))
            .await?;
        Ok(events)
    }

    /// The tenant's access policy: its status and custom roles.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownTenant`]; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.access_policy", level = "debug", skip_all, fields(tenant = %tenant))]
    pub async fn access_policy(&self, tenant: TenantId) -> Result<AccessPolicy> {
        let record = self.tenant(tenant).await?;
        let roles = self.inner.store.tenant_roles(tenant).await?;
        Ok(AccessPolicy::new(tenant, record.status(), roles))
    }

    /// May the user the identity provider knows as `subject` do `permission`? An unknown
    /// subject is denied ([`Denial::UnknownUser`]). Authentication (is the caller really
    /// `subject`?) is the embedder's.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownTenant`]; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.authorize_subject", level = "debug", skip_all, fields(tenant = %tenant, permission = %permission))]
    pub async fn authorize_subject(
        &self,
        tenant: TenantId,
        subject: &str,
        permission: Permission,
    ) -> Result<Decision> {
        let policy = self.access_policy(tenant).await?;
        Ok(
            match self.inner.store.user_by_subject(tenant, subject).await? {
                Some(user) => policy.authorize(&user, permission),
                None => Decision::Denied(Denial::UnknownUser),
            },
        )
    }

    /// Counts new customers against the quota (see
    /// [`QuotaStore::admit_customers`](crate::QuotaStore::admit_customers)); call it where
    /// customers are created, in the same request.
    ///
    /// # Errors
    ///
    /// [`TenancyError::QuotaExceeded`]; what the tenant's status refuses; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.admit_customers", level = "info", skip_all, fields(tenant = %tenant, customers = customers.len()))]
    pub async fn admit_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<QuotaUse> {
        self.inner
            .store
            .admit_customers(tenant, customers, self.now())
            .await
    }

    /// Stops counting closed customers.
    ///
    /// # Errors
    ///
    /// What the tenant's status refuses; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.release_customers", level = "info", skip_all, fields(tenant = %tenant, customers = customers.len()))]
    pub async fn release_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<QuotaUse> {
        self.inner
            .store
            .release_customers(tenant, customers, self.now())
            .await
    }

    /// Counts `calls` API calls in the current hour (see [`crate::usage`] for the window).
    ///
    /// # Errors
    ///
    /// [`TenancyError::QuotaExceeded`]; what the tenant's status refuses; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.admit_api_calls", level = "info", skip_all, fields(tenant = %tenant, calls = calls))]
    pub async fn admit_api_calls(&self, tenant: TenantId, calls: u64) -> Result<RateUse> {
        self.inner
            .store
            .admit_api_calls(tenant, calls, self.now())
            .await
    }

    /// Every quota's use now.
    ///
    /// # Errors
    ///
    /// [`TenancyError::UnknownTenant`]; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.quota_use", level = "debug", skip_all, fields(tenant = %tenant))]
    pub async fn quota_use(&self, tenant: TenantId) -> Result<QuotaReport> {
        self.inner.store.quota_use(tenant, self.now()).await
    }

    /// Records measurements of the tenant (invoices issued, events ingested); returns how
    /// many were new.
    ///
    /// # Errors
    ///
    /// As [`QuotaStore::record_platform_usage`](crate::QuotaStore::record_platform_usage).
    #[tracing::instrument(name = "dotmac.tenancy.record_usage", level = "info", skip_all, fields(tenant = %tenant, records = records.len()))]
    pub async fn record_usage(&self, tenant: TenantId, records: &[UsageRecord]) -> Result<u64> {
        self.inner
            .store
            .record_platform_usage(tenant, records)
            .await
    }

    /// The tenant's use of the platform in `period` (local dates in `zone`, the platform's
    /// billing zone for its tenants).
    ///
    /// # Errors
    ///
    /// [`TenancyError::Core`] for a day with no representable start; storage failures.
    #[tracing::instrument(name = "dotmac.tenancy.platform_usage", level = "debug", skip_all, fields(tenant = %tenant))]
    pub async fn platform_usage(
        &self,
        tenant: TenantId,
        period: Period,
        zone: Tz,
    ) -> Result<PlatformUsage> {
        let from = local_midnight(zone, period.start())?;
        let to = local_midnight(zone, period.end())?;
        self.inner.store.platform_usage(tenant, from, to).await
    }
}
