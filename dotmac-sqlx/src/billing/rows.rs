//! Storage rows: the JSON documents of the billing tables as dotmac-sqlx's own types.
//!
//! The rule: a record whose JSON is stored (a `body` column, see migration 0004) is written and
//! read through a row type of this module, never through the domain type's serde. The row
//! types fix the stored field names, so the schema is this crate's, not the domain's: a domain
//! crate that renames or reorders a field changes the conversion below (the compiler points at
//! it), not the rows already stored. A field the domain adds needs a field here and, if old rows
//! lack it, `#[serde(default)]`; a field it removes stays readable here until a migration drops
//! it. Every row type serialises exactly as the domain type did when the row type was written
//! (the tests below hold both side by side), so rows stored before it read the same.
//!
//! Records nested in a stored record (invoice lines, tax summaries, subscription segments and
//! discounts) have rows too. Values below them are stored by their own serde: ids, money,
//! currencies, dates and decimals (dotmac-core's vocabulary, whose format is part of its API),
//! and the small domain values (`DocumentKey`, `InvoiceStatus`, `LineKind`, `PriceRef`,
//! `Discount`, the status and mode enums); a change to one of those needs a row type here first.
//!
//! Done for invoices and subscriptions, the two records that every bill run writes; the other
//! stored records (accounts, plans, pending charges, credit notes, …) still use the domain's
//! serde and should follow the same rule when they next change.

use chrono::NaiveDate;
use dotmac_billing::internal::{
    SubscriptionParts, subscription_from_parts, subscription_into_parts,
};
use dotmac_billing::{
    AdjustmentId, AdjustmentKind, AppliedDiscount, Discount, DocumentKey, DocumentNumber,
    FirstPeriod, Invoice, InvoiceAdjustment, InvoiceLine, InvoiceSettlement, InvoiceStatus,
    LineKind, PriceRef, ProrationMode, Segment, SegmentState, Subscription, SubscriptionStatus,
    TaxMode, TaxRateId, TaxSummary,
};
use dotmac_core::{
    Currency, CustomerId, InvoiceId, InvoiceNumberFormat, Money, Period, PlanId, SubscriptionId,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A stored invoice (`billing_invoices.body`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct InvoiceRow {
    id: InvoiceId,
    key: DocumentKey,
    number: Option<DocumentNumber>,
    customer: CustomerId,
    subscription: Option<SubscriptionId>,
    currency: Currency,
    status: InvoiceStatus,
    issue_date: NaiveDate,
    due_date: NaiveDate,
    lines: Vec<InvoiceLineRow>,
    taxes: Vec<TaxSummaryRow>,
    subtotal: Money,
    discount_total: Money,
    tax_total: Money,
    total: Money,
    // Rows written before the field existed (and invoices nothing was reported on) have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settlement: Option<SettlementRow>,
    // The default format (and rows written before the field existed) have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    number_format: Option<InvoiceNumberFormat>,
}

/// What the payments ledger reported on a stored invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SettlementRow {
    paid: Money,
    credited: Money,
    written_off: Money,
    credit_applied: Money,
    adjustments: Vec<AdjustmentRow>,
    // Rows written before the field existed have applied no positioned report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ledger_sequence: Option<u64>,
}

/// An adjustment line of a stored invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AdjustmentRow {
    id: AdjustmentId,
    kind: AdjustmentKind,
    amount: Money,
    on: NaiveDate,
}

impl From<&InvoiceSettlement> for SettlementRow {
    fn from(settlement: &InvoiceSettlement) -> Self {
        let InvoiceSettlement {
            paid,
            credited,
            written_off,
            credit_applied,
            adjustments,
            ledger_sequence,
        } = settlement;
        SettlementRow {
            paid: *paid,
            credited: *credited,
            written_off: *written_off,
            credit_applied: *credit_applied,
            ledger_sequence: *ledger_sequence,
            adjustments: adjustments
                .iter()
                .map(|a| {
                    let InvoiceAdjustment {
                        id,
                        kind,
                        amount,
                        on,
                    } = a;
                    AdjustmentRow {
                        id: *id,
                        kind: *kind,
                        amount: *amount,
                        on: *on,
                    }
                })
                .collect(),
        }
    }
}

