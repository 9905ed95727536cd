//! `reverb-snap --changes`: event batches in, versions out; bad batches build nothing.

use std::fs;

use reverb_common::events::HEADER;
use reverb_tests::model::{CaptureOpts, assert_same, capture, real_entries};
use reverb_tests::ops::{disk_dirs, index_dirs, no_partial, snap_stdin};
use reverb_tests::{Fixture, TestCommand, sh, stderr, stdout};

/// The header line of an event stream, with its newline.
fn header() -> String {
    format!("{HEADER}\n")
}

fn feed(f: &Fixture, input: &str, extra: &[&str]) -> TestCommand {
    snap_stdin(f, input.as_bytes(), extra)
}

fn line(event: &str, kind: &str, path: &str, to: &str) -> String {
    format!("2026-11-25T00:00:00.000Z\t{event}\t{kind}\t{path}\t{to}\n")
}

#[test]
fn a_batch_versions_exactly_its_paths() {
    let f = Fixture::new();
    fs::create_dir_all(f.src.join("a/b")).expect("mkdir");
    fs::write(f.src.join("a/b/f"), b"1").expect("write");
    fs::write(f.src.join("g"), b"g").expect("write");
    f.first();
    fs::write(f.src.join("a/b/f"), b"2").expect("write");
    fs::rename(f.src.join("g"), f.src.join("h")).expect("mv");
    let o = feed(
        &f,
        &(header() + &line("modify", "file", "a/b/f", "") + &line("move", "file", "g", "h")),
        &[],
    )
    .assert_success();
    let v = stdout(&o).trim().to_owned();
    assert!(v.starts_with("V2-"), "{v}");
    let (real, _) = real_entries(&f.job_dir().join(&v));
    assert_eq!(real, 4, "a, a/b, a/b/f and h are real; nothing else");
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: false,
    };
    f.assert_latest_is_source(opts, "event version");
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    assert!(
        journal.contains("\twatch\tmove\tg\t"),
        "raw events are journaled:\n{journal}"
    );
}

#[test]
fn an_overflow_line_makes_the_batch_a_rescan() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"1").expect("write");
    f.first();
    // Changes the events never mention: only a rescan can find them.
    fs::write(f.src.join("a"), b"changed").expect("write");
    fs::create_dir(f.src.join("unseen")).expect("mkdir");
    fs::write(f.src.join("unseen/x"), b"x").expect("write");
    let o = feed(&f, &(header() + &line("overflow", "", "", "")), &[]).assert_success();
    assert!(stdout(&o).starts_with("V2-"));
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    f.assert_latest_is_source(opts, "after overflow");
}

#[test]
fn a_malformed_batch_builds_nothing_and_names_the_line() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"1").expect("write");
    f.first();
    fs::write(f.src.join("a"), b"2").expect("write");
    let cases = [
        (
            header() + &line("modify", "file", "a", "") + "not\tenough\tfields\n",
            "line 3",
        ),
        (header() + &line("explode", "file", "a", ""), "line 2"),
        (
            header() + &line("modify", "file", "../etc/passwd", ""),
            "line 2",
        ),
        (header() + &line("modify", "file", "/abs", ""), "line 2"),
        (
            header() + &line("modify", "file", "bad\\qescape", ""),
            "line 2",
        ),
        (header() + &line("move", "file", "a", ""), "line 2"),
        ("no header\n".to_owned(), "line 1"),
    ];
    for (input, needle) in cases {
        let o = feed(&f, &input, &[]).assert_exit(1);
        assert!(stderr(&o).contains(needle), "{input:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        assert_eq!(stdout(&o), "", "no version from a bad batch");
    }
    // With --follow a bad batch is skipped and the next one still builds.
    let input = header()
        + &line("explode", "file", "a", "")
        + &line("flush", "", "", "")
        + &line("modify", "file", "a", "")
        + &line("flush", "", "", "");
    let o = feed(&f, &input, &["--follow"]).assert_exit(1);
    assert!(
        stdout(&o).starts_with("V2-"),
        "the good batch still made a version: {}",
        stdout(&o)
    );
}

/// How many `snapshot` lines the job's journal holds.
fn snapshots(f: &Fixture) -> usize {
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    journal
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("snapshot"))
        .count()
}

#[test]
fn an_event_on_an_unchanged_path_makes_no_version() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"same").expect("write");
    fs::write(f.src.join("b"), b"old").expect("write");
    // Written long before the version (a file written within a timestamp tick of its copy
    // is "racily clean": a content event on it is believed, see engine/build.rs).
    sh(&format!(
        "touch -d '1 hour ago' {}",
        f.src.join("a").display()
    ));
    f.first();
    let before = fs::symlink_metadata(f.src.join("a")).expect("stat a");
    // `: >> a`: opened for writing, closed unchanged.
    drop(
        fs::OpenOptions::new()
            .append(true)
            .open(f.src.join("a"))
            .expect("open"),
    );
    let after = fs::symlink_metadata(f.src.join("a")).expect("stat a");
    assert_eq!(
        (before.len(), before.modified().ok()),
        (after.len(), after.modified().ok()),
        "an open for writing changes nothing"
    );
    assert_eq!(snapshots(&f), 1);
    for kind in ["modify", "attrib"] {
        let o = feed(&f, &(header() + &line(kind, "file", "a", "")), &[]).assert_success();
        assert_eq!(stdout(&o), "", "{kind} of an unchanged file: no version");
        assert_eq!(index_dirs(&f).len(), 1, "{kind}");
        assert_eq!(disk_dirs(&f).len(), 1, "{kind}");
        assert!(no_partial(&f), "{kind}");
        assert_eq!(snapshots(&f), 1, "{kind}: no snapshot journal line");
    }
    // A real change in the same batch versions exactly that.
    fs::write(f.src.join("b"), b"new!").expect("write");
    let o = feed(
        &f,
        &(header() + &line("modify", "file", "a", "") + &line("modify", "file", "b", "")),
        &[],
    )
    .assert_success();
    let v = stdout(&o).trim().to_owned();
    assert!(v.starts_with("V2-"), "{v}");
    let v2 = f.job_dir().join(&v);
    assert!(
        fs::symlink_metadata(v2.join("a"))
            .expect("a")
            .file_type()
            .is_symlink(),
        "the unchanged file is a vault link"
    );
    let (real, _) = real_entries(&v2);
    assert_eq!(real, 1, "only b is real");
    assert_eq!(snapshots(&f), 2);
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    assert_same(
        &capture(&f.src, opts),
        &capture(&f.restore(&v), opts),
        "the version is the source",
    );
}
