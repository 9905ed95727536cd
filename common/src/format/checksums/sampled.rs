//! [`Sampled`]: an older version's checksums file, for a build's lookups of a few of its
//! records without holding them all.
//!
//! Owns: the sparse index of a file in path order. The file is read once (every line
//! checked, as [`super::read`] checks it) keeping every [`STRIDE`]th record's path and its
//! line's byte offset; a lookup seeks to the mark before the path and reads at most
//! [`STRIDE`] lines from there. A rescan that finds a racily clean file (docs/design.md)
//! looks up its record in the version holding it: with a million records that is about
//! 1 MiB of marks instead of a 100 MiB [`Table`].
//!
//! Invariants: a file not in path order (never written so by this program) is read into a
//! [`Table`] instead, so a lookup never misses a record that is there. The marks belong to
//! one file: a lookup that finds another file under the name (a retirement replaced it
//! while a restore, which takes no job lock, was looking up) reads the new one's marks
//! first. Files are only ever replaced whole (renamed into place), never changed in place.

use std::cmp::Ordering;
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::lines::{Columns, RecordLines};
use super::{Record, Table, open_lines, path_order};
use crate::error::{IoContext, Result};

/// One mark every this many records.
pub const STRIDE: usize = 64;

/// After this many lookups in one file the whole file is read into a [`Table`]: many
/// lookups (an attribute change on every file) are cheaper there.
const LOOKUPS_BEFORE_TABLE: usize = 4096;

/// An older version's records, as a build looks them up.
#[derive(Debug)]
pub enum OldRecords {
    Sampled(Sampled),
    Whole(Table),
}

impl OldRecords {
    /// Version `n`'s records in job folder `job`; `None` when it has no checksums file.
    pub fn open(job: &Path, n: u64) -> Result<Option<OldRecords>> {
        OldRecords::open_file(&super::file_of(job, n))
    }

    /// The file `file`'s records; `None` when there is no file.
    fn open_file(file: &Path) -> Result<Option<OldRecords>> {
        match Sampled::read(file)? {
            Some(Some(sampled)) => Ok(Some(OldRecords::Sampled(sampled))),
            Some(None) => whole(file).map(|t| Some(OldRecords::Whole(t))),
            None => Ok(None),
        }
    }

    /// The record of `rel`, if any.
    pub fn get(&mut self, rel: &Path) -> Result<Option<Record>> {
        match self {
            OldRecords::Whole(table) => Ok(table.get(rel)),
            OldRecords::Sampled(s) if s.lookups >= LOOKUPS_BEFORE_TABLE => {
                let mut table = whole(&s.file)?;
                let found = table.get(rel);
                *self = OldRecords::Whole(table);
                Ok(found)
            }
            OldRecords::Sampled(s) => match s.get(rel)? {
                Lookup::Done(found) => Ok(found),
                // Replaced since its marks were read: the new file's marks, then the
                // lookup; replaced again meanwhile, the whole file.
                Lookup::Replaced => {
                    let file = s.file.clone();
                    match OldRecords::open_file(&file)? {
                        None => {
                            *self = OldRecords::Whole(Table::new());
                            Ok(None)
                        }
                        Some(OldRecords::Sampled(mut again)) => match again.get(rel)? {
                            Lookup::Done(found) => {
                                *self = OldRecords::Sampled(again);
                                Ok(found)
                            }
                            Lookup::Replaced => {
                                let mut table = whole(&file)?;
                                let found = table.get(rel);
                                *self = OldRecords::Whole(table);
                                Ok(found)
                            }
                        },
                        Some(whole) => {
                            *self = whole;
                            self.get(rel)
                        }
                    }
                }
            },
        }
    }
}

/// The records of `file` in a [`Table`] (none when it is gone).
fn whole(file: &Path) -> Result<Table> {
    open_lines(file)?
        .into_iter()
        .flatten()
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.at(file))
}

/// What a lookup through the marks came to.
enum Lookup {
    Done(Option<Record>),
    /// The file under the name is not the one the marks were read from.
    Replaced,
}

/// Which file the marks were read from: device, inode, size, modification time.
type Identity = (u64, u64, u64, i64, i64);

fn identity(m: &std::fs::Metadata) -> Identity {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())
}

/// The sparse index of a checksums file in path order (see the module doc).
#[derive(Debug)]
pub struct Sampled {
    file: PathBuf,
    columns: Columns,
    /// Every [`STRIDE`]th record: its path's bytes, its line's byte offset and number.
    marks: Vec<(Box<[u8]>, u64, usize)>,
    /// The file they were read from.
    read_from: Identity,
    lookups: usize,
}

impl Sampled {
    /// Reads `file` into its marks: `None` when there is no file, `Some(None)` when its
    /// records are not in path order. A damaged file is the error [`super::read`] gives.
    fn read(file: &Path) -> Result<Option<Option<Sampled>>> {
        let opened = match std::fs::File::open(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other.ctx("cannot read checksums", file)?,
        };
        let read_from = identity(&opened.metadata().ctx("cannot read checksums", file)?);
        let mut lines = RecordLines::new(std::io::BufReader::with_capacity(1 << 16, opened))
            .map_err(|e| e.at(file))?;
        let mut marks = Vec::new();
        let mut last: Option<PathBuf> = None;
        let mut count = 0usize;
        while let Some(next) = lines.next() {
            let (path, _) = next.map_err(|e| e.at(file))?;
            let bytes = path.as_os_str().as_bytes();
            if last
                .as_ref()
                .is_some_and(|l| path_order(l.as_os_str().as_bytes(), bytes) != Ordering::Less)
            {
                return Ok(Some(None));
            }
            if count.is_multiple_of(STRIDE) {
                let (offset, line) = lines.position();
                marks.push((Box::from(bytes), offset, line));
            }
            count += 1;
            last = Some(path);
        }
        Ok(Some(Some(Sampled {
            file: file.to_path_buf(),
            columns: lines.columns(),
            marks,
            read_from,
            lookups: 0,
        })))
    }

    /// The record of `rel`: read from the mark before it, at most [`STRIDE`] lines.
    fn get(&mut self, rel: &Path) -> Result<Lookup> {
        self.lookups += 1;
        let want = rel.as_os_str().as_bytes();
        let mut f = match std::fs::File::open(&self.file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lookup::Replaced),
            other => other.ctx("cannot read checksums", &self.file)?,
        };
        let now = f.metadata().ctx("cannot read checksums", &self.file)?;
        if identity(&now) != self.read_from {
            return Ok(Lookup::Replaced);
        }
        let after = self
            .marks
            .partition_point(|(p, _, _)| path_order(p, want) != Ordering::Greater);
        let Some((_, offset, line)) = after.checked_sub(1).map(|i| &self.marks[i]) else {
            return Ok(Lookup::Done(None));
        };
        f.seek(SeekFrom::Start(*offset))
            .ctx("cannot read checksums", &self.file)?;
        let input = std::io::BufReader::with_capacity(1 << 13, f);
        let lines = RecordLines::resume(input, self.columns, *offset, *line);
        for next in lines.take(STRIDE) {
            let (path, record) = next.map_err(|e| e.at(&self.file))?;
            match path_order(path.as_os_str().as_bytes(), want) {
                Ordering::Less => continue,
                Ordering::Equal => return Ok(Lookup::Done(Some(record))),
                Ordering::Greater => return Ok(Lookup::Done(None)),
            }
        }
        Ok(Lookup::Done(None))
    }
}

#[cfg(test)]
mod tests;
