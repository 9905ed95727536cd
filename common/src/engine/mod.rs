//! The engine layer: the operations that change or read whole versions.
//!
//! Owns building a version ([`snapshot`], the entry point, with its steps in [`recover`],
//! [`diff`], [`marked_walk`], [`ingest`], [`first_copy`], [`linked_names`], [`split_names`],
//! [`climbed_dirs`] and [`publish`] over the shared [`build_state`], [`build_report`],
//! [`climbing_links`], [`link_groups`], [`marks`] and [`listing`]) with the copy engine
//! ([`copy`], and its threads for the first copy, [`copy_pool`] and [`early_writeback`]), retiring versions ([`retire`]: a pure plan by the `keep_*` rules
//! and the size limit, then the crash-safe execution) and restoring one ([`restore`]). The
//! modules and the one way they depend on each other are listed in
//! docs/design.md#module-map.
//! Every write here goes through the vault layer's rules: build under `.partial/`, make
//! durable, rename into place.

pub(crate) mod build_report;
pub(crate) mod build_state;
pub(crate) mod climbed_dirs;
pub(crate) mod climbing_links;
pub(crate) mod copy;
pub(crate) mod copy_pool;
pub(crate) mod diff;
pub(crate) mod early_writeback;
pub(crate) mod first_copy;
pub(crate) mod ingest;
pub(crate) mod link_groups;
pub(crate) mod linked_names;
pub(crate) mod listing;
pub(crate) mod marked_walk;
pub(crate) mod marks;
pub(crate) mod publish;
pub(crate) mod receive;
pub(crate) mod recover;
pub(crate) mod rescan_index;
pub(crate) mod restore;
pub(crate) mod retire;
pub(crate) mod send;
pub(crate) mod snapshot;
pub(crate) mod split_names;
pub(crate) mod stream_attrs;
