//! Idempotency keys for the writes that move money (payments, refunds, credit notes, manual
//! charges), shared by every domain crate that takes them.
//!
//! Stripe's semantics: a key names one request. The store keeps, per tenant, the key, the
//! request it came with and what that request did, written in the same transaction as the
//! write itself. A retry with the same key and the same request gets the original result back
//! (nothing is written again and no event is raised again); the same key with a different
//! request is [`CoreError::IdempotencyKeyReused`]. One key space per tenant: a key used for a
//! payment cannot be used again for a credit note. Each domain crate names its own request and
//! result types (`dotmac_billing::idempotency`, `dotmac_collections::idempotency`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::CoreError;

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
    /// [`CoreError::InvalidIdempotencyKey`] for an empty key, one longer than
    /// [`IdempotencyKey::MAX_LEN`] bytes, or one with a character outside `!`..=`~`.
    pub fn new(key: impl Into<String>) -> Result<Self, CoreError> {
        let key = key.into();
        if key.is_empty() {
            return Err(CoreError::InvalidIdempotencyKey {
                reason: "the key is empty",
            });
        }
        if key.len() > Self::MAX_LEN {
            return Err(CoreError::InvalidIdempotencyKey {
                reason: "the key is longer than 255 bytes",
            });
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CoreError::InvalidIdempotencyKey {
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
    type Error = CoreError;
    fn try_from(key: String) -> Result<Self, Self::Error> {
        IdempotencyKey::new(key)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
    }
}

/// A key with the request it came with, and when: what a service hands a store for a keyed
/// write. `R` is the domain's request type; it is kept whole, and a retry's request is
/// compared with it field by field (the most exact fingerprint there is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedRequest<R> {
    /// The key.
    pub key: IdempotencyKey,
    /// The request.
    pub request: R,
    /// When it was first made (the service's clock).
    pub at: DateTime<Utc>,
}

impl<R: Clone> KeyedRequest<R> {
    /// The record of this request with what it did.
    pub fn record<O>(&self, result: O) -> IdempotencyRecord<R, O> {
        IdempotencyRecord {
            key: self.key.clone(),
            request: self.request.clone(),
            result,
            recorded_at: self.at,
        }
    }
}

/// What a store keeps for a key: the request (`R`) and its result (`O`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord<R, O> {
    /// The key.
    pub key: IdempotencyKey,
    /// The request first made with it.
    pub request: R,
    /// What that request did.
    pub result: O,
    /// When it was made.
    pub recorded_at: DateTime<Utc>,
}

impl<R: PartialEq, O: Clone> IdempotencyRecord<R, O> {
    /// The original result for a retry of `request`.
    ///
    /// # Errors
    ///
    /// [`CoreError::IdempotencyKeyReused`] when `request` is not the request first made with
    /// the key.
    pub fn replay(&self, request: &R) -> Result<O, CoreError> {
        if &self.request != request {
            return Err(CoreError::IdempotencyKeyReused {
                key: self.key.0.clone(),
            });
        }
        Ok(self.result.clone())
    }
}

/// What a keyed store write did; `Rec` is the domain's [`IdempotencyRecord`]. Exactly two
/// outcomes, like `Option`: deliberately exhaustive so that callers can match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedWrite<T, Rec> {
    /// The key was new: the write was done and the key recorded with it.
    Written(T),
    /// The key was already recorded (a concurrent retry won): nothing was written; the
    /// record is returned for [`IdempotencyRecord::replay`].
    Replayed(Box<Rec>),
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
            Err(CoreError::InvalidIdempotencyKey {
                reason: "the key is empty"
            })
        );
        assert_eq!(
            IdempotencyKey::new("a".repeat(256)),
            Err(CoreError::InvalidIdempotencyKey {
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
                Err(CoreError::InvalidIdempotencyKey {
                    reason: "the key must be printable ASCII without spaces"
                })
            );
        }
    }

    #[test]
    fn a_retry_replays_and_another_request_is_refused() {
        let keyed = KeyedRequest {
            key: IdempotencyKey::new("k").unwrap(),
            request: 5u32,
            at: DateTime::<Utc>::MIN_UTC,
        };
        let record = keyed.record("done");
        assert_eq!(record.replay(&5), Ok("done"));
        assert_eq!(
            record.replay(&6),
            Err(CoreError::IdempotencyKeyReused { key: "k".into() })
        );
    }
}
