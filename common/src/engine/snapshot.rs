//! Building a version (docs/design.md#building-a-version): from a set of changed paths (an event batch, or the diff
//! of a rescan) to a new complete version directory, renamed into place.
//!
//! Owns: the build algorithm and the order of the writes that publish a version.
//!
//! Theory of operation. The new version starts as the current one: a path that is neither
//! marked nor an ancestor of a marked path becomes one vault link (to its canonical holder),
//! so an unchanged subtree costs one symlink. Marked paths and their ancestors become real
//! directories whose children are listed on both sides (source and old version): new names
//! are copied, vanished names are dropped, unmarked common names are linked, marked common
//! names are compared (type, size, mtime, mode, owner, link target) and copied only when they
//! differ. A directory whose content may have been replaced wholesale (a `Content` or
//! `Delete` hint on a directory: moved over, recreated) is diffed in full below it. A
//! directory that turns out identical is collapsed back into a link. Work is proportional to
//! the marked paths and the sizes of their parent directories, not to the tree.
//!
//! Crash safety (I6): everything is built under `.partial/V{n}-{stamp}`; then, in order:
//! lookalike registry saved, `syncfs`, rename into `<job>/`, fsync of the job folder,
//! index.tsv rewritten, `current` replaced, journal appended. [`recover`] repairs whatever
//! a crash between those steps left behind.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, FileType, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::capture::exclude::Excludes;
use crate::engine::copy::{self, CopyError};
use crate::error::{Error, IoContext, Result};
use crate::format::baseline::Baseline;
use crate::format::index::{self, IndexRow, read_index_or_empty};
use crate::format::jobfile::JobFile;
use crate::format::journal::{Journal, JournalEvent};
use crate::format::time;
use crate::vault::fsutil;
use crate::vault::job::JobCtx;
use crate::vault::layout::VersionName;
use crate::vault::measure::{held_bytes, measure_tree};
use crate::vault::tree::{self, Entry, Lookalikes, MAX_LINK_DEPTH};

/// Entries copied so far by builds of this process (for a progress display).
pub static PROGRESS_ENTRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Bytes copied so far by builds of this process (for a progress display).
pub static PROGRESS_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What is known about a changed path before looking at the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Data may have changed (create, modify, move-to): a regular file is copied even when its
    /// size and mtime look unchanged; a directory is diffed in full below it.
    Content,
    /// Only attributes may have changed.
    Attrib,
    /// The path was deleted (or moved away); if it exists again it is compared in full.
    Delete,
}

/// What a version is built from.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Compare the whole source with the current version.
    Rescan,
    /// Only these paths (relative to the source, `.` for the root) changed.
    Paths(BTreeMap<PathBuf, Hint>),
}

/// Options of one build.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Build even when a rescan would delete more than `max_delete_ratio` of the files.
    pub force: bool,
    /// Compute the changes and report them, build nothing.
    pub dry_run: bool,
}

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The version made, if any (None: no difference, or a dry run).
    pub version: Option<VersionName>,
    /// Its index row.
    pub row: Option<IndexRow>,
    /// Entries copied or created.
    pub changed: u64,
    /// Paths found changed (dry run: what would be copied or deleted).
    pub changed_paths: Vec<PathBuf>,
    /// Entries skipped (unreadable, sockets).
    pub skipped: u64,
    /// Regular files taken while they kept changing.
    pub unstable: u64,
    /// Files copied with shared extents.
    pub reflinked: u64,
}

#[derive(Debug, Default)]
struct Node {
    hint: Option<Hint>,
    children: BTreeMap<OsString, Node>,
}

impl Node {
    fn insert(&mut self, rel: &Path, hint: Hint) {
        let mut node = self;
        for comp in rel.components() {
            if let std::path::Component::Normal(name) = comp {
                node = node.children.entry(name.to_owned()).or_default();
            }
        }
        node.hint = Some(match (node.hint, hint) {
            (Some(Hint::Content), Hint::Attrib) => Hint::Content,
            (_, h) => h,
        });
    }
}

