//! Verifying and recounting a job (docs/format.md#invariants I1–I7, `reverb-index --check` / `--recount`).
//!
//! Owns: the list of problems a job folder can have, the read-only [`check`] that finds
//! them, the [`recount`] that rewrites index.tsv from the disk, and [`vault_links`], the walk
//! that finds a version's vault links by visiting only its real directories (never following
//! a link), so its cost is proportional to what the version holds, not to the tree.
//!
//! Invariants: [`check`] never writes anything (no lock needed, safe on a damaged vault:
//! every damage is a [`Problem`], never a panic); [`recount`] changes only index.tsv (atomic
//! rewrite) and the journal, and keeps each row's `version`, `dir`, `created`, `changed`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result, show};
use crate::fault;
use crate::format::index::{self, IndexRow};
use crate::format::jobfile::JobFile;
use crate::format::journal::JournalEvent;
use crate::format::tsv;
use crate::vault::job::JobCtx;
use crate::vault::layout::{JobDir, VersionName};
use crate::vault::measure;
use crate::vault::tree::{self, Entry, Lookalikes, MAX_LINK_DEPTH};

/// What kind of damage a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// job.toml is missing or cannot be read.
    JobToml,
    /// index.tsv is missing or cannot be read.
    Index,
    /// A version in index.tsv has no directory.
    MissingVersion,
    /// A version directory is not in index.tsv.
    UnindexedVersion,
    /// A vault link whose target does not exist (I1).
    DanglingLink,
    /// A vault link to the same or a newer version (I1).
    LinkNotOlder,
    /// A vault link into a version that is not retained (I1).
    LinkToRetired,
    /// A vault link whose target is itself reached through a vault link (I2).
    NonCanonicalLink,
    /// A vault link deeper than [`MAX_LINK_DEPTH`] components (I2).
    TooDeep,
    /// A vault link in the oldest retained version (I3).
    LinkInOldest,
    /// index.tsv's counts differ from the disk (I7).
    SizeMismatch,
    /// A leftover entry in `.partial/` (I6).
    Partial,
    /// `current` does not point at the newest version.
    Current,
    /// A retirement was interrupted (job.toml's `retiring` mark).
    Retiring,
    /// A lookalike record that names no symlink, or an unreadable registry.
    Lookalike,
    /// Something could not be read while checking.
    Unreadable,
}

impl ProblemKind {
    /// The kind's name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::JobToml => "job-toml",
            ProblemKind::Index => "index",
            ProblemKind::MissingVersion => "missing-version",
            ProblemKind::UnindexedVersion => "unindexed-version",
            ProblemKind::DanglingLink => "dangling-link",
            ProblemKind::LinkNotOlder => "link-not-older",
            ProblemKind::LinkToRetired => "link-to-retired",
            ProblemKind::NonCanonicalLink => "non-canonical-link",
            ProblemKind::TooDeep => "too-deep",
            ProblemKind::LinkInOldest => "link-in-oldest",
            ProblemKind::SizeMismatch => "size-mismatch",
            ProblemKind::Partial => "partial",
            ProblemKind::Current => "current",
            ProblemKind::Retiring => "retiring",
            ProblemKind::Lookalike => "lookalike",
            ProblemKind::Unreadable => "unreadable",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The job's folder name.
    pub job: String,
    /// What is wrong.
    pub kind: ProblemKind,
    /// Where, relative to the job folder (`V3-…/a/b`, `index.tsv`, `.partial/x`).
    pub path: PathBuf,
    /// Why, for people.
    pub detail: String,
}

impl fmt::Display for Problem {
    /// One TSV line: `job\tkind\tpath\tdetail`, fields escaped (docs/format.md#text-files).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\t{}\t{}",
            tsv::escape(&self.job),
            self.kind,
            tsv::escape_os(self.path.as_os_str()),
            tsv::escape(&self.detail)
        )
    }
}

