//! A job's settings (docs/configuration.md), their defaults, and the parsers for the human-written values
//! they hold: durations (`30s`, `10m`, humantime), sizes (`50GiB`) and job names.
//!
//! Used by both the user's config (`run/config/`) and the tool-written job.toml (jobfile.rs), so
//! the two can never disagree on a key or a default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every per-job setting of docs/configuration.md except `source` and `vault`, with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Quiet period before a version is taken.
    #[serde(with = "duration_text")]
    pub min_snapshot_time: Duration,
    /// Under constant change, a version at least this often.
    #[serde(with = "duration_text")]
    pub max_snapshot_delay: Duration,
    /// The first version is a complete copy.
    pub keep_complete: bool,
    /// Attribute-only changes reuse the vault's data with the new attributes.
    pub only_sync_attributes: bool,
    /// Keep the newest N versions (0 = this rule keeps none).
    pub keep_versions: u64,
    /// Keep every version younger than this (0 = this rule keeps none).
    #[serde(with = "duration_text")]
    pub keep_within: Duration,
    /// Keep the newest version of each of the last N hours (local time).
    pub keep_hourly: u64,
    /// ... days.
    pub keep_daily: u64,
    /// ... ISO weeks.
    pub keep_weekly: u64,
    /// ... months.
    pub keep_monthly: u64,
    /// ... years.
    pub keep_yearly: u64,
    /// Retire the oldest while the job folder is larger than this (None = no limit).
    #[serde(with = "size_text", skip_serializing_if = "Option::is_none")]
    pub vault_size_limit: Option<u64>,
    /// gitignore-style patterns, relative to the source.
    pub exclude: Vec<String>,
    /// A rescan deleting more than this share of the current files needs --force.
    pub max_delete_ratio: f64,
    /// Record the BLAKE3 of every regular file a version copies (docs/format.md#checksums).
    pub checksums: bool,
    /// On SIGTERM, how long the supervisor may take the job's last version.
    #[serde(with = "duration_text")]
    pub stop_timeout: Duration,
    /// A filesystem mounted below the source is not backed up (as `rsync -x`).
    pub one_file_system: bool,
    /// The group that may read the job's history (folders 0750, files 0640); none: only
    /// the owner (docs/security.md#who-may-read-the-vault).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_group: Option<String>,
    /// Run after each new version (docs/configuration.md#hooks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_version: Option<HookCommand>,
    /// Run when the job starts failing (once per distinct failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<HookCommand>,
    /// Run when a failing job works again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_recovery: Option<HookCommand>,
    /// A healthchecks-style URL: `GET URL` after a version (and a recovery), `GET URL/fail`
    /// on a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_url: Option<String>,
    /// How long a hook command or a ping may take before it is stopped.
    #[serde(
        with = "duration_text",
        skip_serializing_if = "is_default_hook_timeout"
    )]
    pub hook_timeout: Duration,
    /// Replica vaults (docs/configuration.md#replication): paths, or
    /// `ssh://[user@]host[:port]/path`; the supervisor sends each new version to each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicate_to: Vec<String>,
    /// The ssh program for `ssh://` replicas (default `ssh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicate_ssh: Option<String>,
    /// The private key ssh uses for them (`ssh -i`; default: the user's ssh configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicate_identity: Option<std::path::PathBuf>,
}

/// The default `hook_timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

fn is_default_hook_timeout(d: &Duration) -> bool {
    *d == DEFAULT_HOOK_TIMEOUT
}

/// A hook's command: a program and its arguments, run without a shell. Written as a list
/// (`["notify-send", "backup failed"]`) or as one string split into words the way a shell
/// splits them (spaces separate; `'…'` and `"…"` quote; `\` escapes) but with nothing else
/// of a shell: no variables, globs, pipes or redirections (write `["sh", "-c", "…"]` for those).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HookText", into = "Vec<String>")]
pub struct HookCommand(Vec<String>);

impl HookCommand {
    /// The program and its arguments (never empty).
    pub fn argv(&self) -> &[String] {
        &self.0
    }
}

impl From<HookCommand> for Vec<String> {
    fn from(c: HookCommand) -> Vec<String> {
        c.0
    }
}

/// How a hook is written in TOML.
#[derive(Deserialize)]
#[serde(untagged)]
enum HookText {
    Words(String),
    List(Vec<String>),
}

impl TryFrom<HookText> for HookCommand {
    type Error = String;

    fn try_from(t: HookText) -> Result<HookCommand, String> {
        let argv = match t {
            HookText::Words(text) => split_words(&text)?,
            HookText::List(list) => list,
        };
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err("a hook needs a program to run".into());
        }
        Ok(HookCommand(argv))
    }
}

