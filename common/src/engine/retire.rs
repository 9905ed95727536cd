//! Retiring old versions (docs/retirement.md): the policy ([`plan`], a pure function) and the
//! crash-safe retirement of the oldest version ([`retire_oldest`], looped by [`enforce`]).
//!
//! Owns: the order of the writes that retire a version, the `retiring` mark in job.toml,
//! and the one-time size recount bookkeeping (`size_recounted`).
//!
//! Theory of operation. Retiring the oldest version `Vo` whose next version is `Vn`:
//!
//! 1. mark: job.toml `state.retiring = Vo` (atomic rewrite);
//! 2. every later version `Vm` (m > n): each vault link into `Vo` — found by walking only
//!    `Vm`'s real directories — is atomically replaced by a link to the same path in `Vn`.
//!    `Vn` still reaches that path (through its own link into `Vo`, at the path or at an
//!    ancestor), so the new link resolves at once; it becomes canonical in step 3;
//! 3. each vault link of `Vn` into `Vo` at `p`: lookalike records of `Vo` under `p` are
//!    copied to `Vn` and saved first (both keys are right while the data moves: nothing is
//!    physically under a link); then the real entry `Vo/p` takes the link's place — a
//!    directory by `renameat2(RENAME_EXCHANGE)` (the link lands in `Vo/p` and is then
//!    replaced by a link to `Vn/p`, so even `Vo` stays readable), anything else by
//!    `rename(2)` over the link. `Vo` holds no vault links (I3), so what moves is entirely
//!    real and `Vn/p` becomes canonical. The parent directory's times (and the moved
//!    directory's) are restored after each rename, so the version stays exact (I5);
//! 4. `Vo` is deleted; 5. index.tsv is rewritten without `Vo`, with `Vn`'s `held_bytes`
//!    grown by what moved in (`Vo`'s minus what `Vo` still holds, corrected by the usage
//!    changes the moves measured: the links they replaced, and every directory they
//!    touched, since a directory emptied by the moves can shrink), and the later versions'
//!    changed by what their retargeted links and directories measured (docs/format.md I7);
//!    6. the mark is cleared; 7. `retire` is journaled with the bytes freed.
//!
//! At every instant every link of every retained version resolves. Every step is
//! idempotent, so a run that finds a `retiring` mark simply runs steps 2–7 again: links
//! already retargeted no longer point into `Vo`, entries already moved are real in `Vn`, a
//! missing `Vo` leaves only the index and the mark to fix. The one window that is not
//! repaired is a crash between a rename and restoring its parent directory's times: that
//! directory's mtime in the vault may then be the retirement's time (data is intact).
//!
//! Each filesystem write above calls [`crate::fault::step`] (test fault injection).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::engine::copy;
use crate::engine::snapshot;
use crate::error::{Error, IoContext, Result, show};
use crate::fault;
use crate::format::index::{self, IndexRow};
use crate::format::journal::JournalEvent;
use crate::format::settings::format_size;
use crate::fsutil;
use crate::vault::check;
use crate::vault::job::JobCtx;
use crate::vault::layout::VersionName;
use crate::vault::measure::{self, remains_held};
use crate::vault::tree::{self, Lookalikes};

/// Why a version is kept or retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Retired: more than `keep_versions` versions.
    Count,
    /// Retired: the job folder is larger than `vault_size_limit`.
    Size,
    /// Retired: finishing a retirement a crash interrupted.
    Resumed,
    /// Kept: the newest version is never retired.
    Newest,
    /// Kept: the newest version, although the size limit is still exceeded.
    Unmeetable,
    /// Kept: within both limits.
    Within,
}

impl Reason {
    /// The reason's name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Count => "count",
            Reason::Size => "size",
            Reason::Resumed => "resumed",
            Reason::Newest => "newest",
            Reason::Unmeetable => "newest-size-limit-unmeetable",
            Reason::Within => "within-limits",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keep or retire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The version stays.
    Keep,
    /// The version goes.
    Retire,
}

