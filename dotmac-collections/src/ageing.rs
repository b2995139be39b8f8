//! Receivables ageing: open invoice amounts by days past due, from the payments ledgers as
//! they stood on a date.

use chrono::NaiveDate;
use dotmac_core::{Currency, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::CollectionsError;
use crate::payments::{CustomerLedger, LedgerEntryKind};

fn overflow(operation: &'static str) -> CollectionsError {
    CollectionsError::Core(dotmac_core::CoreError::Overflow { operation })
}

/// Open receivables by days past due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Ageing {
    /// The date the ageing is for.
    pub as_of: NaiveDate,
    /// Not yet due.
    pub current: Money,
    /// 1–30 days past due.
    pub days_1_30: Money,
    /// 31–60 days past due.
    pub days_31_60: Money,
    /// 61–90 days past due.
    pub days_61_90: Money,
    /// More than 90 days past due.
    pub over_90: Money,
}

impl Ageing {
    /// All open receivables.
    ///
    /// # Errors
    ///
    /// [`CollectionsError::Core`] with an overflow when the sum does not fit in a `Decimal`, or a
    /// currency mismatch when the buckets are in different currencies.
    pub fn total(&self) -> Result<Money, CollectionsError> {
        Ok(Money::sum(
            self.current.currency(),
            [
                self.current,
                self.days_1_30,
                self.days_31_60,
                self.days_61_90,
                self.over_90,
            ],
        )?)
    }
}

