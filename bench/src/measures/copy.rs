//! Measure 1: the first full copy. `reverb-snap --init --source` (first version) against
//! `cp -a` (alone, and followed by `syncfs` of the destination, since `reverb-snap` syncs
//! before it publishes a version) and `rsync -a`; on a loop-mounted btrfs with the vault on
//! the same filesystem, against `cp -a --reflink=always`.
//!
//! Hands on: the last repetition's vault becomes [`Bench::vault`]; the last `rsync` copy
//! becomes the first snapshot of [`Bench::chain`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Bench, JOB, slash};
use crate::peers::{Timing, need, remove, timed};
use crate::report::{Row, Samples, Unit, paired_ratios};

/// `syncfs(2)` on the filesystem holding `path`; how long it took.
fn syncfs(path: &Path) -> Result<Duration> {
    let f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let t = Instant::now();
    // SAFETY: syncfs on a valid, open fd.
    nix::unistd::syncfs(&f).context("syncfs")?;
    Ok(t.elapsed())
}

fn first_version(b: &Bench, vault: &Path, source: &Path) -> Result<Timing> {
    timed(
        b.tools
            .ours("reverb-snap")
            .arg("--vault")
            .arg(vault)
            .args(["--job", JOB, "--source"])
            .arg(source)
            .arg("--init"),
    )
}

pub fn first_copy(b: &mut Bench) -> Result<()> {
    let dir = b.scratch.join("m1");
    fs::create_dir_all(&dir)?;
    fs::create_dir_all(b.scratch.join("rsnap"))?;
    let cp = need(&b.tools.cp, "cp").map(Path::to_path_buf);
    let rsync = need(&b.tools.rsync, "rsync").map(Path::to_path_buf);
    let (mut ours, mut cp_t, mut cp_sync, mut rs_t) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    // Copies are never deleted during the run (the scratch directory goes at the end):
    // creating many inodes soon after deleting many is slower on ext4, so deleting each copy
    // before the next tool ran charged that cost to whichever tool came next (every fast
    // sample of the first runs was one not preceded by a deletion), and deleting them all
    // after the last repetition slowed the next measure.
    let mut trash: Vec<PathBuf> = Vec::new();
    for rep in 0..b.reps {
        let last = rep + 1 == b.reps;
        eprintln!("first copy, repetition {}/{}", rep + 1, b.reps);
        let vault = dir.join(format!("vault{rep}"));
        b.cache.prepare()?;
        ours.push(first_version(b, &vault, &b.tree.root)?);
        if last {
            fs::rename(&vault, &b.vault)?;
        } else {
            trash.push(vault);
        }
        if let Ok(cp) = &cp {
            let dst = dir.join(format!("cp{rep}"));
            b.cache.prepare()?;
            let d = timed(Command::new(cp).arg("-a").arg(&b.tree.root).arg(&dst))?;
            let s = syncfs(&dst)?;
            cp_t.push(d);
            // The syncfs is the bench's own call: its CPU time is not the child's.
            cp_sync.push(Timing {
                wall: d.wall + s,
                cpu: d.cpu,
                peak_rss: d.peak_rss,
            });
            if b.scale {
                // The scale tree's copies barely fit: cp's goes before rsync's is made.
                remove(&dst)?;
            } else {
                trash.push(dst);
            }
        }
        if let Ok(rsync) = &rsync {
            let dst = if last {
                b.chain_path(0)
            } else {
                dir.join(format!("rs{rep}"))
            };
            b.cache.prepare()?;
            rs_t.push(timed(
                Command::new(rsync)
                    .arg("-a")
                    .arg(slash(&b.tree.root))
                    .arg(slash(&dst)),
            )?);
            if last {
                b.chain.push(dst);
            } else {
                trash.push(dst);
            }
        }
    }
    if b.scale {
        // Four copies of the scale tree do not fit on the disk: the copies no measure needs
        // go now, after the last timed copy.
        eprintln!("first copy: removing {} copies (scale run)", trash.len());
        for t in trash.drain(..) {
            remove(&t)?;
        }
    } else {
        eprintln!(
            "first copy: {} copies left for the end of the run",
            trash.len()
        );
    }
    let ok = |r: &Result<PathBuf, String>, v: Samples| r.as_ref().map(|_| v).map_err(Clone::clone);
    let paired = |peer: &Samples| {
        format!(
            "per-repetition ratios: {}",
            paired_ratios(ours.wall(), peer.wall())
        )
    };
    let (n_cp, n_sync, n_rs) = (paired(&cp_t), paired(&cp_sync), paired(&rs_t));
    b.push(
        Row::new(
            "first copy",
            Unit::Seconds,
            ours.clone(),
            "cp -a",
            ok(&cp, cp_t),
            Some(0.8),
        )
        .note(format!(
            "reverb-snap includes its syncfs; cp -a does not; {n_cp}"
        )),
    );
    b.push(
        Row::new(
            "first copy",
            Unit::Seconds,
            ours.clone(),
            "cp -a + syncfs",
            ok(&cp, cp_sync),
            Some(0.8),
        )
        .note(n_sync),
    );
    b.push(
        Row::new(
            "first copy",
            Unit::Seconds,
            ours,
            "rsync -a",
            ok(&rsync, rs_t),
            None,
        )
        .note(n_rs),
    );
    Ok(())
}

