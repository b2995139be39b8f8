//! [`CustomerService`]: customers, onboarding, network services and fair usage over a store
//! and a clock. Every change is one store write with its outbox events: the customer's events
//! and, when the network must hear of it, a [`ProvisioningCommand`].

use std::net::Ipv4Addr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{Clock, CustomerId, DomainEvent, PlanId, SubscriptionId, TenantId};
use serde::{Deserialize, Serialize};

use crate::customer::{Customer, CustomerStatus, NewCustomer, OnboardingPlan, OnboardingStepKind};
use crate::error::{CustomersError, Result};
use crate::event::CustomerEvent;
use crate::fup::{FupAction, FupVerdict, TopUp};
use crate::network::{
    Addressing, NetworkService, NewService, ProvisioningAction, ServiceStatus, SuspendReason,
    TechnicalProfile, Throttle,
};
use crate::pool::IpPool;
use crate::provisioning::ProvisioningCommand;
use crate::store::CustomersStore;
use crate::vocab::ServiceId;

/// How many times a write lost to a concurrent writer is tried again.
const ATTEMPTS: u32 = 16;

/// The service's settings.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CustomersSettings {
    /// The onboarding checklist a signed customer gets.
    pub onboarding: OnboardingPlan,
    /// The technical profile of each billing plan that is an internet service (its speed,
    /// burst, data cap and fair-usage policy): what [`CustomerService::create_service_on_plan`]
    /// gives a new service and [`CustomerService::follow_plan`] moves a service to.
    plan_profiles: std::collections::BTreeMap<PlanId, TechnicalProfile>,
}

impl CustomersSettings {
    /// With `profile` as the technical profile of `plan` (its addressing is the default of a
    /// new service on the plan; a service keeps its own address, VLAN and CPE across plans).
    pub fn with_plan_profile(mut self, plan: PlanId, profile: TechnicalProfile) -> Self {
        self.plan_profiles.insert(plan, profile);
        self
    }

    /// The technical profile of `plan`, if it has one.
    pub fn plan_profile(&self, plan: PlanId) -> Option<&TechnicalProfile> {
        self.plan_profiles.get(&plan)
    }
}

/// A new service on a plan: [`NewService`] with the plan's technical profile
/// ([`CustomersSettings::with_plan_profile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanService {
    /// The customer.
    pub customer: CustomerId,
    /// The billing subscription it delivers.
    pub subscription: SubscriptionId,
    /// The subscription's plan.
    pub plan: PlanId,
    /// The PPPoE / RADIUS user name (unique per tenant).
    pub username: String,
    /// The RADIUS password.
    pub password: String,
}

impl PlanService {
    /// A service for `subscription` (of `customer`, on `plan`) with these credentials.
    pub fn new(
        customer: CustomerId,
        subscription: SubscriptionId,
        plan: PlanId,
        username: &str,
        password: &str,
    ) -> Self {
        PlanService {
            customer,
            subscription,
            plan,
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }
}

/// An overdue onboarding step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdueStep {
    /// The customer.
    pub customer: CustomerId,
    /// The step.
    pub step: OnboardingStepKind,
    /// When it was due.
    pub due: DateTime<Utc>,
}

/// What counting usage did to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageOutcome {
    /// The service.
    pub service: ServiceId,
    /// Whether the sample counted (not in a free window, a policy present).
    pub counted: bool,
    /// The verdict now.
    pub verdict: FupVerdict,
    /// Whether the network was told of a change.
    pub changed: bool,
}

struct Inner<S, C> {
    store: S,
    clock: C,
    settings: CustomersSettings,
}

/// Customers and their network services.
pub struct CustomerService<S, C> {
    inner: Arc<Inner<S, C>>,
}

