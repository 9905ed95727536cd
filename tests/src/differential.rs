//! The differential test of real use (issue #13; docs/reliability.md, "Differential test of
//! real use"):
//! seeded random histories of what people really do to a tree (editor saves, appends,
//! truncations, `tar x`, mkdir/rmdir, renaming the folder that holds most files, chmod,
//! chown, `touch`, symlinks within and across folders, hard links across folders and edits
//! of them through each name, in place and saved by rename, FIFOs), versioned by events
//! (`reverb-snap --changes -`, fed the lines `reverb-watch` prints: an edit is reported for
//! the name that was used only) and by rescans (`reverb-snap`), each version compared with a
//! `cp -a` copy of the source taken at that moment.
//!
//! # The oracle is independent of the library
//!
//! Everything this module compares is read with `std::fs`, `cp -a`, `tar` and `getfattr`,
//! never with `reverb_common`: the only library items used are the event-line header and
//! escaping, which are the *input* format the tool is fed. A vault link is told from a source
//! link by the text shape docs/format.md#vault-links gives, re-implemented here.
//!
//! # The three views
//!
//! 1. [`restore_view`]: `reverb-restore` of the version, lstat'ed entry by entry (type,
//!    content, mode, mtime ns, owner as root, link text; xattrs unless `REVERB_DIFF_XATTRS=0`),
//!    and which names share an inode (the same groups as in the capture).
//! 2. [`browse_view`]: the version directory read as a user browses it, following every
//!    link (so relative source links resolve inside the version); source links that dangle
//!    or leave the source are compared by their text.
//! 3. [`stat_view`]: the version's own stats through its vault links (type, size, mode,
//!    mtime, owner as root, link text), and the names sharing an inode in the capture sharing
//!    one in the version.
//!
//! Every difference names the history's seed, the version, the path and the field.
//!
//! # A vault that keeps less
//!
//! With [`Knobs::vault_in`] on a network mount (the sshfs variant), the views compare what
//! that filesystem can keep ([`VaultKeeps`]): on sshfs, link owners and times are left out
//! (the tool never sets them there) and mtimes are compared to the second; everything
//! else is compared as on a local vault.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ops::{FastFixture, event};
use crate::{Fixture, TestCommand, bin, inodes, sh};

/// The test's knobs (environment variables, see README's test-knobs table).
#[derive(Debug, Clone)]
pub struct Knobs {
    /// `REVERB_DIFF_CASES`: histories per run.
    pub cases: u64,
    /// Versions after the first, per history.
    pub steps: usize,
    /// `REVERB_DIFF_SEED`: the first history's seed (history `i` uses `seed + i`).
    pub seed: u64,
    /// xattr-only changes, compared in view 1 (on; `REVERB_DIFF_XATTRS=0` turns them off).
    pub xattrs: bool,
    /// Relative links across folders, climbing out of theirs (on; `REVERB_DIFF_CLIMBING_LINKS=0`
    /// turns them off).
    pub climbing: bool,
    /// Where each history makes its vault (`<dir>/vault-<seed>`, a network mount, say);
    /// `None`: beside its source.
    pub vault_in: Option<PathBuf>,
    /// What the vault's filesystem keeps, so what the views may compare.
    pub keeps: VaultKeeps,
    /// Also replicate every version to a second vault (`reverberator replicate`, root only)
    /// and compare the replica's copy three ways too; sometimes retire in the replica by its
    /// own rules (docs/design.md#replication).
    pub replica: bool,
}

/// What the vault's filesystem keeps of what the source has (docs/filesystems.md), so what
/// the views compare: everything on a local filesystem ([`VaultKeeps::ALL`]); on sshfs,
/// no link owners or times (the tool never sets them there, they would reach the link's
/// target) and mtimes to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaultKeeps {
    /// A symlink's owner and mtime.
    pub link_attributes: bool,
    /// The mtime step, in nanoseconds (1: exact).
    pub mtime_step_ns: i64,
    /// FIFOs (sshfs cannot make them: the tool leaves them out, journaled as skipped).
    pub specials: bool,
    /// Which names share an inode, as the vault shows it (sshfs gives every path an inode
    /// number of its own: SFTP has none, so neither a restore nor a reader can tell).
    pub hard_links: bool,
}

impl VaultKeeps {
    /// A local filesystem: everything.
    pub const ALL: VaultKeeps = VaultKeeps {
        link_attributes: true,
        mtime_step_ns: 1,
        specials: true,
        hard_links: true,
    };

    /// `seen` as far as such a vault can keep it.
    fn coarsen(self, mut seen: Seen) -> Seen {
        if seen.kind == 'l' && !self.link_attributes {
            seen.owner = None;
            seen.mtime = (0, 0);
        }
        let ns = seen.mtime.1 - seen.mtime.1.rem_euclid(self.mtime_step_ns.max(1));
        seen.mtime.1 = ns;
        seen
    }

    fn coarsen_all(self, tree: BTreeMap<PathBuf, Seen>) -> BTreeMap<PathBuf, Seen> {
        tree.into_iter()
            .map(|(p, s)| (p, self.coarsen(s)))
            .collect()
    }
}

impl Knobs {
    /// Reads the environment; `REVERB_DIFF_SOAK=1` makes the defaults long.
    pub fn from_env(default_cases: u64) -> Knobs {
        let var = |k: &str| std::env::var(k).ok();
        let on = |k: &str| var(k).is_some_and(|v| v == "1");
        let off = |k: &str| var(k).is_some_and(|v| v == "0");
        let soak = on("REVERB_DIFF_SOAK");
        let num = |k: &str| var(k).and_then(|v| parse_num(&v));
        Knobs {
            cases: num("REVERB_DIFF_CASES").unwrap_or(if soak { 300 } else { default_cases }),
            steps: if soak { 30 } else { 12 },
            seed: num("REVERB_DIFF_SEED").unwrap_or(0x5EED_0013),
            xattrs: !off("REVERB_DIFF_XATTRS"),
            climbing: !off("REVERB_DIFF_CLIMBING_LINKS"),
            vault_in: None,
            keeps: VaultKeeps::ALL,
            replica: false,
        }
    }
}

