//! A rescan's use of the source index ([`crate::format::source_index`],
//! docs/design.md#index-driven-rescans): which source entries it may take as equal to the
//! current version's without looking at the vault, the fresh base it writes from what it
//! saw, and the delta every build leaves for the next rescan.
//!
//! Invariants: a wrong index may only cost time. An entry is trusted only when the base
//! is keyed to the version being compared (its name, through an unbroken chain of deltas
//! from the base's version to it), under the same settings digest, and the entry's `lstat`
//! now equals the recorded facts exactly (inode, device, size, mode, owner, mtime and ctime
//! to the nanosecond), both of its times are older than the recording by more than the
//! racily clean window, and no delta since names it or a directory above it. Anything
//! else, and any doubt (a missing, damaged, foreign or unknown-format file), makes the
//! entry compared with the vault as before. Writes are private records built in `.tmp/`
//! and renamed; a delta is only ever written after its version is published, so a delta
//! exists only for a version that was; a failed write of the cache warns and never fails a
//! build.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::engine::marks::MarkTree;
use crate::error::Result;
use crate::format::events::Mark;
use crate::format::relpath::RelPath;
use crate::format::source_index::{self, BaseReader, BaseWriter, Block, Delta, Facts, Header};
use crate::format::version::VersionName;
use crate::fsutil::{self, Access};

/// How coarse a source's timestamps may be (FAT keeps 2 s): an entry changed within this
/// of the recording is racily clean and compared with the vault.
const WINDOW: Duration = Duration::from_secs(2);

/// More deltas than this since the base and the next one is written as their union.
const MERGE_AFTER: usize = 32;

/// A union of deltas larger than this is not kept: the next rescan compares in full.
const MAX_DIRTY: usize = 200_000;

/// The paths the deltas since the base name.
#[derive(Debug, Default)]
struct Dirty {
    subtrees: HashSet<Vec<u8>>,
    entries: HashSet<Vec<u8>>,
    /// The names above, by the directory they are in.
    names: HashMap<Vec<u8>, BTreeSet<OsString>>,
}

impl Dirty {
    fn add(&mut self, delta: Delta) {
        for (list, subtree) in [(delta.subtrees, true), (delta.entries, false)] {
            for p in list {
                let (parent, name) = match p.iter().rposition(|&c| c == b'/') {
                    Some(i) => (p[..i].to_vec(), p[i + 1..].to_vec()),
                    None => (Vec::new(), p.clone()),
                };
                self.names
                    .entry(parent)
                    .or_default()
                    .insert(OsStr::from_bytes(&name).to_owned());
                if subtree {
                    self.subtrees.insert(p);
                } else {
                    self.entries.insert(p);
                }
            }
        }
    }
}

/// One rescan's index: the base it may trust (if any) and the fresh base it writes.
pub(crate) struct RescanIndex {
    base: Option<BaseReader>,
    /// Entries with a time at or after this are racily clean.
    cutoff: (i64, u32),
    dirty: Dirty,
    fresh: Option<BaseWriter>,
}

/// What the index says about one source directory.
pub(crate) struct DirView {
    rel: Vec<u8>,
    block: Option<Block>,
    /// The directory or one above it is named by a delta as a subtree.
    under_dirty: bool,
    /// Names the block and the deltas hold: each needs the vault unless the source has it
    /// and it is trusted.
    others: BTreeSet<OsString>,
}

impl DirView {
    fn path_of(&self, name: &OsStr) -> Vec<u8> {
        let mut p = self.rel.clone();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name.as_bytes());
        p
    }
}

/// The digest of what decides which entries a version holds and how they compare: a base
/// recorded under other settings is not used.
pub(crate) fn settings_digest(parts: &[&dyn std::fmt::Debug]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(format!("{p:?}\n").as_bytes());
    }
    *h.finalize().as_bytes()
}

fn as_pair(t: SystemTime) -> (i64, u32) {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(_) => (0, 0),
    }
}

