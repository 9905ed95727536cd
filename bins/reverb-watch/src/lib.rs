//! `reverb-watch [--quiet-period DUR] [--max-delay DUR] [--exclude PAT]... [-x] SRC` (docs/cli.md):
//! watch one tree recursively and print event lines (docs/format.md#text-files) on stdout.
//!
//! A thin edge over [`reverb_common::watch`]: parses the flags, prints the header once every
//! watch is in place (a reader may take the header as "ready"), then one line per event,
//! flushed per line. Exit codes: 0 on SIGTERM/SIGINT (after a final `flush` when events are
//! pending) and when stdout's reader goes away (broken pipe); 1 when SRC cannot be watched
//! (missing, not a directory) or the root is deleted or moved; 2 for bad flags; 3 when an
//! inotify limit (`fs.inotify.max_user_watches`, `max_user_instances`) stops the watch, at
//! start or later (the reader falls back to rescans); 75 when the root's filesystem is
//! unmounted (retry once it is back). Warnings (a directory that cannot be watched) go to
//! stderr, prefixed `reverb-watch:`, and the watch goes on.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use reverb_common::Error;
use reverb_common::cli;
use reverb_common::events::HEADER;
use reverb_common::exclude::{Excludes, check_pattern};
use reverb_common::exit::EXIT_OK;
use reverb_common::settings::parse_duration;
use reverb_common::watch::{WatchOptions, Watcher};

const TOOL: &str = "reverb-watch";

/// Watch a directory tree recursively with inotify and print one event line per change.
///
/// Output: a header `time event type path to_path`, then TAB-separated event lines
/// (create, modify, attrib, delete, move, overflow, unmount, flush) with paths relative to
/// SRC. An `overflow` line means events were lost: the reader must rescan.
#[derive(Debug, Parser)]
#[command(name = "reverb-watch", version, about, long_about)]
pub struct Args {
    /// Print a `flush` line once no event has come for this long after a burst (e.g. `30s`,
    /// `500ms`).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub quiet_period: Option<Duration>,

    /// Under constant change, print a `flush` at most this long after a burst's first event
    /// (e.g. `10m`).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub max_delay: Option<Duration>,

    /// Ignore paths matching this gitignore-style pattern (relative to SRC); repeatable.
    /// Excluded directories are not watched.
    #[arg(long, value_name = "PAT", value_parser = parse_pattern)]
    pub exclude: Vec<String>,

    /// Stay on SRC's filesystem (as `rsync -x`): a filesystem mounted below SRC is neither
    /// watched nor scanned; its mountpoint is reported as an entry of its parent.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,

    /// The directory to watch.
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
}

fn parse_pattern(p: &str) -> Result<String, String> {
    check_pattern(p).map(|()| p.to_owned())
}

/// The command line definition (for man pages and completions).
pub fn cli() -> clap::Command {
    Args::command()
}

/// Runs `reverb-watch` with `args` (the program name first) and returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    cli::finish(TOOL, run(args))
}

/// The body: set up, print the header, run until stopped.
pub fn run(args: Args) -> anyhow::Result<i32> {
    // Started by a supervisor: exit when it does, even when it is killed.
    if !reverb_common::watch::tie_to_supervisor()? {
        return Ok(EXIT_OK);
    }
    let excludes = Excludes::new(&args.exclude).map_err(Error::Usage)?;
    let options = WatchOptions {
        quiet_period: args.quiet_period,
        max_delay: args.max_delay,
        one_file_system: args.one_file_system,
    };
    let mut watcher = Watcher::new(&args.src, excludes, options)?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        watcher
            .stop_on_signal(signal)
            .context("cannot install a signal handler")?;
    }
    if !cli::print_line(HEADER).context("cannot write to stdout")? {
        return Ok(EXIT_OK);
    }
    // The reader gone (a pipe closed) ends the watch at once, not at the next event.
    if let Ok(out) = std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned() {
        watcher.stop_when_closed(out);
    }
    watcher.run(
        |line| cli::print_line(&line.render()),
        |warning| eprintln!("{TOOL}: {warning}"),
    )?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        cli().debug_assert();
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let code = |a: &[&str]| main_with_args(a.iter().map(OsString::from));
        assert_eq!(code(&["reverb-watch", "--quiet-period", "soon", "/"]), 2);
        assert_eq!(code(&["reverb-watch", "--exclude", "a[", "/"]), 2);
        assert_eq!(code(&["reverb-watch"]), 2);
    }
}
