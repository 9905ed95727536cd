//! Repairing what a crash between the publishing steps left behind ([`recover`]), before
//! every build and retirement.
//!
//! Invariants: after [`recover`], `.partial/` is empty, no temporary of a dead process is
//! left in `.tmp/` or the job folder, every complete version newer than
//! the last index row (and not being retired) has its row, `current` names the newest
//! indexed version, and the lookalike registry names only versions on disk. Every repair
//! is journaled as `cleanup`. Running it twice changes nothing the second time.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use crate::error::Result;
use crate::format::index::{self, IndexRow, read_index_or_empty};
use crate::format::journal::JournalEvent;
use crate::format::time;
use crate::fsutil;
use crate::vault::job::JobCtx;
use crate::vault::layout::VersionName;
use crate::vault::measure::{held_bytes, measure_tree};
use crate::vault::tree::Lookalikes;

/// Repairs what a crash left: removes leftover partial versions (journaled), adds a
/// complete version that was renamed into place but not yet indexed, points `current` at
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
    let names: HashSet<String> = on_disk.iter().map(|v| v.dir.clone()).collect();
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

/// Adds the index rows of complete versions renamed into place but not yet indexed;
/// returns the index as it then is.
fn index_unindexed(ctx: &mut JobCtx, on_disk: &[VersionName]) -> Result<Vec<IndexRow>> {
    let mut rows = read_index_or_empty(&ctx.dir.index())?;
    let known: HashSet<String> = rows.iter().map(|r| r.dir.clone()).collect();
    let last_n = rows.last().map(|r| r.version).unwrap_or(0);
    let mut changed = false;
    for v in on_disk {
        if known.contains(&v.dir)
            || v.n <= last_n
            || ctx.file.state.retiring.as_deref() == Some(v.dir.as_str())
        {
            continue;
        }
        rows.push(recount(&ctx.dir.path, v)?);
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
    if changed {
        index::write(&ctx.dir.index(), &rows)?;
    }
    Ok(rows)
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
