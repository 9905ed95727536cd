//! The capability probe (docs/filesystems.md): what the vault's filesystem really does,
//! tried on throw-away entries before the first write to a vault (`--init`), again when a
//! job starts and when the vault's filesystem changed, recorded in the marker's
//! `[capabilities]` table ([`Capabilities`]).
//!
//! Owns the probe ([`probe`]) and its verdict ([`refusal`]): a vault that cannot hold
//! symlinks or modes is refused, naming its filesystem type and what it lacks; anything
//! weaker is recorded for the tools to adapt to.
//!
//! Invariants: the probe writes only inside `<vault>/.tmp-probe/<own name>/`, a directory of
//! its own (several jobs may probe one vault at once), and removes it, and `.tmp-probe`
//! when it is empty, whatever the outcome; leftovers of a probe that died are removed by
//! the next one once they are an hour old. A target file of a probed link is checked
//! before and after: the probe learns that link attributes reach the target only on a
//! file of its own. Nothing the probe does fails a caller but a directory it cannot
//! create (a read-only or full filesystem, a vault it may not write): every capability is
//! a yes or no.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::capture::identity;
use crate::error::{Error, IoContext, Result, show};
use crate::format::capabilities::{Capabilities, LinkAttributes};
use crate::format::time;

/// The folder the probe works in, directly in the vault.
pub const PROBE_DIR: &str = ".tmp-probe";

/// A probe's own folder left by a process that died is removed after this long.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// The mtime the probe sets and reads back: an odd second (FAT keeps even ones) with every
/// nanosecond digit set (a µs filesystem keeps the first six).
const PROBE_MTIME: (i64, i64) = (1_000_000_001, 123_456_789);

/// The granularities the probe recognises, finest first (ns … 2 s).
const STEPS: [u64; 11] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    2_000_000_000,
];

/// A link text no filesystem may alter: spaces, a `..`, UTF-8 and a byte that is not.
const LINK_TEXT: &[u8] = b"../a b/\xc3\xa9t\xe9/../target";

/// Probes the filesystem holding the vault directory `root` (which must exist). An error
/// only when the probe cannot even make its folder there.
pub fn probe(root: &Path) -> Result<Capabilities> {
    let base = root.join(PROBE_DIR);
    remove_stale(&base);
    let own = own_dir(&base)?;
    let caps = probe_in(root, &own);
    let _ = crate::fsutil::remove_tree(&own);
    // Empty unless another process is probing right now: then it is theirs to remove.
    let _ = fs::remove_dir(&base);
    Ok(caps)
}

/// Why the vault cannot be used, naming its filesystem type and what it lacks (exit 2);
/// `None` when it can.
pub fn refusal(root: &Path, caps: &Capabilities) -> Option<Error> {
    let missing = caps.refusals();
    if missing.is_empty() {
        return None;
    }
    Some(Error::Usage(format!(
        "vault {} is on a {} filesystem, which cannot hold {}: a version there would not be \
         the source; choose a vault on a filesystem that can (ext4, XFS, btrfs, or a network \
         filesystem that passes the probe, docs/filesystems.md)",
        show(root),
        caps.fstype,
        missing.join(", nor ")
    )))
}

/// Creates the probe's own folder below `base` (made when missing; another process may
/// remove an empty `base` at any moment, so that is retried).
fn own_dir(base: &Path) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let own = base.join(format!("p{}.{nanos}", std::process::id()));
    let mut tries = 0;
    loop {
        match fs::create_dir(base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx("cannot create the capability probe's folder", base),
        }
        match fs::create_dir(&own) {
            Ok(()) => return Ok(own),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
            Err(e) => return Err(e).ctx("cannot create the capability probe's folder", &own),
        }
    }
}

/// Removes what a probe that died left below `base` (an hour old or more).
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old {
            let _ = crate::fsutil::remove_tree(&e.path());
        }
    }
}

