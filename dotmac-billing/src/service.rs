//! `BillingService`: store + pure domain + clock, returning domain events.

use chrono::NaiveDate;
use dotmac_core::{
    Clock, CreditNoteId, CustomerId, DomainEvent, EventId, EventPayload, InvoiceId, Money, PlanId,
    RoundingMode, SubscriptionId, TenantId,
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
use crate::invoice::{
    CreditNote, CreditRequest, DocumentSettings, Invoice, InvoiceStatus, PendingCharge,
    credit_note, invoice_pending_charges,
};
use crate::store::{BillingCommit, BillingStore, CommitResult, CustomerAccount, IssuedInvoice};
use crate::subscription::{NewSubscription, Subscription, SubscriptionStatus};
use crate::tax::TaxRate;

/// A tenant's billing settings (passed in by the application, for example from
/// `dotmac-tenancy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingSettings {
    /// The rounding mode of every line (the one rounding point).
    pub rounding: RoundingMode,
    /// Tax rates applied to every line, in order.
    pub taxes: Vec<TaxRate>,
    /// Default days from issue to due date.
    pub payment_terms_days: u32,
    /// Subscriptions processed per store page in a bill run.
    pub chunk_size: usize,
}

impl Default for BillingSettings {
    fn default() -> Self {
        BillingSettings {
            rounding: RoundingMode::HalfUp,
            taxes: Vec::new(),
            payment_terms_days: 14,
            chunk_size: 1000,
        }
    }
}

impl BillingSettings {
    /// The document settings for one customer.
    pub fn for_account(&self, account: Option<&CustomerAccount>) -> DocumentSettings {
        DocumentSettings {
            rounding: self.rounding,
            taxes: self.taxes.clone(),
            exemption: account.map(|a| a.exemption.clone()).unwrap_or_default(),
            payment_terms_days: account
                .and_then(|a| a.payment_terms_days)
                .unwrap_or(self.payment_terms_days),
        }
    }
}

/// What happened in billing. Event names are stable (`billing.invoice_issued`, …).
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
        /// Its status after the change.
        status: SubscriptionStatus,
        /// The date the change takes effect.
        effective: NaiveDate,
    },
    /// A subscription's status changed (trial ended, past due, cancelled, ended, …).
    SubscriptionStatusChanged {
        /// The subscription.
        subscription: SubscriptionId,
        /// The status before.
        from: SubscriptionStatus,
        /// The status after.
        to: SubscriptionStatus,
    },
    /// An invoice was issued (numbered, open).
    InvoiceIssued {
        /// The invoice.
        invoice: InvoiceId,
        /// Its customer.
        customer: CustomerId,
        /// Its total (negative for a credit owed to the customer).
        total: Money,
        /// Its due date.
        due_date: NaiveDate,
    },
    /// An invoice changed state (paid, void, uncollectible).
    InvoiceStatusChanged {
        /// The invoice.
        invoice: InvoiceId,
        /// The state before.
        from: InvoiceStatus,
        /// The state after.
        to: InvoiceStatus,
    },
    /// A credit note was issued.
    CreditNoteIssued {
        /// The note.
        credit_note: CreditNoteId,
        /// The invoice it credits.
        invoice: InvoiceId,
        /// Its total.
        total: Money,
    },
}

impl EventPayload for BillingEvent {
    fn event_type(&self) -> &'static str {
        match self {
            BillingEvent::PlanSaved { .. } => "billing.plan_saved",
            BillingEvent::SubscriptionCreated { .. } => "billing.subscription_created",
            BillingEvent::SubscriptionChanged { .. } => "billing.subscription_changed",
            BillingEvent::SubscriptionStatusChanged { .. } => "billing.subscription_status_changed",
            BillingEvent::InvoiceIssued { .. } => "billing.invoice_issued",
            BillingEvent::InvoiceStatusChanged { .. } => "billing.invoice_status_changed",
            BillingEvent::CreditNoteIssued { .. } => "billing.credit_note_issued",
        }
    }
}

