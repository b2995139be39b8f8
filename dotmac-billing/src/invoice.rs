//! Invoices, their lines and states, pending one-off charges, and credit notes.
//!
//! # The rounding point
//!
//! Everything before a line is put on a document is exact. [`DocumentBuilder::push`] rounds,
//! with the tenant's [`RoundingMode`], exactly three things per line, once each: the line's
//! amount, its discount, and each tax rate's amount. Document totals are sums of those rounded
//! figures, so `total = Σ amounts − Σ discounts + Σ exclusive taxes` holds to the cent.

use std::borrow::Cow;
use std::fmt;

use chrono::{Days, NaiveDate};
use dotmac_core::{
    CreditNoteId, Currency, CustomerId, IdDigest, InvoiceId, InvoiceNumberFormat, Money,
    PendingChargeId, Period, PlanId, RoundingMode, SubscriptionId,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::discount::{DiscountCursor, Share};
use crate::error::BillingError;
use crate::tax::{
    TaxExemption, TaxMode, TaxRate, TaxRounding, TaxSummary, apply_taxes, line_taxes,
};

/// What a line bills. Descriptions are derived from it, so a bill run formats no strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LineKind {
    /// A recurring charge for a whole or partial period.
    Recurring,
    /// A one-time setup fee.
    SetupFee,
    /// A charge for the rest of a period after a plan or quantity change, or a resume.
    ProrationCharge,
    /// A credit for the unused part of a period, at the price originally billed.
    ProrationCredit,
    /// Rated usage.
    Usage,
    /// A correction of usage billed earlier (late or corrected usage records).
    UsageAdjustment,
    /// A late-payment fee.
    LateFee,
    /// A reconnection fee after a suspension.
    ReconnectionFee,
    /// Any other one-off charge or credit.
    OneOff,
}

impl LineKind {
    /// The default description of a line of this kind.
    pub fn label(self) -> &'static str {
        match self {
            LineKind::Recurring => "Subscription",
            LineKind::SetupFee => "Setup fee",
            LineKind::ProrationCharge => "Remaining time after change",
            LineKind::ProrationCredit => "Unused time before change",
            LineKind::Usage => "Usage",
            LineKind::UsageAdjustment => "Usage adjustment",
            LineKind::LateFee => "Late payment fee",
            LineKind::ReconnectionFee => "Reconnection fee",
            LineKind::OneOff => "Charge",
        }
    }
}

/// Where a line's price came from: the plan, its price version and the charge on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PriceRef {
    /// The plan.
    pub plan: PlanId,
    /// The price version billed.
    pub version: u32,
    /// The charge's position in that version.
    pub charge: u32,
}

/// One line of an invoice, explainable on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// What it bills.
    pub kind: LineKind,
    /// Free text; `None` means "derived from the kind" (see [`InvoiceLine::description`]).
    pub text: Option<String>,
    /// The service period it covers, if any.
    pub period: Option<Period>,
    /// Units billed (seats, GB, 1 for a flat charge).
    pub quantity: Decimal,
    /// Exact price per unit, prorations included (not rounded).
    pub unit_price: Money,
    /// `quantity × unit_price`, rounded once.
    pub amount: Money,
    /// Discount on the line, rounded once; between zero and `amount` (negative on a credit
    /// line, which gives back the discount of the charge it reverses).
    pub discount: Money,
    /// All taxes on the line (inclusive ones included), each rate rounded once.
    pub tax: Money,
    /// The part of `tax` added on top of the line (exclusive rates).
    pub tax_exclusive: Money,
    /// The price it came from.
    pub price: Option<PriceRef>,
}

impl InvoiceLine {
    /// The line's description: its free text, or its kind's label.
    pub fn description(&self) -> Cow<'_, str> {
        match &self.text {
            Some(text) => Cow::Borrowed(text.as_str()),
            None => Cow::Borrowed(self.kind.label()),
        }
    }

    /// What the customer pays for the line: amount − discount + exclusive taxes.
    ///
    /// # Errors
    ///
    /// Overflow only.
    pub fn total(&self) -> Result<Money, BillingError> {
        Ok(self
            .amount
            .checked_sub(self.discount)?
            .checked_add(self.tax_exclusive)?)
    }
}

/// A sequential, per-tenant, gapless document number (assigned when a document is issued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocumentNumber(pub u64);

impl fmt::Display for DocumentNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

/// The lifecycle of an invoice. Once issued, its status follows what the payments ledger
/// (collections) reports about it:
///
/// - `open → partially_paid → paid` as payments (and applied customer credit) settle it, and
///   `open → paid` at once;
/// - a refund moves it back: `paid → partially_paid` or `paid → open`, `partially_paid → open`;
/// - `open` / `partially_paid → uncollectible` when it is written off; an uncollectible invoice
///   may still be paid later (`→ partially_paid`, `→ paid`);
/// - `draft` / `open` / `uncollectible → void` only while nothing is settled on it
///   ([`Invoice::amount_paid`] is zero): money received is refunded first, so a void invoice
///   never holds a payment ([`BillingError::VoidOfSettledInvoice`]). A partly paid invoice is
///   never voided directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Being prepared; no number yet; may still change.
    Draft,
    /// Issued and awaiting payment; nothing settled yet.
    Open,
    /// Issued, partly settled (payments or customer credit), the rest still owed.
    PartiallyPaid,
    /// Settled.
    Paid,
    /// Cancelled after issue (the number stays used).
    Void,
    /// Written off; may still be paid later.
    Uncollectible,
}

