//! Watching the mount table (docs/cli.md `reverb-mountwatch`, §8): waiting for it to change and
//! telling, per watched path, whether the filesystem under the path is still the one it had
//! when the watch began.
//!
//! This module owns the event source and the per-path state machine; the binary only
//! prints what [`PathWatch`] returns.
//!
//! # Theory of operation
//!
//! The kernel marks an open `/proc/self/mountinfo` with `POLLPRI | POLLERR` whenever the
//! mount namespace changes (mount, unmount, lazy unmount, move, bind, remount, propagation)
//! — `findmnt --poll` works the same way. `poll(2)` itself acknowledges the event, so no
//! re-read is needed, and a change that happens while we are busy re-gathering is still
//! pending at the next `poll`: nothing is lost, at worst a change is reported together with
//! a later one. [`MountTable`] is opened *before* the first gathering so a change between the
//! two is not missed. There is no busy loop and no timed re-reading of the table.
//!
//! Per path ([`PathWatch`]) the identity gathered at start is the **record**. On every
//! change each path is gathered again and compared with its record through
//! [`identity::matches`]; for a record that has nothing but a device name
//! ([`identity::only_device`]: tmpfs, overlay) the filesystem's device number and the
//! kernel's per-superblock UUID (random for tmpfs, not recorded in job.toml) must also be
//! the same, since `tmpfs` would otherwise match any other tmpfs. States:
//!
//! - `present` — at start (the record), or later when the identity still matches but
//!   changed (moved mountpoint, new device name after a re-plug);
//! - `lost` — the path is gone or no longer matches (unmounted, lazily unmounted, moved
//!   away, something else mounted or bind-mounted over it);
//! - `restored` — it matches again; `matched_by` tells which field matched.
//!
//! A remount (`mount -o remount,ro`) changes no identity field, so it prints nothing. A path
//! missing at start is `lost` with no record; the first identity it is seen with becomes its
//! record (a `present` line).
//!
//! Per path given with `--below` ([`Submounts`]), the filesystems mounted strictly below it
//! (a job's source: what `one_file_system` is about): `mounted` for each one at start and
//! for each one mounted later, `unmounted` when one goes; the record's `mountpoint` is the
//! mountpoint below the path, its `identity` that filesystem's type and device.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::capture::identity::{self, Gathered, MatchedBy};
use crate::error::{Error, IoContext, Result};
use crate::format::fs_identity::FsIdentity;
use crate::format::time::{parse_rfc3339, rfc3339_millis};
use crate::format::tsv;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The header of `reverb-mountwatch`'s TSV output.
pub const HEADER: &str = "time\tpath\tstate\tmatched_by\tidentity\tmountpoint";

/// An open `/proc/self/mountinfo`, pollable for mount-table changes.
#[derive(Debug)]
pub struct MountTable {
    file: File,
}

/// What ended a [`MountTable::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The mount table changed.
    Changed,
    /// The timeout passed.
    TimedOut,
    /// The extra `wake` fd became readable (a signal's self-pipe).
    Woken,
}

impl MountTable {
    /// Opens the table. Changes after this call are reported by [`MountTable::wait`].
    pub fn open() -> Result<MountTable> {
        let file = File::open(MOUNTINFO).ctx("cannot open", Path::new(MOUNTINFO))?;
        Ok(MountTable { file })
    }

    /// Blocks until the mount table changes, `timeout` passes (`None`: forever), or `wake`
    /// becomes readable. Interrupted system calls are retried with the remaining time.
    pub fn wait(&self, timeout: Option<Duration>, wake: Option<BorrowedFd<'_>>) -> Result<Wake> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let pt = match remaining {
                None => PollTimeout::NONE,
                Some(r) => PollTimeout::try_from(r.min(Duration::from_millis(i32::MAX as u64)))
                    .unwrap_or(PollTimeout::MAX),
            };
            let mut fds = vec![PollFd::new(
                self.file.as_fd(),
                PollFlags::POLLPRI | PollFlags::POLLERR,
            )];
            if let Some(w) = wake {
                fds.push(PollFd::new(w, PollFlags::POLLIN));
            }
            match poll(&mut fds, pt) {
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).ctx("cannot poll", Path::new(MOUNTINFO)),
                Ok(0) => return Ok(Wake::TimedOut),
                Ok(_) => {
                    let table = fds[0].revents().unwrap_or(PollFlags::empty());
                    if table.intersects(PollFlags::POLLPRI | PollFlags::POLLERR) {
                        return Ok(Wake::Changed);
                    }
                    if fds.len() > 1 && fds[1].revents().is_some_and(|r| !r.is_empty()) {
                        return Ok(Wake::Woken);
                    }
                }
            }
            if remaining.is_some_and(|r| r.is_zero()) {
                return Ok(Wake::TimedOut);
            }
        }
    }
}

