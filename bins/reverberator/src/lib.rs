//! `reverberator`: the supervisor (`run`) and the porcelain (`status`, `versions`,
//! `history`, `diff`, `verify`, `restore`, `check-config`), docs/cli.md, docs/design.md#the-supervisor. A thin edge over
//! `reverb_common::{supervisor, porcelain, config}`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args as ClapArgs, CommandFactory, Parser, Subcommand};
use reverb_common::Error;
use reverb_common::config::{self, Config, JobConfig};
use reverb_common::exit::{EXIT_FAILURE, EXIT_OK};
use reverb_common::replicate::{Destination, ReplicateOptions};
use reverb_common::settings::{JobSettings, format_size};
use reverb_common::{JobDir, Vault};
use reverb_common::{cli, index, porcelain, supervisor, time, tsv};

/// Continuous, versioned backup of folders into a plain-directory vault.
#[derive(Debug, Parser)]
#[command(name = "reverberator", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Cmd,
}

/// Where the jobs come from: a configuration file, or one vault.
#[derive(Debug, Clone, ClapArgs)]
pub struct Where {
    /// The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Read the jobs of this vault instead of a configuration file.
    #[arg(long, value_name = "DIR", global = true)]
    pub vault: Option<PathBuf>,
    /// Print JSON lines instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Watch every configured job (or one folder given with --source and --vault) and take versions.
    Run {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Back up this folder without a configuration file (needs --vault).
        #[arg(long, value_name = "DIR", requires = "vault")]
        source: Option<PathBuf>,
        /// The vault for --source.
        #[arg(long, value_name = "DIR", requires = "source")]
        vault: Option<PathBuf>,
        /// The job name for --source (default: the folder's name; `--name` is an alias).
        #[arg(long = "job", alias = "name", value_name = "NAME", requires = "source")]
        name: Option<String>,
        /// Create missing vaults (directory and marker).
        #[arg(long)]
        init: bool,
        /// When another supervisor watches a job, wait for it to stop instead of exiting 75.
        #[arg(long)]
        wait: bool,
        /// Log every event, not only actions.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// Per job: state, last version and its age, pending changes, size against the limit, identity.
    Status {
        #[command(flatten)]
        at: Where,
    },
    /// The versions of a job.
    Versions {
        /// The job.
        job: String,
        #[command(flatten)]
        at: Where,
    },
    /// The versions in which PATH changed (exit 1 when it is in no retained version).
    History {
        /// The job.
        job: String,
        /// A path relative to the job's source, absolute inside it, or as diff/find print it.
        path: PathBuf,
        #[command(flatten)]
        at: Where,
    },
    /// Which paths match PATTERN in which retained versions, deleted ones included (exit 1 when none).
    Find {
        /// The job.
        job: String,
        /// A glob: without `/` it matches names at any depth (`*.txt`), with `/` whole paths
        /// relative to the source (`docs/**/*.md`).
        pattern: String,
        #[command(flatten)]
        at: Where,
    },
    /// Paths added, removed or changed between two versions (numbers, names or `latest`).
    Diff {
        /// The job.
        job: String,
        /// The older version.
        a: String,
        /// The newer version.
        b: String,
        #[command(flatten)]
        at: Where,
    },
    /// Take a version of JOB now (reverb-snap): --force accepts an emptied source, --source NEW --force changes the recorded source.
    Snap {
        /// The job.
        job: String,
        /// Make the version even when the deletion guard (max_delete_ratio) refuses it.
        #[arg(long)]
        force: bool,
        /// With --force: the job's new source (the configuration must name it too).
        #[arg(long, value_name = "DIR", requires = "force")]
        source: Option<PathBuf>,
        #[command(flatten)]
        at: Where,
    },
    /// Send the versions of JOB that a replica lacks, oldest first: to DEST (a vault path, or `ssh://[user@]host[:port]/path` running reverb-receive there), or to every replicate_to of the job.
    Replicate {
        /// The job.
        job: String,
        /// The replica vault: a path, or `ssh://[user@]host[:port]/path` (repeatable; default: the job's replicate_to).
        #[arg(long = "to", value_name = "DEST")]
        to: Vec<String>,
        /// The ssh program (default: replicate_ssh, else `ssh`).
        #[arg(long, value_name = "PROGRAM")]
        ssh: Option<String>,
        /// The private key ssh uses (`ssh -i`; default: replicate_identity, else ssh's own configuration).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// The receiver: its path for a local DEST, the command run on the remote host for an ssh one (default: reverb-receive).
        #[arg(long, value_name = "COMMAND")]
        receive_command: Option<String>,
        /// Create the replica vault (directory and marker) when it has none yet.
        #[arg(long)]
        init: bool,
        #[command(flatten)]
        at: Where,
    },
    /// Check every job's vault invariants (reverb-index --check on each), and that no folder or record of the vault is readable by more users than configured (vault_group).
    Verify {
        /// Only this job.
        job: Option<String>,
        /// Also read every stored file and compare it with its checksum.
        #[arg(long)]
        data: bool,
        /// With --data: read at most this many bytes per second (`50MiB`).
        #[arg(long, value_name = "BYTES_PER_SEC", requires = "data", value_parser = reverb_common::checksums::parse_rate)]
        max_rate: Option<u64>,
        #[command(flatten)]
        at: Where,
    },
    /// Copy a version of JOB, or a path in it, out of the vault to DEST (reverb-restore).
    Restore {
        /// The job.
        job: String,
        /// The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The vault (instead of a configuration file).
        #[arg(long, value_name = "DIR")]
        vault: Option<PathBuf>,
        #[command(flatten)]
        what: reverb_restore::What,
    },
    /// Load the configuration and print the resolved jobs.
    CheckConfig {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one JSON line per job instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// The clap command (for man pages and completions).
pub fn cli() -> clap::Command {
    Args::command()
}

/// Runs the tool with these arguments; returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args = Args::parse_from(args);
    cli::set_warning_sink(|m| eprintln!("{TOOL}: warning: {m}"));
    cli::finish(TOOL, run(args))
}

const TOOL: &str = "reverberator";

/// The supervisor's log: one line on stderr, prefixed with the tool's name.
fn log(line: &str) {
    eprintln!("{TOOL}: {line}");
}

struct FromConfig {
    file: PathBuf,
}

impl supervisor::JobSource for FromConfig {
    fn jobs(&self) -> reverb_common::Result<Vec<JobConfig>> {
        Ok(config::load(&self.file)?.jobs)
    }
}

struct Fixed(Vec<JobConfig>);

impl supervisor::JobSource for Fixed {
    fn jobs(&self) -> reverb_common::Result<Vec<JobConfig>> {
        Ok(self.0.clone())
    }
}

/// The tool's body.
pub fn run(args: Args) -> anyhow::Result<i32> {
    match args.command {
        Cmd::Run {
            config,
            source,
            vault,
            name,
            init,
            wait,
            verbose,
        } => {
            let opts = supervisor::Options {
                init,
                verbose,
                config_file: None,
                log,
                wait,
            };
            if let (Some(source), Some(vault)) = (source, vault) {
                let job = config::ad_hoc(&source, &vault, name.as_deref())?;
                refuse_second_job(&job)?;
                eprintln!(
                    "reverberator: job {} backs up {} into {}",
                    job.name,
                    job.source.display(),
                    job.vault.display()
                );
                return Ok(supervisor::run(&Fixed(vec![job]), &opts)?);
            }
            let file = config::locate(config.as_deref())?;
            // Errors exit 2 before anything starts; a missing source or vault only warns.
            for w in config::warnings(&config::load(&file)?, init) {
                log(&format!("warning: {w}"));
            }
            let opts = supervisor::Options {
                config_file: Some(file.clone()),
                ..opts
            };
            Ok(supervisor::run(&FromConfig { file }, &opts)?)
        }
        Cmd::CheckConfig { config, json } => check_config(config.as_deref(), json),
        Cmd::Status { at } => status(&at),
        Cmd::Versions { job, at } => versions(&job, &at),
        Cmd::History { job, path, at } => history(&job, &path, &at),
        Cmd::Find { job, pattern, at } => find(&job, &pattern, &at),
        Cmd::Diff { job, a, b, at } => diff(&job, &a, &b, &at),
        Cmd::Verify {
            job,
            data,
            max_rate,
            at,
        } => verify(&at, job.as_deref(), data.then_some(max_rate)),
        Cmd::Snap {
            job,
            force,
            source,
            at,
        } => snap(&job, force, source.as_deref(), &at),
        Cmd::Replicate {
            job,
            to,
            ssh,
            identity,
            receive_command,
            init,
            at,
        } => {
            let opts = ReplicateOptions {
                ssh,
                identity,
                receive_command,
                init,
            };
            replicate(&job, &to, opts, &at)
        }
        Cmd::Restore {
            job,
            config,
            vault,
            what,
        } => {
            // Without either, the usual configuration file, as every other subcommand.
            let config = match (&vault, config) {
                (None, None) => Some(config::locate(None)?),
                (_, config) => config,
            };
            Ok(reverb_restore::main_with(&reverb_restore::Args {
                vault,
                config,
                job,
                what,
            }))
        }
    }
}

/// A job given on the command line that does not exist yet may not back up a source
/// another job of the vault records: one tree would be versioned twice (the rule
/// check-config applies to configured jobs, docs/configuration.md). Exit 2, naming the
/// job and the command that goes on with it.
fn refuse_second_job(job: &JobConfig) -> anyhow::Result<()> {
    if JobDir::new(&job.vault, &job.folder).job_toml().exists() {
        return Ok(());
    }
    let Some(existing) = reverb_common::job::job_of_source(&job.vault, &job.source) else {
        return Ok(());
    };
    let word = |p: &Path| shell_word(&p.to_string_lossy());
    Err(Error::Usage(format!(
        "vault {} already has job `{}` backing up {}: a job `{}` would version it a second time; go on with `reverberator run --source {} --vault {} --job {}`",
        job.vault.display(),
        existing.name.escape_debug(),
        existing.source.display(),
        job.name.escape_debug(),
        word(&job.source),
        word(&job.vault),
        shell_word(&existing.name)
    ))
    .into())
}

/// `word` as one shell word: as it is when it needs no quoting, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `check-config`: the resolved jobs as TOML, or one JSON line per job.
fn check_config(config: Option<&Path>, json: bool) -> anyhow::Result<i32> {
    let file = config::locate(config)?;
    let cfg = config::load(&file)?;
    for w in config::warnings(&cfg, false) {
        eprintln!("{TOOL}: warning: {w}");
    }
    // What each vault's filesystem makes the tools do differently, as its last probe found.
    let adapted = |vault: &Path| {
        reverb_common::capabilities::recorded_capabilities(vault)
            .filter(|c| !c.adaptations().is_empty())
            .map(|c| c.summary())
    };
    if !json {
        for j in &cfg.jobs {
            if let Some(caps) = adapted(&j.vault) {
                eprintln!("{TOOL}: warning: job {}: vault on {caps}", j.name);
            }
        }
        print!("{}", config::render_resolved(&cfg));
        return Ok(EXIT_OK);
    }
    for j in &cfg.jobs {
        let mut v = serde_json::to_value(&j.settings)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), "job".into());
            o.insert("name".into(), j.name.clone().into());
            o.insert("folder".into(), j.folder.clone().into());
            o.insert(
                "source".into(),
                j.source.to_string_lossy().into_owned().into(),
            );
            o.insert(
                "vault".into(),
                j.vault.to_string_lossy().into_owned().into(),
            );
            o.insert("vault_capabilities".into(), adapted(&j.vault).into());
        }
        out(&v.to_string())?;
    }
    Ok(EXIT_OK)
}

