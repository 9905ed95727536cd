//! The benchmark's source tree: generation and the changes made to it between versions.
//!
//! Owns: [`Rng`] (a seeded SplitMix64, so a run is reproducible from `--seed`), [`generate`]
//! (a realistic tree: [`Shape::Random`], `dirs` directories grown as a random recursive tree
//! capped at [`MAX_DEPTH`], files spread uniformly over them; or [`Shape::Regular`], the
//! 20 × 25 × 10 directories of 20 files each that SPEC's targets name, scaled with `files`;
//! mostly small 0–16 KiB files, some 1 MiB files, a few 64 MiB sparse files with holes, a
//! few relative source symlinks), and
//! [`Tree::modify`] (rewrites `n` distinct small files with new content and size).
//!
//! Invariants:
//! - Names are plain ASCII (`d00042`, `f0001234.txt`), so an event line needs no escaping.
//! - File content is pseudo-random, never all-zero, so no copier can turn it into holes;
//!   only the sparse files have holes, and only where the generator left them.
//! - [`Tree::small`] lists only small regular files: those are what [`Tree::modify`]
//!   changes, so a change never rewrites a 64 MiB file.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Deepest directory level below the root.
pub const MAX_DEPTH: usize = 8;
/// By default, one file in this many is a 1 MiB file.
pub const ONE_MIB_EVERY: usize = 400;
/// One file in this many is a 64 MiB sparse file (at least one per tree).
const SPARSE_EVERY: usize = 20_000;
/// One file in this many is a relative symlink (a source link).
const SYMLINK_EVERY: usize = 1_000;
const SPARSE_LEN: u64 = 64 << 20;
/// By default, the largest small file.
pub const SMALL_MAX: usize = 16 << 10;

/// How large the files are: small ones of 0..=`small_max` bytes, and one in `large_every`
/// a 1 MiB file (0: none). The scale run (1,000,000 files) uses smaller files than the
/// default so that four copies of its tree fit on the machine's disk.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    pub small_max: usize,
    pub large_every: usize,
}

impl Default for Sizes {
    fn default() -> Sizes {
        Sizes {
            small_max: SMALL_MAX,
            large_every: ONE_MIB_EVERY,
        }
    }
}

/// SplitMix64: small, fast, seedable; good enough to place files.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// What the generated tree holds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub one_mib_files: u64,
    pub sparse_files: u64,
    /// Apparent size of all regular files.
    pub bytes: u64,
}

impl Stats {
    /// Entries below the root (what a full snapshot holds).
    pub fn entries(&self) -> u64 {
        self.dirs + self.files + self.symlinks
    }
}

/// A generated tree on disk.
#[derive(Debug)]
pub struct Tree {
    pub root: PathBuf,
    /// Small regular files, relative to the root.
    pub small: Vec<PathBuf>,
    pub stats: Stats,
    noise: Vec<u8>,
    sizes: Sizes,
}

/// How the directories of a generated tree are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A random recursive tree, up to [`MAX_DEPTH`] levels, files placed at random.
    Random,
    /// Three levels: 25 × 10 directories under each top-level one (as many top-level ones
    /// as `files` needs: 20 at 100,000), 20 files in each leaf directory.
    Regular,
}

/// Files per leaf directory, and the fan-out below a top-level one, of [`Shape::Regular`].
const REGULAR_FILES_PER_LEAF: usize = 20;
const REGULAR_FAN_OUT: [usize; 2] = [25, 10];

/// The directories of a tree: (relative path, depth), the root first; and, for
/// [`Shape::Regular`], the leaves that hold the files, in order.
fn layout(
    shape: Shape,
    files: usize,
    dirs: usize,
    rng: &mut Rng,
) -> (Vec<(PathBuf, usize)>, Vec<usize>) {
    let mut all: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    match shape {
        Shape::Random => {
            for i in 1..dirs.max(1) {
                let parent = loop {
                    let p = rng.below(all.len());
                    if all[p].1 < MAX_DEPTH {
                        break p;
                    }
                };
                let rel = all[parent].0.join(format!("d{i:05}"));
                all.push((rel, all[parent].1 + 1));
            }
            (all, Vec::new())
        }
        Shape::Regular => {
            let per_top = REGULAR_FAN_OUT[0] * REGULAR_FAN_OUT[1];
            let leaves_needed = files.div_ceil(REGULAR_FILES_PER_LEAF).max(1);
            let tops = leaves_needed.div_ceil(per_top);
            let mut leaves = Vec::new();
            for t in 0..tops {
                let top = PathBuf::from(format!("d{t:02}"));
                all.push((top.clone(), 1));
                for m in 0..REGULAR_FAN_OUT[0] {
                    let mid = top.join(format!("d{m:02}"));
                    all.push((mid.clone(), 2));
                    for l in 0..REGULAR_FAN_OUT[1] {
                        all.push((mid.join(format!("d{l:02}")), 3));
                        leaves.push(all.len() - 1);
                    }
                }
            }
            (all, leaves)
        }
    }
}

