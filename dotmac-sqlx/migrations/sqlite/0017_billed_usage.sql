-- Usage rating's read of what is already billed (issue 11): a charge's subscription and the
-- first day of its period, so that rating reads the usage charges of a chunk's subscriptions
-- from the periods it rates on, instead of every invoice of every customer. Charges are kept
-- after they are invoiced, and every usage line on an invoice comes from one. The day is
-- chrono's `num_days_from_ce` (0001-01-01 is day 1): an integer orders on both backends for
-- every date. NULL: a charge of the customer's (no subscription) or of no period.
ALTER TABLE billing_pending_charges ADD COLUMN subscription_id BLOB;
ALTER TABLE billing_pending_charges ADD COLUMN period_day INTEGER;
UPDATE billing_pending_charges
SET subscription_id = unhex(replace(json_extract(body, '$.subscription'), '-', '')),
    period_day = CAST(julianday(json_extract(body, '$.period.start'))
                      - julianday('0001-01-01') AS INTEGER) + 1;
CREATE INDEX billing_pending_subscription
    ON billing_pending_charges (tenant_id, subscription_id, period_day);
