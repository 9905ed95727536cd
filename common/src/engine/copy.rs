//! The copy engine: one entry of any type from a source path to a new path, exactly.
//!
//! Owns: data copy (reflink with `FICLONE` when the filesystems allow it, else a sparse copy
//! that keeps holes via `SEEK_DATA`/`SEEK_HOLE` and writes all-zero blocks as holes, like
//! `cp --reflink=auto --sparse=always`), and metadata: owner (when permitted), mode
//! (setuid/setgid/sticky included), xattrs (which carry POSIX ACLs), atime/mtime in
//! nanoseconds. Symlinks are never followed; FIFOs and device nodes are recreated where
//! permitted; sockets are refused ([`CopyError::Socket`]) for the caller to journal.
//!
//! Invariants: the destination is created with `O_EXCL` (never overwrites); metadata is
//! applied after data, mode after owner (chown clears setuid), times last. A regular file
//! that changes while it is copied is copied again up to [`RETRIES`] times, then taken as
//! it is and reported as unstable.
#![allow(unsafe_code)] // FIXME(architecture): the ioctls move to sys.rs, the rest to std/nix/xattr

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Copies of a changing file before it is taken as it is.
pub const RETRIES: u32 = 3;

const BLOCK: usize = 4096;
const CHUNK: usize = 1 << 20;

/// How a regular file's data reached the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// Shared extents (FICLONE).
    Reflink,
    /// Read and written, holes kept.
    Sparse,
}

/// The result of copying one regular file.
#[derive(Debug, Clone, Copy)]
pub struct FileCopy {
    /// How the data was copied.
    pub data: DataPath,
    /// The file kept changing and was taken as it was after the last retry.
    pub unstable: bool,
}

/// Why an entry could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The source is a socket (not copyable).
    #[error("is a socket")]
    Socket,
    /// The source vanished (treat as deleted).
    #[error("vanished")]
    Vanished,
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl CopyError {
    /// The disk is full.
    pub fn is_enospc(&self) -> bool {
        matches!(self, CopyError::Io(e) if e.raw_os_error() == Some(libc::ENOSPC))
    }
}

fn vanished(e: io::Error) -> CopyError {
    if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) {
        CopyError::Vanished
    } else {
        CopyError::Io(e)
    }
}

/// Is this process allowed to set owners and create device nodes?
pub fn privileged() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root())
}

/// Copies a regular file with its metadata. `src_meta` is the source's `lstat`.
pub fn copy_file(src: &Path, dst: &Path) -> Result<FileCopy, CopyError> {
    copy_file_observed(src, dst, &mut |_| {})
}

/// [`copy_file`] with a hook called after each attempt's data copy, before the source is
/// checked for changes (tests use it to change the source at a precise moment).
pub fn copy_file_observed(
    src: &Path,
    dst: &Path,
    after_data: &mut dyn FnMut(u32),
) -> Result<FileCopy, CopyError> {
    let mut unstable = true;
    let mut data = DataPath::Sparse;
    for attempt in 0..=RETRIES {
        let input = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(src)
            .map_err(vanished)?;
        let before = input.metadata()?;
        if !before.is_file() {
            return Err(CopyError::Vanished);
        }
        if attempt > 0 {
            let _ = fs::remove_file(dst);
        }
        let output = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)?;
        data = copy_data(&input, &output, before.len())?;
        after_data(attempt);
        let after = input.metadata()?;
        let same = after.len() == before.len()
            && after.mtime() == before.mtime()
            && after.mtime_nsec() == before.mtime_nsec()
            && after.ctime() == before.ctime()
            && after.ctime_nsec() == before.ctime_nsec();
        apply_fd_meta(src, &output, dst, &after)?;
        if same {
            unstable = false;
            break;
        }
    }
    Ok(FileCopy { data, unstable })
}

/// Copies a regular file's data from one open file to another.
pub fn copy_data(input: &File, output: &File, len: u64) -> io::Result<DataPath> {
    // SAFETY: FICLONE takes the source fd as its argument; both fds are valid and open.
    let rc = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) };
    if rc == 0 {
        return Ok(DataPath::Reflink);
    }
    sparse_copy(input, output, len)?;
    Ok(DataPath::Sparse)
}

fn seek(fd: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a valid fd has no memory effects.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Copies data segment by segment, skipping holes and all-zero blocks, then sets the length.
fn sparse_copy(input: &File, output: &File, len: u64) -> io::Result<()> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        let want = (len as usize).clamp(BLOCK, CHUNK);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        sparse_copy_with(input, output, len, &mut buf)
    })
}

