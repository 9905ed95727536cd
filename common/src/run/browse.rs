//! What `reverb-web` reads (docs/web.md): the jobs of a configuration or of one vault, one
//! directory of a version, one entry of a version opened for reading, and the journal's
//! summary per job (how long each version took, failures, changed-during-copy marks).
//! Read-only: nothing here writes to a vault.
//!
//! Owns: turning a path a browser sent into a path inside a version ([`inside_version`]),
//! and resolving it there without ever leaving the version ([`locate`], [`open_in`]).
//!
//! Invariants (the web interface serves nothing outside a version):
//! - A path is a list of plain names: `..`, an absolute path, an empty or `.` name and a
//!   NUL are refused ([`Error::Refused`]) before the disk is touched.
//! - Resolution goes one name at a time, from the version root: a vault link is followed
//!   by its *text* to the same path in its holder (the vault's own reading of a tree,
//!   [`tree::classify`]); any other symlink (a source link) ends the resolution: it is
//!   shown as a link, never followed, and a path through it is refused.
//! - Data is read through [`open_in`]: one `openat(O_NOFOLLOW)` per name from the job
//!   folder, so even a directory swapped for a symlink after [`locate`] looked at it is not
//!   followed.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use crate::error::{Error, IoContext, Result, show};
use crate::format::journal::{self, JournalEvent};
use crate::format::settings::JobSettings;
use crate::format::time;
use crate::format::tsv;
use crate::format::version::VersionName;
use crate::vault::layout::{JobDir, Vault};
use crate::vault::tree::{self, Entry, Lookalikes};

/// A job as the web interface shows it.
#[derive(Debug, Clone)]
pub struct FoundJob {
    /// The job's name (from the configuration, or job.toml).
    pub name: String,
    /// Its folder in the vault.
    pub dir: JobDir,
    /// The vault's root.
    pub vault: PathBuf,
    /// The source, when a configuration names it.
    pub source: Option<PathBuf>,
    /// The settings the configuration gives (None: read job.toml's).
    pub settings: Option<JobSettings>,
}

/// The jobs of configuration file `config` (looked up as the porcelain does when None), or
/// of the vault `vault` when given.
pub fn jobs(config: Option<&Path>, vault: Option<&Path>) -> Result<Vec<FoundJob>> {
    if let Some(v) = vault {
        let opened = Vault::open(v)?;
        let mut out = Vec::new();
        for dir in opened.jobs()? {
            let file = crate::format::jobfile::JobFile::read(&dir.job_toml())?;
            out.push(FoundJob {
                name: file.name,
                dir,
                vault: v.to_path_buf(),
                source: None,
                settings: None,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        return Ok(out);
    }
    let file = crate::run::config::locate(config)?;
    let cfg = crate::run::config::load(&file)?;
    Ok(cfg
        .jobs
        .into_iter()
        .map(|j| FoundJob {
            dir: JobDir::new(&j.vault, &j.folder),
            name: j.name,
            vault: j.vault,
            source: Some(j.source),
            settings: Some(j.settings),
        })
        .collect())
}

impl FoundJob {
    /// The job's settings: the configuration's, else job.toml's, else the defaults.
    pub fn settings(&self) -> JobSettings {
        if let Some(s) = &self.settings {
            return s.clone();
        }
        crate::format::jobfile::JobFile::read(&self.dir.job_toml())
            .map(|f| f.settings)
            .unwrap_or_default()
    }
}

/// A path as a browser sent it (`/`-separated, already percent-decoded, may be empty), as
/// a path inside a version. Refuses `..`, `.`, empty names, an absolute path, a NUL.
pub fn inside_version(text: &[u8]) -> Result<PathBuf> {
    let refuse = |why: &str| {
        Err(Error::Refused(format!(
            "path `{}` {why}: only a path inside the version is served",
            tsv::escape_bytes(text)
        )))
    };
    if text.is_empty() {
        return Ok(PathBuf::new());
    }
    if text.starts_with(b"/") {
        return refuse("is absolute");
    }
    if text.contains(&0) {
        return refuse("holds a NUL byte");
    }
    // One trailing slash (a folder's URL) is fine; an empty name elsewhere is not.
    let text = text.strip_suffix(b"/").unwrap_or(text);
    let mut out = PathBuf::new();
    for name in text.split(|b| *b == b'/') {
        match name {
            b"" => return refuse("has an empty name"),
            b"." | b".." => return refuse("has a `.` or `..` name"),
            n => out.push(OsStr::from_bytes(n)),
        }
    }
    Ok(out)
}

/// What an entry of a version is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A source link (a symlink the source had), with its text: shown, never followed.
    Link(PathBuf),
    /// A FIFO, socket or device node.
    Other,
}

impl Kind {
    fn of(abs: &Path, meta: &fs::Metadata) -> Result<Kind> {
        let ft = meta.file_type();
        Ok(if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Link(fs::read_link(abs).ctx("cannot read link", abs)?)
        } else {
            Kind::Other
        })
    }

    /// `dir`, `file`, `link` or `other`.
    pub fn word(&self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Link(_) => "link",
            Kind::Other => "other",
        }
    }
}

