//! The in-memory ingest and aggregation engine, and the usage vocabulary it works on.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use dotmac_core::{
    BillingInterval, CustomerId, FastMap, FastSet, MeterId, Money, UsageEventId, local_midnight,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::UsageError;
use crate::event::{Aggregation, Meter, UsageEvent};

/// How instants map to billing periods: an interval from an anchor, in a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCalendar {
    /// The billing interval.
    pub interval: BillingInterval,
    /// The anchor date periods are computed from.
    pub anchor: NaiveDate,
    /// The zone whose local dates bound the periods.
    pub zone: Tz,
}

/// One billing period as instants, with its index from the anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    index: i64,
    start_date: NaiveDate,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// The local midnight starting `date` in `zone`, as an instant: where ingestion's periods
/// begin, and so where rating's must too.
impl UsageCalendar {
    fn window_of(&self, at: DateTime<Utc>) -> Result<Window, UsageError> {
        let local_date = at.with_timezone(&self.zone).date_naive();
        let (index, period) = self.interval.period_containing(self.anchor, local_date)?;
        Ok(Window {
            index,
            start_date: period.start(),
            start: local_midnight(self.zone, period.start())?,
            end: local_midnight(self.zone, period.end())?,
        })
    }

    fn window(&self, index: i64) -> Result<Window, UsageError> {
        let period = self.interval.period(self.anchor, index)?;
        Ok(Window {
            index,
            start_date: period.start(),
            start: local_midnight(self.zone, period.start())?,
            end: local_midnight(self.zone, period.end())?,
        })
    }

    /// The start date of the billing period holding `at`.
    ///
    /// # Errors
    ///
    /// [`UsageError::Core`] for dates out of range.
    pub fn period_start_of(&self, at: DateTime<Utc>) -> Result<NaiveDate, UsageError> {
        Ok(self.window_of(at)?.start_date)
    }
}

/// What happened to one ingested event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Ingested {
    /// Counted in an open period.
    Counted,
    /// Seen before: not counted again.
    Duplicate,
    /// Counted in a period already closed (invoiced): it will come out of
    /// [`UsageAggregator::late_adjustments`].
    Late {
        /// The start of the closed period.
        period_start: NaiveDate,
    },
}

/// An event refused in a batch.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Rejected {
    /// Its position in the batch.
    pub index: usize,
    /// Its id.
    pub event: UsageEventId,
    /// Why.
    pub error: UsageError,
}

/// The outcome of [`UsageAggregator::ingest_batch`]: the good events are counted even when
/// others are refused.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct BatchReport {
    /// Events counted in open periods.
    pub counted: usize,
    /// Events counted in closed periods (late).
    pub late: usize,
    /// Replays, not counted again.
    pub duplicates: usize,
    /// Refused events.
    pub rejected: Vec<Rejected>,
}

/// The per-event state of one customer × meter × period, kept in a dense slab per period so
/// that counting an event is an index, not a hash lookup. Each meter keeps only what its
/// aggregation reports, so that an entry is one cache line and counting an event touches
/// nothing else.
#[derive(Debug, Clone, Copy)]
struct Hot {
    acc: Acc,
    count: u64,
    /// The batch chunk that last saved this entry before changing it (see `ingest_batch`).
    saved_in: u64,
    /// The period was invoiced: events now are late.
    closed: bool,
}

/// What an entry accumulates besides its count, by the meter's aggregation (set by the first
/// event; `Nothing` until then and for count-only meters).
#[derive(Debug, Clone, Copy)]
enum Acc {
    Nothing,
    /// Whole quantities (bytes, counts: the common case) are summed as integers, the rest as
    /// decimals; the sum is `whole + decimal`, still exact. Decimal addition costs more than
    /// the rest of an ingest.
    Sum {
        whole: i128,
        decimal: Decimal,
        /// The decimal sum left Decimal's range: the sum is reported as an overflow.
        overflowed: bool,
    },
    Max(Decimal),
    /// The quantity of the latest event, ties broken by event id.
    Latest {
        value: Decimal,
        at: DateTime<Utc>,
        id: UsageEventId,
    },
}

const EMPTY_HOT: Hot = Hot {
    acc: Acc::Nothing,
    count: 0,
    saved_in: 0,
    closed: false,
};

/// What counting an event does for a meter, decided once per meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HotKind {
    Count,
    Sum,
    Max,
    Latest,
}

impl HotKind {
    fn of(aggregation: &Aggregation) -> HotKind {
        match aggregation {
            Aggregation::Sum => HotKind::Sum,
            Aggregation::Max => HotKind::Max,
            Aggregation::Latest => HotKind::Latest,
            // Distinct values and gauge readings live in buckets; the slab only counts.
            Aggregation::Count
            | Aggregation::UniqueCount { .. }
            | Aggregation::WeightedSum
            | Aggregation::WeightedSumOfChanges => HotKind::Count,
        }
    }
}

impl Acc {
    /// Adds one event's quantity.
    #[inline(always)]
    fn add(&mut self, kind: HotKind, quantity: Decimal, at: DateTime<Utc>, id: UsageEventId) {
        match (kind, self) {
            (HotKind::Count, _) => {}
            (
                HotKind::Sum,
                Acc::Sum {
                    whole,
                    decimal,
                    overflowed,
                },
            ) => {
                let added = (quantity.scale() == 0)
                    .then(|| whole.checked_add(quantity.mantissa()))
                    .flatten();
                match added {
                    Some(sum) => *whole = sum,
                    None => match decimal.checked_add(quantity) {
                        Some(sum) => *decimal = sum,
                        None => *overflowed = true,
                    },
                }
            }
            (HotKind::Max, Acc::Max(max)) => {
                let above = if quantity.scale() == 0 && max.scale() == 0 {
                    quantity.mantissa() > max.mantissa()
                } else {
                    quantity > *max
                };
                if above {
                    *max = quantity;
                }
            }
            (
                HotKind::Latest,
                Acc::Latest {
                    value,
                    at: latest_at,
                    id: latest_id,
                },
            ) => {
                if (at, id) > (*latest_at, *latest_id) {
                    (*value, *latest_at, *latest_id) = (quantity, at, id);
                }
            }
            // The first event of the entry (or a kind that changed, which meters cannot).
            (kind, acc) => *acc = Acc::first(kind, quantity, at, id),
        }
    }

