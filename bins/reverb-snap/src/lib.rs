//! `reverb-snap`: build one version of a job (docs/cli.md). A thin edge over
//! `reverb_common::snapshot` and `reverb_common::batch`: it parses flags, calls the library
//! and prints; all logic lives in the library.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use reverb_common::Vault;
use reverb_common::batch::{self, Prepared};
use reverb_common::cli::{JobArgs, JsonArgs, LockArgs};
use reverb_common::events::{self, EventLine};
use reverb_common::exit::EXIT_OK;
use reverb_common::job::JobCtx;
use reverb_common::journal::JournalEvent;
use reverb_common::lock::JobLock;
use reverb_common::snapshot::{self, Options, Trigger};
use reverb_common::{cli, job, retire};

/// Build one version of a job: the first (a complete copy) for a new job, then a rescan
/// that versions only what differs from the current version.
#[derive(Debug, Parser)]
#[command(name = "reverb-snap", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub target: JobArgs,
    /// The source folder; required the first time, checked against job.toml afterwards
    /// (with --force, a different source is recorded as the job's new source).
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Create the vault (directory and marker) if it does not exist yet.
    #[arg(long)]
    pub init: bool,
    /// Make a version even when a rescan would leave fewer than 1 - max_delete_ratio of the files.
    #[arg(long)]
    pub force: bool,
    /// Show what would be versioned; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub output: JsonArgs,
    /// Build the version from event lines (reverb-watch's output) read from FILE or `-`
    /// (stdin) instead of rescanning; an `overflow` line makes it a rescan.
    #[arg(long, value_name = "FILE|-")]
    pub changes: Option<PathBuf>,
    /// With --changes: one version per `flush`-terminated batch, until end of input (and
    /// retirement after each version), so `reverb-watch … | reverb-snap --changes - --follow`
    /// is a complete continuous backup.
    #[arg(long, requires = "changes")]
    pub follow: bool,
    /// The events were already journaled by the caller (the supervisor): do not journal them again.
    #[arg(long, hide = true)]
    pub events_journaled: bool,
    /// The caller (the supervisor) probed the vault's filesystem when the job started: do
    /// not probe it again for this version.
    #[arg(long, hide = true)]
    pub vault_probed: bool,
    /// The caller (the supervisor) had who may read the vault put right since the job
    /// started (by its first version): do not walk the job's records again for this one,
    /// unless the job's settings changed.
    #[arg(long, hide = true)]
    pub vault_secured: bool,
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

/// The tool's body: opens (or creates) the job, then builds one version from a rescan or
/// from the event batches of `--changes`.
pub fn run(args: &Args) -> anyhow::Result<i32> {
    let target = job::target(
        args.target.vault.as_deref(),
        &args.target.job,
        args.source.as_deref(),
        args.target.config.as_deref(),
    )?;
    // `--init` of a vault not made yet is the job's creation: its source is checked against
    // the vault first, so a vault inside the source is never made.
    if args.init
        && let Some(source) = &target.source
        && !target.vault.join(reverb_common::MARKER).exists()
    {
        job::validate_source(source, &target.vault)?;
    }
    let mut vault = if args.init {
        Vault::init(&target.vault)?
    } else {
        Vault::open(&target.vault)?
    };
    // A job starts: what the vault's filesystem can do is probed again (docs/filesystems.md).
    if !args.dry_run && !args.vault_probed {
        vault.probe_once()?;
    }
    if batch::prepare_job(&vault, &args.target.job, &target, args.dry_run)? == Prepared::WouldCreate
    {
        print_record(args, "would create", &args.target.job)?;
        return Ok(EXIT_OK);
    }
    let dir = job::job_dir(&vault, &args.target.job)?;
    let lock = JobLock::acquire(&dir.lock(), &args.target.job, args.lock.wait())?;
    let mut ctx = job::open_dir(dir, "snap")?;
    match (&target.source, args.force && !args.dry_run) {
        (Some(new), true) => batch::change_source(&mut ctx, vault.root(), new)?,
        _ => batch::check_source(&ctx, &args.target.job, target.source.as_deref())?,
    }
    let settings_changed = match &target.settings {
        Some(settings) => job::update_settings(&mut ctx, settings)?,
        None => false,
    };
    if !args.dry_run {
        for said in job::note_capabilities(&mut ctx)? {
            eprintln!("reverb-snap: warning: {said}");
        }
        // Who may read the vault, put right at every start (docs/security.md), and when the
        // configuration changed it (`vault_group`) while the job runs.
        if !args.vault_secured || settings_changed {
            job::secure(&mut ctx)?;
        }
    }
    drop(lock);
    match &args.changes {
        None => one_version(args, &vault, &mut ctx, Trigger::Rescan)?,
        Some(changes) => from_changes(args, &vault, &mut ctx, changes)?,
    }
    Ok(EXIT_OK)
}

