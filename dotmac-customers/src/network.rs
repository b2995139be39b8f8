//! A subscriber's network service: its technical profile, its address, and the lifecycle
//! pending → active ⇄ suspended → terminated.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use dotmac_core::{CustomerId, SubscriptionId};
use serde::{Deserialize, Serialize};

use crate::error::{CustomersError, Result};
use crate::fup::{FupCounters, FupPolicy};
use crate::vocab::{Burst, MacAddress, PoolId, Rate, ServiceId};

/// Where the service's IPv4 address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Addressing {
    /// The NAS assigns one (no `Framed-IP-Address` is sent).
    Nas,
    /// The lowest free address of a tenant's pool, assigned when the service is created.
    Pool(PoolId),
    /// A fixed address, reserved for this service.
    Static(Ipv4Addr),
}

/// What the plan promises technically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TechnicalProfile {
    /// The plan's speed.
    pub rate: Rate,
    /// Burst above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Burst>,
    /// A monthly data cap in bytes (enforced by fair-usage rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_cap_bytes: Option<u64>,
    /// Where the address comes from.
    pub addressing: Addressing,
    /// The customer VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The CPE's MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpe_mac: Option<MacAddress>,
    /// The plan's fair-usage policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_usage: Option<FupPolicy>,
}

impl TechnicalProfile {
    /// A profile at `rate` with an address from the NAS and nothing else.
    pub fn new(rate: Rate) -> Self {
        TechnicalProfile {
            rate,
            burst: None,
            data_cap_bytes: None,
            addressing: Addressing::Nas,
            vlan: None,
            cpe_mac: None,
            fair_usage: None,
        }
    }

    /// With a fair-usage policy.
    #[must_use]
    pub fn fair_usage(mut self, policy: FupPolicy) -> Self {
        self.fair_usage = Some(policy);
        self
    }

    /// With an address from `pool`.
    #[must_use]
    pub fn from_pool(mut self, pool: PoolId) -> Self {
        self.addressing = Addressing::Pool(pool);
        self
    }

    /// With a static address.
    #[must_use]
    pub fn static_ip(mut self, address: Ipv4Addr) -> Self {
        self.addressing = Addressing::Static(address);
        self
    }

    /// With burst.
    #[must_use]
    pub fn burst(mut self, burst: Burst) -> Self {
        self.burst = Some(burst);
        self
    }

    /// With a VLAN.
    #[must_use]
    pub fn vlan(mut self, vlan: u16) -> Self {
        self.vlan = Some(vlan);
        self
    }

    /// With the CPE's MAC address.
    #[must_use]
    pub fn cpe_mac(mut self, mac: MacAddress) -> Self {
        self.cpe_mac = Some(mac);
        self
    }

    /// With a data cap.
    #[must_use]
    pub fn data_cap(mut self, bytes: u64) -> Self {
        self.data_cap_bytes = Some(bytes);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.rate.download_kbps() == 0 || self.rate.upload_kbps() == 0 {
            return Err(CustomersError::InvalidInput(
                "a profile's rate must be above zero in both directions".to_owned(),
            ));
        }
        if let Some(policy) = &self.fair_usage {
            policy.validate()?;
        }
        if self.vlan.is_some_and(|v| v == 0 || v > 4094) {
            return Err(CustomersError::InvalidInput(
                "a VLAN id is between 1 and 4094".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Where a service is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Ordered; not on the network yet.
    Pending,
    /// On the network.
    Active,
    /// Refused by the network (or walled off) while at least one reason holds.
    Suspended,
    /// Gone from the network for good; its address is free again.
    Terminated,
}

impl ServiceStatus {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Pending => "pending",
            ServiceStatus::Active => "active",
            ServiceStatus::Suspended => "suspended",
            ServiceStatus::Terminated => "terminated",
        }
    }
}

impl std::fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a service is suspended; it is active again once no reason holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspendReason {
    /// The money loop suspended the subscription (billing's `subscription_suspended`).
    NonPayment,
    /// The operator did.
    Operator,
    /// A fair-usage rule blocked it until its counter resets (or a top-up).
    FairUsage,
}

/// A fair-usage slowdown in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// The rate while it holds.
    pub rate: Rate,
    /// The rule that set it.
    pub rule: String,
}

/// One move of a service's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChange {
    /// Before.
    pub from: ServiceStatus,
    /// After.
    pub to: ServiceStatus,
    /// When.
    pub at: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

/// What a change asks of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvisioningAction {
    /// Put the subscriber on the network.
    Activate,
    /// A new rate, address or burst for a subscriber on the network.
    ChangeProfile,
    /// Refuse (or wall off) the subscriber.
    Suspend,
    /// Let a suspended subscriber back.
    Restore,
    /// Take the subscriber off the network.
    Terminate,
}

