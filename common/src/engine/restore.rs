//! Restoring (docs/cli.md `reverb-restore`): an exact copy of a version, or of a path in it, out
//! of the vault, resolving vault links and keeping source links as links.
//!
//! Invariants: the destination receives exactly the tree the version promises (content,
//! types, modes, times, owners when root, xattrs/ACLs, holes, hard links among the files it
//! copies); a non-empty destination is refused unless [`Existing::Overwrite`] (each
//! restored entry replaces what is at its place, nothing else in DEST is touched) or
//! [`Existing::Delete`] (DEST is made exactly the version: what it does not hold is removed,
//! before each directory's times are set); nothing in the vault is ever written (a DEST that
//! is the vault or inside it is refused before anything is created, [`refuse_inside`]), and
//! nothing outside DEST: every entry is reached beneath the descriptor of DEST's nearest existing
//! ancestor ([`Tree`]), never through a symlink, so a directory of DEST another user swaps
//! for a link while the restore runs makes it fail, naming the path (docs/security.md). The version
//! is read with the shared [`Walk`] (no recursion, so any depth restores). Verified (the default): every regular file's data is hashed as it is copied
//! and compared with its record (docs/format.md#checksums: the holder version's checksums
//! file); a mismatch, or a file without a record in a holder that has a checksums file,
//! stops the restore with an error naming the file in the vault. A holder without a
//! checksums file (a vault made before checksums, or `checksums = false`) is not checked.
//! A regular file appears under its name only whole and verified: it is copied to a
//! temporary name beside it (`.reverb-restore.PID.N`) and renamed into place after the
//! check; a file that fails (or whose copy fails) is removed, so DEST never holds bad data
//! under a real name with its original times.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::beneath::{At, Here, Tree};
use crate::engine::copy::{self, CopyError};
use crate::error::{Error, IoContext, Result, show};
use crate::format::checksums::{Record, Recorder};
use crate::format::index::IndexRow;
use crate::vault::inside::refuse_inside;
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
    // Before anything is created: the vault is never a destination.
    refuse_inside(dest, dir.vault_root())?;
    let lookalikes = Lookalikes::load(&dir.path)?;
    let rel = inside_source(rel)?;
    let Some(phys) = tree::resolve(&dir.path, version, &rel, &lookalikes)? else {
        return Err(Error::Usage(format!(
            "{} does not exist in {version}",
            show(&rel)
        )));
    };
    let root_type = fs::symlink_metadata(tree::in_version(&dir.path, &phys, &rel))
        .ok()
        .map(|m| m.file_type());
    let root_is_dir = root_type.is_some_and(|t| t.is_dir());
    let root_is_file = root_type.is_some_and(|t| t.is_file());
    let (place, top) = dest_place(dest)?;
    let mut restorer = Restorer {
        from: rel.clone(),
        dest: dest.to_path_buf(),
        place,
        top,
        hardlinks: HashMap::new(),
        done: Restored::default(),
        job: dir.path.clone(),
        checksums: verify.then(Recorder::default),
        existing,
        restored: HashSet::new(),
    };
    restorer.make_room(root_is_dir, root_is_file)?;
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