fn sparse_copy_with(input: &File, output: &File, len: u64, buf: &mut [u8]) -> io::Result<()> {
    let chunk = buf.len();
    let mut pos = 0u64;
    let mut written_to = 0u64;
    let seekable = seek(input, 0, libc::SEEK_DATA).is_ok();
    while pos < len {
        let (start, end) = if seekable {
            let Some(start) = seek(input, pos, libc::SEEK_DATA)? else {
                break;
            };
            let end = seek(input, start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
            (start, end)
        } else {
            (pos, len)
        };
        let mut off = start;
        while off < end {
            let want = ((end - off) as usize).min(chunk);
            let n = input.read_at(&mut buf[..want], off)?;
            if n == 0 {
                break;
            }
            if let Some(last) = write_nonzero(output, &buf[..n], off)? {
                written_to = last;
            }
            off += n as u64;
        }
        pos = end.max(start + 1);
        if off < end {
            break;
        }
    }
    // Only a trailing hole (or zeros) needs the length set explicitly.
    if written_to != len {
        output.set_len(len)?;
    }
    Ok(())
}

/// Writes the non-zero blocks of `data` at `base`; returns the end offset of the last
/// write, if any.
fn write_nonzero(output: &File, data: &[u8], base: u64) -> io::Result<Option<u64>> {
    let mut last = None;
    let mut i = 0;
    while i < data.len() {
        let blk_end = (i + BLOCK).min(data.len());
        if data[i..blk_end].iter().all(|&b| b == 0) {
            i = blk_end;
            continue;
        }
        let mut j = blk_end;
        while j < data.len() {
            let e = (j + BLOCK).min(data.len());
            if data[j..e].iter().all(|&b| b == 0) {
                break;
            }
            j = e;
        }
        output.write_all_at(&data[i..j], base + i as u64)?;
        last = Some(base + j as u64);
        i = j;
    }
    Ok(last)
}

/// Applies owner, mode, xattrs and times from `meta` (of `src`) to the open `output`.
fn apply_fd_meta(src: &Path, output: &File, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let fd = output.as_raw_fd();
    if privileged() {
        // SAFETY: fchown on a valid fd.
        if unsafe { libc::fchown(fd, meta.uid(), meta.gid()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    copy_xattrs(src, dst)?;
    // SAFETY: fchmod on a valid fd.
    if unsafe { libc::fchmod(fd, meta.mode() & 0o7777) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let times = timespecs(meta);
    // SAFETY: futimens reads two timespecs from a valid array.
    if unsafe { libc::futimens(fd, times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn timespecs(meta: &fs::Metadata) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ]
}

/// Sets atime and mtime (nanoseconds) of `path` from `meta`, not following a symlink.
pub fn set_times(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let c = cpath(path)?;
    let times = timespecs(meta);
    // SAFETY: a valid path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Sets owner (when privileged), mode (not for symlinks) and times on `dst` without
/// following a symlink. Used for directories (after their children), symlinks and specials.
pub fn apply_path_meta(dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let c = cpath(dst)?;
    if privileged() {
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::lchown(c.as_ptr(), meta.uid(), meta.gid()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if !meta.file_type().is_symlink() {
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::chmod(c.as_ptr(), meta.mode() & 0o7777) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    set_times(dst, meta)
}

/// Lists the xattr names of `path` (not following symlinks).
pub fn list_xattrs(path: &Path) -> io::Result<Vec<CString>> {
    let c = cpath(path)?;
    loop {
        // SAFETY: a null buffer of size 0 asks for the needed size.
        let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf has `size` writable bytes.
        let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .filter_map(|n| CString::new(n).ok())
            .collect());
    }
}

/// Reads one xattr value of `path` (not following symlinks).
pub fn get_xattr(path: &Path, name: &CString) -> io::Result<Vec<u8>> {
    let c = cpath(path)?;
    loop {
        // SAFETY: size query with a null buffer.
        let size = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf has `size` writable bytes.
        let got = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

/// Copies every xattr (user.*, trusted.*, security.*, system.posix_acl_*) from `src` to
/// `dst`, not following symlinks. Names the process may not set (a non-root user and
/// trusted.*, say) are skipped; other failures are errors.
pub fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let names = match list_xattrs(src) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(()),
        Err(e) => return Err(e),
    };
    if names.is_empty() {
        return Ok(());
    }
    let d = cpath(dst)?;
    for name in names {
        let value = match get_xattr(src, &name) {
            Ok(v) => v,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::EPERM)) => {
                continue;
            }
            Err(e) => return Err(e),
        };
        // SAFETY: valid path, name and value buffer.
        let rc = unsafe {
            libc::lsetxattr(
                d.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::EACCES) => {}
                _ => return Err(e),
            }
        }
    }
    Ok(())
}

/// Recreates a symlink with its exact target text and its owner/times.
pub fn copy_symlink(src: &Path, dst: &Path) -> Result<(), CopyError> {
    let target = fs::read_link(src).map_err(vanished)?;
    let meta = fs::symlink_metadata(src).map_err(vanished)?;
    std::os::unix::fs::symlink(&target, dst)?;
    copy_xattrs(src, dst)?;
    apply_path_meta(dst, &meta)?;
    Ok(())
}

/// Recreates a FIFO or a device node (devices need privilege: `EPERM` otherwise).
pub fn copy_special(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), CopyError> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_socket() {
        return Err(CopyError::Socket);
    }
    let c = cpath(dst)?;
    let kind = if ft.is_fifo() {
        libc::S_IFIFO
    } else if ft.is_char_device() {
        libc::S_IFCHR
    } else {
        libc::S_IFBLK
    };
    // SAFETY: valid path; mode and dev come from lstat.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, meta.rdev() as libc::dev_t) };
    if rc != 0 {
        return Err(CopyError::Io(io::Error::last_os_error()));
    }
    copy_xattrs(src, dst)?;
    apply_path_meta(dst, meta)?;
    Ok(())
}

/// Creates a directory (mode 0700 until [`finish_dir`] applies the source's metadata).
pub fn make_dir(dst: &Path) -> io::Result<()> {
    fs::create_dir(dst)?;
    // A umask could leave it unwritable for us while we fill it.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o700))
}

/// Applies a directory's xattrs (default ACLs included), owner, mode and times from `src`;
/// call after its children exist (their creation changes its mtime).
pub fn finish_dir(src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
    copy_xattrs(src, dst)?;
    apply_path_meta(dst, meta)
}

/// Disk usage of one entry as `du` counts it (allocated blocks, not following links).
pub fn disk_usage(meta: &fs::Metadata) -> u64 {
    meta.blocks() * 512
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn sparse_copy_keeps_holes_and_zero_blocks_become_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        {
            let mut f = File::create(&src).expect("create");
            f.write_all(b"head").expect("write");
            f.seek(SeekFrom::Start(8 << 20)).expect("seek");
            f.write_all(&vec![0u8; 1 << 20]).expect("zeros");
            f.write_all(b"tail").expect("write");
            f.set_len(16 << 20).expect("len");
        }
        let dst = dir.path().join("dst");
        copy_file(&src, &dst).expect("copy");
        assert_eq!(fs::read(&src).expect("src"), fs::read(&dst).expect("dst"));
        let m = fs::metadata(&dst).expect("meta");
        assert_eq!(m.len(), 16 << 20);
        assert!(
            m.blocks() * 512 <= 64 * 1024,
            "dst not sparse: {} blocks",
            m.blocks()
        );
        let s = fs::metadata(&src).expect("meta");
        assert_eq!((s.mtime(), s.mtime_nsec()), (m.mtime(), m.mtime_nsec()));
    }

    #[test]
    fn a_file_that_keeps_changing_is_retried_then_taken_as_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("growing");
        fs::write(&src, vec![1u8; 1 << 20]).expect("write");
        let append = |src: &Path| {
            let mut f = OpenOptions::new().append(true).open(src).expect("open");
            f.write_all(&[2u8; 4096]).expect("append");
        };
        // Changed during every attempt: taken as is after the retries, reported unstable.
        let mut calls = 0;
        let c = copy_file_observed(&src, &dir.path().join("always"), &mut |_| {
            calls += 1;
            append(&src);
        })
        .expect("copy");
        assert!(c.unstable);
        assert_eq!(calls, RETRIES + 1);
        // Changed during the first attempt only: the retry gives an exact, stable copy.
        let c = copy_file_observed(&src, &dir.path().join("once"), &mut |attempt| {
            if attempt == 0 {
                append(&src);
            }
        })
        .expect("copy");
        assert!(!c.unstable);
        assert_eq!(
            fs::read(&src).expect("src"),
            fs::read(dir.path().join("once")).expect("once")
        );
    }

    #[test]
    fn never_overwrites_and_never_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        fs::write(&a, b"x").expect("write");
        let b = dir.path().join("b");
        fs::write(&b, b"y").expect("write");
        assert!(copy_file(&a, &b).is_err());
        let l = dir.path().join("l");
        std::os::unix::fs::symlink("a", &l).expect("symlink");
        assert!(matches!(
            copy_file(&l, &dir.path().join("c")),
            Err(CopyError::Io(_))
        ));
        copy_symlink(&l, &dir.path().join("l2")).expect("symlink copy");
        assert_eq!(
            fs::read_link(dir.path().join("l2")).expect("readlink"),
            Path::new("a")
        );
    }
}
