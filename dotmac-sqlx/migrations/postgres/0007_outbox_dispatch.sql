-- The outbox becomes consumable (issue 11): each event names the aggregate it is about (events
-- of one aggregate are handled in order), a status (pending, handled, parked), when a failed
-- event may be tried again and its last error. Events written before this migration are each
-- their own aggregate, and those already delivered are handled.
ALTER TABLE outbox
    ADD COLUMN aggregate_type text NOT NULL DEFAULT 'event',
    ADD COLUMN aggregate_id   uuid,
    ADD COLUMN status         text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'handled', 'parked')),
    ADD COLUMN not_before     timestamptz,
    ADD COLUMN last_error     text;
UPDATE outbox SET aggregate_id = event_id;
UPDATE outbox SET status = 'handled' WHERE delivered_at IS NOT NULL;
ALTER TABLE outbox ALTER COLUMN aggregate_id SET NOT NULL;

DROP INDEX outbox_undelivered;
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
-- "Is an earlier event of this aggregate still waiting?", asked for every claimed event.
CREATE INDEX outbox_pending_aggregate ON outbox (tenant_id, aggregate_type, aggregate_id, seq)
    WHERE status = 'pending';