/// Where DEST is: its nearest existing ancestor, opened now (the path as the caller names
/// it, its symlinks followed this once), and DEST relative to it. The missing ancestors are
/// created beneath it, each a real directory (never through a symlink), so that from here
/// on every write is beneath that one descriptor (docs/security.md).
fn dest_place(dest: &Path) -> Result<(Tree, PathBuf)> {
    let named = match dest.file_name() {
        Some(_) => dest.to_path_buf(),
        // `.`, `..`, `a/..`: the directory they name now.
        None => fs::canonicalize(dest).ctx("cannot resolve", dest)?,
    };
    let (Some(parent), Some(name)) = (named.parent(), named.file_name()) else {
        return Err(Error::Usage(format!(
            "cannot restore to {} itself: name a directory to restore into",
            show(dest)
        )));
    };
    let mut existing = if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_path_buf()
    };
    let mut missing = Vec::new();
    loop {
        match fs::metadata(&existing) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(Error::Usage(format!(
                    "cannot restore to {}: {} is not a directory",
                    show(dest),
                    show(&existing)
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(below) = existing.file_name() else {
                    return Err(e).ctx("cannot create", &existing);
                };
                missing.push(below.to_owned());
                if !existing.pop() || existing.as_os_str().is_empty() {
                    existing = PathBuf::from(".");
                }
            }
            Err(e) => return Err(e).ctx("cannot inspect", &existing),
        }
    }
    let place = Tree::open(&existing).ctx("cannot open", &existing)?;
    let mut top = PathBuf::new();
    for below in missing.into_iter().rev() {
        top.push(below);
        let shown = existing.join(&top);
        let at = place.at(&top).ctx("cannot create", &shown)?;
        match fs::create_dir(&*at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx("cannot create", &shown),
        }
    }
    top.push(name);
    Ok((place, top))
}

/// Copies what the walk of the version meets to the same place under DEST, every entry
/// reached beneath DEST's ancestor's descriptor ([`Tree`]): a directory of DEST swapped for
/// a symlink is never followed, and the restore fails naming it.
struct Restorer {
    /// The path restored (the walk's start).
    from: PathBuf,
    /// DEST as the caller named it (messages).
    dest: PathBuf,
    /// DEST's nearest existing ancestor, held open.
    place: Tree,
    /// DEST relative to `place`.
    top: PathBuf,
    /// The first copy of each hard-linked inode met so far, relative to DEST.
    hardlinks: HashMap<(u64, u64), PathBuf>,
    done: Restored,
    /// The job folder.
    job: PathBuf,
    /// Verifying: the records looked up so far.
    checksums: Option<Recorder>,
    /// What to do about entries already in DEST.
    existing: Existing,
    /// Every entry written, relative to DEST ([`Existing::Delete`] removes the others).
    restored: HashSet<PathBuf>,
}

impl Restorer {
    /// Where the entry at `rel` of the version goes, relative to DEST.
    fn below(&self, rel: &Path) -> PathBuf {
        match rel.strip_prefix(&self.from) {
            Ok(below) => below.to_path_buf(),
            Err(_) => PathBuf::new(),
        }
    }

    /// `below` as people know it.
    fn shown(&self, below: &Path) -> PathBuf {
        if below.as_os_str().is_empty() {
            self.dest.clone()
        } else {
            self.dest.join(below)
        }
    }

    /// The entry `below` of DEST, reached beneath the held descriptors.
    fn at(&self, below: &Path) -> Result<At> {
        self.place
            .at(&self.top.join(below))
            .ctx("cannot restore", &self.shown(below))
    }

    /// The directory `below` of DEST itself.
    fn dir(&self, below: &Path) -> Result<Here> {
        self.place
            .dir(&self.top.join(below))
            .ctx("cannot restore", &self.shown(below))
    }

    /// The destination is created by the restore itself (with the version's attributes):
    /// an empty directory is replaced; anything else needs [`Existing::Overwrite`] or
    /// [`Existing::Delete`], which keep a directory that receives a directory and replace
    /// anything else.
    fn make_room(&self, root_is_dir: bool, root_is_file: bool) -> Result<()> {
        let dest = &self.dest;
        let at = self.at(Path::new(""))?;
        let Ok(m) = fs::symlink_metadata(&*at) else {
            return Ok(());
        };
        let empty_dir = m.is_dir()
            && fs::read_dir(at.here().ctx("cannot list", dest)?.listing())
                .ctx("cannot list", dest)?
                .next()
                .is_none();
        if empty_dir {
            fs::remove_dir(&*at).ctx("cannot replace", dest)?;
            self.place.forget(&self.top);
        } else if self.existing == Existing::Refuse {
            return Err(Error::DestinationOccupied {
                dest: dest.clone(),
                not_empty: m.is_dir(),
            });
        } else if root_is_file && !m.is_dir() {
            // A file replaces it by the rename that puts it in place once verified: a
            // restore that fails leaves it as it was.
        } else if !(m.is_dir() && root_is_dir) {
            crate::fsutil::remove_tree_as(&at, dest)?;
            self.place.forget(&self.top);
        }
        Ok(())
    }