impl InvoiceStatus {
    /// The status's name, as serde writes it (`"partially_paid"`).
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Open => "open",
            InvoiceStatus::PartiallyPaid => "partially_paid",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Void => "void",
            InvoiceStatus::Uncollectible => "uncollectible",
        }
    }

    /// True when `self → to` is allowed (see the diagram on [`InvoiceStatus`]; the rule that
    /// only an invoice with nothing settled is voided is [`Invoice::transition`]'s, which knows
    /// the amounts).
    pub fn can_become(self, to: InvoiceStatus) -> bool {
        use InvoiceStatus::*;
        matches!(
            (self, to),
            (Draft, Open)
                | (Draft, Void)
                | (Open, PartiallyPaid)
                | (Open, Paid)
                | (Open, Void)
                | (Open, Uncollectible)
                | (PartiallyPaid, Open)
                | (PartiallyPaid, Paid)
                | (PartiallyPaid, Uncollectible)
                | (Paid, PartiallyPaid)
                | (Paid, Open)
                | (Uncollectible, PartiallyPaid)
                | (Uncollectible, Paid)
                | (Uncollectible, Void)
        )
    }

    /// True for an issued invoice that still has something owed on it: open, partly paid or
    /// uncollectible (written off, but still payable).
    pub fn is_outstanding(self) -> bool {
        matches!(
            self,
            InvoiceStatus::Open | InvoiceStatus::PartiallyPaid | InvoiceStatus::Uncollectible
        )
    }

    /// `self → to`, or a typed error.
    ///
    /// # Errors
    ///
    /// [`BillingError::IllegalInvoiceTransition`] when the move is not allowed.
    pub fn transition(self, to: InvoiceStatus) -> Result<InvoiceStatus, BillingError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(BillingError::IllegalInvoiceTransition { from: self, to })
        }
    }
}

/// Why a document exists; the idempotency key of the bill run. The same key always yields the
/// same document, so a re-run or a retry after a crash writes nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum DocumentKey {
    /// The regular document of a subscription's period `index` (periods numbered from the
    /// billing anchor).
    Period {
        /// The subscription.
        subscription: SubscriptionId,
        /// The period index.
        index: i64,
    },
    /// The prorations of a subscription's change number `seq`, invoiced at once.
    Change {
        /// The subscription.
        subscription: SubscriptionId,
        /// The change's sequence number on the subscription.
        seq: u32,
    },
    /// A customer's pending charges invoiced on their own on a date.
    Charges {
        /// The customer.
        customer: CustomerId,
        /// The invoice date.
        on: NaiveDate,
    },
    /// The closing invoice of a subscription that ended with pending charges left over (usage
    /// rated in arrears, prorations, fees): the bill run that ends it bills them.
    Closing {
        /// The subscription.
        subscription: SubscriptionId,
    },
}

impl DocumentKey {
    /// The invoice id this key always produces (so a preview and the issued invoice share it).
    pub fn invoice_id(&self) -> InvoiceId {
        // The namespace's digest is computed once, at compile time.
        const INVOICE: IdDigest = IdDigest::new("invoice");
        let digest = INVOICE;
        InvoiceId::derived(match *self {
            DocumentKey::Period {
                subscription,
                index,
            } => digest
                .u64(1)
                .uuid(subscription.as_uuid())
                .u64(u64::from_ne_bytes(index.to_ne_bytes())),
            DocumentKey::Change { subscription, seq } => digest
                .u64(2)
                .uuid(subscription.as_uuid())
                .u64(u64::from(seq)),
            DocumentKey::Charges { customer, on } => {
                digest
                    .u64(3)
                    .uuid(customer.as_uuid())
                    .u64(u64::from_ne_bytes(
                        i64::from(on.to_epoch_days()).to_ne_bytes(),
                    ))
            }
            DocumentKey::Closing { subscription } => digest.u64(4).uuid(subscription.as_uuid()),
        })
    }
}

/// An invoice (or, with a negative total, a credit the customer is owed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// The invoice's id (derived from its key).
    pub id: InvoiceId,
    /// Why it exists; unique per tenant.
    pub key: DocumentKey,
    /// Its number, from the tenant's gapless sequence; `None` while a draft or a preview.
    pub number: Option<DocumentNumber>,
    /// Who pays it.
    pub customer: CustomerId,
    /// The subscription it bills, if any.
    pub subscription: Option<SubscriptionId>,
    /// Its currency; every amount on it is in this currency.
    pub currency: Currency,
    /// Its state.
    pub status: InvoiceStatus,
    /// The date it is issued (its document date).
    pub issue_date: NaiveDate,
    /// The date payment is due (issue date + payment terms).
    pub due_date: NaiveDate,
    /// The lines.
    pub lines: Vec<InvoiceLine>,
    /// Per-rate tax totals.
    pub taxes: Vec<TaxSummary>,
    /// Σ line amounts.
    pub subtotal: Money,
    /// Σ line discounts.
    pub discount_total: Money,
    /// Σ line taxes (inclusive ones included).
    pub tax_total: Money,
    /// What the customer owes: subtotal − discounts + exclusive taxes.
    pub total: Money,
    /// What the payments ledger reported settled, credited and written off, and the
    /// adjustment lines shown under the charges (customer credit applied); `None` while
    /// nothing was reported (the invoice as issued). Read it through [`Invoice::amount_paid`],
    /// [`Invoice::amount_due`], [`Invoice::adjustments`] and the other getters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Box<crate::settlement::InvoiceSettlement>>,
    /// How its number is written and which sequence it comes from (the tenant's invoice
    /// number format when it was built); `None` for the default format (six digits, no
    /// prefix, one sequence forever). See [`Invoice::number_series`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_format: Option<InvoiceNumberFormat>,
}

/// The counter of invoices numbered in the default format ([`Invoice::number_series`]).
pub const DEFAULT_INVOICE_SERIES: &str = "billing.invoice";

/// The counter of credit notes numbered in the default format ([`CreditNote::number_series`]).
pub const DEFAULT_CREDIT_NOTE_SERIES: &str = "billing.credit_note";

/// A numbered document's sequence: `base` for the default format (and a format that
/// [continues it](InvoiceNumberFormat::continues_default_sequence): only its padding
/// differs), otherwise `base/` followed by the format's series ([`InvoiceNumberFormat::series`]:
/// the prefix, and the document date's year when numbering resets yearly).
fn number_series_of(
    base: &'static str,
    format: Option<&InvoiceNumberFormat>,
    date: NaiveDate,
) -> Cow<'static, str> {
    match format {
        Some(format) if !format.continues_default_sequence() => {
            Cow::Owned(format!("{base}/{}", format.series(date)))
        }
        _ => Cow::Borrowed(base),
    }
}

