//! Reading and writing version trees through vault links (docs/format.md#invariants).
//!
//! Owns: the vault link's text (`../` per component of the path, then an older version's
//! directory, then the same relative path), telling vault links from source links, the
//! registry of source links whose text merely *looks* like a vault link (I4), and the one
//! tree walker ([`Walk`]) that everything reading a version's tree shares: following vault
//! links (restore, measuring) or listing them without following any (check, retirement).
//! The walker keeps its own stack, so a tree thousands of levels deep needs no deep call
//! stack.
//!
//! Invariants:
//! - A vault link at relative path `p` (d components) has exactly the text
//!   `"../" * d + "V{n}-{stamp}/" + p`, pointing at the canonical holder: every component of
//!   that target path is a real directory in the holder, so resolving any path follows at
//!   most one link per component.
//! - Vault links are only made for paths of at most [`MAX_LINK_DEPTH`] components; deeper
//!   entries are always real, so no path needs more than that many links (Linux gives up
//!   at 40).
//! - A symlink is a vault link iff its text is the vault-link text for its own path AND
//!   `(physical version, path)` is not in the lookalike registry (`lookalikes.tsv` in the job
//!   folder), which records every source link whose text has that shape.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result, show};
use crate::format::tsv;
use crate::fsutil;
use crate::vault::layout::VersionName;

/// Deepest path (in components) that may be a vault link.
pub const MAX_LINK_DEPTH: usize = 32;

/// The lookalike registry's file name in the job folder.
pub const LOOKALIKES: &str = "lookalikes.tsv";

/// Number of components of a relative path (`.`-free).
pub fn depth(rel: &Path) -> usize {
    rel.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// The text of a vault link at `rel` pointing at the same path in version dir `holder`.
pub fn link_text(rel: &Path, holder: &str) -> PathBuf {
    let d = depth(rel);
    let mut bytes = Vec::with_capacity(d * 3 + holder.len() + rel.as_os_str().len() + 1);
    for _ in 0..d {
        bytes.extend_from_slice(b"../");
    }
    bytes.extend_from_slice(holder.as_bytes());
    bytes.push(b'/');
    bytes.extend_from_slice(rel.as_os_str().as_bytes());
    PathBuf::from(OsStr::from_bytes(&bytes))
}

/// If `text` has the shape of a vault link for `rel`, the holder's directory name.
pub fn parse_link_text(rel: &Path, text: &Path) -> Option<String> {
    let d = depth(rel);
    let mut rest = text.as_os_str().as_bytes();
    for _ in 0..d {
        rest = rest.strip_prefix(b"../")?;
    }
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (dir, tail) = rest.split_at(slash);
    if &tail[1..] != rel.as_os_str().as_bytes() {
        return None;
    }
    let dir = std::str::from_utf8(dir).ok()?;
    VersionName::parse(dir).map(|v| v.dir)
}

/// The registry of source links that look like vault links: `(version dir, path)` pairs,
/// keyed by the version that physically holds the symlink.
#[derive(Debug, Clone, Default)]
pub struct Lookalikes {
    set: HashSet<(String, Vec<u8>)>,
}

impl Lookalikes {
    /// Loads the registry of a job folder (missing file = empty).
    pub fn load(job_dir: &Path) -> Result<Lookalikes> {
        let path = job_dir.join(LOOKALIKES);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lookalikes::default()),
            Err(e) => return Err(e).ctx("cannot read", &path),
        };
        let table = tsv::Table::parse(&text, &["dir", "path"]).map_err(|(line, e)| {
            Error::Damaged(format!("{} line {line}: {e}", crate::error::show(&path)))
        })?;
        let mut set = HashSet::new();
        for row in table.rows() {
            let dir = row.text("dir").map_err(|e| {
                Error::Damaged(format!(
                    "{} line {}: {e}",
                    crate::error::show(&path),
                    row.line
                ))
            })?;
            let p = row.os("path").map_err(|e| {
                Error::Damaged(format!(
                    "{} line {}: {e}",
                    crate::error::show(&path),
                    row.line
                ))
            })?;
            set.insert((dir, p.as_bytes().to_vec()));
        }
        Ok(Lookalikes { set })
    }

    /// Rewrites the registry atomically.
    pub fn save(&self, job_dir: &Path) -> Result<()> {
        let r = self.replacement(job_dir);
        fsutil::write_atomic(&r.path, &r.contents)
    }

    /// The registry's file in job folder `job_dir` and its new text, for
    /// [`fsutil::Staged`].
    pub fn replacement(&self, job_dir: &Path) -> fsutil::Replacement {
        let mut rows: Vec<_> = self.set.iter().collect();
        rows.sort();
        let mut out = String::from("dir\tpath\n");
        for (dir, p) in rows {
            out.push_str(&format!("{}\t{}\n", tsv::escape(dir), tsv::escape_bytes(p)));
        }
        fsutil::Replacement {
            path: job_dir.join(LOOKALIKES),
            contents: out.into_bytes(),
        }
    }

    /// Records that the symlink at `rel` in `dir` is a source link.
    pub fn insert(&mut self, dir: &str, rel: &Path) -> bool {
        self.set
            .insert((dir.to_owned(), rel.as_os_str().as_bytes().to_vec()))
    }

    /// Is the symlink at `rel` physically in `dir` a source link that looks like a vault link?
    pub fn contains(&self, dir: &str, rel: &Path) -> bool {
        !self.set.is_empty()
            && self
                .set
                .contains(&(dir.to_owned(), rel.as_os_str().as_bytes().to_vec()))
    }

    /// Copies every record of `from` at or below `rel` to `to`, keeping the originals
    /// (retirement: both keys stay valid while the data is moved). Returns whether any was
    /// added.
    pub fn alias(&mut self, from: &str, to: &str, rel: &Path) -> bool {
        let prefix = rel.as_os_str().as_bytes();
        let found: Vec<_> = self
            .set
            .iter()
            .filter(|(d, p)| d == from && under(p, prefix))
            .map(|(_, p)| (to.to_owned(), p.clone()))
            .collect();
        let mut added = false;
        for key in found {
            added |= self.set.insert(key);
        }
        added
    }

    /// Drops every record of versions not in `keep`.
    pub fn retain_versions(&mut self, keep: &HashSet<String>) -> bool {
        let before = self.set.len();
        self.set.retain(|(d, _)| keep.contains(d));
        before != self.set.len()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

fn under(p: &[u8], prefix: &[u8]) -> bool {
    prefix.is_empty()
        || p == prefix
        || (p.starts_with(prefix) && p.get(prefix.len()) == Some(&b'/'))
}

/// What a directory entry of a version is, seen without following anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A vault link to the same path in `holder`.
    VaultLink { holder: String },
    /// A real entry (file, directory, source link, special) physically in this version.
    Real(fs::FileType),
}

