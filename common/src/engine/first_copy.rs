//! The first version's copy in parallel ([`Builder::copy_first_parallel`]): one thread walks
//! the source (listing, `lstat`, creating directories) and hands each singly linked regular
//! file to the copy [`Pool`], which copies and hashes it; the walk itself copies everything
//! else. The written tree is the one the serial copier
//! ([`Builder::copy_new`]) writes, entry for entry.
//!
//! Theory of operation. What the walk does is queued as a sequence of *steps* in walk
//! order (the order a serial copy would take): a file handed to the pool, or a directory
//! to finish (its attributes) once everything before it is done. Steps are settled strictly
//! from the front: a file's result (its checksum record, `changed-during-copy` or `skipped`
//! journal line, counts, progress) is taken into the build only when every step before it
//! is settled, so the build's bookkeeping happens in the serial order whichever worker
//! finishes first. At most [`AHEAD`] steps wait (memory and open descriptors stay bounded).
//!
//! Invariants:
//! - A directory's attributes (mode, times, xattrs) are set by its finishing step, which
//!   comes after every step inside it: every file in it has been created and its result
//!   received before, so no worker finishing late can touch the directory's mtime after.
//! - Hard links (I5): a file with more than one link is never handed to the pool; the walk
//!   copies it itself after settling every step before it ([`Builder::copy_leaf`]), so the
//!   first name met is the copy and every later name a hard link of it, as in the serial
//!   copy. Symlinks and special files are copied the same way.
//! - Anything journaled by the walk itself (an entry it cannot inspect or list) is
//!   journaled after settling every step before it: the journal's order is the serial one.
//! - A full disk, met by a worker or the walk, stops the build: the queued jobs are
//!   dropped, the workers joined, and the error returned (the caller removes `.partial/`).
//!   The pool's threads live in a scope that ends before this returns: the durability walk
//!   (I9) that follows sees every file the pool wrote, and nothing writes afterwards.
//!   The [`EarlyWriteback`] helper, in the same scope, is stopped first: it only ever
//!   flushes the filesystem, so that little is left for that durability flush.
//! - Every name is reached beneath the source's and the new version's descriptors
//!   ([`crate::beneath`]), by the walk and by the workers alike.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use crate::beneath::{At, Here};
use crate::engine::build_state::{Builder, SourceListing, SourceStat, copy_err, stat_at};
use crate::engine::copy::{self, CopyError, FileCopy};
use crate::engine::copy_pool::{FileDone, FileJob, Pool};
use crate::engine::early_writeback::EarlyWriteback;
use crate::engine::listing::Detail;
use crate::error::{Error, IoContext, Result};
use crate::format::relpath::RelPath;

/// How many steps may wait to be settled at most.
const AHEAD: usize = 64;

/// How deep the walk keeps each open directory's two descriptors (source and new) to reach
/// its children by; deeper ones are reached through the trees (bounded descriptors).
const HELD_DIRS: usize = 32;

/// A step of the walk, settled in walk order.
enum Step {
    /// A regular file the pool copies.
    File {
        seq: u64,
        rel: RelPath,
        sm: Metadata,
    },
    /// A directory whose children are all stepped: its attributes are set when it is
    /// settled.
    FinishDir {
        rel: RelPath,
        sm: Metadata,
        /// The directory as the walk met it, in the source and in the new version (each
        /// its parent's descriptor and its name): its attributes are read from and set
        /// there, in the directories the walk held, whatever was renamed above them since.
        at: Box<(At, At)>,
    },
}

/// The steps waiting to be settled, and the pool's results not yet taken in.
#[derive(Default)]
struct Steps {
    queue: VecDeque<Step>,
    arrived: HashMap<u64, std::result::Result<FileCopy, CopyError>>,
    next_seq: u64,
}

/// A source directory being walked: its children still to step.
struct OpenDir {
    rel: RelPath,
    /// Its `lstat`, and it in the source and in the new version, to finish it; `None` for
    /// the root (finished by the caller).
    finish: Option<(Metadata, Box<(At, At)>)>,
    /// The directory in the source and in the new version, held open while it is walked
    /// (not below [`HELD_DIRS`] levels): its children are reached beneath them.
    handles: Option<(Here, Here)>,
    children: std::vec::IntoIter<OsString>,
}

