//! Storage of usage events: tenant-scoped and idempotent by event id; and the set-based read
//! that usage rating aggregates whole chunks of subscriptions with
//! ([`UsageStore::period_aggregates`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use dotmac_core::{
    CustomerId, FastMap, FastSet, MeterId, SubscriptionId, TenantId, UsageEventId, local_midnight,
};
use rust_decimal::Decimal;

use crate::aggregator::{UsageAggregator, UsageCalendar};
use crate::error::UsageError;
use crate::event::{Aggregation, Meter, UsageEvent};

/// One customer's usage of one meter over one billing period, as usage rating asks for it in
/// a set-based read ([`UsageStore::period_aggregates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodKey {
    /// Whose usage.
    pub customer: CustomerId,
    /// With a subscription, the events that name another subscription of the customer are
    /// left out (events that name none count); without, every event of the customer counts.
    pub subscription: Option<SubscriptionId>,
    /// Which meter.
    pub meter: MeterId,
    /// The billing calendar the period belongs to.
    pub calendar: UsageCalendar,
    /// The start of the billing period (any date in it names the same period).
    pub period_start: NaiveDate,
    /// For the time-weighted meters ([`Aggregation::WeightedSum`],
    /// [`Aggregation::WeightedSumOfChanges`]), whose level carries over from earlier periods:
    /// the local date from which events set that level (usage rating: the subscription's
    /// start). Other meters read the period's events only.
    pub history_from: NaiveDate,
}

/// Whether a meter's level carries over from earlier periods.
fn is_weighted(aggregation: &Aggregation) -> bool {
    matches!(
        aggregation,
        Aggregation::WeightedSum | Aggregation::WeightedSumOfChanges
    )
}

impl PeriodKey {
    /// The instants `[from, to)` of the events the key reads under `aggregation`: the
    /// period's local midnights, or from [`PeriodKey::history_from`] (when earlier) for a
    /// time-weighted meter.
    ///
    /// # Errors
    ///
    /// [`UsageError::Core`] for dates out of range.
    pub fn read_window(
        &self,
        aggregation: &Aggregation,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), UsageError> {
        let (_, period) = self
            .calendar
            .interval
            .period_containing(self.calendar.anchor, self.period_start)?;
        let first = if is_weighted(aggregation) {
            self.history_from.min(period.start())
        } else {
            period.start()
        };
        Ok((
            local_midnight(self.calendar.zone, first)?,
            local_midnight(self.calendar.zone, period.end())?,
        ))
    }

    /// Whether `event` is one of the key's customer's events of its meter that the key's
    /// subscription counts (the window is [`PeriodKey::read_window`]'s, not checked here).
    pub fn counts(&self, event: &UsageEvent) -> bool {
        event.customer == self.customer
            && event.meter == self.meter
            && (self.subscription.is_none()
                || event.subscription.is_none()
                || event.subscription == self.subscription)
    }
}

/// The meter a key names, among `meters`.
fn meter_of<'m>(meters: &'m [Meter], key: &PeriodKey) -> Result<&'m Meter, UsageError> {
    meters
        .iter()
        .find(|m| m.id == key.meter)
        .ok_or(UsageError::UnknownMeter {
            event: UsageEventId::from_u128(0),
            meter: key.meter,
        })
}

