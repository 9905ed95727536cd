//! Journal compaction (docs/format.md#journal): at each retirement, journal.tsv is rewritten
//! atomically without the raw change events older than the oldest retained version; every
//! other line stays (snapshots, retirements, errors, identity changes, and any line this
//! version cannot read, so nothing unknown is ever lost).
//!
//! Invariants: the rewrite is a temp file, fsync, rename ([`crate::fsutil::write_atomic`]),
//! so a crash leaves the old journal or the new one, never a mix; it runs under the job
//! lock, and a process that holds the journal open across a retirement reopens it
//! (the callers do: [`crate::run::batch::compact_journal`]).

use std::path::Path;

use crate::error::{IoContext, Result};
use crate::format::journal::{Entry, HEADER};

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Lines kept, the header excluded.
    pub kept: usize,
    /// Raw change events dropped.
    pub dropped: usize,
}

/// Rewrites the journal at `path` without the raw change events timed before `oldest`
/// (the oldest retained version's `created`, RFC 3339 as the journal writes it). Nothing is
/// written when nothing would be dropped.
pub fn compact(path: &Path, oldest: &str) -> Result<Compacted> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Compacted::default()),
        Err(e) => return Err(e).ctx("cannot read journal", path),
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(HEADER);
    out.push('\n');
    let mut done = Compacted::default();
    for line in text.split_inclusive('\n').skip(1) {
        let old_change = Entry::parse(line.trim_end_matches('\n'))
            .is_ok_and(|e| e.event.is_pending_change() && e.time.as_str() < oldest);
        if old_change {
            done.dropped += 1;
        } else {
            out.push_str(line);
            done.kept += 1;
        }
    }
    if done.dropped > 0 {
        crate::fsutil::write_atomic(path, out.as_bytes())?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_only_old_raw_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.tsv");
        let lines = [
            HEADER,
            "2026-11-24T10:00:00.000Z\twatch\tcreate\ta\tfile",
            "2026-11-24T10:00:01.000Z\tsnap\tsnapshot\t\tV1-20261124T100001Z changed=1",
            "2026-11-24T10:00:02.000Z\twatch\tmodify\ta\tfile",
            "2026-11-24T10:00:03.000Z\tsupervisor\terror\t\tsomething",
            "a line from a later version\twith\tcolumns",
            "2026-11-24T11:00:00.000Z\twatch\tmodify\tb\tfile",
        ];
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
        let done = compact(&path, "2026-11-24T10:30:00.000Z").expect("compact");
        assert_eq!(
            done,
            Compacted {
                kept: 4,
                dropped: 2
            }
        );
        let text = std::fs::read_to_string(&path).expect("read");
        let want = [lines[0], lines[2], lines[4], lines[5], lines[6]].join("\n") + "\n";
        assert_eq!(text, want);
        // Nothing more to drop: the file is left as it is.
        assert_eq!(
            compact(&path, "2026-11-24T10:30:00.000Z")
                .expect("again")
                .dropped,
            0
        );
    }
}