    fn first(kind: HotKind, quantity: Decimal, at: DateTime<Utc>, id: UsageEventId) -> Acc {
        match kind {
            HotKind::Count => Acc::Nothing,
            HotKind::Sum => {
                let mut acc = Acc::Sum {
                    whole: 0,
                    decimal: Decimal::ZERO,
                    overflowed: false,
                };
                acc.add(kind, quantity, at, id);
                acc
            }
            HotKind::Max => Acc::Max(quantity),
            HotKind::Latest => Acc::Latest {
                value: quantity,
                at,
                id,
            },
        }
    }
}

#[derive(Debug, Clone)]
struct PeriodSlab {
    /// The period's index from the calendar's anchor.
    period: i64,
    /// Indexed by customer index × meters + meter index.
    hot: Vec<Hot>,
}

/// How many events of a batch go through the three passes of
/// [`UsageAggregator::ingest_batch`] together: enough that the idempotency check of a chunk
/// visits each shard of the id set many times while it is in cache, few enough that the
/// scratch space (about 40 bytes an event) is small and reused. At most `u32::MAX`.
const CHUNK: usize = 1 << 18;
/// Events whose customer lookups are issued together (see `ingest_batch`).
const GROUP: usize = 16;

/// Where an event that passed the checks is counted.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    /// The period's slab in `periods`.
    slot: u32,
    customer: u32,
    meter: u32,
    /// The start of the period.
    period_start: NaiveDate,
}

/// What only some meters need (distinct values, gauge readings) and the billed snapshot.
#[derive(Debug, Clone, Default)]
struct Bucket {
    unique: Option<FastSet<String>>,
    readings: Vec<(DateTime<Utc>, UsageEventId, Decimal)>,
    /// The quantity billed when the period was closed; `None` while open.
    billed: Option<Decimal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BucketKey {
    customer: u32,
    meter: u32,
    period: i64,
}

/// An adjustment for usage that arrived after its period was invoiced: add `amount` to the
/// customer's next invoice (it may be negative only if a pricing model is not monotonic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAdjustment {
    /// The customer.
    pub customer: CustomerId,
    /// The meter.
    pub meter: MeterId,
    /// The start of the period the late usage belongs to.
    pub period_start: NaiveDate,
    /// The quantity billed before.
    pub billed_quantity: Decimal,
    /// The quantity now.
    pub actual_quantity: Decimal,
    /// price(actual) − price(billed).
    pub amount: Money,
}

/// The in-memory ingest + aggregation engine for one tenant.
///
/// ```
/// use chrono::{NaiveDate, TimeZone, Utc};
/// use dotmac_usage::*;
/// use dotmac_core::{BillingInterval, CustomerId};
/// use rust_decimal::Decimal;
///
/// let meter = Meter { id: MeterId::from_u128(1), code: "gb".into(), aggregation: Aggregation::Sum };
/// let calendar = UsageCalendar {
///     interval: BillingInterval::MONTHLY,
///     anchor: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
///     zone: chrono_tz::UTC,
/// };
/// let mut usage = UsageAggregator::new(calendar, vec![meter]);
/// let customer = CustomerId::from_u128(7);
/// usage.register_customer(customer);
/// let event = UsageEvent {
///     id: UsageEventId::from_u128(1),
///     customer,
///     subscription: None,
///     meter: MeterId::from_u128(1),
///     quantity: Decimal::new(25, 1),
///     timestamp: Utc.with_ymd_and_hms(2026, 3, 5, 12, 0, 0).unwrap(),
///     properties: Default::default(),
/// };
/// let now = Utc.with_ymd_and_hms(2026, 3, 5, 12, 0, 1).unwrap();
/// assert_eq!(usage.ingest(&event, now)?, Ingested::Counted);
/// assert_eq!(usage.ingest(&event, now)?, Ingested::Duplicate); // replayed: counted once
/// let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
/// assert_eq!(usage.aggregate(customer, MeterId::from_u128(1), march)?, Decimal::new(25, 1));
/// # Ok::<(), dotmac_usage::UsageError>(())
/// ```
#[derive(Debug, Clone)]
pub struct UsageAggregator {
    calendar: UsageCalendar,
    meters: Vec<Meter>,
    /// What each meter's slab entries accumulate, by meter index.
    kinds: Vec<HotKind>,
    max_future_skew: Duration,
    /// Keyed by the UUID as a `u128`: hashing one integer is cheaper than hashing 16 bytes.
    customers: FastMap<u128, u32>,
    customer_ids: Vec<CustomerId>,
    seen: crate::idset::IdSet,
    buckets: FastMap<BucketKey, Bucket>,
    periods: Vec<PeriodSlab>,
    period_slots: FastMap<i64, usize>,
    /// The window of the last event and its slab: most events of a batch fall in one period.
    cached: Option<(Window, usize)>,
    /// Numbers the chunks of `ingest_batch`, for `Hot::saved_in`.
    chunk_number: u64,
}

/// Counts a batch's outcomes in `dotmac_usage_events_ingested_total`, once per batch and
/// outcome, never per event (see docs/observability.md). Only [`UsageAggregator::ingest_batch`]
/// counts: [`UsageAggregator::ingest`] is also what usage rating uses to re-read stored
/// events, which were counted when they arrived.
fn count_ingested(report: &BatchReport) {
    // Literal labels: the metrics macros make a static key, so nothing is allocated.
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    if report.counted > 0 {
        metrics::counter!("dotmac_usage_events_ingested_total", "outcome" => "counted")
            .increment(as_u64(report.counted));
    }
    if report.duplicates > 0 {
        metrics::counter!("dotmac_usage_events_ingested_total", "outcome" => "duplicate")
            .increment(as_u64(report.duplicates));
    }
    if report.late > 0 {
        metrics::counter!("dotmac_usage_events_ingested_total", "outcome" => "late")
            .increment(as_u64(report.late));
    }
    if !report.rejected.is_empty() {
        metrics::counter!("dotmac_usage_events_ingested_total", "outcome" => "rejected")
            .increment(as_u64(report.rejected.len()));
    }
}

