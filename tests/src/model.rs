//! Capturing a tree's complete observable state (what I5 (docs/format.md#invariants) promises) so that tests can
//! compare a source at the time a version was taken with what a restore gives back.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One entry's observable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: u64,
    pub target: Option<PathBuf>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// For a regular file: the first path (in sorted order) sharing its inode, if not itself.
    pub hardlink_of: Option<PathBuf>,
}

/// Options for [`capture`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureOpts {
    /// Include owners (only meaningful when the copier could set them: root).
    pub owners: bool,
    /// Include directory mtimes.
    pub dir_mtimes: bool,
}

/// Captures the tree at `root` (not following symlinks; `root` itself may be a symlink to a
/// directory, which is followed once).
pub fn capture(root: &Path, opts: CaptureOpts) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(root, PathBuf::new(), opts, &mut out, &mut inodes);
    out
}

fn walk(
    abs: &Path,
    rel: PathBuf,
    opts: CaptureOpts,
    out: &mut BTreeMap<PathBuf, Node>,
    inodes: &mut HashMap<(u64, u64), PathBuf>,
) {
    let meta = if rel.as_os_str().is_empty() {
        fs::metadata(abs).expect("root metadata")
    } else {
        fs::symlink_metadata(abs).unwrap_or_else(|e| panic!("lstat {}: {e}", abs.display()))
    };
    let kind = reverb_common::baseline::kind_of(&meta);
    let mut content = 0;
    let mut hardlink_of = None;
    if kind == 'f' {
        let data = fs::read(abs).unwrap_or_else(|e| panic!("read {}: {e}", abs.display()));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        data.hash(&mut h);
        content = h.finish();
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            match inodes.get(&key) {
                Some(first) => hardlink_of = Some(first.clone()),
                None => {
                    inodes.insert(key, rel.clone());
                }
            }
        }
    }
    let mut xattrs = BTreeMap::new();
    if kind != 'l'
        && let Ok(names) = reverb_common::copy::list_xattrs(abs)
    {
        for n in names {
            if let Ok(v) = reverb_common::copy::get_xattr(abs, &n) {
                xattrs.insert(n.as_bytes().to_vec(), v);
            }
        }
    }
    let node = Node {
        kind,
        mode: if kind == 'l' { 0 } else { meta.mode() & 0o7777 },
        owner: opts.owners.then(|| (meta.uid(), meta.gid())),
        mtime: if kind == 'd' && !opts.dir_mtimes {
            (0, 0)
        } else {
            (meta.mtime(), meta.mtime_nsec())
        },
        size: if kind == 'd' { 0 } else { meta.len() },
        content,
        target: (kind == 'l').then(|| fs::read_link(abs).expect("readlink")),
        rdev: if matches!(kind, 'c' | 'b') {
            meta.rdev()
        } else {
            0
        },
        xattrs,
        hardlink_of,
    };
    out.insert(
        if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel.clone()
        },
        node,
    );
    if kind == 'd' {
        let mut names: Vec<OsString> = fs::read_dir(abs)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for name in names {
            walk(&abs.join(&name), rel.join(&name), opts, out, inodes);
        }
    }
}

/// Asserts two captures are equal, printing the first differences readably.
pub fn assert_same(
    expected: &BTreeMap<PathBuf, Node>,
    actual: &BTreeMap<PathBuf, Node>,
    what: &str,
) {
    if expected == actual {
        return;
    }
    let mut diffs = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => diffs.push(format!("missing: {p:?}")),
            Some(a) if a != e => diffs.push(format!(
                "differs: {p:?}\n  expected {e:?}\n  actual   {a:?}"
            )),
            _ => {}
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            diffs.push(format!("unexpected: {p:?}"));
        }
    }
    diffs.truncate(20);
    panic!("{what}: trees differ:\n{}", diffs.join("\n"));
}

/// Counts the real (non-symlink) entries of a version directory without following links.
pub fn real_entries(root: &Path) -> (u64, u64) {
    let (mut real, mut links) = (0, 0);
    for e in fs::read_dir(root).expect("read_dir") {
        let e = e.expect("entry");
        let ft = e.file_type().expect("file type");
        if ft.is_symlink() {
            links += 1;
        } else {
            real += 1;
            if ft.is_dir() {
                let (r, l) = real_entries(&e.path());
                real += r;
                links += l;
            }
        }
    }
    (real, links)
}

/// A name made of raw bytes.
pub fn raw(bytes: &[u8]) -> OsString {
    std::ffi::OsStr::from_bytes(bytes).to_owned()
}

/// `tree` with every directory's mtime zeroed: what must already be exact right after a
/// crash during a retirement, whose record of directory times the next run puts back
/// (docs/retirement.md#crash-safety-resuming).
pub fn without_dir_mtimes(tree: &BTreeMap<PathBuf, Node>) -> BTreeMap<PathBuf, Node> {
    tree.iter()
        .map(|(p, n)| {
            let mut n = n.clone();
            if n.kind == 'd' {
                n.mtime = (0, 0);
            }
            (p.clone(), n)
        })
        .collect()
}
