//! Hard links edited through each name (docs/format.md#invariants I5, docs/design.md
//! "Hard links"): a change of a multiply linked file through one name is a change of every
//! name of its inode in the source, and a version holds the names linked together as the
//! source has them. Editors save in place (`echo new > a/doc`, truncate and write, append),
//! which every name sees, or write a new file and rename it over the name
//! (vim/gedit/emacs), which breaks the link in the source too: the other names then keep the
//! old data, and so must the version.
//!
//! Versions are made from the event lines `reverb-watch` prints for such edits (only the
//! name that was used: inotify reports an edit to the watch of that name's directory alone),
//! by rescans, and once through the real supervisor. The oracle is a `cp -a` of the source
//! taken when the version was made, compared with `reverb-restore`'s output (content, mode,
//! times, owners, which names share an inode), with `b3sum` of both, and with the version
//! itself read through its links (names sharing an inode in the source share one there).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reverb_tests::model::{CaptureOpts, assert_same, capture};
use reverb_tests::ops::{event, snap_changes};
use reverb_tests::{Fixture, TestCommand, bin, have, inodes, sh, stdout};

/// How a history's versions are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `reverb-snap --changes -` fed the event lines of each edit.
    Events,
    /// `reverb-snap` comparing the whole source.
    Rescan,
}

fn opts() -> CaptureOpts {
    CaptureOpts {
        owners: reverb_tests::is_root(),
        dir_mtimes: true,
    }
}

fn rel(p: &str) -> PathBuf {
    PathBuf::from(p)
}

/// Writes `data` into the existing file `p` in place (`O_TRUNC`, like `echo new > p`).
fn write_in_place(p: &Path, data: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.write_all(data).expect("write");
}

fn append(p: &Path, data: &[u8]) {
    let mut f = fs::OpenOptions::new().append(true).open(p).expect("open");
    f.write_all(data).expect("append");
}

/// The source: `a/doc` and `b/hl` one inode, `p/one`, `q/r/s/two` and `t/three` another
/// (their folders otherwise unchanged by the edits), and unrelated files.
fn seed(src: &Path) {
    for d in ["a", "b", "c", "p", "q/r/s", "t"] {
        fs::create_dir_all(src.join(d)).expect("mkdir");
    }
    fs::write(src.join("a/doc"), b"old text\n").expect("write");
    fs::hard_link(src.join("a/doc"), src.join("b/hl")).expect("link");
    fs::write(src.join("b/other"), b"b's other file\n").expect("write");
    fs::write(src.join("c/keep"), b"unrelated\n").expect("write");
    fs::write(src.join("p/one"), b"three names\n").expect("write");
    fs::hard_link(src.join("p/one"), src.join("q/r/s/two")).expect("link");
    fs::hard_link(src.join("p/one"), src.join("t/three")).expect("link");
    fs::write(src.join("q/r/s/sibling"), b"sibling\n").expect("write");
}