fn parse_num(v: &str) -> Option<u64> {
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// SplitMix64: a tiny seeded generator, so a seed names a history exactly.
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

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// An element of `v`.
    pub fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.below(v.len())].clone())
    }
}

/// Who runs the tools: root, or the user nobody on a source nobody owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Root,
    Nobody,
}

const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------------------
// The oracle: what a tree shows, read with std::fs only.

/// One entry as lstat shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: char,
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: Option<u64>,
    pub target: Option<PathBuf>,
}

fn kind(ft: fs::FileType) -> char {
    match () {
        _ if ft.is_symlink() => 'l',
        _ if ft.is_dir() => 'd',
        _ if ft.is_file() => 'f',
        _ if ft.is_fifo() => 'p',
        _ if ft.is_socket() => 's',
        _ if ft.is_char_device() => 'c',
        _ => 'b',
    }
}

fn hash_file(p: &Path) -> u64 {
    let data = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// What lstat (plus the content, for a file) shows of `abs`.
fn seen(abs: &Path, m: &fs::Metadata, owners: bool) -> Seen {
    let k = kind(m.file_type());
    Seen {
        kind: k,
        mode: if k == 'l' { 0 } else { m.mode() & 0o7777 },
        owner: owners.then(|| (m.uid(), m.gid())),
        mtime: (m.mtime(), m.mtime_nsec()),
        size: if k == 'f' || k == 'l' { m.len() } else { 0 },
        content: (k == 'f').then(|| hash_file(abs)),
        target: (k == 'l').then(|| fs::read_link(abs).expect("readlink")),
    }
}

fn sorted_names(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name())
        .collect();
    v.sort();
    v
}

/// Every entry of the tree at `root` (`.` for the root), not following links.
pub fn lstat_tree(root: &Path, owners: bool) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let m = fs::symlink_metadata(&abs).expect("lstat");
        if m.is_dir() {
            for n in sorted_names(&abs) {
                stack.push(rel.join(n));
            }
        }
        out.insert(shown(&rel), seen(&abs, &m, owners));
    }
    out
}

/// A relative path as the reports show it (`.` for the root).
fn shown(rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_path_buf()
    }
}

/// Differences between two lstat views, one line per path and field.
fn diff_seen(exp: &BTreeMap<PathBuf, Seen>, got: &BTreeMap<PathBuf, Seen>, out: &mut Vec<String>) {
    for (p, e) in exp {
        let Some(g) = got.get(p) else {
            out.push(format!("{}: missing", p.display()));
            continue;
        };
        diff_fields(p, e, g, out);
    }
    for p in got.keys().filter(|p| !exp.contains_key(*p)) {
        out.push(format!("{}: unexpected entry", p.display()));
    }
}

fn diff_fields(p: &Path, e: &Seen, g: &Seen, out: &mut Vec<String>) {
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{}: {name}: source {a}, version {b}", p.display()));
        }
    };
    field("type", e.kind.to_string(), g.kind.to_string());
    if e.kind != g.kind {
        return;
    }
    field("mode", format!("{:o}", e.mode), format!("{:o}", g.mode));
    field("owner", format!("{:?}", e.owner), format!("{:?}", g.owner));
    field("mtime", format!("{:?}", e.mtime), format!("{:?}", g.mtime));
    field("size", e.size.to_string(), g.size.to_string());
    field(
        "content",
        format!("{:?}", e.content),
        format!("{:?}", g.content),
    );
    field(
        "link text",
        format!("{:?}", e.target),
        format!("{:?}", g.target),
    );
}

/// xattrs of every entry below `root`, by path (`getfattr -R -P -h -d -m -`).
fn xattrs(root: &Path) -> BTreeMap<String, String> {
    let o = Command::new("getfattr")
        .args(["-R", "-P", "-h", "-d", "-m", "-", "."])
        .current_dir(root)
        .output()
        .expect("getfattr");
    String::from_utf8_lossy(&o.stdout)
        .split("\n\n")
        .filter_map(|block| {
            let (head, rest) = block.trim().split_once('\n')?;
            Some((
                head.trim_start_matches("# file: ").to_owned(),
                rest.to_owned(),
            ))
        })
        .collect()
}