/// An entry of a version, found where it physically is.
#[derive(Debug, Clone)]
pub struct Located {
    /// The version directory that holds it (the version itself, or an older one its vault
    /// links lead to).
    pub phys: String,
    /// Its path relative to the version root.
    pub rel: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// Its metadata (not following it).
    pub meta: fs::Metadata,
}

impl Located {
    /// Where it is on disk (for showing; read data through [`open_in`]).
    pub fn abs(&self, dir: &JobDir) -> PathBuf {
        tree::in_version(&dir.path, &self.phys, &self.rel)
    }

    /// The version holds this entry itself: it was added or changed in it.
    pub fn own(&self, version: &str) -> bool {
        self.phys == version
    }

    /// Its mtime.
    pub fn mtime(&self) -> Option<SystemTime> {
        self.meta.modified().ok()
    }
}

/// Finds `rel` in version `version` of job `dir` (see the module's invariants): `None`
/// when it does not exist there; [`Error::Refused`] when the path goes through a source
/// link (a symlink the source had, which is never followed).
pub fn locate(
    dir: &JobDir,
    lookalikes: &Lookalikes,
    version: &str,
    rel: &Path,
) -> Result<Option<Located>> {
    if VersionName::parse(version).is_none() {
        return Err(Error::Refused(format!(
            "`{}` is not a version directory",
            version.escape_debug()
        )));
    }
    let names: Vec<&OsStr> = normal_names(rel)?;
    let mut phys = version.to_owned();
    let mut sofar = PathBuf::new();
    let root = dir.path.join(version);
    let mut meta = match fs::symlink_metadata(&root) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("cannot inspect", &root),
    };
    for (i, name) in names.iter().enumerate() {
        if !meta.is_dir() {
            if meta.file_type().is_symlink() {
                return Err(Error::Refused(format!(
                    "{} is a link in the source: it is shown as a link and never followed",
                    show(&sofar)
                )));
            }
            return Ok(None);
        }
        sofar.push(name);
        let abs = dir.path.join(&phys).join(&sofar);
        meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("cannot inspect", &abs),
        };
        if let Entry::VaultLink { holder } =
            tree::classify(&abs, &sofar, &phys, meta.file_type(), lookalikes)?
        {
            if holder == phys {
                return Err(Error::Damaged(format!("{} links to itself", show(&abs))));
            }
            // Every name of the holder's path must be a real directory (I1): checked, not
            // assumed, so a damaged vault cannot lead anywhere else.
            let mut prefix = PathBuf::new();
            for n in &names[..i] {
                prefix.push(n);
                let p = dir.path.join(&holder).join(&prefix);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {}
                    _ => return Ok(None),
                }
            }
            phys = holder;
            let target = dir.path.join(&phys).join(&sofar);
            meta = match fs::symlink_metadata(&target) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).ctx("cannot inspect", &target),
            };
            if meta.file_type().is_symlink()
                && matches!(
                    tree::classify(&target, &sofar, &phys, meta.file_type(), lookalikes)?,
                    Entry::VaultLink { .. }
                )
            {
                return Err(Error::Damaged(format!(
                    "{} is a vault link to a vault link",
                    show(&abs)
                )));
            }
        }
    }
    let abs = tree::in_version(&dir.path, &phys, &sofar);
    let kind = Kind::of(&abs, &meta)?;
    Ok(Some(Located {
        phys,
        rel: sofar,
        kind,
        meta,
    }))
}

