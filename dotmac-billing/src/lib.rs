//! # dotmac-billing
//!
//! The billing core of DotMac: a catalogue of plans with versioned, multi-currency prices;
//! pricing models; subscriptions with an explicit lifecycle; proration; and a deterministic,
//! idempotent bill run that produces invoices and credit notes exact to the cent and
//! explainable line by line. (Usage rating, RADIUS, payments, dunning and analytics live in
//! their own modules of this crate.)
//!
//! The domain is pure and synchronous: [`bill_due`], [`change`], [`cancel`],
//! [`PriceModel::amount`], [`credit_note`] take state and dates and return results; they never
//! read the clock or do I/O. [`BillingService`] orchestrates a store ([`BillingStore`]: the
//! [`CatalogStore`], [`SubscriptionStore`] and [`InvoiceStore`] traits, every call
//! tenant-scoped; [`MemoryStore`] in memory) with the domain and a
//! [`Clock`](dotmac_core::Clock), and returns [`DomainEvent`](dotmac_core::DomainEvent)s of
//! [`BillingEvent`].
//!
//! ## Example
//!
//! ```
//! use chrono::NaiveDate;
//! use dotmac_billing::{
//!     Charge, DocumentSettings, FirstPeriod, NewSubscription, Plan, bill_due,
//! };
//! use dotmac_core::{BillingInterval, Currency, CustomerId, Money, PlanId, ProductId};
//! use rust_decimal::Decimal;
//!
//! let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
//! let plan = Plan::builder(PlanId::new(), ProductId::new(), "Fibre 100")
//!     .interval(BillingInterval::MONTHLY)
//!     .charge(Charge::recurring_flat([Money::parse("30.00", Currency::USD)?]))
//!     .build(day(1, 1))?;
//! // Started on March 15th, billed on the 1st of each month, first part prorated.
//! let sub = NewSubscription::new(CustomerId::new(), plan.id, Currency::USD, day(3, 15))
//!     .anchor(day(1, 1))
//!     .first_period(FirstPeriod::Prorate)
//!     .create(&plan, Currency::USD)?;
//! let run = bill_due(&sub, &plan, &[], day(4, 1), &DocumentSettings::default())?;
//! let totals: Vec<Decimal> = run.invoices.iter().map(|i| i.total.amount()).collect();
//! assert_eq!(totals, [Decimal::new(1645, 2), Decimal::new(3000, 2)]); // 30 × 17/31, then 30
//!
//! // Re-running on the new state finds nothing due: the bill run is idempotent.
//! let again = bill_due(&run.subscription, &plan, &[], day(4, 1), &DocumentSettings::default())?;
//! assert!(again.invoices.is_empty());
//! # Ok::<(), dotmac_billing::BillingError>(())
//! ```
//!
//! ## Types other modules build on
//!
//! - [`Invoice`], [`InvoiceLine`], [`InvoiceStatus`]: an invoice has a `customer`, a
//!   `currency`, an `issue_date`, a `due_date`, a `total` and explainable lines; once issued,
//!   its status and [settlement](InvoiceSettlement) (paid, credited, written off, customer
//!   credit applied as [adjustment lines](InvoiceAdjustment)) follow what the payments ledger
//!   reports ([`BillingService::apply_balance`], [`BillingService::apply_credit`]).
//! - Every state-changing [`BillingService`] call writes its [`BillingEvent`]s to the store's
//!   outbox (`dotmac_core::outbox`) in the same store step as the change.
//! - [`PendingCharge`]: a one-off charge or credit (usage, usage adjustment, late fee,
//!   reconnection fee, deferred proration) with description, unit price, quantity and period.
//!   Add it with [`InvoiceStore::add_pending_charge`] (or
//!   [`BillingService::add_pending_charge`]); the next regular invoice of the subscription (or,
//!   for a charge without subscription, the customer's next invoice) carries it, and the bill
//!   run consumes it in the same atomic [`BillingCommit`].
//!   [`BillingService::invoice_pending_now`] invoices pending charges on their own.
//! - [`Subscription`] (status, segments with plan / version / quantity, currency) and
//!   [`Plan`] (interval, timing, [`PlanVersion`]s with [`Charge`]s):
//!   `plan.version(v)?.recurring_amount(plan.id, currency, quantity)` is one period's price,
//!   and `plan.interval.periods_per_year()` normalises it for MRR.
//!
//! ## Document numbers
//!
//! A store numbers each document as it stores it, gapless, invoices and credit notes each in
//! sequences of their own: one per kind of document, tenant, format prefix and (for a format
//! that resets yearly) year of the document's date (formats that differ only in padding share
//! a sequence) ([`Invoice::number_series`],
//! [`CreditNote::number_series`]). The formats are the tenant's settings
//! ([`BillingSettings::number_format`], [`BillingSettings::credit_note_number_format`]; the
//! default is six digits without a prefix), carried by every document issued, and
//! `number_text` writes a number with its document's format:
//!
//! ```
//! use chrono::NaiveDate;
//! use dotmac_billing::{BillingSettings, InvoiceNumberFormat, NumberReset};
//!
//! let settings = BillingSettings::default()
//!     .with_number_format(InvoiceNumberFormat::new("INV-", 6, NumberReset::Yearly)?)
//!     .with_credit_note_number_format(InvoiceNumberFormat::new("CN-", 4, NumberReset::Never)?);
//! let on = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap_or_default();
//! assert_eq!(settings.number_format.format(42, on), "INV-2026-000042");
//! assert_eq!(settings.credit_note_number_format.format(7, on), "CN-0007");
//! # Ok::<(), dotmac_core::CoreError>(())
//! ```
//!
//! ## The rounding point
//!
//! Nothing is rounded until a line is put on a document by [`DocumentBuilder::push`], which
//! rounds the line amount, its discount and each tax once, with the tenant's
//! [`RoundingMode`](dotmac_core::RoundingMode). Totals are sums of rounded figures.
//!
//! ## Features
//!
//! - `testkit`: `testkit::run_store_suite`, the store behaviour suite, for storage crates.

