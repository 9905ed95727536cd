//! The supervisor's live state (docs/design.md#live-state): one small JSON file per job in
//! the runtime directory, rewritten atomically on every change of state, never in the vault;
//! `reverberator status` reads it.
//!
//! Owns: where the files are (`$RUNTIME_DIRECTORY`, else `$XDG_RUNTIME_DIR/reverberator`,
//! else `/run/reverberator`), their names and their record ([`Live`]).
//!
//! Invariants: a reader sees a whole record or none (temp file + rename); a job's file is
//! named by its folder and a hash of its vault path, so jobs of different vaults never share
//! one; a record is trusted only while its supervisor holds the job's `run.lock` (the reader
//! checks), so a file left by a killed supervisor never shows a stale state as live.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::format::time;

/// What a job is doing: the one type the supervisor writes, `status` reads and shows, and
/// the web interface and `/metrics` read. Each variant holds the details it owns.
///
/// On the wire (the live file, `status --json`) it is flattened into the lowercase `state`
/// word and the optional `pending`, `due`, `detail`, `next_retry` and `resolve` fields, the
/// same names as always (see [`LiveRecord`]).
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// A supervisor watches; nothing is pending. `fallback` says how it watches when it
    /// cannot use inotify (periodic rescans), with why.
    Watching {
        /// The rescan fallback and its reason, when inotify cannot watch the tree.
        fallback: Option<String>,
    },
    /// The supervisor has taken the job (it holds its `run.lock`) and is setting up the
    /// watch; the catch-up rescan follows, which takes in whatever changed meanwhile.
    /// systemd's `READY=1` waits until no job is starting.
    Starting,
    /// Changes are waiting for the next version.
    Waiting {
        /// Raw changes waiting.
        pending: u64,
        /// When the version is due at the latest (RFC 3339).
        due: Option<String>,
    },
    /// A version is being built.
    Copying {
        /// What is being built, and how far it got.
        progress: String,
    },
    /// Versions are being retired.
    Retiring,
    /// The source or vault is lost, missing or not the recorded filesystem.
    Paused {
        /// Why.
        why: String,
    },
    /// The last attempt failed; the supervisor retries.
    Failing {
        /// The last error in full.
        why: String,
        /// When the supervisor tries again (RFC 3339).
        next_retry: Option<String>,
        /// The command that resolves the failure, when one does.
        resolve: Option<String>,
    },
    /// No supervisor watches the job (`status` only).
    Stopped,
    /// The job has no folder in the vault yet (`status` only).
    New,
}

impl JobState {
    /// Every state's word, in the order `status` documents them.
    pub const WORDS: [&'static str; 9] = [
        "starting", "watching", "waiting", "copying", "retiring", "paused", "failing", "stopped",
        "new",
    ];

    /// The state's word on the wire and in `status`.
    pub fn word(&self) -> &'static str {
        match self {
            JobState::Starting => "starting",
            JobState::Watching { .. } => "watching",
            JobState::Waiting { .. } => "waiting",
            JobState::Copying { .. } => "copying",
            JobState::Retiring => "retiring",
            JobState::Paused { .. } => "paused",
            JobState::Failing { .. } => "failing",
            JobState::Stopped => "stopped",
            JobState::New => "new",
        }
    }

    /// A state that needs someone's attention (`status` exits 1).
    pub fn needs_attention(&self) -> bool {
        matches!(self, JobState::Paused { .. } | JobState::Failing { .. })
    }

    /// The detail field of the wire: why (paused, failing), what is being built (copying),
    /// the rescan fallback (watching).
    pub fn detail(&self) -> Option<&str> {
        match self {
            JobState::Watching { fallback } => fallback.as_deref(),
            JobState::Copying { progress } => Some(progress),
            JobState::Paused { why } | JobState::Failing { why, .. } => Some(why),
            _ => None,
        }
    }

    /// The flat wire fields of this state.
    pub(crate) fn to_wire(&self) -> WireState {
        let mut w = WireState {
            state: self.word().to_owned(),
            detail: self.detail().map(str::to_owned),
            ..WireState::default()
        };
        match self {
            JobState::Waiting { pending, due } => {
                w.pending = *pending;
                w.due = due.clone();
            }
            JobState::Failing {
                next_retry,
                resolve,
                ..
            } => {
                w.next_retry = next_retry.clone();
                w.resolve = resolve.clone();
            }
            _ => {}
        }
        w
    }

    /// The state the flat wire fields describe; an unknown word is an error naming it.
    fn from_wire(w: WireState) -> Result<JobState, String> {
        let detail = w.detail.unwrap_or_default();
        Ok(match w.state.as_str() {
            "watching" => JobState::Watching {
                fallback: (!detail.is_empty()).then_some(detail),
            },
            "waiting" => JobState::Waiting {
                pending: w.pending,
                due: w.due,
            },
            "copying" => JobState::Copying { progress: detail },
            "starting" => JobState::Starting,
            "retiring" => JobState::Retiring,
            "paused" => JobState::Paused { why: detail },
            "failing" => JobState::Failing {
                why: detail,
                next_retry: w.next_retry,
                resolve: w.resolve,
            },
            "stopped" => JobState::Stopped,
            "new" => JobState::New,
            other => return Err(format!("unknown job state `{other}`")),
        })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// The flat fields a [`JobState`] is written as (in the live file and `status --json`).
#[derive(Debug, Default)]
pub(crate) struct WireState {
    pub(crate) state: String,
    pub(crate) pending: u64,
    pub(crate) due: Option<String>,
    pub(crate) detail: Option<String>,
    pub(crate) next_retry: Option<String>,
    pub(crate) resolve: Option<String>,
}

/// One job's live state, as the supervisor writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "LiveRecord", try_from = "LiveRecord")]
pub struct Live {
    /// What the job is doing.
    pub state: JobState,
    /// When the job entered this state (RFC 3339).
    pub since: String,
    /// The supervisor's pid.
    pub pid: u32,
}

/// The live file's JSON record (docs/design.md#live-state): [`Live`] flattened, field by
/// field as it has always been written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveRecord {
    /// `starting`, `watching`, `waiting`, `copying`, `retiring`, `paused` or `failing`.
    pub state: String,
    /// When the job entered this state (RFC 3339).
    pub since: String,
    /// The supervisor's pid.
    pub pid: u32,
    /// Raw changes waiting for the next version (`waiting`).
    #[serde(default)]
    pub pending: u64,
    /// When the next version is due at the latest (`waiting`).
    #[serde(default)]
    pub due: Option<String>,
    /// Why (`paused`), the last error in full (`failing`), or what is being built (`copying`).
    #[serde(default)]
    pub detail: Option<String>,
    /// When the supervisor tries again (`failing`).
    #[serde(default)]
    pub next_retry: Option<String>,
    /// The command that resolves the failure, when one does.
    #[serde(default)]
    pub resolve: Option<String>,
}