fn from_pair((s, n): (i64, u32)) -> SystemTime {
    let secs = Duration::from_secs(u64::try_from(s).unwrap_or(0));
    SystemTime::UNIX_EPOCH + secs + Duration::from_nanos(u64::from(n))
}

impl RescanIndex {
    /// Nothing trusted, nothing written (the diff of a directory inside a build).
    pub fn none() -> RescanIndex {
        RescanIndex {
            base: None,
            cutoff: (0, 0),
            dirty: Dirty::default(),
            fresh: None,
        }
    }

    /// The index of job folder `job` for a rescan against version `current`, trusted only
    /// as the module doc says; `granularity` is the vault's mtime step (a wider window).
    pub fn load(job: &Path, current: &str, settings: [u8; 32], granularity: Duration) -> Self {
        let mut ix = RescanIndex::none();
        let dir = job.join(source_index::DIR);
        let Some(base) = BaseReader::open(&dir.join(source_index::BASE)) else {
            return ix;
        };
        if base.header().settings != settings {
            return ix;
        }
        let Some(deltas) = chain(&dir, &base.header().version, current) else {
            return ix;
        };
        for d in deltas {
            ix.dirty.add(d);
        }
        if ix.dirty.subtrees.contains(&Vec::new()) {
            return ix;
        }
        let window = WINDOW.max(granularity);
        let recorded = from_pair(base.header().recorded_at);
        ix.cutoff = as_pair(
            recorded
                .checked_sub(window)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        ix.base = Some(base);
        ix
    }

    /// Starts the fresh base of version `current`, recorded from `started` (a time before
    /// the rescan's first `lstat`). A failure warns: the rescan goes on without it.
    pub fn begin_fresh(
        &mut self,
        job: &Path,
        current: &str,
        settings: [u8; 32],
        started: SystemTime,
    ) {
        let header = Header {
            version: current.to_owned(),
            recorded_at: as_pair(started),
            settings,
            nonce: nonce(current),
        };
        // Built in `.tmp/`; its folder is made only when it is kept (`finish_fresh`), so a
        // rescan that is refused leaves the job folder as it was.
        let made = (|| -> Result<BaseWriter> {
            let dest = job.join(source_index::DIR).join(source_index::BASE);
            let tmp = fsutil::tmp_dir_of(job)?;
            BaseWriter::create(&tmp, &dest, &header, Access::of_folder(job)?)
        })();
        match made {
            Ok(w) => self.fresh = Some(w),
            Err(e) => warn(&e),
        }
    }

    /// What the index says about source directory `rel`; `under_dirty` when a delta named
    /// it, or a directory above it, as a subtree.
    pub fn view(&mut self, rel: &RelPath, under_dirty: bool) -> DirView {
        let key = rel.as_bytes().to_vec();
        let under_dirty = under_dirty || self.dirty.subtrees.contains(&key);
        let block = match (&mut self.base, under_dirty) {
            (Some(base), false) => base.block(&key),
            _ => None,
        };
        let mut others: BTreeSet<OsString> =
            self.dirty.names.get(&key).cloned().unwrap_or_default();
        if let Some(b) = &block {
            others.extend(
                b.entries
                    .iter()
                    .map(|(n, _)| OsStr::from_bytes(n).to_owned()),
            );
        }
        DirView {
            rel: key,
            block,
            under_dirty,
            others,
        }
    }

    /// May child `name` of `view`'s directory, whose `lstat` is `sm`, be taken as equal to
    /// the version's without looking at the vault?
    pub fn trusts(&self, view: &DirView, name: &OsStr, sm: &Metadata) -> bool {
        let Some(recorded) = view.block.as_ref().and_then(|b| b.get(name.as_bytes())) else {
            return false;
        };
        if *recorded != Facts::of(sm) || !recorded.settled_before(self.cutoff) {
            return false;
        }
        let path = view.path_of(name);
        !(self.dirty.subtrees.contains(&path) || self.dirty.entries.contains(&path))
    }

    /// Does the index say child `name` of `view`'s directory (`lstat` `sm`) may have been
    /// rewritten since it was found equal to the version's? So it does when it recorded the
    /// entry (no delta since names it) with another inode or ctime: a rename over it, or a
    /// write whose mtime was put back. (The device is not compared: a filesystem mounted
    /// again may get another number.)
    pub fn saw_rewrite(&self, view: &DirView, name: &OsStr, sm: &Metadata) -> bool {
        let Some(recorded) = view.block.as_ref().and_then(|b| b.get(name.as_bytes())) else {
            return false;
        };
        let now = Facts::of(sm);
        if (recorded.ino, recorded.ctime) == (now.ino, now.ctime) {
            return false;
        }
        let path = view.path_of(name);
        !(self.dirty.subtrees.contains(&path) || self.dirty.entries.contains(&path))
    }

    /// Is child `name` of `view`'s directory in a subtree a delta named?
    pub fn child_under_dirty(&self, view: &DirView, name: &OsStr) -> bool {
        view.under_dirty || self.dirty.subtrees.contains(&view.path_of(name))
    }

    /// Must the vault's directory be listed: the index has no block for it (it knows
    /// nothing of the names the version holds there), or names something `listed` (the
    /// source) lacks?
    pub fn needs_listing<V>(
        &self,
        view: &DirView,
        listed: &std::collections::BTreeMap<OsString, V>,
    ) -> bool {
        view.block.is_none() || view.others.iter().any(|n| !listed.contains_key(n))
    }

    /// Records, in the fresh base, every name the version holds in `rel` (in name order),
    /// with the source's facts for those found equal to the version's.
    pub fn record(&mut self, rel: &RelPath, entries: Vec<(Vec<u8>, Option<Facts>)>) {
        let Some(w) = &mut self.fresh else { return };
        let block = Block {
            dir: rel.as_bytes().to_vec(),
            entries,
        };
        if let Err(e) = w.push(&block) {
            warn(&e);
            if let Some(w) = self.fresh.take() {
                w.abandon();
            }
        }
    }

    /// Puts the fresh base in place of the old base and its deltas (the rescan compared
    /// everything: what they said is in it now). Does nothing when no fresh base is kept.
    pub fn finish_fresh(&mut self, job: &Path) {
        self.base = None;
        let Some(w) = self.fresh.take() else { return };
        if let Err(e) = index_dir(job).and_then(|_| w.finish()) {
            warn(&e);
            return;
        }
        let dir = job.join(source_index::DIR);
        for (name, _) in deltas_in(&dir) {
            let _ = fs::remove_file(dir.join(name));
        }
    }

    /// Drops the fresh base (a dry run, a refused rescan): nothing is written.
    pub fn abandon_fresh(&mut self) {
        if let Some(w) = self.fresh.take() {
            w.abandon();
        }
    }
}

/// Does the filesystem of `source` move an entry's ctime on every change the index relies
/// on it for (data, mode, owner, xattrs and ACLs)? Every Linux filesystem named here does;
/// a FUSE filesystem (sshfs, ntfs-3g, …) or another one we have not checked may not, and
/// there the index is neither used nor written: every rescan compares in full.
pub(crate) fn source_keeps_ctime(source: &Path) -> bool {
    use nix::sys::statfs::{
        BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, FsType, NFS_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC,
        TMPFS_MAGIC, XFS_SUPER_MAGIC,
    };
    const F2FS_SUPER_MAGIC: FsType = FsType(0xf2f5_2010);
    const ZFS_SUPER_MAGIC: FsType = FsType(0x2fc1_2fc1);
    nix::sys::statfs::statfs(source).is_ok_and(|s| {
        [
            EXT4_SUPER_MAGIC,
            XFS_SUPER_MAGIC,
            BTRFS_SUPER_MAGIC,
            TMPFS_MAGIC,
            F2FS_SUPER_MAGIC,
            ZFS_SUPER_MAGIC,
            NFS_SUPER_MAGIC,
            OVERLAYFS_SUPER_MAGIC,
        ]
        .contains(&s.filesystem_type())
    })
}

/// What a build may have changed, for its delta.
#[derive(Debug, Default)]
pub(crate) struct Changed {
    subtrees: BTreeSet<Vec<u8>>,
    entries: BTreeSet<Vec<u8>>,
}

impl Changed {
    /// Every marked path of `marks`: a `Content` or `Delete` mark (a directory perhaps
    /// replaced wholesale) with what is below it, an `Attrib` mark the entry alone. The
    /// root's own attributes are compared at every rescan and never recorded.
    pub fn of_marks(marks: &MarkTree) -> Changed {
        let mut out = Changed::default();
        let mut pending = vec![(RelPath::root(), marks)];
        while let Some((rel, node)) = pending.pop() {
            match node.mark {
                Some(Mark::Attrib) if !rel.is_root() => {
                    out.entries.insert(rel.as_bytes().to_vec());
                }
                Some(Mark::Content) | Some(Mark::Delete) if !rel.is_root() => {
                    out.subtrees.insert(rel.as_bytes().to_vec());
                }
                Some(Mark::Content) | Some(Mark::Delete) => {
                    // The whole source: nothing of the base stands.
                    out.subtrees.insert(Vec::new());
                }
                _ => {}
            }
            pending.extend(node.children.iter().map(|(n, c)| (rel.join(n), c)));
        }
        out
    }

