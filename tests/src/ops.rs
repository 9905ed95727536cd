//! Helpers for the reliability tests (model-based, crash injection, full disks, hostile
//! input): random source operations that report the exact event lines they caused, event
//! line rendering, whole-job verification (every retained version restores to what was
//! recorded, `--check` clean) and a walk of a version's real entries.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::model::{CaptureOpts, Node, assert_same, capture};
use reverb_common::events::HEADER;

use crate::{Fixture, TestCommand, is_root, stderr};

/// A recorded capture of a tree.
pub type Tree = BTreeMap<PathBuf, Node>;

/// A fixed, valid event time.
pub const TIME: &str = "2026-11-24T21:49:00.123Z";

/// Pseudo-random bytes (never all-zero blocks, so no holes).
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8) | 1
        })
        .collect()
}

/// Capture options used by the reliability tests: owners as root, directory mtimes always.
pub fn opts() -> CaptureOpts {
    CaptureOpts {
        owners: is_root(),
        dir_mtimes: true,
    }
}

/// One event line (without newline), fields escaped as docs/format.md#text-files says.
pub fn event(kind: &str, etype: &str, path: &Path, to: Option<&Path>) -> String {
    let esc = |p: &Path| reverb_common::tsv::escape_os(p.as_os_str());
    format!(
        "{TIME}\t{kind}\t{etype}\t{}\t{}",
        esc(path),
        to.map(esc).unwrap_or_default()
    )
}

/// The event type field of an lstat result.
// Independent oracle: deliberately not the library's: reverb-watch derives an event's type
// from inotify's masks, and this must say what the tree really holds.
pub fn etype_of(m: &fs::Metadata) -> &'static str {
    let ft = m.file_type();
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    }
}

/// `reverb-snap [args] --changes -` with a header and `lines` on stdin.
pub fn snap_changes(f: &Fixture, lines: &[String], args: &[&str]) -> TestCommand {
    let mut text = String::from(HEADER);
    text.push('\n');
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    snap_stdin(f, text.as_bytes(), args)
}

/// `reverb-snap [args] --changes -` with raw bytes on stdin.
pub fn snap_stdin(f: &Fixture, input: &[u8], args: &[&str]) -> TestCommand {
    let mut c = f.snap(args);
    c.args(["--changes", "-"]).stdin(input);
    c
}

/// One of the vault tools on the fixture's job.
pub fn tool(f: &Fixture, name: &str, args: &[&str]) -> TestCommand {
    let mut c = f.tool(name);
    c.args(args);
    c
}

/// Asserts no Rust panic reached stderr.
pub fn assert_no_panic(o: &Output, what: &str) {
    let e = stderr(o);
    assert!(!e.contains("panicked"), "{what}: a panic: {e}");
}

/// The version directories index.tsv lists, oldest first.
pub fn index_dirs(f: &Fixture) -> Vec<String> {
    reverb_common::index::read(&f.job_dir().join("index.tsv"))
        .expect("index.tsv")
        .into_iter()
        .map(|r| r.dir)
        .collect()
}

