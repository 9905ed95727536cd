//! Hostile and odd input: 1,000-level deep trees, names with every byte, 255-byte names,
//! symlink loops, source links that look exactly like vault links, unreadable files, a file
//! replaced by a directory between event and copy, a source that is a symlink, concurrent
//! writers, hand-edited or truncated index.tsv and job.toml, and fuzzed event lines.
//! Every case: a clear error or a correct version, never a panic, never silent damage.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reverb_common::events::EventLine;
use reverb_tests::model::{CaptureOpts, assert_same, capture, raw};
use reverb_tests::ops::{
    self, FastFixture, Tree, disk_dirs, event, index_dirs, no_partial, opts, restored,
    snap_changes, snap_stdin, tool, verify_all,
};
use reverb_tests::{Fixture, TestCommand, bin, require_root, sh, stderr, stdout};

/// Runs `c`, which must succeed without a panic; returns the version it printed.
fn version(mut c: TestCommand, what: &str) -> String {
    let o = c.assert_success();
    ops::assert_no_panic(&o, what);
    stdout(&o).trim().to_owned()
}

// ---------------------------------------------------------------------------------------
// A bug found by the model test (kept as an explicit regression test).

/// Rescan and `attrib dir .` both ignore a change of the source root's own attributes
/// (mode, mtime) when nothing below it changed: no version is made, so the latest version
/// no longer matches the source (I5 (docs/format.md#invariants)).
#[test]
fn root_attribute_change_alone_makes_a_version() {
    let f = FastFixture::new(64);
    fs::create_dir(f.src.join("d")).expect("mkdir");
    fs::write(f.src.join("d/file"), b"x").expect("write");
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    // Rescan after a chmod of the root.
    fs::set_permissions(&f.src, fs::Permissions::from_mode(0o700)).expect("chmod");
    let v = f.rescan();
    assert!(
        !v.is_empty(),
        "rescan: chmod of the source root made no version"
    );
    recorded.insert(v, capture(&f.src, opts()));
    // An event for the root after its mtime changed (a file created and deleted in it).
    fs::write(f.src.join("tmp"), b"").expect("write");
    fs::remove_file(f.src.join("tmp")).expect("rm");
    let v = version(
        snap_changes(&f, &[event("attrib", "dir", Path::new("."), None)], &[]),
        "attrib .",
    );
    assert!(!v.is_empty(), "`attrib dir .` made no version");
    recorded.insert(v, capture(&f.src, opts()));
    verify_all(&f, &recorded, "root attributes");
}

// ---------------------------------------------------------------------------------------
// Deep trees, odd names, loops, lookalikes.

/// reverb-snap (debug build, 8 MiB main stack) dies of a stack overflow (SIGABRT) when a
/// version is built after a change at the bottom of a 1,000-level tree: the builder
/// recurses once per level with large frames. The first version works; so does depth 500.
#[test]
fn a_thousand_level_deep_tree_versions_restores_and_retires() {
    deep(1000);
}

#[test]
fn a_five_hundred_level_deep_tree_versions_restores_and_retires() {
    deep(500);
}

fn deep(levels: usize) {
    // The test's own recursive capture needs more than a test thread's stack.
    let t = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || deep_tree(levels))
        .expect("thread");
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

fn deep_tree(levels: usize) {
    let f = FastFixture::new(256);
    let mut deep = f.src.clone();
    for _ in 0..levels {
        deep.push("d");
    }
    fs::create_dir_all(&deep).expect("mkdir -p 1000 levels");
    fs::write(deep.join("leaf"), b"bottom").expect("write");
    fs::write(f.src.join("d/top"), b"top").expect("write");
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    // Change the bottom (rescan), then the top (events), then the bottom again (events).
    fs::write(deep.join("leaf"), b"bottom, v2").expect("write");
    recorded.insert(f.rescan(), capture(&f.src, opts()));
    fs::write(f.src.join("d/top"), b"top, v2").expect("write");
    let v = version(
        snap_changes(
            &f,
            &[event("modify", "file", Path::new("d/top"), None)],
            &[],
        ),
        "top",
    );
    recorded.insert(v, capture(&f.src, opts()));
    fs::write(deep.join("leaf"), b"bottom, v3").expect("write");
    let rel = deep.strip_prefix(&f.src).expect("rel").join("leaf");
    let v = version(
        snap_changes(&f, &[event("modify", "file", &rel, None)], &[]),
        "leaf",
    );
    recorded.insert(v, capture(&f.src, opts()));
    verify_all(&f, &recorded, &format!("{levels} levels"));
    tool(&f, "reverb-retire", &["--keep", "2"]).assert_success();
    verify_all(&f, &recorded, &format!("{levels} levels, retired to 2"));
}

