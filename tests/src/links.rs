//! What I8 (docs/format.md#invariants) makes real, computed from the source alone (an oracle
//! independent of the library): the directories that a relative source link's target leaves
//! by `..`, walked lexically from the link's directory, and which of them a version must
//! hold as real directories given the ones it already must.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Every directory (relative to `src`) some relative symlink below `src` leaves by `..`,
/// when the link never climbs above `src`.
pub fn left_by_links(src: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let Ok(rd) = fs::read_dir(src.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let child = rel.join(e.file_name());
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                pending.push(child);
            } else if ft.is_symlink()
                && let Ok(text) = fs::read_link(e.path())
            {
                out.extend(walk(&rel, &text));
            }
        }
    }
    out
}

/// The directories a walk of `target` from directory `from` leaves; none when it climbs
/// above the root or is absolute.
fn walk(from: &Path, target: &Path) -> Vec<PathBuf> {
    if target.is_absolute() {
        return Vec::new();
    }
    let mut at: Vec<OsString> = from.iter().map(|c| c.to_owned()).collect();
    let mut left = Vec::new();
    for c in target.components() {
        match c {
            Component::Normal(n) => at.push(n.to_owned()),
            Component::ParentDir => {
                if at.is_empty() {
                    return Vec::new();
                }
                left.push(at.iter().collect::<PathBuf>());
                at.pop();
            }
            _ => {}
        }
    }
    left
}

/// `real` (paths relative to the version, `.` for the root) grown by every directory of
/// `src` that I8 makes real: one some link leaves, whose parent is real.
pub fn kept_real(src: &Path, real: impl IntoIterator<Item = PathBuf>) -> BTreeSet<PathBuf> {
    let mut out: BTreeSet<PathBuf> = real.into_iter().collect();
    for dir in left_by_links(src) {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let is_dir = fs::symlink_metadata(src.join(&dir)).is_ok_and(|m| m.is_dir());
        if is_dir && out.contains(&parent) {
            out.insert(dir);
        }
    }
    out
}
