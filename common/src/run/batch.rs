//! From a job name and event batches to builds: what `reverb-snap` (and later the
//! supervisor) does around [`crate::engine::snapshot::take`], without the printing.
//!
//! Owns: creating a job on its first snapshot ([`prepare_job`]), checking a given source
//! against the one recorded ([`check_source`]), journaling a batch's events
//! ([`journal_batch`]) or its rejection ([`reject_batch`]), the batch rules applied to
//! a batch ([`trigger_of`], docs/design.md#the-supervisor), and the record of the
//! mountpoints a build left out ([`note_mounts_left_out`]).
//!
//! Invariants: a job is created only with a valid source, and never by a dry run; a batch
//! that lost events (`overflow`) or saw an unmount becomes a rescan, never a partial build.

use std::path::Path;

use crate::engine::snapshot::{Outcome, Trigger};
use crate::error::{Error, IoContext, Result};
use crate::format::events::{self, EventLine};
use crate::format::journal::Journal;
use crate::format::journal::JournalEvent;
use crate::run::selection::Target;
use crate::vault::job::{self, JobCtx};
use crate::vault::layout::Vault;

/// What [`prepare_job`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// The job existed already.
    Existing,
    /// The job was created (its first snapshot comes next).
    Created,
    /// A dry run for a job that does not exist yet: nothing written.
    WouldCreate,
}

/// Makes sure the job `name` exists in `vault`, creating it from `target`'s source and
/// settings when it does not (not on a dry run).
pub fn prepare_job(vault: &Vault, name: &str, target: &Target, dry_run: bool) -> Result<Prepared> {
    let dir = job::job_dir(vault, name)?;
    if dir.exists() {
        return Ok(Prepared::Existing);
    }
    let Some(source) = &target.source else {
        // Lets `open` explain what is wrong with the job folder, if anything.
        job::open(vault, name, "snap").map_err(|e| match e {
            Error::Usage(m) => Error::Usage(format!("{m}; give --source DIR to create it")),
            other => other,
        })?;
        return Err(Error::Usage(format!("unknown job {name}")));
    };
    job::validate_source(source, vault.root())?;
    if dry_run {
        return Ok(Prepared::WouldCreate);
    }
    let identity = job::record_identities(source, vault.root());
    job::create(
        vault,
        name,
        source,
        target.settings.clone().unwrap_or_default(),
        identity,
    )?;
    Ok(Prepared::Created)
}

/// Checks that `source`, when given, is the source the job records.
pub fn check_source(ctx: &JobCtx, name: &str, source: Option<&Path>) -> Result<()> {
    let Some(source) = source else {
        return Ok(());
    };
    let canon = std::fs::canonicalize(source).ctx("source", source)?;
    if canon != ctx.file.source {
        return Err(Error::SourceChanged {
            job: name.to_owned(),
            recorded: ctx.file.source.clone(),
            given: source.to_path_buf(),
        });
    }
    Ok(())
}

/// `--source NEW --force`: the one way to change a job's recorded source. Records the new
/// source (checked as a new job's is) and its filesystem's identity in job.toml, and
/// journals the change; the rescan that follows versions the difference.
pub fn change_source(ctx: &mut JobCtx, vault_root: &Path, source: &Path) -> Result<()> {
    let canon = job::validate_source(source, vault_root)?;
    if canon == ctx.file.source {
        return Ok(());
    }
    let old = std::mem::replace(&mut ctx.file.source, canon.clone());
    ctx.file.identity.source = job::record_identities(&canon, vault_root).source;
    ctx.file.write(&ctx.dir.job_toml())?;
    ctx.journal.note(
        JournalEvent::Config,
        b"",
        &format!(
            "source changed from {} to {} (--source --force)",
            crate::error::show(&old),
            crate::error::show(&canon)
        ),
    );
    Ok(())
}

/// Journals each mountpoint a build left out (`one_file_system`) that the job did not know
/// of yet, and keeps job.toml's record of them (what `status` shows): after a rescan
/// (`full`), exactly what it met; after an event batch, which looks at part of the tree,
/// what it met is added. Called under the job lock; nothing on a dry run.
pub fn note_mounts_left_out(ctx: &mut JobCtx, outcome: &Outcome, full: bool) -> Result<()> {
    let met: Vec<String> = outcome
        .mounts_left_out
        .iter()
        .map(|rel| crate::format::tsv::escape_bytes(rel.as_bytes()))
        .collect();
    for (rel, text) in outcome.mounts_left_out.iter().zip(&met) {
        if !ctx.file.state.mounts_left_out.contains(text) {
            ctx.journal.note(
                JournalEvent::MountLeftOut,
                rel.as_bytes(),
                "another filesystem is mounted here: not backed up (one_file_system = true)",
            );
        }
    }
    let mut record = if full {
        Vec::new()
    } else {
        ctx.file.state.mounts_left_out.clone()
    };
    for text in met {
        if !record.contains(&text) {
            record.push(text);
        }
    }
    record.sort();
    if record != ctx.file.state.mounts_left_out {
        ctx.file.state.mounts_left_out = record;
        ctx.file.write(&ctx.dir.job_toml())?;
    }
    Ok(())
}

/// After a retirement: compacts the job's journal (raw change events older than the oldest
/// retained version go, [`crate::format::journal_compact`]; every open journal handle,
/// `ctx.journal` too, follows the new file at its next append). Called under the job lock.
/// A failure is a warning: the journal only grows.
pub fn compact_journal(ctx: &mut JobCtx) {
    let Ok(rows) = crate::format::index::read_index_or_empty(&ctx.dir.index()) else {
        return;
    };
    let Some(oldest) = rows.first() else { return };
    let path = ctx.dir.journal();
    if let Err(e) = crate::format::journal_compact::compact(&path, &oldest.created) {
        crate::error::warn(&format!("journal compaction: {e}"));
    }
}