impl<S, C> Clone for CustomerService<S, C> {
    fn clone(&self) -> Self {
        CustomerService {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, C> std::fmt::Debug for CustomerService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerService").finish_non_exhaustive()
    }
}

impl<S: CustomersStore, C: Clock> CustomerService<S, C> {
    /// The service over `store` and `clock`.
    pub fn new(store: S, clock: C, settings: CustomersSettings) -> Self {
        CustomerService {
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

    /// The settings.
    pub fn settings(&self) -> &CustomersSettings {
        &self.inner.settings
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn event(&self, tenant: TenantId, payload: CustomerEvent) -> OutboxEvent {
        OutboxEvent::new(DomainEvent::new(tenant, &self.inner.clock, payload))
    }

    fn command(&self, tenant: TenantId, command: ProvisioningCommand) -> OutboxEvent {
        OutboxEvent::new(DomainEvent::new(tenant, &self.inner.clock, command))
    }

    async fn customer_of(&self, tenant: TenantId, id: CustomerId) -> Result<Customer> {
        self.inner
            .store
            .customer(tenant, id)
            .await?
            .ok_or_else(|| CustomersError::NotFound {
                what: "customer",
                id: id.to_string(),
            })
    }

    async fn service_of(&self, tenant: TenantId, id: ServiceId) -> Result<NetworkService> {
        self.inner
            .store
            .service(tenant, id)
            .await?
            .ok_or_else(|| CustomersError::NotFound {
                what: "service",
                id: id.to_string(),
            })
    }

    /// A new customer; `id` is its billing customer's id.
    ///
    /// # Errors
    ///
    /// As [`Customer::new`]; `AlreadyExists` for a known id.
    #[tracing::instrument(name = "dotmac.customers.create_customer", skip_all, fields(tenant = %tenant))]
    pub async fn create_customer(
        &self,
        tenant: TenantId,
        id: CustomerId,
        new: NewCustomer,
    ) -> Result<Customer> {
        let customer = Customer::new(id, new, &self.inner.settings.onboarding, self.now())?;
        let event = self.event(
            tenant,
            CustomerEvent::CustomerCreated {
                customer: id,
                status: customer.status(),
            },
        );
        self.inner
            .store
            .insert_customer(tenant, &customer, &[event])
            .await?;
        Ok(customer)
    }

    /// A customer by id.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub async fn customer(&self, tenant: TenantId, id: CustomerId) -> Result<Customer> {
        self.customer_of(tenant, id).await
    }

    /// Moves a customer through its lifecycle (to the status it has: no change).
    ///
    /// # Errors
    ///
    /// `NotFound`, `InvalidTransition` (nothing changes).
    #[tracing::instrument(name = "dotmac.customers.change_status", skip_all, fields(tenant = %tenant))]
    pub async fn change_status(
        &self,
        tenant: TenantId,
        id: CustomerId,
        to: CustomerStatus,
        reason: &str,
    ) -> Result<Customer> {
        for _ in 0..ATTEMPTS {
            let mut customer = self.customer_of(tenant, id).await?;
            let read = customer.version();
            let Some(change) =
                customer.transition(to, reason, &self.inner.settings.onboarding, self.now())?
            else {
                return Ok(customer);
            };
            let event = self.event(
                tenant,
                CustomerEvent::StatusChanged {
                    customer: id,
                    from: change.from,
                    to: change.to,
                    reason: change.reason,
                },
            );
            match self
                .inner
                .store
                .save_customer(tenant, &customer, read, &[event])
                .await
            {
                Err(CustomersError::ConcurrentUpdate { .. }) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(customer),
            }
        }
        Err(CustomersError::ConcurrentUpdate {
            what: "customer",
            id: id.to_string(),
            expected: 0,
        })
    }

    /// Marks an onboarding step done (again: no change).
    ///
    /// # Errors
    ///
    /// `NotFound` for the customer or the step.
    pub async fn complete_onboarding_step(
        &self,
        tenant: TenantId,
        id: CustomerId,
        step: OnboardingStepKind,
    ) -> Result<Customer> {
        for _ in 0..ATTEMPTS {
            let mut customer = self.customer_of(tenant, id).await?;
            let read = customer.version();
            let at = self.now();
            if !customer.complete_step(&step, at)? {
                return Ok(customer);
            }
            let event = self.event(
                tenant,
                CustomerEvent::OnboardingStepCompleted {
                    customer: id,
                    step: step.clone(),
                    at,
                },
            );
            match self
                .inner
                .store
                .save_customer(tenant, &customer, read, &[event])
                .await
            {
                Err(CustomersError::ConcurrentUpdate { .. }) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(customer),
            }
        }
        Err(CustomersError::ConcurrentUpdate {
            what: "customer",
            id: id.to_string(),
            expected: 0,
        })
    }

    /// Every onboarding step past its due time, oldest due first.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    pub async fn overdue_onboarding(&self, tenant: TenantId) -> Result<Vec<OverdueStep>> {
        let now = self.now();
        let mut overdue: Vec<OverdueStep> = self
            .inner
            .store
            .customers_in_status(tenant, CustomerStatus::Onboarding)
            .await?
            .iter()
            .flat_map(|c| {
                c.overdue_steps(now).into_iter().map(|s| OverdueStep {
                    customer: c.id(),
                    step: s.kind.clone(),
                    due: s.due,
                })
            })
            .collect();
        overdue.sort_by_key(|o| (o.due, o.customer));
        Ok(overdue)
    }

    /// Saves an address pool.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    pub async fn save_pool(&self, tenant: TenantId, pool: &IpPool) -> Result<()> {
        self.inner.store.save_pool(tenant, pool).await
    }

