//! The watcher's output: the event lines in order, the places renames hold in it, and the
//! `flush` timing (quiet period, maximum delay).
//!
//! Owns the output queue ([`Lines`]) and the burst it times: a burst starts with the first
//! line after a flush and lasts until the next one; with [`WatchOptions`] set, a `flush`
//! is due once no event came for the quiet period, or once the burst is the maximum delay
//! old, whatever comes.
//!
//! Invariants: lines leave in event order. A rename waiting for its pair holds its place
//! ([`Lines::reserve`]), so nothing read after it is handed out before it; the place is
//! later filled with its line or with nothing ([`Lines::fill`]). Warnings go to the caller
//! before the lines queued with them.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::format::events::{EventKind, EventLine};

/// When to print `flush` lines, and where the watch stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Flush once no event has come for this long after a burst.
    pub quiet_period: Option<Duration>,
    /// Flush at most this long after a burst's first event, even under constant change.
    pub max_delay: Option<Duration>,
    /// Stay on the root's filesystem: a directory on another device (a mountpoint) is
    /// reported as an entry of its parent, but neither watched nor scanned (`rsync -x`).
    pub one_file_system: bool,
}

impl WatchOptions {
    /// Are `flush` lines printed at all?
    pub fn flushes(&self) -> bool {
        self.quiet_period.is_some() || self.max_delay.is_some()
    }
}

/// The caller's two callbacks of [`super::Watcher::run`]: one per line, one per warning.
pub(super) struct Callbacks<F, W> {
    pub sink: F,
    pub warn: W,
}

/// One place in the output queue.
#[derive(Debug)]
enum Slot {
    Line(EventLine),
    /// A rename waiting for its pair.
    Waiting,
    /// A reserved place that turned out to print nothing.
    Dropped,
}

/// The lines not yet handed out, and the current burst.
#[derive(Debug, Default)]
pub(super) struct Lines {
    /// Lines for the sink, in event order; a rename waiting for its pair holds its place
    /// so that nothing after it is printed before it.
    out: VecDeque<Slot>,
    /// The absolute position of `out[0]`.
    base: u64,
    /// First and last emitted event of the current burst (no flush since).
    burst: Option<(Instant, Instant)>,
}

impl Lines {
    /// Queues `line`, part of the current burst.
    pub fn emit(&mut self, line: EventLine) {
        self.touch_burst();
        self.out.push_back(Slot::Line(line));
    }

