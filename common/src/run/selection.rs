//! Which job a program acts on, from its flags or from the configuration file
//! (docs/cli.md: `--vault DIR` or `--config FILE`, with or without `--job`). With a
//! configuration, flags that are also given must agree with it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, show};
use crate::format::settings::JobSettings;
use crate::vault::job::{canonical_or_nearest, existing};
use crate::vault::layout::{JobDir, Vault};

/// Where a writer's job comes from: flags, or a configuration file (docs/cli.md `--config`).
#[derive(Debug, Clone)]
pub struct Target {
    /// The vault directory.
    pub vault: PathBuf,
    /// The job's name.
    pub name: String,
    /// The source, when known (flags or config).
    pub source: Option<PathBuf>,
    /// Settings from the configuration (None: job.toml's, or defaults for a new job).
    pub settings: Option<JobSettings>,
}

/// Resolves `--vault`/`--job`/`--source`/`--config` into a [`Target`]. With a config, the job
/// must be in it, and flags that are also given must agree with it.
pub fn target(
    vault: Option<&Path>,
    name: &str,
    source: Option<&Path>,
    config: Option<&Path>,
) -> Result<Target> {
    let Some(config) = config else {
        let Some(vault) = vault else {
            return Err(Error::Usage("give --vault DIR (or --config FILE)".into()));
        };
        return Ok(Target {
            vault: vault.to_path_buf(),
            name: name.to_owned(),
            source: source.map(Path::to_path_buf),
            settings: None,
        });
    };
    let cfg = crate::run::config::load(&crate::run::config::locate(Some(config))?)?;
    let Some(job) = cfg.job(name) else {
        let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "job `{name}` is not in {} (jobs there: {})",
            show(&cfg.file),
            names.join(", ")
        )));
    };
    if let Some(v) = vault
        && canonical_or_nearest(v) != canonical_or_nearest(&job.vault)
    {
        return Err(Error::Usage(format!(
            "--vault {} disagrees with {}'s vault {}",
            show(v),
            show(&cfg.file),
            show(&job.vault)
        )));
    }
    if let Some(s) = source
        && canonical_or_nearest(s) != canonical_or_nearest(&job.source)
    {
        return Err(Error::Usage(format!(
            "--source {} disagrees with {}'s source {}",
            show(s),
            show(&cfg.file),
            show(&job.source)
        )));
    }
    Ok(Target {
        vault: job.vault.clone(),
        name: name.to_owned(),
        source: Some(job.source.clone()),
        settings: Some(job.settings.clone()),
    })
}

/// The jobs a vault program acts on (docs/cli.md: `--vault DIR` or `--config FILE`, with or
/// without `--job`): each with its opened vault. Without `--job`, every job of the vault, or
/// every job of the configuration that exists in its vault.
pub fn select(
    vault: Option<&Path>,
    config: Option<&Path>,
    name: Option<&str>,
) -> Result<Vec<(Vault, JobDir)>> {
    let mut out = Vec::new();
    if let Some(cfg_path) = config {
        let cfg = crate::run::config::load(&crate::run::config::locate(Some(cfg_path))?)?;
        let chosen: Vec<_> = cfg
            .jobs
            .iter()
            .filter(|j| name.is_none_or(|n| j.name == n || j.folder == n))
            .collect();
        if chosen.is_empty() {
            let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "no job `{}` in {} (jobs there: {})",
                name.unwrap_or(""),
                show(&cfg.file),
                names.join(", ")
            )));
        }
        for j in chosen {
            if vault.is_some_and(|v| canonical_or_nearest(v) != canonical_or_nearest(&j.vault)) {
                continue;
            }
            let v = Vault::open(&j.vault)?;
            let dir = v.job_dir(&j.folder);
            if dir.exists() {
                out.push((v, dir));
            } else if name.is_some() {
                return Err(Error::Usage(format!(
                    "job `{}` has no versions yet in {}",
                    j.name,
                    show(&j.vault)
                )));
            }
        }
        return Ok(out);
    }
    let Some(vault) = vault else {
        return Err(Error::Usage("give --vault DIR (or --config FILE)".into()));
    };
    let v = Vault::open(vault)?;
    let dirs = match name {
        None => v.jobs()?,
        Some(name) => vec![existing(&v, name)?],
    };
    for d in dirs {
        out.push((v.clone(), d));
    }
    Ok(out)
}
