-- dotmac-billing's stores: catalogue, accounts, subscriptions, invoices, pending charges,
-- credit notes, usage events and payment ledgers. Domain records are stored whole as JSON
-- (`body`, the domain's own serde), next to the columns that queries filter, order and
-- constrain on; amounts that SQL sees are exact (NUMERIC).

CREATE TABLE billing_products (
    tenant_id   uuid NOT NULL,
    product_id  uuid NOT NULL,
    body        jsonb NOT NULL,
    PRIMARY KEY (tenant_id, product_id)
);

CREATE TABLE billing_plans (
    tenant_id  uuid NOT NULL,
    plan_id    uuid NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, plan_id)
);

CREATE TABLE billing_accounts (
    tenant_id    uuid NOT NULL,
    customer_id  uuid NOT NULL,
    body         jsonb NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

-- `revision` is the optimistic-concurrency version: a commit names the revision it read.
CREATE TABLE billing_subscriptions (
    tenant_id        uuid NOT NULL,
    subscription_id  uuid NOT NULL,
    customer_id      uuid NOT NULL,
    revision         bigint NOT NULL,
    body             jsonb NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id)
);
CREATE INDEX billing_subscriptions_customer ON billing_subscriptions (tenant_id, customer_id);

-- doc_key is the bill run's idempotency key: one document per key, ever.
CREATE TABLE billing_invoices (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    invoice_id   uuid NOT NULL,
    doc_key      text NOT NULL,
    customer_id  uuid NOT NULL,
    number       bigint,
    status       text NOT NULL,
    issue_date   date NOT NULL,
    currency     text NOT NULL,
    total        numeric NOT NULL,
    body         jsonb NOT NULL,
    UNIQUE (tenant_id, invoice_id),
    UNIQUE (tenant_id, doc_key)
);
CREATE INDEX billing_invoices_customer ON billing_invoices (tenant_id, customer_id, issue_date);

CREATE TABLE billing_pending_charges (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    charge_id    uuid NOT NULL,
    customer_id  uuid NOT NULL,
    consumed     boolean NOT NULL,
    body         jsonb NOT NULL,
    -- Kept after invoicing, so that a retried add of an invoiced charge is a no-op.
    UNIQUE (tenant_id, charge_id)
);
CREATE INDEX billing_pending_customer ON billing_pending_charges (tenant_id, customer_id) WHERE NOT consumed;

CREATE TABLE billing_credit_notes (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    note_id     uuid NOT NULL,
    invoice_id  uuid NOT NULL,
    number      bigint NOT NULL,
    total       numeric NOT NULL,
    body        jsonb NOT NULL,
    UNIQUE (tenant_id, note_id)
);
CREATE INDEX billing_credit_notes_invoice ON billing_credit_notes (tenant_id, invoice_id);

-- Usage events: the primary key is the idempotency key.
CREATE TABLE usage_events (
    tenant_id        uuid NOT NULL,
    event_id         uuid NOT NULL,
    customer_id      uuid NOT NULL,
    subscription_id  uuid,
    meter_id         uuid NOT NULL,
    quantity         numeric NOT NULL,
    occurred_at      timestamptz NOT NULL,
    properties       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX usage_events_lookup ON usage_events (tenant_id, customer_id, meter_id, occurred_at);

-- Payment ledgers: append-only; (customer, sequence) is unique, so two writers appending the
-- same position cannot both succeed.
CREATE TABLE payment_ledger (
    tenant_id    uuid NOT NULL,
    customer_id  uuid NOT NULL,
    sequence     bigint NOT NULL,
    entry_date   date NOT NULL,
    body         jsonb NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, sequence)
);

-- Each invoice's dunning state (steps taken, suspension), replaced as collections advance.
CREATE TABLE dunning_states (
    tenant_id   uuid NOT NULL,
    invoice_id  uuid NOT NULL,
    body        jsonb NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['billing_products', 'billing_plans', 'billing_accounts', 'billing_subscriptions', 'billing_invoices', 'billing_pending_charges', 'billing_credit_notes', 'usage_events', 'payment_ledger', 'dunning_states']
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