/// Repairs what a crash left: removes leftover partial versions (journaled), adds a
/// complete version that was renamed into place but not yet indexed, points `current` at
/// the newest version, and drops lookalike records of versions that do not exist.
pub fn recover(ctx: &mut JobCtx) -> Result<()> {
    let partial = ctx.dir.partial();
    if let Ok(rd) = fs::read_dir(&partial) {
        for e in rd.flatten() {
            let p = e.path();
            fsutil::remove_tree(&p)?;
            ctx.journal.note(
                JournalEvent::Cleanup,
                b"",
                &format!(
                    "removed unfinished version .partial/{}",
                    e.file_name().to_string_lossy()
                ),
            );
        }
    }
    let on_disk = ctx.dir.versions_on_disk()?;
    let mut rows = read_index_or_empty(&ctx.dir)?;
    let known: HashSet<String> = rows.iter().map(|r| r.dir.clone()).collect();
    let last_n = rows.last().map(|r| r.version).unwrap_or(0);
    let mut changed = false;
    for v in &on_disk {
        if !known.contains(&v.dir)
            && v.n > last_n
            && ctx.file.state.retiring.as_deref() != Some(v.dir.as_str())
        {
            let lookalikes = Lookalikes::load(&ctx.dir.path)?;
            let (files, logical) = measure_tree(&ctx.dir.path, &v.dir, Path::new(""), &lookalikes)?;
            let held = held_bytes(&ctx.dir.path.join(&v.dir))?;
            let created = time::parse_stamp(v.dir.split_once('-').map(|x| x.1).unwrap_or(""))
                .map(time::rfc3339_millis)
                .unwrap_or_else(time::now_rfc3339);
            rows.push(IndexRow {
                version: v.n,
                dir: v.dir.clone(),
                created,
                files,
                changed: 0,
                held_bytes: held,
                logical_bytes: logical,
            });
            ctx.journal.note(
                JournalEvent::Cleanup,
                b"",
                &format!(
                    "indexed {} (complete, but not yet in index.tsv after a crash)",
                    v.dir
                ),
            );
            changed = true;
        }
    }
    if changed {
        index::write(&ctx.dir.index(), &rows)?;
    }
    if let Some(last) = rows.last()
        && ctx.dir.read_current().as_deref() != Some(last.dir.as_str())
        && ctx.dir.path.join(&last.dir).is_dir()
    {
        ctx.dir.set_current(&VersionName {
            n: last.version,
            dir: last.dir.clone(),
        })?;
    }
    let mut lookalikes = Lookalikes::load(&ctx.dir.path)?;
    let names: HashSet<String> = on_disk.iter().map(|v| v.dir.clone()).collect();
    if lookalikes.retain_versions(&names) {
        lookalikes.save(&ctx.dir.path)?;
    }
    Ok(())
}

/// Takes a version of the job's source. The caller holds the job lock and has checked
/// identities.
pub fn take(ctx: &mut JobCtx, trigger: Trigger, opts: Options) -> Result<Outcome> {
    recover(ctx)?;
    let rows = read_index_or_empty(&ctx.dir)?;
    let source = ctx.file.source.clone();
    let src_meta = fs::metadata(&source).ctx("cannot read source", &source)?;
    if !src_meta.is_dir() {
        return Err(Error::Usage(format!(
            "source {} is not a directory",
            crate::error::show(&source)
        )));
    }
    let excludes = Excludes::new(&ctx.file.settings.exclude).map_err(Error::Usage)?;
    let lookalikes = Lookalikes::load(&ctx.dir.path)?;
    let last = rows.last().cloned();
    if let Some(l) = &last
        && !ctx.dir.path.join(&l.dir).is_dir()
    {
        return Err(Error::Damaged(format!(
            "the newest version {} in index.tsv is missing from {} (run reverb-index --check)",
            l.dir,
            crate::error::show(&ctx.dir.path)
        )));
    }
    let n = last
        .as_ref()
        .map(|r| r.version)
        .unwrap_or(0)
        .max(ctx.dir.versions_on_disk()?.last().map(|v| v.n).unwrap_or(0))
        + 1;
    let now = SystemTime::now();
    let name = VersionName::new(n, now);
    let partial_root = ctx.dir.partial();
    let partial = partial_root.join(&name.dir);

    let mut b = Builder {
        job: ctx.dir.path.clone(),
        src_root: source.clone(),
        new_root: partial.clone(),
        new_name: name.dir.clone(),
        excludes,
        lookalikes,
        only_sync_attributes: ctx.file.settings.only_sync_attributes,
        baseline: if ctx.file.settings.keep_complete {
            None
        } else {
            Some(Baseline::load(&ctx.dir.path)?)
        },
        privileged: copy::privileged(),
        hardlinks: HashMap::new(),
        out: Outcome::default(),
        delta_files: 0,
        delta_logical: 0,
        held: 0,
        journal: &mut ctx.journal,
    };

    let Some(last) = last else {
        // The first version.
        return finish_build(b, rows, name, partial_root, None, None, opts, false);
    };
    let old_dir = last.dir.clone();
    let (marks, diffed) = match trigger {
        Trigger::Rescan => {
            // One read-only pass finds every difference; the build then touches only those.
            let mut diff = Node {
                hint: Some(Hint::Attrib),
                children: BTreeMap::new(),
            };
            let deleted = b.diff_dir(Path::new(""), Some(&old_dir), &mut diff)?;
            if diff.children.is_empty() && !b.root_differs(&old_dir)? {
                // Nothing differs: no version, and nothing built only to be thrown away.
                return Ok(std::mem::take(&mut b.out));
            }
            guard_deletions(&ctx.file, last.files, deleted, opts.force)?;
            (diff, true)
        }
        Trigger::Paths(paths) => {
            let mut root = Node::default();
            for (path, hint) in &paths {
                root.insert(path, *hint);
            }
            (root, false)
        }
    };
    finish_build(
        b,
        rows,
        name,
        partial_root,
        Some(marks),
        Some(old_dir),
        opts,
        diffed,
    )
}

