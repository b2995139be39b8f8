//! iCalendar (RFC 5545) holiday import, with limits on what a feed may cost.
//!
//! A feed comes from outside (a URL an operator pastes, a file a customer uploads), so nothing
//! in it may abort the process or allocate without bound. [`IcalLimits`] bounds the four
//! things a feed controls: its size, how deeply its components nest (the `icalendar` parser
//! recurses once per level, so depth is checked on the raw text before the parser sees it), how
//! many days one event spans, and how many dates the whole feed expands to. Each refusal is
//! [`SupportError::IcalLimitExceeded`] naming the limit ([`IcalLimit`]).

use chrono::{Datelike, Days, NaiveDate};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SupportError};
use crate::vocab::IcalLimit;

/// What an iCalendar import may cost. The defaults read any real public-holiday feed (a few
/// hundred events over decades) and refuse hostile ones in microseconds:
///
/// | limit | default | why |
/// |---|---|---|
/// | [`max_bytes`](Self::max_bytes) | 1 MiB | national holiday feeds are 10–200 KB |
/// | [`max_depth`](Self::max_depth) | 8 | `VCALENDAR` › `VEVENT` › `VALARM` is 3; at most [`IcalLimits::DEPTH_CEILING`] |
/// | [`max_event_days`](Self::max_event_days) | 366 | a closure longer than a year is not a holiday |
/// | [`max_expanded_days`](Self::max_expanded_days) | 100 000 | 270 years of every day; 400 KB of dates |
///
/// ```
/// use dotmac_support::IcalLimits;
///
/// let limits = IcalLimits::default().with_max_bytes(64 * 1024).with_max_event_days(31);
/// assert_eq!(limits.max_bytes(), 65_536);
/// assert_eq!(limits.max_depth(), 8);
/// // Depth is clamped: the parser recurses once per level, on the caller's stack.
/// assert_eq!(IcalLimits::default().with_max_depth(10_000).max_depth(), IcalLimits::DEPTH_CEILING);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "RawLimits", into = "RawLimits")]
pub struct IcalLimits {
    max_bytes: usize,
    max_depth: usize,
    max_event_days: u32,
    max_expanded_days: usize,
}

/// The serialized form; depth is clamped on the way in.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    max_bytes: usize,
    max_depth: usize,
    max_event_days: u32,
    max_expanded_days: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        IcalLimits::default().into()
    }
}

impl From<RawLimits> for IcalLimits {
    fn from(raw: RawLimits) -> Self {
        IcalLimits::default()
            .with_max_bytes(raw.max_bytes)
            .with_max_depth(raw.max_depth)
            .with_max_event_days(raw.max_event_days)
            .with_max_expanded_days(raw.max_expanded_days)
    }
}

impl From<IcalLimits> for RawLimits {
    fn from(limits: IcalLimits) -> Self {
        RawLimits {
            max_bytes: limits.max_bytes,
            max_depth: limits.max_depth,
            max_event_days: limits.max_event_days,
            max_expanded_days: limits.max_expanded_days,
        }
    }
}

impl Default for IcalLimits {
    fn default() -> Self {
        IcalLimits {
            max_bytes: 1024 * 1024,
            max_depth: 8,
            max_event_days: 366,
            max_expanded_days: 100_000,
        }
    }
}

impl IcalLimits {
    /// The highest [`max_depth`](Self::max_depth) that can be set. The `icalendar` parser
    /// uses about 8 KB of stack per level in a debug build (less optimised), so 32 levels stay
    /// far inside even a 2 MiB worker thread's stack.
    pub const DEPTH_CEILING: usize = 32;