/// Events returned by a service call.
pub type Events = Vec<DomainEvent<BillingEvent>>;

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
    /// The last subscription processed: the cursor for the next chunk.
    pub cursor: Option<SubscriptionId>,
    /// What happened.
    pub events: Events,
}

/// Billing orchestration: reads from the store, runs the pure domain functions, writes the
/// result atomically and returns domain events. Time comes only from the clock.
pub struct BillingService<S, C> {
    store: S,
    clock: C,
    settings: BillingSettings,
}

impl<S: BillingStore, C: Clock> BillingService<S, C> {
    /// A service over `store` and `clock` with `settings`.
    pub fn new(store: S, clock: C, settings: BillingSettings) -> Self {
        BillingService {
            store,
            clock,
            settings,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The settings.
    pub fn settings(&self) -> &BillingSettings {
        &self.settings
    }

    fn event(&self, tenant: TenantId, payload: BillingEvent) -> DomainEvent<BillingEvent> {
        DomainEvent::new(tenant, &self.clock, payload)
    }

    /// An `InvoiceIssued` event whose id derives from the invoice id, so that an outbox sees
    /// the same event id however often the issue is reported.
    fn issued_event(
        tenant: TenantId,
        at: chrono::DateTime<chrono::Utc>,
        invoice: &IssuedInvoice,
    ) -> DomainEvent<BillingEvent> {
        invoice_issued_event(tenant, at, invoice)
    }

    /// Adds a product.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn add_product(
        &self,
        tenant: TenantId,
        product: Product,
    ) -> Result<(), BillingError> {
        self.store.put_product(tenant, product).await
    }

    /// Adds a plan or a new price version of it.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownProduct`], [`BillingError::InvalidPlan`].
    pub async fn save_plan(&self, tenant: TenantId, plan: Plan) -> Result<Events, BillingError> {
        let payload = BillingEvent::PlanSaved {
            plan: plan.id,
            version: plan.current_version().version,
        };
        self.store.put_plan(tenant, plan).await?;
        Ok(vec![self.event(tenant, payload)])
    }

    /// Opens or updates a customer's billing account.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn save_account(
        &self,
        tenant: TenantId,
        account: CustomerAccount,
    ) -> Result<(), BillingError> {
        self.store.put_account(tenant, account).await
    }

    /// Creates a subscription. Nothing is billed until the next bill run.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownPlan`], [`BillingError::UnknownAccount`], and the validation
    /// errors of [`NewSubscription::create`]. On error nothing is stored.
    pub async fn subscribe(
        &self,
        tenant: TenantId,
        request: NewSubscription,
    ) -> Result<(Subscription, Events), BillingError> {
        let plan = self
            .store
            .plan(tenant, request.plan)
            .await?
            .ok_or(BillingError::UnknownPlan(request.plan))?;
        let account = self
            .store
            .account(tenant, request.customer)
            .await?
            .ok_or(BillingError::UnknownAccount(request.customer))?;
        let sub = request.create(&plan, account.currency)?;
        self.store.insert_subscription(tenant, sub.clone()).await?;
        let event = self.event(
            tenant,
            BillingEvent::SubscriptionCreated {
                subscription: sub.id,
                customer: sub.customer,
                plan: plan.id,
            },
        );
        Ok((sub, vec![event]))
    }

