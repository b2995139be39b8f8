//! The crate's one error type.

use dotmac_billing::BillingError;
use dotmac_core::{CoreError, CreditNoteId, CustomerId, InvoiceId, PaymentId, StorageError};
use rust_decimal::Decimal;

/// Everything that can go wrong in `dotmac-collections`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CollectionsError {
    /// An error from the core vocabulary (money, periods, ids, idempotency keys).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A billing error met while adding a fee to the customer's next invoice.
    #[error(transparent)]
    Billing(#[from] BillingError),
    /// A dunning policy or ledger definition that cannot work.
    #[error("invalid {what}: {reason}")]
    InvalidConfiguration {
        /// What was being configured.
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A payment, refund or credit in a currency other than the customer's.
    #[error("{what} in {got} refused: the customer's account is in {expected}")]
    WrongCurrency {
        /// What was refused ("payment", "refund", ...).
        what: &'static str,
        /// The account's currency.
        expected: &'static str,
        /// The currency given.
        got: &'static str,
    },
    /// An amount that must be above zero was zero or negative.
    #[error("{what} must be greater than zero, got {amount}")]
    NonPositiveAmount {
        /// What the amount was for.
        what: &'static str,
        /// The amount given.
        amount: Decimal,
    },
    /// An invoice whose due date is before its issue date.
    #[error("invoice {invoice} is due on {due}, before its issue date {issued}")]
    DueBeforeIssue {
        /// The invoice.
        invoice: InvoiceId,
        /// Its issue date.
        issued: chrono::NaiveDate,
        /// Its due date.
        due: chrono::NaiveDate,
    },
    /// An invoice the payments ledger does not know.
    #[error("invoice {0} is not known to the payments ledger; record it before allocating to it")]
    UnknownInvoice(InvoiceId),
    /// An invoice recorded twice in the payments ledger.
    #[error("invoice {0} is already in the payments ledger")]
    DuplicateInvoice(InvoiceId),
    /// A payment id used twice.
    #[error("payment {0} is already recorded")]
    DuplicatePayment(PaymentId),
    /// A payment the ledger does not know (for a refund).
    #[error("payment {0} is not recorded")]
    UnknownPayment(PaymentId),
    /// A refund larger than what is left of its payment.
    #[error("refund of {requested} exceeds the {refundable} still refundable on payment {payment}")]
    RefundExceedsPayment {
        /// The payment refunded.
        payment: PaymentId,
        /// The refund asked for.
        requested: Decimal,
        /// What is left to refund.
        refundable: Decimal,
    },
    /// A payment aimed at a named invoice that has nothing open, a write-off of an invoice
    /// with nothing open, or a void of an invoice entered as customer credit.
    #[error("invoice {0} has no open balance to pay")]
    InvoiceSettled(InvoiceId),
    /// A payment, credit note or write-off aimed at a void invoice, or a second void.
    #[error("invoice {0} is void")]
    InvoiceVoided(InvoiceId),
    /// A credit note id entered twice with different figures.
    #[error("credit note {0} is already in the payments ledger")]
    DuplicateCreditNote(CreditNoteId),
    /// A credit note larger than what its invoice's earlier credit notes left of its total.
    #[error(
        "credit note {credit_note} of {requested} exceeds the {creditable} still creditable on invoice {invoice}"
    )]
    CreditExceedsInvoice {
        /// The invoice credited.
        invoice: InvoiceId,
        /// The credit note.
        credit_note: CreditNoteId,
        /// Its amount.
        requested: Decimal,
        /// The invoice's total less its earlier credit notes.
        creditable: Decimal,
    },
    /// A record already stored: a ledger position another writer appended first (re-read the
    /// ledger and retry), or an id used twice.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// What kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A customer without a ledger.
    #[error("customer {0} has no payments ledger")]
    UnknownAccount(CustomerId),
    /// A store failed and the call changed nothing: its [kind](dotmac_core::StorageErrorKind)
    /// says what to do, and the backend's error is kept as the source.
    #[error("{0}")]
    Storage(#[from] StorageError),
}

impl CollectionsError {
    /// A stable, machine-readable name of the error's kind (`wrong_currency`,
    /// `core.overflow`, …), for failure events and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CollectionsError::Core(core) => core.kind(),
            CollectionsError::Billing(billing) => billing.kind(),
            CollectionsError::InvalidConfiguration { .. } => "invalid_configuration",
            CollectionsError::WrongCurrency { .. } => "wrong_currency",
            CollectionsError::NonPositiveAmount { .. } => "non_positive_amount",
            CollectionsError::DueBeforeIssue { .. } => "due_before_issue",
            CollectionsError::UnknownInvoice(_) => "unknown_invoice",
            CollectionsError::DuplicateInvoice(_) => "duplicate_invoice",
            CollectionsError::DuplicatePayment(_) => "duplicate_payment",
            CollectionsError::UnknownPayment(_) => "unknown_payment",
            CollectionsError::RefundExceedsPayment { .. } => "refund_exceeds_payment",
            CollectionsError::InvoiceSettled(_) => "invoice_settled",
            CollectionsError::InvoiceVoided(_) => "invoice_voided",
            CollectionsError::DuplicateCreditNote(_) => "duplicate_credit_note",
            CollectionsError::CreditExceedsInvoice { .. } => "credit_exceeds_invoice",
            CollectionsError::AlreadyExists { .. } => "already_exists",
            CollectionsError::UnknownAccount(_) => "unknown_account",
            CollectionsError::Storage(_) => "storage",
        }
    }
}

/// A customer a collections run skipped: nothing of theirs was saved; the others were
/// evaluated.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CollectionsFailure {
    /// The customer skipped.
    pub customer: CustomerId,
    /// Why.
    pub error: CollectionsError,
}
