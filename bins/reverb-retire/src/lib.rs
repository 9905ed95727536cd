//! `reverb-retire`: enforce a job's `keep_versions` and `vault_size_limit` (docs/cli.md, docs/retirement.md).
//! A thin edge over `reverb_common::retire`; all logic lives in the library.

use std::ffi::OsString;

use clap::{CommandFactory, Parser};
use reverb_common::JobDir;
use reverb_common::cli::{JobsArgs, JsonArgs, LockArgs};
use reverb_common::exit::EXIT_OK;
use reverb_common::jobfile::JobFile;
use reverb_common::lock::JobLock;
use reverb_common::retire::{self, Retired};
use reverb_common::settings::parse_size;
use reverb_common::{cli, index, job, tsv};

/// Retire a job's oldest versions while it has more than its count limit or its folder is
/// larger than its size limit, moving data that newer versions still use forward first.
/// Without --job, every job of the vault. Safe for cron: waits for the job lock.
#[derive(Debug, Parser)]
#[command(name = "reverb-retire", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub jobs: JobsArgs,
    /// Keep at most N versions (0 = no count limit); overrides job.toml's keep_versions.
    #[arg(long, value_name = "N")]
    pub keep: Option<u64>,
    /// Retire while the job folder is larger than SIZE (e.g. 50GiB, 10MB, 4096);
    /// overrides job.toml's vault_size_limit.
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub max_size: Option<u64>,
    /// Print what would be kept and retired, one line per version; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub output: JsonArgs,
}

fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text)
}

/// The clap command (for man pages and completions).
pub fn cli() -> clap::Command {
    Args::command()
}

/// Runs the tool with these arguments; returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args = Args::parse_from(args);
    cli::finish("reverb-retire", run(&args))
}

/// The tool's body.
pub fn run(args: &Args) -> anyhow::Result<i32> {
    let jobs = args.jobs.job_dirs()?;
    let mut first_err: Option<anyhow::Error> = None;
    for dir in jobs {
        if let Err(e) = run_job(args, dir.clone()) {
            if args.jobs.job.is_some() {
                return Err(e);
            }
            // One job's failure never stops another: report it and go on.
            eprintln!("reverb-retire: job {}: {e:#}", dir.folder);
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Ok(cli::exit_code(&e)),
        None => Ok(EXIT_OK),
    }
}

fn run_job(args: &Args, dir: JobDir) -> anyhow::Result<()> {
    let file = JobFile::read(&dir.job_toml())?;
    let keep = args.keep.unwrap_or(file.settings.keep_versions);
    let limit = args.max_size.or(file.settings.vault_size_limit);
    if keep == 0 && limit.is_none() && file.state.retiring.is_none() {
        eprintln!(
            "reverb-retire: job {}: nothing to do: no count limit (keep 0) and no size limit",
            dir.folder
        );
        return Ok(());
    }
    if args.dry_run {
        return print_plan(args, &dir, keep, limit);
    }
    let _lock = JobLock::acquire(&dir.lock(), &dir.folder, args.lock.wait())?;
    let mut ctx = job::open_dir(dir.clone(), "retire")?;
    // Never retire or rewrite into a vault whose disk is not the recorded one (docs/identity.md).
    job::verify_identities(&mut ctx, dir.vault_root())?;
    let folder = dir.folder.clone();
    let json = args.output.json;
    let mut print = |r: &Retired| {
        let line = if json {
            serde_json::json!({
                "type": "retired",
                "job": folder,
                "dir": r.dir,
                "reason": r.reason.as_str(),
                "freed_bytes": r.freed_bytes,
            })
            .to_string()
        } else {
            tsv::join(&[&tsv::escape(&folder), &r.dir, &r.freed_bytes.to_string()])
        };
        // A closed stdout must not stop a retirement half way: the work goes on.
        let _ = cli::print_line(&line);
    };
    retire::enforce_with(&mut ctx, keep, limit, false, &mut print)?;
    reverb_common::batch::compact_journal(&mut ctx, "retire");
    Ok(())
}

/// `--dry-run`: the policy's verdict on every version, one line each; nothing written.
fn print_plan(args: &Args, dir: &JobDir, keep: u64, limit: Option<u64>) -> anyhow::Result<()> {
    let rows = if dir.index().exists() || dir.versions_on_disk()?.is_empty() {
        index::read_index_or_empty(&dir.index())?
    } else {
        index::read(&dir.index())?
    };
    for d in retire::plan(&rows, keep, limit) {
        let line = if args.output.json {
            serde_json::json!({
                "type": "plan",
                "job": dir.folder,
                "dir": d.dir,
                "action": d.action.as_str(),
                "reason": d.reason.as_str(),
                "estimated_freed_bytes": d.estimated_freed,
            })
            .to_string()
        } else {
            tsv::join(&[
                &tsv::escape(&dir.folder),
                &d.dir,
                d.action.as_str(),
                d.reason.as_str(),
            ])
        };
        if !cli::print_line(&line)? {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        super::cli().debug_assert();
    }
}
