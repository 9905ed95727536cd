//! What a build tells its caller ([`crate::engine::snapshot::take`]): while it runs, each
//! entry copied ([`Progress`]); when it ends, what came of it ([`Outcome`]).
//!
//! A leaf of the engine: the build's state ([`crate::engine::build_state`]) accumulates the
//! outcome and reports progress, the publishing step ([`crate::engine::publish`]) completes
//! the outcome, and the entry point returns it; none of them is needed to name these types.
//!
//! Invariant: `Outcome::version` and `Outcome::row` are set together, only by a publish.

use crate::format::index::IndexRow;
use crate::format::relpath::RelPath;
use crate::format::version::VersionName;

/// What a build reports while it runs (a progress display).
pub trait Progress {
    /// One entry was copied into the new version; `bytes` its size.
    fn copied(&self, bytes: u64);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn copied(&self, _bytes: u64) {}
}

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The version made, if any (None: no difference, or a dry run).
    pub version: Option<VersionName>,
    /// Its index row.
    pub row: Option<IndexRow>,
    /// Entries copied or created.
    pub changed: u64,
    /// Paths found changed (dry run: what would be copied or deleted).
    pub changed_paths: Vec<RelPath>,
    /// Entries skipped (unreadable, sockets).
    pub skipped: u64,
    /// Regular files taken while they kept changing.
    pub unstable: u64,
    /// Files copied with shared extents.
    pub reflinked: u64,
    /// Mountpoints below the source whose filesystem was left out (`one_file_system`), as
    /// far as this build looked (a rescan: everywhere).
    pub mounts_left_out: Vec<RelPath>,
}
