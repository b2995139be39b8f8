//! Usage billing: how metered usage reaches invoices.
//!
//! * [`rate_period_usage`] (pure) rates a subscription's usage charges for one closed billing
//!   period from the meters' aggregates, after allowances, with any [`PriceModel`](crate::PriceModel),
//!   into [`RatedUsage`]s; [`RatedUsage::pending_charge`] is the [`PendingCharge`] the next
//!   invoice carries, with an id derived from (subscription, charge, period).
//! * [`UsageBillingService`] orchestrates it, a chunk of subscriptions at a time (the billing
//!   settings' chunk size): one set-based read of the [`UsageStore`]
//!   ([`UsageStore::period_aggregates`]: every closed period × meter of the chunk's
//!   subscriptions, aggregated exactly as ingestion's
//!   [`UsageAggregator`](dotmac_usage::UsageAggregator) does, in the database on the SQL
//!   stores) and one read of the chunk's pending charges, then it rates each subscription and
//!   adds its charges through the [`BillingStore`]; [`UsageBillingService::bill`] does that and then runs the bill run, so
//!   the usage of a period lands on the first invoice dated on or after the period's end.
//! * Late usage: periods already invoiced are re-rated for
//!   [`UsageBillingSettings::late_periods`] periods; when the new rating differs from what the
//!   invoices and pending charges already hold for that charge and period, the difference is a
//!   [`LineKind::UsageAdjustment`] charge on the next
//!   invoice. An issued invoice is never edited, and re-running adds nothing.

pub mod allowance;
mod rating;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use dotmac_core::{
    Clock, CustomerId, DomainEvent, EventPayload, Money, Period, PlanId, SubscriptionId, TenantId,
};
use futures_util::future::join;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use rating::{
    MeterAllowance, PeriodUsage, RatedUsage, adjustment_charge, late_usage_charge,
    price_meter_usage, rate, rate_period_usage, usage_charge_id,
};

use crate::billrun::PlanLookup;
use crate::catalog::{ChargeKind, Plan};
use crate::error::BillingError;
use crate::invoice::{LineKind, PendingCharge};
use crate::service::{BillRunSummary, BillingFailure, BillingService};
use crate::store::{BilledUsage, BillingStore};
use crate::subscription::Subscription;
use allowance::{AllowancePeriod, AllowancePolicy};
use dotmac_core::outbox::{Aggregate, OutboxPayload};
use dotmac_core::{MeterId, local_midnight};
use dotmac_usage::{
    Aggregation, Meter, PeriodKey, UsageCalendar, UsageError, UsageStore, WindowTotals, key_windows,
};

/// An allowance policy that applies to the subscriptions of one plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanAllowance {
    /// The plan.
    pub plan: PlanId,
    /// The policy (its meter is the meter it applies to).
    pub policy: AllowancePolicy,
}

/// A tenant's usage billing configuration. Build with [`UsageBillingSettings::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBillingSettings {
    /// The zone whose local dates bound billing periods (as for ingestion).
    pub zone: Tz,
    /// The meters; usage charges name them by code.
    pub meters: Vec<Meter>,
    /// Allowances per plan and meter.
    pub allowances: Vec<PlanAllowance>,
    /// How many invoiced periods before the first unbilled one are re-rated for late usage.
    pub late_periods: u32,
}

impl UsageBillingSettings {
    /// Settings for `meters` in `zone`, without allowances, re-checking the last 2 invoiced
    /// periods for late usage.
    pub fn new(zone: Tz, meters: Vec<Meter>) -> Self {
        UsageBillingSettings {
            zone,
            meters,
            allowances: Vec::new(),
            late_periods: 2,
        }
    }

    /// Adds an allowance for the subscriptions of `plan`.
    pub fn allowance(mut self, plan: PlanId, policy: AllowancePolicy) -> Self {
        self.allowances.push(PlanAllowance { plan, policy });
        self
    }

    /// Sets how many invoiced periods are re-rated for late usage.
    pub fn late_periods(mut self, periods: u32) -> Self {
        self.late_periods = periods;
        self
    }
}

/// Where a subscription's allowance for a period comes from: the policy's included quantity,
/// plus whatever top-ups the customer bought and what rolled over (kept by the application).
pub trait AllowanceSource: Send + Sync {
    /// The customer's allowance period for `policy` in the period starting `period_start`.
    fn allowance_period(
        &self,
        tenant: TenantId,
        subscription: &Subscription,
        policy: &AllowancePolicy,
        period_start: NaiveDate,
    ) -> AllowancePeriod;
}

/// Only the policy's included quantity: no top-ups, nothing rolled over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncludedOnly;

impl AllowanceSource for IncludedOnly {
    fn allowance_period(
        &self,
        _tenant: TenantId,
        subscription: &Subscription,
        policy: &AllowancePolicy,
        period_start: NaiveDate,
    ) -> AllowancePeriod {
        AllowancePeriod::open(policy, subscription.customer, period_start, Decimal::ZERO)
    }
}

impl<F> AllowanceSource for F
where
    F: Fn(TenantId, &Subscription, &AllowancePolicy, NaiveDate) -> AllowancePeriod + Send + Sync,
{
    fn allowance_period(
        &self,
        tenant: TenantId,
        subscription: &Subscription,
        policy: &AllowancePolicy,
        period_start: NaiveDate,
    ) -> AllowancePeriod {
        self(tenant, subscription, policy, period_start)
    }
}

/// What usage billing reports. Event name: `usage.rating_failed`.
///
/// An added charge publishes no event of its own: the pending charge is the record (read
/// with [`InvoiceStore::pending_charges`](crate::InvoiceStore::pending_charges)), the bill
/// run consumes it, and its invoice's `invoice.issued` carries it on. (A per-charge event
/// that no reaction consumed cost one outbox row per rated subscription.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum UsageBillingEvent {
    /// A subscription's usage could not be rated (a total that overflows, a usage charge
    /// without a meter, …): nothing was added for it, the others were rated, and a run after
    /// the data is fixed rates it (see [`UsageRunSummary::failures`]).
    RatingFailed {
        /// The customer.
        customer: CustomerId,
        /// The subscription.
        subscription: SubscriptionId,
        /// The error's kind ([`BillingError::kind`], e.g. `core.overflow`).
        error_kind: String,
        /// The error's message (ids and amounts, no personal data).
        error: String,
    },
}

impl EventPayload for UsageBillingEvent {
    fn event_type(&self) -> &'static str {
        match self {
            UsageBillingEvent::RatingFailed { .. } => "usage.rating_failed",
        }
    }
}

impl OutboxPayload for UsageBillingEvent {
    fn aggregate(&self) -> Aggregate {
        match self {
            UsageBillingEvent::RatingFailed { customer, .. } => Aggregate::customer(*customer),
        }
    }
}

/// What a usage billing run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageRunSummary {
    /// Subscriptions looked at.
    pub subscriptions: usize,
    /// Every rating computed (periods already billed included).
    pub rated: Vec<RatedUsage>,
    /// Charges added by this run (usage and adjustments); empty on a re-run.
    pub added: Vec<PendingCharge>,
    /// Subscriptions whose usage could not be rated because of a domain error (one
    /// `RatingFailed` event each): nothing was added for them; the others were rated.
    pub failures: Vec<BillingFailure>,
    /// One `RatingFailed` event per failure.
    pub events: Vec<DomainEvent<UsageBillingEvent>>,
}

