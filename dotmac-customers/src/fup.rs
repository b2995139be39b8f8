//! Fair-usage rules in the manner of Splynx's FUP: counters per day, week and month, free
//! windows that do not count, thresholds that slow the service (by a percentage of the plan's
//! rate or to a fixed rate) or block it, counters that reset at their period's boundary.
//!
//! Everything here is a pure function of the policy, the counters and an instant: usage is
//! recorded as it arrives ([`FupPolicy::record`]) (a sample dated inside a free window is not
//! counted), and [`FupPolicy::evaluate`] says what should hold at an instant, counters whose
//! period has ended reading zero. The service turns a change of that verdict into a
//! provisioning command and a [`CustomerEvent::FairUsage`](crate::CustomerEvent::FairUsage).
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use dotmac_customers::fup::{Direction, FupAction, FupCounters, FupPeriod, FupPolicy, FupRule, FupVerdict};
//! use dotmac_customers::Rate;
//!
//! // Splynx's example: 5 GB a day, then half speed until the next day.
//! let policy = FupPolicy::new(chrono_tz::UTC).rule(FupRule {
//!     name: "daily".into(),
//!     period: FupPeriod::Day,
//!     direction: Direction::Total,
//!     threshold_bytes: 5 * 1024 * 1024 * 1024,
//!     action: FupAction::SpeedPercent(50),
//! });
//! let plan = Rate::mbps(2, 1);
//! let mut counters = FupCounters::default();
//! let noon = Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap();
//! policy.record(&mut counters, noon, 6 * 1024 * 1024 * 1024, 0)?;
//! assert_eq!(
//!     policy.evaluate(&counters, plan, noon)?,
//!     FupVerdict::Throttled { rule: "daily".into(), rate: Rate::new(1000, 500) }
//! );
//! let next_day = Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap();
//! assert_eq!(policy.evaluate(&counters, plan, next_day)?, FupVerdict::Normal);
//! # Ok::<(), dotmac_customers::CustomersError>(())
//! ```

use chrono::{
    DateTime, Datelike, Days, Duration, Months, NaiveDate, NaiveTime, Offset, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use dotmac_core::Money;
use serde::{Deserialize, Serialize};

use crate::error::{CustomersError, Result};
use crate::vocab::{Rate, TopUpId};

/// The period a counter covers, in the policy's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FupPeriod {
    /// A local calendar day.
    Day,
    /// A local week from [`FupPolicy::week_starts`].
    Week,
    /// A local calendar month.
    Month,
}

/// Which traffic a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Towards the subscriber.
    Download,
    /// From the subscriber.
    Upload,
    /// Both.
    Total,
}

/// What a rule does once its threshold is reached.
///
/// Serialised with a `type` tag: `{"type": "speed_percent", "percent": 50}`,
/// `{"type": "fixed_rate", "download_kbps": …, "upload_kbps": …}`, `{"type": "block"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "FupActionRepr", into = "FupActionRepr")]
pub enum FupAction {
    /// The plan's rate scaled to this percentage (1–100).
    SpeedPercent(u8),
    /// A fixed rate (never above the plan's).
    FixedRate(Rate),
    /// No service until the counter resets or a top-up lifts the threshold; the usage past it
    /// is charged as overage by billing.
    Block,
    /// (In events only) the rule stopped applying: the plan's rate is back.
    Restore,
}

/// [`FupAction`]'s stored form: an internally tagged enum cannot hold a bare integer, so the
/// percentage gets a field name (saving a service with a percentage rule failed in the SQL
/// stores before).
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FupActionRepr {
    SpeedPercent { percent: u8 },
    FixedRate(Rate),
    Block,
    Restore,
}

impl From<FupActionRepr> for FupAction {
    fn from(repr: FupActionRepr) -> Self {
        match repr {
            FupActionRepr::SpeedPercent { percent } => FupAction::SpeedPercent(percent),
            FupActionRepr::FixedRate(rate) => FupAction::FixedRate(rate),
            FupActionRepr::Block => FupAction::Block,
            FupActionRepr::Restore => FupAction::Restore,
        }
    }
}

impl From<FupAction> for FupActionRepr {
    fn from(action: FupAction) -> Self {
        match action {
            FupAction::SpeedPercent(percent) => FupActionRepr::SpeedPercent { percent },
            FupAction::FixedRate(rate) => FupActionRepr::FixedRate(rate),
            FupAction::Block => FupActionRepr::Block,
            FupAction::Restore => FupActionRepr::Restore,
        }
    }
}

