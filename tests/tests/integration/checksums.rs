//! Integrity end to end (docs/format.md#checksums): every stored file's record agrees with
//! `b3sum` (the independent oracle, when installed); `reverb-index --check --data` and
//! `reverberator verify --data` report each kind of damage with its version and path, and a
//! clean vault of every shape (hard links, sparse, odd names, attribute-only changes,
//! `keep_complete = false`, after retirement and crashes in it, reflinked on btrfs) as clean;
//! a damaged checksums file is a problem naming its line; restores check every file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use reverb_tests::ops::{disk_dirs, index_dirs};
use reverb_tests::{Fixture, LoopMount, TestCommand, cmd, replace_with_copy, sh, stderr, stdout};

/// `reverb-index --check --data [--json]` (exit code not asserted).
fn data_check(f: &Fixture, json: bool) -> Output {
    let mut c = f.tool("reverb-index");
    c.args(["--check", "--data"]);
    if json {
        c.arg("--json");
    }
    c.output()
}

/// Both data checks must be clean: `reverb-index --check --data` and `reverberator verify
/// --data`.
fn assert_clean(f: &Fixture, what: &str) {
    let o = data_check(f, false);
    assert!(
        o.status.success() && stdout(&o).is_empty(),
        "{what}: reverb-index --check --data is not clean:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = cmd("reverberator")
        .arg("verify")
        .arg("--data")
        .arg("--vault")
        .arg(&f.vault)
        .arg(&f.job)
        .output();
    assert!(
        o.status.success() && stdout(&o).is_empty(),
        "{what}: reverberator verify --data is not clean:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// The `(kind, path)` of every problem line of a check's output.
fn problems(o: &Output) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = stdout(o)
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 4, "not a problem line: {l}");
            (c[1].to_owned(), c[2].to_owned())
        })
        .collect();
    out.sort();
    out
}

/// The full directory name of version `n`.
fn vdir(f: &Fixture, n: u64) -> String {
    index_dirs(f)
        .into_iter()
        .find(|d| d.starts_with(&format!("V{n}-")))
        .unwrap_or_else(|| panic!("no V{n}"))
}

/// Version `n`'s records, as the library reads them.
fn records(f: &Fixture, n: u64) -> BTreeMap<PathBuf, String> {
    reverb_common::checksums::read(&f.job_dir(), n)
        .expect("read")
        .unwrap_or_else(|| panic!("V{n} has no checksums file"))
        .into_iter()
        .map(|(p, r)| (p, r.hex()))
        .collect()
}

/// Every real regular file of every retained version has a record, and `b3sum` of the file
/// agrees with it; no record names anything else. Skips the oracle (with a reason) without
/// b3sum.
fn assert_records_match_b3sum(f: &Fixture, what: &str) {
    reverb_tests::require_programs!(["b3sum"], format!("the b3sum oracle for {what}"));
    for dir in index_dirs(f) {
        let n: u64 = dir[1..dir.find('-').expect("dash")].parse().expect("n");
        let root = f.job_dir().join(&dir);
        let mut oracle = BTreeMap::new();
        for e in walk_files(&root) {
            let o = TestCommand::program("b3sum")
                .arg("--no-names")
                .arg(root.join(&e))
                .assert_success();
            oracle.insert(e, stdout(&o).trim().to_owned());
        }
        assert_eq!(
            records(f, n),
            oracle,
            "{what}: {dir}'s records against b3sum"
        );
    }
}

/// The real regular files under `root`, not following symlinks, relative.
fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for e in fs::read_dir(root.join(&rel)).expect("list") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("type");
            let child = rel.join(e.file_name());
            if ft.is_dir() {
                pending.push(child);
            } else if ft.is_file() {
                out.push(child);
            }
        }
    }
    out
}

