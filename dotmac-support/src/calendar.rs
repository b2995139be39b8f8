//! Business calendars and working-time arithmetic.
//!
//! A [`BusinessCalendar`] is a weekly pattern of local working intervals (several per day), an
//! IANA time zone and a set of local holiday dates. It answers two questions exactly, to the
//! second: what instant is N working minutes after `t` ([`BusinessCalendar::add_working_minutes`]),
//! and how many working minutes lie between two instants
//! ([`BusinessCalendar::working_minutes_between`]).
//!
//! The definition everything follows: an instant is working time when its local wall-clock time
//! lies in one of the intervals of its local date, and that date is not a holiday. Across
//! daylight-saving changes this means that an interval spanning the spring-forward gap is an hour
//! shorter in real time, one spanning the autumn fold an hour longer (the repeated wall minutes
//! count twice), and an interval opening inside the gap opens when the clocks jump.
//!
//! Speed: each zone's UTC offsets from 1970 to 2100 are computed once per process and shared.
//! Days without an offset change (all but about two a year) need no time-zone lookup at all, and
//! whole weeks without a change are skipped in one step, subtracting the holidays inside them.

// Working-time arithmetic in seconds and day numbers. Every figure derives from instants and
// dates `chrono` can represent (|seconds| < 2^43, |days| < 2^27), u32 minutes and u16 minutes of
// a day, so sums, differences and products by DAY_SECS/WEEK_SECS stay far inside i64 (and
// sums of a week's working seconds far inside it too); results go back through `chrono`'s
// checked constructors, which refuse what is out of range.
#![allow(clippy::arithmetic_side_effects, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc, Weekday,
};
use chrono_tz::{GapInfo, Tz};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SupportError};

const DAY_SECS: i64 = 86_400;

/// The longest span, in days, that working-time arithmetic walks (about 100 years): a due time
/// further than that from its start, or a count of working time between instants further apart,
/// is [`SupportError::SpanTooLong`]. The walkers step through a span day by day (week by week
/// where the zone's offset stays put), so an unbounded span (a ticket dated in the year 1013, a
/// target of `u32::MAX` minutes) would cost time in proportion to it; no SLA clock needs more.
pub const MAX_WORKING_TIME_SPAN_DAYS: i64 = 36_525;
const WEEK_SECS: i64 = 7 * DAY_SECS;
const MINUTES_PER_DAY: u16 = 24 * 60;

/// A local time of day to the minute, `00:00` to `24:00` inclusive (`24:00` closes a day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    /// Midnight at the start of a day.
    pub const MIDNIGHT: TimeOfDay = TimeOfDay(0);
    /// Midnight at the end of a day (`24:00`).
    pub const END_OF_DAY: TimeOfDay = TimeOfDay(MINUTES_PER_DAY);

    /// A time from hours and minutes.
    ///
    /// # Errors
    ///
    /// [`SupportError::InvalidTimeOfDay`] past 24:00 or with minutes ≥ 60.
    pub fn new(hours: u16, minutes: u16) -> Result<Self> {
        let total = hours.saturating_mul(60).saturating_add(minutes);
        if minutes >= 60 || total > MINUTES_PER_DAY {
            return Err(SupportError::InvalidTimeOfDay(format!(
                "{hours:02}:{minutes:02}"
            )));
        }
        Ok(TimeOfDay(total))
    }

    /// Minutes since the day's start.
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl FromStr for TimeOfDay {
    type Err = SupportError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || SupportError::InvalidTimeOfDay(s.to_owned());
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        let hours: u16 = h.parse().map_err(|_| bad())?;
        let minutes: u16 = m.parse().map_err(|_| bad())?;
        TimeOfDay::new(hours, minutes).map_err(|_| bad())
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = SupportError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<TimeOfDay> for String {
    fn from(t: TimeOfDay) -> String {
        t.to_string()
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// One local working interval `[start, end)` of a weekday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkingInterval {
    /// Opening time.
    pub start: TimeOfDay,
    /// Closing time (exclusive).
    pub end: TimeOfDay,
}

impl fmt::Display for WorkingInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// The serialized form of a calendar: what [`BusinessCalendar`] reads and writes with serde.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// IANA time-zone name.
    pub timezone: String,
    /// Working intervals per weekday; absent weekdays are closed.
    pub hours: Vec<DayHours>,
    /// Local dates on which nothing counts.
    #[serde(default)]
    pub holidays: Vec<NaiveDate>,
}

/// The working intervals of one weekday, in [`CalendarSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayHours {
    /// The weekday.
    pub weekday: Weekday,
    /// Its intervals.
    pub intervals: Vec<WorkingInterval>,
}

/// Builds a [`BusinessCalendar`]; every check happens in [`CalendarBuilder::build`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CalendarBuilder {
    timezone: String,
    hours: Vec<(Weekday, String, String)>,
    holidays: Vec<NaiveDate>,
}

