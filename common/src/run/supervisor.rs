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
//! Signals: SIGTERM/SIGINT stop every job after the version in progress (children run in
//! their own process group, so a terminal's Ctrl-C does not kill a half-built version) and
//! the process exits 0. SIGHUP reloads the configuration: added jobs start, removed jobs
//! stop, changed jobs restart (with a rescan, so pending changes are not lost).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{EXIT_TEMPFAIL, Error, Result, show};
use crate::format::journal::Journal;
use crate::format::settings::format_duration;
use crate::run::config::JobConfig;
use crate::vault::layout::Vault;
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
    log(&format!("starting {} job(s)", jobs.len()));
    let mut runners: BTreeMap<String, RunnerHandle> = BTreeMap::new();
    for job in jobs {
        runners.insert(
            job.name.clone(),
            RunnerHandle::start(job, opts.clone(), Arc::clone(&stop)),
        );
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if reload.swap(false, Ordering::SeqCst) {
            match source.jobs() {
                Err(e) => log(&format!(
                    "reload failed, keeping the previous configuration: {e}"
                )),
                Ok(new) => apply_reload(&mut runners, new, opts, &stop),
            }
        }
    }
    log("stopping: finishing versions in progress");
    for (_, r) in runners {
        r.stop_and_join();
    }
    log("stopped");
    Ok(0)
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
            log(&format!(
                "{name}: stopping (configuration changed or removed)"
            ));
            r.stop_and_join();
        }
    }
    for (name, job) in new {
        if let std::collections::btree_map::Entry::Vacant(slot) = runners.entry(name) {
            log(&format!("{}: starting (configuration reloaded)", job.name));
            slot.insert(RunnerHandle::start(job, opts.clone(), Arc::clone(stop)));
        }
    }
}

fn log(msg: &str) {
    eprintln!("reverberator: {msg}");
}

struct RunnerHandle {
    job: JobConfig,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RunnerHandle {
    fn start(job: JobConfig, opts: Options, global_stop: Arc<AtomicBool>) -> RunnerHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let mut runner = Runner::new(job.clone(), opts, Arc::clone(&stop), global_stop);
        let thread = std::thread::Builder::new()
            .name(format!("job-{}", job.name))
            .spawn(move || runner.run())
            .ok();
        RunnerHandle { job, stop, thread }
    }

    fn stop_and_join(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
    /// The job is paused (identity lost); the next successful check journals the return.
    paused: bool,
    /// The last line reverb-watch wrote on stderr.
    watch_error: Option<String>,
}

impl Runner {
    fn new(
        job: JobConfig,
        opts: Options,
        stop: Arc<AtomicBool>,
        global_stop: Arc<AtomicBool>,
    ) -> Runner {
        Runner {
            job,
            opts,
            stop,
            global_stop,
            backoff: Duration::from_secs(1),
            journal: None,
            paused: false,
            watch_error: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.global_stop.load(Ordering::SeqCst)
    }

    fn say(&self, msg: &str) {
        log(&format!("{}: {msg}", self.job.name));
    }

    fn note(&mut self, event: &str, detail: &str) {
        if let Some(j) = &mut self.journal {
            j.note(event, b"", detail);
        }
    }

    fn tool(&self, name: &str) -> PathBuf {
        find_tool(name).unwrap_or_else(|| PathBuf::from(name))
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.tool(name));
        // Own process group: a terminal's Ctrl-C reaches the supervisor only, which then
        // lets the version in progress finish.
        c.process_group(0);
        c
    }