fn diff_xattrs(cap: &Path, restored: &Path, out: &mut Vec<String>) {
    let (want, got) = (xattrs(cap), xattrs(restored));
    for p in want
        .keys()
        .chain(got.keys().filter(|p| !want.contains_key(*p)))
    {
        if want.get(p) != got.get(p) {
            out.push(format!(
                "{p}: xattrs: source {:?}, version {:?}",
                want.get(p),
                got.get(p)
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The three views.

/// View 1: the restored version against the capture, every field the vault keeps.
pub fn restore_view(
    cap: &Path,
    restored: &Path,
    owners: bool,
    xattrs: bool,
    keeps: VaultKeeps,
) -> Vec<String> {
    let mut out = Vec::new();
    diff_seen(
        &keeps.coarsen_all(lstat_tree(cap, owners)),
        &keeps.coarsen_all(lstat_tree(restored, owners)),
        &mut out,
    );
    if xattrs {
        diff_xattrs(cap, restored, &mut out);
    }
    let (want, got) = if keeps.hard_links {
        (inodes::groups(cap), inodes::groups(restored))
    } else {
        Default::default()
    };
    for g in want.symmetric_difference(&got) {
        let side = if want.contains(g) {
            "source"
        } else {
            "version"
        };
        out.push(format!("{g:?}: one inode in the {side} only"));
    }
    out
}

/// Is `text` the vault link a version holds at `rel` (docs/format.md#vault-links)?
fn is_vault_text(text: &Path, rel: &Path) -> bool {
    let depth = rel.components().count();
    let t = text.as_os_str().as_bytes();
    let Some(rest) = t.strip_prefix("../".repeat(depth).as_bytes()) else {
        return false;
    };
    let Some(slash) = rest.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (name, path) = (&rest[..slash], &rest[slash + 1..]);
    name.len() > 2
        && name[0] == b'V'
        && name[1].is_ascii_digit()
        && name.contains(&b'-')
        && path == rel.as_os_str().as_bytes()
}

/// `ver/rel` with its own vault links followed (never a source link): where a browsing
/// user's lstat of that path lands.
fn through_vault_links(ver: &Path, rel: &Path) -> PathBuf {
    let mut at = ver.join(rel);
    for _ in 0..40 {
        let Ok(text) = fs::read_link(&at) else {
            return at;
        };
        let next = at.parent().expect("parent").join(&text);
        if !is_vault_text(&text, rel) || fs::symlink_metadata(&next).is_err() {
            return at;
        }
        at = next;
    }
    at
}

/// Does the source link at `cap/rel` resolve to something inside the capture?
fn resolves_inside(cap: &Path, rel: &Path) -> bool {
    let Ok(text) = fs::read_link(cap.join(rel)) else {
        return false;
    };
    if text.is_absolute() {
        return false;
    }
    match (fs::canonicalize(cap.join(rel)), fs::canonicalize(cap)) {
        (Ok(t), Ok(root)) => t.starts_with(root),
        _ => false,
    }
}

/// View 2: the version browsed like `cp -rL` (following links) against the capture.
pub fn browse_view(cap: &Path, ver: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (c, v) = (sorted_names(&cap.join(&rel)), browse_names(&ver.join(&rel)));
        if Some(&c) != v.as_ref() {
            out.push(format!(
                "{}: names: source {c:?}, version {v:?}",
                shown(&rel).display()
            ));
            continue;
        }
        for n in c {
            let p = rel.join(n);
            let cm = fs::symlink_metadata(cap.join(&p)).expect("lstat capture");
            if cm.file_type().is_symlink() && !resolves_inside(cap, &p) {
                let want = fs::read_link(cap.join(&p)).ok();
                let got = fs::read_link(through_vault_links(ver, &p)).ok();
                if want != got {
                    out.push(format!(
                        "{}: link text: source {want:?}, version {got:?}",
                        p.display()
                    ));
                }
            } else if browse_entry(cap, ver, &p, &mut out) && !cm.file_type().is_symlink() {
                stack.push(p);
            }
        }
    }
    out
}

fn browse_names(dir: &Path) -> Option<Vec<OsString>> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.file_name()))
        .collect();
    v.sort();
    Some(v)
}

/// Compares one followed entry; true when both are directories with the same names.
fn browse_entry(cap: &Path, ver: &Path, p: &Path, out: &mut Vec<String>) -> bool {
    let cm = fs::metadata(cap.join(p)).expect("stat capture");
    let vm = match fs::metadata(ver.join(p)) {
        Ok(m) => m,
        Err(e) => {
            out.push(format!("{}: browsing: {e}", p.display()));
            return false;
        }
    };
    let (ck, vk) = (kind(cm.file_type()), kind(vm.file_type()));
    if ck != vk {
        out.push(format!(
            "{}: type (followed): source {ck}, version {vk}",
            p.display()
        ));
        return false;
    }
    if ck == 'f' && hash_file(&cap.join(p)) != hash_file(&ver.join(p)) {
        out.push(format!("{}: content (followed): differs", p.display()));
    }
    if ck == 'd' && sorted_names(&cap.join(p)) != sorted_names(&ver.join(p)) {
        out.push(format!("{}: names (followed) differ", p.display()));
        return false;
    }
    ck == 'd'
}

/// View 3: the version's own stats through its vault links against the capture.
pub fn stat_view(cap: &Path, ver: &Path, owners: bool, keeps: VaultKeeps) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in lstat_tree(cap, owners) {
        let rel = if p == Path::new(".") {
            PathBuf::new()
        } else {
            p.clone()
        };
        let at = through_vault_links(ver, &rel);
        let Ok(m) = fs::symlink_metadata(&at) else {
            out.push(format!("{}: stat: missing", p.display()));
            continue;
        };
        let g = keeps.coarsen(seen(&at, &m, owners));
        diff_fields(
            &p,
            &Seen {
                content: None,
                ..keeps.coarsen(e)
            },
            &Seen { content: None, ..g },
            &mut out,
        );
    }
    if keeps.hard_links {
        out.extend(inodes::version_keeps_groups(cap, ver));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Real-world operations. Each returns the event lines it implies (what reverb-watch would
// report) and appends a description to the log.

/// A source being changed: its root, the generator, the switches, the log of operations.
pub struct Source<'a> {
    pub root: &'a Path,
    pub rng: Rng,
    pub knobs: &'a Knobs,
    pub who: Who,
    pub tar: PathBuf,
    pub log: Vec<String>,
}

type Ents = Vec<(PathBuf, fs::Metadata)>;

fn entries(root: &Path) -> Ents {
    crate::ops::entries(root)
}

fn of(all: &Ents, pred: impl Fn(&fs::Metadata) -> bool) -> Vec<PathBuf> {
    all.iter()
        .filter(|(_, m)| pred(m))
        .map(|(p, _)| p.clone())
        .collect()
}

fn dirs_of(all: &Ents) -> Vec<PathBuf> {
    let mut d = vec![PathBuf::new()];
    d.extend(of(all, |m| m.is_dir()));
    d
}

/// The archive's members, parents first, and whether each is a folder.
const TAR_MEMBERS: [(&str, bool); 6] = [
    ("t", true),
    ("t/readme", false),
    ("t/lib", true),
    ("t/lib/x.c", false),
    ("t/lib/y.c", false),
    ("t/bin", false),
];
const NAMES: [&str; 8] = ["a", "b", "notes.txt", "lib", "x y", "main.rs", "1", "2"];
const FILE_MODES: [u32; 5] = [0o644, 0o600, 0o755, 0o400, 0o664];
const DIR_MODES: [u32; 4] = [0o755, 0o700, 0o750, 0o775];
const OWNERS: [(u32, u32); 3] = [(0, 0), (1000, 1000), (65534, 65534)];

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let seed = rng.next_u64();
    (0..len)
        .map(|i| (seed.rotate_left(i as u32 % 64) as u8) ^ (i / 13) as u8)
        .collect()
}

/// The event of `kind` an edit through `rel` causes: for that name only, as inotify reports
/// it (a hard link's other names are watched in their own folders, and hear nothing).
fn names_of(root: &Path, rel: &Path, kind: &str) -> Vec<String> {
    let Ok(m) = fs::symlink_metadata(root.join(rel)) else {
        return vec![];
    };
    vec![event(kind, etype(&m), rel, None)]
}

/// The event type of an lstat result.
fn etype(m: &fs::Metadata) -> &'static str {
    match kind(m.file_type()) {
        'l' => "symlink",
        'd' => "dir",
        'f' => "file",
        _ => "other",
    }
}

