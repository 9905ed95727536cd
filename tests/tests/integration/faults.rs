//! Crash injection: `kill -9` at every write step (`REVERB_FAULT_AFTER=k`) and at timed
//! moments of `reverb-snap` (first and later versions, rescan and `--changes`),
//! `reverb-retire` and `reverb-index --recount`. After every crash: every version visible
//! under its final name is complete and exact; the next normal run repairs or resumes;
//! then `reverb-index --check` is clean, nothing is left in `.partial/`, and every retained
//! version restores exactly to what the source was when it was taken.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use reverb_tests::model::{assert_same, capture, without_dir_mtimes};
use reverb_tests::ops::{
    self, FastFixture, Tree, disk_dirs, index_dirs, no_partial, opts, restored, small_tree,
    unlinked, verify_all,
};
use reverb_tests::{Fixture, TestCommand, sh, thinning};

static RUNS: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);

fn report(what: &str) {
    eprintln!(
        "faults[{what}]: {} runs so far, {} killed mid-way, 0 losses",
        RUNS.load(Relaxed),
        FAULTS.load(Relaxed)
    );
}

fn copy_tree(from: &Path, to: &Path) {
    sh(&format!(
        "rm -rf '{t}' && if [ -e '{f}' ]; then cp -a '{f}' '{t}'; fi",
        f = from.display(),
        t = to.display()
    ));
}

/// The version `retiring = "…"` names in job.toml, if any.
fn retiring(f: &Fixture) -> Option<String> {
    fs::read_to_string(f.job_dir().join("job.toml"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("retiring = ")
                .map(|v| v.trim_matches('"').to_owned())
        })
}

/// Right after a crash: every version directory visible under its final name (except one
/// marked as being retired) is one the test recorded, or the one being taken (`new`), and
/// restores exactly to it (during a retirement, directory mtimes excepted: the next run
/// puts them back from the retirement's record, and `settle` checks them).
fn visible_versions_exact(
    f: &Fixture,
    recorded: &BTreeMap<String, Tree>,
    new: Option<&Tree>,
    what: &str,
) {
    // A version renamed into place but not yet in index.tsv is not restorable by the tool
    // until the next run indexes it (`recover`); it must be the newest, and `settle` checks
    // it after the repair.
    let indexed = if f.job_dir().join("index.tsv").exists() {
        index_dirs(f)
    } else {
        Vec::new()
    };
    let on_disk = disk_dirs(f);
    for d in on_disk.iter().filter(|d| !indexed.contains(d)) {
        assert!(
            new.is_some() && Some(d) == on_disk.last(),
            "{what}: {d} is on disk but not in index.tsv, and is not the version being taken"
        );
    }
    let marked = retiring(f);
    for d in on_disk.iter().filter(|d| indexed.contains(d)) {
        if Some(d) == marked.as_ref() {
            continue;
        }
        let expected = recorded
            .get(d)
            .or(new)
            .unwrap_or_else(|| panic!("{what}: unexpected version {d}"));
        let got = restored(f, d);
        let (mut expected, mut got) = (unlinked(expected), unlinked(&got));
        if marked.is_some() {
            (expected, got) = (without_dir_mtimes(&expected), without_dir_mtimes(&got));
        }
        assert_same(
            &expected,
            &got,
            &format!("{what}: {d} right after the crash"),
        );
    }
}

/// After the repair: versions not yet recorded must be exactly `new` (two of them when a
/// `--changes` batch is replayed after a crash that came after its version was published:
/// events are trusted, so the replay versions those paths again); then every retained version is exact and `--check` is clean.
fn settle(f: &Fixture, recorded: &mut BTreeMap<String, Tree>, new: Option<&Tree>, what: &str) {
    let fresh: Vec<String> = index_dirs(f)
        .into_iter()
        .filter(|d| !recorded.contains_key(d))
        .collect();
    assert!(fresh.len() <= 2, "{what}: too many new versions: {fresh:?}");
    for d in fresh {
        recorded.insert(d, new.expect("a new version").clone());
    }
    assert!(no_partial(f), "{what}: .partial/ not cleaned up");
    assert!(retiring(f).is_none(), "{what}: retirement mark left behind");
    verify_all(f, recorded, what);
}

