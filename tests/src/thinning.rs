//! Thinning on demand: rewrites the `created` times in a job's index.tsv so that the
//! hourly rule retires exactly the versions a test chooses, whatever the real clock did.
//! (The times are facts the policy reads, nothing else; `--check` does not compare them.)

use crate::Fixture;

/// Hours far enough in the past that no `keep_within` of a test reaches them.
const BASE: &str = "2020-01-01T00:00:00Z";

/// Rewrites the index so that `reverb-retire --keep-hourly 100000` keeps exactly the
/// retained versions for which `keep(position, dir)` is true, plus the newest: each kept
/// version is the last of its hour, every other version shares the hour of the next kept
/// one. Returns the directories that will be retired.
pub fn arrange_hours(f: &Fixture, keep: impl Fn(usize, &str) -> bool) -> Vec<String> {
    let path = f.job_dir().join("index.tsv");
    let mut rows = reverb_common::index::read(&path).expect("index.tsv");
    let base: jiff::Timestamp = BASE.parse().expect("base time");
    let (mut hour, mut minute) = (0i64, 0i64);
    let last = rows.len().saturating_sub(1);
    let mut retired = Vec::new();
    for (i, row) in rows.iter_mut().enumerate() {
        let t = base + jiff::SignedDuration::from_secs(hour * 3600 + minute * 60);
        row.created = t.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string();
        if i == last || keep(i, &row.dir) {
            (hour, minute) = (hour + 1, 0);
        } else {
            minute += 1;
            retired.push(row.dir.clone());
        }
    }
    reverb_common::index::write(&path, &rows).expect("write index.tsv");
    retired
}
