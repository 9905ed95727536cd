//! Version directory names, `V{n}-{stamp}` (docs/format.md#vault-layout): `n` counts from 1
//! and never repeats within a job; `stamp` is the UTC time the version was taken, colon-free.
//! Versions sort by `n`, never by the text of the name.

use std::time::SystemTime;

use crate::format::time;

/// A version directory name, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionName {
    /// The version number (sort key).
    pub n: u64,
    /// The full directory name `V{n}-{stamp}`.
    pub dir: String,
}

impl VersionName {
    /// Makes the name of version `n` taken at `t`.
    pub fn new(n: u64, t: SystemTime) -> VersionName {
        VersionName {
            n,
            dir: format!("V{n}-{}", time::stamp(t)),
        }
    }

    /// When the version was taken (its stamp, to the second).
    pub fn taken(&self) -> Option<SystemTime> {
        let (_, stamp) = self.dir.split_once('-')?;
        time::parse_stamp(stamp)
    }

    /// Parses `V{n}-{stamp}`; anything else is not a version directory.
    pub fn parse(dir: &str) -> Option<VersionName> {
        let rest = dir.strip_prefix('V')?;
        let (num, stamp) = rest.split_once('-')?;
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || num.starts_with('0') {
            return None;
        }
        time::parse_stamp(stamp)?;
        Some(VersionName {
            n: num.parse().ok()?,
            dir: dir.to_owned(),
        })
    }
}
