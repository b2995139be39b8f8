//! [`InMemoryPartnerStore`]: the partner store in memory, for tests and examples.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use dotmac_core::outbox::{MemoryOutbox, OutboxEvent};
use dotmac_core::{CustomerId, PaymentId, TenantId};

use crate::attribution::CustomerAttribution;
use crate::error::PartnersError;
use crate::ids::{CommissionPlanId, PartnerId, PayoutRunId, SourceId};
use crate::ledger::{EntryKind, LedgerEntry};
use crate::partner::PartnerAccount;
use crate::payout::PayoutRun;
use crate::plan::CommissionPlan;
use crate::store::{LedgerWrite, PartnerStore, WriteOutcome};

/// Everything the store holds, behind its one lock.
#[derive(Debug, Default)]
struct State {
    plans: HashMap<(TenantId, CommissionPlanId), CommissionPlan>,
    partners: BTreeMap<(TenantId, PartnerId), PartnerAccount>,
    attributions: HashMap<(TenantId, CustomerId), CustomerAttribution>,
    customers_of: HashMap<(TenantId, PartnerId), BTreeSet<CustomerId>>,
    ledgers: HashMap<(TenantId, PartnerId), Vec<LedgerEntry>>,
    sources: HashSet<(TenantId, SourceId)>,
    runs: HashMap<(TenantId, PayoutRunId), PayoutRun>,
}

/// A [`PartnerStore`] in memory. Its outbox events go to a [`MemoryOutbox`] (its own, or one
/// shared with the application's other in-memory stores: [`InMemoryPartnerStore::with_outbox`]),
/// written under the store's lock with the entries.
#[derive(Debug, Default)]
pub struct InMemoryPartnerStore {
    state: Mutex<State>,
    outbox: Arc<MemoryOutbox>,
}

impl InMemoryPartnerStore {
    /// An empty store with its own outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store writing its events to `outbox`.
    pub fn with_outbox(outbox: Arc<MemoryOutbox>) -> Self {
        InMemoryPartnerStore {
            state: Mutex::default(),
            outbox,
        }
    }

    /// The outbox its events go to.
    pub fn outbox(&self) -> &Arc<MemoryOutbox> {
        &self.outbox
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Inserts (version 1) or replaces (the stored version is one less) a versioned record.
fn save_versioned<V>(
    stored: Option<&V>,
    version: u64,
    stored_version: impl Fn(&V) -> u64,
    what: &'static str,
    id: String,
) -> Result<(), PartnersError> {
    match stored {
        None if version == 1 => Ok(()),
        Some(_) if version == 1 => Err(PartnersError::AlreadyExists { what, id }),
        Some(old) if stored_version(old).checked_add(1) == Some(version) => Ok(()),
        _ => Err(PartnersError::Stale { what, id }),
    }
}

impl PartnerStore for InMemoryPartnerStore {
    #[tracing::instrument(name = "dotmac.store.save_commission_plan", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn save_commission_plan(
        &self,
        tenant: TenantId,
        plan: &CommissionPlan,
    ) -> Result<(), PartnersError> {
        self.lock().plans.insert((tenant, plan.id()), plan.clone());
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.commission_plan", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn commission_plan(
        &self,
        tenant: TenantId,
        plan: CommissionPlanId,
    ) -> Result<Option<CommissionPlan>, PartnersError> {
        Ok(self.lock().plans.get(&(tenant, plan)).cloned())
    }

    #[tracing::instrument(name = "dotmac.store.save_partner", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn save_partner(
        &self,
        tenant: TenantId,
        account: &PartnerAccount,
    ) -> Result<(), PartnersError> {
        let mut state = self.lock();
        let key = (tenant, account.id());
        save_versioned(
            state.partners.get(&key),
            account.version(),
            PartnerAccount::version,
            "partner",
            account.id().to_string(),
        )?;
        state.partners.insert(key, account.clone());
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.partner", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn partner(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<Option<PartnerAccount>, PartnersError> {
        Ok(self.lock().partners.get(&(tenant, partner)).cloned())
    }

