//! Measure 7, the steady state of a continuous backup: a job holding `--steady-versions`
//! versions (100+), then rounds of "10 changed files → our version (event-driven) → the
//! retirement it triggers", against `rsync -a --link-dest` of the same change plus `rm -rf`
//! of the oldest snapshot (rsnapshot's steady state). Two rule sets:
//!
//! - the default rules (`keep_versions = 100`, `keep_within = 1h`, hourly 24, daily 14, …):
//!   before each round the versions' `created` times in index.tsv are spread 10 minutes
//!   apart, ending 10 minutes ago, with the oldest 20 days back, as a continuous backup's
//!   history would be; the rules then thin it, retiring versions in the middle (one that is
//!   not the newest of its hour);
//! - count-only (`--keep N`): the oldest version, the holder of most of the data, goes.
//!
//! Invariant: ours and the peer see the same changes; the peer's chain is kept short (its
//! `rm -rf` of one snapshot costs the same whatever the chain's length).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Bench, JOB};
use crate::peers::{Timing, need, timed, timed_input};
use crate::report::{Row, Samples, Unit};
use crate::tree::event_lines;

/// Minutes between two versions of the arranged history.
const SPACING_MIN: i64 = 10;

/// Age of the oldest version of the arranged history, in days.
const OLDEST_DAYS: i64 = 20;

/// Which rules a round retires by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    Default,
    CountOnly,
}

/// The first version of the job (not timed), when the other measures did not make it.
pub fn first_version(b: &Bench) -> Result<()> {
    timed(b.snap().arg("--source").arg(&b.tree.root).arg("--init"))?;
    Ok(())
}

/// A rescan after the first version (not timed): it writes the source index.
pub fn first_version_rescan(b: &Bench) -> Result<()> {
    timed(&mut b.snap())?;
    Ok(())
}

/// Both rule sets, one after the other, on the same vault.
pub fn steady_state(b: &mut Bench, retained: usize) -> Result<()> {
    let retained = retained.max(2);
    for rules in [Rules::Default, Rules::CountOnly] {
        // The default rules' first round thins the filled history: fill again after it.
        fill(b, retained)?;
        rounds(b, rules, retained)?;
    }
    Ok(())
}

/// Adds versions (10 changed files each, not timed) until the job holds `retained`.
fn fill(b: &mut Bench, retained: usize) -> Result<()> {
    let have = b.versions_on_disk()?.len();
    eprintln!(
        "steady state: adding {} versions",
        retained.saturating_sub(have)
    );
    for _ in have..retained {
        version(b)?;
    }
    Ok(())
}

/// One event-driven version of 10 changed files; its time.
fn version(b: &mut Bench) -> Result<Timing> {
    let paths = b.tree.modify(10, &mut b.rng)?;
    b.cache.prepare()?;
    let (d, out) = timed_input(&mut b.snap_events(), Some(event_lines(&paths).as_bytes()))?;
    if out.trim().is_empty() {
        bail!("reverb-snap made no version for 10 changes");
    }
    Ok(d)
}

