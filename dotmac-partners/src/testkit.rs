//! The partner store behaviour suite: one set of checks, run against every [`PartnerStore`]
//! (the in-memory store here, SQLite and PostgreSQL in `dotmac-sqlx`), so that stores cannot
//! drift apart.
//!
//! ```
//! # async fn demo() -> Result<(), String> {
//! use dotmac_partners::{testkit, InMemoryPartnerStore};
//! testkit::run_store_suite(InMemoryPartnerStore::new, |store, tenant| {
//!     testkit::outbox_events(store.outbox().as_ref(), tenant)
//! })
//! .await
//! # }
//! ```
//!
//! Every check uses fresh tenant ids, so the suite may share one database with other tests.
//! What it holds every store to:
//!
//! * Versioned records (partner accounts, attributions): version 1 is an insert, refused with
//!   [`PartnersError::AlreadyExists`] when the id is taken; version n replaces version n − 1
//!   only, anything else is [`PartnersError::Stale`]. Reads return what was saved.
//! * [`PartnerStore::partners`] lists by id; [`PartnerStore::partner_customers`] lists every
//!   customer the partner ever held (a transferred customer stays on the old partner's list),
//!   by customer id.
//! * A ledger write is atomic: a position already taken (or skipped) fails the whole write with
//!   [`PartnersError::Stale`] (`what` = `"partner ledger"`, `id` = `"{partner}#{seq}"` of the
//!   first such entry), writing no entry of any partner, no payout run, no event, and not
//!   recording the source. A source written before writes nothing ([`WriteOutcome::Replayed`]).
//! * [`PartnerStore::partner_entries`] returns a ledger in `seq` order;
//!   [`PartnerStore::partners_with_payment`] the partners whose accruals name the payment.
//! * Everything is per tenant.
//! * Bad input through the service (a payment in another currency than the plan's, a
//!   sub-agent under a partner that is not a master agent, an attribution to a partner that is
//!   not active, a forbidden lifecycle move) is refused with its exact error and changes
//!   nothing: no account, attribution, entry or source is written.
//! * Through [`PartnersService`]: a payment accrues once (a replayed event and a second event
//!   for the same payment accrue nothing), a sub-agent's commission and its master's override
//!   sum to the whole, a full refund takes back exactly what the payment earned, and a payout
//!   run writes its payout entries, its run and one `partners.payout_instructed` event per
//!   instruction once.

// A test suite: fixed, small figures, where plain operators are the clearest.
#![allow(clippy::arithmetic_side_effects)]

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac_core::outbox::OutboxEvent;
use dotmac_core::{Currency, CustomerId, DomainEvent, FixedClock, Money, PaymentId, TenantId};
use rust_decimal::Decimal;

use crate::{
    Accrual, CollectedPayment, CommissionPlan, CommissionPlanId, Component, CustomerAttribution,
    EntryKind, LedgerEntry, LedgerWrite, MasterOverride, PartnerAccount, PartnerEvent, PartnerId,
    PartnerKind, PartnerStatus, PartnerStore, PartnersError, PartnersService, PartnersSettings,
    PayoutInstruction, PayoutRun, PayoutRunId, RefundedPayment, RevenueTag, Share, SourceId,
    WriteOutcome,
};

pub use dotmac_core::outbox::testkit::{OutboxRead, outbox_events};

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn day(m: u32, d: u32) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(2026, m, d).ok_or_else(|| format!("bad date {m}-{d}"))
}

fn usd(s: &str) -> Result<Money, String> {
    Money::parse(s, Currency::USD).map_err(|e| e.to_string())
}

fn fail(what: &'static str) -> impl Fn(PartnersError) -> String {
    move |e| format!("{what}: {e}")
}

fn plan(rate: i64) -> Result<CommissionPlan, String> {
    CommissionPlan::builder(CommissionPlanId::new(), "suite", Currency::USD)
        .revenue_share(Decimal::from(rate))
        .build()
        .map_err(|e| e.to_string())
}

fn account(kind: PartnerKind, plan: CommissionPlanId) -> Result<PartnerAccount, String> {
    PartnerAccount::apply(PartnerId::new(), "Suite partner", kind, plan, day(1, 1)?)
        .map_err(|e| e.to_string())
}

