//! `reverb-restore` into a destination that is not empty (`--overwrite`, `--delete`), the
//! `--from` selector with times, a destination in the vault refused, and `-V/--version` on
//! every program.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use reverb_tests::model::{CaptureOpts, assert_same, capture};
use reverb_tests::{Fixture, MountGuard, cmd, skip, stderr, stdout};

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

/// The vault as an independent oracle sees it: every entry's path, type, size, mode, mtime
/// and link text (`find -printf`), and every file's BLAKE3 (`b3sum`).
fn vault_state(vault: &Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(
            "cd \"$1\" && find . -printf '%p %y %s %m %T@ %l\\n' | sort && \
             find . -type f -print0 | sort -z | xargs -0 b3sum",
        )
        .arg("sh")
        .arg(vault)
        .output()
        .expect("find");
    assert!(o.status.success(), "find | b3sum: {}", stderr(&o));
    stdout(&o)
}

/// `reverberator restore job --vault V --path sub --to DEST`.
fn porcelain_restore(f: &Fixture, dest: &Path) -> reverb_tests::TestCommand {
    let mut c = cmd("reverberator");
    c.args(["restore", &f.job, "--vault"])
        .arg(&f.vault)
        .args(["--path", "sub", "--to"])
        .arg(dest)
        .show_dir(f.job_dir());
    c
}

#[test]
fn a_destination_in_the_vault_is_refused_before_anything_is_written() {
    let f = Fixture::new();
    fs::create_dir(f.src.join("sub")).expect("mkdir");
    fs::write(f.src.join("sub/a"), b"hello").expect("write");
    let v1 = f.first();
    let job = f.job_dir();
    let link = f._tmp.path().join("into-vault");
    std::os::unix::fs::symlink(job.join(&v1), &link).expect("symlink");
    let before = vault_state(&f.vault);
    let mut dests: Vec<PathBuf> = vec![
        job.join(&v1).join("sub/restored-here"),
        job.join("current/docs2"),
        job.join("restored"),
        job.join("index.tsv.d"),
        job.join(&v1).join("sub"),
        f.vault.clone(),
        // Through a symlink into a version.
        link.join("sub/restored"),
        link.clone(),
    ];
    // Through a bind mount of the vault: another path, the same directories.
    let bind = f._tmp.path().join("bind");
    let guard = match MountGuard::new(&["--bind", f.vault.to_str().expect("utf-8")], &bind) {
        Ok(g) => {
            dests.push(bind.join(&f.job).join("restored"));
            Some(g)
        }
        Err(why) => {
            skip(&format!("bind mount of the vault: {why}"));
            None
        }
    };
    for dest in &dests {
        for extra in [&[][..], &["--overwrite"][..], &["--delete"][..]] {
            let o = porcelain_restore(&f, dest).args(extra).assert_exit(2);
            let err = stderr(&o);
            assert!(
                err.contains(&dest.display().to_string())
                    && err.contains(&f.vault.display().to_string())
                    && err.contains("vault"),
                "{} {extra:?}: the message names DEST and the vault: {err}",
                dest.display()
            );
        }
        assert_eq!(
            vault_state(&f.vault),
            before,
            "{}: the vault changed",
            dest.display()
        );
    }
    // reverb-restore itself, and a relative DEST from inside the vault.
    let o = f
        .tool("reverb-restore")
        .args(["--to", "restored-rel"])
        .current_dir(&job)
        .assert_exit(2);
    assert!(stderr(&o).contains("vault"), "{}", stderr(&o));
    drop(guard);
    assert_eq!(vault_state(&f.vault), before, "the vault changed");
    cmd("reverberator")
        .args(["verify", "--data", "--vault"])
        .arg(&f.vault)
        .assert_success();
    // The live source is a legitimate place to restore into.
    let old = f.src.join("old-report");
    porcelain_restore(&f, &old).assert_success();
    assert_eq!(fs::read(old.join("a")).expect("read"), b"hello");
}

/// `reverberator restore --help` (and every other subcommand's) prints the subcommand's own
/// usage, JOB positional as the front end takes it, and exits 0.
#[test]
fn every_subcommand_of_reverberator_prints_its_help() {
    for sub in [
        "run",
        "status",
        "versions",
        "history",
        "find",
        "diff",
        "snap",
        "replicate",
        "verify",
        "restore",
        "check-config",
    ] {
        for flag in ["--help", "-h"] {
            let o = cmd("reverberator").args([sub, flag]).assert_success();
            let out = stdout(&o);
            assert!(
                out.contains(&format!("Usage: reverberator {sub}")),
                "{sub} {flag}: {out}"
            );
        }
    }
    let o = cmd("reverberator")
        .args(["restore", "--help"])
        .assert_success();
    let out = stdout(&o);
    assert!(out.contains("<JOB>") && !out.contains("--job"), "{out}");
    for flag in [
        "--to <DEST>",
        "--from",
        "--path",
        "--overwrite",
        "--delete",
        "--no-verify",
        "--vault",
        "--config",
    ] {
        assert!(out.contains(flag), "restore --help lacks {flag}: {out}");
    }
}

/// A DEST the vault is inside (a second trial: `--to ~ --delete` with the vault in `~`
/// removed the vault, everything else there, and said "cannot set attributes"): refused
/// with exit 2 in every mode, before anything is written; the vault and DEST's other
/// entries stay as they were.
#[test]
fn a_destination_the_vault_is_inside_is_refused() {
    let f = Fixture::new();
    fs::create_dir(f.src.join("sub")).expect("mkdir");
    fs::write(f.src.join("sub/a"), b"hello").expect("write");
    f.first();
    // The fixture's vault is in the fixture's temp dir: that is DEST here.
    let home = f.vault.parent().expect("the vault's parent").to_path_buf();
    assert!(f.vault.starts_with(&home));
    fs::write(home.join("notes"), b"keep me").expect("write");
    let before = vault_state(&f.vault);
    for extra in [&[][..], &["--overwrite"][..], &["--delete"][..]] {
        let mut c = cmd("reverberator");
        c.args(["restore", &f.job, "--vault"])
            .arg(&f.vault)
            .arg("--to")
            .arg(&home)
            .args(extra)
            .show_dir(f.job_dir());
        let o = c.assert_exit(2);
        assert!(
            stderr(&o).contains("is inside it"),
            "{extra:?}: {}",
            stderr(&o)
        );
        assert_eq!(
            vault_state(&f.vault),
            before,
            "{extra:?}: the vault changed"
        );
        assert_eq!(fs::read(home.join("notes")).expect("notes"), b"keep me");
    }
}