/// The plain names of a relative path; anything else is refused.
fn normal_names(rel: &Path) -> Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(Error::Refused(format!(
                "{} is not a plain path inside the version",
                show(rel)
            ))),
        })
        .collect()
}

/// Opens the regular file `rel` physically in version `phys` of job `dir` for reading,
/// one name at a time with `O_NOFOLLOW` from the job folder: nothing on the way may be a
/// symlink, and the last must be a regular file.
pub fn open_in(dir: &JobDir, phys: &str, rel: &Path) -> Result<File> {
    let abs = tree::in_version(&dir.path, phys, rel);
    let refused = || {
        Error::Refused(format!(
            "{} is not a regular file inside the version",
            show(&abs)
        ))
    };
    let job: OwnedFd = File::open(&dir.path).ctx("cannot open", &dir.path)?.into();
    let mut names: Vec<&OsStr> = vec![OsStr::new(phys)];
    names.extend(normal_names(rel)?);
    let last = names.len() - 1;
    let mut at = job;
    for (i, name) in names.iter().enumerate() {
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | if i < last {
                OFlag::O_DIRECTORY
            } else {
                OFlag::O_NONBLOCK
            };
        at = openat(at.as_fd(), *name, flags, Mode::empty()).map_err(|e| match e {
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => refused(),
            other => Error::Io {
                what: "cannot open",
                path: abs.clone(),
                source: other.into(),
            },
        })?;
    }
    let file = File::from(at);
    if !file.metadata().ctx("cannot inspect", &abs)?.is_file() {
        return Err(refused());
    }
    Ok(file)
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its name.
    pub name: OsString,
    /// The entry itself, where it physically is.
    pub entry: Located,
    /// The version holds it itself (added or changed in it) rather than linking to an
    /// older one.
    pub own: bool,
}

