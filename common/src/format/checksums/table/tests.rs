//! The table against an oracle: a `BTreeMap<PathBuf, Record>` (what the table replaced),
//! whose order is `Path`'s own comparison.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

fn rec(b: u8) -> Record {
    Record {
        size: u64::from(b),
        hash: *blake3::hash(&[b]).as_bytes(),
    }
}

/// Normal relative paths from names that sort around `/` (`-`, `.x`, `0`) and prefixes of
/// each other (`a`, `a-b`, `ab`).
fn path() -> impl Strategy<Value = PathBuf> {
    let name = prop::sample::select(vec!["a", "a-b", "ab", "-", ".x", "0", "b", "\u{e9}", "a b"]);
    prop::collection::vec(name, 1..4).prop_map(|names| names.iter().collect())
}

#[derive(Debug, Clone)]
enum Op {
    Insert(PathBuf, u8),
    Get(PathBuf),
    Forget(PathBuf),
    Normalize,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (path(), any::<u8>()).prop_map(|(p, b)| Op::Insert(p, b)),
        2 => path().prop_map(Op::Get),
        1 => path().prop_map(Op::Forget),
        1 => Just(Op::Normalize),
    ]
}

proptest! {
    #[test]
    fn path_order_is_paths_order(a in path(), b in path()) {
        let bytes = |p: &Path| p.as_os_str().as_bytes().to_vec();
        prop_assert_eq!(path_order(&bytes(&a), &bytes(&b)), a.cmp(&b));
    }

    #[test]
    fn the_table_behaves_as_a_map(ops in prop::collection::vec(op(), 0..120)) {
        let mut table = Table::new();
        let mut oracle: BTreeMap<PathBuf, Record> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(p, b) => {
                    table.insert(&p, rec(b));
                    oracle.insert(p, rec(b));
                }
                Op::Get(p) => prop_assert_eq!(table.get(&p), oracle.get(&p).copied()),
                Op::Forget(p) => {
                    table.forget_under(&p);
                    oracle.retain(|k, _| !k.starts_with(&p));
                }
                Op::Normalize => table.normalize(),
            }
        }
        let got: Vec<(PathBuf, Record)> =
            table.iter().map(|(p, r)| (p.to_path_buf(), r)).collect();
        let want: Vec<(PathBuf, Record)> = oracle.into_iter().collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_walk_in_path_order_stays_sorted_and_a_long_tail_is_sorted_in_by_a_lookup() {
    let mut t = Table::new();
    for i in 0..10 {
        t.insert(&PathBuf::from(format!("d/{i}")), rec(i));
    }
    assert_eq!(t.sorted, 10, "in order: nothing to sort");
    // The first of these comes after `d/9`: the rest are the tail, one more than the limit.
    for i in (0..=TAIL_SCAN_MAX as u32 + 1).rev() {
        t.insert(&PathBuf::from(format!("e/{i:05}")), rec(1));
    }
    assert!(t.sorted < t.len());
    assert_eq!(t.get(Path::new("e/00007")), Some(rec(1)));
    assert_eq!(
        t.sorted,
        t.len(),
        "a tail longer than the scan limit is sorted in"
    );
    t.forget_under(Path::new("e"));
    assert_eq!(t.len(), 10);
    t.forget_under(Path::new(""));
    assert!(t.is_empty());
}
