//! The RADIUS accounting reader: FreeRADIUS's `radacct` table, read incrementally, into usage
//! events (features `postgres`, `usage` and `customers`).
//!
//! FreeRADIUS keeps one `radacct` row per session (`acctuniqueid`), inserted by the Start and
//! updated in place by every Interim-Update and by the Stop, with 64-bit totals (its queries
//! add `Gigawords << 32` to the octets). [`RadacctIngester`] turns those rows into usage events
//! through dotmac-usage's [`RadiusNormaliser`], so the rules for wraps, resets, zero-filled
//! Stops and stale records are the normaliser's, and stores the events in the tenant's usage
//! store, where usage rating finds them.
//!
//! **What is read.** The reader installs (once, [`RadacctIngester::connect`]) a column
//! `dotmac_change xid8` on `radacct` and a trigger that stamps every inserted or updated row
//! with the id of the transaction that wrote it (`pg_current_xact_id()`); rows are read in
//! `(dotmac_change, radacctid)` order after the reader's mark. Transaction ids are assigned
//! when a transaction starts writing, not when it commits, so a row stamped with a smaller id
//! can become visible after one with a larger id. The mark therefore only moves over rows
//! whose transaction id is below the reading snapshot's `xmin` (every transaction below it has
//! ended, so no row can appear there later: a later change is a new transaction with a larger
//! id); rows above it are read and counted too, but read again by the next pass, which is
//! harmless (below).
//!
//! **Nothing counted twice.** What the reader last saw of each session, the normaliser's
//! [`SessionState`], is kept per tenant, source and `acctuniqueid` (`radius_ingest_sessions`,
//! migration 0014) and restored before the session's next row is normalised: a row read again
//! unchanged yields nothing, an updated row yields its growth. The usage events, the sessions'
//! new states and the mark (`radius_ingest_marks`) are written in one transaction of the
//! tenant's DotMac database, which first locks the mark row (on SQLite the write lock), so two
//! readers of one source take turns and the second computes its deltas from the first's
//! states. Event ids are the normaliser's (session and usage counted so far), so an event
//! written twice is stored once.
//!
//! **Nothing lost.** A crash before that commit leaves the mark, the states and the usage as
//! they were: the next reader, a new instance built from the persisted mark
//! ([`RadacctIngester::connect`] again), reads the same rows, as they are now.
//!
//! **Refused rows.** A row the normaliser refuses (an unknown User-Name, a counter out of
//! range) is reported in [`IngestReport::rejected`] and counted; its session gets no state, so
//! if the row changes later (the user is now known) it is counted from zero then.
//!
//! **What the table cannot tell.** A `radacct` row holds a session's latest totals only: the
//! interims between two passes are one growth, dated at the latest, and a Stop without traffic
//! attributes (FreeRADIUS's query writes zeros) overwrites the totals, so the growth since the
//! last pass before such a Stop is lost (the normaliser keeps the totals it saw and takes
//! nothing back). Run passes at least as often as the NAS's interim interval, or have the NAS
//! send its counters in the Stop.
//!
//! One reader serves one tenant's FreeRADIUS database, as the [provisioning
//! adapter](crate::freeradius) does: FreeRADIUS's tables have no tenant column. User names
//! are resolved to the customer and subscription of the tenant's network service of that
//! name (`network_services`, dotmac-customers' store).

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{CustomerId, DomainEvent, EventId, IdDigest, SubscriptionId, TenantId};
use dotmac_usage::AccountingEvent;
use dotmac_usage::UsageError;
use dotmac_usage::UsageEvent;
use dotmac_usage::radius::{
    AcctStatusType, RadiusNormaliser, RadiusRecord, RadiusSettings, SessionKey, SessionState,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;
use sqlx::types::Json;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::docs::{Bind, json};
use crate::error::{Context, Result, SqlError};
use crate::input;
use crate::store::SqlStore;

/// The most rows a page may hold: keeps a page's SQLite statements far below its bound
/// parameters, and its transaction short.
pub const MAX_BATCH: u32 = 1000;

/// How wide the NAS's counters are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CounterWidth {
    /// The NAS sends Gigawords: `radacct`'s totals are 64-bit, and a total that falls was
    /// reset (a 64-bit counter does not wrap).
    #[default]
    Gigawords,
    /// The NAS sends 32-bit Octets only: `radacct`'s totals are 32-bit, and a total that falls
    /// is a wrap or a reset as the normaliser's evidence rule (elapsed time × line rate)
    /// decides.
    ThirtyTwoBit,
}

/// How a [`RadacctIngester`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadacctSettings {
    source: String,
    radius: RadiusSettings,
    width: CounterWidth,
    batch: u32,
}

impl RadacctSettings {
    /// Rows normalised with `radius` (direction, meters, line rate), source name
    /// `freeradius`, Gigawords counters, pages of 500 rows.
    pub fn new(radius: RadiusSettings) -> Self {
        RadacctSettings {
            source: "freeradius".to_owned(),
            radius,
            width: CounterWidth::Gigawords,
            batch: 500,
        }
    }

