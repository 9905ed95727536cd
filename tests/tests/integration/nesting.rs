//! A vault and a source that nest, seen through another path than their own: a bind mount
//! makes one directory reachable by two paths, which a comparison of real paths cannot see.
//! Every entry point refuses the pair before writing anything (exit 2), and a build never
//! descends into the vault even when the mount is made after the job started. And one
//! source is backed up by one job of a vault: `run --source` under another `--job` name
//! is refused too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reverb_tests::{Fixture, MountGuard, cmd, require_root, stderr};

/// Every path below `dir`, sorted: what a refusal must leave as it was.
fn below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if fs::symlink_metadata(&p).expect("lstat").is_dir() {
                pending.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `reverberator ARGS`, which must exit by itself within a minute (a supervisor that did
/// not refuse would run on: it is killed and the test fails). Returns (exit code, stderr).
fn exits(args: &[&std::ffi::OsStr], log: &Path) -> (Option<i32>, String) {
    let mut child = cmd("reverberator")
        .args(args)
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn reverberator");
    let mut status = None;
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reverb_tests::wait_until(Duration::from_secs(60), "reverberator to exit", || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        })
    }));
    if waited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        let said = fs::read_to_string(log).unwrap_or_default();
        let tail: String = said
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!("reverberator {args:?} did not refuse: it ran on\n…{tail}");
    }
    let said = fs::read_to_string(log).unwrap_or_default();
    (status.and_then(|s| s.code()), said)
}

fn os(p: &Path) -> &std::ffi::OsStr {
    p.as_os_str()
}

/// Asserts a refusal: exit 2, one message naming both paths and the other way in.
#[track_caller]
fn refused(code: Option<i32>, said: &str, a: &Path, b: &Path) {
    assert_eq!(code, Some(2), "refused as a usage error: {said}");
    for p in [a, b] {
        assert!(
            said.contains(&*p.to_string_lossy()),
            "the message names {}: {said}",
            p.display()
        );
    }
    assert!(
        said.contains("same directory") && said.contains("bind mount"),
        "the message says it is the same directory by another path: {said}"
    );
}

#[test]
fn a_vault_inside_the_source_through_a_bind_mount_is_refused_before_anything_is_written() {
    require_root!("bind-mounts the source");
    let tmp = tempfile::tempdir().expect("tmp");
    let real = tmp.path().join("s2");
    fs::create_dir(&real).expect("mkdir");
    fs::write(real.join("f"), b"x").expect("write");
    let bind = tmp.path().join("bind");
    let _mount =
        MountGuard::new(&["--bind", real.to_str().expect("utf-8")], &bind).expect("bind mount");
    let log = tmp.path().join("log");
    let before = below(&real);

    // The vault on the bind mount, the source its real path; and the reverse.
    for (source, vault) in [
        (real.clone(), bind.join(".vault")),
        (bind.clone(), real.join(".vault")),
    ] {
        let (code, said) = exits(
            &[
                os(Path::new("run")),
                os(Path::new("--init")),
                os(Path::new("--source")),
                os(&source),
                os(Path::new("--vault")),
                os(&vault),
            ],
            &log,
        );
        refused(code, &said, &vault, &source);
        assert_eq!(below(&real), before, "run --init wrote into the source");

        let o = cmd("reverb-snap")
            .args(["--init", "--job", "x", "--source"])
            .arg(&source)
            .arg("--vault")
            .arg(&vault)
            .output();
        refused(o.status.code(), &stderr(&o), &vault, &source);
        assert_eq!(
            below(&real),
            before,
            "reverb-snap --init wrote into the source"
        );

        let config = tmp.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "[jobs.docs]\nsource = {:?}\nvault = {:?}\n",
                source.to_str().expect("utf-8"),
                vault.to_str().expect("utf-8")
            ),
        )
        .expect("config");
        let (code, said) = exits(
            &[
                os(Path::new("check-config")),
                os(Path::new("--config")),
                os(&config),
            ],
            &log,
        );
        refused(code, &said, &vault, &source);
        assert!(said.contains("job `docs`"), "{said}");
        let (code, said) = exits(
            &[
                os(Path::new("run")),
                os(Path::new("--init")),
                os(Path::new("--config")),
                os(&config),
            ],
            &log,
        );
        refused(code, &said, &vault, &source);
        assert_eq!(below(&real), before, "run --config wrote into the source");
    }
}

