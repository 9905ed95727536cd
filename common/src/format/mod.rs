//! The formats layer: every byte the project writes as text, defined once.
//!
//! Owns the TSV dialect ([`tsv`]) and each file or stream built on it — index.tsv
//! ([`index`]), journal.tsv ([`journal`]), event lines ([`events`]), the baseline manifest
//! ([`baseline`]) — plus job.toml ([`jobfile`]), the job settings and their human-written
//! values ([`settings`]), the vault's time formats ([`time`]), an entry's type tag and the
//! one "has it changed" comparator ([`entry`]), and paths relative to a root ([`relpath`]). Nothing here walks a tree
//! or decides policy; see `docs/format.md` for the byte-exact rules.

pub(crate) mod baseline;
pub(crate) mod entry;
pub(crate) mod events;
pub(crate) mod index;
pub(crate) mod jobfile;
pub(crate) mod journal;
pub(crate) mod relpath;
pub(crate) mod settings;
pub(crate) mod time;
pub(crate) mod tsv;
