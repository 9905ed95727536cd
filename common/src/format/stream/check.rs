//! Why a stream is refused ([`StreamError`]) and the checks a record needs nothing else
//! for ([`check_name`]).
//!
//! Invariant: a stream that broke (the other side went away) is told apart from a record
//! that is wrong by the error's variant ([`StreamError::is_disconnect`]), never by its text.

use std::io;

use super::limits;
use crate::escape;

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The pipe or connection failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a record.
    #[error("the stream ended inside a record (connection lost?)")]
    Truncated,
    /// A frame announces more than [`limits::MAX_RECORD`].
    #[error("a record of {len} bytes (tag {}) exceeds the limit of {} bytes", show_tag(*.tag), limits::MAX_RECORD)]
    TooLarge { tag: u8, len: u64 },
    /// A tag no record has.
    #[error("unknown record tag {}", show_tag(*.0))]
    UnknownTag(u8),
    /// A record that does not decode, or breaks a rule of its own.
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
}

impl StreamError {
    /// The stream ended or broke (the other side went away), as opposed to a record that
    /// is wrong.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, StreamError::Io(_) | StreamError::Truncated)
    }
}

fn show_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// Checks that `name` is one path component: not empty, not `.` or `..`, no `/` and no
/// NUL, at most [`limits::MAX_NAME`] bytes.
pub fn check_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty name".into());
    }
    if name == b"." || name == b".." {
        return Err(format!("`{}` is not a name", escape::escape_bytes(name)));
    }
    if name.contains(&b'/') {
        return Err(format!(
            "`{}` is not a single path component",
            escape::escape_bytes(name)
        ));
    }
    if name.contains(&0) {
        return Err(format!(
            "`{}` contains a NUL byte",
            escape::escape_bytes(name)
        ));
    }
    if name.len() > limits::MAX_NAME {
        return Err(format!(
            "a name of {} bytes (at most {})",
            name.len(),
            limits::MAX_NAME
        ));
    }
    Ok(())
}
