//! No arithmetic panic on caller instants and durations: working-time arithmetic at the ends of
//! chrono's range and with the largest minute counts returns `Ok` or `Err`, never panics
//! (issue 9). The calendar's seconds arithmetic is allowed unchecked because every figure is
//! bounded by chrono's range (see `calendar.rs`); this test holds it to that claim.

// Test helpers may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use dotmac_support::BusinessCalendar;
use proptest::prelude::*;

use dotmac_testing::{cases, no_panic};

fn calendars() -> Vec<BusinessCalendar> {
    vec![
        BusinessCalendar::always_open(),
        BusinessCalendar::builder("Europe/Berlin")
            .weekdays("09:00", "17:00")
            .build()
            .unwrap(),
        BusinessCalendar::builder("Pacific/Chatham")
            .weekdays("00:00", "24:00")
            .build()
            .unwrap(),
    ]
}

/// Two instants within 40 days of the same end of chrono's range, and a minute count: the
/// largest one only near the late end, where it runs out of range within days (from the early
/// end it would walk eight thousand years of calendar, a question of time, not of panics).
fn inputs() -> impl Strategy<Value = (DateTime<Utc>, DateTime<Utc>, u32)> {
    let span = 40 * 86_400i64;
    (
        any::<bool>(),
        0..=span,
        0..=span,
        0u32..100_000,
        any::<bool>(),
    )
        .prop_map(|(late, a, b, minutes, largest)| {
            let at = |secs: i64| {
                if late {
                    DateTime::<Utc>::MAX_UTC - Duration::seconds(secs)
                } else {
                    DateTime::<Utc>::MIN_UTC + Duration::seconds(secs)
                }
            };
            (
                at(a),
                at(b),
                if late && largest { u32::MAX } else { minutes },
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn working_time_never_panics_at_the_ends_of_time(input in inputs()) {
        let (at, other, minutes) = input;
        for calendar in calendars() {
            no_panic("add_working_minutes", &input, || calendar.add_working_minutes(at, minutes))?.ok();
            no_panic("working_minutes_between", &input, || calendar.working_minutes_between(at, other))?.ok();
            no_panic("is_working_at", &input, || calendar.is_working_at(at))?.ok();
            no_panic("next_opening", &input, || calendar.next_opening(at))?.ok();
        }
    }
}
