//! Replicas under test (docs/design.md#replication): running `reverberator replicate`, and
//! comparing a replicated version with its source vault's three ways, each with an oracle
//! of its own: restored from both vaults and compared by `stat` facts, content and `b3sum`;
//! browsed in both vaults with `diff -r` (through the vault links); and the stats
//! `reverb-index` shows for it (`files`, `logical_bytes`). A replica must also pass
//! `reverb-index --check --data` on its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::model::{self, CaptureOpts, Node};
use crate::{Fixture, TestCommand, cmd, have, is_root, stdout};

/// A restored tree's captured state.
pub type Tree = BTreeMap<PathBuf, Node>;

/// How trees are compared: everything, owners when root (only root keeps them).
pub fn opts() -> CaptureOpts {
    CaptureOpts {
        owners: is_root(),
        dir_mtimes: true,
    }
}

/// `reverberator replicate JOB --vault SRC --to DEST --json [extra]`.
pub fn replicate(f: &Fixture, to: &str, extra: &[&str]) -> TestCommand {
    let mut c = cmd("reverberator");
    c.arg("replicate")
        .arg(&f.job)
        .arg("--vault")
        .arg(&f.vault)
        .arg("--to")
        .arg(to)
        .arg("--json")
        .args(extra);
    c
}

/// What one replication printed.
#[derive(Debug, Default)]
pub struct Replicated {
    /// The `replicated` lines: (version dir, entries, data bytes, bytes).
    pub versions: Vec<(String, u64, u64, u64)>,
    /// The final `replica` line.
    pub summary: serde_json::Value,
}

impl Replicated {
    /// Bytes written to the receiver in all.
    pub fn bytes_sent(&self) -> u64 {
        self.summary["bytes_sent"].as_u64().expect("bytes_sent")
    }

    /// The replica's newest version at the end.
    pub fn newest(&self) -> Option<String> {
        self.summary["newest"].as_str().map(str::to_owned)
    }
}

/// Parses `replicate --json` output.
pub fn parse(o: &Output) -> Replicated {
    let mut r = Replicated::default();
    for line in stdout(o).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        match v["type"].as_str() {
            Some("replicated") => r.versions.push((
                v["dir"].as_str().expect("dir").to_owned(),
                v["entries"].as_u64().expect("entries"),
                v["data_bytes"].as_u64().expect("data_bytes"),
                v["bytes"].as_u64().expect("bytes"),
            )),
            Some("replica") => r.summary = v,
            other => panic!("unexpected line type {other:?}: {line}"),
        }
    }
    r
}

/// Replicates and asserts success; returns what it printed.
pub fn replicate_ok(f: &Fixture, to: &str, extra: &[&str]) -> Replicated {
    parse(&replicate(f, to, extra).assert_success())
}

/// The `(files, logical_bytes)` index.tsv of `vault`'s job gives each version directory.
pub fn stats(vault: &Path, job: &str) -> BTreeMap<String, (u64, u64)> {
    reverb_common::index::read(&vault.join(job).join("index.tsv"))
        .expect("index.tsv")
        .into_iter()
        .map(|r| (r.dir, (r.files, r.logical_bytes)))
        .collect()
}

/// Restores version `dir` of `vault`'s job `job` into a fresh directory under `tmp`.
pub fn restore(vault: &Path, job: &str, dir: &str, tmp: &Path) -> PathBuf {
    let dest = tmp.join(format!("restore-{}-{dir}", unique()));
    cmd("reverb-restore")
        .arg("--vault")
        .arg(vault)
        .args(["--job", job, "--from", dir])
        .arg("--to")
        .arg(&dest)
        .assert_success();
    dest
}

/// `b3sum` of every regular file below `root`, relative paths, sorted: one oracle line
/// per file.
pub fn b3sums(root: &Path) -> String {
    let o = TestCommand::program("sh")
        .current_dir(root)
        .args([
            "-c",
            "find . -type f -print0 | sort -z | xargs -0 -r b3sum --no-names | cat; \
             find . -type f | sort",
        ])
        .assert_success();
    stdout(&o)
}