/// The deletion guard (docs/cli.md): a rescan that deletes more than `max_delete_ratio` of the
/// current version's files is more often an unmounted disk than a wish.
fn guard_deletions(file: &JobFile, files: u64, deleted: u64, force: bool) -> Result<()> {
    let ratio = if files == 0 {
        0.0
    } else {
        deleted as f64 / files as f64
    };
    let limit = file.settings.max_delete_ratio;
    if ratio > limit && !force {
        return Err(Error::Refused(format!(
            "the rescan would delete {deleted} of {files} files ({:.0}%, more than max_delete_ratio {limit}): \
             is the source's disk mounted? Use --force if this is intended",
            ratio * 100.0
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn finish_build(
    mut b: Builder<'_>,
    mut rows: Vec<IndexRow>,
    name: VersionName,
    partial_root: PathBuf,
    node: Option<Node>,
    old: Option<String>,
    opts: Options,
    diffed: bool,
) -> Result<Outcome> {
    let job = b.job.clone();
    if opts.dry_run {
        let mut out = std::mem::take(&mut b.out);
        if let (Some(node), Some(_)) = (&node, &old) {
            collect_marked(node, PathBuf::new(), &mut out.changed_paths);
        } else {
            out.changed_paths.push(PathBuf::from("."));
        }
        return Ok(out);
    }
    fs::create_dir_all(&partial_root).ctx("cannot create", &partial_root)?;
    let partial = partial_root.join(&name.dir);
    let result = (|| -> Result<bool> {
        copy::make_dir(&partial).ctx("cannot create version directory", &partial)?;
        let differs = match (&node, &old) {
            (Some(node), Some(old_dir)) => {
                let inner = b.build_dir(Path::new(""), node, Some(old_dir), diffed)?;
                inner || b.root_differs(old_dir)?
            }
            _ => {
                b.fill_first()?;
                true
            }
        };
        let root_meta = fs::metadata(&b.src_root).ctx("cannot read source", &b.src_root)?;
        copy::finish_dir(&b.src_root, &partial, &root_meta)
            .ctx("cannot set attributes of", &partial)?;
        Ok(differs)
    })();
    let differs = match result {
        Ok(d) => d,
        Err(e) => {
            let _ = fsutil::remove_tree(&partial);
            return Err(e);
        }
    };
    if !differs {
        fsutil::remove_tree(&partial)?;
        return Ok(std::mem::take(&mut b.out));
    }
    b.held += copy::disk_usage(&fs::symlink_metadata(&partial).ctx("cannot inspect", &partial)?);
    let (files, logical) = match rows.last() {
        Some(prev) if old.is_some() => (
            (prev.files as i64 + b.delta_files).max(0) as u64,
            (prev.logical_bytes as i64 + b.delta_logical).max(0) as u64,
        ),
        _ => (b.delta_files.max(0) as u64, b.delta_logical.max(0) as u64),
    };
    let row = IndexRow {
        version: name.n,
        dir: name.dir.clone(),
        created: time::now_rfc3339(),
        files,
        changed: b.out.changed,
        held_bytes: b.held,
        logical_bytes: logical,
    };
    // Publish, in crash-safe order.
    b.lookalikes.save(&job)?;
    crate::fault::step();
    make_durable(&partial, &b.out.changed_paths)?;
    let final_path = job.join(&name.dir);
    fs::rename(&partial, &final_path).ctx("cannot rename version into place", &final_path)?;
    fsutil::fsync_dir(&job)?;
    crate::fault::step();
    rows.push(row.clone());
    index::write(&job.join("index.tsv"), &rows)?;
    crate::fault::step();
    crate::vault::layout::set_current(&job, &name)?;
    crate::fault::step();
    let mut out = std::mem::take(&mut b.out);
    b.journal.note(
        JournalEvent::Snapshot,
        b"",
        &format!(
            "{} changed={} files={} held_bytes={} reflinked={} skipped={}",
            name.dir, out.changed, files, row.held_bytes, out.reflinked, out.skipped
        ),
    );
    out.version = Some(name);
    out.row = Some(row);
    Ok(out)
}

fn collect_marked(node: &Node, at: PathBuf, out: &mut Vec<PathBuf>) {
    if node.hint.is_some() && node.children.is_empty() {
        out.push(if at.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            at.clone()
        });
    }
    for (name, child) in &node.children {
        collect_marked(child, at.join(name), out);
    }
}

/// Makes a built version durable before it is renamed into place (I6 across power loss):
/// a small version fsyncs what it created (and the directories holding it); a large one
/// flushes its whole filesystem once with `syncfs`, which is cheaper than thousands of
/// fsyncs but also waits for everybody else's dirty data.
fn make_durable(root: &Path, created: &[PathBuf]) -> Result<()> {
    const FSYNC_AT_MOST: usize = 256;
    if created.len() > FSYNC_AT_MOST {
        return syncfs(root);
    }
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for rel in created {
        let abs = root.join(rel);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => Some(m),
            // A deletion: what changed is its parent directory.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).ctx("cannot inspect", &abs),
        };
        let Some(meta) = meta else {
            if let Some(parent) = abs.parent() {
                dirs.insert(parent.to_path_buf());
            }
            continue;
        };
        if meta.is_file() {
            fs::File::open(&abs)
                .and_then(|f| f.sync_all())
                .ctx("cannot fsync", &abs)?;
        } else if meta.is_dir() {
            dirs.insert(abs.clone());
        }
        let mut up = abs.parent();
        while let Some(d) = up {
            if !d.starts_with(root) || !dirs.insert(d.to_path_buf()) {
                break;
            }
            up = d.parent();
        }
    }
    dirs.insert(root.to_path_buf());
    for d in dirs {
        fsutil::fsync_dir(&d)?;
    }
    Ok(())
}

fn syncfs(path: &Path) -> Result<()> {
    let f = fs::File::open(path).ctx("cannot open", path)?;
    nix::unistd::syncfs(&f)
        .map_err(std::io::Error::from)
        .ctx("cannot sync filesystem of", path)
}

struct Builder<'j> {
    job: PathBuf,
    src_root: PathBuf,
    new_root: PathBuf,
    new_name: String,
    excludes: Excludes,
    lookalikes: Lookalikes,
    only_sync_attributes: bool,
    privileged: bool,
    /// keep_complete = false: the source as it was when the job started.
    baseline: Option<Baseline>,
    hardlinks: HashMap<(u64, u64), PathBuf>,
    out: Outcome,
    delta_files: i64,
    delta_logical: i64,
    held: u64,
    journal: &'j mut Journal,
}

/// One side's view of a directory's children.
fn list_source(
    dir: &Path,
    rel: &Path,
    excludes: &Excludes,
) -> std::io::Result<BTreeMap<OsString, FileType>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        let name = e.file_name();
        if !excludes.is_empty() && excludes.is_excluded(&rel.join(&name), ft.is_dir()) {
            continue;
        }
        out.insert(name, ft);
    }
    Ok(out)
}

