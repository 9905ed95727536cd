//! `reverb-snap`: build one version of a job (SPEC §7). A thin edge over
//! `reverb_common::snapshot`; all logic lives in the library.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use reverb_common::error::{EXIT_OK, Error};
use reverb_common::lock::{JobLock, Wait};
use reverb_common::snapshot::{self, Options, Trigger};
use reverb_common::vault::Vault;
use reverb_common::{cli, job};

/// Build one version of a job: the first (a complete copy) for a new job, then a rescan
/// that versions only what differs from the current version.
#[derive(Debug, Parser)]
#[command(name = "reverb-snap", version, about, long_about = None)]
pub struct Args {
    /// The vault directory (must hold reverberator-vault.toml unless --init).
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    pub vault: Option<PathBuf>,
    /// Take the vault, source and settings of the job from this configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The job's name (its folder is the sanitized name).
    #[arg(long, value_name = "NAME")]
    pub job: String,
    /// The source folder; required the first time, checked against job.toml afterwards.
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Create the vault (directory and marker) if it does not exist yet.
    #[arg(long)]
    pub init: bool,
    /// Make a version even when a rescan would delete more than max_delete_ratio.
    #[arg(long)]
    pub force: bool,
    /// Show what would be versioned; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Exit 75 at once when another writer holds the job lock, instead of waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Print records as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// The clap command (for man pages and completions).
pub fn cli() -> clap::Command {
    Args::command()
}

/// Runs the tool with these arguments; returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args = Args::parse_from(args);
    cli::finish("reverb-snap", run(&args))
}

/// The tool's body.
pub fn run(args: &Args) -> anyhow::Result<i32> {
    let target = job::target(
        args.vault.as_deref(),
        &args.job,
        args.source.as_deref(),
        args.config.as_deref(),
    )?;
    let vault = if args.init {
        Vault::init(&target.vault)?
    } else {
        Vault::open(&target.vault)?
    };
    let dir = job::job_dir(&vault, &args.job)?;
    if !dir.exists() {
        let Some(source) = &target.source else {
            job::open(&vault, &args.job, "snap")?;
            return Err(Error::Usage(format!("unknown job {}", args.job)).into());
        };
        job::validate_source(source, vault.root())?;
        if args.dry_run {
            print_record(args, "would create", &args.job)?;
            return Ok(EXIT_OK);
        }
        let identity = job::record_identities(source, vault.root());
        job::create(
            &vault,
            &args.job,
            source,
            target.settings.clone().unwrap_or_default(),
            identity,
        )?;
    }
    let _lock = JobLock::acquire(
        &dir.lock(),
        &args.job,
        if args.no_wait {
            Wait::NoWait
        } else {
            Wait::Block
        },
    )?;
    let mut ctx = job::open_dir(dir, "snap")?;
    if let Some(source) = &target.source {
        let canon = std::fs::canonicalize(source)
            .with_context(|| format!("source {}", source.display()))?;
        if canon != ctx.file.source {
            return Err(Error::Usage(format!(
                "job {} records source {}, not {}",
                args.job,
                ctx.file.source.display(),
                source.display()
            ))
            .into());
        }
    }
    if let Some(settings) = &target.settings {
        job::update_settings(&mut ctx, settings)?;
    }
    job::verify_identities(&mut ctx, vault.root())?;
    let outcome = snapshot::take(
        &mut ctx,
        Trigger::Rescan,
        Options {
            force: args.force,
            dry_run: args.dry_run,
        },
    )?;
    if args.dry_run {
        for p in &outcome.changed_paths {
            print_record(
                args,
                "changed",
                &reverb_common::tsv::escape_os(p.as_os_str()),
            )?;
        }
    } else if let Some(v) = &outcome.version {
        print_record(args, "version", &v.dir)?;
    }
    Ok(EXIT_OK)
}

fn print_record(args: &Args, kind: &str, value: &str) -> anyhow::Result<()> {
    let line = if args.json {
        serde_json::json!({ "type": kind, "value": value }).to_string()
    } else if kind == "version" {
        value.to_owned()
    } else {
        format!("{kind}\t{value}")
    };
    cli::print_line(&line)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        super::cli().debug_assert();
    }
}