impl CalendarBuilder {
    /// Adds a working interval `start`-`end` (`"HH:MM"`, end up to `"24:00"`) on a weekday.
    pub fn hours(mut self, weekday: Weekday, start: &str, end: &str) -> Self {
        self.hours.push((weekday, start.to_owned(), end.to_owned()));
        self
    }

    /// Adds the same working interval on Monday to Friday.
    pub fn weekdays(mut self, start: &str, end: &str) -> Self {
        for day in [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ] {
            self = self.hours(day, start, end);
        }
        self
    }

    /// Adds a holiday (a local date on which nothing counts).
    pub fn holiday(mut self, date: NaiveDate) -> Self {
        self.holidays.push(date);
        self
    }

    /// Adds several holidays, for example from [`ical_holidays`](crate::ical_holidays).
    pub fn holidays(mut self, dates: impl IntoIterator<Item = NaiveDate>) -> Self {
        self.holidays.extend(dates);
        self
    }

    /// Checks everything and builds the calendar.
    ///
    /// # Errors
    ///
    /// [`SupportError::UnknownTimeZone`], [`SupportError::InvalidTimeOfDay`],
    /// [`SupportError::InvertedInterval`], [`SupportError::OverlappingIntervals`], or
    /// [`SupportError::NoWorkingTime`] when no weekday has working hours.
    pub fn build(self) -> Result<BusinessCalendar> {
        let mut hours = Vec::with_capacity(self.hours.len());
        for (weekday, start, end) in &self.hours {
            hours.push((
                *weekday,
                WorkingInterval {
                    start: start.parse()?,
                    end: end.parse()?,
                },
            ));
        }
        BusinessCalendar::from_parts(&self.timezone, hours, self.holidays)
    }
}

/// A weekly pattern of working intervals in an IANA time zone, with holidays.
///
/// ```
/// use chrono::{NaiveDate, TimeZone, Utc, Weekday};
/// use dotmac_support::BusinessCalendar;
///
/// let calendar = BusinessCalendar::builder("Europe/Berlin")
///     .weekdays("09:00", "12:00")
///     .weekdays("13:00", "17:00")
///     .holiday(NaiveDate::from_ymd_opt(2026, 12, 25).unwrap())
///     .build()?;
/// // Thursday 24 Dec 2026, 16:00 Berlin (15:00 UTC): one working hour left that day, then the
/// // holiday and the weekend; the remaining 60 minutes run on Monday from 09:00 (08:00 UTC).
/// let from = Utc.with_ymd_and_hms(2026, 12, 24, 15, 0, 0).unwrap();
/// let due = calendar.add_working_minutes(from, 120)?;
/// assert_eq!(due, Utc.with_ymd_and_hms(2026, 12, 28, 9, 0, 0).unwrap());
/// assert_eq!(calendar.working_minutes_between(from, due)?, 120);
/// # Ok::<(), dotmac_support::SupportError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CalendarSpec", into = "CalendarSpec")]
pub struct BusinessCalendar {
    zone: Tz,
    /// Monday first; each day's intervals sorted and disjoint, in minutes.
    week: [Vec<(u16, u16)>; 7],
    day_secs: [i64; 7],
    week_secs: i64,
    /// Sorted, without duplicates: binary-searched.
    holidays: Vec<NaiveDate>,
    /// The same holidays as local day numbers (days since 1970-01-01).
    holiday_days: Vec<i64>,
    /// The zone's UTC offsets, precomputed once per zone.
    table: Arc<ZoneTable>,
}

#[derive(Clone, Copy)]
enum Edge {
    Start,
    End,
}

impl BusinessCalendar {
    /// Starts a calendar in the IANA zone `timezone` (checked in `build`).
    pub fn builder(timezone: &str) -> CalendarBuilder {
        CalendarBuilder {
            timezone: timezone.to_owned(),
            hours: Vec::new(),
            holidays: Vec::new(),
        }
    }

    /// A calendar open around the clock, every day, in UTC: working time equals calendar time.
    pub fn always_open() -> Self {
        let day = vec![(0, MINUTES_PER_DAY)];
        BusinessCalendar {
            zone: chrono_tz::UTC,
            week: [
                day.clone(),
                day.clone(),
                day.clone(),
                day.clone(),
                day.clone(),
                day.clone(),
                day,
            ],
            day_secs: [DAY_SECS; 7],
            week_secs: WEEK_SECS,
            holidays: Vec::new(),
            holiday_days: Vec::new(),
            table: zone_table(chrono_tz::UTC),
        }
    }

