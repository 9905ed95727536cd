//! Index-driven rescans (docs/design.md#index-driven-rescans): a rescan takes an entry whose
//! `lstat` equals the facts the source index recorded as equal to the current version's,
//! and leaves the vault alone for it. The index may only cost time: after every kind of
//! change it could hide, the rescan's version equals a `cp -a` capture of the source (the
//! independent oracle), a second rescan makes no version, and a stale, damaged or foreign
//! index gives the same versions as none.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use reverb_tests::model::{assert_same, capture};
use reverb_tests::ops::{event, opts, snap_changes};
use reverb_tests::wait_for_clock;
use reverb_tests::{Fixture, TestCommand, have, is_root, sh};

/// The source index's base file.
fn base(f: &Fixture) -> PathBuf {
    f.job_dir().join("source-index/base")
}

/// `src/{a, b, c, d/e, d/f, g/h, l -> a}`, mtimes an hour back.
fn populate(src: &Path) {
    fs::create_dir_all(src.join("d")).expect("mkdir");
    fs::create_dir_all(src.join("g")).expect("mkdir");
    for (p, data) in [
        ("a", "alpha"),
        ("b", "bravo"),
        ("c", "charlie"),
        ("d/e", "echo"),
        ("d/f", "foxtrot"),
        ("g/h", "hotel"),
        ("x", "same size 1"),
        ("y", "same size 2"),
    ] {
        fs::write(src.join(p), data).expect("write");
        set_mtime(&src.join(p), 3600 + p.len() as u64);
    }
    std::os::unix::fs::symlink("a", src.join("l")).expect("symlink");
}

/// Sets `path`'s mtime `secs_ago` seconds into the past.
fn set_mtime(path: &Path, secs_ago: u64) {
    let then = SystemTime::now() - Duration::from_secs(secs_ago);
    fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(then)
        .expect("mtime");
}

/// A job over a populated source: its first version, the clock past the racily clean
/// window of every entry, and a rescan that writes the index.
fn indexed() -> Fixture {
    let f = Fixture::new();
    populate(&f.src);
    f.first();
    settle();
    assert_eq!(f.rescan(), "", "nothing changed");
    assert!(base(&f).is_file(), "the rescan wrote the index");
    f
}

/// Time that must pass (not an event): what was just changed leaves the racily clean
/// window, so the index written next vouches for it.
fn settle() {
    wait_for_clock(SystemTime::now() + Duration::from_millis(2200));
}

