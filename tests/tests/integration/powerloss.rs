//! Power loss: what reaches the disk, not only the order of a program's steps.
//!
//! The direct tests here show each repair on a state a power cut leaves (a journal ending
//! in NUL bytes, a version whose files never reached the disk).

use std::fs;
use std::io::Write;
use std::path::Path;

use reverb_tests::Fixture;

/// Every line of the journal at `path` is whole: it ends with a newline, holds no NUL byte
/// and has the five columns; the first is the header.
fn assert_journal_whole(path: &Path) {
    let bytes = fs::read(path).expect("read journal");
    assert_eq!(
        bytes.last(),
        Some(&b'\n'),
        "journal does not end with a newline"
    );
    for (n, line) in bytes[..bytes.len() - 1].split(|&b| b == b'\n').enumerate() {
        assert!(
            !line.contains(&0) && line.split(|&b| b == b'\t').count() == 5,
            "damaged journal line {}: {:?}",
            n + 1,
            String::from_utf8_lossy(&line[..line.len().min(120)])
        );
    }
}

#[test]
fn a_journal_ending_in_nuls_is_cut_before_the_next_append() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"one").expect("write");
    f.first();
    let journal = f.job_dir().join("journal.tsv");
    // What ext4 leaves when the file's new size reached the disk but its data did not.
    let mut j = fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .expect("open");
    j.write_all(b"2026-11-24T21:49:00.123Z\tsnap\tsnap")
        .expect("tear");
    j.write_all(&[0u8; 3000]).expect("tear");
    drop(j);
    fs::write(f.src.join("a"), b"two").expect("write");
    assert!(!f.rescan().is_empty(), "no new version");
    assert_journal_whole(&journal);
    f.check_clean();
}
