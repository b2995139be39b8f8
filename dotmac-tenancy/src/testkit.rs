//! The tenancy store behaviour suite: one set of checks, run against every
//! [`TenancyStore`] (the in-memory store here, SQLite and PostgreSQL in `dotmac-sqlx`), so
//! that stores cannot drift apart. The checks drive the [`TenancyService`] over the store, as
//! an application does, and read the store back.
//!
//! ```
//! # futures_block_on(async {
//! use dotmac_tenancy::InMemoryTenancyStore;
//! use dotmac_tenancy::testkit::{memory_outbox, run_tenancy_store_suite};
//! run_tenancy_store_suite(InMemoryTenancyStore::new, memory_outbox).await
//! # }).unwrap();
//! # fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     use std::task::{Context, Poll, Waker};
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = Context::from_waker(Waker::noop());
//! #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```
//!
//! Every check uses fresh tenant ids, so the suite may share one database with other tests.
//! What it holds every store to:
//!
//! * **Lifecycle.** Each of the 25 (from, to) pairs of statuses: the five steps of the
//!   lifecycle are saved with their history entry and their event; every other pair is
//!   refused with [`TenancyError::InvalidTransition`] naming both, and nothing changes. A save
//!   from a stale read is [`TenancyError::Conflict`].
//! * **Archived is read-only.** Every write for an archived tenant is refused with
//!   [`TenancyError::TenantArchived`] and changes nothing; reads and platform measurements go
//!   on.
//! * **Quotas.** Customers, admin users and API calls per hour at their limits: the exact
//!   error, nothing counted; idempotent and all-or-nothing admissions; seats freed by
//!   releases and disabled users; and two concurrent admissions at limit − 1, of which
//!   exactly one succeeds.
//! * **Settings fallback.** Platform → plan → tenant → customer, value and source.
//! * **Roles.** Custom roles stored and used by [`authorize`](crate::authorize); built-in
//!   names refused; unknown subjects denied.
//! * **Isolation.** Nothing of one tenant is seen or counted by another.

// A test suite: fixed, small figures, where plain operators are the clearest.
#![allow(clippy::arithmetic_side_effects)]

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use dotmac_core::outbox::OutboxStore;
use dotmac_core::{
    Currency, CustomerId, EventId, ManualClock, RoundingMode, StorageErrorKind, TenantId,
};

use crate::access::{Decision, Denial, NewUser, Role, TenantUser, UserStatus};
use crate::error::TenancyError;
use crate::memory::InMemoryTenancyStore;
use crate::plan::{Limit, PlanCatalog, TenantPlan};
use crate::service::{TenancyService, TenancySettings};
use crate::settings::{
    CustomerSettings, Locale, PaymentTerms, SettingDocument, Settings, SettingsLayer,
};
use crate::store::TenancyStore;
use crate::tenant::NewTenant;
use crate::usage::{PlatformMetric, UsageRecord};
use crate::vocab::{
    Actor, Feature, Operation, Permission, PlanCode, Quota, RoleName, SettingKey, SettingSource,
    TenantStatus, UsageRecordId, UserId,
};

/// A tenant's outbox as `(event id, event type)`, in outbox order: what the suite reads back.
pub type OutboxRead<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<(EventId, String)>, String>> + Send + 'a>>;

/// The outbox reader of an [`InMemoryTenancyStore`].
pub fn memory_outbox(store: &InMemoryTenancyStore, tenant: TenantId) -> OutboxRead<'_> {
    Box::pin(async move {
        store
            .outbox()
            .outbox_messages(tenant)
            .await
            .map(|messages| messages.into_iter().map(|m| (m.id, m.event_type)).collect())
            .map_err(|e| e.to_string())
    })
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn err(e: TenancyError) -> String {
    e.to_string()
}

/// Runs every check against stores made by `make` (one fresh store per check; every check uses
/// fresh tenants), reading each store's outbox with `outbox`.
///
/// # Errors
///
/// The first check that fails, by name, with what it found.
pub async fn run_tenancy_store_suite<S, F, R>(make: F, outbox: R) -> Result<(), String>
where
    S: TenancyStore,
    F: Fn() -> S,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    macro_rules! run {
        ($check:ident) => {
            $check(make(), &outbox)
                .await
                .map_err(|e| format!("{}: {e}", stringify!($check)))?;
        };
    }
    run!(every_lifecycle_transition_is_checked_recorded_and_published);
    run!(a_stale_save_is_a_conflict_and_a_tenant_id_is_taken_once);
    run!(an_archived_tenant_is_read_only);
    run!(the_status_gates_what_a_tenant_may_do);
    run!(the_customer_quota_is_exact_idempotent_and_all_or_nothing);
    run!(concurrent_admissions_at_limit_minus_one_admit_exactly_one);
    run!(the_admin_user_quota_counts_active_users);
    run!(the_api_call_quota_is_an_hourly_window);
    run!(settings_fall_back_from_customer_to_platform);
    run!(roles_are_stored_and_authorize_denies_by_default);
    run!(tenants_are_isolated);
    run!(platform_usage_is_counted_once_per_period);
    run!(every_tenant_is_listed_in_id_order_a_page_at_a_time);
    run!(the_last_owner_is_never_demoted_or_disabled);
    Ok(())
}

/// The platform operator's listing: every tenant, in id order, paged by the last id, each at
/// its stored version and status. The store may hold other tests' tenants: only the order and
/// this check's tenants are asserted.
async fn every_tenant_is_listed_in_id_order_a_page_at_a_time<S, R>(
    store: S,
    _outbox: &R,
) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, _) = service(store)?;
    let mut mine = BTreeSet::new();
    for _ in 0..3 {
        mine.insert(active(&service).await?);
    }
    let requested = tenant_at(&service, None, &[]).await?;
    mine.insert(requested);
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = service.list_tenants(after, 2).await.map_err(err)?;
        ensure!(page.len() <= 2, "a page of 2 held {}", page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.id());
        listed.extend(page);
    }
    let ids: Vec<TenantId> = listed.iter().map(|t| t.id()).collect();
    ensure!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "the listing is not in id order, or repeats a tenant"
    );
    for id in &mine {
        ensure!(ids.contains(id), "tenant {id} is not listed");
    }
    let stored = listed
        .iter()
        .find(|t| t.id() == requested)
        .ok_or("the requested tenant is missing")?;
    ensure!(
        stored.status() == TenantStatus::Requested && stored.version() == 1,
        "a listed tenant is not as stored: {:?} v{}",
        stored.status(),
        stored.version()
    );
    let active_one = listed
        .iter()
        .find(|t| mine.contains(&t.id()) && t.id() != requested)
        .ok_or("an active tenant is missing")?;
    ensure!(
        active_one.status() == TenantStatus::Active && active_one.version() == 3,
        "an active tenant is listed at {:?} v{}",
        active_one.status(),
        active_one.version()
    );
    // Nothing after the last id.
    let past = service
        .list_tenants(ids.last().copied(), 10)
        .await
        .map_err(err)?;
    ensure!(
        past.is_empty(),
        "tenants after the last one: {}",
        past.len()
    );
    Ok(())
}

