-- Pending charges are written in bulk by every usage rating run (one per subscription and
-- period) and their body, like a subscription's (migration 0004), is only ever read and written
-- whole, never queried inside: `json`, not `jsonb`. A write only validates the text instead of
-- building the binary form (a quarter of the server's time for a rating run's charge insert,
-- measured in docs/benchmarks.md), and a read returns the text as stored instead of printing
-- the binary form again.
ALTER TABLE billing_pending_charges ALTER COLUMN body TYPE json USING body::json;
