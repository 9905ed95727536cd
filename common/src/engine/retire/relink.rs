//! Finding and rewriting the vault links into a version being retired (retirement step 2
//! and the survey before it; docs/retirement.md, "What a retirement costs").
//!
//! Owns three things:
//!
//! - **The survey** ([`links_into`]): a later version's vault links into the retiring
//!   version `Vo`, found by walking only the real directories that version shares with `Vo`
//!   (a link into `Vo` at `d/x` names a real entry there, so `Vo/d` is a real directory: I1,
//!   I2), each link text read once per inode ([`LinkTexts`]: versions linking one path to
//!   one holder share one link inode, see [`crate::engine::build_state`]).
//! - **The replacement links** ([`LinkTemps`]): every new link is made in `<job>/.tmp/` and
//!   renamed over the old one, so every link resolves at every instant and no temporary name
//!   ever appears inside a version. A text that several versions need at one path is made
//!   once (a *master* in `.tmp/`) and hard-linked into each: one inode, where one link per
//!   version would allocate (and the old one free) an inode and, for a long text, a block.
//! - **The retarget itself** ([`retarget`]): the later versions' links into `Vo`, replaced
//!   by links to the same paths in `Vn`, one directory at a time on its open fd (mode made
//!   writable for a non-root writer and put back, times put back after its last link), the
//!   versions shared out among a few threads (each replacement is independent of the others:
//!   `Vn` reaches every path the old links reached).
//!
//! Invariant: a failed hard link (`EMLINK`, a file system without hard links, …) falls back
//! to a link of its own; the result is the same text either way.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::engine::copy;
use crate::error::{Error, IoContext, Result};
use crate::fault;
use crate::fsutil;
use crate::vault::tree::{self, Lookalikes};

/// A version's vault links to change, by the directory (relative to the version) that
/// holds them.
pub type ByDir = BTreeMap<PathBuf, Vec<PathBuf>>;

/// Link texts already read, by inode: a symlink's text never changes, and versions share
/// link inodes. Only used where directory entries carry the inode number `lstat` gives
/// (ext2/3/4, XFS, btrfs, tmpfs); elsewhere every link is read.
pub struct LinkTexts {
    by_inode: Option<HashMap<(u64, u64), OsString>>,
}

impl LinkTexts {
    /// A cache for the job folder `job` (none on a file system not known to keep `d_ino`
    /// equal to `st_ino`).
    pub fn for_job(job: &Path) -> LinkTexts {
        use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
        let trusted = nix::sys::statfs::statfs(job).is_ok_and(|s| {
            let t = s.filesystem_type();
            [
                EXT4_SUPER_MAGIC,
                XFS_SUPER_MAGIC,
                BTRFS_SUPER_MAGIC,
                TMPFS_MAGIC,
            ]
            .contains(&t)
        });
        LinkTexts {
            by_inode: trusted.then(HashMap::new),
        }
    }

    fn text(&mut self, dev: u64, entry: &fs::DirEntry) -> Result<OsString> {
        let read = |p: &Path| -> Result<OsString> {
            Ok(fs::read_link(p)
                .ctx("cannot read link", p)?
                .into_os_string())
        };
        let Some(cache) = &mut self.by_inode else {
            return read(&entry.path());
        };
        match cache.entry((dev, entry.ino())) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.get().clone()),
            std::collections::hash_map::Entry::Vacant(v) => {
                Ok(v.insert(read(&entry.path())?).clone())
            }
        }
    }
}

/// The vault links of version `vm` (in the job folder `job`) that name `vo`, by directory,
/// each directory's links in name order.
pub fn links_into(
    job: &Path,
    vm: &str,
    vo: &str,
    lookalikes: &Lookalikes,
    texts: &mut LinkTexts,
) -> Result<ByDir> {
    let vo_root = job.join(vo);
    let mut found = ByDir::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = tree::in_version(job, vm, &rel);
        let dev = fs::symlink_metadata(&dir)
            .ctx("cannot inspect", &dir)?
            .dev();
        let mut here = Vec::new();
        for e in fs::read_dir(&dir).ctx("cannot list", &dir)? {
            let e = e.ctx("cannot list", &dir)?;
            let ft = e.file_type().ctx("cannot inspect", &e.path())?;
            let child = rel.join(e.file_name());
            if ft.is_symlink() {
                if lookalikes.contains(vm, &child) {
                    continue;
                }
                let text = texts.text(dev, &e)?;
                if tree::parse_link_text(&child, Path::new(&text)).as_deref() == Some(vo) {
                    here.push(child);
                }
            } else if ft.is_dir()
                && fs::symlink_metadata(vo_root.join(&child)).is_ok_and(|m| m.is_dir())
            {
                stack.push(child);
            }
        }
        if !here.is_empty() {
            found.insert(rel, here);
        }
    }
    for links in found.values_mut() {
        links.sort();
    }
    Ok(found)
}

