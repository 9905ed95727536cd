//! Small filesystem helpers every writer uses: temp names, atomic file replacement (one
//! file, or a set sharing its flushes: [`Staged`]), early writeback, atomic symlink
//! replacement, directory fsync, removing a tree with read-only directories, and who may
//! read what a writer creates in the vault ([`Access`]).
//!
//! Invariant: a file or symlink replaced with these helpers is, at every instant, either
//! the complete old one or the complete new one (built under a temp name in the same
//! directory's `.tmp/` or beside it, then renamed over it). A file is also durable when
//! [`write_atomic`] returns (fsync of the file before the rename, of the directory after);
//! [`replace_symlink_in`] leaves the directory's fsync to its caller. Temp names carry the
//! writer's pid ([`temp_owner`]), so recovery can tell a crash's leftovers from the
//! temporaries of a live writer.
//!
//! Invariant: every folder and file these helpers create for the vault's records (a
//! [`write_atomic`] file, [`tmp_dir_of`], [`create_metadata_dir`], [`create_metadata_file`])
//! gets its mode set explicitly, never left to the umask: the [`Access`] of the folder it is
//! created in (0600 files and 0700 folders, or 0640 and 0750 with the folder's group when
//! the folder is shared with its group; docs/security.md#who-may-read-the-vault).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// A temp name for `path` in the directory `dir` (same file system) that no other writer
/// uses: `.tmp-{pid}-{n}-{name}`.
///
/// The pid sets this process apart from every other writer; `n` comes from a counter
/// global to the process because that is the scope the name must be unique in: two
/// threads (or two calls of one thread) replacing the same file must not share a temp
/// name, and no narrower owner (a vault, a job) sees all of the process's writers. It
/// only grows, and needs no ordering with other memory (`Relaxed`).
pub fn temp_in(dir: &Path, path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(TEMP_PREFIX);
    name.push(PID.get_or_init(|| std::process::id().to_string()));
    name.push(format!("-{n}-"));
    name.push(path.file_name().unwrap_or_default());
    dir.join(name)
}

/// How every temp name starts.
pub const TEMP_PREFIX: &str = ".tmp-";

/// The folder of temporaries inside a job folder (docs/format.md#vault-layout).
pub const TMP_DIR: &str = ".tmp";

