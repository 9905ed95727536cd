//! The vault on disk (docs/format.md#vault-layout): the marker, the job folders, the version directories, the
//! `current` link and `.partial/`.
//!
//! Owns: names and paths inside a vault. Invariants:
//! - A directory is a vault only when it holds `reverberator-vault.toml`; it becomes one only
//!   through [`Vault::init`] (an unplugged disk leaves an empty mountpoint, and a new vault
//!   silently started there would fill the root filesystem).
//! - Version directories are named `V{n}-{stamp}`, `n` never repeats within a job; tools sort
//!   by `n`. `current` is a relative symlink replaced atomically.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::format::capabilities::Capabilities;
use crate::format::time;
use crate::fsutil;
use crate::vault::probe;

/// The marker file's name.
pub const MARKER: &str = "reverberator-vault.toml";
/// The vault format this code writes and reads.
pub const FORMAT: u32 = 1;

/// The marker file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// The vault format version.
    pub format: u32,
    /// A random id, so two vaults are never confused.
    pub id: String,
    /// When the vault was created.
    pub created: String,
    /// What its filesystem can do, as the last capability probe found it
    /// (docs/filesystems.md); absent in a vault made before the probe existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

/// An open vault (its marker was found and read).
#[derive(Debug, Clone)]
pub struct Vault {
    root: PathBuf,
    marker: Marker,
    /// This process probed the vault's filesystem (made it, or probed it again).
    probed: bool,
}

impl Vault {
    /// Opens the vault at `root`. A path without a marker is [`Error::VaultUnavailable`].
    pub fn open(root: &Path) -> Result<Vault> {
        if !root.is_absolute() {
            return Err(Error::Usage(format!(
                "vault path {} is relative: give an absolute path",
                crate::error::show(root)
            )));
        }
        let marker_path = root.join(MARKER);
        let text = match fs::read_to_string(&marker_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if root.exists() && !root.is_dir() {
                    return Err(Error::Usage(format!(
                        "vault path {} is not a directory",
                        crate::error::show(root)
                    )));
                }
                return Err(Error::VaultUnavailable(root.to_path_buf()));
            }
            Err(e) => return Err(e).ctx("cannot read vault marker", &marker_path),
        };
        let marker: Marker = toml::from_str(&text).map_err(|e| {
            Error::Damaged(format!(
                "{} is not a valid vault marker: {}",
                crate::error::show(&marker_path),
                e.message()
            ))
        })?;
        if marker.format != FORMAT {
            return Err(Error::Damaged(format!(
                "{} has vault format {}, this reverberator reads format {FORMAT}",
                crate::error::show(&marker_path),
                marker.format
            )));
        }
        Ok(Vault {
            root: root.to_path_buf(),
            marker,
            probed: false,
        })
    }

    /// Creates the vault at `root` (directory and marker) if it is not one yet; opens it.
    /// A new vault's filesystem is probed first ([`probe`]): one that cannot hold what a
    /// version holds is refused (exit 2) with nothing left behind, not even the directory
    /// when it was made for the probe.
    pub fn init(root: &Path) -> Result<Vault> {
        if !root.is_absolute() {
            return Err(Error::Usage(format!(
                "vault path {} is relative: give an absolute path",
                crate::error::show(root)
            )));
        }
        let marker_path = root.join(MARKER);
        let mut probed = false;
        if !marker_path.exists() {
            let made = missing_ancestors(root);
            fs::create_dir_all(root).ctx("cannot create vault directory", root)?;
            let caps = match probe::probe(root) {
                Ok(caps) => caps,
                Err(e) => {
                    remove_made(&made);
                    return Err(e);
                }
            };
            if let Some(refused) = probe::refusal(root, &caps) {
                remove_made(&made);
                return Err(refused);
            }
            // Private from the start (docs/security.md#who-may-read-the-vault), whatever
            // the umask; a job that shares with a vault_group opens it to that group.
            fsutil::Access::PRIVATE.apply_to_path(root)?;
            let marker = Marker {
                format: FORMAT,
                id: random_id(),
                created: time::now_rfc3339(),
                capabilities: Some(caps),
            };
            write_marker(root, &marker)?;
            probed = true;
        }
        let mut vault = Vault::open(root)?;
        vault.probed = probed;
        Ok(vault)
    }

    /// Probes the vault's filesystem again (a job starts, or the filesystem changed) and
    /// records what it found in the marker when that differs from its record. A vault
    /// that cannot hold what a version holds is refused (exit 2). Returns the findings.
    pub fn probe_again(&mut self) -> Result<Capabilities> {
        let caps = probe::probe(&self.root)?;
        if let Some(refused) = probe::refusal(&self.root, &caps) {
            return Err(refused);
        }
        let known = self
            .marker
            .capabilities
            .as_ref()
            .is_some_and(|c| c.same_findings(&caps));
        if !known {
            let marker = Marker {
                capabilities: Some(caps.clone()),
                ..self.marker.clone()
            };
            write_marker(&self.root, &marker)?;
            self.marker = marker;
        }
        self.probed = true;
        Ok(caps)
    }

    /// Probes the vault's filesystem unless this process already did (it made the vault):
    /// what a writer calls when a job starts ([`Vault::probe_again`]).
    pub fn probe_once(&mut self) -> Result<()> {
        if !self.probed {
            self.probe_again()?;
        }
        Ok(())
    }

    /// What the vault's filesystem can do, as last recorded (`None`: never probed).
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.marker.capabilities.as_ref()
    }

    /// The vault's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The marker's contents.
    pub fn marker(&self) -> &Marker {
        &self.marker
    }

    /// The job folder for a sanitized folder name.
    pub fn job_dir(&self, folder: &str) -> JobDir {
        JobDir::new(&self.root, folder)
    }

    /// Every job folder of the vault (folders holding a job.toml), sorted by name.
    pub fn jobs(&self) -> Result<Vec<JobDir>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).ctx("cannot list vault", &self.root)? {
            let entry = entry.ctx("cannot list vault", &self.root)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let jd = self.job_dir(&name);
            if jd.job_toml().is_file() {
                out.push(jd);
            }
        }
        out.sort_by(|a, b| a.folder.cmp(&b.folder));
        Ok(out)
    }
}

