//! Exclude patterns (docs/configuration.md `exclude`, `reverb-watch --exclude`): gitignore-style.
//!
//! Rules, as in gitignore: a pattern without a slash (other than a trailing one) matches a
//! name at any depth; a pattern with a slash is anchored at the source root (a leading `/`
//! is dropped); a trailing `/` matches directories only; `*`, `?`, `[…]` and `**` are globs
//! that do not cross `/` except `**`; `!pattern` re-includes; the last matching pattern
//! wins. An excluded directory excludes everything below it.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A compiled list of patterns.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    set: Option<GlobSet>,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    negated: bool,
    dir_only: bool,
}

/// Checks one pattern, returning a message naming it when it cannot compile.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    Excludes::new(&[pattern.to_owned()]).map(|_| ())
}

impl Excludes {
    /// Compiles `patterns`; the error names the bad pattern.
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        if patterns.is_empty() {
            return Ok(Excludes::default());
        }
        let mut builder = GlobSetBuilder::new();
        let mut rules = Vec::new();
        for original in patterns {
            let mut p = original.as_str();
            let negated = p.starts_with('!');
            if negated {
                p = &p[1..];
            }
            let dir_only = p.ends_with('/');
            let p = p.trim_end_matches('/');
            if p.is_empty() {
                return Err(format!("exclude pattern `{original}` is empty"));
            }
            let anchored = p.contains('/');
            let p = p.trim_start_matches('/');
            let glob_text = if anchored {
                p.to_owned()
            } else {
                format!("**/{p}")
            };
            let glob = GlobBuilder::new(&glob_text)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                // The reason alone: the error's own text quotes the glob as rewritten
                // here (`**/…`), which the user never wrote.
                .map_err(|e| format!("bad exclude pattern `{original}`: {}", e.kind()))?;
            builder.add(glob);
            rules.push(Rule { negated, dir_only });
        }
        let set = builder
            .build()
            .map_err(|e| format!("bad exclude patterns: {e}"))?;
        Ok(Excludes {
            set: Some(set),
            rules,
        })
    }

    /// Is the entry at `rel` (relative to the source root) excluded by its own name?
    /// Callers that walk top-down do not descend into excluded directories, which gives
    /// gitignore's "excluded directory excludes its contents".
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        let Some(set) = &self.set else { return false };
        let mut verdict = false;
        for i in set.matches(rel) {
            let rule = &self.rules[i];
            if rule.dir_only && !is_dir {
                continue;
            }
            verdict = !rule.negated;
            let _ = i;
        }
        verdict
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.set.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("compiles")
    }

    #[test]
    fn gitignore_rules() {
        let e = ex(&["*.swp", ".cache/", "/build", "docs/*.tmp", "!keep.swp"]);
        assert!(e.is_excluded(Path::new("a/b/x.swp"), false));
        assert!(!e.is_excluded(Path::new("a/keep.swp"), false));
        assert!(e.is_excluded(Path::new("x/.cache"), true));
        assert!(!e.is_excluded(Path::new("x/.cache"), false));
        assert!(e.is_excluded(Path::new("build"), true));
        assert!(!e.is_excluded(Path::new("src/build"), true));
        assert!(e.is_excluded(Path::new("docs/a.tmp"), false));
        assert!(!e.is_excluded(Path::new("docs/sub/a.tmp"), false));
        assert!(
            Excludes::new(&["a[".into()])
                .expect_err("bad")
                .contains("a[")
        );
    }
}
