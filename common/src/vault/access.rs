//! Who may read the vault (docs/security.md#who-may-read-the-vault): the modes and group of
//! the vault's root, a job's folder and every record in it (job.toml, index.tsv,
//! journal.tsv, the lock files, `checksums/`, climbing.tsv, hardlinks.tsv, retiring.tsv,
//! the lookalike registry, `.tmp/`, `.partial/`), as a job's `vault_group` asks: the owner
//! only (folders 0700, files 0600), or the owner and that group (0750, 0640).
//!
//! Owns: resolving `vault_group` ([`of_settings`]), putting an existing vault right
//! ([`enforce`], at every start of a writer: a vault written before this rule, or whose
//! `vault_group` changed, is fixed then) and finding what is wider than configured
//! ([`wider`], for `reverberator verify`). New records get their access where they are
//! created ([`crate::fsutil::Access`]: from the folder they are created in).
//!
//! Invariants: a version's own tree is never touched (it keeps the source's modes; the job
//! folder around it is what keeps other users out); symlinks are never followed nor
//! changed; the vault's root is shared with a group only when a job of the vault shares
//! with that group, and otherwise private.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::jobfile::JobFile;
use crate::format::settings::JobSettings;
use crate::format::source_index;
use crate::fsutil::{self, Access};
use crate::vault::layout::{JobDir, MARKER, VersionName};

/// The access a job's settings ask for: private, or shared with `vault_group` (a group name,
/// or a number). A group that does not exist, or that this user may not give files, is
/// [`Error::Usage`] naming it.
pub fn of_settings(settings: &JobSettings) -> Result<Access> {
    let Some(name) = &settings.vault_group else {
        return Ok(Access::PRIVATE);
    };
    let gid = group_id(name)?;
    if !fsutil::may_use_group(gid) {
        return Err(Error::Usage(format!(
            "vault_group `{name}`: this user is not a member of the group, so it cannot give the vault's files to it"
        )));
    }
    Ok(Access::shared(gid))
}

/// The id of the group `name` (or `name` itself when it is a number).
fn group_id(name: &str) -> Result<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => name.parse().map_err(|_| {
            Error::Usage(format!(
                "vault_group `{name}`: there is no group of that name on this system"
            ))
        }),
        Err(e) => Err(Error::Usage(format!(
            "vault_group `{name}`: cannot look the group up: {e}"
        ))),
    }
}

/// A name for a group in messages: `users (gid 100)`.
fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => format!("{} (gid {gid})", g.name),
        _ => format!("gid {gid}"),
    }
}

/// One folder or file the rule covers.
struct Covered {
    /// Where it is.
    path: PathBuf,
    /// Its name relative to the job folder (`journal.tsv`, `..` for the vault's root).
    shown: PathBuf,
    meta: fs::Metadata,
    /// What it should be.
    access: Access,
}

/// The vault's root, its marker, the job folder and every record in it: the entries of the
/// job folder but the versions and symlinks, and the direct entries of `checksums/` and
/// `.tmp/` (`.partial/` only itself: what is in it are versions being built).
fn covered(job: &JobDir, access: Access) -> Result<Vec<Covered>> {
    let root = job.vault_root();
    let root_access = root_access(root, &job.folder, access);
    let mut out = Vec::new();
    let mut add = |path: PathBuf, shown: PathBuf, access: Access| -> Result<Option<bool>> {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("cannot inspect", &path),
        };
        if !(meta.is_dir() || meta.is_file()) {
            return Ok(None);
        }
        let is_dir = meta.is_dir();
        out.push(Covered {
            path,
            shown,
            meta,
            access,
        });
        Ok(Some(is_dir))
    };
    add(root.to_path_buf(), PathBuf::from(".."), root_access)?;
    add(root.join(MARKER), Path::new("..").join(MARKER), root_access)?;
    add(job.path.clone(), PathBuf::from("."), access)?;
    let entries = fs::read_dir(&job.path).ctx("cannot list job folder", &job.path)?;
    for entry in entries {
        let entry = entry.ctx("cannot list job folder", &job.path)?;
        let name = entry.file_name();
        let is_version = name.to_str().and_then(VersionName::parse).is_some();
        if is_version && entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue; // a version keeps the source's modes
        }
        let is_dir = add(entry.path(), PathBuf::from(&name), access)?;
        if is_dir == Some(true)
            && (name == "checksums" || name == source_index::DIR || name == fsutil::TMP_DIR)
        {
            let dir = entry.path();
            for inner in fs::read_dir(&dir).ctx("cannot list", &dir)? {
                let inner = inner.ctx("cannot list", &dir)?;
                add(
                    inner.path(),
                    Path::new(&name).join(inner.file_name()),
                    access,
                )?;
            }
        }
    }
    Ok(out)
}