/// `--changes`: one version per batch (`--follow`) or one for all of them.
fn from_changes(
    args: &Args,
    vault: &Vault,
    ctx: &mut JobCtx,
    changes: &Path,
) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = if changes.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        let f = std::fs::File::open(changes)
            .with_context(|| format!("cannot open --changes {}", changes.display()))?;
        Box::new(BufReader::new(f))
    };
    let mut failed = None;
    let mut pending: Vec<EventLine> = Vec::new();
    for read in events::read_batches(input) {
        let events = match read {
            Ok(b) => b.events,
            Err(e) => {
                // A batch we could not read builds nothing; with --follow the next one may
                // (without it, the error is the program's, printed once at the end).
                if args.follow {
                    eprintln!("reverb-snap: {e}");
                }
                batch::reject_batch(&mut ctx.journal, &e);
                failed = Some(e);
                if !args.follow {
                    break;
                }
                continue;
            }
        };
        if !args.events_journaled {
            for err in batch::journal_batch(&mut ctx.journal, &events) {
                eprintln!("reverb-snap: warning: {err}");
            }
        }
        if args.follow {
            one_version(args, vault, ctx, batch::trigger_of(&events))?;
        } else {
            pending.extend(events);
        }
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    if !args.follow && !pending.is_empty() {
        one_version(args, vault, ctx, batch::trigger_of(&pending))?;
    }
    Ok(())
}

/// Takes one version under the job lock, after the identity check; prints its name. On a
/// full disk the partial is gone already; retirement frees what the limits allow.
fn one_version(
    args: &Args,
    vault: &Vault,
    ctx: &mut JobCtx,
    trigger: Trigger,
) -> anyhow::Result<()> {
    let _lock = JobLock::acquire(&ctx.dir.lock(), &args.target.job, args.lock.wait())?;
    job::verify_identities(ctx, vault.root())?;
    // Work through directory fds taken after the identity check (docs/identity.md).
    let mut held = job::anchored(ctx)?;
    let full_view = matches!(trigger, Trigger::Rescan);
    let spinner = Spinner::start();
    let opts = Options {
        force: args.force,
        dry_run: args.dry_run,
        progress: &spinner.counts,
    };
    let taken = snapshot::take(&mut held, trigger, opts);
    drop(spinner);
    drop(held);
    let outcome = match taken {
        Ok(o) => o,
        Err(e) if e.is_enospc() => {
            ctx.journal
                .note(JournalEvent::Error, b"", &format!("version aborted: {e}"));
            let s = ctx.file.settings.clone();
            if let Err(r) = retire::enforce(
                ctx,
                &retire::Limits::now(s.rules(), s.vault_size_limit),
                false,
            ) {
                eprintln!("reverb-snap: retirement after a full disk: {r}");
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    if !args.dry_run {
        reverb_common::batch::note_mounts_left_out(ctx, &outcome, full_view)?;
    }
    if args.dry_run {
        for p in &outcome.changed_paths {
            print_record(
                args,
                "changed",
                &reverb_common::tsv::escape_os(p.event_field().as_os_str()),
            )?;
        }
    } else if let Some(v) = &outcome.version {
        print_record(args, "version", &v.dir)?;
        if args.follow {
            let s = ctx.file.settings.clone();
            match retire::enforce(
                ctx,
                &retire::Limits::now(s.rules(), s.vault_size_limit),
                false,
            ) {
                Ok(done) => {
                    if !done.is_empty() {
                        reverb_common::batch::compact_journal(ctx);
                    }
                    for r in done {
                        eprintln!(
                            "reverb-snap: retired {} ({} bytes freed)",
                            r.dir, r.freed_bytes
                        );
                    }
                }
                Err(e) => eprintln!("reverb-snap: retirement: {e}"),
            }
        }
    }
    Ok(())
}

/// What the build has copied so far, shared with the spinner's thread.
#[derive(Debug, Default)]
struct Counts {
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// The build's progress, counted for the spinner.
#[derive(Debug, Default, Clone)]
struct SharedCounts(Arc<Counts>);

impl snapshot::Progress for SharedCounts {
    fn copied(&self, bytes: u64) {
        self.0.entries.fetch_add(1, Ordering::Relaxed);
        self.0.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A spinner on stderr while a version is built, only when stderr is a terminal.
struct Spinner {
    counts: SharedCounts,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    /// A spinner on a terminal; under the supervisor (`REVERBERATOR_PROGRESS_FILE`), the
    /// counts written to that file every second for its live state.
    fn start() -> Spinner {
        use std::io::IsTerminal;
        let counts = SharedCounts::default();
        let file = std::env::var_os("REVERBERATOR_PROGRESS_FILE").map(PathBuf::from);
        let tty = std::io::stderr().is_terminal();
        if !tty && file.is_none() {
            return Spinner {
                counts,
                stop: None,
                thread: None,
            };
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let seen = counts.clone();
        let thread = std::thread::spawn(move || {
            let bar = tty.then(indicatif::ProgressBar::new_spinner);
            let tick = std::time::Duration::from_millis(if tty { 200 } else { 1000 });
            while rx
                .recv_timeout(tick)
                .is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Timeout)
            {
                let n = seen.0.entries.load(Ordering::Relaxed);
                let b = seen.0.bytes.load(Ordering::Relaxed);
                if let Some(bar) = &bar {
                    bar.set_message(format!(
                        "copied {n} entries, {}",
                        reverb_common::settings::format_size(b)
                    ));
                    bar.tick();
                }
                if let Some(f) = &file {
                    // Best effort: the live state is a view, never worth failing a build.
                    let tmp = f.with_extension("tmp");
                    if std::fs::write(&tmp, format!("{n}\t{b}\n")).is_ok() {
                        let _ = std::fs::rename(&tmp, f);
                    }
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Spinner {
            counts,
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn print_record(args: &Args, kind: &str, value: &str) -> anyhow::Result<()> {
    let line = if args.output.json {
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
