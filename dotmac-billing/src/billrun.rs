//! The bill run and subscription changes as pure functions.
//!
//! [`bill_due`] computes, from one subscription's state, its plans, its pending charges and an
//! as-of date, every regular document that is due, and the subscription's new state. It is
//! deterministic: the same inputs give the same documents, with the same ids and idempotency
//! keys ([`DocumentKey`]), so a preview equals the issued invoice and a storage layer can run
//! it over a million subscriptions in chunks, committing each subscription's documents and new
//! state in one write. Re-running it on the new state finds nothing due.
//!
//! [`change`] and [`cancel`] apply a change at a date: the current segment ends, a new one
//! starts, and any part of an already billed period from the change date on is credited at the
//! price originally billed and charged at the new price.
//!
//! Discounts on prorations: every proration line of period `k` (credit or charge) is
//! discounted by the discounts that covered period `k`'s regular document
//! ([`AppliedDiscount::covers`](crate::AppliedDiscount::covers)), whatever their state is now,
//! and a fixed discount is prorated by the line's fraction of the period. A credit for unused
//! days therefore gives back exactly the share of what was billed for them, net of the
//! discount billed then, and a charge after a change is discounted like the period it falls
//! in, so any sequence of changes in a period bills what the period's prices say.

use std::collections::HashMap;
use std::hash::BuildHasher;

use chrono::NaiveDate;
use dotmac_core::{BillingInterval, IdDigest, Money, PendingChargeId, Period, PlanId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::catalog::{BillingTiming, ChargeKind, Plan, charge_amount};
use crate::error::BillingError;
use crate::invoice::{
    DocumentBuilder, DocumentKey, DocumentSettings, DraftLine, Invoice, LineKind, PendingCharge,
    PriceRef,
};
use crate::proration::{ProrationMode, fraction, prorate};
use crate::subscription::{
    Segment, SegmentState, Subscription, SubscriptionStatus, check_quantity,
};

/// Finds plans by id: a map, a slice or a single plan.
pub trait PlanLookup {
    /// The plan with `id`, if known.
    fn plan(&self, id: PlanId) -> Option<&Plan>;
}

impl<S: BuildHasher> PlanLookup for HashMap<PlanId, Plan, S> {
    fn plan(&self, id: PlanId) -> Option<&Plan> {
        self.get(&id)
    }
}

impl PlanLookup for [Plan] {
    fn plan(&self, id: PlanId) -> Option<&Plan> {
        self.iter().find(|p| p.id == id)
    }
}

impl PlanLookup for Vec<Plan> {
    fn plan(&self, id: PlanId) -> Option<&Plan> {
        self.as_slice().plan(id)
    }
}

impl PlanLookup for Plan {
    fn plan(&self, id: PlanId) -> Option<&Plan> {
        (self.id == id).then_some(self)
    }
}

pub(crate) fn find_plan(
    plans: &(impl PlanLookup + ?Sized),
    id: PlanId,
) -> Result<&Plan, BillingError> {
    plans.plan(id).ok_or(BillingError::UnknownPlan(id))
}

/// The result of a bill run for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BillOutcome {
    /// The subscription after billing (progress, discount counters, status).
    pub subscription: Subscription,
    /// The documents due, in date order, as drafts without numbers.
    pub invoices: Vec<Invoice>,
    /// The pending charges put on those documents.
    pub consumed: Vec<PendingChargeId>,
}

