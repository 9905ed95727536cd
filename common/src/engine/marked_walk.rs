//! The build proper, a walk along the marked paths that decides entry by entry what the new
//! version holds ([`Builder::build_tree`]): the new version's tree made from the old version
//! and the marks, directory by directory (docs/design.md#building-a-version), finished by
//! [`Builder::keep_links_inside`] (I8).
//!
//! Theory of operation. Only marked paths and their ancestors are visited: their children
//! are listed on both sides; new names are copied, vanished names dropped, unmarked common
//! names kept (one vault link each), marked common names compared with the one comparator
//! and copied only when they differ, whatever the mark (an event is a hint, never a
//! difference by itself). A directory marked `Content` or `Delete` may have been replaced wholesale and is
//! diffed in full below it first. A directory that turns out identical is collapsed back
//! into one link.
//!
//! Invariants: the walk is iterative (an explicit stack of open directories), so any depth
//! fits the stack; it visits entries in the same depth-first, name order as a recursion
//! would, so the writes happen in the same order; a directory's attributes are set after
//! all its children.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, Metadata};

use crate::engine::build_state::{BaselineState, Builder, SourceListing, SourceStat};
use crate::engine::copy;
use crate::engine::ingest::Copied;
use crate::engine::listing::{Detail, Listed, VersionEntry};
use crate::engine::marks::MarkTree;
use crate::engine::rescan_index::RescanIndex;
use crate::error::{IoContext, Result};
use crate::format::entry::Difference;
use crate::format::events::Mark;
use crate::format::relpath::RelPath;

/// A real directory of the new version whose children are being built.
struct OpenDir {
    rel: RelPath,
    marks: MarkTree,
    diffed: bool,
    /// Names still to visit: (name, present in the source, the old entry).
    todo: std::vec::IntoIter<(OsString, bool, Option<Listed>)>,
    /// Does anything in it differ from the old version so far?
    differs: bool,
    /// The source directory could not be listed: it stays as the old version holds it.
    unreadable: bool,
    then: WhenBuilt,
}

/// What to do with a directory once its children are built.
enum WhenBuilt {
    /// The version's root: report whether it differs.
    Root,
    /// A directory also in the old version: collapse back into a link when nothing differs.
    Common(Box<CommonDir>),
    /// A directory unchanged since the job started (keep_complete = false): kept only when
    /// something below it changed.
    SinceBaseline,
}

/// A directory in both versions, as [`WhenBuilt::Common`] needs it.
struct CommonDir {
    old: VersionEntry,
    src_meta: Metadata,
    attr_differs: bool,
}

/// The result of visiting one name.
enum Visit {
    Done { differs: bool },
    Open(Box<OpenDir>),
}