/// The version directories on disk (`V*`), sorted by number.
// Independent oracle: deliberately not the library's reading of a job folder: it is what
// index.tsv is compared with.
pub fn disk_dirs(f: &Fixture) -> Vec<String> {
    let mut v: Vec<(u64, String)> = fs::read_dir(f.job_dir())
        .expect("job dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix('V')?.split('-').next()?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, d)| d).collect()
}

/// Is `.partial/` absent or empty?
pub fn no_partial(f: &Fixture) -> bool {
    fs::read_dir(f.job_dir().join(".partial"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// A tree without hard-link identity (for checks that do not compare it).
pub fn unlinked(t: &Tree) -> Tree {
    t.iter()
        .map(|(p, n)| {
            (
                p.clone(),
                Node {
                    hardlink_of: None,
                    ..n.clone()
                },
            )
        })
        .collect()
}

/// Every version index.tsv lists is one of `recorded` and restores exactly to it (which
/// names share an inode included: a version holds every name of a hard-linked file
/// together); index and disk agree; `reverb-index --check` is clean. Returns how many
/// versions were restored.
pub fn verify_all(f: &Fixture, recorded: &BTreeMap<String, Tree>, what: &str) -> usize {
    let dirs = index_dirs(f);
    assert_eq!(
        dirs,
        disk_dirs(f),
        "{what}: index.tsv and the disk disagree"
    );
    for v in &dirs {
        let expected = recorded
            .get(v)
            .unwrap_or_else(|| panic!("{what}: {v} is not a version this test recorded"));
        let got = restored(f, v);
        assert_same(expected, &got, &format!("{what}: {v}"));
    }
    f.check_clean();
    dirs.len()
}

/// The paths (relative, `.` for the root) of the real (non-symlink) entries of a version,
/// not following links.
pub fn real_paths(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    out.insert(PathBuf::from("."));
    fn walk(abs: &Path, rel: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in fs::read_dir(abs).expect("read_dir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("type");
            if ft.is_symlink() {
                continue;
            }
            let r = rel.join(e.file_name());
            out.insert(r.clone());
            if ft.is_dir() {
                walk(&e.path(), &r, out);
            }
        }
    }
    walk(root, Path::new(""), &mut out);
    out
}

/// `p` and all its ancestors (relative, `.` for the root).
pub fn with_ancestors(p: &Path) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from(".")];
    let mut acc = PathBuf::new();
    for c in p.components() {
        if let std::path::Component::Normal(n) = c {
            acc.push(n);
            v.push(acc.clone());
        }
    }
    v
}

/// The paths whose captured state differs between two captures (added, removed, changed).
pub fn changed_paths(before: &Tree, after: &Tree) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (p, n) in after {
        if before.get(p).map(|b| unlinked_node(b) != unlinked_node(n)) != Some(false) {
            out.insert(p.clone());
        }
    }
    for p in before.keys() {
        if !after.contains_key(p) {
            out.insert(p.clone());
        }
    }
    out
}

fn unlinked_node(n: &Node) -> Node {
    Node {
        hardlink_of: None,
        ..n.clone()
    }
}

// ---------------------------------------------------------------------------------------
// Random operations on a source tree.

/// One operation on the source. Indices pick among the entries that exist when the
/// operation runs (modulo their count), so any sequence is valid and shrinks well.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create a regular file `name` of `len` bytes in a directory.
    Create { dir: usize, name: u8, len: u16 },
    /// Overwrite a file's contents at an offset.
    Write {
        file: usize,
        at: u16,
        len: u16,
        byte: u8,
    },
    /// Append to a file.
    Append { file: usize, len: u16 },
    /// Truncate a file.
    Truncate { file: usize, len: u32 },
    /// Punch a hole (fallocate PUNCH_HOLE | KEEP_SIZE).
    Punch { file: usize, at: u16, len: u16 },
    /// chmod a file or directory.
    Chmod { entry: usize, mode: u8 },
    /// chown a file or directory (root only; skipped otherwise).
    Chown { entry: usize, who: u8 },
    /// rename an entry into a directory under a (maybe existing) name.
    Rename { entry: usize, dir: usize, name: u8 },
    /// Create a symlink with one of a few interesting targets.
    Symlink { dir: usize, name: u8, target: u8 },
    /// Create a hard link to a file.
    HardLink { file: usize, dir: usize, name: u8 },
    /// Make a directory.
    Mkdir { dir: usize, name: u8 },
    /// Remove an empty directory.
    Rmdir { dir: usize },
    /// `rm -rf` an entry (a file or a whole directory).
    RmRf { entry: usize },
}

/// A random [`Op`] (weights favour creating and renaming, so trees grow and collide).
pub fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let i = || 0usize..64;
    prop_oneof![
        3 => (i(), any::<u8>(), 0u16..3000).prop_map(|(dir, name, len)| Op::Create { dir, name, len }),
        2 => (i(), any::<u16>(), 0u16..600, any::<u8>())
            .prop_map(|(file, at, len, byte)| Op::Write { file, at: at % 4096, len, byte }),
        1 => (i(), 0u16..500).prop_map(|(file, len)| Op::Append { file, len }),
        1 => (i(), any::<u32>()).prop_map(|(file, len)| Op::Truncate { file, len }),
        1 => (i(), any::<u16>(), any::<u16>()).prop_map(|(file, at, len)| Op::Punch { file, at, len }),
        1 => (i(), any::<u8>()).prop_map(|(entry, mode)| Op::Chmod { entry, mode }),
        1 => (i(), any::<u8>()).prop_map(|(entry, who)| Op::Chown { entry, who }),
        2 => (i(), i(), any::<u8>()).prop_map(|(entry, dir, name)| Op::Rename { entry, dir, name }),
        1 => (i(), any::<u8>(), any::<u8>()).prop_map(|(dir, name, target)| Op::Symlink { dir, name, target }),
        1 => (i(), i(), any::<u8>()).prop_map(|(file, dir, name)| Op::HardLink { file, dir, name }),
        2 => (i(), any::<u8>()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        1 => i().prop_map(|dir| Op::Rmdir { dir }),
        1 => i().prop_map(|entry| Op::RmRf { entry }),
    ]
}

