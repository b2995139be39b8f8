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
//! | `collections.late_fee` | a pending charge on the next invoice, once per invoice and step |
//! | `collections.suspend_service` / `collections.restore_service` | the customer's subscriptions follow the dunning state now: suspended while an invoice is held suspended, else restored (with the restore's fee, once per invoice and step) |
//! | `collections.write_off` | the invoice becomes uncollectible |
//! | `payments.payment_received` | the customer's partner accrues commission ([`PartnersFollowCollections`]) |
//! | `payments.payment_refunded` | the commission the refunded payment earned is clawed back |
//! | `billing.subscription_suspended` / `billing.subscription_restored` | the subscription's network services are suspended for non-payment / restored (a provisioning command each, issue 13) |
//! | `billing.invoice_issued` | the tenant's platform usage counts one invoice issued ([`TenancyMeasuresUse`]) |
//! | `billing.subscription_changed` (in force today) | the subscription's services move to the technical profile of its plan ([`NetworkFollowsPlans`]) |
//! | `usage.session_accounted` | the session's growth counts into its service's fair-usage counters, once per event ([`FairUsageFollowsAccounting`]) |
//! | `customers.fair_usage_top_up` with a price | a pending charge on the subscription's next invoice, once per top-up ([`BillingFollowsFairUsage`]) |
//!
//! Every reaction is idempotent by the fact it carries (an invoice is entered once, a fee's
//! charge id is derived from the invoice and the step, a partner ledger records each event
//! once), or follows a state that only moves forward (a balance report older than the last
//! applied is ignored; suspensions follow collections' dunning state as it is when the event
//! is handled), so an event delivered again, even after newer ones, changes nothing.

use std::sync::Arc;

use chrono::NaiveDate;
use dotmac_billing::{
    AdjustmentId, BalanceUpdate, BillingError, BillingEvent, BillingService, BillingStore,
    InvoiceStatus, LineKind, PendingCharge, SubscriptionStatus,
};
use dotmac_collections::BalanceState;
use dotmac_collections::LedgerEntryKind;
use dotmac_collections::{
    CollectionEvent, CollectionsError, CollectionsService, DunningStore, PaymentStore,
};
use dotmac_core::outbox::{BoxFuture, EventHandler, HandlerError, OutboxMessage};
use dotmac_core::{
    Clock, CustomerId, IdDigest, InvoiceId, PaymentId, PendingChargeId, StorageErrorKind, TenantId,
};
use dotmac_customers::{
    AccountedSample, CustomerEvent, CustomerService, CustomersError, CustomersStore,
};
use dotmac_partners::{
    CollectedPayment, PartnerStore, PartnersError, PartnersService, RefundedPayment, RevenueTag,
    SourceId,
};
use dotmac_tenancy::{
    PlatformMetric, TenancyError, TenancyService, TenancyStore, UsageRecord, UsageRecordId,
};
use dotmac_usage::AccountingEvent;

/// The billing status an invoice has when the payments ledger reports `state` for it: what
/// [`BillingFollowsLedger`]'s reaction to a balance change writes (a void, which starts in
/// billing, is written there and only reported back). `None` for a state this version does not
/// know.
///
/// ```
/// use dotmac::billing::InvoiceStatus;
/// use dotmac::collections::BalanceState;
/// use dotmac::reactions::invoice_status_of;
///
/// assert_eq!(invoice_status_of(BalanceState::PartiallyPaid), Some(InvoiceStatus::PartiallyPaid));
/// assert_eq!(invoice_status_of(BalanceState::Void), Some(InvoiceStatus::Void));
/// ```
pub fn invoice_status_of(state: BalanceState) -> Option<InvoiceStatus> {
    match state {
        BalanceState::Open => Some(InvoiceStatus::Open),
        BalanceState::PartiallyPaid => Some(InvoiceStatus::PartiallyPaid),
        BalanceState::Paid => Some(InvoiceStatus::Paid),
        BalanceState::Uncollectible => Some(InvoiceStatus::Uncollectible),
        BalanceState::Void => Some(InvoiceStatus::Void),
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
                    dotmac_billing::InvoiceStatus::Uncollectible => match self
                        .collections
                        .write_off_invoice(tenant, customer, invoice, on)
                        .await
                    {
                        // Billing voided it since (uncollectible → void; never the other way):
                        // this write-off came again after the void.
                        Err(CollectionsError::InvoiceVoided(_)) => Ok(()),
                        done => done.map(drop),
                    },
                    _ => Ok(()),
                },
                _ => Ok(()),
            };
            done.map_err(collections_failure)
        })
    }
}

