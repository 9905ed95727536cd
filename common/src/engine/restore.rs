//! Restoring (docs/cli.md `reverb-restore`): an exact copy of a version, or of a path in it, out
//! of the vault, resolving vault links and keeping source links as links.
//!
//! Invariants: the destination receives exactly the tree the version promises (content,
//! types, modes, times, owners when root, xattrs/ACLs, holes, hard links among the files it
//! copies); a non-empty destination is refused unless [`Existing::Overwrite`] (each
//! restored entry replaces what is at its place, nothing else in DEST is touched) or
//! [`Existing::Delete`] (DEST is made exactly the version: what it does not hold is removed,
//! before each directory's times are set); nothing in the vault is ever written. The version
//! is read with the shared [`Walk`] (no recursion, so any depth restores). Verified (the default): every regular file's data is hashed as it is copied
//! and compared with its record (docs/format.md#checksums: the holder version's checksums
//! file); a mismatch, or a file without a record in a holder that has a checksums file,
//! stops the restore with an error naming the file in the vault. A holder without a
//! checksums file (a vault made before checksums, or `checksums = false`) is not checked.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::engine::copy::{self, CopyError};
use crate::error::{Error, IoContext, Result, show};
use crate::format::checksums::{Record, Recorder};
use crate::format::index::IndexRow;
use crate::vault::layout::JobDir;
use crate::vault::tree::{self, Links, Lookalikes, Node, Visitor, Walk};

/// Picks a version by number, directory name or `latest`.
pub fn pick<'r>(rows: &'r [IndexRow], which: &str) -> Result<&'r IndexRow> {
    let found = if which == "latest" || which == "current" {
        rows.last()
    } else if let Ok(n) = which.trim_start_matches('V').parse::<u64>() {
        rows.iter().find(|r| r.version == n)
    } else {
        rows.iter().find(|r| r.dir == which)
    };
    found.ok_or_else(|| {
        let have: Vec<String> = rows.iter().map(|r| r.version.to_string()).collect();
        Error::Usage(format!(
            "no version `{which}` (versions: {})",
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        ))
    })
}

/// What a restore copied.
#[derive(Debug, Default, Clone)]
pub struct Restored {
    /// Entries written.
    pub entries: u64,
    /// Device nodes not recreated (they need privilege), as their paths in DEST; the caller
    /// says so.
    pub skipped_devices: Vec<PathBuf>,
    /// Entries removed from DEST because the version does not hold them ([`Existing::Delete`]).
    pub removed: u64,
}

/// What a restore does with a destination that is not empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse it (a usage error).
    Refuse,
    /// Restored entries replace what is at their place; everything else is left alone.
    Overwrite,
    /// DEST becomes exactly the version: entries it does not hold are removed.
    Delete,
}

/// Restores `rel` (empty = the whole version) of version dir `version` to `dest`, every
/// file checked against its checksum.
pub fn restore(
    dir: &JobDir,
    version: &str,
    rel: &Path,
    dest: &Path,
    overwrite: bool,
) -> Result<Restored> {
    let existing = if overwrite {
        Existing::Overwrite
    } else {
        Existing::Refuse
    };
    restore_into(dir, version, rel, dest, existing, true)
}

/// [`restore`], with what to do about a non-empty `dest` spelled out, checking checksums
/// only when `verify` (`--no-verify` clears it).
pub fn restore_into(
    dir: &JobDir,
    version: &str,
    rel: &Path,
    dest: &Path,
    existing: Existing,
    verify: bool,
) -> Result<Restored> {
    let lookalikes = Lookalikes::load(&dir.path)?;
    let rel = inside_source(rel)?;
    let Some(phys) = tree::resolve(&dir.path, version, &rel, &lookalikes)? else {
        return Err(Error::Usage(format!(
            "{} does not exist in {version}",
            show(&rel)
        )));
    };
    let root_is_dir =
        fs::symlink_metadata(tree::in_version(&dir.path, &phys, &rel)).is_ok_and(|m| m.is_dir());
    make_room(dest, existing, root_is_dir)?;
    let mut restorer = Restorer {
        from: rel.clone(),
        dest: dest.to_path_buf(),
        hardlinks: HashMap::new(),
        done: Restored::default(),
        job: dir.path.clone(),
        checksums: verify.then(Recorder::default),
        existing,
        restored: HashSet::new(),
    };
    Walk::new(&dir.path, &lookalikes, Links::Follow)
        .sorted()
        .run(&phys, &rel, &mut restorer)?;
    Ok(restorer.done)
}

