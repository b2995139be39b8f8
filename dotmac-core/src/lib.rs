//! # dotmac-core
//!
//! The shared vocabulary of [DotMac](https://github.com/dotmac-sdk/dotmac), the Rust SDK for the
//! business side of an internet service provider: exact [`Money`] in ISO [`Currency`]s, typed
//! ids ([`TenantId`], [`InvoiceId`], …), a [`Clock`] so that time is always an input, drift-free
//! [`BillingInterval`] and [`Period`] arithmetic, and the [`DomainEvent`] envelope that every
//! service returns.
//!
//! This crate does no I/O and never reads the system time except through [`SystemClock`].
//! Nothing here panics on caller input: fallible operations return [`CoreError`].
//!
//! ## Example
//!
//! ```
//! use chrono::NaiveDate;
//! use dotmac_core::{BillingInterval, Currency, Money, RoundingMode};
//! use rust_decimal::Decimal;
//!
//! // A 29.99/month plan started on the 15th, billed on the 1st: prorate the first part.
//! let price = Money::parse("29.99", Currency::USD)?;
//! let anchor = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
//! let start = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
//! let (_, march) = BillingInterval::MONTHLY.period_containing(anchor, start)?;
//! let used = march.from_date(start).map_or(0, |p| p.days());
//! let charge = price.mul_ratio(used, march.days())?.round(RoundingMode::HalfUp);
//! assert_eq!(charge.amount(), Decimal::new(1645, 2)); // 29.99 × 17/31
//! # Ok::<(), dotmac_core::CoreError>(())
//! ```
//!
//! ## Features
//!
//! None: everything is always on. Serde is part of the vocabulary.

// Unchecked arithmetic is refused in library code: `+` on a `Decimal` panics on overflow and on
// an integer wraps in release. Use checked operations (`Money::checked_add`, `checked_sum`, …) or
// an `allow` that says why the operation cannot overflow. Tests may use plain operators.
// `Iterator::sum`/`product` panic on overflow too: `clippy.toml` disallows them here.
#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]
#![cfg_attr(not(test), warn(clippy::disallowed_methods))]

mod clock;
mod currency;
mod error;
mod event;
mod id;
mod idempotency;
#[cfg(any(test, feature = "testkit"))]
pub mod metrics_recorder;
mod money;
mod numbering;
pub mod outbox;
mod period;
#[cfg(any(test, feature = "testkit"))]
pub mod span_recorder;
mod zone;

pub use clock::{Clock, FixedClock, ManualClock, SystemClock};
pub use currency::Currency;
pub use error::{CoreError, Result, StorageError, StorageErrorKind, StorageSource};
pub use event::{DomainEvent, EventPayload};
pub use id::{
    CreditNoteId, CustomerId, EventId, IdDigest, InvoiceId, MeterId, PaymentId, PendingChargeId,
    PlanId, ProductId, SubscriptionId, TenantId, UsageEventId,
};
pub use idempotency::{IdempotencyKey, IdempotencyRecord, KeyedRequest, KeyedWrite};
pub use money::{Money, RoundingMode, checked_sum};
pub use numbering::{InvoiceNumberFormat, NumberReset};
pub use period::{BillingInterval, IntervalUnit, Period, days_in_month};
pub use zone::{local_date, local_midnight};

/// Hash maps and sets for DotMac's own keys (ids, indices): foldhash instead of SipHash,
/// which costs more than the rest of a usage ingest. Keys are ids, never chosen by an attacker
/// aiming for collisions, and foldhash still seeds per process.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The set counterpart of [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Re-exports of the crates that DotMac's public API is built from, so that embedders use the
/// same versions.
pub mod reexports {
    pub use chrono;
    pub use chrono_tz;
    pub use rust_decimal;
}

#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use uuid;
}
