//! Exact money: a `Decimal` amount with an ISO currency, checked arithmetic, one rounding point
//! and exact allocation.
//!
//! # Where rounding happens
//!
//! Arithmetic on [`Money`] never rounds: sums, products and prorations keep every decimal place
//! `Decimal` can hold. The only way an amount loses precision is [`Money::round`], which rounds to
//! the currency's minor unit with an explicit [`RoundingMode`]. Billing rounds each invoice line
//! once, with the tenant's mode, and sums the rounded lines; nothing else in DotMac rounds.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::error::CoreError;

/// How an amount is brought to its currency's minor unit.
///
/// Serialized in snake case (`"half_up"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoundingMode {
    /// Ties go away from zero (0.125 → 0.13, −0.125 → −0.13). Kill Bill's default and ours.
    #[default]
    HalfUp,
    /// Ties go to the even neighbour (0.125 → 0.12, 0.135 → 0.14): banker's rounding.
    HalfEven,
    /// Always away from zero (0.121 → 0.13).
    Up,
    /// Always towards zero (0.129 → 0.12).
    Down,
}

impl RoundingMode {
    fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingMode::Up => RoundingStrategy::AwayFromZero,
            RoundingMode::Down => RoundingStrategy::ToZero,
        }
    }

    /// Rounds a bare decimal to `dp` places with this mode.
    ///
    /// This is the one function in DotMac that rounds; [`Money::round`] calls it with the
    /// currency's minor units.
    pub fn round_decimal(self, value: Decimal, dp: u32) -> Decimal {
        value.round_dp_with_strategy(dp, self.strategy())
    }
}

impl std::str::FromStr for RoundingMode {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "half_up" => Ok(RoundingMode::HalfUp),
            "half_even" => Ok(RoundingMode::HalfEven),
            "up" => Ok(RoundingMode::Up),
            "down" => Ok(RoundingMode::Down),
            _ => Err(CoreError::Parse {
                what: "rounding mode (half_up, half_even, up, down)",
                input: s.to_owned(),
            }),
        }
    }
}

