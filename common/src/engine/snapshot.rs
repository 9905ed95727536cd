//! Taking a version (docs/design.md#building-a-version): from a set of changed paths (an
//! event batch, or the diff of a rescan) to a new complete version directory, renamed into
//! place.
//!
//! Owns the entry point [`take`] and its vocabulary: what a version is built from
//! ([`Trigger`], marks as [`Mark`]s on [`RelPath`]s), how ([`Options`], with a
//! [`Progress`] the caller passes in) and what came of it ([`Outcome`], both defined in
//! [`build_report`](crate::engine::build_report)), and the deletion guard. It sits at the top
//! of the engine's build modules and orchestrates them; none of them imports it. The steps
//! live in their own modules: [`recover`](crate::engine::recover) (repair a crash first),
//! [`diff`](crate::engine::diff) (a rescan's read-only comparison),
//! [`marked_walk`](crate::engine::marked_walk) (the new tree, only along marked paths),
//! [`ingest`](crate::engine::ingest) (source entries into it),
//! [`climbed_dirs`](crate::engine::climbed_dirs) (I8 after the walk) and
//! [`publish`] (the crash-safe order of the writes that make it a
//! version), all over the build state of [`build_state`](crate::engine::build_state).
//!
//! Invariants: the new version starts as the current one (an unchanged subtree costs one
//! vault link), so work is proportional to the marked paths and the sizes of their parent
//! directories, not to the tree; nothing differs → no version; a rescan that would leave
//! fewer than `1 - max_delete_ratio` of the current version's files is refused unless
//! forced (a rename inside the source leaves them all).

use std::collections::BTreeMap;
use std::fs;
use std::time::SystemTime;

use crate::beneath::Tree;
use crate::engine::build_state::Builder;
use crate::engine::copy;
use crate::engine::marks::MarkTree;
use crate::engine::publish::{self, FromVersion, NewVersion};
use crate::engine::rescan_index::{self, Changed, RescanIndex};
use crate::error::{Error, IoContext, Result};
use crate::format::baseline::Baseline;
use crate::format::capabilities::fidelity_of;
use crate::format::entry::Fidelity;
use crate::format::events::Mark;
use crate::format::exclude::Excludes;
use crate::format::index::read_index_or_empty;
use crate::format::jobfile::JobFile;
use crate::format::journal::Journal;
use crate::format::relpath::RelPath;
use crate::vault::job::JobCtx;
use crate::vault::layout::VersionName;
use crate::vault::tree::Lookalikes;

pub use crate::engine::build_report::{NoProgress, Outcome, Progress};
pub(crate) use crate::engine::recover::recover;

/// What a version is built from.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Compare the whole source with the current version.
    Rescan,
    /// Only these paths changed, as marked.
    Paths(BTreeMap<RelPath, Mark>),
}

/// Options of one build.
#[derive(Clone, Copy)]
pub struct Options<'p> {
    /// Build even when a rescan would leave fewer than `1 - max_delete_ratio` of the files.
    pub force: bool,
    /// Compute the changes and report them, build nothing.
    pub dry_run: bool,
    /// Told of every entry copied.
    pub progress: &'p dyn Progress,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            force: false,
            dry_run: false,
            progress: &NoProgress,
        }
    }
}

