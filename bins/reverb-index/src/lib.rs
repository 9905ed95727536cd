//! `reverb-index`: show, recount or check a job's index (docs/cli.md, I1–I7). A thin edge over
//! `reverb_common::index` and `reverb_common::check`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use reverb_common::JobDir;
use reverb_common::exit::{EXIT_FAILURE, EXIT_OK};
use reverb_common::index::{self, IndexRow};
use reverb_common::lock::{JobLock, Wait};
use reverb_common::{check, cli, job, tsv};

/// Show a job's index.tsv (one row per retained version), recount it from the disk, or
/// check the job against the vault's invariants. Without --job, every job of the vault
/// (rows then get a `job` column first).
#[derive(Debug, Parser)]
#[command(name = "reverb-index", version, about, long_about = None)]
pub struct Args {
    /// The vault directory (must hold reverberator-vault.toml).
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    pub vault: Option<PathBuf>,
    /// Take the jobs and their vaults from this configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only this job (default: every job of the vault).
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Recompute files and sizes of every version from the disk and rewrite index.tsv
    /// (takes the job lock), then print the rows.
    #[arg(long, conflicts_with = "check")]
    pub recount: bool,
    /// Verify links, versions, sizes and bookkeeping; print one line per problem
    /// (`job, kind, path, detail`) and exit 1 when there is any. Read-only.
    #[arg(long)]
    pub check: bool,
    /// With --recount: exit 75 at once when the job lock is held, instead of waiting.
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
    cli::finish("reverb-index", run(&args))
}

/// The tool's body.
pub fn run(args: &Args) -> anyhow::Result<i32> {
    let selected = job::select(
        args.vault.as_deref(),
        args.config.as_deref(),
        args.job.as_deref(),
    )?;
    let jobs: Vec<JobDir> = selected.iter().map(|(_, d)| d.clone()).collect();
    let with_job = args.job.is_none();
    if args.check {
        return print_problems(args, &jobs);
    }
    if !args.json {
        let mut header: Vec<&str> = Vec::new();
        if with_job {
            header.push("job");
        }
        header.extend(index::COLUMNS);
        if !cli::print_line(&header.join("\t"))? {
            return Ok(EXIT_OK);
        }
    }
    for dir in jobs {
        let rows = if args.recount {
            recount(args, &dir)?
        } else {
            index::read(&dir.index())?
        };
        for r in &rows {
            if !cli::print_line(&render(args, with_job.then_some(&dir.folder), r))? {
                return Ok(EXIT_OK);
            }
        }
    }
    Ok(EXIT_OK)
}

/// `--check`: one line per problem of every job; exit 1 when there is any.
fn print_problems(args: &Args, jobs: &[JobDir]) -> anyhow::Result<i32> {
    let mut found = 0usize;
    for dir in jobs {
        for p in check::check(dir)? {
            found += 1;
            let line = if args.json {
                serde_json::json!({
                    "type": "problem",
                    "job": p.job,
                    "kind": p.kind.as_str(),
                    "path": tsv::escape_os(p.path.as_os_str()),
                    "detail": p.detail,
                })
                .to_string()
            } else {
                p.to_string()
            };
            if !cli::print_line(&line)? {
                break;
            }
        }
    }
    if found > 0 {
        eprintln!("reverb-index: {found} problem(s) found");
        return Ok(EXIT_FAILURE);
    }
    Ok(EXIT_OK)
}

/// `--recount` of one job, under its lock.
fn recount(args: &Args, dir: &JobDir) -> anyhow::Result<Vec<IndexRow>> {
    let _lock = JobLock::acquire(
        &dir.lock(),
        &dir.folder,
        if args.no_wait {
            Wait::NoWait
        } else {
            Wait::Block
        },
    )?;
    let mut ctx = job::open_dir(dir.clone(), "index")?;
    // Never retire or rewrite into a vault whose disk is not the recorded one (docs/identity.md).
    job::verify_identities(&mut ctx, dir.vault_root())?;
    Ok(check::recount(&mut ctx)?)
}

fn render(args: &Args, job: Option<&String>, r: &IndexRow) -> String {
    if args.json {
        let mut v = serde_json::json!({
            "type": "version",
            "version": r.version,
            "dir": r.dir,
            "created": r.created,
            "files": r.files,
            "changed": r.changed,
            "held_bytes": r.held_bytes,
            "logical_bytes": r.logical_bytes,
        });
        if let Some(j) = job {
            v["job"] = serde_json::Value::String(j.clone());
        }
        return v.to_string();
    }
    let line = index::render(std::slice::from_ref(r));
    let row = line.lines().nth(1).unwrap_or_default();
    match job {
        Some(j) => format!("{}\t{row}", tsv::escape(j)),
        None => row.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        super::cli().debug_assert();
    }
}
