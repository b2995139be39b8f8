//! Collections (dunning): a schedule of steps relative to an invoice's due date that escalates an
//! unpaid invoice from a reminder to suspension and write-off, and restores service on payment.
//!
//! # Steps are named by the operator
//!
//! A step has the operator's [`StepName`] (`reminder`, `second_notice`, `od1`, `terminate`, …)
//! and a typed built-in meaning, its [`StepEffect`]: notify only, a late fee, suspension or
//! write-off. The effect is explicit ([`DunningPolicyBuilder::step_with_effect`],
//! [`DunningPolicyBuilder::late_fee`]) or, for a step given by name alone
//! ([`DunningPolicyBuilder::step`]), taken from the name: `suspend`, `write_off` and `late_fee`
//! mean what they say, every other name only notifies. `restore` is never a step: the policy
//! fires it after a suspension ([`RestoreOnPayment`]). Each [`FiredAction`] carries the step's
//! name and its [`CollectionAction`]; provisioning needs only the latter
//! (`collections.suspend_service`, `collections.restore_service`).
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
//! * A policy has one currency ([`DunningPolicy::builder`]): its fees (a late-fee step's, and
//!   the reconnection fee) and its minimum balance are [`Money`] in it. They come out on the
//!   action for the embedding service to add to the customer's next invoice. An invoice in
//!   another currency is refused ([`CollectionsError::WrongCurrency`]) rather than charged a fee
//!   converted at no rate or compared to a minimum in another unit; a tenant collecting in
//!   several currencies keeps one policy per currency.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{Datelike, Days, NaiveDate, Weekday};
use dotmac_core::outbox::{MemoryOutbox, OutboxEvent};
use dotmac_core::{
    Currency, CustomerId, EventPayload, IdDigest, InvoiceId, Money, PendingChargeId, TenantId,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use dotmac_billing::{LineKind, PendingCharge};

use crate::error::CollectionsError;
use crate::payments::Settlement;

/// The most steps a policy may have (the state keeps one bit per step and one per restore).
pub const MAX_DUNNING_STEPS: usize = 32;

/// The longest [`StepName`], in bytes.
pub const MAX_STEP_NAME_LEN: usize = 64;

/// The operator's name for a collections step (`reminder`, `second_notice`, `od1`,
/// `terminate`, …): 1 to [`MAX_STEP_NAME_LEN`] lowercase ASCII letters, digits and underscores.
///
/// The name is what the operator calls the step and what its events carry; what the step does
/// is its [`StepEffect`]. `Copy` (the name is stored inline), serialized as a plain string and
/// validated when parsed or deserialized.
///
/// ```
/// use dotmac_collections::StepName;
///
/// let name: StepName = "second_notice".parse()?;
/// assert_eq!(name.as_str(), "second_notice");
/// assert!("Second Notice".parse::<StepName>().is_err());
/// # Ok::<(), dotmac_collections::CollectionsError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepName {
    len: u8,
    /// The name's bytes, then zeros.
    bytes: [u8; MAX_STEP_NAME_LEN],
}

impl StepName {
    /// The name `restore`, which the policy fires after a suspension (never a step's name).
    pub const RESTORE: StepName = StepName::known("restore");
    /// The name `suspend`: a step built from this name alone suspends service.
    pub const SUSPEND: StepName = StepName::known("suspend");
    /// The name `write_off`: a step built from this name alone writes the debt off.
    pub const WRITE_OFF: StepName = StepName::known("write_off");
    /// The name `late_fee`: a step built from this name alone is a late fee (of zero until an
    /// amount is given with [`StepEffect::LateFee`]).
    pub const LATE_FEE: StepName = StepName::known("late_fee");

    /// A validated name.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::InvalidConfiguration`] for an empty name, one longer than
    /// [`MAX_STEP_NAME_LEN`] bytes, or one with a character other than `a`–`z`, `0`–`9` and `_`.
    pub fn new(name: &str) -> Result<StepName, CollectionsError> {
        let invalid = |reason| CollectionsError::InvalidConfiguration {
            what: "dunning step name",
            reason,
        };
        if name.is_empty() {
            return Err(invalid("a step name must not be empty"));
        }
        if name.len() > MAX_STEP_NAME_LEN {
            return Err(invalid("a step name has at most 64 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "a step name has only lowercase letters, digits and underscores",
            ));
        }
        Ok(StepName::known(name))
    }