/// The aggregate of `key` over `events`, exactly as ingestion's [`UsageAggregator`] counts
/// them: the events that [`PeriodKey::counts`] and that fall in [`PeriodKey::read_window`] are
/// ingested in (timestamp, id) order into an aggregator of `meter` over the key's calendar, and
/// the key's period is read from it. Other events are skipped, so a caller may pass more.
///
/// This is the reference every [`UsageStore::period_aggregates`] must agree with, and what a
/// store runs over the rows it reads for a key whose aggregate the database cannot compute
/// exactly.
///
/// # Errors
///
/// The aggregator's: [`UsageError::NegativeQuantity`] (the first negative event, in time
/// order, of a meter that takes no changes), [`UsageError::Core`] on overflow or dates out of
/// range.
pub fn aggregate_events<'e>(
    meter: &Meter,
    key: &PeriodKey,
    events: impl IntoIterator<Item = &'e UsageEvent>,
) -> Result<Decimal, UsageError> {
    let (from, to) = key.read_window(&meter.aggregation)?;
    let mut inside: Vec<&UsageEvent> = events
        .into_iter()
        .filter(|e| key.counts(e) && from <= e.timestamp && e.timestamp < to)
        .collect();
    inside.sort_by_key(|e| (e.timestamp, e.id));
    let mut aggregator = UsageAggregator::new(key.calendar, vec![meter.clone()]);
    aggregator.register_customer(key.customer);
    for event in inside {
        // Received "when it happened": a stored event is never refused as too far ahead.
        aggregator.ingest(event, event.timestamp)?;
    }
    aggregator.aggregate(key.customer, meter.id, key.period_start)
}

/// What a database computes for one [`PeriodKey`] in one set-based query: the columns of a
/// `GROUP BY` over the key's events, from which [`PeriodTotals::quantity`] gives the key's
/// aggregate for every meter whose aggregate is a plain SQL aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeriodTotals {
    /// The number of events.
    pub count: u64,
    /// The exact sum of their quantities; `None` when the database could not sum them
    /// exactly (or the sum is out of a decimal's range).
    pub sum: Option<Decimal>,
    /// The largest quantity; `None` when the database could not compare them exactly.
    pub max: Option<Decimal>,
    /// The quantity of the latest event (by timestamp, then event id); `None` when not
    /// computed.
    pub latest: Option<Decimal>,
    /// The number of distinct values of the meter's `unique_count` property (events without
    /// it not counted).
    pub distinct: u64,
    /// Some quantity is below zero.
    pub negative: bool,
}

impl PeriodTotals {
    /// The key's aggregate under `aggregation`, exactly as [`aggregate_events`] gives it; `None`
    /// when the totals cannot tell, and the store aggregates the key's events with
    /// [`aggregate_events`] instead: a time-weighted meter (its level depends on the order of
    /// the events), a negative quantity (the aggregator's error names the first such event),
    /// a sum or maximum the database could not compute exactly.
    pub fn quantity(&self, aggregation: &Aggregation) -> Option<Decimal> {
        if is_weighted(aggregation) || self.negative {
            return None;
        }
        if self.count == 0 {
            return Some(Decimal::ZERO);
        }
        match aggregation {
            Aggregation::Count => Some(Decimal::from(self.count)),
            Aggregation::Sum => self.sum,
            Aggregation::Max => self.max,
            Aggregation::Latest => self.latest,
            Aggregation::UniqueCount { .. } => Some(Decimal::from(self.distinct)),
            _ => None,
        }
    }
}

/// The totals of one meter's events in one window `[from, to)`, grouped by customer and by
/// the subscription each event names (or none): what one grouped pass over the window gives
/// ([`UsageStore::window_totals`]), from which the aggregate of every key over that window is
/// combined without reading its events again.
///
/// Usage rating takes this pass instead of a keyed read when many subscriptions of a run share
/// one billing period (a whole tenant billed on the 1st): one sequential pass over the period's
/// events in place of an index probe per subscription.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowTotals {
    groups: FastMap<CustomerId, Vec<(Option<SubscriptionId>, PeriodTotals)>>,
    /// Customers whose events the pass could not group by subscription: their keys are read
    /// on their own.
    unresolved: FastSet<CustomerId>,
}

impl WindowTotals {
    /// No groups yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the totals of one (customer, named subscription) group. A store adds each group
    /// once; a group added again is combined with the first (see [`WindowTotals::quantity`]).
    pub fn insert(
        &mut self,
        customer: CustomerId,
        subscription: Option<SubscriptionId>,
        totals: PeriodTotals,
    ) {
        self.groups
            .entry(customer)
            .or_default()
            .push((subscription, totals));
    }

    /// Marks a customer whose events the pass could not split by the subscription they name
    /// (a store that groups by customer only, and found several): [`WindowTotals::quantity`]
    /// tells none of its keys, which are read on their own.
    pub fn unresolved(&mut self, customer: CustomerId) {
        self.unresolved.insert(customer);
    }

