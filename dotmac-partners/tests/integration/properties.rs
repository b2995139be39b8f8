//! Ledger invariants over random programmes and histories, through the service on the
//! in-memory store: a partner's balance is the sum of its entries; a full refund claws back
//! exactly what the payment earned (in every ledger it accrued in, a master's override
//! included); a sub-agent's part and its master's override sum to the whole.
// Test helpers outside #[test] functions: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Days, NaiveDate};
use dotmac_core::{Currency, CustomerId, FixedClock, Money, PaymentId, TenantId};
use dotmac_partners::{
    CapPeriod, CollectedPayment, CommissionDuration, CommissionPlan, CommissionPlanId,
    CommissionTier, CommissionTiers, Component, EntryKind, InMemoryPartnerStore, LedgerEntry,
    LedgerFact, MasterOverride, PartnerAccount, PartnerId, PartnerKind, PartnerStatus,
    PartnersService, PartnersSettings, PayoutId, RefundedPayment, RevenueTag, SourceId, TierBasis,
    TierMode, TierSchedule,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

use dotmac_testing::cases;

/// The memory store never waits: its futures are ready on the first poll.
fn block_on<F: Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the memory store waited"),
    }
}

type Service = PartnersService<InMemoryPartnerStore, FixedClock>;

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

#[derive(Debug, Clone)]
enum RateRule {
    Flat(u32),
    Example,
    Marginal(u32, u32),
}

#[derive(Debug, Clone)]
struct Programme {
    rate: RateRule,
    activation: Option<i64>,
    per_cycle: Option<i64>,
    months: Option<u32>,
    cap: Option<i64>,
    override_percent: Option<u32>,
}

fn programme() -> impl Strategy<Value = Programme> {
    let rate = prop_oneof![
        (0u32..=100).prop_map(RateRule::Flat),
        Just(RateRule::Example),
        (0u32..=30, 0u32..=30).prop_map(|(a, b)| RateRule::Marginal(a, b)),
    ];
    (
        rate,
        prop::option::of(1i64..5_000),
        prop::option::of(1i64..2_000),
        prop::option::of(1u32..6),
        prop::option::of(1i64..50_000),
        prop::option::of(0u32..=100),
    )
        .prop_map(
            |(rate, activation, per_cycle, months, cap, override_percent)| Programme {
                rate,
                activation,
                per_cycle,
                months,
                cap,
                override_percent,
            },
        )
}

fn plan(p: &Programme) -> CommissionPlan {
    let mut b = CommissionPlan::builder(CommissionPlanId::from_u128(1), "prop", Currency::USD);
    b = match p.rate {
        RateRule::Flat(r) => b.revenue_share(Decimal::from(r)),
        RateRule::Example => b.tiered(TierSchedule::example_programme()),
        RateRule::Marginal(low, high) => {
            let tier = |from: i64, rate: u32| CommissionTier {
                from: Decimal::from(from),
                rate_percent: Decimal::from(rate),
            };
            let table =
                CommissionTiers::new(TierMode::Marginal, vec![tier(0, low), tier(500, high)])
                    .unwrap();
            b.tiered(
                TierSchedule::new(
                    TierBasis::LifetimeRevenue,
                    table,
                    vec!["low".into(), "high".into()],
                )
                .unwrap(),
            )
        }
    };
    if let Some(a) = p.activation {
        b = b.activation_reward(usd(a));
    }
    if let Some(c) = p.per_cycle {
        b = b.per_cycle(usd(c));
    }
    if let Some(m) = p.months {
        b = b.duration(CommissionDuration::Months(m));
    }
    if let Some(cap) = p.cap {
        b = b.cap(CapPeriod::Month, usd(cap));
    }
    b.min_payout(usd(500)).build().unwrap()
}

const SUB: PartnerId = PartnerId::from_u128(0x5B);
const MASTER: PartnerId = PartnerId::from_u128(0x3A);

fn start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
}

fn customer(n: u8) -> CustomerId {
    CustomerId::from_u128(0xC0 + u128::from(n))
}

