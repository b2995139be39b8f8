-- dotmac-customers' stores (issue 13): customers, network services, address pools and the
-- addresses services hold, and the RADIUS accounting reader's high-water marks. Records are
-- stored whole as JSON (`body`) beside the columns queries filter, order and constrain on.
-- Every key leads with the tenant.

CREATE TABLE customers (
    tenant_id    uuid NOT NULL,
    customer_id  uuid NOT NULL,
    status       text NOT NULL,
    version      bigint NOT NULL,
    created_at   timestamptz NOT NULL,
    body         jsonb NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);
CREATE INDEX customers_status ON customers (tenant_id, status, created_at);

CREATE TABLE network_services (
    tenant_id        uuid NOT NULL,
    service_id       uuid NOT NULL,
    customer_id      uuid NOT NULL,
    subscription_id  uuid NOT NULL,
    username         text NOT NULL,
    status           text NOT NULL,
    version          bigint NOT NULL,
    body             jsonb NOT NULL,
    PRIMARY KEY (tenant_id, service_id),
    UNIQUE (tenant_id, username)
);
CREATE INDEX network_services_subscription ON network_services (tenant_id, subscription_id);
CREATE INDEX network_services_customer ON network_services (tenant_id, customer_id);

CREATE TABLE address_pools (
    tenant_id  uuid NOT NULL,
    pool_id    uuid NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, pool_id)
);

-- One row per address held: the primary key is what keeps two services off one address
-- (concurrent creators: the second insert fails and takes the next free address).
CREATE TABLE address_assignments (
    tenant_id    uuid NOT NULL,
    address      bigint NOT NULL,
    pool_id      uuid,
    service_id   uuid NOT NULL,
    PRIMARY KEY (tenant_id, address)
);
CREATE INDEX address_assignments_service ON address_assignments (tenant_id, service_id);

-- The RADIUS accounting reader: per tenant and source, the last radacct change it counted
-- and what it last saw of each open session (`body`).
CREATE TABLE radius_ingest_marks (
    tenant_id  uuid NOT NULL,
    source     text NOT NULL,
    body       jsonb NOT NULL,
    PRIMARY KEY (tenant_id, source)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'network_services', 'address_pools',
                             'address_assignments', 'radius_ingest_marks']
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
