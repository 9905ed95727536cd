//! reverb-snap and reverb-restore end to end: real binaries, real trees.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use reverb_tests::model::{self, CaptureOpts, assert_same, capture, raw};
use reverb_tests::ops::opts;
use reverb_tests::{Fixture, TestCommand, cmd, have, is_root, sh, stderr, stdout};

// Independent oracle: deliberately not the library's time setting (the copy engine's, whose
// restored times these tests check).
fn set_mtime(p: &Path, secs: i64) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, 123_456_789);
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// A tree with every file type and metadata class the vault promises to keep.
fn rich_tree(src: &Path) {
    fs::create_dir_all(src.join("dir/sub/empty")).expect("mkdir");
    fs::write(src.join("dir/sub/file.txt"), b"hello\n").expect("write");
    fs::write(src.join("empty"), b"").expect("write");
    symlink("dir/sub/file.txt", src.join("rel-link")).expect("symlink");
    symlink("/etc/hostname", src.join("abs-link")).expect("symlink");
    symlink("nowhere/at/all", src.join("dangling")).expect("symlink");
    // A source link whose text looks exactly like a vault link (I4).
    symlink("../V1-20200101T000000Z/lookalike", src.join("lookalike")).expect("symlink");
    sh(&format!("mkfifo {}", src.join("fifo").display()));
    let sparse = src.join("sparse.img");
    {
        let f = fs::File::create(&sparse).expect("create");
        f.set_len(32 << 20).expect("len");
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"middle", 16 << 20).expect("write");
    }
    fs::write(src.join("hard-a"), b"shared inode").expect("write");
    fs::hard_link(src.join("hard-a"), src.join("dir/hard-b")).expect("link");
    let setuid = src.join("setuid");
    fs::write(&setuid, b"#!/bin/sh\n").expect("write");
    fs::set_permissions(&setuid, fs::Permissions::from_mode(0o4755)).expect("chmod");
    let sticky = src.join("sticky");
    fs::create_dir(&sticky).expect("mkdir");
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).expect("chmod");
    let ro = src.join("readonly-dir");
    fs::create_dir(&ro).expect("mkdir");
    fs::write(ro.join("inside"), b"x").expect("write");
    // Odd names: tab, newline, backslash, non-UTF-8, leading dash, 255 bytes.
    let odd = src.join("odd");
    fs::create_dir(&odd).expect("mkdir");
    for name in [
        &b"tab\there"[..],
        b"new\nline",
        b"back\\slash",
        b"latin1-\xe9\xff",
        b"-leading-dash",
        b" space ",
    ] {
        fs::write(odd.join(raw(name)), name).expect("write odd");
    }
    fs::write(odd.join("x".repeat(255)), b"long").expect("write long name");
    // xattrs and ACLs: CI installs attr and acl; elsewhere say what is not covered.
    if have("setfattr") && have("setfacl") {
        sh(&format!(
            "setfattr -n user.note -v kept {}",
            src.join("empty").display()
        ));
        sh(&format!(
            "setfacl -m u:12345:r {}",
            src.join("dir/sub/file.txt").display()
        ));
        sh(&format!(
            "setfacl -d -m u:12345:rx {}",
            src.join("dir").display()
        ));
    } else {
        reverb_tests::skip("setfattr/setfacl not installed: xattrs and ACLs in the round trip");
    }
    if is_root() {
        sh(&format!("mknod {} c 1 3", src.join("null-dev").display()));
        sh(&format!(
            "chown 1234:5678 {}",
            src.join("dir/sub/file.txt").display()
        ));
        sh(&format!(
            "chown -h 4321:8765 {}",
            src.join("rel-link").display()
        ));
    }
    set_mtime(&src.join("rel-link"), 1_000_000_000);
    set_mtime(&src.join("dir/sub/empty"), 1_100_000_000);
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).expect("chmod");
}