/// Every probe, in the folder `dir` of the vault `root`.
fn probe_in(root: &Path, dir: &Path) -> Capabilities {
    let (fstype, device) = fs_type(root);
    let privileged = nix::unistd::geteuid().is_root();
    let data = dir.join("data");
    let fsync = write_synced(&data, &[7u8; 8192]);
    let symlinks = symlinks_exact(dir);
    let link_attributes = if symlinks {
        link_attributes(dir, privileged)
    } else {
        LinkAttributes::Unsupported
    };
    Capabilities {
        probed: time::now_rfc3339(),
        fstype,
        device,
        symlinks,
        link_attributes,
        modes: modes_round_trip(dir),
        specials: fifo_made(dir),
        owners: privileged.then(|| owners_round_trip(dir)),
        mtime_granularity_ns: mtime_granularity(dir),
        user_xattrs: xattr_round_trip(&data, "user.reverberator.probe", b"probe"),
        acls: acl_round_trip(dir),
        reflink: reflinks(&data, &dir.join("clone")),
        rename_exchange: rename_exchange(dir),
        rename_noreplace: rename_noreplace(dir),
        flock: File::open(&data).is_ok_and(|f| f.try_lock().is_ok()),
        fsync,
        syncfs: File::open(dir).is_ok_and(|d| nix::unistd::syncfs(&d).is_ok()),
    }
}

/// The filesystem type and mount source of `root`: from the mount table (with what blkid
/// sees under a FUSE block device), else `statfs`'s magic number.
fn fs_type(root: &Path) -> (String, Option<String>) {
    match identity::mount_of(root) {
        Ok(m) => {
            let source = m.source.to_string_lossy().into_owned();
            let under = (m.fstype == "fuseblk")
                .then(|| identity::blkid_type(Path::new(&m.source)))
                .flatten();
            let fstype = match under {
                Some(t) => format!("{} ({t})", m.fstype),
                None => m.fstype,
            };
            (fstype, (!source.is_empty()).then_some(source))
        }
        Err(_) => match nix::sys::statfs::statfs(root) {
            Ok(s) => (
                format!("statfs type {:#x}", s.filesystem_type().0 as u64),
                None,
            ),
            Err(_) => ("unknown".to_owned(), None),
        },
    }
}

/// Creates `path` with `data` and fsyncs it; whether the fsync succeeded.
fn write_synced(path: &Path, data: &[u8]) -> bool {
    let Ok(mut f) = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    else {
        return false;
    };
    f.write_all(data).is_ok() && f.sync_all().is_ok()
}

/// A symlink is made and its text read back byte-exact.
fn symlinks_exact(dir: &Path) -> bool {
    let link = dir.join("link");
    let text = OsStr::from_bytes(LINK_TEXT);
    std::os::unix::fs::symlink(text, &link).is_ok()
        && fs::read_link(&link).is_ok_and(|t| t.as_os_str() == text)
        && fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink())
}

/// What setting a symlink's times (and owner, as root) does: a link to a target file of
/// the probe's own, whose stat is compared before and after.
fn link_attributes(dir: &Path, privileged: bool) -> LinkAttributes {
    let target = dir.join("link-target");
    let link = dir.join("link-to-target");
    let set_up = write_synced(&target, b"target")
        && set_mtime(&target, (1_000_000_000, 0), false).is_ok()
        && std::os::unix::fs::symlink("link-target", &link).is_ok();
    let Ok(before) = fs::symlink_metadata(&target) else {
        return LinkAttributes::Unsupported;
    };
    if !set_up {
        return LinkAttributes::Unsupported;
    }
    let wanted = (1_200_000_000, 0);
    let times = set_mtime(&link, wanted, true);
    let owner = if privileged {
        // An owner the target does not have.
        let other = if before.uid() == 1 { 2 } else { 1 };
        std::os::unix::fs::lchown(&link, Some(other), Some(other))
    } else {
        Ok(())
    };
    // Read under a new name: a FUSE filesystem may answer the old one from its attribute
    // cache (sshfs does), which the change through the link did not touch.
    let renamed = dir.join("link-target-after");
    let seen = if fs::rename(&target, &renamed).is_ok() {
        renamed
    } else {
        target
    };
    let Ok(after) = fs::symlink_metadata(&seen) else {
        // The target is gone: something was done to it.
        return LinkAttributes::FollowTarget;
    };
    let touched = (after.mtime(), after.mtime_nsec(), after.uid(), after.gid())
        != (
            before.mtime(),
            before.mtime_nsec(),
            before.uid(),
            before.gid(),
        );
    if touched {
        return LinkAttributes::FollowTarget;
    }
    let link_took = fs::symlink_metadata(&link).is_ok_and(|m| m.mtime() == wanted.0);
    if times.is_ok() && owner.is_ok() && link_took {
        LinkAttributes::Own
    } else {
        LinkAttributes::Unsupported
    }
}

