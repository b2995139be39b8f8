//! Payments and balances: an append-only ledger per customer from which every invoice balance
//! and the customer's credit are derived.
//!
//! * A payment is allocated oldest invoice first (by due date, then issue date, then the order
//!   invoices were recorded), or first to a named invoice and then oldest first.
//! * What no invoice needs stays on the payment as customer credit; the next invoice recorded
//!   consumes it (oldest payment first). An invoice with a negative total (a credit owed to the
//!   customer) settles itself into customer credit at once
//!   ([`CustomerLedger::credit_source`]).
//! * A refund takes the payment's unallocated part first, then reverses its allocations newest
//!   first, which reopens those invoices.
//! * A credit note reduces what its invoice owes: its open part first, then what was written
//!   off; what the invoice was paid beyond its new total is released (its allocations reversed,
//!   newest first) to customer credit, or refunded with [`CreditSettlement::Refund`].
//! * A void takes an invoice out of what is owed: what was written off is reinstated, every
//!   allocation on it is released to customer credit, then the rest is voided.
//! * A write-off marks the open rest uncollectible: it is not owed for dunning or ageing, and
//!   the invoice stays payable: a payment *named* to it (not an oldest-first one) reinstates
//!   what it pays of the written-off part and is allocated to it. A refund that reopens an
//!   invoice once written off writes the reopened part off again.
//! * Nothing is ever edited: every movement is a [`LedgerEntry`], and
//!   [`CustomerLedger::from_entries`] rebuilds the same balances from the entries alone. Per
//!   invoice `open = total − paid − credited − written_off − voided ≥ 0`, and over the ledger
//!   Σ entries = Σ open − credit ([`Reconciliation`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use dotmac_core::outbox::{MemoryOutbox, OutboxCounts, OutboxEvent, OutboxMessage, OutboxStore};
use dotmac_core::{
    CreditNoteId, Currency, CustomerId, EventPayload, IdDigest, InvoiceId, Money, PaymentId,
    StorageError, TenantId,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::CollectionsError;
use crate::idempotency::{IdempotencyKey, IdempotencyRecord, KeyedWrite};

/// An amount applied to the invoice on a day: a payment or credit allocation (positive) or its
/// reversal by a refund (negative), a credit note, or a void, in the invoice's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The day it was applied.
    pub on: NaiveDate,
    /// The amount applied.
    pub amount: Decimal,
}

/// What happens to the part of a credit note that its invoice no longer owes: billing's
/// choice, carried by `billing.credit_note_issued` (one type on both sides of the event).
pub use dotmac_billing::CreditSettlement;

/// Where an invoice stands in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BalanceState {
    /// Owed, nothing paid.
    Open,
    /// Owed in part: something was paid.
    PartiallyPaid,
    /// Nothing owed: paid, credited in full, or a total of zero or less.
    Paid,
    /// Voided: taken out of what is owed.
    Void,
    /// Written off (in part): the rest is not collected.
    Uncollectible,
}