/// The last active owner keeps the owner role and stays enabled: demoting or disabling them is
/// `LastOwner` with nothing changed and no event; with a second owner either may go, and two
/// concurrent demotions of the last two owners leave exactly one.
async fn the_last_owner_is_never_demoted_or_disabled<S, R>(
    store: S,
    outbox: &R,
) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    use futures_util::future::join;
    let (service, _) = service(store)?;
    let tenant = active(&service).await?;
    let (ana, _, _) = service
        .add_user(
            tenant,
            NewUser::new("ana@owners", "Ana").role(RoleName::OWNER),
            ops(),
        )
        .await
        .map_err(err)?;
    let (bo, _, _) = service
        .add_user(
            tenant,
            NewUser::new("bo@owners", "Bo").role(RoleName::ADMIN),
            ops(),
        )
        .await
        .map_err(err)?;
    let events_before = events_of(service.store(), outbox, tenant).await?;
    let last = TenancyError::LastOwner {
        tenant,
        user: ana.id(),
    };
    let demoted = service
        .set_user_roles(tenant, ana.id(), BTreeSet::from([RoleName::ADMIN]), ops())
        .await;
    ensure!(
        demoted.as_ref().err() == Some(&last),
        "the last owner was demoted: {:?}",
        demoted.map(|(u, _, _)| u.roles().clone())
    );
    let disabled = service
        .set_user_status(tenant, ana.id(), UserStatus::Disabled, ops())
        .await;
    ensure!(
        disabled.as_ref().err() == Some(&last),
        "the last owner was disabled: {:?}",
        disabled.map(|(u, _, _)| u.status())
    );
    let stored = service
        .store()
        .tenant_user(tenant, ana.id())
        .await
        .map_err(err)?;
    ensure!(
        stored.as_ref() == Some(&ana),
        "a refused change of the last owner changed them: {stored:?}"
    );
    ensure!(
        service
            .quota_use(tenant)
            .await
            .map_err(err)?
            .admin_users
            .used
            == 2,
        "a refused disable freed a seat"
    );
    ensure!(
        events_of(service.store(), outbox, tenant).await? == events_before,
        "a refused change published an event"
    );
    // A change that keeps the owner role is allowed, and so is demoting a non-owner.
    service
        .set_user_roles(
            tenant,
            ana.id(),
            BTreeSet::from([RoleName::OWNER, RoleName::BILLING]),
            ops(),
        )
        .await
        .map_err(err)?;
    service
        .set_user_roles(tenant, bo.id(), BTreeSet::new(), ops())
        .await
        .map_err(err)?;
    // With Bo an owner too, one of the two may step down, concurrently: exactly one does.
    service
        .set_user_roles(tenant, bo.id(), BTreeSet::from([RoleName::OWNER]), ops())
        .await
        .map_err(err)?;
    let (a, b) = join(
        service.set_user_roles(tenant, ana.id(), BTreeSet::from([RoleName::ADMIN]), ops()),
        service.set_user_status(tenant, bo.id(), UserStatus::Disabled, ops()),
    )
    .await;
    ensure!(
        a.is_ok() != b.is_ok(),
        "two concurrent demotions of the last two owners: {:?} and {:?}",
        a.map(|_| ()),
        b.map(|_| ())
    );
    let refused = a.err().or(b.err());
    ensure!(
        matches!(refused, Some(TenancyError::LastOwner { .. })),
        "the losing demotion is not LastOwner: {refused:?}"
    );
    let owners = service
        .store()
        .tenant_users(tenant)
        .await
        .map_err(err)?
        .into_iter()
        .filter(TenantUser::is_active_owner)
        .count();
    ensure!(owners == 1, "{owners} active owners left, not 1");
    Ok(())
}

/// The service every check drives.
type Suite<S> = TenancyService<S, Arc<ManualClock>>;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

fn ops() -> Actor {
    Actor::platform("ops")
}

/// A plan for the checks: `customers` customers, `users` admin users, `calls` calls an hour,
/// entitled to billing, bringing payment terms of 30 days and the locale `en-GB`.
fn suite_plan(customers: u64, users: u64, calls: u64) -> Result<TenantPlan, String> {
    let layer = SettingsLayer::new()
        .with_payment_terms(PaymentTerms::net(30).map_err(err)?)
        .with_locale(Locale::new("en-GB").map_err(|e| e.to_string())?);
    TenantPlan::builder(
        PlanCode::new("suite").map_err(|e| e.to_string())?,
        "Suite plan",
    )
    .quota(Quota::Customers, Limit::AtMost(customers))
    .quota(Quota::AdminUsers, Limit::AtMost(users))
    .quota(Quota::ApiCallsPerHour, Limit::AtMost(calls))
    .entitle(Feature::BILLING)
    .settings(layer)
    .build()
    .map_err(err)
}

/// A service over `store` with the platform tiers, the suite plan (see [`suite_plan`]: 3
/// customers, 2 users, 10 calls an hour) and platform defaults in EUR, on a manual clock.
fn service<S: TenancyStore>(store: S) -> Result<(Suite<S>, Arc<ManualClock>), String> {
    let clock = Arc::new(ManualClock::new(start()));
    let mut catalog = PlanCatalog::platform_tiers().map_err(err)?;
    catalog.insert(suite_plan(3, 2, 10)?);
    let mut platform = Settings::platform_defaults();
    platform.currency = Currency::EUR;
    let settings = TenancySettings::new(catalog).with_platform_defaults(platform);
    Ok((
        TenancyService::new(store, Arc::clone(&clock), settings),
        clock,
    ))
}

fn suite_code() -> Result<PlanCode, String> {
    PlanCode::new("suite").map_err(|e| e.to_string())
}

/// A fresh tenant on `plan`, moved through `path`.
async fn tenant_at<S: TenancyStore>(
    service: &Suite<S>,
    plan: Option<PlanCode>,
    path: &[TenantStatus],
) -> Result<TenantId, String> {
    let tenant = TenantId::new();
    let mut new = NewTenant::new("Suite ISP");
    if let Some(code) = plan {
        new = new.plan(code);
    }
    service
        .request_tenant(tenant, new, ops())
        .await
        .map_err(err)?;
    for to in path {
        service
            .transition(tenant, *to, ops(), None)
            .await
            .map_err(err)?;
    }
    Ok(tenant)
}

/// The statuses to walk through to reach `status` from requested.
fn path_to(status: TenantStatus) -> &'static [TenantStatus] {
    use TenantStatus::{Active, Archived, Provisioning, Suspended};
    match status {
        Provisioning => &[Provisioning],
        Active => &[Provisioning, Active],
        Suspended => &[Provisioning, Active, Suspended],
        Archived => &[Provisioning, Active, Suspended, Archived],
        _ => &[],
    }
}

async fn active<S: TenancyStore>(service: &Suite<S>) -> Result<TenantId, String> {
    tenant_at(service, Some(suite_code()?), path_to(TenantStatus::Active)).await
}

