//! The baseline of a `keep_complete = false` job (docs/configuration.md): the metadata of every entry of
//! the source when the job started, so that later versions hold only what changed since.
//!
//! Owns: `<job>/baseline.tsv` (columns `path type size mtime mode uid gid target`), written
//! once, atomically, before the first (empty) version is published; read by every build of
//! such a job. An entry equal to its baseline record (type, size, mtime, mode, owner when
//! privileged, link target) is "unchanged since the job started" and is left out of versions.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::capture::exclude::Excludes;
use crate::error::{Error, IoContext, Result, show};
use crate::format::tsv;
use crate::vault::fsutil;

/// The file name in the job folder.
pub const FILE: &str = "baseline.tsv";

/// One recorded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseEntry {
    /// `f`, `d`, `l`, `p`, `c`, `b`, `s`.
    pub kind: char,
    /// Apparent size.
    pub size: u64,
    /// mtime as (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// A symlink's target.
    pub target: Option<PathBuf>,
}

/// The type letter of a file type.
pub fn kind_of(meta: &Metadata) -> char {
    let ft = meta.file_type();
    if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else {
        's'
    }
}

impl BaseEntry {
    /// Records an entry from its lstat (and link target).
    pub fn of(path: &Path, meta: &Metadata) -> BaseEntry {
        BaseEntry {
            kind: kind_of(meta),
            size: if meta.is_dir() { 0 } else { meta.len() },
            mtime: (meta.mtime(), meta.mtime_nsec()),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            target: if meta.file_type().is_symlink() {
                fs::read_link(path).ok()
            } else {
                None
            },
        }
    }

    /// Is the entry now (its lstat) unchanged since the baseline? Directories compare by
    /// type only (their mtime moves with every child); owners only when `privileged`.
    pub fn unchanged(&self, path: &Path, meta: &Metadata, privileged: bool) -> bool {
        let now = BaseEntry::of(path, meta);
        if self.kind != now.kind {
            return false;
        }
        if self.kind == 'd' {
            return true;
        }
        self.size == now.size
            && self.mtime == now.mtime
            && (self.kind == 'l' || self.mode == now.mode)
            && (!privileged || (self.uid == now.uid && self.gid == now.gid))
            && self.target == now.target
    }
}

/// The whole baseline, keyed by relative path bytes.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    entries: HashMap<Vec<u8>, BaseEntry>,
}

impl Baseline {
    /// Records the source tree (not following links; excluded paths left out).
    pub fn record(source: &Path, excludes: &Excludes) -> Result<Baseline> {
        let mut b = Baseline::default();
        b.walk(source, Path::new(""), excludes)?;
        Ok(b)
    }

    fn walk(&mut self, abs: &Path, rel: &Path, excludes: &Excludes) -> Result<()> {
        let rd = match fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(()),
            Err(e) => return Err(e).ctx("cannot list source directory", abs),
        };
        for e in rd {
            let e = e.ctx("cannot list source directory", abs)?;
            let child_rel = rel.join(e.file_name());
            let path = e.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if excludes.is_excluded(&child_rel, meta.is_dir()) {
                continue;
            }
            self.entries.insert(
                child_rel.as_os_str().as_bytes().to_vec(),
                BaseEntry::of(&path, &meta),
            );
            if meta.is_dir() {
                self.walk(&path, &child_rel, excludes)?;
            }
        }
        Ok(())
    }

    /// The record of `rel`, if any.
    pub fn get(&self, rel: &Path) -> Option<&BaseEntry> {
        self.entries.get(rel.as_os_str().as_bytes())
    }

    /// Writes the baseline atomically into the job folder.
    pub fn save(&self, job_dir: &Path) -> Result<()> {
        let mut keys: Vec<&Vec<u8>> = self.entries.keys().collect();
        keys.sort();
        let mut out = String::from("path\ttype\tsize\tmtime\tmode\tuid\tgid\ttarget\n");
        for k in keys {
            let e = &self.entries[k];
            out.push_str(&format!(
                "{}\t{}\t{}\t{}.{:09}\t{:o}\t{}\t{}\t{}\n",
                tsv::escape_bytes(k),
                e.kind,
                e.size,
                e.mtime.0,
                e.mtime.1,
                e.mode,
                e.uid,
                e.gid,
                e.target
                    .as_ref()
                    .map(|t| tsv::escape_os(t.as_os_str()))
                    .unwrap_or_default()
            ));
        }
        fsutil::write_atomic(&job_dir.join(FILE), out.as_bytes())
    }

    /// Reads the baseline of a job folder (missing: empty, so everything counts as changed).
    pub fn load(job_dir: &Path) -> Result<Baseline> {
        let path = job_dir.join(FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Baseline::default()),
            Err(e) => return Err(e).ctx("cannot read", &path),
        };
        let bad = |line: usize, msg: String| {
            Error::Damaged(format!("{} line {line}: {msg}", show(&path)))
        };
        let table = tsv::Table::parse(
            &text,
            &[
                "path", "type", "size", "mtime", "mode", "uid", "gid", "target",
            ],
        )
        .map_err(|(l, e)| bad(l, e.to_string()))?;
        let mut b = Baseline::default();
        for row in table.rows() {
            let l = row.line;
            let text = |c: &str| row.text(c).map_err(|e| bad(l, format!("{c}: {e}")));
            let num = |c: &str| -> Result<u64> {
                text(c)?
                    .parse()
                    .map_err(|_| bad(l, format!("{c} is not a number")))
            };
            let kind = text("type")?
                .chars()
                .next()
                .ok_or_else(|| bad(l, "empty type".into()))?;
            let mtime = text("mtime")?;
            let (s, ns) = mtime
                .split_once('.')
                .ok_or_else(|| bad(l, "bad mtime".into()))?;
            let mtime = (
                s.parse().map_err(|_| bad(l, "bad mtime".into()))?,
                ns.parse().map_err(|_| bad(l, "bad mtime".into()))?,
            );
            let mode =
                u32::from_str_radix(&text("mode")?, 8).map_err(|_| bad(l, "bad mode".into()))?;
            let target = row.os("target").map_err(|e| bad(l, e.to_string()))?;
            let entry = BaseEntry {
                kind,
                size: num("size")?,
                mtime,
                mode,
                uid: num("uid")? as u32,
                gid: num("gid")? as u32,
                target: (kind == 'l').then(|| PathBuf::from(target)),
            };
            let p = row.os("path").map_err(|e| bad(l, e.to_string()))?;
            b.entries.insert(p.as_bytes().to_vec(), entry);
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("a\tb")).expect("mkdir");
        fs::write(src.join("a\tb/f"), b"x").expect("write");
        std::os::unix::fs::symlink("t\nx", src.join("l")).expect("symlink");
        let b = Baseline::record(&src, &Excludes::default()).expect("record");
        b.save(dir.path()).expect("save");
        let back = Baseline::load(dir.path()).expect("load");
        for p in ["a\tb", "a\tb/f", "l"] {
            assert_eq!(back.get(Path::new(p)), b.get(Path::new(p)), "{p}");
            let abs = src.join(p);
            let m = fs::symlink_metadata(&abs).expect("meta");
            assert!(
                back.get(Path::new(p))
                    .expect("entry")
                    .unchanged(&abs, &m, true)
            );
        }
        fs::write(src.join("a\tb/f"), b"changed").expect("write");
        let m = fs::symlink_metadata(src.join("a\tb/f")).expect("meta");
        assert!(!back.get(Path::new("a\tb/f")).expect("entry").unchanged(
            &src.join("a\tb/f"),
            &m,
            true
        ));
    }
}