    /// A pending service for a customer's subscription, with its address: the lowest free
    /// one of its pool (a concurrent creator that took it first makes this call take the
    /// next), or its static one.
    ///
    /// # Errors
    ///
    /// `NotFound` for the customer or the pool, `InvalidInput` for bad credentials or a
    /// profile, `AlreadyExists` for a user name in use, `PoolExhausted` when no address is free, `ConcurrentUpdate` when every attempt lost a race for a free one (retry), `AddressTaken` for a
    /// static address held by another service.
    #[tracing::instrument(name = "dotmac.customers.create_service", skip_all, fields(tenant = %tenant))]
    pub async fn create_service(
        &self,
        tenant: TenantId,
        new: NewService,
    ) -> Result<NetworkService> {
        let customer = self.customer_of(tenant, new.customer).await?;
        let id = ServiceId::new();
        let event = |s: &NetworkService| {
            self.event(
                tenant,
                CustomerEvent::ServiceCreated {
                    service: s.id(),
                    customer: customer.id(),
                    subscription: s.subscription(),
                },
            )
        };
        match new.profile.addressing {
            Addressing::Nas => {
                let service = NetworkService::new(id, new, None)?;
                self.inner
                    .store
                    .insert_service(tenant, &service, None, &[event(&service)])
                    .await?;
                Ok(service)
            }
            Addressing::Static(address) => {
                let service = NetworkService::new(id, new, Some(address))?;
                self.inner
                    .store
                    .insert_service(tenant, &service, None, &[event(&service)])
                    .await?;
                Ok(service)
            }
            Addressing::Pool(pool_id) => {
                let pool = self
                    .inner
                    .store
                    .pool(tenant, pool_id)
                    .await?
                    .ok_or_else(|| CustomersError::NotFound {
                        what: "address pool",
                        id: pool_id.to_string(),
                    })?;
                // Validate before taking an address.
                NetworkService::new(id, new.clone(), None)?;
                for attempt in 0..ATTEMPTS {
                    let taken = self
                        .inner
                        .store
                        .assigned_addresses(tenant, pool.first(), pool.last())
                        .await?;
                    // The lowest free address first; after a lost race, one further on, so
                    // that concurrent creators spread instead of all retrying the same one.
                    let skip = usize::try_from(attempt).unwrap_or(usize::MAX);
                    let address: Ipv4Addr = pool.nth_free(&taken, skip).ok_or_else(|| {
                        CustomersError::PoolExhausted {
                            pool: pool.name().to_owned(),
                        }
                    })?;
                    let service = NetworkService::new(id, new.clone(), Some(address))?;
                    match self
                        .inner
                        .store
                        .insert_service(tenant, &service, Some(pool_id), &[event(&service)])
                        .await
                    {
                        Err(CustomersError::AddressTaken { .. }) => continue,
                        Err(e) => return Err(e),
                        Ok(()) => return Ok(service),
                    }
                }
                // Addresses are free but every attempt lost its race: a conflict to retry,
                // not an exhausted pool.
                Err(CustomersError::ConcurrentUpdate {
                    what: "address pool",
                    id: pool_id.to_string(),
                    expected: u64::from(ATTEMPTS),
                })
            }
        }
    }