impl ProvisioningAction {
    /// The outbox event type of a command with this action.
    pub const fn event_type(self) -> &'static str {
        match self {
            ProvisioningAction::Activate => "provisioning.activate",
            ProvisioningAction::ChangeProfile => "provisioning.change_profile",
            ProvisioningAction::Suspend => "provisioning.suspend",
            ProvisioningAction::Restore => "provisioning.restore",
            ProvisioningAction::Terminate => "provisioning.terminate",
        }
    }
}

/// What a new service is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewService {
    /// The customer.
    pub customer: CustomerId,
    /// The billing subscription it delivers.
    pub subscription: SubscriptionId,
    /// The PPPoE / RADIUS user name (unique per tenant).
    pub username: String,
    /// The RADIUS password (kept as given: CHAP needs the clear text).
    pub password: String,
    /// The plan's technical profile.
    pub profile: TechnicalProfile,
}

/// A subscriber's internet service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkService {
    id: ServiceId,
    customer: CustomerId,
    subscription: SubscriptionId,
    username: String,
    password: String,
    profile: TechnicalProfile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<Ipv4Addr>,
    status: ServiceStatus,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    suspensions: BTreeSet<SuspendReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    throttle: Option<Throttle>,
    #[serde(default)]
    fup_counters: FupCounters,
    /// The position of the last accounting sample counted into the counters
    /// ([`crate::CustomerService::record_accounted_usage`]); 0 before any.
    #[serde(default)]
    accounted_through: u64,
    history: Vec<ServiceChange>,
    version: u64,
}

/// The user names FreeRADIUS and NASes accept without quoting trouble.
fn check_username(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(CustomersError::InvalidInput(format!(
            "user name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ - @"
        )))
    }
}

fn check_password(password: &str) -> Result<()> {
    if password.is_empty() || password.len() > 128 || password.chars().any(char::is_control) {
        return Err(CustomersError::InvalidInput(
            "a password is 1 to 128 characters, none of them control characters".to_owned(),
        ));
    }
    Ok(())
}

impl NetworkService {
    /// A pending service (version 1); `address` is what the pool or the static reservation
    /// gave it.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidInput`] for a bad user name, password or profile.
    pub fn new(id: ServiceId, new: NewService, address: Option<Ipv4Addr>) -> Result<Self> {
        check_username(&new.username)?;
        check_password(&new.password)?;
        new.profile.validate()?;
        Ok(NetworkService {
            id,
            customer: new.customer,
            subscription: new.subscription,
            username: new.username,
            password: new.password,
            profile: new.profile,
            address,
            status: ServiceStatus::Pending,
            suspensions: BTreeSet::new(),
            throttle: None,
            fup_counters: FupCounters::default(),
            accounted_through: 0,
            history: Vec::new(),
            version: 1,
        })
    }

