//! The state of one build ([`Builder`]) and the small steps every part of it shares: where
//! an entry is on each side, what the new version's counts become, carrying an old entry
//! forward unchanged (a vault link, or a copy from the vault when too deep to link), and
//! reading the source: only `ENOENT`/`ENOTDIR` mean an entry is gone; any other failure to
//! inspect or list it is journaled `skipped` once ([`Builder::skip`]) and the caller keeps
//! the previous data (docs/format.md#invariants I5); and the checksum records the build
//! collects ([`Builder::record`], written by [`Builder::stage_checksums`]).
//!
//! The steps of a build add their own methods to [`Builder`] in their own modules
//! ([`diff`](crate::engine::diff), [`ingest`](crate::engine::ingest),
//! [`marked_walk`](crate::engine::marked_walk), [`climbed_dirs`](crate::engine::climbed_dirs)),
//! each above this one: nothing here calls them, so the engine's modules depend on each other
//! one way only (docs/design.md#module-map).
//!
//! Invariants: the new version is only ever written below `new_root` (under `.partial/`),
//! every entry reached beneath its descriptor and the source's every entry beneath the
//! source's ([`crate::beneath::Tree`]): a symlink on the way is never followed, whether the
//! build made it or the source's owner swapped one in while the build runs
//! (docs/security.md);
//! every regular file carried forward or dropped moves `delta_files`/`delta_logical` by
//! exactly what `measure_tree` counts for it, so index.tsv agrees with a recount. What the
//! version holds on disk (`held_bytes`) is not counted here but measured once it is durable
//! ([`crate::engine::publish`]).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};

use crate::beneath::{At, Here, Tree};
use crate::engine::build_report::{Outcome, Progress};
use crate::engine::climbing_links::ClimbLinks;
use crate::engine::copy::{self, CopyError};
use crate::engine::link_groups::LinkGroups;
use crate::engine::listing::{self, Detail, Lstat};
use crate::error::{Error, IoContext, Result};
use crate::format::baseline::{self, Baseline};
use crate::format::checksums;
use crate::format::entry::Fidelity;
use crate::format::exclude::Excludes;
use crate::format::journal::Journal;
use crate::format::journal::JournalEvent;
use crate::format::relpath::RelPath;
use crate::fsutil::{self, Staged};
use crate::vault::measure::measure_tree;
use crate::vault::tree::{self, Entry, Lookalikes, MAX_LINK_DEPTH};

/// One build in progress.
pub(crate) struct Builder<'a> {
    /// The job folder.
    pub job: PathBuf,
    /// The source, entered through its descriptor (opened when the build starts).
    pub source: Tree,
    /// The new version's directory under `.partial/` (as messages show it).
    pub new_root: PathBuf,
    /// The new version, entered through its descriptor (opened once it is made).
    pub new: Tree,
    /// The new version's folder name.
    pub new_name: String,
    pub excludes: Excludes,
    pub lookalikes: Lookalikes,
    pub only_sync_attributes: bool,
    pub privileged: bool,
    /// What the vault keeps (its capability record): what copies set and comparisons
    /// trust (docs/filesystems.md).
    pub fidelity: Fidelity,
    /// `one_file_system`: a directory on another filesystem than the source root's is a
    /// mountpoint, and what is mounted there is left out.
    pub one_file_system: bool,
    /// The device (`st_dev`) of the source root.
    pub src_dev: u64,
    /// The (device, inode) of the vault's root and of the job folder: a source directory
    /// that is one of them (a bind mount made after the job started, which the path checks
    /// could not see) is left out, never descended into ([`Builder::is_vault_dir`]).
    pub vault_dirs: Vec<(u64, u64)>,
    /// keep_complete = false: the source as it was when the job started.
    pub baseline: Option<Baseline>,
    /// The multiply linked source files: the old version's record, what this build met and
    /// copied (the first copy of each inode), the new version's record.
    pub link_groups: LinkGroups,
    /// Source entries journaled as skipped so far: a rescan's diff and the build may both
    /// meet one, and it is journaled and counted once.
    pub skipped_paths: HashSet<RelPath>,
    /// The climbing source links of the old and the new version (I8).
    pub climbing: ClimbLinks,
    pub out: Outcome,
    /// Whether [`Outcome::changed_paths`] is kept: a later version's rescan index delta
    /// needs it; a first copy (a million paths) and a received version do not.
    pub keep_changed_paths: bool,
    /// Regular files (and their bytes) the new version holds beyond the old one.
    pub delta_files: i64,
    pub delta_logical: i64,
    pub journal: &'a mut Journal,
    pub progress: &'a dyn Progress,
    /// checksums = true: the new version's records (docs/format.md#checksums).
    pub checksums: Option<checksums::Recorder>,
}

