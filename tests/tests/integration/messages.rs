//! What the programs say: one prefix, one line per error, hints only for options the
//! program has, plain words in `versions`, `status` and `diff`, and the SIGHUP note.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reverb_tests::ops::snap_stdin;
use reverb_tests::{Fixture, cmd, stderr, stdout};

#[test]
fn errors_are_one_line_with_one_prefix_and_real_hints() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    f.first();
    // A malformed batch: the error once, not twice.
    let o = snap_stdin(
        &f,
        b"time\tevent\ttype\tpath\tto_path\nnot an event line\n",
        &[],
    )
    .assert_exit(1);
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {lines:?}");
    assert!(!lines[0].contains("reverb-snap: reverb-snap:"), "{lines:?}");
    // An unknown job: reverb-restore has no --source to suggest.
    let o = cmd("reverb-restore")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "nope", "--to"])
        .arg(f._tmp.path().join("d"))
        .assert_exit(2);
    assert!(stderr(&o).contains("unknown job"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("--source"), "{}", stderr(&o));
    // reverb-snap has one: it says so.
    let o = cmd("reverb-snap")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "nope"])
        .assert_exit(2);
    assert!(stderr(&o).contains("--source"), "{}", stderr(&o));
    // A vault without its marker: reverb-retire has no --init.
    let empty = f._tmp.path().join("not-a-vault");
    fs::create_dir(&empty).expect("mkdir");
    let o = cmd("reverb-retire")
        .arg("--vault")
        .arg(&empty)
        .assert_exit(75);
    assert!(!stderr(&o).contains("(use --init"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn versions_status_and_diff_say_what_they_mean() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    fs::write(f.src.join("attr"), b"same data").expect("write");
    f.first();
    let vault = f.vault.to_str().expect("utf-8").to_owned();
    let o = cmd("reverberator")
        .args(["status", "--vault", &vault])
        .assert_success();
    assert!(stdout(&o).contains(", 1 version,"), "{}", stdout(&o));
    let o = cmd("reverberator")
        .args(["versions", "job", "--vault", &vault])
        .assert_success();
    assert!(
        stdout(&o).contains("copied by it") && stdout(&o).contains("on disk of its own"),
        "{}",
        stdout(&o)
    );
    fs::create_dir_all(f.src.join("new/deeper")).expect("mkdir");
    fs::write(f.src.join("new/deeper/file"), b"f").expect("write");
    fs::write(f.src.join("a"), b"content changed").expect("write");
    fs::set_permissions(f.src.join("attr"), fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(!f.rescan().is_empty());
    let o = cmd("reverberator")
        .args(["diff", "job", "1", "2", "--vault", &vault])
        .assert_success();
    let text = stdout(&o);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "+\tnew",
            "+\tnew/deeper",
            "+\tnew/deeper/file",
            "M\ta",
            "a\tattr"
        ],
        "a new directory expanded, content told from attributes"
    );
}

#[test]
fn sighup_without_a_configuration_file_says_so() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    let log = f._tmp.path().join("log");
    let mut sup = cmd("reverberator")
        .args(["run", "--init", "--source"])
        .arg(&f.src)
        .arg("--vault")
        .arg(&f.vault)
        .command()
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let read = || fs::read_to_string(&log).unwrap_or_default();
    let wait = |what: &str, ok: &dyn Fn(&str) -> bool| {
        let end = Instant::now() + Duration::from_secs(30);
        while !ok(&read()) {
            assert!(Instant::now() < end, "timed out: {what}\n{}", read());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("watching", &|l| l.contains(": watching"));
    let pid = nix::unistd::Pid::from_raw(sup.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("kill");
    wait("the SIGHUP note", &|l| {
        l.contains("no configuration file to reload")
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    assert!(sup.wait().expect("wait").success());
    for line in read().lines() {
        assert!(!line.contains('\t'), "no raw TSV in the log: {line:?}");
        let tail = line.trim_start_matches("reverberator: ");
        assert!(!tail.starts_with("reverberator:"), "doubled prefix: {line}");
    }
}