impl From<SettlementRow> for InvoiceSettlement {
    fn from(row: SettlementRow) -> Self {
        InvoiceSettlement {
            paid: row.paid,
            credited: row.credited,
            written_off: row.written_off,
            credit_applied: row.credit_applied,
            ledger_sequence: row.ledger_sequence,
            adjustments: row
                .adjustments
                .into_iter()
                .map(|a| InvoiceAdjustment {
                    id: a.id,
                    kind: a.kind,
                    amount: a.amount,
                    on: a.on,
                })
                .collect(),
        }
    }
}

/// A stored invoice line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InvoiceLineRow {
    kind: LineKind,
    text: Option<String>,
    period: Option<Period>,
    quantity: Decimal,
    unit_price: Money,
    amount: Money,
    discount: Money,
    tax: Money,
    tax_exclusive: Money,
    price: Option<PriceRef>,
}

/// A stored per-rate tax total of an invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TaxSummaryRow {
    rate: TaxRateId,
    percent: Decimal,
    mode: TaxMode,
    taxable: Money,
    amount: Money,
}

impl From<&Invoice> for InvoiceRow {
    fn from(invoice: &Invoice) -> Self {
        // Destructured, so that a field the domain adds is a compile error here.
        let Invoice {
            id,
            key,
            number,
            customer,
            subscription,
            currency,
            status,
            issue_date,
            due_date,
            lines,
            taxes,
            subtotal,
            discount_total,
            tax_total,
            total,
            settlement,
            number_format,
        } = invoice;
        InvoiceRow {
            id: *id,
            key: *key,
            number: *number,
            customer: *customer,
            subscription: *subscription,
            currency: *currency,
            status: *status,
            issue_date: *issue_date,
            due_date: *due_date,
            lines: lines.iter().map(InvoiceLineRow::from).collect(),
            taxes: taxes.iter().map(TaxSummaryRow::from).collect(),
            subtotal: *subtotal,
            discount_total: *discount_total,
            tax_total: *tax_total,
            total: *total,
            settlement: settlement.as_deref().map(SettlementRow::from),
            number_format: number_format.clone(),
        }
    }
}

impl From<InvoiceRow> for Invoice {
    fn from(row: InvoiceRow) -> Self {
        Invoice {
            id: row.id,
            key: row.key,
            number: row.number,
            customer: row.customer,
            subscription: row.subscription,
            currency: row.currency,
            status: row.status,
            issue_date: row.issue_date,
            due_date: row.due_date,
            lines: row.lines.into_iter().map(InvoiceLine::from).collect(),
            taxes: row.taxes.into_iter().map(TaxSummary::from).collect(),
            subtotal: row.subtotal,
            discount_total: row.discount_total,
            tax_total: row.tax_total,
            total: row.total,
            settlement: row.settlement.map(|s| Box::new(InvoiceSettlement::from(s))),
            number_format: row.number_format,
        }
    }
}

impl From<&InvoiceLine> for InvoiceLineRow {
    fn from(line: &InvoiceLine) -> Self {
        let InvoiceLine {
            kind,
            text,
            period,
            quantity,
            unit_price,
            amount,
            discount,
            tax,
            tax_exclusive,
            price,
        } = line;
        InvoiceLineRow {
            kind: *kind,
            text: text.clone(),
            period: *period,
            quantity: *quantity,
            unit_price: *unit_price,
            amount: *amount,
            discount: *discount,
            tax: *tax,
            tax_exclusive: *tax_exclusive,
            price: *price,
        }
    }
}

impl From<InvoiceLineRow> for InvoiceLine {
    fn from(row: InvoiceLineRow) -> Self {
        InvoiceLine {
            kind: row.kind,
            text: row.text,
            period: row.period,
            quantity: row.quantity,
            unit_price: row.unit_price,
            amount: row.amount,
            discount: row.discount,
            tax: row.tax,
            tax_exclusive: row.tax_exclusive,
            price: row.price,
        }
    }
}