/// The access of the vault's root: shared when the job `folder` shares (`access`) or
/// another job of the vault does (its job.toml's `vault_group`), private otherwise.
fn root_access(root: &Path, folder: &str, access: Access) -> Access {
    if access.group.is_some() {
        return access;
    }
    let Ok(entries) = fs::read_dir(root) else {
        return access;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str() == Some(folder) {
            continue;
        }
        let shared = JobFile::read(&entry.path().join("job.toml"))
            .ok()
            .and_then(|f| of_settings(&f.settings).ok())
            .filter(|a| a.group.is_some());
        if let Some(shared) = shared {
            return shared;
        }
    }
    Access::PRIVATE
}

/// One entry [`enforce`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    /// Relative to the job folder (`..` is the vault's root).
    pub path: PathBuf,
    pub was: u32,
    pub now: u32,
    /// The group it was given, when that changed.
    pub group: Option<u32>,
}

impl std::fmt::Display for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: mode {:04o} -> {:04o}",
            crate::error::show(&self.path),
            self.was,
            self.now
        )?;
        if let Some(g) = self.group {
            write!(f, ", group {}", group_name(g))?;
        }
        Ok(())
    }
}

/// Gives the vault's root, the job folder `job` and its records exactly the modes (and
/// group) `access` asks for; returns what it changed. Symlinks and versions are left alone,
/// and so is an entry another user owns (only its owner or root may change its mode): a
/// warning names it, and `verify` reports it while it is wider than configured.
pub fn enforce(job: &JobDir, access: Access) -> Result<Vec<Fixed>> {
    let euid = nix::unistd::geteuid();
    let mut fixed = Vec::new();
    for c in covered(job, access)? {
        let is_dir = c.meta.is_dir();
        let want = c.access.mode_for(is_dir);
        let was = c.meta.mode() & 0o7777;
        let regroup = c.access.group.filter(|&g| g != c.meta.gid());
        if was == want && regroup.is_none() {
            continue;
        }
        if !euid.is_root() && c.meta.uid() != euid.as_raw() {
            crate::error::warn(&format!(
                "{}: mode {was:04o} should be {want:04o}, but it belongs to uid {}, not to this user: left as it is",
                crate::error::show(&c.path),
                c.meta.uid()
            ));
            continue;
        }
        if let Some(gid) = regroup {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &c.path,
                None,
                Some(nix::unistd::Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(std::io::Error::from)
            .ctx("cannot give the vault's group to", &c.path)?;
        }
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &c.path,
            nix::sys::stat::Mode::from_bits_truncate(want),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(std::io::Error::from)
        .ctx("cannot set the mode of", &c.path)?;
        fixed.push(Fixed {
            path: c.shown,
            was,
            now: want,
            group: regroup,
        });
    }
    Ok(fixed)
}

/// A folder or record more people may read than configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wider {
    /// Relative to the job folder (`..` is the vault's root).
    pub path: PathBuf,
    /// Its mode and what it should be at most, for people.
    pub detail: String,
}

