//! Retiring one version, crash-safe (docs/retirement.md): any version but the newest
//! ([`retire_version`]), or finishing a retirement a crash interrupted ([`resume`]). What
//! to retire is [`super::plan`]'s to say; this module only does it.
//!
//! Owns: the order of the writes that retire a version, the `retiring` mark in job.toml,
//! moving the data still used forward into the next version ([`move_forward`]), and the
//! size bookkeeping of the index rewrite (docs/format.md I7).
//!
//! Theory of operation. Retiring version `Vo` whose next retained version is `Vn` (the
//! oldest or one in the middle: `Vo`'s own links into older versions need nothing, since
//! `Vn`'s links at those paths name the older holder already):
//!
//! 1. mark: job.toml `state.retiring = Vo` (atomic rewrite), then the directories the
//!    retirement will change are recorded ([`super::dir_times`]);
//! 2. every later version `Vm` (m > n): each vault link into `Vo` — found by walking only
//!    the real directories `Vm` shares with `Vo` — is atomically replaced by a link to the
//!    same path in `Vn` ([`super::relink`]: one new inode per path, hard-linked into every
//!    version that needs it).
//!    `Vn` still reaches that path (through its own link into `Vo`, at the path or at an
//!    ancestor), so the new link resolves at once; it becomes canonical in step 3;
//! 3. each vault link of `Vn` into `Vo` at `p`: lookalike records of `Vo` under `p` are
//!    copied to `Vn` and saved first (both keys are right while the data moves: nothing is
//!    physically under a link); then the real entry `Vo/p` takes the link's place — a
//!    directory by `renameat2(RENAME_EXCHANGE)` (the link lands in `Vo/p` and is then
//!    replaced by a link to `Vn/p`, so even `Vo` stays readable), anything else by
//!    `rename(2)` over the link. What moves is `Vo`'s real entry (a link names its
//!    canonical holder), so `Vn/p` becomes canonical; links inside a moved directory keep
//!    their path, so their text still names the same older holder. The parent directory's
//!    times (and the moved directory's) are restored after each rename, so the version
//!    stays exact (I5);
//! 4. `Vo` is deleted; 5. index.tsv is rewritten without `Vo`, with `Vn`'s `held_bytes`
//!    grown by what moved in (`Vo`'s minus what `Vo` still holds, corrected by the usage
//!    changes the moves measured: the links they replaced, and every directory they
//!    touched, since a directory emptied by the moves can shrink), and the later versions'
//!    changed by what their retargeted links and directories measured (docs/format.md I7);
//!    a size that this arithmetic would take below zero or past `u64` is
//!    [`Error::Damaged`] (the index did not match the disk), never clamped;
//!    6. the mark is cleared; 7. `retire` is journaled with the bytes freed.
//!
//! At every instant every link of every retained version resolves. Every step is
//! idempotent, so a run that finds a `retiring` mark simply runs steps 2–7 again: links
//! already retargeted no longer point into `Vo`, entries already moved are real in `Vn`, a
//! missing `Vo` leaves only the index and the mark to fix; a resumed run measures sizes
//! instead of trusting arithmetic. The one window that is not repaired is a crash between
//! a rename and restoring its parent directory's times: that directory's mtime in the
//! vault may then be the retirement's time (data is intact).
//!
//! Each filesystem write above calls [`crate::fault::step`] (test fault injection).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::copy;
use crate::engine::retire::dir_times::{self, Recorder};
use crate::engine::retire::relink::{self, DirGuard, LinkTemps, LinkTexts, OpenDir};
use crate::error::{Error, IoContext, Result, show};
use crate::fault;
use crate::format::index::{self, IndexRow};
use crate::format::journal::JournalEvent;
use crate::format::retiring_tsv::DirState;
use crate::format::settings::format_size;
use crate::fsutil;
use crate::vault::job::JobCtx;
use crate::vault::measure::{self, remains_held};
use crate::vault::tree::{self, Lookalikes};

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

