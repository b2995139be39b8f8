//! Billing intervals and periods, computed from the anchor so they never drift.
//!
//! Period `k` of an interval anchored at `a` starts at `a + k × interval`, computed from `a`
//! itself, never by stepping from the previous period. Month and year steps keep the anchor's
//! day and clamp it to the end of a shorter month, so an anchor of Jan 31 gives Feb 28 (29),
//! Mar 31, Apr 30 — the clamped day never leaks into later periods (the Jan 31 → Feb 28 →
//! Mar 28 drift that Kill Bill issue 127 describes). Consecutive periods tile: period `k` ends
//! exactly where period `k + 1` starts.

use std::fmt;

use chrono::{Datelike, Days, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// The unit of a billing interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalUnit {
    /// Calendar days.
    Day,
    /// Weeks of seven days.
    Week,
    /// Calendar months, clamped to month end.
    Month,
    /// Calendar years (twelve months), clamped to month end (Feb 29 → Feb 28).
    Year,
}

impl std::str::FromStr for IntervalUnit {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(IntervalUnit::Day),
            "week" => Ok(IntervalUnit::Week),
            "month" => Ok(IntervalUnit::Month),
            "year" => Ok(IntervalUnit::Year),
            _ => Err(CoreError::Parse {
                what: "interval unit (day, week, month, year)",
                input: s.to_owned(),
            }),
        }
    }
}

/// How often a plan bills: `count` × `unit`, such as 1 month or 3 months (quarterly).
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_core::{BillingInterval, IntervalUnit};
///
/// let monthly = BillingInterval::new(IntervalUnit::Month, 1)?;
/// let anchor = NaiveDate::from_ymd_opt(2024, 1, 31).unwrap();
/// let feb = monthly.period(anchor, 1)?;
/// assert_eq!(feb.start(), NaiveDate::from_ymd_opt(2024, 2, 29).unwrap());
/// assert_eq!(feb.end(), NaiveDate::from_ymd_opt(2024, 3, 31).unwrap());
/// assert_eq!(feb.days(), 31);
/// # Ok::<(), dotmac_core::CoreError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawInterval")]
pub struct BillingInterval {
    unit: IntervalUnit,
    count: u32,
}

#[derive(Deserialize)]
struct RawInterval {
    unit: IntervalUnit,
    count: u32,
}

impl TryFrom<RawInterval> for BillingInterval {
    type Error = CoreError;
    fn try_from(raw: RawInterval) -> Result<Self, Self::Error> {
        BillingInterval::new(raw.unit, raw.count)
    }
}

impl BillingInterval {
    /// `count` × `unit`.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidIntervalCount`] when `count` is 0.
    pub const fn new(unit: IntervalUnit, count: u32) -> Result<Self, CoreError> {
        if count == 0 {
            return Err(CoreError::InvalidIntervalCount(count));
        }
        Ok(BillingInterval { unit, count })
    }

    /// One month.
    pub const MONTHLY: BillingInterval = BillingInterval {
        unit: IntervalUnit::Month,
        count: 1,
    };
    /// Three months.
    pub const QUARTERLY: BillingInterval = BillingInterval {
        unit: IntervalUnit::Month,
        count: 3,
    };
    /// One year.
    pub const YEARLY: BillingInterval = BillingInterval {
        unit: IntervalUnit::Year,
        count: 1,
    };
    /// One week.
    pub const WEEKLY: BillingInterval = BillingInterval {
        unit: IntervalUnit::Week,
        count: 1,
    };

    /// The unit.
    pub const fn unit(&self) -> IntervalUnit {
        self.unit
    }

    /// How many units one period spans (at least 1).
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// How many periods fit in a year, the conventional way: 365 days, 52 weeks, 12 months.
    /// Revenue analytics use it to normalise a price to a monthly (MRR) or yearly figure.
    pub fn periods_per_year(&self) -> Decimal {
        let per_year = match self.unit {
            IntervalUnit::Day => 365,
            IntervalUnit::Week => 52,
            IntervalUnit::Month => 12,
            IntervalUnit::Year => 1,
        };
        // `count` is at least 1 (checked by `new` and on deserialization), so the quotient is
        // at most 365 and the division cannot fail; `ZERO` is never reached.
        Decimal::from(per_year)
            .checked_div(Decimal::from(self.count))
            .unwrap_or(Decimal::ZERO)
    }