#[test]
fn first_version_restores_every_file_type_exactly() {
    let f = Fixture::new();
    rich_tree(&f.src);
    let before = capture(&f.src, opts());
    let v1 = f.first();
    assert!(v1.starts_with("V1-"), "printed {v1:?}");
    let job = f.job_dir();
    for name in ["job.toml", "index.tsv", "journal.tsv", "lock", "current"] {
        assert!(job.join(name).symlink_metadata().is_ok(), "{name} missing");
    }
    assert_eq!(
        fs::read_link(job.join("current")).expect("current"),
        Path::new(&v1)
    );
    let restored = f.restore("latest");
    assert_same(&before, &capture(&restored, opts()), "restore of V1");
    // Holes kept in the vault and in the restore.
    for p in [
        job.join(&v1).join("sparse.img"),
        restored.join("sparse.img"),
    ] {
        let m = fs::metadata(&p).expect("meta");
        assert!(
            m.blocks() * 512 < 1 << 20,
            "{} lost its holes ({} blocks)",
            p.display(),
            m.blocks()
        );
    }
    // Browsable without the tool: the version directory itself is the tree.
    assert_eq!(
        fs::read(job.join(&v1).join("dir/sub/file.txt")).expect("read"),
        b"hello\n"
    );
    f.check_clean();
}

#[test]
fn a_sequence_of_edits_restores_version_by_version() {
    let f = Fixture::new();
    rich_tree(&f.src);
    let mut history = vec![(f.first(), capture(&f.src, opts()))];
    type Edit = fn(&Path);
    let edits: Vec<Edit> = vec![
        |s| fs::write(s.join("dir/sub/file.txt"), b"changed\n").expect("write"),
        |s| fs::set_permissions(s.join("empty"), fs::Permissions::from_mode(0o600)).expect("chmod"),
        |s| {
            fs::create_dir_all(s.join("new/deep/er")).expect("mkdir");
            fs::write(s.join("new/deep/er/f"), b"new").expect("write");
        },
        |s| fs::remove_file(s.join("rel-link")).expect("rm"),
        |s| {
            fs::remove_file(s.join("empty")).expect("rm");
            fs::create_dir(s.join("empty")).expect("file becomes dir");
        },
        |s| fs::rename(s.join("dir"), s.join("renamed")).expect("mv"),
        |s| {
            fs::remove_file(s.join("renamed/sub/file.txt")).expect("rm");
            symlink("target", s.join("renamed/sub/file.txt")).expect("file becomes link");
        },
        |s| fs::write(s.join("hard-a"), b"both names change").expect("write"),
    ];
    for (i, edit) in edits.iter().enumerate() {
        edit(&f.src);
        let v = f.rescan();
        assert!(!v.is_empty(), "edit {i} made no version");
        history.push((v, capture(&f.src, opts())));
    }
    assert_eq!(f.rescan(), "", "no change must make no version");
    // Hard links are kept (docs/format.md#hard-links): a change through one name is in
    // every name, and a version holds the names of one source inode as one inode.
    for (v, expected) in &history {
        let got = capture(&f.restore(v), opts());
        assert_same(expected, &got, &format!("restore of {v}"));
        // cp -rL of the version directory gives the same contents (browsability).
        let copy = f._tmp.path().join(format!("cp-{v}"));
        // (cp complains about the dangling source links, which is right; regular files must
        // all arrive.)
        let _ = std::process::Command::new("cp")
            .arg("-rL")
            .arg(f.job_dir().join(v))
            .arg(&copy)
            .output();
        let plain = CaptureOpts {
            owners: false,
            dir_mtimes: false,
        };
        let got = capture(&copy, plain);
        for (p, node) in expected {
            if node.kind == 'f' {
                assert_eq!(
                    got.get(p).map(|n| n.content),
                    Some(node.content),
                    "cp -rL {v}: {p:?}"
                );
            }
        }
    }
    f.check_clean();
}

