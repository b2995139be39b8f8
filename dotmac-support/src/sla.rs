//! SLA policies and clocks.
//!
//! A clock is never stored as a running counter: it is rebuilt from the ticket's history every
//! time (see [`Ticket::sla_timeline`](crate::Ticket::sla_timeline)), so correcting a past status,
//! changing the policy or the calendar recomputes every due time exactly.
//!
//! Three clocks ([`SlaMetric`]):
//! - first response: from creation until the first public agent comment;
//! - next response: from the customer's last public message (creation when there is none) until
//!   the next public agent comment;
//! - resolution: from creation until the ticket is resolved or closed (time spent resolved or
//!   closed before a reopen never counts).
//!
//! Each clock counts only while the ticket is neither resolved or closed nor in one of the
//! policy's pause statuses, in
//! business minutes on a [`BusinessCalendar`] or in calendar minutes ([`TimeBasis`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use dotmac_core::define_id;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::BusinessCalendar;
use crate::error::{Result, SupportError};
use crate::ticket::{Actor, Category, Change, Channel, CustomerTier, Priority, Ticket, Visibility};
use crate::vocab::{Status, StatusName, TicketId};

define_id! {
    /// An SLA policy.
    SlaPolicyId
}

/// Which SLA clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaMetric {
    /// Time to the first public agent response.
    FirstResponse,
    /// Time from the customer's last message to the next public agent response.
    NextResponse,
    /// Time to resolution.
    Resolution,
}

impl SlaMetric {
    /// The stable snake_case name (`"first_response"`), as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SlaMetric::FirstResponse => "first_response",
            SlaMetric::NextResponse => "next_response",
            SlaMetric::Resolution => "resolution",
        }
    }

    /// All three, in this order.
    pub const ALL: [SlaMetric; 3] = [
        SlaMetric::FirstResponse,
        SlaMetric::NextResponse,
        SlaMetric::Resolution,
    ];
}

/// Whether a target counts business minutes (on the policy's calendar) or wall-clock minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBasis {
    /// Working minutes of the business calendar.
    Business,
    /// Every minute, around the clock.
    Calendar,
}

/// A target: a positive number of minutes on a [`TimeBasis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawTarget")]
pub struct SlaTarget {
    minutes: u32,
    basis: TimeBasis,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    minutes: i64,
    basis: TimeBasis,
}

impl TryFrom<RawTarget> for SlaTarget {
    type Error = SupportError;
    fn try_from(raw: RawTarget) -> Result<Self> {
        SlaTarget::new(raw.minutes, raw.basis)
    }
}

impl SlaTarget {
    /// A target of `minutes` on `basis`.
    ///
    /// # Errors
    ///
    /// [`SupportError::InvalidTarget`] for zero, negative or more than `u32::MAX` minutes.
    pub fn new(minutes: i64, basis: TimeBasis) -> Result<Self> {
        match u32::try_from(minutes) {
            Ok(m) if m > 0 => Ok(SlaTarget { minutes: m, basis }),
            _ => Err(SupportError::InvalidTarget(minutes)),
        }
    }

    /// `minutes` business minutes.
    ///
    /// # Errors
    ///
    /// As [`SlaTarget::new`].
    pub fn business(minutes: i64) -> Result<Self> {
        SlaTarget::new(minutes, TimeBasis::Business)
    }

    /// `minutes` wall-clock minutes.
    ///
    /// # Errors
    ///
    /// As [`SlaTarget::new`].
    pub fn calendar(minutes: i64) -> Result<Self> {
        SlaTarget::new(minutes, TimeBasis::Calendar)
    }

    /// The minutes.
    pub fn minutes(self) -> u32 {
        self.minutes
    }

    /// The basis.
    pub fn basis(self) -> TimeBasis {
        self.basis
    }
}

/// The three targets of one priority; an absent target means no clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlaTargets {
    /// First response.
    pub first_response: Option<SlaTarget>,
    /// Next response (update).
    pub next_response: Option<SlaTarget>,
    /// Resolution.
    pub resolution: Option<SlaTarget>,
}

impl SlaTargets {
    /// The target of one metric.
    pub fn get(&self, metric: SlaMetric) -> Option<SlaTarget> {
        match metric {
            SlaMetric::FirstResponse => self.first_response,
            SlaMetric::NextResponse => self.next_response,
            SlaMetric::Resolution => self.resolution,
        }
    }