    async fn load(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<(Subscription, FastMap<PlanId, Plan>, DocumentSettings), BillingError> {
        let sub = self
            .store
            .subscription(tenant, id)
            .await?
            .ok_or(BillingError::UnknownSubscription(id))?;
        let plans = self.plan_map(tenant).await?;
        let account = self.store.account(tenant, sub.customer).await?;
        let settings = self.settings.for_account(account.as_ref());
        Ok((sub, plans, settings))
    }

    async fn plan_map(&self, tenant: TenantId) -> Result<FastMap<PlanId, Plan>, BillingError> {
        Ok(self
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
        let commit = BillingCommit {
            subscription: Some(outcome.subscription.clone()),
            invoices: outcome.invoice.iter().cloned().collect(),
            consumed_pending: Vec::new(),
            new_pending: outcome.pending.clone(),
        };
        let result = self.store.commit(tenant, commit).await?;
        let mut events = vec![self.event(
            tenant,
            BillingEvent::SubscriptionChanged {
                subscription: before.id,
                status: outcome.subscription.status,
                effective,
            },
        )];
        if before.status != outcome.subscription.status {
            events.push(self.event(
                tenant,
                BillingEvent::SubscriptionStatusChanged {
                    subscription: before.id,
                    from: before.status,
                    to: outcome.subscription.status,
                },
            ));
        }
        self.issued_events(tenant, &result.issued, &mut events);
        let mut outcome = outcome;
        // The store has just bumped the stored revision, so it has a successor.
        outcome.subscription.revision = outcome.subscription.revision.saturating_add(1);
        if let (Some(invoice), Some(issued)) = (outcome.invoice.as_mut(), result.issued.first()) {
            invoice.number = Some(issued.number);
            invoice.status = InvoiceStatus::Open;
        }
        Ok((outcome, events))
    }

    fn issued_events(&self, tenant: TenantId, issued: &[IssuedInvoice], events: &mut Events) {
        let at = self.clock.now();
        events.extend(issued.iter().map(|i| Self::issued_event(tenant, at, i)));
    }

    /// Changes a subscription's plan, quantity or pause state on `on`.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownSubscription`] and the errors of [`change`]; on error nothing
    /// changes.
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
        let outcome = change(&sub, &plans, &what, on, timing, behavior, &settings)?;
        self.commit_change(tenant, &sub, outcome, on).await
    }

    /// Cancels a subscription on `on` (immediately, or at the end of that period).
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownSubscription`] and the errors of [`cancel`]; on error nothing
    /// changes.
    pub async fn cancel_subscription(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        on: NaiveDate,
        timing: CancelTiming,
        behavior: ProrationBehavior,
    ) -> Result<(ChangeOutcome, Events), BillingError> {
        let (sub, plans, settings) = self.load(tenant, id).await?;
        let outcome = cancel(&sub, &plans, on, timing, behavior, &settings)?;
        self.commit_change(tenant, &sub, outcome, on).await
    }

    /// Moves a subscription to `to` (for collections: `past_due` and back to `active`).
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownSubscription`], [`BillingError::IllegalTransition`].
    pub async fn set_subscription_status(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        to: SubscriptionStatus,
    ) -> Result<Events, BillingError> {
        let mut sub = self
            .store
            .subscription(tenant, id)
            .await?
            .ok_or(BillingError::UnknownSubscription(id))?;
        let from = sub.status;
        sub.status = from.transition(to)?;
        self.store
            .commit(
                tenant,
                BillingCommit {
                    subscription: Some(sub),
                    ..BillingCommit::default()
                },
            )
            .await?;
        Ok(vec![self.event(
            tenant,
            BillingEvent::SubscriptionStatusChanged {
                subscription: id,
                from,
                to,
            },
        )])
    }

    /// The documents a bill run on `as_of` would issue for one subscription, without writing
    /// anything. They are identical to the issued ones except for status and number.
    ///
    /// # Errors
    ///
    /// As [`bill_due`].
    pub async fn preview(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        as_of: NaiveDate,
    ) -> Result<Vec<Invoice>, BillingError> {
        let (sub, plans, settings) = self.load(tenant, id).await?;
        let pending = self.store.pending_charges(tenant, sub.customer).await?;
        Ok(bill_due(&sub, &plans, &pending, as_of, &settings)?.invoices)
    }

    /// Bills every subscription of the tenant up to `as_of`, chunk by chunk. Idempotent: a
    /// second run on the same date issues nothing.
    ///
    /// # Errors
    ///
    /// The first domain or store error; the chunks committed before it stay committed, and a
    /// re-run continues where it stopped.
    pub async fn run_bill(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
    ) -> Result<BillRunSummary, BillingError> {
        let plans = self.plan_map(tenant).await?;
        let mut total = BillRunSummary::default();
        loop {
            let chunk = self.run_chunk(tenant, as_of, &plans, total.cursor).await?;
            let done = chunk.subscriptions == 0;
            // Counts of records held in memory: cannot reach usize::MAX.
            total.subscriptions = total.subscriptions.saturating_add(chunk.subscriptions);
            total.invoices = total.invoices.saturating_add(chunk.invoices);
            total.duplicates = total.duplicates.saturating_add(chunk.duplicates);
            total.conflicts = total.conflicts.saturating_add(chunk.conflicts);
            total.events.extend(chunk.events);
            if done {
                break;
            }
            total.cursor = chunk.cursor;
        }
        Ok(total)
    }

