//! `reverb-receive`'s session (docs/cli.md#reverb-receive, docs/design.md#replication): the
//! receiving end of `reverberator replicate`, reading the replication stream on one pipe
//! and answering on the other.
//!
//! Owns the receiver's side of the conversation: the sender's hello checked (format, the job
//! it may write), the replica job opened or created (only a job that is a replica of the
//! sender's vault is ever written), its identity checked, its lock taken, data an
//! interrupted run left kept aside and announced, recovery, then version after version
//! ([`crate::engine::receive`]) each acknowledged once durable, a manifest when asked, and
//! at the end the replica's own retention.
//!
//! Invariants: nothing is written outside the replica job's folder; a refusal is sent to
//! the sender as a [`Record::Refused`] and returned as the error (exit 1, or 75 when the
//! replica is not there); the only data kept across runs is what an interrupted version had
//! received, under `<job>/.tmp/held/`, verified again by hash before it is announced, and
//! removed once a session ends well.

use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::engine::receive::{self, HeldData, Incoming};
use crate::engine::retire;
use crate::engine::retire::plan::Limits;
use crate::engine::send;
use crate::engine::snapshot;
use crate::error::{Error, Result, show};
use crate::format::index::read_index_or_empty;
use crate::format::settings::JobSettings;
use crate::format::stream::{
    FORMAT, Hello, Record, RecordReader, RecordWriter, StreamError, Welcome, limits,
};
use crate::fsutil;
use crate::vault::job::{self, JobCtx};
use crate::vault::layout::{JobDir, Vault};
use crate::vault::lock::{JobLock, Wait};

/// What a receiver is allowed to do.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// The replica vault.
    pub vault: PathBuf,
    /// Only this job (an `authorized_keys` forced command can pin it).
    pub job: Option<String>,
    /// Create the vault when it has no marker.
    pub init: bool,
    /// The command line the sender asked for when an `authorized_keys` forced command ran
    /// this receiver instead (ssh's `SSH_ORIGINAL_COMMAND`): the vault it names must be
    /// [`ReceiveOptions::vault`], or the sender is told which one this key writes to.
    pub requested: Option<String>,
}

/// The records of a pipe as the engine reads them: the end or a break is
/// [`Error::Unreachable`], a malformed record [`Error::Stream`].
pub(crate) struct Input<R: Read> {
    pub reader: RecordReader<R>,
}

impl<R: Read> Incoming for Input<R> {
    fn next_record(&mut self) -> Result<Record> {
        match self.reader.next_record() {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(Error::Unreachable(
                "the other side closed the stream".into(),
            )),
            Err(e) => Err(stream_error(e)),
        }
    }
}

/// A stream error as the library's error.
pub(crate) fn stream_error(e: StreamError) -> Error {
    if e.is_disconnect() {
        Error::Unreachable(format!("the stream broke: {e}"))
    } else {
        Error::Stream(e.to_string())
    }
}

/// The receiver: reads the stream on `input`, answers on `output`, until the sender says
/// goodbye. Every refusal is also sent to the sender.
pub fn serve(opts: &ReceiveOptions, input: impl Read, output: impl Write) -> Result<()> {
    let mut input = Input {
        reader: RecordReader::new(BufReader::with_capacity(1 << 20, input)),
    };
    let mut out = RecordWriter::new(BufWriter::new(output));
    let result = session(opts, &mut input, &mut out);
    if let Err(e) = &result
        && !matches!(e, Error::Unreachable(_))
    {
        let _ = out.send(&Record::Refused(e.to_string()));
        let _ = out.flush();
    }
    result
}

fn answer<W: Write>(out: &mut RecordWriter<W>, r: &Record) -> Result<()> {
    out.send(r)
        .and_then(|()| out.flush())
        .map_err(|e| Error::Unreachable(format!("the sender went away: {e}")))
}

