//! [`InMemoryTenancyStore`]: the store traits in memory, for tests and examples.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use dotmac_core::outbox::{MemoryOutbox, OutboxEvent};
use dotmac_core::{CustomerId, StorageError, StorageErrorKind, TenantId};
use uuid::Uuid;

use crate::access::{Role, TenantUser, UserStatus};
use crate::error::TenancyError;
use crate::settings::{CustomerSettings, SettingsLayer};
use crate::store::{AccessStore, QuotaStore, SettingsStore, TenantStore};
use crate::tenant::Tenant;
use crate::usage::{
    PlatformMetric, PlatformUsage, QuotaReport, QuotaUse, RateUse, UsageRecord, rate_window,
};
use crate::vocab::{Operation, Quota, RoleName, TenantStatus, UsageRecordId, UserId};

type Result<T> = std::result::Result<T, TenancyError>;

/// A counted member's time in a quota.
#[derive(Debug, Clone, Copy)]
struct Membership {
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

/// Everything the store holds, behind one lock: a write and its checks are one step.
#[derive(Debug, Default)]
struct State {
    tenants: HashMap<TenantId, Tenant>,
    settings: HashMap<TenantId, SettingsLayer>,
    customer_settings: HashMap<(TenantId, CustomerId), CustomerSettings>,
    users: BTreeMap<(TenantId, UserId), TenantUser>,
    roles: BTreeMap<(TenantId, RoleName), Role>,
    members: HashMap<(TenantId, Quota, Uuid), Membership>,
    counters: HashMap<(TenantId, Quota), u64>,
    windows: HashMap<(TenantId, DateTime<Utc>), u64>,
    records: HashMap<(TenantId, UsageRecordId), UsageRecord>,
}

impl State {
    fn tenant(&self, tenant: TenantId) -> Result<&Tenant> {
        self.tenants
            .get(&tenant)
            .ok_or(TenancyError::UnknownTenant(tenant))
    }

    fn used(&self, tenant: TenantId, quota: Quota) -> u64 {
        self.counters.get(&(tenant, quota)).copied().unwrap_or(0)
    }

    /// The members of `members` not counted now, each once, in order.
    fn new_members(&self, tenant: TenantId, quota: Quota, members: &[Uuid]) -> Vec<Uuid> {
        let mut seen = BTreeSet::new();
        members
            .iter()
            .copied()
            .filter(|m| seen.insert(*m))
            .filter(|m| {
                self.members
                    .get(&(tenant, quota, *m))
                    .is_none_or(|s| s.until.is_some())
            })
            .collect()
    }

    /// Checks an admission of `members` (as [`Tenant::admit`]) and returns the new ones.
    fn check_admission(
        &self,
        tenant: TenantId,
        quota: Quota,
        members: &[Uuid],
    ) -> Result<Vec<Uuid>> {
        let record = self.tenant(tenant)?;
        let fresh = self.new_members(tenant, quota, members);
        record.admit(quota, self.used(tenant, quota), fresh.len() as u64)?;
        Ok(fresh)
    }

    fn apply_admission(
        &mut self,
        tenant: TenantId,
        quota: Quota,
        fresh: &[Uuid],
        at: DateTime<Utc>,
    ) {
        for member in fresh {
            self.members.insert(
                (tenant, quota, *member),
                Membership {
                    since: at,
                    until: None,
                },
            );
        }
        let used = self.counters.entry((tenant, quota)).or_insert(0);
        *used = used.saturating_add(fresh.len() as u64);
    }

    fn release(&mut self, tenant: TenantId, quota: Quota, members: &[Uuid], at: DateTime<Utc>) {
        let mut released = 0_u64;
        for member in members {
            if let Some(m) = self.members.get_mut(&(tenant, quota, *member))
                && m.until.is_none()
            {
                m.until = Some(at);
                released = released.saturating_add(1);
            }
        }
        let used = self.counters.entry((tenant, quota)).or_insert(0);
        *used = used.saturating_sub(released);
    }

    fn quota_use(&self, tenant: TenantId, quota: Quota) -> Result<QuotaUse> {
        let record = self.tenant(tenant)?;
        Ok(QuotaUse::new(
            quota,
            record.limit(quota),
            self.used(tenant, quota),
        ))
    }

    fn configurable(&self, tenant: TenantId) -> Result<&Tenant> {
        let record = self.tenant(tenant)?;
        record.ensure(Operation::Configure)?;
        Ok(record)
    }