/// Runs `run(Some(k))` for k = 1, 2, … until a run finishes without a fault; after each
/// crash, checks what is visible, runs `repair()` and settles. The vault (and with it
/// `recorded`) is reset before each k from a pristine copy. Returns the step count and the
/// versions recorded after the run without a fault.
#[allow(clippy::too_many_arguments)]
fn every_step(
    f: &Fixture,
    what: &str,
    recorded: &BTreeMap<String, Tree>,
    new: Option<&Tree>,
    run: &dyn Fn(u64) -> TestCommand,
    repair: &dyn Fn() -> TestCommand,
    after: &dyn Fn(&Fixture, &BTreeMap<String, Tree>),
) -> (u64, BTreeMap<String, Tree>) {
    every_step_with(f, what, recorded, new, run, repair, after, true)
}

/// [`every_step`]; with `exact_after_crash` false, what a crash leaves is checked only
/// once the next run repaired it (a vault without `RENAME_EXCHANGE`, where a directory
/// moved forward by a retirement is briefly missing from the next version).
#[allow(clippy::too_many_arguments)]
fn every_step_with(
    f: &Fixture,
    what: &str,
    recorded: &BTreeMap<String, Tree>,
    new: Option<&Tree>,
    run: &dyn Fn(u64) -> TestCommand,
    repair: &dyn Fn() -> TestCommand,
    after: &dyn Fn(&Fixture, &BTreeMap<String, Tree>),
    exact_after_crash: bool,
) -> (u64, BTreeMap<String, Tree>) {
    let pristine = f._tmp.path().join("pristine-vault");
    copy_tree(&f.vault, &pristine);
    for k in 1..=2000u64 {
        copy_tree(&pristine, &f.vault);
        let mut rec = recorded.clone();
        let mut c = run(k);
        let o = c.output();
        RUNS.fetch_add(1, Relaxed);
        ops::assert_no_panic(&o, what);
        let label = format!("{what}, k={k}");
        if o.status.success() {
            settle(f, &mut rec, new, &format!("{label} (no fault)"));
            after(f, &rec);
            report(what);
            return (k - 1, rec);
        }
        if o.status.signal() != Some(libc::SIGKILL) {
            panic!(
                "{}",
                c.failure(&o, &format!("{label}: expected death by SIGKILL"))
            );
        }
        FAULTS.fetch_add(1, Relaxed);
        if exact_after_crash {
            visible_versions_exact(f, &rec, new, &label);
        }
        // The run after the crash must succeed.
        repair().assert_success();
        RUNS.fetch_add(1, Relaxed);
        settle(f, &mut rec, new, &format!("{label} (repaired)"));
        after(f, &rec);
    }
    panic!("{what}: never finished without a fault");
}

fn snap_cmd(f: &Fixture, first: bool) -> TestCommand {
    let mut c = f.snap(&[]);
    if first {
        c.arg("--init").arg("--source").arg(&f.src);
    }
    c
}

fn with_fault(mut c: TestCommand, k: u64) -> TestCommand {
    c.env("REVERB_FAULT_AFTER", k.to_string());
    c
}

/// A small source with a symlink, a lookalike link, a hard-linked pair and an empty dir.
fn seed(src: &Path) {
    small_tree(src, 0, 3, 5);
    std::os::unix::fs::symlink("d0/f1", src.join("link")).expect("symlink");
    std::os::unix::fs::symlink("../V1-20200101T000000Z/look", src.join("look")).expect("symlink");
    fs::hard_link(src.join("d1/f0"), src.join("hard")).expect("link");
    fs::create_dir(src.join("empty")).expect("mkdir");
}

