//! Reaching entries beneath a directory descriptor, never through a symlink
//! (docs/security.md): what keeps a restore's writes inside DEST, a build's writes inside
//! its version and a build's reads inside the source while another user renames things in
//! them.
//!
//! Owns [`open_beneath`]: one `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or,
//! where the kernel has no `openat2` (`ENOSYS`: before Linux 5.6, or a seccomp filter that
//! hides it), the same walk one component at a time with `O_NOFOLLOW`; [`Tree`], a
//! directory held open together with the chain of directories last resolved below it, so a
//! depth-first walk opens each directory once instead of resolving every entry from the
//! root; [`At`], one entry as its directory's descriptor and its name; and [`Here`], a
//! directory's own descriptor. The path form of the last two (`/proc/self/fd/N/NAME`,
//! `/proc/self/fd/N/.`) lets the calls that take only a path (`lstat`, the `l*xattr`
//! family, `mknod`, `symlink`, `link`, `read_dir`) act relative to the descriptor: the
//! kernel jumps to the very directory the descriptor holds, then looks up one name.
//!
//! Invariants: a relative path given here is plain (`..`, a root or a prefix are refused,
//! `.` is skipped); every directory on the way is a real directory beneath the tree's root
//! when it is opened (a symlink met on the way is [`io::ErrorKind::NotADirectory`], never
//! followed), and once opened a directory is what the tree acts in, however it is renamed
//! afterwards; the last component is never followed either (every caller uses `O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW` or an `l*` call on it). A directory the tool itself removes or
//! replaces is dropped from the held chain ([`Tree::forget`]). An [`At`] or [`Here`] keeps
//! its descriptor open while it lives, so its path never names another directory. Without
//! `/proc` no [`Tree`] starts: the tool refuses, naming it, rather than fall back to paths
//! another user could redirect.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// How many directories below its root a [`Tree`] keeps open at most; deeper ones are
/// resolved from the deepest held one at each use (one `openat2`), so any depth fits in the
/// descriptor limit.
const HELD: usize = 32;

/// How many times an `openat2` that says `EAGAIN` (a rename raced a lookup the kernel could
/// not prove safe) is tried again.
const EAGAIN_RETRIES: u32 = 8;

/// Set once `openat2` said `ENOSYS`: every later open walks component by component.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `rel` beneath the directory `dir`: no component may be a symlink (the last
/// included: `flags` always gets `O_NOFOLLOW` and `O_CLOEXEC`) nor leave `dir`. `mode` is
/// used only with `O_CREAT`. An empty `rel` opens `dir` itself.
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let names = plain(rel)?;
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let joined: PathBuf = if names.is_empty() {
            PathBuf::from(".")
        } else {
            names.iter().collect()
        };
        match openat2_beneath(dir, &joined, flags, mode) {
            Err(Errno::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            other => return other.map_err(io::Error::from),
        }
    }
    walk_nofollow(dir, &names, flags, mode)
}

/// `openat2(dir, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, tried again on `EAGAIN`.
fn openat2_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let creates = flags.intersects(OFlag::O_CREAT | OFlag::O_TMPFILE);
    let how = OpenHow::new()
        .flags(flags)
        .mode(if creates { mode } else { Mode::empty() })
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dir, rel, how) {
            Err(Errno::EAGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// [`open_beneath`] without `openat2`: each directory on the way opened with `O_PATH |
/// O_DIRECTORY | O_NOFOLLOW` relative to the one before (a symlink there fails, `ENOTDIR`),
/// the last component with `flags` (which hold `O_NOFOLLOW`).
fn walk_nofollow(
    dir: BorrowedFd<'_>,
    names: &[&OsStr],
    flags: OFlag,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let Some((last, on_the_way)) = names.split_last() else {
        return Ok(nix::fcntl::openat(dir, ".", flags, mode)?);
    };
    let mut held: Option<OwnedFd> = None;
    for name in on_the_way {
        let from = held.as_ref().map_or(dir, |fd| fd.as_fd());
        let next = nix::fcntl::openat(from, *name, dir_flags(), Mode::empty())?;
        held = Some(next);
    }
    let from = held.as_ref().map_or(dir, |fd| fd.as_fd());
    Ok(nix::fcntl::openat(from, *last, flags, mode)?)
}

/// How a directory on the way is opened: a handle only, never through a symlink.
fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The names of a plain relative path; `..`, a root or a prefix is refused.
fn plain(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} leaves the directory it is relative to", rel.display()),
            )),
        })
        .collect()
}

