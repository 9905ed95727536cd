//! Block-level crash replay (docs/reliability.md#power-loss): a file system on a loop device
//! whose backing file is served by `reverb-blocklog` (tests/blocklog/), which logs every
//! write the device makes and every flush; the log, replayed to a point, is what a disk that
//! honours flushes holds after a power cut there.
//!
//! Owns: recording ([`Recorder`]: image, logger, loop device, mount, and their teardown),
//! reading the log ([`Op`]), choosing crash states ([`states`]) and writing one to an image
//! ([`Replayer`]). What to check in a state is the test's business.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::differential::Rng;
use crate::{have, is_root, stderr, stdout};

/// One record of the block log.
#[derive(Debug, Clone)]
pub enum Op {
    /// A write of `data` at byte `offset` of the device.
    Write { offset: u64, data: Vec<u8> },
    /// A cache flush: every write before it is on the medium.
    Flush,
}

/// Reads a log written by `reverb-blocklog`.
pub fn read_log(path: &Path) -> Result<Vec<Op>, String> {
    let bytes = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut ops = Vec::new();
    let mut i = 0;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = bytes
            .get(*i..*i + n)
            .ok_or_else(|| format!("block log truncated at byte {i}"))?;
        *i += n;
        Ok(s)
    };
    while i < bytes.len() {
        match take(&mut i, 1)?[0] {
            b'F' => ops.push(Op::Flush),
            b'W' => {
                let head = take(&mut i, 12)?;
                let offset = u64::from_le_bytes(head[..8].try_into().map_err(|_| "offset")?);
                let len = u32::from_le_bytes(head[8..].try_into().map_err(|_| "len")?);
                let data = take(&mut i, len as usize)?.to_vec();
                ops.push(Op::Write { offset, data });
            }
            other => {
                return Err(format!(
                    "block log: bad record tag {other} at byte {}",
                    i - 1
                ));
            }
        }
    }
    Ok(ops)
}

/// A crash state: every op before `flush` (an index into the ops, at a [`Op::Flush`], or
/// the log's length), plus the writes at `extra` (indices after `flush`, before the next
/// flush): writes the device had received but not yet flushed, of which any subset may have
/// reached the medium.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct State {
    pub flush: usize,
    pub extra: Vec<usize>,
}

/// The crash states to try: every flush point and the log's end, each also with one random
/// subset of the writes that follow it (when there are any); `sample` keeps that many of
/// them, spread evenly and always including the last (`None`: all).
pub fn states(ops: &[Op], sample: Option<usize>, rng: &mut Rng) -> Vec<State> {
    let mut points: Vec<usize> = (0..ops.len())
        .filter(|&i| matches!(ops[i], Op::Flush))
        .collect();
    points.push(ops.len());
    let mut all = Vec::new();
    for (k, &p) in points.iter().enumerate() {
        all.push(State {
            flush: p,
            extra: Vec::new(),
        });
        let window_end = points.get(k + 1).copied().unwrap_or(ops.len());
        let window: Vec<usize> = (p + 1..window_end).collect();
        if window.len() > 1 {
            let extra: Vec<usize> = window.into_iter().filter(|_| rng.below(2) == 0).collect();
            all.push(State { flush: p, extra });
        }
    }
    match sample {
        Some(n) if n < all.len() => {
            let last = all.len() - 1;
            let mut picked: Vec<State> = (0..n)
                .map(|i| all[i * last / (n - 1).max(1)].clone())
                .collect();
            picked.dedup();
            picked
        }
        _ => all,
    }
}

