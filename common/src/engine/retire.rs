//! Retiring versions (docs/retirement.md): the plan ([`plan`], pure: the `keep_*` rules of
//! [`crate::engine::policy`], then the size limit) and the crash-safe retirement of any
//! version but the newest ([`retire_version`], looped by [`enforce`]).
//!
//! Owns: the order of the writes that retire a version, the `retiring` mark in job.toml,
//! the refusal of an unmeetable size limit, and the one-time size recount bookkeeping
//! (`size_recounted`).
//!
//! Theory of operation. Retiring version `Vo` whose next retained version is `Vn` (the
//! oldest or one in the middle: `Vo`'s own links into older versions need nothing, since
//! `Vn`'s links at those paths name the older holder already):
//!
//! 1. mark: job.toml `state.retiring = Vo` (atomic rewrite);
//! 2. every later version `Vm` (m > n): each vault link into `Vo` — found by walking only
//!    the real directories `Vm` shares with `Vo` — is atomically replaced by a link to the
//!    same path in `Vn` ([`crate::engine::relink`]: one new inode per path, hard-linked
//!    into every version that needs it).
//!    `Vn` still reaches that path (through its own link into `Vo`, at the path or at an
//!    ancestor), so the new link resolves at once; it becomes canonical in step 3;
//! 3. each vault link of `Vn` into `Vo` at `p`: lookalike records of `Vo` under `p` are
//!    copied to `Vn` and saved first (both keys are right while the data moves: nothing is
//!    physically under a link); then the real entry `Vo/p` takes the link's place — a
//!    directory by `renameat2(RENAME_EXCHANGE)` (the link lands in `Vo/p` and is then
//!    replaced by a link to `Vn/p`, so even `Vo` stays readable), anything else by
//!    `rename(2)` over the link. What moves is `Vo`'s real entry (a link names its
//!    canonical holder), so `Vn/p` becomes canonical; links inside a moved directory keep
//!    their path, so their text still names the same older holder. The parent directory's times (and the moved
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
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::engine::copy;
use crate::engine::policy::{self, Candidate, Rule, Verdict};
use crate::engine::relink::{self, DirGuard, LinkTemps, LinkTexts, OpenDir};
use crate::engine::retiring;
use crate::engine::snapshot;
use crate::error::{Error, IoContext, Result, show};
use crate::fault;
use crate::format::index::{self, IndexRow};
use crate::format::journal::JournalEvent;
use crate::format::settings::{Rules, format_size};
use crate::fsutil;
use crate::vault::check;
use crate::vault::job::JobCtx;
use crate::vault::layout::VersionName;
use crate::vault::measure::{self, remains_held};
use crate::vault::tree::{self, Lookalikes};

/// Why a version is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No `keep_*` rule keeps it.
    Rules,
    /// The job folder is larger than `vault_size_limit`.
    Size,
    /// Finishing a retirement a crash interrupted.
    Resumed,
}

impl Reason {
    /// The reason's name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rules => "no-rule",
            Reason::Size => "size",
            Reason::Resumed => "resumed",
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

/// The plan's verdict on one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The version number.
    pub version: u64,
    /// Its directory.
    pub dir: String,
    /// Keep or retire.
    pub action: Action,
    /// For a kept version: the rules that keep it (see [`policy::plan`]).
    pub kept_by: Vec<Rule>,
    /// For a retirement: why.
    pub reason: Option<Reason>,
    /// For a retirement: the bytes it is estimated to free (see [`estimate_moved`]).
    pub estimated_freed: u64,
}

impl Decision {
    /// The rule(s) that decided, for output: `keep_daily,keep_within`, `no-rule`, `size`.
    pub fn decided_by(&self) -> String {
        match self.reason {
            Some(r) => r.as_str().to_owned(),
            None => {
                let names: Vec<&str> = self.kept_by.iter().map(|r| r.as_str()).collect();
                names.join(",")
            }
        }
    }
}

/// A size limit the newest version alone exceeds: nothing is retired for size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmeetable {
    /// The newest version's directory.
    pub newest: String,
    /// What it needs on its own, as a complete tree (bytes).
    pub needs: u64,
    /// The limit (bytes).
    pub limit: u64,
}