/// Every vault link physically in version `phys`: `(path, holder)` pairs, found by walking
/// only the version's real directories (a link is never followed).
pub fn vault_links(
    job: &Path,
    phys: &str,
    lookalikes: &Lookalikes,
) -> Result<Vec<(PathBuf, String)>> {
    let root = job.join(phys);
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.as_os_str().is_empty() {
            root.clone()
        } else {
            root.join(&rel)
        };
        for e in fs::read_dir(&dir).ctx("cannot list", &dir)? {
            let e = e.ctx("cannot list", &dir)?;
            let ft = e.file_type().ctx("cannot inspect", &e.path())?;
            let child = rel.join(e.file_name());
            if ft.is_dir() {
                stack.push(child);
            } else if ft.is_symlink()
                && let Entry::VaultLink { holder } =
                    tree::classify(&e.path(), &child, phys, ft, lookalikes)?
            {
                out.push((child, holder));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Where a vault link's target stands in its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every component is real in the holder: canonical and existing.
    Canonical,
    /// A component (this path) is itself a vault link: the link is not canonical.
    ThroughLink(PathBuf),
    /// The target does not exist (or a non-final component is not a directory).
    Missing,
}

/// Inspects the target of a vault link at `rel` into `holder` without following anything.
pub fn target_of(job: &Path, holder: &str, rel: &Path, lookalikes: &Lookalikes) -> Result<Target> {
    let comps: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut sofar = PathBuf::new();
    for (i, name) in comps.iter().enumerate() {
        sofar.push(name);
        let last = i + 1 == comps.len();
        let abs = job.join(holder).join(&sofar);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::Missing),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(Target::Missing),
            Err(e) => return Err(e).ctx("cannot inspect", &abs),
        };
        let ft = meta.file_type();
        if ft.is_symlink()
            && let Entry::VaultLink { .. } = tree::classify(&abs, &sofar, holder, ft, lookalikes)?
        {
            return Ok(Target::ThroughLink(Path::new(holder).join(&sofar)));
        }
        if !last && !ft.is_dir() {
            return Ok(Target::Missing);
        }
    }
    Ok(Target::Canonical)
}

/// Recomputes `files`, `logical_bytes` (through links) and `held_bytes` (own real entries)
/// of every version in index.tsv from the disk, rewrites index.tsv atomically and journals
/// `recount`. The caller holds the job lock.
pub fn recount(ctx: &mut JobCtx) -> Result<Vec<IndexRow>> {
    let old = index::read(&ctx.dir.index())?;
    let job = ctx.dir.path.clone();
    let lookalikes = Lookalikes::load(&job)?;
    let mut rows = Vec::with_capacity(old.len());
    for r in &old {
        let vdir = job.join(&r.dir);
        if !vdir.is_dir() {
            return Err(Error::Damaged(format!(
                "version {} in index.tsv is missing from {} (see reverb-index --check)",
                r.dir,
                show(&job)
            )));
        }
        let (files, logical) = measure::measure_tree(&job, &r.dir, Path::new(""), &lookalikes)?;
        let held = measure::held_bytes(&vdir)?;
        rows.push(IndexRow {
            files,
            logical_bytes: logical,
            held_bytes: held,
            ..r.clone()
        });
    }
    index::write(&ctx.dir.index(), &rows)?;
    fault::step();
    ctx.journal.note(
        JournalEvent::Recount,
        b"",
        &format!(
            "{} versions: held_bytes {} -> {}",
            rows.len(),
            index::total_held(&old),
            index::total_held(&rows)
        ),
    );
    Ok(rows)
}