/// Step 2 of a retirement: every link of the `later` versions (with the links of each into
/// `Vo`, from [`links_into`]) is replaced by one to the same path in `vn`. `same_length`:
/// the old and new texts have the same length, so a link's own usage cannot change.
/// Returns each version's change of usage (its links and the directories holding them).
pub fn retarget(
    job: &Path,
    vn: &str,
    same_length: bool,
    later: &[(String, ByDir)],
    tmp: &LinkTemps,
) -> Result<HashMap<String, i64>> {
    let mut uses: HashMap<&Path, u32> = HashMap::new();
    for (_, by_dir) in later {
        for rel in by_dir.values().flatten() {
            *uses.entry(rel.as_path()).or_default() += 1;
        }
    }
    let mut masters = HashMap::new();
    for (rel, n) in uses {
        if n > 1 {
            masters.insert(rel.to_path_buf(), tmp.master(&tree::link_text(rel, vn))?);
        }
    }
    let job_work = Retarget {
        job,
        vn,
        same_length,
        tmp,
        masters: &masters,
    };
    let result = job_work.all_versions(later);
    let removed = tmp.remove_masters();
    let deltas = result?;
    removed?;
    Ok(deltas)
}

/// Threads a retarget uses: the versions are independent, and a link replacement mostly
/// waits on the file system's journal and locks.
const RETARGET_THREADS: usize = 2;

struct Retarget<'a> {
    job: &'a Path,
    vn: &'a str,
    same_length: bool,
    tmp: &'a LinkTemps,
    masters: &'a HashMap<PathBuf, OsString>,
}

impl Retarget<'_> {
    fn all_versions(&self, later: &[(String, ByDir)]) -> Result<HashMap<String, i64>> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let deltas = Mutex::new(HashMap::new());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let fail = |e: Error| {
            failed.store(true, Ordering::SeqCst);
            first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        };
        let work = |k: usize| {
            let lane = match self.tmp.lane(k) {
                Ok(lane) => lane,
                Err(e) => return fail(e),
            };
            while !failed.load(Ordering::SeqCst) {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((vm, by_dir)) = later.get(i) else {
                    break;
                };
                match self.version(&lane, vm, by_dir) {
                    Ok(d) => {
                        deltas
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(vm.clone(), d);
                    }
                    Err(e) => fail(e),
                }
            }
            if let Err(e) = fsutil::remove_tree(&lane.path) {
                fail(e);
            }
        };
        let threads = RETARGET_THREADS.min(later.len());
        if threads <= 1 {
            work(0);
        } else {
            std::thread::scope(|s| {
                for k in 0..threads {
                    s.spawn(move || work(k));
                }
            });
        }
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(deltas.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// One later version `vm`, one directory at a time. A link's own usage is only looked
    /// at when the texts' lengths differ (a longer text can leave the inode for a block).
    fn version(&self, lane: &OpenDir, vm: &str, by_dir: &ByDir) -> Result<i64> {
        let mut delta = 0i64;
        for (dir_rel, rels) in by_dir {
            let dir = DirGuard::open(&tree::in_version(self.job, vm, dir_rel))?;
            for rel in rels {
                let name = rel.file_name().unwrap_or_default();
                let before = if self.same_length {
                    0
                } else {
                    dir.usage(name)?
                };
                match self.masters.get(rel) {
                    Some(master) => self.tmp.replace_by_master(
                        lane,
                        master,
                        &tree::link_text(rel, self.vn),
                        &dir.open,
                        name,
                    )?,
                    None => self.tmp.replace_link_via(
                        lane,
                        &tree::link_text(rel, self.vn),
                        &dir.open,
                        name,
                    )?,
                }
                fault::step();
                if !self.same_length {
                    delta += dir.usage(name)? as i64 - before as i64;
                }
            }
            delta += dir.restore()?;
        }
        Ok(delta)
    }
}