/// A job as the porcelain sees it.
struct Found {
    name: String,
    dir: JobDir,
    vault: PathBuf,
    source: Option<PathBuf>,
    /// Its settings, from the configuration or else its job.toml.
    settings: Option<JobSettings>,
}

fn jobs(at: &Where) -> anyhow::Result<Vec<Found>> {
    if let Some(v) = &at.vault {
        let vault = Vault::open(v)?;
        let mut out = Vec::new();
        for dir in vault.jobs()? {
            let file = reverb_common::jobfile::JobFile::read(&dir.job_toml())?;
            out.push(Found {
                name: file.name,
                dir,
                vault: v.clone(),
                source: None,
                settings: Some(file.settings),
            });
        }
        return Ok(out);
    }
    let file = config::locate(at.config.as_deref()).map_err(|e| match e {
        Error::Usage(m) if at.config.is_none() => Error::Usage(format!(
            "{m}; or give --vault DIR to read the jobs of one vault (as `run --source --vault` makes)"
        )),
        other => other,
    })?;
    let cfg: Config = config::load(&file)?;
    Ok(cfg
        .jobs
        .into_iter()
        .map(|j| Found {
            dir: JobDir::new(&j.vault, &j.folder),
            name: j.name,
            vault: j.vault,
            source: Some(j.source),
            settings: Some(j.settings),
        })
        .collect())
}

