//! The user's configuration file (docs/configuration.md): where it is looked up, how `[defaults]` and
//! `[jobs.<name>]` merge into one [`JobConfig`] per job, and every check made before anything
//! is written.
//!
//! Owns: the config file format and its validation; the job settings themselves (keys,
//! defaults, value parsers) are [`crate::format::settings`]'s, so this file and job.toml can never
//! disagree on a key.
//!
//! Split by concern: [`lookup`] finds the file, [`document`] reads it key by key,
//! [`checks`] holds the checks across keys and jobs, [`place`] says where an error is and
//! words it for the user.
//!
//! Invariants:
//! - Every error is [`Error::Usage`] (exit 2) with exactly one line that names the file, the
//!   job (or `[defaults]`, or the top level) and the key, plus the TOML line when one is
//!   known. Nothing is written by this module, ever.
//! - A returned [`Config`] is fully valid: absolute, UTF-8 sources that are directories when
//!   they exist; absolute vaults that are directories when they exist; no vault inside any
//!   job's source, no source inside its vault; one folder per job and vault; settings that
//!   pass [`JobSettings::validate`] and can take a version (not both snapshot times zero).
//!   Jobs are sorted by name.
//! - What exists on disk is runtime state, not configuration: a source or vault that does
//!   not exist (yet) is no error, only a [`warnings`] line; the supervisor pauses that one
//!   job until the path appears.
//! - A job key overrides the same `[defaults]` key, key by key; the tables are merged before
//!   [`JobSettings`] is deserialized, so its `deny_unknown_fields` names the key.
//! - The process environment is read only by [`lookup::LookupEnv::from_process`]; everything else
//!   takes its inputs as arguments, so tests never touch the real environment.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, show};
use crate::format::settings::JobSettings;

mod checks;
mod document;
mod lookup;
mod place;
#[cfg(test)]
mod tests;

use checks::{
    check_distinct_sources, check_folders, check_job_paths, check_times, check_vault_groups,
    check_vaults_outside_sources,
};
use document::{Document, parse_toml, resolve, setting_keys};
pub use lookup::locate;
use place::{Lines, Place, Section, a_type, did_you_mean, line_of, line_text, wrong_type};

/// The system-wide config file, the last place looked at.
pub const SYSTEM_CONFIG: &str = "/etc/reverberator/config.toml";

/// The environment variable naming a config file.
pub const CONFIG_VAR: &str = "REVERBERATOR_CONFIG";

/// One job, resolved: defaults merged, paths checked, name sanitized.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    /// The job's name as configured (the key of `[jobs.<name>]`).
    pub name: String,
    /// The folder inside the vault: the sanitized name (docs/configuration.md).
    pub folder: String,
    /// The monitored directory: absolute, UTF-8; it may not exist (the job then waits).
    pub source: PathBuf,
    /// The vault directory: absolute; it need not exist yet.
    pub vault: PathBuf,
    /// Every other setting, defaults applied.
    pub settings: JobSettings,
}

/// A whole configuration file, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// The jobs, sorted by name.
    pub jobs: Vec<JobConfig>,
}