/// A source of every shape: nested files, a hard-linked pair, a sparse file, an empty file,
/// odd names, a read-only directory.
fn seed(src: &Path) {
    fs::create_dir_all(src.join("docs/deep")).expect("mkdir");
    fs::write(src.join("README.md"), b"hello\n").expect("write");
    fs::write(src.join("docs/deep/leaf"), b"leaf v1").expect("write");
    // Unchanged beside a changed file: V3 links it to V1 through a directory V2 links.
    fs::write(src.join("docs/deep/other"), b"other").expect("write");
    fs::write(src.join("docs/same"), b"AAAAAAAA").expect("write");
    fs::write(src.join("big"), vec![9u8; 300_000]).expect("write");
    fs::write(src.join("empty"), b"").expect("write");
    fs::hard_link(src.join("docs/deep/leaf"), src.join("hard")).expect("link");
    let sparse = fs::File::create(src.join("sparse")).expect("create");
    sparse.set_len(8 << 20).expect("len");
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"middle", 3 << 20).expect("write");
    let odd = std::ffi::OsStr::from_bytes(b"tab\tnew\nline\xff");
    fs::write(src.join(odd), b"odd").expect("write");
    fs::create_dir(src.join("ro")).expect("mkdir");
    fs::write(src.join("ro/inside"), b"ro").expect("write");
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).expect("chmod");
}

