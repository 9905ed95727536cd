//! `reverb-index`: show, recount or check a job's index (docs/cli.md, I1–I7). A thin edge over
//! `reverb_common::index` and `reverb_common::check`.

use std::ffi::OsString;

use clap::{CommandFactory, Parser};
use reverb_common::JobDir;
use reverb_common::cli::{JobsArgs, JsonArgs, LockArgs};
use reverb_common::exit::{EXIT_FAILURE, EXIT_OK};
use reverb_common::index::{self, IndexRow};
use reverb_common::lock::JobLock;
use reverb_common::{check, checksums, cli, job, tsv};

/// Show a job's index.tsv (one row per retained version), recount it from the disk, or
/// check the job against the vault's invariants. Without --job, every job of the vault
/// (rows then get a `job` column first).
#[derive(Debug, Parser)]
#[command(name = "reverb-index", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub jobs: JobsArgs,
    /// Recompute files and sizes of every version from the disk and rewrite index.tsv
    /// (takes the job lock), then print the rows.
    #[arg(long, conflicts_with = "check")]
    pub recount: bool,
    /// Verify links, versions, sizes and bookkeeping; print one line per problem
    /// (`job, kind, path, detail`) and exit 1 when there is any. Read-only.
    #[arg(long)]
    pub check: bool,
    /// With --check: also read every file every retained version holds and compare it with
    /// its checksum (a mismatch, a file without a checksum, a checksum without a file).
    #[arg(long, requires = "check")]
    pub data: bool,
    /// With --data: read at most this many bytes per second (`50MiB`), so a scheduled run
    /// does not starve the machine.
    #[arg(long, value_name = "BYTES_PER_SEC", requires = "data", value_parser = checksums::parse_rate)]
    pub max_rate: Option<u64>,
    /// With --recount: also record checksums for every stored file that has none (a vault
    /// made before checksums), from the data as it is now.
    #[arg(long, requires = "recount")]
    pub checksums: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub output: JsonArgs,
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
    let jobs = args.jobs.job_dirs()?;
    let with_job = args.jobs.job.is_none();
    if args.check {
        return print_problems(args, &jobs);
    }
    if !args.output.json {
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
            let line = if args.output.json {
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
        if args.data {
            found += checksums::verify_and_print(dir, args.max_rate, args.output.json)?;
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
    let _lock = JobLock::acquire(&dir.lock(), &dir.folder, args.lock.wait())?;
    let mut ctx = job::open_dir(dir.clone(), "index")?;
    // Never retire or rewrite into a vault whose disk is not the recorded one (docs/identity.md).
    job::verify_identities(&mut ctx, dir.vault_root())?;
    let rows = check::recount(&mut ctx)?;
    if args.checksums {
        let added = checksums::backfill(&mut ctx)?;
        eprintln!(
            "reverb-index: {}: {added} checksum(s) recorded from the data as it is now (it cannot know the original content)",
            dir.folder
        );
    }
    Ok(rows)
}

fn render(args: &Args, job: Option<&String>, r: &IndexRow) -> String {
    if args.output.json {
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
