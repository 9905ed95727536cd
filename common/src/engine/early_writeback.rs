//! Starts writing a long copy's data to the disk while the copy is still running, so the
//! flush that makes the version durable (I9, `syncfs` in
//! [`publish`](crate::engine::publish)) finds little left to write.
//!
//! Without it, a first copy leaves every byte it wrote dirty in the page cache until that
//! final flush, which then waits for all of it at once (0.8 s of a 3.3 s first copy of
//! 100,000 small files, docs/benchmarks.md). With it, a helper thread flushes the
//! new version's filesystem each time the copy has written another [`EVERY`] bytes, and
//! the disk works alongside the walk and the pool.
//!
//! Owns: the helper thread, started in the build's thread scope and stopped (woken and
//! joined) by [`EarlyWriteback::stop`] or when dropped.
//!
//! Invariants: it is a hint and nothing depends on it. It only ever calls `syncfs` (which
//! writes nothing the flush after the copy would not write anyway), ignores its errors (the
//! durability flush reports them), and flushes only after data was written: a copy of
//! fewer than [`EVERY`] bytes, or of empty files, never calls it, and a filesystem shared
//! with busy neighbours is not flushed more than once per [`EVERY`] of ours (`syncfs`
//! also writes their dirty data).

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

/// How much new data the copy writes between two flushes.
pub const EVERY: u64 = 32 << 20;

/// How often the helper looks at how much was written.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// The helper thread of one copy.
pub(crate) struct EarlyWriteback<'scope> {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<ScopedJoinHandle<'scope, ()>>,
}

impl<'scope> EarlyWriteback<'scope> {
    /// Starts flushing the filesystem that holds `dir` (an open directory of the new
    /// version) whenever `written` (the bytes the copy wrote so far) has grown by
    /// [`EVERY`], until stopped.
    pub fn start(scope: &'scope Scope<'scope, '_>, dir: File, written: Arc<AtomicU64>) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let told = Arc::clone(&stop);
        let thread = scope.spawn(move || {
            let mut flushed = 0;
            while !stopped_within(&told, LOOK_EVERY) {
                let now = written.load(Ordering::Relaxed);
                if now.saturating_sub(flushed) >= EVERY {
                    flushed = now;
                    let _ = nix::unistd::syncfs(&dir);
                }
            }
        });
        EarlyWriteback {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the helper and waits for it (at most for the flush it is in).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let (stopped, wake) = &*self.stop;
        if let Ok(mut s) = stopped.lock() {
            *s = true;
        }
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EarlyWriteback<'_> {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Waits up to `pause` for the stop flag; whether it is set (a poisoned lock stops too).
fn stopped_within(stop: &(Mutex<bool>, Condvar), pause: Duration) -> bool {
    let (stopped, wake) = stop;
    let Ok(guard) = stopped.lock() else {
        return true;
    };
    match wake.wait_timeout_while(guard, pause, |s| !*s) {
        Ok((guard, _)) => *guard,
        Err(_) => true,
    }
}