    /// A service by id.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub async fn service(&self, tenant: TenantId, id: ServiceId) -> Result<NetworkService> {
        self.service_of(tenant, id).await
    }

    /// Reads, changes and saves a service, trying again when a concurrent writer got in
    /// first; writes the status event and the provisioning command the change asks for.
    async fn update_service(
        &self,
        tenant: TenantId,
        id: ServiceId,
        change: impl Fn(
            &mut NetworkService,
            DateTime<Utc>,
        ) -> Result<(Option<ProvisioningAction>, Vec<CustomerEvent>)>,
    ) -> Result<NetworkService> {
        for _ in 0..ATTEMPTS {
            let mut service = self.service_of(tenant, id).await?;
            let (version, status) = (service.version(), service.status());
            let at = self.now();
            let (action, extra) = change(&mut service, at)?;
            if service.version() == version {
                return Ok(service);
            }
            let mut events = Vec::new();
            if service.status() != status {
                events.push(self.event(
                    tenant,
                    CustomerEvent::ServiceStatusChanged {
                        service: id,
                        customer: service.customer(),
                        from: status,
                        to: service.status(),
                    },
                ));
            }
            events.extend(extra.into_iter().map(|e| self.event(tenant, e)));
            if let Some(action) = action {
                events.push(self.command(tenant, ProvisioningCommand::of(&service, action)));
            }
            match self
                .inner
                .store
                .save_service(tenant, &service, version, &events)
                .await
            {
                Err(CustomersError::ConcurrentUpdate { .. }) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(service),
            }
        }
        Err(CustomersError::ConcurrentUpdate {
            what: "service",
            id: id.to_string(),
            expected: 0,
        })
    }

    /// Puts a pending service on the network; a customer still onboarding becomes active.
    ///
    /// # Errors
    ///
    /// `NotFound`, `InvalidTransition`.
    #[tracing::instrument(name = "dotmac.customers.activate_service", skip_all, fields(tenant = %tenant))]
    pub async fn activate_service(
        &self,
        tenant: TenantId,
        id: ServiceId,
    ) -> Result<NetworkService> {
        let service = self
            .update_service(tenant, id, |s, at| Ok((s.activate(at)?, Vec::new())))
            .await?;
        let customer = self.customer_of(tenant, service.customer()).await?;
        if customer.status() == CustomerStatus::Onboarding {
            self.change_status(
                tenant,
                customer.id(),
                CustomerStatus::Active,
                "service activated",
            )
            .await?;
        }
        Ok(service)
    }

    /// [`CustomerService::create_service`] with the technical profile of the subscription's
    /// plan ([`CustomersSettings::with_plan_profile`]).
    ///
    /// # Errors
    ///
    /// `InvalidInput` (nothing written) for a plan without a technical profile; otherwise as
    /// [`CustomerService::create_service`].
    pub async fn create_service_on_plan(
        &self,
        tenant: TenantId,
        new: PlanService,
    ) -> Result<NetworkService> {
        let profile = self.plan_profile_of(new.plan)?.clone();
        self.create_service(
            tenant,
            NewService {
                customer: new.customer,
                subscription: new.subscription,
                username: new.username,
                password: new.password,
                profile,
            },
        )
        .await
    }

