//! `fup/`: fair-usage rules (Splynx's FUP) over a timeline of usage, top-ups and checks.
//!
//! The case's policy becomes a `dotmac_customers::fup::FupPolicy` and its plan a `Rate`; each
//! `usage` step is `FupPolicy::record`ed into one `FupCounters`, each `top_up` step
//! `FupPolicy::top_up`, and each `expect` step compares `FupPolicy::evaluate` at its instant
//! (and, when given, the counters' readings) with the case. The format and its semantics are
//! in `docs/conformance-fup.md`; this family is the repository's own (no shared cases).

use std::collections::BTreeMap;

use chrono::{NaiveTime, Weekday};
use dotmac_customers::fup::{
    Direction, FreeWindow, FupAction, FupCounters, FupPeriod, FupPolicy, FupRule, FupVerdict,
};
use dotmac_customers::{Rate, TopUpId};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::{decimal, instant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    #[serde(default = "utc")]
    zone: String,
    #[serde(default = "monday")]
    week_starts: String,
    plan: CaseRate,
    #[serde(default)]
    free_windows: Vec<Window>,
    rules: Vec<Rule>,
    steps: Vec<Step>,
}

fn utc() -> String {
    "UTC".to_owned()
}

fn monday() -> String {
    "mon".to_owned()
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct CaseRate {
    download_kbps: u64,
    upload_kbps: u64,
}

impl CaseRate {
    fn rate(self) -> Rate {
        Rate::new(self.download_kbps, self.upload_kbps)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    #[serde(default)]
    days: Vec<String>,
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    name: String,
    period: CasePeriod,
    #[serde(default)]
    direction: CaseDirection,
    threshold: String,
    action: Action,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
enum CasePeriod {
    Day,
    Week,
    Month,
}

impl CasePeriod {
    fn period(self) -> FupPeriod {
        match self {
            CasePeriod::Day => FupPeriod::Day,
            CasePeriod::Week => FupPeriod::Week,
            CasePeriod::Month => FupPeriod::Month,
        }
    }
}

#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
enum CaseDirection {
    Download,
    Upload,
    #[default]
    Total,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Action {
    SpeedPercent {
        percent: u8,
    },
    FixedRate {
        download_kbps: u64,
        upload_kbps: u64,
    },
    Block,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Step {
    Usage(Usage),
    TopUp(TopUpStep),
    Expect(Expect),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Usage {
    at: String,
    #[serde(default = "zero")]
    download: String,
    #[serde(default = "zero")]
    upload: String,
    counted: Option<bool>,
}

fn zero() -> String {
    "0 B".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUpStep {
    at: String,
    bytes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    at: String,
    verdict: CaseVerdict,
    rule: Option<String>,
    download_kbps: Option<u64>,
    upload_kbps: Option<u64>,
    /// Total bytes each counter reads at `at`.
    #[serde(default)]
    readings: BTreeMap<CasePeriod, String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum CaseVerdict {
    Normal,
    Throttled,
    Blocked,
}

/// `"<decimal> <unit>"`, the unit one of B, KB, MB, GB, TB (powers of 1024); a whole number
/// of bytes.
pub fn bytes(text: &str) -> Result<u64, String> {
    let (number, unit) = text
        .trim()
        .rsplit_once(' ')
        .ok_or_else(|| format!("{text:?}: a size is \"<number> <unit>\", e.g. \"5 GB\""))?;
    let shift: u32 = match unit {
        "B" => 0,
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KB, MB, GB, TB)"
            ));
        }
    };
    let amount: Decimal = decimal(number)?;
    let scaled = amount
        .checked_mul(Decimal::from(1u64 << shift))
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if scaled.fract() != Decimal::ZERO {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    u64::try_from(scaled).map_err(|_| format!("{text:?} is not a byte count"))
}

fn weekday(text: &str) -> Result<Weekday, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a weekday (mon … sun)"))
}

fn clock_time(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|e| format!("bad time {text:?}: {e}"))
}

fn policy(case: &Case) -> Result<FupPolicy, String> {
    let zone: chrono_tz::Tz = case
        .zone
        .parse()
        .map_err(|_| format!("{:?} is not an IANA zone", case.zone))?;
    let mut policy = FupPolicy::new(zone);
    policy.week_starts = weekday(&case.week_starts)?;
    for w in &case.free_windows {
        policy = policy.free_window(FreeWindow {
            days: w
                .days
                .iter()
                .map(|d| weekday(d))
                .collect::<Result<_, _>>()?,
            from: clock_time(&w.from)?,
            to: clock_time(&w.to)?,
        });
    }
    for r in &case.rules {
        policy = policy.rule(FupRule {
            name: r.name.clone(),
            period: r.period.period(),
            direction: match r.direction {
                CaseDirection::Download => Direction::Download,
                CaseDirection::Upload => Direction::Upload,
                CaseDirection::Total => Direction::Total,
            },
            threshold_bytes: bytes(&r.threshold)?,
            action: match r.action {
                Action::SpeedPercent { percent } => FupAction::SpeedPercent(percent),
                Action::FixedRate {
                    download_kbps,
                    upload_kbps,
                } => FupAction::FixedRate(Rate::new(download_kbps, upload_kbps)),
                Action::Block => FupAction::Block,
            },
        });
    }
    policy.validate().map_err(|e| e.to_string())?;
    Ok(policy)
}

fn check(index: usize, e: &Expect, got: &FupVerdict, plan: Rate) -> Result<(), String> {
    let fail = |what: String| Err(format!("step {index} (expect at {}): {what}", e.at));
    let (verdict, rule, rate) = match got {
        FupVerdict::Normal => (CaseVerdict::Normal, None, plan),
        FupVerdict::Throttled { rule, rate } => (CaseVerdict::Throttled, Some(rule), *rate),
        FupVerdict::Blocked { rule } => (CaseVerdict::Blocked, Some(rule), plan),
    };
    if verdict != e.verdict {
        return fail(format!("expected {:?}, got {got:?}", e.verdict));
    }
    if let Some(expected) = &e.rule
        && rule != Some(expected)
    {
        return fail(format!("expected rule {expected:?}, got {got:?}"));
    }
    if verdict != CaseVerdict::Blocked {
        if let Some(d) = e.download_kbps
            && d != rate.download_kbps()
        {
            return fail(format!("expected {d} kbit/s down, got {rate}"));
        }
        if let Some(u) = e.upload_kbps
            && u != rate.upload_kbps()
        {
            return fail(format!("expected {u} kbit/s up, got {rate}"));
        }
    } else if e.download_kbps.is_some() || e.upload_kbps.is_some() {
        return fail("a blocked verdict has no rate to expect".to_owned());
    }
    Ok(())
}

pub fn run(case: Case) -> Result<(), String> {
    let policy = policy(&case)?;
    let plan = case.plan.rate();
    let mut counters = FupCounters::default();
    let mut top_ups: u128 = 0;
    for (index, step) in case.steps.iter().enumerate() {
        match step {
            Step::Usage(u) => {
                let counted = policy
                    .record(
                        &mut counters,
                        instant(&u.at)?,
                        bytes(&u.download)?,
                        bytes(&u.upload)?,
                    )
                    .map_err(|e| format!("step {index}: {e}"))?;
                if let Some(expected) = u.counted
                    && expected != counted
                {
                    return Err(format!(
                        "step {index} (usage at {}): expected counted = {expected}, got {counted}",
                        u.at
                    ));
                }
            }
            Step::TopUp(t) => {
                top_ups = top_ups.saturating_add(1);
                policy
                    .top_up(
                        &mut counters,
                        instant(&t.at)?,
                        TopUpId::from_u128(top_ups),
                        bytes(&t.bytes)?,
                    )
                    .map_err(|e| format!("step {index}: {e}"))?;
            }
            Step::Expect(e) => {
                let at = instant(&e.at)?;
                let got = policy
                    .evaluate(&counters, plan, at)
                    .map_err(|err| format!("step {index}: {err}"))?;
                check(index, e, &got, plan)?;
                for (period, expected) in &e.readings {
                    let expected = bytes(expected)?;
                    let read = policy.reading(&counters, period.period(), Direction::Total, at);
                    if read != expected {
                        return Err(format!(
                            "step {index} (expect at {}): the {:?} counter reads {read} bytes, expected {expected}",
                            e.at,
                            period.period()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_are_powers_of_1024_and_whole() {
        assert_eq!(bytes("5 GB"), Ok(5 << 30));
        assert_eq!(bytes("0.5 KB"), Ok(512));
        assert!(bytes("0.3 B").is_err());
        assert!(bytes("5GB").is_err());
        assert!(bytes("-1 B").is_err());
        assert!(bytes("99999999999999999999 TB").is_err());
    }
}
