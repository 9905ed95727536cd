//! A throw-away SSH server on 127.0.0.1 and sshfs mounts through it: the network vault of
//! the tests (docs/filesystems.md), reusable by any test that needs a remote filesystem.
//!
//! [`Sshd::start`] makes a host key and a user key with `ssh-keygen` in a temp dir, writes
//! an `sshd_config` (`ListenAddress 127.0.0.1` on a free port, root login by that key only,
//! `UsePAM no`, `StrictModes no`, the internal SFTP server) and runs `sshd -D -f` on it,
//! waiting until the port accepts a connection (never a fixed sleep). [`Sshfs::mount`]
//! mounts a directory of that server with `sshfs` as root@127.0.0.1.
//!
//! Invariants: the server listens on the loopback only and accepts only the key made here;
//! it is killed (by its own pid) and reaped on drop, and an [`Sshfs`] mount is unmounted
//! (lazily, so a busy mount never hangs a test) on drop. `Err(reason)` from either means
//! this machine cannot (not root, a program missing): the caller skips.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{have, is_root, stderr};

/// A running `sshd` for the tests.
pub struct Sshd {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The private key that logs in as root.
    pub key: PathBuf,
    /// Its log (`sshd -E`), shown when a mount fails.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where `sshd` is, as an absolute path (sshd re-executes itself and refuses a relative
/// one): on PATH, or in `/usr/sbin` (not on every user's PATH).
fn sshd_program() -> Option<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", "command -v sshd"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_absolute());
    on_path.or_else(|| {
        let sbin = Path::new("/usr/sbin/sshd");
        sbin.is_file().then(|| sbin.to_path_buf())
    })
}

/// A port nobody listens on now (the kernel's pick; sshd binds it right after).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn keygen(path: &Path) -> Result<(), String> {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .map_err(|e| format!("ssh-keygen: {e}"))?;
    if !o.status.success() {
        return Err(format!("ssh-keygen failed: {}", stderr(&o)));
    }
    Ok(())
}

impl Sshd {
    /// Starts a server (see the module docs). `Err(reason)` when this machine cannot.
    pub fn start() -> Result<Sshd, String> {
        if !is_root() {
            return Err("needs root to run sshd and log in as root".into());
        }
        let program = sshd_program().ok_or("sshd is not installed (openssh-server)")?;
        for p in ["ssh-keygen", "ssh", "sshfs"] {
            if !have(p) {
                return Err(format!("{p} is not installed"));
            }
        }
        // Privilege separation needs its empty directory.
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let host_key = dir.path().join("host_key");
        let key = dir.path().join("user_key");
        keygen(&host_key)?;
        keygen(&key)?;
        let log = dir.path().join("sshd.log");
        let mut last = String::new();
        // The port is free when picked, but could be taken before sshd binds it: try again.
        for _ in 0..3 {
            let port = free_port()?;
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\n\
                     PermitRootLogin prohibit-password\nAuthorizedKeysFile {}.pub\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     UsePAM no\nStrictModes no\nPidFile none\n\
                     Subsystem sftp internal-sftp\nLogLevel ERROR\n",
                    host_key.display(),
                    key.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let mut child = Command::new(&program)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
            match wait_for_port(&mut child, port) {
                Ok(()) => {
                    return Ok(Sshd {
                        child,
                        port,
                        key,
                        log,
                        _dir: dir,
                    });
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!(
                        "{why}; sshd log: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        Err(format!("sshd did not start: {last}"))
    }

    /// Pins the test key to `command` (an `authorized_keys` forced command with
    /// `restrict`, as docs/install.md has a replica host do); sshd reads the file anew at
    /// each login.
    pub fn pin_command(&self, command: &str) {
        let public = self.key.with_extension("pub");
        let key = std::fs::read_to_string(&public).expect("read the public key");
        let key = key.lines().last().unwrap_or_default();
        // A key already pinned: keep only the key itself.
        let key = key.rsplit_once(",restrict ").map_or(key, |(_, k)| k);
        std::fs::write(&public, format!("command=\"{command}\",restrict {key}\n"))
            .expect("write the authorized key");
    }

    /// The sshfs options that log in to this server as root with its key.
    pub fn sshfs_options(&self) -> String {
        format!(
            "IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,port={},\
             BatchMode=yes",
            self.key.display(),
            self.port
        )
    }
}

/// Waits until `port` accepts a connection, or the server exits, or 20 s pass.
fn wait_for_port(child: &mut Child, port: u16) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited ({status})"));
        }
        if TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!("port {port} never accepted a connection"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of an [`Sshd`]'s machine mounted with sshfs; unmounted on drop.
pub struct Sshfs {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The directory on the server's side (the same machine: the tests check it directly).
    pub remote: PathBuf,
}

impl Sshfs {
    /// Mounts `remote` (an existing directory) of `sshd`'s machine at `mountpoint`
    /// (created when missing).
    pub fn mount(sshd: &Sshd, remote: &Path, mountpoint: &Path) -> Result<Sshfs, String> {
        std::fs::create_dir_all(mountpoint).map_err(|e| e.to_string())?;
        let o = Command::new("sshfs")
            .arg("-o")
            .arg(sshd.sshfs_options())
            .arg(format!("root@127.0.0.1:{}", remote.display()))
            .arg(mountpoint)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("sshfs: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "sshfs failed: {}; sshd log: {}",
                stderr(&o),
                std::fs::read_to_string(&sshd.log).unwrap_or_default()
            ));
        }
        Ok(Sshfs {
            mountpoint: mountpoint.to_path_buf(),
            remote: remote.to_path_buf(),
        })
    }
}

impl Drop for Sshfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
    }
}

impl Sshd {
    /// An `ssh` wrapper (a script in the server's temp dir) that trusts this server's
    /// throw-away host key without a known_hosts file, for programs that run `ssh`
    /// themselves (`reverberator replicate --ssh`); `before` is shell text put before the
    /// `ssh` (e.g. a pipe that cuts the connection after some bytes).
    pub fn client(&self, name: &str, before: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self._dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n{before} exec ssh -o StrictHostKeyChecking=no \
                 -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \"$@\"\n"
            ),
        )
        .expect("write the ssh wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the ssh wrapper");
        path
    }
}
