//! The configuration's unit tests: lookup, merging, and one error per bad key.

use super::lookup::{LookupEnv, locate_in};
use super::*;
use crate::vault::job::resolve_nearest;
use std::time::Duration;

const FILE: &str = "/etc/reverberator/test.toml";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("src")).expect("mkdir");
        fs::create_dir(dir.path().join("src2")).expect("mkdir");
        fs::create_dir(dir.path().join("backup")).expect("mkdir");
        fs::write(dir.path().join("plain"), "x").expect("write");
        Fixture { dir }
    }

    fn root(&self) -> String {
        self.dir.path().to_str().expect("utf-8 tempdir").to_string()
    }

    /// Parses `text` with `{root}` replaced by the fixture's directory.
    fn parse(&self, text: &str) -> Result<Config> {
        parse(&text.replace("{root}", &self.root()), Path::new(FILE))
    }

    /// Asserts `text` fails with one usage line naming the file and every part.
    fn fails(&self, text: &str, parts: &[&str]) -> String {
        let err = self.parse(text).expect_err("should fail");
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "one line: {msg}");
        assert!(msg.contains(FILE), "names the file: {msg}");
        for part in parts {
            assert!(msg.contains(part), "`{part}` missing from: {msg}");
        }
        msg
    }
}

const GOOD: &str = r#"
[defaults]
vault = "{root}/backup"
keep_versions = 5
exclude = ["*.swp"]

[jobs.docs]
source = "{root}/src"
keep_versions = 7
min_snapshot_time = "1m"

[jobs.code]
source = "{root}/src2"
vault_size_limit = "2GiB"
"#;

#[test]
fn defaults_merge_key_by_key() {
    let f = Fixture::new();
    let c = f.parse(GOOD).expect("valid");
    assert_eq!(c.file, Path::new(FILE));
    let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["code", "docs"], "sorted by name");
    let docs = c.job("docs").expect("docs");
    assert_eq!(docs.folder, "docs");
    assert_eq!(docs.vault, Path::new(&format!("{}/backup", f.root())));
    assert_eq!(docs.settings.keep_versions, 7, "job overrides defaults");
    assert_eq!(docs.settings.exclude, ["*.swp"], "inherited");
    assert_eq!(docs.settings.min_snapshot_time, Duration::from_secs(60));
    assert_eq!(docs.settings.max_snapshot_delay, Duration::from_secs(600));
    let code = c.job("code").expect("code");
    assert_eq!(code.settings.keep_versions, 5, "inherited");
    assert_eq!(code.settings.vault_size_limit, Some(2 << 30));
    assert_eq!(code.settings.min_snapshot_time, Duration::from_secs(30));
    assert!(code.settings.keep_complete);
}

#[test]
fn empty_file_has_no_jobs() {
    let f = Fixture::new();
    assert!(f.parse("").expect("valid").jobs.is_empty());
}

#[test]
fn render_resolved_parses_back() {
    let f = Fixture::new();
    let c = f.parse(GOOD).expect("valid");
    let text = render_resolved(&c);
    assert!(text.contains("# folder: docs"), "{text}");
    assert!(text.contains("keep_versions = 7"), "{text}");
    let back = parse(&text, Path::new(FILE)).expect("resolved text parses");
    assert_eq!(back.jobs, c.jobs);
}

#[test]
fn syntax_error_and_duplicate_job() {
    let f = Fixture::new();
    f.fails("[jobs.a\nsource = 1", &["line 1", "TOML syntax"]);
    let dup =
        "[jobs.a]\nsource = \"{root}/src\"\nvault = \"/v\"\n\n[jobs.a]\nsource = \"{root}/src\"\n";
    f.fails(dup, &["line 5", "TOML syntax", "duplicate", "`[jobs.a]`"]);
}

