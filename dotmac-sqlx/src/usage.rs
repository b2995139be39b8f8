//! Usage events: bulk, idempotent ingestion (UNNEST on PostgreSQL, multi-row INSERT on SQLite).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use dotmac_core::{CustomerId, SubscriptionId, TenantId};
use dotmac_core::{MeterId, UsageEventId};
use dotmac_usage::{UsageError, UsageEvent, UsageStore};
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::error::{Context, InputProblem, Result, SqlError};
use crate::input;

/// Rows per statement on SQLite: bounded by its 32,766 parameters (8 a row).
const BATCH: usize = 4000;

/// Rows per statement on PostgreSQL (one array per column): keeps one statement's arrays to
/// a few MB.
#[cfg(feature = "postgres")]
const PG_BATCH: usize = 20_000;

for_each_dialect! {
    shared {
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
}
