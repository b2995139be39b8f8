//! Values the database cannot store, refused before they reach it, with the same
//! [`SqlError::InvalidInput`] on SQLite and PostgreSQL.
//!
//! PostgreSQL's `text`, `json` and `jsonb` cannot hold a NUL character (`22021`, `22P05`);
//! SQLite can, but refusing it on both backends keeps them interchangeable. Lengths are bounded
//! where PostgreSQL would fail with a program limit (`54000`):
//!
//! - **keys** (text in a primary key or unique index: number series, idempotency scopes and
//!   keys) at [`MAX_KEY_BYTES`], so that an index entry stays under the B-tree bound of
//!   about 2,700 bytes even with two such columns in one key;
//! - **text** (a line description, an event type, a tenant name, a worker name) at
//!   [`MAX_TEXT_BYTES`];
//! - **documents** (a record's JSON body, an event payload) at [`MAX_DOCUMENT_BYTES`] of JSON
//!   text, well under `jsonb`'s 256 MB and the 1 GB bound on any value.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::{InputProblem, Result, SqlError};

/// The bound on a text value in a primary key or unique index, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// The bound on any other text value, in bytes.
pub(crate) const MAX_TEXT_BYTES: usize = 1 << 20;
/// The bound on a JSON document, in bytes of JSON text.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 64 << 20;

fn bounded(what: &'static str, value: &str, max: usize) -> Result<()> {
    let problem = if value.len() > max {
        InputProblem::TooLong {
            bytes: value.len(),
            max,
        }
    } else if value.as_bytes().contains(&0) {
        InputProblem::NulByte
    } else {
        return Ok(());
    };
    Err(SqlError::InvalidInput { what, problem })
}

/// Checks a text value that is part of a key.
///
/// [`SqlError::InvalidInput`] for a NUL or more than [`MAX_KEY_BYTES`].
pub(crate) fn key(what: &'static str, value: &str) -> Result<()> {
    bounded(what, value, MAX_KEY_BYTES)
}

/// Checks a text value.
///
/// [`SqlError::InvalidInput`] for a NUL or more than [`MAX_TEXT_BYTES`].
pub(crate) fn text(what: &'static str, value: &str) -> Result<()> {
    bounded(what, value, MAX_TEXT_BYTES)
}

/// Checks a JSON text as serde_json writes it: a NUL inside a string is the escape `\u0000`
/// (serde_json never writes a raw control character), found by walking the escapes so that
/// an escaped backslash followed by `u0000` is not mistaken for one.
///
/// [`SqlError::InvalidInput`] for a NUL or more than [`MAX_DOCUMENT_BYTES`].
pub(crate) fn document_text(what: &'static str, json: &str) -> Result<()> {
    bounded(what, json, MAX_DOCUMENT_BYTES)?;
    let bytes = json.as_bytes();
    let mut at = 0;
    while let Some(offset) = bytes
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\\'))
    {
        let escape = at + offset;
        if bytes.get(escape + 1..escape + 6) == Some(b"u0000".as_slice()) {
            return Err(SqlError::InvalidInput {
                what,
                problem: InputProblem::NulByte,
            });
        }
        // Skip the backslash and the character it escapes.
        at = escape + 2;
    }
    Ok(())
}

/// Serialises `value` to JSON once and checks it ([`document_text`]); the result binds as
/// `jsonb` on PostgreSQL and `TEXT` on SQLite without being serialised again.
///
/// [`SqlError::Json`] if it cannot be serialised, [`SqlError::InvalidInput`].
pub(crate) fn document<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Box<RawValue>> {
    let raw =
        serde_json::value::to_raw_value(value).map_err(|source| SqlError::Json { what, source })?;
    document_text(what, raw.get())?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<()>) -> Option<InputProblem> {
        match result {
            Err(SqlError::InvalidInput { problem, .. }) => Some(problem),
            _ => None,
        }
    }

    #[test]
    fn nul_characters_are_found_in_text_and_in_json_strings_and_keys() {
        assert_eq!(refused(text("name", "a\0b")), Some(InputProblem::NulByte));
        assert_eq!(refused(text("name", "ab")), None);
        let value = serde_json::json!({ "name": "Fibre\u{0}100" });
        assert_eq!(
            refused(document("plan", &value).map(|_| ())),
            Some(InputProblem::NulByte)
        );
        let key = serde_json::json!({ "a\u{0}": 1 });
        assert_eq!(
            refused(document("plan", &key).map(|_| ())),
            Some(InputProblem::NulByte)
        );
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_a_nul() {
        // The string `\u0000` (six characters) serialises as "\\u0000".
        let value = serde_json::json!({ "name": "\\u0000", "other": "x\\" });
        assert!(document("plan", &value).is_ok());
        assert_eq!(
            refused(document_text("doc", r#"["\\\u0000"]"#)),
            Some(InputProblem::NulByte)
        );
    }

    #[test]
    fn oversize_values_are_refused_with_their_length() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            refused(key("series", &long)),
            Some(InputProblem::TooLong {
                bytes: MAX_KEY_BYTES + 1,
                max: MAX_KEY_BYTES
            })
        );
        assert_eq!(refused(key("series", &long[1..])), None);
    }
}
