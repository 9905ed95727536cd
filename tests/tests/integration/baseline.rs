//! `keep_complete = false` jobs compare the source with `baseline.tsv` (docs/format.md
//! #baselinetsv): an entry unchanged since the job started is left out of versions, and a
//! change of its xattrs or ACLs alone is a change (I5). The oracle is `getfattr -d -m -` on
//! the source and on the version's copy; skipped with a printed reason where the attr tools
//! are missing.

use std::fs;
use std::path::{Path, PathBuf};

use reverb_tests::ops::{event, snap_changes};
use reverb_tests::{Fixture, TestCommand, cmd, sh, stdout};

/// A `keep_complete = false` job over `f` (with `user.a=1`) and `g`, its first version
/// taken; returns the config file.
fn fixture() -> (Fixture, PathBuf) {
    let f = Fixture::new();
    fs::write(f.src.join("f"), b"the data of f").expect("write f");
    fs::write(f.src.join("g"), b"g").expect("write g");
    sh(&format!(
        "setfattr -n user.a -v 1 {}",
        f.src.join("f").display()
    ));
    let cfg = f._tmp.path().join("config.toml");
    let text = format!(
        "[jobs.job]\nsource = \"{}\"\nvault = \"{}\"\nkeep_complete = false\n",
        f.src.display(),
        f.vault.display()
    );
    fs::write(&cfg, text).expect("config");
    snap(&f, &cfg).arg("--init").assert_success();
    (f, cfg)
}

fn snap(f: &Fixture, cfg: &Path) -> TestCommand {
    let mut c = cmd("reverb-snap");
    c.arg("--config")
        .arg(cfg)
        .args(["--job", "job"])
        .show_dir(f.job_dir());
    c
}

/// `getfattr -d -m -` of `path` without its `# file:` line.
fn xattrs(path: &Path) -> String {
    let mut c = TestCommand::program("getfattr");
    c.args(["-d", "-m", "-", "-h", "--absolute-names"])
        .arg(path);
    let text = stdout(&c.assert_success());
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("# file:")).collect();
    lines.join("\n")
}

/// Are the attr tools there? Skips (or fails, in strict mode) saying why not.
fn tools_present() -> bool {
    match reverb_tests::missing_programs(&["setfattr", "getfattr"]) {
        None => true,
        Some(missing) => {
            reverb_tests::skip(&format!("not installed: {missing}: baseline xattrs"));
            false
        }
    }
}

/// Version `v` holds `f` with the source's xattrs and data, and not the untouched `g`.
fn assert_holds_f(f: &Fixture, v: &str, what: &str) {
    assert!(!v.is_empty(), "{what}: a new version");
    let copy = f.job_dir().join(v).join("f");
    assert_eq!(
        xattrs(&copy),
        xattrs(&f.src.join("f")),
        "{what}: xattrs of f"
    );
    assert_eq!(
        fs::read(&copy).expect("f"),
        b"the data of f",
        "{what}: data"
    );
    assert!(
        !f.job_dir().join(v).join("g").exists(),
        "{what}: g untouched"
    );
    f.check_clean();
}

#[test]
fn an_xattr_change_alone_since_the_start_is_versioned_by_a_rescan() {
    if !tools_present() {
        return;
    }
    let (f, cfg) = fixture();
    sh(&format!(
        "setfattr -n user.a -v 2 {}",
        f.src.join("f").display()
    ));
    let v = stdout(&snap(&f, &cfg).assert_success()).trim().to_owned();
    assert_holds_f(&f, &v, "user.a changed");
    assert_eq!(f.rescan(), "", "then no change");
}

#[test]
fn an_xattr_change_alone_since_the_start_is_versioned_by_an_event() {
    if !tools_present() {
        return;
    }
    let (f, _cfg) = fixture();
    sh(&format!(
        "setfattr -n user.b -v new {}",
        f.src.join("f").display()
    ));
    // The job's settings are in its job.toml: the vault tools need no config.
    let lines = [event("attrib", "file", Path::new("f"), None)];
    let v = stdout(&snap_changes(&f, &lines, &[]).assert_success())
        .trim()
        .to_owned();
    assert_holds_f(&f, &v, "user.b added");
}
