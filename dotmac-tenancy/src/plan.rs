//! Tenant plans: quotas, feature entitlements and a layer of settings, as data an operator can
//! change. [`PlanCatalog::platform_tiers`] is the platform's starter / professional /
//! enterprise table (`data/platform_tiers.json`, where `-1` would mean unlimited).
//!
//! A tenant keeps a copy of its plan as assigned ([`Tenant::plan`](crate::Tenant::plan)): a
//! changed catalogue applies to the tenants it is assigned to next (assign it again to move a
//! tenant onto the new terms), never behind their backs, and a quota check reads the limit from
//! the tenant's own row in the same transaction as the count.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::TenancyError;
use crate::settings::SettingsLayer;
use crate::vocab::{Feature, PlanCode, Quota, label};

/// A quota's limit. In data (JSON, SQL) it is an integer, `-1` meaning unlimited; in the API it
/// is this enum, so that "unlimited" is never a number someone can add to.
///
/// ```
/// use dotmac_tenancy::Limit;
/// assert!(Limit::AtMost(100).allows(99, 1));
/// assert!(!Limit::AtMost(100).allows(100, 1));
/// assert!(Limit::Unlimited.allows(u64::MAX, 1));
/// assert_eq!(serde_json::to_string(&Limit::Unlimited).unwrap(), "-1");
/// assert_eq!(serde_json::from_str::<Limit>("250").unwrap(), Limit::AtMost(250));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// No limit.
    Unlimited,
    /// At most this many.
    AtMost(u64),
}

impl Limit {
    /// Whether `more` fit on top of `used`.
    pub fn allows(self, used: u64, more: u64) -> bool {
        match self {
            Limit::Unlimited => true,
            Limit::AtMost(limit) => used.checked_add(more).is_some_and(|total| total <= limit),
        }
    }

    /// What is left after `used` (none when over the limit).
    pub fn remaining(self, used: u64) -> Limit {
        match self {
            Limit::Unlimited => Limit::Unlimited,
            Limit::AtMost(limit) => Limit::AtMost(limit.saturating_sub(used)),
        }
    }

    /// The limit as data: `-1` for unlimited.
    pub fn to_data(self) -> i64 {
        match self {
            Limit::Unlimited => -1,
            Limit::AtMost(limit) => i64::try_from(limit).unwrap_or(i64::MAX),
        }
    }

