//! Listing one directory on each side of a build: the source ([`list_source`]) and a
//! version in the vault ([`list_version`]). Every listing the build makes goes through one
//! of these two functions.
//!
//! Invariants: entries come sorted by name (a `BTreeMap`), so builds are deterministic;
//! excluded source paths are left out; metadata, when asked for, is read relative to the
//! listing's open directory (`fstatat` on its fd), never by walking a path per entry.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::path::Path;

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

/// The source directory `dir` (at `rel`): its entries, with their `lstat` when
/// [`Detail::Stat`] (`None` otherwise). With `Stat`, an entry that vanishes between the
/// listing and its stat is left out.
pub(crate) fn list_source(
    dir: &Path,
    rel: &RelPath,
    excludes: &Excludes,
    detail: Detail,
) -> std::io::Result<BTreeMap<OsString, Option<Metadata>>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let (is_dir, meta) = match detail {
            Detail::Names => (e.file_type()?.is_dir(), None),
            Detail::Stat => match e.metadata() {
                Ok(m) => (m.is_dir(), Some(m)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
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
}

/// The directory `rel` physically in version `phys` of the job folder `job`.
pub(crate) fn list_version(
    job: &Path,
    phys: &str,
    rel: &RelPath,
    lookalikes: &Lookalikes,
    detail: Detail,
) -> Result<BTreeMap<OsString, VersionEntry>> {
    let dir = rel.under(&job.join(phys));
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&dir).ctx("cannot list version directory", &dir)? {
        let e = e.ctx("cannot list version directory", &dir)?;
        let ft = e.file_type().ctx("cannot inspect", &e.path())?;
        let child = rel.join(&e.file_name());
        let entry = tree::classify(&e.path(), child.as_path(), phys, ft, lookalikes)?;
        let (holder, meta) = match &entry {
            Entry::VaultLink { holder } => (holder.clone(), None),
            Entry::Real(_) if detail == Detail::Stat => (
                phys.to_owned(),
                Some(e.metadata().ctx("cannot inspect", &e.path())?),
            ),
            Entry::Real(_) => (phys.to_owned(), None),
        };
        out.insert(
            e.file_name(),
            VersionEntry {
                entry,
                holder,
                meta,
            },
        );
    }
    Ok(out)
}
