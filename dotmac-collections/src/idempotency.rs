//! Idempotency for the collections writes that move money: payments and refunds.
//!
//! The key, the record and the replay rule are `dotmac-core`'s; this module names what
//! collections keeps with a key: the request ([`IdempotentRequest`]) and what it did
//! ([`IdempotentResult`]). Keys share one space per tenant with `dotmac-billing`'s credit notes
//! and manual charges, so a key used for a payment cannot be used again for a credit note.

use dotmac_core::{CustomerId, Money, PaymentId};
use serde::{Deserialize, Serialize};

use crate::error::CollectionsError;
use crate::payments::{AllocationTarget, LedgerEntry, PaymentOutcome};

pub use dotmac_core::IdempotencyKey;

/// What a keyed write was asked to do, kept whole with the key: a retry's request is compared
/// with it field by field (amounts compare as numbers, so `10.0` and `10.00` are the same
/// request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum IdempotentRequest {
    /// A payment received.
    Payment {
        /// Who paid.
        customer: CustomerId,
        /// The payment's id.
        payment: PaymentId,
        /// The amount.
        amount: Money,
        /// Where it goes.
        target: AllocationTarget,
    },
    /// A refund of (part of) a payment.
    Refund {
        /// Whose payment.
        customer: CustomerId,
        /// The payment refunded.
        payment: PaymentId,
        /// The amount returned.
        amount: Money,
    },
}

/// What a keyed write did: returned again, unchanged, to every retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum IdempotentResult {
    /// The payment's receipt and allocations.
    Payment {
        /// What recording it did.
        outcome: PaymentOutcome,
    },
    /// The refund's ledger entries.
    Refund {
        /// The entries appended.
        entries: Vec<LedgerEntry>,
    },
}

/// A collections key with its request: what the service hands a store for a keyed write.
pub type KeyedRequest = dotmac_core::KeyedRequest<IdempotentRequest>;

/// What a store keeps for a collections key.
pub type IdempotencyRecord = dotmac_core::IdempotencyRecord<IdempotentRequest, IdempotentResult>;

/// What a keyed collections store write did.
pub type KeyedWrite<T> = dotmac_core::KeyedWrite<T, IdempotencyRecord>;

/// The error of a store that keeps no idempotency keys (the default of the keyed store
/// methods).
pub(crate) fn unsupported() -> CollectionsError {
    CollectionsError::InvalidConfiguration {
        what: "store",
        reason: "this store does not keep idempotency keys",
    }
}

/// A result of another kind than the request's: a record the store mixed up.
pub(crate) fn mismatched() -> CollectionsError {
    CollectionsError::InvalidConfiguration {
        what: "idempotency record",
        reason: "the stored result does not match the kind of request",
    }
}