impl Action {
    /// The action's name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Retire => "retire",
        }
    }
}

/// The policy's verdict on one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The version number.
    pub version: u64,
    /// Its directory.
    pub dir: String,
    /// Keep or retire.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// For a retirement: the bytes it is estimated to free (see [`estimate_moved`]).
    pub estimated_freed: u64,
}

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

/// The bytes of `old` (holding `old_held` now) estimated to move into `next` when `old` is
/// retired: the share of `old`'s files that `next` did not copy itself. `next.files -
/// next.changed` counts the files `next` reuses (an overestimate of nothing: `changed`
/// also counts directories, so reuse is if anything underestimated), capped at `old.files`.
pub fn estimate_moved(old: &IndexRow, next: &IndexRow, old_held: u64) -> u64 {
    if old.files == 0 {
        return 0;
    }
    let reused = next.files.saturating_sub(next.changed).min(old.files);
    (u128::from(old_held) * u128::from(reused) / u128::from(old.files)) as u64
}

/// The retirement policy (docs/retirement.md), pure: oldest first, while more than `keep_versions`
/// (0 = no count limit) or the sum of `held_bytes` is above `size_limit`; never the newest.
/// The size after each retirement is estimated with [`estimate_moved`]; [`enforce`] itself
/// re-reads the index after every real retirement instead.
pub fn plan(rows: &[IndexRow], keep_versions: u64, size_limit: Option<u64>) -> Vec<Decision> {
    let n = rows.len();
    let mut held: Vec<u64> = rows.iter().map(|r| r.held_bytes).collect();
    let mut total: u64 = held.iter().sum();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i + 1 < n {
        let over_count = keep_versions > 0 && (n - i) as u64 > keep_versions;
        let over_size = size_limit.is_some_and(|l| total > l);
        if !over_count && !over_size {
            break;
        }
        let moved = estimate_moved(&rows[i], &rows[i + 1], held[i]).min(held[i]);
        let freed = held[i] - moved;
        held[i + 1] += moved;
        total -= freed;
        out.push(Decision {
            version: rows[i].version,
            dir: rows[i].dir.clone(),
            action: Action::Retire,
            reason: if over_count {
                Reason::Count
            } else {
                Reason::Size
            },
            estimated_freed: freed,
        });
        i += 1;
    }
    for (j, r) in rows.iter().enumerate().skip(i) {
        let reason = if j + 1 < n {
            Reason::Within
        } else if size_limit.is_some_and(|l| total > l) {
            Reason::Unmeetable
        } else {
            Reason::Newest
        };
        out.push(Decision {
            version: r.version,
            dir: r.dir.clone(),
            action: Action::Keep,
            reason,
            estimated_freed: 0,
        });
    }
    out
}

/// Retires the oldest version (or first finishes a retirement a crash interrupted) and
/// returns the bytes freed. The caller holds the job lock. Never retires the only version.
pub fn retire_oldest(ctx: &mut JobCtx) -> Result<u64> {
    if let Some(vo) = ctx.file.state.retiring.clone() {
        return finish(ctx, &vo, true);
    }
    let rows = index::read(&ctx.dir.index())?;
    if rows.len() < 2 {
        return Err(Error::Refused(format!(
            "job {} has {} version(s): the only remaining version is never retired",
            ctx.dir.folder,
            rows.len()
        )));
    }
    let vo = rows[0].dir.clone();
    ctx.file.state.retiring = Some(vo.clone());
    ctx.file.write(&ctx.dir.job_toml())?;
    fault::step();
    finish(ctx, &vo, false)
}

