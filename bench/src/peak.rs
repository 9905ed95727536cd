//! Peak memory of a timed run without unsafe code: the bench runs the program through a
//! copy of itself (`reverb-bench __peak FILE PROGRAM ARGS...`) that waits for it and writes
//! `getrusage(RUSAGE_CHILDREN).ru_maxrss` to FILE. That figure is the largest peak resident
//! set of the program and of every descendant it waited for, and covers nothing else: the
//! wrapper has no other child.
//!
//! Owns [`wrap`] (the bench's side) and [`run_wrapper`] (the wrapper's side).
//!
//! Invariants: the wrapper passes on the program's stdin, stdout and stderr untouched and
//! exits with its status (a signal as 128 + its number, like a shell), so a failing run
//! still fails; its own cost (one fork and exec) is charged to the measure.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

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

/// Reads what the wrapper wrote (bytes).
pub fn read(peak_file: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(peak_file)
        .with_context(|| format!("the peak-memory wrapper wrote no {}", peak_file.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a number: {text:?}", peak_file.display()))
}

/// The wrapper's side: `args` are what follows [`WRAPPER_ARG`].
pub fn run_wrapper(mut args: impl Iterator<Item = OsString>) -> ExitCode {
    let (Some(file), Some(program)) = (args.next(), args.next()) else {
        eprintln!("reverb-bench {WRAPPER_ARG}: usage: FILE PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let status = match Command::new(&program).args(args).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reverb-bench {WRAPPER_ARG}: cannot run {program:?}: {e}");
            return ExitCode::from(127);
        }
    };
    let peak = match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => u64::try_from(u.max_rss()).unwrap_or(0) * 1024,
        Err(e) => {
            eprintln!("reverb-bench {WRAPPER_ARG}: getrusage: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::write(PathBuf::from(&file), format!("{peak}\n")) {
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
        let peak = read(&file).expect("the wrapper wrote its figure");
        assert!(peak >= 40_000_000, "peak {peak}");
        assert!(peak < 4_000_000_000, "peak {peak}");
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