/// Classifies the entry at `rel` found physically in version `phys` at `abs`.
pub fn classify(
    abs: &Path,
    rel: &Path,
    phys: &str,
    ft: fs::FileType,
    lookalikes: &Lookalikes,
) -> Result<Entry> {
    if !ft.is_symlink() {
        return Ok(Entry::Real(ft));
    }
    let text = fs::read_link(abs).ctx("cannot read link", abs)?;
    match parse_link_text(rel, &text) {
        Some(holder) if !lookalikes.contains(phys, rel) => Ok(Entry::VaultLink { holder }),
        _ => Ok(Entry::Real(ft)),
    }
}

/// Resolves `rel` in version `version` to its physical location: the version dir holding
/// the real entry, following vault links component by component. `None` if it does not exist.
pub fn resolve(
    job_dir: &Path,
    version: &str,
    rel: &Path,
    lookalikes: &Lookalikes,
) -> Result<Option<String>> {
    let mut phys = version.to_owned();
    let mut sofar = PathBuf::new();
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            continue;
        };
        sofar.push(name);
        let abs = job_dir.join(&phys).join(&sofar);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("cannot inspect", &abs),
        };
        if let Entry::VaultLink { holder } =
            classify(&abs, &sofar, &phys, meta.file_type(), lookalikes)?
        {
            phys = holder;
        }
    }
    Ok(Some(phys))
}

/// Where a vault link's target stands in its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every component is real in the holder: canonical and existing.
    Canonical,
    /// A component (this path) is itself a vault link: the link is not canonical.
    ThroughLink(PathBuf),
    /// The target does not exist (or a non-final component is not a directory).
    Missing,
}