impl fmt::Display for Unmeetable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "size limit unmeetable: the newest version alone needs {} ({} bytes, {}), more than vault_size_limit {} ({} bytes): nothing retired for size",
            format_size(self.needs),
            self.needs,
            self.newest,
            format_size(self.limit),
            self.limit
        )
    }
}

impl Unmeetable {
    /// The error of job folder `job` that this makes ([`Error::SizeLimitUnmeetable`]).
    pub fn into_error(self, job: &str) -> Error {
        Error::SizeLimitUnmeetable {
            job: job.to_owned(),
            needs: self.needs,
            limit: self.limit,
            detail: self.to_string(),
        }
    }
}

/// The whole plan: a decision per version (oldest first), and whether the size limit
/// cannot be met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One per version, oldest first.
    pub decisions: Vec<Decision>,
    /// Set when the newest version alone exceeds the size limit.
    pub unmeetable: Option<Unmeetable>,
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

/// What the newest version needs on its own as a complete tree: its files' apparent size,
/// or what it holds itself when that is more.
fn newest_needs(rows: &[IndexRow]) -> u64 {
    rows.last()
        .map(|r| r.logical_bytes.max(r.held_bytes))
        .unwrap_or(0)
}

/// The unmeetable limit, if `limit` is one for these rows when the job holds `total`
/// bytes: only a job over its limit can need a retirement that cannot succeed.
fn unmeetable_for(rows: &[IndexRow], limit: Option<u64>, total: u64) -> Option<Unmeetable> {
    let (limit, newest) = (limit?, rows.last()?);
    let needs = newest_needs(rows);
    (total > limit && needs > limit).then(|| Unmeetable {
        newest: newest.dir.clone(),
        needs,
        limit,
    })
}

/// When a version was taken, for the policy.
fn created_of(row: &IndexRow) -> Result<Timestamp> {
    row.created.parse::<Timestamp>().map_err(|e| {
        Error::Damaged(format!(
            "index.tsv row of {}: created `{}` is not a time: {e}",
            row.dir, row.created
        ))
    })
}

