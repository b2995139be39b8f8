//! The ISP quickstart: one month of an ISP's billing, end to end, on embedded SQLite (or on
//! PostgreSQL with `--database-url postgres://…`).
//!
//! It creates a tenant, a catalogue of fibre plans with data allowances and overage, N
//! customers (10,000 by default), their subscriptions (most on the 1st, some joining mid-month
//! and deferred to the next bill day), the October bill run, a month of generated daily traffic,
//! upgrades, downgrades and cancellations, the November bill run (with usage overage and
//! prorations), payments for most customers, and collections for the rest (reminders, overdue
//! notices, late fees, suspensions, and restores for the few who pay late). It prints a summary
//! with invoices, revenue, MRR movements, suspended accounts and timings.
//!
//! Its tenant comes from dotmac-tenancy: on the smallest platform plan that admits the run, with
//! the quickstart's settings (which every service then reads back) and its customers counted
//! against the plan's quota (`setup_tenant`).
//!
//! ```sh
//! cargo run --release --example isp_quickstart
//! cargo run --release --example isp_quickstart -- --customers 2000
//! cargo run --release --example isp_quickstart -- --database-url postgres://postgres@127.0.0.1:5432/test
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use dotmac::billing::analytics::{mrr_at, mrr_movements, recurring_items};
use dotmac::billing::usage_billing::UsageBillingSettings;
use dotmac::billing::usage_billing::allowance::AllowancePolicy;
use dotmac::billing::{
    BillingSettings, CancelTiming, ChangeTiming, Charge, CurrencyPrice, FirstPeriod, InvoiceStatus,
    LineKind, NewSubscription, Plan, PriceModel, Product, ProrationBehavior, SubscriptionChange,
    SubscriptionStatus, SubscriptionStore,
};
use dotmac::collections::{
    AllocationTarget, CollectionAction, CollectionEvent, CollectionsSettings, CustomerLedger,
    DunningPolicy, PaymentStore, RestoreOnPayment, StepName, receivables_ageing,
};
use dotmac::outbox::OutboxStore;
use dotmac::reactions::invoice_status_of;
use dotmac::usage::{Aggregation, Meter, UsageEvent, UsageStore};
use dotmac::{
    BillingInterval, Collections, Currency, CustomerAccount, CustomerId, Dotmac, IdDigest,
    InvoiceId, ManualClock, MeterId, Money, PaymentId, PlanId, ProductId, SharedClock,
    SubscriptionId, TenantId, UsageEventId,
};
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;

type AnyError = Box<dyn Error + Send + Sync>;

/// What the command line asks for.
struct Options {
    database_url: String,
    customers: usize,
}

fn parse_options() -> Result<Options, AnyError> {
    let mut options = Options {
        database_url: String::new(),
        customers: 10_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database-url" => {
                options.database_url = args.next().ok_or("--database-url needs a URL")?;
            }
            "--customers" => {
                let n = args.next().ok_or("--customers needs a number")?;
                options.customers = n.parse().map_err(|_| format!("bad --customers {n:?}"))?;
                if options.customers == 0 {
                    return Err("--customers must be at least 1".into());
                }
            }
            "-h" | "--help" => {
                println!(
                    "isp_quickstart [--customers N] [--database-url sqlite://FILE | postgres://…]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if options.database_url.is_empty() {
        // A fresh embedded database file for every run: no set-up, nothing left over.
        let path = std::env::temp_dir().join("dotmac-quickstart.sqlite");
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
        options.database_url = format!("sqlite://{}?mode=rwc", path.display());
    }
    Ok(options)
}

/// One fibre plan of the catalogue.
struct FibrePlan {
    name: &'static str,
    monthly: Decimal,
    included_gb: i64,
    overage_per_gb: Decimal,
}

const PLANS: [FibrePlan; 3] = [
    FibrePlan {
        name: "Fibre 100",
        monthly: Decimal::from_parts(2999, 0, 0, false, 2),
        included_gb: 200,
        overage_per_gb: Decimal::from_parts(50, 0, 0, false, 2),
    },
    FibrePlan {
        name: "Fibre 300",
        monthly: Decimal::from_parts(4999, 0, 0, false, 2),
        included_gb: 500,
        overage_per_gb: Decimal::from_parts(40, 0, 0, false, 2),
    },
    FibrePlan {
        name: "Fibre 1000",
        monthly: Decimal::from_parts(7999, 0, 0, false, 2),
        included_gb: 1000,
        overage_per_gb: Decimal::from_parts(25, 0, 0, false, 2),
    },
];

const DOWNLOAD_METER: &str = "download_gb";

fn date(y: i32, m: u32, d: u32) -> Result<NaiveDate, AnyError> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| format!("bad date {y}-{m}-{d}").into())
}

/// The first customer id and subscription id of the generated customers.
const CUSTOMER_IDS: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0000;
const SUBSCRIPTION_IDS: u128 = 0x0190_0000_0000_7000_9000_0000_0000_0000;

/// A deterministic pseudo-random stream (no RNG dependency, same numbers every run).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(
        "{msg:>14} [{bar:40}] {pos:>7}/{len:7} {per_sec:>12} {elapsed_precise}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// Wall-clock time of each step, for the summary.
