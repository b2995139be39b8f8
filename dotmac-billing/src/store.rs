//! Storage traits for the catalogue, subscriptions and invoices.
//!
//! Every method takes the [`TenantId`] it works in; nothing is shared between tenants. The
//! traits use native `async fn` (returning `impl Future + Send`), so they are not object safe:
//! services are generic over the store. [`MemoryStore`](crate::MemoryStore) implements them for
//! tests and examples; `dotmac-sqlx` for SQLite and PostgreSQL. The same behaviour suite
//! (`testkit`, behind the `testkit` feature) runs against every implementation.

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{
    Currency, CustomerId, InvoiceId, Money, PendingChargeId, Period, PlanId, SubscriptionId,
    TenantId,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::catalog::{Plan, Product};
use crate::error::BillingError;
use crate::idempotency::{IdempotencyKey, IdempotencyRecord, KeyedRequest, KeyedWrite};
use crate::invoice::{
    CreditNote, DocumentNumber, Invoice, InvoiceStatus, LineKind, PendingCharge, PriceRef,
};
use crate::subscription::Subscription;
use crate::tax::TaxExemption;

/// A customer's billing account: the currency they are billed in, their tax exemption and
/// payment terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerAccount {
    /// The customer.
    pub customer: CustomerId,
    /// The one currency every subscription and document of the customer uses.
    pub currency: Currency,
    /// Taxes the customer does not pay.
    pub exemption: TaxExemption,
    /// Days from issue to due date; `None` for the tenant's default.
    pub payment_terms_days: Option<u32>,
}

impl CustomerAccount {
    /// An account in `currency`, paying every tax, on the tenant's payment terms.
    pub fn new(customer: CustomerId, currency: Currency) -> Self {
        CustomerAccount {
            customer,
            currency,
            exemption: TaxExemption::None,
            payment_terms_days: None,
        }
    }
}

/// Everything one step of a bill run (or one change) writes, applied atomically: all of it or
/// none of it, its outbox events included (a refused commit writes no event).
#[derive(Debug, Clone, Default)]
pub struct BillingCommit {
    /// The subscription's new state. Its `revision` must be the stored revision (the one that
    /// was read); the store bumps it. Otherwise [`BillingError::ConcurrentUpdate`].
    pub subscription: Option<Subscription>,
    /// Documents to issue: each gets status `open` and the tenant's next number. A document
    /// whose key is already stored is skipped (counted in [`CommitResult::duplicates`]).
    pub invoices: Vec<Invoice>,
    /// Pending charges put on those documents, to remove.
    pub consumed_pending: Vec<PendingChargeId>,
    /// Pending charges to add (deferred prorations).
    pub new_pending: Vec<PendingCharge>,
    /// Events to write to the outbox with the commit (status changes, suspensions, …),
    /// besides the `billing.invoice_issued` events of `issued_at`.
    pub events: Vec<OutboxEvent>,
    /// When set, the store also writes a `billing.invoice_issued` event dated then for every
    /// document it issues ([`invoice_issued_event`](crate::internal::invoice_issued_event):
    /// the events carry the numbers, which only the store knows). `None` for a caller that
    /// writes them itself (the scale-out worker).
    pub issued_at: Option<DateTime<Utc>>,
}

impl PartialEq for BillingCommit {
    /// Events compare by id, type and payload (their instants are not compared, as the
    /// outbox does not).
    fn eq(&self, other: &Self) -> bool {
        let same_events = self.events.len() == other.events.len()
            && self.events.iter().zip(&other.events).all(|(a, b)| {
                a.id() == b.id()
                    && a.event_type() == b.event_type()
                    && a.payload_value().ok() == b.payload_value().ok()
            });
        same_events
            && self.subscription == other.subscription
            && self.invoices == other.invoices
            && self.consumed_pending == other.consumed_pending
            && self.new_pending == other.new_pending
            && self.issued_at == other.issued_at
    }
}

impl Eq for BillingCommit {}

