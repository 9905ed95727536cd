//! Running programs: our binaries (found next to the bench executable or in `--bin-dir`)
//! and the peer tools (found on `PATH`, never installed), timed, with the cache policy
//! applied before every timed run.
//!
//! Owns: [`Tools`] (where each program is, or why it is missing), [`timed`] and
//! [`timed_input`] (the [`Timing`] of one run that must succeed: wall time and CPU time),
//! [`Cache`] (what happens before a timed run), and the process helpers [`vm_hwm_kib`],
//! [`cpu_so_far`], [`terminate`], [`line_reader`].
//!
//! Invariants: a timed run that fails is an error naming the command and its stderr, never
//! a figure; before every timed run dirty data is written back (`sync`), so one run's
//! writeback is not charged to the next. CPU time is user + system time of the program and
//! of every descendant it waited for: the `getrusage(RUSAGE_CHILDREN)` delta around its run,
//! which is exact because the bench reaps no other child while a timed run is in progress
//! (its only other threads read pipes).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where the programs are.
#[derive(Debug)]
pub struct Tools {
    pub bin_dir: PathBuf,
    pub cp: Option<PathBuf>,
    pub rsync: Option<PathBuf>,
    pub inotifywait: Option<PathBuf>,
    pub rm: Option<PathBuf>,
}

impl Tools {
    pub fn find(bin_dir: Option<&Path>) -> Result<Tools> {
        let bin_dir = match bin_dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()
                .context("cannot find the bench executable")?
                .parent()
                .context("bench executable has no directory")?
                .to_path_buf(),
        };
        for b in ["reverb-snap", "reverb-retire", "reverb-watch"] {
            if !bin_dir.join(b).is_file() {
                bail!(
                    "{} not found in {} (build with `cargo build --release --workspace` or pass --bin-dir)",
                    b,
                    bin_dir.display()
                );
            }
        }
        Ok(Tools {
            bin_dir,
            cp: on_path("cp"),
            rsync: on_path("rsync"),
            inotifywait: on_path("inotifywait"),
            rm: on_path("rm"),
        })
    }

    /// One of our binaries.
    pub fn ours(&self, name: &str) -> Command {
        Command::new(self.bin_dir.join(name))
    }
}

/// A peer tool's path, or why the row is skipped.
pub fn need<'a>(tool: &'a Option<PathBuf>, name: &str) -> Result<&'a Path, String> {
    tool.as_deref()
        .ok_or_else(|| format!("{name} not found on PATH"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What happens before each timed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    /// `sync` only: the tree and the previous version stay in the page cache (it was
    /// written or read just before; the machine has room for it).
    Warm,
    /// `sync; echo 3 > /proc/sys/vm/drop_caches` (root only).
    Cold,
}

impl Cache {
    pub fn prepare(self) -> Result<()> {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        nix::unistd::sync();
        if self == Cache::Cold {
            std::fs::write("/proc/sys/vm/drop_caches", b"3\n")
                .context("cannot drop caches (needs root)")?;
        }
        Ok(())
    }
}

/// What one run cost: wall-clock time, CPU time (user + system) of the program and of
/// the descendants it waited for, and the peak resident memory of the largest of them when
/// the run was reaped by [`timed_input`] (`None` for figures measured another way).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_rss: Option<u64>,
}

impl std::ops::Add for Timing {
    type Output = Timing;

    fn add(self, other: Timing) -> Timing {
        Timing {
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
            // Two runs one after the other: the larger of the two peaks.
            peak_rss: match (self.peak_rss, other.peak_rss) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// CPU time (user + system) a running process has used so far: the sum over its live
/// threads of `/proc/PID/task/TID/schedstat`'s run time (nanoseconds); `/proc/PID/stat`'s
/// utime + stime (10 ms ticks) where schedstat is missing.
pub fn cpu_so_far(pid: u32) -> Result<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
    let mut ns = 0u64;
    for task in tasks {
        let path = task?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return cpu_ticks(pid);
        };
        match text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
        {
            Some(n) => ns += n,
            None => return cpu_ticks(pid),
        }
    }
    Ok(Duration::from_nanos(ns))
}

/// utime + stime of `/proc/PID/stat` (all threads; clock ticks of 10 ms).
fn cpu_ticks(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces: fields count from after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); `rest` starts at field 3.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("malformed /proc/PID/stat")
    };
    let total = ticks(11)? + ticks(12)?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space on every
    // architecture this project builds for.
    Ok(Duration::from_millis(total * 10))
}

/// Runs `cmd` to completion; its wall and CPU time. Fails if it fails.
pub fn timed(cmd: &mut Command) -> Result<Timing> {
    timed_input(cmd, None).map(|(d, _)| d)
}

/// Runs `cmd` with `input` on stdin; wall and CPU time, peak memory, and stdout. Fails if
/// it fails.
pub fn timed_input(cmd: &mut Command, input: Option<&[u8]>) -> Result<(Timing, String)> {
    let peak_dir = tempfile::tempdir().context("cannot make a directory for the peak figure")?;
    let peak_file = peak_dir.path().join("peak");
    let mut wrapped = crate::peak::wrap(cmd, &peak_file)?;
    wrapped
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = wrapped
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(data)
            .with_context(|| format!("{cmd:?}: stdin"))?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // The wrapper's figures: the program alone, without the wrapper's own start.
    let m = crate::peak::read(&peak_file)?;
    Ok((
        Timing {
            wall: m.wall,
            cpu: m.cpu,
            peak_rss: Some(m.peak_rss),
        },
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Peak resident set size so far (`VmHWM`, KiB) of a running process.
pub fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

/// Sends SIGTERM (a clean stop for our watchers and for inotifywait).
pub fn terminate(child: &std::process::Child) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
}

/// Reads lines on a thread; each arrives with the instant it was read.
pub fn line_reader(r: impl Read + Send + 'static) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line satisfying `pred`; its arrival time.
pub fn wait_line(
    rx: &mpsc::Receiver<(Instant, String)>,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((t, l)) if pred(&l) => return Ok(t),
            Ok(_) => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("timed out after {timeout:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the program ended first"),
        }
    }
}

/// `rm -rf` without timing (clean-up between runs).
pub fn remove(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(())
}