    /// Another name for the source (a tenant with two FreeRADIUS databases keeps a mark for
    /// each).
    #[must_use]
    pub fn source(mut self, name: &str) -> Self {
        name.clone_into(&mut self.source);
        self
    }

    /// The NAS's counter width.
    #[must_use]
    pub fn counters(mut self, width: CounterWidth) -> Self {
        self.width = width;
        self
    }

    /// Rows per page, 1 to [`MAX_BATCH`] (clamped).
    #[must_use]
    pub fn batch(mut self, rows: u32) -> Self {
        self.batch = rows.clamp(1, MAX_BATCH);
        self
    }

    /// The source name.
    pub fn source_name(&self) -> &str {
        &self.source
    }

    /// The normaliser's settings.
    pub fn radius(&self) -> &RadiusSettings {
        &self.radius
    }
}

/// One `radacct` row, as the reader takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RadacctRow {
    /// `radacctid`.
    pub radacct_id: i64,
    /// `acctuniqueid`: the session.
    pub unique_id: String,
    /// `acctsessionid`: the NAS's own session id.
    pub session_id: String,
    /// `username`.
    pub username: Option<String>,
    /// `nasipaddress`.
    pub nas: Option<String>,
    /// `acctstarttime`.
    pub start: Option<DateTime<Utc>>,
    /// `acctupdatetime`.
    pub update: Option<DateTime<Utc>>,
    /// `acctstoptime`.
    pub stop: Option<DateTime<Utc>>,
    /// `acctsessiontime`.
    pub session_time: Option<i64>,
    /// `acctinputoctets` (64-bit, Gigawords included).
    pub input_octets: Option<i64>,
    /// `acctoutputoctets`.
    pub output_octets: Option<i64>,
    /// The id of the transaction that last wrote the row (`dotmac_change`).
    pub change: u64,
}

fn malformed(reason: &'static str) -> UsageError {
    UsageError::MalformedRadiusRecord { reason }
}

/// One direction's total as the record's Octets and Gigawords.
fn split(
    total: Option<i64>,
    width: CounterWidth,
    reason: &'static str,
) -> std::result::Result<(Option<u32>, Option<u32>), UsageError> {
    let Some(total) = total else {
        return Ok((None, None));
    };
    let total = u64::try_from(total).map_err(|_| malformed(reason))?;
    let low = u32::try_from(total & u64::from(u32::MAX)).map_err(|_| malformed(reason))?;
    let high = u32::try_from(total >> 32).map_err(|_| malformed(reason))?;
    match width {
        CounterWidth::Gigawords => Ok((Some(low), Some(high))),
        CounterWidth::ThirtyTwoBit if high == 0 => Ok((Some(low), None)),
        CounterWidth::ThirtyTwoBit => Err(malformed(reason)),
    }
}

impl RadacctRow {
    /// The row as the accounting record it sums up: a Stop once `acctstoptime` is set, an
    /// Interim-Update once it was updated after its start, else a Start; at the latest of its
    /// times; its totals as Octets and Gigawords (or Octets alone, [`CounterWidth`]).
    ///
    /// # Errors
    ///
    /// [`UsageError::MalformedRadiusRecord`] for a row without `acctuniqueid` or any time, a
    /// negative total or session time, or a total above 32 bits from a 32-bit NAS.
    pub fn record(&self, width: CounterWidth) -> std::result::Result<RadiusRecord, UsageError> {
        if self.unique_id.is_empty() {
            return Err(malformed("radacct row without acctuniqueid"));
        }
        let timestamp = [self.start, self.update, self.stop]
            .into_iter()
            .flatten()
            .max()
            .ok_or(malformed(
                "radacct row without a start, update or stop time",
            ))?;
        let status = if self.stop.is_some() {
            AcctStatusType::Stop
        } else if self
            .update
            .is_some_and(|u| self.start.is_none_or(|s| u > s))
        {
            AcctStatusType::InterimUpdate
        } else {
            AcctStatusType::Start
        };
        let (input_octets, input_gigawords) = split(
            self.input_octets,
            width,
            "acctinputoctets out of range for the NAS's counters",
        )?;
        let (output_octets, output_gigawords) = split(
            self.output_octets,
            width,
            "acctoutputoctets out of range for the NAS's counters",
        )?;
        let session_time = self
            .session_time
            .map(|t| u32::try_from(t).map_err(|_| malformed("acctsessiontime out of range")))
            .transpose()?;
        Ok(RadiusRecord {
            status,
            session_id: self.unique_id.clone(),
            acct_session_id: Some(self.session_id.clone()).filter(|s| !s.is_empty()),
            nas: self.nas.clone(),
            user_name: self.username.clone().unwrap_or_default(),
            timestamp,
            input_octets,
            input_gigawords,
            output_octets,
            output_gigawords,
            session_time,
        })
    }
}

/// What one session's row added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionDelta {
    /// The session (`acctuniqueid`).
    pub unique_id: String,
    /// Its user name.
    pub username: String,
    /// The customer billed.
    pub customer: CustomerId,
    /// The subscription, when the service names one.
    pub subscription: Option<SubscriptionId>,
    /// When (the row's latest time).
    pub at: DateTime<Utc>,
    /// Bytes downloaded since the reader last saw the session.
    pub download: u64,
    /// Bytes uploaded since then.
    pub upload: u64,
}

