//! Quota use and the platform's measurement of each tenant: what a tenant has used of its
//! quotas now ([`QuotaReport`]), and what it did in a period ([`PlatformUsage`]: customers,
//! invoices issued, usage events ingested, API calls), for billing the tenants themselves.
//!
//! ## The rate quota's window
//!
//! API calls are counted in **fixed windows of one clock hour (UTC)**: one counter per tenant
//! and hour, incremented by a single conditional statement (`INSERT … ON CONFLICT DO UPDATE
//! SET used = used + n WHERE used + n <= limit`), so every process sharing one PostgreSQL
//! counts against the same row, atomically, without a lock held across calls and without a
//! clock of its own beyond the instant it passes in. A sliding window would need either every
//! call's instant (a row per call) or an estimate from two windows; the fixed window is exact,
//! costs one row per tenant-hour, and doubles as the hourly API-call figure of
//! [`PlatformUsage`]. Its known cost: a tenant can make up to twice its hourly limit across
//! the boundary of two hours (the end of one, the start of the next).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::Limit;
use crate::vocab::{Quota, UsageRecordId};

/// What a tenant uses of a counted quota (customers, admin users).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuotaUse {
    /// The quota.
    pub quota: Quota,
    /// Its limit under the tenant's plan.
    pub limit: Limit,
    /// What is counted now (may exceed the limit after a move to a smaller plan).
    pub used: u64,
}

impl QuotaUse {
    /// The use of `quota`.
    pub fn new(quota: Quota, limit: Limit, used: u64) -> Self {
        QuotaUse { quota, limit, used }
    }

    /// What is left.
    pub fn remaining(&self) -> Limit {
        self.limit.remaining(self.used)
    }
}

/// What a tenant uses of its hourly API-call quota in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RateUse {
    /// The quota ([`Quota::ApiCallsPerHour`]).
    pub quota: Quota,
    /// Its limit per window.
    pub limit: Limit,
    /// Calls counted in the window.
    pub used: u64,
    /// The window's start (inclusive).
    pub window_start: DateTime<Utc>,
    /// Its end (exclusive).
    pub window_end: DateTime<Utc>,
}

impl RateUse {
    /// The use of `limit` in the window containing `at`.
    pub fn new(limit: Limit, used: u64, at: DateTime<Utc>) -> Self {
        let (window_start, window_end) = rate_window(at);
        RateUse {
            quota: Quota::ApiCallsPerHour,
            limit,
            used,
            window_start,
            window_end,
        }
    }

    /// What is left in the window.
    pub fn remaining(&self) -> Limit {
        self.limit.remaining(self.used)
    }
}

/// Every quota's use at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuotaReport {
    /// Customers.
    pub customers: QuotaUse,
    /// Active admin users.
    pub admin_users: QuotaUse,
    /// API calls in the current hour.
    pub api_calls: RateUse,
}

impl QuotaReport {
    /// A report of these uses.
    pub fn new(customers: QuotaUse, admin_users: QuotaUse, api_calls: RateUse) -> Self {
        QuotaReport {
            customers,
            admin_users,
            api_calls,
        }
    }
}

/// The rate window containing `at`: its clock hour in UTC, `[start, start + 1 h)`.
pub fn rate_window(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let seconds = at.timestamp();
    let start = DateTime::from_timestamp(seconds.saturating_sub(seconds.rem_euclid(3_600)), 0)
        .unwrap_or(at);
    let end = start
        .checked_add_signed(Duration::hours(1))
        .unwrap_or(start);
    (start, end)
}

/// What the platform counts of a tenant besides its quotas, recorded by whoever sees it
/// happen (customers and API calls are counted by the quota checks themselves). With the
/// `dotmac` facade nothing needs recording by hand: its dispatcher counts every invoice issued
/// (`TenancyMeasuresUse`, at the instant it was issued), and the SQL store counts usage
/// events in the transaction that stores them (in the hour of each event's own instant).
/// Record them only for what happens outside those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PlatformMetric {
    /// Invoices issued.
    InvoicesIssued,
    /// Usage events ingested.
    EventsIngested,
}

impl PlatformMetric {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformMetric::InvoicesIssued => "invoices_issued",
            PlatformMetric::EventsIngested => "events_ingested",
        }
    }

    /// The metric of a stored name.
    pub fn parse(name: &str) -> Option<PlatformMetric> {
        [
            PlatformMetric::InvoicesIssued,
            PlatformMetric::EventsIngested,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

/// One measurement: `quantity` of `metric` at `at`, counted once per `id` (a record written
/// again under its id, by a retried batch or a redelivered event, is not counted twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageRecord {
    /// The idempotency key.
    pub id: UsageRecordId,
    /// What was counted.
    pub metric: PlatformMetric,
    /// When.
    pub at: DateTime<Utc>,
    /// How many.
    pub quantity: u64,
}

impl UsageRecord {
    /// A record.
    pub fn new(
        id: UsageRecordId,
        metric: PlatformMetric,
        at: DateTime<Utc>,
        quantity: u64,
    ) -> Self {
        UsageRecord {
            id,
            metric,
            at,
            quantity,
        }
    }
}

/// A tenant's use of the platform in `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlatformUsage {
    /// The start (inclusive).
    pub from: DateTime<Utc>,
    /// The end (exclusive).
    pub to: DateTime<Utc>,
    /// Customers counted against the quota at `to` (a customer released and admitted again
    /// counts from its latest admission).
    pub customers: u64,
    /// Customers admitted in the period.
    pub customers_added: u64,
    /// Invoices issued in the period.
    pub invoices_issued: u64,
    /// Usage events ingested in the period.
    pub events_ingested: u64,
    /// API calls counted in the period's rate windows (whole hours: a window counts when it
    /// starts in the period).
    pub api_calls: u64,
}

impl PlatformUsage {
    /// Nothing used in `[from, to)`.
    pub fn empty(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        PlatformUsage {
            from,
            to,
            customers: 0,
            customers_added: 0,
            invoices_issued: 0,
            events_ingested: 0,
            api_calls: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn rate_windows_are_clock_hours_in_utc() {
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 59, 59).unwrap();
        let (start, end) = rate_window(at);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap());
        assert_eq!(rate_window(end).0, end);
        // Before 1970 too.
        let old = Utc.with_ymd_and_hms(1969, 12, 31, 23, 30, 0).unwrap();
        assert_eq!(
            rate_window(old).0,
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 0, 0).unwrap()
        );
    }
}