/// Computes every regular document of `sub` due on or before `as_of`.
///
/// `pending` are the customer's pending charges; those for this subscription (or for no
/// subscription) created on or before a document's date go on it.
///
/// # Errors
///
/// [`BillingError::UnknownPlan`], [`BillingError::UnknownPlanVersion`] or
/// [`BillingError::CurrencyNotOffered`] when the catalogue does not match the subscription;
/// pricing and date errors. On error nothing is returned and `sub` is untouched.
pub fn bill_due(
    sub: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    pending: &[PendingCharge],
    as_of: NaiveDate,
    settings: &DocumentSettings,
) -> Result<BillOutcome, BillingError> {
    let mut s = sub.clone();
    let mut invoices = Vec::new();
    let mut consumed = Vec::new();
    let Some(shape) = s.latest_segment() else {
        return Ok(BillOutcome {
            subscription: s,
            invoices,
            consumed,
        });
    };
    let plan = find_plan(plans, shape.plan)?;
    let (interval, timing) = (plan.interval, plan.timing);
    let bill_start = s.billing_start();
    let end = s.ends_on.unwrap_or(NaiveDate::MAX);
    let mut finished = false;
    // `interval.period(anchor, k)` already refuses a `k` whose successor does not fit; the
    // indices after it are checked all the same, since `next_period` comes from the store.
    let after = |k: i64, steps: i64| {
        k.checked_add(steps)
            .ok_or(dotmac_core::CoreError::DateOutOfRange("period index"))
    };
    loop {
        let k = s.next_period;
        let p = interval.period(s.anchor, k)?;
        if p.start() >= end {
            finished = true;
            break;
        }
        let Some(service) = Period::new(p.start().max(bill_start), p.end().min(end)).ok() else {
            s.next_period = after(k, 1)?;
            continue;
        };
        let partial_first = service.start() > p.start() && service.start() == bill_start;
        let defer = timing == BillingTiming::InAdvance
            && partial_first
            && s.trial_end.is_none()
            && s.first_period == crate::subscription::FirstPeriod::Defer;
        let (date, key_index, next, second) = match timing {
            BillingTiming::InAdvance if defer => {
                let p2 = interval.period(s.anchor, after(k, 1)?)?;
                let service2 = Period::new(p2.start(), p2.end().min(end)).ok();
                (
                    p2.start(),
                    after(k, 1)?,
                    after(k, 2)?,
                    service2.map(|sv| (p2, sv)),
                )
            }
            BillingTiming::InAdvance => (service.start(), k, after(k, 1)?, None),
            BillingTiming::InArrears => (p.end(), k, after(k, 1)?, None),
        };
        if date > as_of {
            break;
        }
        let key = DocumentKey::Period {
            subscription: s.id,
            index: key_index,
        };
        let mut builder =
            DocumentBuilder::new(key, s.customer, Some(s.id), s.currency, date, settings)?;
        let mut discounted = false;
        for applied in s.discounts.iter().filter(|d| d.is_active()) {
            builder.add_discount(&applied.discount);
            discounted = true;
        }
        let last_index = after(next, -1)?;
        period_lines(&s, plans, service, p, interval, Sign::Charge, &mut builder)?;
        if let Some((p2, service2)) = second {
            period_lines(
                &s,
                plans,
                service2,
                p2,
                interval,
                Sign::Charge,
                &mut builder,
            )?;
        }
        let has_recurring = !builder.is_empty();
        let first_index = k;
        if !s.setup_billed {
            if let Some(seg) = s.segment_on(service.start()) {
                let version = find_plan(plans, seg.plan)?.version(seg.version)?;
                if let Some(fee) = version.setup_fee(s.currency).filter(|f| !f.is_zero()) {
                    builder.push(DraftLine {
                        kind: LineKind::SetupFee,
                        text: None,
                        period: None,
                        quantity: Decimal::ONE,
                        unit_price: fee,
                        price: Some(PriceRef {
                            plan: seg.plan,
                            version: seg.version,
                            charge: u32::MAX,
                        }),
                        discountable: false,
                    })?;
                }
            }
            s.setup_billed = true;
        }
        for charge in pending {
            let due_here = charge.customer == s.customer
                && charge.subscription.is_none_or(|id| id == s.id)
                && charge.created_on <= date;
            if due_here && !consumed.contains(&charge.id) {
                builder.push(charge.to_line())?;
                consumed.push(charge.id);
            }
        }
        s.next_period = next;
        if !builder.is_empty() {
            if discounted && has_recurring {
                for applied in s.discounts.iter_mut().filter(|d| d.is_active()) {
                    applied.record(first_index, last_index);
                }
            }
            // One document is the common case: room for one first (a store keeps the
            // outcome's allocation until it commits the page, and the default growth would
            // reserve four).
            if invoices.capacity() == 0 {
                invoices.reserve_exact(1);
            }
            invoices.push(builder.finish());
        }
    }
    if s.status == SubscriptionStatus::Trialing && s.trial_end.is_some_and(|t| t <= as_of) {
        s.status = SubscriptionStatus::Active;
    }
    if s.ends_on.is_some_and(|e| e <= as_of) {
        if !s.status.is_terminal() {
            s.status = SubscriptionStatus::Cancelled;
        }
        if finished && s.status == SubscriptionStatus::Cancelled {
            s.status = SubscriptionStatus::Ended;
            // No later run bills an ended subscription: what is still pending for it (usage
            // rated in arrears after its last period was billed, prorations, fees) goes on a
            // closing invoice now, or it would never be billed.
            let left: Vec<&PendingCharge> = pending
                .iter()
                .filter(|charge| {
                    charge.customer == s.customer
                        && charge.subscription.is_none_or(|id| id == s.id)
                        && charge.created_on <= as_of
                        && !consumed.contains(&charge.id)
                })
                .collect();
            if !left.is_empty() {
                let key = DocumentKey::Closing { subscription: s.id };
                let mut builder =
                    DocumentBuilder::new(key, s.customer, Some(s.id), s.currency, as_of, settings)?;
                for charge in left {
                    builder.push(charge.to_line())?;
                    consumed.push(charge.id);
                }
                invoices.push(builder.finish());
            }
        }
    }
    Ok(BillOutcome {
        subscription: s,
        invoices,
        consumed,
    })
}

