//! The watch map: which directory (relative to the root, `.` being the root) each inotify
//! watch descriptor watches, the way back from a directory to its watch, and the device of
//! each watched directory (to tell a mountpoint on `IN_UNMOUNT`).
//!
//! Invariants: the map mirrors the tree. Every watched directory has exactly one relative
//! path and every path one watch (the two maps are inverse); a directory moved within the
//! tree keeps its watches and its whole subtree is renamed ([`WatchMap::rename_subtree`]);
//! a directory moved out or excluded loses its watches ([`WatchMap::remove_subtree`]);
//! `IN_IGNORED` drops an entry ([`WatchMap::remove`]). Nothing here talks to the kernel:
//! the caller adds and removes the watches themselves.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use inotify::WatchDescriptor;

/// One watched directory.
#[derive(Debug)]
struct Watched {
    desc: WatchDescriptor,
    /// Its path relative to the root (`.` is the root), shared with `by_path`'s key.
    dir: Arc<Path>,
    /// `st_dev` of the directory, when known (to find the mountpoint on `IN_UNMOUNT`).
    dev: Option<u64>,
}

/// wd ↔ directory path, and wd → device. Each path is stored once, shared by both maps: at
/// 50,000 directories the map is most of the watcher's memory (docs/benchmarks.md).
#[derive(Debug, Default)]
pub(super) struct WatchMap {
    /// wd → the directory it watches.
    dirs: HashMap<i32, Watched>,
    /// directory path → wd (inverse of `dirs`).
    by_path: HashMap<Arc<Path>, i32>,
}

impl WatchMap {
    /// How many directories are watched.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// The directory watch `wd` watches (none: a watch already dropped).
    pub fn dir_of(&self, wd: i32) -> Option<&Path> {
        self.dirs.get(&wd).map(|w| &*w.dir)
    }

    /// The watch of directory `dir`.
    pub fn wd_of(&self, dir: &Path) -> Option<i32> {
        self.by_path.get(dir).copied()
    }

    /// Records that `wd` now watches `dir` (on device `dev` when known). The kernel gives
    /// the same wd again for a directory already watched: a path it had before is dropped.
    pub fn insert(&mut self, wd: WatchDescriptor, dir: &Path, dev: Option<u64>) {
        let id = wd.get_watch_descriptor_id();
        let shared: Arc<Path> = Arc::from(dir);
        let old = self.dirs.insert(
            id,
            Watched {
                desc: wd,
                dir: shared.clone(),
                dev,
            },
        );
        if let Some(old) = old {
            if *old.dir != *dir && self.by_path.get(&*old.dir) == Some(&id) {
                self.by_path.remove(&*old.dir);
            }
            if dev.is_none()
                && let Some(w) = self.dirs.get_mut(&id)
            {
                // Re-watched without a device read: keep the one known.
                w.dev = old.dev;
            }
        }
        self.by_path.insert(shared, id);
    }

    /// Forgets watch `wd` of `dir` (its `IN_IGNORED`: the kernel dropped it).
    pub fn remove(&mut self, wd: i32, dir: &Path) {
        self.dirs.remove(&wd);
        if self.by_path.get(dir) == Some(&wd) {
            self.by_path.remove(dir);
        }
    }

    /// The entries at or under `rel`.
    fn subtree(&self, rel: &Path) -> Vec<(Arc<Path>, i32)> {
        self.by_path
            .iter()
            .filter(|(p, _)| p.starts_with(rel))
            .map(|(p, &wd)| (p.clone(), wd))
            .collect()
    }

    /// The directory `from` was moved to `to` within the tree: it and everything under it
    /// keep their watches under their new paths.
    pub fn rename_subtree(&mut self, from: &Path, to: &Path) {
        for (old, wd) in self.subtree(from) {
            let new: Arc<Path> = match old.strip_prefix(from) {
                Ok(tail) if tail.as_os_str().is_empty() => Arc::from(to),
                Ok(tail) => Arc::from(to.join(tail)),
                Err(_) => continue,
            };
            self.by_path.remove(&*old);
            self.by_path.insert(new.clone(), wd);
            if let Some(w) = self.dirs.get_mut(&wd) {
                w.dir = new;
            }
        }
    }

