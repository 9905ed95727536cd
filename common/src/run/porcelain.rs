//! Read-only queries behind `reverberator status`, `versions`, `history` and `diff`
//! (docs/cli.md porcelain). Nothing here writes to a vault.
//!
//! `history` and `diff` use the vault links themselves: a path is held by a version when it
//! resolves to that version's own entry; two versions share an entry when both resolve it to
//! the same holder, so `diff` skips a shared subtree without reading it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::capture::identity::MatchedBy;
use crate::error::{IoContext, Result};
use crate::format::entry::{Difference, EntryFacts, compare};
use crate::format::index::IndexRow;
use crate::format::jobfile::JobFile;
use crate::format::journal::{self, JournalEvent};
use crate::format::time;
use crate::format::tsv;
use crate::run::live::{self, JobState, Live};
use crate::vault::layout::JobDir;
use crate::vault::tree::{self, Entry, Lookalikes};

/// One job's state for `reverberator status`.
///
/// Serialized (`status --json`) as one flat record: `type`, `job`, `state`, `since`,
/// `detail`, `due`, `next_retry`, `resolve`, `last_version`, `last_age_seconds`, `versions`,
/// `pending`, `size_bytes`, `size_limit`, `identity`, `vault_capabilities`,
/// `mounts_left_out`, `replica_lag` (the state's details flattened as in the live file, the
/// identity as its sentence, the replicas as a list of [`ReplicaLag`]).
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// With a supervisor, its live state; without: [`JobState::Stopped`], or
    /// [`JobState::New`] (no job folder yet).
    pub state: JobState,
    /// When the job entered the state (supervisor states only).
    pub since: Option<String>,
    /// The newest version's directory.
    pub last_version: Option<String>,
    /// Seconds since the newest version was taken.
    pub last_age_seconds: Option<u64>,
    /// Retained versions.
    pub versions: usize,
    /// Raw change events journaled since the last batch.
    pub journaled_pending: u64,
    /// The job folder's size as the index knows it (sum of held bytes).
    pub size_bytes: u64,
    /// The size limit, if any.
    pub size_limit: Option<u64>,
    /// Whether the source and vault are on their recorded filesystems.
    pub identity: IdentityReport,
    /// What the vault's filesystem makes the tools do differently, as its capability
    /// record says (`None`: nothing, or never probed; docs/filesystems.md).
    pub vault_capabilities: Option<String>,
    /// The mountpoints below the source left out (`one_file_system`), relative to the
    /// source and escaped, as the last build found them.
    pub mounts_left_out: Vec<String>,
    /// How far behind each replica is (docs/design.md#replication).
    pub replica_lag: Vec<ReplicaLag>,
    /// A replica's job (job.toml's `replica_of`): the id of the vault it is a copy of. Such
    /// a job has no source of its own here; `reverb-receive` adds its versions.
    pub replica_of: Option<String>,
}

/// One replica of a job, as the source's `replicas.tsv` and index.tsv tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaLag {
    /// The destination.
    pub to: String,
    /// The replica's newest version when last heard of.
    pub newest: Option<String>,
    /// Versions this vault holds that the replica does not have yet.
    pub behind: u64,
    /// Since when (the `created` of the oldest of them).
    pub since: Option<String>,
    /// The last replication's failure, when it failed.
    pub error: Option<String>,
    /// What the supervisor does about it now, when one runs.
    pub state: Option<crate::run::replica_live::ReplicaActivity>,
    /// When a waiting replica is tried again.
    pub next_try: Option<String>,
}

