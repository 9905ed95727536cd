//! The runner's children: starting `reverb-watch`, `reverb-mountwatch`, `reverb-snap` and
//! `reverb-retire` in their own process group, feeding reverb-snap its batch, reading their
//! output on threads, and deciding what their exit means.
//!
//! Invariants: what a child's exit means is decided by its exit status and, for a failure
//! one command resolves, by the [`Blocker`](crate::error::Blocker) record it leaves in the file named by
//! [`BLOCKER_FILE_VAR`]; never by its stderr, which is only shown. A child is always reaped.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::capture::lifeline::SUPERVISOR_PID_VAR;
use crate::error::{BLOCKER_FILE_VAR, EXIT_TEMPFAIL};
use crate::format::events::{self};
use crate::format::journal::JournalEvent;
use crate::format::settings::format_duration;
use crate::run::cli;
use crate::run::live::JobState;

use super::{Halt, Msg, RetireFailure, Runner};

impl Runner {
    pub(super) fn start_watch(&self, tx: Sender<Msg>) -> std::result::Result<Child, Halt> {
        let s = &self.job.settings;
        let mut c = self.command("reverb-watch");
        let blocker_file = self.watch_blocker_file();
        let _ = std::fs::remove_file(&blocker_file);
        c.env(BLOCKER_FILE_VAR, blocker_file);
        c.arg("--quiet-period")
            .arg(format_duration(s.min_snapshot_time));
        c.arg("--max-delay")
            .arg(format_duration(s.max_snapshot_delay));
        for pat in &s.exclude {
            c.arg("--exclude").arg(pat);
        }
        if s.one_file_system {
            c.arg("--one-file-system");
        }
        c.arg(&self.job.source)
            .env(SUPERVISOR_PID_VAR, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| Halt::Failed(format!("cannot start reverb-watch: {e}")))?;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(Halt::Failed("reverb-watch has no stdout".into()));
        };
        forward_stderr(err, tx.clone());
        forward(out, tx, Msg::Watch, Msg::WatchEnd);
        Ok(child)
    }

    /// Starts reverb-mountwatch; one that cannot start is logged and journaled, and the job
    /// goes on without it (identities are still checked before every version).
    pub(super) fn start_mountwatch(&mut self, tx: Sender<Msg>) -> Option<Child> {
        let mut c = self.command("reverb-mountwatch");
        // Filesystems mounted below the source too (one_file_system).
        c.arg("--below")
            .arg(&self.job.source)
            .arg(&self.job.source)
            .arg(&self.job.vault)
            .env(SUPERVISOR_PID_VAR, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = match c.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.complain(&format!("cannot start reverb-mountwatch: {e}"));
                return None;
            }
        };
        let out = child.stdout.take()?;
        forward(out, tx, Msg::Mount, Msg::MountEnd);
        Some(child)
    }

    pub(super) fn wait_ready(&mut self, rx: &Receiver<Msg>) -> bool {
        let end = Instant::now() + Duration::from_secs(600);
        while Instant::now() < end && !self.stopping() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Watch(line)) if line == events::HEADER => return true,
                Ok(Msg::WatchErr(line)) => self.watch_error = Some(line),
                Ok(Msg::WatchEnd) => {
                    self.last_words(rx, false);
                    return false;
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        false
    }

    /// Runs reverb-snap (a rescan when `batch` is None), then reverb-retire after a version.
    pub(super) fn snap(&mut self, batch: Option<&[String]>) -> std::result::Result<(), Halt> {
        self.snap_until(batch, None)
    }

    /// [`Runner::snap`], abandoned at `deadline` (reverb-snap is then stopped: a version it
    /// did not finish is never visible, and the next rescan takes it).
    pub(super) fn snap_until(
        &mut self,
        batch: Option<&[String]>,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), Halt> {
        let started = Instant::now();
        let what = match batch {
            None => "a rescan of the whole source".to_owned(),
            Some(lines) => format!("a version of {} changes", lines.len()),
        };
        self.set_live(JobState::Copying { progress: what });
        let blocker_file = self.blocker_file();
        let _ = std::fs::remove_file(&blocker_file);
        let out = self.run_snap(batch, deadline)?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let made = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match out.status.code() {
            Some(0) => {
                self.backoff = Duration::from_secs(1);
                let recovered = self.failure.take().is_some();
                let what = if made.is_empty() { "no change" } else { &made };
                self.note(
                    JournalEvent::Batch,
                    &format!("{what} ({} ms)", started.elapsed().as_millis()),
                );
                if !made.is_empty() {
                    self.say(&format!("version {made}"));
                    self.retire();
                    self.replicas.nudge();
                    self.hook_version(&made);
                } else if recovered {
                    self.hook_recovery();
                }
                Ok(())
            }
            Some(EXIT_TEMPFAIL) => Err(Halt::Paused(stderr)),
            _ => {
                let why = if stderr.is_empty() {
                    format!("reverb-snap failed ({})", out.status)
                } else {
                    // Its message already names the program (and is shown once, by failed()).
                    stderr
                };
                Err(match cli::take_blocker(&blocker_file) {
                    Some(b) => Halt::Blocked(why, b),
                    None => Halt::Failed(why),
                })
            }
        }
    }

    /// Starts reverb-snap, feeds it the batch (header first) and waits for it.
    pub(super) fn run_snap(
        &mut self,
        batch: Option<&[String]>,
        deadline: Option<Instant>,
    ) -> std::result::Result<Output, Halt> {
        let mut c = self.snap_command(batch.is_some());
        let mut child = c
            .spawn()
            .map_err(|e| Halt::Failed(format!("cannot start reverb-snap: {e}")))?;
        if let (Some(lines), Some(mut stdin)) = (batch, child.stdin.take()) {
            let mut text = String::from(events::HEADER);
            text.push('\n');
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
            if let Err(e) = stdin.write_all(text.as_bytes()) {
                // reverb-snap exited early; its status says why.
                self.say(&format!("cannot hand the batch to reverb-snap: {e}"));
            }
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || drop(tx.send(child.wait_with_output())));
        // Until it ends (or the deadline): its progress into the live state, every second.
        let what = self.live.state.detail().unwrap_or_default().to_owned();
        let waited = loop {
            let tick = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1)),
                None => Duration::from_secs(1),
            };
            match rx.recv_timeout(tick) {
                Err(RecvTimeoutError::Timeout) if deadline.is_none_or(|d| Instant::now() < d) => {
                    self.show_progress(&what);
                }
                other => break other,
            }
        };
        let _ = std::fs::remove_file(self.progress_file());
        match waited {
            Ok(out) => {
                let out = out.map_err(|e| Halt::Failed(format!("reverb-snap: {e}")))?;
                if out.status.success() {
                    self.secure_due = false;
                }
                Ok(out)
            }
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = rx.recv();
                Err(Halt::Failed(format!(
                    "stop_timeout ({}) reached while taking it",
                    format_duration(self.job.settings.stop_timeout)
                )))
            }
        }
    }

    /// Where reverb-snap writes its counts for the live state (next to the live file).
    pub(super) fn progress_file(&self) -> PathBuf {
        self.live_path.with_extension("progress")
    }

    /// Where a child leaves the [`Blocker`](crate::error::Blocker) of its failure (next to the live file).
    pub(super) fn blocker_file(&self) -> PathBuf {
        self.live_path.with_extension("blocker")
    }

    /// Where reverb-watch leaves its [`Blocker`](crate::error::Blocker): a file of its own,
    /// since it runs while reverb-snap and reverb-retire come and go.
    pub(super) fn watch_blocker_file(&self) -> PathBuf {
        self.live_path.with_extension("watch-blocker")
    }

    /// `copying`: what is being built and how far it got (`N entries, SIZE so far`).
    pub(super) fn show_progress(&mut self, what: &str) {
        let Ok(text) = std::fs::read_to_string(self.progress_file()) else {
            return;
        };
        let mut f = text
            .trim()
            .split('\t')
            .map(|v| v.parse::<u64>().unwrap_or(0));
        let (n, b) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
        self.live.state = JobState::Copying {
            progress: format!(
                "{what}: {n} entries, {} copied so far",
                crate::format::settings::format_size(b)
            ),
        };
        self.write_live();
    }

    pub(super) fn snap_command(&self, with_batch: bool) -> Command {
        let mut c = self.command("reverb-snap");
        c.env("REVERBERATOR_PROGRESS_FILE", self.progress_file());
        c.env(BLOCKER_FILE_VAR, self.blocker_file());
        c.arg("--vault")
            .arg(&self.job.vault)
            .arg("--job")
            .arg(&self.job.name);
        c.arg("--source").arg(&self.job.source);
        if self.opts.init {
            c.arg("--init");
        }
        if let Some(cfg) = &self.opts.config_file {
            c.arg("--config").arg(cfg);
        }
        if with_batch {
            c.arg("--changes").arg("-").arg("--events-journaled");
        }
        if !self.probe_due {
            // Probed when the job started (docs/filesystems.md): not again per version.
            c.arg("--vault-probed");
        }
        if !self.secure_due {
            // Put right by this start's first version (docs/security.md): not again per version.
            c.arg("--vault-secured");
        }
        // A long first copy shows its progress on a terminal (reverb-snap draws it on stderr).
        let on_tty = !with_batch && std::io::IsTerminal::is_terminal(&std::io::stderr());
        c.stdin(if with_batch {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(if on_tty {
            Stdio::inherit()
        } else {
            Stdio::piped()
        });
        c
    }

    pub(super) fn retire(&mut self) {
        self.set_live(JobState::Retiring);
        let blocker_file = self.blocker_file();
        let _ = std::fs::remove_file(&blocker_file);
        let mut c = self.command("reverb-retire");
        c.env(BLOCKER_FILE_VAR, &blocker_file);
        c.arg("--vault")
            .arg(&self.job.vault)
            .arg("--job")
            .arg(&self.job.name);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // reverb-retire may compact the journal (a new file): the journal handle follows
        // it at its next append.
        match c.output() {
            Ok(o) if o.status.success() => {
                if self.retire_failure.take().is_some() && self.failure.is_none() {
                    self.hook_recovery();
                }
                // `job<TAB>dir<TAB>freed_bytes`, said in words.
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    let f: Vec<&str> = line.split('\t').collect();
                    let freed = f.get(2).and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
                    self.say(&format!(
                        "retired {} ({} freed)",
                        f.get(1).unwrap_or(&line),
                        crate::format::settings::format_size(freed)
                    ));
                }
            }
            Ok(o) if o.status.code() == Some(EXIT_TEMPFAIL) => {
                // The vault went away (the mount watcher pauses the job) or another writer
                // holds the job: not a failure of the retirement, which the next version
                // (or the retry of an earlier failure) runs again.
                let said = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                self.say(&format!(
                    "{}; retiring later",
                    prefixed("reverb-retire", &said)
                ));
            }
            Ok(o) => {
                // reverb-retire journals its own failures; its lines name it already. The
                // same failure again is not repeated in the log.
                let said = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                let previous = self.retire_failure.take();
                if previous.as_ref().map(|f| &f.said) != Some(&said) {
                    for line in said.lines() {
                        self.say(&prefixed("reverb-retire", line));
                    }
                }
                let blocker = cli::take_blocker(&blocker_file);
                self.hook_failure(&said);
                self.retire_failure = Some(RetireFailure::after(previous, said, blocker));
            }
            Err(e) => self.complain(&format!("cannot run reverb-retire: {e}")),
        }
    }
}

