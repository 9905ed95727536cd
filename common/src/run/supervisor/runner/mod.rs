//! One job's runner: the thread that drives a job through its states (docs/design.md#the-supervisor).
//!
//! Owns: the job's [`Runner`] state machine (prepare: paths, vault, identities, journal,
//! `run.lock`; one *cycle* of children; pause, failure with backoff, the rescan-only
//! fallback), its live state ([`JobState`], written on every change) and the remedy of a
//! typed failure ([`Blocker`]). Its submodules hold the event loop ([`event_loop`]) and the
//! children it starts and reads ([`children`]).
//!
//! Invariants: a failure is journaled once per distinct error and keeps its `since`
//! across retries; the command shown as resolving a failure comes from the child's
//! [`Blocker`] record, never from its message; a job whose retirement keeps failing is
//! `failing` until one succeeds.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::identity::{JobMismatch, verify_job};
use crate::capture::mountwatch::{self};
use crate::error::{Blocker, EXIT_TEMPFAIL, Error, InotifyLimit, show};
use crate::format::journal::{Journal, JournalEvent};
use crate::format::settings::format_duration;
use crate::run::config::JobConfig;
use crate::run::hooks::{HookCall, HookEvent, Hooks};
use crate::run::live::{self, JobState, Live};
use crate::vault::layout::{JobDir, Vault};
use crate::vault::lock::{JobLock, Wait};

mod children;
mod event_loop;

use super::replicas::Replicas;
use super::{Options, find_tool, lock_holder};
use children::kill;

/// A retirement that failed: what reverb-retire said, its [`Blocker`] when it left one, and
/// when to try again (while nothing else is pending) so that the failure clears as soon as
/// its cause is gone.
struct RetireFailure {
    said: String,
    blocker: Option<Blocker>,
    retry_at: Instant,
    backoff: Duration,
}

impl RetireFailure {
    /// The failure after `previous` (the same one again backs off further, to a minute).
    fn after(previous: Option<RetireFailure>, said: String, blocker: Option<Blocker>) -> Self {
        let backoff = match previous {
            Some(p) if p.said == said => (p.backoff * 2).min(Duration::from_secs(60)),
            _ => Duration::from_secs(1),
        };
        RetireFailure {
            said,
            blocker,
            retry_at: Instant::now() + backoff,
            backoff,
        }
    }
}

/// A running job's thread, as the supervisor holds it: its job, its stop flag, its handle.
pub(super) struct RunnerHandle {
    pub(super) job: JobConfig,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RunnerHandle {
    /// Starts the job's thread; a thread that cannot start is logged and journaled (the job
    /// then does not run until the configuration is reloaded).
    pub(super) fn start(
        job: JobConfig,
        opts: Options,
        global_stop: Arc<AtomicBool>,
    ) -> RunnerHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let log = opts.log;
        let mut runner = Runner::new(job.clone(), opts, Arc::clone(&stop), global_stop);
        let thread = match std::thread::Builder::new()
            .name(format!("job-{}", job.name))
            .spawn(move || runner.run())
        {
            Ok(t) => Some(t),
            Err(e) => {
                let why = format!("cannot start a thread for the job: {e}");
                log(&format!("{}: {why}", job.name));
                journal_once(&job, &why, log);
                None
            }
        };
        RunnerHandle { job, stop, thread }
    }

