//! The target table: each performance target T1–T8 of docs/benchmarks.md computed from the
//! rows of this run, as ratios ours / peer (wall time and CPU time) with a verdict.
//!
//! Owns: [`evaluate`] (a pure function: rows and the run's scope in, [`TargetRow`]s out) and
//! [`table`] (the Markdown printed at the end of a run).
//!
//! Invariants: no target is ever taken as met: every verdict comes from a figure of the same
//! run; a target (or part of one) the run did not measure says `n/a (why)`: its row is
//! absent (a measure not requested, a feature not built), its peer was skipped (the reason
//! is the row's), or the run's scope is too small (T7 needs the 1,000,000-file tree). The
//! verdict judges the wall-time ratio, which is what the targets bound; the CPU-time ratio
//! gets its own verdict against the same bound (the software's own cost on a noisy disk).

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{Row, fmt_ratio, ratio};

/// Files in the tree from which the scale target (T7) applies.
pub const SCALE_FILES: u64 = 1_000_000;

/// T7's memory allowance: per watched directory, plus a fixed amount.
const T7_BYTES_PER_DIR: f64 = 1024.0;
const T7_FIXED_BYTES: f64 = 200.0 * 1024.0 * 1024.0;

/// What the run covered, beyond its rows.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub files: u64,
    pub dirs: u64,
}

/// How a ratio must compare with the bound.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    /// ratio ≤ x
    AtMost(f64),
    /// ratio < x ("faster than")
    Below(f64),
}

impl Bound {
    fn met(self, r: f64) -> bool {
        match self {
            Bound::AtMost(x) => r <= x,
            Bound::Below(x) => r < x,
        }
    }

    fn text(self) -> String {
        match self {
            Bound::AtMost(x) => format!("≤ {x}"),
            Bound::Below(x) => format!("< {x}"),
        }
    }
}

/// One part of one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    /// `T1` … `T8`.
    pub id: &'static str,
    /// Which part of the target (a target may bound several ratios).
    pub part: String,
    pub peer: String,
    pub ratio: Option<f64>,
    pub ratio_cpu: Option<f64>,
    /// The bound on the ratio, as text (`≤ 0.8`, `< 1`).
    pub bound: String,
    /// `PASS`, `FAIL` or `n/a (why)`.
    pub result: String,
    /// `PASS` or `FAIL` of the CPU ratio against the same bound; `-` without a CPU figure.
    pub result_cpu: String,
}

impl TargetRow {
    fn not_measured(id: &'static str, part: &str, peer: &str, why: impl AsRef<str>) -> TargetRow {
        TargetRow {
            id,
            part: part.to_owned(),
            peer: peer.to_owned(),
            ratio: None,
            ratio_cpu: None,
            bound: String::new(),
            result: format!("n/a ({})", why.as_ref()),
            result_cpu: "-".into(),
        }
    }

    pub fn passed(&self) -> Option<bool> {
        match self.result.as_str() {
            "PASS" => Some(true),
            "FAIL" => Some(false),
            _ => None,
        }
    }
}

fn verdict(bound: Bound, r: Option<f64>) -> String {
    match r {
        Some(r) if bound.met(r) => "PASS".into(),
        Some(_) => "FAIL".into(),
        None => "-".into(),
    }
}

/// The row of `measure` against `peer` (exact names, as the measures push them).
fn find<'a>(rows: &'a [Row], measure: &str, peer: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.measure == measure && r.peer_name == peer)
}

/// A part judged on one row's ratios.
fn part(
    id: &'static str,
    what: &str,
    row: Option<&Row>,
    peer: &str,
    bound: Bound,
    missing: &str,
) -> TargetRow {
    part_of(id, what, row, row, peer, bound, missing)
}

/// A part whose "ours" comes from one row and whose peer from another (T6: our version plus
/// retirement against the peer's `rm -rf` alone).
fn part_of(
    id: &'static str,
    what: &str,
    ours: Option<&Row>,
    peer_row: Option<&Row>,
    peer: &str,
    bound: Bound,
    missing: &str,
) -> TargetRow {
    let (Some(o), Some(p)) = (ours, peer_row) else {
        return TargetRow::not_measured(id, what, peer, missing);
    };
    if let Some(why) = p.result.strip_prefix("skipped: ") {
        return TargetRow::not_measured(id, what, peer, why);
    }
    let wall = ratio(o.ours, p.peer);
    let cpu = ratio(o.ours_cpu, p.peer_cpu);
    let Some(w) = wall else {
        return TargetRow::not_measured(id, what, peer, "no figure in this run");
    };
    TargetRow {
        id,
        part: what.to_owned(),
        peer: peer.to_owned(),
        ratio: Some(w),
        ratio_cpu: cpu,
        bound: bound.text(),
        result: verdict(bound, Some(w)),
        result_cpu: verdict(bound, cpu),
    }
}