    fn from_parts(
        timezone: &str,
        hours: Vec<(Weekday, WorkingInterval)>,
        mut holidays: Vec<NaiveDate>,
    ) -> Result<Self> {
        let zone: Tz = timezone
            .parse()
            .map_err(|_| SupportError::UnknownTimeZone(timezone.to_owned()))?;
        let mut week: [Vec<(u16, u16)>; 7] = Default::default();
        for (weekday, interval) in hours {
            if interval.end <= interval.start {
                return Err(SupportError::InvertedInterval {
                    weekday: weekday.to_string(),
                    start: interval.start.to_string(),
                    end: interval.end.to_string(),
                });
            }
            if let Some(day) = week.get_mut(weekday.num_days_from_monday() as usize) {
                day.push((interval.start.0, interval.end.0));
            }
        }
        let mut day_secs = [0_i64; 7];
        for (index, day) in week.iter_mut().enumerate() {
            day.sort_unstable();
            for pair in day.windows(2) {
                if let [(s1, e1), (s2, e2)] = pair
                    && s2 < e1
                {
                    return Err(SupportError::OverlappingIntervals {
                        weekday: weekday_name(index),
                        first: format!("{}-{}", TimeOfDay(*s1), TimeOfDay(*e1)),
                        second: format!("{}-{}", TimeOfDay(*s2), TimeOfDay(*e2)),
                    });
                }
            }
            if let Some(slot) = day_secs.get_mut(index) {
                *slot = day.iter().map(|&(s, e)| i64::from(e - s) * 60).sum();
            }
        }
        let week_secs = day_secs.iter().sum();
        if week_secs == 0 {
            return Err(SupportError::NoWorkingTime);
        }
        holidays.sort_unstable();
        holidays.dedup();
        Ok(BusinessCalendar {
            zone,
            week,
            day_secs,
            week_secs,
            holiday_days: holidays.iter().map(|d| day_number(*d)).collect(),
            holidays,
            table: zone_table(zone),
        })
    }

    /// The calendar's time zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The holidays, sorted.
    pub fn holiday_dates(&self) -> &[NaiveDate] {
        &self.holidays
    }

