//! T8 (docs/benchmarks.md): replication against `rsync -a --delete` of the vault, in the
//! same run, step by step: the first copy, a version of 10 changed files, and a retirement
//! of the oldest version; and the time to replicate a version over a loopback `sshd`
//! against `rsync -a --delete -e ssh` of the vault to the same server.
//!
//! What is counted: the bytes `reverberator replicate` wrote to its receiver (its own
//! `bytes_sent`, records and data) and the file data among them, against the `Total bytes
//! sent` of `rsync --stats` mirroring the whole vault (what a user without replication
//! does). The 10-file version's new data is the size of the 10 files it changed.
//!
//! Invariants: the replica and the rsync mirror see the same vault at every step; this
//! measure runs last, so its changes of the tree touch no other measure's lockstep.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Bench, JOB, slash};
use crate::peers::{Timing, need, timed_input};
use crate::report::{Row, Samples, Unit};
use crate::tree::event_lines;

/// T8's fixed allowance on top of 1.1 times the new data.
const ALLOWANCE: f64 = 64.0 * 1024.0;

/// What one `reverberator replicate --json` said.
struct Sent {
    timing: Timing,
    bytes: u64,
    data: u64,
    versions: usize,
}

fn replicate(b: &Bench, to: &str, extra: &[&str]) -> Result<Sent> {
    let mut c = b.tools.ours("reverberator");
    c.args(["replicate", JOB, "--json", "--vault"])
        .arg(&b.vault)
        .arg("--to")
        .arg(to)
        .args(extra);
    b.cache.prepare()?;
    let (timing, out) = timed_input(&mut c, None)?;
    let mut sent = Sent {
        timing,
        bytes: 0,
        data: 0,
        versions: 0,
    };
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).context("replicate --json")?;
        match v["type"].as_str() {
            Some("replicated") => {
                sent.versions += 1;
                sent.data += v["data_bytes"].as_u64().unwrap_or(0);
            }
            Some("replica") => sent.bytes = v["bytes_sent"].as_u64().unwrap_or(0),
            _ => {}
        }
    }
    Ok(sent)
}

/// `rsync -a --delete --stats [-e ssh…] <vault>/ <dest>/`: its time and `Total bytes sent`.
fn rsync_mirror(b: &Bench, rsync: &Path, dest: &str, ssh: Option<&str>) -> Result<(Timing, u64)> {
    let mut c = Command::new(rsync);
    c.args(["-a", "--delete", "--stats"]);
    if let Some(e) = ssh {
        c.arg("-e").arg(e);
    }
    c.arg(slash(&b.vault)).arg(dest);
    b.cache.prepare()?;
    let (t, out) = timed_input(&mut c, None)?;
    let sent = out
        .lines()
        .find_map(|l| l.strip_prefix("Total bytes sent:"))
        .map(|n| n.trim().replace([',', '.'], ""))
        .and_then(|n| n.parse::<u64>().ok())
        .context("rsync --stats printed no `Total bytes sent`")?;
    Ok((t, sent))
}

/// A 10-file version (event-driven); the bytes of the files it changed.
fn ten_file_version(b: &mut Bench) -> Result<u64> {
    let paths = b.tree.modify(10, &mut b.rng)?;
    let mut new_data = 0;
    for p in &paths {
        new_data += std::fs::metadata(b.tree.root.join(p))?.len();
    }
    let (_, out) = timed_input(&mut b.snap_events(), Some(event_lines(&paths).as_bytes()))?;
    if out.trim().is_empty() {
        bail!("reverb-snap made no version for 10 changed files");
    }
    Ok(new_data)
}

fn bytes_row(
    measure: &str,
    ours: u64,
    peer_name: &str,
    peer: Result<u64, String>,
    target: Option<f64>,
) -> Row {
    Row::new(
        measure,
        Unit::Bytes,
        vec![ours as f64],
        peer_name,
        peer.map(|p| vec![p as f64]),
        target,
    )
}

