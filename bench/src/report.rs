//! Results: one [`Row`] per measure (our figure against the peer's, same run, with the CPU
//! time of each beside the wall time for timed measures), the median, the table printed to
//! stdout, and the TSV and JSON files.
//!
//! Invariants: every figure is the median of its samples; `ratio` (and `ratio_cpu`) is
//! always ours / peer, so a target is always an upper bound on it (100× faster is `≤ 0.01`);
//! a row whose peer tool is missing keeps our figure and says `skipped` instead of pass or
//! fail; a CPU figure exists only where every sample of that side has one.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::peers::Timing;

/// What a figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Seconds,
    Entries,
    Bytes,
    Inodes,
}

/// The samples of one side of a row: the figures (wall seconds for a timed measure), and
/// for a timed measure the CPU seconds of the same runs (user + system, children included)
/// and, where the run was reaped by the bench, its peak resident memory in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Samples {
    pub values: Vec<f64>,
    pub cpu: Vec<f64>,
    pub peak_rss: Vec<f64>,
}

impl Samples {
    /// One timed run.
    pub fn push(&mut self, t: Timing) {
        self.values.push(t.wall.as_secs_f64());
        self.cpu.push(t.cpu.as_secs_f64());
        if let Some(peak) = t.peak_rss {
            self.peak_rss.push(peak as f64);
        }
    }

    /// The peak memory of the same runs, as samples of their own (bytes), when every run
    /// has one.
    pub fn peaks(&self) -> Option<Samples> {
        (!self.values.is_empty() && self.peak_rss.len() == self.values.len())
            .then(|| Samples::from(self.peak_rss.clone()))
    }

    /// The wall times alone (for notes such as [`paired_ratios`]).
    pub fn wall(&self) -> &[f64] {
        &self.values
    }

    /// Median CPU seconds, when every sample has a CPU figure.
    fn cpu_median(&self) -> Option<f64> {
        (self.cpu.len() == self.values.len())
            .then(|| median(&self.cpu))
            .flatten()
    }
}

/// Figures with no CPU time (entries, bytes, or times measured without one).
impl From<Vec<f64>> for Samples {
    fn from(values: Vec<f64>) -> Samples {
        Samples {
            values,
            cpu: Vec::new(),
            peak_rss: Vec::new(),
        }
    }
}

impl From<Timing> for Samples {
    fn from(t: Timing) -> Samples {
        let mut s = Samples::default();
        s.push(t);
        s
    }
}

/// One measure against its peer.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub measure: String,
    pub unit: Unit,
    pub peer_name: String,
    pub ours: Option<f64>,
    pub peer: Option<f64>,
    pub ratio: Option<f64>,
    /// Median CPU seconds (user + system, children included) of ours, of the peer, and
    /// their ratio; `None` for measures that are not timed runs.
    pub ours_cpu: Option<f64>,
    pub peer_cpu: Option<f64>,
    pub ratio_cpu: Option<f64>,
    /// Upper bound on `ratio`, when docs/benchmarks.md sets a target.
    pub target: Option<f64>,
    /// `pass`, `fail`, `info` (no target) or `skipped: why`.
    pub result: String,
    pub samples_ours: Samples,
    pub samples_peer: Samples,
    pub note: String,
}