impl From<&TaxSummary> for TaxSummaryRow {
    fn from(summary: &TaxSummary) -> Self {
        let TaxSummary {
            rate,
            percent,
            mode,
            taxable,
            amount,
        } = summary;
        TaxSummaryRow {
            rate: *rate,
            percent: *percent,
            mode: *mode,
            taxable: *taxable,
            amount: *amount,
        }
    }
}

impl From<TaxSummaryRow> for TaxSummary {
    fn from(row: TaxSummaryRow) -> Self {
        TaxSummary {
            rate: row.rate,
            percent: row.percent,
            mode: row.mode,
            taxable: row.taxable,
            amount: row.amount,
        }
    }
}

/// A stored subscription (`billing_subscriptions.body`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SubscriptionRow {
    id: SubscriptionId,
    customer: CustomerId,
    currency: Currency,
    status: SubscriptionStatus,
    start: NaiveDate,
    anchor: NaiveDate,
    first_period: FirstPeriod,
    proration: ProrationMode,
    trial_end: Option<NaiveDate>,
    ends_on: Option<NaiveDate>,
    segments: Vec<SegmentRow>,
    discounts: Vec<AppliedDiscountRow>,
    next_period: i64,
    setup_billed: bool,
    change_seq: u32,
    revision: u64,
    // Rows written before the field existed (and subscriptions not suspended) have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    suspended_since: Option<NaiveDate>,
}

/// A stored segment of a subscription (a plan and quantity from a date).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SegmentRow {
    from: NaiveDate,
    plan: PlanId,
    version: u32,
    quantity: Decimal,
    state: SegmentState,
}

/// A stored discount of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AppliedDiscountRow {
    discount: Discount,
    periods_applied: u32,
    // Rows written before the field existed have none.
    #[serde(default)]
    covered: Option<(i64, i64)>,
}

impl From<&Subscription> for SubscriptionRow {
    fn from(subscription: &Subscription) -> Self {
        // Destructured whole, so that a field the domain adds fails to compile here.
        let SubscriptionParts {
            id,
            customer,
            currency,
            status,
            start,
            anchor,
            first_period,
            proration,
            trial_end,
            ends_on,
            segments,
            discounts,
            next_period,
            setup_billed,
            change_seq,
            revision,
            suspended_since,
        } = subscription_into_parts(subscription.clone());
        SubscriptionRow {
            id,
            customer,
            currency,
            status,
            start,
            anchor,
            first_period,
            proration,
            trial_end,
            ends_on,
            segments: segments.iter().map(SegmentRow::from).collect(),
            discounts: discounts.iter().map(AppliedDiscountRow::from).collect(),
            next_period,
            setup_billed,
            change_seq,
            revision,
            suspended_since,
        }
    }
}

impl From<SubscriptionRow> for Subscription {
    fn from(row: SubscriptionRow) -> Self {
        subscription_from_parts(SubscriptionParts {
            id: row.id,
            customer: row.customer,
            currency: row.currency,
            status: row.status,
            start: row.start,
            anchor: row.anchor,
            first_period: row.first_period,
            proration: row.proration,
            trial_end: row.trial_end,
            ends_on: row.ends_on,
            segments: row.segments.into_iter().map(Segment::from).collect(),
            discounts: row
                .discounts
                .into_iter()
                .map(AppliedDiscount::from)
                .collect(),
            next_period: row.next_period,
            setup_billed: row.setup_billed,
            change_seq: row.change_seq,
            revision: row.revision,
            suspended_since: row.suspended_since,
        })
    }
}

impl From<&Segment> for SegmentRow {
    fn from(segment: &Segment) -> Self {
        let Segment {
            from,
            plan,
            version,
            quantity,
            state,
        } = segment;
        SegmentRow {
            from: *from,
            plan: *plan,
            version: *version,
            quantity: *quantity,
            state: *state,
        }
    }
}

