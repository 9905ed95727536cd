//! The registry of multiply linked source files (`<job>/hardlinks.tsv`,
//! docs/format.md#hardlinkstsv): for a version, every source name of each regular file whose
//! inode had more than one link when the version was made, grouped by that inode, so that a
//! build from events can find every name of an inode it saw changed through one of them
//! (docs/format.md#invariants I5).
//!
//! Owns the file's format: columns `dir dev ino links path`; a record whose other fields are
//! empty says that version `dir` is described (so a version without multiply linked files is
//! told from one the registry knows nothing about); every other record is one name (`path`,
//! escaped, exact) of the inode `dev`:`ino` (decimal, as the source's `lstat` gave them),
//! which then had `links` links ([`Names`]).
//!
//! Invariants: within a version each path belongs to one inode; no group is empty; the file
//! is replaced atomically, never edited in place.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result, show};
use crate::format::tsv;
use crate::fsutil;

/// The file name in the job folder.
pub const FILE: &str = "hardlinks.tsv";

/// A source inode: `(dev, ino)` of its `lstat`.
pub type Inode = (u64, u64);

/// The names of one inode, and its link count when they were recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub links: u64,
    /// Paths relative to the source, as bytes.
    pub paths: BTreeSet<Vec<u8>>,
}

/// One version's multiply linked files: the names of each inode, and the inode of each name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    groups: BTreeMap<Inode, Group>,
    inode_of: BTreeMap<Vec<u8>, Inode>,
}

impl Names {
    /// Records `path` as a name of `inode`, which has `links` links now (the path leaves any
    /// other inode it was recorded under).
    pub fn insert(&mut self, inode: Inode, links: u64, path: &[u8]) {
        self.remove(path);
        let group = self.groups.entry(inode).or_default();
        group.links = links;
        group.paths.insert(path.to_vec());
        self.inode_of.insert(path.to_vec(), inode);
    }

    /// Forgets `path`; returns the inode it was a name of.
    pub fn remove(&mut self, path: &[u8]) -> Option<Inode> {
        let inode = self.inode_of.remove(path)?;
        if let Some(group) = self.groups.get_mut(&inode) {
            group.paths.remove(path);
            if group.paths.is_empty() {
                self.groups.remove(&inode);
            }
        }
        Some(inode)
    }

    /// The recorded paths at `path` and below it.
    pub fn under(&self, path: &[u8]) -> Vec<Vec<u8>> {
        let mut below = path.to_vec();
        below.push(b'/');
        let exact = self.inode_of.get_key_value(path).map(|(k, _)| k.clone());
        exact
            .into_iter()
            .chain(
                self.inode_of
                    .range(below.clone()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&below))
                    .cloned(),
            )
            .collect()
    }

    /// Forgets `path` and every recorded path below it.
    pub fn remove_under(&mut self, path: &[u8]) {
        for p in self.under(path) {
            self.remove(&p);
        }
    }

    /// The inode `path` was recorded as a name of.
    pub fn inode_of(&self, path: &[u8]) -> Option<Inode> {
        self.inode_of.get(path).copied()
    }

    /// The group of `inode`.
    pub fn group(&self, inode: Inode) -> Option<&Group> {
        self.groups.get(&inode)
    }

    /// Every recorded inode.
    pub fn inodes(&self) -> impl Iterator<Item = &Inode> {
        self.groups.keys()
    }

    /// Every group whose inode number is `ino`, whatever its device number (which need not
    /// survive a reboot).
    pub fn with_ino(&self, ino: u64) -> impl Iterator<Item = (&Inode, &Group)> {
        self.groups.iter().filter(move |((_, i), _)| *i == ino)
    }
}

/// The registry: for each described version, its multiply linked files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    versions: BTreeMap<String, Names>,
}

/// The columns, in order.
const COLUMNS: [&str; 5] = ["dir", "dev", "ino", "links", "path"];

