//! The transactional outbox: domain events written in the transaction of the change that
//! produced them, and a relay API that claims undelivered events and marks them delivered.

use std::collections::HashSet;
use std::collections::hash_map::{Entry, HashMap};
use std::future::Future;

use chrono::{DateTime, Utc};
use dotmac_core::{DomainEvent, EventId, EventPayload, TenantId};
use serde::Serialize;
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::error::{Context, Result, SqlError};
use crate::input;

/// A domain event ready to be written to the outbox: the envelope with its payload as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The event's id, unique within its tenant (writing the same event twice stores it once).
    pub id: EventId,
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// The stable event name.
    pub event_type: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The payload.
    pub payload: serde_json::Value,
}

impl OutboxEvent {
    /// Serialises an event written with a change (its payload kept typed until now).
    ///
    /// # Errors
    ///
    /// [`SqlError::Json`] if the payload cannot be serialised.
    pub fn from_core(event: &dotmac_core::outbox::OutboxEvent) -> Result<Self> {
        Ok(OutboxEvent {
            id: event.id(),
            tenant: event.tenant(),
            event_type: event.event_type().to_owned(),
            occurred_at: event.occurred_at(),
            payload: event.payload_value().map_err(|source| SqlError::Json {
                what: "event payload",
                source,
            })?,
        })
    }

    /// Serialises a domain event.
    ///
    /// # Errors
    ///
    /// [`SqlError::Json`] if the payload cannot be serialised.
    pub fn from_domain<P: Serialize + EventPayload>(event: &DomainEvent<P>) -> Result<Self> {
        Ok(OutboxEvent {
            id: event.id,
            tenant: event.tenant,
            event_type: event.event_type().to_owned(),
            occurred_at: event.occurred_at,
            payload: serde_json::to_value(&event.payload).map_err(|source| SqlError::Json {
                what: "event payload",
                source,
            })?,
        })
    }
}

/// An outbox event claimed by a relay: deliver it, then [`Database::mark_delivered`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// Position in the outbox: delivery order within a tenant.
    pub seq: i64,
    /// The event.
    pub event: OutboxEvent,
    /// How many times it has been claimed, this time included (more than 1 means an earlier
    /// relay died or gave up before marking it delivered).
    pub attempts: i32,
}

/// The events to write, each id once, after checking that every one is `tenant`'s and
/// storable. An id given twice must name the same event both times.
fn distinct_events(tenant: TenantId, events: &[OutboxEvent]) -> Result<Vec<&OutboxEvent>> {
    let mut seen: HashMap<EventId, &OutboxEvent> = HashMap::with_capacity(events.len());
    let mut distinct = Vec::with_capacity(events.len());
    for event in events {
        if event.tenant != tenant {
            return Err(SqlError::TenantMismatch {
                what: "outbox event",
                id: event.id.to_string(),
                expected: tenant,
                found: event.tenant,
            });
        }
        input::text("event type", &event.event_type)?;
        match seen.entry(event.id) {
            Entry::Occupied(first) if same_event(first.get(), event) => {}
            Entry::Occupied(_) => return Err(different_event(event)),
            Entry::Vacant(slot) => {
                slot.insert(event);
                distinct.push(event);
            }
        }
    }
    Ok(distinct)
}

/// Checks, before any SQL runs, that every event is `tenant`'s and storable, and that an id
/// given twice names one event: [`SqlError::TenantMismatch`], [`SqlError::InvalidInput`],
/// [`SqlError::Duplicate`].
pub(crate) fn check_events(tenant: TenantId, events: &[OutboxEvent]) -> Result<()> {
    distinct_events(tenant, events).map(drop)
}

/// Whether two events with one id are the same event (a replay): same tenant, type and
/// payload. The instant is not compared: a fact reported again later (an event id derived from
/// what happened, such as `billing.invoice_issued`'s) is still the same fact, and the first
/// report is kept.
fn same_event(a: &OutboxEvent, b: &OutboxEvent) -> bool {
    a.id == b.id && a.tenant == b.tenant && a.event_type == b.event_type && a.payload == b.payload
}

fn different_event(event: &OutboxEvent) -> SqlError {
    SqlError::Duplicate {
        what: "outbox event (the id names a different event of this tenant)",
        key: event.id.to_string(),
    }
}

