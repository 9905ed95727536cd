//! Measure 8: the tools a user would pick instead, restic and borg, on the same tree and
//! the same changes, step by step in lockstep with a fresh job of ours: the first backup,
//! a backup after 10 and after 1,000 changed files (ours: a rescan, since they rescan too),
//! restoring one file, and dropping the oldest backup (restic `forget --prune`, borg
//! `prune` + `compact`; ours `reverb-retire --keep N-1`). A tool that is not installed
//! skips its rows with the reason printed. Repositories are unencrypted where the tool
//! allows it (borg `--encryption=none`; restic always encrypts, with a fixed password).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::Bench;
use crate::peers::{Timing, timed};
use crate::report::{Row, Unit};

const JOB: &str = "peers";

/// One peer: its repository, and how to run each step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Restic,
    Borg,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Restic => "restic",
            Peer::Borg => "borg",
        }
    }

    fn cmd(self, b: &Bench) -> Command {
        let mut c = Command::new(self.name());
        let repo = repo(b, self);
        match self {
            Peer::Restic => {
                c.env("RESTIC_REPOSITORY", &repo)
                    .env("RESTIC_PASSWORD", "bench")
                    .env("RESTIC_CACHE_DIR", b.scratch.join("restic-cache"));
            }
            Peer::Borg => {
                c.env("BORG_PASSPHRASE", "")
                    .env("BORG_BASE_DIR", b.scratch.join("borg-base"))
                    .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes");
            }
        }
        c
    }

    /// Creates the repository (not timed).
    fn init(self, b: &Bench) -> Result<()> {
        let mut c = self.cmd(b);
        match self {
            Peer::Restic => c.arg("init"),
            Peer::Borg => c.args(["init", "--encryption=none"]).arg(repo(b, self)),
        };
        timed(&mut c).map(|_| ())
    }

    /// One backup of the source, the `n`-th.
    fn backup(self, b: &Bench, n: usize) -> Result<Timing> {
        let mut c = self.cmd(b);
        match self {
            Peer::Restic => c.args(["backup", "--quiet"]).arg(&b.tree.root),
            Peer::Borg => c.arg("create").arg(archive(b, n)).arg("."),
        };
        c.current_dir(&b.tree.root);
        timed_as_set(b, &mut c)
    }

    /// Restores `rel` (relative to the source) from the newest backup, `n`, into `to`.
    fn restore(self, b: &Bench, n: usize, rel: &Path, to: &Path) -> Result<Timing> {
        std::fs::create_dir_all(to)?;
        let mut c = self.cmd(b);
        match self {
            Peer::Restic => c
                .args(["restore", "latest", "--target"])
                .arg(to)
                .arg("--include")
                .arg(b.tree.root.join(rel)),
            Peer::Borg => c.arg("extract").arg(archive(b, n)).arg(rel).current_dir(to),
        };
        timed_as_set(b, &mut c)
    }

    /// Drops the oldest of `n` backups and frees its space.
    fn drop_oldest(self, b: &Bench, n: usize) -> Result<Timing> {
        let keep = (n - 1).to_string();
        match self {
            Peer::Restic => {
                let mut c = self.cmd(b);
                c.args(["forget", "--quiet", "--prune", "--keep-last", &keep]);
                timed_as_set(b, &mut c)
            }
            Peer::Borg => {
                let mut c = self.cmd(b);
                c.args(["prune", "--keep-last", &keep]).arg(repo(b, self));
                let t = timed_as_set(b, &mut c)?;
                let mut c = self.cmd(b);
                c.arg("compact").arg(repo(b, self));
                Ok(t + timed_as_set(b, &mut c)?)
            }
        }
    }
}

/// [`timed`] after the run's cache policy is applied (`--cold`: caches dropped), as every
/// timed run of the bench is.
fn timed_as_set(b: &Bench, c: &mut std::process::Command) -> Result<Timing> {
    b.cache.prepare()?;
    timed(c)
}

fn repo(b: &Bench, p: Peer) -> PathBuf {
    b.scratch.join(format!("repo-{}", p.name()))
}

fn archive(b: &Bench, n: usize) -> String {
    format!("{}::b{n}", repo(b, Peer::Borg).display())
}

/// Our fresh job's vault.
fn vault(b: &Bench) -> PathBuf {
    b.scratch.join("vault-peers")
}

fn ours(b: &Bench, tool: &str) -> Command {
    let mut c = b.tools.ours(tool);
    c.arg("--vault").arg(vault(b)).args(["--job", JOB]);
    c
}

/// Is `name` on PATH?
fn installed(name: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    if found {
        Ok(())
    } else {
        Err(format!("{name} not installed"))
    }
}

/// Samples of one step: ours, and per peer its figure or why it was skipped.
struct Step {
    what: &'static str,
    ours: Timing,
    peers: Vec<(Peer, Result<Timing, String>)>,
}

/// Runs the whole sequence; one row per step and peer.
pub fn backup_peers(b: &mut Bench) -> Result<()> {
    let mut peers: Vec<(Peer, Result<(), String>)> = Vec::new();
    for p in [Peer::Restic, Peer::Borg] {
        let ok = installed(p.name()).and_then(|()| p.init(b).map_err(|e| format!("{e:#}")));
        if let Err(why) = &ok {
            eprintln!("peers: {} skipped: {why}", p.name());
        }
        peers.push((p, ok));
    }
    let mut steps = Vec::new();
    let mut each = |what: &'static str, ours: Timing, f: &dyn Fn(Peer) -> Result<Timing>| {
        let results = peers
            .iter()
            .map(|(p, ok)| {
                let r = match ok {
                    Ok(()) => f(*p).map_err(|e| format!("{e:#}")),
                    Err(why) => Err(why.clone()),
                };
                (*p, r)
            })
            .collect();
        steps.push(Step {
            what,
            ours,
            peers: results,
        });
    };
    eprintln!("peers: first backup");
    let t = timed_as_set(
        b,
        ours(b, "reverb-snap")
            .arg("--source")
            .arg(&b.tree.root)
            .arg("--init"),
    )?;
    each("first backup", t, &|p| p.backup(b, 1));
    for (n, (what, changes)) in [
        ("after 10 changed files", 10),
        ("after 1,000 changed files", 1000),
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!("peers: {what}");
        b.tree.modify(changes, &mut b.rng)?;
        let t = timed_as_set(b, &mut ours(b, "reverb-snap"))?;
        each(what, t, &|p| p.backup(b, n + 2));
    }
    let rel = b.tree.small[0].clone();
    let to = b.scratch.join("peers-restore");
    let t = timed_as_set(
        b,
        ours(b, "reverb-restore")
            .arg("--path")
            .arg(&rel)
            .arg("--to")
            .arg(to.join("ours")),
    )?;
    each("restore one file", t, &|p| {
        p.restore(b, 3, &rel, &to.join(p.name()))
    });
    let t = timed_as_set(b, ours(b, "reverb-retire").args(["--keep", "2"]))?;
    each("drop the oldest backup", t, &|p| p.drop_oldest(b, 3));
    for s in steps {
        for (p, r) in s.peers {
            b.push(Row::new(
                format!("vs restic/borg: {}", s.what),
                Unit::Seconds,
                s.ours,
                p.name(),
                r,
                None,
            ));
        }
    }
    Ok(())
}
