//! The capture layer: noticing what changed and whether the filesystems are still the
//! right ones.
//!
//! Owns the recursive inotify watcher ([`watch`]), filesystem identity ([`identity`]) and
//! watching the mount table ([`mountwatch`]), and tying the watchers' life to the
//! supervisor's ([`lifeline`]). It reports; it never writes to a vault.

pub(crate) mod identity;
pub(crate) mod lifeline;
pub(crate) mod mountwatch;
pub(crate) mod watch;