/// One edit of the source: what it does, and the event lines reverb-watch prints for it.
type Edit = (&'static str, fn(&Path) -> Vec<String>);

fn modify(p: &str) -> String {
    event("modify", "file", &rel(p), None)
}

/// Every version restores to (and, read through its links, is) the `cp -a` taken with it.
fn assert_version_is(f: &Fixture, version: &str, cap: &Path, what: &str) {
    let restored = f.restore(version);
    assert_same(
        &capture(cap, opts()),
        &capture(&restored, opts()),
        &format!("{what}: restore of {version}"),
    );
    if have("b3sum") {
        let sums = |root: &Path| {
            let o = TestCommand::program("sh")
                .arg("-c")
                .arg("find . -type f | LC_ALL=C sort | xargs -r b3sum")
                .current_dir(root)
                .assert_success();
            stdout(&o)
        };
        assert_eq!(
            sums(cap),
            sums(&restored),
            "{what}: b3sum of the source and of the restore of {version}"
        );
    } else {
        reverb_tests::skip(&format!("b3sum not installed: the b3sum oracle for {what}"));
    }
    let problems = inodes::version_keeps_groups(cap, &f.job_dir().join(version));
    assert!(
        problems.is_empty(),
        "{what}: {version} read through its links:\n{}",
        problems.join("\n")
    );
}

/// Runs `edits` on a fresh source, one version each (by `mode`); after each, that version
/// and every earlier one must be the source as it was.
fn history(mode: Mode, edits: &[Edit]) {
    let f = Fixture::new();
    seed(&f.src);
    let captures = f._tmp.path().join("captures");
    fs::create_dir(&captures).expect("mkdir");
    let take_capture = |i: usize| {
        let cap = captures.join(i.to_string());
        sh(&format!("cp -a '{}' '{}'", f.src.display(), cap.display()));
        cap
    };
    let mut versions = vec![(f.first(), take_capture(0), "the first version")];
    for (i, (what, edit)) in edits.iter().enumerate() {
        let events = edit(&f.src);
        let cap = take_capture(i + 1);
        let v = match mode {
            Mode::Events => snap_changes(&f, &events, &[]).stdout().trim().to_owned(),
            Mode::Rescan => f.rescan(),
        };
        assert!(!v.is_empty(), "{mode:?}: {what}: no version");
        versions.push((v, cap, what));
        for (v, cap, what) in &versions {
            assert_version_is(&f, v, cap, &format!("{mode:?}, after {what}"));
        }
        f.check_clean();
    }
}

fn both_ways(edits: &[Edit]) {
    history(Mode::Events, edits);
    history(Mode::Rescan, edits);
}

#[test]
fn an_edit_in_place_through_either_name_is_in_every_name() {
    both_ways(&[
        ("echo new > a/doc", |s| {
            write_in_place(&s.join("a/doc"), b"new text, longer\n");
            vec![modify("a/doc")]
        }),
        ("truncate and write through b/hl", |s| {
            write_in_place(&s.join("b/hl"), b"written through the second name\n");
            vec![modify("b/hl")]
        }),
        ("append through b/hl", |s| {
            append(&s.join("b/hl"), b"appended\n");
            vec![modify("b/hl")]
        }),
        ("truncate a/doc shorter", |s| {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(s.join("a/doc"))
                .expect("open");
            f.set_len(7).expect("truncate");
            vec![modify("a/doc")]
        }),
        ("chmod 600 b/hl", |s| {
            fs::set_permissions(s.join("b/hl"), fs::Permissions::from_mode(0o600)).expect("chmod");
            vec![event("attrib", "file", &rel("b/hl"), None)]
        }),
        (
            "echo through q/r/s/two (three names, two folders unchanged)",
            |s| {
                write_in_place(&s.join("q/r/s/two"), b"every one of the three\n");
                vec![modify("q/r/s/two")]
            },
        ),
    ]);
}

#[test]
fn a_new_name_joins_its_inode_and_leaves_it() {
    both_ways(&[
        ("ln a/doc c/new", |s| {
            fs::hard_link(s.join("a/doc"), s.join("c/new")).expect("link");
            vec![event("create", "file", &rel("c/new"), None)]
        }),
        ("echo through c/new", |s| {
            write_in_place(&s.join("c/new"), b"through the newest name\n");
            vec![modify("c/new")]
        }),
        ("rm c/new, then append through a/doc", |s| {
            fs::remove_file(s.join("c/new")).expect("rm");
            append(&s.join("a/doc"), b"after the removal\n");
            vec![
                event("delete", "file", &rel("c/new"), None),
                modify("a/doc"),
            ]
        }),
        (
            "append through b/hl, then rm b/hl (the batch names only the gone name)",
            |s| {
                append(&s.join("b/hl"), b"written, then this name went\n");
                fs::remove_file(s.join("b/hl")).expect("rm");
                vec![modify("b/hl"), event("delete", "file", &rel("b/hl"), None)]
            },
        ),
    ]);
}

/// A name replaced by a file with the same size, times, mode and owner (`cp -p` and a
/// rename, `tar x` over it) compares equal, but is no longer one inode with the others: the
/// version must not keep them as one.
#[test]
fn a_name_replaced_by_an_equal_copy_leaves_its_inode() {
    both_ways(&[
        (
            "cp -p q/r/s/two q/r/s/two.new, then mv it over q/r/s/two",
            |s| {
                sh(&format!(
                    "cp -p '{0}/q/r/s/two' '{0}/q/r/s/two.new' && mv '{0}/q/r/s/two.new' '{0}/q/r/s/two'",
                    s.display()
                ));
                vec![
                    event("create", "file", &rel("q/r/s/two.new"), None),
                    modify("q/r/s/two.new"),
                    event("attrib", "file", &rel("q/r/s/two.new"), None),
                    event(
                        "move",
                        "file",
                        &rel("q/r/s/two.new"),
                        Some(&rel("q/r/s/two")),
                    ),
                ]
            },
        ),
        (
            "echo through p/one: t/three follows, q/r/s/two does not",
            |s| {
                write_in_place(&s.join("p/one"), b"p/one and t/three only\n");
                vec![modify("p/one")]
            },
        ),
    ]);
}

/// A job from before `hardlinks.tsv` (the file removed): an edit through one name still
/// reaches every name (the build walks the source once for them), and a rescan that finds
/// nothing changed records the names for the builds after it.
#[test]
fn without_the_record_of_names_the_source_is_walked_for_them() {
    let f = Fixture::new();
    seed(&f.src);
    let record = f.job_dir().join("hardlinks.tsv");
    let v1 = f.first();
    let cap1 = f._tmp.path().join("cap1");
    sh(&format!("cp -a '{}' '{}'", f.src.display(), cap1.display()));
    fs::remove_file(&record).expect("the first version's record");
    write_in_place(&f.src.join("b/hl"), b"through b/hl, no record\n");
    let cap2 = f._tmp.path().join("cap2");
    sh(&format!("cp -a '{}' '{}'", f.src.display(), cap2.display()));
    let v2 = snap_changes(&f, &[modify("b/hl")], &[])
        .stdout()
        .trim()
        .to_owned();
    assert_version_is(&f, &v1, &cap1, "no record: V1");
    assert_version_is(&f, &v2, &cap2, "no record: an edit through b/hl");
    fs::remove_file(&record).expect("the second version's record");
    assert_eq!(f.rescan(), "", "nothing changed");
    let text = fs::read_to_string(&record).expect("a rescan that found nothing records the names");
    for name in ["a/doc", "b/hl", "p/one", "q/r/s/two", "t/three"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&v2) && l.ends_with(&format!("\t{name}"))),
            "{name} in {text}"
        );
    }
    f.check_clean();
}