/// Every byte 1–255 except `/` as a one-byte name (`.` only inside longer names), plus
/// 255-byte names of ASCII, of invalid UTF-8 and of multibyte UTF-8.
fn odd_names(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<Vec<u8>> = (1u8..=255)
        .filter(|&b| b != b'/' && b != b'.')
        .map(|b| vec![b])
        .collect();
    names.extend([
        b"...".to_vec(),
        b".a".to_vec(),
        b"..a".to_vec(),
        b"a.".to_vec(),
        vec![b'x'; 255],
        vec![0xff; 255],
        "é".repeat(127).into_bytes(),
        b"\\x41\\t\\n".to_vec(),
        b"-rf".to_vec(),
    ]);
    let mut out = Vec::new();
    for n in names {
        let p = dir.join(raw(&n));
        fs::write(&p, &n).expect("write odd name");
        out.push(PathBuf::from(raw(&n)));
    }
    // A directory with an odd name holding an odd name.
    let d = dir.join(raw(b"dir\n\t\\\x7f\xfe"));
    fs::create_dir(&d).expect("mkdir");
    fs::write(d.join(raw(b"\x01inner\r")), b"inner").expect("write");
    out
}

#[test]
fn names_with_every_byte_and_255_byte_names_survive_every_path() {
    let f = FastFixture::new(256);
    let names = odd_names(&f.src);
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    // Events naming every odd path (escaped as docs/format.md#text-files says).
    let mut lines = Vec::new();
    for n in &names {
        fs::write(f.src.join(n), b"changed").expect("write");
        lines.push(event("modify", "file", n, None));
    }
    let v = version(snap_changes(&f, &lines, &[]), "odd names by events");
    assert!(!v.is_empty());
    recorded.insert(v, capture(&f.src, opts()));
    // Renames between odd names, seen by a rescan.
    for n in names.iter().take(40) {
        let mut to = n.as_os_str().as_bytes().to_vec();
        to.truncate(250);
        to.extend_from_slice(b"\xc0mv");
        fs::rename(f.src.join(n), f.src.join(raw(&to))).expect("rename");
    }
    recorded.insert(f.rescan(), capture(&f.src, opts()));
    verify_all(&f, &recorded, "odd names");
    tool(&f, "reverb-retire", &["--keep", "1"]).assert_success();
    verify_all(&f, &recorded, "odd names, retired to 1");
}

#[test]
fn symlink_loops_are_backed_up_as_links_and_never_followed() {
    let f = FastFixture::new(64);
    fs::create_dir(f.src.join("d")).expect("mkdir");
    symlink("b", f.src.join("a")).expect("symlink");
    symlink("a", f.src.join("b")).expect("symlink");
    symlink("self", f.src.join("self")).expect("symlink");
    symlink(".", f.src.join("d/dot")).expect("symlink");
    symlink("..", f.src.join("d/up")).expect("symlink");
    symlink(&f.src, f.src.join("d/abs-root")).expect("symlink");
    fs::write(f.src.join("d/file"), b"x").expect("write");
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    fs::write(f.src.join("d/file"), b"xy").expect("write");
    fs::remove_file(f.src.join("self")).expect("rm");
    symlink("d/up/d/up/self2", f.src.join("self2")).expect("symlink");
    recorded.insert(f.rescan(), capture(&f.src, opts()));
    let lines = [
        event("modify", "symlink", Path::new("d/dot"), None),
        event("attrib", "symlink", Path::new("d/up"), None),
        event("modify", "file", Path::new("d/file"), None),
    ];
    fs::write(f.src.join("d/file"), b"xyz").expect("write");
    recorded.insert(
        version(snap_changes(&f, &lines, &[]), "loops by events"),
        capture(&f.src, opts()),
    );
    verify_all(&f, &recorded, "symlink loops");
    // The version holds the links themselves.
    let v = index_dirs(&f).pop().expect("a version");
    let vd = f.job_dir().join(&v);
    assert_eq!(
        fs::read_link(vd.join("d/dot")).ok(),
        Some(PathBuf::from("."))
    );
    assert!(
        fs::symlink_metadata(vd.join("d/abs-root"))
            .expect("abs-root")
            .file_type()
            .is_symlink()
    );
}