/// Inspects the target of a vault link at `rel` into `holder` without following anything.
pub fn target_of(job: &Path, holder: &str, rel: &Path, lookalikes: &Lookalikes) -> Result<Target> {
    let comps: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut sofar = PathBuf::new();
    for (i, name) in comps.iter().enumerate() {
        sofar.push(name);
        let last = i + 1 == comps.len();
        let abs = job.join(holder).join(&sofar);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Target::Missing),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(Target::Missing),
            Err(e) => return Err(e).ctx("cannot inspect", &abs),
        };
        let ft = meta.file_type();
        if ft.is_symlink()
            && let Entry::VaultLink { .. } = classify(&abs, &sofar, holder, ft, lookalikes)?
        {
            return Ok(Target::ThroughLink(Path::new(holder).join(&sofar)));
        }
        if !last && !ft.is_dir() {
            return Ok(Target::Missing);
        }
    }
    Ok(Target::Canonical)
}

/// Every vault link physically in version `phys`: `(path, holder)` pairs, sorted, found by
/// walking only the version's real directories (a link is never followed), so the cost is
/// proportional to what the version holds, not to the tree it reads as.
pub fn vault_links(
    job: &Path,
    phys: &str,
    lookalikes: &Lookalikes,
) -> Result<Vec<(PathBuf, String)>> {
    struct Collect(Vec<(PathBuf, String)>);
    impl Visitor for Collect {
        fn entry(&mut self, _node: &mut Node) -> Result<()> {
            Ok(())
        }
        fn vault_link(&mut self, node: &Node, holder: String) -> Result<()> {
            self.0.push((node.rel.clone(), holder));
            Ok(())
        }
    }
    let mut found = Collect(Vec::new());
    Walk::new(job, lookalikes, Links::Report).run(phys, Path::new(""), &mut found)?;
    found.0.sort();
    Ok(found.0)
}

/// How a [`Walk`] treats the vault links it meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Read the version as it promises: a vault link is followed to the same path in its
    /// holder (which then becomes the entry's `phys`).
    Follow,
    /// Visit only the version's real entries: a vault link goes to
    /// [`Visitor::vault_link`] and is never followed.
    Report,
}

/// One entry met by a [`Walk`].
#[derive(Debug)]
pub struct Node {
    /// The version that physically holds the entry.
    pub phys: String,
    /// Its path relative to the version root (empty for the root).
    pub rel: PathBuf,
    /// Its path on disk.
    pub abs: PathBuf,
    /// Its type, not following it.
    pub file_type: fs::FileType,
    meta: Option<fs::Metadata>,
}

impl Node {
    /// The entry's metadata (not following it), read once and then kept, so a directory's
    /// metadata seen in [`Visitor::entry`] is the one [`Visitor::dir_done`] gets.
    pub fn metadata(&mut self) -> Result<&fs::Metadata> {
        let meta = match self.meta.take() {
            Some(m) => m,
            None => fs::symlink_metadata(&self.abs).ctx("cannot inspect", &self.abs)?,
        };
        Ok(self.meta.insert(meta))
    }
}

/// What a [`Walk`] tells its caller about.
pub trait Visitor {
    /// A real entry (file, directory, source link, special); a directory comes before
    /// anything below it.
    fn entry(&mut self, node: &mut Node) -> Result<()>;

    /// A directory, after everything below it.
    fn dir_done(&mut self, _node: &mut Node) -> Result<()> {
        Ok(())
    }

    /// A vault link into `holder` ([`Links::Report`] only).
    fn vault_link(&mut self, _node: &Node, _holder: String) -> Result<()> {
        Ok(())
    }

    /// The walk's start, or a followed link's target, cannot be inspected at `abs`.
    fn unreachable(&mut self, abs: &Path, error: io::Error) -> Result<()> {
        Err(error).ctx("cannot inspect", abs)
    }

    /// A vault link naming its own version ([`Links::Follow`]): damage, following it would
    /// loop.
    fn self_link(&mut self, node: &Node) -> Result<()> {
        Err(Error::Damaged(format!(
            "{} links to itself",
            show(&node.abs)
        )))
    }
}

/// The tree walker: depth first, a directory's entries in name order when
/// [`sorted`](Walk::sorted), with an explicit stack instead of recursion.
pub struct Walk<'a> {
    job: &'a Path,
    lookalikes: &'a Lookalikes,
    links: Links,
    sorted: bool,
}