/// `--path` as a plain relative path (`.` components dropped); `..` or an absolute path is
/// a usage error.
fn inside_source(rel: &Path) -> Result<PathBuf> {
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(Error::Usage(format!(
            "--path {} must be relative to the source, without `..`",
            show(rel)
        )));
    }
    Ok(rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect())
}

/// The destination is created by the restore itself (with the version's attributes): an
/// empty directory is replaced; anything else needs [`Existing::Overwrite`] or
/// [`Existing::Delete`], which keep a directory that receives a directory and replace
/// anything else. Its parent is created.
fn make_room(dest: &Path, existing: Existing, root_is_dir: bool) -> Result<()> {
    if let Ok(m) = fs::symlink_metadata(dest) {
        let empty_dir = m.is_dir()
            && fs::read_dir(dest)
                .ctx("cannot list", dest)?
                .next()
                .is_none();
        if empty_dir {
            fs::remove_dir(dest).ctx("cannot replace", dest)?;
        } else if existing == Existing::Refuse {
            let what = if m.is_dir() { "is not empty" } else { "exists" };
            return Err(Error::Usage(format!(
                "destination {} {what} (--overwrite replaces what the restore writes, --delete also removes what the version does not hold)",
                show(dest)
            )));
        } else if !(m.is_dir() && root_is_dir) {
            crate::fsutil::remove_tree(dest)?;
        }
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).ctx("cannot create", parent)?;
    }
    Ok(())
}

/// Copies what the walk of the version meets to the same place under `dest`.
struct Restorer {
    /// The path restored (the walk's start).
    from: PathBuf,
    dest: PathBuf,
    /// The first copy of each hard-linked inode met so far.
    hardlinks: HashMap<(u64, u64), PathBuf>,
    done: Restored,
    /// The job folder.
    job: PathBuf,
    /// Verifying: the records looked up so far.
    checksums: Option<Recorder>,
    /// What to do about entries already in DEST.
    existing: Existing,
    /// Every DEST path written ([`Existing::Delete`] removes the others).
    restored: HashSet<PathBuf>,
}

impl Restorer {
    /// Where the entry at `rel` of the version goes.
    fn dst(&self, rel: &Path) -> PathBuf {
        match rel.strip_prefix(&self.from) {
            Ok(below) if !below.as_os_str().is_empty() => self.dest.join(below),
            _ => self.dest.clone(),
        }
    }

    fn copy_file(&mut self, node: &Node, meta: &fs::Metadata, dst: &Path) -> Result<()> {
        let src = &node.abs;
        if meta.nlink() > 1 {
            if let Some(first) = self.hardlinks.get(&(meta.dev(), meta.ino())) {
                return fs::hard_link(first, dst).ctx("cannot create hard link", dst);
            }
            self.hardlinks
                .insert((meta.dev(), meta.ino()), dst.to_path_buf());
        }
        let c = copy::copy_file_hashed(src, dst, self.checksums.is_some(), dest_keeps())
            .map_err(|e| err(e, dst))?;
        self.check(node, c.record)
    }

    /// Compares what was restored from `node` (`got`) with its record, if verifying.
    fn check(&mut self, node: &Node, got: Option<Record>) -> Result<()> {
        let (Some(c), Some(got)) = (&mut self.checksums, got) else {
            return Ok(());
        };
        let want = c.lookup(&self.job, &node.phys, &node.rel)?;
        let shown = || show(&Path::new(&node.phys).join(&node.rel));
        let why = match want {
            Some(w) if w == got => return Ok(()),
            Some(w) if w.size != got.size => {
                format!("size {} but its checksum record says {}", got.size, w.size)
            }
            Some(w) => format!(
                "blake3 {} but its checksum record says {}",
                got.hex(),
                w.hex()
            ),
            None if !c.has_file(&self.job, &node.phys)? => return Ok(()),
            None => "it has no checksum record".to_owned(),
        };
        Err(Error::Damaged(format!(
            "{} in the vault fails verification: {why} (restore with --no-verify to take it as it is)",
            shown()
        )))
    }