/// Why this machine cannot record: not root, no FUSE, no loop devices, no mkfs (checked
/// before the logger is built, so a machine that cannot record never builds it).
pub fn unavailable(fstype: &str) -> Option<String> {
    if !is_root() {
        return Some("needs root for FUSE, losetup and mount".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices".into());
    }
    if !have(&format!("mkfs.{fstype}")) {
        return Some(format!("mkfs.{fstype} is not installed"));
    }
    None
}

/// The image size for `fstype`: small, above each mkfs's minimum.
pub fn image_mib(fstype: &str) -> u64 {
    match fstype {
        "xfs" => 300,
        "btrfs" => 128,
        _ => 64,
    }
}

/// Runs a command, `Err` with its stderr when it fails.
fn run(cmd: &mut Command) -> Result<String, String> {
    let o = cmd
        .output()
        .map_err(|e| format!("could not run {cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(stdout(&o))
    } else {
        Err(format!("{cmd:?} failed: {}", stderr(&o)))
    }
}

/// Creates `image` (`mib` MiB, sparse) and makes an `fstype` file system on it.
pub fn mkfs(fstype: &str, image: &Path, mib: u64) -> Result<(), String> {
    let f = File::create(image).map_err(|e| e.to_string())?;
    f.set_len(mib << 20).map_err(|e| e.to_string())?;
    let force = if fstype == "ext4" { "-q" } else { "-f" };
    run(Command::new(format!("mkfs.{fstype}")).arg(force).arg(image)).map(drop)
}

/// A loop device attached to a file and the file system on it mounted; detached on drop.
pub struct Mounted {
    pub device: String,
    pub mountpoint: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// Attaches `file` (buffered loop I/O: see docs/reliability.md#power-loss) and mounts
    /// it at `mountpoint`.
    pub fn new(file: &Path, mountpoint: &Path) -> Result<Mounted, String> {
        let device = run(Command::new("losetup")
            .args(["--find", "--show", "--direct-io=off"])
            .arg(file))?
        .trim()
        .to_owned();
        fs::create_dir_all(mountpoint).map_err(|e| e.to_string())?;
        let mut m = Mounted {
            device,
            mountpoint: mountpoint.to_path_buf(),
            mounted: false,
        };
        run(Command::new("mount").arg(&m.device).arg(mountpoint))?;
        m.mounted = true;
        Ok(m)
    }

    /// Unmounts and detaches (what drop does, with errors reported).
    pub fn close(mut self) -> Result<(), String> {
        self.mounted = false;
        run(Command::new("umount").arg(&self.mountpoint))?;
        let device = std::mem::take(&mut self.device);
        run(Command::new("losetup").arg("-d").arg(&device))?;
        wait_detached(&device)
    }
}

/// Waits until the loop `device` has let go of its backing file. `losetup -d` only marks a
/// device still open elsewhere (udev probing it after the unmount, say) to detach on its
/// last close, so the file, and the filesystem it lives on, can stay busy for a moment.
fn wait_detached(device: &str) -> Result<(), String> {
    let name = Path::new(device)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bound = Path::new("/sys/block").join(name).join("loop/backing_file");
    let deadline = Instant::now() + Duration::from_secs(30);
    while bound.exists() {
        if Instant::now() > deadline {
            return Err(format!(
                "{device} still holds its backing file 30 s after losetup -d"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `umount dir`, tried again while it fails for up to 30 s: a loop device detached a moment
/// ago may still hold a file inside it (see [`wait_detached`]).
fn umount_patiently(dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match run(Command::new("umount").arg(dir)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mountpoint).status();
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
        if !self.device.is_empty() {
            let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
        }
    }
}

/// A recording in progress: `base` holds the freshly made file system, the logger serves a
/// copy of it, and the file system is mounted at `mountpoint` through the loop device.
pub struct Recorder {
    pub base: PathBuf,
    pub log: PathBuf,
    fuse_dir: PathBuf,
    logger: Option<Child>,
    mount: Option<Mounted>,
}

impl Recorder {
    /// Makes the file system, starts the logger and mounts (under `dir`).
    pub fn start(
        fstype: &str,
        dir: &Path,
        mountpoint: &Path,
        blocklog: &Path,
    ) -> Result<Recorder, String> {
        let base = dir.join("base.img");
        mkfs(fstype, &base, image_mib(fstype))?;
        let served = dir.join("served.img");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&base)
            .arg(&served))?;
        let fuse_dir = dir.join("fuse");
        fs::create_dir_all(&fuse_dir).map_err(|e| e.to_string())?;
        let log = dir.join("block.log");
        let logger = Command::new(blocklog)
            .arg(&served)
            .arg(&fuse_dir)
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", blocklog.display()))?;
        let mut r = Recorder {
            base,
            log,
            fuse_dir: fuse_dir.clone(),
            logger: Some(logger),
            mount: None,
        };
        let image = fuse_dir.join("image");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !image.is_file() {
            if Instant::now() > deadline {
                return Err("reverb-blocklog did not serve its image in 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        r.mount = Some(Mounted::new(&image, mountpoint)?);
        Ok(r)
    }

    /// Unmounts, stops the logger and returns the log.
    pub fn finish(mut self) -> Result<Vec<Op>, String> {
        if let Some(m) = self.mount.take() {
            m.close()?;
        }
        umount_patiently(&self.fuse_dir)?;
        if let Some(mut child) = self.logger.take() {
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("reverb-blocklog exited with {status}"));
            }
        }
        read_log(&self.log)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        drop(self.mount.take());
        if let Some(mut child) = self.logger.take() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.fuse_dir)
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes crash states to images, in increasing order of their flush point: a prefix image
/// carries the writes up to the last flush asked for, so each state costs one copy of it
/// plus its own writes.
pub struct Replayer<'a> {
    ops: &'a [Op],
    prefix: PathBuf,
    applied: usize,
}

impl<'a> Replayer<'a> {
    /// A replayer starting from the file system in `base` (copied into `dir`).
    pub fn new(ops: &'a [Op], base: &Path, dir: &Path) -> Result<Replayer<'a>, String> {
        let prefix = dir.join("prefix.img");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(base)
            .arg(&prefix))?;
        Ok(Replayer {
            ops,
            prefix,
            applied: 0,
        })
    }

    /// Writes `state` to `image` (states must come in increasing order of `flush`).
    pub fn write(&mut self, state: &State, image: &Path) -> Result<(), String> {
        if state.flush < self.applied {
            return Err("crash states must come in increasing order".into());
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&self.prefix)
            .map_err(|e| e.to_string())?;
        apply(&f, &self.ops[self.applied..state.flush])?;
        self.applied = state.flush;
        drop(f);
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.prefix)
            .arg(image))?;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(|e| e.to_string())?;
        let extra: Vec<Op> = state.extra.iter().map(|&i| self.ops[i].clone()).collect();
        apply(&f, &extra)
    }
}

fn apply(f: &File, ops: &[Op]) -> Result<(), String> {
    for op in ops {
        if let Op::Write { offset, data } = op {
            f.write_all_at(data, *offset).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
