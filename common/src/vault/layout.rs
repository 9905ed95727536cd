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
use crate::format::time;
use crate::fsutil;

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
}

/// An open vault (its marker was found and read).
#[derive(Debug, Clone)]
pub struct Vault {
    root: PathBuf,
    marker: Marker,
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
        })
    }

    /// Creates the vault at `root` (directory and marker) if it is not one yet; opens it.
    pub fn init(root: &Path) -> Result<Vault> {
        if !root.is_absolute() {
            return Err(Error::Usage(format!(
                "vault path {} is relative: give an absolute path",
                crate::error::show(root)
            )));
        }
        let marker_path = root.join(MARKER);
        if !marker_path.exists() {
            fs::create_dir_all(root).ctx("cannot create vault directory", root)?;
            let marker = Marker {
                format: FORMAT,
                id: random_id(),
                created: time::now_rfc3339(),
            };
            let text = toml::to_string(&marker).map_err(|e| Error::Invalid(e.to_string()))?;
            fsutil::write_atomic_beside(&marker_path, text.as_bytes())?;
        }
        Vault::open(root)
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
    }
}
