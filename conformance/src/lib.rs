//! The conformance harness: loads the shared worked examples and runs them through DotMac's
//! public API.
//!
//! Cases live in `../shared/conformance/<family>/*.json` (next to the repository), in the
//! repository's own `conformance/cases/<family>/*.json` (the only home of the
//! [`LOCAL_FAMILIES`], whose formats are in `docs/`) and, when the
//! environment variable `DOTMAC_CONFORMANCE_DIR` is set, in `$DOTMAC_CONFORMANCE_DIR/<family>/`
//! too. Each file is a JSON array of cases with an `id`; the formats are defined in the shared
//! README. A family's runner is one function from a typed case (deserialized with
//! `deny_unknown_fields`, so an unknown field is an error) to `Result<(), String>`; the harness
//! reports every failure with its file and case id.
//!
//! The runners themselves are in [`families`], one module per family, so that the test suite and
//! the hostile-input harness (`dotmac-hostile`, which feeds mutated case files to them) share them.

#[allow(missing_docs)]
pub mod families;

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

/// Every family the shared README defines. A folder with any other name under a conformance
/// root is an error: a case nobody runs must not pass silently.
pub const KNOWN_FAMILIES: &[&str] = &[
    "pricing",
    "periods",
    "billing",
    "sla",
    "commission",
    "dunning",
    "usage",
    "invoice",
    "radius",
    "fup",
];

/// The families defined by the repository rather than the shared README: their cases live in
/// `conformance/cases/<family>/` (and `$DOTMAC_CONFORMANCE_DIR`), their format in `docs/`
/// (`fup`: `docs/conformance-fup.md`). The shared root holds none, so [`verdict`] asks the
/// repository's root for at least one case instead.
pub const LOCAL_FAMILIES: &[&str] = &["fup"];

/// The environment variable naming an extra conformance root.
pub const EXTRA_DIR_VAR: &str = "DOTMAC_CONFORMANCE_DIR";

/// The shared conformance root, `../shared/conformance` beside the repository.
pub fn shared_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
}

/// The repository's own cases, `conformance/cases` (loaded when present).
pub fn local_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cases")
}

/// The roots to load: the shared one (which must exist), the repository's own (when present)
/// and the extra one, if set.
///
/// # Errors
///
/// When the shared root is missing: the suite must never pass by running nothing.
pub fn roots() -> Result<Vec<PathBuf>, String> {
    let shared = shared_root();
    if !shared.is_dir() {
        return Err(format!(
            "shared conformance cases not found at {}: the repository must sit beside shared/",
            shared.display()
        ));
    }
    let mut roots = vec![shared];
    let local = local_root();
    if local.is_dir() {
        roots.push(local);
    }
    if let Some(extra) = std::env::var_os(EXTRA_DIR_VAR).filter(|v| !v.is_empty()) {
        let extra = PathBuf::from(extra);
        if !extra.is_dir() {
            return Err(format!(
                "{EXTRA_DIR_VAR}={} is not a directory",
                extra.display()
            ));
        }
        roots.push(extra);
    }
    Ok(roots)
}

/// Folders under the roots that are not a known family.
///
/// # Errors
///
/// When a root cannot be read.
pub fn unknown_families() -> Result<Vec<PathBuf>, String> {
    let mut unknown = Vec::new();
    for root in roots()? {
        let entries = std::fs::read_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", root.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && !KNOWN_FAMILIES.iter().any(|f| name == *f) {
                unknown.push(path);
            }
        }
    }
    unknown.sort();
    Ok(unknown)
}

/// One failed case.
#[derive(Debug)]
pub struct Failure {
    /// The file the case came from.
    pub file: PathBuf,
    /// The case id (or its index when it has none).
    pub id: String,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.id, self.file.display(), self.message)
    }
}

/// The outcome of running one family.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases run, per root, in root order.
    pub cases_per_root: Vec<(PathBuf, usize)>,
    /// Cases that failed (including cases that could not be read).
    pub failures: Vec<Failure>,
}

