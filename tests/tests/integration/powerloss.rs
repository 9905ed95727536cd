//! Power loss: what reaches the disk, not only the order of a program's steps.
//!
//! The direct tests here show each repair on a state a power cut leaves (a journal ending
//! in NUL bytes, a version whose files never reached the disk).

use std::fs;
use std::io::Write;
use std::path::Path;

use reverb_tests::Fixture;

/// Every line of the journal at `path` is whole: it ends with a newline, holds no NUL byte
/// and has the five columns; the first is the header.
fn assert_journal_whole(path: &Path) {
    let bytes = fs::read(path).expect("read journal");
    assert_eq!(
        bytes.last(),
        Some(&b'\n'),
        "journal does not end with a newline"
    );
    for (n, line) in bytes[..bytes.len() - 1].split(|&b| b == b'\n').enumerate() {
        assert!(
            !line.contains(&0) && line.split(|&b| b == b'\t').count() == 5,
            "damaged journal line {}: {:?}",
            n + 1,
            String::from_utf8_lossy(&line[..line.len().min(120)])
        );
    }
}

#[test]
fn a_journal_ending_in_nuls_is_cut_before_the_next_append() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"one").expect("write");
    f.first();
    let journal = f.job_dir().join("journal.tsv");
    // What ext4 leaves when the file's new size reached the disk but its data did not.
    let mut j = fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .expect("open");
    j.write_all(b"2026-11-24T21:49:00.123Z\tsnap\tsnap")
        .expect("tear");
    j.write_all(&[0u8; 3000]).expect("tear");
    drop(j);
    fs::write(f.src.join("a"), b"two").expect("write");
    assert!(!f.rescan().is_empty(), "no new version");
    assert_journal_whole(&journal);
    f.check_clean();
}

#[test]
fn temporaries_live_in_tmp_and_recovery_removes_a_crash_s_leftovers() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"one").expect("write");
    f.first();
    let job = f.job_dir();
    // What a power cut during the old code's index and lookalike rewrites left (a pid no
    // process has: above the kernel's pid_max), and the same in `.tmp/`.
    fs::write(job.join(".tmp-4194999-0-index.tsv"), b"").expect("write");
    fs::write(job.join(".tmp-4194999-1-lookalikes.tsv"), b"").expect("write");
    fs::create_dir_all(job.join(".tmp")).expect("mkdir");
    fs::write(job.join(".tmp/.tmp-4194999-2-index.tsv"), b"half").expect("write");
    fs::write(f.src.join("a"), b"two").expect("write");
    assert!(!f.rescan().is_empty(), "no new version");
    let left: Vec<String> = fs::read_dir(&job)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temporaries in the job folder: {left:?}");
    let in_tmp = fs::read_dir(job.join(".tmp")).expect("ls .tmp").count();
    assert_eq!(in_tmp, 0, ".tmp/ was not emptied");
    f.check_clean();
}

#[test]
fn a_version_under_its_final_name_without_proof_of_completion_is_discarded() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"the data").expect("write");
    let v1 = f.first();
    // What a power cut after the rename of a version whose data never reached the disk
    // leaves: the version under its final name, not in index.tsv, its file full of NULs.
    let v2 = "V2-20261201T000000Z";
    reverb_tests::sh(&format!(
        "cp -a {0}/{v1} {0}/{v2} && truncate -s 0 {0}/{v2}/a && truncate -s 8 {0}/{v2}/a",
        f.job_dir().display()
    ));
    // A lookalike record the crashed build had saved for it (saved before the rename).
    fs::write(
        f.job_dir().join("lookalikes.tsv"),
        format!("dir\tpath\n{v2}\tsome/link\n"),
    )
    .expect("lookalikes");
    fs::write(f.src.join("b"), b"more").expect("write");
    let v3 = f.rescan();
    let lookalikes = fs::read_to_string(f.job_dir().join("lookalikes.tsv")).unwrap_or_default();
    assert!(
        !lookalikes.contains(v2),
        "the registry still names the discarded version:\n{lookalikes}"
    );
    let index = fs::read_to_string(f.job_dir().join("index.tsv")).expect("index");
    assert!(
        !index.contains(v2),
        "an unverifiable version was indexed as complete:\n{index}"
    );
    assert!(!f.job_dir().join(v2).exists(), "{v2} was left on disk");
    assert!(!v3.is_empty() && v3 != v2, "no new version: {v3}");
    f.check_clean();
    let opts = reverb_tests::model::CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    f.assert_latest_is_source(opts, "the version after the discarded one");
}

/// The relative paths of the real (not vault-link) files and directories of `version`.
fn real_part(version: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![std::path::PathBuf::new()];
    let mut pending = vec![std::path::PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for e in fs::read_dir(version.join(&rel)).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("file type");
            let child = rel.join(e.file_name());
            if t.is_dir() {
                pending.push(child.clone());
            }
            if t.is_dir() || t.is_file() {
                out.push(child);
            }
        }
    }
    out
}

