//! `reverberator replicate` (docs/cli.md#replicate, docs/design.md#replication): the sending
//! end. It starts `reverb-receive` (beside this program for a local destination, through
//! the system `ssh` client for a remote one), asks what the replica holds, and sends the
//! versions it lacks, oldest first, each against the one before.
//!
//! Owns the sender's side of the conversation ([`replicate`]): the receiver's program and
//! arguments ([`receiver_command`]), the hello and the welcome, the choice of the base
//! (the replica's newest version when this vault still holds it, else its manifest), the
//! versions sent and acknowledged, goodbye, and the record of the outcome in the source's
//! `replicas.tsv` ([`record_outcome`]).
//!
//! Invariants: the source vault is only read (no job lock is taken, so versions are never
//! delayed; `replicas.tsv` is replaced atomically); a version counts as replicated only
//! once the receiver acknowledged it durable; a replica whose history is not this vault's
//! (a newer version, or one of the same number with another stamp) is refused, never
//! overwritten; retirements are never sent (each side retires by its own rules).

use std::collections::HashSet;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::engine::receive::Incoming;
use crate::engine::send::{self, Base, Manifest, Outgoing};
use crate::error::{EXIT_TEMPFAIL, Error, Result};
use crate::format::destination::Destination;
use crate::format::index::{IndexRow, read_index_or_empty};
use crate::format::jobfile::JobFile;
use crate::format::replicas_tsv::{self, ReplicaRow};
use crate::format::stream::{Counts, FORMAT, Hello, Record, RecordReader, RecordWriter};
use crate::format::time;
use crate::run::receive::Input;
use crate::run::receiver_stderr::StderrTail;
use crate::vault::layout::{JobDir, Vault};

/// How to reach the receiver.
#[derive(Debug, Clone, Default)]
pub struct ReplicateOptions {
    /// The ssh program (default `ssh`).
    pub ssh: Option<String>,
    /// A private key for ssh (`-i`).
    pub identity: Option<PathBuf>,
    /// The receiver program: a path for a local destination, the command run on the remote
    /// host for an ssh one (default `reverb-receive`, beside this program when local).
    pub receive_command: Option<String>,
    /// Create the replica vault when it has no marker (`reverb-receive --init`).
    pub init: bool,
}

/// One version sent and acknowledged.
#[derive(Debug, Clone)]
pub struct SentVersion {
    pub n: u64,
    pub dir: String,
    /// Entries and data bytes of the version's records.
    pub counts: Counts,
    /// Bytes written to the receiver for this version (records and data).
    pub bytes: u64,
}

/// What a replication did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The replica vault's id.
    pub vault: String,
    /// The versions sent, oldest first.
    pub sent: Vec<SentVersion>,
    /// The replica's newest version at the end.
    pub newest: Option<(u64, String)>,
    /// The replica's newest version was gone from this vault: the manifests were compared.
    pub compared_manifests: bool,
    /// Bytes written to the receiver in all.
    pub bytes_sent: u64,
    /// Bytes read from it.
    pub bytes_received: u64,
}

/// The receiver's program and arguments for job `job` at `dest`.
pub fn receiver_command(dest: &Destination, job: &str, opts: &ReplicateOptions) -> Command {
    let mut receiver_args = vec![
        "--vault".to_owned(),
        dest.vault_path().to_string_lossy().into_owned(),
        "--job".to_owned(),
        job.to_owned(),
    ];
    if opts.init {
        receiver_args.push("--init".to_owned());
    }
    match dest {
        Destination::Local(_) => {
            let program = match &opts.receive_command {
                Some(p) => PathBuf::from(p),
                None => crate::run::supervisor::find_tool("reverb-receive")
                    .unwrap_or_else(|| PathBuf::from("reverb-receive")),
            };
            let mut c = Command::new(program);
            c.args(&receiver_args);
            c
        }
        Destination::Ssh {
            user, host, port, ..
        } => {
            let mut c = Command::new(opts.ssh.as_deref().unwrap_or("ssh"));
            if let Some(id) = &opts.identity {
                c.arg("-i").arg(id);
            }
            if let Some(p) = port {
                c.arg("-p").arg(p.to_string());
            }
            // No password prompt (a supervisor has no terminal), no tty (the stream is
            // binary), and a dead connection noticed within a minute.
            c.args([
                "-T",
                "-o",
                "BatchMode=yes",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
                "--",
            ]);
            c.arg(match user {
                Some(u) => format!("{u}@{host}"),
                None => host.clone(),
            });
            // ssh hands the remote shell one command line: every word quoted.
            let program = opts.receive_command.as_deref().unwrap_or("reverb-receive");
            let mut line = program.to_owned();
            for a in &receiver_args {
                line.push(' ');
                line.push_str(&shell_quote(a));
            }
            c.arg(line);
            c
        }
    }
}

