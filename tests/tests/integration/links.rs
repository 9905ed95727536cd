//! Relative source links resolve inside their version (docs/format.md#invariants I8): a
//! version browsed as a user does (`cat`, `cp -rL`) reads, through a link like
//! `pkg/b/lnk -> ../a/1`, the file as it was when *that* version was taken, even when the
//! link's directory is unchanged. The oracle is a `cp -a` capture of the source taken at each
//! version, compared by `diff -r` with a `cp -rL` of the version directory; every retained
//! version is compared after every step, retirements included, and `reverb-index --check`
//! (which verifies I8) must stay clean.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use reverb_tests::ops::{event, index_dirs, snap_changes};
use reverb_tests::{Fixture, TestCommand, stdout};

/// A source, its vault, and the `cp -a` capture taken at each version.
struct History {
    f: Fixture,
    captures: Vec<(String, PathBuf)>,
}

impl History {
    /// The source `pkg/a/1`, `pkg/b/lnk -> ../a/1` (and a sibling file so `pkg/b` is more
    /// than the link), and its first version.
    fn new() -> History {
        let f = Fixture::new();
        write(&f.src, "pkg/a/1", "the old text");
        write(&f.src, "pkg/b/other", "other");
        link(&f.src, "../a/1", "pkg/b/lnk");
        let mut h = History {
            f,
            captures: Vec::new(),
        };
        let v = h.f.first();
        h.taken(v, "the first version");
        h
    }

    /// Records version `v` (must be new) with a capture of the source now, and checks every
    /// retained version.
    fn taken(&mut self, v: String, what: &str) {
        assert!(!v.is_empty(), "{what}: a new version");
        let cap = self
            .f
            ._tmp
            .path()
            .join(format!("cap-{}", self.captures.len()));
        cp(&["-a"], &self.f.src, &cap);
        self.captures.push((v, cap));
        self.verify(what);
    }

    /// A rescan that makes a version.
    fn rescan(&mut self, what: &str) {
        let v = self.f.rescan();
        self.taken(v, what);
    }

    /// A version from event lines `(kind, type, path)`.
    fn events(&mut self, lines: &[(&str, &str, &str)], what: &str) {
        let lines: Vec<String> = lines
            .iter()
            .map(|(k, t, p)| event(k, t, Path::new(p), None))
            .collect();
        let v = stdout(&snap_changes(&self.f, &lines, &[]).assert_success())
            .trim()
            .to_owned();
        self.taken(v, what);
    }

    /// Every retained version, copied through its links, is its capture; --check is clean.
    fn verify(&self, what: &str) {
        let retained = index_dirs(&self.f);
        for (v, cap) in self.captures.iter().filter(|(v, _)| retained.contains(v)) {
            let browsed = self.f._tmp.path().join(format!("browse-{v}"));
            let _ = fs::remove_dir_all(&browsed);
            cp(&["-rL"], &self.f.job_dir().join(v), &browsed);
            let mut diff = TestCommand::program("diff");
            diff.arg("-r").arg(cap).arg(&browsed);
            let o = diff.output();
            assert!(
                o.status.success(),
                "{what}: {v} browsed differs from its capture:\n{}",
                String::from_utf8_lossy(&o.stdout)
            );
            fs::remove_dir_all(&browsed).expect("rm browse");
        }
        self.f.check_clean();
    }

    /// `cat current/<rel>`.
    fn cat_current(&self, rel: &str) -> String {
        fs::read_to_string(self.f.job_dir().join("current").join(rel)).expect("cat")
    }

    /// Is `rel` in the newest version physically a symlink (a vault link for a directory)?
    fn linked_in_current(&self, rel: &str) -> bool {
        let at = self.f.job_dir().join("current").join(rel);
        fs::symlink_metadata(at)
            .expect("lstat")
            .file_type()
            .is_symlink()
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, text).expect("write");
}

fn link(root: &Path, target: &str, rel: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    symlink(target, p).expect("symlink");
}

