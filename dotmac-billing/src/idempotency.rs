//! Idempotency for billing's keyed writes: credit notes and manual (pending) charges.
//!
//! The key, the record and the replay rule are `dotmac-core`'s ([`IdempotencyKey`],
//! [`dotmac_core::IdempotencyRecord`]); this module names what billing keeps with a key: the
//! request ([`IdempotentRequest`]) and what it did ([`IdempotentResult`]). Keys share one space
//! per tenant with `dotmac-collections`' payments and refunds.

use dotmac_core::InvoiceId;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::invoice::{CreditNote, CreditRequest, PendingCharge};

pub use dotmac_core::IdempotencyKey;

/// What a keyed write was asked to do, kept whole with the key: a retry's request is compared
/// with it field by field (the most exact fingerprint there is; amounts compare as numbers, so
/// `10.0` and `10.00` are the same request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum IdempotentRequest {
    /// A credit note against an invoice.
    CreditNote {
        /// The invoice credited.
        invoice: InvoiceId,
        /// What is credited.
        credit: CreditRequest,
        /// Why.
        reason: Option<String>,
        /// What happens to the part the invoice no longer owes (records written before the
        /// field existed read as credit).
        #[serde(default)]
        settlement: crate::settlement::CreditSettlement,
    },
    /// A manual charge (or credit) for a customer's next invoice.
    PendingCharge {
        /// The charge, id included.
        charge: PendingCharge,
    },
}

/// What a keyed write did: returned again, unchanged, to every retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum IdempotentResult {
    /// The credit note issued, with its number.
    CreditNote {
        /// The note.
        credit_note: CreditNote,
    },
    /// Whether the pending charge was added (`false`: its id was already known).
    PendingCharge {
        /// As [`InvoiceStore::add_pending_charge`](crate::InvoiceStore::add_pending_charge).
        added: bool,
    },
}

/// A billing key with its request: what the service hands a store for a keyed write.
pub type KeyedRequest = dotmac_core::KeyedRequest<IdempotentRequest>;

/// What a store keeps for a billing key.
pub type IdempotencyRecord = dotmac_core::IdempotencyRecord<IdempotentRequest, IdempotentResult>;

/// What a keyed billing store write did.
pub type KeyedWrite<T> = dotmac_core::KeyedWrite<T, IdempotencyRecord>;

/// The error of a store that keeps no idempotency keys (the default of the keyed store
/// methods).
pub(crate) fn unsupported() -> BillingError {
    BillingError::InvalidConfiguration {
        what: "store",
        reason: "this store does not keep idempotency keys",
    }
}

/// A result of another kind than the request's: a record the store mixed up.
pub(crate) fn mismatched() -> BillingError {
    BillingError::InvalidConfiguration {
        what: "idempotency record",
        reason: "the stored result does not match the kind of request",
    }
}
