//! Lookups through the marks against the whole file read into a map (the oracle).

use std::fs;
use std::path::PathBuf;

use super::*;
use crate::format::checksums::{DIR, Records, file_of, read, write};

fn rec(i: usize) -> Record {
    Record {
        size: i as u64,
        hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
    }
}

/// Paths around `/` and each other's prefixes: `d3/f7`, `d3-x/f7`, `d3/f7/g`.
fn records(n: usize) -> Records {
    (0..n)
        .map(|i| {
            let p = match i % 3 {
                0 => format!("d{}/f{i}", i % 7),
                1 => format!("d{}-x/f{i}", i % 7),
                _ => format!("d{}/f{}/g{i}", i % 7, i - 2),
            };
            (PathBuf::from(p), rec(i))
        })
        .collect()
}

#[test]
fn every_lookup_through_the_marks_finds_what_the_file_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = dir.path();
    let all = records(1000);
    write(job, 1, &all).expect("write");
    let mut old = OldRecords::open(job, 1).expect("open").expect("a file");
    let OldRecords::Sampled(s) = &old else {
        panic!("a file in path order is sampled");
    };
    assert_eq!(s.marks.len(), 1000usize.div_ceil(STRIDE));
    for (p, r) in &all {
        assert_eq!(old.get(p).expect("lookup"), Some(*r), "{}", p.display());
        // Absent paths just before and after it, and below it.
        for absent in [format!("{}-", p.display()), format!("{}/zz", p.display())] {
            let absent = PathBuf::from(absent);
            assert_eq!(old.get(&absent).expect("lookup"), all.get(&absent).copied());
        }
    }
    assert_eq!(
        old.get(Path::new("a")).expect("lookup"),
        None,
        "before the first"
    );
    assert_eq!(
        old.get(Path::new("z")).expect("lookup"),
        None,
        "after the last"
    );
    assert!(OldRecords::open(job, 2).expect("no file").is_none());
}

#[test]
fn many_lookups_read_the_whole_file_and_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = dir.path();
    let all = records(300);
    write(job, 1, &all).expect("write");
    let mut old = OldRecords::open(job, 1).expect("open").expect("a file");
    for (p, r) in all.iter().cycle().take(LOOKUPS_BEFORE_TABLE + 10) {
        assert_eq!(old.get(p).expect("lookup"), Some(*r));
    }
    assert!(matches!(old, OldRecords::Whole(_)));
}

#[test]
fn a_file_out_of_path_order_is_read_whole_and_damage_names_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = dir.path();
    fs::create_dir(job.join(DIR)).expect("dir");
    let line = |p: &str, i: usize| format!("{p}\t{}\t{}\n", rec(i).size, rec(i).hex());
    let text = format!("path\tsize\tblake3\n{}{}", line("b", 2), line("a", 1));
    fs::write(file_of(job, 1), &text).expect("write");
    let mut old = OldRecords::open(job, 1).expect("open").expect("a file");
    assert!(matches!(old, OldRecords::Whole(_)));
    assert_eq!(old.get(Path::new("a")).expect("lookup"), Some(rec(1)));
    assert_eq!(
        read(job, 1).expect("read").expect("file").len(),
        2,
        "the oracle reads both"
    );
    fs::write(file_of(job, 2), format!("{text}c\tx\t00\n")).expect("write");
    let e = OldRecords::open(job, 2).expect_err("damaged").to_string();
    assert!(e.contains("V2.tsv") && e.contains("line 4"), "{e}");
}

#[test]
fn a_file_replaced_after_its_marks_were_read_is_read_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = dir.path();
    let before = records(500);
    write(job, 1, &before).expect("write");
    let mut old = OldRecords::open(job, 1).expect("open").expect("a file");
    let (first, r) = before.iter().next().expect("a record");
    assert_eq!(old.get(first).expect("lookup"), Some(*r));
    // A retirement carries records in: the file is replaced by a longer one, whose lines
    // sit at other offsets.
    let mut after: Records = (0..40)
        .map(|i| (PathBuf::from(format!("a{i:03}")), rec(10_000 + i)))
        .collect();
    after.extend(before.clone());
    write(job, 1, &after).expect("replace");
    for (p, r) in &after {
        assert_eq!(old.get(p).expect("lookup"), Some(*r), "{}", p.display());
    }
    // Removed: no records.
    fs::remove_file(file_of(job, 1)).expect("rm");
    assert_eq!(old.get(first).expect("lookup"), None);
}
