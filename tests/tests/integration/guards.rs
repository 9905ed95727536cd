//! Filesystem identity guards (docs/identity.md) and the deletion guard (docs/cli.md) on real loop
//! mounts: an unmounted source or an unplugged vault makes every writer exit 75 and nothing
//! is written; replugged, the job resumes with a version of only the real changes.

use std::fs;
use std::path::Path;

use reverb_tests::model::{CaptureOpts, assert_same, capture, real_entries};
use reverb_tests::{Fixture, LoopMount, cmd, stderr, stdout};

fn listing(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn an_unmounted_source_halts_the_job_and_a_remount_resumes_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = match LoopMount::new(tmp.path(), "ext4", 64, &["-L", "srcdisk"]) {
        Ok(m) => m,
        Err(why) => reverb_tests::skip!("{why}: source identity guard"),
    };
    let f = Fixture::in_dir(tempfile::tempdir().expect("tempdir"));
    let src = m.mountpoint.join("data");
    fs::create_dir(&src).expect("mkdir");
    for i in 0..20 {
        fs::write(src.join(format!("f{i}")), format!("{i}")).expect("write");
    }
    cmd("reverb-snap")
        .arg("--vault")
        .arg(&f.vault)
        .arg("--init")
        .args(["--job", "j", "--source"])
        .arg(&src)
        .assert_success();
    let job = f.vault.join("j");
    let toml = fs::read_to_string(job.join("job.toml")).expect("job.toml");
    assert!(
        toml.contains("srcdisk"),
        "the source's label is recorded:\n{toml}"
    );
    fs::write(src.join("f3"), b"changed before unplug").expect("write");
    m.unmount();
    // The mountpoint is now an empty directory on the parent filesystem; recreate the
    // source path there, as a confused script might, to show the guard is by identity.
    fs::create_dir_all(&src).expect("mkdir on the parent fs");
    let before = listing(&job);
    for extra in [&[][..], &["--force"][..]] {
        let o = cmd("reverb-snap")
            .arg("--vault")
            .arg(&f.vault)
            .args(["--job", "j"])
            .args(extra)
            .assert_exit(75);
        assert!(stderr(&o).contains("source"), "{}", stderr(&o));
        assert_eq!(stdout(&o), "", "no version");
    }
    for (tool, args) in [
        ("reverb-retire", &["--keep", "1"][..]),
        ("reverb-index", &["--recount"][..]),
    ] {
        cmd(tool)
            .arg("--vault")
            .arg(&f.vault)
            .args(["--job", "j"])
            .args(args)
            .assert_exit(75);
    }
    assert_eq!(listing(&job), before, "nothing but the journal may change");
    let journal = fs::read_to_string(job.join("journal.tsv")).expect("journal");
    assert!(journal.contains("\tmount-lost\t"), "{journal}");
    fs::remove_dir(&src).expect("rmdir");
    m.mount().expect("remount");
    let o = cmd("reverb-snap")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "j"])
        .assert_success();
    let v2 = stdout(&o).trim().to_owned();
    assert!(v2.starts_with("V2-"), "{v2}");
    let (real, _) = real_entries(&job.join(&v2));
    assert_eq!(real, 1, "only the one real change is held");
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    let dest = tmp.path().join("restored");
    cmd("reverb-restore")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "j", "--to"])
        .arg(&dest)
        .assert_success();
    assert_same(&capture(&src, opts), &capture(&dest, opts), "after remount");
}