    /// The largest feed accepted, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
    /// The deepest component nesting accepted (`VCALENDAR` alone is 1).
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }
    /// The longest event accepted, in days from `DTSTART` to `DTEND`.
    pub fn max_event_days(&self) -> u32 {
        self.max_event_days
    }
    /// The most dates a feed may expand to, counting every day of every occurrence before
    /// duplicates are removed.
    pub fn max_expanded_days(&self) -> usize {
        self.max_expanded_days
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    #[must_use]
    pub fn with_max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }
    /// Sets [`max_depth`](Self::max_depth), clamped to [`IcalLimits::DEPTH_CEILING`].
    #[must_use]
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth.min(Self::DEPTH_CEILING);
        self
    }
    /// Sets [`max_event_days`](Self::max_event_days).
    #[must_use]
    pub fn with_max_event_days(mut self, days: u32) -> Self {
        self.max_event_days = days;
        self
    }
    /// Sets [`max_expanded_days`](Self::max_expanded_days).
    #[must_use]
    pub fn with_max_expanded_days(mut self, days: usize) -> Self {
        self.max_expanded_days = days;
        self
    }

    fn exceeded(limit: IcalLimit, max: usize, found: usize) -> SupportError {
        SupportError::IcalLimitExceeded {
            limit,
            max: u64::try_from(max).unwrap_or(u64::MAX),
            found: u64::try_from(found).unwrap_or(u64::MAX),
        }
    }

    /// Size and nesting, on the raw text, before the recursive parser runs.
    fn check_text(&self, feed: &str) -> Result<()> {
        if feed.len() > self.max_bytes {
            return Err(Self::exceeded(
                IcalLimit::FeedBytes,
                self.max_bytes,
                feed.len(),
            ));
        }
        // The parser unfolds continuation lines first, so a `BEGIN` folded over two lines is
        // one to it: scan what it will read.
        let unfolded = icalendar::parser::unfold(feed);
        let mut open: Vec<&str> = Vec::new();
        for line in unfolded.split('\n') {
            let line = line.trim_start();
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(name) = strip_prefix_ignore_case(line, "BEGIN:") {
                open.push(component_name(name));
                if open.len() > self.max_depth {
                    return Err(Self::exceeded(
                        IcalLimit::NestingDepth,
                        self.max_depth,
                        open.len(),
                    ));
                }
            } else if let Some(name) = strip_prefix_ignore_case(line, "END:") {
                // Only a matching END closes (the parser fails on any other), so the depth
                // counted here is never below the parser's.
                if open.last() == Some(&component_name(name)) {
                    open.pop();
                }
            }
        }
        Ok(())
    }
}

fn strip_prefix_ignore_case<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| line.get(prefix.len()..))
        .flatten()
}

/// The component name as the parser reads it: the run of key characters.
fn component_name(rest: &str) -> &str {
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || matches!(c, '.' | ',' | '/' | '_' | '-')))
        .unwrap_or(rest.len());
    rest.get(..end).unwrap_or(rest)
}

/// Reads the holiday dates of an iCalendar (RFC 5545) feed such as a public-holiday calendar,
/// within the default [`IcalLimits`]; see [`ical_holidays_with`].
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_support::ical_holidays;
///
/// let feed = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
///             BEGIN:VEVENT\r\nUID:1\r\nSUMMARY:Christmas\r\n\
///             DTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261227\r\nEND:VEVENT\r\n\
///             END:VCALENDAR\r\n";
/// let through = NaiveDate::from_ymd_opt(2030, 1, 1).unwrap();
/// let days = ical_holidays(feed, chrono_tz::Europe::Berlin, through)?;
/// assert_eq!(days, [NaiveDate::from_ymd_opt(2026, 12, 25).unwrap(),
///                   NaiveDate::from_ymd_opt(2026, 12, 26).unwrap()]);
/// # Ok::<(), dotmac_support::SupportError>(())
/// ```
///
/// # Errors
///
/// As [`ical_holidays_with`].
pub fn ical_holidays(feed: &str, zone: Tz, through: NaiveDate) -> Result<Vec<NaiveDate>> {
    ical_holidays_with(feed, zone, through, &IcalLimits::default())
}

