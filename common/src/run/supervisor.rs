//! The supervisor (`reverberator run`, docs/design.md#the-supervisor).
//!
//! Theory of operation. One thread per job runs a small state machine over child processes
//! connected by pipes: it checks that the vault and the source are on their recorded
//! filesystems (docs/identity.md) and pauses the job until the mount table changes when they are not;
//! it holds `<job>/run.lock` so no second supervisor watches the job; it starts
//! `reverb-watch` (whose header line means every watch is in place), then runs `reverb-snap`
//! once — the first version of a new job, or the catch-up rescan of a known one — so that no
//! change is ever neither seen nor scanned; it starts `reverb-mountwatch` on the source and
//! the vault; then, for every `flush`-terminated batch of event lines (the watcher applies
//! `min_snapshot_time` as its quiet period and `max_snapshot_delay` as its maximum delay),
//! it runs `reverb-snap --changes -` with the batch on stdin, then `reverb-retire`. Raw
//! events are journaled as they arrive (tool `watch`), each batch's outcome as `batch`.
//!
//! Failure handling: a child that dies is restarted with exponential backoff (journaled),
//! and the restart begins with a rescan, so nothing is lost. A `lost` line from the
//! mount watcher, or exit 75 from a writer, pauses the job until the mount table changes
//! and the identities match again; then it rescans and resumes. Jobs are independent: a
//! job's failure only ever affects its own thread.
//!
//! The contracts with the children are typed: event lines are read with
//! [`EventLine::parse`] after the [`events::HEADER`] (which means "every watch is in
//! place"), mount records with [`Record::parse`]; what a child's exit means is decided by its
//! exit status, never by its stderr: `reverb-watch` exiting [`EXIT_WATCH_LIMIT`] (an inotify
//! limit) makes the job fall back to periodic rescans, `reverb-snap` exiting
//! [`EXIT_TEMPFAIL`] pauses it. Nothing fails silently: a job thread that cannot start, a
//! journal that cannot be opened, a `run.lock` that cannot be taken (only a held lock is
//! "another supervisor"), a child that cannot be started are logged through
//! [`Options::log`] and, where the journal is open, journaled as `error`.
//!
//! Signals: SIGTERM/SIGINT stop every job after the version in progress (children run in
//! their own process group, so a terminal's Ctrl-C does not kill a half-built version) and
//! the process exits 0. SIGHUP reloads the configuration: added jobs start, removed jobs
//! stop, changed jobs restart (with a rescan, so pending changes are not lost).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::identity::{JobMismatch, verify_job};
use crate::capture::lifeline::SUPERVISOR_PID_VAR;
use crate::capture::mountwatch::{self, Record, State};
use crate::error::{
    BLOCKER_FILE_VAR, Blocker, EXIT_TEMPFAIL, EXIT_WATCH_LIMIT, Error, Result, show,
};
use crate::format::events::{self, EventKind, EventLine};
use crate::format::journal::{Journal, JournalEvent};
use crate::format::settings::format_duration;
use crate::run::cli;
use crate::run::config::JobConfig;
use crate::run::live::{self, JobState, Live};
use crate::run::notify::{self, Notifier};
use crate::vault::layout::{JobDir, Vault};
use crate::vault::lock::{JobLock, Wait};

/// How the supervisor was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Create missing vaults (`--init`).
    pub init: bool,
    /// Log verbosity: 0 = actions, 1 = events too.
    pub verbose: u8,
    /// The configuration file the jobs come from (passed on to reverb-snap for settings).
    pub config_file: Option<PathBuf>,
    /// Where log lines go (the binary prefixes its name).
    pub log: fn(&str),
    /// `--wait`: a job another supervisor watches waits for it to stop, instead of this
    /// supervisor exiting 75.
    pub wait: bool,
}

/// Where to get the jobs from on start and on SIGHUP.
pub trait JobSource {
    /// The current list of jobs (an error keeps the previous list on reload).
    fn jobs(&self) -> Result<Vec<JobConfig>>;
}