#[test]
fn unknown_keys() {
    let f = Fixture::new();
    f.fails("colour = 1\n", &["top level", "key `colour`", "line 1"]);
    let msg = f.fails(
        "[defaults]\nkeep_versionz = 3\n",
        &[
            "[defaults]",
            "key `keep_versionz`",
            "line 2",
            "known keys",
            "vault",
        ],
    );
    assert!(
        !msg.contains("source"),
        "[defaults] refuses `source`, so its known keys do not offer it: {msg}"
    );
    f.fails(
        "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\nkeep_versionz = 3\n",
        &[
            "job `docs`",
            "key `keep_versionz`",
            "line 4",
            "did you mean `keep_versions`?",
        ],
    );
    f.fails(
        "[defaults]\nsource = \"{root}/src\"\n",
        &["[defaults]", "key `source`", "not allowed in [defaults]"],
    );
    f.fails("jobs = 3\n", &["top level", "key `jobs`", "not an integer"]);
    f.fails("[jobs]\ndocs = 3\n", &["job `docs`", "line 2", "table"]);
}

#[test]
fn wrong_types() {
    let f = Fixture::new();
    let base = "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\n";
    f.fails(
        &format!("{base}keep_versions = \"many\"\n"),
        &["job `docs`", "key `keep_versions`", "line 4"],
    );
    f.fails(
        &format!("{base}keep_complete = 1\n"),
        &["job `docs`", "key `keep_complete`", "line 4"],
    );
    f.fails(
        &format!("{base}exclude = \"*.swp\"\n"),
        &["job `docs`", "key `exclude`", "line 4"],
    );
    f.fails(
        "[jobs.docs]\nsource = 7\nvault = \"/v\"\n",
        &["job `docs`", "key `source`", "line 2", "string"],
    );
    f.fails(
        "[defaults]\nkeep_versions = -1\n",
        &["[defaults]", "key `keep_versions`", "line 2"],
    );
}

#[test]
fn bad_source() {
    let f = Fixture::new();
    f.fails(
        "[jobs.docs]\nvault = \"/v\"\n",
        &["job `docs`", "key `source`", "missing"],
    );
    f.fails(
        "[jobs.docs]\nsource = \"src\"\nvault = \"/v\"\n",
        &["job `docs`", "key `source`", "line 2", "relative"],
    );
    // A missing source is runtime state: no error, a warning.
    let cfg = f
        .parse("[jobs.docs]\nsource = \"{root}/nope\"\nvault = \"/v\"\n")
        .expect("a missing source is not a configuration error");
    let w = warnings(&cfg, false);
    assert!(
        w.iter().any(|l| l.contains("nope") && l.contains("paused")),
        "{w:?}"
    );
    f.fails(
        "[jobs.docs]\nsource = \"{root}/nope\"\nvault = \"{root}/nope/v\"\n",
        &["job `docs`", "key `vault`", "inside the source"],
    );
    f.fails(
        "[jobs.docs]\nsource = \"{root}/plain\"\nvault = \"/v\"\n",
        &["job `docs`", "key `source`", "not a directory"],
    );
}

#[test]
fn bad_vault() {
    let f = Fixture::new();
    f.fails(
        "[jobs.docs]\nsource = \"{root}/src\"\n",
        &["job `docs`", "key `vault`", "missing"],
    );
    f.fails(
        "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"backup\"\n",
        &["job `docs`", "key `vault`", "line 3", "relative"],
    );
    f.fails(
        "[defaults]\nvault = \"backup\"\n",
        &["[defaults]", "key `vault`", "line 2", "relative"],
    );
    // The vault does not exist yet, and is reached through `..` and a symlink.
    std::os::unix::fs::symlink(f.dir.path().join("src"), f.dir.path().join("alias"))
        .expect("symlink");
    f.fails(
        "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}/alias/x/../new/vault\"\n",
        &["job `docs`", "key `vault`", "line 3", "inside the source"],
    );
    f.fails(
        "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}\"\n",
        &["job `docs`", "key `source`", "line 2", "inside the vault"],
    );
    f.fails(
        "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}/src\"\n",
        &["job `docs`", "key `vault`", "inside the source"],
    );
    f.fails(
        "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}/plain\"\n",
        &["job `docs`", "key `vault`", "line 3", "not a directory"],
    );
    // A vault inside another job's source.
    f.fails(
        "[defaults]\nvault = \"{root}/src2/v\"\n[jobs.docs]\nsource = \"{root}/src\"\n\
         [jobs.other]\nsource = \"{root}/src2\"\nvault = \"{root}/backup\"\n",
        &["job `docs`", "key `vault`", "line 2", "job `other`"],
    );
    // A sibling whose name merely starts with the source's is fine.
    f.parse("[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}/src-vault\"\n")
        .expect("sibling vault is not inside");
}