fn accrual_entry(seq: u64, payment: PaymentId, amount: &str) -> Result<LedgerEntry, String> {
    let m = usd(amount)?;
    Ok(LedgerEntry {
        seq,
        on: day(2, 1)?,
        source: SourceId::new(),
        kind: EntryKind::Accrued(Accrual {
            customer: CustomerId::new(),
            payment,
            component: Component::RevenueShare,
            base: m,
            rate_percent: Some(Decimal::ONE_HUNDRED),
            tier: None,
            uncapped: m,
            gross: m,
            commission: m,
            share: Share::Direct,
        }),
    })
}

/// Runs every check against stores made by `make`, reading their outbox with `outbox`.
///
/// # Errors
///
/// The first check that fails, described.
pub async fn run_store_suite<S, F, R>(make: F, outbox: R) -> Result<(), String>
where
    S: PartnerStore,
    F: Fn() -> S,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    versioned_records(&make()).await?;
    attributions(&make()).await?;
    ledger_writes(&make(), &outbox).await?;
    service_behaviour(make(), &outbox).await?;
    bad_input_changes_nothing(make()).await?;
    Ok(())
}

async fn versioned_records<S: PartnerStore>(store: &S) -> Result<(), String> {
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let plan = plan(10)?;
    store
        .save_commission_plan(tenant, &plan)
        .await
        .map_err(fail("save plan"))?;
    let read = store
        .commission_plan(tenant, plan.id())
        .await
        .map_err(fail("read plan"))?;
    ensure!(read.as_ref() == Some(&plan), "plan read back as {read:?}");
    let foreign = store
        .commission_plan(other, plan.id())
        .await
        .map_err(fail("read plan"))?;
    ensure!(foreign.is_none(), "another tenant sees the plan");

    let mut a = account(PartnerKind::Reseller, plan.id())?;
    a.bump_version();
    store
        .save_partner(tenant, &a)
        .await
        .map_err(fail("insert partner"))?;
    let again = store.save_partner(tenant, &a).await;
    ensure!(
        again
            == Err(PartnersError::AlreadyExists {
                what: "partner",
                id: a.id().to_string()
            }),
        "a second insert gave {again:?}"
    );
    let mut b = a.clone();
    b.change_status(PartnerStatus::Active, day(1, 2)?)
        .map_err(|e| e.to_string())?;
    b.bump_version();
    store
        .save_partner(tenant, &b)
        .await
        .map_err(fail("update partner"))?;
    let stale = store.save_partner(tenant, &b).await;
    ensure!(
        stale
            == Err(PartnersError::Stale {
                what: "partner",
                id: a.id().to_string()
            }),
        "a stale update gave {stale:?}"
    );
    let mut skipped = b.clone();
    skipped.bump_version();
    skipped.bump_version();
    let skip = store.save_partner(tenant, &skipped).await;
    ensure!(
        matches!(skip, Err(PartnersError::Stale { .. })),
        "a skipped version gave {skip:?}"
    );
    let read = store
        .partner(tenant, a.id())
        .await
        .map_err(fail("read partner"))?;
    ensure!(read.as_ref() == Some(&b), "partner read back as {read:?}");
    ensure!(
        store
            .partner(other, a.id())
            .await
            .map_err(fail("read partner"))?
            .is_none(),
        "another tenant sees the partner"
    );
    let mut c = account(PartnerKind::Referral, plan.id())?;
    c.bump_version();
    store
        .save_partner(tenant, &c)
        .await
        .map_err(fail("insert partner"))?;
    let listed: Vec<PartnerId> = store
        .partners(tenant)
        .await
        .map_err(fail("list partners"))?
        .iter()
        .map(PartnerAccount::id)
        .collect();
    let mut expected = vec![a.id(), c.id()];
    expected.sort_unstable();
    ensure!(
        listed == expected,
        "partners listed as {listed:?}, not by id {expected:?}"
    );
    ensure!(
        store
            .partners(other)
            .await
            .map_err(fail("list partners"))?
            .is_empty(),
        "another tenant lists partners"
    );
    Ok(())
}

