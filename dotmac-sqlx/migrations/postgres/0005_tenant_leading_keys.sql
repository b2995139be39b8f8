-- Every primary and unique key leads with tenant_id.
--
-- Ids were unique across tenants (invoices.invoice_id, bill_runs.run_id, outbox.event_id): a
-- tenant learnt that another tenant's id existed from a duplicate error, and an event whose id
-- another tenant had used was dropped. Keys are per tenant now, which also makes every table
-- distributable by tenant_id (Citus-style sharding needs the distribution column in every
-- primary and unique key). Foreign keys follow their parents' keys.
--
-- Generated sequence numbers (`seq`) stay globally increasing; only their keys gain tenant_id.

ALTER TABLE bill_run_chunks DROP CONSTRAINT bill_run_chunks_run_id_fkey;
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_invoice_id_fkey;

ALTER TABLE bill_runs DROP CONSTRAINT bill_runs_pkey, ADD PRIMARY KEY (tenant_id, run_id);
ALTER TABLE bill_run_chunks
    DROP CONSTRAINT bill_run_chunks_pkey,
    ADD PRIMARY KEY (tenant_id, run_id, chunk_no),
    ADD FOREIGN KEY (tenant_id, run_id) REFERENCES bill_runs (tenant_id, run_id);
DROP INDEX bill_run_chunks_pending;
CREATE INDEX bill_run_chunks_pending ON bill_run_chunks (tenant_id, run_id, chunk_no)
    WHERE status = 'pending';

ALTER TABLE invoices DROP CONSTRAINT invoices_pkey, ADD PRIMARY KEY (tenant_id, invoice_id);
ALTER TABLE invoice_lines
    DROP CONSTRAINT invoice_lines_pkey,
    ADD PRIMARY KEY (tenant_id, invoice_id, line_no),
    ADD FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, invoice_id)
        ON DELETE CASCADE;

ALTER TABLE outbox
    DROP CONSTRAINT outbox_pkey,
    DROP CONSTRAINT outbox_event_id_key,
    ADD PRIMARY KEY (tenant_id, seq),
    ADD CONSTRAINT outbox_event_key UNIQUE (tenant_id, event_id);
-- The relay claims and marks every tenant's events by seq.
CREATE INDEX outbox_seq ON outbox (seq);

ALTER TABLE support_sla_records
    DROP CONSTRAINT support_sla_records_pkey, ADD PRIMARY KEY (tenant_id, seq);
ALTER TABLE billing_invoices
    DROP CONSTRAINT billing_invoices_pkey, ADD PRIMARY KEY (tenant_id, seq);
ALTER TABLE billing_pending_charges
    DROP CONSTRAINT billing_pending_charges_pkey, ADD PRIMARY KEY (tenant_id, seq);
ALTER TABLE billing_credit_notes
    DROP CONSTRAINT billing_credit_notes_pkey, ADD PRIMARY KEY (tenant_id, seq);