#[test]
fn one_change_deep_in_a_big_tree_costs_a_handful_of_entries() {
    let f = Fixture::new();
    for d in 0..50 {
        let dir = f.src.join(format!("d{d}/e/f"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..40 {
            fs::write(dir.join(format!("file{i}")), format!("{d}-{i}")).expect("write");
        }
    }
    f.first();
    fs::write(f.src.join("d7/e/f/file3"), b"changed").expect("write");
    let v2 = f.rescan();
    let (real, links) = model::real_entries(&f.job_dir().join(&v2));
    assert!(
        real <= 4,
        "V2 holds {real} real entries (d7, d7/e, d7/e/f, the file expected)"
    );
    assert!(
        links < 100,
        "V2 holds {links} links; unchanged folders must be one link each"
    );
    assert_same(
        &capture(&f.src, opts()),
        &capture(&f.restore(&v2), opts()),
        "restore of V2",
    );
}

#[test]
fn deep_trees_never_need_more_links_than_linux_follows() {
    let f = Fixture::new();
    let mut deep = f.src.clone();
    for i in 0..45 {
        deep.push(format!("l{i}"));
        fs::create_dir(&deep).expect("mkdir");
        fs::write(deep.join("f"), format!("{i}")).expect("write");
    }
    f.first();
    // Change one file per level, one version each: chains of links build up across versions.
    let mut p = f.src.clone();
    for i in 0..45 {
        p.push(format!("l{i}"));
        if i % 3 == 0 {
            fs::write(p.join("f"), format!("v{i}")).expect("write");
            f.rescan();
        }
    }
    // Reading the deepest file through `current` must not hit ELOOP.
    let mut through = f.job_dir().join("current");
    for i in 0..45 {
        through.push(format!("l{i}"));
    }
    let got = fs::read(through.join("f")).expect("deepest file readable through the links");
    assert_eq!(got, b"44");
    assert_same(
        &capture(&f.src, opts()),
        &capture(&f.restore("latest"), opts()),
        "deep restore",
    );
}

#[test]
fn attribute_only_change_reuses_the_vault_data() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), vec![7u8; 100_000]).expect("write");
    fs::write(f.src.join("b"), b"b").expect("write");
    f.first();
    fs::set_permissions(f.src.join("a"), fs::Permissions::from_mode(0o640)).expect("chmod");
    let v2 = f.rescan();
    let a = f.job_dir().join(&v2).join("a");
    let m = fs::symlink_metadata(&a).expect("meta");
    assert!(m.is_file(), "an attribute change makes a real entry");
    assert_eq!(m.mode() & 0o777, 0o640);
    assert!(
        fs::symlink_metadata(f.job_dir().join(&v2).join("b"))
            .expect("b")
            .file_type()
            .is_symlink()
    );
    assert_same(
        &capture(&f.src, opts()),
        &capture(&f.restore(&v2), opts()),
        "restore of V2",
    );
}

