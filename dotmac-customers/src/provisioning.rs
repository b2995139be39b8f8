//! The provisioning port: commands to the network, carried by the outbox.
//!
//! Every change of a service that the network must hear of (activation, a new rate, a
//! suspension, a restore, a termination) is written with the service as a
//! [`ProvisioningCommand`] outbox event (`provisioning.activate`, …, aggregate
//! `service:<id>`, so one service's commands are applied in order). The
//! [`ProvisioningHandler`] hands each to a [`Provisioner`] under the outbox
//! [`Dispatcher`](dotmac_core::outbox::Dispatcher): at least once, retried with backoff when
//! the provisioner says the failure may pass, parked with its error when it does not.
//!
//! A command carries the whole state the network should hold for the subscriber (user name,
//! password, rate, address, access), not a difference, and the service's version as its
//! `sequence`: applying it twice leaves the network as applying it once, and a provisioner can
//! refuse to go back to an older state (a parked command requeued after newer ones ran).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use dotmac_core::outbox::{
    Aggregate, BoxFuture, EventHandler, HandlerError, HandlerErrorKind, OutboxMessage,
    OutboxPayload,
};
use dotmac_core::{CustomerId, EventPayload, FastMap, TenantId};
use serde::{Deserialize, Serialize};

use crate::network::{Addressing, NetworkService, ProvisioningAction, ServiceStatus};
use crate::vocab::{Burst, Rate, ServiceId};

/// What the network should let the subscriber do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Accepted at [`ProvisioningCommand::rate`].
    Allowed,
    /// Suspended: rejected or walled off, as the provisioner is configured.
    Suspended,
    /// Gone: credentials removed.
    Removed,
}

/// One command to the network: the subscriber's whole desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningCommand {
    /// The service.
    pub service: ServiceId,
    /// Its customer.
    pub customer: CustomerId,
    /// What changed.
    pub action: ProvisioningAction,
    /// The service's version after the change: later commands have higher numbers.
    pub sequence: u64,
    /// The RADIUS user name.
    pub username: String,
    /// The RADIUS password.
    pub password: String,
    /// The rate to enforce (a fair-usage slowdown included).
    pub rate: Rate,
    /// Burst above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Burst>,
    /// The address to hand out (`Framed-IP-Address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The customer VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// What the subscriber may do.
    pub access: Access,
}

impl ProvisioningCommand {
    /// The command for `service` as it is now, after a change asking for `action`.
    pub fn of(service: &NetworkService, action: ProvisioningAction) -> Self {
        let access = match service.status() {
            ServiceStatus::Terminated => Access::Removed,
            ServiceStatus::Suspended => Access::Suspended,
            ServiceStatus::Active | ServiceStatus::Pending => Access::Allowed,
        };
        let address = match service.profile().addressing {
            Addressing::Nas => None,
            Addressing::Pool(_) | Addressing::Static(_) => service.address(),
        };
        ProvisioningCommand {
            service: service.id(),
            customer: service.customer(),
            action,
            sequence: service.version(),
            username: service.username().to_owned(),
            password: service.password().to_owned(),
            rate: service.effective_rate(),
            burst: service
                .throttle()
                .is_none()
                .then_some(service.profile().burst)
                .flatten(),
            address,
            vlan: service.profile().vlan,
            access,
        }
    }
}

impl EventPayload for ProvisioningCommand {
    fn event_type(&self) -> &'static str {
        self.action.event_type()
    }
}

impl OutboxPayload for ProvisioningCommand {
    fn aggregate(&self) -> Aggregate {
        Aggregate::new("service", self.service.as_uuid())
    }
}

