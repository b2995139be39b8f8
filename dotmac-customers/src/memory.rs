//! The in-memory store: for tests, examples and single-process embedders. Every call is one
//! step under one lock, its outbox events written to a [`MemoryOutbox`] in that step.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use dotmac_core::outbox::{MemoryOutbox, OutboxEvent};
use dotmac_core::{CustomerId, SubscriptionId, TenantId};

use crate::customer::{Customer, CustomerStatus};
use crate::error::{CustomersError, Result};
use crate::network::{NetworkService, ServiceStatus};
use crate::pool::IpPool;
use crate::store::{CustomerStore, ServiceStore};
use crate::vocab::{PoolId, ServiceId};

#[derive(Default)]
struct TenantData {
    customers: BTreeMap<CustomerId, Customer>,
    services: BTreeMap<ServiceId, NetworkService>,
    usernames: HashMap<String, ServiceId>,
    pools: BTreeMap<PoolId, IpPool>,
    addresses: BTreeMap<Ipv4Addr, (Option<PoolId>, ServiceId)>,
}

/// Every store trait of this crate, in memory.
pub struct InMemoryCustomerStore {
    tenants: Mutex<HashMap<TenantId, TenantData>>,
    outbox: Arc<MemoryOutbox>,
}

impl std::fmt::Debug for InMemoryCustomerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryCustomerStore")
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryCustomerStore {
    fn default() -> Self {
        InMemoryCustomerStore::new()
    }
}

impl InMemoryCustomerStore {
    /// An empty store with an outbox of its own.
    pub fn new() -> Self {
        InMemoryCustomerStore::with_outbox(Arc::new(MemoryOutbox::new()))
    }

    /// An empty store writing its events to `outbox` (shared with the other memory stores).
    pub fn with_outbox(outbox: Arc<MemoryOutbox>) -> Self {
        InMemoryCustomerStore {
            tenants: Mutex::new(HashMap::new()),
            outbox,
        }
    }

    /// The outbox.
    pub fn outbox(&self) -> &Arc<MemoryOutbox> {
        &self.outbox
    }

    fn with<R>(
        &self,
        tenant: TenantId,
        f: impl FnOnce(&mut TenantData, &MemoryOutbox) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        f(guard.entry(tenant).or_default(), &self.outbox)
    }
}

fn stale(what: &'static str, id: String, expected: u64) -> CustomersError {
    CustomersError::ConcurrentUpdate { what, id, expected }
}

impl CustomerStore for InMemoryCustomerStore {
    async fn insert_customer(
        &self,
        tenant: TenantId,
        customer: &Customer,
        events: &[OutboxEvent],
    ) -> Result<()> {
        self.with(tenant, |data, outbox| {
            if data.customers.contains_key(&customer.id()) {
                return Err(CustomersError::AlreadyExists {
                    what: "customer",
                    id: customer.id().to_string(),
                });
            }
            outbox.push(tenant, events)?;
            data.customers.insert(customer.id(), customer.clone());
            Ok(())
        })
    }

    async fn save_customer(
        &self,
        tenant: TenantId,
        customer: &Customer,
        read_version: u64,
        events: &[OutboxEvent],
    ) -> Result<()> {
        self.with(tenant, |data, outbox| {
            let stored =
                data.customers
                    .get(&customer.id())
                    .ok_or_else(|| CustomersError::NotFound {
                        what: "customer",
                        id: customer.id().to_string(),
                    })?;
            if stored.version() != read_version {
                return Err(stale("customer", customer.id().to_string(), read_version));
            }
            outbox.push(tenant, events)?;
            data.customers.insert(customer.id(), customer.clone());
            Ok(())
        })
    }

    async fn customer(&self, tenant: TenantId, id: CustomerId) -> Result<Option<Customer>> {
        self.with(tenant, |data, _| Ok(data.customers.get(&id).cloned()))
    }

    async fn customers_in_status(
        &self,
        tenant: TenantId,
        status: CustomerStatus,
    ) -> Result<Vec<Customer>> {
        self.with(tenant, |data, _| {
            let mut found: Vec<Customer> = data
                .customers
                .values()
                .filter(|c| c.status() == status)
                .cloned()
                .collect();
            found.sort_by_key(|c| (c.created_at(), c.id()));
            Ok(found)
        })
    }
}

fn oldest_first(mut services: Vec<NetworkService>) -> Vec<NetworkService> {
    services.sort_by_key(NetworkService::id);
    services
}

