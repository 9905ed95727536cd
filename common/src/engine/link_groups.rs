//! The multiply linked source files of a build (docs/format.md#invariants I5, the hard-link
//! rule of docs/design.md#hard-links): what is known of the names of each source inode with
//! more than one link, in the version a build starts from and in the one it makes
//! ([`LinkGroups`]).
//!
//! Owns the build's side of `hardlinks.tsv` ([`crate::format::hardlinks_tsv`]): the old
//! version's groups are read from the registry ([`LinkGroups::load`]) and carried forward as
//! the build keeps, drops and copies entries ([`LinkGroups::forget`],
//! [`LinkGroups::unforget`], [`LinkGroups::copied`]); the lstat of every multiply linked
//! file a pass over the source meets is kept too ([`LinkGroups::saw`]), and when a pass met
//! the whole source (a rescan's diff, the first version, a walk for names) that is the new
//! version's record ([`LinkGroups::mark_full`]). The inodes the build copied, and the first
//! copy of each, are here as well: every later name of one is a hard link of that copy.
//! Linking every name of a copied inode is [`crate::engine::linked_names`]'s.
//!
//! Invariants: a recorded group lists every source name of its inode that was not excluded
//! and could be listed when it was recorded; a registry that cannot be read describes no
//! version (a warning; the next save replaces it), never stops a build; the registry keeps the old version described
//! until the new one is published ([`LinkGroups::replacement`]); a version whose record
//! cannot be known (its predecessor undescribed, and no pass over the whole source) is left
//! undescribed, never described wrongly.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::Result;
use crate::format::hardlinks_tsv::{Inode, Names, Registry};
use crate::format::relpath::RelPath;

/// The inode of a regular file's lstat with more than one link.
pub(crate) fn multiply_linked(meta: &Metadata) -> Option<Inode> {
    (meta.is_file() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino()))
}

/// The registry of job folder `job`. One that cannot be read describes nothing, with a
/// warning: it only spares the build walks of the source, so it is no reason to stop
/// taking versions, and the next save replaces it.
fn registry(job: &Path) -> Registry {
    Registry::load(job).unwrap_or_else(|e| {
        crate::error::warn(&format!(
            "{e}: the record of hard-linked files is ignored and written anew"
        ));
        Registry::default()
    })
}

/// The multiply linked files of the version being built (and of the one it is built from).
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkGroups {
    /// The old version's name and its record, when the registry describes it.
    base: Option<(String, Names)>,
    /// The new version's record so far, carried forward from the old one (`None`: the old
    /// version is not described).
    now: Option<Names>,
    /// Every multiply linked source file this build's passes over the source met.
    seen: Names,
    /// Did one pass meet the whole source? Then `seen` is the new version's record.
    full: bool,
    /// The multiply linked inodes this build copied: the first copy's path.
    copied: BTreeMap<Inode, RelPath>,
    /// The names this build wrote as a copy of each of those inodes (the first copy and the
    /// hard links of it).
    written: BTreeMap<Inode, BTreeSet<RelPath>>,
    /// The old version's inodes an event batch named a name of.
    touched: BTreeSet<Inode>,
}

impl LinkGroups {
    /// Starts from the old version `old_dir` of job folder `job`: its record, when the
    /// registry describes it.
    pub fn load(&mut self, job: &Path, old_dir: &str) -> Result<()> {
        let described = registry(job).of(old_dir).cloned();
        self.now = described.clone();
        self.base = described.map(|names| (old_dir.to_owned(), names));
        Ok(())
    }

    /// A pass over the source read the lstat `meta` of `rel` (the latest read wins: a name
    /// that has one link now is no longer a name of the inode it was seen with).
    pub fn saw(&mut self, rel: &RelPath, meta: &Metadata) {
        match multiply_linked(meta) {
            Some(inode) => self.seen.insert(inode, meta.nlink(), rel.as_bytes()),
            None => {
                self.seen.remove(rel.as_bytes());
            }
        }
    }

    /// One pass met every entry of the source (none excluded or unreadable left out).
    pub fn mark_full(&mut self) {
        self.full = true;
    }

    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The old entry at `rel` is not carried forward: nor are the names at and below it.
    pub fn forget(&mut self, rel: &RelPath) {
        if let Some(now) = &mut self.now {
            now.remove_under(rel.as_bytes());
        }
    }

    /// Undoes [`LinkGroups::forget`]: the old entry is carried forward after all.
    pub fn unforget(&mut self, rel: &RelPath) {
        let (Some((_, base)), Some(now)) = (&self.base, &mut self.now) else {
            return;
        };
        for p in base.under(rel.as_bytes()) {
            if let Some(inode) = base.inode_of(&p) {
                let links = base.group(inode).map_or(0, |g| g.links);
                now.insert(inode, links, &p);
            }
        }
    }

    /// The source file `rel` (lstat `meta`) was copied into the new version (or linked to
    /// an earlier copy of its inode); `same_inode` unless what was copied turned out to be
    /// another inode than `meta`'s (replaced in between): then nothing is known of it.
    pub fn copied(&mut self, rel: &RelPath, meta: &Metadata, same_inode: bool) {
        if let Some(now) = &mut self.now {
            now.remove(rel.as_bytes());
        }
        if !same_inode {
            self.seen.remove(rel.as_bytes());
            return;
        }
        self.saw(rel, meta);
        if let Some(inode) = multiply_linked(meta) {
            self.copied.entry(inode).or_insert_with(|| rel.clone());
            self.written.entry(inode).or_default().insert(rel.clone());
        }
    }

