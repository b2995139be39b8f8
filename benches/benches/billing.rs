//! dotmac-billing: pricing and the bill run.
//!
//! Targets (issue 3): a graduated 5-tier price under 100 ns; an in-memory bill run of 100,000
//! subscriptions (one recurring charge, one discount, one tax each) at 500,000 invoices/s or
//! more on one core. Peak memory (VmHWM) is printed after the bill-run benchmarks.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
// Through the facade, as an application uses it (the same code as `dotmac_billing`'s).
use dotmac::billing::{
    AppliedDiscount, BillingCommit, BillingError, BillingService, BillingSettings, BillingStore,
    CatalogStore, Charge, CommitResult, CreditNote, CustomerAccount, Discount, DiscountAmount,
    DiscountDuration, DiscountId, DocumentSettings, Invoice, InvoiceStatus, InvoiceStore,
    MemoryStore, NewSubscription, PendingCharge, Plan, PriceModel, Product, Subscription,
    SubscriptionStore, TaxRate, TaxRateId, Tier, Tiers, bill_due,
};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{
    Currency, CustomerId, FixedClock, InvoiceId, Money, PlanId, ProductId, SubscriptionId, TenantId,
};
use rust_decimal::Decimal;

const SUBSCRIPTIONS: usize = 100_000;

/// Drives a future that never waits (the in-memory store's futures complete at once).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

fn graduated_5() -> PriceModel {
    let tier = |up: Option<i64>, unit: i64, flat: i64| Tier {
        up_to: up.map(Decimal::from),
        unit_amount: Decimal::new(unit, 2),
        flat_amount: Decimal::from(flat),
    };
    PriceModel::Graduated {
        tiers: Tiers::new(vec![
            tier(Some(10), 1000, 2),
            tier(Some(50), 800, 0),
            tier(Some(100), 650, 0),
            tier(Some(500), 500, 3),
            tier(None, 400, 0),
        ])
        .unwrap(),
    }
}

fn pricing(c: &mut Criterion) {
    let model = graduated_5();
    let volume = match &model {
        PriceModel::Graduated { tiers } => PriceModel::Volume {
            tiers: tiers.clone(),
        },
        _ => unreachable!(),
    };
    let mut group = c.benchmark_group("pricing");
    group.bench_function("graduated_5_tiers_q737", |b| {
        b.iter(|| model.amount(black_box(Decimal::from(737))))
    });
    group.bench_function("graduated_5_tiers_q7", |b| {
        b.iter(|| model.amount(black_box(Decimal::from(7))))
    });
    group.bench_function("volume_5_tiers_q737", |b| {
        b.iter(|| volume.amount(black_box(Decimal::from(737))))
    });
    group.finish();
}

fn plan() -> Plan {
    Plan::builder(PlanId::from_u128(1), ProductId::from_u128(1), "Fibre 100")
        .charge(Charge::recurring_flat([Money::from_minor(
            2999,
            Currency::USD,
        )]))
        .build(d(2026, 1, 1))
        .unwrap()
}

fn discount() -> Discount {
    Discount {
        id: DiscountId::from_u128(1),
        amount: DiscountAmount::Percentage(Decimal::from(10)),
        duration: DiscountDuration::Forever,
    }
}

fn vat() -> TaxRate {
    TaxRate::exclusive(TaxRateId::from_u128(1), "VAT", Decimal::new(75, 1))
}

fn subscriptions(plan: &Plan) -> Vec<Subscription> {
    (0..SUBSCRIPTIONS)
        .map(|i| {
            let sub = NewSubscription::new(
                CustomerId::from_u128(i as u128 + 1),
                plan.id,
                Currency::USD,
                d(2026, 3, 1),
            )
            .id(SubscriptionId::from_u128(i as u128 + 1))
            .anchor(d(2026, 1, 1))
            .create(plan, Currency::USD)
            .unwrap();
            // Already billed through March: the run bills April only. Set through the store
            // plumbing (as a store restores a row) rather than billing January to March first.
            let mut parts = dotmac::billing::internal::subscription_into_parts(sub);
            parts.next_period = 3;
            parts.setup_billed = true;
            parts.discounts.push(AppliedDiscount::new(discount()));
            dotmac::billing::internal::subscription_from_parts(parts)
        })
        .collect()
}

