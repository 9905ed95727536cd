//! Measure 5: setting up the watch (time until ready, CPU time and peak RSS at that moment) of
//! `reverb-watch SRC` (ready: its header line) against `inotifywait -m -r SRC` (ready:
//! "Watches established." on stderr); and the latency from a write in the source to the
//! version line of `reverb-watch --quiet-period Q SRC | reverb-snap --changes - --follow`.
//!
//! The latency pipe is relayed by a thread of the bench (one line at a time, flushed), so
//! the bench sees the watcher's header and knows every watch is in place before it writes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Bench, secs};
use crate::peers::{Timing, cpu_so_far, line_reader, need, terminate, vm_hwm_kib, wait_line};
use crate::report::{Row, Samples, Unit};

const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// Starts `cmd`, waits for the ready line on stdout or stderr; (time until ready — wall,
/// and the CPU its live threads used by then, read from `/proc` — and peak RSS bytes).
fn until_ready(
    mut cmd: Command,
    on_stderr: bool,
    ready: fn(&str) -> bool,
) -> Result<(Timing, f64)> {
    cmd.stdin(Stdio::null());
    if on_stderr {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let rx = if on_stderr {
        line_reader(child.stderr.take().context("no stderr")?)
    } else {
        line_reader(child.stdout.take().context("no stdout")?)
    };
    let t = wait_line(&rx, READY_TIMEOUT, ready).with_context(|| format!("{cmd:?}"));
    let hwm = vm_hwm_kib(child.id());
    let cpu = cpu_so_far(child.id());
    terminate(&child);
    child.wait()?;
    let peak = hwm? * 1024;
    let timing = Timing {
        wall: t? - t0,
        cpu: cpu?,
        peak_rss: Some(peak),
    };
    Ok((timing, peak as f64))
}

pub fn setup(b: &mut Bench) -> Result<()> {
    let inw = need(&b.tools.inotifywait, "inotifywait").map(|p| p.to_path_buf());
    let (mut ot, mut om, mut pt, mut pm) = (Samples::default(), vec![], Samples::default(), vec![]);
    for rep in 0..b.reps {
        eprintln!("watch set-up, repetition {}/{}", rep + 1, b.reps);
        b.cache.prepare()?;
        let mut cmd = b.tools.ours("reverb-watch");
        cmd.arg(&b.tree.root);
        let (t, m) = until_ready(cmd, false, |l| l.starts_with("time\tevent"))?;
        ot.push(t);
        om.push(m);
        if let Ok(inw) = &inw {
            b.cache.prepare()?;
            let mut cmd = Command::new(inw);
            cmd.args(["-m", "-r"]).arg(&b.tree.root);
            let (t, m) = until_ready(cmd, true, |l| l.contains("Watches established"))?;
            pt.push(t);
            pm.push(m);
        }
    }
    let peer = |v: Samples| inw.as_ref().map(|_| v).map_err(Clone::clone);
    b.push(
        Row::new(
            "watch set-up: time",
            Unit::Seconds,
            ot,
            "inotifywait -m -r",
            peer(pt),
            Some(1.0),
        )
        .note("CPU until ready: the threads' run time in /proc/PID/task/*/schedstat"),
    );
    b.push(
        Row::new(
            "watch set-up: peak RSS",
            Unit::Bytes,
            om,
            "inotifywait -m -r",
            peer(pm.into()),
            Some(1.0),
        )
        .note("VmHWM from /proc/PID/status when ready"),
    );
    Ok(())
}

pub fn latency(b: &mut Bench) -> Result<()> {
    let q = b.quiet_ms;
    let mut watch = b
        .tools
        .ours("reverb-watch")
        .arg("--quiet-period")
        .arg(format!("{q}ms"))
        .arg(&b.tree.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run reverb-watch")?;
    let mut snap = b
        .snap()
        .args(["--changes", "-", "--follow"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run reverb-snap")?;
    let wout = watch.stdout.take().context("no stdout")?;
    let mut sin = snap.stdin.take().context("no stdin")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let relay = std::thread::spawn(move || {
        for line in BufReader::new(wout).lines() {
            let Ok(line) = line else { break };
            if writeln!(sin, "{line}").and_then(|_| sin.flush()).is_err() {
                break;
            }
            if line.starts_with("time\tevent") {
                let _ = ready_tx.send(());
            }
        }
    });
    let versions = line_reader(snap.stdout.take().context("no stdout")?);
    let result = (|| -> Result<Vec<f64>> {
        ready_rx
            .recv_timeout(READY_TIMEOUT)
            .context("reverb-watch never became ready")?;
        let mut lat = Vec::new();
        for rep in 0..b.reps.max(3) {
            eprintln!("latency, repetition {}", rep + 1);
            std::thread::sleep(Duration::from_millis(3 * q + 500));
            let t0 = Instant::now();
            b.tree.modify(1, &mut b.rng)?;
            let t1 = wait_line(&versions, Duration::from_secs(120), |l| l.starts_with('V'))
                .context("no version line from reverb-snap --follow")?;
            lat.push(secs(t1 - t0));
        }
        Ok(lat)
    })();
    terminate(&watch);
    watch.wait()?;
    let _ = relay.join();
    snap.wait()?;
    let lat = result?;
    b.push(
        Row::new(
            format!("latency write -> version, quiet period {q} ms"),
            Unit::Seconds,
            lat,
            "the quiet period",
            Ok(vec![q as f64 / 1000.0]),
            None,
        )
        .note("reverb-watch --quiet-period | reverb-snap --changes - --follow"),
    );
    Ok(())
}