    /// The first day of period `k` (negative `k` counts back before the anchor).
    ///
    /// # Errors
    ///
    /// [`CoreError::DateOutOfRange`] when the date is outside chrono's range.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "a u32 count times 7 or 12 fits in i64"
    )]
    pub fn period_start(&self, anchor: NaiveDate, k: i64) -> Result<NaiveDate, CoreError> {
        let steps = match self.unit {
            IntervalUnit::Day | IntervalUnit::Month => i64::from(self.count),
            IntervalUnit::Week => i64::from(self.count) * 7,
            IntervalUnit::Year => i64::from(self.count) * 12,
        };
        let offset = k
            .checked_mul(steps)
            .ok_or(CoreError::DateOutOfRange("period start"))?;
        match self.unit {
            IntervalUnit::Day | IntervalUnit::Week => add_days(anchor, offset),
            IntervalUnit::Month | IntervalUnit::Year => add_months_clamped(anchor, offset),
        }
    }

    /// Period `k`: `[start(k), start(k + 1))`.
    ///
    /// # Errors
    ///
    /// [`CoreError::DateOutOfRange`] when a boundary is outside chrono's range.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "a u32 count times 7 or 12 fits in i64; the rest is checked"
    )]
    pub fn period(&self, anchor: NaiveDate, k: i64) -> Result<Period, CoreError> {
        let next = k
            .checked_add(1)
            .ok_or(CoreError::DateOutOfRange("period index"))?;
        let (start, end) = match self.unit {
            // Decompose the anchor once for both boundaries: this is the bill run's hot path.
            IntervalUnit::Month | IntervalUnit::Year => {
                let months_per = i64::from(self.count)
                    * if self.unit == IntervalUnit::Year {
                        12
                    } else {
                        1
                    };
                let base = month_index(anchor);
                let day = anchor.day();
                let at = |i: i64| {
                    i.checked_mul(months_per)
                        .and_then(|m| m.checked_add(base))
                        .ok_or(CoreError::DateOutOfRange("period start"))
                        .and_then(|total| date_from_month_index(total, day))
                };
                (at(k)?, at(next)?)
            }
            IntervalUnit::Day | IntervalUnit::Week => {
                // Day steps do not clamp, so the end is one step after the start: a short move
                // that stays on chrono's fast path.
                let start = self.period_start(anchor, k)?;
                let days = i64::from(self.count)
                    * if self.unit == IntervalUnit::Week {
                        7
                    } else {
                        1
                    };
                (start, add_days(start, days)?)
            }
        };
        Period::new(start, end)
    }

    /// The index and bounds of the period that holds `date`.
    ///
    /// # Errors
    ///
    /// [`CoreError::DateOutOfRange`] when a boundary is outside chrono's range.
    pub fn period_containing(
        &self,
        anchor: NaiveDate,
        date: NaiveDate,
    ) -> Result<(i64, Period), CoreError> {
        let count = i64::from(self.count);
        let out_of_range = || CoreError::DateOutOfRange("period index");
        // Dates and month indices are within chrono's ±262 143 years, so these differences
        // and products of a u32 count by 7 or 12 fit in i64; `count` is at least 1.
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "bounded by chrono's date range, see above"
        )]
        let mut k = match self.unit {
            IntervalUnit::Day => date
                .signed_duration_since(anchor)
                .num_days()
                .div_euclid(count),
            IntervalUnit::Week => date
                .signed_duration_since(anchor)
                .num_days()
                .div_euclid(7 * count),
            IntervalUnit::Month | IntervalUnit::Year => {
                let months_per = if self.unit == IntervalUnit::Year {
                    12 * count
                } else {
                    count
                };
                let diff = month_index(date) - month_index(anchor);
                diff.div_euclid(months_per)
            }
        };
        // The estimate is exact for days and weeks and off by at most one for clamped months.
        loop {
            let period = self.period(anchor, k)?;
            if date < period.start() {
                k = k.checked_sub(1).ok_or_else(out_of_range)?;
            } else if date >= period.end() {
                k = k.checked_add(1).ok_or_else(out_of_range)?;
            } else {
                return Ok((k, period));
            }
        }
    }
}

