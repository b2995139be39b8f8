//! `dotmac-support`'s storage traits.

use chrono::{DateTime, Utc};
use dotmac_core::TenantId;
use dotmac_support::store::{
    AgentStore, ConfigStore, CsatStore, SlaStore, SupportConfig, TicketStore,
};
use dotmac_support::{
    Agent, AgentId, CsatResponse, Queue, QueueCursor, QueueId, SlaMarks, SlaRecord, StatusCategory,
    SupportError, Ticket, TicketId,
};

use crate::docs::{Bind, Written, json};
use crate::error::SqlError;
use crate::store::SqlStore;

type Result<T> = std::result::Result<T, SupportError>;

/// Storage failures as support errors: the kind and the cause are kept.
fn storage(error: SqlError) -> SupportError {
    SupportError::Storage(error.into())
}

fn id(tenant: TenantId) -> Bind {
    Bind::Uuid(tenant.as_uuid())
}

fn ticket_binds(tenant: TenantId, ticket: &Ticket) -> Result<Vec<Bind>> {
    Ok(vec![
        id(tenant),
        Bind::Uuid(ticket.id().as_uuid()),
        Bind::OptUuid(ticket.parent().map(|p| p.as_uuid())),
        Bind::OptUuid(ticket.queue().map(|q| q.as_uuid())),
        Bind::OptUuid(ticket.assignee().map(|a| a.as_uuid())),
        Bind::Bool(ticket.status().is_done()),
        Bind::Bool(ticket.status().category() == StatusCategory::Closed),
        Bind::Time(ticket.created_at()),
        json("ticket", ticket).map_err(storage)?,
    ])
}