/// Sets atime and mtime of `path` to `t`, following a symlink or not.
fn set_mtime(path: &Path, t: (i64, i64), nofollow: bool) -> nix::Result<()> {
    let ts = TimeSpec::new(t.0, t.1);
    let flag = if nofollow {
        UtimensatFlags::NoFollowSymlink
    } else {
        UtimensatFlags::FollowSymlink
    };
    utimensat(AT_FDCWD, path, &ts, &ts, flag)
}

/// Permission bits, setuid, setgid and sticky included, are kept on a file and a directory.
fn modes_round_trip(dir: &Path) -> bool {
    let file = dir.join("mode-file");
    let sub = dir.join("mode-dir");
    if !write_synced(&file, b"") || fs::create_dir(&sub).is_err() {
        return false;
    }
    let kept = |p: &Path, mode: u32| {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).is_ok()
            && fs::symlink_metadata(p).is_ok_and(|m| m.mode() & 0o7777 == mode)
    };
    let all = [
        (&file, 0o640),
        (&file, 0o7755),
        (&sub, 0o3750),
        (&sub, 0o700),
    ]
    .into_iter()
    .all(|(p, mode)| kept(p, mode));
    // Writable again, so the folder can be removed whatever the filesystem did.
    let _ = fs::set_permissions(&sub, fs::Permissions::from_mode(0o700));
    all
}

/// A FIFO can be made and is one.
fn fifo_made(dir: &Path) -> bool {
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .is_ok()
        && fs::symlink_metadata(&fifo).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_fifo()
        })
}

/// Root can give a file another owner and group, and they are kept.
fn owners_round_trip(dir: &Path) -> bool {
    let file = dir.join("owner");
    write_synced(&file, b"")
        && std::os::unix::fs::chown(&file, Some(1), Some(1)).is_ok()
        && fs::symlink_metadata(&file).is_ok_and(|m| (m.uid(), m.gid()) == (1, 1))
}

/// The finest mtime step the filesystem keeps: [`PROBE_MTIME`] set and read back, taken
/// down to the step (or rounded to it, as some filesystems do). A filesystem that keeps
/// no mtime at all is recorded at the coarsest step.
fn mtime_granularity(dir: &Path) -> u64 {
    let file = dir.join("times");
    if !write_synced(&file, b"") || set_mtime(&file, PROBE_MTIME, false).is_err() {
        return *STEPS.last().unwrap_or(&1);
    }
    let Ok(m) = fs::symlink_metadata(&file) else {
        return *STEPS.last().unwrap_or(&1);
    };
    let ns = |(s, n): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(n);
    let wrote = ns(PROBE_MTIME);
    let read = ns((m.mtime(), m.mtime_nsec()));
    STEPS
        .into_iter()
        .find(|&step| {
            let g = i128::from(step);
            read == wrote.div_euclid(g) * g || (read - wrote).abs() < g
        })
        .unwrap_or(*STEPS.last().unwrap_or(&1))
}

/// An extended attribute is set and read back.
fn xattr_round_trip(path: &Path, name: &str, value: &[u8]) -> bool {
    xattr::set(path, name, value).is_ok()
        && xattr::get(path, name).is_ok_and(|v| v.as_deref() == Some(value))
}

