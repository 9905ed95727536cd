//! The supervisor's live record of a job's replications (docs/design.md#replication):
//! `<runtime dir>/<folder>.<hash>.replicas.json` beside the job's live file, one entry per
//! destination: `replicating` while a replication runs, `waiting` (with the next try and
//! why) while the replica is away, `idle` once it has all. `status` shows it while the
//! supervisor that wrote it lives.
//!
//! Invariant: rewritten atomically on every change, by the job's replication thread only.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the supervisor is doing about one destination (on the wire: `replicating`,
/// `waiting`, `idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaActivity {
    /// A replication to it runs now.
    Replicating,
    /// The last try failed; it is tried again at `next_try`.
    Waiting,
    /// It has every version (or nothing is due).
    Idle,
}

/// One destination's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// The destination.
    pub to: String,
    pub state: ReplicaActivity,
    /// Since when (RFC 3339).
    pub since: String,
    /// Why it waits (the last failure), when it does.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub why: Option<String>,
    /// When it tries again, when it waits.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_try: Option<String>,
}

/// The whole record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasLive {
    /// The supervisor's pid (the record is believed while it lives).
    pub pid: u32,
    pub replicas: Vec<ReplicaState>,
}

/// The record's path, beside the job's live file `live`.
pub fn file_beside(live: &Path) -> PathBuf {
    live.with_extension("replicas.json")
}

/// Reads the record; `None` when missing, unreadable or its writer is gone.
pub fn read(path: &Path) -> Option<ReplicasLive> {
    let r: ReplicasLive = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(r.pid).ok()?);
    nix::sys::signal::kill(pid, None).ok()?;
    Some(r)
}

/// Writes the record atomically (the directory is created).
pub fn write(path: &Path, record: &ReplicasLive) -> crate::Result<()> {
    if let Some(dir) = path.parent() {
        use crate::error::IoContext;
        std::fs::create_dir_all(dir).ctx("cannot create the runtime directory", dir)?;
    }
    let text = serde_json::to_vec(record).unwrap_or_default();
    crate::fsutil::write_atomic(path, &text)
}
