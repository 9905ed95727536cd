//! `reverb-retire`: enforce a job's `keep_*` rules and `vault_size_limit` (docs/cli.md, docs/retirement.md).
//! A thin edge over `reverb_common::retire`; all logic lives in the library.

use std::collections::HashMap;
use std::ffi::OsString;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use reverb_common::JobDir;
use reverb_common::cli::{JobsArgs, JsonArgs, LockArgs};
use reverb_common::exit::EXIT_OK;
use reverb_common::jobfile::JobFile;
use reverb_common::lock::JobLock;
use reverb_common::retire::{self, Action, Limits, Retired, Rules};
use reverb_common::settings::{JobSettings, parse_duration, parse_size};
use reverb_common::{cli, config, index, job, tsv};

/// Retire the versions of a job that no keep rule keeps, then the oldest while its folder
/// is larger than its size limit, moving data that newer versions still use forward first.
/// Any --keep* flag replaces the job's whole rule set for this run (rules not given are 0).
/// Without --job, every job of the vault. Safe for cron: waits for the job lock.
#[derive(Debug, Parser)]
#[command(name = "reverb-retire", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub jobs: JobsArgs,
    #[command(flatten)]
    pub rules: RuleArgs,
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

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

/// The `--keep*` flags: given at all, they are the whole rule set for this run.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RuleArgs {
    /// Keep the newest N versions (keep_versions).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep: Option<u64>,
    /// Keep every version younger than DUR (keep_within; e.g. 1h, 7days).
    #[arg(long, value_name = "DUR", value_parser = duration_arg)]
    pub keep_within: Option<Duration>,
    /// Keep the newest version of each of the last N hours (local time).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<u64>,
    /// Keep the newest version of each of the last N days.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<u64>,
    /// Keep the newest version of each of the last N ISO weeks.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<u64>,
    /// Keep the newest version of each of the last N months.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<u64>,
    /// Keep the newest version of each of the last N years.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<u64>,
}

impl RuleArgs {
    /// The rule set of this run: the flags' (rules not given are 0) when any is given,
    /// else the job's.
    pub fn rules_or(&self, job: Rules) -> Rules {
        let given = [
            self.keep,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .iter()
        .any(Option::is_some)
            || self.keep_within.is_some();
        if !given {
            return job;
        }
        Rules {
            versions: self.keep.unwrap_or(0),
            within: self.keep_within.unwrap_or(Duration::ZERO),
            hourly: self.keep_hourly.unwrap_or(0),
            daily: self.keep_daily.unwrap_or(0),
            weekly: self.keep_weekly.unwrap_or(0),
            monthly: self.keep_monthly.unwrap_or(0),
            yearly: self.keep_yearly.unwrap_or(0),
        }
    }
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
    let configured = configured_settings(args)?;
    let mut first_err: Option<anyhow::Error> = None;
    for dir in jobs {
        let settings = configured
            .get(&(
                job::canonical_or_nearest(dir.vault_root()),
                dir.folder.clone(),
            ))
            .cloned();
        if let Err(e) = run_job(args, dir.clone(), settings) {
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

/// With `--config`, each job's settings from the configuration, by vault and folder (two
/// vaults may each have a folder of that name), which take the place of job.toml's.
fn configured_settings(
    args: &Args,
) -> anyhow::Result<HashMap<(std::path::PathBuf, String), JobSettings>> {
    let Some(path) = &args.jobs.config else {
        return Ok(HashMap::new());
    };
    let cfg = config::load(&config::locate(Some(path))?)?;
    Ok(cfg
        .jobs
        .into_iter()
        .map(|j| ((job::canonical_or_nearest(&j.vault), j.folder), j.settings))
        .collect())
}

fn run_job(args: &Args, dir: JobDir, configured: Option<JobSettings>) -> anyhow::Result<()> {
    let file = JobFile::read(&dir.job_toml())?;
    let settings = configured.unwrap_or(file.settings.clone());
    let rules = args.rules.rules_or(settings.rules());
    let limit = args.max_size.or(settings.vault_size_limit);
    if rules.is_empty() && limit.is_none() && file.state.retiring.is_none() {
        eprintln!(
            "reverb-retire: job {}: nothing to do: every keep rule is 0 and there is no size limit",
            dir.folder
        );
        return Ok(());
    }
    let limits = Limits::now(rules, limit);
    if args.dry_run {
        return print_plan(args, &dir, &limits);
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
    // Only a retirement moves the oldest version: with none, there is nothing to compact
    // (and the supervisor runs this after every version).
    if !retire::enforce_with(&mut ctx, &limits, false, &mut print)?.is_empty() {
        reverb_common::batch::compact_journal(&mut ctx);
    }
    Ok(())
}

/// `--dry-run`: the plan's verdict on every version, one line each; nothing written. An
/// unmeetable size limit is the error the real run would report.
fn print_plan(args: &Args, dir: &JobDir, limits: &Limits) -> anyhow::Result<()> {
    let rows = if dir.index().exists() || dir.versions_on_disk()?.is_empty() {
        index::read_index_or_empty(&dir.index())?
    } else {
        index::read(&dir.index())?
    };
    let plan = limits.plan(&rows)?;
    for d in &plan.decisions {
        let freed = if d.action == Action::Retire {
            d.estimated_freed.to_string()
        } else {
            "-".to_owned()
        };
        let line = if args.output.json {
            serde_json::json!({
                "type": "plan",
                "job": dir.folder,
                "dir": d.dir,
                "action": d.action.as_str(),
                "rule": d.decided_by(),
                "freed_bytes": d.estimated_freed,
            })
            .to_string()
        } else {
            tsv::join(&[
                &tsv::escape(&dir.folder),
                &d.dir,
                d.action.as_str(),
                &d.decided_by(),
                &freed,
            ])
        };
        if !cli::print_line(&line)? {
            return Ok(());
        }
    }
    match &plan.unmeetable {
        Some(u) => Err(u.clone().into_error(&dir.folder).into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        super::cli().debug_assert();
    }
}
