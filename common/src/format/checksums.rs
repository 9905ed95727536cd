//! `<job>/checksums/V<n>.tsv` (docs/format.md#checksums): the BLAKE3 of every regular file a
//! version physically holds, one record per path.
//!
//! Owns: the file's columns (`path`, `size`, `blake3`), reading it (by header, every damage an
//! error naming the file and the line, never a panic), rewriting it atomically (temp file in
//! `<job>/.tmp/`, fsync, rename, fsync of `checksums/`), the lookup rule, and the
//! [`Recorder`] a build fills.
//!
//! The lookup rule: the record of path `P` in version `V` is the record of `P` in the
//! checksums file of the version that physically holds `P`'s data (the version `V`'s vault
//! links lead to, or `V` itself). A vault link never has a record of its own; a hard link
//! within a version has one per path. Retirement moves the records under each entry it
//! moves forward into the next version's file before the data moves, so every retained file
//! keeps a findable record at every instant (the retiring version's file stays until the
//! version is deleted).
//!
//! Invariants: paths are escaped as every TSV field (docs/format.md#text-files), so any path
//! survives a round trip; a file is either the complete old or the complete new one; a file
//! is written in path order ([`path_order`]), which lets retirement merge two files a line
//! at a time ([`carry()`]). A file is read a line at a time, and a build holds its records in
//! a compact [`Table`]: memory is the records', never the file's text as well.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::format::tsv;
use crate::fsutil;

mod carry;
mod lines;
mod sampled;
mod table;

use lines::{LineError, RecordLines};
use sampled::OldRecords;

pub use carry::carry;
pub use table::{Table, path_order};

/// The columns this version writes, in order.
pub const COLUMNS: [&str; 3] = ["path", "size", "blake3"];

/// The folder of the checksums files in a job folder.
pub const DIR: &str = "checksums";

/// One file's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The file's apparent size in bytes.
    pub size: u64,
    /// BLAKE3 of its logical content (holes read as zeros).
    pub hash: [u8; 32],
}

impl Record {
    /// The hash as 64 lowercase hex digits (what `b3sum` prints).
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.hash).to_hex().to_string()
    }
}

/// A version's records: path (relative to the version root) → record.
pub type Records = BTreeMap<PathBuf, Record>;

/// `<job>/checksums/V<n>.tsv`.
pub fn file_of(job: &Path, n: u64) -> PathBuf {
    job.join(DIR).join(format!("V{n}.tsv"))
}

/// Reads version `n`'s records; `None` when it has no checksums file. A damaged file is
/// [`crate::error::Error::Damaged`] naming the file and the line. The file is read a line at a time, so
/// only the records are held (a million of them, not the file's text as well).
pub fn read(job: &Path, n: u64) -> Result<Option<Records>> {
    read_into(job, n)
}

/// [`read`] into a [`Table`] (compact: for lookups in a version of a million files).
pub fn read_table(job: &Path, n: u64) -> Result<Option<Table>> {
    read_into(job, n)
}

/// [`read`] into any collection of records.
fn read_into<C: FromIterator<(PathBuf, Record)>>(job: &Path, n: u64) -> Result<Option<C>> {
    let path = file_of(job, n);
    let Some(lines) = open_lines(&path)? else {
        return Ok(None);
    };
    lines
        .collect::<Result<C, LineError>>()
        .map(Some)
        .map_err(|e| e.at(&path))
}

/// Version file `path`'s records, read one at a time; `None` when there is no file.
fn open_lines(path: &Path) -> Result<Option<RecordLines<std::io::BufReader<fs::File>>>> {
    let file = match fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.ctx("cannot read checksums", path)?,
    };
    RecordLines::new(std::io::BufReader::with_capacity(1 << 16, file))
        .map(Some)
        .map_err(|e| e.at(path))
}

/// Parses a checksums file's text; the error names the line at fault.
pub fn parse(text: &str) -> Result<Records, String> {
    RecordLines::new(text.as_bytes())
        .and_then(|lines| lines.collect())
        .map_err(|e| match e {
            LineError::Bad(msg) => msg,
            LineError::Io(e) => e.to_string(),
        })
}

