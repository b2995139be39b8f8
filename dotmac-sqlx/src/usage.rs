//! Usage events: bulk, idempotent ingestion (UNNEST on PostgreSQL, multi-row INSERT on SQLite),
//! and the set-based read of usage rating ([`UsageStore::period_aggregates`]): one `GROUP BY`
//! over a whole chunk's keys (joined from an `UNNEST` of arrays on PostgreSQL, a `VALUES` list
//! on SQLite), and one read of the raw events of the keys that SQL cannot aggregate exactly,
//! which go through the same aggregator as ingestion.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use dotmac_core::{CustomerId, SubscriptionId, TenantId};
use dotmac_core::{MeterId, UsageEventId};
use dotmac_usage::{
    Aggregation, Meter, PeriodKey, PeriodTotals, UsageError, UsageEvent, UsageStore, WindowTotals,
    aggregate_events, key_windows,
};
use rust_decimal::Decimal;
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::error::{Context, InputProblem, Result, SqlError};
use crate::input;

/// Rows per statement on SQLite: bounded by its 32,766 parameters (8 a row).
#[cfg(feature = "sqlite")]
const BATCH: usize = 4000;

/// Rows per statement on PostgreSQL (one array per column): keeps one statement's arrays to
/// a few MB.
#[cfg(feature = "postgres")]
const PG_BATCH: usize = 20_000;

/// Keys per statement of the set-based read on SQLite: 8 parameters a key stays under its
/// 32,766 bound parameters.
#[cfg(feature = "sqlite")]
const KEYS: usize = 4000;

/// One key of a set-based read as the SQL sees it: its position in the request, the series
/// and window it reads, its meter's aggregation ([`kind`]) and the property a `unique_count`
/// meter counts.
#[derive(Debug, Clone)]
pub(crate) struct KeyRow {
    pub(crate) index: usize,
    pub(crate) customer: Uuid,
    pub(crate) subscription: Option<Uuid>,
    pub(crate) meter: Uuid,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    pub(crate) kind: i64,
    pub(crate) property: Option<String>,
}

/// The aggregations SQL computes, as the `kind` of a [`KeyRow`] (the time-weighted ones are
/// read as raw events).
mod kind {
    pub(crate) const COUNT: i64 = 0;
    pub(crate) const SUM: i64 = 1;
    pub(crate) const MAX: i64 = 2;
    pub(crate) const LATEST: i64 = 3;
    pub(crate) const UNIQUE: i64 = 4;
}

/// The select list of a chunk's `GROUP BY`: the count and sign of every key's events, and only
/// the aggregates of the kinds the chunk holds (each restricted to its kind's keys when the
/// chunk mixes kinds), so that a chunk of `sum` meters computes one sum and nothing else.
#[derive(Debug, Clone, Copy, Default)]
struct Needs {
    sum: bool,
    max: bool,
    latest: bool,
    unique: bool,
    mixed: bool,
}

impl Needs {
    fn of(keys: &[KeyRow]) -> Needs {
        let has = |k: i64| keys.iter().any(|r| r.kind == k);
        Needs {
            sum: has(kind::SUM),
            max: has(kind::MAX),
            latest: has(kind::LATEST),
            unique: has(kind::UNIQUE),
            mixed: keys
                .iter()
                .any(|r| keys.first().is_some_and(|f| f.kind != r.kind)),
        }
    }
}

/// The join of the keys (`k`) with their events (`e`, the tenant's): the key's customer, meter
/// and window, and its subscription's events (or those naming none).
const KEY_MATCH: &str = "e.customer_id = k.customer AND e.meter_id = k.meter \
     AND e.occurred_at >= k.t0 AND e.occurred_at < k.t1 \
     AND (k.sub IS NULL OR e.subscription_id IS NULL OR e.subscription_id = k.sub)";

/// A key's position as the database echoes it back.
fn position(value: i64, keys: usize) -> Result<usize> {
    usize::try_from(value)
        .ok()
        .filter(|i| *i < keys)
        .ok_or_else(|| SqlError::Corrupt {
            what: "usage key",
            detail: format!("position {value} of {keys} keys"),
        })
}