/// Takes a version of the job's source. The caller holds the job lock and has checked
/// identities.
pub fn take(ctx: &mut JobCtx, trigger: Trigger, opts: Options<'_>) -> Result<Outcome> {
    if let Some(of) = &ctx.file.state.replica_of {
        return Err(Error::Refused(format!(
            "job {} is a replica of vault {of}: its versions come from that vault's \
             `reverberator replicate`, never from a source",
            ctx.file.name
        )));
    }
    recover(ctx)?;
    let new = next_version(ctx)?;
    let last = new.rows.last().cloned();
    let fidelity = fidelity_of(ctx.capabilities.as_ref(), copy::privileged());
    let mut b = start_build(&ctx.file, &mut ctx.journal, &new, fidelity, opts)?;
    let Some(last) = last else {
        // A first version has no index delta: its paths are not kept.
        b.keep_changed_paths = false;
        return publish::finish(b, new, None, opts.dry_run);
    };
    b.link_groups.load(&ctx.dir.path, &last.dir)?;
    let job = ctx.dir.path.clone();
    let (from, changed) = match trigger {
        Trigger::Rescan => {
            // One read-only pass finds every difference; the build then touches only those.
            // The source index, when it vouches for the version compared, spares the vault
            // every entry whose facts are unchanged; the pass records a fresh one.
            let started = SystemTime::now();
            let settings = index_settings(&ctx.file, &fidelity)?;
            let granularity = std::time::Duration::from_nanos(fidelity.mtime_granularity_ns);
            let usable = rescan_index::source_keeps_ctime(&ctx.file.source);
            let mut index = match usable {
                true => RescanIndex::load(&job, &last.dir, settings, granularity),
                false => RescanIndex::none(),
            };
            if usable && !opts.dry_run {
                index.begin_fresh(&job, &last.dir, settings, started);
            }
            let mut marks = MarkTree::marked(Some(Mark::Attrib));
            let diffed = b.diff_dir(&RelPath::root(), Some(&last.dir), &mut marks, &mut index);
            let tally = match diffed {
                Ok(tally) => tally,
                Err(e) => {
                    index.abandon_fresh();
                    return Err(e);
                }
            };
            // The diff read every source entry: every name of every multiply linked file.
            b.link_groups.mark_full();
            b.mark_split_names(&last.dir, &mut marks);
            let decided: Result<bool> = (|| {
                if marks.children.is_empty() && !b.root_differs(&last.dir)? {
                    return Ok(false);
                }
                guard_deletions(
                    &ctx.file,
                    last.files,
                    tally.remaining(last.files),
                    opts.force,
                )?;
                Ok(true)
            })();
            // The fresh index describes the version compared, true whatever follows; a
            // refused rescan leaves the job folder as it was.
            match decided {
                Ok(_) => index.finish_fresh(&job),
                Err(_) => index.abandon_fresh(),
            }
            if !decided? {
                // Nothing differs: no version, and nothing built only to be thrown away.
                if !opts.dry_run {
                    b.link_groups.describe_unchanged(&ctx.dir.path, &last.dir)?;
                }
                return Ok(std::mem::take(&mut b.out));
            }
            let changed = Changed::of_marks(&marks);
            let from = FromVersion {
                old_dir: last.dir,
                marks,
                diffed: true,
            };
            (from, changed)
        }
        Trigger::Paths(paths) => {
            let marks = MarkTree::of_paths(&paths);
            let changed = Changed::of_marks(&marks);
            let from = FromVersion {
                old_dir: last.dir,
                marks,
                diffed: false,
            };
            (from, changed)
        }
    };
    let parent = from.old_dir.clone();
    let out = publish::finish(b, new, Some(from), opts.dry_run)?;
    if let Some(v) = &out.version {
        // After the version is published, never before: a delta exists only for a version
        // that does (docs/design.md#index-driven-rescans).
        let mut changed = changed;
        changed.add_paths(&out.changed_paths);
        rescan_index::write_delta(&job, &parent, &v.dir, changed);
    }
    Ok(out)
}

/// The digest of the settings a source index is recorded under: what decides which
/// entries a version holds and how they are compared.
fn index_settings(file: &JobFile, fidelity: &Fidelity) -> Result<[u8; 32]> {
    use std::os::unix::fs::MetadataExt;
    let source = &file.source;
    let root = fs::metadata(source).ctx("cannot read source", source)?;
    let s = &file.settings;
    Ok(rescan_index::settings_digest(&[
        source,
        &(root.dev(), root.ino()),
        &s.exclude,
        &(
            s.one_file_system,
            s.keep_complete,
            s.only_sync_attributes,
            s.checksums,
        ),
        &copy::privileged(),
        fidelity,
    ]))
}

/// Checks the source and the index, and names the next version.
fn next_version(ctx: &JobCtx) -> Result<NewVersion> {
    let rows = read_index_or_empty(&ctx.dir.index())?;
    let source = &ctx.file.source;
    let src_meta = fs::metadata(source).ctx("cannot read source", source)?;
    if !src_meta.is_dir() {
        return Err(Error::Usage(format!(
            "source {} is not a directory",
            crate::error::show(source)
        )));
    }
    if let Some(l) = rows.last()
        && !ctx.dir.path.join(&l.dir).is_dir()
    {
        return Err(Error::Damaged(format!(
            "the newest version {} in index.tsv is missing from {} (run reverb-index --check)",
            l.dir,
            crate::error::show(&ctx.dir.path)
        )));
    }
    let newest_on_disk = ctx.dir.versions_on_disk()?.last().map(|v| v.n).unwrap_or(0);
    let n = rows
        .last()
        .map(|r| r.version)
        .unwrap_or(0)
        .max(newest_on_disk)
        + 1;
    Ok(NewVersion {
        dir: ctx.dir.clone(),
        rows,
        name: VersionName::new(n, SystemTime::now()),
    })
}

