//! The in-memory store: every billing trait over maps behind one mutex, for tests, examples
//! and benchmarks, writing its outbox events to a [`MemoryOutbox`] under the same lock.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use dotmac_core::outbox::{MemoryOutbox, OutboxEvent, OutboxWriter};
use dotmac_core::{
    CustomerId, InvoiceId, PendingChargeId, PlanId, ProductId, SubscriptionId, TenantId,
};

use crate::catalog::{Plan, Product};
use crate::error::BillingError;
use crate::idempotency::{
    IdempotencyKey, IdempotencyRecord, IdempotentResult, KeyedRequest, KeyedWrite,
};
use crate::invoice::{
    CreditNote, CreditRequest, DEFAULT_CREDIT_NOTE_SERIES, DEFAULT_INVOICE_SERIES, DocumentKey,
    DocumentNumber, Invoice, InvoiceStatus, PendingCharge, credit_note,
};
use crate::store::{
    BillingCommit, CatalogStore, CommitResult, CustomerAccount, InvoiceStore, IssuedInvoice,
    SubscriptionStore,
};
use crate::subscription::Subscription;

use crate::{FastMap, FastSet};

/// Invoices stored per segment.
const SEGMENT: usize = 1024;

/// Invoices in commit order, in segments of [`SEGMENT`] that are allocated whole and never
/// grow: storing an invoice never moves the ones already stored. (One `Vec` of every invoice
/// copies all of them each time it doubles, and touches twice their memory: at 100,000
/// invoices that was a fifth of a bill run's time.)
#[derive(Default)]
struct InvoiceLog {
    segments: Vec<Vec<Invoice>>,
    len: usize,
}

impl InvoiceLog {
    fn get(&self, position: usize) -> Option<&Invoice> {
        self.segments
            .get(position / SEGMENT)
            .and_then(|s| s.get(position % SEGMENT))
    }

    fn get_mut(&mut self, position: usize) -> Option<&mut Invoice> {
        self.segments
            .get_mut(position / SEGMENT)
            .and_then(|s| s.get_mut(position % SEGMENT))
    }

    /// Stores `invoice`, returning its position.
    fn push(&mut self, invoice: Invoice) -> usize {
        let position = self.len;
        match self.segments.last_mut() {
            Some(last) if last.len() < SEGMENT => last.push(invoice),
            _ => {
                let mut segment = Vec::with_capacity(SEGMENT);
                segment.push(invoice);
                self.segments.push(segment);
            }
        }
        // One per invoice stored: cannot reach usize::MAX.
        self.len = self.len.saturating_add(1);
        position
    }
}

/// A customer's invoices: their positions in the [`InvoiceLog`], in commit order. Most
/// customers of a bill run get one invoice, held inline; a list is allocated from the second.
#[derive(Clone, Debug)]
enum CustomerInvoices {
    One(usize),
    Many(Vec<usize>),
}

impl CustomerInvoices {
    fn push(&mut self, position: usize) {
        match self {
            CustomerInvoices::One(first) => {
                *self = CustomerInvoices::Many(vec![*first, position]);
            }
            CustomerInvoices::Many(list) => list.push(position),
        }
    }

    fn positions(&self) -> &[usize] {
        match self {
            CustomerInvoices::One(first) => std::slice::from_ref(first),
            CustomerInvoices::Many(list) => list,
        }
    }
}