#[test]
fn unreadable_files_are_skipped_and_journaled() {
    let f = Fixture::new();
    fs::write(f.src.join("ok"), b"ok").expect("write");
    fs::write(f.src.join("secret"), b"v1").expect("write");
    f.first();
    fs::write(f.src.join("secret"), b"v2 unreadable").expect("write");
    fs::write(f.src.join("ok"), b"ok2").expect("write");
    fs::set_permissions(f.src.join("secret"), fs::Permissions::from_mode(0o000)).expect("chmod");
    let o = if is_root() {
        // Root reads anything: run the snapshot as an unprivileged user instead.
        sh(&format!(
            "chmod -R a+rwX {} && chmod 755 {}",
            f._tmp.path().join("vault").display(),
            f._tmp.path().display()
        ));
        sh(&format!("chmod 000 {}", f.src.join("secret").display()));
        TestCommand::program("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(reverb_tests::bin("reverb-snap"))
            .arg("--vault")
            .arg(&f.vault)
            .arg("--job")
            .arg(&f.job)
            .show_dir(f.job_dir())
            .assert_success()
    } else {
        f.snap(&[]).assert_success()
    };
    let v2 = stdout(&o).trim().to_owned();
    assert!(!v2.is_empty());
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    assert!(
        journal.lines().any(|l| l.contains("\tskipped\tsecret\t")),
        "journal:\n{journal}"
    );
    let v2dir = f.job_dir().join(&v2);
    assert_eq!(fs::read(v2dir.join("ok")).expect("ok"), b"ok2");
    assert_eq!(
        fs::read(v2dir.join("secret")).expect("previous data kept"),
        b"v1"
    );
}

#[test]
fn bad_input_is_refused_and_the_vault_untouched() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    f.first();
    let listing = || {
        let mut v: Vec<_> = walkdir(&f.vault);
        v.sort();
        v
    };
    let before = listing();
    let file = f.src.join("a");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "--job".into(),
                "new1".into(),
                "--source".into(),
                "relative/path".into(),
            ],
            2,
            "relative",
        ),
        (
            vec![
                "--job".into(),
                "new2".into(),
                "--source".into(),
                "/no/such/dir".into(),
            ],
            2,
            "/no/such/dir",
        ),
        (
            vec![
                "--job".into(),
                "new3".into(),
                "--source".into(),
                file.display().to_string(),
            ],
            2,
            "not a directory",
        ),
        (
            vec![
                "--job".into(),
                "new4".into(),
                "--source".into(),
                f.vault.join("job").display().to_string(),
            ],
            2,
            "inside the vault",
        ),
        (vec!["--job".into(), "nosuchjob".into()], 2, "unknown job"),
        (
            vec![
                "--job".into(),
                "..".into(),
                "--source".into(),
                f.src.display().to_string(),
            ],
            2,
            "sanitizes",
        ),
        (
            vec![
                "--job".into(),
                "".into(),
                "--source".into(),
                f.src.display().to_string(),
            ],
            2,
            "sanitizes",
        ),
    ];
    for (args, code, needle) in cases {
        let o = cmd("reverb-snap")
            .arg("--vault")
            .arg(&f.vault)
            .args(&args)
            .show_dir(&f.vault)
            .assert_exit(code);
        assert!(
            stderr(&o).contains(needle),
            "{args:?}: stderr {:?} lacks {needle:?}",
            stderr(&o)
        );
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "one line: {}",
            stderr(&o)
        );
    }
    // A vault inside the source.
    let inner = f.src.join("vault-inside");
    let o = cmd("reverb-snap")
        .arg("--vault")
        .arg(&inner)
        .arg("--init")
        .args(["--job", "x", "--source"])
        .arg(&f.src)
        .assert_exit(2);
    assert!(stderr(&o).contains("inside the source"), "{}", stderr(&o));
    let _ = fs::remove_dir_all(&inner);
    // Not a vault: exit 75 and nothing created.
    let nowhere = f._tmp.path().join("unplugged");
    cmd("reverb-snap")
        .arg("--vault")
        .arg(&nowhere)
        .args(["--job", "x", "--source"])
        .arg(&f.src)
        .assert_exit(75);
    assert!(!nowhere.exists(), "a vault is only created with --init");
    assert_eq!(listing(), before, "the vault was modified by bad input");
}

fn walkdir(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false) {
        for e in fs::read_dir(p).expect("read_dir") {
            out.extend(walkdir(&e.expect("entry").path()));
        }
    }
    out
}

#[test]
fn a_held_lock_makes_no_wait_exit_75() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    f.first();
    let lock = fs::File::open(f.job_dir().join("lock")).expect("lock file");
    lock.lock().expect("take the job lock");
    fs::write(f.src.join("a"), b"b").expect("write");
    let o = f.snap(&["--no-wait"]).assert_exit(75);
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    drop(lock);
    assert!(!f.rescan().is_empty());
}

#[test]
fn restore_refuses_a_non_empty_destination_and_restores_sub_paths() {
    let f = Fixture::new();
    rich_tree(&f.src);
    f.first();
    let dest = f._tmp.path().join("busy");
    fs::create_dir(&dest).expect("mkdir");
    fs::write(dest.join("precious"), b"x").expect("write");
    let restore = || f.tool("reverb-restore");
    restore().arg("--to").arg(&dest).assert_exit(2);
    assert_eq!(fs::read(dest.join("precious")).expect("untouched"), b"x");
    let sub = f._tmp.path().join("sub");
    restore()
        .args(["--path", "dir/sub"])
        .arg("--to")
        .arg(&sub)
        .assert_success();
    assert_same(
        &capture(&f.src.join("dir/sub"), opts()),
        &capture(&sub, opts()),
        "sub-path restore",
    );
    restore()
        .args(["--path", "../etc"])
        .arg("--to")
        .arg(f._tmp.path().join("x"))
        .assert_exit(2);
}
