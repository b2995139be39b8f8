//! The partners service: partner accounts, attribution and ledgers over a [`PartnerStore`],
//! each fact one atomic, idempotent store write.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{Clock, CustomerId, DomainEvent, Money, Period, TenantId};
use serde::{Deserialize, Serialize};

use crate::attribution::{Attribution, AttributionRule, CustomerAttribution};
use crate::commission::{CollectedPayment, RefundedPayment, Standing, price_payment, share_out};
use crate::error::PartnersError;
use crate::ids::{HoldId, PartnerId, PayoutId, PayoutRunId, SourceId};
use crate::ledger::{EntryKind, LedgerEntry, LedgerSummary, PartnerLedger, Share};
use crate::partner::{PartnerAccount, PartnerKind, PartnerStatus};
use crate::payout::{PartnerEvent, PayoutInstruction, PayoutRun, PayoutSkip};
use crate::plan::{CommissionPlan, RevenueShare};
use crate::statement::{PartnerActivity, Statement, TierChange, activity, statement, tier_changes};
use crate::store::{LedgerWrite, PartnerStore, WriteOutcome};
use crate::tiers::TierBasis;

/// How many times a write re-reads the ledgers and tries again when another writer appended
/// to one of them first.
const WRITE_ATTEMPTS: usize = 5;

/// The partners service's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PartnersSettings {
    /// The tenant's zone: "today" is the clock's date there.
    pub zone: Tz,
}

impl Default for PartnersSettings {
    fn default() -> Self {
        PartnersSettings { zone: Tz::UTC }
    }
}

impl PartnersSettings {
    /// With `zone` as the tenant's zone.
    pub fn with_zone(mut self, zone: Tz) -> Self {
        self.zone = zone;
        self
    }
}

/// A fact an operator (or the application) records in a partner's ledger by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum LedgerFact {
    /// Keep `amount` of the balance from payouts.
    Hold {
        /// The hold's id.
        hold: HoldId,
        /// The amount.
        amount: Money,
        /// Why.
        reason: String,
    },
    /// Release a hold.
    Release {
        /// The hold.
        hold: HoldId,
    },
    /// Approve every movement dated up to `through`.
    Approve {
        /// The last day approved.
        through: NaiveDate,
    },
    /// A correction: positive adds to the balance.
    Adjust {
        /// The amount.
        amount: Money,
        /// Why.
        reason: String,
    },
    /// The partner was paid outside a payout run.
    Payout {
        /// The payout.
        payout: PayoutId,
        /// The amount.
        amount: Money,
    },
}

impl From<LedgerFact> for EntryKind {
    fn from(fact: LedgerFact) -> Self {
        match fact {
            LedgerFact::Hold {
                hold,
                amount,
                reason,
            } => EntryKind::Held {
                hold,
                amount,
                reason,
            },
            LedgerFact::Release { hold } => EntryKind::Released { hold },
            LedgerFact::Approve { through } => EntryKind::Approved { through },
            LedgerFact::Adjust { amount, reason } => EntryKind::Adjusted { amount, reason },
            LedgerFact::Payout { payout, amount } => EntryKind::PaidOut {
                payout,
                run: None,
                amount,
            },
        }
    }
}

struct Inner<S, C> {
    store: S,
    clock: C,
    settings: PartnersSettings,
}

