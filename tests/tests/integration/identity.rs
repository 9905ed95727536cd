//! Filesystem identity (docs/identity.md) and `reverb-mountwatch` (docs/cli.md) against real mounts:
//! loop-mounted ext4/btrfs/xfs images, tmpfs, bind and moved mounts. Tests that need root or
//! a mkfs skip through `reverb_tests::skip` (`SKIPPED (reason)`, a failure under
//! `REVERB_TESTS_STRICT=1`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use reverb_common::identity::{self, FsIdentity, MatchedBy};
use reverb_common::tsv;
use reverb_tests::{LoopMount, MountGuard, cmd, have, require_root, sh};

/// Generous: mount events arrive in milliseconds; this only bounds a broken build.
const TIMEOUT: Duration = Duration::from_secs(10);

macro_rules! loop_mount_or_skip {
    ($dir:expr, $fs:expr, $mib:expr, $args:expr) => {
        match LoopMount::new($dir, $fs, $mib, $args) {
            Ok(m) => m,
            Err(why) => reverb_tests::skip!("{why}: a {} loop mount", $fs),
        }
    };
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn canon(p: &Path) -> String {
    std::fs::canonicalize(p)
        .expect("canonicalize")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn loop_ext4_has_uuid_and_device() {
    let dir = tmp();
    let m = loop_mount_or_skip!(dir.path(), "ext4", 64, &[]);
    std::fs::create_dir(m.mountpoint.join("sub")).expect("mkdir");
    let id = FsIdentity::of(&m.mountpoint).expect("identity");
    let uuid = id.uuid.clone().expect("ext4 has a UUID");
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(uuid, uuid.to_lowercase());
    assert_eq!(id.device.as_deref(), Some(m.device.as_str()));
    assert_eq!(id.fstype.as_deref(), Some("ext4"));
    assert_eq!(
        id.mountpoint.as_deref(),
        Some(canon(&m.mountpoint).as_str())
    );
    assert_eq!(id.label, None, "no label given");
    assert!(!identity::only_device(&id));
    // A path inside the mount has the same identity.
    assert_eq!(FsIdentity::of(&m.mountpoint.join("sub")).expect("sub"), id);
    if have("blkid") {
        let o = Command::new("blkid")
            .args(["-c", "/dev/null", "-s", "UUID", "-o", "value"])
            .arg(&m.device)
            .output()
            .expect("blkid");
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), uuid, "as blkid");
    } else {
        reverb_tests::skip("blkid is not installed: the UUID as blkid reads it");
    }
    assert_eq!(
        identity::verify("source", &id, &m.mountpoint).expect("verify"),
        MatchedBy::Uuid
    );
}

fn label_case(fstype: &str, mib: u64) {
    let dir = tmp();
    let m = loop_mount_or_skip!(dir.path(), fstype, mib, &["-L", "rvb-lab"]);
    let id = FsIdentity::of(&m.mountpoint).expect("identity");
    assert_eq!(id.label.as_deref(), Some("rvb-lab"), "{fstype}: {id:?}");
    assert!(id.uuid.is_some(), "{fstype}: {id:?}");
    assert_eq!(id.fstype.as_deref(), Some(fstype));
    assert_eq!(id.device.as_deref(), Some(m.device.as_str()));
}

#[test]
fn labelled_ext4_reports_label() {
    label_case("ext4", 64);
}

#[test]
fn labelled_btrfs_reports_label() {
    label_case("btrfs", 160);
}

#[test]
fn labelled_xfs_reports_label() {
    label_case("xfs", 320);
}

#[test]
fn new_uuid_keeps_label_match() {
    let dir = tmp();
    let mut m = loop_mount_or_skip!(dir.path(), "ext4", 64, &["-L", "keepme"]);
    reverb_tests::require_programs!(["tune2fs", "e2fsck"], "a new UUID");
    let recorded = FsIdentity::of(&m.mountpoint).expect("identity");
    m.unmount();
    sh(&format!(
        "e2fsck -fy {d} >/dev/null 2>&1; tune2fs -U random {d} >/dev/null",
        d = m.device
    ));
    m.mount().expect("mount");
    let current = FsIdentity::of(&m.mountpoint).expect("identity");
    assert_ne!(current.uuid, recorded.uuid, "tune2fs -U random");
    assert_eq!(
        identity::matches(&recorded, &current),
        Some(MatchedBy::Label)
    );
    assert_eq!(
        identity::verify("vault", &recorded, &m.mountpoint).expect("verify"),
        MatchedBy::Label
    );
}