async fn events_of<S, R>(store: &S, outbox: &R, tenant: TenantId) -> Result<Vec<String>, String>
where
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    Ok(outbox(store, tenant)
        .await?
        .into_iter()
        .map(|(_, kind)| kind)
        .collect())
}

async fn every_lifecycle_transition_is_checked_recorded_and_published<S, R>(
    store: S,
    outbox: &R,
) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, clock) = service(store)?;
    let mut allowed = 0;
    for from in TenantStatus::ALL {
        for to in TenantStatus::ALL {
            let tenant = tenant_at(&service, None, path_to(from)).await?;
            let before = service.tenant(tenant).await.map_err(err)?;
            let events_before = events_of(service.store(), outbox, tenant).await?;
            clock.advance(Duration::minutes(1));
            let result = service
                .transition(tenant, to, Actor::platform("lifecycle"), Some("suite"))
                .await;
            let after = service.tenant(tenant).await.map_err(err)?;
            let events_after = events_of(service.store(), outbox, tenant).await?;
            if from.can_become(to) {
                allowed += 1;
                let (saved, events) = result.map_err(|e| format!("{from} → {to}: {e}"))?;
                ensure!(
                    saved == after,
                    "{from} → {to}: the returned tenant is not the stored one"
                );
                ensure!(
                    after.status() == to,
                    "{from} → {to}: stored status {}",
                    after.status()
                );
                let last = after.history().last();
                ensure!(
                    last.is_some_and(|c| c.from == Some(from)
                        && c.to == to
                        && c.actor == Actor::platform("lifecycle")
                        && c.at == clock_now(&clock)
                        && c.reason.as_deref() == Some("suite")),
                    "{from} → {to}: history ends with {last:?}"
                );
                ensure!(
                    after.history().len() == before.history().len() + 1,
                    "{from} → {to}: history grew by {}",
                    after.history().len() as i64 - before.history().len() as i64
                );
                ensure!(
                    after.version() == before.version() + 1,
                    "{from} → {to}: version {} after {}",
                    after.version(),
                    before.version()
                );
                let expected = match (from, to) {
                    (TenantStatus::Requested, _) => "tenancy.tenant_provisioning",
                    (TenantStatus::Provisioning, _) => "tenancy.tenant_activated",
                    (TenantStatus::Suspended, TenantStatus::Active) => "tenancy.tenant_resumed",
                    (_, TenantStatus::Suspended) => "tenancy.tenant_suspended",
                    _ => "tenancy.tenant_archived",
                };
                ensure!(
                    events.len() == 1 && events_after.len() == events_before.len() + 1,
                    "{from} → {to}: {} events returned, outbox grew by {}",
                    events.len(),
                    events_after.len() - events_before.len()
                );
                ensure!(
                    events_after.last().map(String::as_str) == Some(expected),
                    "{from} → {to}: the outbox's last event is {:?}, not {expected}",
                    events_after.last()
                );
            } else {
                ensure!(
                    result.as_ref().err()
                        == Some(&TenancyError::InvalidTransition { tenant, from, to }),
                    "{from} → {to} gave {result:?}"
                );
                ensure!(
                    after == before,
                    "{from} → {to} was refused but changed the tenant"
                );
                ensure!(
                    events_after == events_before,
                    "{from} → {to} was refused but wrote events"
                );
            }
        }
    }
    ensure!(allowed == 5, "{allowed} transitions allowed, not 5");
    // A tenant's first event is its request; the history starts with it.
    let tenant = tenant_at(&service, None, &[]).await?;
    let events = events_of(service.store(), outbox, tenant).await?;
    ensure!(
        events == ["tenancy.tenant_requested"],
        "a new tenant's outbox is {events:?}"
    );
    let requested = service.tenant(tenant).await.map_err(err)?;
    ensure!(
        requested.history().len() == 1 && requested.history()[0].from.is_none(),
        "a new tenant's history is {:?}",
        requested.history()
    );
    Ok(())
}

fn clock_now(clock: &ManualClock) -> DateTime<Utc> {
    dotmac_core::Clock::now(clock)
}

async fn a_stale_save_is_a_conflict_and_a_tenant_id_is_taken_once<S, R>(
    store: S,
    _outbox: &R,
) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, _) = service(store)?;
    let tenant = tenant_at(&service, None, &[]).await?;
    let mut first = service.tenant(tenant).await.map_err(err)?;
    let mut second = first.clone();
    first.rename("First").map_err(err)?;
    second.rename("Second").map_err(err)?;
    let version = service
        .store()
        .save_tenant(&first, &[])
        .await
        .map_err(err)?;
    ensure!(version == 2, "the first save is version {version}");
    let stale = service.store().save_tenant(&second, &[]).await;
    ensure!(
        matches!(
            stale,
            Err(TenancyError::Conflict {
                what: "tenant",
                expected: 1,
                ..
            })
        ),
        "a stale save gave {stale:?}"
    );
    let stored = service.tenant(tenant).await.map_err(err)?;
    ensure!(
        stored.name() == "First" && stored.version() == 2,
        "after a stale save: {} at {}",
        stored.name(),
        stored.version()
    );
    let again = service
        .request_tenant(tenant, NewTenant::new("Twice"), ops())
        .await;
    ensure!(
        matches!(
            again,
            Err(TenancyError::AlreadyExists { what: "tenant", .. })
        ),
        "a second request for one id gave {again:?}"
    );
    let unknown = TenantId::new();
    let missing = service
        .transition(unknown, TenantStatus::Provisioning, ops(), None)
        .await;
    ensure!(
        missing.as_ref().err() == Some(&TenancyError::UnknownTenant(unknown)),
        "a transition of an unknown tenant gave {missing:?}"
    );
    let unknown_plan = service
        .request_tenant(
            TenantId::new(),
            NewTenant::new("No plan").plan(PlanCode::new("gold").map_err(|e| e.to_string())?),
            ops(),
        )
        .await;
    ensure!(
        matches!(unknown_plan, Err(TenancyError::UnknownPlan(_))),
        "an unknown plan gave {unknown_plan:?}"
    );
    Ok(())
}

/// Everything a check can read of a tenant, to compare before and after a refused write.
async fn snapshot<S: TenancyStore>(
    service: &Suite<S>,
    tenant: TenantId,
    customer: CustomerId,
) -> Result<String, String> {
    let record = service.tenant(tenant).await.map_err(err)?;
    let settings = service.settings_of(tenant).await.map_err(err)?;
    let theirs = service
        .customer_settings_of(tenant, customer)
        .await
        .map_err(err)?;
    let users = service.store().tenant_users(tenant).await.map_err(err)?;
    let roles = service.store().tenant_roles(tenant).await.map_err(err)?;
    let quotas = service.quota_use(tenant).await.map_err(err)?;
    Ok(format!(
        "{record:?}\n{settings:?}\n{theirs:?}\n{users:?}\n{roles:?}\n{quotas:?}"
    ))
}