/// Changes part of the source: some files rewritten, one deleted, one dir renamed, one new,
/// and the hard-linked pair appended to through `hard` (the event names that name only).
fn change(src: &Path, round: u32) -> Vec<String> {
    let mut ev = Vec::new();
    let mut hard = fs::OpenOptions::new()
        .append(true)
        .open(src.join("hard"))
        .expect("open hard");
    std::io::Write::write_all(&mut hard, format!("round {round}\n").as_bytes()).expect("append");
    ev.push(ops::event("modify", "file", Path::new("hard"), None));
    for i in 0..3 {
        let p = format!("d0/f{i}");
        fs::write(src.join(&p), format!("round {round} {i}\n").repeat(5)).expect("write");
        ev.push(ops::event("modify", "file", Path::new(&p), None));
    }
    let gone = format!("d2/f{}", round % 5);
    if fs::remove_file(src.join(&gone)).is_ok() {
        ev.push(ops::event("delete", "file", Path::new(&gone), None));
    }
    let (a, b) = if round.is_multiple_of(2) {
        ("d1", "moved")
    } else {
        ("moved", "d1")
    };
    if fs::rename(src.join(a), src.join(b)).is_ok() {
        ev.push(ops::event("move", "dir", Path::new(a), Some(Path::new(b))));
    }
    let new = format!("new{round}");
    fs::write(src.join(&new), b"new").expect("write");
    ev.push(ops::event("create", "file", Path::new(&new), None));
    ev
}

fn events_text(lines: &[String]) -> String {
    let mut t = String::from(reverb_common::events::HEADER);
    t.push('\n');
    for l in lines {
        t.push_str(l);
        t.push('\n');
    }
    t
}

#[test]
fn kill_9_at_every_write_step_of_snap_first_rescan_and_changes() {
    let f = FastFixture::new(512);
    seed(&f.src);
    let state0 = capture(&f.src, opts());
    let none = |_: &Fixture, _: &BTreeMap<String, Tree>| {};

    // The first version (the vault and job do not exist yet).
    let (steps, mut recorded) = every_step(
        &f,
        "snap first",
        &BTreeMap::new(),
        Some(&state0),
        &|k| with_fault(snap_cmd(&f, true), k),
        &|| snap_cmd(&f, true),
        &none,
    );
    assert!(
        steps >= 15,
        "the first version took only {steps} write steps"
    );
    // Two more versions for history, then a later rescan and a later --changes.
    for round in 1..=2 {
        change(&f.src, round);
        recorded.insert(f.rescan(), capture(&f.src, opts()));
    }
    change(&f.src, 3);
    let state3 = capture(&f.src, opts());
    let (steps, recorded) = every_step(
        &f,
        "snap rescan",
        &recorded,
        Some(&state3),
        &|k| with_fault(snap_cmd(&f, false), k),
        &|| snap_cmd(&f, false),
        &none,
    );
    assert!(steps >= 4, "a rescan took only {steps} write steps");
    // --changes: the same change expressed as events (the vault is reset to before it).
    let lines = change(&f.src, 4);
    let state4 = capture(&f.src, opts());
    let text = events_text(&lines);
    let changes = || {
        let mut c = snap_cmd(&f, false);
        c.args(["--changes", "-"]).stdin(text.as_bytes());
        c
    };
    // The vault holds state3 versioned; the events describe the step to state4.
    let (steps, _) = every_step(
        &f,
        "snap --changes",
        &recorded,
        Some(&state4),
        &|k| with_fault(changes(), k),
        &changes,
        &none,
    );
    assert!(steps >= 4, "--changes took only {steps} write steps");
    report("snap");
}