    /// The limit of a data value.
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidPlan`] for a negative value other than `-1`.
    pub fn from_data(value: i64) -> Result<Limit, TenancyError> {
        match value {
            -1 => Ok(Limit::Unlimited),
            v => u64::try_from(v)
                .map(Limit::AtMost)
                .map_err(|_| TenancyError::InvalidPlan {
                    plan: String::new(),
                    reason: format!("limit {v}: expected -1 (unlimited) or a count of 0 or more"),
                }),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::AtMost(limit) => write!(f, "{limit}"),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Unlimited => serializer.serialize_i64(-1),
            Limit::AtMost(limit) => serializer.serialize_u64(*limit),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Signed(i64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(limit) => Ok(Limit::AtMost(limit)),
            Raw::Signed(value) => Limit::from_data(value).map_err(serde::de::Error::custom),
        }
    }
}

/// A plan's quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Quotas {
    /// Customers.
    pub customers: Limit,
    /// Active admin users.
    pub admin_users: Limit,
    /// API calls per clock hour.
    pub api_calls_per_hour: Limit,
}

impl Quotas {
    /// Every quota unlimited.
    pub const UNLIMITED: Quotas = Quotas {
        customers: Limit::Unlimited,
        admin_users: Limit::Unlimited,
        api_calls_per_hour: Limit::Unlimited,
    };

    /// Every quota zero: nothing until the plan says so.
    pub const NONE: Quotas = Quotas {
        customers: Limit::AtMost(0),
        admin_users: Limit::AtMost(0),
        api_calls_per_hour: Limit::AtMost(0),
    };

    /// The limit of `quota`.
    pub fn limit(&self, quota: Quota) -> Limit {
        match quota {
            Quota::Customers => self.customers,
            Quota::AdminUsers => self.admin_users,
            Quota::ApiCallsPerHour => self.api_calls_per_hour,
        }
    }

    /// With `quota` limited to `limit`.
    #[must_use]
    pub fn with(mut self, quota: Quota, limit: Limit) -> Self {
        match quota {
            Quota::Customers => self.customers = limit,
            Quota::AdminUsers => self.admin_users = limit,
            Quota::ApiCallsPerHour => self.api_calls_per_hour = limit,
        }
        self
    }
}

/// A tenant plan: what a tenant may use and how much, and the settings it brings (the layer
/// between the platform's defaults and the tenant's own, see [`resolve`](crate::resolve)).
/// Built with [`TenantPlan::builder`], or read from JSON (checked the same way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPlan")]
pub struct TenantPlan {
    code: PlanCode,
    name: String,
    quotas: Quotas,
    entitlements: BTreeSet<Feature>,
    #[serde(skip_serializing_if = "is_empty_layer")]
    settings: SettingsLayer,
}

fn is_empty_layer(layer: &SettingsLayer) -> bool {
    *layer == SettingsLayer::default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    code: PlanCode,
    name: String,
    quotas: Quotas,
    #[serde(default)]
    entitlements: BTreeSet<Feature>,
    #[serde(default)]
    settings: SettingsLayer,
}

impl TryFrom<RawPlan> for TenantPlan {
    type Error = TenancyError;
    fn try_from(raw: RawPlan) -> Result<Self, Self::Error> {
        let mut builder = TenantPlan::builder(raw.code, raw.name)
            .quotas(raw.quotas)
            .settings(raw.settings);
        for feature in raw.entitlements {
            builder = builder.entitle(feature);
        }
        builder.build()
    }
}

impl TenantPlan {
    /// A builder of the plan `code` named `name`, with every quota zero and no entitlement:
    /// a plan grants what it says and nothing else.
    pub fn builder(code: PlanCode, name: impl Into<String>) -> TenantPlanBuilder {
        TenantPlanBuilder {
            plan: TenantPlan {
                code,
                name: name.into(),
                quotas: Quotas::NONE,
                entitlements: BTreeSet::new(),
                settings: SettingsLayer::default(),
            },
        }
    }

    /// The code.
    pub fn code(&self) -> &PlanCode {
        &self.code
    }

    /// The name people read.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The quotas.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// The features it entitles a tenant to.
    pub fn entitlements(&self) -> &BTreeSet<Feature> {
        &self.entitlements
    }

    /// Whether it entitles a tenant to `feature`.
    pub fn entitles(&self, feature: &Feature) -> bool {
        self.entitlements.contains(feature)
    }

    /// The settings it brings.
    pub fn settings(&self) -> &SettingsLayer {
        &self.settings
    }
}

/// Builds a [`TenantPlan`]; [`TenantPlanBuilder::build`] checks it.
#[derive(Debug, Clone)]
#[must_use]
pub struct TenantPlanBuilder {
    plan: TenantPlan,
}

impl TenantPlanBuilder {
    /// With every quota.
    pub fn quotas(mut self, quotas: Quotas) -> Self {
        self.plan.quotas = quotas;
        self
    }

    /// With `quota` limited to `limit`.
    pub fn quota(mut self, quota: Quota, limit: Limit) -> Self {
        self.plan.quotas = self.plan.quotas.with(quota, limit);
        self
    }

    /// Entitling its tenants to `feature`.
    pub fn entitle(mut self, feature: Feature) -> Self {
        self.plan.entitlements.insert(feature);
        self
    }

    /// With the settings it brings.
    pub fn settings(mut self, settings: SettingsLayer) -> Self {
        self.plan.settings = settings;
        self
    }

    /// The plan.
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidName`] for a blank, overlong (256 bytes) or control-character
    /// name.
    pub fn build(self) -> Result<TenantPlan, TenancyError> {
        label("plan name", &self.plan.name, 256)?;
        Ok(self.plan)
    }
}

/// The platform's tiers, as data: `-1` in a quota means unlimited.
const PLATFORM_TIERS: &str = include_str!("../data/platform_tiers.json");

/// The plans a platform offers, in the order it lists them (smallest first).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanCatalog {
    plans: Vec<TenantPlan>,
}

impl PlanCatalog {
    /// An empty catalogue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The platform's tiers (`data/platform_tiers.json`):
    ///
    /// | plan         | customers | admin users | API calls / hour | features |
    /// |--------------|----------:|------------:|-----------------:|----------|
    /// | starter      |       100 |           2 |            1,000 | billing, usage, collections, support |
    /// | professional |     1,000 |          10 |           10,000 | the starter's, support SLAs, partners |
    /// | enterprise   |    10,000 |          50 |          100,000 | the professional's, scale-out bill runs |
    ///
    /// ```
    /// use dotmac_tenancy::{Limit, PlanCatalog, PlanCode};
    /// let tiers = PlanCatalog::platform_tiers()?;
    /// let pro = tiers.get(&PlanCode::PROFESSIONAL).unwrap();
    /// assert_eq!(pro.quotas().customers, Limit::AtMost(1_000));
    /// # Ok::<(), dotmac_tenancy::TenancyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Never for the data shipped with the crate (a test reads it); the error of
    /// [`PlanCatalog::from_json`] otherwise.
    pub fn platform_tiers() -> Result<PlanCatalog, TenancyError> {
        PlanCatalog::from_json(PLATFORM_TIERS)
    }