    fn set(&mut self, metric: SlaMetric, target: SlaTarget) {
        match metric {
            SlaMetric::FirstResponse => self.first_response = Some(target),
            SlaMetric::NextResponse => self.next_response = Some(target),
            SlaMetric::Resolution => self.resolution = Some(target),
        }
    }
}

/// A condition of an SLA policy; a policy applies when all of its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "on", content = "any_of")]
#[non_exhaustive]
pub enum PolicyCondition {
    /// The ticket's category is one of these.
    Category(Vec<Category>),
    /// The customer's tier is one of these.
    Tier(Vec<CustomerTier>),
    /// The ticket's channel is one of these.
    Channel(Vec<Channel>),
    /// The ticket's priority is one of these.
    Priority(Vec<Priority>),
}

impl PolicyCondition {
    /// Whether the ticket satisfies it.
    pub fn matches(&self, ticket: &Ticket) -> bool {
        match self {
            PolicyCondition::Category(any) => any.contains(&ticket.category()),
            PolicyCondition::Tier(any) => any.contains(&ticket.tier()),
            PolicyCondition::Channel(any) => any.contains(&ticket.channel()),
            PolicyCondition::Priority(any) => any.contains(&ticket.priority()),
        }
    }
}

/// An SLA policy: conditions, targets per priority, pause statuses and a warning lead time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaPolicy {
    id: SlaPolicyId,
    name: String,
    conditions: Vec<PolicyCondition>,
    targets: BTreeMap<Priority, SlaTargets>,
    pause_statuses: BTreeSet<StatusName>,
    warn_before_minutes: u32,
}

/// Builds an [`SlaPolicy`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SlaPolicyBuilder {
    policy: SlaPolicy,
}

impl SlaPolicyBuilder {
    /// Adds a condition (all must hold).
    pub fn when(mut self, condition: PolicyCondition) -> Self {
        self.policy.conditions.push(condition);
        self
    }

    /// Sets the target of one metric for one priority.
    pub fn target(mut self, priority: Priority, metric: SlaMetric, target: SlaTarget) -> Self {
        self.policy
            .targets
            .entry(priority)
            .or_default()
            .set(metric, target);
        self
    }

    /// Sets response (first and next) and resolution targets for one priority.
    pub fn targets(self, priority: Priority, response: SlaTarget, resolution: SlaTarget) -> Self {
        self.target(priority, SlaMetric::FirstResponse, response)
            .target(priority, SlaMetric::NextResponse, response)
            .target(priority, SlaMetric::Resolution, resolution)
    }

    /// Sets the same targets for every priority (the conformance cases and single-target desks).
    pub fn all_priorities(mut self, targets: SlaTargets) -> Self {
        for priority in Priority::ALL {
            self.policy.targets.insert(priority, targets);
        }
        self
    }

    /// Adds a status in which the clocks pause, by name: a built-in one
    /// ([`Status::PENDING`], a [`StatusCategory`](crate::StatusCategory)) or a desk's own
    /// ([`Status`], [`StatusName`]). Only the name counts: pausing in `pending reminder` does
    /// not pause in `pending`, nor the other way round.
    pub fn pause_in(mut self, status: impl Into<StatusName>) -> Self {
        self.policy.pause_statuses.insert(status.into());
        self
    }

    /// Warn this many minutes (on each target's basis) before a breach.
    pub fn warn_before(mut self, minutes: u32) -> Self {
        self.policy.warn_before_minutes = minutes;
        self
    }

    /// Checks and builds.
    ///
    /// # Errors
    ///
    /// [`SupportError::InvalidWarning`] when the warning is not shorter than every target.
    pub fn build(self) -> Result<SlaPolicy> {
        let policy = self.policy;
        let smallest = policy
            .targets
            .values()
            .flat_map(|t| SlaMetric::ALL.into_iter().filter_map(|m| t.get(m)))
            .map(SlaTarget::minutes)
            .min();
        if let Some(target) = smallest
            && policy.warn_before_minutes >= target
            && policy.warn_before_minutes > 0
        {
            return Err(SupportError::InvalidWarning {
                warn: policy.warn_before_minutes,
                target,
            });
        }
        Ok(policy)
    }
}

