//! What the service manager hears from the supervisor (`Type=notify`, docs/install.md):
//! readiness once every job is past its start, a one-line `STATUS=` summary of the jobs'
//! states when it changes, and the watchdog ping.
//!
//! Reads only the jobs' live files and index.tsv; writes nothing but the notify socket.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::run::config::JobConfig;
use crate::run::live::{self, JobState};
use crate::run::notify::{self, Notifier};
use crate::vault::layout::JobDir;

use super::runner::RunnerHandle;

/// What the service manager hears (`Type=notify`, docs/install.md): `READY=1` once every
/// job is past its start (watching, waiting, paused or failing), a `STATUS=` summary when it
/// changes, `WATCHDOG=1` at half the unit's `WatchdogSec`.
pub(super) struct Systemd {
    notifier: Option<Notifier>,
    ready: bool,
    status: String,
    last_look: Option<Instant>,
    watchdog: Option<(Duration, Instant)>,
}

impl Systemd {
    pub(super) fn new() -> Systemd {
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

    pub(super) fn tick(&mut self, runners: &BTreeMap<String, RunnerHandle>) {
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

    pub(super) fn stopping(&self) {
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