/// One threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FupRule {
    /// A name the operator chose (shown in notices).
    pub name: String,
    /// The counter it reads.
    pub period: FupPeriod,
    /// The traffic it counts.
    pub direction: Direction,
    /// Reached when the counter is at least this many bytes.
    pub threshold_bytes: u64,
    /// What happens then.
    pub action: FupAction,
}

/// A window of local time whose traffic is not counted (nights, weekends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeWindow {
    /// The weekdays it applies on (of the local date of the window's start); empty: every day.
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// Local start, inclusive.
    pub from: NaiveTime,
    /// Local end, exclusive; at or before `from` the window runs past midnight into the next
    /// day; `from == to` is the whole day.
    pub to: NaiveTime,
}

impl FreeWindow {
    fn contains(&self, local: chrono::NaiveDateTime) -> bool {
        let time = local.time();
        let date = local.date();
        let on = |d: NaiveDate| self.days.is_empty() || self.days.contains(&d.weekday());
        if self.from == self.to {
            return on(date);
        }
        if self.from < self.to {
            return on(date) && time >= self.from && time < self.to;
        }
        // Past midnight: the evening part belongs to today, the morning part to yesterday.
        (time >= self.from && on(date)) || (time < self.to && date.pred_opt().is_some_and(on))
    }
}

/// A plan's fair-usage policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FupPolicy {
    /// The zone whose local days, weeks and months the counters follow.
    pub zone: Tz,
    /// The first day of a week.
    pub week_starts: Weekday,
    /// Traffic in these windows is not counted.
    pub free_windows: Vec<FreeWindow>,
    /// The thresholds.
    pub rules: Vec<FupRule>,
}

/// One counter: the local start of its period and the bytes counted in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counter {
    /// The local date the period starts on (`None`: nothing counted yet).
    pub period_start: Option<NaiveDate>,
    /// Bytes towards the subscriber.
    pub download: u64,
    /// Bytes from the subscriber.
    pub upload: u64,
}

impl Counter {
    fn read(&self, direction: Direction) -> u64 {
        match direction {
            Direction::Download => self.download,
            Direction::Upload => self.upload,
            Direction::Total => self.download.saturating_add(self.upload),
        }
    }
}

/// A service's fair-usage counters and top-ups.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FupCounters {
    /// Today's.
    pub day: Counter,
    /// This week's.
    pub week: Counter,
    /// This month's.
    pub month: Counter,
    /// Bytes bought on top of the block thresholds, for the month they were bought in.
    #[serde(default)]
    pub top_up: Counter,
    /// The top-ups counted in `top_up` (a top-up applied again changes nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_ups: Vec<TopUpId>,
}

/// How many top-ups one month may hold.
pub const MAX_TOP_UPS_PER_MONTH: usize = 64;

/// Data bought on top of a service's block thresholds for the rest of the month (Splynx's
/// top-up: "5 GB for 10 $"), with what the customer pays for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUp {
    /// Its id: the same top-up applied again changes nothing, and billing's charge for it
    /// is derived from it.
    pub id: TopUpId,
    /// Bytes added to every block threshold until the month ends.
    pub bytes: u64,
    /// What it costs (`None`: free, or charged elsewhere); never negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
}

/// What the policy says should hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FupVerdict {
    /// The plan's rate.
    Normal,
    /// A lower rate.
    Throttled {
        /// The rule that set it (the one giving the lowest rate).
        rule: String,
        /// The rate.
        rate: Rate,
    },
    /// No service.
    Blocked {
        /// The rule.
        rule: String,
    },
}

