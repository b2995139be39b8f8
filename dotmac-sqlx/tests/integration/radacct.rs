//! RADIUS accounting back into usage, against a real FreeRADIUS (Debian's packages, started by
//! `dotmac-radius-harness` over a PostgreSQL database of this binary's own): `radclient` plays
//! the NAS (Start, Interim-Update with a Gigawords wrap, Stop, a Stop without traffic
//! attributes), FreeRADIUS writes `radacct`, and `RadacctIngester` reads it into the usage
//! store of a tenant on PostgreSQL and of one on SQLite, which must agree to the byte; re-runs,
//! new instances and two concurrent readers count nothing twice; the November bill run bills
//! the overage. Needs `DATABASE_URL`; fails, never skips, when FreeRADIUS cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use dotmac_billing::usage_billing::allowance::AllowancePolicy;
use dotmac_billing::usage_billing::{UsageBillingService, UsageBillingSettings};
use dotmac_billing::{
    BillingService, BillingSettings, Charge, CurrencyPrice, CustomerAccount, InvoiceStore,
    LineKind, NewSubscription, Plan, PriceModel, Product,
};
use dotmac_core::metrics_recorder::Counting;
use dotmac_core::span_recorder::record_spans;
use dotmac_core::{
    BillingInterval, Currency, CustomerId, ManualClock, Money, PlanId, ProductId, SubscriptionId,
    TenantId,
};
use dotmac_customers::{
    CustomerKind, CustomerService, CustomersSettings, NewCustomer, NewService, Rate,
    TechnicalProfile,
};
use dotmac_radius_harness::{
    FreeRadius, FreeRadiusSettings as ServerSettings, PgTarget, prepare_database, quote,
};
use dotmac_sqlx::radacct::{RadacctIngester, RadacctSettings};
use dotmac_sqlx::{Database, SqlStore};
use dotmac_usage::radius::{Direction, RadiusSettings};
use dotmac_usage::{Aggregation, Meter, MeterId, UsageError, UsageStore};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const DOWN: MeterId = MeterId::from_u128(0xd0);
const UP: MeterId = MeterId::from_u128(0x0d);
const PLAN: PlanId = PlanId::from_u128(0x10);
/// 5 GB a month included, 2.00 per GB (0.000000002 per byte) above.
const INCLUDED: i64 = 5_000_000_000;

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, day, hour, minute, 0)
        .unwrap()
}

fn date(month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, month, day).unwrap()
}

/// FreeRADIUS's database for this binary alone, emptied: its `radacct` is what this test
/// sent, nothing else.
async fn radius_db() -> PgTarget {
    let url = std::env::var("DATABASE_URL")
        .expect("the FreeRADIUS tests need DATABASE_URL (a PostgreSQL server); they never skip");
    let admin = PgTarget::from_url(&url).unwrap();
    let target = prepare_database(&url, &format!("{}_radacct", admin.dbname))
        .await
        .unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&target.url())
        .await
        .unwrap();
    sqlx::query("DELETE FROM radacct")
        .execute(&mut conn)
        .await
        .unwrap();
    target
}

/// One Accounting-Request as a NAS sends it: the 64-bit totals `(download, upload)` split into
/// Octets and Gigawords (`None`: no traffic attributes).
fn account(
    server: &FreeRadius,
    status: &str,
    user: &str,
    session: &str,
    when: DateTime<Utc>,
    traffic: Option<(u64, u64)>,
    session_time: u32,
) {
    let mut attributes = vec![
        ("Acct-Status-Type", status.to_owned()),
        ("User-Name", quote(user)),
        ("Acct-Session-Id", quote(session)),
        ("NAS-IP-Address", "127.0.0.1".to_owned()),
        ("NAS-Port", "1".to_owned()),
        ("Event-Timestamp", when.timestamp().to_string()),
        ("Acct-Session-Time", session_time.to_string()),
    ];
    // RFC 2866: Acct-Output is what the NAS sent the user (the download).
    if let Some((download, upload)) = traffic {
        attributes.push(("Acct-Output-Octets", (download & 0xffff_ffff).to_string()));
        attributes.push(("Acct-Output-Gigawords", (download >> 32).to_string()));
        attributes.push(("Acct-Input-Octets", (upload & 0xffff_ffff).to_string()));
        attributes.push(("Acct-Input-Gigawords", (upload >> 32).to_string()));
    }
    let reply = server.account(&attributes).unwrap();
    assert_eq!(reply.code, "Accounting-Response", "{}", server.log());
}