#[derive(Default)]
struct Timings(Vec<(&'static str, Duration, usize)>);

impl Timings {
    fn record(&mut self, step: &'static str, started: Instant, items: usize) {
        self.0.push((step, started.elapsed(), items));
    }
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let options = parse_options()?;
    let started = Instant::now();
    let mut timings = Timings::default();
    let usd = Currency::USD;
    let zone: Tz = chrono_tz::UTC;

    println!("DotMac ISP quickstart: {} customers", options.customers);
    let clock = std::sync::Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 9, 20, 9, 0, 0)
            .single()
            .ok_or("bad start instant")?,
    ));

    // The catalogue: three fibre speeds, each with a monthly fee and a data allowance whose
    // overage is priced per GB (a graduated usage charge: the allowance is a free first tier).
    let product = Product {
        id: ProductId::from_u128(1),
        name: "Fibre broadband".into(),
    };
    let first_day = date(2026, 1, 1)?;
    let mut plans = Vec::new();
    let meter = Meter {
        id: MeterId::from_u128(1),
        code: DOWNLOAD_METER.into(),
        aggregation: Aggregation::Sum,
    };
    let mut usage_settings = UsageBillingSettings::new(zone, vec![meter.clone()]);
    for (n, fibre) in PLANS.iter().enumerate() {
        let overage = PriceModel::PerUnit {
            unit_amount: fibre.overage_per_gb,
        };
        let plan = Plan::builder(PlanId::from_u128(100 + n as u128), product.id, fibre.name)
            .interval(BillingInterval::MONTHLY)
            .charge(Charge::recurring_flat([Money::new(fibre.monthly, usd)]))
            .charge(Charge::usage(
                meter.id,
                vec![CurrencyPrice {
                    currency: usd,
                    model: overage.clone(),
                }],
            ))
            .build(first_day)?;
        // The data allowance: included GB per month, overage above it, notices at 80 and 100 %.
        usage_settings = usage_settings.allowance(
            plan.id,
            AllowancePolicy::new(
                meter.id,
                Decimal::from(fibre.included_gb),
                usd,
                Some(overage),
                &[80, 100],
            )?,
        );
        plans.push(plan);
    }

    // Collections: reminder 3 days before the due date, overdue notice the day after, a late
    // fee after 5 days, suspension after 7 (never on a weekend), write-off after 75; service is
    // restored on payment with a reconnection fee on the next invoice.
    let policy = DunningPolicy::builder(usd)
        .step(-3, "reminder")
        .step(1, "overdue_notice")
        .late_fee(5, "late_fee", Money::new(Decimal::from(5), usd))
        .step(7, "suspend")
        .step(75, "write_off")
        .no_suspension_on(Weekday::Sat)
        .no_suspension_on(Weekday::Sun)
        .restore_on_payment(RestoreOnPayment::Restore {
            reconnection_fee: Some(Money::new(Decimal::from(25), usd)),
        })
        .build()?;

    // Every service over one database and one clock.
    let step = Instant::now();
    let dotmac = Dotmac::builder(&options.database_url)
        .shared_clock(clock.clone() as SharedClock)
        .billing(
            BillingSettings::default()
                .with_payment_terms_days(14)
                .with_chunk_size(1000)
                .with_zone(zone),
        )
        .usage(usage_settings)
        .collections(CollectionsSettings::new(policy).with_zone(zone))
        .connect()
        .await?;
    println!(
        "  database: {:?} ({})",
        dotmac.database().kind(),
        redact(&options.database_url)
    );
    let (dotmac, tenant) = setup_tenant(dotmac, options.customers).await?;
    let billing = dotmac.billing();
    let collections = dotmac.collections();
    let store = dotmac.store();
    timings.record("connect + migrate", step, 1);

    let step = Instant::now();
    for plan in &plans {
        dotmac
            .publish_plan(tenant, product.clone(), plan.clone())
            .await?;
    }
    timings.record("catalogue", step, plans.len());

    // Customers and subscriptions: nine in ten start on October 1st; the rest join during
    // October and are deferred to the November bill day (billed the partial month then).
    let step = Instant::now();
    let mut mix = Mix(2026);
    let october = date(2026, 10, 1)?;
    let november = date(2026, 11, 1)?;
    let progress = bar(options.customers, "customers");
    let mut subscriptions: Vec<(CustomerId, SubscriptionId, usize)> =
        Vec::with_capacity(options.customers);
    let mut starts = Vec::with_capacity(options.customers);
    for n in 0..options.customers {
        // Fixed ids (under a fresh tenant): chunks and pages follow id order, so the same
        // ids give the same run, figure for figure, every time.
        let n = n as u128;
        let customer = CustomerId::from_u128(CUSTOMER_IDS + n);
        billing
            .save_account(tenant, CustomerAccount::new(customer, usd))
            .await?;
        let tier = match mix.below(100) {
            0..=54 => 0,
            55..=89 => 1,
            _ => 2,
        };
        let start = if mix.below(10) == 0 {
            october + chrono::Days::new(1 + mix.below(29))
        } else {
            october
        };
        let (sub, _) = billing
            .subscribe(
                tenant,
                NewSubscription::new(customer, plans[tier].id, usd, start)
                    .id(SubscriptionId::from_u128(SUBSCRIPTION_IDS + n))
                    .anchor(first_day)
                    .first_period(FirstPeriod::Defer),
            )
            .await?;
        subscriptions.push((customer, sub.id, tier));
        starts.push(start);
        progress.inc(1);
    }
    progress.finish();
    timings.record("customers", step, options.customers);
    let referred: Vec<CustomerId> = subscriptions.iter().map(|(c, _, _)| *c).collect();
    partner_programme::enrol(&dotmac, tenant, &referred, plans[2].id).await?;

    // The October bill run.
    clock.set(at(october, 2)?);
    let step = Instant::now();
    let october_run = billing.run_bill(tenant, october).await?;
    timings.record("bill run Oct 1", step, october_run.invoices);
    // The invoices reach the customers' ledgers through the outbox.
    let step = Instant::now();
    let handled = dotmac.dispatch().await?;
    timings.record("dispatch Oct 1", step, handled.handled as usize);

    // Everybody pays October within ten days.
    clock.set(at(date(2026, 10, 10)?, 12)?);
    let step = Instant::now();
    let paid = pay_open_invoices(collections, tenant, &subscriptions, |_| {
        Some(Paying::Exactly)
    })
    .await?;
    dotmac.dispatch().await?;
    timings.record("payments Oct", step, paid);

    // A month of traffic: one usage record per customer per day (a RADIUS feed normalised
    // upstream), some heavy users over their allowance, and a replayed batch that must count
    // once.
    let step = Instant::now();
    let days = 31;
    let progress = bar(options.customers * days, "usage events");
    let mut events = Vec::with_capacity(options.customers);
    let mut ingested = 0usize;
    for day in 0..days {
        let on = october + chrono::Days::new(day as u64);
        events.clear();
        for (i, (customer, sub, tier)) in subscriptions.iter().enumerate() {
            // Most households stay inside their allowance; one in eight streams enough to
            // pay overage.
            let heavy = i % 8 == 0;
            let base = [3u64, 8, 16][*tier];
            let gb = base + mix.below(base) + if heavy { base + mix.below(base) } else { 0 };
            let timestamp = at(on, 3 + (i % 20) as u32)?;
            events.push(UsageEvent {
                id: UsageEventId::from_u128(((i as u128) << 32) | day as u128),
                customer: *customer,
                subscription: Some(*sub),
                meter: meter.id,
                quantity: Decimal::from(gb),
                timestamp,
                properties: BTreeMap::new(),
            });
        }
        for batch in events.chunks(5_000) {
            let fresh = store.append_events(tenant, batch).await?;
            ingested += fresh.iter().filter(|new| **new).count();
        }
        progress.inc(events.len() as u64);
    }
    // The NAS resends the last day: nothing is counted twice.
    let replayed = store.append_events(tenant, &events).await?;
    let replay_counted = replayed.iter().filter(|new| **new).count();
    progress.finish();
    timings.record("usage ingest", step, ingested);

    // Mid-October changes: upgrades and downgrades prorated onto the next invoice, and
    // cancellations at the end of the period.
    let step = Instant::now();
    let change_day = date(2026, 10, 16)?;
    clock.set(at(change_day, 10)?);
    let (mut upgrades, mut downgrades, mut cancellations) = (0, 0, 0);
    for (i, (_, sub, tier)) in subscriptions.iter_mut().enumerate() {
        if starts[i] > change_day {
            continue;
        }
        match i % 50 {
            7 | 19 if *tier < 2 => {
                *tier += 1;
                upgrades += 1;
            }
            23 if *tier > 0 => {
                *tier -= 1;
                downgrades += 1;
            }
            31 => {
                billing
                    .cancel_subscription(
                        tenant,
                        *sub,
                        change_day,
                        CancelTiming::EndOfPeriod,
                        ProrationBehavior::None,
                    )
                    .await?;
                cancellations += 1;
                continue;
            }
            _ => continue,
        }
        billing
            .change_subscription(
                tenant,
                *sub,
                SubscriptionChange::Plan {
                    plan: plans[*tier].id,
                    version: None,
                },
                change_day,
                ChangeTiming::Immediate,
                ProrationBehavior::NextInvoice,
            )
            .await?;
    }
    timings.record("plan changes", step, upgrades + downgrades + cancellations);

    // Close October's usage: rate each subscription's traffic against its plan's allowance
    // and put the overage on the November invoice.
    clock.set(at(november, 1)?);
    let step = Instant::now();
    let usage_billing = dotmac.usage();
    let rated = usage_billing.rate_due(tenant, november).await?;
    let overage_total = Money::sum(
        usd,
        rated
            .added
            .iter()
            .map(|c| c.unit_price.checked_mul(c.quantity))
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    timings.record("usage rating", step, rated.rated.len());

    // The November bill run: November fees, deferred partial Octobers, October overage and
    // the prorations of the mid-month changes.
    clock.set(at(november, 2)?);
    let step = Instant::now();
    let progress = bar(subscriptions.len(), "bill run");
    let run = billing.run_bill(tenant, november).await?;
    progress.set_position(run.subscriptions as u64);
    progress.finish();
    timings.record("bill run Nov 1", step, run.invoices);
    let again = billing.run_bill(tenant, november).await?;
    dotmac.dispatch().await?;

    // Most customers pay within a week; about one in twelve does not, and one in twenty rounds
    // the payment up (the excess is credit for December).
    clock.set(at(date(2026, 11, 8)?, 12)?);
    let step = Instant::now();
    let payers = |i: usize| i % 12 != 5;
    let paid = pay_open_invoices(collections, tenant, &subscriptions, |i| {
        match (payers(i), i % 20 == 3) {
            (false, _) => None,
            (true, false) => Some(Paying::Exactly),
            (true, true) => Some(Paying::RoundedUp),
        }
    })
    .await?;
    dotmac.dispatch().await?;
    timings.record("payments Nov", step, paid);

    // Collections for the rest, day by day until the end of November.
    let step = Instant::now();
    let mut actions: BTreeMap<StepName, usize> = BTreeMap::new();
    // Ordered, so that "the first two suspended" are the same customers every run.
    let mut suspended: BTreeMap<CustomerId, NaiveDate> = BTreeMap::new();
    let debtors: Vec<CustomerId> = subscriptions
        .iter()
        .enumerate()
        .filter(|(i, _)| !payers(*i))
        .map(|(_, (c, _, _))| *c)
        .collect();
    let progress = bar(debtors.len() * 22, "collections");
    let mut day = date(2026, 11, 9)?;
    let last = date(2026, 11, 30)?;
    while day <= last {
        clock.set(at(day, 6)?);
        for customer in &debtors {
            for event in collections.evaluate(tenant, *customer).await? {
                if let CollectionEvent::Action(fired) = &event.payload {
                    *actions.entry(fired.name).or_default() += 1;
                    if fired.action == CollectionAction::Suspend {
                        suspended.insert(*customer, day);
                    }
                }
            }
            progress.inc(1);
        }
        // Fees become pending charges, suspensions reach the subscriptions.
        dotmac.dispatch().await?;
        // Two of the suspended customers pay on the 25th and are restored the same day.
        if day == date(2026, 11, 25)? {
            let late: Vec<CustomerId> = suspended.keys().copied().take(2).collect();
            for customer in late {
                for event in pay_customer(collections, tenant, customer, Paying::Exactly).await? {
                    if let CollectionEvent::Action(fired) = &event.payload {
                        *actions.entry(fired.name).or_default() += 1;
                        if fired.action == CollectionAction::Restore {
                            suspended.remove(&customer);
                        }
                    }
                }
            }
        }
        dotmac.dispatch().await?;
        day = day.succ_opt().ok_or("date overflow")?;
    }
    progress.finish();
    timings.record("collections", step, debtors.len());

    // The December bill run: the fees and customer credit of November go on the invoices.
    let december = date(2026, 12, 1)?;
    clock.set(at(december, 2)?);
    let step = Instant::now();
    let december_run = billing.run_bill(tenant, december).await?;
    dotmac.dispatch().await?;
    timings.record("bill run Dec 1", step, december_run.invoices);
    partner_programme::print_statements(&dotmac, tenant).await?;
    print_platform_usage(
        &dotmac,
        date(2026, 9, 1)?,
        december.succ_opt().ok_or("date")?,
    )
    .await?;

    // The summary.
    let step = Instant::now();
    let mut subs = Vec::with_capacity(subscriptions.len());
    let mut cursor = None;
    loop {
        let page = billing
            .store()
            .subscriptions_page(tenant, cursor, 1_000)
            .await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        subs.extend(page);
    }
    let items = recurring_items(tenant, &subs, &plans)?;
    let mrr_oct = mrr_at(&items, october, usd)?;
    let mrr_nov = mrr_at(&items, november, usd)?;
    let movements = mrr_movements(&items, october, november, usd)?;
    let mut ledgers = Vec::with_capacity(subscriptions.len());
    for (customer, _, _) in &subscriptions {
        let entries = store.entries(tenant, *customer).await?;
        ledgers.push(CustomerLedger::from_entries(*customer, usd, entries)?);
    }
    let ageing = receivables_ageing(&ledgers, date(2026, 11, 30)?, usd)?;
    timings.record("analytics", step, items.len());

    // What the database holds, read back: every invoice by status, the fee lines billed, the
    // customer credit applied, the subscriptions' states and the outbox.
    let books = read_books(&dotmac, tenant, &subscriptions, &ledgers).await?;
    // MRR on December 1st of the subscriptions suspended now: none may count.
    let suspended_customers: std::collections::BTreeSet<CustomerId> = subs
        .iter()
        .filter(|s| s.status() == SubscriptionStatus::Suspended)
        .map(|s| s.customer)
        .collect();
    let suspended_items: Vec<_> = items
        .iter()
        .filter(|item| suspended_customers.contains(&item.customer))
        .cloned()
        .collect();
    let suspended_mrr = mrr_at(&suspended_items, december, usd)?.total;
    let outbox = dotmac.store().outbox_counts(tenant).await?;
    let outbox_messages = dotmac.store().outbox_messages(tenant).await?;
    let published = |kind: &str| {
        outbox_messages
            .iter()
            .filter(|m| m.event_type == kind)
            .count()
    };
    let invoices = books.invoices;
    let invoiced = books.invoiced;
    println!();
    println!("Summary (tenant {tenant})");
    println!("  customers            {}", options.customers);
    println!(
        "  usage events         {ingested} counted, {replay_counted} of {} replayed counted again",
        events.len()
    );
    println!(
        "  usage rated          {} subscription-periods, {} overage charges ({overage_total})",
        rated.rated.len(),
        rated
            .added
            .iter()
            .filter(|c| c.unit_price.is_positive() && !c.quantity.is_zero())
            .count()
    );
    println!(
        "  invoices             {invoices} (Oct 1: {}, Nov 1: {}; re-run issued {})",
        october_run.invoices, run.invoices, again.invoices
    );
    println!("  invoiced             {invoiced}");
    println!("  invoices by status (read back from the database)");
    for (status, (count, amount)) in &books.by_status {
        println!("    {status:<18} {count:>7}  {amount}");
    }
    println!(
        "  fee lines billed     {} late fees ({}), {} reconnection fees ({})",
        books.late_fees.0, books.late_fees.1, books.reconnection_fees.0, books.reconnection_fees.1
    );
    println!(
        "  credit applied       {} invoices ({})",
        books.credit_applied.0, books.credit_applied.1
    );
    println!(
        "  plan changes         {upgrades} upgrades, {downgrades} downgrades, {cancellations} cancellations"
    );
    println!(
        "  MRR Oct 1            {}  (ARR {})",
        mrr_oct.total,
        mrr_oct.arr()?
    );
    println!(
        "  MRR Nov 1            {}  (ARR {})",
        mrr_nov.total,
        mrr_nov.arr()?
    );
    println!(
        "  MRR movements Oct    new {}, expansion {}, contraction {}, churn {}, reactivation {} (reconciles: {})",
        movements.new,
        movements.expansion,
        movements.contraction,
        movements.churn,
        movements.reactivation,
        movements.reconciles()
    );
    for (plan, fibre) in plans.iter().zip(&PLANS) {
        let mrr = mrr_nov
            .by_plan
            .iter()
            .find(|((_, p), _)| *p == plan.id)
            .map_or(Money::zero(usd), |(_, m)| *m);
        println!("    {:<18} {}", fibre.name, mrr);
    }
    println!("  collections          {actions:?}");
    println!(
        "  subscriptions        {} suspended now; {} suspensions and {} restores published",
        books.suspended,
        published("billing.subscription_suspended"),
        published("billing.subscription_restored")
    );
    println!(
        "  outbox               {} events: {} handled, {} pending, {} parked",
        outbox.total(),
        outbox.handled,
        outbox.pending,
        outbox.parked
    );
    println!(
        "  receivables Nov 30   current {}, 1-30 {}, 31-60 {}, 61-90 {}, 90+ {}",
        ageing.current, ageing.days_1_30, ageing.days_31_60, ageing.days_61_90, ageing.over_90
    );
    let fired = |step: StepName| actions.get(&step).copied().unwrap_or(0);
    println!(
        "  checks               invoice status = ledger state: {}/{}; late fees fired {} / billed {}; \
         reconnections {} / fees billed {}; suspended MRR Dec 1 {}; outbox unhandled {}",
        books.invoices - books.disagreeing,
        books.invoices,
        fired(StepName::LATE_FEE),
        books.late_fees.0,
        fired(StepName::RESTORE),
        books.reconnection_fees.0,
        suspended_mrr,
        outbox.pending + outbox.parked
    );
    println!();
    println!("Timings");
    for (step, took, items) in &timings.0 {
        // Timings are for people, not money: an integer rate is plenty.
        let micros = took.as_micros().max(1);
        let rate = if *items > 1 {
            format!("{:>12}/s", (*items as u128) * 1_000_000 / micros)
        } else {
            String::new()
        };
        println!(
            "  {step:<20} {:>10.3} s {items:>9} {rate}",
            took.as_secs_f64()
        );
    }
    println!(
        "  {:<20} {:>10.3} s",
        "total",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The tenant, through `dotmac-tenancy`: requested on the smallest platform tier whose
/// customer quota admits the run (past the largest, a copy of it without a customer limit),
/// provisioned with the quickstart's settings (currency, zone, payment terms, dunning policy)
/// and an owner, activated; then every service reads its settings back from the tenant, and
/// the customers about to be created are counted against its quota. Prints the tenant, where
/// its settings come from and its quota use.
async fn setup_tenant(dotmac: Dotmac, customers: usize) -> Result<(Dotmac, TenantId), AnyError> {
    use dotmac::tenancy::{
        Actor, Limit, NewTenant, NewUser, PaymentTerms, PlanCode, Quota, RoleName, SettingsLayer,
        TenancyService, TenancySettings, TenantPlan, TenantStatus,
    };
    use dotmac::{SettingsLayerExt, TenantSettingsExt};

    let wanted = customers as u64;
    let mut catalog = dotmac.tenancy().settings().catalog.clone();
    let plan = match catalog.smallest_for(Quota::Customers, wanted) {
        Some(plan) => plan.clone(),
        None => {
            let largest = catalog.plans().last().ok_or("no tenant plans")?;
            let mut plus =
                TenantPlan::builder(PlanCode::new("enterprise_plus")?, "Enterprise Plus")
                    .quotas(largest.quotas().with(Quota::Customers, Limit::Unlimited));
            for feature in largest.entitlements() {
                plus = plus.entitle(feature.clone());
            }
            let plus = plus.build()?;
            catalog.insert(plus.clone());
            plus
        }
    };
    let tenancy = TenancyService::new(
        dotmac.store().clone(),
        std::sync::Arc::clone(dotmac.clock()),
        TenancySettings::new(catalog),
    );
    let ops = Actor::platform("quickstart");
    let tenant = TenantId::new();
    let request = NewTenant::new("Acme Fibre").plan(plan.code().clone());
    tenancy.request_tenant(tenant, request, ops.clone()).await?;
    tenancy
        .transition(tenant, TenantStatus::Provisioning, ops.clone(), None)
        .await?;
    let billing = dotmac.billing().settings();
    let settings = SettingsLayer::new()
        .with_currency(Currency::USD)
        .with_time_zone(billing.zone)
        .with_payment_terms(PaymentTerms::net(billing.payment_terms_days)?)
        .with_dunning(&dotmac.collections().settings().policy)?;
    tenancy
        .update_settings(tenant, &settings, ops.clone())
        .await?;
    let owner = NewUser::new("ops@acme.example", "Acme operations").role(RoleName::OWNER);
    tenancy.add_user(tenant, owner, ops.clone()).await?;
    let ids: Vec<CustomerId> = (0..wanted)
        .map(|n| CustomerId::from_u128(CUSTOMER_IDS + u128::from(n)))
        .collect();
    tenancy.admit_customers(tenant, &ids).await?;
    tenancy
        .transition(tenant, TenantStatus::Active, ops, Some("quickstart"))
        .await?;

    let dotmac = dotmac.configured_for(tenant).await?;
    let resolved = tenancy.settings_of(tenant).await?;
    let used = tenancy.quota_use(tenant).await?;
    println!("  tenant: Acme Fibre, active on the {} plan", plan.name());
    println!(
        "  settings: {} ({}), {} ({}), net {} days ({}), rounding {:?} ({}), dunning policy ({})",
        resolved.currency().value,
        resolved.currency().source,
        resolved.time_zone().value,
        resolved.time_zone().source,
        resolved.payment_terms().value.days(),
        resolved.payment_terms().source,
        resolved.rounding_mode().value,
        resolved.rounding_mode().source,
        resolved.dunning()?.source,
    );
    println!(
        "  quota use: customers {} of {}, admin users {} of {}, API calls this hour {} of {}",
        used.customers.used,
        used.customers.limit,
        used.admin_users.used,
        used.admin_users.limit,
        used.api_calls.used,
        used.api_calls.limit,
    );
    Ok((dotmac, tenant))
}

/// The platform operator's view of the run: every tenant listed with what it used of the
/// platform from `from` to `to` (invoices issued, counted through the dispatcher; usage
/// events ingested, counted as they were stored), read back from the database.
async fn print_platform_usage(
    dotmac: &Dotmac,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<(), AnyError> {
    let period = dotmac::Period::new(from, to)?;
    let zone = dotmac.billing().settings().zone;
    println!("platform usage, {from} to {to} (the platform operator's view):");
    for (tenant, usage) in dotmac.tenancy().platform_report(period, zone, 100).await? {
        println!(
            "  {} ({}): customers {} ({} added), invoices issued {}, usage events ingested {}, API calls {}",
            tenant.name(),
            tenant.status(),
            usage.customers,
            usage.customers_added,
            usage.invoices_issued,
            usage.events_ingested,
            usage.api_calls,
        );
    }
    Ok(())
}

/// The figures of the summary, as the database holds them.
struct Books {
    invoices: usize,
    invoiced: Money,
    by_status: BTreeMap<&'static str, (usize, Money)>,
    late_fees: (usize, Money),
    reconnection_fees: (usize, Money),
    credit_applied: (usize, Money),
    suspended: usize,
    /// Invoices whose status is not the state of their balance in the payments ledger.
    disagreeing: usize,
}

async fn read_books(
    dotmac: &Dotmac,
    tenant: TenantId,
    subscriptions: &[(CustomerId, SubscriptionId, usize)],
    ledgers: &[CustomerLedger],
) -> Result<Books, AnyError> {
    // The status the ledger's state of every invoice gives it, by id (the reaction's mapping).
    let ledger_status: BTreeMap<InvoiceId, Option<InvoiceStatus>> = ledgers
        .iter()
        .flat_map(|ledger| ledger.invoices())
        .map(|balance| (balance.invoice, invoice_status_of(balance.state())))
        .collect();
    let usd = Currency::USD;
    let zero = Money::zero(usd);
    let mut books = Books {
        invoices: 0,
        invoiced: zero,
        by_status: BTreeMap::new(),
        late_fees: (0, zero),
        reconnection_fees: (0, zero),
        credit_applied: (0, zero),
        suspended: 0,
        disagreeing: 0,
    };
    let add = |slot: &mut (usize, Money), amount: Money| -> Result<(), AnyError> {
        slot.0 += 1;
        slot.1 = slot.1.checked_add(amount)?;
        Ok(())
    };
    for (customer, sub, _) in subscriptions {
        for invoice in dotmac.invoices_of(tenant, *customer).await? {
            books.invoices += 1;
            books.invoiced = books.invoiced.checked_add(invoice.total)?;
            if ledger_status.get(&invoice.id) != Some(&Some(invoice.status)) {
                books.disagreeing += 1;
            }
            add(
                books
                    .by_status
                    .entry(invoice.status.as_str())
                    .or_insert((0, zero)),
                invoice.total,
            )?;
            for line in &invoice.lines {
                match line.kind {
                    LineKind::LateFee => add(&mut books.late_fees, line.amount)?,
                    LineKind::ReconnectionFee => add(&mut books.reconnection_fees, line.amount)?,
                    _ => {}
                }
            }
            if invoice.credit_applied().is_positive() {
                add(&mut books.credit_applied, invoice.credit_applied())?;
            }
        }
        let stored = dotmac.billing().store().subscription(tenant, *sub).await?;
        if stored.is_some_and(|s| s.status() == SubscriptionStatus::Suspended) {
            books.suspended += 1;
        }
    }
    Ok(books)
}

/// Noon-ish instants on a date, for the manual clock.
fn at(day: NaiveDate, hour: u32) -> Result<chrono::DateTime<Utc>, AnyError> {
    let naive = day.and_hms_opt(hour, 0, 0).ok_or("bad hour")?;
    Ok(Utc.from_utc_datetime(&naive))
}

fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, host)) => match scheme_user.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…@{host}"),
            None => format!("…@{host}"),
        },
        None => url.to_owned(),
    }
}