/// Reads the holiday dates of an iCalendar (RFC 5545) feed within `limits`.
///
/// Every `VEVENT` contributes the local dates from its `DTSTART` up to (excluding) its `DTEND`
/// (one day when `DTEND` is absent). All-day events (`VALUE=DATE`) give their dates as written;
/// a timed event gives its start's date (a UTC time is converted to `zone` first). A yearly
/// recurrence (`RRULE:FREQ=YEARLY`, optionally with `COUNT`, `UNTIL` or `INTERVAL`) is expanded
/// up to and including `through`; any other recurrence rule is refused rather than silently
/// ignored.
///
/// Size and nesting are checked on the raw text before parsing; parsing then uses the
/// `icalendar` crate, which unfolds long lines and reads real-world feeds. Event length and
/// the number of expanded dates are checked before any of those dates are stored.
///
/// # Errors
///
/// [`SupportError::IcalLimitExceeded`] naming the first limit exceeded;
/// [`SupportError::Ical`] when the feed does not parse, an event has no usable `DTSTART`, or
/// it uses a recurrence other than a plain yearly one.
pub fn ical_holidays_with(
    feed: &str,
    zone: Tz,
    through: NaiveDate,
    limits: &IcalLimits,
) -> Result<Vec<NaiveDate>> {
    use icalendar::{CalendarComponent, Component, DatePerhapsTime};

    limits.check_text(feed)?;
    let calendar: icalendar::Calendar = feed.parse().map_err(SupportError::Ical)?;
    let to_date = |value: DatePerhapsTime| -> Option<NaiveDate> {
        match value {
            DatePerhapsTime::Date(date) => Some(date),
            DatePerhapsTime::DateTime(icalendar::CalendarDateTime::Floating(local)) => {
                Some(local.date())
            }
            DatePerhapsTime::DateTime(icalendar::CalendarDateTime::Utc(utc)) => {
                Some(utc.with_timezone(&zone).date_naive())
            }
            DatePerhapsTime::DateTime(icalendar::CalendarDateTime::WithTimezone {
                date_time,
                ..
            }) => Some(date_time.date()),
        }
    };
    let mut dates = Vec::new();
    for component in &calendar.components {
        let CalendarComponent::Event(event) = component else {
            continue;
        };
        let summary = event.get_summary().unwrap_or("?").to_owned();
        let start = event
            .get_start()
            .and_then(to_date)
            .ok_or_else(|| SupportError::Ical(format!("event {summary:?} has no DTSTART")))?;
        let end = event.get_end().and_then(to_date).filter(|end| *end > start);
        let length = end.map_or(1, |end| end.signed_duration_since(start).num_days().max(1));
        let length = u32::try_from(length)
            .ok()
            .filter(|days| *days <= limits.max_event_days)
            .ok_or_else(|| {
                IcalLimits::exceeded(
                    IcalLimit::EventDays,
                    usize::try_from(limits.max_event_days).unwrap_or(usize::MAX),
                    usize::try_from(length).unwrap_or(usize::MAX),
                )
            })?;
        let length_days = usize::try_from(length).unwrap_or(usize::MAX);
        // Occurrences this event may still add without passing the limit (each is `length`
        // dates); one more is refused before any of its dates is stored.
        let room = limits
            .max_expanded_days
            .saturating_sub(dates.len())
            .checked_div(length_days)
            .unwrap_or(0);
        let over = |occurrences: usize| {
            IcalLimits::exceeded(
                IcalLimit::ExpandedDays,
                limits.max_expanded_days,
                occurrences
                    .saturating_mul(length_days)
                    .saturating_add(dates.len()),
            )
        };
        let starts = match event.property_value("RRULE") {
            Some(rule) => yearly_starts(&summary, rule, start, through, room)?
                .ok_or_else(|| over(room.saturating_add(1)))?,
            None if room == 0 => return Err(over(1)),
            None => vec![start],
        };
        for first in starts {
            for offset in 0..length {
                if let Some(date) = first.checked_add_days(Days::new(u64::from(offset))) {
                    dates.push(date);
                }
            }
        }
    }
    dates.sort_unstable();
    dates.dedup();
    Ok(dates)
}