impl FupPolicy {
    /// A policy in `zone` with weeks from Monday, no free window and no rule.
    pub fn new(zone: Tz) -> Self {
        FupPolicy {
            zone,
            week_starts: Weekday::Mon,
            free_windows: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// With a rule.
    #[must_use]
    pub fn rule(mut self, rule: FupRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// With a free window.
    #[must_use]
    pub fn free_window(mut self, window: FreeWindow) -> Self {
        self.free_windows.push(window);
        self
    }

    /// Checks the rules: a percentage is 1–100, a fixed rate above zero, names unique and
    /// not empty.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidInput`] naming the rule.
    pub fn validate(&self) -> Result<()> {
        for (i, rule) in self.rules.iter().enumerate() {
            let bad = |why: &str| {
                Err(CustomersError::InvalidInput(format!(
                    "fair-usage rule {:?}: {why}",
                    rule.name
                )))
            };
            if rule.name.trim().is_empty() {
                return bad("a rule needs a name");
            }
            if self.rules[..i].iter().any(|r| r.name == rule.name) {
                return bad("two rules have this name");
            }
            match rule.action {
                FupAction::SpeedPercent(p) if p == 0 || p > 100 => {
                    return bad("a percentage is between 1 and 100");
                }
                FupAction::FixedRate(r) if r.download_kbps() == 0 || r.upload_kbps() == 0 => {
                    return bad("a fixed rate is above zero");
                }
                FupAction::Restore => return bad("restore is not an action a rule takes"),
                _ => {}
            }
        }
        Ok(())
    }

    /// The local start of the period holding `date`.
    fn period_start(&self, period: FupPeriod, date: NaiveDate) -> NaiveDate {
        match period {
            FupPeriod::Day => date,
            FupPeriod::Week => {
                // Both are 0..7: the sum is below 14, and the remainder below 7.
                #[allow(clippy::arithmetic_side_effects)]
                let back = (7 + date.weekday().num_days_from_monday()
                    - self.week_starts.num_days_from_monday())
                    % 7;
                date.checked_sub_signed(Duration::days(i64::from(back)))
                    .unwrap_or(date)
            }
            FupPeriod::Month => date.with_day(1).unwrap_or(date),
        }
    }

    /// The local wall-clock time of `at`. At the very ends of chrono's range, where the
    /// local time is not representable (`naive_local` would panic), the UTC time stands in.
    fn local(&self, at: DateTime<Utc>) -> chrono::NaiveDateTime {
        let utc = at.naive_utc();
        let offset = self.zone.offset_from_utc_datetime(&utc).fix();
        utc.checked_add_offset(offset).unwrap_or(utc)
    }

    /// The local date of `at` in the policy's zone (the day its counters count it in).
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        self.local(at).date()
    }

    /// Whether traffic at `at` is free.
    pub fn is_free(&self, at: DateTime<Utc>) -> bool {
        let local = self.local(at);
        self.free_windows.iter().any(|w| w.contains(local))
    }

    /// Counts a usage sample dated `at` (the end of the interval it measured): nothing in a
    /// free window; otherwise each counter whose period has moved on starts again from zero.
    /// A sample older than a counter's period is not counted in it. Returns whether it counted.
    ///
    /// # Errors
    ///
    /// None today (counters saturate); kept for policies that may refuse samples.
    pub fn record(
        &self,
        counters: &mut FupCounters,
        at: DateTime<Utc>,
        download: u64,
        upload: u64,
    ) -> Result<bool> {
        if self.is_free(at) {
            return Ok(false);
        }
        let date = self.local(at).date();
        for (period, counter) in [
            (FupPeriod::Day, &mut counters.day),
            (FupPeriod::Week, &mut counters.week),
            (FupPeriod::Month, &mut counters.month),
        ] {
            let start = self.period_start(period, date);
            match counter.period_start {
                Some(held) if held > start => continue,
                Some(held) if held == start => {}
                _ => {
                    *counter = Counter {
                        period_start: Some(start),
                        download: 0,
                        upload: 0,
                    };
                }
            }
            counter.download = counter.download.saturating_add(download);
            counter.upload = counter.upload.saturating_add(upload);
        }
        Ok(true)
    }

    /// Adds a top-up `id` of `bytes` for the month holding `at`: block thresholds read that
    /// much higher until the month ends (a top-up of a month past is gone). Returns whether
    /// it changed anything: a top-up already counted this month does not.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidInput`] for a top-up of no bytes, or past
    /// [`MAX_TOP_UPS_PER_MONTH`].
    pub fn top_up(
        &self,
        counters: &mut FupCounters,
        at: DateTime<Utc>,
        id: TopUpId,
        bytes: u64,
    ) -> Result<bool> {
        if bytes == 0 {
            return Err(CustomersError::InvalidInput(
                "a top-up adds at least one byte".to_owned(),
            ));
        }
        let start = self.period_start(FupPeriod::Month, self.local(at).date());
        let fresh = counters.top_up.period_start != Some(start);
        if !fresh && counters.top_ups.contains(&id) {
            return Ok(false);
        }
        if !fresh && counters.top_ups.len() >= MAX_TOP_UPS_PER_MONTH {
            return Err(CustomersError::InvalidInput(format!(
                "at most {MAX_TOP_UPS_PER_MONTH} top-ups a month"
            )));
        }
        if fresh {
            counters.top_up = Counter {
                period_start: Some(start),
                download: 0,
                upload: 0,
            };
            counters.top_ups.clear();
        }
        counters.top_up.download = counters.top_up.download.saturating_add(bytes);
        counters.top_ups.push(id);
        Ok(true)
    }

    /// What a counter reads at `at`: zero once its period has ended.
    pub fn reading(
        &self,
        counters: &FupCounters,
        period: FupPeriod,
        direction: Direction,
        at: DateTime<Utc>,
    ) -> u64 {
        let counter = match period {
            FupPeriod::Day => &counters.day,
            FupPeriod::Week => &counters.week,
            FupPeriod::Month => &counters.month,
        };
        let start = self.period_start(period, self.local(at).date());
        if counter.period_start == Some(start) {
            counter.read(direction)
        } else {
            0
        }
    }

    /// What should hold at `at` for a plan of `plan`: a block if any block rule is reached
    /// (the first in order), else the reached slowdowns together (per direction the lowest
    /// of their rates, named by the rule with the lowest download rate), else the plan's
    /// rate. More usage at the same instant never gives a faster verdict.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidInput`] for a policy [`FupPolicy::validate`] refuses.
    pub fn evaluate(
        &self,
        counters: &FupCounters,
        plan: Rate,
        at: DateTime<Utc>,
    ) -> Result<FupVerdict> {
        self.validate()?;
        let month_start = self.period_start(FupPeriod::Month, self.local(at).date());
        let top_up = if counters.top_up.period_start == Some(month_start) {
            counters.top_up.download
        } else {
            0
        };
        // Every reached slowdown caps the rate; the caps hold together (the lowest per
        // direction), so reaching one more rule never gives a faster rate. The rule named is
        // the one with the lowest download rate (the first on a tie).
        let mut slowest: Option<(&str, Rate, Rate)> = None;
        for rule in &self.rules {
            let used = self.reading(counters, rule.period, rule.direction, at);
            let threshold = match rule.action {
                FupAction::Block => rule.threshold_bytes.saturating_add(top_up),
                _ => rule.threshold_bytes,
            };
            if used < threshold {
                continue;
            }
            let rate = match rule.action {
                FupAction::Block => {
                    return Ok(FupVerdict::Blocked {
                        rule: rule.name.clone(),
                    });
                }
                FupAction::SpeedPercent(p) => plan.percent(p).min(plan),
                FupAction::FixedRate(r) => r.min(plan),
                FupAction::Restore => continue,
            };
            slowest = Some(match slowest {
                None => (&rule.name, rate, rate),
                Some((name, named, held)) => {
                    let name = if rate.download_kbps() < named.download_kbps() {
                        (rule.name.as_str(), rate)
                    } else {
                        (name, named)
                    };
                    (name.0, name.1, held.min(rate))
                }
            });
        }
        Ok(match slowest {
            Some((rule, _, rate)) if rate != plan => FupVerdict::Throttled {
                rule: rule.to_owned(),
                rate,
            },
            _ => FupVerdict::Normal,
        })
    }

    /// The instant the period of `period` starting on the local date `start` ends.
    fn period_end(&self, period: FupPeriod, start: NaiveDate) -> Option<DateTime<Utc>> {
        let next = match period {
            FupPeriod::Day => start.succ_opt(),
            FupPeriod::Week => start.checked_add_days(Days::new(7)),
            FupPeriod::Month => start.checked_add_months(Months::new(1)),
        }?;
        dotmac_core::local_midnight(self.zone, next).ok()
    }

    /// Empties the counters (and the top-up) whose period has ended at `at`: they read zero
    /// already, and emptied they no longer hold the next boundary back. Returns whether any
    /// changed.
    pub fn expire(&self, counters: &mut FupCounters, at: DateTime<Utc>) -> bool {
        let date = self.local(at).date();
        let mut changed = false;
        for (period, counter) in [
            (FupPeriod::Day, &mut counters.day),
            (FupPeriod::Week, &mut counters.week),
            (FupPeriod::Month, &mut counters.month),
            (FupPeriod::Month, &mut counters.top_up),
        ] {
            let current = self.period_start(period, date);
            if counter.period_start.is_some_and(|held| held < current) {
                *counter = Counter::default();
                changed = true;
            }
        }
        if counters.top_up.period_start.is_none() && !counters.top_ups.is_empty() {
            counters.top_ups.clear();
            changed = true;
        }
        changed
    }

    /// The next instant at which the verdict can change without new usage: the earliest end
    /// of a period whose counter (or top-up) holds something. `None` when all are empty.
    pub fn next_boundary(&self, counters: &FupCounters) -> Option<DateTime<Utc>> {
        [
            (FupPeriod::Day, &counters.day),
            (FupPeriod::Week, &counters.week),
            (FupPeriod::Month, &counters.month),
            (FupPeriod::Month, &counters.top_up),
        ]
        .into_iter()
        .filter(|(_, c)| c.download > 0 || c.upload > 0)
        .filter_map(|(period, c)| self.period_end(period, c.period_start?))
        .min()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_action_round_trips_through_json() {
        let actions = [
            FupAction::SpeedPercent(50),
            FupAction::FixedRate(Rate::mbps(2, 1)),
            FupAction::Block,
            FupAction::Restore,
        ];
        for action in actions {
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(serde_json::from_value::<FupAction>(json).unwrap(), action);
        }
        assert_eq!(
            serde_json::to_value(FupAction::SpeedPercent(50)).unwrap(),
            serde_json::json!({"type": "speed_percent", "percent": 50})
        );
    }

    use super::*;
    use chrono::TimeZone;

    const GB: u64 = 1 << 30;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    fn rule(name: &str, period: FupPeriod, gb: u64, action: FupAction) -> FupRule {
        FupRule {
            name: name.into(),
            period,
            direction: Direction::Total,
            threshold_bytes: gb * GB,
            action,
        }
    }

    #[test]
    fn night_traffic_is_free_across_midnight_and_sundays_are_free_all_day() {
        let policy = FupPolicy::new(chrono_tz::UTC)
            .free_window(FreeWindow {
                days: vec![],
                from: NaiveTime::from_hms_opt(23, 0, 0).unwrap(),
                to: NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
            })
            .free_window(FreeWindow {
                days: vec![Weekday::Sun],
                from: NaiveTime::MIN,
                to: NaiveTime::MIN,
            });
        assert!(policy.is_free(at(2, 23)));
        assert!(policy.is_free(at(3, 6)));
        assert!(!policy.is_free(at(3, 7)));
        // 8 November 2026 is a Sunday.
        assert!(policy.is_free(at(8, 12)));
        assert!(!policy.is_free(at(9, 12)));
    }

    #[test]
    fn counters_reset_at_their_boundaries_and_a_late_sample_never_reopens_a_period() {
        let policy = FupPolicy::new(chrono_tz::UTC);
        let mut c = FupCounters::default();
        policy.record(&mut c, at(2, 10), GB, 0).unwrap();
        policy.record(&mut c, at(3, 10), GB, GB).unwrap();
        assert_eq!(
            policy.reading(&c, FupPeriod::Day, Direction::Total, at(3, 11)),
            2 * GB
        );
        assert_eq!(
            policy.reading(&c, FupPeriod::Week, Direction::Download, at(3, 11)),
            2 * GB
        );
        // A sample of the 2nd arriving late counts in the week and month, not in the 3rd's day.
        policy.record(&mut c, at(2, 20), GB, 0).unwrap();
        assert_eq!(
            policy.reading(&c, FupPeriod::Day, Direction::Total, at(3, 11)),
            2 * GB
        );
        assert_eq!(
            policy.reading(&c, FupPeriod::Month, Direction::Total, at(3, 11)),
            4 * GB
        );
        // Monday 9 November starts a new week.
        assert_eq!(
            policy.reading(&c, FupPeriod::Week, Direction::Total, at(9, 0)),
            0
        );
        assert_eq!(
            policy.reading(&c, FupPeriod::Month, Direction::Total, at(30, 23)),
            4 * GB
        );
        assert_eq!(
            policy.reading(
                &c,
                FupPeriod::Month,
                Direction::Total,
                Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
            ),
            0
        );
    }

    #[test]
    fn a_block_wins_over_slowdowns_and_a_top_up_lifts_it() {
        let policy = FupPolicy::new(chrono_tz::UTC)
            .rule(rule(
                "month-100",
                FupPeriod::Month,
                100,
                FupAction::FixedRate(Rate::mbps(1, 1)),
            ))
            .rule(rule("month-110", FupPeriod::Month, 110, FupAction::Block));
        let plan = Rate::mbps(5, 5);
        let mut c = FupCounters::default();
        policy.record(&mut c, at(2, 10), 105 * GB, 0).unwrap();
        assert_eq!(
            policy.evaluate(&c, plan, at(2, 11)).unwrap(),
            FupVerdict::Throttled {
                rule: "month-100".into(),
                rate: Rate::mbps(1, 1)
            }
        );
        policy.record(&mut c, at(3, 10), 5 * GB, 0).unwrap();
        assert_eq!(
            policy.evaluate(&c, plan, at(3, 11)).unwrap(),
            FupVerdict::Blocked {
                rule: "month-110".into()
            }
        );
        assert!(
            policy
                .top_up(&mut c, at(3, 12), TopUpId::from_u128(1), 10 * GB)
                .unwrap()
        );
        assert!(
            !policy
                .top_up(&mut c, at(3, 12), TopUpId::from_u128(1), 10 * GB)
                .unwrap()
        );
        assert!(matches!(
            policy.evaluate(&c, plan, at(3, 13)).unwrap(),
            FupVerdict::Throttled { .. }
        ));
    }

    #[test]
    fn slowdowns_hold_together_so_a_second_one_never_speeds_a_direction_up() {
        // Before the fix the lexicographically lowest rate won: reaching "b" as well gave
        // 900k up after 100k.
        let policy = FupPolicy::new(chrono_tz::UTC)
            .rule(rule(
                "a",
                FupPeriod::Day,
                1,
                FupAction::FixedRate(Rate::new(1000, 100)),
            ))
            .rule(rule(
                "b",
                FupPeriod::Day,
                2,
                FupAction::FixedRate(Rate::new(500, 900)),
            ));
        let plan = Rate::mbps(5, 5);
        let mut c = FupCounters::default();
        policy.record(&mut c, at(2, 10), GB, 0).unwrap();
        assert_eq!(
            policy.evaluate(&c, plan, at(2, 10)).unwrap(),
            FupVerdict::Throttled {
                rule: "a".into(),
                rate: Rate::new(1000, 100)
            }
        );
        policy.record(&mut c, at(2, 11), GB, 0).unwrap();
        assert_eq!(
            policy.evaluate(&c, plan, at(2, 11)).unwrap(),
            FupVerdict::Throttled {
                rule: "b".into(),
                rate: Rate::new(500, 100)
            }
        );
    }

    #[test]
    fn expired_counters_empty_and_the_next_boundary_moves_on() {
        let policy = FupPolicy::new(chrono_tz::Europe::Berlin);
        let mut c = FupCounters::default();
        // Monday 2 November, 10:00 UTC = 11:00 in Berlin.
        policy.record(&mut c, at(2, 10), GB, 0).unwrap();
        let day_end = Utc.with_ymd_and_hms(2026, 11, 2, 23, 0, 0).unwrap();
        assert_eq!(policy.next_boundary(&c), Some(day_end));
        assert!(!policy.expire(&mut c, at(2, 22)));
        assert!(policy.expire(&mut c, day_end));
        assert_eq!(c.day, Counter::default());
        // The week ends at Berlin's midnight of Monday 9 November.
        assert_eq!(
            policy.next_boundary(&c),
            Some(Utc.with_ymd_and_hms(2026, 11, 8, 23, 0, 0).unwrap())
        );
        assert!(policy.expire(&mut c, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()));
        assert_eq!(c, FupCounters::default());
        assert_eq!(policy.next_boundary(&c), None);
    }

    #[test]
    fn the_extremes_of_time_do_not_panic() {
        let policy = FupPolicy::new(chrono_tz::Pacific::Kiritimati).rule(rule(
            "d",
            FupPeriod::Day,
            1,
            FupAction::Block,
        ));
        let mut c = FupCounters::default();
        for t in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
            policy.record(&mut c, t, GB, 0).unwrap();
            policy.evaluate(&c, Rate::mbps(1, 1), t).unwrap();
            policy.expire(&mut c, t);
            let _ = policy.next_boundary(&c);
        }
    }

    #[test]
    fn a_bad_rule_is_refused_by_name() {
        let policy = FupPolicy::new(chrono_tz::UTC).rule(rule(
            "x",
            FupPeriod::Day,
            1,
            FupAction::SpeedPercent(0),
        ));
        assert_eq!(
            policy.evaluate(&FupCounters::default(), Rate::mbps(1, 1), at(2, 0)),
            Err(CustomersError::InvalidInput(
                "fair-usage rule \"x\": a percentage is between 1 and 100".into()
            ))
        );
    }
}
