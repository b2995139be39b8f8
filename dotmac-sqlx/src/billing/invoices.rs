//! [`InvoiceStore`]: pending charges, commits, invoices and credit notes. Every write puts its
//! outbox events in its own transaction.

use super::*;
use chrono::NaiveDate;
use dotmac_billing::BilledUsage;
use dotmac_core::outbox::OutboxEvent;

/// The write of [`InvoiceStore::update_invoice`]: status, body and the settlement columns.
const UPDATE_INVOICE: &str = "UPDATE billing_invoices SET status = $3, body = $4, \
     amount_paid = $5, amount_credited = $6, amount_written_off = $7, credit_applied = $8 \
     WHERE tenant_id = $1 AND invoice_id = $2";

impl InvoiceStore for SqlStore {
    #[tracing::instrument(name = "dotmac.store.add_pending_charge", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn add_pending_charge(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
        events: Vec<OutboxEvent>,
    ) -> Result<bool> {
        let binds = crate::keyed::pending_charge_binds(tenant, &charge)?;
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let written = d::docs::execute(&mut tx, crate::keyed::INSERT_PENDING_CHARGE, &binds)
                .await
                .map_err(storage)?;
            let added = written == Written::Rows(1);
            if added {
                d::outbox::insert_core(&mut tx, tenant, &events).await.map_err(storage)?;
            }
            tx.commit().await.during("commit pending charge").map_err(storage)?;
            Ok(added)
        })
    }

    #[tracing::instrument(name = "dotmac.store.add_pending_charges", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), charges = charges.len()))]
    async fn add_pending_charges(
        &self,
        tenant: TenantId,
        charges: Vec<(PendingCharge, Vec<OutboxEvent>)>,
    ) -> Result<Vec<bool>> {
        if charges.is_empty() {
            return Ok(Vec::new());
        }
        // One multi-row INSERT for the whole batch (per chunk of rows on SQLite), returning
        // the ids it inserted: a charge already stored, or repeated in `charges`, is not
        // added, and only the added charges' events are written.
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let refs: Vec<&PendingCharge> = charges.iter().map(|(charge, _)| charge).collect();
            let mut inserted = d::billing::insert_pending(&mut tx, tenant, &refs)
                .await
                .map_err(storage)?;
            drop(refs);
            let mut added = Vec::with_capacity(charges.len());
            let mut events = Vec::new();
            for (charge, charge_events) in charges {
                // Removed once seen: a repeated id is added (and its events written) once.
                let new = inserted.remove(&charge.id.as_uuid());
                if new {
                    events.extend(charge_events);
                }
                added.push(new);
            }
            d::outbox::insert_core(&mut tx, tenant, &events).await.map_err(storage)?;
            tx.commit().await.during("commit pending charges").map_err(storage)?;
            Ok(added)
        })
    }

    #[tracing::instrument(name = "dotmac.store.pending_charges", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn pending_charges(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<PendingCharge>> {
        self.db
            .read_all(
                tenant,
                "pending charge",
                "SELECT body FROM billing_pending_charges \
                 WHERE tenant_id = $1 AND customer_id = $2 AND NOT consumed ORDER BY seq",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.pending_charges_for", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), customers = customers.len()))]
    async fn pending_charges_for(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<Vec<PendingCharge>> {
        self.customer_bodies(
            tenant,
            "SELECT body FROM billing_pending_charges",
            customers,
            "AND NOT consumed ORDER BY seq",
        )
        .await
    }

    /// From the charges alone (kept after they are invoiced; every usage line on an invoice
    /// comes from one), by subscription and period: rating never reads an invoice.
    #[tracing::instrument(name = "dotmac.store.billed_usage", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), subscriptions = subscriptions.len()))]
    async fn billed_usage(
        &self,
        tenant: TenantId,
        subscriptions: &[(CustomerId, SubscriptionId)],
        since: NaiveDate,
    ) -> Result<Vec<BilledUsage>> {
        if subscriptions.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = subscriptions.iter().map(|(_, s)| s.as_uuid()).collect();
        let since = i64::from(chrono::Datelike::num_days_from_ce(&since));
        let charges = dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await.map_err(storage)?;
            let charges = d::billing::charges_of_subscriptions(&mut tx, tenant, &ids, since)
                .await
                .map_err(storage)?;
            tx.commit().await.during("end read").map_err(storage)?;
            charges
        });
        Ok(charges.iter().filter_map(BilledUsage::of_charge).collect())
    }

    #[tracing::instrument(name = "dotmac.store.commit", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), invoices = commit.invoices.len()))]
    async fn commit(&self, tenant: TenantId, commit: BillingCommit) -> Result<CommitResult> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            match d::billing::apply_commit(&mut tx, tenant, commit).await? {
                Applied::Done(result) => {
                    tx.commit().await.during("commit billing").map_err(storage)?;
                    Ok(result)
                }
                Applied::Refused(e) => {
                    tx.rollback().await.during("roll back billing").map_err(storage)?;
                    Err(e)
                }
            }
        })
    }

    /// One transaction for the whole batch: a stale subscription's commit is skipped (its
    /// slot holds the error) before it writes anything, the rest commit together.
    #[tracing::instrument(name = "dotmac.store.commit_batch", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), commits = commits.len()))]
    async fn commit_batch(
        &self,
        tenant: TenantId,
        commits: Vec<BillingCommit>,
    ) -> Result<Vec<Result<CommitResult>>> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let results = d::billing::apply_batch(&mut tx, tenant, commits)
                .await
                .map_err(storage)?;
            tx.commit().await.during("commit billing batch").map_err(storage)?;
            Ok(results)
        })
    }

    #[tracing::instrument(name = "dotmac.store.invoice", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn invoice(&self, tenant: TenantId, invoice: InvoiceId) -> Result<Option<Invoice>> {
        self.db
            .read_one::<rows::InvoiceRow>(
                tenant,
                "invoice",
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2",
                &[id(tenant), Bind::Uuid(invoice.as_uuid())],
            )
            .await
            .map(|row| row.map(Invoice::from))
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.invoices_of", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    #[tracing::instrument(name = "dotmac.store.invoices_of_customers", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name(), customers = customers.len()))]
    async fn invoices_of_customers(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<Vec<Invoice>> {
        let rows: Vec<rows::InvoiceRow> = self
            .customer_bodies(
                tenant,
                "SELECT body FROM billing_invoices",
                customers,
                "ORDER BY customer_id, issue_date, number NULLS FIRST, seq",
            )
            .await?;
        Ok(rows.into_iter().map(Invoice::from).collect())
    }

    async fn invoices_of(&self, tenant: TenantId, customer: CustomerId) -> Result<Vec<Invoice>> {
        self.db
            .read_all::<rows::InvoiceRow>(
                tenant,
                "invoice",
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY issue_date, number NULLS FIRST, seq",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map(|rows| rows.into_iter().map(Invoice::from).collect())
            .map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.set_invoice_status", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn set_invoice_status(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        to: InvoiceStatus,
        events: Vec<OutboxEvent>,
    ) -> Result<Invoice> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let sql = if d::IS_POSTGRES {
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE"
            } else {
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2"
            };
            let stored = d::docs::bodies(&mut tx, sql, &[id(tenant), Bind::Uuid(invoice.as_uuid())])
                .await
                .map_err(storage)?;
            let Some(stored) = stored.into_iter().next() else {
                return Err(BillingError::InvoiceNotFound(invoice));
            };
            let stored: rows::InvoiceRow = from_json("invoice", stored).map_err(storage)?;
            let mut stored = Invoice::from(stored);
            let was = stored.status;
            stored.transition(to)?;
            if was == InvoiceStatus::Draft && to == InvoiceStatus::Open {
                let n = d::numbers::reserve(&mut tx, tenant, &stored.number_series(), 1)
                    .await
                    .map_err(storage)?;
                stored.number = Some(number(n));
            }
            let binds = invoice_binds(tenant, &stored)?;
            d::docs::execute(
                &mut tx,
                "UPDATE billing_invoices SET number = $5, status = $6, body = $10 \
                 WHERE tenant_id = $1 AND invoice_id = $2 \
                   AND doc_key = $3 AND customer_id = $4 AND issue_date = $7 AND currency = $8 \
                   AND total = $9",
                &binds,
            )
            .await
            .map_err(storage)?;
            d::outbox::insert_core(&mut tx, tenant, &events).await.map_err(storage)?;
            tx.commit().await.during("commit invoice status").map_err(storage)?;
            Ok(stored)
        })
    }

    #[tracing::instrument(name = "dotmac.store.update_invoice", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn update_invoice(
        &self,
        tenant: TenantId,
        expected: Invoice,
        updated: Invoice,
        events: Vec<OutboxEvent>,
    ) -> Result<Invoice> {
        dotmac_billing::internal::check_invoice_update(&expected, &updated)?;
        let invoice = expected.id;
        let binds = [
            id(tenant),
            Bind::Uuid(invoice.as_uuid()),
            Bind::Text(status_text(updated.status)?),
            body("invoice", &rows::InvoiceRow::from(&updated))?,
            Bind::Dec(updated.amount_paid().amount()),
            Bind::Dec(updated.amount_credited().amount()),
            Bind::Dec(updated.amount_written_off().amount()),
            Bind::Dec(updated.credit_applied().amount()),
        ];
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let sql = if d::IS_POSTGRES {
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE"
            } else {
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2"
            };
            let stored = d::docs::bodies(&mut tx, sql, &[id(tenant), Bind::Uuid(invoice.as_uuid())])
                .await
                .map_err(storage)?;
            let Some(stored) = stored.into_iter().next() else {
                return Err(BillingError::InvoiceNotFound(invoice));
            };
            let stored: rows::InvoiceRow = from_json("invoice", stored).map_err(storage)?;
            if Invoice::from(stored) != expected {
                return Err(BillingError::InvoiceChanged(invoice));
            }
            d::docs::execute(&mut tx, UPDATE_INVOICE, &binds).await.map_err(storage)?;
            d::outbox::insert_core(&mut tx, tenant, &events).await.map_err(storage)?;
            tx.commit().await.during("commit invoice update").map_err(storage)?;
            Ok(updated)
        })
    }

    #[tracing::instrument(name = "dotmac.store.insert_credit_note", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn insert_credit_note(
        &self,
        tenant: TenantId,
        note: CreditNote,
        events: Vec<OutboxEvent>,
    ) -> Result<CreditNote> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let note = d::keyed::insert_credit_note(&mut tx, tenant, note).await?;
            let events = dotmac_billing::internal::numbered_credit_note_events(&note, events);
            d::outbox::insert_core(&mut tx, tenant, &events).await.map_err(storage)?;
            tx.commit().await.during("commit credit note").map_err(storage)?;
            Ok(note)
        })
    }

    #[tracing::instrument(name = "dotmac.store.idempotency_record", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>> {
        self.keyed_record(tenant, key).await.map_err(storage)
    }

    #[tracing::instrument(name = "dotmac.store.add_pending_charge_keyed", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn add_pending_charge_keyed(
        &self,
        tenant: TenantId,
        charge: PendingCharge,
        keyed: &KeyedRequest,
        events: Vec<OutboxEvent>,
    ) -> Result<KeyedWrite<bool>> {
        self.add_pending_keyed(tenant, charge, keyed, &events).await
    }

    #[tracing::instrument(name = "dotmac.store.insert_credit_note_keyed", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn insert_credit_note_keyed(
        &self,
        tenant: TenantId,
        note: CreditNote,
        keyed: &KeyedRequest,
        events: Vec<OutboxEvent>,
    ) -> Result<KeyedWrite<CreditNote>> {
        self.insert_note_keyed(tenant, note, keyed, &events).await
    }

    #[tracing::instrument(name = "dotmac.store.credit_notes_of", level = "debug", skip_all, fields(tenant = %tenant, backend = self.db.backend_name()))]
    async fn credit_notes_of(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Vec<CreditNote>> {
        self.db
            .read_all(
                tenant,
                "credit note",
                "SELECT body FROM billing_credit_notes WHERE tenant_id = $1 AND invoice_id = $2 \
                 ORDER BY seq",
                &[id(tenant), Bind::Uuid(invoice.as_uuid())],
            )
            .await
            .map_err(storage)
    }
}
