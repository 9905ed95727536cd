//! The copy engine on real filesystems: reflinked (shared extents) on btrfs and XFS when the
//! vault is on the source's filesystem, a correct sparse copy on ext4 and tmpfs.
//! Needs root for loop devices; skips with a printed reason otherwise.

use std::fs;
use std::io::Write;
use std::process::Command;

use reverb_tests::model::CaptureOpts;
use reverb_tests::{Fixture, LoopMount, require_programs, require_root, sh};

fn shared_extents(path: &std::path::Path) -> bool {
    let o = Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .expect("filefrag");
    String::from_utf8_lossy(&o.stdout).contains("shared")
}

fn run_on(fstype: &str, size_mib: u64, expect_reflink: bool) {
    require_root!(format!("loop devices: reflink on {fstype}"));
    require_programs!(["filefrag"], format!("reflink on {fstype}"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = match LoopMount::new(tmp.path(), fstype, size_mib, &[]) {
        Ok(m) => m,
        Err(why) => reverb_tests::skip!("{why}: reflink on {fstype}"),
    };
    let inner = tempfile::tempdir_in(&m.mountpoint).expect("tempdir on the loop fs");
    let f = Fixture::in_dir(inner);
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8 + 1;
    }
    fs::File::create(f.src.join("data"))
        .expect("create")
        .write_all(&data)
        .expect("write");
    fs::File::create(f.src.join("sparse"))
        .expect("create")
        .set_len(64 << 20)
        .expect("len");
    sh(&format!("sync -f {}", f.src.display()));
    let v1 = f.first();
    let copied = f.job_dir().join(&v1).join("data");
    assert_eq!(fs::read(&copied).expect("read"), data);
    assert_eq!(
        shared_extents(&copied),
        expect_reflink,
        "{fstype}: shared extents expected {expect_reflink}"
    );
    let sparse = fs::metadata(f.job_dir().join(&v1).join("sparse")).expect("meta");
    use std::os::unix::fs::MetadataExt;
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "{fstype}: sparse file lost its holes"
    );
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    f.assert_latest_is_source(opts, fstype);
    drop(f);
    drop(m);
}

#[test]
fn btrfs_copies_are_reflinks() {
    run_on("btrfs", 256, true);
}

#[test]
fn xfs_copies_are_reflinks() {
    run_on("xfs", 320, true);
}

#[test]
fn ext4_falls_back_to_a_sparse_copy() {
    run_on("ext4", 128, false);
}

#[test]
fn tmpfs_falls_back_to_a_sparse_copy() {
    require_root!("mount a tmpfs: tmpfs fallback");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    sh(&format!(
        "mount -t tmpfs -o size=64m tmpfs {}",
        mnt.display()
    ));
    let result = std::panic::catch_unwind(|| {
        let f = Fixture::in_dir(tempfile::tempdir_in(&mnt).expect("tempdir"));
        fs::write(f.src.join("a"), b"tmpfs data").expect("write");
        fs::File::create(f.src.join("sparse"))
            .expect("create")
            .set_len(16 << 20)
            .expect("len");
        f.first();
        let opts = CaptureOpts {
            owners: true,
            dir_mtimes: true,
        };
        f.assert_latest_is_source(opts, "tmpfs");
    });
    sh(&format!("umount {}", mnt.display()));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
