//! Unit tests of [`super`] (receive.rs).

use super::*;
use crate::format::settings::JobSettings;
use crate::format::stream::{RecordReader, RecordWriter, Time};
use crate::vault::job;
use crate::vault::layout::Vault;
use proptest::prelude::*;

/// Records from memory; their end is the stream's end.
struct Records(std::vec::IntoIter<Record>);

impl Incoming for Records {
    fn next_record(&mut self) -> Result<Record> {
        self.0
            .next()
            .ok_or_else(|| Error::Unreachable("the stream ended".into()))
    }
}

/// A replica job in a fresh vault, with a canary folder beside the vault.
fn fixture() -> (tempfile::TempDir, JobCtx) {
    let tmp = tempfile::tempdir().expect("tmp");
    fs::create_dir(tmp.path().join("canary")).expect("mkdir");
    let vault = Vault::init(&tmp.path().join("vault")).expect("vault");
    let dir = job::create_replica(
        &vault,
        "job",
        Path::new("/src"),
        JobSettings::default(),
        "source-id",
    )
    .expect("replica");
    let ctx = job::open_dir(dir, "receive").expect("open");
    (tmp, ctx)
}

fn attrs(mode: u32) -> Attrs {
    Attrs {
        mode,
        uid: 0,
        gid: 0,
        mtime: Time {
            secs: 1_700_000_000,
            nanos: 5,
        },
        atime: Time::default(),
        xattrs: Vec::new(),
    }
}

fn file(name: &str, data: &[u8], group: Option<u64>) -> Vec<Record> {
    vec![
        Record::Entry(Entry {
            name: name.as_bytes().to_vec(),
            kind: Kind::File(FileEntry {
                attrs: attrs(0o640),
                size: data.len() as u64,
                hash: *blake3::hash(data).as_bytes(),
                data: DataMode::Follows,
                group,
            }),
        }),
        Record::Data(data.to_vec()),
    ]
}

/// A valid first version: files, a hole, a directory, a link, a hard link.
fn valid() -> (VersionHeader, Vec<Record>) {
    let header = VersionHeader {
        n: 1,
        dir: "V1-20261124T214900Z".into(),
        created: "2026-11-24T21:49:00.123Z".into(),
        base: None,
        root: attrs(0o755),
    };
    let mut r = file("a", b"one", Some(0));
    r.push(Record::Entry(Entry {
        name: b"b".to_vec(),
        kind: Kind::HardLink { group: 0 },
    }));
    r.push(Record::Entry(Entry {
        name: b"d".to_vec(),
        kind: Kind::Dir(attrs(0o700)),
    }));
    let mut sparse = vec![0u8; 8192];
    sparse.extend(b"end");
    r.push(Record::Entry(Entry {
        name: b"holes".to_vec(),
        kind: Kind::File(FileEntry {
            attrs: attrs(0o600),
            size: sparse.len() as u64,
            hash: *blake3::hash(&sparse).as_bytes(),
            data: DataMode::Follows,
            group: None,
        }),
    }));
    r.push(Record::Zeros(8192));
    r.push(Record::Data(b"end".to_vec()));
    r.push(Record::Entry(Entry {
        name: b"l".to_vec(),
        kind: Kind::Symlink {
            attrs: attrs(0o777),
            target: b"../a".to_vec(),
        },
    }));
    r.push(Record::DirEnd);
    r.push(Record::DirEnd);
    r.push(Record::VersionEnd(Counts {
        entries: 5,
        data_bytes: 3 + 8195,
    }));
    (header, r)
}

/// Every path below `root`, not following links.
fn all_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("ls").flatten() {
            out.push(e.path());
            if e.file_type().expect("type").is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}

/// Receives `records` (after `header`) and checks what must hold whatever they are.
fn receive_and_check(header: VersionHeader, records: Vec<Record>) -> Result<Received> {
    let (tmp, mut ctx) = fixture();
    let got = receive(
        &mut ctx,
        header,
        &mut Records(records.into_iter()),
        &HeldData::default(),
    );
    let job = tmp.path().join("vault/job");
    for p in all_paths(tmp.path()) {
        assert!(
            p.starts_with(&job)
                || p == tmp.path().join("vault")
                || p == tmp.path().join("vault").join(crate::vault::layout::MARKER)
                || p == tmp.path().join("canary"),
            "written outside the job folder: {}",
            p.display()
        );
    }
    let dirs = ctx.dir.versions_on_disk().expect("versions");
    match &got {
        Ok(r) => {
            assert_eq!(dirs, std::slice::from_ref(&r.name));
            let problems = crate::vault::check::check(&ctx.dir).expect("check");
            assert!(problems.is_empty(), "{problems:?}");
        }
        Err(e) => {
            assert!(dirs.is_empty(), "{e}: a version was published");
            if !matches!(e, Error::Unreachable(_)) {
                assert!(
                    fs::read_dir(ctx.dir.partial())
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(true),
                    "{e}: the refused version was kept"
                );
            }
        }
    }
    got
}