/// The pid a temp name ([`temp_in`]) was made by, if `name` is one.
pub fn temp_owner(name: &std::ffi::OsStr) -> Option<u32> {
    let rest = name.to_str()?.strip_prefix(TEMP_PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

/// Is the process `pid` alive? (A temp of a dead process is a leftover of a crash.)
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Who may read a folder of the vault and what is created in it: its owner only (folders
/// 0700, files 0600), or its owner and one group (0750 and 0640, that group), the sharing
/// `vault_group` asks for (docs/security.md#who-may-read-the-vault). Never anyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The group that may read too, if any.
    pub group: Option<u32>,
}

impl Access {
    /// The owner only.
    pub const PRIVATE: Access = Access { group: None };

    /// The owner, and the group `gid` for reading.
    pub fn shared(gid: u32) -> Access {
        Access { group: Some(gid) }
    }

    /// A folder's mode: 0700, or 0750 when shared.
    pub fn dir_mode(self) -> u32 {
        if self.group.is_some() { 0o750 } else { 0o700 }
    }

    /// A file's mode: 0600, or 0640 when shared.
    pub fn file_mode(self) -> u32 {
        if self.group.is_some() { 0o640 } else { 0o600 }
    }

    /// The mode for an entry of this type.
    pub fn mode_for(self, is_dir: bool) -> u32 {
        if is_dir {
            self.dir_mode()
        } else {
            self.file_mode()
        }
    }

    /// The access of what is created in the folder whose `lstat` is `meta`: shared with the
    /// folder's group when the group may list and enter it (g+rx) and this process may give
    /// files that group; private otherwise (never wider than the folder).
    pub fn of_folder_meta(meta: &fs::Metadata) -> Access {
        use std::os::unix::fs::MetadataExt;
        if meta.mode() & 0o050 == 0o050 && may_use_group(meta.gid()) {
            Access::shared(meta.gid())
        } else {
            Access::PRIVATE
        }
    }

    /// The access of what is created in the folder `dir` ([`Access::of_folder_meta`]).
    pub fn of_folder(dir: &Path) -> Result<Access> {
        let meta = fs::metadata(dir).ctx("cannot inspect", dir)?;
        Ok(Access::of_folder_meta(&meta))
    }

    /// Gives the open file or folder `f` (at `path`, for messages) exactly this access: its
    /// mode (`fchmod`, whatever the umask did) and, when shared, its group.
    pub fn apply_to_open(self, f: &File, path: &Path, is_dir: bool) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(gid) = self.group {
            nix::unistd::fchown(f, None, Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(std::io::Error::from)
                .ctx("cannot give the vault's group to", path)?;
        }
        f.set_permissions(fs::Permissions::from_mode(self.mode_for(is_dir)))
            .ctx("cannot set the mode of", path)
    }

    /// [`Access::apply_to_open`] for the folder or regular file at `path`, opened without
    /// following a symlink (a symlink has no mode of its own and is refused).
    pub fn apply_to_path(self, path: &Path) -> Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .ctx("cannot open", path)?;
        let is_dir = f.metadata().ctx("cannot inspect", path)?.is_dir();
        self.apply_to_open(&f, path, is_dir)
    }
}

/// May this process give a file it owns the group `gid` (root, or a member of it)?
pub fn may_use_group(gid: u32) -> bool {
    use nix::unistd::{Gid, getegid, geteuid, getgroups};
    geteuid().is_root()
        || getegid().as_raw() == gid
        || getgroups().is_ok_and(|groups| groups.contains(&Gid::from_raw(gid)))
}

/// Creates the folder `dir` for the vault's records (`.tmp/`, `checksums/`, `.partial/`)
/// with the [`Access`] of the folder it is in; `Ok(false)` when it exists already (left as
/// it is).
pub fn create_metadata_dir(dir: &Path) -> Result<bool> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    create_dir_with(dir, Access::of_folder(parent)?)
}

/// Creates the folder `dir` with `access` (its mode set explicitly); `Ok(false)` when it
/// exists already (left as it is).
pub fn create_dir_with(dir: &Path, access: Access) -> Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).ctx("cannot create", dir),
    }
    access.apply_to_path(dir)?;
    Ok(true)
}

/// Creates the empty record file `path` (a journal, a lock file) with the [`Access`] of its
/// folder, unless it exists (then it is left as it is).
pub fn create_metadata_file(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).ctx("cannot create", path),
    };
    Access::of_folder(parent)?.apply_to_open(&f, path, false)
}

/// `<dir>/.tmp/`, created if missing ([`create_metadata_dir`]): where a file of the folder
/// `dir` is built before it is renamed into place.
pub fn tmp_dir_of(dir: &Path) -> Result<PathBuf> {
    let tmp = dir.join(TMP_DIR);
    create_metadata_dir(&tmp)?;
    Ok(tmp)
}

/// Fsyncs a directory so that a rename inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).ctx("cannot open directory", dir)?;
    f.sync_all().ctx("cannot fsync directory", dir)
}

/// Replaces `path` with `contents` atomically (temp file, fsync, rename, fsync dir). The
/// temp file is built in `.tmp/` beside `path` (created on demand; for a job file that is
/// the job's `.tmp/`, which recovery empties), so a crash never leaves it among the files.
/// The file gets the [`Access`] of its folder.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic_in(&tmp_dir_of(dir)?, path, contents)
}

