//! Every name of a changed hard-linked file (docs/format.md#hard-links, the rule of
//! docs/design.md#hard-links): a change through one name of a source file with more than
//! one link is a change of every name of its inode, and the version holds them linked
//! together as the source does. inotify reports an edit only to the watch of the folder of
//! the name that was used, so an event names one of them, and a new name (`ln`) reports
//! nothing on the others; the build finds the rest.
//!
//! Owns two steps of a build: before the walk of an event batch,
//! [`Builder::mark_other_names`] marks the other names the old version's record
//! (`hardlinks.tsv`) gives the inode of a marked name; after the walk,
//! [`Builder::link_every_name`] finds, for each multiply linked inode the build copied, its
//! names in the source (this build's passes over the source and the old record, each checked
//! against the source's lstat; when those cannot account for the inode's link count, one walk
//! of the source, [`Builder::find_every_name`]) and makes each name the new version holds
//! otherwise (a vault link to the old data, a copy of its own, or nothing) a hard link of
//! the build's copy, its folders made real as needed ([`Builder::real_folders_above`]).
//! Names the source no longer has as one inode are [`crate::engine::split_names`]'s.
//!
//! Invariants: a name is linked only when its lstat in the source now is the copied inode
//! and it is not excluded; whatever it replaces is uncounted exactly as it was counted
//! (`forget_old` for a vault link, the size of a copy), so index.tsv agrees with a recount; a
//! directory whose entries change here gets its mode and times put back (I5); everything
//! written is a real entry of the new version, made durable with it before the rename (I9).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::beneath::Here;

use crate::engine::build_state::Builder;
use crate::engine::copy;
use crate::engine::listing::{self, Detail, Lstat};
use crate::engine::marks::MarkTree;
use crate::error::{IoContext, Result};
use crate::format::entry::Fidelity;
use crate::format::events::Mark;
use crate::format::hardlinks_tsv::Inode;
use crate::format::relpath::RelPath;
use crate::vault::tree::{self, Entry};

/// One multiply linked inode the build copied, and its names in the source.
struct Found {
    inode: Inode,
    /// The path of the build's first copy of it.
    first: RelPath,
    names: Vec<RelPath>,
    /// Its link count now.
    links: u64,
}

/// What a name holds in the new version before it is linked.
enum Held {
    /// Nothing (keep_complete = false: unchanged since the job started; or new since the
    /// walk listed its folder).
    Nothing,
    /// A regular file of its own (copied or materialised) of this size.
    Copy(u64),
    /// A vault link to the regular file of this holder.
    Link(String),
}