/// A symlink where a directory was expected: the path names nothing in the tree (the tool
/// never follows one), so it is "not a directory", with the reason.
fn symlink_on_the_way(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory (a symlink is there now, and is never followed)",
        )
    } else {
        e
    }
}

/// Is `/proc/self/fd` there to reach entries through (asked once)?
fn proc_fd_available() -> io::Result<()> {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    if *AVAILABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "/proc is not mounted: entries are reached through /proc/self/fd, never by a path \
             another user could redirect",
        ))
    }
}

/// `/proc/self/fd/N`, the path of the descriptor `fd`.
fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A directory tree entered through one descriptor: every entry below it is reached with
/// [`open_beneath`], from the directories last resolved (held open, up to [`HELD`] deep).
pub(crate) struct Tree {
    /// The root as people know it (messages only).
    shown: PathBuf,
    state: Mutex<State>,
}

struct State {
    /// The root's descriptor; `None` until first used ([`Tree::later`]).
    root: Option<Arc<OwnedFd>>,
    /// The directories last resolved: `held[i]` is the directory named by the first `i + 1`
    /// names.
    held: Vec<(OsString, Arc<OwnedFd>)>,
}

impl Tree {
    /// The directory at `path`, opened now. `path` is the caller's (its symlinks are
    /// followed, once, now); nothing below it ever is.
    pub fn open(path: &Path) -> io::Result<Tree> {
        let tree = Tree::later(path.to_path_buf());
        tree.lock().root(&tree.shown)?;
        Ok(tree)
    }

    /// The directory at `path`, opened at first use (one not made yet).
    pub fn later(path: PathBuf) -> Tree {
        Tree {
            shown: path,
            state: Mutex::new(State {
                root: None,
                held: Vec::new(),
            }),
        }
    }

    /// The root as people know it.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves nothing half-done here: the chain is only ever cut or
        // extended by whole, opened directories.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory `rel` (the root when empty), resolved beneath the root; a symlink on
    /// the way is [`io::ErrorKind::NotADirectory`].
    pub fn dir(&self, rel: &Path) -> io::Result<Here> {
        let names = plain(rel)?;
        let mut state = self.lock();
        let root = state.root(&self.shown)?;
        let kept = state
            .held
            .iter()
            .zip(&names)
            .take_while(|((held, _), name)| held.as_os_str() == **name)
            .count();
        state.held.truncate(kept);
        let mut fd = match kept {
            0 => root,
            n => state.held[n - 1].1.clone(),
        };
        for (i, name) in names.iter().enumerate().skip(kept) {
            if i >= HELD {
                let rest: PathBuf = names[i..].iter().collect();
                let deep = open_beneath(fd.as_fd(), &rest, dir_flags(), Mode::empty())
                    .map_err(symlink_on_the_way)?;
                return Ok(Here::new(Arc::new(deep)));
            }
            let next = open_beneath(fd.as_fd(), Path::new(name), dir_flags(), Mode::empty())
                .map_err(symlink_on_the_way)?;
            fd = Arc::new(next);
            state.held.push(((*name).to_owned(), fd.clone()));
        }
        Ok(Here::new(fd))
    }

    /// The entry `rel` (not the root): its directory resolved as [`Tree::dir`] does, and its
    /// name.
    pub fn at(&self, rel: &Path) -> io::Result<At> {
        let names = plain(rel)?;
        let Some((name, on_the_way)) = names.split_last() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root of a tree is not an entry of it",
            ));
        };
        let parent: PathBuf = on_the_way.iter().collect();
        Ok(self.dir(&parent)?.child(name))
    }

    /// Drops the held directories at `rel` and below: the tool removed or replaced it.
    pub fn forget(&self, rel: &Path) {
        let Ok(names) = plain(rel) else { return };
        let mut state = self.lock();
        let same = state
            .held
            .iter()
            .zip(&names)
            .take_while(|((held, _), name)| held.as_os_str() == **name)
            .count();
        if same == names.len() {
            state.held.truncate(names.len().saturating_sub(1));
        }
    }
}

