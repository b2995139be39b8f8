//! Collections (dunning): a schedule of steps relative to an invoice's due date that escalates an
//! unpaid invoice from a reminder to suspension and write-off, and restores service on payment.
//!
//! # How an evaluation works
//!
//! [`evaluate`] is a pure function of the policy, the invoice, the payments applied to it, the
//! day and the [`DunningState`] recorded so far. It replays the whole schedule up to `today` from
//! scratch (a step fires on its day when the open balance after that day's payments is above the
//! policy's minimum) and emits only the actions the state has not recorded yet. This makes it
//! idempotent (evaluating the same day twice fires nothing twice) and self-healing (a day the
//! scheduler missed is caught up at the next run, with the action dated on its scheduled day).
//!
//! * A step fires on its day or never: a step whose day passed while the balance was at or
//!   below the minimum does not fire later when the balance grows again.
//! * The grace period moves every step scheduled after the due date (`days_after_due > 0`) later
//!   by `grace_days`; reminders before or on the due date stay where they are.
//! * A suspension that falls on a blocked weekday or date moves to the next allowed day (and is
//!   checked against the balance of that day).
//! * With [`RestoreOnPayment::Restore`], a payment that settles the invoice after a suspension
//!   fires [`CollectionAction::Restore`] that day, carrying the optional reconnection fee.
//! * Fees (on any step, and the reconnection fee) are amounts in the invoice's currency; they
//!   come out on the action for the embedding service to add to the customer's next invoice.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use chrono_tz::Tz;
use dotmac_core::{
    Clock, Currency, CustomerId, DomainEvent, EventPayload, InvoiceId, Money, PaymentId, TenantId,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::invoice::{LineKind, PendingCharge, PendingChargeId};
use crate::payments::{AllocationTarget, CustomerLedger, LedgerEntry, PaymentStore};
use crate::usage::stable_id;

/// The most steps a policy may have (the state keeps one bit per step and one per restore).
pub const MAX_DUNNING_STEPS: usize = 32;

/// What a collections step (or a payment after suspension) does.
///
/// Serialized in snake case (`"overdue_notice"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CollectionAction {
    /// A friendly reminder, usually before the due date.
    Reminder,
    /// The invoice is overdue.
    OverdueNotice,
    /// A late fee is charged (the step's fee).
    LateFee,
    /// Service is suspended.
    Suspend,
    /// The debt is written off as uncollectible.
    WriteOff,
    /// Service is restored after a payment settled a suspended invoice. Never a policy step.
    Restore,
}

impl CollectionAction {
    /// The stable event name of this action.
    pub fn event_type(self) -> &'static str {
        match self {
            CollectionAction::Reminder => "collections.reminder",
            CollectionAction::OverdueNotice => "collections.overdue_notice",
            CollectionAction::LateFee => "collections.late_fee",
            CollectionAction::Suspend => "collections.suspend_service",
            CollectionAction::WriteOff => "collections.write_off",
            CollectionAction::Restore => "collections.restore_service",
        }
    }
}

impl std::str::FromStr for CollectionAction {
    type Err = BillingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reminder" => Ok(CollectionAction::Reminder),
            "overdue_notice" => Ok(CollectionAction::OverdueNotice),
            "late_fee" => Ok(CollectionAction::LateFee),
            "suspend" => Ok(CollectionAction::Suspend),
            "write_off" => Ok(CollectionAction::WriteOff),
            "restore" => Ok(CollectionAction::Restore),
            _ => Err(BillingError::InvalidConfiguration {
                what: "collection action",
                reason: "expected reminder, overdue_notice, late_fee, suspend, write_off or restore",
            }),
        }
    }
}

/// One step of a policy: an action on `due + days_after_due` (plus grace), optionally with a fee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DunningStep {
    /// Days relative to the due date (negative: before it).
    pub days_after_due: i32,
    /// What the step does.
    pub action: CollectionAction,
    /// A fee charged when the step fires, in the invoice's currency.
    pub fee: Option<Decimal>,
}