/// `line` with one `tool: ` prefix: children's messages already carry theirs.
pub(super) fn prefixed(tool: &str, line: &str) -> String {
    let line = line.trim();
    if line.starts_with(&format!("{tool}:")) {
        line.to_owned()
    } else {
        format!("{tool}: {line}")
    }
}

pub(super) fn forward(out: ChildStdout, tx: Sender<Msg>, each: fn(String) -> Msg, end: Msg) {
    std::thread::spawn(move || {
        let reader = BufReader::new(out);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line).into_owned();
            if tx.send(each(text)).is_err() {
                return;
            }
        }
        let _ = tx.send(end);
    });
}

pub(super) fn forward_stderr(err: std::process::ChildStderr, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        for line in BufReader::new(err).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line).trim().to_owned();
            if !text.is_empty() && tx.send(Msg::WatchErr(text)).is_err() {
                return;
            }
        }
    });
}

/// The exit status of a child whose output ended: it exits on its own within 5 s, else it
/// is killed (and then has no status worth reading).
pub(super) fn exit_status(child: &mut Child) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
    kill(child);
    None
}

pub(super) fn kill(child: &mut Child) {
    // SIGTERM first (reverb-watch flushes and exits 0), SIGKILL if it lingers.
    if let Ok(Some(_)) = child.try_wait() {
        return; // already reaped: its pid may belong to another process now
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