/// The programs the supervisor runs as children.
pub const CHILDREN: [&str; 4] = [
    "reverb-watch",
    "reverb-mountwatch",
    "reverb-snap",
    "reverb-retire",
];

/// Finds a sibling program: next to the running executable, else on PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let path = std::env::var_os("PATH").unwrap_or_default();
    here.into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs until SIGTERM/SIGINT; returns the exit code.
pub fn run(source: &dyn JobSource, opts: &Options) -> Result<i32> {
    for name in CHILDREN {
        if find_tool(name).is_none() {
            return Err(Error::Usage(format!(
                "{name} is not installed next to reverberator nor on PATH (build every binary: cargo build --release --workspace)"
            )));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Error::Invalid(format!("cannot handle signals: {e}")))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| Error::Invalid(format!("cannot handle signals: {e}")))?;
    let jobs = source.jobs()?;
    if !opts.wait
        && let Some(msg) = jobs.iter().find_map(watched_elsewhere)
    {
        (opts.log)(&format!(
            "{msg}; exiting (use --wait to wait for it to stop)"
        ));
        return Ok(EXIT_TEMPFAIL);
    }
    (opts.log)(&format!("starting {} job(s)", jobs.len()));
    let mut runners: BTreeMap<String, RunnerHandle> = BTreeMap::new();
    for job in jobs {
        runners.insert(
            job.name.clone(),
            RunnerHandle::start(job, opts.clone(), Arc::clone(&stop)),
        );
    }
    let mut systemd = Systemd::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        systemd.tick(&runners);
        if reload.swap(false, Ordering::SeqCst) {
            if opts.config_file.is_none() {
                (opts.log)(
                    "SIGHUP: there is no configuration file to reload (the job was given with --source and --vault); nothing changed",
                );
                continue;
            }
            match source.jobs() {
                Err(e) => (opts.log)(&format!(
                    "reload failed, keeping the previous configuration: {e}"
                )),
                Ok(new) => apply_reload(&mut runners, new, opts, &stop),
            }
        }
    }
    systemd.stopping();
    (opts.log)("stopping: finishing versions in progress");
    for (_, r) in runners {
        r.stop_and_join();
    }
    (opts.log)("stopped");
    Ok(0)
}

/// What the service manager hears (`Type=notify`, docs/install.md): `READY=1` once every
/// job is past its start (watching, waiting, paused or failing), a `STATUS=` summary when it
/// changes, `WATCHDOG=1` at half the unit's `WatchdogSec`.
struct Systemd {
    notifier: Option<Notifier>,
    ready: bool,
    status: String,
    last_look: Option<Instant>,
    watchdog: Option<(Duration, Instant)>,
}

impl Systemd {
    fn new() -> Systemd {
        let notifier = Notifier::from_env();
        let watchdog = notifier
            .as_ref()
            .and(notify::watchdog_interval())
            .map(|d| (d, Instant::now()));
        Systemd {
            notifier,
            ready: false,
            status: String::new(),
            last_look: None,
            watchdog,
        }
    }

    fn tick(&mut self, runners: &BTreeMap<String, RunnerHandle>) {
        let Some(n) = &self.notifier else { return };
        if let Some((every, last)) = &mut self.watchdog
            && last.elapsed() >= *every
        {
            n.send("WATCHDOG=1");
            *last = Instant::now();
        }
        if self
            .last_look
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_look = Some(Instant::now());
        let jobs: Vec<&JobConfig> = runners.values().map(|r| &r.job).collect();
        let (summary, started) = summary(&jobs);
        if summary != self.status {
            n.send(&format!("STATUS={summary}"));
            self.status = summary;
        }
        if started && !self.ready {
            n.send("READY=1");
            self.ready = true;
        }
    }

    fn stopping(&self) {
        if let Some(n) = &self.notifier {
            n.send("STOPPING=1\nSTATUS=stopping: finishing versions in progress");
        }
    }
}

