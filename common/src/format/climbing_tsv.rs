//! The registry of climbing source links (`<job>/climbing.tsv`, docs/format.md#climbingtsv):
//! the relative source links of a version whose target, read from where the link is, leaves
//! a directory by `..` (I8), and the lexical rule that says which directories they leave
//! ([`exits`]).
//!
//! Owns the file's format: columns `dir path target`; a record with an empty `path` says
//! that version `dir` is described (so a version without climbing links is told from one the
//! registry knows nothing about); every other record is one link of that version, its text
//! exact. Paths and targets are escaped like every TSV field.
//!
//! Invariants: only relative links that leave at least one directory of the source and never
//! climb above the source root are recorded ([`exits`] is empty for every other link); the
//! file is replaced atomically, never edited in place.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result, show};
use crate::format::tsv;
use crate::fsutil;

/// The file name in the job folder.
pub const FILE: &str = "climbing.tsv";

/// One version's climbing links: link path bytes → link text bytes.
pub type Links = BTreeMap<Vec<u8>, Vec<u8>>;

/// The directories (relative to the source, never the root) that a relative source link at
/// `link` with text `target` leaves by `..` when it is resolved, in walk order without
/// repeats. Empty for an absolute link, for one that climbs above the source root (it
/// resolves alike from every version: all versions are siblings) and for one that never
/// leaves a directory. The walk is lexical: a `..` after a component that is itself a
/// symlink is taken as the parent of that name.
pub fn exits(link: &Path, target: &Path) -> Vec<PathBuf> {
    if target.is_absolute() {
        return Vec::new();
    }
    let mut at: Vec<&OsStr> = link
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut left: Vec<PathBuf> = Vec::new();
    for comp in target.components() {
        match comp {
            Component::Normal(n) => at.push(n),
            Component::ParentDir => {
                if at.is_empty() {
                    return Vec::new();
                }
                let dir: PathBuf = at.iter().collect();
                if !left.contains(&dir) {
                    left.push(dir);
                }
                at.pop();
            }
            _ => {}
        }
    }
    left
}

/// The registry: for each described version, its climbing links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Climbing {
    versions: BTreeMap<String, Links>,
}

impl Climbing {
    /// Reads the registry of a job folder (missing: empty, no version described).
    pub fn load(job_dir: &Path) -> Result<Climbing> {
        let path = job_dir.join(FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Climbing::default()),
            Err(e) => return Err(e).ctx("cannot read", &path),
        };
        let bad = |line: usize, msg: String| {
            Error::Damaged(format!("{} line {line}: {msg}", show(&path)))
        };
        let table = tsv::Table::parse(&text, &["dir", "path", "target"])
            .map_err(|(line, e)| bad(line, e.to_string()))?;
        let mut out = Climbing::default();
        for row in table.rows() {
            let field = |c: &str| row.os(c).map_err(|e| bad(row.line, e.to_string()));
            let dir = row.text("dir").map_err(|e| bad(row.line, e.to_string()))?;
            let (p, t) = (field("path")?, field("target")?);
            let links = out.versions.entry(dir).or_default();
            if !p.is_empty() {
                links.insert(p.as_bytes().to_vec(), t.as_bytes().to_vec());
            }
        }
        Ok(out)
    }

    /// The climbing links of version `dir`, if the registry describes it.
    pub fn of(&self, dir: &str) -> Option<&Links> {
        self.versions.get(dir)
    }

    /// Describes version `dir` as holding exactly `links`.
    pub fn set(&mut self, dir: &str, links: Links) {
        self.versions.insert(dir.to_owned(), links);
    }

    /// Forgets every version but those in `keep`.
    pub fn retain(&mut self, keep: &BTreeSet<&str>) {
        self.versions.retain(|d, _| keep.contains(d.as_str()));
    }

    /// The registry's file in job folder `job_dir` and its new text, to be written
    /// atomically with [`fsutil::Staged`] (temp file, fsync, rename, fsync of the
    /// folder).
    pub fn replacement(&self, job_dir: &Path) -> fsutil::Replacement {
        let mut out = String::from("dir\tpath\ttarget\n");
        for (dir, links) in &self.versions {
            let d = tsv::escape(dir);
            out.push_str(&format!("{d}\t\t\n"));
            for (p, t) in links {
                let (p, t) = (tsv::escape_bytes(p), tsv::escape_bytes(t));
                out.push_str(&format!("{d}\t{p}\t{t}\n"));
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

    fn exits_of(link: &str, target: &str) -> Vec<String> {
        exits(Path::new(link), Path::new(target))
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn exits_are_the_directories_left_by_dotdot() {
        assert_eq!(exits_of("pkg/b/lnk", "../a/1"), ["pkg/b"]);
        assert_eq!(exits_of("a/b/c/l", "../../x"), ["a/b/c", "a/b"]);
        assert_eq!(exits_of("x/l", "../a/b/../../c"), ["x", "a/b", "a"]);
        assert_eq!(exits_of("a/l", "./sub/../f"), ["a/sub"]);
        assert!(exits_of("a/l", "f").is_empty(), "stays in its directory");
        assert!(exits_of("a/l", "sub/f").is_empty());
        assert!(exits_of("a/l", "/etc/passwd").is_empty(), "absolute");
        assert!(
            exits_of("a/l", "../../outside").is_empty(),
            "above the root"
        );
        assert!(exits_of("l", "../x").is_empty(), "above the root");
        assert_eq!(exits_of("a/b/l", "../../a/b/../c"), ["a/b", "a"]);
    }

    #[test]
    fn round_trips_and_describes_empty_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Climbing::default();
        c.set("V1-20260101T000000Z", Links::new());
        let mut links = Links::new();
        links.insert(b"a\tb/l\n".to_vec(), b"../x\xff".to_vec());
        c.set("V2-20260101T000001Z", links);
        let r = c.replacement(dir.path());
        fsutil::write_atomic(&r.path, &r.contents).expect("save");
        let back = Climbing::load(dir.path()).expect("load");
        assert_eq!(back, c);
        assert_eq!(back.of("V1-20260101T000000Z"), Some(&Links::new()));
        assert!(back.of("V3-20260101T000002Z").is_none());
        assert_eq!(
            Climbing::load(&dir.path().join("none")).expect("missing"),
            Climbing::default()
        );
    }

    #[test]
    fn a_damaged_file_names_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE), "dir\tpath\ttarget\nV1\tx\n").expect("write");
        let err = Climbing::load(dir.path()).expect_err("damaged").to_string();
        assert!(err.contains("climbing.tsv line 2"), "{err}");
    }
}