/// What the walk still has to do, innermost last.
enum Pending {
    /// Visit `rel` in `phys` (its type when the listing gave it).
    Visit {
        phys: String,
        rel: PathBuf,
        file_type: Option<fs::FileType>,
    },
    /// Everything below this directory is done.
    Leave(Node),
}

impl<'a> Walk<'a> {
    /// A walk of version trees in the job folder `job`.
    pub fn new(job: &'a Path, lookalikes: &'a Lookalikes, links: Links) -> Walk<'a> {
        Walk {
            job,
            lookalikes,
            links,
            sorted: false,
        }
    }

    /// Visit each directory's entries in name order (a restore's hard links then pair the
    /// same way every time).
    pub fn sorted(mut self) -> Walk<'a> {
        self.sorted = true;
        self
    }

    /// Walks `rel` (empty: the whole version) of version `phys`, telling `visitor`.
    pub fn run(&self, phys: &str, rel: &Path, visitor: &mut impl Visitor) -> Result<()> {
        let mut stack = vec![Pending::Visit {
            phys: phys.to_owned(),
            rel: rel.to_path_buf(),
            file_type: None,
        }];
        while let Some(next) = stack.pop() {
            match next {
                Pending::Leave(mut dir) => visitor.dir_done(&mut dir)?,
                Pending::Visit {
                    phys,
                    rel,
                    file_type,
                } => self.visit(phys, rel, file_type, visitor, &mut stack)?,
            }
        }
        Ok(())
    }

    fn visit(
        &self,
        phys: String,
        rel: PathBuf,
        file_type: Option<fs::FileType>,
        visitor: &mut impl Visitor,
        stack: &mut Vec<Pending>,
    ) -> Result<()> {
        let abs = in_version(self.job, &phys, &rel);
        let (file_type, meta) = match file_type {
            Some(ft) => (ft, None),
            None => match fs::symlink_metadata(&abs) {
                Ok(m) => (m.file_type(), Some(m)),
                Err(e) => return visitor.unreachable(&abs, e),
            },
        };
        let mut node = Node {
            phys,
            rel,
            abs,
            file_type,
            meta,
        };
        if file_type.is_symlink()
            && !node.rel.as_os_str().is_empty()
            && let Entry::VaultLink { holder } =
                classify(&node.abs, &node.rel, &node.phys, file_type, self.lookalikes)?
        {
            return match self.links {
                Links::Report => visitor.vault_link(&node, holder),
                Links::Follow if holder == node.phys => visitor.self_link(&node),
                Links::Follow => {
                    stack.push(Pending::Visit {
                        phys: holder,
                        rel: node.rel,
                        file_type: None,
                    });
                    Ok(())
                }
            };
        }
        visitor.entry(&mut node)?;
        if file_type.is_dir() {
            self.push_children(node, stack)?;
        }
        Ok(())
    }

    /// Lists `dir` and schedules its entries (first entry on top), after them its end.
    fn push_children(&self, dir: Node, stack: &mut Vec<Pending>) -> Result<()> {
        let mut children: Vec<(OsString, fs::FileType)> = Vec::new();
        for e in fs::read_dir(&dir.abs).ctx("cannot list", &dir.abs)? {
            let e = e.ctx("cannot list", &dir.abs)?;
            let ft = e.file_type().ctx("cannot inspect", &e.path())?;
            children.push((e.file_name(), ft));
        }
        if self.sorted {
            children.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let (phys, rel) = (dir.phys.clone(), dir.rel.clone());
        stack.push(Pending::Leave(dir));
        for (name, ft) in children.into_iter().rev() {
            stack.push(Pending::Visit {
                phys: phys.clone(),
                rel: rel.join(name),
                file_type: Some(ft),
            });
        }
        Ok(())
    }
}