impl fmt::Display for BillingInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            IntervalUnit::Day => "day",
            IntervalUnit::Week => "week",
            IntervalUnit::Month => "month",
            IntervalUnit::Year => "year",
        };
        if self.count == 1 {
            write!(f, "{unit}")
        } else {
            write!(f, "{} {unit}s", self.count)
        }
    }
}

#[allow(
    clippy::arithmetic_side_effects,
    reason = "an i32 year times 12 plus 11 fits in i64"
)]
fn month_index(date: NaiveDate) -> i64 {
    i64::from(date.year()) * 12 + i64::from(date.month0())
}

fn add_days(date: NaiveDate, days: i64) -> Result<NaiveDate, CoreError> {
    let moved = if days >= 0 {
        date.checked_add_days(Days::new(days.unsigned_abs()))
    } else {
        date.checked_sub_days(Days::new(days.unsigned_abs()))
    };
    moved.ok_or(CoreError::DateOutOfRange("period start"))
}

/// `date` moved by `months`, keeping its day of month but clamping it to the target month's
/// last day.
pub(crate) fn add_months_clamped(date: NaiveDate, months: i64) -> Result<NaiveDate, CoreError> {
    let total = month_index(date)
        .checked_add(months)
        .ok_or(CoreError::DateOutOfRange("period start"))?;
    date_from_month_index(total, date.day())
}

/// The date in month `total` (years × 12 + month0) with `day` clamped to that month's end.
fn date_from_month_index(total: i64, day: u32) -> Result<NaiveDate, CoreError> {
    let out_of_range = || CoreError::DateOutOfRange("period start");
    let year = i32::try_from(total.div_euclid(12)).map_err(|_| out_of_range())?;
    // rem_euclid(12) is in 0..12, so the cast is lossless.
    #[allow(clippy::arithmetic_side_effects, reason = "0..12 plus 1")]
    let month = total.rem_euclid(12) as u32 + 1;
    let day = day.min(days_in_month(year, month));
    NaiveDate::from_ymd_opt(year, month, day).ok_or_else(out_of_range)
}

/// Days in a month of the proleptic Gregorian calendar.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap_year(year) => 29,
        _ => 28,
    }
}

fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// A half-open run of days `[start, end)`: `start` is the first day in it, `end` the first day
/// after it. Periods that share a boundary tile without overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawPeriod")]
pub struct Period {
    start: NaiveDate,
    end: NaiveDate,
}

#[derive(Deserialize)]
struct RawPeriod {
    start: NaiveDate,
    end: NaiveDate,
}

impl TryFrom<RawPeriod> for Period {
    type Error = CoreError;
    fn try_from(raw: RawPeriod) -> Result<Self, Self::Error> {
        Period::new(raw.start, raw.end)
    }
}

impl Period {
    /// `[start, end)`.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidPeriod`] unless `start < end`.
    pub fn new(start: NaiveDate, end: NaiveDate) -> Result<Self, CoreError> {
        if start < end {
            Ok(Period { start, end })
        } else {
            Err(CoreError::InvalidPeriod { start, end })
        }
    }

    /// The first day in the period.
    pub fn start(&self) -> NaiveDate {
        self.start
    }

    /// The first day after the period.
    pub fn end(&self) -> NaiveDate {
        self.end
    }

    /// The last day in the period (`end − 1`).
    pub fn last_day(&self) -> NaiveDate {
        self.end.pred_opt().unwrap_or(self.start)
    }

    /// The number of days in the period (at least 1).
    pub fn days(&self) -> i64 {
        // chrono's `signed_duration_since` cannot overflow between two valid dates.
        self.end.signed_duration_since(self.start).num_days()
    }

