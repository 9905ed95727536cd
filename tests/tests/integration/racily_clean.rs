//! Files whose stat cannot prove them unchanged (docs/design.md#building-a-version): a file
//! written within a timestamp tick of the version that copied it (racily clean), one a
//! content event names, and one the source index knew with another inode or ctime (a
//! rename over it, a write with its mtime put back) are compared by content, with their
//! recorded BLAKE3 or, with checksums off, with the vault's copy. Opening and closing a
//! file (a `modify` event, as reverb-watch reports inotify's `close_write`), or saving the
//! same bytes, makes no version; other bytes of the same size and mtime do.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use reverb_tests::ops::{event, index_dirs, snap_changes};
use reverb_tests::{Fixture, cmd};

/// Writes `data` over `path` and puts its mtime back (an editor saving an unchanged
/// buffer within the same clock tick, or `open(O_WRONLY)` then `close`).
fn rewrite_keeping_mtime(path: &Path, data: &[u8]) {
    let mtime = fs::metadata(path).expect("stat").modified().expect("mtime");
    fs::write(path, data).expect("rewrite");
    fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(mtime)
        .expect("mtime back");
}

#[test]
fn opening_and_closing_a_file_just_versioned_makes_no_version() {
    let f = Fixture::new();
    let doc = f.src.join("doc.txt");
    fs::write(&doc, b"draft one").expect("write");
    let v1 = f.first();
    // Within the racily clean window of V1: the same bytes, the same mtime.
    fs::File::options()
        .write(true)
        .open(&doc)
        .expect("open for writing");
    rewrite_keeping_mtime(&doc, b"draft one");
    // reverb-watch reports a close after writing as `modify`.
    let lines = [event("modify", "file", Path::new("doc.txt"), None)];
    let out = snap_changes(&f, &lines, &[]).stdout();
    assert_eq!(
        out.trim(),
        "",
        "a modify event on an unchanged file makes no version"
    );
    assert_eq!(f.rescan(), "", "a rescan agrees");
    assert_eq!(index_dirs(&f), [v1]);
    // Other bytes, same size and mtime: only the content tells, and it does.
    rewrite_keeping_mtime(&doc, b"draft two");
    let v2 = snap_changes(&f, &lines, &[]).stdout().trim().to_owned();
    assert!(!v2.is_empty(), "the rewrite is a version");
    assert_eq!(
        fs::read(f.job_dir().join(&v2).join("doc.txt")).expect("V2"),
        b"draft two"
    );
    f.check_clean();
}

/// 2024-01-01: an mtime far older than any version of these tests (not racily clean).
fn long_ago() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200)
}

/// Writes `data` over `path` in place (`dd conv=notrunc`) and sets its mtime to `mtime`
/// (`touch -d`): what an encrypted container's tool does, keeping the mtime it had.
fn write_with_mtime(path: &Path, data: &[u8], mtime: SystemTime) {
    use std::io::Write;
    let mut file = fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open");
    file.write_all(data).expect("write");
    file.set_modified(mtime).expect("mtime");
}

/// The content of `rel` in the version `dir` of `f`'s job.
fn read_in(f: &Fixture, dir: &str, rel: &str) -> Vec<u8> {
    fs::read(f.job_dir().join(dir).join(rel)).expect("read the version's copy")
}

