//! Ids: a leaf module, so that every other module can name them without importing the crate
//! root.

use dotmac_core::{EventId, IdDigest, PaymentId};

dotmac_core::define_id! {
    /// A reseller, referral partner or master agent.
    PartnerId
}

dotmac_core::define_id! {
    /// A commission plan: the terms a partner earns on.
    CommissionPlanId
}

dotmac_core::define_id! {
    /// A payout run: one pass over every partner's payable balance on a date.
    PayoutRunId
}

dotmac_core::define_id! {
    /// One payout instruction of a run, to one partner.
    PayoutId
}

dotmac_core::define_id! {
    /// A hold an operator put on part of a partner's balance.
    HoldId
}

dotmac_core::define_id! {
    /// The fact a ledger write comes from: an outbox event (a payment received, a refund), a
    /// payout run, an operator's hold, approval or adjustment. A partner store records each
    /// source once, so a replayed fact writes nothing.
    SourceId
}

impl SourceId {
    /// The source of what an outbox event carries: the event's own id.
    pub fn of_event(event: EventId) -> Self {
        SourceId::from_uuid(event.as_uuid())
    }

    /// A source derived from a payment or refund id, for callers that feed payments in
    /// directly (imports, tests) rather than through the outbox.
    pub fn of_payment(payment: PaymentId) -> Self {
        SourceId::derived(IdDigest::new("partner-source-payment").uuid(payment.as_uuid()))
    }
}

impl PayoutRunId {
    /// The run of `as_of` for `tenant`: running the payouts of a date twice is one run.
    pub fn for_date(tenant: dotmac_core::TenantId, as_of: chrono::NaiveDate) -> Self {
        PayoutRunId::derived(
            IdDigest::new("partner-payout-run")
                .uuid(tenant.as_uuid())
                .str(&as_of.to_string()),
        )
    }
}

impl PayoutId {
    /// The instruction of `run` to `partner` (one per partner and run).
    pub fn of(run: PayoutRunId, partner: PartnerId) -> Self {
        PayoutId::derived(
            IdDigest::new("partner-payout")
                .uuid(run.as_uuid())
                .uuid(partner.as_uuid()),
        )
    }
}
