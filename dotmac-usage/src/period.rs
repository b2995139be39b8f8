//! One period's aggregation as a pure function of its events: what a meter's quantity is for
//! `[from, to)`, given the events and what carries in from earlier periods.
//!
//! [`PeriodAggregation`] is the same arithmetic as [`UsageAggregator`](crate::UsageAggregator)
//! (which buckets a stream of events by customer and billing period first), for a caller who
//! already holds one period's events, such as a re-rating job or a usage preview.

use chrono::{DateTime, Utc};
use dotmac_core::{CoreError, RoundingMode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use dotmac_core::FastSet;

use crate::error::UsageError;
use crate::event::{Aggregation, UsageEvent};

fn overflow() -> UsageError {
    UsageError::Core(CoreError::Overflow {
        operation: "usage aggregation",
    })
}

/// The time-weighted average of a level over `[start, end)`: the level is `initial` from
/// `start`, then each step's level from its instant on (steps in time order, inside the
/// window). Σ level × seconds held / window length in seconds; zero for an empty window.
pub(crate) fn time_weighted_average(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    initial: Decimal,
    steps: impl IntoIterator<Item = (DateTime<Utc>, Decimal)>,
) -> Result<Decimal, UsageError> {
    let length = end.signed_duration_since(start).num_seconds();
    if length <= 0 {
        return Ok(Decimal::ZERO);
    }
    let overflow = || {
        UsageError::Core(CoreError::Overflow {
            operation: "time-weighted sum",
        })
    };
    let mut level = initial;
    let mut since = start;
    let mut area = Decimal::ZERO;
    let mut hold = |level: Decimal, from: DateTime<Utc>, to: DateTime<Utc>| {
        let held = Decimal::from(to.signed_duration_since(from).num_seconds());
        area = level
            .checked_mul(held)
            .and_then(|part| area.checked_add(part))
            .ok_or_else(overflow)?;
        Ok::<(), UsageError>(())
    };
    for (at, new_level) in steps {
        hold(level, since, at)?;
        level = new_level;
        since = at;
    }
    hold(level, since, end)?;
    area.checked_div(Decimal::from(length)).ok_or_else(overflow)
}

/// How one period's events aggregate into a quantity. Build with [`PeriodAggregation::new`].
///
/// * Only events with `from ≤ timestamp < to` count; events are taken in time order, input
///   order breaking ties.
/// * `carry_in` (default 0) is what earlier periods pass on: [`Aggregation::Sum`] adds it (a
///   recurring metric's running total); [`Aggregation::WeightedSum`] and
///   [`Aggregation::WeightedSumOfChanges`] start the gauge at it. Other aggregations ignore it.
/// * `precision` (optional) rounds the quantity half-up to that many decimal places; without it
///   the quantity is exact.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use dotmac_usage::{Aggregation, PeriodAggregation, UsageEvent, UsageEventId, MeterId};
/// use dotmac_core::CustomerId;
/// use rust_decimal::Decimal;
///
/// let from = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
/// let to = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
/// // Two seats added at noon to a gauge of 4 seats: 4 for half the day, 6 for the other half.
/// let event = UsageEvent {
///     id: UsageEventId::from_u128(1),
///     customer: CustomerId::from_u128(1),
///     subscription: None,
///     meter: MeterId::from_u128(1),
///     quantity: Decimal::from(2),
///     timestamp: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
///     properties: Default::default(),
/// };
/// let seats = PeriodAggregation::new(Aggregation::WeightedSumOfChanges, from, to)?
///     .with_carry_in(Decimal::from(4));
/// assert_eq!(seats.quantity(&[event])?, Decimal::from(5));
/// # Ok::<(), dotmac_usage::UsageError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PeriodAggregation {
    aggregation: Aggregation,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    carry_in: Decimal,
    precision: Option<u32>,
}

/// The most decimal places a `Decimal` holds.
const MAX_PRECISION: u32 = 28;