/// Where generated lines go, with the fraction of their period's price they bill: straight
/// onto a document, or into a list.
pub(crate) trait LineSink {
    fn put(&mut self, line: DraftLine, share: (i64, i64)) -> Result<(), BillingError>;
}

/// Lines with the fraction of their period's price they bill.
pub(crate) type SharedLines = Vec<(DraftLine, (i64, i64))>;

impl LineSink for SharedLines {
    fn put(&mut self, line: DraftLine, share: (i64, i64)) -> Result<(), BillingError> {
        self.push((line, share));
        Ok(())
    }
}

impl LineSink for DocumentBuilder<'_> {
    fn put(&mut self, line: DraftLine, (n, d): (i64, i64)) -> Result<(), BillingError> {
        self.push_prorated(line, n, d)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sign {
    Charge,
    Credit,
}

/// The end of `segments[i]`: the next segment's start or the subscription's end.
fn segment_end(s: &Subscription, i: usize) -> NaiveDate {
    s.segments
        .get(i.saturating_add(1))
        .map(|n| n.from)
        .unwrap_or(NaiveDate::MAX)
        .min(s.ends_on.unwrap_or(NaiveDate::MAX))
}

/// Lines for `part` of period `whole`, one per recurring charge of every billable segment
/// overlapping it.
pub(crate) fn period_lines(
    s: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    part: Period,
    whole: Period,
    interval: BillingInterval,
    sign: Sign,
    out: &mut impl LineSink,
) -> Result<(), BillingError> {
    for (i, seg) in s.segments.iter().enumerate() {
        let Some(seg_part) = Period::new(seg.from, segment_end(s, i))
            .ok()
            .and_then(|sp| sp.intersection(&part))
        else {
            continue;
        };
        // Without proration a period is billed whole, at the segment in force at its start.
        let seg_part = if s.proration == ProrationMode::None {
            if seg_part.start() != part.start() {
                continue;
            }
            part
        } else {
            seg_part
        };
        segment_lines(s, plans, seg, seg_part, whole, interval, sign, out)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn segment_lines(
    s: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    seg: &Segment,
    part: Period,
    whole: Period,
    interval: BillingInterval,
    sign: Sign,
    out: &mut impl LineSink,
) -> Result<(), BillingError> {
    if seg.state == SegmentState::Paused {
        return Ok(());
    }
    let plan = find_plan(plans, seg.plan)?;
    let version = plan.version(seg.version)?;
    let share = fraction(part, whole, s.proration, interval);
    for (index, charge) in version.charges.iter().enumerate() {
        if !charge.is_recurring() {
            continue;
        }
        let full = charge_amount(plan.id, charge, s.currency, seg.quantity)?;
        let prorated = prorate(full, part, whole, s.proration, interval)?;
        let units = match charge.kind {
            ChargeKind::PerSeat if !seg.quantity.is_zero() => seg.quantity,
            _ => Decimal::ONE,
        };
        let unit = if units == Decimal::ONE {
            prorated
        } else {
            Money::new(
                prorated.amount().checked_div(units).ok_or({
                    dotmac_core::CoreError::DivisionByZero {
                        operation: "unit price",
                    }
                })?,
                s.currency,
            )
        };
        let (kind, unit_price) = match sign {
            Sign::Charge => (LineKind::Recurring, unit),
            Sign::Credit => (LineKind::ProrationCredit, unit.negate()),
        };
        out.put(
            DraftLine {
                kind,
                text: None,
                period: Some(part),
                quantity: units,
                unit_price,
                price: Some(PriceRef {
                    plan: plan.id,
                    version: seg.version,
                    charge: u32::try_from(index).unwrap_or(u32::MAX),
                }),
                discountable: true,
            },
            share,
        )?;
    }
    Ok(())
}

/// A change to a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum SubscriptionChange {
    /// Move to another plan (or another version of the same plan: a price migration).
    Plan {
        /// The new plan.
        plan: PlanId,
        /// Its version; `None` for the version sold on the change date.
        version: Option<u32>,
    },
    /// Change the number of seats.
    Quantity {
        /// The new quantity.
        quantity: Decimal,
    },
    /// Pause service: paused days bill nothing.
    Pause,
    /// Resume a paused subscription.
    Resume,
}

/// When a change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTiming {
    /// On the change date, with prorations.
    #[default]
    Immediate,
    /// At the end of the period that holds the change date, without prorations.
    AtPeriodEnd,
}

/// Where the prorations of an immediate change go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProrationBehavior {
    /// On a document dated the change date.
    #[default]
    InvoiceNow,
    /// As pending charges on the subscription's next regular document.
    NextInvoice,
    /// Nowhere: the change is not prorated.
    None,
}

