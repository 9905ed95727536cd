//! The baseline of a `keep_complete = false` job (docs/configuration.md): the metadata of every entry of
//! the source when the job started, so that later versions hold only what changed since.
//!
//! Owns: `<job>/baseline.tsv` (columns `path type size mtime mode uid gid target`, `type`
//! the one-letter form of [`EntryType`]), written once, atomically, before the first (empty)
//! version is published; read by every build of such a job.
//!
//! Invariant: an entry is "unchanged since the job started", and left out of versions,
//! exactly when [`compare`] finds it the same as its record; a directory only needs the same
//! type (its mtime moves with every child). The file has no device-number column, so a
//! record's `rdev` is unknown and not compared.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result, show};
use crate::format::entry::{Difference, EntryFacts, EntryType, compare};
use crate::format::exclude::Excludes;
use crate::format::tsv;
use crate::fsutil;

/// The file name in the job folder.
pub const FILE: &str = "baseline.tsv";

/// The baseline letter of an entry's type (`f`, `d`, `l`, `p`, `c`, `b`, `s`).
pub fn kind_of(meta: &Metadata) -> char {
    EntryType::of(meta.file_type()).letter()
}

/// Is the entry now (its lstat `meta`) unchanged since its baseline `record`? Owners count
/// only when `privileged`.
pub fn unchanged(record: &EntryFacts, path: &Path, meta: &Metadata, privileged: bool) -> bool {
    let now = EntryFacts::of(path, meta);
    record.etype == now.etype
        && (now.etype == EntryType::Dir || compare(record, &now, privileged) == Difference::Same)
}

/// The whole baseline, keyed by relative path bytes.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    entries: HashMap<Vec<u8>, EntryFacts>,
}

impl Baseline {
    /// Records the source tree (not following links; excluded paths left out; unreadable
    /// directories left unlisted). Iterative: any depth fits the stack.
    pub fn record(source: &Path, excludes: &Excludes) -> Result<Baseline> {
        let mut b = Baseline::default();
        let mut pending = vec![(source.to_path_buf(), PathBuf::new())];
        while let Some((abs, rel)) = pending.pop() {
            let rd = match fs::read_dir(&abs) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
                Err(e) => return Err(e).ctx("cannot list source directory", &abs),
            };
            for e in rd {
                let e = e.ctx("cannot list source directory", &abs)?;
                let child_rel = rel.join(e.file_name());
                let path = e.path();
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if excludes.is_excluded(&child_rel, meta.is_dir()) {
                    continue;
                }
                b.entries.insert(
                    child_rel.as_os_str().as_bytes().to_vec(),
                    EntryFacts::of(&path, &meta),
                );
                if meta.is_dir() {
                    pending.push((path, child_rel));
                }
            }
        }
        Ok(b)
    }

    /// The record of `rel`, if any.
    pub fn get(&self, rel: &Path) -> Option<&EntryFacts> {
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
                e.etype.letter(),
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
            let etype = text("type")?
                .chars()
                .next()
                .ok_or_else(|| bad(l, "empty type".into()))
                .and_then(|c| {
                    EntryType::from_letter(c).ok_or_else(|| bad(l, format!("unknown type `{c}`")))
                })?;
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
            let entry = EntryFacts {
                etype,
                size: num("size")?,
                mtime,
                mode,
                uid: num("uid")? as u32,
                gid: num("gid")? as u32,
                rdev: None,
                target: (etype == EntryType::Symlink).then(|| PathBuf::from(target)),
                // The baseline has no xattrs column: they are not compared against it.
                xattrs: None,
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
            let recorded = b.get(Path::new(p)).expect("recorded");
            let read = back.get(Path::new(p)).expect("read back");
            assert_eq!(
                read,
                &EntryFacts {
                    rdev: None,
                    ..recorded.clone()
                },
                "{p}"
            );
            let abs = src.join(p);
            let m = fs::symlink_metadata(&abs).expect("meta");
            assert!(unchanged(read, &abs, &m, true), "{p}");
        }
        fs::write(src.join("a\tb/f"), b"changed").expect("write");
        let m = fs::symlink_metadata(src.join("a\tb/f")).expect("meta");
        let read = back.get(Path::new("a\tb/f")).expect("entry");
        assert!(!unchanged(read, &src.join("a\tb/f"), &m, true));
    }
}