async fn an_archived_tenant_is_read_only<S, R>(store: S, outbox: &R) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, clock) = service(store)?;
    let tenant = active(&service).await?;
    let customer = CustomerId::new();
    service
        .admit_customers(tenant, &[customer])
        .await
        .map_err(err)?;
    let (user, _, _) = service
        .add_user(
            tenant,
            NewUser::new("owner@suite", "Owner").role(RoleName::OWNER),
            ops(),
        )
        .await
        .map_err(err)?;
    service
        .update_settings(
            tenant,
            &SettingsLayer::new().with_currency(Currency::GBP),
            ops(),
        )
        .await
        .map_err(err)?;
    service
        .transition(tenant, TenantStatus::Suspended, ops(), None)
        .await
        .map_err(err)?;
    service
        .transition(
            tenant,
            TenantStatus::Archived,
            ops(),
            Some("contract ended"),
        )
        .await
        .map_err(err)?;
    clock.advance(Duration::minutes(1));
    let before = snapshot(&service, tenant, customer).await?;
    let events_before = events_of(service.store(), outbox, tenant).await?;

    let archived = TenancyError::TenantArchived { tenant };
    macro_rules! refused {
        ($what:literal, $call:expr) => {
            let result = $call.await;
            ensure!(
                result.as_ref().err() == Some(&archived),
                "{} for an archived tenant gave {:?}",
                $what,
                result.map(|_| ())
            );
        };
    }
    refused!(
        "update_settings",
        service.update_settings(tenant, &SettingsLayer::new(), ops())
    );
    refused!(
        "update_customer_settings",
        service.update_customer_settings(tenant, customer, &CustomerSettings::new(), ops())
    );
    refused!(
        "add_user",
        service.add_user(tenant, NewUser::new("late@suite", "Late"), ops())
    );
    refused!(
        "set_user_status",
        service.set_user_status(tenant, user.id(), UserStatus::Disabled, ops())
    );
    refused!(
        "set_user_roles",
        service.set_user_roles(tenant, user.id(), BTreeSet::new(), ops())
    );
    let role = Role::custom(
        RoleName::new("auditor").map_err(|e| e.to_string())?,
        [Permission::ReportsRead],
        "",
    )
    .map_err(err)?;
    refused!("save_role", service.save_role(tenant, &role, ops()));
    refused!(
        "admit_customers",
        service.admit_customers(tenant, &[CustomerId::new()])
    );
    refused!(
        "release_customers",
        service.release_customers(tenant, &[customer])
    );
    refused!("admit_api_calls", service.admit_api_calls(tenant, 1));
    refused!(
        "assign_plan",
        service.assign_plan(tenant, &PlanCode::ENTERPRISE, ops())
    );
    // A direct save of a changed record is refused by the store itself.
    let mut record = service.tenant(tenant).await.map_err(err)?;
    let stored = service.store().save_tenant(&record, &[]).await;
    ensure!(
        stored.as_ref().err() == Some(&archived),
        "save_tenant of an archived tenant gave {stored:?}"
    );
    ensure!(
        record.rename("Renamed").err() == Some(archived.clone()),
        "renaming an archived tenant was not refused"
    );
    let settings = service
        .store()
        .put_tenant_settings(tenant, &SettingsLayer::new(), &[])
        .await;
    ensure!(
        settings.as_ref().err() == Some(&archived),
        "put_tenant_settings of an archived tenant gave {settings:?}"
    );

    ensure!(
        snapshot(&service, tenant, customer).await? == before,
        "a refused write changed an archived tenant"
    );
    ensure!(
        events_of(service.store(), outbox, tenant).await? == events_before,
        "a refused write published an event"
    );
    // Its data stays readable, and the platform still measures what it did.
    ensure!(
        service
            .settings_of(tenant)
            .await
            .map_err(err)?
            .currency()
            .value
            == Currency::GBP,
        "an archived tenant's settings are not readable"
    );
    let record = UsageRecord::new(
        UsageRecordId::new(),
        PlatformMetric::InvoicesIssued,
        clock_now(&clock),
        2,
    );
    let recorded = service.record_usage(tenant, &[record]).await.map_err(err)?;
    ensure!(
        recorded == 1,
        "recording for an archived tenant counted {recorded}"
    );
    // Authorization grants an archived tenant's owner reads only.
    let policy = service.access_policy(tenant).await.map_err(err)?;
    ensure!(
        policy
            .authorize(&user, Permission::BillingRead)
            .is_allowed()
            && policy.authorize(&user, Permission::BillingManage)
                == Decision::Denied(Denial::TenantArchived),
        "an archived tenant's owner was not limited to reads"
    );
    Ok(())
}

async fn the_status_gates_what_a_tenant_may_do<S, R>(store: S, _outbox: &R) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, _) = service(store)?;
    let plan = Some(suite_code()?);
    let not = |tenant, status, operation| {
        Some(TenancyError::TenantNotActive {
            tenant,
            status,
            operation,
        })
    };

    let requested = tenant_at(&service, plan.clone(), &[]).await?;
    let admitted = service
        .admit_customers(requested, &[CustomerId::new()])
        .await;
    ensure!(
        admitted.as_ref().err()
            == not(
                requested,
                TenantStatus::Requested,
                Operation::AdmitCustomers
            )
            .as_ref(),
        "a requested tenant admitted a customer: {admitted:?}"
    );
    service
        .update_settings(requested, &SettingsLayer::new(), ops())
        .await
        .map_err(|e| format!("a requested tenant could not be configured: {e}"))?;

    let provisioning =
        tenant_at(&service, plan.clone(), path_to(TenantStatus::Provisioning)).await?;
    service
        .admit_customers(provisioning, &[CustomerId::new()])
        .await
        .map_err(|e| format!("a tenant in provisioning could not import a customer: {e}"))?;
    let calls = service.admit_api_calls(provisioning, 1).await;
    ensure!(
        calls.as_ref().err()
            == not(
                provisioning,
                TenantStatus::Provisioning,
                Operation::ServeApi
            )
            .as_ref(),
        "a tenant in provisioning served API calls: {calls:?}"
    );

    let suspended = tenant_at(&service, plan, path_to(TenantStatus::Suspended)).await?;
    let admitted = service
        .admit_customers(suspended, &[CustomerId::new()])
        .await;
    ensure!(
        admitted.as_ref().err()
            == not(
                suspended,
                TenantStatus::Suspended,
                Operation::AdmitCustomers
            )
            .as_ref(),
        "a suspended tenant admitted a customer: {admitted:?}"
    );
    service
        .add_user(suspended, NewUser::new("fix@suite", "Fixer"), ops())
        .await
        .map_err(|e| format!("a suspended tenant could not add a user: {e}"))?;
    let report = service.quota_use(suspended).await.map_err(err)?;
    ensure!(
        report.customers.used == 0 && report.admin_users.used == 1,
        "a suspended tenant's use: {report:?}"
    );
    Ok(())
}

