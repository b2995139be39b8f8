//! The collections service: invoices, credit notes, voids, write-offs, payments and refunds
//! entered (idempotently) in the customer's ledger, and dunning evaluated over it. Every step
//! is one store write that also writes its events to the outbox; the events are returned too.

use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use dotmac_core::outbox::{Aggregate, OutboxEvent, OutboxPayload};
use dotmac_core::{
    Clock, CreditNoteId, Currency, CustomerId, DomainEvent, EventId, EventPayload, IdDigest,
    InvoiceId, Money, PaymentId, TenantId,
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
    AllocationTarget, BalanceState, CreditSettlement, CustomerLedger, InvoiceBalance, LedgerEntry,
    LedgerEntryKind, PaymentOutcome, PaymentStore,
};

/// How many times a step re-reads the ledger and tries again when another writer appended to
/// it first.
const APPEND_ATTEMPTS: usize = 5;

/// What the collections service reports: ledger movements, invoice balances and collection
/// actions. Serialized with its kind in `type` (`{"type": "invoice_balance_changed", …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum CollectionEvent {
    /// An entry appended to a customer's ledger (`payments.*`).
    Ledger(LedgerEntry),
    /// An invoice's balance or state changed (`collections.invoice_balance_changed`).
    InvoiceBalanceChanged(InvoiceBalanceChanged),
    /// Customer credit paid (part of) a newly entered invoice (`collections.credit_applied`).
    CreditApplied(CreditApplied),
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

impl CollectionEvent {
    /// The customer the event is about.
    pub fn customer(&self) -> CustomerId {
        match self {
            CollectionEvent::Ledger(entry) => entry.customer,
            CollectionEvent::InvoiceBalanceChanged(changed) => changed.customer,
            CollectionEvent::CreditApplied(applied) => applied.customer,
            CollectionEvent::Action(action) => action.customer,
            CollectionEvent::EvaluationFailed { customer, .. } => *customer,
        }
    }
}

impl EventPayload for CollectionEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CollectionEvent::Ledger(entry) => entry.event_type(),
            CollectionEvent::InvoiceBalanceChanged(_) => "collections.invoice_balance_changed",
            CollectionEvent::CreditApplied(_) => "collections.credit_applied",
            CollectionEvent::Action(action) => action.event_type(),
            CollectionEvent::EvaluationFailed { .. } => "collections.evaluation_failed",
        }
    }
}

/// Every collections event is about its customer: handled in order per customer.
impl OutboxPayload for CollectionEvent {
    fn aggregate(&self) -> Aggregate {
        Aggregate::customer(self.customer())
    }
}

/// An invoice's balance after a ledger step: `open = total − settled − credited −
/// written_off − voided`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InvoiceBalanceChanged {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Its customer.
    pub customer: CustomerId,
    /// Its total.
    pub total: Money,
    /// Allocations (payments and customer credit applied, net of reversals); for an invoice
    /// with a negative total, the total (it settled into customer credit).
    pub settled: Money,
    /// Its credit notes.
    pub credited: Money,
    /// What is written off now.
    pub written_off: Money,
    /// What a void took out of what is owed (zero unless `state` is `void`).
    pub voided: Money,
    /// What is still owed.
    pub open: Money,
    /// Where it stands.
    pub state: BalanceState,
    /// The ledger position the report is as of: the [`LedgerEntry::sequence`] of the last
    /// entry of the step that moved the invoice. Reports of one invoice carry increasing
    /// positions; events are delivered at least once, so a reader that applied a report
    /// ignores any older one that comes again after it. (Events written before the field
    /// existed read as 0.)
    #[serde(default)]
    pub ledger_sequence: u64,
}

impl InvoiceBalanceChanged {
    /// The event for `balance`, an invoice of `customer`, as of the ledger's position
    /// `ledger_sequence`.
    pub fn of(customer: CustomerId, balance: &InvoiceBalance, ledger_sequence: u64) -> Self {
        InvoiceBalanceChanged {
            invoice: balance.invoice,
            customer,
            total: balance.total,
            settled: balance.paid,
            credited: balance.credited,
            written_off: balance.written_off,
            voided: balance
                .voided
                .unwrap_or_else(|| Money::zero(balance.total.currency())),
            open: balance.open(),
            state: balance.state(),
            ledger_sequence,
        }
    }
}

