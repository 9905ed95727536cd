//! Results: one [`Row`] per measure (our figure against the peer's, same run), the median,
//! the table printed to stdout, and the TSV and JSON files.
//!
//! Invariants: every figure is the median of its samples; `ratio` is always ours / peer, so
//! a target is always an upper bound on it (100× faster is `≤ 0.01`); a row whose peer tool
//! is missing keeps our figure and says `skipped` instead of pass or fail.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// What a figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Seconds,
    Entries,
    Bytes,
    Inodes,
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
    /// Upper bound on `ratio`, when docs/benchmarks.md sets a target.
    pub target: Option<f64>,
    /// `pass`, `fail`, `info` (no target) or `skipped: why`.
    pub result: String,
    pub samples_ours: Vec<f64>,
    pub samples_peer: Vec<f64>,
    pub note: String,
}

impl Row {
    /// A row from samples; `peer` is `Err(why)` when the peer tool could not run.
    pub fn new(
        measure: impl Into<String>,
        unit: Unit,
        ours: Vec<f64>,
        peer_name: impl Into<String>,
        peer: Result<Vec<f64>, String>,
        target: Option<f64>,
    ) -> Row {
        let o = median(&ours);
        let (p, samples_peer, skipped) = match peer {
            Ok(s) => (median(&s), s, None),
            Err(why) => (None, Vec::new(), Some(why)),
        };
        let ratio = match (o, p) {
            (Some(o), Some(p)) if p > 0.0 => Some(o / p),
            _ => None,
        };
        let result = match (skipped, target, ratio) {
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
            ratio,
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

fn fmt_value(unit: Unit, v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    match unit {
        Unit::Seconds if v < 1.0 => format!("{:.1} ms", v * 1e3),
        Unit::Seconds => format!("{v:.2} s"),
        Unit::Bytes => format!("{:.1} MiB", v / (1u64 << 20) as f64),
        Unit::Entries | Unit::Inodes => format!("{v:.0}"),
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r < 0.01 => format!("{r:.5}"),
        Some(r) => format!("{r:.3}"),
        None => "-".into(),
    }
}

/// The table as Markdown (readable on a terminal and pasteable into docs).
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| measure | ours | peer | ratio | target | result |\n| --- | ---: | --- | ---: | ---: | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {}: {} | {} | {} | {} |",
            r.measure,
            fmt_value(r.unit, r.ours),
            r.peer_name,
            fmt_value(r.unit, r.peer),
            fmt_ratio(r.ratio),
            r.target.map(|t| format!("≤ {t}")).unwrap_or_default(),
            r.result
        );
    }
    s
}

/// Writes the rows as TSV to `out` and everything as JSON next to it (`.json`).
pub fn write_files(out: &Path, rows: &[Row], meta: &serde_json::Value) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut tsv =
        String::from("measure\tunit\tours\tpeer_name\tpeer\tratio\ttarget\tresult\tnote\n");
    let num = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            tsv,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.measure,
            serde_json::to_value(r.unit)?.as_str().unwrap_or_default(),
            num(r.ours),
            r.peer_name,
            num(r.peer),
            num(r.ratio),
            num(r.target),
            r.result,
            r.note.replace(['\t', '\n'], " ")
        );
    }
    std::fs::write(out, tsv).with_context(|| format!("write {}", out.display()))?;
    let json = out.with_extension("json");
    let doc = serde_json::json!({ "meta": meta, "rows": rows });
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
        let r = Row::new("x", Unit::Seconds, vec![3.0], "p", Ok(vec![2.0]), Some(1.2));
        assert_eq!(r.result, "fail");
        let r = Row::new(
            "x",
            Unit::Seconds,
            vec![3.0],
            "p",
            Err("no p".into()),
            Some(1.2),
        );
        assert_eq!(r.result, "skipped: no p");
    }
}
