//! Runs every shared conformance case (and the repository's own under `conformance/cases/`, and
//! any under `$DOTMAC_CONFORMANCE_DIR`) through the public API. One test per family; a failure names the case id.
#![allow(missing_docs, unreachable_pub)]

mod families {
    pub mod billing;
    pub mod commission;
    pub mod dunning;
    pub mod invoice;
    pub mod periods;
    pub mod pricing;
    pub mod radius;
    pub mod sla;
    pub mod usage;
}

use dotmac_conformance::{run_family, unknown_families, verdict};

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
