//! Rename pairing: an `IN_MOVED_FROM` waits here for the `IN_MOVED_TO` with the same cookie.
//!
//! Owns the renames waiting for their pair and when they stop waiting: an unpaired
//! `IN_MOVED_FROM` expires once a read of the queue comes back empty at least
//! [`MOVE_WAIT`] after it ([`PendingRenames::expired_when_idle`]), or after
//! [`MOVE_WAIT_MAX`] even while the queue stays busy ([`PendingRenames::expired`]). What
//! an expired or paired rename prints is the watcher's to decide (a `delete`: moved out; a
//! `move`); this module holds no lines, only the place each one reserved.
//!
//! Invariant: each cookie is paired at most once, with the oldest waiting rename that has it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long an unpaired `IN_MOVED_FROM` waits (with the queue idle) before it is a delete.
pub const MOVE_WAIT: Duration = Duration::from_millis(20);

/// An unpaired `IN_MOVED_FROM` is a delete after this long, even when the queue is busy.
pub const MOVE_WAIT_MAX: Duration = Duration::from_millis(500);

/// A pending `IN_MOVED_FROM`.
#[derive(Debug)]
pub(super) struct MovedFrom {
    pub cookie: u32,
    pub rel: PathBuf,
    pub is_dir: bool,
    pub excluded: bool,
    pub at: Instant,
    /// The place reserved in the output (none for an excluded path).
    pub slot: Option<u64>,
    /// When it was read: the time of its line.
    pub time: String,
}

/// The `IN_MOVED_FROM`s waiting for their `IN_MOVED_TO`, oldest first.
#[derive(Debug, Default)]
pub(super) struct PendingRenames {
    pending: Vec<MovedFrom>,
}

impl PendingRenames {
    /// Starts waiting for `from`'s pair.
    pub fn push(&mut self, from: MovedFrom) {
        self.pending.push(from);
    }

    /// The waiting rename `cookie` pairs with, no longer waiting.
    pub fn take(&mut self, cookie: u32) -> Option<MovedFrom> {
        self.pending
            .iter()
            .position(|m| m.cookie == cookie)
            .map(|i| self.pending.remove(i))
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// When the oldest waiting rename may expire, if one is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|m| m.at + MOVE_WAIT).min()
    }

    /// The queue was found empty at `now`: the renames waiting at least [`MOVE_WAIT`]
    /// stop waiting (unpaired: moved out).
    pub fn expired_when_idle(&mut self, now: Instant) -> Vec<MovedFrom> {
        self.expire(|m| now.duration_since(m.at) >= MOVE_WAIT)
    }

    /// The renames waiting at least [`MOVE_WAIT_MAX`] at `now` (all of them with `all`)
    /// stop waiting.
    pub fn expired(&mut self, now: Instant, all: bool) -> Vec<MovedFrom> {
        self.expire(|m| all || now.duration_since(m.at) >= MOVE_WAIT_MAX)
    }

    fn expire(&mut self, done: impl Fn(&MovedFrom) -> bool) -> Vec<MovedFrom> {
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|m| done(m));
        self.pending = keep;
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(cookie: u32, rel: &str, at: Instant) -> MovedFrom {
        MovedFrom {
            cookie,
            rel: PathBuf::from(rel),
            is_dir: false,
            excluded: false,
            at,
            slot: None,
            time: String::new(),
        }
    }

    fn rels(ms: &[MovedFrom]) -> Vec<&str> {
        ms.iter().map(|m| m.rel.to_str().expect("utf-8")).collect()
    }

    #[test]
    fn pairs_by_cookie_once() {
        let t = Instant::now();
        let mut p = PendingRenames::default();
        p.push(from(7, "a", t));
        p.push(from(8, "b", t));
        p.push(from(7, "c", t));
        assert_eq!(p.take(7).map(|m| m.rel), Some(PathBuf::from("a")), "oldest");
        assert_eq!(p.take(7).map(|m| m.rel), Some(PathBuf::from("c")));
        assert!(p.take(7).is_none());
        assert!(p.take(9).is_none());
        assert!(!p.is_empty());
        assert_eq!(p.take(8).map(|m| m.rel), Some(PathBuf::from("b")));
        assert!(p.is_empty() && p.next_deadline().is_none());
    }

    #[test]
    fn expires_after_the_idle_wait_or_the_busy_maximum() {
        let t = Instant::now();
        let mut p = PendingRenames::default();
        p.push(from(1, "old", t));
        p.push(from(2, "new", t + MOVE_WAIT));
        assert_eq!(p.next_deadline(), Some(t + MOVE_WAIT));
        assert!(p.expired_when_idle(t + MOVE_WAIT / 2).is_empty());
        assert!(p.expired(t + MOVE_WAIT, false).is_empty(), "busy: not yet");
        assert_eq!(rels(&p.expired_when_idle(t + MOVE_WAIT)), ["old"]);
        assert_eq!(
            rels(&p.expired(t + MOVE_WAIT_MAX, false)),
            Vec::<&str>::new()
        );
        assert_eq!(
            rels(&p.expired(t + MOVE_WAIT + MOVE_WAIT_MAX, false)),
            ["new"]
        );
        p.push(from(3, "x", t));
        p.push(from(4, "y", t));
        assert_eq!(rels(&p.expired(t, true)), ["x", "y"], "all, in order");
        assert!(p.is_empty());
    }
}