/// Collections' events, carried into billing: invoice statuses, applied credit, fees,
/// suspensions. Reads collections' dunning state for suspensions (see
/// [`CollectionsService::holds_suspended`]).
pub struct BillingFollowsLedger<S, P, D, C> {
    billing: BillingService<S, C>,
    collections: CollectionsService<P, D, C>,
}

impl<S, P, D, C> BillingFollowsLedger<S, P, D, C> {
    /// The handler over `billing`, reading `collections`' dunning state.
    pub fn new(billing: BillingService<S, C>, collections: CollectionsService<P, D, C>) -> Self {
        BillingFollowsLedger {
            billing,
            collections,
        }
    }
}

impl<S, P, D, C> BillingFollowsLedger<S, P, D, C>
where
    S: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
    C: Clock + 'static,
{
    /// Whether billing's invoice is void (billing voids; the ledger follows).
    async fn is_void(&self, tenant: TenantId, invoice: InvoiceId) -> Result<bool, HandlerError> {
        let stored = self
            .billing
            .store()
            .invoice(tenant, invoice)
            .await
            .map_err(billing_failure)?;
        Ok(stored.is_some_and(|i| i.status == InvoiceStatus::Void))
    }

    /// A suspension or a restore: billing's subscriptions follow the dunning state as it is
    /// now, not the event (which may come again after newer ones): suspended while dunning
    /// holds one of the customer's invoices suspended, restored (with the restore's fee,
    /// once per invoice and step) when it holds none and a subscription is suspended.
    async fn follow_suspension(
        &self,
        tenant: TenantId,
        fired: &dotmac_collections::FiredAction,
    ) -> Result<(), HandlerError> {
        let suspended = self
            .collections
            .holds_suspended(tenant, fired.customer)
            .await
            .map_err(collections_failure)?;
        match fired.action {
            dotmac_collections::CollectionAction::Suspend if suspended => self
                .billing
                .suspend_customer(tenant, fired.customer, fired.on)
                .await
                .map(drop),
            dotmac_collections::CollectionAction::Restore if !suspended => {
                let subscriptions = self
                    .billing
                    .store()
                    .subscriptions_of(tenant, fired.customer)
                    .await
                    .map_err(billing_failure)?;
                if !subscriptions
                    .iter()
                    .any(|s| s.status() == SubscriptionStatus::Suspended)
                {
                    return Ok(());
                }
                if let Some(charge) = fired.pending_charge() {
                    self.billing
                        .add_pending_charge(tenant, charge)
                        .await
                        .map_err(billing_failure)?;
                }
                self.billing
                    .restore_customer(tenant, fired.customer, fired.on)
                    .await
                    .map(drop)
            }
            _ => Ok(()),
        }
        .map_err(billing_failure)
    }
}

impl<S, P, D, C> EventHandler for BillingFollowsLedger<S, P, D, C>
where
    S: BillingStore + 'static,
    P: PaymentStore + 'static,
    D: DunningStore + 'static,
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
                    let Some(state) =
                        invoice_status_of(balance.state).filter(|s| *s != InvoiceStatus::Void)
                    else {
                        // A void starts in billing (the invoice is void already); a state
                        // this version does not know changes nothing.
                        return Ok(());
                    };
                    // A void invoice stays void: a balance reported before the void and
                    // delivered again is stale.
                    if self.is_void(tenant, balance.invoice).await? {
                        return Ok(());
                    }
                    let update = BalanceUpdate {
                        settled: balance.settled,
                        credited: balance.credited,
                        written_off: balance.written_off,
                        open: balance.open,
                        state,
                        ledger_sequence: balance.ledger_sequence,
                    };
                    self.billing
                        .apply_balance(tenant, balance.invoice, update)
                        .await
                        .map(drop)
                }
                CollectionEvent::CreditApplied(applied) => {
                    // Billing voided the invoice before the ledger applied the credit to it
                    // (the ledger's void released the credit back to the customer): there is
                    // nothing to show on a void invoice.
                    if self.is_void(tenant, applied.invoice).await? {
                        return Ok(());
                    }
                    // One line per application: its id is the event's.
                    let line = AdjustmentId::derived(
                        IdDigest::new("credit-applied").uuid(message.id.as_uuid()),
                    );
                    self.billing
                        .apply_credit(tenant, applied.invoice, applied.amount, applied.on, line)
                        .await
                        .map(drop)
                }
                CollectionEvent::Action(fired) => match fired.action {
                    dotmac_collections::CollectionAction::Suspend
                    | dotmac_collections::CollectionAction::Restore => {
                        return self.follow_suspension(tenant, &fired).await;
                    }
                    _ => {
                        if let Some(charge) = fired.pending_charge() {
                            self.billing
                                .add_pending_charge(tenant, charge)
                                .await
                                .map_err(billing_failure)?;
                        }
                        if fired.action == dotmac_collections::CollectionAction::WriteOff {
                            write_off_once(&self.billing, tenant, fired.invoice, fired.on).await
                        } else {
                            Ok(())
                        }
                    }
                },
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

