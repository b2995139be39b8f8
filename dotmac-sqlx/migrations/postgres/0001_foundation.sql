-- DotMac storage foundation for PostgreSQL.
--
-- Tenant isolation: every table carries tenant_id and has row-level security ENABLEd and FORCEd,
-- with policies keyed on the transaction-local setting `dotmac.tenant_id` (set with
-- set_config(..., true), never a session SET, so a pooled connection cannot leak a tenant).
-- Superusers and table owners bypass RLS, so tenant transactions also switch to the non-owner,
-- non-login role dotmac_app with a transaction-local SET ROLE. The outbox relay switches to
-- dotmac_relay, which may read and mark every tenant's outbox rows and nothing else.

-- Roles are cluster-wide: another database or schema may already have created them.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dotmac_app') THEN
        CREATE ROLE dotmac_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dotmac_relay') THEN
        CREATE ROLE dotmac_relay NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- The migrating (owning) user must be able to SET ROLE to both; the schema is whatever
-- search_path points at, so that one database can hold several isolated DotMac schemas.
DO $$
BEGIN
    EXECUTE format('GRANT dotmac_app, dotmac_relay TO %I', current_user);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO dotmac_app, dotmac_relay', current_schema());
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO dotmac_app',
        current_schema());
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO dotmac_app',
        current_schema());
END $$;

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);

-- Domain events written in the same transaction as the change that produced them.
CREATE TABLE outbox (
    seq               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    event_id          uuid NOT NULL UNIQUE,
    event_type        text NOT NULL,
    occurred_at       timestamptz NOT NULL,
    payload           jsonb NOT NULL,
    claimed_by        text,
    claim_expires_at  timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    delivered_at      timestamptz
);
CREATE INDEX outbox_undelivered ON outbox (seq) WHERE delivered_at IS NULL;
CREATE INDEX outbox_tenant ON outbox (tenant_id, seq);

-- Gapless invoice numbers: the counter row is updated in the invoice's own transaction, so a
-- rolled-back invoice gives its number back and concurrent bill runs queue on the row lock.
CREATE TABLE invoice_counters (
    tenant_id    uuid NOT NULL,
    series       text NOT NULL,
    last_number  bigint NOT NULL CHECK (last_number >= 0),
    PRIMARY KEY (tenant_id, series)
);

-- Idempotency keys: a second request with the same key finds the first one's reference.
CREATE TABLE idempotency_keys (
    tenant_id   uuid NOT NULL,
    scope       text NOT NULL,
    key         text NOT NULL,
    reference   text NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, scope, key)
);

-- Scale-out bill runs: a run is split into chunks that workers claim with SKIP LOCKED under a
-- lease; a chunk's results are written in the same transaction that marks it done.
CREATE TABLE bill_runs (
    tenant_id    uuid NOT NULL,
    run_id       uuid PRIMARY KEY,
    as_of        date NOT NULL,
    chunk_count  integer NOT NULL CHECK (chunk_count >= 0),
    created_at   timestamptz NOT NULL
);

CREATE TABLE bill_run_chunks (
    tenant_id         uuid NOT NULL,
    run_id            uuid NOT NULL REFERENCES bill_runs (run_id),
    chunk_no          integer NOT NULL CHECK (chunk_no >= 0),
    items             jsonb NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'done')),
    claimed_by        text,
    lease_expires_at  timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    completed_at      timestamptz,
    PRIMARY KEY (run_id, chunk_no)
);
CREATE INDEX bill_run_chunks_pending ON bill_run_chunks (run_id, chunk_no) WHERE status = 'pending';

CREATE TABLE invoices (
    tenant_id        uuid NOT NULL,
    invoice_id       uuid PRIMARY KEY,
    series           text NOT NULL,
    number           bigint NOT NULL,
    run_id           uuid,
    customer_id      uuid NOT NULL,
    subscription_id  uuid,
    currency         text NOT NULL,
    issued_on        date NOT NULL,
    total            numeric NOT NULL,
    status           text NOT NULL,
    version          bigint NOT NULL DEFAULT 1,
    body             jsonb NOT NULL,
    UNIQUE (tenant_id, series, number),
    -- A re-run chunk cannot bill a subscription twice in one run.
    UNIQUE (tenant_id, run_id, subscription_id)
);
CREATE INDEX invoices_customer ON invoices (tenant_id, customer_id);

CREATE TABLE invoice_lines (
    tenant_id    uuid NOT NULL,
    invoice_id   uuid NOT NULL REFERENCES invoices (invoice_id) ON DELETE CASCADE,
    line_no      integer NOT NULL,
    description  text NOT NULL,
    quantity     numeric NOT NULL,
    unit_price   numeric NOT NULL,
    amount       numeric NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

-- Default privileges only cover tables created after them by the same user; be explicit.
GRANT SELECT, INSERT, UPDATE, DELETE ON
    tenants, outbox, invoice_counters, idempotency_keys, bill_runs, bill_run_chunks, invoices,
    invoice_lines
    TO dotmac_app;
DO $$
BEGIN
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO dotmac_app', current_schema());
END $$;
GRANT SELECT, UPDATE ON outbox TO dotmac_relay;

-- Row-level security: the tenant of the transaction, nothing else. NULLIF because a setting
-- that was set earlier in the session reads back as '' outside its transaction.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (tenant_id = NULLIF(current_setting('dotmac.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('dotmac.tenant_id', true), '')::uuid);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['outbox', 'invoice_counters', 'idempotency_keys', 'bill_runs',
                             'bill_run_chunks', 'invoices', 'invoice_lines']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = NULLIF(current_setting(''dotmac.tenant_id'', true), '''')::uuid) '
            'WITH CHECK (tenant_id = NULLIF(current_setting(''dotmac.tenant_id'', true), '''')::uuid)',
            t);
    END LOOP;
END $$;

-- The relay sees every tenant's outbox (and nothing else: it has no grant on other tables).
CREATE POLICY outbox_relay ON outbox TO dotmac_relay USING (true) WITH CHECK (true);