    fn subject_taken(&self, tenant: TenantId, user: &TenantUser) -> bool {
        self.users
            .range((tenant, UserId::from_u128(0))..=(tenant, UserId::from_u128(u128::MAX)))
            .any(|(_, u)| u.id() != user.id() && u.subject() == user.subject())
    }
}

/// The store traits in memory. Its outbox events go to a [`MemoryOutbox`] (its own, or one
/// shared with other in-memory stores: [`InMemoryTenancyStore::with_outbox`]), written under
/// the store's lock with the change.
#[derive(Debug, Default)]
pub struct InMemoryTenancyStore {
    state: Mutex<State>,
    outbox: Arc<MemoryOutbox>,
}

fn mismatch(what: &str, found: TenantId, expected: TenantId) -> TenancyError {
    TenancyError::Storage(StorageError::new(
        StorageErrorKind::TenantMismatch,
        format!("{what} belongs to tenant {found}, not to {expected}, the tenant of this call"),
    ))
}

fn count(what: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| TenancyError::TooLarge { what, value })
}

impl InMemoryTenancyStore {
    /// An empty store with its own outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store writing its events to `outbox`.
    pub fn with_outbox(outbox: Arc<MemoryOutbox>) -> Self {
        InMemoryTenancyStore {
            state: Mutex::default(),
            outbox,
        }
    }

    /// The outbox its events go to.
    pub fn outbox(&self) -> &Arc<MemoryOutbox> {
        &self.outbox
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `events` (checked first): called once a write's checks have passed and before
    /// its state changes, so a refused event changes nothing.
    fn push(&self, tenant: TenantId, events: &[OutboxEvent]) -> Result<()> {
        self.outbox.check(tenant, events)?;
        self.outbox.push(tenant, events)?;
        Ok(())
    }
}

impl TenantStore for InMemoryTenancyStore {
    #[tracing::instrument(name = "dotmac.store.insert_tenant", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant.id()))]
    async fn insert_tenant(&self, tenant: &Tenant, events: &[OutboxEvent]) -> Result<()> {
        let mut state = self.lock();
        if state.tenants.contains_key(&tenant.id()) {
            return Err(TenancyError::AlreadyExists {
                what: "tenant",
                id: tenant.id().to_string(),
            });
        }
        self.push(tenant.id(), events)?;
        state
            .tenants
            .insert(tenant.id(), tenant.clone().at_version(1));
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.tenant", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn tenant(&self, tenant: TenantId) -> Result<Option<Tenant>> {
        Ok(self.lock().tenants.get(&tenant).cloned())
    }

    #[tracing::instrument(name = "dotmac.store.list_tenants", level = "debug", skip_all, fields(backend = "memory", limit = limit))]
    async fn list_tenants(&self, after: Option<TenantId>, limit: usize) -> Result<Vec<Tenant>> {
        let state = self.lock();
        let mut page: Vec<&Tenant> = state
            .tenants
            .values()
            .filter(|t| after.is_none_or(|a| t.id() > a))
            .collect();
        page.sort_unstable_by_key(|t| t.id());
        Ok(page.into_iter().take(limit).cloned().collect())
    }

    #[tracing::instrument(name = "dotmac.store.save_tenant", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant.id()))]
    async fn save_tenant(&self, tenant: &Tenant, events: &[OutboxEvent]) -> Result<u64> {
        let mut state = self.lock();
        let stored = state.tenant(tenant.id())?;
        if stored.status() == TenantStatus::Archived {
            return Err(TenancyError::TenantArchived {
                tenant: tenant.id(),
            });
        }
        if stored.version() != tenant.version() {
            return Err(TenancyError::Conflict {
                what: "tenant",
                id: tenant.id().to_string(),
                expected: tenant.version(),
            });
        }
        let version = stored.version().saturating_add(1);
        self.push(tenant.id(), events)?;
        state
            .tenants
            .insert(tenant.id(), tenant.clone().at_version(version));
        Ok(version)
    }
}

impl SettingsStore for InMemoryTenancyStore {
    #[tracing::instrument(name = "dotmac.store.tenant_settings", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn tenant_settings(&self, tenant: TenantId) -> Result<SettingsLayer> {
        Ok(self
            .lock()
            .settings
            .get(&tenant)
            .cloned()
            .unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.put_tenant_settings", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_tenant_settings(
        &self,
        tenant: TenantId,
        settings: &SettingsLayer,
        events: &[OutboxEvent],
    ) -> Result<()> {
        let mut state = self.lock();
        state.configurable(tenant)?;
        self.push(tenant, events)?;
        state.settings.insert(tenant, settings.clone());
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.customer_settings", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn customer_settings(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<CustomerSettings> {
        Ok(self
            .lock()
            .customer_settings
            .get(&(tenant, customer))
            .cloned()
            .unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.put_customer_settings", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_customer_settings(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        settings: &CustomerSettings,
        events: &[OutboxEvent],
    ) -> Result<()> {
        let mut state = self.lock();
        state.configurable(tenant)?;
        self.push(tenant, events)?;
        state
            .customer_settings
            .insert((tenant, customer), settings.clone());
        Ok(())
    }
}

impl AccessStore for InMemoryTenancyStore {
    #[tracing::instrument(name = "dotmac.store.insert_user", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn insert_user(
        &self,
        tenant: TenantId,
        user: &TenantUser,
        events: &[OutboxEvent],
    ) -> Result<QuotaUse> {
        if user.tenant() != tenant {
            return Err(mismatch("user", user.tenant(), tenant));
        }
        let mut state = self.lock();
        state.configurable(tenant)?;
        if state.users.contains_key(&(tenant, user.id())) {
            return Err(TenancyError::AlreadyExists {
                what: "user",
                id: user.id().to_string(),
            });
        }
        if state.subject_taken(tenant, user) {
            return Err(TenancyError::AlreadyExists {
                what: "user subject",
                id: user.subject().to_owned(),
            });
        }
        let member = [user.id().as_uuid()];
        let fresh = if user.status() == UserStatus::Active {
            state.check_admission(tenant, Quota::AdminUsers, &member)?
        } else {
            Vec::new()
        };
        self.push(tenant, events)?;
        state.apply_admission(tenant, Quota::AdminUsers, &fresh, user.created_at());
        state.users.insert((tenant, user.id()), user.clone());
        state.quota_use(tenant, Quota::AdminUsers)
    }