/// An exact amount of money in one ISO currency.
///
/// Owned and `Copy`. Arithmetic is checked: mixing currencies or overflowing returns a
/// [`CoreError`], never a panic and never a silently wrong number. Serialized as
/// `{"amount": "12.50", "currency": "USD"}` with the amount as a string, so no JSON float ever
/// carries money.
///
/// ```
/// use dotmac_core::{Currency, Money, RoundingMode};
/// use rust_decimal::Decimal;
///
/// let monthly = Money::new(Decimal::new(2999, 2), Currency::USD); // 29.99
/// let prorated = monthly.mul_ratio(17, 31)?;                   // 16.446451612903...
/// assert_eq!(prorated.round(RoundingMode::HalfUp).amount(), Decimal::new(1645, 2));
///
/// let parts = Money::from_minor(1000, Currency::USD).split(3)?; // 10.00 in 3
/// let amounts: Vec<String> = parts.iter().map(|m| m.amount().to_string()).collect();
/// assert_eq!(amounts, ["3.34", "3.33", "3.33"]);
/// # Ok::<(), dotmac_core::CoreError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// An amount in a currency, exactly as given (not rounded).
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Money { amount, currency }
    }

    /// Zero in a currency.
    pub fn zero(currency: Currency) -> Self {
        Money::new(Decimal::ZERO, currency)
    }

    /// An amount given in minor units: `from_minor(1050, USD)` is 10.50 USD.
    pub fn from_minor(minor: i64, currency: Currency) -> Self {
        Money::new(Decimal::new(minor, currency.minor_units()), currency)
    }

    /// Parses a decimal string such as `"12.50"` in a currency.
    ///
    /// # Errors
    ///
    /// [`CoreError::Parse`] when the text is not a decimal number.
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, CoreError> {
        amount
            .trim()
            .parse::<Decimal>()
            .map(|d| Money::new(d, currency))
            .map_err(|_| CoreError::Parse {
                what: "decimal amount",
                input: amount.to_owned(),
            })
    }

    /// The exact amount.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// True when the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// True when the amount is above zero.
    pub fn is_positive(&self) -> bool {
        self.amount > Decimal::ZERO
    }

    /// True when the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.amount < Decimal::ZERO
    }

    fn same_currency(&self, other: &Money) -> Result<(), CoreError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(CoreError::CurrencyMismatch {
                left: self.currency.code(),
                right: other.currency.code(),
            })
        }
    }

    /// `self + other`.
    ///
    /// # Errors
    ///
    /// [`CoreError::CurrencyMismatch`] for different currencies, [`CoreError::Overflow`] when
    /// the sum does not fit.
    pub fn checked_add(&self, other: Money) -> Result<Money, CoreError> {
        self.same_currency(&other)?;
        self.amount
            .checked_add(other.amount)
            .map(|a| Money::new(a, self.currency))
            .ok_or(CoreError::Overflow { operation: "add" })
    }

    /// `self - other`.
    ///
    /// # Errors
    ///
    /// [`CoreError::CurrencyMismatch`] for different currencies, [`CoreError::Overflow`] when
    /// the difference does not fit.
    pub fn checked_sub(&self, other: Money) -> Result<Money, CoreError> {
        self.same_currency(&other)?;
        self.amount
            .checked_sub(other.amount)
            .map(|a| Money::new(a, self.currency))
            .ok_or(CoreError::Overflow {
                operation: "subtract",
            })
    }

    /// `self × factor`, exact (a quantity, a rate, a fraction).
    ///
    /// # Errors
    ///
    /// [`CoreError::Overflow`] when the product does not fit.
    pub fn checked_mul(&self, factor: Decimal) -> Result<Money, CoreError> {
        self.amount
            .checked_mul(factor)
            .map(|a| Money::new(a, self.currency))
            .ok_or(CoreError::Overflow {
                operation: "multiply",
            })
    }

    /// `self × numerator / denominator`, multiplying first so that a proration such as
    /// 17/31 of a month keeps every digit `Decimal` can hold.
    ///
    /// # Errors
    ///
    /// [`CoreError::DivisionByZero`] when `denominator` is 0, [`CoreError::Overflow`] when the
    /// product does not fit.
    pub fn mul_ratio(&self, numerator: i64, denominator: i64) -> Result<Money, CoreError> {
        if denominator == 0 {
            return Err(CoreError::DivisionByZero {
                operation: "mul_ratio",
            });
        }
        let product =
            self.amount
                .checked_mul(Decimal::from(numerator))
                .ok_or(CoreError::Overflow {
                    operation: "mul_ratio",
                })?;
        product
            .checked_div(Decimal::from(denominator))
            .map(|a| Money::new(a, self.currency))
            .ok_or(CoreError::Overflow {
                operation: "mul_ratio",
            })
    }

    /// The negated amount (a charge becomes a credit).
    pub fn negate(&self) -> Money {
        Money::new(-self.amount, self.currency)
    }

    /// The absolute amount.
    pub fn abs(&self) -> Money {
        Money::new(self.amount.abs(), self.currency)
    }

    /// The smaller of two amounts in the same currency.
    ///
    /// # Errors
    ///
    /// [`CoreError::CurrencyMismatch`] for different currencies.
    pub fn min(&self, other: Money) -> Result<Money, CoreError> {
        self.same_currency(&other)?;
        Ok(if other.amount < self.amount {
            other
        } else {
            *self
        })
    }

    /// The larger of two amounts in the same currency.
    ///
    /// # Errors
    ///
    /// [`CoreError::CurrencyMismatch`] for different currencies.
    pub fn max(&self, other: Money) -> Result<Money, CoreError> {
        self.same_currency(&other)?;
        Ok(if other.amount > self.amount {
            other
        } else {
            *self
        })
    }

    /// Compares two amounts in the same currency.
    ///
    /// # Errors
    ///
    /// [`CoreError::CurrencyMismatch`] for different currencies.
    pub fn compare(&self, other: &Money) -> Result<std::cmp::Ordering, CoreError> {
        self.same_currency(other)?;
        Ok(self.amount.cmp(&other.amount))
    }

    /// Sums amounts that must all be in `currency` (zero for an empty iterator).
    ///
    /// # Errors
    ///
    /// [`CoreError::CurrencyMismatch`] at the first amount in another currency,
    /// [`CoreError::Overflow`] when the sum does not fit.
    pub fn sum<I: IntoIterator<Item = Money>>(
        currency: Currency,
        amounts: I,
    ) -> Result<Money, CoreError> {
        amounts
            .into_iter()
            .try_fold(Money::zero(currency), |acc, m| acc.checked_add(m))
    }

    /// Rounds to the currency's minor unit with `mode`: the one place money is rounded.
    pub fn round(&self, mode: RoundingMode) -> Money {
        Money::new(
            mode.round_decimal(self.amount, self.currency.minor_units()),
            self.currency,
        )
    }

    /// True when the amount is a whole number of minor units (no rounding needed).
    pub fn is_minor_unit_exact(&self) -> bool {
        self.amount.normalize().scale() <= self.currency.minor_units()
    }

    /// The amount in minor units (cents), for storage or payment gateways.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotMinorUnits`] when the amount has digits below the minor unit (round it
    /// first), [`CoreError::Overflow`] when it does not fit in `i64`.
    pub fn to_minor(&self) -> Result<i64, CoreError> {
        let minor = self.minor_units_i128()?;
        i64::try_from(minor).map_err(|_| CoreError::Overflow {
            operation: "to_minor",
        })
    }

    fn minor_units_i128(&self) -> Result<i128, CoreError> {
        if !self.is_minor_unit_exact() {
            return Err(CoreError::NotMinorUnits {
                amount: self.amount,
                currency: self.currency.code(),
            });
        }
        let mut scaled = self.amount;
        scaled.rescale(self.currency.minor_units());
        // `rescale` keeps the value; the mantissa is now the amount in minor units.
        Ok(scaled.mantissa())
    }

    /// Splits the amount into parts proportional to `ratios`, so that the parts sum exactly to
    /// the whole (largest-remainder method, ties to the earliest part).
    ///
    /// Each part is `floor(whole × ratio / Σratios)` in minor units, and the minor units left
    /// over go one each to the parts with the largest remainders. A negative amount is
    /// allocated as its absolute value and negated.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotMinorUnits`] when the amount is not a whole number of minor units;
    /// [`CoreError::InvalidAllocation`] for no ratios, a negative ratio or ratios summing to
    /// zero; [`CoreError::Overflow`] for amounts or ratios too large to split exactly.
    pub fn allocate(&self, ratios: &[Decimal]) -> Result<Vec<Money>, CoreError> {
        if ratios.is_empty() {
            return Err(CoreError::InvalidAllocation {
                reason: "no ratios given",
            });
        }
        if ratios.iter().any(|r| r.is_sign_negative() && !r.is_zero()) {
            return Err(CoreError::InvalidAllocation {
                reason: "ratios must not be negative",
            });
        }
        let total = self.minor_units_i128()?;
        // Bring every ratio to a common scale so the arithmetic is exact integer arithmetic.
        let scale = ratios.iter().map(|r| r.scale()).max().unwrap_or(0);
        let weights: Vec<i128> = ratios
            .iter()
            .map(|r| {
                if r.scale() == scale {
                    r.mantissa()
                } else {
                    let mut r = *r;
                    r.rescale(scale);
                    r.mantissa()
                }
            })
            .collect();
        allocate_minor(total, &weights)
            .map(|parts| parts.into_iter().map(|m| self.with_minor(m)).collect())
    }

    /// Splits the amount into `parts` equal shares that sum exactly to the whole; the first
    /// shares get the extra minor units.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidAllocation`] when `parts` is 0; [`CoreError::NotMinorUnits`] when the
    /// amount is not a whole number of minor units.
    pub fn split(&self, parts: usize) -> Result<Vec<Money>, CoreError> {
        if parts == 0 {
            return Err(CoreError::InvalidAllocation {
                reason: "cannot split into 0 parts",
            });
        }
        let total = self.minor_units_i128()?;
        let overflow = || CoreError::Overflow { operation: "split" };
        let n = i128::try_from(parts).map_err(|_| overflow())?;
        let base = total.checked_div(n).ok_or_else(overflow)?;
        let extra = total.checked_rem(n).ok_or_else(overflow)?.unsigned_abs();
        let unit = if total < 0 { -1 } else { 1 };
        (0..parts)
            .map(|i| {
                let bump = if (i as u128) < extra { unit } else { 0 };
                Ok(self.with_minor(base.checked_add(bump).ok_or_else(overflow)?))
            })
            .collect()
    }

    fn with_minor(&self, minor: i128) -> Money {
        Money::new(
            Decimal::from_i128_with_scale(minor, self.currency.minor_units()),
            self.currency,
        )
    }
}