/// Runs one `reverb-snap` of `f` under `strace` and returns what it synced: `None` when it
/// synced its whole filesystem (`syncfs`), else the paths relative to the version built
/// under `.partial/` that it fsynced. `Err(reason)` when strace is missing.
fn snap_synced(f: &Fixture) -> Result<Option<Vec<std::path::PathBuf>>, String> {
    if !reverb_tests::have("strace") {
        return Err("strace is not installed".into());
    }
    let log = f._tmp.path().join("strace.log");
    reverb_tests::TestCommand::program("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,syncfs",
            "-o",
        ])
        .arg(&log)
        .arg(reverb_tests::bin("reverb-snap"))
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", &f.job])
        .assert_success();
    let text = fs::read_to_string(&log).expect("read strace log");
    if text.contains("syncfs(") {
        return Ok(None);
    }
    let partial = format!("{}/.partial/", f.job_dir().display());
    let synced = text
        .lines()
        .filter(|l| l.contains("fsync(") && l.ends_with("= 0"))
        .filter_map(|l| {
            let p = l.split_once('<')?.1.split_once(">)")?.0;
            let inside = p.strip_prefix(&partial)?;
            let rel = inside.split_once('/').map_or("", |x| x.1);
            Some(std::path::PathBuf::from(rel))
        })
        .collect();
    Ok(Some(synced))
}

