//! Ledger invariants over random payment/refund/payout histories.
// Test helpers outside #[test] functions: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Days, NaiveDate};
use dotmac_core::{Currency, CustomerId, Money, PaymentId};
use dotmac_partners::{CommissionDuration, CommissionPlan, EntryKind, PartnerId, ReferralLedger};
use proptest::prelude::*;
use rust_decimal::Decimal;

use dotmac_testing::cases;

#[derive(Debug, Clone)]
enum Op {
    Pay(i64),
    Refund(i64),
    Payout(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1i64..100_000).prop_map(Op::Pay),
        2 => (1i64..100_000).prop_map(Op::Refund),
        1 => (1i64..50_000).prop_map(Op::Payout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn totals_reconcile_and_clawbacks_never_exceed_earnings(
        rate in 0u32..=100,
        hold in 0u32..60,
        months in prop::option::of(1u32..24),
        ops in prop::collection::vec((0u64..20, op()), 1..40),
    ) {
        let usd = |minor: i64| Money::from_minor(minor, Currency::USD);
        let duration = months.map_or(CommissionDuration::Lifetime, CommissionDuration::Months);
        let plan = CommissionPlan::new(Decimal::from(rate), duration, hold, usd(500)).unwrap();
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let mut ledger = ReferralLedger::new(PartnerId::new(), CustomerId::new(), start, plan);
        let mut day = start;
        let mut paid_in = 0i64;
        let mut refunded = 0i64;
        for (gap, op) in ops {
            day = day.checked_add_days(Days::new(gap)).unwrap();
            // Every entry here is positive, in order and in the ledger's currency: none is
            // refused, not even a refund larger than what is still refundable.
            match op {
                Op::Pay(m) => {
                    ledger.record_payment(PaymentId::new(), day, usd(m)).unwrap();
                    paid_in += m;
                }
                Op::Refund(m) => {
                    let entries = ledger.record_refund(PaymentId::new(), day, usd(m)).unwrap();
                    // Beyond what is still refundable a refund claws back nothing more.
                    let refundable = m.min(paid_in - refunded);
                    let bases = entries.iter().map(|e| match e.kind {
                        EntryKind::ClawedBack { base, .. } => base.amount(),
                        _ => Decimal::MAX,
                    });
                    prop_assert_eq!(bases.sum::<Decimal>(), Decimal::new(refundable, 2));
                    refunded += refundable;
                }
                Op::Payout(m) => {
                    ledger.record_payout(day, usd(m)).unwrap();
                }
            }
            let s = ledger.summary(day).unwrap();
            prop_assert!(s.clawed_back.amount() <= s.earned.amount());
            prop_assert!(s.clawed_back.amount() >= Decimal::ZERO);
            prop_assert_eq!(
                s.balance,
                s.earned.checked_sub(s.clawed_back).unwrap().checked_sub(s.paid_out).unwrap()
            );
            prop_assert!(s.payable.amount() >= Decimal::ZERO);
            prop_assert!(s.payable.amount() <= s.balance.amount().max(Decimal::ZERO));
            // Commission never exceeds the rate applied to net payments, plus rounding.
            let net = Decimal::new(paid_in - refunded, 2);
            let ceiling = net * Decimal::from(rate) / Decimal::ONE_HUNDRED;
            let slack = Decimal::new(1, 2) * Decimal::from(ledger.entries().len() as u64);
            prop_assert!(s.earned.amount() - s.clawed_back.amount() <= ceiling + slack);
        }
    }
}