/// Journals one raw event as the watcher's (tool `watch`): the entry type as detail, and
/// `-> to_path` for a move. One of the two ways raw events reach a journal (the
/// supervisor's live events; reverb-snap's batches go through [`journal_batch`]).
pub fn journal_event(journal: &mut Journal, e: &EventLine) -> Result<()> {
    journal.append_all_as("watch", [watch_record(e)])
}

/// What the journal records of a raw event: its kind, its path, and as detail the entry
/// type and `-> to_path` for a move.
fn watch_record(e: &EventLine) -> (JournalEvent, &[u8], String) {
    let etype = e.etype.map(|t| t.as_str()).unwrap_or("");
    let detail = match &e.to_path {
        // The destination byte-exact: escaped here (a name need not be UTF-8), and so
        // escaped twice in the journal's line (docs/format.md#journaltsv).
        Some(to) => format!("{etype} -> {}", crate::escape::escape_os(to.as_os_str())),
        None => etype.to_owned(),
    };
    (
        JournalEvent::Change(e.kind),
        e.path.as_os_str().as_encoded_bytes(),
        detail,
    )
}

/// Journals every event of a batch as [`journal_event`] would, in one write; returns the
/// error, if the write failed, for the caller to warn about.
pub fn journal_batch(journal: &mut Journal, events: &[EventLine]) -> Vec<Error> {
    journal
        .append_all_as("watch", events.iter().map(watch_record))
        .err()
        .into_iter()
        .collect()
}

/// Journals a batch that could not be read (it builds nothing).
pub fn reject_batch(journal: &mut Journal, why: &Error) {
    journal.note(
        JournalEvent::Error,
        b"",
        &format!("event batch rejected: {why}"),
    );
}

/// The batch rules (docs/design.md#the-supervisor) applied to a batch: the paths and how
/// they changed, or a rescan when events were lost.
pub fn trigger_of(events: &[EventLine]) -> Trigger {
    let changes = events::fold(events);
    if changes.rescan || changes.unmounted {
        return Trigger::Rescan;
    }
    Trigger::Paths(changes.paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::events::{EventKind, Mark};
    use crate::format::relpath::RelPath;
    use std::path::PathBuf;

    fn ev(kind: EventKind, path: &str) -> EventLine {
        EventLine::now(kind, None, PathBuf::from(path), None)
    }

    #[test]
    fn lost_events_make_a_rescan() {
        let overflow = EventLine::marker(EventKind::Overflow);
        assert!(matches!(
            trigger_of(&[ev(EventKind::Create, "a"), overflow]),
            Trigger::Rescan
        ));
        assert!(matches!(
            trigger_of(&[ev(EventKind::Unmount, ".")]),
            Trigger::Rescan
        ));
    }

    #[test]
    fn the_root_is_the_empty_path() {
        let Trigger::Paths(paths) =
            trigger_of(&[ev(EventKind::Attrib, "."), ev(EventKind::Modify, "a")])
        else {
            panic!("paths expected");
        };
        let got: Vec<_> = paths.into_iter().collect();
        assert_eq!(
            got,
            [
                (RelPath::root(), Mark::Attrib),
                (RelPath::root().join("a".as_ref()), Mark::Content)
            ]
        );
    }

    #[test]
    fn a_move_keeps_a_name_that_is_not_utf8_byte_exact() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.tsv");
        let mut journal = Journal::open(&path, "snap").expect("journal");
        let to = PathBuf::from(std::ffi::OsStr::from_bytes(b"caf\xff\tb"));
        let e = EventLine::now(
            EventKind::Move,
            Some(crate::format::events::EntryType::File),
            PathBuf::from("a"),
            Some(to.clone()),
        );
        journal_event(&mut journal, &e).expect("journaled");
        let text = std::fs::read_to_string(&path).expect("read");
        let line = text.lines().last().expect("a line");
        assert!(!line.contains('\u{fffd}'), "{line}");
        let entry = crate::format::journal::Entry::parse(line).expect("parse");
        let shown = entry.detail.split_once(" -> ").expect("a destination").1;
        assert_eq!(
            crate::format::tsv::unescape_bytes(shown).expect("escaped once more"),
            to.as_os_str().as_bytes()
        );
    }

    #[test]
    fn a_batch_is_journaled_as_its_events_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (one, all) = (dir.path().join("one.tsv"), dir.path().join("all.tsv"));
        let events: Vec<EventLine> = [
            (EventKind::Modify, "a/b", None),
            (EventKind::Move, "c", Some("d\te")),
            (EventKind::Delete, "f", None),
        ]
        .into_iter()
        .map(|(kind, path, to)| {
            EventLine::now(
                kind,
                Some(crate::format::events::EntryType::File),
                PathBuf::from(path),
                to.map(PathBuf::from),
            )
        })
        .collect();
        let mut journal = Journal::open(&one, "snap").expect("journal");
        for e in &events {
            journal_event(&mut journal, e).expect("journaled");
        }
        let mut journal = Journal::open(&all, "snap").expect("journal");
        assert!(journal_batch(&mut journal, &events).is_empty());
        let records = |p: &Path| -> Vec<String> {
            let text = std::fs::read_to_string(p).expect("read");
            // Each line but its time stamp.
            text.lines()
                .map(|l| l.split_once('\t').map_or(l, |(_, rest)| rest).to_owned())
                .collect()
        };
        assert_eq!(records(&all), records(&one));
        assert_eq!(records(&all).len(), 1 + events.len());
    }
}
