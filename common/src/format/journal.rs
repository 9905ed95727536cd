//! journal.tsv (docs/format.md#text-files): the append-only log of a job.
//!
//! Owns: the journal's columns ([`Entry`], rendered and parsed), its event names
//! ([`JournalEvent`], the one list of them) and the append. Invariants: the file is opened
//! with `O_APPEND` and each record is written with one `write(2)`, so concurrent writers
//! (supervisor, snap, retire) never interleave within a line; it is never rewritten;
//! `Entry::parse(render(x)) == x` (property-tested below).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::events::EventKind;
use crate::format::time::now_rfc3339;
use crate::format::tsv;

/// What a journal line records (the `event` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JournalEvent {
    /// A raw change event, as the watcher printed it (`create`, …, `overflow`, `unmount`).
    Change(EventKind),
    /// A version was built (detail: its directory and counts).
    Snapshot,
    /// The supervisor's outcome of one batch (or rescan).
    Batch,
    /// A version was retired.
    Retire,
    /// The one-time size recount.
    Recount,
    /// Leftovers of a crash were cleaned up.
    Cleanup,
    /// The job's settings changed.
    Config,
    /// The supervisor started watching, or a job was created.
    Start,
    /// The supervisor stopped watching.
    Stop,
    /// The job is paused until the mount table changes.
    Paused,
    /// A filesystem of the job is not the recorded one.
    MountLost,
    /// The identities match again.
    MountRestored,
    /// Watching is impossible: periodic rescans instead.
    Rescan,
    /// A file kept changing while it was copied and was taken as is.
    ChangedDuringCopy,
    /// An entry could not be read and keeps its previous data.
    Skipped,
    /// A failure.
    Error,
}

impl JournalEvent {
    /// Every event that is not a raw change, in the order of the docs.
    pub const NAMED: [JournalEvent; 15] = [
        JournalEvent::Snapshot,
        JournalEvent::Batch,
        JournalEvent::Retire,
        JournalEvent::Recount,
        JournalEvent::Cleanup,
        JournalEvent::Config,
        JournalEvent::Start,
        JournalEvent::Stop,
        JournalEvent::Paused,
        JournalEvent::MountLost,
        JournalEvent::MountRestored,
        JournalEvent::Rescan,
        JournalEvent::ChangedDuringCopy,
        JournalEvent::Skipped,
        JournalEvent::Error,
    ];

    /// The column text.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalEvent::Change(kind) => kind.as_str(),
            JournalEvent::Snapshot => "snapshot",
            JournalEvent::Batch => "batch",
            JournalEvent::Retire => "retire",
            JournalEvent::Recount => "recount",
            JournalEvent::Cleanup => "cleanup",
            JournalEvent::Config => "config",
            JournalEvent::Start => "start",
            JournalEvent::Stop => "stop",
            JournalEvent::Paused => "paused",
            JournalEvent::MountLost => "mount-lost",
            JournalEvent::MountRestored => "mount-restored",
            JournalEvent::Rescan => "rescan",
            JournalEvent::ChangedDuringCopy => "changed-during-copy",
            JournalEvent::Skipped => "skipped",
            JournalEvent::Error => "error",
        }
    }

    /// Reads the column text; `None` for anything else.
    pub fn parse(text: &str) -> Option<JournalEvent> {
        EventKind::parse(text)
            .map(JournalEvent::Change)
            .or_else(|| JournalEvent::NAMED.into_iter().find(|e| e.as_str() == text))
    }

    /// A raw change that a batch has not built yet (everything but `unmount` and `flush`).
    pub fn is_pending_change(self) -> bool {
        matches!(self, JournalEvent::Change(k) if !matches!(k, EventKind::Unmount | EventKind::Flush))
    }
}

impl std::fmt::Display for JournalEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `watch`, `mountwatch`, `snap`, `retire`, `index`, `supervisor`.
    pub tool: String,
    pub event: JournalEvent,
    /// Raw bytes relative to the source (may be empty).
    pub path: Vec<u8>,
    pub detail: String,
}

impl Entry {
    /// The line's text, without the newline.
    pub fn render(&self) -> String {
        tsv::join(&[
            &tsv::escape(&self.time),
            &tsv::escape(&self.tool),
            &tsv::escape(self.event.as_str()),
            &tsv::escape_bytes(&self.path),
            &tsv::escape(&self.detail),
        ])
    }

    /// Parses one line (without its newline; not the header).
    pub fn parse(line: &str) -> Result<Entry> {
        let bad = |what: String| Error::Invalid(format!("journal line: {what}"));
        let text = |field: &str, name: &str| {
            tsv::unescape_bytes(field)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| bad(format!("bad {name} `{field}`")))
        };
        let fields = tsv::split(line);
        let [time, tool, event, path, detail] = fields[..] else {
            return Err(bad(format!(
                "expected 5 TAB-separated fields, found {}",
                fields.len()
            )));
        };
        Ok(Entry {
            time: text(time, "time")?,
            tool: text(tool, "tool")?,
            event: JournalEvent::parse(event)
                .ok_or_else(|| bad(format!("unknown event `{event}`")))?,
            path: tsv::unescape_bytes(path).map_err(|e| bad(format!("path: {e}")))?,
            detail: text(detail, "detail")?,
        })
    }
}

