//! Who may read the vault (docs/security.md#who-may-read-the-vault): the vault and its job
//! folders are 0700 and every metadata file 0600, owned by the writer, whatever the umask;
//! `vault_group` shares read access (folders 0750, files 0640) with one group on purpose;
//! an old vault with wider modes is made private at the next start (journaled), and
//! `verify` reports modes wider than configured.
//!
//! The oracle is the kernel: another user (nobody, through `setpriv`) tries `ls` and `cat`
//! and must get "Permission denied"; modes are read with `stat`, not with the tool.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use reverb_tests::{Fixture, TestCommand, bin, require_root, sh, stdout};

/// The name of a private file whose name, size and hash must not leak.
const SECRET: &str = "private/layoffs-2027-names.txt";

/// A fixture whose temp dir other users can traverse (so that a refusal is the vault's own
/// modes, not the temp dir's), with a private source: `private/` 0700, the secret 0600.
fn private_source() -> Fixture {
    let f = Fixture::new();
    fs::set_permissions(f._tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod tmp");
    fs::set_permissions(&f.src, fs::Permissions::from_mode(0o700)).expect("chmod src");
    fs::create_dir(f.src.join("private")).expect("mkdir");
    fs::set_permissions(f.src.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(f.src.join(SECRET), b"alice\nbob\n").expect("write");
    fs::set_permissions(f.src.join(SECRET), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(f.src.join("readme"), b"public").expect("write");
    f
}

/// `cmd args…` as nobody (uid and gid 65534), with `groups` as its supplementary groups.
fn as_nobody(groups: Option<u32>, cmd: &str, args: &[&Path]) -> TestCommand {
    let mut c = TestCommand::program("setpriv");
    c.args(["--reuid=65534", "--regid=65534"]);
    match groups {
        Some(g) => c.arg(format!("--groups={g}")),
        None => c.arg("--clear-groups"),
    };
    c.arg("--").arg(cmd).args(args);
    c
}

/// The vault's metadata a reader must not see: what it names, and how.
fn metadata_paths(f: &Fixture) -> Vec<PathBuf> {
    let job = f.job_dir();
    let mut out = vec![
        f.vault.join("reverberator-vault.toml"),
        job.join("job.toml"),
        job.join("index.tsv"),
        job.join("journal.tsv"),
        job.join("lock"),
    ];
    for e in fs::read_dir(job.join("checksums")).expect("ls checksums") {
        out.push(e.expect("entry").path());
    }
    out
}

/// Every way nobody could learn the secret's name, size or hash fails with EACCES.
fn nobody_reads_nothing(f: &Fixture, groups: Option<u32>) {
    let job = f.job_dir();
    for dir in [f.vault.clone(), job.clone(), job.join("checksums")] {
        let o = as_nobody(groups, "ls", &[&dir]).assert_failure();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("Permission denied"),
            "ls {} as nobody: {err}",
            dir.display()
        );
    }
    for file in metadata_paths(f) {
        let o = as_nobody(groups, "cat", &[&file]).assert_failure();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("Permission denied"),
            "cat {} as nobody: {err}",
            file.display()
        );
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Modes of the vault's folders and metadata files, as `stat` reports them.
fn assert_modes(f: &Fixture, dirs: u32, files: u32, gid: Option<u32>) {
    let job = f.job_dir();
    let mut folders = vec![f.vault.clone(), job.clone(), job.join("checksums")];
    folders.push(job.join(".tmp"));
    for d in folders.iter().filter(|d| d.exists()) {
        assert_eq!(mode(d), dirs, "mode of {}", d.display());
    }
    let mut files_seen = metadata_paths(f);
    files_seen.push(job.join("run.lock"));
    for p in files_seen.iter().filter(|p| p.exists()) {
        assert_eq!(mode(p), files, "mode of {}", p.display());
        let m = fs::metadata(p).expect("stat");
        assert_eq!(
            m.uid(),
            nix::unistd::geteuid().as_raw(),
            "owner of {}",
            p.display()
        );
        if let Some(g) = gid {
            assert_eq!(m.gid(), g, "group of {}", p.display());
        }
    }
    if let Some(g) = gid {
        for d in &folders {
            if d.exists() {
                assert_eq!(
                    fs::metadata(d).expect("stat").gid(),
                    g,
                    "group of {}",
                    d.display()
                );
            }
        }
    }
}

/// `reverb-snap` with the given umask (a shell runs it, so the umask is really in force).
fn snap_with_umask(f: &Fixture, umask: &str, args: &str) -> String {
    let line = format!(
        "umask {umask} && exec '{}' --vault '{}' --job '{}' {args}",
        bin("reverb-snap").display(),
        f.vault.display(),
        f.job
    );
    TestCommand::program("sh")
        .args(["-c", &line])
        .show_dir(f.job_dir())
        .stdout()
        .trim()
        .to_owned()
}

#[test]
fn other_users_cannot_read_the_names_sizes_or_hashes_of_private_files() {
    require_root!("setpriv to another user");
    let f = private_source();
    let v1 = snap_with_umask(&f, "000", &format!("--init --source '{}'", f.src.display()));
    assert!(v1.starts_with("V1-"), "{v1}");
    fs::write(f.src.join(SECRET), b"alice\nbob\ncarol\n").expect("write");
    let v2 = snap_with_umask(&f, "000", "");
    assert!(v2.starts_with("V2-"), "{v2}");
    nobody_reads_nothing(&f, None);
    assert_modes(&f, 0o700, 0o600, None);
    // A version's own tree keeps the source's modes.
    for rel in ["", "private", SECRET, "readme"] {
        let version = f.job_dir().join(&v1).join(rel);
        assert_eq!(
            mode(&version),
            mode(&f.src.join(rel)),
            "{} keeps its source's mode",
            version.display()
        );
    }
}

#[test]
fn an_old_vault_is_made_private_at_the_next_start_and_verify_flags_it_before() {
    require_root!("setpriv to another user");
    let f = private_source();
    f.first();
    // What today's vaults look like: folders 0755, files 0644.
    sh(&format!(
        "chmod 0755 '{0}' '{1}' '{1}/checksums' && chmod 0644 '{0}/reverberator-vault.toml' '{1}/job.toml' '{1}/index.tsv' '{1}/journal.tsv' '{1}/lock' '{1}'/checksums/*",
        f.vault.display(),
        f.job_dir().display()
    ));
    let o = as_nobody(None, "cat", &[&f.job_dir().join("journal.tsv")]).assert_success();
    assert!(
        stdout(&o).contains("snapshot"),
        "the old vault really was readable"
    );
    let o = reverb_tests::cmd("reverberator")
        .arg("verify")
        .arg("--vault")
        .arg(&f.vault)
        .assert_exit(1);
    let said = stdout(&o);
    for name in ["journal.tsv", "index.tsv", "job.toml", "checksums"] {
        assert!(said.contains(name), "verify names {name}: {said}");
    }
    assert!(said.contains("0644") && said.contains("0600"), "{said}");
    // The next start (a rescan that finds nothing to version) makes it private.
    assert_eq!(f.rescan(), "");
    assert_modes(&f, 0o700, 0o600, None);
    nobody_reads_nothing(&f, None);
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    let fixed: Vec<&str> = journal
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("permissions"))
        .collect();
    assert!(!fixed.is_empty(), "the fix is journaled:\n{journal}");
    assert!(
        fixed
            .iter()
            .any(|l| l.contains("journal.tsv") && l.contains("0644")),
        "{fixed:?}"
    );
    reverb_tests::cmd("reverberator")
        .arg("verify")
        .arg("--vault")
        .arg(&f.vault)
        .assert_success();
}

/// The group `users` (gid 100), which nobody is not a member of.
const SHARED_GID: u32 = 100;

#[test]
fn vault_group_shares_read_access_with_that_group_only() {
    require_root!("setpriv to another user");
    let f = private_source();
    let config = f._tmp.path().join("config.toml");
    let write_config = |extra: &str| {
        fs::write(
            &config,
            format!(
                "[jobs.job]\nsource = \"{}\"\nvault = \"{}\"\n{extra}",
                f.src.display(),
                f.vault.display()
            ),
        )
        .expect("config");
    };
    let snap = || {
        let mut c = reverb_tests::cmd("reverb-snap");
        c.arg("--config")
            .arg(&config)
            .args(["--job", "job", "--init"])
            .show_dir(f.job_dir());
        c.assert_success();
    };
    write_config("vault_group = \"users\"\n");
    snap();
    assert_modes(&f, 0o750, 0o640, Some(SHARED_GID));
    // A member of the group reads the history; nobody else does.
    let journal = f.job_dir().join("journal.tsv");
    let o = as_nobody(Some(SHARED_GID), "cat", &[&journal]).assert_success();
    assert!(stdout(&o).contains("snapshot"));
    as_nobody(Some(SHARED_GID), "ls", &[&f.job_dir()]).assert_success();
    nobody_reads_nothing(&f, None);
    reverb_tests::cmd("reverberator")
        .arg("verify")
        .arg("--config")
        .arg(&config)
        .assert_success();
    // A file readable by everyone is wider than the group share.
    fs::set_permissions(&journal, fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = reverb_tests::cmd("reverberator")
        .arg("verify")
        .arg("--config")
        .arg(&config)
        .assert_exit(1);
    assert!(stdout(&o).contains("journal.tsv"), "{}", stdout(&o));
    // Sharing stopped: the next start makes the vault private again.
    write_config("");
    snap();
    assert_modes(&f, 0o700, 0o600, None);
    nobody_reads_nothing(&f, Some(SHARED_GID));
}

#[test]
fn an_unknown_vault_group_is_an_error_naming_it() {
    let f = private_source();
    let config = f._tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[jobs.job]\nsource = \"{}\"\nvault = \"{}\"\nvault_group = \"no-such-group-rvb\"\n",
            f.src.display(),
            f.vault.display()
        ),
    )
    .expect("config");
    let o = reverb_tests::cmd("reverb-snap")
        .arg("--config")
        .arg(&config)
        .args(["--job", "job", "--init"])
        .assert_failure();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("vault_group") && err.contains("no-such-group-rvb"),
        "{err}"
    );
    assert!(
        !f.job_dir().exists(),
        "nothing is written for a job with a bad group"
    );
}
