//! `reverb-bench`: the project's benchmark against its peers (docs/benchmarks.md).
//!
//! Builds a realistic tree in a scratch directory, then measures our real binaries against
//! `cp`, `rsync` and `inotifywait` in the same run, `--reps` times each, and prints one
//! table of medians (ours, peer, each with its CPU time, ratio = ours / peer, target,
//! pass/fail), then the target table (T1–T8 computed from those rows), also written as
//! TSV and JSON. It installs nothing: a missing peer tool skips its rows. See
//! `docs/benchmarks.md` for what each measure does and the figures of a reference run.
//!
//! Modules: [`tree`] (generation and changes), [`peers`] (running and timing programs),
//! [`measures`] (the scenarios), [`fsstat`] (entries, blocks, inodes), [`report`] (rows,
//! medians, output), [`targets`] (T1–T8 from the rows), [`machine`] (what the run was on).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

mod fsstat;
mod machine;
mod measures;
mod peak;
mod peers;
mod report;
mod targets;
mod tree;

use measures::Bench;
use peers::{Cache, Tools};

/// Benchmark reverberator against cp -a, rsync --link-dest and inotifywait -r.
#[derive(Debug, Parser)]
#[command(name = "reverb-bench", version, about, long_about = None)]
struct Args {
    /// Files in the generated tree.
    #[arg(long, default_value_t = 100_000)]
    files: usize,
    /// Directories in the tree (default: one per 20 files; the random shape only).
    #[arg(long)]
    dirs: Option<usize>,
    /// The tree's layout: `random` (the deep random tree) or `regular` (20 × 25 × 10
    /// directories of 20 files each at 100,000 files).
    #[arg(long, value_enum, default_value = "random")]
    shape: tree::Shape,
    /// Repetitions of each timed measure (medians are reported); default 3, and 1 in the
    /// scale run.
    #[arg(long)]
    reps: Option<usize>,
    /// Parent of the scratch directory (default /var/tmp); it must hold (3 × reps + 1) × the
    /// tree: the first-copy measure keeps all its copies until its last repetition. A tmpfs
    /// (`--dir /dev/shm`) takes the disk out of the figures: the way to see the software's
    /// own cost when the disk is noisy (compare the CPU columns too).
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    dir: PathBuf,
    /// Results as TSV here, and as JSON next to it (same name, .json).
    #[arg(
        long,
        value_name = "FILE.tsv",
        default_value = "target/reverb-bench/results.tsv"
    )]
    out: PathBuf,
    /// Where reverb-snap, reverb-retire, reverb-watch are (default: next to this executable).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Also measure the first copy on a loop-mounted btrfs (root only).
    #[arg(long)]
    btrfs: bool,
    /// Drop the page cache before every timed run (root only); default: warm runs.
    #[arg(long)]
    cold: bool,
    /// Versions (and --link-dest snapshots) to hold for disk usage and retirement.
    #[arg(long, default_value_t = 20)]
    versions: usize,
    /// Quiet period for the latency measure, in milliseconds.
    #[arg(long, default_value_t = 200)]
    quiet_ms: u64,
    /// Seed of the tree and of the choice of changed files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Versions the steady-state measure holds (0 = skip it).
    #[arg(long, default_value_t = 110)]
    steady_versions: usize,
    /// Only the steady-state measure (after a first version that is not timed) and the
    /// restic/borg comparison.
    #[arg(long)]
    steady_only: bool,
    /// Skip the restic/borg comparison.
    #[arg(long)]
    no_backup_peers: bool,
    /// Leave the scratch directory in place (its path is printed).
    #[arg(long)]
    keep_scratch: bool,
    /// Only the first copy and the integrity measures (checksums' cost, verify --data).
    #[arg(long)]
    integrity_only: bool,
    /// Only replication (T8), after a first version that is not timed.
    #[arg(long)]
    replication_only: bool,
    /// At 1,000,000 files or more, run every measure instead of the scale run's (T7).
    #[arg(long, conflicts_with = "scale")]
    full: bool,
    /// Only the scale run's measures (T7), whatever the tree's size (the default from
    /// 1,000,000 files).
    #[arg(long)]
    scale: bool,
    /// Largest small file, in bytes (default 16384; 4096 in the scale run).
    #[arg(long, value_name = "BYTES")]
    small_max: Option<usize>,
    /// One file in this many is a 1 MiB file, 0 for none (default 400; 4000 in the scale
    /// run).
    #[arg(long, value_name = "N")]
    large_every: Option<usize>,
    /// Only the rescans (T3, T3b): the unchanged rescan after a first version and a rescan
    /// (neither timed), then the restic/borg comparison unless --no-backup-peers.
    #[arg(long)]
    rescan_only: bool,
}

impl Args {
    /// The scale run (T7): a tree of 1,000,000 files or more, unless `--full`.
    fn scale(&self) -> bool {
        self.scale || (self.files as u64 >= targets::SCALE_FILES && !self.full)
    }

    fn reps(&self) -> usize {
        self.reps.unwrap_or(if self.scale() { 1 } else { 3 }).max(1)
    }

