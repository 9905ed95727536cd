//! The porcelain as the README uses it: an ad-hoc `run --source --vault` job seen with
//! `--vault`, `history` path forms, `find`, `restore JOB` with `--config` or `--vault`.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reverb_tests::model::{CaptureOpts, assert_same, capture};
use reverb_tests::{Fixture, TestCommand, cmd, stderr, stdout};

/// `reverberator ARGS` with no configuration anywhere (no variable, an empty home).
fn porcelain(home: &Path, args: &[&str]) -> TestCommand {
    let mut c = cmd("reverberator");
    c.env_remove("REVERBERATOR_CONFIG")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg"))
        .args(args);
    c
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// `reverberator history job PATH --json --vault VAULT`, its records.
fn history_of(home: &Path, vault: &str, path: &str) -> Vec<serde_json::Value> {
    let o = porcelain(home, &["history", "job", path, "--json", "--vault", vault]).assert_success();
    json_lines(&stdout(&o))
}

#[test]
fn an_ad_hoc_job_is_seen_with_vault_and_history_find_restore_work() {
    let f = Fixture::new();
    let home = f._tmp.path().join("home");
    fs::create_dir_all(&home).expect("mkdir");
    fs::write(f.src.join("notes.txt"), b"one").expect("write");
    fs::create_dir(f.src.join("sub")).expect("mkdir");
    fs::write(f.src.join("sub/deep.txt"), b"deep").expect("write");
    fs::write(f.src.join("odd\tname.txt"), b"tab").expect("write");
    // The README flow: run --source --vault, then status.
    let mut sup = porcelain(&home, &["run", "--init", "--source"])
        .arg(&f.src)
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "job"])
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let index = f.job_dir().join("index.tsv");
    let end = Instant::now() + Duration::from_secs(30);
    while fs::read_to_string(&index)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < end, "no first version");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = porcelain(&home, &["status"]).assert_exit(2);
    assert!(
        stderr(&o).contains("--config") && stderr(&o).contains("--vault"),
        "the error names both ways: {}",
        stderr(&o)
    );
    let o = porcelain(&home, &["status", "--vault"])
        .arg(&f.vault)
        .output();
    assert!(stdout(&o).starts_with("job: "), "{}", stdout(&o));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    assert!(sup.wait().expect("wait").success());
    // Two more versions: notes.txt changes, then goes.
    fs::write(f.src.join("notes.txt"), b"two").expect("write");
    assert!(!f.rescan().is_empty());
    fs::remove_file(f.src.join("notes.txt")).expect("rm");
    assert!(!f.rescan().is_empty());
    let vault = f.vault.to_str().expect("utf-8");
    let history = |path: &str| {
        history_of(&home, vault, path)
            .iter()
            .map(|h| h["change"].as_str().expect("change").to_owned())
            .collect::<Vec<_>>()
    };
    let abs = f.src.join("notes.txt");
    for form in ["notes.txt", "./notes.txt", abs.to_str().expect("utf-8")] {
        assert_eq!(history(form), ["added", "modified", "deleted"], "{form}");
    }
    // As diff and find print it (escaped).
    assert_eq!(history("odd\\tname.txt"), ["added"]);
    assert_eq!(history("odd\tname.txt"), ["added"]);
    let o = porcelain(&home, &["history", "job", "never-there", "--vault", vault]).assert_exit(1);
    assert!(
        stderr(&o).contains("not in any retained version"),
        "{}",
        stderr(&o)
    );
    // find: names at any depth, deleted ones too.
    let o =
        porcelain(&home, &["find", "job", "*.txt", "--json", "--vault", vault]).assert_success();
    let found = json_lines(&stdout(&o));
    let by_path = |p: &str| {
        found
            .iter()
            .find(|f| f["path"] == p)
            .unwrap_or_else(|| panic!("{p} not found: {found:?}"))
            .clone()
    };
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(by_path("notes.txt")["versions"], serde_json::json!([1, 2]));
    assert_eq!(by_path("notes.txt")["deleted"], true);
    assert_eq!(
        by_path("sub/deep.txt")["versions"],
        serde_json::json!([1, 2, 3])
    );
    assert_eq!(by_path("odd\\tname.txt")["deleted"], false);
    let o = porcelain(&home, &["find", "job", "sub/*.txt", "--vault", vault]).assert_success();
    assert_eq!(stdout(&o).trim(), "sub/deep.txt\tin 1,2,3");
    porcelain(&home, &["find", "job", "*.nothing", "--vault", vault]).assert_exit(1);
    // restore JOB, with --vault and with --config.
    let config = f._tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[jobs.job]\nsource = \"{}\"\nvault = \"{vault}\"\n",
            f.src.display()
        ),
    )
    .expect("config");
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: false,
    };
    for (i, way) in [
        ["--vault", vault],
        ["--config", config.to_str().expect("utf-8")],
    ]
    .iter()
    .enumerate()
    {
        let dest = f._tmp.path().join(format!("dest{i}"));
        porcelain(&home, &["restore", "job"])
            .args(way)
            .arg("--to")
            .arg(&dest)
            .assert_success();
        assert_same(&capture(&f.src, opts), &capture(&dest, opts), way[0]);
    }
    // The first version, by number, through the porcelain and --config before the job.
    let dest = f._tmp.path().join("dest-v1");
    porcelain(&home, &["restore", "--config"])
        .arg(&config)
        .args(["job", "--from", "1", "--to"])
        .arg(&dest)
        .assert_success();
    assert_eq!(fs::read(dest.join("notes.txt")).expect("read"), b"one");
}

