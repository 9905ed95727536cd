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
//! [`EventLine::parse`](crate::format::events::EventLine::parse) after the [`HEADER`](crate::format::events::HEADER) (which means "every watch is in
//! place"), mount records with [`Record::parse`](crate::capture::mountwatch::Record::parse); what a child's exit means is decided by its
//! exit status, never by its stderr: `reverb-watch` exiting [`EXIT_WATCH_LIMIT`](crate::error::EXIT_WATCH_LIMIT) (an inotify
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
//!
//! Layout: this module owns the process (the signals, reload, the job threads' lifetimes);
//! `runner` is one job's thread (its state machine, `runner/event_loop.rs` its events,
//! `runner/children.rs` the programs it starts); `systemd` is what the service manager hears.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{EXIT_TEMPFAIL, Error, Result};
use crate::run::config::JobConfig;
use crate::vault::layout::JobDir;

mod replicas;
mod runner;
mod systemd;

use runner::RunnerHandle;
use systemd::Systemd;

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

/// "job J is watched by another supervisor (pid N)" when its run.lock is held.
fn watched_elsewhere(job: &JobConfig) -> Option<String> {
    let lock = JobDir::new(&job.vault, &job.folder).run_lock();
    if !lock.exists() {
        return None;
    }
    // Probed without taking it: a lock taken here for a moment would look held to a
    // `status` (or another supervisor) probing at the same moment.
    (crate::vault::lock::held(&lock, &job.name) == Some(true)).then(|| {
        format!(
            "{}: another supervisor{} is watching this job (its run.lock is held)",
            job.name,
            lock_holder(&lock).map_or(String::new(), |p| format!(" (pid {p})"))
        )
    })
}

/// The pid holding a `flock` on `path`, from `/proc/locks` ([`crate::vault::lock::holder`]).
pub fn lock_holder(path: &Path) -> Option<u32> {
    crate::vault::lock::holder(path)
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