async fn attributions<S: PartnerStore>(store: &S) -> Result<(), String> {
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let (a, b, c) = (PartnerId::new(), PartnerId::new(), PartnerId::new());
    let customer = CustomerId::new();
    let mut record = CustomerAttribution::new(customer);
    record.record_touch(a, day(3, 1)?);
    record.assign(a, day(3, 2)?).map_err(|e| e.to_string())?;
    record.bump_version();
    store
        .save_attribution(tenant, &record)
        .await
        .map_err(fail("insert attribution"))?;
    let mut moved = record.clone();
    moved.transfer(b, day(3, 10)?).map_err(|e| e.to_string())?;
    moved.bump_version();
    store
        .save_attribution(tenant, &moved)
        .await
        .map_err(fail("update attribution"))?;
    let stale = store.save_attribution(tenant, &moved).await;
    ensure!(
        stale
            == Err(PartnersError::Stale {
                what: "attribution",
                id: customer.to_string()
            }),
        "a stale attribution gave {stale:?}"
    );
    let read = store
        .attribution(tenant, customer)
        .await
        .map_err(fail("read attribution"))?;
    ensure!(
        read.as_ref() == Some(&moved),
        "attribution read back as {read:?}"
    );
    let second = CustomerId::new();
    let mut other_record = CustomerAttribution::new(second);
    other_record
        .assign(a, day(3, 3)?)
        .map_err(|e| e.to_string())?;
    other_record.bump_version();
    store
        .save_attribution(tenant, &other_record)
        .await
        .map_err(fail("insert attribution"))?;
    let of = |partner| async move {
        store
            .partner_customers(tenant, partner)
            .await
            .map(|records| {
                records
                    .iter()
                    .map(CustomerAttribution::customer)
                    .collect::<Vec<_>>()
            })
            .map_err(fail("partner customers"))
    };
    let mut both = vec![customer, second];
    both.sort_unstable();
    ensure!(
        of(a).await? == both,
        "the first partner's customers are {:?}",
        of(a).await?
    );
    ensure!(
        of(b).await? == vec![customer],
        "the second partner's customers are {:?}",
        of(b).await?
    );
    ensure!(
        of(c).await?.is_empty(),
        "an unrelated partner has customers"
    );
    ensure!(
        store
            .attribution(other, customer)
            .await
            .map_err(fail("read"))?
            .is_none()
            && store
                .partner_customers(other, a)
                .await
                .map_err(fail("read"))?
                .is_empty(),
        "another tenant sees the attribution"
    );
    Ok(())
}

fn run_record(tenant: TenantId, as_of: NaiveDate) -> Result<PayoutRun, String> {
    Ok(PayoutRun {
        id: PayoutRunId::for_date(tenant, as_of),
        as_of,
        created_at: Utc
            .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
            .single()
            .ok_or("bad instant")?,
        instructions: Vec::new(),
        skipped: Vec::new(),
    })
}

