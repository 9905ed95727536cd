//! Retirement's carrying of records (docs/format.md#checksums): the records under each
//! entry moved from version `from` into version `to` are added to `to`'s file before
//! anything else changes.
//!
//! Owns: the merge of the two files. Both are in path order (every writer writes them so),
//! so the merge reads each a line at a time and writes the new file as it goes: a
//! retirement of a version that holds a million files holds neither file in memory. A file
//! found out of order (not one this program wrote) is merged in memory instead.
//!
//! Invariants: `to`'s file is replaced atomically and durably, and only when a record is
//! added or changed (a resumed retirement rewrites nothing); `from`'s file is never
//! changed; of two records of a path, `from`'s wins.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{
    LineError, Record, Records, file_of, open_lines, path_order, read, remove, versions_with_files,
    write, write_line,
};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, Commit};

/// Moves the records under each of `moved` (files or whole directories) from version
/// `from`'s file into version `to`'s (rewritten atomically and durably when anything is
/// added), before any link is retargeted or data moves. `from`'s file stays while `from`
/// exists, so a record is findable at every instant; the files of versions already deleted
/// are removed here. Idempotent: a record already in `to` is replaced by `from`'s.
pub fn carry(job: &Path, from: u64, to: u64, moved: &[PathBuf]) -> Result<()> {
    prune_orphans(job)?;
    if moved.is_empty() {
        return Ok(());
    }
    let moved: HashSet<&Path> = moved.iter().map(PathBuf::as_path).collect();
    let (from_file, to_file) = (file_of(job, from), file_of(job, to));
    // First, reading only, whether anything is added (a resumed retirement adds nothing,
    // and must not need the space of a second copy of `to`'s file: it may run on a full
    // disk to free space); the merge stops at the first record added.
    let Some((kept, carried)) = open_both(&from_file, &to_file, &moved)? else {
        return Ok(());
    };
    match merge(kept, carried, &mut std::io::sink(), Until::FirstChange) {
        Ok(false) => return Ok(()),
        Ok(true) => {}
        Err(MergeError::OutOfOrder) => return carry_in_memory(job, from, to, &moved),
        Err(MergeError::Read(e)) => return Err(e),
        Err(MergeError::Write(e)) => return Err(e).ctx("cannot write", &to_file),
    }
    let Some((kept, carried)) = open_both(&from_file, &to_file, &moved)? else {
        return Ok(());
    };
    let mut stopped = None;
    let changed = fsutil::write_atomic_in_unless(&fsutil::tmp_dir_of(job)?, &to_file, |w| {
        match merge(kept, carried, w, Until::End) {
            Ok(true) => Ok(Commit::Yes),
            Ok(false) => Ok(Commit::No),
            Err(MergeError::Write(e)) => Err(e),
            Err(other) => {
                stopped = Some(other);
                Ok(Commit::No)
            }
        }
    })?;
    match stopped {
        None if changed => {
            crate::fault::step();
            Ok(())
        }
        None => Ok(()),
        Some(MergeError::OutOfOrder) => carry_in_memory(job, from, to, &moved),
        Some(MergeError::Read(e)) => Err(e),
        Some(MergeError::Write(e)) => Err(e).ctx("cannot write", &to_file),
    }
}

/// The records of `to_file` and those of `from_file` under one of `moved`, each checked to
/// come in path order; `None` when `from_file` does not exist.
fn open_both<'f>(
    from_file: &'f Path,
    to_file: &'f Path,
    moved: &'f HashSet<&Path>,
) -> Result<Option<(Ordered<'f, FileRecords<'f>>, Ordered<'f, FileRecords<'f>>)>> {
    let Some(carried) = open_lines(from_file)? else {
        return Ok(None);
    };
    let carried: FileRecords<'f> =
        Box::new(carried.filter(move |r| r.as_ref().map_or(true, |(p, _)| is_moved(moved, p))));
    let kept: FileRecords<'f> = match open_lines(to_file)? {
        Some(lines) => Box::new(lines),
        None => Box::new(std::iter::empty()),
    };
    Ok(Some((
        Ordered::new(kept, to_file),
        Ordered::new(carried, from_file),
    )))
}

/// A file's records, one at a time.
type FileRecords<'f> =
    Box<dyn Iterator<Item = std::result::Result<(PathBuf, Record), LineError>> + 'f>;

/// How far [`merge`] goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// To the first record it adds or changes (to learn whether there is one).
    FirstChange,
    /// To the end of both files.
    End,
}