/// What a payment that settles a suspended invoice does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreOnPayment {
    /// Nothing: restoring is left to an operator.
    Manual,
    /// Fire [`CollectionAction::Restore`] on the day of the settling payment.
    Restore {
        /// A reconnection fee for the next invoice, in the invoice's currency.
        reconnection_fee: Option<Decimal>,
    },
}

/// A collections policy. Build one with [`DunningPolicy::builder`].
///
/// ```
/// use chrono::Weekday;
/// use dotmac_billing::dunning::{CollectionAction, DunningPolicy, RestoreOnPayment};
/// use rust_decimal::Decimal;
///
/// let policy = DunningPolicy::builder()
///     .step(-3, CollectionAction::Reminder)
///     .step(1, CollectionAction::OverdueNotice)
///     .step_with_fee(3, CollectionAction::LateFee, Decimal::new(500, 2))
///     .step(5, CollectionAction::Suspend)
///     .grace_days(2)
///     .min_balance(Decimal::new(100, 2))
///     .no_suspension_on(Weekday::Fri)
///     .restore_on_payment(RestoreOnPayment::Restore { reconnection_fee: Some(Decimal::TEN) })
///     .build()?;
/// assert_eq!(policy.steps().len(), 4);
/// # Ok::<(), dotmac_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DunningPolicy {
    steps: Vec<DunningStep>,
    grace_days: u32,
    min_balance: Decimal,
    restore: RestoreOnPayment,
    /// Bit `n` set: no suspension on weekday `n` (Monday = 0).
    blocked_weekdays: u8,
    /// Sorted, no duplicates.
    blocked_dates: Vec<NaiveDate>,
}

/// Builder of a [`DunningPolicy`].
#[derive(Debug, Clone)]
pub struct DunningPolicyBuilder {
    policy: DunningPolicy,
}

impl DunningPolicy {
    /// A builder with no steps, no grace, a minimum balance of zero and manual restore.
    pub fn builder() -> DunningPolicyBuilder {
        DunningPolicyBuilder {
            policy: DunningPolicy {
                steps: Vec::new(),
                grace_days: 0,
                min_balance: Decimal::ZERO,
                restore: RestoreOnPayment::Manual,
                blocked_weekdays: 0,
                blocked_dates: Vec::new(),
            },
        }
    }

    /// The steps, in the order they were given.
    pub fn steps(&self) -> &[DunningStep] {
        &self.steps
    }

    /// The grace period in days.
    pub fn grace_days(&self) -> u32 {
        self.grace_days
    }

    /// The open balance at or below which nothing escalates.
    pub fn min_balance(&self) -> Decimal {
        self.min_balance
    }

    /// What a settling payment after suspension does.
    pub fn restore_on_payment(&self) -> RestoreOnPayment {
        self.restore
    }

    /// True when suspension is not allowed on `date`.
    pub fn suspension_blocked_on(&self, date: NaiveDate) -> bool {
        self.blocked_weekdays & weekday_bit(date.weekday()) != 0
            || self.blocked_dates.contains(&date)
    }

    /// The day step `index` is due for an invoice due on `due`, after grace and blocked days;
    /// `None` for an unknown index or a date out of range.
    pub fn step_day(&self, index: usize, due: NaiveDate) -> Option<NaiveDate> {
        let step = self.steps.get(index)?;
        let grace = if step.days_after_due > 0 {
            i64::from(self.grace_days)
        } else {
            0
        };
        // An i32 plus a u32 always fits in i64: this never saturates.
        let offset = i64::from(step.days_after_due).saturating_add(grace);
        let mut day = if offset >= 0 {
            due.checked_add_days(Days::new(offset.unsigned_abs()))?
        } else {
            due.checked_sub_days(Days::new(offset.unsigned_abs()))?
        };
        if step.action == CollectionAction::Suspend {
            // An allowed day comes within 7 + blocked_dates.len() days unless every weekday is
            // blocked (refused by the builder, but a deserialized policy skips it): bound it.
            let mut tries = self.blocked_dates.len().saturating_add(8);
            while self.suspension_blocked_on(day) {
                tries = tries.checked_sub(1)?;
                day = day.succ_opt()?;
            }
        }
        Some(day)
    }
}

