//! The retirement plan (docs/retirement.md), pure as restic's `forget` is beside `prune`:
//! from the index rows, the `keep_*` rules and the size limit (with the clock and time zone
//! the rules read, [`Limits`]) to a [`Plan`]: which versions to retire and why, and whether
//! the size limit can be met at all. No I/O: [`super::execute`] does what the plan says.
//!
//! Owns: the order of retirement (every version no rule keeps, by [`policy::plan`]; then
//! the oldest kept one while the job is over its size limit), the estimate of what each
//! retirement frees ([`estimate_moved`]), and the unmeetable size limit ([`Unmeetable`]).
//!
//! Invariants: the newest version is never retired; a size limit the newest version alone
//! exceeds retires nothing for size (only a job over its limit can be unmeetable); an
//! unparsable `created` time is [`Error::Damaged`], never a guess.

use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::engine::retire::policy::{self, Candidate, Rule, Verdict};
use crate::error::{Error, Result};
use crate::format::index::IndexRow;
use crate::format::settings::{Rules, format_size};

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
pub fn unmeetable_for(rows: &[IndexRow], limit: Option<u64>, total: u64) -> Option<Unmeetable> {
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
/// estimated with [`estimate_moved`]; [`super::enforce`] re-reads the index after every real one.
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
