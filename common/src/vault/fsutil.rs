//! Small filesystem helpers every writer uses: atomic file replacement, atomic symlink
//! replacement, and directory fsync.
//!
//! Invariant: a file or symlink replaced with these helpers is, at every instant, either
//! the complete old one or the complete new one (temp name in the same directory, fsync,
//! rename, fsync of the directory).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// A temp name beside `path` that no other writer uses (pid + counter).
pub fn temp_beside(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".tmp-");
    name.push(PID.get_or_init(|| std::process::id().to_string()));
    name.push(format!("-{n}-"));
    name.push(path.file_name().unwrap_or_default());
    path.with_file_name(name)
}

/// Fsyncs a directory so that a rename inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).ctx("cannot open directory", dir)?;
    f.sync_all().ctx("cannot fsync directory", dir)
}

/// Replaces `path` with `contents` atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .ctx("cannot create", &tmp)?;
        f.write_all(contents).ctx("cannot write", &tmp)?;
        f.sync_all().ctx("cannot fsync", &tmp)?;
        fs::rename(&tmp, path).ctx("cannot rename into place", path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Replaces (or creates) the symlink `path` with one whose text is `target`, atomically.
pub fn replace_symlink(target: &Path, path: &Path) -> Result<()> {
    let tmp = temp_beside(path);
    std::os::unix::fs::symlink(target, &tmp).ctx("cannot create symlink", &tmp)?;
    if let Err(e) = fs::rename(&tmp, path).ctx("cannot rename symlink into place", path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Removes a tree that may contain read-only directories (as a non-root user would meet
/// in a version). Missing is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("cannot inspect", path),
        Ok(m) if !m.is_dir() => return fs::remove_file(path).ctx("cannot remove", path),
        Ok(_) => {}
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            fs::remove_dir_all(path).ctx("cannot remove", path)
        }
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = fs::symlink_metadata(path) else {
        return;
    };
    if !m.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}
