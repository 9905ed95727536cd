//! Listing one directory on each side of a build: the source ([`list_source`]) and a
//! version in the vault ([`list_version`], or [`list_version_unread`] when its symlinks are
//! to be classified only if the build needs to know: [`Listed`]). Every listing the build
//! makes goes through one of these functions.
//!
//! Invariants: entries come sorted by name (a `BTreeMap`), so builds are deterministic;
//! excluded source paths are left out; metadata, when asked for, is read relative to the
//! listing's open directory (`fstatat` on its fd), never by walking a path per entry.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};

use crate::engine::copy;
use crate::error::{IoContext, Result};
use crate::format::exclude::Excludes;
use crate::format::relpath::RelPath;
use crate::vault::tree::{self, Entry, Lookalikes};

/// How much to read of each entry besides its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// The names (and, for excludes, the type from the directory entry): no stat.
    Names,
    /// Each entry's `lstat` too.
    Stat,
}

/// One source entry's `lstat`, as far as the listing read it.
#[derive(Debug)]
pub(crate) enum Lstat {
    /// Not asked for ([`Detail::Names`]).
    NotRead,
    Read(Metadata),
    /// It failed for a reason other than the entry being gone (`EACCES`, `EIO`, …): the
    /// entry is there but cannot be inspected (docs/format.md#invariants I5).
    Failed(std::io::Error),
}

/// The source directory `dir` (at `rel`): its entries, with their `lstat` when
/// [`Detail::Stat`]. With `Stat`, an entry that vanishes between the listing and its stat
/// ([`crate::engine::copy::is_gone`]) is left out; one whose stat fails otherwise is listed
/// as [`Lstat::Failed`], never dropped.
pub(crate) fn list_source(
    dir: &Path,
    rel: &RelPath,
    excludes: &Excludes,
    detail: Detail,
) -> std::io::Result<BTreeMap<OsString, Lstat>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let (is_dir, meta) = match detail {
            Detail::Names => match e.file_type() {
                Ok(t) => (t.is_dir(), Lstat::NotRead),
                Err(err) if copy::is_gone(&err) => continue,
                // Without d_type the type is an lstat: one that fails is the build's to
                // journal when it reaches the entry, not a reason to lose the directory.
                Err(_) => (false, Lstat::NotRead),
            },
            Detail::Stat => match e.metadata() {
                Ok(m) => (m.is_dir(), Lstat::Read(m)),
                Err(err) if copy::is_gone(&err) => continue,
                // The type from the directory entry, for the excludes (no stat needed).
                Err(err) => (e.file_type().is_ok_and(|t| t.is_dir()), Lstat::Failed(err)),
            },
        };
        let name = e.file_name();
        if !excludes.is_empty() && excludes.is_excluded(rel.join(&name).as_path(), is_dir) {
            continue;
        }
        out.insert(name, meta);
    }
    Ok(out)
}

/// One entry of a version directory.
#[derive(Debug, Clone)]
pub(crate) struct VersionEntry {
    /// What it is: a vault link or a real entry.
    pub entry: Entry,
    /// The version physically holding it (the link's holder, or the listed version).
    pub holder: String,
    /// Its `lstat` with [`Detail::Stat`] when real (a vault link's holder is looked at by
    /// path).
    pub meta: Option<Metadata>,
    /// Where it is, when it is a vault link: a build that keeps it shares its inode.
    pub link: Option<std::path::PathBuf>,
}

/// One entry of a version directory as listed, its kind not read yet: whether a symlink is
/// a vault link or a source link takes a `readlink`, which a build that keeps the entry as
/// it is does not need ([`crate::engine::build_state::Builder::keep_listed`]).
#[derive(Debug)]
pub(crate) struct Listed {
    pub ft: fs::FileType,
    /// The version physically listed.
    pub phys: String,
    /// Where it is, relative to the job folder.
    pub path: PathBuf,
}

impl Listed {
    /// The entry at `rel` as [`list_version`] with [`Detail::Names`] gives it.
    pub fn classify(self, rel: &RelPath, lookalikes: &Lookalikes) -> Result<VersionEntry> {
        let entry = tree::classify(&self.path, rel.as_path(), &self.phys, self.ft, lookalikes)?;
        Ok(match entry {
            Entry::VaultLink { holder } => VersionEntry {
                holder: holder.clone(),
                entry: Entry::VaultLink { holder },
                meta: None,
                link: Some(self.path),
            },
            Entry::Real(ft) => VersionEntry {
                entry: Entry::Real(ft),
                holder: self.phys,
                meta: None,
                link: None,
            },
        })
    }
}

/// The directory `rel` physically in version `phys` of the job folder `job`, its entries
/// not classified ([`Listed`]).
pub(crate) fn list_version_unread(
    job: &Path,
    phys: &str,
    rel: &RelPath,
) -> Result<BTreeMap<OsString, Listed>> {
    let mut out = BTreeMap::new();
    each_listed(job, phys, rel, |e, listed| {
        out.insert(e.file_name(), listed);
        Ok(())
    })?;
    Ok(out)
}

/// The directory `rel` physically in version `phys` of the job folder `job`.
pub(crate) fn list_version(
    job: &Path,
    phys: &str,
    rel: &RelPath,
    lookalikes: &Lookalikes,
    detail: Detail,
) -> Result<BTreeMap<OsString, VersionEntry>> {
    let mut out = BTreeMap::new();
    each_listed(job, phys, rel, |e, listed| {
        let mut entry = listed.classify(&rel.join(&e.file_name()), lookalikes)?;
        if detail == Detail::Stat && matches!(entry.entry, Entry::Real(_)) {
            entry.meta = Some(e.metadata().ctx("cannot inspect", &e.path())?);
        }
        out.insert(e.file_name(), entry);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `each` with every entry of the directory `rel` physically in version `phys` (its
/// directory entry, for a `stat` beneath the listing, and what it is as listed).
fn each_listed(
    job: &Path,
    phys: &str,
    rel: &RelPath,
    mut each: impl FnMut(fs::DirEntry, Listed) -> Result<()>,
) -> Result<()> {
    let dir = rel.under(&job.join(phys));
    for e in fs::read_dir(&dir).ctx("cannot list version directory", &dir)? {
        let e = e.ctx("cannot list version directory", &dir)?;
        let listed = Listed {
            ft: e.file_type().ctx("cannot inspect", &e.path())?,
            phys: phys.to_owned(),
            path: e.path(),
        };
        each(e, listed)?;
    }
    Ok(())
}