/// Partners, attribution, commission ledgers, payouts. A cheap handle (clones share the
/// store and clock).
///
/// Payments and refunds come in as [`CollectedPayment`]s and [`RefundedPayment`]s, each with
/// the [`SourceId`] of the fact (the outbox event that carried it): a source is written once,
/// so a replay accrues and claws back nothing.
///
/// ```
/// # futures_block_on(async {
/// use chrono::NaiveDate;
/// use dotmac_core::{Currency, CustomerId, FixedClock, Money, PaymentId, TenantId};
/// use dotmac_partners::{
///     CollectedPayment, CommissionPlan, CommissionPlanId, InMemoryPartnerStore, PartnerAccount,
///     PartnerId, PartnerKind, PartnerStatus, PartnersService, PartnersSettings, RevenueTag, SourceId,
/// };
///
/// let day = |d| NaiveDate::from_ymd_opt(2026, 6, d).unwrap();
/// let usd = |s: &str| Money::parse(s, Currency::USD);
/// let service = PartnersService::new(
///     InMemoryPartnerStore::new(),
///     FixedClock::new(chrono::DateTime::UNIX_EPOCH),
///     PartnersSettings::default(),
/// );
/// let tenant = TenantId::new();
/// let plan = CommissionPlan::builder(CommissionPlanId::from_u128(1), "Referrals", Currency::USD)
///     .revenue_share(10.into())
///     .build()?;
/// service.save_plan(tenant, &plan).await?;
/// let shop = PartnerAccount::apply(PartnerId::from_u128(1), "Shop", PartnerKind::Referral, plan.id(), day(1))?;
/// service.apply(tenant, shop).await?;
/// service.change_status(tenant, PartnerId::from_u128(1), PartnerStatus::Active, day(1)).await?;
/// let customer = CustomerId::from_u128(7);
/// service.assign(tenant, customer, PartnerId::from_u128(1), day(2)).await?;
///
/// let payment = CollectedPayment {
///     customer, payment: PaymentId::from_u128(9), amount: usd("30.00")?, on: day(5), tag: RevenueTag::default(),
/// };
/// let source = SourceId::from_u128(1);
/// assert_eq!(service.record_payment(tenant, source, payment).await?.len(), 1);
/// assert!(service.record_payment(tenant, source, payment).await?.is_empty()); // a replay
/// let summary = service.summary(tenant, PartnerId::from_u128(1), day(30)).await?;
/// assert_eq!(summary.balance, usd("3.00")?);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// # fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = Context::from_waker(Waker::noop());
/// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// ```
pub struct PartnersService<S, C> {
    inner: Arc<Inner<S, C>>,
}

