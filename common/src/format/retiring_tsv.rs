//! `<job>/retiring.tsv` (docs/retirement.md): the mode and times of every directory of a
//! retained version that a retirement is about to change, so that the run that finishes it
//! puts them back exactly, even after a crash.
//!
//! Owns the file's format and its reading, writing and removal (when it is written and put
//! back is the engine's: `engine/retire/dir_times.rs`). Format: a first line
//! `# retiring <dir>` naming the version being retired, then one line per directory:
//! `path<TAB>mode<TAB>atime_s<TAB>atime_ns<TAB>mtime_s<TAB>mtime_ns`, the path relative to
//! the job folder (TSV-escaped), the mode in octal.
//!
//! Invariants: a record whose first line names another version than the one asked for is
//! stale and reads as no record ([`parse`] returns `None`); the file is replaced atomically,
//! never edited in place.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result, show};
use crate::format::tsv;
use crate::fsutil;

/// The record's file name in the job folder.
pub const FILE: &str = "retiring.tsv";

/// One directory's state to put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirState {
    /// Relative to the job folder (`V7-…/a/b`).
    pub rel: PathBuf,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// (seconds, nanoseconds).
    pub mtime: (i64, i64),
}

impl DirState {
    /// The state of `meta`, to be put back at `rel`.
    pub fn of(rel: PathBuf, meta: &fs::Metadata) -> DirState {
        DirState {
            rel,
            mode: meta.mode() & 0o7777,
            atime: (meta.atime(), meta.atime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// The text of the record for retiring `vo`.
pub fn render(vo: &str, dirs: &[DirState]) -> String {
    let mut text = format!("# retiring {vo}\n");
    for d in dirs {
        let line = tsv::join(&[
            &tsv::escape_bytes(d.rel.as_os_str().as_bytes()),
            &format!("{:o}", d.mode),
            &d.atime.0.to_string(),
            &d.atime.1.to_string(),
            &d.mtime.0.to_string(),
            &d.mtime.1.to_string(),
        ]);
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Parses a record's text for retiring `vo`: `None` when it names another version (stale);
/// the error is a message naming the line at fault (`line N: why`, N counted from 1).
pub fn parse(text: &str, vo: &str) -> std::result::Result<Option<Vec<DirState>>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(&format!("# retiring {vo}")) {
        return Ok(None);
    }
    let bad = |n: usize, why: &str| format!("line {}: {why}", n + 2);
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let f = tsv::split(line);
        if f.len() != 6 {
            return Err(bad(n, "expected 6 fields"));
        }
        let rel = tsv::unescape_os(f[0]).map_err(|e| bad(n, &e.to_string()))?;
        let num = |s: &str| s.parse::<i64>().map_err(|_| bad(n, "not a number"));
        out.push(DirState {
            rel: PathBuf::from(rel),
            mode: u32::from_str_radix(f[1], 8).map_err(|_| bad(n, "bad mode"))?,
            atime: (num(f[2])?, num(f[3])?),
            mtime: (num(f[4])?, num(f[5])?),
        });
    }
    Ok(Some(out))
}

/// Writes the record for retiring `vo` durably (replacing any older one).
pub fn write(job: &Path, vo: &str, dirs: &[DirState]) -> Result<()> {
    fsutil::write_atomic(&job.join(FILE), render(vo, dirs).as_bytes())
}

/// The record for retiring `vo`, if there is one (a missing or stale record is `None`); a
/// record that does not parse is [`Error::Damaged`], naming the file and the line.
pub fn read(job: &Path, vo: &str) -> Result<Option<Vec<DirState>>> {
    let path = job.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("cannot read", &path),
    };
    parse(&text, vo).map_err(|msg| Error::Damaged(format!("{} {msg}", show(&path))))
}

/// Removes the record (durably; a missing one is no error).
pub fn remove(job: &Path) -> Result<()> {
    let path = job.join(FILE);
    match fs::remove_file(&path) {
        Ok(()) => fsutil::fsync_dir(job),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("cannot remove", &path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_dirs() -> Vec<DirState> {
        vec![
            DirState {
                rel: PathBuf::from("V3-x/a\tb/c"),
                mode: 0o755,
                atime: (1, 2),
                mtime: (-3, 999_999_999),
            },
            DirState {
                rel: PathBuf::from("V4-y"),
                mode: 0o1777,
                atime: (0, 0),
                mtime: (1_700_000_000, 5),
            },
        ]
    }

    #[test]
    fn renders_byte_exact() {
        assert_eq!(
            render("V2-z", &two_dirs()),
            "# retiring V2-z\n\
             V3-x/a\\tb/c\t755\t1\t2\t-3\t999999999\n\
             V4-y\t1777\t0\t0\t1700000000\t5\n"
        );
        assert_eq!(render("V2-z", &[]), "# retiring V2-z\n");
    }

    #[test]
    fn parse_round_trips_and_names_the_line_at_fault() {
        let text = render("V2-z", &two_dirs());
        assert_eq!(parse(&text, "V2-z"), Ok(Some(two_dirs())));
        assert_eq!(parse(&text, "V9-z"), Ok(None), "stale");
        assert_eq!(parse("", "V2-z"), Ok(None));
        let bad = "# retiring V2-z\nV3\t755\t1\t2\t3\t4\nV4\t9\t1\t2\t3\t4\n";
        assert_eq!(parse(bad, "V2-z"), Err("line 3: bad mode".into()));
        let short = "# retiring V2-z\nV3\t755\t1\n";
        assert_eq!(
            parse(short, "V2-z"),
            Err("line 2: expected 6 fields".into())
        );
        let nan = "# retiring V2-z\nV3\t755\t1\tx\t3\t4\n";
        assert_eq!(parse(nan, "V2-z"), Err("line 2: not a number".into()));
    }

    #[test]
    fn round_trip_and_stale_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "V2-z", &two_dirs()).expect("write");
        assert_eq!(read(dir.path(), "V2-z").expect("read"), Some(two_dirs()));
        assert_eq!(read(dir.path(), "V9-z").expect("read"), None, "stale");
        remove(dir.path()).expect("remove");
        assert_eq!(read(dir.path(), "V2-z").expect("read"), None);
        remove(dir.path()).expect("twice");
    }

    #[test]
    fn a_damaged_record_names_its_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE), "# retiring V2-z\nV3\t755\n").expect("write");
        let err = read(dir.path(), "V2-z").expect_err("damaged").to_string();
        assert!(
            err.contains("retiring.tsv line 2: expected 6 fields"),
            "{err}"
        );
    }
}
