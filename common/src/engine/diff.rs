//! Comparing the source with a version, read-only: [`Builder::diff_dir`] finds every
//! difference below a directory and marks it (a rescan, or a directory that may have been
//! replaced wholesale); [`Builder::differ`] is the build's use of the one comparator
//! ([`crate::format::entry::compare`]).
//!
//! Invariants: nothing here writes; marks land in a fresh [`MarkTree`] (new names
//! `Content`, vanished names `Delete`, changed entries `Content` or `Attrib`, directories
//! whose own attributes differ `Attrib`), pruned of unmarked leaves. The regular files that
//! leave and join are counted ([`Tally`]) for the deletion guard: a vanished entry counts
//! what the version held of it, a new one what the source has below it, and a directory
//! replaced by a non-directory (or the reverse) both; a path that stays a non-directory
//! (even a file replaced by a link) stays, so `files - deleted + added` is the number of
//! files whose paths remain in the new version. Every source entry whose lstat is read is
//! told to the build's [`LinkGroups`](crate::engine::link_groups::LinkGroups), so a rescan
//! knows every name of every multiply linked file. Iterative: any depth fits the stack;
//! directories are listed in the same depth-first, name order as the build.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::engine::build_state::{BaselineState, Builder, SourceListing};
use crate::engine::copy;
use crate::engine::listing::{self, Detail, Lstat};
use crate::engine::marks::MarkTree;
use crate::engine::rescan_index::RescanIndex;
use crate::error::{IoContext, Result};
use crate::format::checksums;
use crate::format::entry::{Difference, EntryFacts, compare_with, needs_xattrs_with};
use crate::format::events::Mark;
use crate::format::relpath::RelPath;
use crate::format::source_index::Facts;
use crate::format::version::VersionName;
use crate::vault::measure::measure_tree;
use crate::vault::tree::resolve;

/// The regular files a diff found leaving and joining the version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Files of the old version that are gone (or were below a directory now replaced).
    pub deleted: u64,
    /// Files of the source that the old version does not have at their path.
    pub added: u64,
}

impl Tally {
    /// How many files the new version holds, from the old version's `files`.
    pub fn remaining(&self, files: u64) -> u64 {
        files
            .saturating_sub(self.deleted)
            .saturating_add(self.added)
    }
}

/// How coarse a source filesystem's timestamps may be (FAT keeps 2 s; ext4 and XFS a clock
/// tick): the racily clean window, widened to the vault's granularity when that is coarser.
const TIMESTAMP_TICK: std::time::Duration = std::time::Duration::from_secs(2);

/// Git's "racily clean" rule: a file whose mtime is not clearly older (by `window`) than
/// the version that holds its copy may have been rewritten, right after that copy, to the
/// same size and an mtime its copy cannot tell apart; a file last written well before
/// that version is proven unchanged by its stat alone.
fn racily_clean(source: &Metadata, holder: &str, window: std::time::Duration) -> bool {
    let taken = VersionName::parse(holder).and_then(|v| v.taken());
    match (source.modified(), taken) {
        (Ok(mtime), Some(taken)) => mtime + window >= taken,
        _ => true,
    }
}

/// What a source file's bytes are compared with.
enum Reference<'a> {
    /// The BLAKE3 recorded for the vault's copy (checksums on).
    Record(checksums::Record),
    /// No record: the vault's copy itself, at this path.
    Copy(&'a Path),
}

/// Opens `path` for reading without following a link (or blocking on a FIFO).
fn open_nofollow(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
}

/// Does the source file at `path` (lstat `sm`) hold the bytes of `reference`? Opened
/// without following a link; a file that is not the one stat'ed, or that changes while it
/// is read, or that cannot be read, does not; nor does a vault copy that cannot be read.
fn same_content(path: &Path, sm: &Metadata, reference: Reference<'_>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let record = match reference {
        Reference::Record(r) => r,
        Reference::Copy(copy) => {
            let Ok(copy) = open_nofollow(copy) else {
                return false;
            };
            match copy.metadata() {
                Ok(m) if m.is_file() && m.len() == sm.len() => {}
                _ => return false,
            }
            match checksums::hash_file(&copy) {
                Ok(r) => r,
                Err(_) => return false,
            }
        }
    };
    if sm.len() != record.size {
        return false;
    }
    let Ok(file) = open_nofollow(path) else {
        return false;
    };
    let stat = |m: &Metadata| {
        (
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    };
    let Ok(before) = file.metadata() else {
        return false;
    };
    if !before.is_file() || (before.dev(), before.ino()) != (sm.dev(), sm.ino()) {
        return false;
    }
    let hashed = checksums::hash_file(&file);
    let after = file.metadata();
    match (hashed, after) {
        (Ok(h), Ok(after)) => stat(&before) == stat(&after) && h == record,
        _ => false,
    }
}