/// The lag of every replica of the job at `dir` (configured in `replicate_to`, or recorded
/// in `replicas.tsv`), against its index rows.
fn replica_lags(
    dir: &JobDir,
    configured: &[String],
    rows: &[IndexRow],
    vault_root: &Path,
) -> Vec<ReplicaLag> {
    let recorded = crate::format::replicas_tsv::read(&dir.path);
    let live = crate::run::replica_live::read(&crate::run::replica_live::file_beside(
        &live::file_of(&live::runtime_dir(), vault_root, &dir.folder),
    ));
    let live_of = |to: &str| {
        live.as_ref()
            .and_then(|l| l.replicas.iter().find(|r| r.to == to).cloned())
    };
    // As `replicate` records them (the parsed destination, displayed).
    let mut names: Vec<String> = configured
        .iter()
        .map(|t| {
            crate::format::destination::Destination::parse(t)
                .map_or_else(|_| t.clone(), |d| d.to_string())
        })
        .collect();
    for r in &recorded {
        if !names.contains(&r.to) {
            names.push(r.to.clone());
        }
    }
    names
        .into_iter()
        .map(|to| {
            let row = recorded.iter().find(|r| r.to == to);
            let have = row.map_or(0, |r| r.version);
            let missing: Vec<&IndexRow> = rows.iter().filter(|r| r.version > have).collect();
            let now = live_of(&to);
            ReplicaLag {
                newest: row.filter(|r| r.version > 0).map(|r| r.dir.clone()),
                behind: missing.len() as u64,
                since: missing.first().map(|r| r.created.clone()),
                error: now
                    .as_ref()
                    .and_then(|l| l.why.clone())
                    .or_else(|| row.filter(|r| !r.error.is_empty()).map(|r| r.error.clone())),
                state: now.as_ref().map(|l| l.state),
                next_try: now.and_then(|l| l.next_try),
                to,
            }
        })
        .collect()
}

/// Where the source and the vault stand against the filesystems job.toml records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityReport {
    /// The job has no job.toml yet (and the vault directory exists).
    NotCreated,
    /// The vault directory does not exist.
    VaultMissing(PathBuf),
    /// Each of the source and the vault, checked.
    Checked(Vec<(&'static str, RoleIdentity)>),
}

/// One path (`source` or `vault`) against its recorded filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleIdentity {
    /// job.toml records no identity for it.
    Unrecorded,
    /// It is on the recorded filesystem; which field matched.
    Matches(MatchedBy),
    /// It is not: the disk is unplugged or another is mounted there.
    Lost,
}

impl IdentityReport {
    /// A vault missing or a path off its recorded filesystem.
    pub fn needs_attention(&self) -> bool {
        match self {
            IdentityReport::NotCreated => false,
            IdentityReport::VaultMissing(_) => true,
            IdentityReport::Checked(roles) => roles.iter().any(|(_, r)| *r == RoleIdentity::Lost),
        }
    }
}

