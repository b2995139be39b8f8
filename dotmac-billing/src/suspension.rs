//! Suspension for non-payment: what a suspension and a restore do to a subscription, under the
//! tenant's [`SuspensionBilling`] policy. Pure functions, like [`change`](crate::change):
//! [`suspend`] and [`restore`] return the subscription's new state and what to bill, and
//! [`BillingService::suspend_customer`](crate::BillingService::suspend_customer) /
//! [`BillingService::restore_customer`](crate::BillingService::restore_customer) write it with
//! its events.

use chrono::NaiveDate;
use dotmac_core::{IdDigest, PendingChargeId, Period};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::billrun::{
    ChangeOutcome, DISCOUNT_TEXT, PlanLookup, ProrationBehavior, SharedLines, Sign, apply_at,
    find_plan, period_lines,
};
use crate::error::BillingError;
use crate::invoice::{DocumentBuilder, DocumentKey, DocumentSettings, LineKind, PendingCharge};
use crate::subscription::{SegmentState, Subscription, SubscriptionStatus};

/// What a tenant bills for a suspended subscription (the options of Splynx's "suspension
/// billing" and Freeside's suspension settings). A suspended subscription never counts in MRR,
/// whatever the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspensionBilling {
    /// Bill as usual: a suspension for non-payment does not stop the contract (Splynx's
    /// default, Freeside's plain `suspend`). Nothing is credited on restore.
    #[default]
    KeepBilling,
    /// Bill as usual while suspended, and on restore credit the suspended days: one pending
    /// credit per period the suspension falls in (billed already, or billed as usual later),
    /// prorated by the days suspended and net of that period's discounts, for the next
    /// regular invoice. Its ids derive from the subscription and the suspension's first day,
    /// so a restore handled twice credits once (Freeside's `unsuspend` credit of suspended
    /// time).
    CreditSuspendedDays,
    /// Stop billing while suspended (Splynx's "don't charge for suspended services"): the
    /// subscription's price timeline is paused from the suspension day, so the bill run bills
    /// no recurring charge for it (it still walks its periods, so pending fees go out), the
    /// part of an already billed period from the suspension day on is credited on the next
    /// invoice, and a restore resumes billing from the restore day: the rest of the period of
    /// the restore is invoiced then (one document dated the restore day), and every later
    /// period is billed as usual. The suspended days are never billed.
    PauseBilling,
}

/// The text of the credit lines for suspended days.
const SUSPENDED_TEXT: &str = "Credit for suspended days";

/// Suspends `sub` on `on` under `policy`: its status becomes suspended since `on` (or since its
/// start, for a subscription that has not started yet), and under
/// [`SuspensionBilling::PauseBilling`] its timeline is paused from then on, with the already
/// billed days from then credited as pending charges (see [`ChangeOutcome::pending`]).
///
/// `None` when the subscription is already suspended (a replay): nothing to write.
///
/// # Errors
///
/// [`BillingError::IllegalTransition`] for a subscription that is neither active nor past
/// due, [`BillingError::DateBeyondHorizon`], and the errors of the proration.
pub fn suspend(
    sub: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    on: NaiveDate,
    policy: SuspensionBilling,
    settings: &DocumentSettings,
) -> Result<Option<ChangeOutcome>, BillingError> {
    if sub.status == SubscriptionStatus::Suspended {
        return Ok(None);
    }
    let status = sub.status.transition(SubscriptionStatus::Suspended)?;
    sub.check_within_horizon(on)?;
    let since = on.max(sub.start);
    let mut outcome = match policy {
        SuspensionBilling::PauseBilling => {
            let current = sub
                .segment_on(since)
                .or(sub.segments.first())
                .ok_or(BillingError::SubscriptionNotActive {
                    subscription: sub.id,
                    status: sub.status,
                })?
                .clone();
            let paused = crate::subscription::Segment {
                from: since,
                state: SegmentState::Paused,
                ..current
            };
            let mut outcome = apply_at(
                sub,
                plans,
                since,
                Some(paused),
                ProrationBehavior::NextInvoice,
                settings,
            )?;
            for charge in &mut outcome.pending {
                if charge.kind == LineKind::ProrationCredit && charge.text.is_none() {
                    charge.text = Some(SUSPENDED_TEXT.to_owned());
                }
            }
            outcome
        }
        SuspensionBilling::KeepBilling | SuspensionBilling::CreditSuspendedDays => ChangeOutcome {
            subscription: sub.clone(),
            invoice: None,
            pending: Vec::new(),
        },
    };
    outcome.subscription.status = status;
    outcome.subscription.suspended_since = Some(since);
    Ok(Some(outcome))
}