/// A directory still to compare in [`Builder::diff_dir`].
struct Pending {
    /// The directory, relative to the source.
    at: RelPath,
    /// The same, relative to the marks' root.
    inside: RelPath,
    /// Where the old version physically holds it.
    phys: Phys,
    /// A delta named it or a directory above it as a subtree (the index vouches for
    /// nothing in it).
    under_dirty: bool,
}

/// Where the old version holds a directory.
enum Phys {
    /// In this version (`None`: nowhere).
    At(Option<String>),
    /// Not looked up: its parent was not listed in the vault.
    Unresolved,
}

impl Builder<'_> {
    /// How the source entry (lstat `src_meta` at `src`) differs from the old one (its copy
    /// in the vault at `old`). The xattrs of both are read only when every other fact is
    /// equal ([`needs_xattrs_with`]): a change of xattrs or ACLs alone is an attribute change
    /// (docs/format.md#invariants I5).
    pub fn differ(
        &self,
        src_meta: &Metadata,
        old_meta: &Metadata,
        src: &Path,
        old: &Path,
    ) -> Difference {
        let mut was = EntryFacts::of(old, old_meta);
        let mut now = EntryFacts::of(src, src_meta);
        if needs_xattrs_with(&was, &now, &self.fidelity) {
            was.xattrs = copy::comparable_xattrs(old, self.privileged);
            now.xattrs = copy::comparable_xattrs(src, self.privileged);
        }
        compare_with(&was, &now, &self.fidelity)
    }

    /// A regular file that [`Builder::differ`] found the same as its copy (`om`, at `rel`
    /// in version `holder`): can its stat prove it unchanged? Not when something says it
    /// may have been rewritten to the same size and mtime (`rewritten`: a content event
    /// named it, or the source index recorded it, equal to the version's, with another
    /// inode or ctime: a rename over it, a write with its mtime put back), nor when it is
    /// *racily clean* ([`racily_clean`]: its mtime is within a timestamp tick of the
    /// version that copied it, so a rewrite right after the copy keeps the same stat; with
    /// no record, only when the vault keeps mtimes too coarsely to tell them apart). Such a
    /// file is compared by content: with its recorded BLAKE3 (checksums on), else with the
    /// vault's copy itself. The same bytes keep it one vault link (a file opened for writing and
    /// closed unchanged makes no version), other bytes make it [`Difference::Content`].
    /// Reads the source, and the vault's copy only when there is no record.
    pub fn confirm_unchanged(
        &mut self,
        rel: &RelPath,
        holder: &str,
        sm: &Metadata,
        om: &Metadata,
        rewritten: bool,
    ) -> Result<Difference> {
        use std::os::unix::fs::MetadataExt;
        let exact = (sm.mtime(), sm.mtime_nsec()) == (om.mtime(), om.mtime_nsec());
        let window = TIMESTAMP_TICK.max(std::time::Duration::from_nanos(
            self.fidelity.mtime_granularity_ns,
        ));
        if !rewritten && !racily_clean(sm, holder, window) {
            return Ok(Difference::Same);
        }
        let record = match &mut self.checksums {
            Some(c) => c.lookup(&self.job, holder, rel.as_path())?,
            None => None,
        };
        let copy = self.vault_path(holder, rel);
        let reference = match record {
            Some(r) => Reference::Record(r),
            // Racily clean, no record, nothing said it was written, and the mtime exactly
            // its copy's: the same by its stat, as always.
            None if !rewritten && exact => return Ok(Difference::Same),
            None => Reference::Copy(&copy),
        };
        // Read beneath the source's descriptor, as every source read is: a name the source
        // no longer reaches that way is not proven the same.
        let Ok(src) = self.src(rel) else {
            return Ok(Difference::Content);
        };
        Ok(match same_content(&src, sm, reference) {
            true => Difference::Same,
            false => Difference::Content,
        })
    }

    /// Do the source root's own attributes differ from the old version's root?
    pub fn root_differs(&self, old_dir: &str) -> Result<bool> {
        let shown = self.source.shown();
        let root = self
            .src_dir(&RelPath::root())
            .ctx("cannot read source", shown)?;
        let sm = fs::metadata(&*root).ctx("cannot read source", shown)?;
        let op = self.job.join(old_dir);
        let om = fs::symlink_metadata(&op).ctx("cannot inspect", &op)?;
        Ok(self.differ(&sm, &om, &root, &op) != Difference::Same)
    }

    /// Compares source directory `rel` with the old physical directory `phys`/`rel` and
    /// everything below, marking every difference in `marks` (whose root stands for
    /// `rel`). Returns the regular files that would leave and join the version. With a
    /// source index in use, an entry it vouches for is not looked at in the vault
    /// ([`RescanIndex::trusts`]), and every entry found equal is recorded in its fresh base.
    pub fn diff_dir(
        &mut self,
        rel: &RelPath,
        phys: Option<&str>,
        marks: &mut MarkTree,
        index: &mut RescanIndex,
    ) -> Result<Tally> {
        let mut tally = Tally::default();
        let mut pending = vec![Pending {
            at: rel.clone(),
            inside: RelPath::root(),
            phys: Phys::At(phys.map(str::to_owned)),
            under_dirty: false,
        }];
        let root_phys = phys.map(str::to_owned);
        while let Some(dir) = pending.pop() {
            let subdirs = self.diff_one(dir, root_phys.as_deref(), marks, &mut tally, index)?;
            pending.extend(subdirs.into_iter().rev());
        }
        marks.prune();
        Ok(tally)
    }

    /// Where the old version holds directory `at`: known from its parent's listing, or
    /// found from `root_phys` (the listing was not needed: the index vouched for it).
    fn old_phys(
        &self,
        phys: Phys,
        root_phys: Option<&str>,
        at: &RelPath,
    ) -> Result<Option<String>> {
        match (phys, root_phys) {
            (Phys::At(p), _) => Ok(p),
            (Phys::Unresolved, None) => Ok(None),
            (Phys::Unresolved, Some(root)) => {
                resolve(&self.job, root, at.as_path(), &self.lookalikes)
            }
        }
    }

    /// One directory of [`Builder::diff_dir`]: marks its differing children; returns the
    /// directories present on both sides, to compare next.
    fn diff_one(
        &mut self,
        dir: Pending,
        root_phys: Option<&str>,
        marks: &mut MarkTree,
        tally: &mut Tally,
        index: &mut RescanIndex,
    ) -> Result<Vec<Pending>> {
        let Pending {
            at,
            inside,
            phys,
            under_dirty,
        } = dir;
        // Both sides are listed with their entries' metadata, read relative to the open
        // directory (fstatat on the listing's fd): no path walk per entry.
        let src = match self.list_source(&at, Detail::Stat) {
            SourceListing::Listed(entries) => entries,
            SourceListing::Gone(_) => Default::default(),
            // Not looked at: no mark below, so the build keeps what the old version has.
            SourceListing::Unreadable | SourceListing::LeftOut => return Ok(Vec::new()),
        };
        // The entries the index vouches for; the vault is listed only when some other
        // name needs it.
        let view = index.view(&at, under_dirty);
        let trusted: HashSet<&OsString> = src
            .iter()
            .filter_map(|(name, l)| match l {
                Lstat::Read(sm) if index.trusts(&view, name, sm) => Some(name),
                _ => None,
            })
            .collect();
        let needs_vault = trusted.len() < src.len() || index.needs_listing(&view, &src);
        let old = if needs_vault {
            let phys = self.old_phys(phys, root_phys, &at)?;
            self.list_version(phys.as_deref(), &at, Detail::Stat)?
        } else {
            BTreeMap::new()
        };
        // The directory just listed (held by the source's tree): its entries are reached
        // from it, with no lookup per entry.
        let here = self.src_dir(&at).ok();
        let node = marks.node_mut(&inside);
        let mut subdirs = Vec::new();
        // Every name the version holds here, with the facts of those found the same.
        let mut held: Vec<(Vec<u8>, Option<Facts>)> = Vec::new();
        let names: BTreeSet<&OsString> = src.keys().chain(old.keys()).collect();
        for name in names {
            let child = at.join(name);
            let sub = |holder: Option<&str>| Pending {
                at: child.clone(),
                inside: inside.join(name),
                phys: match holder {
                    Some(h) => Phys::At(Some(h.to_owned())),
                    None => Phys::Unresolved,
                },
                under_dirty: index.child_under_dirty(&view, name),
            };
            let vouched = trusted.contains(name) && (!needs_vault || old.contains_key(name));
            match (src.get(name), old.get(name)) {
                (Some(Lstat::Read(sm)), o) if vouched => {
                    // The index vouches for it: the same as the version's, unread there.
                    self.link_groups.saw(&child, sm);
                    held.push((name.as_bytes().to_vec(), Some(Facts::of(sm))));
                    if sm.is_dir() {
                        subdirs.push(sub(o.map(|o| o.holder.as_str())));
                    }
                }
                (Some(Lstat::Failed(e)), o) => {
                    // There but not inspectable: no mark, so the build keeps what the old
                    // version has (docs/format.md#invariants I5).
                    if o.is_some() {
                        held.push((name.as_bytes().to_vec(), None));
                    }
                    self.skip_uninspectable(&child, e);
                }
                (Some(sm), None) => {
                    node.child_mut(name).mark = Some(Mark::Content);
                    if let Lstat::Read(sm) = sm {
                        tally.added += self.source_files(&child, sm);
                    }
                }
                (None, Some(o)) => {
                    held.push((name.as_bytes().to_vec(), None));
                    node.child_mut(name).mark = Some(Mark::Delete);
                    tally.deleted +=
                        measure_tree(&self.job, &o.holder, child.as_path(), &self.lookalikes)?.0;
                }
                (Some(sm), Some(o)) => {
                    let Lstat::Read(sm) = sm else {
                        held.push((name.as_bytes().to_vec(), None));
                        continue;
                    };
                    self.link_groups.saw(&child, sm);
                    let Some(sp) = here.as_ref().map(|h| h.child(name)) else {
                        held.push((name.as_bytes().to_vec(), None));
                        // Its directory went away (or became a link) since it was listed:
                        // the build looks again.
                        node.child_mut(name).mark = Some(Mark::Content);
                        continue;
                    };
                    let op = self.vault_path(&o.holder, &child);
                    let om = match &o.meta {
                        Some(m) => m.clone(),
                        None => fs::symlink_metadata(&op).ctx("cannot inspect", &op)?,
                    };
                    let mut difference = self.differ(sm, &om, &sp, &op);
                    if difference == Difference::Same && sm.is_file() && om.is_file() {
                        let rewritten = index.saw_rewrite(&view, name, sm);
                        difference =
                            self.confirm_unchanged(&child, &o.holder, sm, &om, rewritten)?;
                    }
                    let vouched = difference == Difference::Same;
                    held.push((name.as_bytes().to_vec(), vouched.then(|| Facts::of(sm))));
                    if sm.is_dir() && om.is_dir() {
                        if difference != Difference::Same {
                            node.child_mut(name).mark = Some(Mark::Attrib);
                        }
                        subdirs.push(sub(Some(&o.holder)));
                    } else if difference != Difference::Same {
                        node.child_mut(name).mark = Some(match difference {
                            Difference::Attributes => Mark::Attrib,
                            _ => Mark::Content,
                        });
                        if sm.is_dir() != om.is_dir() {
                            // A directory replaced by a leaf or the reverse: what was held goes,
                            // what is there comes.
                            tally.deleted += measure_tree(
                                &self.job,
                                &o.holder,
                                child.as_path(),
                                &self.lookalikes,
                            )?
                            .0;
                            tally.added += self.source_files(&child, sm);
                        }
                    }
                }
                (None, None) => {}
            }
        }
        index.record(&at, held);
        Ok(subdirs)
    }

    /// The regular files of the source entry `rel` (lstat `meta`) and below that the new
    /// version would hold: excluded paths left out, and with a baseline only what changed
    /// since it, and nothing below a mountpoint `one_file_system` leaves out. Read-only and
    /// quiet: a directory it cannot list counts nothing here (the build journals it).
    /// Iterative: any depth fits the stack.
    fn source_files(&mut self, rel: &RelPath, meta: &Metadata) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut files = 0u64;
        let mut pending = vec![(rel.clone(), meta.clone())];
        while let Some((at, meta)) = pending.pop() {
            self.link_groups.saw(&at, &meta);
            if meta.is_file() {
                files += u64::from(self.held_as_new(&at));
            } else if meta.is_dir()
                && !(self.one_file_system && meta.dev() != self.src_dev)
                && !self.is_vault_dir(&meta)
            {
                let Ok(entries) = self.src_dir(&at).and_then(|dir| {
                    listing::list_source(dir.listing(), &at, &self.excludes, Detail::Stat)
                }) else {
                    continue;
                };
                for (name, m) in entries {
                    if let Lstat::Read(m) = m {
                        pending.push((at.join(&name), m));
                    }
                }
            }
        }
        files
    }

    /// Would a file new at `rel` be held by the new version (always, without a baseline)?
    fn held_as_new(&self, rel: &RelPath) -> bool {
        self.baseline.is_none() || matches!(self.baseline_state(rel), BaselineState::Changed)
    }
}
