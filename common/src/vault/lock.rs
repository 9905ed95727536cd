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
}
