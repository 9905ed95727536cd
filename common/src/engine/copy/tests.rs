//! Tests of the copy engine.

use super::*;
use std::io::{Seek, SeekFrom, Write};

#[test]
fn sparse_copy_keeps_holes_and_zero_blocks_become_holes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    {
        let mut f = File::create(&src).expect("create");
        f.write_all(b"head").expect("write");
        f.seek(SeekFrom::Start(8 << 20)).expect("seek");
        f.write_all(&vec![0u8; 1 << 20]).expect("zeros");
        f.write_all(b"tail").expect("write");
        f.set_len(16 << 20).expect("len");
    }
    let dst = dir.path().join("dst");
    let c = copy_file_hashed(&src, &dst, true, Fidelity::exact(privileged())).expect("copy");
    assert_eq!(fs::read(&src).expect("src"), fs::read(&dst).expect("dst"));
    // The hash is of the logical content, holes and zero blocks as zeros.
    let rec = c.record.expect("hashed");
    assert_eq!(rec.size, 16 << 20);
    assert_eq!(
        rec.hash,
        *blake3::hash(&fs::read(&dst).expect("dst")).as_bytes()
    );
    let m = fs::metadata(&dst).expect("meta");
    assert_eq!(m.len(), 16 << 20);
    assert!(
        m.blocks() * 512 <= 64 * 1024,
        "dst not sparse: {} blocks",
        m.blocks()
    );
    let s = fs::metadata(&src).expect("meta");
    assert_eq!((s.mtime(), s.mtime_nsec()), (m.mtime(), m.mtime_nsec()));
}

#[test]
fn a_file_that_keeps_changing_is_retried_then_taken_as_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("growing");
    fs::write(&src, vec![1u8; 1 << 20]).expect("write");
    let append = |src: &Path| {
        let mut f = OpenOptions::new().append(true).open(src).expect("open");
        f.write_all(&[2u8; 4096]).expect("append");
    };
    // Changed during every attempt: taken as is after the retries, reported unstable.
    let mut calls = 0;
    let c = copy_file_observed(&src, &dir.path().join("always"), &mut |_| {
        calls += 1;
        append(&src);
    })
    .expect("copy");
    assert!(c.unstable);
    assert_eq!(calls, RETRIES + 1);
    // What was stored is what the record says, though the source moved on.
    let stored = fs::read(dir.path().join("always")).expect("stored");
    assert_eq!(
        c.record.expect("hashed").hash,
        *blake3::hash(&stored).as_bytes()
    );
    // Changed during the first attempt only: the retry gives an exact, stable copy.
    let c = copy_file_observed(&src, &dir.path().join("once"), &mut |attempt| {
        if attempt == 0 {
            append(&src);
        }
    })
    .expect("copy");
    assert!(!c.unstable);
    assert_eq!(
        fs::read(&src).expect("src"),
        fs::read(dir.path().join("once")).expect("once")
    );
}

#[test]
fn a_source_file_replaced_after_its_lstat_is_changed_during_copy_and_a_link_is_never_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f");
    fs::write(&src, b"seen").expect("write");
    let seen = fs::symlink_metadata(&src).expect("lstat");
    // Replaced by another file (write new, rename over) between the lstat and the copy.
    fs::write(dir.path().join("new"), b"replaced").expect("write");
    fs::rename(dir.path().join("new"), &src).expect("rename");
    let tree = crate::beneath::Tree::open(dir.path()).expect("tree");
    let at = |name: &str| tree.at(Path::new(name)).expect("at");
    let c = copy_source_file(
        &at("f"),
        &at("a"),
        true,
        &seen,
        Fidelity::exact(privileged()),
    )
    .expect("copy");
    assert!(
        c.unstable,
        "a different inode than the lstat's counts as changed"
    );
    assert_ne!(c.source, (seen.dev(), seen.ino()));
    assert_eq!(fs::read(dir.path().join("a")).expect("copy"), b"replaced");
    // Replaced by a symlink to a file elsewhere: never followed, not gone either.
    let secret = dir.path().join("secret");
    fs::write(&secret, b"secret").expect("write");
    let seen = fs::symlink_metadata(&src).expect("lstat");
    fs::remove_file(&src).expect("rm");
    std::os::unix::fs::symlink(&secret, &src).expect("symlink");
    assert!(matches!(
        copy_source_file(
            &at("f"),
            &at("b"),
            true,
            &seen,
            Fidelity::exact(privileged())
        ),
        Err(CopyError::TypeChanged)
    ));
    assert!(!dir.path().join("b").exists(), "nothing made for it");
}

#[test]
fn never_overwrites_and_never_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    fs::write(&a, b"x").expect("write");
    let b = dir.path().join("b");
    fs::write(&b, b"y").expect("write");
    assert!(copy_file(&a, &b).is_err());
    let l = dir.path().join("l");
    std::os::unix::fs::symlink("a", &l).expect("symlink");
    assert!(matches!(
        copy_file(&l, &dir.path().join("c")),
        Err(CopyError::TypeChanged)
    ));
    copy_symlink(&l, &dir.path().join("l2"), Fidelity::exact(privileged())).expect("symlink copy");
    assert_eq!(
        fs::read_link(dir.path().join("l2")).expect("readlink"),
        Path::new("a")
    );
}

#[test]
fn make_dir_gives_a_new_directory_mode_0700() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("new");
    make_dir(&d).expect("make_dir");
    let m = fs::symlink_metadata(&d).expect("lstat");
    assert!(m.is_dir());
    assert_eq!(m.permissions().mode() & 0o7777, 0o700);
    assert_eq!(
        make_dir(&d).map_err(|e| e.kind()),
        Err(io::ErrorKind::AlreadyExists)
    );
}

/// A default ACL on the folder replaces the umask, and one a hostile source gave its
/// folder (copied into the version) can mask the owner's bits: the new directory is still
/// 0700, fillable by a writer that is not root.
#[test]
fn make_dir_gives_0700_under_a_default_acl_that_masks_the_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("setfacl")
        .args(["-d", "-m", "u::r-x,g::---,o::---"])
        .arg(dir.path())
        .output()
        .expect("setfacl (package acl)");
    assert!(out.status.success(), "setfacl: {out:?}");
    let d = dir.path().join("new");
    make_dir(&d).expect("make_dir");
    assert_eq!(
        fs::symlink_metadata(&d)
            .expect("lstat")
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
}