/// The entries of directory `at` (found by [`locate`]) as version `version` holds them,
/// sorted by name; vault links are shown as what they stand for.
pub fn list(
    dir: &JobDir,
    lookalikes: &Lookalikes,
    version: &str,
    at: &Located,
) -> Result<Vec<Listed>> {
    let abs = at.abs(dir);
    let mut out = Vec::new();
    for e in fs::read_dir(&abs).ctx("cannot list", &abs)? {
        let e = e.ctx("cannot list", &abs)?;
        let ft = e.file_type().ctx("cannot inspect", &e.path())?;
        let rel = at.rel.join(e.file_name());
        let (phys, path) = match tree::classify(&e.path(), &rel, &at.phys, ft, lookalikes)? {
            Entry::VaultLink { holder } => {
                let p = tree::in_version(&dir.path, &holder, &rel);
                (holder, p)
            }
            Entry::Real(_) => (at.phys.clone(), e.path()),
        };
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue; // a dangling vault link: `reverb-index --check` reports it
        };
        let kind = Kind::of(&path, &meta)?;
        out.push(Listed {
            name: e.file_name(),
            own: phys == version,
            entry: Located {
                phys,
                rel,
                kind,
                meta,
            },
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What a job's journal says, read in one pass.
#[derive(Debug, Clone, Default)]
pub struct JournalSummary {
    /// Per version directory: seconds from the version's stamp (when its build began) to
    /// its `snapshot` line (when it was published); whole-second precision at the start.
    pub durations: Vec<(String, f64)>,
    /// `error` lines.
    pub errors: u64,
    /// Per version directory: the paths journaled `changed-during-copy` while it was built.
    pub changed_during_copy: HashMap<String, Vec<String>>,
}

/// Reads job `dir`'s journal (a missing or unreadable journal is an empty summary; lines
/// that do not parse are skipped).
pub fn journal_summary(dir: &JobDir) -> JournalSummary {
    let mut out = JournalSummary::default();
    let Ok(text) = fs::read_to_string(dir.journal()) else {
        return out;
    };
    let mut seen = Vec::new();
    for e in text
        .lines()
        .skip(1)
        .filter_map(|l| journal::Entry::parse(l).ok())
    {
        match e.event {
            JournalEvent::Error => out.errors += 1,
            JournalEvent::ChangedDuringCopy => seen.push(tsv::escape_bytes(&e.path)),
            JournalEvent::Snapshot => {
                let Some(v) = journal::snapshot_version(&e.detail) else {
                    continue;
                };
                let began = v
                    .split_once('-')
                    .and_then(|(_, stamp)| time::parse_stamp(stamp));
                if let (Some(began), Some(done)) = (began, time::parse_rfc3339(&e.time)) {
                    let secs = done
                        .duration_since(began)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    out.durations.push((v.to_owned(), secs));
                }
                if !seen.is_empty() {
                    out.changed_during_copy
                        .insert(v.to_owned(), std::mem::take(&mut seen));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "V1-20261124T214900Z";
    const V2: &str = "V2-20261124T214901Z";

    /// A job whose V1 holds `a` as a symlink out of the vault (a source link) and whose V2
    /// holds a real `a/` with a vault link `a/secret` into V1 (shaped right, but leading
    /// through that symlink: a tampered vault).
    fn tampered() -> (tempfile::TempDir, JobDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("secret"), b"secret").expect("write");
        let job = JobDir::new(tmp.path(), "job");
        fs::create_dir_all(job.path.join(V1)).expect("mkdir");
        std::os::unix::fs::symlink(&outside, job.path.join(V1).join("a")).expect("link");
        fs::create_dir_all(job.path.join(V2).join("a")).expect("mkdir");
        std::os::unix::fs::symlink(
            tree::link_text(Path::new("a/secret"), V1),
            job.path.join(V2).join("a/secret"),
        )
        .expect("link");
        fs::write(job.path.join(V2).join("plain"), b"ok").expect("write");
        (tmp, job)
    }

    #[test]
    fn nothing_is_resolved_or_opened_through_a_symlink() {
        let (_tmp, job) = tampered();
        let none = Lookalikes::default();
        // A path through a source link is refused, not followed.
        assert!(matches!(
            locate(&job, &none, V1, Path::new("a/secret")),
            Err(Error::Refused(_))
        ));
        // The link itself is shown as a link.
        let a = locate(&job, &none, V1, Path::new("a"))
            .expect("a")
            .expect("exists");
        assert!(matches!(a.kind, Kind::Link(_)));
        // A vault link whose holder path runs through a symlink leads nowhere.
        assert!(
            locate(&job, &none, V2, Path::new("a/secret"))
                .expect("locate")
                .is_none()
        );
        // And the data is never opened through it, whatever a caller asks.
        assert!(matches!(
            open_in(&job, V1, Path::new("a/secret")),
            Err(Error::Refused(_))
        ));
        assert!(open_in(&job, V1, Path::new("a")).is_err());
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut open_in(&job, V2, Path::new("plain")).expect("a real file"),
            &mut text,
        )
        .expect("read");
        assert_eq!(text, "ok");
        // Not a version directory.
        assert!(matches!(
            locate(&job, &none, "index.tsv", Path::new("")),
            Err(Error::Refused(_))
        ));
    }

    #[test]
    fn only_plain_paths_inside_a_version() {
        assert_eq!(inside_version(b"").expect("root"), PathBuf::new());
        assert_eq!(inside_version(b"a/b").expect("a/b"), PathBuf::from("a/b"));
        assert_eq!(
            inside_version(b"a/b/").expect("slash"),
            PathBuf::from("a/b")
        );
        for bad in [
            &b"../etc"[..],
            b"a/../../etc",
            b"/etc/passwd",
            b"a//b",
            b"./a",
            b"a/\0",
        ] {
            assert!(
                matches!(inside_version(bad), Err(Error::Refused(_))),
                "{bad:?}"
            );
        }
    }
}
