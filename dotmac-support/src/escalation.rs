//! Escalation rules: what happens when an SLA clock nears or passes its due time.
//!
//! Each rule fires at most once per ticket per clock: the clock is identified by its metric and
//! its start (a new customer message starts a new next-response clock, which may escalate
//! again). What fired is remembered in [`SlaMarks`], which the service stores per ticket.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use dotmac_core::define_id;
use serde::{Deserialize, Serialize};

use crate::sla::{ClockState, ClockStatus, SlaMetric};
use crate::vocab::QueueId;

define_id! {
    /// An escalation rule.
    EscalationRuleId
}

/// When a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "on", content = "metric")]
pub enum EscalationTrigger {
    /// The clock entered its warning window (near breach).
    Warning(SlaMetric),
    /// The clock passed its due time.
    Breach(SlaMetric),
}

impl EscalationTrigger {
    /// The clock it watches.
    pub fn metric(self) -> SlaMetric {
        match self {
            EscalationTrigger::Warning(m) | EscalationTrigger::Breach(m) => m,
        }
    }

    /// Whether a clock in this state fires it.
    pub fn fires_on(self, clock: &ClockState) -> bool {
        if clock.metric != self.metric() {
            return false;
        }
        match self {
            EscalationTrigger::Warning(_) => clock.status == ClockStatus::Warning,
            EscalationTrigger::Breach(_) => clock.status == ClockStatus::Breached,
        }
    }
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
#[non_exhaustive]
pub enum EscalationAction {
    /// Tell someone (a supervisor's address, a chat channel): the service emits an event.
    Notify {
        /// Who.
        recipient: String,
    },
    /// Move the ticket to another queue (and unassign it, so that queue assigns it).
    Reassign {
        /// The queue.
        queue: QueueId,
    },
    /// Raise the priority one step (critical stays critical).
    RaisePriority,
}

/// An escalation rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationRule {
    /// Id.
    pub id: EscalationRuleId,
    /// Name.
    pub name: String,
    /// When.
    pub trigger: EscalationTrigger,
    /// What.
    pub action: EscalationAction,
}

/// Something that fired once for one clock of one ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "rule")]
pub enum MarkKind {
    /// The SLA warning event.
    Warned,
    /// The SLA breach event.
    Breached,
    /// The clock's outcome was recorded for statistics.
    Recorded,
    /// An escalation rule.
    Rule(EscalationRuleId),
}

/// One mark: a kind, for a clock (metric and start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlaMark {
    /// What fired.
    pub kind: MarkKind,
    /// The clock's metric.
    pub metric: SlaMetric,
    /// The clock's start.
    pub clock_started_at: DateTime<Utc>,
}

/// What already fired for a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlaMarks {
    /// The marks.
    pub marks: BTreeSet<SlaMark>,
}

impl SlaMarks {
    /// Records a mark; `true` when it is new (so the caller fires it).
    pub fn mark(&mut self, kind: MarkKind, clock: &ClockState) -> bool {
        self.marks.insert(SlaMark {
            kind,
            metric: clock.metric,
            clock_started_at: clock.started_at,
        })
    }
}

/// The rules that fire now for these clocks, marking them fired. Rules already fired for the
/// same clock are skipped.
pub fn due_escalations<'r>(
    rules: &'r [EscalationRule],
    clocks: &[ClockState],
    marks: &mut SlaMarks,
) -> Vec<&'r EscalationRule> {
    let mut fired = Vec::new();
    for rule in rules {
        for clock in clocks {
            if rule.trigger.fires_on(clock) && marks.mark(MarkKind::Rule(rule.id), clock) {
                fired.push(rule);
            }
        }
    }
    fired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::SlaTarget;
    use chrono::TimeZone;

    fn clock(status: ClockStatus, started: u32) -> ClockState {
        ClockState {
            metric: SlaMetric::FirstResponse,
            target: SlaTarget::business(60).unwrap(),
            started_at: Utc.with_ymd_and_hms(2026, 3, 2, started, 0, 0).unwrap(),
            due_at: None,
            warn_at: None,
            stopped_at: None,
            elapsed_minutes: 0,
            status,
        }
    }

    #[test]
    fn fires_once_per_clock() {
        let rules = vec![
            EscalationRule {
                id: EscalationRuleId::from_u128(1),
                name: "tell lead".into(),
                trigger: EscalationTrigger::Warning(SlaMetric::FirstResponse),
                action: EscalationAction::Notify {
                    recipient: "lead".into(),
                },
            },
            EscalationRule {
                id: EscalationRuleId::from_u128(2),
                name: "raise".into(),
                trigger: EscalationTrigger::Breach(SlaMetric::FirstResponse),
                action: EscalationAction::RaisePriority,
            },
        ];
        let mut marks = SlaMarks::default();
        let fired = due_escalations(&rules, &[clock(ClockStatus::Warning, 9)], &mut marks);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].id, EscalationRuleId::from_u128(1));
        assert!(due_escalations(&rules, &[clock(ClockStatus::Warning, 9)], &mut marks).is_empty());
        let fired = due_escalations(&rules, &[clock(ClockStatus::Breached, 9)], &mut marks);
        assert_eq!(fired.len(), 1);
        assert!(due_escalations(&rules, &[clock(ClockStatus::Breached, 9)], &mut marks).is_empty());
        // A new clock (another start) may escalate again.
        assert_eq!(
            due_escalations(&rules, &[clock(ClockStatus::Breached, 10)], &mut marks).len(),
            1
        );
    }
}