fn weekday_bit(day: Weekday) -> u8 {
    1u8 << day.num_days_from_monday()
}

impl DunningPolicyBuilder {
    /// Adds a step without a fee.
    pub fn step(self, days_after_due: i32, action: CollectionAction) -> Self {
        self.push(days_after_due, action, None)
    }

    /// Adds a step that charges `fee` (in the invoice's currency) when it fires.
    pub fn step_with_fee(
        self,
        days_after_due: i32,
        action: CollectionAction,
        fee: Decimal,
    ) -> Self {
        self.push(days_after_due, action, Some(fee))
    }

    fn push(mut self, days_after_due: i32, action: CollectionAction, fee: Option<Decimal>) -> Self {
        self.policy.steps.push(DunningStep {
            days_after_due,
            action,
            fee,
        });
        self
    }

    /// Days after the due date before overdue steps start counting.
    pub fn grace_days(mut self, days: u32) -> Self {
        self.policy.grace_days = days;
        self
    }

    /// The open balance at or below which nothing escalates (default 0: any debt escalates).
    pub fn min_balance(mut self, amount: Decimal) -> Self {
        self.policy.min_balance = amount;
        self
    }

    /// What a settling payment after suspension does (default [`RestoreOnPayment::Manual`]).
    pub fn restore_on_payment(mut self, restore: RestoreOnPayment) -> Self {
        self.policy.restore = restore;
        self
    }

    /// No suspension on this weekday (the next allowed day is used).
    pub fn no_suspension_on(mut self, day: Weekday) -> Self {
        self.policy.blocked_weekdays |= weekday_bit(day);
        self
    }

    /// No suspension on this date, e.g. a public holiday (the next allowed day is used).
    pub fn no_suspension_date(mut self, date: NaiveDate) -> Self {
        self.policy.blocked_dates.push(date);
        self
    }

    /// The policy.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidConfiguration`] for more than [`MAX_DUNNING_STEPS`] steps, a
    /// `restore` step, a negative fee or minimum balance, or every weekday blocked.
    pub fn build(mut self) -> Result<DunningPolicy, BillingError> {
        let invalid = |reason| BillingError::InvalidConfiguration {
            what: "dunning policy",
            reason,
        };
        let policy = &mut self.policy;
        if policy.steps.len() > MAX_DUNNING_STEPS {
            return Err(invalid("at most 32 steps"));
        }
        if policy
            .steps
            .iter()
            .any(|s| s.action == CollectionAction::Restore)
        {
            return Err(invalid(
                "restore is not a step; use restore_on_payment instead",
            ));
        }
        let negative_fee = policy
            .steps
            .iter()
            .filter_map(|s| s.fee)
            .chain(match policy.restore {
                RestoreOnPayment::Restore { reconnection_fee } => reconnection_fee,
                RestoreOnPayment::Manual => None,
            })
            .any(|f| f.is_sign_negative() && !f.is_zero());
        if negative_fee {
            return Err(invalid("fees must not be negative"));
        }
        if policy.min_balance.is_sign_negative() && !policy.min_balance.is_zero() {
            return Err(invalid("the minimum balance must not be negative"));
        }
        if policy.blocked_weekdays == 0x7f {
            return Err(invalid("suspension cannot be blocked on every weekday"));
        }
        policy.blocked_dates.sort_unstable();
        policy.blocked_dates.dedup();
        Ok(self.policy)
    }
}

/// The invoice as dunning sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DunningInvoice {
    /// The invoice.
    pub id: InvoiceId,
    /// Its customer.
    pub customer: CustomerId,
    /// The invoice total.
    pub total: Money,
    /// The due date that the steps are relative to.
    pub due: NaiveDate,
}

/// An amount applied to the invoice on a day: a payment or credit allocation (positive) or its
/// reversal by a refund (negative), in the invoice's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The day it was applied.
    pub on: NaiveDate,
    /// The amount applied.
    pub amount: Decimal,
}

/// What dunning has already done for one invoice: one bit per fired step and one per restore
/// after a suspension step. Store it with the invoice and pass it to the next [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct DunningState {
    fired: u64,
}