/// How an entry absent from the old version relates to the baseline.
enum BaselineState {
    /// Not in the baseline or different: new or changed since the job started.
    Changed,
    /// A file (or link, special) unchanged since the job started: not in versions.
    Unchanged,
    /// A directory that existed when the job started: look inside.
    UnchangedDir,
}

/// The source directory's entries with their `lstat` (taken relative to the listing's fd).
/// An entry that vanishes between the listing and its stat is left out.
fn list_source_meta(
    dir: &Path,
    rel: &Path,
    excludes: &Excludes,
) -> std::io::Result<BTreeMap<OsString, Metadata>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let meta = match e.metadata() {
            Ok(m) => m,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        let name = e.file_name();
        if !excludes.is_empty() && excludes.is_excluded(&rel.join(&name), meta.is_dir()) {
            continue;
        }
        out.insert(name, meta);
    }
    Ok(out)
}

impl Builder<'_> {
    /// Do the source root's own attributes differ from the old version's root?
    fn root_differs(&self, old_dir: &str) -> Result<bool> {
        let sm = fs::metadata(&self.src_root).ctx("cannot read source", &self.src_root)?;
        let op = self.job.join(old_dir);
        let om = fs::symlink_metadata(&op).ctx("cannot inspect", &op)?;
        Ok(self.compare(&sm, &om, &self.src_root, &op).0)
    }

    fn baseline_state(&self, rel: &Path) -> BaselineState {
        let Some(baseline) = &self.baseline else {
            return BaselineState::Changed;
        };
        let Some(entry) = baseline.get(rel) else {
            return BaselineState::Changed;
        };
        let abs = self.src(rel);
        let Ok(meta) = fs::symlink_metadata(&abs) else {
            return BaselineState::Changed;
        };
        if !entry.unchanged(&abs, &meta, self.privileged) {
            return BaselineState::Changed;
        }
        if meta.is_dir() {
            BaselineState::UnchangedDir
        } else {
            BaselineState::Unchanged
        }
    }

    fn src(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.src_root.clone()
        } else {
            self.src_root.join(rel)
        }
    }

    fn vault_path(&self, phys: &str, rel: &Path) -> PathBuf {
        let base = self.job.join(phys);
        if rel.as_os_str().is_empty() {
            base
        } else {
            base.join(rel)
        }
    }

    fn new_path(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.new_root.clone()
        } else {
            self.new_root.join(rel)
        }
    }

    /// [`Builder::list_old`] with the metadata of the real entries (vault links: `None`,
    /// their holder is looked at by path).
    #[allow(clippy::type_complexity)]
    fn list_old_meta(
        &self,
        phys: &str,
        rel: &Path,
    ) -> Result<BTreeMap<OsString, (Entry, String, Option<Metadata>)>> {
        let dir = self.vault_path(phys, rel);
        let mut out = BTreeMap::new();
        for e in fs::read_dir(&dir).ctx("cannot list version directory", &dir)? {
            let e = e.ctx("cannot list version directory", &dir)?;
            let ft = e.file_type().ctx("cannot inspect", &e.path())?;
            let child = rel.join(e.file_name());
            let entry = tree::classify(&e.path(), &child, phys, ft, &self.lookalikes)?;
            let (holder, meta) = match &entry {
                Entry::VaultLink { holder } => (holder.clone(), None),
                Entry::Real(_) => (
                    phys.to_owned(),
                    Some(e.metadata().ctx("cannot inspect", &e.path())?),
                ),
            };
            out.insert(e.file_name(), (entry, holder, meta));
        }
        Ok(out)
    }

    fn list_old(&self, phys: &str, rel: &Path) -> Result<BTreeMap<OsString, (Entry, String)>> {
        let dir = self.vault_path(phys, rel);
        let mut out = BTreeMap::new();
        for e in fs::read_dir(&dir).ctx("cannot list version directory", &dir)? {
            let e = e.ctx("cannot list version directory", &dir)?;
            let ft = e.file_type().ctx("cannot inspect", &e.path())?;
            let child = rel.join(e.file_name());
            let entry = tree::classify(&e.path(), &child, phys, ft, &self.lookalikes)?;
            let holder = match &entry {
                Entry::VaultLink { holder } => holder.clone(),
                Entry::Real(_) => phys.to_owned(),
            };
            out.insert(e.file_name(), (entry, holder));
        }
        Ok(out)
    }

    /// Is the old entry (physically at `holder`/`rel`) different from the source's?
    /// Returns (differs, attribute_only).
    fn compare(
        &self,
        src_meta: &Metadata,
        old_meta: &Metadata,
        src: &Path,
        old: &Path,
    ) -> (bool, bool) {
        let (sf, of) = (src_meta.file_type(), old_meta.file_type());
        let same_type = (sf.is_file() && of.is_file())
            || (sf.is_dir() && of.is_dir())
            || (sf.is_symlink() && of.is_symlink())
            || (sf.is_fifo() && of.is_fifo())
            || (sf.is_char_device() && of.is_char_device())
            || (sf.is_block_device() && of.is_block_device())
            || (sf.is_socket() && of.is_socket());
        if !same_type {
            return (true, false);
        }
        let owner_differs = self.privileged
            && (src_meta.uid() != old_meta.uid() || src_meta.gid() != old_meta.gid());
        let mode_differs =
            !sf.is_symlink() && (src_meta.mode() & 0o7777) != (old_meta.mode() & 0o7777);
        let mtime_differs =
            src_meta.mtime() != old_meta.mtime() || src_meta.mtime_nsec() != old_meta.mtime_nsec();
        if sf.is_symlink() {
            let differs = fs::read_link(src).ok() != fs::read_link(old).ok()
                || owner_differs
                || mtime_differs;
            return (differs, false);
        }
        if sf.is_file() {
            if src_meta.len() != old_meta.len() || mtime_differs {
                return (true, false);
            }
            let attr = owner_differs || mode_differs;
            return (attr, attr);
        }
        if sf.is_dir() {
            let attr = owner_differs || mode_differs || mtime_differs;
            return (attr, attr);
        }
        let differs =
            src_meta.rdev() != old_meta.rdev() || owner_differs || mode_differs || mtime_differs;
        (differs, false)
    }

    /// Read-only full comparison of source dir `rel` with old physical dir `phys`/`rel`;
    /// adds marks to `node` for every difference below. Returns the number of regular
    /// files that would be deleted.
    fn diff_dir(&mut self, rel: &Path, phys: Option<&str>, node: &mut Node) -> Result<u64> {
        let src_dir = self.src(rel);
        // Both sides are listed with their entries' metadata, read relative to the open
        // directory (fstatat on the listing's fd): no path walk per entry.
        let src = match list_source_meta(&src_dir, rel, &self.excludes) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                self.journal.note(
                    JournalEvent::Skipped,
                    rel.as_os_str().as_bytes(),
                    &format!("cannot list directory: {e}"),
                );
                return Ok(0);
            }
            Err(e) => return Err(e).ctx("cannot list source directory", &src_dir),
        };
        let old = match phys {
            Some(phys) => self.list_old_meta(phys, rel)?,
            None => BTreeMap::new(),
        };
        let mut deleted = 0u64;
        let names: BTreeSet<&OsString> = src.keys().chain(old.keys()).collect();
        for name in names {
            let child = rel.join(name);
            match (src.get(name), old.get(name)) {
                (Some(_), None) => {
                    node.children.entry(name.clone()).or_default().hint = Some(Hint::Content)
                }
                (None, Some((_, holder, _))) => {
                    node.children.entry(name.clone()).or_default().hint = Some(Hint::Delete);
                    deleted += measure_tree(&self.job, holder, &child, &self.lookalikes)?.0;
                }
                (Some(sm), Some((_, holder, listed))) => {
                    let sp = self.src(&child);
                    let op = self.vault_path(holder, &child);
                    let om = match listed {
                        Some(m) => m.clone(),
                        None => fs::symlink_metadata(&op).ctx("cannot inspect", &op)?,
                    };
                    let (differs, attr_only) = self.compare(sm, &om, &sp, &op);
                    if sm.is_dir() && om.is_dir() {
                        let mut sub = Node::default();
                        deleted += self.diff_dir(&child, Some(holder), &mut sub)?;
                        if differs || !sub.children.is_empty() {
                            sub.hint = if differs { Some(Hint::Attrib) } else { None };
                            node.children.insert(name.clone(), sub);
                        }
                    } else if differs {
                        let h = if attr_only {
                            Hint::Attrib
                        } else {
                            Hint::Content
                        };
                        node.children.entry(name.clone()).or_default().hint = Some(h);
                    }
                }
                (None, None) => {}
            }
        }
        Ok(deleted)
    }

    /// Builds the real directory `rel` of the new version (already created) from the old
    /// physical directory `phys`/`rel` and the marks in `node`. Returns whether anything
    /// in it differs from the old version.
    fn build_dir(
        &mut self,
        rel: &Path,
        node: &Node,
        phys: Option<&str>,
        diffed: bool,
    ) -> Result<bool> {
        let replaced;
        let mut node = node;
        let mut diffed = diffed;
        if !diffed
            && phys.is_some()
            && matches!(node.hint, Some(Hint::Content) | Some(Hint::Delete))
        {
            // The directory may have been replaced wholesale: compare everything below.
            let mut full = Node {
                hint: node.hint,
                children: BTreeMap::new(),
            };
            self.diff_dir(rel, phys, &mut full)?;
            merge(&mut full, node);
            replaced = full;
            node = &replaced;
            diffed = true;
        }
        let src_dir = self.src(rel);
        let src = match list_source(&src_dir, rel, &self.excludes) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                self.journal.note(
                    JournalEvent::Skipped,
                    rel.as_os_str().as_bytes(),
                    &format!("cannot list directory: {e}"),
                );
                // Keep the previous contents: every old child stays linked.
                let old = match phys {
                    Some(phys) => self.list_old(phys, rel)?,
                    None => BTreeMap::new(),
                };
                for (name, (entry, holder)) in old {
                    self.keep_old(&rel.join(&name), &entry, &holder)?;
                }
                return Ok(false);
            }
            Err(e) => return Err(e).ctx("cannot list source directory", &src_dir),
        };
        let old = match phys {
            Some(phys) => self.list_old(phys, rel)?,
            None => BTreeMap::new(),
        };
        let mut differs = false;
        let names: BTreeSet<&OsString> = src.keys().chain(old.keys()).collect();
        for name in names {
            let child = rel.join(name);
            let child_node = node.children.get(name);
            match (src.get(name), old.get(name)) {
                (None, None) => {}
                (None, Some((_, holder))) => {
                    self.forget_old(&child, holder)?;
                    self.out.changed_paths.push(child.clone());
                    differs = true;
                }
                (Some(_), None) => match self.baseline_state(&child) {
                    BaselineState::Changed => {
                        if self.copy_new(&child)? {
                            differs = true;
                        }
                    }
                    BaselineState::Unchanged => {}
                    BaselineState::UnchangedDir => {
                        // Present since the job started: real only if something below changed.
                        let empty = Node::default();
                        let cn = child_node.unwrap_or(&empty);
                        if child_node.is_none() && diffed {
                            continue;
                        }
                        let np = self.new_path(&child);
                        copy::make_dir(&np).ctx("cannot create directory", &np)?;
                        if self.build_dir(&child, cn, None, diffed)? {
                            let sm = fs::symlink_metadata(self.src(&child))
                                .ctx("cannot inspect", &self.src(&child))?;
                            self.finish_real_dir(&child, &sm)?;
                            differs = true;
                        } else {
                            fsutil::remove_tree(&np)?;
                        }
                    }
                },
                (Some(_), Some((entry, holder))) => {
                    let Some(cn) = child_node else {
                        self.keep_old(&child, entry, holder)?;
                        continue;
                    };
                    if self.update(&child, cn, entry, holder, diffed)? {
                        differs = true;
                    }
                }
            }
        }
        Ok(differs)
    }

    /// A common name with marks: compare and copy what differs. Returns whether it differs.
    fn update(
        &mut self,
        rel: &Path,
        node: &Node,
        entry: &Entry,
        holder: &str,
        diffed: bool,
    ) -> Result<bool> {
        let sp = self.src(rel);
        let op = self.vault_path(holder, rel);
        let sm = match fs::symlink_metadata(&sp) {
            Ok(m) => m,
            Err(_) => {
                // Vanished since the listing: deleted.
                self.forget_old(rel, holder)?;
                return Ok(true);
            }
        };
        let om = fs::symlink_metadata(&op).ctx("cannot inspect", &op)?;
        let (attr_differs, attr_only) = self.compare(&sm, &om, &sp, &op);
        if sm.is_dir() && om.is_dir() {
            let np = self.new_path(rel);
            copy::make_dir(&np).ctx("cannot create directory", &np)?;
            let inner = self.build_dir(rel, node, Some(holder), diffed)?;
            if !inner && !attr_differs {
                // Nothing changed after all: collapse back into one link.
                fsutil::remove_tree(&np)?;
                self.keep_old(rel, entry, holder)?;
                return Ok(false);
            }
            self.finish_real_dir(rel, &sm)?;
            return Ok(true);
        }
        let force_copy = node.hint == Some(Hint::Content) && sm.is_file();
        if !attr_differs && !force_copy {
            self.keep_old(rel, entry, holder)?;
            return Ok(false);
        }
        if attr_only && self.only_sync_attributes && sm.is_file() && !force_copy {
            // Same data, new attributes: reuse the vault's data.
            match self.copy_attr_only(rel, &op, &sm) {
                Ok(()) => return Ok(true),
                Err(e) if e.is_enospc() => return Err(e),
                Err(_) => {}
            }
        }
        self.forget_old(rel, holder)?;
        if !self.copy_new(rel)? {
            // Could not copy (unreadable): keep the previous data.
            self.unforget_old(rel, holder)?;
            self.keep_old(rel, entry, holder)?;
            return Ok(false);
        }
        Ok(true)
    }

    fn finish_real_dir(&mut self, rel: &Path, sm: &Metadata) -> Result<()> {
        let np = self.new_path(rel);
        if self.out.changed_paths.last().is_none_or(|p| p != rel) {
            self.out.changed_paths.push(rel.to_path_buf());
        }
        copy::finish_dir(&self.src(rel), &np, sm).ctx("cannot set attributes of", &np)?;
        self.held += copy::disk_usage(&fs::symlink_metadata(&np).ctx("cannot inspect", &np)?);
        self.out.changed += 1;
        Ok(())
    }

    fn copy_attr_only(&mut self, rel: &Path, vault_file: &Path, sm: &Metadata) -> Result<()> {
        let np = self.new_path(rel);
        let input = fs::File::open(vault_file).ctx("cannot open", vault_file)?;
        let output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&np)
            .ctx("cannot create", &np)?;
        let path = copy::copy_data(&input, &output, sm.len()).ctx("cannot copy", &np)?;
        drop(output);
        let src = self.src(rel);
        copy::copy_xattrs(&src, &np).ctx("cannot copy xattrs to", &np)?;
        copy::apply_path_meta(&np, sm).ctx("cannot set attributes of", &np)?;
        if path == copy::DataPath::Reflink {
            self.out.reflinked += 1;
        }
        self.held += copy::disk_usage(&fs::symlink_metadata(&np).ctx("cannot inspect", &np)?);
        self.out.changed += 1;
        self.out.changed_paths.push(rel.to_path_buf());
        Ok(())
    }

    /// Makes `rel` in the new version stand for the old entry unchanged.
    fn keep_old(&mut self, rel: &Path, entry: &Entry, holder: &str) -> Result<()> {
        let np = self.new_path(rel);
        let op = self.vault_path(holder, rel);
        let is_source_link = matches!(entry, Entry::Real(ft) if ft.is_symlink());
        if is_source_link {
            // Source links are recreated, never vault-linked (so that a relative target is
            // read from the version it belongs to).
            copy::copy_symlink(&op, &np).map_err(|e| copy_err(e, &np))?;
            self.note_lookalike(rel, &np)?;
            self.held += copy::disk_usage(&fs::symlink_metadata(&np).ctx("cannot inspect", &np)?);
            return Ok(());
        }
        if tree::depth(rel) > MAX_LINK_DEPTH {
            // Too deep to link without risking ELOOP: materialise from the vault.
            return self.materialise(rel, holder);
        }
        let text = tree::link_text(rel, holder);
        std::os::unix::fs::symlink(&text, &np).ctx("cannot create vault link", &np)?;
        // A long link text takes a block: count it, as held_bytes() (du) does.
        self.held += copy::disk_usage(&fs::symlink_metadata(&np).ctx("cannot inspect", &np)?);
        Ok(())
    }

    fn materialise(&mut self, rel: &Path, holder: &str) -> Result<()> {
        let op = self.vault_path(holder, rel);
        let np = self.new_path(rel);
        let om = fs::symlink_metadata(&op).ctx("cannot inspect", &op)?;
        if om.is_dir() {
            copy::make_dir(&np).ctx("cannot create directory", &np)?;
            for (name, (entry, h)) in self.list_old(holder, rel)? {
                let child = rel.join(&name);
                match entry {
                    Entry::VaultLink { .. } => self.materialise(&child, &h)?,
                    Entry::Real(ft) if ft.is_symlink() => {
                        copy::copy_symlink(&self.vault_path(&h, &child), &self.new_path(&child))
                            .map_err(|e| copy_err(e, &np))?;
                    }
                    Entry::Real(_) => self.materialise(&child, &h)?,
                }
            }
            copy::finish_dir(&op, &np, &om).ctx("cannot set attributes of", &np)?;
        } else if om.is_file() {
            copy::copy_file(&op, &np).map_err(|e| copy_err(e, &np))?;
        } else if om.file_type().is_symlink() {
            copy::copy_symlink(&op, &np).map_err(|e| copy_err(e, &np))?;
        } else {
            copy::copy_special(&op, &np, &om).map_err(|e| copy_err(e, &np))?;
        }
        self.held += copy::disk_usage(&fs::symlink_metadata(&np).ctx("cannot inspect", &np)?);
        Ok(())
    }

    fn note_lookalike(&mut self, rel: &Path, np: &Path) -> Result<()> {
        let text = fs::read_link(np).ctx("cannot read link", np)?;
        if tree::parse_link_text(rel, &text).is_some() {
            let name = self.new_name.clone();
            self.lookalikes.insert(&name, rel);
        }
        Ok(())
    }

    /// The old entry at `rel` is not carried forward: subtract what it counted.
    fn forget_old(&mut self, rel: &Path, holder: &str) -> Result<()> {
        let (files, bytes) = measure_tree(&self.job, holder, rel, &self.lookalikes)?;
        self.delta_files -= files as i64;
        self.delta_logical -= bytes as i64;
        Ok(())
    }

    fn unforget_old(&mut self, rel: &Path, holder: &str) -> Result<()> {
        let (files, bytes) = measure_tree(&self.job, holder, rel, &self.lookalikes)?;
        self.delta_files += files as i64;
        self.delta_logical += bytes as i64;
        Ok(())
    }

    /// Copies `rel` (any type, a directory recursively) from the source into the new
    /// version. Returns false when nothing was copied (vanished, unreadable, socket).
    fn copy_new(&mut self, rel: &Path) -> Result<bool> {
        let sp = self.src(rel);
        let np = self.new_path(rel);
        let sm = match fs::symlink_metadata(&sp) {
            Ok(m) => m,
            Err(_) => return Ok(false),
        };
        let ft = sm.file_type();
        if ft.is_dir() {
            if let Err(e) = copy::make_dir(&np) {
                return Err(e).ctx("cannot create directory", &np);
            }
            let children = match list_source(&sp, rel, &self.excludes) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fsutil::remove_tree(&np)?;
                    return Ok(false);
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    self.journal.note(
                        JournalEvent::Skipped,
                        rel.as_os_str().as_bytes(),
                        &format!("cannot list directory: {e}"),
                    );
                    fsutil::remove_tree(&np)?;
                    self.out.skipped += 1;
                    return Ok(false);
                }
                Err(e) => return Err(e).ctx("cannot list source directory", &sp),
            };
            for name in children.keys() {
                self.copy_new(&rel.join(name))?;
            }
            self.finish_real_dir(rel, &sm)?;
            return Ok(true);
        }
        if ft.is_file()
            && sm.nlink() > 1
            && let Some(first) = self.hardlinks.get(&(sm.dev(), sm.ino()))
        {
            fs::hard_link(first, &np).ctx("cannot create hard link", &np)?;
            self.delta_files += 1;
            self.delta_logical += sm.len() as i64;
            self.out.changed += 1;
            return Ok(true);
        }
        let result = if ft.is_file() {
            copy::copy_file(&sp, &np).map(|c| {
                if c.unstable {
                    self.journal.note(
                        JournalEvent::ChangedDuringCopy,
                        rel.as_os_str().as_bytes(),
                        &format!("taken as is after {} retries", copy::RETRIES),
                    );
                    self.out.unstable += 1;
                }
                if c.data == copy::DataPath::Reflink {
                    self.out.reflinked += 1;
                }
            })
        } else if ft.is_symlink() {
            copy::copy_symlink(&sp, &np)
        } else {
            copy::copy_special(&sp, &np, &sm)
        };
        match result {
            Ok(()) => {}
            Err(CopyError::Vanished) => {
                let _ = fs::remove_file(&np);
                return Ok(false);
            }
            Err(e) if e.is_enospc() => {
                return Err(copy_err(e, &np));
            }
            Err(e) => {
                let _ = fs::remove_file(&np);
                let why = match &e {
                    CopyError::Socket => "is a socket".to_owned(),
                    other => other.to_string(),
                };
                self.journal
                    .note(JournalEvent::Skipped, rel.as_os_str().as_bytes(), &why);
                self.out.skipped += 1;
                return Ok(false);
            }
        }
        if ft.is_symlink() {
            self.note_lookalike(rel, &np)?;
        }
        let nm = fs::symlink_metadata(&np).ctx("cannot inspect", &np)?;
        if ft.is_file() {
            self.delta_files += 1;
            self.delta_logical += nm.len() as i64;
            if sm.nlink() > 1 {
                self.hardlinks.insert((sm.dev(), sm.ino()), np.clone());
            }
        }
        self.held += copy::disk_usage(&nm);
        self.out.changed += 1;
        self.out.changed_paths.push(rel.to_path_buf());
        PROGRESS_ENTRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PROGRESS_BYTES.fetch_add(nm.len(), std::sync::atomic::Ordering::Relaxed);
        crate::fault::step();
        Ok(true)
    }

    /// The first version: a complete copy of the source.
    fn fill_first(&mut self) -> Result<()> {
        if self.baseline.is_some() {
            // A history of changes, not a full backup: the first version holds nothing; the
            // baseline remembers what "unchanged since the job started" means.
            let baseline = Baseline::record(&self.src_root, &self.excludes)?;
            baseline.save(&self.job)?;
            self.out.changed += 1;
            return Ok(());
        }
        let children = list_source(&self.src_root, Path::new(""), &self.excludes)
            .ctx("cannot list source", &self.src_root)?;
        for name in children.keys() {
            self.copy_new(Path::new(name))?;
        }
        self.out.changed += 1;
        Ok(())
    }
}

fn merge(into: &mut Node, from: &Node) {
    for (name, child) in &from.children {
        let slot = into.children.entry(name.clone()).or_default();
        if let Some(h) = child.hint {
            slot.hint = Some(match (slot.hint, h) {
                (Some(Hint::Content), Hint::Attrib) => Hint::Content,
                (_, h) => h,
            });
        }
        merge(slot, child);
    }
}

fn copy_err(e: CopyError, path: &Path) -> Error {
    match e {
        CopyError::Io(source) => Error::Io {
            what: "cannot copy to",
            path: path.to_path_buf(),
            source,
        },
        CopyError::Socket => Error::Invalid(format!("{} is a socket", crate::error::show(path))),
        CopyError::Vanished => Error::Invalid(format!("{} vanished", crate::error::show(path))),
    }
}