/// `text` as one word for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The receiver, running.
struct Peer {
    child: Child,
    /// The receiver's stdin; `None` once closed.
    out: Option<RecordWriter<BufWriter<ChildStdin>>>,
    /// Bytes written before it was closed.
    written_before_close: u64,
    input: Input<BufReader<ChildStdout>>,
    /// What the receiver's side prints (it, or ssh and the remote shell).
    stderr: Option<StderrTail>,
    shown: String,
    /// The receiver program as the command names it (for the hint when it is not found).
    program: String,
}

impl Peer {
    fn start(mut cmd: Command, shown: String, program: String) -> Result<Peer> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            Error::Unreachable(format!(
                "cannot start {}: {e}",
                cmd.get_program().to_string_lossy()
            ))
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Invalid("the receiver's pipes were not made".into()));
        };
        let stderr = child.stderr.take().map(StderrTail::start);
        Ok(Peer {
            child,
            out: Some(RecordWriter::new(BufWriter::with_capacity(1 << 20, stdin))),
            written_before_close: 0,
            input: Input {
                reader: RecordReader::new(BufReader::new(stdout)),
            },
            stderr,
            shown,
            program,
        })
    }

    fn send(&mut self, r: &Record) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::Invalid("the receiver's stdin is closed".into()))?;
        out.send(r)
            .and_then(|()| out.flush())
            .map_err(|e| Error::Unreachable(format!("the receiver went away: {e}")))
    }

    /// Bytes written to the receiver so far.
    fn written(&self) -> u64 {
        self.out
            .as_ref()
            .map_or(self.written_before_close, RecordWriter::written)
    }

    /// Closes the receiver's stdin: it sees the end of the stream.
    fn close(&mut self) {
        if let Some(mut out) = self.out.take() {
            let _ = out.flush();
            self.written_before_close = out.written();
        }
    }

    fn next(&mut self) -> Result<Record> {
        match self.input.next_record()? {
            Record::Refused(why) => Err(Error::Refused(format!(
                "the replica at {} refused: {why}",
                self.shown
            ))),
            r => Ok(r),
        }
    }

    /// Why the conversation ended: `e`, or better, what the receiver said before it went
    /// away, and how it exited (75: try again later).
    fn explain(&mut self, e: Error) -> Error {
        // Tell the receiver (best effort: it may be gone) and close its stdin, so that it
        // stops whatever it waits for; a version it was building is not published.
        if let Some(out) = self.out.as_mut() {
            let _ = out.send(&Record::Refused(e.to_string()));
        }
        self.close();
        // A write may have failed because the receiver refused first: its reason is better.
        let e = match (e, self.input.next_record()) {
            (_, Ok(Record::Refused(why))) => {
                Error::Refused(format!("the replica at {} refused: {why}", self.shown))
            }
            (e, _) => e,
        };
        let status = self.child.wait().ok().and_then(|s| s.code());
        match (e, status) {
            (Error::Refused(m), Some(EXIT_TEMPFAIL)) => Error::Unreachable(m),
            (Error::Unreachable(m), Some(code)) => {
                // The shell's conventions (127, 126) and ssh's own (255).
                let meaning = match code {
                    255 => ", the ssh connection failed".to_owned(),
                    127 => format!(
                        ", `{}` was not found on the PATH of commands run there (not a \
                         login shell's PATH: install it in /usr/local/bin or give its \
                         absolute path)",
                        self.program
                    ),
                    126 => format!(", `{}` could not be run there", self.program),
                    _ => String::new(),
                };
                let said = self
                    .stderr
                    .as_ref()
                    .and_then(StderrTail::last)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                Error::Unreachable(format!(
                    "{}: {m} (it exited {code}{meaning}){said}",
                    self.shown
                ))
            }
            (e, _) => e,
        }
    }
}