/// How a customer pays what is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paying {
    /// The open balance, to the cent.
    Exactly,
    /// Rounded up to the next ten dollars: the excess becomes customer credit, which the
    /// next invoice consumes.
    RoundedUp,
}

/// Pays the open balance of every selected customer; returns how many paid.
async fn pay_open_invoices(
    collections: &Collections,
    tenant: TenantId,
    subscriptions: &[(CustomerId, SubscriptionId, usize)],
    select: impl Fn(usize) -> Option<Paying>,
) -> Result<usize, AnyError> {
    let progress = bar(subscriptions.len(), "payments");
    let mut paid = 0;
    for (i, (customer, _, _)) in subscriptions.iter().enumerate() {
        if let Some(paying) = select(i)
            && !pay_customer(collections, tenant, *customer, paying)
                .await?
                .is_empty()
        {
            paid += 1;
        }
        progress.inc(1);
    }
    progress.finish();
    Ok(paid)
}

/// Pays a customer's whole open balance, oldest invoice first.
async fn pay_customer(
    collections: &Collections,
    tenant: TenantId,
    customer: CustomerId,
    paying: Paying,
) -> Result<Vec<dotmac::DomainEvent<CollectionEvent>>, AnyError> {
    let entries = collections
        .payment_store()
        .entries(tenant, customer)
        .await?;
    let ledger = CustomerLedger::from_entries(customer, Currency::USD, entries)?;
    let open = Money::sum(
        Currency::USD,
        ledger.invoices().iter().map(|balance| balance.open()),
    )?;
    if !open.is_positive() {
        return Ok(Vec::new());
    }
    let amount = match paying {
        Paying::Exactly => open,
        Paying::RoundedUp => {
            let ten = Decimal::TEN;
            let tens = open
                .amount()
                .checked_div(ten)
                .ok_or("payment overflow")?
                .floor()
                .checked_add(Decimal::ONE)
                .ok_or("payment overflow")?;
            Money::new(
                tens.checked_mul(ten).ok_or("payment overflow")?,
                Currency::USD,
            )
        }
    };
    Ok(collections
        .record_payment(
            tenant,
            customer,
            // The n-th payment of the customer: the same ids every run.
            PaymentId::derived(
                IdDigest::new("quickstart-payment")
                    .uuid(customer.as_uuid())
                    .u64(ledger.entries().len() as u64),
            ),
            amount,
            AllocationTarget::OldestFirst,
        )
        .await?)
}