/// The in-memory store without its batch methods: the trait defaults (one `commit` per
/// subscription, one `account` and one `pending_charges` call per customer), i.e. the bill
/// run as it was before batch commits, measured in the same run for comparison.
struct PerCommitStore(MemoryStore);

impl CatalogStore for PerCommitStore {
    async fn put_product(&self, t: TenantId, p: Product) -> Result<(), BillingError> {
        self.0.put_product(t, p).await
    }
    async fn put_plan(
        &self,
        t: TenantId,
        p: Plan,
        e: Vec<OutboxEvent>,
    ) -> Result<(), BillingError> {
        self.0.put_plan(t, p, e).await
    }
    async fn plan(&self, t: TenantId, id: PlanId) -> Result<Option<Plan>, BillingError> {
        self.0.plan(t, id).await
    }
    async fn plans(&self, t: TenantId) -> Result<Vec<Plan>, BillingError> {
        self.0.plans(t).await
    }
}

impl SubscriptionStore for PerCommitStore {
    async fn put_account(&self, t: TenantId, a: CustomerAccount) -> Result<(), BillingError> {
        self.0.put_account(t, a).await
    }
    async fn account(
        &self,
        t: TenantId,
        c: CustomerId,
    ) -> Result<Option<CustomerAccount>, BillingError> {
        self.0.account(t, c).await
    }
    async fn insert_subscription(
        &self,
        t: TenantId,
        s: Subscription,
        e: Vec<OutboxEvent>,
    ) -> Result<(), BillingError> {
        self.0.insert_subscription(t, s, e).await
    }
    async fn subscription(
        &self,
        t: TenantId,
        id: SubscriptionId,
    ) -> Result<Option<Subscription>, BillingError> {
        self.0.subscription(t, id).await
    }
    async fn subscriptions_page(
        &self,
        t: TenantId,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BillingError> {
        self.0.subscriptions_page(t, after, limit).await
    }
    async fn subscriptions_of(
        &self,
        t: TenantId,
        c: CustomerId,
    ) -> Result<Vec<Subscription>, BillingError> {
        self.0.subscriptions_of(t, c).await
    }
}

impl InvoiceStore for PerCommitStore {
    async fn add_pending_charge(
        &self,
        t: TenantId,
        c: PendingCharge,
        e: Vec<OutboxEvent>,
    ) -> Result<bool, BillingError> {
        self.0.add_pending_charge(t, c, e).await
    }
    async fn pending_charges(
        &self,
        t: TenantId,
        c: CustomerId,
    ) -> Result<Vec<PendingCharge>, BillingError> {
        self.0.pending_charges(t, c).await
    }
    async fn commit(&self, t: TenantId, c: BillingCommit) -> Result<CommitResult, BillingError> {
        self.0.commit(t, c).await
    }
    async fn invoice(&self, t: TenantId, id: InvoiceId) -> Result<Option<Invoice>, BillingError> {
        self.0.invoice(t, id).await
    }
    async fn invoices_of(&self, t: TenantId, c: CustomerId) -> Result<Vec<Invoice>, BillingError> {
        self.0.invoices_of(t, c).await
    }
    async fn set_invoice_status(
        &self,
        t: TenantId,
        id: InvoiceId,
        to: InvoiceStatus,
        e: Vec<OutboxEvent>,
    ) -> Result<Invoice, BillingError> {
        self.0.set_invoice_status(t, id, to, e).await
    }
    async fn update_invoice(
        &self,
        t: TenantId,
        expected: Invoice,
        updated: Invoice,
        e: Vec<OutboxEvent>,
    ) -> Result<Invoice, BillingError> {
        self.0.update_invoice(t, expected, updated, e).await
    }
    async fn insert_credit_note(
        &self,
        t: TenantId,
        n: CreditNote,
        e: Vec<OutboxEvent>,
    ) -> Result<CreditNote, BillingError> {
        self.0.insert_credit_note(t, n, e).await
    }
    async fn credit_notes_of(
        &self,
        t: TenantId,
        id: InvoiceId,
    ) -> Result<Vec<CreditNote>, BillingError> {
        self.0.credit_notes_of(t, id).await
    }
}

fn service_over<S: BillingStore>(
    store: S,
    plan: &Plan,
    subs: &[Subscription],
) -> (BillingService<S, FixedClock>, TenantId) {
    let tenant = TenantId::from_u128(1);
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 4, 1, 2, 0, 0).unwrap());
    let service = BillingService::new(
        store,
        clock,
        BillingSettings::default().with_taxes(vec![vat()]),
    );
    block_on(async {
        service
            .add_product(
                tenant,
                Product {
                    id: ProductId::from_u128(1),
                    name: "Broadband".into(),
                },
            )
            .await
            .unwrap();
        service.save_plan(tenant, plan.clone()).await.unwrap();
        for sub in subs {
            service
                .store()
                .insert_subscription(tenant, sub.clone(), Vec::new())
                .await
                .unwrap();
        }
    });
    (service, tenant)
}