/// A document number as the customer reads it, written with its format (the default's six
/// digits without one).
fn number_text_of(
    number: DocumentNumber,
    format: Option<&InvoiceNumberFormat>,
    date: NaiveDate,
) -> String {
    match format {
        None => number.to_string(),
        Some(format) => format.format(number.0, date),
    }
}

impl Invoice {
    /// The number sequence a store issues this invoice's number from: `billing.invoice` for
    /// the default format, otherwise `billing.invoice/` followed by the format's series
    /// ([`InvoiceNumberFormat::series`]: the prefix, and the issue date's year when
    /// numbering resets yearly), so each year of a yearly format starts again at 1 and
    /// numbers stay gapless per sequence.
    pub fn number_series(&self) -> Cow<'static, str> {
        number_series_of(
            DEFAULT_INVOICE_SERIES,
            self.number_format.as_ref(),
            self.issue_date,
        )
    }

    /// Its number as the customer reads it, written with its format (`INV-2026-000042`);
    /// `None` until it is issued.
    pub fn number_text(&self) -> Option<String> {
        let number = self.number?;
        Some(number_text_of(
            number,
            self.number_format.as_ref(),
            self.issue_date,
        ))
    }

    /// Σ exclusive taxes (the taxes added on top of the lines).
    ///
    /// # Errors
    ///
    /// Overflow only.
    pub fn exclusive_tax_total(&self) -> Result<Money, BillingError> {
        Ok(Money::sum(
            self.currency,
            self.lines.iter().map(|l| l.tax_exclusive),
        )?)
    }

    /// Moves the invoice to `to`.
    ///
    /// # Errors
    ///
    /// [`BillingError::IllegalInvoiceTransition`] when the move is not allowed,
    /// [`BillingError::VoidOfSettledInvoice`] for a void of an invoice with something settled
    /// on it (refund it first), or with a negative total (its `settled` is the total: a
    /// customer credit, which the ledger refuses to void). Nothing changes then.
    pub fn transition(&mut self, to: InvoiceStatus) -> Result<(), BillingError> {
        let status = self.status.transition(to)?;
        // An invoice with a negative total (a credit owed to the customer) settles itself into
        // customer credit the moment the ledger enters it: it is never voided (refund the
        // credit instead), whether or not the ledger has reported it yet.
        let settled = if self.amount_paid().is_zero() && self.total.is_negative() {
            self.total
        } else {
            self.amount_paid()
        };
        if to == InvoiceStatus::Void && !settled.is_zero() {
            return Err(BillingError::VoidOfSettledInvoice {
                invoice: self.id,
                settled: settled.amount(),
            });
        }
        self.status = status;
        Ok(())
    }
}

/// Tenant- and customer-level settings a document is built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentSettings {
    /// The tenant's rounding mode (the one rounding point).
    pub rounding: RoundingMode,
    /// Tax rates applied to every line, in order.
    pub taxes: Vec<TaxRate>,
    /// The customer's exemption.
    pub exemption: TaxExemption,
    /// Days from issue to due date.
    pub payment_terms_days: u32,
    /// How the documents' numbers are written and sequenced (the tenant's setting).
    pub number_format: InvoiceNumberFormat,
}

impl Default for DocumentSettings {
    fn default() -> Self {
        DocumentSettings {
            rounding: RoundingMode::HalfUp,
            taxes: Vec::new(),
            exemption: TaxExemption::None,
            payment_terms_days: 0,
            number_format: InvoiceNumberFormat::default(),
        }
    }
}

/// An exact line before it is put on a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftLine {
    /// What it bills.
    pub kind: LineKind,
    /// Free text, if any.
    pub text: Option<String>,
    /// The period it covers.
    pub period: Option<Period>,
    /// Units.
    pub quantity: Decimal,
    /// Exact price per unit.
    pub unit_price: Money,
    /// The price it came from.
    pub price: Option<PriceRef>,
    /// True when the subscription's discounts apply to it.
    pub discountable: bool,
}

/// Assembles an invoice line by line, rounding at the one documented point.
pub struct DocumentBuilder<'a> {
    settings: &'a DocumentSettings,
    discounts: Vec<DiscountCursor>,
    invoice: Invoice,
}

impl<'a> DocumentBuilder<'a> {
    /// Starts a document for `key`, as a draft with no lines.
    ///
    /// # Errors
    ///
    /// [`BillingError::Core`] when the due date is out of range.
    pub fn new(
        key: DocumentKey,
        customer: CustomerId,
        subscription: Option<SubscriptionId>,
        currency: Currency,
        issue_date: NaiveDate,
        settings: &'a DocumentSettings,
    ) -> Result<Self, BillingError> {
        let due_date = issue_date
            .checked_add_days(Days::new(u64::from(settings.payment_terms_days)))
            .ok_or(dotmac_core::CoreError::DateOutOfRange("due date"))?;
        let zero = Money::zero(currency);
        Ok(DocumentBuilder {
            settings,
            discounts: Vec::new(),
            invoice: Invoice {
                id: key.invoice_id(),
                key,
                number: None,
                customer,
                subscription,
                currency,
                status: InvoiceStatus::Draft,
                issue_date,
                due_date,
                // Sized for the common document (a regular invoice of one charge, with at
                // most one summary per rate): a stored invoice keeps what is allocated here.
                lines: Vec::with_capacity(1),
                taxes: Vec::with_capacity(settings.taxes.len()),
                subtotal: zero,
                discount_total: zero,
                tax_total: zero,
                total: zero,
                settlement: None,
                number_format: (!settings.number_format.is_default())
                    .then(|| settings.number_format.clone()),
            },
        })
    }

    /// Applies `discount` to the discountable lines pushed after this call.
    pub fn with_discount(mut self, discount: &crate::discount::Discount) -> Self {
        self.add_discount(discount);
        self
    }

