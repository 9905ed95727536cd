//! Full disks: a small loop-mounted ext4 as the vault, a source that keeps changing, and
//! versions until ENOSPC. The failing `reverb-snap` exits 1 saying the disk is full, leaves
//! no `.partial` version and no new version, damages nothing retained (every version exact,
//! `--check` clean); with `keep_versions`/`vault_size_limit` from a `--config`, retirement
//! frees space; after freeing space the job versions again.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use reverb_tests::model::capture;
use reverb_tests::ops::{FastFixture, Tree, index_dirs, no_partial, opts, verify_all};
use reverb_tests::{Fixture, LoopMount, stderr, stdout};

const BLOB: usize = 3 << 20;

/// One round of change: a new 3 MiB blob, the blob from three rounds ago deleted, and a
/// small edit; the source stays about 9 MiB while the vault's history grows.
fn change(src: &Path, round: u32) {
    fs::write(
        src.join(format!("blob{round}")),
        reverb_tests::ops::pattern(round, BLOB),
    )
    .expect("write blob");
    if round >= 3 {
        let _ = fs::remove_file(src.join(format!("blob{}", round - 3)));
    }
    fs::create_dir_all(src.join("notes")).expect("mkdir");
    fs::write(src.join("notes/today.txt"), format!("round {round}\n")).expect("write");
}

/// The fixture on a tmpfs (source, restores) with the vault on a fresh ext4 of `mib`.
fn setup(mib: u64) -> Option<(FastFixture, LoopMount)> {
    // Returned in this order so that the loop mount is dropped (unmounted) first.
    let mut ff = FastFixture::new(768);
    let lm = match LoopMount::new(ff.f._tmp.path(), "ext4", mib, &["-m", "0"]) {
        Ok(m) => m,
        Err(why) => {
            reverb_tests::skip(&format!("{why}: the vault on a small ext4"));
            return None;
        }
    };
    ff.f.vault = lm.mountpoint.join("vault");
    Some((ff, lm))
}

/// After a failed run: exit 1, "disk is full", no partial, no new version, all exact.
fn assert_clean_failure(
    f: &Fixture,
    o: &std::process::Output,
    before: &[String],
    recorded: &BTreeMap<String, Tree>,
    what: &str,
) {
    assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(o));
    let e = stderr(o);
    assert!(e.contains("disk is full"), "{what}: unclear message: {e}");
    assert!(!e.contains("panicked"), "{what}: {e}");
    assert!(stdout(o).trim().is_empty(), "{what}: printed a version");
    assert!(no_partial(f), "{what}: a .partial version was left");
    let after = index_dirs(f);
    assert!(
        after.iter().all(|d| before.contains(d)),
        "{what}: a failed run added a version: {after:?}"
    );
    verify_all(f, recorded, what);
}

#[test]
fn a_full_vault_fails_cleanly_and_the_job_recovers_after_space_is_freed() {
    let Some((ff, _lm)) = setup(40) else {
        return;
    };
    let f = &ff.f;
    change(&f.src, 0);
    let mut recorded = BTreeMap::from([(f.first(), capture(&f.src, opts()))]);
    let mut round = 0;
    let failed = loop {
        round += 1;
        assert!(round < 40, "a 40 MiB vault never filled up");
        change(&f.src, round);
        let before = index_dirs(f);
        let o = f.snap(&[]).output();
        if !o.status.success() {
            assert_clean_failure(f, &o, &before, &recorded, &format!("round {round}"));
            break round;
        }
        let v = stdout(&o).trim().to_owned();
        assert!(!v.is_empty(), "round {round} made no version");
        recorded.insert(v, capture(&f.src, opts()));
    };
    eprintln!(
        "the vault filled up at round {failed} ({} versions)",
        recorded.len()
    );
    // Still full: a second attempt fails just as cleanly.
    let before = index_dirs(f);
    let o = f.snap(&[]).output();
    assert_clean_failure(f, &o, &before, &recorded, "second attempt");
    // Free space by deleting source data: the version needs no new blob and fits.
    fs::remove_file(f.src.join(format!("blob{failed}"))).expect("rm blob");
    let v = f.rescan();
    assert!(!v.is_empty(), "no version after deleting source data");
    recorded.insert(v, capture(&f.src, opts()));
    verify_all(f, &recorded, "after deleting source data");
    // Free space by retiring: the next big change versions again.
    reverb_tests::ops::tool(f, "reverb-retire", &["--keep", "2"]).assert_success();
    change(&f.src, failed + 1);
    let v = f.rescan();
    assert!(!v.is_empty(), "no version after retiring");
    recorded.insert(v, capture(&f.src, opts()));
    verify_all(f, &recorded, "after retiring");
}

#[test]
fn with_limits_a_full_disk_retires_and_the_retry_versions() {
    let Some((ff, _lm)) = setup(40) else {
        return;
    };
    let f = &ff.f;
    let config = f._tmp.path().join("config.toml");
    // A size limit above what the disk can hold: only the full disk makes room.
    fs::write(
        &config,
        format!(
            "[jobs.{job}]\nsource = \"{src}\"\nvault = \"{vault}\"\nkeep_versions = 50\n\
             vault_size_limit = \"24MiB\"\n",
            job = f.job,
            src = f.src.display(),
            vault = f.vault.display()
        ),
    )
    .expect("config");
    let cfg = config.to_str().expect("utf-8 path");
    change(&f.src, 0);
    let o = f.snap(&["--init", "--config", cfg]).assert_success();
    let mut recorded = BTreeMap::from([(stdout(&o).trim().to_owned(), capture(&f.src, opts()))]);
    let mut fulls = 0;
    let mut retries_ok = 0;
    for round in 1..=24 {
        change(&f.src, round);
        let state = capture(&f.src, opts());
        let before = index_dirs(f);
        let o = f.snap(&["--config", cfg]).output();
        if o.status.success() {
            recorded.insert(stdout(&o).trim().to_owned(), state);
            continue;
        }
        fulls += 1;
        assert_clean_failure(f, &o, &before, &recorded, &format!("round {round}"));
        assert!(
            index_dirs(f).len() < before.len(),
            "round {round}: the full disk retired nothing despite vault_size_limit"
        );
        // The retry fits now.
        let o = f.snap(&["--config", cfg]).assert_success();
        recorded.insert(stdout(&o).trim().to_owned(), state);
        retries_ok += 1;
        verify_all(f, &recorded, &format!("round {round}: retried"));
    }
    eprintln!("{fulls} full-disk failures, {retries_ok} successful retries");
    assert!(fulls > 0, "the disk never filled up");
    // Raise the limit: a retire with a generous size keeps everything left.
    reverb_tests::ops::tool(f, "reverb-retire", &["--max-size", "1GiB"]).assert_success();
    verify_all(f, &recorded, "at the end");
}
