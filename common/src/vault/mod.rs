//! The vault layer: what a vault and a job folder are on disk, and the rules that keep them
//! safe.
//!
//! Owns the layout ([`layout`]: marker, job folders, version names, `current`, `.partial/`),
//! the capability probe of the vault's filesystem ([`probe`]),
//! opening and creating jobs ([`job`]), whether a path is inside a vault ([`inside`]), locks ([`lock`]), measuring versions ([`measure`]),
//! reading version trees through vault links ([`tree`]) and verifying a job against the
//! invariants ([`check`]), and who may read the vault ([`access`]). The engine builds on this layer; this layer never builds or
//! retires a version.

pub(crate) mod access;
pub(crate) mod check;
pub(crate) mod inside;
pub(crate) mod job;
pub(crate) mod layout;
pub(crate) mod lock;
pub(crate) mod measure;
pub(crate) mod probe;
pub(crate) mod tree;
pub(crate) mod verify;
