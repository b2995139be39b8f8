//! The events this crate writes to the outbox (besides provisioning commands).

use chrono::{DateTime, NaiveDate, Utc};
use dotmac_core::outbox::{Aggregate, OutboxPayload};
use dotmac_core::{CustomerId, EventPayload, Money, SubscriptionId};
use serde::{Deserialize, Serialize};

use crate::customer::{CustomerStatus, OnboardingStepKind};
use crate::fup::FupAction;
use crate::network::ServiceStatus;
use crate::vocab::{Rate, ServiceId, TopUpId};

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
    /// `customers.fair_usage_top_up`: data bought on top of the block thresholds; with a
    /// price, billing charges it on the subscription's next invoice (the facade's
    /// `BillingFollowsFairUsage`).
    FairUsageTopUp {
        /// The service.
        service: ServiceId,
        /// The customer (who pays).
        customer: CustomerId,
        /// The subscription whose invoice carries the charge.
        subscription: SubscriptionId,
        /// The top-up.
        top_up: TopUpId,
        /// Bytes bought.
        bytes: u64,
        /// What it costs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<Money>,
        /// The local date (the policy's zone) it was bought on.
        on: NaiveDate,
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
            CustomerEvent::FairUsageTopUp { .. } => "customers.fair_usage_top_up",
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
            | CustomerEvent::FairUsage { customer, .. }
            | CustomerEvent::FairUsageTopUp { customer, .. } => *customer,
        };
        Aggregate::customer(customer)
    }
}