/// Steps 2–7 for `vo` (see the module docs); idempotent.
fn finish(ctx: &mut JobCtx, vo: &str, resumed: bool) -> Result<u64> {
    let rows = index::read(&ctx.dir.index())?;
    if !rows.iter().any(|r| r.dir == vo) {
        // The index no longer has Vo: only the deletion and the mark can be left.
        let vo_path = ctx.dir.path.join(vo);
        if fs::symlink_metadata(&vo_path).is_ok() {
            fsutil::remove_tree(&vo_path)?;
            fault::step();
        }
        clear_mark(ctx)?;
        return Ok(0);
    }
    let r = Retirement::new(ctx, vo, rows, resumed)?;
    let mut lookalikes = Lookalikes::load(&r.job)?;
    let mut sizes = SizeChanges::default();
    if fs::symlink_metadata(r.job.join(&r.vo)).is_ok() {
        let (vo_n, vn_n) = (r.rows[0].version, r.rows[1].version);
        crate::vault::verify::carry_records(&r.job, (vo_n, &r.vo), (vn_n, &r.vn), &lookalikes)?;
        sizes.link_delta = r.retarget_later_links(&lookalikes)?;
        sizes.link_correction = r.move_into_next(&mut lookalikes)?;
        sizes.remains = r.delete_old()?;
    }
    r.forget_lookalikes_of_old(&mut lookalikes)?;
    let freed = r.rewrite_index(ctx, &sizes)?;
    clear_mark(ctx)?;
    r.journal(ctx, freed)?;
    Ok(freed)
}

/// One retirement of the oldest version `vo` into the next one `vn`, as the index had it
/// when it started (or resumed).
struct Retirement {
    job: PathBuf,
    vo: String,
    vn: String,
    /// index.tsv as read: `rows[0]` is `vo`, `rows[1]` is `vn`.
    rows: Vec<IndexRow>,
    /// The versions after `vn`: the index's, plus any complete version not indexed yet.
    later: Vec<String>,
    /// Finishing a retirement a crash interrupted: size arithmetic is not trusted.
    resumed: bool,
}

/// What the data steps (2–4) learnt about sizes, for the index (step 5).
#[derive(Default)]
struct SizeChanges {
    /// Per later version: how the usage of its retargeted links and of the directories
    /// holding them changed.
    link_delta: HashMap<String, i64>,
    /// What to add to "Vn + Vo − what Vo still holds" for Vn's exact size (see
    /// [`move_forward`]).
    link_correction: i64,
    /// What Vo still held when it was deleted (`None`: measure Vn instead).
    remains: Option<u64>,
}

impl Retirement {
    /// Checks that `vo` can be retired (the oldest, not the only one, the next version on
    /// disk) and finds the later versions.
    fn new(ctx: &mut JobCtx, vo: &str, rows: Vec<IndexRow>, resumed: bool) -> Result<Retirement> {
        if rows.first().is_none_or(|r| r.dir != vo) {
            return Err(Error::Damaged(format!(
                "{vo}, marked as retiring in {}, is not the oldest version in index.tsv",
                show(&ctx.dir.job_toml())
            )));
        }
        if rows.len() < 2 {
            clear_mark(ctx)?;
            return Err(Error::Refused(format!(
                "{vo} is the only remaining version of job {}: never retired",
                ctx.dir.folder
            )));
        }
        let job = ctx.dir.path.clone();
        let (vn, vn_n) = (rows[1].dir.clone(), rows[1].version);
        if !job.join(&vn).is_dir() {
            return Err(Error::Damaged(format!(
                "cannot retire {vo}: the next version {vn} is missing from {} (see reverb-index --check)",
                show(&job)
            )));
        }
        let mut later: Vec<String> = rows[2..].iter().map(|r| r.dir.clone()).collect();
        let known: HashSet<&str> = rows.iter().map(|r| r.dir.as_str()).collect();
        for v in ctx.dir.versions_on_disk()? {
            if v.n > vn_n && !known.contains(v.dir.as_str()) {
                later.push(v.dir);
            }
        }
        Ok(Retirement {
            job,
            vo: vo.to_owned(),
            vn,
            rows,
            later,
            resumed,
        })
    }