/// How often [`wait_for_mount_change`] looks at its `stop` flag: the mount table itself is
/// event-driven, only the flag is checked this often.
pub const STOP_CHECK: Duration = Duration::from_millis(250);

/// Blocks until the mount table changes (`Ok(true)`), or `timeout` passes or `stop` is set
/// (`Ok(false)`). The supervisor uses it to wait for a lost source or vault to come back.
///
/// It opens the table on entry, so a change that happened before the call is not seen:
/// check, then wait, then check again — or hold a [`MountTable`] opened before the first
/// check to close that gap.
pub fn wait_for_mount_change(timeout: Option<Duration>, stop: &AtomicBool) -> Result<bool> {
    let table = MountTable::open()?;
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let slice = match deadline {
            None => STOP_CHECK,
            Some(d) => {
                let r = d.saturating_duration_since(Instant::now());
                if r.is_zero() {
                    return Ok(false);
                }
                r.min(STOP_CHECK)
            }
        };
        if table.wait(Some(slice), None)? == Wake::Changed {
            return Ok(true);
        }
    }
}

/// A path's state in `reverb-mountwatch` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Lost,
    Restored,
    /// A filesystem is mounted below a `--below` path (at start, or since).
    Mounted,
    /// A filesystem mounted below a `--below` path is gone.
    Unmounted,
}

impl State {
    /// `present`, `lost`, `restored`, `mounted`, `unmounted`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Present => "present",
            State::Lost => "lost",
            State::Restored => "restored",
            State::Mounted => "mounted",
            State::Unmounted => "unmounted",
        }
    }

    /// Reads [`State::as_str`]'s text back; `None` for anything else.
    pub fn parse(text: &str) -> Option<State> {
        [
            State::Present,
            State::Lost,
            State::Restored,
            State::Mounted,
            State::Unmounted,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One output record: a path's state after a change (or at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: SystemTime,
    /// The path as given on the command line.
    pub path: PathBuf,
    pub state: State,
    /// Which recorded field matched (present, restored); `None` when lost.
    pub matched_by: Option<MatchedBy>,
    /// The identity found now (`None` when the path does not exist).
    pub identity: Option<FsIdentity>,
    /// The mountpoint found now, byte-exact.
    pub mountpoint: Option<OsString>,
}

/// The keys of the compact identity rendering, in their fixed order, with their fields.
type Field = fn(&mut FsIdentity) -> &mut Option<String>;
const COMPACT_KEYS: [(&str, Field); 6] = [
    ("uuid", |i| &mut i.uuid),
    ("partuuid", |i| &mut i.partuuid),
    ("label", |i| &mut i.label),
    ("partlabel", |i| &mut i.partlabel),
    ("device", |i| &mut i.device),
    ("fstype", |i| &mut i.fstype),
];

/// Escapes one value of the compact identity rendering: `%`, `,`, `=` → `%25`, `%2C`, `%3D`.
fn compact_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '%' => s.push_str("%25"),
            ',' => s.push_str("%2C"),
            '=' => s.push_str("%3D"),
            c => s.push(c),
        }
    }
    s
}