    /// True when `date` is in `[start, end)`.
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.start <= date && date < self.end
    }

    /// The days two periods share, if any.
    pub fn intersection(&self, other: &Period) -> Option<Period> {
        Period::new(self.start.max(other.start), self.end.min(other.end)).ok()
    }

    /// The part of the period from `date` on (`[max(date, start), end)`), if any.
    pub fn from_date(&self, date: NaiveDate) -> Option<Period> {
        Period::new(self.start.max(date), self.end).ok()
    }

    /// The part of the period before `date` (`[start, min(date, end))`), if any.
    pub fn until_date(&self, date: NaiveDate) -> Option<Period> {
        Period::new(self.start, self.end.min(date)).ok()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn month_end_anchor_clamps_without_drift() {
        let i = BillingInterval::MONTHLY;
        let starts: Vec<_> = (0..5)
            .map(|k| i.period_start(d(2021, 1, 31), k).unwrap())
            .collect();
        assert_eq!(
            starts,
            [
                d(2021, 1, 31),
                d(2021, 2, 28),
                d(2021, 3, 31),
                d(2021, 4, 30),
                d(2021, 5, 31)
            ]
        );
        assert_eq!(i.period_start(d(2021, 1, 31), -2).unwrap(), d(2020, 11, 30));
    }

    #[test]
    fn leap_day_yearly() {
        let i = BillingInterval::YEARLY;
        assert_eq!(i.period_start(d(2024, 2, 29), 1).unwrap(), d(2025, 2, 28));
        assert_eq!(i.period_start(d(2024, 2, 29), 4).unwrap(), d(2028, 2, 29));
    }

    #[test]
    fn period_containing_finds_the_right_period() {
        let i = BillingInterval::MONTHLY;
        let anchor = d(2021, 1, 31);
        let (k, p) = i.period_containing(anchor, d(2021, 3, 30)).unwrap();
        assert_eq!((k, p.start(), p.end()), (1, d(2021, 2, 28), d(2021, 3, 31)));
        let (k, p) = i.period_containing(anchor, d(2021, 3, 31)).unwrap();
        assert_eq!((k, p.start()), (2, d(2021, 3, 31)));
        let (k, p) = i.period_containing(anchor, d(2020, 12, 31)).unwrap();
        assert_eq!(
            (k, p.start(), p.end()),
            (-1, d(2020, 12, 31), d(2021, 1, 31))
        );
        let weekly = BillingInterval::WEEKLY;
        let (k, p) = weekly
            .period_containing(d(2022, 6, 27), d(2022, 6, 22))
            .unwrap();
        assert_eq!((k, p.start(), p.days()), (-1, d(2022, 6, 20), 7));
    }

    #[test]
    fn zero_count_and_inverted_periods_are_refused() {
        assert_eq!(
            BillingInterval::new(IntervalUnit::Month, 0),
            Err(CoreError::InvalidIntervalCount(0))
        );
        assert!(serde_json::from_str::<BillingInterval>(r#"{"unit":"month","count":0}"#).is_err());
        assert_eq!(
            Period::new(d(2021, 1, 2), d(2021, 1, 1)),
            Err(CoreError::InvalidPeriod {
                start: d(2021, 1, 2),
                end: d(2021, 1, 1)
            })
        );
        assert!(
            serde_json::from_str::<Period>(r#"{"start":"2021-01-02","end":"2021-01-02"}"#).is_err()
        );
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let i = BillingInterval::YEARLY;
        assert!(i.period_start(d(2021, 1, 1), i64::MAX).is_err());
        assert!(i.period_start(d(2021, 1, 1), 1_000_000).is_err());
        assert!(
            BillingInterval::new(IntervalUnit::Day, u32::MAX)
                .unwrap()
                .period_start(d(2021, 1, 1), i64::MAX / 2)
                .is_err()
        );
    }

    #[test]
    fn period_parts() {
        let p = Period::new(d(2026, 4, 1), d(2026, 5, 1)).unwrap();
        assert_eq!(p.days(), 30);
        assert_eq!(p.last_day(), d(2026, 4, 30));
        assert_eq!(p.from_date(d(2026, 4, 16)).unwrap().days(), 15);
        assert_eq!(p.until_date(d(2026, 4, 16)).unwrap().days(), 15);
        assert!(p.from_date(d(2026, 5, 1)).is_none());
        let q = Period::new(d(2026, 4, 20), d(2026, 6, 1)).unwrap();
        assert_eq!(p.intersection(&q).unwrap().days(), 11);
    }
}
