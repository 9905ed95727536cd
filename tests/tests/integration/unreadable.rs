//! Entries the build may not read (docs/format.md#invariants I5): only `ENOENT`/`ENOTDIR`
//! mean "gone"; an entry whose `lstat` fails for any other reason keeps its previous data
//! in the new version and is journaled `skipped` with its path and the error. Run as the
//! user nobody (root bypasses permissions); the oracle is a `cp -a` copy of the source
//! taken when the first version was.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use reverb_common::events::HEADER;
use reverb_tests::model::{CaptureOpts, capture};
use reverb_tests::ops::{FastFixture, event};
use reverb_tests::{Fixture, TestCommand, require_root, sh, stdout};

use crate::hostile::{open_to_nobody, snap_as_nobody};

const NOBODY: CaptureOpts = CaptureOpts {
    owners: false,
    dir_mtimes: true,
};

/// A job owned by nobody whose first version holds `public` and `private/inside`, taken
/// while `private/` was searchable; then `private/` is made readable but not searchable
/// by nobody (0744, owned by root) and `public` changes. Returns the `cp -a` copy of the
/// source as the first version saw it.
fn private_made_unsearchable(f: &Fixture) -> std::path::PathBuf {
    open_to_nobody(f);
    fs::write(f.src.join("public"), b"public v1").expect("write");
    fs::create_dir(f.src.join("private")).expect("mkdir");
    fs::write(f.src.join("private/inside"), b"inside v1").expect("write");
    let mut c = snap_as_nobody(f, &["--init"]);
    c.arg("--source").arg(&f.src);
    let v1 = stdout(&c.assert_success()).trim().to_owned();
    assert!(!v1.is_empty(), "a first version");
    let oracle = f.vault.with_file_name("oracle-v1");
    sh(&format!("cp -a {} {}", f.src.display(), oracle.display()));
    fs::write(f.src.join("private/inside"), b"inside v2, unreachable").expect("write");
    fs::write(f.src.join("public"), b"public v2").expect("write");
    fs::set_permissions(f.src.join("private"), fs::Permissions::from_mode(0o744)).expect("chmod");
    oracle
}

/// The new version keeps `private/inside` exactly as the first version had it, holds the
/// readable change, and the journal says `private/inside` was skipped, with the error.
fn assert_kept_and_journaled(f: &Fixture, v: &str, oracle: &Path) {
    assert!(
        !v.is_empty(),
        "a version is never aborted for one bad entry"
    );
    let got = capture(&f.restore(v), NOBODY);
    let want = capture(oracle, NOBODY);
    let node = |t: &reverb_tests::ops::Tree, p: &str| t.get(Path::new(p)).cloned();
    assert_eq!(
        node(&got, "private/inside"),
        node(&want, "private/inside"),
        "an entry that cannot be inspected keeps its previous data"
    );
    assert_eq!(
        node(&got, "public").map(|n| n.content),
        node(&capture(&f.src, NOBODY), "public").map(|n| n.content),
        "the readable change is versioned"
    );
    let journal = fs::read(f.job_dir().join("journal.tsv")).expect("journal");
    let journal = String::from_utf8_lossy(&journal);
    let skipped: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("\tskipped\tprivate/inside\t"))
        .collect();
    assert!(
        skipped.len() == 1 && skipped[0].contains("Permission denied"),
        "the unreadable entry is journaled once, with the error:\n{journal}"
    );
    f.check_clean();
}

