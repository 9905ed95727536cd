//! The baseline of a `keep_complete = false` job (docs/configuration.md): the metadata of every entry of
//! the source when the job started, so that later versions hold only what changed since.
//!
//! Owns: `<job>/baseline.tsv` (columns `path type size mtime mode uid gid target xattrs`,
//! `type` the one-letter form of [`EntryType`], `xattrs` the list [`encode_xattrs`] writes),
//! written once, atomically, before the first (empty) version is published; read by every
//! build of such a job. A file written before the `xattrs` column existed still reads: its
//! records' xattrs are unknown and not compared.
//!
//! Invariant: an entry is "unchanged since the job started", and left out of versions,
//! exactly when [`compare`] finds it the same as its record, xattrs included when the record
//! has them (read from the source only when every other fact is equal); a directory only
//! needs the same type (its mtime moves with every child). The file has no device-number
//! column, so a record's `rdev` is unknown and not compared.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result, show};
use crate::format::entry::{Difference, EntryFacts, EntryType, Xattrs, compare, needs_xattrs};
use crate::format::exclude::Excludes;
use crate::format::tsv;
use crate::fsutil;

/// The file name in the job folder.
pub const FILE: &str = "baseline.tsv";

/// The baseline letter of an entry's type (`f`, `d`, `l`, `p`, `c`, `b`, `s`).
pub fn kind_of(meta: &Metadata) -> char {
    EntryType::of(meta.file_type()).letter()
}

/// Reads the xattrs of an entry that count (the caller's rule: which names this process
/// carries); `None` when they cannot be read.
pub type XattrsOf<'a> = &'a dyn Fn(&Path) -> Option<Xattrs>;

/// Is the entry now (its lstat `meta`) unchanged since its baseline `record`? Owners count
/// only when `privileged`; xattrs (read with `xattrs_of`) when the record has them.
pub fn unchanged(
    record: &EntryFacts,
    path: &Path,
    meta: &Metadata,
    privileged: bool,
    xattrs_of: XattrsOf<'_>,
) -> bool {
    let mut now = EntryFacts::of(path, meta);
    if record.etype != now.etype {
        return false;
    }
    if now.etype == EntryType::Dir {
        return true;
    }
    if record.xattrs.is_some() && needs_xattrs(record, &now, privileged) {
        now.xattrs = xattrs_of(path);
    }
    compare(record, &now, privileged) == Difference::Same
}

/// The `xattrs` field: empty when not recorded, `-` for none, else `name=value` pairs in
/// name order, both in lowercase hex, separated by `,` (no escaping needed, any byte kept).
pub fn encode_xattrs(xattrs: Option<&Xattrs>) -> String {
    let Some(xattrs) = xattrs else {
        return String::new();
    };
    if xattrs.is_empty() {
        return "-".into();
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let pairs: Vec<String> = xattrs
        .iter()
        .map(|(n, v)| format!("{}={}", hex(n), hex(v)))
        .collect();
    pairs.join(",")
}

/// The inverse of [`encode_xattrs`]; `Err` names what is wrong.
pub fn decode_xattrs(field: &str) -> std::result::Result<Option<Xattrs>, String> {
    match field {
        "" => return Ok(None),
        "-" => return Ok(Some(Xattrs::new())),
        _ => {}
    }
    let unhex = |h: &str| -> std::result::Result<Vec<u8>, String> {
        if !h.len().is_multiple_of(2) {
            return Err(format!("xattrs: odd hex `{h}`"));
        }
        (0..h.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(h.get(i..i + 2).unwrap_or("?"), 16)
                    .map_err(|_| format!("xattrs: bad hex `{h}`"))
            })
            .collect()
    };
    let mut out = Xattrs::new();
    for pair in field.split(',') {
        let (n, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("xattrs: `{pair}` is not name=value"))?;
        out.insert(unhex(n)?, unhex(v)?);
    }
    Ok(Some(out))
}

/// The whole baseline, keyed by relative path bytes.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    entries: HashMap<Vec<u8>, EntryFacts>,
}