/// The policy's verdicts on `rows` (index order), by number.
fn verdicts(
    rows: &[IndexRow],
    rules: &Rules,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<Vec<Verdict>> {
    let candidates = rows
        .iter()
        .map(|r| {
            Ok(Candidate {
                version: r.version,
                created: created_of(r)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(policy::plan(&candidates, rules, now, tz))
}

/// The retirement plan (docs/retirement.md), pure: every version no rule keeps is retired
/// ([`policy::plan`]; never the newest); then, while the sum of `held_bytes` is above
/// `size_limit`, the oldest kept one — unless the newest alone exceeds the limit
/// ([`Plan::unmeetable`]), when nothing is retired for size. What each retirement frees is
/// estimated with [`estimate_moved`]; [`enforce`] re-reads the index after every real one.
pub fn plan(
    rows: &[IndexRow],
    rules: &Rules,
    size_limit: Option<u64>,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<Plan> {
    let verdicts = verdicts(rows, rules, now, tz)?;
    let mut held: Vec<u64> = rows.iter().map(|r| r.held_bytes).collect();
    let mut total: u64 = held.iter().sum();
    let mut decisions = Vec::with_capacity(rows.len());
    let retire = |i: usize, held: &mut Vec<u64>, total: &mut u64| {
        let moved = estimate_moved(&rows[i], &rows[i + 1], held[i]).min(held[i]);
        let freed = held[i] - moved;
        held[i + 1] += moved;
        *total -= freed;
        freed
    };
    for (i, (r, v)) in rows.iter().zip(&verdicts).enumerate() {
        let gone = !v.keep() && i + 1 < rows.len();
        decisions.push(Decision {
            version: r.version,
            dir: r.dir.clone(),
            action: if gone { Action::Retire } else { Action::Keep },
            kept_by: v.kept_by.clone(),
            reason: gone.then_some(Reason::Rules),
            estimated_freed: if gone {
                retire(i, &mut held, &mut total)
            } else {
                0
            },
        });
    }
    let unmeetable = unmeetable_for(rows, size_limit, total);
    if let (Some(limit), None) = (size_limit, &unmeetable) {
        let last = rows.len().saturating_sub(1);
        for (i, d) in decisions.iter_mut().enumerate().take(last) {
            if total <= limit {
                break;
            }
            if d.action == Action::Keep {
                d.estimated_freed = retire(i, &mut held, &mut total);
                d.action = Action::Retire;
                d.reason = Some(Reason::Size);
            }
        }
    }
    Ok(Plan {
        decisions,
        unmeetable,
    })
}

/// Retires version `dir` (any but the newest; or first finishes a retirement a crash
/// interrupted, returning what that freed) and returns the bytes freed. The caller holds
/// the job lock.
pub fn retire_version(ctx: &mut JobCtx, dir: &str) -> Result<u64> {
    if let Some(vo) = ctx.file.state.retiring.clone() {
        return finish(ctx, &vo, true);
    }
    let rows = index::read(&ctx.dir.index())?;
    match rows.iter().position(|r| r.dir == dir) {
        None => {
            return Err(Error::Usage(format!(
                "job {}: {dir} is not a retained version",
                ctx.dir.folder
            )));
        }
        Some(i) if i + 1 == rows.len() => {
            return Err(Error::Refused(format!(
                "job {}: {dir} is the newest version: the newest version is never retired",
                ctx.dir.folder
            )));
        }
        Some(_) => {}
    }
    ctx.file.state.retiring = Some(dir.to_owned());
    ctx.file.write(&ctx.dir.job_toml())?;
    fault::step();
    finish(ctx, dir, false)
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
        retiring::remove(&ctx.dir.path)?;
        return Ok(0);
    }
    let r = Retirement::new(ctx, vo, rows, resumed)?;
    let tmp = LinkTemps::open(&r.job)?;
    let mut lookalikes = Lookalikes::load(&r.job)?;
    let mut sizes = SizeChanges::default();
    if fs::symlink_metadata(r.job.join(&r.vo)).is_ok() {
        let survey = r.survey(&lookalikes)?;
        let record = r.record(&survey)?;
        // Checksum records follow the data before any link names its new place (§ checksums).
        let (vo_n, vn_n) = (r.rows[r.pos].version, r.rows[r.pos + 1].version);
        crate::format::checksums::carry(&r.job, vo_n, vn_n, &survey.moves)?;
        sizes.link_delta = r.retarget_later_links(&survey, &tmp)?;
        sizes.link_correction = r.move_into_next(&survey.moves, &mut lookalikes, &tmp)?;
        retiring::put_back_all(&r.job, &record)?;
        fault::step();
        sizes.remains = r.delete_old()?;
    }
    r.forget_lookalikes_of_old(&mut lookalikes)?;
    let freed = r.rewrite_index(ctx, &sizes)?;
    clear_mark(ctx)?;
    retiring::remove(&r.job)?;
    r.journal(ctx, freed)?;
    Ok(freed)
}

/// What a retirement will change, found before it changes anything.
struct Survey {
    /// Per later version: its links into Vo, grouped by the directory holding them.
    later: Vec<(String, relink::ByDir)>,
    /// The paths where Vn links into Vo: what moves forward.
    moves: Vec<PathBuf>,
}

/// One retirement of version `vo` into the next one `vn`, as the index had it when it
/// started (or resumed).
struct Retirement {
    job: PathBuf,
    vo: String,
    vn: String,
    /// index.tsv as read: `rows[pos]` is `vo`, `rows[pos + 1]` is `vn`.
    rows: Vec<IndexRow>,
    pos: usize,
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
    /// Checks that `vo` can be retired (indexed, not the newest, the next version on disk)
    /// and finds the later versions.
    fn new(ctx: &mut JobCtx, vo: &str, rows: Vec<IndexRow>, resumed: bool) -> Result<Retirement> {
        let Some(pos) = rows.iter().position(|r| r.dir == vo) else {
            return Err(Error::Damaged(format!(
                "{vo}, marked as retiring in {}, is not in index.tsv",
                show(&ctx.dir.job_toml())
            )));
        };
        if pos + 1 == rows.len() {
            clear_mark(ctx)?;
            return Err(Error::Refused(format!(
                "{vo} is the newest version of job {}: never retired",
                ctx.dir.folder
            )));
        }
        let job = ctx.dir.path.clone();
        let (vn, vn_n) = (rows[pos + 1].dir.clone(), rows[pos + 1].version);
        if !job.join(&vn).is_dir() {
            return Err(Error::Damaged(format!(
                "cannot retire {vo}: the next version {vn} is missing from {} (see reverb-index --check)",
                show(&job)
            )));
        }
        let mut later: Vec<String> = rows[pos + 2..].iter().map(|r| r.dir.clone()).collect();
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
            pos,
            later,
            resumed,
        })
    }

    /// Finds every link to rewrite and every entry to move (walking only the real
    /// directories Vn and the later versions share with Vo).
    fn survey(&self, lookalikes: &Lookalikes) -> Result<Survey> {
        let mut texts = LinkTexts::for_job(&self.job);
        let mut later = Vec::with_capacity(self.later.len());
        for vm in &self.later {
            let by_dir = relink::links_into(&self.job, vm, &self.vo, lookalikes, &mut texts)?;
            later.push((vm.clone(), by_dir));
        }
        let mut moves: Vec<PathBuf> =
            relink::links_into(&self.job, &self.vn, &self.vo, lookalikes, &mut texts)?
                .into_values()
                .flatten()
                .collect();
        moves.sort();
        Ok(Survey { later, moves })
    }

    /// The second half of the mark: the mode and times of every directory of a retained
    /// version the retirement will change, recorded durably before the first change. A run
    /// that resumes keeps the record the crashed run wrote (its directories may already
    /// have changed); one that finds none (the crash came before it) records now, since
    /// nothing was changed yet.
    fn record(&self, survey: &Survey) -> Result<Vec<retiring::DirState>> {
        if let Some(rec) = retiring::read(&self.job, &self.vo)? {
            return Ok(rec);
        }
        let mut dirs: BTreeMap<PathBuf, fs::Metadata> = BTreeMap::new();
        let mut note = |rel: PathBuf, from: &Path| -> Result<()> {
            if let std::collections::btree_map::Entry::Vacant(e) = dirs.entry(rel) {
                e.insert(fs::symlink_metadata(from).ctx("cannot inspect", from)?);
            }
            Ok(())
        };
        for (vm, by_dir) in &survey.later {
            for dir_rel in by_dir.keys() {
                let rel = Path::new(vm).join(dir_rel);
                note(rel.clone(), &self.job.join(&rel))?;
            }
        }
        for rel in &survey.moves {
            let parent = Path::new(&self.vn).join(parent_of(rel));
            note(parent.clone(), &self.job.join(&parent))?;
            let src = self.job.join(&self.vo).join(rel);
            if fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
                // The directory that moves keeps its own times, from Vo.
                note(Path::new(&self.vn).join(rel), &src)?;
            }
        }
        let rec: Vec<retiring::DirState> = dirs
            .into_iter()
            .map(|(rel, m)| retiring::DirState::of(rel, &m))
            .collect();
        retiring::write(&self.job, &self.vo, &rec)?;
        fault::step();
        Ok(rec)
    }

    /// Step 2: every later version's links into Vo are retargeted to the same path in Vn
    /// ([`relink::retarget`]). Returns each version's change of usage.
    fn retarget_later_links(
        &self,
        survey: &Survey,
        tmp: &LinkTemps,
    ) -> Result<HashMap<String, i64>> {
        let same_length = self.vo.len() == self.vn.len();
        relink::retarget(&self.job, &self.vn, same_length, &survey.later, tmp)
    }

    /// Step 3: what Vn still uses from Vo moves into Vn, the lookalike records under each
    /// moved path first. Returns the correction of Vn's size for what the moves changed
    /// besides moving data (the links they replaced, the directories they touched, see
    /// [`move_forward`]).
    fn move_into_next(
        &self,
        moves: &[PathBuf],
        lookalikes: &mut Lookalikes,
        tmp: &LinkTemps,
    ) -> Result<i64> {
        if !lookalikes.is_empty() {
            let mut added = false;
            for rel in moves {
                added |= lookalikes.alias(&self.vo, &self.vn, rel);
            }
            if added {
                lookalikes.save(&self.job)?;
                fault::step();
            }
        }
        let mut link_correction = 0i64;
        for rel in moves {
            link_correction += move_forward(&self.job, &self.vo, &self.vn, rel, tmp)?;
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
        let keep: HashSet<String> = self
            .rows
            .iter()
            .filter(|r| r.dir != self.vo)
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
        let pos = self.pos;
        let (old, next) = (&self.rows[pos], &self.rows[pos + 1]);
        let mut new_rows: Vec<IndexRow> = self.rows.clone();
        new_rows.remove(pos);
        let moved_in = sizes.remains.and_then(|r| old.held_bytes.checked_sub(r));
        new_rows[pos].held_bytes = match moved_in {
            Some(m) if !self.resumed => {
                (next.held_bytes as i64 + m as i64 + sizes.link_correction).max(0) as u64
            }
            // A resumed run cannot trust the arithmetic: measure.
            _ => measure::held_bytes(&self.job.join(&self.vn))?,
        };
        for r in new_rows.iter_mut().skip(pos + 1) {
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
fn move_forward(job: &Path, vo: &str, vn: &str, rel: &Path, tmp: &LinkTemps) -> Result<i64> {
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
        let src_parent = OpenDir::open(src_dir)?;
        tmp.replace_link(
            &tree::link_text(rel, vn),
            &src_parent,
            rel.file_name().unwrap_or_default(),
        )?;
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

/// What to enforce: the rules, the size limit, and the clock and time zone they read.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The `keep_*` rules.
    pub rules: Rules,
    /// `vault_size_limit` (None = none).
    pub size_limit: Option<u64>,
    /// The time the rules are applied at.
    pub now: Timestamp,
    /// The time zone of the buckets.
    pub tz: TimeZone,
}

impl Limits {
    /// These rules and limit, now, in the host's time zone.
    pub fn now(rules: Rules, size_limit: Option<u64>) -> Limits {
        Limits {
            rules,
            size_limit,
            now: Timestamp::now(),
            tz: policy::host_time_zone(),
        }
    }

    /// The [`plan`] of these limits for the versions `rows`.
    pub fn plan(&self, rows: &[IndexRow]) -> Result<Plan> {
        plan(rows, &self.rules, self.size_limit, self.now, &self.tz)
    }
}

/// Enforces the limits (docs/retirement.md): finishes an interrupted retirement, then
/// retires every version no rule keeps (oldest first), then the oldest while the index's
/// sum of `held_bytes` is above the size limit. The first time the size limit is hit, the
/// job is recounted from disk first (once per job, recorded in job.toml). A size limit the
/// newest version alone exceeds retires nothing for size: it is journaled as an `error` and
/// is [`Error::SizeLimitUnmeetable`]. `dry_run` returns the [`plan`]'s
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
        let freed = finish(ctx, &vo, true)?;
        report(Retired {
            version: VersionName::parse(&vo).map(|v| v.n).unwrap_or(0),
            dir: vo,
            reason: Reason::Resumed,
            freed_bytes: freed,
        });
    }
    // A record whose retirement finished (a crash after the mark was cleared) is stale.
    retiring::remove(&ctx.dir.path)?;
    snapshot::recover(ctx)?;
    let rows = index::read_index_or_empty(&ctx.dir.index())?;
    let by_rules = plan(&rows, &limits.rules, None, limits.now, &limits.tz)?;
    for d in by_rules.decisions {
        if d.action == Action::Retire {
            let freed = retire_version(ctx, &d.dir)?;
            report(Retired {
                version: d.version,
                dir: d.dir,
                reason: Reason::Rules,
                freed_bytes: freed,
            });
        }
    }
    while let Some((version, dir)) = next_for_size(ctx, limits.size_limit)? {
        let freed = retire_version(ctx, &dir)?;
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
fn refuse_without_index(dir: &crate::vault::layout::JobDir) -> Result<()> {
    if !dir.index().exists() && !dir.versions_on_disk()?.is_empty() {
        return Err(Error::Damaged(format!(
            "{} is missing but versions are on disk: nothing retired (see reverb-index --check)",
            show(&dir.index())
        )));
    }
    Ok(())
}

/// The dry run: the [`plan`]'s retirements, nothing written.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Version `n`, taken `n` minutes after 2026-11-24T20:00Z.
    fn row(n: u64, files: u64, changed: u64, held: u64) -> IndexRow {
        IndexRow {
            version: n,
            dir: format!("V{n}-20261124T2000{:02}Z", n % 60),
            created: format!("2026-11-24T{:02}:{:02}:00.000Z", 20 + n / 60, n % 60),
            files,
            changed,
            held_bytes: held,
            logical_bytes: files * 10,
        }
    }

    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().expect("time")
    }

    fn count_rules(n: u64) -> Rules {
        Rules {
            versions: n,
            ..Rules::NONE
        }
    }

    fn run(rows: &[IndexRow], rules: &Rules, limit: Option<u64>) -> Plan {
        plan(rows, rules, limit, now(), &TimeZone::UTC).expect("plan")
    }

    fn actions(p: &Plan) -> Vec<(u64, Action, String)> {
        p.decisions
            .iter()
            .map(|d| (d.version, d.action, d.decided_by()))
            .collect()
    }

    use Action::{Keep, Retire};

    fn a(v: u64, act: Action, by: &str) -> (u64, Action, String) {
        (v, act, by.to_owned())
    }

    #[test]
    fn empty_index_plans_nothing() {
        let p = run(&[], &count_rules(3), Some(1));
        assert!(p.decisions.is_empty() && p.unmeetable.is_none());
    }

    #[test]
    fn count_only() {
        let rows: Vec<_> = (1..=5).map(|n| row(n, 10, 1, 100)).collect();
        assert_eq!(
            actions(&run(&rows, &count_rules(3), None)),
            vec![
                a(1, Retire, "no-rule"),
                a(2, Retire, "no-rule"),
                a(3, Keep, "keep_versions"),
                a(4, Keep, "keep_versions"),
                a(5, Keep, "newest,keep_versions"),
            ]
        );
        let retired = |p: Plan| p.decisions.iter().filter(|d| d.action == Retire).count();
        assert_eq!(retired(run(&rows, &count_rules(1), None)), 4);
        assert_eq!(retired(run(&rows, &count_rules(5), None)), 0);
        // Every rule 0: nothing retired by count or time.
        assert_eq!(retired(run(&rows, &Rules::NONE, None)), 0);
    }

    #[test]
    fn thinning_retires_middle_versions() {
        // Versions at minutes 1..=5 of one hour and 61..=62 of the next: hourly keeps the
        // newest of each hour, so 1–4 go and so does 61; 5 and 62 stay.
        let rows: Vec<_> = [1, 2, 3, 4, 5, 61, 62].map(|n| row(n, 10, 1, 100)).into();
        let rules = Rules {
            hourly: 2,
            ..Rules::NONE
        };
        let got: Vec<(u64, Action)> = run(&rows, &rules, None)
            .decisions
            .iter()
            .map(|d| (d.version, d.action))
            .collect();
        assert_eq!(
            got,
            [
                (1, Retire),
                (2, Retire),
                (3, Retire),
                (4, Retire),
                (5, Keep),
                (61, Retire),
                (62, Keep)
            ]
        );
    }

    #[test]
    fn size_only_counts_what_moves_forward() {
        // V1 holds 1000 for 10 files; V2 reuses 5 of them: retiring V1 frees ~500.
        let rows = vec![row(1, 10, 10, 1000), row(2, 10, 5, 100), row(3, 10, 1, 100)];
        let p = run(&rows, &Rules::NONE, Some(800));
        assert_eq!(
            actions(&p),
            vec![
                a(1, Retire, "size"),
                a(2, Keep, "no-rules"),
                a(3, Keep, "newest,no-rules"),
            ]
        );
        assert_eq!(p.decisions[0].estimated_freed, 500);
        // 1200 → 700 after V1; a limit of 650 needs V2 too (which now holds 600).
        let p = run(&rows, &Rules::NONE, Some(650));
        assert_eq!(p.decisions[1].action, Retire);
        assert_eq!(p.decisions[1].reason, Some(Reason::Size));
        // Nothing reused: everything frees.
        let rows = vec![row(1, 10, 10, 1000), row(2, 10, 10, 100)];
        assert_eq!(
            run(&rows, &Rules::NONE, Some(500)).decisions[0].estimated_freed,
            1000
        );
    }

    #[test]
    fn rules_first_then_size() {
        let rows: Vec<_> = (1..=4).map(|n| row(n, 10, 10, 100)).collect();
        // The rules retire V1; then 300 > 150 so size retires V2 and V3.
        assert_eq!(
            actions(&run(&rows, &count_rules(3), Some(150))),
            vec![
                a(1, Retire, "no-rule"),
                a(2, Retire, "size"),
                a(3, Retire, "size"),
                a(4, Keep, "newest,keep_versions"),
            ]
        );
    }

    #[test]
    fn unmeetable_limit_retires_nothing_for_size() {
        // The newest holds 60 files (600 logical bytes): a limit of 500 cannot be met, and
        // the older versions stay (the size rule never retires when it cannot succeed).
        let rows = vec![row(1, 1, 1, 10), row(2, 1, 1, 10), row(3, 60, 60, 700)];
        let p = run(&rows, &Rules::NONE, Some(500));
        assert!(p.decisions.iter().all(|d| d.action == Keep));
        let u = p.unmeetable.expect("unmeetable");
        assert_eq!((u.needs, u.limit), (700, 500));
        let msg = u.to_string();
        assert!(
            msg.starts_with("size limit unmeetable: the newest version alone needs 700 B"),
            "{msg}"
        );
        // The rules still apply.
        let p = run(&rows, &count_rules(2), Some(500));
        assert_eq!(p.decisions[0].action, Retire);
        assert_eq!(p.decisions[0].reason, Some(Reason::Rules));
        assert!(p.unmeetable.is_some());
        // A limit the newest meets is not unmeetable.
        assert!(run(&rows, &Rules::NONE, Some(700)).unmeetable.is_none());
    }

    #[test]
    fn a_job_under_its_limit_is_never_unmeetable() {
        // A sparse newest version: 100 files of apparent size (1,000 bytes) that hold 16
        // bytes on disk. The job (36 bytes) is under the limit of 500: nothing to retire
        // for size, so nothing is unmeetable (the real run exits 0, and so must --dry-run).
        let rows = vec![row(1, 1, 1, 10), row(2, 1, 1, 10), row(3, 100, 100, 16)];
        let p = run(&rows, &Rules::NONE, Some(500));
        assert!(
            p.unmeetable.is_none(),
            "{:?}",
            p.unmeetable.map(|u| u.to_string())
        );
        assert!(p.decisions.iter().all(|d| d.action == Keep));
    }

    #[test]
    fn keep_within_keeps_recent_versions() {
        let rows: Vec<_> = (1..=5).map(|n| row(n, 1, 1, 1)).collect();
        let rules = Rules {
            within: Duration::from_secs(16 * 3600 - 3 * 60 + 30),
            ..Rules::NONE
        };
        // now is 16 h after 20:00: V3 (20:03) is 15h57m old, kept; V2 is 15h58m old.
        let kept: Vec<u64> = run(&rows, &rules, None)
            .decisions
            .iter()
            .filter(|d| d.action == Keep)
            .map(|d| d.version)
            .collect();
        assert_eq!(kept, [3, 4, 5]);
    }

    #[test]
    fn an_unparsable_created_time_is_damage() {
        let mut rows = vec![row(1, 1, 1, 1), row(2, 1, 1, 1)];
        rows[0].created = "yesterday".into();
        let e = plan(&rows, &count_rules(1), None, now(), &TimeZone::UTC).expect_err("bad");
        assert!(e.to_string().contains("yesterday"), "{e}");
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