/// When a cancellation takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CancelTiming {
    /// On the date given; the unused part of a billed period is credited.
    Immediate,
    /// At the end of the period that holds the date given.
    #[default]
    EndOfPeriod,
}

/// The result of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeOutcome {
    /// The subscription after the change.
    pub subscription: Subscription,
    /// The proration document, for [`ProrationBehavior::InvoiceNow`] when there is anything to
    /// prorate (a draft without a number).
    pub invoice: Option<Invoice>,
    /// The prorations as pending charges, for [`ProrationBehavior::NextInvoice`].
    pub pending: Vec<PendingCharge>,
}

fn check_changeable(s: &Subscription, on: NaiveDate) -> Result<(), BillingError> {
    if on < s.start {
        return Err(BillingError::ChangeBeforeStart {
            subscription: s.id,
            on,
            start: s.start,
        });
    }
    if s.status.is_terminal() || s.ends_on.is_some_and(|e| on >= e) {
        return Err(BillingError::SubscriptionNotActive {
            subscription: s.id,
            status: s.status,
        });
    }
    Ok(())
}

/// Applies `change` to `sub` on `on`.
///
/// # Errors
///
/// [`BillingError::ChangeBeforeStart`] for a date before the start,
/// [`BillingError::SubscriptionNotActive`] for a cancelled or ended subscription,
/// [`BillingError::UnknownPlan`] / [`BillingError::CurrencyNotOffered`] /
/// [`BillingError::IntervalMismatch`] for a plan that cannot replace the current one,
/// [`BillingError::InvalidQuantity`], [`BillingError::IllegalTransition`] for a pause of a
/// paused subscription or a resume of an active one. On error nothing changes.
pub fn change(
    sub: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    change: &SubscriptionChange,
    on: NaiveDate,
    timing: ChangeTiming,
    behavior: ProrationBehavior,
    settings: &DocumentSettings,
) -> Result<ChangeOutcome, BillingError> {
    check_changeable(sub, on)?;
    let current = sub
        .segment_on(on)
        .or(sub.segments.first())
        .ok_or(BillingError::SubscriptionNotActive {
            subscription: sub.id,
            status: sub.status,
        })?
        .clone();
    let current_plan = find_plan(plans, current.plan)?;
    let mut status = sub.status;
    let next = match change {
        SubscriptionChange::Plan { plan, version } => {
            let target = find_plan(plans, *plan)?;
            if target.interval != current_plan.interval || target.timing != current_plan.timing {
                return Err(BillingError::IntervalMismatch {
                    from: current_plan.id,
                    to: target.id,
                });
            }
            let v = match version {
                Some(v) => target.version(*v)?,
                None => target.version_on(on),
            };
            if !v.offers(sub.currency) {
                return Err(BillingError::CurrencyNotOffered {
                    plan: target.id,
                    currency: sub.currency.code(),
                });
            }
            Segment {
                plan: target.id,
                version: v.version,
                ..current.clone()
            }
        }
        SubscriptionChange::Quantity { quantity } => {
            check_quantity(*quantity)?;
            Segment {
                quantity: *quantity,
                ..current.clone()
            }
        }
        SubscriptionChange::Pause => {
            status = status.transition(SubscriptionStatus::Paused)?;
            Segment {
                state: SegmentState::Paused,
                ..current.clone()
            }
        }
        SubscriptionChange::Resume => {
            let resumed = if status == SubscriptionStatus::Paused {
                SubscriptionStatus::Active
            } else {
                return Err(BillingError::IllegalTransition {
                    from: status,
                    to: SubscriptionStatus::Active,
                });
            };
            status = resumed;
            Segment {
                state: SegmentState::Billable,
                ..current.clone()
            }
        }
    };
    let effective = match timing {
        ChangeTiming::Immediate => on,
        ChangeTiming::AtPeriodEnd => {
            let (_, p) = current_plan.interval.period_containing(sub.anchor, on)?;
            p.end()
        }
    };
    let mut outcome = apply_at(
        sub,
        plans,
        effective,
        Some(Segment {
            from: effective,
            ..next
        }),
        behavior,
        settings,
    )?;
    outcome.subscription.status = status;
    Ok(outcome)
}