/// A provisioner's failure: whether it may pass when tried again, and why.
#[derive(Debug, thiserror::Error)]
#[error("provisioning failed ({kind:?}): {message}")]
pub struct ProvisionError {
    kind: HandlerErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ProvisionError {
    /// A failure that may pass (the RADIUS database was unreachable).
    pub fn retryable(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ProvisionError {
            kind: HandlerErrorKind::Retryable,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// A failure that will not (a command the network refuses).
    pub fn permanent(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ProvisionError {
            kind: HandlerErrorKind::Permanent,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// A failure described by a message.
    pub fn message(kind: HandlerErrorKind, message: impl Into<String>) -> Self {
        ProvisionError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Whether it may pass.
    pub fn kind(&self) -> HandlerErrorKind {
        self.kind
    }
}

/// Applies provisioning commands to a network (a RADIUS server's tables, a NAS's API).
///
/// Implementations must be idempotent: the same command may arrive more than once. They
/// should ignore a command whose `sequence` is below one already applied for the service.
pub trait Provisioner: Send + Sync {
    /// Applies `command` for `tenant`.
    ///
    /// # Errors
    ///
    /// A [`ProvisionError`] saying whether a retry may pass.
    fn apply<'a>(
        &'a self,
        tenant: TenantId,
        command: &'a ProvisioningCommand,
    ) -> BoxFuture<'a, Result<(), ProvisionError>>;
}

impl<P: Provisioner + ?Sized> Provisioner for Arc<P> {
    fn apply<'a>(
        &'a self,
        tenant: TenantId,
        command: &'a ProvisioningCommand,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        (**self).apply(tenant, command)
    }
}

/// The outbox handler that hands `provisioning.*` events to a [`Provisioner`].
#[derive(Debug)]
pub struct ProvisioningHandler<P> {
    provisioner: P,
}

impl<P> ProvisioningHandler<P> {
    /// The handler over `provisioner`.
    pub fn new(provisioner: P) -> Self {
        ProvisioningHandler { provisioner }
    }
}

impl<P: Provisioner> EventHandler for ProvisioningHandler<P> {
    fn name(&self) -> &str {
        "provisioning"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("provisioning.")
    }

    fn handle<'a>(&'a self, message: &'a OutboxMessage) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let command: ProvisioningCommand = message.decode().map_err(HandlerError::permanent)?;
            self.provisioner
                .apply(message.tenant, &command)
                .await
                .map_err(|e| {
                    let kind = e.kind();
                    match kind {
                        HandlerErrorKind::Retryable => HandlerError::retryable(e),
                        _ => HandlerError::permanent(e),
                    }
                })
        })
    }
}

/// A provisioner that keeps the last state per user name in memory (tests, examples, a dry
/// run), and can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryProvisioner {
    inner: Mutex<MemoryNetwork>,
}

#[derive(Debug, Default)]
struct MemoryNetwork {
    state: FastMap<(TenantId, String), ProvisioningCommand>,
    applied: u64,
    fail_next: u32,
    fail_kind: Option<HandlerErrorKind>,
}

impl MemoryProvisioner {
    /// An empty network.
    pub fn new() -> Self {
        MemoryProvisioner::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryNetwork> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` commands fail with `kind`.
    pub fn fail_next(&self, n: u32, kind: HandlerErrorKind) {
        let mut net = self.lock();
        net.fail_next = n;
        net.fail_kind = Some(kind);
    }

    /// What the network holds for a user name.
    pub fn state(&self, tenant: TenantId, username: &str) -> Option<ProvisioningCommand> {
        self.lock()
            .state
            .get(&(tenant, username.to_owned()))
            .cloned()
    }

    /// How many commands changed something.
    pub fn applied(&self) -> u64 {
        self.lock().applied
    }
}

impl Provisioner for MemoryProvisioner {
    fn apply<'a>(
        &'a self,
        tenant: TenantId,
        command: &'a ProvisioningCommand,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            let mut net = self.lock();
            if net.fail_next > 0 {
                net.fail_next = net.fail_next.saturating_sub(1);
                let kind = net.fail_kind.unwrap_or(HandlerErrorKind::Retryable);
                return Err(ProvisionError::message(kind, "the network is down (test)"));
            }
            let key = (tenant, command.username.clone());
            let newer = net
                .state
                .get(&key)
                .is_none_or(|held| held.sequence < command.sequence);
            if newer {
                net.state.insert(key, command.clone());
                net.applied = net.applied.saturating_add(1);
            }
            Ok(())
        })
    }
}
