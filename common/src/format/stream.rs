//! The replication stream (docs/format.md#replication-stream): the records a sender and a
//! receiver exchange over a pipe (or `ssh`), their byte encoding, and the limits every
//! decoded record is held to.
//!
//! Owns: the framing (one tag byte, the payload length as a LEB128 varint, the payload),
//! every record type ([`Record`]) and its fields, encoding ([`RecordWriter`]) and decoding
//! ([`RecordReader`]) with a byte count on each side, and the checks that need nothing but
//! the record itself: a name is one path component ([`check_name`]), a link text, an xattr
//! name, a mode, a time, a version directory name and a stamp are well formed, and nothing
//! exceeds its limit ([`limits`]). What a record means in its place (order, sizes that must
//! add up, hashes, a version number after the replica's newest) is the receiver's
//! (`engine::receive`).
//!
//! Invariants: decoding never panics and never allocates more than [`limits::MAX_RECORD`]
//! bytes for one record, whatever the input; a record decodes to exactly what was encoded
//! (tested by round trips); a payload with bytes left over, a truncated frame or an unknown
//! tag is an error ([`StreamError`]), never skipped.
//!
//! Split by responsibility: the record types ([`records`]), the checks and errors
//! ([`check`]), writing records ([`encoding`]) and reading them ([`decoding`]); this file holds
//! the constants every part shares. Unit tests in `stream/tests.rs`.

mod check;
mod decoding;
mod encoding;
mod records;

pub use check::{StreamError, check_name};
pub use decoding::RecordReader;
#[cfg(test)]
use decoding::decode;
pub use encoding::{RecordWriter, frame};
#[cfg(test)]
use encoding::{put_bytes, put_u64};
pub use records::{
    Attrs, Counts, DataMode, Entry, FileEntry, Hash, Hello, Kind, Record, SpecialKind, Time,
    VersionHeader, Welcome,
};

/// The first bytes of a sender's [`Hello`]: what a receiver checks before anything else.
pub const MAGIC: &[u8] = b"reverberator replication";

/// The stream format this code speaks (docs/format.md#replication-stream).
pub const FORMAT: u32 = 1;

/// The limits a decoded record is held to.
pub mod limits {
    /// The largest payload of one record.
    pub const MAX_RECORD: usize = 1 << 20;
    /// The largest payload of one [`super::Record::Data`] a sender writes.
    pub const MAX_DATA: usize = 256 << 10;
    /// The longest name (one path component), as Linux allows.
    pub const MAX_NAME: usize = 255;
    /// The longest symlink text (Linux's `PATH_MAX` less its NUL).
    pub const MAX_LINK_TEXT: usize = 4095;
    /// The most xattrs of one entry.
    pub const MAX_XATTRS: usize = 1024;
    /// The longest xattr value (Linux's `XATTR_SIZE_MAX`).
    pub const MAX_XATTR_VALUE: usize = 64 << 10;
    /// The deepest directory nesting a version or manifest may have.
    pub const MAX_DEPTH: usize = 8192;
    /// The most entries one version (or manifest) may have.
    pub const MAX_ENTRIES: u64 = 100_000_000;
    /// The most hashes a receiver may announce it holds.
    pub const MAX_HELD: u64 = 10_000_000;
    /// The most hashes in one [`super::Record::Held`].
    pub const HELD_PER_RECORD: usize = 16_384;
    /// The longest free text (a job name, a message, a settings document).
    pub const MAX_TEXT: usize = 64 << 10;
}

#[cfg(test)]
mod tests;