impl<S, C> Clone for PartnersService<S, C> {
    fn clone(&self) -> Self {
        PartnersService {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, C> std::fmt::Debug for PartnersService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnersService")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// The ledgers a fact writes to, loaded, with what was appended to them.
#[derive(Default)]
struct Batch {
    ledgers: BTreeMap<PartnerId, (usize, PartnerLedger)>,
}

impl Batch {
    fn add(&mut self, ledger: PartnerLedger) {
        let loaded = ledger.entries().len();
        self.ledgers
            .entry(ledger.partner())
            .or_insert((loaded, ledger));
    }

    fn has(&self, partner: PartnerId) -> bool {
        self.ledgers.contains_key(&partner)
    }

    fn ledger(&self, partner: PartnerId) -> Option<&PartnerLedger> {
        self.ledgers.get(&partner).map(|(_, l)| l)
    }

    fn append(
        &mut self,
        partner: PartnerId,
        on: NaiveDate,
        source: SourceId,
        kind: EntryKind,
    ) -> Result<(), PartnersError> {
        let (_, ledger) = self
            .ledgers
            .get_mut(&partner)
            .ok_or(PartnersError::UnknownPartner(partner))?;
        ledger.append(on, source, kind).map(drop)
    }

    fn new_entries(&self) -> Vec<(PartnerId, LedgerEntry)> {
        self.ledgers
            .iter()
            .flat_map(|(partner, (loaded, ledger))| {
                ledger
                    .entries()
                    .iter()
                    .skip(*loaded)
                    .map(|e| (*partner, e.clone()))
            })
            .collect()
    }
}

fn retry_stale(error: &PartnersError, attempt: usize) -> bool {
    matches!(error, PartnersError::Stale { .. }) && attempt < WRITE_ATTEMPTS
}

impl<S: PartnerStore, C: Clock> PartnersService<S, C> {
    /// A service over `store` and `clock`.
    pub fn new(store: S, clock: C, settings: PartnersSettings) -> Self {
        PartnersService {
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
    pub fn settings(&self) -> &PartnersSettings {
        &self.inner.settings
    }

    /// Today in the tenant's zone.
    pub fn today(&self) -> NaiveDate {
        self.inner.clock.today_in(self.inner.settings.zone)
    }

    /// Saves a commission plan (new, or a replacement for partners already on it).
    ///
    /// # Errors
    ///
    /// Storage failures.
    #[tracing::instrument(name = "dotmac.partners.save_plan", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn save_plan(
        &self,
        tenant: TenantId,
        plan: &CommissionPlan,
    ) -> Result<(), PartnersError> {
        self.inner.store.save_commission_plan(tenant, plan).await
    }

    /// A partner's account.
    ///
    /// # Errors
    ///
    /// [`PartnersError::UnknownPartner`], storage failures.
    pub async fn account(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<PartnerAccount, PartnersError> {
        self.inner
            .store
            .partner(tenant, partner)
            .await?
            .ok_or(PartnersError::UnknownPartner(partner))
    }

    /// A partner's plan.
    ///
    /// # Errors
    ///
    /// [`PartnersError::UnknownPlan`], storage failures.
    pub async fn plan_of(
        &self,
        tenant: TenantId,
        account: &PartnerAccount,
    ) -> Result<CommissionPlan, PartnersError> {
        self.inner
            .store
            .commission_plan(tenant, account.plan())
            .await?
            .ok_or(PartnersError::UnknownPlan(account.plan()))
    }

    /// Opens a partner's account (status applied): its plan must exist, and a sub-agent's
    /// master must be an active master agent on a plan in the same currency.
    ///
    /// # Errors
    ///
    /// [`PartnersError::AlreadyExists`] for an account saved before,
    /// [`PartnersError::UnknownPlan`], [`PartnersError::UnknownPartner`] (the master),
    /// [`PartnersError::NotAMasterAgent`], [`PartnersError::PartnerNotActive`],
    /// [`PartnersError::InvalidPartner`] for a master's plan in another currency; storage
    /// failures. Nothing is saved on error.
    #[tracing::instrument(name = "dotmac.partners.apply", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn apply(
        &self,
        tenant: TenantId,
        mut account: PartnerAccount,
    ) -> Result<PartnerAccount, PartnersError> {
        if account.version() != 0 {
            return Err(PartnersError::AlreadyExists {
                what: "partner",
                id: account.id().to_string(),
            });
        }
        let plan = self.plan_of(tenant, &account).await?;
        if let Some(link) = account.master() {
            let master = self.account(tenant, link.master()).await?;
            if master.kind() != PartnerKind::MasterAgent {
                return Err(PartnersError::NotAMasterAgent(master.id()));
            }
            if master.status() != PartnerStatus::Active {
                return Err(PartnersError::PartnerNotActive {
                    partner: master.id(),
                    status: master.status(),
                });
            }
            if self.plan_of(tenant, &master).await?.currency() != plan.currency() {
                return Err(PartnersError::InvalidPartner {
                    partner: account.id(),
                    reason: "a sub-agent's plan must be in its master agent's currency",
                });
            }
        }
        account.bump_version();
        self.inner.store.save_partner(tenant, &account).await?;
        metrics::counter!("dotmac_partners_applications_total").increment(1);
        Ok(account)
    }

    /// Moves a partner along its lifecycle from `on`.
    ///
    /// # Errors
    ///
    /// [`PartnersError::UnknownPartner`], [`PartnersError::InvalidTransition`],
    /// [`PartnersError::OutOfOrder`], [`PartnersError::Stale`] when another writer saved the
    /// account first (retry); storage failures. Nothing is saved on error.
    #[tracing::instrument(name = "dotmac.partners.change_status", level = "info", skip_all, fields(tenant = %tenant, to = %to))]
    pub async fn change_status(
        &self,
        tenant: TenantId,
        partner: PartnerId,
        to: PartnerStatus,
        on: NaiveDate,
    ) -> Result<PartnerAccount, PartnersError> {
        let mut account = self.account(tenant, partner).await?;
        account.change_status(to, on)?;
        account.bump_version();
        self.inner.store.save_partner(tenant, &account).await?;
        metrics::counter!("dotmac_partners_status_changes_total", "to" => to.as_str()).increment(1);
        Ok(account)
    }

    /// A customer's attribution record (empty when no partner touched it).
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn attribution(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<CustomerAttribution, PartnersError> {
        Ok(self
            .inner
            .store
            .attribution(tenant, customer)
            .await?
            .unwrap_or_else(|| CustomerAttribution::new(customer)))
    }

    async fn save_attribution(
        &self,
        tenant: TenantId,
        mut record: CustomerAttribution,
    ) -> Result<(), PartnersError> {
        record.bump_version();
        self.inner.store.save_attribution(tenant, &record).await
    }

    async fn check_active(
        &self,
        tenant: TenantId,
        partner: PartnerId,
        on: NaiveDate,
    ) -> Result<(), PartnersError> {
        let status = self.account(tenant, partner).await?.status_on(on);
        if status == PartnerStatus::Active {
            Ok(())
        } else {
            Err(PartnersError::PartnerNotActive { partner, status })
        }
    }

    /// Records a partner's touch of a (prospective) customer.
    ///
    /// # Errors
    ///
    /// [`PartnersError::UnknownPartner`], [`PartnersError::Stale`], storage failures.
    #[tracing::instrument(name = "dotmac.partners.record_touch", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn record_touch(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        partner: PartnerId,
        on: NaiveDate,
    ) -> Result<(), PartnersError> {
        self.account(tenant, partner).await?;
        let mut record = self.attribution(tenant, customer).await?;
        record.record_touch(partner, on);
        self.save_attribution(tenant, record).await
    }

    /// Attributes a customer from `on` to the partner `rule` picks among its touches.
    ///
    /// # Errors
    ///
    /// As [`CustomerAttribution::attribute`]; [`PartnersError::PartnerNotActive`] when the
    /// winning partner is not active that day; [`PartnersError::Stale`], storage failures.
    #[tracing::instrument(name = "dotmac.partners.attribute", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn attribute(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        rule: AttributionRule,
        on: NaiveDate,
    ) -> Result<Attribution, PartnersError> {
        let mut record = self.attribution(tenant, customer).await?;
        let attribution = record.attribute(rule, on)?;
        self.check_active(tenant, attribution.partner, on).await?;
        self.save_attribution(tenant, record).await?;
        metrics::counter!("dotmac_partners_attributions_total").increment(1);
        Ok(attribution)
    }

    /// Attributes a customer to `partner` from `on` directly.
    ///
    /// # Errors
    ///
    /// As [`CustomerAttribution::assign`]; [`PartnersError::UnknownPartner`],
    /// [`PartnersError::PartnerNotActive`], [`PartnersError::Stale`], storage failures.
    #[tracing::instrument(name = "dotmac.partners.assign", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn assign(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        partner: PartnerId,
        on: NaiveDate,
    ) -> Result<Attribution, PartnersError> {
        self.check_active(tenant, partner, on).await?;
        let mut record = self.attribution(tenant, customer).await?;
        let attribution = record.assign(partner, on)?;
        self.save_attribution(tenant, record).await?;
        metrics::counter!("dotmac_partners_attributions_total").increment(1);
        Ok(attribution)
    }

    /// Moves a customer to partner `to` from `on`.
    ///
    /// # Errors
    ///
    /// As [`CustomerAttribution::transfer`]; [`PartnersError::UnknownPartner`],
    /// [`PartnersError::PartnerNotActive`], [`PartnersError::Stale`], storage failures.
    #[tracing::instrument(name = "dotmac.partners.transfer", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn transfer(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        to: PartnerId,
        on: NaiveDate,
    ) -> Result<Attribution, PartnersError> {
        self.check_active(tenant, to, on).await?;
        let mut record = self.attribution(tenant, customer).await?;
        let attribution = record.transfer(to, on)?;
        self.save_attribution(tenant, record).await?;
        metrics::counter!("dotmac_partners_transfers_total").increment(1);
        Ok(attribution)
    }

    /// Ends a customer's current attribution from `on`.
    ///
    /// # Errors
    ///
    /// As [`CustomerAttribution::end`]; [`PartnersError::Stale`], storage failures.
    #[tracing::instrument(name = "dotmac.partners.end_attribution", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn end_attribution(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        on: NaiveDate,
    ) -> Result<(), PartnersError> {
        let mut record = self.attribution(tenant, customer).await?;
        record.end(on)?;
        self.save_attribution(tenant, record).await
    }

