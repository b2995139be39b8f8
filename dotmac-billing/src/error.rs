//! The crate's one error type.

use dotmac_core::CoreError;

/// Everything that can go wrong in `dotmac-billing`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// An error from the core vocabulary (money, periods, ids).
    #[error(transparent)]
    Core(#[from] CoreError),
    // --- usage, RADIUS, payments, dunning, analytics ---
    /// A usage event names a meter that is not defined for the tenant.
    #[error("usage event {event}: unknown meter {meter}; define the meter before sending events to it")]
    UnknownMeter {
        /// The event refused.
        event: crate::usage::UsageEventId,
        /// The meter it named.
        meter: crate::usage::MeterId,
    },
    /// A usage event names a customer the ingestor does not know.
    #[error("usage event {event}: unknown customer {customer}; register the customer first")]
    UnknownCustomer {
        /// The event refused.
        event: crate::usage::UsageEventId,
        /// The customer it named.
        customer: dotmac_core::CustomerId,
    },
    /// A usage event with a negative quantity (usage only ever adds; corrections are credits).
    #[error("usage event {event}: quantity {quantity} is negative; send a credit instead")]
    NegativeQuantity {
        /// The event refused.
        event: crate::usage::UsageEventId,
        /// The quantity given.
        quantity: rust_decimal::Decimal,
    },
    /// A usage event stamped further in the future than the ingestor tolerates (clock skew).
    #[error("usage event {event}: timestamp {timestamp} is after the latest accepted {latest}; check the sender's clock")]
    TimestampInFuture {
        /// The event refused.
        event: crate::usage::UsageEventId,
        /// Its timestamp.
        timestamp: chrono::DateTime<chrono::Utc>,
        /// The latest timestamp accepted at ingestion.
        latest: chrono::DateTime<chrono::Utc>,
    },
    /// A RADIUS accounting record that cannot be turned into usage.
    #[error("malformed RADIUS accounting record: {reason}")]
    MalformedRadiusRecord {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A meter, allowance or dunning policy definition that cannot work.
    #[error("invalid {what}: {reason}")]
    InvalidConfiguration {
        /// What was being configured.
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A payment, refund or credit in a currency other than the customer's.
    #[error("{what} in {got} refused: the customer's account is in {expected}")]
    WrongCurrency {
        /// What was refused ("payment", "refund", ...).
        what: &'static str,
        /// The account's currency.
        expected: &'static str,
        /// The currency given.
        got: &'static str,
    },
    /// An amount that must be above zero was zero or negative.
    #[error("{what} must be greater than zero, got {amount}")]
    NonPositiveAmount {
        /// What the amount was for.
        what: &'static str,
        /// The amount given.
        amount: rust_decimal::Decimal,
    },
    /// An invoice the payments ledger does not know.
    #[error("invoice {0} is not known to the payments ledger; record it before allocating to it")]
    UnknownInvoice(dotmac_core::InvoiceId),
    /// An invoice recorded twice in the payments ledger.
    #[error("invoice {0} is already in the payments ledger")]
    DuplicateInvoice(dotmac_core::InvoiceId),
    /// A payment id used twice.
    #[error("payment {0} is already recorded")]
    DuplicatePayment(dotmac_core::PaymentId),
    /// A payment the ledger does not know (for a refund).
    #[error("payment {0} is not recorded")]
    UnknownPayment(dotmac_core::PaymentId),
    /// A refund larger than what is left of its payment.
    #[error("refund of {requested} exceeds the {refundable} still refundable on payment {payment}")]
    RefundExceedsPayment {
        /// The payment refunded.
        payment: dotmac_core::PaymentId,
        /// The refund asked for.
        requested: rust_decimal::Decimal,
        /// What is left to refund.
        refundable: rust_decimal::Decimal,
    },
    /// A payment aimed at a named invoice that has nothing open.
    #[error("invoice {0} has no open balance to pay")]
    InvoiceSettled(dotmac_core::InvoiceId),
}