#[test]
fn a_save_by_rename_breaks_the_link_in_the_version_too() {
    both_ways(&[
        (
            "vim/gedit save of a/doc: write a/.doc.swp, rename it over a/doc",
            |s| {
                fs::write(s.join("a/.doc.swp"), b"saved by rename\n").expect("write");
                fs::rename(s.join("a/.doc.swp"), s.join("a/doc")).expect("rename");
                vec![
                    event("create", "file", &rel("a/.doc.swp"), None),
                    modify("a/.doc.swp"),
                    event("move", "file", &rel("a/.doc.swp"), Some(&rel("a/doc"))),
                ]
            },
        ),
        ("echo through b/hl after the link broke", |s| {
            write_in_place(&s.join("b/hl"), b"b/hl alone now\n");
            vec![modify("b/hl")]
        }),
        (
            "emacs save of t/three: mv t/three t/three~, write a new t/three",
            |s| {
                fs::rename(s.join("t/three"), s.join("t/three~")).expect("backup");
                fs::write(s.join("t/three"), b"a new t/three\n").expect("write");
                vec![
                    event("move", "file", &rel("t/three"), Some(&rel("t/three~"))),
                    event("create", "file", &rel("t/three"), None),
                    modify("t/three"),
                ]
            },
        ),
        (
            "echo through p/one: q/r/s/two and t/three~ follow, t/three does not",
            |s| {
                write_in_place(&s.join("p/one"), b"p/one, two and three~\n");
                vec![modify("p/one")]
            },
        ),
        ("a/doc~ written, then renamed over a/doc", |s| {
            fs::write(s.join("a/doc~"), b"from the tilde file\n").expect("write");
            fs::rename(s.join("a/doc~"), s.join("a/doc")).expect("rename");
            vec![
                event("create", "file", &rel("a/doc~"), None),
                modify("a/doc~"),
                event("move", "file", &rel("a/doc~"), Some(&rel("a/doc"))),
            ]
        }),
    ]);
}

// ---------------------------------------------------------------------------------------
// The real supervisor.

struct Supervisor(Child);

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, secs: u64, ok: impl FnMut() -> bool) {
    reverb_tests::wait_until(Duration::from_secs(secs), what, ok);
}