    /// Did this build write `rel` as a copy of `inode` already (the first copy, or a hard
    /// link of it)? A vault that shows every path with an inode number of its own (sshfs)
    /// cannot say so itself.
    pub fn written_as(&self, inode: Inode, rel: &RelPath) -> bool {
        self.written
            .get(&inode)
            .is_some_and(|names| names.contains(rel))
    }

    /// The path of this build's first copy of the inode of `meta`, if it made one.
    pub fn first_copy(&self, meta: &Metadata) -> Option<&RelPath> {
        multiply_linked(meta).and_then(|inode| self.copied.get(&inode))
    }

    /// The multiply linked inodes this build copied, with their first copy's path.
    pub fn copied_inodes(&self) -> Vec<(Inode, RelPath)> {
        self.copied.iter().map(|(i, r)| (*i, r.clone())).collect()
    }

    /// The paths that may be names of `inode` in the source now: what this build's passes
    /// met, and the old version's group of that inode (found by inode number, or through a
    /// name met now). Each must be checked against the source before it is believed.
    pub fn candidates(&self, inode: Inode) -> BTreeSet<Vec<u8>> {
        let mut out: BTreeSet<Vec<u8>> = self
            .seen
            .group(inode)
            .map(|g| g.paths.clone())
            .unwrap_or_default();
        if self.full {
            return out;
        }
        if let Some((_, base)) = &self.base {
            let mut olds: BTreeSet<Inode> = base.with_ino(inode.1).map(|(i, _)| *i).collect();
            olds.extend(out.iter().filter_map(|p| base.inode_of(p)));
            for old in olds {
                if let Some(g) = base.group(old) {
                    out.extend(g.paths.iter().cloned());
                }
            }
        }
        out
    }

    /// The names the old version's record gives the inodes of `rel` (with `below`, of every
    /// recorded name at or below it), other than those: where an event on `rel` may have
    /// changed data that other names show.
    pub fn recorded_others(&mut self, rel: &RelPath, below: bool) -> Vec<Vec<u8>> {
        let Some((_, base)) = &self.base else {
            return Vec::new();
        };
        let at = rel.as_bytes();
        let named: Vec<Vec<u8>> = if below {
            base.under(at)
        } else {
            base.inode_of(at).map(|_| at.to_vec()).into_iter().collect()
        };
        let inodes: BTreeSet<Inode> = named.iter().filter_map(|p| base.inode_of(p)).collect();
        self.touched.extend(inodes.iter().copied());
        let mut prefix = at.to_vec();
        prefix.push(b'/');
        let inside = |p: &[u8]| p == at || (below && (at.is_empty() || p.starts_with(&prefix)));
        inodes
            .into_iter()
            .filter_map(|i| base.group(i))
            .flat_map(|g| g.paths.iter())
            .filter(|p| !inside(p))
            .cloned()
            .collect()
    }

    /// The names of each old inode whose names this build must check are still one inode:
    /// after a pass over the whole source, every recorded inode; otherwise those an event
    /// batch named a name of.
    pub fn groups_to_check(&self) -> Vec<Vec<RelPath>> {
        let Some((_, base)) = &self.base else {
            return Vec::new();
        };
        let paths = |i: &Inode| -> Option<Vec<RelPath>> {
            let g = base.group(*i)?;
            Some(
                g.paths
                    .iter()
                    .map(|p| RelPath::from_internal(Path::new(OsStr::from_bytes(p))))
                    .collect(),
            )
        };
        if self.full {
            base.inodes().filter_map(paths).collect()
        } else {
            self.touched.iter().filter_map(paths).collect()
        }
    }

    /// The link count the old version's record gives the inode one of `names` was then.
    pub fn recorded_links(&self, names: &[RelPath]) -> Option<u64> {
        let (_, base) = self.base.as_ref()?;
        names
            .iter()
            .filter_map(|n| base.inode_of(n.as_bytes()))
            .find_map(|i| base.group(i).map(|g| g.links))
    }

    /// `names` are every name of `inode` in the source, which has `links` links now.
    pub fn set_names(&mut self, inode: Inode, links: u64, names: &[RelPath]) {
        for n in names {
            self.seen.insert(inode, links, n.as_bytes());
            if let Some(now) = &mut self.now {
                now.insert(inode, links, n.as_bytes());
            }
        }
    }

    /// A pass over the whole source found it identical to version `dir`: what it met is that
    /// version's record, kept when the registry does not describe the version yet (a job
    /// from before the registry), so the next build from events has it.
    pub fn describe_unchanged(&self, job: &Path, dir: &str) -> Result<()> {
        if !self.full {
            return Ok(());
        }
        let mut reg = registry(job);
        if reg.of(dir).is_some() {
            return Ok(());
        }
        reg.set(dir, self.seen.clone());
        reg.retain(&BTreeSet::from([dir]));
        reg.save(job)
    }

    /// Job folder `job`'s registry with the new version `new_name`'s multiply linked files,
    /// the old version's kept (a crash before the new version is published leaves the old
    /// one described) and every other version's dropped (a new version whose record is not
    /// known is left out): the file and its text, which the caller writes atomically and
    /// durably ([`crate::fsutil::Staged`]).
    pub fn replacement(&self, job: &Path, new_name: &str) -> crate::fsutil::Replacement {
        let mut reg = registry(job);
        let mut keep: BTreeSet<&str> = BTreeSet::new();
        if let Some((old, names)) = &self.base {
            reg.set(old, names.clone());
            keep.insert(old);
        }
        let new = if self.full {
            Some(self.seen.clone())
        } else {
            self.now.clone()
        };
        if let Some(names) = new {
            reg.set(new_name, names);
            keep.insert(new_name);
        }
        reg.retain(&keep);
        reg.replacement(job)
    }
}