    /// Step 2: every later version's links into Vo are retargeted to the same path in Vn.
    /// Returns each version's change of link usage.
    fn retarget_later_links(&self, lookalikes: &Lookalikes) -> Result<HashMap<String, i64>> {
        let mut link_delta = HashMap::new();
        for vm in &self.later {
            let delta = self.retarget_links_of(vm, lookalikes)?;
            link_delta.insert(vm.clone(), delta);
        }
        Ok(link_delta)
    }

    /// Step 2 for one later version `vm`. Links are grouped by directory: one guard (times,
    /// mode) per directory, and the link's own size is only looked at when the new text's
    /// length differs (a longer text can leave the inode for a block). The directory's own
    /// size is looked at before and after (the temporary name of each replacement can make
    /// it grow).
    fn retarget_links_of(&self, vm: &str, lookalikes: &Lookalikes) -> Result<i64> {
        let same_length = self.vo.len() == self.vn.len();
        let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
        for (rel, holder) in tree::vault_links(&self.job, vm, lookalikes)? {
            if holder == self.vo {
                by_dir
                    .entry(parent_of(&rel).to_path_buf())
                    .or_default()
                    .push(rel);
            }
        }
        let mut delta = 0i64;
        for (dir_rel, rels) in by_dir {
            let dir_abs = self.job.join(vm).join(&dir_rel);
            let dir_before = usage(&dir_abs)?;
            let guard = DirGuard::open(&dir_abs)?;
            for rel in rels {
                let abs = self.job.join(vm).join(&rel);
                let before = if same_length { 0 } else { usage(&abs)? };
                fsutil::replace_symlink(&tree::link_text(&rel, &self.vn), &abs)?;
                // Times back at once: a crash here must not leave the directory's mtime
                // changed in a retained version.
                guard.put_times_back()?;
                fault::step();
                if !same_length {
                    delta += usage(&abs)? as i64 - before as i64;
                }
            }
            guard.restore()?;
            delta += usage(&dir_abs)? as i64 - dir_before as i64;
        }
        Ok(delta)
    }

    /// Step 3: what Vn still uses from Vo moves into Vn, the lookalike records under each
    /// moved path first. Returns the correction of Vn's size for what the moves changed
    /// besides moving data (the links they replaced, the directories they touched, see
    /// [`move_forward`]).
    fn move_into_next(&self, lookalikes: &mut Lookalikes) -> Result<i64> {
        let moves: Vec<PathBuf> = tree::vault_links(&self.job, &self.vn, lookalikes)?
            .into_iter()
            .filter(|(_, h)| *h == self.vo)
            .map(|(rel, _)| rel)
            .collect();
        if !lookalikes.is_empty() {
            let mut added = false;
            for rel in &moves {
                added |= lookalikes.alias(&self.vo, &self.vn, rel);
            }
            if added {
                lookalikes.save(&self.job)?;
                fault::step();
            }
        }
        let mut link_correction = 0i64;
        for rel in &moves {
            link_correction += move_forward(&self.job, &self.vo, &self.vn, rel)?;
        }
        Ok(link_correction)
    }

    /// Step 4: Vo is deleted. What it still holds now is what the retirement frees (the
    /// rest moved into Vn, measured here so Vn need not be walked: its size is the sum).
    fn delete_old(&self) -> Result<Option<u64>> {
        let vo_path = self.job.join(&self.vo);
        let remains = remains_held(&vo_path)?;
        fsutil::remove_tree(&vo_path)?;
        fsutil::fsync_dir(&self.job)?;
        fault::step();
        Ok(remains)
    }

    /// The lookalike records of versions no longer retained (Vo's) are dropped.
    fn forget_lookalikes_of_old(&self, lookalikes: &mut Lookalikes) -> Result<()> {
        let keep: HashSet<String> = self.rows[1..]
            .iter()
            .map(|r| r.dir.clone())
            .chain(self.later.iter().cloned())
            .collect();
        if lookalikes.retain_versions(&keep) {
            lookalikes.save(&self.job)?;
            fault::step();
        }
        Ok(())
    }

