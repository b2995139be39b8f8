//! # dotmac-collections
//!
//! Getting paid, for [DotMac](https://github.com/dotmac-sdk/dotmac): the append-only payments
//! ledger per customer ([`CustomerLedger`]: allocation oldest-first or to a named invoice,
//! customer credit, refunds), dunning ([`DunningPolicy`] and the pure [`evaluate`]: reminders,
//! late fees, suspension, restore on payment, write-off), and receivables ageing
//! ([`receivables_ageing`]). [`CollectionsService`] runs them over a [`PaymentStore`] and a
//! [`DunningStore`] with a [`Clock`](dotmac_core::Clock), idempotently (payments and refunds
//! take an [`IdempotencyKey`]), and returns [`DomainEvent`](dotmac_core::DomainEvent)s of
//! [`CollectionEvent`].
//!
//! Fees (a late-fee step's, a reconnection fee) become `dotmac-billing`
//! [`PendingCharge`](dotmac_billing::PendingCharge)s for the customer's next invoice
//! ([`FiredAction::pending_charge`]); that is this crate's one use of billing.
//!
//! ```
//! use chrono::NaiveDate;
//! use dotmac_collections::{AllocationTarget, CustomerLedger};
//! use dotmac_core::{Currency, CustomerId, InvoiceId, Money, PaymentId};
//!
//! let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
//! let usd = |minor| Money::from_minor(minor, Currency::USD);
//! let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
//! ledger.record_invoice(InvoiceId::from_u128(1), usd(3000), day(1), day(15))?;
//! ledger.record_payment(PaymentId::from_u128(9), usd(5000), day(10), AllocationTarget::OldestFirst)?;
//! assert!(ledger.invoice(InvoiceId::from_u128(1)).unwrap().open().is_zero());
//! assert_eq!(ledger.credit(), usd(2000)); // what no invoice needed stays as credit
//! # Ok::<(), dotmac_collections::CollectionsError>(())
//! ```

// Unchecked arithmetic is refused in library code: `+` on a `Decimal` panics on overflow and on
// an integer wraps in release. Use checked operations or an `allow` that says why the operation
// cannot overflow. Tests may use plain operators.
#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]
#![cfg_attr(not(test), warn(clippy::disallowed_methods))]

// Module graph (each imports only those listed; no cycle): error; idempotency ← error,
// payments; payments ← error, idempotency (types only, no functions: payments' store methods
// name the record type); dunning ← error, payments; ageing ← error, payments;
// service ← dunning, error, idempotency, payments.
mod ageing;
mod dunning;
mod error;
pub mod idempotency;
mod payments;
mod service;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use ageing::{Ageing, receivables_ageing};
pub use dunning::{
    CollectionAction, DunningInvoice, DunningPolicy, DunningPolicyBuilder, DunningState,
    DunningStep, DunningStore, FiredAction, InMemoryDunningStore, MAX_DUNNING_STEPS,
    MAX_STEP_NAME_LEN, RestoreOnPayment, StepEffect, StepName, evaluate,
};
pub use error::{CollectionsError, CollectionsFailure};
pub use idempotency::{IdempotencyKey, IdempotencyRecord, IdempotentRequest, IdempotentResult};
pub use payments::{
    AllocationTarget, BalanceState, CreditSettlement, CustomerLedger, InMemoryPaymentStore,
    InvoiceBalance, LedgerEntry, LedgerEntryKind, PaymentOutcome, PaymentStore, Reconciliation,
    Settlement,
};
pub use service::{
    CollectionEvent, CollectionsRunSummary, CollectionsService, CollectionsSettings, CreditApplied,
    CreditNoteToEnter, InvoiceBalanceChanged, InvoiceToEnter, PaymentRequest, RefundRequest,
};