/// Cancels `sub` on `on`, immediately or at the end of the period that holds `on`.
///
/// # Errors
///
/// As [`change`]: [`BillingError::ChangeBeforeStart`], [`BillingError::SubscriptionNotActive`].
pub fn cancel(
    sub: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    on: NaiveDate,
    timing: CancelTiming,
    behavior: ProrationBehavior,
    settings: &DocumentSettings,
) -> Result<ChangeOutcome, BillingError> {
    check_changeable(sub, on)?;
    let shape = sub
        .latest_segment()
        .ok_or(BillingError::SubscriptionNotActive {
            subscription: sub.id,
            status: sub.status,
        })?;
    let plan = find_plan(plans, shape.plan)?;
    let end = match timing {
        CancelTiming::Immediate => on,
        CancelTiming::EndOfPeriod => plan.interval.period_containing(sub.anchor, on)?.1.end(),
    };
    let mut outcome = apply_at(sub, plans, end, None, behavior, settings)?;
    let s = &mut outcome.subscription;
    s.ends_on = Some(end);
    if timing == CancelTiming::Immediate {
        s.status = s.status.transition(SubscriptionStatus::Cancelled)?;
    }
    Ok(outcome)
}

/// The text of a deferred proration's discount line.
pub(crate) const DISCOUNT_TEXT: &str = "Discount";

