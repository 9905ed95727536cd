//! Retiring versions (docs/retirement.md): deciding ([`plan`], pure, by the `keep_*` rules
//! of [`policy`] and the size limit) and doing it ([`execute`], one version at a time,
//! crash-safe), looped by [`enforce`].
//!
//! Owns: the order in which an enforcement works (an interrupted retirement first, then
//! every version no rule keeps, oldest first, then the oldest while the job is over its
//! size limit), the refusal of an unmeetable size limit (journaled as an `error`), and the
//! one-time size recount bookkeeping (`size_recounted`).
//!
//! The submodules: [`plan`] (which versions and why, no I/O), [`policy`] (what each
//! `keep_*` rule keeps), [`execute`] (the crash-safe steps of one retirement), [`relink`]
//! (finding and rewriting the links into the retiring version) and [`dir_times`] (the
//! durable record of the directories a retirement changes, `retiring.tsv`).
//!
//! Invariants: nothing is retired without index.tsv (never rebuild an index from the disk
//! and then delete by it); the newest version is never retired; a dry run writes nothing.

mod dir_times;
mod execute;
pub(crate) mod plan;
pub(crate) mod policy;
mod relink;

use crate::engine::retire::plan::{Action, Limits, Reason, unmeetable_for};
use crate::engine::snapshot;
use crate::error::{Error, Result, show};
use crate::fault;
use crate::format::index;
use crate::format::journal::JournalEvent;
use crate::vault::check;
use crate::vault::job::JobCtx;
use crate::vault::layout::{JobDir, VersionName};

/// A version retired (or, in a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The version number.
    pub version: u64,
    /// Its directory.
    pub dir: String,
    /// Why.
    pub reason: Reason,
    /// Bytes freed (index sums before minus after; estimated in a dry run).
    pub freed_bytes: u64,
}

/// Enforces the limits (docs/retirement.md): finishes an interrupted retirement, then
/// retires every version no rule keeps (oldest first), then the oldest while the index's
/// sum of `held_bytes` is above the size limit. The first time the size limit is hit, the
/// job is recounted from disk first (once per job, recorded in job.toml). A size limit the
/// newest version alone exceeds retires nothing for size: it is journaled as an `error` and
/// is [`Error::SizeLimitUnmeetable`] (see [`plan::Unmeetable`]). `dry_run` returns the [`plan::plan`]'s
/// retirements and writes nothing (an unmeetable limit is still the error).
pub fn enforce(ctx: &mut JobCtx, limits: &Limits, dry_run: bool) -> Result<Vec<Retired>> {
    enforce_with(ctx, limits, dry_run, &mut |_| {})
}

/// [`enforce`], calling `on_retired` right after each retirement (so a caller can report
/// what was done even when a later step fails).
pub fn enforce_with(
    ctx: &mut JobCtx,
    limits: &Limits,
    dry_run: bool,
    on_retired: &mut dyn FnMut(&Retired),
) -> Result<Vec<Retired>> {
    refuse_without_index(&ctx.dir)?;
    if dry_run {
        return planned(ctx, limits, on_retired);
    }
    let mut out = Vec::new();
    let mut report = |r: Retired| {
        on_retired(&r);
        out.push(r);
    };
    if let Some(vo) = ctx.file.state.retiring.clone() {
        let freed = execute::resume(ctx, &vo)?;
        report(Retired {
            version: VersionName::parse(&vo).map(|v| v.n).unwrap_or(0),
            dir: vo,
            reason: Reason::Resumed,
            freed_bytes: freed,
        });
    }
    // A record whose retirement finished (a crash after the mark was cleared) is stale.
    dir_times::forget(&ctx.dir.path)?;
    snapshot::recover(ctx)?;
    let rows = index::read_index_or_empty(&ctx.dir.index())?;
    let by_rules = plan::plan(&rows, &limits.rules, None, limits.now, &limits.tz)?;
    for d in by_rules.decisions {
        if d.action == Action::Retire {
            let freed = execute::retire_version(ctx, &d.dir)?;
            report(Retired {
                version: d.version,
                dir: d.dir,
                reason: Reason::Rules,
                freed_bytes: freed,
            });
        }
    }
    while let Some((version, dir)) = next_for_size(ctx, limits.size_limit)? {
        let freed = execute::retire_version(ctx, &dir)?;
        report(Retired {
            version,
            dir,
            reason: Reason::Size,
            freed_bytes: freed,
        });
    }
    Ok(out)
}

/// Never rebuild an index from the disk and then delete by it.
fn refuse_without_index(dir: &JobDir) -> Result<()> {
    if !dir.index().exists() && !dir.versions_on_disk()?.is_empty() {
        return Err(Error::Damaged(format!(
            "{} is missing but versions are on disk: nothing retired (see reverb-index --check)",
            show(&dir.index())
        )));
    }
    Ok(())
}

/// The dry run: the [`plan::plan`]'s retirements, nothing written.
fn planned(
    ctx: &mut JobCtx,
    limits: &Limits,
    on_retired: &mut dyn FnMut(&Retired),
) -> Result<Vec<Retired>> {
    let rows = index::read_index_or_empty(&ctx.dir.index())?;
    let p = limits.plan(&rows)?;
    let mut out = Vec::new();
    for d in p.decisions {
        if let (Action::Retire, Some(reason)) = (d.action, d.reason) {
            let r = Retired {
                version: d.version,
                dir: d.dir,
                reason,
                freed_bytes: d.estimated_freed,
            };
            on_retired(&r);
            out.push(r);
        }
    }
    match p.unmeetable {
        Some(u) => Err(u.into_error(&ctx.dir.folder)),
        None => Ok(out),
    }
}

/// The oldest version (number, directory) to retire now for size, or `None` when the job
/// is within its limit. The first time the size limit is exceeded, the job is recounted
/// first (once, recorded in job.toml). A limit the newest version alone exceeds is
/// journaled and [`Error::SizeLimitUnmeetable`], before anything is retired for size.
fn next_for_size(ctx: &mut JobCtx, size_limit: Option<u64>) -> Result<Option<(u64, String)>> {
    let Some(limit) = size_limit else {
        return Ok(None);
    };
    loop {
        let rows = index::read_index_or_empty(&ctx.dir.index())?;
        if index::total_held(&rows) <= limit {
            return Ok(None);
        }
        if !ctx.file.state.size_recounted {
            check::recount(ctx)?;
            ctx.file.state.size_recounted = true;
            ctx.file.write(&ctx.dir.job_toml())?;
            fault::step();
            continue;
        }
        // Over the limit here, so with one version left the newest needs more than it.
        if let Some(u) = unmeetable_for(&rows, Some(limit), index::total_held(&rows)) {
            let err = u.into_error(&ctx.dir.folder);
            ctx.journal.note(JournalEvent::Error, b"", &err.to_string());
            return Err(err);
        }
        return Ok(Some((rows[0].version, rows[0].dir.clone())));
    }
}