    #[tracing::instrument(name = "dotmac.store.save_user", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn save_user(
        &self,
        tenant: TenantId,
        user: &TenantUser,
        at: DateTime<Utc>,
        events: &[OutboxEvent],
    ) -> Result<QuotaUse> {
        if user.tenant() != tenant {
            return Err(mismatch("user", user.tenant(), tenant));
        }
        let mut state = self.lock();
        state.configurable(tenant)?;
        let stored_user = state
            .users
            .get(&(tenant, user.id()))
            .ok_or(TenancyError::UnknownUser(user.id()))?;
        let stored = stored_user.status();
        crate::access::ensure_owner_remains(
            stored_user,
            user,
            state
                .users
                .range((tenant, crate::vocab::UserId::from_u128(0))..)
                .take_while(|((t, _), _)| *t == tenant)
                .map(|(_, u)| u),
        )?;
        if state.subject_taken(tenant, user) {
            return Err(TenancyError::AlreadyExists {
                what: "user subject",
                id: user.subject().to_owned(),
            });
        }
        let member = [user.id().as_uuid()];
        match (stored, user.status()) {
            (UserStatus::Disabled, UserStatus::Active) => {
                let fresh = state.check_admission(tenant, Quota::AdminUsers, &member)?;
                self.push(tenant, events)?;
                state.apply_admission(tenant, Quota::AdminUsers, &fresh, at);
            }
            (UserStatus::Active, UserStatus::Disabled) => {
                self.push(tenant, events)?;
                state.release(tenant, Quota::AdminUsers, &member, at);
            }
            _ => self.push(tenant, events)?,
        }
        state.users.insert((tenant, user.id()), user.clone());
        state.quota_use(tenant, Quota::AdminUsers)
    }

    #[tracing::instrument(name = "dotmac.store.tenant_user", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn tenant_user(&self, tenant: TenantId, user: UserId) -> Result<Option<TenantUser>> {
        Ok(self.lock().users.get(&(tenant, user)).cloned())
    }

    #[tracing::instrument(name = "dotmac.store.user_by_subject", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn user_by_subject(&self, tenant: TenantId, subject: &str) -> Result<Option<TenantUser>> {
        Ok(self
            .lock()
            .users
            .values()
            .find(|u| u.tenant() == tenant && u.subject() == subject)
            .cloned())
    }

    #[tracing::instrument(name = "dotmac.store.tenant_users", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn tenant_users(&self, tenant: TenantId) -> Result<Vec<TenantUser>> {
        Ok(self
            .lock()
            .users
            .values()
            .filter(|u| u.tenant() == tenant)
            .cloned()
            .collect())
    }

    #[tracing::instrument(name = "dotmac.store.put_role", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_role(&self, tenant: TenantId, role: &Role, events: &[OutboxEvent]) -> Result<()> {
        if role.name().is_built_in() {
            return Err(TenancyError::BuiltInRole(role.name().clone()));
        }
        let mut state = self.lock();
        state.configurable(tenant)?;
        self.push(tenant, events)?;
        state
            .roles
            .insert((tenant, role.name().clone()), role.clone());
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.tenant_roles", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn tenant_roles(&self, tenant: TenantId) -> Result<Vec<Role>> {
        Ok(self
            .lock()
            .roles
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .map(|(_, r)| r.clone())
            .collect())
    }
}

