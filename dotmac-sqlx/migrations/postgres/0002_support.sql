-- dotmac-support's stores. Domain records are stored whole as JSON (`body`, written and read by
-- the domain's own serde), with the columns that queries filter, order and constrain on.

CREATE TABLE support_tickets (
    tenant_id    uuid NOT NULL,
    ticket_id    uuid NOT NULL,
    parent_id    uuid,
    queue_id     uuid,
    assignee_id  uuid,
    is_done      boolean NOT NULL,
    is_closed    boolean NOT NULL,
    created_at   timestamptz NOT NULL,
    body         jsonb NOT NULL,
    PRIMARY KEY (tenant_id, ticket_id)
);
CREATE INDEX support_tickets_parent ON support_tickets (tenant_id, parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX support_tickets_waiting ON support_tickets (tenant_id, queue_id, created_at)
    WHERE assignee_id IS NULL AND NOT is_done;
CREATE INDEX support_tickets_assignee ON support_tickets (tenant_id, assignee_id) WHERE NOT is_done;
CREATE INDEX support_tickets_unclosed ON support_tickets (tenant_id, created_at) WHERE NOT is_closed;

CREATE TABLE support_agents (
    tenant_id  uuid NOT NULL,
    agent_id   uuid NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);

CREATE TABLE support_queues (
    tenant_id  uuid NOT NULL,
    queue_id   uuid NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, queue_id)
);

CREATE TABLE support_cursors (
    tenant_id  uuid NOT NULL,
    queue_id   uuid NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, queue_id)
);

CREATE TABLE support_config (
    tenant_id  uuid PRIMARY KEY,
    body       jsonb NOT NULL
);

CREATE TABLE support_marks (
    tenant_id  uuid NOT NULL,
    ticket_id  uuid NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, ticket_id)
);

CREATE TABLE support_sla_records (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    stopped_at  timestamptz NOT NULL,
    body        jsonb NOT NULL
);
CREATE INDEX support_sla_records_stopped ON support_sla_records (tenant_id, stopped_at);

CREATE TABLE support_csat (
    tenant_id    uuid NOT NULL,
    response_id  uuid NOT NULL,
    ticket_id    uuid NOT NULL,
    at           timestamptz NOT NULL,
    body         jsonb NOT NULL,
    PRIMARY KEY (tenant_id, response_id),
    -- One response per ticket.
    UNIQUE (tenant_id, ticket_id)
);
CREATE INDEX support_csat_at ON support_csat (tenant_id, at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['support_tickets', 'support_agents', 'support_queues',
                             'support_cursors', 'support_config', 'support_marks',
                             'support_sla_records', 'support_csat']
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO dotmac_app', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = NULLIF(current_setting(''dotmac.tenant_id'', true), '''')::uuid) '
            'WITH CHECK (tenant_id = NULLIF(current_setting(''dotmac.tenant_id'', true), '''')::uuid)',
            t);
    END LOOP;
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO dotmac_app', current_schema());
END $$;
