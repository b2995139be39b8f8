//! `dotmac-partners`' storage trait: commission plans, partner accounts, attributions, the
//! partners' ledgers with the sources they were written from, and payout runs.

use std::collections::HashMap;

use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{CustomerId, PaymentId, TenantId};
use dotmac_partners::{
    CommissionPlan, CommissionPlanId, CustomerAttribution, EntryKind, LedgerEntry, LedgerWrite,
    PartnerAccount, PartnerId, PartnerStore, PartnersError, PayoutRun, PayoutRunId, SourceId,
    WriteOutcome,
};
use uuid::Uuid;

use crate::db::{dispatch, for_each_dialect};
use crate::docs::{Bind, Written, json};
use crate::error::{Context, SqlError};
use crate::store::SqlStore;

type Result<T> = std::result::Result<T, PartnersError>;

/// Storage failures as partner errors: the kind and the cause are kept.
fn storage(error: SqlError) -> PartnersError {
    PartnersError::Storage(error.into())
}

fn id(tenant: TenantId) -> Bind {
    Bind::Uuid(tenant.as_uuid())
}

fn body<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Bind> {
    json(what, value).map_err(storage)
}

fn version(v: u64) -> Bind {
    Bind::I64(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A versioned record's two writes: the insert of version 1 (`$1` tenant, `$2` id, `$3`
/// version, `$4` body) and the replacement of version n − 1 (the same and `$5`, n − 1).
pub(crate) struct Versioned {
    what: &'static str,
    id: String,
    key: Uuid,
    version: u64,
    body: Bind,
    insert: &'static str,
    update: &'static str,
}

for_each_dialect! {
    pub(crate) async fn save_versioned(tx: &mut Tx, tenant: TenantId, record: Versioned) -> Result<()> {
        let mut binds = vec![id(tenant), Bind::Uuid(record.key), version(record.version), record.body];
        if record.version == 1 {
            return match docs::execute(tx, record.insert, &binds).await.map_err(storage)? {
                Written::UniqueViolation => Err(PartnersError::AlreadyExists {
                    what: record.what,
                    id: record.id,
                }),
                Written::Rows(_) => Ok(()),
            };
        }
        binds.push(version(record.version.saturating_sub(1)));
        match docs::execute(tx, record.update, &binds).await.map_err(storage)? {
            Written::Rows(1) => Ok(()),
            _ => Err(PartnersError::Stale {
                what: record.what,
                id: record.id,
            }),
        }
    }

    /// One uuid column of every row.
    pub(crate) async fn uuids(tx: &mut Tx, sql: &'static str, binds: &[Bind]) -> Result<Vec<Uuid>> {
        let rows = docs::bind_all(sqlx::query(sql), binds)
            .fetch_all(&mut **tx)
            .await
            .during("read ids")
            .map_err(storage)?;
        rows.iter()
            .map(|row| sqlx::Row::try_get::<Uuid, _>(row, 0).during("read id").map_err(storage))
            .collect()
    }

    /// The write's source, entries and run; `Replayed` (the caller rolls back) when the source
    /// was written before.
    pub(crate) async fn write_ledgers(tx: &mut Tx, tenant: TenantId, write: &LedgerWrite) -> Result<WriteOutcome> {
        let recorded = docs::execute(
            tx,
            "INSERT INTO partner_sources (tenant_id, source_id) VALUES ($1, $2)",
            &[id(tenant), Bind::Uuid(write.source.as_uuid())],
        )
        .await
        .map_err(storage)?;
        if recorded == Written::UniqueViolation {
            return Ok(WriteOutcome::Replayed);
        }
        let mut next: HashMap<PartnerId, u64> = HashMap::new();
        for (partner, entry) in &write.entries {
            let stale = || PartnersError::Stale {
                what: "partner ledger",
                id: format!("{partner}#{}", entry.seq),
            };
            let expected = match next.get(partner) {
                Some(n) => *n,
                None => docs::scalar_i64(
                    tx,
                    "SELECT COUNT(*) FROM partner_ledger WHERE tenant_id = $1 AND partner_id = $2",
                    &[id(tenant), Bind::Uuid(partner.as_uuid())],
                )
                .await
                .map_err(storage)?
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            };
            if entry.seq != expected {
                return Err(stale());
            }
            next.insert(*partner, expected.saturating_add(1));
            let payment = match &entry.kind {
                EntryKind::Accrued(a) => Some(a.payment.as_uuid()),
                _ => None,
            };
            let written = docs::execute(
                tx,
                "INSERT INTO partner_ledger \
                 (tenant_id, partner_id, seq, entry_date, source_id, payment_id, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    id(tenant),
                    Bind::Uuid(partner.as_uuid()),
                    version(entry.seq),
                    Bind::Date(entry.on),
                    Bind::Uuid(entry.source.as_uuid()),
                    Bind::OptUuid(payment),
                    body("partner ledger entry", entry)?,
                ],
            )
            .await
            .map_err(storage)?;
            if written == Written::UniqueViolation {
                return Err(stale());
            }
        }
        if let Some(run) = &write.payout_run {
            docs::execute(
                tx,
                "INSERT INTO partner_payout_runs (tenant_id, run_id, as_of, body) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    id(tenant),
                    Bind::Uuid(run.id.as_uuid()),
                    Bind::Date(run.as_of),
                    body("payout run", run)?,
                ],
            )
            .await
            .map_err(storage)?;
        }
        Ok(WriteOutcome::Written)
    }
}