async fn ledger_writes<S, R>(store: &S, outbox: &R) -> Result<(), String>
where
    S: PartnerStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let (a, b) = (PartnerId::new(), PartnerId::new());
    let payment = PaymentId::new();
    let source = SourceId::new();
    let clock = FixedClock::new(
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
            .single()
            .ok_or("bad instant")?,
    );
    let instruction = PayoutInstruction {
        payout: crate::PayoutId::new(),
        run: PayoutRunId::for_date(tenant, day(3, 1)?),
        partner: a,
        amount: usd("1.00")?,
        as_of: day(3, 1)?,
    };
    let event = OutboxEvent::new(DomainEvent::new(
        tenant,
        &clock,
        PartnerEvent::PayoutInstructed(instruction),
    ));
    let event_id = event.id();
    let write = LedgerWrite {
        source,
        entries: vec![
            (a, accrual_entry(0, payment, "1.00")?),
            (b, accrual_entry(0, payment, "2.00")?),
            (a, accrual_entry(1, PaymentId::new(), "3.00")?),
        ],
        payout_run: Some(run_record(tenant, day(3, 1)?)?),
    };
    let done = store.write_partner_ledgers(tenant, &write, &[event]).await;
    ensure!(
        done == Ok(WriteOutcome::Written),
        "a first write gave {done:?}"
    );
    let entries_of = |partner| async move {
        store
            .partner_entries(tenant, partner)
            .await
            .map_err(fail("read entries"))
    };
    let a_entries = entries_of(a).await?;
    ensure!(
        a_entries.iter().map(|e| e.seq).collect::<Vec<_>>() == vec![0, 1]
            && a_entries.first() == write.entries.first().map(|(_, e)| e),
        "partner a's entries read back as {a_entries:?}"
    );
    ensure!(entries_of(b).await?.len() == 1, "partner b's ledger");
    let with = store
        .partners_with_payment(tenant, payment)
        .await
        .map_err(fail("with payment"))?;
    let mut expected = vec![a, b];
    expected.sort_unstable();
    ensure!(with == expected, "partners with the payment: {with:?}");
    ensure!(
        store
            .partner_source_recorded(tenant, source)
            .await
            .map_err(fail("source"))?,
        "the source is not recorded"
    );
    let run = store
        .payout_run(tenant, PayoutRunId::for_date(tenant, day(3, 1)?))
        .await
        .map_err(fail("run"))?;
    ensure!(
        run == write.payout_run,
        "the payout run read back as {run:?}"
    );
    let events = outbox(store, tenant).await?;
    ensure!(
        events == vec![(event_id, "partners.payout_instructed".to_owned())],
        "the outbox holds {events:?}"
    );

    // A replay writes nothing, events included.
    let replay = store.write_partner_ledgers(tenant, &write, &[]).await;
    ensure!(
        replay == Ok(WriteOutcome::Replayed),
        "a replay gave {replay:?}"
    );
    ensure!(entries_of(a).await?.len() == 2, "a replay appended");

    // A taken position fails the whole write: nothing of it is kept.
    let late = OutboxEvent::new(DomainEvent::new(
        tenant,
        &clock,
        PartnerEvent::PayoutInstructed(instruction),
    ));
    let stale_source = SourceId::new();
    let stale = LedgerWrite {
        source: stale_source,
        entries: vec![
            (b, accrual_entry(1, PaymentId::new(), "4.00")?),
            (a, accrual_entry(1, PaymentId::new(), "5.00")?),
        ],
        payout_run: Some(run_record(tenant, day(4, 1)?)?),
    };
    let refused = store.write_partner_ledgers(tenant, &stale, &[late]).await;
    ensure!(
        refused
            == Err(PartnersError::Stale {
                what: "partner ledger",
                id: format!("{a}#1")
            }),
        "a stale write gave {refused:?}"
    );
    ensure!(
        entries_of(b).await?.len() == 1,
        "a refused write appended to another ledger"
    );
    ensure!(
        !store
            .partner_source_recorded(tenant, stale_source)
            .await
            .map_err(fail("source"))?,
        "a refused write recorded its source"
    );
    ensure!(
        store
            .payout_run(tenant, PayoutRunId::for_date(tenant, day(4, 1)?))
            .await
            .map_err(fail("run"))?
            .is_none(),
        "a refused write stored its payout run"
    );
    ensure!(
        outbox(store, tenant).await?.len() == 1,
        "a refused write wrote its event"
    );
    // A skipped position is refused too.
    let gap = LedgerWrite {
        source: SourceId::new(),
        entries: vec![(b, accrual_entry(5, PaymentId::new(), "4.00")?)],
        payout_run: None,
    };
    let refused = store.write_partner_ledgers(tenant, &gap, &[]).await;
    ensure!(
        matches!(refused, Err(PartnersError::Stale { .. })),
        "a gap gave {refused:?}"
    );

    // Per tenant.
    ensure!(
        store
            .partner_entries(other, a)
            .await
            .map_err(fail("read"))?
            .is_empty()
            && !store
                .partner_source_recorded(other, source)
                .await
                .map_err(fail("read"))?
            && store
                .partners_with_payment(other, payment)
                .await
                .map_err(fail("read"))?
                .is_empty(),
        "another tenant sees the ledgers"
    );
    Ok(())
}

