//! The copy engine: one entry of any type from a source path to a new path, exactly.
//!
//! Owns: data copy (a reflink with `FICLONE` when the filesystems allow it, else a sparse
//! copy that keeps holes via `SEEK_DATA`/`SEEK_HOLE` and writes all-zero blocks as holes,
//! like `cp --reflink=auto --sparse=always`), and metadata: owner (when root), mode
//! (setuid/setgid/sticky included), xattrs (which carry POSIX ACLs), atime/mtime in
//! nanoseconds. Symlinks are never followed; FIFOs and device nodes are recreated (devices
//! only where permitted); sockets are refused ([`CopyError::Socket`]) for the caller to
//! journal.
//!
//! Invariants: the destination never exists before (`O_EXCL`, `symlink`, `mknod` and
//! `mkdir` all fail on an existing name; a retried copy removes only its own earlier
//! attempt). No call follows the last component of a path it is given, on either side
//! (`O_NOFOLLOW`, `lchown`, `AT_SYMLINK_NOFOLLOW`, `l*xattr`, a mode set through an
//! `O_PATH | O_NOFOLLOW` handle: [`chmod_nofollow`]); callers give paths whose directories
//! cannot be redirected ([`crate::beneath::At`]). A source file must be the inode its
//! `lstat` named ([`copy_source_file`]). Metadata is applied after data, in this order: owner, xattrs, mode (a `chown`
//! clears setuid and an ACL rewrites the group bits, so the mode comes after both), times
//! last. A regular file that changes while it is copied is copied again up to [`RETRIES`]
//! times, then taken as it is and reported as unstable. The one `unsafe` call, `FICLONE`,
//! lives in `sys.rs`.
//!
//! Checksums (docs/format.md#checksums): when asked, a regular file's BLAKE3 is computed in
//! the same pass as the copy, from the bytes read and written (a hole or an all-zero block
//! hashes as the zeros it reads back as, so the hash is of the logical content, as `b3sum`
//! sees it); a reflinked file's bytes never pass through here, so its clone is read back.
//! A file retried because it changed records the hash of the attempt that was kept.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::Whence;

use crate::beneath::At;
use crate::format::checksums::{self, Record};
use crate::format::entry::{Fidelity, Xattrs};
use crate::sys;

/// How many times a file that changed during its copy is copied again before it is taken
/// as it is (so at most `RETRIES + 1` attempts).
pub const RETRIES: u32 = 3;

const BLOCK: usize = 4096;
const CHUNK: usize = 1 << 20;
/// Files up to this size are read whole, without asking where their holes are
/// (`SEEK_DATA`/`SEEK_HOLE`): a hole reads as zeros and an all-zero block is written as a
/// hole anyway, so the copy is the same, three `lseek`s cheaper.
const READ_WHOLE: u64 = 64 * 1024;

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
    /// The stored data's size and BLAKE3, when asked for.
    pub record: Option<Record>,
    /// The device and inode of the source file that was copied (the kept attempt's).
    pub source: (u64, u64),
    /// The stored copy's length (so that the caller need not inspect it again).
    pub len: u64,
}

/// Why an entry could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The source is a socket (not copyable).
    #[error("is a socket")]
    Socket,
    /// The source is gone (`ENOENT`/`ENOTDIR`, [`is_gone`]): treat as deleted.
    #[error("vanished")]
    Vanished,
    /// The source is no longer a regular file: still there, so not a deletion.
    #[error("changed type while copied")]
    TypeChanged,
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

/// Does `e` say the entry is gone? Only `ENOENT` and `ENOTDIR` do (docs/format.md#invariants
/// I5), the latter including a symlink met where a directory was, which is never followed
/// ([`crate::beneath`]): the path names nothing in the source any more. Any other error
/// (`EACCES`, `EIO`, …) means it is there but cannot be read.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn vanished(e: io::Error) -> CopyError {
    if is_gone(&e) {
        CopyError::Vanished
    } else {
        CopyError::Io(e)
    }
}

/// Whether the effective user is root: only then are owners set (devices need the
/// privilege too, but [`copy_special`] just tries). Asked once per process.
pub fn privileged() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root())
}

