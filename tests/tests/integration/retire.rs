//! reverb-retire end to end: retirement across many versions, limits, kill -9 at every
//! write step, locking. Every retained version must restore exactly, before and after.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use reverb_common::tree::Lookalikes;
use reverb_common::tree::vault_links;
use reverb_tests::model::{assert_same, capture, without_dir_mtimes};
use reverb_tests::ops::{Tree, index_dirs, opts, unlinked};
use reverb_tests::{Fixture, TestCommand, cmd, sh, stderr, stdout, thinning};

fn retire(f: &Fixture, args: &[&str]) -> TestCommand {
    let mut c = f.tool("reverb-retire");
    c.args(args);
    c
}

/// Every retained version restores to what it captured; the oldest holds no vault links;
/// `reverb-index --check` is clean.
fn verify(f: &Fixture, history: &[(String, Tree)], what: &str) {
    let dirs = index_dirs(f);
    let retained: Vec<_> = history.iter().filter(|(v, _)| dirs.contains(v)).collect();
    assert_eq!(retained.len(), dirs.len(), "{what}: index {dirs:?}");
    for (v, expected) in retained {
        let got = capture(&f.restore(v), opts());
        assert_same(
            &unlinked(expected),
            &unlinked(&got),
            &format!("{what}: {v}"),
        );
    }
    let job = f.job_dir();
    let look = Lookalikes::load(&job).expect("lookalikes");
    let oldest_links = vault_links(&job, &dirs[0], &look).expect("walk");
    assert!(
        oldest_links.is_empty(),
        "{what}: the oldest version {} holds vault links: {oldest_links:?}",
        dirs[0]
    );
    f.check_clean();
}

/// A source tree with depth, a source link, a lookalike link, a read-only directory and a
/// hard-linked pair.
fn seed(src: &Path) {
    fs::create_dir_all(src.join("docs/deep/er/est")).expect("mkdir");
    fs::write(src.join("docs/deep/er/est/leaf.txt"), b"leaf v1").expect("write");
    fs::write(src.join("docs/deep/mid.txt"), b"mid v1").expect("write");
    fs::write(src.join("docs/readme"), b"readme").expect("write");
    fs::create_dir_all(src.join("photos/2020")).expect("mkdir");
    fs::write(src.join("photos/2020/a.jpg"), vec![7u8; 50_000]).expect("write");
    fs::write(src.join("photos/2020/b.jpg"), vec![8u8; 30_000]).expect("write");
    fs::write(src.join("top.txt"), b"top v1").expect("write");
    symlink("docs/readme", src.join("readme-link")).expect("symlink");
    fs::create_dir(src.join("links")).expect("mkdir");
    symlink(
        "../../V1-20200101T000000Z/links/look",
        src.join("links/look"),
    )
    .expect("symlink");
    fs::create_dir(src.join("ro")).expect("mkdir");
    fs::write(src.join("ro/inside"), b"ro").expect("write");
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).expect("chmod");
    fs::write(src.join("hard-a"), b"pair").expect("write");
    fs::hard_link(src.join("hard-a"), src.join("docs/hard-b")).expect("link");
}

type Edit = fn(&Path);

fn edits() -> Vec<Edit> {
    vec![
        |s| fs::write(s.join("docs/deep/er/est/leaf.txt"), b"leaf v2!").expect("write"),
        |s| {
            fs::create_dir_all(s.join("new/x/y")).expect("mkdir");
            fs::write(s.join("new/x/y/file"), b"new").expect("write");
        },
        |s| fs::remove_file(s.join("top.txt")).expect("rm"),
        |s| fs::rename(s.join("docs"), s.join("papers")).expect("mv dir"),
        |s| fs::write(s.join("new/x/y/file"), b"new, edited").expect("write"),
        |s| fs::remove_dir_all(s.join("photos/2020")).expect("rm dir"),
        |s| {
            fs::set_permissions(s.join("papers/readme"), fs::Permissions::from_mode(0o600))
                .expect("chmod")
        },
        |s| fs::rename(s.join("papers/deep/mid.txt"), s.join("new/x/mid.txt")).expect("mv"),
        |s| fs::write(s.join("photos/c.jpg"), vec![9u8; 20_000]).expect("write"),
        |s| fs::write(s.join("papers/deep/er/est/leaf.txt"), b"leaf v3").expect("write"),
    ]
}