    #[tracing::instrument(name = "dotmac.store.partners", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn partners(&self, tenant: TenantId) -> Result<Vec<PartnerAccount>, PartnersError> {
        Ok(self
            .lock()
            .partners
            .range((tenant, PartnerId::from_u128(0))..=(tenant, PartnerId::from_u128(u128::MAX)))
            .map(|(_, account)| account.clone())
            .collect())
    }

    #[tracing::instrument(name = "dotmac.store.save_attribution", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn save_attribution(
        &self,
        tenant: TenantId,
        attribution: &CustomerAttribution,
    ) -> Result<(), PartnersError> {
        let mut state = self.lock();
        let key = (tenant, attribution.customer());
        save_versioned(
            state.attributions.get(&key),
            attribution.version(),
            CustomerAttribution::version,
            "attribution",
            attribution.customer().to_string(),
        )?;
        for a in attribution.attributions() {
            state
                .customers_of
                .entry((tenant, a.partner))
                .or_default()
                .insert(attribution.customer());
        }
        state.attributions.insert(key, attribution.clone());
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.attribution", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn attribution(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Option<CustomerAttribution>, PartnersError> {
        Ok(self.lock().attributions.get(&(tenant, customer)).cloned())
    }

    #[tracing::instrument(name = "dotmac.store.partner_customers", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn partner_customers(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<Vec<CustomerAttribution>, PartnersError> {
        let state = self.lock();
        let Some(customers) = state.customers_of.get(&(tenant, partner)) else {
            return Ok(Vec::new());
        };
        Ok(customers
            .iter()
            .filter_map(|c| state.attributions.get(&(tenant, *c)).cloned())
            .collect())
    }

    #[tracing::instrument(name = "dotmac.store.partner_entries", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn partner_entries(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<Vec<LedgerEntry>, PartnersError> {
        Ok(self
            .lock()
            .ledgers
            .get(&(tenant, partner))
            .cloned()
            .unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.partners_with_payment", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn partners_with_payment(
        &self,
        tenant: TenantId,
        payment: PaymentId,
    ) -> Result<Vec<PartnerId>, PartnersError> {
        let state = self.lock();
        let mut found: Vec<PartnerId> = state
            .ledgers
            .iter()
            .filter(|((t, _), entries)| {
                *t == tenant
                    && entries
                        .iter()
                        .any(|e| matches!(&e.kind, EntryKind::Accrued(a) if a.payment == payment))
            })
            .map(|((_, partner), _)| *partner)
            .collect();
        found.sort_unstable();
        Ok(found)
    }

    #[tracing::instrument(name = "dotmac.store.partner_source_recorded", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn partner_source_recorded(
        &self,
        tenant: TenantId,
        source: SourceId,
    ) -> Result<bool, PartnersError> {
        Ok(self.lock().sources.contains(&(tenant, source)))
    }

    #[tracing::instrument(name = "dotmac.store.write_partner_ledgers", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, entries = write.entries.len()))]
    async fn write_partner_ledgers(
        &self,
        tenant: TenantId,
        write: &LedgerWrite,
        events: &[OutboxEvent],
    ) -> Result<WriteOutcome, PartnersError> {
        let mut state = self.lock();
        if state.sources.contains(&(tenant, write.source)) {
            return Ok(WriteOutcome::Replayed);
        }
        // Every position is checked (against the store and the call itself) before anything
        // is written.
        let mut next: HashMap<PartnerId, u64> = HashMap::new();
        for (partner, entry) in &write.entries {
            let expected = match next.get(partner) {
                Some(n) => *n,
                None => state
                    .ledgers
                    .get(&(tenant, *partner))
                    .map_or(0, |l| l.len() as u64),
            };
            if entry.seq != expected {
                return Err(PartnersError::Stale {
                    what: "partner ledger",
                    id: format!("{partner}#{}", entry.seq),
                });
            }
            next.insert(*partner, expected.saturating_add(1));
        }
        self.outbox.check(tenant, events)?;
        self.outbox.push(tenant, events)?;
        for (partner, entry) in &write.entries {
            state
                .ledgers
                .entry((tenant, *partner))
                .or_default()
                .push(entry.clone());
        }
        if let Some(run) = &write.payout_run {
            state.runs.insert((tenant, run.id), run.clone());
        }
        state.sources.insert((tenant, write.source));
        Ok(WriteOutcome::Written)
    }

    #[tracing::instrument(name = "dotmac.store.payout_run", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn payout_run(
        &self,
        tenant: TenantId,
        run: PayoutRunId,
    ) -> Result<Option<PayoutRun>, PartnersError> {
        Ok(self.lock().runs.get(&(tenant, run)).cloned())
    }
}
