//! [`CatalogStore`]: products and plans.

use super::*;

impl CatalogStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.put_product", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_product(&self, tenant: TenantId, product: Product) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO billing_products (tenant_id, product_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, product_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(product.id.as_uuid()),
                    body("product", &product)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    #[tracing::instrument(name = "dotmac.store.put_plan", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_plan(
        &self,
        tenant: TenantId,
        plan: Plan,
        events: Vec<dotmac_core::outbox::OutboxEvent>,
    ) -> Result<()> {
        plan.validate()?;
        let plan_body = body("plan", &plan)?;
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let product = d::docs::scalar_i64(
                &mut tx,
                "SELECT CAST(1 AS BIGINT) FROM billing_products WHERE tenant_id = $1 AND product_id = $2",
                &[id(tenant), Bind::Uuid(plan.product.as_uuid())],
            )
            .await
            .map_err(storage)?;
            if product.is_none() {
                return Err(BillingError::UnknownProduct(plan.product));
            }
            let sql = if d::IS_POSTGRES {
                "SELECT body FROM billing_plans WHERE tenant_id = $1 AND plan_id = $2 FOR UPDATE"
            } else {
                "SELECT body FROM billing_plans WHERE tenant_id = $1 AND plan_id = $2"
            };
            let old = d::docs::bodies(&mut tx, sql, &[id(tenant), Bind::Uuid(plan.id.as_uuid())])
                .await
                .map_err(storage)?;
            if let Some(old) = old.into_iter().next() {
                let old: Plan = from_json("plan", old).map_err(storage)?;
                let kept = old.versions().len() <= plan.versions().len()
                    && old.versions().iter().zip(plan.versions()).all(|(a, b)| a == b);
                if !kept || old.interval != plan.interval || old.timing != plan.timing {
                    return Err(BillingError::InvalidPlan {
                        plan: plan.id,
                        reason: "stored price versions and the billing shape are immutable; add a version instead",
                    });
                }
            }
            d::docs::execute(
                &mut tx,
                "INSERT INTO billing_plans (tenant_id, plan_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, plan_id) DO UPDATE SET body = excluded.body",
                &[id(tenant), Bind::Uuid(plan.id.as_uuid()), plan_body],
            )
            .await
            .map_err(storage)?;
            d::outbox::insert_core(&mut tx, tenant, &events).await.map_err(storage)?;
            tx.commit().await.during("commit plan").map_err(storage)
        })
    }

    #[tracing::instrument(name = "dotmac.store.plan", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn plan(&self, tenant: TenantId, plan: PlanId) -> Result<Option<Plan>> {
        self.db
            .read_one(
                tenant,
                "plan",
                "SELECT body FROM billing_plans WHERE tenant_id = $1 AND plan_id = $2",
                &[id(tenant), Bind::Uuid(plan.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.plans", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn plans(&self, tenant: TenantId) -> Result<Vec<Plan>> {
        self.db
            .read_all(
                tenant,
                "plan",
                "SELECT body FROM billing_plans WHERE tenant_id = $1 ORDER BY plan_id",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }
}