    /// The id.
    pub fn id(&self) -> ServiceId {
        self.id
    }
    /// The customer.
    pub fn customer(&self) -> CustomerId {
        self.customer
    }
    /// The billing subscription.
    pub fn subscription(&self) -> SubscriptionId {
        self.subscription
    }
    /// The RADIUS user name.
    pub fn username(&self) -> &str {
        &self.username
    }
    /// The RADIUS password.
    pub fn password(&self) -> &str {
        &self.password
    }
    /// The plan's technical profile.
    pub fn profile(&self) -> &TechnicalProfile {
        &self.profile
    }
    /// The assigned address.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.address
    }
    /// The lifecycle state.
    pub fn status(&self) -> ServiceStatus {
        self.status
    }
    /// Why it is suspended.
    pub fn suspensions(&self) -> &BTreeSet<SuspendReason> {
        &self.suspensions
    }
    /// A fair-usage slowdown in force.
    pub fn throttle(&self) -> Option<&Throttle> {
        self.throttle.as_ref()
    }
    /// The fair-usage counters.
    pub fn fup_counters(&self) -> &FupCounters {
        &self.fup_counters
    }

    /// The position of the last accounting sample counted into the fair-usage counters (0
    /// before any): a sample at this position or before is already counted.
    pub fn accounted_through(&self) -> u64 {
        self.accounted_through
    }

    /// Records that the samples up to `position` are counted. An earlier or equal position:
    /// no change.
    pub fn set_accounted_through(&mut self, position: u64) -> bool {
        if position <= self.accounted_through {
            return false;
        }
        self.accounted_through = position;
        self.bump();
        true
    }

    /// Replaces the fair-usage counters (after counting usage into them). The same: no change.
    pub fn set_fup_counters(&mut self, counters: FupCounters) -> bool {
        if self.fup_counters == counters {
            return false;
        }
        self.fup_counters = counters;
        self.bump();
        true
    }

    /// When a fair-usage sweep should look at this service again: while a slowdown or a
    /// fair-usage block holds, or a top-up is counted, the earliest end of a period whose
    /// counter holds something (the verdict can change then without new usage). `None` for
    /// a terminated service, one without a policy, and one the policy leaves alone (less
    /// usage never gives a slower verdict, so a counter's reset cannot change it).
    pub fn fair_usage_review_at(&self) -> Option<DateTime<Utc>> {
        if self.status == ServiceStatus::Terminated {
            return None;
        }
        let policy = self.profile.fair_usage.as_ref()?;
        let held = self.throttle.is_some()
            || self.suspensions.contains(&SuspendReason::FairUsage)
            || self.fup_counters.top_up.download > 0;
        if !held {
            return None;
        }
        policy.next_boundary(&self.fup_counters)
    }

    /// Every move so far.
    pub fn history(&self) -> &[ServiceChange] {
        &self.history
    }
    /// Bumped by every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The rate the network should enforce now: the plan's, or a fair-usage slowdown's when
    /// lower.
    pub fn effective_rate(&self) -> Rate {
        match &self.throttle {
            Some(t) => t.rate.min(self.profile.rate),
            None => self.profile.rate,
        }
    }

    fn bump(&mut self) {
        self.version = self.version.saturating_add(1);
    }

    fn move_to(&mut self, to: ServiceStatus, reason: &str, at: DateTime<Utc>) {
        self.history.push(ServiceChange {
            from: self.status,
            to,
            at,
            reason: reason.to_owned(),
        });
        self.status = to;
    }

    fn refuse(&self, to: ServiceStatus) -> CustomersError {
        CustomersError::InvalidTransition {
            what: "service",
            from: self.status.as_str(),
            to: to.as_str(),
        }
    }

    /// Pending → active. Already active: no change (`Ok(None)`).
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidTransition`] from suspended or terminated.
    pub fn activate(&mut self, at: DateTime<Utc>) -> Result<Option<ProvisioningAction>> {
        match self.status {
            ServiceStatus::Active => Ok(None),
            ServiceStatus::Pending => {
                self.move_to(ServiceStatus::Active, "activated", at);
                self.bump();
                Ok(Some(ProvisioningAction::Activate))
            }
            _ => Err(self.refuse(ServiceStatus::Active)),
        }
    }

    /// A new profile (a plan change). The network hears of it at once when active, at the
    /// restore when suspended, at activation when pending. The same profile: no change.
    /// The addressing is kept: a change of pool is a new service.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidTransition`] when terminated, [`CustomersError::InvalidInput`]
    /// for a bad profile or a change of addressing.
    pub fn change_profile(
        &mut self,
        profile: TechnicalProfile,
    ) -> Result<Option<ProvisioningAction>> {
        if self.status == ServiceStatus::Terminated {
            return Err(self.refuse(ServiceStatus::Terminated));
        }
        profile.validate()?;
        if profile.addressing != self.profile.addressing {
            return Err(CustomersError::InvalidInput(
                "a profile change keeps the service's addressing".to_owned(),
            ));
        }
        if profile == self.profile {
            return Ok(None);
        }
        self.profile = profile;
        self.bump();
        Ok((self.status == ServiceStatus::Active).then_some(ProvisioningAction::ChangeProfile))
    }

    /// Adds a reason to be suspended; the first one suspends an active service. A reason
    /// already held: no change (a replayed event).
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidTransition`] when terminated.
    pub fn suspend(
        &mut self,
        reason: SuspendReason,
        at: DateTime<Utc>,
    ) -> Result<Option<ProvisioningAction>> {
        if self.status == ServiceStatus::Terminated {
            return Err(self.refuse(ServiceStatus::Suspended));
        }
        if !self.suspensions.insert(reason) {
            return Ok(None);
        }
        self.bump();
        if self.status == ServiceStatus::Active {
            self.move_to(ServiceStatus::Suspended, suspend_reason_name(reason), at);
            return Ok(Some(ProvisioningAction::Suspend));
        }
        Ok(None)
    }

    /// Takes a reason away; with none left a suspended service is active again. A reason not
    /// held: no change.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidTransition`] when terminated.
    pub fn restore(
        &mut self,
        reason: SuspendReason,
        at: DateTime<Utc>,
    ) -> Result<Option<ProvisioningAction>> {
        if self.status == ServiceStatus::Terminated {
            return Err(self.refuse(ServiceStatus::Active));
        }
        if !self.suspensions.remove(&reason) {
            return Ok(None);
        }
        self.bump();
        if self.suspensions.is_empty() && self.status == ServiceStatus::Suspended {
            self.move_to(ServiceStatus::Active, suspend_reason_name(reason), at);
            return Ok(Some(ProvisioningAction::Restore));
        }
        Ok(None)
    }

    /// Sets or lifts a fair-usage slowdown. The same: no change.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidTransition`] when terminated.
    pub fn set_throttle(
        &mut self,
        throttle: Option<Throttle>,
    ) -> Result<Option<ProvisioningAction>> {
        if self.status == ServiceStatus::Terminated {
            return Err(self.refuse(ServiceStatus::Terminated));
        }
        if self.throttle == throttle {
            return Ok(None);
        }
        self.throttle = throttle;
        self.bump();
        Ok((self.status == ServiceStatus::Active).then_some(ProvisioningAction::ChangeProfile))
    }

    /// Ends the service. Already terminated: no change.
    pub fn terminate(&mut self, reason: &str, at: DateTime<Utc>) -> Option<ProvisioningAction> {
        if self.status == ServiceStatus::Terminated {
            return None;
        }
        let was_on_network = self.status != ServiceStatus::Pending;
        self.move_to(ServiceStatus::Terminated, reason, at);
        self.bump();
        was_on_network.then_some(ProvisioningAction::Terminate)
    }
}

