//! Finishing a build: the new version built under `.partial/`, then published in the one
//! crash-safe order (docs/format.md#invariants, I6), or thrown away when nothing differs.
//!
//! Invariants: the publishing writes happen in exactly this order, each durable before the
//! next: the lookalike, climbing and hard-link registries written under temp names
//! ([`Staged`], their writeback started); every real entry of the version made durable
//! (found by walking it, fsyncs, or one `syncfs` for a large version), and only then its
//! `held_bytes` measured (I7); its checksums file, its completion record
//! ([`completion_record`]) and the new index.tsv written under temp names (or, checksums
//! off, a lost build's checksums file of the same number removed); the registries, the
//! checksums file and the completion record flushed and renamed into place together, their
//! folders flushed (each registry is old or new after a crash, and any mix describes the
//! old version the same; a completion record without its version is removed by recovery);
//! rename into `<job>/` and fsync of the job folder; index.tsv flushed and renamed into
//! place; `current` replaced; journal appended (the completion record removed after the
//! index).
//!
//! Each file is written, and its writeback started, well before its own flush, and the
//! tree's files all before the first of theirs: where a filesystem commits metadata in one
//! journal (ext4, XFS) the first flush then commits the blocks of all of them, and the
//! later flushes find little left (about six commits for a small version, against about
//! twenty when each file was written and flushed on its own). Nothing depends on that:
//! every ordering above is an fsync of its own. A failure before the rename removes the
//! partial version, its checksums file and the temp files; [`crate::engine::recover`]
//! repairs a crash after it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::build_report::Outcome;
use crate::engine::build_state::Builder;
use crate::engine::copy;
use crate::engine::marks::MarkTree;
use crate::error::{Error, IoContext, Result};
use crate::format::checksums;
use crate::format::index::{self, IndexRow};
use crate::format::journal::JournalEvent;
use crate::format::relpath::RelPath;
use crate::format::time;
use crate::fsutil::{self, Staged};
use crate::vault::layout::{JobDir, VersionName};
use crate::vault::measure;

/// The version about to be made.
pub(crate) struct NewVersion {
    pub dir: JobDir,
    /// index.tsv as it is.
    pub rows: Vec<IndexRow>,
    pub name: VersionName,
}

/// The version a new one is built from, and how.
pub(crate) struct FromVersion {
    pub old_dir: String,
    pub marks: MarkTree,
    /// The marks hold every difference already (a rescan).
    pub diffed: bool,
}

/// Builds the new version (the first when `from` is `None`) and publishes it if it
/// differs; a dry run only reports the marked paths.
pub(crate) fn finish(
    mut b: Builder<'_>,
    new: NewVersion,
    from: Option<FromVersion>,
    dry_run: bool,
) -> Result<Outcome> {
    if dry_run {
        let mut out = std::mem::take(&mut b.out);
        out.changed_paths = match from {
            Some(from) => from.marks.leaves(),
            None => vec![RelPath::root()],
        };
        return Ok(out);
    }
    let partial = new.dir.partial().join(&new.name.dir);
    let builds_on_old = from.is_some();
    if !build_partial(&mut b, &partial, from)? {
        fsutil::remove_tree(&partial)?;
        return Ok(std::mem::take(&mut b.out));
    }
    let row = match index_row(&b, &new, builds_on_old) {
        Ok(row) => row,
        Err(e) => {
            fsutil::remove_tree(&partial)?;
            return Err(e);
        }
    };
    publish(&mut b, new, &partial, row)
}

/// Builds the version under `.partial/`; returns whether it differs from the old one. On
/// an error the partial version is removed.
fn build_partial(b: &mut Builder<'_>, partial: &Path, from: Option<FromVersion>) -> Result<bool> {
    if let Some(partial_root) = partial.parent() {
        fsutil::create_metadata_dir(partial_root)?;
    }
    let result = (|| -> Result<bool> {
        copy::make_dir(partial).ctx("cannot create version directory", partial)?;
        let differs = match from {
            Some(from) => {
                let inner = b.build_tree(from.marks, &from.old_dir, from.diffed)?;
                inner || b.root_differs(&from.old_dir)?
            }
            None => {
                b.fill_first()?;
                true
            }
        };
        let shown = b.source.shown().to_path_buf();
        let root = b
            .src_dir(&RelPath::root())
            .ctx("cannot read source", &shown)?;
        let root_meta = fs::metadata(&*root).ctx("cannot read source", &shown)?;
        copy::finish_dir(&root, partial, &root_meta, b.fidelity)
            .ctx("cannot set attributes of", partial)?;
        Ok(differs)
    })();
    if result.is_err() {
        let _ = fsutil::remove_tree(partial);
    }
    result
}