    /// Adds every group and unresolved customer of `other`: the totals of a window split in
    /// parts (a store that reads one window as several consecutive slices, each on its own
    /// connection) are the totals of each part, combined as [`WindowTotals::quantity`]
    /// combines the groups of one customer.
    pub fn merge(&mut self, other: WindowTotals) {
        for (customer, groups) in other.groups {
            self.groups.entry(customer).or_default().extend(groups);
        }
        self.unresolved.extend(other.unresolved);
    }

    /// How many groups it holds.
    pub fn len(&self) -> usize {
        // Groups held in memory: their count cannot reach usize::MAX.
        self.groups
            .values()
            .fold(0usize, |n, groups| n.saturating_add(groups.len()))
    }

    /// Whether it holds no group and no unresolved customer.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.unresolved.is_empty()
    }

    /// The aggregate, under `aggregation`, of the events a key of `customer` and
    /// `subscription` counts ([`PeriodKey::counts`]) in the window, exactly as
    /// [`aggregate_events`] gives it; `None` when the groups cannot tell and the key must be
    /// read on its own: an aggregation other than [`Aggregation::Count`], [`Aggregation::Sum`]
    /// and [`Aggregation::Max`] (a latest value or a distinct count does not combine across
    /// groups), a customer marked [`WindowTotals::unresolved`], and whatever
    /// [`PeriodTotals::quantity`] cannot tell (a negative quantity, an inexact sum).
    pub fn quantity(
        &self,
        aggregation: &Aggregation,
        customer: CustomerId,
        subscription: Option<SubscriptionId>,
    ) -> Option<Decimal> {
        if !matches!(
            aggregation,
            Aggregation::Count | Aggregation::Sum | Aggregation::Max
        ) || self.unresolved.contains(&customer)
        {
            return None;
        }
        let mut combined = PeriodTotals::default();
        let counted = self
            .groups
            .get(&customer)
            .into_iter()
            .flatten()
            .filter(|(named, _)| {
                subscription.is_none() || named.is_none() || *named == subscription
            });
        for (n, (_, totals)) in counted.enumerate() {
            combined = if n == 0 {
                *totals
            } else {
                PeriodTotals {
                    count: combined.count.checked_add(totals.count)?,
                    sum: match (combined.sum, totals.sum) {
                        (Some(a), Some(b)) => a.checked_add(b),
                        _ => None,
                    },
                    max: match (combined.max, totals.max) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    },
                    latest: None,
                    distinct: 0,
                    negative: combined.negative || totals.negative,
                }
            };
        }
        combined.quantity(aggregation)
    }
}

/// Where usage events are kept. Every call is scoped to a tenant.
pub trait UsageStore: Send + Sync {
    /// Stores the events whose ids are new for the tenant and returns, per event, whether it
    /// was new (a replayed event is stored once).
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> impl Future<Output = Result<Vec<bool>, UsageError>> + Send;

    /// The events of one customer and meter with `from <= timestamp < to`, in timestamp order.
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<UsageEvent>, UsageError>> + Send;

    /// The aggregate of each of `keys` (one per key, in order), each exactly what
    /// [`aggregate_events`] gives over the key's events: the set-based read that rates a
    /// chunk of subscriptions at once. `meters` defines the meters the keys name; a key whose
    /// meter is not among them gets [`UsageError::UnknownMeter`] (with a nil event id).
    ///
    /// The outer error is a storage failure (nothing is returned); an inner one is the
    /// aggregator's error for that key's events alone (a negative quantity, an overflow), and
    /// the other keys are still aggregated.
    ///
    /// The default reads each key's events with [`UsageStore::events_between`] (one read per
    /// key); stores override it to read a whole chunk with one query.
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn period_aggregates(
        &self,
        tenant: TenantId,
        meters: &[Meter],
        keys: &[PeriodKey],
    ) -> impl Future<Output = Result<Vec<Result<Decimal, UsageError>>, UsageError>> + Send {
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(aggregate_one(self, tenant, meters, key).await?);
            }
            Ok(out)
        }
    }

    /// One grouped pass over `meter`'s events with `from <= timestamp < to`: their totals per
    /// customer and named subscription ([`WindowTotals`]), or `None` when the store has no
    /// such pass (the default) or could not total the window exactly (an integer overflow),
    /// and the caller reads its keys with [`UsageStore::period_aggregates`] instead.
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn window_totals(
        &self,
        tenant: TenantId,
        meter: &Meter,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<WindowTotals>, UsageError>> + Send {
        let _ = (tenant, meter, from, to);
        async { Ok(None) }
    }
}