fn build_history(f: &Fixture) -> Vec<(String, Tree)> {
    seed(&f.src);
    let mut history = vec![(f.first(), capture(&f.src, opts()))];
    for (i, edit) in edits().iter().enumerate() {
        edit(&f.src);
        let v = f.rescan();
        assert!(!v.is_empty(), "edit {i} made no version");
        history.push((v, capture(&f.src, opts())));
    }
    history
}

#[test]
fn retiring_from_the_oldest_keeps_every_remaining_version_exact() {
    let f = Fixture::new();
    let history = build_history(&f);
    assert!(history.len() >= 9);
    verify(&f, &history, "before any retirement");
    let mut remaining = history.len();
    while remaining > 1 {
        let oldest = index_dirs(&f)[0].clone();
        let o = retire(&f, &["--keep", &(remaining - 1).to_string()]).assert_success();
        let out = stdout(&o);
        let fields: Vec<&str> = out.trim_end().split('\t').collect();
        assert_eq!(fields.len(), 3, "one line per retired version: {out:?}");
        assert_eq!(fields[0], f.job);
        assert_eq!(fields[1], oldest);
        fields[2].parse::<u64>().expect("freed bytes");
        assert!(
            !f.job_dir().join(&oldest).exists(),
            "{oldest} still on disk"
        );
        remaining -= 1;
        verify(&f, &history, &format!("after retiring {oldest}"));
    }
    // The last version is never retired, whatever the count.
    let o = retire(&f, &["--keep", "1"]).assert_success();
    assert_eq!(stdout(&o), "");
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    assert_eq!(
        journal
            .lines()
            .filter(|l| l.contains("\tretire\tretire\t"))
            .count(),
        history.len() - 1
    );
}

fn job_toml(f: &Fixture) -> String {
    fs::read_to_string(f.job_dir().join("job.toml")).expect("job.toml")
}

