//! Shared helpers for the cross-binary integration tests (`tests/integration/`, one test
//! binary): the real binaries, run through [`TestCommand`] so every failure shows what ran
//! and what it left; temp trees and vault fixtures; root/loop-device checks that skip with a
//! printed reason, each through [`skip()`] (a failure under `REVERB_TESTS_STRICT=1`); waiting
//! for events ([`wait_until`]).
//!
//! # The binaries under test are never stale
//!
//! `cargo test --workspace` builds the bins only as unit-test harnesses, and
//! `CARGO_BIN_EXE_<name>` exists only for a package's own binaries, so the binaries the
//! tests spawn are found in the target directory ([`bin`]). To guarantee they are current,
//! the first [`bin`] of a test process runs `cargo build --workspace --bins` (the `CARGO`
//! that runs the tests, the test binary's own profile and target directory) and every test
//! waits for it. That works because cargo releases its build-directory lock before it runs
//! test binaries (tried: the inner build neither blocks nor waits), so the inner build is
//! the same build as `cargo build --workspace` — a no-op when it already ran. The other
//! options were worse: thin `[[bin]]` wrappers in this package would give
//! `CARGO_BIN_EXE_*` but two packages' binaries of one name collide in `target/<profile>/`,
//! and a separate target directory would compile the workspace twice. All binaries land in
//! one directory, where the supervisor finds its sibling programs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod bins;
pub mod blockreplay;
mod command;
pub mod differential;
pub mod inodes;
pub mod links;
pub mod model;
pub mod ops;
pub mod replica;
mod skipping;
pub mod sshd;
pub mod thinning;
mod wait;
pub mod web;

pub use bins::{ExclusiveKernel, bin, bin_dir, exclusive_kernel};
pub use command::{TestCommand, listing, report};
pub use skipping::{STRICT_VAR, SkipPolicy, missing_programs, skip};
pub use wait::{wait_for_clock, wait_until, wait_until_observed, whole_seconds_after};

/// A [`TestCommand`] for a workspace binary.
pub fn cmd(name: &str) -> TestCommand {
    TestCommand::new(name)
}

/// Output's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Output's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a shell command line, panicking with its output on failure.
pub fn sh(script: &str) {
    TestCommand::program("sh")
        .args(["-c", script])
        .assert_success();
}

/// Replaces `to` with a `cp -a` copy of `from` (modes, owners, times, links and hard links
/// kept): how a test saves a vault, and puts it back before each injected crash.
pub fn replace_with_copy(from: &Path, to: &Path) {
    sh(&format!(
        "rm -rf '{t}' && cp -a '{f}' '{t}'",
        f = from.display(),
        t = to.display()
    ));
}

/// Is a program on PATH?
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A loop-mounted filesystem image, unmounted and detached on drop.
pub struct LoopMount {
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    pub device: String,
    mounted: bool,
}

impl LoopMount {
    /// Creates a `size_mib` image of `fstype` (`ext4`, `btrfs`, `xfs`) under `dir` and mounts
    /// it at `dir/mnt`. `mkfs_args` are extra arguments (a label, say). Returns `Err(reason)`
    /// when this machine cannot (not root, no mkfs, no loop devices) so tests can skip.
    pub fn new(
        dir: &Path,
        fstype: &str,
        size_mib: u64,
        mkfs_args: &[&str],
    ) -> Result<LoopMount, String> {
        if !is_root() {
            return Err("needs root for losetup/mount".into());
        }
        let mkfs = format!("mkfs.{fstype}");
        if !have(&mkfs) {
            return Err(format!("{mkfs} is not installed"));
        }
        let image = dir.join(format!("{fstype}.img"));
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(size_mib << 20).map_err(|e| e.to_string())?;
        let quiet = if fstype == "ext4" { "-q" } else { "-f" };
        let o = Command::new(&mkfs)
            .arg(quiet)
            .args(mkfs_args)
            .arg(&image)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("{mkfs} failed: {}", stderr(&o)));
        }
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("losetup failed: {}", stderr(&o)));
        }
        let device = stdout(&o).trim().to_owned();
        let mountpoint = dir.join("mnt");
        std::fs::create_dir_all(&mountpoint).map_err(|e| e.to_string())?;
        let mut m = LoopMount {
            image,
            mountpoint,
            device,
            mounted: false,
        };
        m.mount()?;
        Ok(m)
    }

    /// Mounts the device again (after [`LoopMount::unmount`]).
    pub fn mount(&mut self) -> Result<(), String> {
        let o = Command::new("mount")
            .arg(&self.device)
            .arg(&self.mountpoint)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("mount failed: {}", stderr(&o)));
        }
        self.mounted = true;
        Ok(())
    }

    /// Unmounts (the mountpoint becomes an empty directory on the parent filesystem).
    pub fn unmount(&mut self) {
        if self.mounted {
            sh(&format!("umount {}", self.mountpoint.display()));
            self.mounted = false;
        }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// A FAT or exFAT image mounted through its FUSE driver (`fusefat`, `mount.exfat-fuse`:
/// kernels without the vfat/exfat modules still mount them), unmounted (and its loop
/// device detached) on drop.
pub struct FuseImage {
    pub mountpoint: PathBuf,
    device: Option<String>,
}

impl FuseImage {
    /// Makes a `size_mib` image of `fstype` (`vfat` or `exfat`) under `dir` and mounts it
    /// at `dir/mnt`. `Err(reason)` when this machine cannot (not root, a tool missing).
    pub fn new(dir: &Path, fstype: &str, size_mib: u64) -> Result<FuseImage, String> {
        if !is_root() {
            return Err("needs root for FUSE mounts and loop devices".into());
        }
        let (mkfs, driver) = match fstype {
            "vfat" => ("mkfs.vfat", "fusefat"),
            "exfat" => ("mkfs.exfat", "mount.exfat-fuse"),
            other => return Err(format!("no FUSE driver known for {other}")),
        };
        if let Some(missing) = missing_programs(&[mkfs, driver]) {
            return Err(format!("{missing} not installed"));
        }
        let image = dir.join(format!("{fstype}.img"));
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(size_mib << 20).map_err(|e| e.to_string())?;
        let o = Command::new(mkfs)
            .arg(&image)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("{mkfs} failed: {}", stderr(&o)));
        }
        let mountpoint = dir.join("mnt");
        std::fs::create_dir_all(&mountpoint).map_err(|e| e.to_string())?;
        let mut m = FuseImage {
            mountpoint: mountpoint.clone(),
            device: None,
        };
        let o = if fstype == "vfat" {
            Command::new(driver)
                .args(["-o", "rw+"])
                .arg(&image)
                .arg(&mountpoint)
                .output()
        } else {
            // exfat-fuse wants a block device.
            let o = Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&image)
                .output()
                .map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!("losetup failed: {}", stderr(&o)));
            }
            let device = stdout(&o).trim().to_owned();
            m.device = Some(device.clone());
            Command::new(driver).arg(&device).arg(&mountpoint).output()
        }
        .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("{driver} failed: {}", stderr(&o)));
        }
        Ok(m)
    }
}

