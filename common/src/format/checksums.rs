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
//! survives a round trip; a file is either the complete old or the complete new one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result, show};
use crate::format::tsv;
use crate::fsutil;

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
/// [`Error::Damaged`] naming the file and the line. The file is read a line at a time, so
/// only the records are held (a million of them, not the file's text as well).
pub fn read(job: &Path, n: u64) -> Result<Option<Records>> {
    let path = file_of(job, n);
    let file = match fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.ctx("cannot read checksums", &path)?,
    };
    let damaged = |msg: String| Error::Damaged(format!("{}: {msg}", show(&path)));
    parse_lines(std::io::BufReader::with_capacity(1 << 16, file))
        .map(Some)
        .map_err(|e| match e {
            LineError::Io(e) => Error::Io {
                what: "cannot read checksums",
                path: path.clone(),
                source: e,
            },
            LineError::Bad(msg) => damaged(msg),
        })
}

/// Parses a checksums file's text; the error names the line at fault.
pub fn parse(text: &str) -> Result<Records, String> {
    parse_lines(text.as_bytes()).map_err(|e| match e {
        LineError::Bad(msg) => msg,
        LineError::Io(e) => e.to_string(),
    })
}

/// Why [`parse_lines`] stopped.
enum LineError {
    Io(std::io::Error),
    Bad(String),
}

/// The records of a checksums file read line by line: the header names the columns (in
/// any order, as [`tsv::Table`] reads them), every line has as many fields.
fn parse_lines(mut input: impl std::io::BufRead) -> Result<Records, LineError> {
    let bad = |line: usize, e: &dyn std::fmt::Display| LineError::Bad(format!("line {line}: {e}"));
    let mut buf = Vec::new();
    let mut next_line = |buf: &mut Vec<u8>| -> Result<bool, LineError> {
        buf.clear();
        let n = input.read_until(b'\n', buf).map_err(LineError::Io)?;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        Ok(n > 0)
    };
    let as_text = |buf: &[u8], line: usize| -> Result<String, LineError> {
        String::from_utf8(buf.to_vec()).map_err(|_| bad(line, &"not UTF-8 text"))
    };
    if !next_line(&mut buf)? || buf.is_empty() {
        return Err(bad(1, &tsv::TsvError::MissingHeader));
    }
    let header = as_text(&buf, 1)?;
    let columns = tsv::split(&header);
    let index = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| bad(1, &tsv::TsvError::MissingColumn(name.to_owned())))
    };
    let (path_at, size_at, hash_at) = (index("path")?, index("size")?, index("blake3")?);
    let width = columns.len();
    // Collected first: a file written in path order then builds the map in one pass.
    let mut out = Vec::new();
    let mut line = 1;
    while next_line(&mut buf)? {
        line += 1;
        if buf.is_empty() {
            continue;
        }
        let text = std::str::from_utf8(&buf).map_err(|_| bad(line, &"not UTF-8 text"))?;
        let fields = tsv::split(text);
        if fields.len() != width {
            return Err(bad(
                line,
                &tsv::TsvError::FieldCount {
                    expected: width,
                    found: fields.len(),
                },
            ));
        }
        let at = |col: &str, e: &dyn std::fmt::Display| {
            LineError::Bad(format!("line {line}: {col}: {e}"))
        };
        let path = PathBuf::from(tsv::unescape_os(fields[path_at]).map_err(|e| at("path", &e))?);
        if path.as_os_str().is_empty() || path.is_absolute() {
            return Err(at("path", &"not a relative path"));
        }
        let size_text = fields[size_at];
        let size = size_text
            .parse::<u64>()
            .map_err(|_| at("size", &format!("`{size_text}` is not a whole number")))?;
        let hex = fields[hash_at];
        let hash = blake3::Hash::from_hex(hex)
            .map_err(|_| at("blake3", &format!("`{hex}` is not 64 hex digits")))?;
        out.push((
            path,
            Record {
                size,
                hash: *hash.as_bytes(),
            },
        ));
    }
    Ok(out.into_iter().collect())
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
    w.write_all(COLUMNS.join("\t").as_bytes())?;
    w.write_all(b"\n")?;
    for (path, r) in records {
        writeln!(
            w,
            "{}\t{}\t{}",
            tsv::escape_os(path.as_os_str()),
            r.size,
            r.hex()
        )?;
    }
    Ok(())
}