/// Names are drawn from a small pool so that collisions (renames over existing names) are
/// common.
const NAMES: [&str; 6] = ["a", "b", "c", "dir", "e f", "t\tab"];

fn name(n: u8) -> &'static str {
    NAMES[n as usize % NAMES.len()]
}

const FILE_MODES: [u32; 5] = [0o644, 0o600, 0o755, 0o400, 0o664];
const DIR_MODES: [u32; 4] = [0o755, 0o700, 0o750, 0o775];
const OWNERS: [(u32, u32); 3] = [(0, 0), (1000, 1000), (65534, 65534)];

/// Every entry of the tree, relative (root excluded), sorted, with its lstat.
pub fn entries(src: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    fn walk(abs: &Path, rel: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
        let mut names: Vec<OsString> = fs::read_dir(abs)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for n in names {
            let a = abs.join(&n);
            let r = rel.join(&n);
            let m = fs::symlink_metadata(&a).expect("lstat");
            let is_dir = m.is_dir();
            out.push((r.clone(), m));
            if is_dir {
                walk(&a, &r, out);
            }
        }
    }
    walk(src, Path::new(""), &mut out);
    out
}

fn pick<T: Clone>(v: &[T], i: usize) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[i % v.len()].clone())
    }
}

fn dirs(all: &[(PathBuf, fs::Metadata)]) -> Vec<PathBuf> {
    let mut d = vec![PathBuf::new()];
    d.extend(
        all.iter()
            .filter(|(_, m)| m.is_dir())
            .map(|(p, _)| p.clone()),
    );
    d
}

fn files(all: &[(PathBuf, fs::Metadata)]) -> Vec<PathBuf> {
    all.iter()
        .filter(|(_, m)| m.is_file())
        .map(|(p, _)| p.clone())
        .collect()
}

/// The event of `kind` an edit of `rel` causes: for the name that was used only, as inotify
/// reports it (a hard link's other names are watched in their own folders, and hear
/// nothing).
fn edit_event(src: &Path, rel: &Path, kind: &str) -> Vec<String> {
    let Ok(m) = fs::symlink_metadata(src.join(rel)) else {
        return Vec::new();
    };
    vec![event(kind, etype_of(&m), rel, None)]
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i / 7) as u8) | 1)
        .collect()
}

fn deletes_of(src: &Path, rel: &Path) -> Vec<String> {
    // What inotify reports for `rm -rf`: the children, deepest first, then the entry.
    let abs = src.join(rel);
    let Ok(m) = fs::symlink_metadata(&abs) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if m.is_dir() {
        let mut kids = entries(&abs);
        kids.reverse();
        for (p, km) in kids {
            out.push(event("delete", etype_of(&km), &rel.join(p), None));
        }
    }
    out.push(event("delete", etype_of(&m), rel, None));
    out
}

