-- The outbox becomes consumable (issue 11): each event names the aggregate it is about (events
-- of one aggregate are handled in order), a status (pending, handled, parked), when a failed
-- event may be tried again and its last error. Events written before this migration are each
-- their own aggregate, and those already delivered are handled.
ALTER TABLE outbox ADD COLUMN aggregate_type TEXT NOT NULL DEFAULT 'event';
ALTER TABLE outbox ADD COLUMN aggregate_id BLOB;
ALTER TABLE outbox ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'handled', 'parked'));
ALTER TABLE outbox ADD COLUMN not_before TEXT;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
UPDATE outbox SET aggregate_id = event_id;
UPDATE outbox SET status = 'handled' WHERE delivered_at IS NOT NULL;

DROP INDEX outbox_undelivered;
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
CREATE INDEX outbox_pending_aggregate ON outbox (tenant_id, aggregate_type, aggregate_id, seq)
    WHERE status = 'pending';
