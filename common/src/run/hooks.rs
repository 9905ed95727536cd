//! A job's hooks (docs/configuration.md#hooks): `on_version`, `on_failure`, `on_recovery`
//! commands and the `ping_url` pings, run by the supervisor on one thread per job, in the
//! order the events happened, never in the job's way.
//!
//! Owns: the hook thread ([`Hooks`]), running one command (no shell; its environment
//! `REVERB_JOB`, `REVERB_VERSION`, `REVERB_STATE`, `REVERB_MESSAGE`; killed with its
//! process group at `hook_timeout`) and one ping (`GET URL`, or `URL/fail`).
//!
//! Invariants: a hook or a ping that fails, exits non-zero or times out is journaled
//! (`hook`, docs/format.md#journaltsv) and logged, and nothing else happens: the job goes
//! on; the job's thread only queues (it never waits for a hook); a hook's output is read
//! and dropped (its last stderr line goes into the journal line).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use crate::format::journal::{Journal, JournalEvent};
use crate::format::settings::{HookCommand, JobSettings};

/// What happened, for the hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// A new version was made.
    Version,
    /// The job started failing.
    Failure,
    /// The job works again.
    Recovery,
}

impl HookEvent {
    /// The setting that names its command.
    pub fn key(self) -> &'static str {
        match self {
            HookEvent::Version => "on_version",
            HookEvent::Failure => "on_failure",
            HookEvent::Recovery => "on_recovery",
        }
    }
}

/// One event for the hook thread.
#[derive(Debug, Clone)]
pub struct HookCall {
    /// What happened.
    pub event: HookEvent,
    /// The version directory (a new version), or empty.
    pub version: String,
    /// The job's state word after the event.
    pub state: &'static str,
    /// A sentence about it (the error in full for a failure).
    pub message: String,
}

/// A job's hook thread; dropping it lets the queued hooks finish, then the thread ends.
pub struct Hooks {
    tx: Option<Sender<HookCall>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// How long a stopping job waits for its queued hooks: one `hook_timeout` (and a
    /// ping's) beyond it, so a stop stays within the service manager's patience.
    grace: Duration,
}

impl Hooks {
    /// Starts the thread of job `job` with its `settings` (none when the job has no hook);
    /// a hook that fails is journaled in `journal` (opened then: the job folder of a new
    /// job appears with its first version).
    pub fn start(job: &str, settings: &JobSettings, journal: PathBuf, log: fn(&str)) -> Hooks {
        let any = settings.on_version.is_some()
            || settings.on_failure.is_some()
            || settings.on_recovery.is_some()
            || settings.ping_url.is_some();
        let grace = settings.hook_timeout * 2 + Duration::from_secs(1);
        if !any {
            return Hooks {
                tx: None,
                thread: None,
                grace,
            };
        }
        let (tx, rx) = mpsc::channel::<HookCall>();
        let job = job.to_owned();
        let settings = settings.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("hooks-{job}"))
            .spawn(move || {
                for call in rx {
                    for problem in run_call(&job, &settings, &call) {
                        log(&format!("{job}: {problem}"));
                        match Journal::open(&journal, "supervisor") {
                            Ok(mut j) => j.note(JournalEvent::Hook, b"", &problem),
                            Err(e) => log(&format!("{job}: {e}")),
                        }
                    }
                }
            });
        match spawned {
            Ok(t) => Hooks {
                tx: Some(tx),
                thread: Some(t),
                grace,
            },
            Err(e) => {
                log(&format!(
                    "cannot start the hooks' thread: {e}; hooks are not run"
                ));
                Hooks {
                    tx: None,
                    thread: None,
                    grace,
                }
            }
        }
    }

    /// Queues `call` (never waits for it).
    pub fn fire(&self, call: HookCall) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(call);
        }
    }
}

impl Drop for Hooks {
    /// The queued hooks run to their end (each bounded by `hook_timeout`), waited for at
    /// most [`Hooks::grace`]; past it the process may exit under them.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let end = Instant::now() + self.grace;
            while !t.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Runs what `call` asks of `settings`: the event's command, then the ping. Returns the
/// problems, each a journal line's detail.
pub fn run_call(job: &str, settings: &JobSettings, call: &HookCall) -> Vec<String> {
    let mut problems = Vec::new();
    let command = match call.event {
        HookEvent::Version => &settings.on_version,
        HookEvent::Failure => &settings.on_failure,
        HookEvent::Recovery => &settings.on_recovery,
    };
    if let Some(cmd) = command
        && let Err(why) = run_command(job, cmd, call, settings.hook_timeout)
    {
        problems.push(format!("{}: {why}", call.event.key()));
    }
    if let Some(url) = &settings.ping_url {
        let url = match call.event {
            HookEvent::Failure => format!("{}/fail", url.trim_end_matches('/')),
            HookEvent::Version | HookEvent::Recovery => url.clone(),
        };
        if let Err(why) = ping(&url, settings.hook_timeout) {
            problems.push(format!("ping_url: GET {url}: {why}"));
        }
    }
    problems
}

/// Runs one hook command to its end or its timeout.
fn run_command(
    job: &str,
    cmd: &HookCommand,
    call: &HookCall,
    timeout: Duration,
) -> Result<(), String> {
    let argv = cmd.argv();
    let shown = argv.join(" ");
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("REVERB_JOB", job)
        .env("REVERB_VERSION", &call.version)
        .env("REVERB_STATE", call.state)
        .env("REVERB_MESSAGE", &call.message)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("`{shown}` cannot start: {e}"))?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = e.by_ref().take(64 << 10).read_to_string(&mut text);
            // Read the rest away so the hook never blocks on a full pipe.
            let _ = std::io::copy(&mut e, &mut std::io::sink());
        }
        text
    });
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => break None,
            Err(e) => return Err(format!("`{shown}`: {e}")),
        }
    };
    let Some(status) = status else {
        // The whole process group: a hook's own children go too.
        let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        return Err(format!(
            "`{shown}` did not finish within hook_timeout ({}): stopped",
            crate::format::settings::format_duration(timeout)
        ));
    };
    let said = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let last = said.lines().rev().find(|l| !l.trim().is_empty());
    Err(match last {
        Some(l) => format!("`{shown}` failed ({status}): {}", l.trim()),
        None => format!("`{shown}` failed ({status})"),
    })
}

/// `GET url`, within `timeout`; a status of 400 or more is a failure.
fn ping(url: &str, timeout: Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .user_agent("reverberator")
        .build()
        .into();
    agent.get(url).call().map(|_| ()).map_err(|e| e.to_string())
}
