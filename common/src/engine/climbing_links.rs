//! The climbing source links of a build (I8,
//! docs/format.md#i8--relative-source-links-resolve-inside-their-version): the relative
//! source links whose target leaves a directory by `..`, of the version a build starts from
//! and of the one it makes ([`ClimbLinks`]).
//!
//! Owns the build's side of `climbing.tsv` ([`crate::format::climbing_tsv`]): the old
//! version's links are read from the registry (or, once, from the old version's tree when the
//! registry does not describe it, [`ClimbLinks::load`]), carried forward as the build keeps,
//! drops and copies entries ([`ClimbLinks::note`], [`ClimbLinks::forget`],
//! [`ClimbLinks::unforget`]), and saved with the new version
//! ([`ClimbLinks::replacement`]) before it is published. Making the directories those
//! links leave real again is [`crate::engine::climbed_dirs`]'s.
//!
//! Invariant: the new version's records are exactly its relative source links that leave a
//! directory ([`exits`]); the registry keeps the old version described until the new one is
//! published.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::Result;
use crate::format::climbing_tsv::{Climbing, Links, exits};
use crate::format::relpath::RelPath;
use crate::vault::check;
use crate::vault::tree::Lookalikes;

/// The climbing links of the version being built (and of the one it is built from).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClimbLinks {
    /// The old version's name and its links, once loaded.
    base: Option<(String, Links)>,
    /// The new version's links so far.
    now: Links,
}

impl ClimbLinks {
    /// Starts from the old version `old_dir` of job folder `job`'s climbing links: the
    /// registry's, or the old tree's when the registry does not describe it (a vault written
    /// before it existed, or a build that crashed before publishing).
    pub fn load(&mut self, job: &Path, old_dir: &str, lookalikes: &Lookalikes) -> Result<()> {
        let links = match Climbing::load(job)?.of(old_dir) {
            Some(links) => links.clone(),
            None => check::climbing_links(job, old_dir, lookalikes)?,
        };
        self.now = links.clone();
        self.base = Some((old_dir.to_owned(), links));
        Ok(())
    }

    /// A source link with text `text` is now at `rel` in the new version.
    pub fn note(&mut self, rel: &RelPath, text: &Path) {
        if !exits(rel.as_path(), text).is_empty() {
            let key = rel.as_bytes().to_vec();
            self.now.insert(key, text.as_os_str().as_bytes().to_vec());
        }
    }

    /// The old entry at `rel` is not carried forward: nor are the links at and below it.
    pub fn forget(&mut self, rel: &RelPath) {
        let below: Vec<Vec<u8>> = under(&self.now, rel).cloned().collect();
        for k in below {
            self.now.remove(&k);
        }
    }

    /// Undoes [`ClimbLinks::forget`]: the old entry is carried forward after all.
    pub fn unforget(&mut self, rel: &RelPath) {
        let Some((_, base)) = &self.base else {
            return;
        };
        let back: Vec<(Vec<u8>, Vec<u8>)> = under(base, rel)
            .map(|k| (k.clone(), base[k].clone()))
            .collect();
        self.now.extend(back);
    }

    /// The new version's links so far: link path bytes → link text bytes.
    pub fn now(&self) -> &Links {
        &self.now
    }

    /// Job folder `job`'s registry with the new version `new_name`'s climbing links, the
    /// old version's kept (a crash before the new version is published leaves the old one
    /// described) and every other version's dropped: the file and its text, which the
    /// caller writes atomically and durably ([`crate::fsutil::Staged`]).
    pub fn replacement(&self, job: &Path, new_name: &str) -> Result<crate::fsutil::Replacement> {
        let mut reg = Climbing::load(job)?;
        let mut keep: BTreeSet<&str> = BTreeSet::from([new_name]);
        if let Some((old, links)) = &self.base {
            reg.set(old, links.clone());
            keep.insert(old);
        }
        reg.set(new_name, self.now.clone());
        reg.retain(&keep);
        Ok(reg.replacement(job))
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
