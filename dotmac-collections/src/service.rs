//! The collections service: payments and refunds recorded (idempotently) in the customer's
//! ledger, and dunning evaluated over it, each step returning its domain events.

use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use dotmac_core::{
    Clock, Currency, CustomerId, DomainEvent, EventPayload, InvoiceId, Money, PaymentId, TenantId,
};
use serde::{Deserialize, Serialize};

use crate::dunning::{
    CollectionAction, DunningInvoice, DunningPolicy, DunningStore, FiredAction, evaluate,
};
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
    /// key with another request is [`CoreError::IdempotencyKeyReused`](dotmac_core::CoreError::IdempotencyKeyReused).
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
    /// key with another request is [`CoreError::IdempotencyKeyReused`](dotmac_core::CoreError::IdempotencyKeyReused).
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
    #[tracing::instrument(name = "dotmac.collections.record_invoice", level = "info", skip_all, fields(tenant = %tenant, entries = tracing::field::Empty, events = tracing::field::Empty))]
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
        tracing::Span::current().record("entries", entries.len());
        Ok(traced(self.wrap(
            tenant,
            entries.into_iter().map(CollectionEvent::Ledger).collect(),
        )))
    }

    /// Records a payment dated today, allocates it, then re-evaluates the customer's invoices
    /// so that a payment settling a suspended invoice restores service in the same call. A
    /// retry (the same payment id and amount) writes nothing and returns no events; see
    /// [`CollectionsService::receive_payment`] for the outcome and idempotency keys.
    ///
    /// # Errors
    ///
    /// As [`CollectionsService::receive_payment`].
    #[tracing::instrument(name = "dotmac.collections.record_payment", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
    pub async fn record_payment(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        payment: PaymentId,
        amount: Money,
        target: AllocationTarget,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        let request = PaymentRequest::new(customer, payment, amount).target(target);
        Ok(traced(self.receive_payment(tenant, request).await?.1))
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
    /// [`CoreError::IdempotencyKeyReused`](dotmac_core::CoreError::IdempotencyKeyReused) for a key first used with another request;
    /// storage failures.
    #[tracing::instrument(name = "dotmac.collections.receive_payment", level = "info", skip_all, fields(tenant = %tenant, entries = tracing::field::Empty, events = tracing::field::Empty))]
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
            let outcome = replayed_payment(&earlier, &keyed.request)?;
            metrics::counter!("dotmac_collections_payments_replayed_total").increment(1);
            return Ok((outcome, Vec::new()));
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
            metrics::counter!("dotmac_collections_payments_replayed_total").increment(1);
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
            let outcome = replayed_payment(&earlier, &keyed.request)?;
            metrics::counter!("dotmac_collections_payments_replayed_total").increment(1);
            return Ok((outcome, Vec::new()));
        }
        metrics::counter!("dotmac_collections_payments_total").increment(1);
        tracing::Span::current().record("entries", outcome.entries.len());
        let mut events: Vec<CollectionEvent> = outcome
            .entries
            .iter()
            .cloned()
            .map(CollectionEvent::Ledger)
            .collect();
        events.extend(self.evaluate_ledger(tenant, &ledger).await?);
        Ok((outcome, traced(self.wrap(tenant, events))))
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
    /// [`CoreError::IdempotencyKeyReused`](dotmac_core::CoreError::IdempotencyKeyReused) for a key first used with another request;
    /// storage failures.
    #[tracing::instrument(name = "dotmac.collections.refund_payment", level = "info", skip_all, fields(tenant = %tenant, entries = tracing::field::Empty, events = tracing::field::Empty))]
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
        metrics::counter!("dotmac_collections_refunds_total").increment(1);
        tracing::Span::current().record("entries", entries.len());
        let events = entries
            .iter()
            .cloned()
            .map(CollectionEvent::Ledger)
            .collect();
        Ok((entries, traced(self.wrap(tenant, events))))
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
    #[tracing::instrument(name = "dotmac.collections.evaluate", level = "info", skip_all, fields(tenant = %tenant, events = tracing::field::Empty))]
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
        Ok(traced(self.wrap(tenant, events)))
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
    #[tracing::instrument(name = "dotmac.collections.evaluate_customers", level = "info", skip_all, fields(tenant = %tenant, customers = tracing::field::Empty, failures = tracing::field::Empty, events = tracing::field::Empty))]
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
        let span = tracing::Span::current();
        span.record("customers", summary.customers);
        span.record("failures", summary.failures.len());
        span.record("events", summary.events.len());
        if !summary.failures.is_empty() {
            metrics::counter!("dotmac_collections_evaluation_failures_total")
                .increment(u64::try_from(summary.failures.len()).unwrap_or(u64::MAX));
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
        count_actions(&fired);
        Ok(fired.into_iter().map(CollectionEvent::Action).collect())
    }
}

