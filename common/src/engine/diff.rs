//! Comparing the source with a version, read-only: [`Builder::diff_dir`] finds every
//! difference below a directory and marks it (a rescan, or a directory that may have been
//! replaced wholesale); [`Builder::differ`] is the build's use of the one comparator
//! ([`crate::format::entry::compare`]).
//!
//! Invariants: nothing here writes; marks land in a fresh [`MarkTree`] (new names
//! `Content`, vanished names `Delete`, changed entries `Content` or `Attrib`, directories
//! whose own attributes differ `Attrib`), pruned of unmarked leaves. Iterative: any depth
//! fits the stack; directories are listed in the same depth-first, name order as the build.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::path::Path;

use crate::engine::builder::{Builder, SourceListing};
use crate::engine::listing::{Detail, Lstat};
use crate::engine::marks::MarkTree;
use crate::error::{IoContext, Result};
use crate::format::entry::{Difference, EntryFacts, compare};
use crate::format::events::Mark;
use crate::format::relpath::RelPath;
use crate::vault::measure::measure_tree;

impl Builder<'_> {
    /// How the source entry (lstat `src_meta` at `src`) differs from the old one.
    pub fn differ(
        &self,
        src_meta: &Metadata,
        old_meta: &Metadata,
        src: &Path,
        old: &Path,
    ) -> Difference {
        compare(
            &EntryFacts::of(old, old_meta),
            &EntryFacts::of(src, src_meta),
            self.privileged,
        )
    }

    /// Do the source root's own attributes differ from the old version's root?
    pub fn root_differs(&self, old_dir: &str) -> Result<bool> {
        let sm = fs::metadata(&self.src_root).ctx("cannot read source", &self.src_root)?;
        let op = self.job.join(old_dir);
        let om = fs::symlink_metadata(&op).ctx("cannot inspect", &op)?;
        Ok(self.differ(&sm, &om, &self.src_root, &op) != Difference::Same)
    }

    /// Compares source directory `rel` with the old physical directory `phys`/`rel` and
    /// everything below, marking every difference in `marks` (whose root stands for
    /// `rel`). Returns the number of regular files that would be deleted.
    pub fn diff_dir(
        &mut self,
        rel: &RelPath,
        phys: Option<&str>,
        marks: &mut MarkTree,
    ) -> Result<u64> {
        let mut deleted = 0u64;
        // (the directory, the same relative to `marks`, its old physical version)
        let mut pending = vec![(rel.clone(), RelPath::root(), phys.map(str::to_owned))];
        while let Some((at, inside, phys)) = pending.pop() {
            let subdirs = self.diff_one(&at, &inside, phys.as_deref(), marks, &mut deleted)?;
            pending.extend(subdirs.into_iter().rev());
        }
        marks.prune();
        Ok(deleted)
    }

    /// One directory of [`Builder::diff_dir`]: marks its differing children; returns the
    /// directories present on both sides, to compare next.
    fn diff_one(
        &mut self,
        at: &RelPath,
        inside: &RelPath,
        phys: Option<&str>,
        marks: &mut MarkTree,
        deleted: &mut u64,
    ) -> Result<Vec<(RelPath, RelPath, Option<String>)>> {
        // Both sides are listed with their entries' metadata, read relative to the open
        // directory (fstatat on the listing's fd): no path walk per entry.
        let src = match self.list_source(at, Detail::Stat) {
            SourceListing::Listed(entries) => entries,
            SourceListing::Gone(_) => Default::default(),
            SourceListing::Unreadable => return Ok(Vec::new()),
        };
        let old = self.list_version(phys, at, Detail::Stat)?;
        let node = marks.node_mut(inside);
        let mut subdirs = Vec::new();
        let names: BTreeSet<&OsString> = src.keys().chain(old.keys()).collect();
        for name in names {
            let child = at.join(name);
            match (src.get(name), old.get(name)) {
                (Some(Lstat::Failed(e)), _) => {
                    // There but not inspectable: no mark, so the build keeps what the old
                    // version has (docs/format.md#invariants I5).
                    self.skip_uninspectable(&child, e);
                }
                (Some(_), None) => node.child_mut(name).mark = Some(Mark::Content),
                (None, Some(o)) => {
                    node.child_mut(name).mark = Some(Mark::Delete);
                    *deleted +=
                        measure_tree(&self.job, &o.holder, child.as_path(), &self.lookalikes)?.0;
                }
                (Some(sm), Some(o)) => {
                    let Lstat::Read(sm) = sm else { continue };
                    let sp = self.src(&child);
                    let op = self.vault_path(&o.holder, &child);
                    let om = match &o.meta {
                        Some(m) => m.clone(),
                        None => fs::symlink_metadata(&op).ctx("cannot inspect", &op)?,
                    };
                    let difference = self.differ(sm, &om, &sp, &op);
                    if sm.is_dir() && om.is_dir() {
                        let sub = node.child_mut(name);
                        if difference != Difference::Same {
                            sub.mark = Some(Mark::Attrib);
                        }
                        subdirs.push((child, inside.join(name), Some(o.holder.clone())));
                    } else if difference != Difference::Same {
                        node.child_mut(name).mark = Some(match difference {
                            Difference::Attributes => Mark::Attrib,
                            _ => Mark::Content,
                        });
                    }
                }
                (None, None) => {}
            }
        }
        Ok(subdirs)
    }
}