impl std::fmt::Display for IdentityReport {
    /// `source ok (uuid), vault ok (device)`, `source LOST, …`, `not created yet`,
    /// `vault /x missing`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityReport::NotCreated => f.write_str("not created yet"),
            IdentityReport::VaultMissing(v) => {
                write!(
                    f,
                    "vault {} missing (no {} there: unmounted?)",
                    crate::error::show(v),
                    crate::vault::layout::MARKER
                )
            }
            IdentityReport::Checked(roles) => {
                for (i, (role, r)) in roles.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match r {
                        RoleIdentity::Unrecorded => write!(f, "{role} unrecorded")?,
                        RoleIdentity::Matches(m) => write!(f, "{role} ok ({})", m.as_str())?,
                        RoleIdentity::Lost => write!(f, "{role} LOST")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl Serialize for JobStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let w = self.state.to_wire();
        let mut r = s.serialize_struct("JobStatus", 18)?;
        r.serialize_field("type", "status")?;
        r.serialize_field("job", &self.job)?;
        r.serialize_field("state", &w.state)?;
        r.serialize_field("since", &self.since)?;
        r.serialize_field("detail", &w.detail)?;
        r.serialize_field("due", &w.due)?;
        r.serialize_field("next_retry", &w.next_retry)?;
        r.serialize_field("resolve", &w.resolve)?;
        r.serialize_field("last_version", &self.last_version)?;
        r.serialize_field("last_age_seconds", &self.last_age_seconds)?;
        r.serialize_field("versions", &self.versions)?;
        r.serialize_field("pending", &self.pending())?;
        r.serialize_field("size_bytes", &self.size_bytes)?;
        r.serialize_field("size_limit", &self.size_limit)?;
        r.serialize_field("identity", &self.identity.to_string())?;
        r.serialize_field("vault_capabilities", &self.vault_capabilities)?;
        r.serialize_field("mounts_left_out", &self.mounts_left_out)?;
        r.serialize_field("replica_lag", &self.replica_lag)?;
        r.serialize_field("replica_of", &self.replica_of)?;
        r.end()
    }
}

/// Computes a job's status (`dir` may not exist yet for a configured but new job).
pub fn status(dir: &JobDir, name: &str, source: Option<&Path>, vault_root: &Path) -> JobStatus {
    let mut st = JobStatus {
        job: name.to_owned(),
        state: JobState::New,
        since: None,
        last_version: None,
        last_age_seconds: None,
        versions: 0,
        journaled_pending: 0,
        size_bytes: 0,
        size_limit: None,
        identity: IdentityReport::NotCreated,
        vault_capabilities: crate::vault::layout::recorded_capabilities(vault_root)
            .filter(|c| !c.adaptations().is_empty())
            .map(|c| c.summary()),
        mounts_left_out: Vec::new(),
        replica_lag: Vec::new(),
        replica_of: None,
    };
    let live = live_state(dir, name, vault_root);
    let Ok(file) = JobFile::read(&dir.job_toml()) else {
        // No vault marker: the vault is not there (an unplugged disk leaves its empty
        // mountpoint), not a job never made.
        if !vault_root.join(crate::vault::layout::MARKER).is_file() {
            st.identity = IdentityReport::VaultMissing(vault_root.to_path_buf());
            // Not known to be new: its folder may be on the missing vault.
            st.state = JobState::Stopped;
        }
        if let Some(l) = live {
            st.take_live(l);
        }
        return st;
    };
    st.size_limit = file.settings.vault_size_limit;
    st.replica_of = file.state.replica_of.clone();
    st.mounts_left_out = file.state.mounts_left_out.clone();
    if let Ok(rows) = crate::format::index::read_index_or_empty(&dir.index()) {
        st.replica_lag = replica_lags(dir, &file.settings.replicate_to, &rows, vault_root);
        st.versions = rows.len();
        st.size_bytes = crate::format::index::total_held(&rows);
        if let Some(last) = rows.last() {
            st.last_version = Some(last.dir.clone());
            st.last_age_seconds = time::parse_rfc3339(&last.created)
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .map(|d| d.as_secs());
        }
    }
    st.journaled_pending = journaled_pending(&dir.journal());
    st.state = JobState::Stopped;
    if let Some(l) = live {
        st.take_live(l);
    }
    let source = source
        .map(Path::to_path_buf)
        .unwrap_or_else(|| file.source.clone());
    let mut roles = Vec::new();
    for (role, rec, path) in [
        ("source", &file.identity.source, source.as_path()),
        ("vault", &file.identity.vault, vault_root),
    ] {
        if role == "source" && st.replica_of.is_some() {
            // A replica's source is on another host: nothing here to check.
            continue;
        }
        roles.push((
            role,
            match rec {
                None => RoleIdentity::Unrecorded,
                Some(rec) => match crate::capture::identity::verify(role, rec, path) {
                    Ok(m) => RoleIdentity::Matches(m),
                    Err(_) => RoleIdentity::Lost,
                },
            },
        ));
    }
    st.identity = IdentityReport::Checked(roles);
    st
}

impl JobStatus {
    fn take_live(&mut self, l: Live) {
        self.state = l.state;
        self.since = Some(l.since);
    }

    /// Raw changes waiting: the supervisor's count while it is `waiting`, else what the
    /// journal holds since the last batch.
    pub fn pending(&self) -> u64 {
        match self.state {
            JobState::Waiting { pending, .. } if pending > 0 => pending,
            _ => self.journaled_pending,
        }
    }

    /// A state that needs someone's attention (`status` exits 1): failing, paused, or a
    /// vault or filesystem that is not there.
    pub fn needs_attention(&self) -> bool {
        self.state.needs_attention() || self.identity.needs_attention()
    }
}

/// The supervisor's live record of the job, when a supervisor is watching it: its pid is
/// alive and, once it has taken the job's `run.lock` (after a new job's first version), it
/// still holds it (status never creates the lock file).
fn live_state(dir: &JobDir, name: &str, vault_root: &Path) -> Option<Live> {
    let l = live::read(&live::file_of(
        &live::runtime_dir(),
        vault_root,
        &dir.folder,
    ))?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(l.pid).ok()?);
    // EPERM: alive, another user's (a reader such as reverb-web need not be root).
    match nix::sys::signal::kill(pid, None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return None,
    }
    let lock = dir.run_lock();
    // Before a new job's first version is published the supervisor has no run.lock yet.
    if lock.exists() && run_lock_held(&lock, name) == Some(false) {
        return None;
    }
    Some(l)
}