/// A version directory about to get a changed entry (a replaced link, an entry moved
/// in): open once, its mode made writable for a non-root writer, and both put back with
/// its times by [`DirGuard::restore`], so the version still restores exactly (I5).
pub struct DirGuard {
    open: OpenDir,
    meta: fs::Metadata,
    chmodded: bool,
}

impl DirGuard {
    /// Opens the directory `path`, made writable (and readable) for a non-root writer.
    pub fn open(path: &Path) -> Result<DirGuard> {
        let meta = fs::symlink_metadata(path).ctx("cannot inspect", path)?;
        let mode = meta.mode() & 0o7777;
        let chmodded = !copy::privileged() && mode & 0o700 != 0o700;
        if chmodded {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700))
                .ctx("cannot make writable", path)?;
        }
        Ok(DirGuard {
            open: OpenDir::open(path)?,
            meta,
            chmodded,
        })
    }

    /// The usage of entry `name`.
    fn usage(&self, name: &OsStr) -> Result<u64> {
        self.open.usage(name)
    }

    /// Puts mode and times back; returns how the directory's own usage changed.
    pub fn restore(self) -> Result<i64> {
        let path = &self.open.path;
        if self.chmodded {
            nix::sys::stat::fchmod(
                &self.open.fd,
                Mode::from_bits_truncate(self.meta.mode() & 0o7777),
            )
            .map_err(std::io::Error::from)
            .ctx("cannot restore the mode of", path)?;
        }
        let (atime, mtime) = copy::times(&self.meta);
        nix::sys::stat::futimens(&self.open.fd, &atime, &mtime)
            .map_err(std::io::Error::from)
            .ctx("cannot set times of", path)?;
        let after = nix::sys::stat::fstat(&self.open.fd)
            .map_err(std::io::Error::from)
            .ctx("cannot inspect", path)?;
        let after = u64::try_from(after.st_blocks).unwrap_or(0) * 512;
        Ok(after as i64 - crate::vault::measure::disk_usage(&self.meta) as i64)
    }
}

/// `<job>/.tmp/`, where a retirement makes each replacement link before it is renamed over
/// the old one: no temporary name ever appears inside a version. Masters live in a
/// directory of their own there (`.tmp/.tmp-<pid>-m/`), so that `.tmp/` itself, where every
/// replacement makes and loses a name, stays small. Links a crashed run left there (the job
/// lock is held, so no live writer's) are removed when it opens; a dead run's directories
/// go with the start-up repair every retirement runs ([`crate::engine::recover`]).
pub struct LinkTemps {
    dir: OpenDir,
    masters: std::sync::OnceLock<OpenDir>,
    counter: AtomicU64,
    prefix: String,
}

impl LinkTemps {
    /// Opens (creating it if need be) and clears the job folder's `.tmp/` of leftover links.
    pub fn open(job: &Path) -> Result<LinkTemps> {
        let path = job.join(".tmp");
        if fsutil::create_metadata_dir(&path)? {
            fsutil::fsync_dir(job)?;
        }
        for entry in fs::read_dir(&path).ctx("cannot list", &path)? {
            let entry = entry.ctx("cannot list", &path)?;
            let leftover = entry.file_type().is_ok_and(|t| t.is_symlink())
                && entry.file_name().as_encoded_bytes().starts_with(b".tmp-");
            if leftover {
                fs::remove_file(entry.path()).ctx("cannot remove", &entry.path())?;
            }
        }
        Ok(LinkTemps {
            dir: OpenDir::open(&path)?,
            masters: std::sync::OnceLock::new(),
            counter: AtomicU64::new(0),
            prefix: format!(".tmp-{}-", std::process::id()),
        })
    }

    fn temp_name(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        PathBuf::from(format!("{}r{n}", self.prefix))
    }

    /// Replaces the entry `name` of `dir` by a symlink with text `text`, atomically.
    pub fn replace_link(&self, text: &Path, dir: &OpenDir, name: &OsStr) -> Result<()> {
        self.replace_link_via(&self.dir, text, dir, name)
    }

    /// [`LinkTemps::replace_link`], the temporary name made in `lane`.
    fn replace_link_via(
        &self,
        lane: &OpenDir,
        text: &Path,
        dir: &OpenDir,
        name: &OsStr,
    ) -> Result<()> {
        let tmp = self.temp_name();
        nix::unistd::symlinkat(text, &lane.fd, &tmp)
            .map_err(std::io::Error::from)
            .ctx("cannot create symlink", &lane.path.join(&tmp))?;
        rename_into(lane, &tmp, dir, name)
    }