#[derive(Default)]
struct TenantData {
    products: FastMap<ProductId, Product>,
    plans: FastMap<PlanId, Plan>,
    accounts: FastMap<CustomerId, CustomerAccount>,
    /// Keyed by [`sub_key`]: the same order as `SubscriptionId`'s, with cheaper comparisons.
    subscriptions: BTreeMap<u128, Subscription>,
    /// Invoices in commit order; `invoice_index` maps ids to positions (cheaper to grow than a
    /// map of whole invoices).
    invoices: InvoiceLog,
    invoice_index: FastMap<InvoiceId, usize>,
    /// The keys of the stored invoices that `invoice_index` does not find under their key's
    /// own id ([`DocumentKey::invoice_id`]): hand-built invoices with another id, and any
    /// whose id a later invoice took. Every other key is found through `invoice_index`
    /// (see [`TenantData::key_stored`]), so the bill run keeps no set of keys.
    odd_keys: FastSet<DocumentKey>,
    /// Each customer's invoices, built on demand: it covers the first `customers_indexed`
    /// invoices of the log, and [`TenantData::invoices_of`] adds the rest before it reads
    /// (storing an invoice, the bill run's step, does not touch it).
    invoices_by_customer: FastMap<CustomerId, CustomerInvoices>,
    customers_indexed: usize,
    pending: FastMap<CustomerId, Vec<PendingCharge>>,
    /// Every pending charge id ever added, so that a retried add of an invoiced charge is a
    /// no-op too.
    pending_seen: FastSet<PendingChargeId>,
    /// The ids of the charges in `pending`: what a commit may still consume.
    pending_open: FastSet<PendingChargeId>,
    credit_notes: FastMap<InvoiceId, Vec<CreditNote>>,
    /// Idempotency keys of credit notes and manual charges, with their requests and results.
    idempotency: FastMap<IdempotencyKey, IdempotencyRecord>,
    last_invoice_number: DocumentNumbers,
    credit_note_numbers: DocumentNumbers,
}

/// The last number of each sequence of one kind of document ([`Invoice::number_series`],
/// [`CreditNote::number_series`]): the default sequence's in a field (no lookup for a tenant
/// on the default format), the others by name.
#[derive(Default, Clone)]
struct DocumentNumbers {
    default: u64,
    series: FastMap<String, u64>,
}

impl DocumentNumbers {
    /// The next number of `series` (the document's `number_series`), taken: the default
    /// sequence when it is `default` (the kind's default series name).
    fn take(&mut self, default: &str, series: std::borrow::Cow<'static, str>) -> DocumentNumber {
        let last = if series == default {
            &mut self.default
        } else {
            self.series.entry(series.into_owned()).or_default()
        };
        // One per document issued from 0: cannot reach u64::MAX.
        *last = last.saturating_add(1);
        DocumentNumber(*last)
    }

    /// The next number of `invoice`'s sequence, taken.
    fn take_invoice(&mut self, invoice: &Invoice) -> DocumentNumber {
        self.take(DEFAULT_INVOICE_SERIES, invoice.number_series())
    }
}

/// Writes `events` to `outbox` for `tenant`: the last check of a change, made once every
/// other check passed and before anything is changed, so that a refused event refuses the
/// change and a refused change writes no event.
fn write_events(
    outbox: &mut OutboxWriter<'_>,
    tenant: TenantId,
    events: Vec<OutboxEvent>,
) -> Result<(), BillingError> {
    Ok(outbox.push(tenant, events)?)
}

impl TenantData {
    /// Adds a pending charge unless its id was ever added, with its events.
    fn add_pending(
        &mut self,
        outbox: &mut OutboxWriter<'_>,
        tenant: TenantId,
        charge: PendingCharge,
        events: Vec<OutboxEvent>,
    ) -> Result<bool, BillingError> {
        if self.pending_seen.contains(&charge.id) {
            return Ok(false);
        }
        write_events(outbox, tenant, events)?;
        Ok(self.add_new_pending(charge))
    }

    /// Adds a pending charge unless its id was ever added.
    fn add_new_pending(&mut self, charge: PendingCharge) -> bool {
        if !self.pending_seen.insert(charge.id) {
            return false;
        }
        self.pending_open.insert(charge.id);
        self.pending
            .entry(charge.customer)
            .or_default()
            .push(charge);
        true
    }

