//! The small shared vocabulary: ids, the tenant statuses, the names of quotas, features,
//! permissions and roles, and where a setting came from. Every other module and the error type
//! name these, so they live in a leaf that imports nothing from the crate; this keeps the
//! module graph acyclic (see the module map in `lib.rs`). Names are checked here with
//! [`InvalidName`], which the crate's error wraps.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use dotmac_core::{CustomerId, define_id};
use serde::{Deserialize, Serialize};

define_id! {
    /// A user of a tenant: a member of the ISP operator's staff (an admin user).
    UserId
}
define_id! {
    /// The idempotency key of one platform usage record ([`UsageRecord`](crate::UsageRecord)):
    /// a record written twice under one id counts once. Derive it from the fact it counts (an
    /// event id, a batch id) with [`IdDigest`](dotmac_core::IdDigest).
    UsageRecordId
}

/// A name that was refused: what it names, the value (its first 64 characters) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidName {
    /// What the name names (`plan code`, `role name`, `locale`, …).
    pub what: &'static str,
    /// The value given, cut to 64 characters.
    pub value: String,
    /// Why it is refused.
    pub reason: &'static str,
}

impl InvalidName {
    pub(crate) fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        InvalidName {
            what,
            value: value.chars().take(64).collect(),
            reason,
        }
    }
}

/// Checks a machine name: 1 to `max` bytes of lower-case ASCII letters, digits and `_`,
/// starting with a letter.
fn machine_name(what: &'static str, value: &str, max: usize) -> Result<(), InvalidName> {
    let mut chars = value.chars();
    if value.is_empty() || value.len() > max {
        return Err(InvalidName::new(
            what,
            value,
            "expected 1 to 64 characters of a-z, 0-9 and _",
        ));
    }
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(InvalidName::new(
            what,
            value,
            "expected a lower-case letter, then a-z, 0-9 and _ only",
        ));
    }
    Ok(())
}

/// Checks a label people read (a tenant's or a user's name): 1 to `max` bytes, no control
/// characters, not blank.
pub(crate) fn label(what: &'static str, value: &str, max: usize) -> Result<(), InvalidName> {
    if value.trim().is_empty() {
        return Err(InvalidName::new(what, value, "it is empty"));
    }
    if value.len() > max {
        return Err(InvalidName::new(what, value, "it is too long"));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidName::new(
            what,
            value,
            "it contains a control character",
        ));
    }
    Ok(())
}

/// Where a tenant is in its life.
///
/// ```text
/// requested ──► provisioning ──► active ◄──► suspended ──► archived
/// ```
///
/// Every other move is refused ([`TenancyError::InvalidTransition`](crate::TenancyError)).
/// What each status allows is [`TenantStatus::permits`]: an archived tenant is read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TenantStatus {
    /// Asked for (sign-up, a sales order); nothing runs for it yet.
    Requested,
    /// Being set up by the platform: settings, users, an initial import of customers.
    Provisioning,
    /// Running.
    Active,
    /// Stopped by the platform (its own bills unpaid, abuse): its data stays, its users can
    /// still sign in and fix settings, but it admits no new customers and serves no API calls.
    Suspended,
    /// Gone for good: its data stays readable for export, and nothing new can be written.
    Archived,
}