impl BillingCommit {
    /// Every outbox event the commit writes once the store has issued `issued` (its new
    /// documents, numbered): its own [`BillingCommit::events`], then one
    /// `billing.invoice_issued` per issued document when [`BillingCommit::issued_at`] is set.
    pub fn outbox_events(&self, tenant: TenantId, issued: &[IssuedInvoice]) -> Vec<OutboxEvent> {
        let mut events = self.events.clone();
        if let Some(at) = self.issued_at {
            events.reserve(issued.len());
            events.extend(
                issued
                    .iter()
                    .map(|i| OutboxEvent::new(crate::service::invoice_issued_event(tenant, at, i))),
            );
        }
        events
    }
}

impl From<crate::billrun::BillOutcome> for BillingCommit {
    /// What a bill run writes for one subscription: its documents, its new state and the
    /// charges it consumed.
    fn from(out: crate::billrun::BillOutcome) -> Self {
        BillingCommit {
            subscription: Some(out.subscription),
            invoices: out.invoices,
            consumed_pending: out.consumed,
            new_pending: Vec::new(),
            events: Vec::new(),
            issued_at: None,
        }
    }
}

/// An invoice a commit issued: what events and callers need, without copying its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedInvoice {
    /// The invoice.
    pub id: InvoiceId,
    /// Its number.
    pub number: DocumentNumber,
    /// Its customer.
    pub customer: CustomerId,
    /// Its total.
    pub total: Money,
    /// Its issue date.
    pub issue_date: NaiveDate,
    /// Its due date.
    pub due_date: NaiveDate,
}

impl IssuedInvoice {
    /// What an issued invoice reports: `invoice` numbered `number`.
    pub fn of(invoice: &Invoice, number: DocumentNumber) -> Self {
        IssuedInvoice {
            id: invoice.id,
            number,
            customer: invoice.customer,
            total: invoice.total,
            issue_date: invoice.issue_date,
            due_date: invoice.due_date,
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitResult {
    /// The documents issued (status `open`), with their numbers, in commit order.
    pub issued: Vec<IssuedInvoice>,
    /// Documents skipped because their key was already stored.
    pub duplicates: usize,
}

/// Usage already billed or waiting to be: one usage line of an invoice, or one usage charge
/// (pending, or kept after it was invoiced), of a subscription's usage price and period. What
/// [`InvoiceStore::billed_usage`] answers, so that rating bills late usage as an adjustment
/// and never twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BilledUsage {
    /// The subscription billed.
    pub subscription: SubscriptionId,
    /// [`LineKind::Usage`] or [`LineKind::UsageAdjustment`].
    pub kind: LineKind,
    /// The usage price it bills.
    pub price: PriceRef,
    /// The period it bills.
    pub period: Period,
    /// Units.
    pub quantity: Decimal,
    /// Exact price per unit.
    pub unit_price: Money,
}

impl BilledUsage {
    /// The usage `charge` bills, when it is a usage charge of a subscription's priced period.
    pub fn of_charge(charge: &PendingCharge) -> Option<Self> {
        BilledUsage::of(
            charge.kind,
            charge.subscription,
            charge.price,
            charge.period,
            charge.quantity,
            charge.unit_price,
        )
    }

    /// The usage lines of `invoice` (of a subscription's priced periods).
    pub fn of_invoice(invoice: &Invoice) -> impl Iterator<Item = Self> + '_ {
        invoice.lines.iter().filter_map(|line| {
            BilledUsage::of(
                line.kind,
                invoice.subscription,
                line.price,
                line.period,
                line.quantity,
                line.unit_price,
            )
        })
    }

    fn of(
        kind: LineKind,
        subscription: Option<SubscriptionId>,
        price: Option<PriceRef>,
        period: Option<Period>,
        quantity: Decimal,
        unit_price: Money,
    ) -> Option<Self> {
        if !matches!(kind, LineKind::Usage | LineKind::UsageAdjustment) {
            return None;
        }
        Some(BilledUsage {
            subscription: subscription?,
            kind,
            price: price?,
            period: period?,
            quantity,
            unit_price,
        })
    }
}

/// Products and plans.
pub trait CatalogStore: Send + Sync {
    /// Inserts or replaces a product.
    fn put_product(
        &self,
        tenant: TenantId,
        product: Product,
    ) -> impl Future<Output = Result<(), BillingError>> + Send;