#[test]
fn every_real_entry_of_a_small_version_is_synced_before_the_rename() {
    let f = Fixture::new();
    // A tree deeper than the 32-link bound: a small version that changes one deep file
    // materialises its unchanged siblings (copies them, where a shallower one would link).
    let mut deep = f.src.clone();
    for level in 0..36 {
        deep.push(format!("d{level}"));
        fs::create_dir(&deep).expect("mkdir");
        fs::write(deep.join("sibling"), format!("unchanged at {level}")).expect("write");
    }
    fs::create_dir(deep.join("subdir")).expect("mkdir");
    fs::write(deep.join("subdir/inner"), b"unchanged, inside").expect("write");
    fs::write(deep.join("changed"), b"one").expect("write");
    f.first();
    fs::write(deep.join("changed"), b"two").expect("write");
    let synced = match snap_synced(&f) {
        Ok(Some(s)) => s,
        Ok(None) => return, // the whole filesystem was synced
        Err(why) => reverb_tests::skip!("{why}: what a small version syncs"),
    };
    let current = fs::read_link(f.job_dir().join("current")).expect("current");
    let real = real_part(&f.job_dir().join(current));
    assert!(
        real.iter().any(|p| p.ends_with("subdir/inner")),
        "the deep sibling was not materialised: the test no longer tests what it says"
    );
    let missing: Vec<_> = real.iter().filter(|p| !synced.contains(p)).collect();
    assert!(
        missing.is_empty(),
        "real entries of the new version never fsynced before the rename: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Block-level crash replay (reverb_tests::blockreplay; docs/reliability.md#power-loss): a
// workload of the real binaries on a vault whose every block write and flush is logged,
// then each crash state written to a fresh image, mounted, repaired by the tools, checked.

use std::collections::BTreeMap;
use std::path::PathBuf;

use reverb_common::events::HEADER as EVENTS_HEADER;
use reverb_tests::blockreplay::{self, Mounted, Op, Recorder, Replayer, State};
use reverb_tests::differential::Rng;
use reverb_tests::model::{CaptureOpts, Node, capture};
use reverb_tests::{TestCommand, cmd};

type Tree = BTreeMap<PathBuf, Node>;

const OPTS: CaptureOpts = CaptureOpts {
    owners: true,
    dir_mtimes: true,
};

/// Which workload a sweep records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every kind of version and retirement, in two jobs.
    Full,
    /// One first copy of a tree of a few hundred files (hard-link groups across
    /// directories among them) by a pool of copying threads (docs/design.md#the-parallel-first-copy).
    ParallelFirstCopy,
}

/// The workload's two jobs: `job` (complete versions) and `partial` (`keep_complete =
/// false`, through a configuration file), with what each version must hold.
struct Workload {
    /// What the workload does ([`Workload::run`]).
    kind: Kind,
    f: Fixture,
    src2: PathBuf,
    config: PathBuf,
    /// (job, version directory) → the tree the version must restore to.
    manifest: BTreeMap<(String, String), Tree>,
}

impl Workload {
    fn new(tmp: tempfile::TempDir, vault: PathBuf, kind: Kind) -> Workload {
        let mut f = Fixture::in_dir(tmp);
        f.vault = vault;
        let src2 = f._tmp.path().join("src2");
        fs::create_dir(&src2).expect("mkdir src2");
        let config = f._tmp.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "[jobs.partial]\nsource = \"{}\"\nvault = \"{}\"\nkeep_complete = false\n",
                src2.display(),
                f.vault.display()
            ),
        )
        .expect("config");
        Workload {
            kind,
            f,
            src2,
            config,
            manifest: BTreeMap::new(),
        }
    }

    fn partial(&self, extra: &[&str]) -> TestCommand {
        let mut c = cmd("reverb-snap");
        c.arg("--config")
            .arg(&self.config)
            .args(["--job", "partial"])
            .args(extra);
        c
    }

    /// Records the version `out` printed (if any) as holding what the source holds now.
    fn took(&mut self, out: String) {
        let v = out.trim().to_owned();
        if !v.is_empty() {
            let tree = capture(&self.f.src, OPTS);
            self.manifest.insert(("job".into(), v), tree);
        }
    }

    /// The `partial` job's versions hold only what changed since its start: their manifest
    /// is what they restored to when they were made.
    fn took_partial(&mut self, out: String) {
        let v = out.trim().to_owned();
        if !v.is_empty() {
            let dest = self.f._tmp.path().join(format!("r-partial-{v}"));
            restore_to(&self.f, "partial", &v, &dest).expect("restore");
            self.manifest
                .insert(("partial".into(), v), capture(&dest, OPTS));
            fsutil_remove(&dest);
        }
    }

    /// Runs the workload the issue lists: a first version, a small one, one over 256
    /// entries, a deep tree (> 33 levels) and a small change deep in it, a `--changes`
    /// batch, a count retirement, a size-limit retirement, and a `keep_complete = false` job.
    fn run(&mut self) {
        if self.kind == Kind::ParallelFirstCopy {
            return self.parallel_first_copy();
        }
        let src = self.f.src.clone();
        write(&src.join("top"), b"top v1");
        write(&src.join("docs/a"), b"a v1");
        write(&src.join("docs/b"), &[7u8; 20000]);
        let out = self.f.snap(&["--init"]).arg("--source").arg(&src).stdout();
        self.took(out);
        write(&src.join("docs/a"), b"a v2, longer");
        self.took(self.f.rescan());
        for i in 0..300 {
            write(
                &src.join(format!("many/f{i:03}")),
                format!("file {i}").as_bytes(),
            );
        }
        self.took(self.f.rescan());
        let mut deep = src.join("deep");
        for level in 0..36 {
            deep.push(format!("d{level}"));
            write(&deep.join("sibling"), format!("at {level}").as_bytes());
        }
        write(&deep.join("sub/inner"), b"inner");
        write(&deep.join("changed"), b"one");
        self.took(self.f.rescan());
        write(&deep.join("changed"), b"two, deep down");
        self.took(self.f.rescan());
        self.changes_batch();
        self.f
            .tool("reverb-retire")
            .args(["--keep", "4"])
            .assert_success();
        write(&src.join("top"), b"top v3");
        self.took(self.f.rescan());
        // A limit just under the job's size: the oldest version goes (data that newer ones
        // use moves forward first, so the size may then still be over it: exit 1 is fine).
        let all: u64 = held_bytes(&self.f.job_dir()).iter().sum();
        let o = self
            .f
            .tool("reverb-retire")
            .args(["--max-size", &(all - 1).to_string()])
            .output();
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "the size-limit retirement: {:?} {}",
            o.status.code(),
            reverb_tests::stderr(&o)
        );
        self.partial_job();
    }

    /// [`Kind::ParallelFirstCopy`]: 30 directories of 10 files (empty to 200 KiB), a
    /// hard-link group joining each tenth file with names in two other directories (no
    /// symlink: the browse view before repair follows links); the first copy on four
    /// copying threads.
    fn parallel_first_copy(&mut self) {
        let src = self.f.src.clone();
        for d in 0..30usize {
            for i in 0..10usize {
                let len = [0, 9, 4096, 70_000, 200_000][(d + i) % 5];
                let byte = (d * 10 + i) as u8;
                write(&src.join(format!("d{d}/f{i}")), &vec![byte | 1; len]);
            }
        }
        for g in 0..30usize {
            let first = src.join(format!("d{g}/f{}", g % 10));
            for k in [7, 19] {
                let name = src.join(format!("d{}/hl{g}", (g + k) % 30));
                fs::hard_link(&first, name).expect("link");
            }
        }
        let out = self
            .f
            .snap(&["--init"])
            .arg("--source")
            .arg(&src)
            .env("REVERB_COPY_WORKERS", "4")
            .stdout();
        self.took(out);
    }

    fn changes_batch(&mut self) {
        write(&self.f.src.join("docs/a"), b"a v3 by events");
        write(&self.f.src.join("docs/new"), b"new by events");
        let events = format!(
            "{EVENTS_HEADER}\n{}{}",
            event("modify", "docs/a"),
            event("create", "docs/new")
        );
        let mut c = self.f.snap(&["--changes", "-"]);
        c.stdin(events.into_bytes());
        let out = c.stdout();
        self.took(out);
    }

    fn partial_job(&mut self) {
        write(&self.src2.join("kept"), b"untouched");
        write(&self.src2.join("edited"), b"v1");
        let out = self.partial(&["--init"]).stdout();
        self.took_partial(out);
        write(&self.src2.join("edited"), b"v2");
        write(&self.src2.join("added/x"), b"x");
        let out = self.partial(&[]).stdout();
        self.took_partial(out);
    }
}

fn event(kind: &str, path: &str) -> String {
    format!("2026-11-25T00:00:00.000Z\t{kind}\tfile\t{path}\t\n")
}

fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir -p");
    }
    fs::write(path, data).expect("write");
}

fn fsutil_remove(path: &Path) {
    let _ = std::process::Command::new("rm")
        .arg("-rf")
        .arg(path)
        .status();
}