    /// The working intervals of a weekday, sorted.
    pub fn intervals(&self, weekday: Weekday) -> Vec<WorkingInterval> {
        self.week
            .get(weekday.num_days_from_monday() as usize)
            .map(|day| {
                day.iter()
                    .map(|&(s, e)| WorkingInterval {
                        start: TimeOfDay(s),
                        end: TimeOfDay(e),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Working minutes in a week without holidays.
    pub fn weekly_minutes(&self) -> u32 {
        u32::try_from(self.week_secs / 60).unwrap_or(u32::MAX)
    }

    /// Whether `date` is a holiday.
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        self.holidays.binary_search(&date).is_ok()
    }

    /// The same calendar with a different set of holidays (the weekly pattern and zone stay).
    pub fn with_holidays(&self, holidays: impl IntoIterator<Item = NaiveDate>) -> Self {
        let mut holidays: Vec<NaiveDate> = holidays.into_iter().collect();
        holidays.sort_unstable();
        holidays.dedup();
        BusinessCalendar {
            holiday_days: holidays.iter().map(|d| day_number(*d)).collect(),
            holidays,
            ..self.clone()
        }
    }

    /// The instant `minutes` working minutes after `from`. A `from` outside working hours
    /// counts from the next opening; with `minutes == 0` the result is that opening (or `from`
    /// itself when it is inside working hours). Sub-second parts of `from` are dropped.
    ///
    /// The result is always the end of a working minute: the minute just before it is working
    /// time, so a due time never lies inside closed hours or a holiday.
    ///
    /// # Errors
    ///
    /// [`SupportError::OutOfRange`] when the result is past the dates `chrono` can represent.
    pub fn add_working_minutes(&self, from: DateTime<Utc>, minutes: u32) -> Result<DateTime<Utc>> {
        let secs = self.add_working_seconds(from.timestamp(), i64::from(minutes) * 60)?;
        DateTime::from_timestamp(secs, 0).ok_or(SupportError::OutOfRange)
    }

    /// Whole working minutes in `[from, to)`; zero when `to` is not after `from`.
    ///
    /// # Errors
    ///
    /// [`SupportError::OutOfRange`] near the ends of `chrono`'s date range.
    pub fn working_minutes_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64> {
        let secs = self.working_seconds_between(from.timestamp(), to.timestamp())?;
        Ok(u64::try_from(secs / 60).unwrap_or(0))
    }

    /// Whether `at` is inside a working interval of a non-holiday.
    ///
    /// # Errors
    ///
    /// [`SupportError::OutOfRange`] near the ends of `chrono`'s date range.
    pub fn is_working_at(&self, at: DateTime<Utc>) -> Result<bool> {
        let t = at.timestamp();
        Ok(self.working_seconds_between(t, t.saturating_add(1))? == 1)
    }

    /// The first working instant at or after `at`.
    ///
    /// # Errors
    ///
    /// [`SupportError::OutOfRange`] when there is none before the end of `chrono`'s range.
    pub fn next_opening(&self, at: DateTime<Utc>) -> Result<DateTime<Utc>> {
        self.add_working_minutes(at, 0)
    }

    fn local_to_utc(&self, local: NaiveDateTime, edge: Edge) -> Result<i64> {
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(t) => Ok(t.timestamp()),
            LocalResult::Ambiguous(first, second) => Ok(match edge {
                Edge::Start => first.timestamp(),
                Edge::End => second.timestamp(),
            }),
            LocalResult::None => GapInfo::new(&local, &self.zone)
                .and_then(|gap| gap.end)
                .map(|t| t.timestamp())
                .ok_or(SupportError::OutOfRange),
        }
    }

    /// The UTC instant of a local date's midnight, through the time-zone database.
    fn midnight_slow(&self, day: i64) -> Result<i64> {
        self.local_to_utc(
            date_of_day(day)?.and_time(chrono::NaiveTime::MIN),
            Edge::Start,
        )
    }

    fn local_day_of(&self, secs: i64) -> Result<i64> {
        let offset = match self.table.span(secs) {
            Some(span) => self.table.offset(span),
            None => {
                let utc = DateTime::from_timestamp(secs, 0).ok_or(SupportError::OutOfRange)?;
                i64::from(
                    self.zone
                        .offset_from_utc_datetime(&utc.naive_utc())
                        .fix()
                        .local_minus_utc(),
                )
            }
        };
        Ok((secs + offset).div_euclid(DAY_SECS))
    }

    fn day_intervals(&self, day: i64) -> &[(u16, u16)] {
        if self.holiday_days.binary_search(&day).is_ok() {
            return &[];
        }
        self.week.get(weekday_index(day)).map_or(&[], Vec::as_slice)
    }

    /// The working time of local day `day` as disjoint UTC pieces in time order.
    ///
    /// On a day with a transition the pieces of different wall intervals can interleave: in an
    /// autumn fold, 00:00-02:01 and 02:02-02:03 each occur partly before and partly after the
    /// clocks go back, so the pieces are sorted before anyone walks them.
    fn day_pieces(&self, day: i64, bounds: &DayBounds, out: &mut Pieces) -> Result<()> {
        out.items.clear();
        for &interval in self.day_intervals(day) {
            self.interval_pieces(day, interval, bounds, out)?;
        }
        if !bounds.fast {
            out.items.sort_unstable();
        }
        Ok(())
    }

    /// The UTC pieces of one working interval of local day `day`: exactly the instants whose
    /// local wall time lies in the interval (one piece on an ordinary day; a transition can cut
    /// it in two, and a fold can make the same wall minutes count twice).
    fn interval_pieces(
        &self,
        day: i64,
        (start, end): (u16, u16),
        bounds: &DayBounds,
        out: &mut Pieces,
    ) -> Result<()> {
        let (s, e) = (i64::from(start) * 60, i64::from(end) * 60);
        if bounds.fast {
            out.push(bounds.midnight + s, bounds.midnight + e);
            return Ok(());
        }
        let local = day * DAY_SECS;
        let table = &self.table;
        if let (Some(first), Some(last)) = (
            table.span(local - 2 * DAY_SECS),
            table.span(local + 3 * DAY_SECS),
        ) {
            for span in first..=last {
                let (span_start, span_end) = table.bounds(span);
                let offset = table.offset(span);
                out.push(
                    (local + s - offset).max(span_start),
                    (local + e - offset).min(span_end),
                );
            }
            return Ok(());
        }
        // Outside the precomputed years: one interval through the time-zone database.
        let date = date_of_day(day)?;
        let at = |minute: u16| {
            date.and_time(chrono::NaiveTime::MIN) + chrono::Duration::minutes(i64::from(minute))
        };
        let s = if start == 0 {
            bounds.midnight
        } else {
            self.local_to_utc(at(start), Edge::Start)?
        };
        let e = if end >= MINUTES_PER_DAY {
            bounds.next_midnight
        } else {
            self.local_to_utc(at(end), Edge::End)?
        };
        out.push(s, e);
        Ok(())
    }

    /// Working seconds of the 7 local days from `day`, valid only for a week without a
    /// time-zone transition.
    fn plain_week_secs(&self, day: i64) -> i64 {
        let from = self.holiday_days.partition_point(|h| *h < day);
        let to = self.holiday_days.partition_point(|h| *h < day + 7);
        let off: i64 = self
            .holiday_days
            .get(from..to)
            .unwrap_or(&[])
            .iter()
            .map(|h| self.day_secs.get(weekday_index(*h)).copied().unwrap_or(0))
            .sum();
        self.week_secs - off
    }

    pub(crate) fn add_working_seconds(&self, from: i64, mut remaining: i64) -> Result<i64> {
        let mut walker = Walker::new(self, from);
        let mut pieces = Pieces::default();
        let mut day = self.local_day_of(from)?;
        let last_day = day.saturating_add(MAX_WORKING_TIME_SPAN_DAYS);
        let mut t = from;
        loop {
            if day > last_day {
                return Err(SupportError::SpanTooLong {
                    max_days: MAX_WORKING_TIME_SPAN_DAYS,
                });
            }
            let bounds = walker.bounds(day)?;
            if remaining > 0 && t <= bounds.midnight {
                // Whole weeks inside one offset span: subtract them in one step.
                let mut midnight = bounds.midnight;
                while midnight + WEEK_SECS < bounds.clear_until {
                    let secs = self.plain_week_secs(day);
                    if remaining <= secs {
                        break;
                    }
                    remaining -= secs;
                    day += 7;
                    midnight += WEEK_SECS;
                }
                if midnight != bounds.midnight {
                    t = midnight;
                    continue;
                }
            }
            self.day_pieces(day, &bounds, &mut pieces)?;
            for &(start, end) in pieces.as_slice() {
                if end <= t {
                    continue;
                }
                let start = start.max(t);
                let available = end - start;
                if remaining <= available && (remaining > 0 || available > 0) {
                    return Ok(start + remaining);
                }
                remaining -= available;
                t = end;
            }
            day += 1;
        }
    }

    pub(crate) fn working_seconds_between(&self, from: i64, to: i64) -> Result<i64> {
        if to <= from {
            return Ok(0);
        }
        if to.saturating_sub(from) > MAX_WORKING_TIME_SPAN_DAYS.saturating_mul(DAY_SECS) {
            return Err(SupportError::SpanTooLong {
                max_days: MAX_WORKING_TIME_SPAN_DAYS,
            });
        }
        let mut walker = Walker::new(self, from);
        let mut pieces = Pieces::default();
        let mut day = self.local_day_of(from)?;
        let mut t = from;
        let mut total = 0;
        while t < to {
            let bounds = walker.bounds(day)?;
            if t <= bounds.midnight {
                let mut midnight = bounds.midnight;
                while midnight + WEEK_SECS < bounds.clear_until && midnight + WEEK_SECS <= to {
                    total += self.plain_week_secs(day);
                    day += 7;
                    midnight += WEEK_SECS;
                }
                if midnight != bounds.midnight {
                    t = midnight;
                    continue;
                }
            }
            self.day_pieces(day, &bounds, &mut pieces)?;
            for &(start, end) in pieces.as_slice() {
                let start = start.max(t);
                let end = end.min(to);
                if end > start {
                    total += end - start;
                }
            }
            day += 1;
            t = t.max(bounds.next_midnight);
        }
        Ok(total)
    }
}

/// Days since 1970-01-01 of a date.
fn day_number(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - 719_163
}

fn date_of_day(day: i64) -> Result<NaiveDate> {
    i32::try_from(day + 719_163)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or(SupportError::OutOfRange)
}

/// Monday = 0; 1970-01-01 was a Thursday.
fn weekday_index(day: i64) -> usize {
    usize::try_from((day + 3).rem_euclid(7)).unwrap_or(0)
}

/// The UTC pieces of one local day's working time (an ordinary day has one per interval); the
/// buffer is reused from day to day.
#[derive(Default)]
struct Pieces {
    items: Vec<(i64, i64)>,
}

impl Pieces {
    fn push(&mut self, start: i64, end: i64) {
        if end > start {
            self.items.push((start, end));
        }
    }

    fn as_slice(&self) -> &[(i64, i64)] {
        &self.items
    }
}

/// The UTC bounds of one local day.
struct DayBounds {
    midnight: i64,
    next_midnight: i64,
    /// No transition inside the day: intervals are plain offsets from midnight.
    fast: bool,
    /// No offset change before this instant (`i64::MIN` when unknown): weeks that end before it
    /// can be skipped whole.
    clear_until: i64,
}

/// Walks local days forward, keeping its place in the zone's offset table.
struct Walker<'a> {
    calendar: &'a BusinessCalendar,
    span: usize,
}

impl<'a> Walker<'a> {
    fn new(calendar: &'a BusinessCalendar, from: i64) -> Self {
        let span = calendar.table.span(from).unwrap_or(0);
        Walker { calendar, span }
    }

    fn bounds(&mut self, day: i64) -> Result<DayBounds> {
        let table = &self.calendar.table;
        let local = day * DAY_SECS;
        while self.span < table.offsets.len() {
            let (start, end) = table.bounds(self.span);
            let midnight = local - table.offset(self.span);
            if midnight >= end && self.span + 1 < table.offsets.len() {
                self.span += 1;
                continue;
            }
            // A day strictly inside one span has no transition: 24 hours from midnight.
            if midnight >= start && midnight + DAY_SECS < end {
                return Ok(DayBounds {
                    midnight,
                    next_midnight: midnight + DAY_SECS,
                    fast: true,
                    clear_until: end,
                });
            }
            break;
        }
        Ok(DayBounds {
            midnight: self.calendar.midnight_slow(day)?,
            next_midnight: self.calendar.midnight_slow(day + 1)?,
            fast: false,
            clear_until: i64::MIN,
        })
    }
}

/// A zone's UTC offsets from 1970 to 2100 as spans: `offsets[i]` holds from `starts[i]` until
/// `starts[i + 1]` (or `end`). Built once per zone from chrono-tz and shared, so that working-time
/// arithmetic needs no time-zone lookup on ordinary days.
#[derive(PartialEq, Eq)]
struct ZoneTable {
    starts: Vec<i64>,
    offsets: Vec<i64>,
    end: i64,
}

impl fmt::Debug for ZoneTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZoneTable({} spans)", self.offsets.len())
    }
}

