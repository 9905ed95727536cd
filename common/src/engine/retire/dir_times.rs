//! The second half of the `retiring` mark: the mode and times of every directory of a
//! retained version that a retirement is about to change, recorded durably before the first
//! change, so that even after a crash the run that finishes the retirement puts them back
//! exactly (I5: a directory's mtime is part of the version).
//!
//! Owns the record's life (its format, `<job>/retiring.tsv`, is
//! [`crate::format::retiring_tsv`]'s): gathered and written ([`Recorder`]) after job.toml's
//! `state.retiring` names the version and before any link or entry changes; read back by
//! the run that resumes ([`resumed`]); put back once the data has moved ([`put_back_all`]);
//! removed after the mark is cleared ([`forget`]).
//!
//! Invariants: a record naming another version than the mark is stale (a crash between
//! writing a record and the mark's clearing) and is ignored; a run that resumes keeps the
//! record the crashed run wrote, never a new one (its directories may already have changed).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::error::{IoContext, Result};
use crate::fault;
use crate::format::retiring_tsv::{self, DirState};

/// The record a crashed run wrote for retiring `vo`, if any (a missing or stale record is
/// `None`).
pub fn resumed(job: &Path, vo: &str) -> Result<Option<Vec<DirState>>> {
    retiring_tsv::read(job, vo)
}

/// The directories to record, gathered before anything changes: each one's state is read
/// once, the first time it is noted.
#[derive(Default)]
pub struct Recorder {
    dirs: BTreeMap<PathBuf, fs::Metadata>,
}

impl Recorder {
    /// Notes the directory to be put back at `rel` (relative to the job folder) with the
    /// mode and times `from` has now.
    pub fn note(&mut self, rel: PathBuf, from: &Path) -> Result<()> {
        if let Entry::Vacant(e) = self.dirs.entry(rel) {
            e.insert(fs::symlink_metadata(from).ctx("cannot inspect", from)?);
        }
        Ok(())
    }

    /// Writes the record for retiring `vo` durably and returns it.
    pub fn save(self, job: &Path, vo: &str) -> Result<Vec<DirState>> {
        let rec: Vec<DirState> = self
            .dirs
            .into_iter()
            .map(|(rel, m)| DirState::of(rel, &m))
            .collect();
        retiring_tsv::write(job, vo, &rec)?;
        fault::step();
        Ok(rec)
    }
}

/// Puts mode and times back on `<job>/<rel>` when it is a directory (gone or replaced:
/// nothing to do). Returns whether it did.
pub fn put_back(job: &Path, dir: &DirState) -> Result<bool> {
    let path = job.join(&dir.rel);
    let Ok(meta) = fs::symlink_metadata(&path) else {
        return Ok(false);
    };
    if !meta.is_dir() {
        return Ok(false);
    }
    if meta.mode() & 0o7777 != dir.mode {
        fs::set_permissions(&path, fs::Permissions::from_mode(dir.mode))
            .ctx("cannot restore the mode of", &path)?;
    }
    let ts = |(s, ns): (i64, i64)| TimeSpec::new(s, ns);
    utimensat(
        nix::fcntl::AT_FDCWD,
        &path,
        &ts(dir.atime),
        &ts(dir.mtime),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
    .ctx("cannot set times of", &path)?;
    Ok(true)
}

/// Puts every recorded directory back and makes it all durable, so a power loss after the
/// mark is cleared cannot bring a retirement's times back. One `syncfs(2)` of the vault's
/// filesystem makes the links, the moves and the times durable together: one journal
/// commit, where an fsync per directory would cost one each.
pub fn put_back_all(job: &Path, dirs: &[DirState]) -> Result<()> {
    for d in dirs {
        put_back(job, d)?;
    }
    let f = fs::File::open(job).ctx("cannot open", job)?;
    nix::unistd::syncfs(&f)
        .map_err(std::io::Error::from)
        .ctx("cannot syncfs", job)
}

/// Removes the record (after the mark is cleared; also a stale one).
pub fn forget(job: &Path) -> Result<()> {
    retiring_tsv::remove(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_once_and_puts_back() {
        let job = tempfile::tempdir().expect("tempdir");
        let d = job.path().join("V2-x/a");
        fs::create_dir_all(&d).expect("mkdir");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).expect("chmod");
        let mut rec = Recorder::default();
        rec.note(PathBuf::from("V2-x/a"), &d).expect("note");
        let before = fs::symlink_metadata(&d).expect("meta");
        // Noted twice: the first state counts.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).expect("chmod");
        rec.note(PathBuf::from("V2-x/a"), &d).expect("note again");
        let saved = rec.save(job.path(), "V1-y").expect("save");
        assert_eq!(saved, [DirState::of(PathBuf::from("V2-x/a"), &before)]);
        assert_eq!(
            resumed(job.path(), "V1-y").expect("read"),
            Some(saved.clone())
        );
        fs::write(d.join("f"), b"x").expect("a change");
        put_back_all(job.path(), &saved).expect("put back");
        let after = fs::symlink_metadata(&d).expect("meta");
        assert_eq!(DirState::of(PathBuf::from("V2-x/a"), &after), saved[0]);
        forget(job.path()).expect("forget");
        assert_eq!(resumed(job.path(), "V1-y").expect("read"), None);
        let gone = DirState {
            rel: PathBuf::from("V2-x/none"),
            ..saved[0].clone()
        };
        assert!(!put_back(job.path(), &gone).expect("gone"), "nothing to do");
    }
}