    /// A partner's ledger, in its plan's currency.
    ///
    /// # Errors
    ///
    /// [`PartnersError::UnknownPartner`], [`PartnersError::UnknownPlan`], a stored ledger
    /// that cannot be rebuilt, storage failures.
    pub async fn ledger(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<PartnerLedger, PartnersError> {
        let account = self.account(tenant, partner).await?;
        let plan = self.plan_of(tenant, &account).await?;
        self.ledger_in(tenant, partner, &plan).await
    }

    async fn ledger_in(
        &self,
        tenant: TenantId,
        partner: PartnerId,
        plan: &CommissionPlan,
    ) -> Result<PartnerLedger, PartnersError> {
        let entries = self.inner.store.partner_entries(tenant, partner).await?;
        PartnerLedger::from_entries(partner, plan.currency(), entries)
    }

    async fn load_into(
        &self,
        batch: &mut Batch,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<(), PartnersError> {
        if !batch.has(partner) {
            batch.add(self.ledger(tenant, partner).await?);
        }
        Ok(())
    }

    /// A partner's totals and what is payable on `as_of`.
    ///
    /// # Errors
    ///
    /// As [`PartnersService::ledger`].
    pub async fn summary(
        &self,
        tenant: TenantId,
        partner: PartnerId,
        as_of: NaiveDate,
    ) -> Result<LedgerSummary, PartnersError> {
        let account = self.account(tenant, partner).await?;
        let plan = self.plan_of(tenant, &account).await?;
        self.ledger_in(tenant, partner, &plan)
            .await?
            .summary(as_of, &plan)
    }

    /// A partner's statement for `period`: each movement with its source payment and rate,
    /// totals that reconcile to the ledger.
    ///
    /// # Errors
    ///
    /// As [`PartnersService::ledger`].
    #[tracing::instrument(name = "dotmac.partners.statement", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn statement(
        &self,
        tenant: TenantId,
        partner: PartnerId,
        period: Period,
    ) -> Result<Statement, PartnersError> {
        let account = self.account(tenant, partner).await?;
        let plan = self.plan_of(tenant, &account).await?;
        let ledger = self.ledger_in(tenant, partner, &plan).await?;
        statement(&ledger, &plan, period)
    }

    /// A partner's figures for `period`.
    ///
    /// # Errors
    ///
    /// As [`PartnersService::ledger`].
    #[tracing::instrument(name = "dotmac.partners.activity", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn activity(
        &self,
        tenant: TenantId,
        partner: PartnerId,
        period: Period,
    ) -> Result<PartnerActivity, PartnersError> {
        let account = self.account(tenant, partner).await?;
        let plan = self.plan_of(tenant, &account).await?;
        let ledger = self.ledger_in(tenant, partner, &plan).await?;
        let customers = self.inner.store.partner_customers(tenant, partner).await?;
        activity(&ledger, &plan, &customers, period)
    }