impl Builder<'_> {
    /// Copies the source root's `children` (already listed) and everything below them into
    /// the new version, copying regular files on `workers` threads.
    pub fn copy_first_parallel(
        &mut self,
        children: impl Iterator<Item = OsString>,
        workers: usize,
    ) -> Result<()> {
        let (hash, keep) = (self.checksums.is_some(), self.fidelity);
        let root_rel = RelPath::root();
        let src_root = self
            .src_dir(&root_rel)
            .ctx("cannot read source", self.source.shown())?;
        let root = OpenDir {
            handles: Some((src_root, self.new_dir(&root_rel)?)),
            rel: root_rel,
            finish: None,
            children: children.collect::<Vec<_>>().into_iter(),
        };
        // Opened before the threads: the helper flushes the filesystem it is on.
        let new_root = std::fs::File::open(&self.new_root).ctx("cannot open", &self.new_root)?;
        std::thread::scope(|scope| {
            let mut pool = Pool::start(scope, workers, hash, keep);
            let writeback = EarlyWriteback::start(scope, new_root, pool.written());
            let mut steps = Steps::default();
            let walked = self
                .walk_first(root, &mut pool, &mut steps)
                .and_then(|()| self.settle(&mut pool, &mut steps, 0));
            if walked.is_err() {
                pool.cancel();
            }
            // Dropping the pool closes its queue; the scope then joins every worker.
            drop(pool);
            writeback.stop();
            walked
        })
    }

    /// The walk: steps every entry below `root`, depth first in name order.
    fn walk_first(&mut self, root: OpenDir, pool: &mut Pool, steps: &mut Steps) -> Result<()> {
        let mut open = vec![root];
        while let Some(dir) = open.last_mut() {
            if let Some(name) = dir.children.next() {
                let child = dir.rel.join(&name);
                let at = dir
                    .handles
                    .as_ref()
                    .map(|(src, new)| (src.child(&name), new.child(&name)));
                let hold = open.len() < HELD_DIRS;
                if let Some(sub) = self.step_entry(&child, at, hold, pool, steps)? {
                    open.push(sub);
                }
            } else if let Some(done) = open.pop()
                && let Some((sm, at)) = done.finish
            {
                steps.queue.push_back(Step::FinishDir {
                    rel: done.rel,
                    sm,
                    at,
                });
            }
            self.settle(pool, steps, AHEAD)?;
        }
        Ok(())
    }

    /// Steps one source entry (`at`: it in the source and in the new version, reached
    /// beneath their held directories; else through the trees): a directory is created and
    /// returned to be walked (its descriptors held when `hold`), a singly linked regular
    /// file handed to the pool, anything else copied here in its turn.
    fn step_entry(
        &mut self,
        rel: &RelPath,
        at: Option<(At, At)>,
        hold: bool,
        pool: &mut Pool,
        steps: &mut Steps,
    ) -> Result<Option<OpenDir>> {
        let (stat, na) = match at {
            Some((sp, na)) => (stat_at(sp), na),
            None => (self.try_stat_source(rel), self.new_at(rel)?),
        };
        let (sm, sp) = match stat {
            Ok(SourceStat::Present(sm, sp)) => (sm, sp),
            Ok(SourceStat::Gone | SourceStat::Unreadable) => return Ok(None),
            Err(e) => {
                self.settle(pool, steps, 0)?;
                self.skip_uninspectable(rel, &e);
                return Ok(None);
            }
        };
        if sm.is_dir() {
            let np = self.new_path(rel);
            copy::make_dir(&na).ctx("cannot create directory", &np)?;
            let src_dir = sp.here();
            let held = src_dir.as_ref().ok().filter(|_| hold).cloned();
            let children = match self.try_list_source_in(rel, src_dir, Detail::Names) {
                Ok(SourceListing::Listed(children)) => children,
                // A mountpoint left out: an empty directory with its attributes, as `cp -ax`.
                Ok(SourceListing::LeftOut | SourceListing::Unreadable) => Default::default(),
                Ok(SourceListing::Gone(_)) => {
                    self.remove_new(rel)?;
                    return Ok(None);
                }
                Err(e) => {
                    self.settle(pool, steps, 0)?;
                    self.remove_new(rel)?;
                    self.skip_unlistable(rel, &e);
                    return Ok(None);
                }
            };
            let children: Vec<OsString> = children.into_keys().collect();
            let handles = match (held, na.here()) {
                (Some(src), Ok(new)) => Some((src, new)),
                // Reached through the trees instead (which name any error).
                _ => None,
            };
            return Ok(Some(OpenDir {
                rel: rel.clone(),
                finish: Some((sm, Box::new((*sp, na)))),
                handles,
                children: children.into_iter(),
            }));
        }
        if sm.is_file() && sm.nlink() == 1 {
            let seq = steps.next_seq;
            steps.next_seq += 1;
            let job = FileJob {
                seq,
                src: *sp,
                dst: na,
                seen: sm.clone(),
            };
            if !pool.submit(job) {
                return Err(workers_gone());
            }
            steps.queue.push_back(Step::File {
                seq,
                rel: rel.clone(),
                sm,
            });
            return Ok(None);
        }
        // Hard-linked files (I5), symlinks, specials: in their turn, as the serial copy.
        self.settle(pool, steps, 0)?;
        self.copy_leaf(rel, &sp, &sm)?;
        Ok(None)
    }

    /// Settles steps from the front until at most `keep` wait: takes in the results that
    /// arrived, waits for more when the front's has not. A full disk met by any worker ends
    /// the build at once.
    fn settle(&mut self, pool: &mut Pool, steps: &mut Steps, keep: usize) -> Result<()> {
        loop {
            while let Some(done) = pool.try_done() {
                self.take_in(steps, done)?;
            }
            while let Some(step) = steps.ready() {
                self.settle_step(step)?;
            }
            if steps.queue.len() <= keep {
                return Ok(());
            }
            let done = pool.wait_done().ok_or_else(workers_gone)?;
            self.take_in(steps, done)?;
        }
    }

    /// Takes in a worker's result, to be settled in its turn; a full disk is the build's
    /// error at once (the rest is dropped).
    fn take_in(&self, steps: &mut Steps, batch: Vec<FileDone>) -> Result<()> {
        batch
            .into_iter()
            .try_for_each(|done| self.take_in_one(steps, done))
    }

    /// [`Builder::take_in`] of one result.
    fn take_in_one(&self, steps: &mut Steps, done: FileDone) -> Result<()> {
        match done.result {
            Err(e) if e.is_enospc() => {
                let rel = steps.queue.iter().find_map(|s| match s {
                    Step::File { seq, rel, .. } if *seq == done.seq => Some(rel),
                    _ => None,
                });
                let shown = rel.map_or_else(|| self.new_root.clone(), |r| self.new_path(r));
                Err(copy_err(e, &shown))
            }
            result => {
                steps.arrived.insert(done.seq, result);
                Ok(())
            }
        }
    }

    /// Takes one settled step into the build (a file's checksum record is recorded in walk
    /// order, which is path order: the records stay sorted as they come).
    fn settle_step(&mut self, step: Settled) -> Result<()> {
        match step {
            Settled::FinishDir { rel, sm, at } => {
                let (src, new) = *at;
                self.finish_real_dir_in(&rel, &sm, Ok(src), &new)
            }
            Settled::File { rel, sm, result } => {
                match result {
                    Ok(mut c) => {
                        self.record(&rel, c.record.take());
                        let same_inode = c.source == (sm.dev(), sm.ino());
                        let len = c.len;
                        self.note_file_copy(&rel, c);
                        self.count_entry(&rel, &sm, len, same_inode);
                    }
                    // Gone since its lstat: a deletion (the worker left nothing).
                    Err(CopyError::Vanished) => {}
                    Err(e) if e.is_enospc() => return Err(copy_err(e, &self.new_path(&rel))),
                    // There but not copyable: journaled, nothing left (the worker removed it).
                    Err(e) => self.skip(&rel, &e.to_string()),
                }
                Ok(())
            }
        }
    }
}

/// A step ready to be taken into the build.
enum Settled {
    File {
        rel: RelPath,
        sm: Metadata,
        result: std::result::Result<FileCopy, CopyError>,
    },
    FinishDir {
        rel: RelPath,
        sm: Metadata,
        at: Box<(At, At)>,
    },
}

impl Steps {
    /// The front step, removed, if it can be settled now.
    fn ready(&mut self) -> Option<Settled> {
        match self.queue.front()? {
            Step::FinishDir { .. } => match self.queue.pop_front()? {
                Step::FinishDir { rel, sm, at } => Some(Settled::FinishDir { rel, sm, at }),
                Step::File { .. } => None,
            },
            Step::File { seq, .. } => {
                let result = self.arrived.remove(seq)?;
                match self.queue.pop_front()? {
                    Step::File { rel, sm, .. } => Some(Settled::File { rel, sm, result }),
                    Step::FinishDir { .. } => None,
                }
            }
        }
    }
}

/// Every copying thread stopped with work still queued (one panicked).
fn workers_gone() -> Error {
    Error::Invalid("the copying threads stopped before the first copy was done".into())
}