impl From<SegmentRow> for Segment {
    fn from(row: SegmentRow) -> Self {
        Segment {
            from: row.from,
            plan: row.plan,
            version: row.version,
            quantity: row.quantity,
            state: row.state,
        }
    }
}

impl From<&AppliedDiscount> for AppliedDiscountRow {
    fn from(applied: &AppliedDiscount) -> Self {
        let AppliedDiscount {
            discount,
            periods_applied,
            covered,
        } = applied;
        AppliedDiscountRow {
            discount: discount.clone(),
            periods_applied: *periods_applied,
            covered: *covered,
        }
    }
}

impl From<AppliedDiscountRow> for AppliedDiscount {
    fn from(row: AppliedDiscountRow) -> Self {
        AppliedDiscount {
            discount: row.discount,
            periods_applied: row.periods_applied,
            covered: row.covered,
        }
    }
}

#[cfg(test)]
mod tests {
    // A failing unwrap is a failing test.
    #![allow(clippy::unwrap_used)]

    use dotmac_billing::{
        Charge, DiscountAmount, DiscountDuration, DiscountId, NewSubscription, Plan, TaxRate,
    };
    use dotmac_core::ProductId;

    use super::*;

    fn day(m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }

    fn subscription() -> Subscription {
        let plan = Plan::builder(PlanId::from_u128(7), ProductId::from_u128(7), "Fibre 100")
            .charge(Charge::recurring_flat([Money::from_minor(
                2999,
                Currency::USD,
            )]))
            .build(day(1, 1))
            .unwrap();
        let mut sub =
            NewSubscription::new(CustomerId::from_u128(3), plan.id, Currency::USD, day(1, 5))
                .id(SubscriptionId::from_u128(9))
                .anchor(day(1, 1))
                .create(&plan, Currency::USD)
                .unwrap();
        sub.trial_end = Some(day(1, 10));
        dotmac_billing::internal::set_subscription_revision(&mut sub, 4);
        sub.discounts.push(AppliedDiscount {
            covered: Some((0, 1)),
            ..AppliedDiscount::new(discount())
        });
        sub
    }

    fn invoice() -> Invoice {
        let usd = |minor| Money::from_minor(minor, Currency::USD);
        let customer = CustomerId::from_u128(3);
        let key = DocumentKey::Period {
            subscription: SubscriptionId::from_u128(9),
            index: 2,
        };
        let tax = TaxRate::exclusive(TaxRateId::from_u128(1), "VAT", Decimal::new(75, 1));
        Invoice {
            id: key.invoice_id(),
            key,
            number: Some(DocumentNumber(12)),
            customer,
            subscription: Some(SubscriptionId::from_u128(9)),
            currency: Currency::USD,
            status: InvoiceStatus::Open,
            issue_date: day(3, 1),
            due_date: day(3, 15),
            lines: vec![InvoiceLine {
                kind: LineKind::Recurring,
                text: Some("Fibre 100".into()),
                period: None,
                quantity: Decimal::ONE,
                unit_price: usd(2999),
                amount: usd(2999),
                discount: usd(0),
                tax: usd(225),
                tax_exclusive: usd(225),
                price: None,
            }],
            taxes: vec![TaxSummary {
                rate: tax.id,
                percent: tax.percent,
                mode: tax.mode,
                taxable: usd(2999),
                amount: usd(225),
            }],
            subtotal: usd(2999),
            discount_total: usd(0),
            tax_total: usd(225),
            total: usd(3224),
            settlement: None,
            number_format: None,
        }
    }