/// The partner programme: a master agent with a sub-agent, a reseller and a referral partner,
/// some customers attributed to each (first touch, last touch, directly, one transfer), their
/// payments accruing commission through the dispatcher; at the end each partner's statement,
/// read back from the database, reconciled to the payments collected from its customers.
mod partner_programme {
    use chrono::NaiveDate;
    use dotmac::collections::{LedgerEntryKind, PaymentStore};
    use dotmac::partners::{
        AttributionRule, CommissionDuration, CommissionPlan, CommissionPlanId, Component, LineKind,
        MasterOverride, PartnerAccount, PartnerId, PartnerKind, PartnerStatus, PartnerStore,
        RevenueKey, Share, TierSchedule,
    };
    use dotmac::{Currency, CustomerId, Dotmac, Money, Period, PlanId, TenantId};
    use rust_decimal::Decimal;

    use super::AnyError;

    const METRO: PartnerId = PartnerId::from_u128(0x0190_0000_0000_7000_a000_0000_0000_0001);
    const CORNER_SHOP: PartnerId = PartnerId::from_u128(0x0190_0000_0000_7000_a000_0000_0000_0002);
    const FASTNET: PartnerId = PartnerId::from_u128(0x0190_0000_0000_7000_a000_0000_0000_0003);
    const CAMPUS: PartnerId = PartnerId::from_u128(0x0190_0000_0000_7000_a000_0000_0000_0004);

