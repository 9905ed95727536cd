//! `reverb-restore`: copy a version, or a path in it, out of the vault exactly (docs/cli.md).
//! A thin edge over `reverb_common::restore`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use reverb_common::Vault;
use reverb_common::exit::EXIT_OK;
use reverb_common::{cli, index, job, restore, tsv};

/// Copy a version (or one path in it) out of the vault: vault links resolved, source links
/// kept as links, modes, times, owners (as root), xattrs and holes restored.
#[derive(Debug, Parser)]
#[command(name = "reverb-restore", version, about, long_about = None)]
pub struct Args {
    /// The vault directory.
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    pub vault: Option<PathBuf>,
    /// Take the vault from this configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The job's name.
    #[arg(long, value_name = "NAME")]
    pub job: String,
    #[command(flatten)]
    pub what: What,
}

/// Which version, what of it, where to and how: the flags `reverberator restore JOB`
/// takes too (docs/cli.md).
#[derive(Debug, Clone, clap::Args)]
pub struct What {
    /// Which version: its number, its directory name, `latest`, or a time (`2026-11-24T21:00`
    /// in UTC, `"2 hours ago"`): the newest version taken at or before it.
    #[arg(long, value_name = "N|DIR|latest|TIME", default_value = "latest")]
    pub from: String,
    /// A path inside the version (relative to the source) to restore instead of all of it.
    #[arg(long, value_name = "P")]
    pub path: Option<PathBuf>,
    /// Where to restore to (created; must not exist or be an empty directory, and not be in
    /// the vault).
    #[arg(long, value_name = "DEST")]
    pub to: PathBuf,
    /// Accept a non-empty destination: restored entries replace what is at their place,
    /// everything else in DEST is left alone.
    #[arg(long, conflicts_with = "delete")]
    pub overwrite: bool,
    /// Do not check restored files against their checksums.
    #[arg(long)]
    pub no_verify: bool,
    /// Make DEST exactly the version: also remove what the version does not hold (says how
    /// many entries).
    #[arg(long)]
    pub delete: bool,
}

/// The clap command (for man pages and completions).
pub fn cli() -> clap::Command {
    Args::command()
}

/// Runs the tool with these arguments; returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    main_with(&Args::parse_from(args))
}

/// Runs the tool with these arguments, parsed already (`reverberator restore`); returns
/// the exit code.
pub fn main_with(args: &Args) -> i32 {
    cli::finish("reverb-restore", run(args))
}

/// The tool's body.
pub fn run(args: &Args) -> anyhow::Result<i32> {
    let target = job::target(
        args.vault.as_deref(),
        &args.job,
        None,
        args.config.as_deref(),
    )?;
    let vault = Vault::open(&target.vault)?;
    let (dir, _file) = job::find(&vault, &target.name)?;
    let rows = index::read_index_or_empty(&dir.index())?;
    let what = &args.what;
    let row = restore::pick_from(&rows, &what.from, std::time::SystemTime::now())?;
    let rel = what.path.clone().unwrap_or_default();
    let existing = match (what.overwrite, what.delete) {
        (_, true) => restore::Existing::Delete,
        (true, false) => restore::Existing::Overwrite,
        (false, false) => restore::Existing::Refuse,
    };
    let done = restore::restore_into(&dir, &row.dir, &rel, &what.to, existing, !what.no_verify)?;
    if what.delete {
        eprintln!(
            "reverb-restore: removed {} entries from {} that {} does not hold",
            done.removed,
            tsv::escape_os(what.to.as_os_str()),
            row.dir
        );
    }
    for dev in &done.skipped_devices {
        eprintln!(
            "reverb-restore: skipped device node {} (needs root)",
            tsv::escape_os(dev.as_os_str())
        );
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        super::cli().debug_assert();
    }
}
