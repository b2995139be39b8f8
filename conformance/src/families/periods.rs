//! `periods/`: billing-period boundaries from an anchor.

use crate::date;
use dotmac_core::BillingInterval;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    interval: String,
    interval_count: u32,
    anchor: String,
    expected_starts: Vec<String>,
}

pub fn run(case: Case) -> Result<(), String> {
    let unit = case.interval.parse().map_err(|e| format!("{e}"))?;
    let interval = BillingInterval::new(unit, case.interval_count).map_err(|e| e.to_string())?;
    let anchor = date(&case.anchor)?;
    for (k, want) in case.expected_starts.iter().enumerate() {
        let k = i64::try_from(k).map_err(|e| e.to_string())?;
        let want = date(want)?;
        let period = interval.period(anchor, k).map_err(|e| e.to_string())?;
        if period.start() != want {
            return Err(format!(
                "period {k}: expected start {want}, got {}",
                period.start()
            ));
        }
        // Tiling: each period ends exactly where the next one starts, and the lookup of any
        // day in it comes back to the same period.
        let next = interval
            .period_start(anchor, k + 1)
            .map_err(|e| e.to_string())?;
        if period.end() != next {
            return Err(format!(
                "period {k} ends {} but period {} starts {next}",
                period.end(),
                k + 1
            ));
        }
        let (found, _) = interval
            .period_containing(anchor, period.last_day())
            .map_err(|e| e.to_string())?;
        if found != k {
            return Err(format!(
                "day {} maps to period {found}, not {k}",
                period.last_day()
            ));
        }
    }
    Ok(())
}
