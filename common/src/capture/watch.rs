//! The recursive inotify watcher behind `reverb-watch` (docs/cli.md): turns kernel events on a
//! tree into [`EventLine`]s.
//!
//! Owns: the inotify instance, the map from watch descriptor to directory path (relative to
//! the root), the pairing of renames by cookie, the modify dedupe, and the `flush` timing.
//!
//! Theory of operation and invariants:
//! - **Watch before scan.** A directory's watch is installed before its entries are read,
//!   top-down, both at start-up and for a directory created or moved in later. Anything
//!   created in it after the watch exists is an inotify event; anything created before is
//!   found by the scan (and reported as `create`). So no change is neither seen nor
//!   scanned. A create seen both ways is reported once when both fall in the same burst.
//! - **The wd map mirrors the tree.** Every watched directory has exactly one relative path;
//!   a directory moved within the tree keeps its watches and its whole subtree is renamed in
//!   the map; a directory moved out or excluded loses its watches; `IN_IGNORED` drops an
//!   entry.
//! - **Renames are paired by cookie.** An `IN_MOVED_FROM` waits for its `IN_MOVED_TO` until
//!   a read of the queue comes back empty after at least [`MOVE_WAIT`]; unpaired, it is a
//!   `delete` (moved out). An `IN_MOVED_TO` without a from is a `create` (moved in).
//! - **Modify dedupe.** A path gets one `modify` (or its `create`) per burst: further
//!   `IN_MODIFY`s are dropped until the path's `IN_CLOSE_WRITE` or the next `flush` (without
//!   flush lines: until the queue has been idle for [`MOVE_WAIT`]). `IN_CLOSE_WRITE` emits
//!   `modify` only when none was emitted for the path since its last close or flush, so a
//!   file appended and closed every 100 ms gives one `modify` per append, and a file kept
//!   open gives one per batch.
//! - **Lost events are events.** `IN_Q_OVERFLOW` emits one `overflow` (per burst), and every
//!   directory is re-watched so later events are seen again; the reader rescans.
//! - **No busy loop.** The loop blocks in poll(2) on the inotify fd and a wake-up socket
//!   (written by signal handlers or a [`Stopper`]), with a timeout computed from the pending
//!   rename pairs and the flush deadlines; none when nothing is pending.
//! - The root's watch going away is fatal: `IN_UNMOUNT` on the root emits `unmount .` and a
//!   pending `flush`, then [`Watcher::run`] returns [`Error::IdentityMismatch`] (exit 75:
//!   retry once the filesystem is back); the root deleted or moved returns
//!   [`Error::Refused`] (exit 1).
//! - **Limits are types.** The inotify watch and instance limits are
//!   [`Error::WatchLimit`] (exit 3, with the sysctl to raise), so a reader acts on the type
//!   or the exit status, never on the message; a directory that cannot be watched or read
//!   for another reason is a [`WatchWarning`] handed to the caller, and the watch goes on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, IoContext, Result, WatchLimit, show};
use crate::format::events::{EntryType, EventKind, EventLine, join_rel};
use crate::format::exclude::Excludes;

/// How long an unpaired `IN_MOVED_FROM` waits (with the queue idle) before it is a delete.
pub const MOVE_WAIT: Duration = Duration::from_millis(20);

/// An unpaired `IN_MOVED_FROM` is a delete after this long, even when the queue is busy.
const MOVE_WAIT_MAX: Duration = Duration::from_millis(500);

/// The size of one read of the inotify queue.
const BUFFER_SIZE: usize = 64 * 1024;

fn watch_mask() -> WatchMask {
    WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
    // IN_UNMOUNT is always reported by the kernel; it is not a bit one asks for.
}

/// When to print `flush` lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Flush once no event has come for this long after a burst.
    pub quiet_period: Option<Duration>,
    /// Flush at most this long after a burst's first event, even under constant change.
    pub max_delay: Option<Duration>,
}

impl WatchOptions {
    fn flushes(&self) -> bool {
        self.quiet_period.is_some() || self.max_delay.is_some()
    }
}

/// Why [`Watcher::run`] returned normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The stop flag was raised (a signal, a [`Stopper`]).
    Requested,
    /// The sink returned `false` (the reader went away).
    SinkClosed,
}

/// Stops a running [`Watcher`] from another thread.
#[derive(Debug, Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    wake: Arc<UnixStream>,
}