/// Is `path` one of `moved` or below one?
fn is_moved(moved: &HashSet<&Path>, path: &Path) -> bool {
    path.ancestors().any(|a| moved.contains(a))
}

/// Why a merge stopped.
enum MergeError {
    /// A file's records are not in path order.
    OutOfOrder,
    /// A file could not be read or is damaged.
    Read(Error),
    /// The new file could not be written.
    Write(std::io::Error),
}

/// A file's records, checked to come in path order, each path once.
struct Ordered<'f, I> {
    lines: I,
    file: &'f Path,
    last: Option<PathBuf>,
}

impl<'f, I: Iterator<Item = std::result::Result<(PathBuf, Record), LineError>>> Ordered<'f, I> {
    fn new(lines: I, file: &'f Path) -> Self {
        Ordered {
            lines,
            file,
            last: None,
        }
    }

    /// The next record.
    fn next(&mut self) -> std::result::Result<Option<(PathBuf, Record)>, MergeError> {
        let Some(next) = self.lines.next() else {
            return Ok(None);
        };
        let (path, record) = next.map_err(|e| MergeError::Read(e.at(self.file)))?;
        if let Some(last) = &self.last
            && path_order(bytes(last), bytes(&path)) != Ordering::Less
        {
            return Err(MergeError::OutOfOrder);
        }
        self.last = Some(path.clone());
        Ok(Some((path, record)))
    }
}

fn bytes(p: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes()
}

/// Writes to `w` the file holding `kept`'s records and `carried`'s (`carried`'s winning a
/// path in both); true when a record of `carried` is new or different. With
/// [`Until::FirstChange`] it stops there.
fn merge<K, C>(
    mut kept: Ordered<'_, K>,
    mut carried: Ordered<'_, C>,
    w: &mut dyn Write,
    until: Until,
) -> std::result::Result<bool, MergeError>
where
    K: Iterator<Item = std::result::Result<(PathBuf, Record), LineError>>,
    C: Iterator<Item = std::result::Result<(PathBuf, Record), LineError>>,
{
    let write = |w: &mut dyn Write, (p, r): &(PathBuf, Record)| {
        write_line(w, p, r).map_err(MergeError::Write)
    };
    w.write_all(super::COLUMNS.join("\t").as_bytes())
        .and_then(|()| w.write_all(b"\n"))
        .map_err(MergeError::Write)?;
    let mut changed = false;
    let (mut k, mut c) = (kept.next()?, carried.next()?);
    loop {
        if changed && until == Until::FirstChange {
            return Ok(true);
        }
        let order = match (&k, &c) {
            (None, None) => return Ok(changed),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => path_order(bytes(&a.0), bytes(&b.0)),
        };
        match (order, k.take(), c.take()) {
            (Ordering::Less, Some(a), b) => {
                write(w, &a)?;
                (k, c) = (kept.next()?, b);
            }
            (Ordering::Greater, a, Some(b)) => {
                changed = true;
                write(w, &b)?;
                (k, c) = (a, carried.next()?);
            }
            (Ordering::Equal, Some(a), Some(b)) => {
                changed |= a.1 != b.1;
                write(w, &b)?;
                (k, c) = (kept.next()?, carried.next()?);
            }
            // Each order above comes with the records it names.
            (_, a, b) => (k, c) = (a, b),
        }
    }
}

/// [`carry`] of files not in path order: both read into memory.
fn carry_in_memory(job: &Path, from: u64, to: u64, moved: &HashSet<&Path>) -> Result<()> {
    let Some(old) = read(job, from)? else {
        return Ok(());
    };
    let new = read(job, to)?.unwrap_or_default();
    let carried: Records = old
        .into_iter()
        .filter(|(p, r)| is_moved(moved, p) && new.get(p) != Some(r))
        .collect();
    if !carried.is_empty() {
        // The later of two records for a path wins: `from`'s.
        let all: Records = new.into_iter().chain(carried).collect();
        write(job, to, &all)?;
        crate::fault::step();
    }
    Ok(())
}

/// Removes the checksums files of versions no longer on disk: a retired version's (left
/// when it was deleted, a thinned middle one's included), or one a crash left before its
/// version was renamed into place. Runs under the job lock, so no build is in progress.
fn prune_orphans(job: &Path) -> Result<()> {
    let on_disk: HashSet<u64> = std::fs::read_dir(job)
        .ctx("cannot list", job)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            crate::format::version::VersionName::parse(name.to_str()?).map(|v| v.n)
        })
        .collect();
    for n in versions_with_files(job)? {
        if !on_disk.contains(&n) {
            remove(job, n)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
