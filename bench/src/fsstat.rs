//! Counting what a snapshot costs on disk, never following symlinks.
//!
//! Owns: [`count_entries`] (directory entries below a root: what a snapshot method had to
//! create) and [`usage`] (allocated bytes from `st_blocks` and distinct inodes over several
//! roots, each inode counted once, as `du -s` does across its arguments).
//!
//! Invariants: symlinks are counted as entries and never followed, so a vault link to a
//! whole directory is one entry; hard links are one inode in [`usage`] but one entry each in
//! [`count_entries`].

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Entries below `root` (the root itself not counted), not following symlinks.
pub fn count_entries(root: &Path) -> Result<u64> {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("read_dir {}", dir.display()))? {
            let e = e?;
            n += 1;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(n)
}

/// Allocated bytes and distinct inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Usage of `roots` together, each inode (by device and number) counted once.
pub fn usage(roots: &[PathBuf]) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut u = Usage::default();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).with_context(|| format!("lstat {}", p.display()))?;
        if seen.insert((m.dev(), m.ino())) {
            u.bytes += m.blocks() * 512;
            u.inodes += 1;
        }
        if m.is_dir() {
            for e in fs::read_dir(&p).with_context(|| format!("read_dir {}", p.display()))? {
                stack.push(e?.path());
            }
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_entries_not_followed() -> Result<()> {
        let t = tempfile::tempdir()?;
        let r = t.path();
        fs::create_dir_all(r.join("a/b"))?;
        fs::write(r.join("a/b/f"), b"x")?;
        std::os::unix::fs::symlink("a", r.join("link"))?;
        fs::hard_link(r.join("a/b/f"), r.join("h"))?;
        // a, a/b, a/b/f, link, h
        assert_eq!(count_entries(r)?, 5);
        // root, a, a/b, f (= h), link
        assert_eq!(usage(&[r.to_path_buf()])?.inodes, 5);
        Ok(())
    }
}