impl SqlStore {
    async fn save_record(&self, tenant: TenantId, record: Versioned) -> Result<()> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let saved = d::partners::save_versioned(&mut tx, tenant, record).await;
            match saved {
                Ok(()) => tx.commit().await.during("commit partner record").map_err(storage),
                Err(refused) => {
                    tx.rollback().await.during("roll back").map_err(storage)?;
                    Err(refused)
                }
            }
        })
    }
}

impl PartnerStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.save_commission_plan", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn save_commission_plan(&self, tenant: TenantId, plan: &CommissionPlan) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO partner_plans (tenant_id, plan_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, plan_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(plan.id().as_uuid()),
                    body("commission plan", plan)?,
                ],
            )
            .await
            .map_err(storage)
            .map(drop)
    }

    #[tracing::instrument(name = "dotmac.store.commission_plan", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn commission_plan(
        &self,
        tenant: TenantId,
        plan: CommissionPlanId,
    ) -> Result<Option<CommissionPlan>> {
        self.db
            .read_one(
                tenant,
                "commission plan",
                "SELECT body FROM partner_plans WHERE tenant_id = $1 AND plan_id = $2",
                &[id(tenant), Bind::Uuid(plan.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.save_partner", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn save_partner(&self, tenant: TenantId, account: &PartnerAccount) -> Result<()> {
        let record = Versioned {
            what: "partner",
            id: account.id().to_string(),
            key: account.id().as_uuid(),
            version: account.version(),
            body: body("partner", account)?,
            insert: "INSERT INTO partner_accounts (tenant_id, partner_id, version, body) \
                     VALUES ($1, $2, $3, $4)",
            update: "UPDATE partner_accounts SET version = $3, body = $4 \
                     WHERE tenant_id = $1 AND partner_id = $2 AND version = $5",
        };
        self.save_record(tenant, record).await
    }

    #[tracing::instrument(name = "dotmac.store.partner", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn partner(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<Option<PartnerAccount>> {
        self.db
            .read_one(
                tenant,
                "partner",
                "SELECT body FROM partner_accounts WHERE tenant_id = $1 AND partner_id = $2",
                &[id(tenant), Bind::Uuid(partner.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.partners", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn partners(&self, tenant: TenantId) -> Result<Vec<PartnerAccount>> {
        self.db
            .read_all(
                tenant,
                "partner",
                "SELECT body FROM partner_accounts WHERE tenant_id = $1 ORDER BY partner_id",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.save_attribution", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn save_attribution(
        &self,
        tenant: TenantId,
        attribution: &CustomerAttribution,
    ) -> Result<()> {
        let customer = attribution.customer();
        let record = Versioned {
            what: "attribution",
            id: customer.to_string(),
            key: customer.as_uuid(),
            version: attribution.version(),
            body: body("attribution", attribution)?,
            insert: "INSERT INTO partner_attributions (tenant_id, customer_id, version, body) \
                     VALUES ($1, $2, $3, $4)",
            update: "UPDATE partner_attributions SET version = $3, body = $4 \
                     WHERE tenant_id = $1 AND customer_id = $2 AND version = $5",
        };
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            if let Err(refused) = d::partners::save_versioned(&mut tx, tenant, record).await {
                tx.rollback().await.during("roll back").map_err(storage)?;
                return Err(refused);
            }
            for a in attribution.attributions() {
                d::docs::execute(
                    &mut tx,
                    "INSERT INTO partner_customers (tenant_id, partner_id, customer_id) \
                     VALUES ($1, $2, $3) ON CONFLICT (tenant_id, partner_id, customer_id) DO NOTHING",
                    &[id(tenant), Bind::Uuid(a.partner.as_uuid()), Bind::Uuid(customer.as_uuid())],
                )
                .await
                .map_err(storage)?;
            }
            tx.commit().await.during("commit attribution").map_err(storage)
        })
    }

    #[tracing::instrument(name = "dotmac.store.attribution", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn attribution(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Option<CustomerAttribution>> {
        self.db
            .read_one(
                tenant,
                "attribution",
                "SELECT body FROM partner_attributions WHERE tenant_id = $1 AND customer_id = $2",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.partner_customers", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn partner_customers(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<Vec<CustomerAttribution>> {
        self.db
            .read_all(
                tenant,
                "attribution",
                "SELECT a.body FROM partner_customers c JOIN partner_attributions a \
                 ON a.tenant_id = c.tenant_id AND a.customer_id = c.customer_id \
                 WHERE c.tenant_id = $1 AND c.partner_id = $2 ORDER BY c.customer_id",
                &[id(tenant), Bind::Uuid(partner.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.partner_entries", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn partner_entries(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<Vec<LedgerEntry>> {
        self.db
            .read_all(
                tenant,
                "partner ledger entry",
                "SELECT body FROM partner_ledger WHERE tenant_id = $1 AND partner_id = $2 \
                 ORDER BY seq",
                &[id(tenant), Bind::Uuid(partner.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.partners_with_payment", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn partners_with_payment(
        &self,
        tenant: TenantId,
        payment: PaymentId,
    ) -> Result<Vec<PartnerId>> {
        let found = dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await.map_err(storage)?;
            let found = d::partners::uuids(
                &mut tx,
                "SELECT DISTINCT partner_id FROM partner_ledger \
                 WHERE tenant_id = $1 AND payment_id = $2 ORDER BY partner_id",
                &[id(tenant), Bind::Uuid(payment.as_uuid())],
            )
            .await?;
            tx.commit().await.during("end read").map_err(storage)?;
            found
        });
        Ok(found.into_iter().map(PartnerId::from_uuid).collect())
    }

    #[tracing::instrument(name = "dotmac.store.partner_source_recorded", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn partner_source_recorded(&self, tenant: TenantId, source: SourceId) -> Result<bool> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await.map_err(storage)?;
            let count = d::docs::scalar_i64(
                &mut tx,
                "SELECT COUNT(*) FROM partner_sources WHERE tenant_id = $1 AND source_id = $2",
                &[id(tenant), Bind::Uuid(source.as_uuid())],
            )
            .await
            .map_err(storage)?;
            tx.commit().await.during("end read").map_err(storage)?;
            Ok(count.is_some_and(|n| n > 0))
        })
    }

    #[tracing::instrument(name = "dotmac.store.write_partner_ledgers", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), entries = write.entries.len()))]
    async fn write_partner_ledgers(
        &self,
        tenant: TenantId,
        write: &LedgerWrite,
        events: &[OutboxEvent],
    ) -> Result<WriteOutcome> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            match d::partners::write_ledgers(&mut tx, tenant, write).await {
                Ok(WriteOutcome::Written) => {}
                other => {
                    tx.rollback().await.during("roll back").map_err(storage)?;
                    return other;
                }
            }
            d::outbox::insert_core(&mut tx, tenant, events).await.map_err(storage)?;
            tx.commit().await.during("commit partner ledgers").map_err(storage)?;
            Ok(WriteOutcome::Written)
        })
    }

    #[tracing::instrument(name = "dotmac.store.payout_run", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn payout_run(&self, tenant: TenantId, run: PayoutRunId) -> Result<Option<PayoutRun>> {
        self.db
            .read_one(
                tenant,
                "payout run",
                "SELECT body FROM partner_payout_runs WHERE tenant_id = $1 AND run_id = $2",
                &[id(tenant), Bind::Uuid(run.as_uuid())],
            )
            .await
            .map_err(storage)
    }
}