    /// Step 5: index.tsv without Vo, with Vn's and the later versions' `held_bytes`
    /// updated. Returns the bytes freed (the index's sums before minus after).
    fn rewrite_index(&self, ctx: &JobCtx, sizes: &SizeChanges) -> Result<u64> {
        let new_rows = self.rows_without_old(sizes)?;
        let freed = index::total_held(&self.rows).saturating_sub(index::total_held(&new_rows));
        index::write(&ctx.dir.index(), &new_rows)?;
        fault::step();
        Ok(freed)
    }

    fn rows_without_old(&self, sizes: &SizeChanges) -> Result<Vec<IndexRow>> {
        let (old, next) = (&self.rows[0], &self.rows[1]);
        let mut new_rows: Vec<IndexRow> = self.rows[1..].to_vec();
        let moved_in = sizes.remains.and_then(|r| old.held_bytes.checked_sub(r));
        new_rows[0].held_bytes = match moved_in {
            Some(m) if !self.resumed => {
                (next.held_bytes as i64 + m as i64 + sizes.link_correction).max(0) as u64
            }
            // A resumed run cannot trust the arithmetic: measure.
            _ => measure::held_bytes(&self.job.join(&self.vn))?,
        };
        for r in new_rows.iter_mut().skip(1) {
            if self.resumed {
                // Deltas of a crashed run are lost: recount what the later versions hold.
                if self.job.join(&r.dir).is_dir() {
                    r.held_bytes = measure::held_bytes(&self.job.join(&r.dir))?;
                }
            } else if let Some(d) = sizes.link_delta.get(&r.dir) {
                r.held_bytes = (r.held_bytes as i64 + d).max(0) as u64;
            }
        }
        Ok(new_rows)
    }

    /// Step 7: `retire` is journaled with the bytes freed.
    fn journal(&self, ctx: &mut JobCtx, freed: u64) -> Result<()> {
        ctx.journal.append(
            JournalEvent::Retire,
            b"",
            &format!(
                "{} freed_bytes={freed} ({}) data moved into {}{}",
                self.vo,
                format_size(freed),
                self.vn,
                if self.resumed { " (resumed)" } else { "" }
            ),
        )?;
        fault::step();
        Ok(())
    }
}

/// Step 6: the `retiring` mark is cleared.
fn clear_mark(ctx: &mut JobCtx) -> Result<()> {
    if ctx.file.state.retiring.is_some() {
        ctx.file.state.retiring = None;
        ctx.file.write(&ctx.dir.job_toml())?;
        fault::step();
    }
    Ok(())
}

fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("/"))
}

fn usage(p: &Path) -> Result<u64> {
    Ok(measure::disk_usage(
        &fs::symlink_metadata(p).ctx("cannot inspect", p)?,
    ))
}

/// Moves the real entry `Vo/rel` into `Vn/rel`, where `Vn` has a vault link to it. Returns
/// what to add to "Vn + Vo − what Vo still holds" to get Vn's exact size: the usage of the
/// link left in Vo minus that of the link taken out of Vn, plus how the two directories
/// holding them changed (measured, never assumed: on XFS a directory the moves empty
/// shrinks, and a temporary name can make one grow).
fn move_forward(job: &Path, vo: &str, vn: &str, rel: &Path) -> Result<i64> {
    let src = job.join(vo).join(rel);
    let dst = job.join(vn).join(rel);
    let sm = match fs::symlink_metadata(&src) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Damaged(format!(
                "{vn} links to {}, which is missing: cannot retire {vo} (see reverb-index --check)",
                show(&src)
            )));
        }
        Err(e) => return Err(e).ctx("cannot inspect", &src),
    };
    let (src_dir, dst_dir) = (parent_of(&src), parent_of(&dst));
    let dirs_before = usage(src_dir)? as i64 + usage(dst_dir)? as i64;
    let guard = DirGuard::open(dst_dir)?;
    let link = usage(&dst)? as i64;
    let left_in_old = if sm.is_dir() {
        exchange(&src, &dst)?;
        set_times(&dst, &sm)?;
        guard.restore()?;
        fault::step();
        // The link now at Vo/rel names Vo/rel itself: point it at the data's new place.
        fsutil::replace_symlink(&tree::link_text(rel, vn), &src)?;
        fault::step();
        usage(&src)? as i64
    } else {
        fs::rename(&src, &dst).ctx("cannot move into the next version", &dst)?;
        guard.restore()?;
        fault::step();
        0
    };
    let dirs_after = usage(src_dir)? as i64 + usage(dst_dir)? as i64;
    Ok(left_in_old - link + dirs_after - dirs_before)
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: swaps two entries atomically.
fn exchange(a: &Path, b: &Path) -> Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(std::io::Error::from)
    .ctx("cannot swap (RENAME_EXCHANGE) into", b)
}

