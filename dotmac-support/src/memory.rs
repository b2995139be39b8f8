//! The in-memory store: for tests, examples and single-process embedders.
//!
//! Every store call is one transaction (one lock of the mutex) and opens one `DEBUG` span
//! `dotmac.store.<operation>` with `backend = "memory"` and `tenant`, like the SQL stores.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use dotmac_core::TenantId;

use crate::csat::CsatResponse;
use crate::error::{Result, SupportError};
use crate::escalation::SlaMarks;
use crate::routing::{Agent, Queue, QueueCursor};
use crate::sla::SlaRecord;
use crate::store::{AgentStore, ConfigStore, CsatStore, SlaStore, SupportConfig, TicketStore};
use crate::ticket::Ticket;
use crate::vocab::{AgentId, QueueId, StatusCategory, TicketId};

#[derive(Default)]
struct TenantData {
    tickets: BTreeMap<TicketId, Ticket>,
    agents: BTreeMap<AgentId, Agent>,
    queues: BTreeMap<QueueId, Queue>,
    cursors: HashMap<QueueId, QueueCursor>,
    config: Option<SupportConfig>,
    marks: HashMap<TicketId, SlaMarks>,
    records: Vec<SlaRecord>,
    csat: Vec<CsatResponse>,
}

/// Every support store trait, in memory, behind one mutex.
#[derive(Default)]
pub struct InMemorySupportStore {
    tenants: Mutex<HashMap<TenantId, TenantData>>,
}

impl std::fmt::Debug for InMemorySupportStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemorySupportStore")
            .finish_non_exhaustive()
    }
}

impl InMemorySupportStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemorySupportStore::default()
    }

    fn with<R>(&self, tenant: TenantId, f: impl FnOnce(&mut TenantData) -> R) -> R {
        // A poisoned lock still holds consistent data: every write below is a single insert.
        let mut guard = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        f(guard.entry(tenant).or_default())
    }
}

fn oldest_first(mut tickets: Vec<Ticket>) -> Vec<Ticket> {
    tickets.sort_by_key(|t| (t.created_at(), t.id()));
    tickets
}

impl TicketStore for InMemorySupportStore {
    #[tracing::instrument(name = "dotmac.store.insert_ticket", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn insert_ticket(&self, tenant: TenantId, ticket: &Ticket) -> Result<()> {
        self.with(tenant, |d| {
            if d.tickets.contains_key(&ticket.id()) {
                return Err(SupportError::AlreadyExists {
                    kind: "ticket",
                    id: ticket.id().to_string(),
                });
            }
            d.tickets.insert(ticket.id(), ticket.clone());
            Ok(())
        })
    }

    #[tracing::instrument(name = "dotmac.store.update_ticket", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn update_ticket(&self, tenant: TenantId, ticket: &Ticket) -> Result<()> {
        self.with(tenant, |d| match d.tickets.get_mut(&ticket.id()) {
            Some(slot) => {
                *slot = ticket.clone();
                Ok(())
            }
            None => Err(SupportError::NotFound {
                kind: "ticket",
                id: ticket.id().to_string(),
            }),
        })
    }

    #[tracing::instrument(name = "dotmac.store.get_ticket", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn get_ticket(&self, tenant: TenantId, id: TicketId) -> Result<Option<Ticket>> {
        Ok(self.with(tenant, |d| d.tickets.get(&id).cloned()))
    }

    #[tracing::instrument(name = "dotmac.store.children_of", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn children_of(&self, tenant: TenantId, parent: TicketId) -> Result<Vec<Ticket>> {
        let found = self.with(tenant, |d| {
            d.tickets
                .values()
                .filter(|t| t.parent() == Some(parent))
                .cloned()
                .collect()
        });
        Ok(oldest_first(found))
    }

    #[tracing::instrument(name = "dotmac.store.waiting_in_queue", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn waiting_in_queue(&self, tenant: TenantId, queue: QueueId) -> Result<Vec<Ticket>> {
        let found = self.with(tenant, |d| {
            d.tickets
                .values()
                .filter(|t| {
                    t.queue() == Some(queue) && t.assignee().is_none() && !t.status().is_done()
                })
                .cloned()
                .collect()
        });
        Ok(oldest_first(found))
    }

    #[tracing::instrument(name = "dotmac.store.assigned_to", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn assigned_to(&self, tenant: TenantId, agent: AgentId) -> Result<Vec<Ticket>> {
        let found = self.with(tenant, |d| {
            d.tickets
                .values()
                .filter(|t| t.assignee() == Some(agent) && !t.status().is_done())
                .cloned()
                .collect()
        });
        Ok(oldest_first(found))
    }

    #[tracing::instrument(name = "dotmac.store.unclosed_tickets", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn unclosed_tickets(&self, tenant: TenantId) -> Result<Vec<Ticket>> {
        let found = self.with(tenant, |d| {
            d.tickets
                .values()
                .filter(|t| t.status().category() != StatusCategory::Closed)
                .cloned()
                .collect()
        });
        Ok(oldest_first(found))
    }
}