/// The replication rows (T8).
pub fn replication(b: &mut Bench) -> Result<()> {
    eprintln!("replication (T8)");
    let replica = b.scratch.join("replica");
    let mirror = b.scratch.join("vault-rsync");
    let rsync = need(&b.tools.rsync, "rsync").map(Path::to_path_buf);
    let mirror_dest = format!("{}/", mirror.display());
    let to = replica.to_string_lossy().into_owned();
    // The first copy: every retained version, against a mirror of the whole vault.
    let first = replicate(b, &to, &["--init"])?;
    let peer = rsync
        .as_deref()
        .map_err(Clone::clone)
        .and_then(|r| rsync_mirror(b, r, &mirror_dest, None).map_err(|e| e.to_string()));
    b.push(
        bytes_row(
            "replication: bytes sent, first copy",
            first.bytes,
            "rsync -a --delete of the vault",
            peer.as_ref().map(|p| p.1).map_err(Clone::clone),
            None,
        )
        .note(format!("{} versions", first.versions)),
    );
    // A version of 10 changed files: its new data, and what crosses.
    let new_data = ten_file_version(b)?;
    let after = replicate(b, &to, &[])?;
    let limit = 1.1 * new_data as f64 + ALLOWANCE;
    b.push(
        Row::new(
            "replication: bytes sent after a 10-file version",
            Unit::Bytes,
            vec![after.bytes as f64],
            "1.1 × its new data + 64 KiB",
            Ok::<_, String>(vec![limit]),
            Some(1.0),
        )
        .note(format!(
            "new data {new_data} bytes; file data sent {}",
            after.data
        )),
    );
    let peer = rsync
        .as_deref()
        .map_err(Clone::clone)
        .and_then(|r| rsync_mirror(b, r, &mirror_dest, None).map_err(|e| e.to_string()));
    b.push(bytes_row(
        "replication: bytes sent after a 10-file version, vs rsync",
        after.bytes,
        "rsync -a --delete of the vault",
        peer.map(|p| p.1),
        None,
    ));
    // The oldest version retired here: nothing but records cross, no file data.
    let kept = b.versions_on_disk()?.len().saturating_sub(1).max(1);
    let mut retire = b.tools.ours("reverb-retire");
    retire
        .arg("--vault")
        .arg(&b.vault)
        .args(["--job", JOB, "--keep", &kept.to_string()]);
    timed_input(&mut retire, None)?;
    let retired = replicate(b, &to, &[])?;
    let peer = rsync
        .as_deref()
        .map_err(Clone::clone)
        .and_then(|r| rsync_mirror(b, r, &mirror_dest, None).map_err(|e| e.to_string()));
    b.push(
        bytes_row(
            "replication: file data sent after a retirement",
            retired.data,
            "rsync -a --delete of the vault",
            peer.as_ref().map(|p| p.1).map_err(Clone::clone),
            Some(0.0),
        )
        .note(format!("{} bytes sent in all", retired.bytes)),
    );
    b.push(bytes_row(
        "replication: bytes sent after a retirement",
        retired.bytes,
        "rsync -a --delete of the vault",
        peer.map(|p| p.1),
        None,
    ));
    // The time of a 10-file version over a loopback sshd, against rsync over the same.
    match Sshd::start(&b.scratch) {
        Err(why) => b.push(Row::new(
            "replication: time of a 10-file version over ssh (loopback)",
            Unit::Seconds,
            Samples::default(),
            "rsync -a --delete -e ssh of the vault",
            Err::<Samples, _>(why),
            None,
        )),
        Ok(sshd) => {
            let ssh = sshd.ssh_command();
            let to_ssh = format!("ssh://root@127.0.0.1:{}{}", sshd.port, replica.display());
            let receive = b.tools.bin_dir.join("reverb-receive");
            let receive = receive.to_string_lossy().into_owned();
            let mut ours = Samples::default();
            let mut peer = Samples::default();
            let mut peer_err = None;
            for _ in 0..b.reps {
                ten_file_version(b)?;
                let sent = replicate(
                    b,
                    &to_ssh,
                    &["--ssh", &sshd.wrapper_str(), "--receive-command", &receive],
                )?;
                ours.push(sent.timing);
                match rsync.as_deref() {
                    Ok(r) => {
                        let dest = format!("root@127.0.0.1:{}/", mirror.display());
                        let (t, _) = rsync_mirror(b, r, &dest, Some(&ssh))?;
                        peer.push(t);
                    }
                    Err(e) => peer_err = Some(e.clone()),
                }
            }
            b.push(Row::new(
                "replication: time of a 10-file version over ssh (loopback)",
                Unit::Seconds,
                ours,
                "rsync -a --delete -e ssh of the vault",
                match peer_err {
                    Some(e) => Err(e),
                    None => Ok(peer),
                },
                None,
            ));
        }
    }
    Ok(())
}

/// A throw-away `sshd` on 127.0.0.1 (root, host and user keys made here), killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
    wrapper: PathBuf,
}

impl Sshd {
    fn start(scratch: &Path) -> Result<Sshd, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root to run a loopback sshd".into());
        }
        let sshd = [
            "/usr/sbin/sshd",
            "/usr/bin/sshd",
            "/run/current-system/sw/bin/sshd",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("sshd not found (openssh-server)")?;
        let dir = scratch.join("sshd");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::create_dir_all("/run/sshd").map_err(|e| e.to_string())?;
        let (host, key) = (dir.join("host_key"), dir.join("user_key"));
        for k in [&host, &key] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k)
                .status()
                .map_err(|e| format!("ssh-keygen: {e}"))?;
            if !ok.success() {
                return Err("ssh-keygen failed".into());
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPermitRootLogin prohibit-password\n\
                 AuthorizedKeysFile {}.pub\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n\
                 PidFile none\nLogLevel ERROR\n",
                host.display(),
                key.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut child = Command::new(&sshd)
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("sshd: {e}"))?;
        let end = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > end || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                return Err("sshd did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let wrapper = dir.join("ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p {port} \"$@\"\n",
                key.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        Ok(Sshd {
            child,
            port,
            key,
            wrapper,
        })
    }

    fn wrapper_str(&self) -> String {
        self.wrapper.to_string_lossy().into_owned()
    }

    /// The `-e` of rsync: the same client, key and options.
    fn ssh_command(&self) -> String {
        format!(
            "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p {}",
            self.key.display(),
            self.port
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
