//! `dotmac-billing`'s storage traits: catalogue, accounts, subscriptions, invoices, pending
//! charges, credit notes, usage events and payment ledgers.

use chrono::{DateTime, Utc};
use dotmac_billing::dunning::{DunningState, DunningStore};
use dotmac_billing::payments::{LedgerEntry, PaymentStore};
use dotmac_billing::usage::{MeterId, UsageEvent, UsageStore};
use dotmac_billing::{
    BillingCommit, BillingError, CatalogStore, CommitResult, CreditNote, CreditRequest,
    CustomerAccount, DocumentKey, DocumentNumber, Invoice, InvoiceStatus, InvoiceStore,
    IssuedInvoice, PendingCharge, Plan, Product, Subscription, SubscriptionStore, credit_note,
};
use dotmac_core::{CustomerId, InvoiceId, PlanId, SubscriptionId, TenantId};

use sqlx::Row;
use uuid::Uuid;

use crate::db::{dispatch, for_each_dialect};
use crate::docs::{Bind, Written, from_json, json};
use crate::error::{Context, SqlError};
use crate::store::SqlStore;

type Result<T> = std::result::Result<T, BillingError>;

/// The number series of invoices and credit notes in `invoice_counters`.
const INVOICE_SERIES: &str = "billing.invoice";
const CREDIT_NOTE_SERIES: &str = "billing.credit_note";

/// Storage failures as billing errors.
///
/// `BillingError` has no variant for a failed storage call yet, so the failure is reported as
/// a configuration error of the storage backend; a duplicate key keeps its meaning.
fn storage(error: SqlError) -> BillingError {
    match error {
        SqlError::Duplicate { what, key } => BillingError::AlreadyExists { what, id: key },
        SqlError::Core(core) => BillingError::Core(core),
        SqlError::Billing(billing) => billing,
        _ => BillingError::InvalidConfiguration {
            what: "storage backend (dotmac-sqlx)",
            reason: "a database call failed; check the connection and the server's log",
        },
    }
}

fn id(tenant: TenantId) -> Bind {
    Bind::Uuid(tenant.as_uuid())
}

fn body<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Bind> {
    json(what, value).map_err(storage)
}

fn key_text(key: &DocumentKey) -> Result<String> {
    serde_json::to_string(key).map_err(|source| {
        storage(SqlError::Json {
            what: "document key",
            source,
        })
    })
}

fn status_text(status: InvoiceStatus) -> Result<String> {
    match serde_json::to_value(status).map_err(|source| {
        storage(SqlError::Json {
            what: "invoice status",
            source,
        })
    })? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

fn number(n: i64) -> DocumentNumber {
    DocumentNumber(n.unsigned_abs())
}

fn invoice_binds(tenant: TenantId, invoice: &Invoice) -> Result<Vec<Bind>> {
    Ok(vec![
        id(tenant),
        Bind::Uuid(invoice.id.as_uuid()),
        Bind::Text(key_text(&invoice.key)?),
        Bind::Uuid(invoice.customer.as_uuid()),
        Bind::OptI64(
            invoice
                .number
                .map(|n| i64::try_from(n.0).unwrap_or(i64::MAX)),
        ),
        Bind::Text(status_text(invoice.status)?),
        Bind::Date(invoice.issue_date),
        Bind::Text(invoice.currency.code().to_owned()),
        Bind::Dec(invoice.total.amount()),
        body("invoice", invoice)?,
    ])
}

const INSERT_INVOICE: &str = "INSERT INTO billing_invoices (tenant_id, invoice_id, doc_key, \
     customer_id, number, status, issue_date, currency, total, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// What one commit of a batch did inside the batch's transaction.
pub(crate) enum Applied {
    /// Written.
    Done(CommitResult),
    /// Refused before writing anything (stale or unknown subscription).
    Refused(BillingError),
}

impl SqlStore {
    /// The records of `customers` in one table (`select` … `WHERE customer_id IN` … `tail`),
    /// read in one tenant transaction: the batch reads of a bill-run chunk.
    async fn customer_bodies<T: serde::de::DeserializeOwned>(
        &self,
        tenant: TenantId,
        what: &'static str,
        select: &'static str,
        customers: &[CustomerId],
        tail: &'static str,
    ) -> Result<Vec<T>> {
        let ids: Vec<Uuid> = customers.iter().map(|c| c.as_uuid()).collect();
        let bodies = dispatch!(self.db, pool, d => {
            let mut tx = d::begin_read(pool, tenant).await.map_err(storage)?;
            let bodies = d::billing::bodies_in(&mut tx, select, tenant, "customer_id", &ids, tail)
                .await
                .map_err(storage)?;
            tx.commit().await.during("end read").map_err(storage)?;
            bodies
        });
        decode_all(what, bodies)
    }
}

fn decode_all<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bodies: Vec<serde_json::Value>,
) -> Result<Vec<T>> {
    bodies
        .into_iter()
        .map(|b| from_json(what, b).map_err(storage))
        .collect()
}

