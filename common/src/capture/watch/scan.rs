//! Installing watches, top-down: each directory's watch exists before its entries are read
//! ([`Watcher::watch_tree`]), at start-up, for a directory created or moved in later, and
//! again after an overflow.
//!
//! Owns the watch mask, the scan that reports what a new directory already holds (as
//! `create`), and what a directory that cannot be watched becomes: the inotify watch limit
//! is [`Error::WatchLimit`] (with the sysctl value to raise it to); a directory gone since
//! it was seen is skipped (its parent's watch reports that); anything else is a
//! [`WatchWarning`] and the walk goes on.
//!
//! Invariant: watch before scan. Anything created in a directory after its watch exists is
//! an inotify event; anything created before is found by the scan, so no change is neither
//! seen nor scanned (a create seen both ways is reported once, see `Watcher::scanned`).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use inotify::WatchMask;

use super::Watcher;
use crate::error::{Error, InotifyLimit, IoContext, Result, WatchLimit, show};
use crate::format::events::{EntryType, EventKind, join_rel};
use crate::format::exclude::Excludes;

fn watch_mask() -> WatchMask {
    WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
    // IN_UNMOUNT is always reported by the kernel; it is not a bit one asks for.
}

/// Something the watcher could not do that leaves part of the tree unseen but does not stop
/// the watch: handed to the caller's warning callback, in order.
#[derive(Debug, thiserror::Error)]
pub enum WatchWarning {
    /// A directory could not be watched (other than gone, or the watch limit).
    #[error(
        "cannot watch {}: {source} (changes below it are not seen)",
        show(path)
    )]
    Unwatched { path: PathBuf, source: io::Error },
    /// A watched directory could not be listed.
    #[error("cannot read {}: {source}", show(path))]
    Unreadable { path: PathBuf, source: io::Error },
}

/// The error for ENOSPC from inotify_add_watch.
fn watch_limit_error(root: &Path, excludes: &Excludes, watched: usize) -> Error {
    let total = count_dirs(root, excludes).max(watched + 1);
    let (current, limit) = match watch_limit_in_force() {
        Some((value, limit)) => (Some(value), limit),
        None => (None, InotifyLimit::Watches),
    };
    let suggest = match current {
        Some(c) => (c + total as u64).max(c * 2),
        None => (total as u64 * 2).max(524_288),
    };
    Error::WatchLimit(WatchLimit::TooManyWatches {
        root: root.to_path_buf(),
        watched,
        total,
        current,
        limit,
        suggest,
    })
}

/// The inotify watch limit in force for this process and which one it is: the lower of
/// the global limit and the user namespace's own (a container may set it lower), when
/// /proc tells.
fn watch_limit_in_force() -> Option<(u64, InotifyLimit)> {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    lower_limit(
        read("/proc/sys/fs/inotify/max_user_watches"),
        read("/proc/sys/user/max_inotify_watches"),
    )
}

/// The lower of the global and the namespace's limit (the global one when they are equal:
/// that is the one people know).
fn lower_limit(global: Option<u64>, namespace: Option<u64>) -> Option<(u64, InotifyLimit)> {
    match (global, namespace) {
        (Some(g), Some(n)) if n < g => Some((n, InotifyLimit::NamespaceWatches)),
        (Some(g), _) => Some((g, InotifyLimit::Watches)),
        (None, Some(n)) => Some((n, InotifyLimit::NamespaceWatches)),
        (None, None) => None,
    }
}

/// Counts the directories a full watch of `root` needs (the root included).
fn count_dirs(root: &Path, excludes: &Excludes) -> usize {
    let mut n = 0;
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        n += 1;
        let Ok(rd) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for ent in rd.flatten() {
            if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let child = join_rel(&rel, &ent.file_name());
                if !excludes.is_excluded(&child, true) {
                    stack.push(child);
                }
            }
        }
    }
    n
}

impl Watcher {
    /// Watches the directory `rel` and everything below it, top-down: each directory's watch
    /// exists before its entries are read. With `report`, each entry found is a `create`.
    /// With `one_file_system`, a directory on another device than the root's is neither
    /// watched nor scanned (its parent's watch still reports the directory itself).
    pub(super) fn watch_tree(&mut self, rel: &Path, report: bool) -> Result<()> {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let abs = self.root.join(&dir);
            let dev = std::fs::symlink_metadata(&abs).ok().map(|m| m.dev());
            let other_fs = dev.is_some_and(|d| d != self.root_dev);
            if self.options.one_file_system && other_fs && dir.as_os_str() != "." {
                continue;
            }
            if !self.add_watch(&dir, &abs, dev, report)? {
                continue;
            }
            let entries = match std::fs::read_dir(&abs) {
                Ok(rd) => rd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    self.warnings.push(WatchWarning::Unreadable {
                        path: abs,
                        source: e,
                    });
                    continue;
                }
            };
            for ent in entries.flatten() {
                let child = join_rel(&dir, &ent.file_name());
                let Ok(ft) = ent.file_type() else { continue };
                let etype = EntryType::of(ft);
                let child_is_dir = etype == EntryType::Dir;
                if self.excludes.is_excluded(&child, child_is_dir) {
                    continue;
                }
                if report {
                    self.scanned.insert(child.clone());
                    if etype == EntryType::File {
                        self.dirty.insert(child.clone());
                    }
                    self.emit(EventKind::Create, Some(etype), child.clone(), None);
                }
                if child_is_dir {
                    stack.push(child);
                }
            }
        }
        Ok(())
    }

    /// Watches the one directory `dir` (at `abs`, on device `dev` when known) and records it
    /// in the wd map. `Ok(false)` when it is not watched but the walk goes on (gone, or a
    /// [`WatchWarning`]); the watch limit is an error (after an `overflow` line while
    /// running, with `report`).
    fn add_watch(
        &mut self,
        dir: &Path,
        abs: &Path,
        dev: Option<u64>,
        report: bool,
    ) -> Result<bool> {
        let e = match self.inotify.watches().add(abs, watch_mask()) {
            Ok(wd) => {
                self.map.insert(wd, dir, dev);
                return Ok(true);
            }
            Err(e) => e,
        };
        match e.raw_os_error() {
            Some(libc::ENOSPC) => {
                if report {
                    // While running: part of the tree is unwatched, so the reader must
                    // rescan whatever it makes of this batch.
                    self.emit(EventKind::Overflow, None, PathBuf::new(), None);
                }
                Err(watch_limit_error(
                    &self.root,
                    &self.excludes,
                    self.map.len(),
                ))
            }
            // Gone or replaced by a non-directory since we saw it: its parent's watch
            // reports that.
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(false),
            _ if dir.as_os_str() == "." => Err(e).ctx("cannot watch", &self.root),
            _ => {
                self.warnings.push(WatchWarning::Unwatched {
                    path: abs.to_path_buf(),
                    source: e,
                });
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_limit_is_the_one_quoted() {
        assert_eq!(
            lower_limit(Some(524_288), Some(8_192)),
            Some((8_192, InotifyLimit::NamespaceWatches))
        );
        assert_eq!(
            lower_limit(Some(8_192), Some(8_192)),
            Some((8_192, InotifyLimit::Watches))
        );
        assert_eq!(
            lower_limit(Some(8_192), Some(1 << 20)),
            Some((8_192, InotifyLimit::Watches))
        );
        assert_eq!(lower_limit(None, None), None);
    }
}