/// Every covered entry that more people may read than `access` allows: a permission bit
/// beyond its mode, or group bits for another group than the shared one. Read-only.
pub fn wider(job: &JobDir, access: Access) -> Result<Vec<Wider>> {
    let mut found = Vec::new();
    for c in covered(job, access)? {
        let allowed = c.access.mode_for(c.meta.is_dir());
        let perm = c.meta.mode() & 0o777;
        let detail = if perm & !allowed != 0 {
            format!(
                "mode {perm:04o} is wider than {allowed:04o}: {}",
                match c.access.group {
                    Some(g) => format!(
                        "only the owner and vault_group {} may read it",
                        group_name(g)
                    ),
                    None => "only the owner may read it (no vault_group)".to_owned(),
                }
            )
        } else if perm & 0o070 != 0 && c.access.group != Some(c.meta.gid()) {
            format!(
                "mode {perm:04o} lets group {} in, which is not {}",
                group_name(c.meta.gid()),
                match c.access.group {
                    Some(g) => format!("vault_group {}", group_name(g)),
                    None => "configured (no vault_group)".to_owned(),
                }
            )
        } else {
            continue;
        };
        found.push(Wider {
            path: c.shown,
            detail,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("lstat").mode() & 0o7777
    }

    #[test]
    fn enforce_narrows_records_and_leaves_versions_and_links_alone() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("vault");
        let job = JobDir::new(&root, "j");
        fs::create_dir_all(job.path.join("checksums")).expect("mkdir");
        fs::create_dir_all(job.path.join("V1-20261201T000000Z/d")).expect("mkdir");
        for f in [
            "../reverberator-vault.toml",
            "journal.tsv",
            "index.tsv",
            "checksums/V1.tsv",
        ] {
            fs::write(job.path.join(f), b"x").expect("write");
            chmod(&job.path.join(f), 0o644);
        }
        std::os::unix::fs::symlink("V1-20261201T000000Z", job.path.join("current"))
            .expect("symlink");
        for d in [&root, &job.path, &job.path.join("checksums")] {
            chmod(d, 0o755);
        }
        chmod(&job.path.join("V1-20261201T000000Z/d"), 0o755);
        let before = wider(&job, Access::PRIVATE).expect("wider");
        assert_eq!(before.len(), 7, "{before:?}");
        let fixed = enforce(&job, Access::PRIVATE).expect("enforce");
        assert_eq!(fixed.len(), 7, "{fixed:?}");
        assert!(
            fixed
                .iter()
                .any(|f| f.to_string() == "journal.tsv: mode 0644 -> 0600"),
            "{fixed:?}"
        );
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&job.path.join("checksums/V1.tsv")), 0o600);
        assert_eq!(
            mode(&job.path.join("V1-20261201T000000Z/d")),
            0o755,
            "a version keeps its modes"
        );
        assert!(wider(&job, Access::PRIVATE).expect("wider").is_empty());
        assert!(
            enforce(&job, Access::PRIVATE).expect("again").is_empty(),
            "idempotent"
        );
        // Narrower than configured is not wider.
        let own = Access::shared(nix::unistd::getegid().as_raw());
        assert!(wider(&job, own).expect("wider").is_empty());
        enforce(&job, own).expect("share");
        assert_eq!(mode(&job.path.join("journal.tsv")), 0o640);
        assert_eq!(mode(&job.path), 0o750);
        assert_eq!(mode(&root), 0o750);
    }

    #[test]
    fn an_unknown_group_is_named() {
        let s = JobSettings {
            vault_group: Some("no-such-group-rvb".into()),
            ..JobSettings::default()
        };
        let e = of_settings(&s).expect_err("unknown");
        assert!(e.to_string().contains("no-such-group-rvb"), "{e}");
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        assert_eq!(
            of_settings(&JobSettings::default()).expect("none"),
            Access::PRIVATE
        );
    }
}
