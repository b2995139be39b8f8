//! Revenue analytics: movements reconcile exactly with the MRR difference.

// Test helpers may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use chrono::{Days, NaiveDate};
use dotmac_billing::analytics::{RecurringItem, mrr_at, mrr_movements};
use dotmac_core::{BillingInterval, Currency, CustomerId, Money, PlanId, TenantId};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn interval(i: u8) -> BillingInterval {
    match i % 4 {
        0 => BillingInterval::MONTHLY,
        1 => BillingInterval::QUARTERLY,
        2 => BillingInterval::YEARLY,
        _ => BillingInterval::WEEKLY,
    }
}

proptest! {
    #[test]
    fn movements_reconcile_with_the_mrr_difference(
        raw in prop::collection::vec((0u128..8, 0u128..3, 1i64..100_000, 0u8..4, 0u64..120, prop::option::of(1u64..120)), 0..40),
    ) {
        let origin = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let items: Vec<RecurringItem> = raw
            .into_iter()
            .map(|(customer, plan, minor, i, from, length)| RecurringItem {
                tenant: TenantId::from_u128(customer % 2),
                customer: CustomerId::from_u128(customer),
                plan: PlanId::from_u128(plan),
                amount: Money::from_minor(minor, Currency::USD),
                interval: interval(i),
                active_from: origin + Days::new(from),
                active_until: length.map(|l| origin + Days::new(from + l)),
            })
            .collect();
        let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let april = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
        let m = mrr_movements(&items, march, april, Currency::USD).unwrap();
        prop_assert!(m.reconciles());
        let start = mrr_at(&items, march, Currency::USD).unwrap();
        let end = mrr_at(&items, april, Currency::USD).unwrap();
        prop_assert_eq!(m.start, start.total);
        prop_assert_eq!(m.end, end.total);
        let by_tenant: Decimal = end.by_tenant.values().map(|v| v.amount()).sum();
        let by_plan: Decimal = end.by_plan.values().map(|v| v.amount()).sum();
        prop_assert_eq!(by_tenant, end.total.amount());
        prop_assert_eq!(by_plan, end.total.amount());
        for amount in [m.new, m.reactivation, m.expansion, m.contraction, m.churn] {
            prop_assert!(!amount.is_negative());
        }
        if let Some(rate) = m.churn_rate() {
            prop_assert!(rate >= Decimal::ZERO && rate <= Decimal::ONE);
        }
    }
}