    /// Every partner's figures for `period`, by partner id.
    ///
    /// # Errors
    ///
    /// As [`PartnersService::activity`].
    pub async fn programme_activity(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<Vec<PartnerActivity>, PartnersError> {
        let mut all = Vec::new();
        for account in self.inner.store.partners(tenant).await? {
            all.push(self.activity(tenant, account.id(), period).await?);
        }
        Ok(all)
    }

    /// A partner's levels over time.
    ///
    /// # Errors
    ///
    /// As [`PartnersService::ledger`].
    pub async fn tier_changes(
        &self,
        tenant: TenantId,
        partner: PartnerId,
    ) -> Result<Vec<TierChange>, PartnersError> {
        Ok(tier_changes(&self.ledger(tenant, partner).await?))
    }

    /// What a tier schedule by active customers needs to know of the partner's book.
    async fn standing(
        &self,
        tenant: TenantId,
        plan: &CommissionPlan,
        record: &CustomerAttribution,
        partner: PartnerId,
        on: NaiveDate,
    ) -> Result<Standing, PartnersError> {
        let referred_on = record.referred_on().unwrap_or(on);
        let by_customers = matches!(
            plan.revenue_share(),
            Some(RevenueShare::Tiered(s)) if s.basis() == TierBasis::ActiveCustomers
        );
        if !by_customers {
            return Ok(Standing {
                referred_on,
                active_customers: 0,
                customer_rank: 0,
            });
        }
        let mut book: Vec<(NaiveDate, CustomerId)> = self
            .inner
            .store
            .partner_customers(tenant, partner)
            .await?
            .iter()
            .filter_map(|c| {
                c.on(on)
                    .filter(|a| a.partner == partner)
                    .map(|a| (a.from, c.customer()))
            })
            .collect();
        book.sort_unstable();
        let active = book.len() as u64;
        let rank = book
            .iter()
            .position(|(_, c)| *c == record.customer())
            .map_or(active.saturating_add(1), |i| (i as u64).saturating_add(1));
        Ok(Standing {
            referred_on,
            active_customers: active,
            customer_rank: rank,
        })
    }

    /// Records what a customer's payment earns: in the ledger of the partner the customer is
    /// attributed to on the payment's day (if that partner earns then), and for a sub-agent
    /// its master's override in the master's ledger. Returns the entries written; none for a
    /// source written before (a replay), a customer attributed to nobody that day, or a
    /// payment already accrued.
    ///
    /// # Errors
    ///
    /// As [`price_payment`] (a payment in another currency than the plan's);
    /// [`PartnersError::UnknownPartner`], [`PartnersError::UnknownPlan`]; storage failures
    /// ([`PartnersError::Stale`] only after several writers kept appending first). Nothing is
    /// written on error.
    #[tracing::instrument(name = "dotmac.partners.record_payment", level = "info", skip_all, fields(tenant = %tenant, entries = tracing::field::Empty))]
    pub async fn record_payment(
        &self,
        tenant: TenantId,
        source: SourceId,
        payment: CollectedPayment,
    ) -> Result<Vec<(PartnerId, LedgerEntry)>, PartnersError> {
        let mut attempt = 1;
        loop {
            match self.try_payment(tenant, source, &payment).await {
                Err(e) if retry_stale(&e, attempt) => attempt = attempt.saturating_add(1),
                done => {
                    let done = done?;
                    tracing::Span::current().record("entries", done.len());
                    metrics::counter!("dotmac_partners_accruals_total")
                        .increment(done.len() as u64);
                    return Ok(done);
                }
            }
        }
    }

    async fn try_payment(
        &self,
        tenant: TenantId,
        source: SourceId,
        payment: &CollectedPayment,
    ) -> Result<Vec<(PartnerId, LedgerEntry)>, PartnersError> {
        let store = &self.inner.store;
        if store.partner_source_recorded(tenant, source).await? {
            return Ok(self.replayed());
        }
        let Some(record) = store.attribution(tenant, payment.customer).await? else {
            return Ok(Vec::new());
        };
        let Some(partner) = record.partner_on(payment.on) else {
            return Ok(Vec::new());
        };
        let account = self.account(tenant, partner).await?;
        if !account.status_on(payment.on).earns() {
            return Ok(Vec::new());
        }
        let plan = self.plan_of(tenant, &account).await?;
        let ledger = self.ledger_in(tenant, partner, &plan).await?;
        if ledger.has_accrued(payment.payment) {
            return Ok(self.replayed());
        }
        let standing = self
            .standing(tenant, &plan, &record, partner, payment.on)
            .await?;
        let earnings = price_payment(&plan, &ledger, &standing, payment)?;
        let mut master = None;
        if let Some(link) = account.master() {
            let master_account = self.account(tenant, link.master()).await?;
            // A master that does not earn that day takes no override: the sub-agent keeps the
            // whole, so the parts always sum to it.
            if master_account.status_on(payment.on).earns() {
                master = Some(link);
            }
        }
        let (own, overrides) = share_out(
            &earnings,
            payment.customer,
            payment.payment,
            partner,
            master,
        )?;
        let mut batch = Batch::default();
        batch.add(ledger);
        for accrual in own {
            batch.append(partner, payment.on, source, EntryKind::Accrued(accrual))?;
        }
        if let Some(link) = master {
            self.load_into(&mut batch, tenant, link.master()).await?;
            for accrual in overrides {
                batch.append(
                    link.master(),
                    payment.on,
                    source,
                    EntryKind::Accrued(accrual),
                )?;
            }
        }
        Ok(self
            .write(tenant, source, batch, None, &[])
            .await?
            .unwrap_or_else(|| self.replayed()))
    }

    fn replayed(&self) -> Vec<(PartnerId, LedgerEntry)> {
        metrics::counter!("dotmac_partners_replays_total").increment(1);
        Vec::new()
    }

    /// Writes the batch's new entries (and the run) under `source`: `None` when the source
    /// was written before (nothing is written then).
    async fn write(
        &self,
        tenant: TenantId,
        source: SourceId,
        batch: Batch,
        payout_run: Option<PayoutRun>,
        events: &[OutboxEvent],
    ) -> Result<Option<Vec<(PartnerId, LedgerEntry)>>, PartnersError> {
        let entries = batch.new_entries();
        if entries.is_empty() && payout_run.is_none() {
            return Ok(Some(entries));
        }
        let write = LedgerWrite {
            source,
            entries,
            payout_run,
        };
        match self
            .inner
            .store
            .write_partner_ledgers(tenant, &write, events)
            .await?
        {
            WriteOutcome::Written => Ok(Some(write.entries)),
            _ => Ok(None),
        }
    }

    /// Records what a refund takes back: from the ledgers that accrued the payment it names
    /// (or, when it names none, the customer's most recent payments in the ledger of its
    /// partner on the refund's day), each at what the payment earned there, a master's
    /// override included. Returns the entries written; none for a replay or when nothing was
    /// earned on the refunded money.
    ///
    /// # Errors
    ///
    /// [`PartnersError::NotPositive`] for a refund not above zero; a refund in another
    /// currency; storage failures. Nothing is written on error.
    #[tracing::instrument(name = "dotmac.partners.record_refund", level = "info", skip_all, fields(tenant = %tenant, entries = tracing::field::Empty))]
    pub async fn record_refund(
        &self,
        tenant: TenantId,
        source: SourceId,
        refund: RefundedPayment,
    ) -> Result<Vec<(PartnerId, LedgerEntry)>, PartnersError> {
        let mut attempt = 1;
        loop {
            match self.try_refund(tenant, source, &refund).await {
                Err(e) if retry_stale(&e, attempt) => attempt = attempt.saturating_add(1),
                done => {
                    let done = done?;
                    tracing::Span::current().record("entries", done.len());
                    metrics::counter!("dotmac_partners_clawbacks_total")
                        .increment(done.len() as u64);
                    return Ok(done);
                }
            }
        }
    }

    async fn try_refund(
        &self,
        tenant: TenantId,
        source: SourceId,
        refund: &RefundedPayment,
    ) -> Result<Vec<(PartnerId, LedgerEntry)>, PartnersError> {
        let store = &self.inner.store;
        if store.partner_source_recorded(tenant, source).await? {
            return Ok(self.replayed());
        }
        let earners = match refund.payment {
            Some(payment) => store.partners_with_payment(tenant, payment).await?,
            None => {
                let record = store.attribution(tenant, refund.customer).await?;
                let partner = record.as_ref().and_then(|r| {
                    r.partner_on(refund.on)
                        .or_else(|| r.attributions().last().map(|a| a.partner))
                });
                partner.into_iter().collect()
            }
        };
        let mut batch = Batch::default();
        for partner in &earners {
            self.load_into(&mut batch, tenant, *partner).await?;
        }
        // Which payments the refund returns, in the ledgers that earned them as their own
        // customer's, and the master agents that took an override on them.
        let mut parts = Vec::new();
        for partner in &earners {
            let Some(ledger) = batch.ledger(*partner) else {
                continue;
            };
            for (payment, part) in
                ledger.refund_parts(refund.customer, refund.amount, refund.payment)?
            {
                let master = ledger.accruals().find_map(|(_, a)| match a.share {
                    Share::SubAgent { master } if a.payment == payment => Some(master),
                    _ => None,
                });
                parts.push((*partner, payment, part, master));
            }
        }
        for (_, _, _, master) in &parts {
            if let Some(master) = master {
                self.load_into(&mut batch, tenant, *master).await?;
            }
        }
        let mut planned = Vec::new();
        for (partner, payment, part, master) in parts {
            for ledger_of in std::iter::once(partner).chain(master) {
                if let Some(ledger) = batch.ledger(ledger_of) {
                    for clawback in ledger.clawbacks_for(payment, part, refund.refund)? {
                        planned.push((ledger_of, clawback));
                    }
                }
            }
        }
        for (partner, clawback) in planned {
            batch.append(partner, refund.on, source, EntryKind::ClawedBack(clawback))?;
        }
        Ok(self
            .write(tenant, source, batch, None, &[])
            .await?
            .unwrap_or_else(|| self.replayed()))
    }

    /// Records an operator's fact in a partner's ledger (a hold, a release, an approval, an
    /// adjustment, a payout made elsewhere), once per source. Returns the entry; `None` for a
    /// replay.
    ///
    /// # Errors
    ///
    /// As [`PartnerLedger::append`]; [`PartnersError::UnknownPartner`], storage failures.
    #[tracing::instrument(name = "dotmac.partners.record_fact", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn record_fact(
        &self,
        tenant: TenantId,
        source: SourceId,
        partner: PartnerId,
        on: NaiveDate,
        fact: LedgerFact,
    ) -> Result<Option<LedgerEntry>, PartnersError> {
        let kind = EntryKind::from(fact);
        let mut attempt = 1;
        loop {
            if self
                .inner
                .store
                .partner_source_recorded(tenant, source)
                .await?
            {
                self.replayed();
                return Ok(None);
            }
            let mut batch = Batch::default();
            self.load_into(&mut batch, tenant, partner).await?;
            batch.append(partner, on, source, kind.clone())?;
            match self.write(tenant, source, batch, None, &[]).await {
                Err(e) if retry_stale(&e, attempt) => attempt = attempt.saturating_add(1),
                done => {
                    return Ok(done?
                        .and_then(|entries| entries.into_iter().next())
                        .map(|(_, e)| e));
                }
            }
        }
    }

