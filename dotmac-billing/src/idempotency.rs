//! Idempotency keys for the writes that move money: payments, refunds, credit notes and
//! manual (pending) charges.
//!
//! Stripe's semantics: a key names one request. The store keeps, per tenant, the key, the
//! request it came with and what that request did, written in the same transaction as the
//! write itself. A retry with the same key and the same request gets the original result back
//! (nothing is written again and no event is raised again); the same key with a different
//! request is [`BillingError::IdempotencyKeyReused`]. One key space per tenant and store: a key
//! used for a payment cannot be used again for a refund.

use std::fmt;

use chrono::{DateTime, Utc};
use dotmac_core::{CustomerId, InvoiceId, Money, PaymentId};
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::invoice::{CreditNote, CreditRequest, PendingCharge};
use crate::payments::{AllocationTarget, LedgerEntry, PaymentOutcome};

/// A caller's idempotency key: 1 to [`IdempotencyKey::MAX_LEN`] bytes of printable ASCII
/// without spaces (a UUID, a processor's request id, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key accepted, in bytes (Stripe's limit).
    pub const MAX_LEN: usize = 255;

    /// Validates a key.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidIdempotencyKey`] for an empty key, one longer than
    /// [`IdempotencyKey::MAX_LEN`] bytes, or one with a character outside `!`..=`~`.
    pub fn new(key: impl Into<String>) -> Result<Self, BillingError> {
        let key = key.into();
        if key.is_empty() {
            return Err(BillingError::InvalidIdempotencyKey {
                reason: "the key is empty",
            });
        }
        if key.len() > Self::MAX_LEN {
            return Err(BillingError::InvalidIdempotencyKey {
                reason: "the key is longer than 255 bytes",
            });
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BillingError::InvalidIdempotencyKey {
                reason: "the key must be printable ASCII without spaces",
            });
        }
        Ok(IdempotencyKey(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = BillingError;
    fn try_from(key: String) -> Result<Self, Self::Error> {
        IdempotencyKey::new(key)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
    }
}

/// What a keyed write was asked to do, kept whole with the key: a retry's request is compared
/// with it field by field (the most exact fingerprint there is; amounts compare as numbers, so
/// `10.0` and `10.00` are the same request).
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
    /// A credit note against an invoice.
    CreditNote {
        /// The invoice credited.
        invoice: InvoiceId,
        /// What is credited.
        credit: CreditRequest,
        /// Why.
        reason: Option<String>,
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

/// A key with the request it came with, and when: what a service hands a store for a keyed
/// write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedRequest {
    /// The key.
    pub key: IdempotencyKey,
    /// The request.
    pub request: IdempotentRequest,
    /// When it was first made (the service's clock).
    pub at: DateTime<Utc>,
}

impl KeyedRequest {
    /// The record of this request with what it did.
    pub fn record(&self, result: IdempotentResult) -> IdempotencyRecord {
        IdempotencyRecord {
            key: self.key.clone(),
            request: self.request.clone(),
            result,
            recorded_at: self.at,
        }
    }
}

/// What a store keeps for a key: the request and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The key.
    pub key: IdempotencyKey,
    /// The request first made with it.
    pub request: IdempotentRequest,
    /// What that request did.
    pub result: IdempotentResult,
    /// When it was made.
    pub recorded_at: DateTime<Utc>,
}

impl IdempotencyRecord {
    /// The original result for a retry of `request`.
    ///
    /// # Errors
    ///
    /// [`BillingError::IdempotencyKeyReused`] when `request` is not the request first made
    /// with the key.
    pub fn replay(&self, request: &IdempotentRequest) -> Result<IdempotentResult, BillingError> {
        if &self.request != request {
            return Err(BillingError::IdempotencyKeyReused {
                key: self.key.0.clone(),
            });
        }
        Ok(self.result.clone())
    }
}

/// What a keyed store write did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyedWrite<T> {
    /// The key was new: the write was done and the key recorded with it.
    Written(T),
    /// The key was already recorded (a concurrent retry won): nothing was written; the
    /// record is returned for [`IdempotencyRecord::replay`].
    Replayed(Box<IdempotencyRecord>),
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_printable_ascii() {
        assert!(IdempotencyKey::new("pay_01HZX-42").is_ok());
        assert!(IdempotencyKey::new("a".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::new(""),
            Err(BillingError::InvalidIdempotencyKey {
                reason: "the key is empty"
            })
        );
        assert_eq!(
            IdempotencyKey::new("a".repeat(256)),
            Err(BillingError::InvalidIdempotencyKey {
                reason: "the key is longer than 255 bytes"
            })
        );
        // JSON cannot bypass the check.
        let key: IdempotencyKey = serde_json::from_str(r#""pay-1""#).unwrap();
        assert_eq!(key.as_str(), "pay-1");
        assert_eq!(serde_json::to_string(&key).unwrap(), r#""pay-1""#);
        let err = serde_json::from_str::<IdempotencyKey>(r#""a b""#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid idempotency key: the key must be printable ASCII without spaces"
        );
        for bad in ["with space", "tab\t", "é", "nul\0"] {
            assert_eq!(
                IdempotencyKey::new(bad),
                Err(BillingError::InvalidIdempotencyKey {
                    reason: "the key must be printable ASCII without spaces"
                })
            );
        }
    }
}