impl Row {
    /// A row from samples; `peer` is `Err(why)` when the peer tool could not run.
    pub fn new(
        measure: impl Into<String>,
        unit: Unit,
        ours: impl Into<Samples>,
        peer_name: impl Into<String>,
        peer: Result<impl Into<Samples>, String>,
        target: Option<f64>,
    ) -> Row {
        let ours: Samples = ours.into();
        let (samples_peer, skipped) = match peer {
            Ok(s) => (s.into(), None),
            Err(why) => (Samples::default(), Some(why)),
        };
        let o = median(&ours.values);
        let p = median(&samples_peer.values);
        let (ours_cpu, peer_cpu) = (ours.cpu_median(), samples_peer.cpu_median());
        let ratio_wall = ratio(o, p);
        let result = match (skipped, target, ratio_wall) {
            (Some(why), _, _) => format!("skipped: {why}"),
            (None, Some(t), Some(r)) if r <= t => "pass".into(),
            (None, Some(_), Some(_)) => "fail".into(),
            _ => "info".into(),
        };
        Row {
            measure: measure.into(),
            unit,
            peer_name: peer_name.into(),
            ours: o,
            peer: p,
            ratio: ratio_wall,
            ours_cpu,
            peer_cpu,
            ratio_cpu: ratio(ours_cpu, peer_cpu),
            target,
            result,
            samples_ours: ours,
            samples_peer,
            note: String::new(),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

/// ours / peer, when both exist and the peer's is positive.
pub fn ratio(ours: Option<f64>, peer: Option<f64>) -> Option<f64> {
    match (ours, peer) {
        (Some(o), Some(p)) if p > 0.0 => Some(o / p),
        _ => None,
    }
}

/// Ratios ours / peer of the same repetition, as text ("0.22 1.01 15.0"): when the
/// medians are disturbed by stalls shared with other processes (disk-bound runs), the paired
/// ratios show whether the tools or the machine moved.
pub fn paired_ratios(ours: &[f64], peer: &[f64]) -> String {
    ours.iter()
        .zip(peer)
        .map(|(o, p)| format!("{:.2}", o / p))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// A seconds figure as text ("-" when absent).
pub fn fmt_secs(v: Option<f64>) -> String {
    fmt_value(Unit::Seconds, v)
}

fn fmt_value(unit: Unit, v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    match unit {
        Unit::Seconds if v < 1.0 => format!("{:.1} ms", v * 1e3),
        Unit::Seconds => format!("{v:.2} s"),
        Unit::Bytes => format!("{:.1} MiB", v / (1u64 << 20) as f64),
        Unit::Entries | Unit::Inodes => format!("{v:.0}"),
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r < 0.01 => format!("{r:.5}"),
        Some(r) => format!("{r:.3}"),
        None => "-".into(),
    }
}

/// The table as Markdown (readable on a terminal and pasteable into docs).
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| measure | ours | ours CPU | peer | peer CPU | ratio | CPU ratio | target | result |\n\
         | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}: {} | {} | {} | {} | {} | {} |",
            r.measure,
            fmt_value(r.unit, r.ours),
            fmt_secs(r.ours_cpu),
            r.peer_name,
            fmt_value(r.unit, r.peer),
            fmt_secs(r.peer_cpu),
            fmt_ratio(r.ratio),
            fmt_ratio(r.ratio_cpu),
            r.target.map(|t| format!("≤ {t}")).unwrap_or_default(),
            r.result
        );
    }
    s
}

/// Writes the rows as TSV to `out` and everything as JSON next to it (`.json`).
pub fn write_files(
    out: &Path,
    rows: &[Row],
    targets: &[crate::targets::TargetRow],
    meta: &serde_json::Value,
) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut tsv = String::from(
        "measure\tunit\tours\tours_cpu\tpeer_name\tpeer\tpeer_cpu\tratio\tratio_cpu\ttarget\tresult\tnote\n",
    );
    let num = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            tsv,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.measure,
            serde_json::to_value(r.unit)?.as_str().unwrap_or_default(),
            num(r.ours),
            num(r.ours_cpu),
            r.peer_name,
            num(r.peer),
            num(r.peer_cpu),
            num(r.ratio),
            num(r.ratio_cpu),
            num(r.target),
            r.result,
            r.note.replace(['\t', '\n'], " ")
        );
    }
    std::fs::write(out, tsv).with_context(|| format!("write {}", out.display()))?;
    let json = out.with_extension("json");
    let doc = serde_json::json!({ "meta": meta, "rows": rows, "targets": targets });
    std::fs::write(&json, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("write {}", json.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratios_per_repetition() {
        assert_eq!(paired_ratios(&[1.0, 18.0, 3.0], &[2.0, 18.0]), "0.50 1.00");
        assert_eq!(paired_ratios(&[], &[1.0]), "");
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn row_verdicts() {
        let r = Row::new("x", Unit::Seconds, vec![1.0], "p", Ok(vec![2.0]), Some(0.6));
        assert_eq!((r.ratio, r.result.as_str()), (Some(0.5), "pass"));
        assert_eq!(r.ratio_cpu, None);
        let r = Row::new("x", Unit::Seconds, vec![3.0], "p", Ok(vec![2.0]), Some(1.2));
        assert_eq!(r.result, "fail");
        let r = Row::new(
            "x",
            Unit::Seconds,
            vec![3.0],
            "p",
            Err::<Samples, _>("no p".into()),
            Some(1.2),
        );
        assert_eq!(r.result, "skipped: no p");
    }

    #[test]
    fn cpu_beside_wall() {
        use std::time::Duration;
        let t = |wall: u64, cpu: u64| Timing {
            wall: Duration::from_millis(wall),
            cpu: Duration::from_millis(cpu),
            peak_rss: None,
        };
        let mut ours = Samples::default();
        ours.push(t(1000, 500));
        ours.push(t(3000, 700));
        let r = Row::new("x", Unit::Seconds, ours, "p", Ok(t(2000, 1400)), None);
        assert_eq!(r.ours, Some(2.0));
        assert_eq!(r.ours_cpu, Some(0.6));
        assert_eq!(r.peer_cpu, Some(1.4));
        assert_eq!(r.ratio_cpu.map(|x| (x * 100.0).round()), Some(43.0));
        assert!(table(&[r]).contains("| 600.0 ms |"));
    }
}
