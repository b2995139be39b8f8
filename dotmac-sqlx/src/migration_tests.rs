//! Migrations that rewrite stored rows, run against rows written before them: what they
//! derive must be what the code writes from then on.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use chrono::{Datelike, NaiveDate};
use dotmac_billing::{LineKind, PendingCharge};
use dotmac_core::{Currency, CustomerId, Money, PendingChargeId, Period, SubscriptionId};
use rust_decimal::Decimal;
use uuid::Uuid;

/// A usage charge of `subscription` for March 2026, as stored before migration 0017.
fn march_usage(subscription: Option<SubscriptionId>) -> PendingCharge {
    let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
    PendingCharge {
        id: PendingChargeId::new(),
        customer: CustomerId::new(),
        subscription,
        kind: LineKind::Usage,
        text: None,
        period: Some(Period::new(day(3, 1), day(4, 1)).unwrap()),
        quantity: Decimal::ONE,
        unit_price: Money::from_minor(450, Currency::USD),
        price: None,
        created_on: day(4, 1),
    }
}

/// The `period_day` the code writes for `charge` (what the migration must derive).
fn written_day(charge: &PendingCharge) -> Option<i64> {
    let day = crate::keyed::period_day(charge);
    let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    if charge.period.is_some() {
        assert_eq!(day, Some(i64::from(march.num_days_from_ce())));
    }
    day
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_0017_derives_the_subscription_and_period_day_of_stored_charges() {
    use sqlx::sqlite::SqlitePoolOptions;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let mut migrations = crate::db::SQLITE_MIGRATIONS.iter();
    for migration in migrations.by_ref().take_while(|m| m.version < 17) {
        sqlx::raw_sql(migration.sql.clone())
            .execute(&pool)
            .await
            .unwrap();
    }
    let subscription = SubscriptionId::new();
    let charges = [march_usage(Some(subscription)), march_usage(None)];
    for charge in &charges {
        sqlx::query(
            "INSERT INTO billing_pending_charges (tenant_id, charge_id, customer_id, consumed, body) \
             VALUES ($1, $2, $3, 1, $4)",
        )
        .bind(Uuid::nil())
        .bind(charge.id.as_uuid())
        .bind(charge.customer.as_uuid())
        .bind(serde_json::to_string(charge).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    }
    let m17 = crate::db::SQLITE_MIGRATIONS
        .iter()
        .find(|m| m.version == 17)
        .unwrap();
    sqlx::raw_sql(m17.sql.clone()).execute(&pool).await.unwrap();
    for charge in &charges {
        let (sub, day): (Option<Uuid>, Option<i64>) = sqlx::query_as(
            "SELECT subscription_id, period_day FROM billing_pending_charges WHERE charge_id = $1",
        )
        .bind(charge.id.as_uuid())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(sub, charge.subscription.map(|s| s.as_uuid()));
        assert_eq!(day, written_day(charge));
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_0017_derives_the_subscription_and_period_day_and_0018_keeps_the_bodies_of_stored_charges()
 {
    use sqlx::Connection;
    let url = std::env::var("DATABASE_URL")
        .expect("the PostgreSQL tests need DATABASE_URL; they never skip");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    // The table as migration 0003 made it, as a temporary table that the migration's
    // unqualified names resolve to first; rolled back at the end.
    sqlx::raw_sql(
        "CREATE TEMP TABLE billing_pending_charges (\
           seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL, \
           charge_id uuid NOT NULL, customer_id uuid NOT NULL, consumed boolean NOT NULL, \
           body jsonb NOT NULL, UNIQUE (tenant_id, charge_id)) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let subscription = SubscriptionId::new();
    let charges = [march_usage(Some(subscription)), march_usage(None)];
    for charge in &charges {
        sqlx::query(
            "INSERT INTO billing_pending_charges (tenant_id, charge_id, customer_id, consumed, body) \
             VALUES ($1, $2, $3, true, $4::jsonb)",
        )
        .bind(Uuid::nil())
        .bind(charge.id.as_uuid())
        .bind(charge.customer.as_uuid())
        .bind(serde_json::to_string(charge).unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let m17 = crate::db::POSTGRES_MIGRATIONS
        .iter()
        .find(|m| m.version == 17)
        .unwrap();
    sqlx::raw_sql(m17.sql.clone())
        .execute(&mut *tx)
        .await
        .unwrap();
    for charge in &charges {
        let (sub, day): (Option<Uuid>, Option<i64>) = sqlx::query_as(
            "SELECT subscription_id, period_day FROM pg_temp.billing_pending_charges \
             WHERE charge_id = $1",
        )
        .bind(charge.id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(sub, charge.subscription.map(|s| s.as_uuid()));
        assert_eq!(day, written_day(charge));
    }
    // 0018 turns the bodies into `json` text: every stored charge reads back as it was.
    let m18 = crate::db::POSTGRES_MIGRATIONS
        .iter()
        .find(|m| m.version == 18)
        .unwrap();
    sqlx::raw_sql(m18.sql.clone())
        .execute(&mut *tx)
        .await
        .unwrap();
    let kind: String = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'pg_temp.billing_pending_charges'::regclass AND attname = 'body'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(kind, "json");
    for charge in &charges {
        let body: sqlx::types::Json<PendingCharge> = sqlx::query_scalar(
            "SELECT body FROM pg_temp.billing_pending_charges WHERE charge_id = $1",
        )
        .bind(charge.id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(&body.0, charge);
    }
    tx.rollback().await.unwrap();
}
