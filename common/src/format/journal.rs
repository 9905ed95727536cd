//! journal.tsv (docs/format.md#text-files): the append-only log of a job.
//!
//! Owns: the journal's columns ([`Entry`], rendered and parsed), its event names
//! ([`JournalEvent`], the one list of them) and the append. Invariants: the file is opened
//! with `O_APPEND` and each record is written with one `write(2)`, so concurrent writers
//! (supervisor, snap, retire) never interleave within a line; it is never rewritten, only
//! cut back to its last complete line when a crash left a torn tail (trailing NULs, a
//! partial line), which [`Journal::open`] does under an exclusive `flock` while appends hold
//! a shared one, so a record being written is never taken for a torn tail;
//! `Entry::parse(render(x)) == x` (property-tested below).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
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
    /// The vault's filesystem keeps less than a local one, and how the tools adapt
    /// (docs/filesystems.md); said once, and again when it changes.
    VaultCapability,
    /// A failure.
    Error,
    /// A hook command or ping that failed or timed out (the job went on).
    Hook,
    /// The modes or group of the vault's folders and records were put right
    /// (docs/security.md#who-may-read-the-vault).
    Permissions,
    /// A filesystem mounted below the source is not backed up (`one_file_system`).
    MountLeftOut,
    /// A filesystem was mounted below the source while the job ran.
    MountAdded,
    /// A filesystem mounted below the source was unmounted while the job ran.
    MountRemoved,
}

