//! Measures 2, 3, 6 and 4: later versions against `rsync -a --link-dest` (rsnapshot's
//! method) and `cp -al` + copying the changed files; the rescan of an unchanged tree against
//! `rsync -a --dry-run`; the disk usage of ~20 versions against ~20 snapshots; retiring the
//! oldest version against `rm -rf` of the oldest snapshot.
//!
//! A round of changes rewrites `n` small files, then (in this order, each after the cache
//! policy): `cp -al <prev> <new>` + `cp -a --parents --remove-destination` of the `n` files
//! (thrown away after counting), our version (event-driven: exactly the `n` paths as event
//! lines on stdin; or a rescan), and `rsync --link-dest=<prev>` (kept: the next `prev`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use super::{Bench, slash};
use crate::fsstat::{count_entries, usage};
use crate::peers::{Timing, need, timed, timed_input};
use crate::report::{Row, Samples, Unit};
use crate::tree::event_lines;

/// How our version learns what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Events,
    Rescan,
}

/// Figures of one round: (times, entries) per method.
#[derive(Default)]
struct Round {
    events: (Samples, Vec<f64>),
    rescan: (Samples, Vec<f64>),
    link_dest: (Samples, Vec<f64>),
    cp_al: (Samples, Vec<f64>),
}

/// Our version for these changes; its time and the entries it created.
fn our_version(b: &Bench, mode: Mode, paths: &[PathBuf]) -> Result<(Timing, f64)> {
    b.cache.prepare()?;
    let (d, out) = match mode {
        Mode::Events => timed_input(&mut b.snap_events(), Some(event_lines(paths).as_bytes()))?,
        Mode::Rescan => timed_input(&mut b.snap(), None)?,
    };
    let v = out.trim();
    if v.is_empty() {
        bail!(
            "reverb-snap ({mode:?}) made no version for {} changes",
            paths.len()
        );
    }
    Ok((d, count_entries(&b.job_dir().join(v))? as f64))
}

/// `rsync -a --link-dest=<prev>` into the next chain slot; time and entries.
fn link_dest(b: &mut Bench, rsync: &Path) -> Result<(Timing, f64)> {
    let new = b.chain_path(b.chain.len());
    let d = b.link_dest_snapshot(rsync, new.clone())?;
    Ok((d, count_entries(&new)? as f64))
}

/// `cp -al <prev> <new>`, then the changed files copied over their links.
fn cp_al(b: &Bench, cp: &Path, paths: &[PathBuf]) -> Result<(Timing, f64)> {
    let Some(prev) = b.chain.last() else {
        bail!("no previous snapshot");
    };
    let new = b.scratch.join("cp-al");
    b.cache.prepare()?;
    let d1 = timed(Command::new(cp).arg("-al").arg(prev).arg(&new))?;
    let d2 = timed(
        Command::new(cp)
            .args(["-a", "--parents", "--remove-destination", "-t"])
            .arg(&new)
            .args(paths)
            .current_dir(&b.tree.root),
    )?;
    let e = count_entries(&new)?;
    // Not deleted (see `copy::first_copy`: a deletion slows the next tool's inode
    // allocations); moved aside for the scratch directory's removal at the end of the run.
    let aside = b.scratch.join("trash");
    std::fs::create_dir_all(&aside)?;
    let mut n = 0;
    while aside.join(format!("cp-al-{n}")).exists() {
        n += 1;
    }
    std::fs::rename(&new, aside.join(format!("cp-al-{n}")))?;
    Ok((d1 + d2, e as f64))
}

fn push2(v: &mut (Samples, Vec<f64>), x: (Timing, f64)) {
    v.0.push(x.0);
    v.1.push(x.1);
}