impl Builder<'_> {
    /// Marks, in an event batch's `marks`, every other name the old version's record gives
    /// an inode one of whose names is marked (or, for a deleted or replaced entry, is below
    /// it: the inode may have been written through it before it went) `Attrib`: a hint, so
    /// the build compares each with the one comparator and copies what differs. Names
    /// marked already keep their marks.
    pub fn mark_other_names(&mut self, marks: &mut MarkTree) {
        let mut more = BTreeSet::new();
        for (rel, mark) in marks.marked_paths() {
            more.extend(self.link_groups.recorded_others(&rel, mark != Mark::Attrib));
        }
        for other in more {
            let rel = RelPath::from_internal(Path::new(OsStr::from_bytes(&other)));
            if marks.mark_of(&rel).is_none() {
                marks.insert(&rel, Mark::Attrib);
            }
        }
    }

    /// Makes every source name of each multiply linked inode this build copied a hard link
    /// of that copy in the new version.
    pub fn link_every_name(&mut self) -> Result<()> {
        let copied = self.link_groups.copied_inodes();
        if copied.is_empty() {
            return Ok(());
        }
        let mut found: Vec<Found> = copied
            .iter()
            .map(|(inode, first)| self.names_of(*inode, first))
            .collect();
        let unaccounted = found.iter().any(|f| {
            (f.names.len() as u64) < f.links
                && self.link_groups.recorded_links(&f.names) != Some(f.links)
        });
        if unaccounted && !self.link_groups.is_full() {
            // Names the record does not know of (a new link to a file that had one name, a
            // job from before the record): one walk of the source finds them all.
            self.find_every_name();
            found = copied
                .iter()
                .map(|(inode, first)| self.names_of(*inode, first))
                .collect();
        }
        for f in found {
            if f.names.is_empty() {
                continue;
            }
            for name in &f.names {
                if !self.link_groups.written_as(f.inode, name) {
                    self.link_name(name, &f.first)?;
                }
            }
            self.link_groups.set_names(f.inode, f.links, &f.names);
        }
        Ok(())
    }

    /// The names of `inode` in the source now: the candidates the record and this build's
    /// passes give, each checked by its lstat; and the inode's link count.
    fn names_of(&self, inode: Inode, first: &RelPath) -> Found {
        let mut names = Vec::new();
        let mut links = 0;
        for p in self.link_groups.candidates(inode) {
            let rel = RelPath::from_internal(Path::new(OsStr::from_bytes(&p)));
            if self.excluded(&rel) {
                continue;
            }
            if let Some(m) = self.source_lstat(&rel)
                && m.is_file()
                && (m.dev(), m.ino()) == inode
            {
                links = links.max(m.nlink());
                names.push(rel);
            }
        }
        Found {
            inode,
            first: first.clone(),
            names,
            links,
        }
    }

    /// Is `rel` or a folder above it excluded?
    pub fn excluded(&self, rel: &RelPath) -> bool {
        if self.excludes.is_empty() {
            return false;
        }
        let names: Vec<&OsStr> = rel.names().collect();
        let mut at = RelPath::root();
        for (i, name) in names.iter().enumerate() {
            at = at.join(name);
            if self.excludes.is_excluded(at.as_path(), i + 1 < names.len()) {
                return true;
            }
        }
        false
    }

    /// Walks the whole source (read-only, quiet: a folder it cannot list is left out, as a
    /// rescan leaves it) and notes every multiply linked file.
    pub fn find_every_name(&mut self) {
        let mut pending = vec![RelPath::root()];
        while let Some(at) = pending.pop() {
            let listed = self.src_dir(&at).and_then(|dir| {
                listing::list_source(dir.listing(), &at, &self.excludes, Detail::Stat)
            });
            let Ok(entries) = listed else {
                continue;
            };
            for (name, lstat) in entries {
                let Lstat::Read(m) = lstat else { continue };
                let rel = at.join(&name);
                if self.is_vault_dir(&m) {
                    continue;
                }
                if m.is_dir() {
                    pending.push(rel);
                } else {
                    self.link_groups.saw(&rel, &m);
                }
            }
        }
        self.link_groups.mark_full();
    }

    /// Makes `rel` in the new version a hard link of the build's copy at `first`.
    fn link_name(&mut self, rel: &RelPath, first: &RelPath) -> Result<()> {
        if self.skipped_paths.contains(rel) || !self.real_folders_above(rel)? {
            return Ok(());
        }
        let (np, fp) = (self.new_path(rel), self.new_path(first));
        let (na, fa) = (self.new_at(rel)?, self.new_at(first)?);
        let fm = fs::symlink_metadata(&*fa).ctx("cannot inspect", &fp)?;
        let held = match fs::symlink_metadata(&*na) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Held::Nothing,
            Err(e) => return Err(e).ctx("cannot inspect", &np),
            Ok(m) if m.is_file() && (m.dev(), m.ino()) == (fm.dev(), fm.ino()) => return Ok(()),
            Ok(m) if m.is_file() => Held::Copy(m.len()),
            Ok(m) => match tree::classify(
                &na,
                rel.as_path(),
                &self.new_name,
                m.file_type(),
                &self.lookalikes,
            )? {
                Entry::VaultLink { holder }
                    if fs::symlink_metadata(self.vault_path(&holder, rel))
                        .is_ok_and(|h| h.is_file()) =>
                {
                    Held::Link(holder)
                }
                // A folder, a source link, a special file: not this inode's name here.
                _ => return Ok(()),
            },
        };
        let parent = self.open_parent(rel)?;
        match &held {
            Held::Nothing => {}
            Held::Copy(_) => fs::remove_file(&*na).ctx("cannot remove", &np)?,
            Held::Link(holder) => {
                self.forget_old(rel, holder)?;
                fs::remove_file(&*na).ctx("cannot remove vault link", &np)?;
            }
        }
        fs::hard_link(&*fa, &*na).ctx("cannot create hard link", &np)?;
        parent.put_back()?;
        match held {
            Held::Copy(len) => self.delta_logical += fm.len() as i64 - len as i64,
            Held::Nothing | Held::Link(_) => {
                self.delta_files += 1;
                self.delta_logical += fm.len() as i64;
            }
        }
        let record = self
            .checksums
            .as_mut()
            .and_then(|c| c.records.get(first.as_path()));
        self.record(rel, record);
        self.out.changed += 1;
        self.note_changed(rel);
        crate::fault::step();
        Ok(())
    }

    /// The lstat of source entry `rel`, reached beneath the source's descriptor; `None`
    /// when it cannot be had (gone, or a folder on the way is not one any more).
    pub fn source_lstat(&self, rel: &RelPath) -> Option<Metadata> {
        self.src(rel).and_then(|at| fs::symlink_metadata(&*at)).ok()
    }

    /// Opens the folder of `rel` in the new version for a change of its entries: its mode and
    /// times are kept, to be put back ([`OpenParent::put_back`]), and it is made writable.
    pub fn open_parent(&self, rel: &RelPath) -> Result<OpenParent> {
        let parent_rel = RelPath::from_internal(rel.as_path().parent().unwrap_or(Path::new("")));
        let shown = self.new_path(&parent_rel);
        let dir = self.new_dir(&parent_rel)?;
        let meta = fs::symlink_metadata(&*dir).ctx("cannot inspect", &shown)?;
        copy::chmod_nofollow(&dir, 0o700).ctx("cannot open for writing", &shown)?;
        Ok(OpenParent {
            dir,
            meta,
            shown,
            keep: self.fidelity,
        })
    }

    /// Makes every folder above `rel` a real directory of the new version: a vault link to a
    /// folder becomes a real one with its children kept; with keep_complete = false, a
    /// folder unchanged since the job started (absent) is made with the source's
    /// attributes. False when one is none of these (the source changed meanwhile).
    pub fn real_folders_above(&mut self, rel: &RelPath) -> Result<bool> {
        let names: Vec<&OsStr> = rel.names().collect();
        let mut at = RelPath::root();
        for name in names.iter().take(names.len().saturating_sub(1)) {
            at = at.join(name);
            let np = self.new_path(&at);
            let na = self.new_at(&at)?;
            match fs::symlink_metadata(&*na) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => match self.linked_dir_at(&at)? {
                    Some(holder) => self.unlink_dir(&at, &holder)?,
                    None => return Ok(false),
                },
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.baseline.is_some() => {
                    let Some(sm) = self.source_lstat(&at).filter(|m| m.is_dir()) else {
                        return Ok(false);
                    };
                    let parent = self.open_parent(&at)?;
                    copy::make_dir(&na).ctx("cannot create directory", &np)?;
                    self.finish_real_dir(&at, &sm)?;
                    parent.put_back()?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e).ctx("cannot inspect", &np),
            }
        }
        Ok(true)
    }
}

/// A folder of the new version opened for a change of its entries, with its attributes as
/// they were.
pub(crate) struct OpenParent {
    dir: Here,
    meta: Metadata,
    shown: PathBuf,
    /// What the vault's filesystem keeps of it.
    keep: Fidelity,
}

impl OpenParent {
    /// Puts the folder's mode, owner and times back (I5: changing an entry moved them).
    pub fn put_back(self) -> Result<()> {
        copy::apply_path_meta(&self.dir, &self.meta, self.keep)
            .ctx("cannot set attributes of", &self.shown)
    }
}