    fn run(&mut self) {
        let mut lock: Option<JobLock> = None;
        while !self.stopping() {
            let outcome = self.cycle(&mut lock);
            match outcome {
                Halt::Stopped => break,
                Halt::Paused(why) => {
                    if !self.paused {
                        self.say(&format!("paused: {why}"));
                        self.note("paused", &why);
                    }
                    self.paused = true;
                    self.wait_for_mounts();
                }
                Halt::NoWatch(why) => self.rescan_only(&why, &mut lock),
                Halt::Failed(why) => {
                    self.say(&format!(
                        "{why}; retrying in {}",
                        format_duration(self.backoff)
                    ));
                    self.note(
                        "error",
                        &format!("{why}; retrying in {}", format_duration(self.backoff)),
                    );
                    self.sleep(self.backoff);
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
        self.note("stop", "supervisor stopped watching");
        drop(lock);
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
        self.note("rescan", &msg);
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

    fn wait_for_mounts(&self) {
        let stop = AtomicBool::new(false);
        let end = Instant::now() + Duration::from_secs(60);
        while !self.stopping() && Instant::now() < end {
            match crate::capture::mountwatch::wait_for_mount_change(
                Some(Duration::from_millis(250)),
                &stop,
            ) {
                Ok(true) => return,
                Ok(false) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Checks the vault and the source; opens the journal; takes run.lock.
    fn prepare(&mut self, lock: &mut Option<JobLock>) -> std::result::Result<(), Halt> {
        let vault = if self.opts.init {
            Vault::init(&self.job.vault)
        } else {
            Vault::open(&self.job.vault)
        };
        let vault = match vault {
            Ok(v) => v,
            Err(e) if e.exit_code() == EXIT_TEMPFAIL => return Err(Halt::Paused(e.to_string())),
            Err(e) => return Err(Halt::Failed(e.to_string())),
        };
        let dir = vault.job_dir(&self.job.folder);
        if dir.exists() {
            let file = crate::format::jobfile::JobFile::read(&dir.job_toml())
                .map_err(|e| Halt::Failed(e.to_string()))?;
            if let Some(rec) = &file.identity.vault {
                crate::capture::identity::verify("vault", rec, vault.root())
                    .map_err(|e| Halt::Paused(e.to_string()))?;
            }
            if self.journal.is_none() {
                self.journal = Journal::open(&dir.journal(), "supervisor").ok();
            }
            if let Some(rec) = &file.identity.source
                && let Err(e) = crate::capture::identity::verify("source", rec, &self.job.source)
            {
                self.note("mount-lost", &e.to_string());
                return Err(Halt::Paused(e.to_string()));
            }
            if self.paused {
                self.paused = false;
                self.say("the source and the vault are back: resuming with a rescan");
                self.note("mount-restored", "identities match again; rescanning");
            }
            if lock.is_none() {
                match JobLock::acquire(&dir.run_lock(), &self.job.name, Wait::NoWait) {
                    Ok(l) => *lock = Some(l),
                    Err(_) => {
                        return Err(Halt::Failed(
                            "another supervisor is watching this job (run.lock is held)".into(),
                        ));
                    }
                }
            }
        } else if !self.job.source.is_dir() {
            return Err(Halt::Paused(format!(
                "source {} is not available",
                show(&self.job.source)
            )));
        }
        Ok(())
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
        if !self.wait_ready(&rx) {
            kill(&mut watch);
            return if self.stopping() {
                Halt::Stopped
            } else {
                self.watch_failed("reverb-watch did not start")
            };
        }
        // Watches are in place: now the catch-up rescan (or the first version).
        if let Err(h) = self.snap(None) {
            kill(&mut watch);
            return h;
        }
        if self.journal.is_none() || lock.is_none() {
            // The job was just created by the first version: open what prepare() could not.
            if let Err(h) = self.prepare(lock) {
                kill(&mut watch);
                return h;
            }
        }
        let mut mount = self.start_mountwatch(tx.clone());
        self.note("start", "watching");
        self.say("watching");
        let result = self.event_loop(&rx);
        kill(&mut watch);
        if let Some(m) = &mut mount {
            kill(m);
        }
        result
    }

    fn event_loop(&mut self, rx: &Receiver<Msg>) -> Halt {
        let mut batch: Vec<String> = Vec::new();
        loop {
            if self.stopping() {
                return Halt::Stopped;
            }
            let msg = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Halt::Failed("lost the children's pipes".into());
                }
            };
            match msg {
                Msg::Watch(line) => {
                    let event = line.split('\t').nth(1).unwrap_or("").to_owned();
                    if event == "flush" {
                        if !batch.is_empty() {
                            let lines = std::mem::take(&mut batch);
                            if let Err(h) = self.snap(Some(&lines)) {
                                return h;
                            }
                        }
                        continue;
                    }
                    if event == "event" {
                        continue; // the header
                    }
                    self.journal_event(&line);
                    if self.opts.verbose > 0 {
                        self.say(&format!("event {line}"));
                    }
                    batch.push(line);
                }
                Msg::WatchErr(line) => self.watch_said(line),
                Msg::WatchEnd => {
                    // Let its last words (stderr) arrive before deciding why it ended.
                    while let Ok(Msg::WatchErr(line)) = rx.recv_timeout(Duration::from_millis(200))
                    {
                        self.watch_said(line);
                    }
                    return self.watch_failed("reverb-watch exited");
                }
                Msg::Mount(line) => {
                    let state = line.split('\t').nth(2).unwrap_or("");
                    if state == "lost" {
                        self.note("mount-lost", &line.replace('\t', " "));
                        return Halt::Paused(format!(
                            "a filesystem of the job was lost: {}",
                            line.replace('\t', " ")
                        ));
                    }
                }
                Msg::MountEnd => {}
            }
        }
    }

    fn watch_said(&mut self, line: String) {
        self.say(&format!("reverb-watch: {line}"));
        self.note("error", &format!("reverb-watch: {line}"));
        self.watch_error = Some(line);
    }

    fn watch_failed(&mut self, what: &str) -> Halt {
        match self.watch_error.take() {
            Some(e) if e.contains("max_user_watches") || e.contains("max_user_instances") => {
                Halt::NoWatch(e)
            }
            Some(e) => Halt::Failed(format!("{what}: {e}")),
            None => Halt::Failed(what.to_owned()),
        }
    }

    fn journal_event(&mut self, line: &str) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 5
            && let Some(j) = &mut self.journal
        {
            {
                let path = crate::format::tsv::unescape_bytes(f[3]).unwrap_or_default();
                let mut detail = f[2].to_owned();
                if !f[4].is_empty() {
                    detail = format!(
                        "{detail} -> {}",
                        crate::format::tsv::unescape_os(f[4])
                            .map(|p| p.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    );
                }
                let _ = j.log_as("watch", f[1], &path, &detail);
            }
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

    fn start_mountwatch(&self, tx: Sender<Msg>) -> Option<Child> {
        let mut c = self.command("reverb-mountwatch");
        c.arg(&self.job.source)
            .arg(&self.job.vault)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().ok()?;
        let out = child.stdout.take()?;
        forward(out, tx, Msg::Mount, Msg::MountEnd);
        Some(child)
    }

    fn wait_ready(&mut self, rx: &Receiver<Msg>) -> bool {
        let end = Instant::now() + Duration::from_secs(600);
        while Instant::now() < end && !self.stopping() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Watch(line)) if line.starts_with("time\tevent") => return true,
                Ok(Msg::WatchErr(line)) => self.watch_error = Some(line),
                Ok(Msg::WatchEnd) => {
                    while let Ok(Msg::WatchErr(line)) = rx.recv_timeout(Duration::from_millis(200))
                    {
                        self.watch_error = Some(line);
                    }
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
        let mut c = self.command("reverb-snap");
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
        if batch.is_some() {
            c.arg("--changes").arg("-").arg("--events-journaled");
        }
        // A long first copy shows its progress on a terminal (reverb-snap draws it on stderr).
        let on_tty = batch.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
        c.stdin(if batch.is_some() {
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
        let started = Instant::now();
        let mut child = c
            .spawn()
            .map_err(|e| Halt::Failed(format!("cannot start reverb-snap: {e}")))?;
        if let (Some(lines), Some(mut stdin)) = (batch, child.stdin.take()) {
            let mut text = String::from(crate::format::events::HEADER);
            text.push('\n');
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Halt::Failed(format!("reverb-snap: {e}")))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let made = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match out.status.code() {
            Some(0) => {
                self.backoff = Duration::from_secs(1);
                let what = if made.is_empty() {
                    "no change".to_owned()
                } else {
                    made.clone()
                };
                self.note(
                    "batch",
                    &format!("{what} ({} ms)", started.elapsed().as_millis()),
                );
                if !made.is_empty() {
                    self.say(&format!("version {made}"));
                    self.retire();
                }
                Ok(())
            }
            Some(75) => Err(Halt::Paused(stderr)),
            _ => {
                if !stderr.is_empty() {
                    self.say(&stderr);
                }
                let status: ExitStatus = out.status;
                Err(Halt::Failed(format!("reverb-snap failed ({status})")))
            }
        }
    }

    fn retire(&mut self) {
        let mut c = self.command("reverb-retire");
        c.arg("--vault")
            .arg(&self.job.vault)
            .arg("--job")
            .arg(&self.job.name);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match c.output() {
            Ok(o) if o.status.success() => {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    self.say(&format!("retired {}", line.replace('\t', " ")));
                }
            }
            Ok(o) => {
                let e = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                self.say(&format!("reverb-retire: {e}"));
            }
            Err(e) => self.say(&format!("cannot run reverb-retire: {e}")),
        }
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

fn kill(child: &mut Child) {
    // SIGTERM first (reverb-watch flushes and exits 0), SIGKILL if it lingers.
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
