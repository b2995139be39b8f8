-- Partners (issue 14): commission plans, partner accounts, customers' attributions, one
-- append-only commission ledger per partner, the sources (outbox events, payout runs,
-- operators' facts) each ledger write came from, and payout runs. Records are stored whole as
-- JSON (`body`, the domain's own serde) beside the columns queries filter and constrain on.

CREATE TABLE partner_plans (
    tenant_id  BLOB NOT NULL,
    plan_id    BLOB NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, plan_id)
);

-- Saved whole; `version` is the optimistic-concurrency check (n replaces n - 1 only).
CREATE TABLE partner_accounts (
    tenant_id   BLOB NOT NULL,
    partner_id  BLOB NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, partner_id)
);

CREATE TABLE partner_attributions (
    tenant_id    BLOB NOT NULL,
    customer_id  BLOB NOT NULL,
    version      INTEGER NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

-- Every partner a customer was ever attributed to (a transfer keeps the old partner's row).
CREATE TABLE partner_customers (
    tenant_id    BLOB NOT NULL,
    partner_id   BLOB NOT NULL,
    customer_id  BLOB NOT NULL,
    PRIMARY KEY (tenant_id, partner_id, customer_id)
);

-- Append-only: (partner, seq) is unique, so two writers appending the same position cannot
-- both succeed. `payment_id` is the payment an accrual is for (refunds find their ledgers by it).
CREATE TABLE partner_ledger (
    tenant_id    BLOB NOT NULL,
    partner_id   BLOB NOT NULL,
    seq          INTEGER NOT NULL,
    entry_date   TEXT NOT NULL,
    source_id    BLOB NOT NULL,
    payment_id   BLOB,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, partner_id, seq)
);
CREATE INDEX partner_ledger_payment ON partner_ledger (tenant_id, payment_id)
    WHERE payment_id IS NOT NULL;

-- One row per fact written: a replayed event writes nothing.
CREATE TABLE partner_sources (
    tenant_id  BLOB NOT NULL,
    source_id  BLOB NOT NULL,
    PRIMARY KEY (tenant_id, source_id)
);

CREATE TABLE partner_payout_runs (
    tenant_id  BLOB NOT NULL,
    run_id     BLOB NOT NULL,
    as_of      TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, run_id)
);