/// [`copy_file_hashed`] without the hash.
#[cfg(test)]
pub fn copy_file(src: &Path, dst: &Path) -> Result<FileCopy, CopyError> {
    copy_file_with(
        &Ends::Paths(src, dst),
        false,
        None,
        Fidelity::exact(privileged()),
        &mut |_| {},
    )
}

/// Copies a regular file with its metadata to the new path `dst`, without following a
/// symlink at `src` (that is an error, `ELOOP`); records the stored data's BLAKE3 when
/// `hash` is set. The owner is set only where `keep` says owners are kept.
pub fn copy_file_hashed(
    src: &Path,
    dst: &Path,
    hash: bool,
    keep: Fidelity,
) -> Result<FileCopy, CopyError> {
    copy_file_with(&Ends::Paths(src, dst), hash, None, keep, &mut |_| {})
}

/// [`copy_file_hashed`] of a source file whose `lstat` was `seen`: a symlink now at `src`
/// is [`CopyError::TypeChanged`] (never followed), and a file opened that is not the inode
/// `seen` describes (replaced since) counts as changed during the copy: retried, then
/// taken as it is and reported unstable; [`FileCopy::source`] says which inode was copied.
/// Both files are opened by `openat` on their directories' descriptors ([`At::open`]).
pub fn copy_source_file(
    src: &At,
    dst: &At,
    hash: bool,
    seen: &fs::Metadata,
    keep: Fidelity,
) -> Result<FileCopy, CopyError> {
    let ends = Ends::At(src, dst);
    copy_file_with(
        &ends,
        hash,
        Some((seen.dev(), seen.ino())),
        keep,
        &mut |_| {},
    )
}

/// The two files of one copy, reached by path or beneath their directories' descriptors.
enum Ends<'a> {
    Paths(&'a Path, &'a Path),
    At(&'a At, &'a At),
}

impl Ends<'_> {
    /// The destination's path.
    fn dst(&self) -> &Path {
        match self {
            Ends::Paths(_, dst) => dst,
            Ends::At(_, dst) => dst,
        }
    }

    /// Opens the source read-only, never following a symlink there.
    fn open_src(&self) -> io::Result<File> {
        match self {
            Ends::Paths(src, _) => OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
                .open(src),
            Ends::At(src, _) => src.open(
                OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
                Mode::empty(),
            ),
        }
    }

    /// Creates the destination, new (`O_EXCL`), mode 0600, open for reading and writing.
    fn create_dst(&self) -> io::Result<File> {
        match self {
            Ends::Paths(_, dst) => OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dst),
            Ends::At(_, dst) => dst.open(
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
                Mode::from_bits_truncate(0o600),
            ),
        }
    }
}

/// [`copy_file`] with a hook called after each attempt's data copy, before the source is
/// checked for changes (tests use it to change the source at a precise moment).
#[cfg(test)]
pub fn copy_file_observed(
    src: &Path,
    dst: &Path,
    after_data: &mut dyn FnMut(u32),
) -> Result<FileCopy, CopyError> {
    copy_file_with(
        &Ends::Paths(src, dst),
        true,
        None,
        Fidelity::exact(privileged()),
        after_data,
    )
}

fn copy_file_with(
    ends: &Ends<'_>,
    hash: bool,
    seen: Option<(u64, u64)>,
    keep: Fidelity,
    after_data: &mut dyn FnMut(u32),
) -> Result<FileCopy, CopyError> {
    let mut unstable = true;
    let mut data = DataPath::Sparse;
    let mut record = None;
    let mut source = (0, 0);
    let mut len = 0;
    for attempt in 0..=RETRIES {
        let input = match ends.open_src() {
            Ok(f) => f,
            // A symlink there now: never followed, and not gone either.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(CopyError::TypeChanged),
            Err(e) => return Err(vanished(e)),
        };
        let before = input.metadata()?;
        if !before.is_file() {
            return Err(CopyError::TypeChanged);
        }
        source = (before.dev(), before.ino());
        let replaced = seen.is_some_and(|seen| seen != source);
        if attempt > 0 {
            let _ = fs::remove_file(ends.dst());
        }
        let output = ends.create_dst()?;
        (data, record) = copy_data_hashed(&input, &output, before.len(), hash)?;
        len = match data {
            // A clone takes the length the source had when it was cloned.
            DataPath::Reflink => output.metadata()?.len(),
            DataPath::Sparse => before.len(),
        };
        after_data(attempt);
        let after = input.metadata()?;
        let same = !replaced
            && after.len() == before.len()
            && after.mtime() == before.mtime()
            && after.mtime_nsec() == before.mtime_nsec()
            && after.ctime() == before.ctime()
            && after.ctime_nsec() == before.ctime_nsec();
        apply_fd_meta(&input, &output, &after, keep)?;
        if same {
            unstable = false;
            break;
        }
    }
    Ok(FileCopy {
        data,
        unstable,
        record,
        source,
        len,
    })
}