/// The inverse of [`compact_value`]; `None` for a `%` not followed by one of the three codes.
fn uncompact_value(v: &str) -> Option<String> {
    let mut s = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(at) = rest.find('%') {
        s.push_str(&rest[..at]);
        let code = rest.get(at..at + 3)?;
        s.push(match code {
            "%25" => '%',
            "%2C" => ',',
            "%3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    s.push_str(rest);
    Some(s)
}

/// The compact `identity` field: `key=value` pairs joined by `,`, in the fixed order
/// `uuid, partuuid, label, partlabel, device, fstype`, absent keys left out (the mountpoint
/// has its own column). In values `%`, `,` and `=` are written `%25`, `%2C`, `%3D`; the
/// whole field is then TSV-escaped like every field.
pub fn render_identity(id: &FsIdentity) -> String {
    let mut id = id.clone();
    COMPACT_KEYS
        .iter()
        .filter_map(|(k, field)| {
            field(&mut id)
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|v| format!("{k}={}", compact_value(v)))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`render_identity`] (the field already TSV-unescaped): every key known,
/// none twice, every value non-empty. The mountpoint is not part of it.
pub fn parse_identity(text: &str) -> std::result::Result<FsIdentity, String> {
    let mut id = FsIdentity::default();
    if text.is_empty() {
        return Ok(id);
    }
    for pair in text.split(',') {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))?;
        let (_, field) = COMPACT_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .ok_or_else(|| format!("unknown identity key `{key}`"))?;
        let value = uncompact_value(value)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("bad value for `{key}`"))?;
        let slot = field(&mut id);
        if slot.is_some() {
            return Err(format!("identity key `{key}` given twice"));
        }
        *slot = Some(value);
    }
    Ok(id)
}

impl Record {
    /// The TSV line (no newline), fields escaped with [`tsv`].
    pub fn tsv_line(&self) -> String {
        let time = rfc3339_millis(self.time);
        let path = tsv::escape_os(self.path.as_os_str());
        let matched = self.matched_by.map(MatchedBy::as_str).unwrap_or("");
        let identity = tsv::escape(
            &self
                .identity
                .as_ref()
                .map(render_identity)
                .unwrap_or_default(),
        );
        let mountpoint = self
            .mountpoint
            .as_deref()
            .map(tsv::escape_os)
            .unwrap_or_default();
        tsv::join(&[
            &time,
            &path,
            self.state.as_str(),
            matched,
            &identity,
            &mountpoint,
        ])
    }

    /// Parses [`Record::tsv_line`]'s text back (the header is not a record). The identity's
    /// mountpoint, which the identity field leaves to its own column, is taken from that
    /// column (lossily, as gathering stores it).
    pub fn parse(line: &str) -> Result<Record> {
        let bad =
            |what: String| Error::Invalid(format!("mount record `{}`: {what}", tsv::escape(line)));
        let fields = tsv::split(line);
        let [time, path, state, matched_by, identity, mountpoint] = fields[..] else {
            return Err(bad(format!(
                "expected 6 TAB-separated fields, found {}",
                fields.len()
            )));
        };
        let time = parse_rfc3339(time).ok_or_else(|| bad(format!("bad time `{time}`")))?;
        let path = tsv::unescape_os(path).map_err(|e| bad(format!("path: {e}")))?;
        let state = State::parse(state).ok_or_else(|| bad(format!("unknown state `{state}`")))?;
        let matched_by = match matched_by {
            "" => None,
            m => Some(MatchedBy::parse(m).ok_or_else(|| bad(format!("unknown matched_by `{m}`")))?),
        };
        let mountpoint = match mountpoint {
            "" => None,
            m => Some(tsv::unescape_os(m).map_err(|e| bad(format!("mountpoint: {e}")))?),
        };
        let identity = match identity {
            "" => None,
            text => {
                let text = tsv::unescape_bytes(text)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| bad("identity: not escaped UTF-8 text".into()))?;
                let mut id = parse_identity(&text).map_err(|e| bad(format!("identity: {e}")))?;
                id.mountpoint = mountpoint
                    .as_ref()
                    .map(|m| m.to_string_lossy().into_owned());
                Some(id)
            }
        };
        Ok(Record {
            time,
            path: PathBuf::from(path),
            state,
            matched_by,
            identity,
            mountpoint,
        })
    }

    /// The JSON line (no newline): `{"type":"mount", "time", "path", "state",
    /// "matched_by", "identity": {…job.toml's fields…}, "mountpoint"}`. Paths that are not
    /// UTF-8 are given TSV-escaped.
    pub fn json_line(&self) -> String {
        let text = |p: &std::ffi::OsStr| {
            p.to_str()
                .map(str::to_owned)
                .unwrap_or_else(|| tsv::escape_os(p))
        };
        serde_json::json!({
            "type": "mount",
            "time": rfc3339_millis(self.time),
            "path": text(self.path.as_os_str()),
            "state": self.state.as_str(),
            "matched_by": self.matched_by.map(MatchedBy::as_str),
            "identity": self.identity,
            "mountpoint": self.mountpoint.as_deref().map(text),
        })
        .to_string()
    }
}

