//! The escaping of one TSV field (docs/format.md#text-files): how every path, name and free
//! text is written into the vault's text files and shown in messages.
//!
//! A foundation, below every layer: the error type ([`crate::error::show`]) escapes the paths
//! it names with it. The TSV dialect ([`crate::format::tsv`]) re-exports these functions and
//! owns the inverse, [`unescape_bytes`](crate::format::tsv::unescape_bytes).
//!
//! Invariants: an escaped field never contains TAB, LF, CR or another control byte; valid
//! UTF-8 stays as it is except `\\`, `\t`, `\n`, `\r` and `\xHH` for the other control
//! characters, and every byte that is not part of valid UTF-8 is written `\xHH`, so nothing
//! is lost and the result is always valid UTF-8.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Escapes raw bytes into one TSV field (docs/format.md#text-files).
pub fn escape_bytes(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, &[][..]),
            Err(e) => {
                let (good, tail) = rest.split_at(e.valid_up_to());
                // SAFETY-free: `good` was validated by from_utf8 up to this point.
                let s = std::str::from_utf8(good).unwrap_or_default();
                let bad_len = e.error_len().unwrap_or(tail.len());
                (s, &tail[..bad_len])
            }
        };
        for c in valid.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c => out.push(c),
            }
        }
        for b in bad {
            out.push_str(&format!("\\x{b:02x}"));
        }
        rest = &rest[valid.len() + bad.len()..];
    }
    out
}

/// Escapes an `OsStr` (a path or a name) into one TSV field.
pub fn escape_os(raw: &OsStr) -> String {
    escape_bytes(raw.as_bytes())
}

/// Escapes a UTF-8 string into one TSV field.
pub fn escape(raw: &str) -> String {
    escape_bytes(raw.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_spec_examples() {
        assert_eq!(escape("a\tb\nc\rd\\e"), "a\\tb\\nc\\rd\\\\e");
        assert_eq!(escape_bytes(b"\x01\x7f"), "\\x01\\x7f");
        assert_eq!(escape_bytes(b"caf\xc3\xa9 \xff"), "caf\u{e9} \\xff");
        assert_eq!(escape_bytes(b"\xe2\x82"), "\\xe2\\x82");
    }
}
