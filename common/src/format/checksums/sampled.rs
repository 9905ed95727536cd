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
//! [`Table`] instead, so a lookup never misses a record that is there; the file does not
//! change while a build holds it (the job lock keeps retirement, its only other writer,
//! out).

use std::cmp::Ordering;
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::lines::{Columns, RecordLines};
use super::{Record, Table, open_lines, path_order, read_table};
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
        let file = super::file_of(job, n);
        match Sampled::read(&file)? {
            Some(Some(sampled)) => Ok(Some(OldRecords::Sampled(sampled))),
            Some(None) => Ok(read_table(job, n)?.map(OldRecords::Whole)),
            None => Ok(None),
        }
    }

    /// The record of `rel`, if any.
    pub fn get(&mut self, rel: &Path) -> Result<Option<Record>> {
        match self {
            OldRecords::Whole(table) => Ok(table.get(rel)),
            OldRecords::Sampled(s) if s.lookups >= LOOKUPS_BEFORE_TABLE => {
                let mut table: Table = open_lines(&s.file)?
                    .into_iter()
                    .flatten()
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| e.at(&s.file))?;
                let found = table.get(rel);
                *self = OldRecords::Whole(table);
                Ok(found)
            }
            OldRecords::Sampled(s) => s.get(rel),
        }
    }
}

/// The sparse index of a checksums file in path order (see the module doc).
#[derive(Debug)]
pub struct Sampled {
    file: PathBuf,
    columns: Columns,
    /// Every [`STRIDE`]th record: its path's bytes, its line's byte offset and number.
    marks: Vec<(Box<[u8]>, u64, usize)>,
    lookups: usize,
}

impl Sampled {
    /// Reads `file` into its marks: `None` when there is no file, `Some(None)` when its
    /// records are not in path order. A damaged file is the error [`super::read`] gives.
    fn read(file: &Path) -> Result<Option<Option<Sampled>>> {
        let Some(mut lines) = open_lines(file)? else {
            return Ok(None);
        };
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
            lookups: 0,
        })))
    }

    /// The record of `rel`: read from the mark before it, at most [`STRIDE`] lines.
    fn get(&mut self, rel: &Path) -> Result<Option<Record>> {
        self.lookups += 1;
        let want = rel.as_os_str().as_bytes();
        let after = self
            .marks
            .partition_point(|(p, _, _)| path_order(p, want) != Ordering::Greater);
        let Some((_, offset, line)) = after.checked_sub(1).map(|i| &self.marks[i]) else {
            return Ok(None);
        };
        let mut f = std::fs::File::open(&self.file).ctx("cannot read checksums", &self.file)?;
        f.seek(SeekFrom::Start(*offset))
            .ctx("cannot read checksums", &self.file)?;
        let input = std::io::BufReader::with_capacity(1 << 13, f);
        let lines = RecordLines::resume(input, self.columns, *offset, *line);
        for next in lines.take(STRIDE) {
            let (path, record) = next.map_err(|e| e.at(&self.file))?;
            match path_order(path.as_os_str().as_bytes(), want) {
                Ordering::Less => continue,
                Ordering::Equal => return Ok(Some(record)),
                Ordering::Greater => return Ok(None),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
