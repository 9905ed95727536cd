//! Creating and opening jobs inside a vault (docs/format.md#vault-layout, docs/configuration.md): validation of the source, the
//! job folder's initial files, and the open context every writer works with.
//!
//! Invariants: a job folder is created complete-or-not-at-all from the readers' view
//! (job.toml, written last, is what makes a folder a job); nothing is written when the
//! source or the name is bad.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result, show};
use crate::format::capabilities::Capabilities;
use crate::format::index;
use crate::format::jobfile::{Identities, JobFile, JobState};
use crate::format::journal::{Journal, JournalEvent};
use crate::format::settings::{JobSettings, sanitize_job_name};
use crate::format::time;
use crate::fsutil;
use crate::vault::access;
use crate::vault::layout::{JobDir, Vault, recorded_capabilities};

/// An open job: its folder, its record and its journal. Callers hold the job lock.
pub struct JobCtx {
    /// The job folder.
    pub dir: JobDir,
    /// job.toml
    pub file: JobFile,
    /// The journal, opened for the calling tool.
    pub journal: Journal,
    /// What the vault's filesystem can do, as its marker records it (`None`: never probed;
    /// taken as a filesystem that keeps everything).
    pub capabilities: Option<Capabilities>,
}

/// Why a job's source or vault path is refused (docs/configuration.md#checks). The one set
/// of checks for a configured job, a job given on the command line and a job `reverb-snap`
/// creates; [`PathError::key`] names the key a configuration error points at.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("source {} is relative: give an absolute path", show(.0))]
    SourceRelative(PathBuf),
    #[error("source {} is not valid UTF-8 (job.toml stores it as text)", show(.0))]
    SourceNotUtf8(PathBuf),
    #[error("source {} does not exist", show(.0))]
    SourceMissing(PathBuf),
    #[error("source {}: {}", show(.0), .1)]
    SourceUnusable(PathBuf, std::io::Error),
    #[error("source {} is not a directory", show(.0))]
    SourceNotDirectory(PathBuf),
    #[error("source {} resolves to {}, which is not valid UTF-8", show(.0), show(.1))]
    SourceResolvesNotUtf8(PathBuf, PathBuf),
    #[error("vault {} must be an absolute path", show(.0))]
    VaultRelative(PathBuf),
    #[error("vault {}: {}", show(.0), .1)]
    VaultUnusable(PathBuf, std::io::Error),
    /// (vault, source)
    #[error(
        "vault {} is inside the source {}: every version would back up the vault",
        show(.0),
        show(.1)
    )]
    VaultInsideSource(PathBuf, PathBuf),
    /// (source, vault)
    #[error("source {} is inside the vault {}", show(.0), show(.1))]
    SourceInsideVault(PathBuf, PathBuf),
    /// (vault, source, the vault's folder that is the source): the paths differ, but a
    /// folder above the vault is the source's very directory (same device and inode).
    #[error(
        "vault {} is inside the source {}: {} is the same directory as the source, reached by another path (a bind mount or a link); every version would back up the vault",
        show(.0),
        show(.1),
        show(.2)
    )]
    VaultInsideSourceElsewhere(PathBuf, PathBuf, PathBuf),
    /// (source, vault, the source's folder that is the vault)
    #[error(
        "source {} is inside the vault {}: {} is the same directory as the vault, reached by another path (a bind mount or a link)",
        show(.0),
        show(.1),
        show(.2)
    )]
    SourceInsideVaultElsewhere(PathBuf, PathBuf, PathBuf),
}

impl PathError {
    /// The key the problem is about: `source` or `vault`.
    pub fn key(&self) -> &'static str {
        match self {
            PathError::VaultRelative(_)
            | PathError::VaultUnusable(..)
            | PathError::VaultInsideSource(..)
            | PathError::VaultInsideSourceElsewhere(..) => "vault",
            _ => "source",
        }
    }
}

impl From<PathError> for Error {
    fn from(e: PathError) -> Error {
        Error::Usage(e.to_string())
    }
}

