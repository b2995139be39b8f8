-- Usage rating's read of what is already billed (issue 11): a charge's subscription and the
-- first day of its period, so that rating reads the usage charges of a chunk's subscriptions
-- from the periods it rates on, instead of every invoice of every customer. Charges are kept
-- after they are invoiced, and every usage line on an invoice comes from one. The day is
-- chrono's `num_days_from_ce` (0001-01-01 is day 1), as on SQLite. NULL: a charge of the
-- customer's (no subscription) or of no period.
ALTER TABLE billing_pending_charges ADD COLUMN subscription_id uuid;
ALTER TABLE billing_pending_charges ADD COLUMN period_day bigint;
-- The backfill sees every tenant's rows: row-level security is forced on this table (0003),
-- so it is lifted for the owner running the migration, and forced again after.
ALTER TABLE billing_pending_charges NO FORCE ROW LEVEL SECURITY;
UPDATE billing_pending_charges
SET subscription_id = (body->>'subscription')::uuid,
    period_day = ((body->'period'->>'start')::date - date '0001-01-01') + 1;
ALTER TABLE billing_pending_charges FORCE ROW LEVEL SECURITY;
CREATE INDEX billing_pending_subscription
    ON billing_pending_charges (tenant_id, subscription_id, period_day);
