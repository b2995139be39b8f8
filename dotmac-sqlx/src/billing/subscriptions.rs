//! [`SubscriptionStore`]: customer accounts and subscriptions.

use super::*;

impl SubscriptionStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.put_account", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_account(&self, tenant: TenantId, account: CustomerAccount) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO billing_accounts (tenant_id, customer_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, customer_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(account.customer.as_uuid()),
                    body("account", &account)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    #[tracing::instrument(name = "dotmac.store.account", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn account(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Option<CustomerAccount>> {
        self.db
            .read_one(
                tenant,
                "account",
                "SELECT body FROM billing_accounts WHERE tenant_id = $1 AND customer_id = $2",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.accounts", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn accounts(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<Vec<CustomerAccount>> {
        self.customer_bodies(tenant, "SELECT body FROM billing_accounts", customers, "")
            .await
    }

    #[tracing::instrument(name = "dotmac.store.insert_subscription", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn insert_subscription(
        &self,
        tenant: TenantId,
        subscription: Subscription,
        events: Vec<dotmac_core::outbox::OutboxEvent>,
    ) -> Result<()> {
        let binds = [
            id(tenant),
            Bind::Uuid(subscription.id.as_uuid()),
            Bind::Uuid(subscription.customer.as_uuid()),
            Bind::I64(i64::try_from(subscription.revision()).unwrap_or(i64::MAX)),
            body("subscription", &rows::SubscriptionRow::from(&subscription))?,
        ];
        const INSERT: &str = "INSERT INTO billing_subscriptions (tenant_id, subscription_id, \
             customer_id, revision, body) VALUES ($1, $2, $3, $4, $5)";
        let written = dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let written = d::docs::execute(&mut tx, INSERT, &binds).await.map_err(storage)?;
            if written == Written::UniqueViolation {
                tx.rollback().await.during("roll back").map_err(storage)?;
            } else {
                d::outbox::insert_core(&mut tx, tenant, &events).await.map_err(storage)?;
                tx.commit().await.during("commit subscription").map_err(storage)?;
            }
            written
        });
        match written {
            Written::UniqueViolation => Err(BillingError::AlreadyExists {
                what: "subscription",
                id: subscription.id.to_string(),
            }),
            Written::Rows(_) => Ok(()),
        }
    }

    #[tracing::instrument(name = "dotmac.store.subscription", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn subscription(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Option<Subscription>> {
        self.db
            .read_one::<rows::SubscriptionRow>(
                tenant,
                "subscription",
                "SELECT body FROM billing_subscriptions WHERE tenant_id = $1 AND subscription_id = $2",
                &[id(tenant), Bind::Uuid(subscription.as_uuid())],
            )
            .await
            .map(|row| row.map(Subscription::from))
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.subscriptions_page", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn subscriptions_page(
        &self,
        tenant: TenantId,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let limit = Bind::I64(i64::try_from(limit).unwrap_or(i64::MAX));
        let found = match after {
            Some(after) => {
                self.db
                    .read_all::<rows::SubscriptionRow>(
                        tenant,
                        "subscription",
                        "SELECT body FROM billing_subscriptions \
                         WHERE tenant_id = $1 AND subscription_id > $2 \
                         ORDER BY subscription_id LIMIT $3",
                        &[id(tenant), Bind::Uuid(after.as_uuid()), limit],
                    )
                    .await
            }
            None => {
                self.db
                    .read_all::<rows::SubscriptionRow>(
                        tenant,
                        "subscription",
                        "SELECT body FROM billing_subscriptions WHERE tenant_id = $1 \
                         ORDER BY subscription_id LIMIT $2",
                        &[id(tenant), limit],
                    )
                    .await
            }
        };
        found
            .map(|rows| rows.into_iter().map(Subscription::from).collect())
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.subscriptions_of", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn subscriptions_of(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<Subscription>> {
        self.db
            .read_all::<rows::SubscriptionRow>(
                tenant,
                "subscription",
                "SELECT body FROM billing_subscriptions WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY subscription_id",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map(|rows| rows.into_iter().map(Subscription::from).collect())
            .map_err(storage)
    }
}
