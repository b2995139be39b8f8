//! Customer records and their lifecycle: lead → onboarding → active ⇄ suspended → terminated,
//! churned, won back; the onboarding checklist.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use dotmac_core::CustomerId;
use serde::{Deserialize, Serialize};

use crate::error::{CustomersError, Result};

/// A person or a business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CustomerKind {
    /// A household.
    Person {
        /// Given name.
        first_name: String,
        /// Family name.
        last_name: String,
    },
    /// A company.
    Business {
        /// The registered name.
        legal_name: String,
        /// A tax or company registration number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tax_id: Option<String>,
    },
}

impl CustomerKind {
    /// The name to show.
    pub fn display_name(&self) -> String {
        match self {
            CustomerKind::Person {
                first_name,
                last_name,
            } => format!("{first_name} {last_name}"),
            CustomerKind::Business { legal_name, .. } => legal_name.clone(),
        }
    }
}

/// How to reach a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactChannel {
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
}

/// A contact of the customer (the account holder, a billing or technical contact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// What the contact is for (`primary`, `billing`, `technical`, …).
    pub role: String,
    /// How to reach it.
    pub channel: ContactChannel,
    /// The address or number.
    pub value: String,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Address {
    /// Street lines.
    pub lines: Vec<String>,
    /// City or town.
    pub city: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
}

/// Where a customer is in its lifecycle.
///
/// ```text
/// lead ──► onboarding ──► active ⇄ suspended
///   │          │            │         │
///   └──────────┴──► churned ◄── terminated ◄┘
///                      │
///                      └──► onboarding (won back)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerStatus {
    /// Interested, not signed.
    Lead,
    /// Signed; being installed.
    Onboarding,
    /// Served.
    Active,
    /// Served no more for now (non-payment, the operator's decision).
    Suspended,
    /// The contract ended.
    Terminated,
    /// Gone: a lead lost, an onboarding abandoned, a terminated customer archived.
    Churned,
}

impl CustomerStatus {
    /// Every status.
    pub const ALL: [CustomerStatus; 6] = [
        CustomerStatus::Lead,
        CustomerStatus::Onboarding,
        CustomerStatus::Active,
        CustomerStatus::Suspended,
        CustomerStatus::Terminated,
        CustomerStatus::Churned,
    ];

    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::Lead => "lead",
            CustomerStatus::Onboarding => "onboarding",
            CustomerStatus::Active => "active",
            CustomerStatus::Suspended => "suspended",
            CustomerStatus::Terminated => "terminated",
            CustomerStatus::Churned => "churned",
        }
    }

    /// Whether the lifecycle allows a move to `to`.
    pub const fn can_become(self, to: CustomerStatus) -> bool {
        use CustomerStatus::*;
        matches!(
            (self, to),
            (Lead, Onboarding)
                | (Lead, Churned)
                | (Onboarding, Active)
                | (Onboarding, Churned)
                | (Active, Suspended)
                | (Suspended, Active)
                | (Active, Terminated)
                | (Suspended, Terminated)
                | (Terminated, Churned)
                | (Terminated, Onboarding)
                | (Churned, Onboarding)
        )
    }
}

impl std::fmt::Display for CustomerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One move of the lifecycle, kept in the customer's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// Before.
    pub from: CustomerStatus,
    /// After.
    pub to: CustomerStatus,
    /// When.
    pub at: DateTime<Utc>,
    /// Why (free text: `signed`, `non-payment`, `moved away`, …).
    pub reason: String,
}

/// The onboarding steps an ISP commonly tracks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnboardingStepKind {
    /// Someone checks that the premises can be served.
    SiteSurvey,
    /// The line or radio is installed.
    Installation,
    /// The CPE is configured and online.
    CpeActivation,
    /// Anything else the operator tracks, by name.
    Other(String),
}

/// A step of the onboarding checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnboardingStep {
    /// What it is.
    pub kind: OnboardingStepKind,
    /// When it should be done.
    pub due: DateTime<Utc>,
    /// When it was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<DateTime<Utc>>,
}

impl OnboardingStep {
    /// Not done and past its due time at `now`.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.done_at.is_none() && self.due < now
    }
}