/// The columns of a stored event, for `decode_message`.
macro_rules! message_columns {
    () => {
        "seq, tenant_id, event_id, event_type, occurred_at, payload, attempts, \
         aggregate_type, aggregate_id, status, last_error"
    };
}

/// The aggregate of each event written with a change, by event id.
type Aggregates = HashMap<EventId, dotmac_core::outbox::Aggregate>;

/// The aggregate `event` is about: the one `aggregates` names, or the event itself.
fn aggregate_of<'a>(aggregates: &'a Aggregates, event: &OutboxEvent) -> (&'a str, Uuid) {
    aggregates
        .get(&event.id)
        .map_or(("event", event.id.as_uuid()), |a| (a.kind(), a.id()))
}

for_each_dialect! {
    shared {
        /// A stored event as the dispatcher sees it.
        pub(crate) fn decode_message(row: &DbRow) -> Result<dotmac_core::outbox::OutboxMessage> {
            let base = decode(row)?;
            let kind: String = row.try_get("aggregate_type").during("read outbox")?;
            let id: Option<Uuid> = row.try_get("aggregate_id").during("read outbox")?;
            let status: String = row.try_get("status").during("read outbox")?;
            let status = dotmac_core::outbox::OutboxStatus::parse(&status).ok_or(SqlError::Corrupt {
                what: "outbox status",
                detail: format!("unknown status {status:?}"),
            })?;
            let aggregate = dotmac_core::outbox::Aggregate::from_parts(
                kind,
                id.unwrap_or(base.event.id.as_uuid()),
            );
            Ok(dotmac_core::outbox::OutboxMessage::from_parts(
                u64::try_from(base.seq).map_err(|_| SqlError::Corrupt {
                    what: "outbox seq",
                    detail: format!("negative position {}", base.seq),
                })?,
                base.event.id,
                base.event.tenant,
                base.event.event_type,
                aggregate,
                base.event.occurred_at,
                base.event.payload,
                u32::try_from(base.attempts).unwrap_or(0),
                status,
                row.try_get("last_error").during("read outbox")?,
            ))
        }

        /// Claims deliverable events (see [`dotmac_core::outbox::OutboxStore::claim`]) in an
        /// open relay transaction.
        pub(crate) async fn claim(
            tx: &mut Tx,
            worker: &str,
            now: DateTime<Utc>,
            until: DateTime<Utc>,
            limit: i64,
        ) -> Result<Vec<DbRow>> {
            if IS_POSTGRES {
                // Claims queue on one lock: two relays claiming at once could otherwise each
                // see the other's aggregate as free and hand out its events out of order.
                sqlx::query("SELECT pg_advisory_xact_lock(7305311571264)")
                    .execute(&mut **tx)
                    .await
                    .during("lock outbox claims")?;
            }
            let sql = concat!(
                "UPDATE outbox SET claimed_by = $1, claim_expires_at = $2, attempts = attempts + 1 \
                 WHERE seq IN (SELECT o.seq FROM outbox o WHERE o.status = 'pending' \
                   AND (o.claim_expires_at IS NULL OR o.claim_expires_at <= $3) \
                   AND (o.not_before IS NULL OR o.not_before <= $3) \
                   AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.status = 'pending' \
                     AND e.tenant_id = o.tenant_id AND e.aggregate_type = o.aggregate_type \
                     AND e.aggregate_id = o.aggregate_id AND e.seq < o.seq \
                     AND ((e.claim_expires_at IS NOT NULL AND e.claim_expires_at > $3) \
                       OR (e.not_before IS NOT NULL AND e.not_before > $3))) \
                   ORDER BY o.seq LIMIT $4) \
                 RETURNING ",
                message_columns!()
            );
            sqlx::query(sql)
                .bind(worker)
                .bind(until)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut **tx)
                .await
                .during("claim outbox events")
        }

        /// Writes `tenant`'s events inside an open transaction.
        ///
        /// Every event must be the tenant's ([`SqlError::TenantMismatch`], checked before any
        /// SQL runs) and storable ([`SqlError::InvalidInput`]). An event id the tenant already
        /// used is a replay when the stored event has the same type and payload (skipped, so a
        /// retried transaction never duplicates an event) and [`SqlError::Duplicate`] when it
        /// is a different event: an event is never silently dropped.
        pub(crate) async fn insert(tx: &mut Tx, tenant: TenantId, events: &[OutboxEvent]) -> Result<()> {
            insert_about(tx, tenant, events, &Aggregates::default()).await
        }

        /// [`insert`], each event about the aggregate `aggregates` names for its id (an event
        /// it does not name is its own aggregate).
        async fn insert_about(
            tx: &mut Tx,
            tenant: TenantId,
            events: &[OutboxEvent],
            aggregates: &Aggregates,
        ) -> Result<()> {
            let distinct = distinct_events(tenant, events)?;
            if distinct.is_empty() {
                return Ok(());
            }
            let inserted = insert_new(tx, tenant, &distinct, aggregates).await?;
            for event in distinct.iter().filter(|e| !inserted.contains(&e.id.as_uuid())) {
                let stored = sqlx::query(
                    "SELECT seq, tenant_id, event_id, event_type, occurred_at, payload, attempts \
                     FROM outbox WHERE tenant_id = $1 AND event_id = $2",
                )
                .bind(tenant.as_uuid())
                .bind(event.id.as_uuid())
                .fetch_one(&mut **tx)
                .await
                .during("read replayed outbox event")?;
                if !same_event(&decode(&stored)?.event, event) {
                    return Err(different_event(event));
                }
            }
            Ok(())
        }

        /// Writes the events of a change inside its open transaction (see [`insert`]).
        pub(crate) async fn insert_core(
            tx: &mut Tx,
            tenant: TenantId,
            events: &[dotmac_core::outbox::OutboxEvent],
        ) -> Result<()> {
            if events.is_empty() {
                return Ok(());
            }
            let stored = events.iter().map(OutboxEvent::from_core).collect::<Result<Vec<_>>>()?;
            let aggregates = events.iter().map(|e| (e.id(), e.aggregate())).collect();
            insert_about(tx, tenant, &stored, &aggregates).await
        }

        pub(crate) fn decode(row: &DbRow) -> Result<OutboxMessage> {
            let payload: Json<serde_json::Value> = row.try_get("payload").during("read outbox")?;
            Ok(OutboxMessage {
                seq: row.try_get("seq").during("read outbox")?,
                attempts: row.try_get("attempts").during("read outbox")?,
                event: OutboxEvent {
                    id: EventId::from_uuid(row.try_get("event_id").during("read outbox")?),
                    tenant: TenantId::from_uuid(row.try_get("tenant_id").during("read outbox")?),
                    event_type: row.try_get("event_type").during("read outbox")?,
                    occurred_at: row.try_get("occurred_at").during("read outbox")?,
                    payload: payload.0,
                },
            })
        }
    }
    sqlite {
        /// Inserts the events whose ids the tenant has not used; returns the ids inserted.
        async fn insert_new(
            tx: &mut Tx,
            tenant: TenantId,
            events: &[&OutboxEvent],
            aggregates: &Aggregates,
        ) -> Result<HashSet<Uuid>> {
            let mut inserted = HashSet::with_capacity(events.len());
            // 7 parameters a row stays well under SQLite's 32,766 bound parameters.
            for chunk in events.chunks(1000) {
                let payloads = chunk
                    .iter()
                    .map(|e| input::document("event payload", &e.payload))
                    .collect::<Result<Vec<_>>>()?;
                let mut builder = sqlx::QueryBuilder::new(
                    "INSERT INTO outbox (tenant_id, event_id, event_type, occurred_at, payload, \
                     aggregate_type, aggregate_id) ",
                );
                builder.push_values(chunk.iter().zip(payloads), |mut row, (e, payload)| {
                    let (kind, id) = aggregate_of(aggregates, e);
                    row.push_bind(tenant.as_uuid())
                        .push_bind(e.id.as_uuid())
                        .push_bind(e.event_type.as_str())
                        .push_bind(e.occurred_at)
                        .push_bind(Json(payload))
                        .push_bind(kind)
                        .push_bind(id);
                });
                builder.push(" ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id");
                let rows = builder
                    .build()
                    .fetch_all(&mut **tx)
                    .await
                    .during("write outbox events")?;
                for row in &rows {
                    inserted.insert(row.try_get::<Uuid, _>(0).during("write outbox events")?);
                }
            }
            Ok(inserted)
        }

        pub(crate) async fn mark(
            tx: &mut Tx,
            consumer: &str,
            seqs: &[i64],
            now: DateTime<Utc>,
        ) -> Result<u64> {
            let mut marked = 0;
            for seq in seqs {
                marked += sqlx::query(
                    "UPDATE outbox SET delivered_at = $1, status = 'handled', claimed_by = NULL, \
                       claim_expires_at = NULL \
                     WHERE seq = $2 AND claimed_by = $3 AND status = 'pending'",
                )
                .bind(now)
                .bind(seq)
                .bind(consumer)
                .execute(&mut **tx)
                .await
                .during("mark outbox delivered")?
                .rows_affected();
            }
            Ok(marked)
        }
    }
    postgres {
        /// Inserts the events whose ids the tenant has not used, with one UNNEST insert;
        /// returns the ids inserted.
        async fn insert_new(
            tx: &mut Tx,
            tenant: TenantId,
            events: &[&OutboxEvent],
            aggregates: &Aggregates,
        ) -> Result<HashSet<Uuid>> {
            let ids: Vec<Uuid> = events.iter().map(|e| e.id.as_uuid()).collect();
            let (kinds, of): (Vec<&str>, Vec<Uuid>) =
                events.iter().map(|e| aggregate_of(aggregates, e)).unzip();
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            let at: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
            // Sent as text and cast to `json` (the column's type, migration 0004): the server
            // only validates it. A `Json` bind would be declared `jsonb` and parsed into the
            // binary form first.
            let payloads: Vec<String> = events.iter().map(|e| e.payload.to_string()).collect();
            for payload in &payloads {
                input::document_text("event payload", payload)?;
            }
            let inserted: Vec<Uuid> = sqlx::query_scalar(
                "INSERT INTO outbox (tenant_id, event_id, event_type, occurred_at, payload, \
                   aggregate_type, aggregate_id) \
                 SELECT $1, u.id, u.kind, u.at, u.payload::json, u.agg_kind, u.agg_id \
                 FROM UNNEST($2::uuid[], $3::text[], $4::timestamptz[], $5::text[], \
                   $6::text[], $7::uuid[]) AS u(id, kind, at, payload, agg_kind, agg_id) \
                 ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id",
            )
            .bind(tenant.as_uuid())
            .bind(ids)
            .bind(types)
            .bind(at)
            .bind(payloads)
            .bind(kinds)
            .bind(of)
            .fetch_all(&mut **tx)
            .await
            .during("write outbox events")?;
            Ok(inserted.into_iter().collect())
        }

        pub(crate) async fn mark(
            tx: &mut Tx,
            consumer: &str,
            seqs: &[i64],
            now: DateTime<Utc>,
        ) -> Result<u64> {
            Ok(sqlx::query(
                "UPDATE outbox SET delivered_at = $1, status = 'handled', claimed_by = NULL, \
                   claim_expires_at = NULL \
                 WHERE seq = ANY($2) AND claimed_by = $3 AND status = 'pending'",
            )
            .bind(now)
            .bind(seqs)
            .bind(consumer)
            .execute(&mut **tx)
            .await
            .during("mark outbox delivered")?
            .rows_affected())
        }
    }
}