/// Customer credit applied to a newly entered invoice: the invoice shows it as a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreditApplied {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Its customer.
    pub customer: CustomerId,
    /// The credit applied.
    pub amount: Money,
    /// The day (the invoice's issue date).
    pub on: NaiveDate,
}

/// What a collections run over many customers did
/// ([`CollectionsService::evaluate_customers`]).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
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

/// An issued invoice to enter in its customer's ledger, for
/// [`CollectionsService::enter_invoice`] (what `billing.invoice_issued` carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceToEnter {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Its customer.
    pub customer: CustomerId,
    /// Its total; negative for a credit owed to the customer.
    pub total: Money,
    /// Its issue date.
    pub issued: NaiveDate,
    /// Its due date.
    pub due: NaiveDate,
}

/// An issued credit note to enter, for [`CollectionsService::enter_credit_note`] (what
/// `billing.credit_note_issued` carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteToEnter {
    /// The credit note.
    pub credit_note: CreditNoteId,
    /// The invoice it credits.
    pub invoice: InvoiceId,
    /// The invoice's customer.
    pub customer: CustomerId,
    /// Its amount (above zero).
    pub amount: Money,
    /// Its issue date: the day the ledger entries take effect.
    pub issued: NaiveDate,
    /// What happens to the part of the note the invoice no longer owes.
    pub settlement: CreditSettlement,
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

/// What one ledger step decided, from the ledger as read.
enum Step<T> {
    /// The fact is in the ledger already: nothing to write.
    Already(T),
    /// Entries to append (and events besides the ledger's own).
    Append {
        value: T,
        entries: Vec<LedgerEntry>,
        extra: Vec<CollectionEvent>,
    },
}

/// What a ledger step did.
enum Stepped<T> {
    /// Nothing was written: the fact was there already.
    Already(T),
    /// The entries and events were written; `ledger` is the ledger after them.
    Written {
        value: T,
        ledger: CustomerLedger,
        events: Vec<DomainEvent<CollectionEvent>>,
    },
    /// A concurrent retry with the key wrote first (nothing was written): replay it.
    Replayed(Box<IdempotencyRecord>),
}

/// A keyed step's key and how to record what it did.
type Keyed<'k, T> = (
    &'k KeyedRequest,
    &'k (dyn Fn(&T) -> IdempotentResult + Sync),
);

