//! The seeded, time-bounded proptest version of every fuzz target: each body of
//! `dotmac_hostile` meets generated and mutated inputs for a fixed time budget, from a fixed
//! seed, so a CI run replays a reproducible sample and a failure prints the input that caused it.
//!
//! - `DOTMAC_HOSTILE_SECONDS` (default 3): the budget per body.
//! - `DOTMAC_HOSTILE_SEED` (default fixed): another seed, for longer local hunts.
//!
//! A panic in a body fails the test with the input; an abort (stack overflow, allocation
//! failure) kills the test binary, which fails the run as loudly. Bodies run on a thread with a
//! 2 MiB stack, as on a tokio worker, so recursion that a larger main-thread stack would hide is
//! caught here.
// A hostile input that breaks a body must fail the test loudly: panicking is the point here.
#![allow(missing_docs, unreachable_pub, clippy::panic, clippy::unwrap_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const DEFAULT_SEED: [u8; 32] = *b"dotmac hostile inputs, seeded...";

fn budget() -> Duration {
    let seconds = std::env::var("DOTMAC_HOSTILE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(3);
    Duration::from_secs(seconds)
}

fn seed() -> [u8; 32] {
    let mut seed = DEFAULT_SEED;
    if let Ok(text) = std::env::var("DOTMAC_HOSTILE_SEED") {
        for (slot, byte) in seed.iter_mut().zip(text.bytes().cycle()) {
            *slot ^= byte;
        }
    }
    seed
}

/// Runs `body` on the fixed inputs, then on values of `strategy` until the budget is spent.
/// Returns how many inputs ran; fails with the first input that panicked.
fn hunt(name: &str, fixed: &[&[u8]], strategy: impl Strategy<Value = Vec<u8>>) -> u64 {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed()),
    );
    let started = Instant::now();
    let budget = budget();
    let mut inputs: u64 = 0;
    let mut check = |input: &[u8]| {
        inputs += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            assert!(dotmac_hostile::run(name, input), "no body named {name}");
        }));
        assert!(
            outcome.is_ok(),
            "{name} panicked on input {:?}",
            String::from_utf8_lossy(input)
        );
    };
    for input in fixed {
        check(input);
    }
    while started.elapsed() < budget {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        check(&tree.current());
    }
    inputs
}

/// Runs `hunt` on a thread with a tokio worker's stack.
fn on_small_stack(name: &'static str, job: impl FnOnce() -> u64 + Send + 'static) {
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(2 * 1024 * 1024)
        .spawn(job);
    let inputs = match handle.map(|h| h.join()) {
        Ok(Ok(inputs)) => inputs,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => panic!("could not start the {name} thread: {e}"),
    };
    // A hunt that ran nothing proved nothing.
    assert!(inputs > 0, "{name}: no input ran");
    eprintln!("{name}: {inputs} inputs, none panicked");
}

/// Byte-level mutations of seed inputs: flips, inserts, deletions, duplications and splices,
/// as a mutational fuzzer applies them.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let count = seeds.len();
    (
        0..count,
        0..count,
        prop::collection::vec((0u8..5, any::<usize>(), any::<usize>(), any::<u8>()), 0..12),
    )
        .prop_map(move |(first, other, edits)| {
            let mut bytes = seeds[first].clone();
            for (kind, at, len, byte) in edits {
                let at = if bytes.is_empty() {
                    0
                } else {
                    at % bytes.len()
                };
                let len = len % 64;
                match kind {
                    0 if !bytes.is_empty() => bytes[at] ^= byte | 1,
                    1 => bytes.insert(at, byte),
                    2 => {
                        let end = (at + len).min(bytes.len());
                        bytes.drain(at..end);
                    }
                    3 => {
                        let end = (at + len).min(bytes.len());
                        let piece = bytes[at..end].to_vec();
                        bytes.splice(at..at, piece);
                    }
                    _ => {
                        let donor = &seeds[other];
                        let from = if donor.is_empty() {
                            0
                        } else {
                            at % donor.len()
                        };
                        let end = (from + len).min(donor.len());
                        bytes.splice(at..at, donor[from..end].iter().copied());
                    }
                }
                if bytes.len() > 1 << 16 {
                    bytes.truncate(1 << 16);
                }
            }
            bytes
        })
}

/// Decimal-looking text: the numbers people type and the ones that break parsers.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("79228162514264337593543950335".to_owned()),
        Just("-79228162514264337593543950335".to_owned()),
        Just("0.0000000000000000000000000001".to_owned()),
        Just("1e28".to_owned()),
        Just("NaN".to_owned()),
        Just("".to_owned()),
        "-?[0-9]{0,32}(\\.[0-9]{0,32})?",
        "-?[0-9]{1,3}[eE][+-]?[0-9]{1,3}",
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