impl Report {
    /// Total cases run.
    pub fn cases(&self) -> usize {
        self.cases_per_root.iter().map(|(_, n)| n).sum()
    }
}

/// Loads every case of `family` from every root and runs it through `runner`.
///
/// A case that does not deserialize into `C` (an unknown field, a missing field, a bad value)
/// is a failure, reported with its id.
///
/// # Errors
///
/// When the roots cannot be found or a family folder cannot be listed.
pub fn run_family<C, F>(family: &str, runner: F) -> Result<Report, String>
where
    C: DeserializeOwned,
    F: Fn(C) -> Result<(), String>,
{
    run_family_in(&roots()?, family, runner)
}

/// [`run_family`] over explicit roots.
///
/// # Errors
///
/// When a family folder cannot be listed.
pub fn run_family_in<C, F>(roots: &[PathBuf], family: &str, runner: F) -> Result<Report, String>
where
    C: DeserializeOwned,
    F: Fn(C) -> Result<(), String>,
{
    let mut report = Report::default();
    for root in roots.iter().cloned() {
        let dir = root.join(family);
        let mut count = 0;
        if dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            for file in files {
                count += run_file(&file, &runner, &mut report.failures);
            }
        }
        report.cases_per_root.push((root, count));
    }
    Ok(report)
}

fn run_file<C, F>(file: &Path, runner: &F, failures: &mut Vec<Failure>) -> usize
where
    C: DeserializeOwned,
    F: Fn(C) -> Result<(), String>,
{
    match std::fs::read_to_string(file) {
        Ok(text) => run_cases(file, &text, runner, failures),
        Err(e) => {
            failures.push(Failure {
                file: file.to_path_buf(),
                id: "<file>".into(),
                message: format!("cannot read: {e}"),
            });
            0
        }
    }
}

/// Runs the cases of one case file's text through `runner`; returns how many cases it held.
fn run_cases<C, F>(file: &Path, text: &str, runner: &F, failures: &mut Vec<Failure>) -> usize
where
    C: DeserializeOwned,
    F: Fn(C) -> Result<(), String>,
{
    let fail = |failures: &mut Vec<Failure>, id: String, message: String| {
        failures.push(Failure {
            file: file.to_path_buf(),
            id,
            message,
        })
    };
    let cases: Vec<serde_json::Value> = match serde_json::from_str(text) {
        Ok(cases) => cases,
        Err(e) => {
            fail(
                failures,
                "<file>".into(),
                format!("not a JSON array of cases: {e}"),
            );
            return 0;
        }
    };
    for (index, value) in cases.iter().enumerate() {
        let id = value
            .get("id")
            .and_then(|v| v.as_str())
            .map_or_else(|| format!("#{index}"), str::to_owned);
        match serde_json::from_value::<C>(value.clone()) {
            Ok(case) => {
                if let Err(message) = runner(case) {
                    fail(failures, id, message);
                }
            }
            Err(e) => fail(failures, id, format!("case does not match the format: {e}")),
        }
    }
    cases.len()
}

/// Runs the text of one case file of `family` (a JSON array of cases, as on disk) through that
/// family's runner, as if it had been loaded from `file`: the loader and the runners without the
/// file system, for callers that hold case files in memory (and for the hostile-input harness).
///
/// # Errors
///
/// When `family` is not one of [`KNOWN_FAMILIES`].
pub fn run_case_file_text(family: &str, file: &Path, text: &str) -> Result<Report, String> {
    let mut report = Report::default();
    let failures = &mut report.failures;
    let count = match family {
        "pricing" => run_cases(file, text, &families::pricing::run, failures),
        "periods" => run_cases(file, text, &families::periods::run, failures),
        "billing" => run_cases(file, text, &families::billing::run, failures),
        "sla" => run_cases(file, text, &families::sla::run, failures),
        "commission" => run_cases(file, text, &families::commission::run, failures),
        "dunning" => run_cases(file, text, &families::dunning::run, failures),
        "usage" => run_cases(file, text, &families::usage::run, failures),
        "invoice" => run_cases(file, text, &families::invoice::run, failures),
        "radius" => run_cases(file, text, &families::radius::run, failures),
        "fup" => run_cases(file, text, &families::fup::run, failures),
        other => return Err(format!("unknown conformance family {other:?}")),
    };
    report.cases_per_root.push((file.to_path_buf(), count));
    Ok(report)
}