#[test]
fn keep_and_size_limits_with_one_time_recount() {
    let f = Fixture::new();
    fs::write(f.src.join("stay"), b"unchanged").expect("write");
    let mut history = vec![];
    fs::write(f.src.join("big"), vec![1u8; 100_000]).expect("write");
    history.push((f.first(), capture(&f.src, opts())));
    for i in 2..=6u8 {
        fs::write(f.src.join("big"), vec![i; 100_000 + usize::from(i)]).expect("write");
        history.push((f.rescan(), capture(&f.src, opts())));
    }
    // Dry run: one line per version with the rule that decided and the bytes a retirement
    // frees; nothing written.
    let o = retire(&f, &["--keep", "4", "--dry-run"]).assert_success();
    let lines: Vec<Vec<String>> = stdout(&o)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    for (i, verdict) in [(0, "retire"), (1, "retire")] {
        assert_eq!(lines[i][..4], ["job", &history[i].0, verdict, "no-rule"]);
        let freed: u64 = lines[i][4].parse().expect("freed bytes");
        // An estimate (docs/retirement.md): here half of V1's files are reused by V2.
        assert!(freed > 0, "V{} holds ~100 KB of its own: {freed}", i + 1);
    }
    assert_eq!(lines[2][1..], [&history[2].0, "keep", "keep_versions", "-"]);
    assert_eq!(lines[5][2..4], ["keep", "newest,keep_versions"]);
    assert_eq!(index_dirs(&f).len(), 6, "a dry run writes nothing");

    let o = retire(&f, &["--keep", "4"]).assert_success();
    assert_eq!(stdout(&o).lines().count(), 2);
    assert_eq!(index_dirs(&f).len(), 4);
    verify(&f, &history, "after --keep 4");
    assert!(!job_toml(&f).contains("size_recounted = true"));

    // Size: each version holds ~100 KiB of its own; 250 KB leaves two versions.
    let o = retire(&f, &["--keep", "0", "--max-size", "250kB"]).assert_success();
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    assert_eq!(index_dirs(&f).len(), 2);
    assert!(
        job_toml(&f).contains("size_recounted = true"),
        "{}",
        job_toml(&f)
    );
    let recounts = |f: &Fixture| {
        fs::read_to_string(f.job_dir().join("journal.tsv"))
            .expect("journal")
            .lines()
            .filter(|l| l.split('\t').nth(2) == Some("recount"))
            .count()
    };
    assert_eq!(recounts(&f), 1);
    verify(&f, &history, "after the size limit");

    // Unmeetable: the newest alone is over the limit, so nothing is retired for size:
    // exit 1, the same with --dry-run, journaled, and the history stays.
    let before = index_dirs(&f);
    for args in [&["--max-size", "1"][..], &["--max-size", "1", "--dry-run"]] {
        let o = retire(&f, args).assert_exit(1);
        assert!(
            stderr(&o).contains("size limit unmeetable: the newest version alone needs"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_eq!(index_dirs(&f), before, "{args:?}: nothing retired for size");
    }
    assert_eq!(recounts(&f), 1, "the recount is done once");
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    assert!(
        journal
            .lines()
            .any(|l| l.contains("\terror\t") && l.contains("size limit unmeetable"))
    );
    verify(&f, &history, "after the unmeetable limit");
}

/// The report of issue 15: with `vault_size_limit = "50MiB"`, a new 60 MiB file made
/// retirement delete every older version (freeing almost nothing) and then each new
/// version retire the previous one. The newest alone needs more than the limit: nothing
/// may be retired for size, and the failure must say so.
#[test]
fn an_unmeetable_size_limit_never_wipes_the_history() {
    let f = Fixture::new();
    let mut history = vec![];
    fs::write(f.src.join("notes"), b"v1").expect("write");
    history.push((f.first(), capture(&f.src, opts())));
    for i in 2..=3u8 {
        fs::write(f.src.join("notes"), vec![i; 4096]).expect("write");
        history.push((f.rescan(), capture(&f.src, opts())));
    }
    fs::write(f.src.join("video"), vec![5u8; 60 << 20]).expect("write");
    history.push((f.rescan(), capture(&f.src, opts())));
    for round in 0..2 {
        let o = retire(&f, &["--max-size", "50MiB"]).assert_exit(1);
        let err = stderr(&o);
        assert!(
            err.contains("size limit unmeetable: the newest version alone needs 60.0 MiB"),
            "round {round}: {err}"
        );
        assert_eq!(stdout(&o), "", "round {round}: nothing retired");
        assert_eq!(index_dirs(&f).len(), 4, "round {round}: the history stays");
    }
    // The same limit from the configuration.
    let config = write_config(&f, "vault_size_limit = \"50MiB\"\n");
    let o = retire(&f, &["--config", &config]).assert_exit(1);
    assert!(
        stderr(&o).contains("size limit unmeetable"),
        "{}",
        stderr(&o)
    );
    assert_eq!(index_dirs(&f).len(), 4, "config: the history stays");
    verify(&f, &history, "after the unmeetable limit");
}

/// A configuration file for the fixture's job with these extra settings; its path.
fn write_config(f: &Fixture, settings: &str) -> String {
    let config = f._tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[jobs.{}]\nsource = \"{}\"\nvault = \"{}\"\n{settings}",
            f.job,
            f.src.display(),
            f.vault.display()
        ),
    )
    .expect("config");
    config.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn rules_from_the_configuration_and_bad_values_exit_2_retiring_nothing() {
    let f = Fixture::new();
    let history = build_history(&f);
    let n = history.len();
    for (bad, key) in [
        ("keep_hourly = -1\n", "keep_hourly"),
        ("keep_daily = 2.5\n", "keep_daily"),
        ("keep_within = \"ages\"\n", "keep_within"),
    ] {
        let config = write_config(&f, bad);
        for extra in [&[][..], &["--dry-run"]] {
            let mut c = f.tool("reverb-retire");
            c.args(["--config", &config]).args(extra);
            let o = c.assert_exit(2);
            let err = stderr(&o);
            assert!(
                err.contains(key) && err.contains("config.toml"),
                "{bad}: {err}"
            );
        }
        assert_eq!(index_dirs(&f).len(), n, "{bad}: nothing retired");
    }
    // The defaults keep everything this young (keep_within = 1h).
    let config = write_config(&f, "");
    retire(&f, &["--config", &config]).assert_success();
    assert_eq!(index_dirs(&f).len(), n);
    // Rules from the configuration: the newest three, nothing by time.
    let config = write_config(
        &f,
        "keep_versions = 3\nkeep_within = \"0s\"\nkeep_hourly = 0\nkeep_daily = 0\n\
         keep_weekly = 0\nkeep_monthly = 0\n",
    );
    retire(&f, &["--config", &config]).assert_success();
    assert_eq!(index_dirs(&f).len(), 3);
    verify(&f, &history, "after the configured rules");
    // Bad flags: usage errors naming the flag.
    for (flag, value) in [
        ("--keep-daily", "-1"),
        ("--keep-within", "soon"),
        ("--keep-hourly", "2.5"),
    ] {
        let o = retire(&f, &[flag, value]).assert_exit(2);
        assert!(stderr(&o).contains(flag), "{flag}: {}", stderr(&o));
    }
    assert_eq!(index_dirs(&f).len(), 3);
}

#[test]
fn kill_9_at_every_write_step_leaves_every_version_readable_and_resumable() {
    let f = Fixture::new();
    let history = build_history(&f);
    // Retire the oldest three at once, so step counts cover several retirements.
    let keep = (history.len() - 3).to_string();
    kill_9_sweep(&f, &history, &["--keep", &keep], history.len() - 3);
}

#[test]
fn kill_9_at_every_write_step_of_a_thinning() {
    let f = Fixture::new();
    let history = build_history(&f);
    // Three middle versions, two of them neighbours, and the oldest.
    let gone = thinning::arrange_hours(&f, |i, _| ![0, 3, 6, 7].contains(&i));
    assert_eq!(gone.len(), 4);
    kill_9_sweep(
        &f,
        &history,
        &["--keep-hourly", "100000"],
        history.len() - 4,
    );
}

/// No temporary name (`.tmp-…`) anywhere in the job folder outside `.tmp/`, versions
/// included.
fn assert_no_temporaries(f: &Fixture, what: &str) {
    let o = TestCommand::program("find")
        .arg(f.job_dir())
        .args([
            "-path", "*/.tmp", "-prune", "-o", "-name", ".tmp-*", "-print",
        ])
        .assert_success();
    assert_eq!(stdout(&o), "", "{what}: stray temporaries");
}

/// Runs `reverb-retire ARGS` (which leaves `remaining` versions) killed after k write
/// steps, for every k until a run finishes: after each kill every indexed version (but
/// the one marked) restores exactly, and the next run finishes the work exactly.
fn kill_9_sweep(f: &Fixture, history: &[(String, Tree)], args: &[&str], remaining: usize) {
    let pristine = f._tmp.path().join("pristine");
    sh(&format!(
        "cp -a {} {}",
        f.vault.display(),
        pristine.display()
    ));
    let reset = || {
        sh(&format!(
            "rm -rf {v} && cp -a {p} {v}",
            v = f.vault.display(),
            p = pristine.display()
        ))
    };
    let mut finished = false;
    for k in 1..=400u32 {
        reset();
        let o = cmd("reverb-retire")
            .env("REVERB_FAULT_AFTER", k.to_string())
            .arg("--vault")
            .arg(&f.vault)
            .arg("--job")
            .arg(&f.job)
            .args(args)
            .output();
        if o.status.success() {
            finished = true;
            eprintln!("retirement of 3 versions finished without a fault at k={k}");
            assert!(k > 10, "a retirement has more than {k} write steps");
            verify(f, history, &format!("k={k}: no fault"));
            break;
        }
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGKILL),
            "k={k}: expected death by SIGKILL: {}",
            stderr(&o)
        );
        // Right after the crash: every version the index still lists, except one being
        // retired, restores exactly.
        let marked = job_toml(f).lines().find_map(|l| {
            l.strip_prefix("retiring = ")
                .map(|v| v.trim_matches('"').to_owned())
        });
        let dirs = index_dirs(f);
        for (v, expected) in history.iter().filter(|(v, _)| dirs.contains(v)) {
            if Some(v) == marked.as_ref() {
                continue;
            }
            // Exact but for directory mtimes, which the next run puts back from the
            // retirement's record (checked after it).
            let got = capture(&f.restore(v), opts());
            assert_same(
                &without_dir_mtimes(&unlinked(expected)),
                &without_dir_mtimes(&unlinked(&got)),
                &format!("k={k}: {v} after the kill"),
            );
            assert_no_temporaries(f, &format!("k={k}"));
        }
        // The next run finishes the work.
        retire(f, args).assert_success();
        assert_eq!(index_dirs(f).len(), remaining, "k={k}");
        assert!(
            !f.job_dir().join("retiring.tsv").exists(),
            "k={k}: record left"
        );
        assert_no_temporaries(f, &format!("k={k}: resumed"));
        let tmp = f.job_dir().join(".tmp");
        let left: Vec<_> = fs::read_dir(&tmp)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "k={k}: left in .tmp/: {left:?}");
        assert!(!job_toml(f).contains("retiring"), "k={k}: mark left");
        verify(f, history, &format!("k={k}: resumed"));
    }
    assert!(finished, "the retirement never finished without a fault");
}