impl PeriodAggregation {
    /// Aggregates with `aggregation` over `[from, to)`, nothing carried in, exact.
    ///
    /// # Errors
    ///
    /// [`UsageError::InvalidConfiguration`] when `to` is not after `from`.
    pub fn new(
        aggregation: Aggregation,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Self, UsageError> {
        if to <= from {
            return Err(UsageError::InvalidConfiguration {
                what: "usage period",
                reason: "the period must end after it starts",
            });
        }
        Ok(PeriodAggregation {
            aggregation,
            from,
            to,
            carry_in: Decimal::ZERO,
            precision: None,
        })
    }

    /// What earlier periods carry in (see the type's documentation).
    pub fn with_carry_in(mut self, carry_in: Decimal) -> Self {
        self.carry_in = carry_in;
        self
    }

    /// Rounds the quantity half-up to `decimal_places`.
    ///
    /// # Errors
    ///
    /// [`UsageError::InvalidConfiguration`] above 28 places (more than a decimal holds).
    pub fn with_precision(mut self, decimal_places: u32) -> Result<Self, UsageError> {
        if decimal_places > MAX_PRECISION {
            return Err(UsageError::InvalidConfiguration {
                what: "usage precision",
                reason: "at most 28 decimal places",
            });
        }
        self.precision = Some(decimal_places);
        Ok(self)
    }

    /// The period's quantity. Events outside the period are skipped; the customer and meter of
    /// each event are not looked at (the caller passes one customer's events of one meter).
    ///
    /// # Errors
    ///
    /// [`UsageError::NegativeQuantity`] for a negative quantity, except under
    /// [`Aggregation::WeightedSumOfChanges`] whose changes may be negative;
    /// [`UsageError::Core`] on overflow.
    pub fn quantity(&self, events: &[UsageEvent]) -> Result<Decimal, UsageError> {
        let mut inside: Vec<&UsageEvent> = events
            .iter()
            .filter(|e| self.from <= e.timestamp && e.timestamp < self.to)
            .collect();
        if self.aggregation != Aggregation::WeightedSumOfChanges
            && let Some(negative) = inside
                .iter()
                .find(|e| e.quantity.is_sign_negative() && !e.quantity.is_zero())
        {
            return Err(UsageError::NegativeQuantity {
                event: negative.id,
                quantity: negative.quantity,
            });
        }
        // Stable: input order breaks ties.
        inside.sort_by_key(|e| e.timestamp);
        let quantity = match &self.aggregation {
            Aggregation::Count => Decimal::from(inside.len()),
            Aggregation::Sum => inside.iter().try_fold(self.carry_in, |sum, e| {
                sum.checked_add(e.quantity).ok_or_else(overflow)
            })?,
            Aggregation::Max => inside
                .iter()
                .map(|e| e.quantity)
                .max()
                .unwrap_or(Decimal::ZERO),
            Aggregation::Latest => inside.last().map_or(Decimal::ZERO, |e| e.quantity),
            Aggregation::UniqueCount { property } => {
                let distinct: FastSet<&str> = inside
                    .iter()
                    .filter_map(|e| e.properties.get(property).map(String::as_str))
                    .collect();
                Decimal::from(distinct.len())
            }
            Aggregation::WeightedSum => time_weighted_average(
                self.from,
                self.to,
                self.carry_in,
                inside.iter().map(|e| (e.timestamp, e.quantity)),
            )?,
            Aggregation::WeightedSumOfChanges => {
                let mut level = self.carry_in;
                let mut steps = Vec::with_capacity(inside.len());
                for e in &inside {
                    level = level.checked_add(e.quantity).ok_or_else(overflow)?;
                    steps.push((e.timestamp, level));
                }
                time_weighted_average(self.from, self.to, self.carry_in, steps)?
            }
        };
        Ok(match self.precision {
            Some(places) => RoundingMode::HalfUp.round_decimal(quantity, places),
            None => quantity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use dotmac_core::CustomerId;
    use dotmac_core::{MeterId, UsageEventId};
    use rust_decimal_macros::dec;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
    }

    fn event(id: u128, when: DateTime<Utc>, quantity: Decimal) -> UsageEvent {
        UsageEvent {
            id: UsageEventId::from_u128(id),
            customer: CustomerId::from_u128(1),
            subscription: None,
            meter: MeterId::from_u128(1),
            quantity,
            timestamp: when,
            properties: Default::default(),
        }
    }

    #[test]
    fn changes_add_to_the_gauge_and_may_be_negative() {
        // From 10: +5 on day 2, −15 on day 3, over days 1–4 (3 days): (10 + 15 + 0) / 3.
        let period = PeriodAggregation::new(Aggregation::WeightedSumOfChanges, at(1, 0), at(4, 0))
            .unwrap()
            .with_carry_in(dec!(10))
            .with_precision(5)
            .unwrap();
        let events = [event(1, at(2, 0), dec!(5)), event(2, at(3, 0), dec!(-15))];
        assert_eq!(period.quantity(&events).unwrap(), dec!(8.33333));
        let levels = PeriodAggregation::new(Aggregation::WeightedSum, at(1, 0), at(4, 0)).unwrap();
        assert_eq!(
            levels.quantity(&events),
            Err(UsageError::NegativeQuantity {
                event: UsageEventId::from_u128(2),
                quantity: dec!(-15)
            })
        );
    }

    #[test]
    fn latest_takes_time_order_with_input_order_breaking_ties_and_skips_outside_events() {
        let period = PeriodAggregation::new(Aggregation::Latest, at(1, 0), at(2, 0)).unwrap();
        let events = [
            event(1, at(1, 5), dec!(7)),
            event(2, at(1, 5), dec!(8)),
            event(3, at(1, 1), dec!(9)),
            event(4, at(2, 0), dec!(100)),
        ];
        assert_eq!(period.quantity(&events).unwrap(), dec!(8));
        assert!(PeriodAggregation::new(Aggregation::Count, at(2, 0), at(2, 0)).is_err());
    }
}
