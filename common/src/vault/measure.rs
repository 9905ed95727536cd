//! Measuring version trees: the sizes index.tsv records, counted the one way every writer
//! and checker uses (docs/format.md#invariants I7).
//!
//! Owns two measures:
//! - **logical** ([`measure_tree`]): the regular files a version reads as, and their
//!   apparent bytes, through vault links (`files`, `logical_bytes`);
//! - **held** ([`held_bytes`], [`remains_held`]): the disk usage of a version's own real
//!   entries, as `du` counts it — links not followed, a hard-linked inode counted once
//!   (`held_bytes`).
//!
//! [`version_sizes`] is both for one version, as a recount and a check compare them.
//!
//! Invariant: a snapshot, a retirement, a recount and a check all count through these
//! functions, so a check agrees with what was written. Every walk keeps its own stack, so
//! a tree thousands of levels deep needs no deep call stack.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::vault::tree::{Links, Lookalikes, Node, Visitor, Walk};

/// Disk usage of one entry as `du` counts it (allocated 512-byte blocks) from its
/// metadata; pass an `lstat` so that a link counts as itself.
pub fn disk_usage(meta: &fs::Metadata) -> u64 {
    meta.blocks() * 512
}

/// The three counts of one version's index row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sizes {
    /// Regular files, through vault links.
    pub files: u64,
    /// Their apparent bytes.
    pub logical_bytes: u64,
    /// Disk usage of the version's own real entries.
    pub held_bytes: u64,
}

/// The logical and held sizes of version `vdir` of the job folder `job`.
pub fn version_sizes(job: &Path, vdir: &str, lookalikes: &Lookalikes) -> Result<Sizes> {
    let (files, logical_bytes) = measure_tree(job, vdir, Path::new(""), lookalikes)?;
    Ok(Sizes {
        files,
        logical_bytes,
        held_bytes: held_bytes(&job.join(vdir))?,
    })
}

/// Regular files and their apparent bytes at `rel` in version `phys`, through vault links.
/// What does not exist counts nothing; neither does a link naming its own version.
pub fn measure_tree(
    job: &Path,
    phys: &str,
    rel: &Path,
    lookalikes: &Lookalikes,
) -> Result<(u64, u64)> {
    let mut count = FileCount::default();
    Walk::new(job, lookalikes, Links::Follow).run(phys, rel, &mut count)?;
    Ok((count.files, count.bytes))
}

/// Counts regular files and their apparent bytes.
#[derive(Default)]
struct FileCount {
    files: u64,
    bytes: u64,
}

impl Visitor for FileCount {
    fn entry(&mut self, node: &mut Node) -> Result<()> {
        if !node.file_type.is_file() {
            return Ok(());
        }
        match node.metadata() {
            Ok(m) => {
                self.files += 1;
                self.bytes += m.len();
                Ok(())
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn unreachable(&mut self, abs: &Path, error: std::io::Error) -> Result<()> {
        if error.kind() == std::io::ErrorKind::NotFound {
            return Ok(());
        }
        Err(error).ctx("cannot inspect", abs)
    }

    fn self_link(&mut self, _node: &Node) -> Result<()> {
        Ok(())
    }
}

/// Disk usage of a version's own real entries (du, not following links; a hard-linked
/// inode counts once).
pub fn held_bytes(root: &Path) -> Result<u64> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0u64;
    for_each_own_entry(root, |m| {
        if !(m.is_file() && m.nlink() > 1 && !seen.insert((m.dev(), m.ino()))) {
            total += disk_usage(m);
        }
    })?;
    Ok(total)
}

/// What a version about to be deleted still holds, as `du` counts it, or `None` when a
/// hard-linked file has names outside it (a pair split by the moves): then the sum
/// arithmetic would count that inode twice, and the caller measures instead.
pub fn remains_held(root: &Path) -> Result<Option<u64>> {
    // Per hard-linked inode: its link count and the names of it found here.
    let mut inodes: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    let mut total = 0u64;
    for_each_own_entry(root, |m| {
        if m.is_file() && m.nlink() > 1 {
            let seen = inodes.entry((m.dev(), m.ino())).or_insert((m.nlink(), 0));
            seen.1 += 1;
            if seen.1 > 1 {
                return;
            }
        }
        total += disk_usage(m);
    })?;
    Ok(inodes
        .values()
        .all(|(nlink, seen)| seen >= nlink)
        .then_some(total))
}

/// Calls `visit` with the metadata of `root` and of every entry below it, not following
/// any link (the physical tree `du` sees). Each entry is inspected beneath its listed
/// directory (`fstatat` on the listing's descriptor), not by its whole path again.
fn for_each_own_entry(root: &Path, mut visit: impl FnMut(&fs::Metadata)) -> Result<()> {
    let m = fs::symlink_metadata(root).ctx("cannot inspect", root)?;
    visit(&m);
    if !m.is_dir() {
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).ctx("cannot list", &p)? {
            let e = e.ctx("cannot list", &p)?;
            let m = e.metadata().ctx("cannot inspect", &e.path())?;
            visit(&m);
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}