/// `2 jobs: 1 watching, 1 paused; last version 12s ago`, and whether every job is past its
/// start (its live state is watching, waiting, paused or failing).
fn summary(jobs: &[&JobConfig]) -> (String, bool) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut started = true;
    let mut newest: Option<std::time::SystemTime> = None;
    for job in jobs {
        let state = live::read(&live::file_of(
            &live::runtime_dir(),
            &job.vault,
            &job.folder,
        ))
        .map(|l| l.state);
        started &= matches!(
            state,
            Some(
                JobState::Watching { .. }
                    | JobState::Waiting { .. }
                    | JobState::Paused { .. }
                    | JobState::Failing { .. }
            )
        );
        let word = state.as_ref().map_or("starting", JobState::word);
        *counts.entry(word.to_owned()).or_default() += 1;
        let index = JobDir::new(&job.vault, &job.folder).index();
        if let Some(t) = crate::format::index::read_index_or_empty(&index)
            .ok()
            .and_then(|rows| {
                rows.last()
                    .and_then(|r| crate::format::time::parse_rfc3339(&r.created))
            })
        {
            newest = newest.max(Some(t));
        }
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let noun = if jobs.len() == 1 { "job" } else { "jobs" };
    let mut out = format!("{} {noun}: {}", jobs.len(), parts.join(", "));
    if let Some(t) = newest {
        let now = std::time::SystemTime::now();
        out.push_str(&format!(
            "; last version {} ago",
            crate::format::time::human_age(t, now)
        ));
    }
    (out, started)
}

/// "job J is watched by another supervisor (pid N)" when its run.lock is held.
fn watched_elsewhere(job: &JobConfig) -> Option<String> {
    let lock = JobDir::new(&job.vault, &job.folder).run_lock();
    if !lock.exists() {
        return None;
    }
    match JobLock::acquire(&lock, &job.name, Wait::NoWait) {
        Err(Error::Locked(_)) => Some(format!(
            "{}: another supervisor{} is watching this job (its run.lock is held)",
            job.name,
            lock_holder(&lock).map_or(String::new(), |p| format!(" (pid {p})"))
        )),
        _ => None,
    }
}

/// The pid holding a `flock` on `path`, from `/proc/locks` (matched by device and inode).
pub fn lock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    text.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let id: Vec<&str> = f.get(5)?.split(':').collect();
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        let same = id.len() == 3
            && hex(id[0]) == Some(u64::from(major))
            && hex(id[1]) == Some(u64::from(minor))
            && id[2].parse::<u64>().ok() == Some(meta.ino());
        if same { f.get(4)?.parse().ok() } else { None }
    })
}

/// Stops runners whose job was removed or changed, starts the new and changed ones.
fn apply_reload(
    runners: &mut BTreeMap<String, RunnerHandle>,
    new: Vec<JobConfig>,
    opts: &Options,
    stop: &Arc<AtomicBool>,
) {
    let new: BTreeMap<String, JobConfig> = new.into_iter().map(|j| (j.name.clone(), j)).collect();
    let stale: Vec<String> = runners
        .iter()
        .filter(|(name, r)| new.get(*name) != Some(&r.job))
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        if let Some(r) = runners.remove(&name) {
            (opts.log)(&format!(
                "{name}: stopping (configuration changed or removed)"
            ));
            r.stop_and_join();
        }
    }
    for (name, job) in new {
        if let std::collections::btree_map::Entry::Vacant(slot) = runners.entry(name) {
            (opts.log)(&format!("{}: starting (configuration reloaded)", job.name));
            slot.insert(RunnerHandle::start(job, opts.clone(), Arc::clone(stop)));
        }
    }
}

