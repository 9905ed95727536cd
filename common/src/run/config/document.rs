//! Reading one configuration file: the TOML document, its top level, `[defaults]` and
//! each `[jobs.<name>]`, every key checked on its own (so an error names exactly that key)
//! and then merged and resolved into a [`JobConfig`].

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::format::settings::{JobSettings, sanitize_job_name};

use super::*;

/// The keys a job setting may have (the fields of [`JobSettings`]).
pub(super) fn setting_keys() -> Vec<String> {
    let hook = || {
        toml::from_str::<JobSettings>("on_version = 'x'")
            .ok()?
            .on_version
    };
    let all = JobSettings {
        vault_size_limit: Some(0),
        on_version: hook(),
        on_failure: hook(),
        on_recovery: hook(),
        ping_url: Some(String::new()),
        hook_timeout: crate::format::settings::DEFAULT_HOOK_TIMEOUT * 2,
        vault_group: Some(String::new()),
        replicate_to: vec!["/".into()],
        replicate_ssh: Some("ssh".into()),
        replicate_identity: Some("/".into()),
        ..JobSettings::default()
    };
    match toml::Table::try_from(&all) {
        Ok(table) => table.keys().cloned().collect(),
        Err(_) => Vec::new(),
    }
}

/// The TOML document, or the syntax error with its line.
pub(super) fn parse_toml(text: &str, file: &Path) -> Result<toml::Table> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start);
        let shown = at.map(|a| line_text(text, a)).unwrap_or_default();
        Place {
            file,
            job: Section::Top,
            key: None,
            line: at.map(|a| line_of(text, a)),
        }
        .error(format!("TOML syntax: {}{shown}", e.message()))
    })
}

/// What the checks of one file share: the file (for messages), the line of every key, and
/// the known setting keys.
pub(super) struct Document<'a> {
    pub(super) file: &'a Path,
    pub(super) lines: Lines,
    pub(super) known: Vec<String>,
}

impl Document<'_> {
    pub(super) fn place<'p>(&'p self, job: Section<'p>, key: &'p str, path: &[&str]) -> Place<'p> {
        Place {
            file: self.file,
            job,
            key: Some(key),
            line: self.lines.get(path),
        }
    }

    /// The top level: `[defaults]` and `[jobs]` tables, nothing else.
    pub(super) fn top_level(&self, doc: toml::Table) -> Result<(toml::Table, toml::Table)> {
        let mut defaults = toml::Table::new();
        let mut jobs = toml::Table::new();
        for (key, value) in doc {
            let place = self.place(Section::Top, &key, &[&key]);
            match (key.as_str(), value) {
                ("defaults", toml::Value::Table(t)) => defaults = t,
                ("jobs", toml::Value::Table(t)) => jobs = t,
                ("defaults" | "jobs", other) => {
                    return Err(place.error(format!("must be a table, not {}", a_type(&other))));
                }
                _ => {
                    return Err(
                        place.error("unknown key (expected `[defaults]` or `[jobs.<name>]`)")
                    );
                }
            }
        }
        Ok((defaults, jobs))
    }

    /// `[defaults]`: every key checked once, here, so an error is reported once. Takes the
    /// default vault out of the table and returns it.
    pub(super) fn defaults(&self, defaults: &mut toml::Table) -> Result<Option<PathBuf>> {
        let vault = match defaults.remove("vault") {
            None => None,
            Some(v) => {
                let place = self.place(Section::Defaults, "vault", &["defaults", "vault"]);
                Some(absolute_path(&v, &place)?)
            }
        };
        for (key, value) in defaults.iter() {
            let place = self.place(Section::Defaults, key, &["defaults", key]);
            if key == "source" {
                return Err(place.error(
                    "`source` is not allowed in [defaults]: every job names its own source",
                ));
            }
            check_setting(key, value, &self.known, &place)?;
        }
        Ok(vault)
    }

    /// One `[jobs.<name>]` table: its own keys checked, merged over the defaults, resolved.
    pub(super) fn job(
        &self,
        name: &str,
        value: toml::Value,
        defaults: &toml::Table,
        default_vault: Option<&PathBuf>,
    ) -> Result<JobConfig> {
        let job_line = self.lines.get(&["jobs", name]);
        let place = |key: Option<&'static str>| Place {
            file: self.file,
            job: Section::Job(name),
            key,
            line: key
                .and_then(|k| self.lines.get(&["jobs", name, k]))
                .or(job_line),
        };
        let toml::Value::Table(mut table) = value else {
            return Err(place(None).error(format!(
                "must be a table ([jobs.<name>]), not {}",
                a_type(&value)
            )));
        };
        let source = match table.remove("source") {
            Some(v) => absolute_path(&v, &place(Some("source")))?,
            None => return Err(place(Some("source")).error("missing: every job needs a source")),
        };
        let vault = match (table.remove("vault"), default_vault) {
            (Some(v), _) => absolute_path(&v, &place(Some("vault")))?,
            (None, Some(v)) => v.clone(),
            (None, None) => {
                return Err(
                    place(Some("vault")).error("missing: set vault in the job or in [defaults]")
                );
            }
        };
        for (key, value) in &table {
            let place = self.place(Section::Job(name), key, &["jobs", name, key]);
            check_setting(key, value, &self.known, &place)?;
        }
        let mut merged = defaults.clone();
        merged.extend(table);
        let key_line = |key: &str| {
            self.lines
                .get(&["jobs", name, key])
                .or_else(|| self.lines.get(&["defaults", key]))
                .or(job_line)
        };
        resolve(
            name,
            Section::Job(name),
            self.file,
            source,
            vault,
            merged,
            &key_line,
        )
    }
}