impl Source<'_> {
    fn note(&mut self, s: String) {
        self.log.push(s);
    }

    /// One random operation.
    pub fn random_op(&mut self) -> Vec<String> {
        let all = entries(self.root);
        let ops: &[fn(&mut Self, &Ents) -> Vec<String>] = &[
            Self::save,
            Self::save,
            Self::append,
            Self::truncate,
            Self::tar_x,
            Self::mkdir,
            Self::rmdir,
            Self::rename_big_folder,
            Self::chmod,
            Self::chown,
            Self::touch,
            Self::link,
            Self::link,
            Self::hard_link,
            Self::edit_hard_link,
            Self::edit_hard_link,
            Self::fifo,
            Self::rm,
            Self::create,
            Self::xattr,
        ];
        let op = ops[self.rng.below(ops.len())];
        op(self, &all)
    }

    /// Editor-style save: write `.NAME.swp`, then rename it over NAME.
    fn save(&mut self, all: &Ents) -> Vec<String> {
        let Some(p) = self.rng.pick(&of(all, |m| m.is_file())) else {
            return vec![];
        };
        let mode = fs::metadata(self.root.join(&p)).expect("stat").mode() & 0o7777;
        let tmp = p.with_file_name(format!(
            ".{}.swp",
            p.file_name().expect("name").to_string_lossy()
        ));
        let len = self.rng.below(20_000);
        fs::write(self.root.join(&tmp), bytes(&mut self.rng, len)).expect("write tmp");
        fs::set_permissions(self.root.join(&tmp), fs::Permissions::from_mode(mode)).expect("chmod");
        fs::rename(self.root.join(&tmp), self.root.join(&p)).expect("rename over");
        self.note(format!("save {} ({len} bytes)", p.display()));
        vec![
            event("create", "file", &tmp, None),
            event("move", "file", &tmp, Some(&p)),
        ]
    }

    fn create(&mut self, all: &Ents) -> Vec<String> {
        let d = self.rng.pick(&dirs_of(all)).expect("root");
        let p = d.join(NAMES[self.rng.below(NAMES.len())]);
        if fs::symlink_metadata(self.root.join(&p)).is_ok() {
            return vec![];
        }
        let len = self.rng.below(5000);
        fs::write(self.root.join(&p), bytes(&mut self.rng, len)).expect("create");
        self.note(format!("create {} ({len} bytes)", p.display()));
        vec![event("create", "file", &p, None)]
    }

    fn writable_file(&mut self, all: &Ents) -> Option<PathBuf> {
        let who = self.who;
        self.rng.pick(&of(all, |m| {
            m.is_file() && (who == Who::Root || m.mode() & 0o200 != 0)
        }))
    }

    fn append(&mut self, all: &Ents) -> Vec<String> {
        let Some(p) = self.writable_file(all) else {
            return vec![];
        };
        let len = 1 + self.rng.below(3000);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.root.join(&p))
            .expect("open");
        std::io::Write::write_all(&mut f, &bytes(&mut self.rng, len)).expect("append");
        self.note(format!("append {len} bytes to {}", p.display()));
        names_of(self.root, &p, "modify")
    }

    fn truncate(&mut self, all: &Ents) -> Vec<String> {
        let Some(p) = self.writable_file(all) else {
            return vec![];
        };
        let len = self.rng.below(60_000) as u64;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(self.root.join(&p))
            .expect("open");
        f.set_len(len).expect("truncate");
        self.note(format!("truncate {} to {len}", p.display()));
        names_of(self.root, &p, "modify")
    }

    /// `tar x` of the history's small archive into a random directory.
    fn tar_x(&mut self, all: &Ents) -> Vec<String> {
        let d = self.rng.pick(&dirs_of(all)).expect("root");
        // tar cannot extract over a non-directory where the archive has a folder, nor
        // over a directory where it has a file: such a target is skipped.
        let clash = TAR_MEMBERS.iter().any(|(member, is_dir)| {
            fs::symlink_metadata(self.root.join(&d).join(member))
                .is_ok_and(|m| m.is_dir() != *is_dir)
        });
        if clash {
            return vec![];
        }
        sh(&format!(
            "tar -xf '{}' -C '{}'",
            self.tar.display(),
            self.root.join(&d).display()
        ));
        self.note(format!("tar x into {}/", d.display()));
        let mut evs = Vec::new();
        for (member, _) in TAR_MEMBERS {
            let p = d.join(member);
            let m = fs::symlink_metadata(self.root.join(&p)).expect("extracted");
            evs.push(event("create", etype(&m), &p, None));
            if m.is_dir() {
                evs.push(event("attrib", "dir", &p, None));
            }
        }
        evs
    }

    fn mkdir(&mut self, all: &Ents) -> Vec<String> {
        let d = self.rng.pick(&dirs_of(all)).expect("root");
        let p = d.join(NAMES[self.rng.below(NAMES.len())]);
        if fs::create_dir(self.root.join(&p)).is_err() {
            return vec![];
        }
        self.note(format!("mkdir {}", p.display()));
        vec![event("create", "dir", &p, None)]
    }

    fn rmdir(&mut self, all: &Ents) -> Vec<String> {
        let empty = of(all, |m| m.is_dir());
        let empty: Vec<PathBuf> = empty
            .into_iter()
            .filter(|p| sorted_names(&self.root.join(p)).is_empty())
            .collect();
        let Some(p) = self.rng.pick(&empty) else {
            return vec![];
        };
        fs::remove_dir(self.root.join(&p)).expect("rmdir");
        self.note(format!("rmdir {}", p.display()));
        vec![event("delete", "dir", &p, None)]
    }

    /// Renames the top-level folder holding the most entries (or, sometimes, any folder
    /// into another one).
    fn rename_big_folder(&mut self, all: &Ents) -> Vec<String> {
        let top = of(all, |m| m.is_dir())
            .into_iter()
            .filter(|p| p.components().count() == 1);
        let count = |p: &PathBuf| all.iter().filter(|(q, _)| q.starts_with(p)).count();
        let Some(from) = top.max_by_key(count) else {
            return vec![];
        };
        let to = PathBuf::from(["pkg", "pkg2", "project"][self.rng.below(3)]);
        if fs::symlink_metadata(self.root.join(&to)).is_ok() {
            return vec![];
        }
        fs::rename(self.root.join(&from), self.root.join(&to)).expect("rename folder");
        self.note(format!("mv {} {}", from.display(), to.display()));
        vec![event("move", "dir", &from, Some(&to))]
    }

    fn chmod(&mut self, all: &Ents) -> Vec<String> {
        let Some((p, m)) = self.rng.pick(all) else {
            return vec![];
        };
        let mode = if m.is_dir() {
            DIR_MODES[self.rng.below(DIR_MODES.len())]
        } else if m.is_file() {
            FILE_MODES[self.rng.below(FILE_MODES.len())]
        } else {
            return vec![];
        };
        fs::set_permissions(self.root.join(&p), fs::Permissions::from_mode(mode)).expect("chmod");
        self.note(format!("chmod {mode:o} {}", p.display()));
        names_of(self.root, &p, "attrib")
    }

    fn chown(&mut self, all: &Ents) -> Vec<String> {
        let Some((p, _)) = self.rng.pick(all) else {
            return vec![];
        };
        if self.who != Who::Root || !crate::is_root() {
            return vec![];
        }
        let (u, g) = OWNERS[self.rng.below(OWNERS.len())];
        std::os::unix::fs::lchown(self.root.join(&p), Some(u), Some(g)).expect("lchown");
        self.note(format!("chown -h {u}:{g} {}", p.display()));
        names_of(self.root, &p, "attrib")
    }

    /// `touch -h -d @T` (an mtime change alone).
    fn touch(&mut self, all: &Ents) -> Vec<String> {
        let Some((p, _)) = self.rng.pick(all) else {
            return vec![];
        };
        // An old time, or now (within a timestamp tick of the last version's copies).
        let t = if self.rng.below(3) == 0 {
            "now".to_owned()
        } else {
            format!(
                "@{}.{:09}",
                1_600_000_000 + self.rng.below(1 << 27),
                self.rng.below(1_000_000_000)
            )
        };
        TestCommand::program("touch")
            .args(["-h", "-d", &t])
            .arg(self.root.join(&p))
            .assert_success();
        self.note(format!("touch -h -d {t} {}", p.display()));
        names_of(self.root, &p, "attrib")
    }

    /// A symlink: to a sibling, `.`, an absolute path inside or outside the source, nothing,
    /// or (`climbing`) a relative path into another folder.
    fn link(&mut self, all: &Ents) -> Vec<String> {
        let d = self.rng.pick(&dirs_of(all)).expect("root");
        let p = d.join(format!("ln-{}", NAMES[self.rng.below(NAMES.len())]));
        if fs::symlink_metadata(self.root.join(&p)).is_ok() {
            return vec![];
        }
        let other = self.rng.pick(all).map(|(q, _)| q).unwrap_or_default();
        let sibling = self
            .rng
            .pick(&sorted_names(&self.root.join(&d)))
            .map(PathBuf::from);
        let text = match self.rng.below(if self.knobs.climbing { 7 } else { 6 }) {
            0 | 1 => sibling.unwrap_or_else(|| PathBuf::from("gone")),
            2 => PathBuf::from("."),
            3 => self.root.join(&other),
            4 => PathBuf::from("/etc/hostname"),
            5 => PathBuf::from("missing/file"),
            _ => Path::new(&"../".repeat(d.components().count())).join(&other),
        };
        symlink(&text, self.root.join(&p)).expect("symlink");
        self.note(format!("ln -s {} {}", text.display(), p.display()));
        vec![event("create", "symlink", &p, None)]
    }

    fn hard_link(&mut self, all: &Ents) -> Vec<String> {
        let Some(f) = self.rng.pick(&of(all, |m| m.is_file())) else {
            return vec![];
        };
        let d = self.rng.pick(&dirs_of(all)).expect("root");
        let p = d.join(format!("hl-{}", NAMES[self.rng.below(NAMES.len())]));
        if fs::hard_link(self.root.join(&f), self.root.join(&p)).is_err() {
            return vec![];
        }
        self.note(format!("ln {} {}", f.display(), p.display()));
        // link(2) changes the inode's link count, which inotify tells only a watch on the
        // file itself: the folders' watches hear of the new name alone.
        vec![event("create", "file", &p, None)]
    }

    /// An edit of a hard-linked file through one of its names, picked at random so every
    /// name gets its turn: in place (truncate and write, or append; every name shows it) or
    /// saved by writing `.NAME.swp` or `NAME~` and renaming it over the name (vim, gedit;
    /// the link breaks in the source, the other names keep the old data). Without a
    /// hard-linked file, one is linked first.
    fn edit_hard_link(&mut self, all: &Ents) -> Vec<String> {
        let who = self.who;
        let mut groups: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for (p, m) in all {
            if m.is_file() && m.nlink() > 1 && (who == Who::Root || m.mode() & 0o200 != 0) {
                groups.entry(m.ino()).or_default().push(p.clone());
            }
        }
        let groups: Vec<Vec<PathBuf>> = groups.into_values().collect();
        let Some(names) = self.rng.pick(&groups) else {
            return self.hard_link(all);
        };
        let p = self.rng.pick(&names).expect("a name");
        let abs = self.root.join(&p);
        let len = 1 + self.rng.below(9000);
        let data = bytes(&mut self.rng, len);
        let file_name = p.file_name().expect("name").to_string_lossy().into_owned();
        match self.rng.below(4) {
            0 => {
                fs::write(&abs, &data).expect("write in place");
                self.note(format!(
                    "write {len} bytes in place through {}",
                    p.display()
                ));
                vec![event("modify", "file", &p, None)]
            }
            1 => {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(&abs)
                    .expect("open");
                std::io::Write::write_all(&mut f, &data).expect("append");
                self.note(format!("append {len} bytes through {}", p.display()));
                vec![event("modify", "file", &p, None)]
            }
            pattern => {
                let tmp = p.with_file_name(if pattern == 2 {
                    format!(".{file_name}.swp")
                } else {
                    format!("{file_name}~")
                });
                if fs::symlink_metadata(self.root.join(&tmp)).is_ok() {
                    return vec![];
                }
                let mode = fs::metadata(&abs).expect("stat").mode() & 0o7777;
                fs::write(self.root.join(&tmp), &data).expect("write tmp");
                fs::set_permissions(self.root.join(&tmp), fs::Permissions::from_mode(mode))
                    .expect("chmod");
                fs::rename(self.root.join(&tmp), &abs).expect("rename over");
                self.note(format!(
                    "save {} by rename of {} ({len} bytes; its other names keep the old data)",
                    p.display(),
                    tmp.display()
                ));
                vec![
                    event("create", "file", &tmp, None),
                    event("modify", "file", &tmp, None),
                    event("move", "file", &tmp, Some(&p)),
                ]
            }
        }
    }

    fn fifo(&mut self, all: &Ents) -> Vec<String> {
        let d = self.rng.pick(&dirs_of(all)).expect("root");
        let p = d.join("fifo");
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o640);
        if nix::unistd::mkfifo(&self.root.join(&p), mode).is_err() {
            return vec![];
        }
        self.note(format!("mkfifo {}", p.display()));
        vec![event("create", "other", &p, None)]
    }

    fn rm(&mut self, all: &Ents) -> Vec<String> {
        let Some((p, m)) = self.rng.pick(
            &all.iter()
                .filter(|(_, m)| !m.is_dir())
                .cloned()
                .collect::<Vec<_>>(),
        ) else {
            return vec![];
        };
        fs::remove_file(self.root.join(&p)).expect("rm");
        self.note(format!("rm {}", p.display()));
        vec![event("delete", etype(&m), &p, None)]
    }

    /// `setfattr` alone (unless `REVERB_DIFF_XATTRS=0`).
    fn xattr(&mut self, all: &Ents) -> Vec<String> {
        let Some((p, m)) = self.rng.pick(all) else {
            return vec![];
        };
        if !self.knobs.xattrs || !(m.is_file() || m.is_dir()) {
            return vec![];
        }
        let v = format!("v{}", self.rng.below(1000));
        TestCommand::program("setfattr")
            .args(["-n", "user.note", "-v", &v])
            .arg(self.root.join(&p))
            .assert_success();
        self.note(format!("setfattr -n user.note -v {v} {}", p.display()));
        names_of(self.root, &p, "attrib")
    }
}