/// One key's aggregate through [`UsageStore::events_between`]: the per-key path.
async fn aggregate_one<S: UsageStore + ?Sized>(
    store: &S,
    tenant: TenantId,
    meters: &[Meter],
    key: &PeriodKey,
) -> Result<Result<Decimal, UsageError>, UsageError> {
    let meter = match meter_of(meters, key) {
        Ok(meter) => meter,
        Err(e) => return Ok(Err(e)),
    };
    let (from, to) = match key.read_window(&meter.aggregation) {
        Ok(window) => window,
        Err(e) => return Ok(Err(e)),
    };
    let events = store
        .events_between(tenant, key.customer, key.meter, from, to)
        .await?;
    Ok(aggregate_events(meter, key, &events))
}

/// Per key, the aggregate through [`UsageStore::events_between`] (one read per key): what
/// [`UsageStore::period_aggregates`] must agree with, for the behaviour suite.
#[cfg(feature = "testkit")]
pub(crate) async fn aggregates_per_key<S: UsageStore + ?Sized>(
    store: &S,
    tenant: TenantId,
    meters: &[Meter],
    keys: &[PeriodKey],
) -> Result<Vec<Result<Decimal, UsageError>>, UsageError> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        out.push(aggregate_one(store, tenant, meters, key).await?);
    }
    Ok(out)
}

/// A key's meter and read window `[from, to)`, or the error that is its aggregate (see
/// [`key_windows`]).
pub type KeyWindow<'m> = Result<(&'m Meter, DateTime<Utc>, DateTime<Utc>), UsageError>;

/// For a store implementing [`UsageStore::period_aggregates`]: per key, its meter and
/// [`PeriodKey::read_window`], or the error that is the key's aggregate (an unknown meter, a
/// date out of range). The store queries the keys that have a window.
pub fn key_windows<'m>(meters: &'m [Meter], keys: &[PeriodKey]) -> Vec<KeyWindow<'m>> {
    keys.iter()
        .map(|key| {
            let meter = meter_of(meters, key)?;
            let (from, to) = key.read_window(&meter.aggregation)?;
            Ok((meter, from, to))
        })
        .collect()
}

/// A shared or borrowed store is a store: services can own an `Arc` of one store, or borrow it.
impl<T: UsageStore + ?Sized> UsageStore for &T {
    fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> impl Future<Output = Result<Vec<bool>, UsageError>> + Send {
        (**self).append_events(tenant, events)
    }

    fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<UsageEvent>, UsageError>> + Send {
        (**self).events_between(tenant, customer, meter, from, to)
    }

    fn period_aggregates(
        &self,
        tenant: TenantId,
        meters: &[Meter],
        keys: &[PeriodKey],
    ) -> impl Future<Output = Result<Vec<Result<Decimal, UsageError>>, UsageError>> + Send {
        (**self).period_aggregates(tenant, meters, keys)
    }

    fn window_totals(
        &self,
        tenant: TenantId,
        meter: &Meter,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<WindowTotals>, UsageError>> + Send {
        (**self).window_totals(tenant, meter, from, to)
    }
}

impl<T: UsageStore + ?Sized> UsageStore for std::sync::Arc<T> {
    fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> impl Future<Output = Result<Vec<bool>, UsageError>> + Send {
        (**self).append_events(tenant, events)
    }

    fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<UsageEvent>, UsageError>> + Send {
        (**self).events_between(tenant, customer, meter, from, to)
    }