    #[test]
    fn a_settled_invoice_and_a_suspended_subscription_round_trip() {
        let usd = |minor| Money::from_minor(minor, Currency::USD);
        let mut invoice = invoice();
        invoice.status = InvoiceStatus::PartiallyPaid;
        invoice.settlement = Some(Box::new(InvoiceSettlement {
            paid: usd(1000),
            credited: usd(200),
            written_off: usd(0),
            credit_applied: usd(400),
            adjustments: vec![InvoiceAdjustment {
                id: AdjustmentId::from_u128(3),
                kind: AdjustmentKind::CreditApplied,
                amount: usd(400),
                on: day(3, 2),
            }],
            ledger_sequence: Some(7),
        }));
        let stored = serde_json::to_value(InvoiceRow::from(&invoice)).unwrap();
        assert_eq!(stored, serde_json::to_value(&invoice).unwrap());
        let read: InvoiceRow = serde_json::from_value(stored).unwrap();
        assert_eq!(Invoice::from(read), invoice);

        let plan = Plan::builder(PlanId::from_u128(7), ProductId::from_u128(7), "Fibre 100")
            .charge(Charge::recurring_flat([usd(2999)]))
            .build(day(1, 1))
            .unwrap();
        let sub = dotmac_billing::suspend(
            &subscription(),
            &plan,
            day(2, 3),
            dotmac_billing::SuspensionBilling::KeepBilling,
            &Default::default(),
        )
        .unwrap()
        .unwrap()
        .subscription;
        assert_eq!(sub.suspended_since(), Some(day(2, 3)));
        let stored = serde_json::to_value(SubscriptionRow::from(&sub)).unwrap();
        assert_eq!(stored, serde_json::to_value(&sub).unwrap());
        let read: SubscriptionRow = serde_json::from_value(stored).unwrap();
        assert_eq!(Subscription::from(read), sub);
    }

    #[test]
    fn an_invoice_row_is_stored_as_the_domain_invoice_was_and_converts_back() {
        let invoice = invoice();
        let row = InvoiceRow::from(&invoice);
        let stored = serde_json::to_value(&row).unwrap();
        assert_eq!(stored, serde_json::to_value(&invoice).unwrap());
        let read: InvoiceRow = serde_json::from_value(stored).unwrap();
        assert_eq!(Invoice::from(read), invoice);
    }

    #[test]
    fn a_subscription_row_is_stored_as_the_domain_subscription_was_and_converts_back() {
        let subscription = subscription();
        let row = SubscriptionRow::from(&subscription);
        let stored = serde_json::to_value(&row).unwrap();
        assert_eq!(stored, serde_json::to_value(&subscription).unwrap());
        let read: SubscriptionRow = serde_json::from_value(stored).unwrap();
        assert_eq!(Subscription::from(read), subscription);
    }

    #[test]
    fn the_stored_field_names_are_the_rows_own() {
        // The schema: these names are what rows already stored carry.
        let stored = serde_json::to_value(InvoiceRow::from(&invoice())).unwrap();
        let names: Vec<&str> = stored
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "id",
            "key",
            "number",
            "customer",
            "subscription",
            "currency",
            "status",
            "issue_date",
            "due_date",
            "lines",
            "taxes",
            "subtotal",
            "discount_total",
            "tax_total",
            "total",
        ];
        expected.sort_unstable();
        let mut names = names;
        names.sort_unstable();
        assert_eq!(names, expected);
        let stored = serde_json::to_value(SubscriptionRow::from(&subscription())).unwrap();
        let mut names: Vec<&str> = stored
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        let mut expected = vec![
            "id",
            "customer",
            "currency",
            "status",
            "start",
            "anchor",
            "first_period",
            "proration",
            "trial_end",
            "ends_on",
            "segments",
            "discounts",
            "next_period",
            "setup_billed",
            "change_seq",
            "revision",
        ];
        expected.sort_unstable();
        assert_eq!(names, expected);
        // A discount stored before `covered` existed still reads.
        let mut old =
            serde_json::to_value(AppliedDiscountRow::from(&AppliedDiscount::new(discount())))
                .unwrap();
        old.as_object_mut().unwrap().remove("covered");
        let read: AppliedDiscountRow = serde_json::from_value(old).unwrap();
        assert_eq!(
            AppliedDiscount::from(read),
            AppliedDiscount::new(discount())
        );
    }

    fn discount() -> Discount {
        Discount {
            id: DiscountId::from_u128(1),
            amount: DiscountAmount::Percentage(Decimal::TEN),
            duration: DiscountDuration::Periods(3),
        }
    }
}
