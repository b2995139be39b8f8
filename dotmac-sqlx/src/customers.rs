//! `dotmac-customers`' storage traits: customers, network services, address pools and the
//! addresses services hold (one row per address: the primary key keeps two services off one
//! address, whichever backend and however many writers).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{CustomerId, SubscriptionId, TenantId};
use dotmac_customers::store::{CustomerStore, ServiceStore};
use dotmac_customers::{
    Customer, CustomerStatus, CustomersError, IpPool, NetworkService, PoolId, ServiceId,
    ServiceStatus,
};
use sqlx::Row;

use crate::db::{dispatch, for_each_dialect};
use crate::docs::{Bind, Written, json};
use crate::error::{Context, SqlError};
use crate::input;
use crate::store::SqlStore;

type Result<T> = std::result::Result<T, CustomersError>;

/// Storage failures as customers errors: domain errors pass through, every other failure is
/// [`CustomersError::Storage`] with its kind and cause.
fn storage(error: SqlError) -> CustomersError {
    match error {
        SqlError::Duplicate { what, key } => CustomersError::AlreadyExists { what, id: key },
        SqlError::Core(core) => CustomersError::Core(core),
        other => CustomersError::Storage(other.into()),
    }
}

fn id(tenant: TenantId) -> Bind {
    Bind::Uuid(tenant.as_uuid())
}

fn address_bind(address: Ipv4Addr) -> Bind {
    Bind::I64(i64::from(u32::from(address)))
}

fn customer_binds(tenant: TenantId, customer: &Customer) -> Result<Vec<Bind>> {
    Ok(vec![
        id(tenant),
        Bind::Uuid(customer.id().as_uuid()),
        Bind::Text(customer.status().as_str().to_owned()),
        Bind::I64(i64::try_from(customer.version()).unwrap_or(i64::MAX)),
        Bind::Time(customer.created_at()),
        json("customer", customer).map_err(storage)?,
    ])
}

fn service_binds(tenant: TenantId, service: &NetworkService) -> Result<Vec<Bind>> {
    input::text("user name", service.username()).map_err(storage)?;
    Ok(vec![
        id(tenant),
        Bind::Uuid(service.id().as_uuid()),
        Bind::Uuid(service.customer().as_uuid()),
        Bind::Uuid(service.subscription().as_uuid()),
        Bind::Text(service.username().to_owned()),
        Bind::Text(service.status().as_str().to_owned()),
        Bind::I64(i64::try_from(service.version()).unwrap_or(i64::MAX)),
        json("service", service).map_err(storage)?,
        Bind::OptI64(service.fair_usage_review_at().map(|t| t.timestamp())),
    ])
}

/// Why an insert met a unique key: the service's (its id or user name) or the address.
pub(crate) enum Clash {
    None,
    Service,
    Address,
}

