-- Every key that names a record leads with tenant_id.
--
-- Ids were unique across tenants (invoices.invoice_id, bill_runs.run_id, outbox.event_id): a
-- tenant learnt that another tenant's id existed from a duplicate error, and an event whose id
-- another tenant had used was dropped. Keys are per tenant now; foreign keys follow their
-- parents' keys.
--
-- SQLite cannot change a table's keys in place: each table is rebuilt (new table, copy, drop,
-- rename; a rename rewrites the foreign keys that name the table). Children are dropped before
-- their parents, so that no implicit delete meets a reference.
--
-- `seq INTEGER PRIMARY KEY AUTOINCREMENT` stays as it is (outbox, support_sla_records,
-- billing_invoices, billing_pending_charges, billing_credit_notes): it is SQLite's row
-- address (the rowid), not an index, and one SQLite file is never sharded.

CREATE TABLE bill_runs_v5 (
    tenant_id    BLOB NOT NULL,
    run_id       BLOB NOT NULL,
    as_of        TEXT NOT NULL,
    chunk_count  INTEGER NOT NULL CHECK (chunk_count >= 0),
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, run_id)
);
INSERT INTO bill_runs_v5 (tenant_id, run_id, as_of, chunk_count, created_at)
    SELECT tenant_id, run_id, as_of, chunk_count, created_at FROM bill_runs;

CREATE TABLE bill_run_chunks_v5 (
    tenant_id         BLOB NOT NULL,
    run_id            BLOB NOT NULL,
    chunk_no          INTEGER NOT NULL CHECK (chunk_no >= 0),
    items             TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    claimed_by        TEXT,
    lease_expires_at  TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    completed_at      TEXT,
    PRIMARY KEY (tenant_id, run_id, chunk_no),
    FOREIGN KEY (tenant_id, run_id) REFERENCES bill_runs_v5 (tenant_id, run_id)
);
INSERT INTO bill_run_chunks_v5 (tenant_id, run_id, chunk_no, items, status, claimed_by,
        lease_expires_at, attempts, completed_at)
    SELECT tenant_id, run_id, chunk_no, items, status, claimed_by, lease_expires_at, attempts,
        completed_at
    FROM bill_run_chunks;

CREATE TABLE invoices_v5 (
    tenant_id        BLOB NOT NULL,
    invoice_id       BLOB NOT NULL,
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
    PRIMARY KEY (tenant_id, invoice_id),
    UNIQUE (tenant_id, series, number),
    UNIQUE (tenant_id, run_id, subscription_id)
);
INSERT INTO invoices_v5 (tenant_id, invoice_id, series, number, run_id, customer_id,
        subscription_id, currency, issued_on, total, status, version, body)
    SELECT tenant_id, invoice_id, series, number, run_id, customer_id, subscription_id,
        currency, issued_on, total, status, version, body
    FROM invoices;

CREATE TABLE invoice_lines_v5 (
    tenant_id    BLOB NOT NULL,
    invoice_id   BLOB NOT NULL,
    line_no      INTEGER NOT NULL,
    description  TEXT NOT NULL,
    quantity     TEXT NOT NULL,
    unit_price   TEXT NOT NULL,
    amount       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id, line_no),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices_v5 (tenant_id, invoice_id)
        ON DELETE CASCADE
);
INSERT INTO invoice_lines_v5 (tenant_id, invoice_id, line_no, description, quantity,
        unit_price, amount)
    SELECT tenant_id, invoice_id, line_no, description, quantity, unit_price, amount
    FROM invoice_lines;

CREATE TABLE outbox_v5 (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id         BLOB NOT NULL,
    event_id          BLOB NOT NULL,
    event_type        TEXT NOT NULL,
    occurred_at       TEXT NOT NULL,
    payload           TEXT NOT NULL,
    claimed_by        TEXT,
    claim_expires_at  TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    delivered_at      TEXT,
    UNIQUE (tenant_id, event_id)
);
INSERT INTO outbox_v5 (seq, tenant_id, event_id, event_type, occurred_at, payload, claimed_by,
        claim_expires_at, attempts, delivered_at)
    SELECT seq, tenant_id, event_id, event_type, occurred_at, payload, claimed_by,
        claim_expires_at, attempts, delivered_at
    FROM outbox;

DROP TABLE bill_run_chunks;
DROP TABLE bill_runs;
DROP TABLE invoice_lines;
DROP TABLE invoices;
DROP TABLE outbox;

ALTER TABLE bill_runs_v5 RENAME TO bill_runs;
ALTER TABLE bill_run_chunks_v5 RENAME TO bill_run_chunks;
ALTER TABLE invoices_v5 RENAME TO invoices;
ALTER TABLE invoice_lines_v5 RENAME TO invoice_lines;
ALTER TABLE outbox_v5 RENAME TO outbox;

CREATE INDEX bill_run_chunks_pending ON bill_run_chunks (tenant_id, run_id, chunk_no)
    WHERE status = 'pending';
CREATE INDEX invoices_customer ON invoices (tenant_id, customer_id);
CREATE INDEX outbox_undelivered ON outbox (seq) WHERE delivered_at IS NULL;
CREATE INDEX outbox_tenant ON outbox (tenant_id, seq);