/// A row the normaliser refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RejectedRow {
    /// The session (`acctuniqueid`).
    pub unique_id: String,
    /// Its user name.
    pub username: String,
    /// Why.
    pub error: UsageError,
}

/// What a pass of [`RadacctIngester::ingest`] did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct IngestReport {
    /// Rows read.
    pub rows: usize,
    /// Usage events stored (new ones only).
    pub events: usize,
    /// Per row that added usage, what it added.
    pub usage: Vec<SessionDelta>,
    /// Rows refused.
    pub rejected: Vec<RejectedRow>,
    /// The mark after the pass: every change by a transaction below it has been counted.
    pub mark: u64,
}

impl IngestReport {
    /// Bytes downloaded and uploaded by `username` in this pass.
    pub fn usage_of(&self, username: &str) -> (u64, u64) {
        self.usage
            .iter()
            .filter(|d| d.username == username)
            .fold((0u64, 0u64), |(down, up), d| {
                (down.saturating_add(d.download), up.saturating_add(d.upload))
            })
    }
}

/// Where the reader stands: after the row `(change, row)` in `(dotmac_change, radacctid)`
/// order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Mark {
    change: u64,
    row: i64,
}

/// One page's outcome in the DotMac database.
#[derive(Debug, Default)]
struct PageOutcome {
    events: usize,
    usage: Vec<SessionDelta>,
    rejected: Vec<RejectedRow>,
    outcomes: Outcomes,
    mark: Mark,
}

/// Rows by outcome, for `dotmac_usage_radacct_rows_total`.
#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    usage: u64,
    no_usage: u64,
    rejected: u64,
}

/// The page's records normalised against the sessions' saved states: the events, the deltas,
/// the refusals, and the new states to save.
struct Normalised {
    events: Vec<UsageEvent>,
    usage: Vec<SessionDelta>,
    /// One `usage.session_accounted` per delta, written with the usage.
    accounted: Vec<OutboxEvent>,
    rejected: Vec<RejectedRow>,
    states: Vec<(String, SessionState, DateTime<Utc>, u64)>,
    outcomes: Outcomes,
}

type Accounts = HashMap<String, (CustomerId, Option<SubscriptionId>)>;

fn normalise_page(
    tenant: TenantId,
    settings: &RadacctSettings,
    rows: &[RadacctRow],
    states: Vec<SessionState>,
    accounts: &Accounts,
) -> Normalised {
    let mut normaliser = RadiusNormaliser::with_settings(settings.radius);
    for state in states {
        normaliser.restore_session(state);
    }
    let resolver = |name: &str| accounts.get(name).copied();
    let mut out = Normalised {
        events: Vec::new(),
        usage: Vec::new(),
        accounted: Vec::new(),
        rejected: Vec::new(),
        states: Vec::new(),
        outcomes: Outcomes::default(),
    };
    for row in rows {
        let username = row.username.clone().unwrap_or_default();
        let before = out.events.len();
        let result = row.record(settings.width).and_then(|record| {
            normaliser
                .normalise(&record, &resolver, &mut out.events)
                .map(|n| (n, record.timestamp))
        });
        match result {
            Ok((n, at)) => {
                let key = SessionKey::Unique(row.unique_id.clone());
                if let Some(state) = normaliser.session_state(&key) {
                    out.states
                        .push((row.unique_id.clone(), state, at, row.change));
                }
                if n == 0 {
                    out.outcomes.no_usage = out.outcomes.no_usage.saturating_add(1);
                    continue;
                }
                out.outcomes.usage = out.outcomes.usage.saturating_add(1);
                let (mut download, mut upload) = (0u64, 0u64);
                let mut account = None;
                for event in out.events.get(before..).unwrap_or_default() {
                    let bytes = u64::try_from(event.quantity).unwrap_or(u64::MAX);
                    if event.meter == settings.radius.download_meter {
                        download = download.saturating_add(bytes);
                    } else {
                        upload = upload.saturating_add(bytes);
                    }
                    account = Some((event.customer, event.subscription));
                }
                if let Some((customer, subscription)) = account {
                    // One event per row version that added usage: its id derives from the
                    // session and the row's change stamp, so a re-read row (which adds
                    // nothing: the session's state is saved) could never publish it twice.
                    let id = EventId::derived(
                        IdDigest::new("usage.session_accounted")
                            .uuid(tenant.as_uuid())
                            .str(&settings.source)
                            .str(&row.unique_id)
                            .u64(row.change),
                    );
                    out.accounted.push(OutboxEvent::new(DomainEvent::at(
                        id,
                        tenant,
                        at,
                        AccountingEvent::SessionAccounted {
                            customer,
                            subscription,
                            username: username.clone(),
                            session: row.unique_id.clone(),
                            at,
                            download,
                            upload,
                        },
                    )));
                    out.usage.push(SessionDelta {
                        unique_id: row.unique_id.clone(),
                        username,
                        customer,
                        subscription,
                        at,
                        download,
                        upload,
                    });
                }
            }
            Err(error) => {
                out.outcomes.rejected = out.outcomes.rejected.saturating_add(1);
                out.rejected.push(RejectedRow {
                    unique_id: row.unique_id.clone(),
                    username,
                    error,
                });
            }
        }
    }
    out
}