/// Renders records as the file's text: the header, then one line per path in path order.
pub fn render(records: &Records) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = render_to(records, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`render`] written to `w` line by line, so a file of a million records is never held
/// whole in memory (the records already are).
pub fn render_to(records: &Records, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    render_records_to(records.iter().map(|(p, r)| (p.as_path(), *r)), w)
}

/// Writes the header, then a line for each of `records` (given in path order).
fn render_records_to<'p>(
    records: impl Iterator<Item = (&'p Path, Record)>,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    w.write_all(COLUMNS.join("\t").as_bytes())?;
    w.write_all(b"\n")?;
    for (path, r) in records {
        write_line(w, path, &r)?;
    }
    Ok(())
}

/// One record's line.
fn write_line(w: &mut dyn std::io::Write, path: &Path, r: &Record) -> std::io::Result<()> {
    writeln!(
        w,
        "{}\t{}\t{}",
        tsv::escape_os(path.as_os_str()),
        r.size,
        r.hex()
    )
}

/// Rewrites version `n`'s checksums file atomically and durably: a temp file in
/// `<job>/.tmp/` (created when missing), fsync, rename into `checksums/` (created when
/// missing), fsync of `checksums/`.
pub fn write(job: &Path, n: u64, records: &Records) -> Result<()> {
    write_with(job, n, |w| render_to(records, w))
}

/// Stages version `n`'s checksums file from a [`Table`] (sorted first) in `staged`: its temp
/// file written in `<job>/.tmp/`, renamed into `checksums/` (created when missing) when the
/// caller commits the set with the version's other records ([`fsutil::Staged`]).
pub fn stage_table(
    staged: &mut fsutil::Staged,
    job: &Path,
    n: u64,
    table: &mut Table,
) -> Result<()> {
    table.normalize();
    ensure_dir(job)?;
    staged.add_in(&fsutil::tmp_dir_of(job)?, &file_of(job, n), |w| {
        table.render_to(w)
    })
}

/// Removes a checksums file left for version `n` by a build that never became visible (a
/// crash after the file was put in place, before the version was), durably: for a version
/// `n` made without checksums, whose files such records would not describe.
pub fn remove_stale(job: &Path, n: u64) -> Result<()> {
    let path = file_of(job, n);
    match fs::remove_file(&path) {
        Ok(()) => fsutil::fsync_dir(&job.join(DIR)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("cannot remove", &path),
    }
}

/// `<job>/checksums/`, created (and its creation made durable) when missing.
fn ensure_dir(job: &Path) -> Result<()> {
    let dir = job.join(DIR);
    if !dir.is_dir() && fsutil::create_metadata_dir(&dir)? {
        fsutil::fsync_dir(job)?;
    }
    Ok(())
}

/// [`write()`] of text written by `render`.
fn write_with(
    job: &Path,
    n: u64,
    render: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    ensure_dir(job)?;
    fsutil::write_atomic_in_with(&fsutil::tmp_dir_of(job)?, &file_of(job, n), render)
}

/// Removes version `n`'s checksums file (missing is fine).
pub fn remove(job: &Path, n: u64) -> Result<()> {
    let path = file_of(job, n);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx("cannot remove", &path),
        _ => Ok(()),
    }
}

/// The version numbers that have a checksums file, ascending (none without `checksums/`).
pub fn versions_with_files(job: &Path) -> Result<Vec<u64>> {
    let dir = job.join(DIR);
    let rd = match fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.ctx("cannot list", &dir)?,
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.ctx("cannot list", &dir)?;
        let name = e.file_name();
        let n = name
            .to_str()
            .and_then(|s| s.strip_prefix('V'))
            .and_then(|s| s.strip_suffix(".tsv"))
            .and_then(|s| s.parse::<u64>().ok());
        out.extend(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// The hash of a file's whole content, read from `file` (holes read as zeros).
pub fn hash_file(file: &fs::File) -> std::io::Result<Record> {
    use std::os::unix::fs::FileExt;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 1 << 20]);
    }
    BUF.with(|b| {
        let buf = &mut b.borrow_mut()[..];
        let mut h = blake3::Hasher::new();
        let mut size = 0u64;
        loop {
            match file.read_at(buf, size) {
                Ok(0) => break,
                Ok(n) => {
                    h.update(&buf[..n]);
                    size += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Record {
            size,
            hash: *h.finalize().as_bytes(),
        })
    })
}

/// What a build records: the new version's records, and the records of older versions it
/// looks up (each file read once, when first needed, into its sparse index: see
/// [`sampled`]). The new version's are a [`Table`]: a first copy of a million files holds a
/// million records until its file is written.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The new version's records.
    pub records: Table,
    /// Older versions' records by directory name (`None`: it has no checksums file).
    old: BTreeMap<String, Option<OldRecords>>,
}