/// How long after signing each standard step is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnboardingPlan {
    /// The steps in order, each with its delay after the start of onboarding.
    pub steps: Vec<(OnboardingStepKind, Duration)>,
}

impl Default for OnboardingPlan {
    /// Site survey within 2 days, installation within 5, CPE activation within 6.
    fn default() -> Self {
        OnboardingPlan {
            steps: vec![
                (OnboardingStepKind::SiteSurvey, Duration::days(2)),
                (OnboardingStepKind::Installation, Duration::days(5)),
                (OnboardingStepKind::CpeActivation, Duration::days(6)),
            ],
        }
    }
}

/// What a new customer record is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCustomer {
    /// Person or business.
    pub kind: CustomerKind,
    /// Contacts.
    pub contacts: Vec<Contact>,
    /// Where the service is delivered.
    pub service_address: Option<Address>,
    /// Where invoices go (the service address when absent).
    pub billing_address: Option<Address>,
    /// References in other systems (`crm` → `"C-1042"`).
    pub external_refs: BTreeMap<String, String>,
    /// Where it starts: [`CustomerStatus::Lead`] or [`CustomerStatus::Onboarding`].
    pub status: CustomerStatus,
}

impl NewCustomer {
    /// A lead with no contacts or addresses.
    pub fn lead(kind: CustomerKind) -> Self {
        NewCustomer {
            kind,
            contacts: Vec::new(),
            service_address: None,
            billing_address: None,
            external_refs: BTreeMap::new(),
            status: CustomerStatus::Lead,
        }
    }

    /// With a contact.
    #[must_use]
    pub fn contact(mut self, role: &str, channel: ContactChannel, value: &str) -> Self {
        self.contacts.push(Contact {
            role: role.to_owned(),
            channel,
            value: value.to_owned(),
        });
        self
    }

    /// With a service address.
    #[must_use]
    pub fn service_address(mut self, address: Address) -> Self {
        self.service_address = Some(address);
        self
    }

    /// With a billing address.
    #[must_use]
    pub fn billing_address(mut self, address: Address) -> Self {
        self.billing_address = Some(address);
        self
    }

    /// With a reference in another system.
    #[must_use]
    pub fn external_ref(mut self, system: &str, reference: &str) -> Self {
        self.external_refs
            .insert(system.to_owned(), reference.to_owned());
        self
    }

    /// Starting in onboarding (signed already).
    #[must_use]
    pub fn signed(mut self) -> Self {
        self.status = CustomerStatus::Onboarding;
        self
    }
}

/// A customer of a tenant.
///
/// The fields that carry invariants (status, history, version) are private: they change only
/// through the lifecycle methods, which check the move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    id: CustomerId,
    /// Person or business.
    pub kind: CustomerKind,
    /// Contacts.
    pub contacts: Vec<Contact>,
    /// Where the service is delivered.
    pub service_address: Option<Address>,
    /// Where invoices go.
    pub billing_address: Option<Address>,
    /// References in other systems.
    pub external_refs: BTreeMap<String, String>,
    status: CustomerStatus,
    history: Vec<StatusChange>,
    onboarding: Vec<OnboardingStep>,
    created_at: DateTime<Utc>,
    version: u64,
}

fn check_text(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(CustomersError::InvalidInput(format!("{what} is empty")));
    }
    Ok(())
}

impl Customer {
    /// A new record (version 1). `id` is the billing customer's id, so that billing's events
    /// name this record.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidInput`] for an empty name or contact, or a start status other
    /// than lead or onboarding.
    pub fn new(
        id: CustomerId,
        new: NewCustomer,
        plan: &OnboardingPlan,
        now: DateTime<Utc>,
    ) -> Result<Customer> {
        match &new.kind {
            CustomerKind::Person {
                first_name,
                last_name,
            } => {
                check_text("first name", first_name)?;
                check_text("last name", last_name)?;
            }
            CustomerKind::Business { legal_name, .. } => check_text("legal name", legal_name)?,
        }
        for contact in &new.contacts {
            check_text("contact", &contact.value)?;
        }
        if !matches!(
            new.status,
            CustomerStatus::Lead | CustomerStatus::Onboarding
        ) {
            return Err(CustomersError::InvalidInput(format!(
                "a new customer starts as a lead or in onboarding, not {}",
                new.status
            )));
        }
        let mut customer = Customer {
            id,
            kind: new.kind,
            contacts: new.contacts,
            service_address: new.service_address,
            billing_address: new.billing_address,
            external_refs: new.external_refs,
            status: new.status,
            history: Vec::new(),
            onboarding: Vec::new(),
            created_at: now,
            version: 1,
        };
        if new.status == CustomerStatus::Onboarding {
            customer.onboarding = checklist(plan, now)?;
        }
        Ok(customer)
    }