/// Restores a suspended `sub` on `on` under `policy`: it is active again, and
///
/// - a timeline paused by the suspension (it was suspended under
///   [`SuspensionBilling::PauseBilling`]) resumes on `on`, the rest of the period of `on`
///   invoiced at once ([`ChangeOutcome::invoice`]), whatever the policy is now;
/// - otherwise, under [`SuspensionBilling::CreditSuspendedDays`] (or `PauseBilling`, set after
///   the suspension began), the suspended days are credited ([`ChangeOutcome::pending`]);
/// - under [`SuspensionBilling::KeepBilling`] nothing is billed or credited.
///
/// `None` when the subscription is not suspended (a replay, or never suspended).
///
/// # Errors
///
/// [`BillingError::RestoreBeforeSuspension`] for `on` before the suspension's first day,
/// [`BillingError::DateBeyondHorizon`], and the errors of the proration.
pub fn restore(
    sub: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    on: NaiveDate,
    policy: SuspensionBilling,
    settings: &DocumentSettings,
) -> Result<Option<ChangeOutcome>, BillingError> {
    if sub.status != SubscriptionStatus::Suspended {
        return Ok(None);
    }
    let since = sub.suspended_since.unwrap_or(on);
    if on < since {
        return Err(BillingError::RestoreBeforeSuspension {
            subscription: sub.id,
            since,
            on,
        });
    }
    sub.check_within_horizon(on)?;
    let paused = sub
        .segment_on(on)
        .is_some_and(|s| s.state == SegmentState::Paused && s.from >= since);
    let mut outcome = if paused {
        let current = sub
            .segment_on(on)
            .cloned()
            .ok_or(BillingError::SubscriptionNotActive {
                subscription: sub.id,
                status: sub.status,
            })?;
        let resumed = crate::subscription::Segment {
            from: on,
            state: SegmentState::Billable,
            ..current
        };
        apply_at(
            sub,
            plans,
            on,
            Some(resumed),
            ProrationBehavior::InvoiceNow,
            settings,
        )?
    } else {
        let pending = match policy {
            SuspensionBilling::KeepBilling => Vec::new(),
            SuspensionBilling::CreditSuspendedDays | SuspensionBilling::PauseBilling => {
                suspended_days_credit(sub, plans, since, on, settings)?
            }
        };
        ChangeOutcome {
            subscription: sub.clone(),
            invoice: None,
            pending,
        }
    };
    outcome.subscription.status = SubscriptionStatus::Active;
    outcome.subscription.suspended_since = None;
    Ok(Some(outcome))
}

