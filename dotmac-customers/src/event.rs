//! The events this crate writes to the outbox (besides provisioning commands).

use chrono::{DateTime, Utc};
use dotmac_core::outbox::{Aggregate, OutboxPayload};
use dotmac_core::{CustomerId, EventPayload, SubscriptionId};
use serde::{Deserialize, Serialize};

use crate::customer::{CustomerStatus, OnboardingStepKind};
use crate::fup::FupAction;
use crate::network::ServiceStatus;
use crate::vocab::{Rate, ServiceId};

/// What happened to a customer or one of its services (aggregate: the customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CustomerEvent {
    /// `customers.customer_created`.
    CustomerCreated {
        /// The customer.
        customer: CustomerId,
        /// Where it starts.
        status: CustomerStatus,
    },
    /// `customers.status_changed`.
    StatusChanged {
        /// The customer.
        customer: CustomerId,
        /// Before.
        from: CustomerStatus,
        /// After.
        to: CustomerStatus,
        /// Why.
        reason: String,
    },
    /// `customers.onboarding_step_completed`.
    OnboardingStepCompleted {
        /// The customer.
        customer: CustomerId,
        /// The step.
        step: OnboardingStepKind,
        /// When.
        at: DateTime<Utc>,
    },
    /// `customers.service_created`.
    ServiceCreated {
        /// The service.
        service: ServiceId,
        /// The customer.
        customer: CustomerId,
        /// The billing subscription it delivers.
        subscription: SubscriptionId,
    },
    /// `customers.service_status_changed`.
    ServiceStatusChanged {
        /// The service.
        service: ServiceId,
        /// The customer.
        customer: CustomerId,
        /// Before.
        from: ServiceStatus,
        /// After.
        to: ServiceStatus,
    },
    /// `customers.fair_usage`: a fair-usage rule changed the service (for a customer notice).
    FairUsage {
        /// The service.
        service: ServiceId,
        /// The customer.
        customer: CustomerId,
        /// The rule's name.
        rule: String,
        /// What it did (or `restore` when its counter reset).
        action: FupAction,
        /// The rate now enforced.
        rate: Rate,
        /// Bytes counted in the rule's period so far.
        counted_bytes: u64,
    },
}

impl EventPayload for CustomerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::CustomerCreated { .. } => "customers.customer_created",
            CustomerEvent::StatusChanged { .. } => "customers.status_changed",
            CustomerEvent::OnboardingStepCompleted { .. } => "customers.onboarding_step_completed",
            CustomerEvent::ServiceCreated { .. } => "customers.service_created",
            CustomerEvent::ServiceStatusChanged { .. } => "customers.service_status_changed",
            CustomerEvent::FairUsage { .. } => "customers.fair_usage",
        }
    }
}

impl OutboxPayload for CustomerEvent {
    fn aggregate(&self) -> Aggregate {
        let customer = match self {
            CustomerEvent::CustomerCreated { customer, .. }
            | CustomerEvent::StatusChanged { customer, .. }
            | CustomerEvent::OnboardingStepCompleted { customer, .. }
            | CustomerEvent::ServiceCreated { customer, .. }
            | CustomerEvent::ServiceStatusChanged { customer, .. }
            | CustomerEvent::FairUsage { customer, .. } => *customer,
        };
        Aggregate::customer(customer)
    }
}