async fn the_customer_quota_is_exact_idempotent_and_all_or_nothing<S, R>(
    store: S,
    _outbox: &R,
) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, clock) = service(store)?;
    let tenant = active(&service).await?;
    let c: Vec<CustomerId> = (0..5).map(|_| CustomerId::new()).collect();

    let used = service
        .admit_customers(tenant, &c[..2])
        .await
        .map_err(err)?;
    ensure!(
        used.used == 2 && used.limit == Limit::AtMost(3),
        "after two customers: {used:?}"
    );
    // Two more do not fit: nothing is counted, the error names the quota, limit and use.
    let over = service.admit_customers(tenant, &c[2..4]).await;
    ensure!(
        over.as_ref().err()
            == Some(&TenancyError::QuotaExceeded {
                tenant,
                quota: Quota::Customers,
                limit: 3,
                used: 2,
                requested: 2,
            }),
        "over the quota: {over:?}"
    );
    let report = service.quota_use(tenant).await.map_err(err)?;
    ensure!(
        report.customers.used == 2,
        "a refused admission counted: {:?}",
        report.customers
    );
    // Customers already counted are not counted again (also twice in one call).
    let used = service
        .admit_customers(tenant, &[c[0], c[1], c[2], c[2]])
        .await
        .map_err(err)?;
    ensure!(used.used == 3, "re-admitting counted customers: {used:?}");
    let used = service
        .admit_customers(tenant, &c[..3])
        .await
        .map_err(|e| format!("re-admitting at the limit: {e}"))?;
    ensure!(
        used.used == 3 && used.remaining() == Limit::AtMost(0),
        "at the limit: {used:?}"
    );
    // A release frees a seat; a customer not counted is skipped.
    clock.advance(Duration::minutes(5));
    let used = service
        .release_customers(tenant, &[c[1], c[4]])
        .await
        .map_err(err)?;
    ensure!(used.used == 2, "after a release: {used:?}");
    let used = service
        .admit_customers(tenant, &[c[4]])
        .await
        .map_err(err)?;
    ensure!(used.used == 3, "admitting into the freed seat: {used:?}");
    let none = service.admit_customers(tenant, &[c[1]]).await;
    ensure!(
        matches!(
            none,
            Err(TenancyError::QuotaExceeded {
                used: 3,
                requested: 1,
                ..
            })
        ),
        "a released customer came back over the limit: {none:?}"
    );
    // An unmetered tenant (no plan) counts without a limit.
    let unmetered = tenant_at(&service, None, path_to(TenantStatus::Active)).await?;
    let many: Vec<CustomerId> = (0..50).map(|_| CustomerId::new()).collect();
    let used = service
        .admit_customers(unmetered, &many)
        .await
        .map_err(err)?;
    ensure!(
        used.used == 50 && used.limit == Limit::Unlimited,
        "an unmetered tenant: {used:?}"
    );
    Ok(())
}

async fn concurrent_admissions_at_limit_minus_one_admit_exactly_one<S, R>(
    store: S,
    _outbox: &R,
) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    use futures_util::future::join;
    let (service, _) = service(store)?;

    // Customers: limit 3, two counted, two new ones at once.
    let tenant = active(&service).await?;
    service
        .admit_customers(tenant, &[CustomerId::new(), CustomerId::new()])
        .await
        .map_err(err)?;
    let (a, b) = join(
        service.admit_customers(tenant, &[CustomerId::new()]),
        service.admit_customers(tenant, &[CustomerId::new()]),
    )
    .await;
    let refused = [&a, &b]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(TenancyError::QuotaExceeded {
                    limit: 3,
                    used: 3,
                    requested: 1,
                    ..
                })
            )
        })
        .count();
    ensure!(
        a.is_ok() != b.is_ok() && refused == 1,
        "two concurrent customers at limit - 1: {a:?} and {b:?}"
    );
    let used = service.quota_use(tenant).await.map_err(err)?.customers.used;
    ensure!(used == 3, "{used} customers counted, not 3");

    // The same customer twice at once: counted once, both calls succeed.
    let tenant = active(&service).await?;
    service
        .admit_customers(tenant, &[CustomerId::new(), CustomerId::new()])
        .await
        .map_err(err)?;
    let same = CustomerId::new();
    let (a, b) = join(
        service.admit_customers(tenant, &[same]),
        service.admit_customers(tenant, &[same]),
    )
    .await;
    ensure!(
        a.is_ok() && b.is_ok(),
        "one customer admitted twice at once: {a:?} and {b:?}"
    );
    let used = service.quota_use(tenant).await.map_err(err)?.customers.used;
    ensure!(
        used == 3,
        "one customer admitted twice at once counted {used}"
    );

    // Admin users: limit 2, one seat left, two new users at once.
    let tenant = active(&service).await?;
    service
        .add_user(tenant, NewUser::new("first@suite", "First"), ops())
        .await
        .map_err(err)?;
    let (a, b) = join(
        service.add_user(tenant, NewUser::new("a@suite", "A"), ops()),
        service.add_user(tenant, NewUser::new("b@suite", "B"), ops()),
    )
    .await;
    ensure!(
        a.is_ok() != b.is_ok(),
        "two concurrent users for one seat: {:?} and {:?}",
        a.as_ref().map(|(u, q, _)| (u.subject().to_owned(), *q)),
        b.as_ref().map(|(u, q, _)| (u.subject().to_owned(), *q))
    );
    let users = service.store().tenant_users(tenant).await.map_err(err)?;
    ensure!(
        users.len() == 2,
        "{} users stored for two seats",
        users.len()
    );

    // API calls: 10 an hour, 9 counted, one more twice at once.
    let tenant = active(&service).await?;
    service.admit_api_calls(tenant, 9).await.map_err(err)?;
    let (a, b) = join(
        service.admit_api_calls(tenant, 1),
        service.admit_api_calls(tenant, 1),
    )
    .await;
    ensure!(
        a.is_ok() != b.is_ok(),
        "two concurrent calls for the last of the hour: {a:?} and {b:?}"
    );
    let used = service.quota_use(tenant).await.map_err(err)?.api_calls.used;
    ensure!(used == 10, "{used} calls counted, not 10");
    Ok(())
}