impl Baseline {
    /// Records the source tree (not following links; excluded paths left out; unreadable
    /// directories left unlisted; with `one_device`, a directory on another device is
    /// recorded but not listed: `one_file_system`), each entry's xattrs read with
    /// `xattrs_of`. Iterative: any depth fits the stack.
    pub fn record(
        source: &Path,
        excludes: &Excludes,
        one_device: Option<u64>,
        xattrs_of: XattrsOf<'_>,
    ) -> Result<Baseline> {
        use std::os::unix::fs::MetadataExt;
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
                let mut facts = EntryFacts::of(&path, &meta);
                // A directory is never compared by its attributes ([`unchanged`]).
                if !meta.is_dir() {
                    facts.xattrs = xattrs_of(&path);
                }
                b.entries
                    .insert(child_rel.as_os_str().as_bytes().to_vec(), facts);
                if meta.is_dir() && one_device.is_none_or(|dev| dev == meta.dev()) {
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
        let mut out = String::from("path\ttype\tsize\tmtime\tmode\tuid\tgid\ttarget\txattrs\n");
        for k in keys {
            let e = &self.entries[k];
            out.push_str(&format!(
                "{}\t{}\t{}\t{}.{:09}\t{:o}\t{}\t{}\t{}\t{}\n",
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
                    .unwrap_or_default(),
                encode_xattrs(e.xattrs.as_ref())
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
            // An owner id past u32 is damage, never truncated to another owner.
            let id = |c: &str| -> Result<u32> {
                let n = num(c)?;
                u32::try_from(n)
                    .map_err(|_| bad(l, format!("{c} {n} is out of range (at most {})", u32::MAX)))
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
                uid: id("uid")?,
                gid: id("gid")?,
                rdev: None,
                target: (etype == EntryType::Symlink).then(|| PathBuf::from(target)),
                // A file from before the column: xattrs unknown, not compared.
                xattrs: match row.raw("xattrs") {
                    Some(field) => decode_xattrs(field).map_err(|e| bad(l, e))?,
                    None => None,
                },
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
        let b = Baseline::record(&src, &Excludes::default(), None, &no_xattrs).expect("record");
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
            assert!(unchanged(read, &abs, &m, true, &no_xattrs), "{p}");
        }
        fs::write(src.join("a\tb/f"), b"changed").expect("write");
        let m = fs::symlink_metadata(src.join("a\tb/f")).expect("meta");
        let read = back.get(Path::new("a\tb/f")).expect("entry");
        assert!(!unchanged(read, &src.join("a\tb/f"), &m, true, &no_xattrs));
    }

    #[test]
    fn an_owner_id_past_u32_is_damage_not_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = "path\ttype\tsize\tmtime\tmode\tuid\tgid\ttarget\txattrs\n";
        let ok = "f\tf\t1\t0.000000000\t644\t4294967295\t0\t\t-\n";
        fs::write(dir.path().join(FILE), format!("{header}{ok}")).expect("write");
        let b = Baseline::load(dir.path()).expect("u32::MAX is a uid");
        assert_eq!(b.get(Path::new("f")).expect("f").uid, u32::MAX);
        for (uid, gid, col) in [("4294967296", "0", "uid"), ("0", "4294967297", "gid")] {
            let row = format!("g\tf\t1\t0.000000000\t644\t{uid}\t{gid}\t\t-\n");
            fs::write(dir.path().join(FILE), format!("{header}{ok}{row}")).expect("write");
            let e = Baseline::load(dir.path()).expect_err("out of range");
            let msg = e.to_string();
            assert!(matches!(e, Error::Damaged(_)), "{msg}");
            assert!(
                msg.contains("baseline.tsv line 3: ") && msg.contains(&format!("{col} 42949672")),
                "{msg}"
            );
            assert!(msg.contains("out of range"), "{msg}");
        }
    }

    fn no_xattrs(_: &Path) -> Option<Xattrs> {
        Some(Xattrs::new())
    }

    #[test]
    fn xattrs_count_when_recorded_and_old_files_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(&src).expect("mkdir");
        fs::write(src.join("f"), b"x").expect("write");
        let one = |_: &Path| Some(Xattrs::from([(b"user.a".to_vec(), b"1\0\t,=".to_vec())]));
        let two = |_: &Path| Some(Xattrs::from([(b"user.a".to_vec(), b"2".to_vec())]));
        Baseline::record(&src, &Excludes::default(), None, &one)
            .expect("record")
            .save(dir.path())
            .expect("save");
        let back = Baseline::load(dir.path()).expect("load");
        let rec = back.get(Path::new("f")).expect("f");
        assert_eq!(rec.xattrs, one(Path::new("f")), "round trip of any bytes");
        let m = fs::symlink_metadata(src.join("f")).expect("meta");
        assert!(unchanged(rec, &src.join("f"), &m, false, &one));
        assert!(
            !unchanged(rec, &src.join("f"), &m, false, &two),
            "xattr-only change"
        );
        // A baseline written before the xattrs column: read, xattrs not compared.
        let text = fs::read_to_string(dir.path().join(FILE)).expect("read");
        let old: Vec<String> = text
            .lines()
            .map(|l| l.rsplit_once('\t').expect("last column").0.to_owned())
            .collect();
        fs::write(dir.path().join(FILE), old.join("\n") + "\n").expect("write");
        let back = Baseline::load(dir.path()).expect("old file");
        let rec = back.get(Path::new("f")).expect("f");
        assert_eq!(rec.xattrs, None);
        assert!(unchanged(rec, &src.join("f"), &m, false, &two));
        for bad in ["zz=00", "00", "0=00"] {
            assert!(decode_xattrs(bad).is_err(), "{bad}");
        }
        assert_eq!(decode_xattrs("-"), Ok(Some(Xattrs::new())));
        assert_eq!(encode_xattrs(Some(&Xattrs::new())), "-");
    }
}
