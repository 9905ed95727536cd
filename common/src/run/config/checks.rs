//! The checks that look at more than one key or job: a job's source and vault against
//! each other and the disk, the two snapshot times together, no vault inside any job's
//! source, one folder per job and vault, one `vault_group` per vault.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, show};
use crate::format::settings::{InvalidSetting, JobSettings};
use crate::vault::job::{
    PathError, ancestor_identical_to, canonical_or_nearest, check_paths, dir_identity,
};

use super::*;

/// [`check_paths`] as the configuration applies it: a source that does not exist is no
/// error (the job waits for it, paused), but it must still not hold the vault (compared by
/// nearest real paths); a vault that exists must be a directory. Returns the key and why.
pub(super) fn check_job_paths(
    source: &Path,
    vault: &Path,
) -> std::result::Result<(), (&'static str, String)> {
    match check_paths(source, vault) {
        Ok(_) => {}
        Err(PathError::SourceMissing(_)) => {
            if !vault.is_absolute() {
                return Err(("vault", PathError::VaultRelative(vault.into()).to_string()));
            }
            let (s, v) = (canonical_or_nearest(source), canonical_or_nearest(vault));
            if v.starts_with(&s) {
                let e = PathError::VaultInsideSource(vault.into(), source.into());
                return Err(("vault", e.to_string()));
            }
            if s.starts_with(&v) {
                let e = PathError::SourceInsideVault(source.into(), vault.into());
                return Err(("source", e.to_string()));
            }
        }
        Err(e) => return Err((e.key(), e.to_string())),
    }
    match fs::metadata(vault) {
        Ok(m) if !m.is_dir() => Err((
            "vault",
            format!(
                "vault {} exists and is not a directory: name a directory (or a path to create)",
                show(vault)
            ),
        )),
        _ => Ok(()),
    }
}

/// Zero `min_snapshot_time` with zero `max_snapshot_delay` would take a version at every event.
pub(super) fn check_times(settings: &JobSettings) -> std::result::Result<(), InvalidSetting> {
    if settings.min_snapshot_time.is_zero() && settings.max_snapshot_delay.is_zero() {
        return Err(InvalidSetting {
            key: "min_snapshot_time",
            message: "min_snapshot_time and max_snapshot_delay are both zero: set max_snapshot_delay (for example \"10m\") so changes are gathered into versions".into(),
        });
    }
    Ok(())
}

/// No job's vault may be inside another job's source: that job would back up the vault.
/// Compared by real paths, then by directory (a source reached by another path, a bind
/// mount, that is the vault or one of its ancestors).
pub(super) fn check_vaults_outside_sources(
    jobs: &[JobConfig],
    file: &Path,
    lines: &Lines,
) -> Result<()> {
    for job in jobs {
        let vault = canonical_or_nearest(&job.vault);
        for other in jobs.iter().filter(|o| o.name != job.name) {
            let source = canonical_or_nearest(&other.source);
            let elsewhere = dir_identity(&source).and_then(|id| ancestor_identical_to(&vault, id));
            if vault.starts_with(&source) || elsewhere.is_some() {
                let how = match &elsewhere {
                    Some(same) => format!(
                        " ({} is the same directory, reached by another path: a bind mount or a link)",
                        show(same)
                    ),
                    None => String::new(),
                };
                return Err(Place {
                    file,
                    job: Section::Job(&job.name),
                    key: Some("vault"),
                    line: lines
                        .get(&["jobs", &job.name, "vault"])
                        .or_else(|| lines.get(&["defaults", "vault"])),
                }
                .error(format!(
                    "vault {} is inside the source {} of job `{}`{how}: its versions would back up the vault",
                    show(&job.vault),
                    show(&other.source),
                    other.name.escape_debug()
                )));
            }
        }
    }
    Ok(())
}

/// Two jobs may not share a folder of the same vault.
pub(super) fn check_folders(jobs: &[JobConfig], file: &Path, lines: &Lines) -> Result<()> {
    let mut seen: BTreeMap<(PathBuf, &str), &str> = BTreeMap::new();
    for job in jobs {
        let vault = canonical_or_nearest(&job.vault);
        if let Some(other) = seen.insert((vault, job.folder.as_str()), job.name.as_str()) {
            return Err(Place {
                file,
                job: Section::Job(&job.name),
                key: None,
                line: lines.get(&["jobs", &job.name]),
            }
            .error(format!(
                "jobs `{}` and `{}` both sanitize to folder `{}` of vault {}: rename one",
                other.escape_debug(),
                job.name.escape_debug(),
                job.folder,
                show(&job.vault)
            )));
        }
    }
    Ok(())
}

/// No two jobs back up the same source into the same vault: they would version one tree
/// twice, each under its own history, and their watchers would double the work.
pub(super) fn check_distinct_sources(jobs: &[JobConfig], file: &Path, lines: &Lines) -> Result<()> {
    let mut seen: BTreeMap<(PathBuf, PathBuf), &str> = BTreeMap::new();
    for job in jobs {
        let key = (
            canonical_or_nearest(&job.source),
            canonical_or_nearest(&job.vault),
        );
        if let Some(other) = seen.insert(key, job.name.as_str()) {
            return Err(Place {
                file,
                job: Section::Job(&job.name),
                key: Some("source"),
                line: lines.get(&["jobs", &job.name, "source"]),
            }
            .error(format!(
                "jobs `{}` and `{}` both back up {} into vault {}: remove one, or give it another vault",
                other.escape_debug(),
                job.name.escape_debug(),
                show(&job.source),
                show(&job.vault)
            )));
        }
    }
    Ok(())
}

/// The jobs of one vault that share it with a group (`vault_group`) name the same group:
/// the vault's root, which they share, can have only one (docs/security.md).
pub(super) fn check_vault_groups(jobs: &[JobConfig], file: &Path, lines: &Lines) -> Result<()> {
    let mut seen: BTreeMap<PathBuf, (&str, &str)> = BTreeMap::new();
    for job in jobs {
        let Some(group) = job.settings.vault_group.as_deref() else {
            continue;
        };
        let vault = canonical_or_nearest(&job.vault);
        match seen.get(&vault) {
            Some((other, other_group)) if *other_group != group => {
                return Err(Place {
                    file,
                    job: Section::Job(&job.name),
                    key: Some("vault_group"),
                    line: lines
                        .get(&["jobs", &job.name, "vault_group"])
                        .or_else(|| lines.get(&["defaults", "vault_group"])),
                }
                .error(format!(
                    "vault_group `{group}` differs from job `{}`'s `{other_group}` in the same vault {}: the vault can be shared with one group only",
                    other.escape_debug(),
                    show(&job.vault)
                )));
            }
            Some(_) => {}
            None => {
                seen.insert(vault, (job.name.as_str(), group));
            }
        }
    }
    Ok(())
}
