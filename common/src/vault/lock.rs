//! Job locks (docs/design.md#locking): `flock(2)` on `<vault>/<job>/lock` for writers and on
//! `<vault>/<job>/run.lock` for a supervisor. Locks die with their process, so there are
//! no stale lock files to clean; the files themselves are never removed.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// A held exclusive lock; released on drop.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

/// Whether to wait for a held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Block until the lock is free.
    Block,
    /// Fail at once with [`Error::Locked`] (exit 75).
    NoWait,
}

impl JobLock {
    /// Takes an exclusive lock on `path` (created if missing). `job` names the job in errors.
    pub fn acquire(path: &Path, job: &str, wait: Wait) -> Result<JobLock> {
        crate::fsutil::create_metadata_file(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ctx("cannot open lock file", path)?;
        match wait {
            Wait::Block => file.lock().ctx("cannot lock", path)?,
            Wait::NoWait => match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(Error::Locked(job.to_owned())),
                Err(TryLockError::Error(e)) => return Err(e).ctx("cannot lock", path),
            },
        }
        Ok(JobLock { _file: file })
    }
}

/// The pids holding a `flock` on `path`, from `/proc/locks` (matched by device and inode):
/// read without taking the lock, so a probe never makes the lock look held to another
/// prober (a supervisor starting while `status` runs, or the reverse). `None` when
/// `/proc/locks` or `path` cannot be read.
fn flock_holders(path: &Path) -> Option<Vec<u32>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    Some(
        text.lines()
            .filter_map(|line| {
                // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF` (a waiter's line has `->`
                // in the second field, and is passed over)
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.get(1) != Some(&"FLOCK") {
                    return None;
                }
                let id: Vec<&str> = f.get(5)?.split(':').collect();
                let same = id.len() == 3
                    && hex(id[0]) == Some(u64::from(major))
                    && hex(id[1]) == Some(u64::from(minor))
                    && id[2].parse::<u64>().ok() == Some(meta.ino());
                if same { f.get(4)?.parse().ok() } else { None }
            })
            .collect(),
    )
}

/// The pid holding a `flock` on `path` ([`flock_holders`]), if any can be told.
pub fn holder(path: &Path) -> Option<u32> {
    flock_holders(path)?.first().copied()
}

/// Whether a process holds the lock at `lock`, probed without taking it: from
/// `/proc/locks` ([`flock_holders`]). Where that cannot be read, the lock is tried: the
/// lock file opened read-only (`flock` needs no write access), so a reader on a read-only
/// view of the vault can tell; a lock file readable only by its writer is asked the way a
/// writer would; the probe's own lock, when it gets one, is released at once. `None` when
/// it cannot be told (no lock file, or the lock cannot be tried).
pub fn held(lock: &Path, job: &str) -> Option<bool> {
    if let Some(pids) = flock_holders(lock) {
        return Some(!pids.is_empty());
    }
    let file = match std::fs::File::open(lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(_) => {
            return match JobLock::acquire(lock, job, Wait::NoWait) {
                Err(Error::Locked(_)) => Some(true),
                Ok(_) => Some(false),
                Err(_) => None,
            };
        }
    };
    match file.try_lock() {
        Ok(()) => Some(false),
        Err(TryLockError::WouldBlock) => Some(true),
        Err(TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_locker_is_refused_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let held = JobLock::acquire(&path, "j", Wait::NoWait).expect("first");
        let err = JobLock::acquire(&path, "j", Wait::NoWait).expect_err("second");
        assert_eq!(err.exit_code(), crate::error::EXIT_TEMPFAIL);
        drop(held);
        JobLock::acquire(&path, "j", Wait::NoWait).expect("free again");
    }

    #[test]
    fn held_is_probed_without_taking_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        assert_eq!(held(&path, "j"), None, "no lock file");
        let lock = JobLock::acquire(&path, "j", Wait::NoWait).expect("first");
        assert_eq!(held(&path, "j"), Some(true));
        drop(lock);
        assert_eq!(held(&path, "j"), Some(false));
        JobLock::acquire(&path, "j", Wait::NoWait).expect("the probe let it go");
    }
}