/// The build state for `new`, from the job's settings.
fn start_build<'a>(
    file: &JobFile,
    journal: &'a mut Journal,
    new: &NewVersion,
    fidelity: Fidelity,
    opts: Options<'a>,
) -> Result<Builder<'a>> {
    let settings = &file.settings;
    let excludes = Excludes::new(&settings.exclude).map_err(Error::Usage)?;
    let lookalikes = Lookalikes::load(&new.dir.path)?;
    let baseline = if settings.keep_complete {
        None
    } else {
        Some(Baseline::load(&new.dir.path)?)
    };
    let new_root = new.dir.partial().join(&new.name.dir);
    Ok(Builder {
        job: new.dir.path.clone(),
        source: Tree::open(&file.source).ctx("cannot read source", &file.source)?,
        new: Tree::later(new_root.clone()),
        new_root,
        new_name: new.name.dir.clone(),
        excludes,
        lookalikes,
        only_sync_attributes: settings.only_sync_attributes,
        privileged: copy::privileged(),
        fidelity,
        one_file_system: settings.one_file_system,
        src_dev: {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(&file.source)
                .ctx("cannot read source", &file.source)?
                .dev()
        },
        vault_dirs: [new.dir.path.join(".."), new.dir.path.clone()]
            .iter()
            .filter_map(|p| crate::vault::job::dir_identity(p))
            .collect(),
        baseline,
        link_groups: Default::default(),
        skipped_paths: Default::default(),
        climbing: Default::default(),
        out: Outcome::default(),
        keep_changed_paths: true,
        delta_files: 0,
        delta_logical: 0,
        journal,
        progress: opts.progress,
        checksums: settings.checksums.then(Default::default),
    })
}

