//! The FFI that needs `unsafe`, and nothing else: the ioctls and the system call
//! (`sync_file_range`) that neither `std` nor `nix` wraps safely. The workspace lints deny
//! `unsafe_code` everywhere else (this module alone allows it); what can be done through
//! `std`, `nix` or the `xattr` crate is done there.
//!
//! Each wrapper here takes borrowed, valid descriptors and owned buffers of the size the
//! request code encodes, so callers cannot break the ioctls' preconditions.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

// ---- Filesystem identity: FS_IOC_GETFSUUID, FS_IOC_GETFSLABEL (capture/identity.rs) ----

/// `struct fsuuid2` of `<linux/fs.h>` (kernel ≥ 6.5).
#[repr(C)]
struct FsUuid2 {
    len: u8,
    uuid: [u8; 16],
}

nix::ioctl_read!(fs_ioc_getfsuuid, 0x15, 0, FsUuid2);
nix::ioctl_read_buf!(fs_ioc_getfslabel, 0x94, 49, u8);

/// FSLABEL_MAX of `<linux/fs.h>`.
const FSLABEL_MAX: usize = 256;

/// The filesystem UUID bytes the kernel reports for the filesystem holding `fd`
/// (`FS_IOC_GETFSUUID`), or `None` when the ioctl is unsupported or the UUID is all zeroes.
pub(crate) fn fs_uuid(fd: impl AsFd) -> Option<Vec<u8>> {
    let mut u = FsUuid2 {
        len: 0,
        uuid: [0; 16],
    };
    // SAFETY: `u` is a valid, writable `struct fsuuid2`; the request code encodes its size,
    // and the descriptor is borrowed for the call.
    unsafe { fs_ioc_getfsuuid(fd.as_fd().as_raw_fd(), &mut u) }.ok()?;
    let n = usize::from(u.len).min(16);
    (n > 0 && u.uuid[..n].iter().any(|b| *b != 0)).then(|| u.uuid[..n].to_vec())
}

/// The filesystem label of the filesystem holding `fd` (`FS_IOC_GETFSLABEL`), or `None`
/// when the ioctl is unsupported or the label is empty.
pub(crate) fn fs_label(fd: impl AsFd) -> Option<String> {
    let mut label = [0u8; FSLABEL_MAX];
    // SAFETY: `label` is a writable FSLABEL_MAX buffer, the size the request code encodes,
    // and the descriptor is borrowed for the call.
    unsafe { fs_ioc_getfslabel(fd.as_fd().as_raw_fd(), &mut label) }.ok()?;
    let end = label.iter().position(|b| *b == 0).unwrap_or(FSLABEL_MAX);
    let text = String::from_utf8_lossy(&label[..end]).into_owned();
    (!text.is_empty()).then_some(text)
}

// ---- Data copy: FICLONE (engine/copy.rs) ----

// `FICLONE` is `_IOW(0x94, 9, int)`, but its argument is the source descriptor itself, passed
// by value, not a pointer to an int: hence the `_bad` form with libc's request code.
nix::ioctl_write_int_bad!(ficlone_ioctl, libc::FICLONE);

/// Makes `dst` share all of `src`'s extents (`FICLONE`, a reflink), replacing `dst`'s data.
/// Fails (`EOPNOTSUPP`, `EXDEV`, `EINVAL`, …) when the filesystems cannot share extents;
/// the caller then copies the data itself.
pub(crate) fn ficlone(dst: impl AsFd, src: impl AsFd) -> std::io::Result<()> {
    // SAFETY: FICLONE reads no memory of ours: its argument is the source descriptor, passed
    // by value. Both descriptors are borrowed, so they stay open for the call.
    unsafe { ficlone_ioctl(dst.as_fd().as_raw_fd(), src.as_fd().as_raw_fd()) }?;
    Ok(())
}

// ---- Early writeback: sync_file_range (fsutil::start_writeback) ----

/// Starts writing the dirty pages of the file `fd` to the disk and returns without waiting
/// for them (`sync_file_range` over the whole file with `SYNC_FILE_RANGE_WRITE` alone).
/// Nothing is durable when it returns: it is a hint that lets a later flush find the
/// file's blocks allocated and its data on the way.
pub(crate) fn start_writeback(fd: impl AsFd) -> std::io::Result<()> {
    sync_file_range(fd, libc::SYNC_FILE_RANGE_WRITE)
}

fn sync_file_range(fd: impl AsFd, flags: libc::c_uint) -> std::io::Result<()> {
    // SAFETY: sync_file_range reads and writes no memory of ours; the descriptor is
    // borrowed, so it stays open for the call.
    let r = unsafe { libc::sync_file_range(fd.as_fd().as_raw_fd(), 0, 0, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