impl DunningState {
    /// True when step `index` has fired.
    pub fn step_fired(&self, index: usize) -> bool {
        index < MAX_DUNNING_STEPS && self.fired & (1 << index) != 0
    }

    /// True when a suspension step of `policy` fired and no restore followed it.
    pub fn is_suspended(&self, policy: &DunningPolicy) -> bool {
        policy
            .steps
            .iter()
            .enumerate()
            .take(MAX_DUNNING_STEPS)
            .any(|(index, step)| {
                step.action == CollectionAction::Suspend
                    && self.step_fired(index)
                    && self.fired & (1u64 << restore_bit(index)) == 0
            })
    }
}

/// An action fired by [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredAction {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Its customer (whose service is suspended or restored).
    pub customer: CustomerId,
    /// What to do.
    pub action: CollectionAction,
    /// The policy step that fired (for a restore: the suspension step it ends).
    pub step: u8,
    /// The day the action was due (a catch-up run dates it on its scheduled day).
    pub on: NaiveDate,
    /// The invoice's open balance on that day.
    pub open_balance: Money,
    /// A fee to add to the customer's next invoice.
    pub fee: Option<Money>,
}

impl FiredAction {
    /// The action's fee as a one-off charge for the customer's next invoice: a late fee for a
    /// step's fee, a reconnection fee for a restore. Its id is derived from the invoice, the
    /// step and the action, so adding it twice is a no-op.
    pub fn pending_charge(&self) -> Option<PendingCharge> {
        let fee = self.fee.filter(|f| f.is_positive())?;
        let kind = match self.action {
            CollectionAction::Restore => LineKind::ReconnectionFee,
            _ => LineKind::LateFee,
        };
        let id = stable_id(&[
            b"dunning-fee",
            self.invoice.as_uuid().as_bytes(),
            &[self.step],
            self.action.event_type().as_bytes(),
        ]);
        Some(PendingCharge {
            id: PendingChargeId::from_u128(id),
            customer: self.customer,
            subscription: None,
            kind,
            text: None,
            period: None,
            quantity: Decimal::ONE,
            unit_price: fee,
            price: None,
            created_on: self.on,
        })
    }
}

impl EventPayload for FiredAction {
    fn event_type(&self) -> &'static str {
        self.action.event_type()
    }
}

/// The bit of `state.fired` that records the restore after suspension step `index`.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "callers take at most MAX_DUNNING_STEPS (32) steps, so the bit is below 64"
)]
fn restore_bit(index: usize) -> u32 {
    32 + index as u32
}

/// The open balance on `day`: `total` less the settlements dated on or before it.
///
/// A balance beyond `Decimal`'s range (settlements no ledger produces: a ledger keeps each
/// invoice's paid amount between zero and its total) counts as `Decimal::MAX`, still open,
/// rather than abort the replay.
fn balance_on(total: Decimal, settlements: &[Settlement], day: NaiveDate) -> Decimal {
    settlements
        .iter()
        .filter(|s| s.on <= day)
        .try_fold(total, |acc, s| acc.checked_sub(s.amount))
        .unwrap_or(Decimal::MAX)
}

