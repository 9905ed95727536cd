//! Waiting in tests: for an observable event, with a timeout ([`wait_until`]), never for a
//! guessed time; and, where time itself must pass (a timestamp must be older than a
//! version's stamp by some seconds), for the wall clock to reach a given time
//! ([`wait_for_clock`]).
//!
//! Invariants: [`wait_until`] returns as soon as its condition holds (polled from every
//! 10 ms up to every 100 ms) and panics naming what it waited for when the timeout passes
//! first ([`wait_until_observed`]: and what it saw last); [`wait_for_clock`] returns once
//! `SystemTime::now()` is at or past the target.

use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Polls `cond` until it holds; panics with `what` once `timeout` has passed without it.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut interval = Duration::from_millis(10);
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(100));
    }
}

/// Polls `observe` until `cond` holds for what it returns, and returns that observation;
/// panics with `what` and the last observation once `timeout` has passed without it.
#[track_caller]
pub fn wait_until_observed<T: Debug>(
    timeout: Duration,
    what: &str,
    mut observe: impl FnMut() -> T,
    mut cond: impl FnMut(&T) -> bool,
) -> T {
    let start = Instant::now();
    let mut interval = Duration::from_millis(10);
    loop {
        let seen = observe();
        if cond(&seen) {
            return seen;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; last seen: {seen:?}"
        );
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(100));
    }
}

/// Sleeps until the wall clock reads `t` or later (time that must pass, not an event).
pub fn wait_for_clock(t: SystemTime) {
    while let Ok(left) = t.duration_since(SystemTime::now()) {
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left);
    }
}

/// The first whole second strictly more than `margin` whole seconds after `t`: a version
/// stamped (to the second) at or after it is clearly more than `margin` after `t`.
pub fn whole_seconds_after(t: SystemTime, margin: u64) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs + margin + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_holds_returns_at_once() {
        let start = Instant::now();
        wait_until(Duration::from_secs(5), "nothing", || true);
        assert!(start.elapsed() < Duration::from_millis(50));
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn a_timeout_names_what_was_awaited() {
        wait_until(Duration::from_millis(30), "the impossible", || false);
    }

    #[test]
    fn an_observed_wait_returns_what_it_saw_and_shows_it_on_timeout() {
        let mut n = 0;
        let seen = wait_until_observed(
            Duration::from_secs(5),
            "three",
            || {
                n += 1;
                n
            },
            |n| *n == 3,
        );
        assert_eq!(seen, 3);
        let timeout = std::panic::catch_unwind(|| {
            wait_until_observed(Duration::from_millis(30), "never", || "the last", |_| false)
        });
        let message = timeout.expect_err("a timeout");
        let message = message.downcast_ref::<String>().expect("a message");
        assert!(
            message.contains("waiting for never; last seen: \"the last\""),
            "{message}"
        );
    }

    #[test]
    fn whole_seconds_after_is_past_the_margin_on_a_second_boundary() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(whole_seconds_after(at(100, 0), 2), at(103, 0));
        assert_eq!(whole_seconds_after(at(100, 999), 2), at(103, 0));
    }

    #[test]
    fn the_clock_is_past_the_target_on_return() {
        let target = SystemTime::now() + Duration::from_millis(20);
        wait_for_clock(target);
        assert!(SystemTime::now() >= target);
    }
}