// Unchecked arithmetic is refused in library code: `+` on a `Decimal` panics on overflow and on
// an integer wraps in release. Use checked operations (`Money::checked_add`, `checked_sum`, …) or
// an `allow` that says why the operation cannot overflow. Tests may use plain operators.
// `Iterator::sum`/`product` panic on overflow too: `clippy.toml` disallows them here.
#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]
#![cfg_attr(not(test), warn(clippy::disallowed_methods))]

pub(crate) use dotmac_core::{FastMap, FastSet};

mod billrun;
mod catalog;
mod discount;
mod error;
mod invoice;
mod memory;
mod pricing;
mod proration;
mod service;
mod settlement;
mod store;
mod subscription;
mod suspension;
mod tax;
#[cfg(feature = "testkit")]
pub mod testkit;

pub mod analytics;
pub mod idempotency;
pub mod usage_billing;

#[doc(hidden)]
pub mod internal {
    //! Plumbing for storage crates (dotmac-sqlx's scale-out bill run and row types), not for
    //! applications: the pieces [`BillingService::run_bill`](crate::BillingService::run_bill)
    //! is made of, so that a store can bill chunks of customers in parallel workers with the
    //! same code, and the constructors a store needs to rebuild a record from its row.
    //!
    //! Hidden from the documentation and **not covered by semantic versioning**: anything here
    //! may change in any release. Use [`BillingService`](crate::BillingService) instead.

    pub use crate::service::{
        BilledChunk, ChunkCommit, bill_chunk, chunk_commits, chunk_customers, invoice_issued_event,
        numbered_credit_note_events, record_chunk, record_chunk_at,
    };
    pub use crate::settlement::check_invoice_update;
    pub use crate::subscription::{
        SubscriptionParts, set_subscription_revision, subscription_from_parts,
        subscription_into_parts,
    };
}

pub use billrun::{
    BillOutcome, CancelTiming, ChangeOutcome, ChangeTiming, PlanLookup, ProrationBehavior,
    SubscriptionChange, bill_due, cancel, change,
};
pub use catalog::{
    BillingTiming, Charge, ChargeKind, CurrencyPrice, Plan, PlanBuilder, PlanVersion, Product,
};
pub use discount::{
    AppliedDiscount, Discount, DiscountAmount, DiscountDuration, DiscountId, DocumentDiscount,
};
pub use dotmac_core::PendingChargeId;
pub use dotmac_core::{InvoiceNumberFormat, NumberReset};
pub use error::BillingError;
pub use idempotency::{
    IdempotencyKey, IdempotencyRecord, IdempotentRequest, IdempotentResult, KeyedRequest,
    KeyedWrite,
};
pub use invoice::{
    CreditNote, CreditNoteLine, CreditRequest, DEFAULT_CREDIT_NOTE_SERIES, DEFAULT_INVOICE_SERIES,
    DocumentBuilder, DocumentKey, DocumentNumber, DocumentSettings, DraftLine, Invoice,
    InvoiceLine, InvoiceStatus, LineKind, PendingCharge, PriceRef, credit_note,
    inclusive_tax_total, invoice_pending_charges,
};
pub use invoice::{
    DocumentLineInput, DocumentLineTotals, DocumentTotals, DocumentTotalsSettings, document_totals,
};
pub use memory::MemoryStore;
pub use pricing::{
    BlockTier, PercentTier, PercentTiers, PriceModel, Tier, Tiers, quantity_from_f64,
};
pub use proration::{ProrationMode, fraction, prorate};
pub use service::{
    BillRunSummary, BillingEvent, BillingFailure, BillingService, BillingSettings, ChargeRequest,
    CreditNoteRequest, Events,
};
pub use settlement::{
    AdjustmentId, AdjustmentKind, BalanceUpdate, CreditSettlement, InvoiceAdjustment,
    InvoiceSettlement,
};
pub use store::{
    BilledUsage, BillingCommit, BillingStore, CatalogStore, CommitResult, CustomerAccount,
    InvoiceStore, IssuedInvoice, SubscriptionStore,
};
pub use subscription::{
    CHANGE_HORIZON_YEARS, FirstPeriod, NewSubscription, Segment, SegmentState, Subscription,
    SubscriptionStatus,
};
pub use suspension::{SuspensionBilling, restore, suspend};
pub use tax::{TaxBase, TaxExemption, TaxMode, TaxRate, TaxRateId, TaxRounding, TaxSummary};