    /// Applies `discount` to the discountable lines pushed after this call (in place).
    pub fn add_discount(&mut self, discount: &crate::discount::Discount) {
        self.discounts.push(DiscountCursor::new(discount));
    }

    /// Replaces the discounts applied to the lines pushed after this call (a change document
    /// spanning several periods discounts each period's lines by that period's discounts).
    pub fn set_discounts<'d>(
        &mut self,
        discounts: impl IntoIterator<Item = &'d crate::discount::Discount>,
    ) {
        self.discounts = discounts.into_iter().map(DiscountCursor::new).collect();
    }

    /// Adds a line: rounds its amount, its discount and its taxes once each.
    ///
    /// A recurring line pushed this way bills a whole period: it gets the whole of a fixed
    /// discount (spread over the document's whole-period recurring lines in order). Use
    /// [`DocumentBuilder::push_prorated`] for a part of a period.
    ///
    /// # Errors
    ///
    /// [`BillingError::Core`] with a currency mismatch when the line's currency is not the
    /// document's; overflow.
    pub fn push(&mut self, line: DraftLine) -> Result<(), BillingError> {
        let share = (line.kind == LineKind::Recurring).then_some(Share {
            part: None,
            fraction: (1, 1),
        });
        self.push_line(line, share)
    }

    /// Adds a recurring or proration line billing `numerator / denominator` of its period's
    /// price: a fixed discount is prorated by the same fraction (a pool of
    /// `amount × numerator / denominator` per period part and direction, spread over that
    /// part's lines in order, never taking a line below zero), so a credit for unused days
    /// gives back exactly the discount billed for them. Other kinds are pushed as by
    /// [`DocumentBuilder::push`].
    ///
    /// # Errors
    ///
    /// As [`DocumentBuilder::push`]; [`BillingError::Core`] for a zero denominator.
    pub fn push_prorated(
        &mut self,
        line: DraftLine,
        numerator: i64,
        denominator: i64,
    ) -> Result<(), BillingError> {
        if denominator == 0 {
            return Err(dotmac_core::CoreError::DivisionByZero {
                operation: "proration share",
            }
            .into());
        }
        let share = matches!(
            line.kind,
            LineKind::Recurring | LineKind::ProrationCharge | LineKind::ProrationCredit
        )
        .then_some(Share {
            part: line.period,
            fraction: (numerator, denominator),
        });
        self.push_line(line, share)
    }

    fn push_line(&mut self, line: DraftLine, share: Option<Share>) -> Result<(), BillingError> {
        // A refused line (overflow) leaves no trace: the discount pools and tax summaries it
        // would have changed are put back. Nothing is copied when there is nothing to restore.
        let discounts =
            (line.discountable && !self.discounts.is_empty()).then(|| self.discounts.clone());
        let taxes = (!self.settings.taxes.is_empty()).then(|| self.invoice.taxes.clone());
        let pushed = self.push_line_or_leave_traces(line, share);
        if pushed.is_err() {
            if let Some(discounts) = discounts {
                self.discounts = discounts;
            }
            if let Some(taxes) = taxes {
                self.invoice.taxes = taxes;
            }
        }
        pushed
    }

    fn push_line_or_leave_traces(
        &mut self,
        line: DraftLine,
        share: Option<Share>,
    ) -> Result<(), BillingError> {
        let rounding = self.settings.rounding;
        let currency = self.invoice.currency;
        if line.unit_price.currency() != currency {
            return Err(dotmac_core::CoreError::CurrencyMismatch {
                left: currency.code(),
                right: line.unit_price.currency().code(),
            }
            .into());
        }
        let amount = line.unit_price.checked_mul(line.quantity)?.round(rounding);
        let mut discount = Money::zero(currency);
        if line.discountable {
            for cursor in &mut self.discounts {
                let left = amount.checked_sub(discount)?;
                discount = discount.checked_add(cursor.take(left, rounding, share)?)?;
            }
        }
        let net = amount.checked_sub(discount)?;
        let tax = apply_taxes(
            net,
            &self.settings.taxes,
            &self.settings.exemption,
            rounding,
            &mut self.invoice.taxes,
        )?;
        let inv = &mut self.invoice;
        // All four totals first, so an overflow in the last changes none of them.
        let subtotal = inv.subtotal.checked_add(amount)?;
        let discount_total = inv.discount_total.checked_add(discount)?;
        let tax_total = inv.tax_total.checked_add(tax.total)?;
        let total = inv.total.checked_add(net)?.checked_add(tax.exclusive)?;
        (inv.subtotal, inv.discount_total, inv.tax_total, inv.total) =
            (subtotal, discount_total, tax_total, total);
        inv.lines.push(InvoiceLine {
            kind: line.kind,
            text: line.text,
            period: line.period,
            quantity: line.quantity,
            unit_price: line.unit_price,
            amount,
            discount,
            tax: tax.total,
            tax_exclusive: tax.exclusive,
            price: line.price,
        });
        Ok(())
    }

    /// Lines added so far.
    pub fn line_count(&self) -> usize {
        self.invoice.lines.len()
    }

    /// True when no line has been added.
    pub fn is_empty(&self) -> bool {
        self.invoice.lines.is_empty()
    }

    /// The finished draft.
    pub fn finish(self) -> Invoice {
        self.invoice
    }
}

/// A one-off charge (or credit, with a negative unit price) waiting for a customer's next
/// invoice: usage, usage adjustments, late fees, reconnection fees, prorations billed on the
/// next invoice.
///
/// Add them with [`InvoiceStore::add_pending_charge`](crate::store::InvoiceStore::add_pending_charge);
/// the bill run puts every pending charge of the subscription (or, for charges without one, of
/// the customer) on the next regular invoice and consumes them in the same atomic write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCharge {
    /// The charge's id (also its idempotency key: adding the same id twice is a no-op).
    pub id: PendingChargeId,
    /// Who pays it.
    pub customer: CustomerId,
    /// The subscription whose invoice it must go on; `None` for the customer's next invoice.
    pub subscription: Option<SubscriptionId>,
    /// What it is.
    pub kind: LineKind,
    /// Free text for the line; `None` to use the kind's label.
    pub text: Option<String>,
    /// The service period it covers, if any.
    pub period: Option<Period>,
    /// Units.
    pub quantity: Decimal,
    /// Exact price per unit (negative for a credit).
    pub unit_price: Money,
    /// The price it came from, if any.
    pub price: Option<PriceRef>,
    /// The date it was created; charges go on invoices dated on or after it.
    pub created_on: NaiveDate,
}