/// The journal's header line.
pub const HEADER: &str = "time\ttool\tevent\tpath\tdetail";

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    tool: &'static str,
}

impl Journal {
    /// Opens (creating with its header if missing) the journal at `path` for `tool`.
    pub fn open(path: &Path, tool: &'static str) -> Result<Journal> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .ctx("cannot open journal", path)?;
        let len = file.metadata().ctx("cannot stat journal", path)?.len();
        if len == 0 {
            file.write_all(format!("{HEADER}\n").as_bytes())
                .ctx("cannot write journal", path)?;
        }
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            tool,
        })
    }

    /// Appends one record; `path` is raw bytes relative to the source (may be empty).
    pub fn append(&mut self, event: JournalEvent, path: &[u8], detail: &str) -> Result<()> {
        let tool = self.tool;
        self.append_as(tool, event, path, detail)
    }

    /// Another handle on the same journal (the fd is duplicated; `O_APPEND` is kept).
    pub fn try_clone(&self) -> Result<Journal> {
        Ok(Journal {
            file: self
                .file
                .try_clone()
                .ctx("cannot duplicate journal handle", &self.path)?,
            path: self.path.clone(),
            tool: self.tool,
        })
    }

    /// Appends a record on behalf of another tool (the supervisor journals the watcher's
    /// raw events as `watch`).
    pub fn append_as(
        &mut self,
        tool: &str,
        event: JournalEvent,
        path: &[u8],
        detail: &str,
    ) -> Result<()> {
        let entry = Entry {
            time: now_rfc3339(),
            tool: tool.to_owned(),
            event,
            path: path.to_vec(),
            detail: detail.to_owned(),
        };
        let mut line = entry.render();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .ctx("cannot append to journal", &self.path)
    }

    /// Appends a record, reporting a failure as a warning ([`crate::error::warn`], printed
    /// by the binary) instead of failing the caller: for logging that must never abort the
    /// work it describes.
    pub fn note(&mut self, event: JournalEvent, path: &[u8], detail: &str) {
        if let Err(e) = self.append(event, path, detail) {
            crate::error::warn(&e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_escaped_records_after_one_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("journal.tsv");
        Journal::open(&p, "snap")
            .expect("open")
            .append(JournalEvent::Skipped, b"a\tb", "why")
            .expect("log");
        Journal::open(&p, "retire")
            .expect("reopen")
            .append(JournalEvent::Retire, b"", "V1")
            .expect("log");
        let text = std::fs::read_to_string(&p).expect("read");
        let table =
            tsv::Table::parse(&text, &["time", "tool", "event", "path", "detail"]).expect("parses");
        let rows: Vec<_> = table.rows().collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].os("path").expect("path"), "a\tb");
        assert_eq!(rows[1].text("tool").expect("tool"), "retire");
    }

    #[test]
    fn event_names_are_the_documented_ones() {
        let names: Vec<&str> = JournalEvent::NAMED.iter().map(|e| e.as_str()).collect();
        for doc in [
            "snapshot",
            "retire",
            "recount",
            "mount-lost",
            "mount-restored",
            "rescan",
            "changed-during-copy",
            "skipped",
            "error",
            "start",
            "stop",
        ] {
            assert!(names.contains(&doc), "{doc}");
        }
        for e in JournalEvent::NAMED {
            assert_eq!(JournalEvent::parse(e.as_str()), Some(e));
        }
        for k in EventKind::ALL {
            assert_eq!(
                JournalEvent::parse(k.as_str()),
                Some(JournalEvent::Change(k))
            );
        }
        assert_eq!(
            JournalEvent::parse("overflow").map(|e| e.is_pending_change()),
            Some(true)
        );
        assert!(!JournalEvent::Change(EventKind::Unmount).is_pending_change());
        assert_eq!(JournalEvent::parse("colour"), None);
    }

    #[test]
    fn bytes_on_disk_are_the_documented_columns() {
        let e = Entry {
            time: "2026-11-24T21:49:00.123Z".into(),
            tool: "watch".into(),
            event: JournalEvent::Change(EventKind::Move),
            path: b"a\tb\xff".to_vec(),
            detail: "file -> c".into(),
        };
        assert_eq!(
            e.render(),
            "2026-11-24T21:49:00.123Z\twatch\tmove\ta\\tb\\xff\tfile -> c"
        );
    }

    fn event() -> impl proptest::strategy::Strategy<Value = JournalEvent> {
        let mut all: Vec<JournalEvent> = JournalEvent::NAMED.to_vec();
        all.extend(EventKind::ALL.map(JournalEvent::Change));
        proptest::sample::select(all)
    }

    proptest::proptest! {
        #[test]
        fn entry_round_trips(
            event in event(),
            tool in "[a-z]{1,10}",
            path in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..20),
            detail in ".{0,40}",
        ) {
            let e = Entry { time: "2026-11-24T21:49:00.123Z".into(), tool, event, path, detail };
            let line = e.render();
            proptest::prop_assert!(!line.contains('\n'));
            proptest::prop_assert_eq!(Entry::parse(&line).expect("parses"), e);
        }
    }
}