impl SlaPolicy {
    /// Starts a policy without conditions, targets or pauses.
    pub fn builder(id: SlaPolicyId, name: impl Into<String>) -> SlaPolicyBuilder {
        SlaPolicyBuilder {
            policy: SlaPolicy {
                id,
                name: name.into(),
                conditions: Vec::new(),
                targets: BTreeMap::new(),
                pause_statuses: BTreeSet::new(),
                warn_before_minutes: 0,
            },
        }
    }

    /// The targets ISPs commonly use (response / resolution):
    /// critical 15 min / 4 h and urgent 1 h / 8 h around the clock (outages do not wait for
    /// Monday); high 4 h / 24 h, normal 24 h / 72 h and low 48 h / 168 h in business time.
    /// Next-response targets equal the first-response ones. Clocks pause in `pending`; warnings
    /// come 10 minutes before a breach.
    pub fn isp_default(id: SlaPolicyId) -> SlaPolicy {
        let rows: [(Priority, i64, i64, TimeBasis); 5] = [
            (Priority::Critical, 15, 4 * 60, TimeBasis::Calendar),
            (Priority::Urgent, 60, 8 * 60, TimeBasis::Calendar),
            (Priority::High, 4 * 60, 24 * 60, TimeBasis::Business),
            (Priority::Normal, 24 * 60, 72 * 60, TimeBasis::Business),
            (Priority::Low, 48 * 60, 168 * 60, TimeBasis::Business),
        ];
        let mut targets = BTreeMap::new();
        for (priority, response, resolution, basis) in rows {
            // The table is positive constants: `new` cannot refuse them.
            if let (Ok(response), Ok(resolution)) = (
                SlaTarget::new(response, basis),
                SlaTarget::new(resolution, basis),
            ) {
                targets.insert(
                    priority,
                    SlaTargets {
                        first_response: Some(response),
                        next_response: Some(response),
                        resolution: Some(resolution),
                    },
                );
            }
        }
        SlaPolicy {
            id,
            name: "ISP default".to_owned(),
            conditions: Vec::new(),
            targets,
            pause_statuses: BTreeSet::from([StatusName::from(Status::PENDING)]),
            warn_before_minutes: 10,
        }
    }

