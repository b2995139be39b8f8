//! No arithmetic panic on caller amounts: referral ledgers, tier tables and commission splits
//! driven with amounts up to `Decimal::MAX` return `Ok` or `Err`, never panic (issue 9).

// Test helpers may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use chrono::{Days, NaiveDate};
use dotmac_core::{Currency, CustomerId, Money, PaymentId};
use dotmac_partners::{
    CommissionDuration, CommissionPlan, CommissionTier, CommissionTiers, PartnerId, ReferralLedger,
    TierMode, split_commission,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

use dotmac_testing::{cases, no_panic};

/// Decimals of every size: the extremes, and random 96-bit mantissas at random scales.
fn any_decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        Just(Decimal::MAX),
        Just(Decimal::MIN),
        Just(Decimal::ZERO),
        Just(Decimal::new(1, 28)),
        (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            0u32..=28
        )
            .prop_map(|(lo, mid, hi, negative, scale)| Decimal::from_parts(
                lo, mid, hi, negative, scale
            )),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Pay(Decimal),
    Refund(Decimal),
    Payout(Decimal),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any_decimal().prop_map(Op::Pay),
        any_decimal().prop_map(Op::Refund),
        any_decimal().prop_map(Op::Payout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn partner_arithmetic_never_panics_on_huge_amounts(
        rate in 0u32..=100,
        ops in prop::collection::vec((0u64..40, op()), 1..16),
        bounds in prop::collection::vec((any_decimal(), 0u32..=100), 1..4),
        base in any_decimal(),
        weights in prop::collection::vec(any_decimal(), 1..4),
    ) {
        let usd = |amount: Decimal| Money::new(amount, Currency::USD);
        let plan = CommissionPlan::new(
            Decimal::from(rate), CommissionDuration::Lifetime, 7, usd(Decimal::ONE),
        ).unwrap();
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let mut ledger = ReferralLedger::new(PartnerId::from_u128(1), CustomerId::from_u128(1), start, plan);
        let mut day = start;
        for (n, (gap, op)) in ops.iter().enumerate() {
            day = day.checked_add_days(Days::new(*gap)).unwrap();
            let before = ledger.clone();
            let id = PaymentId::from_u128(n as u128 + 1);
            let result = no_panic("ledger", op, || match *op {
                Op::Pay(m) => ledger.record_payment(id, day, usd(m)).map(|_| ()),
                Op::Refund(m) => ledger.record_refund(id, day, usd(m)).map(|_| ()),
                Op::Payout(m) => ledger.record_payout(day, usd(m)).map(|_| ()),
            })?;
            if result.is_err() {
                prop_assert_eq!(&ledger, &before, "a refused {:?} changed the ledger", op);
            }
            no_panic("summary", op, || ledger.summary(day))?.ok();
        }
        let mut tiers: Vec<CommissionTier> = bounds
            .iter()
            .map(|(from, rate)| CommissionTier { from: from.abs(), rate_percent: Decimal::from(*rate) })
            .collect();
        tiers.sort_by_key(|t| t.from);
        tiers.dedup_by_key(|t| t.from);
        for mode in [TierMode::Marginal, TierMode::Retroactive] {
            if let Ok(table) = CommissionTiers::new(mode, tiers.clone()) {
                no_panic("commission", &(&table, base), || table.commission(usd(base)))?.ok();
            }
        }
        let shares: Vec<(PartnerId, Decimal)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (PartnerId::from_u128(i as u128 + 1), *w))
            .collect();
        no_panic("split_commission", &(base, &shares), || split_commission(usd(base), &shares))?.ok();
    }
}
