//! Storage traits. Every method is tenant-scoped. Implementations: [`InMemoryCustomerStore`]
//! here, SQLite and PostgreSQL in `dotmac-sqlx`; all pass `testkit::run_store_suite`
//! (feature `testkit`).
//!
//! Every write takes the outbox events of the change and stores them in the same
//! transaction. A record is saved only over the version it was read at (the caller passes it): a concurrent writer's change is never overwritten ([`CustomersError::ConcurrentUpdate`]).
//!
//! [`InMemoryCustomerStore`]: crate::InMemoryCustomerStore
//! [`CustomersError::ConcurrentUpdate`]: crate::CustomersError::ConcurrentUpdate

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{CustomerId, SubscriptionId, TenantId};

use crate::customer::{Customer, CustomerStatus};
use crate::error::Result;
use crate::network::NetworkService;
use crate::pool::IpPool;
use crate::vocab::{PoolId, ServiceId};

/// Customer records.
pub trait CustomerStore: Send + Sync {
    /// Inserts a new customer.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` for a known id.
    fn insert_customer(
        &self,
        tenant: TenantId,
        customer: &Customer,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Saves a changed customer over the version it was read at (`read_version`).
    ///
    /// # Errors
    ///
    /// `NotFound`, `ConcurrentUpdate` when the stored version is not `read_version`.
    fn save_customer(
        &self,
        tenant: TenantId,
        customer: &Customer,
        read_version: u64,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<()>> + Send;

    /// A customer by id.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn customer(
        &self,
        tenant: TenantId,
        id: CustomerId,
    ) -> impl Future<Output = Result<Option<Customer>>> + Send;

    /// Customers in a status, oldest first.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn customers_in_status(
        &self,
        tenant: TenantId,
        status: CustomerStatus,
    ) -> impl Future<Output = Result<Vec<Customer>>> + Send;
}

/// Network services and the addresses they hold.
pub trait ServiceStore: Send + Sync {
    /// Saves (inserts or replaces) an address pool.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn save_pool(&self, tenant: TenantId, pool: &IpPool)
    -> impl Future<Output = Result<()>> + Send;

    /// A pool by id.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn pool(
        &self,
        tenant: TenantId,
        id: PoolId,
    ) -> impl Future<Output = Result<Option<IpPool>>> + Send;

    /// The addresses in `first..=last` held by services that are not terminated (from a pool
    /// or static).
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn assigned_addresses(
        &self,
        tenant: TenantId,
        first: Ipv4Addr,
        last: Ipv4Addr,
    ) -> impl Future<Output = Result<BTreeSet<Ipv4Addr>>> + Send;

    /// Inserts a new service and reserves its address (from `pool`, or static when `None`)
    /// in one step.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` for a known id or user name; `AddressTaken` when another service holds
    /// the address (nothing is written).
    fn insert_service(
        &self,
        tenant: TenantId,
        service: &NetworkService,
        pool: Option<PoolId>,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Saves a changed service over the version it was read at (`read_version`); a
    /// terminated service's address is released in the same step.
    ///
    /// # Errors
    ///
    /// `NotFound`, `ConcurrentUpdate` when the stored version is not `read_version`.
    fn save_service(
        &self,
        tenant: TenantId,
        service: &NetworkService,
        read_version: u64,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<()>> + Send;

    /// A service by id.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn service(
        &self,
        tenant: TenantId,
        id: ServiceId,
    ) -> impl Future<Output = Result<Option<NetworkService>>> + Send;

    /// A service by RADIUS user name.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn service_by_username(
        &self,
        tenant: TenantId,
        username: &str,
    ) -> impl Future<Output = Result<Option<NetworkService>>> + Send;

    /// The services delivering a subscription, oldest first.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn services_of_subscription(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> impl Future<Output = Result<Vec<NetworkService>>> + Send;

    /// The services whose fair-usage review is due at `at`
    /// ([`NetworkService::fair_usage_review_at`] at or before it), the longest due first (then
    /// by id), at most `limit` of them.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn services_due_for_fair_usage(
        &self,
        tenant: TenantId,
        at: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<NetworkService>>> + Send;

    /// A customer's services, oldest first.
    ///
    /// # Errors
    ///
    /// Storage failures only.
    fn services_of_customer(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> impl Future<Output = Result<Vec<NetworkService>>> + Send;
}

/// Both.
pub trait CustomersStore: CustomerStore + ServiceStore {}
impl<T: CustomerStore + ServiceStore> CustomersStore for T {}