/// Plan changes, carried to the network: a `billing.subscription_changed` in force today (in
/// the tenant's zone) moves the subscription's services to the technical profile of the plan
/// it is on today ([`CustomerService::follow_plan`]): an upgrade's speed reaches FreeRADIUS
/// through a provisioning command. A replayed event changes nothing (the services are on the
/// profile already). A change dated later (a downgrade at the period's end) is not in force
/// when its event is handled: the embedder's daily job calls `follow_plan` on its date.
pub struct NetworkFollowsPlans<B, S, C> {
    billing: BillingService<B, C>,
    customers: CustomerService<S, C>,
}

impl<B, S, C> NetworkFollowsPlans<B, S, C> {
    /// The handler over `billing` (its subscriptions and zone) and `customers`.
    pub fn new(billing: BillingService<B, C>, customers: CustomerService<S, C>) -> Self {
        NetworkFollowsPlans { billing, customers }
    }
}

impl<B, S, C> EventHandler for NetworkFollowsPlans<B, S, C>
where
    B: BillingStore + 'static,
    S: CustomersStore + 'static,
    C: Clock + 'static,
{
    fn name(&self) -> &str {
        "network-follows-plans"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "billing.subscription_changed"
    }

    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let event: BillingEvent = message.decode().map_err(HandlerError::permanent)?;
            let BillingEvent::SubscriptionChanged {
                subscription,
                effective,
                ..
            } = event
            else {
                return Ok(());
            };
            let today = self.billing.clock().today_in(self.billing.settings().zone);
            if effective > today {
                return Ok(());
            }
            let Some(sub) = self
                .billing
                .store()
                .subscription(message.tenant, subscription)
                .await
                .map_err(billing_failure)?
            else {
                return Ok(());
            };
            let Some(plan) = sub.plan_on(today) else {
                return Ok(());
            };
            self.customers
                .follow_plan(message.tenant, subscription, plan)
                .await
                .map(drop)
                .map_err(customers_failure)
        })
    }
}

/// Accounting, counted into fair usage: each `usage.session_accounted` (a RADIUS session's
/// growth, written by the `radacct` reader with the usage it stored) is counted into the
/// fair-usage counters of the service of its user name
/// ([`CustomerService::record_accounted_usage`]) at the event's outbox position, so a
/// redelivered event counts nothing; a slowdown or block it causes is a provisioning command
/// like any other. A user name no service of the tenant has is not ours (another system's
/// subscriber on the same NAS): it counts nothing.
pub struct FairUsageFollowsAccounting<S, C> {
    customers: CustomerService<S, C>,
}

impl<S, C> FairUsageFollowsAccounting<S, C> {
    /// The handler over `customers`.
    pub fn new(customers: CustomerService<S, C>) -> Self {
        FairUsageFollowsAccounting { customers }
    }
}