/// Checks a job's source and vault: the source absolute, valid UTF-8 (also once resolved),
/// an existing directory; the vault absolute (it need not exist yet); the vault not inside
/// the source nor the source inside the vault, comparing real paths
/// ([`canonical_or_nearest`]) and then directories ([`nested_by_identity`]: the same
/// directory reached by another path, a bind mount). Returns the source canonicalized.
pub fn check_paths(source: &Path, vault: &Path) -> Result<PathBuf, PathError> {
    let at = || source.to_path_buf();
    if !source.is_absolute() {
        return Err(PathError::SourceRelative(at()));
    }
    if source.to_str().is_none() {
        return Err(PathError::SourceNotUtf8(at()));
    }
    let meta = fs::metadata(source).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PathError::SourceMissing(at()),
        _ => PathError::SourceUnusable(at(), e),
    })?;
    if !meta.is_dir() {
        return Err(PathError::SourceNotDirectory(at()));
    }
    if !vault.is_absolute() {
        return Err(PathError::VaultRelative(vault.to_path_buf()));
    }
    let source_real = fs::canonicalize(source).map_err(|e| PathError::SourceUnusable(at(), e))?;
    if source_real.to_str().is_none() {
        return Err(PathError::SourceResolvesNotUtf8(at(), source_real));
    }
    let vault_real =
        resolve_nearest(vault).map_err(|e| PathError::VaultUnusable(vault.to_path_buf(), e))?;
    if vault_real.starts_with(&source_real) {
        return Err(PathError::VaultInsideSource(vault.to_path_buf(), at()));
    }
    if source_real.starts_with(&vault_real) {
        return Err(PathError::SourceInsideVault(at(), vault.to_path_buf()));
    }
    nested_by_identity(source, &source_real, vault, &vault_real)?;
    Ok(source_real)
}

/// The (device, inode) of the directory at `path` (symlinks followed), if it can be read.
pub fn dir_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path)
        .ok()
        .filter(fs::Metadata::is_dir)
        .map(|m| (m.dev(), m.ino()))
}

/// The first of `real` and its ancestors that is the directory `id` (device and inode),
/// `real` being a real path (no symlinks, so each ancestor is a plain lookup). Parts that do
/// not exist yet are passed over: the nearest existing ancestor is where the lookup starts.
pub fn ancestor_identical_to(real: &Path, id: (u64, u64)) -> Option<PathBuf> {
    real.ancestors()
        .find(|a| dir_identity(a) == Some(id))
        .map(Path::to_path_buf)
}

/// The nesting check by directory, after the one by real path: a bind mount (or a path the
/// real-path comparison cannot see through) makes one directory reachable by two paths, so
/// a vault whose path never starts with the source's can still be inside it. Refuses when
/// the source's directory (same `st_dev` and `st_ino`) is the vault or one of its ancestors
/// (for a vault not made yet, from its nearest existing ancestor up), and the reverse.
fn nested_by_identity(
    source: &Path,
    source_real: &Path,
    vault: &Path,
    vault_real: &Path,
) -> Result<(), PathError> {
    if let Some(source_id) = dir_identity(source_real)
        && let Some(same) = ancestor_identical_to(vault_real, source_id)
    {
        return Err(PathError::VaultInsideSourceElsewhere(
            vault.to_path_buf(),
            source.to_path_buf(),
            same,
        ));
    }
    if let Some(vault_id) = dir_identity(vault_real)
        && let Some(same) = ancestor_identical_to(source_real, vault_id)
    {
        return Err(PathError::SourceInsideVaultElsewhere(
            source.to_path_buf(),
            vault.to_path_buf(),
            same,
        ));
    }
    Ok(())
}

/// [`check_paths`] for a writer: a refused path is [`Error::Usage`] (exit 2).
pub fn validate_source(source: &Path, vault_root: &Path) -> Result<PathBuf> {
    Ok(check_paths(source, vault_root)?)
}

/// The real path of `p`, which need not exist: its nearest existing ancestor canonicalized,
/// the rest re-appended with `.` and `..` resolved lexically; `p` itself when even that
/// fails (for comparing two paths).
pub fn canonical_or_nearest(p: &Path) -> PathBuf {
    resolve_nearest(p).unwrap_or_else(|_| p.to_path_buf())
}