    /// Something happened now: the burst goes on (or starts).
    pub fn touch_burst(&mut self) {
        let now = Instant::now();
        self.burst = Some(match self.burst {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    /// Lines were emitted since the last flush.
    pub fn in_burst(&self) -> bool {
        self.burst.is_some()
    }

    /// Holds a place for a rename's line; returns its absolute position.
    pub fn reserve(&mut self) -> u64 {
        self.out.push_back(Slot::Waiting);
        self.base + self.out.len() as u64 - 1
    }

    /// Fills the place a rename reserved (with nothing when `line` is `None`); without a
    /// place, `line` is queued last.
    pub fn fill(&mut self, slot: Option<u64>, line: Option<EventLine>) {
        let Some(at) = slot else {
            if let Some(l) = line {
                self.emit(l);
            }
            return;
        };
        if line.is_some() {
            self.touch_burst();
        }
        let index = at
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok());
        if let Some(s) = index.and_then(|i| self.out.get_mut(i)) {
            *s = match line {
                Some(l) => Slot::Line(l),
                None => Slot::Dropped,
            };
        }
    }

    /// Queues a `flush` line: the burst is over.
    pub fn flush(&mut self) {
        self.out
            .push_back(Slot::Line(EventLine::marker(EventKind::Flush)));
        self.burst = None;
    }

    /// Is a `flush` due at `now` (the burst quiet for the quiet period, or as old as the
    /// maximum delay)?
    pub fn flush_due(&self, options: &WatchOptions, now: Instant) -> bool {
        let Some((first, last)) = self.burst else {
            return false;
        };
        let quiet = options.quiet_period.is_some_and(|q| now >= last + q);
        let late = options.max_delay.is_some_and(|m| now >= first + m);
        quiet || late
    }

    /// When the next `flush` may be due, if a burst is on and flushes are asked for.
    pub fn flush_deadline(&self, options: &WatchOptions) -> Option<Instant> {
        let (first, last) = self.burst?;
        let quiet = options.quiet_period.map(|q| last + q);
        let late = options.max_delay.map(|m| first + m);
        match (quiet, late) {
            (Some(q), Some(l)) => Some(q.min(l)),
            (q, l) => q.or(l),
        }
    }

    /// Hands the queued lines to `sink` in order, up to the first rename still waiting.
    /// `Ok(false)` when `sink` asked to stop.
    pub fn drain(
        &mut self,
        sink: &mut impl FnMut(&EventLine) -> io::Result<bool>,
    ) -> io::Result<bool> {
        while let Some(slot) = self.out.front() {
            if matches!(slot, Slot::Waiting) {
                break;
            }
            let slot = self.out.pop_front();
            self.base += 1;
            if let Some(Slot::Line(line)) = slot
                && !sink(&line)?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::events::EntryType;
    use std::path::PathBuf;

    fn line(path: &str) -> EventLine {
        EventLine::now(
            EventKind::Create,
            Some(EntryType::File),
            PathBuf::from(path),
            None,
        )
    }

    fn drained(lines: &mut Lines) -> Vec<String> {
        let mut got = Vec::new();
        let mut sink = |l: &EventLine| {
            got.push(format!("{} {}", l.kind.as_str(), l.path.display()));
            Ok(true)
        };
        assert!(lines.drain(&mut sink).expect("drain"));
        got
    }

    #[test]
    fn a_waiting_rename_holds_back_what_follows() {
        let mut lines = Lines::default();
        lines.emit(line("a"));
        let slot = lines.reserve();
        lines.emit(line("b"));
        assert_eq!(drained(&mut lines), ["create a"]);
        let mut moved = line("x");
        moved.kind = EventKind::Delete;
        lines.fill(Some(slot), Some(moved));
        assert_eq!(drained(&mut lines), ["delete x", "create b"]);
        // A place filled with nothing prints nothing; a line without a place goes last.
        let slot = lines.reserve();
        lines.emit(line("c"));
        lines.fill(Some(slot), None);
        lines.fill(None, Some(line("d")));
        assert_eq!(drained(&mut lines), ["create c", "create d"]);
    }

    #[test]
    fn a_sink_that_stops_keeps_the_rest() {
        let mut lines = Lines::default();
        lines.emit(line("a"));
        lines.emit(line("b"));
        let mut n = 0;
        let mut stop_after_one = |_: &EventLine| {
            n += 1;
            Ok(false)
        };
        assert!(!lines.drain(&mut stop_after_one).expect("drain"));
        assert_eq!(drained(&mut lines), ["create b"]);
    }

    #[test]
    fn a_flush_is_due_after_the_quiet_period_or_the_maximum_delay() {
        let quiet = WatchOptions {
            quiet_period: Some(Duration::from_millis(100)),
            max_delay: None,
            one_file_system: false,
        };
        let both = WatchOptions {
            max_delay: Some(Duration::from_millis(50)),
            ..quiet
        };
        let mut lines = Lines::default();
        assert!(!lines.in_burst() && lines.flush_deadline(&quiet).is_none());
        assert!(!WatchOptions::default().flushes() && quiet.flushes());
        lines.emit(line("a"));
        let (first, last) = lines.burst.expect("burst");
        assert!(!lines.flush_due(&quiet, last));
        assert!(lines.flush_due(&quiet, last + Duration::from_millis(100)));
        assert_eq!(
            lines.flush_deadline(&quiet),
            Some(last + Duration::from_millis(100))
        );
        assert_eq!(
            lines.flush_deadline(&both),
            Some(first + Duration::from_millis(50))
        );
        assert!(lines.flush_due(&both, first + Duration::from_millis(50)));
        assert!(!lines.flush_due(&WatchOptions::default(), last + Duration::from_secs(9)));
        lines.flush();
        assert!(!lines.in_burst());
        assert_eq!(drained(&mut lines), ["create a", "flush "]);
    }
}
