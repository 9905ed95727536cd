//! Names the source no longer has as one inode (docs/format.md#hard-links): a name of a
//! hard-linked file replaced by a file with the same size, mtime, mode and owner (`tar x`
//! over it unlinks and recreates it; `cp -p` then a rename) compares equal to the old
//! version, so the build keeps it, and through the old version's links it would still share
//! its data's inode with the other names: a restore would link what the source no longer
//! links.
//!
//! Owns finding them ([`Builder::split_names`]: the names of the old record's groups, every
//! group after a pass over the whole source, else those an event batch named, that are
//! regular files of different inodes in the source while one inode holds their data in a
//! version), marking them before a rescan's build ([`Builder::mark_split_names`], so a
//! rescan that finds nothing else still builds) and copying each afresh after the walk
//! ([`Builder::copy_split_names`]); the names still one source inode are then linked again
//! by [`crate::engine::linked_names`].
//!
//! Invariants: only a vault link is replaced, by a copy from the source counted as any copy
//! (an unreadable one keeps its link); a version under `.partial/` is read through its vault
//! links by their holder, never by following their text (which resolves from the job folder
//! only).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::engine::build_state::Builder;
use crate::engine::ingest::Copied;
use crate::engine::marks::MarkTree;
use crate::error::{IoContext, Result};
use crate::format::events::Mark;
use crate::format::hardlinks_tsv::Inode;
use crate::format::relpath::RelPath;
use crate::vault::tree::{self, Entry};

impl Builder<'_> {
    /// Names the old version held as one inode that the source no longer has as one: a
    /// name replaced by a file with the same size, mtime, mode and owner (`tar x` over it
    /// unlinks and recreates it; `cp -p` then a rename) compares equal, so the build keeps
    /// it, and through the old version's links it would still share its data's inode with
    /// the other names. These are the names of the old record's groups (every group after a
    /// pass over the whole source, else those an event batch named) that are regular files
    /// of different inodes in the source while the version `name` at `root` (the old one,
    /// or the new one) gives their data one inode, read through its links.
    fn split_names(&self, root: &Path, name: &str) -> Vec<RelPath> {
        let mut out = Vec::new();
        for group in self.link_groups.groups_to_check() {
            let mut now: Vec<(RelPath, Inode)> = Vec::new();
            for rel in group {
                if self.excluded(&rel) || self.skipped_paths.contains(&rel) {
                    continue;
                }
                if let Some(m) = self.source_lstat(&rel)
                    && m.is_file()
                {
                    now.push((rel, (m.dev(), m.ino())));
                }
            }
            let inodes: BTreeSet<Inode> = now.iter().map(|(_, i)| *i).collect();
            if inodes.len() < 2 {
                continue;
            }
            // The inode each name's data is in `root` → the names and their source inodes.
            let mut held: BTreeMap<Inode, Vec<(RelPath, Inode)>> = BTreeMap::new();
            for (rel, inode) in now {
                if let Some(data) = self.data_inode(root, name, &rel) {
                    held.entry(data).or_default().push((rel, inode));
                }
            }
            for names in held.into_values() {
                let sources: BTreeSet<Inode> = names.iter().map(|(_, i)| *i).collect();
                if sources.len() > 1 {
                    out.extend(names.into_iter().map(|(rel, _)| rel));
                }
            }
        }
        out
    }

    /// The inode of the regular file that `rel` of the version `name` at `root` reads as,
    /// through its vault links (resolved by their holder, as a version being built under
    /// `.partial/` needs: their texts resolve from the job folder only).
    fn data_inode(&self, root: &Path, name: &str, rel: &RelPath) -> Option<Inode> {
        let mut at = root.to_path_buf();
        let mut sofar = RelPath::root();
        for part in rel.names() {
            at.push(part);
            sofar = sofar.join(part);
            let m = fs::symlink_metadata(&at).ok()?;
            if !m.file_type().is_symlink() {
                continue;
            }
            let entry = tree::classify(&at, sofar.as_path(), name, m.file_type(), &self.lookalikes);
            let Ok(Entry::VaultLink { holder }) = entry else {
                return None; // a source link: not a regular file here
            };
            // The holder has every component real (I2).
            let held = fs::symlink_metadata(self.vault_path(&holder, rel)).ok()?;
            return held.is_file().then(|| (held.dev(), held.ino()));
        }
        let m = fs::symlink_metadata(&at).ok()?;
        m.is_file().then(|| (m.dev(), m.ino()))
    }

    /// Marks `attrib` (so the build looks at them) the names the old version `old_dir`
    /// holds as one inode that the source no longer has as one ([`Builder::split_names`]).
    pub fn mark_split_names(&mut self, old_dir: &str, marks: &mut MarkTree) {
        for rel in self.split_names(&self.job.join(old_dir), old_dir) {
            if marks.mark_of(&rel).is_none() {
                marks.insert(&rel, Mark::Attrib);
            }
        }
    }

    /// Copies afresh each name the new version holds as one inode with names of other
    /// source inodes ([`Builder::split_names`]); the names still one source inode are
    /// linked again by the copy rule. Returns whether it copied any.
    pub fn copy_split_names(&mut self) -> Result<bool> {
        let mut copied = false;
        let (root, name) = (self.new_root.clone(), self.new_name.clone());
        for rel in self.split_names(&root, &name) {
            copied |= self.copy_afresh(&rel)?;
        }
        Ok(copied)
    }

    /// Copies `rel` from the source in place of the vault link the new version holds
    /// there (nothing when it holds anything else); unreadable now, the link is put back.
    /// Returns whether it copied.
    fn copy_afresh(&mut self, rel: &RelPath) -> Result<bool> {
        if !self.real_folders_above(rel)? {
            return Ok(false);
        }
        let np = self.new_path(rel);
        let na = self.new_at(rel)?;
        let m = fs::symlink_metadata(&*na).ctx("cannot inspect", &np)?;
        let Entry::VaultLink { holder } = tree::classify(
            &na,
            rel.as_path(),
            &self.new_name,
            m.file_type(),
            &self.lookalikes,
        )?
        else {
            return Ok(false);
        };
        let parent = self.open_parent(rel)?;
        self.forget_old(rel, &holder)?;
        fs::remove_file(&*na).ctx("cannot remove vault link", &np)?;
        let copied = self.copy_new(rel)?;
        if copied == Copied::Skipped {
            self.unforget_old(rel, &holder)?;
            let text = tree::link_text(rel.as_path(), &holder);
            std::os::unix::fs::symlink(&text, &*na).ctx("cannot create vault link", &np)?;
        }
        parent.put_back()?;
        Ok(copied != Copied::Skipped)
    }
}