// ---------------------------------------------------------------------------------------
// One history.

/// What a run checked.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub histories: u64,
    pub versions: u64,
    pub checks: u64,
    pub events: u64,
}

/// The starting tree: most files in `pkg/`, a few links (a hard-linked pair across folders
/// among them), a big-ish file.
fn initial_tree(src: &Path, rng: &mut Rng, knobs: &Knobs) {
    for d in ["pkg/a", "pkg/b/deep", "pkg/c", "docs"] {
        fs::create_dir_all(src.join(d)).expect("mkdir");
    }
    for (f, len) in [
        ("pkg/a/1", 3000),
        ("pkg/a/2", 100),
        ("pkg/b/1", 7000),
        ("pkg/b/deep/x", 50),
        ("pkg/c/big", 300_000),
        ("docs/readme", 900),
        ("top", 10),
    ] {
        fs::write(src.join(f), bytes(rng, len)).expect("write");
    }
    fs::hard_link(src.join("pkg/a/2"), src.join("docs/hl-2")).expect("hard link");
    symlink("1", src.join("pkg/b/lnk")).expect("symlink");
    symlink(src.join("pkg/a/1"), src.join("docs/abs")).expect("symlink");
    symlink("/etc/hostname", src.join("docs/host")).expect("symlink");
    if knobs.climbing {
        symlink("../a/1", src.join("pkg/b/up")).expect("symlink");
    }
}