/// Sets a path's atime and mtime (nanoseconds) from `meta`, not following a symlink.
fn set_times(path: &Path, meta: &fs::Metadata) -> Result<()> {
    copy::set_times(path, meta).ctx("cannot set times of", path)
}

/// A version directory about to get a changed entry: its times (and, for a non-root
/// writer, its mode, made writable meanwhile) are put back afterwards, so the version
/// still restores exactly (I5).
struct DirGuard {
    path: PathBuf,
    meta: fs::Metadata,
    chmodded: bool,
}

impl DirGuard {
    fn open(path: &Path) -> Result<DirGuard> {
        let meta = fs::symlink_metadata(path).ctx("cannot inspect", path)?;
        let mode = meta.mode() & 0o7777;
        let chmodded = !copy::privileged() && mode & 0o300 != 0o300;
        if chmodded {
            fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700))
                .ctx("cannot make writable", path)?;
        }
        Ok(DirGuard {
            path: path.to_path_buf(),
            meta,
            chmodded,
        })
    }

    /// Puts the directory's times back (the guard stays armed).
    fn put_times_back(&self) -> Result<()> {
        set_times(&self.path, &self.meta)
    }

    fn restore(self) -> Result<()> {
        if self.chmodded {
            fs::set_permissions(
                &self.path,
                fs::Permissions::from_mode(self.meta.mode() & 0o7777),
            )
            .ctx("cannot restore the mode of", &self.path)?;
        }
        set_times(&self.path, &self.meta)
    }
}

/// Enforces the limits: finishes an interrupted retirement, then retires the oldest while
/// there are more than `keep` versions (0 = no count limit) or the index's sum of
/// `held_bytes` is above `size_limit`. The first time the size limit is hit, the job is
/// recounted from disk first (once per job, recorded in job.toml). A limit that cannot be
/// met with one version left is journaled as an `error` and is [`Error::Refused`].
/// `dry_run` returns the [`plan`]'s retirements and writes nothing.
pub fn enforce(
    ctx: &mut JobCtx,
    keep: u64,
    size_limit: Option<u64>,
    dry_run: bool,
) -> Result<Vec<Retired>> {
    enforce_with(ctx, keep, size_limit, dry_run, &mut |_| {})
}

/// [`enforce`], calling `on_retired` right after each retirement (so a caller can report
/// what was done even when a later step fails).
pub fn enforce_with(
    ctx: &mut JobCtx,
    keep: u64,
    size_limit: Option<u64>,
    dry_run: bool,
    on_retired: &mut dyn FnMut(&Retired),
) -> Result<Vec<Retired>> {
    if !ctx.dir.index().exists() && !ctx.dir.versions_on_disk()?.is_empty() {
        // Never rebuild an index from the disk and then delete by it.
        return Err(Error::Damaged(format!(
            "{} is missing but versions are on disk: nothing retired (see reverb-index --check)",
            show(&ctx.dir.index())
        )));
    }
    if dry_run {
        return planned(ctx, keep, size_limit, on_retired);
    }
    let mut out = Vec::new();
    let mut report = |r: Retired| {
        on_retired(&r);
        out.push(r);
    };
    if let Some(vo) = ctx.file.state.retiring.clone() {
        let freed = retire_oldest(ctx)?;
        report(Retired {
            version: VersionName::parse(&vo).map(|v| v.n).unwrap_or(0),
            dir: vo,
            reason: Reason::Resumed,
            freed_bytes: freed,
        });
    }
    snapshot::recover(ctx)?;
    while let Some((version, dir, reason)) = next_retirement(ctx, keep, size_limit)? {
        let freed = retire_oldest(ctx)?;
        report(Retired {
            version,
            dir,
            reason,
            freed_bytes: freed,
        });
    }
    Ok(out)
}

