//! The library's error type and its one mapping to exit codes (docs/cli.md).
//!
//! Exit codes: 0 success; 1 failure; 2 usage or configuration error; 3 (`reverb-watch`
//! only) an inotify limit stops the watch, so the reader must fall back to rescans; 75
//! temporary failure (the job is locked, the vault is not available, or a filesystem
//! identity does not match): retry later. Paths in messages are escaped with the TSV rules
//! ([`crate::escape`]), never lossy.
//!
//! Also owns the one way the library reports a failure it must not let abort the work it
//! describes (a journal line that could not be appended): [`warn`] hands it to the sink the
//! binary installed with [`set_warning_sink`], so the library never prints with a tool's
//! name of its own.

use std::io::{self, Write};
use std::path::Path;

use crate::escape;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of `reverb-watch`: an inotify limit ([`WatchLimit`]) stops the watch; the
/// supervisor falls back to periodic rescans.
pub const EXIT_WATCH_LIMIT: i32 = 3;
/// Exit code: temporary failure, retry later (EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: i32 = 75;

static WARNING_SINK: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Installs the printer for [`warn`] (once; later calls are ignored). A binary passes one
/// that prefixes its own name.
pub fn set_warning_sink(sink: fn(&str)) {
    let _ = WARNING_SINK.set(sink);
}

/// Reports a failure that must not abort the work it describes, through the installed
/// sink; without one, on stderr prefixed with the running program's name.
pub fn warn(message: &str) {
    match WARNING_SINK.get() {
        Some(sink) => sink(message),
        None => {
            let program = std::env::args_os()
                .next()
                .map(|a| Path::new(&a).file_name().map(escape::escape_os))
                .unwrap_or_default()
                .unwrap_or_default();
            let mut err = io::stderr().lock();
            let _ = writeln!(err, "{program}: warning: {message}");
        }
    }
}

/// An inotify limit that stops a watch (`reverb-watch` exits [`EXIT_WATCH_LIMIT`]); the
/// message says which sysctl to raise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchLimit {
    /// `inotify_add_watch` failed with ENOSPC: the watch limit in force, which is
    /// `fs.inotify.max_user_watches` or, when the user namespace's own is lower,
    /// `user.max_inotify_watches`.
    #[error(
        "inotify watch limit reached after {watched} of {total} directories under {}: \
         raise {} (sysctl {}={suggest}){}",
        show(root),
        limit.sysctl(),
        limit.sysctl(),
        current.map(|c| format!("; it is {c} now and counts every watch of this user")).unwrap_or_default()
    )]
    TooManyWatches {
        /// The watched root.
        root: std::path::PathBuf,
        /// Directories watched when the limit was hit.
        watched: usize,
        /// Directories a full watch needs.
        total: usize,
        /// The limit in force now, when /proc tells.
        current: Option<u64>,
        /// Which limit is in force (the global one or the user namespace's).
        limit: InotifyLimit,
        /// A limit that would do.
        suggest: u64,
    },
    /// `inotify_init` failed with EMFILE: `fs.inotify.max_user_instances` (or `ulimit -n`).
    #[error(
        "cannot create an inotify instance: {source}: the per-user limit of inotify instances \
         is reached (raise fs.inotify.max_user_instances, e.g. \
         sysctl fs.inotify.max_user_instances=1024) or the open-file limit (ulimit -n)"
    )]
    TooManyInstances {
        /// The EMFILE.
        source: io::Error,
    },
}

static ALIASES: std::sync::Mutex<Vec<(std::path::PathBuf, std::path::PathBuf)>> =
    std::sync::Mutex::new(Vec::new());

/// Makes messages show `real` instead of `via` (the working directory a writer entered).
pub fn register_alias(via: &Path, real: &Path) {
    if let Ok(mut a) = ALIASES.lock() {
        a.retain(|(v, _)| v != via);
        a.push((via.to_path_buf(), real.to_path_buf()));
    }
}