fn indexed(job_dir: &Path) -> Vec<String> {
    fs::read_to_string(job_dir.join("index.tsv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(1).map(str::to_owned))
        .collect()
}

#[test]
fn the_supervisor_versions_an_edit_through_one_name_under_every_name() {
    let f = Fixture::new();
    seed(&f.src);
    let config = f._tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[defaults]\nvault = \"{}\"\nmin_snapshot_time = \"400ms\"\nmax_snapshot_delay = \"2s\"\n\
             [jobs.\"{}\"]\nsource = \"{}\"\n",
            f.vault.display(),
            f.job,
            f.src.display()
        ),
    )
    .expect("config");
    let child = Command::new(bin("reverberator"))
        .env("RUNTIME_DIRECTORY", f._tmp.path().join("run"))
        .args(["run", "--init", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn reverberator");
    let _supervisor = Supervisor(child);
    let job_dir = f.job_dir();
    wait_for("the first version", 30, || indexed(&job_dir).len() == 1);
    wait_for("watching", 30, || {
        fs::read_to_string(job_dir.join("journal.tsv"))
            .unwrap_or_default()
            .contains("\twatching")
    });
    type Step = (&'static str, fn(&Path));
    let edits: [Step; 2] = [
        ("echo new > a/doc", |s| {
            write_in_place(&s.join("a/doc"), b"new text through a/doc\n")
        }),
        ("a save by rename of q/r/s/two", |s| {
            fs::write(s.join("q/r/s/.two.swp"), b"two, saved by rename\n").expect("write");
            fs::rename(s.join("q/r/s/.two.swp"), s.join("q/r/s/two")).expect("rename");
        }),
    ];
    for (i, (what, edit)) in edits.iter().enumerate() {
        edit(&f.src);
        let cap = f._tmp.path().join(format!("capture-{i}"));
        sh(&format!("cp -a '{}' '{}'", f.src.display(), cap.display()));
        wait_for(&format!("a version after {what}"), 30, || {
            indexed(&job_dir).len() == i + 2
        });
        let v = indexed(&job_dir).pop().expect("a version");
        assert_version_is(&f, &v, &cap, &format!("supervisor, after {what}"));
    }
    f.check_clean();
}

/// A `hardlinks.tsv` that cannot be read stops nothing: a warning names it, the version is
/// made exactly (the names are found by walking the source) and the record is written anew.
#[test]
fn a_damaged_record_of_names_is_rewritten_with_a_warning() {
    let f = Fixture::new();
    seed(&f.src);
    f.first();
    let record = f.job_dir().join("hardlinks.tsv");
    fs::write(
        &record,
        "dir\tdev\tino\tlinks\tpath\nV1\tnot a number\t1\t2\ta/doc\n",
    )
    .expect("damage");
    write_in_place(&f.src.join("a/doc"), b"after the damage\n");
    let cap = f._tmp.path().join("cap");
    sh(&format!("cp -a '{}' '{}'", f.src.display(), cap.display()));
    let o = snap_changes(&f, &[modify("a/doc")], &[]).assert_success();
    let v = stdout(&o).trim().to_owned();
    let err = reverb_tests::stderr(&o);
    assert!(
        err.contains("hardlinks.tsv line 2") && err.contains("written anew"),
        "{err}"
    );
    assert_version_is(&f, &v, &cap, "a damaged record");
    let text = fs::read_to_string(&record).expect("record");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&v) && l.ends_with("\tb/hl")),
        "{text}"
    );
    f.check_clean();
}

/// `keep_complete = false`: a version holds what changed since the job started, and an edit
/// through one name changed every name: all are in the version, as one inode, their
/// folders made though nothing else in them changed.
#[test]
fn without_complete_versions_every_name_of_an_edited_file_is_kept() {
    let f = Fixture::new();
    seed(&f.src);
    let cfg = f._tmp.path().join("config.toml");
    fs::write(
        &cfg,
        format!(
            "[jobs.job]\nsource = \"{}\"\nvault = \"{}\"\nkeep_complete = false\n",
            f.src.display(),
            f.vault.display()
        ),
    )
    .expect("config");
    let snap = || {
        let mut c = reverb_tests::cmd("reverb-snap");
        c.arg("--config")
            .arg(&cfg)
            .args(["--job", "job"])
            .show_dir(f.job_dir());
        c
    };
    snap().arg("--init").assert_success();
    write_in_place(&f.src.join("p/one"), b"three names, one edit\n");
    let mut c = snap();
    let mut text = format!("{}\n", reverb_common::events::HEADER);
    text.push_str(&modify("p/one"));
    text.push('\n');
    c.args(["--changes", "-"]).stdin(text.into_bytes());
    let v = c.stdout().trim().to_owned();
    let ver = f.job_dir().join(&v);
    let inode = |p: &str| {
        let m = fs::metadata(ver.join(p)).unwrap_or_else(|e| panic!("{v}/{p}: {e}"));
        (std::os::unix::fs::MetadataExt::ino(&m), m.len())
    };
    for name in ["q/r/s/two", "t/three"] {
        assert_eq!(inode(name), inode("p/one"), "{name} in {v}");
        assert_eq!(
            fs::read(ver.join(name)).expect("read"),
            b"three names, one edit\n"
        );
    }
    assert!(
        fs::symlink_metadata(ver.join("q/r/s/sibling")).is_err(),
        "an unchanged file stays out of the version"
    );
    let opts = CaptureOpts {
        owners: reverb_tests::is_root(),
        dir_mtimes: true,
    };
    for dir in ["q", "q/r", "q/r/s", "t"] {
        let (want, got) = (
            capture(&f.src.join(dir), opts),
            capture(&ver.join(dir), opts),
        );
        assert_eq!(
            want.get(Path::new(".")).map(|n| (n.mode, n.mtime)),
            got.get(Path::new(".")).map(|n| (n.mode, n.mtime)),
            "{dir}'s mode and times"
        );
    }
}