#[test]
fn thinning_retires_middle_versions_and_every_other_stays_exact() {
    let f = Fixture::new();
    let history = build_history(&f);
    verify(&f, &history, "before thinning");
    // Round 1: every other version; the dry run says so first, with the rule and bytes.
    let gone = thinning::arrange_hours(&f, |i, _| i % 2 == 1);
    let o = retire(&f, &["--keep-hourly", "100000", "--dry-run", "--json"]).assert_success();
    let plan: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(plan.len(), history.len());
    for p in &plan {
        let dir = p["dir"].as_str().expect("dir");
        let retired = gone.iter().any(|g| g == dir);
        assert_eq!(p["action"], if retired { "retire" } else { "keep" }, "{p}");
        let rule = if retired {
            "no-rule"
        } else if dir == history.last().expect("newest").0 {
            "newest,keep_hourly"
        } else {
            "keep_hourly"
        };
        assert_eq!(p["rule"], rule, "{p}");
        assert_eq!(
            p["freed_bytes"].as_u64().is_some_and(|b| b > 0),
            retired,
            "{p}"
        );
    }
    let o = retire(&f, &["--keep-hourly", "100000"]).assert_success();
    let out: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.split('\t').nth(1).expect("dir").to_owned())
        .collect();
    assert_eq!(out, gone, "one line per retired version, oldest first");
    verify(&f, &history, "after thinning every other version");
    // Round 2: the oldest and a middle one of what is left.
    let gone = thinning::arrange_hours(&f, |i, _| i != 0 && i != 2);
    retire(&f, &["--keep-hourly", "100000"]).assert_success();
    assert!(gone.iter().all(|g| !index_dirs(&f).contains(g)));
    verify(&f, &history, "after the second thinning");
    // The rule set of a run is the flags': `--keep 2` is the newest two, whatever else.
    retire(&f, &["--keep", "2"]).assert_success();
    assert_eq!(index_dirs(&f).len(), 2);
    verify(&f, &history, "after --keep 2");
}