fn cp(args: &[&str], from: &Path, to: &Path) {
    let mut c = TestCommand::program("cp");
    c.args(args).arg(from).arg(to).assert_success();
}

#[test]
fn a_link_in_an_unchanged_directory_reads_its_own_version_after_a_rescan() {
    let mut h = History::new();
    write(&h.f.src, "pkg/a/1", "the new text, longer");
    h.rescan("pkg/a/1 rewritten");
    assert_eq!(h.cat_current("pkg/a/1"), "the new text, longer");
    assert_eq!(h.cat_current("pkg/b/lnk"), "the new text, longer");
    assert!(
        h.linked_in_current("pkg/b/other"),
        "pkg/b real, its file linked"
    );
}

#[test]
fn a_link_in_an_unchanged_directory_reads_its_own_version_after_an_event() {
    let mut h = History::new();
    write(&h.f.src, "pkg/a/1", "the new text, longer");
    h.events(&[("modify", "file", "pkg/a/1")], "pkg/a/1 rewritten");
    assert_eq!(h.cat_current("pkg/b/lnk"), "the new text, longer");
}

#[test]
fn a_deep_link_makes_real_only_what_it_climbs_out_of() {
    let mut h = History::new();
    // deep/x/y/z/l -> ../../t is deep/x/t: it leaves z and y, not x.
    write(&h.f.src, "deep/x/t", "t one");
    write(&h.f.src, "deep/x/y/z/f", "f");
    write(&h.f.src, "deep/x/y/side/g", "g");
    write(&h.f.src, "deep/x/w/h", "h");
    link(&h.f.src, "../../t", "deep/x/y/z/l");
    // c/d/l climbs out of c entirely, then descends into pkg.
    link(&h.f.src, "../../pkg/a/1", "c/d/l");
    h.rescan("the links added");
    write(&h.f.src, "deep/x/t", "t two, longer");
    write(&h.f.src, "pkg/a/1", "the new text, longer");
    h.rescan("deep/x/t and pkg/a/1 rewritten");
    assert_eq!(h.cat_current("deep/x/y/z/l"), "t two, longer");
    assert_eq!(h.cat_current("c/d/l"), "the new text, longer");
    assert!(!h.linked_in_current("deep/x/y"), "left by the link");
    assert!(!h.linked_in_current("deep/x/y/z"), "left by the link");
    assert!(
        h.linked_in_current("deep/x/y/side"),
        "not on the way: linked"
    );
    assert!(h.linked_in_current("deep/x/w"), "unchanged sibling: linked");
    assert!(h.linked_in_current("deep/x/y/z/f"));
}

#[test]
fn a_removed_link_lets_its_directory_be_linked_again() {
    let mut h = History::new();
    fs::remove_file(h.f.src.join("pkg/b/lnk")).expect("rm");
    h.rescan("the link removed");
    write(&h.f.src, "pkg/a/1", "the new text, longer");
    h.rescan("pkg/a/1 rewritten");
    assert!(
        h.linked_in_current("pkg/b"),
        "no climbing link left in pkg/b"
    );
}

#[test]
fn links_added_by_an_event_and_by_a_rescan_are_kept_inside() {
    let mut h = History::new();
    write(&h.f.src, "pkg/e/keep", "keep");
    write(&h.f.src, "q/keep", "keep");
    h.rescan("pkg/e and q");
    link(&h.f.src, "../a/1", "pkg/e/l2");
    h.events(&[("create", "symlink", "pkg/e/l2")], "pkg/e/l2 added");
    link(&h.f.src, "../pkg/a/1", "q/l3");
    h.rescan("q/l3 added");
    write(&h.f.src, "pkg/a/1", "the new text, longer");
    h.events(&[("modify", "file", "pkg/a/1")], "pkg/a/1 rewritten");
    for l in ["pkg/b/lnk", "pkg/e/l2", "q/l3"] {
        assert_eq!(h.cat_current(l), "the new text, longer", "{l}");
    }
    write(&h.f.src, "pkg/a/1", "the third text, longest");
    h.rescan("pkg/a/1 rewritten again");
}