#[test]
fn bad_names_and_folders() {
    let f = Fixture::new();
    f.fails(
        "[jobs.\"..\"]\nsource = \"{root}/src\"\nvault = \"/v\"\n",
        &["job `..`", "line 1", "cannot be a folder"],
    );
    f.fails(
        "[jobs.\"\"]\nsource = \"{root}/src\"\nvault = \"/v\"\n",
        &["job ``", "cannot be a folder"],
    );
    let clash = "[defaults]\nvault = \"/v\"\n[jobs.\"my docs\"]\nsource = \"{root}/src\"\n\
                 [jobs.my_docs]\nsource = \"{root}/src2\"\n";
    f.fails(
        clash,
        &["job `my_docs`", "`my docs`", "folder `my_docs`", "line 5"],
    );
    // The same folder in two different vaults is fine.
    let apart = "[jobs.\"my docs\"]\nsource = \"{root}/src\"\nvault = \"/v1\"\n\
                 [jobs.my_docs]\nsource = \"{root}/src2\"\nvault = \"/v2\"\n";
    f.parse(apart).expect("different vaults");
}

#[test]
fn two_jobs_of_one_source_and_vault_are_refused() {
    let f = Fixture::new();
    let twice = "[jobs.a]\nsource = \"{root}/src\"\nvault = \"/v\"\n\
                 [jobs.b]\nsource = \"{root}/src/\"\nvault = \"/v\"\n";
    f.fails(
        twice,
        &["job `b`", "key `source`", "jobs `a` and `b` both back up"],
    );
    let two_vaults = "[jobs.a]\nsource = \"{root}/src\"\nvault = \"/v1\"\n\
                      [jobs.b]\nsource = \"{root}/src\"\nvault = \"/v2\"\n";
    f.parse(two_vaults)
        .expect("one source into two vaults is a choice");
}

#[test]
fn bad_durations_and_sizes() {
    let f = Fixture::new();
    let base = "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\n";
    f.fails(
        &format!("{base}min_snapshot_time = \"soon\"\n"),
        &["job `docs`", "key `min_snapshot_time`", "line 4", "soon"],
    );
    f.fails(
        &format!("{base}vault_size_limit = \"5 parsecs\"\n"),
        &["job `docs`", "key `vault_size_limit`", "line 4", "parsecs"],
    );
    f.fails(
        "[defaults]\nmax_snapshot_delay = \"later\"\n",
        &["[defaults]", "key `max_snapshot_delay`", "line 2", "later"],
    );
    // A negative size says so, whether written as a number or as text.
    for (line, shown) in [
        (
            "vault_size_limit = -5",
            "an integer `-5` given, which is negative",
        ),
        ("vault_size_limit = \"-5GiB\"", "cannot be negative"),
        (
            "keep_daily = -2",
            "an integer `-2` given, which is negative",
        ),
    ] {
        let msg = f.fails(&format!("{base}{line}\n"), &["job `docs`", "line 4", shown]);
        assert!(!msg.contains("untagged enum"), "no serde jargon: {msg}");
    }
}

#[test]
fn validation_failures() {
    let f = Fixture::new();
    let base = "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\n";
    f.fails(
        &format!("{base}max_delete_ratio = 1.5\n"),
        &["job `docs`", "key `max_delete_ratio`", "line 4"],
    );
    let glob = f.fails(
        &format!("{base}exclude = [\"a[\"]\n"),
        &["job `docs`", "key `exclude`", "line 4", "a["],
    );
    assert!(!glob.contains("**/"), "not the rewritten glob: {glob}");
    let typed = f.fails(
        &format!("{base}keep_versions = \"3\"\n"),
        &["key `keep_versions`", "the string \"3\"", "whole number"],
    );
    assert!(!typed.contains("u64"), "{typed}");
    f.fails(
        &format!("{base}min_snapshot_time = \"abc\"\n"),
        &["key `min_snapshot_time`", "a number and a unit"],
    );
    // min from the defaults, max from the job: the job is named, the key's line is found.
    f.fails(
        "[defaults]\nmin_snapshot_time = \"20m\"\n[jobs.docs]\nsource = \"{root}/src\"\n\
         vault = \"/v\"\nmax_snapshot_delay = \"10m\"\n",
        &["job `docs`", "key `min_snapshot_time`", "line 2"],
    );
    f.fails(
        &format!("{base}min_snapshot_time = \"0s\"\nmax_snapshot_delay = \"0s\"\n"),
        &["job `docs`", "key `min_snapshot_time`", "both zero"],
    );
}