/// Replicates job folder `dir` to `dest`: sends every version the replica lacks, oldest
/// first; `on_version` is told of each one acknowledged. The replica's own retention runs
/// when the receiver is done.
pub fn replicate(
    dir: &JobDir,
    dest: &Destination,
    opts: &ReplicateOptions,
    on_version: &mut dyn FnMut(&SentVersion),
) -> Result<Report> {
    let vault = Vault::open(dir.vault_root())?;
    let file = JobFile::read(&dir.job_toml())?;
    if let Some(of) = &file.state.replica_of {
        return Err(Error::Refused(format!(
            "job {} is itself a replica (of vault {of}); replicate it from its source",
            file.name
        )));
    }
    // What the replica's job starts with: the retention and the rest, not what only this
    // host's supervisor acts on (where to replicate, its hooks).
    let mut settings = file.settings.clone();
    settings.replicate_to.clear();
    settings.replicate_ssh = None;
    settings.replicate_identity = None;
    settings.on_version = None;
    settings.on_failure = None;
    settings.on_recovery = None;
    settings.ping_url = None;
    // A group of this host means nothing there: the replica starts private.
    settings.vault_group = None;
    let settings = toml::to_string(&settings).map_err(|e| Error::Invalid(e.to_string()))?;
    let program = opts
        .receive_command
        .clone()
        .unwrap_or_else(|| "reverb-receive".to_owned());
    let mut peer = Peer::start(
        receiver_command(dest, &file.name, opts),
        dest.to_string(),
        program,
    )?;
    let hello = Hello {
        format: FORMAT,
        job: file.name.clone(),
        vault: vault.marker().id.clone(),
        source: file.source.to_string_lossy().into_owned(),
        settings,
    };
    let mut report = Report::default();
    let result = converse(&mut peer, dir, &hello, &mut report, on_version);
    report.bytes_sent = peer.written();
    report.bytes_received = peer.input.reader.read_bytes();
    match result {
        Ok(()) => {
            peer.close();
            let status = peer
                .child
                .wait()
                .map_err(|e| Error::Invalid(format!("cannot wait for the receiver: {e}")))?;
            if !status.success() {
                return Err(Error::Refused(format!(
                    "the receiver at {} ended with {status} after the last version",
                    dest
                )));
            }
            Ok(report)
        }
        Err(e) => {
            let e = peer.explain(e);
            let _ = peer.child.kill();
            let _ = peer.child.wait();
            Err(e)
        }
    }
}

fn converse(
    peer: &mut Peer,
    dir: &JobDir,
    hello: &Hello,
    report: &mut Report,
    on_version: &mut dyn FnMut(&SentVersion),
) -> Result<()> {
    peer.send(&Record::Hello(hello.clone()))?;
    let welcome = match peer.next()? {
        Record::Welcome(w) => w,
        other => {
            return Err(Error::Stream(format!(
                "the receiver answered with {}, not a welcome",
                other.what()
            )));
        }
    };
    if welcome.format != FORMAT {
        return Err(Error::Stream(format!(
            "the receiver speaks stream format {}, this sender format {FORMAT}",
            welcome.format
        )));
    }
    report.vault = welcome.vault.clone();
    report.newest = welcome.newest.clone();
    let mut held = HashSet::new();
    while (held.len() as u64) < welcome.held {
        match peer.next()? {
            Record::Held(hashes) => held.extend(hashes),
            other => {
                return Err(Error::Stream(format!(
                    "the receiver sent {} among its held hashes",
                    other.what()
                )));
            }
        }
    }
    let rows = read_index_or_empty(&dir.index())?;
    let todo = versions_to_send(&rows, welcome.newest.as_ref(), &dir.folder)?;
    let manifest;
    let mut base = match &welcome.newest {
        None => Base::None,
        Some((n, d)) if rows.iter().any(|r| r.version == *n) => Base::Version {
            n: *n,
            dir: d.clone(),
        },
        Some(_) if todo.is_empty() => Base::None,
        Some(_) => {
            // The replica's newest version is gone from here: compare manifests.
            peer.send(&Record::ManifestRequest)?;
            let header = match peer.next()? {
                Record::Manifest(h) => h,
                other => {
                    return Err(Error::Stream(format!(
                        "the receiver answered a manifest request with {}",
                        other.what()
                    )));
                }
            };
            manifest = Manifest::read(header, &mut peer.input)?;
            report.compared_manifests = true;
            Base::Manifest(&manifest)
        }
    };
    for row in todo {
        let before = peer.written();
        let started = Retirements::now(dir)?;
        let counts = send::send_version(
            &dir.path,
            &Outgoing {
                n: row.version,
                dir: &row.dir,
                created: &row.created,
            },
            &base,
            &held,
            peer.out
                .as_mut()
                .ok_or_else(|| Error::Invalid("the receiver's stdin is closed".into()))?,
            &|| started.still(dir, &row.dir),
        )?;
        match peer.next()? {
            Record::Ack { n, dir: d } if n == row.version && d == row.dir => {}
            other => {
                return Err(Error::Stream(format!(
                    "the receiver answered version {} with {}",
                    row.dir,
                    other.what()
                )));
            }
        }
        let sent = SentVersion {
            n: row.version,
            dir: row.dir.clone(),
            counts,
            bytes: peer.written() - before,
        };
        record_version(dir, &peer.shown, &report.vault, &sent);
        on_version(&sent);
        report.newest = Some((row.version, row.dir.clone()));
        report.sent.push(sent);
        base = Base::Version {
            n: row.version,
            dir: row.dir.clone(),
        };
    }
    peer.send(&Record::Bye)?;
    // The receiver retires by its own rules, then closes; a refusal then is its retention's.
    match peer.input.reader.next_record() {
        Ok(None) => Ok(()),
        Ok(Some(Record::Refused(why))) => Err(Error::Refused(format!(
            "the replica at {} could not retire: {why}",
            peer.shown
        ))),
        Ok(Some(other)) => Err(Error::Stream(format!(
            "the receiver sent {} after goodbye",
            other.what()
        ))),
        Err(e) => Err(crate::run::receive::stream_error(e)),
    }
}