impl Database {
    /// Writes domain events to the outbox in a transaction of their own (services that change
    /// state through this crate's stores write their events in the change's transaction).
    ///
    /// An event id the tenant already used is skipped when it names the same event (a
    /// replay) and refused when it names another one. Ids are the tenant's own: another
    /// tenant's use of an id changes nothing here.
    ///
    /// # Errors
    ///
    /// [`SqlError::TenantMismatch`] if an event belongs to another tenant,
    /// [`SqlError::Duplicate`] for an id that names a different event of this tenant,
    /// [`SqlError::InvalidInput`] for a NUL character or an oversize payload, [`SqlError::Json`],
    /// [`SqlError::Database`]. Nothing is written then.
    #[tracing::instrument(name = "dotmac.store.append_events", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name(), events = events.len()))]
    pub async fn append_events(&self, tenant: TenantId, events: &[OutboxEvent]) -> Result<()> {
        check_events(tenant, events)?;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            d::outbox::insert(&mut tx, tenant, events).await?;
            tx.commit().await.during("commit outbox events")
        })
    }

    /// Claims up to `limit` undelivered events of every tenant, oldest first, for `consumer`,
    /// for `lease` from `now`: until then no other relay claims them. Several relays may run at
    /// once (on PostgreSQL they skip each other's locked rows). Delivery is at least once: an
    /// event whose lease ran out before it was marked is claimed again.
    ///
    /// # Errors
    ///
    /// [`SqlError::InvalidInput`] for a NUL character or an oversize consumer name,
    /// [`SqlError::Database`]; [`SqlError::Core`] with `DateOutOfRange` when `now + lease` is
    /// past the last instant.
    #[tracing::instrument(name = "dotmac.store.claim_outbox", level = "debug", skip_all, fields(backend = self.backend_name(), limit = limit))]
    pub async fn claim_outbox(
        &self,
        consumer: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<OutboxMessage>> {
        input::text("relay consumer name", consumer)?;
        let expires = now
            .checked_add_signed(lease)
            .ok_or(dotmac_core::CoreError::DateOutOfRange("lease expiry"))?;
        let mut claimed = dispatch!(self, pool, d => {
            let mut tx = d::begin_relay(pool).await?;
            let rows = d::outbox::claim(&mut tx, consumer, now, expires, i64::from(limit)).await?;
            let messages = rows.iter().map(d::outbox::decode).collect::<Result<Vec<_>>>()?;
            tx.commit().await.during("commit outbox claim")?;
            messages
        });
        claimed.sort_by_key(|m| m.seq);
        Ok(claimed)
    }

    /// Marks claimed events delivered. Only events still claimed by `consumer` are marked
    /// (one whose lease expired and was claimed by another relay is left to that relay);
    /// returns how many were marked.
    ///
    /// # Errors
    ///
    /// [`SqlError::InvalidInput`] for a NUL character or an oversize consumer name,
    /// [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.mark_delivered", level = "debug", skip_all, fields(backend = self.backend_name(), events = seqs.len()))]
    pub async fn mark_delivered(
        &self,
        consumer: &str,
        seqs: &[i64],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        input::text("relay consumer name", consumer)?;
        dispatch!(self, pool, d => {
            let mut tx = d::begin_relay(pool).await?;
            let marked = d::outbox::mark(&mut tx, consumer, seqs, now).await?;
            tx.commit().await.during("commit outbox delivery")?;
            Ok(marked)
        })
    }

    /// A tenant's outbox events, delivered or not, oldest first (for audits and tests).
    ///
    /// # Errors
    ///
    /// [`SqlError::Database`].
    #[tracing::instrument(name = "dotmac.store.outbox_events", level = "debug", skip_all, fields(tenant = %tenant, backend = self.backend_name()))]
    pub async fn outbox_events(&self, tenant: TenantId) -> Result<Vec<OutboxMessage>> {
        dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let rows = sqlx::query(
                "SELECT seq, tenant_id, event_id, event_type, occurred_at, payload, attempts \
                 FROM outbox WHERE tenant_id = $1 ORDER BY seq",
            )
            .bind(tenant.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .during("read outbox")?;
            tx.commit().await.during("end read")?;
            rows.iter().map(d::outbox::decode).collect()
        })
    }
}

