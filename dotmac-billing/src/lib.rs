//! # dotmac-billing
//!
//! (crate docs: written by the billing work)

mod billrun;
mod catalog;
mod discount;
mod error;
mod invoice;
mod memory;
mod pricing;
mod proration;
mod service;
mod store;
mod subscription;
mod tax;

pub mod analytics;
pub mod dunning;
pub mod payments;
pub mod radius;
pub mod usage;

pub use billrun::{
    BillOutcome, CancelTiming, ChangeOutcome, ChangeTiming, PlanLookup, ProrationBehavior,
    SubscriptionChange, bill_due, cancel, change,
};
pub use catalog::{
    BillingTiming, Charge, ChargeKind, CurrencyPrice, Plan, PlanBuilder, PlanVersion, Product,
};
pub use discount::{AppliedDiscount, Discount, DiscountAmount, DiscountDuration, DiscountId};
pub use error::BillingError;
pub use invoice::{
    CreditNote, CreditNoteLine, CreditRequest, DocumentBuilder, DocumentKey, DocumentNumber,
    DocumentSettings, DraftLine, Invoice, InvoiceLine, InvoiceStatus, LineKind, PendingCharge,
    PendingChargeId, PriceRef, credit_note, inclusive_tax_total, invoice_pending_charges,
};
pub use pricing::{
    BlockTier, PercentTier, PercentTiers, PriceModel, Tier, Tiers, quantity_from_f64,
};
pub use memory::MemoryStore;
pub use proration::{ProrationMode, fraction, prorate};
pub use service::{BillRunSummary, BillingEvent, BillingService, BillingSettings, Events};
pub use store::{
    BillingCommit, BillingStore, CatalogStore, CommitResult, CustomerAccount, InvoiceStore,
    SubscriptionStore,
};
pub use subscription::{
    FirstPeriod, NewSubscription, Segment, SegmentState, Subscription, SubscriptionStatus,
};
pub use tax::{TaxBase, TaxExemption, TaxMode, TaxRate, TaxRateId, TaxSummary};
