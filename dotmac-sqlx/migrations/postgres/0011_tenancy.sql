-- dotmac-tenancy's stores (issue 12). The tenant registry becomes the tenancy store's table: a
-- tenant has a status (its lifecycle), a version (optimistic concurrency) and its record whole
-- as JSON (its plan as assigned and its history). Tenants registered before this migration
-- (and by nothing else now) have no body: they read as active and unmetered.
ALTER TABLE tenants
    ADD COLUMN status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('requested', 'provisioning', 'active', 'suspended', 'archived')),
    ADD COLUMN version bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN body jsonb;

-- Settings layers: the tenant's own, and its customers'.
CREATE TABLE tenancy_settings (
    tenant_id  uuid PRIMARY KEY,
    body       jsonb NOT NULL
);

CREATE TABLE tenancy_customer_settings (
    tenant_id    uuid NOT NULL,
    customer_id  uuid NOT NULL,
    body         jsonb NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

-- Users (the subject is the identity provider's key, one user per subject) and custom roles.
CREATE TABLE tenancy_users (
    tenant_id  uuid NOT NULL,
    user_id    uuid NOT NULL,
    subject    text NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    UNIQUE (tenant_id, subject)
);

CREATE TABLE tenancy_roles (
    tenant_id  uuid NOT NULL,
    role_name  text NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, role_name)
);

-- Counted quotas: one counter row per tenant and quota (locked by every admission, so that
-- the check and the increment are one step), and the members counted (a customer, a user):
-- an admission of a member already counted counts nothing; a release sets `until`.
CREATE TABLE tenancy_quota_counters (
    tenant_id  uuid NOT NULL,
    quota      text NOT NULL,
    used       bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (tenant_id, quota)
);

CREATE TABLE tenancy_quota_members (
    tenant_id  uuid NOT NULL,
    quota      text NOT NULL,
    member_id  uuid NOT NULL,
    since      timestamptz NOT NULL,
    until      timestamptz,
    PRIMARY KEY (tenant_id, quota, member_id)
);
CREATE INDEX tenancy_quota_members_since ON tenancy_quota_members (tenant_id, quota, since);

-- The hourly rate quota: one fixed window per tenant and clock hour, incremented by one
-- conditional upsert (see dotmac-tenancy's `usage` module).
CREATE TABLE tenancy_rate_windows (
    tenant_id     uuid NOT NULL,
    quota         text NOT NULL,
    window_start  timestamptz NOT NULL,
    used          bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (tenant_id, quota, window_start)
);

-- The platform's measurements of a tenant, once per record id.
CREATE TABLE tenancy_usage_records (
    tenant_id  uuid NOT NULL,
    record_id  uuid NOT NULL,
    metric     text NOT NULL,
    at         timestamptz NOT NULL,
    quantity   bigint NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (tenant_id, record_id)
);
CREATE INDEX tenancy_usage_records_at ON tenancy_usage_records (tenant_id, metric, at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenancy_settings', 'tenancy_customer_settings', 'tenancy_users',
                             'tenancy_roles', 'tenancy_quota_counters', 'tenancy_quota_members',
                             'tenancy_rate_windows', 'tenancy_usage_records']
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
END $$;