/// What an outbox mark binds after the tenant and seq.
enum MarkBinds<'a> {
    /// `$3` worker, `$4` instant, `$5` optional text.
    Worker(&'a str, DateTime<Utc>, Option<&'a str>),
    /// Nothing more.
    None,
}

impl Database {
    /// Runs an update of one event (`statement` binds tenant, seq, then `binds`) in a relay
    /// transaction; returns whether it changed the row.
    async fn outbox_update(
        &self,
        what: &'static str,
        statement: &'static str,
        tenant: TenantId,
        seq: u64,
        binds: MarkBinds<'_>,
    ) -> Result<bool> {
        if let MarkBinds::Worker(worker, _, error) = &binds {
            input::text("relay consumer name", worker)?;
            if let Some(error) = error {
                input::text("outbox error", error)?;
            }
        }
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        dispatch!(self, pool, d => {
            let mut tx = d::begin_relay(pool).await?;
            let query = sqlx::query(statement).bind(tenant.as_uuid()).bind(seq);
            let query = match binds {
                MarkBinds::Worker(worker, at, text) => query.bind(worker).bind(at).bind(text),
                MarkBinds::None => query,
            };
            let changed = query.execute(&mut *tx).await.during(what)?.rows_affected();
            tx.commit().await.during(what)?;
            Ok(changed > 0)
        })
    }
}

