//! Event lines (docs/format.md#text-files), defined once: what `reverb-watch` prints and what
//! `reverb-snap --changes` and the supervisor read, plus the batch rules of docs/design.md#the-supervisor.
//!
//! Owns: [`EventLine`] (render and parse of one line), [`read_batches`] (the header check
//! and the split of a stream into [`Batch`]es at each `flush`), [`Mark`] with the one rule
//! that combines two marks of a path ([`Mark::merge`], used by every place that does), and
//! [`fold`] (a batch turned into the set of changed paths, [`Changes`]).
//!
//! Invariants:
//! - A line always has exactly five TAB-separated fields: `time`, `event`, `type`, `path`,
//!   `to_path`. Fields are escaped with [`crate::format::tsv`] only, so `parse(render(x)) == x` for
//!   every path, however odd (property-tested below). The `type` field names only the
//!   event types ([`EntryType::EVENT_TYPES`]): [`EventLine::now`] says `other` for every
//!   special file.
//! - Paths are relative to the watched root, `.` is the root itself (a [`RelPath`] once
//!   folded); a parsed path is never
//!   absolute, never empty (except on `flush`/`overflow`, where it must be), and has no
//!   empty, `.` or `..` component. `to_path` is present exactly on `move`.
//! - A malformed line is an [`Error::Invalid`] naming its 1-based line number (the header is
//!   line 1); the batch that holds it is an error as a whole, so no version is built from a
//!   batch that could not be read.
//! - [`fold`] is pure: the same events always give the same [`Changes`].

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::error::Error;
pub use crate::format::entry::EntryType;
use crate::format::relpath::RelPath;
use crate::format::tsv;

/// The header line of an event stream.
pub const HEADER: &str = "time\tevent\ttype\tpath\tto_path";

/// What happened (the `event` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An entry appeared (created, or moved in from outside the tree).
    Create,
    /// A file's content changed.
    Modify,
    /// Metadata changed (mode, owner, times, xattrs, link count).
    Attrib,
    /// An entry disappeared (deleted, or moved out of the tree).
    Delete,
    /// An entry was renamed within the tree: `path` → `to_path`.
    Move,
    /// The kernel queue overflowed: events were lost, the reader must rescan.
    Overflow,
    /// The filesystem holding `path` was unmounted.
    Unmount,
    /// End of a batch: the changes have settled.
    Flush,
}

impl EventKind {
    /// Every kind, in the documented order (docs/format.md#text-files).
    pub const ALL: [EventKind; 8] = [
        EventKind::Create,
        EventKind::Modify,
        EventKind::Attrib,
        EventKind::Delete,
        EventKind::Move,
        EventKind::Overflow,
        EventKind::Unmount,
        EventKind::Flush,
    ];

    /// The field text (lowercase).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Modify => "modify",
            EventKind::Attrib => "attrib",
            EventKind::Delete => "delete",
            EventKind::Move => "move",
            EventKind::Overflow => "overflow",
            EventKind::Unmount => "unmount",
            EventKind::Flush => "flush",
        }
    }

    /// Reads the field text; `None` for anything else.
    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Kinds that carry no path (`flush`, `overflow`).
    pub fn is_pathless(self) -> bool {
        matches!(self, EventKind::Flush | EventKind::Overflow)
    }
}

/// One event line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    pub kind: EventKind,
    pub etype: Option<EntryType>,
    /// Relative to the watched root; `.` is the root; empty on `flush` and `overflow`.
    pub path: PathBuf,
    /// Set exactly on `move`.
    pub to_path: Option<PathBuf>,
}

impl EventLine {
    /// A line stamped with the current time.
    pub fn now(
        kind: EventKind,
        etype: Option<EntryType>,
        path: PathBuf,
        to_path: Option<PathBuf>,
    ) -> EventLine {
        EventLine {
            time: crate::format::time::now_rfc3339(),
            kind,
            etype: etype.map(EntryType::for_event),
            path,
            to_path,
        }
    }

    /// A pathless line (`flush`, `overflow`) stamped with the current time.
    pub fn marker(kind: EventKind) -> EventLine {
        EventLine::now(kind, None, PathBuf::new(), None)
    }

