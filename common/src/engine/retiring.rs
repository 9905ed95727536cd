//! The second half of the `retiring` mark: `<job>/retiring.tsv`, the mode and times of
//! every directory of a retained version that a retirement is about to change, recorded
//! (durably) before the first change, so that even after a crash the run that finishes the
//! retirement puts them back exactly (I5: a directory's mtime is part of the version).
//!
//! Owns: the record's format and its life: written after job.toml's `state.retiring` names
//! the version and before any link or entry changes; read by the run that resumes; removed
//! after the mark is cleared. A record naming another version than the mark is stale (a
//! crash between writing a record and the mark's clearing) and is ignored.
//!
//! Format: a first line `# retiring <dir>`, then one line per directory:
//! `path<TAB>mode<TAB>atime_s<TAB>atime_ns<TAB>mtime_s<TAB>mtime_ns`, the path relative to
//! the job folder (TSV-escaped), the mode in octal.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

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

    /// Puts mode and times back on `<job>/<rel>` when it is a directory (gone or replaced:
    /// nothing to do). Returns whether it did.
    pub fn put_back(&self, job: &Path) -> Result<bool> {
        let path = job.join(&self.rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return Ok(false);
        };
        if !meta.is_dir() {
            return Ok(false);
        }
        if meta.mode() & 0o7777 != self.mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(self.mode))
                .ctx("cannot restore the mode of", &path)?;
        }
        let ts = |(s, ns): (i64, i64)| TimeSpec::new(s, ns);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &ts(self.atime),
            &ts(self.mtime),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from)
        .ctx("cannot set times of", &path)?;
        Ok(true)
    }
}

/// Writes the record for retiring `vo` durably (replacing any older one).
pub fn write(job: &Path, vo: &str, dirs: &[DirState]) -> Result<()> {
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
    fsutil::write_atomic(&job.join(FILE), text.as_bytes())
}

/// The record for retiring `vo`, if there is one (a missing or stale record is `None`).
pub fn read(job: &Path, vo: &str) -> Result<Option<Vec<DirState>>> {
    let path = job.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("cannot read", &path),
    };
    let mut lines = text.lines();
    if lines.next() != Some(&format!("# retiring {vo}")) {
        return Ok(None);
    }
    let bad =
        |n: usize, why: &str| Error::Damaged(format!("{} line {}: {why}", show(&path), n + 2));
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

/// Removes the record (after the mark is cleared).
pub fn remove(job: &Path) -> Result<()> {
    let path = job.join(FILE);
    match fs::remove_file(&path) {
        Ok(()) => fsutil::fsync_dir(job),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("cannot remove", &path),
    }
}

/// Puts every recorded directory back and makes it all durable, so a power loss after the
/// mark is cleared cannot bring a retirement's times back. One `syncfs(2)` of the vault's
/// filesystem makes the links, the moves and the times durable together: one journal
/// commit, where an fsync per directory would cost one each.
pub fn put_back_all(job: &Path, dirs: &[DirState]) -> Result<()> {
    for d in dirs {
        d.put_back(job)?;
    }
    let f = fs::File::open(job).ctx("cannot open", job)?;
    nix::unistd::syncfs(&f)
        .map_err(std::io::Error::from)
        .ctx("cannot syncfs", job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_stale_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dirs = vec![
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
        ];
        write(dir.path(), "V2-z", &dirs).expect("write");
        assert_eq!(read(dir.path(), "V2-z").expect("read"), Some(dirs));
        assert_eq!(read(dir.path(), "V9-z").expect("read"), None, "stale");
        remove(dir.path()).expect("remove");
        assert_eq!(read(dir.path(), "V2-z").expect("read"), None);
        remove(dir.path()).expect("twice");
    }
}