/// Evaluates `policy` for `invoice` on `today`, appends the actions not fired before to `out`
/// (in date order) and records them in `state`. Returns how many were appended.
///
/// `settlements` are the amounts applied to the invoice so far, in any order; only those dated
/// on or before `today` count. Evaluating the same day again appends nothing.
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_billing::dunning::*;
/// use dotmac_core::{Currency, CustomerId, InvoiceId, Money};
///
/// let policy = DunningPolicy::builder().step(5, CollectionAction::Suspend).build()?;
/// let invoice = DunningInvoice {
///     id: InvoiceId::from_u128(1),
///     customer: CustomerId::from_u128(2),
///     total: Money::from_minor(5000, Currency::USD),
///     due: NaiveDate::from_ymd_opt(2026, 3, 15).unwrap(),
/// };
/// let mut state = DunningState::default();
/// let mut out = Vec::new();
/// let day = NaiveDate::from_ymd_opt(2026, 3, 20).unwrap();
/// assert_eq!(evaluate(&policy, &invoice, &[], &mut state, day, &mut out), 1);
/// assert_eq!(out[0].action, CollectionAction::Suspend);
/// assert_eq!(evaluate(&policy, &invoice, &[], &mut state, day, &mut out), 0); // idempotent
/// # Ok::<(), dotmac_billing::BillingError>(())
/// ```
pub fn evaluate(
    policy: &DunningPolicy,
    invoice: &DunningInvoice,
    settlements: &[Settlement],
    state: &mut DunningState,
    today: NaiveDate,
    out: &mut Vec<FiredAction>,
) -> usize {
    let before = out.len();
    let total = invoice.total.amount();
    let currency = invoice.total.currency();
    let restore_fee = match policy.restore {
        RestoreOnPayment::Restore { reconnection_fee } => Some(reconnection_fee),
        RestoreOnPayment::Manual => None,
    };

    // The schedule: (day, step) in day order, only steps due by today.
    let mut schedule = [(NaiveDate::MIN, 0u8); MAX_DUNNING_STEPS];
    let mut len = 0;
    for index in 0..policy.steps.len().min(MAX_DUNNING_STEPS) {
        if let Some(day) = policy.step_day(index, invoice.due)
            && day <= today
            && let Some(slot) = schedule.get_mut(len)
        {
            // `index` < 32 by the bound above.
            *slot = (day, index as u8);
            // At most MAX_DUNNING_STEPS slots are filled.
            len = usize::saturating_add(len, 1);
        }
    }
    let schedule = schedule.get_mut(..len).unwrap_or_default();
    schedule.sort_unstable();

    let mut emit = |state: &mut DunningState,
                    bit: u32,
                    action: CollectionAction,
                    step: u8,
                    on: NaiveDate,
                    balance: Decimal,
                    fee: Option<Decimal>| {
        let mask = 1u64 << bit;
        if state.fired & mask == 0 {
            state.fired |= mask;
            out.push(FiredAction {
                invoice: invoice.id,
                customer: invoice.customer,
                action,
                step,
                on,
                open_balance: Money::new(balance, currency),
                fee: fee.map(|f| Money::new(f, currency)),
            });
        }
    };

    // The first day in (after, until] on which a settlement brings the balance to zero or less.
    let settled_between = |after: NaiveDate, until: NaiveDate| -> Option<(NaiveDate, Decimal)> {
        settlements
            .iter()
            .filter(|s| s.on > after && s.on <= until)
            .map(|s| (s.on, balance_on(total, settlements, s.on)))
            .filter(|(_, balance)| *balance <= Decimal::ZERO)
            .min_by_key(|(day, _)| *day)
    };

    let mut suspended: Option<(u8, NaiveDate)> = None;
    let mut simulated_suspends = 0u64;
    for &(day, index) in schedule.iter() {
        if let (Some((step, since)), Some(fee)) = (suspended, restore_fee)
            && let Some((paid_on, balance)) = settled_between(since, day)
        {
            emit(
                state,
                restore_bit(usize::from(step)),
                CollectionAction::Restore,
                step,
                paid_on,
                balance,
                fee,
            );
            suspended = None;
        }
        let balance = balance_on(total, settlements, day);
        if balance <= policy.min_balance {
            continue;
        }
        let Some(step) = policy.steps.get(usize::from(index)) else {
            continue;
        };
        emit(
            state,
            u32::from(index),
            step.action,
            index,
            day,
            balance,
            step.fee,
        );
        if step.action == CollectionAction::Suspend && suspended.is_none() {
            suspended = Some((index, day));
            simulated_suspends |= 1 << index;
        }
    }
    if let (Some((step, since)), Some(fee)) = (suspended, restore_fee)
        && let Some((paid_on, balance)) = settled_between(since, today)
    {
        emit(
            state,
            restore_bit(usize::from(step)),
            CollectionAction::Restore,
            step,
            paid_on,
            balance,
            fee,
        );
    }

    // A payment back-dated before a suspension that already happened: the replay no longer
    // suspends, but the service is down. Restore it today once the invoice is settled.
    if let Some(fee) = restore_fee {
        for (index, step) in policy.steps.iter().enumerate().take(MAX_DUNNING_STEPS) {
            let suspended_really = step.action == CollectionAction::Suspend
                && state.step_fired(index)
                && state.fired & (1u64 << restore_bit(index)) == 0
                && simulated_suspends & (1 << index) == 0;
            if suspended_really {
                let balance = balance_on(total, settlements, today);
                if balance <= Decimal::ZERO {
                    emit(
                        state,
                        restore_bit(index),
                        CollectionAction::Restore,
                        index as u8,
                        today,
                        balance,
                        fee,
                    );
                }
            }
        }
    }
    // `out` only grows here.
    out.len().saturating_sub(before)
}