    /// A name already known to be valid (the constants above); longer input is cut, which
    /// the callers never give.
    const fn known(name: &str) -> StepName {
        let src = name.as_bytes();
        let mut bytes = [0u8; MAX_STEP_NAME_LEN];
        let mut i = 0;
        while i < src.len() && i < MAX_STEP_NAME_LEN {
            bytes[i] = src[i];
            i = i.saturating_add(1);
        }
        // i ≤ MAX_STEP_NAME_LEN = 64 fits in a u8.
        StepName {
            len: i as u8,
            bytes,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        // Only ASCII is ever stored.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

/// Names order as their text does.
impl Ord for StepName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for StepName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StepName {
    type Err = CollectionsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepName::new(s)
    }
}

impl AsRef<str> for StepName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for StepName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StepName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        StepName::new(&text).map_err(serde::de::Error::custom)
    }
}

/// What a policy step does when it fires, besides being reported under its name.
///
/// Serialized in snake case: `"notify"`, `{"late_fee": <money>}`, `"suspend"`, `"write_off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepEffect {
    /// Nothing built in: the embedding service notifies the customer (a reminder, a second
    /// notice, a warning, …) or acts on the name itself.
    Notify,
    /// A late fee, in the policy's currency, for the customer's next invoice (zero: none).
    LateFee(Money),
    /// Service is suspended (moved off blocked days; a settling payment may restore it).
    Suspend,
    /// The debt is written off as uncollectible.
    WriteOff,
}

impl StepEffect {
    /// The effect a step built from `name` alone has in a policy in `currency`: `suspend`
    /// suspends, `write_off` writes off, `late_fee` is a late fee of zero in `currency`; every
    /// other name notifies.
    pub fn from_name(name: StepName, currency: Currency) -> StepEffect {
        match name.as_str() {
            "suspend" => StepEffect::Suspend,
            "write_off" => StepEffect::WriteOff,
            "late_fee" => StepEffect::LateFee(Money::zero(currency)),
            _ => StepEffect::Notify,
        }
    }

    /// What a fired step of this effect asks for.
    pub fn action(self) -> CollectionAction {
        match self {
            StepEffect::Notify => CollectionAction::Notify,
            StepEffect::LateFee(_) => CollectionAction::LateFee,
            StepEffect::Suspend => CollectionAction::Suspend,
            StepEffect::WriteOff => CollectionAction::WriteOff,
        }
    }

    fn fee(self) -> Option<Money> {
        match self {
            StepEffect::LateFee(fee) => Some(fee),
            _ => None,
        }
    }
}

/// The built-in meaning of a fired action: a step's [`StepEffect`], or the restore the policy
/// fires after a suspension. The action's [`FiredAction::name`] says which step it was.
///
/// Serialized in snake case (`"suspend"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CollectionAction {
    /// A step without a built-in effect fired: notify the customer.
    Notify,
    /// A late fee is charged (the action's fee).
    LateFee,
    /// Service is suspended.
    Suspend,
    /// The debt is written off as uncollectible.
    WriteOff,
    /// Service is restored after a payment settled a suspended invoice. Never a policy step.
    Restore,
}

impl CollectionAction {
    /// The stable event name of this action. Provisioning listens to
    /// `collections.suspend_service` and `collections.restore_service`; steps without a
    /// built-in effect are all `collections.step_fired`, told apart by their name.
    pub fn event_type(self) -> &'static str {
        match self {
            CollectionAction::Notify => "collections.step_fired",
            CollectionAction::LateFee => "collections.late_fee",
            CollectionAction::Suspend => "collections.suspend_service",
            CollectionAction::WriteOff => "collections.write_off",
            CollectionAction::Restore => "collections.restore_service",
        }
    }
}

/// One step of a policy: on `due + days_after_due` (plus grace), the step `name` fires with its
/// `effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DunningStep {
    /// Days relative to the due date (negative: before it).
    pub days_after_due: i32,
    /// The operator's name for the step.
    pub name: StepName,
    /// What the step does.
    pub effect: StepEffect,
}

/// What a payment that settles a suspended invoice does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreOnPayment {
    /// Nothing: restoring is left to an operator.
    Manual,
    /// Fire [`CollectionAction::Restore`] on the day of the settling payment.
    Restore {
        /// A reconnection fee for the next invoice, in the policy's currency.
        reconnection_fee: Option<Money>,
    },
}

