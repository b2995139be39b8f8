//! The collections service: payments and refunds recorded (idempotently) in the customer's
//! ledger, and dunning evaluated over it, each step returning its domain events.

use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use dotmac_core::{
    Clock, Currency, CustomerId, DomainEvent, EventPayload, InvoiceId, Money, PaymentId, TenantId,
};
use serde::{Deserialize, Serialize};

use crate::dunning::{DunningInvoice, DunningPolicy, DunningStore, FiredAction, evaluate};
use crate::error::{CollectionsError, CollectionsFailure};
use crate::idempotency::{
    IdempotencyKey, IdempotencyRecord, IdempotentRequest, IdempotentResult, KeyedRequest,
    KeyedWrite,
};
use crate::payments::{
    AllocationTarget, CustomerLedger, LedgerEntry, LedgerEntryKind, PaymentOutcome, PaymentStore,
};

/// What the collections service reports: ledger movements and collection actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CollectionEvent {
    /// An entry appended to a customer's ledger.
    Ledger(LedgerEntry),
    /// A collection action to carry out (notify, charge a fee, suspend or restore service).
    Action(FiredAction),
    /// A collections run ([`CollectionsService::evaluate_customers`]) skipped a customer
    /// whose ledger could not be rebuilt (see [`CollectionsRunSummary::failures`]).
    EvaluationFailed {
        /// The customer skipped.
        customer: CustomerId,
        /// The error's kind ([`CollectionsError::kind`], e.g. `wrong_currency`).
        error_kind: String,
        /// The error's message (ids and amounts, no personal data).
        error: String,
    },
}

impl EventPayload for CollectionEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CollectionEvent::Ledger(entry) => entry.event_type(),
            CollectionEvent::Action(action) => action.event_type(),
            CollectionEvent::EvaluationFailed { .. } => "collections.evaluation_failed",
        }
    }
}

/// What a collections run over many customers did
/// ([`CollectionsService::evaluate_customers`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CollectionsRunSummary {
    /// Customers looked at.
    pub customers: usize,
    /// Customers skipped because their ledger could not be rebuilt (entries in two
    /// currencies, a balance that overflows, …): nothing was saved for them, the others were
    /// evaluated. Each also has a `collections.evaluation_failed` event.
    pub failures: Vec<CollectionsFailure>,
    /// The actions fired, and the failures, as events.
    pub events: Vec<DomainEvent<CollectionEvent>>,
}

/// A payment to record, for [`CollectionsService::receive_payment`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// Who paid.
    pub customer: CustomerId,
    /// The payment's id (the processor's reference).
    pub payment: PaymentId,
    /// The amount, in the customer's currency.
    pub amount: Money,
    /// Where it goes (default: oldest invoice first).
    pub target: AllocationTarget,
    /// A retry with the same key and the same request gets the first outcome back; the same
    /// key with another request is [`CollectionsError::IdempotencyKeyReused`].
    pub idempotency_key: Option<IdempotencyKey>,
}

impl PaymentRequest {
    /// A payment allocated oldest invoice first, without an idempotency key.
    pub fn new(customer: CustomerId, payment: PaymentId, amount: Money) -> Self {
        PaymentRequest {
            customer,
            payment,
            amount,
            target: AllocationTarget::OldestFirst,
            idempotency_key: None,
        }
    }