/// Same size, same mtime, other bytes, long after the version: by an event, and by a
/// rescan that has the source index. The old code kept the old data, silently, for good.
fn rewritten_with_mtime_put_back(f: &Fixture) {
    for name in ["by-event.img", "by-rescan.img"] {
        write_with_mtime(&f.src.join(name), b"container one", long_ago());
    }
    assert_ne!(f.first(), "");
    // A rescan that finds nothing writes the source index the next one compares with.
    assert_eq!(f.rescan(), "");
    write_with_mtime(&f.src.join("by-event.img"), b"container two", long_ago());
    let lines = [event("modify", "file", Path::new("by-event.img"), None)];
    let v2 = snap_changes(f, &lines, &[]).stdout().trim().to_owned();
    assert_ne!(v2, "", "the rewrite the event names is a version");
    assert_eq!(read_in(f, &v2, "by-event.img"), b"container two");
    assert_eq!(read_in(f, &v2, "by-rescan.img"), b"container one");
    write_with_mtime(&f.src.join("by-rescan.img"), b"container two", long_ago());
    let v3 = f.rescan();
    assert_ne!(v3, "", "the rescan sees the rewrite by its ctime");
    assert_eq!(read_in(f, &v3, "by-rescan.img"), b"container two");
    // Opening and closing it again, long after: the content is compared, and is the same.
    let lines = [event("modify", "file", Path::new("by-event.img"), None)];
    fs::File::options()
        .write(true)
        .open(f.src.join("by-event.img"))
        .expect("open for writing");
    assert_eq!(snap_changes(f, &lines, &[]).stdout().trim(), "");
    assert_eq!(f.rescan(), "", "nothing else changed");
    f.check_clean();
}

#[test]
fn a_file_rewritten_long_after_its_version_with_its_mtime_put_back_is_versioned() {
    rewritten_with_mtime_put_back(&Fixture::new());
}

#[test]
fn with_checksums_off_a_rewrite_with_its_mtime_put_back_is_found_against_the_copy() {
    let f = Fixture::new();
    let cfg = f._tmp.path().join("config.toml");
    fs::write(
        &cfg,
        format!(
            "[jobs.\"{}\"]\nsource = \"{}\"\nvault = \"{}\"\nchecksums = false\n",
            f.job,
            f.src.display(),
            f.vault.display()
        ),
    )
    .expect("config");
    // The job is made with checksums off; later builds take that from job.toml.
    fs::write(f.src.join("seed"), b"seed").expect("write");
    cmd("reverb-snap")
        .arg("--config")
        .arg(&cfg)
        .args(["--job", &f.job, "--init"])
        .assert_success();
    rewritten_with_mtime_put_back(&f);
    assert!(
        !f.job_dir().join("checksums").exists(),
        "checksums were on: this test compares nothing with the copy"
    );
}

/// `mv a b` where `a` and `b` had the same size and mtime (two files written in the same
/// clock tick, a swap through a third name): by events and by a rescan.
#[test]
fn a_file_renamed_over_one_of_the_same_size_and_mtime_is_versioned() {
    let f = Fixture::new();
    for (name, data) in [
        ("ev-a.conf", "content-A"),
        ("ev-b.conf", "content-B"),
        ("re-a.conf", "content-A"),
        ("re-b.conf", "content-B"),
    ] {
        write_with_mtime(&f.src.join(name), data.as_bytes(), long_ago());
    }
    assert_ne!(f.first(), "");
    assert_eq!(f.rescan(), "");
    fs::rename(f.src.join("ev-a.conf"), f.src.join("ev-b.conf")).expect("mv");
    let lines = [event(
        "move",
        "file",
        Path::new("ev-a.conf"),
        Some(Path::new("ev-b.conf")),
    )];
    let v2 = snap_changes(&f, &lines, &[]).stdout().trim().to_owned();
    assert_ne!(v2, "", "the move is a version");
    assert_eq!(read_in(&f, &v2, "ev-b.conf"), b"content-A");
    assert!(!f.job_dir().join(&v2).join("ev-a.conf").exists());
    fs::rename(f.src.join("re-a.conf"), f.src.join("re-b.conf")).expect("mv");
    let v3 = f.rescan();
    assert_ne!(v3, "", "the rescan sees the move by the inode");
    assert_eq!(read_in(&f, &v3, "re-b.conf"), b"content-A");
    assert!(!f.job_dir().join(&v3).join("re-a.conf").exists());
    f.check_clean();
}