/// Pending credits for the days from `since` to `until` of every period they fall in, at the
/// prices of `sub`'s timeline and net of each period's discounts (as a deferred proration is:
/// a credit line and, when discounted, a line giving the discount back), for `sub`'s next
/// regular invoice. Ids derive from the subscription, `since` and the line's position.
fn suspended_days_credit(
    sub: &Subscription,
    plans: &(impl PlanLookup + ?Sized),
    since: NaiveDate,
    until: NaiveDate,
    settings: &DocumentSettings,
) -> Result<Vec<PendingCharge>, BillingError> {
    let Some(shape) = sub.latest_segment() else {
        return Ok(Vec::new());
    };
    let interval = find_plan(plans, shape.plan)?.interval;
    let end = sub.ends_on.unwrap_or(NaiveDate::MAX).min(until);
    let start = since.max(sub.billing_start());
    if start >= end {
        return Ok(Vec::new());
    }
    let (first, _) = interval.period_containing(sub.anchor, start)?;
    let mut by_period: Vec<(i64, SharedLines)> = Vec::new();
    let mut k = first;
    loop {
        let p = interval.period(sub.anchor, k)?;
        if p.start() >= end {
            break;
        }
        if let Ok(part) = Period::new(p.start().max(start), p.end().min(end)) {
            let mut lines = Vec::new();
            period_lines(sub, plans, part, p, interval, Sign::Credit, &mut lines)?;
            if !lines.is_empty() {
                by_period.push((k, lines));
            }
        }
        k = k
            .checked_add(1)
            .ok_or(dotmac_core::CoreError::DateOutOfRange("period index"))?;
    }
    if by_period.is_empty() {
        return Ok(Vec::new());
    }
    // A document only to round and discount the lines as an invoice would; never issued.
    let key = DocumentKey::Change {
        subscription: sub.id,
        seq: sub.change_seq,
    };
    let mut builder = DocumentBuilder::new(
        key,
        sub.customer,
        Some(sub.id),
        sub.currency,
        until,
        settings,
    )?;
    for (k, lines) in by_period {
        // The discounts of the period's regular document: those that covered it, or, for a
        // period not billed yet, those that will.
        builder.set_discounts(
            sub.discounts
                .iter()
                .filter(|d| {
                    d.applies_to_prorations_of(k) || (k >= sub.next_period && d.is_active())
                })
                .map(|d| &d.discount),
        );
        for (line, (n, d)) in lines {
            builder.push_prorated(line, n, d)?;
        }
    }
    let document = builder.finish();
    let since_days = u64::from_ne_bytes(i64::from(since.to_epoch_days()).to_ne_bytes());
    let mut seq = 0u64;
    let mut pending = Vec::with_capacity(document.lines.len());
    let mut add = |text: &str, line: &crate::InvoiceLine, quantity: Decimal, unit| {
        let id = PendingChargeId::derived(
            IdDigest::new("suspension-credit")
                .uuid(sub.id.as_uuid())
                .u64(since_days)
                .u64(seq),
        );
        // A handful of lines per period suspended: far below u64::MAX.
        seq = seq.saturating_add(1);
        PendingCharge {
            id,
            customer: sub.customer,
            subscription: Some(sub.id),
            kind: LineKind::ProrationCredit,
            text: Some(text.to_owned()),
            period: line.period,
            quantity,
            unit_price: unit,
            price: line.price,
            created_on: until,
        }
    };
    for line in &document.lines {
        pending.push(add(SUSPENDED_TEXT, line, line.quantity, line.unit_price));
        if !line.discount.is_zero() {
            pending.push(add(
                DISCOUNT_TEXT,
                line,
                Decimal::ONE,
                line.discount.negate(),
            ));
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billrun::bill_due;
    use crate::catalog::{Charge, Plan};
    use crate::invoice::{Invoice, invoice_pending_charges};
    use crate::subscription::NewSubscription;
    use dotmac_core::{Currency, CustomerId, Money, PlanId, ProductId};

    fn day(m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }

    /// 31.00 a month, billed in advance on the 1st: 1.00 a day in March, May, July.
    fn plan() -> Plan {
        Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "Fibre")
            .charge(Charge::recurring_flat([Money::from_minor(
                3100,
                Currency::USD,
            )]))
            .build(day(1, 1))
            .unwrap()
    }

    fn sub(plan: &Plan) -> Subscription {
        NewSubscription::new(CustomerId::from_u128(1), plan.id, Currency::USD, day(3, 1))
            .anchor(day(1, 1))
            .create(plan, Currency::USD)
            .unwrap()
    }

    fn totals(invoices: &[Invoice]) -> Vec<i64> {
        invoices
            .iter()
            .map(|i| i.total.to_minor().unwrap())
            .collect()
    }

    /// Bills `sub` up to `as_of` and returns the new state and the totals billed.
    fn run(
        sub: &Subscription,
        plan: &Plan,
        pending: &[PendingCharge],
        as_of: NaiveDate,
    ) -> (Subscription, Vec<i64>) {
        let out = bill_due(sub, plan, pending, as_of, &DocumentSettings::default()).unwrap();
        let consumed_all = out.consumed.len() == pending.len();
        assert!(consumed_all, "every pending charge went on an invoice");
        (out.subscription, totals(&out.invoices))
    }

    fn sum_pending(pending: &[PendingCharge]) -> i64 {
        let settings = DocumentSettings::default();
        let invoice = invoice_pending_charges(
            CustomerId::from_u128(1),
            Currency::USD,
            day(12, 31),
            pending,
            &settings,
        )
        .unwrap();
        invoice.total.to_minor().unwrap()
    }

    #[test]
    fn keep_billing_bills_as_usual_and_restores_without_credit() {
        let plan = plan();
        let (billed, _) = run(&sub(&plan), &plan, &[], day(3, 1));
        let out = suspend(
            &billed,
            &plan,
            day(3, 20),
            SuspensionBilling::KeepBilling,
            &DocumentSettings::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(out.subscription.status(), SubscriptionStatus::Suspended);
        assert_eq!(out.subscription.suspended_since(), Some(day(3, 20)));
        assert!(out.pending.is_empty() && out.invoice.is_none());
        // Suspending again is a no-op.
        assert!(
            suspend(
                &out.subscription,
                &plan,
                day(3, 21),
                SuspensionBilling::KeepBilling,
                &DocumentSettings::default()
            )
            .unwrap()
            .is_none()
        );
        // Across the period boundary: April is billed in full.
        let (suspended, april) = run(&out.subscription, &plan, &[], day(4, 1));
        assert_eq!(april, [3100]);
        let back = restore(
            &suspended,
            &plan,
            day(4, 10),
            SuspensionBilling::KeepBilling,
            &DocumentSettings::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(back.subscription.status(), SubscriptionStatus::Active);
        assert_eq!(back.subscription.suspended_since(), None);
        assert!(back.pending.is_empty() && back.invoice.is_none());
        assert!(
            restore(
                &back.subscription,
                &plan,
                day(4, 11),
                SuspensionBilling::KeepBilling,
                &DocumentSettings::default()
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn credit_suspended_days_credits_each_period_once_on_restore() {
        let plan = plan();
        let settings = DocumentSettings::default();
        let (billed, _) = run(&sub(&plan), &plan, &[], day(3, 1));
        let out = suspend(
            &billed,
            &plan,
            day(3, 20),
            SuspensionBilling::CreditSuspendedDays,
            &settings,
        )
        .unwrap()
        .unwrap();
        let (suspended, april) = run(&out.subscription, &plan, &[], day(4, 1));
        assert_eq!(april, [3100], "billed as usual while suspended");
        let back = restore(
            &suspended,
            &plan,
            day(4, 10),
            SuspensionBilling::CreditSuspendedDays,
            &settings,
        )
        .unwrap()
        .unwrap();
        // March 20–31 (12 of 31 days of 31.00) and April 1–9 (9 of 30 days of 31.00).
        assert_eq!(sum_pending(&back.pending), -(1200 + 930));
        assert!(back.pending.iter().all(|c| c.created_on == day(4, 10)
            && c.subscription == Some(billed.id)
            && c.text.as_deref() == Some(SUSPENDED_TEXT)));
        // The same restore again derives the same ids: the store adds them once.
        let again = restore(
            &suspended,
            &plan,
            day(4, 10),
            SuspensionBilling::CreditSuspendedDays,
            &settings,
        )
        .unwrap()
        .unwrap();
        assert_eq!(again.pending, back.pending);
        // The credit goes on May's invoice.
        let (_, may) = run(&back.subscription, &plan, &back.pending, day(5, 1));
        assert_eq!(may, [3100 - 2130]);
    }

    #[test]
    fn pause_billing_never_bills_the_suspended_days() {
        let plan = plan();
        let settings = DocumentSettings::default();
        let (billed, march) = run(&sub(&plan), &plan, &[], day(3, 1));
        assert_eq!(march, [3100]);
        let out = suspend(
            &billed,
            &plan,
            day(3, 20),
            SuspensionBilling::PauseBilling,
            &settings,
        )
        .unwrap()
        .unwrap();
        assert_eq!(out.subscription.status(), SubscriptionStatus::Suspended);
        // March 20–31 was billed: credited on the next invoice.
        assert_eq!(sum_pending(&out.pending), -1200);
        // Across the period boundary: April bills no recurring charge, only the credit.
        let (suspended, april) = run(&out.subscription, &plan, &out.pending, day(4, 1));
        assert_eq!(april, [-1200]);
        let (suspended, nothing) = run(&suspended, &plan, &[], day(4, 30));
        assert!(nothing.is_empty());
        // Restored on April 10: the rest of April (21 of 30 days of 31.00) is invoiced at
        // once, dated the restore day.
        let back = restore(
            &suspended,
            &plan,
            day(4, 10),
            SuspensionBilling::PauseBilling,
            &settings,
        )
        .unwrap()
        .unwrap();
        let invoice = back.invoice.clone().expect("the rest of April is invoiced");
        assert_eq!(
            (invoice.issue_date, totals(&[invoice])),
            (day(4, 10), vec![2170])
        );
        assert!(back.pending.is_empty());
        assert_eq!(back.subscription.status(), SubscriptionStatus::Active);
        // May is billed in full.
        let (_, may) = run(&back.subscription, &plan, &[], day(5, 1));
        assert_eq!(may, [3100]);
        // Under any later policy, a paused timeline resumes.
        let kept = restore(
            &suspended,
            &plan,
            day(4, 10),
            SuspensionBilling::KeepBilling,
            &settings,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            kept.invoice.map(|i| i.total),
            Some(Money::from_minor(2170, Currency::USD))
        );
    }

    #[test]
    fn pause_billing_restored_within_the_billed_period_bills_what_was_used() {
        let plan = plan();
        let settings = DocumentSettings::default();
        let (billed, _) = run(&sub(&plan), &plan, &[], day(3, 1));
        let out = suspend(
            &billed,
            &plan,
            day(3, 10),
            SuspensionBilling::PauseBilling,
            &settings,
        )
        .unwrap()
        .unwrap();
        let back = restore(
            &out.subscription,
            &plan,
            day(3, 20),
            SuspensionBilling::PauseBilling,
            &settings,
        )
        .unwrap()
        .unwrap();
        // Billed 31, credited March 10–31 (22), charged March 20–31 (12): March 10–19 free.
        let charged = back.invoice.map(|i| i.total.amount()).unwrap_or_default();
        assert_eq!(charged, Decimal::new(1200, 2));
        assert_eq!(sum_pending(&out.pending), -2200);
    }

    #[test]
    fn bad_input_is_refused_and_the_subscription_is_untouched() {
        let plan = plan();
        let settings = DocumentSettings::default();
        let fresh = sub(&plan);
        let out = suspend(
            &fresh,
            &plan,
            day(3, 20),
            SuspensionBilling::CreditSuspendedDays,
            &settings,
        )
        .unwrap()
        .unwrap();
        let before = out.subscription.clone();
        assert_eq!(
            restore(
                &out.subscription,
                &plan,
                day(3, 19),
                SuspensionBilling::CreditSuspendedDays,
                &settings
            ),
            Err(BillingError::RestoreBeforeSuspension {
                subscription: fresh.id,
                since: day(3, 20),
                on: day(3, 19)
            })
        );
        assert_eq!(out.subscription, before);
        let mut paused = fresh.clone();
        paused.status = SubscriptionStatus::Paused;
        assert_eq!(
            suspend(
                &paused,
                &plan,
                day(3, 20),
                SuspensionBilling::KeepBilling,
                &settings
            ),
            Err(BillingError::IllegalTransition {
                from: SubscriptionStatus::Paused,
                to: SubscriptionStatus::Suspended
            })
        );
    }
}