/// A collections policy. Build one with [`DunningPolicy::builder`].
///
/// Steps are named by the operator; a step's built-in meaning is its [`StepEffect`], given
/// explicitly or, for a step built from its name alone, taken from the name
/// ([`StepEffect::from_name`]: `suspend`, `write_off` and `late_fee` mean what they say, any
/// other name only notifies). `restore` is not a step: [`RestoreOnPayment`] fires it.
///
/// A policy has one currency: its fees and minimum balance are amounts in it, and
/// [`evaluate`] refuses an invoice in another currency (one policy per currency; see the
/// [crate documentation](crate)).
///
/// ```
/// use chrono::Weekday;
/// use dotmac_collections::{DunningPolicy, RestoreOnPayment, StepEffect};
/// use dotmac_core::{Currency, Money};
///
/// let usd = |minor| Money::from_minor(minor, Currency::USD);
/// let policy = DunningPolicy::builder(Currency::USD)
///     .step(-3, "reminder")
///     .step(1, "second_notice")
///     .late_fee(3, "od1", usd(500))
///     .step(5, "suspend")
///     .step_with_effect(30, "terminate", StepEffect::WriteOff)
///     .grace_days(2)
///     .min_balance(usd(100))
///     .no_suspension_on(Weekday::Fri)
///     .restore_on_payment(RestoreOnPayment::Restore { reconnection_fee: Some(usd(1000)) })
///     .build()?;
/// assert_eq!(policy.steps().len(), 5);
/// assert_eq!(policy.steps()[3].effect, StepEffect::Suspend);
/// # Ok::<(), dotmac_collections::CollectionsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawDunningPolicy")]
pub struct DunningPolicy {
    currency: Currency,
    steps: Vec<DunningStep>,
    grace_days: u32,
    min_balance: Money,
    restore: RestoreOnPayment,
    /// Bit `n` set: no suspension on weekday `n` (Monday = 0).
    blocked_weekdays: u8,
    /// Sorted, no duplicates.
    blocked_dates: Vec<NaiveDate>,
}

/// The serialized form of a policy, validated by [`DunningPolicyBuilder::build`].
#[derive(Deserialize)]
struct RawDunningPolicy {
    currency: Currency,
    steps: Vec<DunningStep>,
    grace_days: u32,
    min_balance: Money,
    restore: RestoreOnPayment,
    blocked_weekdays: u8,
    blocked_dates: Vec<NaiveDate>,
}

impl TryFrom<RawDunningPolicy> for DunningPolicy {
    type Error = CollectionsError;
    fn try_from(raw: RawDunningPolicy) -> Result<Self, Self::Error> {
        DunningPolicyBuilder {
            policy: DunningPolicy {
                currency: raw.currency,
                steps: raw.steps,
                grace_days: raw.grace_days,
                min_balance: raw.min_balance,
                restore: raw.restore,
                // Only the seven weekday bits mean anything.
                blocked_weekdays: raw.blocked_weekdays & 0x7f,
                blocked_dates: raw.blocked_dates,
            },
            bad_name: None,
        }
        .build()
    }
}

/// Builder of a [`DunningPolicy`].
#[derive(Debug, Clone)]
pub struct DunningPolicyBuilder {
    policy: DunningPolicy,
    /// The first step name that did not validate, reported by `build`.
    bad_name: Option<CollectionsError>,
}

impl DunningPolicy {
    /// A builder of a policy in `currency` (its fees and minimum balance are in it, and it
    /// evaluates only invoices in it), with no steps, no grace, a minimum balance of zero and
    /// manual restore.
    pub fn builder(currency: Currency) -> DunningPolicyBuilder {
        DunningPolicyBuilder {
            policy: DunningPolicy {
                currency,
                steps: Vec::new(),
                grace_days: 0,
                min_balance: Money::zero(currency),
                restore: RestoreOnPayment::Manual,
                blocked_weekdays: 0,
                blocked_dates: Vec::new(),
            },
            bad_name: None,
        }
    }

