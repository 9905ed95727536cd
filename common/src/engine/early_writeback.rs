//! Starts writing a long copy's data to the disk while the copy is still running, so the
//! flush that makes the version durable (I9, `syncfs` in
//! [`publish`](crate::engine::publish)) finds little left to write.
//!
//! Without it, a first copy leaves every byte it wrote dirty in the page cache until that
//! final flush, which then waits for all of it at once (0.8 s of a 3.3 s first copy of the
//! benchmark's 100,000-file tree, docs/benchmarks.md). With it, a helper thread flushes the
//! new version's filesystem over and over while the walk and the pool copy, and the disk
//! works alongside them.
//!
//! Owns: the helper thread, started in the build's thread scope and stopped (woken and
//! joined) by [`EarlyWriteback::stop`] or when dropped.
//!
//! Invariants: it is a hint and nothing depends on it. It only ever calls `syncfs` (which
//! changes nothing on disk that the flush after it would not write anyway), ignores its
//! errors (the durability flush after the copy reports them), and does not flush at all
//! before [`PAUSE`] has passed, so a short copy never pays for it.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

/// The time between two flushes (and before the first).
pub const PAUSE: Duration = Duration::from_millis(100);

/// The helper thread of one copy.
pub(crate) struct EarlyWriteback<'scope> {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<ScopedJoinHandle<'scope, ()>>,
}

impl<'scope> EarlyWriteback<'scope> {
    /// Starts flushing the filesystem that holds `dir` (an open directory of the new
    /// version) every [`PAUSE`] until stopped.
    pub fn start(scope: &'scope Scope<'scope, '_>, dir: File) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let told = Arc::clone(&stop);
        let thread = scope.spawn(move || {
            let (stopped, wake) = &*told;
            let Ok(mut stopped) = stopped.lock() else {
                return;
            };
            loop {
                let Ok((now, _)) = wake.wait_timeout_while(stopped, PAUSE, |s| !*s) else {
                    return;
                };
                stopped = now;
                if *stopped {
                    return;
                }
                // Not holding the lock while the disk works: `stop` must not wait for it.
                drop(stopped);
                let _ = nix::unistd::syncfs(&dir);
                let Ok(again) = told.0.lock() else {
                    return;
                };
                stopped = again;
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