impl Drop for FuseImage {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        if let Some(d) = &self.device {
            let _ = Command::new("losetup").arg("-d").arg(d).status();
        }
    }
}

/// A job under test: a source, a vault and the job's name, with shortcuts for the binaries.
pub struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub vault: PathBuf,
    pub job: String,
}

impl Fixture {
    /// A new empty source and a vault path (not yet a vault) in a temp dir.
    pub fn new() -> Fixture {
        Fixture::in_dir(tempfile::tempdir().expect("tempdir"))
    }

    /// Same, inside a given temp dir.
    pub fn in_dir(tmp: tempfile::TempDir) -> Fixture {
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).expect("mkdir src");
        let vault = tmp.path().join("vault");
        Fixture {
            _tmp: tmp,
            src,
            vault,
            job: "job".into(),
        }
    }

    /// `NAME --vault V --job J` (one of the vault tools), showing the job folder on failure.
    pub fn tool(&self, name: &str) -> TestCommand {
        let mut c = cmd(name);
        c.arg("--vault")
            .arg(&self.vault)
            .arg("--job")
            .arg(&self.job)
            .show_dir(self.job_dir());
        c
    }

    /// `reverb-snap --vault V --job J [args]`.
    pub fn snap(&self, args: &[&str]) -> TestCommand {
        let mut c = self.tool("reverb-snap");
        c.args(args);
        c
    }

    /// First run: `--init --source SRC`; asserts success and returns the version printed.
    pub fn first(&self) -> String {
        let mut c = self.snap(&["--init"]);
        c.arg("--source").arg(&self.src).stdout().trim().to_owned()
    }

    /// A rescan that must succeed; returns the version printed (empty: no change).
    pub fn rescan(&self) -> String {
        self.snap(&[]).stdout().trim().to_owned()
    }

    /// The job folder.
    pub fn job_dir(&self) -> PathBuf {
        self.vault.join(&self.job)
    }

    /// Restores `version` to a fresh directory and returns it.
    pub fn restore(&self, version: &str) -> PathBuf {
        let dest = self
            ._tmp
            .path()
            .join(format!("restore-{version}-{}", unique()));
        self.tool("reverb-restore")
            .args(["--from", version])
            .arg("--to")
            .arg(&dest)
            .assert_success();
        dest
    }

    /// Asserts that the latest version restores to exactly what the source holds now,
    /// compared as `opts` says (independent captures of both trees).
    pub fn assert_latest_is_source(&self, opts: model::CaptureOpts, what: &str) {
        model::assert_same(
            &model::capture(&self.src, opts),
            &model::capture(&self.restore("latest"), opts),
            what,
        );
    }

    /// `reverb-index --check --data` on the job must be clean (the data read and compared
    /// with its checksums too).
    pub fn check_clean(&self) {
        self.tool("reverb-index")
            .args(["--check", "--data"])
            .assert_success();
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A mount made by a test (`mount -t tmpfs`, `mount --bind`, `mount --move` targets),
/// lazily unmounted on drop unless [`MountGuard::forget`] was called.
pub struct MountGuard {
    pub mountpoint: PathBuf,
    active: bool,
}

impl MountGuard {
    /// Runs `mount ARGS… MOUNTPOINT` and guards the result. `Err(reason)` when not root or
    /// mount fails, so tests can skip.
    pub fn new(args: &[&str], mountpoint: &Path) -> Result<MountGuard, String> {
        if !is_root() {
            return Err("needs root for mount".into());
        }
        std::fs::create_dir_all(mountpoint).map_err(|e| e.to_string())?;
        let o = Command::new("mount")
            .args(args)
            .arg(mountpoint)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("mount {args:?} failed: {}", stderr(&o)));
        }
        Ok(MountGuard {
            mountpoint: mountpoint.to_path_buf(),
            active: true,
        })
    }

    /// Guards a mount made some other way (a `mount --move` target).
    pub fn adopt(mountpoint: &Path) -> MountGuard {
        MountGuard {
            mountpoint: mountpoint.to_path_buf(),
            active: true,
        }
    }

    /// The mount is gone (unmounted or moved away by the test): do nothing on drop.
    pub fn forget(mut self) {
        self.active = false;
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.active {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}
