//! A job's replications under the supervisor (docs/design.md#replication): one thread per
//! job with `replicate_to`, which runs `reverberator replicate JOB --to DEST` as a child for
//! each destination when the job starts and after each new version, and again with backoff
//! (1 s doubling to 5 min) while a replica cannot be reached.
//!
//! Owns the thread ([`Replicas`]), each destination's schedule, its live record
//! ([`crate::run::replica_live`], what `status` shows as `replicating` or `waiting`) and the
//! journal line of a failure (once per distinct failure).
//!
//! Invariants: the job's thread only queues a nudge ([`Replicas::nudge`]): it never waits for
//! a replication, so replication never delays or blocks taking versions; the child runs in
//! its own process group and is killed with it when the job stops; a destination that
//! failed is not tried again before its backoff ends, however many versions are made
//! meanwhile.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::format::journal::{Journal, JournalEvent};
use crate::run::config::JobConfig;
use crate::run::live;
use crate::run::replica_live::{self, ReplicaActivity, ReplicaState, ReplicasLive};
use crate::vault::layout::JobDir;

use super::find_tool;

/// The longest wait between two tries of a replica that cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A job's replication thread; dropping it stops the thread and its child.
pub(super) struct Replicas {
    tx: Option<Sender<()>>,
    stop: Arc<AtomicBool>,
    /// The process group of the running child (0: none).
    child: Arc<AtomicI32>,
    thread: Option<JoinHandle<()>>,
}

/// One destination's schedule.
struct Dest {
    to: String,
    due: Option<Instant>,
    backoff: Duration,
    /// The last failure (journaled once), while it lasts.
    failed: Option<String>,
    live: ReplicaState,
}

impl Replicas {
    /// Starts the thread of `job` (none without `replicate_to`); `config_file` is what the
    /// child reads the job from (else the job's vault), `live_path` the job's live file.
    pub(super) fn start(
        job: &JobConfig,
        config_file: Option<PathBuf>,
        live_path: PathBuf,
        log: fn(&str),
    ) -> Replicas {
        let stop = Arc::new(AtomicBool::new(false));
        let child = Arc::new(AtomicI32::new(0));
        if job.settings.replicate_to.is_empty() {
            return Replicas {
                tx: None,
                stop,
                child,
                thread: None,
            };
        }
        let (tx, rx) = mpsc::channel::<()>();
        let worker = Worker {
            job: job.clone(),
            config_file,
            record: replica_live::file_beside(&live_path),
            log,
            stop: Arc::clone(&stop),
            child: Arc::clone(&child),
            failed_logged: None,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("replicas-{}", job.name))
            .spawn(move || worker.run(&rx));
        match spawned {
            Ok(t) => Replicas {
                tx: Some(tx),
                stop,
                child,
                thread: Some(t),
            },
            Err(e) => {
                log(&format!(
                    "{}: cannot start the replication thread: {e}; nothing is replicated",
                    job.name
                ));
                Replicas {
                    tx: None,
                    stop,
                    child,
                    thread: None,
                }
            }
        }
    }

    /// A new version was made: replicate it (never waits).
    pub(super) fn nudge(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(());
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.tx.take());
        let group = self.child.load(Ordering::SeqCst);
        if group > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    job: JobConfig,
    config_file: Option<PathBuf>,
    record: PathBuf,
    log: fn(&str),
    stop: Arc<AtomicBool>,
    child: Arc<AtomicI32>,
    failed_logged: Option<String>,
}