struct RunnerHandle {
    job: JobConfig,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RunnerHandle {
    /// Starts the job's thread; a thread that cannot start is logged and journaled (the job
    /// then does not run until the configuration is reloaded).
    fn start(job: JobConfig, opts: Options, global_stop: Arc<AtomicBool>) -> RunnerHandle {
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

    fn stop_and_join(mut self) {
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
    NoWatch(String),
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
    retire_failure: Option<(String, Option<Blocker>)>,
    /// The live state file (docs/design.md#live-state) and what it holds now.
    live_path: PathBuf,
    live: Live,
    live_written: Instant,
}

impl Runner {
    fn new(
        job: JobConfig,
        opts: Options,
        stop: Arc<AtomicBool>,
        global_stop: Arc<AtomicBool>,
    ) -> Runner {
        Runner {
            opts,
            stop,
            global_stop,
            backoff: Duration::from_secs(1),
            journal: None,
            journal_failure_logged: false,
            paused: false,
            failure: None,
            watch_error: None,
            missing: None,
            lock_wait: false,
            retire_failure: None,
            live_path: live::file_of(&live::runtime_dir(), &job.vault, &job.folder),
            // Not a supervisor's state: the first one set starts its `since`.
            live: Live {
                state: JobState::Stopped,
                since: live::now(),
                pid: std::process::id(),
            },
            live_written: Instant::now(),
            job,
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
                    self.failure = None;
                    self.set_live(JobState::Paused { why });
                    self.wait_for_mounts();
                }
                Halt::NoWatch(why) => self.rescan_only(&why, &mut lock),
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
            (Some((said, blocker)), JobState::Watching { .. } | JobState::Waiting { .. }) => {
                JobState::Failing {
                    why: said.clone(),
                    next_retry: None,
                    resolve: blocker.map(|b| self.resolving_command(b)),
                }
            }
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
    fn rescan_only(&mut self, why: &str, lock: &mut Option<JobLock>) {
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
        self.set_live(JobState::Watching {
            fallback: Some(msg),
        });
        let until = Instant::now() + Duration::from_secs(600);
        while !self.stopping() && Instant::now() < until {
            if self.prepare(lock).is_err() {
                return;
            }
            if let Err(Halt::Paused(_)) = self.snap(None) {
                return;
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
        let vault = self.open_vault()?;
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
        if let Err(h) = self.prepare(lock) {
            return h;
        }
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
        if self.journal.is_none() || lock.is_none() {
            // The job was just created by the first version: open what prepare() could not.
            self.prepare(lock)?;
        }
        Ok(())
    }

    fn event_loop(&mut self, rx: &Receiver<Msg>, watch: &mut Child) -> Halt {
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
                Err(RecvTimeoutError::Timeout) => continue,
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

    /// Stopping: the watcher is asked to flush (SIGTERM) and its last events join the batch,
    /// then one last version is taken of everything pending, all within `stop_timeout`.
    fn last_version(
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
    fn event_line(
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
    fn waiting(&mut self, pending: usize) {
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

    /// One record of reverb-mountwatch: `lost` pauses the job.
    fn mount_line(&mut self, line: &str) -> Option<Halt> {
        if line == mountwatch::HEADER {
            return None;
        }
        match Record::parse(line) {
            Ok(r) if r.state == State::Lost => {
                let shown = line.replace('\t', " ");
                self.note(JournalEvent::MountLost, &shown);
                Some(Halt::Paused(format!(
                    "a filesystem of the job was lost: {shown}"
                )))
            }
            Ok(_) => None,
            Err(e) => {
                self.complain(&format!("reverb-mountwatch: {e}"));
                None
            }
        }
    }

    fn watch_said(&mut self, line: String) {
        self.complain(&prefixed("reverb-watch", &line));
        self.watch_error = Some(line);
    }

    /// Collects what reverb-watch still writes on stderr after its stdout closed
    /// (journaled when `journal` is set).
    fn last_words(&mut self, rx: &Receiver<Msg>, journal: bool) {
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
    fn watch_ended(&mut self, watch: &mut Child, what: &str) -> Halt {
        let status = exit_status(watch);
        let said = self.watch_error.take();
        match (status.and_then(|s| s.code()), said) {
            (Some(EXIT_WATCH_LIMIT), Some(e)) => Halt::NoWatch(e),
            (Some(EXIT_WATCH_LIMIT), None) => Halt::NoWatch("an inotify limit".into()),
            (_, Some(e)) => Halt::Failed(format!("{what}: {e}")),
            (_, None) => Halt::Failed(what.to_owned()),
        }
    }

    /// Journals a raw event as the watcher's (tool `watch`): the entry type as detail,
    /// `-> to_path` for a move.
    fn journal_event(&mut self, e: &EventLine) {
        let Some(j) = &mut self.journal else {
            return;
        };
        if let Err(err) = crate::run::batch::journal_event(j, e) {
            crate::error::warn(&err.to_string());
        }
    }

    fn start_watch(&self, tx: Sender<Msg>) -> std::result::Result<Child, Halt> {
        let s = &self.job.settings;
        let mut c = self.command("reverb-watch");
        c.arg("--quiet-period")
            .arg(format_duration(s.min_snapshot_time));
        c.arg("--max-delay")
            .arg(format_duration(s.max_snapshot_delay));
        for pat in &s.exclude {
            c.arg("--exclude").arg(pat);
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
    fn start_mountwatch(&mut self, tx: Sender<Msg>) -> Option<Child> {
        let mut c = self.command("reverb-mountwatch");
        c.arg(&self.job.source)
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

    fn wait_ready(&mut self, rx: &Receiver<Msg>) -> bool {
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
    fn snap(&mut self, batch: Option<&[String]>) -> std::result::Result<(), Halt> {
        self.snap_until(batch, None)
    }

    /// [`Runner::snap`], abandoned at `deadline` (reverb-snap is then stopped: a version it
    /// did not finish is never visible, and the next rescan takes it).
    fn snap_until(
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
                self.failure = None;
                let what = if made.is_empty() { "no change" } else { &made };
                self.note(
                    JournalEvent::Batch,
                    &format!("{what} ({} ms)", started.elapsed().as_millis()),
                );
                if !made.is_empty() {
                    self.say(&format!("version {made}"));
                    self.retire();
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
    fn run_snap(
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
            Ok(out) => out.map_err(|e| Halt::Failed(format!("reverb-snap: {e}"))),
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
    fn progress_file(&self) -> PathBuf {
        self.live_path.with_extension("progress")
    }

    /// Where a child leaves the [`Blocker`] of its failure (next to the live file).
    fn blocker_file(&self) -> PathBuf {
        self.live_path.with_extension("blocker")
    }

    /// `copying`: what is being built and how far it got (`N entries, SIZE so far`).
    fn show_progress(&mut self, what: &str) {
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

    fn snap_command(&self, with_batch: bool) -> Command {
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

    fn retire(&mut self) {
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
                self.retire_failure = None;
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
            Ok(o) => {
                // reverb-retire journals its own failures; its lines name it already. The
                // same failure again is not repeated in the log.
                let said = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                if self.retire_failure.as_ref().map(|(s, _)| s) != Some(&said) {
                    for line in said.lines() {
                        self.say(&prefixed("reverb-retire", line));
                    }
                }
                self.retire_failure = Some((said, cli::take_blocker(&blocker_file)));
            }
            Err(e) => self.complain(&format!("cannot run reverb-retire: {e}")),
        }
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
        Blocker::SizeLimitUnmeetable { needs, .. } => {
            let file = config_file.map_or("the configuration".to_owned(), show);
            format!(
                "raise vault_size_limit of job {name} in {file} above what the newest version needs ({}), then reload (SIGHUP)",
                crate::format::settings::format_size(needs)
            )
        }
    }
}

/// `line` with one `tool: ` prefix: children's messages already carry theirs.
fn prefixed(tool: &str, line: &str) -> String {
    let line = line.trim();
    if line.starts_with(&format!("{tool}:")) {
        line.to_owned()
    } else {
        format!("{tool}: {line}")
    }
}

fn forward(out: ChildStdout, tx: Sender<Msg>, each: fn(String) -> Msg, end: Msg) {
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

fn forward_stderr(err: std::process::ChildStderr, tx: Sender<Msg>) {
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
fn exit_status(child: &mut Child) -> Option<std::process::ExitStatus> {
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

fn kill(child: &mut Child) {
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
