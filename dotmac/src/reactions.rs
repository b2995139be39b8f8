//! The reactions that cross crates: outbox handlers that make billing and collections one
//! system (see `docs/order-to-cash.md`).
//!
//! No domain crate knows another's services; each writes its events to the outbox with the
//! change that produced them, and these handlers, run by a
//! [`Dispatcher`](crate::outbox::Dispatcher), carry each event to the other side:
//!
//! | event | reaction |
//! |---|---|
//! | `billing.invoice_issued` | the invoice is entered in the customer's ledger (customer credit is applied to it) |
//! | `billing.credit_note_issued` | the ledger credits the invoice (the excess becomes credit or a refund) |
//! | `billing.invoice_status_changed` to void / uncollectible | the ledger voids / writes it off |
//! | `collections.invoice_balance_changed` | the invoice's status and paid amount follow the ledger |
//! | `collections.credit_applied` | the invoice shows the customer credit applied to it |
//! | `collections.late_fee`, `collections.restore_service` with a fee | a pending charge on the next invoice, once per invoice and step |
//! | `collections.suspend_service` / `collections.restore_service` | the customer's subscriptions are suspended / restored |
//! | `collections.write_off` | the invoice becomes uncollectible |
//! | `billing.subscription_suspended` / `billing.subscription_restored` | the subscription's network services are suspended for non-payment / restored (a provisioning command each, issue 13) |
//!
//! Every reaction is idempotent by the fact it carries (an invoice is entered once, a fee's
//! charge id is derived from the invoice and the step), so a redelivered event changes
//! nothing.

use std::sync::Arc;

use chrono::NaiveDate;
use dotmac_billing::{
    AdjustmentId, BalanceUpdate, BillingError, BillingEvent, BillingService, BillingStore,
    InvoiceStatus,
};
use dotmac_collections::BalanceState;
use dotmac_collections::{
    CollectionEvent, CollectionsError, CollectionsService, DunningStore, PaymentStore,
};
use dotmac_core::outbox::{BoxFuture, EventHandler, HandlerError, OutboxMessage};
use dotmac_core::{Clock, IdDigest, InvoiceId, StorageErrorKind, TenantId};
use dotmac_customers::{CustomerService, CustomersError, CustomersStore};

/// The billing status of a ledger state; `None` for a void, which billing starts.
fn invoice_status(state: BalanceState) -> Option<InvoiceStatus> {
    match state {
        BalanceState::Open => Some(InvoiceStatus::Open),
        BalanceState::PartiallyPaid => Some(InvoiceStatus::PartiallyPaid),
        BalanceState::Paid => Some(InvoiceStatus::Paid),
        BalanceState::Uncollectible => Some(InvoiceStatus::Uncollectible),
        _ => None,
    }
}

/// Writes an invoice off unless it is already written off (a redelivered step).
async fn write_off_once<S: BillingStore, C: Clock>(
    billing: &BillingService<S, C>,
    tenant: TenantId,
    invoice: InvoiceId,
    on: NaiveDate,
) -> Result<(), BillingError> {
    match billing.store().invoice(tenant, invoice).await? {
        Some(stored) if stored.status == InvoiceStatus::Uncollectible => Ok(()),
        _ => billing
            .write_off_invoice(tenant, invoice, on)
            .await
            .map(drop),
    }
}

/// Whether a failure may pass when tried again: only a store that was unavailable.
fn billing_failure(error: BillingError) -> HandlerError {
    match &error {
        BillingError::Storage(e) if e.kind() == StorageErrorKind::Unavailable => {
            HandlerError::retryable(error)
        }
        BillingError::ConcurrentUpdate { .. } | BillingError::InvoiceChanged(_) => {
            HandlerError::retryable(error)
        }
        _ => HandlerError::permanent(error),
    }
}

