//! Keeping relative source links resolving inside their version (I8,
//! docs/format.md#i8--relative-source-links-resolve-inside-their-version): a directory vault
//! link moves `..` into its holder, so no directory that a source link's target leaves by
//! `..` may be a vault link in the new version.
//!
//! Owns the build's side of `climbing.tsv` ([`ClimbLinks`]): the old version's climbing
//! links are read from the registry (or, once, from the old version's tree when the registry
//! does not describe it), carried forward as the build keeps, drops and copies entries, and
//! saved with the new version ([`save`]) before it is published. After the tree is built,
//! [`Builder::keep_links_inside`] turns every vault link at a directory some link leaves back
//! into a real directory whose children are linked again: only as deep as needed.
//!
//! Invariants: the new version's records are exactly its relative source links that leave a
//! directory ([`exits`]); an unchanged directory is never listed to decide (only the
//! directories those links leave are looked at); a directory made real here gets its
//! holder's attributes and its parent's mode and times are put back, so the version stays
//! exact (I5); both are real directories of the new version, so the publish makes them
//! durable with the rest of it before the rename (I9, `publish::make_durable`).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::engine::builder::Builder;
use crate::engine::copy;
use crate::engine::listing::Detail;
use crate::error::{IoContext, Result};
use crate::format::climbing::{Climbing, Links, exits};
use crate::format::relpath::RelPath;
use crate::vault::check;
use crate::vault::tree;

/// The climbing links of the version being built (and of the one it is built from).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClimbLinks {
    /// The old version's name and its links, once loaded.
    base: Option<(String, Links)>,
    /// The new version's links so far.
    now: Links,
}

impl Builder<'_> {
    /// Starts from the old version `old_dir`'s climbing links: the registry's, or the old
    /// tree's when the registry does not describe it (a vault written before it existed, or a
    /// build that crashed before publishing).
    pub fn load_climbing(&mut self, old_dir: &str) -> Result<()> {
        let links = match Climbing::load(&self.job)?.of(old_dir) {
            Some(links) => links.clone(),
            None => check::climbing_links(&self.job, old_dir, &self.lookalikes)?,
        };
        self.climbing.now = links.clone();
        self.climbing.base = Some((old_dir.to_owned(), links));
        Ok(())
    }

    /// A source link with text `text` is now at `rel` in the new version.
    pub fn note_climbing(&mut self, rel: &RelPath, text: &Path) {
        if !exits(rel.as_path(), text).is_empty() {
            let key = rel.as_bytes().to_vec();
            self.climbing
                .now
                .insert(key, text.as_os_str().as_bytes().to_vec());
        }
    }

    /// The old entry at `rel` is not carried forward: nor are the links at and below it.
    pub fn forget_climbing(&mut self, rel: &RelPath) {
        let below: Vec<Vec<u8>> = under(&self.climbing.now, rel).cloned().collect();
        for k in below {
            self.climbing.now.remove(&k);
        }
    }

    /// Undoes [`Builder::forget_climbing`]: the old entry is carried forward after all.
    pub fn unforget_climbing(&mut self, rel: &RelPath) {
        let Some((_, base)) = &self.climbing.base else {
            return;
        };
        let back: Vec<(Vec<u8>, Vec<u8>)> = under(base, rel)
            .map(|k| (k.clone(), base[k].clone()))
            .collect();
        self.climbing.now.extend(back);
    }

    /// Makes real every directory of the new version that a climbing link leaves and that
    /// is a vault link (its parent being real), parents first; its children are kept as
    /// the holder has them (vault links, source links recreated).
    pub fn keep_links_inside(&mut self) -> Result<()> {
        let left: BTreeSet<Vec<u8>> = self
            .climbing
            .now
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
    fn linked_dir_at(&self, rel: &RelPath) -> Result<Option<String>> {
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
    fn unlink_dir(&mut self, rel: &RelPath, holder: &str) -> Result<()> {
        let np = self.new_path(rel);
        let parent = np.parent().unwrap_or(&self.new_root).to_path_buf();
        let pm = fs::symlink_metadata(&parent).ctx("cannot inspect", &parent)?;
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o700))
            .ctx("cannot open for writing", &parent)?;
        fs::remove_file(&np).ctx("cannot remove vault link", &np)?;
        copy::make_dir(&np).ctx("cannot create directory", &np)?;
        for (name, child) in self.list_version(Some(holder), rel, Detail::Names)? {
            self.keep_old(&rel.join(&name), &child)?;
        }
        let op = self.vault_path(holder, rel);
        let om = fs::symlink_metadata(&op).ctx("cannot inspect", &op)?;
        copy::finish_dir(&op, &np, &om).ctx("cannot set attributes of", &np)?;
        copy::apply_path_meta(&parent, &pm).ctx("cannot set attributes of", &parent)
    }
}

/// The keys of `links` at or below `rel`.
fn under<'a>(links: &'a Links, rel: &RelPath) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
    let at = rel.as_bytes().to_vec();
    let mut from = at.clone();
    from.push(b'/');
    let exact = links.get_key_value(&at).map(|(k, _)| k);
    exact.into_iter().chain(
        links
            .range(from.clone()..)
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(&from)),
    )
}

/// Records the new version `new_dir`'s climbing links in the registry, with the old
/// version's kept (a crash before the new version is published leaves the old one
/// described) and every other version's dropped; atomic and durable.
pub(crate) fn save(b: &Builder<'_>) -> Result<()> {
    let mut reg = Climbing::load(&b.job)?;
    let mut keep: BTreeSet<&str> = BTreeSet::from([b.new_name.as_str()]);
    if let Some((old, links)) = &b.climbing.base {
        reg.set(old, links.clone());
        keep.insert(old);
    }
    reg.set(&b.new_name, b.climbing.now.clone());
    reg.retain(&keep);
    reg.save(&b.job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_is_the_path_and_its_descendants_only() {
        let mut links = Links::new();
        for k in ["a/b", "a/b-c/l", "a/b/l", "a/b/x/l", "a/bc", "a/c"] {
            links.insert(k.as_bytes().to_vec(), b"../x".to_vec());
        }
        let rel = RelPath::from_internal(Path::new("a/b"));
        let found: Vec<&[u8]> = under(&links, &rel).map(|k| k.as_slice()).collect();
        assert_eq!(found, [&b"a/b"[..], b"a/b/l", b"a/b/x/l"]);
    }
}