/// Ends the segments at `at`, starts `next` (if any), and prorates the already billed days
/// from `at` on.
pub(crate) fn apply_at(
    sub: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    at: NaiveDate,
    next: Option<Segment>,
    behavior: ProrationBehavior,
    settings: &DocumentSettings,
) -> Result<ChangeOutcome, BillingError> {
    let mut s = sub.clone();
    let shape = s
        .latest_segment()
        .ok_or(BillingError::SubscriptionNotActive {
            subscription: s.id,
            status: s.status,
        })?;
    let interval = find_plan(plans, shape.plan)?.interval;
    let bill_start = s.billing_start();
    let billed_end = interval.period_start(s.anchor, s.next_period)?;
    // Per billed period: its credits for unused days, then its charges at the new price.
    let mut by_period: Vec<(i64, SharedLines)> = Vec::new();
    let prorate_now = behavior != ProrationBehavior::None && s.proration != ProrationMode::None;
    if prorate_now && at < billed_end {
        let (first, _) = interval.period_containing(s.anchor, at)?;
        let end = s.ends_on.unwrap_or(NaiveDate::MAX);
        let mut replaced = s.clone();
        replaced.segments.retain(|seg| seg.from < at);
        if let Some(n) = &next {
            replaced.segments.push(n.clone());
        }
        replaced.ends_on = Some(match &next {
            Some(_) => end,
            None => at,
        });
        for k in first..s.next_period {
            let p = interval.period(s.anchor, k)?;
            let Ok(unused) = Period::new(p.start().max(at).max(bill_start), p.end().min(end))
            else {
                continue;
            };
            let mut lines = Vec::new();
            period_lines(&s, plans, unused, p, interval, Sign::Credit, &mut lines)?;
            if next.is_some() {
                let mut charges = Vec::new();
                period_lines(
                    &replaced,
                    plans,
                    unused,
                    p,
                    interval,
                    Sign::Charge,
                    &mut charges,
                )?;
                for (line, _) in &mut charges {
                    line.kind = LineKind::ProrationCharge;
                }
                lines.append(&mut charges);
            }
            if !lines.is_empty() {
                by_period.push((k, lines));
            }
        }
    }
    s.segments.retain(|seg| seg.from < at);
    if let Some(n) = next {
        s.segments.push(n);
    }
    s.change_seq = s.change_seq.saturating_add(1);
    let mut outcome = ChangeOutcome {
        subscription: s.clone(),
        invoice: None,
        pending: Vec::new(),
    };
    if by_period.is_empty() || behavior == ProrationBehavior::None {
        return Ok(outcome);
    }
    let key = DocumentKey::Change {
        subscription: s.id,
        seq: s.change_seq,
    };
    let mut builder = DocumentBuilder::new(key, s.customer, Some(s.id), s.currency, at, settings)?;
    for (k, lines) in by_period {
        // The discounts of the regular document that billed period k, used up or not since.
        builder.set_discounts(
            s.discounts
                .iter()
                .filter(|d| d.applies_to_prorations_of(k))
                .map(|d| &d.discount),
        );
        for (line, (n, d)) in lines {
            builder.push_prorated(line, n, d)?;
        }
    }
    let document = builder.finish();
    match behavior {
        ProrationBehavior::InvoiceNow => outcome.invoice = Some(document),
        ProrationBehavior::NextInvoice => {
            // The discount is settled now, by this period's discounts, as a line of its own
            // next to the proration it reduces; the next document's discounts do not apply.
            let mut seq = 0u64;
            let mut add = |kind, text: Option<String>, line: &crate::InvoiceLine, qty, unit| {
                let digest = IdDigest::new("deferred-proration")
                    .uuid(s.id.as_uuid())
                    .u64(u64::from(s.change_seq))
                    .u64(seq);
                // At most a handful of lines per change: far below u64::MAX.
                seq = seq.saturating_add(1);
                PendingCharge {
                    id: PendingChargeId::derived(digest),
                    customer: s.customer,
                    subscription: Some(s.id),
                    kind,
                    text,
                    period: line.period,
                    quantity: qty,
                    unit_price: unit,
                    price: line.price,
                    created_on: at,
                }
            };
            for line in &document.lines {
                let charge = add(line.kind, None, line, line.quantity, line.unit_price);
                outcome.pending.push(charge);
                if !line.discount.is_zero() {
                    let off = add(
                        line.kind,
                        Some(DISCOUNT_TEXT.to_owned()),
                        line,
                        Decimal::ONE,
                        line.discount.negate(),
                    );
                    outcome.pending.push(off);
                }
            }
        }
        ProrationBehavior::None => {}
    }
    Ok(outcome)
}