/// One file for [`Staged::add`]: where it goes and all it holds.
pub struct Replacement {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

/// Files replaced together, each as [`write_atomic`] replaces one, their flushes shared:
/// every temp file is written when it is added, all are flushed, and only then are they
/// renamed into place, each folder flushed once at the end. Where a filesystem commits
/// metadata in one journal (ext4, XFS), the flushes after the first find their work done.
/// A version's publication stages its registries before its tree is flushed, so that their
/// writeback runs meanwhile, and its checksums file and completion record once the tree
/// is durable; the version is renamed only after the set's commit returned
/// (engine/publish.rs).
///
/// After a crash each file is old or new, whole; which of them are new is not ordered, so
/// a set is for records that do not depend on each other. On an error the temp files not
/// yet renamed are removed; those renamed stay (each is complete).
///
/// Each file is written in the `.tmp/` beside it (or in a given one: [`Staged::add_in`])
/// with its folder's [`Access`], and its writeback is started at once
/// ([`start_writeback`]): a flush of anything else on the filesystem then commits its
/// blocks too, and [`Staged::flush`] finds little left to do.
///
/// Invariant: a staged file is in place only once [`Staged::commit`] renamed it, and only
/// after its contents were made durable ([`Staged::flush`], which `commit` calls itself
/// unless nothing was added since the last flush). A temp file not renamed when the set
/// is dropped (an error, an abandoned version) is removed.
#[derive(Default)]
pub struct Staged {
    /// Not yet renamed, in the order added.
    files: Vec<StagedFile>,
    /// Whether every file in `files` has been flushed since it was written.
    flushed: bool,
}

struct StagedFile {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
}

impl Staged {
    /// Stages `r`, its temp file in the `.tmp/` beside it.
    pub fn add(&mut self, r: &Replacement) -> Result<()> {
        let folder = r.path.parent().unwrap_or(Path::new("."));
        self.add_in(&tmp_dir_of(folder)?, &r.path, |w| w.write_all(&r.contents))
    }

    /// Stages `path` with the text `write` writes (through a buffer), its temp file in
    /// `tmp_dir` (an existing directory on the same file system as `path`).
    pub fn add_in(
        &mut self,
        tmp_dir: &Path,
        path: &Path,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let folder = path.parent().unwrap_or(Path::new("."));
        let access = Access::of_folder(folder)?;
        let tmp = temp_in(tmp_dir, path);
        let file = create_temp(&tmp)?;
        let written = access.apply_to_open(&file, &tmp, false).and_then(|()| {
            let mut buffered = std::io::BufWriter::with_capacity(1 << 16, &file);
            write(&mut buffered)
                .and_then(|()| buffered.flush())
                .ctx("cannot write", &tmp)
        });
        if written.is_ok() {
            // A hint: the flush reports what it finds.
            let _ = start_writeback(&file);
        }
        // Listed whether or not it was written: dropping the set removes it.
        self.files.push(StagedFile {
            file,
            tmp,
            path: path.to_path_buf(),
        });
        self.flushed = false;
        written
    }

    /// Makes every staged file's contents durable (fsync), none of them in place yet.
    pub fn flush(&mut self) -> Result<()> {
        for f in &self.files {
            f.file.sync_all().ctx("cannot fsync", &f.tmp)?;
        }
        self.flushed = true;
        Ok(())
    }