    /// Its id.
    pub fn id(&self) -> SlaPolicyId {
        self.id
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its conditions.
    pub fn conditions(&self) -> &[PolicyCondition] {
        &self.conditions
    }
    /// Names of the statuses in which clocks pause.
    pub fn pause_statuses(&self) -> &BTreeSet<StatusName> {
        &self.pause_statuses
    }
    /// Whether clocks pause in `status` (by its name).
    pub fn pauses_in(&self, status: &Status) -> bool {
        self.pause_statuses.contains(status.name())
    }
    /// Warning lead time in minutes.
    pub fn warn_before_minutes(&self) -> u32 {
        self.warn_before_minutes
    }
    /// The targets for a priority.
    pub fn targets_for(&self, priority: Priority) -> SlaTargets {
        self.targets.get(&priority).copied().unwrap_or_default()
    }

    /// Whether all its conditions hold for the ticket.
    pub fn applies_to(&self, ticket: &Ticket) -> bool {
        self.conditions.iter().all(|c| c.matches(ticket))
    }

    /// Every clock of a ticket at `as_of`, rebuilt from its timeline, for its priority.
    ///
    /// # Errors
    ///
    /// [`SupportError::OutOfRange`] from the calendar arithmetic.
    pub fn evaluate(
        &self,
        calendar: &BusinessCalendar,
        timeline: &SlaTimeline,
        priority: Priority,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<ClockState>> {
        let targets = self.targets_for(priority);
        let mut clocks = Vec::with_capacity(3);
        for metric in SlaMetric::ALL {
            if let Some(target) = targets.get(metric) {
                clocks.push(self.clock(calendar, timeline, metric, target, as_of)?);
            }
        }
        Ok(clocks)
    }

    fn clock(
        &self,
        calendar: &BusinessCalendar,
        timeline: &SlaTimeline,
        metric: SlaMetric,
        target: SlaTarget,
        as_of: DateTime<Utc>,
    ) -> Result<ClockState> {
        let started_at = match metric {
            SlaMetric::FirstResponse | SlaMetric::Resolution => timeline.created_at,
            SlaMetric::NextResponse => timeline
                .customer_messages
                .iter()
                .copied()
                .max()
                .unwrap_or(timeline.created_at)
                .max(timeline.created_at),
        };
        let stopped_at = match metric {
            SlaMetric::FirstResponse | SlaMetric::NextResponse => timeline
                .agent_responses
                .iter()
                .copied()
                .filter(|t| *t >= started_at)
                .min(),
            SlaMetric::Resolution => timeline.resolved_at(),
        };
        // No clock counts while the work is done: a resolved ticket never breaches a response
        // target, and time resolved before a reopen never counts.
        let paused = |status: &Status| self.pauses_in(status) || status.is_done();
        let spans = timeline.active_spans(started_at, &paused);
        let engine = Counter {
            calendar,
            basis: target.basis,
        };
        // u32 minutes × 60 fits in i64, and the warning comes before the target: no saturation.
        let target_secs = i64::from(target.minutes).saturating_mul(60);
        let due_at = engine.due(&spans, target_secs)?;
        let warn_at = if self.warn_before_minutes > 0 && self.warn_before_minutes < target.minutes {
            engine.due(
                &spans,
                target_secs.saturating_sub(i64::from(self.warn_before_minutes).saturating_mul(60)),
            )?
        } else {
            None
        };
        let until = stopped_at.map_or(as_of, |stop| stop.min(as_of));
        let elapsed_secs = engine.elapsed(&spans, until.timestamp())?;
        let paused_now = !spans.iter().any(|&(from, to)| {
            from <= as_of.timestamp() && to.is_none_or(|to| as_of.timestamp() < to)
        });
        let state = match (stopped_at.filter(|s| *s <= as_of), due_at) {
            (Some(stop), Some(due)) if stop > due => ClockStatus::Missed,
            (Some(_), _) => ClockStatus::Met,
            (None, Some(due)) if as_of > due => ClockStatus::Breached,
            (None, _) if paused_now => ClockStatus::Paused,
            (None, _) if warn_at.is_some_and(|w| as_of >= w) => ClockStatus::Warning,
            (None, _) => ClockStatus::Running,
        };
        Ok(ClockState {
            metric,
            target,
            started_at,
            due_at,
            warn_at,
            stopped_at: stopped_at.filter(|s| *s <= as_of),
            elapsed_minutes: u64::try_from(elapsed_secs / 60).unwrap_or(0),
            status: state,
        })
    }
}

/// The facts SLA clocks are computed from. Built by
/// [`Ticket::sla_timeline`](crate::Ticket::sla_timeline), or by hand for imports and what-if
/// calculations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlaTimeline {
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Every status the ticket entered, with the instant, oldest first (the first one is the
    /// status at creation).
    pub statuses: Vec<(DateTime<Utc>, Status)>,
    /// Instants of the customer's public messages (creation counts as one).
    pub customer_messages: Vec<DateTime<Utc>>,
    /// Instants of public agent comments.
    pub agent_responses: Vec<DateTime<Utc>>,
}

impl SlaTimeline {
    /// A timeline of a ticket created at `created_at` with status `open` and nothing else.
    pub fn new(created_at: DateTime<Utc>) -> Self {
        SlaTimeline {
            created_at,
            statuses: vec![(created_at, Status::OPEN)],
            customer_messages: vec![created_at],
            agent_responses: Vec::new(),
        }
    }

    /// When the ticket was last resolved or closed, if that is its latest status.
    pub fn resolved_at(&self) -> Option<DateTime<Utc>> {
        let (at, status) = self.statuses.last()?;
        if !status.is_done() {
            return None;
        }
        // The resolution moment is the first of the trailing run of done statuses
        // (resolved then closed resolves at the resolve).
        let mut when = *at;
        for (at, status) in self.statuses.iter().rev() {
            if !status.is_done() {
                break;
            }
            when = *at;
        }
        Some(when)
    }

    /// The spans from `start` in which the clock runs, as UNIX seconds; the last may be open.
    fn active_spans(
        &self,
        start: DateTime<Utc>,
        paused: &dyn Fn(&Status) -> bool,
    ) -> Vec<(i64, Option<i64>)> {
        let start = start.timestamp();
        let mut spans = Vec::new();
        let mut current_from: Option<i64> = None;
        let open = Status::OPEN;
        let initially = self
            .statuses
            .iter()
            .take_while(|(at, _)| at.timestamp() <= start)
            .last()
            .or(self.statuses.first())
            .map_or(&open, |(_, s)| s);
        if !paused(initially) {
            current_from = Some(start);
        }
        for (at, status) in &self.statuses {
            let at = at.timestamp();
            if at <= start {
                continue;
            }
            match (current_from, paused(status)) {
                (Some(from), true) => {
                    if at > from {
                        spans.push((from, Some(at)));
                    }
                    current_from = None;
                }
                (None, false) => current_from = Some(at),
                _ => {}
            }
        }
        if let Some(from) = current_from {
            spans.push((from, None));
        }
        spans
    }
}

struct Counter<'a> {
    calendar: &'a BusinessCalendar,
    basis: TimeBasis,
}

impl Counter<'_> {
    fn between(&self, from: i64, to: i64) -> Result<i64> {
        match self.basis {
            TimeBasis::Calendar => to
                .checked_sub(from)
                .map(|secs| secs.max(0))
                .ok_or(SupportError::OutOfRange),
            TimeBasis::Business => self.calendar.working_seconds_between(from, to),
        }
    }

