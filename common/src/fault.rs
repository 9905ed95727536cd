//! A test-only fault hook: crash the process at a chosen filesystem write step.
//!
//! Owns: the one counter of "write steps" that crash-safety tests inject faults at, and the
//! switches that make link-inode sharing ([`hard_links_refused`]) and `RENAME_EXCHANGE`
//! ([`exchange_refused`]) fail. Writers
//! whose crash safety is promised (retirement, and later the snapshot publisher) call
//! [`step`] right after each filesystem write that matters. When the environment variable
//! `REVERB_FAULT_AFTER=N` is set, the process kills itself with `SIGKILL` right after the
//! N-th step, exactly like a power cut or `kill -9` at that point (no destructors, no
//! flushing). Unset, [`step`] costs one atomic load: the variable is read once.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the step after which the process dies.
pub const ENV: &str = "REVERB_FAULT_AFTER";

static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
static COUNT: AtomicU64 = AtomicU64::new(0);

fn limit() -> Option<u64> {
    *LIMIT.get_or_init(|| {
        std::env::var(ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
    })
}

/// The environment variable naming the step after which the process stops itself
/// (`SIGSTOP`), for a test to act while it is frozen at a known point (kill its peer, then
/// let it go on with `SIGCONT`).
pub const STOP_ENV: &str = "REVERB_FAULT_STOP_AFTER";

fn stop_limit() -> Option<u64> {
    static STOP: OnceLock<Option<u64>> = OnceLock::new();
    *STOP.get_or_init(|| {
        std::env::var(STOP_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
    })
}

/// Marks the end of one filesystem write step; dies by `SIGKILL` if it is the chosen one
/// (or stops, with [`STOP_ENV`]).
pub fn step() {
    let (kill, stop) = (limit(), stop_limit());
    if kill.is_none() && stop.is_none() {
        return;
    }
    let done = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if kill == Some(done) {
        // raise(3) delivers SIGKILL to this process, which cannot outlive it.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    if stop == Some(done) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

/// The environment variable that, set to `1`, makes every attempt to share a vault link's
/// inode (a hard link of a link, docs/format.md "Shared link inodes") fail as on a file
/// system without hard links, so that tests reach the fallback (a symlink of its own).
pub const NO_HARD_LINKS_ENV: &str = "REVERB_FAULT_NO_HARD_LINKS";

/// The environment variable that, set to `1`, makes every `renameat2(RENAME_EXCHANGE)`
/// fail as on a filesystem without it (sshfs), so that tests reach a retirement's fallback
/// (docs/retirement.md).
pub const NO_EXCHANGE_ENV: &str = "REVERB_FAULT_NO_EXCHANGE";

/// Whether [`NO_EXCHANGE_ENV`] is set to `1` (read once).
pub fn exchange_refused() -> bool {
    static REFUSED: OnceLock<bool> = OnceLock::new();
    *REFUSED.get_or_init(|| std::env::var(NO_EXCHANGE_ENV).is_ok_and(|v| v.trim() == "1"))
}

/// Whether [`NO_HARD_LINKS_ENV`] is set to `1` (read once).
pub fn hard_links_refused() -> bool {
    static REFUSED: OnceLock<bool> = OnceLock::new();
    *REFUSED.get_or_init(|| std::env::var(NO_HARD_LINKS_ENV).is_ok_and(|v| v.trim() == "1"))
}