#[test]
fn a_valid_version_is_received_exactly() {
    let (header, records) = valid();
    let (tmp, mut ctx) = fixture();
    let got = receive(
        &mut ctx,
        header,
        &mut Records(records.into_iter()),
        &HeldData::default(),
    )
    .expect("received");
    let v = ctx.dir.version(&got.name);
    assert_eq!(fs::read(v.join("a")).expect("a"), b"one");
    assert_eq!(fs::read(v.join("d/holes")).expect("holes").len(), 8195);
    assert_eq!(fs::read_link(v.join("d/l")).expect("l"), Path::new("../a"));
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        fs::metadata(v.join("a")).expect("a"),
        fs::metadata(v.join("b")).expect("b"),
    );
    assert_eq!((a.ino(), a.mode() & 0o7777), (b.ino(), 0o640));
    assert!(
        crate::vault::check::check(&ctx.dir)
            .expect("check")
            .is_empty()
    );
    drop(tmp);
}

/// One structural change to a valid stream.
#[derive(Debug, Clone)]
enum Mutation {
    Drop(usize),
    Repeat(usize),
    Swap(usize, usize),
    Rename(usize, Vec<u8>),
    Resize(usize, u64),
    Rehash(usize),
    Cut(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let names = prop_oneof![
        Just(b"..".to_vec()),
        Just(b"../x".to_vec()),
        Just(b"/etc".to_vec()),
        Just(b"a".to_vec()),
        Just(b"d".to_vec()),
        Just(b"\0".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    prop_oneof![
        (0usize..16).prop_map(Mutation::Drop),
        (0usize..16).prop_map(Mutation::Repeat),
        (0usize..16, 0usize..16).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (0usize..16, names).prop_map(|(i, n)| Mutation::Rename(i, n)),
        (0usize..16, 0u64..20_000).prop_map(|(i, s)| Mutation::Resize(i, s)),
        (0usize..16).prop_map(Mutation::Rehash),
        (0usize..16).prop_map(Mutation::Cut),
    ]
}

fn apply(records: &mut Vec<Record>, m: &Mutation) {
    let len = records.len();
    if len == 0 {
        return;
    }
    match m.clone() {
        Mutation::Drop(i) => {
            records.remove(i % len);
        }
        Mutation::Repeat(i) => {
            let r = records[i % len].clone();
            records.insert(i % len, r);
        }
        Mutation::Swap(a, b) => records.swap(a % len, b % len),
        Mutation::Rename(i, name) => {
            if let Record::Entry(e) = &mut records[i % len] {
                e.name = name;
            }
        }
        Mutation::Resize(i, size) => {
            if let Record::Entry(Entry {
                kind: Kind::File(f),
                ..
            }) = &mut records[i % len]
            {
                f.size = size;
            }
        }
        Mutation::Rehash(i) => {
            if let Record::Entry(Entry {
                kind: Kind::File(f),
                ..
            }) = &mut records[i % len]
            {
                f.hash[0] ^= 1;
            }
        }
        Mutation::Cut(i) => records.truncate(i % len),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Structurally mutated streams (entries dropped, repeated, swapped, renamed to
    /// hostile names, sizes and hashes that lie, streams cut short): the receiver never
    /// panics, never writes outside the job folder, publishes only a consistent version
    /// and keeps nothing of a refused one.
    #[test]
    fn mutated_streams_are_refused_or_received_consistently(
        ms in proptest::collection::vec(mutation(), 1..4)
    ) {
        let (header, mut records) = valid();
        for m in &ms {
            apply(&mut records, m);
        }
        let _ = receive_and_check(header, records);
    }

    /// Streams with bytes flipped, inserted or removed, decoded by the codec first (as
    /// the receiver reads them): the same properties.
    #[test]
    fn byte_mutated_streams_are_refused_or_received_consistently(
        at in 0usize..4096,
        byte in any::<u8>(),
        how in 0u8..3,
    ) {
        let (header, records) = valid();
        let mut bytes = Vec::new();
        let mut w = RecordWriter::new(&mut bytes);
        for r in &records {
            w.send(r).expect("encode");
        }
        let at = at % bytes.len();
        match how {
            0 => bytes[at] ^= byte.max(1),
            1 => bytes.insert(at, byte),
            _ => { bytes.remove(at); }
        }
        let mut reader = RecordReader::new(&bytes[..]);
        let mut decoded = Vec::new();
        while let Ok(Some(r)) = reader.next_record() {
            decoded.push(r);
        }
        let _ = receive_and_check(header, decoded);
    }
}
