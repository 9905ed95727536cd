//! An entry's attributes as the replication stream carries them
//! ([`crate::format::stream::Attrs`]): read from a vault entry ([`read`]), compared
//! ([`same`]) and applied to an entry a receiver made ([`apply_to_file`], [`apply_to_path`]).
//!
//! Invariants: attributes are applied in the copy engine's order (owner, xattrs, mode, times
//! last: a `chown` clears setuid and an ACL rewrites the group bits), never following a
//! symlink; owners are set only when the process is privileged (as a local build does); an
//! xattr the filesystem or the process refuses (`EPERM`, `EACCES`, `ENOTSUP`) is left out,
//! as the copy engine leaves it out.

use std::ffi::OsStr;
use std::fs::{File, Metadata, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;

use crate::engine::copy;
use crate::format::entry::Fidelity;
use crate::format::stream::{Attrs, Time};

/// The attributes of the entry at `path` whose `lstat` is `meta`: the xattrs a copy
/// carries (none when they cannot be read).
pub(crate) fn read(path: &Path, meta: &Metadata) -> Attrs {
    let xattrs = copy::comparable_xattrs(path, copy::privileged())
        .map(|x| x.into_iter().collect())
        .unwrap_or_default();
    Attrs {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: Time {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
        atime: Time {
            secs: meta.atime(),
            nanos: meta.atime_nsec().clamp(0, 999_999_999) as u32,
        },
        xattrs,
    }
}

/// Do two entries' attributes agree on what a version keeps (mode unless a symlink, mtime,
/// xattrs, and the owner when `owners` count)? Access times never count.
pub(crate) fn same(a: &Attrs, b: &Attrs, owners: bool, symlink: bool) -> bool {
    (symlink || a.mode == b.mode)
        && a.mtime == b.mtime
        && a.xattrs == b.xattrs
        && (!owners || (a.uid == b.uid && a.gid == b.gid))
}

fn timespec(t: Time) -> TimeSpec {
    TimeSpec::new(t.secs, i64::from(t.nanos))
}

fn set_xattrs(path: &Path, attrs: &Attrs) -> io::Result<()> {
    for (name, value) in &attrs.xattrs {
        match xattr::set(path, OsStr::from_bytes(name), value) {
            Ok(()) => {}
            Err(e) if crate::engine::copy::xattr_not_settable(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Applies `attrs` to the regular file open as `file` at `path` (owners where `keep` keeps
/// them).
pub(crate) fn apply_to_file(
    file: &File,
    path: &Path,
    attrs: &Attrs,
    keep: Fidelity,
) -> io::Result<()> {
    if keep.owners {
        std::os::unix::fs::fchown(file, Some(attrs.uid), Some(attrs.gid))?;
    }
    set_xattrs(path, attrs)?;
    file.set_permissions(Permissions::from_mode(attrs.mode))?;
    nix::sys::stat::futimens(file, &timespec(attrs.atime), &timespec(attrs.mtime))?;
    Ok(())
}

/// Applies `attrs` to the directory, symlink or special file at `path` (a symlink gets no
/// mode, and nothing at all where `keep` says its attributes would reach its target), not
/// following a symlink.
pub(crate) fn apply_to_path(
    path: &Path,
    attrs: &Attrs,
    symlink: bool,
    keep: Fidelity,
) -> io::Result<()> {
    if symlink && !keep.link_attributes {
        return Ok(());
    }
    if keep.owners {
        std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid))?;
    }
    set_xattrs(path, attrs)?;
    if !symlink {
        copy::chmod_nofollow(path, attrs.mode)?;
    }
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &timespec(attrs.atime),
        &timespec(attrs.mtime),
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn attributes_read_back_as_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("a");
        fs::write(&src, b"x").expect("write");
        let mut attrs = read(&src, &fs::symlink_metadata(&src).expect("lstat"));
        attrs.mode = 0o640;
        attrs.mtime = Time {
            secs: 1_000_000_000,
            nanos: 123_456_789,
        };
        let dst = dir.path().join("b");
        let f = File::create(&dst).expect("create");
        let keep = Fidelity::exact(copy::privileged());
        apply_to_file(&f, &dst, &attrs, keep).expect("apply");
        let back = read(&dst, &fs::symlink_metadata(&dst).expect("lstat"));
        assert!(same(&attrs, &back, true, false), "{attrs:?} {back:?}");
        let target_before = fs::metadata(&src).expect("target").mtime();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("a", &link).expect("symlink");
        apply_to_path(&link, &attrs, true, keep).expect("apply to link");
        let m = fs::symlink_metadata(&link).expect("lstat");
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 123_456_789));
        assert_eq!(
            fs::metadata(&src).expect("target").mtime(),
            target_before,
            "the target is untouched"
        );
    }
}