impl TicketStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.insert_ticket", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn insert_ticket(&self, tenant: TenantId, ticket: &Ticket) -> Result<()> {
        let written = self
            .db
            .write(
                tenant,
                "INSERT INTO support_tickets (tenant_id, ticket_id, parent_id, queue_id, \
                 assignee_id, is_done, is_closed, created_at, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &ticket_binds(tenant, ticket)?,
            )
            .await
            .map_err(storage)?;
        match written {
            Written::UniqueViolation => Err(SupportError::AlreadyExists {
                kind: "ticket",
                id: ticket.id().to_string(),
            }),
            Written::Rows(_) => Ok(()),
        }
    }

    #[tracing::instrument(name = "dotmac.store.update_ticket", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn update_ticket(&self, tenant: TenantId, ticket: &Ticket) -> Result<()> {
        let written = self
            .db
            .write(
                tenant,
                "UPDATE support_tickets SET parent_id = $3, queue_id = $4, assignee_id = $5, \
                 is_done = $6, is_closed = $7, created_at = $8, body = $9 \
                 WHERE tenant_id = $1 AND ticket_id = $2",
                &ticket_binds(tenant, ticket)?,
            )
            .await
            .map_err(storage)?;
        match written {
            Written::Rows(1) => Ok(()),
            _ => Err(SupportError::NotFound {
                kind: "ticket",
                id: ticket.id().to_string(),
            }),
        }
    }

    #[tracing::instrument(name = "dotmac.store.get_ticket", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn get_ticket(&self, tenant: TenantId, ticket: TicketId) -> Result<Option<Ticket>> {
        self.db
            .read_one(
                tenant,
                "ticket",
                "SELECT body FROM support_tickets WHERE tenant_id = $1 AND ticket_id = $2",
                &[id(tenant), Bind::Uuid(ticket.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.children_of", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn children_of(&self, tenant: TenantId, parent: TicketId) -> Result<Vec<Ticket>> {
        self.db
            .read_all(
                tenant,
                "ticket",
                "SELECT body FROM support_tickets WHERE tenant_id = $1 AND parent_id = $2 \
                 ORDER BY created_at, ticket_id",
                &[id(tenant), Bind::Uuid(parent.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.waiting_in_queue", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn waiting_in_queue(&self, tenant: TenantId, queue: QueueId) -> Result<Vec<Ticket>> {
        self.db
            .read_all(
                tenant,
                "ticket",
                "SELECT body FROM support_tickets WHERE tenant_id = $1 AND queue_id = $2 \
                 AND assignee_id IS NULL AND NOT is_done ORDER BY created_at, ticket_id",
                &[id(tenant), Bind::Uuid(queue.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.assigned_to", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn assigned_to(&self, tenant: TenantId, agent: AgentId) -> Result<Vec<Ticket>> {
        self.db
            .read_all(
                tenant,
                "ticket",
                "SELECT body FROM support_tickets WHERE tenant_id = $1 AND assignee_id = $2 \
                 AND NOT is_done ORDER BY created_at, ticket_id",
                &[id(tenant), Bind::Uuid(agent.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.unclosed_tickets", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn unclosed_tickets(&self, tenant: TenantId) -> Result<Vec<Ticket>> {
        self.db
            .read_all(
                tenant,
                "ticket",
                "SELECT body FROM support_tickets WHERE tenant_id = $1 AND NOT is_closed \
                 ORDER BY created_at, ticket_id",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }
}

impl AgentStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.put_agent", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_agent(&self, tenant: TenantId, agent: &Agent) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO support_agents (tenant_id, agent_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, agent_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(agent.id.as_uuid()),
                    json("agent", agent).map_err(storage)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    #[tracing::instrument(name = "dotmac.store.get_agent", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn get_agent(&self, tenant: TenantId, agent: AgentId) -> Result<Option<Agent>> {
        self.db
            .read_one(
                tenant,
                "agent",
                "SELECT body FROM support_agents WHERE tenant_id = $1 AND agent_id = $2",
                &[id(tenant), Bind::Uuid(agent.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.list_agents", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn list_agents(&self, tenant: TenantId) -> Result<Vec<Agent>> {
        self.db
            .read_all(
                tenant,
                "agent",
                "SELECT body FROM support_agents WHERE tenant_id = $1 ORDER BY agent_id",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.put_queue", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_queue(&self, tenant: TenantId, queue: &Queue) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO support_queues (tenant_id, queue_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, queue_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(queue.id.as_uuid()),
                    json("queue", queue).map_err(storage)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    #[tracing::instrument(name = "dotmac.store.get_queue", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn get_queue(&self, tenant: TenantId, queue: QueueId) -> Result<Option<Queue>> {
        self.db
            .read_one(
                tenant,
                "queue",
                "SELECT body FROM support_queues WHERE tenant_id = $1 AND queue_id = $2",
                &[id(tenant), Bind::Uuid(queue.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.list_queues", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn list_queues(&self, tenant: TenantId) -> Result<Vec<Queue>> {
        self.db
            .read_all(
                tenant,
                "queue",
                "SELECT body FROM support_queues WHERE tenant_id = $1 ORDER BY queue_id",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.get_cursor", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn get_cursor(&self, tenant: TenantId, queue: QueueId) -> Result<QueueCursor> {
        let cursor: Option<QueueCursor> = self
            .db
            .read_one(
                tenant,
                "queue cursor",
                "SELECT body FROM support_cursors WHERE tenant_id = $1 AND queue_id = $2",
                &[id(tenant), Bind::Uuid(queue.as_uuid())],
            )
            .await
            .map_err(storage)?;
        Ok(cursor.unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.put_cursor", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_cursor(
        &self,
        tenant: TenantId,
        queue: QueueId,
        cursor: QueueCursor,
    ) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO support_cursors (tenant_id, queue_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, queue_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(queue.as_uuid()),
                    json("queue cursor", &cursor).map_err(storage)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }
}

impl ConfigStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.put_config", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_config(&self, tenant: TenantId, config: &SupportConfig) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO support_config (tenant_id, body) VALUES ($1, $2) \
                 ON CONFLICT (tenant_id) DO UPDATE SET body = excluded.body",
                &[id(tenant), json("support config", config).map_err(storage)?],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    #[tracing::instrument(name = "dotmac.store.get_config", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn get_config(&self, tenant: TenantId) -> Result<Option<SupportConfig>> {
        self.db
            .read_one(
                tenant,
                "support config",
                "SELECT body FROM support_config WHERE tenant_id = $1",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }
}

impl SlaStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.get_marks", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn get_marks(&self, tenant: TenantId, ticket: TicketId) -> Result<SlaMarks> {
        let marks: Option<SlaMarks> = self
            .db
            .read_one(
                tenant,
                "SLA marks",
                "SELECT body FROM support_marks WHERE tenant_id = $1 AND ticket_id = $2",
                &[id(tenant), Bind::Uuid(ticket.as_uuid())],
            )
            .await
            .map_err(storage)?;
        Ok(marks.unwrap_or_default())
    }

    #[tracing::instrument(name = "dotmac.store.put_marks", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn put_marks(&self, tenant: TenantId, ticket: TicketId, marks: &SlaMarks) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO support_marks (tenant_id, ticket_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, ticket_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(ticket.as_uuid()),
                    json("SLA marks", marks).map_err(storage)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    #[tracing::instrument(name = "dotmac.store.add_record", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn add_record(&self, tenant: TenantId, record: &SlaRecord) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO support_sla_records (tenant_id, stopped_at, body) VALUES ($1, $2, $3)",
                &[
                    id(tenant),
                    Bind::Time(record.stopped_at),
                    json("SLA record", record).map_err(storage)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    #[tracing::instrument(name = "dotmac.store.records", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn records(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SlaRecord>> {
        self.db
            .read_all(
                tenant,
                "SLA record",
                "SELECT body FROM support_sla_records \
                 WHERE tenant_id = $1 AND stopped_at >= $2 AND stopped_at < $3 \
                 ORDER BY stopped_at, seq",
                &[id(tenant), Bind::Time(from), Bind::Time(to)],
            )
            .await
            .map_err(storage)
    }
}

impl CsatStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.add_csat", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn add_csat(&self, tenant: TenantId, response: &CsatResponse) -> Result<()> {
        let written = self
            .db
            .write(
                tenant,
                "INSERT INTO support_csat (tenant_id, response_id, ticket_id, at, body) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    id(tenant),
                    Bind::Uuid(response.id.as_uuid()),
                    Bind::Uuid(response.ticket.as_uuid()),
                    Bind::Time(response.at),
                    json("CSAT response", response).map_err(storage)?,
                ],
            )
            .await
            .map_err(storage)?;
        match written {
            Written::UniqueViolation => Err(SupportError::AlreadyExists {
                kind: "CSAT response for ticket",
                id: response.ticket.to_string(),
            }),
            Written::Rows(_) => Ok(()),
        }
    }

    #[tracing::instrument(name = "dotmac.store.csat_responses", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn csat_responses(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CsatResponse>> {
        self.db
            .read_all(
                tenant,
                "CSAT response",
                "SELECT body FROM support_csat WHERE tenant_id = $1 AND at >= $2 AND at < $3 \
                 ORDER BY at, response_id",
                &[id(tenant), Bind::Time(from), Bind::Time(to)],
            )
            .await
            .map_err(storage)
    }
}