/// The `held_bytes` of every version in the job's index.tsv, oldest first.
fn held_bytes(job: &Path) -> Vec<u64> {
    let text = fs::read_to_string(job.join("index.tsv")).expect("index.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let col = header
        .iter()
        .position(|c| *c == "held_bytes")
        .expect("held_bytes column");
    lines
        .filter_map(|l| l.split('\t').nth(col)?.parse().ok())
        .collect()
}

/// Restores `version` of `job` to `dest`; `Err` with the tool's stderr.
fn restore_to(f: &Fixture, job: &str, v: &str, dest: &Path) -> Result<(), String> {
    let o = cmd("reverb-restore")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", job, "--from", v])
        .arg("--to")
        .arg(dest)
        .output();
    if o.status.success() {
        Ok(())
    } else {
        Err(reverb_tests::stderr(&o))
    }
}

/// What the states of one file system showed.
#[derive(Default)]
struct Tally {
    states: usize,
    before_the_job: usize,
    versions_checked: usize,
    /// Versions the repair made under the name of one the power cut lost (same number,
    /// same second): compared with the source as it is now, not with the lost one.
    names_reused: usize,
    /// Each finding, with the state it was seen in.
    findings: Vec<String>,
}

/// Checks one crash state mounted at the workload's vault: repairs with the tools, then
/// every version left must restore to its manifest, `--check` must be clean, no temporary
/// may be left outside `.tmp/`, every journal line must be whole.
fn check_state(w: &Workload, tally: &mut Tally) -> Vec<String> {
    let mut found = Vec::new();
    let job_dir = w.f.job_dir();
    if !job_dir.join("job.toml").is_file() {
        tally.before_the_job += 1;
        return found;
    }
    found.extend(check_before_repair(w, tally));
    let partial_exists = w.f.vault.join("partial/job.toml").is_file();
    let mut repairs = vec![
        (Some("job"), w.f.snap(&[])),
        (None, w.f.tool("reverb-retire")),
    ];
    if partial_exists {
        repairs.push((Some("partial"), w.partial(&[])));
    }
    // The version each repair `reverb-snap` made, by job: it holds the source as it is now.
    let mut made = BTreeMap::new();
    for (job, mut c) in repairs {
        let o = c.output();
        if !o.status.success() {
            found.push(format!(
                "repair failed: {}",
                reverb_tests::stderr(&o).trim()
            ));
            return found;
        }
        let printed = reverb_tests::stdout(&o).trim().to_owned();
        if let Some(job) = job
            && !printed.is_empty()
        {
            made.insert(job, printed);
        }
    }
    let mut jobs = vec!["job"];
    if partial_exists {
        jobs.push("partial");
    }
    for job in jobs {
        found.extend(check_job(w, job, made.get(job), tally));
    }
    found
}

/// I9 before any repair: every version of the first job (`job`) under its final name (in
/// index.tsv or not) reads back, through its links as a user browses it, exactly as its
/// manifest. The version a retirement was deleting is skipped; while one is in progress,
/// directory mtimes of the others are not compared (the resumed retirement puts them back
/// from `retiring.tsv`).
fn check_before_repair(w: &Workload, tally: &mut Tally) -> Vec<String> {
    let dir = w.f.job_dir();
    let state = fs::read_to_string(dir.join("job.toml")).unwrap_or_default();
    let retiring = state
        .lines()
        .find_map(|l| l.trim().strip_prefix("retiring = "))
        .map(|v| v.trim_matches('"').to_owned());
    let opts = CaptureOpts {
        dir_mtimes: retiring.is_none() && !dir.join("retiring.tsv").exists(),
        ..OPTS
    };
    let mut found = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return found;
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('V') && dir.join(n).is_dir())
        .collect();
    names.sort();
    for v in names {
        if retiring.as_deref() == Some(v.as_str()) {
            continue;
        }
        let Some(want) = w.manifest.get(&("job".to_owned(), v.clone())) else {
            found.push(format!("job: before repair: {v} is in no manifest"));
            continue;
        };
        tally.versions_checked += 1;
        let dest = w.f._tmp.path().join("browsed");
        fsutil_remove(&dest);
        // -L: the vault links are followed, as a user reading the version does; `links`:
        // names that are one inode there (a hard-link group, I5) are one inode in the copy.
        let o = std::process::Command::new("cp")
            .args(["-RL", "--preserve=mode,ownership,timestamps,xattr,links"])
            .arg(dir.join(&v))
            .arg(&dest)
            .output()
            .expect("run cp");
        if !o.status.success() {
            found.push(format!(
                "job: before repair: reading {v}: {}",
                reverb_tests::stderr(&o).trim()
            ));
        } else if let Some(d) = tree_difference(
            &if opts.dir_mtimes {
                want.clone()
            } else {
                reverb_tests::model::without_dir_mtimes(want)
            },
            &capture(&dest, opts),
        ) {
            found.push(format!("job: before repair: version {v} is wrong: {d}"));
        }
        fsutil_remove(&dest);
    }
    found
}

