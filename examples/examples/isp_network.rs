//! The ISP loop to the network: billing and collections on PostgreSQL driving a real
//! FreeRADIUS (started by `dotmac-radius-harness` on loopback ports of its own), and
//! FreeRADIUS's accounting, sent by `radclient`, coming back as billed usage. What it does is
//! `dotmac_examples::network` (its test runs the same function).
//!
//! It needs PostgreSQL (FreeRADIUS's `rlm_sql` reads it) and Debian's `freeradius`,
//! `freeradius-postgresql` and `freeradius-utils` packages:
//!
//! ```sh
//! cargo run --example isp_network -- --database-url postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! DotMac's tables go to the schema `isp_network` of that database, FreeRADIUS's to the
//! database `<database>_radius` (created when missing). Without `--database-url` it uses
//! `DATABASE_URL`.

use std::error::Error;

type AnyError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let mut url = std::env::var("DATABASE_URL").ok();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database-url" => url = Some(args.next().ok_or("--database-url needs a URL")?),
            "-h" | "--help" => {
                println!("isp_network [--database-url postgres://…] (or DATABASE_URL)");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    let url = url.ok_or(
        "isp_network runs on PostgreSQL: pass --database-url postgres://… or set DATABASE_URL",
    )?;
    let report = dotmac_examples::network::run(&url, "isp_network").await?;
    println!();
    println!("Read back:");
    for (user, rate) in &report.accepted_rates {
        println!("  {user:<12} accepted at {rate:?}");
    }
    println!(
        "  heavy user past the fair-usage threshold: {:?}",
        report.throttled_rate
    );
    println!(
        "  heavy user after the month reset:         {:?}",
        report.reset_rate
    );
    println!(
        "  non-payer after suspension: {}; late payer suspended: {}, restored: {}",
        report.non_payer_after_suspension, report.late_payer.0, report.late_payer.1
    );
    for (user, quantity, amount) in &report.usage_lines {
        println!("  {user:<12} November usage line: {quantity} bytes, {amount}");
    }
    Ok(())
}
