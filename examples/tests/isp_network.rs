//! The network example's run, against PostgreSQL and a real FreeRADIUS: what it reads back is
//! what the loop should have done. Needs `DATABASE_URL`; fails, never skips, when FreeRADIUS
//! cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hash::{Hash, Hasher};

use rust_decimal::Decimal;

/// A schema of this test's own per version of the PostgreSQL migrations (as dotmac-sqlx's
/// tests do): a schema migrated by other migrations would refuse these.
fn schema() -> String {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dotmac-sqlx/migrations/postgres"
    );
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        std::fs::read_to_string(file).unwrap().hash(&mut hasher);
    }
    format!("isp_network_test_{:08x}", hasher.finish() as u32)
}

#[tokio::test]
async fn the_network_example_closes_the_loop_through_freeradius() {
    let url = std::env::var("DATABASE_URL")
        .expect("the network example needs DATABASE_URL (a PostgreSQL server); it never skips");
    let report = dotmac_examples::network::run(&url, &schema())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // New customers at their plan's rate (upload/download).
    let rates: Vec<Option<&str>> = report
        .accepted_rates
        .iter()
        .map(|(_, r)| r.as_deref())
        .collect();
    assert_eq!(
        rates,
        [Some("50M/300M"), Some("20M/100M"), Some("20M/100M")]
    );
    // Past 8 GB in October, the fair-usage rate; the plan's rate back on November 1st.
    assert_eq!(report.throttled_rate.as_deref(), Some("12500k/75M"));
    assert_eq!(report.reset_rate.as_deref(), Some("50M/300M"));
    assert_eq!(report.non_payer_after_suspension, "Access-Reject");
    assert_eq!(
        report.late_payer,
        ("Access-Reject".to_owned(), "Access-Accept".to_owned())
    );
    let usage: Vec<(Decimal, Decimal)> = report
        .stored_usage
        .iter()
        .map(|(_, down, up)| (*down, *up))
        .collect();
    assert_eq!(
        usage,
        [
            (
                Decimal::from(12_000_000_000u64),
                Decimal::from(150_000_000u64)
            ),
            (Decimal::from(700_000_000u64), Decimal::from(9_000_000u64)),
            (
                Decimal::from(1_200_000_000u64),
                Decimal::from(20_000_000u64)
            ),
        ]
    );
    // Ada's 2 GB above the 10 GB included at 2.00 per GB; the others within the allowance.
    let lines: Vec<(Decimal, Decimal)> = report
        .usage_lines
        .iter()
        .map(|(_, quantity, amount)| (*quantity, *amount))
        .collect();
    assert_eq!(
        lines,
        [
            (Decimal::from(2_000_000_000u64), Decimal::new(400, 2)),
            (Decimal::ZERO, Decimal::ZERO),
            (Decimal::ZERO, Decimal::ZERO),
        ]
    );
    // Online during the slowdown (Ada) and the suspension (Bob): one CoA, one Disconnect.
    assert_eq!(report.coa_requests, (1, 1));
    // Twelve usage events: Ada's four readings, Bob's and Cy's one each, on both meters.
    assert_eq!(report.events_ingested, 12);
}