    /// The id (the billing customer's).
    pub fn id(&self) -> CustomerId {
        self.id
    }

    /// Where it is in its lifecycle.
    pub fn status(&self) -> CustomerStatus {
        self.status
    }

    /// Every move so far, oldest first.
    pub fn history(&self) -> &[StatusChange] {
        &self.history
    }

    /// The current onboarding checklist (empty outside onboarding, kept once active).
    pub fn onboarding(&self) -> &[OnboardingStep] {
        &self.onboarding
    }

    /// When the record was made.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// Bumped by every change; a store saves a record only over the version it was read at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether this customer was churned and signed again at least once.
    pub fn won_back(&self) -> bool {
        self.history.iter().any(|c| {
            matches!(c.from, CustomerStatus::Churned | CustomerStatus::Terminated)
                && c.to == CustomerStatus::Onboarding
        })
    }

    /// The customer moved to `to` (a new onboarding checklist when it enters onboarding).
    /// Moving to the status it has is not a move: `Ok(None)`, nothing changes.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidTransition`] for a move the lifecycle forbids; nothing
    /// changes.
    pub fn transition(
        &mut self,
        to: CustomerStatus,
        reason: &str,
        plan: &OnboardingPlan,
        now: DateTime<Utc>,
    ) -> Result<Option<StatusChange>> {
        if self.status == to {
            return Ok(None);
        }
        if !self.status.can_become(to) {
            return Err(CustomersError::InvalidTransition {
                what: "customer",
                from: self.status.as_str(),
                to: to.as_str(),
            });
        }
        if to == CustomerStatus::Onboarding {
            self.onboarding = checklist(plan, now)?;
        }
        let change = StatusChange {
            from: self.status,
            to,
            at: now,
            reason: reason.to_owned(),
        };
        self.status = to;
        self.history.push(change.clone());
        self.bump();
        Ok(Some(change))
    }

    /// Marks an onboarding step done (again: no change, `Ok(false)`).
    ///
    /// # Errors
    ///
    /// [`CustomersError::NotFound`] for a step not on the checklist.
    pub fn complete_step(&mut self, kind: &OnboardingStepKind, at: DateTime<Utc>) -> Result<bool> {
        let step = self
            .onboarding
            .iter_mut()
            .find(|s| &s.kind == kind)
            .ok_or_else(|| CustomersError::NotFound {
                what: "onboarding step",
                id: format!("{kind:?}"),
            })?;
        if step.done_at.is_some() {
            return Ok(false);
        }
        step.done_at = Some(at);
        self.bump();
        Ok(true)
    }

    /// Steps not done and past due at `now` (only while onboarding).
    pub fn overdue_steps(&self, now: DateTime<Utc>) -> Vec<&OnboardingStep> {
        if self.status != CustomerStatus::Onboarding {
            return Vec::new();
        }
        self.onboarding
            .iter()
            .filter(|s| s.is_overdue(now))
            .collect()
    }

    /// Whether every onboarding step is done.
    pub fn onboarding_complete(&self) -> bool {
        self.onboarding.iter().all(|s| s.done_at.is_some())
    }

    fn bump(&mut self) {
        self.version = self.version.saturating_add(1);
    }
}

