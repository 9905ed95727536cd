//! Shared link inodes (docs/format.md "Shared link inodes"): a version keeps the vault links
//! (and the unchanged source links) of the version before it as hard links of them, and a
//! retirement makes each new text once and hard-links it into every version that needs it.
//! Checked against `stat` (the inode and link count of each name) and `readlink`, and every
//! retained version against a capture of the source taken when it was versioned; with hard
//! links refused, the same history holds no shared inode and the same versions.

use std::fs;
use std::path::Path;

use reverb_tests::model::{assert_same, capture};
use reverb_tests::ops::{Tree, index_dirs, opts, unlinked};
use reverb_tests::{Fixture, TestCommand, stdout};

/// `stat -c '%i %h'` of `path` (not following it): its inode and link count.
fn inode_and_links(path: &Path) -> (u64, u64) {
    let out = TestCommand::program("stat")
        .args(["-c", "%i %h"])
        .arg(path)
        .assert_success();
    let text = stdout(&out);
    let mut it = text
        .split_whitespace()
        .map(|n| n.parse::<u64>().expect("number"));
    (it.next().expect("inode"), it.next().expect("links"))
}

fn readlink(path: &Path) -> String {
    stdout(&TestCommand::program("readlink").arg(path).assert_success())
        .trim()
        .to_owned()
}

/// Symlinks in the job's versions with more than one name (`find -type l -links +1`).
fn shared_symlinks(f: &Fixture) -> Vec<String> {
    let out = TestCommand::program("find")
        .arg(f.job_dir())
        .args([
            "-path", "*/.tmp", "-prune", "-o", "-type", "l", "-links", "+1", "-print",
        ])
        .assert_success();
    stdout(&out).lines().map(str::to_owned).collect()
}

fn snap(f: &Fixture, refuse: bool, first: bool) -> String {
    let mut c: TestCommand = if first {
        let mut c = f.snap(&["--init"]);
        c.arg("--source").arg(&f.src);
        c
    } else {
        f.snap(&[])
    };
    if refuse {
        c.env("REVERB_FAULT_NO_HARD_LINKS", "1");
    }
    c.stdout().trim().to_owned()
}

/// V1: `a/b/f1..f5` and `c/x`; then f1, f2, f1 again change, one version each. V3 and V4
/// both keep f3..f5 linked into V1.
fn history(f: &Fixture, refuse: bool) -> Vec<(String, Tree)> {
    fs::create_dir_all(f.src.join("a/b")).expect("mkdir");
    fs::create_dir_all(f.src.join("c")).expect("mkdir");
    for i in 1..=5 {
        fs::write(f.src.join(format!("a/b/f{i}")), format!("f{i} v1")).expect("write");
    }
    fs::write(f.src.join("c/x"), b"x").expect("write");
    let mut out = vec![(snap(f, refuse, true), capture(&f.src, opts()))];
    for (file, text) in [("f1", "f1 v2"), ("f2", "f2 v2"), ("f1", "f1 v3")] {
        fs::write(f.src.join("a/b").join(file), text).expect("write");
        let v = snap(f, refuse, false);
        assert!(!v.is_empty(), "a change to {file} makes a version");
        out.push((v, capture(&f.src, opts())));
    }
    out
}

fn verify(f: &Fixture, history: &[(String, Tree)], what: &str) {
    let dirs = index_dirs(f);
    for (v, expected) in history.iter().filter(|(v, _)| dirs.contains(v)) {
        let got = capture(&f.restore(v), opts());
        assert_same(
            &unlinked(expected),
            &unlinked(&got),
            &format!("{what}: {v}"),
        );
    }
    f.check_clean();
}

#[test]
fn a_version_keeps_the_previous_versions_links_as_hard_links_of_them() {
    let f = Fixture::new();
    let h = history(&f, false);
    let job = f.job_dir();
    let (v3, v4) = (&h[2].0, &h[3].0);
    for i in 3..=5 {
        let (a, b) = (
            job.join(v3).join(format!("a/b/f{i}")),
            job.join(v4).join(format!("a/b/f{i}")),
        );
        assert_eq!(
            inode_and_links(&a).0,
            inode_and_links(&b).0,
            "{v4} keeps {v3}'s link at a/b/f{i}"
        );
        assert_eq!(readlink(&a), readlink(&b));
        assert!(
            readlink(&a).contains(&h[0].0),
            "the link names its holder {}",
            h[0].0
        );
    }
    // f2 is real in V3: V4's link to it is a new one, and V3's data is not hard-linked.
    let (data, link) = (job.join(v3).join("a/b/f2"), job.join(v4).join("a/b/f2"));
    assert_eq!(inode_and_links(&data).1, 1, "{v3}'s own f2 has one name");
    assert_ne!(inode_and_links(&data).0, inode_and_links(&link).0);
    verify(&f, &h, "shared links");
}