for_each_dialect! {
    shared {
        /// Counts the newly stored of `events` (those in `inserted`) in the tenant's platform
        /// usage, in the open transaction that stores them: one `events_ingested` row per
        /// clock hour (UTC) of the events' own instants, incremented
        /// ([`dotmac_tenancy::PlatformUsage::events_ingested`]). Stored and counted commit
        /// together, and an event stored once is counted once.
        pub(crate) async fn count_ingested<'e>(
            tx: &mut Tx,
            tenant: TenantId,
            events: impl Iterator<Item = &'e UsageEvent>,
            inserted: &HashSet<Uuid>,
        ) -> Result<()> {
            let mut hours: BTreeMap<i64, i64> = BTreeMap::new();
            for event in events.filter(|e| inserted.contains(&e.id.as_uuid())) {
                let seconds = event.timestamp.timestamp();
                let hour = seconds.saturating_sub(seconds.rem_euclid(3_600));
                let slot = hours.entry(hour).or_insert(0);
                *slot = slot.saturating_add(1);
            }
            for (hour, count) in hours {
                let at = DateTime::from_timestamp(hour, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
                let id = dotmac_core::IdDigest::new("tenancy.events_ingested")
                    .uuid(tenant.as_uuid())
                    .u64(u64::from_ne_bytes(hour.to_ne_bytes()));
                sqlx::query(
                    "INSERT INTO tenancy_usage_records (tenant_id, record_id, metric, at, quantity) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, record_id) \
                     DO UPDATE SET quantity = tenancy_usage_records.quantity + excluded.quantity",
                )
                .bind(tenant.as_uuid())
                .bind(dotmac_tenancy::UsageRecordId::derived(id).as_uuid())
                .bind(dotmac_tenancy::PlatformMetric::EventsIngested.as_str())
                .bind(at)
                .bind(count)
                .execute(&mut **tx)
                .await
                .during("count ingested usage")?;
            }
            Ok(())
        }

        pub(crate) fn decode(row: &DbRow) -> Result<UsageEvent> {
            let subscription: Option<Uuid> = row.try_get("subscription_id").during("read usage")?;
            let properties: Json<BTreeMap<String, String>> =
                row.try_get("properties").during("read usage")?;
            Ok(UsageEvent {
                id: UsageEventId::from_uuid(row.try_get("event_id").during("read usage")?),
                customer: CustomerId::from_uuid(row.try_get("customer_id").during("read usage")?),
                subscription: subscription.map(SubscriptionId::from_uuid),
                meter: MeterId::from_uuid(row.try_get("meter_id").during("read usage")?),
                quantity: get_dec(row, "quantity")?,
                timestamp: row.try_get("occurred_at").during("read usage")?,
                properties: properties.0,
            })
        }
    }
    sqlite {
        /// Stores the events whose ids are new, in one transaction; returns their ids.
        pub(crate) async fn append(
            pool: &sqlx::Pool<Db>,
            tenant: TenantId,
            events: &[UsageEvent],
        ) -> Result<HashSet<Uuid>> {
            let mut inserted = HashSet::with_capacity(events.len());
            let mut tx = begin_tenant(pool, tenant).await?;
            for batch in events.chunks(BATCH) {
                inserted.extend(insert(&mut tx, tenant, batch).await?);
            }
            count_ingested(&mut tx, tenant, events.iter(), &inserted).await?;
            tx.commit().await.during("commit usage")?;
            Ok(inserted)
        }

        /// Inserts the batch; returns the ids actually inserted.
        pub(crate) async fn insert(tx: &mut Tx, tenant: TenantId, events: &[UsageEvent]) -> Result<HashSet<Uuid>> {
            let mut builder = sqlx::QueryBuilder::new(
                "INSERT INTO usage_events (tenant_id, event_id, customer_id, subscription_id, \
                 meter_id, quantity, occurred_at, properties) ",
            );
            builder.push_values(events, |mut row, e| {
                row.push_bind(tenant.as_uuid())
                    .push_bind(e.id.as_uuid())
                    .push_bind(e.customer.as_uuid())
                    .push_bind(e.subscription.map(|s| s.as_uuid()))
                    .push_bind(e.meter.as_uuid())
                    .push_bind(dec(e.quantity))
                    .push_bind(e.timestamp)
                    .push_bind(Json(e.properties.clone()));
            });
            builder.push(" ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id");
            let rows = builder.build().fetch_all(&mut **tx).await.during("write usage")?;
            rows.iter().map(|r| r.try_get::<Uuid, _>(0).during("write usage")).collect()
        }

        /// `WITH k(…) AS (VALUES (…), …) <select> FROM k CROSS JOIN usage_events AS e WHERE
        /// e.tenant_id = ? AND <the key's events>`, then `tail`. The keys drive the join
        /// (`CROSS JOIN` keeps SQLite from reordering it): one range scan of the lookup index
        /// per key.
        fn keyed_query(
            keys: &[KeyRow],
            tenant: TenantId,
            select: &str,
            tail: &str,
        ) -> sqlx::QueryBuilder<Db> {
            let mut query = sqlx::QueryBuilder::<Db>::new(
                "WITH k(idx, customer, sub, meter, t0, t1, kind, prop) AS (VALUES ",
            );
            for (n, key) in keys.iter().enumerate() {
                if n > 0 {
                    query.push(", ");
                }
                query.push("(");
                let mut row = query.separated(", ");
                row.push_bind(i64::try_from(key.index).unwrap_or(i64::MAX))
                    .push_bind(key.customer)
                    .push_bind(key.subscription)
                    .push_bind(key.meter)
                    .push_bind(key.from)
                    .push_bind(key.to)
                    .push_bind(key.kind)
                    .push_bind(key.property.clone());
                row.push_unseparated(")");
            }
            query.push(") ").push(select);
            query.push(" FROM k CROSS JOIN usage_events AS e WHERE e.tenant_id = ");
            query.push_bind(tenant.as_uuid());
            query.push(" AND ").push(KEY_MATCH).push(" ").push(tail);
            query
        }

        /// The `GROUP BY`'s select list for `needs`. Quantities are decimal text: `SUM` of
        /// integer texts is an exact integer (`typeof` says so; a decimal point makes it a
        /// float, which is not used), the smallest text sorts before `0` (starts with `-`) when
        /// a quantity is negative, and the text maximum of `occurred_at|hex(event_id)|quantity` is the
        /// latest event (instants are stored in one fixed-offset format, ids compare as bytes).
        fn select_list(needs: Needs) -> String {
            let only = |k: i64, expr: &str| {
                if needs.mixed {
                    format!("CASE WHEN k.kind = {k} THEN {expr} END")
                } else {
                    expr.to_owned()
                }
            };
            let mut select = String::from(
                "SELECT k.idx AS idx, COUNT(*) AS n, MIN(e.quantity) < '0' AS negative",
            );
            if needs.sum {
                let q = only(kind::SUM, "e.quantity");
                select.push_str(&format!(
                    ", SUM({q}) AS total, typeof(SUM({q})) = 'integer' AS exact_total"
                ));
            } else {
                select.push_str(", NULL AS total, 0 AS exact_total");
            }
            if needs.max {
                let top = only(kind::MAX, "CAST(e.quantity AS INTEGER)");
                let irregular = only(
                    kind::MAX,
                    "(instr(e.quantity, '.') > 0 OR length(e.quantity) > 18)",
                );
                select.push_str(&format!(", MAX({top}) AS top, MAX({irregular}) AS irregular"));
            } else {
                select.push_str(", NULL AS top, NULL AS irregular");
            }
            if needs.latest {
                let latest = only(
                    kind::LATEST,
                    "e.occurred_at || '|' || hex(e.event_id) || '|' || e.quantity",
                );
                select.push_str(&format!(", MAX({latest}) AS latest"));
            } else {
                select.push_str(", NULL AS latest");
            }
            if needs.unique {
                let value = only(
                    kind::UNIQUE,
                    "(SELECT j.value FROM json_each(e.properties) AS j WHERE j.key = k.prop)",
                );
                select.push_str(&format!(", COUNT(DISTINCT {value}) AS distinct_values"));
            } else {
                select.push_str(", 0 AS distinct_values");
            }
            select
        }

        /// The totals of each key that has events (keys without any have none), and the
        /// positions of the keys to aggregate from their events instead: every key of a
        /// statement whose integer sum overflowed (SQLite refuses it rather than wrapping).
        pub(crate) async fn totals(
            tx: &mut Tx,
            tenant: TenantId,
            keys: &[KeyRow],
            count: usize,
        ) -> Result<(Vec<(usize, PeriodTotals)>, Vec<usize>)> {
            let mut out = Vec::with_capacity(keys.len());
            let mut overflowed = Vec::new();
            for chunk in keys.chunks(KEYS) {
                let select = select_list(Needs::of(chunk));
                let mut query = keyed_query(chunk, tenant, &select, "GROUP BY k.idx");
                let rows = match query.build().fetch_all(&mut **tx).await {
                    Ok(rows) => rows,
                    Err(sqlx::Error::Database(e)) if e.message().contains("integer overflow") => {
                        overflowed.extend(chunk.iter().map(|k| k.index));
                        continue;
                    }
                    Err(e) => return Err(e).during("aggregate usage"),
                };
                for row in &rows {
                    let index = position(row.try_get("idx").during("aggregate usage")?, count)?;
                    let n: i64 = row.try_get("n").during("aggregate usage")?;
                    let negative: i64 = row.try_get("negative").during("aggregate usage")?;
                    let (sum, max) = sum_and_max(row, "aggregate usage")?;
                    let latest: Option<String> = row.try_get("latest").during("aggregate usage")?;
                    let distinct: i64 = row.try_get("distinct_values").during("aggregate usage")?;
                    let latest = match latest.as_deref() {
                        Some(text) => Some(latest_quantity(text)?),
                        None => None,
                    };
                    out.push((index, PeriodTotals {
                        count: n.unsigned_abs(),
                        sum,
                        max,
                        latest,
                        distinct: distinct.unsigned_abs(),
                        negative: negative != 0,
                    }));
                }
            }
            Ok((out, overflowed))
        }

        /// A totals row's exact sum and maximum (see [`select_list`]): the sum when SQLite
        /// summed integers, the maximum when every quantity was an integer text.
        fn sum_and_max(row: &sqlx::sqlite::SqliteRow, during: &'static str) -> Result<(Option<Decimal>, Option<Decimal>)> {
            let exact_total: i64 = row.try_get("exact_total").during(during)?;
            let sum = if exact_total != 0 {
                let total: i64 = row.try_get("total").during(during)?;
                Some(Decimal::from(total))
            } else {
                None
            };
            let top: Option<i64> = row.try_get("top").during(during)?;
            let irregular: Option<i64> = row.try_get("irregular").during(during)?;
            Ok((sum, top.filter(|_| irregular == Some(0)).map(Decimal::from)))
        }

        /// How many ranges of customers one window pass is read in, each on a connection of
        /// its own: SQLite runs a statement on its connection's one thread, so a pass over
        /// millions of events is as fast as one core, while the pool's other connections
        /// (and cores) wait. As many as the machine has cores, at most half the pool (the
        /// rest serve the reads rating issues beside the pass); one for a pool of one
        /// connection (`:memory:`).
        pub(crate) fn window_parallelism(pool: &sqlx::SqlitePool) -> usize {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let connections = usize::try_from(pool.options().get_max_connections()).unwrap_or(1);
            cores.min(connections / 2).max(1)
        }

        /// The customer ids that cut the tenant's customers into `parts` ranges of about as
        /// many customers each: its billing accounts' ids at each `i / parts` of their
        /// number, read off the accounts' primary key (a few thousand index entries, where
        /// the events' own index holds millions). Any cuts give exactly the window's events;
        /// these balance the ranges when usage follows the accounts. None when `parts` is
        /// one or the tenant has no accounts (a usage store used without billing).
        pub(crate) async fn window_cuts(tx: &mut Tx, tenant: TenantId, parts: usize) -> Result<Vec<Uuid>> {
            if parts < 2 {
                return Ok(Vec::new());
            }
            let accounts: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM billing_accounts WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .fetch_one(&mut **tx)
                    .await
                    .during("cut usage window")?;
            let parts = i64::try_from(parts).unwrap_or(i64::MAX);
            let mut cuts = Vec::new();
            for i in 1..parts {
                // i < parts: the offset stays below the count of accounts.
                let offset = accounts / parts * i + accounts % parts * i / parts;
                let cut: Option<Uuid> = sqlx::query_scalar(
                    "SELECT customer_id FROM billing_accounts WHERE tenant_id = $1 \
                     ORDER BY customer_id LIMIT 1 OFFSET $2",
                )
                .bind(tenant.as_uuid())
                .bind(offset)
                .fetch_optional(&mut **tx)
                .await
                .during("cut usage window")?;
                cuts.extend(cut);
            }
            Ok(cuts)
        }

        /// [`UsageStore::window_totals`] on SQLite: the window's customers cut into
        /// consecutive ranges ([`window_cuts`]), each read on a connection of its own at once
        /// ([`window_totals`]) and merged: together exactly the window's events.
        pub(crate) async fn window_pass(
            pool: &sqlx::SqlitePool,
            tenant: TenantId,
            meter: &Meter,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Option<WindowTotals>> {
            let parts = window_parallelism(pool);
            let cuts = if parts < 2 {
                Vec::new()
            } else {
                let mut tx = begin_read(pool, tenant).await?;
                let cuts = window_cuts(&mut tx, tenant, parts).await?;
                tx.commit().await.during("end read")?;
                cuts
            };
            let reads = super::customer_ranges(&cuts).into_iter().map(|range| async move {
                let mut tx = begin_read(pool, tenant).await?;
                let totals = window_totals(&mut tx, tenant, meter, from, to, range).await?;
                tx.commit().await.during("end read")?;
                Ok::<_, SqlError>(totals)
            });
            let mut merged = Some(WindowTotals::new());
            for part in futures_util::future::try_join_all(reads).await? {
                merged = match (merged, part) {
                    (Some(mut whole), Some(part)) => {
                        whole.merge(part);
                        Some(whole)
                    }
                    // A range SQLite could not sum exactly: the keys are read one by one.
                    _ => None,
                };
            }
            Ok(merged)
        }

        /// One grouped pass over `meter`'s events in `[from, to)`, with the same exactness
        /// rules as [`totals`]; `None` when SQLite refuses the sum (an integer overflow), and
        /// the caller reads its keys one by one instead.
        ///
        /// Grouped by customer and meter, the lookup index's own order, so that SQLite
        /// streams the groups off the index instead of sorting every event into a temporary
        /// B-tree: a customer whose events all name one subscription (or all name none) is
        /// that subscription's group; one whose events name several is left
        /// [`WindowTotals::unresolved`], and its keys take the keyed read.
        pub(crate) async fn window_totals(
            tx: &mut Tx,
            tenant: TenantId,
            meter: &Meter,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
            (low, high): super::CustomerRange,
        ) -> Result<Option<WindowTotals>> {
            // Only the aggregate the meter needs: each extra one costs the pass a share.
            let aggregate = match meter.aggregation {
                Aggregation::Sum => {
                    "SUM(quantity) AS total, typeof(SUM(quantity)) = 'integer' AS exact_total, \
                     NULL AS top, NULL AS irregular"
                }
                Aggregation::Max => {
                    "NULL AS total, 0 AS exact_total, MAX(CAST(quantity AS INTEGER)) AS top, \
                     MAX(instr(quantity, '.') > 0 OR length(quantity) > 18) AS irregular"
                }
                _ => "NULL AS total, 0 AS exact_total, NULL AS top, NULL AS irregular",
            };
            let sql = format!(
                "SELECT customer_id, MIN(subscription_id) AS first_sub, \
                   MAX(subscription_id) AS last_sub, COUNT(subscription_id) AS named, \
                   COUNT(*) AS n, MIN(quantity) < '0' AS negative, {aggregate} \
                 FROM usage_events \
                 WHERE tenant_id = $1 AND meter_id = $2 AND occurred_at >= $3 AND occurred_at < $4 \
                   {} {} \
                 GROUP BY customer_id, meter_id",
                if low.is_some() { "AND customer_id >= $5" } else { "" },
                match (low, high) {
                    (_, None) => "",
                    (Some(_), Some(_)) => "AND customer_id < $6",
                    (None, Some(_)) => "AND customer_id < $5",
                },
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_uuid())
                .bind(meter.id.as_uuid())
                .bind(from)
                .bind(to);
            for bound in [low, high].into_iter().flatten() {
                query = query.bind(bound);
            }
            let rows = query.fetch_all(&mut **tx).await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(sqlx::Error::Database(e)) if e.message().contains("integer overflow") => {
                    return Ok(None);
                }
                Err(e) => return Err(e).during("total usage window"),
            };
            let mut out = WindowTotals::new();
            for row in &rows {
                let customer: Uuid = row.try_get("customer_id").during("total usage window")?;
                let customer = CustomerId::from_uuid(customer);
                let first: Option<Uuid> = row.try_get("first_sub").during("total usage window")?;
                let last: Option<Uuid> = row.try_get("last_sub").during("total usage window")?;
                let named: i64 = row.try_get("named").during("total usage window")?;
                let n: i64 = row.try_get("n").during("total usage window")?;
                let subscription = if named == 0 {
                    None
                } else if named == n && first == last {
                    first.map(SubscriptionId::from_uuid)
                } else {
                    out.unresolved(customer);
                    continue;
                };
                let negative: i64 = row.try_get("negative").during("total usage window")?;
                let (sum, max) = sum_and_max(row, "total usage window")?;
                out.insert(
                    customer,
                    subscription,
                    PeriodTotals {
                        count: n.unsigned_abs(),
                        sum,
                        max,
                        latest: None,
                        distinct: 0,
                        negative: negative != 0,
                    },
                );
            }
            Ok(Some(out))
        }

        /// The quantity after the last `|` of `occurred_at|hex(event_id)|quantity`: the text
        /// maximum is the latest event, as instants are stored in one fixed-offset format.
        fn latest_quantity(text: &str) -> Result<Decimal> {
            use std::str::FromStr;
            let quantity = text.rsplit_once('|').map_or(text, |(_, q)| q);
            Decimal::from_str(quantity).map_err(|e| SqlError::Corrupt {
                what: "quantity",
                detail: format!("{quantity:?} is not a decimal: {e}"),
            })
        }

        /// The raw events of `keys`, each with the position of its key.
        pub(crate) async fn key_events(
            tx: &mut Tx,
            tenant: TenantId,
            keys: &[KeyRow],
            count: usize,
        ) -> Result<Vec<(usize, UsageEvent)>> {
            let mut out = Vec::new();
            for chunk in keys.chunks(KEYS) {
                let mut query = keyed_query(
                    chunk,
                    tenant,
                    "SELECT k.idx AS idx, e.event_id, e.customer_id, e.subscription_id, \
                       e.meter_id, e.quantity, e.occurred_at, e.properties",
                    "",
                );
                let rows = query.build().fetch_all(&mut **tx).await.during("read usage")?;
                for row in &rows {
                    let index = position(row.try_get("idx").during("read usage")?, count)?;
                    out.push((index, decode(row)?));
                }
            }
            Ok(out)
        }
    }
    postgres {
        /// Stores the events whose ids are new, in one transaction; returns their ids.
        ///
        /// The batch is first written with a plain insert, on the bet that its ids are new
        /// (the common case: retries are rare); if one is already stored, that transaction is
        /// rolled back and the batch is written again skipping the known ids (`ON CONFLICT DO
        /// NOTHING RETURNING`), which tells which events were new.
        pub(crate) async fn append(
            pool: &sqlx::Pool<Db>,
            tenant: TenantId,
            events: &[UsageEvent],
        ) -> Result<HashSet<Uuid>> {
            // Distinct ids, first occurrence kept: a plain insert must not see an id twice.
            let mut seen = HashSet::with_capacity(events.len());
            let distinct: Vec<&UsageEvent> =
                events.iter().filter(|e| seen.insert(e.id.as_uuid())).collect();
            let mut tx = begin_tenant(pool, tenant).await?;
            let mut known = false;
            for batch in distinct.chunks(PG_BATCH) {
                match insert(&mut tx, tenant, batch, false).await {
                    Ok(_) => {}
                    Err(e) if crate::error::is_unique_violation(&e) => {
                        known = true;
                        break;
                    }
                    Err(e) => return Err(e).during("write usage"),
                }
            }
            if !known {
                count_ingested(&mut tx, tenant, distinct.iter().copied(), &seen).await?;
                tx.commit().await.during("commit usage")?;
                return Ok(seen);
            }
            tx.rollback().await.during("roll back usage")?;
            let mut inserted = HashSet::with_capacity(distinct.len());
            let mut tx = begin_tenant(pool, tenant).await?;
            for batch in distinct.chunks(PG_BATCH) {
                inserted.extend(
                    insert(&mut tx, tenant, batch, true)
                        .await
                        .during("write usage")?,
                );
            }
            count_ingested(&mut tx, tenant, distinct.iter().copied(), &inserted).await?;
            tx.commit().await.during("commit usage")?;
            Ok(inserted)
        }

        /// Inserts the batch with one UNNEST statement. With `skip_known`, an id already
        /// stored is skipped (`ON CONFLICT DO NOTHING`) and the ids actually inserted are
        /// returned; without, the insert is plain (cheaper: no speculative insertion, no
        /// RETURNING) and fails on a known id, and nothing is returned.
        pub(crate) async fn insert(
            tx: &mut Tx,
            tenant: TenantId,
            events: &[&UsageEvent],
            skip_known: bool,
        ) -> std::result::Result<Vec<Uuid>, sqlx::Error> {
            let ids: Vec<Uuid> = events.iter().map(|e| e.id.as_uuid()).collect();
            let customers: Vec<Uuid> = events.iter().map(|e| e.customer.as_uuid()).collect();
            let subscriptions: Vec<Option<Uuid>> =
                events.iter().map(|e| e.subscription.map(|s| s.as_uuid())).collect();
            let meters: Vec<Uuid> = events.iter().map(|e| e.meter.as_uuid()).collect();
            let quantities: Vec<rust_decimal::Decimal> = events.iter().map(|e| e.quantity).collect();
            let at: Vec<DateTime<Utc>> = events.iter().map(|e| e.timestamp).collect();
            let properties: Vec<Json<&BTreeMap<String, String>>> =
                events.iter().map(|e| Json(&e.properties)).collect();
            let sql = if skip_known {
                "INSERT INTO usage_events (tenant_id, event_id, customer_id, subscription_id, \
                   meter_id, quantity, occurred_at, properties) \
                 SELECT $1, * FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], \
                   $6::numeric[], $7::timestamptz[], $8::jsonb[]) \
                 ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id"
            } else {
                "INSERT INTO usage_events (tenant_id, event_id, customer_id, subscription_id, \
                   meter_id, quantity, occurred_at, properties) \
                 SELECT $1, * FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], \
                   $6::numeric[], $7::timestamptz[], $8::jsonb[])"
            };
            let query = sqlx::query(sql)
                .bind(tenant.as_uuid())
                .bind(ids)
                .bind(customers)
                .bind(subscriptions)
                .bind(meters)
                .bind(quantities)
                .bind(at)
                .bind(properties);
            if skip_known {
                let rows = query.fetch_all(&mut **tx).await?;
                rows.iter().map(|r| r.try_get::<Uuid, _>(0)).collect()
            } else {
                query.execute(&mut **tx).await?;
                Ok(Vec::new())
            }
        }

        /// The key columns as arrays, for `UNNEST(…) AS k(idx, customer, sub, meter, t0, t1,
        /// kind, prop)`: the keys drive the join, one range scan of the lookup index per key.
        fn bind_keys<'q>(
            query: sqlx::query::Query<'q, Db, sqlx::postgres::PgArguments>,
            tenant: TenantId,
            keys: &[KeyRow],
        ) -> sqlx::query::Query<'q, Db, sqlx::postgres::PgArguments> {
            query
                .bind(tenant.as_uuid())
                .bind(keys.iter().map(|k| i64::try_from(k.index).unwrap_or(i64::MAX)).collect::<Vec<i64>>())
                .bind(keys.iter().map(|k| k.customer).collect::<Vec<Uuid>>())
                .bind(keys.iter().map(|k| k.subscription).collect::<Vec<Option<Uuid>>>())
                .bind(keys.iter().map(|k| k.meter).collect::<Vec<Uuid>>())
                .bind(keys.iter().map(|k| k.from).collect::<Vec<DateTime<Utc>>>())
                .bind(keys.iter().map(|k| k.to).collect::<Vec<DateTime<Utc>>>())
                .bind(keys.iter().map(|k| k.kind).collect::<Vec<i64>>())
                .bind(keys.iter().map(|k| k.property.clone()).collect::<Vec<Option<String>>>())
        }

        const KEYS_TABLE: &str = "UNNEST($2::int8[], $3::uuid[], $4::uuid[], $5::uuid[], \
             $6::timestamptz[], $7::timestamptz[], $8::int8[], $9::text[]) \
             AS k(idx, customer, sub, meter, t0, t1, kind, prop)";

        /// The `GROUP BY`'s select list for `needs`: the count and sign of every key's events,
        /// and only the aggregates of the kinds the chunk holds (`FILTER`ed to their keys when
        /// the chunk mixes kinds). The sum comes back as text: one out of a decimal's range or
        /// precision is not exact, and the key is aggregated from its events instead.
        fn select_list(needs: Needs) -> String {
            let only = |k: i64| {
                if needs.mixed {
                    format!(" FILTER (WHERE k.kind = {k})")
                } else {
                    String::new()
                }
            };
            let mut select = String::from(
                "SELECT k.idx AS idx, COUNT(*) AS n, bool_or(e.quantity < 0) AS negative",
            );
            select.push_str(&if needs.sum {
                format!(", (SUM(e.quantity){})::text AS total", only(kind::SUM))
            } else {
                ", NULL::text AS total".to_owned()
            });
            select.push_str(&if needs.max {
                format!(", MAX(e.quantity){} AS top", only(kind::MAX))
            } else {
                ", NULL::numeric AS top".to_owned()
            });
            select.push_str(&if needs.latest {
                format!(
                    ", (array_agg(e.quantity ORDER BY e.occurred_at DESC, e.event_id DESC){})[1] \
                     AS latest",
                    only(kind::LATEST)
                )
            } else {
                ", NULL::numeric AS latest".to_owned()
            });
            select.push_str(&if needs.unique {
                format!(
                    ", COUNT(DISTINCT e.properties ->> k.prop){} AS distinct_values",
                    only(kind::UNIQUE)
                )
            } else {
                ", 0::int8 AS distinct_values".to_owned()
            });
            select
        }

        /// The totals of each key that has events (keys without any have none), in one
        /// statement; no key needs its events read for an overflow (PostgreSQL sums exactly).
        pub(crate) async fn totals(
            tx: &mut Tx,
            tenant: TenantId,
            keys: &[KeyRow],
            count: usize,
        ) -> Result<(Vec<(usize, PeriodTotals)>, Vec<usize>)> {
            let sql = format!(
                "{} FROM {KEYS_TABLE} JOIN usage_events AS e ON e.tenant_id = $1 AND {KEY_MATCH} \
                 GROUP BY k.idx",
                select_list(Needs::of(keys))
            );
            let rows = bind_keys(sqlx::query(sqlx::AssertSqlSafe(sql)), tenant, keys)
                .fetch_all(&mut **tx)
                .await
                .during("aggregate usage")?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let index = position(row.try_get("idx").during("aggregate usage")?, count)?;
                let n: i64 = row.try_get("n").during("aggregate usage")?;
                let total: Option<String> = row.try_get("total").during("aggregate usage")?;
                let top: Option<Decimal> = row.try_get("top").during("aggregate usage")?;
                let latest: Option<Decimal> = row.try_get("latest").during("aggregate usage")?;
                let distinct: i64 = row.try_get("distinct_values").during("aggregate usage")?;
                let negative: Option<bool> = row.try_get("negative").during("aggregate usage")?;
                out.push((index, PeriodTotals {
                    count: n.unsigned_abs(),
                    sum: total.and_then(|t| Decimal::from_str_exact(&t).ok()),
                    max: top,
                    latest,
                    distinct: distinct.unsigned_abs(),
                    negative: negative.unwrap_or(false),
                }));
            }
            Ok((out, Vec::new()))
        }

        /// [`UsageStore::window_totals`] on PostgreSQL: one statement ([`window_totals`]),
        /// which the server spreads over its own parallel workers.
        pub(crate) async fn window_pass(
            pool: &sqlx::PgPool,
            tenant: TenantId,
            meter: &Meter,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Option<WindowTotals>> {
            let mut tx = begin_read(pool, tenant).await?;
            let totals = window_totals(&mut tx, tenant, meter, from, to).await?;
            tx.commit().await.during("end read")?;
            Ok(totals)
        }

        /// One grouped pass over `meter`'s events in `[from, to)`: the totals of each
        /// (customer, named subscription), with the same exactness rules as [`totals`].
        pub(crate) async fn window_totals(
            tx: &mut Tx,
            tenant: TenantId,
            meter: &Meter,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Option<WindowTotals>> {
            // Only the aggregate the meter needs (as on SQLite): each extra one costs the
            // pass a share (MAX over every event cost a sum-meter's pass a fifth).
            let aggregate = match meter.aggregation {
                Aggregation::Sum => "SUM(quantity)::text AS total, NULL::numeric AS top",
                Aggregation::Max => "NULL::text AS total, MAX(quantity) AS top",
                _ => "NULL::text AS total, NULL::numeric AS top",
            };
            let sql = format!(
                "SELECT customer_id, subscription_id, COUNT(*) AS n, \
                   MIN(quantity) < 0 AS negative, {aggregate} \
                 FROM usage_events \
                 WHERE tenant_id = $1 AND meter_id = $2 AND occurred_at >= $3 AND occurred_at < $4 \
                 GROUP BY customer_id, subscription_id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_uuid())
            .bind(meter.id.as_uuid())
            .bind(from)
            .bind(to)
            .fetch_all(&mut **tx)
            .await
            .during("total usage window")?;
            let mut out = WindowTotals::new();
            for row in &rows {
                let customer: Uuid = row.try_get("customer_id").during("total usage window")?;
                let subscription: Option<Uuid> =
                    row.try_get("subscription_id").during("total usage window")?;
                let n: i64 = row.try_get("n").during("total usage window")?;
                let total: Option<String> = row.try_get("total").during("total usage window")?;
                let top: Option<Decimal> = row.try_get("top").during("total usage window")?;
                let negative: Option<bool> = row.try_get("negative").during("total usage window")?;
                out.insert(
                    CustomerId::from_uuid(customer),
                    subscription.map(SubscriptionId::from_uuid),
                    PeriodTotals {
                        count: n.unsigned_abs(),
                        sum: total.and_then(|t| Decimal::from_str_exact(&t).ok()),
                        max: top,
                        latest: None,
                        distinct: 0,
                        negative: negative.unwrap_or(false),
                    },
                );
            }
            Ok(Some(out))
        }

        /// The raw events of `keys`, each with the position of its key, in one statement.
        pub(crate) async fn key_events(
            tx: &mut Tx,
            tenant: TenantId,
            keys: &[KeyRow],
            count: usize,
        ) -> Result<Vec<(usize, UsageEvent)>> {
            let sql = format!(
                "SELECT k.idx AS idx, e.event_id, e.customer_id, e.subscription_id, e.meter_id, \
                   e.quantity, e.occurred_at, e.properties \
                 FROM {KEYS_TABLE} JOIN usage_events AS e ON e.tenant_id = $1 AND {KEY_MATCH}"
            );
            let rows = bind_keys(sqlx::query(sqlx::AssertSqlSafe(sql)), tenant, keys)
                .fetch_all(&mut **tx)
                .await
                .during("read usage")?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let index = position(row.try_get("idx").during("read usage")?, count)?;
                out.push((index, decode(row)?));
            }
            Ok(out)
        }
    }
}