    /// Bills one chunk of subscriptions after `cursor` (see [`BillingSettings::chunk_size`]):
    /// the unit of work a scheduler can spread over workers or resume after a crash.
    ///
    /// # Errors
    ///
    /// The first domain or store error.
    pub async fn run_chunk(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
        plans: &(impl PlanLookup + ?Sized),
        cursor: Option<SubscriptionId>,
    ) -> Result<BillRunSummary, BillingError> {
        let page = self
            .store
            .subscriptions_page(tenant, cursor, self.settings.chunk_size.max(1))
            .await?;
        let mut summary = BillRunSummary {
            subscriptions: page.len(),
            cursor: page.last().map(|s| s.id).or(cursor),
            ..BillRunSummary::default()
        };
        let customers = chunk_customers(&page);
        let accounts = self.store.accounts(tenant, &customers).await?;
        let pending = self.store.pending_charges_for(tenant, &customers).await?;
        let mut items = bill_chunk(&page, plans, &accounts, &pending, as_of, &self.settings)?;
        drop(page);
        // The commits move to the store; `record_chunk` needs only the rest of each item.
        let commits = items
            .iter_mut()
            .map(|i| std::mem::take(&mut i.commit))
            .collect();
        let results = self.store.commit_batch(tenant, commits).await?;
        record_chunk(tenant, &self.clock, &items, results, &mut summary)?;
        Ok(summary)
    }

    /// Adds a one-off charge for a customer's next invoice (usage, fees, adjustments).
    /// Returns `false` when the charge id was already added.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownAccount`], [`BillingError::CurrencyNotUsed`] for a charge in a
    /// currency the customer does not use.
    pub async fn add_pending_charge(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
    ) -> Result<bool, BillingError> {
        let account = self
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
        self.store.add_pending_charge(tenant, charge).await
    }