    /// Numbers and stores a credit note, re-checked against the notes already stored, with its
    /// events.
    fn insert_note(
        &mut self,
        outbox: &mut OutboxWriter<'_>,
        tenant: TenantId,
        mut note: CreditNote,
        events: Vec<OutboxEvent>,
    ) -> Result<CreditNote, BillingError> {
        let invoice = self
            .invoice(note.invoice)
            .ok_or(BillingError::InvoiceNotFound(note.invoice))?;
        let earlier = self
            .credit_notes
            .get(&note.invoice)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if earlier.iter().any(|n| n.id == note.id) {
            return Err(BillingError::AlreadyExists {
                what: "credit note",
                id: note.id.to_string(),
            });
        }
        // Re-check under the lock: two notes built concurrently must not over-credit.
        credit_note(
            note.id,
            invoice,
            earlier,
            &CreditRequest::Lines(note.lines.clone()),
            note.issue_date,
            note.reason.clone(),
        )?;
        // Numbered before its events are written (they carry the number), the counter kept
        // only once they are.
        let mut numbers = self.credit_note_numbers.clone();
        note.number = Some(numbers.take(DEFAULT_CREDIT_NOTE_SERIES, note.number_series()));
        let events = crate::service::numbered_credit_note_events(&note, events);
        write_events(outbox, tenant, events)?;
        self.credit_note_numbers = numbers;
        self.credit_notes
            .entry(note.invoice)
            .or_default()
            .push(note.clone());
        Ok(note)
    }

    /// True when an invoice with `key` is stored.
    fn key_stored(&self, key: &DocumentKey) -> bool {
        key_stored(&self.invoice_index, &self.invoices, &self.odd_keys, key)
    }

    /// Stores `invoice` (its key not stored yet) and indexes it by id (the by-customer index
    /// catches up when read).
    fn store_invoice(&mut self, invoice: Invoice) {
        let (id, key) = (invoice.id, invoice.key);
        let position = self.invoices.push(invoice);
        if id != key.invoice_id() {
            self.odd_keys.insert(key);
        }
        if let Some(earlier) = self.invoice_index.insert(id, position)
            && let Some(hidden) = self.invoices.get(earlier)
        {
            // The earlier invoice with this id is no longer found by it: keep its key.
            self.odd_keys.insert(hidden.key);
        }
    }

