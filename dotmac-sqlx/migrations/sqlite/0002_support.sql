-- dotmac-support's stores. Domain records are stored whole as JSON (`body`, written and read by
-- the domain's own serde), with the columns that queries filter, order and constrain on.

CREATE TABLE support_tickets (
    tenant_id    BLOB NOT NULL,
    ticket_id    BLOB NOT NULL,
    parent_id    BLOB,
    queue_id     BLOB,
    assignee_id  BLOB,
    is_done      INTEGER NOT NULL,
    is_closed    INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, ticket_id)
);
CREATE INDEX support_tickets_parent ON support_tickets (tenant_id, parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX support_tickets_waiting ON support_tickets (tenant_id, queue_id, created_at)
    WHERE assignee_id IS NULL AND NOT is_done;
CREATE INDEX support_tickets_assignee ON support_tickets (tenant_id, assignee_id) WHERE NOT is_done;
CREATE INDEX support_tickets_unclosed ON support_tickets (tenant_id, created_at) WHERE NOT is_closed;

CREATE TABLE support_agents (
    tenant_id  BLOB NOT NULL,
    agent_id   BLOB NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);

CREATE TABLE support_queues (
    tenant_id  BLOB NOT NULL,
    queue_id   BLOB NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, queue_id)
);

CREATE TABLE support_cursors (
    tenant_id  BLOB NOT NULL,
    queue_id   BLOB NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, queue_id)
);

CREATE TABLE support_config (
    tenant_id  BLOB PRIMARY KEY,
    body       TEXT NOT NULL
);

CREATE TABLE support_marks (
    tenant_id  BLOB NOT NULL,
    ticket_id  BLOB NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, ticket_id)
);

CREATE TABLE support_sla_records (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   BLOB NOT NULL,
    stopped_at  TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX support_sla_records_stopped ON support_sla_records (tenant_id, stopped_at);

CREATE TABLE support_csat (
    tenant_id    BLOB NOT NULL,
    response_id  BLOB NOT NULL,
    ticket_id    BLOB NOT NULL,
    at           TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, response_id),
    UNIQUE (tenant_id, ticket_id)
);
CREATE INDEX support_csat_at ON support_csat (tenant_id, at);