impl Stopper {
    /// Raises the stop flag and wakes the loop.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // Non-blocking: when the socket is full, a wake-up is already pending.
        let _ = (&*self.wake).write(b"x");
    }
}

/// A pending `IN_MOVED_FROM`.
#[derive(Debug)]
struct MovedFrom {
    cookie: u32,
    rel: PathBuf,
    is_dir: bool,
    excluded: bool,
    at: Instant,
    /// The place reserved in the output (none for an excluded path).
    slot: Option<u64>,
    /// When it was read: the time of its line.
    time: String,
}

/// One place in the output queue.
#[derive(Debug)]
enum Slot {
    Line(EventLine),
    /// A rename waiting for its pair.
    Waiting,
    /// A reserved place that turned out to print nothing.
    Dropped,
}

/// The caller's two callbacks of [`Watcher::run`].
struct Output<F, W> {
    sink: F,
    warn: W,
}

/// One inotify event, owned (so handling it may add watches).
#[derive(Debug)]
struct RawEvent {
    wd: i32,
    mask: EventMask,
    cookie: u32,
    name: Option<OsString>,
}

/// The recursive watcher. See the module documentation.
pub struct Watcher {
    root: PathBuf,
    excludes: Excludes,
    options: WatchOptions,
    inotify: Inotify,
    /// wd → (descriptor, directory path relative to the root; `.` is the root).
    dirs: HashMap<i32, (WatchDescriptor, PathBuf)>,
    /// directory path → wd (inverse of `dirs`).
    by_path: HashMap<PathBuf, i32>,
    root_wd: i32,
    stop: Arc<AtomicBool>,
    wake_read: UnixStream,
    /// The output pipe: when its reader is gone (POLLERR/POLLHUP), the loop stops at once,
    /// without waiting for an event to write ([`Watcher::stop_when_closed`]).
    output: Option<std::os::fd::OwnedFd>,
    wake_write: Arc<UnixStream>,
    /// Lines for the sink, in event order; a rename waiting for its pair holds its place
    /// so that nothing after it is printed before it.
    out: VecDeque<Slot>,
    /// The absolute position of `out[0]`.
    out_base: u64,
    /// Paths with a `create`/`modify` emitted and no close or flush since (modify dedupe).
    dirty: HashSet<PathBuf>,
    /// Paths reported by a scan since the queue was last idle (create dedupe).
    scanned: HashSet<PathBuf>,
    pending_from: Vec<MovedFrom>,
    overflow_sent: bool,
    /// wd → st_dev of the watched directory (to find the mountpoint on `IN_UNMOUNT`).
    devs: HashMap<i32, u64>,
    /// First and last emitted event of the current burst (no flush since).
    burst: Option<(Instant, Instant)>,
    /// Events were handled since the queue was last seen idle.
    busy: bool,
    buffer: Vec<u8>,
    /// Warnings not yet handed to the caller.
    warnings: Vec<WatchWarning>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("root", &self.root)
            .field("watched_dirs", &self.dirs.len())
            .finish_non_exhaustive()
    }
}

/// The error for ENOSPC from inotify_add_watch.
fn watch_limit_error(root: &Path, excludes: &Excludes, watched: usize) -> Error {
    let total = count_dirs(root, excludes).max(watched + 1);
    let current: Option<u64> = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let suggest = match current {
        Some(c) => (c + total as u64).max(c * 2),
        None => (total as u64 * 2).max(524_288),
    };
    Error::WatchLimit(WatchLimit::TooManyWatches {
        root: root.to_path_buf(),
        watched,
        total,
        current,
        suggest,
    })
}

/// Something the watcher could not do that leaves part of the tree unseen but does not stop
/// the watch: handed to the caller's warning callback, in order.
#[derive(Debug, thiserror::Error)]
pub enum WatchWarning {
    /// A directory could not be watched (other than gone, or the watch limit).
    #[error(
        "cannot watch {}: {source} (changes below it are not seen)",
        show(path)
    )]
    Unwatched { path: PathBuf, source: io::Error },
    /// A watched directory could not be listed.
    #[error("cannot read {}: {source}", show(path))]
    Unreadable { path: PathBuf, source: io::Error },
}