impl UsageRunSummary {
    fn absorb(&mut self, other: UsageRunSummary) {
        // Counts of records held in memory: cannot reach usize::MAX.
        self.subscriptions = self.subscriptions.saturating_add(other.subscriptions);
        self.rated.extend(other.rated);
        self.added.extend(other.added);
        self.failures.extend(other.failures);
        self.events.extend(other.events);
    }

    /// The customers of [`UsageRunSummary::failures`], each once.
    fn failed_customers(&self) -> Vec<CustomerId> {
        let mut customers: Vec<CustomerId> = self.failures.iter().map(|f| f.customer).collect();
        customers.sort_unstable();
        customers.dedup();
        customers
    }
}

/// A rating run's counts, once per run: on the current span (`subscriptions`, `charges`,
/// `failures`) and in `dotmac_usage_charges_added_total` / `dotmac_usage_rating_failures_total`.
fn observe_rating(summary: &UsageRunSummary) {
    let span = tracing::Span::current();
    span.record("subscriptions", summary.subscriptions);
    span.record("charges", summary.added.len());
    span.record("failures", summary.failures.len());
    if !summary.added.is_empty() {
        metrics::counter!("dotmac_usage_charges_added_total")
            .increment(u64::try_from(summary.added.len()).unwrap_or(u64::MAX));
    }
    if !summary.failures.is_empty() {
        metrics::counter!("dotmac_usage_rating_failures_total")
            .increment(u64::try_from(summary.failures.len()).unwrap_or(u64::MAX));
    }
}

/// What is already billed (on invoices, or pending) for a usage charge and period: whether
/// its usage line exists, and the exact sum billed.
fn already_billed(
    rated: &RatedUsage,
    billed: &[BilledUsage],
) -> Result<(bool, Money), BillingError> {
    let mut found = false;
    let mut total = Money::zero(rated.amount.currency());
    for b in billed.iter().filter(|b| {
        b.subscription == rated.subscription && b.price == rated.price && b.period == rated.period
    }) {
        found |= b.kind == LineKind::Usage;
        total = total.checked_add(b.unit_price.checked_mul(b.quantity)?)?;
    }
    Ok((found, total))
}

/// Rates usage into pending charges: reads events from a [`UsageStore`], aggregates and rates
/// each closed period of each subscription with usage charges, and adds the charges to a
/// [`BillingStore`]. Idempotent: re-running on the same data adds nothing.
///
/// A cheap handle like [`BillingService`]: it holds the billing service it adds charges
/// through and bills with (its store, clock and settings), and the usage store, settings and
/// allowance source behind one `Arc`.
pub struct UsageBillingService<B, U, C, A = IncludedOnly> {
    billing: BillingService<B, C>,
    inner: Arc<UsageInner<U, A>>,
}

struct UsageInner<U, A> {
    usage: U,
    settings: UsageBillingSettings,
    allowances: A,
}

