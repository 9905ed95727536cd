//! `reverb-watch` end to end: the real binary on real temp dirs (docs/format.md#text-files, docs/cli.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::watch_support::{Watch, make_tree, under};
use nix::sys::signal::Signal;
use reverb_common::events::{EntryType, EventKind as K, EventLine};
use reverb_tests::{cmd, sh};

/// A temp dir with `watched/` (the SRC) and `outside/` on the same filesystem.
struct Dirs {
    _tmp: tempfile::TempDir,
    watched: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let watched = tmp.path().join("watched");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&watched).expect("mkdir");
    std::fs::create_dir(&outside).expect("mkdir");
    Dirs {
        _tmp: tmp,
        watched,
        outside,
    }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

fn content(e: &EventLine) -> bool {
    matches!(e.kind, K::Create | K::Modify)
}

#[test]
fn header_first_and_sigterm_exits_zero() {
    let d = dirs();
    let mut w = Watch::start(&d.watched, &[]);
    let st = w.terminate();
    assert_eq!(st.code(), Some(0), "{}", w.stderr_text());
    assert!(w.seen.is_empty(), "no events, no flush:\n{}", w.dump());
}

#[test]
fn sigint_exits_zero() {
    let d = dirs();
    let mut w = Watch::start(&d.watched, &[]);
    w.signal(Signal::SIGINT);
    assert_eq!(w.wait_exit().code(), Some(0));
}

#[test]
fn nested_mkdir_p_then_touch_reports_the_file() {
    let d = dirs();
    let mut w = Watch::start(&d.watched, &[]);
    sh(&format!(
        "cd {} && mkdir -p a/b/c && touch a/b/c/f",
        q(&d.watched)
    ));
    let e = w.wait_event(K::Create, "a/b/c/f");
    assert_eq!(e.etype, Some(EntryType::File));
    for p in ["a", "a/b", "a/b/c"] {
        assert!(
            w.seen.iter().any(|e| e.kind == K::Create
                && e.path == Path::new(p)
                && e.etype == Some(EntryType::Dir)),
            "create dir {p}:\n{}",
            w.dump()
        );
    }
}

#[test]
fn cp_r_reports_every_file() {
    let d = dirs();
    let tree = make_tree(&d.outside.join("src"), 8, 25);
    let mut w = Watch::start(&d.watched, &[]);
    sh(&format!(
        "cp -r {} {}",
        q(&d.outside.join("src")),
        q(&d.watched.join("copy"))
    ));
    let want = under("copy", &tree);
    assert!(w.wait_all(&want, content, |_| false));
    // Few duplicates: at most one create per path (plus the modify of a file still
    // being written when its create was seen).
    let creates = w.count(K::Create);
    assert!(
        creates <= want.len() + 1 + 8,
        "{creates} creates for {} paths",
        want.len() + 1
    );
}

#[test]
fn mv_of_a_directory_within_the_tree_is_one_move() {
    let d = dirs();
    std::fs::create_dir_all(d.watched.join("old/sub")).expect("mkdir");
    let mut w = Watch::start(&d.watched, &[]);
    std::fs::rename(d.watched.join("old"), d.watched.join("new")).expect("mv");
    let e = w.wait_event(K::Move, "old");
    assert_eq!(e.to_path.as_deref(), Some(Path::new("new")));
    assert_eq!(e.etype, Some(EntryType::Dir));
    std::fs::write(d.watched.join("new/sub/f"), b"x").expect("write");
    w.wait_event(K::Create, "new/sub/f");
    assert_eq!(w.count(K::Move), 1, "{}", w.dump());
    assert_eq!(w.count(K::Delete), 0, "{}", w.dump());
    assert!(
        !w.seen
            .iter()
            .any(|e| e.kind != K::Move && e.path.starts_with("old")),
        "nothing under the old name:\n{}",
        w.dump()
    );
}

#[test]
fn mv_of_a_file_is_a_move() {
    let d = dirs();
    std::fs::write(d.watched.join("a"), b"x").expect("write");
    let mut w = Watch::start(&d.watched, &[]);
    std::fs::rename(d.watched.join("a"), d.watched.join("b")).expect("mv");
    let e = w.wait_event(K::Move, "a");
    assert_eq!(e.to_path.as_deref(), Some(Path::new("b")));
    assert_eq!(e.etype, Some(EntryType::File));
}

