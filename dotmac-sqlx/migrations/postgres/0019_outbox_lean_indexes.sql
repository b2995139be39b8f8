-- Every outbox row is written once per event by every write of every domain (a rating run
-- writes one per charge), and each index costs each of those writes. Two of the outbox's six
-- indexes serve no query:
-- * `outbox_tenant (tenant_id, seq)` (0001) has exactly the columns of the primary key that
--   0005 gave the table, `(tenant_id, seq)`: the same index twice.
-- * `outbox_seq (seq)` (0005) was for the relay, which claims and marks events by `seq` alone;
--   since 0007 every such statement also asks for `status = 'pending'`, which the partial
--   index `outbox_pending (seq) WHERE status = 'pending'` answers, and every other statement
--   names the tenant, which the primary key answers.
-- SQLite keeps its `outbox_tenant`: there the primary key is the rowid `seq` alone.
DROP INDEX IF EXISTS outbox_tenant;
DROP INDEX IF EXISTS outbox_seq;
