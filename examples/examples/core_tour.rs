//! A tour of dotmac-core: exact money, one rounding point, allocation, and billing periods that
//! never drift.
//!
//! `cargo run --release --example core_tour`

use chrono::NaiveDate;
use dotmac_core::{BillingInterval, CoreError, Currency, Money, RoundingMode};
use rust_decimal::Decimal;

fn main() -> Result<(), CoreError> {
    let price = Money::parse("29.99", Currency::USD)?;
    println!("Fibre 100 costs {price} a month.");

    // A customer anchored on January 31st: periods clamp to month end and come back to the 31st.
    let anchor = date(2024, 1, 31)?;
    println!("\nMonthly periods anchored on {anchor}:");
    for k in 0..4 {
        let period = BillingInterval::MONTHLY.period(anchor, k)?;
        println!("  period {k}: {period} ({} days)", period.days());
    }

    // Joined on March 15th, billed on the 1st: prorate the first part by days.
    let bill_day = date(2024, 1, 1)?;
    let start = date(2024, 3, 15)?;
    let (_, march) = BillingInterval::MONTHLY.period_containing(bill_day, start)?;
    let used = march.from_date(start).map_or(0, |p| p.days());
    let exact = price.mul_ratio(used, march.days())?;
    println!(
        "\nFirst partial month {used}/{} days: exact {} USD",
        march.days(),
        exact.amount()
    );
    for mode in [
        RoundingMode::HalfUp,
        RoundingMode::HalfEven,
        RoundingMode::Up,
        RoundingMode::Down,
    ] {
        println!("  rounded {mode:?}: {}", exact.round(mode));
    }

    // Split a 100.00 bundle over three services: parts always sum to the whole.
    let bundle = Money::parse("100.00", Currency::USD)?;
    let weights = [Decimal::new(5, 1), Decimal::new(3, 1), Decimal::new(2, 1)];
    let parts = bundle.allocate(&weights)?;
    let shown: Vec<String> = parts.iter().map(ToString::to_string).collect();
    println!("\n{bundle} split 50/30/20: {}", shown.join(" + "));
    let thirds = bundle.split(3)?;
    let shown: Vec<String> = thirds.iter().map(ToString::to_string).collect();
    println!("{bundle} split in three: {}", shown.join(" + "));

    // Mixing currencies is an error, not a silent conversion.
    let euros = Money::parse("5", Currency::EUR)?;
    match price.checked_add(euros) {
        Ok(sum) => println!("unexpected sum {sum}"),
        Err(e) => println!("\n{price} + {euros}: {e}"),
    }
    Ok(())
}

fn date(y: i32, m: u32, d: u32) -> Result<NaiveDate, CoreError> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or(CoreError::DateOutOfRange("example date"))
}