impl ZoneTable {
    const FIRST: i64 = 0;
    /// 2100-01-01T00:00:00Z.
    const LAST: i64 = 4_102_444_800;

    fn build(zone: Tz) -> ZoneTable {
        let offset_at = |t: i64| -> Option<i64> {
            let utc = DateTime::from_timestamp(t, 0)?;
            Some(i64::from(
                zone.offset_from_utc_datetime(&utc.naive_utc())
                    .fix()
                    .local_minus_utc(),
            ))
        };
        let mut table = ZoneTable {
            starts: Vec::new(),
            offsets: Vec::new(),
            end: Self::LAST,
        };
        let Some(first) = offset_at(Self::FIRST) else {
            table.end = Self::FIRST;
            return table;
        };
        table.starts.push(Self::FIRST);
        table.offsets.push(first);
        let (mut t, mut current) = (Self::FIRST, first);
        // Sample daily (no zone changes its offset twice within a day), then bisect each change
        // to the second.
        while t < Self::LAST {
            let next = (t + DAY_SECS).min(Self::LAST);
            if offset_at(next) == Some(current) {
                t = next;
                continue;
            }
            let (mut same, mut changed) = (t, next);
            while changed - same > 1 {
                let mid = same + (changed - same) / 2;
                if offset_at(mid) == Some(current) {
                    same = mid;
                } else {
                    changed = mid;
                }
            }
            let Some(offset) = offset_at(changed) else {
                break;
            };
            table.starts.push(changed);
            table.offsets.push(offset);
            current = offset;
            t = changed;
        }
        table
    }

