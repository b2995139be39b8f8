//! The batch commit algorithm of [`InvoiceStore::commit`] and [`InvoiceStore::commit_batch`]
//! and of the bill-run workers' chunk writes, written once for both backends: revision checks,
//! pending charges, document keys, one gapless number reservation (taken last) and the
//! set-based writes, inside the caller's transaction.

use super::*;

for_each_dialect! {
    shared {
    /// Applies one [`BillingCommit`] in the open transaction. A stale or unknown subscription,
    /// then a consumed charge that is no longer pending, is refused before anything is
    /// written; a unique violation (a concurrent writer issued the same document) fails the
    /// whole transaction.
    ///
    /// The charges it consumes are locked first (then its subscription), so a concurrent
    /// commit consuming one of them waits and then sees it consumed. Its outbox events
    /// ([`BillingCommit::outbox_events`]) are written last, once its documents are numbered.
    pub(crate) async fn apply_commit(
        tx: &mut Tx,
        tenant: TenantId,
        mut commit: BillingCommit,
    ) -> Result<Applied> {
            let events = BillingCommit {
                events: std::mem::take(&mut commit.events),
                issued_at: commit.issued_at,
                ..BillingCommit::default()
            };
            if !commit.consumed_pending.is_empty() {
                let mut ids: Vec<Uuid> =
                    commit.consumed_pending.iter().map(|c| c.as_uuid()).collect();
                ids.sort_unstable();
                ids.dedup();
                let stored = lock_pending(tx, tenant, &ids).await.map_err(storage)?;
                // The revision check comes first: a stale commit reports its subscription.
                if let Some(sub) = &commit.subscription {
                    let found = revisions_of(tx, tenant, &[sub.id.as_uuid()], true)
                        .await
                        .map_err(storage)?;
                    if let Some(refused) = revision_refusal(sub, sub.revision(), &found) {
                        return Ok(Applied::Refused(refused));
                    }
                }
                if let Some(charge) = commit
                    .consumed_pending
                    .iter()
                    .find(|c| stored.get(&c.as_uuid()) != Some(&false))
                {
                    return Ok(Applied::Refused(BillingError::PendingChargeTaken {
                        charge: *charge,
                    }));
                }
            }
            if let Some(mut sub) = commit.subscription {
                let expected = sub.revision();
                bump_revision(&mut sub);
                let updated = docs::execute(
                    tx,
                    "UPDATE billing_subscriptions SET revision = $4, body = $5, customer_id = $6 \
                     WHERE tenant_id = $1 AND subscription_id = $2 AND revision = $3",
                    &[
                        id(tenant),
                        Bind::Uuid(sub.id.as_uuid()),
                        Bind::I64(i64::try_from(expected).unwrap_or(i64::MAX)),
                        Bind::I64(i64::try_from(sub.revision()).unwrap_or(i64::MAX)),
                        body("subscription", &rows::SubscriptionRow::from(&sub))?,
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
                let n = numbers::reserve(tx, tenant, &invoice.number_series(), 1)
                    .await
                    .map_err(storage)?;
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
                result.issued.push(IssuedInvoice::of(&invoice, issued_number));
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
                    crate::keyed::INSERT_PENDING_CHARGE,
                    &crate::keyed::pending_charge_binds(tenant, charge)?,
                )
                .await
                .map_err(storage)?;
            }
            outbox::insert_core(tx, tenant, &events.outbox_events(tenant, &result.issued))
                .await
                .map_err(storage)?;
            Ok(Applied::Done(result))
    }

    /// Applies every commit in the open transaction, one result per commit, with a handful of
    /// set-based statements whatever the batch size: one `UPDATE … RETURNING` for every
    /// subscription's optimistic revision check and new state, one lookup of the documents'
    /// idempotency keys, one insert of the new pending charges, one update of the consumed
    /// ones, then one reservation of the batch's invoice numbers and one insert of the new
    /// invoices (SQLite splits each into statements of 1,000 rows). The reservation comes
    /// last because it locks the tenant's counter row until the commit, and every other
    /// writer of the tenant's invoices (another bill-run worker) waits for that lock. A batch
    /// that consumes pending charges first locks them and the subscriptions with two reads,
    /// decides in Rust, then writes the accepted subscriptions (see [`decide_with_charges`]).
    ///
    /// The outcome is exactly that of applying the commits one by one, as the in-memory store
    /// does: a commit whose subscription is stale or unknown, or (its subscription being
    /// current) that consumes a charge no longer pending, writes nothing and holds the error
    /// in its slot; a document whose key is stored, or issued earlier in the batch, is
    /// counted as a duplicate; numbers follow commit order, gaplessly. A batch that names one
    /// subscription twice (a later commit's revision check depends on an earlier commit of
    /// the same batch) is applied commit by commit.
    ///
    /// Errors are [`SqlError`]s so that a [`SqlError::LockTimeout`] on the counter stays one
    /// (a bill-run worker retries it); refusals of the batch as a whole are
    /// [`SqlError::Billing`].
    pub(crate) async fn apply_batch(
        tx: &mut Tx,
        tenant: TenantId,
        mut commits: Vec<BillingCommit>,
    ) -> std::result::Result<Vec<Result<CommitResult>>, SqlError> {
        let mut seen = HashSet::with_capacity(commits.len());
        if commits
            .iter()
            .filter_map(|c| c.subscription.as_ref())
            .any(|s| !seen.insert(s.id))
        {
            return Ok(apply_each(tx, tenant, commits).await?);
        }
        drop(seen);

        // 1. Revision checks, pending charges and new states.
        let refusals = if commits.iter().any(|c| !c.consumed_pending.is_empty()) {
            decide_with_charges(tx, tenant, &mut commits).await?
        } else {
            decide_by_revision(tx, tenant, &mut commits).await?
        };

        // 2. Idempotency keys of the accepted commits' documents: stored ones, and repeats
        //    within the batch, are duplicates.
        let keys: Vec<Vec<String>> = commits
            .iter()
            .zip(&refusals)
            .map(|(c, refused)| {
                if refused.is_some() {
                    Ok(Vec::new())
                } else {
                    c.invoices.iter().map(|i| key_text(&i.key)).collect()
                }
            })
            .collect::<Result<_>>()?;
        let all_keys: Vec<&str> = keys.iter().flatten().map(String::as_str).collect();
        let stored = if all_keys.is_empty() {
            HashSet::new()
        } else {
            existing_keys(tx, tenant, &all_keys).await?
        };
        drop(all_keys);
        let mut taken: HashSet<&str> = HashSet::new();
        // Per commit: which of its invoices are new (by index), and how many are duplicates.
        let mut fresh: Vec<(Vec<usize>, usize)> = Vec::with_capacity(commits.len());
        let mut count: usize = 0;
        for commit_keys in &keys {
            let mut new = Vec::new();
            let mut duplicates = 0;
            for (i, key) in commit_keys.iter().enumerate() {
                if stored.contains(key.as_str()) || !taken.insert(key.as_str()) {
                    duplicates += 1;
                } else {
                    new.push(i);
                }
            }
            count += new.len();
            fresh.push((new, duplicates));
        }
        drop(taken);

        // 3. The writes that need no number, of the accepted commits: new pending charges,
        //    consumed charges (after the new ones, as the in-memory store removes a batch's
        //    consumed charges at its end).
        let mut new_pending: Vec<&PendingCharge> = Vec::new();
        let mut consumed: Vec<Uuid> = Vec::new();
        for (commit, _) in commits.iter().zip(&refusals).filter(|(_, r)| r.is_none()) {
            new_pending.extend(&commit.new_pending);
            consumed.extend(commit.consumed_pending.iter().map(|c| c.as_uuid()));
        }
        if !new_pending.is_empty() {
            insert_pending(tx, tenant, &new_pending).await?;
        }
        drop(new_pending);
        if !consumed.is_empty() {
            consumed.sort_unstable();
            consumed.dedup();
            // Every one was pending under its lock (step 1): a shortfall means the lock did
            // not hold, and the batch is abandoned rather than a charge invoiced twice.
            let done = consume_pending(tx, tenant, &consumed).await?;
            if usize::try_from(done).ok() != Some(consumed.len()) {
                return Err(BillingError::Storage(dotmac_core::StorageError::new(
                    dotmac_core::StorageErrorKind::Conflict,
                    "a pending charge was consumed by someone else during the batch; retry it",
                ))
                .into());
            }
        }

        // 4. One gapless reservation for the batch per number sequence (one, unless the
        //    documents' formats or years differ), numbers in commit order, taken last (see
        //    above): only the invoice insert follows it in this function. Sequences are
        //    reserved in name order, so two batches lock counter rows in one order.
        let mut per_series: std::collections::BTreeMap<std::borrow::Cow<'static, str>, u32> =
            std::collections::BTreeMap::new();
        for ((commit, refused), (new, _)) in commits.iter().zip(&refusals).zip(&fresh) {
            if refused.is_some() {
                continue;
            }
            for invoice in new.iter().filter_map(|&i| commit.invoices.get(i)) {
                let slot = per_series.entry(invoice.number_series()).or_insert(0);
                *slot = slot.checked_add(1).ok_or(BillingError::InvalidConfiguration {
                    what: "bill run chunk",
                    reason: "too many documents in one batch; use smaller chunks",
                })?;
            }
        }
        let mut next: std::collections::BTreeMap<std::borrow::Cow<'static, str>, i64> =
            std::collections::BTreeMap::new();
        for (series, count) in per_series {
            let first = numbers::reserve(tx, tenant, &series, count).await?;
            next.insert(series, first);
        }
        let mut results: Vec<Result<CommitResult>> = Vec::with_capacity(commits.len());
        for ((commit, refused), (new, duplicates)) in
            commits.iter_mut().zip(refusals).zip(&fresh)
        {
            if let Some(refused) = refused {
                results.push(Err(refused));
                continue;
            }
            let mut result = CommitResult {
                issued: Vec::with_capacity(new.len()),
                duplicates: *duplicates,
            };
            for &i in new {
                if let Some(invoice) = commit.invoices.get_mut(i) {
                    let Some(slot) = next.get_mut(&invoice.number_series()) else {
                        continue;
                    };
                    let issued_number = number(*slot);
                    *slot += 1;
                    invoice.number = Some(issued_number);
                    invoice.status = InvoiceStatus::Open;
                    result.issued.push(IssuedInvoice::of(invoice, issued_number));
                }
            }
            results.push(Ok(result));
        }

        // 5. The invoices.
        let mut rows: Vec<(&str, &Invoice)> = Vec::with_capacity(count);
        for (((commit, result), (new, _)), commit_keys) in
            commits.iter().zip(&results).zip(&fresh).zip(&keys)
        {
            if result.is_err() {
                continue;
            }
            for &i in new {
                if let (Some(invoice), Some(key)) = (commit.invoices.get(i), commit_keys.get(i)) {
                    rows.push((key.as_str(), invoice));
                }
            }
        }
        if !rows.is_empty() {
            let status = status_text(InvoiceStatus::Open)?;
            if insert_invoices(tx, tenant, &status, &rows).await?
                == Written::UniqueViolation
            {
                // A concurrent commit issued one of these keys (or ids) first.
                return Err(BillingError::AlreadyExists {
                    what: "invoice",
                    id: rows.first().map(|(_, i)| i.id.to_string()).unwrap_or_default(),
                }
                .into());
            }
        }
        drop(rows);

        // 6. The accepted commits' outbox events (the issued documents' carry their numbers).
        let mut events = Vec::new();
        for (commit, result) in commits.iter().zip(&results) {
            if let Ok(result) = result
                && (!commit.events.is_empty() || commit.issued_at.is_some())
            {
                events.extend(commit.outbox_events(tenant, &result.issued));
            }
        }
        outbox::insert_core(tx, tenant, &events).await?;
        Ok(results)
    }

    /// Step 1 of [`apply_batch`] when no commit consumes a pending charge: one
    /// `UPDATE … RETURNING` writes every subscription whose stored revision is the one
    /// before (each subscription leaves carrying its bumped revision); the misses are looked
    /// up to tell a stale subscription from an unknown one. Returns each commit's refusal.
    async fn decide_by_revision(
        tx: &mut Tx,
        tenant: TenantId,
        commits: &mut [BillingCommit],
    ) -> Result<Vec<Option<BillingError>>> {
        for sub in commits.iter_mut().filter_map(|c| c.subscription.as_mut()) {
            bump_revision(sub);
        }
        let subs: Vec<&Subscription> =
            commits.iter().filter_map(|c| c.subscription.as_ref()).collect();
        let updated = if subs.is_empty() {
            HashSet::new()
        } else {
            update_subscriptions(tx, tenant, &subs).await.map_err(storage)?
        };
        let missed: Vec<Uuid> = subs
            .iter()
            .map(|s| s.id.as_uuid())
            .filter(|id| !updated.contains(id))
            .collect();
        drop(subs);
        let found = if missed.is_empty() {
            HashMap::new()
        } else {
            revisions_of(tx, tenant, &missed, false).await.map_err(storage)?
        };
        Ok(commits
            .iter()
            .map(|c| {
                let sub = c.subscription.as_ref()?;
                if updated.contains(&sub.id.as_uuid()) {
                    return None;
                }
                // Not written: unknown, or stale (whatever the revision read now).
                Some(match found.get(&sub.id.as_uuid()) {
                    None => BillingError::UnknownSubscription(sub.id),
                    Some(found) => BillingError::ConcurrentUpdate {
                        subscription: sub.id,
                        expected: sub.revision() - 1,
                        found: found.unsigned_abs(),
                    },
                })
            })
            .collect())
    }

    /// Step 1 of [`apply_batch`] when commits consume pending charges: locks the consumed
    /// charges (in id order, so two batches cannot deadlock on them) and then the
    /// subscriptions, decides every commit in commit order (revision first, then each charge
    /// must be pending: stored and not consumed, or added by an earlier accepted commit of
    /// the batch, and not consumed earlier in the batch), and writes the accepted commits'
    /// subscriptions in one statement. Returns each commit's refusal.
    ///
    /// A concurrent transaction consuming one of the charges waits on the lock and then sees
    /// it consumed, so a charge is invoiced once however many workers race for it.
    async fn decide_with_charges(
        tx: &mut Tx,
        tenant: TenantId,
        commits: &mut [BillingCommit],
    ) -> Result<Vec<Option<BillingError>>> {
        let mut charges: Vec<Uuid> = commits
            .iter()
            .flat_map(|c| c.consumed_pending.iter().map(|p| p.as_uuid()))
            .collect();
        charges.sort_unstable();
        charges.dedup();
        let stored = lock_pending(tx, tenant, &charges).await.map_err(storage)?;
        drop(charges);
        let mut subs: Vec<Uuid> = commits
            .iter()
            .filter_map(|c| c.subscription.as_ref().map(|s| s.id.as_uuid()))
            .collect();
        subs.sort_unstable();
        let found = if subs.is_empty() {
            HashMap::new()
        } else {
            revisions_of(tx, tenant, &subs, true).await.map_err(storage)?
        };
        drop(subs);
        let mut consumed: HashSet<Uuid> = HashSet::new();
        let mut added: HashSet<Uuid> = HashSet::new();
        let mut refusals = Vec::with_capacity(commits.len());
        for commit in commits.iter() {
            if let Some(refused) = commit
                .subscription
                .as_ref()
                .and_then(|sub| revision_refusal(sub, sub.revision(), &found))
            {
                refusals.push(Some(refused));
                continue;
            }
            let taken = commit.consumed_pending.iter().find(|c| {
                let c = c.as_uuid();
                consumed.contains(&c)
                    || match stored.get(&c) {
                        Some(was_consumed) => *was_consumed,
                        None => !added.contains(&c),
                    }
            });
            if let Some(charge) = taken {
                refusals.push(Some(BillingError::PendingChargeTaken { charge: *charge }));
                continue;
            }
            consumed.extend(commit.consumed_pending.iter().map(|c| c.as_uuid()));
            added.extend(commit.new_pending.iter().map(|c| c.id.as_uuid()));
            refusals.push(None);
        }
        let mut accepted: Vec<&Subscription> = Vec::new();
        for (commit, refused) in commits.iter_mut().zip(&refusals) {
            if let (None, Some(sub)) = (refused, commit.subscription.as_mut()) {
                bump_revision(sub);
                accepted.push(sub);
            }
        }
        if !accepted.is_empty() {
            let updated = update_subscriptions(tx, tenant, &accepted)
                .await
                .map_err(storage)?;
            // The rows are locked since their revisions were read: every one is written.
            if let Some(sub) = accepted.iter().find(|s| !updated.contains(&s.id.as_uuid())) {
                return Err(BillingError::ConcurrentUpdate {
                    subscription: sub.id,
                    expected: sub.revision() - 1,
                    found: sub.revision() - 1,
                });
            }
        }
        Ok(refusals)
    }

    /// Applies the commits one by one (a batch that names a subscription twice).
    pub(crate) async fn apply_each(
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
    sqlite {
        // The per-backend statements of `super::sqlite`.
        #[allow(unused_imports)]
        use crate::billing::sqlite::*;
    }
    postgres {
        // The per-backend statements of `super::postgres`.
        #[allow(unused_imports)]
        use crate::billing::postgres::*;
    }
}

/// The store bumps a subscription's revision on every write it accepts.
fn bump_revision(sub: &mut Subscription) {
    let next = sub.revision().saturating_add(1);
    dotmac_billing::internal::set_subscription_revision(sub, next);
}
