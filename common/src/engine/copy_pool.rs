//! A small pool of threads that copy regular files for a build: the walk (one thread)
//! hands each a [`FileJob`] (a source file reached beneath the source's descriptor, its new
//! name beneath the new version's), the pool copies the data, hashes it when checksums are
//! on, and sets its attributes ([`copy::copy_source_file`]), then sends back a [`FileDone`]
//! tagged with the job's sequence number.
//!
//! Owns: the threads (scoped: they never outlive the build that started them), the two
//! channels, and how many threads there are ([`workers`]).
//!
//! Invariants: a worker touches nothing but its job's two names (the new one created with
//! `O_EXCL`); a copy that fails for any reason but a full disk leaves nothing behind (the
//! worker removes its own attempt before it reports, as the serial copy does); a full disk
//! is reported as it is and the build stops. Once [`Pool::cancel`] is called, a worker skips
//! the jobs still queued; dropping the [`Pool`] closes the queue, and the scope the pool was
//! started in joins every worker, so nothing writes into the new version after the build
//! returns (its durability walk and its removal on failure both come after).

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Scope;

use crate::beneath::At;
use crate::engine::copy::{self, CopyError, FileCopy};
use crate::format::entry::Fidelity;

/// The environment variable that sets how many copying threads a first copy uses: `0`
/// copies on the walking thread alone (the serial copier, which tests compare with); unset,
/// one per core ([`std::thread::available_parallelism`]), at most [`MAX_WORKERS`].
pub const WORKERS_ENV: &str = "REVERB_COPY_WORKERS";

/// The most copying threads a build starts (more only queue on the same disk).
pub const MAX_WORKERS: usize = 16;

/// Jobs are handed over, and results sent back, this many at a time: one wake-up per
/// batch, not per file.
pub const BATCH: usize = 16;

/// How many copying threads a first copy uses (read once).
pub fn workers() -> usize {
    static WORKERS: OnceLock<usize> = OnceLock::new();
    *WORKERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::var(WORKERS_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(cores)
            .min(MAX_WORKERS)
    })
}

/// One regular file to copy.
pub(crate) struct FileJob {
    /// The walk's sequence number, given back with the result.
    pub seq: u64,
    /// The source file, beneath the source's descriptor.
    pub src: At,
    /// Its new name, beneath the new version's descriptor; it does not exist yet.
    pub dst: At,
    /// The source's `lstat` when the walk met it (the inode that must be copied).
    pub seen: fs::Metadata,
}

/// What became of a [`FileJob`].
pub(crate) struct FileDone {
    pub seq: u64,
    /// The copy; on an error other than a full disk nothing was left at the new name.
    pub result: Result<FileCopy, CopyError>,
}

/// The copying threads of one build, and the two ends the walk holds.
pub(crate) struct Pool {
    jobs: Option<Sender<Vec<FileJob>>>,
    /// Jobs not handed over yet (a batch being filled).
    batch: Vec<FileJob>,
    done: Receiver<Vec<FileDone>>,
    cancelled: Arc<AtomicBool>,
    /// The bytes of data the workers have written so far.
    written: Arc<AtomicU64>,
}

impl Pool {
    /// Starts `n` (at least one) copying threads in `scope`; `hash` says whether each copy
    /// is hashed, `keep` which attributes are set.
    pub fn start<'scope>(
        scope: &'scope Scope<'scope, '_>,
        n: usize,
        hash: bool,
        keep: Fidelity,
    ) -> Pool {
        let (jobs, queue) = mpsc::channel::<Vec<FileJob>>();
        let (report, done) = mpsc::channel::<Vec<FileDone>>();
        let queue = Arc::new(Mutex::new(queue));
        let cancelled = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        for _ in 0..n.max(1) {
            let (queue, report) = (queue.clone(), report.clone());
            let (cancelled, written) = (cancelled.clone(), written.clone());
            scope.spawn(move || work(&queue, &report, &cancelled, &written, hash, keep));
        }
        Pool {
            jobs: Some(jobs),
            batch: Vec::with_capacity(BATCH),
            done,
            cancelled,
            written,
        }
    }

    /// A counter of the bytes of data the workers have written so far (a file's length
    /// once it is copied), for whoever paces the writeback
    /// ([`EarlyWriteback`](crate::engine::early_writeback::EarlyWriteback)).
    pub fn written(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.written)
    }

    /// Queues a job (handed over with its batch). `false` when no worker is left to take
    /// it (they all stopped).
    pub fn submit(&mut self, job: FileJob) -> bool {
        self.batch.push(job);
        self.batch.len() < BATCH || self.flush()
    }

    /// Hands over the batch being filled. `false` when no worker is left to take it.
    pub fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(batch).is_ok())
    }

    /// Finished jobs if some are waiting, without waiting.
    pub fn try_done(&self) -> Option<Vec<FileDone>> {
        self.done.try_recv().ok()
    }

    /// The next finished jobs, waiting for them (the batch being filled is handed over
    /// first); `None` when every worker has stopped.
    pub fn wait_done(&mut self) -> Option<Vec<FileDone>> {
        if !self.flush() {
            return None;
        }
        self.done.recv().ok()
    }

    /// The build stops: the jobs still queued are dropped, not copied.
    pub fn cancel(&mut self) {
        self.batch.clear();
        self.cancelled.store(true, Ordering::SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends every worker once it has finished its job in hand.
        self.jobs = None;
    }
}

/// A worker: takes batches of jobs until the queue is closed.
fn work(
    queue: &Mutex<Receiver<Vec<FileJob>>>,
    report: &Sender<Vec<FileDone>>,
    cancelled: &AtomicBool,
    written: &AtomicU64,
    hash: bool,
    keep: Fidelity,
) {
    loop {
        let next = match queue.lock() {
            Ok(queue) => queue.recv(),
            // Another worker panicked holding the lock: its panic ends the build.
            Err(_) => return,
        };
        let Ok(batch) = next else { return };
        let mut done = Vec::with_capacity(batch.len());
        for job in batch {
            if cancelled.load(Ordering::SeqCst) {
                return;
            }
            let result = copy::copy_source_file(&job.src, &job.dst, hash, &job.seen, keep);
            match &result {
                Ok(c) => {
                    written.fetch_add(c.len, Ordering::Relaxed);
                }
                // Nothing of a copy that failed stays (the full disk aborts the whole build).
                Err(e) if !e.is_enospc() => {
                    let _ = fs::remove_file(&*job.dst);
                }
                Err(_) => {}
            }
            done.push(FileDone {
                seq: job.seq,
                result,
            });
        }
        if report.send(done).is_err() {
            return;
        }
    }
}
