//! Local dates in a tenant's zone: billing dates are local dates, converted once, here.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::CoreError;

/// The local date of an instant in `zone`: the one conversion from a UTC instant to a business
/// date (an invoice's issue date, a dunning day, a usage period's day).
///
/// ```
/// use chrono::{NaiveDate, TimeZone, Utc};
/// let instant = Utc.with_ymd_and_hms(2026, 3, 1, 3, 0, 0).unwrap(); // 22:00 on Feb 28 in New York
/// assert_eq!(
///     dotmac_core::local_date(instant, chrono_tz::America::New_York),
///     NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()
/// );
/// ```
pub fn local_date(instant: DateTime<Utc>, zone: Tz) -> NaiveDate {
    instant.with_timezone(&zone).date_naive()
}

/// The instant a local date starts in `zone`. A zone that skips midnight (a DST gap, as in
/// Santiago or Beirut) starts the day at the first instant that exists.
///
/// # Errors
///
/// [`CoreError::DateOutOfRange`] when the day has no representable start.
pub fn local_midnight(zone: Tz, date: NaiveDate) -> Result<DateTime<Utc>, CoreError> {
    let naive = date.and_time(NaiveTime::MIN);
    let local = zone
        .from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            naive
                .checked_add_signed(Duration::hours(1))
                .and_then(|later| zone.from_local_datetime(&later).earliest())
        })
        .ok_or(CoreError::DateOutOfRange("local midnight does not exist"))?;
    Ok(local.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_that_skips_midnight_starts_at_its_first_instant() {
        // Santiago moved its clocks from 00:00 to 01:00 on 2022-09-11.
        let zone = chrono_tz::America::Santiago;
        let day = NaiveDate::from_ymd_opt(2022, 9, 11).unwrap();
        let start = local_midnight(zone, day).unwrap();
        assert_eq!(local_date(start, zone), day);
        assert_eq!(start, Utc.with_ymd_and_hms(2022, 9, 11, 4, 0, 0).unwrap());
    }
}
