//! `reverb-watch` at the kernel's inotify limits. These change global sysctls, so they run
//! as one test function, alone (`exclusive_kernel`), restoring every value with a guard
//! (even on panic). Needs root; skipped otherwise.

use std::path::{Path, PathBuf};

use crate::watch_support::Watch;
use nix::sys::signal::Signal;
use reverb_common::events::EventKind as K;
use reverb_tests::cmd;

/// Sets a sysctl under /proc/sys and puts the old value back on drop.
struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    fn set(name: &str, value: &str) -> Sysctl {
        let path = Path::new("/proc/sys").join(name.replace('.', "/"));
        let old = std::fs::read_to_string(&path).expect("read sysctl");
        std::fs::write(&path, value).expect("write sysctl");
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, self.old.trim()) {
            eprintln!("could not restore {}: {e}", self.path.display());
        }
    }
}

#[test]
fn inotify_limits() {
    reverb_tests::require_root!("changes fs.inotify sysctls");
    // The limits are the whole machine's: no other test of this binary may run a watcher
    // (or anything else) while they are lowered.
    let _alone = reverb_tests::exclusive_kernel();
    queue_overflow_prints_overflow_and_keeps_watching();
    watch_limit_is_a_clear_error();
    watch_limit_while_running_is_overflow_then_error();
    instance_limit_is_a_clear_error();
    the_supervisor_says_it_rescans_between_rescans();
}

/// Without enough watches the supervisor falls back to periodic rescans, and `status` says
/// so between them (`watching (rescanning every …: inotify watch limit N reached …)`, with
/// the limit in force), not `copying` left over from the last rescan.
fn the_supervisor_says_it_rescans_between_rescans() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    for i in 0..40 {
        std::fs::create_dir_all(src.join(format!("d{i}/sub"))).expect("mkdir");
    }
    std::fs::write(src.join("f"), b"x").expect("write");
    let runtime = tmp.path().join("runtime");
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[jobs.lim]\nsource = \"{}\"\nvault = \"{}\"\nmin_snapshot_time = \"100ms\"\nmax_snapshot_delay = \"10s\"\n",
            src.display(),
            tmp.path().join("vault").display()
        ),
    )
    .expect("config");
    let status = || {
        let o = cmd("reverberator")
            .env("RUNTIME_DIRECTORY", &runtime)
            .args(["status", "--json", "--config"])
            .arg(&config)
            .output();
        let line = String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("null")
            .to_owned();
        serde_json::from_str::<serde_json::Value>(&line).expect("json")
    };
    let _guard = Sysctl::set("fs.inotify.max_user_watches", "20");
    let mut sup = std::process::Command::new(reverb_tests::bin("reverberator"))
        .env("RUNTIME_DIRECTORY", &runtime)
        .args(["run", "--init", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn reverberator");
    let end = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let st = status();
        if st["versions"].as_u64() >= Some(1) && st["state"] == "watching" {
            break st;
        }
        if Instant::now() > end {
            let _ = sup.kill();
            panic!("no `watching` after the first rescan within 60 s: {st}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup.id() as i32), Signal::SIGTERM);
    let _ = sup.wait();
    let detail = seen["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("rescanning every 10s: inotify watch limit 20 reached")
            && detail.contains("fs.inotify.max_user_watches"),
        "{seen}"
    );
}

/// The limit hit for a directory created later: `overflow` (the reader must rescan), then
/// exit 3 (an inotify limit) with the same message.
fn watch_limit_while_running_is_overflow_then_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut w = Watch::start(tmp.path(), &[]);
    let status = {
        let _guard = Sysctl::set("fs.inotify.max_user_watches", "1");
        std::fs::create_dir(tmp.path().join("new")).expect("mkdir");
        w.wait_event(K::Create, "new");
        w.wait_for("overflow", |e| e.kind == K::Overflow);
        w.wait_exit()
    };
    assert_eq!(status.code(), Some(3));
    let err = w.stderr_text();
    assert!(err.contains("fs.inotify.max_user_watches"), "{err}");
    assert_eq!(
        w.seen.last().map(|e| e.kind),
        Some(K::Flush),
        "{}",
        w.dump()
    );
}

/// No inotify instance left for this user: exit 3 naming fs.inotify.max_user_instances.
fn instance_limit_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = {
        let _guard = Sysctl::set("fs.inotify.max_user_instances", "0");
        cmd("reverb-watch").arg(tmp.path()).output()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("fs.inotify.max_user_instances"), "{err}");
}

/// A tiny queue and a stopped reader: the kernel must drop events, and `reverb-watch` says
/// so with `overflow`, then carries on (including directories created while events were
/// lost).
fn queue_overflow_prints_overflow_and_keeps_watching() {
    let tmp = tempfile::tempdir().expect("tmp");
    let w = {
        // The queue size is copied when the inotify instance is created.
        let _guard = Sysctl::set("fs.inotify.max_queued_events", "16");
        Watch::start(tmp.path(), &["--quiet-period", "100ms"])
    };
    let mut w = w;
    w.signal(Signal::SIGSTOP);
    for i in 0..200 {
        std::fs::write(tmp.path().join(format!("f{i}")), b"x").expect("write");
    }
    std::fs::create_dir(tmp.path().join("lost-dir")).expect("mkdir");
    w.signal(Signal::SIGCONT);
    w.wait_for("overflow", |e| e.kind == K::Overflow);
    w.wait_for("flush after the overflow", |e| e.kind == K::Flush);
    assert_eq!(
        w.count(K::Overflow),
        1,
        "one overflow per burst:\n{}",
        w.dump()
    );
    // A directory whose create was lost is watched after the overflow.
    std::fs::write(tmp.path().join("lost-dir/after"), b"x").expect("write");
    w.wait_event(K::Create, "lost-dir/after");
    assert_eq!(w.terminate().code(), Some(0));
}

/// Too few watches for the tree: exit 3 with the sysctl to raise.
fn watch_limit_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    for i in 0..40 {
        std::fs::create_dir_all(tmp.path().join(format!("d{i}/sub"))).expect("mkdir");
    }
    let out = {
        let _guard = Sysctl::set("fs.inotify.max_user_watches", "20");
        cmd("reverb-watch").arg(tmp.path()).output()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        out.stdout.is_empty(),
        "no header when the watch could not be set up"
    );
    assert!(err.contains("inotify watch limit reached after"), "{err}");
    assert!(err.contains("of 81 directories"), "{err}");
    assert!(err.contains("sysctl fs.inotify.max_user_watches="), "{err}");
}
