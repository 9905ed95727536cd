//! The user's configuration file (docs/configuration.md): where it is looked up, how `[defaults]` and
//! `[jobs.<name>]` merge into one [`JobConfig`] per job, and every check made before anything
//! is written.
//!
//! Owns: the config file format and its validation; the job settings themselves (keys,
//! defaults, value parsers) are [`crate::format::settings`]'s, so this file and job.toml can never
//! disagree on a key.
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
//! - The process environment is read only by [`LookupEnv::from_process`]; everything else
//!   takes its inputs as arguments, so tests never touch the real environment.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, show};
use crate::format::settings::{InvalidSetting, JobSettings, sanitize_job_name};
use crate::vault::job::{PathError, canonical_or_nearest, check_paths};

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

/// The environment the lookup reads, made explicit so tests can inject it.
#[derive(Debug, Clone)]
pub struct LookupEnv {
    /// `$REVERBERATOR_CONFIG`.
    pub reverberator_config: Option<OsString>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<OsString>,
    /// `$HOME`.
    pub home: Option<OsString>,
    /// The system-wide file, normally [`SYSTEM_CONFIG`].
    pub system_config: PathBuf,
}

impl LookupEnv {
    /// Reads the process environment.
    pub fn from_process() -> LookupEnv {
        LookupEnv {
            reverberator_config: std::env::var_os(CONFIG_VAR),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
            home: std::env::var_os("HOME"),
            system_config: PathBuf::from(SYSTEM_CONFIG),
        }
    }
}

/// Finds the config file (docs/configuration.md): `explicit` (`--config FILE`), else
/// `$REVERBERATOR_CONFIG`, else `$XDG_CONFIG_HOME/reverberator/config.toml` (or
/// `~/.config/reverberator/config.toml`), else `/etc/reverberator/config.toml`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    locate_in(explicit, &LookupEnv::from_process())
}

