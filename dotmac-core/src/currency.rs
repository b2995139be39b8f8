//! ISO 4217 currencies, backed by rusty-money's table.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use rusty_money::iso;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CoreError;

/// An ISO 4217 currency: its code, its minor unit and how it is written.
///
/// The facts come from rusty-money's ISO table; that crate's own types stay private so that the
/// public API is owned values only. Two currencies are equal when their codes are equal.
/// Serialized as its code (`"USD"`).
///
/// ```
/// use dotmac_core::Currency;
/// let eur: Currency = "EUR".parse()?;
/// assert_eq!(eur.minor_units(), 2);
/// assert_eq!(Currency::JPY.minor_units(), 0);
/// assert_eq!(Currency::from_code("KWD")?.minor_units(), 3);
/// # Ok::<(), dotmac_core::CoreError>(())
/// ```
#[derive(Clone, Copy)]
pub struct Currency(&'static iso::Currency);

impl Currency {
    /// US dollar.
    pub const USD: Currency = Currency(iso::USD);
    /// Euro.
    pub const EUR: Currency = Currency(iso::EUR);
    /// Pound sterling.
    pub const GBP: Currency = Currency(iso::GBP);
    /// Japanese yen (no minor unit).
    pub const JPY: Currency = Currency(iso::JPY);
    /// Nigerian naira.
    pub const NGN: Currency = Currency(iso::NGN);
    /// Kenyan shilling.
    pub const KES: Currency = Currency(iso::KES);
    /// South African rand.
    pub const ZAR: Currency = Currency(iso::ZAR);
    /// Indian rupee.
    pub const INR: Currency = Currency(iso::INR);
    /// Brazilian real.
    pub const BRL: Currency = Currency(iso::BRL);
    /// Kuwaiti dinar (three decimal places).
    pub const KWD: Currency = Currency(iso::KWD);

    /// Looks a currency up by its ISO 4217 alphabetic code (case-insensitive).
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownCurrency`] when the code is not in the ISO table.
    pub fn from_code(code: &str) -> Result<Self, CoreError> {
        let upper = code.trim().to_ascii_uppercase();
        iso::find(&upper)
            .map(Currency)
            .ok_or_else(|| CoreError::UnknownCurrency(code.to_owned()))
    }

    /// The three-letter code, such as `"USD"`.
    pub fn code(self) -> &'static str {
        self.0.iso_alpha_code
    }

    /// Decimal places of the minor unit: 2 for USD, 0 for JPY, 3 for KWD.
    pub fn minor_units(self) -> u32 {
        self.0.exponent
    }

    /// The English name, such as `"United States Dollar"`.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// The symbol used when formatting, such as `"$"`.
    pub fn symbol(self) -> &'static str {
        self.0.symbol
    }

    pub(crate) fn iso(self) -> &'static iso::Currency {
        self.0
    }
}

impl PartialEq for Currency {
    fn eq(&self, other: &Self) -> bool {
        // Every `Currency` points into rusty-money's static table, so the same currency is
        // almost always the same address; the code comparison covers a table linked twice.
        std::ptr::eq(self.0, other.0) || self.code() == other.code()
    }
}
impl Eq for Currency {}

impl Hash for Currency {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.code().hash(state);
    }
}

impl PartialOrd for Currency {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Currency {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.code().cmp(other.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_rejects_unknown_codes() {
        assert_eq!(Currency::from_code("usd").unwrap(), Currency::USD);
        assert_eq!(
            Currency::from_code("XYZ"),
            Err(CoreError::UnknownCurrency("XYZ".into()))
        );
        assert_eq!(
            Currency::from_code(""),
            Err(CoreError::UnknownCurrency(String::new()))
        );
    }

    #[test]
    fn serde_round_trips_as_code() {
        let json = serde_json::to_string(&Currency::EUR).unwrap();
        assert_eq!(json, "\"EUR\"");
        let back: Currency = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Currency::EUR);
        assert!(serde_json::from_str::<Currency>("\"NOPE\"").is_err());
    }
}