#[test]
fn kill_9_at_every_write_step_of_retire_and_recount() {
    let f = FastFixture::new(512);
    seed(&f.src);
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    for round in 1..=6 {
        change(&f.src, round);
        recorded.insert(f.rescan(), capture(&f.src, opts()));
    }
    let total = recorded.len();
    // Retire three versions in one run.
    let keep = (total - 3).to_string();
    let retire = || {
        let mut c = f.tool("reverb-retire");
        c.args(["--keep", &keep]);
        c
    };
    let kept = |f: &Fixture, _: &BTreeMap<String, Tree>| {
        assert_eq!(index_dirs(f).len(), total - 3, "retirement did not finish");
    };
    let (steps, recorded) = every_step(
        &f,
        "retire",
        &recorded,
        None,
        &|k| with_fault(retire(), k),
        &retire,
        &kept,
    );
    assert!(
        steps >= 10,
        "retiring 3 versions took only {steps} write steps"
    );
    // The recount, on an index whose sizes drifted (hand-edited held_bytes).
    let index = f.job_dir().join("index.tsv");
    let text = fs::read_to_string(&index).expect("index");
    let drifted: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l}\n")
            } else {
                let mut c: Vec<String> = l.split('\t').map(str::to_owned).collect();
                c[5] = "1".into();
                format!("{}\n", c.join("\t"))
            }
        })
        .collect();
    fs::write(&index, drifted).expect("write index");
    let recount = || {
        let mut c = f.tool("reverb-index");
        c.arg("--recount");
        c
    };
    let (steps, _) = every_step(
        &f,
        "recount",
        &recorded,
        None,
        &|k| with_fault(recount(), k),
        &recount,
        &|_, _| {},
    );
    assert!(steps >= 1, "a recount has at least one write step");
    report("retire+recount");
}

/// Retirement on a vault without `RENAME_EXCHANGE` (sshfs; forced here with
/// `REVERB_FAULT_NO_EXCHANGE=1`): a directory moves forward in two steps (the link goes,
/// the directory takes its place), and a crash between them is finished by the next run.
#[test]
fn kill_9_at_every_write_step_of_retire_without_rename_exchange() {
    let f = FastFixture::new(512);
    seed(&f.src);
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    for round in 1..=4 {
        change(&f.src, round);
        recorded.insert(f.rescan(), capture(&f.src, opts()));
    }
    let total = recorded.len();
    let keep = (total - 2).to_string();
    let retire = || {
        let mut c = f.tool("reverb-retire");
        c.args(["--keep", &keep])
            .env("REVERB_FAULT_NO_EXCHANGE", "1");
        c
    };
    let kept = |f: &Fixture, _: &BTreeMap<String, Tree>| {
        assert_eq!(index_dirs(f).len(), total - 2, "retirement did not finish");
    };
    // Right after a crash between removing the link and moving the directory, the next
    // version misses that directory until the next run finishes the move: checked after
    // that run (docs/retirement.md).
    let (steps, _) = every_step_with(
        &f,
        "retire without RENAME_EXCHANGE",
        &recorded,
        None,
        &|k| with_fault(retire(), k),
        &retire,
        &kept,
        false,
    );
    assert!(
        steps >= 8,
        "retiring 2 versions took only {steps} write steps"
    );
    report("retire without RENAME_EXCHANGE");
}

/// Kills a process after `delay`; returns whether it was still running (killed mid-way).
fn kill_after(mut c: TestCommand, delay: Duration, input: Option<&str>) -> bool {
    let mut child = c
        .command()
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    if let Some(t) = input {
        use std::io::Write;
        let mut i = child.stdin.take().expect("stdin");
        let _ = i.write_all(t.as_bytes());
    }
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().expect("wait");
    RUNS.fetch_add(1, Relaxed);
    let killed = status.signal() == Some(libc::SIGKILL);
    if killed {
        FAULTS.fetch_add(1, Relaxed);
    }
    killed
}