for_each_dialect! {
    /// Saves a record over `read_version`: `Ok(false)` when the stored version differs.
    pub(crate) async fn versioned_update(
        tx: &mut Tx,
        sql: &'static str,
        binds: &[Bind],
    ) -> Result<bool> {
        match docs::execute(tx, sql, binds).await.map_err(storage)? {
            Written::Rows(n) => Ok(n == 1),
            Written::UniqueViolation => Ok(false),
        }
    }

    /// The row count of a key query.
    pub(crate) async fn exists(tx: &mut Tx, sql: &'static str, binds: &[Bind]) -> Result<bool> {
        Ok(docs::scalar_i64(tx, sql, binds).await.map_err(storage)?.is_some())
    }

    pub(crate) async fn insert_service(
        tx: &mut Tx,
        tenant: TenantId,
        service: &NetworkService,
        pool: Option<PoolId>,
    ) -> Result<Clash> {
        let written = docs::execute(
            tx,
            "INSERT INTO network_services (tenant_id, service_id, customer_id, subscription_id, \
             username, status, version, body, fup_review_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &service_binds(tenant, service)?,
        )
        .await
        .map_err(storage)?;
        if written == Written::UniqueViolation {
            return Ok(Clash::Service);
        }
        if let Some(address) = service.address() {
            let written = docs::execute(
                tx,
                "INSERT INTO address_assignments (tenant_id, address, pool_id, service_id) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    id(tenant),
                    address_bind(address),
                    Bind::OptUuid(pool.map(|p| p.as_uuid())),
                    Bind::Uuid(service.id().as_uuid()),
                ],
            )
            .await
            .map_err(storage)?;
            if written == Written::UniqueViolation {
                return Ok(Clash::Address);
            }
        }
        Ok(Clash::None)
    }

    /// The service holding an address.
    pub(crate) async fn holder(tx: &mut Tx, tenant: TenantId, address: Ipv4Addr) -> Result<Option<uuid::Uuid>> {
        let row = docs::bind_all(
            sqlx::query("SELECT service_id FROM address_assignments WHERE tenant_id = $1 AND address = $2"),
            &[id(tenant), address_bind(address)],
        )
        .fetch_optional(&mut **tx)
        .await
        .during("read address holder")
        .map_err(storage)?;
        row.map(|r| r.try_get::<uuid::Uuid, _>(0).during("read address holder").map_err(storage))
            .transpose()
    }

    pub(crate) async fn addresses_between(
        tx: &mut Tx,
        tenant: TenantId,
        first: Ipv4Addr,
        last: Ipv4Addr,
    ) -> Result<BTreeSet<Ipv4Addr>> {
        let rows = docs::bind_all(
            sqlx::query(
                "SELECT address FROM address_assignments WHERE tenant_id = $1 \
                 AND address >= $2 AND address <= $3",
            ),
            &[id(tenant), address_bind(first), address_bind(last)],
        )
        .fetch_all(&mut **tx)
        .await
        .during("read assigned addresses")
        .map_err(storage)?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get(0).during("read assigned address").map_err(storage)?;
                u32::try_from(n).map(Ipv4Addr::from).map_err(|_| {
                    storage(SqlError::Corrupt {
                        what: "address_assignments.address",
                        detail: format!("{n} is not an IPv4 address"),
                    })
                })
            })
            .collect()
    }
}

impl SqlStore {
    async fn classify_clash(
        &self,
        tenant: TenantId,
        service: &NetworkService,
        clash: Clash,
    ) -> Result<CustomersError> {
        Ok(match clash {
            Clash::Address => {
                let address = service.address().unwrap_or(Ipv4Addr::UNSPECIFIED);
                let holder = dispatch!(self.db, pool, d => {
                    let mut tx = d::begin_read(pool, tenant).await.map_err(storage)?;
                    let holder = d::customers::holder(&mut tx, tenant, address).await?;
                    tx.commit().await.during("end read").map_err(storage)?;
                    holder
                });
                CustomersError::AddressTaken {
                    address,
                    holder: holder.map(|h| h.to_string()).unwrap_or_default(),
                }
            }
            _ => {
                let known = self.service(tenant, service.id()).await?.is_some();
                if known {
                    CustomersError::AlreadyExists {
                        what: "service",
                        id: service.id().to_string(),
                    }
                } else {
                    CustomersError::AlreadyExists {
                        what: "user name",
                        id: service.username().to_owned(),
                    }
                }
            }
        })
    }
}