    /// Invoices a customer's pending charges now, on their own (for a fee that cannot wait for
    /// the next bill). `None` when nothing is pending.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownAccount`]; [`BillingError::PendingChargeTaken`] when a bill run
    /// invoiced one of the charges since they were read (call again: the rest are still
    /// pending); store errors.
    pub async fn invoice_pending_now(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<(Option<Invoice>, Events), BillingError> {
        let account = self
            .store
            .account(tenant, customer)
            .await?
            .ok_or(BillingError::UnknownAccount(customer))?;
        let today = self.clock.now().date_naive();
        let pending: Vec<PendingCharge> = self
            .store
            .pending_charges(tenant, customer)
            .await?
            .into_iter()
            .filter(|c| c.created_on <= today)
            .collect();
        if pending.is_empty() {
            return Ok((None, Vec::new()));
        }
        let settings = self.settings.for_account(Some(&account));
        let invoice =
            invoice_pending_charges(customer, account.currency, today, &pending, &settings)?;
        let result = self
            .store
            .commit(
                tenant,
                BillingCommit {
                    subscription: None,
                    invoices: vec![invoice],
                    consumed_pending: pending.iter().map(|c| c.id).collect(),
                    new_pending: Vec::new(),
                },
            )
            .await?;
        let mut events = Vec::new();
        self.issued_events(tenant, &result.issued, &mut events);
        let invoice = match result.issued.first() {
            Some(issued) => self.store.invoice(tenant, issued.id).await?,
            None => None,
        };
        Ok((invoice, events))
    }

    /// Moves an invoice to `to` (paid, void, uncollectible).
    ///
    /// # Errors
    ///
    /// [`BillingError::InvoiceNotFound`], [`BillingError::IllegalInvoiceTransition`].
    pub async fn set_invoice_status(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        to: InvoiceStatus,
    ) -> Result<(Invoice, Events), BillingError> {
        let before = self
            .store
            .invoice(tenant, id)
            .await?
            .ok_or(BillingError::InvoiceNotFound(id))?;
        let after = self.store.set_invoice_status(tenant, id, to).await?;
        let event = self.event(
            tenant,
            BillingEvent::InvoiceStatusChanged {
                invoice: id,
                from: before.status,
                to,
            },
        );
        Ok((after, vec![event]))
    }

    /// Issues a credit note against an invoice, full or for given lines.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvoiceNotFound`] and the errors of [`credit_note`].
    pub async fn credit(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        request: CreditRequest,
        reason: Option<String>,
    ) -> Result<(CreditNote, Events), BillingError> {
        let inv = self
            .store
            .invoice(tenant, invoice)
            .await?
            .ok_or(BillingError::InvoiceNotFound(invoice))?;
        let earlier = self.store.credit_notes_of(tenant, invoice).await?;
        let today = self.clock.now().date_naive();
        let note = credit_note(CreditNoteId::new(), &inv, &earlier, &request, today, reason)?;
        let note = self.store.insert_credit_note(tenant, note).await?;
        let event = self.event(
            tenant,
            BillingEvent::CreditNoteIssued {
                credit_note: note.id,
                invoice,
                total: note.total,
            },
        );
        Ok((note, vec![event]))
    }
}

/// One subscription's part of a bill-run chunk, computed by [`bill_chunk`]: what to commit,
/// and the status change to report once it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkCommit {
    /// The subscription billed.
    pub subscription: SubscriptionId,
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

/// Bills a chunk of subscriptions up to `as_of` without touching a store: [`bill_due`] for
/// each subscription with its customer's account settings and pending charges. Returns a
/// commit for every subscription that has something to write, in page order; ended
/// subscriptions and those with nothing due are left out. `accounts` and `pending` may hold
/// other customers' records too (see [`chunk_customers`]).
///
/// [`BillingService::run_chunk`] and scale-out workers (`dotmac-sqlx`) share it, so that
/// every way of running a bill produces the same documents.
///
/// # Errors
///
/// The first error of [`bill_due`].
pub fn bill_chunk(
    page: &[Subscription],
    plans: &(impl PlanLookup + ?Sized),
    accounts: &[CustomerAccount],
    pending: &[PendingCharge],
    as_of: NaiveDate,
    settings: &BillingSettings,
) -> Result<Vec<ChunkCommit>, BillingError> {
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
    for sub in page {
        if sub.status == SubscriptionStatus::Ended {
            continue;
        }
        let doc_settings = own_settings.get(&sub.customer).unwrap_or(&default_settings);
        let charges = pending_of
            .get(&sub.customer)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let out = bill_due(sub, plans, charges, as_of, doc_settings)?;
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
            status_change: (sub.status != out.subscription.status)
                .then_some((sub.status, out.subscription.status)),
            commit: BillingCommit::from(out),
        });
    }
    Ok(items)
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
    let id = EventId::from_u128(crate::invoice::mix(
        invoice.id.as_uuid().as_u128()
            ^ 0x1553_ED00
            ^ crate::invoice::mix(tenant.as_uuid().as_u128()),
    ));
    DomainEvent::at(
        id,
        tenant,
        at,
        BillingEvent::InvoiceIssued {
            invoice: invoice.id,
            customer: invoice.customer,
            total: invoice.total,
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
    if results.len() != items.len() {
        return Err(BillingError::InvalidConfiguration {
            what: "billing store",
            reason: "commit_batch returned a different number of results than commits",
        });
    }
    let at = clock.now();
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
                if let Some((from, to)) = item.status_change {
                    summary.events.push(DomainEvent::new(
                        tenant,
                        clock,
                        BillingEvent::SubscriptionStatusChanged {
                            subscription: item.subscription,
                            from,
                            to,
                        },
                    ));
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
    use crate::invoice::PendingChargeId;
    use dotmac_core::FixedClock;

    fn item(n: u128) -> ChunkCommit {
        ChunkCommit {
            subscription: SubscriptionId::from_u128(n),
            status_change: None,
            commit: BillingCommit::default(),
        }
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