/// A lookalike source link deep in a tree (below the 32-link bound): a later small change
/// materialises its unchanged subtree, and the copied link stays a source link there too.
#[test]
fn a_deep_lookalike_stays_a_source_link_when_its_subtree_is_materialised() {
    let f = FastFixture::new(64);
    let mut deep = PathBuf::new();
    for level in 0..36 {
        deep.push(format!("d{level}"));
    }
    fs::create_dir_all(f.src.join(&deep).join("sub")).expect("mkdir");
    fs::write(f.src.join(&deep).join("sub/look"), b"real in V1").expect("write");
    fs::write(f.src.join(&deep).join("changed"), b"one").expect("write");
    let v1 = f.first();
    let mut recorded = BTreeMap::from([(v1.clone(), capture(&f.src, opts()))]);
    let rel = deep.join("sub/look");
    fs::remove_file(f.src.join(&rel)).expect("rm");
    symlink(reverb_common::tree::link_text(&rel, &v1), f.src.join(&rel)).expect("symlink");
    recorded.insert(f.rescan(), capture(&f.src, opts()));
    fs::write(f.src.join(&deep).join("changed"), b"two").expect("write");
    recorded.insert(f.rescan(), capture(&f.src, opts()));
    verify_all(&f, &recorded, "a deep lookalike");
    f.check_clean();
}

#[test]
fn an_exact_vault_link_lookalike_stays_the_source_link_in_every_version_and_after_retirement() {
    let f = FastFixture::new(64);
    fs::create_dir_all(f.src.join("dir/sub")).expect("mkdir");
    fs::write(f.src.join("dir/sub/look"), b"the real file in V1").expect("write");
    fs::write(f.src.join("look"), b"the real top file in V1").expect("write");
    fs::write(f.src.join("other"), b"1").expect("write");
    let v1 = f.first();
    let mut recorded = BTreeMap::from([(v1.clone(), capture(&f.src, opts()))]);
    // Replace both files with source links whose text is exactly what a vault link to the
    // same path in V1 (which exists and holds data) would be.
    fs::remove_file(f.src.join("look")).expect("rm");
    symlink(format!("../{v1}/look"), f.src.join("look")).expect("symlink");
    fs::remove_file(f.src.join("dir/sub/look")).expect("rm");
    symlink(
        format!("../../../{v1}/dir/sub/look"),
        f.src.join("dir/sub/look"),
    )
    .expect("symlink");
    recorded.insert(f.rescan(), capture(&f.src, opts()));
    // Unchanged in the next versions (rescan and events), so they are vault-linked.
    for i in 0..3u32 {
        fs::write(f.src.join("other"), format!("{}", i + 2)).expect("write");
        let v = if i.is_multiple_of(2) {
            f.rescan()
        } else {
            version(
                snap_changes(
                    &f,
                    &[event("modify", "file", Path::new("other"), None)],
                    &[],
                ),
                "other",
            )
        };
        recorded.insert(v, capture(&f.src, opts()));
    }
    verify_all(&f, &recorded, "lookalikes");
    // Retire V1 (the version the lookalikes name), then V2 (the one holding them).
    for keep in ["4", "3", "1"] {
        tool(&f, "reverb-retire", &["--keep", keep]).assert_success();
        verify_all(&f, &recorded, &format!("lookalikes, kept {keep}"));
        // Read through the vault as any tool would: the texts are untouched.
        let newest = index_dirs(&f).pop().expect("a version");
        let vd = f.job_dir().join(&newest);
        let resolved = |p: &str| -> PathBuf {
            // Follow vault links to the holder, then read the source link there.
            let mut at = vd.join(p);
            for _ in 0..4 {
                let t = fs::read_link(&at).expect("a link");
                if t.to_string_lossy().contains(&v1) {
                    return t;
                }
                at = at.parent().expect("parent").join(t);
            }
            panic!("{p}: the lookalike text is gone in {newest}");
        };
        assert_eq!(resolved("look"), PathBuf::from(format!("../{v1}/look")));
        assert_eq!(
            resolved("dir/sub/look"),
            PathBuf::from(format!("../../../{v1}/dir/sub/look"))
        );
    }
    fs::write(f.src.join("other"), b"last").expect("write");
    recorded.insert(f.rescan(), capture(&f.src, opts()));
    verify_all(&f, &recorded, "lookalikes at the end");
}

