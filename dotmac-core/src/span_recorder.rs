//! A tracing subscriber that records spans, for the span-convention tests of the DotMac crates
//! (docs/observability.md), without `tracing-subscriber` as a dependency.
//!
//! [`record_spans`] is the entry point: it runs a scenario with a [`SpanRecorder`] as the
//! thread's subscriber and returns what was recorded. It exists because recording spans in a test
//! binary whose other tests run in parallel, with no subscriber, races tracing's per-call-site
//! interest cache. While at most one dispatcher is registered, tracing-core computes the interest
//! of a call site reached for the first time from the *reaching thread's* dispatcher alone and
//! caches it for every thread: a call site first reached by a parallel test with no subscriber is
//! cached as "never", and the recorder on the test's thread never sees it. `record_spans` keeps a
//! second dispatcher registered for the life of the process (one that listens to nothing but asks
//! to be consulted per call), so that every interest is computed over all registered dispatchers
//! and comes out as "sometimes": each call then asks the calling thread's own subscriber.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata};

/// Span names, levels and fields in the order the spans were opened, with the enter stack so
/// that `Span::current()` works inside instrumented code.
#[derive(Debug, Default)]
pub struct SpanRecorder {
    spans: Mutex<Vec<(&'static Metadata<'static>, String)>>,
    stack: Mutex<Vec<u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock still leaves readable spans.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SpanRecorder {
    /// `Level(…) field=value …` of every span named `name`, in the order they were opened.
    #[must_use]
    pub fn lines(&self, name: &str) -> Vec<String> {
        lock(&self.spans)
            .iter()
            .filter(|(metadata, _)| metadata.name() == name)
            .map(|(metadata, fields)| format!("{:?}{fields}", metadata.level()))
            .collect()
    }

    /// `Level(…) field=value …` of the first span named `name`.
    #[must_use]
    pub fn line(&self, name: &str) -> Option<String> {
        self.lines(name).into_iter().next()
    }

    /// Every span, as `name Level(…) field=value …`.
    #[must_use]
    pub fn all(&self) -> Vec<String> {
        lock(&self.spans)
            .iter()
            .map(|(metadata, fields)| format!("{} {:?}{fields}", metadata.name(), metadata.level()))
            .collect()
    }
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl tracing::Subscriber for SpanRecorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = String::new();
        span.record(&mut Fields(&mut fields));
        let mut spans = lock(&self.spans);
        spans.push((span.metadata(), fields));
        // Ids are 1-based positions; a u64 holds any Vec length.
        Id::from_u64(u64::try_from(spans.len()).unwrap_or(u64::MAX))
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = lock(&self.spans);
        let slot = usize::try_from(span.into_u64())
            .ok()
            .and_then(|position| position.checked_sub(1))
            .and_then(|index| spans.get_mut(index));
        if let Some((_, fields)) = slot {
            values.record(&mut Fields(fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        lock(&self.stack).push(span.into_u64());
    }

    fn exit(&self, _: &Id) {
        lock(&self.stack).pop();
    }

    fn current_span(&self) -> tracing_core::span::Current {
        let Some(&id) = lock(&self.stack).last() else {
            return tracing_core::span::Current::none();
        };
        let metadata = usize::try_from(id)
            .ok()
            .and_then(|position| position.checked_sub(1))
            .and_then(|index| lock(&self.spans).get(index).map(|(metadata, _)| *metadata));
        match metadata {
            Some(metadata) => tracing_core::span::Current::new(Id::from_u64(id), metadata),
            None => tracing_core::span::Current::none(),
        }
    }
}

/// Listens to nothing and asks to be consulted on every call: kept registered so that a call
/// site's cached interest is never computed from one thread's dispatcher alone.
struct ConsultEveryCall;

impl tracing::Subscriber for ConsultEveryCall {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Never called: `enabled` is false.
        Id::from_u64(u64::MAX)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

static CONSULT_EVERY_CALL: OnceLock<Dispatch> = OnceLock::new();

/// Runs `scenario` with a fresh [`SpanRecorder`] as this thread's subscriber; returns the
/// recorder and the scenario's output. Spans opened on other threads are not recorded.
pub fn record_spans<T>(scenario: impl FnOnce() -> T) -> (Arc<SpanRecorder>, T) {
    // Creating a `Dispatch` registers it with tracing-core; keeping it alive keeps it
    // registered.
    CONSULT_EVERY_CALL.get_or_init(|| Dispatch::new(ConsultEveryCall));
    let recorder = Arc::new(SpanRecorder::default());
    let dispatch = Dispatch::new(Arc::clone(&recorder));
    let output = tracing::dispatcher::with_default(&dispatch, || {
        // Registering `dispatch` recomputed every cached interest; recompute once more in case
        // a call site was being registered on another thread at that moment.
        tracing::callsite::rebuild_interest_cache();
        scenario()
    });
    (recorder, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tracing::instrument(name = "dotmac.test.outer", skip_all, fields(count = items.len(), total))]
    fn outer(items: &[u32]) {
        tracing::Span::current().record("total", items.iter().sum::<u32>());
        inner();
    }

    #[tracing::instrument(name = "dotmac.test.inner", level = "debug")]
    fn inner() {}

    #[test]
    fn spans_are_recorded_with_their_level_fields_and_late_records() {
        let (recorder, ()) = record_spans(|| {
            // The call sites are first reached on a thread with no subscriber, as by a test
            // running in parallel: that must neither be recorded nor hide them from the recorder.
            std::thread::spawn(|| outer(&[4])).join().unwrap();
            outer(&[1, 2, 3]);
        });
        assert_eq!(
            recorder.all(),
            [
                "dotmac.test.outer Level(Info) count=3 total=6",
                "dotmac.test.inner Level(Debug)",
            ]
        );
        assert_eq!(recorder.lines("dotmac.test.inner"), ["Level(Debug)"]);
        assert_eq!(recorder.line("dotmac.test.none"), None);
    }
}
