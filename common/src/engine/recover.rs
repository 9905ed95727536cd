//! Repairing what a crash between the publishing steps left behind ([`recover`]), before
//! every build and retirement.
//!
//! Invariants: after [`recover`], `.partial/` is empty, no temporary of a dead process is
//! left in `.tmp/` or the job folder, every version newer than the last index row (and not
//! being retired) has its row if its completion record or a journal line shows it complete,
//! and is gone otherwise, `current` names the newest
//! indexed version, and the lookalike registry names only versions on disk. Every repair
//! is journaled as `cleanup`. Running it twice changes nothing the second time.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use crate::engine::publish::completion_record;
use crate::error::Result;
use crate::format::index::{self, IndexRow, read_index_or_empty};
use crate::format::journal::{self, Entry, JournalEvent};
use crate::format::time;
use crate::fsutil;
use crate::vault::job::JobCtx;
use crate::vault::layout::VersionName;
use crate::vault::measure::{held_bytes, measure_tree};
use crate::vault::tree::Lookalikes;

/// Repairs what a crash left: removes leftover partial versions and a crash's temporaries
/// (journaled), adds a version that was renamed into place but not yet indexed when its
/// completion record or the journal shows it complete (removes it otherwise), points
/// `current` at
/// the newest version, and drops lookalike records of versions that do not exist.
pub(crate) fn recover(ctx: &mut JobCtx) -> Result<()> {
    remove_partials(ctx)?;
    remove_dead_temporaries(ctx)?;
    let on_disk = ctx.dir.versions_on_disk()?;
    let rows = index_unindexed(ctx, &on_disk)?;
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
    // Listed again: indexing may have discarded a version found under its final name.
    let names: HashSet<String> = ctx
        .dir
        .versions_on_disk()?
        .into_iter()
        .map(|v| v.dir)
        .collect();
    if lookalikes.retain_versions(&names) {
        lookalikes.save(&ctx.dir.path)?;
    }
    Ok(())
}

/// Removes every unfinished version under `.partial/`.
fn remove_partials(ctx: &mut JobCtx) -> Result<()> {
    let Ok(rd) = fs::read_dir(ctx.dir.partial()) else {
        return Ok(());
    };
    for e in rd.flatten() {
        fsutil::remove_tree(&e.path())?;
        ctx.journal.note(
            JournalEvent::Cleanup,
            b"",
            &format!(
                "removed unfinished version .partial/{}",
                e.file_name().to_string_lossy()
            ),
        );
    }
    Ok(())
}

/// Removes the temporaries a crashed writer left: every temp file of a process that is no
/// longer alive in `.tmp/`, and in the job folder itself (where older releases built them).
fn remove_dead_temporaries(ctx: &mut JobCtx) -> Result<()> {
    for dir in [ctx.dir.tmp(), ctx.dir.path.clone()] {
        let Ok(rd) = fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let dead = fsutil::temp_owner(&name).is_some_and(|pid| !fsutil::process_alive(pid));
            if !dead {
                continue;
            }
            fsutil::remove_tree(&e.path())?;
            let shown = e.path();
            let shown = shown.strip_prefix(&ctx.dir.path).unwrap_or(&shown);
            ctx.journal.note(
                JournalEvent::Cleanup,
                b"",
                &format!("removed a crash's temporary {}", shown.display()),
            );
        }
    }
    Ok(())
}