#[test]
fn an_unplugged_vault_is_never_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = match LoopMount::new(tmp.path(), "ext4", 64, &[]) {
        Ok(m) => m,
        Err(why) => reverb_tests::skip!("{why}: vault identity guard"),
    };
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    let vault = m.mountpoint.join("vault");
    let snap = |extra: &[&str]| {
        let mut c = cmd("reverb-snap");
        c.arg("--vault")
            .arg(&vault)
            .args(["--job", "j", "--source"])
            .arg(&f.src)
            .args(extra)
            .show_dir(vault.join("j"));
        c
    };
    snap(&["--init"]).assert_success();
    m.unmount();
    fs::write(f.src.join("a"), b"changed").expect("write");
    let o = snap(&[]).assert_exit(75);
    assert!(stderr(&o).contains("vault not available"), "{}", stderr(&o));
    // Even with the vault's directory recreated on the root filesystem, no job is there.
    assert!(
        listing(&m.mountpoint).is_empty(),
        "the empty mountpoint was written into"
    );
    // `status` knows nothing of the job's versions then, and says so (not "never", not "0
    // versions"), whether the vault's path is gone or an empty directory stands there.
    let config = f._tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[jobs.j]\nsource = \"{}\"\nvault = \"{}\"\n",
            f.src.display(),
            vault.display()
        ),
    )
    .expect("config");
    for empty_dir in [false, true] {
        if empty_dir {
            fs::create_dir(&vault).expect("an empty directory where the vault was");
        }
        let o = cmd("reverberator")
            .args(["status", "--config"])
            .arg(&config)
            .assert_exit(1);
        let said = stdout(&o);
        assert!(
            said.contains("j: stopped — versions unknown while the vault is missing")
                && said.contains("no reverberator-vault.toml there"),
            "{said}"
        );
    }
    fs::remove_dir(&vault).expect("rmdir");
    m.mount().expect("replug");
    let o = snap(&[]).assert_success();
    assert!(stdout(&o).starts_with("V2-"));
}