    /// Moves every service of `subscription` to `plan`'s technical profile (an upgrade or a
    /// downgrade in force): the plan's rate, burst, data cap and fair-usage policy, the
    /// service's own addressing, VLAN and CPE kept. Each service that changes is a
    /// provisioning command (FreeRADIUS answers the new rate); one already on the profile,
    /// or terminated, is left alone, so a replayed change changes nothing. A plan without a
    /// technical profile (not an internet plan) changes nothing.
    ///
    /// # Errors
    ///
    /// Storage failures; `ConcurrentUpdate` after losing every attempt.
    pub async fn follow_plan(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        plan: PlanId,
    ) -> Result<Vec<NetworkService>> {
        let Some(target) = self.inner.settings.plan_profile(plan).cloned() else {
            return Ok(Vec::new());
        };
        let mut changed = Vec::new();
        for service in self
            .inner
            .store
            .services_of_subscription(tenant, subscription)
            .await?
        {
            if service.status() == ServiceStatus::Terminated {
                continue;
            }
            let own = service.profile();
            let profile = TechnicalProfile {
                addressing: own.addressing,
                vlan: own.vlan,
                cpe_mac: own.cpe_mac,
                ..target.clone()
            };
            if &profile == own {
                continue;
            }
            changed.push(self.change_profile(tenant, service.id(), profile).await?);
        }
        Ok(changed)
    }

    fn plan_profile_of(&self, plan: PlanId) -> Result<&TechnicalProfile> {
        self.inner.settings.plan_profile(plan).ok_or_else(|| {
            CustomersError::InvalidInput(format!("plan {plan} has no technical profile"))
        })
    }

    /// A plan change: the new technical profile.
    ///
    /// # Errors
    ///
    /// `NotFound`, `InvalidTransition`, `InvalidInput`.
    pub async fn change_profile(
        &self,
        tenant: TenantId,
        id: ServiceId,
        profile: TechnicalProfile,
    ) -> Result<NetworkService> {
        self.update_service(tenant, id, |s, _| {
            Ok((s.change_profile(profile.clone())?, Vec::new()))
        })
        .await
    }

    /// Suspends a service for `reason` (held already: no change).
    ///
    /// # Errors
    ///
    /// `NotFound`, `InvalidTransition`.
    pub async fn suspend_service(
        &self,
        tenant: TenantId,
        id: ServiceId,
        reason: SuspendReason,
    ) -> Result<NetworkService> {
        self.update_service(tenant, id, |s, at| Ok((s.suspend(reason, at)?, Vec::new())))
            .await
    }

    /// Lifts `reason` from a service (not held: no change).
    ///
    /// # Errors
    ///
    /// `NotFound`, `InvalidTransition`.
    pub async fn restore_service(
        &self,
        tenant: TenantId,
        id: ServiceId,
        reason: SuspendReason,
    ) -> Result<NetworkService> {
        self.update_service(tenant, id, |s, at| Ok((s.restore(reason, at)?, Vec::new())))
            .await
    }