/// The small archive `tar x` extracts: a folder, a subfolder, files with old mtimes, a link.
fn make_tar(dir: &Path, rng: &mut Rng) -> PathBuf {
    let stage = dir.join("tar-stage");
    fs::create_dir_all(stage.join("t/lib")).expect("mkdir");
    for (f, len) in [("t/readme", 400), ("t/lib/x.c", 2000), ("t/lib/y.c", 1200)] {
        fs::write(stage.join(f), bytes(rng, len)).expect("write");
    }
    symlink("lib/x.c", stage.join("t/bin")).expect("symlink");
    let tar = dir.join("t.tar");
    sh(&format!(
        "cd '{}' && touch -h -d @1500000000.123456789 t/readme t/lib/x.c t/lib t/bin t && tar -cf '{}' t",
        stage.display(),
        tar.display()
    ));
    tar
}

/// `reverb-TOOL --vault V --job J`, as `who`.
fn tool(f: &Fixture, who: Who, name: &str) -> TestCommand {
    if who == Who::Root {
        return f.tool(name);
    }
    let mut c = TestCommand::program("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin(name))
        .arg("--vault")
        .arg(&f.vault)
        .arg("--job")
        .arg(&f.job)
        .show_dir(f.job_dir());
    c
}

/// Lets nobody reach the source and own the vault and the restore area.
fn prepare_for_nobody(f: &Fixture, work: &Path) {
    let mut p = f.src.clone();
    while p.pop() {
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o755));
        if p == Path::new("/tmp") || p == Path::new("/") {
            break;
        }
    }
    fs::create_dir_all(&f.vault).expect("mkdir vault");
    sh(&format!(
        "chown {NOBODY}:{NOBODY} '{}' '{}'",
        f.vault.display(),
        work.display()
    ));
}

