//! `BillingService`: store + pure domain + clock, returning domain events.

use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use dotmac_core::outbox::{Aggregate, OutboxEvent, OutboxPayload};
use dotmac_core::{
    Clock, CreditNoteId, CustomerId, DomainEvent, EventId, EventPayload, IdDigest, InvoiceId,
    InvoiceNumberFormat, Money, PlanId, RoundingMode, SubscriptionId, TenantId,
};
use serde::{Deserialize, Serialize};

use crate::FastMap;
use crate::billrun::PlanLookup;
use crate::billrun::{
    CancelTiming, ChangeOutcome, ChangeTiming, ProrationBehavior, SubscriptionChange, bill_due,
    cancel, change,
};
use crate::catalog::{Plan, Product};
use crate::error::BillingError;
use crate::idempotency::{
    IdempotencyKey, IdempotentRequest, IdempotentResult, KeyedRequest, KeyedWrite,
};
use crate::invoice::{
    CreditNote, CreditRequest, DocumentNumber, DocumentSettings, Invoice, InvoiceStatus,
    PendingCharge, credit_note, invoice_pending_charges,
};
use crate::settlement::{AdjustmentId, BalanceUpdate, CreditSettlement};
use crate::store::{BillingCommit, BillingStore, CommitResult, CustomerAccount, IssuedInvoice};
use crate::subscription::{NewSubscription, Subscription, SubscriptionStatus};
use crate::suspension::{SuspensionBilling, restore, suspend};
use crate::tax::TaxRate;

/// How many times an invoice update that raced another writer is re-read and retried.
const INVOICE_ATTEMPTS: usize = 4;

/// How many times a customer's suspension or restore that raced another writer is retried.
const SUSPENSION_ATTEMPTS: usize = 4;

/// A tenant's billing settings (passed in by the application, for example from
/// `dotmac-tenancy`). Start from [`BillingSettings::default`] and change what differs:
///
/// ```
/// use dotmac_billing::BillingSettings;
/// let settings = BillingSettings::default()
///     .with_zone(chrono_tz::Europe::Lisbon)
///     .with_payment_terms_days(30);
/// assert_eq!(settings.payment_terms_days, 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BillingSettings {
    /// The rounding mode of every line (the one rounding point).
    pub rounding: RoundingMode,
    /// Tax rates applied to every line, in order.
    pub taxes: Vec<TaxRate>,
    /// Default days from issue to due date.
    pub payment_terms_days: u32,
    /// Subscriptions processed per store page in a bill run.
    pub chunk_size: usize,
    /// The tenant's zone: documents made now (pending-charge invoices, credit notes) are dated
    /// with today's local date there, never the UTC date.
    #[serde(default = "utc")]
    pub zone: Tz,
    /// What is billed for a suspended subscription (see [`SuspensionBilling`]).
    #[serde(default)]
    pub suspension_billing: SuspensionBilling,
    /// How invoice numbers are written and sequenced (prefix, padding, yearly reset): every
    /// invoice issued carries it, and the store numbers it in its sequence
    /// ([`Invoice::number_series`]).
    #[serde(default)]
    pub number_format: InvoiceNumberFormat,
    /// How credit-note numbers are written and sequenced, apart from invoices' (a `CN-`
    /// prefix, say, reset yearly): every note issued carries it, and the store numbers it in
    /// its own sequence ([`CreditNote::number_series`]).
    #[serde(default)]
    pub credit_note_number_format: InvoiceNumberFormat,
}

fn utc() -> Tz {
    Tz::UTC
}

impl Default for BillingSettings {
    fn default() -> Self {
        BillingSettings {
            rounding: RoundingMode::HalfUp,
            taxes: Vec::new(),
            payment_terms_days: 14,
            chunk_size: 1000,
            zone: Tz::UTC,
            suspension_billing: SuspensionBilling::KeepBilling,
            number_format: InvoiceNumberFormat::default(),
            credit_note_number_format: InvoiceNumberFormat::default(),
        }
    }
}

impl BillingSettings {
    /// With `rounding` as the one rounding mode of every line.
    pub fn with_rounding(mut self, rounding: RoundingMode) -> Self {
        self.rounding = rounding;
        self
    }

    /// With `taxes` applied to every line, in order.
    pub fn with_taxes(mut self, taxes: Vec<TaxRate>) -> Self {
        self.taxes = taxes;
        self
    }

    /// With `days` from issue to due date, unless an account says otherwise.
    pub fn with_payment_terms_days(mut self, days: u32) -> Self {
        self.payment_terms_days = days;
        self
    }

    /// With `size` subscriptions per store page in a bill run (at least one).
    pub fn with_chunk_size(mut self, size: usize) -> Self {
        self.chunk_size = size.max(1);
        self
    }

    /// With `zone` as the tenant's zone, whose local dates documents made now carry.
    pub fn with_zone(mut self, zone: Tz) -> Self {
        self.zone = zone;
        self
    }

    /// With `policy` for what is billed while a subscription is suspended.
    pub fn with_suspension_billing(mut self, policy: SuspensionBilling) -> Self {
        self.suspension_billing = policy;
        self
    }

    /// With `format` for invoice numbers (the tenant's setting).
    pub fn with_number_format(mut self, format: InvoiceNumberFormat) -> Self {
        self.number_format = format;
        self
    }

    /// With `format` for credit-note numbers (the tenant's setting; a sequence of its own).
    pub fn with_credit_note_number_format(mut self, format: InvoiceNumberFormat) -> Self {
        self.credit_note_number_format = format;
        self
    }

    /// The document settings for one customer.
    pub fn for_account(&self, account: Option<&CustomerAccount>) -> DocumentSettings {
        DocumentSettings {
            rounding: self.rounding,
            taxes: self.taxes.clone(),
            exemption: account.map(|a| a.exemption.clone()).unwrap_or_default(),
            payment_terms_days: account
                .and_then(|a| a.payment_terms_days)
                .unwrap_or(self.payment_terms_days),
            number_format: self.number_format.clone(),
        }
    }
}

/// What happened in billing. Event names are stable (`billing.invoice_issued`, …), and so are
/// the payloads (`docs/order-to-cash.md`). Every service call that changes state writes its
/// events to the store's outbox in the same store step; the aggregate of a plan's event is the
/// plan, of every other event the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum BillingEvent {
    /// A plan was added or got a new price version.
    PlanSaved {
        /// The plan.
        plan: PlanId,
        /// Its newest version.
        version: u32,
    },
    /// A subscription was created.
    SubscriptionCreated {
        /// The subscription.
        subscription: SubscriptionId,
        /// Its customer.
        customer: CustomerId,
        /// Its plan.
        plan: PlanId,
    },
    /// A subscription's plan, quantity, pause state or end date changed.
    SubscriptionChanged {
        /// The subscription.
        subscription: SubscriptionId,
        /// Its customer.
        customer: CustomerId,
        /// Its status after the change.
        status: SubscriptionStatus,
        /// The date the change takes effect.
        effective: NaiveDate,
    },
    /// A subscription's status changed (trial ended, past due, cancelled, ended, …).
    SubscriptionStatusChanged {
        /// The subscription.
        subscription: SubscriptionId,
        /// Its customer.
        customer: CustomerId,
        /// The status before.
        from: SubscriptionStatus,
        /// The status after.
        to: SubscriptionStatus,
    },
    /// A subscription was suspended (for non-payment), from `on`.
    SubscriptionSuspended {
        /// The subscription.
        subscription: SubscriptionId,
        /// Its customer.
        customer: CustomerId,
        /// The first day of the suspension.
        on: NaiveDate,
    },
    /// A suspended subscription was restored on `on`.
    SubscriptionRestored {
        /// The subscription.
        subscription: SubscriptionId,
        /// Its customer.
        customer: CustomerId,
        /// The restore date.
        on: NaiveDate,
    },
    /// An invoice was issued (numbered, open).
    InvoiceIssued {
        /// The invoice.
        invoice: InvoiceId,
        /// Its number.
        number: DocumentNumber,
        /// Its customer.
        customer: CustomerId,
        /// Its total (negative for a credit owed to the customer).
        total: Money,
        /// Its issue date.
        issued: NaiveDate,
        /// Its due date.
        due_date: NaiveDate,
    },
    /// An invoice changed state (partially paid, paid, reopened, void, uncollectible).
    InvoiceStatusChanged {
        /// The invoice.
        invoice: InvoiceId,
        /// Its customer.
        customer: CustomerId,
        /// The state before.
        from: InvoiceStatus,
        /// The state after.
        to: InvoiceStatus,
        /// The date of the change.
        on: NaiveDate,
    },
    /// A credit note was issued.
    CreditNoteIssued {
        /// The note.
        credit_note: CreditNoteId,
        /// The invoice it credits.
        invoice: InvoiceId,
        /// The customer credited.
        customer: CustomerId,
        /// Its total (above zero).
        amount: Money,
        /// Its date.
        issued: NaiveDate,
        /// What happens to the part the invoice no longer owes.
        settlement: CreditSettlement,
        /// Its number, from the tenant's credit-note sequence, set by the store that numbered
        /// it in the same step (events stored before the field existed read `None`). Write it
        /// with the note's format: [`CreditNote::number_text`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<DocumentNumber>,
    },
    /// A bill run skipped a customer because billing one of its subscriptions failed with a
    /// domain error (see [`BillingFailure`]); nothing of that customer was written, and a run
    /// after the data is fixed bills it.
    BillRunItemFailed {
        /// The customer skipped.
        customer: CustomerId,
        /// The subscription whose billing failed.
        subscription: Option<SubscriptionId>,
        /// The error's kind ([`BillingError::kind`], e.g. `core.overflow`).
        error_kind: String,
        /// The error's message (ids and amounts, no personal data).
        error: String,
    },
}