/// Shows a path in a message: escaped, never lossy, paths relative to an entered job folder
/// shown in full.
pub fn show(path: &Path) -> String {
    if path.is_relative()
        && let Ok(a) = ALIASES.lock()
    {
        for (via, real) in a.iter() {
            if let Ok(rest) = path.strip_prefix(via) {
                return escape::escape_os(real.join(rest).as_os_str());
            }
        }
    }
    escape::escape_os(path.as_os_str())
}

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error with what we were doing and on which path.
    #[error("{what} {}: {}", show(path), io_hint(source))]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: io::Error,
    },
    /// A restore's destination exists and is not an empty directory, and nothing allows
    /// writing over it: exit 2. Each front end says what allows it (the CLI's flags).
    #[error(
        "destination {} {} (--overwrite replaces what the restore writes, --delete also removes what the version does not hold)",
        show(dest),
        if *not_empty { "is not empty" } else { "exists" }
    )]
    DestinationOccupied {
        dest: std::path::PathBuf,
        /// A directory with entries (else an existing non-directory).
        not_empty: bool,
    },
    /// The vault path holds no vault marker (an unplugged disk, a typo): exit 75.
    #[error("vault not available: {} has no reverberator-vault.toml (an unplugged disk? `reverb-snap --init` or `reverberator run --init` creates a new vault)", show(.0))]
    VaultUnavailable(std::path::PathBuf),
    /// The job's lock is held by another writer and we were told not to wait: exit 75.
    #[error("job {0} is locked by another writer (--no-wait)")]
    Locked(String),
    /// A filesystem is not the one recorded for the job: exit 75.
    #[error("{0}")]
    IdentityMismatch(String),
    /// Bad configuration, flag or argument: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Bad input data (an event line, a damaged file): exit 1.
    #[error("{0}")]
    Invalid(String),
    /// A refused action that no setting resolves (retiring the newest version, a file
    /// descriptor limit): exit 1.
    #[error("{0}")]
    Refused(String),
    /// The vault holds something it should not (a damaged job): exit 1.
    #[error("{0}")]
    Damaged(String),
    /// A replication stream that is corrupt or hostile (docs/format.md#replication-stream):
    /// refused, naming the entry; nothing of it is kept. Exit 1.
    #[error("replication stream refused: {0}")]
    Stream(String),
    /// The other side of a replication is not there, or went away mid-stream (the program
    /// could not start, the connection dropped): exit 75, try again later.
    #[error("{0}")]
    Unreachable(String),
    /// inotify cannot watch the tree: exit 3.
    #[error(transparent)]
    WatchLimit(#[from] WatchLimit),
    /// The deletion guard (docs/cli.md `reverb-snap`): a rescan would leave fewer than
    /// `1 - max_delete_ratio` of the current version's files, which is more often an
    /// unmounted disk than a wish: exit 1, resolved by `--force`.
    #[error(
        "the rescan would leave {remaining} of {files} files ({:.0}%, fewer than \
         1 - max_delete_ratio {max_delete_ratio}): is the source's disk mounted? Use --force \
         if this is intended",
        *remaining as f64 * 100.0 / *files as f64
    )]
    DeletionGuard {
        /// Files the new version would hold.
        remaining: u64,
        /// Files the current version holds.
        files: u64,
        /// The job's `max_delete_ratio`.
        max_delete_ratio: f64,
    },
    /// A source other than the one the job records was given: exit 2, resolved by
    /// `--source NEW --force`.
    #[error(
        "job {job} records source {}, not {} (to back up {} from now on: reverb-snap --source {} --force)",
        recorded.display(), given.display(), given.display(), given.display()
    )]
    SourceChanged {
        /// The job's name.
        job: String,
        /// The source job.toml records.
        recorded: std::path::PathBuf,
        /// The source given.
        given: std::path::PathBuf,
    },
    /// The newest version alone is larger than `vault_size_limit`: nothing is retired for
    /// size; exit 1, resolved by raising the limit.
    #[error("job {job}: {detail}")]
    SizeLimitUnmeetable {
        /// The job folder.
        job: String,
        /// What the newest version needs on its own, as a complete tree (bytes).
        needs: u64,
        /// The limit (bytes).
        limit: u64,
        /// The whole explanation, sizes in words (the retirement plan's).
        detail: String,
    },
}

