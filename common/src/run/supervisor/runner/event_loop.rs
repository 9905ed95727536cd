//! The runner's event loop: reverb-watch's event lines gathered into batches (a `flush`
//! line ends one and takes its version), reverb-mountwatch's records (`lost` pauses the
//! job), the `waiting` state, and the last version of what is pending when stopping.
//!
//! Invariant: every event line is journaled before its batch is handed to reverb-snap, and
//! a line that does not parse stays in the batch (reverb-snap rejects the batch and says so).

use std::process::Child;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::capture::mountwatch::{self, Record, State};
use crate::error::EXIT_WATCH_LIMIT;
use crate::format::events::{EventKind, EventLine};
use crate::format::journal::JournalEvent;
use crate::run::live::{self, JobState};

use super::children::{exit_status, prefixed};
use super::{Halt, Msg, Runner};

impl Runner {
    pub(super) fn event_loop(&mut self, rx: &Receiver<Msg>, watch: &mut Child) -> Halt {
        let mut batch: Vec<String> = Vec::new();
        let batch = &mut batch;
        let mut lineno = 1; // the header
        loop {
            if self.stopping() {
                self.last_version(rx, watch, std::mem::take(batch), lineno);
                return Halt::Stopped;
            }
            let msg = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    if batch.is_empty() {
                        self.retry_retirement();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Halt::Failed("lost the children's pipes".into());
                }
            };
            let halt = match msg {
                Msg::Watch(line) => {
                    lineno += 1;
                    self.event_line(line, lineno, batch).err()
                }
                Msg::WatchErr(line) => {
                    self.watch_said(line);
                    None
                }
                Msg::WatchEnd => {
                    // Let its last words (stderr) arrive before deciding why it ended.
                    self.last_words(rx, true);
                    Some(self.watch_ended(watch, "reverb-watch exited"))
                }
                Msg::Mount(line) => self.mount_line(&line),
                Msg::MountEnd => None,
            };
            if let Some(h) = halt {
                return h;
            }
        }
    }

    /// While nothing is pending, a failed retirement is tried again after its backoff, so a
    /// failure whose cause is gone (space freed, a limit raised, a permission fixed) leaves
    /// `failing` without waiting for the next version.
    fn retry_retirement(&mut self) {
        if self
            .retire_failure
            .as_ref()
            .is_some_and(|f| Instant::now() >= f.retry_at)
        {
            self.retire();
            self.set_live(JobState::Watching { fallback: None });
        }
    }

    /// Stopping: the watcher is asked to flush (SIGTERM) and its last events join the batch,
    /// then one last version is taken of everything pending, all within `stop_timeout`.
    pub(super) fn last_version(
        &mut self,
        rx: &Receiver<Msg>,
        watch: &mut Child,
        mut batch: Vec<String>,
        mut lineno: usize,
    ) {
        let deadline = Instant::now() + self.job.settings.stop_timeout;
        let pid = nix::unistd::Pid::from_raw(watch.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left.min(Duration::from_secs(5))) {
                Ok(Msg::Watch(line)) => {
                    lineno += 1;
                    match EventLine::parse(&line, lineno) {
                        Ok(e) if e.kind == EventKind::Flush => continue,
                        Ok(e) => self.journal_event(&e),
                        Err(e) => self.complain(&format!("reverb-watch: {e}")),
                    }
                    batch.push(line);
                }
                Ok(Msg::WatchEnd) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if batch.is_empty() {
            return;
        }
        self.say(&format!(
            "stopping: a last version of {} pending changes",
            batch.len()
        ));
        if let Err(Halt::Failed(why) | Halt::Blocked(why, _) | Halt::Paused(why)) =
            self.snap_until(Some(&batch), Some(deadline))
        {
            self.complain(&format!(
                "the last version was not taken ({why}); the next start's rescan takes it"
            ));
        }
    }

    /// One line of reverb-watch: a `flush` builds the batch, anything else joins it.
    pub(super) fn event_line(
        &mut self,
        line: String,
        lineno: usize,
        batch: &mut Vec<String>,
    ) -> std::result::Result<(), Halt> {
        match EventLine::parse(&line, lineno) {
            Ok(e) if e.kind == EventKind::Flush => {
                if !batch.is_empty() {
                    let lines = std::mem::take(batch);
                    self.snap(Some(&lines))?;
                    self.set_live(JobState::Watching { fallback: None });
                }
                return Ok(());
            }
            Ok(e) => self.journal_event(&e),
            // Kept in the batch: reverb-snap rejects the batch, and journals that.
            Err(e) => self.complain(&prefixed("reverb-watch", &e.to_string())),
        }
        if self.opts.verbose > 0 {
            self.say(&format!("event {}", line.replace('\t', " ")));
        }
        batch.push(line);
        self.waiting(batch.len());
        Ok(())
    }

    /// `waiting`: N changes, the version due within the quiet period (at the latest
    /// `max_snapshot_delay` after the first change). Rewritten at most every 250 ms.
    pub(super) fn waiting(&mut self, pending: usize) {
        let first = !matches!(self.live.state, JobState::Waiting { .. });
        if !first && self.live_written.elapsed() < Duration::from_millis(250) {
            return;
        }
        let s = &self.job.settings;
        let due = if first {
            live::after(s.min_snapshot_time)
        } else {
            // The quiet period restarts with every change, up to the maximum delay.
            let latest = crate::format::time::parse_rfc3339(&self.live.since)
                .map(|t| t + s.max_snapshot_delay);
            let quiet = std::time::SystemTime::now() + s.min_snapshot_time;
            crate::format::time::rfc3339_millis(latest.map_or(quiet, |l| l.min(quiet)))
        };
        self.set_live(JobState::Waiting {
            pending: pending as u64,
            due: Some(due),
        });
    }

    /// One record of reverb-mountwatch: `lost` pauses the job; a filesystem mounted or
    /// unmounted below the source restarts the children.
    pub(super) fn mount_line(&mut self, line: &str) -> Option<Halt> {
        if line == mountwatch::HEADER {
            return None;
        }
        match Record::parse(line) {
            Ok(r) if matches!(r.state, State::Mounted | State::Unmounted) => {
                self.submount_changed(&r)
            }
            Ok(r) if r.state == State::Lost => {
                let role = if r.path == self.job.vault {
                    "the vault"
                } else {
                    "the source"
                };
                let shown = format!(
                    "{role} {} is no longer on its recorded filesystem (unmounted, or another one mounted there) since {}",
                    crate::error::show(&r.path),
                    crate::format::time::rfc3339_millis(r.time)
                );
                self.note(JournalEvent::MountLost, &shown);
                Some(Halt::Paused(shown))
            }
            Ok(_) => None,
            Err(e) => {
                self.complain(&format!("reverb-mountwatch: {e}"));
                None
            }
        }
    }

    /// A filesystem mounted (or unmounted) below the source (docs/watch.md#mounts-inside-the-source):
    /// when the children did not know of it, journaled (`mount-added`, `mount-removed`)
    /// and the children started again: a new watch of the tree as it is now (with
    /// `one_file_system = false` it reaches into the new filesystem), and a rescan (which
    /// versions what the mount brought, or what its unmount took away, or names the
    /// mountpoint it leaves out).
    fn submount_changed(&mut self, r: &Record) -> Option<Halt> {
        use std::os::unix::ffi::OsStrExt;
        let mountpoint = r.mountpoint.clone()?;
        let mounted = r.state == State::Mounted;
        let news = if mounted {
            self.submounts.insert(mountpoint.clone())
        } else {
            self.submounts.remove(&mountpoint)
        };
        if !news {
            return None;
        }
        let source = std::fs::canonicalize(&self.job.source).unwrap_or(self.job.source.clone());
        let rel = std::path::Path::new(&mountpoint)
            .strip_prefix(&source)
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .unwrap_or_else(|_| mountpoint.as_bytes().to_vec());
        let what = r
            .identity
            .as_ref()
            .map(|id| {
                format!(
                    "{} ({})",
                    id.device.as_deref().unwrap_or("?"),
                    id.fstype.as_deref().unwrap_or("?")
                )
            })
            .unwrap_or_default();
        let one_fs = self.job.settings.one_file_system;
        let (event, detail) = match (mounted, one_fs) {
            (true, true) => (
                JournalEvent::MountAdded,
                format!("{what} mounted here: left out (one_file_system = true); rescanning"),
            ),
            (true, false) => (
                JournalEvent::MountAdded,
                format!(
                    "{what} mounted here: backed up (one_file_system = false); watching it and rescanning"
                ),
            ),
            (false, true) => (
                JournalEvent::MountRemoved,
                format!("{what} unmounted; rescanning what is under it"),
            ),
            (false, false) => (
                JournalEvent::MountRemoved,
                format!("{what} unmounted: its contents leave the next version; rescanning"),
            ),
        };
        if let Some(j) = &mut self.journal {
            j.note(event, &rel, &detail);
        }
        let shown = crate::format::tsv::escape_bytes(&rel);
        Some(Halt::Restart(format!("{shown}: {detail}")))
    }

    pub(super) fn watch_said(&mut self, line: String) {
        self.complain(&prefixed("reverb-watch", &line));
        self.watch_error = Some(line);
    }

    /// Collects what reverb-watch still writes on stderr after its stdout closed
    /// (journaled when `journal` is set).
    pub(super) fn last_words(&mut self, rx: &Receiver<Msg>, journal: bool) {
        while let Ok(Msg::WatchErr(line)) = rx.recv_timeout(Duration::from_millis(200)) {
            if journal {
                self.watch_said(line);
            } else {
                self.watch_error = Some(line);
            }
        }
    }

    /// reverb-watch ended: its exit status says why ([`EXIT_WATCH_LIMIT`]: fall back to
    /// rescans; anything else: restart after the backoff).
    pub(super) fn watch_ended(&mut self, watch: &mut Child, what: &str) -> Halt {
        let status = exit_status(watch);
        let said = self.watch_error.take();
        match (status.and_then(|s| s.code()), said) {
            (Some(EXIT_WATCH_LIMIT), said) => Halt::NoWatch(
                said.unwrap_or_else(|| "an inotify limit".into()),
                crate::run::cli::take_blocker(&self.watch_blocker_file()),
            ),
            (_, Some(e)) => Halt::Failed(format!("{what}: {e}")),
            (_, None) => Halt::Failed(what.to_owned()),
        }
    }

    /// Journals a raw event as the watcher's (tool `watch`): the entry type as detail,
    /// `-> to_path` for a move.
    pub(super) fn journal_event(&mut self, e: &EventLine) {
        let Some(j) = &mut self.journal else {
            return;
        };
        if let Err(err) = crate::run::batch::journal_event(j, e) {
            crate::error::warn(&err.to_string());
        }
    }
}