impl dotmac_core::outbox::OutboxStore for Database {
    async fn append_outbox(
        &self,
        tenant: TenantId,
        events: &[dotmac_core::outbox::OutboxEvent],
    ) -> std::result::Result<(), dotmac_core::StorageError> {
        let stored = events
            .iter()
            .map(OutboxEvent::from_core)
            .collect::<Result<Vec<_>>>()?;
        check_events(tenant, &stored)?;
        Ok(dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            d::outbox::insert_core(&mut tx, tenant, events).await?;
            tx.commit().await.during("commit outbox events")
        })?)
    }

    #[tracing::instrument(name = "dotmac.store.claim_outbox", level = "debug", skip_all, fields(backend = self.backend_name(), limit = limit))]
    async fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> std::result::Result<Vec<dotmac_core::outbox::OutboxMessage>, dotmac_core::StorageError>
    {
        input::text("relay consumer name", worker)?;
        let until = now
            .checked_add_signed(lease)
            .ok_or(dotmac_core::CoreError::DateOutOfRange("lease expiry"))
            .map_err(SqlError::from)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut claimed = dispatch!(self, pool, d => {
            let mut tx = d::begin_relay(pool).await?;
            let rows = d::outbox::claim(&mut tx, worker, now, until, limit).await?;
            let messages = rows
                .iter()
                .map(d::outbox::decode_message)
                .collect::<Result<Vec<_>>>()?;
            tx.commit().await.during("commit outbox claim")?;
            messages
        });
        claimed.sort_by_key(|m| m.seq);
        Ok(claimed)
    }

    async fn complete(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<bool, dotmac_core::StorageError> {
        Ok(self
            .outbox_update(
                "mark outbox event handled",
                "UPDATE outbox SET status = 'handled', delivered_at = $4, claimed_by = NULL, \
                   claim_expires_at = NULL, last_error = COALESCE($5, last_error) \
                 WHERE tenant_id = $1 AND seq = $2 AND claimed_by = $3 AND status = 'pending'",
                tenant,
                seq,
                MarkBinds::Worker(worker, now, None),
            )
            .await?)
    }

    /// One transaction for the whole batch; events of every tenant (seqs are the outbox's
    /// global positions), as a claim does.
    async fn complete_all(
        &self,
        handled: &[(TenantId, u64)],
        worker: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<u64, dotmac_core::StorageError> {
        if handled.is_empty() {
            return Ok(0);
        }
        input::text("relay consumer name", worker)?;
        let seqs: Vec<i64> = handled
            .iter()
            .map(|(_, seq)| i64::try_from(*seq).unwrap_or(i64::MAX))
            .collect();
        Ok(dispatch!(self, pool, d => {
            let mut tx = d::begin_relay(pool).await?;
            let marked = d::outbox::mark(&mut tx, worker, &seqs, now).await?;
            tx.commit().await.during("mark outbox events handled")?;
            marked
        }))
    }

    async fn release(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        not_before: DateTime<Utc>,
        error: Option<&str>,
    ) -> std::result::Result<bool, dotmac_core::StorageError> {
        Ok(self
            .outbox_update(
                "release outbox event",
                "UPDATE outbox SET claimed_by = NULL, claim_expires_at = NULL, not_before = $4, \
                   last_error = COALESCE($5, last_error) \
                 WHERE tenant_id = $1 AND seq = $2 AND claimed_by = $3 AND status = 'pending'",
                tenant,
                seq,
                MarkBinds::Worker(worker, not_before, error),
            )
            .await?)
    }

    async fn park(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<bool, dotmac_core::StorageError> {
        Ok(self
            .outbox_update(
                "park outbox event",
                "UPDATE outbox SET status = 'parked', delivered_at = $4, last_error = $5, \
                   claimed_by = NULL, claim_expires_at = NULL \
                 WHERE tenant_id = $1 AND seq = $2 AND claimed_by = $3 AND status = 'pending'",
                tenant,
                seq,
                MarkBinds::Worker(worker, now, Some(error)),
            )
            .await?)
    }

    async fn requeue(
        &self,
        tenant: TenantId,
        seq: u64,
    ) -> std::result::Result<bool, dotmac_core::StorageError> {
        Ok(self
            .outbox_update(
                "requeue outbox event",
                "UPDATE outbox SET status = 'pending', attempts = 0, not_before = NULL, \
                   delivered_at = NULL \
                 WHERE tenant_id = $1 AND seq = $2 AND status = 'parked'",
                tenant,
                seq,
                MarkBinds::None,
            )
            .await?)
    }

    async fn outbox_messages(
        &self,
        tenant: TenantId,
    ) -> std::result::Result<Vec<dotmac_core::outbox::OutboxMessage>, dotmac_core::StorageError>
    {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM outbox WHERE tenant_id = $1 ORDER BY seq"
        );
        Ok(dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let rows = sqlx::query(sql)
                .bind(tenant.as_uuid())
                .fetch_all(&mut *tx)
                .await
                .during("read outbox")?;
            tx.commit().await.during("end read")?;
            rows.iter().map(d::outbox::decode_message).collect::<Result<Vec<_>>>()
        })?)
    }

    async fn outbox_counts(
        &self,
        tenant: TenantId,
    ) -> std::result::Result<dotmac_core::outbox::OutboxCounts, dotmac_core::StorageError> {
        let rows = dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, COUNT(*) FROM outbox WHERE tenant_id = $1 GROUP BY status",
            )
            .bind(tenant.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .during("count outbox")?;
            tx.commit().await.during("end read")?;
            rows
        });
        let mut counts = dotmac_core::outbox::OutboxCounts::default();
        for (status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match dotmac_core::outbox::OutboxStatus::parse(&status) {
                Some(dotmac_core::outbox::OutboxStatus::Pending) => counts.pending = n,
                Some(dotmac_core::outbox::OutboxStatus::Handled) => counts.handled = n,
                Some(dotmac_core::outbox::OutboxStatus::Parked) => counts.parked = n,
                _ => {}
            }
        }
        Ok(counts)
    }
}