/// Records the events returned on the current span (`events`).
fn traced(events: Vec<DomainEvent<CollectionEvent>>) -> Vec<DomainEvent<CollectionEvent>> {
    tracing::Span::current().record("events", events.len());
    events
}

/// Counts fired actions in `dotmac_collections_actions_total`, once per call and action.
/// Literal labels: the metrics macros make a static key, so nothing is allocated.
fn count_actions(fired: &[FiredAction]) {
    let (mut notify, mut late_fee, mut suspend, mut restore, mut write_off) = (0u64, 0, 0, 0, 0);
    for action in fired {
        let n = match action.action {
            CollectionAction::Notify => &mut notify,
            CollectionAction::LateFee => &mut late_fee,
            CollectionAction::Suspend => &mut suspend,
            CollectionAction::Restore => &mut restore,
            CollectionAction::WriteOff => &mut write_off,
        };
        // Actions of one customer's invoices: cannot reach u64::MAX.
        *n = n.saturating_add(1);
    }
    if notify > 0 {
        metrics::counter!("dotmac_collections_actions_total", "action" => "notify")
            .increment(notify);
    }
    if late_fee > 0 {
        metrics::counter!("dotmac_collections_actions_total", "action" => "late_fee")
            .increment(late_fee);
    }
    if suspend > 0 {
        metrics::counter!("dotmac_collections_actions_total", "action" => "suspend")
            .increment(suspend);
    }
    if restore > 0 {
        metrics::counter!("dotmac_collections_actions_total", "action" => "restore")
            .increment(restore);
    }
    if write_off > 0 {
        metrics::counter!("dotmac_collections_actions_total", "action" => "write_off")
            .increment(write_off);
    }
}