fn one_job(name: &str, at: &Where) -> anyhow::Result<Found> {
    let all = jobs(at)?;
    let names: Vec<String> = all.iter().map(|j| j.name.clone()).collect();
    all.into_iter()
        .find(|j| j.name == name || j.dir.folder == name)
        .ok_or_else(|| {
            Error::Usage(format!("unknown job `{name}` (jobs: {})", names.join(", "))).into()
        })
}

fn out(line: &str) -> anyhow::Result<()> {
    cli::print_line(line)?;
    Ok(())
}

fn status(at: &Where) -> anyhow::Result<i32> {
    let now = std::time::SystemTime::now();
    let mut attention = false;
    for j in jobs(at)? {
        let mut st = porcelain::status(&j.dir, &j.name, j.source.as_deref(), &j.vault);
        if st.state == porcelain::JobState::Stopped
            && let Some(hint) = porcelain::supervised_elsewhere(&j.dir, &j.name)
        {
            // A supervisor writes its first record before it takes the run.lock: one that
            // took it since the record was read is read again, not taken for one elsewhere.
            st = porcelain::status(&j.dir, &j.name, j.source.as_deref(), &j.vault);
            if st.state == porcelain::JobState::Stopped {
                eprintln!("reverberator: warning: {}: {hint}", j.name);
            }
        }
        attention |= st.needs_attention();
        if at.json {
            out(&serde_json::to_string(&st)?)?;
            continue;
        }
        let age = st
            .last_age_seconds
            .map(|s| time::human_age(now - std::time::Duration::from_secs(s), now) + " ago")
            .unwrap_or_else(|| "never".into());
        let limit = st
            .size_limit
            .map(|l| format!(" of {}", format_size(l)))
            .unwrap_or_default();
        let left_out = match st.mounts_left_out.as_slice() {
            [] => String::new(),
            mounts => format!(
                "; left out (one_file_system, another filesystem mounted there): {}",
                mounts.join(", ")
            ),
        };
        // A replica's job is not watched here: its versions come from its source's
        // `replicate`, so "stopped" would alarm for nothing.
        let state = match &st.replica_of {
            Some(id) if st.state == porcelain::JobState::Stopped => {
                format!("replica of vault {id}, updated by its source's replicate")
            }
            _ => format!("{}{}", st.state, state_detail(&st)),
        };
        // Without the vault nothing is known of the job's versions: say so, not "never".
        let history = if matches!(st.identity, porcelain::IdentityReport::VaultMissing(_)) {
            "versions unknown while the vault is missing".to_owned()
        } else {
            format!(
                "last {} ({age}), {}, {} pending, {}{limit}",
                st.last_version.as_deref().unwrap_or("-"),
                if st.versions == 1 {
                    "1 version".to_owned()
                } else {
                    format!("{} versions", st.versions)
                },
                st.pending(),
                format_size(st.size_bytes),
            )
        };
        out(&format!(
            "{}: {state} — {history}; {}{left_out}{}",
            st.job,
            st.identity,
            replica_lag(&st)
        ))?;
        if let Some(caps) = &st.vault_capabilities {
            out(&format!("{}: vault on {caps}", st.job))?;
        }
    }
    // Scripts and monitoring: 1 when a job needs attention.
    Ok(if attention { EXIT_FAILURE } else { EXIT_OK })
}