/// A failure that the tool cannot get past alone and that one command of a person resolves:
/// the typed record a program leaves for its supervisor (docs/design.md#the-supervisor), so
/// the supervisor chooses the remedy from a type, never from the text of a message.
///
/// On the wire (the file named by [`BLOCKER_FILE_VAR`]): one JSON object,
/// `{"kind":"deletion_guard"}`, `{"kind":"source_changed"}` or
/// `{"kind":"size_limit_unmeetable","needs":N,"limit":N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Blocker {
    /// [`Error::DeletionGuard`]: `--force` makes the version.
    DeletionGuard,
    /// [`Error::SourceChanged`]: `--source NEW --force` records the new source.
    SourceChanged,
    /// [`Error::SizeLimitUnmeetable`]: a higher `vault_size_limit`.
    SizeLimitUnmeetable {
        /// What the newest version needs (bytes).
        needs: u64,
        /// The limit (bytes).
        limit: u64,
    },
    /// [`Error::WatchLimit`]: a higher inotify limit (the job falls back to rescans
    /// meanwhile).
    InotifyLimit {
        /// Which limit.
        limit: InotifyLimit,
        /// Its value in force, when known.
        in_force: Option<u64>,
    },
}

/// Which inotify limit stopped a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InotifyLimit {
    /// Watches per user, the global limit ([`WatchLimit::TooManyWatches`]).
    Watches,
    /// Watches per user, the user namespace's own limit, lower than the global one.
    NamespaceWatches,
    /// Instances per user ([`WatchLimit::TooManyInstances`]).
    Instances,
}

impl InotifyLimit {
    /// The sysctl that sets it.
    pub fn sysctl(self) -> &'static str {
        match self {
            InotifyLimit::Watches => "fs.inotify.max_user_watches",
            InotifyLimit::NamespaceWatches => "user.max_inotify_watches",
            InotifyLimit::Instances => "fs.inotify.max_user_instances",
        }
    }

    /// What it limits, in words: `watch`, `instance`.
    pub fn counts(self) -> &'static str {
        match self {
            InotifyLimit::Watches | InotifyLimit::NamespaceWatches => "watch",
            InotifyLimit::Instances => "instance",
        }
    }
}

/// The environment variable through which the supervisor names the file a child writes its
/// [`Blocker`] to when it fails with one (`run::cli::finish` writes it).
pub const BLOCKER_FILE_VAR: &str = "REVERBERATOR_BLOCKER_FILE";

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::VaultUnavailable(_)
            | Error::Locked(_)
            | Error::IdentityMismatch(_)
            | Error::Unreachable(_) => EXIT_TEMPFAIL,
            Error::Usage(_) | Error::SourceChanged { .. } | Error::DestinationOccupied { .. } => {
                EXIT_USAGE
            }
            Error::WatchLimit(_) => EXIT_WATCH_LIMIT,
            Error::Io { .. }
            | Error::Invalid(_)
            | Error::Refused(_)
            | Error::Damaged(_)
            | Error::Stream(_)
            | Error::DeletionGuard { .. }
            | Error::SizeLimitUnmeetable { .. } => EXIT_FAILURE,
        }
    }

    /// The failure as a [`Blocker`], when one command of a person resolves it.
    pub fn blocker(&self) -> Option<Blocker> {
        match self {
            Error::DeletionGuard { .. } => Some(Blocker::DeletionGuard),
            Error::SourceChanged { .. } => Some(Blocker::SourceChanged),
            Error::SizeLimitUnmeetable { needs, limit, .. } => Some(Blocker::SizeLimitUnmeetable {
                needs: *needs,
                limit: *limit,
            }),
            Error::WatchLimit(WatchLimit::TooManyWatches { current, limit, .. }) => {
                Some(Blocker::InotifyLimit {
                    limit: *limit,
                    in_force: *current,
                })
            }
            Error::WatchLimit(WatchLimit::TooManyInstances { .. }) => Some(Blocker::InotifyLimit {
                limit: InotifyLimit::Instances,
                in_force: None,
            }),
            _ => None,
        }
    }

    /// Is this error the disk being full?
    pub fn is_enospc(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

fn io_hint(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => format!("{e} (the disk is full: free space or lower the size limit)"),
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            format!("{e} (raise the open-file limit: ulimit -n)")
        }
        _ => e.to_string(),
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds "what, on which path" to an `io::Result`.
pub trait IoContext<T> {
    /// Wraps the error with an action (`"cannot read"`) and a path.
    fn ctx(self, what: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, what: &'static str, path: &Path) -> Result<T> {
        self.map_err(|errno| Error::Io {
            what,
            path: path.to_path_buf(),
            source: io::Error::from_raw_os_error(errno as i32),
        })
    }
}
