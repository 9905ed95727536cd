//! Measuring version trees: the counts index.tsv records (`files`, `logical_bytes` through
//! vault links; `held_bytes` as `du` counts a version's own entries) and what a version
//! about to be retired still holds.
//!
//! Invariant: every size the project writes or checks is counted here, one way, so a
//! recount and a check agree with what was written.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::engine::copy;
use crate::error::{IoContext, Result};
use crate::vault::tree::{self, Entry, Lookalikes};

/// Regular files and their apparent bytes at `rel` in version `phys`, through vault links.
pub fn measure_tree(
    job: &Path,
    phys: &str,
    rel: &Path,
    lookalikes: &Lookalikes,
) -> Result<(u64, u64)> {
    let abs = if rel.as_os_str().is_empty() {
        job.join(phys)
    } else {
        job.join(phys).join(rel)
    };
    let meta = match fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).ctx("cannot inspect", &abs),
    };
    if meta.file_type().is_symlink() && !rel.as_os_str().is_empty() {
        if let Entry::VaultLink { holder } =
            tree::classify(&abs, rel, phys, meta.file_type(), lookalikes)?
        {
            if holder == phys {
                return Ok((0, 0));
            }
            return measure_tree(job, &holder, rel, lookalikes);
        }
        return Ok((0, 0));
    }
    if meta.is_file() {
        return Ok((1, meta.len()));
    }
    if !meta.is_dir() {
        return Ok((0, 0));
    }
    let mut total = (0, 0);
    for e in fs::read_dir(&abs).ctx("cannot list", &abs)? {
        let e = e.ctx("cannot list", &abs)?;
        let (f, b) = measure_tree(job, phys, &rel.join(e.file_name()), lookalikes)?;
        total.0 += f;
        total.1 += b;
    }
    Ok(total)
}

/// Disk usage of a version's own real entries (du, not following links; a hard-linked
/// inode counts once).
pub fn held_bytes(root: &Path) -> Result<u64> {
    held_bytes_seen(root, &mut HashSet::new())
}

fn held_bytes_seen(root: &Path, seen: &mut HashSet<(u64, u64)>) -> Result<u64> {
    let meta = fs::symlink_metadata(root).ctx("cannot inspect", root)?;
    if meta.is_file() && meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
        return Ok(0);
    }
    let mut total = copy::disk_usage(&meta);
    if meta.is_dir() {
        for e in fs::read_dir(root).ctx("cannot list", root)? {
            let e = e.ctx("cannot list", root)?;
            total += held_bytes_seen(&e.path(), seen)?;
        }
    }
    Ok(total)
}

/// What a version about to be deleted still holds, as `du` counts it, or `None` when a
/// hard-linked file has names outside it (a pair split by the moves): then the sum
/// arithmetic would count that inode twice, and the caller measures instead.
pub fn remains_held(root: &Path) -> Result<Option<u64>> {
    let mut inodes: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).ctx("cannot inspect", &p)?;
        if m.is_file() && m.nlink() > 1 {
            let seen = inodes.entry((m.dev(), m.ino())).or_insert((m.nlink(), 0));
            seen.1 += 1;
            if seen.1 > 1 {
                continue;
            }
        }
        total += copy::disk_usage(&m);
        if m.is_dir() {
            for e in fs::read_dir(&p).ctx("cannot list", &p)? {
                stack.push(e.ctx("cannot list", &p)?.path());
            }
        }
    }
    Ok(inodes
        .values()
        .all(|(nlink, seen)| seen >= nlink)
        .then_some(total))
}
