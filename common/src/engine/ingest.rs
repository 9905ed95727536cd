//! Bringing source entries into the new version: [`Builder::copy_new`] (an entry of any
//! type, a directory with everything below it), [`Builder::copy_attr_only`] (the vault's
//! data with the source's new attributes) and [`Builder::fill_first`] (the first version).
//!
//! Invariants: an entry that cannot be copied (vanished, unreadable, a socket) leaves
//! nothing behind in the new version; only one that is gone (`ENOENT`/`ENOTDIR`,
//! [`Copied::Gone`]) is a deletion, any other is journaled as skipped ([`Copied::Skipped`]:
//! the caller keeps the previous data, docs/format.md#invariants I5); only a full disk
//! aborts the build. Hard links between copied source
//! files stay hard links: a second name of a source inode the build copied (or copied with
//! its new attributes only) is a hard link of the first copy, and each copy is told to the
//! build's [`LinkGroups`](crate::engine::link_groups::LinkGroups). Every entry copied is reported to the build's
//! [`Progress`](crate::engine::build_report::Progress). With checksums on, every regular file the
//! new version holds gets a record (docs/format.md#checksums): a copy's is computed while
//! copying, a hard link's is its first path's, an attribute-only copy's is the record of the
//! data it reuses (computed from the new copy only when the old version has none). The
//! first version's copy runs the walk and the file copies in parallel
//! ([`first_copy`](crate::engine::first_copy)) unless `REVERB_COPY_WORKERS=0`.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::beneath::At;
use crate::engine::build_state::{Builder, SourceListing, SourceStat, copy_err};
use crate::engine::copy::{self, CopyError};
use crate::engine::copy_pool;
use crate::engine::listing::{self, Detail, Lstat};
use crate::error::{IoContext, Result};
use crate::format::baseline::Baseline;
use crate::format::checksums;
use crate::format::journal::JournalEvent;
use crate::format::relpath::RelPath;

/// A source directory being copied: its children still to copy.
struct OpenDir {
    rel: RelPath,
    meta: Metadata,
    children: std::collections::btree_map::IntoKeys<OsString, Lstat>,
}

/// What became of an entry [`Builder::copy_new`] was asked to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
    /// Copied into the new version.
    Done,
    /// Gone from the source (`ENOENT`/`ENOTDIR`): a deletion.
    Gone,
    /// There but not copyable (unreadable, a socket): journaled as skipped.
    Skipped,
}

/// What copying one entry started.
enum Started {
    /// Done, with what became of it.
    Leaf(Copied),
    /// A directory, created; its children come next.
    Dir(Box<OpenDir>),
}