/// A tenant with `p`'s plan, an active sub-agent (under an active master agent when the
/// programme has an override) and three customers attributed to it.
fn setup(p: &Programme) -> (Service, TenantId) {
    let service = PartnersService::new(
        InMemoryPartnerStore::new(),
        FixedClock::new(DateTime::UNIX_EPOCH),
        PartnersSettings::default(),
    );
    let tenant = TenantId::from_u128(1);
    let plan = plan(p);
    block_on(service.save_plan(tenant, &plan)).unwrap();
    let open = |id, kind| PartnerAccount::apply(id, "prop", kind, plan.id(), start()).unwrap();
    let mut sub = open(SUB, PartnerKind::Referral);
    if let Some(percent) = p.override_percent {
        block_on(service.apply(tenant, open(MASTER, PartnerKind::MasterAgent))).unwrap();
        block_on(service.change_status(tenant, MASTER, PartnerStatus::Active, start())).unwrap();
        sub = sub
            .under(MasterOverride::new(MASTER, Decimal::from(percent)).unwrap())
            .unwrap();
    }
    block_on(service.apply(tenant, sub)).unwrap();
    block_on(service.change_status(tenant, SUB, PartnerStatus::Active, start())).unwrap();
    for n in 0..3 {
        block_on(service.assign(tenant, customer(n), SUB, start())).unwrap();
    }
    (service, tenant)
}

#[derive(Debug, Clone)]
enum Op {
    Pay {
        who: u8,
        cents: i64,
    },
    /// Refund `percent` % of the n-th payment (by its index among those made), named, or
    /// unnamed (most recent first) when `named` is false.
    Refund {
        nth: usize,
        percent: u32,
        named: bool,
    },
    Payout(i64),
    Adjust(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 1i64..200_000).prop_map(|(who, cents)| Op::Pay { who, cents }),
        3 => (0usize..8, prop_oneof![Just(100u32), 1u32..150], any::<bool>())
            .prop_map(|(nth, percent, named)| Op::Refund { nth, percent, named }),
        1 => (1i64..20_000).prop_map(Op::Payout),
        1 => (-5_000i64..5_000).prop_filter("not zero", |m| *m != 0).prop_map(Op::Adjust),
    ]
}

fn entries(service: &Service, tenant: TenantId, partner: PartnerId) -> Vec<LedgerEntry> {
    block_on(service.ledger(tenant, partner))
        .map(|l| l.entries().to_vec())
        .unwrap_or_default()
}

