//! [`Table`]: a version's checksum records held compactly, for the build that makes them
//! and for the lookups it does in older versions' files.
//!
//! Owns: the records' layout in memory (one byte arena, one offset per record) and the
//! path order they are kept and written in.
//!
//! Why not a map: a first copy of a million files holds a million records until its
//! checksums file is written. As a `BTreeMap<PathBuf, Record>` that was some 150 bytes a
//! file (a path in its own allocation, the tree's nodes) and twice that while a batch was
//! taken in; here a record is its path's bytes, 4 bytes of length, 40 of record and an
//! 8-byte offset, with no allocation of its own.
//!
//! Invariants:
//! - `rows[..sorted]` are in [`path_order`] with no path twice; `rows[sorted..]` (the tail)
//!   are in the order they were recorded. A build records in walk order, which is path
//!   order, so the tail is usually empty; [`Table::normalize`] sorts it in.
//! - The later record of a path wins (a path recorded again replaces the earlier record).
//! - Paths are relative and normal (no `.`, `..`, empty or trailing components): the
//!   [`crate::format::relpath::RelPath`]s of a build, or a checksums file's paths.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::Record;

/// The order of records in a checksums file, on paths' bytes: that of [`Path`]'s
/// comparison (component by component) for normal relative paths, computed as a byte
/// comparison in which `/` sorts before every other byte (a name holds no NUL).
pub fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => key(a[i]).cmp(&key(b[i])),
        None => a.len().cmp(&b.len()),
    }
}

