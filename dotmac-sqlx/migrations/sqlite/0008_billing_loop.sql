-- Order to cash (issue 11): an issued invoice's status follows the payments ledger (open,
-- partially_paid, paid, void, uncollectible), and what the ledger reported is kept with it:
-- settled (payments and customer credit applied), credited (credit notes), written off, and
-- the part of the settled amount that was customer credit (shown as adjustment lines, kept in
-- the body). The columns are copies of the body's figures for queries (receivables by status,
-- credit applied), written with every status or settlement change; invoices issued before this
-- migration had nothing reported on them. Amounts are exact decimal text, as `total` is.
--
-- A subscription's suspension (status `suspended`, `suspended_since`) is in its body, which is
-- only ever read and written whole.
ALTER TABLE billing_invoices ADD COLUMN amount_paid TEXT NOT NULL DEFAULT '0';
ALTER TABLE billing_invoices ADD COLUMN amount_credited TEXT NOT NULL DEFAULT '0';
ALTER TABLE billing_invoices ADD COLUMN amount_written_off TEXT NOT NULL DEFAULT '0';
ALTER TABLE billing_invoices ADD COLUMN credit_applied TEXT NOT NULL DEFAULT '0';
