-- The RADIUS accounting reader (issue 13): what it last saw of each session, one row per
-- session (`unique_id`: FreeRADIUS's `radacct.acctuniqueid`), written in the transaction that
-- stores the usage the session's change produced and moves the reader's mark
-- (`radius_ingest_marks`, migration 0013). `body` is the usage normaliser's state of the
-- session; `stopped`, `seen_at` (its latest record's time) and `change` (the id of the
-- transaction that last wrote its radacct row) let stopped sessions be pruned once the mark
-- has passed their row. Keyed by tenant first.

CREATE TABLE radius_ingest_sessions (
    tenant_id  uuid NOT NULL,
    source     text NOT NULL,
    unique_id  text NOT NULL,
    stopped    boolean NOT NULL,
    seen_at    timestamptz NOT NULL,
    change     bigint NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, source, unique_id)
);
CREATE INDEX radius_ingest_sessions_stopped ON radius_ingest_sessions (tenant_id, source, stopped, seen_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON radius_ingest_sessions TO dotmac_app;
ALTER TABLE radius_ingest_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE radius_ingest_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON radius_ingest_sessions
    USING (tenant_id = NULLIF(current_setting('dotmac.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('dotmac.tenant_id', true), '')::uuid);