    /// The currency of the policy's fees and minimum balance, and of the invoices it evaluates.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Checks that the policy can evaluate an invoice in `currency`.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::WrongCurrency`] when `currency` is not the policy's.
    pub fn check_currency(&self, currency: Currency) -> Result<(), CollectionsError> {
        if currency == self.currency {
            Ok(())
        } else {
            Err(CollectionsError::WrongCurrency {
                what: "invoice under dunning",
                expected: self.currency.code(),
                got: currency.code(),
            })
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
    pub fn min_balance(&self) -> Money {
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
        if step.effect == StepEffect::Suspend {
            // An allowed day comes within 7 + blocked_dates.len() days unless every weekday is
            // blocked (refused by the builder and on deserialization): bound it.
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
    /// Adds the step `name`, whose effect is the name's ([`StepEffect::from_name`]: `suspend`
    /// suspends, `write_off` writes off, `late_fee` is a late fee of zero, any other name only
    /// notifies). An invalid name is reported by [`DunningPolicyBuilder::build`].
    pub fn step(self, days_after_due: i32, name: &str) -> Self {
        let currency = self.policy.currency;
        self.push(days_after_due, name, |name| {
            StepEffect::from_name(name, currency)
        })
    }

    /// Adds the step `name` with an explicit effect, whatever the name.
    pub fn step_with_effect(self, days_after_due: i32, name: &str, effect: StepEffect) -> Self {
        self.push(days_after_due, name, |_| effect)
    }

    /// Adds the step `name` that charges a late fee of `fee` (in the policy's currency; another
    /// currency is refused by [`DunningPolicyBuilder::build`]).
    pub fn late_fee(self, days_after_due: i32, name: &str, fee: Money) -> Self {
        self.step_with_effect(days_after_due, name, StepEffect::LateFee(fee))
    }

    fn push(
        mut self,
        days_after_due: i32,
        name: &str,
        effect: impl FnOnce(StepName) -> StepEffect,
    ) -> Self {
        match StepName::new(name) {
            Ok(name) => self.policy.steps.push(DunningStep {
                days_after_due,
                name,
                effect: effect(name),
            }),
            Err(error) => {
                self.bad_name.get_or_insert(error);
            }
        }
        self
    }

    /// Days after the due date before overdue steps start counting.
    pub fn grace_days(mut self, days: u32) -> Self {
        self.policy.grace_days = days;
        self
    }

    /// The open balance at or below which nothing escalates (default 0: any debt escalates), in
    /// the policy's currency.
    pub fn min_balance(mut self, amount: Money) -> Self {
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
    /// [`CollectionsError::InvalidConfiguration`] for an invalid step name (see [`StepName::new`]),
    /// more than [`MAX_DUNNING_STEPS`] steps, a step named `restore`, a negative fee or minimum
    /// balance, or every weekday blocked; [`CollectionsError::WrongCurrency`] for a fee or
    /// minimum balance in another currency than the policy's. Two steps may share a name (a
    /// reminder sent twice); their actions differ by [`FiredAction::step`].
    pub fn build(mut self) -> Result<DunningPolicy, CollectionsError> {
        if let Some(error) = self.bad_name {
            return Err(error);
        }
        let invalid = |reason| CollectionsError::InvalidConfiguration {
            what: "dunning policy",
            reason,
        };
        let policy = &mut self.policy;
        if policy.steps.len() > MAX_DUNNING_STEPS {
            return Err(invalid("at most 32 steps"));
        }
        if policy.steps.iter().any(|s| s.name == StepName::RESTORE) {
            return Err(invalid(
                "restore is not a step; use restore_on_payment instead",
            ));
        }
        let fees: Vec<Money> = policy
            .steps
            .iter()
            .filter_map(|s| s.effect.fee())
            .chain(match policy.restore {
                RestoreOnPayment::Restore { reconnection_fee } => reconnection_fee,
                RestoreOnPayment::Manual => None,
            })
            .collect();
        if let Some(other) = fees
            .iter()
            .chain([&policy.min_balance])
            .find(|m| m.currency() != policy.currency)
        {
            return Err(CollectionsError::WrongCurrency {
                what: "dunning fee or minimum balance",
                expected: policy.currency.code(),
                got: other.currency().code(),
            });
        }
        if fees.iter().any(|f| f.is_negative()) {
            return Err(invalid("fees must not be negative"));
        }
        if policy.min_balance.is_negative() {
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
                step.effect == StepEffect::Suspend
                    && self.step_fired(index)
                    && self.fired & (1u64 << restore_bit(index)) == 0
            })
    }
}

/// An action fired by [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FiredAction {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Its customer (whose service is suspended or restored).
    pub customer: CustomerId,
    /// The name of the step that fired ([`StepName::RESTORE`] for a restore).
    pub name: StepName,
    /// What to do: the step's built-in effect, or the restore.
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
        let id = IdDigest::new("dunning-fee")
            .uuid(self.invoice.as_uuid())
            .bytes(&[self.step])
            .str(self.action.event_type());
        Some(PendingCharge {
            id: PendingChargeId::derived(id),
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
/// # Errors
///
/// [`CollectionsError::WrongCurrency`] when the invoice is not in the policy's currency (its
/// fees and minimum balance would not apply); `state` and `out` are left unchanged.
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_collections::*;
/// use dotmac_core::{Currency, CustomerId, InvoiceId, Money};
///
/// let policy = DunningPolicy::builder(Currency::USD).step(5, "suspend").build()?;
/// let invoice = DunningInvoice {
///     id: InvoiceId::from_u128(1),
///     customer: CustomerId::from_u128(2),
///     total: Money::from_minor(5000, Currency::USD),
///     due: NaiveDate::from_ymd_opt(2026, 3, 15).unwrap(),
/// };
/// let mut state = DunningState::default();
/// let mut out = Vec::new();
/// let day = NaiveDate::from_ymd_opt(2026, 3, 20).unwrap();
/// assert_eq!(evaluate(&policy, &invoice, &[], &mut state, day, &mut out)?, 1);
/// assert_eq!((out[0].name.as_str(), out[0].action), ("suspend", CollectionAction::Suspend));
/// assert_eq!(evaluate(&policy, &invoice, &[], &mut state, day, &mut out)?, 0); // idempotent
/// # Ok::<(), dotmac_collections::CollectionsError>(())
/// ```
pub fn evaluate(
    policy: &DunningPolicy,
    invoice: &DunningInvoice,
    settlements: &[Settlement],
    state: &mut DunningState,
    today: NaiveDate,
    out: &mut Vec<FiredAction>,
) -> Result<usize, CollectionsError> {
    policy.check_currency(invoice.total.currency())?;
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
                    name: StepName,
                    action: CollectionAction,
                    step: u8,
                    on: NaiveDate,
                    balance: Decimal,
                    fee: Option<Money>| {
        let mask = 1u64 << bit;
        if state.fired & mask == 0 {
            state.fired |= mask;
            out.push(FiredAction {
                invoice: invoice.id,
                customer: invoice.customer,
                name,
                action,
                step,
                on,
                open_balance: Money::new(balance, currency),
                fee,
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
                StepName::RESTORE,
                CollectionAction::Restore,
                step,
                paid_on,
                balance,
                fee,
            );
            suspended = None;
        }
        let balance = balance_on(total, settlements, day);
        if balance <= policy.min_balance.amount() {
            continue;
        }
        let Some(step) = policy.steps.get(usize::from(index)) else {
            continue;
        };
        emit(
            state,
            u32::from(index),
            step.name,
            step.effect.action(),
            index,
            day,
            balance,
            step.effect.fee(),
        );
        if step.effect == StepEffect::Suspend && suspended.is_none() {
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
            StepName::RESTORE,
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
            let suspended_really = step.effect == StepEffect::Suspend
                && state.step_fired(index)
                && state.fired & (1u64 << restore_bit(index)) == 0
                && simulated_suspends & (1 << index) == 0;
            if suspended_really {
                let balance = balance_on(total, settlements, today);
                if balance <= Decimal::ZERO {
                    emit(
                        state,
                        restore_bit(index),
                        StepName::RESTORE,
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
    Ok(out.len().saturating_sub(before))
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
    ) -> impl Future<Output = Result<DunningState, CollectionsError>> + Send;

    /// Saves the state of an invoice and writes `events` (the events of the actions that
    /// moved it) to the outbox, atomically: "fired a step" and its event are one step.
    ///
    /// # Errors
    ///
    /// The outbox's refusals (an event of another tenant, an event id naming another event)
    /// as [`CollectionsError::Storage`], with nothing saved; storage failures, as the
    /// implementation reports them.
    fn save_state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        state: DunningState,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<(), CollectionsError>> + Send;
}

/// A [`DunningStore`] in memory, for tests and examples. Its outbox events go to a
/// [`MemoryOutbox`] (its own, or one shared with the other in-memory stores:
/// [`InMemoryDunningStore::with_outbox`]), written under the state lock with the state.
#[derive(Debug, Default)]
pub struct InMemoryDunningStore {
    states: Mutex<HashMap<(TenantId, InvoiceId), DunningState>>,
    outbox: Arc<MemoryOutbox>,
}

impl InMemoryDunningStore {
    /// An empty store with its own outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store writing its events to `outbox` instead, as `MemoryStore::with_outbox`.
    #[must_use]
    pub fn with_outbox(mut self, outbox: Arc<MemoryOutbox>) -> Self {
        self.outbox = outbox;
        self
    }

    /// The outbox its events go to.
    pub fn outbox(&self) -> &Arc<MemoryOutbox> {
        &self.outbox
    }
}

impl DunningStore for InMemoryDunningStore {
    #[tracing::instrument(name = "dotmac.store.dunning_state", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<DunningState, CollectionsError> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        Ok(states.get(&(tenant, invoice)).copied().unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.save_dunning_state", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn save_state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        state: DunningState,
        events: &[OutboxEvent],
    ) -> Result<(), CollectionsError> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        // Checked (and then written) under the state lock: a refused event saves nothing.
        self.outbox.push(tenant, events)?;
        states.insert((tenant, invoice), state);
        Ok(())
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

    fn usd(amount: Decimal) -> Money {
        Money::new(amount, Currency::USD)
    }

    fn invoice(total: Decimal) -> DunningInvoice {
        DunningInvoice {
            id: InvoiceId::from_u128(1),
            customer: CustomerId::from_u128(2),
            total: Money::new(total, Currency::USD),
            due: d("2026-03-15"),
        }
    }

    fn name(text: &str) -> StepName {
        StepName::new(text).unwrap()
    }

    fn run_daily(
        policy: &DunningPolicy,
        inv: &DunningInvoice,
        settlements: &[Settlement],
        from: NaiveDate,
        until: NaiveDate,
    ) -> Vec<(NaiveDate, StepName, CollectionAction)> {
        let mut state = DunningState::default();
        let mut out = Vec::new();
        let mut day = from;
        while day <= until {
            evaluate(policy, inv, settlements, &mut state, day, &mut out).unwrap();
            assert_eq!(
                evaluate(policy, inv, settlements, &mut state, day, &mut out),
                Ok(0)
            );
            day = day.succ_opt().unwrap();
        }
        out.iter().map(|a| (a.on, a.name, a.action)).collect()
    }

    #[test]
    fn suspension_moves_off_blocked_days_and_grace_shifts_overdue_steps() {
        // 2026-03-20 is a Friday; 2026-03-21/22 the weekend; 2026-03-23 a blocked holiday.
        let policy = DunningPolicy::builder(Currency::USD)
            .step(-3, "reminder")
            .step(3, "suspend")
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
                (d("2026-03-12"), name("reminder"), CollectionAction::Notify),
                (
                    d("2026-03-24"),
                    StepName::SUSPEND,
                    CollectionAction::Suspend
                )
            ]
        );
    }

    #[test]
    fn min_balance_stops_escalation_and_fees_come_out_in_invoice_currency() {
        let policy = DunningPolicy::builder(Currency::USD)
            .late_fee(1, "od1", usd(dec!(5)))
            .step(5, "suspend")
            .min_balance(usd(dec!(10)))
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
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].name.as_str(), out[0].action),
            ("od1", CollectionAction::LateFee)
        );
        assert_eq!(out[0].fee, Some(Money::new(dec!(5), Currency::USD)));
        assert_eq!(out[0].open_balance.amount(), dec!(50));
    }

    #[test]
    fn restore_carries_the_reconnection_fee_and_back_dated_payment_restores_today() {
        let policy = DunningPolicy::builder(Currency::USD)
            .step(5, "suspend")
            .restore_on_payment(RestoreOnPayment::Restore {
                reconnection_fee: Some(usd(dec!(15))),
            })
            .build()
            .unwrap();
        let inv = invoice(dec!(50));
        let mut state = DunningState::default();
        let mut out = Vec::new();
        evaluate(&policy, &inv, &[], &mut state, d("2026-03-20"), &mut out).unwrap();
        assert!(state.is_suspended(&policy));
        // The payment arrives late but is dated before the suspension day.
        let paid = [Settlement {
            on: d("2026-03-19"),
            amount: dec!(50),
        }];
        evaluate(&policy, &inv, &paid, &mut state, d("2026-03-22"), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].action, CollectionAction::Restore);
        assert_eq!(out[1].name, StepName::RESTORE);
        assert_eq!(out[1].on, d("2026-03-22"));
        assert_eq!(out[1].fee, Some(Money::new(dec!(15), Currency::USD)));
        let charge = out[1].pending_charge().unwrap();
        assert_eq!(charge.kind, LineKind::ReconnectionFee);
        assert_eq!(charge.unit_price, Money::new(dec!(15), Currency::USD));
        assert_eq!(out[0].pending_charge(), None);
        assert!(!state.is_suspended(&policy));
    }

    #[test]
    fn an_invoice_in_another_currency_is_refused_and_nothing_fires() {
        let policy = DunningPolicy::builder(Currency::USD)
            .late_fee(1, "od1", usd(dec!(5)))
            .step(5, "suspend")
            .build()
            .unwrap();
        let inv = DunningInvoice {
            total: Money::new(dec!(50), Currency::EUR),
            ..invoice(dec!(50))
        };
        let mut state = DunningState::default();
        let mut out = Vec::new();
        assert_eq!(
            evaluate(&policy, &inv, &[], &mut state, d("2026-04-30"), &mut out),
            Err(CollectionsError::WrongCurrency {
                what: "invoice under dunning",
                expected: "USD",
                got: "EUR",
            })
        );
        assert_eq!(state, DunningState::default());
        assert!(out.is_empty());
    }

    #[test]
    fn fees_in_another_currency_than_the_policys_are_refused() {
        let wrong = |got| CollectionsError::WrongCurrency {
            what: "dunning fee or minimum balance",
            expected: "USD",
            got,
        };
        let eur = Money::new(dec!(5), Currency::EUR);
        assert_eq!(
            DunningPolicy::builder(Currency::USD)
                .late_fee(1, "od1", eur)
                .build(),
            Err(wrong("EUR"))
        );
        assert_eq!(
            DunningPolicy::builder(Currency::USD)
                .min_balance(eur)
                .build(),
            Err(wrong("EUR"))
        );
        assert_eq!(
            DunningPolicy::builder(Currency::USD)
                .restore_on_payment(RestoreOnPayment::Restore {
                    reconnection_fee: Some(eur),
                })
                .build(),
            Err(wrong("EUR"))
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let refused = |builder: DunningPolicyBuilder, what, reason| {
            assert_eq!(
                builder.build(),
                Err(CollectionsError::InvalidConfiguration { what, reason })
            );
        };
        refused(
            DunningPolicy::builder(Currency::USD).step(1, "restore"),
            "dunning policy",
            "restore is not a step; use restore_on_payment instead",
        );
        let mut all = DunningPolicy::builder(Currency::USD);
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
        refused(
            all,
            "dunning policy",
            "suspension cannot be blocked on every weekday",
        );
        refused(
            DunningPolicy::builder(Currency::USD).late_fee(1, "late_fee", usd(dec!(-1))),
            "dunning policy",
            "fees must not be negative",
        );
        // The first bad name is reported, whatever follows it.
        refused(
            DunningPolicy::builder(Currency::USD)
                .step(1, "reminder")
                .step(2, "Final Notice")
                .step(3, ""),
            "dunning step name",
            "a step name has only lowercase letters, digits and underscores",
        );
    }

    #[test]
    fn step_names_are_validated() {
        for good in ["second_notice", "od1", "terminate", "x", "_", "a1_b2"] {
            assert_eq!(StepName::new(good).unwrap().as_str(), good);
        }
        let longest = "a".repeat(MAX_STEP_NAME_LEN);
        assert_eq!(StepName::new(&longest).unwrap().as_str(), longest);
        let invalid = |reason| {
            Err(CollectionsError::InvalidConfiguration {
                what: "dunning step name",
                reason,
            })
        };
        assert_eq!(StepName::new(""), invalid("a step name must not be empty"));
        assert_eq!(
            StepName::new(&"a".repeat(MAX_STEP_NAME_LEN + 1)),
            invalid("a step name has at most 64 characters")
        );
        for bad in ["Suspend", "final-notice", "second notice", "é", "od1\n"] {
            assert_eq!(
                StepName::new(bad),
                invalid("a step name has only lowercase letters, digits and underscores"),
                "{bad:?}"
            );
        }
        // Names order as their text, whatever their length.
        let mut names = ["write_off", "od1", "restore", "late_fee"].map(name);
        names.sort();
        assert_eq!(
            names.map(|n| n.to_string()),
            ["late_fee", "od1", "restore", "write_off"]
        );
        // Serde: a plain string, validated on the way in.
        let name = StepName::new("od1").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"od1\"");
        assert_eq!(serde_json::from_str::<StepName>("\"od1\"").unwrap(), name);
        assert!(serde_json::from_str::<StepName>("\"OD1\"").is_err());
        assert!(serde_json::from_str::<StepName>("\"\"").is_err());
    }

    #[test]
    fn operator_named_steps_fire_with_their_name_and_built_in_effect() {
        // Names the old closed list of six could not express; the effects are explicit or
        // taken from the names `suspend`/`write_off`/`late_fee`.
        let policy = DunningPolicy::builder(Currency::USD)
            .step(1, "second_notice")
            .late_fee(3, "od1", usd(dec!(7.50)))
            .step(4, "late_fee")
            .step(5, "suspend")
            .step_with_effect(6, "cut_off", StepEffect::Suspend)
            .step_with_effect(20, "terminate", StepEffect::WriteOff)
            .step(30, "write_off")
            .build()
            .unwrap();
        let effects: Vec<StepEffect> = policy.steps().iter().map(|s| s.effect).collect();
        assert_eq!(
            effects,
            [
                StepEffect::Notify,
                StepEffect::LateFee(usd(dec!(7.50))),
                StepEffect::LateFee(usd(Decimal::ZERO)),
                StepEffect::Suspend,
                StepEffect::Suspend,
                StepEffect::WriteOff,
                StepEffect::WriteOff,
            ]
        );
        let inv = invoice(dec!(50));
        let mut state = DunningState::default();
        let mut out = Vec::new();
        evaluate(&policy, &inv, &[], &mut state, d("2026-04-30"), &mut out).unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|a| (a.on, a.name.as_str(), a.action, a.fee.map(|f| f.amount())))
            .collect();
        assert_eq!(
            got,
            [
                (
                    d("2026-03-16"),
                    "second_notice",
                    CollectionAction::Notify,
                    None
                ),
                (
                    d("2026-03-18"),
                    "od1",
                    CollectionAction::LateFee,
                    Some(dec!(7.50))
                ),
                (
                    d("2026-03-19"),
                    "late_fee",
                    CollectionAction::LateFee,
                    Some(dec!(0))
                ),
                (d("2026-03-20"), "suspend", CollectionAction::Suspend, None),
                (d("2026-03-21"), "cut_off", CollectionAction::Suspend, None),
                (
                    d("2026-04-04"),
                    "terminate",
                    CollectionAction::WriteOff,
                    None
                ),
                (
                    d("2026-04-14"),
                    "write_off",
                    CollectionAction::WriteOff,
                    None
                ),
            ]
        );
        assert!(state.is_suspended(&policy));
        let events: Vec<&str> = out.iter().map(|a| a.event_type()).collect();
        assert_eq!(
            events,
            [
                "collections.step_fired",
                "collections.late_fee",
                "collections.late_fee",
                "collections.suspend_service",
                "collections.suspend_service",
                "collections.write_off",
                "collections.write_off",
            ]
        );
        // Only a positive fee becomes a charge.
        assert_eq!(
            out[1].pending_charge().map(|c| c.unit_price.amount()),
            Some(dec!(7.50))
        );
        assert_eq!(out[2].pending_charge(), None);
    }

    #[test]
    fn amounts_at_the_bounds_of_decimal_do_not_abort_an_evaluation() {
        let policy = DunningPolicy::builder(Currency::USD)
            .step(1, "od1")
            .build()
            .unwrap();
        // A refund reversing a huge allocation: MAX - (-MAX) would overflow.
        let settlements = [Settlement {
            on: d("2026-03-10"),
            amount: -Decimal::MAX,
        }];
        let mut state = DunningState::default();
        let mut out = Vec::new();
        let fired = evaluate(
            &policy,
            &invoice(Decimal::MAX),
            &settlements,
            &mut state,
            d("2026-03-20"),
            &mut out,
        )
        .unwrap();
        assert_eq!(fired, 1);
        assert_eq!(out[0].open_balance.amount(), Decimal::MAX);
    }

    #[test]
    fn policies_round_trip_through_serde_with_their_names() {
        let policy = DunningPolicy::builder(Currency::USD)
            .step(-3, "reminder")
            .late_fee(3, "od1", usd(dec!(5)))
            .step(5, "suspend")
            .build()
            .unwrap();
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(json["steps"][1]["name"], "od1");
        assert_eq!(
            serde_json::from_value::<DunningPolicy>(json.clone()).unwrap(),
            policy
        );
        // A deserialized policy is validated like a built one.
        let refused = |edit: fn(&mut serde_json::Value)| {
            let mut bad = json.clone();
            edit(&mut bad);
            serde_json::from_value::<DunningPolicy>(bad)
                .unwrap_err()
                .to_string()
        };
        assert!(
            refused(|j| j["steps"][0]["name"] = "restore".into()).contains("restore is not a step")
        );
        assert!(
            refused(|j| j["steps"][0]["name"] = "Reminder".into()).contains("lowercase letters")
        );
        assert!(
            refused(|j| j["steps"][1]["effect"]["late_fee"]["amount"] = "-5".into())
                .contains("fees must not be negative")
        );
        assert!(refused(|j| j["blocked_weekdays"] = 0xff.into()).contains("every weekday"));
    }
}
