//! No arithmetic panic on caller amounts: partner ledgers, payment pricing (flat, tiered,
//! capped, split), tier tables and commission splits driven with amounts up to `Decimal::MAX`
//! return `Ok` or `Err`, never panic (issue 9).

// Test helpers may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use chrono::{Days, NaiveDate};
use dotmac_core::{Currency, CustomerId, Money, PaymentId};
use dotmac_partners::{
    CapPeriod, CollectedPayment, CommissionPlan, CommissionPlanId, CommissionTier, CommissionTiers,
    EntryKind, MasterOverride, PartnerId, PartnerLedger, PayoutId, RevenueTag, SourceId, Standing,
    TierBasis, TierMode, TierSchedule, price_payment, share_out, split_commission,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

use dotmac_testing::{any_decimal, cases, no_panic};

#[derive(Debug, Clone)]
enum Op {
    Pay(Decimal),
    Refund(Decimal),
    Payout(Decimal),
    Adjust(Decimal),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any_decimal().prop_map(Op::Pay),
        any_decimal().prop_map(Op::Refund),
        any_decimal().prop_map(Op::Payout),
        any_decimal().prop_map(Op::Adjust),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn partner_arithmetic_never_panics_on_huge_amounts(
        rate in 0u32..=100,
        tiered in any::<bool>(),
        cap in prop::option::of(any_decimal()),
        reward in prop::option::of(any_decimal()),
        override_percent in 0u32..=100,
        ops in prop::collection::vec((0u64..40, op()), 1..16),
        bounds in prop::collection::vec((any_decimal(), 0u32..=100), 1..4),
        base in any_decimal(),
        weights in prop::collection::vec(any_decimal(), 1..4),
    ) {
        let usd = |amount: Decimal| Money::new(amount, Currency::USD);
        let mut tiers: Vec<CommissionTier> = bounds
            .iter()
            .map(|(from, rate)| CommissionTier { from: from.abs(), rate_percent: Decimal::from(*rate) })
            .collect();
        tiers.sort_by_key(|t| t.from);
        tiers.dedup_by_key(|t| t.from);
        let mut builder = CommissionPlan::builder(CommissionPlanId::from_u128(1), "p", Currency::USD)
            .revenue_share(Decimal::from(rate))
            .hold_days(7)
            .min_payout(usd(Decimal::ONE));
        if tiered && let Ok(table) = CommissionTiers::new(TierMode::Marginal, tiers.clone()) {
            let names = (0..table.tiers().len()).map(|i| format!("t{i}")).collect();
            builder = builder.tiered(TierSchedule::new(TierBasis::LifetimeRevenue, table, names).unwrap());
        }
        if let Some(cap) = cap {
            builder = builder.cap(CapPeriod::Month, usd(cap.round_dp(2)));
        }
        if let Some(reward) = reward {
            builder = builder.activation_reward(usd(reward.round_dp(2)));
        }
        // A refused plan (a zero cap, a huge reward) is a correct answer; the flat plan is not.
        let plan = builder.build().or_else(|_| {
            CommissionPlan::builder(CommissionPlanId::from_u128(1), "p", Currency::USD)
                .revenue_share(Decimal::from(rate))
                .build()
        }).unwrap();
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let standing = Standing { referred_on: start, active_customers: 1, customer_rank: 1 };
        let customer = CustomerId::from_u128(1);
        let master = MasterOverride::new(PartnerId::from_u128(2), Decimal::from(override_percent)).unwrap();
        let mut ledger = PartnerLedger::new(PartnerId::from_u128(1), Currency::USD);
        let mut day = start;
        for (n, (gap, op)) in ops.iter().enumerate() {
            day = day.checked_add_days(Days::new(*gap)).unwrap();
            let before = ledger.clone();
            let id = PaymentId::from_u128(n as u128 + 1);
            let source = SourceId::from_u128(n as u128 + 1);
            let result = no_panic("ledger", op, || -> Result<(), dotmac_partners::PartnersError> {
                match *op {
                    Op::Pay(m) => {
                        let payment = CollectedPayment { customer, payment: id, amount: usd(m), on: day, tag: RevenueTag::default() };
                        let earnings = price_payment(&plan, &ledger, &standing, &payment)?;
                        let (own, _) = share_out(&earnings, customer, id, ledger.partner(), Some(master))?;
                        let mut next = ledger.clone();
                        for a in own {
                            next.append(day, source, EntryKind::Accrued(a))?;
                        }
                        ledger = next;
                    }
                    Op::Refund(m) => {
                        let mut next = ledger.clone();
                        for (payment, part) in ledger.refund_parts(customer, usd(m), None)? {
                            for c in next.clawbacks_for(payment, part, id)? {
                                next.append(day, source, EntryKind::ClawedBack(c))?;
                            }
                        }
                        ledger = next;
                    }
                    Op::Payout(m) => {
                        ledger.append(day, source, EntryKind::PaidOut { payout: PayoutId::from_u128(n as u128), run: None, amount: usd(m) })?;
                    }
                    Op::Adjust(m) => {
                        ledger.append(day, source, EntryKind::Adjusted { amount: usd(m), reason: "x".into() })?;
                    }
                }
                Ok(())
            })?;
            if result.is_err() {
                prop_assert_eq!(&ledger, &before, "a refused {:?} changed the ledger", op);
            }
            no_panic("summary", op, || ledger.summary(day, &plan))?.ok();
        }
        for mode in [TierMode::Marginal, TierMode::Retroactive] {
            if let Ok(table) = CommissionTiers::new(mode, tiers.clone()) {
                no_panic("commission", &(&table, base), || table.commission(usd(base)))?.ok();
                no_panic("increment", &(&table, base), || table.increment(base, base.abs()))?.ok();
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