impl Registry {
    /// Reads the registry of a job folder (missing: empty, no version described).
    pub fn load(job_dir: &Path) -> Result<Registry> {
        let path = job_dir.join(FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(e).ctx("cannot read", &path),
        };
        let bad = |line: usize, msg: String| {
            Error::Damaged(format!("{} line {line}: {msg}", show(&path)))
        };
        let table =
            tsv::Table::parse(&text, &COLUMNS).map_err(|(line, e)| bad(line, e.to_string()))?;
        let mut out = Registry::default();
        for row in table.rows() {
            let text = |c: &str| row.text(c).map_err(|e| bad(row.line, e.to_string()));
            let dir = text("dir")?;
            let p = row.os("path").map_err(|e| bad(row.line, e.to_string()))?;
            let names = out.versions.entry(dir).or_default();
            if p.is_empty() {
                continue;
            }
            let num = |c: &str| -> Result<u64> {
                let t = text(c)?;
                t.parse::<u64>()
                    .map_err(|_| bad(row.line, format!("`{c}` is not a number: {t:?}")))
            };
            let (dev, ino, links) = (num("dev")?, num("ino")?, num("links")?);
            names.insert((dev, ino), links, p.as_bytes());
        }
        Ok(out)
    }

    /// The multiply linked files of version `dir`, if the registry describes it.
    pub fn of(&self, dir: &str) -> Option<&Names> {
        self.versions.get(dir)
    }

    /// Describes version `dir` as holding exactly `names`.
    pub fn set(&mut self, dir: &str, names: Names) {
        self.versions.insert(dir.to_owned(), names);
    }

    /// Forgets every version but those in `keep`.
    pub fn retain(&mut self, keep: &BTreeSet<&str>) {
        self.versions.retain(|d, _| keep.contains(d.as_str()));
    }

    /// Rewrites the registry atomically (temp file, fsync, rename, fsync of the folder).
    pub fn save(&self, job_dir: &Path) -> Result<()> {
        let r = self.replacement(job_dir);
        fsutil::write_atomic(&r.path, &r.contents)
    }

    /// The registry's file in job folder `job_dir` and its new text, for
    /// [`fsutil::Staged`].
    pub fn replacement(&self, job_dir: &Path) -> fsutil::Replacement {
        let mut out = format!("{}\n", COLUMNS.join("\t"));
        for (dir, names) in &self.versions {
            let d = tsv::escape(dir);
            out.push_str(&format!("{d}\t\t\t\t\n"));
            for ((dev, ino), group) in &names.groups {
                for p in &group.paths {
                    let p = tsv::escape_bytes(p);
                    out.push_str(&format!("{d}\t{dev}\t{ino}\t{}\t{p}\n", group.links));
                }
            }
        }
        fsutil::Replacement {
            path: job_dir.join(FILE),
            contents: out.into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_move_between_inodes_and_leave_no_empty_group() {
        let mut n = Names::default();
        n.insert((1, 10), 2, b"a/doc");
        n.insert((1, 10), 2, b"b/hl");
        n.insert((1, 11), 2, b"b/x/y");
        assert_eq!(n.group((1, 10)).map(|g| g.paths.len()), Some(2));
        n.insert((1, 11), 3, b"a/doc");
        assert_eq!(n.inode_of(b"a/doc"), Some((1, 11)));
        assert_eq!(n.group((1, 11)).map(|g| g.links), Some(3));
        n.remove_under(b"b");
        assert!(n.group((1, 10)).is_none(), "an empty group is dropped");
        assert_eq!(n.under(b""), Vec::<Vec<u8>>::new(), "the root is no prefix");
        assert_eq!(n.under(b"a/doc"), [b"a/doc".to_vec()]);
        assert_eq!(n.with_ino(11).count(), 1);
    }

    #[test]
    fn round_trips_and_describes_empty_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Registry::default();
        r.set("V1-20260101T000000Z", Names::default());
        let mut n = Names::default();
        n.insert((2049, 7), 3, b"a\tb/\xff");
        n.insert((2049, 7), 3, b"c");
        r.set("V2-20260101T000001Z", n.clone());
        r.save(dir.path()).expect("save");
        let back = Registry::load(dir.path()).expect("load");
        assert_eq!(back, r);
        assert_eq!(back.of("V1-20260101T000000Z"), Some(&Names::default()));
        assert_eq!(back.of("V2-20260101T000001Z"), Some(&n));
        assert!(back.of("V3-20260101T000002Z").is_none());
        assert_eq!(
            Registry::load(&dir.path().join("none")).expect("missing"),
            Registry::default()
        );
    }

    #[test]
    fn a_damaged_file_names_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(FILE),
            "dir\tdev\tino\tlinks\tpath\nV1\t1\tx\t2\ta\n",
        )
        .expect("write");
        let err = Registry::load(dir.path()).expect_err("damaged").to_string();
        assert!(
            err.contains("hardlinks.tsv line 2") && err.contains("ino"),
            "{err}"
        );
    }
}
