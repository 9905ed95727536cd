//! index.tsv (docs/format.md#text-files): one row per complete retained version, oldest first.
//!
//! Owns: the index columns, reading them (by header, so later columns may be appended) and
//! rewriting the file atomically (temp file, fsync, rename, fsync of the directory). Never
//! edited in place.
//!
//! Invariants a parsed index keeps: every `dir` is the version directory name of its row's
//! `version`, and versions strictly increase from row to row.

use std::fs;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::format::tsv;
use crate::fsutil;

/// The columns this version writes, in order.
pub const COLUMNS: [&str; 7] = [
    "version",
    "dir",
    "created",
    "files",
    "changed",
    "held_bytes",
    "logical_bytes",
];

/// One version's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    /// The version number `n`.
    pub version: u64,
    /// The directory name `V{n}-{stamp}`.
    pub dir: String,
    /// When the version was taken (RFC 3339, ms).
    pub created: String,
    /// Regular files in the tree, through links.
    pub files: u64,
    /// Entries this version copied or created itself.
    pub changed: u64,
    /// Disk usage of this version's own real entries (du, not following links).
    pub held_bytes: u64,
    /// Apparent size of all regular files in the tree, through links.
    pub logical_bytes: u64,
}

/// Reads and parses index.tsv. A missing file is an error (see [`read_index_or_empty`]);
/// text that does not parse is [`Error::Damaged`].
pub fn read(path: &Path) -> Result<Vec<IndexRow>> {
    let text = fs::read_to_string(path).ctx("cannot read index", path)?;
    parse(&text).map_err(|msg| Error::Damaged(format!("{}: {msg}", crate::error::show(path))))
}

/// Parses the text of an index; the error is a message naming the line at fault.
pub fn parse(text: &str) -> Result<Vec<IndexRow>, String> {
    let table =
        tsv::Table::parse(text, &COLUMNS).map_err(|(line, e)| format!("line {line}: {e}"))?;
    let mut rows = Vec::new();
    for row in table.rows() {
        let num = |col: &str| -> Result<u64, String> {
            let t = row
                .text(col)
                .map_err(|e| format!("line {}: {col}: {e}", row.line))?;
            t.parse::<u64>()
                .map_err(|_| format!("line {}: {col} `{t}` is not a whole number", row.line))
        };
        let text = |col: &str| {
            row.text(col)
                .map_err(|e| format!("line {}: {col}: {e}", row.line))
        };
        let r = IndexRow {
            version: num("version")?,
            dir: text("dir")?,
            created: text("created")?,
            files: num("files")?,
            changed: num("changed")?,
            held_bytes: num("held_bytes")?,
            logical_bytes: num("logical_bytes")?,
        };
        if crate::format::version::VersionName::parse(&r.dir).map(|v| v.n) != Some(r.version) {
            return Err(format!(
                "line {}: dir `{}` is not a version directory of version {}",
                row.line, r.dir, r.version
            ));
        }
        if rows
            .last()
            .is_some_and(|p: &IndexRow| p.version >= r.version)
        {
            return Err(format!(
                "line {}: versions are not in increasing order",
                row.line
            ));
        }
        rows.push(r);
    }
    Ok(rows)
}

/// Renders rows as the file's text: the header of [`COLUMNS`], then one line per row.
pub fn render(rows: &[IndexRow]) -> String {
    let mut out = COLUMNS.join("\t");
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            r.version,
            tsv::escape(&r.dir),
            tsv::escape(&r.created),
            r.files,
            r.changed,
            r.held_bytes,
            r.logical_bytes
        ));
    }
    out
}

/// Rewrites index.tsv atomically and durably (`fsutil::write_atomic`).
pub fn write(path: &Path, rows: &[IndexRow]) -> Result<()> {
    fsutil::write_atomic(path, render(rows).as_bytes())
}

/// The job folder's size as the index knows it: the sum of `held_bytes`.
pub fn total_held(rows: &[IndexRow]) -> u64 {
    rows.iter().map(|r| r.held_bytes).sum()
}

/// Reads the index.tsv at `path`, or an empty index when the file does not exist (a job
/// before its first version); any other failure is an error.
pub fn read_index_or_empty(path: &Path) -> Result<Vec<IndexRow>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        _ => read(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_rows() {
        let rows = vec![IndexRow {
            version: 3,
            dir: "V3-20261124T214900Z".into(),
            created: "2026-11-24T21:49:00.123Z".into(),
            files: 10,
            changed: 2,
            held_bytes: 4096,
            logical_bytes: 100,
        }];
        assert_eq!(parse(&render(&rows)).expect("parses"), rows);
        let bad = render(&rows).replace("\t10\t", "\tten\t");
        assert!(parse(&bad).expect_err("bad").contains("files"));
        let extra = "version\tdir\tcreated\tfiles\tchanged\theld_bytes\tlogical_bytes\tnew\n\
                     3\tV3-20261124T214900Z\tt\t1\t1\t1\t1\tx\n";
        assert_eq!(parse(extra).expect("later columns are fine").len(), 1);
    }
}
