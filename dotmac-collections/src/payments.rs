//! Payments and balances: an append-only ledger per customer from which every invoice balance
//! and the customer's credit are derived.
//!
//! * A payment is allocated oldest invoice first (by due date, then issue date, then the order
//!   invoices were recorded), or first to a named invoice and then oldest first.
//! * What no invoice needs stays on the payment as customer credit; the next invoice recorded
//!   consumes it (oldest payment first).
//! * A refund takes the payment's unallocated part first, then reverses its allocations newest
//!   first, which reopens those invoices.
//! * Nothing is ever edited: every movement is a [`LedgerEntry`], and
//!   [`CustomerLedger::from_entries`] rebuilds the same balances from the entries alone.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use chrono::NaiveDate;
use dotmac_core::{Currency, CustomerId, EventPayload, InvoiceId, Money, PaymentId, TenantId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::CollectionsError;
use crate::idempotency::{IdempotencyKey, IdempotencyRecord, KeyedWrite};

/// An amount applied to the invoice on a day: a payment or credit allocation (positive) or its
/// reversal by a refund (negative), in the invoice's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The day it was applied.
    pub on: NaiveDate,
    /// The amount applied.
    pub amount: Decimal,
}

/// One movement in a customer's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum LedgerEntryKind {
    /// An invoice was issued.
    InvoiceIssued {
        /// The invoice.
        invoice: InvoiceId,
        /// Its total.
        total: Money,
        /// Its issue date.
        issued: NaiveDate,
        /// Its due date.
        due: NaiveDate,
    },
    /// A payment was received.
    PaymentReceived {
        /// The payment.
        payment: PaymentId,
        /// Its amount.
        amount: Money,
    },
    /// Part of a payment was applied to an invoice (negative: an allocation reversed by a
    /// refund).
    Allocated {
        /// The payment the money came from.
        payment: PaymentId,
        /// The invoice it went to.
        invoice: InvoiceId,
        /// The amount.
        amount: Money,
    },
    /// Part of a payment was returned to the customer.
    Refunded {
        /// The payment refunded.
        payment: PaymentId,
        /// The amount returned.
        amount: Money,
    },
}

impl LedgerEntryKind {
    /// The currency of the amount that moved.
    pub fn currency(&self) -> Currency {
        match self {
            LedgerEntryKind::InvoiceIssued { total, .. } => total.currency(),
            LedgerEntryKind::PaymentReceived { amount, .. }
            | LedgerEntryKind::Allocated { amount, .. }
            | LedgerEntryKind::Refunded { amount, .. } => amount.currency(),
        }
    }
}

/// A ledger entry: what moved, for whom, on which day, in which order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the customer's ledger, from 0.
    pub sequence: u64,
    /// The customer.
    pub customer: CustomerId,
    /// The day it took effect.
    pub on: NaiveDate,
    /// What moved.
    pub kind: LedgerEntryKind,
}

impl EventPayload for LedgerEntry {
    fn event_type(&self) -> &'static str {
        match self.kind {
            LedgerEntryKind::InvoiceIssued { .. } => "payments.invoice_recorded",
            LedgerEntryKind::PaymentReceived { .. } => "payments.payment_received",
            LedgerEntryKind::Allocated { .. } => "payments.payment_allocated",
            LedgerEntryKind::Refunded { .. } => "payments.payment_refunded",
        }
    }
}

/// Where a payment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationTarget {
    /// Oldest open invoice first.
    OldestFirst,
    /// This invoice first, then oldest first.
    Invoice(InvoiceId),
}

/// An invoice's position, derived from the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InvoiceBalance {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Its total.
    pub total: Money,
    /// What has been allocated to it.
    pub paid: Money,
    /// Its issue date.
    pub issued: NaiveDate,
    /// Its due date.
    pub due: NaiveDate,
}