/// One tenant's side: its store, its customers and their billing.
struct Side {
    name: &'static str,
    store: SqlStore,
    tenant: TenantId,
    clock: Arc<ManualClock>,
    billing: BillingService<SqlStore, Arc<ManualClock>>,
    usage: UsageBillingService<SqlStore, SqlStore, Arc<ManualClock>>,
    customers: Vec<(String, CustomerId, SubscriptionId)>,
    target: PgTarget,
}

fn radius_settings() -> RadacctSettings {
    // Small pages, so a pass takes several.
    RadacctSettings::new(RadiusSettings::new(Direction::InputIsUpload, DOWN, UP)).batch(2)
}

impl Side {
    async fn new(name: &'static str, db: Database, users: &[String], target: PgTarget) -> Side {
        let tenant = common::new_tenant(&db).await;
        let store = SqlStore::new(db);
        let clock = Arc::new(ManualClock::new(at(1, 0, 30)));
        let customers_service =
            CustomerService::new(store.clone(), clock.clone(), CustomersSettings::default());
        let billing = BillingService::new(
            store.clone(),
            clock.clone(),
            BillingSettings::default().with_zone(chrono_tz::UTC),
        );
        let usd = Currency::USD;
        let plan = Plan::builder(PLAN, ProductId::from_u128(0x11), "Fibre 5 GB")
            .interval(BillingInterval::MONTHLY)
            .charge(Charge::recurring_flat([Money::new(dec!(30), usd)]))
            .charge(Charge::usage(
                DOWN,
                vec![CurrencyPrice {
                    currency: usd,
                    model: PriceModel::PerUnit {
                        unit_amount: dec!(0.000000002),
                    },
                }],
            ))
            .build(date(1, 1))
            .unwrap();
        billing
            .add_product(
                tenant,
                Product {
                    id: plan.product,
                    name: "Fibre".into(),
                },
            )
            .await
            .unwrap();
        billing.save_plan(tenant, plan).await.unwrap();
        let meters = vec![
            Meter {
                id: DOWN,
                code: "download_bytes".into(),
                aggregation: Aggregation::Sum,
            },
            Meter {
                id: UP,
                code: "upload_bytes".into(),
                aggregation: Aggregation::Sum,
            },
        ];
        let usage_settings = UsageBillingSettings::new(chrono_tz::UTC, meters).allowance(
            PLAN,
            AllowancePolicy::new(DOWN, Decimal::from(INCLUDED), usd, None, &[80, 100]).unwrap(),
        );
        let usage = UsageBillingService::new(billing.clone(), store.clone(), usage_settings);
        let mut customers = Vec::new();
        for user in users {
            let customer = CustomerId::new();
            customers_service
                .create_customer(
                    tenant,
                    customer,
                    NewCustomer::lead(CustomerKind::Person {
                        first_name: user.clone(),
                        last_name: "Test".into(),
                    })
                    .signed(),
                )
                .await
                .unwrap();
            let subscription = SubscriptionId::new();
            billing
                .save_account(tenant, CustomerAccount::new(customer, usd))
                .await
                .unwrap();
            billing
                .subscribe(
                    tenant,
                    NewSubscription::new(customer, PLAN, usd, date(10, 1))
                        .id(subscription)
                        .anchor(date(10, 1)),
                )
                .await
                .unwrap();
            customers_service
                .create_service(
                    tenant,
                    NewService {
                        customer,
                        subscription,
                        username: user.clone(),
                        password: "pa55".into(),
                        profile: TechnicalProfile::new(Rate::mbps(100, 20)),
                    },
                )
                .await
                .unwrap();
            customers.push((user.clone(), customer, subscription));
        }
        Side {
            name,
            store,
            tenant,
            clock,
            billing,
            usage,
            customers,
            target,
        }
    }