    pub(super) fn stop_and_join(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Journals an `error` for a job that has no runner to do it (when its folder exists).
fn journal_once(job: &JobConfig, why: &str, log: fn(&str)) {
    let Ok(vault) = Vault::open(&job.vault) else {
        return; // no vault, no journal: the log line is all there is
    };
    let dir = vault.job_dir(&job.folder);
    if !dir.exists() {
        return;
    }
    if let Err(e) = Journal::open(&dir.journal(), "supervisor")
        .and_then(|mut j| j.append(JournalEvent::Error, b"", why))
    {
        log(&format!("{}: {e}", job.name));
    }
}

/// Messages from the reader threads of a job's children.
enum Msg {
    Watch(String),
    WatchErr(String),
    WatchEnd,
    Mount(String),
    MountEnd,
}

/// Why a job is not running now.
enum Halt {
    /// Identity lost or vault unavailable: wait for the mount table to change.
    Paused(String),
    /// Something failed: retry after the backoff.
    Failed(String),
    /// A child failed with a [`Blocker`]: retry after the backoff, and show the command
    /// that resolves it.
    Blocked(String, Blocker),
    /// inotify cannot watch the tree (the watch limit): fall back to periodic rescans.
    NoWatch(String, Option<Blocker>),
    /// A filesystem was mounted or unmounted below the source: start the children again
    /// (a new watch of the tree as it is now, and a rescan).
    Restart(String),
    /// Asked to stop.
    Stopped,
}

struct Runner {
    job: JobConfig,
    opts: Options,
    stop: Arc<AtomicBool>,
    global_stop: Arc<AtomicBool>,
    backoff: Duration,
    journal: Option<Journal>,
    /// The last journal that failed to open was logged (once, not every cycle).
    journal_failure_logged: bool,
    /// The job is paused (identity lost); the next successful check journals the return.
    paused: bool,
    /// The vault's filesystem is to be probed before the next version: the job starts, or
    /// it was paused (the vault may be another filesystem now; docs/filesystems.md).
    probe_due: bool,
    /// Who may read the vault is to be put right by the next version (docs/security.md):
    /// the job starts, or it was paused. Cleared once a reverb-snap did it (exited 0);
    /// the versions after it are told so (`--vault-secured`).
    secure_due: bool,
    /// The failure being retried and when it began (RFC 3339): a retry passes through
    /// `copying`, so the live state alone cannot tell a repeat from a new failure.
    failure: Option<(String, String)>,
    /// The last line reverb-watch wrote on stderr.
    watch_error: Option<String>,
    /// The job is paused because this path (its source or vault) does not exist.
    missing: Option<PathBuf>,
    /// The job is paused because another supervisor holds run.lock: check again every second.
    lock_wait: bool,
    /// The last retirement failed with this (its stderr, and its [`Blocker`] when it left
    /// one); cleared by one that succeeds.
    retire_failure: Option<RetireFailure>,
    /// The filesystems mounted below the source when the children were started (their
    /// mountpoints): a change of them restarts the children ([`Halt::Restart`]).
    submounts: std::collections::BTreeSet<std::ffi::OsString>,
    /// The live state file (docs/design.md#live-state) and what it holds now.
    live_path: PathBuf,
    live: Live,
    live_written: Instant,
    /// The job's hooks (docs/configuration.md#hooks): queued here, run on their own thread.
    hooks: Hooks,
    /// A failure the hooks were told about and not yet of its end (`on_recovery`).
    hooked_failure: Option<String>,
    /// The job's replications (docs/design.md#replication): nudged here, run on their own
    /// thread.
    replicas: Replicas,
}

impl Runner {
    fn new(
        job: JobConfig,
        opts: Options,
        stop: Arc<AtomicBool>,
        global_stop: Arc<AtomicBool>,
    ) -> Runner {
        let hooks = Hooks::start(
            &job.name,
            &job.settings,
            JobDir::new(&job.vault, &job.folder).journal(),
            opts.log,
        );
        let live_path = live::file_of(&live::runtime_dir(), &job.vault, &job.folder);
        let replicas = Replicas::start(&job, opts.config_file.clone(), live_path.clone(), opts.log);
        Runner {
            opts,
            stop,
            global_stop,
            backoff: Duration::from_secs(1),
            journal: None,
            journal_failure_logged: false,
            paused: false,
            probe_due: true,
            secure_due: true,
            failure: None,
            watch_error: None,
            missing: None,
            lock_wait: false,
            retire_failure: None,
            submounts: Default::default(),
            live_path,
            // Not a supervisor's state: the first one set starts its `since`.
            live: Live {
                state: JobState::Stopped,
                since: live::now(),
                pid: std::process::id(),
            },
            live_written: Instant::now(),
            hooks,
            hooked_failure: None,
            replicas,
            job,
        }
    }

    /// Tells the hooks about a new version (and the end of a failure, if one was told).
    fn hook_version(&mut self, version: &str) {
        self.hook_recovery();
        self.hooks.fire(HookCall {
            event: HookEvent::Version,
            version: version.to_owned(),
            state: "watching",
            message: format!("version {version}"),
        });
    }

    /// Tells the hooks that the job fails (once per distinct failure).
    fn hook_failure(&mut self, why: &str) {
        if self.hooked_failure.as_deref() == Some(why) {
            return;
        }
        self.hooked_failure = Some(why.to_owned());
        self.hooks.fire(HookCall {
            event: HookEvent::Failure,
            version: String::new(),
            state: "failing",
            message: why.to_owned(),
        });
    }

    /// Tells the hooks that the failure they were told about is over.
    fn hook_recovery(&mut self) {
        if self.retire_failure.is_some() {
            return;
        }
        if let Some(was) = self.hooked_failure.take() {
            self.hooks.fire(HookCall {
                event: HookEvent::Recovery,
                version: String::new(),
                state: "watching",
                message: format!("recovered from: {was}"),
            });
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.global_stop.load(Ordering::SeqCst)
    }

    fn say(&self, msg: &str) {
        (self.opts.log)(&format!("{}: {msg}", self.job.name));
    }

    fn note(&mut self, event: JournalEvent, detail: &str) {
        if let Some(j) = &mut self.journal {
            j.note(event, b"", detail);
        }
    }

    /// Logs and journals a failure that does not stop the job.
    fn complain(&mut self, what: &str) {
        self.say(what);
        self.note(JournalEvent::Error, what);
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(find_tool(name).unwrap_or_else(|| PathBuf::from(name)));
        // Own process group: a terminal's Ctrl-C reaches the supervisor only, which then
        // lets the version in progress finish.
        c.process_group(0);
        c
    }

    fn run(&mut self) {
        let mut lock: Option<JobLock> = None;
        while !self.stopping() {
            match self.cycle(&mut lock) {
                Halt::Stopped => break,
                Halt::Paused(why) => {
                    if !self.paused {
                        self.say(&format!("paused: {why}"));
                        self.note(JournalEvent::Paused, &why);
                    }
                    self.paused = true;
                    self.probe_due = true;
                    self.secure_due = true;
                    self.failure = None;
                    self.set_live(JobState::Paused { why });
                    self.wait_for_mounts();
                }
                Halt::NoWatch(why, blocker) => self.rescan_only(&why, blocker, &mut lock),
                Halt::Restart(why) => self.say(&why),
                Halt::Failed(why) => self.failed(why, None),
                Halt::Blocked(why, blocker) => self.failed(why, Some(blocker)),
            }
        }
        self.note(JournalEvent::Stop, "supervisor stopped watching");
        let _ = std::fs::remove_file(&self.live_path);
        drop(lock);
    }

    /// A failure: logged and journaled once per distinct error, `failing` in the live
    /// state (with the command that resolves it, when one does), retried after the backoff.
    fn failed(&mut self, why: String, blocker: Option<Blocker>) {
        let again = self.failure.as_ref().is_some_and(|(w, _)| *w == why);
        if !again {
            let msg = format!("{why}; retrying in {}", format_duration(self.backoff));
            self.complain(&msg);
            self.failure = Some((why.clone(), live::now()));
            self.hook_failure(&why);
        }
        let state = JobState::Failing {
            why,
            next_retry: Some(live::after(self.backoff)),
            resolve: blocker.map(|b| self.resolving_command(b)),
        };
        // `failing` since the first of these failures, not since this retry.
        if let Some((_, since)) = &self.failure {
            self.live.since = since.clone();
            self.live.state = state.clone();
        }
        self.set_live(state);
        self.sleep_unless_resolved(self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(60));
    }

    /// Sleeps `d`, or less when someone resolved the failure meanwhile: `reverberator snap`
    /// (or reverb-snap) rewrote job.toml or took a version, so the retry comes at once.
    fn sleep_unless_resolved(&self, d: Duration) {
        let dir = JobDir::new(&self.job.vault, &self.job.folder);
        let stamp = || {
            [dir.job_toml(), dir.index()]
                .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        };
        let before = stamp();
        let end = Instant::now() + d;
        while Instant::now() < end && !self.stopping() && stamp() == before {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The one command that resolves a failure the supervisor cannot get past alone.
    fn resolving_command(&self, blocker: Blocker) -> String {
        remedy(blocker, &self.job, self.opts.config_file.as_deref())
    }

    /// Sets the live state (a new `since` only when the state's kind changes) and writes it.
    /// A job whose retirement keeps failing (an unmeetable size limit, a damaged job folder)
    /// still watches, but it is `failing` until a retirement succeeds.
    fn set_live(&mut self, state: JobState) {
        let state = match (&self.retire_failure, state) {
            (Some(f), JobState::Watching { .. } | JobState::Waiting { .. }) => JobState::Failing {
                why: f.said.clone(),
                next_retry: Some(live::after(
                    f.retry_at.saturating_duration_since(Instant::now()),
                )),
                resolve: f.blocker.map(|b| self.resolving_command(b)),
            },
            (_, state) => state,
        };
        if self.live.state.word() != state.word() {
            self.live.since = live::now();
        }
        self.live.state = state;
        self.live.pid = std::process::id();
        self.write_live();
    }

    fn write_live(&mut self) {
        self.live_written = Instant::now();
        if let Err(e) = live::write(&self.live_path, &self.live)
            && !self.journal_failure_logged
        {
            self.say(&format!("cannot write the live state: {e}"));
        }
    }

    /// Without inotify (the watch limit), rescan every `max_snapshot_delay` (at least every
    /// 10 s) for 10 minutes, then try watching again.
    /// `status` shows `watching (rescanning every N: inotify watch limit L reached)`, with
    /// the limit in force (from the watcher's [`Blocker`] record), since the fallback began:
    /// each rescan shows `copying` while it runs, then the fallback again.
    fn rescan_only(&mut self, why: &str, blocker: Option<Blocker>, lock: &mut Option<JobLock>) {
        let every = self
            .job
            .settings
            .max_snapshot_delay
            .max(Duration::from_secs(10));
        let msg = format!(
            "cannot watch ({why}); falling back to a rescan every {}",
            format_duration(every)
        );
        self.say(&msg);
        self.note(JournalEvent::Rescan, &msg);
        let reached = match blocker {
            Some(Blocker::InotifyLimit {
                limit,
                in_force: Some(n),
            }) => format!(
                "inotify {} limit {n} reached ({})",
                limit.counts(),
                limit.sysctl()
            ),
            Some(Blocker::InotifyLimit { limit, .. }) => {
                format!(
                    "inotify {} limit reached ({})",
                    limit.counts(),
                    limit.sysctl()
                )
            }
            _ => "an inotify limit reached".to_owned(),
        };
        let fallback = JobState::Watching {
            fallback: Some(format!(
                "rescanning every {}: {reached}",
                format_duration(every)
            )),
        };
        self.set_live(fallback.clone());
        let since = self.live.since.clone();
        let until = Instant::now() + Duration::from_secs(600);
        while !self.stopping() && Instant::now() < until {
            if self.prepare(lock).is_err() {
                return;
            }
            if let Err(Halt::Paused(_)) = self.snap(None) {
                return;
            }
            // Back to the fallback, since it began (not since this rescan).
            self.set_live(fallback.clone());
            if self.live.state == fallback {
                self.live.since = since.clone();
                self.write_live();
            }
            self.sleep(every);
        }
    }

    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && !self.stopping() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_mounts(&mut self) {
        let stop = AtomicBool::new(false);
        let end = Instant::now() + Duration::from_secs(60);
        let mut logged = false;
        while !self.stopping() && Instant::now() < end {
            if self.missing.as_ref().is_some_and(|p| p.is_dir()) {
                return; // the missing source or vault appeared
            }
            if std::mem::take(&mut self.lock_wait) {
                self.sleep(Duration::from_secs(1));
                return;
            }
            match mountwatch::wait_for_mount_change(Some(Duration::from_millis(250)), &stop) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    if !logged {
                        self.say(&format!("{e}; checking again every 250 ms"));
                        logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
    }

    /// Checks the vault and the source; opens the journal; takes run.lock.
    fn prepare(&mut self, lock: &mut Option<JobLock>) -> std::result::Result<(), Halt> {
        self.check_paths_exist()?;
        let mut vault = self.open_vault()?;
        if self.probe_due {
            // A vault that cannot hold a version is refused (exit 2): a failure, retried.
            vault
                .probe_once()
                .map_err(|e| Halt::Failed(e.to_string()))?;
            self.probe_due = false;
        }
        let dir = vault.job_dir(&self.job.folder);
        if !dir.exists() {
            // A new job: the first version creates it.
            return Ok(());
        }
        self.check_identities(&vault, &dir)?;
        if self.paused {
            self.paused = false;
            self.say("the source and the vault are back: resuming with a rescan");
            self.note(
                JournalEvent::MountRestored,
                "identities match again; rescanning",
            );
        }
        if lock.is_none() {
            *lock = Some(self.take_run_lock(&dir)?);
        }
        Ok(())
    }

    /// A source (or, without `--init`, a vault) that does not exist pauses the job until the
    /// path appears ([`Runner::wait_for_mounts`] watches for it).
    fn check_paths_exist(&mut self) -> std::result::Result<(), Halt> {
        self.missing = None;
        let vault = (!self.opts.init).then_some(("vault", &self.job.vault));
        for (role, path) in [("source", &self.job.source)].into_iter().chain(vault) {
            if !path.is_dir() {
                self.missing = Some(path.clone());
                return Err(Halt::Paused(format!(
                    "{role} missing: {} does not exist (the job starts when it appears)",
                    show(path)
                )));
            }
        }
        Ok(())
    }

    fn open_vault(&self) -> std::result::Result<Vault, Halt> {
        let vault = if self.opts.init {
            Vault::init(&self.job.vault)
        } else {
            Vault::open(&self.job.vault)
        };
        vault.map_err(|e| match e.exit_code() {
            EXIT_TEMPFAIL => Halt::Paused(e.to_string()),
            _ => Halt::Failed(e.to_string()),
        })
    }

    /// The job's identities ([`verify_job`]); the journal is opened once the vault matched,
    /// so a lost source is journaled.
    fn check_identities(&mut self, vault: &Vault, dir: &JobDir) -> std::result::Result<(), Halt> {
        let file = crate::format::jobfile::JobFile::read(&dir.job_toml())
            .map_err(|e| Halt::Failed(e.to_string()))?;
        let verdict = verify_job(&file.identity, &self.job.source, vault.root());
        if let Err(JobMismatch::Vault(e)) = verdict {
            return Err(Halt::Paused(e.to_string()));
        }
        self.open_journal(dir);
        if let Err(JobMismatch::Source(e)) = verdict {
            self.note(JournalEvent::MountLost, &e.to_string());
            return Err(Halt::Paused(e.to_string()));
        }
        Ok(())
    }

    fn open_journal(&mut self, dir: &JobDir) {
        if self.journal.is_some() {
            return;
        }
        match Journal::open(&dir.journal(), "supervisor") {
            Ok(j) => {
                self.journal = Some(j);
                self.journal_failure_logged = false;
            }
            Err(e) if !self.journal_failure_logged => {
                self.say(&format!("{e}; running without journaling"));
                self.journal_failure_logged = true;
            }
            Err(_) => {}
        }
    }

    /// run.lock: held by another process is "another supervisor"; any other error is named.
    fn take_run_lock(&mut self, dir: &JobDir) -> std::result::Result<JobLock, Halt> {
        JobLock::acquire(&dir.run_lock(), &self.job.name, Wait::NoWait).map_err(|e| match e {
            Error::Locked(_) => {
                self.lock_wait = true;
                let pid = lock_holder(&dir.run_lock())
                    .map_or(String::new(), |p| format!(" (pid {p})"));
                Halt::Paused(format!(
                    "another supervisor{pid} is watching this job (run.lock is held); waiting for it to stop"
                ))
            }
            other => Halt::Failed(format!("cannot take run.lock: {other}")),
        })
    }

    /// One life of the job's children; returns why it ended.
    fn cycle(&mut self, lock: &mut Option<JobLock>) -> Halt {
        // The first record, before the run.lock is taken: `status` trusts a record only
        // while its writer holds the lock, so from the moment it does the job is
        // `starting`, never `stopped` with a warning of a supervisor elsewhere.
        if self.live.state == JobState::Stopped {
            self.set_live(JobState::Starting);
        }
        if let Err(h) = self.prepare(lock) {
            return h;
        }
        // The job is this supervisor's now: `status` says so while the watch is set up. A
        // failure stays shown until a version or a retirement clears it.
        if !matches!(self.live.state, JobState::Failing { .. }) {
            self.set_live(JobState::Starting);
        }
        // Before the watch: a filesystem mounted below the source after this is a change
        // reverb-mountwatch reports (its start lines are compared with this).
        self.submounts = mountwatch::mounts_below(&self.job.source)
            .into_keys()
            .collect();
        let (tx, rx) = mpsc::channel();
        let mut watch = match self.start_watch(tx.clone()) {
            Ok(w) => w,
            Err(h) => return h,
        };
        if let Err(h) = self.start_watching(&rx, &mut watch, lock) {
            kill(&mut watch);
            return h;
        }
        let mut mount = self.start_mountwatch(tx);
        self.note(JournalEvent::Start, "watching");
        self.say("watching");
        self.set_live(JobState::Watching { fallback: None });
        let result = self.event_loop(&rx, &mut watch);
        kill(&mut watch);
        if let Some(m) = &mut mount {
            kill(m);
        }
        result
    }

    /// Waits for the watcher's header, then runs the catch-up rescan (or the first version).
    fn start_watching(
        &mut self,
        rx: &Receiver<Msg>,
        watch: &mut Child,
        lock: &mut Option<JobLock>,
    ) -> std::result::Result<(), Halt> {
        if !self.wait_ready(rx) {
            return Err(if self.stopping() {
                Halt::Stopped
            } else {
                self.watch_ended(watch, "reverb-watch did not start")
            });
        }
        // Watches are in place: now the catch-up rescan (or the first version).
        self.snap(None)?;
        if self.retire_failure.is_some() {
            // Back after a pause or a restart: what failed may be gone, so `status` learns
            // it now, not at the next version.
            self.retire();
        }
        if self.journal.is_none() || lock.is_none() {
            // The job was just created by the first version: open what prepare() could not.
            self.prepare(lock)?;
        }
        Ok(())
    }
}

/// The command (or the edit) that resolves `blocker` for `job`, whose configuration is
/// `config_file` (None: an ad-hoc `--vault` job).
fn remedy(blocker: Blocker, job: &JobConfig, config_file: Option<&Path>) -> String {
    let config = match config_file {
        Some(c) => format!(" --config {}", show(c)),
        None => format!(" --vault {}", show(&job.vault)),
    };
    let name = &job.name;
    match blocker {
        Blocker::DeletionGuard => format!("reverberator snap {name} --force{config}"),
        Blocker::SourceChanged => format!(
            "reverberator snap {name} --source {} --force{config}",
            show(&job.source)
        ),
        Blocker::InotifyLimit { limit, in_force } => {
            let suggest = match (limit, in_force) {
                (InotifyLimit::Instances, n) => n.map_or(1024, |n| n * 2),
                (_, n) => n.map_or(524_288, |n| (n * 2).max(524_288)),
            };
            format!("sysctl {}={suggest}", limit.sysctl())
        }
        Blocker::SizeLimitUnmeetable { needs, .. } => {
            let file = config_file.map_or("the configuration".to_owned(), show);
            format!(
                "raise vault_size_limit of job {name} in {file} above what the newest version needs ({}), then reload (SIGHUP)",
                crate::format::settings::format_size(needs)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobConfig {
        JobConfig {
            name: "docs".into(),
            folder: "docs".into(),
            source: PathBuf::from("/home/a/docs"),
            vault: PathBuf::from("/v"),
            settings: crate::format::settings::JobSettings::default(),
        }
    }

    #[test]
    fn each_blocker_has_its_own_remedy() {
        let cfg = Path::new("/etc/r.toml");
        assert_eq!(
            remedy(Blocker::DeletionGuard, &job(), Some(cfg)),
            "reverberator snap docs --force --config /etc/r.toml"
        );
        assert_eq!(
            remedy(Blocker::SourceChanged, &job(), None),
            "reverberator snap docs --source /home/a/docs --force --vault /v"
        );
        let size = remedy(
            Blocker::SizeLimitUnmeetable {
                needs: 60 << 20,
                limit: 1 << 20,
            },
            &job(),
            Some(cfg),
        );
        assert!(
            size.starts_with("raise vault_size_limit of job docs in /etc/r.toml")
                && size.contains("60.0 MiB"),
            "{size}"
        );
    }

    #[test]
    fn a_failing_retirement_is_tried_again_with_backoff() {
        let first = RetireFailure::after(None, "disk damaged".into(), None);
        assert_eq!(first.backoff, Duration::from_secs(1));
        let again = RetireFailure::after(Some(first), "disk damaged".into(), None);
        assert_eq!(again.backoff, Duration::from_secs(2));
        let other = RetireFailure::after(Some(again), "another failure".into(), None);
        assert_eq!(
            other.backoff,
            Duration::from_secs(1),
            "a new failure starts over"
        );
        let mut f = other;
        for _ in 0..10 {
            f = RetireFailure::after(Some(f), "another failure".into(), None);
        }
        assert_eq!(f.backoff, Duration::from_secs(60), "at most a minute");
    }

    #[test]
    fn only_the_typed_refusals_are_blockers() {
        use crate::error::Error;
        assert_eq!(
            Error::SizeLimitUnmeetable {
                job: "docs".into(),
                needs: 5,
                limit: 1,
                detail: "x".into()
            }
            .blocker(),
            Some(Blocker::SizeLimitUnmeetable { needs: 5, limit: 1 })
        );
        // Damage or a permission problem names its own way out: no remedy is guessed,
        // whatever its text says.
        for other in [
            Error::Damaged("size limit unmeetable; max_delete_ratio; records source".into()),
            Error::Refused("job docs: V3 is the newest version".into()),
        ] {
            assert_eq!(other.blocker(), None, "{other}");
        }
    }
}