#[test]
fn timed_sigkill_of_snap_retire_and_recount() {
    let f = FastFixture::new(512);
    // Big enough for a version to take tens of milliseconds in a debug build.
    small_tree(&f.src, 0, 12, 20);
    fs::write(f.src.join("big"), vec![3u8; 2 << 20]).expect("write");
    let state0 = capture(&f.src, opts());
    let mut killed = 0;
    // The first version, killed ever later until a run completes.
    let mut recorded = BTreeMap::new();
    for i in 0..40u64 {
        let done = !kill_after(
            snap_cmd(&f, true),
            Duration::from_micros(300 + i * i * 150),
            None,
        );
        if f.vault.join(&f.job).exists() {
            visible_versions_exact(&f, &recorded, Some(&state0), &format!("timed first {i}"));
        }
        if done {
            break;
        }
        killed += 1;
        // The next run (the same command) repairs or finishes.
        snap_cmd(&f, true).assert_success();
        RUNS.fetch_add(1, Relaxed);
        settle(
            &f,
            &mut recorded,
            Some(&state0),
            &format!("timed first {i}"),
        );
        // Start over for the next delay.
        sh(&format!("rm -rf '{}'", f.vault.display()));
        recorded.clear();
    }
    if recorded.is_empty() {
        let v = f.first();
        if !v.is_empty() {
            recorded.insert(v, state0.clone());
        }
        settle(&f, &mut recorded, Some(&state0), "timed first, completed");
    }
    let mut round = 1u32;
    let t0 = Instant::now();
    let mut runs = 0u64;
    while runs < 48 && t0.elapsed() < Duration::from_secs(30) {
        runs += 1;
        round += 1;
        small_tree(&f.src, round, 12, 20);
        fs::write(f.src.join("big"), vec![round as u8; 2 << 20]).expect("write");
        let state = capture(&f.src, opts());
        let delay = Duration::from_micros(500 + (runs * 7919) % 40_000);
        let by_events = runs.is_multiple_of(3);
        // Every file changed: the events name each of them.
        let input = by_events.then(|| {
            let mut lines = vec![ops::event("modify", "file", Path::new("big"), None)];
            for (p, m) in ops::entries(&f.src) {
                if m.is_file() {
                    lines.push(ops::event("modify", "file", &p, None));
                }
            }
            events_text(&lines)
        });
        let mut c = snap_cmd(&f, false);
        if by_events {
            c.args(["--changes", "-"]);
        }
        if kill_after(c, delay, input.as_deref()) {
            killed += 1;
        }
        visible_versions_exact(&f, &recorded, Some(&state), &format!("timed snap {runs}"));
        // Repair with a rescan (the killed batch's events are lost, as after a power cut).
        f.snap(&["--force"]).assert_success();
        settle(
            &f,
            &mut recorded,
            Some(&state),
            &format!("timed snap {runs}"),
        );
        // Every round: a timed kill of a retirement down to three versions (every fourth
        // round, of a recount instead), then the retirement completes.
        if index_dirs(&f).len() > 3 {
            let keep = "3".to_owned();
            let mut c = f.tool("reverb-retire");
            c.args(["--keep", &keep]);
            if runs.is_multiple_of(4) {
                c = f.tool("reverb-index");
                c.arg("--recount");
            }
            if kill_after(c, delay / 2, None) {
                killed += 1;
            }
            visible_versions_exact(&f, &recorded, None, &format!("timed retire {runs}"));
            ops::tool(&f, "reverb-retire", &["--keep", &keep]).assert_success();
            settle(&f, &mut recorded, None, &format!("timed retire {runs}"));
        }
    }
    eprintln!("timed kills: {runs} rounds, {killed} processes killed mid-way");
    assert!(
        killed > 0,
        "no run was killed mid-way: the tree is too small"
    );
    report("timed");
}

// ---------------------------------------------------------------------------------------
// Random histories with a kill -9 at a random write step.

#[derive(Debug, Clone)]
struct CrashStep {
    ops: Vec<ops::Op>,
    by_events: bool,
    /// Kill `reverb-snap` after this many write steps.
    fault: Option<u64>,
    /// Then `reverb-retire`, killed after this many steps.
    retire: Option<(Retire, Option<u64>)>,
}

/// Which retirement a step runs.
#[derive(Debug, Clone, Copy)]
enum Retire {
    /// `--keep K`: the oldest go.
    Keep(u8),
    /// Thinning: the versions whose bit is clear in the mask (by position, oldest first)
    /// go, wherever they are (`--keep-hourly` over arranged times).
    Thin(u16),
}

fn retire_strategy() -> impl Strategy<Value = Retire> {
    prop_oneof![
        (1u8..4).prop_map(Retire::Keep),
        any::<u16>().prop_map(Retire::Thin)
    ]
}