/// `diff -r` of two version directories, through the vault links (as a person browses
/// them); FIFOs, which diff cannot compare, are only checked to be FIFOs on both sides.
pub fn browse_diff(a: &Path, b: &Path) -> Result<(), String> {
    let o = TestCommand::program("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output();
    let out = stdout(&o);
    let real: Vec<&str> = out
        .lines()
        .filter(|l| !(l.ends_with("is a fifo") && l.contains("is a fifo while file")))
        .collect();
    if real.is_empty() && o.status.code().is_some_and(|c| c <= 1) {
        Ok(())
    } else {
        Err(format!(
            "diff -r {} {} differs:\n{}{}",
            a.display(),
            b.display(),
            real.join("\n"),
            crate::stderr(&o)
        ))
    }
}

/// Asserts that version `dir` is the same in the source vault of `f` and in `replica`:
/// restored (facts and `b3sum`), browsed (`diff -r`), and its stats.
pub fn assert_same_version(f: &Fixture, replica: &Path, dir: &str) {
    let tmp = f._tmp.path();
    let ours = restore(&f.vault, &f.job, dir, tmp);
    let theirs = restore(replica, &f.job, dir, tmp);
    model::assert_same(
        &model::capture(&ours, opts()),
        &model::capture(&theirs, opts()),
        &format!("{dir} restored from the replica"),
    );
    if have("b3sum") {
        assert_eq!(b3sums(&ours), b3sums(&theirs), "{dir}: b3sum of every file");
    } else {
        crate::skip("not installed: b3sum: the b3sum oracle of replicated versions");
    }
    browse_diff(
        &f.vault.join(&f.job).join(dir),
        &replica.join(&f.job).join(dir),
    )
    .unwrap_or_else(|e| panic!("{dir}: {e}"));
    let (a, b) = (stats(&f.vault, &f.job), stats(replica, &f.job));
    assert_eq!(a.get(dir), b.get(dir), "{dir}: files and logical_bytes");
    for t in [ours, theirs] {
        let _ = std::fs::remove_dir_all(t);
    }
}

/// Asserts that every version both vaults hold is the same, and the replica is clean
/// (`reverb-index --check --data`); returns how many versions were compared.
pub fn assert_replica_exact(f: &Fixture, replica: &Path) -> usize {
    let ours = stats(&f.vault, &f.job);
    let theirs = stats(replica, &f.job);
    let mut n = 0;
    for dir in theirs.keys().filter(|d| ours.contains_key(*d)) {
        assert_same_version(f, replica, dir);
        n += 1;
    }
    assert_replica_clean(replica, &f.job);
    n
}

/// `reverb-index --check --data` on the replica's job must be clean.
pub fn assert_replica_clean(replica: &Path, job: &str) {
    cmd("reverb-index")
        .arg("--vault")
        .arg(replica)
        .args(["--job", job, "--check", "--data"])
        .show_dir(replica.join(job))
        .assert_success();
}

/// `reverb-index --check --data` on the replica's job finds nothing but, at most, what a
/// stream cut mid-version leaves for the next run: an unfinished version (resumed).
pub fn assert_replica_consistent(replica: &Path, job: &str) {
    let o = cmd("reverb-index")
        .arg("--vault")
        .arg(replica)
        .args(["--job", job, "--check", "--data"])
        .output();
    let problems: Vec<String> = stdout(&o)
        .lines()
        .filter(|l| l.split('\t').nth(1) != Some("partial"))
        .map(str::to_owned)
        .collect();
    assert!(
        problems.is_empty() && o.status.code().is_some_and(|c| c <= 1),
        "the replica {} is damaged:\n{}\n{}",
        replica.display(),
        problems.join("\n"),
        crate::stderr(&o)
    );
}

/// Asserts that every version both vaults hold is the same (whatever else the replica
/// holds, such as a version an interrupted run left unfinished); returns how many.
pub fn assert_versions_same(f: &Fixture, replica: &Path) -> usize {
    let ours = stats(&f.vault, &f.job);
    let mut n = 0;
    for dir in versions(replica, &f.job)
        .iter()
        .filter(|d| ours.contains_key(*d))
    {
        assert_same_version(f, replica, dir);
        n += 1;
    }
    n
}

/// The version directories of `vault`'s job, oldest first (index.tsv).
pub fn versions(vault: &Path, job: &str) -> Vec<String> {
    reverb_common::index::read(&vault.join(job).join("index.tsv"))
        .expect("index.tsv")
        .into_iter()
        .map(|r| r.dir)
        .collect()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