/// Sums bare decimals (quantities, rates, amounts already known to share a currency) with
/// checked arithmetic: `Iterator::sum` over `Decimal` panics on overflow.
///
/// ```
/// use dotmac_core::{CoreError, checked_sum};
/// use rust_decimal::Decimal;
///
/// assert_eq!(checked_sum([Decimal::ONE, Decimal::TWO], "quantity total"), Ok(Decimal::from(3)));
/// assert_eq!(
///     checked_sum([Decimal::MAX, Decimal::ONE], "quantity total"),
///     Err(CoreError::Overflow { operation: "quantity total" })
/// );
/// ```
///
/// # Errors
///
/// [`CoreError::Overflow`] naming `operation` when the sum does not fit.
pub fn checked_sum<I: IntoIterator<Item = Decimal>>(
    values: I,
    operation: &'static str,
) -> Result<Decimal, CoreError> {
    values
        .into_iter()
        .try_fold(Decimal::ZERO, |acc, v| acc.checked_add(v))
        .ok_or(CoreError::Overflow { operation })
}

/// Largest-remainder allocation of `total` integer units by integer `weights`.
// `total` and each weight are `Decimal` mantissas (below 2^96): products and the weight sum are
// checked, each share is at most `|total|`, their sum is at most `|total|` (floors of parts of
// it), and at most one unit is added per part, so the remaining operations cannot overflow;
// `weight_sum` is not zero when it divides.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "bounded by |total| < 2^96, see above"
)]
fn allocate_minor(total: i128, weights: &[i128]) -> Result<Vec<i128>, CoreError> {
    let overflow = CoreError::Overflow {
        operation: "allocate",
    };
    let weight_sum = weights
        .iter()
        .try_fold(0i128, |acc, w| acc.checked_add(*w))
        .ok_or(overflow.clone())?;
    if weight_sum == 0 {
        return Err(CoreError::InvalidAllocation {
            reason: "ratios sum to zero",
        });
    }
    let magnitude = total.abs();
    let sign = if total < 0 { -1 } else { 1 };
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut allocated = 0i128;
    for (i, w) in weights.iter().enumerate() {
        let product = magnitude.checked_mul(*w).ok_or(overflow.clone())?;
        let share = product / weight_sum;
        remainders.push((product % weight_sum, i));
        allocated += share;
        parts.push(share);
    }
    let left = magnitude - allocated;
    if left > 0 {
        // Largest remainder first; equal remainders go to the earliest part. `left` is below the
        // number of parts, so only the first `left` places need to be in order.
        let by_remainder = |a: &(i128, usize), b: &(i128, usize)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        let take = usize::try_from(left)
            .unwrap_or(remainders.len())
            .min(remainders.len());
        if take < remainders.len() {
            remainders.select_nth_unstable_by(take, by_remainder);
        }
        for &(_, i) in remainders.get(..take).unwrap_or(&[]) {
            if let Some(part) = parts.get_mut(i) {
                *part += 1;
            }
        }
    }
    Ok(parts.into_iter().map(|p| p * sign).collect())
}