    /// Adds the paths the build reports changed (each the entry alone).
    pub fn add_paths(&mut self, paths: &[RelPath]) {
        for p in paths.iter().filter(|p| !p.is_root()) {
            self.entries.insert(p.as_bytes().to_vec());
        }
    }
}

/// Writes the delta of `version`, built on `parent`, once it is published; merges the
/// deltas since the base into one when there are many. Only when a base exists (without
/// one, the next rescan compares in full anyway). A failure warns.
pub(crate) fn write_delta(job: &Path, parent: &str, version: &str, changed: Changed) {
    let dir = job.join(source_index::DIR);
    let Some(base) = BaseReader::open(&dir.join(source_index::BASE)) else {
        return;
    };
    let mut delta = Delta {
        parent: parent.to_owned(),
        version: version.to_owned(),
        subtrees: changed.subtrees.into_iter().collect(),
        entries: changed.entries.into_iter().collect(),
    };
    let existing = deltas_in(&dir);
    if existing.len() >= MERGE_AFTER {
        let Some(chain) = chain(&dir, &base.header().version, parent) else {
            // The chain broke (a version without its delta): nothing here will be used
            // before the next rescan writes a base; it goes rather than grow.
            drop(base);
            let _ = fs::remove_file(dir.join(source_index::BASE));
            for (name, _) in existing {
                let _ = fs::remove_file(dir.join(name));
            }
            return;
        };
        let mut subtrees: BTreeSet<Vec<u8>> = delta.subtrees.drain(..).collect();
        let mut entries: BTreeSet<Vec<u8>> = delta.entries.drain(..).collect();
        for d in chain {
            subtrees.extend(d.subtrees);
            entries.extend(d.entries);
        }
        if subtrees.len() + entries.len() > MAX_DIRTY {
            return;
        }
        delta.parent = base.header().version.clone();
        delta.subtrees = subtrees.into_iter().collect();
        delta.entries = entries.into_iter().collect();
    }
    let path = dir.join(Delta::file_name(version));
    let written = fsutil::tmp_dir_of(job)
        .and_then(|tmp| fsutil::write_atomic_in(&tmp, &path, &delta.encode()));
    match written {
        Ok(()) if delta.parent != parent => {
            // The union is in place: the deltas it covers go.
            for (name, _) in existing {
                if name != Delta::file_name(version) {
                    let _ = fs::remove_file(dir.join(name));
                }
            }
        }
        Ok(()) => {}
        Err(e) => warn(&e),
    }
}

/// The deltas from the base's version `from` to `to`, in order; `None` when the chain is
/// broken (a version built without its delta, a delta damaged).
fn chain(dir: &Path, from: &str, to: &str) -> Option<Vec<Delta>> {
    let mut by_parent: HashMap<String, Vec<(u64, Delta)>> = HashMap::new();
    let from_n = VersionName::parse(from)?.n;
    for (name, n) in deltas_in(dir) {
        if n <= from_n {
            continue;
        }
        let Some(d) = fs::read(dir.join(&name))
            .ok()
            .and_then(|b| Delta::decode(&b))
        else {
            continue;
        };
        if Delta::file_name(&d.version) != name {
            continue;
        }
        by_parent.entry(d.parent.clone()).or_default().push((n, d));
    }
    let mut out = Vec::new();
    let mut at = from.to_owned();
    while at != to {
        let next = by_parent.get_mut(&at)?;
        next.sort_by_key(|(n, _)| *n);
        let (_, d) = next.pop()?;
        at = d.version.clone();
        out.push(d);
    }
    Some(out)
}

/// The delta files in `dir`, with their version numbers.
fn deltas_in(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = VersionName::parse(Delta::version_of(&name)?)?.n;
            Some((name, n))
        })
        .collect()
}

