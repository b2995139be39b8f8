-- dotmac-billing's stores: catalogue, accounts, subscriptions, invoices, pending charges,
-- credit notes, usage events and payment ledgers. Domain records are stored whole as JSON
-- (`body`, the domain's own serde), next to the columns that queries filter, order and
-- constrain on; amounts that SQL sees are exact (decimal TEXT).

CREATE TABLE billing_products (
    tenant_id   BLOB NOT NULL,
    product_id  BLOB NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, product_id)
);

CREATE TABLE billing_plans (
    tenant_id  BLOB NOT NULL,
    plan_id    BLOB NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, plan_id)
);

CREATE TABLE billing_accounts (
    tenant_id    BLOB NOT NULL,
    customer_id  BLOB NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

-- `revision` is the optimistic-concurrency version: a commit names the revision it read.
CREATE TABLE billing_subscriptions (
    tenant_id        BLOB NOT NULL,
    subscription_id  BLOB NOT NULL,
    customer_id      BLOB NOT NULL,
    revision         INTEGER NOT NULL,
    body             TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id)
);
CREATE INDEX billing_subscriptions_customer ON billing_subscriptions (tenant_id, customer_id);

-- doc_key is the bill run's idempotency key: one document per key, ever.
CREATE TABLE billing_invoices (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    BLOB NOT NULL,
    invoice_id   BLOB NOT NULL,
    doc_key      TEXT NOT NULL,
    customer_id  BLOB NOT NULL,
    number       INTEGER,
    status       TEXT NOT NULL,
    issue_date   TEXT NOT NULL,
    currency     TEXT NOT NULL,
    total        TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (tenant_id, invoice_id),
    UNIQUE (tenant_id, doc_key)
);
CREATE INDEX billing_invoices_customer ON billing_invoices (tenant_id, customer_id, issue_date);

CREATE TABLE billing_pending_charges (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    BLOB NOT NULL,
    charge_id    BLOB NOT NULL,
    customer_id  BLOB NOT NULL,
    consumed     INTEGER NOT NULL,
    body         TEXT NOT NULL,
    -- Kept after invoicing, so that a retried add of an invoiced charge is a no-op.
    UNIQUE (tenant_id, charge_id)
);
CREATE INDEX billing_pending_customer ON billing_pending_charges (tenant_id, customer_id) WHERE NOT consumed;

CREATE TABLE billing_credit_notes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   BLOB NOT NULL,
    note_id     BLOB NOT NULL,
    invoice_id  BLOB NOT NULL,
    number      INTEGER NOT NULL,
    total       TEXT NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (tenant_id, note_id)
);
CREATE INDEX billing_credit_notes_invoice ON billing_credit_notes (tenant_id, invoice_id);

-- Usage events: the primary key is the idempotency key.
CREATE TABLE usage_events (
    tenant_id        BLOB NOT NULL,
    event_id         BLOB NOT NULL,
    customer_id      BLOB NOT NULL,
    subscription_id  BLOB,
    meter_id         BLOB NOT NULL,
    quantity         TEXT NOT NULL,
    occurred_at      TEXT NOT NULL,
    properties       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX usage_events_lookup ON usage_events (tenant_id, customer_id, meter_id, occurred_at);

-- Payment ledgers: append-only; (customer, sequence) is unique, so two writers appending the
-- same position cannot both succeed.
CREATE TABLE payment_ledger (
    tenant_id    BLOB NOT NULL,
    customer_id  BLOB NOT NULL,
    sequence     INTEGER NOT NULL,
    entry_date   TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, sequence)
);

-- Each invoice's dunning state (steps taken, suspension), replaced as collections advance.
CREATE TABLE dunning_states (
    tenant_id   BLOB NOT NULL,
    invoice_id  BLOB NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id)
);