impl Builder<'_> {
    /// Copies `rel` (any type, a directory recursively) from the source into the new
    /// version. Iterative: any depth fits the stack.
    pub fn copy_new(&mut self, rel: &RelPath) -> Result<Copied> {
        let first = match self.start_copy(rel)? {
            Started::Leaf(copied) => return Ok(copied),
            Started::Dir(dir) => dir,
        };
        let mut open = vec![first];
        while let Some(dir) = open.last_mut() {
            if let Some(name) = dir.children.next() {
                let child = dir.rel.join(&name);
                if let Started::Dir(sub) = self.start_copy(&child)? {
                    open.push(sub);
                }
            } else if let Some(done) = open.pop() {
                self.finish_real_dir(&done.rel, &done.meta)?;
            }
        }
        Ok(Copied::Done)
    }

    /// Copies a non-directory, or creates a directory and lists what goes in it.
    fn start_copy(&mut self, rel: &RelPath) -> Result<Started> {
        let (sm, sp) = match self.stat_source(rel) {
            SourceStat::Present(sm, sp) => (sm, sp),
            SourceStat::Gone => return Ok(Started::Leaf(Copied::Gone)),
            SourceStat::Unreadable => return Ok(Started::Leaf(Copied::Skipped)),
        };
        if !sm.is_dir() {
            return self.copy_leaf(rel, &sp, &sm).map(Started::Leaf);
        }
        let np = self.new_path(rel);
        let na = self.new_at(rel)?;
        copy::make_dir(&na).ctx("cannot create directory", &np)?;
        let children = match self.list_source(rel, Detail::Names) {
            SourceListing::Listed(children) => children,
            // A mountpoint left out: an empty directory with its attributes, as `cp -ax`.
            SourceListing::LeftOut => Default::default(),
            SourceListing::Gone(_) => {
                self.remove_new(rel)?;
                return Ok(Started::Leaf(Copied::Gone));
            }
            SourceListing::Unreadable => {
                self.remove_new(rel)?;
                return Ok(Started::Leaf(Copied::Skipped));
            }
        };
        Ok(Started::Dir(Box::new(OpenDir {
            rel: rel.clone(),
            meta: sm,
            children: children.into_keys(),
        })))
    }

    /// Copies one non-directory entry `sp` whose lstat is `sm`.
    pub(crate) fn copy_leaf(&mut self, rel: &RelPath, sp: &At, sm: &Metadata) -> Result<Copied> {
        let (np, na) = (self.new_path(rel), self.new_at(rel)?);
        let ft = sm.file_type();
        if let Some(first) = self.link_groups.first_copy(sm).cloned() {
            // Another name of this inode is in the new version already: one more name of it.
            let len = self.link_to_copy(rel, &first, sm)?;
            self.delta_files += 1;
            self.delta_logical += len as i64;
            return Ok(Copied::Done);
        }
        // A file copied is the inode `sm` describes, or (replaced since) not the first copy
        // of it that later names link to.
        let mut same_inode = true;
        let mut file_len = None;
        let copied = if ft.is_file() {
            copy::copy_source_file(sp, &na, self.checksums.is_some(), sm, self.fidelity).map(|c| {
                same_inode = c.source == (sm.dev(), sm.ino());
                file_len = Some(c.len);
                self.note_file_copy(rel, c)
            })
        } else if ft.is_symlink() {
            copy::copy_symlink(sp, &na, self.fidelity)
        } else {
            copy::copy_special(sp, &na, sm, self.fidelity)
        };
        match copied {
            Ok(()) => {}
            Err(CopyError::Vanished) => {
                let _ = fs::remove_file(&*na);
                return Ok(Copied::Gone);
            }
            Err(e) if e.is_enospc() => return Err(copy_err(e, &np)),
            Err(e) => {
                let _ = fs::remove_file(&*na);
                let why = match &e {
                    CopyError::Socket => "is a socket".to_owned(),
                    other => other.to_string(),
                };
                self.skip(rel, &why);
                return Ok(Copied::Skipped);
            }
        }
        self.count_copied(rel, sm, &na, same_inode, file_len)?;
        Ok(Copied::Done)
    }

    /// Makes `rel` (source lstat `sm`) in the new version a hard link of the build's copy at
    /// `first`, a name of the same source inode, with that copy's checksum record; returns
    /// the copy's size (the caller counts it).
    fn link_to_copy(&mut self, rel: &RelPath, first: &RelPath, sm: &Metadata) -> Result<u64> {
        let np = self.new_path(rel);
        let (na, fa) = (self.new_at(rel)?, self.new_at(first)?);
        fs::hard_link(&*fa, &*na).ctx("cannot create hard link", &np)?;
        let record = self
            .checksums
            .as_mut()
            .and_then(|c| c.records.get(first.as_path()));
        self.record(rel, record);
        self.link_groups.copied(rel, sm, true);
        self.out.changed += 1;
        let len = fs::symlink_metadata(&*na).ctx("cannot inspect", &np)?.len();
        Ok(len)
    }

    /// Journals a file that kept changing while copied, counts a reflink.
    pub(crate) fn note_file_copy(&mut self, rel: &RelPath, c: copy::FileCopy) {
        self.record(rel, c.record);
        if c.unstable {
            self.journal.note(
                JournalEvent::ChangedDuringCopy,
                rel.as_bytes(),
                &format!("taken as is after {} retries", copy::RETRIES),
            );
            self.out.unstable += 1;
        }
        if c.data == copy::DataPath::Reflink {
            self.out.reflinked += 1;
        }
    }

    /// Counts a copied entry (source lstat `sm`, now at `na`; a file's copy `file_len`
    /// long, else inspected) and reports it; a file is the first copy of its inode only
    /// when `same_inode` (the one `sm` describes).
    fn count_copied(
        &mut self,
        rel: &RelPath,
        sm: &Metadata,
        na: &At,
        same_inode: bool,
        file_len: Option<u64>,
    ) -> Result<()> {
        if sm.file_type().is_symlink() {
            self.note_lookalike(rel, na)?;
        }
        let len = match file_len {
            Some(len) => len,
            None => {
                let np = self.new_path(rel);
                fs::symlink_metadata(&**na)
                    .ctx("cannot inspect", &np)?
                    .len()
            }
        };
        self.count_entry(rel, sm, len, same_inode);
        Ok(())
    }

    /// [`Builder::count_copied`] once the copy's length `len` is known.
    pub(crate) fn count_entry(&mut self, rel: &RelPath, sm: &Metadata, len: u64, same_inode: bool) {
        if sm.is_file() {
            self.delta_files += 1;
            self.delta_logical += len as i64;
            self.link_groups.copied(rel, sm, same_inode);
        }
        self.out.changed += 1;
        self.note_changed(rel);
        self.progress.copied(len);
        crate::fault::step();
    }

    /// A file whose data is unchanged but attributes are new: the vault's data (at
    /// `vault_file`) with the source's attributes.
    pub fn copy_attr_only(
        &mut self,
        rel: &RelPath,
        vault_file: &Path,
        holder: &str,
        sm: &Metadata,
    ) -> Result<()> {
        let np = self.new_path(rel);
        let na = self.new_at(rel)?;
        if let Some(first) = self.link_groups.first_copy(sm).cloned() {
            // Another name of this inode is in the new version already: one more name of it
            // (the old data it replaces was counted with the old version).
            let old = fs::symlink_metadata(vault_file).ctx("cannot inspect", vault_file)?;
            let len = self.link_to_copy(rel, &first, sm)?;
            self.delta_logical += len as i64 - old.len() as i64;
            self.note_changed(rel);
            return Ok(());
        }
        let input = fs::File::open(vault_file).ctx("cannot open", vault_file)?;
        let output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&*na)
            .ctx("cannot create", &np)?;
        let path = copy::copy_data(&input, &output, sm.len()).ctx("cannot copy", &np)?;
        drop(output);
        self.record_reused(rel, holder)?;
        self.src(rel)
            .and_then(|src| copy::copy_xattrs(&src, &na))
            .ctx("cannot copy xattrs to", &np)?;
        copy::apply_path_meta(&na, sm, self.fidelity).ctx("cannot set attributes of", &np)?;
        if path == copy::DataPath::Reflink {
            self.out.reflinked += 1;
        }
        self.link_groups.copied(rel, sm, true);
        self.out.changed += 1;
        self.note_changed(rel);
        Ok(())
    }

    /// The record of an attribute-only copy of `rel`: the one of the data it reuses (in
    /// `holder`'s checksums file), else computed from the new copy.
    fn record_reused(&mut self, rel: &RelPath, holder: &str) -> Result<()> {
        let np = self.new_path(rel);
        let na = self.new_at(rel)?;
        let Some(c) = &mut self.checksums else {
            return Ok(());
        };
        let record = match c.lookup(&self.job, holder, rel.as_path())? {
            Some(r) => r,
            None => {
                let f = fs::File::open(&*na).ctx("cannot open", &np)?;
                checksums::hash_file(&f).ctx("cannot read", &np)?
            }
        };
        c.records.insert(rel.as_path(), record);
        Ok(())
    }

    /// The first version: a complete copy of the source (keep_complete = false: nothing,
    /// and the baseline recorded instead).
    pub fn fill_first(&mut self) -> Result<()> {
        if self.baseline.is_some() {
            // A history of changes, not a full backup: the first version holds nothing; the
            // baseline remembers what "unchanged since the job started" means.
            let privileged = self.privileged;
            let xattrs_of = |p: &Path| copy::comparable_xattrs(p, privileged);
            let one_device = self.one_file_system.then_some(self.src_dev);
            let baseline =
                Baseline::record(self.source.shown(), &self.excludes, one_device, &xattrs_of)?;
            baseline.save(&self.job)?;
            self.out.changed += 1;
            return Ok(());
        }
        let root = RelPath::root();
        let children = self
            .src_dir(&root)
            .and_then(|dir| {
                listing::list_source(dir.listing(), &root, &self.excludes, Detail::Names)
            })
            .ctx("cannot list source", self.source.shown())?;
        match copy_pool::workers() {
            0 => {
                for name in children.keys() {
                    self.copy_new(&root.join(name))?;
                }
            }
            workers => self.copy_first_parallel(children.into_keys(), workers)?,
        }
        // Every entry was copied: every name of every multiply linked file was met.
        self.link_groups.mark_full();
        self.out.changed += 1;
        Ok(())
    }
}