impl State {
    /// The root's descriptor, opened now if it was not yet.
    fn root(&mut self, shown: &Path) -> io::Result<Arc<OwnedFd>> {
        if let Some(root) = &self.root {
            return Ok(root.clone());
        }
        proc_fd_available()?;
        let fd = nix::fcntl::open(
            shown,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let fd = Arc::new(fd);
        self.root = Some(fd.clone());
        Ok(fd)
    }
}

/// A directory's own descriptor; as a path, `/proc/self/fd/N/.` (the directory itself,
/// for `metadata` and the calls that do not follow their last component: `lchown`, the
/// `l*xattr` family), valid while this lives.
#[derive(Clone)]
pub(crate) struct Here {
    fd: Arc<OwnedFd>,
    /// `/proc/self/fd/N`.
    listing: PathBuf,
    /// `/proc/self/fd/N/.`.
    path: PathBuf,
}

impl Here {
    fn new(fd: Arc<OwnedFd>) -> Here {
        let listing = fd_path(fd.as_fd());
        let path = listing.join(".");
        Here { fd, listing, path }
    }

    /// The device and inode (`st_dev`, `st_ino`) of the directory, from its descriptor
    /// (`fstat`): which directory it is, whatever path reached it. Needs no search
    /// permission on it, as a path through it would.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        let st = nix::sys::stat::fstat(self.fd.as_fd())?;
        Ok((st.st_dev, st.st_ino))
    }

    /// The path to list the directory by (`read_dir`): `/proc/self/fd/N`, which opens the
    /// very directory the descriptor holds and, unlike `N/.`, needs only read permission on
    /// it, as listing it by name would.
    pub fn listing(&self) -> &Path {
        &self.listing
    }

    /// The entry `name` of this directory (one name, as a listing gives it).
    pub fn child(&self, name: &OsStr) -> At {
        At {
            dir: self.fd.clone(),
            name: name.to_owned(),
            path: self.listing.join(name),
        }
    }
}

impl std::ops::Deref for Here {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Here {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// One entry: the descriptor of its directory and its name. As a path,
/// `/proc/self/fd/N/NAME`, valid while this lives: the path-only calls that do not follow
/// their last component (`lstat`, `l*xattr`, `lchown`, `utimensat(AT_SYMLINK_NOFOLLOW)`,
/// `mknod`, `mkdir`, `symlink`, `link`, `unlink`, `rmdir`, `O_CREAT | O_EXCL`) act on exactly
/// this name in exactly this directory.
#[derive(Clone)]
pub(crate) struct At {
    dir: Arc<OwnedFd>,
    name: OsString,
    path: PathBuf,
}

impl At {
    /// Opens the entry itself with `flags` (`mode` with `O_CREAT`): `openat` on its
    /// directory's descriptor, never following it (`O_NOFOLLOW` is always added, and
    /// `O_CLOEXEC`). The same name in the same directory as its path, without the lookup
    /// through `/proc`.
    pub fn open(&self, flags: OFlag, mode: Mode) -> io::Result<std::fs::File> {
        let fd = nix::fcntl::openat(
            self.dir.as_fd(),
            Path::new(&self.name),
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            mode,
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Creates the entry as a symlink whose text is `target` (`symlinkat` on its
    /// directory's descriptor: the same name in the same directory as its path, without
    /// the lookup through `/proc`).
    pub fn symlink(&self, target: &Path) -> io::Result<()> {
        nix::unistd::symlinkat(target, self.dir.as_fd(), Path::new(&self.name))?;
        Ok(())
    }

    /// Creates the entry as a new name of the file at `from` (`linkat`, `from` not
    /// followed: a symlink there gets a second name itself).
    pub fn hard_link_from(&self, from: &Path) -> io::Result<()> {
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            from,
            self.dir.as_fd(),
            Path::new(&self.name),
            nix::fcntl::AtFlags::empty(),
        )?;
        Ok(())
    }

    /// Renames this entry to `to` (`renameat` on both directories' descriptors, neither
    /// name followed), replacing what `to` names as `rename(2)` does.
    pub fn rename_to(&self, to: &At) -> io::Result<()> {
        nix::fcntl::renameat(
            self.dir.as_fd(),
            Path::new(&self.name),
            to.dir.as_fd(),
            Path::new(&to.name),
        )?;
        Ok(())
    }

    /// The entry as a directory (a symlink there is [`io::ErrorKind::NotADirectory`]).
    pub fn here(&self) -> io::Result<Here> {
        let fd = open_beneath(
            self.dir.as_fd(),
            Path::new(&self.name),
            dir_flags(),
            Mode::empty(),
        )
        .map_err(symlink_on_the_way)?;
        Ok(Here::new(Arc::new(fd)))
    }
}

impl std::ops::Deref for At {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for At {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};
    use std::os::unix::fs::symlink;

    fn tree_with_link() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        fs::write(root.join("a/b/f"), b"inside").expect("write");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("b")).expect("mkdir");
        fs::write(outside.join("b/f"), b"outside").expect("write");
        symlink(&outside, root.join("link")).expect("symlink");
        symlink("f", root.join("a/b/flink")).expect("symlink");
        (tmp, root)
    }

