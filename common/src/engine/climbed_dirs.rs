//! Keeping relative source links resolving inside their version (I8,
//! docs/format.md#i8--relative-source-links-resolve-inside-their-version): a directory vault
//! link moves `..` into its holder, so no directory that a source link's target leaves by
//! `..` may be a vault link in the new version.
//!
//! Owns the last step of the build walk ([`Builder::keep_links_inside`]): once the tree is
//! built, every vault link at a directory one of the new version's climbing links
//! ([`crate::engine::climbing_links`]) leaves is turned back into a real directory whose
//! children are linked again: only as deep as needed.
//!
//! Invariants: an unchanged directory is never listed to decide (only the directories those
//! links leave are looked at); a directory made real here gets its holder's attributes and
//! its parent's mode and times are put back, so the version stays exact (I5); both are real
//! directories of the new version, so the publish makes them durable with the rest of it
//! before the rename (I9, `publish::make_durable`).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::engine::build_state::Builder;
use crate::engine::copy;
use crate::engine::listing::Detail;
use crate::error::{IoContext, Result};
use crate::format::climbing_tsv::exits;
use crate::format::relpath::RelPath;
use crate::vault::tree;

impl Builder<'_> {
    /// Makes real every directory of the new version that a climbing link leaves and that
    /// is a vault link (its parent being real), parents first; its children are kept as
    /// the holder has them (vault links, source links recreated).
    pub fn keep_links_inside(&mut self) -> Result<()> {
        let left: BTreeSet<Vec<u8>> = self
            .climbing
            .now()
            .iter()
            .flat_map(|(p, t)| {
                exits(
                    Path::new(OsStr::from_bytes(p)),
                    Path::new(OsStr::from_bytes(t)),
                )
            })
            .map(|d| d.as_os_str().as_bytes().to_vec())
            .collect();
        for dir in left {
            let rel = RelPath::from_internal(Path::new(OsStr::from_bytes(&dir)));
            if let Some(holder) = self.linked_dir_at(&rel)? {
                self.unlink_dir(&rel, &holder)?;
            }
        }
        Ok(())
    }

    /// The holder of the vault link at `rel` in the new version, when every ancestor is a
    /// real directory and the link stands for a directory.
    pub fn linked_dir_at(&self, rel: &RelPath) -> Result<Option<String>> {
        let mut at = self.new_root.clone();
        let names: Vec<_> = rel.as_path().iter().collect();
        for (i, name) in names.iter().enumerate() {
            at.push(name);
            let meta = match fs::symlink_metadata(&at) {
                Ok(m) => m,
                Err(_) => return Ok(None),
            };
            if i + 1 < names.len() {
                if !meta.is_dir() {
                    // Below a vault link (resolves alike in its holder), or not a directory.
                    return Ok(None);
                }
                continue;
            }
            if !meta.file_type().is_symlink()
                || self.lookalikes.contains(&self.new_name, rel.as_path())
            {
                return Ok(None);
            }
            let text = fs::read_link(&at).ctx("cannot read link", &at)?;
            let Some(holder) = tree::parse_link_text(rel.as_path(), &text) else {
                return Ok(None);
            };
            let held = self.vault_path(&holder, rel);
            let is_dir = fs::symlink_metadata(&held).is_ok_and(|m| m.is_dir());
            return Ok(is_dir.then_some(holder));
        }
        Ok(None)
    }

    /// Replaces the vault link at `rel` (a directory of `holder`) by a real directory whose
    /// children are kept from the holder; the parent's mode and times are put back.
    pub fn unlink_dir(&mut self, rel: &RelPath, holder: &str) -> Result<()> {
        let np = self.new_path(rel);
        let na = self.new_at(rel)?;
        let parent_rel = RelPath::from_internal(rel.as_path().parent().unwrap_or(Path::new("")));
        let parent = self.new_path(&parent_rel);
        let pd = self.new_dir(&parent_rel)?;
        let pm = fs::symlink_metadata(&*pd).ctx("cannot inspect", &parent)?;
        copy::chmod_nofollow(&pd, 0o700).ctx("cannot open for writing", &parent)?;
        fs::remove_file(&*na).ctx("cannot remove vault link", &np)?;
        copy::make_dir(&na).ctx("cannot create directory", &np)?;
        for (name, child) in self.list_version(Some(holder), rel, Detail::Names)? {
            self.keep_old(&rel.join(&name), &child)?;
        }
        let op = self.vault_path(holder, rel);
        let om = fs::symlink_metadata(&op).ctx("cannot inspect", &op)?;
        copy::finish_dir(&op, &na, &om, self.fidelity).ctx("cannot set attributes of", &np)?;
        copy::apply_path_meta(&pd, &pm, self.fidelity).ctx("cannot set attributes of", &parent)
    }
}