    fn date(m: u32, d: u32) -> Result<NaiveDate, AnyError> {
        NaiveDate::from_ymd_opt(2026, m, d).ok_or_else(|| format!("bad date {m}-{d}").into())
    }

    /// Opens the programme on September 20th and attributes one customer in ten to a partner
    /// on October 1st (before anybody pays). `fibre_1000` earns resellers a higher rate.
    pub(crate) async fn enrol(
        dotmac: &Dotmac,
        tenant: TenantId,
        customers: &[CustomerId],
        fibre_1000: PlanId,
    ) -> Result<(), AnyError> {
        let usd = Currency::USD;
        let partners = dotmac.partners();
        let opened = date(9, 20)?;
        // Referral partners: the platform's example programme (bronze 5 % … platinum 12 %
        // by lifetime revenue), 10.00 per activation, for two years, paid after 30 days.
        let referral = CommissionPlan::builder(CommissionPlanId::from_u128(1), "Referrals", usd)
            .tiered(TierSchedule::example_programme())
            .activation_reward(Money::parse("10.00", usd)?)
            .duration(CommissionDuration::Months(24))
            .hold_days(30)
            .min_payout(Money::parse("25.00", usd)?)
            .build()?;
        // Resellers and agents: 12 % for life, 15 % on Fibre 1000, capped at 5,000 a month.
        let reseller = CommissionPlan::builder(CommissionPlanId::from_u128(2), "Resellers", usd)
            .revenue_share(Decimal::from(12))
            .rate_for(RevenueKey::Plan(fibre_1000), Decimal::from(15))
            .cap(
                dotmac::partners::CapPeriod::Month,
                Money::parse("5000.00", usd)?,
            )
            .hold_days(30)
            .min_payout(Money::parse("50.00", usd)?)
            .build()?;
        partners.save_plan(tenant, &referral).await?;
        partners.save_plan(tenant, &reseller).await?;
        let accounts = [
            (
                METRO,
                "Metro Agents",
                PartnerKind::MasterAgent,
                reseller.id(),
            ),
            (
                FASTNET,
                "FastNet Resellers",
                PartnerKind::Reseller,
                reseller.id(),
            ),
            (
                CAMPUS,
                "Campus Ambassadors",
                PartnerKind::Referral,
                referral.id(),
            ),
            (
                CORNER_SHOP,
                "Corner Shop",
                PartnerKind::Referral,
                reseller.id(),
            ),
        ];
        for (id, name, kind, plan) in accounts {
            let mut account = PartnerAccount::apply(id, name, kind, plan, opened)?;
            if id == CORNER_SHOP {
                // A sub-agent of Metro Agents: a fifth of its commission goes up to Metro.
                account = account.under(MasterOverride::new(METRO, Decimal::from(20))?)?;
            }
            partners.apply(tenant, account).await?;
            partners
                .change_status(tenant, id, PartnerStatus::Active, opened)
                .await?;
        }
        let october = date(10, 1)?;
        for (i, customer) in customers.iter().enumerate() {
            match i % 10 {
                0 => {
                    // The shop's flyer, then the campus stand: first touch wins.
                    partners
                        .record_touch(tenant, *customer, CORNER_SHOP, date(9, 21)?)
                        .await?;
                    partners
                        .record_touch(tenant, *customer, CAMPUS, date(9, 25)?)
                        .await?;
                    partners
                        .attribute(tenant, *customer, AttributionRule::first_touch(30), october)
                        .await?;
                }
                3 => {
                    partners.assign(tenant, *customer, FASTNET, october).await?;
                }
                6 => {
                    // Last touch within 30 days: the campus stand.
                    partners
                        .record_touch(tenant, *customer, CORNER_SHOP, date(9, 22)?)
                        .await?;
                    partners
                        .record_touch(tenant, *customer, CAMPUS, date(9, 28)?)
                        .await?;
                    partners
                        .attribute(tenant, *customer, AttributionRule::last_touch(30), october)
                        .await?;
                }
                8 if i % 20 == 8 => {
                    partners.assign(tenant, *customer, METRO, october).await?;
                }
                _ => {}
            }
        }
        // The first campus customer moves to FastNet on November 1st.
        if let Some(moved) = customers.get(6) {
            partners
                .transfer(tenant, *moved, FASTNET, date(11, 1)?)
                .await?;
        }
        Ok(())
    }

