//! Hostile-input bodies: one function per parser or decoder that a DotMac user feeds with data
//! from outside (a NAS's accounting records, plan and price JSON from an admin UI, amounts typed
//! by a person, an iCalendar feed from a URL, conformance case files).
//!
//! Each body takes arbitrary bytes, drives the public API as an embedder would (parse, then use
//! what parsed), and returns normally whatever the input: an `Err` from DotMac is a correct
//! answer, a panic, an abort or an unbounded allocation is the bug being hunted. The same bodies
//! run in two harnesses, so what one finds the other keeps finding:
//!
//! - `fuzz/` (outside the workspace): `cargo fuzz` targets, coverage-guided, run by
//!   `fuzz/run SECONDS` (see `docs/fuzzing.md`);
//! - `tests/hostile.rs` (in `cargo test`): a seeded, time-bounded proptest of each body over
//!   generated and mutated inputs, so every CI run replays a fixed, reproducible sample.
//!
//! Bodies never print and never read the environment; everything they need is in the bytes.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use dotmac_billing::Plan;
use dotmac_billing::PriceModel;
use dotmac_core::{Currency, CustomerId, Money, RoundingMode, SubscriptionId};
use dotmac_usage::MeterId;
use dotmac_usage::radius::{
    AccountResolver, Direction, RadiusNormaliser, RadiusRecord, RadiusSettings,
};
use rust_decimal::Decimal;

/// The names of every body, as the fuzz targets and the proptest suite call them.
pub const BODIES: &[&str] = &[
    "money_text",
    "price_model_json",
    "plan_json",
    "radius_attributes",
    "ical_feed",
    "conformance_case",
];

/// Money as people type it: each line is `CODE amount` (`USD 12.50`); whatever parses is added,
/// rounded, split and allocated, the operations an amount goes through on its way to an invoice.
pub fn money_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parsed = Vec::new();
    for line in text.lines().take(256) {
        let (code, amount) = line.split_once(' ').unwrap_or((line, ""));
        let Ok(currency) = Currency::from_str(code) else {
            continue;
        };
        let Ok(money) = Money::parse(amount, currency) else {
            continue;
        };
        parsed.push(money);
    }
    let Some(first) = parsed.first().copied() else {
        return;
    };
    for money in &parsed {
        let _ = first.checked_add(*money);
        let _ = first.checked_sub(*money);
        let _ = money.checked_mul(first.amount());
        let _ = money.mul_ratio(i64::MAX, 7);
        let _ = money.mul_ratio(1, 0);
        let _ = money.to_minor();
        let _ = money.compare(&first);
        for mode in [RoundingMode::HalfUp, RoundingMode::HalfEven] {
            let _ = money.round(mode);
        }
        let parts = usize::from(data.len().to_le_bytes()[0] % 64);
        let _ = money.split(parts);
        let _ = money.allocate(&[first.amount(), Decimal::ONE, Decimal::NEGATIVE_ONE]);
        let _ = money.to_string();
    }
    let _ = Money::sum(first.currency(), parsed.iter().copied());
}

/// Quantities a price is asked for: small, fractional, at the tier bounds people write and at
/// the edge of `Decimal`.
fn probe_quantities() -> [Decimal; 7] {
    [
        Decimal::ZERO,
        Decimal::ONE,
        Decimal::new(1005, 1),
        Decimal::from(1_000_000),
        Decimal::new(-1, 0),
        Decimal::MAX,
        Decimal::new(1, 28),
    ]
}

/// A price model as JSON (as an admin UI would post it), then priced at several quantities.
pub fn price_model_json(data: &[u8]) {
    let Ok(model) = serde_json::from_slice::<PriceModel>(data) else {
        return;
    };
    let _ = model.validate();
    for quantity in probe_quantities() {
        let _ = model.amount(quantity);
    }
    // What was accepted must survive a round trip unchanged.
    if let Ok(json) = serde_json::to_vec(&model) {
        let _ = serde_json::from_slice::<PriceModel>(&json);
    }
}