#[derive(Debug)]
struct Watched {
    path: PathBuf,
    record: Option<Gathered>,
    last: Option<Gathered>,
    lost: bool,
}

/// Does `cur` still match the start `record`? [`identity::matches`], plus the same device
/// number and kernel UUID (when known) when the record is weak (device name only).
pub fn still_matches(record: &Gathered, cur: &Gathered) -> Option<MatchedBy> {
    let m = identity::matches(&record.identity, &cur.identity)?;
    if identity::only_device(&record.identity)
        && (record.devno != cur.devno
            || (record.kernel_uuid.is_some() && record.kernel_uuid != cur.kernel_uuid))
    {
        return None;
    }
    Some(m)
}

/// The per-path state machine of `reverb-mountwatch` (see the module docs).
#[derive(Debug)]
pub struct PathWatch {
    paths: Vec<Watched>,
}

impl PathWatch {
    /// Gathers each path's record and returns the start lines (`present` or `lost`).
    /// Open the [`MountTable`] before calling this.
    pub fn start(paths: &[PathBuf]) -> (PathWatch, Vec<Record>) {
        let mut watch = PathWatch { paths: Vec::new() };
        let mut out = Vec::new();
        let now = SystemTime::now();
        for p in paths {
            let g = gather_opt(p);
            out.push(match &g {
                // At start the record matches itself on its first known field.
                Some(g) => {
                    let by = identity::matches(&g.identity, &g.identity);
                    record(now, p, State::Present, by, g, &g.identity)
                }
                None => lost_missing(now, p),
            });
            watch.paths.push(Watched {
                path: p.clone(),
                lost: g.is_none(),
                record: g.clone(),
                last: g,
            });
        }
        (watch, out)
    }

    /// Re-gathers every path after a mount-table change; returns a line for each path
    /// whose state (or, while present, identity) changed.
    pub fn recheck(&mut self) -> Vec<Record> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for w in &mut self.paths {
            let cur = gather_opt(&w.path);
            let Some(rec) = &w.record else {
                // Missing at start: the first identity seen becomes the record.
                if let Some(c) = cur {
                    let by = identity::matches(&c.identity, &c.identity);
                    out.push(record(now, &w.path, State::Present, by, &c, &c.identity));
                    w.record = Some(c.clone());
                    w.last = Some(c);
                    w.lost = false;
                }
                continue;
            };
            let matched = cur.as_ref().and_then(|c| still_matches(rec, c));
            match (w.lost, matched, &cur) {
                (false, None, _) => {
                    out.push(match &cur {
                        Some(c) => record(now, &w.path, State::Lost, None, c, &c.identity),
                        None => lost_missing(now, &w.path),
                    });
                    w.lost = true;
                }
                (true, Some(by), Some(c)) => {
                    out.push(record(
                        now,
                        &w.path,
                        State::Restored,
                        Some(by),
                        c,
                        &c.identity,
                    ));
                    w.lost = false;
                }
                (false, Some(by), Some(c)) => {
                    let changed = w
                        .last
                        .as_ref()
                        .is_none_or(|l| l.identity != c.identity || l.mountpoint != c.mountpoint);
                    if changed {
                        out.push(record(
                            now,
                            &w.path,
                            State::Present,
                            Some(by),
                            c,
                            &c.identity,
                        ));
                    }
                }
                _ => {}
            }
            w.last = cur;
        }
        out
    }
}