#[test]
fn relabel_keeps_uuid_match() {
    let dir = tmp();
    let mut m = loop_mount_or_skip!(dir.path(), "ext4", 64, &["-L", "before"]);
    reverb_tests::require_programs!(["e2label"], "a new label");
    let recorded = FsIdentity::of(&m.mountpoint).expect("identity");
    m.unmount();
    sh(&format!("e2label {} after", m.device));
    m.mount().expect("mount");
    let current = FsIdentity::of(&m.mountpoint).expect("identity");
    assert_eq!(current.label.as_deref(), Some("after"));
    assert_eq!(
        identity::matches(&recorded, &current),
        Some(MatchedBy::Uuid)
    );
}

#[test]
fn unmounted_vault_is_a_mismatch() {
    let dir = tmp();
    let mut m = loop_mount_or_skip!(dir.path(), "ext4", 64, &["-L", "gone"]);
    let recorded = FsIdentity::of(&m.mountpoint).expect("identity");
    m.unmount();
    // The mountpoint is now an empty directory on the parent filesystem.
    assert!(m.mountpoint.is_dir());
    let err = identity::verify("vault", &recorded, &m.mountpoint).expect_err("must not match");
    assert!(
        matches!(err, reverb_common::Error::IdentityMismatch(_)),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 75);
    let msg = err.to_string();
    assert!(msg.starts_with("vault "), "{msg}");
    assert!(msg.contains("LABEL=gone"), "{msg}");
    assert!(msg.contains("is the disk mounted?"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    // And a path that does not exist at all.
    let err =
        identity::verify("source", &recorded, &m.mountpoint.join("nope")).expect_err("missing");
    assert_eq!(err.exit_code(), 75);
}

#[test]
fn tmpfs_is_device_only() {
    require_root!("mount -t tmpfs");
    let dir = tmp();
    let mnt = dir.path().join("t");
    let g = match MountGuard::new(&["-t", "tmpfs", "rvbtmp"], &mnt) {
        Ok(g) => g,
        Err(why) => reverb_tests::skip!("{why}: a tmpfs mount"),
    };
    let id = FsIdentity::of(&mnt).expect("identity");
    assert_eq!(id.device.as_deref(), Some("rvbtmp"));
    assert_eq!(id.fstype.as_deref(), Some("tmpfs"));
    assert_eq!((id.uuid.as_deref(), id.label.as_deref()), (None, None));
    assert!(identity::only_device(&id), "{id:?}");
    assert_eq!(identity::matches(&id, &id), Some(MatchedBy::Device));
    drop(g);
}

/// A running `reverb-mountwatch` with a reader thread.
struct Watcher {
    child: Child,
    lines: Receiver<String>,
}

impl Watcher {
    fn spawn(args: &[&Path], json: bool) -> Watcher {
        let mut c = cmd("reverb-mountwatch");
        if json {
            c.arg("--json");
        }
        let mut child = c
            .args(args)
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn reverb-mountwatch");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher { child, lines: rx }
    }

    fn next(&self) -> Vec<String> {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(l) => tsv::split(&l).into_iter().map(str::to_owned).collect(),
            Err(RecvTimeoutError::Timeout) => panic!("no line within {TIMEOUT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("reverb-mountwatch exited"),
        }
    }

    /// The next line must have this state (and matched_by); returns its fields.
    fn expect(&self, state: &str, matched_by: &str, what: &str) -> Vec<String> {
        let f = self.next();
        assert_eq!(f.len(), 6, "{what}: {f:?}");
        assert_eq!(
            (f[2].as_str(), f[3].as_str()),
            (state, matched_by),
            "{what}: {f:?}"
        );
        f
    }

    fn terminate(mut self) -> i32 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
        wait_exit(&mut self.child)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st.code().unwrap_or(-1);
        }
        assert!(start.elapsed() < TIMEOUT, "did not exit within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mountwatch_follows_mount_changes() {
    let dir = tmp();
    let mut m = loop_mount_or_skip!(dir.path(), "ext4", 64, &["-L", "watched"]);
    let mnt = m.mountpoint.clone();
    let w = Watcher::spawn(&[&mnt], false);
    assert_eq!(
        w.next().join("\t"),
        "time\tpath\tstate\tmatched_by\tidentity\tmountpoint"
    );
    let f = w.expect("present", "uuid", "start");
    assert_eq!(f[1], tsv::escape_os(mnt.as_os_str()));
    assert!(f[4].contains("label=watched"), "{f:?}");
    assert!(f[4].contains(&format!("device={}", m.device)), "{f:?}");
    assert_eq!(f[5], canon(&mnt));

    m.unmount();
    let f = w.expect("lost", "", "umount");
    assert!(
        !f[4].contains("label=watched"),
        "found the parent fs: {f:?}"
    );
    m.mount().expect("mount");
    w.expect("restored", "uuid", "mount");

    // A remount changes no identity field: no line. The next line is the move's.
    sh(&format!("mount -o remount,ro {}", mnt.display()));
    sh(&format!("mount -o remount,rw {}", mnt.display()));

    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).expect("mkdir");
    sh(&format!(
        "mount --move {} {}",
        mnt.display(),
        moved.display()
    ));
    let guard = MountGuard::adopt(&moved);
    w.expect("lost", "", "mount --move away (remount printed nothing)");
    sh(&format!(
        "mount --move {} {}",
        moved.display(),
        mnt.display()
    ));
    guard.forget();
    w.expect("restored", "uuid", "mount --move back");

    sh(&format!("umount -l {}", mnt.display()));
    w.expect("lost", "", "umount -l");
    m.mount().expect("mount");
    w.expect("restored", "uuid", "mount after umount -l");

    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let bind =
        MountGuard::new(&["--bind", other.to_str().expect("utf-8")], &mnt).expect("bind mount");
    let f = w.expect("lost", "", "bind mount over");
    assert_eq!(f[5], canon(&mnt), "the bind mount is at the path: {f:?}");
    drop(bind);
    w.expect("restored", "uuid", "bind mount gone");

    assert_eq!(w.terminate(), 0, "SIGTERM exits 0");
}

#[test]
fn mountwatch_reports_moved_mountpoint_as_present() {
    // A path inside a mount whose identity still matches after the mount moves under it:
    // bind-mount the filesystem's own subtree over the watched path's parent.
    let dir = tmp();
    let m = loop_mount_or_skip!(dir.path(), "ext4", 64, &["-L", "movable"]);
    let sub = m.mountpoint.join("a/b");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let w = Watcher::spawn(&[&sub], false);
    w.next();
    w.expect("present", "uuid", "start");
    // Bind the fs's own `a` over `a`: same filesystem, mountpoint now …/a.
    let a = m.mountpoint.join("a");
    let bind = MountGuard::new(&["--bind", a.to_str().expect("utf-8")], &a).expect("bind");
    let f = w.expect("present", "uuid", "mountpoint changed, identity matches");
    assert_eq!(f[5], canon(&a));
    drop(bind);
    w.expect("present", "uuid", "back to the original mountpoint");
    assert_eq!(w.terminate(), 0);
}

#[test]
fn mountwatch_tmpfs_and_broken_pipe() {
    require_root!("mount -t tmpfs");
    let dir = tmp();
    let t = dir.path().join("t");
    std::fs::create_dir(&t).expect("mkdir");
    let w = Watcher::spawn(&[&t], false);
    w.next();
    // The parent filesystem: matched by whatever it has (a UUID on most machines).
    assert_eq!(w.next()[2], "present");
    let g = MountGuard::new(&["-t", "tmpfs", "tmpfs"], &t).expect("tmpfs");
    let f = w.expect("lost", "", "a tmpfs over the path");
    assert_eq!(f[4], "device=tmpfs,fstype=tmpfs");
    drop(g);
    assert_eq!(w.next()[2], "restored", "tmpfs gone");

    // A second tmpfs is a different filesystem even though both say only `tmpfs`.
    let g1 = MountGuard::new(&["-t", "tmpfs", "tmpfs"], &t).expect("tmpfs");
    w.expect("lost", "", "first tmpfs");
    let w2 = Watcher::spawn(&[&t], false);
    w2.next();
    w2.expect("present", "device", "start on tmpfs");
    drop(g1);
    w2.expect("lost", "", "tmpfs unmounted");
    assert_eq!(w.next()[2], "restored");
    let g2 = MountGuard::new(&["-t", "tmpfs", "tmpfs"], &t).expect("tmpfs");
    w.expect("lost", "", "second tmpfs");
    drop(g2);
    assert_eq!(w.next()[2], "restored");
    // w has seen both changes; w2 must have printed nothing for them (lost stays lost).
    match w2.lines.recv_timeout(Duration::from_millis(500)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("another tmpfs must not restore: {other:?}"),
    }
    drop(w);
    drop(w2);

    // Reader gone: the next write fails with EPIPE and the tool exits 0.
    let mut child = cmd("reverb-mountwatch")
        .arg(&t)
        .command()
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        for _ in 0..2 {
            line.clear();
            out.read_line(&mut line).expect("read");
        }
        assert!(line.contains("\tpresent\t"), "{line}");
    }
    let g3 = MountGuard::new(&["-t", "tmpfs", "tmpfs"], &t).expect("tmpfs");
    assert_eq!(wait_exit(&mut child), 0, "broken pipe exits 0");
    drop(g3);
}