impl From<Live> for LiveRecord {
    fn from(l: Live) -> LiveRecord {
        let w = l.state.to_wire();
        LiveRecord {
            state: w.state,
            since: l.since,
            pid: l.pid,
            pending: w.pending,
            due: w.due,
            detail: w.detail,
            next_retry: w.next_retry,
            resolve: w.resolve,
        }
    }
}

impl TryFrom<LiveRecord> for Live {
    type Error = String;

    fn try_from(r: LiveRecord) -> Result<Live, String> {
        let state = JobState::from_wire(WireState {
            state: r.state,
            pending: r.pending,
            due: r.due,
            detail: r.detail,
            next_retry: r.next_retry,
            resolve: r.resolve,
        })?;
        Ok(Live {
            state,
            since: r.since,
            pid: r.pid,
        })
    }
}

/// The runtime directory the live files go to.
pub fn runtime_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var("RUNTIME_DIRECTORY") {
        // systemd may list several, separated by `:`; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        return PathBuf::from(first);
    }
    match var("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("reverberator"),
        None => PathBuf::from("/run/reverberator"),
    }
}

/// The live file of job folder `folder` of `vault` in `dir`.
pub fn file_of(dir: &Path, vault: &Path, folder: &str) -> PathBuf {
    let real = crate::vault::job::canonical_or_nearest(vault);
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in real.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    dir.join(format!("{folder}.{h:016x}.json"))
}

/// Reads a live file; None when it is missing or unreadable.
pub fn read(path: &Path) -> Option<Live> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes `live` to `path` atomically (the directory is created).
pub fn write(path: &Path, live: &Live) -> crate::Result<()> {
    if let Some(dir) = path.parent() {
        use crate::error::IoContext;
        std::fs::create_dir_all(dir).ctx("cannot create the runtime directory", dir)?;
    }
    let text = serde_json::to_vec(live).unwrap_or_default();
    crate::fsutil::write_atomic_readable(path, &text)
}

/// Now, as the records write times.
pub fn now() -> String {
    time::rfc3339_millis(SystemTime::now())
}

/// `t` from now, as the records write times.
pub fn after(d: std::time::Duration) -> String {
    time::rfc3339_millis(SystemTime::now() + d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = file_of(dir.path(), Path::new("/v1"), "docs");
        let b = file_of(dir.path(), Path::new("/v2"), "docs");
        assert_ne!(a, b, "two vaults, two files");
        let live = Live {
            state: JobState::Failing {
                why: "it broke".into(),
                next_retry: Some(now()),
                resolve: None,
            },
            since: now(),
            pid: 7,
        };
        write(&a, &live).expect("write");
        assert_eq!(read(&a), Some(live));
        assert_eq!(read(&b), None);
    }

    #[test]
    fn every_state_keeps_its_wire_form() {
        let states = [
            JobState::Watching { fallback: None },
            JobState::Watching {
                fallback: Some("cannot watch (limit); falling back".into()),
            },
            JobState::Waiting {
                pending: 3,
                due: Some("2026-12-07T10:00:00.000Z".into()),
            },
            JobState::Copying {
                progress: "a rescan of the whole source".into(),
            },
            JobState::Retiring,
            JobState::Starting,
            JobState::Paused { why: "lost".into() },
            JobState::Failing {
                why: "boom".into(),
                next_retry: Some("2026-12-07T10:00:01.000Z".into()),
                resolve: Some("reverberator snap docs --force".into()),
            },
        ];
        for state in states {
            assert!(JobState::WORDS.contains(&state.word()), "{state}");
            let live = Live {
                state,
                since: "2026-12-07T09:00:00.000Z".into(),
                pid: 1,
            };
            let text = serde_json::to_string(&live).expect("serialize");
            let back: Live = serde_json::from_str(&text).expect("parse");
            assert_eq!(back, live, "{text}");
        }
        // The record as earlier versions wrote it still reads.
        let old = r#"{"state":"waiting","since":"s","pid":9,"pending":4,"due":"d","detail":null,"next_retry":null,"resolve":null}"#;
        let l: Live = serde_json::from_str(old).expect("old record");
        assert_eq!(
            l.state,
            JobState::Waiting {
                pending: 4,
                due: Some("d".into())
            }
        );
        assert_eq!(serde_json::to_string(&l).expect("serialize"), old);
        let unknown = serde_json::from_str::<Live>(r#"{"state":"dancing","since":"s","pid":9}"#);
        assert!(unknown.is_err());
    }
}
