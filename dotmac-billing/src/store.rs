//! Storage traits for the catalogue, subscriptions and invoices.
//!
//! Every method takes the [`TenantId`] it works in; nothing is shared between tenants. The
//! traits use native `async fn` (returning `impl Future + Send`), so they are not object safe:
//! services are generic over the store. [`MemoryStore`](crate::MemoryStore) implements them for
//! tests and examples; `dotmac-sqlx` for SQLite and PostgreSQL. The same behaviour suite
//! (`testkit`, behind the `testkit` feature) runs against every implementation.

use std::future::Future;

use chrono::NaiveDate;
use dotmac_core::{
    Currency, CustomerId, InvoiceId, Money, PendingChargeId, PlanId, SubscriptionId, TenantId,
};
use serde::{Deserialize, Serialize};

use crate::catalog::{Plan, Product};
use crate::error::BillingError;
use crate::idempotency::{IdempotencyKey, IdempotencyRecord, KeyedRequest, KeyedWrite};
use crate::invoice::{CreditNote, DocumentNumber, Invoice, InvoiceStatus, PendingCharge};
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
/// none of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
    /// Its due date.
    pub due_date: NaiveDate,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitResult {
    /// The documents issued (status `open`), with their numbers, in commit order.
    pub issued: Vec<IssuedInvoice>,
    /// Documents skipped because their key was already stored.
    pub duplicates: usize,
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
    /// version would change or disappear.
    fn put_plan(
        &self,
        tenant: TenantId,
        plan: Plan,
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

    /// Inserts a new subscription. Errors: [`BillingError::AlreadyExists`].
    fn insert_subscription(
        &self,
        tenant: TenantId,
        subscription: Subscription,
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
    /// Adds a pending charge for the customer's next invoice. Returns `false` (and changes
    /// nothing) when a charge with the same id is already pending or was already invoiced.
    fn add_pending_charge(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
    ) -> impl Future<Output = Result<bool, BillingError>> + Send;

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

    /// Moves an invoice to `to` (a draft moving to open gets the next number).
    /// Errors: [`BillingError::InvoiceNotFound`], [`BillingError::IllegalInvoiceTransition`].
    fn set_invoice_status(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        to: InvoiceStatus,
    ) -> impl Future<Output = Result<Invoice, BillingError>> + Send;

    /// Stores a credit note, numbering it from the tenant's credit-note sequence. The store
    /// re-checks it against the notes already stored for the invoice.
    fn insert_credit_note(
        &self,
        tenant: TenantId,
        note: CreditNote,
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
    /// when the key is already recorded nothing is written and the stored record is returned.
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
    ) -> impl Future<Output = Result<KeyedWrite<bool>, BillingError>> + Send {
        let _ = (tenant, charge, keyed);
        async { Err(crate::idempotency::unsupported()) }
    }

    /// [`Self::insert_credit_note`] and the record of `keyed` (with
    /// [`IdempotentResult::CreditNote`](crate::IdempotentResult::CreditNote), the note as
    /// numbered), atomically: when the key is already recorded nothing is written and the
    /// stored record is returned.
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
    ) -> impl Future<Output = Result<KeyedWrite<CreditNote>, BillingError>> + Send {
        let _ = (tenant, note, keyed);
        async { Err(crate::idempotency::unsupported()) }
    }
}

/// A store that holds everything billing needs.
pub trait BillingStore: CatalogStore + SubscriptionStore + InvoiceStore {}

impl<T: CatalogStore + SubscriptionStore + InvoiceStore> BillingStore for T {}