    /// The line's text, without the newline.
    pub fn render(&self) -> String {
        let path = tsv::escape_os(self.path.as_os_str());
        let to = self
            .to_path
            .as_deref()
            .map(|p| tsv::escape_os(p.as_os_str()))
            .unwrap_or_default();
        tsv::join(&[
            &tsv::escape(&self.time),
            self.kind.as_str(),
            self.etype.map(EntryType::as_str).unwrap_or(""),
            &path,
            &to,
        ])
    }

    /// Parses one line (without its newline); `lineno` (1-based) is named in errors.
    pub fn parse(line: &str, lineno: usize) -> Result<EventLine, Error> {
        let bad = |what: String| Error::Invalid(format!("event line {lineno}: {what}"));
        let fields = tsv::split(line);
        if fields.len() != 5 {
            return Err(bad(format!(
                "expected 5 TAB-separated fields, found {}",
                fields.len()
            )));
        }
        let time = tsv::unescape_bytes(fields[0])
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|t| crate::format::time::parse_rfc3339(t).is_some())
            .ok_or_else(|| bad(format!("bad time `{}`", fields[0])))?;
        let kind = EventKind::parse(fields[1])
            .ok_or_else(|| bad(format!("unknown event `{}`", tsv::escape(fields[1]))))?;
        let etype = match fields[2] {
            "" => None,
            t => Some(
                EntryType::parse(t)
                    .ok_or_else(|| bad(format!("unknown type `{}`", tsv::escape(t))))?,
            ),
        };
        let path = tsv::unescape_os(fields[3])
            .map(PathBuf::from)
            .map_err(|e| bad(format!("path: {e}")))?;
        let to_raw = tsv::unescape_os(fields[4]).map_err(|e| bad(format!("to_path: {e}")))?;
        if kind.is_pathless() {
            if !path.as_os_str().is_empty() || !to_raw.is_empty() {
                return Err(bad(format!("`{}` takes no path", kind.as_str())));
            }
            if etype.is_some() {
                return Err(bad(format!("`{}` takes no type", kind.as_str())));
            }
        } else {
            RelPath::from_event_field(&path)
                .map_err(|e| bad(format!("path `{}`: {e}", fields[3])))?;
        }
        let to_path = if kind == EventKind::Move {
            if to_raw.is_empty() {
                return Err(bad("`move` needs a to_path".into()));
            }
            let to = PathBuf::from(to_raw);
            RelPath::from_event_field(&to)
                .map_err(|e| bad(format!("to_path `{}`: {e}", fields[4])))?;
            Some(to)
        } else {
            if !to_raw.is_empty() {
                return Err(bad(format!(
                    "to_path is only for `move`, not `{}`",
                    kind.as_str()
                )));
            }
            None
        };
        Ok(EventLine {
            time,
            kind,
            etype,
            path,
            to_path,
        })
    }
}

/// Joins a directory path in event-field form (`.` for the root) and a name.
pub fn join_rel(dir: &Path, name: &OsStr) -> PathBuf {
    RelPath::from_internal(dir)
        .join(name)
        .event_field()
        .to_path_buf()
}

/// One batch: the events between two `flush` lines (or before EOF).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub events: Vec<EventLine>,
}

/// Reads an event stream: the header, then one [`Batch`] per `flush`, plus a final batch at
/// EOF when it holds events. Empty batches (a `flush` with nothing before it) are skipped.
/// A malformed line makes its batch an `Err` naming the line; reading resumes after the
/// batch's `flush`. An I/O error ends the stream after being returned.
pub struct BatchReader<R> {
    reader: R,
    lineno: usize,
    header_checked: bool,
    done: bool,
}

/// Reads `r` as an event stream (see [`BatchReader`]).
pub fn read_batches<R: BufRead>(r: R) -> BatchReader<R> {
    BatchReader {
        reader: r,
        lineno: 0,
        header_checked: false,
        done: false,
    }
}