impl Worker {
    fn run(mut self, rx: &mpsc::Receiver<()>) {
        // A job not created yet has nothing to send: its first version nudges.
        let start = JobDir::new(&self.job.vault, &self.job.folder)
            .exists()
            .then(Instant::now);
        let mut dests: Vec<Dest> = self
            .job
            .settings
            .replicate_to
            .iter()
            .map(|to| Dest {
                to: to.clone(),
                due: start,
                backoff: Duration::from_secs(1),
                failed: None,
                live: ReplicaState {
                    to: to.clone(),
                    state: ReplicaActivity::Idle,
                    since: live::now(),
                    why: None,
                    next_try: None,
                },
            })
            .collect();
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            for i in 0..dests.len() {
                if dests[i].due.is_some_and(|d| d <= now) && !self.stop.load(Ordering::SeqCst) {
                    self.replicate(&mut dests, i);
                }
            }
            let next = dests.iter().filter_map(|d| d.due).min();
            let wait = next.map_or(Duration::from_secs(3600), |n| {
                n.saturating_duration_since(Instant::now())
            });
            match rx.recv_timeout(wait.min(Duration::from_secs(3600))) {
                Ok(()) => {
                    // A new version: every replica that is not waiting out a failure.
                    for d in dests.iter_mut().filter(|d| d.failed.is_none()) {
                        d.due = Some(Instant::now());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = std::fs::remove_file(&self.record);
    }

    fn write_live(&self, dests: &[Dest]) {
        let record = ReplicasLive {
            pid: std::process::id(),
            replicas: dests.iter().map(|d| d.live.clone()).collect(),
        };
        let _ = replica_live::write(&self.record, &record);
    }

    fn set(dest: &mut Dest, state: ReplicaActivity, why: Option<String>, next_try: Option<String>) {
        if dest.live.state != state {
            dest.live.since = live::now();
        }
        dest.live.state = state;
        dest.live.why = why;
        dest.live.next_try = next_try;
    }

    /// Replicates to destination `i` once, and schedules its next try.
    fn replicate(&mut self, dests: &mut [Dest], i: usize) {
        Self::set(&mut dests[i], ReplicaActivity::Replicating, None, None);
        self.write_live(dests);
        let result = self.run_child(&dests[i].to);
        let d = &mut dests[i];
        match result {
            Ok(()) => {
                if d.failed.take().is_some() {
                    (self.log)(&format!(
                        "{}: replica {} reached again",
                        self.job.name, d.to
                    ));
                }
                d.backoff = Duration::from_secs(1);
                d.due = None;
                Self::set(d, ReplicaActivity::Idle, None, None);
            }
            Err(why) => {
                if d.failed.as_deref() != Some(why.as_str()) {
                    let line = format!("replicating to {}: {why}", d.to);
                    (self.log)(&format!(
                        "{}: {line}; trying again in {}",
                        self.job.name,
                        crate::format::settings::format_duration(d.backoff)
                    ));
                    if self.failed_logged.as_deref() != Some(line.as_str()) {
                        self.journal(&line);
                        self.failed_logged = Some(line);
                    }
                }
                d.failed = Some(why.clone());
                d.due = Some(Instant::now() + d.backoff);
                Self::set(
                    d,
                    ReplicaActivity::Waiting,
                    Some(why),
                    Some(live::after(d.backoff)),
                );
                d.backoff = (d.backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.write_live(dests);
    }

    fn journal(&self, line: &str) {
        let dir = JobDir::new(&self.job.vault, &self.job.folder);
        if let Ok(mut j) = Journal::open(&dir.journal(), "supervisor") {
            j.note(JournalEvent::Error, b"", line);
        }
    }

    /// Runs `reverberator replicate` for one destination; the error is its last line.
    fn run_child(&self, to: &str) -> Result<(), String> {
        let program = find_tool("reverberator")
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("reverberator"));
        let mut c = Command::new(program);
        c.args(["replicate", &self.job.name, "--to", to]);
        match &self.config_file {
            Some(f) => c.arg("--config").arg(f),
            None => c.arg("--vault").arg(&self.job.vault),
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c
            .spawn()
            .map_err(|e| format!("cannot start reverberator replicate: {e}"))?;
        self.child
            .store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
        let mut said = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.by_ref().take(64 << 10).read_to_string(&mut said);
            let _ = std::io::copy(&mut e, &mut std::io::sink());
        }
        let status = child.wait();
        self.child.store(0, Ordering::SeqCst);
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => {
                let last = said
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .trim_start_matches("reverberator: ")
                    .to_owned();
                // Its context repeats what the journal line says already.
                let context = format!("replicating {} to {to}: ", self.job.name);
                let last = last
                    .strip_prefix(&context)
                    .map(str::to_owned)
                    .unwrap_or(last);
                Err(if last.is_empty() {
                    format!("reverberator replicate ended with {s}")
                } else {
                    last
                })
            }
            Err(e) => Err(format!("cannot wait for reverberator replicate: {e}")),
        }
    }
}