/// Where each invoice's [`DunningState`] is kept. Every call is scoped to a tenant.
pub trait DunningStore: Send + Sync {
    /// The state of an invoice (the default state when none was saved).
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> impl Future<Output = Result<DunningState, BillingError>> + Send;

    /// Saves the state of an invoice.
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn save_state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        state: DunningState,
    ) -> impl Future<Output = Result<(), BillingError>> + Send;
}

/// A [`DunningStore`] in memory, for tests and examples.
#[derive(Debug, Default)]
pub struct InMemoryDunningStore {
    states: Mutex<HashMap<(TenantId, InvoiceId), DunningState>>,
}

impl InMemoryDunningStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl DunningStore for InMemoryDunningStore {
    async fn state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<DunningState, BillingError> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        Ok(states.get(&(tenant, invoice)).copied().unwrap_or_default())
    }

    async fn save_state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        state: DunningState,
    ) -> Result<(), BillingError> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.insert((tenant, invoice), state);
        Ok(())
    }
}

/// What the collections service reports: ledger movements and collection actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CollectionEvent {
    /// An entry appended to a customer's ledger.
    Ledger(LedgerEntry),
    /// A collection action to carry out (notify, charge a fee, suspend or restore service).
    Action(FiredAction),
}

impl EventPayload for CollectionEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CollectionEvent::Ledger(entry) => entry.event_type(),
            CollectionEvent::Action(action) => action.event_type(),
        }
    }
}

/// Payments and collections for a tenant: records payments in the ledger, runs the dunning
/// policy over a customer's invoices and returns what happened as domain events. Today is the
/// clock's date in the tenant's time zone.
#[derive(Debug)]
pub struct CollectionsService<P, D, C> {
    payments: P,
    dunning: D,
    clock: C,
    zone: Tz,
    policy: DunningPolicy,
}

impl<P: PaymentStore, D: DunningStore, C: Clock> CollectionsService<P, D, C> {
    /// A service over the two stores, with the tenant's policy and time zone.
    pub fn new(payments: P, dunning: D, clock: C, zone: Tz, policy: DunningPolicy) -> Self {
        CollectionsService {
            payments,
            dunning,
            clock,
            zone,
            policy,
        }
    }

    /// The payment store.
    pub fn payment_store(&self) -> &P {
        &self.payments
    }

    fn today(&self) -> NaiveDate {
        self.clock.today_in(self.zone)
    }

    fn wrap(
        &self,
        tenant: TenantId,
        events: Vec<CollectionEvent>,
    ) -> Vec<DomainEvent<CollectionEvent>> {
        events
            .into_iter()
            .map(|e| DomainEvent::new(tenant, &self.clock, e))
            .collect()
    }