fn session<R: Read, W: Write>(
    opts: &ReceiveOptions,
    input: &mut Input<R>,
    out: &mut RecordWriter<W>,
) -> Result<()> {
    if let Some(line) = &opts.requested {
        check_requested_vault(line, &opts.vault)?;
    }
    let mut vault = if opts.init {
        Vault::init(&opts.vault)?
    } else {
        Vault::open(&opts.vault)?
    };
    let first = match input.reader.next_record() {
        // Nothing at all (`reverb-receive --init </dev/null`, an ssh login tried once): no
        // sender, nothing to do.
        Ok(None) => return Ok(()),
        Ok(Some(r)) => r,
        Err(e) => return Err(stream_error(e)),
    };
    let hello = match first {
        Record::Hello(h) => h,
        other => {
            return Err(Error::Stream(format!(
                "the stream starts with {}, not a hello",
                other.what()
            )));
        }
    };
    if hello.format != FORMAT {
        return Err(Error::Stream(format!(
            "the sender speaks stream format {}, this receiver format {FORMAT}: install the same reverberator release on both hosts",
            hello.format
        )));
    }
    if let Some(only) = &opts.job
        && *only != hello.job
    {
        return Err(Error::Refused(format!(
            "this receiver accepts job `{only}` only, not `{}`",
            hello.job
        )));
    }
    // What the replica's filesystem can hold, before anything is written (a vault that
    // cannot hold a version is refused here, naming what it lacks).
    vault.probe_once()?;
    let dir = replica_job(&vault, &hello)?;
    let _lock = JobLock::acquire(&dir.lock(), &hello.job, Wait::Block)?;
    let mut ctx = job::open_dir(dir.clone(), "receive")?;
    check_replica(&ctx, &vault, &hello)?;
    // Who may read it, put right as every writer does at its start.
    job::secure(&mut ctx)?;
    for line in job::note_capabilities(&mut ctx)? {
        crate::error::warn(&line);
    }
    let held_dir = keep_interrupted(&dir)?;
    snapshot::recover(&mut ctx)?;
    let held = HeldData {
        by_hash: held_dir
            .as_deref()
            .map(send::hash_files_under)
            .unwrap_or_default(),
    };
    let rows = read_index_or_empty(&dir.index())?;
    let newest = rows.last().map(|r| (r.version, r.dir.clone()));
    let hashes: Vec<_> = held.by_hash.keys().copied().collect();
    out.send(&Record::Welcome(Welcome {
        format: FORMAT,
        vault: vault.marker().id.clone(),
        newest,
        held: hashes.len() as u64,
    }))
    .map_err(|e| Error::Unreachable(format!("the sender went away: {e}")))?;
    for chunk in hashes.chunks(limits::HELD_PER_RECORD) {
        out.send(&Record::Held(chunk.to_vec()))
            .map_err(|e| Error::Unreachable(format!("the sender went away: {e}")))?;
    }
    out.flush()
        .map_err(|e| Error::Unreachable(format!("the sender went away: {e}")))?;
    loop {
        match input.next_record()? {
            Record::Version(header) => {
                let got = receive::receive(&mut ctx, header, input, &held)?;
                answer(
                    out,
                    &Record::Ack {
                        n: got.name.n,
                        dir: got.name.dir.clone(),
                    },
                )?;
            }
            Record::ManifestRequest => {
                let rows = read_index_or_empty(&dir.index())?;
                let Some(newest) = rows.last() else {
                    return Err(Error::Stream(
                        "a manifest asked of a replica that holds no version".into(),
                    ));
                };
                send::describe_version(
                    &dir.path,
                    newest.version,
                    &newest.dir,
                    &newest.created,
                    out,
                )?;
            }
            Record::Bye => break,
            Record::Refused(why) => {
                return Err(Error::Unreachable(format!("the sender gave up: {why}")));
            }
            other => {
                return Err(Error::Stream(format!(
                    "unexpected {} between versions",
                    other.what()
                )));
            }
        }
    }
    // Each side retires by its own rules: the replica's are its job.toml's.
    let settings = &ctx.file.settings;
    let limits = Limits::now(settings.rules(), settings.vault_size_limit);
    retire::enforce(&mut ctx, &limits, false)?;
    if let Some(h) = held_dir {
        fsutil::remove_tree(&h)?;
    }
    Ok(())
}

