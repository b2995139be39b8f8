-- Partners (issue 14): commission plans, partner accounts, customers' attributions, one
-- append-only commission ledger per partner, the sources (outbox events, payout runs,
-- operators' facts) each ledger write came from, and payout runs. Records are stored whole as
-- JSON (`body`, the domain's own serde) beside the columns queries filter and constrain on.

CREATE TABLE partner_plans (
    tenant_id  uuid NOT NULL,
    plan_id    uuid NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, plan_id)
);

-- Saved whole; `version` is the optimistic-concurrency check (n replaces n - 1 only).
CREATE TABLE partner_accounts (
    tenant_id   uuid NOT NULL,
    partner_id  uuid NOT NULL,
    version     bigint NOT NULL,
    body        jsonb NOT NULL,
    PRIMARY KEY (tenant_id, partner_id)
);

CREATE TABLE partner_attributions (
    tenant_id    uuid NOT NULL,
    customer_id  uuid NOT NULL,
    version      bigint NOT NULL,
    body         jsonb NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

-- Every partner a customer was ever attributed to (a transfer keeps the old partner's row).
CREATE TABLE partner_customers (
    tenant_id    uuid NOT NULL,
    partner_id   uuid NOT NULL,
    customer_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, partner_id, customer_id)
);

-- Append-only: (partner, seq) is unique, so two writers appending the same position cannot
-- both succeed. `payment_id` is the payment an accrual is for (refunds find their ledgers by it).
CREATE TABLE partner_ledger (
    tenant_id    uuid NOT NULL,
    partner_id   uuid NOT NULL,
    seq          bigint NOT NULL,
    entry_date   date NOT NULL,
    source_id    uuid NOT NULL,
    payment_id   uuid,
    body         jsonb NOT NULL,
    PRIMARY KEY (tenant_id, partner_id, seq)
);
CREATE INDEX partner_ledger_payment ON partner_ledger (tenant_id, payment_id)
    WHERE payment_id IS NOT NULL;

-- One row per fact written: a replayed event writes nothing.
CREATE TABLE partner_sources (
    tenant_id  uuid NOT NULL,
    source_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, source_id)
);

CREATE TABLE partner_payout_runs (
    tenant_id  uuid NOT NULL,
    run_id     uuid NOT NULL,
    as_of      date NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, run_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['partner_plans', 'partner_accounts', 'partner_attributions', 'partner_customers', 'partner_ledger', 'partner_sources', 'partner_payout_runs']
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
