//! Model-based property test with the real binaries: random histories of source operations
//! (create, write, append, truncate, punch a hole, chmod, chown, rename over existing names,
//! symlink, hard link, mkdir, rmdir, rm -rf), each batch followed by a version, alternating
//! event-driven (`reverb-snap --changes -` fed the exact event lines the operations caused)
//! and rescan (`reverb-snap --force`), with random retirements (of the oldest, and random
//! thinning of versions in the middle). The model is the capture of
//! the source recorded after each batch. After every step: every retained version restores
//! exactly to its capture, `reverb-index --check` is clean, and the new version holds as
//! real entries only what changed (plus ancestor directories): no second copy of unchanged
//! data.
//!
//! `PROPTEST_CASES=N` (default 64) sets the number of random histories; see
//! docs/reliability.md for longer runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use proptest::prelude::*;
use reverb_common::events::EventLine;
use reverb_tests::model::capture;
use reverb_tests::ops::{
    self, Op, Tree, apply, changed_paths, opts, real_paths, snap_changes, verify_all,
    with_ancestors,
};
use reverb_tests::thinning;

/// One step: a batch of operations, then a version by events (true) or by rescan, then
/// maybe a retirement.
#[derive(Debug, Clone)]
struct Step {
    ops: Vec<Op>,
    by_events: bool,
    retire: Option<Retire>,
}

