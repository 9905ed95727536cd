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
//! a tree thousands of levels deep needs no deep call stack. The held measure of a big
//! tree is walked by several threads (one per core, at most four); what they find is
//! merged into the one sum a single walk finds.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    Ok(usage_of(root)?.bytes())
}

/// What a version about to be deleted still holds, as `du` counts it, or `None` when a
/// hard-linked file has names outside it (a pair split by the moves): then the sum
/// arithmetic would count that inode twice, and the caller measures instead.
pub fn remains_held(root: &Path) -> Result<Option<u64>> {
    let usage = usage_of(root)?;
    Ok(usage.every_name_here().then(|| usage.bytes()))
}

/// What a tree's own entries use on the disk, as `du` counts it, gathered entry by entry
/// (and part by part, when several threads walk it: [`Usage::merge`]).
#[derive(Debug, Default)]
struct Usage {
    /// The usage of every entry but the hard-linked regular files.
    unlinked: u64,
    /// Per hard-linked regular file (device, inode): its link count, the names of it
    /// found, and its usage (counted once however many names are found).
    linked: HashMap<(u64, u64), Linked>,
}

#[derive(Debug, Clone, Copy)]
struct Linked {
    nlink: u64,
    names: u64,
    usage: u64,
}

impl Usage {
    fn add(&mut self, m: &fs::Metadata) {
        if m.is_file() && m.nlink() > 1 {
            self.linked
                .entry((m.dev(), m.ino()))
                .or_insert(Linked {
                    nlink: m.nlink(),
                    names: 0,
                    usage: disk_usage(m),
                })
                .names += 1;
        } else {
            self.unlinked += disk_usage(m);
        }
    }

    fn merge(&mut self, other: Usage) {
        self.unlinked += other.unlinked;
        for (inode, l) in other.linked {
            self.linked
                .entry(inode)
                .and_modify(|mine| mine.names += l.names)
                .or_insert(l);
        }
    }

    fn bytes(&self) -> u64 {
        self.unlinked + self.linked.values().map(|l| l.usage).sum::<u64>()
    }

    /// Whether every name of each hard-linked file is in the tree.
    fn every_name_here(&self) -> bool {
        self.linked.values().all(|l| l.names >= l.nlink)
    }
}

/// Directories listed on the calling thread, breadth first, before a big tree's walk is
/// shared among threads: a small tree (a version made from a few events) never starts one.
const SERIAL_DIRS: usize = 64;

/// The most threads that walk one tree.
const MAX_WALKERS: usize = 4;

/// The [`Usage`] of `root` and of every entry below it, not following any link (the
/// physical tree `du` sees). Each entry is inspected beneath its listed directory
/// (`fstatat` on the listing's descriptor), not by its whole path again. The first
/// [`SERIAL_DIRS`] directories are listed here; what remains below them is then walked by
/// up to one thread per core ([`MAX_WALKERS`]), each taking whole subtrees in turn, and
/// their usages merged: the sum is the one a single walk finds.
fn usage_of(root: &Path) -> Result<Usage> {
    let mut usage = Usage::default();
    let m = fs::symlink_metadata(root).ctx("cannot inspect", root)?;
    usage.add(&m);
    if !m.is_dir() {
        return Ok(usage);
    }
    let mut frontier = std::collections::VecDeque::from([root.to_path_buf()]);
    let mut listed = 0;
    while let Some(dir) = frontier.pop_front() {
        list_into(&dir, &mut usage, |sub| frontier.push_back(sub))?;
        listed += 1;
        if listed >= SERIAL_DIRS && frontier.len() > 1 {
            break;
        }
    }
    if frontier.is_empty() {
        return Ok(usage);
    }
    let subtrees: Vec<PathBuf> = frontier.into();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let walk = || -> Result<Usage> {
        let mut mine = Usage::default();
        while let Some(top) = subtrees.get(next.fetch_add(1, Ordering::Relaxed)) {
            let mut stack = vec![top.clone()];
            while let Some(dir) = stack.pop() {
                if failed.load(Ordering::Relaxed) {
                    return Ok(mine);
                }
                list_into(&dir, &mut mine, |sub| stack.push(sub)).inspect_err(|_| {
                    failed.store(true, Ordering::Relaxed);
                })?;
            }
        }
        Ok(mine)
    };
    let walkers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WALKERS)
        .min(subtrees.len());
    let parts: Vec<Result<Usage>> = std::thread::scope(|scope| {
        let others: Vec<_> = (1..walkers).map(|_| scope.spawn(walk)).collect();
        let here = walk();
        std::iter::once(here)
            .chain(others.into_iter().map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }))
            .collect()
    });
    for part in parts {
        usage.merge(part?);
    }
    Ok(usage)
}