    /// Sets where the payment goes.
    pub fn target(mut self, target: AllocationTarget) -> Self {
        self.target = target;
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// A refund to record, for [`CollectionsService::refund_payment`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// Whose payment.
    pub customer: CustomerId,
    /// The payment refunded.
    pub payment: PaymentId,
    /// The amount returned.
    pub amount: Money,
    /// A retry with the same key and the same request gets the first entries back; the same
    /// key with another request is [`CollectionsError::IdempotencyKeyReused`].
    pub idempotency_key: Option<IdempotencyKey>,
}

impl RefundRequest {
    /// A refund without an idempotency key.
    pub fn new(customer: CustomerId, payment: PaymentId, amount: Money) -> Self {
        RefundRequest {
            customer,
            payment,
            amount,
            idempotency_key: None,
        }
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

fn replayed_payment(
    earlier: &IdempotencyRecord,
    request: &IdempotentRequest,
) -> Result<PaymentOutcome, CollectionsError> {
    match earlier.replay(request)? {
        IdempotentResult::Payment { outcome } => Ok(outcome),
        _ => Err(crate::idempotency::mismatched()),
    }
}

fn replayed_refund(
    earlier: &IdempotencyRecord,
    request: &IdempotentRequest,
) -> Result<Vec<LedgerEntry>, CollectionsError> {
    match earlier.replay(request)? {
        IdempotentResult::Refund { entries } => Ok(entries),
        _ => Err(crate::idempotency::mismatched()),
    }
}

/// A tenant's collections settings: its dunning policy and the zone whose local dates the
/// schedule runs on.
///
/// ```
/// use dotmac_collections::{CollectionsSettings, DunningPolicy};
/// let policy = DunningPolicy::builder(dotmac_core::Currency::USD)
///     .step(1, "overdue_notice")
///     .step(14, "suspend")
///     .build()?;
/// let settings = CollectionsSettings::new(policy).with_zone(chrono_tz::Africa::Lagos);
/// assert_eq!(settings.zone, chrono_tz::Africa::Lagos);
/// # Ok::<(), dotmac_collections::CollectionsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CollectionsSettings {
    /// The dunning schedule.
    pub policy: DunningPolicy,
    /// The tenant's zone: "today" is the clock's date there.
    pub zone: Tz,
}

impl CollectionsSettings {
    /// `policy` on UTC dates.
    pub fn new(policy: DunningPolicy) -> Self {
        CollectionsSettings {
            policy,
            zone: Tz::UTC,
        }
    }