/// Checks every version of `job` against what it must hold; `made` is the version the
/// repair run made (which may carry the name of a version the power cut lost: names are
/// by the second).
fn check_job(w: &Workload, job: &str, made: Option<&String>, tally: &mut Tally) -> Vec<String> {
    let mut found = Vec::new();
    let dir = w.f.vault.join(job);
    let o = cmd("reverb-index")
        .arg("--vault")
        .arg(&w.f.vault)
        .args(["--job", job, "--check"])
        .output();
    if !o.status.success() {
        let problems: Vec<String> = reverb_tests::stdout(&o)
            .lines()
            .take(4)
            .map(str::to_owned)
            .collect();
        found.push(format!(
            "{job}: reverb-index --check: {} {}",
            reverb_tests::stderr(&o).trim(),
            problems.join("; ")
        ));
    }
    found.extend(
        strays(&dir)
            .into_iter()
            .map(|s| format!("{job}: stray {s}")),
    );
    found.extend(journal_damage(&dir.join("journal.tsv")).map(|s| format!("{job}: {s}")));
    let index = fs::read_to_string(dir.join("index.tsv")).unwrap_or_default();
    let rows: Vec<String> = index
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(1).map(str::to_owned))
        .collect();
    for v in &rows {
        let recorded = w.manifest.get(&(job.to_owned(), v.clone()));
        let want = match recorded {
            // Made by the repair run from the source as it is now.
            _ if made == Some(v) => {
                if recorded.is_some() {
                    tally.names_reused += 1;
                }
                if job == "partial" {
                    continue;
                }
                capture(&w.f.src, OPTS)
            }
            Some(t) => t.clone(),
            None => {
                found.push(format!("{job}: version {v} is in no manifest"));
                continue;
            }
        };
        tally.versions_checked += 1;
        let dest = w.f._tmp.path().join("restored");
        fsutil_remove(&dest);
        match restore_to(&w.f, job, v, &dest) {
            Err(e) => found.push(format!("{job}: restore {v}: {}", e.trim())),
            Ok(()) => {
                if let Some(d) = tree_difference(&want, &capture(&dest, OPTS)) {
                    found.push(format!("{job}: version {v} is wrong: {d}"));
                }
            }
        }
        fsutil_remove(&dest);
    }
    found
}

/// The first path where `got` differs from `want`.
fn tree_difference(want: &Tree, got: &Tree) -> Option<String> {
    for (p, n) in want {
        match got.get(p) {
            None => return Some(format!("{} missing", p.display())),
            Some(g) if g != n => return Some(format!("{} differs: {g:?} != {n:?}", p.display())),
            _ => {}
        }
    }
    got.keys()
        .find(|p| !want.contains_key(*p))
        .map(|p| format!("{} should not be there", p.display()))
}

/// Temporaries (`.tmp-*`) anywhere in the job folder but `.tmp/`, and anything left in
/// `.partial/`; symlinks are not followed.
fn strays(job: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(job.join(".partial")) {
        out.extend(
            rd.flatten()
                .map(|e| format!(".partial/{}", e.file_name().display())),
        );
    }
    let mut pending = vec![job.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let name = e.file_name();
            let path = e.path();
            if d == job && name == ".tmp" {
                continue;
            }
            if name.to_string_lossy().starts_with(".tmp-") {
                out.push(
                    path.strip_prefix(job)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            }
        }
    }
    out
}

/// The first damaged line of a journal, if any (same oracle as [`assert_journal_whole`]).
fn journal_damage(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    if bytes.last() != Some(&b'\n') {
        return Some("journal does not end with a newline".into());
    }
    bytes[..bytes.len() - 1]
        .split(|&b| b == b'\n')
        .position(|l| l.contains(&0) || l.split(|&b| b == b'\t').count() != 5)
        .map(|n| format!("damaged journal line {}", n + 1))
}

/// `reverb-blocklog`, built on first use (it is left out of `--workspace --bins`).
fn blocklog() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = reverb_tests::bin_dir().to_path_buf();
            let profile = match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_owned(),
                Some(other) => other.to_owned(),
            };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
            let target = dir.parent().unwrap_or(&dir).to_path_buf();
            let o = std::process::Command::new(cargo)
                .args([
                    "build",
                    "-q",
                    "--features",
                    "blocklog",
                    "--bin",
                    "reverb-blocklog",
                ])
                .arg("--manifest-path")
                .arg(manifest)
                .args(["--profile", &profile])
                .arg("--target-dir")
                .arg(target)
                .output()
                .expect("run cargo build");
            assert!(
                o.status.success(),
                "building reverb-blocklog failed: {}",
                reverb_tests::stderr(&o)
            );
            dir.join("reverb-blocklog")
        })
        .clone()
}