#[test]
fn mv_into_the_tree_creates_the_whole_subtree() {
    let d = dirs();
    let tree = make_tree(&d.outside.join("incoming"), 4, 10);
    let mut w = Watch::start(&d.watched, &[]);
    std::fs::rename(d.outside.join("incoming"), d.watched.join("in")).expect("mv in");
    w.wait_event(K::Create, "in");
    assert!(w.wait_all(&under("in", &tree), |e| e.kind == K::Create, |_| false));
    // The moved-in directories are watched.
    std::fs::write(d.watched.join("in/d3/inner/late"), b"x").expect("write");
    w.wait_event(K::Create, "in/d3/inner/late");
}

#[test]
fn mv_out_of_the_tree_is_a_delete_and_unwatches() {
    let d = dirs();
    std::fs::create_dir_all(d.watched.join("dir/sub")).expect("mkdir");
    std::fs::write(d.watched.join("file"), b"x").expect("write");
    let mut w = Watch::start(&d.watched, &[]);
    std::fs::rename(d.watched.join("dir"), d.outside.join("dir")).expect("mv out");
    std::fs::rename(d.watched.join("file"), d.outside.join("file")).expect("mv out");
    let e = w.wait_event(K::Delete, "dir");
    assert_eq!(e.etype, Some(EntryType::Dir));
    w.wait_event(K::Delete, "file");
    // Changes in the moved-out directory are no longer reported.
    std::fs::write(d.outside.join("dir/sub/ghost"), b"x").expect("write");
    std::fs::write(d.watched.join("marker"), b"x").expect("write");
    w.wait_event(K::Create, "marker");
    assert!(
        !w.seen.iter().any(|e| e.path.ends_with("ghost")),
        "{}",
        w.dump()
    );
}

#[test]
fn mv_out_then_recreate_keeps_the_order() {
    let d = dirs();
    std::fs::create_dir(d.watched.join("x")).expect("mkdir");
    let mut w = Watch::start(&d.watched, &[]);
    std::fs::rename(d.watched.join("x"), d.outside.join("x")).expect("mv out");
    std::fs::create_dir(d.watched.join("x")).expect("mkdir again");
    w.wait_event(K::Create, "x");
    let kinds: Vec<K> = w
        .seen
        .iter()
        .filter(|e| e.path == Path::new("x"))
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [K::Delete, K::Create], "{}", w.dump());
}

#[test]
fn rm_rf_deletes_everything() {
    let d = dirs();
    let tree = make_tree(&d.watched.join("t"), 3, 5);
    let mut w = Watch::start(&d.watched, &[]);
    sh(&format!("rm -rf {}", q(&d.watched.join("t"))));
    let mut want = under("t", &tree);
    want.push(PathBuf::from("t"));
    assert!(w.wait_all(&want, |e| e.kind == K::Delete, |_| false));
}

#[test]
fn chmod_is_attrib_and_root_attrib_is_dot() {
    let d = dirs();
    std::fs::write(d.watched.join("f"), b"x").expect("write");
    std::fs::create_dir(d.watched.join("dir")).expect("mkdir");
    let mut w = Watch::start(&d.watched, &[]);
    sh(&format!("chmod 600 {}", q(&d.watched.join("f"))));
    let e = w.wait_event(K::Attrib, "f");
    assert_eq!(e.etype, Some(EntryType::File));
    sh(&format!("chmod 700 {}", q(&d.watched.join("dir"))));
    w.wait_event(K::Attrib, "dir");
    sh(&format!("chmod 751 {}", q(&d.watched)));
    let e = w.wait_event(K::Attrib, ".");
    assert_eq!(e.etype, Some(EntryType::Dir));
    // A directory's own attrib is reported once (by its parent), not twice.
    let n = w
        .seen
        .iter()
        .filter(|e| e.kind == K::Attrib && e.path == Path::new("dir"))
        .count();
    assert_eq!(n, 1, "{}", w.dump());
}