/// Builds a tree of `files` files at `root`, laid out as `shape` says (`dirs` directories,
/// the root counting as one, for [`Shape::Random`]).
pub fn generate(
    root: &Path,
    shape: Shape,
    files: usize,
    dirs: usize,
    sizes: Sizes,
    rng: &mut Rng,
) -> Result<Tree> {
    fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
    let small_max = sizes.small_max.max(1);
    let mut noise = vec![0u8; (1 << 20) + small_max];
    for chunk in noise.chunks_mut(8) {
        let v = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let mut stats = Stats::default();
    // (relative path, depth); index 0 is the root.
    let (all, leaves) = layout(shape, files, dirs, rng);
    for (rel, _) in &all[1..] {
        fs::create_dir(root.join(rel)).with_context(|| format!("mkdir {}", rel.display()))?;
        stats.dirs += 1;
    }
    let exts = ["txt", "md", "rs", "json", "jpg", "pdf", "conf", "csv"];
    let sparse_count = (files / SPARSE_EVERY).max(1);
    let mut small = Vec::with_capacity(files);
    for i in 0..files {
        let dir = match shape {
            Shape::Random => &all[rng.below(all.len())].0,
            Shape::Regular => &all[leaves[i / REGULAR_FILES_PER_LEAF]].0,
        };
        let rel = dir.join(format!("f{i:07}.{}", exts[i % exts.len()]));
        let path = root.join(&rel);
        if i < sparse_count {
            write_sparse(&path, &noise)?;
            stats.sparse_files += 1;
            stats.bytes += SPARSE_LEN;
        } else if i % SYMLINK_EVERY == SYMLINK_EVERY - 1 {
            std::os::unix::fs::symlink(format!("../f{:07}.txt", i - 1), &path)
                .with_context(|| format!("symlink {}", rel.display()))?;
            stats.symlinks += 1;
            continue;
        } else if sizes.large_every > 0 && i % sizes.large_every == sizes.large_every - 1 {
            let off = rng.below(small_max);
            fs::write(&path, &noise[off..off + (1 << 20)])
                .with_context(|| format!("write {}", rel.display()))?;
            stats.one_mib_files += 1;
            stats.bytes += 1 << 20;
        } else {
            let len = rng.below(small_max + 1);
            let off = rng.below(noise.len() - len);
            fs::write(&path, &noise[off..off + len])
                .with_context(|| format!("write {}", rel.display()))?;
            stats.bytes += len as u64;
            small.push(rel);
        }
        stats.files += 1;
    }
    Ok(Tree {
        root: root.to_path_buf(),
        small,
        stats,
        noise,
        sizes,
    })
}

/// 64 MiB apparent, four 64 KiB extents of data, holes elsewhere.
fn write_sparse(path: &Path, noise: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.set_len(SPARSE_LEN)?;
    for k in 0..4u64 {
        f.seek(SeekFrom::Start(k * (SPARSE_LEN / 4) + 4096))?;
        f.write_all(&noise[(k as usize) << 16..((k as usize) + 1) << 16])?;
    }
    Ok(())
}

impl Tree {
    /// Rewrites `n` distinct small files (new content, new size) and returns their paths.
    pub fn modify(&self, n: usize, rng: &mut Rng) -> Result<Vec<PathBuf>> {
        let n = n.min(self.small.len());
        let mut picked = std::collections::BTreeSet::new();
        while picked.len() < n {
            picked.insert(rng.below(self.small.len()));
        }
        let mut out = Vec::with_capacity(n);
        for i in picked {
            let rel = &self.small[i];
            let len = 1 + rng.below(self.sizes.small_max.max(1));
            let off = rng.below(self.noise.len() - len);
            fs::write(self.root.join(rel), &self.noise[off..off + len])
                .with_context(|| format!("rewrite {}", rel.display()))?;
            out.push(rel.clone());
        }
        Ok(out)
    }
}

/// Event lines (docs/format.md#text-files) saying that each of `paths` was modified, then a `flush`.
pub fn event_lines(paths: &[PathBuf]) -> String {
    let time = "2026-01-01T00:00:00.000Z";
    let mut s = String::from("time\tevent\ttype\tpath\tto_path\n");
    for p in paths {
        s.push_str(&format!("{time}\tmodify\tfile\t{}\t\n", p.display()));
    }
    s.push_str(&format!("{time}\tflush\t\t\t\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_have_five_fields() {
        let s = event_lines(&[PathBuf::from("d00001/f0000001.txt")]);
        for line in s.lines() {
            assert_eq!(line.split('\t').count(), 5, "{line}");
        }
        assert_eq!(s.lines().count(), 3);
    }

    #[test]
    fn rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert!((0..100).all(|_| a.below(10) == b.below(10)));
    }
}
