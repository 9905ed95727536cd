//! Filesystems mounted inside a source (docs/configuration.md `one_file_system`,
//! docs/watch.md#mounts-inside-the-source): by default (`true`, as `rsync -x`) a filesystem
//! mounted below the source is not backed up, and the journal and `status` name the
//! mountpoint; with `false` it is, including one mounted while the job runs, and its
//! unmount is versioned as the deletion of its contents.
//!
//! Real tmpfs mounts inside the source; the oracles are `cp -ax` (stays on one filesystem)
//! and `cp -a`, compared with independent captures. Waits poll for what can be observed
//! (version directories, journal lines), never a fixed time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::watch_support::Watch;
use reverb_common::events::EventKind as K;
use reverb_tests::model::{CaptureOpts, assert_same, capture};
use reverb_tests::{Fixture, MountGuard, bin, cmd, require_root, sh, stdout};

const OPTS: CaptureOpts = CaptureOpts {
    owners: true,
    dir_mtimes: false,
};

/// `cp -a` (with `-x`: `cp -ax`) of `src` into a fresh directory of `f`; returns it.
fn cp(f: &Fixture, src: &Path, one_fs: bool, name: &str) -> PathBuf {
    let dest = f._tmp.path().join(name);
    let flags = if one_fs { "-ax" } else { "-a" };
    sh(&format!(
        "cp {flags} '{}' '{}'",
        src.display(),
        dest.display()
    ));
    dest
}

fn journal(job_dir: &Path) -> String {
    fs::read_to_string(job_dir.join("journal.tsv")).unwrap_or_default()
}

/// The journal lines with `event` about `path`.
fn lines_of(job_dir: &Path, event: &str, path: &str) -> Vec<String> {
    journal(job_dir)
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.get(2) == Some(&event) && f.get(3) == Some(&path)
        })
        .map(str::to_owned)
        .collect()
}

/// A source holding `data/file` and an empty `mnt/` with a tmpfs mounted on it, holding
/// `inside` and `deep/er`.
fn source_with_a_mount(f: &Fixture) -> MountGuard {
    fs::create_dir(f.src.join("data")).expect("mkdir");
    fs::write(f.src.join("data/file"), b"on the source's filesystem").expect("write");
    fs::create_dir(f.src.join("mnt")).expect("mkdir");
    let m = MountGuard::new(
        &["-t", "tmpfs", "-o", "mode=0755", "none"],
        &f.src.join("mnt"),
    )
    .expect("mount tmpfs");
    fs::write(f.src.join("mnt/inside"), b"on the tmpfs").expect("write");
    fs::create_dir(f.src.join("mnt/deep")).expect("mkdir");
    fs::write(f.src.join("mnt/deep/er"), b"deeper").expect("write");
    m
}

#[test]
fn a_filesystem_mounted_below_the_source_is_left_out_by_default() {
    require_root!("mounts a tmpfs inside the source");
    let f = Fixture::new();
    let _m = source_with_a_mount(&f);
    let v1 = f.first();
    assert!(v1.starts_with("V1-"), "{v1}");
    assert_same(
        &capture(&cp(&f, &f.src, true, "oracle-x"), OPTS),
        &capture(&f.restore(&v1), OPTS),
        "the first copy is `cp -ax` of the source",
    );
    assert_eq!(
        lines_of(&f.job_dir(), "mount-left-out", "mnt").len(),
        1,
        "the journal names the mountpoint left out:\n{}",
        journal(&f.job_dir())
    );
    // A change inside the mount is no change of the job; a rescan finds nothing, and does
    // not journal the same mountpoint again.
    fs::write(f.src.join("mnt/inside"), b"changed on the tmpfs").expect("write");
    assert_eq!(f.rescan(), "", "nothing outside the mount changed");
    assert_eq!(lines_of(&f.job_dir(), "mount-left-out", "mnt").len(), 1);
    let o = cmd("reverberator")
        .args(["status", "--vault"])
        .arg(&f.vault)
        .output();
    let said = stdout(&o);
    assert!(
        said.contains("left out") && said.contains("mnt"),
        "status names the mountpoint: {said}"
    );
    // A change beside it is versioned as usual, still without the mount's contents.
    fs::write(f.src.join("data/file"), b"changed").expect("write");
    let v2 = f.rescan();
    assert!(v2.starts_with("V2-"), "{v2}");
    assert_same(
        &capture(&cp(&f, &f.src, true, "oracle-x2"), OPTS),
        &capture(&f.restore(&v2), OPTS),
        "a rescan stops at the mountpoint too",
    );
    f.check_clean();
}