    fn add(&self, from: i64, secs: i64) -> Result<i64> {
        match self.basis {
            TimeBasis::Calendar => from.checked_add(secs).ok_or(SupportError::OutOfRange),
            TimeBasis::Business => self.calendar.add_working_seconds(from, secs),
        }
    }

    /// When `target` seconds of active time have been spent; `None` while paused for good.
    fn due(&self, spans: &[(i64, Option<i64>)], target: i64) -> Result<Option<DateTime<Utc>>> {
        let mut remaining = target;
        for &(from, to) in spans {
            let fits = match to {
                None => true,
                Some(to) => self.between(from, to)? >= remaining,
            };
            if fits {
                let due = self.add(from, remaining)?;
                return DateTime::from_timestamp(due, 0)
                    .map(Some)
                    .ok_or(SupportError::OutOfRange);
            }
            if let Some(to) = to {
                // Did not fit: the span is shorter than what remains.
                remaining = remaining.saturating_sub(self.between(from, to)?);
            }
        }
        Ok(None)
    }

    fn elapsed(&self, spans: &[(i64, Option<i64>)], until: i64) -> Result<i64> {
        let mut total = 0;
        for &(from, to) in spans {
            let to = to.map_or(until, |t| t.min(until));
            if to > from {
                total = i64::checked_add(total, self.between(from, to)?)
                    .ok_or(SupportError::OutOfRange)?;
            }
        }
        Ok(total)
    }
}

/// Where a clock stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStatus {
    /// Counting, not yet near the target.
    Running,
    /// Counting, within the warning lead time of the target.
    Warning,
    /// Paused by the ticket's status.
    Paused,
    /// Past its due time without being stopped.
    Breached,
    /// Stopped on time.
    Met,
    /// Stopped after its due time.
    Missed,
}

/// One clock of one ticket at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClockState {
    /// Which clock.
    pub metric: SlaMetric,
    /// Its target.
    pub target: SlaTarget,
    /// When it started (this start identifies the clock: a new customer message starts a new
    /// next-response clock).
    pub started_at: DateTime<Utc>,
    /// When the target is reached if it keeps running; `None` while paused before reaching it.
    pub due_at: Option<DateTime<Utc>>,
    /// When the warning is due, when the policy warns.
    pub warn_at: Option<DateTime<Utc>>,
    /// When it was stopped (response given, ticket resolved).
    pub stopped_at: Option<DateTime<Utc>>,
    /// Active minutes spent up to the stop or the evaluation instant.
    pub elapsed_minutes: u64,
    /// Where it stands.
    pub status: ClockStatus,
}

impl ClockState {
    /// Target minus elapsed: positive under target, negative over.
    pub fn margin_minutes(&self) -> i64 {
        // A u32 minus a non-negative i64 stays above i64::MIN: no saturation.
        i64::from(self.target.minutes())
            .saturating_sub(i64::try_from(self.elapsed_minutes).unwrap_or(i64::MAX))
    }
}

/// The outcome of one stopped clock, stored for statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaRecord {
    /// The ticket.
    pub ticket: TicketId,
    /// The policy that applied.
    pub policy: SlaPolicyId,
    /// The ticket's priority when the clock stopped.
    pub priority: Priority,
    /// Which clock.
    pub metric: SlaMetric,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it stopped.
    pub stopped_at: DateTime<Utc>,
    /// Target minutes.
    pub target_minutes: u32,
    /// Active minutes spent.
    pub elapsed_minutes: u64,
    /// Target minus elapsed (negative: over target).
    pub margin_minutes: i64,
    /// Whether it stopped by its due time.
    pub met: bool,
}