fn decode_mark(body: Option<serde_json::Value>) -> Result<Mark> {
    match body {
        None => Ok(Mark::default()),
        Some(value) => serde_json::from_value(value).map_err(|source| SqlError::Json {
            what: "radius ingest mark",
            source,
        }),
    }
}

fn decode_state(body: serde_json::Value) -> Result<SessionState> {
    serde_json::from_value(body).map_err(|source| SqlError::Json {
        what: "radius session state",
        source,
    })
}

fn source_binds(tenant: TenantId, source: &str) -> [Bind; 2] {
    [Bind::Uuid(tenant.as_uuid()), Bind::Text(source.to_owned())]
}

/// A `network_services` row's user name, customer and subscription.
fn account_row<R>(row: &R) -> Result<(String, (CustomerId, Option<SubscriptionId>))>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let name: String = row.try_get(0).during("resolve RADIUS user names")?;
    let customer: Uuid = row.try_get(1).during("resolve RADIUS user names")?;
    let subscription: Uuid = row.try_get(2).during("resolve RADIUS user names")?;
    Ok((
        name,
        (
            CustomerId::from_uuid(customer),
            Some(SubscriptionId::from_uuid(subscription)),
        ),
    ))
}

for_each_dialect! {
    shared {
        /// The mark row, created at the start when missing, and locked for the transaction
        /// (PostgreSQL: `FOR UPDATE`; SQLite: the transaction holds the write lock).
        pub(crate) async fn lock_mark(tx: &mut Tx, tenant: TenantId, source: &str) -> Result<Mark> {
            let [t, s] = source_binds(tenant, source);
            docs::execute(
                tx,
                "INSERT INTO radius_ingest_marks (tenant_id, source, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, source) DO NOTHING",
                &[t.clone(), s.clone(), json("radius ingest mark", &Mark::default())?],
            )
            .await?;
            let sql = if IS_POSTGRES {
                "SELECT body FROM radius_ingest_marks WHERE tenant_id = $1 AND source = $2 FOR UPDATE"
            } else {
                "SELECT body FROM radius_ingest_marks WHERE tenant_id = $1 AND source = $2"
            };
            decode_mark(docs::bodies(tx, sql, &[t, s]).await?.into_iter().next())
        }


        pub(crate) async fn save_state(
            tx: &mut Tx,
            tenant: TenantId,
            source: &str,
            unique_id: &str,
            state: &SessionState,
            seen_at: DateTime<Utc>,
            change: u64,
        ) -> Result<()> {
            let [t, s] = source_binds(tenant, source);
            docs::execute(
                tx,
                "INSERT INTO radius_ingest_sessions (tenant_id, source, unique_id, stopped, seen_at, change, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, source, unique_id) DO UPDATE \
                 SET stopped = excluded.stopped, seen_at = excluded.seen_at, \
                     change = excluded.change, body = excluded.body",
                &[
                    t,
                    s,
                    Bind::Text(unique_id.to_owned()),
                    Bind::Bool(state.stopped()),
                    Bind::Time(seen_at),
                    Bind::I64(i64::try_from(change).unwrap_or(i64::MAX)),
                    json("radius session state", state)?,
                ],
            )
            .await?;
            Ok(())
        }

        pub(crate) async fn save_mark(tx: &mut Tx, tenant: TenantId, source: &str, mark: Mark) -> Result<()> {
            let [t, s] = source_binds(tenant, source);
            docs::execute(
                tx,
                "UPDATE radius_ingest_marks SET body = $3 WHERE tenant_id = $1 AND source = $2",
                &[t, s, json("radius ingest mark", &mark)?],
            )
            .await?;
            Ok(())
        }

        pub(crate) async fn prune(
            pool: &sqlx::Pool<Db>,
            tenant: TenantId,
            source: &str,
            before: DateTime<Utc>,
        ) -> Result<u64> {
            let mut tx = begin_tenant(pool, tenant).await?;
            // Only rows the mark has passed: a row above it can be read again, and its
            // session, forgotten, would be counted again from zero.
            let mark = lock_mark(&mut tx, tenant, source).await?;
            let [t, s] = source_binds(tenant, source);
            let written = docs::execute(
                &mut tx,
                "DELETE FROM radius_ingest_sessions \
                 WHERE tenant_id = $1 AND source = $2 AND stopped = $3 AND seen_at < $4 \
                   AND change <= $5",
                &[
                    t,
                    s,
                    Bind::Bool(true),
                    Bind::Time(before),
                    Bind::I64(i64::try_from(mark.change).unwrap_or(i64::MAX)),
                ],
            )
            .await?;
            tx.commit().await.during("commit the pruned sessions")?;
            Ok(match written {
                crate::docs::Written::Rows(n) => n,
                crate::docs::Written::UniqueViolation => 0,
            })
        }

        /// A `radius_ingest_sessions` row read by `states`: the session and its state.
        fn session_state_row(row: &DbRow) -> Result<(String, SessionState)> {
            let id: String = row.try_get("unique_id").during("read radius session states")?;
            let body: Json<serde_json::Value> =
                row.try_get("body").during("read radius session states")?;
            Ok((id, decode_state(body.0)?))
        }
    }
    sqlite {
        /// The customer and subscription of each of the tenant's services named in `names`
        /// (the page's new sessions' user names), in one read per thousand names.
        pub(crate) async fn accounts(
            tx: &mut Tx,
            tenant: TenantId,
            names: &[&str],
        ) -> Result<Accounts> {
            let mut accounts = Accounts::new();
            for batch in names.chunks(1000) {
                let mut query = sqlx::QueryBuilder::<Db>::new(
                    "SELECT username, customer_id, subscription_id FROM network_services \
                     WHERE tenant_id = ",
                );
                query.push_bind(tenant.as_uuid());
                query.push(" AND username IN (");
                let mut list = query.separated(", ");
                for name in batch {
                    list.push_bind((*name).to_owned());
                }
                query.push(")");
                let rows = query
                    .build()
                    .fetch_all(&mut **tx)
                    .await
                    .during("resolve RADIUS user names")?;
                for row in &rows {
                    let (name, account) = account_row(row)?;
                    accounts.insert(name, account);
                }
            }
            Ok(accounts)
        }

        /// The saved states of the page's sessions.
        pub(crate) async fn states(
            tx: &mut Tx,
            tenant: TenantId,
            source: &str,
            ids: &[&str],
        ) -> Result<Vec<(String, SessionState)>> {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut query = sqlx::QueryBuilder::<Db>::new(
                "SELECT unique_id, body FROM radius_ingest_sessions WHERE tenant_id = ",
            );
            query.push_bind(tenant.as_uuid());
            query.push(" AND source = ").push_bind(source.to_owned());
            query.push(" AND unique_id IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind((*id).to_owned());
            }
            query.push(")");
            let rows = query
                .build()
                .fetch_all(&mut **tx)
                .await
                .during("read radius session states")?;
            rows.iter().map(session_state_row).collect()
        }

        /// Inserts the events whose ids are new; how many were.
        pub(crate) async fn insert_events(
            tx: &mut Tx,
            tenant: TenantId,
            events: &[UsageEvent],
        ) -> Result<usize> {
            let mut inserted = 0usize;
            for batch in events.chunks(2000) {
                inserted = inserted.saturating_add(usage::insert(tx, tenant, batch).await?.len());
            }
            Ok(inserted)
        }
    }
    postgres {
        /// The customer and subscription of each of the tenant's services named in `names`
        /// (the page's new sessions' user names), in one read.
        pub(crate) async fn accounts(
            tx: &mut Tx,
            tenant: TenantId,
            names: &[&str],
        ) -> Result<Accounts> {
            let rows = sqlx::query(
                "SELECT username, customer_id, subscription_id FROM network_services \
                 WHERE tenant_id = $1 AND username = ANY($2)",
            )
            .bind(tenant.as_uuid())
            .bind(names)
            .fetch_all(&mut **tx)
            .await
            .during("resolve RADIUS user names")?;
            rows.iter().map(account_row).collect()
        }

        /// The saved states of the page's sessions.
        pub(crate) async fn states(
            tx: &mut Tx,
            tenant: TenantId,
            source: &str,
            ids: &[&str],
        ) -> Result<Vec<(String, SessionState)>> {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let rows = sqlx::query(
                "SELECT unique_id, body FROM radius_ingest_sessions \
                 WHERE tenant_id = $1 AND source = $2 AND unique_id = ANY($3)",
            )
            .bind(tenant.as_uuid())
            .bind(source)
            .bind(ids)
            .fetch_all(&mut **tx)
            .await
            .during("read radius session states")?;
            rows.iter().map(session_state_row).collect()
        }

        /// Inserts the events whose ids are new; how many were.
        pub(crate) async fn insert_events(
            tx: &mut Tx,
            tenant: TenantId,
            events: &[UsageEvent],
        ) -> Result<usize> {
            let refs: Vec<&UsageEvent> = events.iter().collect();
            let mut inserted = 0usize;
            for batch in refs.chunks(2000) {
                let new = usage::insert(tx, tenant, batch, true)
                    .await
                    .during("write usage")?;
                inserted = inserted.saturating_add(new.len());
            }
            Ok(inserted)
        }
    }
}

