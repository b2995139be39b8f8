-- DotMac storage foundation for SQLite.
--
-- SQLite has no row-level security: every table is keyed by tenant_id and every query of
-- dotmac-sqlx filters on it. Money is stored as exact decimal TEXT (never REAL); UUIDs as 16-byte
-- BLOBs; instants as RFC 3339 TEXT; dates as ISO TEXT; JSON as TEXT.

CREATE TABLE tenants (
    tenant_id   BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE outbox (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id         BLOB NOT NULL,
    event_id          BLOB NOT NULL UNIQUE,
    event_type        TEXT NOT NULL,
    occurred_at       TEXT NOT NULL,
    payload           TEXT NOT NULL,
    claimed_by        TEXT,
    claim_expires_at  TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    delivered_at      TEXT
);
CREATE INDEX outbox_undelivered ON outbox (seq) WHERE delivered_at IS NULL;
CREATE INDEX outbox_tenant ON outbox (tenant_id, seq);

CREATE TABLE invoice_counters (
    tenant_id    BLOB NOT NULL,
    series       TEXT NOT NULL,
    last_number  INTEGER NOT NULL CHECK (last_number >= 0),
    PRIMARY KEY (tenant_id, series)
);

CREATE TABLE idempotency_keys (
    tenant_id   BLOB NOT NULL,
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    reference   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, scope, key)
);

CREATE TABLE bill_runs (
    tenant_id    BLOB NOT NULL,
    run_id       BLOB PRIMARY KEY,
    as_of        TEXT NOT NULL,
    chunk_count  INTEGER NOT NULL CHECK (chunk_count >= 0),
    created_at   TEXT NOT NULL
);

CREATE TABLE bill_run_chunks (
    tenant_id         BLOB NOT NULL,
    run_id            BLOB NOT NULL REFERENCES bill_runs (run_id),
    chunk_no          INTEGER NOT NULL CHECK (chunk_no >= 0),
    items             TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    claimed_by        TEXT,
    lease_expires_at  TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    completed_at      TEXT,
    PRIMARY KEY (run_id, chunk_no)
);
CREATE INDEX bill_run_chunks_pending ON bill_run_chunks (run_id, chunk_no) WHERE status = 'pending';

CREATE TABLE invoices (
    tenant_id        BLOB NOT NULL,
    invoice_id       BLOB PRIMARY KEY,
    series           TEXT NOT NULL,
    number           INTEGER NOT NULL,
    run_id           BLOB,
    customer_id      BLOB NOT NULL,
    subscription_id  BLOB,
    currency         TEXT NOT NULL,
    issued_on        TEXT NOT NULL,
    total            TEXT NOT NULL,
    status           TEXT NOT NULL,
    version          INTEGER NOT NULL DEFAULT 1,
    body             TEXT NOT NULL,
    UNIQUE (tenant_id, series, number),
    UNIQUE (tenant_id, run_id, subscription_id)
);
CREATE INDEX invoices_customer ON invoices (tenant_id, customer_id);

CREATE TABLE invoice_lines (
    tenant_id    BLOB NOT NULL,
    invoice_id   BLOB NOT NULL REFERENCES invoices (invoice_id) ON DELETE CASCADE,
    line_no      INTEGER NOT NULL,
    description  TEXT NOT NULL,
    quantity     TEXT NOT NULL,
    unit_price   TEXT NOT NULL,
    amount       TEXT NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);