    /// A FIFO or device node; `false` when it was skipped (device nodes need root).
    fn copy_special(&mut self, src: &Path, meta: &fs::Metadata, dst: &Path) -> Result<bool> {
        match copy::copy_special(src, dst, meta, dest_keeps()) {
            Ok(()) => Ok(true),
            Err(CopyError::Io(e)) if e.raw_os_error() == Some(libc::EPERM) => {
                self.done.skipped_devices.push(dst.to_path_buf());
                Ok(false)
            }
            Err(e) => Err(err(e, dst)),
        }
    }
}

impl Restorer {
    /// With a non-empty DEST: makes room for an entry of type `ft` at `dst`; true when a
    /// directory already there is kept (it receives a directory).
    fn clear(&mut self, dst: &Path, ft: fs::FileType) -> Result<bool> {
        if self.existing == Existing::Refuse {
            return Ok(false);
        }
        if self.existing == Existing::Delete {
            self.restored.insert(dst.to_path_buf());
        }
        match fs::symlink_metadata(dst) {
            Ok(m) if m.is_dir() && ft.is_dir() => Ok(true),
            Ok(_) => crate::fsutil::remove_tree(dst).map(|()| false),
            Err(_) => Ok(false),
        }
    }

    /// [`Existing::Delete`]: removes what directory `dst` holds that the version does not,
    /// counting every entry removed.
    fn prune(&mut self, dst: &Path) -> Result<()> {
        if self.existing != Existing::Delete {
            return Ok(());
        }
        for e in fs::read_dir(dst).ctx("cannot list", dst)? {
            let path = e.ctx("cannot list", dst)?.path();
            if !self.restored.contains(&path) {
                self.done.removed += count_entries(&path);
                crate::fsutil::remove_tree(&path)?;
            }
        }
        Ok(())
    }
}

/// The entries of the tree at `path` (itself included), not following links.
fn count_entries(path: &Path) -> u64 {
    let (mut n, mut todo) = (0, vec![path.to_path_buf()]);
    while let Some(p) = todo.pop() {
        n += 1;
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
            && let Ok(rd) = fs::read_dir(&p)
        {
            todo.extend(rd.flatten().map(|e| e.path()));
        }
    }
    n
}

impl Visitor for Restorer {
    fn entry(&mut self, node: &mut Node) -> Result<()> {
        let dst = self.dst(&node.rel);
        let meta = node.metadata()?.clone();
        let ft = meta.file_type();
        let kept_dir = self.clear(&dst, ft)?;
        if ft.is_symlink() {
            copy::copy_symlink(&node.abs, &dst, dest_keeps()).map_err(|e| err(e, &dst))?;
        } else if ft.is_dir() {
            if !kept_dir {
                copy::make_dir(&dst).ctx("cannot create", &dst)?;
            }
            // Counted now, its attributes set in dir_done once its entries are in.
        } else if ft.is_file() {
            self.copy_file(node, &meta, &dst)?;
        } else if !self.copy_special(&node.abs, &meta, &dst)? {
            return Ok(());
        }
        self.done.entries += 1;
        Ok(())
    }

    fn dir_done(&mut self, node: &mut Node) -> Result<()> {
        let dst = self.dst(&node.rel);
        self.prune(&dst)?;
        let meta = node.metadata()?.clone();
        copy::finish_dir(&node.abs, &dst, &meta, dest_keeps()).ctx("cannot set attributes of", &dst)
    }
}

fn err(e: CopyError, path: &Path) -> Error {
    match e {
        CopyError::Io(source) => Error::Io {
            what: "cannot restore",
            path: path.to_path_buf(),
            source,
        },
        other => Error::Invalid(format!("cannot restore {}: {other}", show(path))),
    }
}

/// What a restore sets on DEST: everything the vault kept, owners when root (DEST is a
/// place of the user's choosing, not the vault, so its filesystem is not probed).
fn dest_keeps() -> crate::format::entry::Fidelity {
    crate::format::entry::Fidelity::exact(copy::privileged())
}