impl Database {
    /// The reader's persisted mark for `source` (the start when there is none).
    async fn radius_mark(&self, tenant: TenantId, source: &str) -> Result<Mark> {
        let body = dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let [t, s] = source_binds(tenant, source);
            let bodies = d::docs::bodies(
                &mut tx,
                "SELECT body FROM radius_ingest_marks WHERE tenant_id = $1 AND source = $2",
                &[t, s],
            )
            .await?;
            tx.commit().await.during("end read")?;
            bodies.into_iter().next()
        });
        decode_mark(body)
    }

    /// One page in one transaction: lock the mark, restore the page's sessions, resolve the
    /// new sessions' users, normalise, store the new events, save the states, and move the
    /// mark to `stable` (never back).
    #[tracing::instrument(name = "dotmac.store.radius_ingest_page", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name(), rows = rows.len()))]
    async fn ingest_radius_page(
        &self,
        tenant: TenantId,
        settings: &RadacctSettings,
        rows: &[RadacctRow],
        stable: Option<Mark>,
    ) -> Result<PageOutcome> {
        let source = settings.source.as_str();
        input::key("radius source", source)?;
        // A row this database cannot key is refused like a malformed record, not an error
        // that would stop the reader at it for good.
        let mut unkeyable = Vec::new();
        let rows: Vec<RadacctRow> = rows
            .iter()
            .filter(|row| {
                let keyable = input::key("acctuniqueid", &row.unique_id).is_ok()
                    && row
                        .username
                        .as_deref()
                        .is_none_or(|name| input::key("RADIUS user name", name).is_ok());
                if !keyable {
                    unkeyable.push(RejectedRow {
                        unique_id: row.unique_id.chars().take(64).collect(),
                        username: row
                            .username
                            .clone()
                            .unwrap_or_default()
                            .chars()
                            .take(64)
                            .collect(),
                        error: malformed("acctuniqueid or username longer than 1 KiB"),
                    });
                }
                keyable
            })
            .cloned()
            .collect();
        let rows = rows.as_slice();
        let ids: Vec<&str> = rows.iter().map(|r| r.unique_id.as_str()).collect();
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            let held = d::radacct::lock_mark(&mut tx, tenant, source).await?;
            let states = d::radacct::states(&mut tx, tenant, source, &ids).await?;
            let tracked: HashSet<&str> =
                states.iter().map(|(id, _)| id.as_str()).collect();
            let mut names: BTreeSet<&str> = BTreeSet::new();
            for row in rows.iter().filter(|r| !tracked.contains(r.unique_id.as_str())) {
                if let Some(name) = row.username.as_deref() {
                    names.insert(name);
                }
            }
            let names: Vec<&str> = names.into_iter().collect();
            let accounts = d::radacct::accounts(&mut tx, tenant, &names).await?;
            let states = states.into_iter().map(|(_, state)| state).collect();
            let mut page = normalise_page(tenant, settings, rows, states, &accounts);
            page.outcomes.rejected = page
                .outcomes
                .rejected
                .saturating_add(u64::try_from(unkeyable.len()).unwrap_or(u64::MAX));
            page.rejected.append(&mut unkeyable);
            let events = d::radacct::insert_events(&mut tx, tenant, &page.events).await?;
            // The sessions' growth, for fair usage (the facade's FairUsageFollowsAccounting),
            // in the transaction that stores the usage.
            d::outbox::insert_core(&mut tx, tenant, &page.accounted).await?;
            for (unique_id, state, seen_at, change) in &page.states {
                d::radacct::save_state(&mut tx, tenant, source, unique_id, state, *seen_at, *change)
                    .await?;
            }
            let mark = match stable {
                Some(stable) if stable > held => stable,
                _ => held,
            };
            if mark != held {
                d::radacct::save_mark(&mut tx, tenant, source, mark).await?;
            }
            tx.commit().await.during("commit radius usage")?;
            Ok(PageOutcome {
                events,
                usage: page.usage,
                rejected: page.rejected,
                outcomes: page.outcomes,
                mark,
            })
        })
    }

    async fn prune_radius_sessions(
        &self,
        tenant: TenantId,
        source: &str,
        before: DateTime<Utc>,
    ) -> Result<u64> {
        input::key("radius source", source)?;
        dispatch!(self, pool, d => d::radacct::prune(pool, tenant, source, before).await)
    }
}