/// `; replica DEST: up to date` or `behind by N versions since T`, per replica, with the
/// last failure when there was one.
fn replica_lag(st: &porcelain::JobStatus) -> String {
    use porcelain::ReplicaActivity;
    let mut out = String::new();
    for r in &st.replica_lag {
        out.push_str(&format!("; replica {}: ", r.to));
        match r.state {
            Some(ReplicaActivity::Replicating) => out.push_str("replicating, "),
            // Away or refusing (a full disk, no permission): the error below says which.
            Some(ReplicaActivity::Waiting) => out.push_str(&format!(
                "waiting to retry (next try {}), ",
                r.next_try.as_deref().unwrap_or("-")
            )),
            Some(ReplicaActivity::Idle) | None => {}
        }
        match (r.behind, &r.since) {
            (0, _) => out.push_str("up to date"),
            (n, since) => out.push_str(&format!(
                "behind by {n} {} since {}",
                if n == 1 { "version" } else { "versions" },
                since.as_deref().unwrap_or("-")
            )),
        }
        if let Some(e) = &r.error {
            out.push_str(&format!(" (last attempt failed: {e})"));
        }
    }
    out
}

/// What follows the state word in `status`: since when, why, what next.
fn state_detail(st: &porcelain::JobStatus) -> String {
    use porcelain::JobState;
    let since = || {
        st.since
            .as_ref()
            .map(|s| format!(" since {s}"))
            .unwrap_or_default()
    };
    match &st.state {
        JobState::Waiting { pending, due } => format!(
            " ({pending} {}, version due by {})",
            if *pending == 1 { "change" } else { "changes" },
            due.as_deref().unwrap_or("-")
        ),
        JobState::Copying { progress } => format!(" ({progress})"),
        JobState::Watching {
            fallback: Some(how),
        } => format!(" ({how})"),
        JobState::Paused { why } => format!("{}: {why}", since()),
        JobState::Failing {
            why,
            next_retry,
            resolve,
        } => {
            let mut out = format!("{}: {why}", since());
            if let Some(t) = next_retry {
                out.push_str(&format!("; next retry {t}"));
            }
            if let Some(r) = resolve {
                out.push_str(&format!("; to resolve: {r}"));
            }
            out
        }
        JobState::Starting => format!(" (setting up the watch{}; a rescan follows)", since()),
        JobState::Watching { fallback: None }
        | JobState::Retiring
        | JobState::Stopped
        | JobState::New => String::new(),
    }
}