fn suspend_reason_name(reason: SuspendReason) -> &'static str {
    match reason {
        SuspendReason::NonPayment => "non_payment",
        SuspendReason::Operator => "operator",
        SuspendReason::FairUsage => "fair_usage",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn service() -> NetworkService {
        NetworkService::new(
            ServiceId::from_u128(1),
            NewService {
                customer: CustomerId::from_u128(2),
                subscription: SubscriptionId::from_u128(3),
                username: "ada@isp".into(),
                password: "pw".into(),
                profile: TechnicalProfile::new(Rate::mbps(50, 10)),
            },
            None,
        )
        .unwrap()
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn suspension_reasons_stack_and_a_replay_changes_nothing() {
        let mut s = service();
        assert_eq!(s.activate(at()), Ok(Some(ProvisioningAction::Activate)));
        assert_eq!(s.activate(at()), Ok(None));
        assert_eq!(
            s.suspend(SuspendReason::NonPayment, at()),
            Ok(Some(ProvisioningAction::Suspend))
        );
        let v = s.version();
        assert_eq!(s.suspend(SuspendReason::NonPayment, at()), Ok(None));
        assert_eq!(s.version(), v, "a replayed suspension changes nothing");
        assert_eq!(s.suspend(SuspendReason::Operator, at()), Ok(None));
        assert_eq!(s.restore(SuspendReason::NonPayment, at()), Ok(None));
        assert_eq!(s.status(), ServiceStatus::Suspended);
        assert_eq!(
            s.restore(SuspendReason::Operator, at()),
            Ok(Some(ProvisioningAction::Restore))
        );
        assert_eq!(s.status(), ServiceStatus::Active);
        assert_eq!(s.restore(SuspendReason::Operator, at()), Ok(None));
    }

    #[test]
    fn a_throttle_lowers_the_effective_rate_and_never_raises_it() {
        let mut s = service();
        s.activate(at()).unwrap();
        let slow = Throttle {
            rate: Rate::mbps(5, 1),
            rule: "month".into(),
        };
        assert_eq!(
            s.set_throttle(Some(slow.clone())),
            Ok(Some(ProvisioningAction::ChangeProfile))
        );
        assert_eq!(s.effective_rate(), Rate::mbps(5, 1));
        assert_eq!(s.set_throttle(Some(slow)), Ok(None));
        s.set_throttle(Some(Throttle {
            rate: Rate::mbps(500, 500),
            rule: "x".into(),
        }))
        .unwrap();
        assert_eq!(s.effective_rate(), Rate::mbps(50, 10));
    }

    #[test]
    fn a_terminated_service_refuses_everything_but_termination() {
        let mut s = service();
        assert_eq!(s.terminate("cancelled", at()), None, "never on the network");
        let before = s.clone();
        assert_eq!(
            s.activate(at()),
            Err(CustomersError::InvalidTransition {
                what: "service",
                from: "terminated",
                to: "active"
            })
        );
        assert!(s.suspend(SuspendReason::Operator, at()).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn bad_credentials_and_profiles_are_refused() {
        let mut new = NewService {
            customer: CustomerId::from_u128(2),
            subscription: SubscriptionId::from_u128(3),
            username: "a b".into(),
            password: "pw".into(),
            profile: TechnicalProfile::new(Rate::mbps(50, 10)),
        };
        assert!(matches!(
            NetworkService::new(ServiceId::new(), new.clone(), None),
            Err(CustomersError::InvalidInput(m)) if m.contains("user name")
        ));
        new.username = "ok".into();
        new.profile = TechnicalProfile::new(Rate::new(0, 1));
        assert!(NetworkService::new(ServiceId::new(), new.clone(), None).is_err());
        new.profile = TechnicalProfile::new(Rate::new(1, 1)).vlan(4095);
        assert!(NetworkService::new(ServiceId::new(), new, None).is_err());
    }
}
