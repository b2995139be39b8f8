-- dotmac-customers' stores (issue 13): customers, network services, address pools and the
-- addresses services hold, and the RADIUS accounting reader's high-water marks. Records are
-- stored whole as JSON (`body`) beside the columns queries filter, order and constrain on.
-- Every key leads with the tenant.

CREATE TABLE customers (
    tenant_id    BLOB NOT NULL,
    customer_id  BLOB NOT NULL,
    status       TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);
CREATE INDEX customers_status ON customers (tenant_id, status, created_at);

CREATE TABLE network_services (
    tenant_id        BLOB NOT NULL,
    service_id       BLOB NOT NULL,
    customer_id      BLOB NOT NULL,
    subscription_id  BLOB NOT NULL,
    username         TEXT NOT NULL,
    status           TEXT NOT NULL,
    version          INTEGER NOT NULL,
    body             TEXT NOT NULL,
    PRIMARY KEY (tenant_id, service_id),
    UNIQUE (tenant_id, username)
);
CREATE INDEX network_services_subscription ON network_services (tenant_id, subscription_id);
CREATE INDEX network_services_customer ON network_services (tenant_id, customer_id);

CREATE TABLE address_pools (
    tenant_id  BLOB NOT NULL,
    pool_id    BLOB NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, pool_id)
);

CREATE TABLE address_assignments (
    tenant_id    BLOB NOT NULL,
    address      INTEGER NOT NULL,
    pool_id      BLOB,
    service_id   BLOB NOT NULL,
    PRIMARY KEY (tenant_id, address)
);
CREATE INDEX address_assignments_service ON address_assignments (tenant_id, service_id);

CREATE TABLE radius_ingest_marks (
    tenant_id  BLOB NOT NULL,
    source     TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, source)
);