    fn read(fd: OwnedFd) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut File::from(fd), &mut out).expect("read");
        out
    }

    #[test]
    fn opens_beneath_and_never_through_a_link_with_or_without_openat2() {
        let (_tmp, root) = tree_with_link();
        let dir = File::open(&root).expect("open root");
        let open = |rel: &str, walk: bool| {
            let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            if walk {
                walk_nofollow(dir.as_fd(), &plain(Path::new(rel))?, flags, Mode::empty())
            } else {
                open_beneath(dir.as_fd(), Path::new(rel), OFlag::O_RDONLY, Mode::empty())
            }
        };
        for walk in [false, true] {
            assert_eq!(read(open("a/b/f", walk).expect("inside")), b"inside");
            assert_eq!(read(open("./a/./b/f", walk).expect("dots")), b"inside");
            assert!(
                open("link/b/f", walk).is_err(),
                "followed a link on the way"
            );
            assert!(
                open("a/b/flink", walk).is_err(),
                "followed the last component"
            );
            assert!(open("a/../a/b/f", walk).is_err(), "`..` accepted");
        }
        assert!(
            open_beneath(
                dir.as_fd(),
                Path::new("/etc"),
                OFlag::O_RDONLY,
                Mode::empty()
            )
            .is_err()
        );
    }

    #[test]
    fn a_tree_keeps_acting_in_the_directory_it_opened_and_refuses_a_swapped_link() {
        let (tmp, root) = tree_with_link();
        let tree = Tree::open(&root).expect("tree");
        let f = tree.at(Path::new("a/b/f")).expect("at");
        assert_eq!(fs::read(&*f).expect("read"), b"inside");
        // The directory is swapped for the link: the held descriptor still names the real
        // one, and a fresh resolution refuses the link.
        let moved = tmp.path().join("moved");
        fs::rename(root.join("a"), &moved).expect("mv");
        symlink(tmp.path().join("outside"), root.join("a")).expect("symlink");
        let again = tree.at(Path::new("a/b/f")).expect("held");
        assert_eq!(fs::read(&*again).expect("read"), b"inside");
        tree.forget(Path::new("a"));
        let e = tree
            .at(Path::new("a/b/f"))
            .err()
            .expect("a link on the way");
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory, "{e}");
        // Its path form does not follow the last component.
        let link = tree.at(Path::new("link")).expect("at");
        assert!(
            fs::symlink_metadata(&*link)
                .expect("lstat")
                .file_type()
                .is_symlink()
        );
        assert!(link.here().is_err(), "a link opened as a directory");
        let here = tree.dir(Path::new("")).expect("root");
        assert!(fs::metadata(&*here).expect("stat").is_dir());
        let listed: Vec<_> = fs::read_dir(here.listing())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(tree.at(Path::new("")).is_err());
    }

    #[test]
    fn deeper_than_held_resolves_from_the_deepest_held_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let names: Vec<String> = (0..HELD + 5).map(|i| format!("d{i}")).collect();
        let rel: PathBuf = names.iter().collect();
        fs::create_dir_all(tmp.path().join(&rel)).expect("mkdir -p");
        fs::write(tmp.path().join(&rel).join("f"), b"deep").expect("write");
        let tree = Tree::open(tmp.path()).expect("tree");
        let f = tree.at(&rel.join("f")).expect("deep");
        assert_eq!(fs::read(&*f).expect("read"), b"deep");
        assert_eq!(tree.lock().held.len(), HELD);
    }
}
