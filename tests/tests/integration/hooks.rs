//! Hooks (docs/configuration.md#hooks) run by the real supervisor: `on_version`,
//! `on_failure`, `on_recovery` with their environment, recorded by a script; `ping_url`
//! pings recorded by an HTTP listener on 127.0.0.1; a hook that fails or hangs, and a
//! ping nobody answers, are journaled and the job goes on.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reverb_tests::{bin, cmd, wait_until};

/// A supervisor, killed on drop.
struct Supervisor(Child);

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path, runtime: &Path) -> Supervisor {
    Supervisor(
        Command::new(bin("reverberator"))
            .env("RUNTIME_DIRECTORY", runtime)
            .args(["run", "--init", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn reverberator"),
    )
}

/// An HTTP listener on 127.0.0.1 that answers 200 and records each request line.
struct PingRecorder {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl PingRecorder {
    fn start() -> PingRecorder {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/ping/abc", l.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut line = String::new();
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let _ = r.read_line(&mut line);
                // Read the headers to their end, then answer.
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                record.lock().expect("lock").push(line.trim().to_owned());
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                );
            }
        });
        PingRecorder { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A hook script that appends `event job version state message` (TAB-separated) to
/// `record`.
fn recorder_script(dir: &Path, record: &Path) -> PathBuf {
    let script = dir.join("hook.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\t%s\\t%s\\t%s\\t%s\\n' \"$1\" \"$REVERB_JOB\" \"$REVERB_VERSION\" \"$REVERB_STATE\" \"$REVERB_MESSAGE\" >> '{}'\n",
            record.display()
        ),
    )
    .expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn lines(path: &Path) -> Vec<Vec<String>> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn versions(job_dir: &Path) -> usize {
    fs::read_to_string(job_dir.join("index.tsv"))
        .map(|t| t.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

#[test]
fn hooks_see_versions_failures_and_recovery_and_pings_are_sent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    for i in 0..10 {
        fs::write(src.join(format!("f{i}")), b"x").expect("write");
    }
    let vault = tmp.path().join("vault");
    let record = tmp.path().join("hooks.tsv");
    let script = recorder_script(tmp.path(), &record);
    let pings = PingRecorder::start();
    let config = tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[jobs.h]\nsource = \"{src}\"\nvault = \"{vault}\"\nmin_snapshot_time = \"300ms\"\nmax_snapshot_delay = \"2s\"\n\
             on_version = [\"{s}\", \"version\"]\non_failure = [\"{s}\", \"failure\"]\n\
             on_recovery = \"'{s}' recovery\"\nping_url = \"{url}\"\nhook_timeout = \"10s\"\n",
            src = src.display(),
            vault = vault.display(),
            s = script.display(),
            url = pings.url
        ),
    )
    .expect("config");
    let runtime = tmp.path().join("runtime");
    let sup = start(&config, &runtime);
    let job_dir = vault.join("h");
    // The first version: on_version with its directory, and a ping.
    wait_until(Duration::from_secs(60), "the first version's hook", || {
        !lines(&record).is_empty()
    });
    let first = &lines(&record)[0];
    let v1 = fs::read_link(job_dir.join("current")).expect("current");
    assert_eq!(
        first,
        &[
            "version".to_owned(),
            "h".into(),
            v1.display().to_string(),
            "watching".into(),
            format!("version {}", v1.display())
        ],
        "{first:?}"
    );
    wait_until(Duration::from_secs(30), "the version's ping", || {
        pings.seen().iter().any(|l| l == "GET /ping/abc HTTP/1.1")
    });
    // A deletion-guard refusal (the catch-up rescan after files went away while no
    // supervisor ran): on_failure with the error, and a /fail ping.
    drop(sup);
    for i in 0..9 {
        fs::remove_file(src.join(format!("f{i}"))).expect("rm");
    }
    let sup = start(&config, &runtime);
    wait_until(Duration::from_secs(60), "the failure's hook", || {
        lines(&record).iter().any(|l| l[0] == "failure")
    });
    let failure = lines(&record)
        .into_iter()
        .find(|l| l[0] == "failure")
        .expect("failure");
    assert_eq!((failure[1].as_str(), failure[3].as_str()), ("h", "failing"));
    assert!(failure[4].contains("max_delete_ratio"), "{failure:?}");
    wait_until(Duration::from_secs(30), "the failure's ping", || {
        pings
            .seen()
            .iter()
            .any(|l| l == "GET /ping/abc/fail HTTP/1.1")
    });
    // Retries of the same failure do not call the hook again; resolving it recovers.
    cmd("reverberator")
        .args(["snap", "h", "--force", "--config"])
        .arg(&config)
        .env("RUNTIME_DIRECTORY", &runtime)
        .assert_success();
    wait_until(Duration::from_secs(60), "the recovery's hook", || {
        lines(&record).iter().any(|l| l[0] == "recovery")
    });
    let all = lines(&record);
    assert_eq!(
        all.iter().filter(|l| l[0] == "failure").count(),
        1,
        "one failure, one call: {all:?}"
    );
    let recovery = all.iter().find(|l| l[0] == "recovery").expect("recovery");
    assert_eq!(recovery[3], "watching");
    assert!(recovery[4].contains("max_delete_ratio"), "{recovery:?}");
    drop(sup);
    let journal = fs::read_to_string(job_dir.join("journal.tsv")).expect("journal");
    assert!(!journal.contains("\thook\t"), "no hook failed:\n{journal}");
}

#[test]
fn a_failing_or_hanging_hook_and_an_unanswered_ping_are_journaled_and_the_job_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("a"), b"1").expect("write");
    let vault = tmp.path().join("vault");
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let config = tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[jobs.slow]\nsource = \"{}\"\nvault = \"{}\"\nmin_snapshot_time = \"200ms\"\nmax_snapshot_delay = \"1s\"\n\
             on_version = \"sh -c 'echo going to sleep >&2; sleep 30'\"\nhook_timeout = \"1s\"\n\
             ping_url = \"http://{closed}/ping\"\n\
             [jobs.bad]\nsource = \"{}\"\nvault = \"{}\"\nmin_snapshot_time = \"200ms\"\nmax_snapshot_delay = \"1s\"\n\
             on_version = [\"sh\", \"-c\", \"echo no luck >&2; exit 3\"]\n\
             [jobs.missing]\nsource = \"{}\"\nvault = \"{}\"\nmin_snapshot_time = \"200ms\"\nmax_snapshot_delay = \"1s\"\n\
             on_version = [\"/nonexistent/hook\"]\n",
            src.display(),
            vault.display(),
            src.display(),
            tmp.path().join("vault2").display(),
            src.display(),
            tmp.path().join("vault3").display(),
        ),
    )
    .expect("config");
    let runtime = tmp.path().join("runtime");
    let _sup = start(&config, &runtime);
    let journal = |dir: &Path| fs::read_to_string(dir.join("journal.tsv")).unwrap_or_default();
    let slow = vault.join("slow");
    let bad = tmp.path().join("vault2/bad");
    let missing = tmp.path().join("vault3/missing");
    wait_until(
        Duration::from_secs(60),
        "the hanging hook's timeout",
        || journal(&slow).contains("did not finish within hook_timeout"),
    );
    wait_until(Duration::from_secs(60), "the unanswered ping", || {
        journal(&slow).contains("\thook\t\tping_url: GET http://")
    });
    wait_until(Duration::from_secs(60), "the failing hook", || {
        journal(&bad).contains("no luck")
    });
    let line = journal(&bad)
        .lines()
        .find(|l| l.contains("\thook\t"))
        .map(str::to_owned)
        .expect("a hook line");
    assert!(
        line.contains(
            "on_version: `sh -c echo no luck >&2; exit 3` failed (exit status: 3): no luck"
        ),
        "{line}"
    );
    wait_until(Duration::from_secs(60), "the missing hook", || {
        journal(&missing).contains("on_version: `/nonexistent/hook` cannot start")
    });
    // The jobs went on: a change makes the next versions.
    let before = (versions(&slow), versions(&bad));
    fs::write(src.join("a"), b"2").expect("write");
    wait_until(Duration::from_secs(60), "the next versions", || {
        versions(&slow) > before.0 && versions(&bad) > before.1
    });
}
