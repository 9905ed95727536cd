//! Unit tests of [`super`] (identity.rs).

use super::*;

const FIXTURE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 0:30 / / rw,relatime - overlay overlay rw,lowerdir=/l
40 27 7:0 / /mnt/my\\040disk rw,relatime shared:1 master:2 - ext4 /dev/loop0 rw
41 40 0:35 / /mnt/my\\040disk/tab\\011x rw - tmpfs tmpfs rw
42 27 7:1 / /mnt/my\\040disk rw,relatime - xfs /dev/loop1 rw
43 27 0:36 /sub /srv/back\\134slash rw - btrfs /dev/loop2 rw,subvol=/sub
bad line
";

#[test]
fn parses_mountinfo_with_escapes() {
    let e = parse_mountinfo(FIXTURE);
    assert_eq!(e.len(), 6);
    assert_eq!(e[2].mountpoint, OsString::from("/mnt/my disk"));
    assert_eq!(e[2].devno, (7, 0));
    assert_eq!(e[2].fstype, "ext4");
    assert_eq!(e[2].source, OsString::from("/dev/loop0"));
    assert_eq!(e[3].mountpoint, OsString::from("/mnt/my disk/tab\tx"));
    assert_eq!(e[5].mountpoint, OsString::from("/srv/back\\slash"));
    assert_eq!(e[5].root, OsString::from("/sub"));
    assert_eq!(e[1].mountpoint, OsString::from("/"));
    assert_eq!(unescape_mountinfo("a\\012b\\"), OsString::from("a\nb\\"));
    assert_eq!(unescape_mountinfo("\\777"), OsString::from("\\777"));
}

/// The kernel's `mangle()` for mountinfo path fields: space, tab, LF, `\` as `\ooo`.
fn kernel_escape(raw: &[u8]) -> String {
    let mut s = String::new();
    for &b in raw {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => s.push_str(&format!("\\{b:03o}")),
            _ => s.push(char::from(b)),
        }
    }
    s
}

proptest::proptest! {
    #[test]
    fn mountinfo_unescape_inverts_kernel_escape(raw in proptest::collection::vec(0x01u8..0x7f, 0..40)) {
        proptest::prop_assert_eq!(unescape_mountinfo(kernel_escape(&raw)), OsString::from_vec(raw));
    }
}

#[test]
fn parses_non_utf8_mountpoints() {
    let line = b"50 27 7:3 / /mnt/caf\xe9 rw - ext4 /dev/loop3 rw\n";
    let e = parse_mountinfo(line);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].mountpoint.as_bytes(), b"/mnt/caf\xe9");
}

#[test]
fn finds_longest_prefix_last_wins() {
    let e = parse_mountinfo(FIXTURE);
    let f = |p: &str, dev| find_mount(&e, Path::new(p), dev).map(|m| m.mount_id);
    assert_eq!(f("/mnt/my disk/a", None), Some(42), "stacked: last wins");
    assert_eq!(f("/mnt/my disk", None), Some(42));
    assert_eq!(f("/mnt/my disk/tab\tx/y", None), Some(41));
    assert_eq!(
        f("/mnt/my diskette", None),
        Some(27),
        "prefix must end at /"
    );
    assert_eq!(f("/proc/1", None), Some(22));
    assert_eq!(f("/srv/back\\slash", None), Some(43));
    // The path's st_dev says it is on the hidden ext4, not the xfs over it.
    assert_eq!(f("/mnt/my disk/a", Some((7, 0))), Some(40));
    // No candidate has the path's st_dev (btrfs subvolume): plain prefix rule.
    assert_eq!(f("/srv/back\\slash/x", Some((0, 99))), Some(43));
}

fn id(uuid: &str, partuuid: &str, label: &str, partlabel: &str, dev: &str) -> FsIdentity {
    let o = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    FsIdentity {
        uuid: o(uuid),
        partuuid: o(partuuid),
        label: o(label),
        partlabel: o(partlabel),
        device: o(dev),
        mountpoint: Some("/mnt".into()),
        fstype: Some("ext4".into()),
    }
}