#[test]
fn a_held_lock_makes_no_wait_exit_75_and_bad_flags_exit_2() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    f.first();
    fs::write(f.src.join("a"), b"b").expect("write");
    f.rescan();
    let lock = reverb_common::lock::JobLock::acquire(
        &f.job_dir().join("lock"),
        "job",
        reverb_common::lock::Wait::NoWait,
    )
    .expect("lock");
    let o = retire(&f, &["--keep", "1", "--no-wait"]).assert_exit(75);
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    drop(lock);
    assert_eq!(index_dirs(&f).len(), 2, "nothing retired while locked");

    let o = retire(&f, &["--max-size", "lots"]).assert_exit(2);
    assert!(stderr(&o).contains("--max-size"), "{}", stderr(&o));
    let o = retire(&f, &["--keep", "x"]).assert_exit(2);
    assert!(stderr(&o).contains("--keep"), "{}", stderr(&o));
    let o = retire(&f, &["--keep", "0"]).assert_exit(0);
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    assert_eq!(index_dirs(&f).len(), 2);

    let o = cmd("reverb-retire")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "nope", "--keep", "1"])
        .assert_exit(2);
    assert!(stderr(&o).contains("unknown job"), "{}", stderr(&o));
    cmd("reverb-retire")
        .arg("--vault")
        .arg(f._tmp.path().join("unplugged"))
        .args(["--keep", "1"])
        .assert_exit(75);

    // Without --job: every job of the vault, and one line per retired version.
    let o = cmd("reverb-retire")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--keep", "1", "--json"])
        .assert_success();
    let out = stdout(&o);
    assert!(out.contains("\"type\":\"retired\""), "{out}");
    assert_eq!(index_dirs(&f).len(), 1);
    f.check_clean();
}