/// A page read from `radacct`: its rows and the reading snapshot's `xmin`.
struct SourcePage {
    xmin: u64,
    rows: Vec<RadacctRow>,
}

fn parse_xid(text: &str) -> Result<u64> {
    text.parse().map_err(|_| SqlError::Corrupt {
        what: "transaction id",
        detail: text.to_owned(),
    })
}

/// Reads one tenant's FreeRADIUS `radacct` into its usage store; see the module docs.
#[derive(Debug, Clone)]
pub struct RadacctIngester {
    source: PgPool,
    store: SqlStore,
    tenant: TenantId,
    settings: RadacctSettings,
}

impl RadacctIngester {
    /// Connects to FreeRADIUS's database at `url` for `tenant`, whose usage goes to `store`,
    /// and installs the change stamp on `radacct` (a `dotmac_change xid8` column, its trigger
    /// and index; rows already there are stamped once) unless it is there. The reader starts
    /// from the mark persisted for the tenant and source: a new instance carries on where the
    /// last one committed.
    ///
    /// # Errors
    ///
    /// [`SqlError`] when the database cannot be reached or has no `radacct` table.
    pub async fn connect(
        url: &str,
        store: SqlStore,
        tenant: TenantId,
        settings: RadacctSettings,
    ) -> Result<Self> {
        input::key("radius source", &settings.source)?;
        let source = PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .during("connect to the FreeRADIUS database")?;
        let ingester = RadacctIngester {
            source,
            store,
            tenant,
            settings,
        };
        ingester.prepare().await?;
        Ok(ingester)
    }