#[test]
fn mountwatch_once_json_and_missing_path() {
    let missing = PathBuf::from("/nonexistent/reverb-test");
    let o = cmd("reverb-mountwatch")
        .args(["--once", "--json", "/"])
        .arg(&missing)
        .assert_exit(0);
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with(r#"{"#) && lines[0].contains(r#""type":"mount""#));
    assert!(lines[0].contains(r#""state":"present""#), "{}", lines[0]);
    assert!(lines[1].contains(r#""state":"lost""#), "{}", lines[1]);
    assert!(lines[1].contains(r#""identity":null"#), "{}", lines[1]);

    // No PATH is a usage error.
    cmd("reverb-mountwatch").assert_exit(2);
}

#[test]
fn mountwatch_exits_0_on_sigint_without_changes() {
    let mut w = Watcher::spawn(&[Path::new("/")], false);
    w.next();
    assert_eq!(w.next()[2], "present");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("kill");
    assert_eq!(wait_exit(&mut w.child), 0);
}

#[test]
fn works_without_blkid_like_a_minimal_container() {
    // No PATH: blkid cannot be found, only the kernel (mountinfo, ioctls) answers.
    let dir = tmp();
    let m = loop_mount_or_skip!(dir.path(), "ext4", 64, &["-L", "bare"]);
    let o = cmd("reverb-mountwatch")
        .env_clear()
        .args(["--once", "--json"])
        .arg(&m.mountpoint)
        .assert_exit(0);
    let text = String::from_utf8_lossy(&o.stdout);
    let full = FsIdentity::of(&m.mountpoint).expect("identity");
    let uuid = full.uuid.expect("uuid");
    assert!(text.contains(&format!(r#""uuid":"{uuid}""#)), "{text}");
    assert!(text.contains(r#""label":"bare""#), "{text}");
    assert!(text.contains(r#""matched_by":"uuid""#), "{text}");
}

#[test]
fn non_utf8_and_spaced_mountpoint() {
    use std::os::unix::ffi::OsStrExt;
    require_root!("mount -t tmpfs");
    let dir = tmp();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9 \tx");
    let mnt = dir.path().join(name);
    let _g = match MountGuard::new(&["-t", "tmpfs", "tmpfs"], &mnt) {
        Ok(g) => g,
        Err(why) => reverb_tests::skip!("{why}: a tmpfs mount"),
    };
    let id = FsIdentity::of(&mnt).expect("identity");
    assert_eq!(id.fstype.as_deref(), Some("tmpfs"));
    let o = cmd("reverb-mountwatch")
        .arg("--once")
        .arg(&mnt)
        .assert_exit(0);
    let text = String::from_utf8(o.stdout).expect("output is UTF-8");
    let line = text.lines().nth(1).expect("a record");
    let f = tsv::split(line);
    let want = tsv::escape_os(std::fs::canonicalize(&mnt).expect("canon").as_os_str());
    assert_eq!(f[5], want, "byte-exact mountpoint: {line}");
    assert!(f[5].ends_with("caf\\xe9 \\tx"), "{line}");
    assert_eq!(f[2], "present");
}