/// restic's and borg's rows of one step of the backup-peers sequence.
fn backup_peer_parts(
    out: &mut Vec<TargetRow>,
    rows: &[Row],
    id: &'static str,
    what: &str,
    step: &str,
    peers: &[&str],
    bound: Bound,
) {
    for peer in peers {
        out.push(part(
            id,
            what,
            find(rows, &format!("vs restic/borg: {step}"), peer),
            peer,
            bound,
            "the restic/borg comparison was not run",
        ));
    }
}

/// Every target of this run, in order; see the module's invariants.
pub fn evaluate(rows: &[Row], scope: Scope) -> Vec<TargetRow> {
    let mut out = Vec::new();
    let ld = "rsync -a --link-dest";
    let not_run = "not measured in this run";
    // T1
    out.push(part(
        "T1",
        "version after 10 changed files (events): time",
        find(rows, "version after 10 changes, event-driven: time", ld),
        ld,
        Bound::AtMost(0.01),
        not_run,
    ));
    out.push(part(
        "T1",
        "version after 10 changed files: entries created",
        find(rows, "version after 10 changes: entries created", ld),
        ld,
        Bound::Below(0.01),
        not_run,
    ));
    // T2
    let first =
        find(rows, "first copy", "cp -a").or(find(rows, "first copy, checksums on", "cp -a"));
    out.push(part(
        "T2",
        "first copy, checksums on",
        first,
        "cp -a",
        Bound::AtMost(0.8),
        not_run,
    ));
    backup_peer_parts(
        &mut out,
        rows,
        "T2",
        "first backup",
        "first backup",
        &["restic", "borg"],
        Bound::Below(1.0),
    );
    // T3, T3b
    out.push(part(
        "T3",
        "rescan of an unchanged tree",
        find(rows, "rescan of an unchanged tree", "rsync -a --dry-run"),
        "rsync -a --dry-run",
        Bound::AtMost(0.7),
        not_run,
    ));
    backup_peer_parts(
        &mut out,
        rows,
        "T3b",
        "rescan after 1,000 changed files",
        "after 1,000 changed files",
        &["restic", "borg"],
        Bound::Below(1.0),
    );
    // T4
    let inw = "inotifywait -m -r";
    for (what, measure) in [
        ("watch set-up: time", "watch set-up: time"),
        ("watch set-up: peak memory", "watch set-up: peak RSS"),
    ] {
        out.push(part(
            "T4",
            what,
            find(rows, measure, inw),
            inw,
            Bound::AtMost(1.0),
            not_run,
        ));
    }
    // T5
    let usage = rows.iter().find(|r| {
        r.measure.starts_with("disk usage of ") && r.peer_name == "rsync --link-dest snapshots"
    });
    out.push(part(
        "T5",
        "disk used by the versions",
        usage,
        "--link-dest snapshots",
        Bound::AtMost(1.0),
        not_run,
    ));
    // T6
    let rm = "rm -rf of one --link-dest snapshot";
    for (rules, bound) in [("default rules", 1.0), ("count-only rules", 2.0)] {
        out.push(part_of(
            "T6",
            &format!("{rules}: version of 10 files + retirement"),
            find(
                rows,
                &format!("steady state, {rules}: version of 10 changed files + retirement"),
                "rsync --link-dest + rm -rf oldest",
            ),
            find(
                rows,
                &format!("steady state, {rules}: the retirement after a version"),
                rm,
            ),
            rm,
            Bound::AtMost(bound),
            "the steady state was not measured (--steady-versions 0?)",
        ));
    }
    backup_peer_parts(
        &mut out,
        rows,
        "T6",
        "drop the oldest backup",
        "drop the oldest backup",
        &["borg"],
        Bound::AtMost(1.0),
    );
    // T7
    scale(&mut out, rows, scope);
    // T8
    let replication: Vec<&Row> = rows
        .iter()
        .filter(|r| r.measure.starts_with("replication"))
        .collect();
    if replication.is_empty() {
        out.push(TargetRow::not_measured(
            "T8",
            "replication",
            "rsync -a --delete of the vault",
            "replication was not measured (--replication-only, or a full run)",
        ));
    }
    // The rows with a bound are the target's parts; the others (against rsync) are figures.
    for r in replication.into_iter().filter(|r| r.target.is_some()) {
        match r.target {
            Some(t) => out.push(part(
                "T8",
                &r.measure,
                Some(r),
                &r.peer_name,
                Bound::AtMost(t),
                not_run,
            )),
            None => out.push(TargetRow::not_measured(
                "T8",
                &r.measure,
                &r.peer_name,
                "the row carries no bound",
            )),
        }
    }
    out
}