/// Which retirement a step runs.
#[derive(Debug, Clone, Copy)]
enum Retire {
    /// `reverb-retire --keep K`: the oldest go.
    Keep(u8),
    /// Thinning: the versions whose bit is clear in the mask (by position, oldest first)
    /// go, wherever they are (`--keep-hourly` over arranged times).
    Thin(u16),
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(ops::op_strategy(), 1..6),
        any::<bool>(),
        prop::option::weighted(
            0.4,
            prop_oneof![
                (1u8..4).prop_map(Retire::Keep),
                any::<u16>().prop_map(Retire::Thin)
            ],
        ),
    )
        .prop_map(|(ops, by_events, retire)| Step {
            ops,
            by_events,
            retire,
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

static HISTORIES: AtomicU64 = AtomicU64::new(0);
static STEPS: AtomicU64 = AtomicU64::new(0);
static OPS: AtomicU64 = AtomicU64::new(0);
static VERSIONS: AtomicU64 = AtomicU64::new(0);
static RESTORES: AtomicU64 = AtomicU64::new(0);

/// Runs one retirement and checks that exactly the versions it had to retire are gone.
fn retire(f: &reverb_tests::Fixture, how: Retire, what: &str) {
    let before = ops::index_dirs(f);
    let (mut o, expected) = match how {
        Retire::Keep(k) => {
            let o = ops::tool(f, "reverb-retire", &["--keep", &k.to_string()]);
            let from = before.len().saturating_sub(usize::from(k));
            (o, before[from..].to_vec())
        }
        Retire::Thin(mask) => {
            let gone = thinning::arrange_hours(f, |i, _| mask & (1 << (i % 16)) != 0);
            let o = ops::tool(f, "reverb-retire", &["--keep-hourly", "100000"]);
            let left = before.iter().filter(|d| !gone.contains(d)).cloned();
            (o, left.collect())
        }
    };
    let o = o.assert_success();
    ops::assert_no_panic(&o, what);
    assert_eq!(ops::index_dirs(f), expected, "{what}: {how:?}");
}

/// Runs one history; panics (so proptest shrinks) on the first broken promise.
fn history(seed: &[Op], steps: &[Step]) {
    let f = ops::FastFixture::new(256);
    for o in seed {
        apply(&f.src, o);
    }
    let mut recorded: BTreeMap<String, Tree> = BTreeMap::new();
    let mut prev = capture(&f.src, opts());
    let v1 = f.first();
    recorded.insert(v1, prev.clone());
    verify_all(&f, &recorded, "after V1");
    for (i, s) in steps.iter().enumerate() {
        let what = format!(
            "step {i} ({})",
            if s.by_events { "events" } else { "rescan" }
        );
        let mut lines = Vec::new();
        for o in &s.ops {
            lines.extend(apply(&f.src, o));
        }
        OPS.fetch_add(lines.len() as u64, Relaxed);
        STEPS.fetch_add(1, Relaxed);
        let now = capture(&f.src, opts());
        let out = if s.by_events {
            snap_changes(&f, &lines, &[])
        } else {
            f.snap(&["--force"])
        }
        .assert_success();
        ops::assert_no_panic(&out, &what);
        let v = reverb_tests::stdout(&out).trim().to_owned();
        let changed = changed_paths(&prev, &now);
        if v.is_empty() {
            assert!(
                changed.is_empty(),
                "{what}: no version, but the source changed at {changed:?}"
            );
        } else {
            // No second copy of unchanged data: the new version's real entries are the
            // changed paths, the paths the events named, and their ancestors,
            let mut allowed: BTreeSet<PathBuf> = BTreeSet::new();
            let mut named: Vec<PathBuf> = changed.iter().cloned().collect();
            for l in &lines {
                let e = EventLine::parse(l, 1).expect("our own event line parses");
                named.push(e.path.clone());
                named.extend(e.to_path.clone());
            }
            // A version that copies one name of a hard-linked file holds every name of it,
            // linked to that copy (I5): no second copy of its data either.
            for p in &named {
                for name in reverb_tests::inodes::names_sharing(&f.src, p) {
                    allowed.extend(with_ancestors(&name));
                }
            }
            // And the directories relative links climb out of (I8).
            let allowed = reverb_tests::links::kept_real(&f.src, allowed);
            let real = real_paths(&f.job_dir().join(&v));
            let extra: Vec<_> = real.difference(&allowed).collect();
            assert!(
                extra.is_empty(),
                "{what}: {v} holds unchanged data as real entries: {extra:?}"
            );
            // Holes are kept: no copied file takes more blocks than its source.
            for p in &real {
                let (Ok(vm), Ok(sm)) = (
                    fs::symlink_metadata(f.job_dir().join(&v).join(p)),
                    fs::symlink_metadata(f.src.join(p)),
                ) else {
                    continue;
                };
                if vm.is_file() && sm.is_file() {
                    assert!(
                        vm.blocks() <= sm.blocks(),
                        "{what}: {v}/{} takes {} blocks, its source {}: holes lost",
                        p.display(),
                        vm.blocks(),
                        sm.blocks()
                    );
                }
            }
            recorded.insert(v, now.clone());
            VERSIONS.fetch_add(1, Relaxed);
        }
        prev = now;
        if let Some(how) = s.retire {
            retire(&f, how, &what);
        }
        RESTORES.fetch_add(verify_all(&f, &recorded, &what) as u64, Relaxed);
    }
    // Finally, change exactly one file (one name): the new version holds only that file
    // and its ancestor directories as real entries.
    let single = ops::entries(&f.src)
        .into_iter()
        .find(|(_, m)| m.is_file() && m.nlink() == 1 && m.mode() & 0o200 != 0);
    if let Some((p, _)) = single {
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(f.src.join(&p))
            .expect("open");
        std::io::Write::write_all(&mut file, b"one more line\n").expect("append");
        drop(file);
        let by_events = steps.len().is_multiple_of(2);
        let out = if by_events {
            snap_changes(&f, &[ops::event("modify", "file", &p, None)], &[])
        } else {
            f.snap(&[])
        }
        .assert_success();
        let v = reverb_tests::stdout(&out).trim().to_owned();
        assert!(!v.is_empty(), "a one-file change made no version");
        let real = real_paths(&f.job_dir().join(&v));
        // Its ancestors, and the directories relative links climb out of (I8).
        let expected: BTreeSet<PathBuf> =
            reverb_tests::links::kept_real(&f.src, with_ancestors(&p));
        assert_eq!(
            real, expected,
            "a version after one changed file must hold only it, its ancestors and what I8 keeps real"
        );
        recorded.insert(v, capture(&f.src, opts()));
        verify_all(&f, &recorded, "after the one-file change");
    }
    eprintln!(
        "model: {} histories, {} steps, {} events, {} versions, {} version restores checked",
        HISTORIES.fetch_add(1, Relaxed) + 1,
        STEPS.load(Relaxed),
        OPS.load(Relaxed),
        VERSIONS.load(Relaxed),
        RESTORES.load(Relaxed)
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 400,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_histories_restore_exactly_and_never_duplicate_data(
        seed in prop::collection::vec(ops::op_strategy(), 0..15),
        steps in prop::collection::vec(step(), 1..8),
    ) {
        history(&seed, &steps);
    }
}

/// A fixed history through every operation kind, both version modes and retirement (the
/// deterministic companion of the property above; regressions found by it go here too).
#[test]
fn every_operation_kind_in_both_modes() {
    let seed = vec![
        Op::Mkdir { dir: 0, name: 3 },
        Op::Create {
            dir: 1,
            name: 0,
            len: 5000,
        },
        Op::Create {
            dir: 0,
            name: 1,
            len: 10,
        },
        Op::Mkdir { dir: 1, name: 2 },
    ];
    let all = |dir| {
        vec![
            Op::Write {
                file: 0,
                at: 100,
                len: 50,
                byte: 9,
            },
            Op::Append { file: 1, len: 30 },
            Op::Truncate {
                file: 0,
                len: 200_000,
            },
            Op::Punch {
                file: 0,
                at: 0,
                len: 300,
            },
            Op::Chmod { entry: 2, mode: 1 },
            Op::Chown { entry: 1, who: 2 },
            Op::Symlink {
                dir,
                name: 4,
                target: 4,
            },
            Op::HardLink {
                file: 0,
                dir,
                name: 5,
            },
            Op::Rename {
                entry: 3,
                dir: 0,
                name: 0,
            },
            Op::Mkdir { dir, name: 1 },
            Op::Rmdir { dir: 1 },
            Op::RmRf { entry: 0 },
            Op::Create {
                dir,
                name: 2,
                len: 77,
            },
        ]
    };
    let steps: Vec<Step> = (0..6)
        .map(|i| Step {
            ops: all(i % 3),
            by_events: i.is_multiple_of(2),
            retire: match i {
                3 => Some(Retire::Keep(2)),
                1 | 5 => Some(Retire::Thin(0b0101)),
                _ => None,
            },
        })
        .collect();
    history(&seed, &steps);
}