impl EventPayload for BillingEvent {
    fn event_type(&self) -> &'static str {
        match self {
            BillingEvent::PlanSaved { .. } => "billing.plan_saved",
            BillingEvent::SubscriptionCreated { .. } => "billing.subscription_created",
            BillingEvent::SubscriptionChanged { .. } => "billing.subscription_changed",
            BillingEvent::SubscriptionStatusChanged { .. } => "billing.subscription_status_changed",
            BillingEvent::SubscriptionSuspended { .. } => "billing.subscription_suspended",
            BillingEvent::SubscriptionRestored { .. } => "billing.subscription_restored",
            BillingEvent::InvoiceIssued { .. } => "billing.invoice_issued",
            BillingEvent::InvoiceStatusChanged { .. } => "billing.invoice_status_changed",
            BillingEvent::CreditNoteIssued { .. } => "billing.credit_note_issued",
            BillingEvent::BillRunItemFailed { .. } => "billing.bill_run_item_failed",
        }
    }
}

impl OutboxPayload for BillingEvent {
    fn aggregate(&self) -> Aggregate {
        match self {
            BillingEvent::PlanSaved { plan, .. } => Aggregate::new("plan", plan.as_uuid()),
            BillingEvent::SubscriptionCreated { customer, .. }
            | BillingEvent::SubscriptionChanged { customer, .. }
            | BillingEvent::SubscriptionStatusChanged { customer, .. }
            | BillingEvent::SubscriptionSuspended { customer, .. }
            | BillingEvent::SubscriptionRestored { customer, .. }
            | BillingEvent::InvoiceIssued { customer, .. }
            | BillingEvent::InvoiceStatusChanged { customer, .. }
            | BillingEvent::CreditNoteIssued { customer, .. }
            | BillingEvent::BillRunItemFailed { customer, .. } => Aggregate::customer(*customer),
        }
    }
}

/// Events returned by a service call (the ones it wrote to the outbox).
pub type Events = Vec<DomainEvent<BillingEvent>>;

/// The outbox copies of `events`.
fn outbox(events: &[DomainEvent<BillingEvent>]) -> Vec<OutboxEvent> {
    events.iter().cloned().map(OutboxEvent::new).collect()
}

/// A customer (or one of its subscriptions) that a run (bill run, usage rating, collections)
/// skipped because of a domain error in its own data: an amount that overflows, a currency
/// mismatch, a missing plan or meter, … Nothing of that customer was written by the run; the
/// others were processed. Store errors are never isolated like this: they fail the run.
#[derive(Debug, Clone, PartialEq)]
pub struct BillingFailure {
    /// The customer skipped.
    pub customer: CustomerId,
    /// The subscription whose processing failed, when there is one.
    pub subscription: Option<SubscriptionId>,
    /// What went wrong.
    pub error: BillingError,
}

impl BillingFailure {
    /// The `billing.bill_run_item_failed` event of this failure.
    pub fn event(&self, tenant: TenantId, clock: &dyn Clock) -> DomainEvent<BillingEvent> {
        DomainEvent::new(
            tenant,
            clock,
            BillingEvent::BillRunItemFailed {
                customer: self.customer,
                subscription: self.subscription,
                error_kind: self.error.kind().to_owned(),
                error: self.error.to_string(),
            },
        )
    }
}

/// What a bill run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BillRunSummary {
    /// Subscriptions looked at.
    pub subscriptions: usize,
    /// Invoices issued.
    pub invoices: usize,
    /// Documents skipped because they had already been issued.
    pub duplicates: usize,
    /// Subscriptions skipped because someone else updated them, or invoiced one of their
    /// pending charges, during the run (the next run picks them up).
    pub conflicts: usize,
    /// Customers skipped because billing one of their subscriptions failed with a domain
    /// error, each with that subscription and the error: nothing of theirs was written, and
    /// a run after the data is fixed bills them. Each also has a
    /// `billing.bill_run_item_failed` event in [`BillRunSummary::events`].
    pub failures: Vec<BillingFailure>,
    /// The last subscription processed: the cursor for the next chunk.
    pub cursor: Option<SubscriptionId>,
    /// What happened.
    pub events: Events,
}

impl BillRunSummary {
    /// Adds `failures` (from [`bill_chunk`]) to the summary, with one
    /// `billing.bill_run_item_failed` event each.
    pub fn record_failures(
        &mut self,
        tenant: TenantId,
        clock: &dyn Clock,
        failures: Vec<BillingFailure>,
    ) {
        self.events
            .extend(failures.iter().map(|f| f.event(tenant, clock)));
        self.failures.extend(failures);
    }
}

/// A manual charge (or credit) for a customer's next invoice, for
/// [`BillingService::add_charge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The charge.
    pub charge: PendingCharge,
    /// A retry with the same key and the same charge gets the first answer back; the same key
    /// with another charge is [`CoreError::IdempotencyKeyReused`](dotmac_core::CoreError::IdempotencyKeyReused).
    pub idempotency_key: Option<IdempotencyKey>,
}