    /// `customer`'s invoices, in commit order, once the by-customer index covers every
    /// stored invoice.
    fn invoices_of(&mut self, customer: CustomerId) -> impl Iterator<Item = &Invoice> {
        while let Some(invoice) = self.invoices.get(self.customers_indexed) {
            let position = self.customers_indexed;
            match self.invoices_by_customer.entry(invoice.customer) {
                Entry::Occupied(mut list) => list.get_mut().push(position),
                Entry::Vacant(slot) => {
                    slot.insert(CustomerInvoices::One(position));
                }
            }
            // One per invoice stored: cannot reach usize::MAX.
            self.customers_indexed = position.saturating_add(1);
        }
        let invoices = &self.invoices;
        self.invoices_by_customer
            .get(&customer)
            .map(CustomerInvoices::positions)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| invoices.get(*p))
    }

    /// Room for a batch of `commits` more invoices in the indexes (one each, the common
    /// case), grown at once to the tenant's subscription count: a bill run issues about one
    /// invoice per subscription, and growing the maps step by step rehashes every entry.
    fn reserve_invoices(&mut self, commits: usize) {
        let len = self.invoice_index.len();
        if self.invoice_index.capacity() >= len.saturating_add(commits) {
            return;
        }
        let more = commits.max(self.subscriptions.len()).max(len);
        self.invoice_index.reserve(more);
    }

    fn invoice(&self, id: InvoiceId) -> Option<&Invoice> {
        self.invoice_index
            .get(&id)
            .and_then(|i| self.invoices.get(*i))
    }

    /// Applies one commit, all or nothing (its outbox events included), except that the
    /// pending charges it consumes are only collected in `consumed` (see
    /// [`TenantData::remove_pending`]).
    fn apply(
        &mut self,
        outbox: &mut OutboxWriter<'_>,
        tenant: TenantId,
        mut commit: BillingCommit,
        consumed: &mut FastSet<PendingChargeId>,
    ) -> Result<CommitResult, BillingError> {
        // Check everything first, so that a refused commit writes nothing.
        let stored = match &commit.subscription {
            Some(sub) => {
                let stored = self
                    .subscriptions
                    .get_mut(&sub_key(sub.id))
                    .ok_or(BillingError::UnknownSubscription(sub.id))?;
                if stored.revision != sub.revision {
                    return Err(BillingError::ConcurrentUpdate {
                        subscription: sub.id,
                        expected: sub.revision,
                        found: stored.revision,
                    });
                }
                if sub.revision.checked_add(1).is_none() {
                    return Err(BillingError::Core(dotmac_core::CoreError::Overflow {
                        operation: "subscription revision",
                    }));
                }
                Some(stored)
            }
            None => None,
        };
        // A charge another document took (earlier in this batch or before) must not be
        // invoiced twice.
        if let Some(charge) = commit
            .consumed_pending
            .iter()
            .find(|c| !self.pending_open.contains(*c) || consumed.contains(*c))
        {
            return Err(BillingError::PendingChargeTaken { charge: *charge });
        }
        // What the loop below issues (its numbers, and what the result reports).
        let issued = would_issue(
            |key| key_stored(&self.invoice_index, &self.invoices, &self.odd_keys, key),
            &self.last_invoice_number,
            &commit.invoices,
        );
        // The events last: the issued documents' carry the numbers they are about to get.
        if let (Some(at), [only], true) = (
            commit.issued_at,
            issued.as_slice(),
            commit.events.is_empty(),
        ) {
            // The bill run's commit: one event, written without a list.
            let event = OutboxEvent::new(crate::service::invoice_issued_event(tenant, at, only));
            outbox.push_one(tenant, event)?;
        } else if commit.issued_at.is_some() {
            outbox.push(tenant, commit.outbox_events(tenant, &issued))?;
        } else {
            outbox.push(tenant, std::mem::take(&mut commit.events))?;
        }
        if let (Some(stored), Some(mut sub)) = (stored, commit.subscription) {
            // Checked above: the revision has a successor.
            sub.revision = sub.revision.saturating_add(1);
            *stored = sub;
        }
        let mut result = CommitResult {
            issued,
            duplicates: 0,
        };
        // Every document new (the bill run's case) needs no second look.
        let all_new = result.issued.len() == commit.invoices.len();
        for mut invoice in commit.invoices {
            // The same choice as `would_issue`'s: a key stored before, or earlier in this
            // commit (stored by this loop), is a duplicate.
            if !all_new && self.key_stored(&invoice.key) {
                result.duplicates = result.duplicates.saturating_add(1);
                continue;
            }
            let number = self.last_invoice_number.take_invoice(&invoice);
            invoice.number = Some(number);
            invoice.status = InvoiceStatus::Open;
            self.store_invoice(invoice);
        }
        consumed.extend(commit.consumed_pending);
        for charge in commit.new_pending {
            self.add_new_pending(charge);
        }
        Ok(result)
    }

    /// Removes consumed pending charges: one pass over the pending lists for a whole batch.
    fn remove_pending(&mut self, consumed: &FastSet<PendingChargeId>) {
        if consumed.is_empty() {
            return;
        }
        self.pending_open.retain(|id| !consumed.contains(id));
        self.pending.retain(|_, list| {
            list.retain(|c| !consumed.contains(&c.id));
            !list.is_empty()
        });
    }
}

/// [`TenantData::key_stored`] over the fields it reads.
fn key_stored(
    index: &FastMap<InvoiceId, usize>,
    invoices: &InvoiceLog,
    odd_keys: &FastSet<DocumentKey>,
    key: &DocumentKey,
) -> bool {
    let own = index
        .get(&key.invoice_id())
        .and_then(|p| invoices.get(*p))
        .is_some_and(|i| i.key == *key);
    own || (!odd_keys.is_empty() && odd_keys.contains(key))
}

/// What [`TenantData::apply`] would issue of `invoices` given the stored document keys and the
/// last numbers (the documents whose keys are new, numbered in order), without writing anything.
fn would_issue(
    stored: impl Fn(&DocumentKey) -> bool,
    last_numbers: &DocumentNumbers,
    invoices: &[Invoice],
) -> Vec<IssuedInvoice> {
    // Empty for a tenant on the default format: the clone allocates nothing.
    let mut numbers = last_numbers.clone();
    invoices
        .iter()
        .enumerate()
        // A commit holds a handful of documents: a scan finds a repeated key without a set.
        .filter(|(n, i)| {
            !stored(&i.key)
                && !invoices
                    .get(..*n)
                    .unwrap_or_default()
                    .iter()
                    .any(|e| e.key == i.key)
        })
        .map(|(_, i)| IssuedInvoice::of(i, numbers.take_invoice(i)))
        .collect()
}