    /// The payout run of `as_of`: every partner paid out in its status on that day (active,
    /// or terminated and still owed) gets an instruction for what is payable, recorded as a
    /// payout entry in its ledger and published as `partners.payout_instructed`; the run is
    /// stored. Running the same day again returns the stored run and writes nothing. Money is
    /// never moved here: the application pays the instructions.
    ///
    /// # Errors
    ///
    /// A partner's unknown plan or ledger that cannot be rebuilt; storage failures. Nothing is
    /// written on error.
    #[tracing::instrument(name = "dotmac.partners.run_payouts", level = "info", skip_all, fields(tenant = %tenant, instructions = tracing::field::Empty))]
    pub async fn run_payouts(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
    ) -> Result<PayoutRun, PartnersError> {
        let id = PayoutRunId::for_date(tenant, as_of);
        let mut attempt = 1;
        loop {
            if let Some(run) = self.inner.store.payout_run(tenant, id).await? {
                return Ok(run);
            }
            match self.try_payouts(tenant, id, as_of).await {
                Err(e) if retry_stale(&e, attempt) => attempt = attempt.saturating_add(1),
                done => {
                    let run = done?;
                    tracing::Span::current().record("instructions", run.instructions.len());
                    metrics::counter!("dotmac_partners_payouts_total")
                        .increment(run.instructions.len() as u64);
                    return Ok(run);
                }
            }
        }
    }