/// `history` of a symlink lists the versions where it changed, not every version whose
/// folder was real (a version holds the source links of such a folder itself): the links'
/// own `stat` and `readlink` decide, as they would for a reader comparing versions.
#[test]
fn history_of_a_symlink_lists_only_the_versions_where_it_changed() {
    let f = Fixture::new();
    let home = f._tmp.path().join("home");
    fs::create_dir_all(f.src.join("sub")).expect("mkdir");
    fs::write(f.src.join("notes.txt"), b"one").expect("write");
    std::os::unix::fs::symlink("notes.txt", f.src.join("link")).expect("symlink");
    std::os::unix::fs::symlink("../notes.txt", f.src.join("sub/up")).expect("symlink");
    f.first();
    // Three versions that change only a file beside the links.
    for text in ["two", "three", "four"] {
        fs::write(f.src.join("notes.txt"), text).expect("write");
        assert!(!f.rescan().is_empty());
        fs::write(f.src.join("sub/other"), text).expect("write");
        assert!(!f.rescan().is_empty());
    }
    // The link's own times change (an attribute change), then its text.
    TestCommand::program("touch")
        .args(["-h", "-d", "2001-02-03 04:05:06"])
        .arg(f.src.join("link"))
        .assert_success();
    assert!(!f.rescan().is_empty());
    fs::remove_file(f.src.join("link")).expect("rm");
    std::os::unix::fs::symlink("sub/other", f.src.join("link")).expect("symlink");
    assert!(!f.rescan().is_empty());
    let vault = f.vault.to_str().expect("utf-8");
    let history = |path: &str| {
        history_of(&home, vault, path)
            .iter()
            .map(|h| {
                (
                    h["version"].as_u64().expect("version"),
                    h["change"].as_str().expect("change").to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let added = (1, "added".to_owned());
    assert_eq!(
        history("link"),
        [
            added.clone(),
            (8, "modified".to_owned()),
            (9, "modified".to_owned())
        ]
    );
    assert_eq!(history("sub/up"), [added]);
    assert_eq!(
        history("notes.txt").len(),
        4,
        "the file's own changes are all listed"
    );
    // diff says the same: the times of the link are an attribute, its text is not.
    let diff = |a: &str, b: &str| {
        let o =
            porcelain(&home, &["diff", "job", a, b, "--json", "--vault", vault]).assert_success();
        json_lines(&stdout(&o))
            .iter()
            .map(|d| {
                (
                    d["change"].as_str().expect("change").to_owned(),
                    d["path"].as_str().expect("path").to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let one = |change: &str| vec![(change.to_owned(), "link".to_owned())];
    assert_eq!(diff("7", "8"), one("attributes"));
    assert_eq!(diff("8", "9"), one("modified"));
    assert_eq!(
        diff("4", "5"),
        vec![("modified".to_owned(), "sub/other".to_owned())]
    );
}