/// Checks an event's properties, before any SQL runs, for what the database cannot store: a
/// NUL character in a name or value, or more than a document's worth of text in all.
fn check_properties(properties: &BTreeMap<String, String>) -> Result<()> {
    let mut bytes: usize = 0;
    for (name, value) in properties {
        input::text("usage property name", name)?;
        input::text("usage property value", value)?;
        bytes = bytes.saturating_add(name.len()).saturating_add(value.len());
    }
    if bytes > input::MAX_DOCUMENT_BYTES {
        return Err(SqlError::InvalidInput {
            what: "usage properties",
            problem: InputProblem::TooLong {
                bytes,
                max: input::MAX_DOCUMENT_BYTES,
            },
        });
    }
    Ok(())
}

impl Database {
    /// Stores the events whose ids are new for the tenant, in one transaction; per event,
    /// whether it was new (an id repeated within the batch is new only the first time).
    /// [`SqlError::InvalidInput`] for properties the database cannot store; nothing is written.
    pub(crate) async fn append_usage(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> Result<Vec<bool>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        for event in events {
            check_properties(&event.properties)?;
        }
        let mut inserted =
            dispatch!(self, pool, d => d::usage::append(pool, tenant, events).await?);
        Ok(events
            .iter()
            .map(|e| inserted.remove(&e.id.as_uuid()))
            .collect())
    }