#[test]
fn retiring_the_holder_repoints_every_version_through_one_new_inode_per_path() {
    let f = Fixture::new();
    let h = history(&f, false);
    f.tool("reverb-retire")
        .args(["--keep", "3"])
        .assert_success();
    let job = f.job_dir();
    let (v2, v3, v4) = (&h[1].0, &h[2].0, &h[3].0);
    assert_eq!(index_dirs(&f), vec![v2.clone(), v3.clone(), v4.clone()]);
    for i in 3..=5 {
        let (a, b) = (
            job.join(v3).join(format!("a/b/f{i}")),
            job.join(v4).join(format!("a/b/f{i}")),
        );
        let (ia, la) = inode_and_links(&a);
        assert_eq!(ia, inode_and_links(&b).0, "{v3} and {v4} share a/b/f{i}");
        assert_eq!(la, 2, "two names, none left in .tmp");
        assert_eq!(readlink(&a), format!("../../../{v2}/a/b/f{i}"));
    }
    let tmp = fs::read_dir(job.join(".tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(
        tmp.is_empty(),
        "the retirement leaves nothing in .tmp: {tmp:?}"
    );
    verify(&f, &h, "after retiring the holder");
}

#[test]
fn with_hard_links_refused_every_link_is_its_own_and_the_versions_are_the_same() {
    let shared = Fixture::new();
    let h_shared = history(&shared, false);
    let own = Fixture::new();
    let h_own = history(&own, true);
    assert!(!shared_symlinks(&shared).is_empty(), "the default shares");
    assert_eq!(shared_symlinks(&own), Vec::<String>::new());
    for (f, refuse) in [(&shared, false), (&own, true)] {
        let mut c = f.tool("reverb-retire");
        c.args(["--keep", "3"]);
        if refuse {
            c.env("REVERB_FAULT_NO_HARD_LINKS", "1");
        }
        c.assert_success();
    }
    assert_eq!(shared_symlinks(&own), Vec::<String>::new());
    verify(&shared, &h_shared, "shared");
    verify(&own, &h_own, "own links");
}

/// An unchanged source link in a directory a version makes real is kept the same way as a
/// vault link: a second name of the previous version's (its text, read from the same path,
/// means the same; nothing changes a version's symlink in place). Retiring the version that
/// made it leaves the later ones whole; with hard links refused each version has its own.
#[test]
fn an_unchanged_source_link_is_kept_as_a_hard_link_of_the_previous_versions() {
    for refuse in [false, true] {
        let f = Fixture::new();
        fs::create_dir_all(f.src.join("a/b")).expect("mkdir");
        fs::write(f.src.join("a/b/f"), "f v1").expect("write");
        std::os::unix::fs::symlink("f", f.src.join("a/b/s")).expect("symlink");
        let mut h = vec![(snap(&f, refuse, true), capture(&f.src, opts()))];
        for text in ["f v2", "f v3"] {
            fs::write(f.src.join("a/b/f"), text).expect("write");
            h.push((snap(&f, refuse, false), capture(&f.src, opts())));
        }
        let job = f.job_dir();
        let names: Vec<_> = h.iter().map(|(v, _)| job.join(v).join("a/b/s")).collect();
        for n in &names {
            assert_eq!(readlink(n), "f", "{}", n.display());
        }
        let inodes: Vec<(u64, u64)> = names.iter().map(|n| inode_and_links(n)).collect();
        if refuse {
            assert_eq!(
                inodes,
                vec![(inodes[0].0, 1), (inodes[1].0, 1), (inodes[2].0, 1)]
            );
            assert!(inodes[0].0 != inodes[1].0 && inodes[1].0 != inodes[2].0);
        } else {
            assert_eq!(inodes, vec![(inodes[0].0, 3); 3], "one inode, three names");
        }
        let mut c = f.tool("reverb-retire");
        c.args(["--keep", "2"]);
        if refuse {
            c.env("REVERB_FAULT_NO_HARD_LINKS", "1");
        }
        c.assert_success();
        assert_eq!(index_dirs(&f), vec![h[1].0.clone(), h[2].0.clone()]);
        let (i2, l2) = inode_and_links(&names[1]);
        assert_eq!(readlink(&names[2]), "f");
        if !refuse {
            assert_eq!((i2, l2), (inodes[0].0, 2), "the later versions keep it");
        }
        verify(
            &f,
            &h,
            &format!("source link, hard links refused: {refuse}"),
        );
    }
}