/// A subscription's key in [`TenantData::subscriptions`]: its UUID as a big-endian integer,
/// which orders exactly as the id (and as the SQL stores' pages) but compares in one step.
fn sub_key(id: SubscriptionId) -> u128 {
    id.as_uuid().as_u128()
}

/// Everything in memory, per tenant, behind one mutex (so every call is atomic), with an
/// outbox: every write puts its events in the [`MemoryOutbox`] while it holds the lock, after
/// its checks and before its changes, so a change and its events are one step. The outbox is
/// the store's own unless [`MemoryStore::with_outbox`] shares one (with the collections
/// stores, say, so that one dispatcher sees every domain's events); the store is an
/// [`OutboxStore`](dotmac_core::outbox::OutboxStore) over it.
#[derive(Default)]
pub struct MemoryStore {
    tenants: Mutex<FastMap<TenantId, TenantData>>,
    outbox: Arc<MemoryOutbox>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store, with an outbox of its own.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// The store writing its events to `outbox` instead of its own.
    pub fn with_outbox(mut self, outbox: Arc<MemoryOutbox>) -> Self {
        self.outbox = outbox;
        self
    }

    /// The outbox the store writes its events to.
    pub fn outbox(&self) -> &Arc<MemoryOutbox> {
        &self.outbox
    }

    fn lock(&self) -> MutexGuard<'_, FastMap<TenantId, TenantData>> {
        // A poisoned lock only means another thread panicked mid-call; every call validates
        // before it writes, so the data is still consistent.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<R>(&self, tenant: TenantId, f: impl FnOnce(&mut TenantData) -> R) -> R {
        let mut guard = self.lock();
        f(guard.entry(tenant).or_default())
    }

    /// [`MemoryStore::with`] for a write, which also gets the outbox.
    fn write<R>(
        &self,
        tenant: TenantId,
        f: impl FnOnce(&mut TenantData, &mut OutboxWriter<'_>) -> R,
    ) -> R {
        let mut guard = self.lock();
        // Taken after the store's own lock (the outbox's lock order), at the first event (or
        // when a batch that writes events reserves room).
        let mut outbox = self.outbox.writer();
        f(guard.entry(tenant).or_default(), &mut outbox)
    }
}

/// The store's outbox ([`MemoryStore::outbox`]): claims and marks go straight to it.
impl dotmac_core::outbox::OutboxStore for MemoryStore {
    fn append_outbox(
        &self,
        tenant: TenantId,
        events: &[OutboxEvent],
    ) -> impl std::future::Future<Output = Result<(), dotmac_core::StorageError>> + Send {
        self.outbox.append_outbox(tenant, events)
    }