/// Is `path` `prefix` or below it (component-wise; an empty prefix holds everything)?
fn is_under(path: &[u8], prefix: &[u8]) -> bool {
    prefix.is_empty()
        || (path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/'))
}

/// How long the unsorted tail may grow before a lookup sorts it in rather than scanning it.
const TAIL_SCAN_MAX: usize = 4096;

/// A version's records: path → [`Record`], compact (see the module doc).
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// Each record: its path's length (u32, little-endian), the path's bytes, the size
    /// (u64, little-endian) and the hash.
    arena: Vec<u8>,
    /// Where each live record starts in `arena`.
    rows: Vec<u64>,
    /// How many of `rows` are sorted (see the invariants).
    sorted: usize,
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table::default()
    }

    /// The record starting at `at`: its path's bytes and the record.
    fn row(&self, at: u64) -> (&[u8], Record) {
        let path = row_path(&self.arena, at);
        let end = at as usize + 4 + path.len();
        let mut size = [0u8; 8];
        size.copy_from_slice(&self.arena[end..end + 8]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&self.arena[end + 8..end + 40]);
        let record = Record {
            size: u64::from_le_bytes(size),
            hash,
        };
        (path, record)
    }

    fn path_of(&self, at: u64) -> &[u8] {
        row_path(&self.arena, at)
    }

    /// Records `record` for `path` (replacing an earlier record of it).
    pub fn insert(&mut self, path: &Path, record: Record) {
        let bytes = path.as_os_str().as_bytes();
        let at = self.arena.len() as u64;
        // A path is far below 4 GiB (PATH_MAX is per call, not per path, but no tree holds
        // a path of a million components).
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.arena.extend_from_slice(&len.to_le_bytes());
        self.arena.extend_from_slice(&bytes[..len as usize]);
        self.arena.extend_from_slice(&record.size.to_le_bytes());
        self.arena.extend_from_slice(&record.hash);
        let in_order = self.sorted == self.rows.len()
            && self
                .rows
                .last()
                .is_none_or(|&last| path_order(self.path_of(last), bytes) == Ordering::Less);
        self.rows.push(at);
        if in_order {
            self.sorted += 1;
        }
    }

    /// Sorts the tail in: afterwards every row is in path order, the later of two records
    /// of a path kept.
    pub fn normalize(&mut self) {
        if self.sorted == self.rows.len() {
            return;
        }
        let mut rows = std::mem::take(&mut self.rows);
        // Stable: of equal paths, the one recorded later stays after.
        rows.sort_by(|&a, &b| path_order(self.path_of(a), self.path_of(b)));
        let mut kept: Vec<u64> = Vec::with_capacity(rows.len());
        for at in rows {
            match kept.last_mut() {
                Some(last) if self.path_of(*last) == self.path_of(at) => *last = at,
                _ => kept.push(at),
            }
        }
        self.sorted = kept.len();
        self.rows = kept;
    }

    /// The record of `path`, if any.
    pub fn get(&mut self, path: &Path) -> Option<Record> {
        if self.rows.len() - self.sorted > TAIL_SCAN_MAX {
            self.normalize();
        }
        self.find(path.as_os_str().as_bytes())
    }

    /// [`Table::get`] without sorting: the tail is scanned (latest first).
    fn find(&self, want: &[u8]) -> Option<Record> {
        let tail = self.rows[self.sorted..]
            .iter()
            .rev()
            .map(|&at| self.row(at))
            .find(|(p, _)| *p == want);
        if let Some((_, r)) = tail {
            return Some(r);
        }
        let sorted = &self.rows[..self.sorted];
        sorted
            .binary_search_by(|&at| path_order(self.path_of(at), want))
            .ok()
            .map(|i| self.row(sorted[i]).1)
    }

    /// Forgets the records at `rel` and below it.
    pub fn forget_under(&mut self, rel: &Path) {
        let prefix = rel.as_os_str().as_bytes();
        if self.rows.len() - self.sorted > TAIL_SCAN_MAX {
            self.normalize();
        }
        let sorted = &self.rows[..self.sorted];
        let start = sorted.partition_point(|&at| path_order(self.path_of(at), prefix).is_lt());
        let len = sorted[start..]
            .iter()
            .take_while(|&&at| is_under(self.path_of(at), prefix))
            .count();
        self.rows.drain(start..start + len);
        self.sorted -= len;
        let tail = self.rows.split_off(self.sorted);
        let arena = &self.arena;
        self.rows.extend(
            tail.into_iter()
                .filter(|&at| !is_under(row_path(arena, at), prefix)),
        );
    }

    /// How many records (a path recorded twice counts once after [`Table::normalize`]).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No records?
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The records in path order, sorted first.
    pub fn iter(&mut self) -> impl Iterator<Item = (&Path, Record)> {
        self.normalize();
        self.iter_sorted()
    }

    /// The records in path order: the table must be normalized.
    fn iter_sorted(&self) -> impl Iterator<Item = (&Path, Record)> {
        debug_assert_eq!(self.sorted, self.rows.len());
        self.rows.iter().map(|&at| {
            let (p, r) = self.row(at);
            (Path::new(OsStr::from_bytes(p)), r)
        })
    }

    /// Where `path`'s record is in path order (sorted first), if it has one: for
    /// [`Table::at`].
    pub fn position(&mut self, path: &Path) -> Option<usize> {
        self.normalize();
        let want = path.as_os_str().as_bytes();
        self.rows
            .binary_search_by(|&at| path_order(self.path_of(at), want))
            .ok()
    }

    /// The record at position `i` of a sorted table ([`Table::position`]).
    pub fn at(&self, i: usize) -> Record {
        self.row(self.rows[i]).1
    }

    /// Writes the table as a checksums file's text to `w` (sorted first).
    pub fn render_to(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.normalize();
        super::render_records_to(self.iter_sorted(), w)
    }
}

/// The path of the record at `at` in a [`Table`]'s arena.
fn row_path(arena: &[u8], at: u64) -> &[u8] {
    let at = at as usize;
    let mut len = [0u8; 4];
    len.copy_from_slice(&arena[at..at + 4]);
    &arena[at + 4..at + 4 + u32::from_le_bytes(len) as usize]
}

impl FromIterator<(std::path::PathBuf, Record)> for Table {
    fn from_iter<I: IntoIterator<Item = (std::path::PathBuf, Record)>>(iter: I) -> Table {
        let mut t = Table::new();
        for (p, r) in iter {
            t.insert(&p, r);
        }
        t
    }
}

#[cfg(test)]
mod tests;
