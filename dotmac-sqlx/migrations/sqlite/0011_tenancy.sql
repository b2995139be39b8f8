-- dotmac-tenancy's stores (issue 12). The tenant registry becomes the tenancy store's table: a
-- tenant has a status (its lifecycle), a version (optimistic concurrency) and its record whole
-- as JSON (its plan as assigned and its history). Tenants registered before this migration
-- (and by nothing else now) have no body: they read as active and unmetered. See the
-- PostgreSQL migration for the tables' purposes.
ALTER TABLE tenants ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('requested', 'provisioning', 'active', 'suspended', 'archived'));
ALTER TABLE tenants ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE tenants ADD COLUMN body TEXT;

CREATE TABLE tenancy_settings (
    tenant_id  BLOB PRIMARY KEY,
    body       TEXT NOT NULL
);

CREATE TABLE tenancy_customer_settings (
    tenant_id    BLOB NOT NULL,
    customer_id  BLOB NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

CREATE TABLE tenancy_users (
    tenant_id  BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    UNIQUE (tenant_id, subject)
);

CREATE TABLE tenancy_roles (
    tenant_id  BLOB NOT NULL,
    role_name  TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, role_name)
);

CREATE TABLE tenancy_quota_counters (
    tenant_id  BLOB NOT NULL,
    quota      TEXT NOT NULL,
    used       INTEGER NOT NULL CHECK (used >= 0),
    PRIMARY KEY (tenant_id, quota)
);

CREATE TABLE tenancy_quota_members (
    tenant_id  BLOB NOT NULL,
    quota      TEXT NOT NULL,
    member_id  BLOB NOT NULL,
    since      TEXT NOT NULL,
    until      TEXT,
    PRIMARY KEY (tenant_id, quota, member_id)
);
CREATE INDEX tenancy_quota_members_since ON tenancy_quota_members (tenant_id, quota, since);

CREATE TABLE tenancy_rate_windows (
    tenant_id     BLOB NOT NULL,
    quota         TEXT NOT NULL,
    window_start  TEXT NOT NULL,
    used          INTEGER NOT NULL CHECK (used >= 0),
    PRIMARY KEY (tenant_id, quota, window_start)
);

CREATE TABLE tenancy_usage_records (
    tenant_id  BLOB NOT NULL,
    record_id  BLOB NOT NULL,
    metric     TEXT NOT NULL,
    at         TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (tenant_id, record_id)
);
CREATE INDEX tenancy_usage_records_at ON tenancy_usage_records (tenant_id, metric, at);