    /// Each partner's statement for October and November, read back from the database, and
    /// the payments collected from the customers it held on their days, from the collections
    /// ledgers: the statement's revenue must be exactly those payments. Then December's
    /// payout run (instructions recorded; no money moves).
    pub(crate) async fn print_statements(
        dotmac: &Dotmac,
        tenant: TenantId,
    ) -> Result<(), AnyError> {
        let usd = Currency::USD;
        let zero = Money::zero(usd);
        let period = Period::new(date(10, 1)?, date(12, 1)?)?;
        let partners = dotmac.partners();
        println!();
        println!("Partners (statements Oct 1 - Nov 30, read back from the database)");
        let mut all_reconcile = true;
        for account in dotmac.store().partners(tenant).await? {
            let id = account.id();
            let statement = partners.statement(tenant, id, period).await?;
            // The payments collected from its customers, as collections recorded them.
            let mut collected = zero;
            let mut customers = 0;
            for record in dotmac.store().partner_customers(tenant, id).await? {
                customers += 1;
                for entry in dotmac.store().entries(tenant, record.customer()).await? {
                    if !period.contains(entry.on) || record.partner_on(entry.on) != Some(id) {
                        continue;
                    }
                    match entry.kind {
                        LedgerEntryKind::PaymentReceived { amount, .. } => {
                            collected = collected.checked_add(amount)?;
                        }
                        LedgerEntryKind::Refunded { amount, .. } => {
                            collected = collected.checked_sub(amount)?;
                        }
                        _ => {}
                    }
                }
            }
            let (mut revenue, mut overrides) = (zero, zero);
            for line in &statement.lines {
                match (line.kind, line.base) {
                    (
                        LineKind::Accrual {
                            component: Component::RevenueShare,
                            share,
                        },
                        Some(base),
                    ) if share.is_own() => {
                        revenue = revenue.checked_add(base)?;
                    }
                    (
                        LineKind::Accrual {
                            share: Share::MasterOverride { .. },
                            ..
                        },
                        _,
                    ) => {
                        overrides = overrides.checked_add(line.amount)?;
                    }
                    (LineKind::Clawback, Some(base)) => revenue = revenue.checked_sub(base)?,
                    _ => {}
                }
            }
            let reconciles = revenue == collected && statement.reconciles()?;
            all_reconcile &= reconciles;
            let tier = partners
                .tier_changes(tenant, id)
                .await?
                .last()
                .map_or_else(String::new, |c| format!(", tier {}", c.to));
            println!(
                "  {:<19} {:>4} customers  collected {}  = statement revenue {} ({})",
                account.name(),
                customers,
                collected,
                revenue,
                if reconciles {
                    "reconciles"
                } else {
                    "DOES NOT RECONCILE"
                },
            );
            println!(
                "  {:<19} earned {} (overrides {}), clawed back {}, closing {}, payable {}{tier}",
                "",
                statement.earned,
                overrides,
                statement.clawed_back,
                statement.closing_balance,
                statement.payable,
            );
        }
        let run = partners.run_payouts(tenant, date(12, 1)?).await?;
        let paid = Money::sum(usd, run.instructions.iter().map(|i| i.amount))?;
        println!(
            "  payout run Dec 1     {} instructions, {paid} (recorded and published; no money moved)",
            run.instructions.len()
        );
        // The instructions are in the outbox for the application's payment provider.
        dotmac.dispatch().await?;
        if !all_reconcile {
            return Err("a partner statement does not reconcile to its customers' payments".into());
        }
        Ok(())
    }
}