/// The replica job for `hello`: created on first use (with the source's settings), else
/// the existing folder.
fn replica_job(vault: &Vault, hello: &Hello) -> Result<JobDir> {
    let dir = job::job_dir(vault, &hello.job)?;
    if dir.exists() {
        return Ok(dir);
    }
    let settings: JobSettings = toml::from_str(&hello.settings).unwrap_or_default();
    job::create_replica(
        vault,
        &hello.job,
        Path::new(&hello.source),
        settings,
        &hello.vault,
    )
}

/// Only a replica of the sender's vault is written; the replica vault must be on its
/// recorded filesystem.
fn check_replica(ctx: &JobCtx, vault: &Vault, hello: &Hello) -> Result<()> {
    match &ctx.file.state.replica_of {
        Some(of) if *of == hello.vault => {}
        Some(of) => {
            return Err(Error::Refused(format!(
                "job {} in {} is a replica of vault {of}, not of vault {} (the sender's)",
                ctx.file.name,
                show(vault.root()),
                hello.vault
            )));
        }
        None => {
            return Err(Error::Refused(format!(
                "job {} in {} is a job of its own, not a replica: nothing is written into it",
                ctx.file.name,
                show(vault.root())
            )));
        }
    }
    if let Some(rec) = &ctx.file.identity.vault
        && let Err(e) = crate::capture::identity::verify("vault", rec, vault.root())
    {
        return Err(e);
    }
    Ok(())
}

/// Moves a version an interrupted run left in `.partial/` to `<job>/.tmp/held/` (replacing
/// what an older interruption left there), so its files can serve this run; returns the
/// folder when there is one.
fn keep_interrupted(dir: &JobDir) -> Result<Option<PathBuf>> {
    let held = dir.tmp().join("held");
    let partials: Vec<PathBuf> = match fs::read_dir(dir.partial()) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    if let Some(last) = partials.last() {
        fsutil::tmp_dir_of(&dir.path)?;
        fsutil::remove_tree(&held)?;
        fs::rename(last, &held).map_err(|e| Error::Io {
            what: "cannot keep the interrupted version in",
            path: held.clone(),
            source: e,
        })?;
    }
    Ok(held.is_dir().then_some(held))
}

/// Refuses a sender that asked for another vault than the one this receiver was started
/// on (a forced command pins it): the data would land somewhere else than the destination
/// the sender records and `status` shows. A request naming no `--vault` is not checked.
fn check_requested_vault(line: &str, vault: &Path) -> Result<()> {
    let Some(asked) = requested_vault(line) else {
        return Ok(());
    };
    let asked = Path::new(&asked);
    if asked.components().eq(vault.components()) {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "the destination names vault {}, but this host receives into {} only (the forced \
         command of the key's authorized_keys line): correct the destination's path",
        show(asked),
        show(vault)
    )))
}

/// The `--vault` argument of a sender's command line (as [`crate::run::replicate`] quotes
/// it, or as a person types it): the line split into words the way a POSIX shell does
/// (single and double quotes, backslashes), without expanding anything.
fn requested_vault(line: &str) -> Option<String> {
    let words = shell_words(line)?;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w == "--vault" {
            return it.next().cloned();
        }
        if let Some(v) = w.strip_prefix("--vault=") {
            return Some(v.to_owned());
        }
    }
    None
}

/// `line`'s words as a POSIX shell splits them; `None` for an unclosed quote.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => w.push(c),
                            '\n' => {}
                            c => {
                                w.push('\\');
                                w.push(c);
                            }
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => {}
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

#[cfg(test)]
mod tests;