/// Rewrites version `n`'s checksums file atomically and durably: a temp file in
/// `<job>/.tmp/` (created when missing), fsync, rename into `checksums/` (created when
/// missing), fsync of `checksums/`.
pub fn write(job: &Path, n: u64, records: &Records) -> Result<()> {
    let dir = job.join(DIR);
    if !dir.is_dir() && fsutil::create_metadata_dir(&dir)? {
        fsutil::fsync_dir(job)?;
    }
    fsutil::write_atomic_in_with(&fsutil::tmp_dir_of(job)?, &file_of(job, n), |w| {
        render_to(records, w)
    })
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

/// Retirement (docs/format.md#checksums): moves the records under each of `moved` (files or
/// whole directories) from version `from`'s file into version `to`'s (rewritten atomically
/// and durably when anything is added), before any link is retargeted or data moves. `from`'s file stays while
/// `from` exists, so a record is findable at every instant; the files of versions already
/// deleted are removed here. Idempotent: a record already in `to` is replaced by `from`'s.
pub fn carry(job: &Path, from: u64, to: u64, moved: &[PathBuf]) -> Result<()> {
    prune_orphans(job)?;
    let Some(old) = read(job, from)? else {
        return Ok(());
    };
    let new = read(job, to)?.unwrap_or_default();
    let mut carried = Vec::new();
    for rel in moved {
        for (path, rec) in under(&old, rel) {
            if new.get(path) != Some(rec) {
                carried.push((path.clone(), *rec));
            }
        }
    }
    if !carried.is_empty() {
        // In one pass (the later of two records for a path wins: `from`'s).
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
    let on_disk: std::collections::HashSet<u64> = fs::read_dir(job)
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

/// The records at `rel` or below it.
pub fn under<'r>(
    records: &'r Records,
    rel: &Path,
) -> impl Iterator<Item = (&'r PathBuf, &'r Record)> {
    let start = rel.to_path_buf();
    records
        .range(start..)
        .take_while(move |(p, _)| p.starts_with(rel))
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
/// looks up (each file read once, when first needed).
#[derive(Debug, Default)]
pub struct Recorder {
    /// The new version's records.
    pub records: Records,
    /// Older versions' records by directory name (`None`: it has no checksums file).
    old: BTreeMap<String, Option<Records>>,
}

impl Recorder {
    /// The record of `rel` in the checksums file of version dir `holder` of `job`, if any.
    pub fn lookup(&mut self, job: &Path, holder: &str, rel: &Path) -> Result<Option<Record>> {
        if !self.old.contains_key(holder) {
            let n = crate::format::version::VersionName::parse(holder).map(|v| v.n);
            let recs = match n {
                Some(n) => read(job, n)?,
                None => None,
            };
            self.old.insert(holder.to_owned(), recs);
        }
        Ok(self
            .old
            .get(holder)
            .and_then(|r| r.as_ref())
            .and_then(|r| r.get(rel))
            .copied())
    }

    /// Does version dir `holder` of `job` have a checksums file?
    pub fn has_file(&mut self, job: &Path, holder: &str) -> Result<bool> {
        self.lookup(job, holder, Path::new(""))?;
        Ok(self.old.get(holder).is_some_and(|r| r.is_some()))
    }

    /// Forgets the new version's records at `rel` and below (an entry dropped from it).
    pub fn forget_under(&mut self, rel: &Path) {
        let gone: Vec<PathBuf> = under(&self.records, rel).map(|(p, _)| p.clone()).collect();
        for p in gone {
            self.records.remove(&p);
        }
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

    #[test]
    fn carry_moves_records_under_a_path_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = dir.path();
        let mut old = Records::new();
        old.insert(PathBuf::from("d/a"), rec(1));
        old.insert(PathBuf::from("d/b/c"), rec(2));
        old.insert(PathBuf::from("d2"), rec(3));
        old.insert(PathBuf::from("e"), rec(4));
        write(job, 1, &old).expect("write");
        let mut new = Records::new();
        new.insert(PathBuf::from("z"), rec(5));
        write(job, 2, &new).expect("write");
        write(job, 9, &new).expect("write"); // no V9 on disk: an orphan
        for n in [1, 2] {
            fs::create_dir(job.join(format!("V{n}-20261201T000000Z"))).expect("mkdir");
        }
        carry(job, 1, 2, &[PathBuf::from("d")]).expect("carry");
        carry(job, 1, 2, &[PathBuf::from("d")]).expect("again");
        let got = read(job, 2).expect("read").expect("exists");
        let keys: Vec<_> = got.keys().map(|p| p.display().to_string()).collect();
        assert_eq!(keys, ["d/a", "d/b/c", "z"]);
        assert_eq!(versions_with_files(job).expect("list"), [1, 2]);
        assert!(
            fs::read_dir(job.join(".tmp"))
                .expect("tmp")
                .next()
                .is_none()
        );
    }
}