/// Splits `text` into words as a shell would, without expanding anything.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(format!("unclosed ' in `{text}`")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(format!("unclosed \" in `{text}`")),
                        },
                        Some(c) => w.push(c),
                        None => return Err(format!("unclosed \" in `{text}`")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("a trailing \\ in `{text}`")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            min_snapshot_time: Duration::from_secs(30),
            max_snapshot_delay: Duration::from_secs(600),
            keep_complete: true,
            only_sync_attributes: true,
            keep_versions: Rules::default().versions,
            keep_within: Rules::default().within,
            keep_hourly: Rules::default().hourly,
            keep_daily: Rules::default().daily,
            keep_weekly: Rules::default().weekly,
            keep_monthly: Rules::default().monthly,
            keep_yearly: Rules::default().yearly,
            vault_size_limit: None,
            exclude: Vec::new(),
            max_delete_ratio: 0.5,
            checksums: true,
            stop_timeout: Duration::from_secs(60),
            on_version: None,
            on_failure: None,
            on_recovery: None,
            ping_url: None,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            one_file_system: true,
            vault_group: None,
            replicate_to: Vec::new(),
            replicate_ssh: None,
            replicate_identity: None,
        }
    }
}

impl JobSettings {
    /// The job's retention rules (`keep_*`).
    pub fn rules(&self) -> Rules {
        Rules {
            versions: self.keep_versions,
            within: self.keep_within,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
        }
    }

    /// Checks the values that types alone cannot; the error names the key it is about.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(0.0..=1.0).contains(&self.max_delete_ratio) || self.max_delete_ratio.is_nan() {
            return Err(InvalidSetting {
                key: "max_delete_ratio",
                message: format!(
                    "max_delete_ratio must be between 0 and 1, not {}",
                    self.max_delete_ratio
                ),
            });
        }
        if self.min_snapshot_time > self.max_snapshot_delay {
            return Err(InvalidSetting {
                key: "min_snapshot_time",
                message: "min_snapshot_time is longer than max_snapshot_delay".into(),
            });
        }
        if let Some(url) = &self.ping_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(InvalidSetting {
                key: "ping_url",
                message: format!("ping_url `{url}` must start with http:// or https://"),
            });
        }
        if self.hook_timeout.is_zero() {
            return Err(InvalidSetting {
                key: "hook_timeout",
                message: "hook_timeout must be longer than 0".into(),
            });
        }
        for to in &self.replicate_to {
            crate::format::destination::Destination::parse(to).map_err(|why| InvalidSetting {
                key: "replicate_to",
                message: format!("replicate_to: {why}"),
            })?;
        }
        if let Some(id) = &self.replicate_identity
            && !id.is_absolute()
        {
            return Err(InvalidSetting {
                key: "replicate_identity",
                message: format!(
                    "replicate_identity `{}` is relative: use an absolute path",
                    id.display()
                ),
            });
        }
        for pat in &self.exclude {
            crate::format::exclude::check_pattern(pat).map_err(|message| InvalidSetting {
                key: "exclude",
                message,
            })?;
        }
        if let Some(group) = &self.vault_group
            && (group.is_empty() || group.contains(|c: char| c == ':' || c.is_whitespace()))
        {
            return Err(InvalidSetting {
                key: "vault_group",
                message: format!("vault_group `{}` is not a group name", group.escape_debug()),
            });
        }
        Ok(())
    }
}

/// A setting whose value its type allows but its meaning does not, with the key it is
/// about (so a message is never searched for a key name).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSetting {
    /// The setting's key, as in the configuration file.
    pub key: &'static str,
    /// The whole explanation.
    pub message: String,
}

/// The `keep_*` rules of a job. A count of 0 (or a zero `within`) means the rule keeps none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `keep_versions`: the newest N versions.
    pub versions: u64,
    /// `keep_within`: every version younger than this.
    pub within: Duration,
    /// `keep_hourly`: the newest version of each of the last N hours that have one.
    pub hourly: u64,
    /// `keep_daily`: ... days.
    pub daily: u64,
    /// `keep_weekly`: ... ISO weeks.
    pub weekly: u64,
    /// `keep_monthly`: ... months.
    pub monthly: u64,
    /// `keep_yearly`: ... years.
    pub yearly: u64,
}

impl Default for Rules {
    /// The defaults of docs/configuration.md.
    fn default() -> Self {
        Rules {
            versions: 100,
            within: Duration::from_secs(3600),
            hourly: 24,
            daily: 14,
            weekly: 8,
            monthly: 12,
            yearly: 0,
        }
    }
}

impl Rules {
    /// Every rule 0: the rule set that keeps none (and so retires nothing by count or time).
    pub const NONE: Rules = Rules {
        versions: 0,
        within: Duration::ZERO,
        hourly: 0,
        daily: 0,
        weekly: 0,
        monthly: 0,
        yearly: 0,
    };

    /// True when every rule is 0: nothing is retired by count or time.
    pub fn is_empty(&self) -> bool {
        *self == Rules::NONE
    }
}

