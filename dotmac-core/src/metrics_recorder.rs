//! A `metrics` recorder for the crates' counter tests (feature `testkit`): counts increments per
//! `name{label=value,…}`, to install with `metrics::with_local_recorder` around the code under
//! test.
//!
//! ```
//! use dotmac_core::metrics_recorder::Counting;
//!
//! let recorder = Counting::default();
//! metrics::with_local_recorder(&recorder, || {
//!     metrics::counter!("dotmac_example_total", "outcome" => "ok").increment(2);
//! });
//! assert_eq!(recorder.moved(), ["dotmac_example_total{outcome=ok}=2"]);
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Counts increments per `name{labels}`; gauges and histograms are ignored.
#[derive(Debug, Default)]
pub struct Counting(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

impl Counting {
    /// Every counter that moved, as `name{labels}=value`, in name order.
    pub fn moved(&self) -> Vec<String> {
        let counters = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .iter()
            .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

impl Recorder for Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut counters = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Counter::from_arc(Arc::clone(counters.entry(name).or_default()))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