async fn service_behaviour<S, R>(store: S, outbox: &R) -> Result<(), String>
where
    S: PartnerStore,
    R: for<'a> Fn(&'a S, TenantId) -> OutboxRead<'a>,
{
    let tenant = TenantId::new();
    let clock = FixedClock::new(
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
            .single()
            .ok_or("bad instant")?,
    );
    let service = PartnersService::new(store, clock, PartnersSettings::default());
    let plan = plan(10)?;
    service
        .save_plan(tenant, &plan)
        .await
        .map_err(fail("save plan"))?;
    let master = account(PartnerKind::MasterAgent, plan.id())?;
    let master_id = master.id();
    service
        .apply(tenant, master)
        .await
        .map_err(fail("apply master"))?;
    service
        .change_status(tenant, master_id, PartnerStatus::Active, day(1, 1)?)
        .await
        .map_err(fail("activate master"))?;
    let link = MasterOverride::new(master_id, Decimal::from(25)).map_err(|e| e.to_string())?;
    let sub = account(PartnerKind::Referral, plan.id())?
        .under(link)
        .map_err(|e| e.to_string())?;
    let sub_id = sub.id();
    service
        .apply(tenant, sub)
        .await
        .map_err(fail("apply sub-agent"))?;
    service
        .change_status(tenant, sub_id, PartnerStatus::Active, day(1, 1)?)
        .await
        .map_err(fail("activate sub-agent"))?;
    let customer = CustomerId::new();
    service
        .assign(tenant, customer, sub_id, day(1, 5)?)
        .await
        .map_err(fail("assign"))?;

    let paid = CollectedPayment {
        customer,
        payment: PaymentId::new(),
        amount: usd("100.10")?,
        on: day(2, 3)?,
        tag: RevenueTag::default(),
    };
    let source = SourceId::new();
    let accrued = service
        .record_payment(tenant, source, paid)
        .await
        .map_err(fail("payment"))?;
    let commission = |entries: &[(PartnerId, LedgerEntry)], partner: PartnerId| {
        Money::sum(
            Currency::USD,
            entries
                .iter()
                .filter(|(p, _)| *p == partner)
                .map(|(_, e)| e.kind.balance_effect(Currency::USD)),
        )
        .map_or(Decimal::MAX, |m| m.amount())
    };
    // 10 % of 100.10 = 10.01, 25 % of it to the master.
    ensure!(
        commission(&accrued, sub_id) == Decimal::new(751, 2)
            && commission(&accrued, master_id) == Decimal::new(250, 2),
        "the payment accrued {accrued:?}"
    );
    let replay = service
        .record_payment(tenant, source, paid)
        .await
        .map_err(fail("replay"))?;
    ensure!(replay.is_empty(), "a replay accrued {replay:?}");
    let again = service
        .record_payment(tenant, SourceId::new(), paid)
        .await
        .map_err(fail("second event"))?;
    ensure!(
        again.is_empty(),
        "a second event for the payment accrued {again:?}"
    );

    let refund = RefundedPayment {
        customer,
        refund: PaymentId::new(),
        payment: Some(paid.payment),
        amount: paid.amount,
        on: day(2, 20)?,
    };
    let clawed = service
        .record_refund(tenant, SourceId::new(), refund)
        .await
        .map_err(fail("refund"))?;
    ensure!(
        commission(&clawed, sub_id) == Decimal::new(-751, 2)
            && commission(&clawed, master_id) == Decimal::new(-250, 2),
        "the full refund clawed back {clawed:?}"
    );
    for partner in [sub_id, master_id] {
        let summary = service
            .summary(tenant, partner, day(3, 1)?)
            .await
            .map_err(fail("summary"))?;
        ensure!(
            summary.balance.is_zero(),
            "{partner}'s balance after the refund: {summary:?}"
        );
    }

    let second = CollectedPayment {
        payment: PaymentId::new(),
        amount: usd("40.00")?,
        ..paid
    };
    service
        .record_payment(tenant, SourceId::new(), second)
        .await
        .map_err(fail("payment"))?;
    let run = service
        .run_payouts(tenant, day(3, 31)?)
        .await
        .map_err(fail("payout run"))?;
    let paid_to: Vec<(PartnerId, Money)> = run
        .instructions
        .iter()
        .map(|i| (i.partner, i.amount))
        .collect();
    let mut expected = vec![(sub_id, usd("3.00")?), (master_id, usd("1.00")?)];
    expected.sort_unstable_by_key(|(p, _)| *p);
    ensure!(paid_to == expected, "the payout run instructed {paid_to:?}");
    let events = outbox(service.store(), tenant).await?;
    ensure!(
        events
            .iter()
            .filter(|(_, t)| t == "partners.payout_instructed")
            .count()
            == 2,
        "the outbox after the run holds {events:?}"
    );
    let rerun = service
        .run_payouts(tenant, day(3, 31)?)
        .await
        .map_err(fail("re-run"))?;
    ensure!(rerun == run, "a re-run gave another run: {rerun:?}");
    ensure!(
        outbox(service.store(), tenant).await?.len() == events.len(),
        "a re-run wrote events"
    );
    for partner in [sub_id, master_id] {
        let summary = service
            .summary(tenant, partner, day(3, 31)?)
            .await
            .map_err(fail("summary"))?;
        ensure!(
            summary.balance.is_zero() && summary.payable.is_zero(),
            "{partner} after its payout: {summary:?}"
        );
    }

    // The statement read back lists each movement and reconciles to the ledger.
    let quarter = dotmac_core::Period::new(day(2, 1)?, day(4, 1)?).map_err(|e| e.to_string())?;
    let statement = service
        .statement(tenant, sub_id, quarter)
        .await
        .map_err(fail("statement"))?;
    ensure!(
        statement.reconciles().map_err(|e| e.to_string())?
            && statement.earned == usd("10.51")?
            && statement.clawed_back == usd("7.51")?
            && statement.paid_out == usd("3.00")?
            && statement.closing_balance.is_zero()
            && statement.lines.len() == 4,
        "the sub-agent's statement: {statement:?}"
    );
    let activity = service
        .activity(tenant, sub_id, quarter)
        .await
        .map_err(fail("activity"))?;
    ensure!(
        activity.collected == usd("140.10")?
            && activity.refunded == usd("100.10")?
            && activity.customers_active == 1
            && activity.customers_referred == 0,
        "the sub-agent's activity: {activity:?}"
    );
    Ok(())
}