impl PendingCharge {
    /// Checks what a caller may not ask for (the service calls it before anything is
    /// stored): a negative quantity, and a credit without a reason.
    ///
    /// A credit is a charge with a **negative unit price** and a quantity of zero or more;
    /// its `text` says why (it is the line the customer reads). Kinds that are corrections by
    /// nature ([`LineKind::ProrationCredit`], [`LineKind::UsageAdjustment`]) carry their reason
    /// in the kind's label and need no text.
    ///
    /// Not checked on deserialization: charges already stored must stay readable, or one old
    /// charge would stall its customer's bill run; the edge is
    /// [`BillingService::add_pending_charge`](crate::BillingService::add_pending_charge).
    ///
    /// # Errors
    ///
    /// [`BillingError::NegativeChargeQuantity`], [`BillingError::CreditWithoutReason`].
    pub fn validate(&self) -> Result<(), BillingError> {
        if self.quantity.is_sign_negative() && !self.quantity.is_zero() {
            return Err(BillingError::NegativeChargeQuantity {
                charge: self.id,
                quantity: self.quantity,
            });
        }
        let explained = self.text.as_deref().is_some_and(|t| !t.trim().is_empty())
            || matches!(
                self.kind,
                LineKind::ProrationCredit | LineKind::UsageAdjustment
            );
        if self.unit_price.is_negative() && !explained {
            return Err(BillingError::CreditWithoutReason { charge: self.id });
        }
        Ok(())
    }

    /// The charge as an exact invoice line. No discount applies to it: a deferred proration
    /// carries the discount of the period it prorates as a line of its own (see
    /// [`ProrationBehavior::NextInvoice`](crate::ProrationBehavior::NextInvoice)).
    pub fn to_line(&self) -> DraftLine {
        DraftLine {
            kind: self.kind,
            text: self.text.clone(),
            period: self.period,
            quantity: self.quantity,
            unit_price: self.unit_price,
            price: self.price,
            // The next document's discounts belong to another period: a deferred proration
            // was already discounted, when it was made, by its own period's discounts.
            discountable: false,
        }
    }
}

/// Builds a standalone invoice of pending charges (for fees that cannot wait for the next
/// bill, such as a reconnection fee).
///
/// # Errors
///
/// [`BillingError::Core`] for charges in another currency than `currency`.
pub fn invoice_pending_charges(
    customer: CustomerId,
    currency: Currency,
    on: NaiveDate,
    charges: &[PendingCharge],
    settings: &DocumentSettings,
) -> Result<Invoice, BillingError> {
    let key = DocumentKey::Charges { customer, on };
    let mut builder = DocumentBuilder::new(key, customer, None, currency, on, settings)?;
    for charge in charges {
        builder.push(charge.to_line())?;
    }
    Ok(builder.finish())
}

/// One credited line of a credit note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteLine {
    /// The line's position on the invoice.
    pub line: usize,
    /// What is credited, taxes included (at most what the line still has to credit).
    pub amount: Money,
}

/// What to credit on an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditRequest {
    /// Everything not credited yet: each line what it has left, in line order, up to what
    /// the invoice's total has left (its credit lines offset its charges).
    Full,
    /// Given amounts (taxes included) of given lines.
    Lines(Vec<CreditNoteLine>),
}

/// A credit note against an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    /// The note's id.
    pub id: CreditNoteId,
    /// Its number, from the tenant's credit-note sequence, once issued.
    pub number: Option<DocumentNumber>,
    /// The invoice credited.
    pub invoice: InvoiceId,
    /// The customer credited.
    pub customer: CustomerId,
    /// The currency.
    pub currency: Currency,
    /// Its date.
    pub issue_date: NaiveDate,
    /// Why it was issued.
    pub reason: Option<String>,
    /// The credited lines.
    pub lines: Vec<CreditNoteLine>,
    /// Σ credited amounts.
    pub total: Money,
    /// What happens to the part the invoice no longer owes (kept as customer credit unless
    /// the caller asked for a refund). Notes stored before the field existed read as credit.
    #[serde(default)]
    pub settlement: crate::settlement::CreditSettlement,
    /// How its number is written and which sequence it comes from (the tenant's credit-note
    /// number format when it was issued, [`BillingSettings::credit_note_number_format`](crate::BillingSettings::credit_note_number_format));
    /// `None` for the default format (six digits, no prefix, one sequence forever). See
    /// [`CreditNote::number_series`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_format: Option<InvoiceNumberFormat>,
}

impl CreditNote {
    /// The number sequence a store issues this note's number from: `billing.credit_note` for
    /// the default format, otherwise `billing.credit_note/` followed by the format's series
    /// (its prefix, and the note's year when numbering resets yearly). Credit notes never
    /// share a sequence with invoices, whatever their formats.
    pub fn number_series(&self) -> Cow<'static, str> {
        number_series_of(
            DEFAULT_CREDIT_NOTE_SERIES,
            self.number_format.as_ref(),
            self.issue_date,
        )
    }

    /// Its number as the customer reads it, written with its format (`CN-2026-0007`); `None`
    /// until it is issued.
    pub fn number_text(&self) -> Option<String> {
        let number = self.number?;
        Some(number_text_of(
            number,
            self.number_format.as_ref(),
            self.issue_date,
        ))
    }
}