    /// Inserts a plan, or replaces it with a version list that extends the stored one (stored
    /// versions are immutable).
    ///
    /// Errors: [`BillingError::UnknownProduct`], [`BillingError::InvalidPlan`] when a stored
    /// version would change or disappear. `events` are written to the outbox in the same step
    /// (none on error).
    fn put_plan(
        &self,
        tenant: TenantId,
        plan: Plan,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = Result<(), BillingError>> + Send;

    /// A plan by id.
    fn plan(
        &self,
        tenant: TenantId,
        id: PlanId,
    ) -> impl Future<Output = Result<Option<Plan>, BillingError>> + Send;

    /// Every plan of the tenant.
    fn plans(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<Plan>, BillingError>> + Send;
}

/// Customer accounts and subscriptions.
pub trait SubscriptionStore: Send + Sync {
    /// Inserts or replaces a customer's billing account.
    fn put_account(
        &self,
        tenant: TenantId,
        account: CustomerAccount,
    ) -> impl Future<Output = Result<(), BillingError>> + Send;

    /// A customer's billing account.
    fn account(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> impl Future<Output = Result<Option<CustomerAccount>, BillingError>> + Send;

    /// Inserts a new subscription, and `events` in the outbox in the same step. Errors:
    /// [`BillingError::AlreadyExists`] (nothing written).
    fn insert_subscription(
        &self,
        tenant: TenantId,
        subscription: Subscription,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = Result<(), BillingError>> + Send;

    /// A subscription by id.
    fn subscription(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> impl Future<Output = Result<Option<Subscription>, BillingError>> + Send;

    /// Up to `limit` subscriptions with ids after `after`, in id order: the bill run's chunks.
    fn subscriptions_page(
        &self,
        tenant: TenantId,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Subscription>, BillingError>> + Send;

    /// The billing accounts of `customers` that exist (in no particular order): a bill run
    /// loads a chunk's accounts with one call. The default asks [`Self::account`] per customer;
    /// stores that can read them in one query override it.
    fn accounts(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> impl Future<Output = Result<Vec<CustomerAccount>, BillingError>> + Send {
        async move {
            let mut found = Vec::with_capacity(customers.len());
            for customer in customers {
                if let Some(account) = self.account(tenant, *customer).await? {
                    found.push(account);
                }
            }
            Ok(found)
        }
    }

    /// A customer's subscriptions.
    fn subscriptions_of(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> impl Future<Output = Result<Vec<Subscription>, BillingError>> + Send;
}

/// Invoices, credit notes and pending charges.
pub trait InvoiceStore: Send + Sync {
    /// Adds a pending charge for the customer's next invoice, and `events` in the outbox in
    /// the same step. Returns `false` (and changes nothing, writing no event) when a charge
    /// with the same id is already pending or was already invoiced.
    fn add_pending_charge(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = Result<bool, BillingError>> + Send;

    /// Adds many pending charges, each with its events, which are written only when its
    /// charge is new (as [`Self::add_pending_charge`] does for one): usage rating adds a
    /// chunk's charges with one call. Returns, in order, whether each charge was added. SQL
    /// stores write them all in one transaction; the default adds them one at a time, each
    /// atomically with its events.
    fn add_pending_charges(
        &self,
        tenant: TenantId,
        charges: Vec<(PendingCharge, Vec<OutboxEvent>)>,
    ) -> impl Future<Output = Result<Vec<bool>, BillingError>> + Send {
        async move {
            let mut added = Vec::with_capacity(charges.len());
            for (charge, events) in charges {
                added.push(self.add_pending_charge(tenant, charge, events).await?);
            }
            Ok(added)
        }
    }

    /// A customer's pending charges, oldest first.
    fn pending_charges(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> impl Future<Output = Result<Vec<PendingCharge>, BillingError>> + Send;

    /// The pending charges of every customer in `customers`, each customer's oldest first:
    /// a bill run loads a chunk's charges with one call. The default asks
    /// [`Self::pending_charges`] per customer.
    fn pending_charges_for(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> impl Future<Output = Result<Vec<PendingCharge>, BillingError>> + Send {
        async move {
            let mut found = Vec::new();
            for customer in customers {
                found.extend(self.pending_charges(tenant, *customer).await?);
            }
            Ok(found)
        }
    }

    /// Applies a [`BillingCommit`] atomically.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownSubscription`] / [`BillingError::ConcurrentUpdate`] when the
    /// commit's subscription is unknown or its revision stale;
    /// [`BillingError::PendingChargeTaken`] when one of `consumed_pending` is no longer
    /// pending (another commit invoiced it), so no charge is ever invoiced twice. Nothing is
    /// written then.
    fn commit(
        &self,
        tenant: TenantId,
        commit: BillingCommit,
    ) -> impl Future<Output = Result<CommitResult, BillingError>> + Send;

    /// Applies many commits (a bill-run chunk) in one go, returning one result per commit, in
    /// order. Each commit is still all-or-nothing and keeps its optimistic check: a commit
    /// whose subscription revision is stale gets [`BillingError::ConcurrentUpdate`] (or
    /// [`BillingError::UnknownSubscription`]) in its slot, one that consumes a charge that is
    /// no longer pending (taken before the batch or by an earlier commit of it)
    /// [`BillingError::PendingChargeTaken`]; it writes nothing, and the others still apply.
    ///
    /// The default applies the commits one by one with [`Self::commit`]; stores override it to
    /// pay for one lock or one transaction per batch instead of one per commit (the SQL store
    /// writes the whole batch in one transaction).
    ///
    /// # Errors
    ///
    /// A failure of the batch as a whole (storage errors, a concurrent writer that issued the
    /// same document first); what was applied before it stays applied only in the default
    /// implementation, stores that override it write nothing of a failed batch.
    fn commit_batch(
        &self,
        tenant: TenantId,
        commits: Vec<BillingCommit>,
    ) -> impl Future<Output = Result<Vec<Result<CommitResult, BillingError>>, BillingError>> + Send
    {
        async move {
            let mut results = Vec::with_capacity(commits.len());
            for commit in commits {
                match self.commit(tenant, commit).await {
                    Err(
                        e @ (BillingError::ConcurrentUpdate { .. }
                        | BillingError::UnknownSubscription(_)
                        | BillingError::PendingChargeTaken { .. }),
                    ) => results.push(Err(e)),
                    Err(e) => return Err(e),
                    Ok(done) => results.push(Ok(done)),
                }
            }
            Ok(results)
        }
    }

    /// An invoice by id.
    fn invoice(
        &self,
        tenant: TenantId,
        id: InvoiceId,
    ) -> impl Future<Output = Result<Option<Invoice>, BillingError>> + Send;

    /// A customer's invoices, by issue date then number.
    fn invoices_of(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> impl Future<Output = Result<Vec<Invoice>, BillingError>> + Send;

    /// The invoices of every customer in `customers`, each customer's by issue date then
    /// number: usage rating reads a chunk's with one call. The default asks
    /// [`Self::invoices_of`] per customer.
    fn invoices_of_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> impl Future<Output = Result<Vec<Invoice>, BillingError>> + Send {
        async move {
            let mut found = Vec::new();
            for customer in customers {
                found.extend(self.invoices_of(tenant, *customer).await?);
            }
            Ok(found)
        }
    }

    /// The usage billed on invoices, or pending, for the subscriptions of `subscriptions`
    /// (each with its customer) in periods that start on or after `since`: what usage rating
    /// reads for a chunk, with one call.
    ///
    /// The default reads the customers' pending charges and every invoice of theirs
    /// ([`Self::pending_charges_for`], [`Self::invoices_of_customers`]) and keeps the usage
    /// lines. A store that keeps every charge after it is invoiced may answer from its charges
    /// alone, by subscription and period, since every usage line on an invoice comes from
    /// one; dotmac-sqlx does, so rating does not read a customer's invoice history.
    ///
    /// # Errors
    ///
    /// Storage errors.
    fn billed_usage(
        &self,
        tenant: TenantId,
        subscriptions: &[(CustomerId, SubscriptionId)],
        since: NaiveDate,
    ) -> impl Future<Output = Result<Vec<BilledUsage>, BillingError>> + Send {
        async move {
            if subscriptions.is_empty() {
                return Ok(Vec::new());
            }
            let mut customers: Vec<CustomerId> = subscriptions.iter().map(|(c, _)| *c).collect();
            customers.sort_unstable();
            customers.dedup();
            let wanted: crate::FastSet<SubscriptionId> =
                subscriptions.iter().map(|(_, s)| *s).collect();
            let keep =
                |b: &BilledUsage| wanted.contains(&b.subscription) && b.period.start() >= since;
            let invoices = self.invoices_of_customers(tenant, &customers).await?;
            let pending = self.pending_charges_for(tenant, &customers).await?;
            Ok(invoices
                .iter()
                .flat_map(BilledUsage::of_invoice)
                .chain(pending.iter().filter_map(BilledUsage::of_charge))
                .filter(keep)
                .collect())
        }
    }

    /// Moves an invoice to `to` (a draft moving to open gets the next number), with `events`
    /// in the outbox in the same step.
    /// Errors: [`BillingError::InvoiceNotFound`], [`BillingError::IllegalInvoiceTransition`],
    /// [`BillingError::VoidOfSettledInvoice`] (nothing written).
    fn set_invoice_status(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        to: InvoiceStatus,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = Result<Invoice, BillingError>> + Send;

    /// Replaces a stored invoice's status and [settlement](Invoice::settlement) with
    /// `updated`'s, if it is still `expected` (the invoice as read), with `events` in the
    /// outbox in the same step: the write of [`BillingService::apply_balance`],
    /// [`BillingService::apply_credit`], voids and write-offs. Returns the stored invoice.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvoiceNotFound`]; [`BillingError::InvoiceChanged`] when the stored
    /// invoice is no longer `expected` (re-read and retry);
    /// [`BillingError::InvalidConfiguration`] when `updated` changes anything else (its id,
    /// number, lines, amounts, …). Nothing is written then.
    ///
    /// [`BillingService::apply_balance`]: crate::BillingService::apply_balance
    /// [`BillingService::apply_credit`]: crate::BillingService::apply_credit
    fn update_invoice(
        &self,
        tenant: TenantId,
        expected: Invoice,
        updated: Invoice,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = Result<Invoice, BillingError>> + Send;

    /// Stores a credit note, numbering it from the tenant's credit-note sequence, with
    /// `events` in the outbox in the same step. The store re-checks it against the notes
    /// already stored for the invoice.
    fn insert_credit_note(
        &self,
        tenant: TenantId,
        note: CreditNote,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = Result<CreditNote, BillingError>> + Send;

    /// The credit notes against an invoice.
    fn credit_notes_of(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> impl Future<Output = Result<Vec<CreditNote>, BillingError>> + Send;

    /// The record of an idempotency key of the tenant (credit notes and manual charges), if
    /// one was written.
    ///
    /// # Errors
    ///
    /// Storage failures; the default (a store without idempotency keys) always fails with
    /// [`BillingError::InvalidConfiguration`].
    fn idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, BillingError>> + Send {
        let _ = (tenant, key);
        async { Err(crate::idempotency::unsupported()) }
    }

    /// [`Self::add_pending_charge`] and the record of `keyed` (with
    /// [`IdempotentResult::PendingCharge`](crate::IdempotentResult::PendingCharge)), atomically:
    /// when the key is already recorded nothing is written (no event either) and the stored
    /// record is returned.
    ///
    /// # Errors
    ///
    /// As [`Self::add_pending_charge`]; the default always fails with
    /// [`BillingError::InvalidConfiguration`].
    fn add_pending_charge_keyed(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
        keyed: &KeyedRequest,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = Result<KeyedWrite<bool>, BillingError>> + Send {
        let _ = (tenant, charge, keyed, events);
        async { Err(crate::idempotency::unsupported()) }
    }

    /// [`Self::insert_credit_note`] and the record of `keyed` (with
    /// [`IdempotentResult::CreditNote`](crate::IdempotentResult::CreditNote), the note as
    /// numbered), and `events`, atomically: when the key is already recorded nothing is
    /// written (no event either) and the stored record is returned.
    ///
    /// # Errors
    ///
    /// As [`Self::insert_credit_note`]; the default always fails with
    /// [`BillingError::InvalidConfiguration`].
    fn insert_credit_note_keyed(
        &self,
        tenant: TenantId,
        note: CreditNote,
        keyed: &KeyedRequest,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = Result<KeyedWrite<CreditNote>, BillingError>> + Send {
        let _ = (tenant, note, keyed, events);
        async { Err(crate::idempotency::unsupported()) }
    }
}

/// A store that holds everything billing needs.
pub trait BillingStore: CatalogStore + SubscriptionStore + InvoiceStore {}

impl<T: CatalogStore + SubscriptionStore + InvoiceStore> BillingStore for T {}