/// Checks a job folder against I1–I7 (docs/format.md#invariants), read-only. An `Err` only for a job folder that
/// cannot even be listed; every other damage is a [`Problem`].
pub fn check(dir: &JobDir) -> Result<Vec<Problem>> {
    let job = &dir.path;
    let mut out = Vec::new();
    let mut add = |kind, path: &Path, detail: String| {
        out.push(Problem {
            job: dir.folder.clone(),
            kind,
            path: path.to_path_buf(),
            detail,
        })
    };

    let file = match JobFile::read(&dir.job_toml()) {
        Ok(f) => Some(f),
        Err(e) => {
            add(ProblemKind::JobToml, Path::new("job.toml"), e.to_string());
            None
        }
    };
    let retiring = file.as_ref().and_then(|f| f.state.retiring.clone());
    if let Some(r) = &retiring {
        add(
            ProblemKind::Retiring,
            Path::new(r),
            "a retirement was interrupted; reverb-retire finishes it".into(),
        );
    }

    let on_disk = dir.versions_on_disk()?;
    let rows = if dir.index().exists() {
        match index::read(&dir.index()) {
            Ok(r) => Some(r),
            Err(e) => {
                add(ProblemKind::Index, Path::new("index.tsv"), e.to_string());
                None
            }
        }
    } else {
        add(
            ProblemKind::Index,
            Path::new("index.tsv"),
            "index.tsv is missing (reverb-index --recount cannot rebuild rows it does not have)"
                .into(),
        );
        None
    };
    let lookalikes = match Lookalikes::load(job) {
        Ok(l) => l,
        Err(e) => {
            add(
                ProblemKind::Lookalike,
                Path::new(tree::LOOKALIKES),
                e.to_string(),
            );
            Lookalikes::default()
        }
    };

    let disk_names: HashSet<&str> = on_disk.iter().map(|v| v.dir.as_str()).collect();
    // The retained versions, oldest first: the index, or the disk when there is none.
    let retained: Vec<VersionName> = match &rows {
        Some(rows) => rows
            .iter()
            .map(|r| VersionName {
                n: r.version,
                dir: r.dir.clone(),
            })
            .collect(),
        None => on_disk.clone(),
    };
    let retained_names: HashSet<&str> = retained.iter().map(|v| v.dir.as_str()).collect();

    if let Some(rows) = &rows {
        for r in rows {
            if !disk_names.contains(r.dir.as_str()) {
                add(
                    ProblemKind::MissingVersion,
                    Path::new(&r.dir),
                    "in index.tsv but its directory is missing".into(),
                );
            }
        }
        for v in &on_disk {
            if !retained_names.contains(v.dir.as_str()) && retiring.as_deref() != Some(&v.dir) {
                add(
                    ProblemKind::UnindexedVersion,
                    Path::new(&v.dir),
                    "version directory not in index.tsv".into(),
                );
            }
        }
        let current = dir.read_current();
        match rows.last() {
            Some(last) if current.as_deref() != Some(last.dir.as_str()) => add(
                ProblemKind::Current,
                Path::new("current"),
                format!(
                    "points at {}, not at the newest version {}",
                    current.as_deref().unwrap_or("nothing"),
                    last.dir
                ),
            ),
            _ => {}
        }
    }

    if let Ok(rd) = fs::read_dir(dir.partial()) {
        for e in rd.flatten() {
            add(
                ProblemKind::Partial,
                &Path::new(".partial").join(e.file_name()),
                "an unfinished version (removed by the next reverb-snap)".into(),
            );
        }
    }

    let mut any_not_older = false;
    for (i, v) in retained.iter().enumerate() {
        if !disk_names.contains(v.dir.as_str()) {
            continue;
        }
        let links = match vault_links(job, &v.dir, &lookalikes) {
            Ok(l) => l,
            Err(e) => {
                add(ProblemKind::Unreadable, Path::new(&v.dir), e.to_string());
                continue;
            }
        };
        for (rel, holder) in links {
            let at = Path::new(&v.dir).join(&rel);
            if i == 0 {
                add(
                    ProblemKind::LinkInOldest,
                    &at,
                    format!("the oldest version links into {holder}"),
                );
            }
            if tree::depth(&rel) > MAX_LINK_DEPTH {
                add(
                    ProblemKind::TooDeep,
                    &at,
                    format!("a vault link deeper than {MAX_LINK_DEPTH} components"),
                );
            }
            let holder_n = VersionName::parse(&holder).map(|h| h.n).unwrap_or(u64::MAX);
            if holder_n >= v.n {
                any_not_older = true;
                add(
                    ProblemKind::LinkNotOlder,
                    &at,
                    format!("links into {holder}, which is not older"),
                );
                continue;
            }
            if !retained_names.contains(holder.as_str()) {
                add(
                    ProblemKind::LinkToRetired,
                    &at,
                    format!(
                        "links into {holder}, which is not a retained version{}",
                        if disk_names.contains(holder.as_str()) {
                            ""
                        } else {
                            " (and is missing)"
                        }
                    ),
                );
                continue;
            }
            match target_of(job, &holder, &rel, &lookalikes) {
                Ok(Target::Canonical) => {}
                Ok(Target::Missing) => add(
                    ProblemKind::DanglingLink,
                    &at,
                    format!("target {holder}/{} does not exist", show(&rel)),
                ),
                Ok(Target::ThroughLink(via)) => add(
                    ProblemKind::NonCanonicalLink,
                    &at,
                    format!("target is reached through the vault link {}", show(&via)),
                ),
                Err(e) => add(ProblemKind::Unreadable, &at, e.to_string()),
            }
        }
    }

    if let Some(rows) = &rows {
        if any_not_older {
            // A link to a newer version can make a cycle: do not measure through links.
            add(
                ProblemKind::SizeMismatch,
                Path::new("index.tsv"),
                "sizes not verified: links to newer versions make the tree unsafe to walk".into(),
            );
        } else {
            for r in rows {
                if !disk_names.contains(r.dir.as_str()) {
                    continue;
                }
                match measure(job, &r.dir, &lookalikes) {
                    Ok((files, logical, held)) => {
                        let mut diffs = Vec::new();
                        for (name, idx, disk) in [
                            ("files", r.files, files),
                            ("logical_bytes", r.logical_bytes, logical),
                            ("held_bytes", r.held_bytes, held),
                        ] {
                            if idx != disk {
                                diffs.push(format!("{name} index={idx} disk={disk}"));
                            }
                        }
                        if !diffs.is_empty() {
                            add(
                                ProblemKind::SizeMismatch,
                                Path::new(&r.dir),
                                format!("{} (reverb-index --recount fixes it)", diffs.join(", ")),
                            );
                        }
                    }
                    Err(e) => add(ProblemKind::Unreadable, Path::new(&r.dir), e.to_string()),
                }
            }
        }
    }

    for (vdir, rel) in lookalike_records(job, &mut add) {
        let abs = job.join(&vdir).join(&rel);
        let ok = fs::symlink_metadata(&abs)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if !ok {
            add(
                ProblemKind::Lookalike,
                &Path::new(&vdir).join(&rel),
                "lookalikes.tsv records a source link that is not there".into(),
            );
        }
    }
    Ok(out)
}