/// Rounds of `n` changes for each `n` of `counts` (10, 100 and 1,000 in a full run).
pub fn incremental(b: &mut Bench, counts: &[usize]) -> Result<()> {
    let rsync = need(&b.tools.rsync, "rsync").map(Path::to_path_buf);
    let cp = need(&b.tools.cp, "cp").map(Path::to_path_buf);
    let entries = b.tree.stats.entries() as f64;
    for &n in counts {
        let mut s = Round::default();
        for rep in 0..b.reps {
            for mode in [Mode::Events, Mode::Rescan] {
                eprintln!("{n} changes, {mode:?}, repetition {}/{}", rep + 1, b.reps);
                let paths = b.tree.modify(n, &mut b.rng)?;
                if let (Ok(cp), Ok(_)) = (&cp, &rsync) {
                    push2(&mut s.cp_al, cp_al(b, cp, &paths)?);
                }
                let ours = our_version(b, mode, &paths)?;
                push2(
                    if mode == Mode::Events {
                        &mut s.events
                    } else {
                        &mut s.rescan
                    },
                    ours,
                );
                if let Ok(rsync) = &rsync {
                    push2(&mut s.link_dest, link_dest(b, rsync)?);
                }
            }
        }
        let target = (n == 10).then_some(0.01);
        let peer = |v: &Samples| rsync.as_ref().map(|_| v.clone()).map_err(Clone::clone);
        let ld = "rsync -a --link-dest";
        b.push(Row::new(
            format!("version after {n} changes, event-driven: time"),
            Unit::Seconds,
            s.events.0.clone(),
            ld,
            peer(&s.link_dest.0),
            target,
        ));
        b.push(Row::new(
            format!("version after {n} changes, rescan: time"),
            Unit::Seconds,
            s.rescan.0,
            ld,
            peer(&s.link_dest.0),
            None,
        ));
        let cpal = match (&cp, &rsync) {
            (Ok(_), Ok(_)) => Ok(s.cp_al.0),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        b.push(Row::new(
            format!("version after {n} changes, event-driven: time"),
            Unit::Seconds,
            s.events.0,
            "cp -al + cp changed",
            cpal,
            None,
        ));
        b.push(
            Row::new(
                format!("version after {n} changes: entries created"),
                Unit::Entries,
                s.events.1,
                ld,
                rsync
                    .as_ref()
                    .map(|_| s.link_dest.1.clone())
                    .map_err(Clone::clone),
                target,
            )
            .note(format!(
                "tree has {entries} entries (1% = {:.0}); rescan versions created {:?}; cp -al {:?}",
                entries / 100.0,
                crate::report::median(&s.rescan.1),
                crate::report::median(&s.cp_al.1)
            )),
        );
    }
    Ok(())
}

pub fn rescan_unchanged(b: &mut Bench) -> Result<()> {
    let rsync = need(&b.tools.rsync, "rsync").map(Path::to_path_buf);
    if let (Ok(rsync), true) = (&rsync, b.chain.is_empty()) {
        // Alone (--rescan-only): rsync's side needs a copy to compare with.
        b.start_chain(rsync, 0)?;
    }
    let (mut ours, mut peer) = (Samples::default(), Samples::default());
    let mut made = 0;
    if b.chain.len() > 1 {
        // Right after the rounds of changes: the last round's files are racily clean
        // (changed within 2 s of the version holding them), and a rescan compares them by
        // content until its source index is written later than that. Reported beside the
        // target's row, which is measured once the tree has been still for 3 s.
        eprintln!("unchanged rescan, right after the last round of changes");
        let (mut soon, mut soon_peer) = (Samples::default(), Samples::default());
        made += rescan_and_dry_run(b, &rsync, &mut soon, &mut soon_peer)?;
        b.push(Row::new(
            "rescan of an unchanged tree, right after the last round of changes",
            Unit::Seconds,
            soon,
            "rsync -a --dry-run",
            rsync.clone().map(|_| soon_peer),
            None,
        ));
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    for rep in 0..b.reps {
        eprintln!("unchanged rescan, repetition {}/{}", rep + 1, b.reps);
        made += rescan_and_dry_run(b, &rsync, &mut ours, &mut peer)?;
    }
    let row = Row::new(
        "rescan of an unchanged tree",
        Unit::Seconds,
        ours,
        "rsync -a --dry-run",
        rsync.map(|_| peer),
        Some(0.7),
    );
    b.push(if made > 0 {
        row.note(format!(
            "BUG: {made} rescans of an unchanged tree made a version"
        ))
    } else {
        row.note("no version made, as expected")
    });
    Ok(())
}

/// One timed rescan of ours (into `ours`) and `rsync -a --dry-run` against the last
/// snapshot (into `peer`, when rsync is there); 1 when our rescan made a version.
fn rescan_and_dry_run(
    b: &Bench,
    rsync: &std::result::Result<PathBuf, String>,
    ours: &mut Samples,
    peer: &mut Samples,
) -> Result<usize> {
    b.cache.prepare()?;
    let (d, out) = timed_input(&mut b.snap(), None)?;
    ours.push(d);
    if let (Ok(rsync), Some(prev)) = (rsync, b.chain.last()) {
        b.cache.prepare()?;
        peer.push(timed(
            Command::new(rsync)
                .args(["-a", "--dry-run"])
                .arg(slash(&b.tree.root))
                .arg(slash(prev)),
        )?);
    }
    Ok(usize::from(!out.trim().is_empty()))
}

/// Adds rounds of 10 changes until there are `b.versions` versions (and snapshots), then
/// compares their disk usage.
pub fn usage_of_versions(b: &mut Bench) -> Result<()> {
    let rsync = need(&b.tools.rsync, "rsync").map(Path::to_path_buf);
    while b.versions_on_disk()?.len() < b.versions {
        let paths = b.tree.modify(10, &mut b.rng)?;
        our_version(b, Mode::Events, &paths)?;
        if let Ok(rsync) = &rsync {
            link_dest(b, rsync)?;
        }
    }
    let ours = b.versions_on_disk()?;
    let u_ours = usage(&ours)?;
    let u_peer = usage(&b.chain)?;
    let u_tree = usage(std::slice::from_ref(&b.tree.root))?;
    let note = format!(
        "{} versions vs {} snapshots; the source tree itself: {:.1} MiB, {} inodes",
        ours.len(),
        b.chain.len(),
        u_tree.bytes as f64 / (1u64 << 20) as f64,
        u_tree.inodes
    );
    let peer = |x: u64| rsync.as_ref().map(|_| vec![x as f64]).map_err(Clone::clone);
    b.push(
        Row::new(
            format!("disk usage of {} versions (allocated)", ours.len()),
            Unit::Bytes,
            vec![u_ours.bytes as f64],
            "rsync --link-dest snapshots",
            peer(u_peer.bytes),
            None,
        )
        .note(note.clone()),
    );
    b.push(
        Row::new(
            format!("inodes of {} versions", ours.len()),
            Unit::Inodes,
            vec![u_ours.inodes as f64],
            "rsync --link-dest snapshots",
            peer(u_peer.inodes),
            None,
        )
        .note(note),
    );
    Ok(())
}

pub fn retire(b: &mut Bench) -> Result<()> {
    let rm = need(&b.tools.rm, "rm").map(Path::to_path_buf);
    let (mut ours, mut peer, mut held) = (Samples::default(), Samples::default(), vec![]);
    for rep in 0..b.reps {
        eprintln!("retire, repetition {}/{}", rep + 1, b.reps);
        let versions = b.versions_on_disk()?;
        if versions.len() < 2 {
            break;
        }
        held.push(count_entries(&versions[0])? as f64);
        b.cache.prepare()?;
        let keep = (versions.len() - 1).to_string();
        ours.push(timed(
            b.tools
                .ours("reverb-retire")
                .arg("--vault")
                .arg(&b.vault)
                .args(["--job", super::JOB, "--keep", &keep]),
        )?);
        if let Ok(rm) = &rm
            && b.chain.len() > 1
        {
            let oldest = b.chain.remove(0);
            b.cache.prepare()?;
            peer.push(timed(Command::new(rm).arg("-rf").arg(&oldest))?);
        }
    }
    b.push(
        Row::new(
            "retire the oldest version",
            Unit::Seconds,
            ours,
            "rm -rf oldest snapshot",
            rm.map(|_| peer),
            None,
        )
        .note(format!(
            "entries in the retired version (not following links): {:?}",
            crate::report::median(&held)
        )),
    );
    Ok(())
}
