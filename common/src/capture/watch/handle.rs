//! Turning one inotify event into event lines ([`Watcher::handle`]): the watch's own
//! events first (overflow, unmount, ignored, the root itself), then a change of a named
//! entry in a watched directory.
//!
//! Owns what each kernel event means: renames paired into `move` (or, unpaired, `delete`
//! and `create`; see [`super::renames`]), the create dedupe against a scan, and the modify
//! dedupe. Invariants:
//! - **Modify dedupe.** A path gets one `modify` (or its `create`) per burst: further
//!   `IN_MODIFY`s are dropped until the path's `IN_CLOSE_WRITE` or the next `flush`
//!   (without flush lines: until the queue has been idle for
//!   [`super::renames::MOVE_WAIT`]). `IN_CLOSE_WRITE` emits `modify` only when none was
//!   emitted for the path since its last close or flush, so a file appended and closed
//!   every 100 ms gives one `modify` per append, and a file kept open gives one per batch.
//! - **Lost events are events.** `IN_Q_OVERFLOW` emits one `overflow` (per burst), and
//!   every directory is re-watched so later events are seen again; the reader rescans.
//! - The root's watch going away is fatal: `IN_UNMOUNT` on the root emits `unmount .` and
//!   is [`Error::IdentityMismatch`]; the root deleted or moved is [`Error::Refused`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use inotify::EventMask;

use super::renames::MovedFrom;
use super::{RawEvent, Watcher};
use crate::error::{Error, Result, show};
use crate::format::events::{EntryType, EventKind, EventLine, join_rel};

fn lstat_type(path: &Path) -> Option<EntryType> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| EntryType::of(m.file_type()))
}

impl Watcher {
    /// Handles one inotify event: the watch's own events first (overflow, unmount, ignored,
    /// the root itself), then a change of a named entry in a watched directory.
    pub(super) fn handle(&mut self, e: RawEvent) -> Result<()> {
        if e.mask.contains(EventMask::Q_OVERFLOW) {
            return self.overflowed();
        }
        let Some(dir) = self.map.dir_of(e.wd).map(Path::to_path_buf) else {
            return Ok(()); // a watch already dropped (moved out, excluded, deleted)
        };
        let is_root = e.wd == self.root_wd;
        if e.mask.contains(EventMask::UNMOUNT) {
            return self.unmounted(e.wd, dir, is_root);
        }
        if e.mask.contains(EventMask::IGNORED) {
            return self.ignored(e.wd, &dir, is_root);
        }
        if is_root
            && e.mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
        {
            let what = if e.mask.contains(EventMask::DELETE_SELF) {
                "deleted"
            } else {
                "moved away"
            };
            return Err(Error::Refused(format!(
                "the watched root {} was {what}; nothing is left to watch",
                show(&self.root)
            )));
        }
        let Some(name) = e.name else {
            // An event on the watched directory itself. Its parent reports the same change
            // by name, except for the root, which has no watched parent.
            if is_root && e.mask.contains(EventMask::ATTRIB) {
                self.emit(
                    EventKind::Attrib,
                    Some(EntryType::Dir),
                    PathBuf::from("."),
                    None,
                );
            }
            return Ok(());
        };
        let rel = join_rel(&dir, &name);
        self.entry_changed(e.mask, e.cookie, rel)
    }

    /// `IN_UNMOUNT` on the watch of `dir`: every watch on the unmounted filesystem reports
    /// it; one line for the topmost one, the mountpoint, whose parent is on another
    /// filesystem. The root's is fatal.
    fn unmounted(&mut self, wd: i32, dir: PathBuf, is_root: bool) -> Result<()> {
        let topmost = is_root || self.map.is_mount_top(wd, &dir);
        if topmost {
            self.emit(EventKind::Unmount, Some(EntryType::Dir), dir.clone(), None);
        }
        if is_root {
            return Err(Error::IdentityMismatch(format!(
                "the filesystem holding the watched root {} was unmounted; \
                 watch it again once it is mounted",
                show(&self.root)
            )));
        }
        if topmost {
            // What is under the mountpoint now is what the tree holds there: watch it
            // (no lines: the reader knows from `unmount` that this subtree changed).
            self.watch_tree(&dir, false)?;
        }
        Ok(())
    }

    /// `IN_IGNORED`: the watch is gone; the root's going away is fatal.
    fn ignored(&mut self, wd: i32, dir: &Path, is_root: bool) -> Result<()> {
        self.map.remove(wd, dir);
        if is_root {
            return Err(Error::Refused(format!(
                "the watch on the root {} went away (it was deleted, moved or unmounted)",
                show(&self.root)
            )));
        }
        Ok(())
    }