    /// Ends a service; its address is free again.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub async fn terminate_service(
        &self,
        tenant: TenantId,
        id: ServiceId,
        reason: &str,
    ) -> Result<NetworkService> {
        self.update_service(tenant, id, |s, at| {
            Ok((s.terminate(reason, at), Vec::new()))
        })
        .await
    }

    /// The money loop suspended a subscription (billing's `subscription_suspended`): its
    /// services are suspended for non-payment, and an active customer becomes suspended. A
    /// replayed event changes nothing.
    ///
    /// # Errors
    ///
    /// Storage failures; a service already terminated is left as it is.
    #[tracing::instrument(name = "dotmac.customers.subscription_suspended", skip_all, fields(tenant = %tenant))]
    pub async fn subscription_suspended(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<NetworkService>> {
        let mut changed = Vec::new();
        let mut customer = None;
        for service in self
            .inner
            .store
            .services_of_subscription(tenant, subscription)
            .await?
        {
            customer = Some(service.customer());
            if service.status() == ServiceStatus::Terminated {
                continue;
            }
            changed.push(
                self.suspend_service(tenant, service.id(), SuspendReason::NonPayment)
                    .await?,
            );
        }
        if let Some(id) = customer
            && self.customer_of(tenant, id).await?.status() == CustomerStatus::Active
        {
            self.change_status(tenant, id, CustomerStatus::Suspended, "non-payment")
                .await?;
        }
        Ok(changed)
    }

    /// The money loop restored a subscription: non-payment is lifted from its services, and a
    /// suspended customer whose services are no longer suspended for it is active again.
    ///
    /// # Errors
    ///
    /// Storage failures.
    #[tracing::instrument(name = "dotmac.customers.subscription_restored", skip_all, fields(tenant = %tenant))]
    pub async fn subscription_restored(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<NetworkService>> {
        let mut changed = Vec::new();
        let mut customer = None;
        for service in self
            .inner
            .store
            .services_of_subscription(tenant, subscription)
            .await?
        {
            customer = Some(service.customer());
            if service.status() == ServiceStatus::Terminated {
                continue;
            }
            changed.push(
                self.restore_service(tenant, service.id(), SuspendReason::NonPayment)
                    .await?,
            );
        }
        if let Some(id) = customer {
            let still = self
                .inner
                .store
                .services_of_customer(tenant, id)
                .await?
                .iter()
                .any(|s| s.suspensions().contains(&SuspendReason::NonPayment));
            if !still && self.customer_of(tenant, id).await?.status() == CustomerStatus::Suspended {
                self.change_status(tenant, id, CustomerStatus::Active, "paid")
                    .await?;
            }
        }
        Ok(changed)
    }

    /// Counts a usage sample (bytes down and up, measured up to `at`) into a service's
    /// fair-usage counters and applies the verdict: a slowdown, a block, or the plan's rate
    /// back. Each change is a provisioning command and a `customers.fair_usage` event. A
    /// terminated service, or one without a policy, counts nothing and changes nothing.
    ///
    /// # Errors
    ///
    /// `NotFound`; `InvalidInput` for a policy that does not validate.
    #[tracing::instrument(name = "dotmac.customers.record_usage", skip_all, fields(tenant = %tenant))]
    pub async fn record_usage(
        &self,
        tenant: TenantId,
        id: ServiceId,
        at: DateTime<Utc>,
        download: u64,
        upload: u64,
    ) -> Result<UsageOutcome> {
        self.apply_fair_usage(tenant, id, FupInput::Sample(at, download, upload))
            .await
    }

    /// [`CustomerService::record_usage`] for a sample from an ordered accounting feed: the
    /// facade's `FairUsageFollowsAccounting` passes the outbox position of the
    /// `usage.session_accounted` event that carried it (delivered in order per customer).
    /// A sample at or before the service's [`NetworkService::accounted_through`] was counted
    /// already: it counts nothing again (the verdict is only refreshed), so a redelivered
    /// event or a replayed feed never counts twice.
    ///
    /// # Errors
    ///
    /// As [`CustomerService::record_usage`].
    #[tracing::instrument(name = "dotmac.customers.record_accounted_usage", skip_all, fields(tenant = %tenant, position))]
    pub async fn record_accounted_usage(
        &self,
        tenant: TenantId,
        id: ServiceId,
        position: u64,
        sample: AccountedSample,
    ) -> Result<UsageOutcome> {
        self.apply_fair_usage(tenant, id, FupInput::Accounted(position, sample))
            .await
    }

    /// Applies a service's fair-usage verdict at the clock's instant without new usage (at a
    /// period boundary the counters read zero and the plan's rate comes back).
    ///
    /// # Errors
    ///
    /// As [`CustomerService::record_usage`].
    pub async fn refresh_fair_usage(
        &self,
        tenant: TenantId,
        id: ServiceId,
    ) -> Result<UsageOutcome> {
        self.apply_fair_usage(tenant, id, FupInput::Refresh).await
    }

    /// A top-up (Splynx's: a blocked customer buys data): `top_up.bytes` more before the
    /// block rules apply, until the month ends in the policy's zone. The verdict is applied
    /// at once (a block lifted is a provisioning restore and a `customers.fair_usage`
    /// notice), and a `customers.fair_usage_top_up` event carries the price, which the
    /// facade's `BillingFollowsFairUsage` turns into a charge on the subscription's next
    /// invoice. The same top-up id again this month changes nothing.
    ///
    /// # Errors
    ///
    /// `NotFound`; `InvalidInput` (nothing changes) for a service without a fair-usage
    /// policy, a top-up of no bytes, a negative price, too many top-ups this month;
    /// `InvalidTransition` for a terminated service.
    #[tracing::instrument(name = "dotmac.customers.top_up", skip_all, fields(tenant = %tenant))]
    pub async fn top_up(
        &self,
        tenant: TenantId,
        id: ServiceId,
        top_up: TopUp,
    ) -> Result<UsageOutcome> {
        if top_up.price.is_some_and(|p| p.is_negative()) {
            return Err(CustomersError::InvalidInput(
                "a top-up's price is never negative".to_owned(),
            ));
        }
        self.apply_fair_usage(tenant, id, FupInput::TopUp(top_up))
            .await
    }

    /// The fair-usage sweep: applies the verdict of every service whose counters passed a
    /// period boundary by now ([`NetworkService::fair_usage_review_at`], at most `limit`
    /// services, the longest due first). A slowdown whose counter reset gives the plan's
    /// rate back, a block whose counter reset lets the subscriber back on, each a
    /// provisioning command and a notice. Run it every few minutes (Splynx applies its
    /// rules every five); a sweep that returns `limit` outcomes has more to do.
    ///
    /// # Errors
    ///
    /// Storage failures. A service terminated or changed meanwhile is taken as it is now.
    #[tracing::instrument(name = "dotmac.customers.sweep_fair_usage", skip_all, fields(tenant = %tenant, due = tracing::field::Empty))]
    pub async fn sweep_fair_usage(
        &self,
        tenant: TenantId,
        limit: usize,
    ) -> Result<Vec<UsageOutcome>> {
        let due = self
            .inner
            .store
            .services_due_for_fair_usage(tenant, self.now(), limit)
            .await?;
        tracing::Span::current().record("due", due.len());
        let mut outcomes = Vec::with_capacity(due.len());
        for service in due {
            match self
                .apply_fair_usage(tenant, service.id(), FupInput::Refresh)
                .await
            {
                Ok(outcome) => outcomes.push(outcome),
                // Removed meanwhile: nothing to restore.
                Err(CustomersError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(outcomes)
    }

    async fn apply_fair_usage(
        &self,
        tenant: TenantId,
        id: ServiceId,
        input: FupInput,
    ) -> Result<UsageOutcome> {
        let verdict = std::sync::Mutex::new((false, FupVerdict::Normal, false));
        self.update_service(tenant, id, |s, now| {
            let Some(policy) = s.profile().fair_usage.clone() else {
                if matches!(input, FupInput::TopUp(_)) {
                    return Err(CustomersError::InvalidInput(format!(
                        "service {} has no fair-usage policy to top up",
                        s.id()
                    )));
                }
                return Ok((None, Vec::new()));
            };
            if s.status() == ServiceStatus::Terminated {
                if matches!(input, FupInput::TopUp(_)) {
                    return Err(CustomersError::InvalidTransition {
                        what: "service",
                        from: "terminated",
                        to: "topped up",
                    });
                }
                return Ok((None, Vec::new()));
            }
            let was_throttle = s.throttle().cloned();
            let was = (
                was_throttle.clone(),
                s.suspensions().contains(&SuspendReason::FairUsage),
            );
            let mut counters = s.fup_counters().clone();
            let mut events = Vec::new();
            let (counted, when) = match &input {
                FupInput::Sample(at, down, up) => (
                    policy.record(&mut counters, *at, *down, *up)?,
                    (*at).max(now),
                ),
                FupInput::Accounted(position, sample) => {
                    if s.set_accounted_through(*position) {
                        (
                            policy.record(
                                &mut counters,
                                sample.at,
                                sample.download,
                                sample.upload,
                            )?,
                            sample.at.max(now),
                        )
                    } else {
                        // Counted already: only the verdict at the clock's instant.
                        (false, now)
                    }
                }
                FupInput::Refresh => (false, now),
                FupInput::TopUp(top_up) => {
                    if policy.top_up(&mut counters, now, top_up.id, top_up.bytes)? {
                        events.push(CustomerEvent::FairUsageTopUp {
                            service: s.id(),
                            customer: s.customer(),
                            subscription: s.subscription(),
                            top_up: top_up.id,
                            bytes: top_up.bytes,
                            price: top_up.price,
                            on: policy.local_date(now),
                        });
                    }
                    (false, now)
                }
            };
            policy.expire(&mut counters, when);
            s.set_fup_counters(counters);
            let plan = s.profile().rate;
            let v = policy.evaluate(s.fup_counters(), plan, when)?;
            let mut action = None;
            let (throttle, blocked, notice) = match &v {
                FupVerdict::Normal => (None, false, None),
                FupVerdict::Throttled { rule, rate } => (
                    Some(Throttle {
                        rate: *rate,
                        rule: rule.clone(),
                    }),
                    false,
                    Some((
                        rule.clone(),
                        policy
                            .rules
                            .iter()
                            .find(|r| &r.name == rule)
                            .map(|r| r.action),
                    )),
                ),
                FupVerdict::Blocked { rule } => {
                    (None, true, Some((rule.clone(), Some(FupAction::Block))))
                }
            };
            if let Some(a) = s.set_throttle(throttle)? {
                action = Some(a);
            }
            let held = s.suspensions().contains(&SuspendReason::FairUsage);
            if blocked && !held {
                action = s.suspend(SuspendReason::FairUsage, now)?.or(action);
            } else if !blocked && held {
                action = s.restore(SuspendReason::FairUsage, now)?.or(action);
            }
            let is = (
                s.throttle().cloned(),
                s.suspensions().contains(&SuspendReason::FairUsage),
            );
            if was != is {
                let (rule, act) = match notice {
                    Some((rule, act)) => (rule, act.unwrap_or(FupAction::Restore)),
                    None => (
                        was_throttle
                            .map(|t| t.rule)
                            .unwrap_or_else(|| "block".to_owned()),
                        FupAction::Restore,
                    ),
                };
                events.push(CustomerEvent::FairUsage {
                    service: s.id(),
                    customer: s.customer(),
                    rule,
                    action: act,
                    rate: s.effective_rate(),
                    counted_bytes: policy
                        .rules
                        .iter()
                        .map(|r| policy.reading(s.fup_counters(), r.period, r.direction, when))
                        .max()
                        .unwrap_or(0),
                });
            }
            if let Ok(mut slot) = verdict.lock() {
                *slot = (counted, v, was != is);
            }
            Ok((action, events))
        })
        .await?;
        let (counted, verdict, changed) = verdict.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(UsageOutcome {
            service: id,
            counted,
            verdict,
            changed,
        })
    }
}

/// A usage sample of an accounting feed (a RADIUS session's growth): the bytes down and up
/// measured up to `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AccountedSample {
    /// Up to when the bytes were measured.
    pub at: DateTime<Utc>,
    /// Bytes towards the subscriber.
    pub download: u64,
    /// Bytes from the subscriber.
    pub upload: u64,
}

impl AccountedSample {
    /// A sample of `download` and `upload` bytes measured up to `at`.
    pub fn new(at: DateTime<Utc>, download: u64, upload: u64) -> Self {
        AccountedSample {
            at,
            download,
            upload,
        }
    }
}

/// What a fair-usage step starts from.
enum FupInput {
    /// A usage sample: measured up to the instant, bytes down and up.
    Sample(DateTime<Utc>, u64, u64),
    /// A sample at a position of an ordered accounting feed.
    Accounted(u64, AccountedSample),
    /// Nothing new: the verdict at the clock's instant.
    Refresh,
    /// A top-up.
    TopUp(TopUp),
}