/// Counts the directories a full watch of `root` needs (the root included).
fn count_dirs(root: &Path, excludes: &Excludes) -> usize {
    let mut n = 0;
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        n += 1;
        let Ok(rd) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for ent in rd.flatten() {
            if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let child = join_rel(&rel, &ent.file_name());
                if !excludes.is_excluded(&child, true) {
                    stack.push(child);
                }
            }
        }
    }
    n
}

fn lstat_type(path: &Path) -> Option<EntryType> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| EntryType::of(m.file_type()))
}

impl Watcher {
    /// Watches `root` recursively (top-down, every directory not excluded). Nothing is
    /// emitted for what already exists. Fails when `root` is not a directory, or with an
    /// actionable message when the inotify instance or watch limit is reached.
    pub fn new(root: &Path, excludes: Excludes, options: WatchOptions) -> Result<Watcher> {
        let meta = std::fs::metadata(root).ctx("cannot watch", root)?;
        if !meta.is_dir() {
            return Err(Error::Io {
                what: "cannot watch",
                path: root.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        let inotify = Inotify::init().map_err(|e| match e.raw_os_error() {
            Some(libc::EMFILE) => Error::WatchLimit(WatchLimit::TooManyInstances { source: e }),
            Some(libc::ENFILE) => Error::Refused(format!(
                "cannot create an inotify instance: {e}: the system-wide open-file limit is \
                 reached (fs.file-max)"
            )),
            _ => Error::Io {
                what: "cannot create an inotify instance for",
                path: root.to_path_buf(),
                source: e,
            },
        })?;
        let (wake_read, wake_write) = UnixStream::pair().ctx("cannot create a socket for", root)?;
        wake_read
            .set_nonblocking(true)
            .ctx("cannot set up the wake-up socket for", root)?;
        wake_write
            .set_nonblocking(true)
            .ctx("cannot set up the wake-up socket for", root)?;
        let mut w = Watcher {
            root: root.to_path_buf(),
            excludes,
            options,
            inotify,
            dirs: HashMap::new(),
            by_path: HashMap::new(),
            root_wd: -1,
            stop: Arc::new(AtomicBool::new(false)),
            wake_read,
            output: None,
            wake_write: Arc::new(wake_write),
            out: VecDeque::new(),
            out_base: 0,
            dirty: HashSet::new(),
            scanned: HashSet::new(),
            pending_from: Vec::new(),
            overflow_sent: false,
            devs: HashMap::new(),
            burst: None,
            busy: false,
            buffer: vec![0; BUFFER_SIZE],
            warnings: Vec::new(),
        };
        w.watch_tree(Path::new("."), false)?;
        match w.by_path.get(Path::new(".")) {
            Some(&wd) => w.root_wd = wd,
            None => {
                return Err(Error::Refused(format!(
                    "cannot watch {}: it vanished while the watch was set up",
                    show(root)
                )));
            }
        }
        Ok(w)
    }

    /// A handle that stops the loop from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: Arc::clone(&self.stop),
            wake: Arc::clone(&self.wake_write),
        }
    }

    /// Stops the loop ([`Stopped::SinkClosed`]) as soon as the reader of `output` (the pipe
    /// the lines go to) is gone, even while no event comes.
    pub fn stop_when_closed(&mut self, output: std::os::fd::OwnedFd) {
        self.output = Some(output);
    }

    /// Makes `signal` (SIGTERM, SIGINT) raise the stop flag and wake the loop.
    pub fn stop_on_signal(&self, signal: i32) -> io::Result<()> {
        signal_hook::flag::register(signal, Arc::clone(&self.stop))?;
        let fd = self.wake_write.try_clone()?;
        signal_hook::low_level::pipe::register(signal, fd)?;
        Ok(())
    }

    /// Runs the loop until stopped, calling `sink` for every line in order and `warn` for
    /// every [`WatchWarning`] (those of [`Watcher::new`] first). `sink` returns `Ok(false)`
    /// to stop (the reader is gone). On a stop request, pending renames are resolved and a
    /// final `flush` is emitted when events are pending.
    pub fn run<F, W>(&mut self, sink: F, warn: W) -> Result<Stopped>
    where
        F: FnMut(&EventLine) -> io::Result<bool>,
        W: FnMut(&WatchWarning),
    {
        let mut out = Output { sink, warn };
        let result = self.run_inner(&mut out);
        match result {
            Ok(Stopped::Requested) => {
                self.expire_moves(true);
                if self.burst.is_some() {
                    self.emit_flush();
                }
                match self.drain(&mut out)? {
                    true => Ok(Stopped::Requested),
                    false => Ok(Stopped::SinkClosed),
                }
            }
            Ok(s) => Ok(s),
            Err(e) => {
                // Report what happened before the error (an unmount line, a last flush).
                if self.burst.is_some() {
                    self.emit_flush();
                }
                let _ = self.drain(&mut out);
                Err(e)
            }
        }
    }

    fn run_inner<F, W>(&mut self, out: &mut Output<F, W>) -> Result<Stopped>
    where
        F: FnMut(&EventLine) -> io::Result<bool>,
        W: FnMut(&WatchWarning),
    {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Stopped::Requested);
            }
            let now = Instant::now();
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            let (readable, woken, closed) = self.wait(timeout)?;
            if closed {
                return Ok(Stopped::SinkClosed);
            }
            if woken {
                let mut scratch = [0u8; 64];
                let _ = (&self.wake_read).read(&mut scratch);
            }
            let mut got = false;
            if readable {
                got = self.read_and_handle()?;
            }
            if !got {
                self.idle();
            }
            self.expire_moves(false);
            self.check_flush();
            if !self.drain(out)? {
                return Ok(Stopped::SinkClosed);
            }
        }
    }

    /// Blocks in poll(2); returns (inotify readable, woken by the stop socket, output closed).
    fn wait(&self, timeout: Option<Duration>) -> Result<(bool, bool, bool)> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(d) => {
                // Round up so a deadline 0.4 ms away does not spin.
                let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128);
                PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![
            PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake_read.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(out) = &self.output {
            // No events asked for: poll reports POLLERR/POLLHUP on a pipe whose reader left.
            fds.push(PollFd::new(out.as_fd(), PollFlags::empty()));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok((false, true, false)),
            Err(e) => return Err(e).ctx("cannot wait for inotify events on", &self.root),
        }
        let ready = |f: &PollFd| {
            f.revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))
        };
        let closed = fds.get(2).is_some_and(|f| {
            f.revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
        });
        Ok((ready(&fds[0]), ready(&fds[1]), closed))
    }

    /// The earliest moment the loop must wake up without an event, if any.
    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        for m in &self.pending_from {
            at(m.at + MOVE_WAIT);
        }
        if self.busy {
            at(Instant::now() + MOVE_WAIT);
        }
        if let Some((first, last)) = self.burst {
            if let Some(q) = self.options.quiet_period {
                at(last + q);
            }
            if let Some(m) = self.options.max_delay {
                at(first + m);
            }
        }
        d
    }

    /// Reads one buffer of events and handles them. Returns false when nothing was read.
    fn read_and_handle(&mut self) -> Result<bool> {
        let mut raw = Vec::new();
        match self.inotify.read_events(&mut self.buffer) {
            Ok(events) => {
                for e in events {
                    raw.push(RawEvent {
                        wd: e.wd.get_watch_descriptor_id(),
                        mask: e.mask,
                        cookie: e.cookie,
                        name: e.name.map(OsStr::to_os_string),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e).ctx("cannot read inotify events for", &self.root),
        }
        if raw.is_empty() {
            return Ok(false);
        }
        self.busy = true;
        for e in raw {
            self.handle(e)?;
        }
        Ok(true)
    }

    /// The queue was found empty: unpaired renames may expire, scan dedupe resets.
    fn idle(&mut self) {
        self.busy = false;
        self.scanned.clear();
        if !self.options.flushes() {
            self.dirty.clear();
            self.overflow_sent = false;
        }
        self.expire_moves_idle();
    }

    fn expire_moves_idle(&mut self) {
        let now = Instant::now();
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_from)
            .into_iter()
            .partition(|m| now.duration_since(m.at) >= MOVE_WAIT);
        self.pending_from = keep;
        for m in old {
            self.moved_out(m);
        }
    }

    /// Resolves unpaired renames older than [`MOVE_WAIT_MAX`] (all of them with `all`).
    fn expire_moves(&mut self, all: bool) {
        let now = Instant::now();
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_from)
            .into_iter()
            .partition(|m| all || now.duration_since(m.at) >= MOVE_WAIT_MAX);
        self.pending_from = keep;
        for m in old {
            self.moved_out(m);
        }
    }

    fn check_flush(&mut self) {
        let Some((first, last)) = self.burst else {
            return;
        };
        let now = Instant::now();
        let quiet = self.options.quiet_period.is_some_and(|q| now >= last + q);
        let late = self.options.max_delay.is_some_and(|m| now >= first + m);
        if (quiet || late) && self.pending_from.is_empty() {
            self.emit_flush();
        }
    }

    fn emit_flush(&mut self) {
        self.out
            .push_back(Slot::Line(EventLine::marker(EventKind::Flush)));
        self.burst = None;
        self.dirty.clear();
        self.overflow_sent = false;
    }

    /// Hands the warnings, then the queued lines, to the caller; false when it asked to stop.
    fn drain<F, W>(&mut self, out: &mut Output<F, W>) -> Result<bool>
    where
        F: FnMut(&EventLine) -> io::Result<bool>,
        W: FnMut(&WatchWarning),
    {
        for w in self.warnings.drain(..) {
            (out.warn)(&w);
        }
        while let Some(slot) = self.out.front() {
            if matches!(slot, Slot::Waiting) {
                break;
            }
            let slot = self.out.pop_front();
            self.out_base += 1;
            if let Some(Slot::Line(line)) = slot {
                match (out.sink)(&line) {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    Err(e) => return Err(e).ctx("cannot write the event lines of", &self.root),
                }
            }
        }
        Ok(true)
    }

    fn emit(
        &mut self,
        kind: EventKind,
        etype: Option<EntryType>,
        path: PathBuf,
        to: Option<PathBuf>,
    ) {
        self.touch_burst();
        self.out
            .push_back(Slot::Line(EventLine::now(kind, etype, path, to)));
    }

    fn touch_burst(&mut self) {
        let now = Instant::now();
        self.burst = Some(match self.burst {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    /// Fills the place a rename reserved (with nothing when `line` is `None`).
    fn fill(&mut self, slot: Option<u64>, line: Option<EventLine>) {
        let Some(at) = slot else {
            if let Some(l) = line {
                self.touch_burst();
                self.out.push_back(Slot::Line(l));
            }
            return;
        };
        if line.is_some() {
            self.touch_burst();
        }
        let index = at
            .checked_sub(self.out_base)
            .and_then(|i| usize::try_from(i).ok());
        if let Some(s) = index.and_then(|i| self.out.get_mut(i)) {
            *s = match line {
                Some(l) => Slot::Line(l),
                None => Slot::Dropped,
            };
        }
    }

    /// Handles one inotify event: the watch's own events first (overflow, unmount, ignored,
    /// the root itself), then a change of a named entry in a watched directory.
    fn handle(&mut self, e: RawEvent) -> Result<()> {
        if e.mask.contains(EventMask::Q_OVERFLOW) {
            return self.overflowed();
        }
        let Some((_, dir)) = self.dirs.get(&e.wd) else {
            return Ok(()); // a watch already dropped (moved out, excluded, deleted)
        };
        let dir = dir.clone();
        let is_root = e.wd == self.root_wd;
        if e.mask.contains(EventMask::UNMOUNT) {
            return self.unmounted(e.wd, dir, is_root);
        }
        if e.mask.contains(EventMask::IGNORED) {
            return self.ignored(e.wd, &dir, is_root);
        }
        if is_root
            && e.mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
        {
            let what = if e.mask.contains(EventMask::DELETE_SELF) {
                "deleted"
            } else {
                "moved away"
            };
            return Err(Error::Refused(format!(
                "the watched root {} was {what}; nothing is left to watch",
                show(&self.root)
            )));
        }
        let Some(name) = e.name else {
            // An event on the watched directory itself. Its parent reports the same change
            // by name, except for the root, which has no watched parent.
            if is_root && e.mask.contains(EventMask::ATTRIB) {
                self.emit(
                    EventKind::Attrib,
                    Some(EntryType::Dir),
                    PathBuf::from("."),
                    None,
                );
            }
            return Ok(());
        };
        let rel = join_rel(&dir, &name);
        self.entry_changed(e.mask, e.cookie, rel)
    }

    /// `IN_UNMOUNT` on the watch of `dir`: every watch on the unmounted filesystem reports
    /// it; one line for the topmost one, the mountpoint, whose parent is on another
    /// filesystem. The root's is fatal.
    fn unmounted(&mut self, wd: i32, dir: PathBuf, is_root: bool) -> Result<()> {
        let dev = self.devs.get(&wd).copied();
        let parent_dev = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => self.by_path.get(p),
            _ => self.by_path.get(Path::new(".")),
        }
        .and_then(|wd| self.devs.get(wd))
        .copied();
        let topmost = is_root || dev.is_none() || parent_dev != dev;
        if topmost {
            self.emit(EventKind::Unmount, Some(EntryType::Dir), dir.clone(), None);
        }
        if is_root {
            return Err(Error::IdentityMismatch(format!(
                "the filesystem holding the watched root {} was unmounted; \
                 watch it again once it is mounted",
                show(&self.root)
            )));
        }
        if topmost {
            // What is under the mountpoint now is what the tree holds there: watch it
            // (no lines: the reader knows from `unmount` that this subtree changed).
            self.watch_tree(&dir, false)?;
        }
        Ok(())
    }

    /// `IN_IGNORED`: the watch is gone; the root's going away is fatal.
    fn ignored(&mut self, wd: i32, dir: &Path, is_root: bool) -> Result<()> {
        self.dirs.remove(&wd);
        self.devs.remove(&wd);
        if self.by_path.get(dir) == Some(&wd) {
            self.by_path.remove(dir);
        }
        if is_root {
            return Err(Error::Refused(format!(
                "the watch on the root {} went away (it was deleted, moved or unmounted)",
                show(&self.root)
            )));
        }
        Ok(())
    }

    /// A change of the entry `rel` reported by its parent's watch.
    fn entry_changed(&mut self, mask: EventMask, cookie: u32, rel: PathBuf) -> Result<()> {
        let is_dir = mask.contains(EventMask::ISDIR);
        let excluded = self.excludes.is_excluded(&rel, is_dir);
        if mask.contains(EventMask::MOVED_FROM) {
            let slot = (!excluded).then(|| {
                self.out.push_back(Slot::Waiting);
                self.out_base + self.out.len() as u64 - 1
            });
            self.pending_from.push(MovedFrom {
                slot,
                time: crate::format::time::now_rfc3339(),
                cookie,
                rel,
                is_dir,
                excluded,
                at: Instant::now(),
            });
            return Ok(());
        }
        if mask.contains(EventMask::MOVED_TO) {
            return self.moved_to(cookie, rel, is_dir, excluded);
        }
        if excluded {
            return Ok(());
        }
        if mask.contains(EventMask::CREATE) {
            if self.scanned.remove(&rel) {
                return Ok(()); // the scan of its parent already reported it
            }
            return self.created(rel, is_dir);
        }
        if mask.contains(EventMask::DELETE) {
            self.dirty.remove(&rel);
            self.scanned.remove(&rel);
            let etype = is_dir.then_some(EntryType::Dir);
            self.emit(EventKind::Delete, etype, rel, None);
            return Ok(());
        }
        self.content_or_attrib(mask, rel, is_dir);
        Ok(())
    }

    /// `IN_MODIFY`, `IN_CLOSE_WRITE` (the modify dedupe) and `IN_ATTRIB` of an entry.
    fn content_or_attrib(&mut self, mask: EventMask, rel: PathBuf, is_dir: bool) {
        if mask.contains(EventMask::MODIFY) {
            if self.dirty.insert(rel.clone()) {
                let t = lstat_type(&self.root.join(&rel));
                self.emit(EventKind::Modify, t, rel, None);
            } else if self.burst.is_some() {
                // Already reported, but still changing: the burst is not quiet yet.
                self.touch_burst();
            }
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            if !self.dirty.remove(&rel) {
                let t = lstat_type(&self.root.join(&rel));
                self.emit(EventKind::Modify, t, rel, None);
            }
        } else if mask.contains(EventMask::ATTRIB) {
            let t = if is_dir {
                Some(EntryType::Dir)
            } else {
                lstat_type(&self.root.join(&rel))
            };
            self.emit(EventKind::Attrib, t, rel, None);
        }
    }

    /// A new entry at `rel` (created, or moved in from outside).
    fn created(&mut self, rel: PathBuf, is_dir: bool) -> Result<()> {
        if is_dir {
            self.emit(EventKind::Create, Some(EntryType::Dir), rel.clone(), None);
            self.watch_tree(&rel, true)
        } else {
            let t = lstat_type(&self.root.join(&rel));
            if t == Some(EntryType::File) {
                self.dirty.insert(rel.clone());
            }
            self.emit(EventKind::Create, t, rel, None);
            Ok(())
        }
    }

    fn moved_to(
        &mut self,
        cookie: u32,
        to: PathBuf,
        is_dir: bool,
        to_excluded: bool,
    ) -> Result<()> {
        let from = self
            .pending_from
            .iter()
            .position(|m| m.cookie == cookie)
            .map(|i| self.pending_from.remove(i));
        let Some(from) = from else {
            if to_excluded {
                return Ok(());
            }
            return self.created(to, is_dir);
        };
        self.dirty.remove(&from.rel);
        match (from.excluded, to_excluded) {
            (true, true) => Ok(()),
            (true, false) => {
                self.fill(from.slot, None);
                self.created(to, is_dir)
            }
            (false, true) => {
                self.moved_out(from);
                Ok(())
            }
            (false, false) => {
                if is_dir {
                    self.rename_subtree(&from.rel, &to);
                }
                let t = if is_dir {
                    Some(EntryType::Dir)
                } else {
                    lstat_type(&self.root.join(&to))
                };
                let mut line = EventLine::now(EventKind::Move, t, from.rel, Some(to));
                line.time = from.time;
                self.fill(from.slot, Some(line));
                Ok(())
            }
        }
    }

    /// An entry left the tree (or moved to an excluded path): `delete`, and its watches go.
    fn moved_out(&mut self, m: MovedFrom) {
        if m.excluded {
            return;
        }
        self.dirty.remove(&m.rel);
        if m.is_dir {
            self.unwatch_subtree(&m.rel);
        }
        let etype = m.is_dir.then_some(EntryType::Dir);
        let mut line = EventLine::now(EventKind::Delete, etype, m.rel, None);
        line.time = m.time;
        self.fill(m.slot, Some(line));
    }

    /// The wd map entries at or under `rel`.
    fn subtree(&self, rel: &Path) -> Vec<(PathBuf, i32)> {
        self.by_path
            .iter()
            .filter(|(p, _)| p.starts_with(rel))
            .map(|(p, &wd)| (p.clone(), wd))
            .collect()
    }

    fn rename_subtree(&mut self, from: &Path, to: &Path) {
        for (old, wd) in self.subtree(from) {
            let new = match old.strip_prefix(from) {
                Ok(tail) if tail.as_os_str().is_empty() => to.to_path_buf(),
                Ok(tail) => to.join(tail),
                Err(_) => continue,
            };
            self.by_path.remove(&old);
            self.by_path.insert(new.clone(), wd);
            if let Some(entry) = self.dirs.get_mut(&wd) {
                entry.1 = new;
            }
        }
    }

    fn unwatch_subtree(&mut self, rel: &Path) {
        for (path, wd) in self.subtree(rel) {
            self.by_path.remove(&path);
            self.devs.remove(&wd);
            if let Some((desc, _)) = self.dirs.remove(&wd) {
                let _ = self.inotify.watches().remove(desc);
            }
        }
    }

    fn overflowed(&mut self) -> Result<()> {
        if !self.overflow_sent {
            self.overflow_sent = true;
            self.emit(EventKind::Overflow, None, PathBuf::new(), None);
        }
        // Creates were lost: watch every directory again (no lines; the reader rescans).
        self.watch_tree(Path::new("."), false)
    }

    /// Watches the directory `rel` and everything below it, top-down: each directory's watch
    /// exists before its entries are read. With `report`, each entry found is a `create`.
    fn watch_tree(&mut self, rel: &Path, report: bool) -> Result<()> {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let abs = self.root.join(&dir);
            if !self.add_watch(&dir, &abs, report)? {
                continue;
            }
            let entries = match std::fs::read_dir(&abs) {
                Ok(rd) => rd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    self.warnings.push(WatchWarning::Unreadable {
                        path: abs,
                        source: e,
                    });
                    continue;
                }
            };
            for ent in entries.flatten() {
                let child = join_rel(&dir, &ent.file_name());
                let Ok(ft) = ent.file_type() else { continue };
                let etype = EntryType::of(ft);
                let child_is_dir = etype == EntryType::Dir;
                if self.excludes.is_excluded(&child, child_is_dir) {
                    continue;
                }
                if report {
                    self.scanned.insert(child.clone());
                    if etype == EntryType::File {
                        self.dirty.insert(child.clone());
                    }
                    self.emit(EventKind::Create, Some(etype), child.clone(), None);
                }
                if child_is_dir {
                    stack.push(child);
                }
            }
        }
        Ok(())
    }

    /// Watches the one directory `dir` (at `abs`) and records it in the wd map. `Ok(false)`
    /// when it is not watched but the walk goes on (gone, or a [`WatchWarning`]); the watch
    /// limit is an error (after an `overflow` line while running, with `report`).
    fn add_watch(&mut self, dir: &Path, abs: &Path, report: bool) -> Result<bool> {
        let e = match self.inotify.watches().add(abs, watch_mask()) {
            Ok(wd) => {
                let id = wd.get_watch_descriptor_id();
                if let Some((_, old)) = self.dirs.insert(id, (wd, dir.to_path_buf()))
                    && old != dir
                    && self.by_path.get(&old) == Some(&id)
                {
                    self.by_path.remove(&old);
                }
                self.by_path.insert(dir.to_path_buf(), id);
                if let Ok(m) = std::fs::symlink_metadata(abs) {
                    self.devs.insert(id, m.dev());
                }
                return Ok(true);
            }
            Err(e) => e,
        };
        match e.raw_os_error() {
            Some(libc::ENOSPC) => {
                if report {
                    // While running: part of the tree is unwatched, so the reader must
                    // rescan whatever it makes of this batch.
                    self.emit(EventKind::Overflow, None, PathBuf::new(), None);
                }
                Err(watch_limit_error(
                    &self.root,
                    &self.excludes,
                    self.dirs.len(),
                ))
            }
            // Gone or replaced by a non-directory since we saw it: its parent's watch
            // reports that.
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(false),
            _ if dir.as_os_str() == "." => Err(e).ctx("cannot watch", &self.root),
            _ => {
                self.warnings.push(WatchWarning::Unwatched {
                    path: abs.to_path_buf(),
                    source: e,
                });
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Runs a watcher on a thread; lines arrive on the channel.
    fn start(
        dir: &Path,
        excludes: &[&str],
        options: WatchOptions,
    ) -> (
        Stopper,
        mpsc::Receiver<String>,
        std::thread::JoinHandle<Result<Stopped>>,
    ) {
        let ex = Excludes::new(&excludes.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("excludes");
        let mut w = Watcher::new(dir, ex, options).expect("watcher");
        let stopper = w.stopper();
        let (tx, rx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            w.run(
                |l| {
                    let r = l.render();
                    let short: Vec<&str> =
                        r.split('\t').skip(1).filter(|f| !f.is_empty()).collect();
                    Ok(tx.send(short.join(" ")).is_ok())
                },
                |w| panic!("unexpected warning: {w}"),
            )
        });
        (stopper, rx, h)
    }

    fn wait_for(rx: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                let hit = l == want;
                seen.push(l);
                if hit {
                    return;
                }
            }
        }
        panic!("`{want}` never came; saw {seen:#?}");
    }

    #[test]
    fn reports_nested_creates_moves_and_stops_with_a_flush() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (stopper, rx, h) = start(tmp.path(), &["*.tmp"], WatchOptions::default());
        let mut seen = Vec::new();
        std::fs::create_dir_all(tmp.path().join("a/b/c")).expect("mkdir");
        std::fs::write(tmp.path().join("a/b/c/f"), b"x").expect("write");
        std::fs::write(tmp.path().join("a/skip.tmp"), b"x").expect("write");
        wait_for(&rx, "create file a/b/c/f", &mut seen);
        std::fs::rename(tmp.path().join("a"), tmp.path().join("z")).expect("mv");
        wait_for(&rx, "move dir a z", &mut seen);
        std::fs::write(tmp.path().join("z/b/c/g"), b"y").expect("write");
        wait_for(&rx, "create file z/b/c/g", &mut seen);
        stopper.stop();
        wait_for(&rx, "flush", &mut seen);
        assert_eq!(h.join().expect("join").expect("run"), Stopped::Requested);
        assert!(
            !seen.iter().any(|l| l.contains("skip.tmp")),
            "excluded: {seen:#?}"
        );
    }

    #[test]
    fn not_a_directory_is_an_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let f = tmp.path().join("file");
        std::fs::write(&f, b"").expect("write");
        let e = Watcher::new(&f, Excludes::default(), WatchOptions::default())
            .expect_err("not a dir")
            .to_string();
        assert!(e.contains("file") && e.contains("Not a directory"), "{e}");
    }
}
