//! The flags the vault programs share, defined once (`#[command(flatten)]` them): which
//! job(s) a program acts on (`--vault DIR` or `--config FILE`, and `--job NAME`), whether a
//! writer waits for the job lock (`--no-wait`), and whether records go out as JSON lines
//! (`--json`). docs/cli.md describes them; the help texts here are what every program
//! prints for them.

use std::path::PathBuf;

use crate::error::Result;
use crate::vault::layout::JobDir;
use crate::vault::lock::Wait;

/// `--vault`/`--config` and an optional `--job`: every job of the vault (or of the
/// configuration), or only the one named.
#[derive(Debug, Clone, clap::Args)]
pub struct JobsArgs {
    /// The vault directory (holding reverberator-vault.toml).
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    pub vault: Option<PathBuf>,
    /// Take the jobs and their vaults from this configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only this job (default: every job of the vault).
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
}

impl JobsArgs {
    /// The job folders selected, in vault order.
    pub fn job_dirs(&self) -> Result<Vec<JobDir>> {
        let selected = crate::run::selection::select(
            self.vault.as_deref(),
            self.config.as_deref(),
            self.job.as_deref(),
        )?;
        Ok(selected.into_iter().map(|(_, d)| d).collect())
    }
}

/// `--vault`/`--config` and a required `--job`: the one job a program acts on.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// The vault directory (holding reverberator-vault.toml).
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    pub vault: Option<PathBuf>,
    /// Take the vault and the job's settings from this configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The job's name (its folder is the sanitized name).
    #[arg(long, value_name = "NAME")]
    pub job: String,
}

/// `--no-wait`: a writer exits 75 at once instead of waiting for the job lock.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LockArgs {
    /// Exit 75 at once when another writer holds the job lock, instead of waiting.
    #[arg(long)]
    pub no_wait: bool,
}

impl LockArgs {
    /// How to take the job lock.
    pub fn wait(self) -> Wait {
        if self.no_wait {
            Wait::NoWait
        } else {
            Wait::Block
        }
    }
}

/// `--json`: records as JSON lines on stdout.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct JsonArgs {
    /// Print records as JSON lines.
    #[arg(long)]
    pub json: bool,
}