/// The spans and metrics of [`CollectionsService`] and the in-memory stores, with a counting
/// `metrics` recorder and a minimal `tracing` subscriber (as in `dotmac-support`): no exporter
/// or `tracing-subscriber` as dev-dependencies.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// The two tests run one at a time: `tracing` caches each callsite's interest per process,
    /// and the counters test, run with no subscriber while the spans test runs, could leave a
    /// shared callsite cached as uninteresting.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    use chrono::{TimeZone, Utc, Weekday};
    use dotmac_core::ManualClock;
    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use rust_decimal::Decimal;

    use super::*;
    use crate::dunning::{InMemoryDunningStore, RestoreOnPayment};
    use crate::payments::InMemoryPaymentStore;

    /// Counts increments per `name{label=value,…}`.
    #[derive(Default)]
    struct Counting(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

    impl Counting {
        /// Every counter that moved, as `name{labels}=value`.
        fn moved(&self) -> Vec<String> {
            let counters = self.0.lock().unwrap();
            counters
                .iter()
                .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        }
    }

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut counters = self.0.lock().unwrap();
            Counter::from_arc(Arc::clone(counters.entry(name).or_default()))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// Span names and their fields, with the enter stack so that `Span::current()` works.
    #[derive(Default)]
    struct Spans {
        spans: Mutex<Vec<(&'static tracing::Metadata<'static>, String)>>,
        stack: Mutex<Vec<u64>>,
    }

    struct Fields<'a>(&'a mut String);

    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={:?}", field.name(), value));
        }
    }

    impl tracing::Subscriber for Spans {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let mut fields = String::new();
            span.record(&mut Fields(&mut fields));
            let mut spans = self.spans.lock().unwrap();
            spans.push((span.metadata(), fields));
            tracing::span::Id::from_u64(spans.len() as u64)
        }
        fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
            let mut spans = self.spans.lock().unwrap();
            let slot = &mut spans[span.into_u64() as usize - 1];
            values.record(&mut Fields(&mut slot.1));
        }
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, span: &tracing::span::Id) {
            self.stack.lock().unwrap().push(span.into_u64());
        }
        fn exit(&self, _: &tracing::span::Id) {
            self.stack.lock().unwrap().pop();
        }
        fn current_span(&self) -> tracing_core::span::Current {
            let stack = self.stack.lock().unwrap();
            match stack.last() {
                Some(&id) => {
                    let metadata = self.spans.lock().unwrap()[id as usize - 1].0;
                    tracing_core::span::Current::new(tracing::span::Id::from_u64(id), metadata)
                }
                None => tracing_core::span::Current::none(),
            }
        }
    }

    const TENANT: TenantId = TenantId::from_u128(1);

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::USD)
    }

    fn day(m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }

    fn policy() -> DunningPolicy {
        DunningPolicy::builder(Currency::USD)
            .step(-3, "reminder")
            .step(1, "overdue_notice")
            .late_fee(
                3,
                "late_fee",
                Money::new(Decimal::new(500, 2), Currency::USD),
            )
            .step(5, "suspend")
            .step(75, "write_off")
            .grace_days(2)
            .no_suspension_on(Weekday::Sat)
            .no_suspension_on(Weekday::Sun)
            .restore_on_payment(RestoreOnPayment::Restore {
                reconnection_fee: None,
            })
            .build()
            .unwrap()
    }

    type Service<'c> =
        CollectionsService<InMemoryPaymentStore, InMemoryDunningStore, &'c ManualClock>;

    fn service(clock: &ManualClock) -> Service<'_> {
        CollectionsService::new(
            InMemoryPaymentStore::new(),
            InMemoryDunningStore::new(),
            clock,
            CollectionsSettings::new(policy()),
        )
    }

    #[test]
    fn payments_refunds_and_dunning_move_their_counters_once_each() {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let recorder = Counting::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (alice, bob, carol) = (
            CustomerId::from_u128(2),
            CustomerId::from_u128(3),
            CustomerId::from_u128(4),
        );
        // The local recorder is per thread: the current-thread runtime polls on this one.
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
                let service = service(&clock);
                for (n, customer) in (1u128..).zip([alice, bob, carol]) {
                    let invoice = InvoiceId::from_u128(n);
                    service
                        .record_invoice(TENANT, customer, invoice, usd(5000), day(3, 1), day(3, 13))
                        .await
                        .unwrap();
                }
                // Friday 20 March: reminder, overdue notice, late fee, suspension.
                clock.set(Utc.with_ymd_and_hms(2026, 3, 20, 9, 0, 0).unwrap());
                let fired = service.evaluate(TENANT, alice).await.unwrap();
                assert_eq!(fired.len(), 4);
                // Paid: restored; the same payment again is a replay.
                let paid = |payment| {
                    service.record_payment(
                        TENANT,
                        alice,
                        PaymentId::from_u128(payment),
                        usd(5000),
                        AllocationTarget::OldestFirst,
                    )
                };
                assert_eq!(paid(1).await.unwrap().len(), 3);
                assert!(paid(1).await.unwrap().is_empty());
                // A keyed payment, and its retry.
                let key = IdempotencyKey::new("pay-2").unwrap();
                let keyed = PaymentRequest::new(alice, PaymentId::from_u128(2), usd(100))
                    .idempotency_key(key);
                service
                    .receive_payment(TENANT, keyed.clone())
                    .await
                    .unwrap();
                let (_, again) = service.receive_payment(TENANT, keyed).await.unwrap();
                assert!(again.is_empty());
                let refund = RefundRequest::new(alice, PaymentId::from_u128(2), usd(100));
                service.refund_payment(TENANT, refund).await.unwrap();
                // Bob's ledger gets a payment in another currency: his evaluation fails.
                let stray = LedgerEntry {
                    sequence: 100,
                    customer: bob,
                    on: day(3, 2),
                    kind: LedgerEntryKind::PaymentReceived {
                        payment: PaymentId::from_u128(9),
                        amount: Money::from_minor(5000, Currency::EUR),
                    },
                };
                service
                    .payment_store()
                    .append_entries(TENANT, bob, &[stray])
                    .await
                    .unwrap();
                // June 30th: Carol's invoice runs through every step, to the write-off.
                clock.set(Utc.with_ymd_and_hms(2026, 6, 30, 9, 0, 0).unwrap());
                let run = service
                    .evaluate_customers(TENANT, &[bob, carol])
                    .await
                    .unwrap();
                assert_eq!((run.customers, run.failures.len()), (2, 1));
            });
        });
        assert_eq!(
            recorder.moved(),
            [
                "dotmac_collections_actions_total{action=late_fee}=2",
                "dotmac_collections_actions_total{action=notify}=4",
                "dotmac_collections_actions_total{action=restore}=1",
                "dotmac_collections_actions_total{action=suspend}=2",
                "dotmac_collections_actions_total{action=write_off}=1",
                "dotmac_collections_evaluation_failures_total{}=1",
                "dotmac_collections_payments_replayed_total{}=2",
                "dotmac_collections_payments_total{}=2",
                "dotmac_collections_refunds_total{}=1",
            ]
        );
    }

    #[test]
    fn operations_and_store_calls_open_spans_without_amounts() {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let spans = Arc::new(Spans::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let customer = CustomerId::from_u128(2);
        let dispatch = tracing::Dispatch::from(Arc::clone(&spans));
        tracing::dispatcher::with_default(&dispatch, || {
            // Other tests of this binary may have cached a callsite's interest as "never"
            // while no subscriber was set: recompute it now that this one is.
            tracing::callsite::rebuild_interest_cache();
            runtime.block_on(async {
                let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
                let service = service(&clock);
                let invoice = InvoiceId::from_u128(1);
                service
                    .record_invoice(TENANT, customer, invoice, usd(4321), day(3, 1), day(3, 13))
                    .await
                    .unwrap();
                clock.set(Utc.with_ymd_and_hms(2026, 3, 20, 9, 0, 0).unwrap());
                service
                    .evaluate_customers(TENANT, &[customer])
                    .await
                    .unwrap();
                let request = PaymentRequest::new(customer, PaymentId::from_u128(1), usd(4321));
                service.receive_payment(TENANT, request).await.unwrap();
            });
        });
        let spans = spans.spans.lock().unwrap();
        let line = |name: &str| {
            spans
                .iter()
                .find(|(m, _)| m.name() == name)
                .map(|(m, fields)| format!("{:?}{fields}", m.level()))
                .unwrap()
        };
        let tenant = format!("tenant={TENANT}");
        assert_eq!(
            line("dotmac.collections.record_invoice"),
            format!("Level(Info) {tenant} entries=1 events=1")
        );
        assert_eq!(
            line("dotmac.collections.evaluate_customers"),
            format!("Level(Info) {tenant} customers=1 failures=0 events=4")
        );
        // The payment, its allocation to the invoice, and the restore of the suspension.
        assert_eq!(
            line("dotmac.collections.receive_payment"),
            format!("Level(Info) {tenant} entries=2 events=3")
        );
        assert_eq!(
            line("dotmac.store.append_ledger"),
            format!("Level(Debug) backend=\"memory\" {tenant} entries=1")
        );
        assert_eq!(
            line("dotmac.store.ledger_entries"),
            format!("Level(Debug) backend=\"memory\" {tenant}")
        );
        assert_eq!(
            line("dotmac.store.dunning_state"),
            format!("Level(Debug) backend=\"memory\" {tenant}")
        );
        assert_eq!(
            line("dotmac.store.save_dunning_state"),
            format!("Level(Debug) backend=\"memory\" {tenant}")
        );
        // No amount of the customer's, no customer id.
        let customer = customer.to_string();
        assert!(
            spans
                .iter()
                .all(|(_, f)| !f.contains("43") && !f.contains("USD") && !f.contains(&customer))
        );
    }
}