/// Lists `dir`: adds each entry's `lstat` to `usage` and gives each subdirectory to
/// `more`.
fn list_into(dir: &Path, usage: &mut Usage, mut more: impl FnMut(PathBuf)) -> Result<()> {
    for e in fs::read_dir(dir).ctx("cannot list", dir)? {
        let e = e.ctx("cannot list", dir)?;
        let m = e.metadata().ctx("cannot inspect", &e.path())?;
        usage.add(&m);
        if m.is_dir() {
            more(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `du -s -B1` of `root`: the independent count (links not followed, a hard-linked
    /// inode once).
    fn du(root: &Path) -> u64 {
        let o = std::process::Command::new("du")
            .args(["-s", "-B1"])
            .arg(root)
            .output()
            .expect("du");
        assert!(o.status.success(), "du failed");
        String::from_utf8_lossy(&o.stdout)
            .split('\t')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .expect("du output")
    }

    /// A tree of `dirs` directories (so the walk is shared among threads beyond
    /// [`SERIAL_DIRS`]) with files of several sizes, long and short symlinks, and hard-link
    /// groups whose names sit in directories far apart (walked by different threads).
    fn tree(root: &Path, dirs: usize) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for d in 0..dirs {
            let dir = root.join(format!("t{}/d{d}", d % 5));
            fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..4 {
                let p = dir.join(format!("f{i}"));
                fs::write(&p, vec![b'x'; (d * 977 + i * 5000) % 20_000]).expect("write");
                files.push(p);
            }
            let long = "l".repeat(100 + d % 50);
            std::os::unix::fs::symlink(&long, dir.join("long")).expect("symlink");
            std::os::unix::fs::symlink("f0", dir.join("short")).expect("symlink");
        }
        for g in 0..dirs / 3 {
            let first = &files[(g * 13) % files.len()];
            let k = (g * 7 + 2) % dirs;
            let far = root.join(format!("t{}/d{k}", k % 5));
            fs::hard_link(first, far.join(format!("h{g}"))).expect("link");
        }
        files
    }

    #[test]
    fn a_big_tree_walked_by_several_threads_holds_what_du_says() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("v");
        tree(&root, SERIAL_DIRS * 4);
        assert_eq!(held_bytes(&root).expect("held"), du(&root));
        // Every name of each hard-linked file is inside.
        assert_eq!(remains_held(&root).expect("remains"), Some(du(&root)));
    }

    #[test]
    fn a_hard_link_with_a_name_outside_the_tree_is_not_summed_as_if_it_stayed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("v");
        let files = tree(&root, SERIAL_DIRS * 2);
        fs::hard_link(&files[files.len() / 2], tmp.path().join("outside")).expect("link");
        assert_eq!(held_bytes(&root).expect("held"), du(&root));
        assert_eq!(remains_held(&root).expect("remains"), None);
    }

    #[test]
    fn a_small_tree_and_a_single_file_are_measured_too() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("v");
        tree(&root, 3);
        assert_eq!(held_bytes(&root).expect("held"), du(&root));
        let file = root.join("t0/d0/f1");
        assert_eq!(held_bytes(&file).expect("held"), du(&file));
    }
}