fn versions(name: &str, at: &Where) -> anyhow::Result<i32> {
    let j = one_job(name, at)?;
    let rows = index::read_index_or_empty(&j.dir.index())?;
    for r in rows {
        if at.json {
            out(&serde_json::json!({
                "type": "version", "version": r.version, "dir": r.dir, "created": r.created,
                "files": r.files, "changed": r.changed, "held_bytes": r.held_bytes, "logical_bytes": r.logical_bytes,
            })
            .to_string())?;
        } else {
            out(&format!(
                "{:>5}  {}  {}  {:>8} files, {:>6} copied by it, {:>10} on disk of its own, {:>10} of files in all",
                r.version,
                r.dir,
                r.created,
                r.files,
                r.changed,
                format_size(r.held_bytes),
                format_size(r.logical_bytes)
            ))?;
        }
    }
    Ok(EXIT_OK)
}

fn history(name: &str, path: &Path, at: &Where) -> anyhow::Result<i32> {
    let j = one_job(name, at)?;
    let rows = index::read_index_or_empty(&j.dir.index())?;
    let source = match &j.source {
        Some(s) => s.clone(),
        None => reverb_common::jobfile::JobFile::read(&j.dir.job_toml())?.source,
    };
    let mut found = Vec::new();
    for rel in porcelain::path_candidates(path, &source)? {
        found = porcelain::history(&j.dir, &rows, &rel)?;
        if !found.is_empty() {
            break;
        }
    }
    if found.is_empty() {
        return Err(Error::Refused(format!(
            "{} is not in any retained version of job {}",
            tsv::escape_os(path.as_os_str()),
            j.name
        ))
        .into());
    }
    for h in found {
        if at.json {
            out(&serde_json::to_string(&h)?)?;
        } else {
            out(&format!(
                "{:>5}  {}  {:<8}  {}",
                h.version,
                h.created,
                h.change,
                format_size(h.size)
            ))?;
        }
    }
    Ok(EXIT_OK)
}