/// T7: at 1,000,000 files, the scale rows each with their peer, and the watcher's memory
/// within 1 KiB per watched directory plus 200 MiB.
fn scale(out: &mut Vec<TargetRow>, rows: &[Row], scope: Scope) {
    if scope.files < SCALE_FILES {
        out.push(TargetRow::not_measured(
            "T7",
            "scale rows",
            "the same peers",
            format!(
                "the 1,000,000-file scale rows were not requested: this run's tree has {} files",
                scope.files
            ),
        ));
        return;
    }
    let needed = [
        ("first copy", "cp -a"),
        ("watch set-up: time", "inotifywait -m -r"),
        ("watch set-up: peak RSS", "inotifywait -m -r"),
        (
            "version after 10 changes, event-driven: time",
            "rsync -a --link-dest",
        ),
        ("rescan of an unchanged tree", "rsync -a --dry-run"),
        ("retire the oldest version", "rm -rf oldest snapshot"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(m, p)| find(rows, m, p).is_none_or(|r| r.peer.is_none()))
        .map(|(m, _)| *m)
        .collect();
    out.push(TargetRow {
        id: "T7",
        part: "scale rows reported with their peers".into(),
        peer: "the same peers".into(),
        ratio: None,
        ratio_cpu: None,
        bound: "all present".into(),
        result: if missing.is_empty() {
            "PASS".into()
        } else {
            format!("FAIL (missing: {})", missing.join(", "))
        },
        result_cpu: "-".into(),
    });
    let allowance = scope.dirs as f64 * T7_BYTES_PER_DIR + T7_FIXED_BYTES;
    // Every program of ours whose peak was measured: the watcher, and each timed run.
    let largest = rows
        .iter()
        .filter(|r| {
            r.measure == "watch set-up: peak RSS"
                || r.measure.starts_with(crate::measures::scale::PEAK_PREFIX)
        })
        .filter_map(|r| r.ours.map(|o| (o, r.measure.as_str())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    out.push(match largest {
        Some((rss, measure)) => {
            let r = rss / allowance;
            TargetRow {
                id: "T7",
                part: format!(
                    "largest peak memory of ours ({measure}) / (1 KiB per directory + 200 MiB)"
                ),
                peer: format!("{:.0} MiB allowed", allowance / (1024.0 * 1024.0)),
                ratio: Some(r),
                ratio_cpu: None,
                bound: Bound::AtMost(1.0).text(),
                result: verdict(Bound::AtMost(1.0), Some(r)),
                result_cpu: "-".into(),
            }
        }
        None => TargetRow::not_measured(
            "T7",
            "peak memory of ours",
            "1 KiB per directory + 200 MiB",
            "no peak memory was measured",
        ),
    });
}

/// The target table as Markdown.
pub fn table(targets: &[TargetRow]) -> String {
    let mut s = String::from(
        "| target | part | peer | ratio (wall) | ratio (CPU) | bound | result | CPU result |\n\
         | --- | --- | --- | ---: | ---: | ---: | --- | --- |\n",
    );
    for t in targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            t.id,
            t.part,
            t.peer,
            fmt_ratio(t.ratio),
            fmt_ratio(t.ratio_cpu),
            t.bound,
            t.result,
            t.result_cpu
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::peers::Timing;
    use crate::report::{Samples, Unit};

    fn t(wall: f64, cpu: f64) -> Samples {
        Samples::from(Timing {
            wall: Duration::from_secs_f64(wall),
            cpu: Duration::from_secs_f64(cpu),
            peak_rss: None,
        })
    }

    fn timed(measure: &str, peer: &str, ours: (f64, f64), theirs: (f64, f64)) -> Row {
        Row::new(
            measure,
            Unit::Seconds,
            t(ours.0, ours.1),
            peer,
            Ok(t(theirs.0, theirs.1)),
            None,
        )
    }

    fn skipped(measure: &str, peer: &str, why: &str) -> Row {
        Row::new(
            measure,
            Unit::Seconds,
            t(1.0, 1.0),
            peer,
            Err::<Samples, _>(why.into()),
            None,
        )
    }

    fn by<'a>(out: &'a [TargetRow], id: &str, part: &str) -> &'a TargetRow {
        out.iter()
            .find(|r| r.id == id && r.part.starts_with(part))
            .unwrap_or_else(|| panic!("no {id} {part}"))
    }

    const SMALL: Scope = Scope {
        files: 2000,
        dirs: 100,
    };

    #[test]
    fn nothing_measured_is_never_a_pass() {
        let out = evaluate(&[], SMALL);
        for id in ["T1", "T2", "T3", "T3b", "T4", "T5", "T6", "T7", "T8"] {
            assert!(out.iter().any(|r| r.id == id), "{id} missing");
        }
        assert!(out.iter().all(|r| r.result.starts_with("n/a (")), "{out:?}");
        assert!(table(&out).contains("| T8 | replication |"));
    }

    #[test]
    fn wall_and_cpu_verdicts_against_the_bound() {
        let rows = [
            timed("first copy", "cp -a", (0.7, 1.5), (1.0, 1.0)),
            timed(
                "rescan of an unchanged tree",
                "rsync -a --dry-run",
                (0.8, 0.3),
                (1.0, 1.0),
            ),
        ];
        let out = evaluate(&rows, SMALL);
        let t2 = by(&out, "T2", "first copy");
        assert_eq!(t2.ratio, Some(0.7));
        assert_eq!(
            (t2.result.as_str(), t2.result_cpu.as_str()),
            ("PASS", "FAIL")
        );
        assert_eq!(t2.passed(), Some(true));
        let t3 = by(&out, "T3", "rescan");
        assert_eq!(
            (t3.result.as_str(), t3.result_cpu.as_str()),
            ("FAIL", "PASS")
        );
        // "faster than" is strict: a tie is not a pass.
        let rows = [timed(
            "vs restic/borg: first backup",
            "restic",
            (1.0, 1.0),
            (1.0, 2.0),
        )];
        let out = evaluate(&rows, SMALL);
        assert_eq!(by(&out, "T2", "first backup").result, "FAIL");
        assert!(
            out.iter()
                .any(|r| r.id == "T2" && r.peer == "borg" && r.result.starts_with("n/a"))
        );
    }

    #[test]
    fn a_skipped_peer_says_why() {
        let rows = [skipped(
            "vs restic/borg: after 1,000 changed files",
            "borg",
            "borg not installed",
        )];
        let out = evaluate(&rows, SMALL);
        let r = out
            .iter()
            .find(|r| r.id == "T3b" && r.peer == "borg")
            .expect("T3b borg");
        assert_eq!(r.result, "n/a (borg not installed)");
        assert_eq!(r.passed(), None);
    }

    #[test]
    fn steady_state_combines_our_version_and_retirement_with_the_peers_rm() {
        let rm = "rm -rf of one --link-dest snapshot";
        let both = "rsync --link-dest + rm -rf oldest";
        let rows = [
            timed(
                "steady state, default rules: the retirement after a version",
                rm,
                (0.1, 0.1),
                (1.0, 0.5),
            ),
            timed(
                "steady state, default rules: version of 10 changed files + retirement",
                both,
                (0.9, 0.4),
                (9.0, 9.0),
            ),
            timed(
                "steady state, count-only rules: the retirement after a version",
                rm,
                (0.1, 0.1),
                (1.0, 1.0),
            ),
            timed(
                "steady state, count-only rules: version of 10 changed files + retirement",
                both,
                (2.5, 1.0),
                (9.0, 9.0),
            ),
        ];
        let out = evaluate(&rows, SMALL);
        let d = by(&out, "T6", "default rules");
        assert_eq!((d.ratio, d.ratio_cpu), (Some(0.9), Some(0.8)));
        assert_eq!(d.result, "PASS");
        let c = by(&out, "T6", "count-only rules");
        assert_eq!((c.ratio, c.result.as_str()), (Some(2.5), "FAIL"));
        assert_eq!(c.bound, "≤ 2");
    }

    #[test]
    fn scale_target_needs_the_million_file_tree() {
        let mut rows = vec![Row::new(
            "watch set-up: peak RSS",
            Unit::Bytes,
            vec![100.0 * 1024.0 * 1024.0],
            "inotifywait -m -r",
            Ok(vec![50.0 * 1024.0 * 1024.0]),
            None,
        )];
        let out = evaluate(&rows, SMALL);
        assert!(by(&out, "T7", "scale").result.contains("not requested"));
        let big = Scope {
            files: 1_000_000,
            dirs: 50_000,
        };
        let out = evaluate(&rows, big);
        let mem = by(&out, "T7", "largest peak memory of ours (watch set-up");
        assert_eq!(mem.result, "PASS");
        let present = by(&out, "T7", "scale rows reported");
        assert!(present.result.starts_with("FAIL (missing: first copy"));
        // Any program of ours above the allowance fails it, whichever measure it was.
        rows.push(Row::new(
            "peak memory: first copy",
            Unit::Bytes,
            vec![300.0 * 1024.0 * 1024.0],
            "cp -a",
            Ok(vec![3.0 * 1024.0 * 1024.0]),
            None,
        ));
        let out = evaluate(&rows, big);
        let mem = by(
            &out,
            "T7",
            "largest peak memory of ours (peak memory: first copy)",
        );
        assert_eq!(mem.result, "FAIL");
    }
}