#[test]
fn a_source_inside_the_vault_through_a_bind_mount_is_refused() {
    require_root!("bind-mounts the vault");
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    f.first();
    let sub = f.vault.join("inner");
    fs::create_dir(&sub).expect("mkdir");
    let bind = f._tmp.path().join("vault-again");
    let _mount =
        MountGuard::new(&["--bind", f.vault.to_str().expect("utf-8")], &bind).expect("bind mount");
    let before = below(&f.vault);
    let source = bind.join("inner");
    let o = cmd("reverb-snap")
        .args(["--job", "y", "--source"])
        .arg(&source)
        .arg("--vault")
        .arg(&f.vault)
        .output();
    refused(o.status.code(), &stderr(&o), &source, &f.vault);
    assert!(stderr(&o).contains("inside the vault"), "{}", stderr(&o));
    assert_eq!(below(&f.vault), before, "the vault was modified");
}

#[test]
fn a_build_leaves_out_the_vault_bind_mounted_into_the_source_after_the_job_started() {
    require_root!("bind-mounts the vault into the source");
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    fs::create_dir(f.src.join("m")).expect("mkdir");
    f.first();
    // The vault (source and vault on one filesystem: `one_file_system` does not see it).
    let _mount = MountGuard::new(
        &["--bind", f.vault.to_str().expect("utf-8")],
        &f.src.join("m"),
    )
    .expect("bind mount");
    fs::write(f.src.join("b"), b"b").expect("write");
    let v = f.rescan();
    assert!(!v.is_empty(), "a version for b");
    let restored = f.restore("latest");
    assert_eq!(fs::read(restored.join("b")).expect("b"), b"b");
    assert!(restored.join("m").is_dir(), "the directory itself is kept");
    assert_eq!(
        fs::read_dir(restored.join("m")).expect("m").count(),
        0,
        "the version holds nothing of the vault"
    );
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    let said: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("the vault itself is here"))
        .collect();
    assert_eq!(said.len(), 1, "journaled once: {journal}");
    // A later rescan leaves it out again, and is clean.
    f.check_clean();
}

#[test]
fn run_source_refuses_a_second_job_of_a_source_the_vault_backs_up_already() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    f.first();
    let log = f._tmp.path().join("log");
    let before = below(&f.vault);
    let run = |source: &Path, job: &str| {
        exits(
            &[
                os(Path::new("run")),
                os(Path::new("--source")),
                os(source),
                os(Path::new("--vault")),
                os(&f.vault),
                os(Path::new("--job")),
                os(Path::new(job)),
            ],
            &log,
        )
    };
    // The same source by another path (a symlink to it) is the same source.
    let alias = f._tmp.path().join("alias");
    std::os::unix::fs::symlink(&f.src, &alias).expect("symlink");
    for source in [&f.src, &alias] {
        let (code, said) = run(source, "other");
        assert_eq!(code, Some(2), "{said}");
        assert!(
            said.contains("job `job`") && said.contains("--job job"),
            "names the existing job and the command that goes on with it: {said}"
        );
        assert_eq!(below(&f.vault), before, "nothing written to the vault");
    }

    // Another source into the same vault is a new job.
    let other = f._tmp.path().join("other");
    fs::create_dir(&other).expect("mkdir");
    fs::write(other.join("b"), b"b").expect("write");
    let mut sup = cmd("reverberator")
        .args(["run", "--source"])
        .arg(&other)
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "other"])
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let current = f.vault.join("other").join("current");
    reverb_tests::wait_until(
        Duration::from_secs(60),
        "the other job's first version",
        || current.exists(),
    );
    let pid = nix::unistd::Pid::from_raw(sup.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    assert!(
        sup.wait().expect("wait").success(),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        fs::read(current.join("b")).expect("the other source's file"),
        b"b"
    );
}