/// A loop-mounted filesystem, unmounted (lazily if busy) when dropped.
struct LoopMount(PathBuf);

impl Drop for LoopMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

pub fn first_copy_btrfs(b: &mut Bench) -> Result<()> {
    let skip = |b: &mut Bench, why: &str| {
        b.push(Row::new(
            "first copy on btrfs, vault on the same fs",
            Unit::Seconds,
            Vec::new(),
            "cp -a --reflink=always",
            Err::<Samples, _>(why.to_owned()),
            Some(1.2),
        ));
    };
    // SAFETY: geteuid cannot fail.
    if !nix::unistd::geteuid().is_root() {
        skip(b, "--btrfs needs root");
        return Ok(());
    }
    let Ok(cp) = need(&b.tools.cp, "cp").map(Path::to_path_buf) else {
        skip(b, "cp not found on PATH");
        return Ok(());
    };
    let img = b.scratch.join("btrfs.img");
    let mnt = b.scratch.join("btrfs");
    fs::create_dir_all(&mnt)?;
    let size = (b.tree.stats.bytes * 4).max(2 << 30) + (1 << 30);
    fs::File::create(&img)?.set_len(size)?;
    let mkfs = Command::new("mkfs.btrfs").arg("-q").arg(&img).status();
    if !mkfs.as_ref().is_ok_and(|s| s.success()) {
        skip(b, "mkfs.btrfs not available or failed");
        return Ok(());
    }
    let st = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()?;
    if !st.success() {
        bail!("cannot loop-mount {}", img.display());
    }
    let guard = LoopMount(mnt.clone());
    let src = mnt.join("src");
    eprintln!("copying the tree onto btrfs");
    timed(Command::new(&cp).arg("-a").arg(&b.tree.root).arg(&src))?;
    let (mut ours, mut peer) = (Samples::default(), Samples::default());
    let mut exclusive = String::new();
    for rep in 0..b.reps {
        let vault = mnt.join(format!("vault{rep}"));
        b.cache.prepare()?;
        ours.push(first_version(b, &vault, &src)?);
        if rep == 0 {
            let out = Command::new("btrfs")
                .args(["filesystem", "du", "-s", "--raw"])
                .arg(&vault)
                .output()?;
            exclusive = String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .unwrap_or_default()
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
        }
        remove(&vault)?;
        let dst = mnt.join(format!("cp{rep}"));
        b.cache.prepare()?;
        peer.push(timed(
            Command::new(&cp)
                .args(["-a", "--reflink=always"])
                .arg(&src)
                .arg(&dst),
        )?);
        remove(&dst)?;
    }
    drop(guard);
    remove(&mnt)?;
    fs::remove_file(&img)?;
    b.push(
        Row::new(
            "first copy on btrfs, vault on the same fs",
            Unit::Seconds,
            ours,
            "cp -a --reflink=always",
            Ok(peer),
            Some(1.2),
        )
        .note(format!(
            "vault's exclusive (unshared) bytes after the first version: {exclusive}"
        )),
    );
    Ok(())
}
