//! What happens to an invoice after it is issued: what the payments ledger (collections)
//! reports settled, credited and written off on it, and the customer credit applied to it,
//! shown as adjustment lines under its charges (as Kill Bill's credit balance adjustment and
//! Stripe's customer balance are). The charges and the total never change: `amount_due =
//! total − paid − credited`.
//!
//! Pure functions of the invoice, [`Invoice::with_balance`] and
//! [`Invoice::with_credit_applied`], compute the new state; the service writes it with its
//! events in one store step ([`BillingService::apply_balance`](crate::BillingService::apply_balance),
//! [`BillingService::apply_credit`](crate::BillingService::apply_credit)).

use chrono::NaiveDate;
use dotmac_core::Money;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::invoice::{Invoice, InvoiceStatus};

dotmac_core::define_id! {
    /// An adjustment line of an invoice. Derive it from the fact it records (the id of the
    /// collections event that applied the credit): recording the same id twice is a no-op.
    AdjustmentId
}

/// What an adjustment line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AdjustmentKind {
    /// The customer's credit balance (an overpayment, a credit note kept as credit) paid part
    /// of the invoice.
    CreditApplied,
}

impl AdjustmentKind {
    /// The line's description.
    pub fn label(self) -> &'static str {
        match self {
            AdjustmentKind::CreditApplied => "Credit applied",
        }
    }
}

/// A line shown under an invoice's charges that settles part of it without changing its total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceAdjustment {
    /// The line's id (its idempotency key).
    pub id: AdjustmentId,
    /// What it records.
    pub kind: AdjustmentKind,
    /// The amount settled (positive).
    pub amount: Money,
    /// The date it was applied.
    pub on: NaiveDate,
}

impl InvoiceAdjustment {
    /// The line's description.
    pub fn description(&self) -> &'static str {
        self.kind.label()
    }
}

/// An issued invoice's settlement, as the payments ledger reported it (see
/// [`Invoice::settlement`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceSettlement {
    /// Everything that settled it: payments allocated to it and customer credit applied
    /// (collections' `settled`).
    pub paid: Money,
    /// Credit notes against it.
    pub credited: Money,
    /// Written off.
    pub written_off: Money,
    /// The part of what settled it that was customer credit: the sum of the
    /// [`AdjustmentKind::CreditApplied`] lines.
    pub credit_applied: Money,
    /// The adjustment lines, oldest first.
    pub adjustments: Vec<InvoiceAdjustment>,
    /// The ledger position of the last balance report applied
    /// ([`BalanceUpdate::ledger_sequence`]); `None` before the first. A report that is not
    /// newer is stale and changes nothing. (Settlements stored before the field existed have
    /// none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_sequence: Option<u64>,
}

impl InvoiceSettlement {
    /// Nothing settled, in `currency`.
    pub fn none(currency: dotmac_core::Currency) -> Self {
        let zero = Money::zero(currency);
        InvoiceSettlement {
            paid: zero,
            credited: zero,
            written_off: zero,
            credit_applied: zero,
            adjustments: Vec::new(),
            ledger_sequence: None,
        }
    }
}

/// What happens to the part of a credit note that its invoice no longer owes (because it was
/// already paid): chosen by the caller when the note is issued, carried by
/// `billing.credit_note_issued` for collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditSettlement {
    /// Kept as customer credit, which the next invoice consumes.
    #[default]
    Credit,
    /// Paid back to the customer.
    Refund,
}

/// An invoice's balance as the payments ledger reports it
/// (`collections.invoice_balance_changed`), for [`Invoice::with_balance`]. Every amount is in
/// the invoice's currency and `open = total − settled − credited − written_off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceUpdate {
    /// Allocations plus customer credit applied.
    pub settled: Money,
    /// Credit notes.
    pub credited: Money,
    /// Written off.
    pub written_off: Money,
    /// Still owed.
    pub open: Money,
    /// The invoice's status in the ledger (open, partially paid, paid, void, uncollectible).
    pub state: InvoiceStatus,
    /// The ledger position the report is as of (collections' `ledger_sequence`): reports of
    /// one invoice carry increasing positions. Events are delivered at least once, so an older
    /// report can come again after a newer one was applied; it is ignored
    /// ([`InvoiceSettlement::ledger_sequence`]).
    pub ledger_sequence: u64,
}

