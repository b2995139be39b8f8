//! How document numbers are written: [`InvoiceNumberFormat`], the one format a tenant's
//! setting (`dotmac-tenancy`) holds and billing numbers its invoices with (`dotmac-billing`),
//! so the two never disagree about a prefix, a width or when numbering starts again.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// When invoice numbers start again from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NumberReset {
    /// One sequence forever.
    #[default]
    Never,
    /// A sequence per calendar year of the issue date; the year is part of the number.
    Yearly,
}

/// How invoice numbers are written: a prefix, the number zero-padded to a width, and
/// whether numbering starts again every year (`INV-2026-000042`). The default is six digits
/// without a prefix that never reset (`000042`).
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_core::{InvoiceNumberFormat, NumberReset};
///
/// let format = InvoiceNumberFormat::new("INV-", 6, NumberReset::Yearly)?;
/// let issued = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
/// assert_eq!(format.format(42, issued), "INV-2026-000042");
/// assert_eq!(format.series(issued), "INV-2026");
/// assert_eq!(InvoiceNumberFormat::default().format(42, issued), "000042");
/// # Ok::<(), dotmac_core::CoreError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawNumberFormat")]
pub struct InvoiceNumberFormat {
    prefix: String,
    padding: u8,
    reset: NumberReset,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNumberFormat {
    prefix: String,
    padding: u8,
    reset: NumberReset,
}

impl TryFrom<RawNumberFormat> for InvoiceNumberFormat {
    type Error = CoreError;
    fn try_from(raw: RawNumberFormat) -> Result<Self, Self::Error> {
        InvoiceNumberFormat::new(&raw.prefix, raw.padding, raw.reset)
    }
}

impl Default for InvoiceNumberFormat {
    fn default() -> Self {
        InvoiceNumberFormat {
            prefix: String::new(),
            padding: 6,
            reset: NumberReset::Never,
        }
    }
}

impl InvoiceNumberFormat {
    /// The widest padding accepted.
    pub const MAX_PADDING: u8 = 12;

    /// The longest prefix accepted, in characters.
    pub const MAX_PREFIX: usize = 16;

    /// A format: `prefix` of at most 16 printable ASCII characters without spaces (may be
    /// empty), numbers padded with zeros to `padding` digits (1 to 12).
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidNumberFormat`] otherwise.
    pub fn new(prefix: &str, padding: u8, reset: NumberReset) -> Result<Self, CoreError> {
        if prefix.len() > Self::MAX_PREFIX || !prefix.chars().all(|c| c.is_ascii_graphic()) {
            return Err(CoreError::InvalidNumberFormat {
                reason: format!(
                    "prefix {prefix:?} must be at most 16 printable ASCII characters without spaces"
                ),
            });
        }
        if padding == 0 || padding > Self::MAX_PADDING {
            return Err(CoreError::InvalidNumberFormat {
                reason: format!(
                    "padding {padding} must be between 1 and {}",
                    Self::MAX_PADDING
                ),
            });
        }
        Ok(InvoiceNumberFormat {
            prefix: prefix.to_owned(),
            padding,
            reset,
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The width numbers are padded to.
    pub fn padding(&self) -> u8 {
        self.padding
    }

    /// When numbering starts again.
    pub fn reset(&self) -> NumberReset {
        self.reset
    }

    /// Whether this is the default format (six digits, no prefix, never reset).
    pub fn is_default(&self) -> bool {
        *self == InvoiceNumberFormat::default()
    }

    /// Whether documents in this format continue the default format's sequence: no prefix
    /// (separators aside) and no yearly reset, so that only the padding differs and numbers
    /// written in either read alike (`000042`, `00000042`). A store numbers them from the
    /// default sequence, so that such a change of format never issues a number twice.
    pub fn continues_default_sequence(&self) -> bool {
        self.reset == NumberReset::Never && self.series_base().is_empty()
    }

    /// The prefix without a trailing separator.
    fn series_base(&self) -> &str {
        self.prefix.trim_end_matches(['-', '/', '_', '.'])
    }

    /// The sequence a document issued on `issued` takes its number from: the prefix without a
    /// trailing separator (`"INV"` when empty), plus the year when numbering resets yearly
    /// (`"INV-2026"`). Two documents of one series never share a number. (A format that
    /// [continues the default sequence](Self::continues_default_sequence) is numbered from the
    /// default's instead.)
    pub fn series(&self, issued: NaiveDate) -> String {
        let base = self.series_base();
        let base = if base.is_empty() { "INV" } else { base };
        match self.reset {
            NumberReset::Never => base.to_owned(),
            NumberReset::Yearly => format!("{base}-{}", issued.year()),
        }
    }

    /// The number `number` of a document issued on `issued`, written out (a number wider than
    /// the padding is written whole).
    pub fn format(&self, number: u64, issued: NaiveDate) -> String {
        let width = usize::from(self.padding);
        match self.reset {
            NumberReset::Never => format!("{}{number:0width$}", self.prefix),
            NumberReset::Yearly => format!("{}{}-{number:0width$}", self.prefix, issued.year()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_a_format_without_prefix_or_reset_continues_the_default_sequence() {
        let wide = InvoiceNumberFormat::new("", 8, NumberReset::Never).unwrap();
        assert!(wide.continues_default_sequence());
        assert!(InvoiceNumberFormat::default().continues_default_sequence());
        assert!(
            InvoiceNumberFormat::new("-", 6, NumberReset::Never)
                .unwrap()
                .continues_default_sequence()
        );
        for other in [
            InvoiceNumberFormat::new("", 6, NumberReset::Yearly).unwrap(),
            InvoiceNumberFormat::new("INV-", 6, NumberReset::Never).unwrap(),
        ] {
            assert!(!other.continues_default_sequence(), "{other:?}");
        }
    }

    #[test]
    fn numbers_are_written_with_the_format() {
        let day = NaiveDate::from_ymd_opt(2027, 1, 3).unwrap();
        let plain = InvoiceNumberFormat::default();
        assert!(plain.is_default());
        assert_eq!(plain.format(42, day), "000042");
        assert_eq!(plain.series(day), "INV");
        let yearly = InvoiceNumberFormat::new("F/", 4, NumberReset::Yearly).unwrap();
        assert!(!yearly.is_default());
        assert_eq!(yearly.format(7, day), "F/2027-0007");
        assert_eq!(yearly.series(day), "F-2027");
        assert_eq!(yearly.format(123_456, day), "F/2027-123456");
    }

    #[test]
    fn bad_formats_are_refused() {
        assert!(matches!(
            InvoiceNumberFormat::new("INV ", 6, NumberReset::Never),
            Err(CoreError::InvalidNumberFormat { .. })
        ));
        assert!(InvoiceNumberFormat::new("INV-", 0, NumberReset::Never).is_err());
        assert!(InvoiceNumberFormat::new("INV-", 13, NumberReset::Never).is_err());
        assert!(InvoiceNumberFormat::new(&"X".repeat(17), 6, NumberReset::Never).is_err());
        let json = r#"{"prefix":"INV-","padding":99,"reset":"never"}"#;
        assert!(serde_json::from_str::<InvoiceNumberFormat>(json).is_err());
        let good = r#"{"prefix":"INV-","padding":5,"reset":"yearly"}"#;
        let format: InvoiceNumberFormat = serde_json::from_str(good).unwrap();
        assert_eq!(serde_json::to_string(&format).unwrap(), good);
    }
}
