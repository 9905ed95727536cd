//! Verifying and recounting a job (docs/format.md#invariants I1–I7, `reverb-index --check` / `--recount`).
//!
//! Owns: the list of problems a job folder can have, the read-only [`check`] that finds
//! them (one small function per invariant, over the records [`check`] reads once), and the
//! [`recount`] that rewrites index.tsv from the disk. The walks are [`tree`]'s, the sizes
//! [`measure`]'s, so a check counts exactly as the writers do.
//!
//! Invariants: [`check`] never writes anything (no lock needed, safe on a damaged vault:
//! every damage is a [`Problem`], never a panic); [`recount`] changes only index.tsv (atomic
//! rewrite) and the journal, and keeps each row's `version`, `dir`, `created`, `changed`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, show};
use crate::fault;
use crate::format::climbing_tsv;
use crate::format::index::{self, IndexRow};
use crate::format::jobfile::JobFile;
use crate::format::journal::JournalEvent;
use crate::format::tsv;
use crate::vault::access;
use crate::vault::job::JobCtx;
use crate::vault::layout::{JobDir, VersionName};
use crate::vault::measure;
use crate::vault::tree::{self, Lookalikes, MAX_LINK_DEPTH, Target};

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
    /// A leftover entry in `.partial/` (I6): one no writer holding the job's lock is
    /// building.
    Partial,
    /// `current` does not point at the newest version.
    Current,
    /// A retirement was interrupted (job.toml's `retiring` mark).
    Retiring,
    /// A lookalike record that names no symlink, or an unreadable registry.
    Lookalike,
    /// A directory a relative source link leaves by `..` is a vault link, or climbing.tsv
    /// disagrees with the tree (I8).
    ClimbingLink,
    /// Something could not be read while checking.
    Unreadable,
    /// A folder or record of the vault more people may read than configured
    /// (docs/security.md#who-may-read-the-vault); `reverberator verify` reports it.
    Access,
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
            ProblemKind::ClimbingLink => "climbing-link",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::Access => "access",
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