impl ServiceStore for InMemoryCustomerStore {
    async fn save_pool(&self, tenant: TenantId, pool: &IpPool) -> Result<()> {
        self.with(tenant, |data, _| {
            data.pools.insert(pool.id(), pool.clone());
            Ok(())
        })
    }

    async fn pool(&self, tenant: TenantId, id: PoolId) -> Result<Option<IpPool>> {
        self.with(tenant, |data, _| Ok(data.pools.get(&id).cloned()))
    }

    async fn assigned_addresses(
        &self,
        tenant: TenantId,
        first: Ipv4Addr,
        last: Ipv4Addr,
    ) -> Result<BTreeSet<Ipv4Addr>> {
        self.with(tenant, |data, _| {
            Ok(data
                .addresses
                .range(first..=last)
                .map(|(a, _)| *a)
                .collect())
        })
    }

    async fn insert_service(
        &self,
        tenant: TenantId,
        service: &NetworkService,
        pool: Option<PoolId>,
        events: &[OutboxEvent],
    ) -> Result<()> {
        self.with(tenant, |data, outbox| {
            if data.services.contains_key(&service.id()) {
                return Err(CustomersError::AlreadyExists {
                    what: "service",
                    id: service.id().to_string(),
                });
            }
            if data.usernames.contains_key(service.username()) {
                return Err(CustomersError::AlreadyExists {
                    what: "user name",
                    id: service.username().to_owned(),
                });
            }
            if let Some((address, (_, holder))) = service
                .address()
                .and_then(|a| data.addresses.get(&a).map(|h| (a, h)))
            {
                return Err(CustomersError::AddressTaken {
                    address,
                    holder: holder.to_string(),
                });
            }
            outbox.push(tenant, events)?;
            if let Some(address) = service.address() {
                data.addresses.insert(address, (pool, service.id()));
            }
            data.usernames
                .insert(service.username().to_owned(), service.id());
            data.services.insert(service.id(), service.clone());
            Ok(())
        })
    }

    async fn save_service(
        &self,
        tenant: TenantId,
        service: &NetworkService,
        read_version: u64,
        events: &[OutboxEvent],
    ) -> Result<()> {
        self.with(tenant, |data, outbox| {
            let stored =
                data.services
                    .get(&service.id())
                    .ok_or_else(|| CustomersError::NotFound {
                        what: "service",
                        id: service.id().to_string(),
                    })?;
            if stored.version() != read_version {
                return Err(stale("service", service.id().to_string(), read_version));
            }
            outbox.push(tenant, events)?;
            if service.status() == ServiceStatus::Terminated {
                data.addresses
                    .retain(|_, (_, holder)| *holder != service.id());
            }
            data.services.insert(service.id(), service.clone());
            Ok(())
        })
    }

    async fn service(&self, tenant: TenantId, id: ServiceId) -> Result<Option<NetworkService>> {
        self.with(tenant, |data, _| Ok(data.services.get(&id).cloned()))
    }

    async fn service_by_username(
        &self,
        tenant: TenantId,
        username: &str,
    ) -> Result<Option<NetworkService>> {
        self.with(tenant, |data, _| {
            Ok(data
                .usernames
                .get(username)
                .and_then(|id| data.services.get(id))
                .cloned())
        })
    }

    async fn services_of_subscription(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<NetworkService>> {
        self.with(tenant, |data, _| {
            Ok(oldest_first(
                data.services
                    .values()
                    .filter(|s| s.subscription() == subscription)
                    .cloned()
                    .collect(),
            ))
        })
    }

    async fn services_of_customer(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<NetworkService>> {
        self.with(tenant, |data, _| {
            Ok(oldest_first(
                data.services
                    .values()
                    .filter(|s| s.customer() == customer)
                    .cloned()
                    .collect(),
            ))
        })
    }

    async fn services_due_for_fair_usage(
        &self,
        tenant: TenantId,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<NetworkService>> {
        self.with(tenant, |data, _| {
            let mut due: Vec<(DateTime<Utc>, &NetworkService)> = data
                .services
                .values()
                .filter_map(|s| s.fair_usage_review_at().map(|r| (r, s)))
                .filter(|(r, _)| *r <= at)
                .collect();
            due.sort_by_key(|(r, s)| (*r, s.id()));
            Ok(due
                .into_iter()
                .take(limit)
                .map(|(_, s)| s.clone())
                .collect())
        })
    }
}