/// One movement in a customer's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum LedgerEntryKind {
    /// An invoice was issued. A negative total is a credit owed to the customer: the invoice
    /// is settled by it at once and the amount becomes customer credit under
    /// [`CustomerLedger::credit_source`].
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
    /// Part of a payment (or of customer credit) was applied to an invoice (negative: an
    /// allocation reversed by a refund, or released by a credit note or a void).
    Allocated {
        /// The payment the money came from (or a [`CustomerLedger::credit_source`]).
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
    /// A credit note reduced what an invoice owes.
    CreditNoted {
        /// The invoice credited.
        invoice: InvoiceId,
        /// The credit note.
        credit_note: CreditNoteId,
        /// Its amount (above zero).
        amount: Money,
        /// What was done with the part already paid.
        settlement: CreditSettlement,
    },
    /// An invoice was voided: `amount` (its total less its credit notes) is no longer owed.
    Voided {
        /// The invoice.
        invoice: InvoiceId,
        /// What the void took out of what is owed.
        amount: Money,
    },
    /// Part of an invoice was written off as uncollectible (negative: a written-off part
    /// reinstated, because a payment named the invoice or a credit note or void followed).
    WrittenOff {
        /// The invoice.
        invoice: InvoiceId,
        /// The amount.
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
            | LedgerEntryKind::Refunded { amount, .. }
            | LedgerEntryKind::CreditNoted { amount, .. }
            | LedgerEntryKind::Voided { amount, .. }
            | LedgerEntryKind::WrittenOff { amount, .. } => amount.currency(),
        }
    }

    /// The invoice the entry is about, if any.
    pub fn invoice(&self) -> Option<InvoiceId> {
        match self {
            LedgerEntryKind::InvoiceIssued { invoice, .. }
            | LedgerEntryKind::Allocated { invoice, .. }
            | LedgerEntryKind::CreditNoted { invoice, .. }
            | LedgerEntryKind::Voided { invoice, .. }
            | LedgerEntryKind::WrittenOff { invoice, .. } => Some(*invoice),
            LedgerEntryKind::PaymentReceived { .. } | LedgerEntryKind::Refunded { .. } => None,
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
            LedgerEntryKind::CreditNoted { .. } => "payments.credit_noted",
            LedgerEntryKind::Voided { .. } => "payments.voided",
            LedgerEntryKind::WrittenOff { .. } => "payments.written_off",
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

/// An invoice's position, derived from the ledger:
/// `open = total − paid − credited − written_off − voided`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InvoiceBalance {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Its total.
    pub total: Money,
    /// What has been allocated to it (payments and customer credit, net of reversals); for an
    /// invoice with a negative total, the total itself (it settled into customer credit).
    pub paid: Money,
    /// What its credit notes took off.
    pub credited: Money,
    /// What is written off as uncollectible now.
    pub written_off: Money,
    /// What a void took out of what is owed; `None` while the invoice is not void.
    pub voided: Option<Money>,
    /// True once the invoice was written off, even if a payment since reinstated and paid the
    /// written-off part: a refund that reopens it writes the reopened part off again.
    pub uncollectible: bool,
    /// Its issue date.
    pub issued: NaiveDate,
    /// Its due date.
    pub due: NaiveDate,
}

impl InvoiceBalance {
    /// What is still owed (never below zero: the ledger refuses any entry that would take it
    /// there, or after which it would not fit).
    pub fn open(&self) -> Money {
        // Never saturates: the same subtractions, in the same order, were checked by
        // `CustomerLedger::apply` before the figures were kept.
        let voided = self.voided.map_or(Decimal::ZERO, |v| v.amount());
        Money::new(
            self.total
                .amount()
                .saturating_sub(self.paid.amount())
                .saturating_sub(self.credited.amount())
                .saturating_sub(self.written_off.amount())
                .saturating_sub(voided),
            self.total.currency(),
        )
    }

    /// [`Self::open`] with checked arithmetic: the check `apply` makes.
    fn checked_open(&self) -> Result<Money, CollectionsError> {
        let mut open = self
            .total
            .checked_sub(self.paid)?
            .checked_sub(self.credited)?
            .checked_sub(self.written_off)?;
        if let Some(voided) = self.voided {
            open = open.checked_sub(voided)?;
        }
        Ok(open)
    }

    /// What the payments applied (`paid`): allocations and customer credit.
    pub fn settled(&self) -> Money {
        self.paid
    }

    /// Where the invoice stands: void, uncollectible (something is written off), paid (nothing
    /// open), partially paid (something allocated), or open.
    pub fn state(&self) -> BalanceState {
        if self.voided.is_some() {
            BalanceState::Void
        } else if self.written_off.is_positive() {
            BalanceState::Uncollectible
        } else if !self.open().is_positive() {
            BalanceState::Paid
        } else if self.paid.is_positive() {
            BalanceState::PartiallyPaid
        } else {
            BalanceState::Open
        }
    }

    /// True when dunning and ageing have something to chase: not void, not written off, and a
    /// positive total.
    pub fn is_collectible(&self) -> bool {
        self.voided.is_none() && !self.written_off.is_positive() && self.total.is_positive()
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
    /// The entries appended (the receipt and its allocations, with the reinstatement of a
    /// written-off part the payment pays).
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
/// use dotmac_collections::{AllocationTarget, BalanceState, CreditSettlement, CustomerLedger};
/// use dotmac_core::{CreditNoteId, Currency, CustomerId, InvoiceId, Money, PaymentId};
///
/// let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
/// let usd = |minor| Money::from_minor(minor, Currency::USD);
/// let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
/// ledger.record_invoice(InvoiceId::from_u128(1), usd(3000), day(1), day(15))?;
/// ledger.record_invoice(InvoiceId::from_u128(2), usd(2000), day(5), day(20))?;
/// let paid = ledger.record_payment(
///     PaymentId::from_u128(9), usd(6000), day(10), AllocationTarget::OldestFirst)?;
/// assert_eq!(paid.allocations.len(), 2);
/// assert_eq!(paid.credit, usd(1000)); // overpaid: credit
/// assert!(ledger.invoice(InvoiceId::from_u128(1)).unwrap().open().is_zero());
/// // A credit note of 500 on the paid invoice: the 500 it was paid beyond its new total
/// // becomes credit too.
/// ledger.credit_note(
///     CreditNoteId::from_u128(1), InvoiceId::from_u128(2), usd(500), day(11), CreditSettlement::Credit)?;
/// assert_eq!(ledger.credit(), usd(1500));
/// assert_eq!(ledger.invoice(InvoiceId::from_u128(2)).unwrap().state(), BalanceState::Paid);
/// assert!(ledger.reconcile()?.balances()?);
/// # Ok::<(), dotmac_collections::CollectionsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerLedger {
    customer: CustomerId,
    currency: Currency,
    entries: Vec<LedgerEntry>,
    invoices: Vec<InvoiceBalance>,
    payments: Vec<PaymentBalance>,
    /// The credit notes entered, so that one is never entered twice.
    credit_notes: Vec<CreditNoteId>,
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
            credit_notes: Vec::new(),
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

    /// The id under which the customer credit of an invoice with a negative total is kept:
    /// its allocations and refunds name it as their payment.
    pub fn credit_source(invoice: InvoiceId) -> PaymentId {
        PaymentId::derived(
            IdDigest::new("dotmac-collections.invoice-credit").uuid(invoice.as_uuid()),
        )
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

    /// Whether `credit_note` was entered.
    pub fn has_credit_note(&self, credit_note: CreditNoteId) -> bool {
        self.credit_notes.contains(&credit_note)
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

    /// The two sides of the ledger's equation, from its entries alone (see
    /// [`Reconciliation::of`]).
    ///
    /// # Errors
    ///
    /// As [`Reconciliation::of`].
    pub fn reconcile(&self) -> Result<Reconciliation, CollectionsError> {
        Reconciliation::of(self.currency, &self.entries)
    }

    /// What has reduced `invoice`'s balance on each day, for [`crate::dunning::evaluate`]:
    /// allocations (negative for reversals), credit notes and a void. Write-offs are not in it:
    /// dunning does not evaluate an invoice while something of it is written off.
    pub fn settlements(&self, invoice: InvoiceId) -> Vec<Settlement> {
        self.entries
            .iter()
            .filter_map(|e| match &e.kind {
                LedgerEntryKind::Allocated {
                    invoice: i, amount, ..
                }
                | LedgerEntryKind::CreditNoted {
                    invoice: i, amount, ..
                }
                | LedgerEntryKind::Voided { invoice: i, amount }
                    if *i == invoice =>
                {
                    Some(Settlement {
                        on: e.on,
                        amount: amount.amount(),
                    })
                }
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
        // `record_payment` appends the receipt, then its allocations (each possibly after the
        // reinstatement of the written-off part it pays), nothing in between.
        let is_allocation = |e: &LedgerEntry| {
            matches!(&e.kind, LedgerEntryKind::Allocated { payment: p, amount, .. }
                if *p == payment && amount.is_positive())
        };
        let mut made: Vec<&LedgerEntry> = Vec::new();
        let mut rest = self.entries.iter().skip(at.saturating_add(1)).peekable();
        while let Some(entry) = rest.next() {
            let reinstated = match &entry.kind {
                LedgerEntryKind::WrittenOff { invoice, amount } if amount.is_negative() => {
                    Some(*invoice)
                }
                _ => None,
            };
            if let Some(invoice) = reinstated {
                // Part of this payment only when its allocation to that invoice follows.
                match rest.peek() {
                    Some(next) if is_allocation(next) && next.kind.invoice() == Some(invoice) => {
                        made.push(entry);
                    }
                    _ => break,
                }
            } else if is_allocation(entry) {
                made.push(entry);
            } else {
                break;
            }
        }
        let mut credit = *amount;
        let mut allocations = Vec::with_capacity(made.len());
        for entry in &made {
            if let LedgerEntryKind::Allocated {
                invoice, amount, ..
            } = &entry.kind
            {
                credit = credit.checked_sub(*amount).ok()?;
                allocations.push((*invoice, *amount));
            }
        }
        let mut entries = vec![receipt.clone()];
        entries.extend(made.into_iter().cloned());
        Some(PaymentOutcome {
            entries,
            allocations,
            credit,
        })
    }

    fn check(&self, what: &'static str, amount: Money) -> Result<(), CollectionsError> {
        self.check_currency(what, amount)?;
        if !amount.is_positive() {
            return Err(CollectionsError::NonPositiveAmount {
                what,
                amount: amount.amount(),
            });
        }
        Ok(())
    }

    fn check_currency(&self, what: &'static str, amount: Money) -> Result<(), CollectionsError> {
        if amount.currency() != self.currency {
            return Err(CollectionsError::WrongCurrency {
                what,
                expected: self.currency.code(),
                got: amount.currency().code(),
            });
        }
        Ok(())
    }

    /// Applies an entry to the derived balances: the one place balances change. Every figure
    /// is computed before anything changes, so a refused entry leaves the balances as they
    /// were.
    fn apply(&mut self, entry: &LedgerEntry) -> Result<(), CollectionsError> {
        self.check_currency("ledger entry", Money::zero(entry.kind.currency()))?;
        match &entry.kind {
            LedgerEntryKind::InvoiceIssued {
                invoice,
                total,
                issued,
                due,
            } => {
                if self.invoice(*invoice).is_some() {
                    return Err(CollectionsError::DuplicateInvoice(*invoice));
                }
                let zero = Money::zero(self.currency);
                let mut balance = InvoiceBalance {
                    invoice: *invoice,
                    total: *total,
                    paid: zero,
                    credited: zero,
                    written_off: zero,
                    voided: None,
                    uncollectible: false,
                    issued: *issued,
                    due: *due,
                };
                if total.is_negative() {
                    // A credit owed to the customer: settled by itself into customer credit.
                    balance.paid = *total;
                    let source = PaymentBalance {
                        payment: Self::credit_source(*invoice),
                        amount: total.negate(),
                        allocated: zero,
                        refunded: zero,
                    };
                    if self.payments.iter().any(|p| p.payment == source.payment) {
                        return Err(CollectionsError::DuplicatePayment(source.payment));
                    }
                    self.credit = self.credit_with(&source)?;
                    self.payments.push(source);
                }
                self.invoices.push(balance);
            }
            LedgerEntryKind::PaymentReceived { payment, amount } => {
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
                let (index, mut inv) = self.balance_of(*invoice)?;
                if inv.voided.is_some() && amount.is_positive() {
                    return Err(CollectionsError::InvoiceVoided(*invoice));
                }
                inv.paid = inv.paid.checked_add(*amount)?;
                inv.checked_open()?;
                let mut pay = self.payment_balance(*payment)?;
                pay.allocated = pay.allocated.checked_add(*amount)?;
                pay.unallocated_with(pay.allocated, pay.refunded)?;
                let credit = self.credit_with(&pay)?;
                self.replace_invoice(index, inv);
                self.replace_payment(pay);
                self.credit = credit;
            }
            LedgerEntryKind::Refunded { payment, amount } => {
                let mut pay = self.payment_balance(*payment)?;
                pay.refunded = pay.refunded.checked_add(*amount)?;
                pay.unallocated_with(pay.allocated, pay.refunded)?;
                self.credit = self.credit_with(&pay)?;
                self.replace_payment(pay);
            }
            LedgerEntryKind::CreditNoted {
                invoice,
                credit_note,
                amount,
                ..
            } => {
                let (index, mut inv) = self.balance_of(*invoice)?;
                if inv.voided.is_some() {
                    return Err(CollectionsError::InvoiceVoided(*invoice));
                }
                if self.credit_notes.contains(credit_note) {
                    return Err(CollectionsError::DuplicateCreditNote(*credit_note));
                }
                inv.credited = inv.credited.checked_add(*amount)?;
                not_below_zero(&inv)?;
                self.replace_invoice(index, inv);
                self.credit_notes.push(*credit_note);
            }
            LedgerEntryKind::Voided { invoice, amount } => {
                let (index, mut inv) = self.balance_of(*invoice)?;
                if inv.voided.is_some() {
                    return Err(CollectionsError::InvoiceVoided(*invoice));
                }
                inv.voided = Some(*amount);
                not_below_zero(&inv)?;
                self.replace_invoice(index, inv);
            }
            LedgerEntryKind::WrittenOff { invoice, amount } => {
                let (index, mut inv) = self.balance_of(*invoice)?;
                if inv.voided.is_some() {
                    return Err(CollectionsError::InvoiceVoided(*invoice));
                }
                inv.written_off = inv.written_off.checked_add(*amount)?;
                if inv.written_off.is_negative() {
                    return Err(below_zero());
                }
                inv.uncollectible |= amount.is_positive();
                not_below_zero(&inv)?;
                self.replace_invoice(index, inv);
            }
        }
        Ok(())
    }

    fn balance_of(&self, invoice: InvoiceId) -> Result<(usize, InvoiceBalance), CollectionsError> {
        let index = inv_index(&self.invoices, invoice)?;
        let balance = self
            .invoices
            .get(index)
            .copied()
            .ok_or(CollectionsError::UnknownInvoice(invoice))?;
        Ok((index, balance))
    }

    fn replace_invoice(&mut self, index: usize, updated: InvoiceBalance) {
        if let Some(inv) = self.invoices.get_mut(index) {
            *inv = updated;
        }
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
            self.credit_notes.clear();
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

    /// Allocates up to `available` of `payment` to invoice index `index`: its open part, and
    /// with `recover` also its written-off part (reinstated first). Returns what is left.
    #[allow(clippy::too_many_arguments)]
    fn allocate_to(
        &mut self,
        payment: PaymentId,
        index: usize,
        available: Money,
        on: NaiveDate,
        recover: bool,
        entries: &mut Vec<LedgerEntry>,
        allocations: &mut Vec<(InvoiceId, Money)>,
    ) -> Result<Money, CollectionsError> {
        let Some(balance) = self.invoices.get(index).copied() else {
            return Ok(available);
        };
        if balance.voided.is_some() {
            return Ok(available);
        }
        let open = balance.open();
        let payable = if recover && balance.written_off.is_positive() {
            open.checked_add(balance.written_off)?
        } else {
            open
        };
        let amount = payable.min(available)?;
        if !amount.is_positive() {
            return Ok(available);
        }
        if amount.amount() > open.amount() {
            let reinstate = amount.checked_sub(open)?;
            entries.push(self.push(
                on,
                LedgerEntryKind::WrittenOff {
                    invoice: balance.invoice,
                    amount: reinstate.negate(),
                },
            )?);
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

    /// Net allocation to `invoice` per payment (or credit source), in the order the payments
    /// first went to it.
    fn allocations_to(
        &self,
        invoice: InvoiceId,
    ) -> Result<Vec<(PaymentId, Money)>, CollectionsError> {
        let mut net: Vec<(PaymentId, Money)> = Vec::new();
        for entry in &self.entries {
            if let LedgerEntryKind::Allocated {
                payment,
                invoice: i,
                amount,
            } = &entry.kind
                && *i == invoice
            {
                match net.iter_mut().find(|(p, _)| p == payment) {
                    Some((_, total)) => *total = total.checked_add(*amount)?,
                    None => net.push((*payment, *amount)),
                }
            }
        }
        Ok(net)
    }

    /// Releases up to `up_to` (everything when `None`) of what was allocated to `invoice`,
    /// newest payment first, back to customer credit; with `refund`, refunds each released
    /// part too. Returns what was released.
    fn release(
        &mut self,
        invoice: InvoiceId,
        up_to: Option<Money>,
        on: NaiveDate,
        refund: bool,
        entries: &mut Vec<LedgerEntry>,
    ) -> Result<Money, CollectionsError> {
        let mut released = Money::zero(self.currency);
        for (payment, allocated) in self.allocations_to(invoice)?.into_iter().rev() {
            let amount = match up_to {
                Some(limit) => allocated.min(limit.checked_sub(released)?)?,
                None => allocated,
            };
            if !amount.is_positive() {
                continue;
            }
            entries.push(self.push(
                on,
                LedgerEntryKind::Allocated {
                    payment,
                    invoice,
                    amount: amount.negate(),
                },
            )?);
            if refund {
                entries.push(self.push(on, LedgerEntryKind::Refunded { payment, amount })?);
            }
            released = released.checked_add(amount)?;
        }
        Ok(released)
    }

    /// Records an invoice and applies the customer's credit to it. Returns the entries added.
    ///
    /// A total of zero is recorded as paid; a negative total (a credit owed to the customer)
    /// is recorded as paid and its amount becomes customer credit
    /// ([`CustomerLedger::credit_source`]); neither takes credit.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::WrongCurrency`], [`CollectionsError::DueBeforeIssue`],
    /// [`CollectionsError::DuplicateInvoice`]. Nothing is recorded on error.
    pub fn record_invoice(
        &mut self,
        invoice: InvoiceId,
        total: Money,
        issued: NaiveDate,
        due: NaiveDate,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        self.check_currency("invoice total", total)?;
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
        if !total.is_positive() {
            return Ok(entries);
        }
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
                    false,
                    &mut entries,
                    &mut allocations,
                )?;
            }
        }
        Ok(entries)
    }

    /// Records a payment and allocates it. A payment named to an invoice that was written off
    /// pays its open part, then reinstates and pays its written-off part.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::WrongCurrency`], [`CollectionsError::NonPositiveAmount`],
    /// [`CollectionsError::DuplicatePayment`], and for a named invoice
    /// [`CollectionsError::UnknownInvoice`], [`CollectionsError::InvoiceVoided`] or
    /// [`CollectionsError::InvoiceSettled`] (nothing open or written off). Nothing is recorded
    /// on error.
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
                let (index, balance) = self.balance_of(id)?;
                if balance.voided.is_some() {
                    return Err(CollectionsError::InvoiceVoided(id));
                }
                if !balance.open().is_positive() && !balance.written_off.is_positive() {
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
            left = self.allocate_to(
                payment,
                index,
                left,
                on,
                true,
                &mut entries,
                &mut allocations,
            )?;
        }
        for index in self.oldest_open() {
            if !left.is_positive() {
                break;
            }
            left = self.allocate_to(
                payment,
                index,
                left,
                on,
                false,
                &mut entries,
                &mut allocations,
            )?;
        }
        Ok(PaymentOutcome {
            entries,
            allocations,
            credit: left,
        })
    }

    /// Refunds part or all of a payment: its credit first, then its allocations newest first
    /// (those invoices open again; one once written off has the reopened part written off
    /// again). Returns the entries added.
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
                if let Some(reopened) = self.invoice(invoice)
                    && reopened.uncollectible
                    && reopened.open().is_positive()
                {
                    entries.push(self.push(
                        on,
                        LedgerEntryKind::WrittenOff {
                            invoice,
                            amount: reopened.open(),
                        },
                    )?);
                }
            }
        }
        entries.push(self.push(on, LedgerEntryKind::Refunded { payment, amount })?);
        Ok(entries)
    }

    /// Enters a credit note of `amount` against `invoice`: it reduces what the invoice owes
    /// (its open part, then its written-off part); what the invoice was paid beyond its new
    /// total is released, newest payment first, to customer credit, or refunded with
    /// [`CreditSettlement::Refund`]. Returns the entries added.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::WrongCurrency`], [`CollectionsError::NonPositiveAmount`],
    /// [`CollectionsError::UnknownInvoice`], [`CollectionsError::InvoiceVoided`],
    /// [`CollectionsError::DuplicateCreditNote`], and
    /// [`CollectionsError::CreditExceedsInvoice`] when the invoice's credit notes would exceed
    /// its total. Nothing is recorded on error.
    pub fn credit_note(
        &mut self,
        credit_note: CreditNoteId,
        invoice: InvoiceId,
        amount: Money,
        on: NaiveDate,
        settlement: CreditSettlement,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        self.check("credit note", amount)?;
        let (_, balance) = self.balance_of(invoice)?;
        if balance.voided.is_some() {
            return Err(CollectionsError::InvoiceVoided(invoice));
        }
        if self.credit_notes.contains(&credit_note) {
            return Err(CollectionsError::DuplicateCreditNote(credit_note));
        }
        let creditable = balance.total.checked_sub(balance.credited)?;
        if amount.amount() > creditable.amount() {
            return Err(CollectionsError::CreditExceedsInvoice {
                invoice,
                credit_note,
                requested: amount.amount(),
                creditable: creditable.amount().max(Decimal::ZERO),
            });
        }
        self.transact(|ledger| {
            ledger.credit_note_inner(credit_note, balance, amount, on, settlement)
        })
    }

    fn credit_note_inner(
        &mut self,
        credit_note: CreditNoteId,
        balance: InvoiceBalance,
        amount: Money,
        on: NaiveDate,
        settlement: CreditSettlement,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        let invoice = balance.invoice;
        let mut entries = Vec::new();
        let mut rest = amount.checked_sub(balance.open().min(amount)?)?;
        if rest.is_positive() && balance.written_off.is_positive() {
            let reinstate = balance.written_off.min(rest)?;
            entries.push(self.push(
                on,
                LedgerEntryKind::WrittenOff {
                    invoice,
                    amount: reinstate.negate(),
                },
            )?);
            rest = rest.checked_sub(reinstate)?;
        }
        if rest.is_positive() {
            let refund = settlement == CreditSettlement::Refund;
            self.release(invoice, Some(rest), on, refund, &mut entries)?;
        }
        entries.push(self.push(
            on,
            LedgerEntryKind::CreditNoted {
                invoice,
                credit_note,
                amount,
                settlement,
            },
        )?);
        Ok(entries)
    }

    /// Voids `invoice`: what was written off is reinstated, every allocation on it is released
    /// to customer credit, and the rest (its total less its credit notes) is voided. Returns
    /// the entries added.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::UnknownInvoice`], [`CollectionsError::InvoiceVoided`] for an invoice
    /// already void, [`CollectionsError::InvoiceSettled`] for an invoice with a negative total
    /// (its credit is the customer's: refund it instead). Nothing is recorded on error.
    pub fn void(
        &mut self,
        invoice: InvoiceId,
        on: NaiveDate,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        let (_, balance) = self.balance_of(invoice)?;
        if balance.voided.is_some() {
            return Err(CollectionsError::InvoiceVoided(invoice));
        }
        if balance.total.is_negative() {
            return Err(CollectionsError::InvoiceSettled(invoice));
        }
        self.transact(|ledger| {
            let mut entries = Vec::new();
            if balance.written_off.is_positive() {
                entries.push(ledger.push(
                    on,
                    LedgerEntryKind::WrittenOff {
                        invoice,
                        amount: balance.written_off.negate(),
                    },
                )?);
            }
            ledger.release(invoice, None, on, false, &mut entries)?;
            let amount = balance.total.checked_sub(balance.credited)?;
            entries.push(ledger.push(on, LedgerEntryKind::Voided { invoice, amount })?);
            Ok(entries)
        })
    }

    /// Writes off what `invoice` still owes as uncollectible. The invoice stays payable by a
    /// payment named to it ([`CustomerLedger::record_payment`]). Returns the entries added.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::UnknownInvoice`], [`CollectionsError::InvoiceVoided`],
    /// [`CollectionsError::InvoiceSettled`] when nothing is open. Nothing is recorded on error.
    pub fn write_off(
        &mut self,
        invoice: InvoiceId,
        on: NaiveDate,
    ) -> Result<Vec<LedgerEntry>, CollectionsError> {
        let (_, balance) = self.balance_of(invoice)?;
        if balance.voided.is_some() {
            return Err(CollectionsError::InvoiceVoided(invoice));
        }
        let open = balance.open();
        if !open.is_positive() {
            return Err(CollectionsError::InvoiceSettled(invoice));
        }
        self.transact(|ledger| {
            Ok(vec![ledger.push(
                on,
                LedgerEntryKind::WrittenOff {
                    invoice,
                    amount: open,
                },
            )?])
        })
    }
}

/// The two sides of a ledger's equation, computed from its entries alone (without
/// [`CustomerLedger`]'s bookkeeping): `net`, the signed sum of the entries (invoice totals and
/// refunds add to what the customer owes; payments, credit notes, write-offs and voids take
/// from it), and per invoice `open = total − allocated − credited − written_off − voided`, and
/// the customer's `credit` = payments (and credit from negative invoices) − refunds −
/// allocations. A sound ledger has `net = Σ open − credit`, every open ≥ 0 and credit ≥ 0.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconciliation {
    /// The signed sum of the entries: what the customer owes net of their credit.
    pub net: Money,
    /// Each invoice's open balance, in the order the invoices were entered.
    pub open: Vec<(InvoiceId, Money)>,
    /// The customer's credit.
    pub credit: Money,
}

impl Reconciliation {
    /// Computes both sides from `entries`.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::WrongCurrency`] for an entry in another currency,
    /// [`CollectionsError::UnknownInvoice`] for an entry about an invoice not entered before
    /// it, and overflows.
    pub fn of(currency: Currency, entries: &[LedgerEntry]) -> Result<Self, CollectionsError> {
        let zero = Money::zero(currency);
        let mut net = zero;
        let mut credit = zero;
        let mut open: Vec<(InvoiceId, Money)> = Vec::new();
        let take = |open: &mut Vec<(InvoiceId, Money)>, invoice: InvoiceId, amount: Money| {
            let slot = open
                .iter_mut()
                .find(|(i, _)| *i == invoice)
                .ok_or(CollectionsError::UnknownInvoice(invoice))?;
            slot.1 = slot.1.checked_sub(amount)?;
            Ok::<(), CollectionsError>(())
        };
        for entry in entries {
            let currency_of = entry.kind.currency();
            if currency_of != currency {
                return Err(CollectionsError::WrongCurrency {
                    what: "ledger entry",
                    expected: currency.code(),
                    got: currency_of.code(),
                });
            }
            match &entry.kind {
                LedgerEntryKind::InvoiceIssued { invoice, total, .. } => {
                    net = net.checked_add(*total)?;
                    if total.is_negative() {
                        // Settled into credit at once.
                        open.push((*invoice, zero));
                        credit = credit.checked_sub(*total)?;
                    } else {
                        open.push((*invoice, *total));
                    }
                }
                LedgerEntryKind::PaymentReceived { amount, .. } => {
                    net = net.checked_sub(*amount)?;
                    credit = credit.checked_add(*amount)?;
                }
                LedgerEntryKind::Refunded { amount, .. } => {
                    net = net.checked_add(*amount)?;
                    credit = credit.checked_sub(*amount)?;
                }
                LedgerEntryKind::Allocated {
                    invoice, amount, ..
                } => {
                    take(&mut open, *invoice, *amount)?;
                    credit = credit.checked_sub(*amount)?;
                }
                LedgerEntryKind::CreditNoted {
                    invoice, amount, ..
                }
                | LedgerEntryKind::Voided { invoice, amount }
                | LedgerEntryKind::WrittenOff { invoice, amount } => {
                    take(&mut open, *invoice, *amount)?;
                    net = net.checked_sub(*amount)?;
                }
            }
        }
        Ok(Reconciliation { net, open, credit })
    }

    /// Σ open.
    ///
    /// # Errors
    ///
    /// An overflow.
    pub fn open_total(&self) -> Result<Money, CollectionsError> {
        Ok(Money::sum(
            self.credit.currency(),
            self.open.iter().map(|(_, m)| *m),
        )?)
    }

    /// Whether the ledger balances: `net = Σ open − credit`, no open balance below zero and no
    /// credit below zero.
    ///
    /// # Errors
    ///
    /// An overflow.
    pub fn balances(&self) -> Result<bool, CollectionsError> {
        let sides = self.open_total()?.checked_sub(self.credit)? == self.net;
        Ok(sides && !self.credit.is_negative() && self.open.iter().all(|(_, m)| !m.is_negative()))
    }
}

/// Refuses an entry after which `balance` would owe less than nothing.
fn not_below_zero(balance: &InvoiceBalance) -> Result<(), CollectionsError> {
    if balance.checked_open()?.is_negative() {
        return Err(below_zero());
    }
    Ok(())
}

fn below_zero() -> CollectionsError {
    CollectionsError::InvalidConfiguration {
        what: "ledger entry",
        reason: "it leaves an invoice owing less than nothing",
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

/// Where ledgers are kept. Every call is scoped to a tenant; entries are only ever appended,
/// each append with the outbox events of the change in the same atomic write.
pub trait PaymentStore: Send + Sync {
    /// Appends entries to a customer's ledger and writes `events` to the outbox, atomically:
    /// a refused append writes no event, and an event refused by the outbox appends nothing.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::AlreadyExists`] (`what` = `"ledger entry"`) when a position is
    /// taken (the caller's ledger is stale); the outbox's refusals (an event of another
    /// tenant, an event id naming another event) as [`CollectionsError::Storage`]; storage
    /// failures, as the implementation reports them.
    fn append_entries(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        events: &[OutboxEvent],
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

    /// Appends entries, writes `events` and records `record` under its key, atomically: if
    /// the key is already recorded (a concurrent retry), nothing is appended or written and
    /// the stored record is returned.
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
        events: &[OutboxEvent],
        record: &IdempotencyRecord,
    ) -> impl Future<Output = Result<KeyedWrite<()>, CollectionsError>> + Send {
        let _ = (tenant, customer, entries, events, record);
        async { Err(crate::idempotency::unsupported()) }
    }
}

/// A [`PaymentStore`] in memory, for tests and examples. Its outbox events go to a
/// [`MemoryOutbox`] (its own, or one shared with other in-memory stores:
/// [`InMemoryPaymentStore::with_outbox`]), written under the ledger lock with the entries; the
/// store is an [`OutboxStore`] over that outbox.
#[derive(Debug, Default)]
pub struct InMemoryPaymentStore {
    ledgers: Mutex<Ledgers>,
    outbox: Arc<MemoryOutbox>,
}

/// Everything an [`InMemoryPaymentStore`] holds, behind its one lock, so that a keyed append
/// and its key are one atomic step.
#[derive(Debug, Default)]
struct Ledgers {
    entries: HashMap<(TenantId, CustomerId), Vec<LedgerEntry>>,
    keys: HashMap<(TenantId, IdempotencyKey), IdempotencyRecord>,
}

impl InMemoryPaymentStore {
    /// An empty store with its own outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store writing its events to `outbox` instead (shared with the other in-memory
    /// stores of an application, and with its dispatcher), as `MemoryStore::with_outbox`.
    #[must_use]
    pub fn with_outbox(mut self, outbox: Arc<MemoryOutbox>) -> Self {
        self.outbox = outbox;
        self
    }

    /// The outbox its events go to.
    pub fn outbox(&self) -> &Arc<MemoryOutbox> {
        &self.outbox
    }

    /// Appends under the ledger lock: the positions and the events are checked before
    /// anything is written, and the entries are taken back if the outbox refuses the events.
    fn append_locked(
        &self,
        ledgers: &mut Ledgers,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        events: &[OutboxEvent],
    ) -> Result<(), CollectionsError> {
        let ledger = ledgers.entries.entry((tenant, customer)).or_default();
        check_positions(ledger, customer, entries)?;
        self.outbox.check(tenant, events)?;
        place(ledger, entries);
        if let Err(refused) = self.outbox.push(tenant, events) {
            let appended: std::collections::HashSet<u64> =
                entries.iter().map(|e| e.sequence).collect();
            ledger.retain(|e| !appended.contains(&e.sequence));
            return Err(refused.into());
        }
        Ok(())
    }
}

impl PaymentStore for InMemoryPaymentStore {
    #[tracing::instrument(name = "dotmac.store.append_ledger", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant, entries = entries.len()))]
    async fn append_entries(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
        events: &[OutboxEvent],
    ) -> Result<(), CollectionsError> {
        let mut ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        self.append_locked(&mut ledgers, tenant, customer, entries, events)
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
        events: &[OutboxEvent],
        record: &IdempotencyRecord,
    ) -> Result<KeyedWrite<()>, CollectionsError> {
        let mut ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(earlier) = ledgers.keys.get(&(tenant, record.key.clone())) {
            return Ok(KeyedWrite::Replayed(Box::new(earlier.clone())));
        }
        // Entries and events first: a refused append must not leave its key behind.
        self.append_locked(&mut ledgers, tenant, customer, entries, events)?;
        ledgers
            .keys
            .insert((tenant, record.key.clone()), record.clone());
        Ok(KeyedWrite::Written(()))
    }
}

/// The store's outbox, as [`MemoryOutbox`] keeps it.
impl OutboxStore for InMemoryPaymentStore {
    async fn append_outbox(
        &self,
        tenant: TenantId,
        events: &[OutboxEvent],
    ) -> Result<(), StorageError> {
        self.outbox.append_outbox(tenant, events).await
    }

    async fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StorageError> {
        self.outbox.claim(worker, now, lease, limit).await
    }

    async fn complete(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        self.outbox.complete(tenant, seq, worker, now).await
    }

    async fn release(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        not_before: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<bool, StorageError> {
        self.outbox
            .release(tenant, seq, worker, not_before, error)
            .await
    }

    async fn park(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        self.outbox.park(tenant, seq, worker, error, now).await
    }

    async fn requeue(&self, tenant: TenantId, seq: u64) -> Result<bool, StorageError> {
        self.outbox.requeue(tenant, seq).await
    }

    async fn outbox_messages(&self, tenant: TenantId) -> Result<Vec<OutboxMessage>, StorageError> {
        self.outbox.outbox_messages(tenant).await
    }

    async fn outbox_counts(&self, tenant: TenantId) -> Result<OutboxCounts, StorageError> {
        self.outbox.outbox_counts(tenant).await
    }
}

/// Refuses `entries` when one's position is taken, by the ledger or by an earlier entry of the
/// call: the caller's ledger is stale (another writer appended first). The same refusal as the
/// SQL stores' unique position.
fn check_positions(
    ledger: &[LedgerEntry],
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
    Ok(())
}

/// Appends `entries` (checked by [`check_positions`]) to `ledger`, kept in sequence order, as
/// a SQL store reads it.
fn place(ledger: &mut Vec<LedgerEntry>, entries: &[LedgerEntry]) {
    ledger.extend_from_slice(entries);
    // Stable and linear on the usual already-sorted ledger (appends at the end).
    ledger.sort_by_key(|e| e.sequence);
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

/// The entry kinds that keep dunning and ageing on real debt: credit notes, voids, write-offs
/// and negative invoices.
#[cfg(test)]
mod loop_tests {
    use super::*;

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::USD)
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    const CUSTOMER: CustomerId = CustomerId::from_u128(1);
    const INV: InvoiceId = InvoiceId::from_u128(1);
    const NOTE: CreditNoteId = CreditNoteId::from_u128(1);

    fn pay(n: u128) -> PaymentId {
        PaymentId::from_u128(n)
    }

    /// An invoice of 30.00, paid 20.00 then 10.00 (two payments).
    fn paid_invoice() -> CustomerLedger {
        let mut ledger = CustomerLedger::new(CUSTOMER, Currency::USD);
        ledger
            .record_invoice(INV, usd(3000), day(1), day(15))
            .unwrap();
        for (n, minor) in [(1, 2000), (2, 1000)] {
            ledger
                .record_payment(pay(n), usd(minor), day(2), AllocationTarget::OldestFirst)
                .unwrap();
        }
        ledger
    }

    fn kinds(entries: &[LedgerEntry]) -> Vec<LedgerEntryKind> {
        entries.iter().map(|e| e.kind.clone()).collect()
    }

    /// The ledger rebuilds from its entries and its two sides balance.
    fn sound(ledger: &CustomerLedger) {
        let rebuilt =
            CustomerLedger::from_entries(CUSTOMER, Currency::USD, ledger.entries().to_vec())
                .unwrap();
        assert_eq!(&rebuilt, ledger);
        let sides = ledger.reconcile().unwrap();
        assert!(sides.balances().unwrap(), "{sides:?}");
        assert_eq!(sides.credit, ledger.credit());
        for balance in ledger.invoices() {
            assert!(!balance.open().is_negative(), "{balance:?}");
            let open = sides
                .open
                .iter()
                .find(|(i, _)| *i == balance.invoice)
                .unwrap()
                .1;
            assert_eq!(open, balance.open(), "{balance:?}");
        }
    }

    #[test]
    fn a_credit_note_within_what_is_open_only_reduces_it() {
        let mut ledger = CustomerLedger::new(CUSTOMER, Currency::USD);
        ledger
            .record_invoice(INV, usd(3000), day(1), day(15))
            .unwrap();
        ledger
            .record_payment(pay(1), usd(1000), day(2), AllocationTarget::OldestFirst)
            .unwrap();
        let entries = ledger
            .credit_note(NOTE, INV, usd(500), day(3), CreditSettlement::Credit)
            .unwrap();
        assert_eq!(
            kinds(&entries),
            [LedgerEntryKind::CreditNoted {
                invoice: INV,
                credit_note: NOTE,
                amount: usd(500),
                settlement: CreditSettlement::Credit
            }]
        );
        let balance = ledger.invoice(INV).unwrap();
        assert_eq!((balance.open(), balance.credited), (usd(1500), usd(500)));
        assert_eq!(balance.state(), BalanceState::PartiallyPaid);
        assert!(ledger.has_credit_note(NOTE));
        sound(&ledger);
    }

    #[test]
    fn a_credit_note_beyond_what_is_open_releases_the_newest_payments_to_credit() {
        let mut ledger = paid_invoice();
        let entries = ledger
            .credit_note(NOTE, INV, usd(1500), day(3), CreditSettlement::Credit)
            .unwrap();
        assert_eq!(
            kinds(&entries),
            [
                LedgerEntryKind::Allocated {
                    payment: pay(2),
                    invoice: INV,
                    amount: usd(-1000)
                },
                LedgerEntryKind::Allocated {
                    payment: pay(1),
                    invoice: INV,
                    amount: usd(-500)
                },
                LedgerEntryKind::CreditNoted {
                    invoice: INV,
                    credit_note: NOTE,
                    amount: usd(1500),
                    settlement: CreditSettlement::Credit
                },
            ]
        );
        assert_eq!(ledger.credit(), usd(1500));
        let balance = ledger.invoice(INV).unwrap();
        assert_eq!((balance.paid, balance.open()), (usd(1500), usd(0)));
        assert_eq!(balance.state(), BalanceState::Paid);
        // The credit pays the next invoice.
        let next = ledger
            .record_invoice(InvoiceId::from_u128(2), usd(1200), day(4), day(18))
            .unwrap();
        assert_eq!(next.len(), 3);
        assert_eq!(ledger.credit(), usd(300));
        sound(&ledger);
    }

    #[test]
    fn a_credit_note_settled_by_refund_pays_the_released_part_back() {
        let mut ledger = paid_invoice();
        let entries = ledger
            .credit_note(NOTE, INV, usd(1500), day(3), CreditSettlement::Refund)
            .unwrap();
        assert_eq!(
            kinds(&entries)[..4],
            [
                LedgerEntryKind::Allocated {
                    payment: pay(2),
                    invoice: INV,
                    amount: usd(-1000)
                },
                LedgerEntryKind::Refunded {
                    payment: pay(2),
                    amount: usd(1000)
                },
                LedgerEntryKind::Allocated {
                    payment: pay(1),
                    invoice: INV,
                    amount: usd(-500)
                },
                LedgerEntryKind::Refunded {
                    payment: pay(1),
                    amount: usd(500)
                },
            ]
        );
        assert_eq!(ledger.credit(), usd(0));
        assert_eq!(ledger.invoice(INV).unwrap().state(), BalanceState::Paid);
        sound(&ledger);
    }

    #[test]
    fn a_credit_note_on_a_written_off_invoice_reinstates_first_then_releases() {
        let mut ledger = CustomerLedger::new(CUSTOMER, Currency::USD);
        ledger
            .record_invoice(INV, usd(1000), day(1), day(15))
            .unwrap();
        ledger
            .record_payment(pay(1), usd(200), day(2), AllocationTarget::OldestFirst)
            .unwrap();
        ledger.write_off(INV, day(20)).unwrap();
        let entries = ledger
            .credit_note(NOTE, INV, usd(900), day(21), CreditSettlement::Credit)
            .unwrap();
        assert_eq!(
            kinds(&entries),
            [
                LedgerEntryKind::WrittenOff {
                    invoice: INV,
                    amount: usd(-800)
                },
                LedgerEntryKind::Allocated {
                    payment: pay(1),
                    invoice: INV,
                    amount: usd(-100)
                },
                LedgerEntryKind::CreditNoted {
                    invoice: INV,
                    credit_note: NOTE,
                    amount: usd(900),
                    settlement: CreditSettlement::Credit
                },
            ]
        );
        let balance = ledger.invoice(INV).unwrap();
        assert_eq!(
            (balance.paid, balance.credited, balance.written_off),
            (usd(100), usd(900), usd(0))
        );
        assert_eq!(balance.state(), BalanceState::Paid);
        assert_eq!(ledger.credit(), usd(100));
        sound(&ledger);
    }

    #[test]
    fn bad_credit_notes_are_refused_and_change_nothing() {
        let mut ledger = paid_invoice();
        ledger
            .credit_note(NOTE, INV, usd(1000), day(3), CreditSettlement::Credit)
            .unwrap();
        let before = ledger.clone();
        let other = CreditNoteId::from_u128(2);
        let note = |ledger: &mut CustomerLedger, id, invoice, amount| {
            ledger.credit_note(id, invoice, amount, day(4), CreditSettlement::Credit)
        };
        assert_eq!(
            note(
                &mut ledger,
                other,
                INV,
                Money::from_minor(100, Currency::EUR)
            ),
            Err(CollectionsError::WrongCurrency {
                what: "credit note",
                expected: "USD",
                got: "EUR"
            })
        );
        assert_eq!(
            note(&mut ledger, other, INV, usd(0)),
            Err(CollectionsError::NonPositiveAmount {
                what: "credit note",
                amount: usd(0).amount()
            })
        );
        assert_eq!(
            note(&mut ledger, other, InvoiceId::from_u128(9), usd(100)),
            Err(CollectionsError::UnknownInvoice(InvoiceId::from_u128(9)))
        );
        assert_eq!(
            note(&mut ledger, NOTE, INV, usd(100)),
            Err(CollectionsError::DuplicateCreditNote(NOTE))
        );
        assert_eq!(
            note(&mut ledger, other, INV, usd(2001)),
            Err(CollectionsError::CreditExceedsInvoice {
                invoice: INV,
                credit_note: other,
                requested: usd(2001).amount(),
                creditable: usd(2000).amount()
            })
        );
        assert_eq!(ledger, before);
        // The whole rest is creditable.
        note(&mut ledger, other, INV, usd(2000)).unwrap();
        assert_eq!(ledger.credit(), usd(3000));
        sound(&ledger);
    }

    #[test]
    fn a_void_releases_every_allocation_and_takes_the_invoice_out_of_what_is_owed() {
        let mut ledger = CustomerLedger::new(CUSTOMER, Currency::USD);
        ledger
            .record_invoice(INV, usd(3000), day(1), day(15))
            .unwrap();
        ledger
            .record_payment(pay(1), usd(1000), day(2), AllocationTarget::OldestFirst)
            .unwrap();
        ledger
            .credit_note(NOTE, INV, usd(500), day(3), CreditSettlement::Credit)
            .unwrap();
        ledger.write_off(INV, day(20)).unwrap();
        let entries = ledger.void(INV, day(21)).unwrap();
        assert_eq!(
            kinds(&entries),
            [
                LedgerEntryKind::WrittenOff {
                    invoice: INV,
                    amount: usd(-1500)
                },
                LedgerEntryKind::Allocated {
                    payment: pay(1),
                    invoice: INV,
                    amount: usd(-1000)
                },
                LedgerEntryKind::Voided {
                    invoice: INV,
                    amount: usd(2500)
                },
            ]
        );
        let balance = ledger.invoice(INV).unwrap();
        assert_eq!(balance.state(), BalanceState::Void);
        assert_eq!(balance.open(), usd(0));
        assert_eq!(ledger.credit(), usd(1000));
        assert!(!balance.is_collectible());
        sound(&ledger);
        // Nothing more can happen to it.
        let before = ledger.clone();
        assert_eq!(
            ledger.void(INV, day(22)),
            Err(CollectionsError::InvoiceVoided(INV))
        );
        assert_eq!(
            ledger.record_payment(pay(2), usd(10), day(22), AllocationTarget::Invoice(INV)),
            Err(CollectionsError::InvoiceVoided(INV))
        );
        assert_eq!(
            ledger.credit_note(
                CreditNoteId::from_u128(2),
                INV,
                usd(10),
                day(22),
                CreditSettlement::Credit
            ),
            Err(CollectionsError::InvoiceVoided(INV))
        );
        assert_eq!(
            ledger.write_off(INV, day(22)),
            Err(CollectionsError::InvoiceVoided(INV))
        );
        assert_eq!(
            ledger.void(InvoiceId::from_u128(9), day(22)),
            Err(CollectionsError::UnknownInvoice(InvoiceId::from_u128(9)))
        );
        assert_eq!(ledger, before);
        // An oldest-first payment passes it by.
        let out = ledger
            .record_payment(pay(2), usd(10), day(22), AllocationTarget::OldestFirst)
            .unwrap();
        assert!(out.allocations.is_empty());
        assert_eq!(ledger.credit(), usd(1010));
    }

    #[test]
    fn a_written_off_invoice_is_owed_by_no_one_yet_stays_payable_by_name() {
        let mut ledger = CustomerLedger::new(CUSTOMER, Currency::USD);
        ledger
            .record_invoice(INV, usd(3000), day(1), day(15))
            .unwrap();
        ledger
            .record_payment(pay(1), usd(1000), day(2), AllocationTarget::OldestFirst)
            .unwrap();
        let entries = ledger.write_off(INV, day(20)).unwrap();
        assert_eq!(
            kinds(&entries),
            [LedgerEntryKind::WrittenOff {
                invoice: INV,
                amount: usd(2000)
            }]
        );
        let balance = ledger.invoice(INV).unwrap();
        assert_eq!(
            (balance.open(), balance.state()),
            (usd(0), BalanceState::Uncollectible)
        );
        let before = ledger.clone();
        assert_eq!(
            ledger.write_off(INV, day(21)),
            Err(CollectionsError::InvoiceSettled(INV))
        );
        assert_eq!(
            ledger.write_off(InvoiceId::from_u128(9), day(21)),
            Err(CollectionsError::UnknownInvoice(InvoiceId::from_u128(9)))
        );
        assert_eq!(ledger, before);
        // Oldest first: not owed, so the payment stays credit.
        let out = ledger
            .record_payment(pay(2), usd(500), day(22), AllocationTarget::OldestFirst)
            .unwrap();
        assert_eq!(out.credit, usd(500));
        // Named: it reinstates what it pays of the written-off part.
        let out = ledger
            .record_payment(pay(3), usd(1500), day(23), AllocationTarget::Invoice(INV))
            .unwrap();
        assert_eq!(
            kinds(&out.entries),
            [
                LedgerEntryKind::PaymentReceived {
                    payment: pay(3),
                    amount: usd(1500)
                },
                LedgerEntryKind::WrittenOff {
                    invoice: INV,
                    amount: usd(-1500)
                },
                LedgerEntryKind::Allocated {
                    payment: pay(3),
                    invoice: INV,
                    amount: usd(1500)
                },
            ]
        );
        assert_eq!(ledger.payment_outcome(pay(3)), Some(out));
        let balance = ledger.invoice(INV).unwrap();
        assert_eq!(
            (balance.paid, balance.written_off, balance.state()),
            (usd(2500), usd(500), BalanceState::Uncollectible)
        );
        sound(&ledger);
        // Refunded: the reopened part is written off again.
        let entries = ledger.refund(pay(3), usd(1500), day(24)).unwrap();
        assert_eq!(
            kinds(&entries),
            [
                LedgerEntryKind::Allocated {
                    payment: pay(3),
                    invoice: INV,
                    amount: usd(-1500)
                },
                LedgerEntryKind::WrittenOff {
                    invoice: INV,
                    amount: usd(1500)
                },
                LedgerEntryKind::Refunded {
                    payment: pay(3),
                    amount: usd(1500)
                },
            ]
        );
        let balance = ledger.invoice(INV).unwrap();
        assert_eq!((balance.open(), balance.written_off), (usd(0), usd(2000)));
        sound(&ledger);
        // Paid in full by name: paid.
        ledger
            .record_payment(pay(4), usd(2000), day(25), AllocationTarget::Invoice(INV))
            .unwrap();
        assert_eq!(ledger.invoice(INV).unwrap().state(), BalanceState::Paid);
        assert_eq!(
            ledger.record_payment(pay(5), usd(1), day(26), AllocationTarget::Invoice(INV)),
            Err(CollectionsError::InvoiceSettled(INV))
        );
        sound(&ledger);
    }

    #[test]
    fn a_negative_invoice_is_customer_credit_and_a_zero_one_is_paid() {
        let mut ledger = CustomerLedger::new(CUSTOMER, Currency::USD);
        ledger
            .record_invoice(INV, usd(-700), day(1), day(15))
            .unwrap();
        let zero = InvoiceId::from_u128(2);
        ledger
            .record_invoice(zero, usd(0), day(1), day(15))
            .unwrap();
        assert_eq!(ledger.credit(), usd(700));
        let credit = ledger.invoice(INV).unwrap();
        assert_eq!(
            (credit.paid, credit.open(), credit.state()),
            (usd(-700), usd(0), BalanceState::Paid)
        );
        assert!(!credit.is_collectible());
        assert_eq!(ledger.invoice(zero).unwrap().state(), BalanceState::Paid);
        let next = InvoiceId::from_u128(3);
        let entries = ledger
            .record_invoice(next, usd(1000), day(2), day(16))
            .unwrap();
        assert_eq!(
            kinds(&entries)[1],
            LedgerEntryKind::Allocated {
                payment: CustomerLedger::credit_source(INV),
                invoice: next,
                amount: usd(700)
            }
        );
        assert_eq!(ledger.invoice(next).unwrap().open(), usd(300));
        sound(&ledger);
        // Its credit cannot be voided away or credited again.
        let before = ledger.clone();
        assert_eq!(
            ledger.void(INV, day(3)),
            Err(CollectionsError::InvoiceSettled(INV))
        );
        assert_eq!(
            ledger.credit_note(NOTE, INV, usd(1), day(3), CreditSettlement::Credit),
            Err(CollectionsError::CreditExceedsInvoice {
                invoice: INV,
                credit_note: NOTE,
                requested: usd(1).amount(),
                creditable: Decimal::ZERO
            })
        );
        assert_eq!(ledger, before);
    }

    #[test]
    fn stored_entries_that_would_owe_less_than_nothing_are_refused() {
        let entry = |sequence, kind| LedgerEntry {
            sequence,
            customer: CUSTOMER,
            on: day(1),
            kind,
        };
        let issued = entry(
            0,
            LedgerEntryKind::InvoiceIssued {
                invoice: INV,
                total: usd(100),
                issued: day(1),
                due: day(15),
            },
        );
        for kind in [
            LedgerEntryKind::CreditNoted {
                invoice: INV,
                credit_note: NOTE,
                amount: usd(101),
                settlement: CreditSettlement::Credit,
            },
            LedgerEntryKind::WrittenOff {
                invoice: INV,
                amount: usd(101),
            },
            LedgerEntryKind::WrittenOff {
                invoice: INV,
                amount: usd(-1),
            },
            LedgerEntryKind::Voided {
                invoice: INV,
                amount: usd(101),
            },
        ] {
            assert_eq!(
                CustomerLedger::from_entries(
                    CUSTOMER,
                    Currency::USD,
                    [issued.clone(), entry(1, kind.clone())]
                ),
                Err(below_zero()),
                "{kind:?}"
            );
        }
        assert_eq!(
            CustomerLedger::from_entries(
                CUSTOMER,
                Currency::USD,
                [entry(
                    0,
                    LedgerEntryKind::Voided {
                        invoice: INV,
                        amount: usd(1)
                    }
                )]
            ),
            Err(CollectionsError::UnknownInvoice(INV))
        );
    }

    #[test]
    fn an_invoice_balance_serialises_its_state_in_snake_case() {
        let json = serde_json::to_value(BalanceState::PartiallyPaid).unwrap();
        assert_eq!(json, serde_json::json!("partially_paid"));
        let json = serde_json::to_value(CreditSettlement::Refund).unwrap();
        assert_eq!(json, serde_json::json!("refund"));
    }
}