    /// Renames every staged file into place, in the order staged, then flushes each of
    /// their folders once: all of them are durable in place when it returns.
    pub fn commit(mut self) -> Result<()> {
        if !self.flushed {
            self.flush()?;
        }
        let mut folders: Vec<PathBuf> = Vec::new();
        while let Some(f) = self.files.first() {
            fs::rename(&f.tmp, &f.path).ctx("cannot rename into place", &f.path)?;
            let folder = f.path.parent().unwrap_or(Path::new(".")).to_path_buf();
            if !folders.contains(&folder) {
                folders.push(folder);
            }
            self.files.remove(0);
        }
        for folder in &folders {
            fsync_dir(folder)?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = fs::remove_file(&f.tmp);
        }
    }
}

/// Starts writing `file`'s dirty data to the disk without waiting (`sync_file_range`,
/// write only): a later fsync of it, or of anything on its filesystem, then finds its
/// blocks allocated. Only a hint: nothing is durable when it returns.
pub fn start_writeback(file: &File) -> std::io::Result<()> {
    crate::sys::start_writeback(file)
}

/// [`write_atomic`] with the temp file beside `path` (for the vault marker: the vault
/// root has no `.tmp/`).
pub fn write_atomic_beside(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic_in(dir, path, contents)
}

/// [`write_atomic`] with the temp file built in `tmp_dir` (an existing directory on the
/// same file system as `path`).
pub fn write_atomic_in(tmp_dir: &Path, path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic_in_with(tmp_dir, path, |w| w.write_all(contents))
}

/// [`write_atomic_in`] for contents written piece by piece (through a buffer) rather than
/// held whole in memory: a checksums file of a million records.
pub fn write_atomic_in_with(
    tmp_dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    write_atomic_in_unless(tmp_dir, path, |w| write(w).map(|()| Commit::Yes)).map(drop)
}

/// Whether a file written by [`write_atomic_in_unless`] replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Make it durable and rename it into place.
    Yes,
    /// Throw it away: `path` stays as it was.
    No,
}

/// [`write_atomic_in_with`] whose writer decides, once it has written everything, whether
/// the new file replaces the old ([`Commit::Yes`]) or is thrown away ([`Commit::No`]: a
/// merge that found nothing to add). Returns whether it replaced it.
pub fn write_atomic_in_unless(
    tmp_dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<Commit>,
) -> Result<bool> {
    let folder = path.parent().unwrap_or(Path::new("."));
    write_atomic_mode(tmp_dir, path, write, Mode::Of(Access::of_folder(folder)?))
}

/// [`write_atomic`] for a file every local user may read (mode 0644): the supervisor's live
/// state, which `reverberator status` shows to anyone, outside the vault.
pub fn write_atomic_readable(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic_mode(
        &tmp_dir_of(dir)?,
        path,
        |w| w.write_all(contents).map(|()| Commit::Yes),
        Mode::Readable,
    )
    .map(drop)
}

/// The mode [`write_atomic_mode`] gives a file.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// The vault's records: [`Access`].
    Of(Access),
    /// 0644.
    Readable,
}

/// Creates the temp file `tmp`, new (never an existing name) and 0600 until its writer
/// gives it its mode.
fn create_temp(tmp: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .ctx("cannot create", tmp)
}

