//! Payout runs: instructions to pay partners what is payable, recorded as facts (the run and
//! a payout entry per partner) and published as events. A run never moves money: the
//! application pays each instruction through its own bank or payment provider.

use chrono::{DateTime, NaiveDate, Utc};
use dotmac_core::outbox::{Aggregate, OutboxPayload};
use dotmac_core::{EventPayload, Money};
use serde::{Deserialize, Serialize};

use crate::ids::{PartnerId, PayoutId, PayoutRunId};
use crate::partner::PartnerStatus;

/// Pay `partner` `amount`: one instruction of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutInstruction {
    /// The payout (its ledger entry names it).
    pub payout: PayoutId,
    /// The run.
    pub run: PayoutRunId,
    /// Who to pay.
    pub partner: PartnerId,
    /// How much.
    pub amount: Money,
    /// The day the run was for.
    pub as_of: NaiveDate,
}

/// Why a run paid a partner nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum PayoutSkip {
    /// The partner is not paid in this status (applied, suspended).
    Status {
        /// The status on the run's day.
        status: PartnerStatus,
    },
    /// Nothing payable: below the minimum payout, still in its hold period, held, or a balance
    /// at or below zero.
    NothingPayable {
        /// The balance on the run's day.
        balance: Money,
    },
}

/// One payout run, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRun {
    /// The run (one per tenant and day: [`PayoutRunId::for_date`]).
    pub id: PayoutRunId,
    /// What was payable on this day was paid.
    pub as_of: NaiveDate,
    /// When it ran, by the service's clock.
    pub created_at: DateTime<Utc>,
    /// The instructions, by partner id.
    pub instructions: Vec<PayoutInstruction>,
    /// The partners paid nothing, and why, by partner id.
    pub skipped: Vec<(PartnerId, PayoutSkip)>,
}

/// What the partners service publishes through the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum PartnerEvent {
    /// A payout run instructed a payment to a partner (`partners.payout_instructed`): the
    /// application pays it.
    PayoutInstructed(PayoutInstruction),
}

impl EventPayload for PartnerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            PartnerEvent::PayoutInstructed(_) => "partners.payout_instructed",
        }
    }
}

/// Every partner event is about its partner: handled in order per partner.
impl OutboxPayload for PartnerEvent {
    fn aggregate(&self) -> Aggregate {
        match self {
            PartnerEvent::PayoutInstructed(i) => Aggregate::new("partner", i.partner.as_uuid()),
        }
    }
}