/// How many crash states to try per file system: all with `REVERB_POWERLOSS_FULL=1`, else
/// `REVERB_POWERLOSS_STATES` (default `default`).
fn sample(default: usize) -> Option<usize> {
    if std::env::var("REVERB_POWERLOSS_FULL").is_ok_and(|v| v == "1") {
        return None;
    }
    Some(
        std::env::var("REVERB_POWERLOSS_STATES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// Records the workload on `fstype`, then checks the sampled crash states; fails listing
/// every finding.
fn sweep(fstype: &str, default_sample: usize) {
    sweep_workload(fstype, default_sample, Kind::Full);
}

/// A sweep's scratch: the temporary directory, its `work/` (the recorder's images, made)
/// and `mnt` (the recorded filesystem's mountpoint, made by the recorder).
fn sweep_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    fs::create_dir(&work).expect("mkdir");
    let mountpoint = tmp.path().join("mnt");
    (tmp, work, mountpoint)
}

/// [`sweep`] of the workload `kind`.
fn sweep_workload(fstype: &str, default_sample: usize, kind: Kind) {
    if let Some(why) = blockreplay::unavailable(fstype) {
        reverb_tests::skip!("{why}: the {fstype} power-loss sweep");
    }
    let blocklog = blocklog();
    let started = std::time::Instant::now();
    let (_tmp, work, mountpoint) = sweep_dirs();
    let fixture_tmp = tempfile::tempdir().expect("tempdir");
    let mut w = Workload::new(fixture_tmp, mountpoint.join("vault"), kind);
    let rec = Recorder::start(fstype, &work, &mountpoint, &blocklog)
        .unwrap_or_else(|e| panic!("{fstype}: cannot record: {e}"));
    w.run();
    let base = rec.base.clone();
    let ops = rec.finish().unwrap_or_else(|e| panic!("{fstype}: {e}"));
    let flushes = ops.iter().filter(|o| matches!(o, Op::Flush)).count();
    let seed = std::env::var("REVERB_POWERLOSS_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x5eed_0014);
    let mut rng = Rng::new(seed);
    let states = blockreplay::states(&ops, sample(default_sample), &mut rng);
    let mut replayer = Replayer::new(&ops, &base, &work).expect("replayer");
    let mut tally = Tally::default();
    let image = work.join("state.img");
    for state in &states {
        tally.states += 1;
        replayer.write(state, &image).expect("write state");
        let found = match Mounted::new(&image, &mountpoint) {
            Err(e) => vec![format!("does not mount: {e}")],
            Ok(m) => {
                let found = check_state(&w, &mut tally);
                if let Err(e) = m.close() {
                    panic!("{fstype}: cannot unmount a state: {e}");
                }
                found
            }
        };
        let at = describe(state);
        tally
            .findings
            .extend(found.into_iter().map(|f| format!("[{at}] {f}")));
    }
    eprintln!(
        "{fstype} power-loss sweep (seed {seed:#x}): {} writes, {flushes} flushes; {} states \
         tried ({} before the job existed), {} versions restored and compared ({} made by a \
         repair under a lost version's name), {} findings, {:.0} s",
        ops.len() - flushes,
        tally.states,
        tally.before_the_job,
        tally.versions_checked,
        tally.names_reused,
        tally.findings.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.versions_checked > 0,
        "{fstype}: no crash state held a version to check"
    );
    assert!(
        tally.findings.is_empty(),
        "{fstype}: {} findings in {} crash states:\n{}",
        tally.findings.len(),
        tally.states,
        tally.findings.join("\n")
    );
}

fn describe(s: &State) -> String {
    if s.extra.is_empty() {
        format!("ops<{}", s.flush)
    } else {
        format!("ops<{} + {} unflushed writes", s.flush, s.extra.len())
    }
}

#[test]
fn power_loss_on_ext4_leaves_every_version_exact() {
    sweep("ext4", 30);
}

/// A power cut while a pool of threads copies the first version: every state recovers to
/// no version or an exact one.
#[test]
fn power_loss_during_a_parallel_first_copy_leaves_no_version_or_an_exact_one() {
    sweep_workload("ext4", 30, Kind::ParallelFirstCopy);
}

#[test]
fn power_loss_on_xfs_leaves_every_version_exact() {
    sweep("xfs", 20);
}

#[test]
fn power_loss_on_btrfs_leaves_every_version_exact() {
    sweep("btrfs", 12);
}

// ---------------------------------------------------------------------------------------
// The receiver of a replication (docs/design.md#replication) on a block-logged filesystem:
// the replica's versions, received in sessions (several versions at once, one after a
// retirement here, one whose base was gone here so the manifests were compared), must each
// be exact or absent in every crash state, and the next `reverberator replicate` must
// bring the replica up to date, exact and clean.

/// The source job (outside the logged filesystem) and what each of its versions holds.
struct ReplicaWorkload {
    f: Fixture,
    replica: PathBuf,
    manifest: BTreeMap<String, Tree>,
}

impl ReplicaWorkload {
    fn took(&mut self, out: String) {
        let v = out.trim().to_owned();
        if !v.is_empty() {
            self.manifest.insert(v, capture(&self.f.src, OPTS));
        }
    }

    fn replicate(&self, init: bool) -> TestCommand {
        let mut c = cmd("reverberator");
        c.args(["replicate", "job", "--vault"])
            .arg(&self.f.vault)
            .arg("--to")
            .arg(&self.replica);
        if init {
            c.arg("--init");
        }
        c
    }

    fn run(&mut self) {
        let src = self.f.src.clone();
        write(&src.join("top"), b"top v1");
        write(&src.join("docs/a"), b"a v1");
        write(&src.join("docs/big"), &[5u8; 300_000]);
        let out = self.f.snap(&["--init"]).arg("--source").arg(&src).stdout();
        self.took(out);
        write(&src.join("docs/a"), b"a v2, longer");
        self.took(self.f.rescan());
        self.replicate(true).assert_success();
        for i in 0..40 {
            write(
                &src.join(format!("many/f{i:02}")),
                format!("file {i}").as_bytes(),
            );
        }
        self.took(self.f.rescan());
        write(&src.join("top"), b"top v2");
        self.took(self.f.rescan());
        self.replicate(false).assert_success();
        // The replica's newest retired here: the next session compares manifests.
        write(&src.join("docs/b"), b"b");
        self.took(self.f.rescan());
        self.f
            .tool("reverb-retire")
            .args(["--keep", "1"])
            .assert_success();
        self.replicate(false).assert_success();
    }

    /// One crash state: every version under its final name browses as its manifest; the
    /// next replication succeeds and leaves every version exact and the replica clean.
    fn check(&self, tally: &mut Tally) -> Vec<String> {
        let dir = self.replica.join("job");
        let mut found = Vec::new();
        if !dir.join("job.toml").is_file() {
            tally.before_the_job += 1;
            return found;
        }
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('V') && dir.join(n).is_dir())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for v in &names {
            let Some(want) = self.manifest.get(v) else {
                found.push(format!("before repair: {v} is in no manifest"));
                continue;
            };
            tally.versions_checked += 1;
            let dest = self.f._tmp.path().join("browsed");
            fsutil_remove(&dest);
            let o = std::process::Command::new("cp")
                .args(["-RL", "--preserve=mode,ownership,timestamps,xattr"])
                .arg(dir.join(v))
                .arg(&dest)
                .output()
                .expect("run cp");
            if !o.status.success() {
                found.push(format!(
                    "before repair: reading {v}: {}",
                    reverb_tests::stderr(&o).trim()
                ));
            } else if let Some(d) = tree_difference(want, &capture(&dest, OPTS)) {
                found.push(format!("before repair: version {v} is wrong: {d}"));
            }
            fsutil_remove(&dest);
        }
        let o = self.replicate(false).output();
        if !o.status.success() {
            found.push(format!(
                "the next replication failed: {}",
                reverb_tests::stderr(&o).trim()
            ));
            return found;
        }
        let o = cmd("reverb-index")
            .arg("--vault")
            .arg(&self.replica)
            .args(["--job", "job", "--check", "--data"])
            .output();
        if !o.status.success() {
            found.push(format!(
                "after repair: reverb-index --check --data: {}",
                reverb_tests::stdout(&o)
                    .lines()
                    .take(4)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        found.extend(strays(&dir).into_iter().map(|s| format!("stray {s}")));
        let index = fs::read_to_string(dir.join("index.tsv")).unwrap_or_default();
        for v in index
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').nth(1).map(str::to_owned))
        {
            let Some(want) = self.manifest.get(&v) else {
                found.push(format!("after repair: {v} is in no manifest"));
                continue;
            };
            tally.versions_checked += 1;
            let dest = self.f._tmp.path().join("restored");
            fsutil_remove(&dest);
            let o = cmd("reverb-restore")
                .arg("--vault")
                .arg(&self.replica)
                .args(["--job", "job", "--from", &v])
                .arg("--to")
                .arg(&dest)
                .output();
            if !o.status.success() {
                found.push(format!(
                    "after repair: restore {v}: {}",
                    reverb_tests::stderr(&o)
                ));
            } else if let Some(d) = tree_difference(want, &capture(&dest, OPTS)) {
                found.push(format!("after repair: version {v} is wrong: {d}"));
            }
            fsutil_remove(&dest);
        }
        found
    }
}

#[test]
fn power_loss_of_the_receiver_leaves_every_replicated_version_exact() {
    let fstype = "ext4";
    if let Some(why) = blockreplay::unavailable(fstype) {
        reverb_tests::skip!("{why}: the replica's power-loss sweep");
    }
    let blocklog = blocklog();
    let (_tmp, work, mountpoint) = sweep_dirs();
    let mut f = Fixture::new();
    f.vault = f._tmp.path().join("source-vault");
    let mut w = ReplicaWorkload {
        f,
        replica: mountpoint.join("replica"),
        manifest: BTreeMap::new(),
    };
    let rec = Recorder::start(fstype, &work, &mountpoint, &blocklog)
        .unwrap_or_else(|e| panic!("{fstype}: cannot record: {e}"));
    w.run();
    let base = rec.base.clone();
    let ops = rec.finish().unwrap_or_else(|e| panic!("{fstype}: {e}"));
    // The source changes no more: save its vault, which each state's repair extends.
    let saved = w.f._tmp.path().join("source-vault.saved");
    TestCommand::program("cp")
        .arg("-a")
        .arg(&w.f.vault)
        .arg(&saved)
        .assert_success();
    let mut rng = Rng::new(0x5eed_0025);
    let states = blockreplay::states(&ops, sample(12), &mut rng);
    let mut replayer = Replayer::new(&ops, &base, &work).expect("replayer");
    let mut tally = Tally::default();
    let image = work.join("state.img");
    for state in &states {
        tally.states += 1;
        fsutil_remove(&w.f.vault);
        TestCommand::program("cp")
            .arg("-a")
            .arg(&saved)
            .arg(&w.f.vault)
            .assert_success();
        replayer.write(state, &image).expect("write state");
        let found = match Mounted::new(&image, &mountpoint) {
            Err(e) => vec![format!("does not mount: {e}")],
            Ok(m) => {
                let found = w.check(&mut tally);
                if let Err(e) = m.close() {
                    panic!("{fstype}: cannot unmount a state: {e}");
                }
                found
            }
        };
        let at = describe(state);
        tally
            .findings
            .extend(found.into_iter().map(|f| format!("[{at}] {f}")));
    }
    eprintln!(
        "replica power-loss sweep: {} states ({} before the job existed), {} versions \
         compared, {} findings",
        tally.states,
        tally.before_the_job,
        tally.versions_checked,
        tally.findings.len()
    );
    assert!(tally.versions_checked > 0, "no crash state held a version");
    assert!(
        tally.findings.is_empty(),
        "{} findings:\n{}",
        tally.findings.len(),
        tally.findings.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The source index (docs/design.md#index-driven-rescans) across power loss: a small job
// whose rescans write the index's base and whose builds write its deltas, on a
// block-logged vault. Whatever prefix of those writes reached the disk, the next rescan
// makes the newest version exactly the source (which is outside the image, in its final
// state): a torn, missing or stale index may cost time, never a change.

/// The workload: a first version, a rescan that writes the base, an event-driven version
/// (a delta), a rescan that finds a change (a fresh base, then the version's delta), and a
/// last change no version holds yet.
fn index_workload(f: &Fixture) {
    let src = &f.src;
    for i in 0..6 {
        write(
            &src.join(format!("d{}/f{i}", i % 2)),
            format!("v1 {i}").as_bytes(),
        );
    }
    f.snap(&["--init"])
        .arg("--source")
        .arg(src)
        .assert_success();
    // Time that must pass (not an event): the entries leave the racily clean window, so
    // the base written next vouches for them.
    reverb_tests::wait_for_clock(
        std::time::SystemTime::now() + std::time::Duration::from_millis(2200),
    );
    f.rescan();
    write(&src.join("d0/f0"), b"v2 by events");
    let mut c = f.snap(&["--changes", "-"]);
    c.stdin(format!("{EVENTS_HEADER}\n{}", event("modify", "d0/f0")).into_bytes());
    c.assert_success();
    write(&src.join("d1/f1"), b"v3 by a rescan");
    f.rescan();
    write(&src.join("d1/f3"), b"v4, after the last version");
}

#[test]
fn power_loss_during_an_index_write_gives_a_correct_next_rescan() {
    let fstype = "ext4";
    if let Some(why) = blockreplay::unavailable(fstype) {
        reverb_tests::skip!("{why}: the source index's power-loss sweep");
    }
    let blocklog = blocklog();
    let (tmp, work, mountpoint) = sweep_dirs();
    let mut f = Fixture::new();
    f.vault = mountpoint.join("vault");
    let rec = Recorder::start(fstype, &work, &mountpoint, &blocklog)
        .unwrap_or_else(|e| panic!("{fstype}: cannot record: {e}"));
    index_workload(&f);
    let base = rec.base.clone();
    let ops = rec.finish().unwrap_or_else(|e| panic!("{fstype}: {e}"));
    let mut rng = Rng::new(0x5eed_0024);
    let states = blockreplay::states(&ops, sample(40), &mut rng);
    let mut replayer = Replayer::new(&ops, &base, &work).expect("replayer");
    let image = work.join("state.img");
    let want = capture(&f.src, OPTS);
    let (mut checked, mut findings) = (0, Vec::new());
    for state in &states {
        replayer.write(state, &image).expect("write state");
        let m = match Mounted::new(&image, &mountpoint) {
            Ok(m) => m,
            Err(e) => {
                findings.push(format!("[{}] does not mount: {e}", describe(state)));
                continue;
            }
        };
        if f.job_dir().join("job.toml").is_file() && f.job_dir().join("current").exists() {
            checked += 1;
            let o = f.snap(&[]).output();
            if !o.status.success() {
                findings.push(format!(
                    "[{}] the rescan failed: {}",
                    describe(state),
                    reverb_tests::stderr(&o).trim()
                ));
            } else {
                let dest = tmp.path().join("restored");
                fsutil_remove(&dest);
                match restore_to(&f, "job", "latest", &dest) {
                    Err(e) => findings.push(format!("[{}] restore: {e}", describe(state))),
                    Ok(()) => {
                        if let Some(d) = tree_difference(&want, &capture(&dest, OPTS)) {
                            findings.push(format!(
                                "[{}] the rescan's version is wrong: {d}",
                                describe(state)
                            ));
                        }
                    }
                }
                fsutil_remove(&dest);
            }
        }
        if let Err(e) = m.close() {
            panic!("{fstype}: cannot unmount a state: {e}");
        }
    }
    eprintln!(
        "source index power-loss sweep: {} states, {checked} rescans checked, {} findings",
        states.len(),
        findings.len()
    );
    assert!(checked > 0, "no crash state held a version");
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}
