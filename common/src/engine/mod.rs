//! The engine layer: the operations that change or read whole versions.
//!
//! Owns building a version ([`snapshot`]) with the copy engine ([`copy`]), retiring versions
//! ([`retire`]) and restoring one ([`restore`]). Every write here goes through the vault
//! layer's rules: build under `.partial/`, make durable, rename into place.

pub(crate) mod copy;
pub(crate) mod restore;
pub(crate) mod retire;
pub(crate) mod snapshot;