fn find(name: &str, pattern: &str, at: &Where) -> anyhow::Result<i32> {
    let j = one_job(name, at)?;
    let pattern = porcelain::Pattern::new(pattern)?;
    let rows = index::read_index_or_empty(&j.dir.index())?;
    let found = porcelain::find(&j.dir, &rows, &pattern)?;
    if found.is_empty() {
        return Err(Error::Refused(format!(
            "no path matches in any of the {} retained versions of job {}",
            rows.len(),
            j.name
        ))
        .into());
    }
    for f in found {
        if at.json {
            out(&serde_json::to_string(&f)?)?;
        } else {
            let list: Vec<String> = f.versions.iter().map(u64::to_string).collect();
            let gone = if f.deleted { "  (deleted since)" } else { "" };
            out(&format!("{}	in {}{gone}", f.path, list.join(",")))?;
        }
    }
    Ok(EXIT_OK)
}

fn diff(name: &str, a: &str, b: &str, at: &Where) -> anyhow::Result<i32> {
    let j = one_job(name, at)?;
    let rows = index::read_index_or_empty(&j.dir.index())?;
    let ra = reverb_common::restore::pick(&rows, a)?;
    let rb = reverb_common::restore::pick(&rows, b)?;
    for d in porcelain::diff(&j.dir, &ra.dir, &rb.dir)? {
        if at.json {
            out(&serde_json::to_string(&d)?)?;
        } else {
            let sign = match d.change {
                "added" => "+",
                "removed" => "-",
                "attributes" => "a",
                _ => "M",
            };
            out(&format!("{sign}\t{}", d.path))?;
        }
    }
    for r in [ra, rb] {
        for p in porcelain::changed_during_copy(&j.dir, &r.dir) {
            eprintln!(
                "{TOOL}: warning: {p} changed while {} copied it: that version may hold a mix of its old and new data",
                r.dir
            );
        }
    }
    Ok(EXIT_OK)
}

/// `snap JOB`: reverb-snap on the job, from the configuration (or `--vault`). A running
/// supervisor notices the new version or job.toml at once.
fn snap(name: &str, force: bool, source: Option<&Path>, at: &Where) -> anyhow::Result<i32> {
    let j = one_job(name, at)?;
    let mut args = vec![
        OsString::from("reverberator snap"),
        "--job".into(),
        j.name.into(),
    ];
    match &at.vault {
        Some(v) => args.extend([OsString::from("--vault"), v.into()]),
        None => {
            let file = config::locate(at.config.as_deref())?;
            args.extend([OsString::from("--config"), file.into()]);
        }
    }
    if let Some(s) = source {
        args.extend([OsString::from("--source"), s.into()]);
    }
    if force {
        args.push("--force".into());
    }
    if at.json {
        args.push("--json".into());
    }
    Ok(reverb_snap::main_with_args(args))
}