/// For a job [`status`] found stopped: when a supervisor holds its `run.lock` all the same,
/// what to say (its live state is in another runtime directory than this process's).
/// Probed without writing; `None` when no supervisor holds it, or when that is unknown.
pub fn supervised_elsewhere(dir: &JobDir, name: &str) -> Option<String> {
    let lock = dir.run_lock();
    (lock.exists() && run_lock_held(&lock, name) == Some(true)).then(|| {
        format!(
            "a supervisor holds its run.lock, but its live state is not in {}: run this with the RUNTIME_DIRECTORY (or XDG_RUNTIME_DIR) that supervisor has",
            live::runtime_dir().display()
        )
    })
}

/// Whether a supervisor holds the job's `run.lock` ([`crate::vault::lock::held`]).
fn run_lock_held(lock: &Path, name: &str) -> Option<bool> {
    crate::vault::lock::held(lock, name)
}

/// The raw change events journaled since the last batch.
fn journaled_pending(path: &Path) -> u64 {
    let Ok(text) = fs::read_to_string(path) else {
        return 0;
    };
    let mut pending = 0u64;
    // Unreadable lines (a torn tail, a future column) are skipped: this is a summary.
    for entry in text
        .lines()
        .skip(1)
        .filter_map(|l| journal::Entry::parse(l).ok())
    {
        match entry.event {
            e if e.is_pending_change() => pending += 1,
            JournalEvent::Batch | JournalEvent::Snapshot => pending = 0,
            _ => {}
        }
    }
    pending
}

/// One version in a path's history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    /// Record type for JSON lines.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Version number.
    pub version: u64,
    /// Version directory.
    pub dir: String,
    /// When it was taken.
    pub created: String,
    /// `added`, `modified` or `deleted`.
    pub change: &'static str,
    /// Apparent size of the entry in that version (0 when deleted or a directory).
    pub size: u64,
}

/// The versions in which `rel` changed: held by the version itself (added or modified), or
/// gone after being present (deleted). An entry a version holds that is the same as in the
/// version before (a source link, which a version whose folder is real holds itself, or a
/// name of the same inode) is no change; a directory held by a version is one (something
/// below it changed).
pub fn history(dir: &JobDir, rows: &[IndexRow], rel: &Path) -> Result<Vec<HistoryRow>> {
    let lookalikes = Lookalikes::load(&dir.path)?;
    let mut out = Vec::new();
    let mut present = false;
    // The entry in the last version that had it, and its lstat.
    let mut before: Option<(PathBuf, fs::Metadata)> = None;
    for row in rows {
        let phys = tree::resolve(&dir.path, &row.dir, rel, &lookalikes)?;
        match phys {
            Some(p) => {
                let path = dir.path.join(&p).join(rel);
                if p == row.dir || !present {
                    let meta = fs::symlink_metadata(&path).ctx("cannot inspect", &path)?;
                    let unchanged = present
                        && before
                            .as_ref()
                            .is_some_and(|(bp, bm)| same_entry(bp, bm, &path, &meta));
                    before = Some((path, meta.clone()));
                    if unchanged {
                        continue;
                    }
                    out.push(HistoryRow {
                        kind: "history",
                        version: row.version,
                        dir: row.dir.clone(),
                        created: row.created.clone(),
                        change: if present { "modified" } else { "added" },
                        size: if meta.is_file() { meta.len() } else { 0 },
                    });
                }
                present = true;
            }
            None => {
                before = None;
                if present {
                    out.push(HistoryRow {
                        kind: "history",
                        version: row.version,
                        dir: row.dir.clone(),
                        created: row.created.clone(),
                        change: "deleted",
                        size: 0,
                    });
                }
                present = false;
            }
        }
    }
    Ok(out)
}

