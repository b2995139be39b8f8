//! Customer satisfaction (CSAT): one response per ticket, aggregated per agent, queue and period.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dotmac_core::define_id;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SupportError};
use crate::vocab::{AgentId, QueueId, TicketId};

define_id! {
    /// A CSAT response.
    CsatResponseId
}

/// A score from 1 (very dissatisfied) to 5 (very satisfied); 4 and 5 count as satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub struct CsatScore(u8);

impl CsatScore {
    /// A score.
    ///
    /// # Errors
    ///
    /// [`SupportError::InvalidScore`] outside 1..=5.
    pub fn new(score: i64) -> Result<Self> {
        match u8::try_from(score) {
            Ok(s @ 1..=5) => Ok(CsatScore(s)),
            _ => Err(SupportError::InvalidScore(score)),
        }
    }

    /// The value.
    pub fn value(self) -> u8 {
        self.0
    }

    /// 4 or 5.
    pub fn is_satisfied(self) -> bool {
        self.0 >= 4
    }
}

impl TryFrom<i64> for CsatScore {
    type Error = SupportError;
    fn try_from(v: i64) -> Result<Self> {
        CsatScore::new(v)
    }
}

impl From<CsatScore> for u8 {
    fn from(s: CsatScore) -> u8 {
        s.0
    }
}

/// A customer's rating of a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsatResponse {
    /// Id.
    pub id: CsatResponseId,
    /// The ticket rated.
    pub ticket: TicketId,
    /// The agent who held it.
    pub agent: Option<AgentId>,
    /// Its queue.
    pub queue: Option<QueueId>,
    /// The score.
    pub score: CsatScore,
    /// Free text.
    pub comment: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Aggregate of responses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CsatSummary {
    /// Responses counted.
    pub responses: u64,
    /// Scores of 4 or 5.
    pub satisfied: u64,
    /// satisfied / responses × 100, to two decimals (half away from zero); zero without responses.
    pub csat_percent: Decimal,
    /// Mean score, to two decimals.
    pub average_score: Decimal,
}

impl CsatSummary {
    /// Aggregates the responses dated in `[from, to)`.
    pub fn of<'a>(
        responses: impl IntoIterator<Item = &'a CsatResponse>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Self {
        let mut summary = CsatSummary::default();
        let mut total: u64 = 0;
        for r in responses.into_iter().filter(|r| r.at >= from && r.at < to) {
            // Counts of responses in memory, scores of at most 5: a u64 does not fill up.
            summary.responses = summary.responses.saturating_add(1);
            total = total.saturating_add(u64::from(r.score.value()));
            if r.score.is_satisfied() {
                summary.satisfied = summary.satisfied.saturating_add(1);
            }
        }
        if summary.responses > 0 {
            let n = Decimal::from(summary.responses);
            let round =
                |d: Decimal| d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
            // A u64 × 100 fits in a Decimal and `n` is at least 1: the defaults are never taken.
            summary.csat_percent = round(
                Decimal::from(summary.satisfied)
                    .checked_mul(Decimal::ONE_HUNDRED)
                    .and_then(|p| p.checked_div(n))
                    .unwrap_or_default(),
            );
            summary.average_score = round(Decimal::from(total).checked_div(n).unwrap_or_default());
        }
        summary
    }

    /// One summary per agent (responses without an agent are left out).
    pub fn by_agent(
        responses: &[CsatResponse],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeMap<AgentId, CsatSummary> {
        group(responses, |r| r.agent, from, to)
    }

    /// One summary per queue (responses without a queue are left out).
    pub fn by_queue(
        responses: &[CsatResponse],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeMap<QueueId, CsatSummary> {
        group(responses, |r| r.queue, from, to)
    }
}

fn group<K: Ord + Copy>(
    responses: &[CsatResponse],
    key: impl Fn(&CsatResponse) -> Option<K>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<K, CsatSummary> {
    let mut groups: BTreeMap<K, Vec<&CsatResponse>> = BTreeMap::new();
    for r in responses {
        if let Some(k) = key(r) {
            groups.entry(k).or_default().push(r);
        }
    }
    groups
        .into_iter()
        .map(|(k, rs)| (k, CsatSummary::of(rs, from, to)))
        .filter(|(_, s)| s.responses > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn scores_are_checked() {
        assert_eq!(CsatScore::new(0), Err(SupportError::InvalidScore(0)));
        assert_eq!(CsatScore::new(6), Err(SupportError::InvalidScore(6)));
        assert!(serde_json::from_str::<CsatScore>("7").is_err());
        assert_eq!(serde_json::from_str::<CsatScore>("4").unwrap().value(), 4);
    }

    #[test]
    fn aggregates_per_agent_and_period() {
        let (a, b) = (AgentId::from_u128(1), AgentId::from_u128(2));
        let day = |d| Utc.with_ymd_and_hms(2026, 3, d, 12, 0, 0).unwrap();
        let r = |agent, score, d| CsatResponse {
            id: CsatResponseId::new(),
            ticket: TicketId::new(),
            agent: Some(agent),
            queue: None,
            score: CsatScore::new(score).unwrap(),
            comment: None,
            at: day(d),
        };
        let all = vec![r(a, 5, 1), r(a, 2, 2), r(a, 4, 3), r(b, 1, 2), r(b, 5, 20)];
        let march_first_week = CsatSummary::by_agent(&all, day(1), day(8));
        let sa = &march_first_week[&a];
        assert_eq!((sa.responses, sa.satisfied), (3, 2));
        assert_eq!(sa.csat_percent, Decimal::new(6667, 2));
        assert_eq!(sa.average_score, Decimal::new(367, 2));
        assert_eq!(march_first_week[&b].responses, 1);
        assert_eq!(CsatSummary::by_queue(&all, day(1), day(8)).len(), 0);
    }
}