impl CustomerStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.insert_customer", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn insert_customer(
        &self,
        tenant: TenantId,
        customer: &Customer,
        events: &[OutboxEvent],
    ) -> Result<()> {
        let binds = customer_binds(tenant, customer)?;
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let written = d::docs::execute(
                &mut tx,
                "INSERT INTO customers (tenant_id, customer_id, status, version, created_at, body) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &binds,
            )
            .await
            .map_err(storage)?;
            if written == Written::UniqueViolation {
                tx.rollback().await.during("roll back").map_err(storage)?;
                return Err(CustomersError::AlreadyExists {
                    what: "customer",
                    id: customer.id().to_string(),
                });
            }
            d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
            tx.commit().await.during("commit customer").map_err(storage)
        })
    }

    #[tracing::instrument(name = "dotmac.store.save_customer", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn save_customer(
        &self,
        tenant: TenantId,
        customer: &Customer,
        read_version: u64,
        events: &[OutboxEvent],
    ) -> Result<()> {
        let mut binds = customer_binds(tenant, customer)?;
        binds.push(Bind::I64(i64::try_from(read_version).unwrap_or(i64::MAX)));
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let saved = d::customers::versioned_update(
                &mut tx,
                "UPDATE customers SET status = $3, version = $4, created_at = $5, body = $6 \
                 WHERE tenant_id = $1 AND customer_id = $2 AND version = $7",
                &binds,
            )
            .await?;
            if !saved {
                let known = d::customers::exists(
                    &mut tx,
                    "SELECT version FROM customers WHERE tenant_id = $1 AND customer_id = $2",
                    &[id(tenant), Bind::Uuid(customer.id().as_uuid())],
                )
                .await?;
                tx.rollback().await.during("roll back").map_err(storage)?;
                return Err(if known {
                    CustomersError::ConcurrentUpdate {
                        what: "customer",
                        id: customer.id().to_string(),
                        expected: read_version,
                    }
                } else {
                    CustomersError::NotFound {
                        what: "customer",
                        id: customer.id().to_string(),
                    }
                });
            }
            d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
            tx.commit().await.during("commit customer").map_err(storage)
        })
    }

    #[tracing::instrument(name = "dotmac.store.customer", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn customer(&self, tenant: TenantId, customer: CustomerId) -> Result<Option<Customer>> {
        self.db
            .read_one(
                tenant,
                "customer",
                "SELECT body FROM customers WHERE tenant_id = $1 AND customer_id = $2",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.customers_in_status", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn customers_in_status(
        &self,
        tenant: TenantId,
        status: CustomerStatus,
    ) -> Result<Vec<Customer>> {
        self.db
            .read_all(
                tenant,
                "customer",
                "SELECT body FROM customers WHERE tenant_id = $1 AND status = $2 \
                 ORDER BY created_at, customer_id",
                &[id(tenant), Bind::Text(status.as_str().to_owned())],
            )
            .await
            .map_err(storage)
    }
}