/// Checks a job's paths and name and deserializes its merged settings.
pub(super) fn resolve(
    name: &str,
    job: Section<'_>,
    file: &Path,
    source: PathBuf,
    vault: PathBuf,
    merged: toml::Table,
    key_line: &dyn Fn(&str) -> Option<usize>,
) -> Result<JobConfig> {
    let place = |key: &'static str| Place {
        file,
        job,
        key: Some(key),
        line: key_line(key),
    };
    let folder = sanitize_job_name(name).map_err(|e| {
        Place {
            file,
            job,
            key: None,
            line: key_line(""),
        }
        .error(e)
    })?;
    check_job_paths(&source, &vault).map_err(|(key, e)| place(key).error(e))?;
    // Every key was checked on its own by the caller; this cannot fail on one of them.
    let settings: JobSettings = toml::Value::Table(merged).try_into().map_err(|e| {
        Place {
            file,
            job,
            key: None,
            line: None,
        }
        .error(e.message())
    })?;
    if let Err(e) = settings.validate().and_then(|()| check_times(&settings)) {
        return Err(Place {
            file,
            job,
            key: Some(e.key),
            line: key_line(e.key),
        }
        .error(e.message));
    }
    Ok(JobConfig {
        name: name.to_string(),
        folder,
        source,
        vault,
        settings,
    })
}

/// Checks one setting on its own, so an error names exactly that key.
pub(super) fn check_setting(
    key: &str,
    value: &toml::Value,
    known: &[String],
    place: &Place<'_>,
) -> Result<()> {
    if key == "source" || key == "vault" {
        return Ok(());
    }
    if !known.iter().any(|k| k == key) {
        let mut all = known.to_vec();
        // `[defaults]` may name a vault but not a source (each job has its own).
        if !matches!(place.job, Section::Defaults) {
            all.push("source".to_string());
        }
        all.push("vault".to_string());
        all.sort();
        let hint = did_you_mean(key, &all)
            .map(|k| format!("did you mean `{k}`? "))
            .unwrap_or_default();
        return Err(place.error(format!(
            "unknown key ({hint}known keys: {})",
            all.join(", ")
        )));
    }
    let mut single = toml::Table::new();
    single.insert(key.to_string(), value.clone());
    toml::Value::Table(single)
        .try_into::<JobSettings>()
        .map(|_| ())
        .map_err(|e| place.error(wrong_type(key, value).unwrap_or_else(|| e.message().to_owned())))
}

/// A TOML value that must be an absolute path.
pub(super) fn absolute_path(value: &toml::Value, place: &Place<'_>) -> Result<PathBuf> {
    let Some(text) = value.as_str() else {
        return Err(place.error(format!("must be a string (a path), not {}", a_type(value))));
    };
    if text.is_empty() {
        return Err(place.error("must not be empty"));
    }
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(place.error(format!(
            "`{}` is relative: use an absolute path",
            text.escape_debug()
        )));
    }
    Ok(path)
}
