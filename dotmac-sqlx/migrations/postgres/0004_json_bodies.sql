-- Bodies that are written often and only ever read and written whole, never queried inside.
--
-- Subscriptions are rewritten by every bill run (one UPDATE per subscription and period), and
-- their body is only ever read and written whole, never queried inside. So:
--
-- * the body is `json`, not `jsonb`: a write only validates the text instead of building the
--   binary form, and a read returns the text as stored instead of printing the binary form
--   again (about half of the bill run's subscription update on the server);
-- * the table leaves half of each page free, so that the update of a subscription can put its
--   new version on the same page without touching the indexes (a HOT update: none of the
--   indexed columns changes). Only pages written from now on are half-filled.
ALTER TABLE billing_subscriptions ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE billing_subscriptions SET (fillfactor = 50);

-- Outbox payloads: one per event, written in the transaction that raises the event (a bill run
-- writes one per invoice), read whole by the relay: `json` too.
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