/// `--reps` rounds with one rule set: rows for the retirement alone and for version plus
/// retirement.
fn rounds(b: &mut Bench, rules: Rules, retained: usize) -> Result<()> {
    let rsync = need(&b.tools.rsync, "rsync").map(Path::to_path_buf);
    let rm = need(&b.tools.rm, "rm").map(Path::to_path_buf);
    let peers = match (&rsync, &rm) {
        (Ok(rsync), Ok(rm)) => Ok((rsync.clone(), rm.clone())),
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    let (mut retire_t, mut both_t, mut rm_t, mut peer_both_t) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let mut retired = 0usize;
    for rep in 0..b.reps {
        eprintln!(
            "steady state, {rules:?} rules, round {}/{}",
            rep + 1,
            b.reps
        );
        if rules == Rules::Default {
            arrange_history(&b.job_dir())?;
        }
        let before = b.versions_on_disk()?.len();
        let v = version(b)?;
        b.cache.prepare()?;
        let mut retire = b.tools.ours("reverb-retire");
        retire.arg("--vault").arg(&b.vault).args(["--job", JOB]);
        if rules == Rules::CountOnly {
            retire.args(["--keep", &retained.to_string()]);
        }
        let (d, out) = timed_input(&mut retire, None)?;
        retired += out.lines().count();
        retire_t.push(d);
        both_t.push(v + d);
        if let Ok((rsync, rm)) = &peers {
            let (snap, gone) = link_dest_round(b, rsync, rm)?;
            rm_t.push(gone);
            peer_both_t.push(snap + gone);
        }
        let after = b.versions_on_disk()?.len();
        eprintln!("  {before} versions + 1 -> {after}");
    }
    let name = match rules {
        Rules::Default => "default rules",
        Rules::CountOnly => "count-only rules",
    };
    let note = format!(
        "{retained}+ versions retained; {retired} retired in {} rounds",
        b.reps
    );
    let peer = |s: Samples| peers.clone().map(|_| s);
    b.push(
        Row::new(
            format!("steady state, {name}: the retirement after a version"),
            Unit::Seconds,
            retire_t,
            "rm -rf of one --link-dest snapshot",
            peer(rm_t),
            None,
        )
        .note(note.clone()),
    );
    b.push(
        Row::new(
            format!("steady state, {name}: version of 10 changed files + retirement"),
            Unit::Seconds,
            both_t,
            "rsync --link-dest + rm -rf oldest",
            peer(peer_both_t),
            None,
        )
        .note(note),
    );
    Ok(())
}

/// The peer's round: a `--link-dest` snapshot of the source, then `rm -rf` of the oldest
/// (the chain stays two or three long). Times (snapshot, removal).
fn link_dest_round(b: &mut Bench, rsync: &Path, rm: &Path) -> Result<(Timing, Timing)> {
    if b.chain.is_empty() {
        b.start_chain(rsync, 9000)?;
    }
    let new = next_slot(b);
    let snap = b.link_dest_snapshot(rsync, new)?;
    let oldest = b.chain.remove(0);
    b.cache.prepare()?;
    let gone = timed(Command::new(rm).arg("-rf").arg(&oldest))?;
    Ok((snap, gone))
}

fn next_slot(b: &Bench) -> PathBuf {
    let mut i = 9001;
    while b.chain_path(i).exists() {
        i += 1;
    }
    b.chain_path(i)
}

/// Rewrites index.tsv's `created` column: the oldest version 20 days ago (a long-running
/// job's oldest, kept by the daily, weekly and monthly rules), every later one 10 minutes
/// apart, the newest 10 minutes ago (atomically: a temp file renamed over it; the bench
/// holds no lock, and nothing else writes the job meanwhile).
fn arrange_history(job: &Path) -> Result<()> {
    let path = job.join("index.tsv");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let mut lines = text.lines();
    let header = lines.next().context("index.tsv is empty")?;
    let col = header
        .split('\t')
        .position(|c| c == "created")
        .context("index.tsv has no created column")?;
    let rows: Vec<&str> = lines.collect();
    let now = jiff::Timestamp::now();
    let mut out = format!("{header}\n");
    for (i, row) in rows.iter().enumerate() {
        let back = if i == 0 {
            OLDEST_DAYS * 86_400
        } else {
            (rows.len() - i) as i64 * SPACING_MIN * 60
        };
        let t = now - jiff::SignedDuration::from_secs(back);
        let mut fields: Vec<String> = row.split('\t').map(str::to_owned).collect();
        if let Some(f) = fields.get_mut(col) {
            *f = t.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string();
        }
        out.push_str(&fields.join("\t"));
        out.push('\n');
    }
    let tmp = job.join(".bench-index.tsv");
    std::fs::write(&tmp, out).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("rename {}", path.display()))?;
    Ok(())
}