/// Recomputes `files`, `logical_bytes` (through links) and `held_bytes` (own real entries)
/// of every version in index.tsv from the disk, rewrites index.tsv atomically and journals
/// `recount`. The caller holds the job lock.
pub fn recount(ctx: &mut JobCtx) -> Result<Vec<IndexRow>> {
    let old = index::read(&ctx.dir.index())?;
    let job = ctx.dir.path.clone();
    let lookalikes = Lookalikes::load(&job)?;
    let mut rows = Vec::with_capacity(old.len());
    for r in &old {
        if !job.join(&r.dir).is_dir() {
            return Err(Error::Damaged(format!(
                "version {} in index.tsv is missing from {} (see reverb-index --check)",
                r.dir,
                show(&job)
            )));
        }
        let disk = measure::version_sizes(&job, &r.dir, &lookalikes)?;
        rows.push(IndexRow {
            files: disk.files,
            logical_bytes: disk.logical_bytes,
            held_bytes: disk.held_bytes,
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

/// Checks a job folder against I1–I7 (docs/format.md#invariants), read-only. An `Err` only
/// for a job folder that cannot even be listed; every other damage is a [`Problem`].
///
/// The problems come in this order: the job's own records (job.toml, a retirement to
/// finish, index.tsv, lookalikes.tsv), then each invariant's.
pub fn check(dir: &JobDir) -> Result<Vec<Problem>> {
    let (facts, mut found) = Facts::read(dir)?;
    found.extend(index_lists_the_versions(&facts));
    found.extend(no_partial_version(&facts));
    let (link_problems, links_all_older) = link_problems(&facts);
    found.extend(link_problems);
    found.extend(sizes_agree_with_index(&facts, links_all_older));
    found.extend(lookalikes_name_source_links(&facts));
    found.extend(links_resolve_inside(&facts, links_all_older));
    Ok(found)
}

/// Who may read the job `dir` (docs/security.md#who-may-read-the-vault): every folder or
/// record wider than the `vault_group` its job.toml records is an [`ProblemKind::Access`]
/// problem; a `vault_group` that cannot be used is one too. Read-only; a job.toml that
/// cannot be read is [`check`]'s to report (nothing here). `reverberator verify` adds these
/// to [`check`]'s.
pub fn access_problems(dir: &JobDir) -> Vec<Problem> {
    let Ok(file) = JobFile::read(&dir.job_toml()) else {
        return Vec::new();
    };
    let at = |path: PathBuf, detail: String| problem(dir, ProblemKind::Access, path, detail);
    let found = access::of_settings(&file.settings)
        .and_then(|a| access::wider(dir, a))
        .map_err(|e| vec![at(PathBuf::from("job.toml"), e.to_string())]);
    match found {
        Ok(wider) => wider.into_iter().map(|w| at(w.path, w.detail)).collect(),
        Err(problems) => problems,
    }
}

/// What [`check`] reads once and every invariant looks at.
struct Facts<'a> {
    dir: &'a JobDir,
    /// job.toml's `retiring` mark.
    retiring: Option<String>,
    /// index.tsv's rows, when it can be read.
    rows: Option<Vec<IndexRow>>,
    lookalikes: Lookalikes,
    /// The complete versions on disk, oldest first.
    on_disk: Vec<VersionName>,
    /// The retained versions, oldest first: the index's, or the disk's when there is none.
    retained: Vec<VersionName>,
    disk_names: HashSet<String>,
    retained_names: HashSet<String>,
}

impl<'a> Facts<'a> {
    /// Reads the job's records; what cannot be read is a problem (job.toml, index.tsv,
    /// lookalikes.tsv) and a `retiring` mark is reported. `Err` only when the job folder
    /// cannot be listed.
    fn read(dir: &'a JobDir) -> Result<(Facts<'a>, Vec<Problem>)> {
        let mut found = Vec::new();
        let retiring = match JobFile::read(&dir.job_toml()) {
            Ok(f) => f.state.retiring,
            Err(e) => {
                found.push(problem(
                    dir,
                    ProblemKind::JobToml,
                    "job.toml",
                    e.to_string(),
                ));
                None
            }
        };
        if let Some(r) = &retiring {
            let detail = "a retirement was interrupted; reverb-retire finishes it";
            found.push(problem(dir, ProblemKind::Retiring, r, detail.into()));
        }
        let on_disk = dir.versions_on_disk()?;
        let rows = read_rows(dir, &mut found);
        let lookalikes = Lookalikes::load(&dir.path).unwrap_or_else(|e| {
            found.push(problem(
                dir,
                ProblemKind::Lookalike,
                tree::LOOKALIKES,
                e.to_string(),
            ));
            Lookalikes::default()
        });
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
        let names = |vs: &[VersionName]| vs.iter().map(|v| v.dir.clone()).collect();
        let facts = Facts {
            dir,
            retiring,
            rows,
            lookalikes,
            disk_names: names(&on_disk),
            retained_names: names(&retained),
            on_disk,
            retained,
        };
        Ok((facts, found))
    }

    fn problem(&self, kind: ProblemKind, path: impl AsRef<Path>, detail: String) -> Problem {
        problem(self.dir, kind, path, detail)
    }

    fn job(&self) -> &Path {
        &self.dir.path
    }

    fn is_on_disk(&self, version: &str) -> bool {
        self.disk_names.contains(version)
    }

    fn is_retained(&self, version: &str) -> bool {
        self.retained_names.contains(version)
    }
}

fn problem(dir: &JobDir, kind: ProblemKind, path: impl AsRef<Path>, detail: String) -> Problem {
    Problem {
        job: dir.folder.clone(),
        kind,
        path: path.as_ref().to_path_buf(),
        detail,
    }
}

/// index.tsv's rows; a missing or unreadable index is a problem.
fn read_rows(dir: &JobDir, found: &mut Vec<Problem>) -> Option<Vec<IndexRow>> {
    if !dir.index().exists() {
        let detail =
            "index.tsv is missing (reverb-index --recount cannot rebuild rows it does not have)";
        found.push(problem(dir, ProblemKind::Index, "index.tsv", detail.into()));
        return None;
    }
    match index::read(&dir.index()) {
        Ok(r) => Some(r),
        Err(e) => {
            found.push(problem(dir, ProblemKind::Index, "index.tsv", e.to_string()));
            None
        }
    }
}

/// I7, the versions: every indexed version is on disk, every version on disk (but the one
/// being retired) is indexed, and `current` names the newest.
fn index_lists_the_versions(facts: &Facts) -> Vec<Problem> {
    let Some(rows) = &facts.rows else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for r in rows.iter().filter(|r| !facts.is_on_disk(&r.dir)) {
        let detail = "in index.tsv but its directory is missing";
        found.push(facts.problem(ProblemKind::MissingVersion, &r.dir, detail.into()));
    }
    for v in &facts.on_disk {
        if !facts.is_retained(&v.dir) && facts.retiring.as_deref() != Some(&v.dir) {
            let detail = "version directory not in index.tsv";
            found.push(facts.problem(ProblemKind::UnindexedVersion, &v.dir, detail.into()));
        }
    }
    let current = facts.dir.read_current();
    if let Some(last) = rows.last()
        && current.as_deref() != Some(last.dir.as_str())
    {
        let detail = format!(
            "points at {}, not at the newest version {}",
            current.as_deref().unwrap_or("nothing"),
            last.dir
        );
        found.push(facts.problem(ProblemKind::Current, "current", detail));
    }
    found
}

/// I5/I6: no unfinished version is left in `.partial/` (it never has a final name). A
/// version being built is not left: while a writer holds the job's lock (`reverb-snap`,
/// `reverb-receive`, which build there), `.partial/` is its work, and nothing is reported.
/// The lock is probed after the listing, and an entry is reported only when it is still
/// there then: one listed while its builder finished is gone, and one a builder that starts
/// after the probe meets was there without a writer.
fn no_partial_version(facts: &Facts) -> Vec<Problem> {
    let Ok(entries) = fs::read_dir(facts.dir.partial()) else {
        return Vec::new();
    };
    let listed: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    if listed.is_empty()
        || crate::vault::lock::held(&facts.dir.lock(), &facts.dir.folder) == Some(true)
    {
        return Vec::new();
    }
    listed
        .into_iter()
        .filter(|name| fs::symlink_metadata(facts.dir.partial().join(name)).is_ok())
        .map(|name| {
            let detail = "an unfinished version (removed by the next reverb-snap)";
            let at = Path::new(".partial").join(name);
            facts.problem(ProblemKind::Partial, at, detail.into())
        })
        .collect()
}

/// One vault link of a retained version, as the link invariants see it.
struct Link<'v> {
    /// The version holding the link.
    version: &'v VersionName,
    /// That version is the oldest retained one.
    in_oldest: bool,
    /// The link's path in its version.
    rel: PathBuf,
    /// The version it points into.
    holder: String,
    /// Where it is, relative to the job folder.
    at: PathBuf,
}

/// I1–I3 for every vault link of every retained version, version by version and, for each
/// link, in the order I3, I2 (depth), I1 (an older, retained holder), then its target (I1
/// exists, I2 canonical). Also says whether every link points at an older version: only
/// then can the tree be measured through its links without a cycle.
fn link_problems(facts: &Facts) -> (Vec<Problem>, bool) {
    let mut found = Vec::new();
    let mut all_older = true;
    for (i, version) in facts.retained.iter().enumerate() {
        if !facts.is_on_disk(&version.dir) {
            continue;
        }
        let links = match tree::vault_links(facts.job(), &version.dir, &facts.lookalikes) {
            Ok(l) => l,
            Err(e) => {
                found.push(facts.problem(ProblemKind::Unreadable, &version.dir, e.to_string()));
                continue;
            }
        };
        for (rel, holder) in links {
            let link = Link {
                version,
                in_oldest: i == 0,
                at: Path::new(&version.dir).join(&rel),
                rel,
                holder,
            };
            found.extend(oldest_has_no_links(facts, &link));
            found.extend(link_depth_is_bounded(facts, &link));
            match holder_is_older_and_retained(facts, &link) {
                Some(p) => {
                    all_older &= p.kind != ProblemKind::LinkNotOlder;
                    found.push(p);
                }
                None => found.extend(target_is_canonical(facts, &link)),
            }
        }
    }
    (found, all_older)
}

/// I3: the oldest retained version holds no vault links.
fn oldest_has_no_links(facts: &Facts, link: &Link) -> Option<Problem> {
    link.in_oldest.then(|| {
        let detail = format!("the oldest version links into {}", link.holder);
        facts.problem(ProblemKind::LinkInOldest, &link.at, detail)
    })
}

/// I2, the bound: no vault link deeper than [`MAX_LINK_DEPTH`] components.
fn link_depth_is_bounded(facts: &Facts, link: &Link) -> Option<Problem> {
    (tree::depth(&link.rel) > MAX_LINK_DEPTH).then(|| {
        let detail = format!("a vault link deeper than {MAX_LINK_DEPTH} components");
        facts.problem(ProblemKind::TooDeep, &link.at, detail)
    })
}

/// I1, the holder: a vault link points into an older, retained version.
fn holder_is_older_and_retained(facts: &Facts, link: &Link) -> Option<Problem> {
    let holder = &link.holder;
    let holder_n = VersionName::parse(holder).map(|h| h.n).unwrap_or(u64::MAX);
    if holder_n >= link.version.n {
        let detail = format!("links into {holder}, which is not older");
        return Some(facts.problem(ProblemKind::LinkNotOlder, &link.at, detail));
    }
    if !facts.is_retained(holder) {
        let missing = if facts.is_on_disk(holder) {
            ""
        } else {
            " (and is missing)"
        };
        let detail = format!("links into {holder}, which is not a retained version{missing}");
        return Some(facts.problem(ProblemKind::LinkToRetired, &link.at, detail));
    }
    None
}

/// I1, the target exists, and I2, it is canonical: every component of it is real in the
/// holder.
fn target_is_canonical(facts: &Facts, link: &Link) -> Option<Problem> {
    let (kind, detail) =
        match tree::target_of(facts.job(), &link.holder, &link.rel, &facts.lookalikes) {
            Ok(Target::Canonical) => return None,
            Ok(Target::Missing) => (
                ProblemKind::DanglingLink,
                format!("target {}/{} does not exist", link.holder, show(&link.rel)),
            ),
            Ok(Target::ThroughLink(via)) => (
                ProblemKind::NonCanonicalLink,
                format!("target is reached through the vault link {}", show(&via)),
            ),
            Err(e) => (ProblemKind::Unreadable, e.to_string()),
        };
    Some(facts.problem(kind, &link.at, detail))
}

/// I7, the sizes: each indexed version's `files`, `logical_bytes` and `held_bytes` are what
/// the disk holds, counted as they were written ([`measure::version_sizes`]). Not measured
/// when a link points at a version that is not older (the walk could loop).
fn sizes_agree_with_index(facts: &Facts, links_all_older: bool) -> Vec<Problem> {
    let Some(rows) = &facts.rows else {
        return Vec::new();
    };
    if !links_all_older {
        let detail = "sizes not verified: links to newer versions make the tree unsafe to walk";
        return vec![facts.problem(ProblemKind::SizeMismatch, "index.tsv", detail.into())];
    }
    rows.iter()
        .filter(|r| facts.is_on_disk(&r.dir))
        .filter_map(|r| row_agrees_with_disk(facts, r))
        .collect()
}

fn row_agrees_with_disk(facts: &Facts, row: &IndexRow) -> Option<Problem> {
    let disk = match measure::version_sizes(facts.job(), &row.dir, &facts.lookalikes) {
        Ok(s) => s,
        Err(e) => return Some(facts.problem(ProblemKind::Unreadable, &row.dir, e.to_string())),
    };
    let diffs: Vec<String> = [
        ("files", row.files, disk.files),
        ("logical_bytes", row.logical_bytes, disk.logical_bytes),
        ("held_bytes", row.held_bytes, disk.held_bytes),
    ]
    .into_iter()
    .filter(|(_, idx, disk)| idx != disk)
    .map(|(name, idx, disk)| format!("{name} index={idx} disk={disk}"))
    .collect();
    (!diffs.is_empty()).then(|| {
        let detail = format!("{} ({})", diffs.join(", "), mismatch_remedy(row, &disk));
        facts.problem(ProblemKind::SizeMismatch, &row.dir, detail)
    })
}

/// What to do about a size mismatch. Fewer files or bytes on the disk than index.tsv
/// recorded is data lost (a missing or shrunk file): damage, which a recount would only
/// hide. Anything else is a count that drifted, which a recount fixes.
fn mismatch_remedy(row: &IndexRow, disk: &measure::Sizes) -> &'static str {
    if disk.files < row.files || disk.logical_bytes < row.logical_bytes {
        "data lost: the disk holds fewer files or bytes than this version was written with; \
         restore them from another copy (a recount would only hide the loss)"
    } else {
        "reverb-index --recount fixes it"
    }
}

/// I4, the registry: every record of lookalikes.tsv names a symlink that is there (and
/// every line of it can be read).
fn lookalikes_name_source_links(facts: &Facts) -> Vec<Problem> {
    let (records, mut found) = lookalike_records(facts);
    for (vdir, rel) in records {
        let abs = facts.job().join(&vdir).join(&rel);
        let is_link = fs::symlink_metadata(&abs)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if !is_link {
            let detail = "lookalikes.tsv records a source link that is not there";
            let at = Path::new(&vdir).join(&rel);
            found.push(facts.problem(ProblemKind::Lookalike, at, detail.into()));
        }
    }
    found
}

/// The raw records of lookalikes.tsv, each once, and a problem per line that cannot be read.
fn lookalike_records(facts: &Facts) -> (Vec<(String, PathBuf)>, Vec<Problem>) {
    let path = facts.job().join(tree::LOOKALIKES);
    let Ok(text) = fs::read_to_string(&path) else {
        return (Vec::new(), Vec::new());
    };
    let Ok(table) = tsv::Table::parse(&text, &["dir", "path"]) else {
        return (Vec::new(), Vec::new()); // already reported by Lookalikes::load
    };
    let mut records = Vec::new();
    let mut found = Vec::new();
    let mut seen: HashSet<(String, PathBuf)> = HashSet::new();
    for row in table.rows() {
        match (row.text("dir"), row.os("path")) {
            (Ok(d), Ok(p)) => {
                let key = (d, PathBuf::from(p));
                if seen.insert(key.clone()) {
                    records.push(key);
                }
            }
            _ => {
                let detail = format!("line {} cannot be read", row.line);
                found.push(facts.problem(ProblemKind::Lookalike, tree::LOOKALIKES, detail));
            }
        }
    }
    (records, found)
}

/// I8: in every retained version, no directory that a relative source link leaves by `..`
/// is a vault link (its parent being real), and climbing.tsv describes each version it
/// names as its tree has it. Only when every vault link points at an older version (the
/// tree is walked through its links).
fn links_resolve_inside(facts: &Facts, links_all_older: bool) -> Vec<Problem> {
    let mut found = Vec::new();
    let registry = climbing_tsv::Climbing::load(facts.job()).unwrap_or_else(|e| {
        found.push(facts.problem(ProblemKind::ClimbingLink, climbing_tsv::FILE, e.to_string()));
        climbing_tsv::Climbing::default()
    });
    if !links_all_older {
        return found;
    }
    for version in facts.retained.iter().filter(|v| facts.is_on_disk(&v.dir)) {
        let links = match climbing_links(facts.job(), &version.dir, &facts.lookalikes) {
            Ok(l) => l,
            Err(e) => {
                found.push(facts.problem(ProblemKind::Unreadable, &version.dir, e.to_string()));
                continue;
            }
        };
        for (rel, text) in &links {
            let (rel, text) = (
                Path::new(OsStr::from_bytes(rel)),
                Path::new(OsStr::from_bytes(text)),
            );
            for left in climbing_tsv::exits(rel, text) {
                match first_vault_link(facts.job(), &version.dir, &left, &facts.lookalikes) {
                    Ok(Some((at, holder))) if at == left => {
                        let detail = format!(
                            "the source link {} -> {} leaves this directory, a vault link into {holder}: browsing resolves it there",
                            rel.display(),
                            text.display()
                        );
                        found.push(facts.problem(
                            ProblemKind::ClimbingLink,
                            Path::new(&version.dir).join(&left),
                            detail,
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => found.push(facts.problem(
                        ProblemKind::Unreadable,
                        &version.dir,
                        e.to_string(),
                    )),
                }
            }
        }
        if let Some(recorded) = registry.of(&version.dir)
            && *recorded != links
        {
            let detail = format!(
                "records {} climbing links of {}, its tree has {}",
                recorded.len(),
                version.dir,
                links.len()
            );
            found.push(facts.problem(ProblemKind::ClimbingLink, climbing_tsv::FILE, detail));
        }
    }
    found
}

/// The first vault link on the way to `rel` in version `dir` (its path and holder), walking
/// only `dir`'s own real directories; `None` when there is none or the way ends first.
fn first_vault_link(
    job: &Path,
    dir: &str,
    rel: &Path,
    lookalikes: &Lookalikes,
) -> Result<Option<(PathBuf, String)>> {
    let mut sofar = PathBuf::new();
    for name in rel.iter() {
        sofar.push(name);
        let abs = job.join(dir).join(&sofar);
        let Ok(meta) = fs::symlink_metadata(&abs) else {
            return Ok(None);
        };
        match tree::classify(&abs, &sofar, dir, meta.file_type(), lookalikes)? {
            tree::Entry::VaultLink { holder } => return Ok(Some((sofar, holder))),
            tree::Entry::Real(ft) if !ft.is_dir() => return Ok(None),
            tree::Entry::Real(_) => {}
        }
    }
    Ok(None)
}

/// The relative source links of version `dir` of the job folder `job` that leave a
/// directory (docs/format.md#climbingtsv), read from its tree through its vault links.
pub(crate) fn climbing_links(
    job: &Path,
    dir: &str,
    lookalikes: &Lookalikes,
) -> Result<climbing_tsv::Links> {
    struct Collect(climbing_tsv::Links);
    impl tree::Visitor for Collect {
        fn entry(&mut self, node: &mut tree::Node) -> Result<()> {
            if node.file_type.is_symlink() {
                let text = fs::read_link(&node.abs).map_err(|e| Error::Io {
                    what: "cannot read link",
                    path: node.abs.clone(),
                    source: e,
                })?;
                if !climbing_tsv::exits(&node.rel, &text).is_empty() {
                    let rel = node.rel.as_os_str().as_bytes().to_vec();
                    self.0.insert(rel, text.as_os_str().as_bytes().to_vec());
                }
            }
            Ok(())
        }
    }
    let mut found = Collect(climbing_tsv::Links::new());
    tree::Walk::new(job, lookalikes, tree::Links::Follow).run(dir, Path::new(""), &mut found)?;
    Ok(found.0)
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
