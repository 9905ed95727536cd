//! The engine layer: the operations that change or read whole versions.
//!
//! Owns building a version ([`snapshot`], the entry point, with its steps in [`recover`],
//! [`diff`], [`build`], [`copy_in`] and [`publish`] over the shared [`builder`] state,
//! [`marks`] and [`listing`]) with the copy engine ([`copy`]), retiring versions
//! ([`retire`]: a pure plan by the `keep_*` rules and the size limit, then the crash-safe
//! execution) and restoring one ([`restore`]).
//! Every write here goes through the vault layer's rules: build under `.partial/`, make
//! durable, rename into place.

pub(crate) mod build;
pub(crate) mod builder;
pub(crate) mod climb;
pub(crate) mod copy;
pub(crate) mod copy_in;
pub(crate) mod diff;
pub(crate) mod listing;
pub(crate) mod marks;
pub(crate) mod publish;
pub(crate) mod recover;
pub(crate) mod restore;
pub(crate) mod retire;
pub(crate) mod snapshot;
