//! # dotmac-tenancy
//!
//! The tenants of [DotMac](https://github.com/dotmac-sdk/dotmac): the ISP operators who run on
//! the platform, and what the platform knows about each of them.
//!
//! - **Lifecycle.** A [`Tenant`] is requested, provisioned, active, possibly suspended (and
//!   resumed), and finally archived ([`TenantStatus`]). Every step is a checked transition
//!   ([`Tenant::transition`], [`TenancyError::InvalidTransition`] names both statuses),
//!   recorded with who did it and when ([`Tenant::history`]) and an outbox event
//!   ([`TenancyEvent`]). An archived tenant is read-only: every write for it is refused with
//!   [`TenancyError::TenantArchived`] by the store itself, in the write's own transaction.
//! - **Plans, quotas, entitlements.** A [`TenantPlan`] limits customers, admin users and API
//!   calls per hour ([`Limit`]: `Unlimited` or `AtMost(n)`; `-1` in data) and lists the
//!   [`Feature`]s it entitles a tenant to. [`PlanCatalog::platform_tiers`] is the platform's
//!   starter / professional / enterprise table, as data. Quotas are checked where the counted
//!   thing is created, atomically ([`QuotaStore`]): [`TenancyError::QuotaExceeded`] names the
//!   quota, its limit and its use. The hourly rate quota is a fixed window counter that works
//!   across processes sharing one database ([`usage`] explains the choice).
//! - **Settings with fallback.** Platform defaults → plan → tenant → customer
//!   ([`resolve`]): currency, time zone, locale, rounding mode, payment terms, invoice number
//!   format, tax rates, dunning policy, suspension billing and SLA calendar, one typed
//!   accessor each on [`ResolvedSettings`], each value with its [`SettingSource`].
//! - **Users and roles.** [`TenantUser`]s hold roles (owner, admin, billing, support agent,
//!   read-only, or the tenant's own [`Role`]s built from [`Permission`]s); [`authorize`] is a
//!   pure function that denies by default. Active users count against the admin-user quota.
//! - **Platform usage.** [`PlatformUsage`]: customers, invoices issued, events ingested and
//!   API calls per tenant and period, for billing the tenants themselves.
//!
//! ## Not here: authentication
//!
//! DotMac does not authenticate anyone. The embedder's identity provider (OIDC, SAML, its own
//! sessions) says who is calling; the embedder maps that identity to a [`TenantUser`] by its
//! subject ([`AccessStore::user_by_subject`], [`TenancyService::authorize_subject`]) and asks
//! [`authorize`] whether the user may act. No password, token or session ever reaches this
//! crate.
//!
//! ## Example
//!
//! ```
//! # futures_block_on(async {
//! use dotmac_core::{CustomerId, FixedClock, TenantId};
//! use dotmac_tenancy::{
//!     Actor, InMemoryTenancyStore, NewTenant, NewUser, PaymentTerms, Permission, PlanCode,
//!     RoleName, SettingSource, SettingsLayer, TenancyService, TenancySettings, TenantStatus,
//! };
//!
//! let clock = FixedClock::new(chrono::DateTime::UNIX_EPOCH);
//! let tenancy = TenancyService::new(InMemoryTenancyStore::new(), clock, TenancySettings::platform_tiers()?);
//! let ops = Actor::platform("onboarding");
//!
//! // Requested on the professional plan, provisioned, activated.
//! let tenant = TenantId::new();
//! tenancy.request_tenant(tenant, NewTenant::new("Acme Fibre").plan(PlanCode::PROFESSIONAL), ops.clone()).await?;
//! tenancy.transition(tenant, TenantStatus::Provisioning, ops.clone(), None).await?;
//! tenancy.transition(tenant, TenantStatus::Active, ops.clone(), Some("contract signed")).await?;
//!
//! // Its own payment terms; everything else falls back to the plan and the platform.
//! tenancy.update_settings(tenant, &SettingsLayer::new().with_payment_terms(PaymentTerms::net(30)?), ops.clone()).await?;
//! let settings = tenancy.settings_of(tenant).await?;
//! assert_eq!(settings.payment_terms().value.days(), 30);
//! assert_eq!(settings.payment_terms().source, SettingSource::Tenant);
//! assert_eq!(settings.currency().source, SettingSource::Platform);
//!
//! // A billing clerk: may record payments, may not change the plan.
//! let (clerk, seats, _) = tenancy
//!     .add_user(tenant, NewUser::new("bea@acme.example", "Bea").role(RoleName::BILLING), ops)
//!     .await?;
//! assert_eq!(seats.used, 1);
//! let policy = tenancy.access_policy(tenant).await?;
//! assert!(policy.authorize(&clerk, Permission::PaymentsManage).is_allowed());
//! assert!(!policy.authorize(&clerk, Permission::TenantManage).is_allowed());
//!
//! // Customers count against the quota where they are created.
//! let used = tenancy.admit_customers(tenant, &[CustomerId::new(), CustomerId::new()]).await?;
//! assert_eq!((used.used, used.limit.to_string()), (2, "1000".to_string()));
//! # Ok::<(), dotmac_tenancy::TenancyError>(()) }).unwrap();
//! # fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     use std::task::{Context, Poll, Waker};
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = Context::from_waker(Waker::noop());
//! #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```
//!
//! Storage: [`InMemoryTenancyStore`] here; `dotmac-sqlx`'s `SqlStore` implements the same
//! traits on SQLite and PostgreSQL (row-level security, every key led by the tenant).
//!
//! ## Features
//!
//! - `testkit`: `testkit::run_tenancy_store_suite`, the behaviour suite every store must
//!   pass.

