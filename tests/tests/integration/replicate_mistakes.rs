//! Replication over a real `sshd` set up wrong, the ways a person gets it wrong following
//! docs/install.md ("A second copy on another host"): `reverb-receive` not on the remote
//! PATH, an unknown host key, a key the host does not accept, a destination path that is
//! not the one the host's forced command pins. Each must fail naming the culprit (in the
//! sender's own error line and in what `status` shows, replicas.tsv's `error`), and leave
//! the replica exact and untouched (compared with the source vault, and its version list).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use reverb_tests::ops::pattern;
use reverb_tests::replica::{assert_replica_exact, replicate, replicate_ok, versions};
use reverb_tests::sshd::Sshd;
use reverb_tests::{Fixture, skip, stderr};

/// The server, a source vault with two versions, and its replica over ssh (made and
/// exact).
struct Setup {
    sshd: Sshd,
    f: Fixture,
    replica: PathBuf,
    /// `ssh://root@127.0.0.1:PORT/<replica>`.
    dest: String,
    /// An ssh wrapper that trusts the test server's host key.
    client: PathBuf,
}

fn setup() -> Option<Setup> {
    let sshd = match Sshd::start() {
        Ok(s) => s,
        Err(why) => {
            skip(&format!("no sshd for the replication tests: {why}"));
            return None;
        }
    };
    let f = Fixture::new();
    fs::create_dir_all(f.src.join("docs")).expect("mkdir");
    fs::write(f.src.join("docs/a.txt"), pattern(1, 5000)).expect("write");
    fs::write(f.src.join("b.bin"), pattern(2, 70_000)).expect("write");
    f.first();
    let replica = f._tmp.path().join("remote-vault");
    let dest = format!("ssh://root@127.0.0.1:{}{}", sshd.port, replica.display());
    let client = sshd.client("ssh", "");
    let s = Setup {
        sshd,
        f,
        replica,
        dest,
        client,
    };
    let init = s.flags(&s.client, &s.sshd.key, &receiver(), &["--init"]);
    replicate_ok(&s.f, &s.dest, &args(&init));
    fs::write(s.f.src.join("docs/a.txt"), pattern(3, 6000)).expect("write");
    assert!(!s.f.rescan().is_empty(), "a second version");
    Some(s)
}

fn receiver() -> String {
    text(&reverb_tests::bin("reverb-receive"))
}