/// A source directory as the build sees it.
pub(crate) enum SourceListing {
    Listed(BTreeMap<OsString, Lstat>),
    /// Left out: another filesystem is mounted there and `one_file_system` leaves it out,
    /// or it is the vault itself ([`Builder::is_vault_dir`]). The directory is kept (its own
    /// attributes), what is in it is not looked at. The build keeps what the old version
    /// had below it (the directory under the mount is hidden, not gone), and a new one is
    /// an empty directory, as `cp -ax` makes it.
    LeftOut,
    /// There but cannot be listed (`EACCES`, `EIO`, …): journaled as skipped.
    Unreadable,
    /// Gone since it was seen (or never a directory): `ENOENT`/`ENOTDIR`.
    Gone(std::io::Error),
}

/// A source entry's `lstat` as the build sees it (docs/format.md#invariants I5).
pub(crate) enum SourceStat {
    /// There: its `lstat`, and the entry itself, reached beneath the source's descriptor.
    Present(Metadata, Box<At>),
    /// `ENOENT`/`ENOTDIR`: deleted.
    Gone,
    /// Any other error: there but cannot be inspected; journaled as skipped.
    Unreadable,
}

/// How an entry absent from the old version relates to the baseline.
pub(crate) enum BaselineState {
    /// Not in the baseline or different: new or changed since the job started.
    Changed,
    /// A file (or link, special) unchanged since the job started: not in versions.
    Unchanged,
    /// A directory that existed when the job started: look inside.
    UnchangedDir,
}

