//! A `metrics` recorder for the crates' counter tests (feature `testkit`): counts increments per
//! `name{label=value,…}` (and, from [`Counting::with_histograms`], histogram samples too), to
//! install with `metrics::with_local_recorder` around the code under test.
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

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Counts increments per `name{labels}`; gauges are ignored, and histograms unless
/// [`Counting::with_histograms`].
#[derive(Debug, Default)]
pub struct Counting {
    slots: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: bool,
}

/// A histogram that counts its samples.
struct Samples(Arc<AtomicU64>);

impl HistogramFn for Samples {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Counting {
    /// A recorder that also counts each histogram's samples (under the histogram's
    /// `name{labels}`).
    pub fn with_histograms() -> Self {
        Counting {
            slots: Mutex::default(),
            histograms: true,
        }
    }

    /// How far `name{labels}` moved (0 if it never did), e.g.
    /// `get("dotmac_example_total{outcome=ok}")`.
    pub fn get(&self, key: &str) -> u64 {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(key).map_or(0, |v| v.load(Ordering::Relaxed))
    }

    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(slots.entry(name).or_default())
    }

    /// Every counter that moved, as `name{labels}=value`, in name order.
    pub fn moved(&self) -> Vec<String> {
        let counters = self.slots.lock().unwrap_or_else(|e| e.into_inner());
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
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if self.histograms {
            Histogram::from_arc(Arc::new(Samples(self.slot(key))))
        } else {
            Histogram::noop()
        }
    }
}