fn checklist(plan: &OnboardingPlan, start: DateTime<Utc>) -> Result<Vec<OnboardingStep>> {
    plan.steps
        .iter()
        .map(|(kind, delay)| {
            let due = start
                .checked_add_signed(*delay)
                .ok_or(CustomersError::InvalidInput(format!(
                    "onboarding step {kind:?} is due beyond the calendar"
                )))?;
            Ok(OnboardingStep {
                kind: kind.clone(),
                due,
                done_at: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 9, 0, 0).unwrap()
    }

    fn person() -> NewCustomer {
        NewCustomer::lead(CustomerKind::Person {
            first_name: "Ada".into(),
            last_name: "Obi".into(),
        })
    }

    #[test]
    fn the_lifecycle_allows_exactly_its_moves() {
        use CustomerStatus::*;
        let allowed = [
            (Lead, Onboarding),
            (Lead, Churned),
            (Onboarding, Active),
            (Onboarding, Churned),
            (Active, Suspended),
            (Suspended, Active),
            (Active, Terminated),
            (Suspended, Terminated),
            (Terminated, Churned),
            (Terminated, Onboarding),
            (Churned, Onboarding),
        ];
        for from in CustomerStatus::ALL {
            for to in CustomerStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} → {to}"
                );
            }
        }
    }

    #[test]
    fn a_forbidden_move_is_refused_and_changes_nothing() {
        let plan = OnboardingPlan::default();
        let mut c = Customer::new(CustomerId::from_u128(1), person(), &plan, at(1)).unwrap();
        let before = c.clone();
        assert_eq!(
            c.transition(CustomerStatus::Active, "skip", &plan, at(2)),
            Err(CustomersError::InvalidTransition {
                what: "customer",
                from: "lead",
                to: "active"
            })
        );
        assert_eq!(c, before);
    }

    #[test]
    fn a_churned_customer_is_won_back_through_onboarding_with_a_new_checklist() {
        let plan = OnboardingPlan::default();
        let mut c =
            Customer::new(CustomerId::from_u128(1), person().signed(), &plan, at(1)).unwrap();
        assert_eq!(c.onboarding().len(), 3);
        assert_eq!(
            c.overdue_steps(at(4)).len(),
            1,
            "the site survey was due on the 3rd"
        );
        c.transition(CustomerStatus::Active, "installed", &plan, at(5))
            .unwrap();
        c.transition(CustomerStatus::Terminated, "moved", &plan, at(10))
            .unwrap();
        c.transition(CustomerStatus::Churned, "archived", &plan, at(11))
            .unwrap();
        assert!(!c.won_back());
        c.transition(CustomerStatus::Onboarding, "came back", &plan, at(20))
            .unwrap();
        assert!(c.won_back());
        assert!(
            c.onboarding()
                .iter()
                .all(|s| s.done_at.is_none() && s.due > at(20))
        );
        assert_eq!(c.history().len(), 4);
        assert_eq!(c.version(), 5);
        assert_eq!(
            c.transition(CustomerStatus::Onboarding, "again", &plan, at(21)),
            Ok(None)
        );
    }

    #[test]
    fn completing_a_step_twice_changes_nothing_and_an_unknown_step_is_refused() {
        let plan = OnboardingPlan::default();
        let mut c =
            Customer::new(CustomerId::from_u128(1), person().signed(), &plan, at(1)).unwrap();
        assert_eq!(
            c.complete_step(&OnboardingStepKind::SiteSurvey, at(2)),
            Ok(true)
        );
        let v = c.version();
        assert_eq!(
            c.complete_step(&OnboardingStepKind::SiteSurvey, at(3)),
            Ok(false)
        );
        assert_eq!(c.version(), v);
        let other = OnboardingStepKind::Other("permit".into());
        assert!(matches!(
            c.complete_step(&other, at(3)),
            Err(CustomersError::NotFound {
                what: "onboarding step",
                ..
            })
        ));
        assert!(c.overdue_steps(at(2)).is_empty());
        assert_eq!(c.overdue_steps(at(9)).len(), 2);
    }

    #[test]
    fn an_empty_name_is_refused() {
        let plan = OnboardingPlan::default();
        let bad = NewCustomer::lead(CustomerKind::Business {
            legal_name: " ".into(),
            tax_id: None,
        });
        assert_eq!(
            Customer::new(CustomerId::from_u128(1), bad, &plan, at(1)),
            Err(CustomersError::InvalidInput("legal name is empty".into()))
        );
    }
}