impl Builder<'_> {
    /// Source entry `rel` (not the root), reached beneath the source's descriptor; an error
    /// that [`copy::is_gone`] accepts when a directory on the way is gone or is a symlink
    /// now.
    pub fn src(&self, rel: &RelPath) -> std::io::Result<At> {
        self.source.at(rel.as_path())
    }

    /// The source directory `rel` itself (the root too), reached beneath the source's
    /// descriptor: for listing it and reading its own attributes.
    pub fn src_dir(&self, rel: &RelPath) -> std::io::Result<Here> {
        self.source.dir(rel.as_path())
    }

    /// `rel` in the source, as messages show it.
    pub fn src_shown(&self, rel: &RelPath) -> PathBuf {
        rel.under(self.source.shown())
    }

    /// `rel` physically in version `phys`.
    pub fn vault_path(&self, phys: &str, rel: &RelPath) -> PathBuf {
        rel.under(&self.job.join(phys))
    }

    /// `rel` in the new version, as messages show it.
    pub fn new_path(&self, rel: &RelPath) -> PathBuf {
        rel.under(&self.new_root)
    }

    /// Entry `rel` of the new version (not its root), reached beneath its descriptor: where
    /// the build writes it.
    pub fn new_at(&self, rel: &RelPath) -> Result<At> {
        self.new
            .at(rel.as_path())
            .ctx("cannot write to", &self.new_path(rel))
    }

    /// The directory `rel` of the new version itself (its root too).
    pub fn new_dir(&self, rel: &RelPath) -> Result<Here> {
        self.new
            .dir(rel.as_path())
            .ctx("cannot write to", &self.new_path(rel))
    }

    /// Lists the source directory `rel`; an unreadable one is journaled as skipped, a
    /// mountpoint left out ([`Builder::is_left_out`]) or the vault itself
    /// ([`Builder::is_vault_dir`]) is not listed.
    pub fn list_source(&mut self, rel: &RelPath, detail: Detail) -> SourceListing {
        match self.try_list_source(rel, detail) {
            Ok(listing) => listing,
            Err(e) => {
                self.skip_unlistable(rel, &e);
                SourceListing::Unreadable
            }
        }
    }

    /// [`Builder::list_source`] that journals nothing but the vault met ([`Builder::skip`],
    /// once): a directory there but unreadable is the error, for the caller to journal
    /// ([`Builder::skip_unlistable`]) when its turn comes.
    pub fn try_list_source(
        &mut self,
        rel: &RelPath,
        detail: Detail,
    ) -> std::io::Result<SourceListing> {
        let dir = self.src_dir(rel);
        self.try_list_source_in(rel, dir, detail)
    }

    /// [`Builder::try_list_source`] of the source directory `rel` opened already (`dir`).
    pub fn try_list_source_in(
        &mut self,
        rel: &RelPath,
        dir: std::io::Result<Here>,
        detail: Detail,
    ) -> std::io::Result<SourceListing> {
        let listed = dir.and_then(|dir| {
            if !rel.is_root() && (self.one_file_system || !self.vault_dirs.is_empty()) {
                let (dev, ino) = dir.identity()?;
                if self.vault_dirs.contains(&(dev, ino)) {
                    self.skip(
                        rel,
                        "the vault itself is here (a bind mount or a link made after the job started): left out, never backed up",
                    );
                    return Ok(None);
                }
                if self.is_left_out(rel, dev) {
                    return Ok(None);
                }
            }
            listing::list_source(dir.listing(), rel, &self.excludes, detail).map(Some)
        });
        match listed {
            Ok(None) => Ok(SourceListing::LeftOut),
            Ok(Some(entries)) => Ok(SourceListing::Listed(entries)),
            Err(e) if copy::is_gone(&e) => Ok(SourceListing::Gone(e)),
            Err(e) => Err(e),
        }
    }

    /// Journals source directory `rel`, whose listing failed with `e`, as skipped.
    pub fn skip_unlistable(&mut self, rel: &RelPath, e: &std::io::Error) {
        self.skip(rel, &format!("cannot list directory: {e}"));
    }

    /// Is the source directory `rel` (on device `dev`) a mountpoint `one_file_system` leaves
    /// out: on another device than the source root? Each one is noted once in the outcome
    /// ([`Outcome::mounts_left_out`]).
    pub fn is_left_out(&mut self, rel: &RelPath, dev: u64) -> bool {
        if !self.one_file_system || dev == self.src_dev {
            return false;
        }
        if !self.out.mounts_left_out.contains(rel) {
            self.out.mounts_left_out.push(rel.clone());
        }
        true
    }

    /// Is the source directory whose `lstat` is `meta` the vault's root or the job folder
    /// (same device and inode)? For the walks that only count or look ([`Builder::vault_dirs`]).
    pub fn is_vault_dir(&self, meta: &Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        meta.is_dir() && self.vault_dirs.contains(&(meta.dev(), meta.ino()))
    }

    /// The `lstat` of source entry `rel`; one that fails for a reason other than the entry
    /// being gone is journaled as skipped.
    pub fn stat_source(&mut self, rel: &RelPath) -> SourceStat {
        match self.try_stat_source(rel) {
            Ok(stat) => stat,
            Err(e) => {
                self.skip_uninspectable(rel, &e);
                SourceStat::Unreadable
            }
        }
    }

    /// [`Builder::stat_source`] that journals nothing: an entry there but uninspectable is
    /// the error, for the caller to journal ([`Builder::skip_uninspectable`]) when its turn
    /// comes. Never [`SourceStat::Unreadable`].
    pub fn try_stat_source(&self, rel: &RelPath) -> std::io::Result<SourceStat> {
        match self.src(rel) {
            Ok(at) => stat_at(at),
            Err(e) if copy::is_gone(&e) => Ok(SourceStat::Gone),
            Err(e) => Err(e),
        }
    }

    /// Journals source entry `rel`, whose `lstat` failed with `e`, as skipped.
    pub fn skip_uninspectable(&mut self, rel: &RelPath, e: &std::io::Error) {
        self.skip(rel, &format!("cannot inspect: {e}"));
    }

    /// Journals source entry `rel` as skipped (`why`) and counts it, once per build.
    pub fn skip(&mut self, rel: &RelPath, why: &str) {
        if self.skipped_paths.insert(rel.clone()) {
            self.journal
                .note(JournalEvent::Skipped, rel.as_bytes(), why);
            self.out.skipped += 1;
        }
    }

    /// Lists the directory `rel` physically in version `phys` (nothing when `None`).
    pub fn list_version(
        &self,
        phys: Option<&str>,
        rel: &RelPath,
        detail: Detail,
    ) -> Result<BTreeMap<OsString, listing::VersionEntry>> {
        match phys {
            Some(phys) => listing::list_version(&self.job, phys, rel, &self.lookalikes, detail),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Lists the directory `rel` physically in version `phys` (nothing when `None`), its
    /// entries not classified until the build needs to know ([`Builder::keep_listed`],
    /// [`Builder::classify`]).
    pub fn list_version_unread(
        &self,
        phys: Option<&str>,
        rel: &RelPath,
    ) -> Result<BTreeMap<OsString, listing::Listed>> {
        match phys {
            Some(phys) => listing::list_version_unread(&self.job, phys, rel),
            None => Ok(BTreeMap::new()),
        }
    }

    /// What the listed old entry at `rel` is (a `readlink` when it is a symlink).
    pub fn classify(&self, rel: &RelPath, old: listing::Listed) -> Result<listing::VersionEntry> {
        old.classify(rel, &self.lookalikes)
    }

    pub fn baseline_state(&self, rel: &RelPath) -> BaselineState {
        let Some(record) = self.baseline.as_ref().and_then(|b| b.get(rel.as_path())) else {
            return BaselineState::Changed;
        };
        let Ok(abs) = self.src(rel) else {
            return BaselineState::Changed;
        };
        let Ok(meta) = fs::symlink_metadata(&*abs) else {
            return BaselineState::Changed;
        };
        let privileged = self.privileged;
        let xattrs_of = |p: &Path| copy::comparable_xattrs(p, privileged);
        if !baseline::unchanged(record, &abs, &meta, privileged, &xattrs_of) {
            BaselineState::Changed
        } else if meta.is_dir() {
            BaselineState::UnchangedDir
        } else {
            BaselineState::Unchanged
        }
    }

    /// Sets the attributes of the real directory `rel` of the new version, its children
    /// done, and records it as changed.
    pub fn finish_real_dir(&mut self, rel: &RelPath, sm: &Metadata) -> Result<()> {
        let na = self.new_at(rel)?;
        let src = self.src(rel);
        self.finish_real_dir_in(rel, sm, src, &na)
    }

    /// [`Builder::finish_real_dir`] of the directory reached already: `src` in the source,
    /// `na` in the new version (its entry, or its own descriptor).
    pub fn finish_real_dir_in(
        &mut self,
        rel: &RelPath,
        sm: &Metadata,
        src: std::io::Result<impl AsRef<Path>>,
        na: &Path,
    ) -> Result<()> {
        let np = self.new_path(rel);
        if self.out.changed_paths.last() != Some(rel) {
            self.note_changed(rel);
        }
        src.and_then(|src| copy::finish_dir(src.as_ref(), na, sm, self.fidelity))
            .ctx("cannot set attributes of", &np)?;
        self.out.changed += 1;
        Ok(())
    }

    /// Makes `rel` in the new version stand for the old entry `old` unchanged. A vault link
    /// is kept by a hard link of the old one where that can be made: the text is the same
    /// (same path, same holder), and one inode serves every version that keeps it (no inode
    /// or block per version, and a retirement that repoints them makes one new inode).
    pub fn keep_old(&mut self, rel: &RelPath, old: &listing::VersionEntry) -> Result<()> {
        let holder = old.holder.as_str();
        let np = self.new_path(rel);
        let na = self.new_at(rel)?;
        let op = self.vault_path(holder, rel);
        let is_source_link = matches!(old.entry, Entry::Real(ft) if ft.is_symlink());
        if is_source_link {
            // Source links are recreated, never vault-linked (so that a relative target is
            // read from the version it belongs to).
            copy::copy_symlink(&op, &na, self.fidelity).map_err(|e| copy_err(e, &np))?;
            return self.note_lookalike(rel, &na);
        }
        if tree::depth(rel.as_path()) > MAX_LINK_DEPTH {
            // Too deep to link without risking ELOOP: materialise from the vault.
            return self.materialise(rel, holder);
        }
        if let (Entry::VaultLink { .. }, Some(link)) = (&old.entry, &old.link)
            && !crate::fault::hard_links_refused()
        {
            // Its text is `link_text(rel, holder)` exactly (that is how it was classified).
            // Any failure (EMLINK, no hard links here) leaves nothing: make a link instead.
            if na.hard_link_from(link.as_path()).is_ok() {
                return Ok(());
            }
        }
        let text = tree::link_text(rel.as_path(), holder);
        na.symlink(&text).ctx("cannot create vault link", &np)
    }

    /// [`Builder::keep_old`] for an old entry listed but not classified. A symlink gets a
    /// second name as it is, without being read: a vault link's text and a source link's
    /// alike mean in the new version what they meant in the old, since the entry keeps its
    /// path (and so its depth); what needs its kind goes through [`Builder::keep_old`]: a
    /// registered lookalike (the new version registers it too), a link deeper than
    /// [`MAX_LINK_DEPTH`], a filesystem that refuses the hard link (`EMLINK`, none at all),
    /// a vault whose links' attributes are not their own (sshfs: the server's `link()` may
    /// follow a symlink, and a source link's text is the source owner's), and every entry
    /// that is not a symlink.
    pub fn keep_listed(&mut self, rel: &RelPath, old: listing::Listed) -> Result<()> {
        if old.ft.is_symlink()
            && self.fidelity.link_attributes
            && tree::depth(rel.as_path()) <= MAX_LINK_DEPTH
            && !self.lookalikes.contains(&old.phys, rel.as_path())
            && !crate::fault::hard_links_refused()
            && self.new_at(rel)?.hard_link_from(&old.path).is_ok()
        {
            return Ok(());
        }
        let old = old.classify(rel, &self.lookalikes)?;
        self.keep_old(rel, &old)
    }

    /// Copies `rel` from the vault (version `holder`, through vault links) into the new
    /// version as real entries. Iterative: any depth fits the stack.
    fn materialise(&mut self, rel: &RelPath, holder: &str) -> Result<()> {
        struct Open {
            rel: RelPath,
            op: PathBuf,
            om: Metadata,
            children: std::collections::btree_map::IntoIter<OsString, listing::VersionEntry>,
        }
        let mut open: Vec<Open> = Vec::new();
        let mut next = Some((rel.clone(), holder.to_owned()));
        loop {
            if let Some((rel, holder)) = next.take() {
                let op = self.vault_path(&holder, &rel);
                let om = fs::symlink_metadata(&op).ctx("cannot inspect", &op)?;
                if om.is_dir() {
                    let np = self.new_path(&rel);
                    let na = self.new_at(&rel)?;
                    copy::make_dir(&na).ctx("cannot create directory", &np)?;
                    let children = self
                        .list_version(Some(&holder), &rel, Detail::Names)?
                        .into_iter();
                    open.push(Open {
                        rel,
                        op,
                        om,
                        children,
                    });
                } else {
                    self.materialise_leaf(&rel, &op, &om)?;
                }
            }
            let Some(dir) = open.last_mut() else {
                return Ok(());
            };
            match dir.children.next() {
                Some((name, child)) => {
                    let child_rel = dir.rel.join(&name);
                    if matches!(child.entry, Entry::Real(ft) if ft.is_symlink()) {
                        let from = self.vault_path(&child.holder, &child_rel);
                        let np = self.new_path(&dir.rel);
                        let link = self.new_at(&child_rel)?;
                        copy::copy_symlink(&from, &link, self.fidelity)
                            .map_err(|e| copy_err(e, &np))?;
                        // A source link now held by the new version: registered under its
                        // name (I4, I8), as a copied one is.
                        self.note_lookalike(&child_rel, &link)?;
                    } else {
                        next = Some((child_rel, child.holder));
                    }
                }
                None => {
                    let Some(done) = open.pop() else {
                        return Ok(());
                    };
                    let np = self.new_path(&done.rel);
                    let na = self.new_at(&done.rel)?;
                    copy::finish_dir(&done.op, &na, &done.om, self.fidelity)
                        .ctx("cannot set attributes of", &np)?;
                }
            }
        }
    }

    fn materialise_leaf(&mut self, rel: &RelPath, op: &Path, om: &Metadata) -> Result<()> {
        let np = self.new_path(rel);
        let na = self.new_at(rel)?;
        let copied = if om.is_file() {
            copy::copy_file_hashed(op, &na, self.checksums.is_some(), self.fidelity)
                .map(|c| self.record(rel, c.record))
        } else if om.file_type().is_symlink() {
            copy::copy_symlink(op, &na, self.fidelity)
        } else {
            copy::copy_special(op, &na, om, self.fidelity)
        };
        copied.map_err(|e| copy_err(e, &np))?;
        if om.file_type().is_symlink() {
            self.note_lookalike(rel, &na)?;
        }
        Ok(())
    }

    /// Records the source link just made at `rel` (`np`): in the lookalike registry when its
    /// text looks like a vault link (I4), as a climbing link when it leaves a directory (I8).
    pub fn note_lookalike(&mut self, rel: &RelPath, np: &Path) -> Result<()> {
        let text = fs::read_link(np).ctx("cannot read link", &self.new_path(rel))?;
        self.climbing.note(rel, &text);
        if tree::parse_link_text(rel.as_path(), &text).is_some() {
            let name = self.new_name.clone();
            self.lookalikes.insert(&name, rel.as_path());
        }
        Ok(())
    }

    /// The old entry at `rel` is not carried forward: subtract what it counted.
    pub fn forget_old(&mut self, rel: &RelPath, holder: &str) -> Result<()> {
        let (files, bytes) = measure_tree(&self.job, holder, rel.as_path(), &self.lookalikes)?;
        self.climbing.forget(rel);
        self.link_groups.forget(rel);
        self.delta_files -= files as i64;
        self.delta_logical -= bytes as i64;
        Ok(())
    }

    /// Undoes [`Builder::forget_old`]: the old entry is carried forward after all.
    pub fn unforget_old(&mut self, rel: &RelPath, holder: &str) -> Result<()> {
        let (files, bytes) = measure_tree(&self.job, holder, rel.as_path(), &self.lookalikes)?;
        self.climbing.unforget(rel);
        self.link_groups.unforget(rel);
        self.delta_files += files as i64;
        self.delta_logical += bytes as i64;
        Ok(())
    }

    /// Notes `rel` in [`Outcome::changed_paths`] (when kept: [`Builder::keep_changed_paths`]).
    pub fn note_changed(&mut self, rel: &RelPath) {
        if self.keep_changed_paths {
            self.out.changed_paths.push(rel.clone());
        }
    }

    /// Records `record` as the new version's record of `rel` (checksums on and known).
    pub fn record(&mut self, rel: &RelPath, record: Option<checksums::Record>) {
        if let (Some(c), Some(r)) = (&mut self.checksums, record) {
            c.records.insert(rel.as_path(), r);
        }
    }

    /// Stages the new version's checksums file (version `n` of the job folder `job`) in
    /// `staged`, to be made durable and put in place with the version's other records.
    /// When checksums are off, removes instead (durably) any file a lost build of the same
    /// number left: nothing may check this version against another's records.
    pub fn stage_checksums(&mut self, staged: &mut Staged, job: &Path, n: u64) -> Result<()> {
        match &mut self.checksums {
            Some(c) => checksums::stage_table(staged, job, n, &mut c.records),
            None => checksums::remove_stale(job, n),
        }
    }

    /// Removes a directory of the new version that turned out not to be needed.
    pub fn drop_new(&mut self, rel: &RelPath) -> Result<()> {
        if let Some(c) = &mut self.checksums {
            c.forget_under(rel.as_path());
        }
        self.remove_new(rel)
    }

    /// Removes entry `rel` of the new version (a tree, or nothing when missing), and
    /// forgets its descriptor if held.
    pub fn remove_new(&mut self, rel: &RelPath) -> Result<()> {
        let na = self.new_at(rel)?;
        fsutil::remove_tree_as(&na, &self.new_path(rel))?;
        self.new.forget(rel.as_path());
        Ok(())
    }
}

/// The `lstat` of the source entry `at` as [`Builder::try_stat_source`] classifies it.
pub(crate) fn stat_at(at: At) -> std::io::Result<SourceStat> {
    match fs::symlink_metadata(&*at) {
        Ok(m) => Ok(SourceStat::Present(m, Box::new(at))),
        Err(e) if copy::is_gone(&e) => Ok(SourceStat::Gone),
        Err(e) => Err(e),
    }
}

/// A copy error as the library's error, naming the destination.
pub(crate) fn copy_err(e: CopyError, path: &Path) -> Error {
    match e {
        CopyError::Io(source) => Error::Io {
            what: "cannot copy to",
            path: path.to_path_buf(),
            source,
        },
        CopyError::Socket => Error::Invalid(format!("{} is a socket", crate::error::show(path))),
        CopyError::Vanished => Error::Invalid(format!("{} vanished", crate::error::show(path))),
        CopyError::TypeChanged => Error::Invalid(format!(
            "{} changed type while copied",
            crate::error::show(path)
        )),
    }
}