impl Invoice {
    fn zero(&self) -> Money {
        Money::zero(self.currency)
    }

    /// Everything that settled the invoice: payments and customer credit applied.
    pub fn amount_paid(&self) -> Money {
        self.settlement
            .as_ref()
            .map_or_else(|| self.zero(), |s| s.paid)
    }

    /// Credit notes against it, as the ledger reported them.
    pub fn amount_credited(&self) -> Money {
        self.settlement
            .as_ref()
            .map_or_else(|| self.zero(), |s| s.credited)
    }

    /// Written off.
    pub fn amount_written_off(&self) -> Money {
        self.settlement
            .as_ref()
            .map_or_else(|| self.zero(), |s| s.written_off)
    }

    /// Customer credit applied (part of [`Invoice::amount_paid`]), listed in
    /// [`Invoice::adjustments`].
    pub fn credit_applied(&self) -> Money {
        self.settlement
            .as_ref()
            .map_or_else(|| self.zero(), |s| s.credit_applied)
    }

    /// The adjustment lines shown under the charges (customer credit applied), oldest first.
    pub fn adjustments(&self) -> &[InvoiceAdjustment] {
        self.settlement
            .as_ref()
            .map(|s| s.adjustments.as_slice())
            .unwrap_or_default()
    }

    /// What is still owed: `total − paid − credited` (a write-off does not reduce it: a
    /// written-off invoice may still be paid).
    ///
    /// # Errors
    ///
    /// Overflow only.
    pub fn amount_due(&self) -> Result<Money, BillingError> {
        Ok(self
            .total
            .checked_sub(self.amount_paid())?
            .checked_sub(self.amount_credited())?)
    }

    fn same_currency(&self, what: &'static str, amount: Money) -> Result<(), BillingError> {
        if amount.currency() == self.currency {
            Ok(())
        } else {
            Err(BillingError::WrongCurrency {
                what,
                expected: self.currency.code(),
                got: amount.currency().code(),
            })
        }
    }

    /// The invoice with the balance the ledger reported: its amounts, and its status moved to
    /// `update.state`. `None` when nothing changes: a replayed report, or a stale one (its
    /// [`BalanceUpdate::ledger_sequence`] is not after the last report applied, or it reports
    /// `open` for an invoice billing wrote off: made before the ledger entered the write-off).
    ///
    /// # Errors
    ///
    /// [`BillingError::WrongCurrency`] for an amount in another currency;
    /// [`BillingError::InvalidBalance`] for a negative settled (unless it is the total of an
    /// invoice with a negative total, which settles itself into customer credit), credited or
    /// written-off amount, an `open` that is not `total − settled − credited − written_off`,
    /// or a draft state;
    /// [`BillingError::IllegalInvoiceTransition`] / [`BillingError::VoidOfSettledInvoice`]
    /// when the status cannot move to the state (see [`InvoiceStatus`]).
    pub fn with_balance(&self, update: &BalanceUpdate) -> Result<Option<Invoice>, BillingError> {
        let what = "invoice balance";
        for amount in [
            update.settled,
            update.credited,
            update.written_off,
            update.open,
        ] {
            self.same_currency(what, amount)?;
        }
        let invalid = |reason| BillingError::InvalidBalance {
            invoice: self.id,
            reason,
        };
        // An invoice with a negative total (a credit owed to the customer) is settled by
        // itself into customer credit: the ledger reports `settled = total`.
        let credit_settled = self.total.is_negative() && update.settled == self.total;
        if [update.credited, update.written_off]
            .iter()
            .any(|a| a.is_negative())
            || update.settled.is_negative() && !credit_settled
        {
            return Err(invalid(
                "settled, credited and written-off amounts cannot be negative",
            ));
        }
        let open = self
            .total
            .checked_sub(update.settled)?
            .checked_sub(update.credited)?
            .checked_sub(update.written_off)?;
        if open != update.open {
            return Err(invalid(
                "open is not the total less what is settled, credited and written off",
            ));
        }
        if update.state == InvoiceStatus::Draft {
            return Err(invalid("an issued invoice's state is never draft"));
        }
        let applied = self.settlement.as_ref().and_then(|s| s.ledger_sequence);
        if applied.is_some_and(|seen| update.ledger_sequence <= seen) {
            return Ok(None);
        }
        if self.status == InvoiceStatus::Uncollectible && update.state == InvoiceStatus::Open {
            // The ledger never moves a written-off invoice back to open (it leaves
            // uncollectible only when paid, credited or voided): this report was made before
            // the ledger entered billing's own write-off, whose report follows it.
            return Ok(None);
        }
        let mut next = self.clone();
        let settlement = next
            .settlement
            .get_or_insert_with(|| Box::new(InvoiceSettlement::none(self.currency)));
        settlement.paid = update.settled;
        settlement.credited = update.credited;
        settlement.written_off = update.written_off;
        settlement.ledger_sequence = Some(update.ledger_sequence);
        if self.status == InvoiceStatus::Paid && update.state == InvoiceStatus::Uncollectible {
            // A refund reopened an invoice once written off (and paid since), and the ledger
            // wrote the reopened part off again: the one move the ledger makes that billing's
            // own write-off refuses (a paid invoice is not written off by hand).
            next.status = InvoiceStatus::Uncollectible;
        } else if next.status != update.state {
            next.transition(update.state)?;
        }
        Ok((next != *self).then_some(next))
    }

