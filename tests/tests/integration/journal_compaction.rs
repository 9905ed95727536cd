//! Journal compaction at retirement: raw change events older than the oldest retained
//! version leave journal.tsv; every other line stays, and later appends still land.

use std::fs;
use std::path::Path;

use reverb_tests::Fixture;
use reverb_tests::ops::{event, snap_changes};

const RAW: [&str; 5] = ["create", "modify", "attrib", "delete", "move"];

/// (time, event) of every record, the header skipped (an independent reading of the TSV).
fn records(job: &Path) -> Vec<(String, String, String)> {
    fs::read_to_string(job.join("journal.tsv"))
        .expect("journal")
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_owned(), f[2].to_owned(), l.to_owned())
        })
        .collect()
}

fn oldest_created(job: &Path) -> String {
    let index = fs::read_to_string(job.join("index.tsv")).expect("index");
    index
        .lines()
        .nth(1)
        .expect("a version")
        .split('\t')
        .nth(2)
        .expect("created")
        .to_owned()
}

#[test]
fn retirement_drops_raw_changes_older_than_the_oldest_version() {
    let f = Fixture::new();
    fs::write(f.src.join("seed"), b"0").expect("write");
    f.first();
    for i in 1..=4 {
        let name = format!("f{i}");
        fs::write(f.src.join(&name), b"x").expect("write");
        fs::write(f.src.join("seed"), i.to_string()).expect("write");
        let lines = [
            event("create", "file", Path::new(&name), None),
            event("modify", "file", Path::new("seed"), None),
        ];
        snap_changes(&f, &lines, &[]).assert_success();
    }
    let job = f.job_dir();
    let before = records(&job);
    assert!(
        before
            .iter()
            .filter(|r| RAW.contains(&r.1.as_str()))
            .count()
            >= 8
    );
    f.tool("reverb-retire")
        .args(["--keep", "2"])
        .assert_success();
    let oldest = oldest_created(&job);
    let after = records(&job);
    // The oracle: the old journal minus raw changes before the oldest version, plus what
    // the retirement itself appended (lines the old journal did not have, none of them raw).
    let expected: Vec<&String> = before
        .iter()
        .filter(|r| !(RAW.contains(&r.1.as_str()) && r.0 < oldest))
        .map(|r| &r.2)
        .collect();
    let kept: Vec<&String> = after.iter().take(expected.len()).map(|r| &r.2).collect();
    assert_eq!(
        kept, expected,
        "compaction keeps every other line, in order"
    );
    assert!(
        after[expected.len()..]
            .iter()
            .all(|r| !RAW.contains(&r.1.as_str())),
        "only retirement lines follow"
    );
    assert!(
        after.iter().any(|r| r.1 == "retire"),
        "the retirement is journaled"
    );
    assert!(
        after.len() < before.len(),
        "the journal shrank: {} -> {}",
        before.len(),
        after.len()
    );
    assert_eq!(
        after.iter().filter(|r| r.1 == "snapshot").count(),
        before.iter().filter(|r| r.1 == "snapshot").count(),
        "snapshot lines stay"
    );
    // Appends after the compaction land in the new file.
    fs::write(f.src.join("late"), b"l").expect("write");
    snap_changes(&f, &[event("create", "file", Path::new("late"), None)], &[]).assert_success();
    let last = records(&job);
    assert!(
        last.iter()
            .any(|r| r.1 == "create" && r.2.contains("\tlate\t")),
        "{last:?}"
    );
    f.check_clean();
}