/// The process's minor page faults so far (`/proc/self/stat`, field 10).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_owned();
            after.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The documents' settings of the bill-run benches: VAT on everything.
fn document_settings() -> DocumentSettings {
    DocumentSettings {
        taxes: vec![vat()],
        ..DocumentSettings::default()
    }
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bill_run(c: &mut Criterion) {
    let plan = plan();
    let subs = subscriptions(&plan);
    let settings = document_settings();
    let as_of = d(2026, 4, 1);
    let mut group = c.benchmark_group("bill_run");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SUBSCRIPTIONS as u64));
    // The pure domain: every subscription's documents and new state, nothing stored.
    group.bench_function("domain_100k", |b| {
        b.iter(|| {
            let mut invoices = 0usize;
            for sub in &subs {
                let out = bill_due(sub, &plan, &[], as_of, &settings).unwrap();
                invoices += out.invoices.len();
                black_box(out);
            }
            assert_eq!(invoices, SUBSCRIPTIONS);
        })
    });
    // The pure domain keeping what it made: every subscription's documents and new state held
    // until the end (dropped outside the timing), as any store that keeps them must. The
    // service's physical limit; `domain_100k` frees each result at once and so reuses the same
    // few cache lines.
    group.bench_function("domain_100k_kept", |b| {
        b.iter_batched(
            || Vec::with_capacity(SUBSCRIPTIONS),
            |mut kept| {
                for sub in &subs {
                    kept.push(bill_due(sub, &plan, &[], as_of, &settings).unwrap());
                }
                assert_eq!(kept.len(), SUBSCRIPTIONS);
                kept
            },
            BatchSize::PerIteration,
        )
    });
    // The whole service over the in-memory store: pages of 1,000, each page's accounts and
    // pending charges read in one call and its commits applied in one `commit_batch` (every
    // invoice numbered and stored, every subscription updated), events returned.
    group.bench_function("service_memory_100k", |b| {
        b.iter_batched(
            || service_over(MemoryStore::new(), &plan, &subs),
            |(service, tenant)| {
                let summary = block_on(service.run_bill(tenant, as_of)).unwrap();
                assert_eq!(summary.invoices, SUBSCRIPTIONS);
                (service, summary)
            },
            BatchSize::PerIteration,
        )
    });
    // The same over the trait defaults: one commit per subscription (the path before batches).
    group.bench_function("service_memory_100k_per_commit", |b| {
        b.iter_batched(
            || service_over(PerCommitStore(MemoryStore::new()), &plan, &subs),
            |(service, tenant)| {
                let summary = block_on(service.run_bill(tenant, as_of)).unwrap();
                assert_eq!(summary.invoices, SUBSCRIPTIONS);
                (service, summary)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    // One timed run outside criterion, for the invoices/s figure and peak memory.
    let start = Instant::now();
    let mut n = 0;
    for sub in &subs {
        n += bill_due(sub, &plan, &[], as_of, &settings)
            .unwrap()
            .invoices
            .len();
    }
    let took = start.elapsed().max(Duration::from_nanos(1));
    let per_second = (n as u128 * 1_000_000_000) / took.as_nanos().max(1);
    println!(
        "bill_run/domain_100k single pass: {n} invoices in {took:?} = {per_second} invoices/s"
    );
    if let Some(kib) = peak_memory_kib() {
        println!("peak memory (VmHWM) after bill-run benchmarks: {kib} KiB");
    }
}

/// `run_bill` over `store` once, through `run_once`, its setup and the drop outside it.
fn service_once<S: BillingStore>(
    store: S,
    plan: &Plan,
    subs: &[Subscription],
    as_of: NaiveDate,
    run_once: &dyn Fn(&mut dyn FnMut() -> usize) -> usize,
) -> usize {
    let (service, tenant) = service_over(store, plan, subs);
    let mut summary = None;
    run_once(&mut || {
        let s = block_on(service.run_bill(tenant, as_of)).unwrap();
        let n = s.invoices;
        summary = Some(s);
        n
    });
    black_box((service, summary)).1.map_or(0, |s| s.invoices)
}

/// One pass of one bill-run bench outside criterion, for a profiler (`perf record`,
/// `valgrind --tool=callgrind --toggle-collect='*run_once*'`): `DOTMAC_BENCH_ONCE=domain`,
/// `kept`, `service` or `per_commit` runs that bench's routine once (its setup outside the
/// function named `run_once`) and exits.
fn bill_run_once(which: &str) {
    #[inline(never)]
    fn run_once(f: &mut dyn FnMut() -> usize) -> usize {
        f()
    }
    let plan = plan();
    let subs = subscriptions(&plan);
    let settings = document_settings();
    let as_of = d(2026, 4, 1);
    let took = std::cell::Cell::new(Duration::ZERO);
    let faults = std::cell::Cell::new(0);
    let run_once = |f: &mut dyn FnMut() -> usize| -> usize {
        let before = minor_faults();
        let start = Instant::now();
        let n = run_once(f);
        took.set(start.elapsed());
        faults.set(minor_faults().saturating_sub(before));
        n
    };
    // As criterion runs them: setup, the routine, then the drop, each pass afresh.
    let passes: usize = std::env::var("DOTMAC_BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    for _ in 0..passes {
        let n = match which {
            "domain" => run_once(&mut || {
                let mut n = 0;
                for sub in &subs {
                    let out = bill_due(sub, &plan, &[], as_of, &settings).unwrap();
                    n += out.invoices.len();
                    black_box(out);
                }
                n
            }),
            "kept" => {
                let mut kept = Vec::with_capacity(SUBSCRIPTIONS);
                let n = run_once(&mut || {
                    for sub in &subs {
                        kept.push(bill_due(sub, &plan, &[], as_of, &settings).unwrap());
                    }
                    kept.len()
                });
                black_box(kept);
                n
            }
            "service" => service_once(MemoryStore::new(), &plan, &subs, as_of, &run_once),
            "per_commit" => service_once(
                PerCommitStore(MemoryStore::new()),
                &plan,
                &subs,
                as_of,
                &run_once,
            ),
            other => {
                eprintln!("DOTMAC_BENCH_ONCE={other}: domain, kept, service or per_commit");
                return;
            }
        };
        println!(
            "{which}: {n} invoices in {:?}, {} page faults",
            took.get(),
            faults.get()
        );
    }
}

criterion_group!(benches, pricing, bill_run);

fn main() {
    if let Ok(which) = std::env::var("DOTMAC_BENCH_ONCE") {
        bill_run_once(&which);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