async fn bad_input_changes_nothing<S: PartnerStore>(store: S) -> Result<(), String> {
    let tenant = TenantId::new();
    let clock = FixedClock::new(
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
            .single()
            .ok_or("bad instant")?,
    );
    let service = PartnersService::new(store, clock, PartnersSettings::default());
    let plan = plan(10)?;
    service
        .save_plan(tenant, &plan)
        .await
        .map_err(fail("save plan"))?;
    let reseller = account(PartnerKind::Reseller, plan.id())?;
    let reseller_id = reseller.id();
    service
        .apply(tenant, reseller)
        .await
        .map_err(fail("apply"))?;

    // A sub-agent under a partner that is not a master agent: refused, nothing saved.
    let link = MasterOverride::new(reseller_id, Decimal::TEN).map_err(|e| e.to_string())?;
    let sub = account(PartnerKind::Referral, plan.id())?
        .under(link)
        .map_err(|e| e.to_string())?;
    let sub_id = sub.id();
    let refused = service.apply(tenant, sub).await;
    ensure!(
        refused == Err(PartnersError::NotAMasterAgent(reseller_id)),
        "a sub-agent under a reseller gave {refused:?}"
    );
    ensure!(
        service
            .store()
            .partner(tenant, sub_id)
            .await
            .map_err(fail("read"))?
            .is_none(),
        "the refused sub-agent was saved"
    );

    // An attribution to a partner that is still applied: refused, nothing saved.
    let customer = CustomerId::new();
    let refused = service
        .assign(tenant, customer, reseller_id, day(3, 1)?)
        .await;
    ensure!(
        refused
            == Err(PartnersError::PartnerNotActive {
                partner: reseller_id,
                status: PartnerStatus::Applied
            }),
        "an attribution to an applied partner gave {refused:?}"
    );
    ensure!(
        service
            .store()
            .attribution(tenant, customer)
            .await
            .map_err(fail("read"))?
            .is_none(),
        "the refused attribution was saved"
    );

    // A forbidden lifecycle move: refused, the account unchanged.
    let before = service
        .account(tenant, reseller_id)
        .await
        .map_err(fail("read"))?;
    let refused = service
        .change_status(tenant, reseller_id, PartnerStatus::Suspended, day(3, 1)?)
        .await;
    ensure!(
        refused
            == Err(PartnersError::InvalidTransition {
                partner: reseller_id,
                from: PartnerStatus::Applied,
                to: PartnerStatus::Suspended
            }),
        "a forbidden move gave {refused:?}"
    );
    let after = service
        .account(tenant, reseller_id)
        .await
        .map_err(fail("read"))?;
    ensure!(after == before, "a refused move changed the account");

    // A payment in another currency than the plan's: refused, nothing written.
    service
        .change_status(tenant, reseller_id, PartnerStatus::Active, day(3, 1)?)
        .await
        .map_err(fail("activate"))?;
    service
        .assign(tenant, customer, reseller_id, day(3, 1)?)
        .await
        .map_err(fail("assign"))?;
    let source = SourceId::new();
    let euros = CollectedPayment {
        customer,
        payment: PaymentId::new(),
        amount: Money::parse("10.00", Currency::EUR).map_err(|e| e.to_string())?,
        on: day(3, 2)?,
        tag: RevenueTag::default(),
    };
    let refused = service.record_payment(tenant, source, euros).await;
    ensure!(
        refused
            == Err(PartnersError::Core(
                dotmac_core::CoreError::CurrencyMismatch {
                    left: "USD",
                    right: "EUR"
                }
            )),
        "a payment in euros gave {refused:?}"
    );
    ensure!(
        service
            .store()
            .partner_entries(tenant, reseller_id)
            .await
            .map_err(fail("read"))?
            .is_empty()
            && !service
                .store()
                .partner_source_recorded(tenant, source)
                .await
                .map_err(fail("read"))?,
        "a refused payment wrote to the ledger"
    );
    Ok(())
}