    /// With `zone` as the tenant's zone.
    pub fn with_zone(mut self, zone: Tz) -> Self {
        self.zone = zone;
        self
    }
}

/// Payments and collections for a tenant: records payments in the ledger, runs the dunning
/// policy over a customer's invoices and returns what happened as domain events. Today is the
/// clock's date in the tenant's time zone.
///
/// A cheap handle: the stores, the clock and the settings sit behind one `Arc`.
pub struct CollectionsService<P, D, C> {
    inner: Arc<CollectionsInner<P, D, C>>,
}

struct CollectionsInner<P, D, C> {
    payments: P,
    dunning: D,
    clock: C,
    settings: CollectionsSettings,
}

impl<P, D, C> Clone for CollectionsService<P, D, C> {
    fn clone(&self) -> Self {
        CollectionsService {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<P, D, C> std::fmt::Debug for CollectionsService<P, D, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionsService")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl<P: PaymentStore, D: DunningStore, C: Clock> CollectionsService<P, D, C> {
    /// A service over the payment and dunning stores (one [`SqlStore`] can be both), a clock
    /// and the tenant's settings.
    ///
    /// [`SqlStore`]: https://docs.rs/dotmac-sqlx
    pub fn new(payments: P, dunning: D, clock: C, settings: CollectionsSettings) -> Self {
        CollectionsService {
            inner: Arc::new(CollectionsInner {
                payments,
                dunning,
                clock,
                settings,
            }),
        }
    }

    /// The payment store.
    pub fn payment_store(&self) -> &P {
        &self.inner.payments
    }

    /// The settings.
    pub fn settings(&self) -> &CollectionsSettings {
        &self.inner.settings
    }

    fn today(&self) -> NaiveDate {
        self.inner.clock.today_in(self.inner.settings.zone)
    }

    fn wrap(
        &self,
        tenant: TenantId,
        events: Vec<CollectionEvent>,
    ) -> Vec<DomainEvent<CollectionEvent>> {
        events
            .into_iter()
            .map(|e| DomainEvent::new(tenant, &self.inner.clock, e))
            .collect()
    }

    /// The customer's ledger, `None` for a customer without entries yet; its currency is
    /// that of its first entry.
    async fn stored_ledger(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Option<CustomerLedger>, CollectionsError> {
        self.load_ledger(tenant, customer).await?
    }

    /// [`Self::stored_ledger`] with its two kinds of error apart: the outer one a store
    /// error, the inner one entries that do not make a ledger (the customer's bad data).
    async fn load_ledger(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Result<Option<CustomerLedger>, CollectionsError>, CollectionsError> {
        let entries = self.inner.payments.entries(tenant, customer).await?;
        let Some(currency) = entries.first().map(|e| e.kind.currency()) else {
            return Ok(Ok(None));
        };
        Ok(CustomerLedger::from_entries(customer, currency, entries).map(Some))
    }

    /// The customer's ledger, or an empty one in `currency` (the currency of the money about
    /// to be recorded) for a customer without entries.
    async fn ledger(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        currency: Currency,
    ) -> Result<CustomerLedger, CollectionsError> {
        Ok(self
            .stored_ledger(tenant, customer)
            .await?
            .unwrap_or_else(|| CustomerLedger::new(customer, currency)))
    }

    /// Records an issued invoice in the customer's ledger (the customer's credit pays what it
    /// can of it at once).
    ///
    /// # Errors
    ///
    /// As [`CustomerLedger::record_invoice`], and storage failures.
    pub async fn record_invoice(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        invoice: InvoiceId,
        total: Money,
        issued: NaiveDate,
        due: NaiveDate,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        let mut ledger = self.ledger(tenant, customer, total.currency()).await?;
        let entries = ledger.record_invoice(invoice, total, issued, due)?;
        self.inner
            .payments
            .append_entries(tenant, customer, &entries)
            .await?;
        Ok(self.wrap(
            tenant,
            entries.into_iter().map(CollectionEvent::Ledger).collect(),
        ))
    }

    /// Records a payment dated today, allocates it, then re-evaluates the customer's invoices
    /// so that a payment settling a suspended invoice restores service in the same call. A
    /// retry (the same payment id and amount) writes nothing and returns no events; see
    /// [`CollectionsService::receive_payment`] for the outcome and idempotency keys.
    ///
    /// # Errors
    ///
    /// As [`CollectionsService::receive_payment`].
    pub async fn record_payment(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        payment: PaymentId,
        amount: Money,
        target: AllocationTarget,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        let request = PaymentRequest::new(customer, payment, amount).target(target);
        Ok(self.receive_payment(tenant, request).await?.1)
    }

    /// Records a payment dated today, as [`CollectionsService::record_payment`], and returns
    /// what it did with the events.
    ///
    /// Retries are answered, not refused: a payment id already in the customer's ledger with
    /// the same amount returns the first outcome, and a request whose idempotency key was
    /// used before with the same request returns the first outcome too; either way nothing is
    /// written and no event is returned.
    ///
    /// # Errors
    ///
    /// As [`CustomerLedger::record_payment`] (nothing is stored then):
    /// [`CollectionsError::DuplicatePayment`] for a payment id recorded with another amount;
    /// [`CollectionsError::IdempotencyKeyReused`] for a key first used with another request;
    /// storage failures.
    pub async fn receive_payment(
        &self,
        tenant: TenantId,
        request: PaymentRequest,
    ) -> Result<(PaymentOutcome, Vec<DomainEvent<CollectionEvent>>), CollectionsError> {
        let PaymentRequest {
            customer,
            payment,
            amount,
            target,
            idempotency_key,
        } = request;
        let keyed = idempotency_key.map(|key| KeyedRequest {
            key,
            request: IdempotentRequest::Payment {
                customer,
                payment,
                amount,
                target,
            },
            at: self.inner.clock.now(),
        });
        if let Some((earlier, keyed)) = self.earlier_record(tenant, keyed.as_ref()).await? {
            return Ok((replayed_payment(&earlier, &keyed.request)?, Vec::new()));
        }
        let mut ledger = self.ledger(tenant, customer, amount.currency()).await?;
        if let Some(first) = ledger.payment_outcome(payment) {
            let same = first
                .entries
                .first()
                .is_some_and(|e| e.kind == LedgerEntryKind::PaymentReceived { payment, amount });
            if !same {
                return Err(CollectionsError::DuplicatePayment(payment));
            }
            return Ok((first, Vec::new()));
        }
        let outcome = ledger.record_payment(payment, amount, self.today(), target)?;
        let result = || IdempotentResult::Payment {
            outcome: outcome.clone(),
        };
        if let Some((earlier, keyed)) = self
            .append_entries(tenant, customer, &outcome.entries, keyed.as_ref(), result)
            .await?
        {
            return Ok((replayed_payment(&earlier, &keyed.request)?, Vec::new()));
        }
        let mut events: Vec<CollectionEvent> = outcome
            .entries
            .iter()
            .cloned()
            .map(CollectionEvent::Ledger)
            .collect();
        events.extend(self.evaluate_ledger(tenant, &ledger).await?);
        Ok((outcome, self.wrap(tenant, events)))
    }

    /// Refunds part or all of a payment, dated today (see [`CustomerLedger::refund`]), and
    /// returns the entries appended with their events. A request whose idempotency key was
    /// used before with the same request returns the first entries and no event, and writes
    /// nothing. Refunds reopen invoices: run [`CollectionsService::evaluate`] for the dunning
    /// that follows.
    ///
    /// # Errors
    ///
    /// As [`CustomerLedger::refund`] (nothing is stored then);
    /// [`CollectionsError::IdempotencyKeyReused`] for a key first used with another request;
    /// storage failures.
    pub async fn refund_payment(
        &self,
        tenant: TenantId,
        request: RefundRequest,
    ) -> Result<(Vec<LedgerEntry>, Vec<DomainEvent<CollectionEvent>>), CollectionsError> {
        let RefundRequest {
            customer,
            payment,
            amount,
            idempotency_key,
        } = request;
        let keyed = idempotency_key.map(|key| KeyedRequest {
            key,
            request: IdempotentRequest::Refund {
                customer,
                payment,
                amount,
            },
            at: self.inner.clock.now(),
        });
        if let Some((earlier, keyed)) = self.earlier_record(tenant, keyed.as_ref()).await? {
            return Ok((replayed_refund(&earlier, &keyed.request)?, Vec::new()));
        }
        let mut ledger = self.ledger(tenant, customer, amount.currency()).await?;
        let entries = ledger.refund(payment, amount, self.today())?;
        let result = || IdempotentResult::Refund {
            entries: entries.clone(),
        };
        if let Some((earlier, keyed)) = self
            .append_entries(tenant, customer, &entries, keyed.as_ref(), result)
            .await?
        {
            return Ok((replayed_refund(&earlier, &keyed.request)?, Vec::new()));
        }
        let events = entries
            .iter()
            .cloned()
            .map(CollectionEvent::Ledger)
            .collect();
        Ok((entries, self.wrap(tenant, events)))
    }

    /// The record of `keyed`'s key, when it was used before: the caller replays it.
    async fn earlier_record<'k>(
        &self,
        tenant: TenantId,
        keyed: Option<&'k KeyedRequest>,
    ) -> Result<Option<(IdempotencyRecord, &'k KeyedRequest)>, CollectionsError> {
        let Some(keyed) = keyed else {
            return Ok(None);
        };
        Ok(self
            .inner
            .payments
            .payment_idempotency_record(tenant, &keyed.key)
            .await?
            .map(|earlier| (earlier, keyed)))
    }

    /// Appends ledger entries, with `keyed`'s record (holding `result`) in the same write when
    /// there is a key. Returns the earlier record when a concurrent retry with the key wrote
    /// first (nothing was appended then): the caller replays it.
    async fn append_entries<'k>(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        keyed: Option<&'k KeyedRequest>,
        result: impl FnOnce() -> IdempotentResult,
    ) -> Result<Option<(IdempotencyRecord, &'k KeyedRequest)>, CollectionsError> {
        let Some(keyed) = keyed else {
            self.inner
                .payments
                .append_entries(tenant, customer, entries)
                .await?;
            return Ok(None);
        };
        let record = keyed.record(result());
        match self
            .inner
            .payments
            .append_entries_keyed(tenant, customer, entries, &record)
            .await?
        {
            KeyedWrite::Written(()) => Ok(None),
            KeyedWrite::Replayed(earlier) => Ok(Some((*earlier, keyed))),
        }
    }

    /// Runs the dunning policy over the customer's invoices for today. Running it twice on
    /// the same day returns nothing the second time.
    ///
    /// # Errors
    ///
    /// Storage failures; [`CollectionsError::WrongCurrency`] when the customer's invoices are
    /// not in the policy's currency (nothing is saved).
    pub async fn evaluate(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        // Without entries there is nothing to collect.
        let Some(ledger) = self.stored_ledger(tenant, customer).await? else {
            return Ok(Vec::new());
        };
        let events = self.evaluate_ledger(tenant, &ledger).await?;
        Ok(self.wrap(tenant, events))
    }

    /// Runs the dunning policy for today over each of `customers`, as
    /// [`CollectionsService::evaluate`] does for one: the daily collections run.
    ///
    /// One customer's bad data never stops the others: a customer whose ledger cannot be
    /// rebuilt from its stored entries (a domain error: entries in two currencies, a balance
    /// that overflows, …) is skipped, nothing is saved for it, and it is listed in
    /// [`CollectionsRunSummary::failures`] with a `collections.evaluation_failed` event; a
    /// run after the entries are fixed evaluates it.
    ///
    /// # Errors
    ///
    /// Storage failures (they stop the run; what was saved before stays saved, and a re-run
    /// fires nothing twice).
    pub async fn evaluate_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<CollectionsRunSummary, CollectionsError> {
        let mut summary = CollectionsRunSummary {
            customers: customers.len(),
            ..CollectionsRunSummary::default()
        };
        for &customer in customers {
            // A ledger in another currency than the policy's is the customer's failure too.
            let loaded = self
                .load_ledger(tenant, customer)
                .await?
                .and_then(|ledger| {
                    if let Some(ledger) = &ledger {
                        self.inner
                            .settings
                            .policy
                            .check_currency(ledger.currency())?;
                    }
                    Ok(ledger)
                });
            match loaded {
                Ok(None) => {}
                Ok(Some(ledger)) => {
                    let fired = self.evaluate_ledger(tenant, &ledger).await?;
                    summary.events.extend(self.wrap(tenant, fired));
                }
                Err(error) => {
                    summary.events.push(DomainEvent::new(
                        tenant,
                        &self.inner.clock,
                        CollectionEvent::EvaluationFailed {
                            customer,
                            error_kind: error.kind().to_owned(),
                            error: error.to_string(),
                        },
                    ));
                    summary
                        .failures
                        .push(CollectionsFailure { customer, error });
                }
            }
        }
        Ok(summary)
    }

    async fn evaluate_ledger(
        &self,
        tenant: TenantId,
        ledger: &CustomerLedger,
    ) -> Result<Vec<CollectionEvent>, CollectionsError> {
        // Checked before any state is saved, so a refused ledger changes nothing.
        self.inner
            .settings
            .policy
            .check_currency(ledger.currency())?;
        let today = self.today();
        let mut fired = Vec::new();
        for balance in ledger.invoices() {
            let invoice = DunningInvoice {
                id: balance.invoice,
                customer: ledger.customer(),
                total: balance.total,
                due: balance.due,
            };
            let mut state = self.inner.dunning.state(tenant, balance.invoice).await?;
            let settlements = ledger.settlements(balance.invoice);
            if evaluate(
                &self.inner.settings.policy,
                &invoice,
                &settlements,
                &mut state,
                today,
                &mut fired,
            )? > 0
            {
                self.inner
                    .dunning
                    .save_state(tenant, balance.invoice, state)
                    .await?;
            }
        }
        Ok(fired.into_iter().map(CollectionEvent::Action).collect())
    }
}