/// Adds the index rows of versions renamed into place but not yet indexed. Only evidence
/// that a version is complete gets it indexed: its completion record
/// ([`crate::engine::publish::completion_record`], durable before the rename), or a
/// `snapshot` line for it in the journal (appended after index.tsv: the version was
/// complete and indexed once, and index.tsv lost its row — hand-edited or damaged; it is
/// counted afresh). A version with neither may be one whose data never reached the disk
/// (a power cut kept the rename but not the data) and is removed — when it is the only
/// one: several unindexed versions are not what a crash leaves (each run publishes one)
/// but a damaged index, and are counted afresh, never removed. Then drops every
/// completion record left. Returns the index as it then is.
fn index_unindexed(ctx: &mut JobCtx, on_disk: &[VersionName]) -> Result<Vec<IndexRow>> {
    let mut rows = read_index_or_empty(&ctx.dir.index())?;
    let known: HashSet<String> = rows.iter().map(|r| r.dir.clone()).collect();
    let last_n = rows.last().map(|r| r.version).unwrap_or(0);
    let unindexed: Vec<&VersionName> = on_disk
        .iter()
        .filter(|v| {
            !known.contains(&v.dir)
                && v.n > last_n
                && ctx.file.state.retiring.as_deref() != Some(v.dir.as_str())
        })
        .collect();
    let journaled = if unindexed.is_empty() {
        HashSet::new()
    } else {
        published_in_journal(&ctx.dir.journal())
    };
    // A crashed publish leaves one version at most: several are a damaged index, whose
    // versions are never removed (only counted afresh).
    let crash_shaped = unindexed.len() == 1;
    let mut changed = false;
    for v in unindexed {
        let row = match recorded_row(ctx, v) {
            Some(row) => Some(row),
            None if journaled.contains(&v.dir) || !crash_shaped => Some(recount(&ctx.dir.path, v)?),
            None => None,
        };
        match row {
            Some(row) => {
                rows.push(row);
                ctx.journal.note(
                    JournalEvent::Cleanup,
                    b"",
                    &format!(
                        "indexed {} (complete, but not in index.tsv after a crash)",
                        v.dir
                    ),
                );
                changed = true;
            }
            None => discard(ctx, v)?,
        }
    }
    if changed {
        index::write(&ctx.dir.index(), &rows)?;
    }
    remove_completion_records(ctx);
    Ok(rows)
}

/// Removes a version found under its final name with no evidence of being complete.
fn discard(ctx: &mut JobCtx, v: &VersionName) -> Result<()> {
    fsutil::remove_tree(&ctx.dir.version(v))?;
    fsutil::fsync_dir(&ctx.dir.path)?;
    ctx.journal.note(
        JournalEvent::Cleanup,
        b"",
        &format!(
            "removed {} (under its final name after a crash, but neither its completion \
             record nor a snapshot line shows it complete: its data may not have reached \
             the disk)",
            v.dir
        ),
    );
    Ok(())
}

/// The version directories the journal has a `snapshot` line for (unreadable lines, such
/// as a torn tail, are skipped).
fn published_in_journal(path: &Path) -> HashSet<String> {
    let Ok(bytes) = fs::read(path) else {
        return HashSet::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .skip(1)
        .filter_map(|l| Entry::parse(l).ok())
        .filter(|e| e.event == JournalEvent::Snapshot)
        .filter_map(|e| journal::snapshot_version(&e.detail).map(str::to_owned))
        .collect()
}

/// The index row of a version found on disk, counted afresh.
fn recount(job: &Path, v: &VersionName) -> Result<IndexRow> {
    let lookalikes = Lookalikes::load(job)?;
    let (files, logical) = measure_tree(job, &v.dir, Path::new(""), &lookalikes)?;
    let held = held_bytes(&job.join(&v.dir))?;
    let created = time::parse_stamp(v.dir.split_once('-').map(|x| x.1).unwrap_or(""))
        .map(time::rfc3339_millis)
        .unwrap_or_else(time::now_rfc3339);
    Ok(IndexRow {
        version: v.n,
        dir: v.dir.clone(),
        created,
        files,
        changed: 0,
        held_bytes: held,
        logical_bytes: logical,
    })
}

/// The index row the completion record of `v` holds, if it has a sound one.
fn recorded_row(ctx: &JobCtx, v: &VersionName) -> Option<IndexRow> {
    let record = completion_record(&ctx.dir, v);
    let rows = index::read_index_or_empty(&record).ok()?;
    match &rows[..] {
        [row] if row.dir == v.dir && row.version == v.n => Some(row.clone()),
        _ => None,
    }
}

/// Removes every completion record in `.tmp/` (best effort: they are only read for
/// versions not yet indexed, so a stale one is harmless).
fn remove_completion_records(ctx: &JobCtx) {
    let Ok(rd) = fs::read_dir(ctx.dir.tmp()) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().ends_with(".complete") {
            let _ = fs::remove_file(e.path());
        }
    }
}