/// Copies `len` bytes of a regular file's data from `input` to the empty `output`: a
/// reflink when the filesystems share extents, else a sparse copy. Metadata is untouched.
pub fn copy_data(input: &File, output: &File, len: u64) -> io::Result<DataPath> {
    copy_data_hashed(input, output, len, false).map(|(path, _)| path)
}

/// [`copy_data`] that also returns the stored data's record when `hash` is set; `output`
/// must then be open for reading too (a reflink's clone is read back).
pub fn copy_data_hashed(
    input: &File,
    output: &File,
    len: u64,
    hash: bool,
) -> io::Result<(DataPath, Option<Record>)> {
    if sys::ficlone(output, input).is_ok() {
        let record = if hash {
            Some(checksums::hash_file(output)?)
        } else {
            None
        };
        return Ok((DataPath::Reflink, record));
    }
    let mut hasher = hash.then(blake3::Hasher::new);
    sparse_copy(input, output, len, hasher.as_mut())?;
    let record = hasher.map(|h| Record {
        size: len,
        hash: *h.finalize().as_bytes(),
    });
    Ok((DataPath::Sparse, record))
}

/// Feeds `hasher` the zeros from `from` to `to` (a hole, or a tail the length set).
fn hash_zeros(hasher: &mut Option<&mut blake3::Hasher>, from: u64, to: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let Some(h) = hasher.as_mut() else { return };
    let mut left = to.saturating_sub(from);
    while left > 0 {
        let n = left.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..n]);
        left -= n as u64;
    }
}

/// `lseek` to the next data or hole at or after `offset`; `None` when there is none
/// (`ENXIO`: `offset` is at or past the last data).
fn seek(fd: &File, offset: u64, whence: Whence) -> io::Result<Option<u64>> {
    match nix::unistd::lseek(fd, offset as libc::off_t, whence) {
        Ok(r) => Ok(Some(r as u64)),
        Err(Errno::ENXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Copies data segment by segment, skipping holes and all-zero blocks, then sets the length.
fn sparse_copy(
    input: &File,
    output: &File,
    len: u64,
    hasher: Option<&mut blake3::Hasher>,
) -> io::Result<()> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        let want = (len as usize).clamp(BLOCK, CHUNK);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        sparse_copy_with(input, output, len, &mut buf, hasher)
    })
}

/// [`sparse_copy`] with its buffer; `hasher` is fed the logical content as it is stored:
/// data as read, holes (and the tail the length sets) as zeros.
fn sparse_copy_with(
    input: &File,
    output: &File,
    len: u64,
    buf: &mut [u8],
    mut hasher: Option<&mut blake3::Hasher>,
) -> io::Result<()> {
    let chunk = buf.len();
    let mut pos = 0u64;
    let mut written_to = 0u64;
    let mut hashed_to = 0u64;
    let seekable = len > READ_WHOLE && seek(input, 0, Whence::SeekData).is_ok();
    while pos < len {
        let (start, end) = if seekable {
            let Some(start) = seek(input, pos, Whence::SeekData)? else {
                break;
            };
            let end = seek(input, start, Whence::SeekHole)?
                .unwrap_or(len)
                .min(len);
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
            hash_zeros(&mut hasher, hashed_to, off);
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            hashed_to = off + n as u64;
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
    hash_zeros(&mut hasher, hashed_to, len);
    // Only a trailing hole (or zeros) needs the length set explicitly.
    if written_to != len {
        output.set_len(len)?;
    }
    Ok(())
}

/// Writes the non-zero blocks of `data` at `base`; returns the end offset of the last
/// write, if any.
pub(crate) fn write_nonzero(output: &File, data: &[u8], base: u64) -> io::Result<Option<u64>> {
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

/// Applies `meta` (the source's) to the open `output`: owner when `keep` keeps owners,
/// then the xattrs of the open `input` (the very inode copied), then mode, then times.
fn apply_fd_meta(
    input: &File,
    output: &File,
    meta: &fs::Metadata,
    keep: Fidelity,
) -> io::Result<()> {
    if keep.owners {
        std::os::unix::fs::fchown(output, Some(meta.uid()), Some(meta.gid()))?;
    }
    copy_fd_xattrs(input, output)?;
    output.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))?;
    let (atime, mtime) = times(meta);
    nix::sys::stat::futimens(output, &atime, &mtime)?;
    Ok(())
}

/// The atime and mtime of `meta`, to the nanosecond.
pub(crate) fn times(meta: &fs::Metadata) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(meta.atime(), meta.atime_nsec()),
        TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
    )
}