/// The dry run: the [`plan`]'s retirements, nothing written.
fn planned(
    ctx: &JobCtx,
    keep: u64,
    size_limit: Option<u64>,
    on_retired: &mut dyn FnMut(&Retired),
) -> Result<Vec<Retired>> {
    let rows = index::read_index_or_empty(&ctx.dir.index())?;
    let mut out = Vec::new();
    for d in plan(&rows, keep, size_limit) {
        if d.action == Action::Retire {
            let r = Retired {
                version: d.version,
                dir: d.dir,
                reason: d.reason,
                freed_bytes: d.estimated_freed,
            };
            on_retired(&r);
            out.push(r);
        }
    }
    Ok(out)
}

/// The oldest version (number, directory) and why it is to be retired now, or `None` when
/// the job is within its limits. The first time the size limit is exceeded, the job is recounted first (once,
/// recorded in job.toml). An unmeetable limit is journaled and [`Error::Refused`].
fn next_retirement(
    ctx: &mut JobCtx,
    keep: u64,
    size_limit: Option<u64>,
) -> Result<Option<(u64, String, Reason)>> {
    loop {
        let rows = index::read_index_or_empty(&ctx.dir.index())?;
        let total = index::total_held(&rows);
        let over_size = size_limit.is_some_and(|l| total > l);
        if over_size && !ctx.file.state.size_recounted {
            check::recount(ctx)?;
            ctx.file.state.size_recounted = true;
            ctx.file.write(&ctx.dir.job_toml())?;
            fault::step();
            continue;
        }
        let over_count = keep > 0 && rows.len() as u64 > keep;
        if !over_count && !over_size {
            return Ok(None);
        }
        if rows.len() <= 1 {
            return Err(unmeetable(ctx, &rows, size_limit.unwrap_or(0), total));
        }
        let reason = if over_count {
            Reason::Count
        } else {
            Reason::Size
        };
        return Ok(Some((rows[0].version, rows[0].dir.clone(), reason)));
    }
}