impl ChargeRequest {
    /// A request for `charge`, without an idempotency key.
    pub fn new(charge: PendingCharge) -> Self {
        ChargeRequest {
            charge,
            idempotency_key: None,
        }
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// A credit note to issue, for [`BillingService::issue_credit_note`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteRequest {
    /// The invoice credited.
    pub invoice: InvoiceId,
    /// What to credit on it.
    pub credit: CreditRequest,
    /// Why (printed on the note).
    pub reason: Option<String>,
    /// What happens to the part of the note the invoice no longer owes (it was paid): kept as
    /// customer credit (the default) or refunded.
    #[serde(default)]
    pub settlement: CreditSettlement,
    /// A retry with the same key and the same request gets the first note back; the same key
    /// with another request is [`CoreError::IdempotencyKeyReused`](dotmac_core::CoreError::IdempotencyKeyReused).
    pub idempotency_key: Option<IdempotencyKey>,
}

impl CreditNoteRequest {
    /// A request to credit `credit` on `invoice`, without a reason or a key, leaving any
    /// excess as customer credit.
    pub fn new(invoice: InvoiceId, credit: CreditRequest) -> Self {
        CreditNoteRequest {
            invoice,
            credit,
            reason: None,
            settlement: CreditSettlement::Credit,
            idempotency_key: None,
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets what happens to the part the invoice no longer owes.
    pub fn settlement(mut self, settlement: CreditSettlement) -> Self {
        self.settlement = settlement;
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// Billing orchestration: reads from the store, runs the pure domain functions, writes the
/// result atomically and returns domain events. Time comes only from the clock.
///
/// A cheap handle: the store, clock and settings sit behind one `Arc`, so cloning the service
/// (to hand it to another task, or to [`UsageBillingService`](crate::usage_billing::UsageBillingService))
/// never clones the store or the clock, and neither needs to be `Clone`.
pub struct BillingService<S, C> {
    inner: Arc<BillingInner<S, C>>,
}

struct BillingInner<S, C> {
    store: S,
    clock: C,
    settings: BillingSettings,
}

impl<S, C> Clone for BillingService<S, C> {
    fn clone(&self) -> Self {
        BillingService {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, C> std::fmt::Debug for BillingService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingService")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl<S: BillingStore, C: Clock> BillingService<S, C> {
    /// A service over `store` and `clock` with `settings`.
    pub fn new(store: S, clock: C, settings: BillingSettings) -> Self {
        BillingService {
            inner: Arc::new(BillingInner {
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

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }

    /// The settings.
    pub fn settings(&self) -> &BillingSettings {
        &self.inner.settings
    }

    /// Today in the tenant's zone: the date of documents made now.
    fn today(&self) -> NaiveDate {
        self.inner.clock.today_in(self.inner.settings.zone)
    }

    fn event(&self, tenant: TenantId, payload: BillingEvent) -> DomainEvent<BillingEvent> {
        DomainEvent::new(tenant, &self.inner.clock, payload)
    }

    /// Adds a product.
    ///
    /// # Errors
    ///
    /// Store errors.
    #[tracing::instrument(name = "dotmac.billing.add_product", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn add_product(
        &self,
        tenant: TenantId,
        product: Product,
    ) -> Result<(), BillingError> {
        self.inner.store.put_product(tenant, product).await
    }

    /// Adds a plan or a new price version of it.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownProduct`], [`BillingError::InvalidPlan`].
    #[tracing::instrument(name = "dotmac.billing.save_plan", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn save_plan(&self, tenant: TenantId, plan: Plan) -> Result<Events, BillingError> {
        let events = vec![self.event(
            tenant,
            BillingEvent::PlanSaved {
                plan: plan.id,
                version: plan.current_version().version,
            },
        )];
        self.inner
            .store
            .put_plan(tenant, plan, outbox(&events))
            .await?;
        Ok(events)
    }

    /// Opens or updates a customer's billing account.
    ///
    /// # Errors
    ///
    /// Store errors.
    #[tracing::instrument(name = "dotmac.billing.save_account", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn save_account(
        &self,
        tenant: TenantId,
        account: CustomerAccount,
    ) -> Result<(), BillingError> {
        self.inner.store.put_account(tenant, account).await
    }

    /// Creates a subscription. Nothing is billed until the next bill run.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownPlan`], [`BillingError::UnknownAccount`],
    /// [`BillingError::StartBeyondHorizon`] for a start more than
    /// [`CHANGE_HORIZON_YEARS`](crate::CHANGE_HORIZON_YEARS) years from today, and the
    /// validation errors of [`NewSubscription::create`]. On error nothing is stored.
    #[tracing::instrument(name = "dotmac.billing.subscribe", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn subscribe(
        &self,
        tenant: TenantId,
        request: NewSubscription,
    ) -> Result<(Subscription, Events), BillingError> {
        let plan = self
            .inner
            .store
            .plan(tenant, request.plan)
            .await?
            .ok_or(BillingError::UnknownPlan(request.plan))?;
        let account = self
            .inner
            .store
            .account(tenant, request.customer)
            .await?
            .ok_or(BillingError::UnknownAccount(request.customer))?;
        check_start(&request, self.today())?;
        let sub = request.create(&plan, account.currency)?;
        let events = vec![self.event(
            tenant,
            BillingEvent::SubscriptionCreated {
                subscription: sub.id,
                customer: sub.customer,
                plan: plan.id,
            },
        )];
        self.inner
            .store
            .insert_subscription(tenant, sub.clone(), outbox(&events))
            .await?;
        Ok((sub, events))
    }

    async fn load(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<(Subscription, FastMap<PlanId, Plan>, DocumentSettings), BillingError> {
        let sub = self
            .inner
            .store
            .subscription(tenant, id)
            .await?
            .ok_or(BillingError::UnknownSubscription(id))?;
        let plans = self.plan_map(tenant).await?;
        let account = self.inner.store.account(tenant, sub.customer).await?;
        let settings = self.inner.settings.for_account(account.as_ref());
        Ok((sub, plans, settings))
    }

    async fn plan_map(&self, tenant: TenantId) -> Result<FastMap<PlanId, Plan>, BillingError> {
        Ok(self
            .inner
            .store
            .plans(tenant)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect())
    }

    async fn commit_change(
        &self,
        tenant: TenantId,
        before: &Subscription,
        outcome: ChangeOutcome,
        effective: NaiveDate,
    ) -> Result<(ChangeOutcome, Events), BillingError> {
        let mut events = vec![self.event(
            tenant,
            BillingEvent::SubscriptionChanged {
                subscription: before.id,
                customer: before.customer,
                status: outcome.subscription.status,
                effective,
            },
        )];
        if before.status != outcome.subscription.status {
            events.push(self.event(
                tenant,
                BillingEvent::SubscriptionStatusChanged {
                    subscription: before.id,
                    customer: before.customer,
                    from: before.status,
                    to: outcome.subscription.status,
                },
            ));
        }
        let at = self.inner.clock.now();
        let commit = BillingCommit {
            subscription: Some(outcome.subscription.clone()),
            invoices: outcome.invoice.iter().cloned().collect(),
            consumed_pending: Vec::new(),
            new_pending: outcome.pending.clone(),
            events: outbox(&events),
            issued_at: Some(at),
        };
        let result = self.inner.store.commit(tenant, commit).await?;
        issued_events(tenant, at, &result.issued, &mut events);
        count_issued(result.issued.len(), IssuedBy::SubscriptionChange);
        let mut outcome = outcome;
        // The store has just bumped the stored revision, so it has a successor.
        outcome.subscription.revision = outcome.subscription.revision.saturating_add(1);
        if let (Some(invoice), Some(issued)) = (outcome.invoice.as_mut(), result.issued.first()) {
            invoice.number = Some(issued.number);
            invoice.status = InvoiceStatus::Open;
        }
        Ok((outcome, events))
    }

    /// Changes a subscription's plan, quantity or pause state on `on`.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownSubscription`], [`BillingError::DateBeyondHorizon`] for a date
    /// beyond [`Subscription::change_horizon`], and the errors of [`change`]; on error nothing
    /// changes.
    #[tracing::instrument(name = "dotmac.billing.change_subscription", level = "info", skip_all, fields(tenant = %tenant, invoices = tracing::field::Empty))]
    pub async fn change_subscription(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        what: SubscriptionChange,
        on: NaiveDate,
        timing: ChangeTiming,
        behavior: ProrationBehavior,
    ) -> Result<(ChangeOutcome, Events), BillingError> {
        let (sub, plans, settings) = self.load(tenant, id).await?;
        sub.check_within_horizon(on)?;
        let outcome = change(&sub, &plans, &what, on, timing, behavior, &settings)?;
        self.commit_change(tenant, &sub, outcome, on).await
    }

    /// Cancels a subscription on `on` (immediately, or at the end of that period). A
    /// cancellation that changes nothing (at period end, when the subscription already ends
    /// then) returns the subscription as it is, writes nothing and raises no event.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownSubscription`], [`BillingError::DateBeyondHorizon`] for a date
    /// beyond [`Subscription::change_horizon`], and the errors of [`cancel`]; on error nothing
    /// changes.
    #[tracing::instrument(name = "dotmac.billing.cancel_subscription", level = "info", skip_all, fields(tenant = %tenant, invoices = tracing::field::Empty))]
    pub async fn cancel_subscription(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        on: NaiveDate,
        timing: CancelTiming,
        behavior: ProrationBehavior,
    ) -> Result<(ChangeOutcome, Events), BillingError> {
        let (sub, plans, settings) = self.load(tenant, id).await?;
        sub.check_within_horizon(on)?;
        let outcome = cancel(&sub, &plans, on, timing, behavior, &settings)?;
        // Cancelling again what already ends on the same day (at period end, twice) changes
        // nothing but the change counter: nothing is written and no event is raised.
        let unchanged = Subscription {
            change_seq: sub.change_seq,
            ..outcome.subscription.clone()
        };
        if unchanged == sub && outcome.invoice.is_none() && outcome.pending.is_empty() {
            return Ok((
                ChangeOutcome {
                    subscription: sub,
                    invoice: None,
                    pending: Vec::new(),
                },
                Vec::new(),
            ));
        }
        self.commit_change(tenant, &sub, outcome, on).await
    }

    /// Moves a subscription to `to` (for collections: `past_due` and back to `active`).
    /// Suspensions go through [`BillingService::suspend_customer`] and
    /// [`BillingService::restore_customer`], which apply the tenant's suspension-billing
    /// policy.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownSubscription`], [`BillingError::IllegalTransition`] (also for a
    /// move into or out of `suspended`). Nothing changes then.
    #[tracing::instrument(name = "dotmac.billing.set_subscription_status", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn set_subscription_status(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        to: SubscriptionStatus,
    ) -> Result<Events, BillingError> {
        let mut sub = self
            .inner
            .store
            .subscription(tenant, id)
            .await?
            .ok_or(BillingError::UnknownSubscription(id))?;
        let from = sub.status;
        if from == SubscriptionStatus::Suspended || to == SubscriptionStatus::Suspended {
            return Err(BillingError::IllegalTransition { from, to });
        }
        sub.status = from.transition(to)?;
        let events = vec![self.event(
            tenant,
            BillingEvent::SubscriptionStatusChanged {
                subscription: id,
                customer: sub.customer,
                from,
                to,
            },
        )];
        self.inner
            .store
            .commit(
                tenant,
                BillingCommit {
                    subscription: Some(sub),
                    events: outbox(&events),
                    ..BillingCommit::default()
                },
            )
            .await?;
        Ok(events)
    }

    /// The documents a bill run on `as_of` would issue for one subscription, without writing
    /// anything. They are identical to the issued ones except for status and number.
    ///
    /// # Errors
    ///
    /// As [`bill_due`].
    #[tracing::instrument(name = "dotmac.billing.preview", level = "debug", skip_all, fields(tenant = %tenant, invoices = tracing::field::Empty))]
    pub async fn preview(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        as_of: NaiveDate,
    ) -> Result<Vec<Invoice>, BillingError> {
        let (sub, plans, settings) = self.load(tenant, id).await?;
        let pending = self
            .inner
            .store
            .pending_charges(tenant, sub.customer)
            .await?;
        let invoices = bill_due(&sub, &plans, &pending, as_of, &settings)?.invoices;
        tracing::Span::current().record("invoices", invoices.len());
        Ok(invoices)
    }

    /// Bills every subscription of the tenant up to `as_of`, chunk by chunk. Idempotent: a
    /// second run on the same date issues nothing.
    ///
    /// One customer's bad data never blocks the others: a domain error while billing one of
    /// a customer's subscriptions (an amount that overflows, a currency mismatch, a missing
    /// plan, …) skips that customer for the whole run. Nothing of theirs is written (no
    /// invoice, no subscription state, no consumed charge), the failure is listed in
    /// [`BillRunSummary::failures`] with a `billing.bill_run_item_failed` event, and every
    /// other customer is billed; a run after the data is fixed bills the skipped customer.
    /// (Chunks here are pages of subscriptions in id order, so a customer whose
    /// subscriptions span two chunks keeps what an earlier chunk committed; the scale-out
    /// planner of `dotmac-sqlx` never splits a customer.)
    ///
    /// # Errors
    ///
    /// Store errors (and the per-commit errors of [`record_chunk`]): they fail the run; the
    /// chunks committed before it stay committed, and a re-run continues where it stopped.
    pub async fn run_bill(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
    ) -> Result<BillRunSummary, BillingError> {
        self.run_bill_skipping(tenant, as_of, &[]).await
    }

    /// [`BillingService::run_bill`] that leaves the subscriptions of `skip` alone (customers
    /// whose usage could not be rated, for example): the `dotmac.billing.run_bill` span and
    /// the bill-run metrics, counted once per run from its summary.
    #[tracing::instrument(name = "dotmac.billing.run_bill", level = "info", skip_all, fields(tenant = %tenant, subscriptions = tracing::field::Empty, invoices = tracing::field::Empty, failures = tracing::field::Empty))]
    pub(crate) async fn run_bill_skipping(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
        skip: &[CustomerId],
    ) -> Result<BillRunSummary, BillingError> {
        // Wall time for the histogram only: never business time, which is the clock's.
        let started = std::time::Instant::now();
        let result = self.bill_pages(tenant, as_of, skip).await;
        metrics::histogram!("dotmac_billing_bill_run_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(summary) => {
                metrics::counter!("dotmac_billing_bill_runs_total", "outcome" => "completed")
                    .increment(1);
                observe_bill_run(summary);
            }
            Err(_) => {
                metrics::counter!("dotmac_billing_bill_runs_total", "outcome" => "failed")
                    .increment(1);
            }
        }
        result
    }

    /// The chunks of a bill run, one after the other (see [`BillingService::run_bill`]).
    async fn bill_pages(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
        skip: &[CustomerId],
    ) -> Result<BillRunSummary, BillingError> {
        let plans = self.plan_map(tenant).await?;
        let mut total = BillRunSummary::default();
        let mut skipped: Vec<CustomerId> = skip.to_vec();
        loop {
            let failed_before = total.failures.len();
            // Each page records straight into the total: a summary per page would build
            // every event twice (once in the page's list, once copied into the total's).
            let read = self
                .bill_page(tenant, as_of, &plans, total.cursor, &skipped, &mut total)
                .await?;
            // A customer that failed in one chunk is skipped in the later ones too.
            skipped.extend(
                total
                    .failures
                    .get(failed_before..)
                    .unwrap_or_default()
                    .iter()
                    .map(|f| f.customer),
            );
            if read == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// Bills one chunk of subscriptions after `cursor` (see [`BillingSettings::chunk_size`]):
    /// the unit of work a scheduler can spread over workers or resume after a crash. A
    /// customer whose billing fails with a domain error is skipped and reported, as in
    /// [`BillingService::run_bill`].
    ///
    /// # Errors
    ///
    /// Store errors, and the per-commit errors of [`record_chunk`].
    #[tracing::instrument(name = "dotmac.billing.run_chunk", level = "info", skip_all, fields(tenant = %tenant, subscriptions = tracing::field::Empty, invoices = tracing::field::Empty, failures = tracing::field::Empty))]
    pub async fn run_chunk(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
        plans: &(impl PlanLookup + ?Sized),
        cursor: Option<SubscriptionId>,
    ) -> Result<BillRunSummary, BillingError> {
        let mut summary = BillRunSummary::default();
        self.bill_page(tenant, as_of, plans, cursor, &[], &mut summary)
            .await?;
        observe_bill_run(&summary);
        Ok(summary)
    }

    /// [`BillingService::run_chunk`], leaving out the subscriptions of the customers in
    /// `skip`, adding what it did to `summary` (whose cursor moves to the page's last
    /// subscription). Returns the number of subscriptions read: 0 at the end.
    async fn bill_page(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
        plans: &(impl PlanLookup + ?Sized),
        cursor: Option<SubscriptionId>,
        skip: &[CustomerId],
        summary: &mut BillRunSummary,
    ) -> Result<usize, BillingError> {
        let mut page = self
            .inner
            .store
            .subscriptions_page(tenant, cursor, self.inner.settings.chunk_size.max(1))
            .await?;
        let read = page.len();
        // Counts of records held in memory: cannot reach usize::MAX.
        summary.subscriptions = summary.subscriptions.saturating_add(read);
        summary.cursor = page.last().map(|s| s.id).or(cursor);
        if !skip.is_empty() {
            page.retain(|s| !skip.contains(&s.customer));
        }
        let customers = chunk_customers(&page);
        let accounts = self.inner.store.accounts(tenant, &customers).await?;
        let pending = self
            .inner
            .store
            .pending_charges_for(tenant, &customers)
            .await?;
        let BilledChunk {
            mut items,
            failures,
        } = bill_chunk(
            &page,
            plans,
            &accounts,
            &pending,
            as_of,
            &self.inner.settings,
        );
        drop(page);
        // The commits move to the store; `record_chunk` needs only the rest of each item.
        // Each carries its events: the store writes them with it (the issued invoices' too).
        let at = self.inner.clock.now();
        let commits = chunk_commits(tenant, at, &mut items);
        let results = self.inner.store.commit_batch(tenant, commits).await?;
        record_chunk_at(tenant, at, &items, results, summary)?;
        if !failures.is_empty() {
            let events: Events = failures
                .iter()
                .map(|f| f.event(tenant, &self.inner.clock))
                .collect();
            self.inner
                .store
                .commit(
                    tenant,
                    BillingCommit {
                        events: outbox(&events),
                        ..BillingCommit::default()
                    },
                )
                .await?;
            summary.events.extend(events);
            summary.failures.extend(failures);
        }
        Ok(read)
    }

    /// Adds a one-off charge for a customer's next invoice (usage, fees, adjustments).
    /// Returns `false` when the charge id was already added.
    ///
    /// A customer whose subscriptions have all ended gets no next invoice from a bill run, so
    /// their charges dated today or earlier are invoiced at once instead
    /// ([`BillingService::invoice_pending_now`]), also when the charge was already added (a
    /// retry after a crash between the two steps finishes the second). A customer with no
    /// subscription yet keeps the charge for their first invoice.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownAccount`], [`BillingError::CurrencyNotUsed`] for a charge in a
    /// currency the customer does not use, the errors of [`PendingCharge::validate`]
    /// (negative quantity, credit without a reason), [`BillingError::UnknownSubscription`] and
    /// [`BillingError::SubscriptionOfAnotherCustomer`] for a subscription that is not the
    /// customer's. Nothing is stored on error.
    #[tracing::instrument(name = "dotmac.billing.add_pending_charge", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn add_pending_charge(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
    ) -> Result<bool, BillingError> {
        self.add_charge(tenant, ChargeRequest::new(charge)).await
    }

    /// Adds a one-off charge (or credit) for a customer's next invoice, as
    /// [`BillingService::add_pending_charge`], with an optional idempotency key: a retry with
    /// the same key and charge returns the first answer and writes nothing.
    ///
    /// # Errors
    ///
    /// As [`BillingService::add_pending_charge`], and
    /// [`CoreError::IdempotencyKeyReused`](dotmac_core::CoreError::IdempotencyKeyReused) for a key first used with another request.
    #[tracing::instrument(name = "dotmac.billing.add_charge", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn add_charge(
        &self,
        tenant: TenantId,
        request: ChargeRequest,
    ) -> Result<bool, BillingError> {
        let customer = request.charge.customer;
        let added = self.store_charge(tenant, request).await?;
        self.close_out_if_no_subscription_bills(tenant, customer)
            .await?;
        Ok(added)
    }

    /// Invoices `customer`'s pending charges now when they have subscriptions and all of
    /// them have ended (see [`BillingService::add_pending_charge`]).
    async fn close_out_if_no_subscription_bills(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<(), BillingError> {
        let subscriptions = self.inner.store.subscriptions_of(tenant, customer).await?;
        let all_ended = !subscriptions.is_empty()
            && subscriptions
                .iter()
                .all(|s| s.status == SubscriptionStatus::Ended);
        if all_ended {
            self.invoice_pending_now(tenant, customer).await?;
        }
        Ok(())
    }

    /// Stores a charge as [`BillingService::add_charge`] describes, without the close-out.
    async fn store_charge(
        &self,
        tenant: TenantId,
        request: ChargeRequest,
    ) -> Result<bool, BillingError> {
        let Some(key) = request.idempotency_key else {
            self.check_pending_charge(tenant, &request.charge).await?;
            return self
                .inner
                .store
                .add_pending_charge(tenant, request.charge, Vec::new())
                .await;
        };
        let keyed = KeyedRequest {
            key,
            request: IdempotentRequest::PendingCharge {
                charge: request.charge.clone(),
            },
            at: self.inner.clock.now(),
        };
        let written = match self
            .inner
            .store
            .idempotency_record(tenant, &keyed.key)
            .await?
        {
            Some(earlier) => KeyedWrite::Replayed(Box::new(earlier)),
            None => {
                self.check_pending_charge(tenant, &request.charge).await?;
                self.inner
                    .store
                    .add_pending_charge_keyed(tenant, request.charge, &keyed, Vec::new())
                    .await?
            }
        };
        match written {
            KeyedWrite::Written(added) => Ok(added),
            KeyedWrite::Replayed(earlier) => match earlier.replay(&keyed.request)? {
                IdempotentResult::PendingCharge { added } => Ok(added),
                _ => Err(crate::idempotency::mismatched()),
            },
        }
    }

    /// Everything [`BillingService::add_pending_charge`] refuses, checked before anything is
    /// written.
    async fn check_pending_charge(
        &self,
        tenant: TenantId,
        charge: &PendingCharge,
    ) -> Result<(), BillingError> {
        charge.validate()?;
        let account = self
            .inner
            .store
            .account(tenant, charge.customer)
            .await?
            .ok_or(BillingError::UnknownAccount(charge.customer))?;
        if charge.unit_price.currency() != account.currency {
            return Err(BillingError::CurrencyNotUsed {
                customer: charge.customer,
                currency: charge.unit_price.currency().code(),
                customer_currency: account.currency.code(),
            });
        }
        if let Some(id) = charge.subscription {
            let sub = self
                .inner
                .store
                .subscription(tenant, id)
                .await?
                .ok_or(BillingError::UnknownSubscription(id))?;
            if sub.customer != charge.customer {
                return Err(BillingError::SubscriptionOfAnotherCustomer {
                    subscription: id,
                    customer: charge.customer,
                    owner: sub.customer,
                });
            }
        }
        Ok(())
    }

    /// Invoices a customer's pending charges now, on their own (for a fee that cannot wait for
    /// the next bill). `None` when nothing is pending.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownAccount`]; [`BillingError::PendingChargeTaken`] when a bill run
    /// invoiced one of the charges since they were read (call again: the rest are still
    /// pending); store errors.
    #[tracing::instrument(name = "dotmac.billing.invoice_pending_now", level = "info", skip_all, fields(tenant = %tenant, invoices = tracing::field::Empty))]
    pub async fn invoice_pending_now(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<(Option<Invoice>, Events), BillingError> {
        let account = self
            .inner
            .store
            .account(tenant, customer)
            .await?
            .ok_or(BillingError::UnknownAccount(customer))?;
        let today = self.today();
        let pending: Vec<PendingCharge> = self
            .inner
            .store
            .pending_charges(tenant, customer)
            .await?
            .into_iter()
            .filter(|c| c.created_on <= today)
            .collect();
        if pending.is_empty() {
            return Ok((None, Vec::new()));
        }
        let settings = self.inner.settings.for_account(Some(&account));
        let invoice =
            invoice_pending_charges(customer, account.currency, today, &pending, &settings)?;
        let at = self.inner.clock.now();
        let result = self
            .inner
            .store
            .commit(
                tenant,
                BillingCommit {
                    subscription: None,
                    invoices: vec![invoice],
                    consumed_pending: pending.iter().map(|c| c.id).collect(),
                    new_pending: Vec::new(),
                    events: Vec::new(),
                    issued_at: Some(at),
                },
            )
            .await?;
        let mut events = Vec::new();
        issued_events(tenant, at, &result.issued, &mut events);
        count_issued(result.issued.len(), IssuedBy::OnDemand);
        let invoice = match result.issued.first() {
            Some(issued) => self.inner.store.invoice(tenant, issued.id).await?,
            None => None,
        };
        Ok((invoice, events))
    }

    /// Moves an invoice to `to` (paid, void, uncollectible, …, see [`InvoiceStatus`]) by hand,
    /// writing `billing.invoice_status_changed` with it. An invoice whose payments are tracked
    /// by collections follows the ledger instead ([`BillingService::apply_balance`]).
    ///
    /// # Errors
    ///
    /// [`BillingError::InvoiceNotFound`], [`BillingError::IllegalInvoiceTransition`],
    /// [`BillingError::VoidOfSettledInvoice`]. Nothing changes then.
    #[tracing::instrument(name = "dotmac.billing.set_invoice_status", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn set_invoice_status(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        to: InvoiceStatus,
    ) -> Result<(Invoice, Events), BillingError> {
        let today = self.today();
        let before = self
            .inner
            .store
            .invoice(tenant, id)
            .await?
            .ok_or(BillingError::InvoiceNotFound(id))?;
        if before.status == InvoiceStatus::Draft {
            // Issuing a draft numbers it: the store does that.
            let events = vec![self.event(
                tenant,
                BillingEvent::InvoiceStatusChanged {
                    invoice: id,
                    customer: before.customer,
                    from: before.status,
                    to,
                    on: today,
                },
            )];
            let after = self
                .inner
                .store
                .set_invoice_status(tenant, id, to, outbox(&events))
                .await?;
            return Ok((after, events));
        }
        self.update_invoice_with(tenant, id, |invoice| {
            let mut next = invoice.clone();
            next.transition(to)?;
            Ok(Some((next, vec![status_changed(invoice, to, today)])))
        })
        .await
    }

    /// Voids an issued invoice on `on` that has nothing settled on it (it is no longer owed;
    /// its number stays used), writing `billing.invoice_status_changed` (to `void`), which
    /// collections enters in the ledger. Voiding a void invoice changes nothing and writes no
    /// event.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvoiceNotFound`]; [`BillingError::IllegalInvoiceTransition`] for a
    /// paid or partly paid invoice, [`BillingError::VoidOfSettledInvoice`] for one with
    /// something settled on it (refund it first). Nothing changes then.
    #[tracing::instrument(name = "dotmac.billing.void_invoice", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn void_invoice(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        on: NaiveDate,
    ) -> Result<(Invoice, Events), BillingError> {
        self.move_invoice(tenant, id, InvoiceStatus::Void, on).await
    }

    /// Writes an open or partly paid invoice off on `on` (uncollectible: it may still be paid
    /// later), writing `billing.invoice_status_changed` (to `uncollectible`), which collections
    /// enters as a write-off. Writing off an uncollectible invoice changes nothing and writes
    /// no event.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvoiceNotFound`]; [`BillingError::IllegalInvoiceTransition`] for a
    /// paid or void invoice. Nothing changes then.
    #[tracing::instrument(name = "dotmac.billing.write_off_invoice", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn write_off_invoice(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        on: NaiveDate,
    ) -> Result<(Invoice, Events), BillingError> {
        self.move_invoice(tenant, id, InvoiceStatus::Uncollectible, on)
            .await
    }

    /// Moves an invoice to `to` on `on` unless it is there already.
    async fn move_invoice(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        to: InvoiceStatus,
        on: NaiveDate,
    ) -> Result<(Invoice, Events), BillingError> {
        self.update_invoice_with(tenant, id, |invoice| {
            if invoice.status == to {
                return Ok(None);
            }
            let mut next = invoice.clone();
            next.transition(to)?;
            Ok(Some((next, vec![status_changed(invoice, to, on)])))
        })
        .await
    }

    /// Records the invoice's balance as the payments ledger reports it
    /// (`collections.invoice_balance_changed`): its settled, credited and written-off amounts,
    /// and its status moved to `update.state` (open, partially paid, paid, void,
    /// uncollectible), writing `billing.invoice_status_changed` when the status moves. A report
    /// that changes nothing (a replay) writes nothing and no event.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvoiceNotFound`] and the errors of [`Invoice::with_balance`]
    /// ([`BillingError::WrongCurrency`], [`BillingError::InvalidBalance`],
    /// [`BillingError::IllegalInvoiceTransition`], [`BillingError::VoidOfSettledInvoice`]).
    /// Nothing changes then.
    #[tracing::instrument(name = "dotmac.billing.apply_balance", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn apply_balance(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        update: BalanceUpdate,
    ) -> Result<(Invoice, Events), BillingError> {
        let today = self.today();
        self.update_invoice_with(tenant, id, |invoice| {
            Ok(invoice.with_balance(&update)?.map(|next| {
                let events = if next.status == invoice.status {
                    Vec::new()
                } else {
                    vec![status_changed(invoice, next.status, today)]
                };
                (next, events)
            }))
        })
        .await
    }

    /// Shows `amount` of customer credit applied to the invoice on `on`
    /// (`collections.credit_applied`) as an adjustment line `line` (derive it from the event
    /// that reports the credit): recorded once, a replay with the same `line` changes nothing.
    /// The invoice's total and charges stay as issued; the ledger's balance report moves its
    /// status ([`BillingService::apply_balance`]).
    ///
    /// # Errors
    ///
    /// [`BillingError::InvoiceNotFound`] and the errors of [`Invoice::with_credit_applied`]
    /// ([`BillingError::WrongCurrency`], [`BillingError::NonPositiveAmount`],
    /// [`BillingError::InvoiceNotPayable`], [`BillingError::InvalidBalance`]). Nothing
    /// changes then.
    #[tracing::instrument(name = "dotmac.billing.apply_credit", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn apply_credit(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        amount: Money,
        on: NaiveDate,
        line: AdjustmentId,
    ) -> Result<(Invoice, Events), BillingError> {
        self.update_invoice_with(tenant, id, |invoice| {
            Ok(invoice
                .with_credit_applied(line, amount, on)?
                .map(|next| (next, Vec::new())))
        })
        .await
    }

    /// Reads an invoice, asks `change` for its new state and events (`None`: nothing to do)
    /// and writes both in one store step, re-reading and retrying when another writer changed
    /// the invoice in between.
    async fn update_invoice_with(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        change: impl Fn(&Invoice) -> Result<Option<(Invoice, Vec<BillingEvent>)>, BillingError>
        + Send
        + Sync,
    ) -> Result<(Invoice, Events), BillingError> {
        let mut attempt = 1;
        loop {
            let stored = self
                .inner
                .store
                .invoice(tenant, id)
                .await?
                .ok_or(BillingError::InvoiceNotFound(id))?;
            let Some((next, payloads)) = change(&stored)? else {
                return Ok((stored, Vec::new()));
            };
            let events: Events = payloads
                .into_iter()
                .map(|p| self.event(tenant, p))
                .collect();
            match self
                .inner
                .store
                .update_invoice(tenant, stored, next, outbox(&events))
                .await
            {
                Ok(invoice) => return Ok((invoice, events)),
                Err(BillingError::InvoiceChanged(_)) if attempt < INVOICE_ATTEMPTS => {
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Suspends every active or past-due subscription of `customer` from `on` (collections'
    /// `suspend_service`), under the tenant's [`SuspensionBilling`] policy (see [`suspend`]),
    /// writing one `billing.subscription_suspended` per subscription, all in one store step.
    /// Idempotent: a subscription already suspended is left as it is (no event), so a replay
    /// changes nothing. Returns the subscriptions suspended.
    ///
    /// # Errors
    ///
    /// The errors of [`suspend`] ([`BillingError::DateBeyondHorizon`], …); store errors. On
    /// error nothing changes.
    #[tracing::instrument(name = "dotmac.billing.suspend_customer", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn suspend_customer(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        on: NaiveDate,
    ) -> Result<(Vec<Subscription>, Events), BillingError> {
        let policy = self.inner.settings.suspension_billing;
        self.suspension_step(tenant, customer, |sub, plans, settings| {
            if !matches!(
                sub.status,
                SubscriptionStatus::Active | SubscriptionStatus::PastDue
            ) {
                return Ok(None);
            }
            Ok(suspend(sub, plans, on, policy, settings)?.map(|outcome| {
                let since = outcome.subscription.suspended_since.unwrap_or(on);
                (
                    outcome,
                    BillingEvent::SubscriptionSuspended {
                        subscription: sub.id,
                        customer: sub.customer,
                        on: since,
                    },
                )
            }))
        })
        .await
    }

    /// Restores every suspended subscription of `customer` on `on` (collections'
    /// `restore_service`): active again, with what the tenant's [`SuspensionBilling`] policy
    /// bills or credits for the suspension (see [`restore`]), writing one
    /// `billing.subscription_restored` per subscription (and `billing.invoice_issued` for a
    /// resumed period invoiced), all in one store step. Idempotent: a subscription that is not
    /// suspended is left as it is, so a replay changes nothing. Returns the subscriptions
    /// restored.
    ///
    /// # Errors
    ///
    /// The errors of [`restore`] ([`BillingError::RestoreBeforeSuspension`], …); store
    /// errors. On error nothing changes.
    #[tracing::instrument(name = "dotmac.billing.restore_customer", level = "info", skip_all, fields(tenant = %tenant, invoices = tracing::field::Empty))]
    pub async fn restore_customer(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        on: NaiveDate,
    ) -> Result<(Vec<Subscription>, Events), BillingError> {
        let policy = self.inner.settings.suspension_billing;
        self.suspension_step(tenant, customer, |sub, plans, settings| {
            Ok(restore(sub, plans, on, policy, settings)?.map(|outcome| {
                (
                    outcome,
                    BillingEvent::SubscriptionRestored {
                        subscription: sub.id,
                        customer: sub.customer,
                        on,
                    },
                )
            }))
        })
        .await
    }

    /// One suspension or restore of a customer: `step` for each of its subscriptions
    /// (`None`: leave it), every change committed in one batch with its event; retried when
    /// another writer changed one of the subscriptions in between.
    async fn suspension_step(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        step: impl Fn(
            &Subscription,
            &FastMap<PlanId, Plan>,
            &DocumentSettings,
        ) -> Result<Option<(ChangeOutcome, BillingEvent)>, BillingError>
        + Send
        + Sync,
    ) -> Result<(Vec<Subscription>, Events), BillingError> {
        let plans = self.plan_map(tenant).await?;
        let account = self.inner.store.account(tenant, customer).await?;
        let settings = self.inner.settings.for_account(account.as_ref());
        let mut done = Vec::new();
        let mut events = Vec::new();
        let mut attempt = 1;
        loop {
            let subs = self.inner.store.subscriptions_of(tenant, customer).await?;
            let at = self.inner.clock.now();
            let mut commits = Vec::new();
            let mut changed = Vec::new();
            for sub in &subs {
                let Some((outcome, payload)) = step(sub, &plans, &settings)? else {
                    continue;
                };
                let event = self.event(tenant, payload);
                commits.push(BillingCommit {
                    subscription: Some(outcome.subscription.clone()),
                    invoices: outcome.invoice.into_iter().collect(),
                    consumed_pending: Vec::new(),
                    new_pending: outcome.pending,
                    events: vec![OutboxEvent::new(event.clone())],
                    issued_at: Some(at),
                });
                changed.push((outcome.subscription, event));
            }
            if commits.is_empty() {
                return Ok((done, events));
            }
            let results = self.inner.store.commit_batch(tenant, commits).await?;
            let mut conflict = None;
            for ((mut sub, event), result) in changed.into_iter().zip(results) {
                match result {
                    Ok(result) => {
                        // The store has just bumped the stored revision.
                        sub.revision = sub.revision.saturating_add(1);
                        done.push(sub);
                        events.push(event);
                        count_issued(result.issued.len(), IssuedBy::SubscriptionChange);
                        issued_events(tenant, at, &result.issued, &mut events);
                    }
                    Err(e @ BillingError::ConcurrentUpdate { .. }) => conflict = Some(e),
                    Err(e) => return Err(e),
                }
            }
            match conflict {
                None => return Ok((done, events)),
                Some(e) if attempt >= SUSPENSION_ATTEMPTS => return Err(e),
                // The others are written; the next round re-reads and finishes the rest.
                Some(_) => attempt = attempt.saturating_add(1),
            }
        }
    }

    /// Issues a credit note against an invoice, full or for given lines.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvoiceNotFound`] and the errors of [`credit_note`].
    #[tracing::instrument(name = "dotmac.billing.credit", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn credit(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        request: CreditRequest,
        reason: Option<String>,
    ) -> Result<(CreditNote, Events), BillingError> {
        self.issue_credit_note(
            tenant,
            CreditNoteRequest {
                invoice,
                credit: request,
                reason,
                settlement: CreditSettlement::Credit,
                idempotency_key: None,
            },
        )
        .await
    }

    /// Issues a credit note, as [`BillingService::credit`], with an optional idempotency key:
    /// a retry with the same key and request returns the first note (with its number) and no
    /// event, and writes nothing.
    ///
    /// # Errors
    ///
    /// As [`BillingService::credit`], and [`CoreError::IdempotencyKeyReused`](dotmac_core::CoreError::IdempotencyKeyReused) for a key
    /// first used with another request.
    #[tracing::instrument(name = "dotmac.billing.issue_credit_note", level = "info", skip_all, fields(tenant = %tenant))]
    pub async fn issue_credit_note(
        &self,
        tenant: TenantId,
        request: CreditNoteRequest,
    ) -> Result<(CreditNote, Events), BillingError> {
        let keyed = request.idempotency_key.map(|key| KeyedRequest {
            key,
            request: IdempotentRequest::CreditNote {
                invoice: request.invoice,
                credit: request.credit.clone(),
                reason: request.reason.clone(),
                settlement: request.settlement,
            },
            at: self.inner.clock.now(),
        });
        let earlier_record = match &keyed {
            Some(keyed) => {
                self.inner
                    .store
                    .idempotency_record(tenant, &keyed.key)
                    .await?
            }
            None => None,
        };
        let written = match (earlier_record, &keyed) {
            (Some(earlier), _) => (KeyedWrite::Replayed(Box::new(earlier)), Vec::new()),
            (None, keyed) => {
                let invoice = request.invoice;
                let inv = self
                    .inner
                    .store
                    .invoice(tenant, invoice)
                    .await?
                    .ok_or(BillingError::InvoiceNotFound(invoice))?;
                let earlier = self.inner.store.credit_notes_of(tenant, invoice).await?;
                let today = self.today();
                let mut note = credit_note(
                    CreditNoteId::new(),
                    &inv,
                    &earlier,
                    &request.credit,
                    today,
                    request.reason,
                )?;
                note.settlement = request.settlement;
                let format = &self.inner.settings.credit_note_number_format;
                note.number_format = (!format.is_default()).then(|| format.clone());
                let events = vec![credit_note_event(tenant, self.inner.clock.now(), &note)];
                let written = match keyed {
                    Some(keyed) => {
                        self.inner
                            .store
                            .insert_credit_note_keyed(tenant, note, keyed, outbox(&events))
                            .await?
                    }
                    None => KeyedWrite::Written(
                        self.inner
                            .store
                            .insert_credit_note(tenant, note, outbox(&events))
                            .await?,
                    ),
                };
                (written, events)
            }
        };
        match (written, keyed) {
            ((KeyedWrite::Written(note), mut events), _) => {
                metrics::counter!("dotmac_billing_credit_notes_issued_total").increment(1);
                // The number the store gave it, as on the event it wrote.
                for event in &mut events {
                    number_credit_note_event(&mut event.payload, &note);
                }
                Ok((note, events))
            }
            ((KeyedWrite::Replayed(earlier), _), Some(keyed)) => {
                match earlier.replay(&keyed.request)? {
                    IdempotentResult::CreditNote { credit_note } => Ok((credit_note, Vec::new())),
                    _ => Err(crate::idempotency::mismatched()),
                }
            }
            ((KeyedWrite::Replayed(_), _), None) => Err(crate::idempotency::mismatched()),
        }
    }
}

/// Who issued invoices, for the `source` label of `dotmac_billing_invoices_issued_total`.
#[derive(Clone, Copy)]
enum IssuedBy {
    BillRun,
    SubscriptionChange,
    OnDemand,
}

/// Counts `n` issued invoices and records them on the current span (`invoices`). Literal
/// labels: the metrics macros make a static key, so nothing is allocated.
fn count_issued(n: usize, by: IssuedBy) {
    tracing::Span::current().record("invoices", n);
    if n == 0 {
        return;
    }
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    match by {
        IssuedBy::BillRun => {
            metrics::counter!("dotmac_billing_invoices_issued_total", "source" => "bill_run")
                .increment(n);
        }
        IssuedBy::SubscriptionChange => {
            metrics::counter!("dotmac_billing_invoices_issued_total", "source" => "subscription_change")
                .increment(n);
        }
        IssuedBy::OnDemand => {
            metrics::counter!("dotmac_billing_invoices_issued_total", "source" => "on_demand")
                .increment(n);
        }
    }
}

/// A bill run's or chunk's counts, once per run or chunk (never per invoice): on the current
/// span (`subscriptions`, `invoices`, `failures`) and in the metrics.
fn observe_bill_run(summary: &BillRunSummary) {
    let span = tracing::Span::current();
    span.record("subscriptions", summary.subscriptions);
    span.record("failures", summary.failures.len());
    count_issued(summary.invoices, IssuedBy::BillRun);
    if !summary.failures.is_empty() {
        metrics::counter!("dotmac_billing_bill_run_failures_total")
            .increment(u64::try_from(summary.failures.len()).unwrap_or(u64::MAX));
    }
}

/// Refuses a start more than [`CHANGE_HORIZON_YEARS`](crate::CHANGE_HORIZON_YEARS) years
/// before or after `today`: a bill run walks every period from the start, so a start in the
/// far past would stall it, and no contract is sold a century ahead.
fn check_start(request: &NewSubscription, today: NaiveDate) -> Result<(), BillingError> {
    let span = chrono::Months::new(crate::CHANGE_HORIZON_YEARS * 12);
    let earliest = today.checked_sub_months(span).unwrap_or(NaiveDate::MIN);
    let latest = today.checked_add_months(span).unwrap_or(NaiveDate::MAX);
    if request.start < earliest || request.start > latest {
        return Err(BillingError::StartBeyondHorizon {
            subscription: request.id,
            start: request.start,
            earliest,
            latest,
        });
    }
    Ok(())
}

/// One subscription's part of a bill-run chunk, computed by [`bill_chunk`]: what to commit,
/// and the status change to report once it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkCommit {
    /// The subscription billed.
    pub subscription: SubscriptionId,
    /// Its customer.
    pub customer: CustomerId,
    /// The subscription's revision as read (the commit's optimistic check).
    pub revision: u64,
    /// Its status before and after, when billing changed it (a trial ended, a cancellation
    /// took effect).
    pub status_change: Option<(SubscriptionStatus, SubscriptionStatus)>,
    /// Its documents, new state and consumed pending charges, to apply atomically.
    pub commit: BillingCommit,
}

/// The distinct customers of a chunk's subscriptions that may be billed (not ended), sorted:
/// whose accounts and pending charges a bill run loads.
pub fn chunk_customers(page: &[Subscription]) -> Vec<CustomerId> {
    let mut customers: Vec<CustomerId> = page
        .iter()
        .filter(|s| s.status != SubscriptionStatus::Ended)
        .map(|s| s.customer)
        .collect();
    customers.sort_unstable();
    customers.dedup();
    customers
}

/// What [`bill_chunk`] computed: the commits of the customers billed, and the customers
/// skipped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BilledChunk {
    /// A commit for every subscription that has something to write, in page order.
    pub items: Vec<ChunkCommit>,
    /// The customers skipped because [`bill_due`] failed for one of their subscriptions
    /// (the first failure of each): `items` holds nothing of theirs.
    pub failures: Vec<BillingFailure>,
}

/// Bills a chunk of subscriptions up to `as_of` without touching a store: [`bill_due`] for
/// each subscription with its customer's account settings and pending charges. Returns a
/// commit for every subscription that has something to write, in page order; ended
/// subscriptions and those with nothing due are left out. `accounts` and `pending` may hold
/// other customers' records too (see [`chunk_customers`]).
///
/// The customer is the unit of failure: when [`bill_due`] fails for one subscription, none
/// of that customer's subscriptions in the chunk get a commit (their pending charges are
/// shared), and the customer is listed in [`BilledChunk::failures`] instead; the other
/// customers are billed as if it were not there.
///
/// [`BillingService::run_chunk`] and scale-out workers (`dotmac-sqlx`) share it, so that
/// every way of running a bill produces the same documents.
pub fn bill_chunk(
    page: &[Subscription],
    plans: &(impl PlanLookup + ?Sized),
    accounts: &[CustomerAccount],
    pending: &[PendingCharge],
    as_of: NaiveDate,
    settings: &BillingSettings,
) -> BilledChunk {
    let default_settings = settings.for_account(None);
    let own_settings: FastMap<CustomerId, DocumentSettings> = accounts
        .iter()
        .map(|a| (a.customer, settings.for_account(Some(a))))
        .collect();
    let mut pending_of: FastMap<CustomerId, Vec<PendingCharge>> = FastMap::default();
    for charge in pending {
        pending_of
            .entry(charge.customer)
            .or_default()
            .push(charge.clone());
    }
    let mut items = Vec::with_capacity(page.len());
    // Empty (no allocation) unless a customer fails.
    let mut failures: Vec<BillingFailure> = Vec::new();
    let failed = |failures: &[BillingFailure], customer: CustomerId| {
        failures.iter().any(|f| f.customer == customer)
    };
    for sub in page {
        if sub.status == SubscriptionStatus::Ended
            || (!failures.is_empty() && failed(&failures, sub.customer))
        {
            continue;
        }
        let doc_settings = own_settings.get(&sub.customer).unwrap_or(&default_settings);
        let charges = pending_of
            .get(&sub.customer)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let out = match bill_due(sub, plans, charges, as_of, doc_settings) {
            Ok(out) => out,
            Err(error) => {
                failures.push(BillingFailure {
                    customer: sub.customer,
                    subscription: Some(sub.id),
                    error,
                });
                continue;
            }
        };
        if out.invoices.is_empty() && out.subscription == *sub {
            continue;
        }
        // A charge put on this subscription's documents must not go on a later one of the
        // same customer in the same chunk.
        if !out.consumed.is_empty()
            && let Some(list) = pending_of.get_mut(&sub.customer)
        {
            list.retain(|c| !out.consumed.contains(&c.id));
        }
        items.push(ChunkCommit {
            subscription: sub.id,
            customer: sub.customer,
            revision: sub.revision,
            status_change: (sub.status != out.subscription.status)
                .then_some((sub.status, out.subscription.status)),
            commit: BillingCommit::from(out),
        });
    }
    // A failed customer's earlier subscriptions of the chunk are dropped too: all or nothing.
    if !failures.is_empty() {
        items.retain(|i| !failed(&failures, i.customer));
    }
    BilledChunk { items, failures }
}

/// Takes the commits out of a chunk's items (the rest of each item stays for
/// [`record_chunk_at`]), each carrying its own outbox events dated `at`: its issued invoices'
/// `billing.invoice_issued` ([`BillingCommit::issued_at`]) and, when billing moved the
/// subscription's status, `billing.subscription_status_changed`. The store writes them in the
/// commit's transaction, so every way of running a bill (the service, scale-out workers)
/// publishes the same events.
pub fn chunk_commits(
    tenant: TenantId,
    at: chrono::DateTime<chrono::Utc>,
    items: &mut [ChunkCommit],
) -> Vec<BillingCommit> {
    items
        .iter_mut()
        .map(|item| {
            let mut commit = std::mem::take(&mut item.commit);
            commit.issued_at = Some(at);
            if let Some(event) = status_changed_event(tenant, at, item) {
                commit.events.push(OutboxEvent::new(event));
            }
            commit
        })
        .collect()
}

/// The `billing.invoice_issued` events of `issued`, dated `at`, appended to `events`.
fn issued_events(
    tenant: TenantId,
    at: chrono::DateTime<chrono::Utc>,
    issued: &[IssuedInvoice],
    events: &mut Events,
) {
    events.extend(issued.iter().map(|i| invoice_issued_event(tenant, at, i)));
}

/// The `billing.invoice_status_changed` payload of `invoice` moving to `to` on `on`.
fn status_changed(invoice: &Invoice, to: InvoiceStatus, on: NaiveDate) -> BillingEvent {
    BillingEvent::InvoiceStatusChanged {
        invoice: invoice.id,
        customer: invoice.customer,
        from: invoice.status,
        to,
        on,
    }
}

/// The `billing.credit_note_issued` event of `note`. Its id derives from the note's, so the
/// outbox sees one event per note.
fn credit_note_event(
    tenant: TenantId,
    at: chrono::DateTime<chrono::Utc>,
    note: &CreditNote,
) -> DomainEvent<BillingEvent> {
    let id = EventId::derived(
        IdDigest::new("billing.credit_note_issued")
            .uuid(tenant.as_uuid())
            .uuid(note.id.as_uuid()),
    );
    DomainEvent::at(
        id,
        tenant,
        at,
        BillingEvent::CreditNoteIssued {
            credit_note: note.id,
            invoice: note.invoice,
            customer: note.customer,
            amount: note.total,
            issued: note.issue_date,
            settlement: note.settlement,
            number: note.number,
        },
    )
}

/// `events` with `note`'s number on its `billing.credit_note_issued` event (built before the
/// store numbered it): a store calls it once it has numbered the note, before it writes the
/// events, so the event and the stored note carry the same number. Other events pass as
/// they are.
pub fn numbered_credit_note_events(
    note: &CreditNote,
    events: Vec<OutboxEvent>,
) -> Vec<OutboxEvent> {
    events
        .into_iter()
        .map(|event| {
            let Some(mut payload) = event.payload::<BillingEvent>().cloned() else {
                return event;
            };
            if !number_credit_note_event(&mut payload, note) {
                return event;
            }
            OutboxEvent::new(DomainEvent::at(
                event.id(),
                event.tenant(),
                event.occurred_at(),
                payload,
            ))
        })
        .collect()
}

/// Puts `note`'s number on `payload` when it is `note`'s `billing.credit_note_issued` without
/// one; says whether it did.
fn number_credit_note_event(payload: &mut BillingEvent, note: &CreditNote) -> bool {
    match payload {
        BillingEvent::CreditNoteIssued {
            credit_note,
            number: unset @ None,
            ..
        } if *credit_note == note.id && note.number.is_some() => {
            *unset = note.number;
            true
        }
        _ => false,
    }
}

/// The `billing.subscription_status_changed` event of a bill-run item whose status billing
/// changed, dated `at`. Its id derives from the subscription and the revision the change was
/// computed from, so the bill run's summary and the outbox carry the same event.
fn status_changed_event(
    tenant: TenantId,
    at: chrono::DateTime<chrono::Utc>,
    item: &ChunkCommit,
) -> Option<DomainEvent<BillingEvent>> {
    let (from, to) = item.status_change?;
    let id = EventId::derived(
        IdDigest::new("billing.subscription_status_changed")
            .uuid(tenant.as_uuid())
            .uuid(item.subscription.as_uuid())
            .u64(item.revision),
    );
    Some(DomainEvent::at(
        id,
        tenant,
        at,
        BillingEvent::SubscriptionStatusChanged {
            subscription: item.subscription,
            customer: item.customer,
            from,
            to,
        },
    ))
}

/// The `billing.invoice_issued` event of an issued invoice. Its id derives from the invoice
/// id, so an outbox sees the same event id however often (and by whichever worker) the issue
/// is reported.
pub fn invoice_issued_event(
    tenant: TenantId,
    at: chrono::DateTime<chrono::Utc>,
    invoice: &IssuedInvoice,
) -> DomainEvent<BillingEvent> {
    // The tenant is mixed in because invoice ids derive from document keys, which two
    // tenants may share, and an outbox's event ids are global.
    // The namespace's digest is computed once, at compile time (one event per invoice).
    const ISSUED: IdDigest = IdDigest::new("billing.invoice_issued");
    let id = EventId::derived(ISSUED.uuid(tenant.as_uuid()).uuid(invoice.id.as_uuid()));
    DomainEvent::at(
        id,
        tenant,
        at,
        BillingEvent::InvoiceIssued {
            invoice: invoice.id,
            number: invoice.number,
            customer: invoice.customer,
            total: invoice.total,
            issued: invoice.issue_date,
            due_date: invoice.due_date,
        },
    )
}

/// Adds the results of a chunk's [`InvoiceStore::commit_batch`](crate::InvoiceStore::commit_batch)
/// (`results`, one per item of `items`) to `summary`: counts, conflicts and events.
///
/// # Errors
///
/// The first per-commit error other than a concurrent update or a taken pending charge (a
/// conflicting subscription is counted in [`BillRunSummary::conflicts`] and left for the next
/// run); a result count that does not match `items` ([`BillingError::InvalidConfiguration`]).
pub fn record_chunk(
    tenant: TenantId,
    clock: &dyn Clock,
    items: &[ChunkCommit],
    results: Vec<Result<CommitResult, BillingError>>,
    summary: &mut BillRunSummary,
) -> Result<(), BillingError> {
    record_chunk_at(tenant, clock.now(), items, results, summary)
}

/// [`record_chunk`] with its events dated `at`: the instant the commits' own outbox events
/// carry ([`BillingCommit::issued_at`]), so the summary reports the events the store wrote.
///
/// # Errors
///
/// As [`record_chunk`].
pub fn record_chunk_at(
    tenant: TenantId,
    at: chrono::DateTime<chrono::Utc>,
    items: &[ChunkCommit],
    results: Vec<Result<CommitResult, BillingError>>,
    summary: &mut BillRunSummary,
) -> Result<(), BillingError> {
    if results.len() != items.len() {
        return Err(BillingError::InvalidConfiguration {
            what: "billing store",
            reason: "commit_batch returned a different number of results than commits",
        });
    }
    summary.events.reserve(items.len());
    for (item, result) in items.iter().zip(results) {
        match result {
            Ok(result) => {
                // Counts of records held in memory: cannot reach usize::MAX.
                summary.invoices = summary.invoices.saturating_add(result.issued.len());
                summary.duplicates = summary.duplicates.saturating_add(result.duplicates);
                summary.events.extend(
                    result
                        .issued
                        .iter()
                        .map(|i| invoice_issued_event(tenant, at, i)),
                );
                if let Some(event) = status_changed_event(tenant, at, item) {
                    summary.events.push(event);
                }
            }
            // Someone else changed the subscription or invoiced one of its charges: the
            // subscription is left for the next run, which re-reads both.
            Err(
                BillingError::ConcurrentUpdate { .. } | BillingError::PendingChargeTaken { .. },
            ) => summary.conflicts = summary.conflicts.saturating_add(1),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_core::FixedClock;
    use dotmac_core::PendingChargeId;

    fn item(n: u128) -> ChunkCommit {
        ChunkCommit {
            subscription: SubscriptionId::from_u128(n),
            customer: CustomerId::from_u128(n),
            revision: 0,
            status_change: None,
            commit: BillingCommit::default(),
        }
    }

    #[test]
    fn bill_chunk_leaves_out_every_subscription_of_a_failing_customer() {
        use crate::catalog::Charge;
        use crate::subscription::NewSubscription;
        use dotmac_core::{Currency, ProductId};
        let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
        let plan = |id| {
            Plan::builder(PlanId::from_u128(id), ProductId::from_u128(1), "Fibre")
                .charge(Charge::recurring_flat([Money::from_minor(
                    1000,
                    Currency::USD,
                )]))
                .build(day(1))
                .unwrap()
        };
        let (known, missing) = (plan(1), plan(2));
        let sub = |id: u128, customer: u128, plan: &Plan| {
            NewSubscription::new(
                CustomerId::from_u128(customer),
                plan.id,
                Currency::USD,
                day(1),
            )
            .id(SubscriptionId::from_u128(id))
            .create(plan, Currency::USD)
            .unwrap()
        };
        // Customer 7's first subscription bills, its second names a plan the lookup lacks.
        let page = [sub(1, 7, &known), sub(2, 7, &missing), sub(3, 8, &known)];
        let billed = bill_chunk(&page, &known, &[], &[], day(1), &BillingSettings::default());
        let billed_subs: Vec<_> = billed.items.iter().map(|i| i.subscription).collect();
        assert_eq!(billed_subs, [SubscriptionId::from_u128(3)]);
        assert_eq!(
            billed.failures,
            [BillingFailure {
                customer: CustomerId::from_u128(7),
                subscription: Some(SubscriptionId::from_u128(2)),
                error: BillingError::UnknownPlan(missing.id),
            }]
        );
    }

    #[test]
    fn record_chunk_counts_conflicts_and_stops_at_other_errors() {
        let tenant = TenantId::from_u128(1);
        let clock = FixedClock::new(chrono::DateTime::UNIX_EPOCH);
        let items = [item(1), item(2), item(3)];
        let stale = BillingError::ConcurrentUpdate {
            subscription: SubscriptionId::from_u128(2),
            expected: 1,
            found: 2,
        };
        let taken = BillingError::PendingChargeTaken {
            charge: PendingChargeId::from_u128(9),
        };
        let mut summary = BillRunSummary::default();
        record_chunk(
            tenant,
            &clock,
            &items,
            vec![Ok(CommitResult::default()), Err(stale), Err(taken)],
            &mut summary,
        )
        .unwrap();
        assert_eq!((summary.conflicts, summary.invoices), (2, 0));

        let failure = BillingError::UnknownSubscription(SubscriptionId::from_u128(3));
        let mut summary = BillRunSummary::default();
        let result = record_chunk(
            tenant,
            &clock,
            &items,
            vec![
                Ok(CommitResult::default()),
                Ok(CommitResult::default()),
                Err(failure.clone()),
            ],
            &mut summary,
        );
        assert_eq!(result, Err(failure));
        let short = record_chunk(tenant, &clock, &items, Vec::new(), &mut summary);
        assert!(matches!(
            short,
            Err(BillingError::InvalidConfiguration { .. })
        ));
    }
}