/// [`locate`] with an injected environment.
///
/// A file named explicitly (by the flag or the variable) must exist: it is never silently
/// replaced by another. The per-user and system files are tried in order; the error lists
/// every place tried.
pub fn locate_in(explicit: Option<&Path>, env: &LookupEnv) -> Result<PathBuf> {
    if let Some(file) = explicit {
        return named_file(file, "--config");
    }
    if let Some(var) = env.reverberator_config.as_ref().filter(|v| !v.is_empty()) {
        return named_file(Path::new(var), "$REVERBERATOR_CONFIG");
    }
    let mut tried = Vec::new();
    let xdg = env
        .xdg_config_home
        .as_ref()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute()); // the XDG spec ignores a relative value
    let user_dir = match xdg {
        Some(dir) => Some(dir),
        None => env
            .home
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(h).join(".config")),
    };
    if let Some(dir) = user_dir {
        tried.push(dir.join("reverberator").join("config.toml"));
    }
    tried.push(env.system_config.clone());
    for candidate in &tried {
        if candidate.is_file() {
            return Ok(candidate.clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|p| show(p)).collect();
    Err(Error::Usage(format!(
        "no configuration file: tried {} (use --config FILE or set ${CONFIG_VAR})",
        list.join(", ")
    )))
}

fn named_file(file: &Path, by: &str) -> Result<PathBuf> {
    if file.is_file() {
        Ok(file.to_path_buf())
    } else if file.exists() {
        Err(Error::Usage(format!(
            "configuration file {} (from {by}) is not a regular file",
            show(file)
        )))
    } else {
        Err(Error::Usage(format!(
            "configuration file {} (from {by}) does not exist",
            show(file)
        )))
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

/// Where an error is: the file, the job (or section), the key and the TOML line.
struct Place<'a> {
    file: &'a Path,
    job: Section<'a>,
    key: Option<&'a str>,
    line: Option<usize>,
}

#[derive(Clone, Copy)]
enum Section<'a> {
    Top,
    Defaults,
    Job(&'a str),
    CommandLine(&'a str),
}

impl Place<'_> {
    fn error(&self, message: impl Display) -> Error {
        let mut out = match self.job {
            Section::CommandLine(_) => "command line".to_string(),
            _ => format!("configuration file {}", show(self.file)),
        };
        match self.job {
            Section::Top => out.push_str(", top level"),
            Section::Defaults => out.push_str(", [defaults]"),
            Section::Job(name) | Section::CommandLine(name) => {
                out.push_str(&format!(", job `{}`", name.escape_debug()));
            }
        }
        if let Some(key) = self.key {
            out.push_str(&format!(", key `{}`", key.escape_debug()));
        }
        if let Some(line) = self.line {
            out.push_str(&format!(" (line {line})"));
        }
        out.push_str(": ");
        out.push_str(&one_line(&message.to_string()));
        Error::Usage(out)
    }
}

fn one_line(text: &str) -> String {
    text.trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// ` at `…`` showing the (trimmed, escaped, shortened) line holding byte offset `at`.
fn line_text(text: &str, at: usize) -> String {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[start..end].trim();
    if line.is_empty() {
        return String::new();
    }
    let mut shown: String = line.chars().take(80).collect();
    if shown.len() < line.len() {
        shown.push('…');
    }
    format!(" at `{}`", shown.escape_debug())
}

/// "a table", "an integer": a TOML type name with its article.
fn a_type(value: &toml::Value) -> String {
    let name = value.type_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// The TOML line of every table and key, by path (`["jobs", "docs", "source"]`).
#[derive(Default)]
struct Lines(HashMap<Vec<String>, usize>);

impl Lines {
    fn of(text: &str) -> Lines {
        let mut lines = Lines::default();
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            lines.walk(text, &mut Vec::new(), doc.get_ref());
        }
        lines
    }

    fn walk(&mut self, text: &str, path: &mut Vec<String>, table: &toml::de::DeTable<'_>) {
        for (key, value) in table.iter() {
            path.push(key.get_ref().to_string());
            self.0.insert(path.clone(), line_of(text, key.span().start));
            if path.len() < 3
                && let Some(inner) = value.get_ref().as_table()
            {
                self.walk(text, path, inner);
            }
            path.pop();
        }
    }

    fn get(&self, path: &[&str]) -> Option<usize> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.0.get(&key).copied()
    }
}

/// The keys a job setting may have (the fields of [`JobSettings`]).
fn setting_keys() -> Vec<String> {
    let all = JobSettings {
        vault_size_limit: Some(0),
        ..JobSettings::default()
    };
    match toml::Table::try_from(&all) {
        Ok(table) => table.keys().cloned().collect(),
        Err(_) => Vec::new(),
    }
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
    check_vaults_outside_sources(&jobs, file, &doc.lines)?;
    Ok(Config {
        file: file.to_path_buf(),
        jobs,
    })
}

/// The TOML document, or the syntax error with its line.
fn parse_toml(text: &str, file: &Path) -> Result<toml::Table> {
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
struct Document<'a> {
    file: &'a Path,
    lines: Lines,
    known: Vec<String>,
}

impl Document<'_> {
    fn place<'p>(&'p self, job: Section<'p>, key: &'p str, path: &[&str]) -> Place<'p> {
        Place {
            file: self.file,
            job,
            key: Some(key),
            line: self.lines.get(path),
        }
    }

    /// The top level: `[defaults]` and `[jobs]` tables, nothing else.
    fn top_level(&self, doc: toml::Table) -> Result<(toml::Table, toml::Table)> {
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
    fn defaults(&self, defaults: &mut toml::Table) -> Result<Option<PathBuf>> {
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
    fn job(
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

/// Checks a job's paths and name and deserializes its merged settings.
fn resolve(
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
fn check_setting(
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
        all.extend(["source".to_string(), "vault".to_string()]);
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

/// The known key closest to a misspelt one (at most 2 edits, or a prefix of it).
fn did_you_mean<'k>(key: &str, known: &'k [String]) -> Option<&'k str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    known
        .iter()
        .map(|k| (distance(key, k), k))
        .filter(|(d, k)| *d <= 2 || (key.len() >= 4 && k.starts_with(key)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// What a key wants, in the words of the configuration file, when `value` is not of a type
/// it takes (`the string "3" given, expected a whole number …`); None when the type is
/// right, so the setting's own parser explains what is wrong with the value. Decided from
/// the key's type (its default's TOML type), never from a deserializer's message.
fn wrong_type(key: &str, value: &toml::Value) -> Option<String> {
    use toml::Value as V;
    let negative = matches!(value, V::Integer(i) if *i < 0);
    let wanted = if key == "vault_size_limit" {
        // A size: a string with a unit, or a whole number of bytes.
        match value {
            V::String(_) => return None,
            V::Integer(_) if !negative => return None,
            _ => "a size like \"50GiB\" or \"500MB\", or a whole number of bytes",
        }
    } else {
        let defaults = JobSettings::default();
        let kind = toml::Table::try_from(&defaults)
            .ok()
            .and_then(|t| t.get(key).cloned())?;
        match (kind, value) {
            (V::Integer(_), V::Integer(_)) if !negative => return None,
            (V::Float(_), V::Float(_) | V::Integer(_)) => return None,
            (V::Boolean(_), V::Boolean(_)) | (V::String(_), V::String(_)) => return None,
            (V::Array(_), V::Array(items)) if items.iter().all(V::is_str) => return None,
            (V::Integer(_), _) => "a whole number of 0 or more, without quotes (like 3)",
            (V::Float(_), _) => "a number, without quotes (like 0.5)",
            (V::Boolean(_), _) => "true or false, without quotes",
            (V::Array(_), _) => "a list of strings (like [\"*.tmp\", \".cache/\"])",
            (V::String(_), _) => {
                "a string (a duration like \"30s\" or \"10m\", a size like \"50GiB\")"
            }
            _ => return None,
        }
    };
    Some(format!("{} given, expected {wanted}", given(value)))
}

/// "the string \"3\"", "the integer 1": a TOML value as the user wrote it.
fn given(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string \"{}\"", s.escape_debug()),
        other => format!("{} `{other}`", a_type(other)),
    }
}

/// [`check_paths`] as the configuration applies it: a source that does not exist is no
/// error (the job waits for it, paused), but it must still not hold the vault (compared by
/// nearest real paths); a vault that exists must be a directory. Returns the key and why.
fn check_job_paths(source: &Path, vault: &Path) -> std::result::Result<(), (&'static str, String)> {
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
fn check_times(settings: &JobSettings) -> std::result::Result<(), InvalidSetting> {
    if settings.min_snapshot_time.is_zero() && settings.max_snapshot_delay.is_zero() {
        return Err(InvalidSetting {
            key: "min_snapshot_time",
            message: "min_snapshot_time and max_snapshot_delay are both zero: set max_snapshot_delay (for example \"10m\") so changes are gathered into versions".into(),
        });
    }
    Ok(())
}

/// No job's vault may be inside another job's source: that job would back up the vault.
fn check_vaults_outside_sources(jobs: &[JobConfig], file: &Path, lines: &Lines) -> Result<()> {
    for job in jobs {
        let vault = canonical_or_nearest(&job.vault);
        for other in jobs.iter().filter(|o| o.name != job.name) {
            if vault.starts_with(canonical_or_nearest(&other.source)) {
                return Err(Place {
                    file,
                    job: Section::Job(&job.name),
                    key: Some("vault"),
                    line: lines
                        .get(&["jobs", &job.name, "vault"])
                        .or_else(|| lines.get(&["defaults", "vault"])),
                }
                .error(format!(
                    "vault {} is inside the source {} of job `{}`: its versions would back up the vault",
                    show(&job.vault),
                    show(&other.source),
                    other.name.escape_debug()
                )));
            }
        }
    }
    Ok(())
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

/// A TOML value that must be an absolute path.
fn absolute_path(value: &toml::Value, place: &Place<'_>) -> Result<PathBuf> {
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

/// Two jobs may not share a folder of the same vault.
fn check_folders(jobs: &[JobConfig], file: &Path, lines: &Lines) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::job::resolve_nearest;
    use std::time::Duration;

    const FILE: &str = "/etc/reverberator/test.toml";

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            fs::create_dir(dir.path().join("src")).expect("mkdir");
            fs::create_dir(dir.path().join("src2")).expect("mkdir");
            fs::create_dir(dir.path().join("backup")).expect("mkdir");
            fs::write(dir.path().join("plain"), "x").expect("write");
            Fixture { dir }
        }

        fn root(&self) -> String {
            self.dir.path().to_str().expect("utf-8 tempdir").to_string()
        }

        /// Parses `text` with `{root}` replaced by the fixture's directory.
        fn parse(&self, text: &str) -> Result<Config> {
            parse(&text.replace("{root}", &self.root()), Path::new(FILE))
        }

        /// Asserts `text` fails with one usage line naming the file and every part.
        fn fails(&self, text: &str, parts: &[&str]) -> String {
            let err = self.parse(text).expect_err("should fail");
            assert!(matches!(err, Error::Usage(_)), "{err:?}");
            assert_eq!(err.exit_code(), 2);
            let msg = err.to_string();
            assert!(!msg.contains('\n'), "one line: {msg}");
            assert!(msg.contains(FILE), "names the file: {msg}");
            for part in parts {
                assert!(msg.contains(part), "`{part}` missing from: {msg}");
            }
            msg
        }
    }

    const GOOD: &str = r#"
[defaults]
vault = "{root}/backup"
keep_versions = 5
exclude = ["*.swp"]

[jobs.docs]
source = "{root}/src"
keep_versions = 7
min_snapshot_time = "1m"

[jobs.code]
source = "{root}/src2"
vault_size_limit = "2GiB"
"#;

    #[test]
    fn defaults_merge_key_by_key() {
        let f = Fixture::new();
        let c = f.parse(GOOD).expect("valid");
        assert_eq!(c.file, Path::new(FILE));
        let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["code", "docs"], "sorted by name");
        let docs = c.job("docs").expect("docs");
        assert_eq!(docs.folder, "docs");
        assert_eq!(docs.vault, Path::new(&format!("{}/backup", f.root())));
        assert_eq!(docs.settings.keep_versions, 7, "job overrides defaults");
        assert_eq!(docs.settings.exclude, ["*.swp"], "inherited");
        assert_eq!(docs.settings.min_snapshot_time, Duration::from_secs(60));
        assert_eq!(docs.settings.max_snapshot_delay, Duration::from_secs(600));
        let code = c.job("code").expect("code");
        assert_eq!(code.settings.keep_versions, 5, "inherited");
        assert_eq!(code.settings.vault_size_limit, Some(2 << 30));
        assert_eq!(code.settings.min_snapshot_time, Duration::from_secs(30));
        assert!(code.settings.keep_complete);
    }

    #[test]
    fn empty_file_has_no_jobs() {
        let f = Fixture::new();
        assert!(f.parse("").expect("valid").jobs.is_empty());
    }

    #[test]
    fn render_resolved_parses_back() {
        let f = Fixture::new();
        let c = f.parse(GOOD).expect("valid");
        let text = render_resolved(&c);
        assert!(text.contains("# folder: docs"), "{text}");
        assert!(text.contains("keep_versions = 7"), "{text}");
        let back = parse(&text, Path::new(FILE)).expect("resolved text parses");
        assert_eq!(back.jobs, c.jobs);
    }

    #[test]
    fn syntax_error_and_duplicate_job() {
        let f = Fixture::new();
        f.fails("[jobs.a\nsource = 1", &["line 1", "TOML syntax"]);
        let dup = "[jobs.a]\nsource = \"{root}/src\"\nvault = \"/v\"\n\n[jobs.a]\nsource = \"{root}/src\"\n";
        f.fails(dup, &["line 5", "TOML syntax", "duplicate", "`[jobs.a]`"]);
    }

    #[test]
    fn unknown_keys() {
        let f = Fixture::new();
        f.fails("colour = 1\n", &["top level", "key `colour`", "line 1"]);
        f.fails(
            "[defaults]\nkeep_versionz = 3\n",
            &["[defaults]", "key `keep_versionz`", "line 2", "known keys"],
        );
        f.fails(
            "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\nkeep_versionz = 3\n",
            &[
                "job `docs`",
                "key `keep_versionz`",
                "line 4",
                "did you mean `keep_versions`?",
            ],
        );
        f.fails(
            "[defaults]\nsource = \"{root}/src\"\n",
            &["[defaults]", "key `source`", "not allowed in [defaults]"],
        );
        f.fails("jobs = 3\n", &["top level", "key `jobs`", "not an integer"]);
        f.fails("[jobs]\ndocs = 3\n", &["job `docs`", "line 2", "table"]);
    }

    #[test]
    fn wrong_types() {
        let f = Fixture::new();
        let base = "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\n";
        f.fails(
            &format!("{base}keep_versions = \"many\"\n"),
            &["job `docs`", "key `keep_versions`", "line 4"],
        );
        f.fails(
            &format!("{base}keep_complete = 1\n"),
            &["job `docs`", "key `keep_complete`", "line 4"],
        );
        f.fails(
            &format!("{base}exclude = \"*.swp\"\n"),
            &["job `docs`", "key `exclude`", "line 4"],
        );
        f.fails(
            "[jobs.docs]\nsource = 7\nvault = \"/v\"\n",
            &["job `docs`", "key `source`", "line 2", "string"],
        );
        f.fails(
            "[defaults]\nkeep_versions = -1\n",
            &["[defaults]", "key `keep_versions`", "line 2"],
        );
    }

    #[test]
    fn bad_source() {
        let f = Fixture::new();
        f.fails(
            "[jobs.docs]\nvault = \"/v\"\n",
            &["job `docs`", "key `source`", "missing"],
        );
        f.fails(
            "[jobs.docs]\nsource = \"src\"\nvault = \"/v\"\n",
            &["job `docs`", "key `source`", "line 2", "relative"],
        );
        // A missing source is runtime state: no error, a warning.
        let cfg = f
            .parse("[jobs.docs]\nsource = \"{root}/nope\"\nvault = \"/v\"\n")
            .expect("a missing source is not a configuration error");
        let w = warnings(&cfg, false);
        assert!(
            w.iter().any(|l| l.contains("nope") && l.contains("paused")),
            "{w:?}"
        );
        f.fails(
            "[jobs.docs]\nsource = \"{root}/nope\"\nvault = \"{root}/nope/v\"\n",
            &["job `docs`", "key `vault`", "inside the source"],
        );
        f.fails(
            "[jobs.docs]\nsource = \"{root}/plain\"\nvault = \"/v\"\n",
            &["job `docs`", "key `source`", "not a directory"],
        );
    }

    #[test]
    fn bad_vault() {
        let f = Fixture::new();
        f.fails(
            "[jobs.docs]\nsource = \"{root}/src\"\n",
            &["job `docs`", "key `vault`", "missing"],
        );
        f.fails(
            "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"backup\"\n",
            &["job `docs`", "key `vault`", "line 3", "relative"],
        );
        f.fails(
            "[defaults]\nvault = \"backup\"\n",
            &["[defaults]", "key `vault`", "line 2", "relative"],
        );
        // The vault does not exist yet, and is reached through `..` and a symlink.
        std::os::unix::fs::symlink(f.dir.path().join("src"), f.dir.path().join("alias"))
            .expect("symlink");
        f.fails(
            "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}/alias/x/../new/vault\"\n",
            &["job `docs`", "key `vault`", "line 3", "inside the source"],
        );
        f.fails(
            "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}\"\n",
            &["job `docs`", "key `source`", "line 2", "inside the vault"],
        );
        f.fails(
            "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}/src\"\n",
            &["job `docs`", "key `vault`", "inside the source"],
        );
        f.fails(
            "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}/plain\"\n",
            &["job `docs`", "key `vault`", "line 3", "not a directory"],
        );
        // A vault inside another job's source.
        f.fails(
            "[defaults]\nvault = \"{root}/src2/v\"\n[jobs.docs]\nsource = \"{root}/src\"\n\
             [jobs.other]\nsource = \"{root}/src2\"\nvault = \"{root}/backup\"\n",
            &["job `docs`", "key `vault`", "line 2", "job `other`"],
        );
        // A sibling whose name merely starts with the source's is fine.
        f.parse("[jobs.docs]\nsource = \"{root}/src\"\nvault = \"{root}/src-vault\"\n")
            .expect("sibling vault is not inside");
    }

    #[test]
    fn bad_names_and_folders() {
        let f = Fixture::new();
        f.fails(
            "[jobs.\"..\"]\nsource = \"{root}/src\"\nvault = \"/v\"\n",
            &["job `..`", "line 1", "cannot be a folder"],
        );
        f.fails(
            "[jobs.\"\"]\nsource = \"{root}/src\"\nvault = \"/v\"\n",
            &["job ``", "cannot be a folder"],
        );
        let clash = "[defaults]\nvault = \"/v\"\n[jobs.\"my docs\"]\nsource = \"{root}/src\"\n\
                     [jobs.my_docs]\nsource = \"{root}/src2\"\n";
        f.fails(
            clash,
            &["job `my_docs`", "`my docs`", "folder `my_docs`", "line 5"],
        );
        // The same folder in two different vaults is fine.
        let apart = "[jobs.\"my docs\"]\nsource = \"{root}/src\"\nvault = \"/v1\"\n\
                     [jobs.my_docs]\nsource = \"{root}/src2\"\nvault = \"/v2\"\n";
        f.parse(apart).expect("different vaults");
    }

    #[test]
    fn bad_durations_and_sizes() {
        let f = Fixture::new();
        let base = "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\n";
        f.fails(
            &format!("{base}min_snapshot_time = \"soon\"\n"),
            &["job `docs`", "key `min_snapshot_time`", "line 4", "soon"],
        );
        f.fails(
            &format!("{base}vault_size_limit = \"5 parsecs\"\n"),
            &["job `docs`", "key `vault_size_limit`", "line 4", "parsecs"],
        );
        f.fails(
            "[defaults]\nmax_snapshot_delay = \"later\"\n",
            &["[defaults]", "key `max_snapshot_delay`", "line 2", "later"],
        );
    }

    #[test]
    fn validation_failures() {
        let f = Fixture::new();
        let base = "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\n";
        f.fails(
            &format!("{base}max_delete_ratio = 1.5\n"),
            &["job `docs`", "key `max_delete_ratio`", "line 4"],
        );
        let glob = f.fails(
            &format!("{base}exclude = [\"a[\"]\n"),
            &["job `docs`", "key `exclude`", "line 4", "a["],
        );
        assert!(!glob.contains("**/"), "not the rewritten glob: {glob}");
        let typed = f.fails(
            &format!("{base}keep_versions = \"3\"\n"),
            &["key `keep_versions`", "the string \"3\"", "whole number"],
        );
        assert!(!typed.contains("u64"), "{typed}");
        f.fails(
            &format!("{base}min_snapshot_time = \"abc\"\n"),
            &["key `min_snapshot_time`", "a number and a unit"],
        );
        // min from the defaults, max from the job: the job is named, the key's line is found.
        f.fails(
            "[defaults]\nmin_snapshot_time = \"20m\"\n[jobs.docs]\nsource = \"{root}/src\"\n\
             vault = \"/v\"\nmax_snapshot_delay = \"10m\"\n",
            &["job `docs`", "key `min_snapshot_time`", "line 2"],
        );
        f.fails(
            &format!("{base}min_snapshot_time = \"0s\"\nmax_snapshot_delay = \"0s\"\n"),
            &["job `docs`", "key `min_snapshot_time`", "both zero"],
        );
    }

    #[test]
    fn ad_hoc_jobs() {
        let f = Fixture::new();
        let src = f.dir.path().join("src");
        let vault = f.dir.path().join("backup/v");
        let job = ad_hoc(&src, &vault, None).expect("valid");
        assert_eq!(job.name, "src");
        assert_eq!(job.folder, "src");
        assert_eq!(job.settings, JobSettings::default());
        let job = ad_hoc(&src, &vault, Some("my docs")).expect("valid");
        assert_eq!(job.folder, "my_docs");
        assert_eq!(default_name(Path::new("/")), "root");
        let err = ad_hoc(&src, &src.join("v"), None).expect_err("inside");
        assert!(err.to_string().contains("key `vault`"), "{err}");
        let err = ad_hoc(&f.dir.path().join("nope"), &vault, None).expect_err("missing");
        assert!(err.to_string().contains("key `source`"), "{err}");
    }

    #[test]
    fn non_utf8_source() {
        use std::os::unix::ffi::OsStrExt;
        let f = Fixture::new();
        let odd = f.dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        fs::create_dir(&odd).expect("mkdir");
        let err = ad_hoc(&odd, &f.dir.path().join("backup"), None).expect_err("not utf-8");
        let msg = err.to_string();
        assert!(
            msg.contains("key `source`") && msg.contains("UTF-8"),
            "{msg}"
        );
        assert!(msg.contains("caf\\xe9") || msg.contains("caf"), "{msg}");
        // Through a symlink in the config file.
        std::os::unix::fs::symlink(&odd, f.dir.path().join("link")).expect("symlink");
        f.fails(
            "[jobs.docs]\nsource = \"{root}/link\"\nvault = \"/v\"\n",
            &["job `docs`", "key `source`", "UTF-8"],
        );
    }

    #[test]
    fn nearest_real_path_of_missing_paths() {
        let f = Fixture::new();
        let real = fs::canonicalize(f.dir.path()).expect("canonical");
        let p = f.dir.path().join("a/b/../c/./d");
        assert_eq!(resolve_nearest(&p).expect("prefix"), real.join("a/c/d"));
        assert_eq!(
            resolve_nearest(&f.dir.path().join("src")).expect("prefix"),
            real.join("src")
        );
    }

    fn env(root: &Path) -> LookupEnv {
        LookupEnv {
            reverberator_config: None,
            xdg_config_home: None,
            home: None,
            system_config: root.join("etc/config.toml"),
        }
    }

    #[test]
    fn lookup_order() {
        let f = Fixture::new();
        let root = f.dir.path();
        let make = |rel: &str| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, "").expect("write");
            p
        };
        let system = make("etc/config.toml");
        let home_file = make("home/.config/reverberator/config.toml");
        let xdg_file = make("xdg/reverberator/config.toml");
        let var_file = make("var.toml");
        let flag_file = make("flag.toml");

        let mut e = env(root);
        assert_eq!(locate_in(None, &e).expect("system"), system);
        e.home = Some(root.join("home").into());
        assert_eq!(locate_in(None, &e).expect("home"), home_file);
        e.xdg_config_home = Some("relative/ignored".into());
        assert_eq!(
            locate_in(None, &e).expect("relative xdg ignored"),
            home_file
        );
        e.xdg_config_home = Some(root.join("xdg").into());
        assert_eq!(locate_in(None, &e).expect("xdg"), xdg_file);
        e.reverberator_config = Some(var_file.clone().into());
        assert_eq!(locate_in(None, &e).expect("var"), var_file);
        assert_eq!(locate_in(Some(&flag_file), &e).expect("flag"), flag_file);

        // Named files must exist: no silent fallback.
        let err = locate_in(Some(&root.join("missing.toml")), &e).expect_err("missing");
        assert!(err.to_string().contains("--config"), "{err}");
        e.reverberator_config = Some(root.join("gone.toml").into());
        let err = locate_in(None, &e).expect_err("missing");
        assert!(err.to_string().contains("REVERBERATOR_CONFIG"), "{err}");

        // Nothing anywhere: every place tried is listed.
        let mut e = env(&root.join("nowhere"));
        e.xdg_config_home = Some(root.join("empty").into());
        let err = locate_in(None, &e).expect_err("none");
        let msg = err.to_string();
        assert!(matches!(err, Error::Usage(_)));
        assert!(msg.contains("empty/reverberator/config.toml"), "{msg}");
        assert!(msg.contains("nowhere/etc/config.toml"), "{msg}");
    }

    #[test]
    fn load_reads_the_file() {
        let f = Fixture::new();
        let path = f.dir.path().join("config.toml");
        fs::write(&path, GOOD.replace("{root}", &f.root())).expect("write");
        let c = load(&path).expect("valid");
        assert_eq!(c.file, path);
        assert_eq!(c.jobs.len(), 2);
        let err = load(&f.dir.path().join("none.toml")).expect_err("missing");
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
        fs::write(&path, b"# caf\xe9\n").expect("write");
        let err = load(&path).expect_err("binary");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn retention_rules_and_their_bad_values() {
        let f = Fixture::new();
        let base = "[jobs.docs]\nsource = \"{root}/src\"\nvault = \"/v\"\n";
        let c = f
            .parse(&format!(
                "[defaults]\nkeep_daily = 30\n{base}keep_within = \"2h 30m\"\nkeep_yearly = 5\n"
            ))
            .expect("valid");
        let r = c.job("docs").expect("docs").settings.rules();
        assert_eq!(r.within, Duration::from_secs(9000));
        assert_eq!((r.daily, r.yearly), (30, 5), "defaults and job merge");
        assert_eq!(
            (r.versions, r.hourly, r.weekly, r.monthly),
            (100, 24, 8, 12)
        );
        let d = f.parse(base).expect("valid");
        assert_eq!(
            d.job("docs").expect("docs").settings.rules(),
            crate::format::settings::Rules::default()
        );
        for (line, key) in [
            ("keep_hourly = -1", "keep_hourly"),
            ("keep_daily = 1.5", "keep_daily"),
            ("keep_weekly = \"8\"", "keep_weekly"),
            ("keep_monthly = true", "keep_monthly"),
            ("keep_yearly = -3", "keep_yearly"),
        ] {
            f.fails(
                &format!("{base}{line}\n"),
                &["job `docs`", &format!("key `{key}`"), "line 4"],
            );
        }
        let msg = f.fails(
            &format!("{base}keep_within = \"a fortnight-ish\"\n"),
            &["job `docs`", "key `keep_within`", "line 4"],
        );
        assert!(msg.contains("a fortnight-ish"), "{msg}");
        f.fails(
            "[defaults]\nkeep_within = 3\n",
            &["[defaults]", "key `keep_within`", "line 2"],
        );
    }
}