#[test]
fn a_file_held_open_and_appended_is_modified() {
    let d = dirs();
    let path = d.watched.join("log");
    std::fs::write(&path, b"start\n").expect("write");
    let mut w = Watch::start(&d.watched, &["--quiet-period", "100ms"]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(b"more\n").expect("append");
    let e = w.wait_event(K::Modify, "log");
    assert_eq!(e.etype, Some(EntryType::File));
    w.wait_for("flush", |e| e.kind == K::Flush);
    // The dedupe ends at the flush: a later append is reported again although the file
    // stays open (no close_write in between).
    f.write_all(b"again\n").expect("append");
    w.wait_event(K::Modify, "log");
    w.wait_for("flush", |e| e.kind == K::Flush);
    drop(f);
    assert_eq!(w.count(K::Modify), 2, "one modify per batch:\n{}", w.dump());
}

#[test]
fn two_thousand_files_in_one_burst_are_all_reported_or_overflow() {
    let d = dirs();
    let mut w = Watch::start(&d.watched, &[]);
    sh(&format!(
        "mkdir {0}/many && cd {0}/many && seq 1 2000 | sed 's/^/f/' | xargs touch",
        q(&d.watched)
    ));
    let want: Vec<PathBuf> = (1..=2000)
        .map(|i| PathBuf::from(format!("many/f{i}")))
        .collect();
    let complete = w.wait_all(&want, |e| e.kind == K::Create, |e| e.kind == K::Overflow);
    if !complete {
        eprintln!("overflow reported instead of 2000 creates (allowed)");
    }
}

#[test]
fn quiet_period_emits_flush_after_a_burst() {
    let d = dirs();
    let mut w = Watch::start(&d.watched, &["--quiet-period", "200ms"]);
    std::fs::write(d.watched.join("a"), b"x").expect("write");
    w.wait_event(K::Create, "a");
    w.wait_for("flush", |e| e.kind == K::Flush);
    // A second burst gets its own flush.
    std::fs::write(d.watched.join("b"), b"x").expect("write");
    w.wait_event(K::Create, "b");
    w.wait_for("second flush", |e| e.kind == K::Flush);
    assert_eq!(w.terminate().code(), Some(0));
    assert_eq!(
        w.count(K::Flush),
        2,
        "no flush without pending events:\n{}",
        w.dump()
    );
}

#[test]
fn max_delay_flushes_under_constant_change() {
    let d = dirs();
    let path = d.watched.join("busy");
    std::fs::write(&path, b"").expect("write");
    let mut w = Watch::start(
        &d.watched,
        &["--quiet-period", "1h", "--max-delay", "500ms"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let path = path.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            while !stop.load(Ordering::SeqCst) {
                f.write_all(b"tick\n").expect("append");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    w.wait_event(K::Modify, "busy");
    w.wait_for("a flush under constant change", |e| e.kind == K::Flush);
    // The file kept open is reported again in the next batch, which is flushed too.
    w.wait_event(K::Modify, "busy");
    w.wait_for("a second flush", |e| e.kind == K::Flush);
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
}

#[test]
fn excludes_produce_no_events() {
    let d = dirs();
    std::fs::create_dir(d.watched.join("build")).expect("mkdir");
    let mut w = Watch::start(&d.watched, &["--exclude", "*.swp", "--exclude", "build/"]);
    std::fs::write(d.watched.join("a.swp"), b"x").expect("write");
    std::fs::write(d.watched.join("build/out.o"), b"x").expect("write");
    std::fs::create_dir_all(d.watched.join("src/build/deep")).expect("mkdir");
    std::fs::write(d.watched.join("src/build/deep/x"), b"x").expect("write");
    std::fs::write(d.watched.join("src/x.swp"), b"x").expect("write");
    std::fs::write(d.watched.join("src/keep.rs"), b"x").expect("write");
    w.wait_event(K::Create, "src/keep.rs");
    std::fs::write(d.watched.join("zz-marker"), b"x").expect("write");
    w.wait_event(K::Create, "zz-marker");
    let bad: Vec<String> = w
        .seen
        .iter()
        .filter(|e| {
            let s = e.path.to_string_lossy();
            s.ends_with(".swp") || s.starts_with("build") || s.contains("/build")
        })
        .map(EventLine::render)
        .collect();
    assert!(bad.is_empty(), "excluded paths reported: {bad:#?}");
}

#[test]
fn sigterm_flushes_pending_events() {
    let d = dirs();
    let mut w = Watch::start(&d.watched, &["--quiet-period", "1h"]);
    std::fs::write(d.watched.join("a"), b"x").expect("write");
    w.wait_event(K::Create, "a");
    assert_eq!(w.terminate().code(), Some(0));
    assert_eq!(
        w.seen.last().map(|e| e.kind),
        Some(K::Flush),
        "last line is a flush:\n{}",
        w.dump()
    );
}

#[test]
fn odd_names_survive_escaping() {
    let d = dirs();
    let mut w = Watch::start(&d.watched, &[]);
    let name = "tab\there\nnewline\\back";
    std::fs::write(d.watched.join(name), b"x").expect("write");
    w.wait_event(K::Create, name);
    let raw = std::ffi::OsStr::new("bad\u{1}");
    std::fs::write(d.watched.join(raw), b"x").expect("write");
    w.wait_event(K::Create, "bad\u{1}");
    #[allow(clippy::unwrap_used)]
    let nonutf8 = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9");
    std::fs::write(d.watched.join(nonutf8), b"x").expect("write");
    w.wait_for("the non-UTF-8 name", |e| e.path.as_os_str() == nonutf8);
}

#[test]
fn a_nonexistent_src_is_an_error_naming_it() {
    let d = dirs();
    let missing = d.watched.join("no-such-dir");
    let o = cmd("reverb-watch").arg(&missing).assert_exit(1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no-such-dir"), "{err}");
    assert!(o.stdout.is_empty(), "no header on failure");
    let file = d.watched.join("plain");
    std::fs::write(&file, b"").expect("write");
    let o = cmd("reverb-watch").arg(&file).assert_exit(1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("Not a directory"));
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let d = dirs();
    for (args, flag) in [
        (vec!["--quiet-period", "soon"], "--quiet-period"),
        (vec!["--max-delay", "5 parsecs"], "--max-delay"),
        (vec!["--exclude", "a["], "--exclude"),
    ] {
        let o = cmd("reverb-watch")
            .args(&args)
            .arg(&d.watched)
            .assert_exit(2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn a_closed_stdout_exits_zero() {
    let d = dirs();
    let mut child = cmd("reverb-watch")
        .arg(&d.watched)
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut header = String::new();
    std::io::BufRead::read_line(&mut out, &mut header).expect("header");
    drop(out);
    // Keep changing until the writer notices the closed pipe.
    let deadline = std::time::Instant::now() + crate::watch_support::TIMEOUT;
    let status = loop {
        std::fs::write(d.watched.join("f"), b"x").expect("write");
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_root_deleted_is_a_clear_failure() {
    let d = dirs();
    let mut w = Watch::start(&d.watched, &[]);
    std::fs::remove_dir(&d.watched).expect("rmdir");
    let st = w.wait_exit();
    assert_eq!(st.code(), Some(1));
    let err = w.stderr_text();
    assert!(
        err.contains("deleted") || err.contains("went away"),
        "{err}"
    );
}

#[test]
fn the_root_unmounted_prints_unmount_and_exits_75() {
    reverb_tests::require_root!("mounts a tmpfs");
    let d = dirs();
    sh(&format!("mount -t tmpfs none {}", q(&d.watched)));
    let mut w = Watch::start(&d.watched, &[]);
    std::fs::write(d.watched.join("f"), b"x").expect("write");
    w.wait_event(K::Create, "f");
    sh(&format!("umount {}", q(&d.watched)));
    w.wait_event(K::Unmount, ".");
    let st = w.wait_exit();
    assert_eq!(st.code(), Some(75), "{}", w.stderr_text());
}

#[test]
fn a_submount_unmounted_prints_unmount_and_keeps_watching() {
    reverb_tests::require_root!("mounts a tmpfs");
    let d = dirs();
    let mnt = d.watched.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    sh(&format!("mount -t tmpfs none {}", q(&mnt)));
    std::fs::create_dir(mnt.join("sub")).expect("mkdir");
    let mut w = Watch::start(&d.watched, &[]);
    sh(&format!("umount {}", q(&mnt)));
    w.wait_event(K::Unmount, "mnt");
    // The directory under the mountpoint is watched again.
    std::fs::write(mnt.join("after"), b"x").expect("write");
    w.wait_event(K::Create, "mnt/after");
    assert_eq!(w.count(K::Unmount), 1, "{}", w.dump());
    assert_eq!(w.terminate().code(), Some(0));
}