/// Journals (as an `error`) and returns the refusal of a size limit that one version
/// alone exceeds.
fn unmeetable(ctx: &mut JobCtx, rows: &[IndexRow], limit: u64, total: u64) -> Error {
    let msg = format!(
        "job {}: size limit {limit} bytes ({}) cannot be met: the only remaining version {} holds {total} bytes ({}), and the last version is never retired",
        ctx.dir.folder,
        format_size(limit),
        rows.first().map(|r| r.dir.as_str()).unwrap_or("-"),
        format_size(total)
    );
    ctx.journal.note(JournalEvent::Error, b"", &msg);
    Error::Refused(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u64, files: u64, changed: u64, held: u64) -> IndexRow {
        IndexRow {
            version: n,
            dir: format!("V{n}-20261124T2149{:02}Z", n % 60),
            created: "2026-11-24T21:49:00.000Z".into(),
            files,
            changed,
            held_bytes: held,
            logical_bytes: files * 10,
        }
    }

    fn actions(d: &[Decision]) -> Vec<(u64, Action, Reason)> {
        d.iter().map(|d| (d.version, d.action, d.reason)).collect()
    }

    use Action::{Keep, Retire};

    #[test]
    fn empty_index_plans_nothing() {
        assert!(plan(&[], 3, Some(1)).is_empty());
    }

    #[test]
    fn count_only() {
        let rows: Vec<_> = (1..=5).map(|n| row(n, 10, 1, 100)).collect();
        assert_eq!(
            actions(&plan(&rows, 3, None)),
            vec![
                (1, Retire, Reason::Count),
                (2, Retire, Reason::Count),
                (3, Keep, Reason::Within),
                (4, Keep, Reason::Within),
                (5, Keep, Reason::Newest),
            ]
        );
        // keep 1 retires all but the newest; keep >= len retires nothing.
        assert_eq!(
            plan(&rows, 1, None)
                .iter()
                .filter(|d| d.action == Retire)
                .count(),
            4
        );
        assert!(plan(&rows, 5, None).iter().all(|d| d.action == Keep));
    }

    #[test]
    fn keep_zero_is_no_count_limit() {
        let rows: Vec<_> = (1..=50).map(|n| row(n, 10, 1, 100)).collect();
        assert!(plan(&rows, 0, None).iter().all(|d| d.action == Keep));
    }

    #[test]
    fn size_only_counts_what_moves_forward() {
        // V1 holds 1000 for 10 files; V2 reuses 5 of them: retiring V1 frees ~500.
        let rows = vec![row(1, 10, 10, 1000), row(2, 10, 5, 100), row(3, 10, 1, 100)];
        let d = plan(&rows, 0, Some(800));
        assert_eq!(
            actions(&d),
            vec![
                (1, Retire, Reason::Size),
                (2, Keep, Reason::Within),
                (3, Keep, Reason::Newest)
            ]
        );
        assert_eq!(d[0].estimated_freed, 500);
        // 1200 → 700 after V1; a limit of 650 needs V2 too (which now holds 600).
        let d = plan(&rows, 0, Some(650));
        assert_eq!(d[1].action, Retire);
        assert_eq!(d[1].reason, Reason::Size);
        // Nothing reused: everything frees.
        let rows = vec![row(1, 10, 10, 1000), row(2, 10, 10, 100)];
        assert_eq!(plan(&rows, 0, Some(500))[0].estimated_freed, 1000);
    }

    #[test]
    fn both_limits_name_the_first_that_applies() {
        let rows: Vec<_> = (1..=4).map(|n| row(n, 10, 10, 100)).collect();
        // Count retires V1; then 300 > 150 so size retires V2 and V3.
        assert_eq!(
            actions(&plan(&rows, 3, Some(150))),
            vec![
                (1, Retire, Reason::Count),
                (2, Retire, Reason::Size),
                (3, Retire, Reason::Size),
                (4, Keep, Reason::Newest),
            ]
        );
    }

    #[test]
    fn unmeetable_limit_never_retires_the_newest() {
        let rows = vec![row(1, 1, 1, 5000)];
        assert_eq!(
            actions(&plan(&rows, 0, Some(10))),
            vec![(1, Keep, Reason::Unmeetable)]
        );
        let rows = vec![row(1, 1, 1, 10), row(2, 1, 1, 5000)];
        assert_eq!(
            actions(&plan(&rows, 0, Some(10))),
            vec![(1, Retire, Reason::Size), (2, Keep, Reason::Unmeetable)]
        );
    }

    #[test]
    fn estimate_is_bounded() {
        let a = row(1, 0, 0, 4096);
        assert_eq!(estimate_moved(&a, &row(2, 5, 0, 1), 4096), 0);
        let a = row(1, 4, 4, 400);
        // next claims to reuse more files than a has: capped at all of a.
        assert_eq!(estimate_moved(&a, &row(2, 100, 0, 1), 400), 400);
        assert_eq!(estimate_moved(&a, &row(2, 4, 4, 1), 400), 0);
        assert_eq!(
            estimate_moved(&row(1, 1, 1, u64::MAX), &row(2, 1, 0, 1), u64::MAX),
            u64::MAX
        );
    }
}