/// `<job>/source-index/`, created private like the job's other records.
fn index_dir(job: &Path) -> Result<std::path::PathBuf> {
    let dir = job.join(source_index::DIR);
    fsutil::create_metadata_dir(&dir)?;
    Ok(dir)
}

/// A nonce for a new base: unique per write (the time, the process, the version).
fn nonce(version: &str) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(format!("{:?} {} {version}", SystemTime::now(), std::process::id()).as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

fn warn(e: &crate::error::Error) {
    crate::error::warn(&format!("the source index is not kept: {e}"));
}

// The tests take versions with `snapshot::take`: inline, so the layer check (which skips a
// file's `#[cfg(test)] mod tests` tail) sees no cycle.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::snapshot::tests::{Fixture, fixture as job_fixture};
    use crate::engine::snapshot::{Options, Trigger, take};
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// The snapshot tests' job over `src/{a, d/b, d/c}`, its first version taken, and the
    /// clock past the racily clean window of every entry.
    fn fixture() -> Fixture {
        let mut f = job_fixture();
        take(&mut f.ctx, Trigger::Rescan, Options::default()).expect("first");
        // Time that must pass (not an event): the entries' ctimes leave the window.
        let settled = SystemTime::now() + WINDOW + Duration::from_millis(100);
        while SystemTime::now() < settled {
            std::thread::sleep(Duration::from_millis(50));
        }
        f
    }

    impl Fixture {
        fn rescan(&mut self) -> Option<String> {
            let out = take(&mut self.ctx, Trigger::Rescan, Options::default()).expect("rescan");
            out.version.map(|v| v.dir)
        }

        fn events(&mut self, path: &str) -> String {
            let marked = BTreeMap::from([(RelPath::from_internal(Path::new(path)), Mark::Content)]);
            let out =
                take(&mut self.ctx, Trigger::Paths(marked), Options::default()).expect("events");
            out.version.expect("a version").dir
        }

        fn current(&self) -> PathBuf {
            self.ctx
                .dir
                .path
                .join(self.ctx.dir.read_current().expect("current"))
        }

        fn index(&self) -> PathBuf {
            self.ctx.dir.path.join(source_index::DIR)
        }

        /// Makes the vault's copy of `a` differ from the source behind the tools' back (its
        /// mode): only a rescan that looks at the vault notices.
        fn tamper_with_the_vault(&self) {
            let a = fs::canonicalize(self.current().join("a")).expect("holder of a");
            let mode = fs::metadata(&a).expect("stat").permissions().mode() & 0o777;
            let other = if mode == 0o600 { 0o640 } else { 0o600 };
            fs::set_permissions(&a, fs::Permissions::from_mode(other)).expect("chmod");
        }
    }

    #[test]
    fn an_unchanged_rescan_trusts_the_index_and_leaves_the_vault_alone() {
        let mut f = fixture();
        assert_eq!(f.rescan(), None, "nothing changed: the index is written");
        assert!(f.index().join(source_index::BASE).is_file());
        f.tamper_with_the_vault();
        assert_eq!(f.rescan(), None, "the vault is not looked at for `a`");
        // Without the index, the vault is compared again and the difference found.
        fs::remove_dir_all(f.index()).expect("rm index");
        assert!(
            f.rescan().is_some(),
            "a full comparison sees the vault's `a` differ"
        );
    }

    #[test]
    fn a_damaged_or_stale_index_is_ignored() {
        let mut f = fixture();
        f.rescan();
        let base = f.index().join(source_index::BASE);
        let good = fs::read(&base).expect("read");
        f.tamper_with_the_vault();
        // The header damaged: the base is not used, the vault is compared.
        let mut bad = good.clone();
        bad[12] ^= 1;
        fs::write(&base, &bad).expect("write");
        assert!(f.rescan().is_some(), "a damaged base is ignored");
        assert_eq!(f.rescan(), None);
        // Keyed to the version before the current one: not used either.
        let stale = fs::read(&base).expect("read");
        fs::write(f.src.join("new"), b"x").expect("write");
        assert!(f.rescan().is_some());
        fs::write(&base, &stale).expect("put the stale base back");
        for (name, _) in deltas_in(&f.index()) {
            fs::remove_file(f.index().join(name)).expect("rm delta");
        }
        f.tamper_with_the_vault();
        assert!(f.rescan().is_some(), "a base of another version is ignored");
    }

    #[test]
    fn an_event_build_leaves_a_delta_naming_what_it_marked() {
        let mut f = fixture();
        f.rescan();
        fs::write(f.src.join("d/b"), b"TWO").expect("write");
        let v2 = f.events("d/b");
        let delta = fs::read(f.index().join(Delta::file_name(&v2))).expect("delta");
        let delta = Delta::decode(&delta).expect("decodes");
        assert_eq!(delta.subtrees, [b"d/b".to_vec()]);
        assert!(delta.entries.contains(&b"d".to_vec()), "{delta:?}");
        // The chain from the base reaches the current version: the index is still used.
        f.tamper_with_the_vault();
        assert_eq!(f.rescan(), None, "the chain holds");
        // A missing delta breaks the chain: nothing is trusted.
        fs::write(f.src.join("d/c"), b"THREE").expect("write");
        let v3 = f.events("d/c");
        fs::remove_file(f.index().join(Delta::file_name(&v3))).expect("rm");
        let base = BaseReader::open(&f.index().join(source_index::BASE)).expect("base");
        assert!(chain(&f.index(), &base.header().version, &v3).is_none());
        assert!(
            f.rescan().is_some(),
            "the tampered `a` is found: the vault is compared"
        );
    }

    #[test]
    fn many_deltas_are_merged_into_one() {
        let mut f = fixture();
        f.rescan();
        let mut last = String::new();
        for i in 0..(MERGE_AFTER + 2) {
            fs::write(f.src.join("a"), format!("v{i}")).expect("write");
            last = f.events("a");
        }
        assert!(deltas_in(&f.index()).len() <= MERGE_AFTER + 1);
        let base = BaseReader::open(&f.index().join(source_index::BASE)).expect("base");
        let chain = chain(&f.index(), &base.header().version, &last).expect("a chain");
        assert!(chain.len() <= 2, "{}", chain.len());
    }
}
