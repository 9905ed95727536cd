use super::*;
use proptest::prelude::*;

fn facts(n: u64) -> Facts {
    Facts {
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        size: n,
        mtime: (1_700_000_000 + n as i64, 5),
        ctime: (1_700_000_001 + n as i64, 7),
        ino: 100 + n,
        dev: 42,
    }
}

fn header() -> Header {
    Header {
        version: "V3-20261207T094236Z".into(),
        recorded_at: (1_800_000_000, 1),
        settings: [7; 32],
        nonce: [9; 16],
    }
}

fn block(dir: &str, names: &[&str]) -> Block {
    Block {
        dir: dir.as_bytes().to_vec(),
        entries: names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_bytes().to_vec(), (i != 1).then(|| facts(i as u64))))
            .collect(),
    }
}

fn write(dir: &Path, blocks: &[Block]) -> PathBuf {
    let dest = dir.join(BASE);
    let mut w = BaseWriter::create(dir, &dest, &header(), Access::PRIVATE).expect("create");
    for b in blocks {
        w.push(b).expect("push");
    }
    w.finish().expect("finish");
    dest
}

#[test]
fn a_base_reads_back_block_by_block_in_walk_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = [
        block("", &["a", "a-c", "b"]),
        block("a", &["x"]),
        block("a/x", &["deep"]),
        block("a-c", &["y", "z"]),
    ];
    let path = write(tmp.path(), &blocks);
    let mut r = BaseReader::open(&path).expect("open");
    assert_eq!(r.header(), &header());
    assert_eq!(r.block(b"").as_ref(), Some(&blocks[0]));
    // A directory without a block: none, and the next one is still found.
    assert_eq!(r.block(b"a/w"), None);
    assert_eq!(r.block(b"a/x").as_ref(), Some(&blocks[2]));
    assert_eq!(r.block(b"a-c").as_ref(), Some(&blocks[3]));
    assert_eq!(r.block(b"b"), None);
    assert_eq!(blocks[3].get(b"y"), Some(&facts(0)));
    assert_eq!(blocks[3].get(b"z"), None, "a name without facts");
    assert_eq!(blocks[3].get(b"q"), None);
}

#[test]
fn the_walk_order_is_by_component() {
    assert_eq!(walk_order(b"", b"a"), Ordering::Less);
    assert_eq!(walk_order(b"a/b", b"a-c"), Ordering::Less, "a < a-c");
    assert_eq!(walk_order(b"a", b"a/b"), Ordering::Less);
    assert_eq!(walk_order(b"b", b"a/z"), Ordering::Greater);
}

#[test]
fn damage_ends_the_reader_and_never_yields_a_wrong_block() {
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = [block("", &["a"]), block("a", &["x"]), block("b", &["y"])];
    let path = write(tmp.path(), &blocks);
    let good = fs::read(&path).expect("read");
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        fs::write(&path, &bad).expect("write");
        let Some(mut r) = BaseReader::open(&path) else {
            continue;
        };
        for b in &blocks {
            if let Some(got) = r.block(&b.dir) {
                assert_eq!(&got, b, "byte {i}");
            }
        }
    }
    // Truncated anywhere: a prefix of the blocks, each intact.
    for len in 0..good.len() {
        fs::write(&path, &good[..len]).expect("write");
        let Some(mut r) = BaseReader::open(&path) else {
            continue;
        };
        for b in &blocks {
            if let Some(got) = r.block(&b.dir) {
                assert_eq!(&got, b, "length {len}");
            }
        }
    }
}

#[test]
fn a_block_of_another_base_does_not_pass() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = write(tmp.path(), &[block("", &["a"])]);
    let mut bytes = fs::read(&path).expect("read");
    let other = Header {
        nonce: [1; 16],
        ..header()
    };
    // The same header, a block keyed with another nonce after it.
    let header_len = header().encode().len();
    bytes.truncate(header_len);
    bytes.extend_from_slice(&block("", &["a"]).encode(&other.nonce));
    fs::write(&path, &bytes).expect("write");
    let mut r = BaseReader::open(&path).expect("header is fine");
    assert_eq!(r.block(b""), None);
}

#[test]
fn an_unknown_format_version_is_not_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = write(tmp.path(), &[block("", &["a"])]);
    let mut bytes = fs::read(&path).expect("read");
    bytes[7] = 2;
    fs::write(&path, &bytes).expect("write");
    assert!(BaseReader::open(&path).is_none());
    let d = Delta {
        parent: "V1-x".into(),
        version: "V2-y".into(),
        subtrees: vec![b"a".to_vec()],
        entries: vec![],
    };
    let mut bytes = d.encode();
    bytes[7] = 2;
    assert_eq!(Delta::decode(&bytes), None);
}

#[test]
fn the_base_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let path = write(tmp.path(), &[]);
    let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

fn arb_delta() -> impl Strategy<Value = Delta> {
    let path = proptest::collection::vec(any::<u8>(), 0..40);
    (
        "[A-Za-z0-9-]{0,30}",
        "[A-Za-z0-9-]{0,30}",
        proptest::collection::vec(path.clone(), 0..20),
        proptest::collection::vec(path, 0..20),
    )
        .prop_map(|(parent, version, subtrees, entries)| Delta {
            parent,
            version,
            subtrees,
            entries,
        })
}

fn arb_facts() -> impl Strategy<Value = Facts> {
    (
        any::<u32>(),
        any::<(u32, u32, u64, i64, u32, i64, u32, u64, u64)>(),
    )
        .prop_map(|(mode, (uid, gid, size, ms, mn, cs, cn, ino, dev))| Facts {
            mode,
            uid,
            gid,
            size,
            mtime: (ms, mn),
            ctime: (cs, cn),
            ino,
            dev,
        })
}

proptest! {
    #[test]
    fn deltas_round_trip_and_damage_is_refused(d in arb_delta(), at in any::<usize>(), bit in 0u8..8) {
        let bytes = d.encode();
        prop_assert_eq!(Delta::decode(&bytes), Some(d.clone()));
        let mut bad = bytes.clone();
        let i = at % bad.len();
        bad[i] ^= 1 << bit;
        prop_assert_eq!(Delta::decode(&bad), None);
        prop_assert_eq!(Delta::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn blocks_round_trip(
        names in proptest::collection::btree_map(
            proptest::collection::vec(1u8..=255, 1..30), proptest::option::of(arb_facts()), 0..20),
        dir in proptest::collection::vec(any::<u8>(), 0..30),
    ) {
        let b = Block { dir, entries: names.into_iter().collect() };
        let bytes = b.encode(&[3; 16]);
        let body = &bytes[4..bytes.len() - HASH_LEN];
        prop_assert_eq!(Block::decode(body), Some(b));
    }
}