#[test]
fn ad_hoc_jobs() {
    let f = Fixture::new();
    let src = f.dir.path().join("src");
    let vault = f.dir.path().join("backup/v");
    let job = ad_hoc(&src, &vault, None).expect("valid");
    assert_eq!(job.name, "src");
    assert_eq!(job.folder, "src");
    assert_eq!(job.settings, JobSettings::default());
    let job = ad_hoc(&src, &vault, Some("my docs")).expect("valid");
    assert_eq!(job.folder, "my_docs");
    assert_eq!(default_name(Path::new("/")), "root");
    let err = ad_hoc(&src, &src.join("v"), None).expect_err("inside");
    assert!(err.to_string().contains("key `vault`"), "{err}");
    let err = ad_hoc(&f.dir.path().join("nope"), &vault, None).expect_err("missing");
    assert!(err.to_string().contains("key `source`"), "{err}");
}

#[test]
fn non_utf8_source() {
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    let odd = f.dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::create_dir(&odd).expect("mkdir");
    let err = ad_hoc(&odd, &f.dir.path().join("backup"), None).expect_err("not utf-8");
    let msg = err.to_string();
    assert!(
        msg.contains("key `source`") && msg.contains("UTF-8"),
        "{msg}"
    );
    assert!(msg.contains("caf\\xe9") || msg.contains("caf"), "{msg}");
    // Through a symlink in the config file.
    std::os::unix::fs::symlink(&odd, f.dir.path().join("link")).expect("symlink");
    f.fails(
        "[jobs.docs]\nsource = \"{root}/link\"\nvault = \"/v\"\n",
        &["job `docs`", "key `source`", "UTF-8"],
    );
}

#[test]
fn nearest_real_path_of_missing_paths() {
    let f = Fixture::new();
    let real = fs::canonicalize(f.dir.path()).expect("canonical");
    let p = f.dir.path().join("a/b/../c/./d");
    assert_eq!(resolve_nearest(&p).expect("prefix"), real.join("a/c/d"));
    assert_eq!(
        resolve_nearest(&f.dir.path().join("src")).expect("prefix"),
        real.join("src")
    );
}

fn env(root: &Path) -> LookupEnv {
    LookupEnv {
        reverberator_config: None,
        xdg_config_home: None,
        home: None,
        system_config: root.join("etc/config.toml"),
    }
}

#[test]
fn lookup_order() {
    let f = Fixture::new();
    let root = f.dir.path();
    let make = |rel: &str| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, "").expect("write");
        p
    };
    let system = make("etc/config.toml");
    let home_file = make("home/.config/reverberator/config.toml");
    let xdg_file = make("xdg/reverberator/config.toml");
    let var_file = make("var.toml");
    let flag_file = make("flag.toml");

    let mut e = env(root);
    assert_eq!(locate_in(None, &e).expect("system"), system);
    e.home = Some(root.join("home").into());
    assert_eq!(locate_in(None, &e).expect("home"), home_file);
    e.xdg_config_home = Some("relative/ignored".into());
    assert_eq!(
        locate_in(None, &e).expect("relative xdg ignored"),
        home_file
    );
    e.xdg_config_home = Some(root.join("xdg").into());
    assert_eq!(locate_in(None, &e).expect("xdg"), xdg_file);
    e.reverberator_config = Some(var_file.clone().into());
    assert_eq!(locate_in(None, &e).expect("var"), var_file);
    assert_eq!(locate_in(Some(&flag_file), &e).expect("flag"), flag_file);

    // Named files must exist: no silent fallback.
    let err = locate_in(Some(&root.join("missing.toml")), &e).expect_err("missing");
    assert!(err.to_string().contains("--config"), "{err}");
    e.reverberator_config = Some(root.join("gone.toml").into());
    let err = locate_in(None, &e).expect_err("missing");
    assert!(err.to_string().contains("REVERBERATOR_CONFIG"), "{err}");

    // Nothing anywhere: every place tried is listed.
    let mut e = env(&root.join("nowhere"));
    e.xdg_config_home = Some(root.join("empty").into());
    let err = locate_in(None, &e).expect_err("none");
    let msg = err.to_string();
    assert!(matches!(err, Error::Usage(_)));
    assert!(msg.contains("empty/reverberator/config.toml"), "{msg}");
    assert!(msg.contains("nowhere/etc/config.toml"), "{msg}");
}