/// Aggregates of [`SlaRecord`]s.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlaStats {
    /// Records counted.
    pub count: u64,
    /// Of which met.
    pub met: u64,
    /// Percentage met, to two decimals (half-up); zero without records.
    pub compliance_percent: Decimal,
    /// Mean active minutes, to two decimals (half-up).
    pub mean_elapsed_minutes: Decimal,
    /// Sum of minutes over target, for the missed ones.
    pub minutes_over_target: u64,
}

impl SlaStats {
    /// Aggregates records (typically of one metric).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a SlaRecord>) -> Self {
        let mut stats = SlaStats::default();
        let mut elapsed: u64 = 0;
        for record in records {
            // Counts of records in memory: a u64 does not fill up.
            stats.count = stats.count.saturating_add(1);
            if record.met {
                stats.met = stats.met.saturating_add(1);
            }
            elapsed = elapsed.saturating_add(record.elapsed_minutes);
            if record.margin_minutes < 0 {
                stats.minutes_over_target = stats
                    .minutes_over_target
                    .saturating_add(record.margin_minutes.unsigned_abs());
            }
        }
        if stats.count > 0 {
            let count = Decimal::from(stats.count);
            let round = |d: Decimal| {
                d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            };
            // A u64 × 100 fits in a Decimal and `count` is at least 1: the defaults are never
            // taken.
            stats.compliance_percent = round(
                Decimal::from(stats.met)
                    .checked_mul(Decimal::ONE_HUNDRED)
                    .and_then(|p| p.checked_div(count))
                    .unwrap_or_default(),
            );
            stats.mean_elapsed_minutes = round(
                Decimal::from(elapsed)
                    .checked_div(count)
                    .unwrap_or_default(),
            );
        }
        stats
    }
}

/// An ordered list of policies: the first whose conditions hold applies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlaPolicySet {
    /// In order of precedence.
    pub policies: Vec<SlaPolicy>,
}

impl SlaPolicySet {
    /// The policy for a ticket.
    pub fn select(&self, ticket: &Ticket) -> Option<&SlaPolicy> {
        self.policies.iter().find(|p| p.applies_to(ticket))
    }
}

// Defined here rather than in `ticket.rs` so that `ticket` need not import `sla` (which imports
// `ticket`): the module graph stays acyclic.
impl Ticket {
    /// The facts SLA clocks are computed from, rebuilt from the history (with status
    /// corrections applied).
    pub fn sla_timeline(&self) -> SlaTimeline {
        let mut statuses: Vec<(DateTime<Utc>, Status)> = Vec::new();
        let mut entry_index: Vec<(usize, usize)> = Vec::new();
        let mut customer_messages = vec![self.created_at()];
        let mut agent_responses = Vec::new();
        for (index, entry) in self.history().iter().enumerate() {
            match &entry.change {
                Change::Created { status, .. } => {
                    entry_index.push((index, statuses.len()));
                    statuses.push((entry.at, status.clone()));
                }
                Change::StatusChanged { to, .. } => {
                    entry_index.push((index, statuses.len()));
                    statuses.push((entry.at, to.clone()));
                }
                Change::StatusAmended { entry: target, to } => {
                    if let Some(&(_, slot)) = entry_index.iter().find(|(i, _)| i == target)
                        && let Some(status) = statuses.get_mut(slot)
                    {
                        status.1 = to.clone();
                    }
                }
                Change::Commented {
                    visibility: Visibility::Public,
                    ..
                } => match entry.actor {
                    Actor::Customer => customer_messages.push(entry.at),
                    Actor::Agent(_) => agent_responses.push(entry.at),
                    Actor::System => {}
                },
                _ => {}
            }
        }
        SlaTimeline {
            created_at: self.created_at(),
            statuses,
            customer_messages,
            agent_responses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{Actor, NewTicket};
    use crate::vocab::CommentId;
    use chrono::{Duration, TimeZone};
    use dotmac_core::TenantId;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 3, h, m, 0).unwrap() // a Tuesday
    }

    fn office() -> BusinessCalendar {
        BusinessCalendar::builder("UTC")
            .weekdays("09:00", "17:00")
            .build()
            .unwrap()
    }

    fn policy() -> SlaPolicy {
        SlaPolicy::builder(SlaPolicyId::from_u128(1), "test")
            .targets(
                Priority::Normal,
                SlaTarget::business(60).unwrap(),
                SlaTarget::business(240).unwrap(),
            )
            .pause_in(Status::PENDING)
            .warn_before(15)
            .build()
            .unwrap()
    }