impl UsageAggregator {
    /// An aggregator for these meters, accepting events up to 5 minutes ahead of the ingest
    /// time (clock skew).
    pub fn new(calendar: UsageCalendar, meters: Vec<Meter>) -> Self {
        UsageAggregator {
            calendar,
            kinds: meters.iter().map(|m| HotKind::of(&m.aggregation)).collect(),
            meters,
            max_future_skew: Duration::minutes(5),
            customers: FastMap::default(),
            customer_ids: Vec::new(),
            seen: crate::idset::IdSet::new(),
            buckets: FastMap::default(),
            periods: Vec::new(),
            period_slots: FastMap::default(),
            cached: None,
            chunk_number: 0,
        }
    }

    /// How far ahead of the ingest time an event may be stamped.
    pub fn with_max_future_skew(mut self, skew: Duration) -> Self {
        self.max_future_skew = skew;
        self
    }

    /// Reserves room for `events` more event ids (avoids rehashing during a large batch).
    pub fn reserve(&mut self, events: usize) {
        self.seen.reserve(events);
    }

    /// Makes a customer known; events for unknown customers are refused.
    pub fn register_customer(&mut self, customer: CustomerId) {
        let key = customer.as_uuid().as_u128();
        if !self.customers.contains_key(&key) {
            let index = u32::try_from(self.customer_ids.len()).unwrap_or(u32::MAX);
            self.customers.insert(key, index);
            self.customer_ids.push(customer);
        }
    }

    /// The meters.
    pub fn meters(&self) -> &[Meter] {
        &self.meters
    }

    fn meter_index(&self, meter: MeterId) -> Option<usize> {
        self.meters.iter().position(|m| m.id == meter)
    }

    fn slot_for(&mut self, period: i64) -> usize {
        if let Some(slot) = self.period_slots.get(&period) {
            return *slot;
        }
        let slot = self.periods.len();
        self.periods.push(PeriodSlab {
            period,
            hot: Vec::new(),
        });
        self.period_slots.insert(period, slot);
        slot
    }

    fn window_for(&mut self, at: DateTime<Utc>) -> Result<(Window, usize), UsageError> {
        if let Some((w, slot)) = self.cached
            && w.start <= at
            && at < w.end
        {
            return Ok((w, slot));
        }
        let window = self.calendar.window_of(at)?;
        let slot = self.slot_for(window.index);
        self.cached = Some((window, slot));
        Ok((window, slot))
    }

    /// The slab index of a customer's meter. Customers and meters are indices of tables held
    /// in memory, so the product fits; saturating keeps an impossible one out of range.
    fn hot_index(&self, customer: u32, meter: usize) -> usize {
        (customer as usize)
            .saturating_mul(self.meters.len())
            .saturating_add(meter)
    }

    fn hot_mut(&mut self, slot: usize, customer: u32, meter: usize) -> Option<&mut Hot> {
        let index = self.hot_index(customer, meter);
        let wanted = self.customer_ids.len().saturating_mul(self.meters.len());
        let slab = self.periods.get_mut(slot)?;
        if index >= slab.hot.len() {
            slab.hot
                .resize(wanted.max(index.checked_add(1)?), EMPTY_HOT);
        }
        slab.hot.get_mut(index)
    }

    fn hot(&self, key: BucketKey) -> Option<&Hot> {
        let slot = *self.period_slots.get(&key.period)?;
        let index = self.hot_index(key.customer, key.meter as usize);
        self.periods.get(slot)?.hot.get(index)
    }

