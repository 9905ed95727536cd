//! Reading and writing version trees through vault links (docs/format.md#invariants).
//!
//! Owns: the vault link's text (`../` per component of the path, then an older version's
//! directory, then the same relative path), telling vault links from source links, and the
//! registry of source links whose text merely *looks* like a vault link (I4).
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
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::tsv;
use crate::vault::fsutil;
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
        let mut rows: Vec<_> = self.set.iter().collect();
        rows.sort();
        let mut out = String::from("dir\tpath\n");
        for (dir, p) in rows {
            out.push_str(&format!("{}\t{}\n", tsv::escape(dir), tsv::escape_bytes(p)));
        }
        fsutil::write_atomic(&job_dir.join(LOOKALIKES), out.as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

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