/// The commission `payment` accrued in a ledger, net of what was clawed back from it.
fn net_of(entries: &[LedgerEntry], payment: PaymentId) -> (Money, Money) {
    let mut accrued = usd(0);
    let mut clawed = usd(0);
    for e in entries {
        match &e.kind {
            EntryKind::Accrued(a) if a.payment == payment => {
                accrued = accrued.checked_add(a.commission).unwrap();
            }
            EntryKind::ClawedBack(c) if c.payment == payment => {
                clawed = clawed.checked_add(c.commission).unwrap();
            }
            _ => {}
        }
    }
    (accrued, clawed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn balances_are_their_entries_full_refunds_take_back_exactly_and_splits_sum(
        programme in programme(),
        ops in prop::collection::vec((0u64..12, op()), 1..30),
    ) {
        let (service, tenant) = setup(&programme);
        let partners: Vec<PartnerId> = if programme.override_percent.is_some() {
            vec![SUB, MASTER]
        } else {
            vec![SUB]
        };
        let mut day = start();
        let mut payments: Vec<(PaymentId, CustomerId, Money)> = Vec::new();
        for (n, (gap, op)) in ops.iter().enumerate() {
            day = day.checked_add_days(Days::new(*gap)).unwrap();
            let source = SourceId::from_u128(1_000 + n as u128);
            match *op {
                Op::Pay { who, cents } => {
                    let payment = CollectedPayment {
                        customer: customer(who),
                        payment: PaymentId::from_u128(10_000 + n as u128),
                        amount: usd(cents),
                        on: day,
                        tag: RevenueTag::default(),
                    };
                    let written = block_on(service.record_payment(tenant, source, payment)).unwrap();
                    payments.push((payment.payment, payment.customer, payment.amount));
                    // Splits: per component, the parts sum to the gross.
                    let mut by_component: HashMap<Component, (Money, Money)> = HashMap::new();
                    for (_, entry) in &written {
                        if let EntryKind::Accrued(a) = &entry.kind {
                            let slot = by_component.entry(a.component).or_insert((usd(0), a.gross));
                            slot.0 = slot.0.checked_add(a.commission).unwrap();
                            prop_assert_eq!(slot.1, a.gross);
                            prop_assert!(a.gross.amount() <= a.uncapped.amount());
                        }
                    }
                    for (component, (sum, gross)) in by_component {
                        prop_assert_eq!(sum, gross, "{:?} split", component);
                    }
                    // A replay accrues nothing.
                    prop_assert!(block_on(service.record_payment(tenant, source, payment)).unwrap().is_empty());
                }
                Op::Refund { nth, percent, named } => {
                    let Some(&(payment, who, amount)) = payments.get(nth % payments.len().max(1)) else {
                        continue;
                    };
                    let part = amount
                        .checked_mul(Decimal::from(percent) / Decimal::ONE_HUNDRED)
                        .unwrap()
                        .round(dotmac_core::RoundingMode::HalfUp)
                        .max(usd(1))
                        .unwrap();
                    // Nothing of the payment refunded yet (by a named or an unnamed refund).
                    let untouched = block_on(service.ledger(tenant, SUB))
                        .unwrap()
                        .refundable(payment)
                        .unwrap()
                        == amount;
                    let full_and_fresh = named && percent >= 100 && untouched;
                    let before: Vec<(Money, Money)> = partners
                        .iter()
                        .map(|p| net_of(&entries(&service, tenant, *p), payment))
                        .collect();
                    let refund = RefundedPayment {
                        customer: who,
                        refund: PaymentId::from_u128(20_000 + n as u128),
                        payment: named.then_some(payment),
                        amount: part,
                        on: day,
                    };
                    block_on(service.record_refund(tenant, source, refund)).unwrap();
                    if full_and_fresh {
                        for (p, (accrued, clawed_before)) in partners.iter().zip(before) {
                            prop_assert!(clawed_before.is_zero());
                            let (_, clawed) = net_of(&entries(&service, tenant, *p), payment);
                            prop_assert_eq!(clawed, accrued, "a full refund in {}'s ledger", p);
                        }
                    }
                    prop_assert!(block_on(service.record_refund(tenant, source, refund)).unwrap().is_empty());
                }
                Op::Payout(cents) => {
                    block_on(service.record_fact(tenant, source, SUB, day, LedgerFact::Payout {
                        payout: PayoutId::from_u128(n as u128),
                        amount: usd(cents),
                    })).unwrap();
                }
                Op::Adjust(cents) => {
                    block_on(service.record_fact(tenant, source, SUB, day, LedgerFact::Adjust {
                        amount: usd(cents),
                        reason: "prop".into(),
                    })).unwrap();
                }
            }
            for partner in &partners {
                let all = entries(&service, tenant, *partner);
                let far = day.checked_add_days(Days::new(400)).unwrap();
                let s = block_on(service.summary(tenant, *partner, far)).unwrap();
                let sum = Money::sum(
                    Currency::USD,
                    all.iter().map(|e| e.kind.balance_effect(Currency::USD)),
                )
                .unwrap();
                prop_assert_eq!(s.balance, sum);
                prop_assert_eq!(
                    s.balance,
                    s.earned.checked_sub(s.clawed_back).unwrap()
                        .checked_add(s.adjusted).unwrap()
                        .checked_sub(s.paid_out).unwrap()
                );
                prop_assert!(!s.payable.is_negative());
                prop_assert!(s.payable.amount() <= s.balance.amount().max(Decimal::ZERO));
                // No accrual is clawed back beyond what it earned.
                for entry in &all {
                    if let EntryKind::Accrued(a) = &entry.kind {
                        let taken = Money::sum(Currency::USD, all.iter().filter_map(|e| match &e.kind {
                            EntryKind::ClawedBack(c) if c.against == entry.seq => Some(c.commission),
                            _ => None,
                        })).unwrap();
                        prop_assert!(taken.amount() <= a.commission.amount());
                        prop_assert!(!taken.is_negative());
                    }
                }
            }
        }
    }
}