/// Two jobs of one configuration may share a folder name in different vaults (`my docs`
/// and `my_docs` both sanitize to `my_docs`); each is retired by its own rules.
#[test]
fn jobs_sharing_a_folder_in_two_vaults_keep_their_own_rules() {
    let f = Fixture::new();
    let root = f._tmp.path();
    let rules = "keep_within = \"0s\"\nkeep_hourly = 0\nkeep_daily = 0\nkeep_weekly = 0\n\
                 keep_monthly = 0\nkeep_yearly = 0\n";
    let config = root.join("two-vaults.toml");
    let mut text = String::new();
    for (name, keep) in [("my docs", 100), ("my_docs", 1)] {
        let (src, vault) = (
            root.join(format!("src {keep}")),
            root.join(format!("vault {keep}")),
        );
        fs::create_dir_all(&src).expect("mkdir");
        text.push_str(&format!(
            "[jobs.\"{name}\"]\nsource = \"{}\"\nvault = \"{}\"\nkeep_versions = {keep}\n{rules}",
            src.display(),
            vault.display()
        ));
    }
    fs::write(&config, text).expect("config");
    for keep in [100, 1] {
        let src = root.join(format!("src {keep}"));
        let name = if keep == 100 { "my docs" } else { "my_docs" };
        for round in 0..3 {
            fs::write(src.join("f"), format!("round {round}")).expect("write");
            let mut c = reverb_tests::cmd("reverb-snap");
            c.args(["--config", config.to_str().expect("utf-8"), "--job", name]);
            if round == 0 {
                c.arg("--init");
            }
            c.assert_success();
        }
    }
    let mut c = reverb_tests::cmd("reverb-retire");
    c.args(["--config", config.to_str().expect("utf-8")]);
    c.assert_success();
    let versions = |keep: u32| {
        fs::read_to_string(root.join(format!("vault {keep}/my_docs/index.tsv")))
            .expect("index")
            .lines()
            .count()
            - 1
    };
    assert_eq!(versions(100), 3, "keep_versions = 100 retired versions");
    assert_eq!(versions(1), 1, "keep_versions = 1 kept more than one");
}