    fn copy_file(
        &mut self,
        node: &Node,
        meta: &fs::Metadata,
        below: &Path,
        dst: &At,
    ) -> Result<()> {
        let shown = self.shown(below);
        if meta.nlink() > 1 {
            if let Some(first) = self.hardlinks.get(&(meta.dev(), meta.ino())) {
                let first = self.at(first)?;
                // The first name is in place and verified: what stands here goes now.
                if fs::symlink_metadata(&**dst).is_ok() {
                    fs::remove_file(&**dst).ctx("cannot replace", &shown)?;
                }
                return fs::hard_link(&*first, &**dst).ctx("cannot create hard link", &shown);
            }
            self.hardlinks
                .insert((meta.dev(), meta.ino()), below.to_path_buf());
        }
        // Under a temporary name beside it until it is whole and verified: a file that
        // fails is never left under its name, looking genuine.
        let (tmp, copied) = self.copy_to_temp(node, below)?;
        let done = copied
            .and_then(|c| self.check(node, c.record, below))
            .and_then(|()| tmp.rename_to(dst).ctx("cannot restore", &shown));
        if done.is_err() {
            let _ = fs::remove_file(&*tmp);
        }
        done
    }

    /// Copies `node`'s data and attributes to a new temporary name in the directory of
    /// `below` (`.reverb-restore.PID.N`, the first N free): the entry and the result of the
    /// copy (an error with the entry still to remove).
    fn copy_to_temp(&self, node: &Node, below: &Path) -> Result<(At, Result<copy::FileCopy>)> {
        let shown = self.shown(below);
        let dir = match self.top.join(below).parent() {
            Some(p) => p.to_path_buf(),
            None => PathBuf::new(),
        };
        for n in 0u32.. {
            let name = format!(".reverb-restore.{}.{n}", std::process::id());
            let tmp = self
                .place
                .at(&dir.join(name))
                .ctx("cannot restore", &shown)?;
            match copy::copy_file_hashed(&node.abs, &tmp, self.checksums.is_some(), dest_keeps()) {
                Err(CopyError::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                copied => return Ok((tmp, copied.map_err(|e| err(e, &shown)))),
            }
        }
        Err(Error::Invalid(format!(
            "cannot restore {}: no free temporary name beside it",
            show(&shown)
        )))
    }

    /// Compares what was restored from `node` (`got`) at `below` with its record, if
    /// verifying.
    fn check(&mut self, node: &Node, got: Option<Record>, below: &Path) -> Result<()> {
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
        let dest = show(&self.dest);
        let next = if below.as_os_str().is_empty() {
            format!("{dest} was not made; --no-verify takes the file as it is")
        } else {
            format!(
                "it was not restored, and the restore stopped there: {dest} holds what was \
                 restored before it; restore again into it with --overwrite, or with \
                 --no-verify to take the file as it is"
            )
        };
        Err(Error::Damaged(format!(
            "{} in the vault fails verification: {why} ({next})",
            shown()
        )))
    }

    /// A FIFO or device node; `false` when it was skipped (device nodes need root).
    fn copy_special(
        &mut self,
        src: &Path,
        meta: &fs::Metadata,
        below: &Path,
        dst: &At,
    ) -> Result<bool> {
        match copy::copy_special(src, dst, meta, dest_keeps()) {
            Ok(()) => Ok(true),
            Err(CopyError::Io(e)) if e.raw_os_error() == Some(libc::EPERM) => {
                self.done.skipped_devices.push(self.shown(below));
                Ok(false)
            }
            Err(e) => Err(err(e, &self.shown(below))),
        }
    }
}

impl Restorer {
    /// With a non-empty DEST: makes room for an entry of type `ft` at `below` (`dst`); true
    /// when a directory already there is kept (it receives a directory).
    fn clear(&mut self, below: &Path, dst: &At, ft: fs::FileType) -> Result<bool> {
        if self.existing == Existing::Refuse {
            return Ok(false);
        }
        if self.existing == Existing::Delete {
            self.restored.insert(below.to_path_buf());
        }
        match fs::symlink_metadata(&**dst) {
            Ok(m) if m.is_dir() && ft.is_dir() => Ok(true),
            // A file replaces a non-directory by the rename that puts it in place once
            // verified ([`Restorer::copy_file`]): one that fails leaves it as it was.
            Ok(m) if ft.is_file() && !m.is_dir() => Ok(false),
            Ok(_) => {
                crate::fsutil::remove_tree_as(dst, &self.shown(below))?;
                self.place.forget(&self.top.join(below));
                Ok(false)
            }
            Err(_) => Ok(false),
        }
    }

