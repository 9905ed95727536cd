//! The measures of docs/benchmarks.md, each against its peer in the same run.
//!
//! Owns: [`Bench`], the state the measures share and hand on to each other, in this order:
//! [`copy`] makes the vault's first version and the first `rsync` snapshot (the base of the
//! `--link-dest` chain); [`versions`] adds versions and snapshots in lockstep (one of each per
//! round of changes), measures the unchanged rescan, the disk usage of ~20 of each, then
//! retirement; [`steady`] then holds 100+ versions and measures a version plus the
//! retirement it triggers, with the default and with count-only rules; [`watch`] last,
//! since its latency runs add versions; [`web`] measures `reverb-web`'s pages over the
//! versions [`steady`] left. [`backup_peers`] compares a fresh job with restic
//! and borg step by step. [`replication`] runs last (its changes of the tree are its own):
//! T8, replicating the vault against `rsync -a --delete` of it.
//!
//! Invariants: ours and the peer always see the same tree and the same change set; each
//! round of changes is consumed by exactly one of our versions and one `rsync` snapshot, so
//! both always start from an identical previous state.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::peers::{Cache, Timing, Tools};
use crate::report::Row;
use crate::tree::{Rng, Tree};

pub mod backup_peers;
pub mod copy;
pub mod integrity;
pub mod replication;
pub mod scale;
pub mod steady;
pub mod versions;
pub mod watch;
pub mod web;

/// The job name used in every vault.
pub const JOB: &str = "bench";

/// Shared state of one benchmark run.
pub struct Bench {
    pub tools: Tools,
    pub cache: Cache,
    pub reps: usize,
    pub scratch: PathBuf,
    pub tree: Tree,
    pub rng: Rng,
    pub rows: Vec<Row>,
    /// Our vault (made by the last repetition of the first copy).
    pub vault: PathBuf,
    /// `rsync --link-dest` snapshots, oldest first.
    pub chain: Vec<PathBuf>,
    /// How many versions (and snapshots) to hold when measuring disk usage and retirement.
    pub versions: usize,
    pub quiet_ms: u64,
    /// The scale run (docs/benchmarks.md#the-scale-run-t7): copies a measure no longer needs
    /// are removed at once, since four copies of a 1,000,000-file tree do not fit.
    pub scale: bool,
}

impl Bench {
    /// Records a row and shows it at once.
    pub fn push(&mut self, row: Row) {
        eprintln!(
            "  {}: ours {:?} {} {:?} -> {}",
            row.measure, row.ours, row.peer_name, row.peer, row.result
        );
        self.rows.push(row);
    }

    pub fn job_dir(&self) -> PathBuf {
        self.vault.join(JOB)
    }

    /// `reverb-snap --vault V --job bench`.
    pub fn snap(&self) -> Command {
        let mut c = self.tools.ours("reverb-snap");
        c.arg("--vault").arg(&self.vault).args(["--job", JOB]);
        c
    }

    /// `reverb-snap` making a version from a batch of events on its stdin, as the
    /// supervisor runs it: the vault's filesystem was probed when the job started (here,
    /// by the first copy), so not again for each version (`--vault-probed`,
    /// docs/filesystems.md), and who may read the vault was put right by that start's
    /// first version (`--vault-secured`, docs/security.md); the events are still journaled
    /// by reverb-snap itself.
    pub fn snap_events(&self) -> Command {
        let mut c = self.snap();
        c.args(["--changes", "-", "--vault-probed", "--vault-secured"]);
        c
    }

    /// Version directories of the job, oldest first.
    pub fn versions_on_disk(&self) -> Result<Vec<PathBuf>> {
        let dir = self.job_dir();
        let mut v: Vec<(u64, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let n = name
                .strip_prefix('V')
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse().ok());
            if let Some(n) = n {
                v.push((n, e.path()));
            }
        }
        v.sort();
        Ok(v.into_iter().map(|(_, p)| p).collect())
    }

    /// The path of the `i`-th `--link-dest` snapshot.
    pub fn chain_path(&self, i: usize) -> PathBuf {
        self.scratch.join("rsnap").join(format!("{i:04}"))
    }

    /// Starts the chain of snapshots with a plain `rsync -a` copy of the tree into slot
    /// `i` (not timed: the peer's side of a measure that needs one to start from).
    pub fn start_chain(&mut self, rsync: &Path, i: usize) -> Result<()> {
        let first = self.chain_path(i);
        if let Some(parent) = first.parent() {
            std::fs::create_dir_all(parent)?;
        }
        crate::peers::timed(
            Command::new(rsync)
                .arg("-a")
                .arg(slash(&self.tree.root))
                .arg(slash(&first)),
        )?;
        self.chain.push(first);
        Ok(())
    }

    /// `rsync -a --link-dest=<the chain's last> <tree>/ <new>/` (the cache prepared first),
    /// then `new` joins the chain; how long rsync took (wall and CPU).
    pub fn link_dest_snapshot(&mut self, rsync: &Path, new: PathBuf) -> Result<Timing> {
        let prev = self.chain.last().cloned().unwrap_or_default();
        let mut link = std::ffi::OsString::from("--link-dest=");
        link.push(&prev);
        self.cache.prepare()?;
        let d = crate::peers::timed(
            Command::new(rsync)
                .arg("-a")
                .arg(link)
                .arg(slash(&self.tree.root))
                .arg(slash(&new)),
        )?;
        self.chain.push(new);
        Ok(d)
    }
}

/// A duration in seconds.
pub fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// A directory with a trailing slash (rsync: "the contents of").
pub fn slash(p: &Path) -> std::ffi::OsString {
    let mut s = p.as_os_str().to_owned();
    s.push("/");
    s
}