/// Sets atime and mtime (nanoseconds) of `path` from `meta`, not following a symlink.
pub fn set_times(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let (atime, mtime) = times(meta);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

/// Sets owner (when `keep` keeps owners), mode (not for symlinks) and times of `dst` from
/// `meta`, without following a symlink; xattrs are the caller's ([`copy_xattrs`], before
/// this). Used for directories (after their children), symlinks, specials, and files whose
/// data came through [`copy_data`]. A symlink's owner and times are set only where `keep`
/// says the filesystem sets them on the link itself: where they would reach the file it
/// points to (sshfs), nothing is done to it at all (docs/filesystems.md).
pub fn apply_path_meta(dst: &Path, meta: &fs::Metadata, keep: Fidelity) -> io::Result<()> {
    let is_link = meta.file_type().is_symlink();
    if is_link && !keep.link_attributes {
        return Ok(());
    }
    if keep.owners {
        std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    }
    if !is_link {
        chmod_nofollow(dst, meta.mode() & 0o7777)?;
    }
    set_times(dst, meta)
}

/// Sets the mode of `path`, which must not be a symlink (`ELOOP` if one is there now):
/// `chmod` follows a symlink, so the entry is opened first (`O_PATH | O_NOFOLLOW`) and the
/// mode set on what was opened (through its `/proc/self/fd` path, which names that inode
/// whatever happens to the name meanwhile).
pub fn chmod_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    if handle.metadata()?.file_type().is_symlink() {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let opened = Path::new("/proc/self/fd").join(handle.as_raw_fd().to_string());
    fs::set_permissions(opened, Permissions::from_mode(mode))
}

/// Lists the xattr names of `path` (not following symlinks); none where the filesystem
/// has no xattrs (`ENOTSUP`).
pub fn list_xattrs(path: &Path) -> io::Result<Vec<CString>> {
    match xattr::list(path) {
        Ok(names) => Ok(names
            .filter(|n| !n.is_empty())
            .filter_map(|n| CString::new(n.into_vec()).ok())
            .collect()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Reads one xattr value of `path` (not following symlinks); `ENODATA` when it has none
/// of that name.
pub fn get_xattr(path: &Path, name: &CString) -> io::Result<Vec<u8>> {
    xattr::get(path, OsStr::from_bytes(name.as_bytes()))?
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODATA))
}

/// Would a copy made by this process carry the xattr `name`? `user.*` and the POSIX ACLs
/// always; `trusted.*` and `security.*` only when `privileged` (an unprivileged process
/// neither sees the first nor may set the second, and a security module labels the copy
/// itself). Anything else (a namespace no copy sets) never counts.
fn carried(name: &[u8], privileged: bool) -> bool {
    name.starts_with(b"user.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
        || (privileged && (name.starts_with(b"trusted.") || name.starts_with(b"security.")))
}

/// The xattrs of `path` (not following symlinks) that a copy carries ([`carried`]), to
/// compare a source entry with its copy in the vault. `None` when they cannot be compared:
/// the filesystem has none (`ENOTSUP`), or listing or reading one fails (the entry then
/// counts as unchanged: its previous copy is kept, docs/format.md#invariants I5). A name
/// that vanishes between the listing and the read is left out.
pub(crate) fn comparable_xattrs(path: &Path, privileged: bool) -> Option<Xattrs> {
    let names = xattr::list(path).ok()?;
    let mut out = Xattrs::new();
    for name in names {
        let name = name.into_vec();
        if !carried(&name, privileged) {
            continue;
        }
        match xattr::get(path, OsStr::from_bytes(&name)) {
            Ok(Some(value)) => {
                out.insert(name, value);
            }
            Ok(None) => {}
            Err(_) => return None,
        }
    }
    Some(out)
}

/// Copies every xattr (user.*, trusted.*, security.*, system.posix_acl_*) from `src` to
/// `dst`, not following symlinks. What the process may not read or set is skipped: a
/// source it may not list, names it may not read (or that vanished meanwhile), and names
/// `dst` refuses (`EPERM`, `EACCES`: a non-root user and trusted.*, say; `ENOTSUP`: a
/// filesystem without them). Other failures are errors.
pub fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let names = match list_xattrs(src) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        let value = match get_xattr(src, &name) {
            Ok(v) => v,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::EPERM)) => {
                continue;
            }
            Err(e) => return Err(e),
        };
        match xattr::set(dst, OsStr::from_bytes(name.as_bytes()), &value) {
            Ok(()) => {}
            Err(e) if xattr_not_settable(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A refusal to set an xattr that a copy skips rather than fails on: not permitted to
/// this user (a `trusted.*` or `security.*` name), or not supported by the destination.
pub(crate) fn xattr_not_settable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::EACCES)
    )
}

