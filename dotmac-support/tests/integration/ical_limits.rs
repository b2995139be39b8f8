//! The two hostile iCalendar feeds of issue 9, exactly as reported: neither may abort the
//! process or allocate without bound.
// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use dotmac_support::{IcalLimit, SupportError, ical_holidays};

fn through() -> NaiveDate {
    NaiveDate::from_ymd_opt(2030, 1, 1).unwrap()
}

/// Peak resident memory of this process in KiB (Linux), to see a large allocation touched.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_12_8_kb_feed_of_nested_components_is_refused_on_a_2_mib_stack() {
    let mut feed = String::from("BEGIN:VCALENDAR\r\n");
    while feed.len() < 12_800 {
        feed.push_str("BEGIN:X\r\n");
    }
    assert!((12_800..12_810).contains(&feed.len()));
    // A tokio worker's default stack: before the fix the recursive parser overflowed it and
    // the process aborted, which no test harness survives.
    let worker = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || ical_holidays(&feed, chrono_tz::UTC, through()))
        .unwrap();
    assert_eq!(
        worker.join().unwrap(),
        Err(SupportError::IcalLimitExceeded {
            limit: IcalLimit::NestingDepth,
            max: 8,
            found: 9,
        })
    );
}

#[test]
fn a_160_byte_feed_spanning_two_millennia_is_refused_at_once() {
    let feed = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//xy\r\nBEGIN:VEVENT\r\n\
                DTSTART;VALUE=DATE:00000101\r\nDTEND;VALUE=DATE:20270110\r\n\
                RRULE:FREQ=YEARLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    assert_eq!(feed.len(), 160);
    let span =
        NaiveDate::from_ymd_opt(2027, 1, 10).unwrap() - NaiveDate::from_ymd_opt(0, 1, 1).unwrap();
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    // Before the fix: 2 031 yearly occurrences of a 740 157-day event, 1.5 billion dates
    // pushed one by one (gigabytes), before any deduplication.
    let result = ical_holidays(feed, chrono_tz::UTC, through());
    let elapsed = started.elapsed();
    assert_eq!(
        result,
        Err(SupportError::IcalLimitExceeded {
            limit: IcalLimit::EventDays,
            max: 366,
            found: u64::try_from(span.num_days()).unwrap(),
        })
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    if let (Some(before), Some(after)) = (rss_before, peak_rss_kib()) {
        assert!(
            after - before < 64 * 1024,
            "peak RSS grew by {} KiB",
            after - before
        );
    }
}
