//! The vault's filesystem (docs/filesystems.md): the capability probe refuses a vault that
//! cannot hold symlinks or modes (vfat, exFAT, mounted through their FUSE drivers) before
//! anything is written, and adapts to sshfs, a network filesystem where setting a link's
//! owner or times changes the file it points to and mtimes are kept to the second: no file
//! outside the vault is ever touched, unchanged files are not recopied at every version,
//! and a restore is the source (but for link owners and times, and sub-second mtimes,
//! which sshfs cannot keep). The sshd and sshfs fixture is `reverb_tests::sshd`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use reverb_tests::model::{self, CaptureOpts, Node};
use reverb_tests::sshd::{Sshd, Sshfs};
use reverb_tests::{Fixture, FuseImage, cmd, require_root, skip, stderr, stdout};

/// Everything below `dir`, as relative paths (empty: nothing there).
fn everything_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in fs::read_dir(&d).expect("list").flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).expect("below").to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A source with what a vault must hold: a symlink, a file with setuid, a directory.
fn small_source(src: &Path) {
    fs::create_dir(src.join("d")).expect("mkdir");
    fs::write(src.join("d/file"), b"data").expect("write");
    fs::write(src.join("tool"), b"#!/bin/sh\n").expect("write");
    fs::set_permissions(src.join("tool"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    symlink("d/file", src.join("link")).expect("symlink");
}

/// `reverb-snap --init` into a vault on `fstype` (a FUSE-mounted image) is refused with
/// exit 2 naming the filesystem and what it lacks, and writes nothing there.
fn refused_on(fstype: &str, named: &str) {
    require_root!("FUSE mounts of filesystem images");
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = match FuseImage::new(tmp.path(), fstype, 64) {
        Ok(m) => m,
        Err(why) => skip!("{why}: the {fstype} vault is not tested"),
    };
    let f = Fixture::new();
    small_source(&f.src);
    // A vault folder still to be made, and the mountpoint itself.
    for vault in [image.mountpoint.join("vault"), image.mountpoint.clone()] {
        let out = cmd("reverb-snap")
            .arg("--vault")
            .arg(&vault)
            .args(["--job", "docs", "--init", "--source"])
            .arg(&f.src)
            .assert_exit(2);
        let said = stderr(&out);
        assert!(
            said.contains(named) && said.contains("symbolic links"),
            "the refusal names the filesystem ({named}) and the missing capability: {said}"
        );
        assert_eq!(
            everything_below(&image.mountpoint),
            Vec::<PathBuf>::new(),
            "nothing written on {fstype} (no marker, job.toml, index, journal, probe folder)"
        );
    }
    // The supervisor refuses it the same way: `run --init` never writes there either.
    let log = tmp.path().join("supervisor.log");
    let mut run = cmd("reverberator");
    run.args(["run", "--init", "--source"])
        .arg(&f.src)
        .arg("--vault")
        .arg(image.mountpoint.join("vault"));
    let mut child = run
        .command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn reverberator run");
    reverb_tests::wait_until(
        std::time::Duration::from_secs(30),
        "the supervisor to refuse the vault",
        || fs::read_to_string(&log).is_ok_and(|l| l.contains("symbolic links")),
    );
    let _ = child.kill();
    let _ = child.wait();
    let said = fs::read_to_string(&log).expect("log");
    assert!(said.contains(named), "{said}");
    assert_eq!(
        everything_below(&image.mountpoint),
        Vec::<PathBuf>::new(),
        "nothing written on {fstype} by the supervisor"
    );
}

#[test]
fn a_vault_on_vfat_is_refused_before_anything_is_written() {
    // fusefat's mount table type; a kernel mount would say `vfat`.
    refused_on("vfat", "fusefat");
}

#[test]
fn a_vault_on_exfat_is_refused_before_anything_is_written() {
    // exfat-fuse mounts as `fuseblk`; blkid names what is on the device.
    refused_on("exfat", "exfat");
}

/// `stat` of a file as an outside observer sees it: owner, group, mode, mtime (ns), size.
fn stat_of(p: &Path) -> (u32, u32, u32, i64, i64, u64) {
    let m = fs::symlink_metadata(p).expect("stat");
    (
        m.uid(),
        m.gid(),
        m.mode(),
        m.mtime(),
        m.mtime_nsec(),
        m.size(),
    )
}

/// A tree as the vault on sshfs can keep it: link owners and times left out, mtimes to
/// the second, no xattrs (sshfs has none).
fn as_sshfs_keeps(tree: BTreeMap<PathBuf, Node>) -> BTreeMap<PathBuf, Node> {
    tree.into_iter()
        .map(|(p, mut n)| {
            if n.kind == 'l' {
                n.owner = None;
                n.mtime = (0, 0);
            }
            n.mtime.1 = 0;
            n.xattrs.clear();
            (p, n)
        })
        .collect()
}

/// Sets `path`'s mtime (not following a link) to `secs` seconds and `ns` nanoseconds.
fn set_mtime(path: &Path, secs: i64, ns: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, ns);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

#[test]
fn a_vault_on_sshfs_never_touches_a_file_outside_it_and_keeps_unchanged_files_linked() {
    require_root!("sshd, and a root-owned file outside the vault");
    let sshd = match Sshd::start() {
        Ok(s) => s,
        Err(why) => skip!("{why}: the sshfs vault is not tested"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote = tmp.path().join("remote");
    fs::create_dir(&remote).expect("mkdir");
    let mount = match Sshfs::mount(&sshd, &remote, &tmp.path().join("mnt")) {
        Ok(m) => m,
        Err(why) => skip!("{why}: the sshfs vault is not tested"),
    };
    // On the vault's host: a root-owned file with a known owner, mode and mtime.
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    let secret = outside.join("shadow");
    fs::write(&secret, b"root:$y$secret\n").expect("write");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::chown(&secret, Some(0), Some(0)).expect("chown");
    set_mtime(&secret, 1_600_000_000, 0);
    let secret_before = stat_of(&secret);

    let mut f = Fixture::new();
    f.vault = mount.mountpoint.join("vault");
    small_source(&f.src);
    // An absolute link to the file outside, owned by a user, with its own mtime; a
    // relative link inside the source (in the vault, it points at the vault's own copy);
    // a dangling link.
    symlink(&secret, f.src.join("abs")).expect("symlink");
    std::os::unix::fs::lchown(f.src.join("abs"), Some(1000), Some(1000)).expect("lchown");
    set_mtime(&f.src.join("abs"), 1_700_000_000, 5);
    symlink("/nonexistent/x", f.src.join("dangling")).expect("symlink");
    std::os::unix::fs::lchown(f.src.join("link"), Some(1000), Some(1000)).expect("lchown");
    set_mtime(&f.src.join("link"), 1_700_000_100, 7);
    // Files last changed well before the first version, and one just before it.
    for p in ["d/file", "tool", "d"] {
        set_mtime(&f.src.join(p), 1_650_000_000, 123_456_789);
    }
    fs::write(f.src.join("fresh"), b"fresh").expect("write");

    let v1 = f.first();
    assert_eq!(
        stat_of(&secret),
        secret_before,
        "the file an absolute source link names, outside the vault, is untouched"
    );
    assert_eq!(fs::read(&secret).expect("read"), b"root:$y$secret\n");
    let job_remote = remote.join("vault").join(&f.job);
    let copy = job_remote.join(&v1).join("d/file");
    assert_eq!(
        fs::metadata(&copy).expect("copy").mtime(),
        1_650_000_000,
        "the vault's copy of a relative link's target keeps the source's mtime, not the link's"
    );
    for (link, text) in [
        ("abs", secret.clone()),
        ("dangling", "/nonexistent/x".into()),
    ] {
        assert_eq!(
            fs::read_link(job_remote.join(&v1).join(link)).expect("a link in V1"),
            text,
            "{link} is kept with its exact text"
        );
    }
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    let capability: Vec<&str> = journal
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("vault-capability"))
        .collect();
    let said = capability.join("\n");
    for what in [
        "link owners and times are not kept",
        "kept to 1 s",
        "ACLs are not kept",
    ] {
        assert!(said.contains(what), "journal says {what:?}: {journal}");
    }
    assert!(
        !journal.contains("\tskipped\t"),
        "nothing skipped: {journal}"
    );

    // Unchanged files are not copied again: no version at all, time and again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for _ in 0..2 {
        assert_eq!(f.rescan(), "", "nothing changed: no version");
    }
    // One file changes: the next version holds it, and a vault link for the rest.
    fs::write(f.src.join("tool"), b"#!/bin/sh\n#2\n").expect("write");
    fs::set_permissions(f.src.join("tool"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    let v2 = f.rescan();
    assert!(!v2.is_empty(), "the change is a version");
    let held = |rel: &str| {
        fs::symlink_metadata(job_remote.join(&v2).join(rel))
            .expect("in V2")
            .file_type()
    };
    assert!(held("tool").is_file(), "the changed file is copied");
    assert!(
        held("d").is_symlink(),
        "the unchanged folder is one vault link"
    );
    assert!(
        held("fresh").is_symlink(),
        "the unchanged fresh file is one vault link"
    );
    assert_eq!(stat_of(&secret), secret_before, "still untouched");
    assert_eq!(
        fs::metadata(job_remote.join(&v1).join("d/file"))
            .expect("copy")
            .mtime(),
        1_650_000_000
    );

    // A restore is the source (`cp -a` taken now), but for what sshfs cannot keep.
    let oracle = tmp.path().join("oracle");
    reverb_tests::sh(&format!(
        "cp -a '{}' '{}'",
        f.src.display(),
        oracle.display()
    ));
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    let restored = f.restore(&v2);
    model::assert_same(
        &as_sshfs_keeps(model::capture(&oracle, opts)),
        &as_sshfs_keeps(model::capture(&restored, opts)),
        "restore from the sshfs vault",
    );
    f.check_clean();

    // `status` says how the tools adapt.
    let out = cmd("reverberator")
        .args(["status", "--vault"])
        .arg(&f.vault)
        .output();
    let shown = stdout(&out);
    assert!(
        shown.contains("vault on fuse.sshfs") && shown.contains("link owners and times"),
        "{shown}"
    );
    drop(mount);
}
