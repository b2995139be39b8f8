//! # dotmac-customers
//!
//! Customers and their network services for [DotMac](https://github.com/dotmac-sdk/dotmac):
//!
//! - [`Customer`]: person or business, contacts, service and billing addresses, references in
//!   other systems, and the lifecycle lead → onboarding → active ⇄ suspended → terminated →
//!   churned (and won back), every move checked ([`CustomerStatus::can_become`]) and kept in
//!   its history; onboarding as a checklist of steps with due times whose overdue steps are
//!   reported ([`CustomerService::overdue_onboarding`]).
//! - [`NetworkService`]: a subscriber's internet service tied to its billing subscription,
//!   with a [`TechnicalProfile`] (rates, burst, data cap, pool or static address, VLAN, CPE
//!   MAC, fair-usage policy), an address from a per-tenant [`IpPool`], and the states pending →
//!   active ⇄ suspended → terminated, driven by the operator and by the money loop
//!   ([`CustomerService::subscription_suspended`]: a replayed event changes nothing).
//! - [`provisioning`]: the port to the network. A change the network must hear of is written
//!   with the service as a [`ProvisioningCommand`] outbox event; the [`ProvisioningHandler`]
//!   hands it to a [`Provisioner`] (FreeRADIUS's tables in `dotmac-sqlx`) at least once, in
//!   order per service, retried, parked with its error when it cannot pass.
//! - [`fup`]: fair-usage rules in the manner of Splynx's FUP.
//! - [`store`] traits with [`InMemoryCustomerStore`]; [`CustomerService`] orchestrates.
//!
//! Nothing here does I/O or reads the system time.
//!
//! ## Features
//!
//! - `testkit`: `testkit::run_store_suite`, the behaviour suite every store must pass.

// Module map (acyclic; each line names what the module imports):
//
//   vocab        — error
//   error        — (nothing)
//   customer     — error
//   pool         — error, vocab
//   fup          — error, vocab
//   network      — error, fup, vocab
//   provisioning — network, vocab
//   event        — customer, fup, network, vocab
//   store        — customer, error, network, pool, vocab
//   memory       — customer, error, network, pool, store, vocab
//   service      — customer, error, event, fup, network, pool, provisioning, store, vocab
//   testkit      — everything above

#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]
#![cfg_attr(not(test), warn(clippy::disallowed_methods))]

mod customer;
mod error;
mod event;
pub mod fup;
mod memory;
mod network;
mod pool;
pub mod provisioning;
mod service;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod vocab;

pub use customer::{
    Address, Contact, ContactChannel, Customer, CustomerKind, CustomerStatus, NewCustomer,
    OnboardingPlan, OnboardingStep, OnboardingStepKind, StatusChange,
};
pub use error::{CustomersError, Result};
pub use event::CustomerEvent;
pub use memory::InMemoryCustomerStore;
pub use network::{
    Addressing, NetworkService, NewService, ProvisioningAction, ServiceChange, ServiceStatus,
    SuspendReason, TechnicalProfile, Throttle,
};
pub use pool::IpPool;
pub use provisioning::{
    Access, MemoryProvisioner, ProvisionError, Provisioner, ProvisioningCommand,
    ProvisioningHandler,
};
pub use service::{
    AccountedSample, CustomerService, CustomersSettings, OverdueStep, PlanService, UsageOutcome,
};
pub use store::{CustomerStore, CustomersStore, ServiceStore};
pub use vocab::{Burst, MacAddress, PoolId, Rate, ServiceId, TopUpId};