impl<R: BufRead> BatchReader<R> {
    /// The next line without its newline, `Ok(None)` at EOF.
    fn next_line(&mut self) -> Result<Option<String>, Error> {
        let mut buf = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::Io {
                what: "cannot read event lines from",
                path: PathBuf::from("-"),
                source: e,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.lineno += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| Error::Invalid(format!("event line {}: not valid UTF-8", self.lineno)))
    }
}

impl<R: BufRead> Iterator for BatchReader<R> {
    type Item = Result<Batch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.header_checked {
            self.header_checked = true;
            match self.next_line() {
                Ok(Some(h)) if h == HEADER => {}
                Ok(Some(h)) => {
                    self.done = true;
                    return Some(Err(Error::Invalid(format!(
                        "event line 1: expected the header `{}`, found `{}`",
                        tsv::escape(HEADER),
                        tsv::escape(&h)
                    ))));
                }
                Ok(None) => {
                    self.done = true;
                    return Some(Err(Error::Invalid(
                        "event line 1: missing header (empty input)".into(),
                    )));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let mut events = Vec::new();
        let mut first_error: Option<Error> = None;
        loop {
            let line = match self.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => {
                    self.done = true;
                    break;
                }
                Err(e @ Error::Io { .. }) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            match EventLine::parse(&line, self.lineno) {
                Ok(ev) if ev.kind == EventKind::Flush => {
                    if events.is_empty() && first_error.is_none() {
                        continue;
                    }
                    break;
                }
                Ok(ev) => events.push(ev),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Some(Err(e)),
            None if events.is_empty() => None,
            None => Some(Ok(Batch { events })),
        }
    }
}

/// How a path changed: what the builder knows of it before looking at the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Content (or existence) changed (create, modify, move-to): the entry is compared with
    /// the current version and copied only when it differs; a directory is diffed in full
    /// below it.
    Content,
    /// Only metadata changed.
    Attrib,
    /// Gone (deleted, moved away); if it exists again the builder compares it in full.
    Delete,
}

impl Mark {
    /// The one rule combining two marks of one path (docs/design.md#the-supervisor), `earlier`
    /// seen before `later`: a delete wins over whatever came before it; anything after a
    /// delete means the path came back, so it is content; an attrib of a path whose content
    /// changed is content; otherwise the later mark stands.
    pub fn merge(earlier: Mark, later: Mark) -> Mark {
        match (earlier, later) {
            (_, Mark::Delete) => Mark::Delete,
            (Mark::Delete, _) => Mark::Content,
            (Mark::Content, Mark::Attrib) => Mark::Content,
            (_, later) => later,
        }
    }

    /// Records `later` for `path` in `marks`, merged with what is there already.
    pub fn add<K: Ord>(marks: &mut BTreeMap<K, Mark>, path: K, later: Mark) {
        let merged = match marks.get(&path) {
            Some(&earlier) => Mark::merge(earlier, later),
            None => later,
        };
        marks.insert(path, merged);
    }
}

/// A batch folded into changed paths (docs/design.md#the-supervisor batch rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Events were lost (`overflow`): the builder must rescan.
    pub rescan: bool,
    /// A watched filesystem was unmounted.
    pub unmounted: bool,
    pub paths: BTreeMap<RelPath, Mark>,
}

/// Folds events into [`Changes`] with [`Mark::merge`]: create/modify → Content; attrib →
/// Attrib; delete → Delete; move a→b → a Delete, b Content; overflow → rescan; unmount →
/// unmounted; flush ignored.
pub fn fold(events: &[EventLine]) -> Changes {
    let mut c = Changes::default();
    for e in events {
        let path = || RelPath::from_internal(&e.path);
        match e.kind {
            EventKind::Create | EventKind::Modify => Mark::add(&mut c.paths, path(), Mark::Content),
            EventKind::Attrib => Mark::add(&mut c.paths, path(), Mark::Attrib),
            EventKind::Delete => Mark::add(&mut c.paths, path(), Mark::Delete),
            EventKind::Move => {
                Mark::add(&mut c.paths, path(), Mark::Delete);
                if let Some(to) = &e.to_path {
                    Mark::add(&mut c.paths, RelPath::from_internal(to), Mark::Content);
                }
            }
            EventKind::Overflow => c.rescan = true,
            EventKind::Unmount => c.unmounted = true,
            EventKind::Flush => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    const T: &str = "2026-11-24T21:49:00.123Z";

    fn ev(kind: EventKind, path: &str) -> EventLine {
        EventLine {
            time: T.into(),
            kind,
            etype: None,
            path: path.into(),
            to_path: None,
        }
    }

    fn mv(a: &str, b: &str) -> EventLine {
        EventLine {
            to_path: Some(b.into()),
            ..ev(EventKind::Move, a)
        }
    }

    fn marks(events: &[EventLine]) -> Vec<(String, Mark)> {
        fold(events)
            .paths
            .into_iter()
            .map(|(p, m)| (p.event_field().to_string_lossy().into_owned(), m))
            .collect()
    }

    use EventKind::*;
    use Mark as M;

    #[test]
    fn merge_table() {
        // (earlier, later, merged) for every pair.
        let table = [
            (M::Content, M::Content, M::Content),
            (M::Content, M::Attrib, M::Content),
            (M::Content, M::Delete, M::Delete),
            (M::Attrib, M::Content, M::Content),
            (M::Attrib, M::Attrib, M::Attrib),
            (M::Attrib, M::Delete, M::Delete),
            (M::Delete, M::Content, M::Content),
            (M::Delete, M::Attrib, M::Content),
            (M::Delete, M::Delete, M::Delete),
        ];
        for (earlier, later, want) in table {
            assert_eq!(
                Mark::merge(earlier, later),
                want,
                "{earlier:?} then {later:?}"
            );
        }
    }

    #[test]
    fn fold_create_and_modify_are_content() {
        assert_eq!(marks(&[ev(Create, "a")]), [("a".into(), M::Content)]);
        assert_eq!(marks(&[ev(Modify, "a")]), [("a".into(), M::Content)]);
    }

    #[test]
    fn fold_attrib_alone_is_attrib() {
        assert_eq!(marks(&[ev(Attrib, "a")]), [("a".into(), M::Attrib)]);
        assert_eq!(
            marks(&[ev(Attrib, "a"), ev(Attrib, "a")]),
            [("a".into(), M::Attrib)]
        );
    }

    #[test]
    fn fold_attrib_of_modified_path_is_modify() {
        assert_eq!(
            marks(&[ev(Modify, "a"), ev(Attrib, "a")]),
            [("a".into(), M::Content)]
        );
        assert_eq!(
            marks(&[ev(Attrib, "a"), ev(Modify, "a")]),
            [("a".into(), M::Content)]
        );
    }

    #[test]
    fn fold_delete_wins_over_earlier_modify_and_attrib() {
        assert_eq!(
            marks(&[ev(Modify, "a"), ev(Delete, "a")]),
            [("a".into(), M::Delete)]
        );
        assert_eq!(
            marks(&[ev(Attrib, "a"), ev(Delete, "a")]),
            [("a".into(), M::Delete)]
        );
        assert_eq!(
            marks(&[ev(Create, "a"), ev(Modify, "a"), ev(Delete, "a")]),
            [("a".into(), M::Delete)]
        );
    }

    #[test]
    fn fold_anything_after_delete_is_content() {
        for k in [Create, Modify, Attrib] {
            assert_eq!(
                marks(&[ev(Delete, "a"), ev(k, "a")]),
                [("a".into(), M::Content)],
                "{k:?}"
            );
        }
    }

    #[test]
    fn fold_move_is_delete_and_create() {
        assert_eq!(
            marks(&[mv("a", "b")]),
            [("a".into(), M::Delete), ("b".into(), M::Content)]
        );
        // Moved back: the old path is content again.
        assert_eq!(
            marks(&[mv("a", "b"), mv("b", "a")]),
            [("a".into(), M::Content), ("b".into(), M::Delete)]
        );
        // A modify of the source before the move is overruled by the move's delete.
        assert_eq!(
            marks(&[ev(Modify, "a"), mv("a", "b")]),
            [("a".into(), M::Delete), ("b".into(), M::Content)]
        );
    }

    #[test]
    fn fold_markers() {
        let c = fold(&[ev(Create, "a"), EventLine::marker(Overflow)]);
        assert!(c.rescan && !c.unmounted);
        let c = fold(&[ev(Unmount, ".")]);
        assert!(c.unmounted && !c.rescan);
        assert!(c.paths.is_empty(), "unmount marks no path");
        let c = fold(&[EventLine::marker(Flush)]);
        assert_eq!(c, Changes::default());
    }

    #[test]
    fn fold_root_attrib() {
        assert_eq!(marks(&[ev(Attrib, ".")]), [(".".into(), M::Attrib)]);
    }

    #[test]
    fn fold_keeps_distinct_paths_apart() {
        assert_eq!(
            marks(&[ev(Delete, "a"), ev(Modify, "a/b"), ev(Attrib, "c")]),
            [
                ("a".into(), M::Delete),
                ("a/b".into(), M::Content),
                ("c".into(), M::Attrib)
            ]
        );
    }

    #[test]
    fn render_examples() {
        let mut e = ev(Create, "dir/a\tb");
        e.etype = Some(EntryType::File);
        assert_eq!(e.render(), format!("{T}\tcreate\tfile\tdir/a\\tb\t"));
        assert_eq!(
            mv("a", "b").render(),
            format!("{T}\tmove\t\ta\tb"),
            "empty type field"
        );
        let mut f = EventLine::marker(Flush);
        f.time = T.into();
        assert_eq!(f.render(), format!("{T}\tflush\t\t\t"));
        assert_eq!(f.render().split('\t').count(), 5);
    }

    fn err(line: &str) -> String {
        EventLine::parse(line, 7).expect_err(line).to_string()
    }

    #[test]
    fn parse_rejects_malformed_lines_naming_the_line() {
        let cases = [
            (format!("{T}\tcreate\tfile\ta"), "5 TAB-separated fields"),
            (format!("{T}\tcreate\tfile\ta\t\t"), "found 6"),
            (format!("{T}\tmake\tfile\ta\t"), "unknown event"),
            (format!("{T}\tcreate\tblob\ta\t"), "unknown type"),
            (format!("{T}\tcreate\tfile\ta\\q\t"), "unknown escape"),
            (format!("{T}\tcreate\tfile\t/etc/passwd\t"), "absolute"),
            (format!("{T}\tcreate\tfile\ta/../b\t"), "`..`"),
            (format!("{T}\tcreate\tfile\t..\t"), "`..`"),
            (format!("{T}\tcreate\tfile\ta//b\t"), "empty component"),
            (format!("{T}\tcreate\tfile\ta/\t"), "empty component"),
            (format!("{T}\tcreate\tfile\t./a\t"), "`.` component"),
            (format!("{T}\tcreate\tfile\t\t"), "empty"),
            (format!("{T}\tmove\tfile\ta\t"), "needs a to_path"),
            (format!("{T}\tmove\tfile\ta\t../b"), "`..`"),
            (format!("{T}\tmodify\tfile\ta\tb"), "only for `move`"),
            (format!("{T}\tflush\t\ta\t"), "takes no path"),
            (format!("{T}\toverflow\t\t\tb"), "takes no path"),
            (format!("{T}\tflush\tfile\t\t"), "takes no type"),
            ("yesterday\tflush\t\t\t".to_string(), "bad time"),
        ];
        for (line, want) in cases {
            let msg = err(&line);
            assert!(msg.contains("line 7"), "{line:?}: {msg}");
            assert!(msg.contains(want), "{line:?}: {msg} (wanted {want})");
        }
    }

    #[test]
    fn parse_accepts_the_root() {
        let e = EventLine::parse(&format!("{T}\tattrib\tdir\t.\t"), 2).expect("root");
        assert_eq!(e.path, Path::new("."));
        assert_eq!(e.etype, Some(EntryType::Dir));
    }

    fn stream(lines: &[String]) -> Vec<Result<Batch, Error>> {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        read_batches(text.as_bytes()).collect()
    }

    #[test]
    fn batches_split_at_flush() {
        let c = |p: &str| format!("{T}\tcreate\tfile\t{p}\t");
        let flush = format!("{T}\tflush\t\t\t");
        let got = stream(&[
            HEADER.into(),
            flush.clone(),
            c("a"),
            c("b"),
            flush.clone(),
            c("c"),
        ]);
        assert_eq!(got.len(), 2);
        let b0 = got[0].as_ref().expect("batch 0");
        assert_eq!(b0.events.len(), 2);
        let b1 = got[1].as_ref().expect("final batch at EOF");
        assert_eq!(b1.events[0].path, Path::new("c"));
        // Nothing after the last flush: no extra batch.
        assert_eq!(stream(&[HEADER.into(), c("a"), flush]).len(), 1);
        assert!(stream(&[HEADER.into()]).is_empty());
    }

    #[test]
    fn bad_line_fails_its_batch_only() {
        let c = |p: &str| format!("{T}\tcreate\tfile\t{p}\t");
        let flush = format!("{T}\tflush\t\t\t");
        let got = stream(&[
            HEADER.into(),
            c("a"),
            "garbage".into(),
            c("b"),
            flush.clone(),
            c("c"),
            flush,
        ]);
        assert_eq!(got.len(), 2);
        let e = got[0].as_ref().expect_err("bad batch").to_string();
        assert!(e.contains("line 3"), "{e}");
        assert_eq!(got[1].as_ref().expect("good batch").events.len(), 1);
    }

    #[test]
    fn header_is_required() {
        let got = stream(&["time\tevent".into()]);
        let e = got[0].as_ref().expect_err("bad header").to_string();
        assert!(e.contains("line 1"), "{e}");
        let got: Vec<_> = read_batches(&b""[..]).collect();
        let e = got[0].as_ref().expect_err("empty").to_string();
        assert!(e.contains("line 1") && e.contains("missing header"), "{e}");
        let got: Vec<_> = read_batches(&b"\xff\n"[..]).collect();
        assert!(got[0].is_err());
    }

    fn component() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>().prop_filter("no slash", |b| *b != b'/'), 1..12)
            .prop_filter("not . or ..", |c| c != b"." && c != b"..")
    }

    fn rel_path() -> impl Strategy<Value = PathBuf> {
        prop_oneof![
            1 => Just(PathBuf::from(".")),
            9 => proptest::collection::vec(component(), 1..4)
                .prop_map(|cs| PathBuf::from(OsString::from_vec(cs.join(&b'/')))),
        ]
    }

    fn event_line() -> impl Strategy<Value = EventLine> {
        let kind = proptest::sample::select(EventKind::ALL.to_vec());
        let etype = proptest::option::of(proptest::sample::select(EntryType::EVENT_TYPES.to_vec()));
        (kind, etype, rel_path(), rel_path()).prop_map(|(kind, etype, path, to)| {
            if kind.is_pathless() {
                EventLine {
                    time: T.into(),
                    kind,
                    etype: None,
                    path: PathBuf::new(),
                    to_path: None,
                }
            } else {
                EventLine {
                    time: T.into(),
                    kind,
                    etype,
                    path,
                    to_path: (kind == EventKind::Move).then_some(to),
                }
            }
        })
    }

    proptest! {
        #[test]
        fn parse_render_round_trip(e in event_line()) {
            let line = e.render();
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(line.split('\t').count(), 5);
            prop_assert_eq!(EventLine::parse(&line, 2).expect("round trip"), e);
        }

        #[test]
        fn parse_never_panics(s in "[a-z\\t\\\\./x0-9:TZ-]{0,60}") {
            let _ = EventLine::parse(&s, 1);
        }

        #[test]
        fn parse_never_panics_on_any_text(s in ".{0,60}") {
            let _ = EventLine::parse(&s, 1);
        }

        #[test]
        fn batch_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut input = format!("{HEADER}\n").into_bytes();
            input.extend(bytes);
            for _ in read_batches(&input[..]) {}
        }
    }
}
