use std::fs;
use std::os::unix::fs::MetadataExt;

use proptest::prelude::*;

use super::*;
use crate::format::checksums::render;

fn rec(b: u8) -> Record {
    Record {
        size: u64::from(b),
        hash: *blake3::hash(&[b]).as_bytes(),
    }
}

/// A job folder with versions 1 and 2 on disk.
fn job() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for n in [1, 2] {
        fs::create_dir(dir.path().join(format!("V{n}-20261201T000000Z"))).expect("mkdir");
    }
    dir
}

fn records(pairs: &[(&str, u8)]) -> Records {
    pairs
        .iter()
        .map(|(p, b)| (PathBuf::from(p), rec(*b)))
        .collect()
}

fn no_temporaries(job: &Path) -> bool {
    fs::read_dir(job.join(".tmp"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn carry_moves_records_under_a_path_and_is_idempotent() {
    let dir = job();
    let job = dir.path();
    let old = records(&[("d/a", 1), ("d/b/c", 2), ("d2", 3), ("d-x", 6), ("e", 4)]);
    write(job, 1, &old).expect("write");
    write(job, 2, &records(&[("z", 5)])).expect("write");
    write(job, 9, &records(&[("z", 5)])).expect("write"); // no V9 on disk: an orphan
    carry(job, 1, 2, &[PathBuf::from("d")]).expect("carry");
    let inode = fs::metadata(file_of(job, 2)).expect("stat").ino();
    carry(job, 1, 2, &[PathBuf::from("d")]).expect("again");
    let got = read(job, 2).expect("read").expect("exists");
    let keys: Vec<_> = got.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(keys, ["d/a", "d/b/c", "z"]);
    assert_eq!(versions_with_files(job).expect("list"), [1, 2]);
    assert_eq!(
        fs::metadata(file_of(job, 2)).expect("stat").ino(),
        inode,
        "nothing to add: the file is not rewritten"
    );
    assert!(no_temporaries(job));
}

#[test]
fn files_out_of_path_order_are_merged_in_memory() {
    let dir = job();
    let job = dir.path();
    fs::create_dir(job.join(crate::format::checksums::DIR)).expect("dir");
    let line = |p: &str, b: u8| format!("{p}\t{}\t{}\n", rec(b).size, rec(b).hex());
    let text = format!(
        "path\tsize\tblake3\n{}{}{}",
        line("d/b", 2),
        line("d/a", 1),
        line("e", 4)
    );
    fs::write(file_of(job, 1), text).expect("write");
    let to = format!("path\tsize\tblake3\n{}{}", line("z", 5), line("c", 3));
    fs::write(file_of(job, 2), to).expect("write");
    carry(job, 1, 2, &[PathBuf::from("d")]).expect("carry");
    let text = fs::read_to_string(file_of(job, 2)).expect("read");
    assert_eq!(
        text,
        render(&records(&[("c", 3), ("d/a", 1), ("d/b", 2), ("z", 5)]))
    );
    assert!(no_temporaries(job));
}

#[test]
fn a_damaged_file_is_an_error_naming_it_and_changes_nothing() {
    let dir = job();
    let job = dir.path();
    write(job, 1, &records(&[("d/a", 1)])).expect("write");
    let good = render(&records(&[("z", 5)]));
    write(job, 2, &records(&[("z", 5)])).expect("write");
    let mut text = fs::read_to_string(file_of(job, 1)).expect("read");
    text.push_str("d/b\tnot-a-size\tzz\n");
    fs::write(file_of(job, 1), text).expect("damage");
    let e = carry(job, 1, 2, &[PathBuf::from("d")]).expect_err("damaged");
    let shown = e.to_string();
    assert!(
        shown.contains("V1.tsv") && shown.contains("line 3"),
        "{shown}"
    );
    assert_eq!(fs::read_to_string(file_of(job, 2)).expect("read"), good);
    assert!(no_temporaries(job));
}

/// Paths of names that sort around `/`.
fn path() -> impl Strategy<Value = PathBuf> {
    let name = prop::sample::select(vec!["a", "a-b", "ab", "-", "b", "a b"]);
    prop::collection::vec(name, 1..4).prop_map(|names| names.iter().collect())
}

fn file() -> impl Strategy<Value = Records> {
    prop::collection::btree_map(path(), (0u8..4).prop_map(rec), 0..30)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The streaming merge against the map merge it replaced.
    #[test]
    fn the_streaming_merge_is_the_map_merge(
        old in file(),
        new in prop::option::of(file()),
        moved in prop::collection::vec(path(), 0..4),
    ) {
        let dir = job();
        let job = dir.path();
        write(job, 1, &old).expect("write");
        if let Some(new) = &new {
            write(job, 2, new).expect("write");
        }
        carry(job, 1, 2, &moved).expect("carry");
        let mut want = new.clone().unwrap_or_default();
        for (p, r) in &old {
            if moved.iter().any(|m| p.starts_with(m)) {
                want.insert(p.clone(), *r);
            }
        }
        let got = read(job, 2).expect("read");
        let expected = if new.is_none() && want.is_empty() { None } else { Some(want) };
        prop_assert_eq!(got, expected);
        prop_assert!(no_temporaries(job));
    }
}