    /// A new reader instance: everything it knows comes from the persisted mark and states.
    async fn ingester(&self) -> RadacctIngester {
        RadacctIngester::connect(
            &self.target.url(),
            self.store.clone(),
            self.tenant,
            radius_settings(),
        )
        .await
        .unwrap()
    }

    /// What the outbox's `usage.session_accounted` events (the sessions' growth, for fair
    /// usage) add up to for a user: (download, upload).
    async fn accounted(&self, user: &str) -> (Decimal, Decimal) {
        use dotmac_core::outbox::OutboxStore;
        let mut totals = (Decimal::ZERO, Decimal::ZERO);
        for message in self.store.outbox_messages(self.tenant).await.unwrap() {
            if message.event_type != "usage.session_accounted" {
                continue;
            }
            let dotmac_usage::AccountingEvent::SessionAccounted {
                username,
                download,
                upload,
                ..
            } = message.decode().unwrap()
            else {
                continue;
            };
            if username == user {
                totals.0 += Decimal::from(download);
                totals.1 += Decimal::from(upload);
            }
        }
        totals
    }

    /// What the usage store holds for a user in October: (download, upload).
    async fn stored(&self, user: &str) -> (Decimal, Decimal) {
        let (_, customer, _) = self.customers.iter().find(|(u, ..)| u == user).unwrap();
        let mut totals = [Decimal::ZERO; 2];
        for (slot, meter) in totals.iter_mut().zip([DOWN, UP]) {
            for event in self
                .store
                .events_between(self.tenant, *customer, meter, at(1, 0, 0), at(31, 23, 59))
                .await
                .unwrap()
            {
                *slot += event.quantity;
            }
        }
        (totals[0], totals[1])
    }
}

/// The scenario under a span recorder and a counting metrics recorder (on this thread: the
/// runtime is a current-thread one), so the ingestion's span and counters are checked with it.
#[test]
fn accounting_from_radclient_becomes_usage_once_and_bills_the_overage() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let recorder = Counting::default();
    let (spans, ()) =
        record_spans(|| metrics::with_local_recorder(&recorder, || runtime.block_on(scenario())));
    // One `dotmac.radius.ingest` span per pass (eight per tenant) with its counts and no
    // user name; a page span per page, on both backends.
    let passes = spans.lines("dotmac.radius.ingest");
    assert_eq!(passes.len(), 16, "{passes:?}");
    assert!(
        passes[0].starts_with("Level(Info) tenant=")
            && passes[0].ends_with("source=freeradius rows=3 events=4 rejected=1"),
        "{passes:?}"
    );
    let pages = spans.lines("dotmac.store.radius_ingest_page");
    for backend in ["postgres", "sqlite"] {
        assert!(
            pages
                .iter()
                .any(|p| p.contains(&format!("backend=\"{backend}\""))),
            "{pages:?}"
        );
    }
    assert!(spans.all().iter().all(|s| !s.contains("mallory")));
    // Rows that added usage and the events stored, exactly (ten each per tenant); refused and
    // no-usage rows at least once (a row whose writer's transaction was not yet below the
    // snapshot's xmin is read again by the next pass, and counted again).
    let moved = recorder.moved();
    assert!(
        moved.contains(&"dotmac_usage_radacct_rows_total{outcome=usage}=10".to_owned()),
        "{moved:?}"
    );
    assert!(
        moved.contains(&"dotmac_usage_radacct_events_total{}=20".to_owned()),
        "{moved:?}"
    );
    for outcome in ["no_usage", "rejected"] {
        assert!(
            moved.iter().any(|m| m.starts_with(&format!(
                "dotmac_usage_radacct_rows_total{{outcome={outcome}}}="
            ))),
            "{moved:?}"
        );
    }
}