    /// The customer's ledger, `None` for a customer without entries yet; its currency is
    /// that of its first entry.
    async fn stored_ledger(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Option<CustomerLedger>, BillingError> {
        let entries = self.payments.entries(tenant, customer).await?;
        let Some(currency) = entries.first().map(|e| e.kind.currency()) else {
            return Ok(None);
        };
        CustomerLedger::from_entries(customer, currency, entries).map(Some)
    }

    /// The customer's ledger, or an empty one in `currency` (the currency of the money about
    /// to be recorded) for a customer without entries.
    async fn ledger(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        currency: Currency,
    ) -> Result<CustomerLedger, BillingError> {
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
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, BillingError> {
        let mut ledger = self.ledger(tenant, customer, total.currency()).await?;
        let entries = ledger.record_invoice(invoice, total, issued, due)?;
        self.payments.append(tenant, customer, &entries).await?;
        Ok(self.wrap(
            tenant,
            entries.into_iter().map(CollectionEvent::Ledger).collect(),
        ))
    }

    /// Records a payment dated today, allocates it, then re-evaluates the customer's invoices
    /// so that a payment settling a suspended invoice restores service in the same call.
    ///
    /// # Errors
    ///
    /// As [`CustomerLedger::record_payment`] (nothing is stored then), and storage failures.
    pub async fn record_payment(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        payment: PaymentId,
        amount: Money,
        target: AllocationTarget,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, BillingError> {
        let mut ledger = self.ledger(tenant, customer, amount.currency()).await?;
        let outcome = ledger.record_payment(payment, amount, self.today(), target)?;
        self.payments
            .append(tenant, customer, &outcome.entries)
            .await?;
        let mut events: Vec<CollectionEvent> = outcome
            .entries
            .into_iter()
            .map(CollectionEvent::Ledger)
            .collect();
        events.extend(self.evaluate_ledger(tenant, &ledger).await?);
        Ok(self.wrap(tenant, events))
    }

    /// Runs the dunning policy over the customer's invoices for today. Running it twice on
    /// the same day returns nothing the second time.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn evaluate(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<DomainEvent<CollectionEvent>>, BillingError> {
        // Without entries there is nothing to collect.
        let Some(ledger) = self.stored_ledger(tenant, customer).await? else {
            return Ok(Vec::new());
        };
        let events = self.evaluate_ledger(tenant, &ledger).await?;
        Ok(self.wrap(tenant, events))
    }

    async fn evaluate_ledger(
        &self,
        tenant: TenantId,
        ledger: &CustomerLedger,
    ) -> Result<Vec<CollectionEvent>, BillingError> {
        let today = self.today();
        let mut fired = Vec::new();
        for balance in ledger.invoices() {
            let invoice = DunningInvoice {
                id: balance.invoice,
                customer: ledger.customer(),
                total: balance.total,
                due: balance.due,
            };
            let mut state = self.dunning.state(tenant, balance.invoice).await?;
            let settlements = ledger.settlements(balance.invoice);
            if evaluate(
                &self.policy,
                &invoice,
                &settlements,
                &mut state,
                today,
                &mut fired,
            ) > 0
            {
                self.dunning
                    .save_state(tenant, balance.invoice, state)
                    .await?;
            }
        }
        Ok(fired.into_iter().map(CollectionEvent::Action).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_core::Currency;
    use rust_decimal_macros::dec;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn invoice(total: Decimal) -> DunningInvoice {
        DunningInvoice {
            id: InvoiceId::from_u128(1),
            customer: CustomerId::from_u128(2),
            total: Money::new(total, Currency::USD),
            due: d("2026-03-15"),
        }
    }

    fn run_daily(
        policy: &DunningPolicy,
        inv: &DunningInvoice,
        settlements: &[Settlement],
        from: NaiveDate,
        until: NaiveDate,
    ) -> Vec<(NaiveDate, CollectionAction)> {
        let mut state = DunningState::default();
        let mut out = Vec::new();
        let mut day = from;
        while day <= until {
            evaluate(policy, inv, settlements, &mut state, day, &mut out);
            assert_eq!(
                evaluate(policy, inv, settlements, &mut state, day, &mut out),
                0
            );
            day = day.succ_opt().unwrap();
        }
        out.iter().map(|a| (a.on, a.action)).collect()
    }

    #[test]
    fn suspension_moves_off_blocked_days_and_grace_shifts_overdue_steps() {
        // 2026-03-20 is a Friday; 2026-03-21/22 the weekend; 2026-03-23 a blocked holiday.
        let policy = DunningPolicy::builder()
            .step(-3, CollectionAction::Reminder)
            .step(3, CollectionAction::Suspend)
            .grace_days(2)
            .no_suspension_on(Weekday::Fri)
            .no_suspension_on(Weekday::Sat)
            .no_suspension_on(Weekday::Sun)
            .no_suspension_date(d("2026-03-23"))
            .build()
            .unwrap();
        let got = run_daily(
            &policy,
            &invoice(dec!(50)),
            &[],
            d("2026-03-01"),
            d("2026-04-30"),
        );
        assert_eq!(
            got,
            vec![
                (d("2026-03-12"), CollectionAction::Reminder),
                (d("2026-03-24"), CollectionAction::Suspend)
            ]
        );
    }

    #[test]
    fn min_balance_stops_escalation_and_fees_come_out_in_invoice_currency() {
        let policy = DunningPolicy::builder()
            .step_with_fee(1, CollectionAction::LateFee, dec!(5))
            .step(5, CollectionAction::Suspend)
            .min_balance(dec!(10))
            .build()
            .unwrap();
        let paid = [Settlement {
            on: d("2026-03-18"),
            amount: dec!(45),
        }];
        let mut state = DunningState::default();
        let mut out = Vec::new();
        evaluate(
            &policy,
            &invoice(dec!(50)),
            &paid,
            &mut state,
            d("2026-04-01"),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, CollectionAction::LateFee);
        assert_eq!(out[0].fee, Some(Money::new(dec!(5), Currency::USD)));
        assert_eq!(out[0].open_balance.amount(), dec!(50));
    }

    #[test]
    fn restore_carries_the_reconnection_fee_and_back_dated_payment_restores_today() {
        let policy = DunningPolicy::builder()
            .step(5, CollectionAction::Suspend)
            .restore_on_payment(RestoreOnPayment::Restore {
                reconnection_fee: Some(dec!(15)),
            })
            .build()
            .unwrap();
        let inv = invoice(dec!(50));
        let mut state = DunningState::default();
        let mut out = Vec::new();
        evaluate(&policy, &inv, &[], &mut state, d("2026-03-20"), &mut out);
        assert!(state.is_suspended(&policy));
        // The payment arrives late but is dated before the suspension day.
        let paid = [Settlement {
            on: d("2026-03-19"),
            amount: dec!(50),
        }];
        evaluate(&policy, &inv, &paid, &mut state, d("2026-03-22"), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].action, CollectionAction::Restore);
        assert_eq!(out[1].on, d("2026-03-22"));
        assert_eq!(out[1].fee, Some(Money::new(dec!(15), Currency::USD)));
        let charge = out[1].pending_charge().unwrap();
        assert_eq!(charge.kind, LineKind::ReconnectionFee);
        assert_eq!(charge.unit_price, Money::new(dec!(15), Currency::USD));
        assert_eq!(out[0].pending_charge(), None);
        assert!(!state.is_suspended(&policy));
    }

    #[test]
    fn bad_policies_are_refused() {
        let err = DunningPolicy::builder()
            .step(1, CollectionAction::Restore)
            .build()
            .unwrap_err();
        assert!(matches!(err, BillingError::InvalidConfiguration { .. }));
        let mut all = DunningPolicy::builder();
        for day in [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ] {
            all = all.no_suspension_on(day);
        }
        assert!(all.build().is_err());
        assert!(
            DunningPolicy::builder()
                .step_with_fee(1, CollectionAction::LateFee, dec!(-1))
                .build()
                .is_err()
        );
    }

    #[test]
    fn settlements_beyond_decimal_range_count_as_open_instead_of_panicking() {
        let policy = DunningPolicy::builder()
            .step(1, CollectionAction::OverdueNotice)
            .build()
            .unwrap();
        let inv = invoice(Decimal::MAX);
        // MAX − (−MAX) does not fit: the balance counts as open, so the notice fires.
        let settlements = [Settlement {
            on: d("2026-03-15"),
            amount: Decimal::MIN,
        }];
        let mut state = DunningState::default();
        let mut out = Vec::new();
        assert_eq!(
            evaluate(
                &policy,
                &inv,
                &settlements,
                &mut state,
                d("2026-03-20"),
                &mut out
            ),
            1
        );
        assert_eq!(out[0].action, CollectionAction::OverdueNotice);
        assert_eq!(out[0].open_balance.amount(), Decimal::MAX);
    }
}