    #[test]
    fn targets_must_be_positive() {
        assert_eq!(SlaTarget::business(0), Err(SupportError::InvalidTarget(0)));
        assert_eq!(
            SlaTarget::calendar(-5),
            Err(SupportError::InvalidTarget(-5))
        );
        let json = r#"{"minutes": -1, "basis": "business"}"#;
        assert!(serde_json::from_str::<SlaTarget>(json).is_err());
        assert!(
            SlaPolicy::builder(SlaPolicyId::new(), "x")
                .targets(
                    Priority::Low,
                    SlaTarget::business(10).unwrap(),
                    SlaTarget::business(20).unwrap()
                )
                .warn_before(10)
                .build()
                .is_err()
        );
    }

    #[test]
    fn first_response_stops_and_pause_extends() {
        let mut ticket = Ticket::open(
            TicketId::new(),
            TenantId::new(),
            NewTicket::new("x"),
            t(9, 0),
        );
        ticket
            .change_status(Status::OPEN, Actor::System, t(9, 0))
            .unwrap();
        ticket
            .change_status(Status::PENDING, Actor::System, t(9, 30))
            .unwrap();
        ticket
            .change_status(Status::OPEN, Actor::System, t(10, 0))
            .unwrap();
        let clocks = policy()
            .evaluate(
                &office(),
                &ticket.sla_timeline(),
                Priority::Normal,
                t(10, 10),
            )
            .unwrap();
        let first = clocks[0];
        assert_eq!(first.due_at, Some(t(10, 30)));
        assert_eq!(first.warn_at, Some(t(10, 15)));
        assert_eq!(first.status, ClockStatus::Running);
        assert_eq!(first.elapsed_minutes, 40);
        let agent = crate::vocab::AgentId::new();
        ticket
            .comment(
                CommentId::new(),
                crate::ticket::NewComment::public(Actor::Agent(agent), "on it"),
                t(10, 20),
            )
            .unwrap();
        let clocks = policy()
            .evaluate(
                &office(),
                &ticket.sla_timeline(),
                Priority::Normal,
                t(12, 0),
            )
            .unwrap();
        assert_eq!(clocks[0].status, ClockStatus::Met);
        assert_eq!(clocks[0].margin_minutes(), 10);
        assert_eq!(clocks[2].status, ClockStatus::Running);
    }

    #[test]
    fn breach_and_resolution_stats() {
        let mut ticket = Ticket::open(
            TicketId::new(),
            TenantId::new(),
            NewTicket::new("x"),
            t(9, 0),
        );
        let clocks = policy()
            .evaluate(
                &office(),
                &ticket.sla_timeline(),
                Priority::Normal,
                t(10, 1),
            )
            .unwrap();
        assert_eq!(clocks[0].status, ClockStatus::Breached);
        ticket
            .change_status(Status::RESOLVED, Actor::System, t(14, 0))
            .unwrap();
        ticket
            .change_status(Status::CLOSED, Actor::System, t(15, 0))
            .unwrap();
        let clocks = policy()
            .evaluate(
                &office(),
                &ticket.sla_timeline(),
                Priority::Normal,
                t(16, 0),
            )
            .unwrap();
        let resolution = clocks[2];
        assert_eq!(resolution.stopped_at, Some(t(14, 0)));
        assert_eq!(resolution.elapsed_minutes, 300);
        assert_eq!(resolution.status, ClockStatus::Missed);
        let record = SlaRecord {
            ticket: ticket.id(),
            policy: SlaPolicyId::from_u128(1),
            priority: Priority::Normal,
            metric: SlaMetric::Resolution,
            started_at: resolution.started_at,
            stopped_at: t(14, 0),
            target_minutes: 240,
            elapsed_minutes: resolution.elapsed_minutes,
            margin_minutes: resolution.margin_minutes(),
            met: false,
        };
        let stats = SlaStats::from_records([&record]);
        assert_eq!(stats.minutes_over_target, 60);
        assert_eq!(stats.compliance_percent, Decimal::ZERO);
        assert_eq!(stats.mean_elapsed_minutes, Decimal::from(300));
    }

