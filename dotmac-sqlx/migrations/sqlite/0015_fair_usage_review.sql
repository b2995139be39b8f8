-- Fair usage (issue 13, step 5): when a network service's fair-usage verdict can next change
-- without new usage (the end of a counter's period while a slowdown, a block or a top-up
-- holds), in Unix seconds, so the sweep reads the services due and no other. The counters
-- themselves are part of the service's record (`body`), saved with it in one versioned
-- write. NULL: nothing to review.
ALTER TABLE network_services ADD COLUMN fup_review_at INTEGER;
CREATE INDEX network_services_fup_review ON network_services (tenant_id, fup_review_at)
    WHERE fup_review_at IS NOT NULL;