fn crash_step() -> impl Strategy<Value = CrashStep> {
    (
        prop::collection::vec(ops::op_strategy(), 1..6),
        any::<bool>(),
        prop::option::weighted(0.8, 1u64..8),
        prop::option::weighted(
            0.5,
            (retire_strategy(), prop::option::weighted(0.8, 1u64..24)),
        ),
    )
        .prop_map(|(ops, by_events, fault, retire)| CrashStep {
            ops,
            by_events,
            fault,
            retire,
        })
}

/// Runs `c`: true when a fault killed it, false when it succeeded; anything else fails.
fn killed(c: &mut TestCommand, what: &str) -> bool {
    let o = c.output();
    ops::assert_no_panic(&o, what);
    if o.status.signal() == Some(libc::SIGKILL) {
        FAULTS.fetch_add(1, Relaxed);
        return true;
    }
    if !o.status.success() {
        panic!("{}", c.failure(&o, what));
    }
    false
}

fn crash_history(seed: &[ops::Op], steps: &[CrashStep]) {
    let f = FastFixture::new(256);
    for o in seed {
        ops::apply(&f.src, o);
    }
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    for (i, s) in steps.iter().enumerate() {
        let what = format!("step {i}");
        let mut lines = Vec::new();
        for o in &s.ops {
            lines.extend(ops::apply(&f.src, o));
        }
        let now = capture(&f.src, opts());
        let text = events_text(&lines);
        let snap = || {
            let mut c = snap_cmd(&f, false);
            if s.by_events {
                c.args(["--changes", "-"]).stdin(text.as_bytes());
            } else {
                c.arg("--force");
            }
            c
        };
        let mut c = snap();
        if let Some(k) = s.fault {
            c.env("REVERB_FAULT_AFTER", k.to_string());
        }
        let was_killed = killed(&mut c, &what);
        RUNS.fetch_add(1, Relaxed);
        if was_killed {
            visible_versions_exact(&f, &recorded, Some(&now), &format!("{what} killed"));
            // The same batch again (as a supervisor would after a restart).
            snap().assert_success();
            RUNS.fetch_add(1, Relaxed);
        }
        settle(&f, &mut recorded, Some(&now), &what);
        if let Some((how, fault)) = s.retire {
            let before = index_dirs(&f);
            let (args, left) = match how {
                Retire::Keep(k) => (vec!["--keep".to_owned(), k.to_string()], usize::from(k)),
                Retire::Thin(mask) => {
                    let gone = thinning::arrange_hours(&f, |i, _| mask & (1 << (i % 16)) != 0);
                    let args = vec!["--keep-hourly".to_owned(), "100000".to_owned()];
                    (args, before.len() - gone.len())
                }
            };
            let retire = || {
                let mut c = f.tool("reverb-retire");
                c.args(&args);
                c
            };
            let mut c = retire();
            if let Some(k) = fault {
                c.env("REVERB_FAULT_AFTER", k.to_string());
            }
            let was_killed = killed(&mut c, &format!("{what} retire"));
            RUNS.fetch_add(1, Relaxed);
            if was_killed {
                visible_versions_exact(&f, &recorded, None, &format!("{what} retire killed"));
                retire().assert_success();
                RUNS.fetch_add(1, Relaxed);
            }
            settle(&f, &mut recorded, None, &format!("{what} retire"));
            assert_eq!(
                index_dirs(&f).len(),
                left.min(before.len()),
                "{what}: {how:?} of {before:?}"
            );
        }
    }
}

fn crash_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: crash_cases(),
        failure_persistence: None,
        max_shrink_iters: 300,
        ..ProptestConfig::default()
    })]

    /// Random histories (the model test's operations) where `reverb-snap` and
    /// `reverb-retire` are killed at random write steps: after each crash and repair,
    /// every retained version is exact and the job checks clean.
    #[test]
    fn random_histories_with_kill_9_at_random_write_steps(
        seed in prop::collection::vec(ops::op_strategy(), 0..15),
        steps in prop::collection::vec(crash_step(), 1..7),
    ) {
        crash_history(&seed, &steps);
        report("random histories");
    }
}
