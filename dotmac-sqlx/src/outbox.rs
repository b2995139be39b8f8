//! The transactional outbox: domain events written in the transaction of the change that
//! produced them, and a relay API that claims undelivered events and marks them delivered.

use chrono::{DateTime, Utc};
use dotmac_core::{DomainEvent, EventId, EventPayload, TenantId};
use serde::Serialize;
use sqlx::Row;
use sqlx::types::Json;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::error::{Context, Result, SqlError};

/// A domain event ready to be written to the outbox: the envelope with its payload as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The event's id (unique: writing it twice stores it once).
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

for_each_dialect! {
    shared {
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
        /// Writes events inside an open transaction; an event id already present is skipped,
        /// so retrying a transaction never duplicates an event.
        pub(crate) async fn insert(tx: &mut Tx, events: &[OutboxEvent]) -> Result<()> {
            // 5 parameters a row stays well under SQLite's 32,766 bound parameters.
            for chunk in events.chunks(1000) {
                let mut builder = sqlx::QueryBuilder::new(
                    "INSERT INTO outbox (tenant_id, event_id, event_type, occurred_at, payload) ",
                );
                builder.push_values(chunk, |mut row, e| {
                    row.push_bind(e.tenant.as_uuid())
                        .push_bind(e.id.as_uuid())
                        .push_bind(e.event_type.as_str())
                        .push_bind(e.occurred_at)
                        .push_bind(Json(&e.payload));
                });
                builder.push(" ON CONFLICT (event_id) DO NOTHING");
                builder
                    .build()
                    .execute(&mut **tx)
                    .await
                    .during("write outbox events")?;
            }
            Ok(())
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
        use uuid::Uuid;

        /// Writes events inside an open transaction with one UNNEST insert; an event id
        /// already present is skipped, so retrying a transaction never duplicates an event.
        pub(crate) async fn insert(tx: &mut Tx, events: &[OutboxEvent]) -> Result<()> {
            let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant.as_uuid()).collect();
            let ids: Vec<Uuid> = events.iter().map(|e| e.id.as_uuid()).collect();
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            let at: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
            // Sent as text and cast to `json` (the column's type, migration 0004): the server
            // only validates it. A `Json` bind would be declared `jsonb` and parsed into the
            // binary form first.
            let payloads: Vec<String> = events
                .iter()
                .map(|e| e.payload.to_string())
                .collect();
            sqlx::query(
                "INSERT INTO outbox (tenant_id, event_id, event_type, occurred_at, payload) \
                 SELECT u.tenant, u.id, u.kind, u.at, u.payload::json \
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], \
                             $5::text[]) AS u(tenant, id, kind, at, payload) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(tenants)
            .bind(ids)
            .bind(types)
            .bind(at)
            .bind(payloads)
            .execute(&mut **tx)
            .await
            .during("write outbox events")?;
            Ok(())
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
    /// # Errors
    ///
    /// [`SqlError::InvalidOption`] if an event belongs to another tenant, [`SqlError::Json`],
    /// [`SqlError::Database`].
    pub async fn append_events(&self, tenant: TenantId, events: &[OutboxEvent]) -> Result<()> {
        if let Some(other) = events.iter().find(|e| e.tenant != tenant) {
            return Err(SqlError::InvalidOption {
                option: "events",
                reason: format!(
                    "event {} belongs to tenant {}, not {tenant}",
                    other.id, other.tenant
                ),
            });
        }
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            d::outbox::insert(&mut tx, events).await?;
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
    /// [`SqlError::Database`]; [`SqlError::Core`] with `DateOutOfRange` when `now + lease` is
    /// past the last instant.
    pub async fn claim_outbox(
        &self,
        consumer: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<OutboxMessage>> {
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
    /// [`SqlError::Database`].
    pub async fn mark_delivered(
        &self,
        consumer: &str,
        seqs: &[i64],
        now: DateTime<Utc>,
    ) -> Result<u64> {
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