/// Builds a credit note against `invoice`, given the notes already issued against it.
///
/// # Errors
///
/// [`BillingError::NotCreditable`] for an invoice that is not open, paid or uncollectible,
/// [`BillingError::CreditExceedsLine`] when a line would be credited beyond its total,
/// [`BillingError::CreditExceedsInvoice`] when the lines together would credit more than the
/// invoice's total less its earlier notes (credit lines on it offset its charges),
/// [`BillingError::NothingToCredit`] when a full credit finds nothing left, a currency
/// mismatch, or an unknown line index.
///
/// A full credit ([`CreditRequest::Full`]) credits each line what it has left, in line order,
/// until the invoice's total is used up: an invoice of a 30.00 fee and a 30.00 suspended-days
/// credit owes nothing and has nothing to credit; the payments ledger applies the same bound.
pub fn credit_note(
    id: CreditNoteId,
    invoice: &Invoice,
    earlier: &[CreditNote],
    request: &CreditRequest,
    on: NaiveDate,
    reason: Option<String>,
) -> Result<CreditNote, BillingError> {
    if !matches!(
        invoice.status,
        InvoiceStatus::Open
            | InvoiceStatus::PartiallyPaid
            | InvoiceStatus::Paid
            | InvoiceStatus::Uncollectible
    ) {
        return Err(BillingError::NotCreditable {
            invoice: invoice.id,
            status: invoice.status,
        });
    }
    let currency = invoice.currency;
    let remaining = |index: usize| -> Result<Money, BillingError> {
        let line = invoice
            .lines
            .get(index)
            .ok_or(BillingError::UnknownInvoiceLine {
                invoice: invoice.id,
                line: index,
            })?;
        let mut left = line.total()?;
        for note in earlier.iter().filter(|n| n.invoice == invoice.id) {
            for credited in note.lines.iter().filter(|l| l.line == index) {
                left = left.checked_sub(credited.amount)?;
            }
        }
        Ok(left)
    };
    // What the invoice's total has left: credit lines on it (prorations, suspended days)
    // offset its charges, so its lines may have more left than the invoice billed.
    let mut invoice_left = invoice.total;
    for note in earlier.iter().filter(|n| n.invoice == invoice.id) {
        invoice_left = invoice_left.checked_sub(note.total)?;
    }
    let lines = match request {
        CreditRequest::Full => {
            let mut lines = Vec::new();
            let mut budget = invoice_left;
            for index in 0..invoice.lines.len() {
                if !budget.is_positive() {
                    break;
                }
                let left = remaining(index)?;
                if left.is_positive() {
                    let amount = left.min(budget)?;
                    budget = budget.checked_sub(amount)?;
                    lines.push(CreditNoteLine {
                        line: index,
                        amount,
                    });
                }
            }
            lines
        }
        CreditRequest::Lines(asked) => {
            for (i, want) in asked.iter().enumerate() {
                if want.amount.currency() != currency {
                    return Err(dotmac_core::CoreError::CurrencyMismatch {
                        left: currency.code(),
                        right: want.amount.currency().code(),
                    }
                    .into());
                }
                // Two requests for the same line count together.
                let mut asked_here = want.amount;
                for other in asked.iter().take(i).filter(|o| o.line == want.line) {
                    asked_here = asked_here.checked_add(other.amount)?;
                }
                let left = remaining(want.line)?;
                if !want.amount.is_positive() || asked_here.amount() > left.amount() {
                    return Err(BillingError::CreditExceedsLine {
                        line: want.line,
                        requested: want.amount.amount(),
                        creditable: left.amount(),
                    });
                }
            }
            asked.clone()
        }
    };
    if lines.is_empty() {
        return Err(BillingError::NothingToCredit(invoice.id));
    }
    let total = Money::sum(currency, lines.iter().map(|l| l.amount))?;
    if total.amount() > invoice_left.amount() {
        return Err(BillingError::CreditExceedsInvoice {
            invoice: invoice.id,
            requested: total.amount(),
            creditable: invoice_left.amount().max(Decimal::ZERO),
        });
    }
    Ok(CreditNote {
        id,
        number: None,
        invoice: invoice.id,
        customer: invoice.customer,
        currency,
        issue_date: on,
        reason,
        lines,
        total,
        settlement: crate::settlement::CreditSettlement::Credit,
        number_format: None,
    })
}

/// Σ amounts of inclusive-mode taxes on a document (informational: already in the lines).
pub fn inclusive_tax_total(invoice: &Invoice) -> Result<Money, BillingError> {
    Ok(Money::sum(
        invoice.currency,
        invoice
            .taxes
            .iter()
            .filter(|t| t.mode == TaxMode::Inclusive)
            .map(|t| t.amount),
    )?)
}

/// One line of [`document_totals`]: `quantity × unit_price`, computed in full before it is
/// rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentLineInput {
    /// Units.
    pub quantity: Decimal,
    /// Exact price per unit.
    pub unit_price: Money,
}

/// What [`document_totals`] applies to the lines.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DocumentTotalsSettings {
    /// The rounding mode (the step is the currency's minor unit).
    pub rounding: RoundingMode,
    /// Document discounts, applied in order.
    pub discounts: Vec<crate::discount::DocumentDiscount>,
    /// Exclusive (optionally compound) tax rates, in order, charged on every line.
    pub taxes: Vec<TaxRate>,
    /// Per line or per invoice.
    pub tax_rounding: TaxRounding,
}

/// One line's figures in [`DocumentTotals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentLineTotals {
    /// The rounded amount.
    pub amount: Money,
    /// Its share of the document's discount, in minor units.
    pub discount: Money,
    /// Its tax: rounded per rate with [`TaxRounding::PerLine`], exact with
    /// [`TaxRounding::PerInvoice`].
    pub tax: Money,
}

/// A document's figures from [`document_totals`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentTotals {
    /// Per line, in order.
    pub lines: Vec<DocumentLineTotals>,
    /// Σ rounded line amounts.
    pub subtotal: Money,
    /// Σ discounts.
    pub discount: Money,
    /// The document's rounded tax.
    pub tax: Money,
    /// subtotal − discount + tax.
    pub total: Money,
}

