//! The cost of integrity (docs/benchmarks.md#integrity): the first copy with checksums (the
//! default) against the same copy with `checksums = false` and against `cp -a`, and
//! `reverb-index --check --data` (reads every stored file and compares it with its BLAKE3)
//! against `b3sum` of the same files.
//!
//! Runs right after [`super::copy::first_copy`], whose vault ([`Bench::vault`]) holds one
//! complete version: what `--data` reads is exactly the tree.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::{Bench, JOB};
use crate::peers::{need, timed};
use crate::report::{Row, Samples, Unit, paired_ratios};

/// A configuration file for one job of `source` into `vault`, with `checksums` as given.
fn config(dir: &Path, source: &Path, vault: &Path, checksums: bool) -> Result<std::path::PathBuf> {
    let file = dir.join(format!("config-{checksums}.toml"));
    fs::write(
        &file,
        format!(
            "[jobs.{JOB}]\nsource = \"{}\"\nvault = \"{}\"\nchecksums = {checksums}\n",
            source.display(),
            vault.display()
        ),
    )
    .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}

/// The first version with checksums on and off, and `cp -a`, in the same repetitions.
pub fn first_copy_checksums(b: &mut Bench) -> Result<()> {
    let dir = b.scratch.join("integrity");
    fs::create_dir_all(&dir)?;
    let cp = need(&b.tools.cp, "cp").map(Path::to_path_buf);
    let (mut on, mut off, mut cp_t) = (Samples::default(), Samples::default(), Samples::default());
    for rep in 0..b.reps {
        eprintln!(
            "first copy with/without checksums, repetition {}/{}",
            rep + 1,
            b.reps
        );
        // Alternate which goes first: the second run of a pair meets a page cache and a
        // disk the first one just used.
        let mut order = [(true, &mut on), (false, &mut off)];
        if rep % 2 == 1 {
            order.reverse();
        }
        for (checksums, samples) in order {
            let vault = dir.join(format!("vault-{checksums}-{rep}"));
            let cfg = config(&dir, &b.tree.root, &vault, checksums)?;
            b.cache.prepare()?;
            let d = timed(
                b.tools
                    .ours("reverb-snap")
                    .arg("--config")
                    .arg(&cfg)
                    .args(["--job", JOB, "--init"]),
            )?;
            samples.push(d);
        }
        if let Ok(cp) = &cp {
            b.cache.prepare()?;
            let dst = dir.join(format!("cp{rep}"));
            cp_t.push(timed(
                Command::new(cp).arg("-a").arg(&b.tree.root).arg(&dst),
            )?);
        }
    }
    let note = format!(
        "per-repetition ratios: {}",
        paired_ratios(on.wall(), off.wall())
    );
    b.push(
        Row::new(
            "first copy, checksums on",
            Unit::Seconds,
            on.clone(),
            "checksums = false",
            Ok(off),
            None,
        )
        .note(note),
    );
    let note = format!(
        "per-repetition ratios: {}",
        paired_ratios(on.wall(), cp_t.wall())
    );
    let cp_rows = cp.as_ref().map(|_| cp_t).map_err(Clone::clone);
    b.push(
        Row::new(
            "first copy, checksums on",
            Unit::Seconds,
            on,
            "cp -a",
            cp_rows,
            Some(0.8),
        )
        .note(note),
    );
    Ok(())
}

/// `reverb-index --check --data` of the first version against `b3sum` of the same files
/// (`find -type f -print0 | xargs -0 b3sum`).
pub fn verify_data(b: &mut Bench) -> Result<()> {
    let b3sum = which("b3sum").ok_or_else(|| "b3sum not found on PATH".to_owned());
    let version = b
        .versions_on_disk()?
        .into_iter()
        .next()
        .context("the first copy left no version")?;
    let (mut ours, mut peer, mut check_only) =
        (Samples::default(), Samples::default(), Samples::default());
    for rep in 0..b.reps {
        eprintln!("verify --data, repetition {}/{}", rep + 1, b.reps);
        b.cache.prepare()?;
        ours.push(timed(
            b.tools
                .ours("reverb-index")
                .arg("--vault")
                .arg(&b.vault)
                .args(["--job", JOB, "--check", "--data"]),
        )?);
        b.cache.prepare()?;
        check_only.push(timed(
            b.tools
                .ours("reverb-index")
                .arg("--vault")
                .arg(&b.vault)
                .args(["--job", JOB, "--check"]),
        )?);
        if let Ok(b3sum) = &b3sum {
            b.cache.prepare()?;
            let script = format!(
                "find '{}' -type f -print0 | xargs -0 '{}' > /dev/null",
                version.display(),
                b3sum.display()
            );
            peer.push(timed(Command::new("sh").args(["-c", &script]))?);
        }
    }
    let mib = b.tree.stats.bytes as f64 / (1 << 20) as f64;
    let rate = |xs: &[f64]| {
        crate::report::median(xs).map_or("-".to_owned(), |s| format!("{:.0} MiB/s", mib / s))
    };
    let check = crate::report::median(check_only.wall()).unwrap_or(0.0);
    let note = format!(
        "{} of data; ours {} (of which --check alone {check:.1} s), b3sum {}; per-repetition ratios: {}",
        format_mib(mib),
        rate(ours.wall()),
        rate(peer.wall()),
        paired_ratios(ours.wall(), peer.wall())
    );
    let peer = b3sum.map(|_| peer);
    b.push(Row::new("verify --data", Unit::Seconds, ours, "b3sum", peer, None).note(note));
    Ok(())
}

fn format_mib(mib: f64) -> String {
    format!("{mib:.0} MiB")
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