    async fn try_payouts(
        &self,
        tenant: TenantId,
        id: PayoutRunId,
        as_of: NaiveDate,
    ) -> Result<PayoutRun, PartnersError> {
        let source = SourceId::from_uuid(id.as_uuid());
        let mut plans: BTreeMap<crate::ids::CommissionPlanId, CommissionPlan> = BTreeMap::new();
        let mut batch = Batch::default();
        let mut instructions = Vec::new();
        let mut skipped = Vec::new();
        for account in self.inner.store.partners(tenant).await? {
            let partner = account.id();
            let status = account.status_on(as_of);
            if !status.is_paid_out() {
                skipped.push((partner, PayoutSkip::Status { status }));
                continue;
            }
            let plan = match plans.get(&account.plan()) {
                Some(plan) => plan.clone(),
                None => {
                    let plan = self.plan_of(tenant, &account).await?;
                    plans.insert(plan.id(), plan.clone());
                    plan
                }
            };
            let ledger = self.ledger_in(tenant, partner, &plan).await?;
            let summary = ledger.summary(as_of, &plan)?;
            if !summary.payable.is_positive() {
                skipped.push((
                    partner,
                    PayoutSkip::NothingPayable {
                        balance: summary.balance,
                    },
                ));
                continue;
            }
            let instruction = PayoutInstruction {
                payout: PayoutId::of(id, partner),
                run: id,
                partner,
                amount: summary.payable,
                as_of,
            };
            batch.add(ledger);
            batch.append(
                partner,
                as_of,
                source,
                EntryKind::PaidOut {
                    payout: instruction.payout,
                    run: Some(id),
                    amount: instruction.amount,
                },
            )?;
            instructions.push(instruction);
        }
        let run = PayoutRun {
            id,
            as_of,
            created_at: self.inner.clock.now(),
            instructions,
            skipped,
        };
        let events: Vec<OutboxEvent> = run
            .instructions
            .iter()
            .map(|i| {
                OutboxEvent::new(DomainEvent::new(
                    tenant,
                    &self.inner.clock,
                    PartnerEvent::PayoutInstructed(*i),
                ))
            })
            .collect();
        let written = self
            .write(tenant, source, batch, Some(run.clone()), &events)
            .await?;
        if written.is_none() {
            // Another process ran the same day first: its run is the one.
            return self
                .inner
                .store
                .payout_run(tenant, id)
                .await?
                .ok_or(PartnersError::Stale {
                    what: "payout run",
                    id: id.to_string(),
                });
        }
        Ok(run)
    }
}