    fn sizes(&self) -> tree::Sizes {
        let (small_max, large_every) = if self.scale() {
            (4096, 4000)
        } else {
            (tree::SMALL_MAX, tree::ONE_MIB_EVERY)
        };
        tree::Sizes {
            small_max: self.small_max.unwrap_or(small_max),
            large_every: self.large_every.unwrap_or(large_every),
        }
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == peak::WRAPPER_ARG) {
        return peak::run_wrapper(argv);
    }
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reverb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let tools = Tools::find(args.bin_dir.as_deref())?;
    let cache = if args.cold { Cache::Cold } else { Cache::Warm };
    let tmp = tempfile::Builder::new()
        .prefix("reverb-bench-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("cannot make a scratch directory in {}", args.dir.display()))?;
    let scratch = tmp.path().to_path_buf();
    eprintln!("scratch: {}", scratch.display());
    let mut rng = tree::Rng::new(args.seed);
    let dirs = args.dirs.unwrap_or(args.files / 20).max(1);
    let t = Instant::now();
    let sizes = args.sizes();
    let tree = tree::generate(
        &scratch.join("src"),
        args.shape,
        args.files,
        dirs,
        sizes,
        &mut rng,
    )?;
    eprintln!(
        "tree: {:?} in {:.1} s",
        tree.stats,
        t.elapsed().as_secs_f64()
    );
    let meta = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine::describe(&scratch),
        "tree": tree.stats,
        "reps": args.reps(),
        "sizes": sizes,
        "scale": args.scale(),
        "cache": cache,
        "seed": args.seed,
        "shape": args.shape,
        "quiet_ms": args.quiet_ms,
    });
    let mut b = Bench {
        tools,
        cache,
        reps: args.reps(),
        vault: scratch.join("vault"),
        scratch,
        tree,
        rng,
        rows: Vec::new(),
        chain: Vec::new(),
        versions: args.versions.max(2),
        quiet_ms: args.quiet_ms,
        scale: args.scale(),
    };
    // The tree is older than the racily clean window (2 s, docs/design.md) when the first
    // version is taken, as a user's tree is: otherwise its youngest files stay racily clean
    // in every version holding them, and every rescan compares them by content (a full
    // run's first copy starts within a second of the tree's last file).
    std::thread::sleep(std::time::Duration::from_secs(3));
    if args.scale() {
        measures::scale::scale(&mut b)?;
        return finish(&args, tmp, &mut b, &meta);
    }
    if args.replication_only {
        measures::steady::first_version(&b)?;
        measures::replication::replication(&mut b)?;
        return finish(&args, tmp, &mut b, &meta);
    }
    if args.rescan_only {
        measures::steady::first_version(&b)?;
        // The rescan that writes the source index, as the first rescan of a job does.
        measures::steady::first_version_rescan(&b)?;
        measures::versions::rescan_unchanged(&mut b)?;
        if !args.no_backup_peers {
            measures::backup_peers::backup_peers(&mut b)?;
        }
        return finish(&args, tmp, &mut b, &meta);
    }
    if args.steady_only {
        if args.steady_versions > 0 {
            measures::steady::first_version(&b)?;
            measures::steady::steady_state(&mut b, args.steady_versions)?;
            measures::web::pages(&mut b)?;
        }
        if !args.no_backup_peers {
            measures::backup_peers::backup_peers(&mut b)?;
        }
        return finish(&args, tmp, &mut b, &meta);
    }
    measures::copy::first_copy(&mut b)?;
    measures::integrity::verify_data(&mut b)?;
    measures::integrity::first_copy_checksums(&mut b)?;
    if args.btrfs {
        measures::copy::first_copy_btrfs(&mut b)?;
    }
    if !args.integrity_only {
        measures::versions::incremental(&mut b, &[10, 100, 1000])?;
        measures::versions::rescan_unchanged(&mut b)?;
        measures::versions::usage_of_versions(&mut b)?;
        measures::versions::retire(&mut b)?;
        if args.steady_versions > 0 {
            measures::steady::steady_state(&mut b, args.steady_versions)?;
            measures::web::pages(&mut b)?;
        }
        if !args.no_backup_peers {
            measures::backup_peers::backup_peers(&mut b)?;
        }
        measures::watch::setup(&mut b)?;
        measures::watch::latency(&mut b)?;
        measures::replication::replication(&mut b)?;
    }
    finish(&args, tmp, &mut b, &meta)
}

/// Prints and writes the results; keeps the scratch directory if asked.
fn finish(
    args: &Args,
    tmp: tempfile::TempDir,
    b: &mut Bench,
    meta: &serde_json::Value,
) -> Result<()> {
    measures::scale::peak_rows(b);
    println!("{}", serde_json::to_string_pretty(meta)?);
    println!("{}", report::table(&b.rows));
    // The tree's files as asked for: `--files 1000000` makes one in a thousand a symlink,
    // which `stats.files` (regular files) leaves out.
    let scope = targets::Scope {
        files: b.tree.stats.files + b.tree.stats.symlinks,
        dirs: b.tree.stats.dirs,
    };
    let verdicts = targets::evaluate(&b.rows, scope);
    println!("{}", targets::table(&verdicts));
    let count = |v: Option<bool>| verdicts.iter().filter(|t| t.passed() == v).count();
    eprintln!(
        "targets: {} pass, {} fail, {} not measured",
        count(Some(true)),
        count(Some(false)),
        count(None)
    );
    report::write_files(&args.out, &b.rows, &verdicts, meta)?;
    eprintln!(
        "wrote {} and {}",
        args.out.display(),
        args.out.with_extension("json").display()
    );
    if args.keep_scratch {
        eprintln!("scratch kept: {}", tmp.keep().display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