impl<S, C> EventHandler for FairUsageFollowsAccounting<S, C>
where
    S: CustomersStore + 'static,
    C: Clock + 'static,
{
    fn name(&self) -> &str {
        "fair-usage-follows-accounting"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "usage.session_accounted"
    }

    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let event: AccountingEvent = message.decode().map_err(HandlerError::permanent)?;
            let AccountingEvent::SessionAccounted {
                username,
                at,
                download,
                upload,
                ..
            } = event
            else {
                return Ok(());
            };
            let Some(service) = self
                .customers
                .store()
                .service_by_username(message.tenant, &username)
                .await
                .map_err(customers_failure)?
            else {
                return Ok(());
            };
            self.customers
                .record_accounted_usage(
                    message.tenant,
                    service.id(),
                    message.seq,
                    AccountedSample::new(at, download, upload),
                )
                .await
                .map(drop)
                .map_err(customers_failure)
        })
    }
}

/// The platform's measurement of its tenants, from their own events: every
/// `billing.invoice_issued` counts one invoice issued in the tenant's platform usage
/// ([`TenancyService::record_usage`], at the event's instant), under a record id derived from
/// the event's, so a redelivered event counts nothing. (Usage events ingested are counted by
/// the SQL store in the transaction that stores them.) A tenant the tenancy store does not
/// know (never registered) is not metered: its events count nothing.
pub struct TenancyMeasuresUse<S, C> {
    tenancy: TenancyService<S, C>,
}

impl<S, C> TenancyMeasuresUse<S, C> {
    /// The handler over `tenancy`.
    pub fn new(tenancy: TenancyService<S, C>) -> Self {
        TenancyMeasuresUse { tenancy }
    }
}

impl<S, C> EventHandler for TenancyMeasuresUse<S, C>
where
    S: TenancyStore + 'static,
    C: Clock + 'static,
{
    fn name(&self) -> &str {
        "tenancy-measures-use"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "billing.invoice_issued"
    }

    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let id = UsageRecordId::derived(
                IdDigest::new("tenancy.invoice_issued").uuid(message.id.as_uuid()),
            );
            let record =
                UsageRecord::new(id, PlatformMetric::InvoicesIssued, message.occurred_at, 1);
            match self.tenancy.record_usage(message.tenant, &[record]).await {
                Ok(_) | Err(TenancyError::UnknownTenant(_)) => Ok(()),
                Err(TenancyError::Storage(e))
                    if matches!(
                        e.kind(),
                        StorageErrorKind::Unavailable | StorageErrorKind::Conflict
                    ) =>
                {
                    Err(HandlerError::retryable(TenancyError::Storage(e)))
                }
                Err(e) => Err(HandlerError::permanent(e)),
            }
        })
    }
}

/// Fair-usage top-ups, charged: a `customers.fair_usage_top_up` with a price (Splynx's
/// "block and charge": a blocked customer buys data, `CustomerService::top_up`) becomes a
/// one-off pending charge on the subscription's next invoice, dated the day it was bought.
/// Its id is derived from the top-up's, so a redelivered event (or the same top-up written
/// again) charges once. A free top-up charges nothing.
pub struct BillingFollowsFairUsage<S, C> {
    billing: BillingService<S, C>,
}

impl<S, C> BillingFollowsFairUsage<S, C> {
    /// The handler over `billing`.
    pub fn new(billing: BillingService<S, C>) -> Self {
        BillingFollowsFairUsage { billing }
    }
}

/// The pending charge of a priced top-up: one unit at its price, on the subscription's next
/// invoice; its id derived from the top-up's.
fn top_up_charge(event: &CustomerEvent) -> Option<PendingCharge> {
    let CustomerEvent::FairUsageTopUp {
        customer,
        subscription,
        top_up,
        bytes,
        price: Some(price),
        on,
        ..
    } = event
    else {
        return None;
    };
    let id = PendingChargeId::derived(IdDigest::new("fair-usage-top-up").uuid(top_up.as_uuid()));
    Some(PendingCharge {
        id,
        customer: *customer,
        subscription: Some(*subscription),
        kind: LineKind::OneOff,
        text: Some(format!("Data top-up: {} MB", bytes / (1 << 20))),
        period: None,
        quantity: rust_decimal::Decimal::ONE,
        unit_price: *price,
        price: None,
        created_on: *on,
    })
}