// Module map. The graph of `use crate::…` between modules is acyclic (doc links excepted);
// each line names what the module imports, leaves first.
//
//   vocab    — (nothing: ids, statuses, names of quotas, features, permissions, roles, settings)
//   error    — vocab
//   settings — error, vocab
//   plan     — error, settings, vocab
//   tenant   — error, plan, settings, vocab
//   access   — error, vocab
//   usage    — plan, vocab
//   event    — access, tenant, vocab
//   store    — access, error, settings, tenant, usage, vocab
//   memory   — access, error, settings, store, tenant, usage, vocab
//   service  — access, error, event, plan, settings, store, tenant, usage, vocab
//   testkit  — everything above (feature `testkit`)
//   lib      — re-exports only

// Unchecked arithmetic is refused in library code: use checked or saturating operations, or
// an `allow` that says why the operation cannot overflow. Tests may use plain operators.
#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]
#![cfg_attr(not(test), warn(clippy::disallowed_methods))]

mod access;
mod error;
mod event;
mod memory;
mod plan;
mod service;
mod settings;
pub mod store;
mod tenant;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod usage;
mod vocab;

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use access::{
    AccessPolicy, Decision, Denial, NewUser, Role, TenantUser, UserStatus, authorize,
    built_in_permissions, ensure_owner_remains,
};
pub use error::{Result, TenancyError};
pub use event::{SettingsScope, TenancyEvent};
pub use memory::InMemoryTenancyStore;
pub use plan::{Limit, PlanCatalog, Quotas, TenantPlan, TenantPlanBuilder};
pub use service::{TenancyEvents, TenancyService, TenancySettings};
pub use settings::{
    CustomerSettings, InvoiceNumberFormat, Locale, NumberReset, PaymentTerms, Resolved,
    ResolvedSettings, SettingDocument, Settings, SettingsLayer, resolve,
};
pub use store::{AccessStore, QuotaStore, SettingsStore, TenancyStore, TenantStore};
pub use tenant::{NewTenant, StatusChange, Tenant};
pub use usage::{
    PlatformMetric, PlatformUsage, QuotaReport, QuotaUse, RateUse, UsageRecord, rate_window,
};
pub use vocab::{
    Access, Actor, Feature, InvalidName, Operation, Permission, PlanCode, Quota, RoleName,
    SettingKey, SettingSource, TenantStatus, UsageRecordId, UserId,
};