impl AgentStore for InMemorySupportStore {
    #[tracing::instrument(name = "dotmac.store.put_agent", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_agent(&self, tenant: TenantId, agent: &Agent) -> Result<()> {
        self.with(tenant, |d| d.agents.insert(agent.id, agent.clone()));
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.get_agent", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn get_agent(&self, tenant: TenantId, id: AgentId) -> Result<Option<Agent>> {
        Ok(self.with(tenant, |d| d.agents.get(&id).cloned()))
    }

    #[tracing::instrument(name = "dotmac.store.list_agents", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn list_agents(&self, tenant: TenantId) -> Result<Vec<Agent>> {
        Ok(self.with(tenant, |d| d.agents.values().cloned().collect()))
    }

    #[tracing::instrument(name = "dotmac.store.put_queue", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_queue(&self, tenant: TenantId, queue: &Queue) -> Result<()> {
        self.with(tenant, |d| d.queues.insert(queue.id, queue.clone()));
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.get_queue", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn get_queue(&self, tenant: TenantId, id: QueueId) -> Result<Option<Queue>> {
        Ok(self.with(tenant, |d| d.queues.get(&id).cloned()))
    }

    #[tracing::instrument(name = "dotmac.store.list_queues", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn list_queues(&self, tenant: TenantId) -> Result<Vec<Queue>> {
        Ok(self.with(tenant, |d| d.queues.values().cloned().collect()))
    }

    #[tracing::instrument(name = "dotmac.store.get_cursor", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn get_cursor(&self, tenant: TenantId, queue: QueueId) -> Result<QueueCursor> {
        Ok(self.with(tenant, |d| {
            d.cursors.get(&queue).copied().unwrap_or_default()
        }))
    }

    #[tracing::instrument(name = "dotmac.store.put_cursor", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_cursor(
        &self,
        tenant: TenantId,
        queue: QueueId,
        cursor: QueueCursor,
    ) -> Result<()> {
        self.with(tenant, |d| d.cursors.insert(queue, cursor));
        Ok(())
    }
}

impl ConfigStore for InMemorySupportStore {
    #[tracing::instrument(name = "dotmac.store.put_config", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_config(&self, tenant: TenantId, config: &SupportConfig) -> Result<()> {
        self.with(tenant, |d| d.config = Some(config.clone()));
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.get_config", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn get_config(&self, tenant: TenantId) -> Result<Option<SupportConfig>> {
        Ok(self.with(tenant, |d| d.config.clone()))
    }
}

impl SlaStore for InMemorySupportStore {
    #[tracing::instrument(name = "dotmac.store.get_marks", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn get_marks(&self, tenant: TenantId, ticket: TicketId) -> Result<SlaMarks> {
        Ok(self.with(tenant, |d| {
            d.marks.get(&ticket).cloned().unwrap_or_default()
        }))
    }

    #[tracing::instrument(name = "dotmac.store.put_marks", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn put_marks(&self, tenant: TenantId, ticket: TicketId, marks: &SlaMarks) -> Result<()> {
        self.with(tenant, |d| d.marks.insert(ticket, marks.clone()));
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.add_record", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn add_record(&self, tenant: TenantId, record: &SlaRecord) -> Result<()> {
        self.with(tenant, |d| d.records.push(record.clone()));
        Ok(())
    }

    #[tracing::instrument(name = "dotmac.store.records", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn records(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SlaRecord>> {
        let mut found: Vec<SlaRecord> = self.with(tenant, |d| {
            d.records
                .iter()
                .filter(|r| r.stopped_at >= from && r.stopped_at < to)
                .cloned()
                .collect()
        });
        found.sort_by_key(|r| r.stopped_at);
        Ok(found)
    }
}

impl CsatStore for InMemorySupportStore {
    #[tracing::instrument(name = "dotmac.store.add_csat", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn add_csat(&self, tenant: TenantId, response: &CsatResponse) -> Result<()> {
        self.with(tenant, |d| {
            if d.csat.iter().any(|r| r.ticket == response.ticket) {
                return Err(SupportError::AlreadyExists {
                    kind: "CSAT response for ticket",
                    id: response.ticket.to_string(),
                });
            }
            d.csat.push(response.clone());
            Ok(())
        })
    }

    #[tracing::instrument(name = "dotmac.store.csat_responses", level = "debug", skip_all, fields(backend = "memory", tenant = %tenant))]
    async fn csat_responses(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CsatResponse>> {
        let mut found: Vec<CsatResponse> = self.with(tenant, |d| {
            d.csat
                .iter()
                .filter(|r| r.at >= from && r.at < to)
                .cloned()
                .collect()
        });
        found.sort_by_key(|r| r.at);
        Ok(found)
    }
}
