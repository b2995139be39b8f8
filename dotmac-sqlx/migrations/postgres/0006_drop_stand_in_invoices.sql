-- The stand-in invoice store goes: `invoices` and `invoice_lines` held invoices written by a
-- generic API (a status string and a JSON body) that the billing domain never used. Every
-- invoice lives in `billing_invoices`, written through the domain's own store (`SqlStore`) and
-- by the scale-out bill-run workers. Dropping a table drops its indexes, row-level security
-- policies, grants and foreign keys with it; the lines go first, as they reference the invoices.
DROP TABLE IF EXISTS invoice_lines;
DROP TABLE IF EXISTS invoices;
