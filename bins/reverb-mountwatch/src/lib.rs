//! `reverb-mountwatch [--below DIR]… PATH…` (docs/cli.md): prints each path's filesystem
//! identity, then a line for every change of it (and, with `--below`, every filesystem
//! mounted or unmounted below DIR), until SIGTERM/SIGINT or until its reader goes away.
//!
//! A thin shell over [`reverb_common::mountwatch`], which owns the event source and the
//! per-path states; this crate only parses arguments, wires signals to a self-pipe and
//! prints. Output: the TSV header `time path state matched_by identity mountpoint`, then one
//! flushed line per record (or JSON lines with `--json`); see `docs/identity.md`.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use nix::fcntl::OFlag;
use reverb_common::cli::{finish, print_line};
use reverb_common::mountwatch::{HEADER, MountTable, PathWatch, Record, Submounts, Wake};

const TOOL: &str = "reverb-mountwatch";

/// Report each path's filesystem identity, then every change of it.
///
/// Prints `time path state matched_by identity mountpoint` lines (TSV with a header),
/// where state is `present`, `lost` or `restored`, and with `--below DIR`, `mounted` or
/// `unmounted` for each filesystem mounted below DIR (at start, then every change; the
/// mountpoint column names it). Blocks on mount-table changes (as `findmnt --poll` does);
/// exits 0 on SIGTERM/SIGINT or when its reader goes away.
#[derive(Debug, Parser)]
#[command(name = TOOL, version, about, long_about)]
pub struct Args {
    /// Print JSON lines (one object per record, with a `type` field) instead of TSV.
    #[arg(long)]
    pub json: bool,

    /// Print the start lines and exit instead of watching.
    #[arg(long)]
    pub once: bool,

    /// Also report every filesystem mounted (`mounted`) or unmounted (`unmounted`) below
    /// DIR (a job's source); repeatable.
    #[arg(long, value_name = "DIR")]
    pub below: Vec<PathBuf>,

    /// The paths to watch (a job's source, its vault). A missing path starts as `lost`.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// The command line definition (for man pages and completions).
pub fn cli() -> clap::Command {
    Args::command()
}

/// Parses `args` (program name first) and runs; returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    match Args::try_parse_from(args) {
        Ok(a) => finish(TOOL, run(&a)),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                reverb_common::exit::EXIT_USAGE
            } else {
                reverb_common::exit::EXIT_OK
            }
        }
    }
}

/// Prints records; `Ok(false)` when stdout's reader is gone.
fn emit(json: bool, records: &[Record]) -> anyhow::Result<bool> {
    for r in records {
        let line = if json { r.json_line() } else { r.tsv_line() };
        if !print_line(&line).context("cannot write to stdout")? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The tool body.
pub fn run(args: &Args) -> anyhow::Result<i32> {
    // Started by a supervisor: exit when it does, even when it is killed.
    if !reverb_common::watch::tie_to_supervisor()? {
        return Ok(0);
    }
    // Signals write to a self-pipe that wakes the poll: no flag checking on a timer.
    let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .context("cannot create the signal pipe")?;
    let wake_w2 = wake_w
        .try_clone()
        .context("cannot create the signal pipe")?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, wake_w)
        .context("cannot handle SIGTERM")?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, wake_w2)
        .context("cannot handle SIGINT")?;

    // Open the table before the first gathering so no change falls between the two.
    let table = MountTable::open()?;
    let (mut watch, start) = PathWatch::start(&args.paths);
    let (mut below, mounted) = Submounts::start(&args.below);
    if !args.json && !print_line(HEADER).context("cannot write to stdout")? {
        return Ok(0);
    }
    if !emit(args.json, &start)? || !emit(args.json, &mounted)? || args.once {
        return Ok(0);
    }
    loop {
        match table.wait(None, Some(wake_r.as_fd()))? {
            Wake::Woken => return Ok(0),
            Wake::TimedOut => {}
            Wake::Changed => {
                let mut lines = watch.recheck();
                lines.extend(below.recheck());
                if !emit(args.json, &lines)? {
                    return Ok(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_valid() {
        cli().debug_assert();
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(main_with_args([OsString::from(TOOL)]), 2);
        assert_eq!(
            main_with_args([TOOL, "--bogus", "/"].map(OsString::from)),
            2
        );
        assert_eq!(main_with_args([TOOL, "--help"].map(OsString::from)), 0);
    }
}