/// The figures of one document with document-level discounts (coupons) spread over its lines.
///
/// * Each line's amount is `quantity × unit_price` rounded to the currency's minor unit; the
///   subtotal is their sum.
/// * Discounts apply in order to what is left of the subtotal: a fixed one takes min(amount,
///   what is left), a percentage one what is left × rate / 100, rounded. The discount is spread
///   over the lines in proportion to their amounts, in minor units that sum exactly to it
///   (largest remainder, [`Money::allocate`]).
/// * Taxes apply to each line's amount after its discount share; a compound rate also to the
///   taxes before it. [`TaxRounding::PerLine`] rounds each tax of each line;
///   [`TaxRounding::PerInvoice`] sums the exact taxes and rounds once.
///
/// ```
/// use dotmac_billing::{DocumentDiscount, DocumentLineInput, DocumentTotalsSettings, document_totals};
/// use dotmac_core::{Currency, Money};
/// use rust_decimal::Decimal;
///
/// let line = |s| DocumentLineInput { quantity: Decimal::ONE, unit_price: Money::parse(s, Currency::USD).unwrap() };
/// let settings = DocumentTotalsSettings {
///     discounts: vec![DocumentDiscount::Fixed { amount: Decimal::new(1, 2) }],
///     ..Default::default()
/// };
/// let totals = document_totals(Currency::USD, &[line("1.00"), line("1.00")], &settings)?;
/// // One cent over two equal lines: the first gets it.
/// assert_eq!(totals.lines[0].discount, Money::parse("0.01", Currency::USD)?);
/// assert_eq!(totals.total, Money::parse("1.99", Currency::USD)?);
/// # Ok::<(), dotmac_billing::BillingError>(())
/// ```
///
/// # Errors
///
/// [`BillingError::InvalidConfiguration`] for a negative discount;
/// [`BillingError::InvalidTaxRate`] for a rate that fails [`TaxRate::validate`] or is
/// inclusive;
/// [`BillingError::Core`] for a line in another currency and on overflow.
pub fn document_totals(
    currency: Currency,
    lines: &[DocumentLineInput],
    settings: &DocumentTotalsSettings,
) -> Result<DocumentTotals, BillingError> {
    use crate::discount::DocumentDiscount;
    let rounding = settings.rounding;
    for rate in &settings.taxes {
        rate.validate()?;
        if rate.mode == TaxMode::Inclusive {
            return Err(BillingError::InvalidTaxRate {
                rate: rate.id,
                reason: "document totals take exclusive rates only",
            });
        }
    }
    let zero = Money::zero(currency);
    let mut amounts = Vec::with_capacity(lines.len());
    for line in lines {
        if line.unit_price.currency() != currency {
            return Err(dotmac_core::CoreError::CurrencyMismatch {
                left: currency.code(),
                right: line.unit_price.currency().code(),
            }
            .into());
        }
        amounts.push(line.unit_price.checked_mul(line.quantity)?.round(rounding));
    }
    let subtotal = Money::sum(currency, amounts.iter().copied())?;
    let negative = |reason| BillingError::InvalidConfiguration {
        what: "document discount",
        reason,
    };
    let mut left = subtotal.max(zero)?;
    let mut discount = zero;
    for coupon in &settings.discounts {
        let taken = match *coupon {
            DocumentDiscount::Fixed { amount } => {
                if amount.is_sign_negative() && !amount.is_zero() {
                    return Err(negative("a fixed discount must not be negative"));
                }
                Money::new(amount, currency).round(rounding).min(left)?
            }
            DocumentDiscount::Percentage { rate_percent } => {
                if rate_percent.is_sign_negative() && !rate_percent.is_zero() {
                    return Err(negative("a percentage discount must not be negative"));
                }
                Money::new(
                    crate::pricing::percent_of(left.amount(), rate_percent)?,
                    currency,
                )
                .round(rounding)
                .min(left)?
            }
        };
        left = left.checked_sub(taken)?;
        discount = discount.checked_add(taken)?;
    }
    // Shares in proportion to the (non-negative) line amounts.
    let weights: Vec<Decimal> = amounts
        .iter()
        .map(|a| a.amount().max(Decimal::ZERO))
        .collect();
    let shares = if discount.is_zero() || weights.iter().all(Decimal::is_zero) {
        vec![zero; amounts.len()]
    } else {
        discount.allocate(&weights)?
    };
    let exact = match settings.tax_rounding {
        TaxRounding::PerLine => Some(rounding),
        TaxRounding::PerInvoice => None,
    };
    let mut summaries = Vec::new();
    let mut tax = zero;
    let mut out = Vec::with_capacity(amounts.len());
    for (amount, share) in amounts.iter().zip(shares) {
        let net = amount.checked_sub(share)?;
        let line_tax = line_taxes(
            net,
            &settings.taxes,
            &TaxExemption::None,
            exact,
            &mut summaries,
        )?;
        tax = tax.checked_add(line_tax.total)?;
        out.push(DocumentLineTotals {
            amount: *amount,
            discount: share,
            tax: line_tax.total,
        });
    }
    let tax = tax.round(rounding);
    let total = subtotal.checked_sub(discount)?.checked_add(tax)?;
    Ok(DocumentTotals {
        lines: out,
        subtotal,
        discount,
        tax,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_core::{Currency, CustomerId, Money, SubscriptionId};

    /// One unit of `kind` at `unit_price`.
    fn draft(kind: LineKind, unit_price: Money) -> DraftLine {
        DraftLine {
            kind,
            text: None,
            period: None,
            quantity: Decimal::ONE,
            unit_price,
            price: None,
            discountable: false,
        }
    }

    /// A US-dollar document of subscription 1's first period, issued on `issue`.
    fn document(settings: &DocumentSettings, issue: NaiveDate) -> DocumentBuilder<'_> {
        let key = DocumentKey::Period {
            subscription: SubscriptionId::from_u128(1),
            index: 0,
        };
        DocumentBuilder::new(
            key,
            CustomerId::from_u128(1),
            None,
            Currency::USD,
            issue,
            settings,
        )
        .unwrap()
    }

    #[test]
    fn invoice_states_follow_the_lifecycle() {
        use InvoiceStatus::*;
        assert_eq!(Draft.transition(Open), Ok(Open));
        assert_eq!(Uncollectible.transition(Paid), Ok(Paid));
        assert_eq!(Uncollectible.transition(PartiallyPaid), Ok(PartiallyPaid));
        // Payments move it forward, refunds back.
        assert_eq!(Open.transition(PartiallyPaid), Ok(PartiallyPaid));
        assert_eq!(PartiallyPaid.transition(Paid), Ok(Paid));
        assert_eq!(Paid.transition(PartiallyPaid), Ok(PartiallyPaid));
        assert_eq!(Paid.transition(Open), Ok(Open));
        assert_eq!(PartiallyPaid.transition(Open), Ok(Open));
        assert_eq!(PartiallyPaid.transition(Uncollectible), Ok(Uncollectible));
        // A partly paid invoice is refunded before it is voided; nothing leaves void or goes
        // back to draft.
        assert_eq!(
            PartiallyPaid.transition(Void),
            Err(BillingError::IllegalInvoiceTransition {
                from: PartiallyPaid,
                to: Void
            })
        );
        assert_eq!(
            Paid.transition(Void),
            Err(BillingError::IllegalInvoiceTransition {
                from: Paid,
                to: Void
            })
        );
        for to in [Draft, Open, PartiallyPaid, Paid, Uncollectible] {
            assert!(Void.transition(to).is_err(), "void → {to:?}");
        }
        assert!(Draft.transition(Paid).is_err());
        assert!(Open.transition(Draft).is_err());
        assert!(Uncollectible.transition(Open).is_err());
        assert!(Open.is_outstanding() && Uncollectible.is_outstanding());
        assert!(!Paid.is_outstanding() && !Void.is_outstanding());
    }

    #[test]
    fn a_credit_note_is_bounded_by_what_the_invoice_billed_not_only_by_its_lines() {
        use dotmac_core::CreditNoteId;
        let usd = |cents: i64| Money::new(Decimal::new(cents, 2), Currency::USD);
        let settings = DocumentSettings::default();
        let issue = chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
        let line = |kind: LineKind, cents: i64| draft(kind, usd(cents));
        let mut builder = document(&settings, issue);
        // A month's fee, the suspended days credited back in full, and a late fee: 5.00 billed.
        builder.push(line(LineKind::OneOff, 3000)).unwrap();
        builder
            .push(line(LineKind::ProrationCredit, -3000))
            .unwrap();
        builder.push(line(LineKind::LateFee, 500)).unwrap();
        let mut invoice = builder.finish();
        invoice.status = InvoiceStatus::Open;
        assert_eq!(invoice.total, usd(500));
        let note = |earlier: &[CreditNote], request: CreditRequest| {
            credit_note(
                CreditNoteId::from_u128(earlier.len() as u128 + 1),
                &invoice,
                earlier,
                &request,
                issue,
                None,
            )
        };
        let lines = |line: usize, cents: i64| {
            CreditRequest::Lines(vec![CreditNoteLine {
                line,
                amount: usd(cents),
            }])
        };

        // The first line has 30.00 left, the invoice 5.00.
        assert_eq!(
            note(&[], lines(0, 501)),
            Err(BillingError::CreditExceedsInvoice {
                invoice: invoice.id,
                requested: usd(501).amount(),
                creditable: usd(500).amount(),
            })
        );
        // In full: the lines in order until the invoice's total is used up.
        let full = note(&[], CreditRequest::Full).unwrap();
        assert_eq!(
            full.lines,
            vec![CreditNoteLine {
                line: 0,
                amount: usd(500)
            }]
        );
        assert_eq!(full.total, usd(500));
        // After a part, the rest; then nothing is left.
        let part = note(&[], lines(2, 200)).unwrap();
        let rest = note(std::slice::from_ref(&part), CreditRequest::Full).unwrap();
        assert_eq!(rest.total, usd(300));
        let both = [part, rest];
        assert_eq!(
            note(&both, CreditRequest::Full),
            Err(BillingError::NothingToCredit(invoice.id))
        );
        assert_eq!(
            note(&both, lines(0, 1)),
            Err(BillingError::CreditExceedsInvoice {
                invoice: invoice.id,
                requested: usd(1).amount(),
                creditable: Decimal::ZERO,
            })
        );
    }

    #[test]
    fn document_ids_are_derived_from_keys() {
        let sub = SubscriptionId::from_u128(7);
        let a = DocumentKey::Period {
            subscription: sub,
            index: 3,
        };
        let b = DocumentKey::Period {
            subscription: sub,
            index: 4,
        };
        let c = DocumentKey::Change {
            subscription: sub,
            seq: 3,
        };
        assert_eq!(a.invoice_id(), a.invoice_id());
        assert_ne!(a.invoice_id(), b.invoice_id());
        assert_ne!(a.invoice_id(), c.invoice_id());
    }

    #[test]
    fn a_line_refused_for_overflow_leaves_the_document_as_it_was() {
        use crate::tax::{TaxExemption, TaxRate, TaxRateId};
        use dotmac_core::CoreError;
        let settings = DocumentSettings {
            taxes: vec![
                TaxRate::exclusive(TaxRateId::from_u128(1), "zero", Decimal::ZERO),
                TaxRate::exclusive(TaxRateId::from_u128(2), "huge", Decimal::MAX),
            ],
            exemption: TaxExemption::None,
            ..DocumentSettings::default()
        };
        let issue = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let line = |price: Decimal| draft(LineKind::OneOff, Money::new(price, Currency::USD));
        let builder = || document(&settings, issue);
        let mut refused = builder();
        // The second rate's tax on MAX does not fit; the first rate's summary had already
        // counted the line.
        assert_eq!(
            refused.push(line(Decimal::MAX)),
            Err(BillingError::Core(CoreError::Overflow {
                operation: "pricing"
            }))
        );
        assert_eq!(refused.finish(), builder().finish());
    }
}
