//! `reverb-restore` into a destination that is not empty (`--overwrite`, `--delete`), the
//! `--from` selector with times, and `-V/--version` on every program.

use std::fs;
use std::process::Command;

use reverb_tests::model::{CaptureOpts, assert_same, capture};
use reverb_tests::{Fixture, cmd, stderr, stdout};

fn opts() -> CaptureOpts {
    CaptureOpts {
        owners: true,
        dir_mtimes: true,
    }
}

/// `diff -r A B` output lines (the independent oracle of what differs).
fn diff_r(a: &std::path::Path, b: &std::path::Path) -> Vec<String> {
    let o = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .expect("diff");
    let mut lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.replace(&b.display().to_string(), "DEST"))
        .collect();
    lines.sort();
    lines
}

#[test]
fn overwrite_replaces_only_what_it_restores_and_delete_makes_dest_exact() {
    let f = Fixture::new();
    fs::write(f.src.join("a.txt"), b"a1").expect("write");
    fs::create_dir(f.src.join("d")).expect("mkdir");
    fs::write(f.src.join("d/b.txt"), b"b").expect("write");
    f.first();
    fs::write(f.src.join("a.txt"), b"a2").expect("write");
    fs::write(f.src.join("c.txt"), b"c").expect("write");
    assert!(!f.rescan().is_empty());
    let dest = f._tmp.path().join("dest");
    fs::create_dir_all(dest.join("d")).expect("mkdir");
    fs::create_dir_all(dest.join("c.txt/inner")).expect("mkdir");
    fs::write(dest.join("a.txt"), b"stale").expect("write");
    fs::write(dest.join("extra.txt"), b"mine").expect("write");
    fs::write(dest.join("d/other.txt"), b"mine too").expect("write");
    // Not empty, no flag: refused, nothing touched.
    let o = f
        .tool("reverb-restore")
        .arg("--to")
        .arg(&dest)
        .assert_exit(2);
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(fs::read(dest.join("a.txt")).expect("read"), b"stale");
    let file_dest = f._tmp.path().join("a-file");
    fs::write(&file_dest, b"x").expect("write");
    let o = f
        .tool("reverb-restore")
        .arg("--to")
        .arg(&file_dest)
        .assert_exit(2);
    assert!(
        stderr(&o).contains("exists") && !stderr(&o).contains("not empty"),
        "an existing file is not 'not empty': {}",
        stderr(&o)
    );
    // --overwrite: every restored entry replaced (c.txt was a directory), the rest kept.
    f.tool("reverb-restore")
        .arg("--to")
        .arg(&dest)
        .arg("--overwrite")
        .assert_success();
    assert_eq!(
        diff_r(&f.src, &dest),
        ["Only in DEST/d: other.txt", "Only in DEST: extra.txt"]
    );
    // --delete: DEST becomes exactly the version, and says how many entries went.
    let o = f
        .tool("reverb-restore")
        .arg("--to")
        .arg(&dest)
        .arg("--delete")
        .assert_success();
    assert!(stderr(&o).contains("removed 2 entries"), "{}", stderr(&o));
    assert_same(
        &capture(&f.src, opts()),
        &capture(&dest, opts()),
        "--delete",
    );
    // --delete over a tree that is all different.
    let other = f._tmp.path().join("other");
    fs::create_dir_all(other.join("x/y")).expect("mkdir");
    fs::write(other.join("x/y/z"), b"z").expect("write");
    let o = f
        .tool("reverb-restore")
        .args(["--from", "1", "--delete", "--to"])
        .arg(&other)
        .assert_success();
    assert!(stderr(&o).contains("removed 3 entries"), "{}", stderr(&o));
    assert_eq!(fs::read(other.join("a.txt")).expect("read"), b"a1");
    assert!(!other.join("c.txt").exists() && !other.join("x").exists());
}

#[test]
fn from_takes_numbers_names_latest_and_times() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"1").expect("write");
    let v1 = f.first();
    fs::write(f.src.join("a"), b"2").expect("write");
    let v2 = f.rescan();
    let index = fs::read_to_string(f.job_dir().join("index.tsv")).expect("index");
    let created: Vec<&str> = index
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(2).expect("created"))
        .collect();
    let content = |from: &str| {
        let dest = f._tmp.path().join(format!("r{}", from.len()));
        let _ = fs::remove_dir_all(&dest);
        f.tool("reverb-restore")
            .args(["--from", from, "--to"])
            .arg(&dest)
            .assert_success();
        fs::read(dest.join("a")).expect("read")
    };
    assert_eq!(content("1"), b"1");
    assert_eq!(content(&v1), b"1");
    assert_eq!(content(&v2), b"2");
    assert_eq!(content("latest"), b"2");
    assert_eq!(content(created[1]), b"2", "a version's own time picks it");
    assert_eq!(content("0s ago"), b"2");
    let o = f
        .tool("reverb-restore")
        .args(["--from", "2 days ago", "--to"])
        .arg(f._tmp.path().join("never"))
        .assert_exit(2);
    assert!(stderr(&o).contains("at or before"), "{}", stderr(&o));
}

#[test]
fn every_program_prints_its_version() {
    for prog in [
        "reverberator",
        "reverb-watch",
        "reverb-mountwatch",
        "reverb-snap",
        "reverb-retire",
        "reverb-index",
        "reverb-restore",
    ] {
        for flag in ["-V", "--version"] {
            let o = cmd(prog).arg(flag).assert_success();
            assert!(
                stdout(&o).starts_with(&format!("{prog} ")),
                "{prog} {flag}: {}",
                stdout(&o)
            );
        }
    }
}