#[test]
fn money_text() {
    let line = (
        prop::sample::select(vec![
            "USD", "EUR", "JPY", "KWD", "BHD", "usd", "XXX", "", "U",
        ]),
        number_text(),
    )
        .prop_map(|(code, amount)| format!("{code} {amount}"));
    let typed = prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n").into_bytes());
    let raw = prop::collection::vec(any::<u8>(), 0..256);
    on_small_stack("money_text", move || {
        hunt(
            "money_text",
            &[b"USD 79228162514264337593543950335\nUSD 79228162514264337593543950335"],
            prop_oneof![typed, raw],
        )
    });
}

fn price_json() -> impl Strategy<Value = String> {
    let tier = (number_text(), number_text(), number_text()).prop_map(|(up_to, unit, flat)| {
        format!(r#"{{"up_to": "{up_to}", "unit_amount": "{unit}", "flat_amount": "{flat}"}}"#)
    });
    let block = (number_text(), number_text(), number_text()).prop_map(|(size, max, amount)| {
        format!(r#"{{"block_size": "{size}", "max_blocks": "{max}", "block_amount": "{amount}"}}"#)
    });
    let percent = (number_text(), number_text())
        .prop_map(|(up_to, rate)| format!(r#"{{"up_to": "{up_to}", "rate_percent": "{rate}"}}"#));
    prop_oneof![
        number_text().prop_map(|n| format!(r#"{{"model": "per_unit", "unit_amount": "{n}"}}"#)),
        (number_text(), number_text(), number_text()).prop_map(|(s, a, f)| format!(
            r#"{{"model": "package", "package_size": "{s}", "package_amount": "{a}", "free_units": "{f}"}}"#
        )),
        (
            prop::sample::select(vec!["graduated", "volume"]),
            prop::collection::vec(tier, 0..40)
        )
            .prop_map(|(m, t)| format!(r#"{{"model": "{m}", "tiers": [{}]}}"#, t.join(","))),
        (
            prop::sample::select(vec!["block_graduated", "block_volume"]),
            prop::collection::vec(block, 0..40)
        )
            .prop_map(|(m, t)| format!(r#"{{"model": "{m}", "tiers": [{}]}}"#, t.join(","))),
        prop::collection::vec(percent, 0..40).prop_map(|t| format!(
            r#"{{"model": "graduated_percentage", "tiers": [{}]}}"#,
            t.join(",")
        )),
        number_text().prop_map(|n| format!(r#"{{"model": "percentage", "rate_percent": "{n}"}}"#)),
    ]
}

const PRICE_SEEDS: &[&str] = &[
    r#"{"model": "per_unit", "unit_amount": "10"}"#,
    r#"{"model": "graduated", "tiers": [{"up_to": "10", "unit_amount": "10", "flat_amount": "2"}, {"up_to": null, "unit_amount": "5"}]}"#,
    r#"{"model": "block_volume", "tiers": [{"block_size": "100", "max_blocks": "1", "block_amount": "5"}, {"block_size": "50", "max_blocks": null, "block_amount": "2"}]}"#,
    r#"{"model": "package", "package_size": "0.0000000000000000000000000001", "package_amount": "79228162514264337593543950335", "free_units": "0"}"#,
];

#[test]
fn price_model_json() {
    let seeds: Vec<Vec<u8>> = PRICE_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    let fixed: Vec<&[u8]> = PRICE_SEEDS.iter().map(|s| s.as_bytes()).collect();
    on_small_stack("price_model_json", move || {
        hunt(
            "price_model_json",
            &fixed,
            prop_oneof![price_json().prop_map(String::into_bytes), mutated(seeds)],
        )
    });
}

fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("2026-01-01".to_owned()),
        Just("+262142-12-31".to_owned()),
        Just("-262143-01-01".to_owned()),
        Just("0000-01-01".to_owned()),
        (1i32..9999, 1u32..13, 1u32..32).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
    ]
}

fn plan_json() -> impl Strategy<Value = String> {
    let charge = (
        prop::sample::select(vec!["USD", "EUR", "JPY", "XXX"]),
        price_json(),
        prop::sample::select(vec![
            r#"{"kind": "recurring_flat"}"#,
            r#"{"kind": "per_seat"}"#,
            r#"{"kind": "usage", "metric": "bytes"}"#,
            r#"{"kind": "one_time"}"#,
        ]),
    )
        .prop_map(|(currency, price, kind)| {
            format!(
                r#"{{"kind": {kind}, "prices": [{{"currency": "{currency}", "model": {price}}}]}}"#
            )
        });
    let version = (
        0u32..4,
        date_text(),
        prop::collection::vec(charge, 0..4),
        number_text(),
    )
        .prop_map(|(v, from, charges, fee)| {
            format!(
                r#"{{"version": {v}, "effective_from": "{from}", "charges": [{}], "setup_fees": [{{"amount": "{fee}", "currency": "USD"}}]}}"#,
                charges.join(",")
            )
        });
    (
        prop::collection::vec(version, 0..4),
        prop::sample::select(vec!["day", "week", "month", "year", "decade"]),
        prop_oneof![Just(0u64), Just(1), Just(u64::from(u32::MAX)), any::<u64>()],
        prop_oneof![Just(0u64), Just(30), any::<u64>()],
    )
        .prop_map(|(versions, unit, count, trial)| {
            format!(
                r#"{{"id": "01890000-0000-7000-8000-000000000001", "product": "01890000-0000-7000-8000-000000000002", "name": "Fibre", "interval": {{"unit": "{unit}", "count": {count}}}, "timing": "in_advance", "trial_days": {trial}, "versions": [{}]}}"#,
                versions.join(",")
            )
        })
}

#[test]
fn plan_json_body() {
    let plan = dotmac_billing::Plan::builder(
        dotmac_core::PlanId::from_u128(1),
        dotmac_core::ProductId::from_u128(2),
        "Fibre 100",
    )
    .charge(dotmac_billing::Charge::recurring_flat([
        dotmac_core::Money::parse("29.99", dotmac_core::Currency::USD)
            .unwrap_or_else(|e| panic!("{e}")),
    ]))
    .build(chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default());
    let seed = match plan.map(|p| serde_json::to_vec(&p)) {
        Ok(Ok(json)) => json,
        other => panic!("the seed plan must build and serialize: {other:?}"),
    };
    let seeds = vec![seed.clone()];
    on_small_stack("plan_json", move || {
        hunt(
            "plan_json",
            &[&seed],
            prop_oneof![plan_json().prop_map(String::into_bytes), mutated(seeds)],
        )
    });
}

fn radius_block() -> impl Strategy<Value = String> {
    let counter = prop_oneof![
        Just("0".to_owned()),
        Just("4294967295".to_owned()),
        Just("4294967296".to_owned()),
        Just("-1".to_owned()),
        Just("3000000000".to_owned()),
        Just("10".to_owned()),
        any::<u32>().prop_map(|n| n.to_string()),
    ];
    let attribute = prop_oneof![
        prop::sample::select(vec![
            "Start",
            "Interim-Update",
            "Stop",
            "Accounting-On",
            "Accounting-Off",
            "Alive",
            "Bogus"
        ])
        .prop_map(|s| format!("Acct-Status-Type = {s}")),
        prop::sample::select(vec!["s1", "s2", "", "s1\"", "s\u{0}"])
            .prop_map(|s| format!("Acct-Unique-Session-Id = \"{s}\"")),
        prop::sample::select(vec!["alice", "bob", ""]).prop_map(|s| format!("User-Name = {s}")),
        prop::sample::select(vec!["nas1", "nas2"]).prop_map(|s| format!("NAS-Identifier = {s}")),
        (
            prop::sample::select(vec![
                "Acct-Input-Octets",
                "Acct-Output-Octets",
                "Acct-Input-Gigawords",
                "Acct-Output-Gigawords",
                "Acct-Session-Time",
            ]),
            counter
        )
            .prop_map(|(name, value)| format!("{name} = {value}")),
        prop_oneof![
            Just("0".to_owned()),
            Just("99999999999999".to_owned()),
            Just("-99999999999".to_owned()),
            Just("2026-11-01T00:00:00Z".to_owned()),
            (1_600_000_000i64..1_800_000_000).prop_map(|n| n.to_string()),
        ]
        .prop_map(|t| format!("Event-Timestamp = {t}")),
    ];
    prop::collection::vec(attribute, 0..10).prop_map(|lines| lines.join("\n"))
}

#[test]
fn radius_attributes() {
    let records = prop::collection::vec(radius_block(), 0..32)
        .prop_map(|blocks| blocks.join("\n\n").into_bytes());
    let raw = prop::collection::vec(any::<u8>(), 0..512);
    on_small_stack("radius_attributes", move || {
        hunt(
            "radius_attributes",
            &[b"Acct-Status-Type = Interim-Update\nAcct-Unique-Session-Id = s1\nUser-Name = alice\nAcct-Input-Octets = 3000000000\n\nAcct-Status-Type = Interim-Update\nAcct-Unique-Session-Id = s1\nUser-Name = alice\nAcct-Input-Octets = 10"],
            prop_oneof![records, raw],
        )
    });
}

fn ical_event() -> impl Strategy<Value = String> {
    let date = prop_oneof![
        Just("00000101".to_owned()),
        Just("99991231".to_owned()),
        Just("20270110".to_owned()),
        (1900u32..2100, 1u32..13, 1u32..29).prop_map(|(y, m, d)| format!("{y:04}{m:02}{d:02}")),
    ];
    let rule = prop::sample::select(vec![
        "",
        "RRULE:FREQ=YEARLY\r\n",
        "RRULE:FREQ=YEARLY;COUNT=4294967295\r\n",
        "RRULE:FREQ=YEARLY;INTERVAL=0\r\n",
        "RRULE:FREQ=YEARLY;UNTIL=99991231\r\n",
        "RRULE:FREQ=DAILY\r\n",
    ]);
    (date.clone(), date, rule).prop_map(|(start, end, rule)| {
        format!(
            "BEGIN:VEVENT\r\nUID:x\r\nDTSTART;VALUE=DATE:{start}\r\nDTEND;VALUE=DATE:{end}\r\n{rule}END:VEVENT\r\n"
        )
    })
}

/// The two feeds issue 9 reported: nesting that overflowed a worker's stack, and a 9,999-year
/// event repeated yearly that asked for 4 GiB.
fn reported_feeds() -> Vec<Vec<u8>> {
    let mut nested = String::from("BEGIN:VCALENDAR\r\n");
    for _ in 0..1_600 {
        nested.push_str("BEGIN:X\r\n");
    }
    let long = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTART;VALUE=DATE:00000101\r\nDTEND;VALUE=DATE:20270110\r\nRRULE:FREQ=YEARLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    vec![nested.into_bytes(), long.as_bytes().to_vec()]
}

#[test]
fn ical_feed() {
    let feed =
        (prop::collection::vec(ical_event(), 0..6), 0usize..3000).prop_map(|(events, depth)| {
            let mut feed = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n");
            for _ in 0..depth {
                feed.push_str("BEGIN:VTODO\r\n");
            }
            for event in events {
                feed.push_str(&event);
            }
            for _ in 0..depth {
                feed.push_str("END:VTODO\r\n");
            }
            feed.push_str("END:VCALENDAR\r\n");
            feed.into_bytes()
        });
    let reported = reported_feeds();
    let seeds = reported.clone();
    on_small_stack("ical_feed", move || {
        let fixed: Vec<&[u8]> = reported.iter().map(Vec::as_slice).collect();
        hunt("ical_feed", &fixed, prop_oneof![feed, mutated(seeds)])
    });
}

/// Every case file the suite knows (shared and repository-local), each prefixed with the byte
/// that selects its family in `dotmac_hostile::conformance_case`.
fn case_file_seeds() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = Vec::new();
    for (selector, family) in dotmac_conformance::KNOWN_FAMILIES.iter().enumerate() {
        for dir in [
            root.join("../../shared/conformance").join(family),
            root.join("../conformance/cases").join(family),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for file in files {
                if let Ok(text) = std::fs::read(&file) {
                    let mut seed = vec![u8::try_from(selector).unwrap_or(0)];
                    seed.extend(text);
                    seeds.push(seed);
                }
            }
        }
    }
    seeds
}

#[test]
fn conformance_case() {
    let seeds = case_file_seeds();
    // Without the shared cases there is nothing to mutate: that is a broken checkout, not a pass.
    assert!(
        seeds.len() >= dotmac_conformance::KNOWN_FAMILIES.len(),
        "only {} case files found",
        seeds.len()
    );
    let fixed = seeds.clone();
    on_small_stack("conformance_case", move || {
        let fixed: Vec<&[u8]> = fixed.iter().map(Vec::as_slice).collect();
        hunt("conformance_case", &fixed, mutated(seeds))
    });
}

#[test]
fn every_body_has_a_hunt() {
    // The tests above name these bodies; a new body needs a new test.
    assert_eq!(
        dotmac_hostile::BODIES,
        [
            "money_text",
            "price_model_json",
            "plan_json",
            "radius_attributes",
            "ical_feed",
            "conformance_case"
        ]
    );
    assert!(!dotmac_hostile::run("no such body", b""));
}
