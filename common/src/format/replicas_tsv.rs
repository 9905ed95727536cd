//! `<job>/replicas.tsv` in the source vault (docs/format.md#replicastsv): per destination,
//! the replica's newest version as the last replication left it, so that `status` can say
//! how far behind a replica is without reaching it.
//!
//! Owns the file's columns (`to`, `vault`, `version`, `dir`, `time`, `error`), reading it
//! (a damaged file reads as empty: it is a summary, rewritten by the next replication) and
//! rewriting one destination's row atomically ([`record`]).
//!
//! Invariant: written only by `reverberator replicate` (without the job lock: it never
//! touches a version, and the file is replaced atomically; two replications to different
//! destinations may race, and the later rewrite wins for the row it wrote).

use std::fs;
use std::path::Path;

use crate::error::Result;
use crate::format::tsv;
use crate::fsutil;

/// The file's name in the job folder.
pub const FILE: &str = "replicas.tsv";

/// The columns, in order.
pub const COLUMNS: [&str; 6] = ["to", "vault", "version", "dir", "time", "error"];

/// One destination's last known state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaRow {
    /// The destination as written in the configuration (`Destination`'s display).
    pub to: String,
    /// The replica vault's id (empty until it answered once).
    pub vault: String,
    /// The replica's newest version number (0: none).
    pub version: u64,
    /// Its directory (empty: none).
    pub dir: String,
    /// When this row was written (RFC 3339).
    pub time: String,
    /// Why the last replication failed (empty: it succeeded).
    pub error: String,
}

/// Reads the rows of job folder `job` (none when missing or unreadable).
pub fn read(job: &Path) -> Vec<ReplicaRow> {
    let Ok(text) = fs::read_to_string(job.join(FILE)) else {
        return Vec::new();
    };
    let Ok(table) = tsv::Table::parse(&text, &COLUMNS) else {
        return Vec::new();
    };
    table
        .rows()
        .filter_map(|r| {
            Some(ReplicaRow {
                to: r.text("to").ok()?,
                vault: r.text("vault").ok()?,
                version: r.text("version").ok()?.parse().ok()?,
                dir: r.text("dir").ok()?,
                time: r.text("time").ok()?,
                error: r.text("error").ok()?,
            })
        })
        .collect()
}

/// Renders rows as the file's text.
pub fn render(rows: &[ReplicaRow]) -> String {
    let mut out = COLUMNS.join("\t");
    out.push('\n');
    for r in rows {
        let version = r.version.to_string();
        let fields = [
            tsv::escape(&r.to),
            tsv::escape(&r.vault),
            version,
            tsv::escape(&r.dir),
            tsv::escape(&r.time),
            tsv::escape(&r.error),
        ];
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        out.push_str(&tsv::join(&refs));
        out.push('\n');
    }
    out
}

/// Replaces the row of `row.to` (or adds it), atomically and durably.
pub fn record(job: &Path, row: ReplicaRow) -> Result<()> {
    let mut rows = read(job);
    rows.retain(|r| r.to != row.to);
    rows.push(row);
    rows.sort_by(|a, b| a.to.cmp(&b.to));
    fsutil::write_atomic_in(
        &fsutil::tmp_dir_of(job)?,
        &job.join(FILE),
        render(&rows).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let row = ReplicaRow {
            to: "ssh://nas/srv/v\tx".into(),
            vault: "abc".into(),
            version: 7,
            dir: "V7-20261124T214900Z".into(),
            time: "2026-11-24T21:49:00.123Z".into(),
            error: String::new(),
        };
        record(dir.path(), row.clone()).expect("record");
        let other = ReplicaRow {
            to: "/mnt/b".into(),
            ..row.clone()
        };
        record(dir.path(), other.clone()).expect("record");
        let newer = ReplicaRow {
            version: 8,
            error: "the receiver\nwent away".into(),
            ..row
        };
        record(dir.path(), newer.clone()).expect("record");
        assert_eq!(read(dir.path()), vec![other, newer]);
    }
}