impl TenantStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TenantStatus; 5] = [
        TenantStatus::Requested,
        TenantStatus::Provisioning,
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::Archived,
    ];

    /// The stored name (`"active"`).
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Requested => "requested",
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Archived => "archived",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<TenantStatus> {
        TenantStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True when `self → to` is a step of the lifecycle (see the diagram on the type).
    pub fn can_become(self, to: TenantStatus) -> bool {
        use TenantStatus::{Active, Archived, Provisioning, Requested, Suspended};
        matches!(
            (self, to),
            (Requested, Provisioning)
                | (Provisioning, Active)
                | (Active, Suspended)
                | (Suspended, Active)
                | (Suspended, Archived)
        )
    }

    /// Whether a tenant in this status may do `operation`:
    ///
    /// | status       | configure | admit customers | serve API calls |
    /// |--------------|-----------|-----------------|-----------------|
    /// | requested    | yes       | no              | no              |
    /// | provisioning | yes       | yes (imports)   | no              |
    /// | active       | yes       | yes             | yes             |
    /// | suspended    | yes       | no              | no              |
    /// | archived     | no        | no              | no              |
    ///
    /// Configuring covers settings, plans, users and roles. Reading is always allowed.
    pub fn permits(self, operation: Operation) -> bool {
        use TenantStatus::{Active, Archived, Provisioning};
        match operation {
            Operation::Record => true,
            Operation::Configure => self != Archived,
            Operation::AdmitCustomers => matches!(self, Provisioning | Active),
            Operation::ServeApi => self == Active,
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a write does, for [`TenantStatus::permits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// Change settings, the plan, users or roles.
    Configure,
    /// Count new customers against the quota.
    AdmitCustomers,
    /// Count API calls against the hourly quota.
    ServeApi,
    /// Record the platform's measurement of the tenant (invoices issued, events ingested):
    /// what the tenant did is counted whatever its status now.
    Record,
}

impl Operation {
    /// The stable name (`"admit_customers"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Configure => "configure",
            Operation::AdmitCustomers => "admit_customers",
            Operation::ServeApi => "serve_api",
            Operation::Record => "record",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who did something to a tenant: recorded in its history and in its events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
#[non_exhaustive]
pub enum Actor {
    /// The platform's operator (a person or a process of the company running DotMac), by the
    /// name the embedder's identity provider gives it.
    Platform(String),
    /// One of the tenant's own users.
    User(UserId),
    /// DotMac itself (the registry, a migration).
    System,
}

impl Actor {
    /// The platform operator `name`.
    pub fn platform(name: impl Into<String>) -> Self {
        Actor::Platform(name.into())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Platform(name) => write!(f, "platform:{name}"),
            Actor::User(user) => write!(f, "user:{user}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// The code of a tenant plan (`"starter"`): a lower-case machine name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PlanCode(Cow<'static, str>);

impl PlanCode {
    /// The platform's starter tier.
    pub const STARTER: PlanCode = PlanCode(Cow::Borrowed("starter"));
    /// The platform's professional tier.
    pub const PROFESSIONAL: PlanCode = PlanCode(Cow::Borrowed("professional"));
    /// The platform's enterprise tier.
    pub const ENTERPRISE: PlanCode = PlanCode(Cow::Borrowed("enterprise"));

    /// A plan code: 1 to 64 characters of `a-z`, `0-9` and `_`, starting with a letter.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] otherwise.
    pub fn new(code: &str) -> Result<Self, InvalidName> {
        machine_name("plan code", code, 64)?;
        Ok(PlanCode(Cow::Owned(code.to_owned())))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PlanCode {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlanCode::new(s)
    }
}

impl<'de> Deserialize<'de> for PlanCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PlanCode::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A feature a plan entitles its tenants to (`"partners"`): which domains and features a
/// tenant may use. The platform's own features are constants; an operator may name more.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Feature(Cow<'static, str>);

impl Feature {
    /// Catalogue, subscriptions, invoices and bill runs.
    pub const BILLING: Feature = Feature(Cow::Borrowed("billing"));
    /// Metering, usage rating and RADIUS accounting.
    pub const USAGE: Feature = Feature(Cow::Borrowed("usage"));
    /// Payments, dunning and receivables.
    pub const COLLECTIONS: Feature = Feature(Cow::Borrowed("collections"));
    /// Support tickets.
    pub const SUPPORT: Feature = Feature(Cow::Borrowed("support"));
    /// SLA clocks on business calendars, escalation.
    pub const SUPPORT_SLAS: Feature = Feature(Cow::Borrowed("support_slas"));
    /// Partner and referral commissions.
    pub const PARTNERS: Feature = Feature(Cow::Borrowed("partners"));
    /// Bill runs split into chunks across many workers.
    pub const SCALE_OUT_BILL_RUNS: Feature = Feature(Cow::Borrowed("scale_out_bill_runs"));

    /// A feature name: 1 to 64 characters of `a-z`, `0-9` and `_`, starting with a letter.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] otherwise.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        machine_name("feature", name, 64)?;
        Ok(Feature(Cow::Owned(name.to_owned())))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Feature {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Feature::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A quota of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Quota {
    /// Customers (billing accounts) the tenant has.
    Customers,
    /// The tenant's own active users.
    AdminUsers,
    /// API calls the tenant makes per clock hour (UTC).
    ApiCallsPerHour,
}

impl Quota {
    /// Every quota.
    pub const ALL: [Quota; 3] = [Quota::Customers, Quota::AdminUsers, Quota::ApiCallsPerHour];

    /// The stored name (`"customers"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Customers => "customers",
            Quota::AdminUsers => "admin_users",
            Quota::ApiCallsPerHour => "api_calls_per_hour",
        }
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a permission reads or changes something: an archived tenant grants reads only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Looks, changes nothing.
    Read,
    /// Changes something.
    Write,
}

macro_rules! permissions {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $access:ident; )*) => {
        /// Something a tenant user may be allowed to do. Roles grant sets of them; a user may
        /// do what one of their roles grants, and nothing else ([`authorize`](crate::authorize)).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum Permission {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
        }

        impl Permission {
            /// Every permission.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),*];

            /// The stable name (`"billing.manage"`).
            pub fn as_str(self) -> &'static str {
                match self { $(Permission::$variant => $name,)* }
            }

            /// Whether it reads or writes.
            pub fn access(self) -> Access {
                match self { $(Permission::$variant => Access::$access,)* }
            }

            /// The permission of a stable name.
            pub fn parse(name: &str) -> Option<Permission> {
                match name { $($name => Some(Permission::$variant),)* _ => None }
            }
        }
    };
}

permissions! {
    /// See the tenant's status, plan, quotas and platform usage.
    TenantRead = "tenant.read", Read;
    /// Change the tenant's plan, ask for its suspension or archival: the owner's business.
    TenantManage = "tenant.manage", Write;
    /// See the settings.
    SettingsRead = "settings.read", Read;
    /// Change the settings.
    SettingsManage = "settings.manage", Write;
    /// See users and roles.
    UsersRead = "users.read", Read;
    /// Add, change and disable users; define roles.
    UsersManage = "users.manage", Write;
    /// See customers.
    CustomersRead = "customers.read", Read;
    /// Create and change customers.
    CustomersManage = "customers.manage", Write;
    /// See the catalogue, subscriptions and invoices.
    BillingRead = "billing.read", Read;
    /// Change the catalogue and subscriptions, run bills, issue credit notes.
    BillingManage = "billing.manage", Write;
    /// See payments and ledgers.
    PaymentsRead = "payments.read", Read;
    /// Record payments and refunds.
    PaymentsManage = "payments.manage", Write;
    /// Run dunning, write off.
    CollectionsManage = "collections.manage", Write;
    /// See usage.
    UsageRead = "usage.read", Read;
    /// Ingest and correct usage.
    UsageManage = "usage.manage", Write;
    /// See tickets.
    SupportRead = "support.read", Read;
    /// Work tickets.
    SupportManage = "support.manage", Write;
    /// See reports and analytics (MRR, ageing).
    ReportsRead = "reports.read", Read;
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a role (`"billing"`): built in ([`RoleName::OWNER`], …) or defined by the
/// tenant from permissions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoleName(Cow<'static, str>);

impl RoleName {
    /// Every permission; the tenant's owner.
    pub const OWNER: RoleName = RoleName(Cow::Borrowed("owner"));
    /// Everything but the tenant's own plan and lifecycle.
    pub const ADMIN: RoleName = RoleName(Cow::Borrowed("admin"));
    /// Customers, billing, payments and collections.
    pub const BILLING: RoleName = RoleName(Cow::Borrowed("billing"));
    /// Tickets, and a look at customers, billing and usage.
    pub const SUPPORT_AGENT: RoleName = RoleName(Cow::Borrowed("support_agent"));
    /// Every read permission.
    pub const READ_ONLY: RoleName = RoleName(Cow::Borrowed("read_only"));

    /// The built-in roles.
    pub const BUILT_IN: [RoleName; 5] = [
        RoleName::OWNER,
        RoleName::ADMIN,
        RoleName::BILLING,
        RoleName::SUPPORT_AGENT,
        RoleName::READ_ONLY,
    ];

    /// A role name: 1 to 64 characters of `a-z`, `0-9` and `_`, starting with a letter.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] otherwise.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        machine_name("role name", name, 64)?;
        Ok(RoleName(Cow::Owned(name.to_owned())))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the built-in roles' names.
    pub fn is_built_in(&self) -> bool {
        RoleName::BUILT_IN.iter().any(|r| r == self)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        RoleName::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A setting of [`Settings`](crate::Settings), for asking where its value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SettingKey {
    /// The currency.
    Currency,
    /// The time zone.
    TimeZone,
    /// The locale.
    Locale,
    /// The rounding mode.
    RoundingMode,
    /// The payment terms.
    PaymentTerms,
    /// The invoice number format.
    InvoiceNumberFormat,
    /// The credit-note number format.
    CreditNoteNumberFormat,
    /// The tax rates.
    TaxRates,
    /// The dunning policy.
    DunningPolicy,
    /// The suspension-billing policy.
    SuspensionBilling,
    /// The SLA calendar.
    SlaCalendar,
}

impl SettingKey {
    /// Every setting.
    pub const ALL: [SettingKey; 11] = [
        SettingKey::Currency,
        SettingKey::TimeZone,
        SettingKey::Locale,
        SettingKey::RoundingMode,
        SettingKey::PaymentTerms,
        SettingKey::InvoiceNumberFormat,
        SettingKey::CreditNoteNumberFormat,
        SettingKey::TaxRates,
        SettingKey::DunningPolicy,
        SettingKey::SuspensionBilling,
        SettingKey::SlaCalendar,
    ];

    /// The stable name (`"payment_terms"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SettingKey::Currency => "currency",
            SettingKey::TimeZone => "time_zone",
            SettingKey::Locale => "locale",
            SettingKey::RoundingMode => "rounding_mode",
            SettingKey::PaymentTerms => "payment_terms",
            SettingKey::InvoiceNumberFormat => "invoice_number_format",
            SettingKey::CreditNoteNumberFormat => "credit_note_number_format",
            SettingKey::TaxRates => "tax_rates",
            SettingKey::DunningPolicy => "dunning_policy",
            SettingKey::SuspensionBilling => "suspension_billing",
            SettingKey::SlaCalendar => "sla_calendar",
        }
    }

    /// True for the settings a customer may have their own value of (currency, time zone,
    /// locale, payment terms, tax rates, dunning policy); the others are the tenant's alone.
    pub fn per_customer(self) -> bool {
        matches!(
            self,
            SettingKey::Currency
                | SettingKey::TimeZone
                | SettingKey::Locale
                | SettingKey::PaymentTerms
                | SettingKey::TaxRates
                | SettingKey::DunningPolicy
        )
    }
}

impl fmt::Display for SettingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which layer a resolved setting's value came from: the most specific layer that sets it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "layer", content = "id")]
#[non_exhaustive]
pub enum SettingSource {
    /// The platform's defaults (nothing more specific sets it).
    Platform,
    /// The tenant's plan.
    Plan(PlanCode),
    /// The tenant's own settings.
    Tenant,
    /// The customer's own settings.
    Customer(CustomerId),
}

impl fmt::Display for SettingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingSource::Platform => f.write_str("platform default"),
            SettingSource::Plan(plan) => write!(f, "plan {plan}"),
            SettingSource::Tenant => f.write_str("tenant setting"),
            SettingSource::Customer(customer) => write!(f, "customer {customer}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_allows_exactly_its_five_steps() {
        let allowed: Vec<(TenantStatus, TenantStatus)> = TenantStatus::ALL
            .into_iter()
            .flat_map(|from| TenantStatus::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.can_become(*to))
            .collect();
        use TenantStatus::*;
        assert_eq!(
            allowed,
            vec![
                (Requested, Provisioning),
                (Provisioning, Active),
                (Active, Suspended),
                (Suspended, Active),
                (Suspended, Archived),
            ]
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(PlanCode::new("starter_2026").is_ok());
        assert_eq!(
            PlanCode::new("Starter").unwrap_err().reason,
            "expected a lower-case letter, then a-z, 0-9 and _ only"
        );
        assert!(PlanCode::new("").is_err());
        assert!(RoleName::new(&"a".repeat(65)).is_err());
        assert!(RoleName::new("noc_lead").is_ok());
        assert!(RoleName::OWNER.is_built_in());
        assert!(!RoleName::new("noc_lead").unwrap().is_built_in());
        let bad: Result<PlanCode, _> = serde_json::from_str("\"9lives\"");
        assert!(bad.is_err());
    }

    #[test]
    fn permissions_round_trip_by_name() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
            let json = serde_json::to_string(p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(Permission::parse("billing.everything"), None);
    }

    #[test]
    fn status_names_round_trip() {
        for s in TenantStatus::ALL {
            assert_eq!(TenantStatus::parse(s.as_str()), Some(s));
        }
    }
}