/// A POSIX access ACL with a named user is set and read back.
fn acl_round_trip(dir: &Path) -> bool {
    let file = dir.join("acl");
    if !write_synced(&file, b"") {
        return false;
    }
    // The kernel's xattr form (`posix_acl_xattr_header`, then entries of tag, perm, id):
    // user::rw-, user:1:r--, group::r--, mask::r--, other::---.
    const UNDEFINED: u32 = u32::MAX;
    let entries: [(u16, u16, u32); 5] = [
        (0x01, 6, UNDEFINED),
        (0x02, 4, 1),
        (0x04, 4, UNDEFINED),
        (0x10, 4, UNDEFINED),
        (0x20, 0, UNDEFINED),
    ];
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    xattr_round_trip(&file, "system.posix_acl_access", &acl)
}

/// `FICLONE` shares the extents of `data` with a new file.
fn reflinks(data: &Path, clone: &Path) -> bool {
    let (Ok(src), Ok(dst)) = (
        File::open(data),
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(clone),
    ) else {
        return false;
    };
    crate::sys::ficlone(&dst, &src).is_ok()
}

/// `RENAME_EXCHANGE` swaps a directory and a file.
fn rename_exchange(dir: &Path) -> bool {
    let a = dir.join("swap-a");
    let b = dir.join("swap-b");
    if fs::create_dir(&a).is_err() || !write_synced(&b, b"b") {
        return false;
    }
    renameat2(AT_FDCWD, &a, AT_FDCWD, &b, RenameFlags::RENAME_EXCHANGE).is_ok()
        && fs::symlink_metadata(&a).is_ok_and(|m| m.is_file())
        && fs::symlink_metadata(&b).is_ok_and(|m| m.is_dir())
}

/// `RENAME_NOREPLACE` renames onto a free name and refuses an existing one.
fn rename_noreplace(dir: &Path) -> bool {
    let a = dir.join("keep-a");
    let b = dir.join("keep-b");
    let c = dir.join("keep-c");
    if !write_synced(&a, b"a") || !write_synced(&b, b"b") {
        return false;
    }
    let refused = renameat2(AT_FDCWD, &a, AT_FDCWD, &b, RenameFlags::RENAME_NOREPLACE)
        == Err(nix::errno::Errno::EEXIST);
    refused
        && fs::read(&b).is_ok_and(|d| d == b"b")
        && renameat2(AT_FDCWD, &a, AT_FDCWD, &c, RenameFlags::RENAME_NOREPLACE).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_directory_keeps_everything_and_nothing_is_left() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let caps = probe(tmp.path()).expect("probe");
        assert!(caps.symlinks && caps.modes, "{caps:?}");
        assert_eq!(caps.link_attributes, LinkAttributes::Own, "{caps:?}");
        assert!(refusal(tmp.path(), &caps).is_none());
        assert!(caps.flock && caps.rename_noreplace, "{caps:?}");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(caps.owners, Some(true));
        } else {
            assert_eq!(caps.owners, None);
        }
        assert_eq!(
            fs::read_dir(tmp.path()).expect("list").count(),
            0,
            "the probe leaves nothing"
        );
    }

    #[test]
    fn a_refusal_names_the_filesystem_and_what_it_lacks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut caps = probe(tmp.path()).expect("probe");
        caps.fstype = "vfat".into();
        caps.symlinks = false;
        let e = refusal(tmp.path(), &caps).expect("refused");
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        let msg = e.to_string();
        assert!(
            msg.contains("vfat") && msg.contains("symbolic links"),
            "{msg}"
        );
    }

    #[test]
    fn a_stale_probe_folder_is_removed_and_a_live_one_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().join(PROBE_DIR);
        let stale = base.join("p1.1");
        let live = base.join("p2.2");
        fs::create_dir_all(&stale).expect("mkdir");
        fs::create_dir_all(&live).expect("mkdir");
        let old = TimeSpec::new(1_000_000_000, 0);
        utimensat(AT_FDCWD, &stale, &old, &old, UtimensatFlags::FollowSymlink).expect("age");
        probe(tmp.path()).expect("probe");
        assert!(!stale.exists());
        assert!(live.exists(), "another process's probe is left alone");
    }
}