    fn period_aggregates(
        &self,
        tenant: TenantId,
        meters: &[Meter],
        keys: &[PeriodKey],
    ) -> impl Future<Output = Result<Vec<Result<Decimal, UsageError>>, UsageError>> + Send {
        (**self).period_aggregates(tenant, meters, keys)
    }

    fn window_totals(
        &self,
        tenant: TenantId,
        meter: &Meter,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<WindowTotals>, UsageError>> + Send {
        (**self).window_totals(tenant, meter, from, to)
    }
}

#[derive(Debug, Default)]
struct TenantUsage {
    ids: FastSet<UsageEventId>,
    events: Vec<UsageEvent>,
}

/// A [`UsageStore`] in memory, for tests and examples.
#[derive(Debug, Default)]
pub struct InMemoryUsageStore {
    tenants: Mutex<HashMap<TenantId, TenantUsage>>,
}

impl InMemoryUsageStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl UsageStore for InMemoryUsageStore {
    #[tracing::instrument(name = "dotmac.store.append_usage", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, events = events.len()))]
    async fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> Result<Vec<bool>, UsageError> {
        // A panic while holding the lock cannot leave a half-written event: keep going.
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let usage = tenants.entry(tenant).or_default();
        Ok(events
            .iter()
            .map(|event| {
                let new = usage.ids.insert(event.id);
                if new {
                    usage.events.push(event.clone());
                }
                new
            })
            .collect())
    }

    #[tracing::instrument(name = "dotmac.store.usage_window_totals", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn window_totals(
        &self,
        tenant: TenantId,
        meter: &Meter,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<WindowTotals>, UsageError> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut groups: FastMap<(CustomerId, Option<SubscriptionId>), PeriodTotals> =
            FastMap::default();
        let events = tenants.get(&tenant).map(|u| u.events.as_slice());
        for e in events.unwrap_or_default() {
            if e.meter != meter.id || e.timestamp < from || e.timestamp >= to {
                continue;
            }
            let totals = groups.entry((e.customer, e.subscription)).or_default();
            // As a database's GROUP BY: a sum out of range is inexact (`None`), not an error.
            let first = totals.count == 0;
            totals.count = totals.count.saturating_add(1);
            totals.sum = if first {
                Some(e.quantity)
            } else {
                totals.sum.and_then(|s| s.checked_add(e.quantity))
            };
            totals.max = Some(totals.max.map_or(e.quantity, |m| m.max(e.quantity)));
            totals.negative |= e.quantity.is_sign_negative() && !e.quantity.is_zero();
        }
        let mut out = WindowTotals::new();
        for ((customer, subscription), totals) in groups {
            out.insert(customer, subscription, totals);
        }
        Ok(Some(out))
    }