/// [`canonical_or_nearest`], failing when no ancestor can be resolved.
pub fn resolve_nearest(path: &Path) -> std::io::Result<PathBuf> {
    use std::ffi::OsString;
    use std::path::Component;
    let mut existing = path.to_path_buf();
    let mut rest: Vec<OsString> = Vec::new();
    loop {
        match fs::canonicalize(&existing) {
            Ok(real) => {
                let mut out = real;
                for part in rest.iter().rev() {
                    match Path::new(part).components().next() {
                        Some(Component::ParentDir) => {
                            out.pop();
                        }
                        Some(Component::CurDir) | None => {}
                        Some(_) => out.push(part),
                    }
                }
                return Ok(out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match existing.file_name() {
                    Some(last) => rest.push(last.to_os_string()),
                    // `..` or `.` at the end of a missing path: keep it for later, climb on.
                    None => match existing.components().next_back() {
                        Some(Component::ParentDir) => rest.push(OsString::from("..")),
                        Some(Component::RootDir) | None => return Err(e),
                        _ => {}
                    },
                }
                if !existing.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The job of the vault at `vault_root` whose job.toml records `source` as its source: the
/// same directory (device and inode) when both exist, else the same real path. For refusing
/// a second job of one source in one vault before it is created (docs/configuration.md); a
/// vault that cannot be opened or listed, or a job.toml that cannot be read, has no such
/// job; a replica job records another machine's path, not a source, and is passed over.
pub fn job_of_source(vault_root: &Path, source: &Path) -> Option<JobFile> {
    let vault = Vault::open(vault_root).ok()?;
    let wanted = dir_identity(source);
    let real = canonical_or_nearest(source);
    vault.jobs().ok()?.into_iter().find_map(|dir| {
        let file = JobFile::read(&dir.job_toml())
            .ok()
            .filter(|f| f.state.replica_of.is_none())?;
        let same = match (wanted, dir_identity(&file.source)) {
            (Some(a), Some(b)) => a == b,
            _ => canonical_or_nearest(&file.source) == real,
        };
        same.then_some(file)
    })
}

/// The folder of job `name` in `vault` (the name sanitized; a bad name is a usage error).
pub fn job_dir(vault: &Vault, name: &str) -> Result<JobDir> {
    let folder = sanitize_job_name(name).map_err(Error::Usage)?;
    Ok(vault.job_dir(&folder))
}

/// Creates a new job: folder, lock, journal, empty index, and job.toml last.
pub fn create(
    vault: &Vault,
    name: &str,
    source: &Path,
    settings: JobSettings,
    identity: Identities,
) -> Result<JobDir> {
    settings
        .validate()
        .map_err(|m| Error::Usage(format!("job {name}: {m}")))?;
    let source = validate_source(source, vault.root())?;
    let access = access::of_settings(&settings)?;
    let dir = job_dir(vault, name)?;
    // Private (or shared with vault_group) from the start: every record below takes the
    // folder's access (docs/security.md#who-may-read-the-vault).
    if !fsutil::create_dir_with(&dir.path, access)? {
        if !dir.path.is_dir() {
            return Err(Error::Usage(format!(
                "job folder {} is not a directory",
                show(&dir.path)
            )));
        }
        access.apply_to_path(&dir.path)?;
    }
    fsutil::create_metadata_file(&dir.lock())?;
    let mut journal = Journal::open(&dir.journal(), "snap")?;
    if !dir.index().exists() {
        index::write(&dir.index(), &[])?;
    }
    let file = JobFile {
        name: name.to_owned(),
        source,
        created: time::now_rfc3339(),
        settings,
        identity,
        state: JobState::default(),
    };
    file.write(&dir.job_toml())?;
    journal.note(JournalEvent::Start, b"", &format!("job {name} created"));
    Ok(dir)
}

/// Creates a replica job (docs/design.md#replication): folder, lock, journal, empty index,
/// and job.toml last, recording `replica_of` (the source vault's id), the source's path as
/// text (never read here) and the replica vault's identity. Its settings are the source
/// job's (its retention is then its own).
pub fn create_replica(
    vault: &Vault,
    name: &str,
    source: &Path,
    settings: JobSettings,
    replica_of: &str,
) -> Result<JobDir> {
    settings
        .validate()
        .map_err(|m| Error::Usage(format!("job {name}: {m}")))?;
    let access = access::of_settings(&settings)?;
    let dir = job_dir(vault, name)?;
    // Private (or shared with vault_group) from the start, like any job.
    if !fsutil::create_dir_with(&dir.path, access)? {
        if !dir.path.is_dir() {
            return Err(Error::Usage(format!(
                "job folder {} is not a directory",
                show(&dir.path)
            )));
        }
        access.apply_to_path(&dir.path)?;
    }
    fsutil::create_metadata_file(&dir.lock())?;
    let mut journal = Journal::open(&dir.journal(), "receive")?;
    if !dir.index().exists() {
        index::write(&dir.index(), &[])?;
    }
    let source = if source.is_absolute() && source.to_str().is_some() {
        source.to_path_buf()
    } else {
        PathBuf::from("/")
    };
    let file = JobFile {
        name: name.to_owned(),
        source,
        created: time::now_rfc3339(),
        settings,
        identity: Identities {
            source: None,
            vault: crate::format::fs_identity::FsIdentity::of(vault.root()).ok(),
        },
        state: JobState {
            replica_of: Some(replica_of.to_owned()),
            ..JobState::default()
        },
    };
    file.write(&dir.job_toml())?;
    journal.note(
        JournalEvent::Start,
        b"",
        &format!("job {name} created as a replica of vault {replica_of}"),
    );
    Ok(dir)
}

/// Finds an existing job without opening anything for writing (readers: restore, index).
pub fn find(vault: &Vault, name: &str) -> Result<(JobDir, JobFile)> {
    let dir = existing(vault, name)?;
    let file = JobFile::read(&dir.job_toml())?;
    Ok((dir, file))
}

/// Opens an existing job for `tool`; an unknown job is an error naming the known ones.
pub fn open(vault: &Vault, name: &str, tool: &'static str) -> Result<JobCtx> {
    open_dir(existing(vault, name)?, tool)
}

pub(crate) fn existing(vault: &Vault, name: &str) -> Result<JobDir> {
    let dir = job_dir(vault, name)?;
    if !dir.exists() {
        let known: Vec<String> = vault.jobs()?.into_iter().map(|j| j.folder).collect();
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        return Err(Error::Usage(format!(
            "unknown job `{name}` in vault {} (jobs there: {known})",
            show(vault.root())
        )));
    }
    Ok(dir)
}

/// Opens a job folder known to exist.
pub fn open_dir(dir: JobDir, tool: &'static str) -> Result<JobCtx> {
    let file = JobFile::read(&dir.job_toml())?;
    let journal = Journal::open(&dir.journal(), tool)?;
    let capabilities = recorded_capabilities(dir.vault_root());
    Ok(JobCtx {
        dir,
        file,
        journal,
        capabilities,
    })
}

/// The identities of a new job's source and vault, as far as they can be gathered.
pub fn record_identities(source: &Path, vault_root: &Path) -> Identities {
    Identities {
        source: crate::format::fs_identity::FsIdentity::of(source).ok(),
        vault: crate::format::fs_identity::FsIdentity::of(vault_root).ok(),
    }
}

/// Checks that the source and the vault are still on the filesystems recorded for the job
/// (docs/identity.md). A mismatch is [`Error::IdentityMismatch`] (exit 75); a source mismatch is
/// journaled (the vault matched, so the journal is trustworthy).
pub fn verify_identities(ctx: &mut JobCtx, vault_root: &Path) -> Result<()> {
    use crate::capture::identity::{JobMismatch, verify_job};
    match verify_job(&ctx.file.identity, &ctx.file.source, vault_root) {
        Ok(()) => Ok(()),
        Err(JobMismatch::Vault(e)) => Err(e),
        Err(JobMismatch::Source(e)) => {
            ctx.journal
                .note(JournalEvent::MountLost, b"", &e.to_string());
            Err(e)
        }
    }
}

/// Says what the vault's filesystem makes the tools do differently (the capability
/// record's adaptations, docs/filesystems.md): one `vault-capability` journal line each,
/// and a warning, the first time the job meets them and again when they change (job.toml
/// remembers what was said). Returns the lines said (empty when nothing new).
pub fn note_capabilities(ctx: &mut JobCtx) -> Result<Vec<String>> {
    let Some(caps) = &ctx.capabilities else {
        return Ok(Vec::new());
    };
    let adapted = caps.adaptations();
    let now = (!adapted.is_empty()).then(|| caps.summary());
    if now == ctx.file.state.vault_capabilities_noted {
        return Ok(Vec::new());
    }
    let said: Vec<String> = if adapted.is_empty() {
        vec![format!(
            "the vault's filesystem ({}) keeps everything a version holds again",
            caps.fstype
        )]
    } else {
        adapted
            .iter()
            .map(|a| format!("vault on {}: {a}", caps.fstype))
            .collect()
    };
    for line in &said {
        ctx.journal.note(JournalEvent::VaultCapability, b"", line);
    }
    ctx.file.state.vault_capabilities_noted = now;
    ctx.file.write(&ctx.dir.job_toml())?;
    Ok(said)
}

/// Applies settings from the configuration to job.toml when they changed (journaled);
/// says whether they did.
pub fn update_settings(ctx: &mut JobCtx, settings: &JobSettings) -> Result<bool> {
    if &ctx.file.settings == settings {
        return Ok(false);
    }
    if ctx.file.settings.keep_complete != settings.keep_complete {
        return Err(Error::Usage(format!(
            "job {}: keep_complete cannot change after the job was created (it decides what the first version holds); make a new job",
            ctx.file.name
        )));
    }
    ctx.file.settings = settings.clone();
    ctx.file.write(&ctx.dir.job_toml())?;
    ctx.journal
        .note(JournalEvent::Config, b"", "settings changed");
    Ok(true)
}

/// Puts right who may read the vault's root, the job folder and its records, as the job's
/// `vault_group` asks (docs/security.md#who-may-read-the-vault): a vault written before
/// that rule, or whose `vault_group` changed, is fixed at the next start of a writer, one
/// journal line (`permissions`) per path changed. A `vault_group` that cannot be used is
/// [`Error::Usage`] naming it.
pub fn secure(ctx: &mut JobCtx) -> Result<()> {
    let access = access::of_settings(&ctx.file.settings)?;
    for fixed in access::enforce(&ctx.dir, access)? {
        ctx.journal.note(
            JournalEvent::Permissions,
            b"",
            &format!(
                "{fixed} (docs/security.md: {})",
                if access.group.is_some() {
                    "shared with vault_group"
                } else {
                    "only the owner may read the vault"
                }
            ),
        );
    }
    Ok(())
}

/// A copy of `ctx` whose job folder is reached relative to the process's working directory,
/// entered now (after the identity check): the working directory pins the directory itself,
/// so a disk unmounted, or something mounted over the vault, during the run cannot redirect
/// a single write (docs/identity.md). Lookups stay as cheap as plain paths (a `/proc/self/fd/N/…`
/// path would cost a procfs walk per system call). The source keeps its path: it is only
/// read, and a source lost mid-run is caught by the next identity check and the deletion
/// guard. The process's working directory stays in the job folder afterwards.
pub fn anchored(ctx: &JobCtx) -> Result<JobCtx> {
    use std::os::unix::fs::MetadataExt;
    let real = &ctx.dir.path;
    let checked = fs::metadata(real).ctx("cannot inspect", real)?;
    std::env::set_current_dir(real).ctx("cannot enter", real)?;
    let here = fs::metadata(".").ctx("cannot inspect", real)?;
    if (checked.dev(), checked.ino()) != (here.dev(), here.ino()) {
        return Err(Error::IdentityMismatch(format!(
            "{} changed while it was being entered",
            show(real)
        )));
    }
    crate::error::register_alias(Path::new("."), real);
    Ok(JobCtx {
        dir: ctx.dir.anchored(),
        file: ctx.file.clone(),
        journal: ctx.journal.try_clone()?,
        capabilities: ctx.capabilities.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_of_path_checks() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = tmp.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        std::os::unix::fs::symlink(&src, tmp.path().join("alias")).expect("symlink");
        let refused = |source: &Path, vault: &Path| {
            let e = check_paths(source, vault).expect_err("refused");
            (e.key(), e.to_string())
        };
        // A vault that does not exist yet, reached through `..` and a symlink.
        let (key, msg) = refused(&src, &tmp.path().join("alias/x/../new/vault"));
        assert_eq!(key, "vault");
        assert!(msg.contains("is inside the source"), "{msg}");
        let (key, msg) = refused(&src, tmp.path());
        assert_eq!(key, "source");
        assert!(msg.contains("is inside the vault"), "{msg}");
        assert_eq!(refused(Path::new("src"), tmp.path()).0, "source");
        assert_eq!(refused(&src, Path::new("vault")).0, "vault");
        assert!(
            refused(&tmp.path().join("nope"), Path::new("/v"))
                .1
                .contains("does not exist")
        );
        let real = fs::canonicalize(&src).expect("real");
        assert_eq!(
            check_paths(&tmp.path().join("alias"), Path::new("/v")).expect("ok"),
            real
        );
        let e = validate_source(&src, &src.join("v")).expect_err("usage");
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
    }
}