async fn the_admin_user_quota_counts_active_users<S, R>(store: S, outbox: &R) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, _) = service(store)?;
    let tenant = active(&service).await?;
    let (ana, used, events) = service
        .add_user(
            tenant,
            NewUser::new("ana@suite", "Ana").role(RoleName::OWNER),
            ops(),
        )
        .await
        .map_err(err)?;
    ensure!(
        used.used == 1 && used.quota == Quota::AdminUsers,
        "one user: {used:?}"
    );
    ensure!(
        events.len() == 1 && events[0].event_type() == "tenancy.user_added",
        "adding a user raised {events:?}"
    );
    let (bo, _, _) = service
        .add_user(tenant, NewUser::new("bo@suite", "Bo"), ops())
        .await
        .map_err(err)?;
    let events_before = events_of(service.store(), outbox, tenant).await?;
    let third = service
        .add_user(tenant, NewUser::new("cy@suite", "Cy"), ops())
        .await;
    ensure!(
        third.as_ref().err()
            == Some(&TenancyError::QuotaExceeded {
                tenant,
                quota: Quota::AdminUsers,
                limit: 2,
                used: 2,
                requested: 1,
            }),
        "a third user on two seats: {:?}",
        third.map(|(u, _, _)| u.subject().to_owned())
    );
    ensure!(
        service
            .store()
            .user_by_subject(tenant, "cy@suite")
            .await
            .map_err(err)?
            .is_none(),
        "the refused user was stored"
    );
    ensure!(
        events_of(service.store(), outbox, tenant).await? == events_before,
        "the refused user published an event"
    );
    // The subject is the identity provider's key: one user per subject.
    let twice = service
        .add_user(tenant, NewUser::new("ana@suite", "Ana again"), ops())
        .await;
    ensure!(
        matches!(
            twice,
            Err(TenancyError::AlreadyExists {
                what: "user subject",
                ..
            })
        ),
        "a second user with one subject: {:?}",
        twice.map(|_| ())
    );
    // Disabling frees a seat; enabling takes one back.
    let (_, used, _) = service
        .set_user_status(tenant, bo.id(), UserStatus::Disabled, ops())
        .await
        .map_err(err)?;
    ensure!(used.used == 1, "after disabling: {used:?}");
    let (cy, used, _) = service
        .add_user(tenant, NewUser::new("cy@suite", "Cy"), ops())
        .await
        .map_err(err)?;
    ensure!(used.used == 2, "the freed seat: {used:?}");
    let back = service
        .set_user_status(tenant, bo.id(), UserStatus::Active, ops())
        .await;
    ensure!(
        matches!(
            back,
            Err(TenancyError::QuotaExceeded {
                quota: Quota::AdminUsers,
                ..
            })
        ),
        "enabling a user with every seat taken: {:?}",
        back.map(|(_, q, _)| q)
    );
    let stored = service
        .store()
        .tenant_user(tenant, bo.id())
        .await
        .map_err(err)?;
    ensure!(
        stored.as_ref().map(TenantUser::status) == Some(UserStatus::Disabled),
        "a refused enable changed the user: {stored:?}"
    );
    // Roles change without touching the count.
    let (changed, used, _) = service
        .set_user_roles(
            tenant,
            cy.id(),
            [RoleName::BILLING, RoleName::SUPPORT_AGENT]
                .into_iter()
                .collect(),
            ops(),
        )
        .await
        .map_err(err)?;
    ensure!(
        used.used == 2 && changed.roles().len() == 2,
        "changing roles: {used:?}, {:?}",
        changed.roles()
    );
    let read = service
        .store()
        .tenant_user(tenant, cy.id())
        .await
        .map_err(err)?;
    ensure!(
        read.as_ref() == Some(&changed),
        "a saved user reads back as {read:?}"
    );
    let all = service.store().tenant_users(tenant).await.map_err(err)?;
    let mut ids = vec![ana.id(), bo.id(), cy.id()];
    ids.sort();
    ensure!(
        all.iter().map(TenantUser::id).collect::<Vec<_>>() == ids,
        "tenant_users is not every user by id"
    );
    let unknown = UserId::new();
    let missing = service
        .set_user_status(tenant, unknown, UserStatus::Disabled, ops())
        .await;
    ensure!(
        missing.as_ref().err() == Some(&TenancyError::UnknownUser(unknown)),
        "changing an unknown user: {:?}",
        missing.map(|_| ())
    );
    Ok(())
}

async fn the_api_call_quota_is_an_hourly_window<S, R>(store: S, _outbox: &R) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, clock) = service(store)?;
    let tenant = active(&service).await?;
    clock.set(start() + Duration::minutes(10));
    let used = service.admit_api_calls(tenant, 6).await.map_err(err)?;
    ensure!(
        used.used == 6
            && used.limit == Limit::AtMost(10)
            && used.window_start == start()
            && used.window_end == start() + Duration::hours(1),
        "six calls: {used:?}"
    );
    clock.set(start() + Duration::minutes(59));
    let used = service.admit_api_calls(tenant, 4).await.map_err(err)?;
    ensure!(used.used == 10, "ten calls: {used:?}");
    let over = service.admit_api_calls(tenant, 1).await;
    ensure!(
        over.as_ref().err()
            == Some(&TenancyError::QuotaExceeded {
                tenant,
                quota: Quota::ApiCallsPerHour,
                limit: 10,
                used: 10,
                requested: 1,
            }),
        "an eleventh call: {over:?}"
    );
    let big = service.admit_api_calls(tenant, u64::MAX).await;
    ensure!(
        matches!(big, Err(TenancyError::TooLarge { .. })),
        "u64::MAX calls: {big:?}"
    );
    // The next hour is a fresh window.
    clock.set(start() + Duration::hours(1));
    let used = service.admit_api_calls(tenant, 10).await.map_err(err)?;
    ensure!(
        used.used == 10 && used.window_start == start() + Duration::hours(1),
        "the next hour: {used:?}"
    );
    let report = service.quota_use(tenant).await.map_err(err)?;
    ensure!(
        report.api_calls.used == 10 && report.api_calls.remaining() == Limit::AtMost(0),
        "the report: {:?}",
        report.api_calls
    );
    // Calls that do not fit in one window are refused whole.
    clock.set(start() + Duration::hours(2));
    let whole = service.admit_api_calls(tenant, 11).await;
    ensure!(
        matches!(
            whole,
            Err(TenancyError::QuotaExceeded {
                used: 0,
                requested: 11,
                ..
            })
        ),
        "eleven calls at once: {whole:?}"
    );
    let report = service.quota_use(tenant).await.map_err(err)?;
    ensure!(report.api_calls.used == 0, "a refused batch counted");
    Ok(())
}