/// Finishes the retirement of `vo` a crash interrupted (job.toml's `retiring` mark names
/// it) and returns the bytes it freed. The caller holds the job lock.
pub fn resume(ctx: &mut JobCtx, vo: &str) -> Result<u64> {
    finish(ctx, vo, true)
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
        dir_times::forget(&ctx.dir.path)?;
        return Ok(0);
    }
    let r = Retirement::new(ctx, vo, rows, resumed)?;
    let tmp = LinkTemps::open(&r.job)?;
    let mut lookalikes = Lookalikes::load(&r.job)?;
    let mut sizes = SizeChanges::default();
    if fs::symlink_metadata(r.job.join(&r.vo)).is_ok() {
        let survey = r.survey(&lookalikes)?;
        let record = r.record(&survey)?;
        if resumed {
            r.finish_interrupted_moves(&record, &tmp)?;
        }
        // Checksum records follow the data before any link names its new place (§ checksums).
        let (vo_n, vn_n) = (r.rows[r.pos].version, r.rows[r.pos + 1].version);
        crate::format::checksums::carry(&r.job, vo_n, vn_n, &survey.moves)?;
        sizes.link_delta = r.retarget_later_links(&survey, &tmp)?;
        sizes.link_correction = r.move_into_next(&survey.moves, &mut lookalikes, &tmp)?;
        dir_times::put_back_all(&r.job, &record)?;
        fault::step();
        sizes.remains = r.delete_old()?;
    }
    r.forget_lookalikes_of_old(&mut lookalikes)?;
    let freed = r.rewrite_index(ctx, &sizes)?;
    clear_mark(ctx)?;
    dir_times::forget(&r.job)?;
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
    fn record(&self, survey: &Survey) -> Result<Vec<DirState>> {
        if let Some(rec) = dir_times::resumed(&self.job, &self.vo)? {
            return Ok(rec);
        }
        let mut dirs = Recorder::default();
        for (vm, by_dir) in &survey.later {
            for dir_rel in by_dir.keys() {
                let rel = Path::new(vm).join(dir_rel);
                dirs.note(rel.clone(), &self.job.join(&rel))?;
            }
        }
        for rel in &survey.moves {
            let parent = Path::new(&self.vn).join(parent_of(rel));
            dirs.note(parent.clone(), &self.job.join(&parent))?;
            let src = self.job.join(&self.vo).join(rel);
            if fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
                // The directory that moves keeps its own times, from Vo.
                dirs.note(Path::new(&self.vn).join(rel), &src)?;
            }
        }
        dirs.save(&self.job, &self.vo)
    }

    /// A directory moved forward without `RENAME_EXCHANGE` ([`move_forward`]) whose move a
    /// crash cut short, after Vn's link was removed and before Vo's directory took its
    /// place: `Vn/p` is missing and `Vo/p` is still a real directory. The record names
    /// `Vn/p` (a directory that moves keeps its times there), so it is found and the move
    /// finished: the directory into Vn, then Vo's link to it.
    fn finish_interrupted_moves(&self, record: &[DirState], tmp: &LinkTemps) -> Result<()> {
        for d in record {
            let Ok(rel) = d.rel.strip_prefix(&self.vn) else {
                continue;
            };
            let dst = self.job.join(&d.rel);
            let src = self.job.join(&self.vo).join(rel);
            if rel.as_os_str().is_empty()
                || fs::symlink_metadata(&dst).is_ok()
                || !fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir())
            {
                continue;
            }
            let src_guard = DirGuard::open(parent_of(&src))?;
            let guard = DirGuard::open(parent_of(&dst))?;
            let moving = DirGuard::open(&src)?;
            fs::rename(&src, &dst).ctx("cannot move into the next version", &dst)?;
            moving.restore()?;
            guard.restore()?;
            fault::step();
            let src_parent = OpenDir::open(parent_of(&src))?;
            tmp.replace_link(
                &tree::link_text(rel, &self.vn),
                &src_parent,
                rel.file_name().unwrap_or_default(),
            )?;
            src_guard.restore()?;
            fault::step();
        }
        Ok(())
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
        let new_rows = self.rows_without_old(sizes, &ctx.dir.index())?;
        let freed = index::total_held(&self.rows).saturating_sub(index::total_held(&new_rows));
        index::write(&ctx.dir.index(), &new_rows)?;
        fault::step();
        Ok(freed)
    }

    /// The index rows once Vo is gone (`index` is index.tsv's path, for messages).
    fn rows_without_old(&self, sizes: &SizeChanges, index: &Path) -> Result<Vec<IndexRow>> {
        let pos = self.pos;
        let (old, next) = (&self.rows[pos], &self.rows[pos + 1]);
        let mut new_rows: Vec<IndexRow> = self.rows.clone();
        new_rows.remove(pos);
        let moved_in = sizes.remains.and_then(|r| old.held_bytes.checked_sub(r));
        new_rows[pos].held_bytes = match moved_in {
            Some(m) if !self.resumed => {
                let delta = i128::from(m) + i128::from(sizes.link_correction);
                held_changed_by(index, next, delta)?
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
                r.held_bytes = held_changed_by(index, r, i128::from(*d))?;
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

/// `row`'s `held_bytes` changed by `delta` (step 5). A size below zero or past `u64` means
/// the index did not match the disk: [`Error::Damaged`], naming the file and the row, never
/// clamped (a run that resumes the retirement measures instead).
fn held_changed_by(index: &Path, row: &IndexRow, delta: i128) -> Result<u64> {
    let changed = i128::from(row.held_bytes) + delta;
    u64::try_from(changed).map_err(|_| {
        Error::Damaged(format!(
            "{} row of {}: held_bytes {} changed by {delta} is {changed}, out of range: the index does not match the disk (see reverb-index --check)",
            show(index),
            row.dir,
            row.held_bytes
        ))
    })
}

/// The disk usage of `p` itself, signed for the size arithmetic of [`move_forward`].
fn usage(p: &Path) -> Result<i64> {
    let bytes = measure::disk_usage(&fs::symlink_metadata(p).ctx("cannot inspect", p)?);
    i64::try_from(bytes)
        .map_err(|_| Error::Damaged(format!("{}: disk usage {bytes} is out of range", show(p))))
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
    let dirs_before = usage(src_dir)? + usage(dst_dir)?;
    // A rename takes write permission on both directories: a non-root writer makes each
    // writable for the move and puts its mode back (a read-only directory of the source,
    // 0555, is one in the version too).
    let src_guard = DirGuard::open(src_dir)?;
    let guard = DirGuard::open(dst_dir)?;
    let link = usage(&dst)?;
    let left_in_old = if sm.is_dir() {
        // A directory moved to another parent has its `..` rewritten: it must be writable
        // too. Its guard holds it open, so its mode is put back wherever it is then.
        let moving = DirGuard::open(&src)?;
        if exchange(&src, &dst)? {
            moving.restore()?;
            set_times(&dst, &sm)?;
            guard.restore()?;
            fault::step();
        } else {
            // No RENAME_EXCHANGE here (sshfs): the link goes, then the directory takes its
            // place. A crash between the two is finished by the resumed run
            // ([`Retirement::finish_interrupted_moves`]).
            fs::remove_file(&dst).ctx("cannot remove the vault link", &dst)?;
            fault::step();
            fs::rename(&src, &dst).ctx("cannot move into the next version", &dst)?;
            moving.restore()?;
            set_times(&dst, &sm)?;
            guard.restore()?;
            fault::step();
        }
        // The link now at Vo/rel names Vo/rel itself (or nothing is there): point it at
        // the data's new place.
        let src_parent = OpenDir::open(src_dir)?;
        tmp.replace_link(
            &tree::link_text(rel, vn),
            &src_parent,
            rel.file_name().unwrap_or_default(),
        )?;
        src_guard.restore()?;
        fault::step();
        usage(&src)?
    } else {
        fs::rename(&src, &dst).ctx("cannot move into the next version", &dst)?;
        guard.restore()?;
        src_guard.restore()?;
        fault::step();
        0
    };
    let dirs_after = usage(src_dir)? + usage(dst_dir)?;
    Ok(left_in_old - link + dirs_after - dirs_before)
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: swaps two entries atomically. `false` when the
/// filesystem cannot (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`: sshfs, some FUSE and network
/// filesystems; docs/filesystems.md) and nothing was changed.
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use nix::errno::Errno;
    if fault::exchange_refused() {
        return Ok(false);
    }
    match nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(std::io::Error::from(e)).ctx("cannot swap (RENAME_EXCHANGE) into", b),
    }
}

/// Sets a path's atime and mtime (nanoseconds) from `meta`, not following a symlink.
fn set_times(path: &Path, meta: &fs::Metadata) -> Result<()> {
    copy::set_times(path, meta).ctx("cannot set times of", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u64, held: u64) -> IndexRow {
        IndexRow {
            version: n,
            dir: format!("V{n}-20261124T2000{n:02}Z"),
            created: format!("2026-11-24T20:00:{n:02}.000Z"),
            files: 1,
            changed: 1,
            held_bytes: held,
            logical_bytes: 1,
        }
    }

    /// Retiring V1 of V1..=V3, not resumed (nothing on disk is read).
    fn retirement(rows: Vec<IndexRow>) -> Retirement {
        Retirement {
            job: PathBuf::from("/nonexistent/job"),
            vo: rows[0].dir.clone(),
            vn: rows[1].dir.clone(),
            later: vec![rows[2].dir.clone()],
            rows,
            pos: 0,
            resumed: false,
        }
    }

    fn sizes(remains: u64, link_correction: i64, later_delta: i64) -> SizeChanges {
        SizeChanges {
            link_delta: HashMap::from([(row(3, 0).dir, later_delta)]),
            link_correction,
            remains: Some(remains),
        }
    }

    #[test]
    fn held_bytes_follow_the_measured_changes() {
        let r = retirement(vec![row(1, 1000), row(2, 100), row(3, 50)]);
        let index = Path::new("/nonexistent/job/index.tsv");
        // V1 still held 300: 700 moved into V2, which also lost 20 to the links it gave up.
        let rows = r
            .rows_without_old(&sizes(300, -20, -10), index)
            .expect("rows");
        let held: Vec<(u64, u64)> = rows.iter().map(|r| (r.version, r.held_bytes)).collect();
        assert_eq!(held, [(2, 780), (3, 40)]);
    }

    #[test]
    fn a_size_below_zero_is_damage_not_zero() {
        let r = retirement(vec![row(1, 1000), row(2, 100), row(3, 50)]);
        let index = Path::new("/nonexistent/job/index.tsv");
        // The later version's links were measured to free more than the index says it holds.
        let e = r
            .rows_without_old(&sizes(300, 0, -51), index)
            .expect_err("out of range");
        let msg = e.to_string();
        assert!(matches!(e, Error::Damaged(_)), "{msg}");
        assert!(
            msg.contains("index.tsv row of V3-20261124T200003Z: held_bytes 50 changed by -51"),
            "{msg}"
        );
        // The same for the next version, and past u64 too.
        let e = r.rows_without_old(&sizes(300, -801, 0), index);
        assert!(matches!(e, Err(Error::Damaged(_))), "{e:?}");
        let big = retirement(vec![row(1, u64::MAX), row(2, u64::MAX), row(3, 0)]);
        let e = big.rows_without_old(&sizes(0, 0, 0), index);
        assert!(matches!(e, Err(Error::Damaged(_))), "{e:?}");
    }
}