/// Removes the FIFOs, sockets and device nodes of the capture `cap`, putting back the
/// times of the directories that held them (as `cp -a` made them).
fn drop_specials(cap: &Path) {
    let mut stack = vec![cap.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let meta = fs::symlink_metadata(&dir).expect("lstat capture");
        let mut dropped = false;
        for name in sorted_names(&dir) {
            let p = dir.join(name);
            let ft = fs::symlink_metadata(&p).expect("lstat capture").file_type();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_fifo() || ft.is_socket() || ft.is_char_device() || ft.is_block_device()
            {
                fs::remove_file(&p).expect("remove special");
                dropped = true;
            }
        }
        if dropped {
            let at = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &dir,
                &at(meta.atime(), meta.atime_nsec()),
                &at(meta.mtime(), meta.mtime_nsec()),
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .expect("times back");
        }
    }
}

/// Runs one history; panics naming the seed, the version, the path and the field.
pub fn history(seed: u64, knobs: &Knobs, who: Who, tally: &mut Tally) {
    let mut f = FastFixture::new(128);
    if let Some(dir) = &knobs.vault_in {
        f.f.vault = dir.join(format!("vault-{seed:x}"));
    }
    let work = f._tmp.path().join("work");
    fs::create_dir(&work).expect("mkdir work");
    let mut rng = Rng::new(seed);
    let tar = make_tar(f._tmp.path(), &mut rng);
    initial_tree(&f.src, &mut rng, knobs);
    if who == Who::Nobody {
        prepare_for_nobody(&f, &work);
    }
    let mut s = Source {
        root: &f.src,
        rng,
        knobs,
        who,
        tar,
        log: vec!["initial tree".into()],
    };
    let mut newest = String::new();
    for step in 0..=knobs.steps {
        let mut events = Vec::new();
        if step > 0 {
            for _ in 0..1 + s.rng.below(4) {
                events.extend(s.random_op());
            }
        }
        settle_owner(&f.src, who);
        let cap = work.join("capture");
        crate::replace_with_copy(&f.src, &cap);
        if !knobs.keeps.specials {
            // What the version should hold on such a vault: the source without them.
            drop_specials(&cap);
        }
        tally.events += events.len() as u64;
        if let Some(v) = take_version(&f, &mut s, step, &events) {
            newest = v;
            tally.versions += 1;
        }
        let check = |log: &[String], tally: &mut Tally| {
            let problems = check_version(&f, who, &cap, &work, &newest, knobs);
            tally.checks += 1;
            if !problems.is_empty() {
                fail(seed, who, step, &newest, &problems, log);
            }
        };
        check(&s.log, tally);
        // Sometimes retire old versions, as a configured limit would: the newest version's
        // links are moved to the new holders and it must still be the source.
        if step > 0 && s.rng.below(5) == 0 {
            let keep = (2 + s.rng.below(3)).to_string();
            tool(&f, who, "reverb-retire")
                .args(["--keep", &keep])
                .assert_success();
            s.log.push(format!("-- reverb-retire --keep {keep}"));
            check(&s.log, tally);
        }
        if knobs.replica && !newest.is_empty() {
            // Replicated (sometimes only every other step, so that several versions, or a
            // base retired meanwhile, go at once), then the replica's copy of the newest
            // version is the source too; sometimes the replica retires by its own rules.
            if step == knobs.steps || s.rng.below(3) != 0 {
                let replica = f._tmp.path().join("replica");
                TestCommand::program(bin("reverberator"))
                    .args(["replicate", &f.job, "--init", "--vault"])
                    .arg(&f.vault)
                    .arg("--to")
                    .arg(&replica)
                    .assert_success();
                s.log.push("-- reverberator replicate".into());
                let problems = check_replica_version(&f, &replica, &cap, &work, &newest, knobs);
                tally.checks += 1;
                if !problems.is_empty() {
                    fail(seed, who, step, &newest, &problems, &s.log);
                }
                if s.rng.below(4) == 0 {
                    let keep = (1 + s.rng.below(3)).to_string();
                    TestCommand::program(bin("reverb-retire"))
                        .arg("--vault")
                        .arg(&replica)
                        .args(["--job", &f.job, "--keep", &keep])
                        .assert_success();
                    s.log
                        .push(format!("-- reverb-retire --keep {keep} (the replica)"));
                }
            }
        }
    }
    tally.histories += 1;
}