    /// A directory of this run's own in `.tmp/` for one thread's temporary names (threads
    /// making names in one directory wait on its lock).
    fn lane(&self, k: usize) -> Result<OpenDir> {
        let path = self.dir.path.join(format!("{}w{k}", self.prefix));
        fsutil::create_metadata_dir(&path)?;
        OpenDir::open(&path)
    }

    /// The directory of masters, created on first use.
    fn masters_dir(&self) -> Result<&OpenDir> {
        if let Some(d) = self.masters.get() {
            return Ok(d);
        }
        let path = self.dir.path.join(format!("{}m", self.prefix));
        fsutil::create_metadata_dir(&path)?;
        let d = OpenDir::open(&path)?;
        Ok(self.masters.get_or_init(|| d))
    }

    /// A master link with text `text`, to be hard-linked where it is needed.
    fn master(&self, text: &Path) -> Result<OsString> {
        let dir = self.masters_dir()?;
        let name = format!("{}", self.counter.fetch_add(1, Ordering::Relaxed));
        nix::unistd::symlinkat(text, &dir.fd, name.as_str())
            .map_err(std::io::Error::from)
            .ctx("cannot create symlink", &dir.path.join(&name))?;
        Ok(OsString::from(name))
    }

    /// Replaces the entry `name` of `dir` by a hard link of `master` (whose text is
    /// `text`), atomically; by a link of its own when the hard link cannot be made.
    fn replace_by_master(
        &self,
        lane: &OpenDir,
        master: &OsStr,
        text: &Path,
        dir: &OpenDir,
        name: &OsStr,
    ) -> Result<()> {
        if fault::hard_links_refused() {
            return self.replace_link_via(lane, text, dir, name);
        }
        let tmp = self.temp_name();
        let linked = self.masters_dir().and_then(|masters| {
            nix::unistd::linkat(&masters.fd, master, &lane.fd, &tmp, AtFlags::empty())
                .map_err(std::io::Error::from)
                .ctx("cannot link", &masters.path.join(master))
        });
        if linked.is_err() {
            return self.replace_link_via(lane, text, dir, name);
        }
        rename_into(lane, &tmp, dir, name)
    }

    /// Removes the masters (and their directory).
    fn remove_masters(&self) -> Result<()> {
        match self.masters.get() {
            Some(d) => fsutil::remove_tree(&d.path),
            None => Ok(()),
        }
    }
}

