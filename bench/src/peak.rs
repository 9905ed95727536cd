//! Peak memory of a timed run without unsafe code: the bench runs the program through a
//! copy of itself (`reverb-bench __peak FILE PROGRAM ARGS...`) that waits for it and writes
//! to FILE `getrusage(RUSAGE_CHILDREN)`'s `ru_maxrss` and user + system time, and the wall
//! time from just before it started the program to just after it reaped it. Those figures
//! cover the program and every descendant it waited for, and nothing else: the wrapper has
//! no other child.
//!
//! Owns [`wrap`] (the bench's side) and [`run_wrapper`] (the wrapper's side).
//!
//! Invariants: the wrapper passes on the program's stdin, stdout and stderr untouched and
//! exits with its status (a signal as 128 + its number, like a shell), so a failing run
//! still fails. Its own cost (its start, about 1.4 ms of wall and CPU time here) is in no
//! figure: charged to both sides of a ratio, it weighed on the faster side, a 20 ms version
//! against a 1 s rsync, as it did before 2026-12-07, night.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The first argument that makes the bench a wrapper.
pub const WRAPPER_ARG: &str = "__peak";

/// `cmd`, to be run through the wrapper, which writes the peak to `peak_file`.
pub fn wrap(cmd: &Command, peak_file: &Path) -> Result<Command> {
    let me = std::env::current_exe().context("cannot find the bench executable")?;
    let mut w = Command::new(me);
    w.arg(WRAPPER_ARG)
        .arg(peak_file)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        w.current_dir(dir);
    }
    Ok(w)
}

/// What the wrapper measured of its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// The largest peak resident set of the program and its descendants (bytes).
    pub peak_rss: u64,
    /// From just before the program was started to just after it was reaped.
    pub wall: Duration,
    /// User + system time of the program and the descendants it waited for.
    pub cpu: Duration,
}

/// Reads what the wrapper wrote: `PEAK_BYTES WALL_NS CPU_NS`.
pub fn read(peak_file: &Path) -> Result<Measured> {
    let text = std::fs::read_to_string(peak_file)
        .with_context(|| format!("the peak-memory wrapper wrote no {}", peak_file.display()))?;
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("{}: not three numbers: {text:?}", peak_file.display()))?;
    let [peak_rss, wall, cpu] = fields[..] else {
        anyhow::bail!("{}: not three numbers: {text:?}", peak_file.display());
    };
    Ok(Measured {
        peak_rss,
        wall: Duration::from_nanos(wall),
        cpu: Duration::from_nanos(cpu),
    })
}

/// The wrapper's side: `args` are what follows [`WRAPPER_ARG`].
pub fn run_wrapper(mut args: impl Iterator<Item = OsString>) -> ExitCode {
    let (Some(file), Some(program)) = (args.next(), args.next()) else {
        eprintln!("reverb-bench {WRAPPER_ARG}: usage: FILE PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let status = Command::new(&program).args(args).status();
    let wall = started.elapsed();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reverb-bench {WRAPPER_ARG}: cannot run {program:?}: {e}");
            return ExitCode::from(127);
        }
    };
    let (peak, cpu) =
        match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) {
            Ok(u) => (
                u64::try_from(u.max_rss()).unwrap_or(0) * 1024,
                duration(u.user_time()) + duration(u.system_time()),
            ),
            Err(e) => {
                eprintln!("reverb-bench {WRAPPER_ARG}: getrusage: {e}");
                return ExitCode::from(1);
            }
        };
    let line = format!("{peak} {} {}\n", wall.as_nanos(), cpu.as_nanos());
    if let Err(e) = std::fs::write(PathBuf::from(&file), line) {
        eprintln!("reverb-bench {WRAPPER_ARG}: cannot write {file:?}: {e}");
        return ExitCode::from(1);
    }
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        _ => ExitCode::from(1),
    }
}

/// A `timeval` as a duration (negative parts as zero).
fn duration(t: nix::sys::time::TimeVal) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_reports_its_programs_peak_and_status() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("peak");
        // The shell holds 40 MB in a variable, then fails with status 3.
        let script = "x=$(head -c 40000000 /dev/zero | tr '\\0' a); exit 3";
        let args = [
            file.as_os_str(),
            "sh".as_ref(),
            "-c".as_ref(),
            script.as_ref(),
        ];
        let code = run_wrapper(args.iter().map(|a| a.to_os_string()));
        assert_eq!(code, ExitCode::from(3));
        let m = read(&file).expect("the wrapper wrote its figures");
        assert!(m.peak_rss >= 40_000_000, "peak {}", m.peak_rss);
        assert!(m.peak_rss < 4_000_000_000, "peak {}", m.peak_rss);
        assert!(m.cpu > Duration::ZERO && m.cpu <= m.wall * 2, "{m:?}");
    }

    #[test]
    fn the_wrapper_reports_its_programs_wall_and_cpu_time() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("peak");
        let args = [file.as_os_str(), "sleep".as_ref(), "0.3".as_ref()];
        let started = Instant::now();
        assert_eq!(
            run_wrapper(args.iter().map(|a| a.to_os_string())),
            ExitCode::SUCCESS
        );
        let outside = started.elapsed();
        let m = read(&file).expect("the wrapper wrote its figures");
        assert!(m.wall >= Duration::from_millis(300), "{m:?}");
        assert!(m.wall <= outside, "{m:?} within {outside:?}");
        assert!(
            m.cpu < Duration::from_millis(300),
            "sleep uses little CPU: {m:?}"
        );
    }

    #[test]
    fn a_missing_program_is_127_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("peak");
        let args = [file.as_os_str(), "/nonexistent/program".as_ref()];
        let code = run_wrapper(args.iter().map(|a| a.to_os_string()));
        assert_eq!(code, ExitCode::from(127));
        assert!(read(&file).is_err());
    }
}