impl ServiceStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.save_pool", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn save_pool(&self, tenant: TenantId, pool: &IpPool) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO address_pools (tenant_id, pool_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, pool_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(pool.id().as_uuid()),
                    json("address pool", pool).map_err(storage)?,
                ],
            )
            .await
            .map_err(storage)
            .map(drop)
    }

    #[tracing::instrument(name = "dotmac.store.pool", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn pool(&self, tenant: TenantId, pool: PoolId) -> Result<Option<IpPool>> {
        self.db
            .read_one(
                tenant,
                "address pool",
                "SELECT body FROM address_pools WHERE tenant_id = $1 AND pool_id = $2",
                &[id(tenant), Bind::Uuid(pool.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.assigned_addresses", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn assigned_addresses(
        &self,
        tenant: TenantId,
        first: Ipv4Addr,
        last: Ipv4Addr,
    ) -> Result<BTreeSet<Ipv4Addr>> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await.map_err(storage)?;
            let held = d::customers::addresses_between(&mut tx, tenant, first, last).await?;
            tx.commit().await.during("end read").map_err(storage)?;
            Ok(held)
        })
    }

    #[tracing::instrument(name = "dotmac.store.insert_service", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn insert_service(
        &self,
        tenant: TenantId,
        service: &NetworkService,
        pool: Option<PoolId>,
        events: &[OutboxEvent],
    ) -> Result<()> {
        let clash = dispatch!(self.db, db_pool, d => {
            let mut tx = d::begin_tenant(db_pool, tenant).await.map_err(storage)?;
            let clash = d::customers::insert_service(&mut tx, tenant, service, pool).await?;
            if matches!(clash, Clash::None) {
                d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
                tx.commit().await.during("commit service").map_err(storage)?;
            } else {
                // On PostgreSQL the failed insert ended the transaction: classify afresh.
                tx.rollback().await.during("roll back").map_err(storage)?;
            }
            clash
        });
        match clash {
            Clash::None => Ok(()),
            other => Err(self.classify_clash(tenant, service, other).await?),
        }
    }

    #[tracing::instrument(name = "dotmac.store.save_service", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn save_service(
        &self,
        tenant: TenantId,
        service: &NetworkService,
        read_version: u64,
        events: &[OutboxEvent],
    ) -> Result<()> {
        let mut binds = service_binds(tenant, service)?;
        binds.push(Bind::I64(i64::try_from(read_version).unwrap_or(i64::MAX)));
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let saved = d::customers::versioned_update(
                &mut tx,
                "UPDATE network_services SET customer_id = $3, subscription_id = $4, \
                 username = $5, status = $6, version = $7, body = $8, fup_review_at = $9 \
                 WHERE tenant_id = $1 AND service_id = $2 AND version = $10",
                &binds,
            )
            .await?;
            if !saved {
                let known = d::customers::exists(
                    &mut tx,
                    "SELECT version FROM network_services WHERE tenant_id = $1 AND service_id = $2",
                    &[id(tenant), Bind::Uuid(service.id().as_uuid())],
                )
                .await?;
                tx.rollback().await.during("roll back").map_err(storage)?;
                return Err(if known {
                    CustomersError::ConcurrentUpdate {
                        what: "service",
                        id: service.id().to_string(),
                        expected: read_version,
                    }
                } else {
                    CustomersError::NotFound {
                        what: "service",
                        id: service.id().to_string(),
                    }
                });
            }
            if service.status() == ServiceStatus::Terminated {
                d::docs::execute(
                    &mut tx,
                    "DELETE FROM address_assignments WHERE tenant_id = $1 AND service_id = $2",
                    &[id(tenant), Bind::Uuid(service.id().as_uuid())],
                )
                .await
                .map_err(storage)?;
            }
            d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
            tx.commit().await.during("commit service").map_err(storage)
        })
    }

    #[tracing::instrument(name = "dotmac.store.service", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn service(
        &self,
        tenant: TenantId,
        service: ServiceId,
    ) -> Result<Option<NetworkService>> {
        self.db
            .read_one(
                tenant,
                "service",
                "SELECT body FROM network_services WHERE tenant_id = $1 AND service_id = $2",
                &[id(tenant), Bind::Uuid(service.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.service_by_username", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn service_by_username(
        &self,
        tenant: TenantId,
        username: &str,
    ) -> Result<Option<NetworkService>> {
        input::text("user name", username).map_err(storage)?;
        self.db
            .read_one(
                tenant,
                "service",
                "SELECT body FROM network_services WHERE tenant_id = $1 AND username = $2",
                &[id(tenant), Bind::Text(username.to_owned())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.services_of_subscription", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn services_of_subscription(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<NetworkService>> {
        self.db
            .read_all(
                tenant,
                "service",
                "SELECT body FROM network_services WHERE tenant_id = $1 AND subscription_id = $2 \
                 ORDER BY service_id",
                &[id(tenant), Bind::Uuid(subscription.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.services_of_customer", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn services_of_customer(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<NetworkService>> {
        self.db
            .read_all(
                tenant,
                "service",
                "SELECT body FROM network_services WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY service_id",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.services_due_for_fair_usage", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn services_due_for_fair_usage(
        &self,
        tenant: TenantId,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<NetworkService>> {
        self.db
            .read_all(
                tenant,
                "service",
                "SELECT body FROM network_services WHERE tenant_id = $1 \
                 AND fup_review_at IS NOT NULL AND fup_review_at <= $2 \
                 ORDER BY fup_review_at, service_id LIMIT $3",
                &[
                    id(tenant),
                    Bind::I64(at.timestamp()),
                    Bind::I64(i64::try_from(limit).unwrap_or(i64::MAX)),
                ],
            )
            .await
            .map_err(storage)
    }
}