/// Applies `op` to the tree at `src`; returns the event lines it caused (empty when the
/// operation did not apply, such as a rename of a directory into itself).
pub fn apply(src: &Path, op: &Op) -> Vec<String> {
    let all = entries(src);
    let root = is_root();
    match *op {
        Op::Create { dir, name: n, len } => {
            let Some(d) = pick(&dirs(&all), dir) else {
                return vec![];
            };
            let rel = d.join(name(n));
            if fs::symlink_metadata(src.join(&rel)).is_ok() {
                return vec![];
            }
            fs::write(src.join(&rel), data(len as usize, n)).expect("create");
            vec![event("create", "file", &rel, None)]
        }
        Op::Write {
            file,
            at,
            len,
            byte,
        } => {
            let Some(p) = pick(&files(&all), file) else {
                return vec![];
            };
            if !writable(src, &p) {
                return vec![];
            }
            use std::os::unix::fs::FileExt;
            let f = fs::OpenOptions::new()
                .write(true)
                .open(src.join(&p))
                .expect("open");
            f.write_all_at(&data(len as usize + 1, byte), at as u64)
                .expect("write");
            edit_event(src, &p, "modify")
        }
        Op::Append { file, len } => {
            let Some(p) = pick(&files(&all), file) else {
                return vec![];
            };
            if !writable(src, &p) {
                return vec![];
            }
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(src.join(&p))
                .expect("open");
            f.write_all(&data(len as usize + 1, 0x41)).expect("append");
            edit_event(src, &p, "modify")
        }
        Op::Truncate { file, len } => {
            let Some(p) = pick(&files(&all), file) else {
                return vec![];
            };
            if !writable(src, &p) {
                return vec![];
            }
            let f = fs::OpenOptions::new()
                .write(true)
                .open(src.join(&p))
                .expect("open");
            // Up to 1 MiB: growing leaves a hole at the end.
            f.set_len(len as u64 % (1 << 20)).expect("truncate");
            edit_event(src, &p, "modify")
        }
        Op::Punch { file, at, len } => {
            let Some(p) = pick(&files(&all), file) else {
                return vec![];
            };
            if !writable(src, &p) {
                return vec![];
            }
            let f = fs::OpenOptions::new()
                .write(true)
                .open(src.join(&p))
                .expect("open");
            use nix::fcntl::{FallocateFlags, fallocate};
            let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            fallocate(&f, punch, at as i64 * 16, len as i64 * 16 + 4096)
                .unwrap_or_else(|e| panic!("fallocate punch {}: {e}", p.display()));
            edit_event(src, &p, "modify")
        }
        Op::Chmod { entry, mode } => {
            let Some((p, m)) = pick(&all, entry) else {
                return vec![];
            };
            let mode = if m.is_dir() {
                DIR_MODES[mode as usize % DIR_MODES.len()]
            } else if m.is_file() {
                FILE_MODES[mode as usize % FILE_MODES.len()]
            } else {
                return vec![];
            };
            fs::set_permissions(src.join(&p), fs::Permissions::from_mode(mode)).expect("chmod");
            edit_event(src, &p, "attrib")
        }
        Op::Chown { entry, who } => {
            let Some((p, m)) = pick(&all, entry) else {
                return vec![];
            };
            if !root {
                return vec![];
            }
            let (u, g) = OWNERS[who as usize % OWNERS.len()];
            std::os::unix::fs::lchown(src.join(&p), Some(u), Some(g)).expect("lchown");
            if m.is_symlink() {
                return vec![event("attrib", "symlink", &p, None)];
            }
            edit_event(src, &p, "attrib")
        }
        Op::Rename {
            entry,
            dir,
            name: n,
        } => {
            let Some((p, m)) = pick(&all, entry) else {
                return vec![];
            };
            let Some(d) = pick(&dirs(&all), dir) else {
                return vec![];
            };
            let to = d.join(name(n));
            if to == p || to.starts_with(&p) {
                return vec![];
            }
            // rename(2) between two names of one inode succeeds and does nothing.
            if let Ok(t) = fs::symlink_metadata(src.join(&to))
                && t.ino() == m.ino()
            {
                return vec![];
            }
            // What the rename replaces disappears (inotify reports only the move; the
            // reader's fold treats the destination as created anew).
            if fs::rename(src.join(&p), src.join(&to)).is_err() {
                return vec![];
            }
            vec![event("move", etype_of(&m), &p, Some(&to))]
        }
        Op::Symlink {
            dir,
            name: n,
            target,
        } => {
            let Some(d) = pick(&dirs(&all), dir) else {
                return vec![];
            };
            let rel = d.join(name(n));
            if fs::symlink_metadata(src.join(&rel)).is_ok() {
                return vec![];
            }
            let depth = rel.components().count();
            let lookalike = format!(
                "{}V1-20200101T000000Z/{}",
                "../".repeat(depth),
                rel.display()
            );
            let t = match target % 5 {
                0 => "a".to_owned(),
                1 => "../dir/b".to_owned(),
                2 => "/etc/hostname".to_owned(),
                3 => ".".to_owned(),
                _ => lookalike,
            };
            symlink(&t, src.join(&rel)).expect("symlink");
            vec![event("create", "symlink", &rel, None)]
        }
        Op::HardLink { file, dir, name: n } => {
            let Some(p) = pick(&files(&all), file) else {
                return vec![];
            };
            let Some(d) = pick(&dirs(&all), dir) else {
                return vec![];
            };
            let rel = d.join(name(n));
            if fs::hard_link(src.join(&p), src.join(&rel)).is_err() {
                return vec![];
            }
            // link(2) changes the inode's link count, which inotify tells only a watch on
            // the file itself: the folders' watches hear the new name alone.
            vec![event("create", "file", &rel, None)]
        }
        Op::Mkdir { dir, name: n } => {
            let Some(d) = pick(&dirs(&all), dir) else {
                return vec![];
            };
            let rel = d.join(name(n));
            if fs::create_dir(src.join(&rel)).is_err() {
                return vec![];
            }
            vec![event("create", "dir", &rel, None)]
        }
        Op::Rmdir { dir } => {
            let ds = dirs(&all);
            let Some(d) = pick(&ds[1.min(ds.len())..], dir) else {
                return vec![];
            };
            if fs::remove_dir(src.join(&d)).is_err() {
                return vec![];
            }
            vec![event("delete", "dir", &d, None)]
        }
        Op::RmRf { entry } => {
            let Some((p, m)) = pick(&all, entry) else {
                return vec![];
            };
            let evs = deletes_of(src, &p);
            if m.is_dir() {
                fs::remove_dir_all(src.join(&p)).expect("rm -rf");
            } else {
                fs::remove_file(src.join(&p)).expect("rm");
            }
            evs
        }
    }
}