impl<S, C> EventHandler for BillingFollowsFairUsage<S, C>
where
    S: BillingStore + 'static,
    C: Clock + 'static,
{
    fn name(&self) -> &str {
        "billing-follows-fair-usage"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "customers.fair_usage_top_up"
    }

    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let event: CustomerEvent = message.decode().map_err(HandlerError::permanent)?;
            let Some(charge) = top_up_charge(&event) else {
                return Ok(());
            };
            self.billing
                .add_pending_charge(message.tenant, charge)
                .await
                .map(drop)
                .map_err(billing_failure)
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
        Arc::new(LedgerFollowsBilling::new(collections.clone())),
        Arc::new(BillingFollowsLedger::new(billing, collections)),
    ]
}

fn partners_failure(error: PartnersError) -> HandlerError {
    if error.is_retryable() {
        HandlerError::retryable(error)
    } else {
        HandlerError::permanent(error)
    }
}

/// Collections' payments and refunds, carried into the partners' ledgers: a payment accrues
/// commission for the partner its customer is attributed to on the payment's day (and its
/// master agent's override), a refund claws back what the refunded payment earned. Each event
/// is written once (its id is the ledger write's [`SourceId`]): a redelivered event accrues
/// and claws back nothing.
///
/// Revenue is tagged with the plan (and product) the customer pays for when it has one plan
/// in service that day, read from `billing`'s store, so a plan's or product's commission rate
/// applies.
pub struct PartnersFollowCollections<P, B, C> {
    partners: PartnersService<P, C>,
    billing: BillingService<B, C>,
}

impl<P, B, C> PartnersFollowCollections<P, B, C> {
    /// The handler over `partners`, reading subscriptions and plans through `billing`.
    pub fn new(partners: PartnersService<P, C>, billing: BillingService<B, C>) -> Self {
        PartnersFollowCollections { partners, billing }
    }
}

impl<P, B, C> PartnersFollowCollections<P, B, C>
where
    P: PartnerStore,
    B: BillingStore,
    C: Clock,
{
    /// The plan and product of the customer's one plan in service on `on`, if it has one.
    async fn tag(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        on: NaiveDate,
    ) -> Result<RevenueTag, BillingError> {
        let store = self.billing.store();
        let mut plans: Vec<_> = store
            .subscriptions_of(tenant, customer)
            .await?
            .iter()
            .filter(|s| s.in_service_on(on))
            .filter_map(|s| s.plan_on(on))
            .collect();
        plans.sort_unstable();
        plans.dedup();
        let [plan] = plans[..] else {
            return Ok(RevenueTag::default());
        };
        let product = store.plan(tenant, plan).await?.map(|p| p.product);
        Ok(RevenueTag {
            product,
            plan: Some(plan),
        })
    }
}

impl<P, B, C> EventHandler for PartnersFollowCollections<P, B, C>
where
    P: PartnerStore + 'static,
    B: BillingStore + 'static,
    C: Clock + 'static,
{
    fn name(&self) -> &str {
        "partners-follow-collections"
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "payments.payment_received" | "payments.payment_refunded"
        )
    }

    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let CollectionEvent::Ledger(entry) =
                message.decode().map_err(HandlerError::permanent)?
            else {
                return Ok(());
            };
            let tenant = message.tenant;
            let source = SourceId::of_event(message.id);
            let (customer, on) = (entry.customer, entry.on);
            match entry.kind {
                LedgerEntryKind::PaymentReceived { payment, amount } => {
                    // A customer no partner holds that day: nothing to look up.
                    let record = self
                        .partners
                        .attribution(tenant, customer)
                        .await
                        .map_err(partners_failure)?;
                    if record.partner_on(on).is_none() {
                        return Ok(());
                    }
                    let tag = self
                        .tag(tenant, customer, on)
                        .await
                        .map_err(billing_failure)?;
                    let paid = CollectedPayment {
                        customer,
                        payment,
                        amount,
                        on,
                        tag,
                    };
                    self.partners
                        .record_payment(tenant, source, paid)
                        .await
                        .map(drop)
                }
                LedgerEntryKind::Refunded { payment, amount } => {
                    let refund = RefundedPayment {
                        customer,
                        // The ledger entry names the payment; the refund is the event.
                        refund: PaymentId::derived(
                            IdDigest::new("partners-refund").uuid(message.id.as_uuid()),
                        ),
                        payment: Some(payment),
                        amount,
                        on,
                    };
                    self.partners
                        .record_refund(tenant, source, refund)
                        .await
                        .map(drop)
                }
                _ => Ok(()),
            }
            .map_err(partners_failure)
        })
    }
}