#[test]
fn load_reads_the_file() {
    let f = Fixture::new();
    let path = f.dir.path().join("config.toml");
    fs::write(&path, GOOD.replace("{root}", &f.root())).expect("write");
    let c = load(&path).expect("valid");
    assert_eq!(c.file, path);
    assert_eq!(c.jobs.len(), 2);
    let err = load(&f.dir.path().join("none.toml")).expect_err("missing");
    assert!(matches!(err, Error::Usage(_)), "{err:?}");
    fs::write(&path, b"# caf\xe9\n").expect("write");
    let err = load(&path).expect_err("binary");
    assert!(err.to_string().contains("UTF-8"), "{err}");
}

#[test]
fn retention_rules_and_their_bad_values() {
    let f = Fixture::new();
    let base = "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\n";
    let c = f
        .parse(&format!(
            "[defaults]\nkeep_daily = 30\n{base}keep_within = \"2h 30m\"\nkeep_yearly = 5\n"
        ))
        .expect("valid");
    let r = c.job("docs").expect("docs").settings.rules();
    assert_eq!(r.within, Duration::from_secs(9000));
    assert_eq!((r.daily, r.yearly), (30, 5), "defaults and job merge");
    assert_eq!(
        (r.versions, r.hourly, r.weekly, r.monthly),
        (100, 24, 8, 12)
    );
    let d = f.parse(base).expect("valid");
    assert_eq!(
        d.job("docs").expect("docs").settings.rules(),
        crate::format::settings::Rules::default()
    );
    for (line, key) in [
        ("keep_hourly = -1", "keep_hourly"),
        ("keep_daily = 1.5", "keep_daily"),
        ("keep_weekly = \"8\"", "keep_weekly"),
        ("keep_monthly = true", "keep_monthly"),
        ("keep_yearly = -3", "keep_yearly"),
    ] {
        f.fails(
            &format!("{base}{line}\n"),
            &["job `docs`", &format!("key `{key}`"), "line 4"],
        );
    }
    let msg = f.fails(
        &format!("{base}keep_within = \"a fortnight-ish\"\n"),
        &["job `docs`", "key `keep_within`", "line 4"],
    );
    assert!(msg.contains("a fortnight-ish"), "{msg}");
    f.fails(
        "[defaults]\nkeep_within = 3\n",
        &["[defaults]", "key `keep_within`", "line 2"],
    );
}

#[test]
fn one_file_system_and_vault_group() {
    let f = Fixture::new();
    let base = "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\n";
    let cfg = f.parse(base).expect("defaults");
    assert!(cfg.jobs[0].settings.one_file_system, "true by default");
    assert_eq!(cfg.jobs[0].settings.vault_group, None, "private by default");
    let cfg = f
        .parse(&format!(
            "{base}one_file_system = false\nvault_group = \"users\"\n"
        ))
        .expect("set");
    assert!(!cfg.jobs[0].settings.one_file_system);
    assert_eq!(cfg.jobs[0].settings.vault_group.as_deref(), Some("users"));
    f.fails(
        &format!("{base}vault_group = \"a b\"\n"),
        &["key `vault_group`", "line 4", "not a group name"],
    );
    f.fails(
        &format!("{base}one_file_system = \"yes\"\n"),
        &["key `one_file_system`", "line 4"],
    );
    // Two jobs of one vault share its root: one group.
    f.fails(
        "[defaults]\nvault = \"/v\"\nvault_group = \"users\"\n[jobs.docs]\nsource = \"{root}/src\"\n\
         [jobs.code]\nsource = \"{root}/src2\"\nvault_group = \"staff\"\n",
        &["job `docs`", "key `vault_group`", "`code`", "one group only"],
    );
}