/// The filesystems mounted strictly below `path` (resolved), by mountpoint, with their
/// type and device (the mountpoint too, lossily): what `one_file_system` leaves out. Empty
/// when `path` cannot be resolved or the mount table cannot be read.
pub fn mounts_below(path: &Path) -> BTreeMap<OsString, FsIdentity> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = BTreeMap::new();
    let (Ok(real), Ok(text)) = (std::fs::canonicalize(path), std::fs::read(MOUNTINFO)) else {
        return out;
    };
    let mut prefix = real.as_os_str().as_bytes().to_vec();
    if prefix.last() != Some(&b'/') {
        prefix.push(b'/');
    }
    for e in identity::parse_mountinfo(&text) {
        let mp = e.mountpoint.as_bytes();
        if mp.len() > prefix.len() && mp.starts_with(&prefix) {
            let id = FsIdentity {
                device: Some(e.source.to_string_lossy().into_owned()).filter(|s| !s.is_empty()),
                fstype: Some(e.fstype.clone()).filter(|s| !s.is_empty()),
                mountpoint: Some(e.mountpoint.to_string_lossy().into_owned()),
                ..FsIdentity::default()
            };
            out.insert(e.mountpoint, id);
        }
    }
    out
}

/// The filesystems mounted below each `--below` path, and their changes (see the module
/// docs): a [`State::Mounted`] record for each one at start and each one mounted since, a
/// [`State::Unmounted`] one for each one gone.
#[derive(Debug)]
pub struct Submounts {
    paths: Vec<(PathBuf, BTreeMap<OsString, FsIdentity>)>,
}

impl Submounts {
    /// Gathers what is mounted below each path; returns a `mounted` line for each. Open the
    /// [`MountTable`] before calling this.
    pub fn start(paths: &[PathBuf]) -> (Submounts, Vec<Record>) {
        let now = SystemTime::now();
        let mut out = Vec::new();
        let mut watched = Vec::new();
        for p in paths {
            let below = mounts_below(p);
            for (mp, id) in &below {
                out.push(submount(now, p, State::Mounted, mp, id));
            }
            watched.push((p.clone(), below));
        }
        (Submounts { paths: watched }, out)
    }

    /// Gathers again after a mount-table change; returns a line for each filesystem
    /// mounted or unmounted below a path since.
    pub fn recheck(&mut self) -> Vec<Record> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for (p, known) in &mut self.paths {
            let below = mounts_below(p);
            for (mp, id) in known.iter().filter(|(mp, _)| !below.contains_key(*mp)) {
                out.push(submount(now, p, State::Unmounted, mp, id));
            }
            for (mp, id) in below.iter().filter(|(mp, _)| !known.contains_key(*mp)) {
                out.push(submount(now, p, State::Mounted, mp, id));
            }
            *known = below;
        }
        out
    }
}

fn submount(
    time: SystemTime,
    path: &Path,
    state: State,
    mountpoint: &std::ffi::OsStr,
    id: &FsIdentity,
) -> Record {
    Record {
        time,
        path: path.to_path_buf(),
        state,
        matched_by: None,
        identity: Some(id.clone()),
        mountpoint: Some(mountpoint.to_os_string()),
    }
}

fn gather_opt(path: &Path) -> Option<Gathered> {
    // Missing, permission denied, a stale NFS handle, no mount entry: the path is not
    // usable, which is what `lost` means to a reader. (Reading /proc itself is checked
    // when the MountTable is opened.)
    identity::gather(path).ok()
}

fn record(
    time: SystemTime,
    path: &Path,
    state: State,
    matched_by: Option<MatchedBy>,
    g: &Gathered,
    id: &FsIdentity,
) -> Record {
    Record {
        time,
        path: path.to_path_buf(),
        state,
        matched_by,
        identity: Some(id.clone()),
        mountpoint: Some(g.mountpoint.clone()),
    }
}

fn lost_missing(time: SystemTime, path: &Path) -> Record {
    Record {
        time,
        path: path.to_path_buf(),
        state: State::Lost,
        matched_by: None,
        identity: None,
        mountpoint: None,
    }
}

#[cfg(test)]
mod tests;