for_each_dialect! {
    /// The bodies of `select`'s rows of `tenant` whose `column` is one of `ids` (queried
    /// 1,000 ids at a time), followed by `tail` (more conditions, an ORDER BY).
    pub(crate) async fn bodies_in(
        tx: &mut Tx,
        select: &'static str,
        tenant: TenantId,
        column: &'static str,
        ids: &[Uuid],
        tail: &'static str,
    ) -> crate::error::Result<Vec<serde_json::Value>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut query = sqlx::QueryBuilder::<Db>::new(select);
            query.push(" WHERE tenant_id = ").push_bind(tenant.as_uuid());
            query.push(" AND ").push(column).push(" IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            list.push_unseparated(") ");
            query.push(tail);
            let rows = query.build().fetch_all(&mut **tx).await.during("read records")?;
            for row in &rows {
                let body: sqlx::types::Json<serde_json::Value> =
                    row.try_get("body").during("read record body")?;
                out.push(body.0);
            }
        }
        Ok(out)
    }

    /// Applies one [`BillingCommit`] in the open transaction. A stale or unknown subscription
    /// is refused before anything is written; a unique violation (a concurrent writer issued
    /// the same document) fails the whole transaction.
    pub(crate) async fn apply_commit(
        tx: &mut Tx,
        tenant: TenantId,
        commit: BillingCommit,
    ) -> Result<Applied> {
            if let Some(mut sub) = commit.subscription {
                let expected = sub.revision;
                sub.revision += 1;
                let updated = docs::execute(
                    tx,
                    "UPDATE billing_subscriptions SET revision = $4, body = $5, customer_id = $6 \
                     WHERE tenant_id = $1 AND subscription_id = $2 AND revision = $3",
                    &[
                        id(tenant),
                        Bind::Uuid(sub.id.as_uuid()),
                        Bind::I64(i64::try_from(expected).unwrap_or(i64::MAX)),
                        Bind::I64(i64::try_from(sub.revision).unwrap_or(i64::MAX)),
                        body("subscription", &sub)?,
                        Bind::Uuid(sub.customer.as_uuid()),
                    ],
                )
                .await
                .map_err(storage)?;
                if updated != Written::Rows(1) {
                    let found = docs::scalar_i64(
                        tx,
                        "SELECT revision FROM billing_subscriptions \
                         WHERE tenant_id = $1 AND subscription_id = $2",
                        &[id(tenant), Bind::Uuid(sub.id.as_uuid())],
                    )
                    .await
                    .map_err(storage)?;
                    return Ok(Applied::Refused(match found {
                        None => BillingError::UnknownSubscription(sub.id),
                        Some(found) => BillingError::ConcurrentUpdate {
                            subscription: sub.id,
                            expected,
                            found: found.unsigned_abs(),
                        },
                    }));
                }
            }
            let mut result = CommitResult::default();
            for mut invoice in commit.invoices {
                let key = key_text(&invoice.key)?;
                let exists = docs::scalar_i64(
                    tx,
                    "SELECT CAST(1 AS BIGINT) FROM billing_invoices WHERE tenant_id = $1 AND doc_key = $2",
                    &[id(tenant), Bind::Text(key)],
                )
                .await
                .map_err(storage)?;
                if exists.is_some() {
                    result.duplicates += 1;
                    continue;
                }
                let n = numbers::reserve(tx, tenant, INVOICE_SERIES, 1).await.map_err(storage)?;
                let issued_number = number(n);
                invoice.number = Some(issued_number);
                invoice.status = InvoiceStatus::Open;
                let written = docs::execute(tx, INSERT_INVOICE, &invoice_binds(tenant, &invoice)?)
                    .await
                    .map_err(storage)?;
                if written == Written::UniqueViolation {
                    // A concurrent commit issued the same key (or id) first.
                    return Err(BillingError::AlreadyExists {
                        what: "invoice",
                        id: invoice.id.to_string(),
                    });
                }
                result.issued.push(IssuedInvoice {
                    id: invoice.id,
                    number: issued_number,
                    customer: invoice.customer,
                    total: invoice.total,
                    due_date: invoice.due_date,
                });
            }
            for charge in &commit.consumed_pending {
                docs::execute(
                    tx,
                    "UPDATE billing_pending_charges SET consumed = $3 \
                     WHERE tenant_id = $1 AND charge_id = $2",
                    &[id(tenant), Bind::Uuid(charge.as_uuid()), Bind::Bool(true)],
                )
                .await
                .map_err(storage)?;
            }
            for charge in &commit.new_pending {
                docs::execute(
                    tx,
                    "INSERT INTO billing_pending_charges (tenant_id, charge_id, customer_id, consumed, body) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, charge_id) DO NOTHING",
                    &[
                        id(tenant),
                        Bind::Uuid(charge.id.as_uuid()),
                        Bind::Uuid(charge.customer.as_uuid()),
                        Bind::Bool(false),
                        body("pending charge", charge)?,
                    ],
                )
                .await
                .map_err(storage)?;
            }
            Ok(Applied::Done(result))
    }

    /// Applies every commit in the open transaction, one result per commit.
    pub(crate) async fn apply_batch(
        tx: &mut Tx,
        tenant: TenantId,
        commits: Vec<BillingCommit>,
    ) -> Result<Vec<Result<CommitResult>>> {
        let mut results = Vec::with_capacity(commits.len());
        for commit in commits {
            results.push(match apply_commit(tx, tenant, commit).await? {
                Applied::Done(result) => Ok(result),
                Applied::Refused(e) => Err(e),
            });
        }
        Ok(results)
    }
}