/// Parses a decimal string from a case.
///
/// # Errors
///
/// When the text is not a decimal.
pub fn decimal(text: &str) -> Result<Decimal, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("bad decimal {text:?}: {e}"))
}

/// Parses a `YYYY-MM-DD` date from a case.
///
/// # Errors
///
/// When the text is not a date.
pub fn date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| format!("bad date {text:?}: {e}"))
}

/// Parses an RFC 3339 instant from a case.
///
/// # Errors
///
/// When the text is not an RFC 3339 instant.
pub fn instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("bad instant {text:?}: {e}"))
}

/// Compares two amounts by numeric value ("110" equals "110.00").
///
/// # Errors
///
/// A message naming `what`, the expected and the actual value.
pub fn same_amount(what: &str, expected: Decimal, actual: Decimal) -> Result<(), String> {
    if expected == actual {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected}, got {actual}"))
    }
}

/// Turns a report into a test verdict: every case passed and the shared root (for a
/// [`LOCAL_FAMILIES`] family, the repository's own root) held at least one case of the family.
///
/// # Errors
///
/// A message listing every failure.
pub fn verdict(family: &str, report: &Report) -> Result<(), String> {
    for (root, n) in &report.cases_per_root {
        eprintln!("conformance {family}: {n} case(s) from {}", root.display());
    }
    if LOCAL_FAMILIES.contains(&family) {
        let local = local_root();
        if !report
            .cases_per_root
            .iter()
            .any(|(root, n)| *root == local && *n > 0)
        {
            return Err(format!(
                "no {family} cases found in the repository's root {}",
                local.display()
            ));
        }
    } else if report.cases_per_root.first().is_none_or(|(_, n)| *n == 0) {
        return Err(format!("no {family} cases found in the shared root"));
    }
    if report.failures.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    Err(format!(
        "{} of {} {family} case(s) failed:\n{}",
        report.failures.len(),
        report.cases(),
        list.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Toy {
        #[allow(dead_code)]
        id: String,
        value: String,
        expected: String,
    }

    fn toy(case: Toy) -> Result<(), String> {
        same_amount("value", decimal(&case.expected)?, decimal(&case.value)?)
    }

    fn root_with(cases: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "dotmac-conformance-test-{}-{}",
            std::process::id(),
            cases.len()
        ));
        let dir = root.join("toy");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cases.json"), cases).unwrap();
        root
    }

    #[test]
    fn extra_roots_are_run_and_failures_name_the_case() {
        let root = root_with(
            r#"[{"id": "ok", "value": "110", "expected": "110.00"},
                {"id": "wrong", "value": "1", "expected": "2"},
                {"id": "extra-field", "value": "1", "expected": "1", "surprise": true}]"#,
        );
        let report = run_family_in(std::slice::from_ref(&root), "toy", toy).unwrap();
        assert_eq!(report.cases(), 3);
        let ids: Vec<&str> = report.failures.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["wrong", "extra-field"]);
        assert!(
            report.failures[1]
                .message
                .contains("unknown field `surprise`")
        );
        let verdict = verdict("toy", &report).unwrap_err();
        assert!(verdict.contains("2 of 3 toy case(s) failed"), "{verdict}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_family_with_no_shared_cases_fails() {
        let report = Report {
            cases_per_root: vec![(PathBuf::from("shared"), 0)],
            failures: vec![],
        };
        assert!(verdict("toy", &report).is_err());
    }
}
