//! The storage the partners service needs: async, every call scoped to a tenant.

use std::future::Future;

use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{CustomerId, PaymentId, TenantId};
use serde::{Deserialize, Serialize};

use crate::attribution::CustomerAttribution;
use crate::error::PartnersError;
use crate::ids::{CommissionPlanId, PartnerId, PayoutRunId, SourceId};
use crate::ledger::LedgerEntry;
use crate::partner::PartnerAccount;
use crate::payout::PayoutRun;
use crate::plan::CommissionPlan;

/// One atomic write to partner ledgers: the entries one fact makes (in one or several
/// partners' ledgers), the payout run it records, if any, under the fact's source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerWrite {
    /// The fact: written once per tenant.
    pub source: SourceId,
    /// The new entries, each at its position in its partner's ledger.
    pub entries: Vec<(PartnerId, LedgerEntry)>,
    /// The payout run the write records.
    pub payout_run: Option<PayoutRun>,
}

/// What a [`LedgerWrite`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// Written, with its events.
    Written,
    /// The source was recorded before: nothing was written.
    Replayed,
}

/// Where partners, plans, attributions and ledgers are kept.
///
/// Versioned records (partner accounts, attributions) are saved whole: a record whose
/// `version()` is 1 is inserted ([`PartnersError::AlreadyExists`] when its id is taken), any
/// other replaces the stored one only if that one's version is exactly one less
/// ([`PartnersError::Stale`] otherwise: another writer saved first). Ledgers are append-only.
pub trait PartnerStore: Send + Sync {
    /// Saves a plan (inserts or replaces it).
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn save_commission_plan(
        &self,
        tenant: TenantId,
        plan: &CommissionPlan,
    ) -> impl Future<Output = Result<(), PartnersError>> + Send;

    /// A plan.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn commission_plan(
        &self,
        tenant: TenantId,
        plan: CommissionPlanId,
    ) -> impl Future<Output = Result<Option<CommissionPlan>, PartnersError>> + Send;

    /// Saves a partner account (see the trait docs for versions).
    ///
    /// # Errors
    ///
    /// [`PartnersError::AlreadyExists`], [`PartnersError::Stale`], storage failures.
    fn save_partner(
        &self,
        tenant: TenantId,
        account: &PartnerAccount,
    ) -> impl Future<Output = Result<(), PartnersError>> + Send;

    /// A partner account.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn partner(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> impl Future<Output = Result<Option<PartnerAccount>, PartnersError>> + Send;

    /// Every partner account of the tenant, by id.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn partners(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<PartnerAccount>, PartnersError>> + Send;

    /// Saves a customer's attribution record (see the trait docs for versions).
    ///
    /// # Errors
    ///
    /// [`PartnersError::AlreadyExists`], [`PartnersError::Stale`], storage failures.
    fn save_attribution(
        &self,
        tenant: TenantId,
        attribution: &CustomerAttribution,
    ) -> impl Future<Output = Result<(), PartnersError>> + Send;

    /// A customer's attribution record.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn attribution(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> impl Future<Output = Result<Option<CustomerAttribution>, PartnersError>> + Send;

    /// The attribution records of every customer `partner` ever held, by customer id.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn partner_customers(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> impl Future<Output = Result<Vec<CustomerAttribution>, PartnersError>> + Send;

    /// A partner's ledger entries, in `seq` order.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn partner_entries(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, PartnersError>> + Send;

    /// The partners whose ledgers hold an accrual of `payment`, by id.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn partners_with_payment(
        &self,
        tenant: TenantId,
        payment: PaymentId,
    ) -> impl Future<Output = Result<Vec<PartnerId>, PartnersError>> + Send;

    /// Whether a source was written.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn partner_source_recorded(
        &self,
        tenant: TenantId,
        source: SourceId,
    ) -> impl Future<Output = Result<bool, PartnersError>> + Send;

    /// Writes `write` and `events` atomically: a source recorded before writes nothing
    /// ([`WriteOutcome::Replayed`]); a position already taken (the caller's ledger is stale)
    /// fails the whole write with [`PartnersError::Stale`] (`what` = `"partner ledger"`, `id` =
    /// `"{partner}#{seq}"`); an event the outbox refuses fails it too.
    ///
    /// # Errors
    ///
    /// [`PartnersError::Stale`], storage failures.
    fn write_partner_ledgers(
        &self,
        tenant: TenantId,
        write: &LedgerWrite,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<WriteOutcome, PartnersError>> + Send;

    /// A payout run.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn payout_run(
        &self,
        tenant: TenantId,
        run: PayoutRunId,
    ) -> impl Future<Output = Result<Option<PayoutRun>, PartnersError>> + Send;
}