    /// A catalogue from a JSON list of plans.
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidPlan`] for JSON that is not a list of valid plans, or that lists
    /// a code twice.
    pub fn from_json(json: &str) -> Result<PlanCatalog, TenancyError> {
        let plans: Vec<TenantPlan> =
            serde_json::from_str(json).map_err(|e| TenancyError::InvalidPlan {
                plan: "catalogue".into(),
                reason: e.to_string(),
            })?;
        let mut catalog = PlanCatalog::new();
        for plan in plans {
            if catalog.get(plan.code()).is_some() {
                return Err(TenancyError::InvalidPlan {
                    plan: plan.code().to_string(),
                    reason: "listed twice".into(),
                });
            }
            catalog.insert(plan);
        }
        Ok(catalog)
    }

    /// The plan `code`.
    pub fn get(&self, code: &PlanCode) -> Option<&TenantPlan> {
        self.plans.iter().find(|p| p.code() == code)
    }

    /// Adds `plan`, or replaces the plan with its code (keeping its place); returns the plan
    /// replaced.
    pub fn insert(&mut self, plan: TenantPlan) -> Option<TenantPlan> {
        match self.plans.iter_mut().find(|p| p.code() == plan.code()) {
            Some(existing) => Some(std::mem::replace(existing, plan)),
            None => {
                self.plans.push(plan);
                None
            }
        }
    }

    /// The plans, in order.
    pub fn plans(&self) -> impl Iterator<Item = &TenantPlan> {
        self.plans.iter()
    }

    /// The first plan (in catalogue order) whose `quota` admits `count`.
    pub fn smallest_for(&self, quota: Quota, count: u64) -> Option<&TenantPlan> {
        self.plans
            .iter()
            .find(|p| p.quotas().limit(quota).allows(0, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_tiers_are_the_published_table() {
        let tiers = PlanCatalog::platform_tiers().unwrap();
        let table: Vec<(String, i64, i64, i64)> = tiers
            .plans()
            .map(|p| {
                (
                    p.code().to_string(),
                    p.quotas().customers.to_data(),
                    p.quotas().admin_users.to_data(),
                    p.quotas().api_calls_per_hour.to_data(),
                )
            })
            .collect();
        assert_eq!(
            table,
            vec![
                ("starter".into(), 100, 2, 1_000),
                ("professional".into(), 1_000, 10, 10_000),
                ("enterprise".into(), 10_000, 50, 100_000),
            ]
        );
        let enterprise = tiers.get(&PlanCode::ENTERPRISE).unwrap();
        assert!(enterprise.entitles(&Feature::SCALE_OUT_BILL_RUNS));
        assert!(
            !tiers
                .get(&PlanCode::STARTER)
                .unwrap()
                .entitles(&Feature::PARTNERS)
        );
        assert_eq!(
            tiers
                .smallest_for(Quota::Customers, 101)
                .map(TenantPlan::code),
            Some(&PlanCode::PROFESSIONAL)
        );
        assert_eq!(tiers.smallest_for(Quota::Customers, 10_001), None);
    }

    #[test]
    fn minus_one_is_unlimited_in_data_and_other_negatives_are_refused() {
        let json = r#"[{"code":"unmetered","name":"Unmetered",
            "quotas":{"customers":-1,"admin_users":-1,"api_calls_per_hour":5}}]"#;
        let catalog = PlanCatalog::from_json(json).unwrap();
        let plan = catalog.get(&PlanCode::new("unmetered").unwrap()).unwrap();
        assert_eq!(plan.quotas().customers, Limit::Unlimited);
        assert_eq!(plan.quotas().api_calls_per_hour, Limit::AtMost(5));
        assert!(plan.entitlements().is_empty());
        let round = serde_json::to_string(plan).unwrap();
        assert!(round.contains(r#""customers":-1"#), "{round}");

        let bad = json.replace("-1,\"admin", "-2,\"admin");
        let err = PlanCatalog::from_json(&bad).unwrap_err();
        assert_eq!(err.kind(), "invalid_plan");
        assert!(err.to_string().contains("limit -2"), "{err}");
    }

    #[test]
    fn a_catalogue_refuses_a_code_twice_and_a_blank_name() {
        let one = r#"{"code":"a","name":"A","quotas":{"customers":1,"admin_users":1,"api_calls_per_hour":1}}"#;
        let err = PlanCatalog::from_json(&format!("[{one},{one}]")).unwrap_err();
        assert_eq!(
            err,
            TenancyError::InvalidPlan {
                plan: "a".into(),
                reason: "listed twice".into()
            }
        );
        let blank = TenantPlan::builder(PlanCode::STARTER, " ").build();
        assert!(matches!(blank, Err(TenancyError::InvalidName(_))));
    }

    #[test]
    fn limits_never_overflow() {
        assert!(!Limit::AtMost(u64::MAX).allows(u64::MAX, 1));
        assert_eq!(Limit::AtMost(3).remaining(5), Limit::AtMost(0));
        assert_eq!(Limit::AtMost(u64::MAX).to_data(), i64::MAX);
    }
}