impl QuotaStore for InMemoryTenancyStore {
    #[tracing::instrument(name = "dotmac.store.admit_customers", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, customers = customers.len()))]
    async fn admit_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
        at: DateTime<Utc>,
    ) -> Result<QuotaUse> {
        let members: Vec<Uuid> = customers.iter().map(CustomerId::as_uuid).collect();
        let mut state = self.lock();
        let fresh = state.check_admission(tenant, Quota::Customers, &members)?;
        state.apply_admission(tenant, Quota::Customers, &fresh, at);
        state.quota_use(tenant, Quota::Customers)
    }

    #[tracing::instrument(name = "dotmac.store.release_customers", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, customers = customers.len()))]
    async fn release_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
        at: DateTime<Utc>,
    ) -> Result<QuotaUse> {
        let members: Vec<Uuid> = customers.iter().map(CustomerId::as_uuid).collect();
        let mut state = self.lock();
        state.configurable(tenant)?;
        state.release(tenant, Quota::Customers, &members, at);
        state.quota_use(tenant, Quota::Customers)
    }

    #[tracing::instrument(name = "dotmac.store.admit_api_calls", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, calls = calls))]
    async fn admit_api_calls(
        &self,
        tenant: TenantId,
        calls: u64,
        at: DateTime<Utc>,
    ) -> Result<RateUse> {
        count("API calls", calls)?;
        let (window, _) = rate_window(at);
        let mut state = self.lock();
        let record = state.tenant(tenant)?;
        let limit = record.limit(Quota::ApiCallsPerHour);
        let used = state.windows.get(&(tenant, window)).copied().unwrap_or(0);
        record.admit(Quota::ApiCallsPerHour, used, calls)?;
        let used = used.saturating_add(calls);
        state.windows.insert((tenant, window), used);
        Ok(RateUse::new(limit, used, at))
    }

    #[tracing::instrument(name = "dotmac.store.quota_use", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn quota_use(&self, tenant: TenantId, at: DateTime<Utc>) -> Result<QuotaReport> {
        let state = self.lock();
        let record = state.tenant(tenant)?;
        let (window, _) = rate_window(at);
        Ok(QuotaReport {
            customers: state.quota_use(tenant, Quota::Customers)?,
            admin_users: state.quota_use(tenant, Quota::AdminUsers)?,
            api_calls: RateUse::new(
                record.limit(Quota::ApiCallsPerHour),
                state.windows.get(&(tenant, window)).copied().unwrap_or(0),
                at,
            ),
        })
    }

    #[tracing::instrument(name = "dotmac.store.record_platform_usage", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, records = records.len()))]
    async fn record_platform_usage(
        &self,
        tenant: TenantId,
        records: &[UsageRecord],
    ) -> Result<u64> {
        for record in records {
            count("usage quantity", record.quantity)?;
        }
        let mut state = self.lock();
        state.tenant(tenant)?;
        let mut new = 0_u64;
        for record in records {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                state.records.entry((tenant, record.id))
            {
                slot.insert(*record);
                new = new.saturating_add(1);
            }
        }
        Ok(new)
    }

    #[tracing::instrument(name = "dotmac.store.platform_usage", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn platform_usage(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<PlatformUsage> {
        let state = self.lock();
        let within = |at: DateTime<Utc>| from <= at && at < to;
        let mut usage = PlatformUsage::empty(from, to);
        for ((t, quota, _), m) in &state.members {
            if *t != tenant || *quota != Quota::Customers {
                continue;
            }
            if m.since < to && m.until.is_none_or(|until| until >= to) {
                usage.customers = usage.customers.saturating_add(1);
            }
            if within(m.since) {
                usage.customers_added = usage.customers_added.saturating_add(1);
            }
        }
        for ((t, _), record) in &state.records {
            if *t != tenant || !within(record.at) {
                continue;
            }
            let figure = match record.metric {
                PlatformMetric::InvoicesIssued => &mut usage.invoices_issued,
                PlatformMetric::EventsIngested => &mut usage.events_ingested,
            };
            *figure = figure.saturating_add(record.quantity);
        }
        for ((t, window), used) in &state.windows {
            if *t == tenant && within(*window) {
                usage.api_calls = usage.api_calls.saturating_add(*used);
            }
        }
        Ok(usage)
    }
}
