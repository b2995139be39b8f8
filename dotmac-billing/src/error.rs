//! The crate's one error type.

use dotmac_core::CoreError;

/// Everything that can go wrong in `dotmac-billing`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// An error from the core vocabulary (money, periods, ids).
    #[error(transparent)]
    Core(#[from] CoreError),
    // --- catalogue, pricing, subscriptions, invoicing ---
    /// A price model that cannot work.
    #[error("invalid price: {reason}")]
    InvalidPrice {
        /// Why it was refused.
        reason: &'static str,
    },
    /// A quantity that cannot be priced or subscribed.
    #[error("invalid quantity {quantity}: {reason}")]
    InvalidQuantity {
        /// The quantity given (0 when it was not a finite number).
        quantity: rust_decimal::Decimal,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A plan definition that cannot work.
    #[error("invalid plan {plan}: {reason}")]
    InvalidPlan {
        /// The plan.
        plan: dotmac_core::PlanId,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A plan id the catalogue does not know.
    #[error("unknown plan {0}; add it to the catalogue first")]
    UnknownPlan(dotmac_core::PlanId),
    /// A product id the catalogue does not know.
    #[error("unknown product {0}; add it to the catalogue first")]
    UnknownProduct(dotmac_core::ProductId),
    /// A plan version that does not exist.
    #[error("plan {plan} has no price version {version}")]
    UnknownPlanVersion {
        /// The plan.
        plan: dotmac_core::PlanId,
        /// The version asked for.
        version: u32,
    },
    /// A plan was given that is not the one the request names.
    #[error("the request names plan {expected} but plan {got} was given")]
    PlanMismatch {
        /// The plan named.
        expected: dotmac_core::PlanId,
        /// The plan given.
        got: dotmac_core::PlanId,
    },
    /// A plan has no price in the currency asked for.
    #[error(
        "plan {plan} has no price in {currency}; add a price in that currency or use another plan"
    )]
    CurrencyNotOffered {
        /// The plan.
        plan: dotmac_core::PlanId,
        /// The currency asked for.
        currency: &'static str,
    },
    /// A subscription in a currency the customer does not use.
    #[error("customer {customer} is billed in {customer_currency}, not {currency}")]
    CurrencyNotUsed {
        /// The customer.
        customer: dotmac_core::CustomerId,
        /// The currency asked for.
        currency: &'static str,
        /// The customer's currency.
        customer_currency: &'static str,
    },
    /// A plan change between plans with different intervals or billing timing.
    #[error(
        "cannot change from plan {from} to plan {to}: their billing intervals or timing differ; cancel and subscribe instead"
    )]
    IntervalMismatch {
        /// The current plan.
        from: dotmac_core::PlanId,
        /// The plan asked for.
        to: dotmac_core::PlanId,
    },
    /// A change dated before the subscription started.
    #[error("subscription {subscription} starts on {start}; a change on {on} is before that")]
    ChangeBeforeStart {
        /// The subscription.
        subscription: dotmac_core::SubscriptionId,
        /// The change date.
        on: chrono::NaiveDate,
        /// The start date.
        start: chrono::NaiveDate,
    },
    /// A change to a subscription that is cancelled, ended, or past its end date.
    #[error("subscription {subscription} is {status:?} and cannot be changed")]
    SubscriptionNotActive {
        /// The subscription.
        subscription: dotmac_core::SubscriptionId,
        /// Its status.
        status: crate::subscription::SubscriptionStatus,
    },
    /// An illegal subscription state transition.
    #[error("a subscription cannot go from {from:?} to {to:?}")]
    IllegalTransition {
        /// The current state.
        from: crate::subscription::SubscriptionStatus,
        /// The state asked for.
        to: crate::subscription::SubscriptionStatus,
    },
    /// An illegal invoice state transition.
    #[error("an invoice cannot go from {from:?} to {to:?}")]
    IllegalInvoiceTransition {
        /// The current state.
        from: crate::invoice::InvoiceStatus,
        /// The state asked for.
        to: crate::invoice::InvoiceStatus,
    },
    /// A void of an invoice that has something settled on it: refund it first.
    #[error(
        "invoice {invoice} has {settled} settled on it; refund it before voiding (only an invoice with nothing settled is voided)"
    )]
    VoidOfSettledInvoice {
        /// The invoice.
        invoice: dotmac_core::InvoiceId,
        /// What is settled on it.
        settled: rust_decimal::Decimal,
    },
    /// A balance the payments ledger reported that the invoice cannot take.
    #[error("invoice {invoice}: invalid balance: {reason}")]
    InvalidBalance {
        /// The invoice.
        invoice: dotmac_core::InvoiceId,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Customer credit applied to an invoice that is a draft or void.
    #[error("invoice {invoice} is {status:?}: nothing can be settled on it")]
    InvoiceNotPayable {
        /// The invoice.
        invoice: dotmac_core::InvoiceId,
        /// Its status.
        status: crate::invoice::InvoiceStatus,
    },
    /// Someone else updated the invoice since it was read (the service retries this itself a
    /// few times before giving up); re-read and retry.
    #[error("invoice {0} was updated concurrently; re-read and retry")]
    InvoiceChanged(dotmac_core::InvoiceId),
    /// A restore dated before the suspension it ends.
    #[error(
        "subscription {subscription} is suspended since {since}; a restore on {on} is before that"
    )]
    RestoreBeforeSuspension {
        /// The subscription.
        subscription: dotmac_core::SubscriptionId,
        /// The first day of its suspension.
        since: chrono::NaiveDate,
        /// The restore date given.
        on: chrono::NaiveDate,
    },
    /// A tax rate that cannot work.
    #[error("invalid tax rate {rate}: {reason}")]
    InvalidTaxRate {
        /// The rate.
        rate: crate::tax::TaxRateId,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A discount that cannot work.
    #[error("invalid discount {discount}: {reason}")]
    InvalidDiscount {
        /// The discount.
        discount: crate::discount::DiscountId,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A credit note against an invoice in a state that cannot be credited.
    #[error(
        "invoice {invoice} is {status:?}; only open, paid or uncollectible invoices can be credited"
    )]
    NotCreditable {
        /// The invoice.
        invoice: dotmac_core::InvoiceId,
        /// Its status.
        status: crate::invoice::InvoiceStatus,
    },
    /// A credit note line beyond what the invoice line has left to credit.
    #[error("cannot credit {requested} on line {line}: only {creditable} is left to credit")]
    CreditExceedsLine {
        /// The line index.
        line: usize,
        /// The amount asked for.
        requested: rust_decimal::Decimal,
        /// What is left.
        creditable: rust_decimal::Decimal,
    },
    /// A credit note whose lines together exceed what the invoice's total has left to credit
    /// (its total less its earlier credit notes): an invoice whose credit lines (prorations,
    /// suspended days) offset its charges cannot be credited beyond what it billed.
    #[error(
        "cannot credit {requested} on invoice {invoice}: only {creditable} of its total is left to credit"
    )]
    CreditExceedsInvoice {
        /// The invoice.
        invoice: dotmac_core::InvoiceId,
        /// The credit note's total.
        requested: rust_decimal::Decimal,
        /// The invoice's total less its earlier credit notes.
        creditable: rust_decimal::Decimal,
    },
    /// A line index that the invoice does not have.
    #[error("invoice {invoice} has no line {line}")]
    UnknownInvoiceLine {
        /// The invoice.
        invoice: dotmac_core::InvoiceId,
        /// The line index.
        line: usize,
    },
    /// A credit note with nothing left to credit.
    #[error("invoice {0} has nothing left to credit")]
    NothingToCredit(dotmac_core::InvoiceId),
    /// A subscription id the store does not know.
    #[error("unknown subscription {0}")]
    UnknownSubscription(dotmac_core::SubscriptionId),
    /// An invoice id the invoice store does not know.
    #[error("unknown invoice {0}")]
    InvoiceNotFound(dotmac_core::InvoiceId),
    /// A customer without a billing account.
    #[error("customer {0} has no billing account; create one with its currency first")]
    UnknownAccount(dotmac_core::CustomerId),
    /// An id used twice where ids must be unique.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// What kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// Someone else updated the record since it was read; re-read and retry.
    #[error(
        "subscription {subscription} was updated concurrently (expected revision {expected}, found {found}); re-read and retry"
    )]
    ConcurrentUpdate {
        /// The subscription.
        subscription: dotmac_core::SubscriptionId,
        /// The revision the writer read.
        expected: u64,
        /// The revision in the store.
        found: u64,
    },
    /// A commit puts a pending charge on a document that another commit already invoiced
    /// (or one that was never added): invoicing it again would bill it twice. Re-read the
    /// pending charges and retry.
    #[error(
        "pending charge {charge} is no longer pending (another document took it); re-read the pending charges and retry"
    )]
    PendingChargeTaken {
        /// The charge.
        charge: crate::PendingChargeId,
    },
    // --- validation at the edge: refused before anything is stored ---
    /// A plan charge priced below zero in some currency (a recurring charge would bill a
    /// negative invoice every period). Credits are pending charges, not plan prices.
    #[error(
        "plan {plan}: charge {charge} has a negative price in {currency}; plan prices must not be negative"
    )]
    NegativePrice {
        /// The plan.
        plan: dotmac_core::PlanId,
        /// The charge's position in its version.
        charge: usize,
        /// The currency of the negative price.
        currency: &'static str,
    },
    /// A plan charge with two prices in one currency (which one applies would be a guess).
    #[error("plan {plan}: charge {charge} has more than one price in {currency}; keep one")]
    DuplicateCurrencyPrice {
        /// The plan.
        plan: dotmac_core::PlanId,
        /// The charge's position in its version.
        charge: usize,
        /// The currency priced twice.
        currency: &'static str,
    },
    /// A plan price version without any charge: it would bill nothing, for ever.
    #[error("plan {plan}: price version {version} has no charges; add at least one charge")]
    PlanWithoutCharges {
        /// The plan.
        plan: dotmac_core::PlanId,
        /// The version without charges.
        version: u32,
    },
    /// A setup fee in a currency that not every charge of the plan is priced in: no
    /// subscription could ever be sold in it.
    #[error(
        "plan {plan} has a setup fee in {currency} but its charges are not all priced in {currency}"
    )]
    SetupFeeCurrencyWithoutPrice {
        /// The plan.
        plan: dotmac_core::PlanId,
        /// The setup fee's currency.
        currency: &'static str,
    },
    /// A pending charge with a negative quantity (a credit is a negative unit price).
    #[error(
        "pending charge {charge}: quantity {quantity} is negative; give a credit as a negative unit price with a reason"
    )]
    NegativeChargeQuantity {
        /// The charge refused.
        charge: crate::PendingChargeId,
        /// The quantity given.
        quantity: rust_decimal::Decimal,
    },
    /// A credit (a pending charge with a negative unit price) without a reason for its line.
    #[error(
        "pending charge {charge} is a credit (negative unit price) and needs a reason: set its text"
    )]
    CreditWithoutReason {
        /// The charge refused.
        charge: crate::PendingChargeId,
    },
    /// A pending charge naming a subscription of another customer (it would never be billed).
    #[error("subscription {subscription} belongs to customer {owner}, not to customer {customer}")]
    SubscriptionOfAnotherCustomer {
        /// The subscription named.
        subscription: dotmac_core::SubscriptionId,
        /// The customer the request names.
        customer: dotmac_core::CustomerId,
        /// The subscription's customer.
        owner: dotmac_core::CustomerId,
    },
    /// An invoice whose due date is before its issue date.
    #[error("invoice {invoice} is due on {due}, before its issue date {issued}")]
    DueBeforeIssue {
        /// The invoice.
        invoice: dotmac_core::InvoiceId,
        /// The issue date.
        issued: chrono::NaiveDate,
        /// The due date.
        due: chrono::NaiveDate,
    },
    /// A subscription change dated beyond the horizon (see
    /// [`Subscription::change_horizon`](crate::Subscription::change_horizon)).
    #[error(
        "subscription {subscription}: a change on {date} is beyond the horizon {horizon}; changes are dated within {years} years of the start",
        years = crate::subscription::CHANGE_HORIZON_YEARS
    )]
    DateBeyondHorizon {
        /// The subscription.
        subscription: dotmac_core::SubscriptionId,
        /// The date given.
        date: chrono::NaiveDate,
        /// The last date accepted.
        horizon: chrono::NaiveDate,
    },
    /// A subscription starting more than
    /// [`CHANGE_HORIZON_YEARS`](crate::CHANGE_HORIZON_YEARS) years before or after today: a
    /// start in year −262143 would make the first bill run walk millions of periods.
    #[error(
        "subscription {subscription}: a start on {start} is outside {earliest} to {latest}; subscriptions start within {years} years of today",
        years = crate::subscription::CHANGE_HORIZON_YEARS
    )]
    StartBeyondHorizon {
        /// The subscription.
        subscription: dotmac_core::SubscriptionId,
        /// The start asked for.
        start: chrono::NaiveDate,
        /// The earliest start accepted.
        earliest: chrono::NaiveDate,
        /// The latest start accepted.
        latest: chrono::NaiveDate,
    },
    /// An allowance, meter binding or other definition that cannot work.
    #[error("invalid {what}: {reason}")]
    InvalidConfiguration {
        /// What was being configured.
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An amount or ledger in another currency than the one asked for.
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
        amount: rust_decimal::Decimal,
    },
    // --- usage billing ---
    /// A usage error (metering, aggregation) met while rating.
    #[error(transparent)]
    Usage(#[from] dotmac_usage::UsageError),
    /// A plan's usage charge names a meter that is not defined (not in the meters given to
    /// rating, or the plan has no usage charge for the meter asked about).
    #[error(
        "meter {meter} is not a defined meter with a usage charge on plan {plan}; define the meter or fix the charge"
    )]
    UnknownMeter {
        /// The plan.
        plan: dotmac_core::PlanId,
        /// The meter.
        meter: dotmac_core::MeterId,
    },
    // --- storage ---
    /// A store failed and the call changed nothing: its [kind](dotmac_core::StorageErrorKind)
    /// says what to do (retry an unavailable store, change invalid input), and the backend's
    /// error is kept as the source.
    #[error("{0}")]
    Storage(#[from] dotmac_core::StorageError),
}

