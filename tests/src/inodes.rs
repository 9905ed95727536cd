//! Hard-link identity as an oracle independent of the library (docs/format.md#invariants I5):
//! which names of a tree share one inode, read with `std::fs` alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The groups of regular files below `root` that share one inode (two names or more), each
/// group its sorted relative paths; links are not followed.
pub fn groups(root: &Path) -> BTreeSet<Vec<PathBuf>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display())) {
            let e = e.expect("entry");
            let child = rel.join(e.file_name());
            let m = fs::symlink_metadata(root.join(&child)).expect("lstat");
            if m.is_dir() {
                pending.push(child);
            } else if m.is_file() && m.nlink() > 1 {
                by_inode.entry((m.dev(), m.ino())).or_default().push(child);
            }
        }
    }
    by_inode
        .into_values()
        .filter(|names| names.len() > 1)
        .map(|mut names| {
            names.sort();
            names
        })
        .collect()
}

/// For each group of names sharing an inode in `source` (a `cp -a` of it), the problems of
/// the version directory `version` read through its links: every name must be a regular file
/// there, and all of one group must be one inode (the version copied them together, or holds
/// them through links into the one older version that did).
pub fn version_keeps_groups(source: &Path, version: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for group in groups(source) {
        let mut inodes = BTreeSet::new();
        for name in &group {
            match fs::metadata(version.join(name)) {
                Ok(m) if m.is_file() => {
                    inodes.insert((m.dev(), m.ino()));
                }
                Ok(_) => out.push(format!(
                    "{}: not a regular file in the version",
                    name.display()
                )),
                Err(e) => out.push(format!("{}: {e}", name.display())),
            }
        }
        if inodes.len() > 1 {
            out.push(format!(
                "{group:?} share one inode in the source, {} in the version",
                inodes.len()
            ));
        }
    }
    out
}

/// Every name below `root` of the inode at `root/rel` (`rel` itself included) when it is a
/// regular file with more than one link; just `rel` otherwise.
pub fn names_sharing(root: &Path, rel: &Path) -> Vec<PathBuf> {
    match fs::symlink_metadata(root.join(rel)) {
        Ok(m) if m.is_file() && m.nlink() > 1 => groups(root)
            .into_iter()
            .find(|g| g.iter().any(|p| p == rel))
            .unwrap_or_else(|| vec![rel.to_path_buf()]),
        _ => vec![rel.to_path_buf()],
    }
}
