-- The platform operator's view (issue 12): a listing of every tenant. Tenant transactions see
-- one tenant's row of `tenants`; the listing switches to dotmac_platform, which may read every
-- tenant's row of that table and nothing else (as dotmac_relay may the outbox).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dotmac_platform') THEN
        CREATE ROLE dotmac_platform NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$
BEGIN
    EXECUTE format('GRANT dotmac_platform TO %I', current_user);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO dotmac_platform', current_schema());
END $$;

GRANT SELECT ON tenants TO dotmac_platform;
CREATE POLICY tenants_platform_read ON tenants FOR SELECT TO dotmac_platform USING (true);