async fn settings_fall_back_from_customer_to_platform<S, R>(
    store: S,
    outbox: &R,
) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, _) = service(store)?;
    let tenant = active(&service).await?;
    let plan = suite_code()?;

    // Platform (EUR, half-up) and plan (30 days, en-GB) only.
    let settings = service.settings_of(tenant).await.map_err(err)?;
    ensure!(
        settings.currency().value == Currency::EUR
            && settings.currency().source == SettingSource::Platform,
        "currency: {:?}",
        settings.currency()
    );
    ensure!(
        settings.payment_terms().value.days() == 30
            && settings.payment_terms().source == SettingSource::Plan(plan.clone()),
        "payment terms: {:?}",
        settings.payment_terms()
    );
    ensure!(
        settings.locale().value.as_str() == "en-GB",
        "locale: {:?}",
        settings.locale()
    );

    // The tenant's own layer, documents included, round-trips and wins over the plan.
    let taxes = SettingDocument::from_json(serde_json::json!([
        {"id": "019500000000700080000000000000aa", "name": "VAT 20 %", "percent": "20",
         "mode": "exclusive", "base": "net"}
    ]));
    let layer = SettingsLayer::new()
        .with_payment_terms(PaymentTerms::net(14).map_err(err)?)
        .with_rounding_mode(RoundingMode::HalfEven)
        .with_time_zone(chrono_tz::Europe::Lisbon)
        .with_document(SettingKey::TaxRates, taxes.clone());
    let events = service
        .update_settings(tenant, &layer, ops())
        .await
        .map_err(err)?;
    ensure!(
        events.len() == 1 && events[0].event_type() == "tenancy.settings_changed",
        "a settings change raised {events:?}"
    );
    let read = service.store().tenant_settings(tenant).await.map_err(err)?;
    ensure!(read == layer, "the tenant layer reads back as {read:?}");
    let settings = service.settings_of(tenant).await.map_err(err)?;
    ensure!(
        settings.payment_terms().value.days() == 14
            && settings.payment_terms().source == SettingSource::Tenant,
        "payment terms: {:?}",
        settings.payment_terms()
    );
    ensure!(
        settings.tax_rates().value == &taxes
            && settings.tax_rates().source == SettingSource::Tenant,
        "tax rates: {:?}",
        settings.tax_rates()
    );
    ensure!(
        settings.locale().source == SettingSource::Plan(plan.clone()),
        "the locale left the plan: {:?}",
        settings.locale()
    );

    // A customer's own payment terms and currency win for them alone.
    let customer = CustomerId::new();
    let theirs = CustomerSettings::new()
        .with_payment_terms(PaymentTerms::net(7).map_err(err)?)
        .with_currency(Currency::USD);
    service
        .update_customer_settings(tenant, customer, &theirs, ops())
        .await
        .map_err(err)?;
    let read = service
        .store()
        .customer_settings(tenant, customer)
        .await
        .map_err(err)?;
    ensure!(read == theirs, "the customer layer reads back as {read:?}");
    let resolved = service
        .customer_settings_of(tenant, customer)
        .await
        .map_err(err)?;
    ensure!(
        resolved.payment_terms().value.days() == 7
            && resolved.payment_terms().source == SettingSource::Customer(customer)
            && resolved.currency().source == SettingSource::Customer(customer)
            && resolved.rounding_mode().source == SettingSource::Tenant
            && resolved.locale().source == SettingSource::Plan(plan.clone())
            && resolved.invoice_number_format().source == SettingSource::Platform,
        "a customer's sources: {:?}",
        resolved.sources()
    );
    let other = service
        .customer_settings_of(tenant, CustomerId::new())
        .await
        .map_err(err)?;
    ensure!(
        other.payment_terms().source == SettingSource::Tenant,
        "another customer got {:?}",
        other.payment_terms()
    );

    // Removing the tenant's value falls back to the plan again.
    service
        .update_settings(tenant, &SettingsLayer::new(), ops())
        .await
        .map_err(err)?;
    let settings = service.settings_of(tenant).await.map_err(err)?;
    ensure!(
        settings.payment_terms().source == SettingSource::Plan(plan),
        "after clearing: {:?}",
        settings.payment_terms()
    );
    let events = events_of(service.store(), outbox, tenant).await?;
    ensure!(
        events
            .iter()
            .filter(|e| *e == "tenancy.settings_changed")
            .count()
            == 3,
        "settings events: {events:?}"
    );
    // A tenant never configured has no layer; an unknown tenant is an error.
    let unknown = TenantId::new();
    ensure!(
        service
            .store()
            .tenant_settings(unknown)
            .await
            .map_err(err)?
            == SettingsLayer::new(),
        "an unknown tenant has settings"
    );
    let put = service
        .update_settings(unknown, &SettingsLayer::new(), ops())
        .await;
    ensure!(
        put.as_ref().err() == Some(&TenancyError::UnknownTenant(unknown)),
        "settings for an unknown tenant: {put:?}"
    );
    Ok(())
}

async fn roles_are_stored_and_authorize_denies_by_default<S, R>(
    store: S,
    _outbox: &R,
) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, _) = service(store)?;
    let tenant = active(&service).await?;
    let noc = RoleName::new("noc").map_err(|e| e.to_string())?;
    let role = Role::custom(
        noc.clone(),
        [Permission::UsageRead, Permission::UsageManage],
        "Network operations",
    )
    .map_err(err)?;
    service.save_role(tenant, &role, ops()).await.map_err(err)?;
    let roles = service.store().tenant_roles(tenant).await.map_err(err)?;
    ensure!(roles == [role.clone()], "roles read back as {roles:?}");
    // Redefining replaces.
    let wider = Role::custom(
        noc.clone(),
        [
            Permission::UsageRead,
            Permission::UsageManage,
            Permission::SupportRead,
        ],
        "",
    )
    .map_err(err)?;
    service
        .save_role(tenant, &wider, ops())
        .await
        .map_err(err)?;
    let roles = service.store().tenant_roles(tenant).await.map_err(err)?;
    ensure!(roles == [wider], "a redefined role reads back as {roles:?}");
    // A built-in name is refused by the store too (a role smuggled past `Role::custom`).
    let fake: Role = serde_json::from_value(serde_json::json!({
        "name": "owner", "permissions": [], "description": ""
    }))
    .map_err(|e| e.to_string())?;
    let put = service.store().put_role(tenant, &fake, &[]).await;
    ensure!(
        put.as_ref().err() == Some(&TenancyError::BuiltInRole(RoleName::OWNER)),
        "a built-in role's name: {put:?}"
    );

    service
        .add_user(tenant, NewUser::new("noc@suite", "Nia").role(noc), ops())
        .await
        .map_err(err)?;
    service
        .add_user(tenant, NewUser::new("nobody@suite", "Ned"), ops())
        .await
        .map_err(err)?;
    let decide = |subject: &'static str, permission| {
        let service = service.clone();
        async move { service.authorize_subject(tenant, subject, permission).await }
    };
    let allowed = decide("noc@suite", Permission::SupportRead)
        .await
        .map_err(err)?;
    ensure!(
        allowed
            == Decision::Allowed {
                role: RoleName::new("noc").map_err(|e| e.to_string())?
            },
        "the custom role's permission: {allowed:?}"
    );
    let denied = decide("noc@suite", Permission::BillingManage)
        .await
        .map_err(err)?;
    ensure!(
        denied == Decision::Denied(Denial::NotGranted),
        "a permission no role grants: {denied:?}"
    );
    let roleless = decide("nobody@suite", Permission::TenantRead)
        .await
        .map_err(err)?;
    ensure!(
        roleless == Decision::Denied(Denial::NotGranted),
        "a user without roles: {roleless:?}"
    );
    let stranger = decide("stranger@suite", Permission::TenantRead)
        .await
        .map_err(err)?;
    ensure!(
        stranger == Decision::Denied(Denial::UnknownUser),
        "an unknown subject: {stranger:?}"
    );
    Ok(())
}