/// Renames `lane/tmp` over `dir/name`; on failure removes `tmp`.
fn rename_into(lane: &OpenDir, tmp: &Path, dir: &OpenDir, name: &OsStr) -> Result<()> {
    let renamed = nix::fcntl::renameat(&lane.fd, tmp, &dir.fd, name)
        .map_err(std::io::Error::from)
        .ctx("cannot rename symlink into place", &dir.path.join(name));
    if renamed.is_err() {
        let _ = nix::unistd::unlinkat(&lane.fd, tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    renamed
}

/// An open directory, for `*at` calls on its entries.
pub struct OpenDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl OpenDir {
    /// Opens the directory `path` (not following a symlink).
    pub fn open(path: &Path) -> Result<OpenDir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .ctx("cannot open directory", path)?;
        Ok(OpenDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The disk usage of entry `name` (not following a symlink).
    pub fn usage(&self, name: &OsStr) -> Result<u64> {
        let st = nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(std::io::Error::from)
            .ctx("cannot inspect", &self.path.join(name))?;
        Ok(u64::try_from(st.st_blocks).unwrap_or(0) * 512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "V1-20260101T000000Z";
    const V2: &str = "V2-20260102T000000Z";
    const V3: &str = "V3-20260103T000000Z";

    fn link(job: &Path, version: &str, rel: &str, holder: &str) {
        let rel = Path::new(rel);
        std::os::unix::fs::symlink(tree::link_text(rel, holder), job.join(version).join(rel))
            .expect("symlink");
    }

    /// V1 holds `a/{x,y,sub/z}` and `b/w`; V2 changed `a/x`; V3 changed `a/x` and
    /// `a/sub/q`, and holds a lookalike of a link into V1 at `c`.
    fn three_versions() -> (tempfile::TempDir, Lookalikes) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let job = tmp.path();
        for d in ["a/sub", "b"] {
            fs::create_dir_all(job.join(V1).join(d)).expect("mkdir");
        }
        for f in ["a/x", "a/y", "a/sub/z", "b/w"] {
            fs::write(job.join(V1).join(f), f).expect("write");
        }
        fs::create_dir_all(job.join(V2).join("a")).expect("mkdir");
        fs::write(job.join(V2).join("a/x"), b"x2").expect("write");
        link(job, V2, "a/y", V1);
        link(job, V2, "a/sub", V1);
        link(job, V2, "b", V1);
        fs::create_dir_all(job.join(V3).join("a/sub")).expect("mkdir");
        fs::write(job.join(V3).join("a/x"), b"x3").expect("write");
        fs::write(job.join(V3).join("a/sub/q"), b"q").expect("write");
        link(job, V3, "a/y", V1);
        link(job, V3, "a/sub/z", V1);
        link(job, V3, "b", V1);
        link(job, V3, "c", V1);
        let mut look = Lookalikes::default();
        look.insert(V3, Path::new("c"));
        (tmp, look)
    }

    /// The links into `vo`, by the independent walker of every real directory.
    fn by_full_walk(job: &Path, vm: &str, vo: &str, look: &Lookalikes) -> ByDir {
        let mut out = ByDir::new();
        for (rel, holder) in tree::vault_links(job, vm, look).expect("walk") {
            if holder == vo {
                let dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
                out.entry(dir).or_default().push(rel);
            }
        }
        out
    }

    #[test]
    fn the_survey_finds_what_a_walk_of_every_real_directory_finds() {
        let (tmp, look) = three_versions();
        let job = tmp.path();
        for (vm, vo) in [(V3, V1), (V3, V2), (V2, V1)] {
            let mut texts = LinkTexts::for_job(job);
            let got = links_into(job, vm, vo, &look, &mut texts).expect("survey");
            assert_eq!(got, by_full_walk(job, vm, vo, &look), "{vm} into {vo}");
        }
        let mut texts = LinkTexts::for_job(job);
        let got = links_into(job, V3, V1, &look, &mut texts).expect("survey");
        let all: Vec<&Path> = got.values().flatten().map(PathBuf::as_path).collect();
        assert_eq!(
            all,
            [Path::new("b"), Path::new("a/y"), Path::new("a/sub/z")]
        );
    }

    #[test]
    fn a_retarget_shares_one_new_inode_per_path_and_leaves_no_temporaries() {
        let (tmp, look) = three_versions();
        let job = tmp.path();
        // A fourth version keeping V3's links: `b` and `a/y` are then needed twice.
        fs::create_dir_all(job.join("V4-20260104T000000Z/a")).expect("mkdir");
        let v4 = "V4-20260104T000000Z";
        link(job, v4, "a/y", V1);
        link(job, v4, "b", V1);
        fs::write(job.join(v4).join("a/x"), b"x4").expect("write");
        link(job, v4, "a/sub", V3);
        let mut texts = LinkTexts::for_job(job);
        let later: Vec<(String, ByDir)> = [V3, v4]
            .iter()
            .map(|v| {
                let found = links_into(job, v, V1, &look, &mut texts).expect("survey");
                (v.to_string(), found)
            })
            .collect();
        let tmp_dir = LinkTemps::open(job).expect("temps");
        let deltas = retarget(job, V2, true, &later, &tmp_dir).expect("retarget");
        assert_eq!(deltas.len(), 2);
        let ino = |v: &str, rel: &str| {
            fs::symlink_metadata(job.join(v).join(rel))
                .expect("lstat")
                .ino()
        };
        assert_eq!(ino(V3, "b"), ino(v4, "b"));
        assert_eq!(ino(V3, "a/y"), ino(v4, "a/y"));
        for (v, rel) in [(V3, "b"), (v4, "b"), (V3, "a/y"), (V3, "a/sub/z")] {
            assert_eq!(
                fs::read_link(job.join(v).join(rel)).expect("readlink"),
                tree::link_text(Path::new(rel), V2),
                "{v}/{rel}"
            );
        }
        assert_eq!(
            fs::read_link(job.join(V3).join("c")).expect("readlink"),
            tree::link_text(Path::new("c"), V1),
            "the lookalike is left alone"
        );
        let left: Vec<_> = fs::read_dir(job.join(".tmp"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left in .tmp: {left:?}");
    }
}
