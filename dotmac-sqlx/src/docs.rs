//! Document helpers for the domain stores: domain records are stored whole as JSON (written
//! and read by the domain's own serde, so storage never re-derives domain rules), next to the
//! columns that queries filter, order and constrain on.

use chrono::{DateTime, Utc};
use dotmac_core::TenantId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Database, dispatch, for_each_dialect};
use crate::error::{Context, Result, SqlError, is_unique_violation};
use crate::input;

/// A value bound to a query parameter; every variant encodes on both backends.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Uuid(Uuid),
    // The support and billing stores bind it; a build without both leaves it unused.
    #[cfg_attr(not(any(feature = "support", feature = "billing")), allow(dead_code))]
    OptUuid(Option<Uuid>),
    Text(String),
    #[cfg_attr(not(feature = "support"), allow(dead_code))]
    Time(DateTime<Utc>),
    Bool(bool),
    I64(i64),
    OptI64(Option<i64>),
    Date(chrono::NaiveDate),
    /// An exact amount: NUMERIC on PostgreSQL, decimal TEXT on SQLite.
    Dec(rust_decimal::Decimal),
    /// A record's JSON text, checked by [`json`] (the only way to make one): `jsonb` on
    /// PostgreSQL, `TEXT` on SQLite.
    Json(Box<RawValue>),
}

/// A record serialised once and checked for what the database cannot store (a NUL character,
/// an oversize document; see [`crate::input`]).
///
/// [`SqlError::Json`], [`SqlError::InvalidInput`].
pub(crate) fn json<T: Serialize>(what: &'static str, value: &T) -> Result<Bind> {
    input::document(what, value).map(Bind::Json)
}

pub(crate) fn from_json<T: DeserializeOwned>(
    what: &'static str,
    value: serde_json::Value,
) -> Result<T> {
    serde_json::from_value(value).map_err(|source| SqlError::Json { what, source })
}

/// A record decoded from its stored JSON text.
///
/// [`SqlError::Json`] when the text is not a `T`.
pub(crate) fn from_json_text<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| SqlError::Json { what, source })
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// This many rows.
    Rows(u64),
    /// A unique constraint refused it.
    UniqueViolation,
}

for_each_dialect! {
    pub(crate) fn bind_all<'q>(
        mut query: sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>,
        binds: &[Bind],
    ) -> sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments> {
        for bind in binds {
            query = match bind.clone() {
                Bind::Uuid(v) => query.bind(v),
                Bind::OptUuid(v) => query.bind(v),
                Bind::Text(v) => query.bind(v),
                Bind::Time(v) => query.bind(v),
                Bind::Bool(v) => query.bind(v),
                Bind::I64(v) => query.bind(v),
                Bind::OptI64(v) => query.bind(v),
                Bind::Date(v) => query.bind(v),
                Bind::Dec(v) => query.bind(dec(v)),
                Bind::Json(v) => query.bind(Json(v)),
            };
        }
        query
    }

    pub(crate) async fn execute(tx: &mut Tx, sql: &'static str, binds: &[Bind]) -> Result<Written> {
        match bind_all(sqlx::query(sql), binds).execute(&mut **tx).await {
            Ok(done) => Ok(Written::Rows(done.rows_affected())),
            Err(e) if is_unique_violation(&e) => Ok(Written::UniqueViolation),
            Err(e) => Err(e).during("write record"),
        }
    }

    /// The `body` column of every row, as JSON values.
    pub(crate) async fn bodies(tx: &mut Tx, sql: &'static str, binds: &[Bind]) -> Result<Vec<serde_json::Value>> {
        typed_bodies(tx, "record", sql, binds).await
    }

    /// The `body` column of every row, decoded as `T` straight from its JSON text (no
    /// intermediate `serde_json::Value`, which would parse each document twice).
    pub(crate) async fn typed_bodies<T: DeserializeOwned>(
        tx: &mut Tx,
        what: &'static str,
        sql: &'static str,
        binds: &[Bind],
    ) -> Result<Vec<T>> {
        let rows = bind_all(sqlx::query(sql), binds)
            .fetch_all(&mut **tx)
            .await
            .during("read records")?;
        rows.iter()
            .map(|row| {
                let body = row
                    .try_get::<Json<Box<RawValue>>, _>("body")
                    .during("read record body")?;
                from_json_text(what, body.0.get())
            })
            .collect()
    }

    /// One row's integer column, if the row exists.
    pub(crate) async fn scalar_i64(tx: &mut Tx, sql: &'static str, binds: &[Bind]) -> Result<Option<i64>> {
        bind_all(sqlx::query(sql), binds)
            .fetch_optional(&mut **tx)
            .await
            .during("read record")?
            .map(|row| row.try_get::<i64, _>(0).during("read record"))
            .transpose()
    }
}

impl Database {
    /// Runs one write in a tenant transaction.
    pub(crate) async fn write(
        &self,
        tenant: TenantId,
        sql: &'static str,
        binds: &[Bind],
    ) -> Result<Written> {
        dispatch!(self, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await?;
            let written = d::docs::execute(&mut tx, sql, binds).await?;
            if written == Written::UniqueViolation {
                tx.rollback().await.during("roll back")?;
            } else {
                tx.commit().await.during("commit")?;
            }
            Ok(written)
        })
    }

    /// Reads the `body` column of the rows a query selects, deserialised.
    pub(crate) async fn read_all<T: DeserializeOwned>(
        &self,
        tenant: TenantId,
        what: &'static str,
        sql: &'static str,
        binds: &[Bind],
    ) -> Result<Vec<T>> {
        Ok(dispatch!(self, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await?;
            let records = d::docs::typed_bodies(&mut tx, what, sql, binds).await?;
            tx.commit().await.during("end read")?;
            records
        }))
    }

    /// Reads at most one row's `body`.
    pub(crate) async fn read_one<T: DeserializeOwned>(
        &self,
        tenant: TenantId,
        what: &'static str,
        sql: &'static str,
        binds: &[Bind],
    ) -> Result<Option<T>> {
        Ok(self
            .read_all(tenant, what, sql, binds)
            .await?
            .into_iter()
            .next())
    }
}