/// The new version's index row: the old counts moved by what the build changed;
/// `held_bytes` is measured by [`publish`] once the version is on disk. A count that would
/// fall below zero (or overflow) means index.tsv's counts of the old version disagree with
/// its tree: [`Error::Damaged`], not a count made up.
fn index_row(b: &Builder<'_>, new: &NewVersion, builds_on_old: bool) -> Result<IndexRow> {
    let prev = new.rows.last().filter(|_| builds_on_old);
    let moved = |what: &str, old: u64, delta: i64| {
        old.checked_add_signed(delta).ok_or_else(|| {
            let from = match prev {
                Some(p) => format!("{}'s {old} in index.tsv", p.dir),
                None => format!("{old} (a first version)"),
            };
            Error::Damaged(format!(
                "{}: the {what} of {} is out of range: {from} moved by {delta}; index.tsv \
                 disagrees with the versions on disk (run reverb-index --check, then --recount)",
                crate::error::show(&new.dir.path),
                new.name.dir,
            ))
        })
    };
    let (old_files, old_logical) = prev.map_or((0, 0), |p| (p.files, p.logical_bytes));
    let files = moved("file count", old_files, b.delta_files)?;
    let logical = moved("logical size", old_logical, b.delta_logical)?;
    Ok(IndexRow {
        version: new.name.n,
        dir: new.name.dir.clone(),
        created: time::now_rfc3339(),
        files,
        changed: b.out.changed,
        held_bytes: 0,
        logical_bytes: logical,
    })
}

/// Publishes the built version, in crash-safe order. Its `held_bytes` is measured once its
/// data is on disk (I7): before that, delayed allocation reports fewer blocks than the
/// file will take (extent-tree blocks are only allocated at writeback).
pub(crate) fn publish(
    b: &mut Builder<'_>,
    new: NewVersion,
    partial: &Path,
    mut row: IndexRow,
) -> Result<Outcome> {
    let NewVersion {
        dir,
        mut rows,
        name,
    } = new;
    let record = completion_record(&dir, &name);
    let final_path = dir.version(&name);
    // index.tsv with the new row: written before the rename, put in place after it.
    let mut new_index = Staged::default();
    let before_rename = (|| -> Result<()> {
        // The registries, written first: their writeback runs while the tree is flushed.
        // They do not depend on each other: any mix of old and new ones describes the old
        // version the same.
        let mut records = Staged::default();
        records.add(&b.lookalikes.replacement(&dir.path))?;
        records.add(&b.climbing.replacement(&dir.path, &b.new_name)?)?;
        records.add(&b.link_groups.replacement(&dir.path, &b.new_name))?;
        crate::fault::step();
        make_durable(partial)?;
        row.held_bytes = measure::held_bytes(partial)?;
        // Its checksums and its completion record, written once it is durable and put in
        // place with the registries, all of them durable before the version's rename (I9,
        // docs/format.md#checksums). Neither needs the other first: a completion record
        // names a version still under `.partial/` only after a crash, and recovery then
        // removes both.
        b.stage_checksums(&mut records, &dir.path, name.n)?;
        let record_text = index::render(std::slice::from_ref(&row));
        records.add_in(&fsutil::tmp_dir_of(&dir.path)?, &record, |w| {
            w.write_all(record_text.as_bytes())
        })?;
        rows.push(row.clone());
        new_index.add(&fsutil::Replacement {
            path: dir.index(),
            contents: index::render(&rows).into_bytes(),
        })?;
        records.commit()?;
        crate::fault::step();
        fs::rename(partial, &final_path).ctx("cannot rename version into place", &final_path)
    })();
    if before_rename.is_err() {
        // Nothing is visible yet: the version is abandoned whole (recovery would do the same),
        // its checksums file too when it was already in place.
        let _ = fsutil::remove_tree(partial);
        let _ = fs::remove_file(&record);
        let _ = checksums::remove(&dir.path, name.n);
        before_rename?;
    }
    fsutil::fsync_dir(&dir.path)?;
    crate::fault::step();
    new_index.commit()?;
    let _ = fs::remove_file(&record);
    crate::fault::step();
    dir.set_current(&name)?;
    crate::fault::step();
    let mut out = std::mem::take(&mut b.out);
    b.journal.note(
        JournalEvent::Snapshot,
        b"",
        &format!(
            "{} changed={} files={} held_bytes={} reflinked={} skipped={}",
            name.dir, out.changed, row.files, row.held_bytes, out.reflinked, out.skipped
        ),
    );
    out.version = Some(name);
    out.row = Some(row);
    Ok(out)
}

