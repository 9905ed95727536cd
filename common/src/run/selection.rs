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

/// The version `--from` names (docs/cli.md): `latest` (or `current`), a number (`3`, `V3`),
/// a directory name, or a time — RFC 3339 in UTC, seconds and zone optional
/// (`2026-11-24T21:00`), or `DURATION ago` (`"2 hours ago"`) — which picks the newest
/// version taken at or before it.
pub fn pick_from<'r>(
    rows: &'r [crate::format::index::IndexRow],
    which: &str,
    now: std::time::SystemTime,
) -> Result<&'r crate::format::index::IndexRow> {
    let Some(at) = parse_when(which, now) else {
        return crate::engine::restore::pick(rows, which);
    };
    // A version's name shows its stamp to the second, and that is what people copy: a
    // version taken within TIME's second (or earlier) is at or before it.
    let stamp_second = |created: std::time::SystemTime| {
        let since = created
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(since.as_secs())
    };
    rows.iter()
        .rev()
        .find(|r| {
            crate::format::time::parse_rfc3339(&r.created).is_some_and(|c| stamp_second(c) <= at)
        })
        .ok_or_else(|| {
            let oldest = rows.first().map_or("none", |r| r.created.as_str());
            Error::Usage(format!(
                "no version was taken at or before `{which}` (the oldest retained: {oldest})"
            ))
        })
}

/// A `--from` time, or None when `text` is not one: RFC 3339 (seconds and zone optional),
/// a version's stamp (`20261124T214900Z`), or `DURATION ago`.
fn parse_when(text: &str, now: std::time::SystemTime) -> Option<std::time::SystemTime> {
    let t = text.trim();
    if let Some(stamp) = crate::format::time::parse_stamp(t) {
        return Some(stamp);
    }
    if let Some(ago) = t.strip_suffix(" ago") {
        return humantime::parse_duration(ago.trim())
            .ok()
            .and_then(|d| now.checked_sub(d));
    }
    if !t.contains('-') || !t.contains(':') {
        return None;
    }
    let t = t.trim_end_matches('Z').replace(' ', "T");
    let full = if t.len() == 16 { format!("{t}:00") } else { t };
    humantime::parse_rfc3339_weak(&full).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexRow;

    fn row(version: u64, created: &str) -> IndexRow {
        IndexRow {
            version,
            dir: format!("V{version}-x"),
            created: created.into(),
            files: 0,
            changed: 0,
            held_bytes: 0,
            logical_bytes: 0,
        }
    }

    #[test]
    fn from_picks_numbers_names_and_times() {
        let rows = [
            row(1, "2026-11-24T20:00:00.000Z"),
            row(2, "2026-11-24T21:00:00.000Z"),
            row(3, "2026-11-24T22:30:00.000Z"),
        ];
        let now = humantime::parse_rfc3339("2026-11-24T23:00:00Z").expect("time");
        let v = |w: &str| pick_from(&rows, w, now).map(|r| r.version).ok();
        assert_eq!(v("latest"), Some(3));
        assert_eq!(v("2"), Some(2));
        assert_eq!(v("V1-x"), Some(1));
        assert_eq!(v("2026-11-24T21:00"), Some(2), "at or before");
        assert_eq!(v("2026-11-24T22:29:59Z"), Some(2));
        assert_eq!(v("2 hours ago"), Some(2));
        assert_eq!(v("10m ago"), Some(3));
        assert_eq!(v("2026-11-24T19:00"), None, "before the oldest");
    }

    #[test]
    fn from_a_time_includes_the_versions_of_its_second() {
        // V1-20261207T045209Z was taken at 04:52:09.412: its name is what people copy.
        let rows = [
            row(1, "2026-12-07T04:52:09.412Z"),
            row(2, "2026-12-07T05:00:00.000Z"),
        ];
        let now = humantime::parse_rfc3339("2026-12-07T06:00:00Z").expect("time");
        let v = |w: &str| pick_from(&rows, w, now).map(|r| r.version).ok();
        assert_eq!(v("2026-12-07T04:52:09Z"), Some(1));
        assert_eq!(v("20261207T045209Z"), Some(1), "the stamp itself");
        assert_eq!(v("2026-12-07T04:52:08Z"), None);
    }
}