/// The deletion guard (docs/cli.md): a rescan after which fewer than `1 - max_delete_ratio`
/// of the current version's `files` would remain is more often an unmounted disk than a
/// wish. It judges what the new version would hold, not what leaves: a folder renamed or
/// moved inside the source leaves as many files as before.
fn guard_deletions(file: &JobFile, files: u64, remaining: u64, force: bool) -> Result<()> {
    let limit = file.settings.max_delete_ratio;
    let floor = (1.0 - limit) * files as f64;
    if (remaining as f64) < floor && !force {
        return Err(Error::DeletionGuard {
            remaining,
            files,
            max_delete_ratio: limit,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::index::IndexRow;
    use crate::format::jobfile::Identities;
    use crate::format::settings::JobSettings;
    use crate::vault::job;
    use crate::vault::layout::Vault;
    use crate::vault::tree;
    use std::path::{Path, PathBuf};

    /// A job over `src/{a, d/b, d/c}` (backdated by an hour) in a fresh vault.
    pub(crate) struct Fixture {
        _tmp: tempfile::TempDir,
        pub(crate) src: PathBuf,
        pub(crate) ctx: JobCtx,
    }

    pub(crate) fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("d")).expect("mkdir");
        fs::write(src.join("a"), b"one").expect("write");
        fs::write(src.join("d/b"), b"two").expect("write");
        fs::write(src.join("d/c"), b"three").expect("write");
        for f in ["a", "d/b", "d/c"] {
            backdate(&src.join(f), 3600);
        }
        let vault = Vault::init(&tmp.path().join("vault")).expect("vault");
        let settings = JobSettings::default();
        job::create(&vault, "t", &src, settings, Identities::default()).expect("create");
        let ctx = job::open(&vault, "t", "snap").expect("open");
        Fixture {
            _tmp: tmp,
            src,
            ctx,
        }
    }

    impl Fixture {
        fn take(&mut self, trigger: Trigger) -> Outcome {
            take(&mut self.ctx, trigger, Options::default()).expect("take")
        }

        fn version(&self, out: &Outcome) -> PathBuf {
            let v = out.version.as_ref().expect("a version");
            self.ctx.dir.version(v)
        }

        fn rows(&self) -> Vec<IndexRow> {
            read_index_or_empty(&self.ctx.dir.index()).expect("index")
        }
    }

    /// Sets `path`'s mtime `secs` seconds into the past (files written long before a version).
    fn backdate(path: &Path, secs: u64) {
        let then = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
        let f = fs::File::options().write(true).open(path).expect("open");
        f.set_modified(then).expect("set mtime");
    }

    fn is_vault_link(version: &Path, rel: &str, holder: &str) -> bool {
        fs::read_link(version.join(rel)).ok() == Some(tree::link_text(Path::new(rel), holder))
    }

    #[test]
    fn the_first_version_is_a_full_copy() {
        let mut f = fixture();
        let out = f.take(Trigger::Rescan);
        let v1 = f.version(&out);
        assert_eq!(fs::read(v1.join("a")).expect("a"), b"one");
        assert_eq!(fs::read(v1.join("d/c")).expect("d/c"), b"three");
        assert!(fs::symlink_metadata(v1.join("d")).expect("d").is_dir());
        let rows = f.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].files, rows[0].logical_bytes), (3, 11));
        assert_eq!(
            f.ctx.dir.read_current().as_deref(),
            Some(rows[0].dir.as_str())
        );
        assert!(
            fs::read_dir(f.ctx.dir.partial())
                .expect("partial")
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_rescan_copies_the_change_and_links_the_rest() {
        let mut f = fixture();
        let first = f.take(Trigger::Rescan);
        let v1_name = first.version.as_ref().expect("v1").dir.clone();
        fs::write(f.src.join("d/b"), b"changed").expect("write");
        let out = f.take(Trigger::Rescan);
        let v2 = f.version(&out);
        let b = fs::symlink_metadata(v2.join("d/b")).expect("d/b");
        assert!(b.is_file(), "the changed file is real");
        assert_eq!(fs::read(v2.join("d/b")).expect("d/b"), b"changed");
        assert!(is_vault_link(&v2, "a", &v1_name), "unchanged sibling of d");
        assert!(
            is_vault_link(&v2, "d/c", &v1_name),
            "unchanged sibling of d/b"
        );
        let rows = f.rows();
        assert_eq!((rows[1].files, rows[1].logical_bytes), (3, 15));
    }

    #[test]
    fn no_change_makes_no_version() {
        let mut f = fixture();
        f.take(Trigger::Rescan);
        let out = f.take(Trigger::Rescan);
        assert!(out.version.is_none());
        assert_eq!(f.rows().len(), 1);
        for mark in [Mark::Attrib, Mark::Content] {
            let marked = BTreeMap::from([(RelPath::root().join("a".as_ref()), mark)]);
            assert!(f.take(Trigger::Paths(marked)).version.is_none(), "{mark:?}");
            assert_eq!(f.rows().len(), 1);
        }
        assert!(
            fs::read_dir(f.ctx.dir.partial())
                .expect("partial")
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_racily_clean_file_with_a_content_event_is_copied() {
        // Rewritten to the same size within one timestamp tick of its copy: the stat matches
        // the vault's, so only the event tells. Simulated by putting the mtime back.
        let mut f = fixture();
        let a = f.src.join("a");
        fs::write(&a, b"one").expect("write");
        let first = f.take(Trigger::Rescan);
        let v1 = f.version(&first);
        let mtime = fs::metadata(&a).expect("a").modified().expect("mtime");
        fs::write(&a, b"two").expect("rewrite");
        fs::File::options()
            .write(true)
            .open(&a)
            .expect("open")
            .set_modified(mtime)
            .expect("same mtime");
        assert_eq!(
            fs::metadata(v1.join("a")).expect("v1 a").modified().ok(),
            Some(mtime)
        );
        let marked = BTreeMap::from([(RelPath::root().join("a".as_ref()), Mark::Content)]);
        let out = f.take(Trigger::Paths(marked));
        assert_eq!(fs::read(f.version(&out).join("a")).expect("a"), b"two");
        // An old file with the same stat is compared by its stat alone (the no-op rule).
        backdate(&a, 3600);
        let marked = BTreeMap::from([(RelPath::root().join("a".as_ref()), Mark::Attrib)]);
        f.take(Trigger::Paths(marked));
        let marked = BTreeMap::from([(RelPath::root().join("a".as_ref()), Mark::Content)]);
        assert!(f.take(Trigger::Paths(marked)).version.is_none());
    }

    /// Rewrites `path` with `data` and puts its mtime back to what it was (an open and
    /// close for writing, or a save of an unchanged buffer, within one tick of its copy).
    fn rewrite_keeping_mtime(path: &Path, data: &[u8]) {
        let mtime = fs::metadata(path).expect("stat").modified().expect("mtime");
        fs::write(path, data).expect("rewrite");
        fs::File::options()
            .write(true)
            .open(path)
            .expect("open")
            .set_modified(mtime)
            .expect("same mtime");
    }

    #[test]
    fn a_racily_clean_file_opened_and_closed_unchanged_makes_no_version() {
        // Written just before its version: racily clean. A content event for it (inotify's
        // close_write after an open and close) is checked against its recorded BLAKE3, not
        // believed blindly.
        let mut f = fixture();
        let a = f.src.join("a");
        fs::write(&a, b"one").expect("write");
        f.take(Trigger::Rescan);
        rewrite_keeping_mtime(&a, b"one");
        let marked = BTreeMap::from([(RelPath::root().join("a".as_ref()), Mark::Content)]);
        let out = f.take(Trigger::Paths(marked.clone()));
        assert!(out.version.is_none(), "{:?}", out.changed_paths);
        assert!(f.take(Trigger::Rescan).version.is_none(), "a rescan agrees");
        // Other bytes of the same size are a new version, by events and by rescan alike.
        rewrite_keeping_mtime(&a, b"two");
        let out = f.take(Trigger::Paths(marked));
        assert_eq!(fs::read(f.version(&out).join("a")).expect("a"), b"two");
        rewrite_keeping_mtime(&a, b"six");
        let out = f.take(Trigger::Rescan);
        assert_eq!(fs::read(f.version(&out).join("a")).expect("a"), b"six");
    }

    #[test]
    fn without_checksums_a_racily_clean_file_with_an_event_is_compared_with_the_copy() {
        let mut f = fixture();
        f.ctx.file.settings.checksums = false;
        let a = f.src.join("a");
        fs::write(&a, b"one").expect("write");
        f.take(Trigger::Rescan);
        rewrite_keeping_mtime(&a, b"one");
        let marked = BTreeMap::from([(RelPath::root().join("a".as_ref()), Mark::Content)]);
        assert!(
            f.take(Trigger::Paths(marked.clone())).version.is_none(),
            "the same bytes as the vault's copy"
        );
        rewrite_keeping_mtime(&a, b"two");
        let out = f.take(Trigger::Paths(marked));
        assert_eq!(fs::read(f.version(&out).join("a")).expect("a"), b"two");
    }

    #[test]
    fn on_a_coarse_vault_unchanged_files_are_kept_and_changed_ones_found() {
        use crate::format::capabilities::{Capabilities, LinkAttributes};
        let mut f = fixture();
        let probed = crate::vault::probe::probe(f.src.parent().expect("tmp")).expect("probe");
        // As sshfs keeps them: mtimes to the second, link attributes never set.
        f.ctx.capabilities = Some(Capabilities {
            mtime_granularity_ns: 1_000_000_000,
            link_attributes: LinkAttributes::FollowTarget,
            ..probed
        });
        let a = f.src.join("a");
        fs::write(&a, b"one").expect("write");
        std::os::unix::fs::symlink("a", f.src.join("l")).expect("symlink");
        let first = f.take(Trigger::Rescan);
        let v1 = f.version(&first);
        // The copy was set to the source's mtime; here the vault is exact, so make it as
        // coarse as sshfs would.
        for rel in ["a", "d/b", "d/c"] {
            let p = v1.join(rel);
            let m = fs::metadata(&p).expect("stat");
            let whole = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(
                    m.modified()
                        .expect("mtime")
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("after epoch")
                        .as_secs(),
                );
            fs::File::options()
                .write(true)
                .open(&p)
                .expect("open")
                .set_modified(whole)
                .expect("truncate mtime");
        }
        assert!(
            f.take(Trigger::Rescan).version.is_none(),
            "nothing is recopied only because the vault keeps whole seconds"
        );
        rewrite_keeping_mtime(&a, b"two");
        let out = f.take(Trigger::Rescan);
        assert_eq!(fs::read(f.version(&out).join("a")).expect("a"), b"two");
    }

    #[test]
    fn a_deletion_is_a_version_without_it() {
        let mut f = fixture();
        f.take(Trigger::Rescan);
        fs::remove_file(f.src.join("d/c")).expect("rm");
        let gone = RelPath::from_internal(Path::new("d/c"));
        let out = f.take(Trigger::Paths(BTreeMap::from([(
            gone.clone(),
            Mark::Delete,
        )])));
        let v2 = f.version(&out);
        assert!(fs::symlink_metadata(v2.join("d/c")).is_err());
        assert_eq!(fs::read(v2.join("d/b")).expect("d/b kept"), b"two");
        let parent = RelPath::root().join("d".as_ref());
        assert_eq!(
            out.changed_paths,
            [gone, parent],
            "the entry, then its real parent"
        );
        assert_eq!(f.rows()[1].files, 2);
    }

    #[test]
    fn counts_that_would_go_negative_are_damage_not_zero() {
        let mut f = fixture();
        f.take(Trigger::Rescan);
        // index.tsv says V1 holds no file: dropping one of its three cannot be counted.
        let mut rows = f.rows();
        rows[0].files = 0;
        crate::format::index::write(&f.ctx.dir.index(), &rows).expect("rewrite index");
        fs::remove_file(f.src.join("a")).expect("rm");
        let gone = RelPath::root().join("a".as_ref());
        let taken = take(
            &mut f.ctx,
            Trigger::Paths(BTreeMap::from([(gone, Mark::Delete)])),
            Options::default(),
        );
        match taken {
            Err(Error::Damaged(m)) => assert!(
                m.contains("the file count of") && m.contains("'s 0 in index.tsv moved by -1"),
                "{m}"
            ),
            other => panic!("expected damage, got {other:?}"),
        }
        assert_eq!(f.rows().len(), 1, "no version");
        assert!(
            fs::read_dir(f.ctx.dir.partial())
                .expect("partial")
                .next()
                .is_none(),
            "the partial version is removed"
        );
    }

    #[test]
    fn a_dry_run_reports_and_writes_nothing() {
        let mut f = fixture();
        f.take(Trigger::Rescan);
        fs::write(f.src.join("a"), b"other").expect("write");
        let opts = Options {
            dry_run: true,
            ..Options::default()
        };
        let out = take(&mut f.ctx, Trigger::Rescan, opts).expect("dry run");
        assert!(out.version.is_none());
        assert_eq!(out.changed_paths, [RelPath::root().join("a".as_ref())]);
        assert_eq!(f.rows().len(), 1);
    }

    #[test]
    fn progress_is_told_of_every_copy() {
        #[derive(Default)]
        struct Count(std::cell::Cell<(u64, u64)>);
        impl Progress for Count {
            fn copied(&self, bytes: u64) {
                let (n, b) = self.0.get();
                self.0.set((n + 1, b + bytes));
            }
        }
        let mut f = fixture();
        let count = Count::default();
        let opts = Options {
            progress: &count,
            ..Options::default()
        };
        take(&mut f.ctx, Trigger::Rescan, opts).expect("take");
        assert_eq!(count.0.get(), (3, 11));
    }

    #[test]
    fn a_rename_inside_the_source_passes_the_deletion_guard() {
        let mut f = fixture();
        f.take(Trigger::Rescan);
        // d holds two of the three files: as a deletion, 67% would trip the guard.
        fs::rename(f.src.join("d"), f.src.join("e")).expect("mv");
        let out = f.take(Trigger::Rescan);
        let v2 = f.version(&out);
        assert_eq!(fs::read(v2.join("e/c")).expect("e/c"), b"three");
        assert_eq!(f.rows()[1].files, 3);
        fs::remove_dir_all(f.src.join("e")).expect("rm");
        let refused = take(&mut f.ctx, Trigger::Rescan, Options::default());
        assert!(
            matches!(refused, Err(Error::DeletionGuard { .. })),
            "{refused:?}"
        );
        assert_eq!(f.rows().len(), 2);
    }

    #[test]
    fn the_guard_counts_what_remains() {
        let file = |ratio: f64| {
            let settings = JobSettings {
                max_delete_ratio: ratio,
                ..JobSettings::default()
            };
            JobFile {
                name: "t".into(),
                source: PathBuf::from("/src"),
                created: String::new(),
                settings,
                identity: Identities::default(),
                state: Default::default(),
            }
        };
        let half = file(0.5);
        assert!(
            guard_deletions(&half, 10, 5, false).is_ok(),
            "exactly half remains"
        );
        assert!(guard_deletions(&half, 10, 4, false).is_err());
        assert!(guard_deletions(&half, 10, 4, true).is_ok(), "forced");
        assert!(
            guard_deletions(&half, 0, 0, false).is_ok(),
            "nothing to lose"
        );
        assert!(guard_deletions(&file(0.0), 10, 10, false).is_ok(), "a move");
        assert!(guard_deletions(&file(0.0), 10, 9, false).is_err());
        assert!(guard_deletions(&file(1.0), 10, 0, false).is_ok());
        let moved = crate::engine::diff::Tally {
            deleted: 9,
            added: 9,
        };
        assert_eq!(moved.remaining(10), 10);
    }
}