/// `reverb-snap --changes -` as nobody, fed `lines`.
fn changes_as_nobody(f: &Fixture, lines: &[String]) -> TestCommand {
    let mut text = format!("{HEADER}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let mut c = snap_as_nobody(f, &["--changes", "-"]);
    c.stdin(text.into_bytes());
    c
}

#[test]
fn an_entry_that_cannot_be_inspected_keeps_its_data_after_an_event() {
    require_root!("setpriv to an unprivileged user");
    let f = FastFixture::new(64);
    let oracle = private_made_unsearchable(&f);
    fs::write(f.src.join("private/new"), b"new, unreachable").expect("write");
    let lines = [
        event("modify", "file", Path::new("private/inside"), None),
        event("create", "file", Path::new("private/new"), None),
        event("modify", "file", Path::new("public"), None),
    ];
    let v = stdout(&changes_as_nobody(&f, &lines).assert_success())
        .trim()
        .to_owned();
    assert_kept_and_journaled(&f, &v, &oracle);
    let journal = fs::read(f.job_dir().join("journal.tsv")).expect("journal");
    assert!(
        String::from_utf8_lossy(&journal)
            .lines()
            .any(|l| l.contains("\tskipped\tprivate/new\t")),
        "a new entry that cannot be inspected is journaled too"
    );
}

#[test]
fn an_entry_that_cannot_be_inspected_keeps_its_data_after_a_rescan() {
    require_root!("setpriv to an unprivileged user");
    let f = FastFixture::new(64);
    let oracle = private_made_unsearchable(&f);
    let v = stdout(&snap_as_nobody(&f, &[]).assert_success())
        .trim()
        .to_owned();
    assert_kept_and_journaled(&f, &v, &oracle);
}

/// As a user, `chmod 000` of a backed-up file is an attribute-only change: the new version
/// holds the vault's data under mode 000. The build cannot reopen that copy to make it
/// durable, and still the version is made, nothing is left in `.partial/`, and a version
/// after it works too.
#[test]
fn a_file_made_mode_000_by_its_owner_is_versioned() {
    require_root!("setpriv to an unprivileged user");
    let f = FastFixture::new(64);
    open_to_nobody(&f);
    fs::write(f.src.join("locked"), b"the data").expect("write");
    fs::write(f.src.join("other"), b"other v1").expect("write");
    sh(&format!(
        "chown nobody {}/locked {}/other",
        f.src.display(),
        f.src.display()
    ));
    let mut c = snap_as_nobody(&f, &["--init"]);
    c.arg("--source").arg(&f.src);
    c.assert_success();
    fs::set_permissions(f.src.join("locked"), fs::Permissions::from_mode(0o000)).expect("chmod");
    let o = snap_as_nobody(&f, &[]).output();
    let leftovers: Vec<_> = fs::read_dir(f.job_dir().join(".partial"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "a failed build left .partial/: {leftovers:?}"
    );
    assert!(
        o.status.success(),
        "the version after chmod 000 failed: {}",
        reverb_tests::stderr(&o)
    );
    let v = stdout(&o).trim().to_owned();
    assert!(!v.is_empty(), "no version for the mode change");
    let mode = fs::symlink_metadata(f.job_dir().join(&v).join("locked"))
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0, "the version holds the new mode");
    fs::write(f.src.join("other"), b"other v2").expect("write");
    let v3 = stdout(&snap_as_nobody(&f, &[]).assert_success())
        .trim()
        .to_owned();
    assert_eq!(
        capture(&f.restore(&v3), NOBODY),
        capture(&f.src, NOBODY),
        "the version after it restores to the source"
    );
}

/// As a user, `chmod 000` of a backed-up directory (a new user's trial): the build cannot
/// list it, so the new version keeps the directory as the version before held it (its
/// contents and its mode: a version's directory its own user cannot search could not be
/// made durable, measured, verified or retired), journals it `skipped`, and versions the
/// other changes. The old code copied the mode, could not list its own copy, and failed
/// every build until the mode was put back. By a rescan and by events.
#[test]
fn a_directory_made_mode_000_by_its_owner_keeps_its_previous_state() {
    require_root!("setpriv to an unprivileged user");
    let f = FastFixture::new(64);
    open_to_nobody(&f);
    fs::create_dir(f.src.join("sub")).expect("mkdir");
    fs::write(f.src.join("sub/a"), b"inside v1").expect("write");
    fs::write(f.src.join("other"), b"other v1").expect("write");
    sh(&format!("chown -R nobody {}", f.src.display()));
    let mut c = snap_as_nobody(&f, &["--init"]);
    c.arg("--source").arg(&f.src);
    c.assert_success();
    let oracle = f.vault.with_file_name("oracle-v1");
    sh(&format!("cp -a {} {}", f.src.display(), oracle.display()));
    let node = |t: &reverb_tests::ops::Tree, p: &str| t.get(Path::new(p)).cloned();
    for (round, by_events) in [(2, false), (3, true)] {
        let text = format!("other v{round}");
        fs::write(f.src.join("other"), &text).expect("write");
        fs::set_permissions(f.src.join("sub"), fs::Permissions::from_mode(0o000)).expect("chmod");
        let o = if by_events {
            let lines = [
                event("attrib", "dir", Path::new("sub"), None),
                event("modify", "file", Path::new("other"), None),
            ];
            changes_as_nobody(&f, &lines).output()
        } else {
            snap_as_nobody(&f, &[]).output()
        };
        assert!(
            o.status.success(),
            "round {round}: the build failed: {}",
            reverb_tests::stderr(&o)
        );
        let v = stdout(&o).trim().to_owned();
        assert!(
            !v.is_empty(),
            "round {round}: the other change is a version"
        );
        // Restored as root (the oracle was captured as root too).
        fs::set_permissions(f.src.join("sub"), fs::Permissions::from_mode(0o755)).expect("chmod");
        let got = capture(&f.restore(&v), NOBODY);
        let want = capture(&oracle, NOBODY);
        for p in ["sub", "sub/a"] {
            assert_eq!(node(&got, p), node(&want, p), "round {round}: {p}");
        }
        assert_eq!(
            node(&got, "other").map(|n| n.content),
            node(&capture(&f.src, NOBODY), "other").map(|n| n.content),
            "round {round}: the readable change is versioned"
        );
        let journal = fs::read(f.job_dir().join("journal.tsv")).expect("journal");
        let skipped = String::from_utf8_lossy(&journal)
            .lines()
            .filter(|l| l.contains("\tskipped\tsub\t"))
            .count();
        assert_eq!(
            skipped,
            round - 1,
            "round {round}: sub is journaled skipped"
        );
        f.check_clean();
    }
}

/// As a user, versions holding read-only directories (0555: a Go module cache, a copied
/// package tree) are retired: moving still-used data forward out of a read-only directory
/// of the oldest version (a file, and a whole directory by `RENAME_EXCHANGE`) needs that
/// directory writable for a moment, as the one it moves into already was. The old code
/// failed with "cannot move into the next version: Permission denied" and left the job
/// `retiring`.
#[test]
fn read_only_directories_are_retired_by_their_user() {
    require_root!("setpriv to an unprivileged user");
    let f = FastFixture::new(64);
    open_to_nobody(&f);
    for dir in ["ro", "top", "top/sub"] {
        fs::create_dir(f.src.join(dir)).expect("mkdir");
    }
    for (file, data) in [
        ("ro/f", "f v1"),
        ("ro/g", "g v1"),
        ("top/x", "x v1"),
        ("top/sub/s", "s v1"),
        ("other", "other v1"),
    ] {
        fs::write(f.src.join(file), data).expect("write");
    }
    sh(&format!("chown -R nobody {}", f.src.display()));
    for dir in ["ro", "top"] {
        fs::set_permissions(f.src.join(dir), fs::Permissions::from_mode(0o555)).expect("chmod");
    }
    let mut c = snap_as_nobody(&f, &["--init"]);
    c.arg("--source").arg(&f.src);
    c.assert_success();
    // V2 holds ro/ and top/ as real directories (a file in each changed) with links into
    // V1 for ro/g and the whole of top/sub/; V3 changes something else.
    fs::write(f.src.join("ro/f"), b"f v2").expect("write");
    fs::write(f.src.join("top/x"), b"x v2").expect("write");
    assert_ne!(stdout(&snap_as_nobody(&f, &[]).assert_success()).trim(), "");
    fs::write(f.src.join("other"), b"other v3").expect("write");
    let v3 = stdout(&snap_as_nobody(&f, &[]).assert_success())
        .trim()
        .to_owned();
    let mut retire = TestCommand::program("setpriv");
    retire
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(reverb_tests::bin("reverb-retire"))
        .arg("--vault")
        .arg(&f.vault)
        .arg("--job")
        .arg(&f.job)
        .args(["--keep", "1"])
        .show_dir(f.job_dir());
    retire.assert_success();
    let left: Vec<String> = reverb_tests::ops::index_dirs(&f);
    assert_eq!(
        left,
        std::slice::from_ref(&v3),
        "only the newest version is kept"
    );
    assert_eq!(
        capture(&f.restore(&v3), NOBODY),
        capture(&f.src, NOBODY),
        "the version left restores to the source"
    );
    for dir in ["ro", "top"] {
        let mode = fs::symlink_metadata(f.job_dir().join(&v3).join(dir))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o555, "{dir} keeps its mode in the version");
    }
    f.check_clean();
}
