//! Journal compaction (docs/format.md#journal): at each retirement, journal.tsv is rewritten
//! atomically without the raw change events older than the oldest retained version; every
//! other line stays (snapshots, retirements, errors, identity changes, and any line this
//! version cannot read, so nothing unknown is ever lost).
//!
//! Invariants: the rewrite is a temp file, fsync, rename ([`crate::fsutil::write_atomic`]),
//! so a crash leaves the old journal or the new one, never a mix; it runs under the job
//! lock and holds the journal's own lock from the read through the rename, and a writer
//! that holds the journal open finds it replaced at its next append and reopens it.

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
    // Held from the read through the rename: an appender waits, then finds the file
    // replaced and reopens it ([`crate::format::journal::Journal::append_as`]), so no line
    // is written between the read and the rename, nor into the replaced file.
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Compacted::default()),
        Err(e) => return Err(e).ctx("cannot open journal", path),
    };
    file.lock().ctx("cannot lock journal", path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).ctx("cannot read journal", path)?;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    let mut done = Compacted::default();
    // Lines are kept byte for byte: one this version cannot read (not UTF-8, unknown
    // columns) is never altered.
    for line in bytes.split_inclusive(|&b| b == b'\n').skip(1) {
        let old_change = std::str::from_utf8(line)
            .ok()
            .and_then(|t| Entry::parse(t.trim_end_matches('\n')).ok())
            .is_some_and(|e| e.event.is_pending_change() && e.time.as_str() < oldest);
        if old_change {
            done.dropped += 1;
        } else {
            out.extend_from_slice(line);
            done.kept += 1;
        }
    }
    if done.dropped > 0 {
        crate::fsutil::write_atomic(path, &out)?;
    }
    file.unlock().ctx("cannot unlock journal", path)?;
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

    /// A journal compacted by another process while this one holds it open: the next
    /// append lands in the new file, not in the replaced one.
    #[test]
    fn an_append_after_another_process_compacted_reaches_the_new_file() {
        use crate::format::journal::{Journal, JournalEvent};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.tsv");
        let mut held = Journal::open(&path, "watch").expect("open");
        held.append(
            JournalEvent::Change(crate::format::events::EventKind::Modify),
            b"old",
            "file",
        )
        .expect("append");
        let done = compact(&path, "9999-01-01T00:00:00.000Z").expect("compact");
        assert_eq!(done.dropped, 1);
        held.append(
            JournalEvent::Change(crate::format::events::EventKind::Modify),
            b"after-compaction",
            "file",
        )
        .expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("after-compaction"),
            "the append went to the replaced file:\n{text}"
        );
    }

    /// Bytes that are not UTF-8 in a kept line are kept as they are.
    #[test]
    fn kept_lines_keep_their_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.tsv");
        let mut bytes =
            format!("{HEADER}\n2026-11-24T10:00:00.000Z\twatch\tcreate\ta\tfile\n").into_bytes();
        let odd: &[u8] = b"2026-11-24T10:00:03.000Z\tlater\t\xff\xfe\t\tbytes\n";
        bytes.extend_from_slice(odd);
        std::fs::write(&path, &bytes).expect("write");
        let done = compact(&path, "2026-11-24T10:30:00.000Z").expect("compact");
        assert_eq!(
            done,
            Compacted {
                kept: 1,
                dropped: 1
            }
        );
        let mut want = format!("{HEADER}\n").into_bytes();
        want.extend_from_slice(odd);
        assert_eq!(std::fs::read(&path).expect("read"), want);
    }
}
