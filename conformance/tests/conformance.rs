//! Runs every shared conformance case (and the repository's own under `conformance/cases/`, and
//! any under `$DOTMAC_CONFORMANCE_DIR`) through the public API. One test per family; a failure names the case id.
#![allow(missing_docs, unreachable_pub)]

use dotmac_conformance::{families, run_family, unknown_families, verdict};

// A failing case must fail the test, with every failure listed: panicking is the point here.
#[allow(clippy::panic)]
fn check<C, F>(family: &str, runner: F)
where
    C: serde::de::DeserializeOwned,
    F: Fn(C) -> Result<(), String>,
{
    let report = run_family(family, runner).unwrap_or_else(|e| panic!("{e}"));
    if let Err(message) = verdict(family, &report) {
        panic!("{message}");
    }
}

#[test]
fn no_unknown_families() {
    let unknown = unknown_families().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        unknown.is_empty(),
        "unknown conformance families: {unknown:?}"
    );
}

#[test]
fn periods() {
    check("periods", families::periods::run);
}

#[test]
fn dunning() {
    check("dunning", families::dunning::run);
}

#[test]
fn sla() {
    check("sla", families::sla::run);
}

#[test]
fn pricing() {
    check("pricing", families::pricing::run);
}

#[test]
fn billing() {
    check("billing", families::billing::run);
}

#[test]
fn commission() {
    check("commission", families::commission::run);
}

#[test]
fn usage() {
    check("usage", families::usage::run);
}

#[test]
fn invoice() {
    check("invoice", families::invoice::run);
}

#[test]
fn radius() {
    check("radius", families::radius::run);
}

#[test]
fn fup() {
    check("fup", families::fup::run);
}

#[test]
fn every_known_family_has_a_runner_for_case_text() {
    for family in dotmac_conformance::KNOWN_FAMILIES {
        let report =
            dotmac_conformance::run_case_file_text(family, std::path::Path::new("<memory>"), "[]")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.cases(), 0, "{family}");
        assert!(
            report.failures.is_empty(),
            "{family}: {:?}",
            report.failures
        );
    }
    assert!(
        dotmac_conformance::run_case_file_text("nope", std::path::Path::new("x"), "[]").is_err()
    );
}