impl JournalEvent {
    /// Every event that is not a raw change, in the order of the docs.
    pub const NAMED: [JournalEvent; 21] = [
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
        JournalEvent::VaultCapability,
        JournalEvent::Error,
        JournalEvent::Hook,
        JournalEvent::Permissions,
        JournalEvent::MountLeftOut,
        JournalEvent::MountAdded,
        JournalEvent::MountRemoved,
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
            JournalEvent::VaultCapability => "vault-capability",
            JournalEvent::Error => "error",
            JournalEvent::Hook => "hook",
            JournalEvent::Permissions => "permissions",
            JournalEvent::MountLeftOut => "mount-left-out",
            JournalEvent::MountAdded => "mount-added",
            JournalEvent::MountRemoved => "mount-removed",
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

/// The version a `snapshot` line's detail names: its first word
/// (`V3-20261124T214900Z changed=… files=…`, docs/format.md#journaltsv).
pub fn snapshot_version(detail: &str) -> Option<&str> {
    detail.split(' ').next().filter(|v| !v.is_empty())
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

/// How much of the journal's end is read to find its last complete line: far more than
/// the NUL blocks a power loss leaves (a few file-system blocks).
const TAIL_WINDOW: u64 = 1 << 20;

/// Cuts the torn tail of the (locked) journal `file`; returns its length after.
fn cut_torn_tail(file: &mut File, path: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata().ctx("cannot stat journal", path)?.len();
    let from = len.saturating_sub(TAIL_WINDOW);
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(from))
        .and_then(|_| file.read_to_end(&mut tail))
        .ctx("cannot read journal", path)?;
    let sound = sound_len(&tail) as u64;
    if sound == tail.len() as u64 {
        return Ok(len);
    }
    if sound == 0 && from > 0 {
        return Err(Error::Damaged(format!(
            "{}: its last {TAIL_WINDOW} bytes hold no complete line",
            crate::error::show(path)
        )));
    }
    let keep = from + sound;
    file.set_len(keep)
        .ctx("cannot cut the torn tail of journal", path)?;
    file.sync_all().ctx("cannot fsync journal", path)?;
    crate::error::warn(&format!(
        "{}: cut a torn tail of {} bytes (left by a crash)",
        crate::error::show(path),
        len - keep
    ));
    Ok(keep)
}

/// The length of `bytes` without its torn tail: up to the end of the last line that ends
/// in a newline and holds no NUL byte (0 when even the header is torn). Records are written
/// whole and never contain NUL, so what follows that line can only be a torn write.
fn sound_len(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    loop {
        let Some(nl) = bytes[..end].iter().rposition(|&b| b == b'\n') else {
            return 0;
        };
        let start = bytes[..nl]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        if nl + 1 == end && !bytes[start..nl].contains(&0) {
            return end;
        }
        end = if nl + 1 == end { start } else { nl + 1 };
    }
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    tool: &'static str,
}

impl Journal {
    /// Opens (creating with its header if missing) the journal at `path` for `tool`. A torn
    /// tail a crash left (a last line without its newline, NUL bytes) is cut back to the
    /// last complete line first, so that the next record is not glued onto it.
    pub fn open(path: &Path, tool: &'static str) -> Result<Journal> {
        // Created with its folder's access (docs/security.md), never the umask's.
        crate::fsutil::create_metadata_file(path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .ctx("cannot open journal", path)?;
        file.lock().ctx("cannot lock journal", path)?;
        // The header too is written under the lock: two writers opening a new journal at
        // once must not both write it, nor append a record before it.
        let repaired = cut_torn_tail(&mut file, path).and_then(|len| match len {
            0 => file
                .write_all(format!("{HEADER}\n").as_bytes())
                .ctx("cannot write journal", path),
            _ => Ok(()),
        });
        let unlocked = file.unlock().ctx("cannot unlock journal", path);
        repaired?;
        unlocked?;
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
        self.append_all_as(tool, [(event, path, detail.to_owned())])
    }

    /// Appends several records on behalf of `tool` (one of them per `(event, path,
    /// detail)`), all stamped now, in one write under one lock: a batch of events costs
    /// the journal what one record does.
    pub fn append_all_as<'a>(
        &mut self,
        tool: &str,
        records: impl IntoIterator<Item = (JournalEvent, &'a [u8], String)>,
    ) -> Result<()> {
        let time = now_rfc3339();
        let mut lines = String::new();
        for (event, path, detail) in records {
            let entry = Entry {
                time: time.clone(),
                tool: tool.to_owned(),
                event,
                path: path.to_vec(),
                detail,
            };
            lines.push_str(&entry.render());
            lines.push('\n');
        }
        if lines.is_empty() {
            return Ok(());
        }
        self.lock_current()?;
        let written = self
            .file
            .write_all(lines.as_bytes())
            .ctx("cannot append to journal", &self.path);
        let unlocked = self.file.unlock().ctx("cannot unlock journal", &self.path);
        written.and(unlocked)
    }

    /// Takes the shared lock on the journal file now at `path`: when a compaction (another
    /// process's, [`crate::format::journal_compact`]) replaced the file this handle has
    /// open, the handle reopens the path first, so no record goes to the replaced file.
    fn lock_current(&mut self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        loop {
            self.file
                .lock_shared()
                .ctx("cannot lock journal", &self.path)?;
            let open = self
                .file
                .metadata()
                .ctx("cannot stat journal", &self.path)?;
            let replaced = match std::fs::metadata(&self.path) {
                Ok(now) => (now.dev(), now.ino()) != (open.dev(), open.ino()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e).ctx("cannot stat journal", &self.path),
            };
            if !replaced {
                return Ok(());
            }
            let _ = self.file.unlock();
            self.file = Journal::open(&self.path, self.tool)?.file;
        }
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

    /// Reads every entry of the journal at `path` as a reader must: a torn tail is ignored
    /// (with a warning), any other unreadable line is an error naming its line number.
    fn read_entries(path: &Path) -> Result<Vec<Entry>> {
        let bytes = std::fs::read(path).ctx("cannot read journal", path)?;
        let sound = sound_len(&bytes);
        if sound < bytes.len() {
            crate::error::warn(&format!(
                "{}: ignoring a torn tail of {} bytes (left by a crash)",
                crate::error::show(path),
                bytes.len() - sound
            ));
        }
        let damaged = |n: usize, why: String| {
            Error::Damaged(format!("{} line {n}: {why}", crate::error::show(path)))
        };
        let mut entries = Vec::new();
        for (i, line) in bytes[..sound].split(|&b| b == b'\n').enumerate() {
            if i == 0 || line.is_empty() {
                continue;
            }
            let text = std::str::from_utf8(line).map_err(|_| damaged(i + 1, "not UTF-8".into()))?;
            entries.push(Entry::parse(text).map_err(|e| damaged(i + 1, e.to_string()))?);
        }
        Ok(entries)
    }

    /// Every line after the header parses, and the file ends with a newline.
    fn assert_all_lines_parse(p: &Path) {
        let bytes = std::fs::read(p).expect("read");
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "journal does not end with a newline"
        );
        let text = String::from_utf8(bytes).expect("utf-8");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        for line in lines {
            Entry::parse(line).unwrap_or_else(|e| panic!("damaged line {line:?}: {e}"));
        }
    }

    fn torn(tail: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("journal.tsv");
        Journal::open(&p, "snap")
            .expect("open")
            .append(JournalEvent::Start, b"", "one")
            .expect("log");
        let mut f = OpenOptions::new().append(true).open(&p).expect("open");
        f.write_all(tail).expect("tear");
        (dir, p)
    }

    #[test]
    fn append_after_trailing_nuls_cuts_them_first() {
        let (_dir, p) = torn(&[0u8; 4096]);
        Journal::open(&p, "snap")
            .expect("open")
            .append(JournalEvent::Stop, b"", "two")
            .expect("log");
        assert_all_lines_parse(&p);
        let entries = read_entries(&p).expect("read");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].detail, "two");
    }

    #[test]
    fn append_after_a_partial_last_line_cuts_it_first() {
        let (_dir, p) = torn(b"2026-11-24T21:49:00.123Z\tsnap\tsna");
        Journal::open(&p, "snap")
            .expect("open")
            .append(JournalEvent::Stop, b"", "two")
            .expect("log");
        assert_all_lines_parse(&p);
        assert_eq!(read_entries(&p).expect("read").len(), 2);
    }

    #[test]
    fn a_complete_line_followed_by_nuls_and_a_partial_line_is_kept() {
        let mut tail = b"2026-11-24T21:49:00.123Z\tsnap\tstop\t\tkept\n".to_vec();
        tail.extend_from_slice(&[0u8; 100]);
        tail.extend_from_slice(b"\n2026-11-24T21:49:00.123Z\tsn\0\0");
        let (_dir, p) = torn(&tail);
        Journal::open(&p, "snap").expect("open");
        assert_all_lines_parse(&p);
        let entries = read_entries(&p).expect("read");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].detail, "kept");
    }

    #[test]
    fn a_journal_torn_inside_its_header_is_started_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("journal.tsv");
        std::fs::write(&p, b"time\ttool\0\0\0").expect("write");
        Journal::open(&p, "snap")
            .expect("open")
            .append(JournalEvent::Start, b"", "one")
            .expect("log");
        assert_all_lines_parse(&p);
        assert_eq!(read_entries(&p).expect("read").len(), 1);
    }

    #[test]
    fn readers_ignore_a_torn_tail() {
        let (_dir, p) = torn(b"2026-11-24T21:49:00.123Z\tsnap\0\0\0");
        let entries = read_entries(&p).expect("a torn tail is not an error");
        assert_eq!(entries.len(), 1);
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