    /// The invoice with `amount` of customer credit applied on `on`, shown as an adjustment
    /// line `id`. `None` when a line `id` is already recorded (a replay). The ledger reports
    /// the new balance (and status) on its own ([`Invoice::with_balance`]).
    ///
    /// # Errors
    ///
    /// [`BillingError::WrongCurrency`], [`BillingError::NonPositiveAmount`],
    /// [`BillingError::InvoiceNotPayable`] for a draft or void invoice,
    /// [`BillingError::InvalidBalance`] when the credit applied would exceed the total.
    pub fn with_credit_applied(
        &self,
        id: AdjustmentId,
        amount: Money,
        on: NaiveDate,
    ) -> Result<Option<Invoice>, BillingError> {
        self.same_currency("credit applied", amount)?;
        if !amount.is_positive() {
            return Err(BillingError::NonPositiveAmount {
                what: "credit applied",
                amount: amount.amount(),
            });
        }
        if matches!(self.status, InvoiceStatus::Draft | InvoiceStatus::Void) {
            return Err(BillingError::InvoiceNotPayable {
                invoice: self.id,
                status: self.status,
            });
        }
        if self.adjustments().iter().any(|a| a.id == id) {
            return Ok(None);
        }
        let applied = self.credit_applied().checked_add(amount)?;
        if applied.amount() > self.total.amount() {
            return Err(BillingError::InvalidBalance {
                invoice: self.id,
                reason: "customer credit applied beyond the invoice total",
            });
        }
        let mut next = self.clone();
        let settlement = next
            .settlement
            .get_or_insert_with(|| Box::new(InvoiceSettlement::none(self.currency)));
        settlement.credit_applied = applied;
        settlement.adjustments.push(InvoiceAdjustment {
            id,
            kind: AdjustmentKind::CreditApplied,
            amount,
            on,
        });
        Ok(Some(next))
    }
}