impl Recorder {
    /// The record of `rel` in the checksums file of version dir `holder` of `job`, if any.
    pub fn lookup(&mut self, job: &Path, holder: &str, rel: &Path) -> Result<Option<Record>> {
        match self.holder(job, holder)? {
            Some(old) => old.get(rel),
            None => Ok(None),
        }
    }

    /// Does version dir `holder` of `job` have a checksums file?
    pub fn has_file(&mut self, job: &Path, holder: &str) -> Result<bool> {
        Ok(self.holder(job, holder)?.is_some())
    }

    /// Version dir `holder`'s records, opened on first use.
    fn holder(&mut self, job: &Path, holder: &str) -> Result<&mut Option<OldRecords>> {
        if !self.old.contains_key(holder) {
            let n = crate::format::version::VersionName::parse(holder).map(|v| v.n);
            let recs = match n {
                Some(n) => OldRecords::open(job, n)?,
                None => None,
            };
            self.old.insert(holder.to_owned(), recs);
        }
        Ok(self.old.entry(holder.to_owned()).or_default())
    }

    /// Forgets the new version's records at `rel` and below (an entry dropped from it).
    pub fn forget_under(&mut self, rel: &Path) {
        self.records.forget_under(rel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    fn rec(b: u8) -> Record {
        Record {
            size: b as u64,
            hash: *blake3::hash(&[b]).as_bytes(),
        }
    }

    #[test]
    fn round_trip_of_odd_paths() {
        let mut r = Records::new();
        r.insert(PathBuf::from(OsStr::from_bytes(b"a\tb\n\\c\xff")), rec(1));
        r.insert(PathBuf::from("d/e f"), rec(2));
        assert_eq!(parse(&render(&r)).expect("parses"), r);
        assert_eq!(render(&r).lines().count(), 3);
    }

    #[test]
    fn damage_names_the_line() {
        let mut r = Records::new();
        r.insert(PathBuf::from("x"), rec(1));
        r.insert(PathBuf::from("y"), rec(2));
        let good = render(&r);
        let bad_escape = good.replacen("y\t", "y\\q\t", 1);
        assert!(
            parse(&bad_escape)
                .expect_err("bad")
                .starts_with("line 3: path")
        );
        let cols = good.replacen("y\t", "y\textra\t", 1);
        assert!(parse(&cols).expect_err("bad").starts_with("line 3:"));
        let hex = good.replacen(&rec(1).hex(), "zz", 1);
        assert!(parse(&hex).expect_err("bad").starts_with("line 2: blake3"));
        let size = good.replacen("\t1\t", "\tone\t", 1);
        assert!(parse(&size).expect_err("bad").starts_with("line 2: size"));
        assert!(parse("").is_err());
    }

    #[test]
    fn a_file_is_read_line_by_line_with_its_columns_in_any_order() {
        let job = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(job.path().join(DIR)).expect("dir");
        let hex = rec(7).hex();
        let text = format!("blake3\tpath\tsize\n{hex}\ta/b\t9\n\n");
        std::fs::write(file_of(job.path(), 1), &text).expect("write");
        let read_back = read(job.path(), 1).expect("reads").expect("exists");
        let mut want = Records::new();
        want.insert(PathBuf::from("a/b"), Record { size: 9, ..rec(7) });
        assert_eq!(read_back, want);
        // A byte that is not UTF-8 is damage naming its line.
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"x\t\xff\t1\n");
        std::fs::write(file_of(job.path(), 2), &bytes).expect("write");
        let e = read(job.path(), 2).expect_err("damaged").to_string();
        assert!(e.contains("line 4: not UTF-8 text"), "{e}");
        assert!(read(job.path(), 3).expect("no file").is_none());
    }
}