    /// The latest event time accepted for a delivery at `received_at`: the allowed skew later,
    /// or the last representable instant.
    fn latest_accepted(&self, received_at: DateTime<Utc>) -> DateTime<Utc> {
        received_at
            .checked_add_signed(self.max_future_skew)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Counts one event, unless it was seen before.
    ///
    /// # Errors
    ///
    /// [`UsageError::NegativeQuantity`], [`UsageError::TimestampInFuture`] (later than
    /// `received_at` plus the allowed skew), [`UsageError::UnknownMeter`],
    /// [`UsageError::UnknownCustomer`]. A refused event changes nothing, and its id stays
    /// free for a corrected resend.
    pub fn ingest(
        &mut self,
        event: &UsageEvent,
        received_at: DateTime<Utc>,
    ) -> Result<Ingested, UsageError> {
        let latest = self.latest_accepted(received_at);
        let customer = self.customer_index(event.customer);
        self.ingest_until(event, customer, latest)
    }

    fn customer_index(&self, customer: CustomerId) -> Option<u32> {
        self.customers.get(&customer.as_uuid().as_u128()).copied()
    }

    fn ingest_until(
        &mut self,
        event: &UsageEvent,
        customer: Option<u32>,
        latest: DateTime<Utc>,
    ) -> Result<Ingested, UsageError> {
        let accepted = self.accept(event, customer, latest)?;
        if !self.seen.insert(event.id.as_uuid().as_u128()) {
            return Ok(Ingested::Duplicate);
        }
        Ok(if self.count(event, accepted) {
            Ingested::Late {
                period_start: accepted.period_start,
            }
        } else {
            Ingested::Counted
        })
    }

    /// The checks of an ingest (everything but idempotency): where the event counts, or why
    /// it is refused. Changes nothing but the period cache.
    #[inline(always)]
    fn accept(
        &mut self,
        event: &UsageEvent,
        customer: Option<u32>,
        latest: DateTime<Utc>,
    ) -> Result<Accepted, UsageError> {
        if event.quantity.is_sign_negative()
            && !event.quantity.is_zero()
            && !self.takes_changes(event.meter)
        {
            return Err(UsageError::NegativeQuantity {
                event: event.id,
                quantity: event.quantity,
            });
        }
        if event.timestamp > latest {
            return Err(UsageError::TimestampInFuture {
                event: event.id,
                timestamp: event.timestamp,
                latest,
            });
        }
        // `let … else` rather than `ok_or`: building the error on the hot path costs time.
        let Some(meter) = self.meter_index(event.meter) else {
            return Err(UsageError::UnknownMeter {
                event: event.id,
                meter: event.meter,
            });
        };
        let Some(customer) = customer else {
            return Err(UsageError::UnknownCustomer {
                event: event.id,
                customer: event.customer,
            });
        };
        let (window, slot) = self.window_for(event.timestamp)?;
        // Each period needs a slab of its own: four billion of them do not fit in memory.
        let slot = u32::try_from(slot).map_err(|_| dotmac_core::CoreError::Overflow {
            operation: "usage periods",
        })?;
        Ok(Accepted {
            slot,
            customer,
            meter: meter as u32,
            period_start: window.start_date,
        })
    }

    /// Counts an accepted, new event; true when its period is closed (the event is late).
    fn count(&mut self, event: &UsageEvent, accepted: Accepted) -> bool {
        let closed = self.count_hot(event, accepted, None);
        self.count_special(event, accepted);
        closed
    }

    /// Whether the meter's events are changes of a gauge, which may be negative.
    fn takes_changes(&self, meter: MeterId) -> bool {
        self.meters
            .iter()
            .any(|m| m.id == meter && m.aggregation == Aggregation::WeightedSumOfChanges)
    }

    /// Whether the meter needs [`UsageAggregator::count_special`].
    fn is_special(&self, meter: u32) -> bool {
        matches!(
            self.meters.get(meter as usize).map(|m| &m.aggregation),
            Some(
                Aggregation::UniqueCount { .. }
                    | Aggregation::WeightedSum
                    | Aggregation::WeightedSumOfChanges
            )
        )
    }

    /// The slab part of counting an event; true when its period is closed. With `saved`, an
    /// entry's value before its first change in this chunk is pushed there, so that the chunk's
    /// counting can be undone.
    fn count_hot(
        &mut self,
        event: &UsageEvent,
        accepted: Accepted,
        saved: Option<&mut Vec<(usize, usize, Hot)>>,
    ) -> bool {
        let slot = accepted.slot as usize;
        let chunk_number = self.chunk_number;
        let index = self.hot_index(accepted.customer, accepted.meter as usize);
        let kind = self
            .kinds
            .get(accepted.meter as usize)
            .copied()
            .unwrap_or(HotKind::Count);
        match self.hot_mut(slot, accepted.customer, accepted.meter as usize) {
            Some(hot) => {
                if let Some(saved) = saved
                    && hot.saved_in != chunk_number
                {
                    saved.push((slot, index, *hot));
                    hot.saved_in = chunk_number;
                }
                // One per event ingested: a u64 does not fill up.
                hot.count = hot.count.saturating_add(1);
                hot.acc.add(kind, event.quantity, event.timestamp, event.id);
                hot.closed
            }
            None => false,
        }
    }

    /// The part of counting that only `unique_count` and `weighted_sum` meters need.
    fn count_special(&mut self, event: &UsageEvent, accepted: Accepted) {
        let meter = accepted.meter as usize;
        let Some(period) = self
            .periods
            .get(accepted.slot as usize)
            .map(|slab| slab.period)
        else {
            return;
        };
        let key = BucketKey {
            customer: accepted.customer,
            meter: accepted.meter,
            period,
        };
        match self.meters.get(meter).map(|m| &m.aggregation) {
            Some(Aggregation::UniqueCount { property }) => {
                if let Some(value) = event.properties.get(property) {
                    self.buckets
                        .entry(key)
                        .or_default()
                        .unique
                        .get_or_insert_with(FastSet::default)
                        .insert(value.clone());
                }
            }
            Some(Aggregation::WeightedSum | Aggregation::WeightedSumOfChanges) => {
                self.buckets.entry(key).or_default().readings.push((
                    event.timestamp,
                    event.id,
                    event.quantity,
                ));
            }
            _ => {}
        }
    }

    /// Ingests a batch: every good event is counted, every bad one reported with its position.
    /// The outcome is exactly that of [`UsageAggregator::ingest`] on each event in turn.
    ///
    /// The batch's outcomes go to the `dotmac_usage_events_ingested_total` counter (label
    /// `outcome`: `counted`, `duplicate`, `late`, `rejected`), once per batch; a single
    /// [`UsageAggregator::ingest`] counts nothing.
    pub fn ingest_batch(
        &mut self,
        events: &[UsageEvent],
        received_at: DateTime<Utc>,
    ) -> BatchReport {
        let mut report = BatchReport::default();
        let latest = self.latest_accepted(received_at);
        // Chunk by chunk: every event is checked (in order, so rejections come out in order)
        // and counted optimistically, its id filed; then the chunk's ids go through the
        // idempotency set shard by shard, so that each shard's table is in cache while it is
        // probed instead of every id missing memory (see `idset`). A refused event files no
        // id, so a later good event with the same id is still counted, as one by one. Only if
        // the chunk had replays is its counting undone and redone without them; aggregates do
        // not depend on the order of events, so the outcome is that of `ingest` on each event
        // in turn. The scratch space is reused from chunk to chunk.
        let mut ids = crate::idset::IdBatch::default();
        let mut saved: Vec<(usize, usize, Hot)> = Vec::new();
        let mut special: Vec<(usize, u32, Accepted)> = Vec::new();
        for (chunk_index, chunk) in events.chunks(CHUNK).enumerate() {
            // Counts and positions of events in memory: they cannot reach usize/u64::MAX.
            let first = chunk_index.saturating_mul(CHUNK);
            self.chunk_number = self.chunk_number.saturating_add(1);
            saved.clear();
            special.clear();
            let (mut counted, mut late) = (0, 0);
            for (group_offset, group) in (0u32..).step_by(GROUP).zip(chunk.chunks(GROUP)) {
                // The customer lookups of a group first, in a tight loop of independent loads:
                // the CPU keeps their cache misses in flight together.
                let mut customers = [None; GROUP];
                for (event, customer) in group.iter().zip(customers.iter_mut()) {
                    *customer = self.customer_index(event.customer);
                }
                for ((offset, event), customer) in (group_offset..).zip(group).zip(customers) {
                    match self.accept(event, customer, latest) {
                        Ok(accepted) => {
                            if self.is_special(accepted.meter) {
                                special.push((ids.len(), offset, accepted));
                            }
                            self.seen.file(&mut ids, event.id.as_uuid().as_u128());
                            if self.count_hot(event, accepted, Some(&mut saved)) {
                                late = usize::saturating_add(late, 1);
                            } else {
                                counted = usize::saturating_add(counted, 1);
                            }
                        }
                        Err(error) => report.rejected.push(Rejected {
                            index: first.saturating_add(offset as usize),
                            event: event.id,
                            error,
                        }),
                    }
                }
            }
            let filed = ids.len();
            self.seen.insert_filed(&mut ids);
            let duplicates = filed.saturating_sub(ids.new_count());
            if duplicates > 0 {
                // Some events were replays: undo the chunk's counting and count it again,
                // skipping them. Batches of fresh events, the usual case, never come here.
                for (slot, index, hot) in saved.drain(..) {
                    if let Some(entry) = self
                        .periods
                        .get_mut(slot)
                        .and_then(|slab| slab.hot.get_mut(index))
                    {
                        *entry = hot;
                    }
                }
                (counted, late) = (0, 0);
                let mut position = 0;
                for event in chunk {
                    let customer = self.customer_index(event.customer);
                    let Ok(accepted) = self.accept(event, customer, latest) else {
                        continue;
                    };
                    let new = ids.is_new(position);
                    position = usize::saturating_add(position, 1);
                    if !new {
                        continue;
                    }
                    if self.count_hot(event, accepted, None) {
                        late = usize::saturating_add(late, 1);
                    } else {
                        counted = usize::saturating_add(counted, 1);
                    }
                }
            }
            for (position, offset, accepted) in &special {
                if ids.is_new(*position)
                    && let Some(event) = chunk.get(*offset as usize)
                {
                    self.count_special(event, *accepted);
                }
            }
            report.counted = report.counted.saturating_add(counted);
            report.late = report.late.saturating_add(late);
            report.duplicates = report.duplicates.saturating_add(duplicates);
        }
        count_ingested(&report);
        report
    }

    fn key_for(
        &self,
        customer: CustomerId,
        meter: MeterId,
        period_start: NaiveDate,
    ) -> Result<(BucketKey, usize), UsageError> {
        let meter_index = self.meter_index(meter).ok_or(UsageError::UnknownMeter {
            event: UsageEventId::from_u128(0),
            meter,
        })?;
        let customer_index = *self.customers.get(&customer.as_uuid().as_u128()).ok_or(
            UsageError::UnknownCustomer {
                event: UsageEventId::from_u128(0),
                customer,
            },
        )?;
        let (index, _) = self
            .calendar
            .interval
            .period_containing(self.calendar.anchor, period_start)?;
        Ok((
            BucketKey {
                customer: customer_index,
                meter: meter_index as u32,
                period: index,
            },
            meter_index,
        ))
    }

    /// The aggregate of `meter` for `customer` over the billing period holding `period_start`
    /// (zero when nothing was used).
    ///
    /// # Errors
    ///
    /// [`UsageError::UnknownMeter`] / [`UsageError::UnknownCustomer`] (with a nil event
    /// id) for ids the aggregator does not know; [`UsageError::Core`] for dates out of range.
    pub fn aggregate(
        &self,
        customer: CustomerId,
        meter: MeterId,
        period_start: NaiveDate,
    ) -> Result<Decimal, UsageError> {
        let (key, meter_index) = self.key_for(customer, meter, period_start)?;
        self.value_of(key, meter_index)
    }

    fn value_of(&self, key: BucketKey, meter_index: usize) -> Result<Decimal, UsageError> {
        let Some(meter) = self.meters.get(meter_index) else {
            return Ok(Decimal::ZERO);
        };
        match meter.aggregation {
            Aggregation::WeightedSum => return self.weighted_sum(key),
            Aggregation::WeightedSumOfChanges => return self.weighted_sum_of_changes(key),
            _ => {}
        }
        if let Aggregation::UniqueCount { .. } = meter.aggregation {
            return Ok(Decimal::from(
                self.buckets
                    .get(&key)
                    .and_then(|b| b.unique.as_ref())
                    .map_or(0, |u| u.len()),
            ));
        }
        let Some(hot) = self.hot(key).filter(|h| h.count > 0) else {
            return Ok(Decimal::ZERO);
        };
        Ok(match (&meter.aggregation, hot.acc) {
            (Aggregation::Count, _) => Decimal::from(hot.count),
            (
                Aggregation::Sum,
                Acc::Sum {
                    whole,
                    decimal,
                    overflowed,
                },
            ) => Decimal::try_from_i128_with_scale(whole, 0)
                .ok()
                .filter(|_| !overflowed)
                .and_then(|whole| whole.checked_add(decimal))
                .ok_or(dotmac_core::CoreError::Overflow {
                    operation: "usage sum",
                })?,
            (Aggregation::Max, Acc::Max(max)) => max,
            (Aggregation::Latest, Acc::Latest { value, .. }) => value,
            _ => Decimal::ZERO,
        })
    }

    /// The gauge level carried into period `key.period`: the last reading of the latest
    /// earlier period that has one (zero when there is none).
    fn level_before(&self, key: BucketKey) -> Decimal {
        self.buckets
            .iter()
            .filter(|(k, b)| {
                k.customer == key.customer
                    && k.meter == key.meter
                    && k.period < key.period
                    && !b.readings.is_empty()
            })
            .max_by_key(|(k, _)| k.period)
            .and_then(|(_, b)| b.readings.iter().max_by_key(|(t, id, _)| (*t, *id)))
            .map_or(Decimal::ZERO, |(_, _, level)| *level)
    }

    /// The period's gauge readings in time order (then event id).
    fn sorted_readings(&self, key: BucketKey) -> Vec<(DateTime<Utc>, UsageEventId, Decimal)> {
        let mut readings = self
            .buckets
            .get(&key)
            .map(|b| b.readings.clone())
            .unwrap_or_default();
        readings.sort_unstable_by_key(|(t, id, _)| (*t, *id));
        readings
    }

    fn weighted_sum(&self, key: BucketKey) -> Result<Decimal, UsageError> {
        let window = self.calendar.window(key.period)?;
        let readings = self.sorted_readings(key);
        crate::period::time_weighted_average(
            window.start,
            window.end,
            self.level_before(key),
            readings.into_iter().map(|(at, _, level)| (at, level)),
        )
    }

    fn weighted_sum_of_changes(&self, key: BucketKey) -> Result<Decimal, UsageError> {
        let window = self.calendar.window(key.period)?;
        let overflow = || dotmac_core::CoreError::Overflow {
            operation: "usage gauge level",
        };
        // The level carried in: every change of the earlier periods.
        let mut level = Decimal::ZERO;
        for (k, bucket) in &self.buckets {
            if k.customer == key.customer && k.meter == key.meter && k.period < key.period {
                for (_, _, change) in &bucket.readings {
                    level = level.checked_add(*change).ok_or_else(overflow)?;
                }
            }
        }
        let initial = level;
        let mut steps = Vec::new();
        for (at, _, change) in self.sorted_readings(key) {
            level = level.checked_add(change).ok_or_else(overflow)?;
            steps.push((at, level));
        }
        crate::period::time_weighted_average(window.start, window.end, initial, steps)
    }

    /// Marks the period holding `period_start` as invoiced for this customer and meter, with the
    /// quantity that was billed; later events for it become late adjustments.
    ///
    /// # Errors
    ///
    /// As [`UsageAggregator::aggregate`].
    pub fn close_period(
        &mut self,
        customer: CustomerId,
        meter: MeterId,
        period_start: NaiveDate,
    ) -> Result<Decimal, UsageError> {
        let (key, meter_index) = self.key_for(customer, meter, period_start)?;
        let billed = self.value_of(key, meter_index)?;
        self.buckets.entry(key).or_default().billed = Some(billed);
        let slot = self.slot_for(key.period);
        if let Some(hot) = self.hot_mut(slot, key.customer, meter_index) {
            hot.closed = true;
        }
        Ok(billed)
    }

    /// Adjustments for closed periods whose aggregate changed since they were billed, priced
    /// by `price(meter, quantity)` (the plan's pricing model for that meter). Each adjustment is
    /// returned once: the billed quantity moves to the new aggregate.
    ///
    /// # Errors
    ///
    /// Whatever `price` returns, and [`UsageError::Core`] when the two prices cannot be
    /// subtracted; adjustments computed before the error are kept for the next call.
    pub fn late_adjustments<F, E>(&mut self, mut price: F) -> Result<Vec<UsageAdjustment>, E>
    where
        F: FnMut(CustomerId, MeterId, Decimal) -> Result<Money, E>,
        E: From<UsageError> + From<dotmac_core::CoreError>,
    {
        let mut closed: Vec<(BucketKey, Decimal)> = self
            .buckets
            .iter()
            .filter_map(|(k, b)| b.billed.map(|billed| (*k, billed)))
            .collect();
        closed.sort_unstable_by_key(|(k, _)| (k.customer, k.meter, k.period));
        let mut out = Vec::new();
        for (key, billed) in closed {
            let actual = self.value_of(key, key.meter as usize)?;
            if actual == billed {
                continue;
            }
            let (Some(&customer), Some(meter)) = (
                self.customer_ids.get(key.customer as usize),
                self.meters.get(key.meter as usize).map(|m| m.id),
            ) else {
                continue;
            };
            let amount =
                price(customer, meter, actual)?.checked_sub(price(customer, meter, billed)?)?;
            let window = self.calendar.window(key.period)?;
            if let Some(bucket) = self.buckets.get_mut(&key) {
                bucket.billed = Some(actual);
            }
            out.push(UsageAdjustment {
                customer,
                meter,
                period_start: window.start_date,
                billed_quantity: billed,
                actual_quantity: actual,
                amount,
            });
        }
        Ok(out)
    }

    /// How many distinct events were counted.
    pub fn events_counted(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use dotmac_core::Currency;
    use rust_decimal_macros::dec;
    use std::collections::BTreeMap;

    fn calendar() -> UsageCalendar {
        UsageCalendar {
            interval: BillingInterval::MONTHLY,
            anchor: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            zone: chrono_tz::UTC,
        }
    }

    fn event(id: u128, meter: u128, quantity: Decimal, at: DateTime<Utc>) -> UsageEvent {
        UsageEvent {
            id: UsageEventId::from_u128(id),
            customer: CustomerId::from_u128(1),
            subscription: None,
            meter: MeterId::from_u128(meter),
            quantity,
            timestamp: at,
            properties: BTreeMap::new(),
        }
    }

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
    }

    fn all_meters() -> Vec<Meter> {
        [
            Aggregation::Count,
            Aggregation::Sum,
            Aggregation::Max,
            Aggregation::UniqueCount {
                property: "ip".into(),
            },
            Aggregation::Latest,
            Aggregation::WeightedSum,
        ]
        .into_iter()
        .zip(1u128..)
        .map(|(aggregation, id)| Meter {
            id: MeterId::from_u128(id),
            code: format!("m{id}"),
            aggregation,
        })
        .collect()
    }

    /// Every aggregate of customers 1..=2, meters 1..=6, January to May 2026.
    fn every_aggregate(agg: &UsageAggregator) -> Vec<Decimal> {
        let mut values = Vec::new();
        for customer in 1..=2 {
            for meter in 1..=6 {
                for month in 1..=5 {
                    values.push(
                        agg.aggregate(
                            CustomerId::from_u128(customer),
                            MeterId::from_u128(meter),
                            NaiveDate::from_ymd_opt(2026, month, 1).unwrap(),
                        )
                        .unwrap(),
                    );
                }
            }
        }
        values
    }

    /// The report of ingesting `events` one by one with [`UsageAggregator::ingest`].
    fn one_by_one(
        agg: &mut UsageAggregator,
        events: &[UsageEvent],
        now: DateTime<Utc>,
    ) -> BatchReport {
        let mut report = BatchReport::default();
        for (index, event) in events.iter().enumerate() {
            match agg.ingest(event, now) {
                Ok(Ingested::Counted) => report.counted += 1,
                Ok(Ingested::Late { .. }) => report.late += 1,
                Ok(Ingested::Duplicate) => report.duplicates += 1,
                Err(error) => report.rejected.push(Rejected {
                    index,
                    event: event.id,
                    error,
                }),
            }
        }
        report
    }

    /// A batch of `len` events over customers 1..=2 (and an unknown 3), all six meters, March
    /// and April, with ids spread like UUIDs and every 7th id repeating an earlier one, and
    /// some refused events.
    fn mixed_batch(len: usize, id_offset: u128) -> Vec<UsageEvent> {
        (0..len as u128)
            .map(|i| {
                // Every 7th event repeats the id of an event 5 or 300,000 positions back.
                let n = if i % 7 == 6 {
                    i.saturating_sub(if i % 2 == 0 { 5 } else { 300_000 })
                } else {
                    i
                };
                let mut event = event(
                    (n + id_offset).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834),
                    1 + i % 6,
                    Decimal::from((i % 13) as i64),
                    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
                        + Duration::minutes((i % 80_000) as i64),
                );
                event.customer = CustomerId::from_u128(1 + i % 2);
                event
                    .properties
                    .insert("ip".into(), format!("10.0.0.{}", i % 5));
                match i % 1_001 {
                    1_000 => event.quantity = Decimal::NEGATIVE_ONE,
                    999 => event.customer = CustomerId::from_u128(3),
                    998 => event.meter = MeterId::from_u128(9),
                    _ => {}
                }
                event
            })
            .collect()
    }