/// Parses a duration: humantime (`30s`, `10m`, `1h 30m`, `500ms`). The error says, in
/// the configuration's words, what is wrong.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    humantime::parse_duration(text.trim()).map_err(|e| {
        let why = match e {
            E::NumberExpected(_) | E::InvalidCharacter(_) | E::Empty => {
                "expected a number and a unit (like \"30s\", \"10m\", \"1h 30m\")".to_owned()
            }
            E::UnknownUnit { unit, .. } => format!(
                "unknown unit `{unit}` (use ms, s, m, h, d, w, M, y: like \"30s\", \"10m\", \"1h 30m\")"
            ),
            E::NumberOverflow => "too large".to_owned(),
        };
        format!("bad duration `{text}`: {why}")
    })
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses a size: an integer with an optional unit. `K`, `M`, `G`, `T` and `KiB`…`TiB` are
/// powers of 1024; `kB`, `MB`, `GB`, `TB` are powers of 1000; `B` or nothing is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("bad size `{text}`: a size cannot be negative"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "bad size `{text}`: unknown unit `{unit}` (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            ));
        }
    };
    if num.is_empty() {
        return Err(format!("bad size `{text}`: no number"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("bad size `{text}`: `{num}` is not a number"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("bad size `{text}`: too large"));
    }
    Ok(bytes as u64)
}

/// Formats bytes for people: `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Sanitizes a job name into a folder name (docs/configuration.md): keep `A-Z a-z 0-9 . _ -`, replace
/// every other character with `_`. Empty, `.` and `..` are refused.
pub fn sanitize_job_name(name: &str) -> Result<String, String> {
    let folder: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if folder.is_empty() || folder == "." || folder == ".." {
        return Err(format!(
            "job name `{}` sanitizes to `{folder}`, which cannot be a folder",
            name.escape_debug()
        ));
    }
    Ok(folder)
}

mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

mod size_text {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_u64(*b),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(b) => Ok(Some(b)),
            Raw::Text(t) => super::parse_size(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("GiB").is_err());
        assert!(
            parse_size("-5GiB")
                .expect_err("negative")
                .contains("cannot be negative")
        );
        assert!(
            parse_size("5 parsecs")
                .expect_err("unit")
                .contains("parsecs")
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            sanitize_job_name("my docs/2026").as_deref(),
            Ok("my_docs_2026")
        );
        assert_eq!(sanitize_job_name("é").as_deref(), Ok("_"));
        assert!(sanitize_job_name("").is_err());
        assert!(sanitize_job_name("..").is_err());
    }

    #[test]
    fn settings_round_trip_through_toml() {
        let s = JobSettings {
            vault_size_limit: Some(5 << 30),
            ..JobSettings::default()
        };
        let text = toml::to_string(&s).expect("serialize");
        let back: JobSettings = toml::from_str(&text).expect("deserialize");
        assert_eq!(back, s);
        let err = toml::from_str::<JobSettings>("keep_versionz = 3").expect_err("unknown key");
        assert!(err.to_string().contains("keep_versionz"), "{err}");
        let err = toml::from_str::<JobSettings>("min_snapshot_time = \"soon\"").expect_err("bad");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn hooks_read_as_words_or_lists() {
        let s: JobSettings = toml::from_str(
            "on_version = 'notify-send \"new version\" --urgency=low'\n\
             on_failure = [\"sh\", \"-c\", \"echo $REVERB_MESSAGE\"]\n\
             ping_url = \"https://hc.example/abc\"\nhook_timeout = \"5s\"",
        )
        .expect("hooks");
        assert_eq!(
            s.on_version.as_ref().map(HookCommand::argv),
            Some(
                &[
                    "notify-send".to_owned(),
                    "new version".into(),
                    "--urgency=low".into()
                ][..]
            )
        );
        assert_eq!(
            s.on_failure.as_ref().map(|c| c.argv().len()),
            Some(3),
            "a list is taken as it is"
        );
        assert_eq!(s.hook_timeout, Duration::from_secs(5));
        let back: JobSettings = toml::from_str(&toml::to_string(&s).expect("ser")).expect("de");
        assert_eq!(back, s);
        assert_eq!(
            split_words(r#"a 'b c' "d \"e\"" f\ g $HOME"#).expect("split"),
            ["a", "b c", "d \"e\"", "f g", "$HOME"]
        );
        assert!(split_words("'open").is_err());
        assert!(toml::from_str::<JobSettings>("on_version = ''").is_err());
        assert!(toml::from_str::<JobSettings>("on_version = []").is_err());
        // Defaults are not written into job.toml.
        let text = toml::to_string(&JobSettings::default()).expect("ser");
        assert!(!text.contains("hook") && !text.contains("on_"), "{text}");
    }

    #[test]
    fn a_validation_error_names_its_key_by_type() {
        let with = |f: fn(&mut JobSettings)| {
            let mut s = JobSettings::default();
            f(&mut s);
            s.validate().map_err(|e| e.key)
        };
        assert_eq!(with(|_| {}), Ok(()));
        assert_eq!(with(|s| s.max_delete_ratio = 1.5), Err("max_delete_ratio"));
        assert_eq!(
            with(|s| s.min_snapshot_time = Duration::from_secs(3600)),
            Err("min_snapshot_time")
        );
        assert_eq!(
            with(|s| s.ping_url = Some("ftp://x".into())),
            Err("ping_url")
        );
        assert_eq!(
            with(|s| s.hook_timeout = Duration::ZERO),
            Err("hook_timeout")
        );
        // A pattern that mentions another key is still the exclude key's problem.
        assert_eq!(
            with(|s| s.exclude = vec!["max_delete_ratio[".into()]),
            Err("exclude")
        );
    }
}
