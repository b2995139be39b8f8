//! A frozen worker never stalls a tenant's bill run (PostgreSQL, with DATABASE_URL).
//!
//! A bill-run worker stopped with SIGSTOP inside its write transaction keeps the tenant's
//! invoice counter row locked. The transaction's idle-in-transaction timeout (from
//! `LeaseSettings`, shorter than the lease) makes PostgreSQL end its session; a replacement
//! worker, whose lock waits are bounded by the lock timeout and retried, finishes the run
//! within one lease, with gapless numbers; the frozen worker, resumed, commits nothing.
//!
//! The frozen worker is a real process: this test binary started again with
//! `DOTMAC_FROZEN_WORKER` set (hence `harness = false` and the small runner in `main`). It
//! pauses before its first chunk commit (a `dotmac_sqlx::testing` hook), says `READY` on
//! stdout and waits for a line on stdin.

// Helpers outside test functions unwrap too: a failing unwrap is a failing test.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::pin::Pin;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fibre::{customer, day, plan};
use common::{at, new_tenant};
use dotmac_billing::{BillingSettings, InvoiceStore, SubscriptionStore};
use dotmac_core::{SubscriptionId, SystemClock, TenantId};
use dotmac_sqlx::{
    BillRunId, BillWorker, Database, DatabaseOptions, LeaseSettings, SqlError, SqlStore,
    WorkerReport,
};

/// Set in the child: `"<tenant> <run>"`.
const CHILD_ENV: &str = "DOTMAC_FROZEN_WORKER";
/// The child's connections, to find its session in `pg_stat_activity`.
const CHILD_APPLICATION: &str = "dotmac-frozen-worker";
const READY: &str = "READY";
/// The lease of the frozen-worker run: its defaults give a 1 s lock timeout and a 2 s
/// idle-in-transaction timeout.
const LEASE_MS: i64 = 4000;
/// What "within one lease" allows on top: claims, reads and writes of a busy 2-core machine.
const SLACK: Duration = Duration::from_secs(3);
const SUBSCRIPTIONS: u128 = 24;
/// Jan (prorated), Feb and Mar for every subscription.
const INVOICES: usize = 3 * 24;

fn lease() -> LeaseSettings {
    LeaseSettings::new(chrono::Duration::milliseconds(LEASE_MS))
}

fn schema() -> String {
    format!(
        "dotmac_test_lease_timeouts_{:08x}",
        common::migrations_fingerprint()
    )
}

/// The test's PostgreSQL database (its own schema), connecting as `application`; `None`
/// without DATABASE_URL.
async fn postgres(application: &str) -> Option<(Database, String)> {
    let url = std::env::var("DATABASE_URL").ok()?;
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}application_name={application}");
    let db = Database::connect_with(
        DatabaseOptions::new(&url)
            .schema(schema())
            .max_connections(4),
    )
    .await
    .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unusable: {e}"));
    Some((db, url))
}

/// A plain connection to the same schema, for what the API does not show (`pg_locks`) and
/// for holding a lock from outside.
async fn raw(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(schema())
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Works `run` of `tenant` as `worker` with the real clock, once.
async fn work(
    store: &SqlStore,
    tenant: TenantId,
    run: BillRunId,
    worker: &str,
) -> Result<WorkerReport, SqlError> {
    let plans = HashMap::from([(plan().id, plan())]);
    let settings = BillingSettings::default();
    let job = BillWorker {
        tenant,
        run,
        as_of: day(3, 1),
        plans: &plans,
        settings: &settings,
        worker,
        lease: lease(),
    };
    store.run_bill_worker(&job, &SystemClock).await
}

/// Invoices per subscription, and every number, sorted.
async fn issued(store: &SqlStore, tenant: TenantId) -> (BTreeMap<SubscriptionId, usize>, Vec<u64>) {
    let mut per_subscription = BTreeMap::new();
    let mut numbers = Vec::new();
    for i in 0..SUBSCRIPTIONS {
        for invoice in store.invoices_of(tenant, customer(i)).await.unwrap() {
            numbers.push(invoice.number.unwrap().0);
            *per_subscription
                .entry(invoice.subscription.unwrap())
                .or_insert(0) += 1;
        }
    }
    numbers.sort_unstable();
    (per_subscription, numbers)
}

/// Sessions of the child that sit inside a transaction, and how many of them hold a lock on
/// `invoice_counters` (the table-level lock of the counter row's UPDATE).
async fn child_sessions(conn: &mut sqlx::PgConnection) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COUNT(DISTINCT a.pid), COUNT(l.pid) FROM pg_stat_activity a \
         LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted \
           AND l.relation = 'invoice_counters'::regclass AND l.mode = 'RowExclusiveLock' \
         WHERE a.application_name = $1 AND a.state LIKE 'idle in transaction%'",
    )
    .bind(CHILD_APPLICATION)
    .fetch_one(conn)
    .await
    .unwrap()
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} failed");
}