#[test]
fn with_one_file_system_false_a_mounted_filesystem_is_backed_up() {
    require_root!("mounts a tmpfs inside the source");
    let f = Fixture::new();
    let _m = source_with_a_mount(&f);
    let config = f._tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[jobs.job]\nsource = \"{}\"\nvault = \"{}\"\none_file_system = false\n",
            f.src.display(),
            f.vault.display()
        ),
    )
    .expect("config");
    let v1 = cmd("reverb-snap")
        .arg("--config")
        .arg(&config)
        .args(["--job", "job", "--init"])
        .stdout()
        .trim()
        .to_owned();
    assert_same(
        &capture(&cp(&f, &f.src, false, "oracle"), OPTS),
        &capture(&f.restore(&v1), OPTS),
        "the first copy is `cp -a` of the source, the mount's contents included",
    );
    assert!(lines_of(&f.job_dir(), "mount-left-out", "mnt").is_empty());
}

// ---------------------------------------------------------------------------------------
// The watcher.

#[test]
fn reverb_watch_one_file_system_reports_nothing_from_inside_a_mount() {
    require_root!("mounts a tmpfs inside the watched tree");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("watched");
    fs::create_dir_all(root.join("mnt")).expect("mkdir");
    let _m = MountGuard::new(&["-t", "tmpfs", "none"], &root.join("mnt")).expect("mount");
    fs::create_dir(root.join("mnt/sub")).expect("mkdir");
    let mut w = Watch::start(&root, &["--one-file-system"]);
    fs::write(root.join("mnt/sub/hidden"), b"x").expect("write");
    fs::write(root.join("mnt/top"), b"x").expect("write");
    fs::write(root.join("seen"), b"x").expect("write");
    w.wait_event(K::Create, "seen");
    assert_eq!(w.terminate().code(), Some(0));
    let inside: Vec<_> = w
        .seen
        .iter()
        .filter(|e| e.path.starts_with("mnt/"))
        .collect();
    assert!(
        inside.is_empty(),
        "events from inside the mount: {inside:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The supervisor: mounts made while the job runs.

struct Supervisor(Child);

impl Supervisor {
    fn start(config: &Path, runtime: &Path) -> Supervisor {
        let child = Command::new(bin("reverberator"))
            .env("RUNTIME_DIRECTORY", runtime)
            .args(["run", "--init", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn reverberator");
        Supervisor(child)
    }

    fn stop(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.0.try_wait().expect("wait") {
                return s.code();
            }
            assert!(Instant::now() < end, "the supervisor did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            Instant::now() < end,
            "timed out after {secs} s waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The versions index.tsv lists.
fn versions(job_dir: &Path) -> Vec<String> {
    let text = fs::read_to_string(job_dir.join("index.tsv")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(1).map(str::to_owned))
        .collect()
}

/// A job with a source holding `data/file` (and 20 more files) and an empty `mnt/`, run by
/// a supervisor.
struct Running {
    f: Fixture,
    runtime: PathBuf,
    config: PathBuf,
    sup: Option<Supervisor>,
}

impl Running {
    fn start(extra: &str) -> Running {
        let f = Fixture::new();
        fs::create_dir(f.src.join("data")).expect("mkdir");
        fs::write(f.src.join("data/file"), b"one").expect("write");
        // Enough files outside the mount that its unmount does not trip the deletion guard.
        for i in 0..20 {
            fs::write(f.src.join(format!("data/f{i}")), b"x").expect("write");
        }
        fs::create_dir(f.src.join("mnt")).expect("mkdir");
        let config = f._tmp.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "[jobs.job]\nsource = \"{}\"\nvault = \"{}\"\nmin_snapshot_time = \"300ms\"\nmax_snapshot_delay = \"2s\"\n{extra}",
                f.src.display(),
                f.vault.display()
            ),
        )
        .expect("config");
        let runtime = f._tmp.path().join("runtime");
        let sup = Supervisor::start(&config, &runtime);
        let job = f.job_dir();
        wait_for("the first version", 30, || versions(&job).len() == 1);
        wait_for("watching", 30, || {
            journal(&job).contains("\tstart\t\twatching")
        });
        Running {
            f,
            runtime,
            config,
            sup: Some(sup),
        }
    }

    /// The newest version's directory.
    fn newest(&self) -> PathBuf {
        let v = versions(&self.f.job_dir());
        self.f.job_dir().join(v.last().expect("a version"))
    }

    fn status(&self) -> String {
        let o = cmd("reverberator")
            .env("RUNTIME_DIRECTORY", &self.runtime)
            .args(["status", "--config"])
            .arg(&self.config)
            .output();
        stdout(&o)
    }

    fn stop(&mut self) {
        if let Some(s) = self.sup.take() {
            assert_eq!(s.stop(), Some(0));
        }
    }
}

#[test]
fn a_mount_made_while_the_job_runs_is_backed_up_with_one_file_system_false() {
    require_root!("mounts a tmpfs inside the source");
    let mut r = Running::start("one_file_system = false\n");
    let job = r.f.job_dir();
    let m = MountGuard::new(&["-t", "tmpfs", "none"], &r.f.src.join("mnt")).expect("mount");
    for i in 0..5 {
        fs::write(r.f.src.join(format!("mnt/f{i}")), b"on the new mount").expect("write");
    }
    wait_for("a version holding the new mount's files", 60, || {
        r.newest().join("mnt/f4").exists()
    });
    // It is watched now: a change inside it makes a version by itself.
    fs::write(r.f.src.join("mnt/later"), b"written while watched").expect("write");
    wait_for(
        "a version holding a file written into the mount",
        60,
        || r.newest().join("mnt/later").exists(),
    );
    let with_mount = versions(&job).len();
    assert!(
        journal(&job)
            .lines()
            .any(|l| l.contains("\tmount-added\tmnt\t")),
        "the new mount is journaled:\n{}",
        journal(&job)
    );
    // Unmounted: its contents are deleted in the next version.
    sh(&format!("umount '{}'", r.f.src.join("mnt").display()));
    m.forget();
    wait_for("a version without the mount's files", 60, || {
        versions(&job).len() > with_mount && !r.newest().join("mnt/f0").exists()
    });
    assert!(
        r.newest().join("mnt").is_dir(),
        "the mountpoint stays a directory"
    );
    r.stop();
    assert_same(
        &capture(&r.f.src, OPTS),
        &capture(&r.f.restore("latest"), OPTS),
        "the last version is the source",
    );
}

#[test]
fn a_mount_made_while_the_job_runs_is_left_out_and_named_by_default() {
    require_root!("mounts a tmpfs inside the source");
    let mut r = Running::start("");
    let job = r.f.job_dir();
    let m = MountGuard::new(&["-t", "tmpfs", "none"], &r.f.src.join("mnt")).expect("mount");
    fs::write(r.f.src.join("mnt/inside"), b"on the new mount").expect("write");
    wait_for("the journal names the mountpoint left out", 60, || {
        !lines_of(&job, "mount-left-out", "mnt").is_empty()
    });
    let said = r.status();
    assert!(
        said.contains("left out") && said.contains("mnt"),
        "status names the mountpoint: {said}"
    );
    // A change beside the mount is versioned without the mount's contents.
    let before = versions(&job).len();
    fs::write(r.f.src.join("data/file"), b"two").expect("write");
    wait_for("a version of the change beside the mount", 60, || {
        versions(&job).len() > before && r.newest().join("data/file").exists()
    });
    wait_for("the change", 60, || {
        fs::read(r.newest().join("data/file")).ok().as_deref() == Some(&b"two"[..])
    });
    assert!(
        !r.newest().join("mnt/inside").exists(),
        "the mount's contents are not backed up"
    );
    // Unmounted: nothing of it was in the versions, so nothing is deleted; the directory
    // under it is watched again.
    sh(&format!("umount '{}'", r.f.src.join("mnt").display()));
    m.forget();
    fs::write(r.f.src.join("mnt/under"), b"on the source's filesystem").expect("write");
    wait_for(
        "a version of a file under the former mountpoint",
        60,
        || r.newest().join("mnt/under").exists(),
    );
    r.stop();
    assert_same(
        &capture(&r.f.src, OPTS),
        &capture(&r.f.restore("latest"), OPTS),
        "the last version is the source",
    );
}