impl Builder<'_> {
    /// Builds the new version's root (already created) from the old version `old_dir` and
    /// `marks`; `diffed` when the marks already hold every difference (a rescan). Returns
    /// whether anything differs from the old version.
    pub fn build_tree(&mut self, mut marks: MarkTree, old_dir: &str, diffed: bool) -> Result<bool> {
        self.climbing.load(&self.job, old_dir, &self.lookalikes)?;
        if !diffed {
            // An event names one name of a hard-linked file: the others are marked too (I5).
            self.mark_other_names(&mut marks);
        }
        let root = self.open_dir(
            RelPath::root(),
            marks,
            Some(old_dir),
            diffed,
            WhenBuilt::Root,
        )?;
        let mut open = vec![Box::new(root)];
        let mut root_differs = false;
        while let Some(dir) = open.last_mut() {
            if let Some((name, in_source, old)) = dir.todo.next() {
                let rel = dir.rel.join(&name);
                let marks = dir.marks.children.remove(&name);
                let diffed = dir.diffed;
                match self.visit(rel, marks, in_source, old, diffed)? {
                    Visit::Done { differs } => dir.differs |= differs,
                    Visit::Open(sub) => open.push(sub),
                }
                continue;
            }
            let Some(done) = open.pop() else { break };
            let differs = self.close_dir(*done)?;
            match open.last_mut() {
                Some(parent) => parent.differs |= differs,
                None => root_differs = differs,
            }
        }
        // Names no longer one inode in the source are not one in the version, and every name
        // of a hard-linked file copied gets that copy (I5).
        root_differs |= self.copy_split_names()?;
        self.link_every_name()?;
        // No directory a relative source link leaves by `..` stays a vault link (I8).
        self.keep_links_inside()?;
        Ok(root_differs)
    }

    /// Starts building the real directory `rel` (already created in the new version) from
    /// the old physical directory `phys`/`rel`: lists both sides.
    fn open_dir(
        &mut self,
        rel: RelPath,
        marks: MarkTree,
        phys: Option<&str>,
        diffed: bool,
        then: WhenBuilt,
    ) -> Result<OpenDir> {
        let (marks, diffed) = self.widen(&rel, marks, phys, diffed)?;
        let mut unreadable = false;
        let todo = match self.list_source(&rel, Detail::Names) {
            SourceListing::Listed(src) => {
                let mut old = self.list_version_unread(phys, &rel)?;
                let names: BTreeSet<OsString> = src.keys().chain(old.keys()).cloned().collect();
                names
                    .into_iter()
                    .map(|name| {
                        let in_source = src.contains_key(&name);
                        let old_entry = old.remove(&name);
                        (name, in_source, old_entry)
                    })
                    .collect()
            }
            listing @ (SourceListing::Unreadable | SourceListing::LeftOut) => {
                // Keep the previous contents: every old child stays linked (unreadable, or
                // hidden under a mount `one_file_system` leaves out).
                unreadable = matches!(listing, SourceListing::Unreadable);
                for (name, old) in self.list_version(phys, &rel, Detail::Names)? {
                    self.keep_old(&rel.join(&name), &old)?;
                }
                Vec::new()
            }
            SourceListing::Gone(e) => {
                return Err(e).ctx("cannot list source directory", &self.src_shown(&rel));
            }
        };
        Ok(OpenDir {
            rel,
            marks,
            diffed,
            todo: todo.into_iter(),
            differs: false,
            unreadable,
            then,
        })
    }

    /// A directory that may have been replaced wholesale (a `Content` or `Delete` mark,
    /// not yet diffed) gets every difference below it marked too.
    fn widen(
        &mut self,
        rel: &RelPath,
        marks: MarkTree,
        phys: Option<&str>,
        diffed: bool,
    ) -> Result<(MarkTree, bool)> {
        let replaced = matches!(marks.mark, Some(Mark::Content) | Some(Mark::Delete));
        if diffed || phys.is_none() || !replaced {
            return Ok((marks, diffed));
        }
        let mut full = MarkTree::marked(marks.mark);
        self.diff_dir(rel, phys, &mut full, &mut RescanIndex::none())?;
        full.merge_below(marks);
        Ok((full, true))
    }

    /// One name of an open directory.
    fn visit(
        &mut self,
        rel: RelPath,
        marks: Option<MarkTree>,
        in_source: bool,
        old: Option<Listed>,
        diffed: bool,
    ) -> Result<Visit> {
        let differs = match (in_source, old) {
            (false, None) => false,
            (false, Some(old)) => {
                let old = self.classify(&rel, old)?;
                self.forget_old(&rel, &old.holder)?;
                self.note_changed(&rel);
                true
            }
            (true, None) => return self.visit_new(rel, marks, diffed),
            (true, Some(old)) => match marks {
                None => {
                    self.keep_listed(&rel, old)?;
                    false
                }
                Some(marks) => {
                    let old = self.classify(&rel, old)?;
                    return self.update(rel, marks, old, diffed);
                }
            },
        };
        Ok(Visit::Done { differs })
    }

    /// A name in the source, not in the old version.
    fn visit_new(&mut self, rel: RelPath, marks: Option<MarkTree>, diffed: bool) -> Result<Visit> {
        let differs = match self.baseline_state(&rel) {
            BaselineState::Changed => self.copy_new(&rel)? == Copied::Done,
            BaselineState::Unchanged => false,
            BaselineState::UnchangedDir if marks.is_none() && diffed => false,
            BaselineState::UnchangedDir => {
                // Present since the job started: real only if something below changed.
                let np = self.new_path(&rel);
                let na = self.new_at(&rel)?;
                copy::make_dir(&na).ctx("cannot create directory", &np)?;
                let marks = marks.unwrap_or_default();
                let dir = self.open_dir(rel, marks, None, diffed, WhenBuilt::SinceBaseline)?;
                return Ok(Visit::Open(Box::new(dir)));
            }
        };
        Ok(Visit::Done { differs })
    }

    /// A common name with marks: compare, and copy what differs.
    fn update(
        &mut self,
        rel: RelPath,
        marks: MarkTree,
        old: VersionEntry,
        diffed: bool,
    ) -> Result<Visit> {
        let op = self.vault_path(&old.holder, &rel);
        let (sm, sp) = match self.stat_source(&rel) {
            SourceStat::Present(sm, sp) => (sm, sp),
            SourceStat::Gone => {
                // Vanished since the listing: deleted.
                self.forget_old(&rel, &old.holder)?;
                return Ok(Visit::Done { differs: true });
            }
            SourceStat::Unreadable => {
                // There but not inspectable (journaled): keep the previous data.
                self.keep_old(&rel, &old)?;
                return Ok(Visit::Done { differs: false });
            }
        };
        let om = fs::symlink_metadata(&op).ctx("cannot inspect", &op)?;
        let mut difference = self.differ(&sm, &om, &sp, &op);
        if difference == Difference::Same && sm.is_file() && om.is_file() {
            // The event may say the data was written; when the stat cannot prove
            // otherwise, the content decides.
            let rewritten = marks.mark == Some(Mark::Content);
            difference = self.confirm_unchanged(&rel, &old.holder, &sm, &om, rewritten)?;
        }
        if sm.is_dir() && om.is_dir() {
            let np = self.new_path(&rel);
            let na = self.new_at(&rel)?;
            copy::make_dir(&na).ctx("cannot create directory", &np)?;
            let holder = old.holder.clone();
            let then = WhenBuilt::Common(Box::new(CommonDir {
                old,
                src_meta: sm,
                attr_differs: difference != Difference::Same,
            }));
            let dir = self.open_dir(rel, marks, Some(&holder), diffed, then)?;
            return Ok(Visit::Open(Box::new(dir)));
        }
        // Whatever the mark, the one comparator decides (but for a racily clean file): a file
        // opened for writing and closed unchanged, or touched to the same attributes, stays
        // one vault link.
        let differs = self.update_leaf(&rel, &old, &sm, difference)?;
        Ok(Visit::Done { differs })
    }

    /// [`Builder::update`] of anything but two directories. Returns whether it differs.
    fn update_leaf(
        &mut self,
        rel: &RelPath,
        old: &VersionEntry,
        sm: &Metadata,
        difference: Difference,
    ) -> Result<bool> {
        if difference == Difference::Same {
            self.keep_old(rel, old)?;
            return Ok(false);
        }
        if difference == Difference::Attributes && self.only_sync_attributes && sm.is_file() {
            // Same data, new attributes: reuse the vault's data.
            let op = self.vault_path(&old.holder, rel);
            match self.copy_attr_only(rel, &op, &old.holder, sm) {
                Ok(()) => return Ok(true),
                Err(e) if e.is_enospc() => return Err(e),
                Err(_) => {}
            }
        }
        self.forget_old(rel, &old.holder)?;
        match self.copy_new(rel)? {
            Copied::Done | Copied::Gone => Ok(true),
            Copied::Skipped => {
                // Could not copy (unreadable, journaled): keep the previous data.
                self.unforget_old(rel, &old.holder)?;
                self.keep_old(rel, old)?;
                Ok(false)
            }
        }
    }

    /// A directory whose children are built: finish it, or drop it for what was there.
    /// Returns whether it differs from the old version.
    fn close_dir(&mut self, dir: OpenDir) -> Result<bool> {
        let rel = &dir.rel;
        match dir.then {
            WhenBuilt::Root => Ok(dir.differs),
            WhenBuilt::SinceBaseline if dir.differs => {
                let sm = self
                    .src(rel)
                    .and_then(|sp| fs::symlink_metadata(&*sp))
                    .ctx("cannot inspect", &self.src_shown(rel))?;
                self.finish_real_dir(rel, &sm)?;
                Ok(true)
            }
            WhenBuilt::SinceBaseline => {
                self.drop_new(rel)?;
                Ok(false)
            }
            WhenBuilt::Common(common) => {
                let CommonDir {
                    old,
                    src_meta,
                    attr_differs,
                } = *common;
                // A directory it cannot list is kept as the old version holds it, its own
                // attributes too (journaled `skipped`): a new mode that shuts its user out
                // (`chmod 000`) would leave a version its own tools cannot walk.
                if dir.unreadable || (!dir.differs && !attr_differs) {
                    // Nothing changed after all (or nothing can be known): one link again.
                    self.drop_new(rel)?;
                    self.keep_old(rel, &old)?;
                    return Ok(false);
                }
                self.finish_real_dir(rel, &src_meta)?;
                Ok(true)
            }
        }
    }
}