fn text(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl Setup {
    fn flags(&self, ssh: &Path, key: &Path, receive: &str, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            "--ssh".to_owned(),
            text(ssh),
            "--identity".into(),
            text(key),
            "--receive-command".into(),
            receive.to_owned(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// Replicates to `dest` with these flags, expecting a failure; returns the sender's own
    /// error line (`reverberator: replicating …`), not what ssh printed on the way.
    fn fails(&self, dest: &str, flags: &[String]) -> String {
        let before = versions(&self.replica, &self.f.job);
        let o = replicate(&self.f, dest, &args(flags)).output();
        assert!(!o.status.success(), "it failed");
        let err = stderr(&o);
        let line = err
            .lines()
            .rfind(|l| l.starts_with("reverberator: "))
            .unwrap_or_else(|| panic!("no error line of its own:\n{err}"))
            .to_owned();
        // The replica is untouched: the same versions, still exact.
        assert_eq!(versions(&self.replica, &self.f.job), before);
        assert_eq!(
            assert_replica_exact_prefix(&self.f, &self.replica),
            before.len()
        );
        line
    }

    /// What `status` shows as the destination's last error (replicas.tsv's `error`).
    fn recorded_error(&self, dest: &str) -> String {
        let o = reverb_tests::cmd("reverberator")
            .args(["status", "--json", "--vault"])
            .arg(&self.f.vault)
            .output();
        let status: serde_json::Value =
            serde_json::from_str(reverb_tests::stdout(&o).lines().next().unwrap_or("null"))
                .expect("status JSON");
        let lag = status["replica_lag"]
            .as_array()
            .unwrap_or_else(|| panic!("no replica_lag: {status}"));
        lag.iter()
            .find(|r| r["to"] == dest)
            .and_then(|r| r["error"].as_str())
            .unwrap_or_else(|| panic!("no error recorded for {dest}: {status}"))
            .to_owned()
    }
}

/// Every version the replica holds is exact (the replica may lag the source by the
/// version the failed run did not send).
fn assert_replica_exact_prefix(f: &Fixture, replica: &Path) -> usize {
    let held = versions(replica, &f.job);
    for dir in &held {
        reverb_tests::replica::assert_same_version(f, replica, dir);
    }
    held.len()
}

#[test]
fn a_receiver_not_on_the_remote_path_is_named() {
    let Some(s) = setup() else { return };
    let flags = s.flags(&s.client, &s.sshd.key, "reverb-receive-nowhere", &[]);
    let line = s.fails(&s.dest, &flags);
    for what in ["reverb-receive-nowhere", "not found", "PATH"] {
        assert!(line.contains(what), "{what} missing: {line}");
    }
    let recorded = s.recorded_error(&s.dest);
    assert!(recorded.contains("not found"), "{recorded}");
}

#[test]
fn an_unknown_host_key_and_a_refused_key_are_named() {
    let Some(s) = setup() else { return };
    // A client that knows no host key (a first login never made).
    let strict = s.f._tmp.path().join("ssh-strict");
    fs::write(
        &strict,
        "#!/bin/sh\nexec ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/dev/null \
         -o LogLevel=ERROR \"$@\"\n",
    )
    .expect("write");
    fs::set_permissions(&strict, fs::Permissions::from_mode(0o755)).expect("chmod");
    let flags = s.flags(&strict, &s.sshd.key, &receiver(), &[]);
    let line = s.fails(&s.dest, &flags);
    assert!(line.contains("Host key verification failed"), "{line}");
    assert!(
        s.recorded_error(&s.dest)
            .contains("Host key verification failed")
    );
    // A key the host does not accept.
    let other = s.f._tmp.path().join("other_key");
    let o = reverb_tests::TestCommand::program("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output();
    assert!(o.status.success(), "ssh-keygen");
    let flags = s.flags(&s.client, &other, &receiver(), &[]);
    let line = s.fails(&s.dest, &flags);
    assert!(line.contains("Permission denied (publickey)"), "{line}");
    // A key file that is not there: ssh says which.
    let missing = s.f._tmp.path().join("no_such_key");
    let flags = s.flags(&s.client, &missing, &receiver(), &[]);
    let line = s.fails(&s.dest, &flags);
    assert!(line.contains("no_such_key"), "{line}");
    // Right again: it catches up.
    let flags = s.flags(&s.client, &s.sshd.key, &receiver(), &[]);
    replicate_ok(&s.f, &s.dest, &args(&flags));
    assert_eq!(assert_replica_exact(&s.f, &s.replica), 2);
}

#[test]
fn a_path_other_than_the_forced_commands_vault_is_refused() {
    let Some(s) = setup() else { return };
    // The host pins the key to the replica vault, as docs/install.md does.
    s.sshd.pin_command(&format!(
        "{} --vault {} --job {}",
        receiver(),
        s.replica.display(),
        s.f.job
    ));
    let wrong = s.f._tmp.path().join("typo-vault");
    let wrong_dest = format!("ssh://root@127.0.0.1:{}{}", s.sshd.port, wrong.display());
    let flags = s.flags(&s.client, &s.sshd.key, &receiver(), &[]);
    let line = s.fails(&wrong_dest, &flags);
    for what in [text(&wrong), text(&s.replica)] {
        assert!(line.contains(&what), "{what} missing: {line}");
    }
    assert!(!wrong.exists(), "nothing made at the wrong path");
    assert!(s.recorded_error(&wrong_dest).contains(&text(&s.replica)));
    // The path it pins works (a trailing slash is the same directory).
    replicate_ok(&s.f, &format!("{}/", s.dest), &args(&flags));
    assert_eq!(assert_replica_exact(&s.f, &s.replica), 2);
}
