//! Unit tests of [`super`] (mountwatch.rs).

use super::*;

#[test]
fn renders_compact_identity() {
    let id = FsIdentity {
        uuid: Some("u-1".into()),
        label: Some("a,b=c%".into()),
        device: Some("/dev/loop0".into()),
        fstype: Some("ext4".into()),
        mountpoint: Some("/mnt".into()),
        ..FsIdentity::default()
    };
    assert_eq!(
        render_identity(&id),
        "uuid=u-1,label=a%2Cb%3Dc%25,device=/dev/loop0,fstype=ext4"
    );
    assert_eq!(render_identity(&FsIdentity::default()), "");
}

fn value() -> impl proptest::strategy::Strategy<Value = Option<String>> {
    proptest::option::of("(.|[%,=\t\\\\])+")
}

fn os_path() -> impl proptest::strategy::Strategy<Value = OsString> {
    use std::os::unix::ffi::OsStringExt;
    proptest::collection::vec(proptest::arbitrary::any::<u8>(), 1..24).prop_map(OsString::from_vec)
}

fn state() -> impl proptest::strategy::Strategy<Value = State> {
    proptest::sample::select(vec![
        State::Present,
        State::Lost,
        State::Restored,
        State::Mounted,
        State::Unmounted,
    ])
}

fn matched_by() -> impl proptest::strategy::Strategy<Value = Option<MatchedBy>> {
    use MatchedBy::*;
    proptest::option::of(proptest::sample::select(vec![
        Uuid, Partuuid, Label, Partlabel, Device,
    ]))
}

use proptest::strategy::Strategy;

proptest::proptest! {
    #[test]
    fn compact_identity_round_trips(
        uuid in value(), partuuid in value(), label in value(),
        partlabel in value(), device in value(), fstype in value(),
    ) {
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let id = FsIdentity {
            uuid: non_empty(uuid), partuuid: non_empty(partuuid), label: non_empty(label),
            partlabel: non_empty(partlabel), device: non_empty(device),
            fstype: non_empty(fstype), mountpoint: None,
        };
        let text = render_identity(&id);
        proptest::prop_assert_eq!(parse_identity(&text).expect("parses"), id);
        // And through the TSV field escaping.
        let field = tsv::escape(&text);
        let back = tsv::unescape_bytes(&field).expect("unescape");
        proptest::prop_assert_eq!(String::from_utf8(back).expect("utf-8"), text);
    }

    #[test]
    fn record_round_trips(
        millis in 0u64..4_000_000_000_000,
        path in os_path(),
        state in state(),
        matched_by in matched_by(),
        label in value(),
        device in value(),
        mountpoint in proptest::option::of(os_path()),
    ) {
        let identity = (label.is_some() || device.is_some()).then(|| FsIdentity {
            label: label.filter(|s| !s.is_empty()),
            device: device.filter(|s| !s.is_empty()),
            mountpoint: mountpoint.as_ref().map(|m| m.to_string_lossy().into_owned()),
            ..FsIdentity::default()
        }).filter(|id| id.label.is_some() || id.device.is_some());
        let r = Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(millis),
            path: PathBuf::from(path),
            state,
            matched_by,
            identity,
            mountpoint,
        };
        let line = r.tsv_line();
        proptest::prop_assert!(!line.contains('\n'));
        proptest::prop_assert_eq!(Record::parse(&line).expect("parses"), r);
    }

    #[test]
    fn record_parse_never_panics(s in "(.|\t|%){0,80}") {
        let _ = Record::parse(&s);
    }
}

#[test]
fn parse_rejects_malformed_records() {
    let good = "1970-01-01T00:00:00.000Z\t/x\tlost\t\t\t";
    assert!(Record::parse(good).is_ok());
    for (bad, why) in [
        ("1970-01-01T00:00:00.000Z\t/x\tlost\t\t", "6 TAB-separated"),
        ("yesterday\t/x\tlost\t\t\t", "bad time"),
        ("1970-01-01T00:00:00.000Z\t/x\tgone\t\t\t", "unknown state"),
        (
            "1970-01-01T00:00:00.000Z\t/x\tlost\tcolour\t\t",
            "unknown matched_by",
        ),
        (
            "1970-01-01T00:00:00.000Z\t/x\tlost\t\tcolour=red\t",
            "unknown identity key",
        ),
        (
            "1970-01-01T00:00:00.000Z\t/x\tlost\t\tuuid=a,uuid=b\t",
            "twice",
        ),
        (
            "1970-01-01T00:00:00.000Z\t/x\tlost\t\tuuid=%41\t",
            "bad value",
        ),
    ] {
        let e = Record::parse(bad).expect_err(bad).to_string();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    assert!(Record::parse(HEADER).is_err(), "the header is not a record");
}

#[test]
fn formats_lines() {
    let r = Record {
        time: SystemTime::UNIX_EPOCH,
        path: PathBuf::from("/a\tb"),
        state: State::Restored,
        matched_by: Some(MatchedBy::Label),
        identity: Some(FsIdentity {
            label: Some("L\t".into()),
            ..FsIdentity::default()
        }),
        mountpoint: Some(OsString::from("/a\tb")),
    };
    assert_eq!(
        r.tsv_line(),
        "1970-01-01T00:00:00.000Z\t/a\\tb\trestored\tlabel\tlabel=L\\t\t/a\\tb"
    );
    assert_eq!(tsv::split(&r.tsv_line()).len(), tsv::split(HEADER).len());
    let v: serde_json::Value = serde_json::from_str(&r.json_line()).expect("json");
    assert_eq!(v["type"], "mount");
    assert_eq!(v["state"], "restored");
    assert_eq!(v["matched_by"], "label");
    assert_eq!(v["identity"]["label"], "L\t");
    let lost = lost_missing(SystemTime::UNIX_EPOCH, Path::new("/x"));
    assert_eq!(lost.tsv_line(), "1970-01-01T00:00:00.000Z\t/x\tlost\t\t\t");
}

#[test]
fn wait_times_out_and_stops() {
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    // Other tests may mount concurrently; either answer is fine, but it must return.
    let _ = wait_for_mount_change(Some(Duration::from_millis(50)), &stop).expect("wait");
    assert!(t.elapsed() < Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    assert!(!wait_for_mount_change(None, &stop).expect("wait"));
}

#[test]
fn start_reports_present_and_lost() {
    let (mut w, lines) = PathWatch::start(&[PathBuf::from("/"), PathBuf::from("/nonexistent/x")]);
    assert_eq!(lines[0].state, State::Present);
    assert!(lines[0].matched_by.is_some());
    assert_eq!(lines[1].state, State::Lost);
    assert_eq!(lines[1].identity, None);
    assert!(w.recheck().is_empty(), "nothing changed");
}