impl<B, U, C, A> Clone for UsageBillingService<B, U, C, A> {
    fn clone(&self) -> Self {
        UsageBillingService {
            billing: self.billing.clone(),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: BillingStore, U: UsageStore, C: Clock> UsageBillingService<B, U, C> {
    /// A service over `billing` (whose store gets the charges and whose bill run
    /// [`bill`](UsageBillingService::bill) runs) and the usage store, with allowances of
    /// included quantities only.
    pub fn new(billing: BillingService<B, C>, usage: U, settings: UsageBillingSettings) -> Self {
        Self::with_allowances(billing, usage, settings, IncludedOnly)
    }
}

impl<B: BillingStore, U: UsageStore, C: Clock, A: AllowanceSource> UsageBillingService<B, U, C, A> {
    /// As [`new`](UsageBillingService::new), with `allowances` for each customer's allowance
    /// periods (top-ups, rollover).
    pub fn with_allowances(
        billing: BillingService<B, C>,
        usage: U,
        settings: UsageBillingSettings,
        allowances: A,
    ) -> Self {
        UsageBillingService {
            billing,
            inner: Arc::new(UsageInner {
                usage,
                settings,
                allowances,
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &UsageBillingSettings {
        &self.inner.settings
    }

    /// The billing service charges are added through.
    pub fn billing(&self) -> &BillingService<B, C> {
        &self.billing
    }

    async fn plan_map(&self, tenant: TenantId) -> Result<HashMap<PlanId, Plan>, BillingError> {
        Ok(self
            .billing
            .store()
            .plans(tenant)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect())
    }

    /// Rates the usage of every subscription of the tenant for the periods that ended on or
    /// before `as_of` and adds the charges and adjustments for their next invoices.
    ///
    /// A subscription whose rating fails with a domain error ([`BillingError::UnknownMeter`],
    /// [`BillingError::UnknownPlan`], a total that overflows, …) gets nothing added (not even
    /// for its periods that did rate), is listed in [`UsageRunSummary::failures`] with a
    /// `usage.rating_failed` event, and the others are rated; a run after the data is fixed
    /// rates it.
    ///
    /// Usage is read a chunk at a time, or, for a meter and period that many of a chunk's
    /// subscriptions share (256 keys or more: a tenant billed on one day), once per run with
    /// one grouped pass
    /// ([`UsageStore::window_totals`]): events stored during the run after that pass are
    /// rated by the next run, as late usage. What is already billed is read per chunk with
    /// [`InvoiceStore::billed_usage`](crate::InvoiceStore::billed_usage), by subscription and
    /// from the first period rated (on SQL stores never an invoice, so a customer's invoice
    /// history does not slow rating down).
    ///
    /// # Errors
    ///
    /// The first store error (a usage store that answers a keyed read with a different number
    /// of aggregates than keys included: [`BillingError::InvalidConfiguration`]); charges added
    /// before it stay added, and a re-run continues without adding them twice.
    #[tracing::instrument(name = "dotmac.usage.rate_due", level = "info", skip_all, fields(tenant = %tenant, subscriptions = tracing::field::Empty, charges = tracing::field::Empty, failures = tracing::field::Empty))]
    pub async fn rate_due(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
    ) -> Result<UsageRunSummary, BillingError> {
        let plans = self.plan_map(tenant).await?;
        let mut summary = UsageRunSummary::default();
        let mut passes = WindowPasses::default();
        let store = self.billing.store();
        let chunk = self.billing.settings().chunk_size.max(1);
        let mut page = store.subscriptions_page(tenant, None, chunk).await?;
        while let Some(last) = page.last() {
            // The next page is read while this one is rated: rating writes pending charges
            // only, never the subscriptions a page holds.
            let (next, rated) = join(
                store.subscriptions_page(tenant, Some(last.id), chunk),
                self.rate_chunk(tenant, &page, &plans, as_of, &mut passes),
            )
            .await;
            let rated = rated?;
            for (sub, rated) in page.iter().zip(rated) {
                match rated {
                    Ok(rated) => summary.absorb(rated),
                    Err(error) => {
                        summary.events.push(DomainEvent::new(
                            tenant,
                            self.billing.clock(),
                            UsageBillingEvent::RatingFailed {
                                customer: sub.customer,
                                subscription: sub.id,
                                error_kind: error.kind().to_owned(),
                                error: error.to_string(),
                            },
                        ));
                        summary.subscriptions = summary.subscriptions.saturating_add(1);
                        summary.failures.push(BillingFailure {
                            customer: sub.customer,
                            subscription: Some(sub.id),
                            error,
                        });
                    }
                }
            }
            page = next?;
        }
        observe_rating(&summary);
        Ok(summary)
    }

    /// Rates one subscription's usage up to `as_of` (see [`UsageBillingService::rate_due`]).
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownSubscription`], store errors, and the subscription's rating
    /// error (which [`UsageBillingService::rate_due`] would report as a failure); nothing is
    /// added then.
    #[tracing::instrument(name = "dotmac.usage.rate_subscription", level = "info", skip_all, fields(tenant = %tenant, subscriptions = tracing::field::Empty, charges = tracing::field::Empty, failures = tracing::field::Empty))]
    pub async fn rate_subscription(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        as_of: NaiveDate,
    ) -> Result<UsageRunSummary, BillingError> {
        let sub = self
            .billing
            .store()
            .subscription(tenant, id)
            .await?
            .ok_or(BillingError::UnknownSubscription(id))?;
        let plans = self.plan_map(tenant).await?;
        let rated = self
            .rate_chunk(
                tenant,
                std::slice::from_ref(&sub),
                &plans,
                as_of,
                &mut WindowPasses::default(),
            )
            .await?
            .pop()
            .unwrap_or_else(|| Ok(UsageRunSummary::default()));
        match &rated {
            Ok(summary) => observe_rating(summary),
            // The subscription's own data failed it: one rating failure, nothing added.
            Err(_) => {
                let span = tracing::Span::current();
                span.record("subscriptions", 1);
                span.record("failures", 1);
                metrics::counter!("dotmac_usage_rating_failures_total").increment(1);
            }
        }
        rated
    }

    /// Rates usage up to `as_of`, then runs `billing`'s bill run on `as_of`: the usage of each
    /// period that ended by then goes on the first invoice dated on or after its end.
    ///
    /// The customers of the subscriptions whose usage could not be rated
    /// ([`UsageRunSummary::failures`]) are left out of the bill run, so that none of them gets
    /// an invoice without its usage; a run after the data is fixed rates and bills them.
    ///
    /// # Errors
    ///
    /// The errors of [`UsageBillingService::rate_due`] and [`BillingService::run_bill`].
    #[tracing::instrument(name = "dotmac.usage.bill", level = "info", skip_all, fields(tenant = %tenant, charges = tracing::field::Empty, invoices = tracing::field::Empty, failures = tracing::field::Empty))]
    pub async fn bill(
        &self,
        tenant: TenantId,
        as_of: NaiveDate,
    ) -> Result<(UsageRunSummary, BillRunSummary), BillingError> {
        let usage = self.rate_due(tenant, as_of).await?;
        let bill = self
            .billing
            .run_bill_skipping(tenant, as_of, &usage.failed_customers())
            .await?;
        let span = tracing::Span::current();
        span.record("charges", usage.added.len());
        span.record("invoices", bill.invoices);
        // Counts of records held in memory: cannot reach usize::MAX.
        span.record(
            "failures",
            usage.failures.len().saturating_add(bill.failures.len()),
        );
        Ok((usage, bill))
    }

    /// The meters that the usage charges of any of the subscription's plan versions name.
    fn meters_of(&self, sub: &Subscription, plans: &HashMap<PlanId, Plan>) -> Vec<&Meter> {
        let named: BTreeSet<MeterId> = sub
            .segments
            .iter()
            .filter_map(|s| plans.get(&s.plan)?.version(s.version).ok())
            .flat_map(|v| v.charges.iter())
            .filter_map(|c| match &c.kind {
                ChargeKind::Usage { meter } => Some(*meter),
                _ => None,
            })
            .collect();
        self.inner
            .settings
            .meters
            .iter()
            .filter(|m| named.contains(&m.id))
            .collect()
    }

    /// What rating `sub` up to `as_of` needs, decided before anything is read: its meters,
    /// calendar and closed periods (oldest first); `None` when it has no usage charge.
    fn plan_rating<'a>(
        &'a self,
        sub: &'a Subscription,
        plans: &HashMap<PlanId, Plan>,
        as_of: NaiveDate,
    ) -> Result<Option<PlannedRating<'a>>, BillingError> {
        let has_usage = sub.segments.iter().any(|s| {
            plans
                .get(&s.plan)
                .and_then(|p| p.version(s.version).ok())
                .is_some_and(|v| {
                    v.charges
                        .iter()
                        .any(|c| matches!(c.kind, ChargeKind::Usage { .. }))
                })
        });
        let Some(shape) = sub.latest_segment() else {
            return Ok(None);
        };
        if !has_usage {
            return Ok(None);
        }
        let interval = plans
            .plan(shape.plan)
            .ok_or(BillingError::UnknownPlan(shape.plan))?
            .interval;
        let meters = self.meters_of(sub, plans);
        let (first, _) = interval.period_containing(sub.anchor, sub.start)?;
        let late = i64::from(self.inner.settings.late_periods);
        let mut index = first.max(sub.next_period.saturating_sub(1).saturating_sub(late));
        let zone = self.inner.settings.zone;
        let mut periods = Vec::new();
        loop {
            let period = interval.period(sub.anchor, index)?;
            if period.end() > as_of || sub.ends_on.is_some_and(|end| period.start() >= end) {
                break;
            }
            // The instants the period's events are read between (a gauge's from the
            // subscription's start: its level carries over), checked here so that a date out
            // of range fails the subscription as a date error.
            local_midnight(zone, period.end())?;
            local_midnight(zone, period.start())?;
            if meters.iter().any(|m| is_weighted(&m.aggregation)) {
                local_midnight(zone, sub.start.min(period.start()))?;
            }
            periods.push((index, period));
            index = index.saturating_add(1);
        }
        Ok(Some(PlannedRating {
            sub,
            meters,
            calendar: UsageCalendar {
                interval,
                anchor: sub.anchor,
                zone,
            },
            periods,
            first_key: 0,
        }))
    }

    /// Rates a chunk of subscriptions: its usage (see [`UsageBillingService::quantities`])
    /// and what its subscriptions already have billed from the first period rated on
    /// ([`crate::InvoiceStore::billed_usage`]), two reads issued together; then
    /// each subscription's charges, added with one store call only when all of its rating
    /// succeeded, so a domain error adds nothing.
    /// Per subscription, in order: its summary or its domain error.
    async fn rate_chunk(
        &self,
        tenant: TenantId,
        subs: &[Subscription],
        plans: &HashMap<PlanId, Plan>,
        as_of: NaiveDate,
        passes: &mut WindowPasses,
    ) -> Result<Vec<Result<UsageRunSummary, BillingError>>, BillingError> {
        let mut planned: Vec<Result<Option<PlannedRating<'_>>, BillingError>> = subs
            .iter()
            .map(|sub| self.plan_rating(sub, plans, as_of))
            .collect();
        let mut keys = Vec::new();
        for rating in planned.iter_mut().flatten().flatten() {
            rating.first_key = keys.len();
            for (_, period) in &rating.periods {
                for meter in &rating.meters {
                    keys.push(PeriodKey {
                        customer: rating.sub.customer,
                        subscription: Some(rating.sub.id),
                        meter: meter.id,
                        calendar: rating.calendar,
                        period_start: period.start(),
                        history_from: rating.sub.start,
                    });
                }
            }
        }
        // What is already billed, for the subscriptions with periods to rate, from the first
        // of their periods on.
        let rated: Vec<(CustomerId, SubscriptionId)> = planned
            .iter()
            .flatten()
            .flatten()
            .filter(|r| !r.periods.is_empty())
            .map(|r| (r.sub.customer, r.sub.id))
            .collect();
        let since = planned
            .iter()
            .flatten()
            .flatten()
            .flat_map(|r| r.periods.iter().map(|(_, p)| p.start()))
            .min();
        // The chunk's two reads are independent: issued together, a database serves them on
        // connections of their own while this task decodes what came back first.
        let store = self.billing.store();
        let billed = async {
            match since {
                Some(since) if !rated.is_empty() => store.billed_usage(tenant, &rated, since).await,
                _ => Ok(Vec::new()),
            }
        };
        let (quantities, billed) = join(self.quantities(tenant, &keys, passes), billed).await;
        let quantities = quantities?;
        let mut billed_of: HashMap<SubscriptionId, Vec<BilledUsage>> = HashMap::new();
        for b in billed? {
            billed_of.entry(b.subscription).or_default().push(b);
        }
        let mut out = Vec::with_capacity(subs.len());
        // The chunk's new charges, added with one store call once every subscription is
        // rated, each with its subscription's position in `out`.
        let mut to_add: Vec<(usize, PendingCharge)> = Vec::new();
        for (sub, rating) in subs.iter().zip(planned) {
            let rating = match rating {
                Ok(Some(rating)) => rating,
                Ok(None) => {
                    out.push(Ok(UsageRunSummary {
                        subscriptions: 1,
                        ..UsageRunSummary::default()
                    }));
                    continue;
                }
                Err(error) => {
                    out.push(Err(error));
                    continue;
                }
            };
            let charges = self.charges_of(
                tenant,
                &rating,
                quantities.get(rating.first_key..).unwrap_or_default(),
                plans,
                billed_of.remove(&sub.id).unwrap_or_default(),
                as_of,
            );
            match charges {
                Ok((summary, charges)) => {
                    to_add.extend(charges.into_iter().map(|charge| (out.len(), charge)));
                    out.push(Ok(summary));
                }
                Err(error) => out.push(Err(error)),
            }
        }
        self.add_charges(tenant, to_add, &mut out).await?;
        Ok(out)
    }

    /// The aggregate of each of `keys` (in order): a key whose meter and window many keys of
    /// the chunk share (at least [`WINDOW_PASS_KEYS`]), or that a pass of this run already
    /// read, is combined from that window's one grouped pass
    /// ([`UsageStore::window_totals`], made once per run and window); the others, and any
    /// the pass cannot tell, come from one keyed read ([`UsageStore::period_aggregates`]).
    /// Both give exactly [`dotmac_usage::aggregate_events`]'s aggregate.
    async fn quantities(
        &self,
        tenant: TenantId,
        keys: &[PeriodKey],
        passes: &mut WindowPasses,
    ) -> Result<Vec<Result<Decimal, UsageError>>, BillingError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let meters = &self.inner.settings.meters;
        let windows = key_windows(meters, keys);
        let mut shared: HashMap<Window, usize> = HashMap::new();
        for (meter, from, to) in windows.iter().flatten() {
            if combines(&meter.aggregation) {
                // Keys of one chunk: cannot reach usize::MAX.
                let n = shared.entry((meter.id, *from, *to)).or_default();
                *n = n.saturating_add(1);
            }
        }
        for (window, n) in shared {
            if n < WINDOW_PASS_KEYS || passes.0.contains_key(&window) {
                continue;
            }
            let (meter_id, from, to) = window;
            if let Some(meter) = meters.iter().find(|m| m.id == meter_id) {
                let totals = self
                    .inner
                    .usage
                    .window_totals(tenant, meter, from, to)
                    .await?;
                passes.0.insert(window, totals);
            }
        }
        let mut out: Vec<Option<Result<Decimal, UsageError>>> = keys
            .iter()
            .zip(&windows)
            .map(|(key, window)| {
                let (meter, from, to) = window.as_ref().ok()?;
                let totals = passes.0.get(&(meter.id, *from, *to))?.as_ref()?;
                totals
                    .quantity(&meter.aggregation, key.customer, key.subscription)
                    .map(Ok)
            })
            .collect();
        let rest: Vec<PeriodKey> = keys
            .iter()
            .zip(&out)
            .filter(|(_, q)| q.is_none())
            .map(|(key, _)| *key)
            .collect();
        if !rest.is_empty() {
            let read = self
                .inner
                .usage
                .period_aggregates(tenant, meters, &rest)
                .await?;
            // One aggregate per key, in order, or the read cannot be matched to its keys: a
            // missing one must never be rated as no usage.
            if read.len() != rest.len() {
                return Err(SHORT_READ);
            }
            for (slot, aggregate) in out.iter_mut().filter(|q| q.is_none()).zip(read) {
                *slot = Some(aggregate);
            }
        }
        out.into_iter().map(|q| q.ok_or(SHORT_READ)).collect()
    }

    /// The charges of one planned subscription (pure): each period's quantities (from
    /// `quantities`, the chunk's aggregates from the subscription's first key on) and
    /// allowances are rated, and each rating not yet `billed` (the subscription's usage on
    /// invoices and pending, [`crate::InvoiceStore::billed_usage`]) becomes a charge, or an
    /// adjustment of what was billed.
    fn charges_of(
        &self,
        tenant: TenantId,
        rating: &PlannedRating<'_>,
        quantities: &[Result<Decimal, dotmac_usage::UsageError>],
        plans: &HashMap<PlanId, Plan>,
        mut billed: Vec<BilledUsage>,
        as_of: NaiveDate,
    ) -> Result<(UsageRunSummary, Vec<PendingCharge>), BillingError> {
        let sub = rating.sub;
        let mut summary = UsageRunSummary {
            subscriptions: 1,
            ..UsageRunSummary::default()
        };
        let mut charges: Vec<PendingCharge> = Vec::new();
        let mut quantities = quantities.iter();
        for &(index, period) in &rating.periods {
            let mut usage = PeriodUsage {
                index,
                ..PeriodUsage::default()
            };
            for meter in &rating.meters {
                let quantity = quantities.next().cloned().ok_or(SHORT_READ)??;
                usage.quantities.insert(meter.id, quantity);
            }
            usage.allowances = self.allowances_of(tenant, sub, period);
            let rated = rate_period_usage(sub, plans, &self.inner.settings.meters, &usage)?;
            for r in &rated {
                let (found, billed_sum) = already_billed(r, &billed)?;
                let charge = if found {
                    r.adjustment_charge(billed_sum, as_of)?
                } else {
                    Some(r.pending_charge())
                };
                let Some(charge) = charge else {
                    continue;
                };
                // Its exact amount must exist, or the bill run would fail on the charge.
                charge.unit_price.checked_mul(charge.quantity)?;
                billed.extend(BilledUsage::of_charge(&charge));
                charges.push(charge);
            }
            summary.rated.extend(rated);
        }
        Ok((summary, charges))
    }

    /// Adds a chunk's rated charges with one store call (each at most once: the store's add
    /// is idempotent); the charges actually added go into the summaries of their
    /// subscriptions (`out[position]`).
    async fn add_charges(
        &self,
        tenant: TenantId,
        charges: Vec<(usize, PendingCharge)>,
        out: &mut [Result<UsageRunSummary, BillingError>],
    ) -> Result<(), BillingError> {
        if charges.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(charges.len());
        let mut placed = Vec::with_capacity(charges.len());
        for (position, charge) in charges {
            batch.push((charge.clone(), Vec::new()));
            placed.push((position, charge));
        }
        let added = self
            .billing
            .store()
            .add_pending_charges(tenant, batch)
            .await?;
        for ((position, charge), added) in placed.into_iter().zip(added) {
            if let (true, Some(Ok(summary))) = (added, out.get_mut(position)) {
                summary.added.push(charge);
            }
        }
        Ok(())
    }

    /// The allowances of one period of a subscription: its plan's policies, with the
    /// customer's allowance periods.
    fn allowances_of(
        &self,
        tenant: TenantId,
        sub: &Subscription,
        period: Period,
    ) -> Vec<MeterAllowance> {
        let plan = rating::pricing_segment(sub, period).map(|s| s.plan);
        self.inner
            .settings
            .allowances
            .iter()
            .filter(|a| Some(a.plan) == plan)
            .map(|allowance| MeterAllowance {
                policy: allowance.policy.clone(),
                period: self.inner.allowances.allowance_period(
                    tenant,
                    sub,
                    &allowance.policy,
                    period.start(),
                ),
            })
            .collect()
    }
}

/// A meter and the instants `[from, to)` of the events a key reads.
type Window = (MeterId, DateTime<Utc>, DateTime<Utc>);

/// A usage store that answered a keyed read with a different number of aggregates than keys:
/// rating stops rather than take a missing aggregate for no usage.
const SHORT_READ: BillingError = BillingError::InvalidConfiguration {
    what: "usage store",
    reason: "period_aggregates returned a different number of aggregates than keys",
};

/// A chunk takes a window's grouped pass once this many of its keys share the window (a
/// tenant billed on one day puts all of a chunk's keys in one window; anchors spread over
/// the month leave a few dozen per window, which the keyed read serves better than a pass
/// over every customer's events of the window).
const WINDOW_PASS_KEYS: usize = 256;

/// The window passes a rating run made, for its later chunks: `None` where the store has no
/// pass or could not total the window. A snapshot: events stored after a window's pass are
/// rated by the next run (as late usage, with an adjustment when already billed).
#[derive(Default)]
struct WindowPasses(HashMap<Window, Option<WindowTotals>>);

/// Whether a window's grouped totals give the aggregation (see [`WindowTotals::quantity`]).
fn combines(aggregation: &Aggregation) -> bool {
    matches!(
        aggregation,
        Aggregation::Count | Aggregation::Sum | Aggregation::Max
    )
}

/// One subscription's rating as planned before the chunk's reads (see
/// `UsageBillingService::plan_rating`).
struct PlannedRating<'a> {
    sub: &'a Subscription,
    /// The meters its usage charges name.
    meters: Vec<&'a Meter>,
    /// Its billing calendar, as ingestion's.
    calendar: UsageCalendar,
    /// The closed periods to rate, oldest first, with their indices.
    periods: Vec<(i64, Period)>,
    /// Where its keys (period-major, meter-minor) start in the chunk's usage read.
    first_key: usize,
}

/// Whether a meter is a gauge whose level carries over from earlier periods.
fn is_weighted(aggregation: &Aggregation) -> bool {
    matches!(
        aggregation,
        Aggregation::WeightedSum | Aggregation::WeightedSumOfChanges
    )
}

/// The spans and metrics of [`BillingService`], [`UsageBillingService`] and
/// [`MemoryStore`](crate::MemoryStore), with a counting `metrics` recorder (no exporter as a
/// dev-dependency) and `dotmac_core`'s span recorder.
#[cfg(test)]
mod observability_tests {
    use std::collections::BTreeMap;

    use std::sync::Mutex;

    use dotmac_core::span_recorder::record_spans;

    /// The two tests run one at a time: each counts what a whole scenario moved, and the
    /// spans test runs its scenario twice.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    use chrono::{DateTime, TimeZone, Utc};
    use dotmac_core::{
        BillingInterval, Currency, FixedClock, InvoiceId, MeterId, PendingChargeId, ProductId,
        UsageEventId,
    };
    use dotmac_usage::{InMemoryUsageStore, UsageEvent};

    use rust_decimal_macros::dec;

    use super::*;
    use crate::MemoryStore;
    use crate::PriceModel;
    use crate::catalog::{Charge, CurrencyPrice, Product};
    use crate::invoice::{CreditRequest, Invoice};
    use crate::service::{BillingSettings, ChargeRequest};
    use crate::store::{CustomerAccount, InvoiceStore};
    use crate::subscription::NewSubscription;

    use dotmac_core::metrics_recorder::Counting;

    const TENANT: TenantId = TenantId::from_u128(1);
    const CUSTOMER: CustomerId = CustomerId::from_u128(2);
    const SUB: SubscriptionId = SubscriptionId::from_u128(3);
    const DATA: MeterId = MeterId::from_u128(4);
    /// Personal data that must reach no span: in a manual charge's text.
    const PERSONAL: &str = "Jane Doe <jane@example.com>: site visit";

    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, day).unwrap()
    }

    fn at(m: u32, day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, m, day, hour, 0, 0).unwrap()
    }

    fn usd(amount: Decimal) -> Money {
        Money::new(amount, Currency::USD)
    }

    /// 30.00 a month in advance, and 0.50 per GB used.
    fn plan() -> Plan {
        Plan::builder(PlanId::from_u128(10), ProductId::from_u128(11), "Fibre")
            .interval(BillingInterval::MONTHLY)
            .charge(Charge::recurring_flat([usd(dec!(30))]))
            .charge(Charge::usage(
                DATA,
                vec![CurrencyPrice {
                    currency: Currency::USD,
                    model: PriceModel::PerUnit {
                        unit_amount: dec!(0.50),
                    },
                }],
            ))
            .build(d(1, 1))
            .unwrap()
    }

    fn meters() -> Vec<Meter> {
        vec![Meter {
            id: DATA,
            code: "data_gb".into(),
            aggregation: Aggregation::Sum,
        }]
    }

    /// A customer subscribed on March 1st, with a manual charge whose text holds personal
    /// data, for the first invoice.
    async fn setup() -> BillingService<MemoryStore, FixedClock> {
        let plan = plan();
        let billing = BillingService::new(
            MemoryStore::new(),
            FixedClock::new(at(3, 1, 0)),
            BillingSettings::default(),
        );
        let product = Product {
            id: plan.product,
            name: "Fibre".into(),
        };
        billing.add_product(TENANT, product).await.unwrap();
        billing.save_plan(TENANT, plan.clone()).await.unwrap();
        let account = CustomerAccount::new(CUSTOMER, Currency::USD);
        billing.save_account(TENANT, account).await.unwrap();
        let new = NewSubscription::new(CUSTOMER, plan.id, Currency::USD, d(3, 1)).id(SUB);
        billing.subscribe(TENANT, new).await.unwrap();
        let charge = PendingCharge {
            id: PendingChargeId::from_u128(20),
            customer: CUSTOMER,
            subscription: None,
            kind: LineKind::OneOff,
            text: Some(PERSONAL.into()),
            period: None,
            quantity: Decimal::ONE,
            unit_price: usd(dec!(25)),
            price: None,
            created_on: d(3, 1),
        };
        assert!(
            billing
                .add_charge(TENANT, ChargeRequest::new(charge))
                .await
                .unwrap()
        );
        billing
    }

    fn gb(id: u128, quantity: Decimal, when: DateTime<Utc>) -> UsageEvent {
        UsageEvent {
            id: UsageEventId::from_u128(id),
            customer: CUSTOMER,
            subscription: Some(SUB),
            meter: DATA,
            quantity,
            timestamp: when,
            properties: BTreeMap::from([("user".into(), "jane@example.com".into())]),
        }
    }

    fn first_invoice(invoices: &[Invoice]) -> InvoiceId {
        invoices
            .iter()
            .find(|i| i.issue_date == d(3, 1))
            .unwrap()
            .id
    }

    #[test]
    fn a_billing_month_moves_each_counter_once_with_its_count() {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let recorder = Counting::with_histograms();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // The local recorder is per thread: the current-thread runtime polls on this one.
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let billing = setup().await;
                let usage_store = InMemoryUsageStore::new();
                let settings = UsageBillingSettings::new(chrono_tz::UTC, meters());
                let usage = UsageBillingService::new(billing.clone(), &usage_store, settings);
                // March 1st: the subscription and the manual charge on one invoice.
                let (rated, run) = usage.bill(TENANT, d(3, 1)).await.unwrap();
                assert_eq!((rated.added.len(), run.invoices), (0, 1));
                // March's 10 GB rate on April 1st, onto April's invoice.
                let events = [gb(1, dec!(6), at(3, 5, 0)), gb(2, dec!(4), at(3, 9, 0))];
                usage_store.append_events(TENANT, &events).await.unwrap();
                let (rated, run) = usage.bill(TENANT, d(4, 1)).await.unwrap();
                assert_eq!((rated.added.len(), run.invoices), (1, 1));
                // A full credit of the March invoice.
                let invoices = billing.store().invoices_of(TENANT, CUSTOMER).await.unwrap();
                let march = first_invoice(&invoices);
                billing
                    .credit(TENANT, march, CreditRequest::Full, None)
                    .await
                    .unwrap();
                // A chunk whose plans are missing: the customer fails and is skipped.
                let none: Vec<Plan> = Vec::new();
                let chunk = billing
                    .run_chunk(TENANT, d(5, 1), &none, None)
                    .await
                    .unwrap();
                assert_eq!((chunk.invoices, chunk.failures.len()), (0, 1));
                // Without the meter the usage charge names, the subscription fails to rate.
                let unmetered = UsageBillingSettings::new(chrono_tz::UTC, Vec::new());
                let blind = UsageBillingService::new(billing.clone(), &usage_store, unmetered);
                let error = blind
                    .rate_subscription(TENANT, SUB, d(5, 1))
                    .await
                    .unwrap_err();
                assert_eq!(
                    error,
                    BillingError::UnknownMeter {
                        plan: PlanId::from_u128(10),
                        meter: DATA
                    }
                );
            });
        });
        assert_eq!(
            recorder.moved(),
            [
                "dotmac_billing_bill_run_duration_seconds{}=2",
                "dotmac_billing_bill_run_failures_total{}=1",
                "dotmac_billing_bill_runs_total{outcome=completed}=2",
                "dotmac_billing_credit_notes_issued_total{}=1",
                "dotmac_billing_invoices_issued_total{source=bill_run}=2",
                "dotmac_usage_charges_added_total{}=1",
                "dotmac_usage_rating_failures_total{}=1",
            ]
        );
    }

    #[test]
    fn operations_and_store_calls_open_spans_with_counts_and_without_personal_data() {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (spans, ()) = record_spans(|| {
            runtime.block_on(async {
                let billing = setup().await;
                let usage_store = InMemoryUsageStore::new();
                let events = [gb(1, dec!(6), at(3, 5, 0))];
                usage_store.append_events(TENANT, &events).await.unwrap();
                let settings = UsageBillingSettings::new(chrono_tz::UTC, meters());
                let usage = UsageBillingService::new(billing.clone(), &usage_store, settings);
                let previewed = billing.preview(TENANT, SUB, d(3, 1)).await.unwrap();
                assert_eq!(previewed.len(), 1);
                usage.bill(TENANT, d(3, 1)).await.unwrap();
                usage.bill(TENANT, d(4, 1)).await.unwrap();
            });
        });
        let tenant = format!("tenant={TENANT}");
        let lines = |name: &str| spans.lines(name);
        let has =
            |line: &String, fields: &[&str]| fields.iter().all(|f| line.contains(&format!(" {f}")));
        assert_eq!(
            lines("dotmac.billing.subscribe"),
            [format!("Level(Info) {tenant}")]
        );
        assert_eq!(
            lines("dotmac.billing.add_charge"),
            [format!("Level(Info) {tenant}")]
        );
        let preview = lines("dotmac.billing.preview");
        assert_eq!(preview, [format!("Level(Debug) {tenant} invoices=1")]);
        // One span per run, not per invoice: two usage bills, two bill runs.
        let runs = lines("dotmac.billing.run_bill");
        assert_eq!(runs.len(), 2);
        assert!(
            runs[0].starts_with(&format!("Level(Info) {tenant}")),
            "{runs:?}"
        );
        assert!(
            has(&runs[0], &["subscriptions=1", "invoices=1", "failures=0"]),
            "{runs:?}"
        );
        let bills = lines("dotmac.usage.bill");
        assert!(
            has(&bills[1], &["charges=1", "invoices=1", "failures=0"]),
            "{bills:?}"
        );
        let rated = lines("dotmac.usage.rate_due");
        assert!(rated[1].starts_with("Level(Info) tenant="), "{rated:?}");
        assert!(
            has(&rated[1], &["subscriptions=1", "charges=1", "failures=0"]),
            "{rated:?}"
        );
        let batches = lines("dotmac.store.commit_batch");
        assert!(!batches.is_empty());
        assert!(
            batches[0].starts_with(&format!("Level(Debug) backend=\"memory\" {tenant}")),
            "{batches:?}"
        );
        // Usage is read a chunk at a time: one set-based read per rating run here (one
        // chunk), none per subscription.
        let reads = lines("dotmac.store.usage_period_aggregates");
        assert_eq!(
            reads,
            [format!("Level(Debug) backend=\"memory\" {tenant} keys=1")],
            "{reads:?}"
        );
        assert!(lines("dotmac.store.usage_events_between").is_empty());
        assert!(
            spans
                .all()
                .iter()
                .all(|span| !span.contains("Jane") && !span.contains("jane"))
        );
    }
}

/// Rating a chunk of subscriptions at once: one usage read per chunk, never per subscription,
/// with the same outcome as rating them one at a time.
#[cfg(test)]
mod chunk_tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::{DateTime, TimeZone, Utc};
    use dotmac_core::{BillingInterval, Currency, FixedClock, ProductId, UsageEventId};
    use dotmac_usage::{InMemoryUsageStore, UsageError, UsageEvent};
    use rust_decimal_macros::dec;

    use super::*;
    use crate::MemoryStore;
    use crate::PriceModel;
    use crate::catalog::{Charge, CurrencyPrice, Product};
    use crate::service::BillingSettings;
    use crate::store::{CustomerAccount, InvoiceStore};
    use crate::subscription::NewSubscription;

    const TENANT: TenantId = TenantId::from_u128(1);
    const JANE: CustomerId = CustomerId::from_u128(2);
    const OMAR: CustomerId = CustomerId::from_u128(3);
    const JANE_HOME: SubscriptionId = SubscriptionId::from_u128(10);
    const JANE_SHOP: SubscriptionId = SubscriptionId::from_u128(11);
    const OMAR_HOME: SubscriptionId = SubscriptionId::from_u128(12);
    const DATA: MeterId = MeterId::from_u128(4);
    const SEATS: MeterId = MeterId::from_u128(5);

    /// The memory store, counting its reads; its window pass only when `windows` is set, and
    /// a keyed read one aggregate short when `short` is.
    #[derive(Default)]
    struct Counting {
        store: InMemoryUsageStore,
        per_key: AtomicUsize,
        chunks: AtomicUsize,
        windows: bool,
        passes: AtomicUsize,
        short: bool,
    }

    impl UsageStore for Counting {
        async fn append_events(
            &self,
            tenant: TenantId,
            events: &[UsageEvent],
        ) -> Result<Vec<bool>, UsageError> {
            self.store.append_events(tenant, events).await
        }

        async fn events_between(
            &self,
            tenant: TenantId,
            customer: CustomerId,
            meter: MeterId,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Vec<UsageEvent>, UsageError> {
            self.per_key.fetch_add(1, Ordering::Relaxed);
            self.store
                .events_between(tenant, customer, meter, from, to)
                .await
        }

        async fn period_aggregates(
            &self,
            tenant: TenantId,
            meters: &[Meter],
            keys: &[PeriodKey],
        ) -> Result<Vec<Result<Decimal, UsageError>>, UsageError> {
            self.chunks.fetch_add(1, Ordering::Relaxed);
            let mut read = self.store.period_aggregates(tenant, meters, keys).await?;
            if self.short {
                read.pop();
            }
            Ok(read)
        }

        async fn window_totals(
            &self,
            tenant: TenantId,
            meter: &Meter,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Option<WindowTotals>, UsageError> {
            if !self.windows {
                return Ok(None);
            }
            self.passes.fetch_add(1, Ordering::Relaxed);
            self.store.window_totals(tenant, meter, from, to).await
        }
    }

    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, day).unwrap()
    }

    fn at(m: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, m, day, 12, 0, 0).unwrap()
    }

    fn per_unit(meter: MeterId, unit_amount: Decimal) -> Charge {
        Charge::usage(
            meter,
            vec![CurrencyPrice {
                currency: Currency::USD,
                model: PriceModel::PerUnit { unit_amount },
            }],
        )
    }

    /// $0.50 per GB, $2 per seat-month (a gauge of changes: +3 seats, −1 seat).
    fn plan() -> Plan {
        Plan::builder(PlanId::from_u128(20), ProductId::from_u128(21), "Business")
            .interval(BillingInterval::MONTHLY)
            .charge(per_unit(DATA, dec!(0.50)))
            .charge(per_unit(SEATS, dec!(2)))
            .build(d(1, 1))
            .unwrap()
    }

    fn meters() -> Vec<Meter> {
        vec![
            Meter {
                id: DATA,
                code: "data_gb".into(),
                aggregation: Aggregation::Sum,
            },
            Meter {
                id: SEATS,
                code: "seats".into(),
                aggregation: Aggregation::WeightedSumOfChanges,
            },
        ]
    }

    fn event(
        id: u128,
        customer: CustomerId,
        subscription: Option<SubscriptionId>,
        meter: MeterId,
        quantity: Decimal,
        when: DateTime<Utc>,
    ) -> UsageEvent {
        UsageEvent {
            id: UsageEventId::from_u128(id),
            customer,
            subscription,
            meter,
            quantity,
            timestamp: when,
            properties: BTreeMap::new(),
        }
    }

    /// Jane with two subscriptions, Omar with one, from March 1st, in chunks of `chunk`; their
    /// March and April usage stored.
    async fn setup(chunk: usize) -> (BillingService<MemoryStore, FixedClock>, Counting) {
        let plan = plan();
        let billing = BillingService::new(
            MemoryStore::new(),
            FixedClock::new(at(5, 1)),
            BillingSettings::default().with_chunk_size(chunk),
        );
        let product = Product {
            id: plan.product,
            name: "Business".into(),
        };
        billing.add_product(TENANT, product).await.unwrap();
        billing.save_plan(TENANT, plan.clone()).await.unwrap();
        for (customer, sub) in [(JANE, JANE_HOME), (JANE, JANE_SHOP), (OMAR, OMAR_HOME)] {
            let account = CustomerAccount::new(customer, Currency::USD);
            billing.save_account(TENANT, account).await.unwrap();
            let new = NewSubscription::new(customer, plan.id, Currency::USD, d(3, 1)).id(sub);
            billing.subscribe(TENANT, new).await.unwrap();
        }
        let usage = Counting::default();
        let events = [
            event(1, JANE, Some(JANE_HOME), DATA, dec!(130), at(3, 5)),
            event(2, JANE, Some(JANE_SHOP), DATA, dec!(20), at(3, 6)),
            // Naming no subscription: each of Jane's counts it.
            event(3, JANE, None, DATA, dec!(10), at(3, 7)),
            event(4, JANE, Some(JANE_HOME), DATA, dec!(7), at(4, 2)),
            event(5, OMAR, Some(OMAR_HOME), DATA, dec!(50), at(3, 8)),
            // Three seats from March 1st, one fewer from April 16th (half of April).
            event(
                6,
                OMAR,
                Some(OMAR_HOME),
                SEATS,
                dec!(3),
                Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
            ),
            event(
                7,
                OMAR,
                Some(OMAR_HOME),
                SEATS,
                dec!(-1),
                Utc.with_ymd_and_hms(2026, 4, 16, 0, 0, 0).unwrap(),
            ),
        ];
        usage.append_events(TENANT, &events).await.unwrap();
        (billing, usage)
    }

    /// (subscription, meter, period start, quantity used) of every rating, sorted.
    fn used(rated: &[RatedUsage]) -> Vec<(SubscriptionId, MeterId, NaiveDate, Decimal)> {
        let mut used: Vec<_> = rated
            .iter()
            .map(|r| (r.subscription, r.meter, r.period.start(), r.used))
            .collect();
        used.sort();
        used
    }

    /// 300 customers on one plan from March 1st, one subscription each, rated on May 1st in
    /// one chunk, over a usage store with or without its window pass.
    async fn rate_300(windows: bool) -> (UsageRunSummary, Counting) {
        let plan = plan();
        let billing = BillingService::new(
            MemoryStore::new(),
            FixedClock::new(at(5, 1)),
            BillingSettings::default().with_chunk_size(1000),
        );
        let product = Product {
            id: plan.product,
            name: "Business".into(),
        };
        billing.add_product(TENANT, product).await.unwrap();
        billing.save_plan(TENANT, plan.clone()).await.unwrap();
        let usage = Counting {
            windows,
            ..Counting::default()
        };
        let mut events = Vec::new();
        for i in 0..300u128 {
            let (customer, sub) = (
                CustomerId::from_u128(1000 + i),
                SubscriptionId::from_u128(5000 + i),
            );
            let account = CustomerAccount::new(customer, Currency::USD);
            billing.save_account(TENANT, account).await.unwrap();
            let new = NewSubscription::new(customer, plan.id, Currency::USD, d(3, 1)).id(sub);
            billing.subscribe(TENANT, new).await.unwrap();
            let gb = Decimal::from(i % 17);
            // Every third event names no subscription (it counts for the customer's only one).
            let named = if i % 3 == 0 { None } else { Some(sub) };
            events.push(event(10 * i + 1, customer, named, DATA, gb, at(3, 9)));
            events.push(event(
                10 * i + 2,
                customer,
                Some(sub),
                DATA,
                gb + dec!(0.5),
                at(4, 20),
            ));
            // Another customer's subscription named: never counted for this one.
            events.push(event(
                10 * i + 3,
                customer,
                Some(SubscriptionId::from_u128(9)),
                DATA,
                dec!(1000),
                at(3, 10),
            ));
        }
        usage.append_events(TENANT, &events).await.unwrap();
        let settings = UsageBillingSettings::new(chrono_tz::UTC, meters());
        let run = UsageBillingService::new(billing, &usage, settings)
            .rate_due(TENANT, d(5, 1))
            .await
            .unwrap();
        (run, usage)
    }

    #[tokio::test]
    async fn a_window_most_of_a_chunk_shares_is_read_with_one_grouped_pass() {
        let (passed, with_pass) = rate_300(true).await;
        let (keyed, without) = rate_300(false).await;
        // March and April of the data meter: one pass each; the gauge (seats) keyed.
        assert_eq!(with_pass.passes.load(Ordering::Relaxed), 2);
        assert_eq!(with_pass.chunks.load(Ordering::Relaxed), 1);
        assert_eq!(without.chunks.load(Ordering::Relaxed), 1);
        assert_eq!(with_pass.per_key.load(Ordering::Relaxed), 0);
        assert!(passed.failures.is_empty());
        assert_eq!(used(&passed.rated), used(&keyed.rated));
        assert_eq!(passed.added, keyed.added);
        // 300 × (March, April) × (data, seats: none used, charged at zero).
        assert_eq!(passed.added.len(), 1200);
        let march = used(&passed.rated)
            .into_iter()
            .find(|(sub, meter, start, _)| {
                *sub == SubscriptionId::from_u128(5016) && *meter == DATA && *start == d(3, 1)
            })
            .map(|(_, _, _, used)| used);
        assert_eq!(march, Some(dec!(16)));
    }

    #[tokio::test]
    async fn a_usage_store_that_reads_fewer_aggregates_than_keys_stops_the_rating() {
        let (billing, mut counting) = setup(10).await;
        counting.short = true;
        let settings = UsageBillingSettings::new(chrono_tz::UTC, meters());
        let usage = UsageBillingService::new(billing.clone(), &counting, settings);
        let error = usage.rate_due(TENANT, d(5, 1)).await.unwrap_err();
        assert_eq!(error, SHORT_READ);
        // Nothing rated as zero and nothing added: no customer has a pending charge.
        for customer in [JANE, OMAR] {
            let pending = billing
                .store()
                .pending_charges(TENANT, customer)
                .await
                .unwrap();
            assert!(pending.is_empty(), "{pending:?}");
        }
    }

    #[tokio::test]
    async fn a_chunk_is_rated_with_one_usage_read_and_as_one_subscription_at_a_time() {
        let (billing, counting) = setup(2).await;
        let settings = UsageBillingSettings::new(chrono_tz::UTC, meters());
        let usage = UsageBillingService::new(billing.clone(), &counting, settings.clone());
        let run = usage.rate_due(TENANT, d(5, 1)).await.unwrap();
        // Three subscriptions in chunks of two: two reads, none per subscription.
        assert_eq!(counting.chunks.load(Ordering::Relaxed), 2);
        assert_eq!(counting.per_key.load(Ordering::Relaxed), 0);
        assert!(run.failures.is_empty());
        let (mar, apr) = (d(3, 1), d(4, 1));
        assert_eq!(
            used(&run.rated),
            [
                (JANE_HOME, DATA, mar, dec!(140)),
                (JANE_HOME, DATA, apr, dec!(7)),
                (JANE_HOME, SEATS, mar, dec!(0)),
                (JANE_HOME, SEATS, apr, dec!(0)),
                (JANE_SHOP, DATA, mar, dec!(30)),
                (JANE_SHOP, DATA, apr, dec!(0)),
                (JANE_SHOP, SEATS, mar, dec!(0)),
                (JANE_SHOP, SEATS, apr, dec!(0)),
                (OMAR_HOME, DATA, mar, dec!(50)),
                (OMAR_HOME, DATA, apr, dec!(0)),
                (OMAR_HOME, SEATS, mar, dec!(3)),
                // The level carries over from March: 3 seats, then 2 for half the month.
                (OMAR_HOME, SEATS, apr, dec!(2.5)),
            ]
        );
        // One subscription at a time, on the same data: the same ratings and charges.
        let (single, counting) = setup(1000).await;
        let usage = UsageBillingService::new(single.clone(), &counting, settings);
        let mut one_by_one = Vec::new();
        let mut added = Vec::new();
        for sub in [JANE_HOME, JANE_SHOP, OMAR_HOME] {
            let summary = usage.rate_subscription(TENANT, sub, d(5, 1)).await.unwrap();
            one_by_one.extend(summary.rated);
            added.extend(summary.added);
        }
        assert_eq!(counting.chunks.load(Ordering::Relaxed), 3);
        assert_eq!(counting.per_key.load(Ordering::Relaxed), 0);
        assert_eq!(used(&one_by_one), used(&run.rated));
        let ids = |charges: &[PendingCharge]| {
            let mut ids: Vec<_> = charges
                .iter()
                .map(|c| (c.id, c.unit_price, c.quantity))
                .collect();
            ids.sort_by_key(|(id, _, _)| *id);
            ids
        };
        assert_eq!(ids(&added), ids(&run.added));
        for customer in [JANE, OMAR] {
            let chunked = billing
                .store()
                .pending_charges(TENANT, customer)
                .await
                .unwrap();
            let single = single
                .store()
                .pending_charges(TENANT, customer)
                .await
                .unwrap();
            assert_eq!(ids(&chunked), ids(&single));
        }
        // A re-run adds nothing.
        let again = UsageBillingService::new(
            billing.clone(),
            &counting,
            UsageBillingSettings::new(chrono_tz::UTC, meters()),
        );
        assert!(
            again
                .rate_due(TENANT, d(5, 1))
                .await
                .unwrap()
                .added
                .is_empty()
        );
    }
}