impl Config {
    /// The job called `name`.
    pub fn job(&self, name: &str) -> Option<&JobConfig> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// Reads and resolves the config file at `path`.
pub fn load(path: &Path) -> Result<Config> {
    let bytes = fs::read(path).map_err(|e| {
        Error::Usage(format!(
            "configuration file {}: cannot read: {e}",
            show(path)
        ))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = line_of(
            &String::from_utf8_lossy(e.as_bytes()),
            e.utf8_error().valid_up_to(),
        );
        Error::Usage(format!(
            "configuration file {} (line {line}): not UTF-8 text",
            show(path)
        ))
    })?;
    parse(&text, path)
}

/// Parses and resolves config `text`, read from `file` (used in messages and for nothing
/// else).
pub fn parse(text: &str, file: &Path) -> Result<Config> {
    let doc = Document {
        file,
        lines: Lines::of(text),
        known: setting_keys(),
    };
    let (mut defaults, jobs_table) = doc.top_level(parse_toml(text, file)?)?;
    let default_vault = doc.defaults(&mut defaults)?;
    let mut jobs = Vec::new();
    for (name, value) in jobs_table {
        jobs.push(doc.job(&name, value, &defaults, default_vault.as_ref())?);
    }
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    check_folders(&jobs, file, &doc.lines)?;
    check_distinct_sources(&jobs, file, &doc.lines)?;
    check_vaults_outside_sources(&jobs, file, &doc.lines)?;
    check_vault_groups(&jobs, file, &doc.lines)?;
    Ok(Config {
        file: file.to_path_buf(),
        jobs,
    })
}

/// One job without a config file (`--source` and `--vault` on the command line): named after
/// the source folder (sanitized; `/` is `root`) unless `name` is given. A relative path is
/// taken from the current directory; the source is stored canonicalized. Same checks as a
/// configured job.
pub fn ad_hoc(source: &Path, vault: &Path, name: Option<&str>) -> Result<JobConfig> {
    fn cli_place<'a>(job: &'a str, key: &'static str) -> Place<'a> {
        Place {
            file: Path::new(""),
            job: Section::CommandLine(job),
            key: Some(key),
            line: None,
        }
    }
    let provisional = name.unwrap_or("(unnamed)");
    let abs = std::path::absolute(source)
        .map_err(|e| cli_place(provisional, "source").error(format!("{}: {e}", show(source))))?;
    let canonical = fs::canonicalize(&abs).map_err(|e| {
        cli_place(provisional, "source").error(format!("source {}: {e}", show(source)))
    })?;
    let name = match name {
        Some(n) => n.to_string(),
        None => default_name(&canonical),
    };
    let vault = std::path::absolute(vault)
        .map_err(|e| cli_place(&name, "vault").error(format!("{}: {e}", show(vault))))?;
    let no_lines = |_: &str| None;
    resolve(
        &name,
        Section::CommandLine(&name),
        Path::new(""),
        canonical,
        vault,
        toml::Table::new(),
        &no_lines,
    )
}

/// The name of a job without one: the source folder's file name, `root` for `/`. A name
/// that is not UTF-8 is shown lossily (sanitizing turns those characters into `_` anyway).
fn default_name(source: &Path) -> String {
    match source.file_name() {
        None => "root".to_string(),
        Some(f) => f.to_string_lossy().into_owned(),
    }
}

/// What a configuration leaves to runtime, as lines for `check-config` and `run`: every
/// job whose source or vault does not exist now (a vault only when `init` will not create it).
pub fn warnings(config: &Config, init: bool) -> Vec<String> {
    let mut out = Vec::new();
    for job in &config.jobs {
        if !job.source.exists() {
            out.push(format!(
                "job `{}`: source {} does not exist: the job stays paused until it appears",
                job.name.escape_debug(),
                show(&job.source)
            ));
        }
        if !init && !job.vault.exists() {
            out.push(format!(
                "job `{}`: vault {} does not exist: the job stays paused until it appears (`reverberator run --init` creates it)",
                job.name.escape_debug(),
                show(&job.vault)
            ));
        }
    }
    out
}

/// The resolved jobs as TOML (for `reverberator check-config`): every setting explicit,
/// defaults applied. The text parses back into the same jobs.
pub fn render_resolved(config: &Config) -> String {
    let mut out = format!(
        "# resolved from {}: every job with its defaults applied\n",
        show(&config.file)
    );
    for job in &config.jobs {
        let mut table = toml::Table::new();
        table.insert(
            "source".into(),
            toml::Value::String(job.source.to_string_lossy().into_owned()),
        );
        table.insert(
            "vault".into(),
            toml::Value::String(job.vault.to_string_lossy().into_owned()),
        );
        if let Ok(settings) = toml::Table::try_from(&job.settings) {
            table.extend(settings);
        }
        if job.settings.vault_size_limit.is_none() {
            // Absent means "no limit"; say so rather than leave the reader guessing.
            table.remove("vault_size_limit");
        }
        let mut named = toml::Table::new();
        named.insert(job.name.clone(), toml::Value::Table(table));
        let mut doc = toml::Table::new();
        doc.insert("jobs".into(), toml::Value::Table(named));
        out.push('\n');
        out.push_str(&format!("# folder: {}\n", job.folder));
        if job.settings.vault_size_limit.is_none() {
            out.push_str("# vault_size_limit: none\n");
        }
        out.push_str(&toml::to_string(&doc).unwrap_or_default());
    }
    out
}
