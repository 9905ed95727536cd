//! Whether a path a tool is about to write to is a vault or inside one: what keeps a
//! restore's DEST out of the vault it reads (docs/cli.md `reverb-restore`), for every front
//! end (`reverb-restore`, `reverberator restore`, the web's restore form).
//!
//! Invariant: decided by device and inode, not by spelling. DEST's nearest existing
//! ancestor (DEST itself when it exists, its symlinks followed as a restore would follow
//! them) is opened, and the chain of its parents is climbed through `..` on descriptors up
//! to the root; DEST is inside the vault when one of them is the vault's root directory. So a
//! DEST named through a symlink into the vault, through a bind mount of the vault (or of a
//! directory above it), or relative to a working directory in it, is caught; a bind mount of
//! a directory *below* the vault's root is another mount whose `..` leads elsewhere, and is
//! not.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, fstat};

use crate::error::show;

/// How many parents are climbed at most (a loop guard: a real chain ends at the root).
const MAX_DEPTH: usize = 4096;

/// DEST is the vault, or inside it.
#[derive(Debug, thiserror::Error)]
pub enum InsideVault {
    /// (DEST, the vault as the caller named it, whether DEST is the vault's root itself)
    #[error(
        "cannot restore to {}: it is {}the vault {} (a restore never writes into a vault; restore somewhere else)",
        show(.0),
        if *.2 { "" } else { "inside " },
        show(.1)
    )]
    Inside(PathBuf, PathBuf, bool),
    /// (DEST, the vault): the vault is inside DEST, where `--overwrite` would write into it
    /// and `--delete` remove it (a DEST without either must be empty, and is not).
    #[error(
        "cannot restore to {}: the vault {} is inside it (--delete would remove it, --overwrite write into it); restore somewhere else",
        show(.0),
        show(.1)
    )]
    Contains(PathBuf, PathBuf),
    /// The check itself could not be made (the vault's root or DEST's ancestor unreadable).
    #[error("cannot tell whether {} is inside the vault {}: {}", show(.0), show(.1), .2)]
    Unknown(PathBuf, PathBuf, io::Error),
}

impl From<InsideVault> for crate::error::Error {
    fn from(e: InsideVault) -> Self {
        match e {
            InsideVault::Inside(..) | InsideVault::Contains(..) => {
                crate::error::Error::Usage(e.to_string())
            }
            InsideVault::Unknown(..) => crate::error::Error::Invalid(e.to_string()),
        }
    }
}

/// Refuses `dest` when it is the vault at `vault` or inside it (module doc), or when it is
/// an existing directory the vault is inside (climbing from the vault's root the same way);
/// a `vault` that does not exist refuses nothing.
pub fn refuse_inside(dest: &Path, vault: &Path) -> Result<(), InsideVault> {
    let unknown = |e: io::Error| InsideVault::Unknown(dest.to_path_buf(), vault.to_path_buf(), e);
    let root = match open_dir(vault) {
        // No vault there (an unplugged disk): nothing to write into.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(unknown)?,
    };
    let root_fd = root;
    let root = id(&root_fd).map_err(unknown)?;
    let (mut dir, is_dest) = nearest_existing(dest).map_err(unknown)?;
    if is_dest {
        let dest_id = id(&dir).map_err(unknown)?;
        if dest_id != root && climbs_to(&root_fd, dest_id).map_err(unknown)? {
            return Err(InsideVault::Contains(
                dest.to_path_buf(),
                vault.to_path_buf(),
            ));
        }
    }
    let mut first = true;
    for _ in 0..MAX_DEPTH {
        let here = id(&dir).map_err(unknown)?;
        if here == root {
            return Err(InsideVault::Inside(
                dest.to_path_buf(),
                vault.to_path_buf(),
                first && is_dest,
            ));
        }
        first = false;
        let up = nix::fcntl::openat(dir.as_fd(), "..", dir_flags(), Mode::empty())
            .map_err(|e| unknown(e.into()))?;
        if id(&up).map_err(unknown)? == here {
            return Ok(());
        }
        dir = up;
    }
    Ok(())
}

/// Does climbing `..` from the directory `from` (itself excluded) reach the directory
/// `target` (device and inode) before the root?
fn climbs_to(from: &OwnedFd, target: (u64, u64)) -> io::Result<bool> {
    let mut here = id(from)?;
    let mut dir = nix::fcntl::openat(from.as_fd(), "..", dir_flags(), Mode::empty())?;
    for _ in 0..MAX_DEPTH {
        let up = id(&dir)?;
        if up == here {
            return Ok(false);
        }
        if up == target {
            return Ok(true);
        }
        here = up;
        dir = nix::fcntl::openat(dir.as_fd(), "..", dir_flags(), Mode::empty())?;
    }
    Ok(false)
}

/// The directory nearest to `dest` that exists, opened (symlinks followed), and whether it
/// is `dest` itself. An existing non-directory counts by its directory.
fn nearest_existing(dest: &Path) -> io::Result<(OwnedFd, bool)> {
    let mut at = if dest.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dest.to_path_buf()
    };
    let mut is_dest = true;
    loop {
        match open_dir(&at) {
            Ok(fd) => return Ok((fd, is_dest)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
            Err(e) => return Err(e),
        }
        is_dest = false;
        // `a/..`: the directory it names, when `a` exists (climbing lexically past it would
        // name another); when `a` does not, neither does anything below it, and no restore
        // can create it.
        if at.file_name().is_none()
            && let Ok(real) = std::fs::canonicalize(&at)
        {
            at = real;
            continue;
        }
        if !at.pop() || at.as_os_str().is_empty() {
            at = PathBuf::from(".");
        }
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(path, dir_flags(), Mode::empty())?)
}

/// A directory's device and inode.
fn id(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let st = fstat(fd.as_fd())?;
    Ok((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_any_way_inside_is_inside() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vault = tmp.path().join("vault");
        std::fs::create_dir_all(vault.join("job/V1")).expect("mkdir");
        std::fs::create_dir(tmp.path().join("job")).expect("mkdir");
        std::fs::write(vault.join("job/index.tsv"), b"").expect("write");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(vault.join("job"), &link).expect("symlink");
        let inside = [
            vault.clone(),
            vault.join("new"),
            vault.join("job/V1/a/b"),
            vault.join("job/index.tsv"),
            vault.join("job/index.tsv/x"),
            tmp.path().join("job/../vault/x"),
            link.join("V1/new"),
            link.clone(),
        ];
        for dest in &inside {
            match refuse_inside(dest, &vault) {
                Err(InsideVault::Inside(..)) => {}
                other => panic!("{}: {other:?}", dest.display()),
            }
        }
        let msg = refuse_inside(&vault, &vault)
            .expect_err("vault")
            .to_string();
        assert!(msg.contains("it is the vault"), "{msg}");
        for dest in [tmp.path().join("out"), tmp.path().join("vault-2/x")] {
            if let Err(e) = refuse_inside(&dest, &vault) {
                panic!("{}: {e}", dest.display());
            }
        }
        // A directory the vault is inside: `--delete` would remove the vault.
        for dest in [tmp.path().to_path_buf(), PathBuf::from("/")] {
            match refuse_inside(&dest, &vault) {
                Err(InsideVault::Contains(..)) => {}
                other => panic!("{}: {other:?}", dest.display()),
            }
        }
    }
}