/// True for the refusal of an append whose ledger was stale (another writer appended first).
fn is_stale(error: &CollectionsError) -> bool {
    matches!(
        error,
        CollectionsError::AlreadyExists {
            what: "ledger entry",
            ..
        }
    )
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

/// Payments and collections for a tenant: enters invoices, credit notes, voids, write-offs,
/// payments and refunds in the customer's ledger, runs the dunning policy over a customer's
/// invoices and returns what happened as domain events. Today is the clock's date in the
/// tenant's time zone.
///
/// Every method that changes state is one atomic store write (per ledger step, and per
/// invoice whose dunning state moved) that writes its events to the outbox too; the same
/// events are returned. Entering the same fact twice (an invoice, a credit note, a void, a
/// write-off, a payment id) writes nothing and returns no event. A step whose ledger another
/// writer appended to first is re-read and tried again (a few times).
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

    /// The dunning store.
    pub fn dunning_store(&self) -> &D {
        &self.inner.dunning
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
    ///
    /// # Errors
    ///
    /// Storage failures, and the errors of [`CustomerLedger::from_entries`] for stored
    /// entries that do not make a ledger.
    pub async fn customer_ledger(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Option<CustomerLedger>, CollectionsError> {
        self.load_ledger(tenant, customer).await?
    }

    /// [`Self::customer_ledger`] with its two kinds of error apart: the outer one a store
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
            .customer_ledger(tenant, customer)
            .await?
            .unwrap_or_else(|| CustomerLedger::new(customer, currency)))
    }

    /// The events of a ledger step: one per entry, then `extra`, then an
    /// `invoice_balance_changed` for each invoice the entries moved. Their ids are derived
    /// from the tenant, the customer and the entries' positions, which the store writes once.
    fn ledger_events(
        &self,
        tenant: TenantId,
        before: &[InvoiceBalance],
        after: &CustomerLedger,
        entries: &[LedgerEntry],
        extra: Vec<CollectionEvent>,
    ) -> Vec<DomainEvent<CollectionEvent>> {
        let customer = after.customer();
        let as_of = entries.last().map_or(0, |e| e.sequence);
        let mut touched: Vec<InvoiceId> = Vec::new();
        for invoice in entries.iter().filter_map(|e| e.kind.invoice()) {
            if !touched.contains(&invoice) {
                touched.push(invoice);
            }
        }
        let changed = touched.into_iter().filter_map(|invoice| {
            let now = after.invoice(invoice)?;
            let was = before.iter().find(|b| b.invoice == invoice);
            (was != Some(&now)).then(|| {
                CollectionEvent::InvoiceBalanceChanged(InvoiceBalanceChanged::of(
                    customer, &now, as_of,
                ))
            })
        });
        let payloads: Vec<CollectionEvent> = entries
            .iter()
            .cloned()
            .map(CollectionEvent::Ledger)
            .chain(extra)
            .chain(changed)
            .collect();
        let first = entries.first().map_or(0, |e| e.sequence);
        let at = self.inner.clock.now();
        (0u64..)
            .zip(payloads)
            .map(|(n, payload)| {
                let id = EventId::derived(
                    IdDigest::new("dotmac-collections.ledger-event")
                        .uuid(tenant.as_uuid())
                        .uuid(customer.as_uuid())
                        .u64(first)
                        .u64(n),
                );
                DomainEvent::at(id, tenant, at, payload)
            })
            .collect()
    }

    /// One optimistic step on a customer's ledger: reads it, lets `step` decide (from the
    /// ledger as read) what to append, and writes the entries with their events (and the
    /// key's record) in one store write. A stale read (another writer appended first) is read
    /// again and `step` runs again, up to [`APPEND_ATTEMPTS`] times.
    async fn ledger_step<T>(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        currency: Currency,
        keyed: Option<Keyed<'_, T>>,
        mut step: impl FnMut(&mut CustomerLedger) -> Result<Step<T>, CollectionsError>,
    ) -> Result<Stepped<T>, CollectionsError> {
        let mut attempt = 1;
        loop {
            let mut ledger = self.ledger(tenant, customer, currency).await?;
            let before = ledger.invoices().to_vec();
            let (value, entries, extra) = match step(&mut ledger)? {
                Step::Already(value) => return Ok(Stepped::Already(value)),
                Step::Append {
                    value,
                    entries,
                    extra,
                } => (value, entries, extra),
            };
            let events = self.ledger_events(tenant, &before, &ledger, &entries, extra);
            let outbox: Vec<OutboxEvent> = events.iter().cloned().map(OutboxEvent::new).collect();
            let written = match keyed {
                None => self
                    .inner
                    .payments
                    .append_entries(tenant, customer, &entries, &outbox)
                    .await
                    .map(|()| None),
                Some((keyed, result)) => {
                    let record = keyed.record(result(&value));
                    self.inner
                        .payments
                        .append_entries_keyed(tenant, customer, &entries, &outbox, &record)
                        .await
                        .map(|written| match written {
                            KeyedWrite::Written(()) => None,
                            KeyedWrite::Replayed(earlier) => Some(earlier),
                        })
                }
            };
            match written {
                Ok(None) => {
                    tracing::Span::current().record("entries", entries.len());
                    return Ok(Stepped::Written {
                        value,
                        ledger,
                        events,
                    });
                }
                Ok(Some(earlier)) => return Ok(Stepped::Replayed(earlier)),
                Err(error) if is_stale(&error) && attempt < APPEND_ATTEMPTS => {
                    metrics::counter!("dotmac_collections_append_retries_total").increment(1);
                    attempt = attempt.saturating_add(1);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Enters an issued invoice in its customer's ledger: the customer's credit pays what it
    /// can of it at once (`collections.credit_applied`); a total of zero is paid; a negative
    /// total (a credit owed) becomes customer credit. The same invoice entered again (same
    /// total and dates) writes nothing and returns no event.
    ///
    /// # Errors
    ///
    /// As [`CustomerLedger::record_invoice`] ([`CollectionsError::DuplicateInvoice`] for the
    /// invoice entered before with other figures), and storage failures; nothing is stored
    /// then.
    #[tracing::instrument(name = "dotmac.collections.enter_invoice", level = "info", skip_all, fields(tenant = %tenant, entries = tracing::field::Empty, events = tracing::field::Empty))]
    pub async fn enter_invoice(
        &self,
        tenant: TenantId,
        invoice: InvoiceToEnter,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        let InvoiceToEnter {
            invoice,
            customer,
            total,
            issued,
            due,
        } = invoice;
        let stepped = self
            .ledger_step(tenant, customer, total.currency(), None, |ledger| {
                if let Some(known) = ledger.invoice(invoice) {
                    return if known.total == total && known.issued == issued && known.due == due {
                        Ok(Step::Already(()))
                    } else {
                        Err(CollectionsError::DuplicateInvoice(invoice))
                    };
                }
                let entries = ledger.record_invoice(invoice, total, issued, due)?;
                let applied = Money::sum(
                    total.currency(),
                    entries.iter().filter_map(|e| match &e.kind {
                        LedgerEntryKind::Allocated { amount, .. } => Some(*amount),
                        _ => None,
                    }),
                )?;
                let extra = if applied.is_positive() {
                    vec![CollectionEvent::CreditApplied(CreditApplied {
                        invoice,
                        customer,
                        amount: applied,
                        on: issued,
                    })]
                } else {
                    Vec::new()
                };
                Ok(Step::Append {
                    value: (),
                    entries,
                    extra,
                })
            })
            .await?;
        Ok(traced(match stepped {
            Stepped::Written { events, .. } => events,
            Stepped::Already(()) | Stepped::Replayed(_) => Vec::new(),
        }))
    }

    /// Enters an issued credit note (see [`CustomerLedger::credit_note`]), dated on its issue
    /// date, then re-evaluates the customer's invoices (a note that settles a suspended
    /// invoice restores service in the same call). The same credit note entered again writes
    /// nothing and returns no event.
    ///
    /// # Errors
    ///
    /// As [`CustomerLedger::credit_note`] ([`CollectionsError::DuplicateCreditNote`] for the
    /// note entered before with other figures), and storage failures; nothing is stored then.
    #[tracing::instrument(name = "dotmac.collections.enter_credit_note", level = "info", skip_all, fields(tenant = %tenant, entries = tracing::field::Empty, events = tracing::field::Empty))]
    pub async fn enter_credit_note(
        &self,
        tenant: TenantId,
        note: CreditNoteToEnter,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        let CreditNoteToEnter {
            credit_note,
            invoice,
            customer,
            amount,
            issued,
            settlement,
        } = note;
        let stepped = self
            .ledger_step(tenant, customer, amount.currency(), None, |ledger| {
                if ledger.has_credit_note(credit_note) {
                    let same = ledger.entries().iter().any(|e| {
                        e.kind
                            == LedgerEntryKind::CreditNoted {
                                invoice,
                                credit_note,
                                amount,
                                settlement,
                            }
                    });
                    return if same {
                        Ok(Step::Already(()))
                    } else {
                        Err(CollectionsError::DuplicateCreditNote(credit_note))
                    };
                }
                let entries =
                    ledger.credit_note(credit_note, invoice, amount, issued, settlement)?;
                Ok(Step::Append {
                    value: (),
                    entries,
                    extra: Vec::new(),
                })
            })
            .await?;
        self.after_step(tenant, stepped).await
    }

    /// Voids `invoice` in `customer`'s ledger on `on` (see [`CustomerLedger::void`]): it is no
    /// longer owed, what was paid of it becomes customer credit, and a suspension for it is
    /// restored (without a reconnection fee). An invoice already void writes nothing and
    /// returns no event.
    ///
    /// # Errors
    ///
    /// As [`CustomerLedger::void`], and storage failures; nothing is stored then.
    #[tracing::instrument(name = "dotmac.collections.void_invoice", level = "info", skip_all, fields(tenant = %tenant, entries = tracing::field::Empty, events = tracing::field::Empty))]
    pub async fn void_invoice(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        invoice: InvoiceId,
        on: NaiveDate,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        let currency = self.inner.settings.policy.currency();
        let stepped = self
            .ledger_step(tenant, customer, currency, None, |ledger| {
                if ledger.invoice(invoice).is_some_and(|b| b.voided.is_some()) {
                    return Ok(Step::Already(()));
                }
                Ok(Step::Append {
                    value: (),
                    entries: ledger.void(invoice, on)?,
                    extra: Vec::new(),
                })
            })
            .await?;
        self.after_step(tenant, stepped).await
    }

    /// Writes off what `invoice` still owes on `on` (see [`CustomerLedger::write_off`]):
    /// dunning and ageing no longer see it; a payment named to the invoice can still pay it.
    /// An invoice with nothing open (written off already, paid or credited in full) writes
    /// nothing and returns no event.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::UnknownInvoice`], [`CollectionsError::InvoiceVoided`], and storage
    /// failures; nothing is stored then.
    #[tracing::instrument(name = "dotmac.collections.write_off_invoice", level = "info", skip_all, fields(tenant = %tenant, entries = tracing::field::Empty, events = tracing::field::Empty))]
    pub async fn write_off_invoice(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        invoice: InvoiceId,
        on: NaiveDate,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        let currency = self.inner.settings.policy.currency();
        let stepped = self
            .ledger_step(tenant, customer, currency, None, |ledger| {
                if ledger
                    .invoice(invoice)
                    .is_some_and(|b| b.voided.is_none() && !b.open().is_positive())
                {
                    return Ok(Step::Already(()));
                }
                Ok(Step::Append {
                    value: (),
                    entries: ledger.write_off(invoice, on)?,
                    extra: Vec::new(),
                })
            })
            .await?;
        Ok(traced(match stepped {
            Stepped::Written { events, .. } => events,
            Stepped::Already(()) | Stepped::Replayed(_) => Vec::new(),
        }))
    }

    /// The events of a written step, with those of the dunning evaluation that follows it.
    async fn after_step(
        &self,
        tenant: TenantId,
        stepped: Stepped<()>,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        let Stepped::Written {
            ledger, mut events, ..
        } = stepped
        else {
            return Ok(traced(Vec::new()));
        };
        events.extend(self.evaluate_ledger(tenant, &ledger).await?);
        Ok(traced(events))
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
        let today = self.today();
        let result = |outcome: &PaymentOutcome| IdempotentResult::Payment {
            outcome: outcome.clone(),
        };
        let stepped = self
            .ledger_step(
                tenant,
                customer,
                amount.currency(),
                keyed
                    .as_ref()
                    .map(|k| (k, &result as &(dyn Fn(&PaymentOutcome) -> _ + Sync))),
                |ledger| {
                    if let Some(first) = ledger.payment_outcome(payment) {
                        let same = first.entries.first().is_some_and(|e| {
                            e.kind == LedgerEntryKind::PaymentReceived { payment, amount }
                        });
                        return if same {
                            Ok(Step::Already(first))
                        } else {
                            Err(CollectionsError::DuplicatePayment(payment))
                        };
                    }
                    let outcome = ledger.record_payment(payment, amount, today, target)?;
                    Ok(Step::Append {
                        entries: outcome.entries.clone(),
                        value: outcome,
                        extra: Vec::new(),
                    })
                },
            )
            .await?;
        match stepped {
            Stepped::Already(first) => {
                metrics::counter!("dotmac_collections_payments_replayed_total").increment(1);
                Ok((first, Vec::new()))
            }
            Stepped::Replayed(earlier) => {
                let request = keyed
                    .as_ref()
                    .map(|k| &k.request)
                    .ok_or_else(crate::idempotency::mismatched)?;
                let outcome = replayed_payment(&earlier, request)?;
                metrics::counter!("dotmac_collections_payments_replayed_total").increment(1);
                Ok((outcome, Vec::new()))
            }
            Stepped::Written {
                value,
                ledger,
                mut events,
            } => {
                metrics::counter!("dotmac_collections_payments_total").increment(1);
                events.extend(self.evaluate_ledger(tenant, &ledger).await?);
                Ok((value, traced(events)))
            }
        }
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
        let today = self.today();
        let result = |entries: &Vec<LedgerEntry>| IdempotentResult::Refund {
            entries: entries.clone(),
        };
        let stepped = self
            .ledger_step(
                tenant,
                customer,
                amount.currency(),
                keyed
                    .as_ref()
                    .map(|k| (k, &result as &(dyn Fn(&Vec<LedgerEntry>) -> _ + Sync))),
                |ledger| {
                    let entries = ledger.refund(payment, amount, today)?;
                    Ok(Step::Append {
                        value: entries.clone(),
                        entries,
                        extra: Vec::new(),
                    })
                },
            )
            .await?;
        match stepped {
            Stepped::Written { value, events, .. } => {
                metrics::counter!("dotmac_collections_refunds_total").increment(1);
                Ok((value, traced(events)))
            }
            Stepped::Replayed(earlier) => {
                let request = keyed
                    .as_ref()
                    .map(|k| &k.request)
                    .ok_or_else(crate::idempotency::mismatched)?;
                Ok((replayed_refund(&earlier, request)?, Vec::new()))
            }
            Stepped::Already(entries) => Ok((entries, Vec::new())),
        }
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

    /// Whether dunning holds the customer suspended now: a suspension step of the policy fired
    /// on one of its invoices and no restore followed it (see
    /// [`DunningState::is_suspended`](crate::DunningState::is_suspended)). A void invoice's
    /// suspension is restored when it is voided; a written-off invoice is not chased, so one
    /// suspended before its write-off holds the customer suspended until it is paid or voided.
    ///
    /// The suspension state that billing's subscriptions should have: the order-to-cash
    /// reactions suspend or restore to it, so a suspension or restore event delivered again
    /// late (after newer ones) changes nothing.
    ///
    /// # Errors
    ///
    /// Storage failures, and the errors of [`CustomerLedger::from_entries`] for stored entries
    /// that do not make a ledger.
    pub async fn holds_suspended(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<bool, CollectionsError> {
        let Some(ledger) = self.customer_ledger(tenant, customer).await? else {
            return Ok(false);
        };
        let policy = &self.inner.settings.policy;
        for balance in ledger.invoices() {
            let state = self.inner.dunning.state(tenant, balance.invoice).await?;
            if state.is_suspended(policy) {
                return Ok(true);
            }
        }
        Ok(false)
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
        let Some(ledger) = self.customer_ledger(tenant, customer).await? else {
            return Ok(Vec::new());
        };
        let events = self.evaluate_ledger(tenant, &ledger).await?;
        Ok(traced(events))
    }

    /// Runs the dunning policy for today over each of `customers`, as
    /// [`CollectionsService::evaluate`] does for one: the daily collections run.
    ///
    /// One customer's bad data never stops the others: a customer whose ledger cannot be
    /// rebuilt from its stored entries (a domain error: entries in two currencies, a balance
    /// that overflows, …) is skipped, nothing is saved for it, and it is listed in
    /// [`CollectionsRunSummary::failures`] with a `collections.evaluation_failed` event (not
    /// written to the outbox: it changes nothing); a run after the entries are fixed
    /// evaluates it.
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
                    summary.events.extend(fired);
                }
                Err(error) => {
                    summary.events.extend(self.wrap(
                        tenant,
                        vec![CollectionEvent::EvaluationFailed {
                            customer,
                            error_kind: error.kind().to_owned(),
                            error: error.to_string(),
                        }],
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

    /// Evaluates each invoice of `ledger` that dunning chases, saving each moved state with
    /// the events of its actions. Not chased: invoices with nothing to collect (a total of
    /// zero or less) and invoices written off; a void invoice only has its suspension
    /// restored (without a reconnection fee).
    async fn evaluate_ledger(
        &self,
        tenant: TenantId,
        ledger: &CustomerLedger,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, CollectionsError> {
        let policy = &self.inner.settings.policy;
        // Checked before any state is saved, so a refused ledger changes nothing.
        policy.check_currency(ledger.currency())?;
        let today = self.today();
        let mut events = Vec::new();
        let mut all = Vec::new();
        for balance in ledger.invoices() {
            if !balance.total.is_positive() || balance.written_off.is_positive() {
                continue;
            }
            let mut state = self.inner.dunning.state(tenant, balance.invoice).await?;
            let void = balance.voided.is_some();
            if void && !state.is_suspended(policy) {
                continue;
            }
            let invoice = DunningInvoice {
                id: balance.invoice,
                customer: ledger.customer(),
                total: balance.total,
                due: balance.due,
            };
            let settlements = ledger.settlements(balance.invoice);
            let mut fired = Vec::new();
            if evaluate(
                policy,
                &invoice,
                &settlements,
                &mut state,
                today,
                &mut fired,
            )? == 0
            {
                continue;
            }
            if void {
                // The debt never was: no notice, fee or suspension for it, and a restore
                // without a reconnection fee.
                fired.retain(|a| a.action == CollectionAction::Restore);
                for action in &mut fired {
                    action.fee = None;
                }
            }
            let at = self.inner.clock.now();
            let fired_events: Vec<DomainEvent<CollectionEvent>> = fired
                .iter()
                .map(|action| {
                    let id = EventId::derived(
                        IdDigest::new("dotmac-collections.action")
                            .uuid(tenant.as_uuid())
                            .uuid(action.invoice.as_uuid())
                            .u64(u64::from(action.step))
                            .str(action.action.event_type()),
                    );
                    DomainEvent::at(id, tenant, at, CollectionEvent::Action(*action))
                })
                .collect();
            let outbox: Vec<OutboxEvent> =
                fired_events.iter().cloned().map(OutboxEvent::new).collect();
            self.inner
                .dunning
                .save_state(tenant, balance.invoice, state, &outbox)
                .await?;
            events.extend(fired_events);
            all.extend(fired);
        }
        count_actions(&all);
        Ok(events)
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
/// `metrics` recorder (no exporter as a dev-dependency) and `dotmac_core`'s span recorder.
#[cfg(test)]
mod tests {

    use std::sync::Mutex;

    use dotmac_core::span_recorder::record_spans;

    /// The two tests run one at a time: each counts what a whole scenario moved, and the
    /// spans test runs its scenario twice.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    use chrono::{TimeZone, Utc, Weekday};
    use dotmac_core::ManualClock;

    use rust_decimal::Decimal;

    use super::*;
    use crate::dunning::{InMemoryDunningStore, RestoreOnPayment};
    use crate::payments::InMemoryPaymentStore;

    use dotmac_core::metrics_recorder::Counting;

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

    fn to_enter(customer: CustomerId, invoice: InvoiceId, minor: i64) -> InvoiceToEnter {
        InvoiceToEnter {
            invoice,
            customer,
            total: usd(minor),
            issued: day(3, 1),
            due: day(3, 13),
        }
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
    fn collection_events_round_trip_through_json_with_their_type() {
        let customer = CustomerId::from_u128(7);
        let invoice = InvoiceId::from_u128(8);
        let mut ledger = CustomerLedger::new(customer, Currency::USD);
        let entry = ledger
            .record_invoice(invoice, usd(100), day(3, 1), day(3, 13))
            .unwrap()
            .remove(0);
        let balance = ledger.invoice(invoice).unwrap();
        let events = [
            CollectionEvent::Ledger(entry),
            CollectionEvent::InvoiceBalanceChanged(InvoiceBalanceChanged::of(
                customer, &balance, 0,
            )),
            CollectionEvent::CreditApplied(CreditApplied {
                invoice,
                customer,
                amount: usd(50),
                on: day(3, 1),
            }),
        ];
        for event in events {
            let json = serde_json::to_value(&event).unwrap();
            let kind = json["type"].as_str().unwrap().to_owned();
            assert!(
                event.event_type().ends_with(&kind) || kind == "ledger",
                "{json}"
            );
            assert_eq!(
                serde_json::from_value::<CollectionEvent>(json).unwrap(),
                event
            );
            assert_eq!(event.aggregate(), Aggregate::customer(customer));
        }
        let json = serde_json::to_value(CollectionEvent::InvoiceBalanceChanged(
            InvoiceBalanceChanged::of(customer, &balance, 0),
        ))
        .unwrap();
        assert_eq!(json["state"], "open");
        assert_eq!(json["open"]["amount"], json["total"]["amount"]);
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
                        .enter_invoice(TENANT, to_enter(customer, invoice, 5000))
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
                // The receipt, the allocation, the invoice's balance and the restore.
                assert_eq!(paid(1).await.unwrap().len(), 4);
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
                    .append_entries(TENANT, bob, &[stray], &[])
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

    /// Each balance report says which ledger position it is as of (the last entry of its
    /// step), so a reader can tell a late, repeated report from a newer one.
    #[test]
    fn balance_reports_carry_the_ledger_position_they_are_as_of() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
            let service = service(&clock);
            let customer = CustomerId::from_u128(2);
            let invoice = InvoiceId::from_u128(1);
            let mut events = service
                .enter_invoice(TENANT, to_enter(customer, invoice, 3000))
                .await
                .unwrap();
            for (n, minor) in [(1u128, 1000), (2, 2000)] {
                let request = PaymentRequest::new(customer, PaymentId::from_u128(n), usd(minor));
                events.extend(service.receive_payment(TENANT, request).await.unwrap().1);
            }
            let reports: Vec<(u64, BalanceState)> = events
                .iter()
                .filter_map(|e| match &e.payload {
                    CollectionEvent::InvoiceBalanceChanged(b) => Some((b.ledger_sequence, b.state)),
                    _ => None,
                })
                .collect();
            // Entries: 0 the invoice, 1–2 the first payment and its allocation, 3–4 the second.
            assert_eq!(
                reports,
                [
                    (0, BalanceState::Open),
                    (2, BalanceState::PartiallyPaid),
                    (4, BalanceState::Paid)
                ]
            );
        });
    }

    #[test]
    fn operations_and_store_calls_open_spans_without_amounts() {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let customer = CustomerId::from_u128(2);
        let (spans, ()) = record_spans(|| {
            runtime.block_on(async {
                let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
                let service = service(&clock);
                let invoice = InvoiceId::from_u128(1);
                service
                    .enter_invoice(TENANT, to_enter(customer, invoice, 4321))
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
        let line = |name: &str| spans.line(name).unwrap();
        let tenant = format!("tenant={TENANT}");
        assert_eq!(
            line("dotmac.collections.enter_invoice"),
            format!("Level(Info) {tenant} entries=1 events=2")
        );
        assert_eq!(
            line("dotmac.collections.evaluate_customers"),
            format!("Level(Info) {tenant} customers=1 failures=0 events=4")
        );
        // The payment, its allocation to the invoice, its balance, and the restore of the
        // suspension.
        assert_eq!(
            line("dotmac.collections.receive_payment"),
            format!("Level(Info) {tenant} entries=2 events=4")
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
        assert!(spans.all().iter().all(|span| {
            let fields = span.split_once(' ').map_or("", |(_, fields)| fields);
            !fields.contains("43") && !fields.contains("USD") && !fields.contains(&customer)
        }));
    }
}