/// Is the entry at `b` (lstat `mb`) what it was at `a` (lstat `ma`) in an earlier version:
/// one inode under two names (not a directory), or two symlinks with the same text and
/// attributes? A regular file a version copied again is a change even with the same size
/// and mtime (its data differed: the racily clean rule).
fn same_entry(a: &Path, ma: &fs::Metadata, b: &Path, mb: &fs::Metadata) -> bool {
    if ma.is_dir() || mb.is_dir() {
        return false;
    }
    if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
        return true;
    }
    ma.file_type().is_symlink()
        && mb.file_type().is_symlink()
        && compare(&EntryFacts::of(a, ma), &EntryFacts::of(b, mb), true) == Difference::Same
}

/// One difference between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffRow {
    /// Record type for JSON lines.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `added`, `removed`, `modified` (type, data or link target) or `attributes` (only
    /// mode, owner, times or xattrs). Everything below an added or removed directory is
    /// listed too.
    pub change: &'static str,
    /// The path, escaped with the TSV rules.
    pub path: String,
}

/// The paths added, removed or changed from version dir `a` to version dir `b`.
pub fn diff(dir: &JobDir, a: &str, b: &str) -> Result<Vec<DiffRow>> {
    let lookalikes = Lookalikes::load(&dir.path)?;
    let mut out = Vec::new();
    diff_dir(&dir.path, &lookalikes, Path::new(""), a, b, &mut out)?;
    Ok(out)
}

fn listing(
    job: &Path,
    phys: &str,
    rel: &Path,
    lookalikes: &Lookalikes,
) -> Result<BTreeMap<OsString, String>> {
    let abs = job.join(phys).join(rel);
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&abs).ctx("cannot list", &abs)? {
        let e = e.ctx("cannot list", &abs)?;
        let ft = e.file_type().ctx("cannot inspect", &e.path())?;
        let child = rel.join(e.file_name());
        let holder = match tree::classify(&e.path(), &child, phys, ft, lookalikes)? {
            Entry::VaultLink { holder } => holder,
            Entry::Real(_) => phys.to_owned(),
        };
        out.insert(e.file_name(), holder);
    }
    Ok(out)
}

/// One directory of a diff in progress: its path and the names still to compare, with the
/// holders of each name in the two versions.
struct DiffFrame {
    rel: PathBuf,
    names: std::vec::IntoIter<(OsString, Option<String>, Option<String>)>,
}

impl DiffFrame {
    fn open(job: &Path, lookalikes: &Lookalikes, rel: PathBuf, a: &str, b: &str) -> Result<Self> {
        let mut la = listing(job, a, &rel, lookalikes)?;
        let mut lb = listing(job, b, &rel, lookalikes)?;
        let names: BTreeSet<OsString> = la.keys().chain(lb.keys()).cloned().collect();
        let names: Vec<_> = names
            .into_iter()
            .map(|n| {
                let (ha, hb) = (la.remove(&n), lb.remove(&n));
                (n, ha, hb)
            })
            .collect();
        Ok(DiffFrame {
            rel,
            names: names.into_iter(),
        })
    }
}