/// The first version (step 0), or one by events or by rescan; the version made, if any.
fn take_version(f: &Fixture, s: &mut Source<'_>, step: usize, events: &[String]) -> Option<String> {
    let by_events = step > 0 && s.rng.below(2) == 0;
    let mut snap = tool(f, s.who, "reverb-snap");
    if step == 0 {
        snap.arg("--init").arg("--source").arg(&f.src);
    } else if by_events {
        snap = changes(f, s.who, events);
    }
    let v = snap.stdout().trim().to_owned();
    s.log.push(format!(
        "-- {} -> {}",
        if by_events { "events" } else { "rescan" },
        if v.is_empty() { "no version" } else { &v }
    ));
    (!v.is_empty()).then_some(v)
}

fn settle_owner(src: &Path, who: Who) {
    if who == Who::Nobody {
        sh(&format!(
            "chown -R -h {NOBODY}:{NOBODY} '{}'",
            src.display()
        ));
    }
}

fn changes(f: &Fixture, who: Who, events: &[String]) -> TestCommand {
    let mut text = format!("{}\n", reverb_common::events::HEADER);
    for e in events {
        text.push_str(e);
        text.push('\n');
    }
    let mut c = tool(f, who, "reverb-snap");
    c.args(["--changes", "-"]).stdin(text.into_bytes());
    c
}

/// The three views of version `v` against the capture `cap`.
fn check_version(
    f: &Fixture,
    who: Who,
    cap: &Path,
    work: &Path,
    v: &str,
    knobs: &Knobs,
) -> Vec<String> {
    let owners = who == Who::Root && crate::is_root();
    let dest = work.join("restored");
    let mut r = tool(f, who, "reverb-restore");
    r.args(["--from", v])
        .arg("--to")
        .arg(&dest)
        .assert_success();
    let ver = f.job_dir().join(v);
    let mut out: Vec<String> = restore_view(cap, &dest, owners, knobs.xattrs, knobs.keeps)
        .into_iter()
        .map(|d| format!("[restore] {d}"))
        .collect();
    out.extend(
        browse_view(cap, &ver)
            .into_iter()
            .map(|d| format!("[browse] {d}")),
    );
    out.extend(
        stat_view(cap, &ver, owners, knobs.keeps)
            .into_iter()
            .map(|d| format!("[stat] {d}")),
    );
    sh(&format!("rm -rf '{}'", dest.display()));
    out
}

/// The three views of version `v` in the replica vault `replica`, against the capture.
fn check_replica_version(
    f: &Fixture,
    replica: &Path,
    cap: &Path,
    work: &Path,
    v: &str,
    knobs: &Knobs,
) -> Vec<String> {
    let dest = work.join("restored-replica");
    TestCommand::program(bin("reverb-restore"))
        .arg("--vault")
        .arg(replica)
        .args(["--job", &f.job, "--from", v])
        .arg("--to")
        .arg(&dest)
        .assert_success();
    let ver = replica.join(&f.job).join(v);
    let owners = crate::is_root();
    let mut out: Vec<String> = restore_view(cap, &dest, owners, knobs.xattrs, knobs.keeps)
        .into_iter()
        .map(|d| format!("[replica restore] {d}"))
        .collect();
    out.extend(
        browse_view(cap, &ver)
            .into_iter()
            .map(|d| format!("[replica browse] {d}")),
    );
    out.extend(
        stat_view(cap, &ver, owners, knobs.keeps)
            .into_iter()
            .map(|d| format!("[replica stat] {d}")),
    );
    sh(&format!("rm -rf '{}'", dest.display()));
    out
}

fn fail(seed: u64, who: Who, step: usize, v: &str, problems: &[String], log: &[String]) -> ! {
    let shown: Vec<&String> = problems.iter().take(20).collect();
    let tail: Vec<&String> = log.iter().rev().take(60).rev().collect();
    panic!(
        "differential: seed {seed:#x} ({who:?}), step {step}, version {v}: {} differences:\n{}\n\
         operations (last 60):\n{}\nreproduce: REVERB_DIFF_SEED={seed:#x} REVERB_DIFF_CASES=1",
        problems.len(),
        shown
            .iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n"),
        tail.iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
}