/// [`copy_xattrs`] between two open files: what is skipped and what fails is the same.
fn copy_fd_xattrs(input: &File, output: &File) -> io::Result<()> {
    use xattr::FileExt;
    let names = match input.list_xattr() {
        Ok(names) => names,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for name in names.filter(|n| !n.is_empty()) {
        let value = match input.get_xattr(&name) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => continue,
            Err(e) => return Err(e),
        };
        match output.set_xattr(&name, &value) {
            Ok(()) => {}
            Err(e) if xattr_not_settable(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Recreates a symlink with its exact target text, its xattrs and, where `keep` says they
/// can be set on the link itself, its owner and times.
pub fn copy_symlink(src: &Path, dst: &Path, keep: Fidelity) -> Result<(), CopyError> {
    let target = fs::read_link(src).map_err(vanished)?;
    let meta = fs::symlink_metadata(src).map_err(vanished)?;
    std::os::unix::fs::symlink(&target, dst)?;
    if keep.link_attributes {
        copy_xattrs(src, dst)?;
    }
    apply_path_meta(dst, &meta, keep)?;
    Ok(())
}

/// Recreates a FIFO or a device node with its xattrs, owner, mode and times (devices need
/// privilege: `EPERM` otherwise); a socket is [`CopyError::Socket`]. `meta` is `src`'s
/// `lstat`.
pub fn copy_special(
    src: &Path,
    dst: &Path,
    meta: &fs::Metadata,
    keep: Fidelity,
) -> Result<(), CopyError> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_socket() {
        return Err(CopyError::Socket);
    }
    let kind = if ft.is_fifo() {
        SFlag::S_IFIFO
    } else if ft.is_char_device() {
        SFlag::S_IFCHR
    } else {
        SFlag::S_IFBLK
    };
    let owner_rw = Mode::S_IRUSR | Mode::S_IWUSR;
    nix::sys::stat::mknod(dst, kind, owner_rw, meta.rdev()).map_err(io::Error::from)?;
    copy_xattrs(src, dst)?;
    apply_path_meta(dst, meta, keep)?;
    Ok(())
}

/// Creates a directory (mode 0700 until [`finish_dir`] applies the source's metadata).
pub fn make_dir(dst: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(dst)?;
    // A umask, or a default ACL inherited from the folder (which replaces the umask and may
    // come from a hostile source), could leave it unwritable for us while we fill it. Most
    // of the time it is 0700 already, and one `lstat` says so.
    if fs::symlink_metadata(dst)
        .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o7777 == 0o700)
    {
        return Ok(());
    }
    chmod_nofollow(dst, 0o700)
}

/// Applies a directory's xattrs (default ACLs included) from `src`, then owner, mode and
/// times from `meta` (`src`'s `lstat`); call after its children exist (their creation
/// changes its mtime).
pub fn finish_dir(src: &Path, dst: &Path, meta: &fs::Metadata, keep: Fidelity) -> io::Result<()> {
    copy_xattrs(src, dst)?;
    apply_path_meta(dst, meta, keep)
}

#[cfg(test)]
mod tests;