    pub(crate) async fn usage_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageEvent>> {
        let mut events = dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let rows = sqlx::query(
                "SELECT event_id, customer_id, subscription_id, meter_id, quantity, occurred_at, \
                   properties FROM usage_events \
                 WHERE tenant_id = $1 AND customer_id = $2 AND meter_id = $3 \
                   AND occurred_at >= $4 AND occurred_at < $5",
            )
            .bind(tenant.as_uuid())
            .bind(customer.as_uuid())
            .bind(meter.as_uuid())
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await
            .during("read usage")?;
            tx.commit().await.during("end read")?;
            rows.iter().map(d::usage::decode).collect::<Result<Vec<_>>>()?
        });
        // Ordered here, not in SQL: SQLite compares instants as text.
        events.sort_by_key(|e| (e.timestamp, e.id));
        Ok(events)
    }
}

impl Database {
    /// [`UsageStore::period_aggregates`] in one read transaction: one `GROUP BY` over every
    /// key whose meter SQL aggregates exactly, then one read of the raw events of the keys it
    /// cannot (time-weighted meters, negative or inexact quantities), which go through
    /// [`aggregate_events`]. Keys without events aggregate nothing.
    pub(crate) async fn usage_period_aggregates(
        &self,
        tenant: TenantId,
        meters: &[Meter],
        keys: &[PeriodKey],
    ) -> Result<Vec<std::result::Result<Decimal, UsageError>>> {
        let windows = key_windows(meters, keys);
        let row = |index: usize, key: &PeriodKey, meter: &Meter, from, to| KeyRow {
            index,
            customer: key.customer.as_uuid(),
            subscription: key.subscription.map(|s| s.as_uuid()),
            meter: key.meter.as_uuid(),
            from,
            to,
            kind: match meter.aggregation {
                Aggregation::Sum => kind::SUM,
                Aggregation::Max => kind::MAX,
                Aggregation::Latest => kind::LATEST,
                Aggregation::UniqueCount { .. } => kind::UNIQUE,
                _ => kind::COUNT,
            },
            property: match &meter.aggregation {
                Aggregation::UniqueCount { property } => Some(property.clone()),
                _ => None,
            },
        };
        let (mut summed, mut streamed) = (Vec::new(), Vec::new());
        for (index, (key, window)) in keys.iter().zip(&windows).enumerate() {
            if let Ok((meter, from, to)) = window {
                let weighted = matches!(
                    meter.aggregation,
                    Aggregation::WeightedSum | Aggregation::WeightedSumOfChanges
                );
                let target = if weighted { &mut streamed } else { &mut summed };
                target.push(row(index, key, meter, *from, *to));
            }
        }
        let mut out: Vec<std::result::Result<Decimal, UsageError>> = windows
            .iter()
            .map(|w| match w {
                Ok(_) => Ok(Decimal::ZERO),
                Err(e) => Err(e.clone()),
            })
            .collect();
        if summed.is_empty() && streamed.is_empty() {
            return Ok(out);
        }
        let count = keys.len();
        let events = dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            if !summed.is_empty() {
                let (totals, overflowed) = d::usage::totals(&mut tx, tenant, &summed, count).await?;
                let mut inexact: HashSet<usize> = overflowed.into_iter().collect();
                for (index, totals) in totals {
                    let quantity = match windows.get(index) {
                        Some(Ok((meter, _, _))) => totals.quantity(&meter.aggregation),
                        _ => None,
                    };
                    match (quantity, out.get_mut(index)) {
                        (Some(q), Some(slot)) => *slot = Ok(q),
                        _ => {
                            inexact.insert(index);
                        }
                    }
                }
                streamed.extend(summed.into_iter().filter(|r| inexact.contains(&r.index)));
            }
            let events = if streamed.is_empty() {
                Vec::new()
            } else {
                d::usage::key_events(&mut tx, tenant, &streamed, count).await?
            };
            tx.commit().await.during("end read")?;
            events
        });
        let mut by_key: Vec<Vec<UsageEvent>> = vec![Vec::new(); count];
        for (index, event) in events {
            if let Some(list) = by_key.get_mut(index) {
                list.push(event);
            }
        }
        for r in &streamed {
            if let (Some(Ok((meter, _, _))), Some(key), Some(slot), Some(events)) = (
                windows.get(r.index),
                keys.get(r.index),
                out.get_mut(r.index),
                by_key.get(r.index),
            ) {
                *slot = aggregate_events(meter, key, events);
            }
        }
        Ok(out)
    }
}