fn collections_failure(error: CollectionsError) -> HandlerError {
    match &error {
        CollectionsError::Storage(e)
            if matches!(
                e.kind(),
                StorageErrorKind::Unavailable | StorageErrorKind::Conflict
            ) =>
        {
            HandlerError::retryable(error)
        }
        _ => HandlerError::permanent(error),
    }
}

/// Billing's events, carried into collections' ledger.
pub struct LedgerFollowsBilling<P, D, C> {
    collections: CollectionsService<P, D, C>,
}

impl<P, D, C> LedgerFollowsBilling<P, D, C> {
    /// The handler over `collections`.
    pub fn new(collections: CollectionsService<P, D, C>) -> Self {
        LedgerFollowsBilling { collections }
    }
}

impl<P, D, C> EventHandler for LedgerFollowsBilling<P, D, C>
where
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    C: Clock + 'static,
{
    fn name(&self) -> &str {
        "ledger-follows-billing"
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "billing.invoice_issued"
                | "billing.credit_note_issued"
                | "billing.invoice_status_changed"
        )
    }

    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let event: BillingEvent = message.decode().map_err(HandlerError::permanent)?;
            let tenant = message.tenant;
            let done = match event {
                BillingEvent::InvoiceIssued {
                    invoice,
                    customer,
                    total,
                    issued,
                    due_date,
                    ..
                } => self
                    .collections
                    .enter_invoice(
                        tenant,
                        dotmac_collections::InvoiceToEnter {
                            invoice,
                            customer,
                            total,
                            issued,
                            due: due_date,
                        },
                    )
                    .await
                    .map(drop),
                BillingEvent::CreditNoteIssued {
                    credit_note,
                    invoice,
                    customer,
                    amount,
                    issued,
                    settlement,
                    ..
                } => self
                    .collections
                    .enter_credit_note(
                        tenant,
                        dotmac_collections::CreditNoteToEnter {
                            credit_note,
                            invoice,
                            customer,
                            amount,
                            issued,
                            settlement,
                        },
                    )
                    .await
                    .map(drop),
                BillingEvent::InvoiceStatusChanged {
                    invoice,
                    customer,
                    to,
                    on,
                    ..
                } => match to {
                    dotmac_billing::InvoiceStatus::Void => self
                        .collections
                        .void_invoice(tenant, customer, invoice, on)
                        .await
                        .map(drop),
                    dotmac_billing::InvoiceStatus::Uncollectible => self
                        .collections
                        .write_off_invoice(tenant, customer, invoice, on)
                        .await
                        .map(drop),
                    _ => Ok(()),
                },
                _ => Ok(()),
            };
            done.map_err(collections_failure)
        })
    }
}

/// Collections' events, carried into billing: invoice statuses, applied credit, fees,
/// suspensions.
pub struct BillingFollowsLedger<S, C> {
    billing: BillingService<S, C>,
}

impl<S, C> BillingFollowsLedger<S, C> {
    /// The handler over `billing`.
    pub fn new(billing: BillingService<S, C>) -> Self {
        BillingFollowsLedger { billing }
    }
}