/// The child process; killed (SIGKILL works on a stopped process) whatever the test's end.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    fn start(tenant: TenantId, run: BillRunId) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, format!("{tenant} {run}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Worker {
            child,
            stdin,
            lines,
        }
    }

    /// The next line the child prints, waiting at most `timeout`.
    fn line(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no line from the worker within {timeout:?}: {e}"))
    }

    /// Lets the paused child go on (it waits for a line on stdin).
    fn resume(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"go\n").unwrap();
        }
    }

    /// Its exit code, waiting at most `timeout`.
    fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn a_frozen_worker_never_stalls_the_run() {
    let Some((db, url)) = postgres("dotmac-lease-test").await else {
        println!("    skipped: needs DATABASE_URL (PostgreSQL)");
        return;
    };
    let store = SqlStore::new(db.clone());
    let tenant = new_tenant(&db).await;
    common::fibre::seed(&store, tenant, SUBSCRIPTIONS).await;
    let run = BillRunId::new();
    let chunks = store
        .plan_billing_run(tenant, run, day(3, 1), 6, at(1, 0))
        .await
        .unwrap();
    assert_eq!(chunks, 4);

    let mut worker = Worker::start(tenant, run);
    assert_eq!(worker.line(Duration::from_secs(60)), READY);
    let mut conn = raw(&url).await;
    let (in_transaction, counter_locks) = child_sessions(&mut conn).await;
    assert!(
        in_transaction >= 1 && counter_locks == 1,
        "the paused worker holds the invoice counter in an open transaction \
         ({in_transaction} sessions in a transaction, {counter_locks} counter locks)"
    );
    signal(&worker.child, "-STOP");
    let frozen = Instant::now();

    // The replacement works the run until it is complete: its own chunks at once (its wait
    // for the counter times out and is retried until PostgreSQL ends the frozen session),
    // the frozen worker's chunks when their lease ends.
    let one_lease = lease().lease().to_std().unwrap();
    let mut replacement = WorkerReport::default();
    let finished = tokio::time::timeout(one_lease + SLACK, async {
        loop {
            let report = work(&store, tenant, run, "replacement").await.unwrap();
            replacement.chunks += report.chunks;
            replacement.invoices += report.invoices;
            replacement.lock_timeouts += report.lock_timeouts;
            if db
                .bill_run_progress(tenant, run)
                .await
                .unwrap()
                .is_complete()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let took = frozen.elapsed();
    println!("    the run was complete {took:?} after the worker froze (lease {LEASE_MS} ms)");
    assert!(
        finished.is_ok(),
        "the run is not complete {took:?} after the worker froze (lease {one_lease:?})"
    );
    assert_eq!(replacement.chunks, 4, "{replacement:?}");
    assert_eq!(replacement.invoices, INVOICES, "{replacement:?}");
    assert!(
        replacement.lock_timeouts >= 1,
        "the replacement waited for the frozen worker's counter lock: {replacement:?}"
    );
    let (per_subscription, numbers) = issued(&store, tenant).await;
    assert_eq!(per_subscription.len(), 24);
    assert!(
        per_subscription.values().all(|n| *n == 3),
        "{per_subscription:?}"
    );
    assert_eq!(
        numbers,
        (1..=INVOICES as u64).collect::<Vec<_>>(),
        "gapless"
    );
    assert_eq!(db.outbox_events(tenant).await.unwrap().len(), INVOICES);
    // The server ends the frozen sessions on its idle-in-transaction timer, which runs about
    // as long as the lease: the run can complete (the frozen chunks' leases ended) a moment
    // before the timer fires, and on a loaded machine a terminated backend stays listed a
    // moment longer. So wait up to one more lease, then a little.
    let mut sessions = child_sessions(&mut conn).await;
    let listed_until = Instant::now() + one_lease + Duration::from_secs(2);
    while sessions != (0, 0) && Instant::now() < listed_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sessions = child_sessions(&mut conn).await;
    }
    assert_eq!(
        sessions,
        (0, 0),
        "PostgreSQL ended the frozen worker's transaction"
    );

    // Resumed, the frozen worker finds its session gone: it fails and commits nothing.
    signal(&worker.child, "-CONT");
    worker.resume();
    let line = worker.line(Duration::from_secs(30));
    println!("    the resumed worker: {line}");
    assert!(
        line.starts_with("ERROR ") && line.contains("commit bill run chunk"),
        "{line}"
    );
    assert_eq!(worker.exit_code(Duration::from_secs(30)), Some(3));
    assert_eq!(issued(&store, tenant).await, (per_subscription, numbers));
    assert_eq!(db.outbox_events(tenant).await.unwrap().len(), INVOICES);
    assert_eq!(db.last_number(tenant, "billing.invoice").await.unwrap(), 72);
}

/// The child: works the run with the pause hook, reports `ERROR …` and exits with 3 when the
/// worker fails.
async fn frozen_worker(spec: &str) -> ExitCode {
    fn pause() {
        println!("{READY}");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    let mut parts = spec.split(' ');
    let (Some(tenant), Some(run)) = (parts.next(), parts.next()) else {
        eprintln!("{CHILD_ENV} must be \"<tenant> <run>\", not {spec:?}");
        return ExitCode::from(2);
    };
    let tenant = TenantId::from_uuid(tenant.parse().unwrap());
    let run = BillRunId::from_uuid(run.parse().unwrap());
    dotmac_sqlx::testing::set_before_chunk_commit_hook(pause);
    let (db, _) = postgres(CHILD_APPLICATION).await.unwrap();
    let store = SqlStore::new(db);
    match work(&store, tenant, run, "frozen").await {
        Ok(report) => {
            println!("DONE {report:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("ERROR {e}");
            ExitCode::from(3)
        }
    }
}

async fn a_held_counter_times_out_with_a_typed_error_and_writes_nothing() {
    let Some((db, url)) = postgres("dotmac-lease-test").await else {
        println!("    skipped: needs DATABASE_URL (PostgreSQL)");
        return;
    };
    let store = SqlStore::new(db.clone());
    let tenant = new_tenant(&db).await;
    common::fibre::seed(&store, tenant, SUBSCRIPTIONS).await;
    let run = BillRunId::new();
    let chunks = store
        .plan_billing_run(tenant, run, day(3, 1), 6, at(1, 0))
        .await
        .unwrap();
    assert_eq!(chunks, 4);
    // The counter row exists (an earlier invoice), so the chunk's reservation has to lock it.
    assert_eq!(
        db.reserve_numbers(tenant, "billing.invoice", 1)
            .await
            .unwrap(),
        1
    );
    let lock_timeout = Duration::from_millis(300);
    let lease = LeaseSettings::new(chrono::Duration::minutes(5)).with_lock_timeout(lock_timeout);
    let claim = db
        .claim_chunk(tenant, run, "w", chrono::Utc::now(), lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.lease, lease);
    let plans = HashMap::from([(plan().id, plan())]);
    let settings = BillingSettings::default();
    let job = BillWorker {
        tenant,
        run,
        as_of: day(3, 1),
        plans: &plans,
        settings: &settings,
        worker: "w",
        lease,
    };
    let subscriptions_before = subscriptions(&store, tenant).await;

    // Another transaction holds the tenant's counter row, as a frozen worker would.
    let mut holder = raw(&url).await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT last_number FROM invoice_counters WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .execute(&mut holder)
        .await
        .unwrap();
    let started = Instant::now();
    let timed_out = tokio::time::timeout(
        Duration::from_secs(30),
        store.bill_claimed_chunk(&claim, &job, &SystemClock),
    )
    .await
    .unwrap_or_else(|_| panic!("the lock wait is bounded"));
    let waited = started.elapsed();
    assert!(
        matches!(
            timed_out,
            Err(SqlError::LockTimeout {
                operation: "reserve invoice numbers",
                ..
            })
        ),
        "{timed_out:?}"
    );
    assert!(
        waited >= lock_timeout && waited < Duration::from_secs(10),
        "waited {waited:?} for a {lock_timeout:?} lock timeout"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    // Nothing was written (no invoice, event, number or subscription state), and the same
    // claim can try again.
    assert_eq!(issued(&store, tenant).await, (BTreeMap::new(), Vec::new()));
    assert!(db.outbox_events(tenant).await.unwrap().is_empty());
    assert_eq!(db.last_number(tenant, "billing.invoice").await.unwrap(), 1);
    assert_eq!(db.bill_run_progress(tenant, run).await.unwrap().done, 0);
    assert_eq!(subscriptions(&store, tenant).await, subscriptions_before);
    let summary = store
        .bill_claimed_chunk(&claim, &job, &SystemClock)
        .await
        .unwrap();
    // Six subscriptions, three invoices each, numbered after the earlier one.
    assert_eq!(summary.invoices, 18);
    let (per_subscription, numbers) = issued(&store, tenant).await;
    assert_eq!(per_subscription.len(), 6);
    assert_eq!(numbers, (2..=19).collect::<Vec<u64>>());
    assert_eq!(db.last_number(tenant, "billing.invoice").await.unwrap(), 19);
    assert_eq!(db.bill_run_progress(tenant, run).await.unwrap().done, 1);
}

/// Every subscription of the seeded tenant as stored.
async fn subscriptions(store: &SqlStore, tenant: TenantId) -> Vec<dotmac_billing::Subscription> {
    let mut all = Vec::new();
    for i in 0..SUBSCRIPTIONS {
        all.extend(store.subscriptions_of(tenant, customer(i)).await.unwrap());
    }
    all
}

/// Every backend: a lease that is not positive, ends past the end of time (which used to
/// panic in the date arithmetic) or has timeouts that would not free a frozen worker's locks
/// before the lease ends is refused, and claims nothing.
async fn unusable_leases_are_refused_and_claim_nothing() {
    for (name, db) in common::backends().await {
        let store = SqlStore::new(db.clone());
        let tenant = new_tenant(&db).await;
        common::fibre::seed(&store, tenant, SUBSCRIPTIONS).await;
        let run = BillRunId::new();
        store
            .plan_billing_run(tenant, run, day(3, 1), 12, at(1, 0))
            .await
            .unwrap();
        let minute = LeaseSettings::new(chrono::Duration::minutes(1));
        for (lease, option) in [
            (LeaseSettings::new(chrono::Duration::MAX), "lease"),
            (LeaseSettings::new(chrono::Duration::zero()), "lease"),
            (
                minute.with_idle_in_transaction_timeout(Duration::from_secs(60)),
                "idle_in_transaction_timeout",
            ),
            (minute.with_lock_timeout(Duration::ZERO), "lock_timeout"),
        ] {
            let refused = db.claim_chunk(tenant, run, "w", at(1, 0), lease).await;
            assert!(
                matches!(&refused, Err(SqlError::InvalidOption { option: o, .. }) if *o == option),
                "{name}: {lease:?}: {refused:?}"
            );
        }
        let claim = db
            .claim_chunk(tenant, run, "w", at(1, 0), chrono::Duration::minutes(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((claim.chunk_no, claim.attempt), (0, 1), "{name}");
        assert_eq!(claim.lease, minute, "{name}");
    }
}

type Test = fn() -> Pin<Box<dyn Future<Output = ()> + Send>>;

const TESTS: &[(&str, Test)] = &[
    ("a_frozen_worker_never_stalls_the_run", || {
        Box::pin(a_frozen_worker_never_stalls_the_run())
    }),
    (
        "a_held_counter_times_out_with_a_typed_error_and_writes_nothing",
        || Box::pin(a_held_counter_times_out_with_a_typed_error_and_writes_nothing()),
    ),
    ("unusable_leases_are_refused_and_claim_nothing", || {
        Box::pin(unusable_leases_are_refused_and_claim_nothing())
    }),
];

/// Runs the tests (names containing one of the arguments, or all), or the child worker.
fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return runtime.block_on(frozen_worker(&spec));
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<&(&str, Test)> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in selected {
        let outcome = runtime.block_on(async { tokio::spawn(test()).await });
        match outcome {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