    /// A change of the entry `rel` reported by its parent's watch.
    fn entry_changed(&mut self, mask: EventMask, cookie: u32, rel: PathBuf) -> Result<()> {
        let is_dir = mask.contains(EventMask::ISDIR);
        let excluded = self.excludes.is_excluded(&rel, is_dir);
        if mask.contains(EventMask::MOVED_FROM) {
            let slot = (!excluded).then(|| self.lines.reserve());
            self.renames.push(MovedFrom {
                slot,
                time: crate::format::time::now_rfc3339(),
                cookie,
                rel,
                is_dir,
                excluded,
                at: Instant::now(),
            });
            return Ok(());
        }
        if mask.contains(EventMask::MOVED_TO) {
            return self.moved_to(cookie, rel, is_dir, excluded);
        }
        if excluded {
            return Ok(());
        }
        if mask.contains(EventMask::CREATE) {
            if self.scanned.remove(&rel) {
                return Ok(()); // the scan of its parent already reported it
            }
            return self.created(rel, is_dir);
        }
        if mask.contains(EventMask::DELETE) {
            self.dirty.remove(&rel);
            self.scanned.remove(&rel);
            let etype = is_dir.then_some(EntryType::Dir);
            self.emit(EventKind::Delete, etype, rel, None);
            return Ok(());
        }
        self.content_or_attrib(mask, rel, is_dir);
        Ok(())
    }

    /// `IN_MODIFY`, `IN_CLOSE_WRITE` (the modify dedupe) and `IN_ATTRIB` of an entry.
    fn content_or_attrib(&mut self, mask: EventMask, rel: PathBuf, is_dir: bool) {
        if mask.contains(EventMask::MODIFY) {
            if self.dirty.insert(rel.clone()) {
                let t = lstat_type(&self.root.join(&rel));
                self.emit(EventKind::Modify, t, rel, None);
            } else if self.lines.in_burst() {
                // Already reported, but still changing: the burst is not quiet yet.
                self.lines.touch_burst();
            }
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            if !self.dirty.remove(&rel) {
                let t = lstat_type(&self.root.join(&rel));
                self.emit(EventKind::Modify, t, rel, None);
            }
        } else if mask.contains(EventMask::ATTRIB) {
            let t = if is_dir {
                Some(EntryType::Dir)
            } else {
                lstat_type(&self.root.join(&rel))
            };
            self.emit(EventKind::Attrib, t, rel, None);
        }
    }

    /// A new entry at `rel` (created, or moved in from outside).
    fn created(&mut self, rel: PathBuf, is_dir: bool) -> Result<()> {
        if is_dir {
            self.emit(EventKind::Create, Some(EntryType::Dir), rel.clone(), None);
            self.watch_tree(&rel, true)
        } else {
            let t = lstat_type(&self.root.join(&rel));
            if t == Some(EntryType::File) {
                self.dirty.insert(rel.clone());
            }
            self.emit(EventKind::Create, t, rel, None);
            Ok(())
        }
    }

    /// `IN_MOVED_TO`: paired with its `IN_MOVED_FROM`, a `move` in the place the from
    /// reserved; unpaired, moved in from outside (a `create`). A side that is excluded
    /// turns the move into a `create` or a `delete`, or into nothing.
    fn moved_to(
        &mut self,
        cookie: u32,
        to: PathBuf,
        is_dir: bool,
        to_excluded: bool,
    ) -> Result<()> {
        let Some(from) = self.renames.take(cookie) else {
            if to_excluded {
                return Ok(());
            }
            return self.created(to, is_dir);
        };
        self.dirty.remove(&from.rel);
        match (from.excluded, to_excluded) {
            (true, true) => Ok(()),
            (true, false) => {
                self.lines.fill(from.slot, None);
                self.created(to, is_dir)
            }
            (false, true) => {
                self.moved_out(from);
                Ok(())
            }
            (false, false) => {
                if is_dir {
                    self.map.rename_subtree(&from.rel, &to);
                }
                let t = if is_dir {
                    Some(EntryType::Dir)
                } else {
                    lstat_type(&self.root.join(&to))
                };
                let mut line = EventLine::now(EventKind::Move, t, from.rel, Some(to));
                line.time = from.time;
                self.lines.fill(from.slot, Some(line));
                Ok(())
            }
        }
    }

    /// An entry left the tree (or moved to an excluded path): `delete`, and its watches go.
    pub(super) fn moved_out(&mut self, m: MovedFrom) {
        if m.excluded {
            return;
        }
        self.dirty.remove(&m.rel);
        if m.is_dir {
            for desc in self.map.remove_subtree(&m.rel) {
                let _ = self.inotify.watches().remove(desc);
            }
        }
        let etype = m.is_dir.then_some(EntryType::Dir);
        let mut line = EventLine::now(EventKind::Delete, etype, m.rel, None);
        line.time = m.time;
        self.lines.fill(m.slot, Some(line));
    }

    fn overflowed(&mut self) -> Result<()> {
        if !self.overflow_sent {
            self.overflow_sent = true;
            self.emit(EventKind::Overflow, None, PathBuf::new(), None);
        }
        // Creates were lost: watch every directory again (no lines; the reader rescans).
        self.watch_tree(Path::new("."), false)
    }
}