    async fn prepare(&self) -> Result<()> {
        let mut tx = self.source.begin().await.during("begin")?;
        sqlx::query("SELECT pg_advisory_xact_lock(1815)")
            .execute(&mut *tx)
            .await
            .during("lock the radacct change stamp")?;
        let present: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute \
             WHERE attrelid = to_regclass('radacct') AND attname = 'dotmac_change' AND NOT attisdropped)",
        )
        .fetch_one(&mut *tx)
        .await
        .during("look for the radacct change stamp")?;
        if !present {
            for sql in [
                "ALTER TABLE radacct ADD COLUMN dotmac_change xid8",
                "CREATE OR REPLACE FUNCTION dotmac_radacct_change() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ BEGIN NEW.dotmac_change := pg_current_xact_id(); RETURN NEW; END $$",
                "CREATE TRIGGER dotmac_radacct_change BEFORE INSERT OR UPDATE ON radacct \
                 FOR EACH ROW EXECUTE FUNCTION dotmac_radacct_change()",
                "UPDATE radacct SET dotmac_change = pg_current_xact_id() WHERE dotmac_change IS NULL",
                "CREATE INDEX radacct_dotmac_change ON radacct (dotmac_change, radacctid)",
            ] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .during("install the radacct change stamp")?;
            }
        }
        tx.commit().await.during("commit the radacct change stamp")
    }

    /// The tenant served.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The settings.
    pub fn settings(&self) -> &RadacctSettings {
        &self.settings
    }

    async fn read_page(&self, after: Mark) -> Result<SourcePage> {
        let mut tx = self
            .source
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .during("begin reading radacct")?;
        let xmin: String =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                .fetch_one(&mut *tx)
                .await
                .during("read the snapshot")?;
        let rows = sqlx::query(
            "SELECT radacctid, acctuniqueid, acctsessionid, username, host(nasipaddress) AS nas, \
               acctstarttime, acctupdatetime, acctstoptime, acctsessiontime, acctinputoctets, \
               acctoutputoctets, dotmac_change::text AS change \
             FROM radacct WHERE (dotmac_change, radacctid) > ($1::text::xid8, $2) \
             ORDER BY dotmac_change, radacctid LIMIT $3",
        )
        .bind(after.change.to_string())
        .bind(after.row)
        .bind(i64::from(self.settings.batch))
        .fetch_all(&mut *tx)
        .await
        .during("read radacct")?;
        tx.commit().await.during("end reading radacct")?;
        let rows = rows
            .iter()
            .map(|row| {
                let change: String = row.try_get("change").during("read radacct")?;
                Ok(RadacctRow {
                    radacct_id: row.try_get("radacctid").during("read radacct")?,
                    unique_id: row.try_get("acctuniqueid").during("read radacct")?,
                    session_id: row.try_get("acctsessionid").during("read radacct")?,
                    username: row.try_get("username").during("read radacct")?,
                    nas: row.try_get("nas").during("read radacct")?,
                    start: row.try_get("acctstarttime").during("read radacct")?,
                    update: row.try_get("acctupdatetime").during("read radacct")?,
                    stop: row.try_get("acctstoptime").during("read radacct")?,
                    session_time: row.try_get("acctsessiontime").during("read radacct")?,
                    input_octets: row.try_get("acctinputoctets").during("read radacct")?,
                    output_octets: row.try_get("acctoutputoctets").during("read radacct")?,
                    change: parse_xid(&change)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SourcePage {
            xmin: parse_xid(&xmin)?,
            rows,
        })
    }

    /// Reads every row changed since the mark, page by page, until a page is not full: each
    /// page's usage, session states and mark in one transaction of the tenant's database.
    ///
    /// Counted in `dotmac_usage_radacct_rows_total` (label `outcome`: `usage`, `no_usage`,
    /// `rejected`) and `dotmac_usage_radacct_events_total` (events stored), in the span
    /// `dotmac.radius.ingest`.
    ///
    /// # Errors
    ///
    /// [`SqlError`] when either database fails; the pages already committed stay committed
    /// (the next pass starts after them).
    pub async fn ingest(&self) -> Result<IngestReport> {
        // A span held by hand (not `Span::current()`), so its counts land on it whatever else
        // the task polls meanwhile.
        let span = tracing::info_span!(
            "dotmac.radius.ingest",
            tenant = %self.tenant,
            source = %self.settings.source,
            rows = tracing::field::Empty,
            events = tracing::field::Empty,
            rejected = tracing::field::Empty,
        );
        let result = self.ingest_pass().instrument(span.clone()).await;
        if let Ok(report) = &result {
            span.record("rows", report.rows);
            span.record("events", report.events);
            span.record("rejected", report.rejected.len());
        }
        result
    }

    async fn ingest_pass(&self) -> Result<IngestReport> {
        let db = self.store.database();
        let mut report = IngestReport::default();
        let mut cursor = db.radius_mark(self.tenant, &self.settings.source).await?;
        report.mark = cursor.change;
        let mut outcomes = Outcomes::default();
        let result = async {
            loop {
                let page = self.read_page(cursor).await?;
                let stable = page
                    .rows
                    .iter()
                    .take_while(|r| r.change < page.xmin)
                    .last()
                    .map(|r| Mark {
                        change: r.change,
                        row: r.radacct_id,
                    });
                let Some(last) = page.rows.last() else {
                    break;
                };
                let next = Mark {
                    change: last.change,
                    row: last.radacct_id,
                };
                let outcome = db
                    .ingest_radius_page(self.tenant, &self.settings, &page.rows, stable)
                    .await?;
                report.rows = report.rows.saturating_add(page.rows.len());
                report.events = report.events.saturating_add(outcome.events);
                report.usage.extend(outcome.usage);
                report.rejected.extend(outcome.rejected);
                report.mark = outcome.mark.change;
                outcomes.usage = outcomes.usage.saturating_add(outcome.outcomes.usage);
                outcomes.no_usage = outcomes.no_usage.saturating_add(outcome.outcomes.no_usage);
                outcomes.rejected = outcomes.rejected.saturating_add(outcome.outcomes.rejected);
                if page.rows.len() < self.settings.batch as usize {
                    break;
                }
                cursor = next;
            }
            Ok::<(), SqlError>(())
        }
        .await;
        count(outcomes, report.events);
        result.map(|()| report)
    }

    /// Forgets the saved state of stopped sessions whose latest record is dated before
    /// `before` and whose row the mark has passed (so no pass reads it again unless FreeRADIUS
    /// changes it, which its queries do not do to a stopped session). A pruned session whose
    /// row did change again would be counted from zero, so keep `before` well behind the
    /// present (a day, say). Returns how many were forgotten.
    ///
    /// # Errors
    ///
    /// [`SqlError`] when the database fails.
    pub async fn prune_stopped(&self, before: DateTime<Utc>) -> Result<u64> {
        self.store
            .database()
            .prune_radius_sessions(self.tenant, &self.settings.source, before)
            .await
    }
}

fn count(outcomes: Outcomes, events: usize) {
    for (outcome, n) in [
        ("usage", outcomes.usage),
        ("no_usage", outcomes.no_usage),
        ("rejected", outcomes.rejected),
    ] {
        if n > 0 {
            metrics::counter!("dotmac_usage_radacct_rows_total", "outcome" => outcome).increment(n);
        }
    }
    if events > 0 {
        metrics::counter!("dotmac_usage_radacct_events_total")
            .increment(u64::try_from(events).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(input: i64, output: i64) -> RadacctRow {
        let start = Utc.with_ymd_and_hms(2026, 10, 5, 8, 0, 0).unwrap();
        RadacctRow {
            radacct_id: 1,
            unique_id: "u1".into(),
            session_id: "s1".into(),
            username: Some("ada".into()),
            nas: Some("127.0.0.1".into()),
            start: Some(start),
            update: Some(start),
            stop: None,
            session_time: Some(0),
            input_octets: Some(input),
            output_octets: Some(output),
            change: 7,
        }
    }

    #[test]
    fn a_row_is_the_record_it_sums_up() {
        let mut r = row(10, (3 << 32) + 5);
        let record = r.record(CounterWidth::Gigawords).unwrap();
        assert_eq!(record.status, AcctStatusType::Start);
        assert_eq!(
            (record.output_octets, record.output_gigawords),
            (Some(5), Some(3))
        );
        assert_eq!(
            (record.input_octets, record.input_gigawords),
            (Some(10), Some(0))
        );
        r.update = r.start.map(|s| s + chrono::Duration::minutes(5));
        assert_eq!(
            r.record(CounterWidth::Gigawords).unwrap().status,
            AcctStatusType::InterimUpdate
        );
        r.stop = r.start.map(|s| s + chrono::Duration::minutes(9));
        let stop = r.record(CounterWidth::Gigawords).unwrap();
        assert_eq!(stop.status, AcctStatusType::Stop);
        assert_eq!(stop.timestamp, r.stop.unwrap());
        // A 32-bit NAS: no Gigawords, and a total above 32 bits cannot be its.
        assert_eq!(
            r.record(CounterWidth::ThirtyTwoBit),
            Err(malformed(
                "acctoutputoctets out of range for the NAS's counters"
            ))
        );
        let small = row(10, 20).record(CounterWidth::ThirtyTwoBit).unwrap();
        assert_eq!(
            (small.output_octets, small.output_gigawords),
            (Some(20), None)
        );
        assert_eq!(
            row(-1, 0).record(CounterWidth::Gigawords),
            Err(malformed(
                "acctinputoctets out of range for the NAS's counters"
            ))
        );
        let mut nameless = row(0, 0);
        nameless.unique_id.clear();
        assert_eq!(
            nameless.record(CounterWidth::Gigawords),
            Err(malformed("radacct row without acctuniqueid"))
        );
    }

    #[test]
    fn marks_order_by_change_then_row() {
        let a = Mark { change: 5, row: 9 };
        let b = Mark { change: 6, row: 1 };
        assert!(a < b);
        assert!(Mark { change: 5, row: 10 } > a);
    }
}