/// Can we open this file for writing (as root, always; otherwise its mode decides)?
fn writable(src: &Path, p: &Path) -> bool {
    is_root()
        || fs::metadata(src.join(p))
            .map(|m| m.mode() & 0o200 != 0)
            .unwrap_or(false)
}

/// Removes everything in a directory (keeping the directory), making it writable first.
pub fn empty_dir(dir: &Path) {
    for e in fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o755));
            empty_dir(&p);
            fs::remove_dir(&p).expect("rmdir");
        } else {
            fs::remove_file(&p).expect("rm");
        }
    }
}

/// Writes `n` small files under `src` (a reproducible, small tree for crash loops).
pub fn small_tree(src: &Path, round: u32, dirs: u32, files_per_dir: u32) {
    for d in 0..dirs {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..files_per_dir {
            fs::write(
                dir.join(format!("f{i}")),
                format!("{round}-{d}-{i}\n").repeat(3 + i as usize),
            )
            .expect("write");
        }
    }
}

/// Bytes of a path as a lossless display (for messages).
pub fn show(p: &Path) -> String {
    reverb_common::tsv::escape_os(p.as_os_str())
}

/// A [`Fixture`] on a private tmpfs when running as root (so `syncfs` in the tools does not
/// wait for the rest of the machine's disk: crash loops run hundreds of versions), else in
/// an ordinary temp dir. Fields drop in order: the fixture, then the mount, then the dir.
pub struct FastFixture {
    pub f: Fixture,
    _mount: Option<crate::MountGuard>,
    _outer: tempfile::TempDir,
}

impl FastFixture {
    /// A fixture on a new tmpfs of `size_mib` (or on disk when not root).
    pub fn new(size_mib: u64) -> FastFixture {
        let outer = tempfile::tempdir().expect("tempdir");
        let mnt = outer.path().join("tmpfs");
        let mount = crate::MountGuard::new(
            &["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"],
            &mnt,
        )
        .ok();
        let inner = if mount.is_some() {
            tempfile::tempdir_in(&mnt).expect("tempdir in tmpfs")
        } else {
            tempfile::tempdir().expect("tempdir")
        };
        FastFixture {
            f: Fixture::in_dir(inner),
            _mount: mount,
            _outer: outer,
        }
    }
}

impl std::ops::Deref for FastFixture {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.f
    }
}

/// Restores `version`, captures the result and removes the restored copy again.
pub fn restored(f: &Fixture, version: &str) -> Tree {
    let dest = f.restore(version);
    let t = capture(&dest, opts());
    let _ = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&dest)
        .status();
    t
}