    /// Forgets `rel` and everything under it; returns their watches, for the caller to
    /// remove from the kernel.
    pub fn remove_subtree(&mut self, rel: &Path) -> Vec<WatchDescriptor> {
        let mut gone = Vec::new();
        for (path, wd) in self.subtree(rel) {
            self.by_path.remove(&*path);
            if let Some(w) = self.dirs.remove(&wd) {
                gone.push(w.desc);
            }
        }
        gone
    }

    /// Is `dir` (watched by `wd`) the top of a filesystem in the tree: its device unknown,
    /// or not its parent's (the root's parent is taken to be the root)?
    pub fn is_mount_top(&self, wd: i32, dir: &Path) -> bool {
        let dev_of = |wd: &i32| self.dirs.get(wd).and_then(|w| w.dev);
        let dev = dev_of(&wd);
        let parent_dev = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => self.by_path.get(p),
            _ => self.by_path.get(Path::new(".")),
        }
        .and_then(dev_of);
        dev.is_none() || parent_dev != dev
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inotify::{Inotify, WatchMask};
    use std::path::PathBuf;

    /// Watches every directory of `rels` under a fresh temporary root.
    fn watched(rels: &[&str]) -> (tempfile::TempDir, Inotify, WatchMap) {
        let root = tempfile::tempdir().expect("tempdir");
        let inotify = Inotify::init().expect("inotify");
        let mut map = WatchMap::default();
        for rel in rels {
            let abs = root.path().join(rel);
            std::fs::create_dir_all(&abs).expect("mkdir");
            let wd = inotify
                .watches()
                .add(&abs, WatchMask::CREATE)
                .expect("watch");
            map.insert(wd, Path::new(rel), Some(1));
        }
        (root, inotify, map)
    }

    fn paths(map: &WatchMap) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = map.by_path.keys().map(|p| p.to_path_buf()).collect();
        out.sort();
        for p in &out {
            let wd = map.wd_of(p).expect("inverse");
            assert_eq!(map.dir_of(wd), Some(p.as_path()), "inverse of {p:?}");
        }
        out
    }

    #[test]
    fn a_moved_subtree_keeps_its_watches_under_new_paths() {
        let (_root, _inotify, mut map) = watched(&[".", "a", "a/b", "a/b/c", "ab"]);
        let wd_c = map.wd_of(Path::new("a/b/c")).expect("c");
        map.rename_subtree(Path::new("a"), Path::new("z/y"));
        assert_eq!(
            paths(&map),
            [".", "ab", "z/y", "z/y/b", "z/y/b/c"].map(PathBuf::from),
            "`ab` is not under `a`"
        );
        assert_eq!(map.wd_of(Path::new("z/y/b/c")), Some(wd_c));
        assert_eq!(map.len(), 5);
    }

    #[test]
    fn removing_a_subtree_returns_its_watches() {
        let (_root, _inotify, mut map) = watched(&[".", "a", "a/b", "ab"]);
        let gone = map.remove_subtree(Path::new("a"));
        assert_eq!(gone.len(), 2);
        assert_eq!(paths(&map), [".", "ab"].map(PathBuf::from));
        let wd = map.wd_of(Path::new("ab")).expect("ab");
        map.remove(wd, Path::new("ab"));
        assert_eq!(paths(&map), [PathBuf::from(".")]);
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_rewatched_directory_has_one_path() {
        let (root, inotify, mut map) = watched(&[".", "a"]);
        // The same directory watched again under another name (as after a missed move).
        let wd = inotify
            .watches()
            .add(root.path().join("a"), WatchMask::CREATE)
            .expect("watch");
        map.insert(wd, Path::new("b"), None);
        assert_eq!(paths(&map), [".", "b"].map(PathBuf::from));
    }

    #[test]
    fn a_mount_top_is_on_another_device_than_its_parent() {
        let (_root, _inotify, mut map) = watched(&[".", "a"]);
        let wd_a = map.wd_of(Path::new("a")).expect("a");
        let wd_root = map.wd_of(Path::new(".")).expect("root");
        assert!(!map.is_mount_top(wd_a, Path::new("a")), "same device");
        map.dirs.get_mut(&wd_a).expect("a").dev = Some(2);
        assert!(map.is_mount_top(wd_a, Path::new("a")));
        map.dirs.get_mut(&wd_a).expect("a").dev = None;
        assert!(map.is_mount_top(wd_a, Path::new("a")), "device unknown");
        assert!(!map.is_mount_top(wd_root, Path::new(".")));
    }
}
