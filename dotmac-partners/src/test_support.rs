//! Fixtures the unit tests of several modules share (test builds only).

use chrono::NaiveDate;
use dotmac_core::{Currency, CustomerId, Money, PaymentId};

use crate::commission::{CollectedPayment, Earning, Standing, price_payment, share_out};
use crate::ids::SourceId;
use crate::ledger::{EntryKind, PartnerLedger};
use crate::plan::{CommissionPlan, RevenueTag};

pub(crate) const CUSTOMER: CustomerId = CustomerId::from_u128(1);

pub(crate) fn usd(s: &str) -> Money {
    Money::parse(s, Currency::USD).unwrap()
}

pub(crate) fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

/// `CUSTOMER`'s payment number `n`.
pub(crate) fn payment(n: u128, amount: &str, on: NaiveDate) -> CollectedPayment {
    CollectedPayment {
        customer: CUSTOMER,
        payment: PaymentId::from_u128(n),
        amount: usd(amount),
        on,
        tag: RevenueTag::default(),
    }
}

/// Prices and records `payment` in `ledger` as the service does, for a partner with no master.
pub(crate) fn record(
    plan: &CommissionPlan,
    ledger: &mut PartnerLedger,
    standing: &Standing,
    payment: CollectedPayment,
) -> Vec<Earning> {
    let earnings = price_payment(plan, ledger, standing, &payment).unwrap();
    let (own, _) = share_out(
        &earnings,
        payment.customer,
        payment.payment,
        ledger.partner(),
        None,
    )
    .unwrap();
    let source = SourceId::from_uuid(payment.payment.as_uuid());
    for a in own {
        ledger
            .append(payment.on, source, EntryKind::Accrued(a))
            .unwrap();
    }
    earnings
}