/// `cp -a` of the source, captured: the oracle.
fn oracle(f: &Fixture) -> std::collections::BTreeMap<PathBuf, reverb_tests::model::Node> {
    let copy = f._tmp.path().join(format!(
        "cp-a-{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    TestCommand::program("cp")
        .arg("-a")
        .arg(&f.src)
        .arg(&copy)
        .assert_success();
    capture(&copy, opts())
}

/// A rescan after `what`: a version that equals the `cp -a` oracle, then none.
fn rescan_and_compare(f: &Fixture, what: &str) {
    let v = f.rescan();
    assert!(!v.is_empty(), "{what}: a version");
    assert_same(&oracle(f), &capture(&f.restore("latest"), opts()), what);
    assert_eq!(f.rescan(), "", "{what}: a second rescan finds nothing");
}

#[test]
fn every_change_the_index_could_hide_is_versioned() {
    let f = indexed();
    let s = |p: &str| f.src.join(p);
    fs::set_permissions(s("a"), fs::Permissions::from_mode(0o600)).expect("chmod");
    rescan_and_compare(&f, "mode");
    if is_root() {
        nix::unistd::chown(&s("b"), Some(1234.into()), Some(1234.into())).expect("chown");
        rescan_and_compare(&f, "owner");
    }
    if have("setfattr") {
        sh(&format!("setfattr -n user.k -v v {}", s("c").display()));
        rescan_and_compare(&f, "xattr");
    }
    if have("setfacl") {
        sh(&format!("setfacl -m u:nobody:r {}", s("d/e").display()));
        rescan_and_compare(&f, "ACL");
    }
    sh(&format!("touch -h -d 2001-02-03 {}", s("d/f").display()));
    rescan_and_compare(&f, "mtime reset with touch -d");
    // Written, versioned, and rewritten to the same size with the same mtime at once: the
    // racily clean rule (its recorded BLAKE3) tells.
    fs::write(s("g/h"), b"HOTEL").expect("write");
    rescan_and_compare(&f, "rewritten");
    let mtime = fs::metadata(s("g/h"))
        .expect("stat")
        .modified()
        .expect("mtime");
    fs::write(s("g/h"), b"hotel").expect("rewrite");
    fs::File::options()
        .write(true)
        .open(s("g/h"))
        .expect("open")
        .set_modified(mtime)
        .expect("mtime back");
    rescan_and_compare(&f, "same-size rewrite within the same second");
    settle();
    assert_eq!(
        f.rescan(),
        "",
        "settled: the index vouches for everything again"
    );
    // Two files swapped by rename: each name now another inode.
    fs::rename(s("x"), s("x.tmp")).expect("mv");
    fs::rename(s("y"), s("x")).expect("mv");
    fs::rename(s("x.tmp"), s("y")).expect("mv");
    rescan_and_compare(&f, "inodes replaced by rename");
    fs::hard_link(s("a"), s("a2")).expect("ln");
    rescan_and_compare(&f, "hard link added");
    settle();
    f.rescan();
    // Type changes: file -> directory, directory -> symlink, symlink -> file.
    fs::remove_file(s("b")).expect("rm");
    fs::create_dir(s("b")).expect("mkdir");
    fs::write(s("b/inner"), b"in").expect("write");
    rescan_and_compare(&f, "file to directory");
    fs::remove_dir_all(s("g")).expect("rm -r");
    std::os::unix::fs::symlink("d", s("g")).expect("symlink");
    rescan_and_compare(&f, "directory to symlink");
    fs::remove_file(s("l")).expect("rm");
    fs::write(s("l"), b"a file now").expect("write");
    rescan_and_compare(&f, "symlink to file");
    f.check_clean();
}

/// What a test does to the index before a rescan.
#[derive(Debug, Clone, Copy)]
enum Spoil {
    None,
    FlipByte(usize),
    Truncate(usize),
    Foreign,
    Stale,
    DropDeltas,
}

#[test]
fn a_stale_damaged_or_foreign_index_gives_the_versions_no_index_gives() {
    // One job keeps its index and has it spoiled before each rescan; the other has none.
    let with = indexed();
    let without = indexed();
    let foreign = indexed();
    fs::write(foreign.src.join("a"), b"foreign").expect("write");
    foreign.rescan();
    let stale = fs::read(base(&with)).expect("the first base");
    let spoils = [
        Spoil::None,
        Spoil::FlipByte(20),
        Spoil::FlipByte(200),
        Spoil::Truncate(150),
        Spoil::Foreign,
        Spoil::Stale,
        Spoil::DropDeltas,
        Spoil::FlipByte(90),
    ];
    let changes: [&dyn Fn(&Path); 8] = [
        &|s| fs::write(s.join("a"), b"ALPHA").expect("write"),
        &|s| fs::set_permissions(s.join("d/e"), fs::Permissions::from_mode(0o640)).expect("chmod"),
        &|s| fs::remove_file(s.join("c")).expect("rm"),
        &|s| fs::write(s.join("d/new"), b"new").expect("write"),
        &|s| sh(&format!("touch -h -d 2002-03-04 {}", s.join("b").display())),
        &|s| fs::rename(s.join("d/f"), s.join("g/f")).expect("mv"),
        &|s| fs::hard_link(s.join("g/h"), s.join("d/h")).expect("ln"),
        &|s| fs::remove_dir_all(s.join("d")).expect("rm -r"),
    ];
    for (i, (spoil, change)) in spoils.iter().zip(changes).enumerate() {
        for f in [&with, &without] {
            change(&f.src);
            // Some changes settle first: the index then vouches for their entries.
            if i % 2 == 0 {
                settle();
            }
        }
        // An event-driven version of `a` in between, so deltas exist to spoil.
        for f in [&with, &without] {
            fs::write(f.src.join("z"), format!("z{i}")).expect("write");
            let lines = [event("create", "file", Path::new("z"), None)];
            snap_changes(f, &lines, &[]).assert_success();
        }
        spoil_index(&with, *spoil, &stale, &foreign);
        let _ = fs::remove_dir_all(without.job_dir().join("source-index"));
        let (a, b) = (with.rescan(), without.rescan());
        assert_eq!(
            a.is_empty(),
            b.is_empty(),
            "{spoil:?}: a version either way"
        );
        // The two sources were changed at different instants (their times differ): each
        // version is compared with a `cp -a` of its own source.
        let what = format!("step {i} ({spoil:?})");
        for f in [&with, &without] {
            assert_same(&oracle(f), &capture(&f.restore("latest"), opts()), &what);
        }
    }
    with.check_clean();
}

fn spoil_index(f: &Fixture, spoil: Spoil, stale: &[u8], foreign: &Fixture) {
    let dir = f.job_dir().join("source-index");
    let base = dir.join("base");
    match spoil {
        Spoil::None => {}
        Spoil::FlipByte(at) => {
            let mut b = fs::read(&base).expect("read");
            let at = at % b.len();
            b[at] ^= 0x10;
            fs::write(&base, b).expect("write");
        }
        Spoil::Truncate(len) => {
            let b = fs::read(&base).expect("read");
            fs::write(&base, &b[..len.min(b.len())]).expect("write");
        }
        Spoil::Foreign => {
            fs::remove_dir_all(&dir).expect("rm");
            TestCommand::program("cp")
                .arg("-a")
                .arg(foreign.job_dir().join("source-index"))
                .arg(&dir)
                .assert_success();
        }
        Spoil::Stale => fs::write(&base, stale).expect("write"),
        Spoil::DropDeltas => {
            for e in fs::read_dir(&dir).expect("ls").flatten() {
                if e.file_name().to_string_lossy().ends_with(".delta") {
                    fs::remove_file(e.path()).expect("rm");
                }
            }
        }
    }
}

#[test]
fn a_missed_event_and_a_retirement_are_found_by_the_next_rescan() {
    let f = indexed();
    // Two files change, the events name one: the version holds only that one.
    fs::write(f.src.join("a"), b"ALPHA").expect("write");
    fs::write(f.src.join("d/e"), b"ECHO").expect("write");
    let lines = [event("modify", "file", Path::new("a"), None)];
    snap_changes(&f, &lines, &[]).assert_success();
    rescan_and_compare(&f, "the missed change");
    // More event versions, then every version but the newest retired: the base's version
    // is gone, the chain of deltas still describes the newest.
    settle();
    f.rescan();
    for i in 0..3 {
        fs::write(f.src.join("b"), format!("b{i}")).expect("write");
        let lines = [event("modify", "file", Path::new("b"), None)];
        snap_changes(&f, &lines, &[]).assert_success();
    }
    fs::write(f.src.join("c"), b"missed").expect("write");
    f.tool("reverb-retire")
        .args(["--keep", "1"])
        .assert_success();
    rescan_and_compare(&f, "after a retirement");
    f.check_clean();
}