#[test]
fn matching_table() {
    use MatchedBy::*;
    let rec = id("u1", "p1", "L", "PL", "/dev/sdb1");
    let cases: &[(&str, FsIdentity, FsIdentity, Option<MatchedBy>)] = &[
        ("same", rec.clone(), rec.clone(), Some(Uuid)),
        (
            "reformat keeps label",
            rec.clone(),
            id("u2", "", "L", "", "/dev/sdc1"),
            Some(Label),
        ),
        (
            "relabel keeps uuid",
            rec.clone(),
            id("u1", "p1", "M", "PL", "/dev/sdc1"),
            Some(Uuid),
        ),
        (
            "new fs in same partition",
            rec.clone(),
            id("u2", "p1", "", "", "/dev/sdb1"),
            Some(Partuuid),
        ),
        (
            "partlabel only",
            rec.clone(),
            id("u2", "p2", "X", "PL", "/dev/sdc1"),
            Some(Partlabel),
        ),
        (
            "tmpfs device only",
            id("", "", "", "", "tmpfs"),
            id("", "", "", "", "tmpfs"),
            Some(Device),
        ),
        (
            "device path after everything differs",
            rec.clone(),
            id("u2", "p2", "X", "Y", "/dev/sdb1"),
            Some(Device),
        ),
        (
            "nothing in common",
            rec.clone(),
            id("u2", "p2", "X", "Y", "/dev/sdc1"),
            None,
        ),
        (
            "unmounted: parent fs",
            rec.clone(),
            id("root", "", "", "", "/dev/nvme0n1p2"),
            None,
        ),
        (
            "empty strings are unknown",
            id("", "", "", "", ""),
            FsIdentity {
                device: Some(String::new()),
                ..FsIdentity::default()
            },
            None,
        ),
        (
            "unknown on one side is skipped",
            id("", "", "L", "", "/dev/a"),
            id("u9", "", "L", "", "/dev/b"),
            Some(Label),
        ),
    ];
    for (name, r, c, want) in cases {
        assert_eq!(matches(r, c), *want, "{name}");
    }
}

#[test]
fn display_and_helpers() {
    assert_eq!(MatchedBy::Partlabel.to_string(), "partlabel");
    assert_eq!(MatchedBy::Device.to_string(), "device");
    assert!(only_device(&id("", "", "", "", "tmpfs")));
    assert!(!only_device(&id("", "", "L", "", "/dev/a")));
    assert_eq!(
        describe(&id("u1", "", "L", "", "/dev/sdb1")),
        "UUID=u1, LABEL=L, device /dev/sdb1 (ext4) at /mnt"
    );
    assert_eq!(describe(&FsIdentity::default()), "nothing");
    assert_eq!(
        format_uuid(&[
            0xAB, 0xCD, 0xEF, 0x01, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
        ]),
        "abcdef01-0203-0405-0607-08090a0b0c0d"
    );
    assert_eq!(unescape_udev("My\\x20Disk"), "My Disk");
    let mut i = FsIdentity::default();
    apply_blkid_export(
        "DEVNAME=/dev/sdb1\nUUID=ABCD-1234\nLABEL=My\\ Disk\nTYPE=vfat\nPARTUUID=0AB-01\n",
        &mut i,
    );
    assert_eq!(
        i.uuid.as_deref(),
        Some("ABCD-1234"),
        "kept as blkid prints it"
    );
    assert_eq!(i.label.as_deref(), Some("My Disk"));
    assert_eq!(i.partuuid.as_deref(), Some("0AB-01"));
}

#[test]
fn missing_path_is_named() {
    let err = FsIdentity::of(Path::new("/nonexistent/reverb\tx")).expect_err("must fail");
    assert!(err.to_string().contains("/nonexistent/reverb\\tx"), "{err}");
    let err = verify(
        "vault",
        &id("u", "", "", "", ""),
        Path::new("/nonexistent/v"),
    )
    .expect_err("must fail");
    assert_eq!(err.exit_code(), 75);
    assert!(
        err.to_string().starts_with("vault /nonexistent/v is not"),
        "{err}"
    );
}

#[test]
fn root_has_an_identity() {
    let i = FsIdentity::of(Path::new("/")).expect("identity of /");
    assert_eq!(i.mountpoint.as_deref(), Some("/"));
    assert!(i.device.is_some() && i.fstype.is_some(), "{i:?}");
    assert_eq!(
        verify("source", &i, Path::new("/")).ok(),
        matches(&i, &i),
        "self-match"
    );
}