    /// [`Existing::Delete`]: removes what directory `below` holds that the version does
    /// not, counting every entry removed.
    fn prune(&mut self, below: &Path) -> Result<()> {
        if self.existing != Existing::Delete {
            return Ok(());
        }
        let shown = self.shown(below);
        let here = self.dir(below)?;
        let mut names: Vec<_> = Vec::new();
        for e in fs::read_dir(here.listing()).ctx("cannot list", &shown)? {
            names.push(e.ctx("cannot list", &shown)?.file_name());
        }
        for name in names {
            let child = below.join(&name);
            if !self.restored.contains(&child) {
                self.done.removed += self.count_entries(&child);
                let at = self.at(&child)?;
                crate::fsutil::remove_tree_as(&at, &self.shown(&child))?;
                self.place.forget(&self.top.join(&child));
            }
        }
        Ok(())
    }

    /// The entries of the tree at `below` (itself included), not following links.
    fn count_entries(&self, below: &Path) -> u64 {
        let (mut n, mut todo) = (0, vec![below.to_path_buf()]);
        while let Some(p) = todo.pop() {
            n += 1;
            let is_dir = self
                .at(&p)
                .is_ok_and(|at| fs::symlink_metadata(&*at).is_ok_and(|m| m.is_dir()));
            if is_dir
                && let Ok(here) = self.dir(&p)
                && let Ok(rd) = fs::read_dir(here.listing())
            {
                todo.extend(rd.flatten().map(|e| p.join(e.file_name())));
            }
        }
        n
    }
}

impl Visitor for Restorer {
    fn entry(&mut self, node: &mut Node) -> Result<()> {
        let below = self.below(&node.rel);
        let dst = self.at(&below)?;
        let meta = node.metadata()?.clone();
        let ft = meta.file_type();
        let kept_dir = self.clear(&below, &dst, ft)?;
        if ft.is_symlink() {
            copy::copy_symlink(&node.abs, &dst, dest_keeps())
                .map_err(|e| err(e, &self.shown(&below)))?;
        } else if ft.is_dir() {
            if !kept_dir {
                copy::make_dir(&dst).ctx("cannot create", &self.shown(&below))?;
            }
            // Counted now, its attributes set in dir_done once its entries are in.
        } else if ft.is_file() {
            self.copy_file(node, &meta, &below, &dst)?;
        } else if !self.copy_special(&node.abs, &meta, &below, &dst)? {
            return Ok(());
        }
        self.done.entries += 1;
        Ok(())
    }

    fn dir_done(&mut self, node: &mut Node) -> Result<()> {
        let below = self.below(&node.rel);
        self.prune(&below)?;
        let dst = self.at(&below)?;
        let meta = node.metadata()?.clone();
        copy::finish_dir(&node.abs, &dst, &meta, dest_keeps())
            .ctx("cannot set attributes of", &self.shown(&below))
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