/// `job/phys/rel`, without a trailing slash for the version root.
pub fn in_version(job: &Path, phys: &str, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        job.join(phys)
    } else {
        job.join(phys).join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "V1-20261124T214900Z";
    const V2: &str = "V2-20261124T214901Z";

    /// Records what a walk reports, in order.
    #[derive(Default)]
    struct Trace(Vec<String>);

    impl Visitor for Trace {
        fn entry(&mut self, node: &mut Node) -> Result<()> {
            self.0.push(format!("{} {}", node.phys, node.rel.display()));
            Ok(())
        }
        fn dir_done(&mut self, node: &mut Node) -> Result<()> {
            self.0.push(format!("done {}", node.rel.display()));
            Ok(())
        }
        fn vault_link(&mut self, node: &Node, holder: String) -> Result<()> {
            self.0
                .push(format!("link {} -> {holder}", node.rel.display()));
            Ok(())
        }
    }

    /// V1 holds `a/x` and `b`; V2 holds `a` as a vault link into V1, and its own `c`.
    fn two_versions() -> tempfile::TempDir {
        let job = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(job.path().join(V1).join("a")).expect("mkdir");
        fs::write(job.path().join(V1).join("a/x"), b"x").expect("write");
        fs::write(job.path().join(V1).join("b"), b"b").expect("write");
        fs::create_dir_all(job.path().join(V2)).expect("mkdir");
        std::os::unix::fs::symlink(link_text(Path::new("a"), V1), job.path().join(V2).join("a"))
            .expect("link");
        fs::write(job.path().join(V2).join("c"), b"c").expect("write");
        job
    }

    #[test]
    fn walk_follows_or_reports_links_in_order() {
        let job = two_versions();
        let none = Lookalikes::default();
        let mut seen = Trace::default();
        Walk::new(job.path(), &none, Links::Follow)
            .sorted()
            .run(V2, Path::new(""), &mut seen)
            .expect("walk");
        assert_eq!(
            seen.0,
            [
                format!("{V2} "),
                format!("{V1} a"),
                format!("{V1} a/x"),
                "done a".into(),
                format!("{V2} c"),
                "done ".into(),
            ]
        );
        let mut seen = Trace::default();
        Walk::new(job.path(), &none, Links::Report)
            .sorted()
            .run(V2, Path::new(""), &mut seen)
            .expect("walk");
        assert_eq!(
            seen.0,
            [
                format!("{V2} "),
                format!("link a -> {V1}"),
                format!("{V2} c"),
                "done ".into(),
            ]
        );
        assert_eq!(
            vault_links(job.path(), V2, &none).expect("links"),
            [(PathBuf::from("a"), V1.to_owned())]
        );
    }

    #[test]
    fn walk_needs_no_deep_stack() {
        // 1,500 levels on a 128 KiB stack: a walk that recursed per level would overflow.
        let job = tempfile::tempdir().expect("tempdir");
        let mut deep = job.path().join(V1);
        for _ in 0..1500 {
            deep.push("d");
        }
        fs::create_dir_all(&deep).expect("mkdir -p");
        fs::write(deep.join("leaf"), b"bottom").expect("write");
        let root = job.path().to_path_buf();
        let walked = std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || {
                let none = Lookalikes::default();
                let mut seen = Trace::default();
                Walk::new(&root, &none, Links::Follow)
                    .run(V1, Path::new(""), &mut seen)
                    .map(|()| seen.0.len())
            })
            .expect("thread")
            .join()
            .expect("no overflow")
            .expect("walk");
        // The root and 1,500 directories, each entered and done, and the leaf.
        assert_eq!(walked, 1 + 2 * 1500 + 1 + 1);
    }

    #[test]
    fn link_text_shape() {
        let t = link_text(Path::new("a/b/c"), "V4-20261124T214900Z");
        assert_eq!(t, Path::new("../../../V4-20261124T214900Z/a/b/c"));
        assert_eq!(
            parse_link_text(Path::new("a/b/c"), &t).as_deref(),
            Some("V4-20261124T214900Z")
        );
        assert_eq!(parse_link_text(Path::new("a/b/d"), &t), None);
        assert_eq!(parse_link_text(Path::new("b/c"), &t), None);
        assert_eq!(
            parse_link_text(Path::new("x"), Path::new("../notaversion/x")),
            None
        );
    }

    #[test]
    fn lookalikes_alias_and_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut l = Lookalikes::default();
        l.insert("V1-20261124T214900Z", Path::new("a/x\ty"));
        l.insert("V1-20261124T214900Z", Path::new("ab/x"));
        assert!(l.alias("V1-20261124T214900Z", "V2-20261124T214901Z", Path::new("a")));
        assert!(l.contains("V2-20261124T214901Z", Path::new("a/x\ty")));
        assert!(l.contains("V1-20261124T214900Z", Path::new("a/x\ty")));
        assert!(l.contains("V1-20261124T214900Z", Path::new("ab/x")));
        l.save(dir.path()).expect("save");
        let back = Lookalikes::load(dir.path()).expect("load");
        assert_eq!(back.len(), 3);
    }
}