    #[tracing::instrument(name = "dotmac.store.usage_events_between", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageEvent>, UsageError> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<UsageEvent> = tenants
            .get(&tenant)
            .map(|usage| {
                usage
                    .events
                    .iter()
                    .filter(|e| {
                        e.customer == customer
                            && e.meter == meter
                            && e.timestamp >= from
                            && e.timestamp < to
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by_key(|e| (e.timestamp, e.id));
        Ok(found)
    }

    /// One pass over the tenant's events: each is filed with the keys of its customer and
    /// meter whose window and subscription it falls in, then each key's events are aggregated.
    #[tracing::instrument(name = "dotmac.store.usage_period_aggregates", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, keys = keys.len()))]
    async fn period_aggregates(
        &self,
        tenant: TenantId,
        meters: &[Meter],
        keys: &[PeriodKey],
    ) -> Result<Vec<Result<Decimal, UsageError>>, UsageError> {
        let windows = key_windows(meters, keys);
        let mut by_series: FastMap<(CustomerId, MeterId), Vec<usize>> = FastMap::default();
        for (index, (key, window)) in keys.iter().zip(&windows).enumerate() {
            if window.is_ok() {
                by_series
                    .entry((key.customer, key.meter))
                    .or_default()
                    .push(index);
            }
        }
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut filed: Vec<Vec<&UsageEvent>> = vec![Vec::new(); keys.len()];
        for event in tenants.get(&tenant).map_or(&[][..], |u| &u.events[..]) {
            let Some(indices) = by_series.get(&(event.customer, event.meter)) else {
                continue;
            };
            for &index in indices {
                if let (Some(Ok((_, from, to))), Some(key), Some(events)) =
                    (windows.get(index), keys.get(index), filed.get_mut(index))
                    && *from <= event.timestamp
                    && event.timestamp < *to
                    && key.counts(event)
                {
                    events.push(event);
                }
            }
        }
        Ok(keys
            .iter()
            .zip(windows)
            .zip(filed)
            .map(|((key, window), events)| {
                let (meter, _, _) = window?;
                aggregate_events(meter, key, events)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use rust_decimal::Decimal;

    use super::*;
    use dotmac_core::span_recorder::record_spans;

    fn totals(count: u64, sum: Option<Decimal>, max: i64) -> PeriodTotals {
        PeriodTotals {
            count,
            sum,
            max: Some(Decimal::from(max)),
            latest: None,
            distinct: 0,
            negative: false,
        }
    }

    #[test]
    fn a_window_combines_each_keys_groups_as_the_key_counts_events() {
        let (jane, omar, lee) = (
            CustomerId::from_u128(1),
            CustomerId::from_u128(2),
            CustomerId::from_u128(3),
        );
        let (home, shop, other) = (
            SubscriptionId::from_u128(10),
            SubscriptionId::from_u128(11),
            SubscriptionId::from_u128(12),
        );
        let mut window = WindowTotals::new();
        window.insert(jane, Some(home), totals(2, Some(Decimal::from(10)), 7));
        window.insert(jane, None, totals(1, Some(Decimal::from(5)), 5));
        window.insert(jane, Some(shop), totals(1, Some(Decimal::from(100)), 100));
        window.insert(omar, Some(home), totals(1, None, 3));
        window.unresolved(lee);
        assert_eq!(window.len(), 4);
        let q = |aggregation: &Aggregation, customer, subscription| {
            window.quantity(aggregation, customer, subscription)
        };
        // Home counts its own events and those naming none; never the shop's.
        assert_eq!(
            q(&Aggregation::Sum, jane, Some(home)),
            Some(Decimal::from(15))
        );
        assert_eq!(
            q(&Aggregation::Count, jane, Some(home)),
            Some(Decimal::from(3))
        );
        assert_eq!(
            q(&Aggregation::Max, jane, Some(home)),
            Some(Decimal::from(7))
        );
        // A key without a subscription counts all of the customer's events.
        assert_eq!(q(&Aggregation::Sum, jane, None), Some(Decimal::from(115)));
        // A subscription with no events of its own gets those naming none.
        assert_eq!(
            q(&Aggregation::Sum, jane, Some(other)),
            Some(Decimal::from(5))
        );
        // No events at all: zero.
        assert_eq!(
            q(&Aggregation::Sum, CustomerId::from_u128(9), None),
            Some(Decimal::ZERO)
        );
        // What the groups cannot tell is read by key: an inexact sum (its count still
        // combines), a latest value or distinct count, an unresolved customer.
        assert_eq!(q(&Aggregation::Sum, omar, Some(home)), None);
        assert_eq!(q(&Aggregation::Count, omar, Some(home)), Some(Decimal::ONE));
        assert_eq!(q(&Aggregation::Latest, jane, Some(home)), None);
        assert_eq!(
            q(
                &Aggregation::UniqueCount {
                    property: "ip".into()
                },
                jane,
                None
            ),
            None
        );
        assert_eq!(q(&Aggregation::Count, lee, None), None);
        assert_eq!(q(&Aggregation::WeightedSum, jane, Some(home)), None);
    }

    #[test]
    fn a_window_whose_sum_overflows_or_goes_negative_tells_nothing_for_it() {
        let jane = CustomerId::from_u128(1);
        let mut window = WindowTotals::new();
        window.insert(jane, None, totals(1, Some(Decimal::MAX), 1));
        window.insert(
            jane,
            Some(SubscriptionId::from_u128(10)),
            totals(1, Some(Decimal::MAX), 1),
        );
        assert_eq!(window.quantity(&Aggregation::Sum, jane, None), None);
        assert_eq!(
            window.quantity(&Aggregation::Count, jane, None),
            Some(Decimal::from(2))
        );
        let mut negative = WindowTotals::new();
        negative.insert(
            jane,
            None,
            PeriodTotals {
                negative: true,
                ..totals(1, Some(Decimal::from(-1)), -1)
            },
        );
        assert_eq!(negative.quantity(&Aggregation::Sum, jane, None), None);
    }

    #[test]
    fn a_window_read_in_slices_and_merged_tells_what_the_whole_window_tells() {
        let (jane, omar, lee) = (
            CustomerId::from_u128(1),
            CustomerId::from_u128(2),
            CustomerId::from_u128(3),
        );
        let (home, shop) = (SubscriptionId::from_u128(10), SubscriptionId::from_u128(11));
        // The first half of the window: Jane's home and shop, Omar's events naming none.
        let mut first = WindowTotals::new();
        first.insert(jane, Some(home), totals(2, Some(Decimal::from(10)), 7));
        first.insert(jane, Some(shop), totals(1, Some(Decimal::from(100)), 100));
        first.insert(omar, None, totals(1, Some(Decimal::from(4)), 4));
        // The second: Jane's home again, Omar's home, and Lee whom the pass could not split.
        let mut second = WindowTotals::new();
        second.insert(jane, Some(home), totals(1, Some(Decimal::from(9)), 9));
        second.insert(omar, Some(home), totals(2, Some(Decimal::from(6)), 5));
        second.unresolved(lee);
        let mut merged = first;
        merged.merge(second);
        assert_eq!(merged.len(), 5);
        let q = |aggregation: &Aggregation, customer, subscription| {
            merged.quantity(aggregation, customer, subscription)
        };
        assert_eq!(
            q(&Aggregation::Sum, jane, Some(home)),
            Some(Decimal::from(19))
        );
        assert_eq!(
            q(&Aggregation::Count, jane, Some(home)),
            Some(Decimal::from(3))
        );
        assert_eq!(
            q(&Aggregation::Max, jane, Some(home)),
            Some(Decimal::from(9))
        );
        assert_eq!(q(&Aggregation::Sum, jane, None), Some(Decimal::from(119)));
        // Events naming no subscription in one slice count towards the subscription the
        // other slice names, as in one pass.
        assert_eq!(
            q(&Aggregation::Sum, omar, Some(home)),
            Some(Decimal::from(10))
        );
        assert_eq!(q(&Aggregation::Sum, lee, None), None);
    }

    #[test]
    fn the_memory_store_opens_debug_store_spans_without_event_properties() {
        let tenant = TenantId::new();
        let (customer, meter) = (CustomerId::from_u128(1), MeterId::from_u128(1));
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
        let event = |id| UsageEvent {
            id: UsageEventId::from_u128(id),
            customer,
            subscription: None,
            meter,
            quantity: Decimal::ONE,
            timestamp: at,
            properties: BTreeMap::from([("user".into(), "jane@example.com".into())]),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (spans, found) = record_spans(|| {
            runtime.block_on(async {
                let store = InMemoryUsageStore::new();
                let new = store
                    .append_events(tenant, &[event(1), event(2), event(1)])
                    .await
                    .unwrap();
                assert_eq!(new, [true, true, false]);
                store
                    .events_between(tenant, customer, meter, at, at + chrono::Duration::hours(1))
                    .await
                    .unwrap()
            })
        });
        assert_eq!(found.len(), 2);
        assert_eq!(
            spans.line("dotmac.store.append_usage").unwrap(),
            format!("Level(Debug) backend=\"memory\" tenant={tenant} events=3")
        );
        assert_eq!(
            spans.line("dotmac.store.usage_events_between").unwrap(),
            format!("Level(Debug) backend=\"memory\" tenant={tenant}")
        );
        assert!(spans.all().iter().all(|s| !s.contains("jane")));
    }
}