#[test]
fn a_rescan_that_deletes_most_files_needs_force() {
    let f = Fixture::new();
    for i in 0..10 {
        fs::write(f.src.join(format!("f{i}")), b"x").expect("write");
    }
    f.first();
    for i in 0..6 {
        fs::remove_file(f.src.join(format!("f{i}"))).expect("rm");
    }
    let o = f.snap(&[]).assert_exit(1);
    assert!(stderr(&o).contains("max_delete_ratio"), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let o = f.snap(&["--force"]).assert_success();
    assert!(stdout(&o).starts_with("V2-"));
}

#[test]
fn keep_complete_false_keeps_only_what_changed_since_the_start() {
    let f = Fixture::new();
    fs::create_dir_all(f.src.join("docs/old")).expect("mkdir");
    fs::write(f.src.join("docs/old/untouched"), b"u").expect("write");
    fs::write(f.src.join("docs/edited"), b"v0").expect("write");
    fs::write(f.src.join("top"), b"t").expect("write");
    let cfg = f._tmp.path().join("config.toml");
    fs::write(
        &cfg,
        format!(
            "[jobs.job]\nsource = \"{}\"\nvault = \"{}\"\nkeep_complete = false\n",
            f.src.display(),
            f.vault.display()
        ),
    )
    .expect("config");
    let snap = || {
        let mut c = cmd("reverb-snap");
        c.arg("--config")
            .arg(&cfg)
            .args(["--job", "job"])
            .show_dir(f.job_dir());
        c
    };
    let o = cmd("reverb-snap")
        .arg("--config")
        .arg(&cfg)
        .args(["--job", "job", "--init"])
        .assert_success();
    let v1 = stdout(&o).trim().to_owned();
    assert!(
        listing(&f.job_dir().join(&v1)).is_empty(),
        "the first version holds nothing"
    );
    fs::write(f.src.join("docs/edited"), b"v1").expect("write");
    fs::write(f.src.join("new"), b"n").expect("write");
    let o = snap().assert_success();
    let v2 = stdout(&o).trim().to_owned();
    let d2 = f.job_dir().join(&v2);
    assert_eq!(listing(&d2), vec!["docs", "new"]);
    assert_eq!(listing(&d2.join("docs")), vec!["edited"]);
    assert_eq!(fs::read(d2.join("docs/edited")).expect("read"), b"v1");
    assert_eq!(stdout(&snap().output()), "", "nothing changed since V2");
    fs::write(f.src.join("top"), b"t2").expect("write");
    let v3 = stdout(&snap().output()).trim().to_owned();
    let d3 = f.job_dir().join(&v3);
    assert_eq!(listing(&d3), vec!["docs", "new", "top"]);
    assert!(
        fs::symlink_metadata(d3.join("docs"))
            .expect("docs")
            .file_type()
            .is_symlink(),
        "unchanged since V2: linked"
    );
    assert_eq!(
        fs::read(d3.join("docs/edited")).expect("through the link"),
        b"v1"
    );
}

#[test]
fn a_mount_over_the_vault_during_a_run_cannot_redirect_writes() {
    reverb_tests::require_root!("mount over the vault during a run");
    let f = Fixture::new();
    fs::write(f.src.join("seed"), b"seed").expect("write");
    f.first();
    for d in 0..40 {
        let dir = f.src.join(format!("d{d}"));
        fs::create_dir(&dir).expect("mkdir");
        for i in 0..100 {
            fs::write(dir.join(format!("f{i}")), vec![b'x'; 2000]).expect("write");
        }
    }
    let child = f.snap(&[]).spawn();
    let partial = f.job_dir().join(".partial");
    let start = std::time::Instant::now();
    while listing(&partial).is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the build never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // The writer holds its job folder open: a filesystem mounted over the vault now must
    // not receive any of its writes.
    reverb_tests::sh(&format!(
        "mount -t tmpfs -o size=16m tmpfs {}",
        f.vault.display()
    ));
    let out = child.wait_with_output().expect("wait");
    let over = listing(&f.vault);
    reverb_tests::sh(&format!("umount {}", f.vault.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        over.is_empty(),
        "writes went into the filesystem mounted over the vault: {over:?}"
    );
    let v2 = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        f.job_dir().join(&v2).is_dir(),
        "the version is in the real vault"
    );
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    f.assert_latest_is_source(opts, "after the mount-over");
}

/// A source of 200 files, 180 of them under `doc/` (in ten folders), versioned once.
fn mostly_doc() -> Fixture {
    let f = Fixture::new();
    for d in 0..10 {
        let dir = f.src.join(format!("doc/part{d}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..18 {
            fs::write(dir.join(format!("page{i}")), format!("{d}/{i}")).expect("write");
        }
    }
    for i in 0..20 {
        fs::write(f.src.join(format!("top{i}")), format!("{i}")).expect("write");
    }
    f.first();
    f
}

#[test]
fn renaming_the_folder_holding_most_files_is_not_a_deletion() {
    let f = mostly_doc();
    fs::rename(f.src.join("doc"), f.src.join("documentation")).expect("mv");
    let o = f.snap(&[]).assert_success();
    let v2 = stdout(&o).trim().to_owned();
    assert!(v2.starts_with("V2-"), "{v2}: {}", stderr(&o));
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    assert_same(
        &capture(&f.src, opts),
        &capture(&f.restore(&v2), opts),
        "after the rename",
    );
    let rows = reverb_common::index::read(&f.job_dir().join("index.tsv")).expect("index");
    assert_eq!(
        rows.last().map(|r| r.files),
        Some(200),
        "as many files as before"
    );
    f.check_clean();
}

#[test]
fn emptying_the_source_still_trips_the_guard() {
    let f = mostly_doc();
    fs::rename(f.src.join("doc"), f.src.join("documentation")).expect("mv");
    // Moved, and then most of it gone: 40 of 200 files remain.
    fs::remove_dir_all(f.src.join("documentation/part0")).expect("rm");
    for d in 2..10 {
        fs::remove_dir_all(f.src.join(format!("documentation/part{d}"))).expect("rm");
    }
    let before = listing(&f.job_dir());
    let o = f.snap(&[]).assert_exit(1);
    assert!(stderr(&o).contains("max_delete_ratio"), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "no version");
    for entry in fs::read_dir(&f.src).expect("src") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            fs::remove_dir_all(&p).expect("rm");
        } else {
            fs::remove_file(&p).expect("rm");
        }
    }
    let o = f.snap(&[]).assert_exit(1);
    assert!(stderr(&o).contains("max_delete_ratio"), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "no version");
    assert_eq!(listing(&f.job_dir()), before, "no version, no partial");
    let o = f.snap(&["--force"]).assert_success();
    assert!(stdout(&o).starts_with("V2-"), "{}", stdout(&o));
}
