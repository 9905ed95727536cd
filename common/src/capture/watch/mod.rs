//! The recursive inotify watcher behind `reverb-watch` (docs/cli.md): turns kernel events on a
//! tree into [`EventLine`]s.
//!
//! Owns: the inotify instance and the loop ([`Watcher::run`]): waiting, reading the queue,
//! and the idle and stop rules. The parts it is built from:
//! - [`map`]: the wd ↔ directory path bookkeeping (the map mirrors the tree);
//! - [`scan`]: installing watches top-down, watch before scan, and the watch limit;
//! - [`handle`]: what each kernel event means (creates, deletes, the modify dedupe,
//!   overflow, unmount);
//! - [`renames`]: pairing `IN_MOVED_FROM` with `IN_MOVED_TO` by cookie;
//! - [`output`]: the ordered output queue and the `flush` timing.
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

mod handle;
mod map;
mod output;
mod renames;
mod scan;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, IoContext, Result, WatchLimit, show};
use crate::format::events::{EntryType, EventKind, EventLine};
use crate::format::exclude::Excludes;
use map::WatchMap;
pub use output::WatchOptions;
use output::{Callbacks, Lines};
use renames::{MOVE_WAIT, PendingRenames};
pub use scan::WatchWarning;

/// The size of one read of the inotify queue.
const BUFFER_SIZE: usize = 64 * 1024;

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
    /// The root's device (`one_file_system` stops where another one begins).
    root_dev: u64,
    excludes: Excludes,
    options: WatchOptions,
    inotify: Inotify,
    /// Which directory each watch watches.
    map: WatchMap,
    root_wd: i32,
    stop: Arc<AtomicBool>,
    wake_read: UnixStream,
    /// The output pipe: when its reader is gone (POLLERR/POLLHUP), the loop stops at once,
    /// without waiting for an event to write ([`Watcher::stop_when_closed`]).
    output: Option<std::os::fd::OwnedFd>,
    wake_write: Arc<UnixStream>,
    /// Lines for the sink, in event order, and the current burst.
    lines: Lines,
    /// Paths with a `create`/`modify` emitted and no close or flush since (modify dedupe).
    dirty: HashSet<PathBuf>,
    /// Paths reported by a scan since the queue was last idle (create dedupe).
    scanned: HashSet<PathBuf>,
    /// Renames waiting for their pair.
    renames: PendingRenames,
    /// An `overflow` line was emitted in this burst.
    overflow_sent: bool,
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
            .field("watched_dirs", &self.map.len())
            .finish_non_exhaustive()
    }
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
            root_dev: std::os::unix::fs::MetadataExt::dev(&meta),
            root: root.to_path_buf(),
            excludes,
            options,
            inotify,
            map: WatchMap::default(),
            root_wd: -1,
            stop: Arc::new(AtomicBool::new(false)),
            wake_read,
            output: None,
            wake_write: Arc::new(wake_write),
            lines: Lines::default(),
            dirty: HashSet::new(),
            scanned: HashSet::new(),
            renames: PendingRenames::default(),
            overflow_sent: false,
            busy: false,
            buffer: vec![0; BUFFER_SIZE],
            warnings: Vec::new(),
        };
        w.watch_tree(Path::new("."), false)?;
        match w.map.wd_of(Path::new(".")) {
            Some(wd) => w.root_wd = wd,
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
        let mut out = Callbacks { sink, warn };
        let result = self.run_inner(&mut out);
        match result {
            Ok(Stopped::Requested) => {
                self.expire_moves(true);
                if self.lines.in_burst() {
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
                if self.lines.in_burst() {
                    self.emit_flush();
                }
                let _ = self.drain(&mut out);
                Err(e)
            }
        }
    }

    fn run_inner<F, W>(&mut self, out: &mut Callbacks<F, W>) -> Result<Stopped>
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
        let busy = self.busy.then(|| Instant::now() + MOVE_WAIT);
        [
            self.renames.next_deadline(),
            busy,
            self.lines.flush_deadline(&self.options),
        ]
        .into_iter()
        .flatten()
        .min()
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
        for m in self.renames.expired_when_idle(Instant::now()) {
            self.moved_out(m);
        }
    }

    /// Resolves unpaired renames older than [`renames::MOVE_WAIT_MAX`] (all of them with
    /// `all`): each is a `delete` (moved out).
    fn expire_moves(&mut self, all: bool) {
        for m in self.renames.expired(Instant::now(), all) {
            self.moved_out(m);
        }
    }

    /// Emits a `flush` once one is due and no rename is waiting for its pair.
    fn check_flush(&mut self) {
        if self.lines.flush_due(&self.options, Instant::now()) && self.renames.is_empty() {
            self.emit_flush();
        }
    }

    /// A `flush` line ends the burst, and with it the modify and overflow dedupe.
    fn emit_flush(&mut self) {
        self.lines.flush();
        self.dirty.clear();
        self.overflow_sent = false;
    }

    /// Hands the warnings, then the queued lines, to the caller; false when it asked to stop.
    fn drain<F, W>(&mut self, out: &mut Callbacks<F, W>) -> Result<bool>
    where
        F: FnMut(&EventLine) -> io::Result<bool>,
        W: FnMut(&WatchWarning),
    {
        for w in self.warnings.drain(..) {
            (out.warn)(&w);
        }
        self.lines
            .drain(&mut out.sink)
            .ctx("cannot write the event lines of", &self.root)
    }

    /// Queues a line stamped now, part of the current burst.
    fn emit(
        &mut self,
        kind: EventKind,
        etype: Option<EntryType>,
        path: PathBuf,
        to: Option<PathBuf>,
    ) {
        self.lines.emit(EventLine::now(kind, etype, path, to));
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
