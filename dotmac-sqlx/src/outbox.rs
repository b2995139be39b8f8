//! The transactional outbox: domain events written in the transaction of the change that
//! produced them, and a relay API that claims undelivered events and marks them delivered.

use std::collections::HashSet;
use std::collections::hash_map::{Entry, HashMap};

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

for_each_dialect! {
    shared {
        /// Writes `tenant`'s events inside an open transaction.
        ///
        /// Every event must be the tenant's ([`SqlError::TenantMismatch`], checked before any
        /// SQL runs) and storable ([`SqlError::InvalidInput`]). An event id the tenant already
        /// used is a replay when the stored event has the same type and payload (skipped, so a
        /// retried transaction never duplicates an event) and [`SqlError::Duplicate`] when it
        /// is a different event: an event is never silently dropped.
        pub(crate) async fn insert(tx: &mut Tx, tenant: TenantId, events: &[OutboxEvent]) -> Result<()> {
            let distinct = distinct_events(tenant, events)?;
            if distinct.is_empty() {
                return Ok(());
            }
            let inserted = insert_new(tx, tenant, &distinct).await?;
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
        #[allow(dead_code)] // the domain commits call it as they move to the outbox
        pub(crate) async fn insert_core(
            tx: &mut Tx,
            tenant: TenantId,
            events: &[dotmac_core::outbox::OutboxEvent],
        ) -> Result<()> {
            if events.is_empty() {
                return Ok(());
            }
            let stored = events.iter().map(OutboxEvent::from_core).collect::<Result<Vec<_>>>()?;
            insert(tx, tenant, &stored).await
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
        ) -> Result<HashSet<Uuid>> {
            let mut inserted = HashSet::with_capacity(events.len());
            // 5 parameters a row stays well under SQLite's 32,766 bound parameters.
            for chunk in events.chunks(1000) {
                let payloads = chunk
                    .iter()
                    .map(|e| input::document("event payload", &e.payload))
                    .collect::<Result<Vec<_>>>()?;
                let mut builder = sqlx::QueryBuilder::new(
                    "INSERT INTO outbox (tenant_id, event_id, event_type, occurred_at, payload) ",
                );
                builder.push_values(chunk.iter().zip(payloads), |mut row, (e, payload)| {
                    row.push_bind(tenant.as_uuid())
                        .push_bind(e.id.as_uuid())
                        .push_bind(e.event_type.as_str())
                        .push_bind(e.occurred_at)
                        .push_bind(Json(payload));
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
                    "UPDATE outbox SET delivered_at = $1 \
                     WHERE seq = $2 AND claimed_by = $3 AND delivered_at IS NULL",
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
        ) -> Result<HashSet<Uuid>> {
            let ids: Vec<Uuid> = events.iter().map(|e| e.id.as_uuid()).collect();
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
                "INSERT INTO outbox (tenant_id, event_id, event_type, occurred_at, payload) \
                 SELECT $1, u.id, u.kind, u.at, u.payload::json \
                 FROM UNNEST($2::uuid[], $3::text[], $4::timestamptz[], $5::text[]) \
                   AS u(id, kind, at, payload) \
                 ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id",
            )
            .bind(tenant.as_uuid())
            .bind(ids)
            .bind(types)
            .bind(at)
            .bind(payloads)
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
                "UPDATE outbox SET delivered_at = $1 \
                 WHERE seq = ANY($2) AND claimed_by = $3 AND delivered_at IS NULL",
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
            let sql = if d::IS_POSTGRES {
                "UPDATE outbox SET claimed_by = $1, claim_expires_at = $2, attempts = attempts + 1 \
                 WHERE seq IN (SELECT seq FROM outbox WHERE delivered_at IS NULL \
                   AND (claim_expires_at IS NULL OR claim_expires_at <= $3) \
                   ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING seq, tenant_id, event_id, event_type, occurred_at, payload, attempts"
            } else {
                "UPDATE outbox SET claimed_by = $1, claim_expires_at = $2, attempts = attempts + 1 \
                 WHERE seq IN (SELECT seq FROM outbox WHERE delivered_at IS NULL \
                   AND (claim_expires_at IS NULL OR claim_expires_at <= $3) \
                   ORDER BY seq LIMIT $4) \
                 RETURNING seq, tenant_id, event_id, event_type, occurred_at, payload, attempts"
            };
            let rows = sqlx::query(sql)
                .bind(consumer)
                .bind(expires)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .during("claim outbox events")?;
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