impl Database {
    /// One grouped pass over a meter's events in a window (see
    /// [`UsageStore::window_totals`]), in a read transaction.
    pub(crate) async fn usage_window_totals(
        &self,
        tenant: TenantId,
        meter: &Meter,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<WindowTotals>> {
        dispatch!(self, pool, d => d::usage::window_pass(pool, tenant, meter, from, to).await)
    }
}

/// Storage failures as usage errors: domain errors pass through, every other failure is
/// [`UsageError::Storage`] with its kind and cause.
fn usage_storage(error: SqlError) -> UsageError {
    match error {
        SqlError::Core(core) => UsageError::Core(core),
        other => UsageError::Storage(other.into()),
    }
}

impl UsageStore for crate::store::SqlStore {
    #[tracing::instrument(name = "dotmac.store.append_usage", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), events = events.len()))]
    async fn append_events(
        &self,
        tenant: TenantId,
        events: &[UsageEvent],
    ) -> std::result::Result<Vec<bool>, UsageError> {
        self.db
            .append_usage(tenant, events)
            .await
            .map_err(usage_storage)
    }

    #[tracing::instrument(name = "dotmac.store.usage_events_between", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> std::result::Result<Vec<UsageEvent>, UsageError> {
        self.db
            .usage_between(tenant, customer, meter, from, to)
            .await
            .map_err(usage_storage)
    }