impl BillingError {
    /// A stable, machine-readable name of the error's kind (`core.overflow`,
    /// `currency_not_used`, …): what failure events carry beside the message, so that
    /// consumers can branch on it without parsing text.
    pub fn kind(&self) -> &'static str {
        match self {
            BillingError::Core(core) => core.kind(),
            BillingError::Usage(usage) => usage.kind(),
            BillingError::InvalidPrice { .. } => "invalid_price",
            BillingError::InvalidQuantity { .. } => "invalid_quantity",
            BillingError::InvalidPlan { .. } => "invalid_plan",
            BillingError::UnknownPlan(_) => "unknown_plan",
            BillingError::UnknownProduct(_) => "unknown_product",
            BillingError::UnknownPlanVersion { .. } => "unknown_plan_version",
            BillingError::PlanMismatch { .. } => "plan_mismatch",
            BillingError::CurrencyNotOffered { .. } => "currency_not_offered",
            BillingError::CurrencyNotUsed { .. } => "currency_not_used",
            BillingError::IntervalMismatch { .. } => "interval_mismatch",
            BillingError::ChangeBeforeStart { .. } => "change_before_start",
            BillingError::SubscriptionNotActive { .. } => "subscription_not_active",
            BillingError::IllegalTransition { .. } => "illegal_transition",
            BillingError::IllegalInvoiceTransition { .. } => "illegal_invoice_transition",
            BillingError::VoidOfSettledInvoice { .. } => "void_of_settled_invoice",
            BillingError::InvalidBalance { .. } => "invalid_balance",
            BillingError::InvoiceNotPayable { .. } => "invoice_not_payable",
            BillingError::InvoiceChanged(_) => "invoice_changed",
            BillingError::RestoreBeforeSuspension { .. } => "restore_before_suspension",
            BillingError::InvalidTaxRate { .. } => "invalid_tax_rate",
            BillingError::InvalidDiscount { .. } => "invalid_discount",
            BillingError::NotCreditable { .. } => "not_creditable",
            BillingError::CreditExceedsLine { .. } => "credit_exceeds_line",
            BillingError::CreditExceedsInvoice { .. } => "credit_exceeds_invoice",
            BillingError::UnknownInvoiceLine { .. } => "unknown_invoice_line",
            BillingError::NothingToCredit(_) => "nothing_to_credit",
            BillingError::UnknownSubscription(_) => "unknown_subscription",
            BillingError::InvoiceNotFound(_) => "invoice_not_found",
            BillingError::UnknownAccount(_) => "unknown_account",
            BillingError::AlreadyExists { .. } => "already_exists",
            BillingError::Storage { .. } => "storage",
            BillingError::ConcurrentUpdate { .. } => "concurrent_update",
            BillingError::PendingChargeTaken { .. } => "pending_charge_taken",
            BillingError::NegativePrice { .. } => "negative_price",
            BillingError::DuplicateCurrencyPrice { .. } => "duplicate_currency_price",
            BillingError::PlanWithoutCharges { .. } => "plan_without_charges",
            BillingError::SetupFeeCurrencyWithoutPrice { .. } => "setup_fee_currency_without_price",
            BillingError::NegativeChargeQuantity { .. } => "negative_charge_quantity",
            BillingError::CreditWithoutReason { .. } => "credit_without_reason",
            BillingError::SubscriptionOfAnotherCustomer { .. } => {
                "subscription_of_another_customer"
            }
            BillingError::DueBeforeIssue { .. } => "due_before_issue",
            BillingError::DateBeyondHorizon { .. } => "date_beyond_horizon",
            BillingError::StartBeyondHorizon { .. } => "start_beyond_horizon",
            BillingError::InvalidConfiguration { .. } => "invalid_configuration",
            BillingError::WrongCurrency { .. } => "wrong_currency",
            BillingError::NonPositiveAmount { .. } => "non_positive_amount",
            BillingError::UnknownMeter { .. } => "unknown_meter",
        }
    }
}