async fn tenants_are_isolated<S, R>(store: S, outbox: &R) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, clock) = service(store)?;
    let a = active(&service).await?;
    let b = active(&service).await?;
    let customer = CustomerId::new();
    service.admit_customers(a, &[customer]).await.map_err(err)?;
    service.admit_api_calls(a, 3).await.map_err(err)?;
    let (user, _, _) = service
        .add_user(a, NewUser::new("shared@suite", "Sam"), ops())
        .await
        .map_err(err)?;
    service
        .update_settings(a, &SettingsLayer::new().with_currency(Currency::GBP), ops())
        .await
        .map_err(err)?;
    service
        .update_customer_settings(
            a,
            customer,
            &CustomerSettings::new().with_currency(Currency::USD),
            ops(),
        )
        .await
        .map_err(err)?;
    let role =
        Role::custom(RoleName::new("auditor").map_err(|e| e.to_string())?, [], "").map_err(err)?;
    service.save_role(a, &role, ops()).await.map_err(err)?;

    let store = service.store();
    ensure!(
        store
            .tenant_user(b, user.id())
            .await
            .map_err(err)?
            .is_none()
            && store
                .user_by_subject(b, "shared@suite")
                .await
                .map_err(err)?
                .is_none()
            && store.tenant_users(b).await.map_err(err)?.is_empty()
            && store.tenant_roles(b).await.map_err(err)?.is_empty(),
        "tenant b sees tenant a's users or roles"
    );
    ensure!(
        store.tenant_settings(b).await.map_err(err)? == SettingsLayer::new()
            && store.customer_settings(b, customer).await.map_err(err)? == CustomerSettings::new(),
        "tenant b sees tenant a's settings"
    );
    let report = service.quota_use(b).await.map_err(err)?;
    ensure!(
        report.customers.used == 0 && report.admin_users.used == 0 && report.api_calls.used == 0,
        "tenant b counts tenant a's use: {report:?}"
    );
    // One subject may be a user of two tenants (two operators employ one contractor).
    service
        .add_user(b, NewUser::new("shared@suite", "Sam"), ops())
        .await
        .map_err(|e| format!("one subject in two tenants: {e}"))?;
    // The same customer id under two tenants counts once in each.
    service.admit_customers(b, &[customer]).await.map_err(err)?;
    ensure!(
        service.quota_use(a).await.map_err(err)?.customers.used == 1,
        "tenant b's customer counted in tenant a"
    );
    // A record of another tenant is refused before anything is written.
    let foreign = TenantUser::new(
        UserId::new(),
        a,
        NewUser::new("smuggled@suite", "Smuggled"),
        clock_now(&clock),
    )
    .map_err(err)?;
    let smuggled = store.insert_user(b, &foreign, &[]).await;
    ensure!(
        matches!(&smuggled, Err(TenancyError::Storage(e)) if e.kind() == StorageErrorKind::TenantMismatch),
        "a user of tenant a inserted for tenant b: {smuggled:?}"
    );
    ensure!(
        store.tenant_users(b).await.map_err(err)?.len() == 1
            && store.tenant_users(a).await.map_err(err)?.len() == 1,
        "the smuggled user was stored"
    );
    let events_b = events_of(store, outbox, b).await?;
    ensure!(
        !events_b.iter().any(|e| e == "tenancy.role_saved"),
        "tenant b's outbox holds tenant a's events: {events_b:?}"
    );
    Ok(())
}

async fn platform_usage_is_counted_once_per_period<S, R>(
    store: S,
    _outbox: &R,
) -> Result<(), String>
where
    S: TenancyStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (service, clock) = service(store)?;
    let tenant = tenant_at(&service, None, path_to(TenantStatus::Active)).await?;
    let other = tenant_at(&service, None, path_to(TenantStatus::Active)).await?;
    let day = |d: i64| start() + Duration::days(d);
    let c: Vec<CustomerId> = (0..4).map(|_| CustomerId::new()).collect();

    // Day 0: two customers and 5 calls; day 1: two more; day 2: one leaves, 7 calls.
    clock.set(day(0));
    service
        .admit_customers(tenant, &c[..2])
        .await
        .map_err(err)?;
    service.admit_api_calls(tenant, 5).await.map_err(err)?;
    clock.set(day(1));
    service
        .admit_customers(tenant, &c[2..])
        .await
        .map_err(err)?;
    clock.set(day(2));
    service
        .release_customers(tenant, &c[..1])
        .await
        .map_err(err)?;
    service.admit_api_calls(tenant, 7).await.map_err(err)?;
    service.admit_api_calls(other, 100).await.map_err(err)?;

    let invoices = UsageRecord::new(
        UsageRecordId::new(),
        PlatformMetric::InvoicesIssued,
        day(1),
        40,
    );
    let ingested = UsageRecord::new(
        UsageRecordId::new(),
        PlatformMetric::EventsIngested,
        day(2),
        1_000,
    );
    let late = UsageRecord::new(
        UsageRecordId::new(),
        PlatformMetric::InvoicesIssued,
        day(5),
        3,
    );
    let new = service
        .record_usage(tenant, &[invoices, ingested, late])
        .await
        .map_err(err)?;
    ensure!(new == 3, "three records counted {new}");
    // A retried batch is not counted twice.
    let again = service
        .record_usage(tenant, &[invoices, ingested])
        .await
        .map_err(err)?;
    ensure!(again == 0, "a replayed batch counted {again}");
    let huge = UsageRecord::new(
        UsageRecordId::new(),
        PlatformMetric::EventsIngested,
        day(2),
        u64::MAX,
    );
    let refused = service.record_usage(tenant, &[huge]).await;
    ensure!(
        matches!(refused, Err(TenancyError::TooLarge { .. })),
        "an uncountable quantity: {refused:?}"
    );

    let store = service.store();
    let first_days = store
        .platform_usage(tenant, day(0), day(2))
        .await
        .map_err(err)?;
    ensure!(
        (first_days.customers, first_days.customers_added) == (4, 4)
            && first_days.invoices_issued == 40
            && first_days.events_ingested == 0
            && first_days.api_calls == 5,
        "days 0-1: {first_days:?}"
    );
    let week = store
        .platform_usage(tenant, day(0), day(7))
        .await
        .map_err(err)?;
    ensure!(
        (week.customers, week.customers_added) == (3, 4)
            && week.invoices_issued == 43
            && week.events_ingested == 1_000
            && week.api_calls == 12,
        "the week: {week:?}"
    );
    let later = store
        .platform_usage(tenant, day(3), day(7))
        .await
        .map_err(err)?;
    ensure!(
        (later.customers, later.customers_added) == (3, 0)
            && later.invoices_issued == 3
            && later.api_calls == 0,
        "days 3-6: {later:?}"
    );
    let period = dotmac_core::Period::new(day(0).date_naive(), day(7).date_naive())
        .map_err(|e| e.to_string())?;
    let through_service = service
        .platform_usage(tenant, period, chrono_tz::UTC)
        .await
        .map_err(err)?;
    let figures = |u: &crate::usage::PlatformUsage| {
        (
            u.customers,
            u.customers_added,
            u.invoices_issued,
            u.events_ingested,
            u.api_calls,
        )
    };
    ensure!(
        figures(&through_service) == figures(&week)
            && through_service.from
                == Utc.from_utc_datetime(&day(0).date_naive().and_time(chrono::NaiveTime::MIN)),
        "by period: {through_service:?}"
    );
    let theirs = store
        .platform_usage(other, day(0), day(7))
        .await
        .map_err(err)?;
    ensure!(
        theirs.api_calls == 100 && theirs.customers == 0 && theirs.invoices_issued == 0,
        "the other tenant: {theirs:?}"
    );
    Ok(())
}