/// Walks both versions together, depth first in name order (an explicit stack, so a deep
/// tree needs no deep call stack), descending only where the two holders differ.
fn diff_dir(
    job: &Path,
    lookalikes: &Lookalikes,
    root: &Path,
    a: &str,
    b: &str,
    out: &mut Vec<DiffRow>,
) -> Result<()> {
    let mut stack = vec![DiffFrame::open(job, lookalikes, root.to_path_buf(), a, b)?];
    while let Some(frame) = stack.last_mut() {
        let Some((name, ha, hb)) = frame.names.next() else {
            stack.pop();
            continue;
        };
        let child = frame.rel.join(&name);
        let row = |change| DiffRow {
            kind: "diff",
            change,
            path: tsv::escape_os(child.as_os_str()),
        };
        let (ha, hb) = match (ha, hb) {
            (Some(ha), None) => {
                out.push(row("removed"));
                below(job, lookalikes, &ha, &child, "removed", out)?;
                continue;
            }
            (None, Some(hb)) => {
                out.push(row("added"));
                below(job, lookalikes, &hb, &child, "added", out)?;
                continue;
            }
            (Some(ha), Some(hb)) if ha != hb => (ha, hb),
            _ => continue,
        };
        let (pa, pb) = (job.join(&ha).join(&child), job.join(&hb).join(&child));
        let ma = fs::symlink_metadata(&pa).ctx("cannot inspect", &pa)?;
        let mb = fs::symlink_metadata(&pb).ctx("cannot inspect", &pb)?;
        if ma.is_dir() && mb.is_dir() {
            // A directory's own attributes are its mode and owner: its mtime follows its
            // children, which the walk compares one by one.
            if ma.mode() != mb.mode() || ma.uid() != mb.uid() || ma.gid() != mb.gid() {
                out.push(row("attributes"));
            }
            let next = DiffFrame::open(job, lookalikes, child, &ha, &hb)?;
            stack.push(next);
            continue;
        }
        let (fa, fb) = (EntryFacts::of(&pa, &ma), EntryFacts::of(&pb, &mb));
        let both_links = ma.file_type().is_symlink() && mb.file_type().is_symlink();
        match compare(&fa, &fb, true) {
            Difference::Same => {}
            // A build makes a symlink anew for a change of its owner or times (it cannot
            // change one in place), but for a reader the same text is an attribute change.
            Difference::Content if both_links && fa.target == fb.target => {
                out.push(row("attributes"))
            }
            Difference::Attributes => out.push(row("attributes")),
            Difference::Content => out.push(row("modified")),
        }
    }
    Ok(())
}

/// Every entry below `rel` in version `holder` (an added or removed directory's contents).
fn below(
    job: &Path,
    lookalikes: &Lookalikes,
    holder: &str,
    rel: &Path,
    change: &'static str,
    out: &mut Vec<DiffRow>,
) -> Result<()> {
    struct Collect<'o> {
        top: PathBuf,
        change: &'static str,
        out: &'o mut Vec<DiffRow>,
    }
    impl tree::Visitor for Collect<'_> {
        fn entry(&mut self, node: &mut tree::Node) -> Result<()> {
            if node.rel != self.top {
                self.out.push(DiffRow {
                    kind: "diff",
                    change: self.change,
                    path: tsv::escape_os(node.rel.as_os_str()),
                });
            }
            Ok(())
        }
    }
    let mut c = Collect {
        top: rel.to_path_buf(),
        change,
        out,
    };
    tree::Walk::new(job, lookalikes, tree::Links::Follow)
        .sorted()
        .run(holder, rel, &mut c)
}

/// The paths the journal says changed while version `dir` copied them (`changed-during-copy`
/// before its `snapshot` line): that version may hold a mix of their old and new data.
pub fn changed_during_copy(dir: &JobDir, version: &str) -> Vec<String> {
    let Ok(text) = fs::read_to_string(dir.journal()) else {
        return Vec::new();
    };
    let mut seen = Vec::new();
    for e in text
        .lines()
        .skip(1)
        .filter_map(|l| journal::Entry::parse(l).ok())
    {
        match e.event {
            JournalEvent::ChangedDuringCopy => seen.push(tsv::escape_bytes(&e.path)),
            JournalEvent::Snapshot if journal::snapshot_version(&e.detail) == Some(version) => {
                return seen;
            }
            JournalEvent::Snapshot => seen.clear(),
            _ => {}
        }
    }
    Vec::new()
}

/// A path argument as given on the command line, relative to the source (leading `/` and
/// `./` dropped).
pub fn rel_arg(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_lock_probe_reads_without_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join("run.lock");
        fs::write(&lock, b"").expect("write");
        // Read-only: the probe opens it for reading (flock needs no write access).
        fs::set_permissions(&lock, std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .expect("chmod");
        assert_eq!(run_lock_held(&lock, "j"), Some(false));
        let held = fs::File::open(&lock).expect("open");
        held.lock().expect("lock");
        assert_eq!(run_lock_held(&lock, "j"), Some(true));
        drop(held);
        assert_eq!(run_lock_held(&lock, "j"), Some(false));
    }
}
