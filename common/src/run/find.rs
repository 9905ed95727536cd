//! `reverberator find JOB PATTERN` and the path forms `history` accepts (docs/cli.md).
//!
//! Owns: matching a glob against every retained version of a job, and turning a path as a
//! user typed it (relative to the source, absolute inside it, or escaped as `diff`/`find`
//! printed it) into the candidates to look up. Read-only: nothing here writes to a vault.
//!
//! Invariants: a pattern without `/` matches an entry's name at any depth (as `find -name`);
//! with `/` it matches the whole path relative to the source, `*` not crossing `/` and `**`
//! crossing it. Every version is read as it promises (vault links followed), so a path is
//! reported in exactly the versions whose tree holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use serde::Serialize;

use crate::error::{Error, Result, show};
use crate::format::index::IndexRow;
use crate::format::tsv;
use crate::vault::layout::JobDir;
use crate::vault::tree::{Links, Lookalikes, Node, Visitor, Walk};

/// One path matching a `find` pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundPath {
    /// Record type for JSON lines.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The path relative to the source, escaped with the TSV rules.
    pub path: String,
    /// The versions holding it, oldest first.
    pub versions: Vec<u64>,
    /// Not in the newest version: deleted (or moved away) since.
    pub deleted: bool,
}

/// A compiled `find` pattern.
pub struct Pattern {
    glob: GlobMatcher,
    by_name: bool,
}

impl Pattern {
    /// Compiles `text`; a bad glob is a usage error naming it.
    pub fn new(text: &str) -> Result<Pattern> {
        let trimmed = text.trim_start_matches("./").trim_start_matches('/');
        let glob = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| {
                Error::Usage(format!("pattern `{}`: {}", text.escape_debug(), e.kind()))
            })?;
        Ok(Pattern {
            glob: glob.compile_matcher(),
            by_name: !trimmed.contains('/'),
        })
    }

    fn matches(&self, rel: &Path) -> bool {
        if self.by_name {
            rel.file_name().is_some_and(|n| self.glob.is_match(n))
        } else {
            self.glob.is_match(rel)
        }
    }
}

/// Every path matching `pattern` in any retained version (`rows`, oldest first), sorted by
/// path.
pub fn find(dir: &JobDir, rows: &[IndexRow], pattern: &Pattern) -> Result<Vec<FoundPath>> {
    struct Collect<'p> {
        pattern: &'p Pattern,
        version: u64,
        seen: BTreeMap<PathBuf, Vec<u64>>,
    }
    impl Visitor for Collect<'_> {
        fn entry(&mut self, node: &mut Node) -> Result<()> {
            if !node.rel.as_os_str().is_empty() && self.pattern.matches(&node.rel) {
                let at = self.seen.entry(node.rel.clone()).or_default();
                if at.last() != Some(&self.version) {
                    at.push(self.version);
                }
            }
            Ok(())
        }
    }
    let lookalikes = Lookalikes::load(&dir.path)?;
    let walk = Walk::new(&dir.path, &lookalikes, Links::Follow);
    let mut found = Collect {
        pattern,
        version: 0,
        seen: BTreeMap::new(),
    };
    for row in rows {
        found.version = row.version;
        walk.run(&row.dir, Path::new(""), &mut found)?;
    }
    let newest = rows.last().map(|r| r.version);
    Ok(found
        .seen
        .into_iter()
        .map(|(rel, versions)| FoundPath {
            kind: "find",
            path: tsv::escape_os(rel.as_os_str()),
            deleted: versions.last().copied() != newest,
            versions,
        })
        .collect())
}

/// The paths relative to the source that `arg` may mean, most likely first: an absolute path
/// inside `source` with the source taken off; the path as typed (relative, `./` and a
/// leading `/` dropped); the path unescaped, as `diff` and `find` print it. An absolute path
/// outside the source is a usage error.
pub fn path_candidates(arg: &Path, source: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if arg.is_absolute() {
        let real = crate::vault::job::canonical_or_nearest(source);
        match arg
            .strip_prefix(source)
            .or_else(|_| arg.strip_prefix(&real))
        {
            Ok(rel) => out.push(crate::run::porcelain::rel_arg(rel)),
            Err(_) => {
                return Err(Error::Usage(format!(
                    "{} is not inside the job's source {}: give a path inside it or relative to it",
                    show(arg),
                    show(source)
                )));
            }
        }
    } else {
        out.push(crate::run::porcelain::rel_arg(arg));
    }
    if let Some(text) = arg.to_str()
        && text.contains('\\')
        && let Ok(raw) = tsv::unescape_os(text)
    {
        out.push(crate::run::porcelain::rel_arg(Path::new(&raw)));
    }
    out.dedup();
    Ok(out)
}
