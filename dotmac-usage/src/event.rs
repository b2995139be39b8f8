//! The usage vocabulary: events, meters and how meters aggregate. A leaf module: the
//! aggregator, the period arithmetic, the store and the RADIUS normaliser all build on it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dotmac_core::{CustomerId, MeterId, SubscriptionId, UsageEventId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One usage measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// The idempotency key.
    pub id: UsageEventId,
    /// Whose usage it is.
    pub customer: CustomerId,
    /// The subscription it belongs to, when the sender knows it.
    pub subscription: Option<SubscriptionId>,
    /// What it measures.
    pub meter: MeterId,
    /// How much (never negative). For a `weighted_sum` meter: the gauge's new level.
    pub quantity: Decimal,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Free-form dimensions; `unique_count` meters count distinct values of one of them.
    pub properties: BTreeMap<String, String>,
}

/// How a meter aggregates the events of one billing period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum Aggregation {
    /// The number of events.
    Count,
    /// The sum of the quantities.
    Sum,
    /// The largest quantity.
    Max,
    /// The number of distinct values of one property (events without it are not counted).
    UniqueCount {
        /// The property whose values are counted.
        property: String,
    },
    /// The quantity of the latest event (by timestamp, then event id).
    Latest,
    /// Time-weighted level of a gauge: each event sets the level from its timestamp on; the
    /// result is Σ level × time held / period length (a 100 Mbps link for half the period is
    /// 50). The level before the period's first event is the previous period's last level.
    WeightedSum,
    /// Time-weighted level of a gauge whose events carry changes (+3 seats, −1 seat) rather
    /// than levels, as Lago's `weighted_sum`: each event adds its quantity (which may be
    /// negative) to the level from its timestamp on; the result is Σ level × time held /
    /// period length. The level at a period's start is the sum of every earlier change.
    WeightedSumOfChanges,
}

/// A meter definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    /// Its id.
    pub id: MeterId,
    /// A stable code, e.g. `"data_download_bytes"`.
    pub code: String,
    /// How its events aggregate.
    pub aggregation: Aggregation,
}