impl InvoiceBalance {
    /// What is still owed (never below zero: allocations stop at the total).
    pub fn open(&self) -> Money {
        // Never saturates: the ledger refuses any entry after which this difference would not
        // fit (`CustomerLedger::apply`).
        Money::new(
            self.total.amount().saturating_sub(self.paid.amount()),
            self.total.currency(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PaymentBalance {
    payment: PaymentId,
    amount: Money,
    allocated: Money,
    refunded: Money,
}

impl PaymentBalance {
    fn unallocated(&self) -> Money {
        // Never saturates: the ledger refuses any entry after which this difference would not
        // fit (`CustomerLedger::apply`).
        Money::new(
            self.amount
                .amount()
                .saturating_sub(self.allocated.amount())
                .saturating_sub(self.refunded.amount()),
            self.amount.currency(),
        )
    }

    /// The unallocated part if `allocated` and `refunded` were the payment's figures.
    fn unallocated_with(
        &self,
        allocated: Money,
        refunded: Money,
    ) -> Result<Money, CollectionsError> {
        Ok(self.amount.checked_sub(allocated)?.checked_sub(refunded)?)
    }
}

/// The result of recording a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PaymentOutcome {
    /// The entries appended (the receipt and its allocations).
    pub entries: Vec<LedgerEntry>,
    /// What went to which invoice, in allocation order.
    pub allocations: Vec<(InvoiceId, Money)>,
    /// What was left over and became customer credit.
    pub credit: Money,
}

/// One customer's ledger in one currency.
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_collections::{AllocationTarget, CustomerLedger};
/// use dotmac_core::{Currency, CustomerId, InvoiceId, Money, PaymentId};
///
/// let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
/// let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
/// ledger.record_invoice(InvoiceId::from_u128(1), Money::from_minor(3000, Currency::USD), day(1), day(15))?;
/// ledger.record_invoice(InvoiceId::from_u128(2), Money::from_minor(2000, Currency::USD), day(5), day(20))?;
/// let paid = ledger.record_payment(
///     PaymentId::from_u128(9), Money::from_minor(6000, Currency::USD), day(10), AllocationTarget::OldestFirst)?;
/// assert_eq!(paid.allocations.len(), 2);
/// assert_eq!(paid.credit, Money::from_minor(1000, Currency::USD)); // overpaid: credit
/// assert!(ledger.invoice(InvoiceId::from_u128(1)).unwrap().open().is_zero());
/// # Ok::<(), dotmac_collections::CollectionsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerLedger {
    customer: CustomerId,
    currency: Currency,
    entries: Vec<LedgerEntry>,
    invoices: Vec<InvoiceBalance>,
    payments: Vec<PaymentBalance>,
    /// Σ unallocated over the payments, recomputed by `apply` with checked arithmetic: an entry
    /// that would make it overflow is refused, so [`CustomerLedger::credit`] cannot fail.
    credit: Money,
}

impl CustomerLedger {
    /// An empty ledger.
    pub fn new(customer: CustomerId, currency: Currency) -> Self {
        CustomerLedger {
            customer,
            currency,
            entries: Vec::new(),
            invoices: Vec::new(),
            payments: Vec::new(),
            credit: Money::zero(currency),
        }
    }

    /// Rebuilds a ledger from its entries (as stored).
    ///
    /// # Errors
    ///
    /// [`CollectionsError::WrongCurrency`] for an entry in another currency, and the errors of the
    /// operations that would have refused the entries (unknown invoice or payment).
    pub fn from_entries(
        customer: CustomerId,
        currency: Currency,
        entries: impl IntoIterator<Item = LedgerEntry>,
    ) -> Result<Self, CollectionsError> {
        let mut ledger = CustomerLedger::new(customer, currency);
        for entry in entries {
            ledger.apply(&entry)?;
            ledger.entries.push(entry);
        }
        Ok(ledger)
    }

    /// The customer.
    pub fn customer(&self) -> CustomerId {
        self.customer
    }

    /// The account currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Every entry, in order.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// An invoice's balance.
    pub fn invoice(&self, invoice: InvoiceId) -> Option<InvoiceBalance> {
        self.invoices.iter().copied().find(|i| i.invoice == invoice)
    }

    /// Every invoice's balance, in the order they were recorded.
    pub fn invoices(&self) -> &[InvoiceBalance] {
        &self.invoices
    }

    /// The customer's unallocated credit.
    ///
    /// Infallible because the invariant is kept at the door: a payment, allocation or refund
    /// after which the credit (or an invoice's or payment's open amount) would not fit in a
    /// `Decimal` is refused with [`CoreError::Overflow`] and recorded nowhere.
    ///
    /// [`CoreError::Overflow`]: dotmac_core::CoreError::Overflow
    pub fn credit(&self) -> Money {
        self.credit
    }

    /// What has been allocated to `invoice` on each day (negative for reversals), for
    /// [`crate::dunning::evaluate`].
    pub fn settlements(&self, invoice: InvoiceId) -> Vec<Settlement> {
        self.entries
            .iter()
            .filter_map(|e| match &e.kind {
                LedgerEntryKind::Allocated {
                    invoice: i, amount, ..
                } if *i == invoice => Some(Settlement {
                    on: e.on,
                    amount: amount.amount(),
                }),
                _ => None,
            })
            .collect()
    }

    /// What recording `payment` did, rebuilt from the ledger: its receipt, the allocations
    /// made with it, and what was left as credit then. `None` for a payment not recorded.
    pub fn payment_outcome(&self, payment: PaymentId) -> Option<PaymentOutcome> {
        let at = self.entries.iter().position(|e| {
            matches!(&e.kind, LedgerEntryKind::PaymentReceived { payment: p, .. } if *p == payment)
        })?;
        let receipt = self.entries.get(at)?;
        let LedgerEntryKind::PaymentReceived { amount, .. } = &receipt.kind else {
            return None;
        };
        // `record_payment` appends the receipt, then its allocations, nothing in between.
        let allocated: Vec<&LedgerEntry> = self
            .entries
            .iter()
            .skip(at.saturating_add(1))
            .take_while(|e| {
                matches!(&e.kind, LedgerEntryKind::Allocated { payment: p, amount, .. }
                    if *p == payment && amount.is_positive())
            })
            .collect();
        let mut credit = *amount;
        let mut allocations = Vec::with_capacity(allocated.len());
        for entry in &allocated {
            if let LedgerEntryKind::Allocated {
                invoice, amount, ..
            } = &entry.kind
            {
                credit = credit.checked_sub(*amount).ok()?;
                allocations.push((*invoice, *amount));
            }
        }
        let mut entries = vec![receipt.clone()];
        entries.extend(allocated.into_iter().cloned());
        Some(PaymentOutcome {
            entries,
            allocations,
            credit,
        })
    }

    fn check(&self, what: &'static str, amount: Money) -> Result<(), CollectionsError> {
        if amount.currency() != self.currency {
            return Err(CollectionsError::WrongCurrency {
                what,
                expected: self.currency.code(),
                got: amount.currency().code(),
            });
        }
        if !amount.is_positive() {
            return Err(CollectionsError::NonPositiveAmount {
                what,
                amount: amount.amount(),
            });
        }
        Ok(())
    }

    /// Applies an entry to the derived balances: the one place balances change.
    fn apply(&mut self, entry: &LedgerEntry) -> Result<(), CollectionsError> {
        let same = |m: &Money| {
            if m.currency() == self.currency {
                Ok(())
            } else {
                Err(CollectionsError::WrongCurrency {
                    what: "ledger entry",
                    expected: self.currency.code(),
                    got: m.currency().code(),
                })
            }
        };
        match &entry.kind {
            LedgerEntryKind::InvoiceIssued {
                invoice,
                total,
                issued,
                due,
            } => {
                same(total)?;
                if self.invoice(*invoice).is_some() {
                    return Err(CollectionsError::DuplicateInvoice(*invoice));
                }
                self.invoices.push(InvoiceBalance {
                    invoice: *invoice,
                    total: *total,
                    paid: Money::zero(self.currency),
                    issued: *issued,
                    due: *due,
                });
            }
            LedgerEntryKind::PaymentReceived { payment, amount } => {
                same(amount)?;
                if self.payments.iter().any(|p| p.payment == *payment) {
                    return Err(CollectionsError::DuplicatePayment(*payment));
                }
                let received = PaymentBalance {
                    payment: *payment,
                    amount: *amount,
                    allocated: Money::zero(self.currency),
                    refunded: Money::zero(self.currency),
                };
                self.credit = self.credit_with(&received)?;
                self.payments.push(received);
            }
            LedgerEntryKind::Allocated {
                payment,
                invoice,
                amount,
            } => {
                same(amount)?;
                // Every figure is computed before anything changes, so a refused entry leaves
                // the balances as they were.
                let inv = self
                    .invoice(*invoice)
                    .ok_or(CollectionsError::UnknownInvoice(*invoice))?;
                let paid = inv.paid.checked_add(*amount)?;
                inv.total.checked_sub(paid)?;
                let index = inv_index(&self.invoices, *invoice)?;
                let mut pay = self.payment_balance(*payment)?;
                pay.allocated = pay.allocated.checked_add(*amount)?;
                pay.unallocated_with(pay.allocated, pay.refunded)?;
                let credit = self.credit_with(&pay)?;
                if let Some(inv) = self.invoices.get_mut(index) {
                    inv.paid = paid;
                }
                self.replace_payment(pay);
                self.credit = credit;
            }
            LedgerEntryKind::Refunded { payment, amount } => {
                same(amount)?;
                let mut pay = self.payment_balance(*payment)?;
                pay.refunded = pay.refunded.checked_add(*amount)?;
                pay.unallocated_with(pay.allocated, pay.refunded)?;
                self.credit = self.credit_with(&pay)?;
                self.replace_payment(pay);
            }
        }
        Ok(())
    }

    fn payment_balance(&self, payment: PaymentId) -> Result<PaymentBalance, CollectionsError> {
        self.payments
            .iter()
            .copied()
            .find(|p| p.payment == payment)
            .ok_or(CollectionsError::UnknownPayment(payment))
    }

    fn replace_payment(&mut self, updated: PaymentBalance) {
        if let Some(pay) = self
            .payments
            .iter_mut()
            .find(|p| p.payment == updated.payment)
        {
            *pay = updated;
        }
    }

    /// The customer's credit once `updated` replaces its payment's balance (or joins the
    /// payments when it is new): Σ unallocated in payment order, recomputed rather than kept
    /// as a running figure, because a `Decimal` sum rounds beyond 28 significant digits and a
    /// running figure would drift from the balances it sums.
    ///
    /// # Errors
    ///
    /// [`CoreError::Overflow`](dotmac_core::CoreError::Overflow) for "customer credit" when
    /// the sum does not fit.
    fn credit_with(&self, updated: &PaymentBalance) -> Result<Money, CollectionsError> {
        let is_new = !self.payments.iter().any(|p| p.payment == updated.payment);
        let unallocated = self
            .payments
            .iter()
            .map(|p| {
                if p.payment == updated.payment {
                    updated.unallocated()
                } else {
                    p.unallocated()
                }
            })
            .chain(is_new.then(|| updated.unallocated()));
        Money::sum(self.currency, unallocated).map_err(|_| credit_overflow())
    }

    fn push(
        &mut self,
        on: NaiveDate,
        kind: LedgerEntryKind,
    ) -> Result<LedgerEntry, CollectionsError> {
        let entry = LedgerEntry {
            sequence: self.entries.len() as u64,
            customer: self.customer,
            on,
            kind,
        };
        self.apply(&entry)?;
        self.entries.push(entry.clone());
        Ok(entry)
    }

    /// Runs `operation`; on error, drops the entries it appended and rebuilds the balances, so
    /// a refused operation leaves the ledger as it was.
    fn transact<T>(
        &mut self,
        operation: impl FnOnce(&mut Self) -> Result<T, CollectionsError>,
    ) -> Result<T, CollectionsError> {
        let mark = self.entries.len();
        let result = operation(self);
        if result.is_err() && self.entries.len() != mark {
            self.entries.truncate(mark);
            let entries = std::mem::take(&mut self.entries);
            self.invoices.clear();
            self.payments.clear();
            self.credit = Money::zero(self.currency);
            for entry in entries {
                // These entries were all applied once already: replaying them cannot fail.
                let _ = self.apply(&entry);
                self.entries.push(entry);
            }
        }
        result
    }

    /// Open invoices in allocation order: due date, issue date, then recording order.
    fn oldest_open(&self) -> Vec<usize> {
        let mut open: Vec<usize> = (0..self.invoices.len())
            .filter(|&i| self.invoices.get(i).is_some_and(|b| b.open().is_positive()))
            .collect();
        open.sort_by_key(|&i| self.invoices.get(i).map(|b| (b.due, b.issued, i)));
        open
    }

    /// Allocates up to `available` of `payment` to invoice index `index`.
    fn allocate_to(
        &mut self,
        payment: PaymentId,
        index: usize,
        available: Money,
        on: NaiveDate,
        entries: &mut Vec<LedgerEntry>,
        allocations: &mut Vec<(InvoiceId, Money)>,
    ) -> Result<Money, CollectionsError> {
        let Some(balance) = self.invoices.get(index).copied() else {
            return Ok(available);
        };
        let amount = balance.open().min(available)?;
        if !amount.is_positive() {
            return Ok(available);
        }
        entries.push(self.push(
            on,
            LedgerEntryKind::Allocated {
                payment,
                invoice: balance.invoice,
                amount,
            },
        )?);
        allocations.push((balance.invoice, amount));
        Ok(available.checked_sub(amount)?)
    }

    /// Records an invoice and applies the customer's credit to it. Returns the entries added.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::WrongCurrency`], [`CollectionsError::NonPositiveAmount`] for a total of zero
    /// or less (a credit note is not an invoice), [`CollectionsError::DueBeforeIssue`],
    /// [`CollectionsError::DuplicateInvoice`]. Nothing is recorded on error.
    pub fn record_invoice(
        &mut self,
        invoice: InvoiceId,
        total: Money,
        issued: NaiveDate,
        due: NaiveDate,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        self.check("invoice total", total)?;
        if due < issued {
            return Err(CollectionsError::DueBeforeIssue {
                invoice,
                issued,
                due,
            });
        }
        if self.invoice(invoice).is_some() {
            return Err(CollectionsError::DuplicateInvoice(invoice));
        }
        self.transact(|ledger| ledger.record_invoice_inner(invoice, total, issued, due))
    }

    fn record_invoice_inner(
        &mut self,
        invoice: InvoiceId,
        total: Money,
        issued: NaiveDate,
        due: NaiveDate,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        let mut entries = vec![self.push(
            issued,
            LedgerEntryKind::InvoiceIssued {
                invoice,
                total,
                issued,
                due,
            },
        )?];
        let index = self.invoices.len().saturating_sub(1);
        let mut allocations = Vec::new();
        for p in 0..self.payments.len() {
            let Some(pay) = self.payments.get(p).copied() else {
                continue;
            };
            let available = pay.unallocated();
            if available.is_positive() {
                self.allocate_to(
                    pay.payment,
                    index,
                    available,
                    issued,
                    &mut entries,
                    &mut allocations,
                )?;
            }
        }
        Ok(entries)
    }

    /// Records a payment and allocates it.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::WrongCurrency`], [`CollectionsError::NonPositiveAmount`],
    /// [`CollectionsError::DuplicatePayment`], [`CollectionsError::UnknownInvoice`] and
    /// [`CollectionsError::InvoiceSettled`] for a named invoice that is unknown or has nothing
    /// open. Nothing is recorded on error.
    pub fn record_payment(
        &mut self,
        payment: PaymentId,
        amount: Money,
        on: NaiveDate,
        target: AllocationTarget,
    ) -> Result<PaymentOutcome, CollectionsError> {
        self.check("payment", amount)?;
        if self.payments.iter().any(|p| p.payment == payment) {
            return Err(CollectionsError::DuplicatePayment(payment));
        }
        let named = match target {
            AllocationTarget::OldestFirst => None,
            AllocationTarget::Invoice(id) => {
                let index = self
                    .invoices
                    .iter()
                    .position(|i| i.invoice == id)
                    .ok_or(CollectionsError::UnknownInvoice(id))?;
                if self
                    .invoices
                    .get(index)
                    .is_none_or(|b| !b.open().is_positive())
                {
                    return Err(CollectionsError::InvoiceSettled(id));
                }
                Some(index)
            }
        };
        self.transact(|ledger| ledger.record_payment_inner(payment, amount, on, named))
    }

    fn record_payment_inner(
        &mut self,
        payment: PaymentId,
        amount: Money,
        on: NaiveDate,
        named: Option<usize>,
    ) -> Result<PaymentOutcome, CollectionsError> {
        let mut entries =
            vec![self.push(on, LedgerEntryKind::PaymentReceived { payment, amount })?];
        let mut allocations = Vec::new();
        let mut left = amount;
        if let Some(index) = named {
            left = self.allocate_to(payment, index, left, on, &mut entries, &mut allocations)?;
        }
        for index in self.oldest_open() {
            if !left.is_positive() {
                break;
            }
            left = self.allocate_to(payment, index, left, on, &mut entries, &mut allocations)?;
        }
        Ok(PaymentOutcome {
            entries,
            allocations,
            credit: left,
        })
    }

    /// Refunds part or all of a payment: its credit first, then its allocations newest first
    /// (those invoices open again). Returns the entries added.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::WrongCurrency`], [`CollectionsError::NonPositiveAmount`],
    /// [`CollectionsError::UnknownPayment`], [`CollectionsError::RefundExceedsPayment`]. Nothing is
    /// recorded on error.
    pub fn refund(
        &mut self,
        payment: PaymentId,
        amount: Money,
        on: NaiveDate,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        self.check("refund", amount)?;
        let pay = self
            .payments
            .iter()
            .copied()
            .find(|p| p.payment == payment)
            .ok_or(CollectionsError::UnknownPayment(payment))?;
        let refundable = pay.amount.checked_sub(pay.refunded)?;
        if amount.amount() > refundable.amount() {
            return Err(CollectionsError::RefundExceedsPayment {
                payment,
                requested: amount.amount(),
                refundable: refundable.amount(),
            });
        }
        self.transact(|ledger| ledger.refund_inner(pay, amount, on))
    }

    fn refund_inner(
        &mut self,
        pay: PaymentBalance,
        amount: Money,
        on: NaiveDate,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        let payment = pay.payment;
        let mut to_reverse = amount.checked_sub(pay.unallocated().min(amount)?)?;
        // Net allocation per invoice of this payment, newest allocation first.
        let mut net: Vec<(InvoiceId, Money)> = Vec::new();
        for entry in &self.entries {
            if let LedgerEntryKind::Allocated {
                payment: p,
                invoice,
                amount,
            } = &entry.kind
                && *p == payment
            {
                match net.iter_mut().find(|(i, _)| i == invoice) {
                    Some((_, total)) => *total = total.checked_add(*amount)?,
                    None => net.push((*invoice, *amount)),
                }
            }
        }
        let mut entries = Vec::new();
        for (invoice, allocated) in net.into_iter().rev() {
            if !to_reverse.is_positive() {
                break;
            }
            let reverse = allocated.min(to_reverse)?;
            if reverse.is_positive() {
                entries.push(self.push(
                    on,
                    LedgerEntryKind::Allocated {
                        payment,
                        invoice,
                        amount: reverse.negate(),
                    },
                )?);
                to_reverse = to_reverse.checked_sub(reverse)?;
            }
        }
        entries.push(self.push(on, LedgerEntryKind::Refunded { payment, amount })?);
        Ok(entries)
    }
}

/// The position of `invoice` among the balances.
fn inv_index(invoices: &[InvoiceBalance], invoice: InvoiceId) -> Result<usize, CollectionsError> {
    invoices
        .iter()
        .position(|i| i.invoice == invoice)
        .ok_or(CollectionsError::UnknownInvoice(invoice))
}

/// The error for an entry after which the customer's credit would not fit in a `Decimal`.
fn credit_overflow() -> CollectionsError {
    dotmac_core::CoreError::Overflow {
        operation: "customer credit",
    }
    .into()
}

/// Where ledgers are kept. Every call is scoped to a tenant; entries are only ever appended.
pub trait PaymentStore: Send + Sync {
    /// Appends entries to a customer's ledger.
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn append_entries(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
    ) -> impl Future<Output = Result<(), CollectionsError>> + Send;

    /// A customer's entries in order.
    ///
    /// # Errors
    ///
    /// Storage failures, as the implementation reports them.
    fn entries(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, CollectionsError>> + Send;

    /// The record of an idempotency key of the tenant, if one was written.
    ///
    /// # Errors
    ///
    /// Storage failures; the default (a store without idempotency keys) always fails with
    /// [`CollectionsError::InvalidConfiguration`].
    fn payment_idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, CollectionsError>> + Send {
        let _ = (tenant, key);
        async { Err(crate::idempotency::unsupported()) }
    }

    /// Appends entries and records `record` under its key, atomically: if the key is already
    /// recorded (a concurrent retry), nothing is appended and the stored record is returned.
    ///
    /// # Errors
    ///
    /// As [`PaymentStore::append_entries`]; the default (a store without idempotency keys) always
    /// fails with [`CollectionsError::InvalidConfiguration`].
    fn append_entries_keyed(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        record: &IdempotencyRecord,
    ) -> impl Future<Output = Result<KeyedWrite<()>, CollectionsError>> + Send {
        let _ = (tenant, customer, entries, record);
        async { Err(crate::idempotency::unsupported()) }
    }
}

/// A [`PaymentStore`] in memory, for tests and examples.
#[derive(Debug, Default)]
pub struct InMemoryPaymentStore {
    ledgers: Mutex<Ledgers>,
}

/// Everything an [`InMemoryPaymentStore`] holds, behind its one lock, so that a keyed append
/// and its key are one atomic step.
#[derive(Debug, Default)]
struct Ledgers {
    entries: HashMap<(TenantId, CustomerId), Vec<LedgerEntry>>,
    keys: HashMap<(TenantId, IdempotencyKey), IdempotencyRecord>,
}

impl InMemoryPaymentStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl PaymentStore for InMemoryPaymentStore {
    #[tracing::instrument(name = "dotmac.store.append_ledger", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, entries = entries.len()))]
    async fn append_entries(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
    ) -> Result<(), CollectionsError> {
        let mut ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        place(
            ledgers.entries.entry((tenant, customer)).or_default(),
            customer,
            entries,
        )
    }

    #[tracing::instrument(name = "dotmac.store.ledger_entries", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn entries(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        let ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        Ok(ledgers
            .entries
            .get(&(tenant, customer))
            .cloned()
            .unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.payment_idempotency_record", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn payment_idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, CollectionsError> {
        let ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        Ok(ledgers.keys.get(&(tenant, key.clone())).cloned())
    }

    #[tracing::instrument(name = "dotmac.store.append_ledger_keyed", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, entries = entries.len()))]
    async fn append_entries_keyed(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        record: &IdempotencyRecord,
    ) -> Result<KeyedWrite<()>, CollectionsError> {
        let mut ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(earlier) = ledgers.keys.get(&(tenant, record.key.clone())) {
            return Ok(KeyedWrite::Replayed(Box::new(earlier.clone())));
        }
        // Entries first: a refused append must not leave its key behind.
        place(
            ledgers.entries.entry((tenant, customer)).or_default(),
            customer,
            entries,
        )?;
        ledgers
            .keys
            .insert((tenant, record.key.clone()), record.clone());
        Ok(KeyedWrite::Written(()))
    }
}

/// Appends `entries` to `ledger` (kept in sequence order, as a SQL store reads it), or none of
/// them when one's position is taken, by the ledger or by an earlier entry of the call: the
/// caller's ledger is stale (another writer appended first). The same refusal as the SQL
/// stores' unique position.
fn place(
    ledger: &mut Vec<LedgerEntry>,
    customer: CustomerId,
    entries: &[LedgerEntry],
) -> Result<(), CollectionsError> {
    let mut taken: std::collections::HashSet<u64> = ledger.iter().map(|e| e.sequence).collect();
    if let Some(clash) = entries.iter().find(|e| !taken.insert(e.sequence)) {
        return Err(CollectionsError::AlreadyExists {
            what: "ledger entry",
            id: format!("{customer}#{}", clash.sequence),
        });
    }
    ledger.extend_from_slice(entries);
    // Stable and linear on the usual already-sorted ledger (appends at the end).
    ledger.sort_by_key(|e| e.sequence);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_core::CoreError;

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::USD)
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    fn ledger_with_two_invoices() -> CustomerLedger {
        let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
        ledger
            .record_invoice(InvoiceId::from_u128(1), usd(3000), day(1), day(15))
            .unwrap();
        ledger
            .record_invoice(InvoiceId::from_u128(2), usd(2000), day(5), day(20))
            .unwrap();
        ledger
    }

    #[test]
    fn named_invoice_first_then_oldest_and_credit_feeds_the_next_invoice() {
        let mut ledger = ledger_with_two_invoices();
        let out = ledger
            .record_payment(
                PaymentId::from_u128(1),
                usd(2500),
                day(6),
                AllocationTarget::Invoice(InvoiceId::from_u128(2)),
            )
            .unwrap();
        assert_eq!(
            out.allocations,
            vec![
                (InvoiceId::from_u128(2), usd(2000)),
                (InvoiceId::from_u128(1), usd(500))
            ]
        );
        assert_eq!(out.credit, usd(0));
        ledger
            .record_payment(
                PaymentId::from_u128(2),
                usd(3000),
                day(7),
                AllocationTarget::OldestFirst,
            )
            .unwrap();
        assert_eq!(ledger.credit(), usd(500));
        ledger
            .record_invoice(InvoiceId::from_u128(3), usd(1200), day(8), day(22))
            .unwrap();
        assert_eq!(ledger.credit(), usd(0));
        assert_eq!(
            ledger.invoice(InvoiceId::from_u128(3)).unwrap().open(),
            usd(700)
        );
        let rebuilt = CustomerLedger::from_entries(
            ledger.customer(),
            Currency::USD,
            ledger.entries().to_vec(),
        )
        .unwrap();
        assert_eq!(rebuilt, ledger);
    }

    #[test]
    fn refund_takes_credit_first_then_reopens_newest_allocation() {
        let mut ledger = ledger_with_two_invoices();
        ledger
            .record_payment(
                PaymentId::from_u128(1),
                usd(6000),
                day(6),
                AllocationTarget::OldestFirst,
            )
            .unwrap();
        ledger
            .refund(PaymentId::from_u128(1), usd(1500), day(9))
            .unwrap();
        assert_eq!(ledger.credit(), usd(0));
        assert_eq!(
            ledger.invoice(InvoiceId::from_u128(2)).unwrap().open(),
            usd(500)
        );
        assert_eq!(
            ledger.invoice(InvoiceId::from_u128(1)).unwrap().open(),
            usd(0)
        );
        assert_eq!(
            ledger.settlements(InvoiceId::from_u128(2)),
            vec![
                Settlement {
                    on: day(6),
                    amount: usd(2000).amount()
                },
                Settlement {
                    on: day(9),
                    amount: usd(-500).amount()
                }
            ]
        );
    }

    #[test]
    fn a_due_date_before_the_issue_date_is_refused_and_changes_nothing() {
        let mut ledger = ledger_with_two_invoices();
        let before = ledger.clone();
        assert_eq!(
            ledger.record_invoice(InvoiceId::from_u128(3), usd(100), day(10), day(9)),
            Err(CollectionsError::DueBeforeIssue {
                invoice: InvoiceId::from_u128(3),
                issued: day(10),
                due: day(9)
            })
        );
        assert_eq!(ledger, before);
        // Due on the issue date is fine.
        assert!(
            ledger
                .record_invoice(InvoiceId::from_u128(3), usd(100), day(10), day(10))
                .is_ok()
        );
    }

    #[test]
    fn payments_whose_credit_would_overflow_are_refused_and_change_nothing() {
        // The reproduction from issue 9: two `Decimal::MAX` payments, then `credit()`.
        let max = Money::new(rust_decimal::Decimal::MAX, Currency::USD);
        let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
        ledger
            .record_payment(
                PaymentId::from_u128(1),
                max,
                day(1),
                AllocationTarget::OldestFirst,
            )
            .unwrap();
        let before = ledger.clone();
        assert_eq!(
            ledger.record_payment(
                PaymentId::from_u128(2),
                max,
                day(2),
                AllocationTarget::OldestFirst
            ),
            Err(CollectionsError::Core(CoreError::Overflow {
                operation: "customer credit"
            }))
        );
        assert_eq!(ledger, before);
        assert_eq!(ledger.credit(), max);
        // An invoice takes the credit; the same payment then fits.
        ledger
            .record_invoice(InvoiceId::from_u128(1), usd(100), day(3), day(17))
            .unwrap();
        ledger
            .record_payment(
                PaymentId::from_u128(2),
                usd(100),
                day(4),
                AllocationTarget::OldestFirst,
            )
            .unwrap();
        assert_eq!(ledger.credit(), max);
    }

    #[test]
    fn stored_entries_whose_credit_would_overflow_are_refused() {
        let max = Money::new(rust_decimal::Decimal::MAX, Currency::USD);
        let entry = |sequence, payment| LedgerEntry {
            sequence,
            customer: CustomerId::from_u128(1),
            on: day(1),
            kind: LedgerEntryKind::PaymentReceived {
                payment: PaymentId::from_u128(payment),
                amount: max,
            },
        };
        assert_eq!(
            CustomerLedger::from_entries(
                CustomerId::from_u128(1),
                Currency::USD,
                [entry(0, 1), entry(1, 2)]
            ),
            Err(CollectionsError::Core(CoreError::Overflow {
                operation: "customer credit"
            }))
        );
    }

    #[test]
    fn bad_payments_are_refused_and_change_nothing() {
        let mut ledger = ledger_with_two_invoices();
        let before = ledger.clone();
        let eur = Money::from_minor(100, Currency::EUR);
        assert_eq!(
            ledger.record_payment(
                PaymentId::from_u128(1),
                eur,
                day(6),
                AllocationTarget::OldestFirst
            ),
            Err(CollectionsError::WrongCurrency {
                what: "payment",
                expected: "USD",
                got: "EUR"
            })
        );
        assert_eq!(
            ledger.record_payment(
                PaymentId::from_u128(1),
                usd(0),
                day(6),
                AllocationTarget::OldestFirst
            ),
            Err(CollectionsError::NonPositiveAmount {
                what: "payment",
                amount: usd(0).amount()
            })
        );
        assert_eq!(
            ledger.record_payment(
                PaymentId::from_u128(1),
                usd(10),
                day(6),
                AllocationTarget::Invoice(InvoiceId::from_u128(9))
            ),
            Err(CollectionsError::UnknownInvoice(InvoiceId::from_u128(9)))
        );
        assert_eq!(
            ledger.refund(PaymentId::from_u128(1), usd(10), day(6)),
            Err(CollectionsError::UnknownPayment(PaymentId::from_u128(1)))
        );
        assert_eq!(ledger, before);
        ledger
            .record_payment(
                PaymentId::from_u128(1),
                usd(100),
                day(6),
                AllocationTarget::OldestFirst,
            )
            .unwrap();
        let before = ledger.clone();
        assert_eq!(
            ledger.refund(PaymentId::from_u128(1), usd(101), day(7)),
            Err(CollectionsError::RefundExceedsPayment {
                payment: PaymentId::from_u128(1),
                requested: usd(101).amount(),
                refundable: usd(100).amount()
            })
        );
        assert_eq!(ledger, before);
    }
}