/// `<job>/.tmp/<version>.complete`: the version's index row, written durably after the
/// version's data and before its rename, removed once index.tsv holds the row. A version
/// under its final name is only ever indexed by recovery on the strength of this record:
/// the flush that made the record durable came after the one that made the data durable.
pub(crate) fn completion_record(dir: &JobDir, name: &VersionName) -> PathBuf {
    dir.tmp().join(format!("{}.complete", name.dir))
}

/// Makes a built version durable before it is renamed into place (I6 across power loss):
/// everything real in it (files and directories, found by walking the tree under
/// `.partial/`, vault links not followed) is fsynced, deepest first; when that is more
/// than a few hundred entries (a first version), or when one of them cannot be opened (its
/// mode keeps its unprivileged writer out), its whole filesystem is flushed once with
/// `syncfs` instead, which is cheaper than thousands of fsyncs but also waits for
/// everybody else's dirty data. The walk, not a list of the paths the build changed, says
/// what to sync: every path that creates entries (a copy, a materialised deep sibling, a
/// recreated link) is covered without having to report them.
fn make_durable(root: &Path) -> Result<()> {
    const FSYNC_AT_MOST: usize = 256;
    let (files, dirs) = real_part(root, FSYNC_AT_MOST)?;
    if files.len() + dirs.len() > FSYNC_AT_MOST {
        return syncfs(root);
    }
    // Every file's writeback started before the first flush: the blocks ext4 allocates for
    // them are then in the journal transaction that first fsync commits.
    let mut opened = Vec::with_capacity(files.len());
    for f in &files {
        match fs::File::open(f) {
            Ok(file) => {
                let _ = fsutil::start_writeback(&file);
                opened.push((file, f));
            }
            // A copy whose new mode its writer may not read (an unprivileged job, mode 000),
            // or no descriptor left to hold them all open: flush the whole file system.
            Err(e)
                if e.kind() == std::io::ErrorKind::PermissionDenied
                    || e.raw_os_error() == Some(libc::EMFILE) =>
            {
                return syncfs(root);
            }
            Err(e) => return Err(e).ctx("cannot open", f),
        }
    }
    for (file, f) in &opened {
        file.sync_all().ctx("cannot fsync", f)?;
    }
    for d in dirs.iter().rev() {
        match fs::File::open(d) {
            Ok(dir) => dir.sync_all().ctx("cannot fsync directory", d)?,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return syncfs(root),
            Err(e) => return Err(e).ctx("cannot open directory", d),
        }
    }
    Ok(())
}

/// The real regular files and the directories (`root` first, parents before children) of
/// the tree at `root`, without following symlinks; the walk stops once it has found more
/// than `at_most` of them.
fn real_part(root: &Path, at_most: usize) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut next = 0;
    while next < dirs.len() && files.len() + dirs.len() <= at_most {
        let dir = dirs[next].clone();
        next += 1;
        for e in fs::read_dir(&dir).ctx("cannot list", &dir)? {
            let e = e.ctx("cannot list", &dir)?;
            let t = e.file_type().ctx("cannot inspect", &e.path())?;
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    Ok((files, dirs))
}

fn syncfs(path: &Path) -> Result<()> {
    let f = fs::File::open(path).ctx("cannot open", path)?;
    nix::unistd::syncfs(&f)
        .map_err(std::io::Error::from)
        .ctx("cannot sync filesystem of", path)
}