/// `replicate JOB`: each destination in turn (one failing does not stop the next); exit
/// 75 when a replica could not be reached, 1 on any other failure.
fn replicate(
    name: &str,
    to: &[String],
    mut opts: ReplicateOptions,
    at: &Where,
) -> anyhow::Result<i32> {
    let j = one_job(name, at)?;
    let settings = j.settings.clone().unwrap_or_default();
    let dests: Vec<String> = if to.is_empty() {
        settings.replicate_to.clone()
    } else {
        to.to_vec()
    };
    if dests.is_empty() {
        return Err(Error::Usage(format!(
            "job {} has no replicate_to: give --to DEST (a vault path, or ssh://[user@]host[:port]/path)",
            j.name
        ))
        .into());
    }
    opts.ssh = opts.ssh.or(settings.replicate_ssh.clone());
    opts.identity = opts.identity.or(settings.replicate_identity.clone());
    let mut first_err: Option<anyhow::Error> = None;
    for text in &dests {
        let dest = Destination::parse(text).map_err(|e| Error::Usage(format!("--to: {e}")))?;
        let shown = dest.to_string();
        let mut report_version = |v: &reverb_common::replicate::SentVersion| {
            let line = if at.json {
                serde_json::json!({
                    "type": "replicated", "job": j.name, "to": shown, "version": v.n,
                    "dir": v.dir, "entries": v.counts.entries, "data_bytes": v.counts.data_bytes,
                    "bytes": v.bytes,
                })
                .to_string()
            } else {
                format!(
                    "{}: {} to {shown}: {} entries, {} of file data, {} sent",
                    j.name,
                    v.dir,
                    v.counts.entries,
                    format_size(v.counts.data_bytes),
                    format_size(v.bytes)
                )
            };
            let _ = out(&line);
        };
        let result = reverb_common::replicate::replicate(&j.dir, &dest, &opts, &mut report_version);
        reverb_common::replicate::record_outcome(&j.dir, &shown, result.as_ref());
        match result {
            Ok(r) => {
                let newest = r.newest.as_ref().map(|n| n.1.as_str());
                if at.json {
                    out(&serde_json::json!({
                        "type": "replica", "job": j.name, "to": shown, "vault": r.vault,
                        "newest": newest, "versions_sent": r.sent.len(),
                        "bytes_sent": r.bytes_sent, "bytes_received": r.bytes_received,
                        "compared_manifests": r.compared_manifests,
                    })
                    .to_string())?;
                } else {
                    out(&format!(
                        "{}: {shown} holds {} ({} sent, {} received{})",
                        j.name,
                        newest.unwrap_or("no version"),
                        format_size(r.bytes_sent),
                        format_size(r.bytes_received),
                        if r.compared_manifests {
                            "; its newest version was gone here, manifests compared"
                        } else {
                            ""
                        }
                    ))?;
                }
            }
            Err(e) => {
                let e =
                    anyhow::Error::from(e).context(format!("replicating {} to {shown}", j.name));
                if dests.len() == 1 {
                    return Err(e);
                }
                eprintln!("{TOOL}: {e:#}");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(EXIT_OK),
    }
}

/// `verify`; `data` is `Some(max rate)` with --data.
fn verify(at: &Where, only: Option<&str>, data: Option<Option<u64>>) -> anyhow::Result<i32> {
    let mut problems = 0usize;
    let all = jobs(at)?;
    if let Some(name) = only
        && !all.iter().any(|j| j.name == name)
    {
        anyhow::bail!("no job named {name}");
    }
    for j in all {
        if !j.dir.exists() || only.is_some_and(|n| n != j.name) {
            continue;
        }
        let mut found =
            reverb_common::check::check(&j.dir).with_context(|| format!("job {}", j.name))?;
        // Who may read it: modes wider than configured (docs/security.md).
        found.extend(reverb_common::check::access_problems(&j.dir));
        for p in &found {
            if at.json {
                out(&serde_json::json!({
                    "type": "problem", "job": p.job, "kind": p.kind.as_str(),
                    "path": tsv::escape_os(p.path.as_os_str()), "detail": p.detail,
                })
                .to_string())?;
            } else {
                out(&p.to_string())?;
            }
        }
        let data_found = match data {
            Some(rate) => reverb_common::checksums::verify_and_print(&j.dir, rate, at.json)
                .with_context(|| format!("job {}", j.name))?,
            None => 0,
        };
        if !at.json && found.is_empty() && data_found == 0 {
            eprintln!("reverberator: {}: ok", j.name);
        }
        problems += found.len() + data_found;
    }
    Ok(if problems == 0 { EXIT_OK } else { EXIT_FAILURE })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        super::cli().debug_assert();
    }
}