fn measure(job: &Path, vdir: &str, lookalikes: &Lookalikes) -> Result<(u64, u64, u64)> {
    let (files, logical) = measure::measure_tree(job, vdir, Path::new(""), lookalikes)?;
    let held = measure::held_bytes(&job.join(vdir))?;
    Ok((files, logical, held))
}

/// The raw records of lookalikes.tsv (unreadable ones are reported through `add`).
fn lookalike_records(
    job: &Path,
    add: &mut impl FnMut(ProblemKind, &Path, String),
) -> Vec<(String, PathBuf)> {
    let path = job.join(tree::LOOKALIKES);
    let Ok(text) = fs::read_to_string(&path) else {
        return Vec::new();
    };
    let Ok(table) = tsv::Table::parse(&text, &["dir", "path"]) else {
        return Vec::new(); // already reported by Lookalikes::load
    };
    let mut out = Vec::new();
    let mut seen: HashMap<(String, PathBuf), ()> = HashMap::new();
    for row in table.rows() {
        match (row.text("dir"), row.os("path")) {
            (Ok(d), Ok(p)) => {
                let key = (d, PathBuf::from(p));
                if seen.insert(key.clone(), ()).is_none() {
                    out.push(key);
                }
            }
            _ => add(
                ProblemKind::Lookalike,
                Path::new(tree::LOOKALIKES),
                format!("line {} cannot be read", row.line),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_is_one_escaped_tsv_line() {
        let p = Problem {
            job: "docs".into(),
            kind: ProblemKind::DanglingLink,
            path: PathBuf::from("V2-20261124T214900Z/a\tb"),
            detail: "line\nbreak".into(),
        };
        assert_eq!(
            p.to_string(),
            "docs\tdangling-link\tV2-20261124T214900Z/a\\tb\tline\\nbreak"
        );
    }
}
