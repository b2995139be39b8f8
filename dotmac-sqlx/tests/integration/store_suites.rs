//! The domain crates' store behaviour suites (billing, usage, payments, dunning) on SQLite
//! (memory and file) and PostgreSQL (when `DATABASE_URL` is set).

use crate::common;

use dotmac_billing::testkit::core_outbox;
use dotmac_core::TenantId;
use dotmac_sqlx::SqlStore;

/// A tenant's outbox as the collections suites read it.
fn ledger_outbox(
    store: &SqlStore,
    tenant: TenantId,
) -> dotmac_collections::testkit::OutboxRead<'_> {
    Box::pin(async move {
        store
            .database()
            .outbox_events(tenant)
            .await
            .map(|messages| {
                messages
                    .into_iter()
                    .map(|m| (m.event.id, m.event.event_type))
                    .collect()
            })
            .map_err(|e| e.to_string())
    })
}

#[tokio::test]
async fn billing_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result =
            dotmac_billing::testkit::run_store_suite(|| SqlStore::new(db.clone()), core_outbox)
                .await;
        assert_eq!(result, Ok(()), "billing store suite on {name}");
    }
}

#[tokio::test]
async fn usage_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result =
            dotmac_usage::testkit::run_usage_store_suite(|| SqlStore::new(db.clone())).await;
        assert_eq!(result, Ok(()), "usage store suite on {name}");
    }
}

#[tokio::test]
async fn payment_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result = dotmac_collections::testkit::run_payment_store_suite(
            || SqlStore::new(db.clone()),
            ledger_outbox,
        )
        .await;
        assert_eq!(result, Ok(()), "payment store suite on {name}");
    }
}

#[tokio::test]
async fn dunning_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result = dotmac_collections::testkit::run_dunning_store_suite(
            || SqlStore::new(db.clone()),
            ledger_outbox,
        )
        .await;
        assert_eq!(result, Ok(()), "dunning store suite on {name}");
    }
}

/// The outbox suite claims across tenants, so each backend gets a database of its own: a fresh
/// SQLite memory database and a PostgreSQL schema no other test writes to.
#[tokio::test]
async fn outbox_store_suite_passes_on_every_backend() {
    let mut backends = vec![("sqlite memory", common::sqlite_memory().await)];
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let schema = format!(
            "dotmac_test_outbox_suite_{:08x}",
            common::migrations_fingerprint()
        );
        let options = dotmac_sqlx::DatabaseOptions::new(&url).schema(schema);
        let db = dotmac_sqlx::Database::connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unusable: {e}"));
        backends.push(("postgres", db));
    }
    for (name, db) in backends {
        let store = SqlStore::new(db);
        let result = dotmac_core::outbox::testkit::run_outbox_store_suite(&store).await;
        assert_eq!(result, Ok(()), "outbox store suite on {name}");
    }
}

#[tokio::test]
async fn customers_store_suite_passes_on_every_backend() {
    for (_name, db) in common::backends().await {
        dotmac_customers::testkit::run_store_suite(&SqlStore::new(db.clone())).await;
    }
}

#[tokio::test]
async fn customers_fair_usage_suite_passes_on_every_backend() {
    for (_name, db) in common::backends().await {
        let store = SqlStore::new(db.clone());
        dotmac_customers::testkit::run_fair_usage_suite(store.clone(), &store).await;
    }
}

#[tokio::test]
async fn tenancy_store_suite_passes_on_every_backend() {
    for (name, db) in common::backends().await {
        let result = dotmac_tenancy::testkit::run_tenancy_store_suite(
            || SqlStore::new(db.clone()),
            ledger_outbox,
        )
        .await;
        assert_eq!(result, Ok(()), "tenancy store suite on {name}");
    }
}

/// Quota checks hold across tasks on a multi-threaded runtime, each on its own connection (a
/// SQLite file with several connections, PostgreSQL): at limit − 1, of eight concurrent
/// admissions of distinct customers exactly one succeeds, and of eight concurrent calls for the
/// last call of the hour exactly one is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_admissions_race_to_exactly_one_winner_on_every_backend() {
    use dotmac_core::{CustomerId, FixedClock};
    use dotmac_tenancy::{
        Actor, Limit, NewTenant, PlanCatalog, PlanCode, Quota, TenancyError, TenancyService,
        TenancySettings, TenantPlan, TenantStatus,
    };
    let mut backends = vec![("sqlite-file", common::sqlite_file().await)];
    if let Some(pg) = common::postgres().await {
        backends.push(("postgres", pg));
    }
    let plan = TenantPlan::builder(PlanCode::new("race").unwrap(), "Race")
        .quota(Quota::Customers, Limit::AtMost(50))
        .quota(Quota::AdminUsers, Limit::AtMost(1))
        .quota(Quota::ApiCallsPerHour, Limit::AtMost(100))
        .build()
        .unwrap();
    let mut catalog = PlanCatalog::platform_tiers().unwrap();
    catalog.insert(plan.clone());
    for (name, db) in backends {
        let tenancy = TenancyService::new(
            SqlStore::new(db.clone()),
            FixedClock::new(common::at(2, 9)),
            TenancySettings::new(catalog.clone()),
        );
        let tenant = TenantId::new();
        let ops = Actor::platform("race");
        tenancy
            .request_tenant(
                tenant,
                NewTenant::new("Race ISP").plan(plan.code().clone()),
                ops.clone(),
            )
            .await
            .unwrap();
        for to in [TenantStatus::Provisioning, TenantStatus::Active] {
            tenancy
                .transition(tenant, to, ops.clone(), None)
                .await
                .unwrap();
        }
        let first: Vec<CustomerId> = (0..49).map(|_| CustomerId::new()).collect();
        tenancy.admit_customers(tenant, &first).await.unwrap();
        tenancy.admit_api_calls(tenant, 99).await.unwrap();

        let customers: Vec<_> = (0..8)
            .map(|_| {
                let tenancy = tenancy.clone();
                tokio::spawn(
                    async move { tenancy.admit_customers(tenant, &[CustomerId::new()]).await },
                )
            })
            .collect();
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let tenancy = tenancy.clone();
                tokio::spawn(async move { tenancy.admit_api_calls(tenant, 1).await })
            })
            .collect();
        let mut admitted = 0;
        for task in customers {
            match task.await.unwrap() {
                Ok(_) => admitted += 1,
                Err(TenancyError::QuotaExceeded {
                    quota: Quota::Customers,
                    limit: 50,
                    used: 50,
                    requested: 1,
                    ..
                }) => {}
                Err(other) => panic!("{name}: an admission failed otherwise: {other}"),
            }
        }
        let mut counted = 0;
        for task in calls {
            match task.await.unwrap() {
                Ok(_) => counted += 1,
                Err(TenancyError::QuotaExceeded {
                    quota: Quota::ApiCallsPerHour,
                    limit: 100,
                    ..
                }) => {}
                Err(other) => panic!("{name}: a call failed otherwise: {other}"),
            }
        }
        assert_eq!((admitted, counted), (1, 1), "{name}");
        let report = tenancy.quota_use(tenant).await.unwrap();
        assert_eq!(report.customers.used, 50, "{name}");
        assert_eq!(report.api_calls.used, 100, "{name}");
    }
}