/// The starts of a yearly rule up to `through`; `None`, without building them, when there are
/// more than `room`.
fn yearly_starts(
    summary: &str,
    rule: &str,
    start: NaiveDate,
    through: NaiveDate,
    room: usize,
) -> Result<Option<Vec<NaiveDate>>> {
    let refuse = || {
        SupportError::Ical(format!(
            "event {summary:?}: only plain yearly RRULEs are expanded, got {rule:?}"
        ))
    };
    let mut yearly = false;
    let mut count: Option<u32> = None;
    let mut until: Option<NaiveDate> = None;
    let mut interval: i32 = 1;
    for part in rule.split(';') {
        let (key, value) = part.split_once('=').ok_or_else(refuse)?;
        match key.to_ascii_uppercase().as_str() {
            "FREQ" => yearly = value.eq_ignore_ascii_case("YEARLY"),
            "COUNT" => count = Some(value.parse().map_err(|_| refuse())?),
            "INTERVAL" => interval = value.parse().map_err(|_| refuse())?,
            "UNTIL" => {
                let digits = value.get(..8).ok_or_else(refuse)?;
                until = Some(NaiveDate::parse_from_str(digits, "%Y%m%d").map_err(|_| refuse())?);
            }
            "WKST" => {}
            _ => return Err(refuse()),
        }
    }
    if !yearly || interval < 1 {
        return Err(refuse());
    }
    let last = until.map_or(through, |u| u.min(through));
    let mut starts = Vec::new();
    let mut k: i32 = 0;
    loop {
        if count.is_some_and(|c| u32::try_from(k).unwrap_or(u32::MAX) >= c) {
            break;
        }
        let year = start.year().saturating_add(k.saturating_mul(interval));
        // A 29 February holiday recurs only in leap years (RFC 5545 skips invalid dates).
        if let Some(date) = NaiveDate::from_ymd_opt(year, start.month(), start.day()) {
            if date > last {
                break;
            }
            if starts.len() >= room {
                return Ok(None);
            }
            starts.push(date);
        } else if year > last.year() {
            break;
        }
        k = k.saturating_add(1);
    }
    Ok(Some(starts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, dd: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, dd).unwrap()
    }

    fn feed(events: &str) -> String {
        format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\n{events}END:VCALENDAR\r\n")
    }

    fn exceeded(limit: IcalLimit, max: u64, found: u64) -> Result<Vec<NaiveDate>> {
        Err(SupportError::IcalLimitExceeded { limit, max, found })
    }

    #[test]
    fn ical_feed_with_yearly_rule() {
        let feed = feed(
            "BEGIN:VEVENT\r\nUID:a\r\nSUMMARY:New Year\r\nDTSTART;VALUE=DATE:20250101\r\n\
             RRULE:FREQ=YEARLY\r\nEND:VEVENT\r\n\
             BEGIN:VEVENT\r\nUID:b\r\nSUMMARY:Easter Monday\r\nDTSTART;VALUE=DATE:20260406\r\n\
             DTEND;VALUE=DATE:20260407\r\nEND:VEVENT\r\n",
        );
        let through = d(2027, 6, 1);
        let days = ical_holidays(&feed, chrono_tz::Europe::Berlin, through).unwrap();
        assert_eq!(
            days,
            [d(2025, 1, 1), d(2026, 1, 1), d(2026, 4, 6), d(2027, 1, 1)]
        );
        let monthly = feed.replace("FREQ=YEARLY", "FREQ=MONTHLY");
        assert!(matches!(
            ical_holidays(&monthly, chrono_tz::UTC, through),
            Err(SupportError::Ical(_))
        ));
    }

    #[test]
    fn feed_size_limit_boundary() {
        let feed = feed("BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20260101\r\nEND:VEVENT\r\n");
        let size = feed.len();
        let at = IcalLimits::default().with_max_bytes(size);
        assert_eq!(
            ical_holidays_with(&feed, chrono_tz::UTC, d(2030, 1, 1), &at),
            Ok(vec![d(2026, 1, 1)])
        );
        let under = at.with_max_bytes(size - 1);
        assert_eq!(
            ical_holidays_with(&feed, chrono_tz::UTC, d(2030, 1, 1), &under),
            exceeded(IcalLimit::FeedBytes, size as u64 - 1, size as u64)
        );
    }

    #[test]
    fn nesting_limit_boundary_counts_what_the_parser_reads() {
        // VCALENDAR › VEVENT › VALARM: depth 3.
        let feed = feed(
            "BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20260101\r\n\
             BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT1H\r\nEND:VALARM\r\nEND:VEVENT\r\n\
             BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20260102\r\nEND:VEVENT\r\n",
        );
        let three = IcalLimits::default().with_max_depth(3);
        assert_eq!(
            ical_holidays_with(&feed, chrono_tz::UTC, d(2030, 1, 1), &three),
            Ok(vec![d(2026, 1, 1), d(2026, 1, 2)])
        );
        let two = three.with_max_depth(2);
        assert_eq!(
            ical_holidays_with(&feed, chrono_tz::UTC, d(2030, 1, 1), &two),
            exceeded(IcalLimit::NestingDepth, 2, 3)
        );
        // A BEGIN folded over two lines, or in lower case, is still a level for the parser.
        for hidden in ["BEG\r\n IN:VALARM", "begin:VALARM"] {
            let folded = feed.replacen("BEGIN:VALARM", hidden, 1);
            assert_eq!(
                ical_holidays_with(&folded, chrono_tz::UTC, d(2030, 1, 1), &two),
                exceeded(IcalLimit::NestingDepth, 2, 3),
                "{hidden:?}"
            );
        }
        // A mismatched END closes nothing: it cannot hide the levels after it.
        let sneaky = "BEGIN:VCALENDAR\r\nBEGIN:A\r\nEND:B\r\nBEGIN:A\r\nEND:B\r\n";
        assert_eq!(
            ical_holidays_with(sneaky, chrono_tz::UTC, d(2030, 1, 1), &two),
            exceeded(IcalLimit::NestingDepth, 2, 3)
        );
    }

    #[test]
    fn depth_is_clamped_to_the_ceiling() {
        let limits = IcalLimits::default().with_max_depth(usize::MAX);
        assert_eq!(limits.max_depth(), IcalLimits::DEPTH_CEILING);
        let json = r#"{"max_depth": 1000000}"#;
        let limits: IcalLimits = serde_json::from_str(json).unwrap();
        assert_eq!(limits.max_depth(), IcalLimits::DEPTH_CEILING);
        assert_eq!(limits.max_bytes(), IcalLimits::default().max_bytes());
    }

    #[test]
    fn event_length_limit_boundary() {
        // 1 to 11 January: ten days.
        let feed = feed(
            "BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20260101\r\nDTEND;VALUE=DATE:20260111\r\n\
             END:VEVENT\r\n",
        );
        let ten = IcalLimits::default().with_max_event_days(10);
        let days = ical_holidays_with(&feed, chrono_tz::UTC, d(2030, 1, 1), &ten).unwrap();
        assert_eq!(days.len(), 10);
        assert_eq!(days.last(), Some(&d(2026, 1, 10)));
        assert_eq!(
            ical_holidays_with(
                &feed,
                chrono_tz::UTC,
                d(2030, 1, 1),
                &ten.with_max_event_days(9)
            ),
            exceeded(IcalLimit::EventDays, 9, 10)
        );
    }

    #[test]
    fn expanded_days_limit_boundary() {
        // New Year 2020 to 2029 (ten dates), then a two-day event: twelve dates.
        let feed = feed(
            "BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20200101\r\nRRULE:FREQ=YEARLY\r\nEND:VEVENT\r\n\
             BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20260601\r\nDTEND;VALUE=DATE:20260603\r\n\
             END:VEVENT\r\n",
        );
        let through = d(2029, 12, 31);
        let twelve = IcalLimits::default().with_max_expanded_days(12);
        assert_eq!(
            ical_holidays_with(&feed, chrono_tz::UTC, through, &twelve).map(|v| v.len()),
            Ok(12)
        );
        // The two-day event would make twelve.
        assert_eq!(
            ical_holidays_with(
                &feed,
                chrono_tz::UTC,
                through,
                &twelve.with_max_expanded_days(11)
            ),
            exceeded(IcalLimit::ExpandedDays, 11, 12)
        );
        // The recurrence itself is cut at its tenth occurrence, before it is built.
        assert_eq!(
            ical_holidays_with(
                &feed,
                chrono_tz::UTC,
                through,
                &twelve.with_max_expanded_days(9)
            ),
            exceeded(IcalLimit::ExpandedDays, 9, 10)
        );
    }

    #[test]
    fn the_error_names_the_limit() {
        let error = SupportError::IcalLimitExceeded {
            limit: IcalLimit::NestingDepth,
            max: 8,
            found: 9,
        };
        assert_eq!(
            error.to_string(),
            "iCalendar feed refused: nesting_depth is limited to 8, the feed reaches 9"
        );
    }
}
