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
        Err(why) => {
            eprintln!("SKIPPED (strace: {why})");
            return;
        }
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