async fn scenario() {
    let target = radius_db().await;
    let server =
        FreeRadius::start(&ServerSettings::new(target.clone())).unwrap_or_else(|e| panic!("{e}"));
    let suffix = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let (ada, bob) = (format!("ada-{suffix}"), format!("bob-{suffix}"));
    let users = [ada.clone(), bob.clone()];
    let pg = common::postgres().await.expect("DATABASE_URL is set");
    let sides = [
        Side::new("postgres", pg, &users, target.clone()).await,
        Side::new(
            "sqlite",
            common::sqlite_file().await,
            &users,
            target.clone(),
        )
        .await,
    ];
    for side in &sides {
        side.clock.set(at(1, 1, 0));
        let (_, run) = side.usage.bill(side.tenant, date(10, 1)).await.unwrap();
        assert_eq!(run.invoices, 2, "{}", side.name);
    }
    let readers = [sides[0].ingester().await, sides[1].ingester().await];
    // An unknown user's session: FreeRADIUS records it, the reader refuses it.
    account(&server, "Start", "mallory", "m-1", at(4, 9, 0), None, 0);

    // Ada's first session and Bob's, first interims.
    account(&server, "Start", &ada, "a-1", at(5, 8, 0), None, 0);
    account(
        &server,
        "Interim-Update",
        &ada,
        "a-1",
        at(5, 8, 10),
        Some((3_000_000_000, 1_000_000)),
        600,
    );
    account(&server, "Start", &bob, "b-1", at(6, 20, 0), None, 0);
    account(
        &server,
        "Interim-Update",
        &bob,
        "b-1",
        at(6, 20, 5),
        Some((200_000_000, 10_000)),
        300,
    );
    for (side, reader) in sides.iter().zip(&readers) {
        let report = reader.ingest().await.unwrap();
        assert_eq!(report.rows, 3, "{}: {report:?}", side.name);
        assert_eq!(report.usage_of(&ada), (3_000_000_000, 1_000_000));
        assert_eq!(report.usage_of(&bob), (200_000_000, 10_000));
        assert_eq!(report.events, 4);
        assert_eq!(report.rejected.len(), 1);
        assert_eq!(report.rejected[0].username, "mallory");
        assert!(matches!(
            report.rejected[0].error,
            UsageError::UnknownRadiusUser { .. }
        ));
        assert!(report.mark > 0);
    }

    // Ada's counter passes 2^32: the NAS sends Gigawords = 1 (FreeRADIUS stores 64 bits), then
    // the Stop; a second, short session.
    account(
        &server,
        "Interim-Update",
        &ada,
        "a-1",
        at(5, 8, 20),
        Some(((1 << 32) + 500_000_000, 2_000_000)),
        1200,
    );
    account(
        &server,
        "Stop",
        &ada,
        "a-1",
        at(5, 8, 30),
        Some(((1 << 32) + 1_000_000_000, 2_500_000)),
        1800,
    );
    account(&server, "Start", &ada, "a-2", at(20, 19, 0), None, 0);
    account(
        &server,
        "Stop",
        &ada,
        "a-2",
        at(20, 19, 45),
        Some((700_000_000, 50_000)),
        2700,
    );
    for (side, reader) in sides.iter().zip(&readers) {
        let report = reader.ingest().await.unwrap();
        // 5,294,967,296 − 3,000,000,000 across the wrap, and the second session whole.
        assert_eq!(
            report.usage_of(&ada),
            (2_294_967_296 + 700_000_000, 1_500_000 + 50_000),
            "{}: {report:?}",
            side.name
        );
        assert_eq!(report.usage_of(&bob), (0, 0));
        assert_eq!(report.events, 4);
        // The same reader again: nothing new.
        let again = reader.ingest().await.unwrap();
        assert_eq!((again.events, again.usage.len()), (0, 0), "{again:?}");
    }
    drop(readers);

    // Restarted readers (from the persisted mark and states) find nothing to count.
    for side in &sides {
        let report = side.ingester().await.ingest().await.unwrap();
        assert_eq!(
            (report.events, report.usage.len()),
            (0, 0),
            "{}: {report:?}",
            side.name
        );
    }

    // While no reader runs, Bob's session goes on: two new instances per tenant, reading at
    // the same time, count his growth once.
    account(
        &server,
        "Interim-Update",
        &bob,
        "b-1",
        at(6, 20, 35),
        Some((900_000_000, 30_000)),
        2100,
    );
    for side in &sides {
        let (one, two) = (side.ingester().await, side.ingester().await);
        let (a, b) = tokio::join!(one.ingest(), two.ingest());
        let (a, b) = (a.unwrap(), b.unwrap());
        let (a_down, a_up) = a.usage_of(&bob);
        let (b_down, b_up) = b.usage_of(&bob);
        assert_eq!(
            (a_down + b_down, a_up + b_up),
            (700_000_000, 20_000),
            "{}: {a:?} {b:?}",
            side.name
        );
        assert_eq!(a.events + b.events, 2);
    }
    // His Stop carries no traffic attributes: FreeRADIUS's query writes zeros over the row's
    // totals, and the reader takes nothing back (the normaliser's zero-filled Stop).
    account(&server, "Stop", &bob, "b-1", at(6, 21, 0), None, 3600);
    for (side, reader) in sides
        .iter()
        .zip([sides[0].ingester().await, sides[1].ingester().await])
    {
        let report = reader.ingest().await.unwrap();
        assert!(report.rows >= 1, "{}: {report:?}", side.name);
        assert_eq!((report.events, report.usage.len()), (0, 0));
    }

    // The usage stores hold exactly what the NAS reported, the same on both backends, and the
    // sessions' growth published for fair usage adds up to it (nothing twice across re-runs,
    // restarts and concurrent readers).
    for side in &sides {
        for user in [&ada, &bob] {
            assert_eq!(
                side.accounted(user).await,
                side.stored(user).await,
                "{} {user}",
                side.name
            );
        }
        assert_eq!(
            side.stored(&ada).await,
            (Decimal::from(5_994_967_296u64), Decimal::from(2_550_000u64)),
            "{}",
            side.name
        );
        assert_eq!(
            side.stored(&bob).await,
            (Decimal::from(900_000_000u64), Decimal::from(30_000u64)),
            "{}",
            side.name
        );
    }

    // Stopped sessions' states can go (Ada's two and Bob's): nothing is read or counted again.
    for side in &sides {
        let reader = side.ingester().await;
        let pruned = reader
            .prune_stopped(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap())
            .await
            .unwrap();
        assert_eq!(pruned, 3, "{}", side.name);
        let report = reader.ingest().await.unwrap();
        assert_eq!((report.events, report.usage.len()), (0, 0), "{report:?}");
    }

    // November 1st: October closes; Ada used 5,994,967,296 bytes, 5,000,000,000 included,
    // 994,967,296 × 0.000000002 = 1.989934592, billed 1.99 beside November's 30.00. Bob stayed
    // inside his allowance (900,000,000 bytes).
    for side in &sides {
        side.clock
            .set(Utc.with_ymd_and_hms(2026, 11, 1, 1, 0, 0).unwrap());
        let (rated, run) = side.usage.bill(side.tenant, date(11, 1)).await.unwrap();
        // One charge per subscription: Bob's bills nothing (a zero line says so).
        assert_eq!(rated.added.len(), 2, "{}: {rated:?}", side.name);
        assert_eq!(run.invoices, 2);
        for (user, customer, _) in &side.customers {
            let november = side
                .billing
                .store()
                .invoices_of(side.tenant, *customer)
                .await
                .unwrap()
                .into_iter()
                .find(|i| i.issue_date == date(11, 1))
                .unwrap();
            let lines: Vec<(LineKind, Decimal, Decimal)> = november
                .lines
                .iter()
                .map(|l| (l.kind, l.quantity, l.amount.amount()))
                .collect();
            if *user == ada {
                assert_eq!(
                    lines,
                    [
                        (LineKind::Recurring, dec!(1), dec!(30.00)),
                        (LineKind::Usage, Decimal::from(994_967_296u64), dec!(1.99)),
                    ],
                    "{}",
                    side.name
                );
                assert_eq!(november.total.amount(), dec!(31.99));
            } else {
                assert_eq!(
                    lines,
                    [
                        (LineKind::Recurring, dec!(1), dec!(30.00)),
                        (LineKind::Usage, dec!(0), dec!(0.00)),
                    ],
                    "{}",
                    side.name
                );
            }
        }
    }
}
