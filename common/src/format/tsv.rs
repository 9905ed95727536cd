//! The TSV dialect of docs/format.md#text-files, defined once for every file and stream of the project.
//!
//! Owns: field unescaping (the escaping it inverts is [`crate::escape`]'s, re-exported
//! here), record splitting, and reading a file or stream
//! with a header into rows addressed by column name.
//!
//! Invariants:
//! - `unescape(escape(b)) == b` for every byte string `b` (property-tested below), so any
//!   path, however odd, survives a round trip through index.tsv, journal.tsv or an event line.
//! - An escaped field never contains TAB, LF, CR or another control byte, so `cut -f` and
//!   `awk -F'\t'` work on every file we write.
//! - Unescaping rejects what escaping never produces (a lone backslash, an unknown escape,
//!   a bad hex pair): a damaged file is an error, not a silently different path.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

// Escaping lives in the foundations (error messages show paths with it); this module adds
// the reading side and is where the rest of the library finds both.
pub use crate::escape::{escape, escape_bytes, escape_os};

/// Why a field or record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TsvError {
    #[error("a backslash at the end of a field")]
    TrailingBackslash,
    #[error("unknown escape `\\{0}`")]
    UnknownEscape(char),
    #[error("bad hex escape `\\x{0}`")]
    BadHex(String),
    #[error("a raw control byte 0x{0:02x} in a field (it must be escaped)")]
    RawControl(u8),
    #[error("expected {expected} fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("missing header line")]
    MissingHeader,
    #[error("header lacks the required column `{0}`")]
    MissingColumn(String),
}

/// The exact inverse of [`escape_bytes`].
pub fn unescape_bytes(field: &str) -> Result<Vec<u8>, TsvError> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            if b < 0x20 || b == 0x7f {
                return Err(TsvError::RawControl(b));
            }
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&next) = bytes.get(i + 1) else {
            return Err(TsvError::TrailingBackslash);
        };
        match next {
            b'\\' => out.push(b'\\'),
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'x' => {
                let hex = field.get(i + 2..i + 4).unwrap_or("");
                let valid = hex.len() == 2 && hex.bytes().all(|h| h.is_ascii_hexdigit());
                let value = if valid {
                    u8::from_str_radix(hex, 16).ok()
                } else {
                    None
                };
                match value {
                    Some(v) => out.push(v),
                    None => {
                        let shown: String = field[i + 2..].chars().take(2).collect();
                        return Err(TsvError::BadHex(shown));
                    }
                }
                i += 4;
                continue;
            }
            other => return Err(TsvError::UnknownEscape(other as char)),
        }
        i += 2;
    }
    Ok(out)
}

/// Unescapes a field into an `OsString` (for paths).
pub fn unescape_os(field: &str) -> Result<OsString, TsvError> {
    unescape_bytes(field).map(OsString::from_vec)
}

/// Joins already-escaped fields into one line, without the trailing newline.
pub fn join(fields: &[&str]) -> String {
    fields.join("\t")
}

/// Splits one line (without its newline) into its raw, still-escaped fields.
pub fn split(line: &str) -> Vec<&str> {
    line.split('\t').collect()
}

/// A parsed TSV document: the header and the rows, addressed by column name.
#[derive(Debug, Clone, Default)]
pub struct Table {
    by_name: HashMap<String, usize>,
    rows: Vec<Vec<String>>,
}

/// A row borrowed from a [`Table`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'t> {
    table: &'t Table,
    fields: &'t [String],
    /// 1-based line number in the file (the header is line 1).
    pub line: usize,
}

impl Table {
    /// Parses a whole document. Every record must have exactly as many fields as the header;
    /// `required` columns must exist. Fields stay escaped; read them with [`Row::text`] (or [`Row::raw`] for the escaped form).
    pub fn parse(text: &str, required: &[&str]) -> Result<Table, (usize, TsvError)> {
        let mut lines = text.split('\n');
        let header = match lines.next() {
            Some(h) if !h.is_empty() => h,
            _ => return Err((1, TsvError::MissingHeader)),
        };
        let columns: Vec<String> = split(header).into_iter().map(str::to_owned).collect();
        let by_name: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        for r in required {
            if !by_name.contains_key(*r) {
                return Err((1, TsvError::MissingColumn((*r).to_owned())));
            }
        }
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            let fields: Vec<String> = split(line).into_iter().map(str::to_owned).collect();
            if fields.len() != columns.len() {
                return Err((
                    i + 2,
                    TsvError::FieldCount {
                        expected: columns.len(),
                        found: fields.len(),
                    },
                ));
            }
            rows.push(fields);
        }
        Ok(Table { by_name, rows })
    }

    /// The rows, in file order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().enumerate().map(move |(i, f)| Row {
            table: self,
            fields: f,
            line: i + 2,
        })
    }
}

impl<'t> Row<'t> {
    /// The raw (escaped) field of `column`, or `None` when the header lacks it.
    pub fn raw(&self, column: &str) -> Option<&'t str> {
        self.table
            .by_name
            .get(column)
            .map(|&i| self.fields[i].as_str())
    }

    /// The unescaped text of `column` (must be valid UTF-8 once unescaped).
    pub fn text(&self, column: &str) -> Result<String, TsvError> {
        let raw = self
            .raw(column)
            .ok_or_else(|| TsvError::MissingColumn(column.to_owned()))?;
        let bytes = unescape_bytes(raw)?;
        String::from_utf8(bytes).map_err(|_| TsvError::BadHex(raw.to_owned()))
    }

    /// The unescaped bytes of `column` as a path-like `OsString`.
    pub fn os(&self, column: &str) -> Result<OsString, TsvError> {
        let raw = self
            .raw(column)
            .ok_or_else(|| TsvError::MissingColumn(column.to_owned()))?;
        unescape_os(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_what_escape_never_writes() {
        assert_eq!(unescape_bytes("a\\"), Err(TsvError::TrailingBackslash));
        assert_eq!(unescape_bytes("a\\q"), Err(TsvError::UnknownEscape('q')));
        assert!(matches!(unescape_bytes("\\xg1"), Err(TsvError::BadHex(_))));
        assert!(matches!(unescape_bytes("\\x1"), Err(TsvError::BadHex(_))));
        assert_eq!(unescape_bytes("a\u{1}"), Err(TsvError::RawControl(1)));
    }

    #[test]
    fn table_reads_by_column_and_names_bad_lines() {
        let t = Table::parse("a\tb\n1\tx\\ty\n", &["a"]).expect("parses");
        let row = t.rows().next().expect("one row");
        assert_eq!(row.text("b").expect("text"), "x\ty");
        assert_eq!(row.line, 2);
        let err = Table::parse("a\tb\n1\t2\n3\n", &[]).expect_err("short line");
        assert_eq!(err.0, 3);
        let err = Table::parse("a\n", &["b"]).expect_err("missing column");
        assert_eq!(err.1, TsvError::MissingColumn("b".into()));
    }

    proptest! {
        #[test]
        fn escape_unescape_is_identity(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let field = escape_bytes(&raw);
            prop_assert!(!field.bytes().any(|b| b < 0x20 || b == 0x7f));
            prop_assert_eq!(unescape_bytes(&field).expect("round trip"), raw);
        }

        #[test]
        fn unescape_never_panics(s in ".{0,40}") {
            let _ = unescape_bytes(&s);
        }
    }
}