    #[test]
    fn paused_clock_has_no_due_time_and_time_resolved_never_counts() {
        let mut ticket = Ticket::open(
            TicketId::new(),
            TenantId::new(),
            NewTicket::new("x"),
            t(9, 0),
        );
        ticket
            .change_status(Status::PENDING, Actor::System, t(9, 10))
            .unwrap();
        let clocks = policy()
            .evaluate(
                &office(),
                &ticket.sla_timeline(),
                Priority::Normal,
                t(11, 0),
            )
            .unwrap();
        assert_eq!(clocks[0].due_at, None);
        assert_eq!(clocks[0].status, ClockStatus::Paused);
        ticket
            .change_status(Status::RESOLVED, Actor::System, t(9, 20))
            .unwrap();
        ticket
            .change_status(Status::REOPENED, Actor::Customer, t(11, 20))
            .unwrap();
        let clocks = policy()
            .evaluate(
                &office(),
                &ticket.sla_timeline(),
                Priority::Normal,
                t(11, 30),
            )
            .unwrap();
        // Resolution: 10 min before pending, 10 min after reopening.
        assert_eq!(clocks[2].elapsed_minutes, 20);
        assert_eq!(clocks[2].due_at, Some(t(11, 20) + Duration::minutes(230)));
    }

    #[test]
    fn a_resolved_ticket_never_breaches_a_response_target() {
        let mut ticket = Ticket::open(
            TicketId::new(),
            TenantId::new(),
            NewTicket::new("x"),
            t(9, 0),
        );
        ticket
            .change_status(Status::RESOLVED, Actor::System, t(9, 10))
            .unwrap();
        let clocks = policy()
            .evaluate(
                &office(),
                &ticket.sla_timeline(),
                Priority::Normal,
                t(16, 0),
            )
            .unwrap();
        assert_eq!(clocks[0].status, ClockStatus::Paused);
        assert_eq!(clocks[0].due_at, None);
        assert_eq!(clocks[0].elapsed_minutes, 10);
        assert_eq!(clocks[2].status, ClockStatus::Met);
    }

    #[test]
    fn clocks_pause_by_status_name_only() {
        let reminder =
            Status::custom("pending reminder", crate::vocab::StatusCategory::Pending).unwrap();
        let waiting =
            Status::custom("waiting on customer", crate::vocab::StatusCategory::Pending).unwrap();
        let by_name = SlaPolicy::builder(SlaPolicyId::from_u128(2), "desk")
            .targets(
                Priority::Normal,
                SlaTarget::business(60).unwrap(),
                SlaTarget::business(240).unwrap(),
            )
            .pause_in(&reminder)
            .build()
            .unwrap();
        assert!(by_name.pauses_in(&reminder));
        assert!(!by_name.pauses_in(&Status::PENDING));
        assert!(!by_name.pauses_in(&waiting));
        let due_after_30_minutes_in = |status: &Status| {
            let mut timeline = SlaTimeline::new(t(9, 0));
            timeline.statuses.push((t(9, 10), status.clone()));
            timeline.statuses.push((t(9, 40), Status::OPEN));
            by_name
                .evaluate(&office(), &timeline, Priority::Normal, t(9, 50))
                .unwrap()[0]
                .due_at
        };
        assert_eq!(due_after_30_minutes_in(&reminder), Some(t(10, 30)));
        // Same category, other name: the clock runs.
        assert_eq!(due_after_30_minutes_in(&waiting), Some(t(10, 0)));
        assert_eq!(due_after_30_minutes_in(&Status::PENDING), Some(t(10, 0)));
        let json = serde_json::to_string(&by_name).unwrap();
        assert!(json.contains(r#""pause_statuses":["pending reminder"]"#));
        assert_eq!(serde_json::from_str::<SlaPolicy>(&json).unwrap(), by_name);
    }

    #[test]
    fn default_policy_matches_the_isp_table() {
        let policy = SlaPolicy::isp_default(SlaPolicyId::new());
        let critical = policy.targets_for(Priority::Critical);
        assert_eq!(critical.first_response, SlaTarget::calendar(15).ok());
        assert_eq!(critical.resolution, SlaTarget::calendar(240).ok());
        let low = policy.targets_for(Priority::Low);
        assert_eq!(low.first_response, SlaTarget::business(48 * 60).ok());
        assert_eq!(low.resolution, SlaTarget::business(168 * 60).ok());
        assert_eq!(
            policy.targets_for(Priority::Normal).resolution,
            SlaTarget::business(72 * 60).ok()
        );
    }
}