/// Writes the marker atomically and durably (a temp file beside it, fsync, rename).
fn write_marker(root: &Path, marker: &Marker) -> Result<()> {
    let text = toml::to_string(marker).map_err(|e| Error::Invalid(e.to_string()))?;
    fsutil::write_atomic_beside(&root.join(MARKER), text.as_bytes())
}

/// The directories `create_dir_all(path)` would make, deepest first.
fn missing_ancestors(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
        .map(Path::to_path_buf)
        .collect()
}

/// Removes the directories [`missing_ancestors`] named, deepest first (each only if empty).
fn remove_made(made: &[PathBuf]) {
    for dir in made {
        if fs::remove_dir(dir).is_err() {
            return;
        }
    }
}

/// Reads the capabilities recorded in the marker of the vault at `root`, for a tool that
/// has only the path (a job opened by its folder); `None` when the marker has none or
/// cannot be read (the caller then assumes a filesystem that keeps everything, as before
/// the probe existed; opening the vault itself reports a bad marker).
pub fn recorded_capabilities(root: &Path) -> Option<Capabilities> {
    let text = fs::read_to_string(root.join(MARKER)).ok()?;
    toml::from_str::<Marker>(&text).ok()?.capabilities
}

fn random_id() -> String {
    let mut buf = [0u8; 16];
    let ok = fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        buf[..16].copy_from_slice(&(t.as_nanos() ^ u128::from(std::process::id())).to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub use crate::format::version::VersionName;

/// One job's folder inside a vault, knowing the vault it is in.
#[derive(Debug, Clone)]
pub struct JobDir {
    /// `<vault>/<folder>` (or `.` once [anchored](JobDir::anchored)).
    pub path: PathBuf,
    /// The sanitized folder name.
    pub folder: String,
    /// The vault's root directory, as given.
    vault: PathBuf,
}

impl JobDir {
    /// The folder `folder` (sanitized) of the vault at `vault_root`.
    pub fn new(vault_root: &Path, folder: &str) -> JobDir {
        JobDir {
            path: vault_root.join(folder),
            folder: folder.to_owned(),
            vault: vault_root.to_path_buf(),
        }
    }

    /// The same job folder reached as `.`, the process's working directory (the caller has
    /// entered it); the vault root stays the one given.
    pub fn anchored(&self) -> JobDir {
        JobDir {
            path: PathBuf::from("."),
            folder: self.folder.clone(),
            vault: self.vault.clone(),
        }
    }

    /// The root directory of the vault holding this job folder.
    pub fn vault_root(&self) -> &Path {
        &self.vault
    }

    /// `job.toml`
    pub fn job_toml(&self) -> PathBuf {
        self.path.join("job.toml")
    }
    /// `index.tsv`
    pub fn index(&self) -> PathBuf {
        self.path.join("index.tsv")
    }
    /// `journal.tsv`
    pub fn journal(&self) -> PathBuf {
        self.path.join("journal.tsv")
    }
    /// `lock`
    pub fn lock(&self) -> PathBuf {
        self.path.join("lock")
    }
    /// `run.lock`
    pub fn run_lock(&self) -> PathBuf {
        self.path.join("run.lock")
    }
    /// `current`
    pub fn current(&self) -> PathBuf {
        self.path.join("current")
    }
    /// `.partial/`
    pub fn partial(&self) -> PathBuf {
        self.path.join(".partial")
    }
    /// `.tmp/`: the job's temporaries (created on demand, emptied by recovery).
    pub fn tmp(&self) -> PathBuf {
        self.path.join(fsutil::TMP_DIR)
    }
    /// The directory of a version.
    pub fn version(&self, v: &VersionName) -> PathBuf {
        self.path.join(&v.dir)
    }

    /// Does the job exist (has a job.toml)?
    pub fn exists(&self) -> bool {
        self.job_toml().is_file()
    }

    /// The complete versions on disk, sorted by `n`.
    pub fn versions_on_disk(&self) -> Result<Vec<VersionName>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.path).ctx("cannot list job folder", &self.path)? {
            let entry = entry.ctx("cannot list job folder", &self.path)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(v) = VersionName::parse(&name)
                && entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
            {
                out.push(v);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Points `current` at `v`, atomically.
    pub fn set_current(&self, v: &VersionName) -> Result<()> {
        set_current(&self.path, v)
    }

    /// What `current` points at, if it is a link to a version name.
    pub fn read_current(&self) -> Option<String> {
        fs::read_link(self.current())
            .ok()
            .and_then(|t| t.to_str().map(str::to_owned))
    }
}

/// Points `current` of the job folder `job` at `v`, atomically (durable when it returns).
pub fn set_current(job: &Path, v: &VersionName) -> Result<()> {
    fsutil::replace_symlink_via_tmp(Path::new(&v.dir), &job.join("current"))?;
    fsutil::fsync_dir(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names() {
        let v = VersionName::parse("V12-20261124T214900Z").expect("valid");
        assert_eq!(v.n, 12);
        assert!(VersionName::parse("V012-20261124T214900Z").is_none());
        assert!(VersionName::parse("V1-2026").is_none());
        assert!(VersionName::parse("current").is_none());
        let mut names = [
            VersionName::parse("V10-20261124T214900Z").expect("v10"),
            VersionName::parse("V9-20261124T214900Z").expect("v9"),
        ];
        names.sort();
        assert_eq!(names[0].n, 9);
    }

    #[test]
    fn vault_only_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("v");
        let err = Vault::open(&root).expect_err("no vault yet");
        assert_eq!(err.exit_code(), crate::error::EXIT_TEMPFAIL);
        assert!(!root.exists(), "open must not create anything");
        let v = Vault::init(&root).expect("init");
        let again = Vault::init(&root).expect("init is a no-op");
        assert_eq!(v.marker().id, again.marker().id);
        Vault::open(&root).expect("opens");
        assert!(v.capabilities().is_some_and(|c| c.symlinks), "probed");
    }

    #[test]
    fn an_old_marker_without_capabilities_is_read_and_probed_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "format = 1\nid = \"0123\"\ncreated = \"2026-01-01T00:00:00Z\"\n";
        fs::write(dir.path().join(MARKER), text).expect("write");
        let mut v = Vault::open(dir.path()).expect("old marker");
        assert!(v.capabilities().is_none());
        assert!(recorded_capabilities(dir.path()).is_none());
        let caps = v.probe_again().expect("probe");
        let reread = Vault::open(dir.path()).expect("open");
        assert_eq!(reread.marker().id, "0123", "same vault");
        assert_eq!(reread.capabilities(), Some(&caps));
        assert_eq!(recorded_capabilities(dir.path()), Some(caps));
    }
}