/// What says whether a retirement ran in the source vault: the version being retired (its
/// job.toml mark) and the versions index.tsv lists. The sender takes no lock (it never
/// delays a version), so a retirement may run while a version is read; what was read is
/// trusted only when none ran meanwhile.
struct Retirements {
    versions: Vec<String>,
}

impl Retirements {
    /// Now; a retirement in progress is a reason to try later.
    fn now(dir: &JobDir) -> Result<Retirements> {
        let file = JobFile::read(&dir.job_toml())?;
        if let Some(v) = file.state.retiring {
            return Err(Error::Unreachable(format!(
                "{v} is being retired in this vault: replicating later"
            )));
        }
        Ok(Retirements {
            versions: read_index_or_empty(&dir.index())?
                .into_iter()
                .map(|r| r.dir)
                .collect(),
        })
    }

    /// Nothing was retired since [`Retirements::now`], none is being retired, and
    /// `version` (just read) is still there.
    fn still(&self, dir: &JobDir, version: &str) -> Result<()> {
        let again = Retirements::now(dir)?;
        let gone = self.versions.iter().find(|v| !again.versions.contains(v));
        if let Some(v) = gone {
            return Err(Error::Unreachable(format!(
                "{v} was retired in this vault while {version} was read: replicating again"
            )));
        }
        if !dir.path.join(version).is_dir() {
            return Err(Error::Unreachable(format!(
                "{version} was retired in this vault while it was read"
            )));
        }
        Ok(())
    }
}

/// The versions of `rows` the replica (whose newest is `newest`) lacks, oldest first; a
/// replica with another history is refused.
fn versions_to_send<'r>(
    rows: &'r [IndexRow],
    newest: Option<&(u64, String)>,
    job: &str,
) -> Result<Vec<&'r IndexRow>> {
    let Some((m, mdir)) = newest else {
        return Ok(rows.iter().collect());
    };
    let here_newest = rows.last().map_or(0, |r| r.version);
    if *m > here_newest {
        return Err(Error::Refused(format!(
            "the replica's newest version of job {job} is {mdir}, newer than this vault's newest (V{here_newest}): it holds another history"
        )));
    }
    if let Some(same_n) = rows.iter().find(|r| r.version == *m)
        && same_n.dir != *mdir
    {
        return Err(Error::Refused(format!(
            "version {m} of job {job} is {mdir} in the replica but {} here: it holds another history",
            same_n.dir
        )));
    }
    Ok(rows.iter().filter(|r| r.version > *m).collect())
}

/// Records in the source's `replicas.tsv` what a replication to `to` came to: the
/// replica's newest version, or the error (keeping the last known version).
pub fn record_outcome(dir: &JobDir, to: &str, outcome: std::result::Result<&Report, &Error>) {
    let previous = replicas_tsv::read(&dir.path)
        .into_iter()
        .find(|r| r.to == to)
        .unwrap_or_default();
    let row = match outcome {
        Ok(report) => ReplicaRow {
            to: to.to_owned(),
            vault: report.vault.clone(),
            version: report.newest.as_ref().map_or(0, |n| n.0),
            dir: report
                .newest
                .as_ref()
                .map_or(String::new(), |n| n.1.clone()),
            time: time::now_rfc3339(),
            error: String::new(),
        },
        Err(e) => ReplicaRow {
            to: to.to_owned(),
            time: time::now_rfc3339(),
            error: e.to_string(),
            ..previous
        },
    };
    if let Err(e) = replicas_tsv::record(&dir.path, row) {
        crate::error::warn(&format!("cannot record the replication: {e}"));
    }
}

/// Records a version acknowledged by the replica at `to` (vault `vault`) as its newest.
fn record_version(dir: &JobDir, to: &str, vault: &str, sent: &SentVersion) {
    let row = ReplicaRow {
        to: to.to_owned(),
        vault: vault.to_owned(),
        version: sent.n,
        dir: sent.dir.clone(),
        time: time::now_rfc3339(),
        error: String::new(),
    };
    if let Err(e) = replicas_tsv::record(&dir.path, row) {
        crate::error::warn(&format!("cannot record the replication: {e}"));
    }
}

/// The source's record of its replicas (for `status`).
pub fn replicas(dir: &Path) -> Vec<ReplicaRow> {
    replicas_tsv::read(dir)
}
