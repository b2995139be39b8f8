//! The store's tracing spans (docs/observability.md): every transaction of a bill run opens a
//! `dotmac.store.*` span with the tenant, the backend and counts, and nothing else. Its own test
//! binary with one test: tracing caches per call site whether anyone listens, and a test running
//! in parallel without a subscriber would race that cache.

// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::common;
use crate::common::fibre::{day, plan, seed};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::Duration;
use common::{at, new_tenant};
use dotmac_billing::BillingSettings;
use dotmac_core::FixedClock;
use dotmac_sqlx::{BillRunId, BillWorker, SqlStore};

const LEASE: i64 = 5;

/// The spans a test saw: name and fields (those given at creation and those recorded later).
#[derive(Default, Clone)]
struct Spans(Arc<Mutex<Vec<SeenSpan>>>);

/// A span's name and fields.
type SeenSpan = (String, BTreeMap<String, String>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut spans = self.0.lock().unwrap();
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        spans.push((span.metadata().name().to_owned(), fields));
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.0.lock().unwrap();
        let index = usize::try_from(id.into_u64()).unwrap() - 1;
        values.record(&mut Fields(&mut spans[index].1));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn every_store_transaction_of_a_bill_run_has_a_span_with_tenant_backend_and_counts() {
    const SUBS: u128 = 4;
    let db = common::sqlite_memory().await;
    let store = SqlStore::new(db.clone());
    let tenant = new_tenant(&db).await;
    seed(&store, tenant, SUBS).await;
    let run = BillRunId::new();
    store
        .plan_billing_run(tenant, run, day(3, 1), 2, at(1, 0))
        .await
        .unwrap();

    let spans = Spans::default();
    let guard = tracing::subscriber::set_default(spans.clone());
    let plans = HashMap::from([(plan().id, plan())]);
    let settings = BillingSettings::default();
    let job = BillWorker {
        tenant,
        run,
        as_of: day(3, 1),
        plans: &plans,
        settings: &settings,
        worker: "w",
        lease: Duration::minutes(LEASE).into(),
    };
    let report = store
        .run_bill_worker(&job, &FixedClock::new(at(1, 0)))
        .await
        .unwrap();
    drop(guard);
    assert_eq!((report.chunks, report.invoices), (2, 12));

    let seen = spans.0.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "dotmac.store.run_bill_worker",
        "dotmac.store.claim_chunk",
        "dotmac.store.load_chunk",
        "dotmac.store.write_chunk",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // Identifiers, the backend and counts only: never a name, an amount or a document.
    let allowed = [
        "tenant",
        "backend",
        "chunk",
        "chunks",
        "subscriptions",
        "invoices",
        "events",
    ];
    for (name, fields) in &seen {
        assert!(name.starts_with("dotmac.store."), "{name}");
        assert_eq!(
            fields.get("backend").map(String::as_str),
            Some("sqlite"),
            "{name}"
        );
        assert_eq!(fields.get("tenant"), Some(&tenant.to_string()), "{name}");
        assert!(
            fields.keys().all(|k| allowed.contains(&k.as_str())),
            "{name}: {fields:?}"
        );
    }
    let worker = &seen
        .iter()
        .find(|(n, _)| n == "dotmac.store.run_bill_worker")
        .unwrap()
        .1;
    assert_eq!(worker.get("chunks").map(String::as_str), Some("2"));
    assert_eq!(worker.get("invoices").map(String::as_str), Some("12"));
    let written: Vec<(&str, &str)> = seen
        .iter()
        .filter(|(n, _)| n == "dotmac.store.write_chunk")
        .map(|(_, f)| (f["invoices"].as_str(), f["events"].as_str()))
        .collect();
    assert_eq!(written, vec![("6", "6"), ("6", "6")]);
}
