//! Where a configuration error is (file, section, key, line) and how it is worded: one
//! line, the user's words (`a whole number like 3`), never a Rust type or a parser offset.
//! Which words is decided from the key's type and the value's TOML type, never from the
//! text of a deserializer's message.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::Path;

use crate::error::{Error, show};
use crate::format::settings::JobSettings;

/// Where an error is: the file, the job (or section), the key and the TOML line.
pub(super) struct Place<'a> {
    pub(super) file: &'a Path,
    pub(super) job: Section<'a>,
    pub(super) key: Option<&'a str>,
    pub(super) line: Option<usize>,
}

#[derive(Clone, Copy)]
pub(super) enum Section<'a> {
    Top,
    Defaults,
    Job(&'a str),
    CommandLine(&'a str),
}

impl Place<'_> {
    pub(super) fn error(&self, message: impl Display) -> Error {
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

pub(super) fn one_line(text: &str) -> String {
    text.trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The 1-based line of byte offset `at` in `text`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// ` at `…`` showing the (trimmed, escaped, shortened) line holding byte offset `at`.
pub(super) fn line_text(text: &str, at: usize) -> String {
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
pub(super) fn a_type(value: &toml::Value) -> String {
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
pub(super) struct Lines(HashMap<Vec<String>, usize>);

impl Lines {
    pub(super) fn of(text: &str) -> Lines {
        let mut lines = Lines::default();
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            lines.walk(text, &mut Vec::new(), doc.get_ref());
        }
        lines
    }

    pub(super) fn walk(
        &mut self,
        text: &str,
        path: &mut Vec<String>,
        table: &toml::de::DeTable<'_>,
    ) {
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

    pub(super) fn get(&self, path: &[&str]) -> Option<usize> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.0.get(&key).copied()
    }
}

/// The known key closest to a misspelt one (at most 2 edits, or a prefix of it).
pub(super) fn did_you_mean<'k>(key: &str, known: &'k [String]) -> Option<&'k str> {
    pub(super) fn distance(a: &str, b: &str) -> usize {
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
pub(super) fn wrong_type(key: &str, value: &toml::Value) -> Option<String> {
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
    let negative = if negative { ", which is negative" } else { "" };
    Some(format!(
        "{} given{negative}, expected {wanted}",
        given(value)
    ))
}

/// "the string \"3\"", "the integer 1": a TOML value as the user wrote it.
pub(super) fn given(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string \"{}\"", s.escape_debug()),
        other => format!("{} `{other}`", a_type(other)),
    }
}