#[test]
fn retirement_keeps_every_link_inside_its_version() {
    let mut h = History::new();
    link(&h.f.src, "../../pkg/a/1", "c/d/l");
    write(&h.f.src, "c/d/f", "f");
    h.rescan("c/d/l added");
    for (i, text) in ["second text", "third text!", "fourth text!!"]
        .iter()
        .enumerate()
    {
        write(&h.f.src, "pkg/a/1", text);
        if i % 2 == 0 {
            h.rescan(text);
        } else {
            h.events(&[("modify", "file", "pkg/a/1")], text);
        }
    }
    fs::remove_file(h.f.src.join("pkg/b/lnk")).expect("rm");
    h.rescan("pkg/b/lnk removed");
    while index_dirs(&h.f).len() > 1 {
        let keep = (index_dirs(&h.f).len() - 1).to_string();
        h.f.tool("reverb-retire")
            .args(["--keep", &keep])
            .assert_success();
        h.verify(&format!("after retiring down to {keep}"));
    }
}

#[test]
fn check_reports_a_directory_linked_under_a_climbing_link() {
    let mut h = History::new();
    write(&h.f.src, "pkg/a/1", "the new text, longer");
    h.rescan("pkg/a/1 rewritten");
    let (v1, v2) = (h.captures[0].0.clone(), h.captures[1].0.clone());
    let job = h.f.job_dir();
    // What the code before I8 made: pkg/b of V2 one vault link into V1.
    fs::remove_dir_all(job.join(&v2).join("pkg/b")).expect("rm pkg/b");
    symlink(format!("../../{v1}/pkg/b"), job.join(&v2).join("pkg/b")).expect("link");
    let o = h.f.tool("reverb-index").arg("--check").assert_exit(1);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("\tclimbing-link\t{v2}/pkg/b\t")),
        "the linked directory is named: {out}"
    );
    // A registry that disagrees with the tree is reported too.
    let reg = job.join("climbing.tsv");
    let text = fs::read_to_string(&reg).expect("climbing.tsv");
    assert!(text.contains("pkg/b/lnk\t../a/1"), "{text}");
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains("lnk")).collect();
    fs::write(&reg, kept.join("\n") + "\n").expect("write");
    let o = h.f.tool("reverb-index").arg("--check").assert_exit(1);
    assert!(
        stdout(&o).contains("\tclimbing-link\tclimbing.tsv\t"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_link_that_descends_and_climbs_again_is_kept_inside() {
    let mut h = History::new();
    // m/l -> ../s/u/../t enters s/u and leaves it again: s/u must not be a link into V1.
    write(&h.f.src, "s/u/f", "f");
    write(&h.f.src, "s/t", "t one");
    link(&h.f.src, "../s/u/../t", "m/l");
    h.rescan("s and m/l");
    write(&h.f.src, "s/t", "t two, longer");
    h.rescan("s/t rewritten");
    assert_eq!(h.cat_current("m/l"), "t two, longer");
    assert!(!h.linked_in_current("s/u"), "left by the link");
}

#[test]
fn a_vault_without_the_registry_reads_the_links_from_the_old_version() {
    // A vault written before climbing.tsv existed: the build reads the old tree once.
    let mut h = History::new();
    let reg = h.f.job_dir().join("climbing.tsv");
    assert!(reg.exists(), "the first version wrote the registry");
    fs::remove_file(&reg).expect("rm climbing.tsv");
    write(&h.f.src, "pkg/a/1", "the new text, longer");
    h.rescan("pkg/a/1 rewritten, no registry");
    assert_eq!(h.cat_current("pkg/b/lnk"), "the new text, longer");
    let text = fs::read_to_string(&reg).expect("written again");
    assert!(text.contains("pkg/b/lnk\t../a/1"), "{text}");
}
