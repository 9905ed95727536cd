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

/// One job's live state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// `watching`, `waiting`, `copying`, `retiring`, `paused` or `failing`.
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
    crate::fsutil::write_atomic(path, &text)
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
            state: "failing".into(),
            since: now(),
            pid: 7,
            detail: Some("it broke".into()),
            ..Live::default()
        };
        write(&a, &live).expect("write");
        assert_eq!(read(&a), Some(live));
        assert_eq!(read(&b), None);
    }
}