    #[tracing::instrument(name = "dotmac.store.usage_window_totals", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn window_totals(
        &self,
        tenant: TenantId,
        meter: &Meter,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> std::result::Result<Option<WindowTotals>, UsageError> {
        self.db
            .usage_window_totals(tenant, meter, from, to)
            .await
            .map_err(usage_storage)
    }

    #[tracing::instrument(name = "dotmac.store.usage_period_aggregates", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), keys = keys.len()))]
    async fn period_aggregates(
        &self,
        tenant: TenantId,
        meters: &[Meter],
        keys: &[PeriodKey],
    ) -> std::result::Result<Vec<std::result::Result<Decimal, UsageError>>, UsageError> {
        self.db
            .usage_period_aggregates(tenant, meters, keys)
            .await
            .map_err(usage_storage)
    }
}

/// A range of customer ids: from the first (inclusive, `None`: from the lowest) to the second
/// (exclusive, `None`: to the highest). SQLite's window pass reads one per connection.
#[cfg(feature = "sqlite")]
type CustomerRange = (Option<Uuid>, Option<Uuid>);

/// The consecutive ranges that `cuts` (ascending) make of all customer ids: one more than
/// there are distinct cuts, which together hold every id exactly once.
#[cfg(feature = "sqlite")]
fn customer_ranges(cuts: &[Uuid]) -> Vec<CustomerRange> {
    let mut cuts = cuts.to_vec();
    cuts.sort_unstable();
    cuts.dedup();
    let mut ranges = Vec::with_capacity(cuts.len().saturating_add(1));
    let mut low = None;
    for cut in cuts {
        ranges.push((low, Some(cut)));
        low = Some(cut);
    }
    ranges.push((low, None));
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SQLite file (its pool has connections to spare, so a window pass is read in ranges)
    /// whose tenant has billing accounts for `accounts`.
    #[cfg(feature = "sqlite")]
    async fn sqlite_file_with_accounts(accounts: &[CustomerId]) -> (Database, TenantId) {
        use chrono::TimeZone;
        let path = std::env::temp_dir().join(format!("dotmac-window-{}.db", Uuid::new_v4()));
        let db = Database::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let tenant = TenantId::new();
        db.create_tenant(
            tenant,
            "Cut ISP",
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        )
        .await
        .unwrap();
        let crate::db::Backend::Sqlite(pool) = db.backend_pool() else {
            unreachable!("a SQLite URL");
        };
        for customer in accounts {
            sqlx::query(
                "INSERT INTO billing_accounts (tenant_id, customer_id, body) VALUES ($1, $2, '{}')",
            )
            .bind(tenant.as_uuid())
            .bind(customer.as_uuid())
            .execute(pool)
            .await
            .unwrap();
        }
        (db, tenant)
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_window_read_in_customer_ranges_totals_every_event_once() {
        use chrono::TimeZone;
        use dotmac_core::MeterId;
        let meter = Meter {
            id: MeterId::from_u128(7),
            code: "data".into(),
            aggregation: Aggregation::Sum,
        };
        // Accounts 10..=19; events also for customers below and above every account and
        // without one; the events of even customers name their subscription, of odd ones none.
        let accounts: Vec<CustomerId> = (10..20).map(CustomerId::from_u128).collect();
        let (db, tenant) = sqlite_file_with_accounts(&accounts).await;
        let crate::db::Backend::Sqlite(pool) = db.backend_pool() else {
            unreachable!("a SQLite URL");
        };
        let parts = crate::backend::sqlite::usage::window_parallelism(pool);
        let mut tx = pool.begin().await.unwrap();
        let cuts = crate::backend::sqlite::usage::window_cuts(&mut tx, tenant, parts.max(2))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Two ranges: cut at the sixth account, the middle of ten.
        assert_eq!(cuts, vec![CustomerId::from_u128(15).as_uuid()]);
        let from = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
        let customers = [1_u128, 10, 14, 15, 16, 19, 25];
        let events: Vec<UsageEvent> = customers
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                (0..3_u32).map(move |n| UsageEvent {
                    id: UsageEventId::from_u128(*c * 100 + u128::from(n)),
                    customer: CustomerId::from_u128(*c),
                    subscription: (c % 2 == 0).then(|| SubscriptionId::from_u128(*c)),
                    meter: MeterId::from_u128(7),
                    quantity: Decimal::from(i as u32 * 10 + n),
                    timestamp: from + chrono::Duration::days(i64::from(n) * 9),
                    properties: BTreeMap::new(),
                })
            })
            .collect();
        let store = crate::store::SqlStore::new(db.clone());
        store.append_events(tenant, &events).await.unwrap();
        let totals = store
            .window_totals(tenant, &meter, from, to)
            .await
            .unwrap()
            .unwrap();
        for (i, c) in customers.iter().enumerate() {
            let want = Decimal::from(i as u32 * 30 + 3);
            for subscription in [None, Some(SubscriptionId::from_u128(*c))] {
                assert_eq!(
                    totals.quantity(&Aggregation::Sum, CustomerId::from_u128(*c), subscription),
                    Some(want),
                    "customer {c}"
                );
            }
        }
        assert_eq!(totals.len(), customers.len());
        db.close().await;
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn cuts_make_consecutive_customer_ranges_that_hold_every_id_once() {
        let (a, b) = (Uuid::from_u128(10), Uuid::from_u128(20));
        assert_eq!(customer_ranges(&[]), vec![(None, None)]);
        assert_eq!(
            customer_ranges(&[b, a, b]),
            vec![(None, Some(a)), (Some(a), Some(b)), (Some(b), None)]
        );
        let within = |id: Uuid, (low, high): CustomerRange| {
            low.is_none_or(|l| id >= l) && high.is_none_or(|h| id < h)
        };
        for id in [0, 9, 10, 11, 19, 20, u128::MAX].map(Uuid::from_u128) {
            let holding = customer_ranges(&[a, b])
                .into_iter()
                .filter(|r| within(id, *r))
                .count();
            assert_eq!(holding, 1, "{id}");
        }
    }
}