fn write_atomic_mode(
    tmp_dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<Commit>,
    mode: Mode,
) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = temp_in(tmp_dir, path);
    let result = (|| {
        let mut f = create_temp(&tmp)?;
        match mode {
            Mode::Of(access) => access.apply_to_open(&f, &tmp, false)?,
            Mode::Readable => f
                .set_permissions(fs::Permissions::from_mode(0o644))
                .ctx("cannot set the mode of", &tmp)?,
        }
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, &mut f);
        let commit = write(&mut buffered)
            .and_then(|commit| buffered.flush().map(|()| commit))
            .ctx("cannot write", &tmp)?;
        drop(buffered);
        if commit == Commit::No {
            return Ok(Commit::No);
        }
        f.sync_all().ctx("cannot fsync", &tmp)?;
        fs::rename(&tmp, path)
            .ctx("cannot rename into place", path)
            .map(|()| Commit::Yes)
    })();
    match result {
        Ok(Commit::Yes) => {}
        Ok(Commit::No) => {
            fs::remove_file(&tmp).ctx("cannot remove", &tmp)?;
            return Ok(false);
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(true)
}

/// Replaces (or creates) the symlink `path` with one whose text is `target`, atomically, the
/// temp link built in `.tmp/` beside `path` (created on demand): for links directly in a job
/// folder (`current`). Neither the link nor the directory is fsynced here.
pub fn replace_symlink_via_tmp(target: &Path, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    replace_symlink_in(&tmp_dir_of(dir)?, target, path)
}

/// [`replace_symlink_via_tmp`] with the temp link built in `tmp_dir` (an existing directory on the
/// same file system, such as a job's `.tmp/` for a vault link deep inside a version), so
/// that a crash never leaves it beside `path`.
pub fn replace_symlink_in(tmp_dir: &Path, target: &Path, path: &Path) -> Result<()> {
    let tmp = temp_in(tmp_dir, path);
    std::os::unix::fs::symlink(target, &tmp).ctx("cannot create symlink", &tmp)?;
    if let Err(e) = fs::rename(&tmp, path).ctx("cannot rename symlink into place", path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Removes `path`: a tree that may contain read-only directories (as a non-root user
/// would meet in a version), or a single non-directory. Missing is fine. Symlinks are
/// removed, never followed.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("cannot inspect", path),
        Ok(m) if !m.is_dir() => return fs::remove_file(path).ctx("cannot remove", path),
        Ok(_) => {}
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            fs::remove_dir_all(path).ctx("cannot remove", path)
        }
    }
}

/// [`remove_tree`] of `path` (a `/proc/self/fd/N/NAME` path, say: [`crate::beneath::At`]),
/// its errors naming `shown` instead.
pub fn remove_tree_as(path: &Path, shown: &Path) -> Result<()> {
    remove_tree(path).map_err(|e| match e {
        crate::error::Error::Io { what, source, .. } => crate::error::Error::Io {
            what,
            path: shown.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Makes every directory of the tree at `root` 0700 (best effort, iterative: a tree may be
/// deeper than the stack), so that [`remove_tree`] can empty it. Symlinks are not followed.
fn make_writable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(m) = fs::symlink_metadata(&dir) else {
            continue;
        };
        if !m.is_dir() {
            continue;
        }
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(&dir) {
            let subdirs = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
            pending.extend(subdirs.map(|e| e.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("lstat").permissions().mode() & 0o7777
    }

    /// Stages every file, flushes and commits the set ([`Staged`] as publish uses it).
    fn replace_all(files: &[Replacement]) -> Result<()> {
        let mut staged = Staged::default();
        for r in files {
            staged.add(r)?;
        }
        staged.flush()?;
        staged.commit()
    }

    #[test]
    fn a_staged_set_replaces_each_file_whole_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = dir.path().join("job");
        let shared = dir.path().join("shared");
        fs::create_dir_all(&job).expect("mkdir");
        fs::create_dir_all(&shared).expect("mkdir");
        fs::set_permissions(&job, fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).expect("chmod");
        fs::write(job.join("a.tsv"), b"old a").expect("write");
        let files = [
            Replacement {
                path: job.join("a.tsv"),
                contents: b"new a".to_vec(),
            },
            Replacement {
                path: job.join("b.tsv"),
                contents: b"new b".to_vec(),
            },
            Replacement {
                path: shared.join("c.tsv"),
                contents: Vec::new(),
            },
        ];
        replace_all(&files).expect("write all");
        for r in &files {
            assert_eq!(fs::read(&r.path).expect("read"), r.contents);
        }
        assert_eq!(mode(&job.join("a.tsv")), 0o600);
        assert_eq!(
            mode(&shared.join("c.tsv")),
            Access::of_folder(&shared).expect("access").mode_for(false)
        );
        for tmp in [job.join(TMP_DIR), shared.join(TMP_DIR)] {
            assert_eq!(
                fs::read_dir(&tmp).expect("ls").count(),
                0,
                "{}",
                tmp.display()
            );
        }
    }

    #[test]
    fn a_staged_set_that_fails_leaves_the_old_files_and_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = dir.path().join("job");
        fs::create_dir_all(&job).expect("mkdir");
        fs::write(job.join("a.tsv"), b"old a").expect("write");
        // The second file's folder is a file: nothing can be created in it.
        fs::write(dir.path().join("not-a-folder"), b"").expect("write");
        let files = [
            Replacement {
                path: job.join("a.tsv"),
                contents: b"new a".to_vec(),
            },
            Replacement {
                path: dir.path().join("not-a-folder").join("b.tsv"),
                contents: b"new b".to_vec(),
            },
        ];
        assert!(replace_all(&files).is_err());
        assert_eq!(fs::read(job.join("a.tsv")).expect("read"), b"old a");
        assert_eq!(fs::read_dir(job.join(TMP_DIR)).expect("ls").count(), 0);
    }

    #[test]
    fn a_commit_that_fails_part_way_leaves_each_file_whole_and_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.tsv"), dir.path().join("b.tsv"));
        fs::write(&a, b"old a").expect("write");
        // b's name is a directory that is not empty: no file can be renamed over it.
        fs::create_dir_all(b.join("inside")).expect("mkdir");
        let mut staged = Staged::default();
        for (path, text) in [(&a, b"new a"), (&b, b"new b")] {
            staged
                .add(&Replacement {
                    path: path.clone(),
                    contents: text.to_vec(),
                })
                .expect("stage");
        }
        assert!(staged.commit().is_err());
        assert_eq!(
            fs::read(&a).expect("read"),
            b"new a",
            "renamed before the failure"
        );
        assert!(b.join("inside").is_dir(), "b untouched");
        assert_eq!(
            fs::read_dir(dir.path().join(TMP_DIR)).expect("ls").count(),
            0
        );
    }

    #[test]
    fn a_staged_file_is_in_place_only_once_committed_and_gone_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.tsv");
        fs::write(&a, b"old").expect("write");
        let tmp = dir.path().join(TMP_DIR);
        let mut staged = Staged::default();
        staged
            .add(&Replacement {
                path: a.clone(),
                contents: b"new".to_vec(),
            })
            .expect("stage");
        staged.flush().expect("flush");
        assert_eq!(fs::read(&a).expect("read"), b"old");
        assert_eq!(fs::read_dir(&tmp).expect("ls").count(), 1);
        drop(staged);
        assert_eq!(fs::read(&a).expect("read"), b"old");
        assert_eq!(fs::read_dir(&tmp).expect("ls").count(), 0);

        let mut staged = Staged::default();
        staged
            .add_in(&tmp, &a, |w| w.write_all(b"newer"))
            .expect("stage");
        // Not flushed by its writer: commit flushes it first.
        staged.commit().expect("commit");
        assert_eq!(fs::read(&a).expect("read"), b"newer");
        assert_eq!(fs::read_dir(&tmp).expect("ls").count(), 0);
    }

    #[test]
    fn write_atomic_builds_in_tmp_and_leaves_nothing_beside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("index.tsv");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("rewrite");
        replace_symlink_via_tmp(Path::new("V1-x"), &dir.path().join("current")).expect("link");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, [".tmp", "current", "index.tsv"]);
        assert_eq!(
            fs::read_dir(dir.path().join(".tmp")).expect("ls").count(),
            0
        );
        let t = temp_in(Path::new("/x"), Path::new("/y/index.tsv"));
        assert_eq!(
            temp_owner(t.file_name().expect("name")),
            Some(std::process::id())
        );
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn make_writable_opens_every_directory_and_follows_no_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o500)).expect("chmod");
        let root = dir.path().join("tree");
        let mut dirs = vec![root.clone()];
        for level in 0..50 {
            let below = dirs[level].join(format!("d{level}"));
            dirs.push(below);
        }
        let deepest = &dirs[dirs.len() - 1];
        fs::create_dir_all(deepest).expect("mkdir -p");
        fs::write(deepest.join("file"), b"x").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("link")).expect("symlink");
        for d in dirs.iter().rev() {
            fs::set_permissions(d, fs::Permissions::from_mode(0o500)).expect("chmod");
        }
        make_writable(&root);
        for d in &dirs {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&outside), 0o500, "the link was followed");
        remove_tree(&root).expect("remove");
        assert!(!root.exists());
    }
}