impl fmt::Display for Money {
    /// Formats with the currency's symbol, separators and minor unit (rusty-money's rules):
    /// `$1,234.50`. Display rounds half-up for presentation only; it never changes the amount.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = rusty_money::Money::from_decimal(self.amount, self.currency.iso());
        fmt::Display::fmt(&shown, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn usd(s: &str) -> Money {
        Money::parse(s, Currency::USD).unwrap()
    }

    #[test]
    fn mixed_currencies_are_refused() {
        let eur = Money::new(dec!(1), Currency::EUR);
        let err = usd("1").checked_add(eur).unwrap_err();
        assert_eq!(
            err,
            CoreError::CurrencyMismatch {
                left: "USD",
                right: "EUR"
            }
        );
        assert!(usd("1").checked_sub(eur).is_err());
        assert!(usd("1").compare(&eur).is_err());
        assert!(Money::sum(Currency::USD, [usd("1"), eur]).is_err());
    }

    #[test]
    fn rounding_modes() {
        let cases = [
            ("0.125", RoundingMode::HalfUp, "0.13"),
            ("-0.125", RoundingMode::HalfUp, "-0.13"),
            ("0.125", RoundingMode::HalfEven, "0.12"),
            ("0.135", RoundingMode::HalfEven, "0.14"),
            ("0.121", RoundingMode::Up, "0.13"),
            ("-0.121", RoundingMode::Up, "-0.13"),
            ("0.129", RoundingMode::Down, "0.12"),
            ("-0.129", RoundingMode::Down, "-0.12"),
        ];
        for (input, mode, want) in cases {
            assert_eq!(usd(input).round(mode), usd(want), "{input} {mode:?}");
        }
        let yen = Money::new(dec!(100.5), Currency::JPY).round(RoundingMode::HalfUp);
        assert_eq!(yen.amount(), dec!(101));
    }

    #[test]
    fn minor_units_round_trip() {
        assert_eq!(Money::from_minor(1050, Currency::USD), usd("10.50"));
        assert_eq!(usd("10.5").to_minor().unwrap(), 1050);
        assert_eq!(
            usd("10.505").to_minor(),
            Err(CoreError::NotMinorUnits {
                amount: dec!(10.505),
                currency: "USD"
            })
        );
        assert_eq!(
            Money::new(dec!(1.234), Currency::KWD).to_minor().unwrap(),
            1234
        );
    }

    #[test]
    fn allocate_by_ratios_sums_exactly() {
        let parts = usd("100").allocate(&[dec!(1), dec!(1), dec!(1)]).unwrap();
        assert_eq!(parts, vec![usd("33.34"), usd("33.33"), usd("33.33")]);
        let parts = usd("0.05").allocate(&[dec!(0.3), dec!(0.7)]).unwrap();
        // 1.5 and 3.5 cents: the tie on the remainder goes to the earliest part.
        assert_eq!(parts, vec![usd("0.02"), usd("0.03")]);
        let parts = usd("-10").split(3).unwrap();
        assert_eq!(parts, vec![usd("-3.34"), usd("-3.33"), usd("-3.33")]);
    }

    #[test]
    fn allocate_refuses_bad_input() {
        assert_eq!(
            usd("1").allocate(&[]),
            Err(CoreError::InvalidAllocation {
                reason: "no ratios given"
            })
        );
        assert_eq!(
            usd("1").allocate(&[dec!(0), dec!(0)]),
            Err(CoreError::InvalidAllocation {
                reason: "ratios sum to zero"
            })
        );
        assert_eq!(
            usd("1").allocate(&[dec!(-1), dec!(2)]),
            Err(CoreError::InvalidAllocation {
                reason: "ratios must not be negative"
            })
        );
        assert!(matches!(
            usd("1.001").split(2),
            Err(CoreError::NotMinorUnits { .. })
        ));
        assert!(matches!(
            usd("1").split(0),
            Err(CoreError::InvalidAllocation { .. })
        ));
    }

    #[test]
    fn overflow_is_an_error() {
        let big = Money::new(Decimal::MAX, Currency::USD);
        assert_eq!(
            big.checked_add(usd("1")),
            Err(CoreError::Overflow { operation: "add" })
        );
        assert!(big.checked_mul(dec!(2)).is_err());
        assert!(big.mul_ratio(3, 1).is_err());
        assert!(usd("1").mul_ratio(1, 0).is_err());
    }

    #[test]
    fn serde_keeps_amount_as_string() {
        let json = serde_json::to_string(&usd("12.50")).unwrap();
        assert_eq!(json, r#"{"amount":"12.50","currency":"USD"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, usd("12.50"));
    }

    #[test]
    fn display_uses_currency_format() {
        assert_eq!(usd("1234.5").to_string(), "$1,234.50");
    }
}