impl<S, C> EventHandler for BillingFollowsLedger<S, C>
where
    S: BillingStore + 'static,
    C: Clock + 'static,
{
    fn name(&self) -> &str {
        "billing-follows-ledger"
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "collections.invoice_balance_changed"
                | "collections.credit_applied"
                | "collections.late_fee"
                | "collections.suspend_service"
                | "collections.restore_service"
                | "collections.write_off"
        )
    }

    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let event: CollectionEvent = message.decode().map_err(HandlerError::permanent)?;
            let tenant = message.tenant;
            match event {
                CollectionEvent::InvoiceBalanceChanged(balance) => {
                    let Some(state) = invoice_status(balance.state) else {
                        // A void starts in billing (the invoice is void already).
                        return Ok(());
                    };
                    // A void invoice stays void: a balance reported before the void and
                    // delivered again is stale.
                    let stored = self
                        .billing
                        .store()
                        .invoice(tenant, balance.invoice)
                        .await
                        .map_err(billing_failure)?;
                    if stored.is_some_and(|i| i.status == InvoiceStatus::Void) {
                        return Ok(());
                    }
                    let update = BalanceUpdate {
                        settled: balance.settled,
                        credited: balance.credited,
                        written_off: balance.written_off,
                        open: balance.open,
                        state,
                    };
                    self.billing
                        .apply_balance(tenant, balance.invoice, update)
                        .await
                        .map(drop)
                }
                CollectionEvent::CreditApplied(applied) => {
                    // One line per application: its id is the event's.
                    let line = AdjustmentId::derived(
                        IdDigest::new("credit-applied").uuid(message.id.as_uuid()),
                    );
                    self.billing
                        .apply_credit(tenant, applied.invoice, applied.amount, applied.on, line)
                        .await
                        .map(drop)
                }
                CollectionEvent::Action(fired) => {
                    if let Some(charge) = fired.pending_charge() {
                        self.billing
                            .add_pending_charge(tenant, charge)
                            .await
                            .map_err(billing_failure)?;
                    }
                    match fired.action {
                        dotmac_collections::CollectionAction::Suspend => self
                            .billing
                            .suspend_customer(tenant, fired.customer, fired.on)
                            .await
                            .map(drop),
                        dotmac_collections::CollectionAction::Restore => self
                            .billing
                            .restore_customer(tenant, fired.customer, fired.on)
                            .await
                            .map(drop),
                        dotmac_collections::CollectionAction::WriteOff => {
                            write_off_once(&self.billing, tenant, fired.invoice, fired.on).await
                        }
                        _ => Ok(()),
                    }
                }
                _ => Ok(()),
            }
            .map_err(billing_failure)
        })
    }
}

/// Billing's suspensions and restores, carried to the network: the subscription's services
/// are suspended for non-payment or restored, each change a provisioning command in the
/// outbox (see `dotmac_customers::provisioning`). A replayed event changes nothing.
pub struct NetworkFollowsBilling<S, C> {
    customers: CustomerService<S, C>,
}

impl<S, C> NetworkFollowsBilling<S, C> {
    /// The handler over `customers`.
    pub fn new(customers: CustomerService<S, C>) -> Self {
        NetworkFollowsBilling { customers }
    }
}

fn customers_failure(error: CustomersError) -> HandlerError {
    if error.is_retryable() {
        HandlerError::retryable(error)
    } else {
        HandlerError::permanent(error)
    }
}

impl<S, C> EventHandler for NetworkFollowsBilling<S, C>
where
    S: CustomersStore + 'static,
    C: Clock + 'static,
{
    fn name(&self) -> &str {
        "network-follows-billing"
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "billing.subscription_suspended" | "billing.subscription_restored"
        )
    }

    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let event: BillingEvent = message.decode().map_err(HandlerError::permanent)?;
            let tenant = message.tenant;
            match event {
                BillingEvent::SubscriptionSuspended { subscription, .. } => self
                    .customers
                    .subscription_suspended(tenant, subscription)
                    .await
                    .map(drop),
                BillingEvent::SubscriptionRestored { subscription, .. } => self
                    .customers
                    .subscription_restored(tenant, subscription)
                    .await
                    .map(drop),
                _ => Ok(()),
            }
            .map_err(customers_failure)
        })
    }
}

/// Every order-to-cash handler over `billing` and `collections`, for a
/// [`Dispatcher`](crate::outbox::Dispatcher).
pub fn order_to_cash<S, P, D, C>(
    billing: BillingService<S, C>,
    collections: CollectionsService<P, D, C>,
) -> Vec<Arc<dyn EventHandler>>
where
    S: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    C: Clock + 'static,
{
    vec![
        Arc::new(LedgerFollowsBilling::new(collections)),
        Arc::new(BillingFollowsLedger::new(billing)),
    ]
}
