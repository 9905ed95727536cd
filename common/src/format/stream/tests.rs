//! Unit tests of [`super`] (stream.rs).

use super::*;
use proptest::prelude::*;

fn attrs() -> Attrs {
    Attrs {
        mode: 0o4755,
        uid: 1000,
        gid: 100,
        mtime: Time {
            secs: -5,
            nanos: 999_999_999,
        },
        atime: Time {
            secs: 1_700_000_000,
            nanos: 1,
        },
        xattrs: vec![
            (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0]),
            (b"user.a".to_vec(), b"\0\xff".to_vec()),
        ],
    }
}

fn samples() -> Vec<Record> {
    let header = VersionHeader {
        n: 12,
        dir: "V12-20261124T214900Z".into(),
        created: "2026-11-24T21:49:00.123Z".into(),
        base: Some(11),
        root: attrs(),
    };
    vec![
        Record::Hello(Hello {
            format: FORMAT,
            job: "docs".into(),
            vault: "abc".into(),
            source: "/home/a/docs".into(),
            settings: "keep_versions = 3\n".into(),
        }),
        Record::Welcome(Welcome {
            format: FORMAT,
            vault: "def".into(),
            newest: Some((11, "V11-20261124T214800Z".into())),
            held: 2,
        }),
        Record::Welcome(Welcome {
            format: FORMAT,
            vault: "def".into(),
            newest: None,
            held: 0,
        }),
        Record::Held(vec![[7; 32], [8; 32]]),
        Record::Version(header.clone()),
        Record::Version(VersionHeader {
            base: None,
            ..header.clone()
        }),
        Record::Manifest(header),
        Record::Entry(Entry {
            name: b"same".to_vec(),
            kind: Kind::Same,
        }),
        Record::Entry(Entry {
            name: b"d\n\xff".to_vec(),
            kind: Kind::Dir(attrs()),
        }),
        Record::Entry(Entry {
            name: b"f".to_vec(),
            kind: Kind::File(FileEntry {
                attrs: attrs(),
                size: 1 << 40,
                hash: [9; 32],
                data: DataMode::Follows,
                group: Some(0),
            }),
        }),
        Record::Entry(Entry {
            name: b"g".to_vec(),
            kind: Kind::File(FileEntry {
                attrs: Attrs::default(),
                size: 0,
                hash: [0; 32],
                data: DataMode::Described,
                group: None,
            }),
        }),
        Record::Entry(Entry {
            name: b"l".to_vec(),
            kind: Kind::Symlink {
                attrs: attrs(),
                target: b"../../x".to_vec(),
            },
        }),
        Record::Entry(Entry {
            name: b"p".to_vec(),
            kind: Kind::Special {
                attrs: attrs(),
                kind: SpecialKind::CharDevice,
                rdev: 0x0103,
            },
        }),
        Record::Entry(Entry {
            name: b"h".to_vec(),
            kind: Kind::HardLink { group: 0 },
        }),
        Record::Data(b"abc".to_vec()),
        Record::Zeros(4096),
        Record::DirEnd,
        Record::VersionEnd(Counts {
            entries: 3,
            data_bytes: 5,
        }),
        Record::Ack {
            n: 12,
            dir: "V12-20261124T214900Z".into(),
        },
        Record::ManifestRequest,
        Record::ManifestEnd(Counts::default()),
        Record::Bye,
        Record::Refused("no".into()),
    ]
}

fn read_all(bytes: &[u8]) -> Result<Vec<Record>, StreamError> {
    let mut r = RecordReader::new(bytes);
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok(out)
}

#[test]
fn every_record_round_trips() {
    let mut bytes = Vec::new();
    let mut w = RecordWriter::new(&mut bytes);
    for r in samples() {
        w.send(&r).expect("send");
    }
    let written = w.written();
    assert_eq!(written, bytes.len() as u64);
    assert_eq!(read_all(&bytes).expect("decode"), samples());
}

#[test]
fn hostile_names_are_refused() {
    for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b", &[b'x'; 256]] {
        assert!(check_name(bad).is_err(), "{bad:?}");
        let payload = {
            let mut p = Vec::new();
            put_bytes(&mut p, bad);
            p.push(0);
            p
        };
        assert!(decode(b'E', &payload).is_err(), "{bad:?}");
    }
    for good in [&b"a"[..], b"...", b".hidden", b"\xff\n\t", &[b'x'; 255]] {
        assert!(check_name(good).is_ok(), "{good:?}");
    }
}

#[test]
fn limits_and_damage_are_errors() {
    // A frame announcing more than the limit is refused before anything is allocated.
    let mut huge = vec![b'D'];
    put_u64(&mut huge, u64::MAX / 2);
    assert!(matches!(read_all(&huge), Err(StreamError::TooLarge { .. })));
    // Cut short anywhere inside a record.
    let whole = frame(&samples()[0]);
    for cut in 1..whole.len() {
        let e = read_all(&whole[..cut]).expect_err("truncated");
        assert!(e.is_disconnect(), "{cut}: {e}");
    }
    // Left-over bytes, unknown tags, a wrong magic, a lying version directory.
    let mut extra = frame(&Record::Zeros(1));
    extra[1] += 1;
    extra.push(0);
    assert!(read_all(&extra).is_err());
    assert!(matches!(
        read_all(&[b'!', 0]),
        Err(StreamError::UnknownTag(b'!'))
    ));
    let mut bad_magic = frame(&samples()[0]);
    bad_magic[3] = b'R';
    assert!(read_all(&bad_magic).is_err());
    let mut p = Vec::new();
    put_u64(&mut p, 3);
    put_bytes(&mut p, b"V4-20261124T214900Z");
    assert!(decode(b'V', &p).is_err());
    let mut p = Vec::new();
    put_u64(&mut p, 3);
    put_bytes(&mut p, b"../../etc");
    assert!(decode(b'V', &p).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes never panic the decoder.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_all(&bytes);
    }

    /// A valid stream with bytes flipped, inserted or removed never panics, and what
    /// still decodes re-encodes to itself.
    #[test]
    fn mutated_streams_never_panic(
        pick in 0usize..1000,
        at in 0usize..4096,
        byte in any::<u8>(),
        how in 0u8..3,
    ) {
        let mut bytes = Vec::new();
        for r in samples() {
            bytes.extend(frame(&r));
        }
        let _ = pick;
        let at = at % bytes.len();
        match how {
            0 => bytes[at] ^= byte.max(1),
            1 => bytes.insert(at, byte),
            _ => { bytes.remove(at); }
        }
        if let Ok(records) = read_all(&bytes) {
            for r in records {
                prop_assert_eq!(decode(r.tag(), &frame(&r)[varint_len(&frame(&r)[1..]) + 1..]).ok(), Some(r));
            }
        }
    }
}

/// The length of the varint at the start of `b`.
fn varint_len(b: &[u8]) -> usize {
    b.iter()
        .position(|x| x & 0x80 == 0)
        .map_or(b.len(), |p| p + 1)
}