/// Receivables ageing on `as_of`, from the customers' ledgers as they stood that day (invoices
/// issued and allocations made after it do not count).
///
/// # Errors
///
/// [`CollectionsError::WrongCurrency`] for a ledger in another currency.
pub fn receivables_ageing(
    ledgers: &[CustomerLedger],
    as_of: NaiveDate,
    currency: Currency,
) -> Result<Ageing, CollectionsError> {
    let mut buckets = [Decimal::ZERO; 5];
    for ledger in ledgers {
        if ledger.currency() != currency {
            return Err(CollectionsError::WrongCurrency {
                what: "ledger",
                expected: currency.code(),
                got: ledger.currency().code(),
            });
        }
        // An invoice with a negative total settled itself into credit: nothing to age.
        for invoice in ledger
            .invoices()
            .iter()
            .filter(|i| i.issued <= as_of && i.total.is_positive())
        {
            let paid = dotmac_core::checked_sum(
                ledger
                    .entries()
                    .iter()
                    .filter(|e| e.on <= as_of)
                    .filter_map(|e| match &e.kind {
                        // What was paid, credited, written off or voided by then: a credit
                        // note, a write-off or a void leaves only real debt to age.
                        LedgerEntryKind::Allocated {
                            invoice: id,
                            amount,
                            ..
                        }
                        | LedgerEntryKind::CreditNoted {
                            invoice: id,
                            amount,
                            ..
                        }
                        | LedgerEntryKind::WrittenOff {
                            invoice: id,
                            amount,
                        }
                        | LedgerEntryKind::Voided {
                            invoice: id,
                            amount,
                        } if *id == invoice.invoice => Some(amount.amount()),
                        _ => None,
                    }),
                "receivables ageing",
            )?;
            let open = invoice
                .total
                .amount()
                .checked_sub(paid)
                .ok_or_else(|| overflow("receivables ageing"))?;
            if open <= Decimal::ZERO {
                continue;
            }
            // chrono's `signed_duration_since` cannot overflow between two valid dates.
            let late = as_of.signed_duration_since(invoice.due).num_days();
            let slot = match late {
                i64::MIN..=0 => 0,
                1..=30 => 1,
                31..=60 => 2,
                61..=90 => 3,
                _ => 4,
            };
            if let Some(bucket) = buckets.get_mut(slot) {
                *bucket = bucket
                    .checked_add(open)
                    .ok_or_else(|| overflow("receivables ageing"))?;
            }
        }
    }
    let money = |d: Decimal| Money::new(d, currency);
    let [current, days_1_30, days_31_60, days_61_90, over_90] = buckets;
    Ok(Ageing {
        as_of,
        current: money(current),
        days_1_30: money(days_1_30),
        days_31_60: money(days_31_60),
        days_61_90: money(days_61_90),
        over_90: money(over_90),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::AllocationTarget;
    use dotmac_core::{CustomerId, InvoiceId, PaymentId};

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn ageing_uses_the_ledger_as_it_stood() {
        let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
        let usd = |m| Money::from_minor(m, Currency::USD);
        ledger
            .record_invoice(
                InvoiceId::from_u128(1),
                usd(1000),
                d("2026-01-01"),
                d("2026-01-15"),
            )
            .unwrap();
        ledger
            .record_invoice(
                InvoiceId::from_u128(2),
                usd(2000),
                d("2026-03-01"),
                d("2026-03-15"),
            )
            .unwrap();
        ledger
            .record_invoice(
                InvoiceId::from_u128(3),
                usd(4000),
                d("2026-04-01"),
                d("2026-04-20"),
            )
            .unwrap();
        ledger
            .record_payment(
                PaymentId::from_u128(1),
                usd(500),
                d("2026-04-25"),
                AllocationTarget::OldestFirst,
            )
            .unwrap();
        let ageing = receivables_ageing(&[ledger.clone()], d("2026-04-16"), Currency::USD).unwrap();
        assert_eq!(ageing.current, usd(4000));
        assert_eq!(ageing.days_31_60, usd(2000));
        assert_eq!(ageing.over_90, usd(1000)); // 91 days after 15 January
        let later = receivables_ageing(&[ledger], d("2026-04-30"), Currency::USD).unwrap();
        assert_eq!(later.days_1_30, usd(4000));
        assert_eq!(later.days_31_60, usd(2000));
        assert_eq!(later.over_90, usd(500));
        assert_eq!(later.total().unwrap(), usd(6500));
    }

    #[test]
    fn credited_written_off_and_void_amounts_do_not_age_from_their_day_on() {
        use crate::payments::CreditSettlement;
        use dotmac_core::CreditNoteId;
        let mut ledger = CustomerLedger::new(CustomerId::from_u128(1), Currency::USD);
        let usd = |m| Money::from_minor(m, Currency::USD);
        for (n, total) in [(1, 1000), (2, 2000), (3, 4000)] {
            ledger
                .record_invoice(
                    InvoiceId::from_u128(n),
                    usd(total),
                    d("2026-01-01"),
                    d("2026-01-15"),
                )
                .unwrap();
        }
        // A credit owed to the customer (a negative invoice) ages nowhere.
        ledger
            .record_invoice(
                InvoiceId::from_u128(4),
                usd(-700),
                d("2026-01-01"),
                d("2026-01-15"),
            )
            .unwrap();
        ledger
            .credit_note(
                CreditNoteId::from_u128(1),
                InvoiceId::from_u128(1),
                usd(400),
                d("2026-02-01"),
                CreditSettlement::Credit,
            )
            .unwrap();
        ledger
            .write_off(InvoiceId::from_u128(2), d("2026-02-05"))
            .unwrap();
        ledger
            .void(InvoiceId::from_u128(3), d("2026-02-10"))
            .unwrap();
        let before = receivables_ageing(&[ledger.clone()], d("2026-01-31"), Currency::USD).unwrap();
        assert_eq!(before.days_1_30, usd(7000));
        let after = receivables_ageing(&[ledger], d("2026-02-14"), Currency::USD).unwrap();
        assert_eq!(after.days_1_30, usd(600));
        assert_eq!(after.total().unwrap(), usd(600));
    }

    #[test]
    fn an_ageing_total_beyond_decimal_range_is_an_overflow_error() {
        let max = Money::new(Decimal::MAX, Currency::USD);
        let ageing = Ageing {
            as_of: d("2026-02-01"),
            current: max,
            days_1_30: max,
            days_31_60: Money::zero(Currency::USD),
            days_61_90: Money::zero(Currency::USD),
            over_90: Money::zero(Currency::USD),
        };
        assert_eq!(ageing.total(), Err(overflow("add")));
    }
}
