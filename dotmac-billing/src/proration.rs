//! Proration: the share of a period's price that a part of it bills.
//!
//! A part `[from, to)` of a period bills `price × days(part) / days(period)` by default (actual
//! days, as Kill Bill and Lago do). With [`ProrationMode::Fixed30Days`] a monthly plan divides
//! by 30 instead (capped at the whole price); other intervals keep actual days.
//! [`ProrationMode::None`] bills whole periods only: a part of a period bills the whole price,
//! and changes inside a period produce no credit or charge.

use dotmac_core::{BillingInterval, IntervalUnit, Money, Period};
use serde::{Deserialize, Serialize};

use crate::error::BillingError;

/// How partial periods are priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProrationMode {
    /// Days used / days in the period that holds them.
    #[default]
    ActualDays,
    /// Days used / 30 for monthly plans (Kill Bill's 30-day months), at most the whole price.
    #[serde(rename = "fixed_30_days")]
    Fixed30Days,
    /// No proration: whole periods only.
    None,
}

/// The share of `whole` that `part` bills, as `(numerator, denominator)`.
pub fn fraction(
    part: Period,
    whole: Period,
    mode: ProrationMode,
    interval: BillingInterval,
) -> (i64, i64) {
    let days = part.days();
    let total = whole.days();
    if part == whole || days >= total {
        return (1, 1);
    }
    match mode {
        ProrationMode::ActualDays => (days, total),
        ProrationMode::Fixed30Days
            if interval.unit() == IntervalUnit::Month && interval.count() == 1 =>
        {
            (days.min(30), 30)
        }
        ProrationMode::Fixed30Days => (days, total),
        ProrationMode::None => (1, 1),
    }
}

/// `amount` prorated to `part` of `whole`, exact (not rounded).
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_billing::{ProrationMode, prorate};
/// use dotmac_core::{BillingInterval, Currency, Money, Period};
/// use rust_decimal::Decimal;
///
/// let d = |m, day| NaiveDate::from_ymd_opt(2022, m, day).unwrap();
/// let march = Period::new(d(3, 1), d(4, 1))?;
/// let part = Period::new(d(3, 15), d(4, 1))?;
/// let one = Money::new(Decimal::ONE, Currency::USD);
/// let p = prorate(one, part, march, ProrationMode::ActualDays, BillingInterval::MONTHLY)?;
/// assert_eq!(p, one.mul_ratio(17, 31)?);
/// # Ok::<(), dotmac_billing::BillingError>(())
/// ```
///
/// # Errors
///
/// Overflow only.
pub fn prorate(
    amount: Money,
    part: Period,
    whole: Period,
    mode: ProrationMode,
    interval: BillingInterval,
) -> Result<Money, BillingError> {
    match fraction(part, whole, mode, interval) {
        (1, 1) => Ok(amount),
        (n, d) => Ok(amount.mul_ratio(n, d)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, day).unwrap()
    }

    #[test]
    fn modes() {
        let may = Period::new(d(5, 1), d(6, 1)).unwrap();
        let half = Period::new(d(5, 17), d(6, 1)).unwrap();
        let m = BillingInterval::MONTHLY;
        assert_eq!(fraction(half, may, ProrationMode::ActualDays, m), (15, 31));
        assert_eq!(fraction(half, may, ProrationMode::Fixed30Days, m), (15, 30));
        assert_eq!(fraction(may, may, ProrationMode::Fixed30Days, m), (1, 1));
        assert_eq!(fraction(half, may, ProrationMode::None, m), (1, 1));
        let q = BillingInterval::QUARTERLY;
        assert_eq!(fraction(half, may, ProrationMode::Fixed30Days, q), (15, 31));
    }

    #[test]
    fn a_whole_period_is_never_prorated() {
        let date = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let whole = [
            (date(2026, 1, 1), date(2026, 2, 1), BillingInterval::MONTHLY), // 31 days
            (date(2026, 2, 1), date(2026, 3, 1), BillingInterval::MONTHLY), // 28 days
            (date(2028, 2, 1), date(2028, 3, 1), BillingInterval::MONTHLY), // 29 days
            (
                date(2026, 1, 1),
                date(2026, 4, 1),
                BillingInterval::QUARTERLY,
            ),
        ];
        for (start, end, interval) in whole {
            let period = Period::new(start, end).unwrap();
            for mode in [
                ProrationMode::ActualDays,
                ProrationMode::Fixed30Days,
                ProrationMode::None,
            ] {
                assert_eq!(fraction(period, period, mode, interval), (1, 1), "{mode:?}");
            }
        }
    }
}
