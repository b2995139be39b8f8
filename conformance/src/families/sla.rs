//! `sla/`: business-hours due times for a ticket (first response, update, resolution).

use std::collections::BTreeMap;

use crate::{date, instant};
use chrono::{DateTime, DurationRound, TimeDelta, Utc, Weekday};
use dotmac_support::{
    BusinessCalendar, ClockState, Priority, SlaMetric, SlaPolicy, SlaPolicyId, SlaTarget,
    SlaTargets, SlaTimeline, Status, StatusCategory, StatusName,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    calendar: CalendarCase,
    targets_minutes: Targets,
    #[serde(default)]
    pause_statuses: Vec<String>,
    ticket: TicketCase,
    expected: Expected,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarCase {
    timezone: String,
    hours: BTreeMap<String, Vec<[String; 2]>>,
    #[serde(default)]
    holidays: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Targets {
    first_response: Option<i64>,
    update: Option<i64>,
    resolution: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketCase {
    created_at: String,
    status_history: Vec<StatusAt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusAt {
    at: String,
    status: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    first_response_due: Option<String>,
    update_due: Option<String>,
    resolution_due: Option<String>,
}

fn weekday(key: &str) -> Result<Weekday, String> {
    let day = match key {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        other => return Err(format!("unknown weekday key {other:?}")),
    };
    Ok(day)
}

fn target(minutes: Option<i64>) -> Result<Option<SlaTarget>, String> {
    minutes
        .map(|m| SlaTarget::business(m).map_err(|e| e.to_string()))
        .transpose()
}

/// A status of `status_history`. The README's statuses are names, and a desk defines its own;
/// a name that is not built in becomes a desk status of category open, since its category
/// only matters to the state machine and the clocks only ask whether it is paused.
fn status(name: &str) -> Result<Status, String> {
    name.parse::<Status>()
        .or_else(|_| Status::custom(name, StatusCategory::Open))
        .map_err(|e| e.to_string())
}

fn to_minute(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    t.duration_trunc(TimeDelta::minutes(1))
        .map_err(|e| e.to_string())
}

pub fn run(case: Case) -> Result<(), String> {
    let mut builder = BusinessCalendar::builder(&case.calendar.timezone);
    for (day, intervals) in &case.calendar.hours {
        let day = weekday(day)?;
        for [start, end] in intervals {
            builder = builder.hours(day, start, end);
        }
    }
    for holiday in &case.calendar.holidays {
        builder = builder.holiday(date(holiday)?);
    }
    let calendar = builder.build().map_err(|e| e.to_string())?;

    let targets = SlaTargets {
        first_response: target(case.targets_minutes.first_response)?,
        next_response: target(case.targets_minutes.update)?,
        resolution: target(case.targets_minutes.resolution)?,
    };
    let mut policy =
        SlaPolicy::builder(SlaPolicyId::from_u128(1), "conformance").all_priorities(targets);
    for name in &case.pause_statuses {
        policy = policy.pause_in(StatusName::new(name.as_str()).map_err(|e| e.to_string())?);
    }
    let policy = policy.build().map_err(|e| e.to_string())?;

    let created_at = instant(&case.ticket.created_at)?;
    let mut timeline = SlaTimeline::new(created_at);
    timeline.statuses.clear();
    for entry in &case.ticket.status_history {
        timeline
            .statuses
            .push((instant(&entry.at)?, status(&entry.status)?));
    }
    let clocks = policy
        .evaluate(&calendar, &timeline, Priority::Normal, created_at)
        .map_err(|e| e.to_string())?;
    let due =
        |metric: SlaMetric| -> Option<&ClockState> { clocks.iter().find(|c| c.metric == metric) };

    let checks = [
        (
            "first_response_due",
            &case.expected.first_response_due,
            SlaMetric::FirstResponse,
        ),
        (
            "update_due",
            &case.expected.update_due,
            SlaMetric::NextResponse,
        ),
        (
            "resolution_due",
            &case.expected.resolution_due,
            SlaMetric::Resolution,
        ),
    ];
    for (name, expected, metric) in checks {
        let Some(expected) = expected else { continue };
        let want = to_minute(instant(expected)?)?;
        let clock = due(metric).ok_or_else(|| format!("{name}: no target given for this clock"))?;
        let got = clock
            .due_at
            .ok_or_else(|| format!("{name}: clock is paused, no due time"))?;
        let got = to_minute(got)?;
        if got != want {
            return Err(format!("{name}: expected {want}, got {got}"));
        }
    }
    Ok(())
}