impl CatalogStore for SqlStore {
    async fn put_product(&self, tenant: TenantId, product: Product) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO billing_products (tenant_id, product_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, product_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(product.id.as_uuid()),
                    body("product", &product)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    async fn put_plan(&self, tenant: TenantId, plan: Plan) -> Result<()> {
        plan.validate()?;
        let plan_body = body("plan", &plan)?;
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            let product = d::docs::scalar_i64(
                &mut tx,
                "SELECT CAST(1 AS BIGINT) FROM billing_products WHERE tenant_id = $1 AND product_id = $2",
                &[id(tenant), Bind::Uuid(plan.product.as_uuid())],
            )
            .await
            .map_err(storage)?;
            if product.is_none() {
                return Err(BillingError::UnknownProduct(plan.product));
            }
            let sql = if d::IS_POSTGRES {
                "SELECT body FROM billing_plans WHERE tenant_id = $1 AND plan_id = $2 FOR UPDATE"
            } else {
                "SELECT body FROM billing_plans WHERE tenant_id = $1 AND plan_id = $2"
            };
            let old = d::docs::bodies(&mut tx, sql, &[id(tenant), Bind::Uuid(plan.id.as_uuid())])
                .await
                .map_err(storage)?;
            if let Some(old) = old.into_iter().next() {
                let old: Plan = from_json("plan", old).map_err(storage)?;
                let kept = old.versions().len() <= plan.versions().len()
                    && old.versions().iter().zip(plan.versions()).all(|(a, b)| a == b);
                if !kept || old.interval != plan.interval || old.timing != plan.timing {
                    return Err(BillingError::InvalidPlan {
                        plan: plan.id,
                        reason: "stored price versions and the billing shape are immutable; add a version instead",
                    });
                }
            }
            d::docs::execute(
                &mut tx,
                "INSERT INTO billing_plans (tenant_id, plan_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, plan_id) DO UPDATE SET body = excluded.body",
                &[id(tenant), Bind::Uuid(plan.id.as_uuid()), plan_body],
            )
            .await
            .map_err(storage)?;
            tx.commit().await.during("commit plan").map_err(storage)
        })
    }

    async fn plan(&self, tenant: TenantId, plan: PlanId) -> Result<Option<Plan>> {
        self.db
            .read_one(
                tenant,
                "plan",
                "SELECT body FROM billing_plans WHERE tenant_id = $1 AND plan_id = $2",
                &[id(tenant), Bind::Uuid(plan.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn plans(&self, tenant: TenantId) -> Result<Vec<Plan>> {
        self.db
            .read_all(
                tenant,
                "plan",
                "SELECT body FROM billing_plans WHERE tenant_id = $1 ORDER BY plan_id",
                &[id(tenant)],
            )
            .await
            .map_err(storage)
    }
}

impl SubscriptionStore for SqlStore {
    async fn put_account(&self, tenant: TenantId, account: CustomerAccount) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO billing_accounts (tenant_id, customer_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, customer_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(account.customer.as_uuid()),
                    body("account", &account)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }

    async fn account(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Option<CustomerAccount>> {
        self.db
            .read_one(
                tenant,
                "account",
                "SELECT body FROM billing_accounts WHERE tenant_id = $1 AND customer_id = $2",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn accounts(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<Vec<CustomerAccount>> {
        self.customer_bodies(
            tenant,
            "account",
            "SELECT body FROM billing_accounts",
            customers,
            "",
        )
        .await
    }

    async fn insert_subscription(
        &self,
        tenant: TenantId,
        subscription: Subscription,
    ) -> Result<()> {
        let written = self
            .db
            .write(
                tenant,
                "INSERT INTO billing_subscriptions (tenant_id, subscription_id, customer_id, \
                 revision, body) VALUES ($1, $2, $3, $4, $5)",
                &[
                    id(tenant),
                    Bind::Uuid(subscription.id.as_uuid()),
                    Bind::Uuid(subscription.customer.as_uuid()),
                    Bind::I64(i64::try_from(subscription.revision).unwrap_or(i64::MAX)),
                    body("subscription", &subscription)?,
                ],
            )
            .await
            .map_err(storage)?;
        match written {
            Written::UniqueViolation => Err(BillingError::AlreadyExists {
                what: "subscription",
                id: subscription.id.to_string(),
            }),
            Written::Rows(_) => Ok(()),
        }
    }

    async fn subscription(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Option<Subscription>> {
        self.db
            .read_one(
                tenant,
                "subscription",
                "SELECT body FROM billing_subscriptions WHERE tenant_id = $1 AND subscription_id = $2",
                &[id(tenant), Bind::Uuid(subscription.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn subscriptions_page(
        &self,
        tenant: TenantId,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let limit = Bind::I64(i64::try_from(limit).unwrap_or(i64::MAX));
        let found = match after {
            Some(after) => {
                self.db
                    .read_all(
                        tenant,
                        "subscription",
                        "SELECT body FROM billing_subscriptions \
                         WHERE tenant_id = $1 AND subscription_id > $2 \
                         ORDER BY subscription_id LIMIT $3",
                        &[id(tenant), Bind::Uuid(after.as_uuid()), limit],
                    )
                    .await
            }
            None => {
                self.db
                    .read_all(
                        tenant,
                        "subscription",
                        "SELECT body FROM billing_subscriptions WHERE tenant_id = $1 \
                         ORDER BY subscription_id LIMIT $2",
                        &[id(tenant), limit],
                    )
                    .await
            }
        };
        found.map_err(storage)
    }

    async fn subscriptions_of(
        &self,
        tenant: TenantId,
        customer: CustomerId,
    ) -> Result<Vec<Subscription>> {
        self.db
            .read_all(
                tenant,
                "subscription",
                "SELECT body FROM billing_subscriptions WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY subscription_id",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }
}

impl InvoiceStore for SqlStore {
    async fn add_pending_charge(&self, tenant: TenantId, charge: PendingCharge) -> Result<bool> {
        let written = self
            .db
            .write(
                tenant,
                "INSERT INTO billing_pending_charges (tenant_id, charge_id, customer_id, consumed, body) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, charge_id) DO NOTHING",
                &[
                    id(tenant),
                    Bind::Uuid(charge.id.as_uuid()),
                    Bind::Uuid(charge.customer.as_uuid()),
                    Bind::Bool(false),
                    body("pending charge", &charge)?,
                ],
            )
            .await
            .map_err(storage)?;
        Ok(written == Written::Rows(1))
    }

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

    async fn pending_charges_for(
        &self,
        tenant: TenantId,
        customers: &[CustomerId],
    ) -> Result<Vec<PendingCharge>> {
        self.customer_bodies(
            tenant,
            "pending charge",
            "SELECT body FROM billing_pending_charges",
            customers,
            "AND NOT consumed ORDER BY seq",
        )
        .await
    }

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
            let results = d::billing::apply_batch(&mut tx, tenant, commits).await?;
            tx.commit().await.during("commit billing batch").map_err(storage)?;
            Ok(results)
        })
    }

    async fn invoice(&self, tenant: TenantId, invoice: InvoiceId) -> Result<Option<Invoice>> {
        self.db
            .read_one(
                tenant,
                "invoice",
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2",
                &[id(tenant), Bind::Uuid(invoice.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn invoices_of(&self, tenant: TenantId, customer: CustomerId) -> Result<Vec<Invoice>> {
        self.db
            .read_all(
                tenant,
                "invoice",
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY issue_date, number NULLS FIRST, seq",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }

    async fn set_invoice_status(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        to: InvoiceStatus,
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
            let mut stored: Invoice = from_json("invoice", stored).map_err(storage)?;
            let was = stored.status;
            stored.transition(to)?;
            if was == InvoiceStatus::Draft && to == InvoiceStatus::Open {
                let n = d::numbers::reserve(&mut tx, tenant, INVOICE_SERIES, 1).await.map_err(storage)?;
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
            tx.commit().await.during("commit invoice status").map_err(storage)?;
            Ok(stored)
        })
    }

    async fn insert_credit_note(
        &self,
        tenant: TenantId,
        mut note: CreditNote,
    ) -> Result<CreditNote> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            // Locking the invoice row serialises notes against one invoice, so that two notes
            // built concurrently cannot over-credit it.
            let sql = if d::IS_POSTGRES {
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE"
            } else {
                "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND invoice_id = $2"
            };
            let invoice = d::docs::bodies(&mut tx, sql, &[id(tenant), Bind::Uuid(note.invoice.as_uuid())])
                .await
                .map_err(storage)?;
            let Some(invoice) = invoice.into_iter().next() else {
                return Err(BillingError::InvoiceNotFound(note.invoice));
            };
            let invoice: Invoice = from_json("invoice", invoice).map_err(storage)?;
            let earlier = d::docs::bodies(
                &mut tx,
                "SELECT body FROM billing_credit_notes WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY seq",
                &[id(tenant), Bind::Uuid(note.invoice.as_uuid())],
            )
            .await
            .map_err(storage)?
            .into_iter()
            .map(|b| from_json::<CreditNote>("credit note", b))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(storage)?;
            if earlier.iter().any(|n| n.id == note.id) {
                return Err(BillingError::AlreadyExists {
                    what: "credit note",
                    id: note.id.to_string(),
                });
            }
            credit_note(
                note.id,
                &invoice,
                &earlier,
                &CreditRequest::Lines(note.lines.clone()),
                note.issue_date,
                note.reason.clone(),
            )?;
            let n = d::numbers::reserve(&mut tx, tenant, CREDIT_NOTE_SERIES, 1).await.map_err(storage)?;
            note.number = Some(number(n));
            let written = d::docs::execute(
                &mut tx,
                "INSERT INTO billing_credit_notes (tenant_id, note_id, invoice_id, number, total, body) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    id(tenant),
                    Bind::Uuid(note.id.as_uuid()),
                    Bind::Uuid(note.invoice.as_uuid()),
                    Bind::I64(n),
                    Bind::Dec(note.total.amount()),
                    body("credit note", &note)?,
                ],
            )
            .await
            .map_err(storage)?;
            if written == Written::UniqueViolation {
                return Err(BillingError::AlreadyExists {
                    what: "credit note",
                    id: note.id.to_string(),
                });
            }
            tx.commit().await.during("commit credit note").map_err(storage)?;
            Ok(note)
        })
    }

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

impl UsageStore for SqlStore {
    async fn append(&self, tenant: TenantId, events: &[UsageEvent]) -> Result<Vec<bool>> {
        self.db.append_usage(tenant, events).await.map_err(storage)
    }

    async fn events_between(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        meter: MeterId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageEvent>> {
        self.db
            .usage_between(tenant, customer, meter, from, to)
            .await
            .map_err(storage)
    }
}

impl PaymentStore for SqlStore {
    async fn append(
        &self,
        tenant: TenantId,
        customer: CustomerId,
        entries: &[LedgerEntry],
    ) -> Result<()> {
        dispatch!(self.db, pool, d => {
            let mut tx = d::begin_tenant(pool, tenant).await.map_err(storage)?;
            for entry in entries {
                let written = d::docs::execute(
                    &mut tx,
                    "INSERT INTO payment_ledger (tenant_id, customer_id, sequence, entry_date, body) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        id(tenant),
                        Bind::Uuid(customer.as_uuid()),
                        Bind::I64(i64::try_from(entry.sequence).unwrap_or(i64::MAX)),
                        Bind::Date(entry.on),
                        body("ledger entry", entry)?,
                    ],
                )
                .await
                .map_err(storage)?;
                if written == Written::UniqueViolation {
                    // Another writer appended at this position first: the caller's ledger is
                    // stale. Nothing of this call is kept.
                    return Err(BillingError::AlreadyExists {
                        what: "ledger entry",
                        id: format!("{customer}#{}", entry.sequence),
                    });
                }
            }
            tx.commit().await.during("commit ledger").map_err(storage)
        })
    }

    async fn entries(&self, tenant: TenantId, customer: CustomerId) -> Result<Vec<LedgerEntry>> {
        self.db
            .read_all(
                tenant,
                "ledger entry",
                "SELECT body FROM payment_ledger WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY sequence",
                &[id(tenant), Bind::Uuid(customer.as_uuid())],
            )
            .await
            .map_err(storage)
    }
}

impl DunningStore for SqlStore {
    async fn state(&self, tenant: TenantId, invoice: InvoiceId) -> Result<DunningState> {
        let state: Option<DunningState> = self
            .db
            .read_one(
                tenant,
                "dunning state",
                "SELECT body FROM dunning_states WHERE tenant_id = $1 AND invoice_id = $2",
                &[id(tenant), Bind::Uuid(invoice.as_uuid())],
            )
            .await
            .map_err(storage)?;
        Ok(state.unwrap_or_default())
    }

    async fn save_state(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        state: DunningState,
    ) -> Result<()> {
        self.db
            .write(
                tenant,
                "INSERT INTO dunning_states (tenant_id, invoice_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET body = excluded.body",
                &[
                    id(tenant),
                    Bind::Uuid(invoice.as_uuid()),
                    body("dunning state", &state)?,
                ],
            )
            .await
            .map_err(storage)
            .map(|_| ())
    }
}