    /// The span holding `t`, if `t` is inside the table.
    fn span(&self, t: i64) -> Option<usize> {
        if t < self.starts.first().copied()? || t >= self.end {
            return None;
        }
        self.starts.partition_point(|s| *s <= t).checked_sub(1)
    }

    fn offset(&self, span: usize) -> i64 {
        self.offsets.get(span).copied().unwrap_or(0)
    }

    fn bounds(&self, span: usize) -> (i64, i64) {
        let start = self.starts.get(span).copied().unwrap_or(i64::MAX);
        let end = self.starts.get(span + 1).copied().unwrap_or(self.end);
        (start, end)
    }
}

/// The shared table of a zone (built on first use, then reused by every calendar in the zone).
fn zone_table(zone: Tz) -> Arc<ZoneTable> {
    static TABLES: OnceLock<Mutex<HashMap<Tz, Arc<ZoneTable>>>> = OnceLock::new();
    let tables = TABLES.get_or_init(Mutex::default);
    // The map only ever gains complete entries: a poisoned lock still holds valid tables.
    let mut guard = tables.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(
        guard
            .entry(zone)
            .or_insert_with(|| Arc::new(ZoneTable::build(zone))),
    )
}

fn weekday_name(index: usize) -> String {
    ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .get(index)
        .copied()
        .unwrap_or("?")
        .to_owned()
}

impl TryFrom<CalendarSpec> for BusinessCalendar {
    type Error = SupportError;

    fn try_from(spec: CalendarSpec) -> Result<Self> {
        let hours = spec
            .hours
            .into_iter()
            .flat_map(|day| day.intervals.into_iter().map(move |i| (day.weekday, i)))
            .collect();
        BusinessCalendar::from_parts(&spec.timezone, hours, spec.holidays)
    }
}

