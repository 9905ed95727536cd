//! The retention rules (docs/retirement.md) and the policy that applies them: [`plan`], a
//! pure function of the versions, the rules, the time now and the time zone.
//!
//! Owns: what each `keep_*` rule keeps, and the union that decides (restic's `forget`
//! semantics: a version is kept when any rule keeps it; `keep_versions` is `--keep-last`).
//!
//! Invariants: the newest version is always kept; when every rule is 0 nothing is retired;
//! otherwise the kept set is exactly the union of what each rule keeps on its own (plus the
//! newest), and every kept version names every rule that keeps it. Buckets are local time
//! in the time zone given (the host's `TZ`, UTC when none is set: [`host_time_zone`]).

use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::format::settings::Rules;

/// Only `rule` of `rules` (the others 0): what that rule keeps on its own.
#[cfg(test)]
pub fn only(rules: &Rules, rule: Rule) -> Rules {
    let mut r = Rules::NONE;
    match rule {
        Rule::Newest | Rule::NoRules => {}
        Rule::Last => r.versions = rules.versions,
        Rule::Within => r.within = rules.within,
        Rule::Bucket(b) => *count_mut(&mut r, b) = count(rules, b),
    }
    r
}

fn count(rules: &Rules, b: Bucket) -> u64 {
    match b {
        Bucket::Hourly => rules.hourly,
        Bucket::Daily => rules.daily,
        Bucket::Weekly => rules.weekly,
        Bucket::Monthly => rules.monthly,
        Bucket::Yearly => rules.yearly,
    }
}

#[cfg(test)]
fn count_mut(rules: &mut Rules, b: Bucket) -> &mut u64 {
    match b {
        Bucket::Hourly => &mut rules.hourly,
        Bucket::Daily => &mut rules.daily,
        Bucket::Weekly => &mut rules.weekly,
        Bucket::Monthly => &mut rules.monthly,
        Bucket::Yearly => &mut rules.yearly,
    }
}

/// A bucket rule's unit of local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// A clock hour (a repeated hour at a daylight-saving change is two buckets).
    Hourly,
    /// A calendar day.
    Daily,
    /// An ISO week (Monday to Sunday, numbered within its ISO year).
    Weekly,
    /// A calendar month.
    Monthly,
    /// A calendar year.
    Yearly,
}

impl Bucket {
    /// Every bucket, shortest first.
    pub const ALL: [Bucket; 5] = [
        Bucket::Hourly,
        Bucket::Daily,
        Bucket::Weekly,
        Bucket::Monthly,
        Bucket::Yearly,
    ];

    /// The bucket `t` falls in, in `tz`: equal keys are the same bucket.
    fn key(self, t: Timestamp, tz: &TimeZone) -> (i32, i32, i32, i32) {
        let dt = tz.to_datetime(t);
        let (y, m, d) = (
            i32::from(dt.year()),
            i32::from(dt.month()),
            i32::from(dt.day()),
        );
        match self {
            Bucket::Hourly => (
                y,
                m * 100 + d,
                i32::from(dt.hour()),
                tz.to_offset(t).seconds(),
            ),
            Bucket::Daily => (y, m, d, 0),
            Bucket::Weekly => {
                let w = dt.date().iso_week_date();
                (i32::from(w.year()), i32::from(w.week()), 0, 0)
            }
            Bucket::Monthly => (y, m, 0, 0),
            Bucket::Yearly => (y, 0, 0, 0),
        }
    }
}

/// The rule that keeps a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// The newest version is always kept.
    Newest,
    /// `keep_versions`.
    Last,
    /// `keep_within`.
    Within,
    /// `keep_hourly` … `keep_yearly`.
    Bucket(Bucket),
    /// Every rule is 0: nothing is retired by count or time.
    NoRules,
}

impl Rule {
    /// The rule's name in output: the config key, or `newest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Newest => "newest",
            Rule::Last => "keep_versions",
            Rule::Within => "keep_within",
            Rule::Bucket(Bucket::Hourly) => "keep_hourly",
            Rule::Bucket(Bucket::Daily) => "keep_daily",
            Rule::Bucket(Bucket::Weekly) => "keep_weekly",
            Rule::Bucket(Bucket::Monthly) => "keep_monthly",
            Rule::Bucket(Bucket::Yearly) => "keep_yearly",
            Rule::NoRules => "no-rules",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The version number (higher is newer).
    pub version: u64,
    /// When it was taken.
    pub created: Timestamp,
}