    fn fresh_aggregator() -> UsageAggregator {
        let mut agg = UsageAggregator::new(calendar(), all_meters());
        agg.register_customer(CustomerId::from_u128(1));
        agg.register_customer(CustomerId::from_u128(2));
        agg
    }

    #[test]
    fn a_batch_counts_exactly_as_ingesting_each_event_in_turn() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        // Longer than one chunk, with replays inside a chunk, across chunks and of an earlier
        // batch; March is closed before, so its events are late.
        let first = mixed_batch(2_000, 0);
        let second = mixed_batch(CHUNK + 50_000, 1_000);
        let mut batched = fresh_aggregator();
        let mut single = fresh_aggregator();
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        for agg in [&mut batched, &mut single] {
            agg.close_period(CustomerId::from_u128(2), MeterId::from_u128(2), march)
                .unwrap();
        }
        // The last batch is a replay of the first: nothing in it counts again.
        for (events, fresh) in [(&first, true), (&second, true), (&first, false)] {
            let report = batched.ingest_batch(events, now);
            assert_eq!(report, one_by_one(&mut single, events, now));
            assert!(report.duplicates > 0 && !report.rejected.is_empty());
            assert_eq!(report.late > 0 && report.counted > 0, fresh);
            assert_eq!(every_aggregate(&batched), every_aggregate(&single));
            assert_eq!(batched.events_counted(), single.events_counted());
        }
        let price = |_, _, q: Decimal| Ok::<_, UsageError>(Money::new(q, Currency::USD));
        assert_eq!(
            batched.late_adjustments(price).unwrap(),
            single.late_adjustments(price).unwrap()
        );
    }

    #[test]
    fn a_refused_event_leaves_its_id_to_a_later_good_one_in_the_same_batch() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        let mut agg = fresh_aggregator();
        let mut bad = event(5, 2, dec!(-1), at(3, 0));
        bad.customer = CustomerId::from_u128(1);
        let good = event(5, 2, dec!(4), at(3, 0));
        let replay = event(5, 2, dec!(8), at(4, 0));
        let report = agg.ingest_batch(&[bad, good, replay], now);
        assert_eq!(report.counted, 1);
        assert_eq!(report.duplicates, 1);
        assert_eq!(
            report.rejected,
            vec![Rejected {
                index: 0,
                event: UsageEventId::from_u128(5),
                error: UsageError::NegativeQuantity {
                    event: UsageEventId::from_u128(5),
                    quantity: dec!(-1),
                },
            }]
        );
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let sum = agg
            .aggregate(CustomerId::from_u128(1), MeterId::from_u128(2), march)
            .unwrap();
        assert_eq!(sum, dec!(4));
        assert_eq!(agg.events_counted(), 1);
    }

    #[test]
    fn replays_in_a_batch_do_not_disturb_max_latest_or_distinct_values() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        let mut agg = fresh_aggregator();
        let first = [
            event(1, 3, dec!(5), at(3, 0)),
            event(2, 5, dec!(5), at(3, 0)),
            event(3, 4, dec!(1), at(3, 0)),
        ];
        assert_eq!(agg.ingest_batch(&first, now).counted, 3);
        // Replays carrying other values (as a buggy sender might): none of them counts.
        let mut replayed_ip = event(3, 4, dec!(1), at(3, 0));
        replayed_ip
            .properties
            .insert("ip".into(), "10.9.9.9".into());
        let second = [
            event(1, 3, dec!(50), at(3, 0)),
            event(2, 5, dec!(7), at(9, 0)),
            replayed_ip,
            event(4, 3, dec!(6), at(3, 0)),
            event(4, 3, dec!(60), at(3, 0)),
        ];
        let report = agg.ingest_batch(&second, now);
        assert_eq!((report.counted, report.duplicates), (1, 4));
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let value = |meter| {
            agg.aggregate(CustomerId::from_u128(1), MeterId::from_u128(meter), march)
                .unwrap()
        };
        assert_eq!(value(3), dec!(6));
        assert_eq!(value(5), dec!(5));
        assert_eq!(value(4), dec!(0));
        assert_eq!(value(1), dec!(0));
    }

    #[test]
    fn a_sum_beyond_decimal_range_is_an_overflow_error_not_a_panic() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        let mut agg = fresh_aggregator();
        let huge = Decimal::from_i128_with_scale(i128::from(u64::MAX) << 32, 1);
        let events: Vec<UsageEvent> = (1..=12).map(|id| event(id, 2, huge, at(3, 0))).collect();
        assert_eq!(agg.ingest_batch(&events, now).counted, 12);
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(
            agg.aggregate(CustomerId::from_u128(1), MeterId::from_u128(2), march),
            Err(UsageError::Core(dotmac_core::CoreError::Overflow {
                operation: "usage sum"
            }))
        );
        assert_eq!(agg.events_counted(), 12);
    }

    /// One customer and one time-weighted gauge, meter 1.
    fn gauge_aggregator() -> UsageAggregator {
        let gauge = Meter {
            id: MeterId::from_u128(1),
            code: "capacity".into(),
            aggregation: Aggregation::WeightedSum,
        };
        let mut agg = UsageAggregator::new(calendar(), vec![gauge]);
        agg.register_customer(CustomerId::from_u128(1));
        agg
    }

    #[test]
    fn weighted_sum_weights_levels_by_time_held_and_carries_the_level_over() {
        let mut agg = gauge_aggregator();
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        // 100 from the start of March 16 (half of the 31-day month minus a half day) on.
        agg.ingest(&event(1, 1, dec!(100), at(16, 12)), now)
            .unwrap();
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let value = agg
            .aggregate(CustomerId::from_u128(1), MeterId::from_u128(1), march)
            .unwrap();
        assert_eq!(value, dec!(100) * dec!(15.5) / dec!(31));
        // April carries the level of 100 over the whole month.
        let april = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
        let value = agg
            .aggregate(CustomerId::from_u128(1), MeterId::from_u128(1), april)
            .unwrap();
        assert_eq!(value, dec!(100));
    }

    #[test]
    fn weighted_sum_of_changes_adds_changes_and_carries_their_sum_over() {
        let seats = Meter {
            id: MeterId::from_u128(1),
            code: "seats".into(),
            aggregation: Aggregation::WeightedSumOfChanges,
        };
        let mut agg = UsageAggregator::new(calendar(), vec![seats]);
        agg.register_customer(CustomerId::from_u128(1));
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        // +3 and +3 at the start of March, −2 from April 16 (half of April's 30 days) on.
        for (id, quantity, when) in [(1, dec!(3), at(1, 0)), (2, dec!(3), at(1, 0))] {
            agg.ingest(&event(id, 1, quantity, when), now).unwrap();
        }
        let april_16 = Utc.with_ymd_and_hms(2026, 4, 16, 0, 0, 0).unwrap();
        assert_eq!(
            agg.ingest(&event(3, 1, dec!(-2), april_16), now).unwrap(),
            Ingested::Counted
        );
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let april = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
        let customer = CustomerId::from_u128(1);
        assert_eq!(
            agg.aggregate(customer, MeterId::from_u128(1), march)
                .unwrap(),
            dec!(6)
        );
        assert_eq!(
            agg.aggregate(customer, MeterId::from_u128(1), april)
                .unwrap(),
            dec!(5)
        );
    }

    #[test]
    fn late_events_become_adjustments_once() {
        let sum = Meter {
            id: MeterId::from_u128(1),
            code: "gb".into(),
            aggregation: Aggregation::Sum,
        };
        let mut agg = UsageAggregator::new(calendar(), vec![sum]);
        let customer = CustomerId::from_u128(1);
        agg.register_customer(customer);
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        agg.ingest(&event(1, 1, dec!(10), at(3, 0)), now).unwrap();
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(
            agg.close_period(customer, MeterId::from_u128(1), march)
                .unwrap(),
            dec!(10)
        );
        assert_eq!(
            agg.ingest(&event(2, 1, dec!(4), at(30, 0)), now).unwrap(),
            Ingested::Late {
                period_start: march
            }
        );
        // Half a dollar a unit: pricing is the caller's (dotmac-billing's rating).
        let price = |_, _, q: Decimal| -> Result<Money, UsageError> {
            Ok(Money::new(q * dec!(0.5), Currency::USD))
        };
        let adjustments = agg.late_adjustments(price).unwrap();
        assert_eq!(adjustments.len(), 1);
        assert_eq!(adjustments[0].amount, Money::new(dec!(2), Currency::USD));
        assert_eq!(adjustments[0].billed_quantity, dec!(10));
        assert_eq!(adjustments[0].actual_quantity, dec!(14));
        assert!(agg.late_adjustments(price).unwrap().is_empty());
    }

    #[test]
    fn a_delivery_at_the_end_of_time_is_not_a_panic() {
        let mut agg = fresh_aggregator();
        // received_at + the allowed skew is past chrono's range: the limit is the last instant.
        let end = DateTime::<Utc>::MAX_UTC;
        assert!(agg.ingest(&event(1, 2, dec!(1), at(3, 0)), end).is_ok());
        let report = agg.ingest_batch(&[event(2, 2, dec!(1), at(3, 0))], end);
        assert_eq!(report.counted, 1);
    }

    #[test]
    fn a_weighted_sum_beyond_decimal_range_is_an_overflow_error_not_a_panic() {
        let mut agg = gauge_aggregator();
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        agg.ingest(&event(1, 1, Decimal::MAX, at(2, 0)), now)
            .unwrap();
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(
            agg.aggregate(CustomerId::from_u128(1), MeterId::from_u128(1), march),
            Err(UsageError::Core(dotmac_core::CoreError::Overflow {
                operation: "time-weighted sum"
            }))
        );
    }

    #[test]
    fn a_batch_counts_its_outcomes_once_and_a_single_ingest_counts_nothing() {
        use dotmac_core::metrics_recorder::Counting;
        let sum = Meter {
            id: MeterId::from_u128(1),
            code: "gb".into(),
            aggregation: Aggregation::Sum,
        };
        let mut agg = UsageAggregator::new(calendar(), vec![sum]);
        let customer = CustomerId::from_u128(1);
        agg.register_customer(customer);
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let recorder = Counting::default();
        let report = metrics::with_local_recorder(&recorder, || {
            // Not counted: `ingest` is also rating's re-read of stored events.
            agg.ingest(&event(1, 1, dec!(10), at(3, 0)), now).unwrap();
            agg.close_period(customer, MeterId::from_u128(1), march)
                .unwrap();
            agg.ingest_batch(
                &[
                    event(
                        2,
                        1,
                        dec!(1),
                        Utc.with_ymd_and_hms(2026, 4, 2, 0, 0, 0).unwrap(),
                    ),
                    event(
                        3,
                        1,
                        dec!(1),
                        Utc.with_ymd_and_hms(2026, 4, 3, 0, 0, 0).unwrap(),
                    ),
                    event(1, 1, dec!(10), at(3, 0)),
                    event(4, 1, dec!(4), at(30, 0)),
                    event(5, 9, dec!(1), at(30, 0)),
                ],
                now,
            )
        });
        assert_eq!(
            (
                report.counted,
                report.duplicates,
                report.late,
                report.rejected.len()
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(
            recorder.moved(),
            [
                "dotmac_usage_events_ingested_total{outcome=counted}=2",
                "dotmac_usage_events_ingested_total{outcome=duplicate}=1",
                "dotmac_usage_events_ingested_total{outcome=late}=1",
                "dotmac_usage_events_ingested_total{outcome=rejected}=1",
            ]
        );
    }
}