impl From<BusinessCalendar> for CalendarSpec {
    fn from(calendar: BusinessCalendar) -> CalendarSpec {
        let hours = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ]
        .into_iter()
        .map(|weekday| DayHours {
            weekday,
            intervals: calendar.intervals(weekday),
        })
        .filter(|day| !day.intervals.is_empty())
        .collect();
        CalendarSpec {
            timezone: calendar.zone.name().to_owned(),
            hours,
            holidays: calendar.holidays,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    fn berlin_office() -> BusinessCalendar {
        BusinessCalendar::builder("Europe/Berlin")
            .weekdays("09:00", "12:00")
            .weekdays("13:00", "17:00")
            .build()
            .unwrap()
    }

    /// Found by the `conformance_case` fuzz target: a ticket created in the year 1013 with its
    /// history in 2026 made the SLA clocks walk a thousand years of a Berlin calendar.
    #[test]
    fn spans_longer_than_the_limit_are_refused_not_walked() {
        let cal = berlin_office();
        let too_long = SupportError::SpanTooLong {
            max_days: MAX_WORKING_TIME_SPAN_DAYS,
        };
        assert_eq!(
            cal.working_minutes_between(utc(1013, 1, 9, 14, 0), utc(2026, 1, 9, 14, 0)),
            Err(too_long.clone())
        );
        // A target no working week can reach within the limit.
        assert_eq!(
            cal.add_working_minutes(utc(2026, 1, 9, 14, 0), u32::MAX),
            Err(too_long)
        );
        // Up to the limit it still counts: 99 years of the same office.
        let from = utc(2026, 1, 5, 0, 0);
        let to = utc(2125, 1, 5, 0, 0);
        let minutes = cal.working_minutes_between(from, to).unwrap();
        assert!(minutes > 99 * 50 * 5 * 7 * 60, "{minutes}");
        assert!(
            cal.add_working_minutes(from, u32::try_from(minutes).unwrap())
                .unwrap()
                <= to
        );
    }

    #[test]
    fn time_of_day_parses_and_refuses() {
        assert_eq!("09:30".parse::<TimeOfDay>().unwrap().minutes(), 570);
        assert_eq!("24:00".parse::<TimeOfDay>().unwrap(), TimeOfDay::END_OF_DAY);
        for bad in ["24:01", "9", "09:60", "aa:bb", "-1:00", "09:5"] {
            assert_eq!(
                bad.parse::<TimeOfDay>(),
                Err(SupportError::InvalidTimeOfDay(bad.into()))
            );
        }
    }

    #[test]
    fn bad_calendars_are_typed_errors() {
        assert_eq!(
            BusinessCalendar::builder("Mars/Olympus")
                .weekdays("09:00", "17:00")
                .build(),
            Err(SupportError::UnknownTimeZone("Mars/Olympus".into()))
        );
        assert_eq!(
            BusinessCalendar::builder("UTC")
                .hours(Weekday::Mon, "17:00", "09:00")
                .build(),
            Err(SupportError::InvertedInterval {
                weekday: "Mon".into(),
                start: "17:00".into(),
                end: "09:00".into()
            })
        );
        assert_eq!(
            BusinessCalendar::builder("UTC")
                .hours(Weekday::Tue, "09:00", "13:00")
                .hours(Weekday::Tue, "12:00", "17:00")
                .build(),
            Err(SupportError::OverlappingIntervals {
                weekday: "Tue".into(),
                first: "09:00-13:00".into(),
                second: "12:00-17:00".into()
            })
        );
        assert_eq!(
            BusinessCalendar::builder("UTC").build(),
            Err(SupportError::NoWorkingTime)
        );
    }

    #[test]
    fn lunch_break_and_weekend_are_skipped() {
        let cal = berlin_office();
        // Friday 2026-03-06 11:30 Berlin (10:30 UTC, winter time): 30 min before lunch, 4 h after,
        // then Monday.
        let from = utc(2026, 3, 6, 10, 30);
        assert_eq!(
            cal.add_working_minutes(from, 30).unwrap(),
            utc(2026, 3, 6, 11, 0)
        );
        assert_eq!(
            cal.add_working_minutes(from, 31).unwrap(),
            utc(2026, 3, 6, 12, 1)
        );
        assert_eq!(
            cal.add_working_minutes(from, 270).unwrap(),
            utc(2026, 3, 6, 16, 0)
        );
        assert_eq!(
            cal.add_working_minutes(from, 271).unwrap(),
            utc(2026, 3, 9, 8, 1)
        );
        assert_eq!(
            cal.working_minutes_between(from, utc(2026, 3, 9, 8, 1))
                .unwrap(),
            271
        );
    }

    #[test]
    fn whole_weeks_are_skipped_exactly() {
        let cal = berlin_office();
        let from = utc(2026, 1, 5, 8, 0); // Monday 09:00 Berlin
        // Five weeks of 35 hours, ending Friday 17:00 of the fifth week.
        let due = cal.add_working_minutes(from, 5 * 35 * 60).unwrap();
        assert_eq!(due, utc(2026, 2, 6, 16, 0));
        assert_eq!(cal.working_minutes_between(from, due).unwrap(), 5 * 35 * 60);
    }

    #[test]
    fn daylight_saving_days_have_real_lengths() {
        // Open around the clock in Berlin: 29 March 2026 has 23 hours, 25 October 2026 has 25.
        let cal = BusinessCalendar::builder("Europe/Berlin")
            .hours(Weekday::Sun, "00:00", "24:00")
            .build()
            .unwrap();
        let spring = utc(2026, 3, 28, 23, 0); // Sunday 00:00 CET
        assert_eq!(
            cal.working_minutes_between(spring, utc(2026, 4, 1, 0, 0))
                .unwrap(),
            23 * 60
        );
        let autumn = utc(2026, 10, 24, 22, 0); // Sunday 00:00 CEST
        assert_eq!(
            cal.working_minutes_between(autumn, utc(2026, 10, 28, 0, 0))
                .unwrap(),
            25 * 60
        );
        assert_eq!(
            cal.add_working_minutes(autumn, 25 * 60).unwrap(),
            utc(2026, 10, 25, 23, 0)
        );
        // An interval across the gap: 01:00-04:00 local is two real hours on the spring day.
        let cal = BusinessCalendar::builder("Europe/Berlin")
            .hours(Weekday::Sun, "01:00", "04:00")
            .build()
            .unwrap();
        assert_eq!(
            cal.working_minutes_between(spring, utc(2026, 4, 1, 0, 0))
                .unwrap(),
            120
        );
        // Opening inside the gap opens when the clocks jump to 03:00 CEST (01:00 UTC).
        let cal = BusinessCalendar::builder("Europe/Berlin")
            .hours(Weekday::Sun, "02:30", "05:00")
            .build()
            .unwrap();
        assert_eq!(cal.next_opening(spring).unwrap(), utc(2026, 3, 29, 1, 0));
        // An interval ending inside the fold: 00:00-02:30 wall time is 150 minutes of summer
        // time plus the repeated 02:00-02:30 in winter time.
        let cal = BusinessCalendar::builder("Europe/Berlin")
            .hours(Weekday::Sun, "00:00", "02:30")
            .build()
            .unwrap();
        assert_eq!(
            cal.working_minutes_between(autumn, utc(2026, 10, 26, 0, 0))
                .unwrap(),
            180
        );
        assert_eq!(
            cal.add_working_minutes(autumn, 151).unwrap(),
            utc(2026, 10, 25, 1, 1)
        );
    }

    #[test]
    fn intervals_interleaved_by_the_fold_are_walked_in_time_order() {
        // 00:00-02:01 and 02:02-02:03 on the autumn Sunday: both end inside the repeated hour,
        // so in real time the day runs 22:00-00:01, 00:02-00:03 (summer), then 01:00-01:01,
        // 01:02-01:03 UTC (winter). Found by the property tests.
        let cal = BusinessCalendar::builder("Europe/Berlin")
            .hours(Weekday::Sun, "00:00", "02:01")
            .hours(Weekday::Sun, "02:02", "02:03")
            .build()
            .unwrap();
        let autumn = utc(2022, 10, 29, 22, 0); // Sunday 30 October 2022, 00:00 CEST
        let day_end = utc(2022, 10, 31, 0, 0);
        assert_eq!(cal.working_minutes_between(autumn, day_end).unwrap(), 124);
        assert_eq!(
            cal.add_working_minutes(autumn, 122).unwrap(),
            utc(2022, 10, 30, 0, 3)
        );
        assert_eq!(
            cal.add_working_minutes(autumn, 123).unwrap(),
            utc(2022, 10, 30, 1, 1)
        );
        assert_eq!(
            cal.add_working_minutes(autumn, 124).unwrap(),
            utc(2022, 10, 30, 1, 3)
        );
        for minutes in 0..=124 {
            let due = cal.add_working_minutes(autumn, minutes).unwrap();
            assert_eq!(
                cal.working_minutes_between(autumn, due).unwrap(),
                u64::from(minutes)
            );
        }
    }

    #[test]
    fn holidays_do_not_count() {
        let cal = berlin_office().with_holidays([NaiveDate::from_ymd_opt(2026, 3, 9).unwrap()]);
        let from = utc(2026, 3, 6, 15, 0); // Friday 16:00 Berlin
        assert_eq!(
            cal.add_working_minutes(from, 61).unwrap(),
            utc(2026, 3, 10, 8, 1)
        );
        assert!(!cal.is_working_at(utc(2026, 3, 9, 9, 0)).unwrap());
        assert!(cal.is_working_at(utc(2026, 3, 10, 9, 0)).unwrap());
    }

    #[test]
    fn serde_round_trip_validates() {
        let cal = berlin_office().with_holidays([NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()]);
        let json = serde_json::to_string(&cal).unwrap();
        let back: BusinessCalendar = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cal);
        let bad = json.replace("Europe/Berlin", "Nowhere/Land");
        assert!(serde_json::from_str::<BusinessCalendar>(&bad).is_err());
    }
}