/// The policy's verdict on one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The version number.
    pub version: u64,
    /// The rules that keep it, in [`Rule`] order; empty means "retire".
    pub kept_by: Vec<Rule>,
}

impl Verdict {
    /// Whether the version stays.
    pub fn keep(&self) -> bool {
        !self.kept_by.is_empty()
    }
}

/// The host's time zone for buckets: `TZ` when set, else the system's, UTC when none.
pub fn host_time_zone() -> TimeZone {
    TimeZone::system()
}

/// Applies `rules` to `versions` (any order) at time `now`, bucketing in `tz`. Returns one
/// verdict per version, oldest (lowest number) first. When every rule is 0, every version
/// is kept ([`Rule::NoRules`]; the newest by [`Rule::Newest`] as well).
pub fn plan(versions: &[Candidate], rules: &Rules, now: Timestamp, tz: &TimeZone) -> Vec<Verdict> {
    let mut sorted: Vec<Candidate> = versions.to_vec();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.version));
    let mut kept: Vec<Vec<Rule>> = vec![Vec::new(); sorted.len()];
    if let Some(first) = kept.first_mut() {
        first.push(Rule::Newest);
    }
    if rules.is_empty() {
        kept.iter_mut().for_each(|k| k.push(Rule::NoRules));
    }
    for k in kept.iter_mut().take(clamp(rules.versions)) {
        k.push(Rule::Last);
    }
    if !rules.within.is_zero() {
        let within = i128::try_from(rules.within.as_nanos()).unwrap_or(i128::MAX);
        for (c, k) in sorted.iter().zip(kept.iter_mut()) {
            if now.as_nanosecond() - c.created.as_nanosecond() < within {
                k.push(Rule::Within);
            }
        }
    }
    for b in Bucket::ALL {
        keep_buckets(&sorted, b, count(rules, b), tz, &mut kept);
    }
    let mut out: Vec<Verdict> = sorted
        .iter()
        .zip(kept)
        .map(|(c, kept_by)| Verdict {
            version: c.version,
            kept_by,
        })
        .collect();
    out.reverse();
    out
}

/// Marks the newest version of each of the newest `count` buckets of kind `b` that hold a
/// version (`sorted` is newest first).
fn keep_buckets(
    sorted: &[Candidate],
    b: Bucket,
    count: u64,
    tz: &TimeZone,
    kept: &mut [Vec<Rule>],
) {
    let mut left = count;
    let mut last = None;
    for (c, k) in sorted.iter().zip(kept.iter_mut()) {
        if left == 0 {
            break;
        }
        let key = b.key(c.created, tz);
        if last != Some(key) {
            k.push(Rule::Bucket(b));
            last = Some(key);
            left -= 1;
        }
    }
}

fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    /// Central European time with its daylight-saving rules (no tz database needed).
    fn berlin() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").expect("posix tz")
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    /// Versions 1.. taken at these times.
    fn at(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                version: i as u64 + 1,
                created: ts(t),
            })
            .collect()
    }

    fn kept(versions: &[Candidate], rules: &Rules, now: &str, tz: &TimeZone) -> Vec<u64> {
        plan(versions, rules, ts(now), tz)
            .into_iter()
            .filter(Verdict::keep)
            .map(|v| v.version)
            .collect()
    }

    fn rules(f: impl FnOnce(&mut Rules)) -> Rules {
        let mut r = Rules::NONE;
        f(&mut r);
        r
    }

    const NOW: &str = "2026-12-01T12:00:00Z";

    /// (what, times of V1.., rules, time zone, kept versions).
    type Case = (&'static str, Vec<&'static str>, Rules, TimeZone, Vec<u64>);

    /// The table of cases.
    #[test]
    fn table() {
        let utc = TimeZone::UTC;
        let cases: Vec<Case> = vec![
            ("no versions", vec![], Rules::default(), utc.clone(), vec![]),
            (
                "empty rules keep everything",
                vec!["2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z"],
                Rules::NONE,
                utc.clone(),
                vec![1, 2],
            ),
            (
                "the newest is always kept",
                vec!["2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z"],
                rules(|r| r.within = Duration::from_secs(1)),
                utc.clone(),
                vec![2],
            ),
            (
                "keep_versions: the newest N",
                vec![
                    "2026-12-01T10:00:00Z",
                    "2026-12-01T10:01:00Z",
                    "2026-12-01T10:02:00Z",
                    "2026-12-01T10:03:00Z",
                    "2026-12-01T10:04:00Z",
                ],
                rules(|r| r.versions = 3),
                utc.clone(),
                vec![3, 4, 5],
            ),
            (
                "hour edge: 10:59:59.999 and 11:00 are two hours; 11:00 and 11:59:59 one",
                vec![
                    "2026-12-01T10:59:59.999Z",
                    "2026-12-01T11:00:00Z",
                    "2026-12-01T11:59:59Z",
                ],
                rules(|r| r.hourly = 5),
                utc.clone(),
                vec![1, 3],
            ),
            (
                "hourly counts hours that have a version, newest first",
                vec![
                    "2026-12-01T05:10:00Z",
                    "2026-12-01T07:10:00Z",
                    "2026-12-01T07:20:00Z",
                    "2026-12-01T09:10:00Z",
                ],
                rules(|r| r.hourly = 2),
                utc.clone(),
                vec![3, 4],
            ),
            (
                "days are local: 22:30Z and 23:30Z are two Berlin days, one UTC day",
                vec!["2026-11-30T22:30:00Z", "2026-11-30T23:30:00Z"],
                rules(|r| r.daily = 2),
                berlin(),
                vec![1, 2],
            ),
            (
                "same pair in UTC: one day",
                vec!["2026-11-30T22:30:00Z", "2026-11-30T23:30:00Z"],
                rules(|r| r.daily = 2),
                utc.clone(),
                vec![2],
            ),
            (
                "DST end: 02:30 CEST and 02:30 CET are two hours, one day",
                vec!["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"],
                rules(|r| r.hourly = 2),
                berlin(),
                vec![1, 2],
            ),
            (
                "DST end, daily",
                vec!["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"],
                rules(|r| r.daily = 2),
                berlin(),
                vec![2],
            ),
            (
                "DST start: 01:59 CET and 03:00 CEST are two hours",
                vec!["2026-03-29T00:59:00Z", "2026-03-29T01:00:00Z"],
                rules(|r| r.hourly = 2),
                berlin(),
                vec![1, 2],
            ),
            (
                "ISO weeks: Sunday and Monday are two weeks",
                vec!["2026-01-04T12:00:00Z", "2026-01-05T12:00:00Z"],
                rules(|r| r.weekly = 2),
                utc.clone(),
                vec![1, 2],
            ),
            (
                "ISO weeks cross the year: 2026-12-31 and 2027-01-01 are 2026-W53",
                vec!["2026-12-31T12:00:00Z", "2027-01-01T12:00:00Z"],
                rules(|r| r.weekly = 2),
                utc.clone(),
                vec![2],
            ),
            (
                "... but two years",
                vec!["2026-12-31T12:00:00Z", "2027-01-01T12:00:00Z"],
                rules(|r| r.yearly = 2),
                utc.clone(),
                vec![1, 2],
            ),
            (
                "monthly: the newest of each of the last 2 months with a version",
                vec![
                    "2026-08-31T23:59:59Z",
                    "2026-09-01T00:00:00Z",
                    "2026-09-30T00:00:00Z",
                    "2026-11-15T00:00:00Z",
                ],
                rules(|r| r.monthly = 2),
                utc.clone(),
                vec![3, 4],
            ),
            (
                "keep_within: younger than, not as old as",
                vec![
                    "2026-12-01T10:59:59.999999999Z",
                    "2026-12-01T11:00:00Z",
                    "2026-12-01T11:00:00.000000001Z",
                    "2026-12-01T11:30:00Z",
                ],
                rules(|r| r.within = Duration::from_secs(3600)),
                utc.clone(),
                vec![3, 4],
            ),
            (
                "versions in the future are within any duration",
                vec![
                    "2026-12-01T09:00:00Z",
                    "2027-06-01T00:00:00Z",
                    "2026-12-01T11:59:00Z",
                ],
                rules(|r| r.within = Duration::from_secs(60)),
                utc.clone(),
                vec![2, 3],
            ),
            (
                "the union: any rule keeps",
                vec![
                    "2026-10-01T12:00:00Z",
                    "2026-11-01T12:00:00Z",
                    "2026-11-01T13:00:00Z",
                    "2026-12-01T11:00:00Z",
                    "2026-12-01T11:50:00Z",
                ],
                rules(|r| {
                    r.versions = 1;
                    r.within = Duration::from_secs(7200);
                    r.monthly = 3;
                }),
                utc.clone(),
                vec![1, 3, 4, 5],
            ),
        ];
        for (what, times, r, tz, want) in cases {
            assert_eq!(kept(&at(&times), &r, NOW, &tz), want, "{what}");
        }
    }

    #[test]
    fn kept_versions_name_their_rules() {
        let v = at(&["2026-11-01T12:00:00Z", "2026-12-01T11:00:00Z"]);
        let r = rules(|r| {
            r.versions = 1;
            r.within = Duration::from_secs(7200);
            r.monthly = 3;
        });
        let p = plan(&v, &r, ts(NOW), &TimeZone::UTC);
        assert_eq!(p[0].kept_by, [Rule::Bucket(Bucket::Monthly)]);
        assert_eq!(
            p[1].kept_by,
            [
                Rule::Newest,
                Rule::Last,
                Rule::Within,
                Rule::Bucket(Bucket::Monthly)
            ]
        );
        let p = plan(&v, &Rules::NONE, ts(NOW), &TimeZone::UTC);
        assert_eq!(p[0].kept_by, [Rule::NoRules]);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let d = Rules::default();
        assert_eq!(
            (
                d.versions, d.within, d.hourly, d.daily, d.weekly, d.monthly, d.yearly
            ),
            (100, Duration::from_secs(3600), 24, 14, 8, 12, 0)
        );
    }

    const ALL_RULES: [Rule; 7] = [
        Rule::Last,
        Rule::Within,
        Rule::Bucket(Bucket::Hourly),
        Rule::Bucket(Bucket::Daily),
        Rule::Bucket(Bucket::Weekly),
        Rule::Bucket(Bucket::Monthly),
        Rule::Bucket(Bucket::Yearly),
    ];

    fn arb_rules() -> impl Strategy<Value = Rules> {
        let n = || prop_oneof![Just(0u64), 0u64..6];
        (n(), 0u64..200_000, n(), n(), n(), n(), n()).prop_map(|(v, w, h, d, wk, m, y)| Rules {
            versions: v,
            within: Duration::from_secs(w * 10),
            hourly: h,
            daily: d,
            weekly: wk,
            monthly: m,
            yearly: y,
        })
    }

    proptest! {
        /// The kept set is exactly the newest plus the union of what each rule keeps on
        /// its own, and each version names exactly the rules that keep it alone.
        #[test]
        fn kept_set_is_the_union_of_the_rules(
            offsets in proptest::collection::vec(-3_000_000i64..60_000_000, 0..40),
            r in arb_rules(),
            berlin_tz in any::<bool>(),
        ) {
            let tz = if berlin_tz { berlin() } else { TimeZone::UTC };
            let now = ts(NOW);
            let versions: Vec<Candidate> = offsets
                .iter()
                .enumerate()
                .map(|(i, off)| Candidate {
                    version: i as u64 + 1,
                    created: now - jiff::SignedDuration::from_secs(*off * 3),
                })
                .collect();
            let got = plan(&versions, &r, now, &tz);
            prop_assert_eq!(got.len(), versions.len());
            if r.is_empty() {
                prop_assert!(got.iter().all(Verdict::keep));
                return Ok(());
            }
            let mut union: BTreeSet<(u64, Rule)> = BTreeSet::new();
            if let Some(newest) = versions.last() {
                union.insert((newest.version, Rule::Newest));
            }
            for rule in ALL_RULES {
                for v in plan(&versions, &only(&r, rule), now, &tz) {
                    if v.kept_by.contains(&rule) {
                        union.insert((v.version, rule));
                    }
                }
            }
            let mine: BTreeSet<(u64, Rule)> = got
                .iter()
                .flat_map(|v| v.kept_by.iter().map(move |k| (v.version, *k)))
                .collect();
            prop_assert_eq!(mine, union);
            // A bucket rule keeps at most its count; keep_versions exactly min(N, len).
            for rule in ALL_RULES {
                let n = got.iter().filter(|v| v.kept_by.contains(&rule)).count() as u64;
                match rule {
                    Rule::Last => prop_assert_eq!(n, r.versions.min(versions.len() as u64)),
                    Rule::Bucket(b) => prop_assert!(n <= count(&r, b)),
                    _ => {}
                }
            }
        }
    }
}