    fn claim(
        &self,
        worker: &str,
        now: chrono::DateTime<chrono::Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> impl std::future::Future<
        Output = Result<Vec<dotmac_core::outbox::OutboxMessage>, dotmac_core::StorageError>,
    > + Send {
        self.outbox.claim(worker, now, lease, limit)
    }

    fn complete(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> impl std::future::Future<Output = Result<bool, dotmac_core::StorageError>> + Send {
        self.outbox.complete(tenant, seq, worker, now)
    }

    fn release(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        not_before: chrono::DateTime<chrono::Utc>,
        error: Option<&str>,
    ) -> impl std::future::Future<Output = Result<bool, dotmac_core::StorageError>> + Send {
        self.outbox.release(tenant, seq, worker, not_before, error)
    }

    fn park(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        error: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> impl std::future::Future<Output = Result<bool, dotmac_core::StorageError>> + Send {
        self.outbox.park(tenant, seq, worker, error, now)
    }

    fn requeue(
        &self,
        tenant: TenantId,
        seq: u64,
    ) -> impl std::future::Future<Output = Result<bool, dotmac_core::StorageError>> + Send {
        self.outbox.requeue(tenant, seq)
    }

    fn outbox_messages(
        &self,
        tenant: TenantId,
    ) -> impl std::future::Future<
        Output = Result<Vec<dotmac_core::outbox::OutboxMessage>, dotmac_core::StorageError>,
    > + Send {
        self.outbox.outbox_messages(tenant)
    }

    fn outbox_counts(
        &self,
        tenant: TenantId,
    ) -> impl std::future::Future<
        Output = Result<dotmac_core::outbox::OutboxCounts, dotmac_core::StorageError>,
    > + Send {
        self.outbox.outbox_counts(tenant)
    }
}

impl CatalogStore for MemoryStore {
    #[tracing::instrument(name = "dotmac.store.put_product", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_product(&self, tenant: TenantId, product: Product) -> Result<(), BillingError> {
        self.with(tenant, |t| {
            t.products.insert(product.id, product);
            Ok(())
        })
    }

    #[tracing::instrument(name = "dotmac.store.put_plan", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_plan(
        &self,
        tenant: TenantId,
        plan: Plan,
        events: Vec<OutboxEvent>,
    ) -> Result<(), BillingError> {
        plan.validate()?;
        self.write(tenant, |t, outbox| {
            if !t.products.contains_key(&plan.product) {
                return Err(BillingError::UnknownProduct(plan.product));
            }
            if let Some(old) = t.plans.get(&plan.id) {
                let kept = old.versions().len() <= plan.versions().len()
                    && old
                        .versions()
                        .iter()
                        .zip(plan.versions())
                        .all(|(a, b)| a == b);
                if !kept || old.interval != plan.interval || old.timing != plan.timing {
                    return Err(BillingError::InvalidPlan {
                        plan: plan.id,
                        reason: "stored price versions and the billing shape are immutable; add a version instead",
                    });
                }
            }
            write_events(outbox, tenant, events)?;
            t.plans.insert(plan.id, plan);
            Ok(())
        })
    }

    #[tracing::instrument(name = "dotmac.store.plan", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn plan(&self, tenant: TenantId, id: PlanId) -> Result<Option<Plan>, BillingError> {
        Ok(self.with(tenant, |t| t.plans.get(&id).cloned()))
    }

    #[tracing::instrument(name = "dotmac.store.plans", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn plans(&self, tenant: TenantId) -> Result<Vec<Plan>, BillingError> {
        Ok(self.with(tenant, |t| t.plans.values().cloned().collect()))
    }
}

impl SubscriptionStore for MemoryStore {
    #[tracing::instrument(name = "dotmac.store.put_account", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_account(
        &self,
        tenant: TenantId,
        account: CustomerAccount,
    ) -> Result<(), BillingError> {
        self.with(tenant, |t| {
            t.accounts.insert(account.customer, account);
            Ok(())
        })
    }

    #[tracing::instrument(name = "dotmac.store.account", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn account(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Option<CustomerAccount>, BillingError> {
        Ok(self.with(tenant, |t| t.accounts.get(&customer).cloned()))
    }

    #[tracing::instrument(name = "dotmac.store.accounts", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn accounts(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<Vec<CustomerAccount>, BillingError> {
        Ok(self.with(tenant, |t| {
            customers
                .iter()
                .filter_map(|c| t.accounts.get(c).cloned())
                .collect()
        }))
    }

    #[tracing::instrument(name = "dotmac.store.insert_subscription", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn insert_subscription(
        &self,
        tenant: TenantId,
        subscription: Subscription,
        events: Vec<OutboxEvent>,
    ) -> Result<(), BillingError> {
        self.write(tenant, |t, outbox| {
            if t.subscriptions.contains_key(&sub_key(subscription.id)) {
                return Err(BillingError::AlreadyExists {
                    what: "subscription",
                    id: subscription.id.to_string(),
                });
            }
            write_events(outbox, tenant, events)?;
            t.subscriptions
                .insert(sub_key(subscription.id), subscription);
            Ok(())
        })
    }

    #[tracing::instrument(name = "dotmac.store.subscription", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn subscription(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Option<Subscription>, BillingError> {
        Ok(self.with(tenant, |t| t.subscriptions.get(&sub_key(id)).cloned()))
    }

    #[tracing::instrument(name = "dotmac.store.subscriptions_page", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn subscriptions_page(
        &self,
        tenant: TenantId,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BillingError> {
        use std::ops::Bound;
        Ok(self.with(tenant, |t| {
            let lower = match after {
                Some(id) => Bound::Excluded(sub_key(id)),
                None => Bound::Unbounded,
            };
            t.subscriptions
                .range((lower, Bound::Unbounded))
                .take(limit)
                .map(|(_, s)| s.clone())
                .collect()
        }))
    }

    #[tracing::instrument(name = "dotmac.store.subscriptions_of", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn subscriptions_of(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<Subscription>, BillingError> {
        Ok(self.with(tenant, |t| {
            t.subscriptions
                .values()
                .filter(|s| s.customer == customer)
                .cloned()
                .collect()
        }))
    }
}