// ---------------------------------------------------------------------------------------
// Unreadable files, type changes between event and copy, a symlinked source.

/// Lets uid 65534 reach the source (its ancestors up to /tmp made 0755) and own the vault
/// folder (created), for [`snap_as_nobody`].
pub(crate) fn open_to_nobody(f: &Fixture) {
    let mut p = f.src.clone();
    while p.pop() {
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o755));
        if p == Path::new("/tmp") {
            break;
        }
    }
    fs::create_dir(&f.vault).expect("mkdir vault");
    sh(&format!("chown 65534:65534 {}", f.vault.display()));
}

/// `reverb-snap --vault V --job J [args]` as the user nobody (uid 65534).
pub(crate) fn snap_as_nobody(f: &Fixture, args: &[&str]) -> TestCommand {
    let mut c = TestCommand::program("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("reverb-snap"))
        .arg("--vault")
        .arg(&f.vault)
        .arg("--job")
        .arg(&f.job)
        .args(args)
        .show_dir(f.job_dir());
    c
}

#[test]
fn unreadable_files_are_skipped_and_keep_their_previous_data() {
    require_root!("setpriv to an unprivileged user");
    let f = FastFixture::new(64);
    let nobody = CaptureOpts {
        owners: false,
        dir_mtimes: true,
    };
    open_to_nobody(&f);
    fs::write(f.src.join("public"), b"public v1").expect("write");
    fs::write(f.src.join("secret"), b"secret v1").expect("write");
    fs::create_dir(f.src.join("private")).expect("mkdir");
    fs::write(f.src.join("private/inside"), b"inside v1").expect("write");
    let mut c = snap_as_nobody(&f, &["--init"]);
    c.arg("--source").arg(&f.src);
    let v1 = version(c, "first as nobody");
    let first = capture(&f.src, nobody);
    // Now make data unreadable and change it.
    fs::write(f.src.join("secret"), b"secret v2, unreadable").expect("write");
    fs::set_permissions(f.src.join("secret"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(f.src.join("private/inside"), b"inside v2").expect("write");
    fs::set_permissions(f.src.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(f.src.join("public"), b"public v2").expect("write");
    for (i, args) in [&[][..], &["--force"][..]].iter().enumerate() {
        let v = version(snap_as_nobody(&f, args), "rescan as nobody");
        if i == 1 {
            assert!(v.is_empty(), "nothing new to version: {v}");
            continue;
        }
        assert!(!v.is_empty(), "a version is never aborted for one bad file");
        let got = capture(&f.restore(&v), nobody);
        let old = capture(&f.restore(&v1), nobody);
        let node = |t: &Tree, p: &str| t.get(Path::new(p)).cloned();
        assert_eq!(
            node(&got, "public").map(|n| n.content),
            node(&capture(&f.src, nobody), "public").map(|n| n.content),
            "the readable change is versioned"
        );
        assert_eq!(
            node(&got, "secret").map(|n| n.content),
            node(&old, "secret").map(|n| n.content),
            "an unreadable file keeps its previous data"
        );
        assert_eq!(
            node(&got, "private/inside").map(|n| n.content),
            node(&first, "private/inside").map(|n| n.content),
            "an unlistable directory keeps its previous contents"
        );
    }
    let journal = fs::read(f.job_dir().join("journal.tsv")).expect("journal");
    let journal = String::from_utf8_lossy(&journal);
    assert!(
        journal
            .lines()
            .any(|l| l.contains("\tskipped\t") && l.contains("secret")),
        "the skipped file is journaled:\n{journal}"
    );
    f.check_clean();
}

#[test]
fn a_path_whose_type_changed_between_event_and_copy_is_versioned_as_it_is() {
    let f = FastFixture::new(64);
    fs::write(f.src.join("was-file"), b"file").expect("write");
    fs::create_dir(f.src.join("was-dir")).expect("mkdir");
    fs::write(f.src.join("was-dir/x"), b"x").expect("write");
    fs::write(f.src.join("was-file-now-link"), b"f").expect("write");
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    // The events say "modify file"; by the time of the copy the types have changed.
    fs::remove_file(f.src.join("was-file")).expect("rm");
    fs::create_dir(f.src.join("was-file")).expect("mkdir");
    fs::write(f.src.join("was-file/inner"), b"inner").expect("write");
    fs::remove_dir_all(f.src.join("was-dir")).expect("rm -r");
    fs::write(f.src.join("was-dir"), b"now a file").expect("write");
    fs::remove_file(f.src.join("was-file-now-link")).expect("rm");
    symlink("was-dir", f.src.join("was-file-now-link")).expect("symlink");
    let lines = [
        event("modify", "file", Path::new("was-file"), None),
        event("modify", "dir", Path::new("was-dir"), None),
        event("modify", "file", Path::new("was-dir/x"), None),
        event("attrib", "file", Path::new("was-file-now-link"), None),
        event("modify", "file", Path::new("vanished"), None),
    ];
    let v = version(snap_changes(&f, &lines, &[]), "type changes");
    assert!(!v.is_empty());
    recorded.insert(v, capture(&f.src, opts()));
    verify_all(&f, &recorded, "type changes");
}

#[test]
fn a_source_that_is_a_symlink_to_a_directory() {
    let f = FastFixture::new(64);
    let real = f._tmp.path().join("real-src");
    fs::create_dir(&real).expect("mkdir");
    fs::write(real.join("a"), b"a").expect("write");
    fs::create_dir(real.join("d")).expect("mkdir");
    let link = f._tmp.path().join("src-link");
    symlink(&real, &link).expect("symlink");
    let mut c = f.snap(&["--init"]);
    c.arg("--source").arg(&link);
    let v1 = version(c, "first through a link");
    assert!(
        f.job_dir()
            .join(&v1)
            .symlink_metadata()
            .expect("v1")
            .is_dir(),
        "the version is a directory, not a copy of the link"
    );
    let mut recorded = BTreeMap::from([(v1, capture(&link, opts()))]);
    fs::write(real.join("d/b"), b"b").expect("write");
    recorded.insert(f.rescan(), capture(&link, opts()));
    fs::write(real.join("a"), b"a2").expect("write");
    let v = version(
        snap_changes(&f, &[event("modify", "file", Path::new("a"), None)], &[]),
        "events",
    );
    recorded.insert(v, capture(&link, opts()));
    verify_all(&f, &recorded, "symlinked source");
}

// ---------------------------------------------------------------------------------------
// Concurrency and damaged metadata.

#[test]
fn concurrent_snap_retire_and_recount_never_corrupt_the_job() {
    let f = FastFixture::new(256);
    ops::small_tree(&f.src, 0, 6, 10);
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    let mut codes: BTreeMap<(String, i32), u32> = BTreeMap::new();
    for round in 1..=25u32 {
        ops::small_tree(&f.src, round, 1 + round % 6, 4);
        let state = capture(&f.src, opts());
        let no_wait = round.is_multiple_of(2);
        let spawn = |name: &str, args: &[&str]| {
            let mut c = f.tool(name);
            c.args(args);
            if no_wait {
                c.arg("--no-wait");
            }
            (name.to_owned(), c.spawn())
        };
        let children = vec![
            spawn("reverb-snap", &[]),
            spawn("reverb-retire", &["--keep", "3"]),
            spawn("reverb-index", &["--recount"]),
            spawn("reverb-snap", &[]),
        ];
        for (name, child) in children {
            let o = child.wait_with_output().expect("wait");
            ops::assert_no_panic(&o, &name);
            let code = o.status.code().unwrap_or(-1);
            assert!(
                code == 0 || code == 75,
                "round {round}: {name} exited {code}: {}",
                stderr(&o)
            );
            *codes.entry((name, code)).or_default() += 1;
        }
        // Whatever ran, every new version is this round's state.
        for d in index_dirs(&f) {
            recorded.entry(d).or_insert_with(|| state.clone());
        }
        // Make sure this round's state is versioned before the next round changes it.
        if let Some(v) = Some(version(f.snap(&[]), "settle")).filter(|v| !v.is_empty()) {
            recorded.insert(v, state.clone());
        }
        verify_all(&f, &recorded, &format!("round {round}"));
    }
    eprintln!("exit codes (tool, code) → count: {codes:?}");
}

/// A pristine job with three versions; damages applied to copies of it.
#[test]
fn hand_edited_or_truncated_index_and_job_toml_give_clear_errors_never_silent_damage() {
    let f = FastFixture::new(256);
    ops::small_tree(&f.src, 0, 3, 4);
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    for round in 1..=3 {
        ops::small_tree(&f.src, round, 1, 2);
        recorded.insert(f.rescan(), capture(&f.src, opts()));
    }
    let pristine = f._tmp.path().join("pristine");
    sh(&format!(
        "cp -a {} {}",
        f.vault.display(),
        pristine.display()
    ));
    let index = fs::read_to_string(f.job_dir().join("index.tsv")).expect("index");
    let jobtoml = fs::read_to_string(f.job_dir().join("job.toml")).expect("job.toml");
    let lines: Vec<&str> = index.lines().collect();
    type Damage = (&'static str, &'static str, String);
    let damages: Vec<Damage> = vec![
        (
            "index.tsv",
            "truncated mid-row",
            index[..index.len() * 2 / 3].to_owned(),
        ),
        ("index.tsv", "emptied", String::new()),
        ("index.tsv", "header only", format!("{}\n", lines[0])),
        (
            "index.tsv",
            "a middle row removed",
            format!("{}\n{}\n{}\n{}\n", lines[0], lines[1], lines[3], lines[4]),
        ),
        (
            "index.tsv",
            "rows swapped",
            format!(
                "{}\n{}\n{}\n{}\n{}\n",
                lines[0], lines[2], lines[1], lines[3], lines[4]
            ),
        ),
        (
            "index.tsv",
            "a number is text",
            index.replacen("\t", "\tx", 1).replacen(
                &lines[1][..lines[1].find('\t').unwrap_or(0)],
                "one",
                1,
            ),
        ),
        (
            "index.tsv",
            "binary garbage",
            String::from_utf8_lossy(&[0xff, 0, 9, 10, 13, 0xfe]).into_owned(),
        ),
        (
            "index.tsv",
            "a row names a missing version",
            index.replace("V3-", "V9-"),
        ),
        (
            "job.toml",
            "truncated",
            jobtoml[..jobtoml.len() / 2].to_owned(),
        ),
        ("job.toml", "emptied", String::new()),
        (
            "job.toml",
            "an unknown key",
            format!("{jobtoml}\nsurprise = 1\n"),
        ),
        ("job.toml", "garbage", "[[[ not toml".to_owned()),
        (
            "job.toml",
            "source changed to a missing path",
            jobtoml.replace(&f.src.display().to_string(), "/nonexistent/elsewhere"),
        ),
    ];
    let mut tried = 0;
    for (file, how, text) in damages {
        let what = format!("{file} {how}");
        sh(&format!(
            "rm -rf {v} && cp -a {p} {v}",
            v = f.vault.display(),
            p = pristine.display()
        ));
        fs::write(f.job_dir().join(file), &text).expect("damage");
        let before = version_trees(&f);
        fs::write(f.src.join("d0/f0"), format!("{what}\n")).expect("change source");
        let mut outputs = vec![
            ("check", tool(&f, "reverb-index", &["--check"]).output()),
            ("snap", f.snap(&[]).output()),
            (
                "retire",
                tool(&f, "reverb-retire", &["--keep", "100"]).output(),
            ),
            ("recount", tool(&f, "reverb-index", &["--recount"]).output()),
            ("restore", {
                let dest = f._tmp.path().join(format!("r-{tried}"));
                tool(&f, "reverb-restore", &["--from", "latest"])
                    .arg("--to")
                    .arg(&dest)
                    .output()
            }),
        ];
        outputs.push((
            "check again",
            tool(&f, "reverb-index", &["--check"]).output(),
        ));
        for (tool_name, o) in &outputs {
            ops::assert_no_panic(o, &format!("{what}: {tool_name}"));
            let e = stderr(o);
            if !o.status.success() {
                assert!(
                    !e.trim().is_empty() || !stdout(o).trim().is_empty(),
                    "{what}: {tool_name} failed silently"
                );
            }
            // A clear error names the damaged file.
            if o.status.code() == Some(1) && !tool_name.starts_with("check") {
                assert!(
                    e.contains(file),
                    "{what}: {tool_name}'s error does not name {file}: {e}"
                );
            }
        }
        // Detected: the first --check (or every writer) must say something is wrong.
        let (_, check) = &outputs[0];
        assert!(
            !check.status.success() || outputs[1..4].iter().any(|(_, o)| !o.status.success()),
            "{what}: damage went unnoticed by --check and by every writer"
        );
        // Nothing deleted or changed in any version that existed.
        let after = version_trees(&f);
        for (d, t) in &before {
            let a = after
                .get(d)
                .unwrap_or_else(|| panic!("{what}: version {d} was deleted"));
            assert_same(t, a, &format!("{what}: {d} changed on disk"));
        }
        // Never silent damage: if a writer succeeded, the job must check clean now, or
        // the final --check must still report the damage.
        let (_, last) = outputs.last().expect("check again");
        if last.status.success() {
            for d in index_dirs(&f) {
                if let Some(t) = recorded.get(&d) {
                    assert_same(
                        &ops::unlinked(t),
                        &ops::unlinked(&restored(&f, &d)),
                        &format!("{what}: {d}"),
                    );
                }
            }
        }
        let codes: Vec<String> = outputs
            .iter()
            .map(|(t, o)| format!("{t}={}", o.status.code().unwrap_or(-1)))
            .collect();
        eprintln!("damage `{what}`: {}", codes.join(" "));
        tried += 1;
    }
    eprintln!("{tried} kinds of damage tried: none silent, nothing deleted");
}

/// Raw captures of every version directory (links not followed): what is on disk.
fn version_trees(f: &Fixture) -> BTreeMap<String, Tree> {
    let raw = CaptureOpts {
        owners: true,
        dir_mtimes: false,
    };
    disk_dirs(f)
        .into_iter()
        .map(|d| {
            let t = capture(&f.job_dir().join(&d), raw);
            (d, t)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Fuzzed event lines.

/// A near-valid line: one field broken in one of many ways.
fn near_valid() -> impl Strategy<Value = String> {
    let good = |k: &str, t: &str, p: &str, to: &str| format!("{}\t{k}\t{t}\t{p}\t{to}", ops::TIME);
    prop_oneof![
        Just(good("modify", "file", "a", "").replace('\t', " ")),
        Just(format!("{}\tmodify\tfile\ta", ops::TIME)),
        Just(format!("{}\tmodify\tfile\ta\t\t", ops::TIME)),
        Just(good("modified", "file", "a", "")),
        Just(good("MODIFY", "file", "a", "")),
        Just(good("modify", "fil", "a", "")),
        Just(good("modify", "file", "/etc/passwd", "")),
        Just(good("modify", "file", "../outside", "")),
        Just(good("modify", "file", "a/../../b", "")),
        Just(good("modify", "file", "a//b", "")),
        Just(good("modify", "file", "./a", "")),
        Just(good("modify", "file", "a/", "")),
        Just(good("modify", "file", "", "")),
        Just(good("modify", "file", "bad\\qescape", "")),
        Just(good("modify", "file", "trailing\\", "")),
        Just(good("modify", "file", "hex\\xZZ", "")),
        Just(good("modify", "file", "a", "b")),
        Just(good("move", "file", "a", "")),
        Just(good("move", "file", "a", "../b")),
        Just(good("flush", "", "a", "")),
        Just(good("overflow", "dir", "", "")),
        Just(good("flush", "", "", "b")),
        Just(String::new()),
        Just("time\tevent\ttype\tpath\tto_path".to_owned()),
        Just("\t\t\t\t".to_owned()),
        "[0-9T:.Z-]{0,30}".prop_map(|t| format!("{t}\tmodify\tfile\ta\t")),
        Just("2026-13-45T99:99:99.999Z\tmodify\tfile\ta\t".to_owned()),
        Just("2026-11-24 21:49:00\tmodify\tfile\ta\t".to_owned()),
    ]
}

/// Random bytes without a newline (one line).
fn random_line() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..120)
}

#[test]
fn fuzzed_event_lines_fail_with_the_line_number_and_make_no_version() {
    let f = FastFixture::new(64);
    fs::write(f.src.join("a"), b"a").expect("write");
    f.first();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let input = (
        0usize..4,
        prop_oneof![near_valid().prop_map(String::into_bytes), random_line(),],
        any::<bool>(),
    );
    let tried = std::cell::Cell::new(0u32);
    let rejected = std::cell::Cell::new(0u32);
    runner
        .run(&input, |(valid_before, bad, lf_at_end)| {
            tried.set(tried.get() + 1);
            // Lines that happen to be valid are not what this test is about.
            if let Ok(text) = std::str::from_utf8(&bad)
                && EventLine::parse(text, 1).is_ok()
            {
                return Ok(());
            }
            // No bytes and no newline: not a line at all.
            if bad.is_empty() && !lf_at_end {
                return Ok(());
            }
            let mut text = Vec::from(format!("{}\n", reverb_common::events::HEADER));
            for _ in 0..valid_before {
                text.extend(event("modify", "file", Path::new("a"), None).into_bytes());
                text.push(b'\n');
            }
            text.extend(&bad);
            if lf_at_end {
                text.push(b'\n');
            }
            let lineno = valid_before + 2;
            let before = index_dirs(&f);
            let o = snap_stdin(&f, &text, &[]).output();
            let e = stderr(&o);
            prop_assert!(!e.contains("panicked"), "panic: {e}");
            prop_assert_eq!(o.status.code(), Some(1), "stderr: {}", e);
            prop_assert!(
                e.contains(&format!("line {lineno}")),
                "the error must name line {lineno}: {e}"
            );
            prop_assert!(stdout(&o).trim().is_empty(), "a version was printed");
            prop_assert_eq!(&index_dirs(&f), &before, "a version was made");
            prop_assert!(no_partial(&f));
            rejected.set(rejected.get() + 1);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // A bad header is line 1.
    let o = snap_stdin(&f, b"time\tevent\n", &[]).assert_exit(1);
    assert!(stderr(&o).contains("line 1"), "{}", stderr(&o));
    f.check_clean();
    eprintln!(
        "fuzzed event lines: {} inputs, {} rejected with their line number",
        tried.get(),
        rejected.get()
    );
}

/// Events that name a path through a source link (`link/secret`, where `link` points out
/// of the tree), or a directory that became a link to elsewhere before the copy: the link
/// is versioned as a link and nothing outside the source is ever copied into the vault.
#[test]
fn events_through_source_links_never_follow_them() {
    let f = FastFixture::new(64);
    let outside = f._tmp.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    fs::write(outside.join("secret"), b"never in the vault").expect("write");
    symlink(&outside, f.src.join("link")).expect("symlink");
    fs::create_dir(f.src.join("dir")).expect("mkdir");
    fs::write(f.src.join("dir/secret"), b"inside").expect("write");
    symlink("dir", f.src.join("inner-link")).expect("symlink");
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    // `dir` becomes a link to the outside between the events and the copy.
    fs::remove_dir_all(f.src.join("dir")).expect("rm");
    symlink(&outside, f.src.join("dir")).expect("symlink");
    let lines = [
        event("modify", "file", Path::new("link/secret"), None),
        event("modify", "file", Path::new("inner-link/secret"), None),
        event("create", "dir", Path::new("dir"), None),
        event("create", "file", Path::new("dir/secret"), None),
        event("attrib", "dir", Path::new("link"), None),
    ];
    let v = version(snap_changes(&f, &lines, &[]), "events through links");
    if !v.is_empty() {
        recorded.insert(v, capture(&f.src, opts()));
    }
    verify_all(&f, &recorded, "events through links");
    let found = Command::new("grep")
        .args(["-r", "-l", "never in the vault"])
        .arg(f.job_dir())
        .output()
        .expect("grep");
    assert!(
        stdout(&found).trim().is_empty(),
        "data from outside the source is in the vault: {}",
        stdout(&found)
    );
}
