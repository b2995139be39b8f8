//! Time as an input: domain code asks a [`Clock`], never the system.

use std::sync::Mutex;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

/// A source of the current instant.
///
/// Services take a `Clock` so that tests, replays and back-dated runs control time; domain
/// functions take the instant or date itself as an argument.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Today's date in a time zone: billing dates are local dates, converted once at the edge.
    fn today_in(&self, zone: Tz) -> NaiveDate {
        self.now().with_timezone(&zone).date_naive()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

/// The operating system's clock. The only place DotMac reads the system time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock stopped at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(DateTime<Utc>);

impl FixedClock {
    /// A clock that always says `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        FixedClock(at)
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// A clock that tests move by hand; shareable between threads.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use dotmac_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 31, 23, 0, 0).unwrap());
/// clock.advance(Duration::hours(2));
/// assert_eq!(clock.now(), Utc.with_ymd_and_hms(2026, 2, 1, 1, 0, 0).unwrap());
/// ```
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock starting at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    fn with<R>(&self, f: impl FnOnce(&mut DateTime<Utc>) -> R) -> R {
        // A poisoned lock still holds a valid instant: keep going with it.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Sets the instant.
    pub fn set(&self, at: DateTime<Utc>) {
        self.with(|t| *t = at);
    }

    /// Moves the clock forward (or back, for a negative duration). Saturates at chrono's range.
    pub fn advance(&self, by: Duration) {
        self.with(|t| {
            if let Some(next) = t.checked_add_signed(by) {
                *t = next;
            }
        });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.with(|t| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn today_in_uses_the_zone() {
        let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap());
        assert_eq!(
            clock.today_in(chrono_tz::America::New_York),
            NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()
        );
        assert_eq!(
            clock.today_in(chrono_tz::UTC),
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
        );
    }

    #[test]
    fn manual_clock_moves() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        clock.advance(Duration::days(1));
        assert_eq!(clock.now(), start + Duration::days(1));
        clock.set(start);
        // A borrowed clock is a clock too (services take `impl Clock`).
        fn read(clock: impl Clock) -> DateTime<Utc> {
            clock.now()
        }
        assert_eq!(read(&clock), start);
    }
}