impl InvoiceStore for MemoryStore {
    #[tracing::instrument(name = "dotmac.store.add_pending_charge", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn add_pending_charge(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
        events: Vec<OutboxEvent>,
    ) -> Result<bool, BillingError> {
        self.write(tenant, |t, outbox| {
            t.add_pending(outbox, tenant, charge, events)
        })
    }

    #[tracing::instrument(name = "dotmac.store.pending_charges", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn pending_charges(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<PendingCharge>, BillingError> {
        Ok(self.with(tenant, |t| {
            t.pending.get(&customer).cloned().unwrap_or_default()
        }))
    }

    #[tracing::instrument(name = "dotmac.store.pending_charges_for", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, customers = customers.len()))]
    async fn pending_charges_for(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<Vec<PendingCharge>, BillingError> {
        Ok(self.with(tenant, |t| {
            customers
                .iter()
                .filter_map(|c| t.pending.get(c))
                .flatten()
                .cloned()
                .collect()
        }))
    }

    #[tracing::instrument(name = "dotmac.store.commit", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, invoices = commit.invoices.len()))]
    async fn commit(
        &self,
        tenant: TenantId,
        commit: BillingCommit,
    ) -> Result<CommitResult, BillingError> {
        self.write(tenant, |t, outbox| {
            let mut consumed = FastSet::default();
            let result = t.apply(outbox, tenant, commit, &mut consumed);
            t.remove_pending(&consumed);
            result
        })
    }

    #[tracing::instrument(name = "dotmac.store.commit_batch", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, commits = commits.len()))]
    async fn commit_batch(
        &self,
        tenant: TenantId,
        commits: Vec<BillingCommit>,
    ) -> Result<Vec<Result<CommitResult, BillingError>>, BillingError> {
        self.write(tenant, |t, outbox| {
            // One lock for the batch; consumed charges are removed in one pass at the end
            // (removal is idempotent, so this equals removing them commit by commit).
            let mut consumed = FastSet::default();
            t.reserve_invoices(commits.len());
            // Only a batch that writes events holds the outbox (from here to its end).
            if commits
                .iter()
                .any(|c| c.issued_at.is_some() || !c.events.is_empty())
            {
                outbox.reserve(commits.len());
            }
            let results = commits
                .into_iter()
                .map(|commit| t.apply(outbox, tenant, commit, &mut consumed))
                .collect();
            t.remove_pending(&consumed);
            Ok(results)
        })
    }

    #[tracing::instrument(name = "dotmac.store.invoice", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn invoice(
        &self,
        tenant: TenantId,
        id: InvoiceId,
    ) -> Result<Option<Invoice>, BillingError> {
        Ok(self.with(tenant, |t| t.invoice(id).cloned()))
    }

    #[tracing::instrument(name = "dotmac.store.invoices_of", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn invoices_of(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<Invoice>, BillingError> {
        Ok(self.with(tenant, |t| {
            let mut list: Vec<Invoice> = t.invoices_of(customer).cloned().collect();
            list.sort_by_key(|i| (i.issue_date, i.number));
            list
        }))
    }

    #[tracing::instrument(name = "dotmac.store.set_invoice_status", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn set_invoice_status(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        to: InvoiceStatus,
        events: Vec<OutboxEvent>,
    ) -> Result<Invoice, BillingError> {
        self.write(tenant, |t, outbox| {
            let invoice = t
                .invoice_index
                .get(&id)
                .and_then(|i| t.invoices.get_mut(*i))
                .ok_or(BillingError::InvoiceNotFound(id))?;
            let was = invoice.status;
            let mut next = invoice.clone();
            next.transition(to)?;
            write_events(outbox, tenant, events)?;
            if was == InvoiceStatus::Draft && to == InvoiceStatus::Open {
                next.number = Some(t.last_invoice_number.take_invoice(&next));
            }
            *invoice = next;
            Ok(invoice.clone())
        })
    }

    #[tracing::instrument(name = "dotmac.store.update_invoice", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn update_invoice(
        &self,
        tenant: TenantId,
        expected: Invoice,
        updated: Invoice,
        events: Vec<OutboxEvent>,
    ) -> Result<Invoice, BillingError> {
        crate::settlement::check_invoice_update(&expected, &updated)?;
        self.write(tenant, |t, outbox| {
            let invoice = t
                .invoice_index
                .get(&expected.id)
                .and_then(|i| t.invoices.get_mut(*i))
                .ok_or(BillingError::InvoiceNotFound(expected.id))?;
            if *invoice != expected {
                return Err(BillingError::InvoiceChanged(expected.id));
            }
            write_events(outbox, tenant, events)?;
            *invoice = updated;
            Ok(invoice.clone())
        })
    }

    #[tracing::instrument(name = "dotmac.store.insert_credit_note", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn insert_credit_note(
        &self,
        tenant: TenantId,
        note: CreditNote,
        events: Vec<OutboxEvent>,
    ) -> Result<CreditNote, BillingError> {
        self.write(tenant, |t, outbox| {
            t.insert_note(outbox, tenant, note, events)
        })
    }

    #[tracing::instrument(name = "dotmac.store.credit_notes_of", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn credit_notes_of(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Vec<CreditNote>, BillingError> {
        Ok(self.with(tenant, |t| {
            t.credit_notes.get(&invoice).cloned().unwrap_or_default()
        }))
    }

    #[tracing::instrument(name = "dotmac.store.idempotency_record", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, BillingError> {
        Ok(self.with(tenant, |t| t.idempotency.get(key).cloned()))
    }

    #[tracing::instrument(name = "dotmac.store.add_pending_charge_keyed", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn add_pending_charge_keyed(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
        keyed: &KeyedRequest,
        events: Vec<OutboxEvent>,
    ) -> Result<KeyedWrite<bool>, BillingError> {
        self.write(tenant, |t, outbox| {
            if let Some(earlier) = t.idempotency.get(&keyed.key) {
                return Ok(KeyedWrite::Replayed(Box::new(earlier.clone())));
            }
            let added = t.add_pending(outbox, tenant, charge, events)?;
            t.idempotency.insert(
                keyed.key.clone(),
                keyed.record(IdempotentResult::PendingCharge { added }),
            );
            Ok(KeyedWrite::Written(added))
        })
    }

    #[tracing::instrument(name = "dotmac.store.insert_credit_note_keyed", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn insert_credit_note_keyed(
        &self,
        tenant: TenantId,
        note: CreditNote,
        keyed: &KeyedRequest,
        events: Vec<OutboxEvent>,
    ) -> Result<KeyedWrite<CreditNote>, BillingError> {
        self.write(tenant, |t, outbox| {
            if let Some(earlier) = t.idempotency.get(&keyed.key) {
                return Ok(KeyedWrite::Replayed(Box::new(earlier.clone())));
            }
            let note = t.insert_note(outbox, tenant, note, events)?;
            t.idempotency.insert(
                keyed.key.clone(),
                keyed.record(IdempotentResult::CreditNote {
                    credit_note: note.clone(),
                }),
            );
            Ok(KeyedWrite::Written(note))
        })
    }
}