/// Three versions: V1 everything; V2 an edit, a new file, an attribute-only change, a
/// deletion; V3 another edit.
fn three_versions(f: &Fixture) {
    seed(&f.src);
    f.first();
    fs::write(f.src.join("README.md"), b"hello, again\n").expect("write");
    fs::write(f.src.join("docs/new"), b"new in v2").expect("write");
    fs::set_permissions(f.src.join("big"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::remove_file(f.src.join("empty")).expect("rm");
    assert!(!f.rescan().is_empty(), "V2");
    fs::write(f.src.join("docs/deep/leaf"), b"leaf v3 (and the hard link)").expect("write");
    assert!(!f.rescan().is_empty(), "V3");
}

#[test]
fn records_agree_with_b3sum_and_every_shape_verifies_clean() {
    let f = Fixture::new();
    three_versions(&f);
    assert_records_match_b3sum(&f, "three versions");
    // V2 holds only what it changed: the attribute-only copy reuses V1's record.
    let v2 = records(&f, 2);
    assert_eq!(
        v2.get(Path::new("big")),
        records(&f, 1).get(Path::new("big"))
    );
    assert!(
        !v2.contains_key(Path::new("docs/same")),
        "V2 links docs/same"
    );
    assert_clean(&f, "three versions");
    f.check_clean();
}

#[test]
fn retirement_moves_records_with_the_entries_it_moves() {
    let f = Fixture::new();
    three_versions(&f);
    let v1 = records(&f, 1);
    f.tool("reverb-retire")
        .args(["--keep", "2"])
        .assert_success();
    assert_eq!(index_dirs(&f).len(), 2);
    // docs/same moved from V1 into V2 with its record; V1's file went with V1 on the next
    // retirement at the latest.
    assert_eq!(
        records(&f, 2).get(Path::new("docs/same")),
        v1.get(Path::new("docs/same"))
    );
    assert_records_match_b3sum(&f, "after retiring V1");
    assert_clean(&f, "after retiring V1");
    f.tool("reverb-retire")
        .args(["--keep", "1"])
        .assert_success();
    assert_records_match_b3sum(&f, "after retiring V2");
    assert_clean(&f, "after retiring V2");
    let left: Vec<String> = fs::read_dir(f.job_dir().join("checksums"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.contains(&"V1.tsv".to_owned()),
        "V1's records left: {left:?}"
    );
}

#[test]
fn kill_9_at_every_write_step_of_retirement_leaves_every_record_findable() {
    let f = Fixture::new();
    three_versions(&f);
    let pristine = f._tmp.path().join("pristine");
    replace_with_copy(&f.vault, &pristine);
    for k in 1..200u64 {
        replace_with_copy(&pristine, &f.vault);
        let o = f
            .tool("reverb-retire")
            .args(["--keep", "1"])
            .env("REVERB_FAULT_AFTER", k.to_string())
            .output();
        assert!(!stderr(&o).contains("panicked"), "k={k}: {}", stderr(&o));
        if o.status.success() {
            assert_clean(&f, &format!("k={k} (no fault)"));
            assert!(k > 5, "only {} write steps", k - 1);
            return;
        }
        // Between the crash and the next run, every retained file still has its record
        // where the lookup finds it: restores verify.
        let dest = f._tmp.path().join(format!("restored-{k}"));
        let newest = index_dirs(&f).pop().expect("a version");
        f.tool("reverb-restore")
            .args(["--from", &newest])
            .arg("--to")
            .arg(&dest)
            .assert_success();
        f.tool("reverb-retire")
            .args(["--keep", "1"])
            .assert_success();
        assert_clean(&f, &format!("k={k} (repaired)"));
        assert_records_match_b3sum(&f, &format!("k={k} (repaired)"));
    }
    panic!("retirement never finished without a fault");
}

/// Applies the five damages the issue names; returns the `(kind, path)` each must give.
fn damage(f: &Fixture) -> Vec<(String, String)> {
    let (v1, v2) = (vdir(f, 1), vdir(f, 2));
    let job = f.job_dir();
    // Flip one byte.
    let readme = job.join(&v1).join("README.md");
    let mut bytes = fs::read(&readme).expect("read");
    bytes[0] ^= 0x01;
    fs::write(&readme, bytes).expect("write");
    // Truncate.
    fs::OpenOptions::new()
        .write(true)
        .open(job.join(&v1).join("big"))
        .expect("open")
        .set_len(1000)
        .expect("truncate");
    // Delete (V3 links to it, so --check also reports the dangling link).
    fs::remove_file(job.join(&v2).join("README.md")).expect("rm");
    // Replace with a same-size file of other content.
    fs::write(job.join(&v1).join("docs/same"), b"BBBBBBBB").expect("write");
    // Corrupt a record: V2's docs/new gets another hash.
    let file = job.join("checksums/V2.tsv");
    let text = fs::read_to_string(&file).expect("read");
    let good = &records(f, 2)[Path::new("docs/new")];
    fs::write(&file, text.replace(good.as_str(), &"0".repeat(64))).expect("write");
    let at = |v: &str, p: &str| format!("{v}/{p}");
    let mut want = vec![
        ("checksum-mismatch".to_owned(), at(&v1, "README.md")),
        ("checksum-mismatch".to_owned(), at(&v1, "big")),
        ("checksum-without-file".to_owned(), at(&v2, "README.md")),
        ("checksum-mismatch".to_owned(), at(&v1, "docs/same")),
        ("checksum-mismatch".to_owned(), at(&v2, "docs/new")),
    ];
    want.sort();
    want
}

#[test]
fn each_damage_is_reported_with_its_version_and_path() {
    let f = Fixture::new();
    three_versions(&f);
    assert_clean(&f, "before the damage");
    let want = damage(&f);
    let o = data_check(&f, false);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let data_kinds = ["checksum-mismatch", "checksum-without-file", "no-checksum"];
    let got: Vec<_> = problems(&o)
        .into_iter()
        .filter(|(k, _)| data_kinds.contains(&k.as_str()))
        .collect();
    assert_eq!(got, want, "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains("size 1000 but its record says 300000"),
        "{text}"
    );
    // --json: one object per problem, with the version and the path.
    let o = data_check(&f, true);
    assert_eq!(o.status.code(), Some(1));
    let readme = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|v| {
            v["kind"] == "checksum-mismatch"
                && v["path"].as_str().unwrap_or("").ends_with("/README.md")
        })
        .expect("the flipped byte, as JSON");
    assert_eq!(readme["version"], vdir(&f, 1).as_str());
    // The porcelain says the same.
    let o = cmd("reverberator")
        .args(["verify", "--data", "--vault"])
        .arg(&f.vault)
        .output();
    assert_eq!(o.status.code(), Some(1));
    let got: Vec<_> = problems(&o)
        .into_iter()
        .filter(|(k, _)| data_kinds.contains(&k.as_str()))
        .collect();
    assert_eq!(got, want, "reverberator verify --data");
}

#[test]
fn a_stored_file_without_a_record_is_reported() {
    let f = Fixture::new();
    three_versions(&f);
    let v3 = vdir(&f, 3);
    fs::write(f.job_dir().join(&v3).join("docs/deep/stray"), b"x").expect("write");
    let o = data_check(&f, false);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        problems(&o).contains(&("no-checksum".into(), format!("{v3}/docs/deep/stray"))),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_damaged_checksums_file_is_a_problem_naming_its_line() {
    for (what, from, to) in [
        ("bad escape", "docs/same\t", "docs/sa\\qme\t"),
        ("wrong column count", "docs/same\t", "docs/same\textra\t"),
        ("bad hex", "\t8\t", "\t8\tzz"),
    ] {
        let f = Fixture::new();
        three_versions(&f);
        let file = f.job_dir().join("checksums/V1.tsv");
        let text = fs::read_to_string(&file).expect("read");
        let line = 1 + text
            .lines()
            .position(|l| l.contains(from))
            .unwrap_or_else(|| panic!("{what}: {from:?} not in {text}"));
        assert!(text.contains(from), "{what}");
        fs::write(&file, text.replacen(from, to, 1)).expect("write");
        let o = data_check(&f, false);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{what}: {}", stderr(&o));
        let out = stdout(&o);
        let hit = out
            .lines()
            .find(|l| l.contains("damaged-checksums"))
            .unwrap_or_else(|| panic!("{what}: no damaged-checksums problem in {out}"));
        assert!(hit.contains("checksums/V1.tsv"), "{what}: {hit}");
        assert!(
            hit.contains(&format!("line {line}")),
            "{what}: line {line}: {hit}"
        );
        // A restore from that version refuses too, naming the file (not a panic).
        let o = f
            .tool("reverb-restore")
            .args(["--from", "1"])
            .arg("--to")
            .arg(f._tmp.path().join("r"))
            .output();
        assert!(
            !o.status.success(),
            "{what}: restore took a damaged record file"
        );
        assert!(stderr(&o).contains("V1.tsv"), "{what}: {}", stderr(&o));
    }
}

#[test]
fn restore_fails_naming_a_damaged_file_unless_no_verify() {
    let f = Fixture::new();
    three_versions(&f);
    let v1 = vdir(&f, 1);
    let same = f.job_dir().join(&v1).join("docs/same");
    fs::write(&same, b"BBBBBBBB").expect("write");
    // V3 links docs/same to V1: restoring V3 reads V1's damaged data.
    for tool in ["reverb-restore", "reverberator"] {
        let dest = f._tmp.path().join(format!("r-{tool}"));
        let mut c = if tool == "reverberator" {
            let mut c = cmd("reverberator");
            c.args(["restore", &f.job, "--vault"]).arg(&f.vault);
            c
        } else {
            f.tool(tool)
        };
        c.args(["--from", "latest"]).arg("--to").arg(&dest);
        let o = c.output();
        assert_eq!(o.status.code(), Some(1), "{tool}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("{v1}/docs/same")),
            "{tool} must name the file: {}",
            stderr(&o)
        );
    }
    let dest = f._tmp.path().join("r-no-verify");
    f.tool("reverb-restore")
        .args(["--from", "latest", "--no-verify"])
        .arg("--to")
        .arg(&dest)
        .assert_success();
    assert_eq!(fs::read(dest.join("docs/same")).expect("read"), b"BBBBBBBB");
    // An undamaged restore verifies and succeeds.
    fs::write(&same, b"AAAAAAAA").expect("write");
    let r = f.restore("latest");
    assert_eq!(fs::read(r.join("docs/same")).expect("read"), b"AAAAAAAA");
}

/// `b3sum` of every regular file under `root` (the oracle of what a restore left), by
/// path relative to it.
fn b3sums(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    for e in walk_files(root) {
        let o = TestCommand::program("b3sum")
            .arg("--no-names")
            .arg(root.join(&e))
            .assert_success();
        out.insert(e, stdout(&o).trim().to_owned());
    }
    out
}

/// A stored copy damaged as bit rot damages it: one byte changed, size and mtime kept.
fn rot(file: &Path) {
    let f = file.display();
    sh(&format!(
        "touch -r '{f}' '{f}.mtime' && printf X | dd of='{f}' bs=1 seek=3 conv=notrunc 2>/dev/null \
         && touch -r '{f}.mtime' '{f}' && rm '{f}.mtime'"
    ));
}

#[test]
fn a_file_that_fails_verification_never_appears_under_its_name_in_dest() {
    reverb_tests::require_programs!(["b3sum"], "the b3sum oracle of what DEST holds");
    let f = Fixture::new();
    fs::create_dir(f.src.join("d")).expect("mkdir");
    for name in ["d/a", "d/b", "d/c", "file"] {
        fs::write(f.src.join(name), format!("{name}: genuine content")).expect("write");
    }
    let v1 = f.first();
    let genuine = b3sums(&f.src);
    let stored = f.job_dir().join(&v1);
    let mtime = fs::metadata(stored.join("file"))
        .expect("stat")
        .modified()
        .expect("mtime");
    rot(&stored.join("file"));
    rot(&stored.join("d/b"));
    assert_eq!(
        fs::metadata(stored.join("file"))
            .expect("stat")
            .modified()
            .expect("mtime"),
        mtime
    );
    let rotten: Vec<String> = ["file", "d/b"]
        .iter()
        .map(|p| b3sums(&stored)[Path::new(p)].clone())
        .collect();
    let out = f._tmp.path().join("out");
    fs::create_dir(&out).expect("mkdir");
    // No file of DEST's directory holds rotten bytes; every one is genuine.
    let assert_no_rot = |what: &str| {
        for (p, h) in b3sums(&out) {
            assert!(
                !rotten.contains(&h),
                "{what}: {} holds rotten bytes",
                p.display()
            );
            let name = p.strip_prefix("tree").unwrap_or(&p);
            let name = if name == Path::new("x") {
                Path::new("file")
            } else {
                name
            };
            assert_eq!(genuine.get(name), Some(&h), "{what}: {}", p.display());
        }
    };
    // One file: refused, naming it; nothing under DEST's name, nothing left beside it.
    let x = out.join("x");
    let o = cmd("reverberator")
        .args(["restore", &f.job, "--vault"])
        .arg(&f.vault)
        .args(["--path", "file", "--to"])
        .arg(&x)
        .assert_exit(1);
    assert!(stderr(&o).contains(&format!("{v1}/file")), "{}", stderr(&o));
    assert!(!x.exists(), "the rotten file was left as DEST");
    assert_no_rot("one file");
    assert_eq!(
        fs::read_dir(&out).expect("ls").count(),
        0,
        "a leftover in {}",
        out.display()
    );
    // A tree: stops at the rotten file (as documented), which is not there; what came
    // before it is genuine; the message says how to go on.
    let tree = out.join("tree");
    let o = f
        .tool("reverb-restore")
        .arg("--to")
        .arg(&tree)
        .assert_exit(1);
    let err = stderr(&o);
    assert!(err.contains(&format!("{v1}/d/b")), "{err}");
    assert!(
        err.contains("--overwrite") && err.contains("--no-verify"),
        "{err}"
    );
    assert!(
        !tree.join("d/b").exists(),
        "the rotten file was left in DEST"
    );
    assert!(tree.join("d/a").exists(), "what came before is kept");
    assert_no_rot("a tree");
    // --no-verify takes them as they are.
    f.tool("reverb-restore")
        .args(["--no-verify", "--overwrite", "--to"])
        .arg(&tree)
        .assert_success();
    assert_eq!(b3sums(&tree)[Path::new("d/b")], rotten[1]);
    assert_eq!(b3sums(&tree)[Path::new("file")], rotten[0]);
    assert_eq!(b3sums(&tree)[Path::new("d/c")], genuine[Path::new("d/c")]);
    f.tool("reverb-restore")
        .args(["--no-verify", "--path", "file", "--to"])
        .arg(&x)
        .assert_success();
    assert_eq!(fs::read(&x).expect("read"), b"filX: genuine content");
}

#[test]
fn backfill_records_a_vault_made_before_checksums() {
    let f = Fixture::new();
    three_versions(&f);
    fs::remove_dir_all(f.job_dir().join("checksums")).expect("rm");
    let o = data_check(&f, false);
    assert_eq!(o.status.code(), Some(1));
    let missing: Vec<_> = problems(&o)
        .into_iter()
        .filter(|(k, _)| k == "no-checksums-file")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        missing,
        index_dirs(&f),
        "one problem per version without records"
    );
    // Restores of a vault without records still work (nothing to check against).
    f.restore("latest");
    let o = f
        .tool("reverb-index")
        .args(["--recount", "--checksums"])
        .assert_success();
    assert!(
        stderr(&o).contains("recorded from the data as it is now"),
        "{}",
        stderr(&o)
    );
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    assert!(journal.contains("backfilled"), "{journal}");
    assert_records_match_b3sum(&f, "backfilled");
    assert_clean(&f, "backfilled");
    // --checksums only with --recount.
    let o = f.tool("reverb-index").arg("--checksums").output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A job from a config file with extra settings.
fn configured(f: &Fixture, extra: &str) -> PathBuf {
    let cfg = f._tmp.path().join("config.toml");
    fs::write(
        &cfg,
        format!(
            "[jobs.job]\nsource = \"{}\"\nvault = \"{}\"\n{extra}\n",
            f.src.display(),
            f.vault.display()
        ),
    )
    .expect("config");
    cfg
}

fn snap_with(cfg: &Path, init: bool) {
    let mut c = cmd("reverb-snap");
    c.arg("--config").arg(cfg).args(["--job", "job"]);
    if init {
        c.arg("--init");
    }
    c.assert_success();
}

#[test]
fn keep_complete_false_verifies_clean() {
    let f = Fixture::new();
    seed(&f.src);
    let cfg = configured(&f, "keep_complete = false");
    snap_with(&cfg, true);
    fs::write(f.src.join("docs/same"), b"changed!").expect("write");
    fs::write(f.src.join("added"), b"added").expect("write");
    snap_with(&cfg, false);
    assert_eq!(records(&f, 1).len(), 0, "V1 holds nothing");
    assert_eq!(records(&f, 2).len(), 2, "V2 holds what changed");
    assert_records_match_b3sum(&f, "keep_complete = false");
    assert_clean(&f, "keep_complete = false");
}

/// A crash after a version's checksums file was put in place, before the version was, loses
/// the version (recovery removes it) but left its records; the next version of that number,
/// made with checksums off from other contents, was then checked against them.
#[test]
fn a_version_lost_in_a_crash_leaves_no_records_for_the_next_one_of_its_number() {
    let f = Fixture::new();
    seed(&f.src);
    let on = configured(&f, "");
    snap_with(&on, true);
    fs::write(f.src.join("README.md"), b"the lost V2\n").expect("write");
    let v2_records = f.job_dir().join("checksums/V2.tsv");
    let v2_exists = || {
        fs::read_dir(f.job_dir()).expect("list").any(|e| {
            e.expect("entry")
                .file_name()
                .to_string_lossy()
                .starts_with("V2-")
        })
    };
    let pristine = f._tmp.path().join("pristine");
    replace_with_copy(&f.vault, &pristine);
    let mut crashed_between = false;
    for k in 1..100u64 {
        replace_with_copy(&pristine, &f.vault);
        let o = cmd("reverb-snap")
            .arg("--config")
            .arg(&on)
            .args(["--job", "job"])
            .env("REVERB_FAULT_AFTER", k.to_string())
            .output();
        assert!(!o.status.success(), "k={k}: V2 was made without a fault");
        if v2_records.exists() && !v2_exists() {
            crashed_between = true;
            break;
        }
    }
    assert!(crashed_between, "no step left V2's records without V2");
    fs::write(f.src.join("README.md"), b"the V2 that stays\n").expect("write");
    let off = configured(&f, "checksums = false");
    snap_with(&off, false);
    assert!(v2_exists(), "V2 made again");
    assert_clean(&f, "V2 made again with checksums off");
    assert!(
        !v2_records.exists(),
        "the lost V2's records are still there for the new V2"
    );
}

#[test]
fn checksums_off_records_nothing_and_verifies_clean() {
    let f = Fixture::new();
    seed(&f.src);
    let cfg = configured(&f, "checksums = false");
    snap_with(&cfg, true);
    assert!(!f.job_dir().join("checksums").exists());
    assert_clean(&f, "checksums = false");
    f.restore("latest");
    let bad = configured(&f, "checksums = 1");
    let o = cmd("reverberator")
        .args(["check-config", "--config"])
        .arg(&bad)
        .output();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("checksums"), "{}", stderr(&o));
}

#[test]
fn max_rate_is_accepted_and_a_bad_one_names_the_flag() {
    let f = Fixture::new();
    three_versions(&f);
    f.tool("reverb-index")
        .args(["--check", "--data", "--max-rate", "500MiB"])
        .assert_success();
    cmd("reverberator")
        .args(["verify", "--data", "--max-rate", "1GiB/s", "--vault"])
        .arg(&f.vault)
        .assert_success();
    let o = f
        .tool("reverb-index")
        .args(["--check", "--data", "--max-rate", "fast"])
        .output();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--max-rate"), "{}", stderr(&o));
    let o = f
        .tool("reverb-index")
        .args(["--check", "--max-rate", "1M"])
        .output();
    assert_eq!(o.status.code(), Some(2), "--max-rate needs --data");
}

#[test]
fn a_terminal_shows_the_bytes_read_of_the_total() {
    reverb_tests::require_programs!(["script"], "progress on a terminal");
    let f = Fixture::new();
    fs::write(f.src.join("five"), vec![5u8; 5 << 20]).expect("write");
    f.first();
    let line = format!(
        "{} --vault '{}' --job job --check --data",
        reverb_tests::bin("reverb-index").display(),
        f.vault.display()
    );
    let o = TestCommand::program("script")
        .args(["-qec", &line, "/dev/null"])
        .assert_success();
    let shown = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(shown.contains("verifying job"), "{shown:?}");
    assert!(shown.contains("/5.00 MiB"), "no bytes of total: {shown:?}");
    // Not a terminal: no bar, nothing on stderr.
    let o = data_check(&f, false);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn reflinked_copies_on_btrfs_record_the_clone() {
    reflinked_copies_record_the_clone("btrfs", 256);
}

#[test]
fn reflinked_copies_on_xfs_record_the_clone() {
    reflinked_copies_record_the_clone("xfs", 320);
}

fn reflinked_copies_record_the_clone(fstype: &str, size_mib: u64) {
    reverb_tests::require_root!(format!(
        "loop devices: checksums of reflinked copies on {fstype}"
    ));
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = match LoopMount::new(tmp.path(), fstype, size_mib, &[]) {
        Ok(m) => m,
        Err(why) => reverb_tests::skip!("{why}: checksums of reflinked copies on {fstype}"),
    };
    let f = Fixture::in_dir(tempfile::tempdir_in(&m.mountpoint).expect("tempdir"));
    seed(&f.src);
    let mut big = fs::File::create(f.src.join("patterned")).expect("create");
    for i in 0..64u32 {
        big.write_all(&[i as u8 + 1; 65536]).expect("write");
    }
    drop(big);
    sh(&format!("sync -f {}", f.src.display()));
    let v1 = f.first();
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    assert!(
        !journal.contains("reflinked=0"),
        "nothing was reflinked: {journal}"
    );
    assert_records_match_b3sum(&f, fstype);
    assert_clean(&f, fstype);
    assert_eq!(disk_dirs(&f), vec![v1]);
    drop(f);
    drop(m);
}

/// Retirement's carry of records that adds nothing (a resumed retirement, or moved entries
/// with no regular file below them) writes nothing: it must work on a full disk, where
/// `reverb-snap` retires right after running out of space, even when the next version's
/// checksums file is larger than the space left.
#[test]
fn a_carry_that_adds_nothing_needs_no_space() {
    use reverb_common::checksums::{Record, Records, carry, file_of, read, write};
    reverb_tests::require_root!("a 1 MiB tmpfs to fill");
    let outer = tempfile::tempdir().expect("tempdir");
    let job = outer.path().join("job");
    fs::create_dir(&job).expect("mkdir");
    // Unmounted when the test ends, passed or failed.
    let _tmpfs = reverb_tests::MountGuard::new(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], &job)
        .expect("mount a 1 MiB tmpfs");
    let rec = |i: u32| Record {
        size: u64::from(i),
        hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
    };
    for n in [1, 2] {
        fs::create_dir(job.join(format!("V{n}-20261201T000000Z"))).expect("mkdir");
    }
    let mut next: Records = (0..3000)
        .map(|i| (PathBuf::from(format!("f/{i:06}")), rec(i)))
        .collect();
    next.insert(PathBuf::from("a"), rec(1));
    write(
        &job,
        1,
        &[(PathBuf::from("a"), rec(1))].into_iter().collect(),
    )
    .expect("write");
    write(&job, 2, &next).expect("write");
    let mut filler = fs::File::create(job.join("filler")).expect("filler");
    while filler.write_all(&[1u8; 4096]).is_ok() {}
    drop(filler);
    // Resumed: V1's record of `a` is in V2's file already.
    carry(&job, 1, 2, &[PathBuf::from("a")]).expect("a resumed carry on a full disk");
    // Nothing below the moved entry.
    carry(&job, 1, 2, &[PathBuf::from("empty-dir")]).expect("nothing to carry");
    assert_eq!(read(&job, 2).expect("read"), Some(next.clone()));
    assert!(file_of(&job, 2).is_file());
}

/// `--overwrite` over files that stand in DEST (a second trial: a restore that failed
/// verification had already removed the file it was to replace): a file that fails leaves
/// what stood under its name as it was, by one file and within a tree.
#[test]
fn a_failed_overwrite_leaves_the_file_it_was_to_replace() {
    let f = Fixture::new();
    fs::create_dir(f.src.join("sub")).expect("mkdir");
    fs::write(f.src.join("sub/g2"), b"g2: genuine").expect("write");
    fs::write(f.src.join("sub/ok"), b"ok: genuine").expect("write");
    let v1 = f.first();
    rot(&f.job_dir().join(&v1).join("sub/g2"));
    let out = f._tmp.path().join("out");
    fs::create_dir_all(out.join("tree/sub")).expect("mkdir");
    fs::write(out.join("g2"), b"precious").expect("write");
    fs::write(out.join("tree/sub/g2"), b"precious too").expect("write");
    let restore = |path: &str, to: &Path| {
        let mut c = cmd("reverberator");
        c.args(["restore", &f.job, "--vault"])
            .arg(&f.vault)
            .args(["--path", path, "--overwrite", "--to"])
            .arg(to)
            .show_dir(f.job_dir());
        c
    };
    let o = restore("sub/g2", &out.join("g2")).assert_exit(1);
    assert!(stderr(&o).contains("fails verification"), "{}", stderr(&o));
    assert_eq!(fs::read(out.join("g2")).expect("g2"), b"precious");
    let o = restore("sub", &out.join("tree/sub")).assert_exit(1);
    assert!(stderr(&o).contains("fails verification"), "{}", stderr(&o));
    assert_eq!(
        fs::read(out.join("tree/sub/g2")).expect("tree/sub/g2"),
        b"precious too"
    );
    // What it could verify, it restored; nothing but that and the files was left.
    let left: Vec<_> = fs::read_dir(out.join("tree/sub"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.iter().all(|n| n == "g2" || n == "ok"),
        "a temporary was left: {left:?}"
    );
}