/// The SQL store is its own outbox: every domain store writes its events in the change's
/// transaction, and a [`Dispatcher`](dotmac_core::outbox::Dispatcher) claims them here.
impl dotmac_core::outbox::OutboxStore for crate::SqlStore {
    fn append_outbox(
        &self,
        tenant: TenantId,
        events: &[dotmac_core::outbox::OutboxEvent],
    ) -> impl Future<Output = std::result::Result<(), dotmac_core::StorageError>> + Send {
        self.db.append_outbox(tenant, events)
    }
    fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> impl Future<
        Output = std::result::Result<
            Vec<dotmac_core::outbox::OutboxMessage>,
            dotmac_core::StorageError,
        >,
    > + Send {
        self.db.claim(worker, now, lease, limit)
    }
    fn complete(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = std::result::Result<bool, dotmac_core::StorageError>> + Send {
        self.db.complete(tenant, seq, worker, now)
    }
    fn complete_all(
        &self,
        handled: &[(TenantId, u64)],
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = std::result::Result<u64, dotmac_core::StorageError>> + Send {
        self.db.complete_all(handled, worker, now)
    }
    fn release(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        not_before: DateTime<Utc>,
        error: Option<&str>,
    ) -> impl Future<Output = std::result::Result<bool, dotmac_core::StorageError>> + Send {
        self.db.release(tenant, seq, worker, not_before, error)
    }
    fn park(
        &self,
        tenant: TenantId,
        seq: u64,
        worker: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = std::result::Result<bool, dotmac_core::StorageError>> + Send {
        self.db.park(tenant, seq, worker, error, now)
    }
    fn requeue(
        &self,
        tenant: TenantId,
        seq: u64,
    ) -> impl Future<Output = std::result::Result<bool, dotmac_core::StorageError>> + Send {
        self.db.requeue(tenant, seq)
    }
    fn outbox_messages(
        &self,
        tenant: TenantId,
    ) -> impl Future<
        Output = std::result::Result<
            Vec<dotmac_core::outbox::OutboxMessage>,
            dotmac_core::StorageError,
        >,
    > + Send {
        self.db.outbox_messages(tenant)
    }
    fn outbox_counts(
        &self,
        tenant: TenantId,
    ) -> impl Future<
        Output = std::result::Result<dotmac_core::outbox::OutboxCounts, dotmac_core::StorageError>,
    > + Send {
        self.db.outbox_counts(tenant)
    }
}