/// Checks that `updated` is `expected` with another status or settlement only: what
/// [`InvoiceStore::update_invoice`](crate::InvoiceStore::update_invoice) may write (for stores).
///
/// # Errors
///
/// [`BillingError::InvalidConfiguration`] otherwise.
pub fn check_invoice_update(expected: &Invoice, updated: &Invoice) -> Result<(), BillingError> {
    let same = Invoice {
        status: expected.status,
        settlement: expected.settlement.clone(),
        ..updated.clone()
    };
    if same == *expected {
        Ok(())
    } else {
        Err(BillingError::InvalidConfiguration {
            what: "invoice update",
            reason: "only an invoice's status and settlement change once it is issued",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoice::{DocumentBuilder, DocumentKey, DocumentSettings, DraftLine, LineKind};
    use dotmac_core::{Currency, CustomerId, SubscriptionId};
    use rust_decimal::Decimal;

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::USD)
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    /// An open invoice of 30.00.
    fn invoice() -> Invoice {
        let settings = DocumentSettings::default();
        let key = DocumentKey::Period {
            subscription: SubscriptionId::from_u128(1),
            index: 0,
        };
        let mut builder = DocumentBuilder::new(
            key,
            CustomerId::from_u128(1),
            None,
            Currency::USD,
            day(1),
            &settings,
        )
        .unwrap();
        builder
            .push(DraftLine {
                kind: LineKind::OneOff,
                text: None,
                period: None,
                quantity: Decimal::ONE,
                unit_price: usd(3000),
                price: None,
                discountable: false,
            })
            .unwrap();
        let mut invoice = builder.finish();
        invoice.status = InvoiceStatus::Open;
        invoice
    }

    /// The ledger's report as of position `seq`.
    fn balance(
        seq: u64,
        settled: i64,
        credited: i64,
        written_off: i64,
        state: InvoiceStatus,
    ) -> BalanceUpdate {
        BalanceUpdate {
            settled: usd(settled),
            credited: usd(credited),
            written_off: usd(written_off),
            open: usd(3000 - settled - credited - written_off),
            state,
            ledger_sequence: seq,
        }
    }

    #[test]
    fn the_status_follows_the_ledger_and_a_replay_changes_nothing() {
        use InvoiceStatus::*;
        let open = invoice();
        let part = open
            .with_balance(&balance(1, 1000, 0, 0, PartiallyPaid))
            .unwrap()
            .unwrap();
        assert_eq!(part.status, PartiallyPaid);
        assert_eq!(part.amount_paid(), usd(1000));
        assert_eq!(part.amount_due().unwrap(), usd(2000));
        assert_eq!(part.total, open.total, "the charges never change");
        assert_eq!(
            part.with_balance(&balance(1, 1000, 0, 0, PartiallyPaid)),
            Ok(None)
        );
        let paid = part
            .with_balance(&balance(2, 2000, 1000, 0, Paid))
            .unwrap()
            .unwrap();
        assert_eq!((paid.status, paid.amount_due().unwrap()), (Paid, usd(0)));
        // A refund reopens it.
        let refunded = paid
            .with_balance(&balance(3, 0, 1000, 0, Open))
            .unwrap()
            .unwrap();
        assert_eq!(
            (refunded.status, refunded.amount_due().unwrap()),
            (Open, usd(2000))
        );
        // Written off, then paid later.
        let written = refunded
            .with_balance(&balance(4, 0, 1000, 2000, Uncollectible))
            .unwrap()
            .unwrap();
        assert_eq!(written.amount_due().unwrap(), usd(2000), "still payable");
        let late = written
            .with_balance(&balance(5, 500, 1000, 1500, PartiallyPaid))
            .unwrap()
            .unwrap();
        assert_eq!(late.status, PartiallyPaid);
    }

    /// Reports are delivered at least once: a relay that died before marking them hands
    /// them over again, after newer ones were applied. The status once moved
    /// uncollectible → open (refused: the event was parked) or paid → partially paid.
    #[test]
    fn a_report_older_than_the_last_applied_changes_nothing() {
        use InvoiceStatus::*;
        let part = invoice()
            .with_balance(&balance(3, 1000, 0, 0, PartiallyPaid))
            .unwrap()
            .unwrap();
        let written = part
            .with_balance(&balance(4, 1000, 0, 2000, Uncollectible))
            .unwrap()
            .unwrap();
        assert_eq!(
            written.settlement.as_ref().and_then(|s| s.ledger_sequence),
            Some(4)
        );
        assert_eq!(
            written.with_balance(&balance(3, 1000, 0, 0, PartiallyPaid)),
            Ok(None)
        );
        assert_eq!(written.with_balance(&balance(1, 0, 0, 0, Open)), Ok(None));
        assert_eq!(
            written.with_balance(&balance(4, 1000, 0, 2000, Uncollectible)),
            Ok(None),
            "the same report again"
        );
        let paid = written
            .with_balance(&balance(9, 3000, 0, 0, Paid))
            .unwrap()
            .unwrap();
        assert_eq!((paid.status, paid.amount_paid()), (Paid, usd(3000)));
        assert_eq!(
            paid.with_balance(&balance(4, 1000, 0, 2000, Uncollectible)),
            Ok(None)
        );
        // A stale report is still checked: bad figures are refused whatever their position.
        let mut wrong = balance(2, 1000, 0, 0, PartiallyPaid);
        wrong.open = usd(1);
        assert!(matches!(
            paid.with_balance(&wrong),
            Err(BillingError::InvalidBalance { .. })
        ));
    }

    /// Billing writes an invoice off before the ledger reported anything on it (the
    /// dispatcher had not run): the ledger's first report, made before it entered the
    /// write-off, says open; it was refused (uncollectible → open) and parked. The write-off's
    /// own report follows it.
    #[test]
    fn an_open_report_made_before_billings_own_write_off_changes_nothing() {
        use InvoiceStatus::*;
        let mut written = invoice();
        written.transition(Uncollectible).unwrap();
        assert_eq!(written.with_balance(&balance(0, 0, 0, 0, Open)), Ok(None));
        let reported = written
            .with_balance(&balance(1, 0, 0, 3000, Uncollectible))
            .unwrap()
            .unwrap();
        assert_eq!(reported.amount_written_off(), usd(3000));
        let part = written
            .with_balance(&balance(1, 1000, 0, 0, PartiallyPaid))
            .unwrap()
            .unwrap();
        assert_eq!(
            part.status, PartiallyPaid,
            "a payment made before it still counts"
        );
    }

    /// Written off, paid in full by a payment naming it, then that payment refunded in part:
    /// the ledger writes the reopened part off again and reports uncollectible, which the
    /// lifecycle refused from paid (the event was parked, the invoice stayed paid).
    #[test]
    fn a_refund_of_a_written_off_invoice_paid_since_makes_it_uncollectible_again() {
        use InvoiceStatus::*;
        let written = invoice()
            .with_balance(&balance(1, 0, 0, 3000, Uncollectible))
            .unwrap()
            .unwrap();
        let paid = written
            .with_balance(&balance(3, 3000, 0, 0, Paid))
            .unwrap()
            .unwrap();
        let again = paid
            .with_balance(&balance(6, 450, 0, 2550, Uncollectible))
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                again.status,
                again.amount_paid(),
                again.amount_written_off()
            ),
            (Uncollectible, usd(450), usd(2550))
        );
        // Billing's own write-off of a paid invoice is still refused.
        assert_eq!(
            paid.status.transition(Uncollectible),
            Err(BillingError::IllegalInvoiceTransition {
                from: Paid,
                to: Uncollectible
            })
        );
    }

    /// A bill run under `PauseBilling` can issue an invoice of credits only (the paused part
    /// of a billed period, less a fee): the ledger enters it as customer credit and reports
    /// it settled by its own (negative) total, which billing refused as a negative amount (the
    /// event was parked, the invoice stayed open with a negative amount due).
    #[test]
    fn an_invoice_of_credits_is_settled_by_its_own_total() {
        use InvoiceStatus::*;
        let mut credits = invoice();
        credits.total = usd(-3855);
        let report = BalanceUpdate {
            settled: usd(-3855),
            credited: usd(0),
            written_off: usd(0),
            open: usd(0),
            state: Paid,
            ledger_sequence: 7,
        };
        let paid = credits.with_balance(&report).unwrap().unwrap();
        assert_eq!((paid.status, paid.amount_due().unwrap()), (Paid, usd(0)));
        // Never voided, before or after the ledger reported it: the ledger refuses to void a
        // customer credit (the reaction failed and was parked, billing's invoice void while the
        // credit stayed).
        let mut unreported = credits.clone();
        assert_eq!(
            unreported.transition(Void),
            Err(BillingError::VoidOfSettledInvoice {
                invoice: credits.id,
                settled: Decimal::new(-3855, 2)
            })
        );
        let mut reported = paid.clone();
        assert_eq!(
            reported.transition(Void),
            Err(BillingError::IllegalInvoiceTransition {
                from: Paid,
                to: Void
            })
        );
        // Any other negative settlement is still refused.
        let half = BalanceUpdate {
            settled: usd(-1000),
            open: usd(-2855),
            ..report
        };
        assert_eq!(
            credits.with_balance(&half),
            Err(BillingError::InvalidBalance {
                invoice: credits.id,
                reason: "settled, credited and written-off amounts cannot be negative"
            })
        );
    }

    #[test]
    fn bad_balances_are_refused_with_their_reason() {
        use InvoiceStatus::*;
        let open = invoice();
        let mut wrong = balance(1, 1000, 0, 0, PartiallyPaid);
        wrong.open = usd(1);
        assert_eq!(
            open.with_balance(&wrong),
            Err(BillingError::InvalidBalance {
                invoice: open.id,
                reason: "open is not the total less what is settled, credited and written off"
            })
        );
        let negative = balance(1, -100, 0, 0, Open);
        assert_eq!(
            open.with_balance(&negative),
            Err(BillingError::InvalidBalance {
                invoice: open.id,
                reason: "settled, credited and written-off amounts cannot be negative"
            })
        );
        let mut euro = balance(1, 1000, 0, 0, PartiallyPaid);
        euro.settled = Money::from_minor(1000, Currency::EUR);
        assert_eq!(
            open.with_balance(&euro),
            Err(BillingError::WrongCurrency {
                what: "invoice balance",
                expected: "USD",
                got: "EUR"
            })
        );
        // Void only while nothing is settled.
        let part = open
            .with_balance(&balance(1, 1000, 0, 0, PartiallyPaid))
            .unwrap()
            .unwrap();
        assert_eq!(
            part.with_balance(&balance(2, 1000, 0, 0, Void)),
            Err(BillingError::IllegalInvoiceTransition {
                from: PartiallyPaid,
                to: Void
            })
        );
        let mut settled_open = part.clone();
        settled_open.status = Open;
        assert_eq!(
            settled_open.clone().transition(Void),
            Err(BillingError::VoidOfSettledInvoice {
                invoice: open.id,
                settled: Decimal::new(1000, 2)
            })
        );
        let voided = open
            .with_balance(&balance(1, 0, 0, 0, Void))
            .unwrap()
            .unwrap();
        assert_eq!(voided.status, Void);
    }

    #[test]
    fn applied_credit_is_a_line_recorded_once_that_leaves_the_charges_alone() {
        let open = invoice();
        let id = AdjustmentId::from_u128(5);
        let credited = open
            .with_credit_applied(id, usd(1200), day(2))
            .unwrap()
            .unwrap();
        assert_eq!(credited.credit_applied(), usd(1200));
        assert_eq!(
            credited.adjustments(),
            [InvoiceAdjustment {
                id,
                kind: AdjustmentKind::CreditApplied,
                amount: usd(1200),
                on: day(2),
            }]
        );
        assert_eq!(credited.adjustments()[0].description(), "Credit applied");
        assert_eq!((credited.total, &credited.lines), (open.total, &open.lines));
        assert_eq!(
            credited.with_credit_applied(id, usd(1200), day(2)),
            Ok(None)
        );
        assert_eq!(
            credited.with_credit_applied(AdjustmentId::from_u128(6), usd(1801), day(3)),
            Err(BillingError::InvalidBalance {
                invoice: open.id,
                reason: "customer credit applied beyond the invoice total"
            })
        );
        assert_eq!(
            open.with_credit_applied(id, usd(0), day(2)),
            Err(BillingError::NonPositiveAmount {
                what: "credit applied",
                amount: Decimal::ZERO
            })
        );
        let mut void = open.clone();
        void.status = InvoiceStatus::Void;
        assert_eq!(
            void.with_credit_applied(id, usd(100), day(2)),
            Err(BillingError::InvoiceNotPayable {
                invoice: open.id,
                status: InvoiceStatus::Void
            })
        );
    }
}