/// A whole plan as JSON, then asked what one period costs in each currency it names.
pub fn plan_json(data: &[u8]) {
    let Ok(plan) = serde_json::from_slice::<Plan>(data) else {
        return;
    };
    let _ = plan.validate();
    let far = NaiveDate::MAX;
    for version in plan.versions() {
        let _ = plan.version_on(version.effective_from);
        for charge in &version.charges {
            for price in &charge.prices {
                for quantity in probe_quantities() {
                    let _ = version.recurring_amount(plan.id, price.currency, quantity);
                }
            }
        }
    }
    let _ = plan.version_on(far);
    if let Ok(json) = serde_json::to_vec(&plan) {
        let _ = serde_json::from_slice::<Plan>(&json);
    }
}

/// Every user name is one customer; the normaliser is tested, not the resolver.
struct AnyUser;

impl AccountResolver for AnyUser {
    fn resolve(&self, user_name: &str) -> Option<(CustomerId, Option<SubscriptionId>)> {
        if user_name.is_empty() {
            return None;
        }
        let id = user_name
            .bytes()
            .fold(0u128, |h, b| h.wrapping_mul(31).wrapping_add(u128::from(b)));
        Some((CustomerId::from_u128(id), None))
    }
}

/// RADIUS accounting as a server logs it: records separated by blank lines, one
/// `Attribute = value` per line; each record that parses goes through one normaliser, in order
/// (so sessions, wraps and resets meet each other), in both counting directions.
pub fn radius_attributes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let received_at = Utc
        .timestamp_opt(1_700_000_000, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut records = Vec::new();
    for block in text.split("\n\n").take(512) {
        let attributes = block
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.trim(), value.trim()));
        if let Ok(record) = RadiusRecord::from_attributes(attributes, received_at) {
            records.push(record);
        }
    }
    // The line rate decides wrap against reset: take it from the input, from 0 (every fall is a
    // reset) to u64::MAX (every fall fits a wrap).
    let rates = [0, 1_000_000_000, u64::MAX];
    let rate = rates[data.len() % rates.len()];
    for direction in [Direction::InputIsUpload, Direction::InputIsDownload] {
        let settings = RadiusSettings::new(direction, MeterId::from_u128(1), MeterId::from_u128(2))
            .with_max_line_rate_bps(rate);
        let mut normaliser = RadiusNormaliser::with_settings(settings);
        let mut out = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let _ = normaliser.normalise(record, &AnyUser, &mut out);
            // A restart mid-stream: the saved state must load and carry on.
            if i % 7 == 3
                && let Ok(saved) = serde_json::to_vec(&normaliser)
                && let Ok(restored) = serde_json::from_slice::<RadiusNormaliser>(&saved)
            {
                normaliser = restored;
            }
        }
        let _ = normaliser.normalise_batch(&records, &AnyUser);
        normaliser.forget_stopped();
    }
    // A saved state is input too (read back from a file or a column after a restart).
    let _ = serde_json::from_slice::<RadiusNormaliser>(data);
}

/// An iCalendar holiday feed (as fetched from a URL), expanded to a horizon a user would choose.
pub fn ical_feed(data: &[u8]) {
    let Ok(feed) = std::str::from_utf8(data) else {
        return;
    };
    let Some(through) = NaiveDate::from_ymd_opt(2040, 12, 31) else {
        return;
    };
    if let Ok(days) = dotmac_support::ical_holidays(feed, chrono_tz::Europe::Berlin, through) {
        let _ = dotmac_support::BusinessCalendar::builder("Europe/Berlin")
            .weekdays("09:00", "17:00")
            .holidays(days)
            .build();
    }
}

/// A conformance case file, as a user drops one into `$DOTMAC_CONFORMANCE_DIR`: the first
/// byte picks the family, the rest is the file's text, run through the loader and that family's
/// runner (which drive the whole public API: pricing, billing timelines, SLA clocks, dunning,
/// commissions, usage, invoices, RADIUS). A case that fails is a correct answer.
pub fn conformance_case(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let families = dotmac_conformance::KNOWN_FAMILIES;
    let family = families[usize::from(selector) % families.len()];
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let _ = dotmac_conformance::run_case_file_text(family, std::path::Path::new("<fuzz>"), text);
}

/// Runs the body called `name` (one of [`BODIES`]) on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "money_text" => money_text(data),
        "price_model_json" => price_model_json(data),
        "plan_json" => plan_json(data),
        "radius_attributes" => radius_attributes(data),
        "ical_feed" => ical_feed(data),
        "conformance_case" => conformance_case(data),
        _ => return false,
    }
    true
}
